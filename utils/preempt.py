"""Graceful preemption: SLURM sends SIGTERM (or SIGUSR1 with --signal) before it kills a job, and
a terminal that hangs up (an ssh connection dropped, without nohup or tmux) sends SIGHUP.

The handler only sets a flag (a hangup's also moves output off the dead terminal); the training
and attack loops poll `requested()` between batches (or at the end of the epoch or attack setting
under way, which they then save: `may_finish`), keep their checkpoint and call `exit_for_requeue`,
whose exit status tells a job-array script to requeue the task. A requeued task (or a run started
again by hand) reruns with --resume and ends with the same results as an uninterrupted run,
because every epoch is seeded by (seed, epoch) alone.
"""
import atexit
import contextlib
import os
import signal
import stat
import sys
import threading

from utils.errors import log, other_rank, sigterm_interrupts, stamped

REQUEUE_EXIT = 75  # EX_TEMPFAIL: "try again later"


def present(*names):
    """The signals of `names` this platform has (Windows: no SIGUSR1, no SIGHUP)."""
    return tuple(getattr(signal, name) for name in names if hasattr(signal, name))


SIGNALS = present("SIGTERM", "SIGUSR1", "SIGHUP")
HANGUP = getattr(signal, "SIGHUP", None)
# train.py lets an epoch under way end after a signal (and saves it), attack.py a setting, when the
# last like it took this long at most: SLURM kills a job 30 s after its SIGTERM (KillWait's default;
# GraceTime for preemption)
FINISH_SECONDS = 20
_stop = threading.Event()
_caught = []  # the signals caught, in order


def _handle(signum, frame):
    if signum == HANGUP:
        leave_hung_up_terminal()
    _caught.append(signum)
    _stop.set()


def leave_hung_up_terminal():
    """stdout and stderr on a terminal that hung up go to /dev/null: every write there fails (EIO),
    and a run stopped by the hangup's SIGHUP ended in that error after its checkpoint, or before it
    (exit 2, not 75), at its next progress line. A terminal that still answers (a `kill -HUP` by
    hand) stays; so do a log file and a pipe. Such a terminal is a character device that takes no
    terminal request any more (/dev/null, which also is one, is put on itself)."""
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        for fd in (1, 2):
            with contextlib.suppress(OSError):  # a closed descriptor: nothing to move
                if stat.S_ISCHR(os.fstat(fd).st_mode) and not os.isatty(fd):
                    os.dup2(null, fd)
    finally:
        os.close(null)


def install():
    """Catch SIGTERM, SIGUSR1 and SIGHUP (main thread only; a no-op elsewhere, e.g. inside a notebook
    thread). A SIGHUP the process ignores (started under nohup, which asks to train on after the
    terminal goes) stays ignored.

    From exit on they are ignored: Python puts a handler it set back to the default while it shuts
    down (torch's teardown takes about half a second), and a signal then killed a process whose
    work was done and written (exit -10, not 0, and a job script lost the stages after it)."""
    if threading.current_thread() is threading.main_thread():
        for sig in SIGNALS:
            if not (sig == HANGUP and signal.getsignal(sig) is signal.SIG_IGN):
                signal.signal(sig, _handle)
        atexit.unregister(_ignore)
        atexit.register(_ignore)


@contextlib.contextmanager
def catching():
    """Catch SIGTERM, SIGUSR1 and SIGHUP while a loop polls `requested()`. A script installed the
    handlers first, and keeps them; a caller of run_training() or attack.run() (a notebook, a driver
    script) gets its own handlers back afterwards: a signal the loop stopped for is spent (it does
    not stop the next run), one that came after the loop's last look is raised again for them.
    Nor are they ignored at the caller's exit (`install`'s, a script's alone): a driver's own exit
    handlers ran with SIGTERM ignored, and a `kill` then was lost. A script that made SIGTERM its
    Ctrl-C (`errors.sigterm_interrupts`: bench.py, whose --what accuracy trains in process, in a
    temporary folder) keeps its handlers: the loop stops as at Ctrl-C, where a stop for a requeue
    exited 75 ('preempted: ... rerun with --resume'), and the script's job could be requeued to
    start over."""
    main = threading.current_thread() is threading.main_thread()
    if main and sigterm_interrupts():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in SIGNALS} if main else {}
    install()
    ended = False  # normally: a signal caught after the loop's last look is the caller's
    try:
        yield
        ended = True
    finally:  # after exit_for_requeue (the loop stopped for the signal) or an error: none is
        if previous and any(handler is not _handle for handler in previous.values()):
            pending = list(dict.fromkeys(_caught)) if ended else []  # each signal once, in order
            for sig, handler in previous.items():  # None: a handler not set from Python
                signal.signal(sig, signal.SIG_DFL if handler is None else handler)
            atexit.unregister(_ignore)
            _stop.clear()
            _caught.clear()
            for sig in pending:
                signal.raise_signal(sig)


def _ignore():
    for sig in SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


def requested():
    return _stop.is_set()


def may_finish(seconds):
    """Whether work expected to take `seconds` (the last like it, an epoch or an attack setting; None:
    not known) may end after a stop signal, its work saved, rather than stop at once and lose it:
    it then ends well before the kill that follows the signal."""
    return seconds is not None and seconds <= FINISH_SECONDS


def exit_for_requeue(message):
    if not other_rank():  # under torchrun, one line from rank 0
        log(stamped(f"preempted: {message}"))
    sys.exit(REQUEUE_EXIT)
