"""Progress on stderr: a tqdm bar on a terminal, one plain line per step in a log file.

stdout is kept for the final JSON line, so a notebook can parse it and a cluster log stays readable.
"""
import sys

from tqdm import tqdm


class Progress:
    """`step(line, **postfix)` after each unit of work (an epoch, an attack setting)."""

    def __init__(self, total, desc, unit, initial=0, enabled=True, stream=None):
        self.stream = stream or sys.stderr
        self.bar = None
        self.enabled = enabled  # False on every process but rank 0 under torchrun
        if enabled and self.stream.isatty():
            self.bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, file=self.stream, dynamic_ncols=True)

    def step(self, line, **postfix):
        if not self.enabled:
            return
        if self.bar is None:
            print(line, file=self.stream, flush=True)
        else:
            self.bar.set_postfix(postfix, refresh=False)
            self.bar.update(1)

    def message(self, line):
        if not self.enabled:
            return
        if self.bar is None:
            print(line, file=self.stream, flush=True)
        else:
            self.bar.write(line, file=self.stream)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def log(line):
    print(line, file=sys.stderr, flush=True)
