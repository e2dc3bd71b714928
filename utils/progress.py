"""Progress on stderr: a tqdm bar on a terminal, one plain line per step in a log file, each step's
line starting with the date and time it was written (a cluster log then says when each epoch ended,
whether a job stalled, and for how long it sat preempted) and, for steps of about equal cost
(epochs), ending with the time left, as the bar shows it.

stdout is kept for the final JSON line, so a notebook can parse it and a cluster log stays readable.
"""
import contextlib
import datetime
import os
import sys
import time

from tqdm import tqdm

from utils.errors import log, stamped

# tqdm's default without its rate ("3.21s/epoch, "), which the ETA already reflects: on an 80-column
# terminal the rate pushed the step's numbers off the line's end ("valid=12." for 12.00%, "acc=1" for
# 14.06%; a resnet110's bar showed no accuracy at all)
BAR_FORMAT = "{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}{postfix}]"


def _columns(stream):
    """The width of the terminal `stream` writes to; 0 when it reports none, or no height (some
    containers'; `stty cols 120` sets a width alone): tqdm draws nothing on either."""
    try:
        size = os.get_terminal_size(stream.fileno())
    except (AttributeError, OSError, ValueError):
        return 0
    return size.columns if size.lines > 0 else 0


def on_a_terminal(stream):
    """Whether `stream` is a terminal that reports its size, where a bar can be drawn."""
    return stream is not None and stream.isatty() and _columns(stream) > 0


@contextlib.contextmanager
def library_bar(name="stderr", end=""):
    """A library's progress bar, which it writes to sys.`name` (torchvision's download's tqdm to
    stderr, gensim's to stdout), on stderr where that is a terminal, `end` after it (a bar that
    leaves its line open: "\\n"); else nowhere. In a log file a bar was one line of hundreds of
    carriage-return updates (`grep`, `less` and an editor showed them all), and on stdout the JSON
    line came after it, on the same line."""
    terminal = on_a_terminal(sys.stderr)
    redirect = contextlib.redirect_stdout if name == "stdout" else contextlib.redirect_stderr
    with (contextlib.nullcontext(sys.stderr) if terminal else open(os.devnull, "w")) as shown, redirect(shown):
        try:
            yield
        finally:
            if terminal and end:
                shown.write(end)
                shown.flush()


class _Bar(tqdm):
    """tqdm whose description gives way to the step's numbers: on a terminal too narrow for the
    whole line it is cut short ("resnet110 normal_dim=10…"). tqdm cuts such a line at its end: a
    long label's bar showed "valid=93." for 93.45%, or no validation accuracy at all."""

    @property
    def format_dict(self):
        fields = super().format_dict
        if fields["ncols"] and fields["prefix"]:
            # the line without its bar and description, as tqdm would draw it now
            rest = self.format_meter(**fields | {"prefix": "", "ncols": None,
                                                 "bar_format": self.bar_format.replace("{bar}", "")})
            room = fields["ncols"] - len(rest) - len(": ") - 1  # a bar of one character at least
            if len(fields["prefix"]) > room:
                fields["prefix"] = fields["prefix"][:room - 1] + "…" if room > 1 else ""
        return fields


class Progress:
    """`step(line, **postfix)` after each unit of work (an epoch, an attack setting). Used as a
    context manager, the bar is closed however the block ends, so an error line starts a line
    of its own."""

    def __init__(self, total, desc, unit, initial=0, enabled=True, stream=None, eta=False):
        self.stream = stream or sys.stderr
        self.bar = None
        self.enabled = enabled  # False on every process but rank 0 under torchrun
        # eta: a log line ends with the time left, where steps cost about the same (epochs; not an
        # attack's settings, of 1 to 50 steps each, or reused at once)
        self.eta, self.total, self.done, self.steps = eta, total, initial, 0
        self.started = time.monotonic()
        # a bar on a terminal that reports its size (tqdm draws nothing at width or height 0), else lines
        if enabled and on_a_terminal(self.stream):
            self.bar = _Bar(total=total, initial=initial, desc=desc, unit=unit, file=self.stream, dynamic_ncols=True,
                            bar_format=BAR_FORMAT)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def step(self, line, **postfix):
        if not self.enabled:
            return
        self.done, self.steps = self.done + 1, self.steps + 1
        if self.bar is None:
            log(stamped(f"{line}{self._left()}"), self.stream)
        else:
            self.bar.set_postfix(postfix, refresh=False)
            self.bar.update(1)

    def _left(self):
        """' eta 1:02:03': the steps left at the mean time of this process's steps so far (a
        resumed run's from its resume), where `eta` asks for it and steps are left; else ''."""
        left = self.total - self.done
        if not self.eta or left <= 0:
            return ""
        seconds = (time.monotonic() - self.started) / self.steps * left
        return f" eta {datetime.timedelta(seconds=round(seconds))}"

    def message(self, line):
        if not self.enabled:
            return
        if self.bar is None:
            log(line, self.stream)
        else:
            self.bar.write(line, file=self.stream)

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None
