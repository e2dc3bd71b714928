"""One error type for bad input, and the wrapper that turns it into a one-line CLI message.

Library code raises `UsageError` with a sentence that names the problem and, where there is one,
the fix. Scripts run their `main` through `run_cli`, which prints `error: <sentence>` to stderr and
exits with status 2 (130 after Ctrl-C), so a batch log or a notebook sees one line instead of a
traceback.
"""
import argparse
import codecs
import contextlib
import difflib
import errno
import math
import os
import re
import shlex
import signal
import sys
import time
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no fcntl (see `_closed_streams_to_devnull`, `utils.atomic.flock`)
    fcntl = None


class UsageError(Exception):
    """Bad input from the user: a flag, a file or a dataset that cannot be used as given."""


class EveryProcessError(UsageError):
    """An error every torchrun process raises alike (a bad flag; attack.py's and --label mcr2's
    refusal of torchrun): rank 0 alone says it."""


def other_rank():
    """Whether this is a torchrun process other than rank 0, which leaves a line that every process
    would print alike (a refusal, Ctrl-C) to rank 0. A RANK without a WORLD_SIZE of several (left
    in the environment of a job torchrun did not start) is no such process: its errors are said."""
    return os.environ.get("RANK", "0") != "0" and os.environ.get("WORLD_SIZE", "1") != "1"


EXIT_USAGE = 2
EXIT_PIPE = 141  # 128 + SIGPIPE: a shell's status for a writer whose reader left
WRITE_ERRORS = (errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EDQUOT, errno.EFBIG)


# The date and time a progress or status line starts with (train.py's epochs, start, resume and stop
# for a signal; attack.py's settings, start and stop; a local sweep's stages), as a SLURM task's
# lines and a stage log's `=== ` headers give it (`date +%FT%T`): a log is read days after it was
# written, and a job requeued after a preemption goes on another day, so the time of day alone
# ("11:05:47") said neither which day a step ended nor how long the job had waited
STAMP = "%Y-%m-%dT%H:%M:%S"


def stamped(line):
    """`line` after the date and time now (`STAMP`): a log's progress and status lines (a run
    starting, resuming, stopped for a signal) say when they were written."""
    return f"{time.strftime(STAMP)} {line}"


def log(line, stream=None):
    """`line` on stderr (or `stream`) in one write: print writes a line's text and its newline
    apart on Python's unbuffered stderr, so two processes sharing a log (torchrun's ranks, each
    with its error line) could splice their lines together. Dropped where stderr is None (a script
    started with `2>&-`, before `call_cli` gives it /dev/null)."""
    stream = sys.stderr if stream is None else stream
    if stream is not None:
        stream.write(f"{line}\n")
        stream.flush()


def _interrupted_while_loading(signum, frame):
    log("error: interrupted")
    sys.exit(130)


def quiet_interrupts():
    """First thing in a script: a Ctrl-C while its modules load (torch takes seconds) is one
    line and exit 130, not an import traceback. `call_cli` gives Ctrl-C back to Python, whose
    KeyboardInterrupt unwinds `main` as usual. A script started with SIGINT ignored (a shell's
    background job) keeps ignoring it."""
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _interrupted_while_loading)


def _terminated(signum, frame):
    raise KeyboardInterrupt("got SIGTERM")


def sigterm_as_interrupt():
    """In a script that cleans up as it unwinds (report.py, labels.generate, bench.py): SIGTERM
    (`timeout`, `kill`) ends it as Ctrl-C does, with `error: interrupted; got SIGTERM` and exit
    status 130, its temporary files and worker processes gone and the earlier files as they were.
    Killed at once, report.py and labels.generate left their temporary files in the folder they
    wrote into (`file_set`'s, which labels.generate stages as it goes) and labels.generate its
    recordings' folder in TMPDIR, bench.py its folder of checkpoints there. A SIGTERM its caller
    ignored stays ignored."""
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _terminated)


def sigterm_interrupts():
    """Whether SIGTERM is this process's Ctrl-C, as `sigterm_as_interrupt` makes it: its script
    stops at it, and resumes nothing that a requeue would run again (`preempt.catching`)."""
    return signal.getsignal(signal.SIGTERM) is _terminated


class _NamedStdout:
    """sys.stdout while `call_cli` runs a script: a write it cannot take (a job's log on a full
    disk) is an OSError that names standard output, where 'could not write a file' named none."""

    def __init__(self, stream):
        self._stream = stream

    def __getattr__(self, name):
        return getattr(self._stream, name)

    def write(self, text):
        return self._named(self._stream.write, text)

    def flush(self):
        return self._named(self._stream.flush)

    @staticmethod
    def _named(call, *args):
        try:
            return call(*args)
        except BrokenPipeError:  # its reader left: `call_cli` ends quietly
            raise
        except OSError as err:
            if err.filename is not None:
                raise
            raise OSError(err.errno, err.strerror, "standard output") from err


def _closed_streams_to_devnull():
    """stdout and stderr that cannot be written (a script started with `>&-` or `2>&-`, as a daemon
    may start it: Python's None, or, started through a shell wrapper such as pyenv's shim, a file the
    wrapper holds open for reading there) go to /dev/null, as Python's print drops a line for None:
    the first progress line or the result line would otherwise end the run, with nowhere to say why.
    A stream without a descriptor (a notebook's, a test's capture) stays as it is; so does any
    other on Windows, whose descriptors have no access mode to read (no fcntl)."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        try:
            writable = stream is not None and (
                fcntl is None or fcntl.fcntl(stream.fileno(), fcntl.F_GETFL) & os.O_ACCMODE != os.O_RDONLY)
        except OSError as err:  # EBADF: its descriptor closed since; no descriptor (UnsupportedOperation)
            writable = err.errno != errno.EBADF
        except (AttributeError, ValueError):  # no fileno, or a closed file object
            continue
        if not writable:
            setattr(sys, name, open(os.devnull, "w"))


def _last_word(line):
    """`call_cli`'s error line on stderr, dropped where stderr cannot take it (a job's log on a full
    disk): the exit status still says how the script ended, where the OSError raised while saying
    so ended it with Python's status 1, as a crash."""
    with contextlib.suppress(OSError):
        log(line)


@contextlib.contextmanager
def _surrogates_as_bytes(stream):
    """Within, `stream` (stdout) writes the lone surrogates Python keeps for a file name's bytes it
    cannot decode (a folder named in latin-1 on a UTF-8 system) back as those bytes, as Python's C
    locale and UTF-8 mode do: a UTF-8 locale's strict stdout (LANG=en_US.UTF-8, PYTHONIOENCODING=utf-8)
    ended sweep.py --print and --dry_run under such a folder in a UnicodeEncodeError traceback, where
    the shell line now names the folder's real bytes. A character the locale's encoding lacks (an 'é'
    in ASCII) is still `call_cli`'s error line. The stream's own handler comes back after."""
    errors = getattr(stream, "errors", None)
    if errors != "strict" or not hasattr(stream, "reconfigure"):
        yield
        return
    stream.reconfigure(errors="surrogateescape")
    try:
        yield
    finally:
        with contextlib.suppress(OSError, ValueError):  # a reader that left, a closed stream
            stream.reconfigure(errors=errors)


# The first words of torch's error where its CPU allocator cannot have the memory asked for (a
# RuntimeError, not torch.OutOfMemoryError, which its GPU allocators raise)
CPU_OUT_OF_MEMORY = ("DefaultCPUAllocator: can't allocate memory", "C10 Out of Memory")


def out_of_memory(err, advice=None):
    """`call_cli`'s line (without 'error: ') for `err` where it is torch running out of memory, a
    GPU's (torch.OutOfMemoryError) or the machine's (its CPU allocator's RuntimeError); else None.
    It says what ran out, the size torch could not have where its message gives it, and `advice`
    (the script's: what to lower): "out of the GPU's memory: torch could not allocate 2.00 GiB (GPU
    0 had 1.20 GiB free of 79.19 GiB); lower --batch_size", where torch's own was a traceback of
    tens of lines that ended in a paragraph about the CUDA allocator's settings. torch is looked
    up, not imported: an error of its allocators comes only where it is loaded."""
    torch, text = sys.modules.get("torch"), " ".join(str(err).split())
    gpu = torch is not None and isinstance(err, torch.OutOfMemoryError)
    if not gpu and not (isinstance(err, RuntimeError) and any(words in text for words in CPU_OUT_OF_MEMORY)):
        return None
    line = "out of the GPU's memory" if gpu else "out of this machine's memory"
    if asked := re.search(r"(?i)(?:tried|trying) to allocate ([\d.]+) ?([KMGTPE]iB)?", text):
        number, unit = asked.groups()  # the CPU allocator's in bytes ("6710886400 bytes"), a GPU's sized
        line += f": torch could not allocate {f'{number} {unit}' if unit else _size(int(float(number)))}"
        if free := re.search(r"(GPU \d+) has a total capacity of (\S+ \S+) of which (\S+ \S+) is free", text):
            line += f" ({free.group(1)} had {free.group(3)} free of {free.group(2)})"
    return line + (f"; {advice}" if advice else "")


def _size(count):
    """A number of bytes as torch's messages write a size: '6.25 GiB', '512.00 MiB', '300 bytes'."""
    for shift, unit in ((50, "PiB"), (40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")):
        if count >= 1 << shift:
            return f"{count / (1 << shift):.2f} {unit}"
    return f"{count} bytes"


def call_cli(main, argv=None, memory=None):
    """Call `main(argv)`; returns the exit status: 0, or 2 after one `error:` line on stderr (130
    after Ctrl-C, with what the interrupted work keeps; 141, silently, when stdout's reader left).
    torch running out of memory is such a line too (`out_of_memory`), ending with `memory`, what
    the script's memory grows with, to lower. A closed stdout or stderr drops what would go there
    (`_closed_streams_to_devnull`)."""
    if signal.getsignal(signal.SIGINT) is _interrupted_while_loading:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    _closed_streams_to_devnull()
    stdout, sys.stdout = sys.stdout, _NamedStdout(sys.stdout)
    with _surrogates_as_bytes(stdout):
        try:
            main(argv)
            sys.stdout.flush()  # a reader that left is found here, not in the interpreter's exit
            return 0
        except UsageError as err:
            if not (isinstance(err, EveryProcessError) and other_rank()):
                _last_word(f"error: {' '.join(str(err).split())}")
        except BrokenPipeError:  # stdout's reader left (`| head`): stop quietly, as `yes | head` does
            try:
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
            except (OSError, ValueError):  # a stdout without a file descriptor (a notebook's)
                pass
            return EXIT_PIPE
        except OSError as err:
            # A full disk, a read-only directory, a path through a file: writes are atomic (a failed
            # append is cut off again), so nothing earlier was lost.
            _last_word(f"error: {os_error_text(err)}")
        except RuntimeError as err:
            # out of memory: what the run wrote is as it was (each file written whole, or not at all)
            if (line := out_of_memory(err, memory)) is None:
                raise
            _last_word(f"error: {line}")
        except KeyboardInterrupt as err:  # under torchrun every process gets it (torchrun passes it on)
            if not other_rank():
                _last_word("error: interrupted" + (f"; {err}" if str(err) else ""))
            return 130
        except UnicodeEncodeError as err:
            if codecs.lookup(err.encoding).name == "utf-8":  # any text goes into UTF-8: a bug, not the locale
                raise
            # a non-UTF-8 locale's (LANG=C with PYTHONUTF8=0, latin-1) file names, stdout: a path from a
            # grid file with a character they cannot hold
            _last_word(f"error: {ascii(err.object[err.start:err.end])} cannot be written in this locale's "
                       f"encoding ({err.encoding}); run with PYTHONUTF8=1 or a UTF-8 locale (LC_ALL=C.UTF-8)"
                       f"{_io_encoding_too()}")
        finally:
            sys.stdout = stdout
        return EXIT_USAGE


def _io_encoding_too():
    """What `call_cli`'s line on a locale's encoding adds where PYTHONIOENCODING names another
    than UTF-8: it sets stdout's encoding over PYTHONUTF8 and the locale, so the line's advice alone
    left PYTHONIOENCODING=ascii's stdout as it was, and the error as it was. '' otherwise."""
    name = os.environ.get("PYTHONIOENCODING", "").split(":")[0]
    try:
        utf_8 = not name or codecs.lookup(name).name == "utf-8"
    except LookupError:  # a name Python would not have started with
        utf_8 = False
    return "" if utf_8 else f", and PYTHONIOENCODING unset (its {name!r} sets stdout's encoding over both)"


@contextlib.contextmanager
def interrupt_says(text):
    """Ctrl-C in the block ends as a KeyboardInterrupt carrying `text()` (called then: what the
    interrupted work keeps and how to go on), which `call_cli` prints after 'error: interrupted'."""
    try:
        yield
    except KeyboardInterrupt:
        raise KeyboardInterrupt(text()) from None


@contextlib.contextmanager
def os_errors_as_usage(outputs=None):
    """Within (train.py's and attack.py's main, report.report): an OSError (a --base_dir or --out
    through a file or read-only, a full disk) is a UsageError from it, with the line `call_cli`
    would print for it, so that a caller in process (a notebook) gets the command line's error.
    `outputs`: {flag: folder} of the folders the command writes into (`os_error_text`)."""
    try:
        yield
    except BrokenPipeError:  # stdout's reader left: `call_cli` ends quietly
        raise
    except OSError as err:
        raise UsageError(os_error_text(err, outputs)) from err


REFUSED_ERRORS = (errno.EROFS, errno.EACCES)  # a folder that takes no writes: a full one might, later


def os_error_text(err, outputs=None):
    """An OSError as one line, for `call_cli` and a sweep's failed stage: 'could not write PATH:
    No space left on device', 'cannot read PATH: Permission denied' (a file its user may not
    read), 'cannot use PATH: a file, not a folder', 'cannot use PATH: a symbolic link (to ...), not
    followed; remove it' (`utils.atomic.not_through_a_link`). A write refused (a read-only
    mount, a shared folder of another user's) inside a folder of `outputs` ({flag: folder}) names
    the flag that moves it: '...: Read-only file system; pass another --base_dir'."""
    path, reason = err.filename, err.strerror or err
    verb = "could not write" if err.errno in WRITE_ERRORS else "cannot use"
    if err.errno == errno.EACCES and path and os.path.exists(path) and not os.access(path, os.R_OK):
        verb = "cannot read"  # a dataset file or config.json of mode 000: refused a read, not a write
    if err.errno == errno.EEXIST and path and not os.path.isdir(path):
        reason = "a file, not a folder"  # mkdir(exist_ok=True) on a file: not "File exists"
    elif err.errno == errno.ENOTDIR and path and (found := file_in_the_way(path)):
        path, reason = found, "a file, not a folder"  # the file in the way, not a path through it
    elif err.errno == errno.ELOOP and path and os.path.islink(path):  # opened not to follow it
        reason = f"a symbolic link (to {os.readlink(path)}), not followed; remove it"
    return f"{verb} {path or 'a file'}: {reason}{_moved_by(err, outputs)}"


def nearest_existing(path):
    """`path`, or the nearest of its parents, that exists (a link, broken too), as text; None where
    none does."""
    return next((p for p in (str(path), *map(str, Path(path).parents)) if os.path.lexists(p)), None)


def file_in_the_way(path):
    """The file at `path`, or at the nearest of its parents that exists, where that is not a folder
    (a folder meant to be made there cannot be); None where it is one, or nothing exists."""
    found = nearest_existing(path)
    return found if found and not os.path.isdir(found) else None


def _moved_by(err, outputs):
    """'; pass another FLAG' for `os_error_text` where `err` refused a write inside the folder of
    FLAG in `outputs` ({flag: folder}; a folder None is unset), else ''."""
    if err.errno not in REFUSED_ERRORS or not err.filename:
        return ""
    path = Path(os.path.abspath(err.filename))
    flag = next((flag for flag, folder in (outputs or {}).items()
                 if folder is not None and path.is_relative_to(os.path.abspath(folder))), None)
    return f"; pass another {flag}" if flag else ""


def choice(kind, name, valid, error=UsageError):
    """`name` if it is one of `valid` (a registry's keys), else an `error` (a UsageError) naming
    the `kind` and the choices."""
    if name not in valid:
        raise error(f"unknown {kind} {name!r}; choose from {', '.join(valid)}")
    return name


def run_cli(main, argv=None, memory=None):
    """A script's entry point: run `main` and exit with `call_cli`'s status (`memory`: its advice
    where torch runs out of memory). In a script's process
    (its first lines called `quiet_interrupts`; an in-process caller's Ctrl-C stays its own),
    Ctrl-C is ignored once `main` has ended, as `preempt` ignores SIGTERM at exit: the work is
    written and the lines said, and in the half second of torch's teardown after the JSON line a
    Ctrl-C was a KeyboardInterrupt inside its exit handlers ('Exception ignored in atexit
    callback' and a traceback) or, once Python had put SIGINT's default action back, a kill
    (exit -2, no status call_cli gives)."""
    script = signal.getsignal(signal.SIGINT) is _interrupted_while_loading
    try:
        status = call_cli(main, argv, memory)
    finally:  # an exit for a requeue (75) too
        if script and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.exit(status)


def number(kind, minimum=0, inclusive=False, maximum=None):
    """An argparse type: text -> kind(text), which must lie above `minimum` (or at it, if
    `inclusive`) and not above `maximum`; anything else is argparse's one-line error."""
    def check(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not a{'n' if kind is int else ''} "
                                             f"{kind.__name__}") from None
        if isinstance(value, float) and not math.isfinite(value):  # nan fails every bound, inf passed them
            raise argparse.ArgumentTypeError(f"{text} is not a finite number")
        if not (value >= minimum if inclusive else value > minimum):
            bound = f"at least {minimum}" if inclusive else "positive" if minimum == 0 else f"above {minimum}"
            raise argparse.ArgumentTypeError(f"{text} must be {bound}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"{text} must be at most {maximum}")
        return value
    return check


def nonempty(text):
    """An argparse type for a path or name: the text as given, with a leading ~ as the home folder
    (as a shell would have it; a notebook's argv list or a sweep's quoted command does not expand
    it, where ~/runs would become a folder named ~), unless empty (an unset variable in `--base_dir "$OUT"`),
    which would name the current folder, or no file at all; `file_name_text`'s."""
    if not text:
        raise argparse.ArgumentTypeError("must not be empty")
    return os.path.expanduser(file_name_text(text))


def file_name_text(text):
    """`text`, which names a file or is part of a file's name (a path flag, a label), unless it holds
    a NUL character (a grid file's "\\u0000", a notebook's argv), which no file name can hold: an
    argparse error, where Python's ValueError ("embedded null byte") was a traceback."""
    if "\0" in text:
        raise argparse.ArgumentTypeError(f"{text!r} holds a NUL character, which no file name can hold")
    return text


class ExtendList(argparse._StoreAction):
    """A list flag (nargs "+" or "*") that, given again, adds its values to the first's: argparse's
    own store kept the last list, so `--sbatch account=p --sbatch qos=high` submitted without the
    account and `--setup 'module load cuda' --setup 'source .venv/bin/activate'` lost the module.
    The first time on a command line it replaces the default (a grid file's value, set as one).
    attack.py's --attacks and --epsilons too (`--attacks fgsm --attacks pgd` attacked with pgd
    alone); sweep.py passes on such a flag that several layers give (a grid file's, the command
    line's) from the last alone (`later_wins`), whose list replaces the earlier ones'."""

    def __call__(self, parser, namespace, values, option_string=None):
        current = getattr(namespace, self.dest, None)
        if isinstance(current, list) and current is not self.default:  # given before on this line
            values = current + list(values)
        setattr(namespace, self.dest, values)


class OneFile(argparse._StoreAction):
    """A flag naming the one grid file of a sweep or report (sweep.py's --config, report.py's
    --grid): given twice, an error naming both files, where argparse kept the last and the first
    file's options, its runs among them, were lost without a word."""

    def __call__(self, parser, namespace, values, option_string=None):
        if isinstance(earlier := getattr(namespace, self.dest, None), str):  # read before on this line
            raise argparse.ArgumentError(self, f"given twice ({earlier}, then {values}): give one grid file, "
                                               "and override its keys with flags")
        setattr(namespace, self.dest, values)


class DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """--help shows each flag's default, a list's as it is typed (`(default: train attack)`, not
    `['train', 'attack']`), except where it is None, empty or a switch's False: such a flag's help
    says what it means (a default picked later, or taken from the checkpoint), and a switch is off
    unless given, where '(default: False)' read as a value to pass."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False or action.default in ("", []):
            return action.help
        if isinstance(action.default, list):
            shown = " ".join(map(str, action.default)).replace("%", "%%")
            return f"{action.help} (default: {shown})"
        return super()._get_help_string(action)


def _flag_named(token):
    """The flag a command-line `token` names ('--x' of '--x' and '--x=1'); None for one that names
    none: a value, or '--' alone (argparse's end of flags, which it leaves over and which starts
    every flag)."""
    option = token.split("=", 1)[0]
    return option if option.startswith("--") and option != "--" else None


def closest_flag(token, options):
    """'; did you mean --X?' for a `token` that is not one of `options` (flags) but starts one or
    is close to one (--eps for --epsilons, --n_images for --num_images, --data-dir for
    --data_dir); '' for a token that is no flag or near none."""
    option = _flag_named(token)
    if option is None or option in options:
        return ""
    # hyphens read as underscores by letters: --data-dir for --data_dir
    close = nearest(option, [o for o in options if o.startswith("--")], "--" + option[2:].replace("-", "_"))
    return f"; did you mean {' or '.join(close)}?" if close else ""


def nearest(name, names, spelled=None):
    """The `names` that `name` starts (a shortened one), else the one nearest by letters to
    `spelled` (`name` where None; difflib's ratio 0.8 at least); [] for none. `closest_flag`'s
    for a flag, and a sweep's for a grid file's key."""
    return ([n for n in names if n.startswith(name)]
            or difflib.get_close_matches(spelled or name, names, n=1, cutoff=0.8))


def did_you_mean(name, names):
    """' (did you mean speech?)' where `name` is near one of `names` (`nearest`, its capitals aside:
    ResNet32, as papers write it, for resnet32), ' (did you mean resnet110 or resnet32?)' where it
    starts a few; '' for none, or for more (an error lists them after)."""
    close = nearest(name, names, spelled=name.lower())
    return f" (did you mean {' or '.join(close)}?)" if 0 < len(close) <= 3 else ""


def repeated(name, listed, once):
    """'warning: NAME lists 8/255 (also as 0.03137254901960784) more than once; ONCE' where a list's
    (text as given, value as read) pairs `listed` give a value more than once (by its value: 8/255
    and 0.03137254901960784 are one), each such value by its first text; else None. A list that
    does a value once (attack.py's --attacks and --epsilons, sweep.py's axes) would drop the repeat
    without a word, though it is more often a slip (8/255 twice for 8/255 16/255) than meant."""
    texts = {}  # value -> its text each time the list gives it
    for text, value in listed:
        texts.setdefault(value, []).append(text)

    def named(given):  # '8/255 (also as 0.03137254901960784)'
        others = [t for t in dict.fromkeys(given) if t != given[0]]
        return given[0] + (f" (also as {', '.join(others)})" if others else "")
    if shown := [named(given) for given in texts.values() if len(given) > 1]:
        return f"warning: {name} lists {', '.join(shown)} more than once; {once}"
    return None


def doc_paragraphs(doc):
    """A script's module docstring `doc` as its paragraphs (split at blank lines), which its --help
    shows; one empty paragraph under `python -OO` (or PYTHONOPTIMIZE=2), which strips docstrings:
    each script stopped with a traceback ('NoneType' object has no attribute 'split') before it
    read a flag."""
    return (doc or "").split("\n\n")


class CliParser(argparse.ArgumentParser):
    """argparse, but a bad flag is a UsageError: one `error:` line from the command line (the usage
    block is in --help), an exception a caller of main(argv) can catch (not SystemExit). A caller's
    argv may hold paths and numbers (`["--data_dir", Path(...), "--epochs", 30]`), read as their text.

    Flags are matched whole: argparse's default took a shortened flag for the one it starts (--lab
    for --label), so a batch script's --check 30 meant train.py's --checkpoint_seconds and would
    have meant another flag, or none, once a new flag shared the prefix; a script passing flags on
    (bench.py's --train_flags) saw a flag it sets itself under another name. The error names the
    full flag."""

    def __init__(self, *args, allow_abbrev=False, **kwargs):
        super().__init__(*args, allow_abbrev=allow_abbrev, **kwargs)
        # Python 3.13's test for a value that starts with '-': before it, "--epsilons -1/255" (or
        # -1e-3) was a flag of that name, and the error "expected at least one argument"
        self._negative_number_matcher = re.compile(r"-\.?\d")

    def parse_known_args(self, args=None, namespace=None):
        if isinstance(args, str):  # argparse would read each character as an argument
            raise UsageError(f"{self.prog}: argv is a list of arguments, not one string (shlex.split it)")
        return super().parse_known_args(None if args is None else [str(a) for a in args], namespace)

    def parse_args(self, args=None, namespace=None):
        namespace, extras = self.parse_known_args(args, namespace)
        if extras and args is None and "ipykernel" in sys.modules:  # main() in a notebook read the kernel's
            self.error(f"unrecognized arguments: {shlex.join(extras)}, the notebook kernel's own command "
                       "line, which main() reads when given no list; pass the flags as one "
                       "(main([]) for the defaults)")
        if extras:
            # as a shell writes them: an empty argument ("$UNSET") was no text at all, and '8 / 255' three
            self.error(self.shortened(extras) or f"unrecognized arguments: {shlex.join(extras)}"
                       + next(filter(None, (closest_flag(t, self._option_string_actions) for t in extras)), ""))
        return namespace

    def shortened(self, extras):
        """For arguments parse_known_args left over, the error for the first shortened flag among
        them, naming the full flag(s) it starts; None if none is."""
        for token in extras:
            if (option := _flag_named(token)) and (
                    full := [o for o in self._option_string_actions if o.startswith(option)]):
                return (f"{option}: shortened flags are refused (a new flag could change what they "
                        f"mean); write {full[0] if len(full) == 1 else 'one of ' + ', '.join(full)}")
        return None

    def print_help(self, file=None):
        """--help on stdout (or `file`), flushed: argparse's own dropped a write that failed (a
        stdout on a full disk) and --help exited 0 with nothing shown; the OSError now reaches
        `call_cli`, whose line names standard output (exit 2)."""
        file = sys.stdout if file is None else file
        file.write(self.format_help())
        file.flush()

    def error(self, message):  # not chained to argparse's own error: one traceback in a notebook
        raise EveryProcessError(f"{message} (see {self.prog} --help)") from None


def as_parsed(parser, args, derived=()):
    """A copy of the namespace `args` (a notebook's, which no parser read, or one it edited) with
    each value of `parser`'s options read as the command line reads that value's text, through the
    option's own type and choices, a list's element by element: a bad value is the command line's
    UsageError ('argument --num_images: 0 must be positive (see attack.py --help)') before any work,
    where attack.run and run_training went on to a traceback (batch_size 0), a wrong result
    (num_images 0, lr nan) or files under a nonsense name. A value's text is the value where it is
    a string (so '8/255' becomes the (text, value) pair --epsilons' type makes, and 'fgsm' for
    --attacks the list ['fgsm']), a pair's text where it is such a pair, else str(value): a float lr
    0.1, an int, a Path pass (the Path as its text, ~ expanded, as the command line keeps it); 2.5
    for an int, nan, True for a number do not. Unset values (None) stay as they are, and so does
    a switch's (store_true: --amp, --force) where it is True or False (numpy's too, as Python's:
    `_is_bool`); any other is a UsageError naming the flag, which has no text to read:
    channels_last="False", truthy, trained channels-last and config.json recorded the string;
    amp="no" was a traceback after config.json was written. An attribute that no option has, nor
    `derived` names (what a script's own parse adds: bench.py's train_argv), is the command line's
    error for an unknown flag: `args.epoch = 1` for epochs trained the default 600 epochs, and
    `args.num_image = 100` attacked every test image, where `--epoch 1` is refused."""
    values = vars(args).copy()
    dests = [action.dest for action in parser._actions]
    if unknown := [name for name in values if name not in dests and name not in derived]:
        meant = next(filter(None, (nearest(name, dests) for name in unknown)), None)
        raise UsageError(f"unrecognized attribute{'s' * (len(unknown) > 1)} {', '.join(map(repr, unknown))} "
                         f"(no {parser.prog} flag reads {'them' if len(unknown) > 1 else 'it'})"
                         + (f"; did you mean {meant[0]!r}?" if meant else "") + f" (see {parser.prog} --help)")
    for action in parser._actions:
        value = values.get(action.dest)
        if value is None:  # unset
            continue
        if action.nargs == 0:  # a switch (--help's dest is unset)
            if not _is_bool(value):
                raise UsageError(f"argument {action.option_strings[0]}: a switch takes True or False, not "
                                 f"{value!r} (see {parser.prog} --help)")
            values[action.dest] = bool(value)
            continue
        listed = action.nargs not in (None, "?")
        texts = [_text(v) for v in (value if listed and isinstance(value, (list, tuple)) else [value])]
        one = CliParser(prog=parser.prog, add_help=False)
        if not action.option_strings:  # a positional: its name in errors is its metavar or dest
            one.add_argument(action.dest, nargs=action.nargs, type=action.type, choices=action.choices,
                             metavar=action.metavar)
            argv = ["--", *texts]
        else:  # --flag=TEXT: a text that starts with '-' is the value, not a flag
            one.add_argument(*action.option_strings, dest=action.dest, nargs=action.nargs, type=action.type,
                             choices=action.choices, metavar=action.metavar)
            argv = [action.option_strings[0], *texts] if listed else [f"{action.option_strings[0]}={texts[0]}"]
        values[action.dest] = getattr(one.parse_args(argv), action.dest)
    return argparse.Namespace(**values)


def _is_bool(value):
    """Whether `value` is True or False: Python's, or numpy's (np.True_, a pandas row's value from
    a sweep table), which is no bool, nor an int; 0 and 1 are not, nor a 0-d array. numpy is looked
    up, not imported: a numpy bool exists only where it is loaded."""
    numpy = sys.modules.get("numpy")
    return isinstance(value, bool) or numpy is not None and isinstance(value, numpy.bool_)


def _text(value):
    """`as_parsed`'s text of one value: a string as it is, a (text, value) pair's text (the
    pairs attack.py's --epsilons keeps, '8/255' with its number), else str(value)."""
    if isinstance(value, tuple) and value and isinstance(value[0], str):
        return value[0]
    return value if isinstance(value, str) else str(value)
