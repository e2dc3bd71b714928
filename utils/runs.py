"""Files of a run: its directory in the paper's layout, config, metrics, results and checkpoints.

    run_dir = run_directory("./outputs", "cifar10", level=100, seed=7, model="resnet32", label="speech")
    write_json(run_dir / "config.json", config)        # atomic: temp file, then rename
    save_checkpoint(run_dir / "last_checkpoint.pth", state)
    state = load_checkpoint(run_dir / "last_checkpoint.pth")   # weights_only=True

Every write goes to a temporary file in the same directory and is renamed over the target, so a
killed job or a full disk leaves the previous file intact; metrics.jsonl alone is appended a
line an epoch (a failed append is cut off again). JSON is strict: a NaN or infinite value
(a diverged run's loss) is written as null. One job at a time works in a run directory
(`run_lock`); one removed under it is an error, not made anew. torch loads only where a checkpoint
or the environment needs it: a command line's --help or typo, which reads this module's names,
answers at once.
"""
import argparse
import contextlib
import errno
import hashlib
import io
import itertools
import json
import os
import platform
import re
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np

from utils import __version__
from utils.atomic import (NAME_MAX, append_whole, atomic_write, atomic_write_text, flock, holder_of,
                          json_text, open_lock, recording, remove_temporaries, temporary_names)
from utils.errors import UsageError, file_in_the_way, out_of_memory

RESULTS = "results.json"
# the best checkpoint's confusion matrices (`utils.training.confusion_record`), written before results.json:
# a finished run of a labelrep before it has none, and is finished all the same
CONFUSION = "confusion.json"
CONFIG = "config.json"
METRICS = "metrics.jsonl"
LAST_CHECKPOINT = "last_checkpoint.pth"
ATTACK_RESULTS = "attack_results.json"   # attack.py's
ATTACK_EXAMPLES = "attack_examples.png"
LOCK = ".lock"  # `run_lock`'s: held by the job working in the run directory, which writes its name there
# A run directory's model_{label}_noise{R} part: the label and the --label_noise rate R.
NOISY = re.compile(r"^(?P<label>.+)_noise(?P<noise>\d*\.?\d+(?:e-?\d+)?)$")
# A run directory's path below its --base_dir. A level{L} folder is no dataset's (datasets are
# train.py's choices): under --base_dir outputs/less/cifar10, its level10 runs were a dataset
# "level10" at level 100.
LAYOUT = re.compile(r"^(?:less/(?P<less_dataset>[^/]+)/level(?P<level>[^/]+)|(?P<dataset>(?!level)[^/]+))"
                    r"/seed(?P<seed>-?\d+)/(?P<model>[^/]+)/model_(?P<label>[^/]+)$")
# Where a run directory lies below each folder of the layout, from its model's folder up to less/
INSIDE_LAYOUT = ("model_*", "*/model_*", "seed*/*/model_*", "level*/seed*/*/model_*", "*/level*/seed*/*/model_*")
LAYOUT_TEXT = ("{dataset}/seed{s}/{model}/model_{label}, less/{dataset}/level{L}/..., "
               "model_{label}_noise{R}")  # LAYOUT, as an error names it


def run_directory(base_dir, dataset, level, seed, model, label, label_noise=0.0, smoothing=0.0):
    """The paper's layout: {base}/{dataset}/seed{s}/{model}/model_{label}, under less/{dataset}/level{L}
    below 100; category runs with label smoothing get their own directory, model_category_smooth{S}
    (the paper's), and runs with noisy training labels theirs, model_{label}_noise{R} (after both)."""
    base = Path(base_dir)
    if level < 100:
        base = base / "less" / dataset / f"level{level:g}"
    else:
        base = base / dataset
    return base / f"seed{seed}" / model / run_folder_name(label, label_noise, smoothing)


def run_folder_name(label, label_noise=0.0, smoothing=0.0):
    """A run directory's own name: model_{label}, model_category_smooth{S}, then _noise{R}."""
    return (f"model_{label}" + (f"_smooth{smoothing:g}" if smoothing and label == "category" else "")
            + (f"_noise{label_noise:g}" if label_noise else ""))


def dataset_folder(dataset, label_granularity="fine"):
    """The dataset's part of a run directory: cifar100, or cifar100_coarse for the 20 superclasses
    (None, attack.py's flag left unset, is fine)."""
    return dataset if label_granularity in ("fine", None) else f"{dataset}_{label_granularity}"


def run_key(args):
    """The key report.py reads from a run's directory, of train.py's parsed flags `args`: its
    dataset's folder (cifar100_coarse with --label_granularity coarse), model, label as its run
    directory names it (category_smooth0.1, speech_noise0.2), level and seed."""
    label = run_folder_name(args.label, args.label_noise, args.smoothing).removeprefix("model_")
    return {"dataset": dataset_folder(args.dataset, args.label_granularity), "model": args.model,
            "label": label, "level": args.level, "seed": args.seed}


def run_name(key):
    """'cifar100_coarse/resnet32/speech/level30/seed0': a run's name from its key (`run_key`'s), as
    report.py's tables and files and sweep.py's rows, progress lines and summary name it."""
    return f"{key['dataset']}/{key['model']}/{key['label']}/level{key['level']:g}/seed{key['seed']}"


def resolved(path):
    """`path` as a run prints and records it: absolute, with symlinks followed and each `..` applied
    as the system reads it (after a link, `..` is the parent of the link's target, not of the
    link), so that it holds from any working directory (a notebook's is rarely the job's), and
    after the one the command ran in is renamed. (os.path.realpath: Path.resolve raises
    RuntimeError at a symlink loop, which the later open names as an OSError.)"""
    return Path(os.path.realpath(path))


def run_dir_of(args):
    """The run directory of train.py's or attack.py's parsed flags, below their `resolved`
    --base_dir (folders of the layout that are links are kept, as report.py reads them)."""
    return run_directory(resolved(args.base_dir), dataset_folder(args.dataset, args.label_granularity),
                         args.level, args.seed, args.model, args.label, args.label_noise, args.smoothing)


def enclosing_base_dir(base):
    """The --base_dir of which `base` is a folder inside the layout (outputs for outputs/cifar100,
    outputs/less/cifar10 or a run directory), found from a run directory in it; or None."""
    path = resolved(base)  # `..` as the system reads it: outputs/cifar10/seed1/.. is outputs/cifar10
    aboves = list(path.parents)[:6]  # a run directory lies 4 or 6 folders below its --base_dir
    # the run directories below `path` where it is inside the layout: only folders of the layout's
    # shapes are listed (train.py checks every --base_dir: one holding a dataset's files listed them)
    for run in itertools.chain([path], *map(path.glob, INSIDE_LAYOUT)):
        for above in aboves:
            if LAYOUT.match(run.relative_to(above).as_posix()):
                return above
    return None


def check_base_dir(base_dir):
    """train.py's and attack.py's --base_dir must be the root of the layout, not a folder inside it
    (outputs/less, outputs/cifar10/seed7, a run directory), where train.py trained a new run nested
    in the old ones' folders and attack.py found no checkpoint: a UsageError naming the --base_dir
    meant (`enclosing_base_dir`, as report.py's). A new or empty folder, or one holding runs, passes;
    a file, or a path through one, does not (a sweep's --dry_run and --slurm took it, and every
    task's train.py refused it)."""
    if in_the_way := file_in_the_way(base_dir):  # the error making the run directory would raise
        raise UsageError(f"cannot use {in_the_way}: a file, not a folder") from NotADirectoryError(
            errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(base_dir))
    if above := enclosing_base_dir(base_dir):
        raise UsageError(f"--base_dir {base_dir} is a folder inside the layout of run directories "
                         f"({LAYOUT_TEXT}): pass --base_dir {above}")


BEST_SUFFIX = "_best_model.pth"  # every best checkpoint's name ends so (`best_checkpoint_name`)


def best_checkpoint_name(label, seed, model):
    return f"{label}_seed{seed}_{model}{BEST_SUFFIX}"


def check_folder_names(flag, folder):
    """A UsageError naming `flag` where a name in the path of `folder` is longer than a file system
    takes (NAME_MAX bytes): checked before any work, which then failed with 'File name too long'
    and left the folders above it made and empty."""
    path = resolved(folder)
    if long := [name for name in path.parts if len(os.fsencode(name)) > NAME_MAX]:
        raise UsageError(f"{flag} {path}: its folder name {long[0]} is {len(os.fsencode(long[0]))} bytes, "
                         f"over the {NAME_MAX} a file name may have")


def check_name_lengths(args):
    """train.py's and attack.py's parsed flags `args` must name a run whose folders and files a file
    system takes (names of NAME_MAX bytes at most), else a UsageError naming the flag: a --base_dir
    folder, or a --label whose best checkpoint ({label}_seed{s}_{model}_best_model.pth, longer than
    its run directory, model_{label}_noise{R}, and its label file) would be too long. train.py, and
    each run of a sweep, failed with 'File name too long' once the data had loaded, naming
    results.json or the checkpoint, and left the run's folders made and empty."""
    check_folder_names("--base_dir", args.base_dir)
    size = len(os.fsencode(best_checkpoint_name(args.label, args.seed, args.model)))
    if size > NAME_MAX:
        raise UsageError(f"--label {args.label} is too long: its run's best checkpoint would have a name of "
                         f"{size} bytes, over the {NAME_MAX} a file name may have; use a label of at most "
                         f"{len(os.fsencode(args.label)) - size + NAME_MAX} bytes")


# atomic_write's temporary name for one of a run's files (json, jsonl, pth, png)
OWN_TEMPORARY = temporary_names(r"[^/]+\.(?:json|jsonl|pth|png)")
# the run directories this process works in, each with its open lock file (on NFS, flock does not
# tell two jobs of one process apart)
_held = {}
# in every refusal of `run_lock`, which a sweep appends to the log of the job that holds the run directory
IN_USE = "; wait for it to end, or "
NO_HOLDER = "another train.py or attack.py job"  # a holder that recorded no name (`holder_of`)


@contextlib.contextmanager
def run_lock(run_dir, hold=True, elsewhere="use another --base_dir"):
    """Work in `run_dir` as its only job (train.py, attack.py): a second job there is a one-line
    error naming the one there (`recording`: 'RUN_DIR is in use by train.py (pid 4123 on node07,
    SLURM job 881_12, since 17:05:34 UTC); wait for it to end, or ...'), not a run mixed from two.
    Holding it, remove the temporary files that killed jobs left (`atomic_write`'s for a run's
    files, up to a checkpoint's size each). hold=False (torchrun's other processes, which write
    nothing) and a directory that cannot hold the lock file (a read-only archive of finished runs)
    go on without it; a file system without locks too. `elsewhere` ends the message for a
    directory in use: how to work in another."""
    run_dir = Path(run_dir).absolute()

    def in_use(lock):
        return UsageError(f"{run_dir} is in use by {holder_of(lock) or NO_HOLDER}{IN_USE}{elsewhere}")
    if not hold:
        yield
        return
    if run_dir in _held:  # read from the file open: closing another would drop an NFS lock
        raise in_use(_held[run_dir])
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        lock = open_lock(run_dir / LOCK)
    except OSError:
        yield
        return
    with lock:
        try:
            flock(lock, wait=False)
        except BlockingIOError:
            raise in_use(lock) from None
        except OSError:
            locked = False
        else:
            locked = True
            remove_temporaries(run_dir, OWN_TEMPORARY)
        _held[run_dir] = lock
        try:
            with recording(lock) if locked else contextlib.nullcontext():
                yield
        finally:
            _held.pop(run_dir, None)


@contextlib.contextmanager
def run_lock_before_loading(run_dir, hold=True, elsewhere="use another --base_dir"):
    """`run_lock` on `run_dir` for the block, taken at once where the folder has a lock file, else
    where the block calls the function it is given (before it writes there). A job has worked where
    there is one, and another may hold it now: a second job started there by mistake (a task
    submitted twice) is refused before it loads the dataset and the model, not after minutes of
    loading and gigabytes of memory. Where there is none, no job holds the folder, and taking it
    would make the folder and its lock file: bad input found while loading leaves nothing there."""
    taken = False
    with contextlib.ExitStack() as stack:
        def take():
            nonlocal taken
            if not taken:
                stack.enter_context(run_lock(run_dir, hold, elsewhere))
                taken = True
        if os.path.lexists(Path(run_dir) / LOCK):  # a link there too: run_lock's error for it, at once
            take()
        yield take


def run_holder(run_dir):
    """The job working in `run_dir` now, as it wrote itself into the lock file it holds (`run_lock`,
    `holder_of`: 'train.py (pid 4123 on node07, since 17:05:34 UTC)'); None where no job does (no
    lock file, an emptied one: its job ended) or the one named is a process of this host that is
    gone (killed outright). Read only, for report.py and sweep.py --dry_run, run again and again
    while a sweep's jobs work: the lock file is neither made nor locked (a flock taken to test it,
    if only for an instant, would refuse a train.py or attack.py starting then). A job on another
    host that was killed outright is named until one works there again: the time it started says
    how long ago that was."""
    try:  # not through a link, nor waiting on a FIFO put there (`holder_of` reads no FIFO)
        fd = os.open(Path(run_dir) / LOCK, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0))
    except OSError:  # none there, a link in its place, unreadable
        return None
    with open(fd, "rb") as lock:
        return holder_of(lock)


def lock_free(run_dir):
    """Whether no job holds `run_dir`'s lock now, as a non-blocking flock taken on its lock file and
    let go at once finds: sweep.py --local's check of the job `run_holder` names before it leaves
    the run to that job. A job on another host killed outright (its node lost: the file server frees
    its lock) leaves its record, which `run_holder` cannot tell from a live job's, and the run was
    left to no one at every sweep. False where it cannot tell: no lock file, one this user may not
    write (NFS takes a flock as a write lock, which needs it), a file system without locks. Held an
    instant, and only where no job held it: a train.py starting in that instant is refused as where
    another job holds the run."""
    flags = os.O_RDWR | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0)  # made by no one here
    try:
        lock = open(os.open(Path(run_dir) / LOCK, flags), "r+b", buffering=0)
    except OSError:
        return False
    with lock:  # closing it lets the flock go
        try:
            flock(lock, wait=False)
        except OSError:  # BlockingIOError: a job holds it
            return False
        return True


def resolved_folders(args):
    """--data_dir, --label_dir and --base_dir `resolved` (those set), as a run prints and records
    them: a message and the record hold from any working directory (attack.py finds a run's data
    from it)."""
    return {k: str(resolved(v)) for k in ("data_dir", "label_dir", "base_dir")
            if (v := getattr(args, k)) is not None}


def with_resolved_folders(args):
    """A copy of the namespace `args` with its folders `resolved_folders`' (the caller's, a
    notebook's reused for another run, stays as it was)."""
    return argparse.Namespace(**(vars(args) | resolved_folders(args)))


def _still_there(path):
    """`path`'s folder, where it is a run directory this process works in (`run_lock`), must still
    be there: one removed meanwhile (by hand) is an OSError, not made anew holding this one file."""
    folder = Path(path).absolute().parent
    if folder in _held and not folder.is_dir():
        raise OSError(errno.ENOENT, "removed while this job worked in it", str(folder))


def json_lines(value, depth=0):
    """Strict JSON text of `value` (`json_text`'s) laid out as json.dumps(indent=2) lays it out, but
    for a list of numbers, strings, booleans and nulls, on one line: a label's shape, a seed list,
    an attack entry's per-class counts, a confusion matrix's row (a 100-class matrix is 100 lines to
    read, not 10,000)."""
    pad, inner = "  " * depth, "  " * (depth + 1)
    if isinstance(value, dict) and value:
        return "{\n" + ",\n".join(f"{inner}{json_text(str(k))}: {json_lines(v, depth + 1)}"
                                   for k, v in value.items()) + f"\n{pad}}}"
    if isinstance(value, (list, tuple)) and any(isinstance(v, (dict, list, tuple)) for v in value):
        return "[\n" + ",\n".join(inner + json_lines(v, depth + 1) for v in value) + f"\n{pad}]"
    return json_text(value)


def write_json(path, obj):
    """`obj` as `json_lines`' JSON, written atomically."""
    _still_there(path)
    atomic_write_text(path, json_lines(obj) + "\n")


def write_jsonl(path, rows):
    _still_there(path)
    atomic_write_text(path, "".join(json_text(r) + "\n" for r in rows))


def append_jsonl(path, row):
    """One more line in a JSON-lines file. A write that fails (a full disk) is cut off, so that
    the file ends with whole lines, and is an OSError naming the file."""
    _still_there(path)
    append_whole(path, (json_text(row) + "\n").encode())


# The most bytes `read_text` reads: labelrep's JSON files of a run (config.json, results.json,
# attack_results.json, metrics.jsonl) hold kB to a few MB (a report's summary.json grows with its
# runs: report.py reads it with a limit of its own)
READ_LIMIT = 64 << 20


def read_text(path, limit=None):
    """The text of the regular file at `path`; OSError naming `path` for anything else (a FIFO put
    in a run's folder would hold its reader forever; Windows has no FIFOs, nor O_NONBLOCK), and for
    one of over `limit` bytes (None: READ_LIMIT), which labelrep never writes (a run folder from
    elsewhere whose results.json held 200 MB took report.py 1.8 GB and 9 s to read; a few of 1 GB,
    its workers the machine's memory). Checked before the descriptor becomes a file object, whose
    open names a folder by its number ('cannot use 4: Is a directory')."""
    limit = READ_LIMIT if limit is None else limit
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        found = os.fstat(fd)
        if stat.S_ISDIR(found.st_mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
        if not stat.S_ISREG(found.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        if found.st_size > limit:
            raise OSError(errno.EINVAL, f"{found.st_size} bytes, over the {limit >> 20} MiB of any file "
                          "labelrep writes; not read", str(path))
        f = open(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with f:
        return f.read(limit + 1).decode()


NOT_JSON = (ValueError, RecursionError)
"""What reading a file labelrep writes as JSON raises where its bytes are not that: ValueError for
text that is not JSON (json.JSONDecodeError), bytes that are not UTF-8 (UnicodeDecodeError) and a
whole number of more digits than Python converts (`json_failure`; one in a results.json was a
traceback in report.py and train.py); RecursionError for nesting past Python's recursion limit."""


def json_failure(err):
    """Why a file's text is not the JSON labelrep writes, from json.loads's error `err`: its own
    words, or, for arrays or objects nested deeper than Python's recursion limit (about 1000; none
    of labelrep's files nests beyond 4), which json.loads raises as a RecursionError (a traceback
    in every script that read such a file), 'nested too deeply'; for a whole number of more digits
    than Python converts to an int (4300 by default; no file of labelrep's holds one), Python's words
    without their advice to raise that limit."""
    return "nested too deeply" if isinstance(err, RecursionError) else str(err).split("; use sys.")[0]


def read_json(path):
    """The JSON object in `path` (every JSON file of a run holds one); else a one-line UsageError."""
    try:
        value = json.loads(read_text(path))
    except NOT_JSON as err:
        raise UsageError(f"{path} is not valid JSON ({json_failure(err)}); delete it to redo that step") from None
    if not isinstance(value, dict):
        kind = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
            type(value), "a number")
        raise UsageError(f"{path} holds {kind}, not the JSON object labelrep writes; delete it to "
                         "redo that step")
    return value


def write_file(path, write):
    """`atomic_write` of one of a run's files (a checkpoint, attack.py's figure) by write(file), in
    a run directory still there (`_still_there`)."""
    _still_there(path)
    atomic_write(path, write)


def save_checkpoint(path, state):
    import torch
    write_file(path, lambda f: torch.save(state, f))


def load_checkpoint(path, map_location="cpu", advice=None):
    """Load a checkpoint safely (tensors and plain data only); a missing or bad file is a one-line
    error that ends with `advice` (for a bad file, by default: delete it, or pass --force)."""
    return read_checkpoint(path, map_location, advice)[0]


def read_checkpoint(path, map_location="cpu", advice=None):
    """`load_checkpoint`'s (state, the file's bytes, its os.stat_result), from one read of the
    file: its CRC check and a caller's digests of it (attack.py's sha256 and `zip_index_sha256`)
    take the bytes loaded, not three more reads of a file that may be 80 MB on a network file
    system (and may have been replaced in between). A file whose first bytes are neither of
    torch.save's formats (a 5 GB tar given as --checkpoint by mistake) is refused from those
    bytes, before the rest of it is read into memory."""
    import torch
    path = Path(path)
    try:
        with open(path, "rb") as f:
            start, written = f.read(4), os.fstat(f.fileno())
            data = start + f.read() if _torch_save_start(start) else None
    except FileNotFoundError:
        raise UsageError(f"checkpoint {path} does not exist" + (f"; {advice}" if advice else "")) from None
    except OSError as err:  # a folder, an unreadable file
        raise UsageError(f"cannot read checkpoint {path} ({err.strerror or err})") from None
    reason = "not the zip archive torch.save writes"
    if data is not None:
        try:
            state = torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
            reason = _changed_entry(data)
            if reason is None:
                return state, data, written
        except Exception as err:  # torch raises many types for truncated or foreign files
            if out_of_memory(err):  # the machine's, not the file's: 'corrupt; delete it' would lose it
                raise
            reason = _load_failure(data, err)
    raise UsageError(f"checkpoint {path} is corrupt or not a labelrep checkpoint ({reason}); "
                     f"{advice or 'delete it, or pass --force to start the run over'}") from None


def _torch_save_start(start):
    """Whether a file's first 4 bytes `start` can begin a file torch.save wrote: its zip archive,
    or its legacy format (a pickle, which torch.load still reads)."""
    return start == b"PK\x03\x04" or start[:1] == b"\x80"


def _load_failure(data, err):
    """Why torch.load raised `err` on a checkpoint file's bytes `data` (which start as torch.save's
    formats do), in a few words."""
    end = data[max(len(data) - 22, 0):][:4]  # where torch.save's zip archive has its end record
    # torch's message: a refused object's name among advice to load unsafely; else a first
    # sentence followed by general remarks
    refused = str(err).startswith("Weights only load failed") or "WeightsUnpickler error:" in str(err)
    remarks = ("Weights only load failed", "Check the documentation")
    lines = [line.strip() for line in str(err).split("WeightsUnpickler error:")[-1].splitlines()
             if line.strip() and not line.startswith(remarks)]
    reason = lines[0].split(". ")[0].rstrip(".") if lines else type(err).__name__
    if data[:4] == b"PK\x03\x04" and end != b"PK\x05\x06":  # torch's reason: "[Errno 22] Invalid argument"
        return "truncated: the zip archive torch.save writes, cut short"
    if refused:
        return f"it holds what a safe load refuses: {reason}"
    if data[:4] == b"PK\x03\x04":
        return f"an unreadable zip archive: {reason}"
    return reason


def _changed_entry(data):
    """Why torch.save's zip archive `data` (a checkpoint file's bytes) is not what was written: an
    entry whose bytes no longer match the CRC-32 written with them (a bit flipped on a disk or in
    a copy: torch.load does not check, and would resume or attack other weights), else None.
    (160 MB, a vgg19 checkpoint with its optimiser: 0.08 s, a sixth of torch.load's time.)"""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            changed = archive.testzip()
    except zipfile.BadZipFile:  # torch's legacy format, which torch.load read anyway
        return None
    return changed and f"its entry {changed} does not match the checksum written with it"


# What rebuilding a model, label space or optimiser raises from a checkpoint whose entries are of
# the wrong types or shapes (a file edited by hand, written by another program)
REBUILD_ERRORS = (TypeError, KeyError, ValueError, AttributeError, IndexError, ZeroDivisionError,
                  RuntimeError)


@contextlib.contextmanager
def malformed(path, advice):
    """Within: a checkpoint entry of the wrong type or shape, found while using it, is a one-line
    UsageError naming `path` and ending with `advice` (torch and Python raise many types)."""
    try:
        yield
    except REBUILD_ERRORS as err:
        if out_of_memory(err):  # the device's or the machine's, not the file's
            raise
        reason = " ".join(str(err).split()[:30])  # torch's first lines: "Error(s) in loading ...:"
        raise UsageError(f"checkpoint {path} holds entries train.py did not write ({type(err).__name__}"
                         f"{': ' + reason if reason else ''}); {advice}") from None


def file_sha256(path):
    """sha256 of a file's bytes, read a MiB at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def zip_index_sha256(path):
    """sha256 of the index of torch.save's zip archive at `path` (or in a binary file object: the
    bytes `read_checkpoint` read) (each entry's name, CRC-32 and size): any entry's bytes change it,
    and it reads in a millisecond where `file_sha256` reads the whole file (80 MB for a vgg19 best
    checkpoint). None for a file that is no zip archive, or unreadable."""
    try:
        with zipfile.ZipFile(path) as archive:
            index = [(entry.filename, entry.CRC, entry.file_size) for entry in archive.infolist()]
    except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError):  # a damaged index: a
        return None  # name not UTF-8 (UnicodeDecodeError), an unknown zip version
    return hashlib.sha256(repr(index).encode()).hexdigest()


def tensors_sha256(*tensors):
    """sha256 of the tensors' bytes, one after the other (CIFAR-10's 60000 images: 0.2 s on a CPU).
    Hashed where they lie: a bytes copy of each (`tobytes`) put CIFAR-10's 150 MB of training images
    on top of train.py's start, raising its peak memory from 0.30 to 0.42 GB above torch's."""
    digest = hashlib.sha256()
    for tensor in tensors:
        digest.update(tensor.detach().cpu().contiguous().numpy())
    return digest.hexdigest()


def code_version():
    """{"commit": the checkout's git commit, "dirty": whether tracked files differ from it} (also of
    a checkout another user owns, a lab's shared one, which git refuses as of "dubious ownership"
    unless told it is safe: its code runs here anyway), or None outside a git checkout (an unpacked
    release) or without git. Asked anew each time (~10 ms): a notebook's second run may be of code
    edited (and reloaded) or committed since its first. Writes nothing there: git status refreshes
    the checkout's .git/index in place (its index.lock, which a read-only shared install refuses and
    a writable one's own git commands meet as "index.lock exists"), unless told --no-optional-locks."""
    repo = Path(__file__).resolve().parents[1]

    def git(*argv):
        return subprocess.run(["git", "--no-optional-locks", "-c", f"safe.directory={repo}", "-C", str(repo), *argv],
                              capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    try:
        if Path(git("rev-parse", "--show-toplevel")).resolve() != repo:  # a copy inside another repo
            return None
        return {"commit": git("rev-parse", "HEAD"),
                "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
    except (OSError, subprocess.SubprocessError):
        return None


def command_line(prog, argv):
    """The command line a run records: sys.argv from a shell; `prog` and the arguments of a
    main(argv) called in process (a notebook's sys.argv is its kernel's)."""
    return list(sys.argv) if argv is None else [prog, *map(str, argv)]


def cpu_name():
    """The CPU's model name ("AMD EPYC 9654 96-Core Processor"): /proc/cpuinfo's on Linux,
    platform.processor()'s elsewhere; None where neither names it (Linux on ARM)."""
    with contextlib.suppress(OSError, UnicodeDecodeError):
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name") and ":" in line:
                    return line.split(":", 1)[1].strip()
    return platform.processor() or None


def environment(argv=None):
    """Versions and machine facts recorded next to every result, with the command line `argv`
    (`command_line`; sys.argv when None)."""
    import torch
    env = {"python": platform.python_version(), "torch": str(torch.__version__), "numpy": np.__version__,
           "labelrep": __version__, "git": code_version(), "platform": platform.platform(),
           # a CPU's float rounding depends on how many threads share a convolution, and training
           # amplifies it: the same flags on another thread count train other numbers
           "threads": torch.get_num_threads(),
           # and on which CPU, with which vector instructions torch's kernels use (AVX512, AVX2, DEFAULT;
           # ATEN_CPU_CAPABILITY picks another): the same 2 epochs trained to 12% validation accuracy with
           # AVX512, 22% with AVX2, and DEFAULT's draws give a seed other initial weights
           "cpu": cpu_name(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
           # a run computes in torch's default dtype (cifar.to_float, the weights): a caller's float64
           "dtype": str(torch.get_default_dtype()).removeprefix("torch."),
           # and the precision of its float32 matmuls: a caller's "medium" (a notebook's, for speed) ran
           # the head's in bf16 on a CPU (TF32 on a GPU with "high"): 22% validation accuracy, not 12%
           "matmul_precision": torch.get_float32_matmul_precision(),
           "argv": list(sys.argv) if argv is None else argv}
    if torch.cuda.is_available():
        env["cuda"] = torch.version.cuda
        env["gpu"] = torch.cuda.get_device_name()
    return env


def provenance(env):
    """The code that computed a result, of `environment`'s `env`: {"labelrep": version, "git":
    {"commit", "dirty"} or None, "torch": version}. Each attack_results.json entry records its own:
    the file's `environment` is the last attack.py call's, and entries of earlier calls (another
    commit, another torch) stay in it."""
    return {k: env.get(k) for k in ("labelrep", "git", "torch")}
