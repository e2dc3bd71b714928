"""Atomic file writes: a reader (or a killed job) never sees half a file; strict JSON text;
tables as Markdown and LaTeX.

No torch here: the label tools import it too."""
import contextlib
import errno
import io
import json
import math
import os
import re
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from utils.errors import UsageError, log

try:
    import fcntl
except ImportError:  # Windows: no flock; jobs go on without locks, as on a file system without them
    fcntl = None


def finite(value):
    """JSON-safe: NaN and infinities (a diverged run's loss) become null, tuples lists."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def json_text(obj, **options):
    """Strict JSON (no NaN, which many parsers refuse) of `obj` with `finite` values."""
    return json.dumps(finite(obj), allow_nan=False, **options)


def dump_json(file, obj, **options):
    """`json_text(obj, **options)` and a newline into the binary `file`, written as the encoder
    makes it, a buffer at a time: a large document is never one string (report.py's summary.json
    of 600 full-size runs, 34 MB, was, and json.dumps's pieces of it before the join took 260 MB)."""
    text = io.TextIOWrapper(file, encoding="utf-8", newline="\n")
    try:
        json.dump(finite(obj), text, allow_nan=False, **options)
        text.write("\n")
    finally:
        text.detach()  # flushed into `file`, which stays open (the wrapper, collected, would close it)


def markdown_table(header, rows):
    """Markdown table, each cell `markdown_text` (a label of one's own, a file's path may hold a |,
    a *, a line break: it shows as it is, in a cell of its own)."""
    def line(cells):
        return "| " + " | ".join(map(markdown_text, cells)) + " |"
    return "\n".join([line(header), "|" + "|".join("---" for _ in header) + "|", *map(line, rows)])


# What Markdown (CommonMark, and GitHub's tables and strikethrough) would read as markup in a line
# of text: \ before punctuation (an escape: a label a\_b showed as a_b), ` (code), * and _
# (emphasis), ~ (strikethrough), < (HTML: a label <b>x showed x in bold), [ ] (links), & (entities),
# | (a table's column break); a line break, which ends a table's row (the rest of the label became
# a row of its own).
MARKDOWN_SPECIAL = re.compile(r"[\\`*_~<\[\]&|]+|\r\n|[\r\n]")


def markdown_text(text):
    """`text` as Markdown that shows it as it is, in one line: each `MARKDOWN_SPECIAL` character
    backslash-escaped, but for a run of _ between letters or digits, which is no emphasis (so
    normal_dim=10 and bert_rescaled read as they did), and a line break a space."""
    text = str(text)

    def escape(match):
        found, start, end = match.group(), match.start(), match.end()
        if found in ("\r\n", "\r", "\n"):
            return " "
        if set(found) == {"_"} and start and end < len(text) and text[start - 1].isalnum() and text[end].isalnum():
            return found
        return "".join("\\" + c for c in found)
    return MARKDOWN_SPECIAL.sub(escape, text)


# What LaTeX would read as markup in a text, as it typesets that character: TeX's specials; < > |,
# which the default OT1 fonts print as other glyphs; [ ] *, which \\ at a row's end would take as
# its options; the ± of a table's cells, as math, which every engine and font typesets; a line
# break, which a caption must not hold (two end its paragraph); ` which the fonts print as a
# quote (tick`s as tick‘s). And the ligatures of the fonts' -- and --- (en and em dashes: a label
# two--dash read two–dash), '' (”) and ,, (T1's „): a {} after each character but the last keeps
# them apart.
LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                 "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                 "<": r"\textless{}", ">": r"\textgreater{}", "|": r"\textbar{}", "[": "{[}", "]": "{]}",
                 "*": "{*}", "`": r"\textasciigrave{}", "±": r"$\pm$", "\n": " ", "\r": " "}
LATEX_SPECIAL = re.compile("|".join([*map(re.escape, LATEX_ESCAPES), "-(?=-)", "'(?=')", ",(?=,)"]))


def latex_text(text):
    """`text` as LaTeX text that typesets it as it is (a label named bert_rescaled, a heading holding
    a % or a folder's &), in one pass, so that an escape's own backslash and braces are not escaped again."""
    return LATEX_SPECIAL.sub(lambda match: LATEX_ESCAPES.get(match.group(), match.group() + "{}"), str(text))


@dataclass(frozen=True)
class Table:
    """A table of a report, made once and written as Markdown or LaTeX: `caption` says what it
    holds (LaTeX's caption; in Markdown the page's heading above it says so), `header` its column names, `rows`
    its rows of str cells, '-' where there is no value."""
    caption: str
    header: list
    rows: list

    def markdown(self):
        return markdown_table(self.header, self.rows)

    def latex(self):
        """A `table` float of booktabs rules (\\toprule, \\midrule, \\bottomrule), its caption
        above; the first column left-aligned, the others right; a '-' cell as --."""
        def line(cells):
            return " & ".join("--" if c == "-" else latex_text(c) for c in cells) + r" \\"
        return "\n".join([r"\begin{table}[htbp]", r"\centering", rf"\caption{{{latex_text(self.caption)}}}",
                          rf"\begin{{tabular}}{{l{'r' * (len(self.header) - 1)}}}", r"\toprule", line(self.header),
                          r"\midrule", *map(line, self.rows), r"\bottomrule", r"\end{tabular}", r"\end{table}"])


def code_span(text):
    """`text` as a Markdown code span that shows it as it is, whatever backticks it holds (a
    folder named a`b ended '`a`' and left 'b`' as text): fenced by one backtick more than its
    longest run, with a space inside each fence where it starts or ends with a backtick, or with a
    space at both ends (CommonMark takes one such space off each end)."""
    fence = "`" * (max(map(len, re.findall("`+", text)), default=0) + 1)
    pad = " " if text[:1] == "`" or text[-1:] == "`" or (text[:1] == " " and text[-1:] == " ") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def print_json(obj):
    """`obj` as a script's JSON line on stdout: its last line, which a notebook or a driver parses."""
    print(json_text(obj), flush=True)


def umask_mode(mode=0o666):
    """`mode` less the umask: what `open` gives a new file (0777: a script, a folder)."""
    return mode & ~current_umask()


def current_umask():
    """The process's umask, read where Linux shows it (/proc/self/status, since 4.7): the only
    other way, os.umask(0) and back, leaves it 0 for an instant, in which a file another thread
    makes (a notebook's, a sweep's stage log) is made writable by everyone."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path, write, mode=0o666):
    """Call write(file) on a temporary file beside `path`, then rename it over `path`.

    The file gets the permissions `open` would give it (`mode`, 0666, less the umask; 0777 for a
    script to run): the temporary file is created 0600, which would hide results and checkpoints
    from a shared group."""
    with file_set() as put:
        put(path, write, mode)


@contextlib.contextmanager
def file_set():
    """Files replaced together (a report's tables, CSVs and figures): `put(path, write)` in the
    block calls write(file) on a temporary file beside `path`; leaving it renames them all over
    their paths, and an error in it (a full disk) removes them, so that no file is replaced and
    the folder does not hold half an old set and half a new one."""
    staged = []  # (temporary, path)
    try:
        yield lambda path, write, mode=0o666: staged.append((_temporary(Path(path), write, mode), Path(path)))
        for tmp, path in staged:
            try:
                os.replace(tmp, path)
            except OSError as err:  # named by `path` (a folder there, say), not the temporary file
                raise OSError(err.errno, err.strerror, str(path)) from err
        for folder in dict.fromkeys(path.parent for _, path in staged):
            _sync_folder(folder)
    except BaseException:
        for tmp, _ in staged:
            Path(tmp).unlink(missing_ok=True)
        raise


def _sync_folder(folder):
    """The renames into `folder` on the disk: a power cut after them finds the new names, not the
    old ones (a resumed run would redo an epoch whose checkpoint it had reported written). A file
    system that cannot sync a folder (some network mounts) has the renames anyway, later."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def exclusive(path, waiting=None):
    """Hold an exclusive lock on the file `path` (made if absent) for the block, so that jobs
    sharing a folder take turns; yields whether it holds one (False where the file system has no
    locks: the caller goes on without). `waiting`: a line for stderr where another job holds it,
    before this one waits (a job that waited on a download or a report in silence looked hung),
    followed by who that is where it recorded itself (`recording`: ': train.py (pid 4123 on node07,
    since 17:05:34 UTC)').
    A job that holds it may remove the file (cifar's download removing the folder it made): a job
    that waited on the removed file then locks the one at `path` now, made anew, instead of going
    on beside the job that did so on a lock of its own. A FileNotFoundError says `path`'s folder
    is gone."""
    while True:
        with open_lock(path) as f:
            try:
                try:
                    flock(f, wait=False)
                except BlockingIOError:  # held by another job
                    if waiting:
                        holder = holder_of(f)
                        log(f"{waiting}: {holder}" if holder else waiting)
                        waiting = None  # said once, also where the file was removed meanwhile
                    flock(f)
            except OSError:
                locked = False
            else:
                locked = True
            if not locked or _still_at(f, path):
                with recording(f) if locked else contextlib.nullcontext():
                    yield locked  # closing the file releases the lock
                return


def flock(file, wait=True):
    """An exclusive flock on the open `file`, waited for (wait=False: BlockingIOError where another
    job holds it). An OSError where there are no locks: a file system without them, or Windows,
    which has no fcntl (its callers then go on without, as they say)."""
    if fcntl is None:
        raise OSError(errno.ENOLCK, "no file locks on this platform")
    fcntl.flock(file, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))


def open_lock(path):
    """The lock file `path` open to flock, to read (`holder_of`) and to write (`recording`), made if
    absent. One there that this user may not write (another user's, made under umask 022 in a
    folder the group shares) is opened to read, which flock needs no more than: refused, the job
    went on without the lock, beside the other one. A symbolic link there (in a run folder copied
    from elsewhere) is a UsageError, not followed: its holder empties the lock file it writes, and
    a .lock linked to ~/.bashrc left that file empty."""
    try:
        try:
            return open(path, "a+b", opener=not_through_a_link)
        except PermissionError as err:
            try:
                return open(path, "rb", opener=not_through_a_link)
            except OSError:
                raise err from None  # no file to read either: the folder takes no new one
    except OSError:
        if os.path.islink(path):
            raise UsageError(f"{path} is a symbolic link (to {os.readlink(path)}), not a lock file "
                             "labelrep made, and a job there would empty what it points to; remove "
                             "the link") from None
        raise


def not_through_a_link(path, flags):
    """`open`'s opener for a file that must be itself, not a link's target (O_NOFOLLOW: a link is
    ELOOP, which `os_error_text` names as one; Windows has no such flag, and its links need a
    privilege to make): a lock file, a sweep's stage log."""
    return os.open(path, flags | getattr(os, "O_NOFOLLOW", 0), 0o666)


HOLDER_BYTES = 512  # the most of a lock file that `holder_of` reads: a record is one short line


@contextlib.contextmanager
def recording(lock):
    """For the block, who holds the flock on the open lock file `lock` (`open_lock`'s) written in
    it, for a job refused or waiting to say (`holder_of`): a run in use on a cluster of hundreds of
    jobs, or held by a killed sweep's orphan, named no one. The script's name, pid, host, SLURM
    job (array job_task where it is one) and the time; emptied again at the end. Only a
    description: the flock alone locks, so a file this job cannot write (another user's, opened to
    read; a full disk) holds nothing, and the job goes on as it is."""
    record = {"script": _script_name(), "pid": os.getpid(), "host": socket.gethostname(),
              "slurm_job": _slurm_job(), "since": int(time.time())}
    _write_holder(lock, (json.dumps(record) + "\n").encode())
    try:
        yield
    finally:
        _write_holder(lock, b"")


def _write_holder(lock, data):
    """The open lock file `lock` holding `data` alone (one write, under HOLDER_BYTES: a reader
    meanwhile finds it empty or cut, and says no name), where this job may write it."""
    with contextlib.suppress(OSError):
        os.ftruncate(lock.fileno(), 0)
        if 0 < len(data) <= HOLDER_BYTES:
            os.write(lock.fileno(), data)  # O_APPEND, at the start of the emptied file


def _script_name():
    """The running script's file name (train.py), its package's for `python -m` (pytest), or
    'python' (-c, a shell)."""
    path = Path(sys.argv[0]) if sys.argv and sys.argv[0] else Path("python")
    name = path.parent.name if path.name == "__main__.py" else path.name
    return "python" if name.startswith("-") else name


def _slurm_job():
    """The SLURM job this process runs in: JOB_TASK for an array's task, JOB otherwise; else None."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{array}_{task}" if array and task else os.environ.get("SLURM_JOB_ID") or None


def holder_of(lock):
    """Who holds the open lock file `lock`, as its holder wrote it (`recording`): 'train.py (pid
    4123 on node07, SLURM job 881_12, since 17:05:34 UTC)', the time in this process's time zone,
    named, with the date where it is not today's; None where the file says no one (empty, cut
    part way, unreadable, not a record, or that of a process on this host that is gone: a killed
    holder's, where the one now holding it could not write). Its first HOLDER_BYTES only, shown
    without control characters: a one-line error stays one line. None on a platform without file
    locks (Windows, which has no os.pread either): no job there holds a lock, nor records itself."""
    if fcntl is None:
        return None
    try:
        record = json.loads(os.pread(lock.fileno(), HOLDER_BYTES, 0).decode())
        script, pid, host = (_shown(record["script"]), record["pid"], _shown(record["host"]))
        since, slurm = time.localtime(record["since"]), record.get("slurm_job")
    except (OSError, ValueError, TypeError, KeyError, OverflowError):
        return None
    if not (script and host and type(pid) is int and 0 < pid < 2**31):
        return None
    if record["host"] == socket.gethostname() and not _alive(pid):
        return None
    # in this reader's time zone, named: the holder's node, or the user's clock, may keep another
    when = time.strftime("%H:%M:%S %Z" if since[:3] == time.localtime()[:3] else "%Y-%m-%d %H:%M %Z",
                         since).rstrip()  # (a TZ without a name: none)
    job = f", SLURM job {_shown(slurm)}" if isinstance(slurm, str) and _shown(slurm) else ""
    return f"{script} (pid {pid} on {host}{job}, since {when})"


def _shown(value):
    """A recorded text as a message shows it: printable characters only, 64 at most; '' for no text."""
    return "".join(c for c in value if c.isprintable())[:64] if isinstance(value, str) else ""


def _alive(pid):
    """Whether a process `pid` runs on this host (another user's too)."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # gone; a number no pid is
        return False
    except OSError:  # EPERM: another user's
        pass
    return True


def _still_at(file, path):
    """Whether the open `file` is the one at `path` (not one removed, or replaced, since it was opened)."""
    try:
        return os.path.samestat(os.fstat(file.fileno()), os.stat(path))
    except FileNotFoundError:
        return False


@contextlib.contextmanager
def made_folders(path):
    """`path` made, with any parents missing, for the block, which gets the list of folders made
    (an empty one: `path` was there); an error in the block removes those folders again where
    they are empty, so that a mistyped folder is not left behind, made and empty. A folder that
    holds anything (another job's files, what the block wrote and kept) stays."""
    path = Path(path)
    created = [p for p in (path, *path.parents) if not p.exists()]
    path.mkdir(parents=True, exist_ok=True)
    try:
        yield created
    except BaseException:
        with contextlib.suppress(OSError):
            for folder in created:
                folder.rmdir()
        raise


def _temporary(path, write, mode=0o666):
    """A temporary file beside `path` that write(file) filled, flushed to the disk, with `mode`
    less the umask."""
    tmp = None
    path.parent.mkdir(parents=True, exist_ok=True)  # its error names the folder
    if path.is_dir():  # no file can be renamed over it: said now, not once part of a set is replaced
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
    try:
        # mkstemp drops each `..` as text: after a link (lnk/../out) that is another folder
        fd, tmp = tempfile.mkstemp(dir=os.path.realpath(path.parent), prefix=_temporary_prefix(path.name),
                                   suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            if hasattr(os, "fchmod"):  # Windows before Python 3.13 has none (and modes but read-only)
                os.fchmod(f.fileno(), umask_mode(mode))
            write(f)
            f.flush()
            os.fsync(f.fileno())
        return tmp
    except BaseException as err:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        # torch.save reports a failed write (a full disk) as a RuntimeError raised while handling
        # the OSError; either way the error names `path`, not the temporary file
        failed = err.__context__ if isinstance(err, RuntimeError) else err
        if isinstance(failed, OSError):
            raise OSError(failed.errno, failed.strerror, str(path)) from err
        raise


NAME_MAX = 255  # the most bytes of a file name (Linux's file systems)
TEMPORARY_EXTRA = len("..12345678.tmp")  # what a temporary file's name adds to its file's


def _temporary_prefix(name):
    """mkstemp's prefix for a temporary file of `name`: '.' + name + '.', where a name within
    TEMPORARY_EXTRA bytes of NAME_MAX keeps only its end (its extension, which `temporary_names`
    patterns match): a --slurm script or checkpoint of such a legal name was 'File name too long'."""
    while len(os.fsencode(name)) > NAME_MAX - TEMPORARY_EXTRA:
        name = name[1:]
    return f".{name}."


def temporary_names(names):
    """A regex of the names `_temporary` gives the temporary files of files whose names the regex
    text `names` matches: '.' + name + '.' + mkstemp's 8 random characters + '.tmp'."""
    return re.compile(rf"\.(?:{names})\.[a-z0-9_]{{8}}\.tmp")


def remove_temporaries(folder, pattern):
    """Remove the files in `folder` whose names `pattern` (`temporary_names`') matches whole: the
    temporary files (`_temporary`'s) of jobs killed outright (SIGKILL, the OOM killer) while they
    wrote there, found by a job that now works there alone. A folder of such a name is left
    (a user's, in a report's --out), and so is a file in a folder this user may not write (another
    user's, made under umask 022): the job's first write there says so, naming its own file."""
    for left in Path(folder).iterdir():
        if pattern.fullmatch(left.name) and not left.is_dir():
            with contextlib.suppress(PermissionError):
                left.unlink(missing_ok=True)


@contextlib.contextmanager
def taking_turns(folder, lock_name, temporaries, tool):
    """The block as the only `tool` (its name, for the line of one that waits) writing into the
    folder `folder`: a second waits for the first, saying so on stderr, then goes on. Holding its
    turn, remove the temporary files of one killed outright (SIGKILL, the OOM killer), whose names
    the `temporary_names` pattern `temporaries` matches: they stayed in the folder rerun after rerun.
    The lock file `folder/lock_name` goes again, removed while held (`exclusive`: one waiting on it
    then locks the next one), so that the folder holds the tool's files alone."""
    lock = Path(folder) / lock_name
    with exclusive(lock, waiting=f"waiting for another {tool} writing into {folder} to finish") as locked:
        try:
            if locked:  # none other writes here: a temporary file is a killed one's
                remove_temporaries(folder, temporaries)
            yield
        finally:
            lock.unlink(missing_ok=True)


def append_whole(path, data, file=None):
    """`data` (bytes) added to the end of the file `path` (made where absent), in place: a link's
    file, its mode and owner stay, and a folder that takes no new file (only the file there is
    writable) does not matter, as it would for `atomic_write`'s temporary file. A write that fails
    (a full disk) is cut off again, so that the file ends as it did, and is an OSError naming
    `path`; so is one a Ctrl-C stops part way. `file`: `path` open to append already (a stage log
    that goes on to take the stage's output), written through and left open, not opened again
    (where `path` may name another file by then)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666) if file is None else file.fileno()
    try:
        size, written = os.fstat(fd).st_size, 0
        try:
            while written < len(data):
                written += os.write(fd, data[written:])
        except BaseException as err:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size)
            if isinstance(err, OSError):  # a failed write's error names no file
                raise OSError(err.errno, err.strerror, str(path)) from None
            raise
    finally:
        if file is None:
            os.close(fd)


def utf8(text):
    """`text` as UTF-8 bytes; a path's bytes that a non-UTF-8 locale could not decode (Python keeps
    them in a str as lone surrogates: an 'é' given in an ASCII locale) go back as they came."""
    return text.encode("utf-8", "surrogateescape")


def atomic_write_text(path, text):
    """`atomic_write` of a str, as UTF-8 (`utf8`)."""
    atomic_write(path, lambda f: f.write(utf8(text)))


def check_writable(path):
    """Raise the OSError (named by `path`) that `atomic_write` of `path` would meet creating its
    temporary file (a read-only folder), before the work whose result it is to hold; leaves nothing."""
    Path(_temporary(Path(path), lambda f: None)).unlink()
