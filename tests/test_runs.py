"""utils/atomic.py and utils/runs.py: a file is replaced whole or not at all, also across a crash
of the machine, and what a killed job leaves behind is cleared by the next job."""
import contextlib
import errno
import fcntl
import json
import os
import socket
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conftest import REPO
from utils import atomic, runs
from utils.atomic import atomic_write_text
from utils.errors import UsageError, call_cli
from utils.runs import append_jsonl, run_lock, write_json


def test_a_file_is_on_the_disk_before_its_name_is(tmp_path, monkeypatch):
    """The new file is flushed and fsynced before it is renamed over the old one: after a power
    cut (not only a killed job) the name holds the old file or the whole new one, never an empty
    one (ext4 and XFS may commit a rename before the data it names); and the folder is synced
    after the rename, or a power cut could bring back the old name."""
    calls, fsync, replace = [], os.fsync, os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: calls.append(("replace", os.path.basename(dst)))
                        or replace(src, dst))
    monkeypatch.setattr(os, "fsync", lambda fd: calls.append(
        ("fsync", "folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else os.fstat(fd).st_size)) or fsync(fd))
    text = '{"test_acc": 0.5}\n'
    atomic_write_text(tmp_path / "results.json", text)
    assert calls == [("fsync", len(text)), ("replace", "results.json"), ("fsync", "folder")]
    assert (tmp_path / "results.json").read_text() == text


def test_a_path_with_dotdot_after_a_link_is_written_where_the_system_reads_it(tmp_path):
    """report.py --out lnk/../out, lnk a link to d1/d2: the temporary file went to the folder of
    `lnk/..` read as text (tempfile drops each `..` so), which does not exist, not to d1/out."""
    (tmp_path / "d1" / "d2").mkdir(parents=True)
    (tmp_path / "lnk").symlink_to(tmp_path / "d1" / "d2")
    (tmp_path / "d1" / "out").mkdir()
    atomic_write_text(tmp_path / "lnk" / ".." / "out" / "tables.md", "# t\n")
    assert (tmp_path / "d1" / "out" / "tables.md").read_text() == "# t\n"
    assert sorted(p.name for p in (tmp_path / "d1" / "out").iterdir()) == ["tables.md"]


def test_a_killed_jobs_temporary_file_is_removed_by_the_next_job(tmp_path):
    """A job killed while it writes (SIGKILL: the OOM killer, SLURM past its grace period) leaves
    its temporary file, up to a checkpoint's size; the next job in the run directory removes it,
    and nothing else."""
    code = ("import os, sys; from utils.atomic import atomic_write; "
            "atomic_write(sys.argv[1], lambda f: (f.write(b'half'), f.flush(), os._exit(9)))")
    killed = subprocess.run([sys.executable, "-c", code, str(tmp_path / "last_checkpoint.pth")], cwd=REPO)
    [left] = [p.name for p in tmp_path.iterdir()]
    assert killed.returncode == 9 and left.startswith(".last_checkpoint.pth.") and left.endswith(".tmp")
    others = ["results.json", "notes.tmp", ".notes.txt.x1y2.tmp"]
    for name in others:
        (tmp_path / name).write_text("kept")
    with run_lock(tmp_path):
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted([".lock", *others])


def test_a_file_whose_name_is_near_name_max_is_written_and_its_leftover_removed(tmp_path):
    """A legal file name within 14 bytes of NAME_MAX (255 bytes: a --slurm script, the checkpoint of
    a long label's run) was 'File name too long': its temporary file ('.' + name + '.XXXXXXXX.tmp')
    was. The temporary file keeps the name's end, by which a killed job's one is still found."""
    if os.pathconf(tmp_path, "PC_NAME_MAX") < 255:
        pytest.skip("this file system's names are shorter")
    name = "é" * 120 + "_best_model.pth"  # 255 bytes
    atomic_write_text(tmp_path / name, "whole\n")
    assert [(p.name, p.read_text()) for p in tmp_path.iterdir()] == [(name, "whole\n")]
    code = ("import os, sys; from utils.atomic import atomic_write; "
            "atomic_write(sys.argv[1], lambda f: (f.write(b'half'), f.flush(), os._exit(9)))")
    killed = subprocess.run([sys.executable, "-c", code, str(tmp_path / name)], cwd=REPO)
    assert killed.returncode == 9 and len(list(tmp_path.iterdir())) == 2
    with run_lock(tmp_path):
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted([".lock", name])


def test_a_lock_file_this_user_may_not_write_still_locks_the_run_directory(tmp_path, monkeypatch):
    """A run directory's .lock made by another user of a shared study under umask 022 (0644: this
    one may not open it to write) is still locked, opened to read: the job went on without the
    lock, training beside the other user's job that held it (a requeued task resumed twice)."""
    code = ("import sys; from utils.runs import run_lock\n"
            "with run_lock(sys.argv[1]):\n    print('held', flush=True); sys.stdin.read()")
    first = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], cwd=REPO, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)

    def another_users(path, mode="r", *args, **kwargs):  # as root, a file's mode is no bar
        if "a" in mode:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return open(path, mode, *args, **kwargs)
    for module in (atomic, runs):
        monkeypatch.setattr(module, "open", another_users, raising=False)
    try:
        assert first.stdout.readline() == "held\n"
        # opened to read, the file still says who holds it
        with pytest.raises(UsageError, match=rf"is in use by python \(pid {first.pid} on "), run_lock(tmp_path):
            pass
    finally:
        first.communicate("")
    assert first.returncode == 0


# A job, named by its script's file, that holds a lock (run_lock or exclusive) on sys.argv[1] until
# its stdin closes; its clock reads 2 Jan 2026, 17:05:34, here, when it records itself.
HOLDER = """
import sys, time
sys.path.insert(0, {repo!r})
time.time = lambda: {since!r}
from utils.atomic import exclusive
from utils.runs import run_lock
with {lock}(sys.argv[1]):
    print("held", flush=True)
    sys.stdin.read()
"""
HELD_SINCE = time.mktime((2026, 1, 2, 17, 5, 34, 0, 0, -1))  # HOLDER's clock, in this time zone
SINCE = f"since 2026-01-02 17:05 {time.strftime('%Z', time.localtime(HELD_SINCE))}"


@contextlib.contextmanager
def held_by(tmp_path, script, lock, path, **env):
    """The process `HOLDER` as `script` (train.py, report.py) with `env` set, holding the lock
    `lock` ('run_lock', 'exclusive') on `path` for the block."""
    file = tmp_path / "job" / script
    file.parent.mkdir(exist_ok=True)
    file.write_text(HOLDER.format(repo=str(REPO), since=HELD_SINCE, lock=lock))
    unset = ("SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_JOB_ID")
    holder = subprocess.Popen([sys.executable, str(file), str(path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env={k: v for k, v in os.environ.items() if k not in unset} | env)
    try:
        assert holder.stdout.readline() == "held\n"
        yield holder
    finally:
        holder.communicate("")
    assert holder.returncode == 0


def refusal(capsys, run_dir):
    """The error line and exit status of a job that takes run_lock on `run_dir`, as a script's."""
    def main(argv):
        with run_lock(run_dir):
            pass
    status = call_cli(main, [])
    return status, capsys.readouterr().err


@pytest.mark.parametrize("slurm, named", [({"SLURM_ARRAY_JOB_ID": "881", "SLURM_ARRAY_TASK_ID": "12",
                                             "SLURM_JOB_ID": "893"}, ", SLURM job 881_12"),
                                           ({"SLURM_JOB_ID": "893"}, ", SLURM job 893"), ({}, "")])
def test_a_run_directory_in_use_names_the_job_that_holds_it(tmp_path, capsys, slurm, named):
    """Two jobs in one run directory: the second is a one-line error while the first holds it (a
    shared lock let both in, to write one run from two), and goes in once the first has ended.
    'in use by another train.py or attack.py job' named no one: among hundreds of array tasks, or
    a killed sweep's orphaned train.py finishing its epoch, the user could not tell which job held
    the run directory. The holder writes who it is into the lock file, and the refusal says it."""
    run_dir = tmp_path / "run"
    with held_by(tmp_path, "train.py", "run_lock", run_dir, **slurm) as holder:
        assert refusal(capsys, run_dir) == (2, f"error: {run_dir} is in use by train.py (pid {holder.pid} on "
                                               f"{socket.gethostname()}{named}, {SINCE}); wait for it to "
                                               "end, or use another --base_dir\n")
    assert (run_dir / ".lock").read_bytes() == b""  # emptied by the holder at its end
    assert refusal(capsys, run_dir) == (0, "")


def test_a_job_in_this_process_that_holds_the_run_directory_is_named(tmp_path, monkeypatch):
    """A second run_lock in the process that holds the run directory (a notebook's; on NFS flock
    lets it in) names this process, read from the lock file it holds open (opening it again and
    closing it would drop an NFS lock)."""
    monkeypatch.setattr(sys, "argv", [str(tmp_path / "attack.py")])
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID", raising=False)
    today = time.mktime(time.localtime()[:3] + (0, 0, 1, 0, 0, -1))  # today at 00:00:01
    monkeypatch.setattr(time, "time", lambda: today)
    with run_lock(tmp_path), pytest.raises(UsageError) as refused, run_lock(tmp_path):
        pass
    assert str(refused.value) == (f"{tmp_path} is in use by attack.py (pid {os.getpid()} on "
                                  f"{socket.gethostname()}, SLURM job 77, since 00:00:01 "
                                  f"{time.strftime('%Z', time.localtime(today))}); wait for it to end, "
                                  "or use another --base_dir")


def dead_pid():
    """The pid of a process of this host that has ended."""
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(ended.stdout)


RECORD = {"script": "train.py", "pid": 4123, "host": "node07", "slurm_job": "881_12", "since": 1767369934}


def test_lock_free_takes_the_flock_to_tell_a_dead_jobs_record_from_a_live_one(tmp_path):
    """`lock_free`: True where the lock file holds a record but no job the flock (a job killed on
    another node); False where a job holds it, where there is no lock file (none is made), and
    where this user may not write it (NFS takes a flock as a write lock)."""
    from utils.runs import lock_free
    assert not lock_free(tmp_path) and not (tmp_path / ".lock").exists()
    (tmp_path / ".lock").write_text(json.dumps(RECORD))
    assert lock_free(tmp_path)
    with open(tmp_path / ".lock", "rb") as job:
        fcntl.flock(job, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert not lock_free(tmp_path)
    assert lock_free(tmp_path)  # and lock_free let its own go
    if os.geteuid() != 0:  # root writes any file
        (tmp_path / ".lock").chmod(0o444)
        assert not lock_free(tmp_path)


@pytest.mark.parametrize("text", [
    b"", b"   \n", b"\x00\xff\xfe", b'{"script": "train.py", "pid": 41',  # empty, garbled, cut part way
    b"[1, 2]", b'"train.py"', json.dumps({**RECORD, "pid": "4123"}).encode(),
    json.dumps({**RECORD, "pid": -1}).encode(), json.dumps({**RECORD, "pid": 10**40}).encode(),
    json.dumps({**RECORD, "host": ""}).encode(), json.dumps({**RECORD, "since": "17:05"}).encode(),
    json.dumps({**RECORD, "since": 1e300}).encode(), json.dumps({**RECORD, "script": 7}).encode(),
    json.dumps({**RECORD, "slurm_job": "x" * 600}).encode(),  # more than a reader takes: cut
    "stale"])
def test_a_lock_file_that_names_no_one_gives_the_old_refusal(tmp_path, capsys, text):
    """A lock file without a whole record (a holder that could not write it, or is writing it; not
    one of labelrep's), or the record of a process on this host that has ended (a killed holder's,
    which the job now holding the lock could not replace), names no one: the refusal is the line
    from before holders were named."""
    if text == "stale":
        text = json.dumps({**RECORD, "host": socket.gethostname(), "pid": dead_pid()}).encode()
    (tmp_path / ".lock").write_bytes(text)
    with open(tmp_path / ".lock", "rb") as other_job:  # its holder: a job that wrote no record
        fcntl.flock(other_job, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert refusal(capsys, tmp_path) == (2, f"error: {tmp_path} is in use by another train.py or attack.py "
                                                "job; wait for it to end, or use another --base_dir\n")


def test_a_recorded_holder_is_shown_on_one_line(tmp_path, capsys):
    """A record with control characters and newlines (a host or script name of a hand-made file)
    is shown without them, each text cut to 64 characters: the error stays one line that a
    terminal shows as it is. A record from another host is taken as it is (its pid is no process
    of this one's to look up)."""
    record = {**RECORD, "script": "train.py\n\x1b[2Jerror: fake", "host": "node07\r\t" + "n" * 100,
              "slurm_job": "\x07"}
    (tmp_path / ".lock").write_text(json.dumps(record))
    since = time.strftime("%Y-%m-%d %H:%M %Z", time.localtime(RECORD["since"]))
    with open(tmp_path / ".lock", "rb") as other_job:
        fcntl.flock(other_job, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert refusal(capsys, tmp_path) == (2, f"error: {tmp_path} is in use by train.py[2Jerror: fake (pid 4123 "
                                                f"on node07{'n' * 58}, since {since}); wait for it to end, or use "
                                                "another --base_dir\n")


@pytest.mark.parametrize("zone, since", [("UTC0", "2026-01-02 16:05 UTC"), ("EST+5", "2026-01-02 11:05 EST"),
                                         ("CET-1CEST,M3.5.0,M10.5.0/3", "2026-01-02 17:05 CET")])
def test_a_holders_start_names_its_time_zone(tmp_path, capsys, monkeypatch, zone, since):
    """The holder's start was the reader's local time without a zone ('since 17:05:34'): a job on
    a node, or a user, of another zone than the holder's (UTC nodes, a laptop in New York) read a
    time hours off, with nothing to tell. It now names the zone it is shown in."""
    (tmp_path / ".lock").write_text(json.dumps(RECORD))  # since 2026-01-02 16:05:34 UTC
    monkeypatch.setenv("TZ", zone)
    time.tzset()
    try:
        with open(tmp_path / ".lock", "rb") as other_job:
            fcntl.flock(other_job, fcntl.LOCK_EX | fcntl.LOCK_NB)
            assert refusal(capsys, tmp_path) == (2, f"error: {tmp_path} is in use by train.py (pid 4123 on node07, "
                                                    f"SLURM job 881_12, since {since}); wait for it to end, or use "
                                                    "another --base_dir\n")
    finally:
        monkeypatch.undo()
        time.tzset()


def test_a_holder_that_may_not_write_the_lock_file_holds_it_and_writes_nothing(tmp_path, monkeypatch, capsys):
    """A .lock another user made under umask 022 is opened to read (`open_lock`): its holder cannot
    record itself there (nor empty it), and still holds the run directory; the file stays as it
    was, and a second job is refused with the line that names no one."""
    (tmp_path / ".lock").write_bytes(b"another user's\n")

    def another_users(path, mode="r", *args, **kwargs):  # as root, a file's mode is no bar
        if "a" in mode:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return open(path, mode, *args, **kwargs)
    monkeypatch.setattr(atomic, "open", another_users, raising=False)
    with run_lock(tmp_path):
        assert (tmp_path / ".lock").read_bytes() == b"another user's\n"
        second = subprocess.run([sys.executable, "-c", "import sys; from utils.runs import run_lock\n"
                                 "from utils.errors import run_cli\n"
                                 "def main(argv):\n    with run_lock(sys.argv[1]): pass\n"
                                 "run_cli(main)", str(tmp_path)], cwd=REPO, capture_output=True, text=True)
    assert (second.returncode, second.stderr) == (2, f"error: {tmp_path} is in use by another train.py or "
                                                     "attack.py job; wait for it to end, or use another --base_dir\n")
    assert (tmp_path / ".lock").read_bytes() == b"another user's\n"


@pytest.mark.parametrize("lock", ["run_lock", "exclusive"])
def test_a_lock_file_that_is_a_link_is_refused_and_its_target_kept(tmp_path, capsys, lock):
    """A run folder (or a report's --out, a --data_dir) copied from elsewhere whose .lock is a
    symbolic link to a file of this user's: the job opened the link's target as its lock file,
    wrote its record there and emptied it at its end, so a .lock linked to ~/.bashrc left that
    file empty. Now one error line naming the link, and the file it points to as it was."""
    from utils.atomic import exclusive
    victim, folder = tmp_path / "bashrc", tmp_path / "run"
    victim.write_text("export PATH=~/bin:$PATH\n")
    folder.mkdir()
    (folder / ".lock").symlink_to(victim)

    def main(argv):
        with run_lock(folder) if lock == "run_lock" else exclusive(folder / ".lock"):
            pass
    assert call_cli(main, []) == 2
    assert capsys.readouterr().err == (f"error: {folder}/.lock is a symbolic link (to {victim}), not a lock "
                                       "file labelrep made, and a job there would empty what it points "
                                       "to; remove the link\n")
    assert victim.read_text() == "export PATH=~/bin:$PATH\n"


def test_a_job_waiting_its_turn_names_the_job_it_waits_for(tmp_path, capsys):
    """A report (or a download) waiting on another said 'waiting for another report.py ...' and
    nothing of which: where that one recorded itself in the lock file, the line names it."""
    import threading

    from utils.atomic import exclusive
    lock, said = tmp_path / ".report.lock", ""

    def second():
        with exclusive(lock, waiting="waiting for another report.py"):
            pass
    with held_by(tmp_path, "report.py", "exclusive", lock) as holder:
        waiter = threading.Thread(target=second)
        waiter.start()
        for _ in range(200):  # until it says it waits (10 s at most)
            said += capsys.readouterr().err
            if said:
                break
            time.sleep(0.05)
    waiter.join(10)
    assert said == (f"waiting for another report.py: report.py (pid {holder.pid} on {socket.gethostname()}, "
                    f"{SINCE})\n")


def test_a_killed_jobs_temporary_file_this_user_may_not_remove_is_left(tmp_path, monkeypatch):
    """In another user's run directory (made under umask 022) a killed job's temporary file that
    this one may not remove stays, without an error naming it: the job's own first write says
    that the directory takes no file, naming results.json or config.json, not the temporary."""
    left = tmp_path / ".config.json.abcd1234.tmp"
    left.write_bytes(b"half")

    def refused(path, *args, **kwargs):  # as root, a folder's mode is no bar
        raise PermissionError(errno.EACCES, "Permission denied", str(path))
    monkeypatch.setattr(Path, "unlink", refused)
    with run_lock(tmp_path):
        assert left.exists()


def test_an_infinite_loss_is_written_as_null(tmp_path):
    """A diverged run's loss may be inf as well as nan: either is null in results.json and
    metrics.jsonl (strict JSON, which many parsers require), not an error that ends the run."""
    row = {"train_loss": float("inf"), "valid_loss": float("-inf"), "lr": (float("nan"), 0.1)}
    write_json(tmp_path / "results.json", row)
    append_jsonl(tmp_path / "metrics.jsonl", row)
    strict = {"train_loss": None, "valid_loss": None, "lr": [None, 0.1]}
    for name in ("results.json", "metrics.jsonl"):
        text = (tmp_path / name).read_text()
        assert json.loads(text, parse_constant=lambda c: pytest.fail(f"{name} holds {c}")) == strict


def test_tensors_are_hashed_where_they_lie_not_copied(tmp_path):
    """tensors_sha256 hashed a bytes copy of each tensor: train.py's fingerprint of CIFAR-10 put
    another 150 MB beside its 180 MB of images (its start's peak, 0.30 GB above torch's, 0.42).
    The digest is that of the bytes one after the other, as before."""
    import hashlib
    import tracemalloc

    import torch
    images = torch.randint(0, 256, (2000, 3, 32, 32), dtype=torch.uint8)  # 6 MB
    labels = torch.arange(2000)
    tracemalloc.start()  # counts numpy's and Python's allocations (a bytes copy), not torch's
    try:
        digest = runs.tensors_sha256(images, labels)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < images.numel() // 100, f"hashing 6 MB of images allocated {peak} bytes"
    assert digest == hashlib.sha256(images.numpy().tobytes() + labels.numpy().tobytes()).hexdigest()


def test_a_large_json_document_is_written_without_its_text_in_memory(tmp_path):
    """report.py wrote summary.json as json.dumps(...).encode(): for 600 full-size runs a 34 MB
    document, whose pieces took 260 MB before the join (the report's peak: 564 MB resident, now
    342). dump_json writes the same bytes as the encoder makes them."""
    import tracemalloc

    from utils.atomic import dump_json, json_text
    document = {"problems": [f"{i}: " + "x" * 1000 for i in range(2000)], "loss": float("nan")}
    text = json_text(document, indent=1) + "\n"  # 2 MB
    tracemalloc.start()
    try:
        with open(tmp_path / "summary.json", "wb") as f:
            dump_json(f, document, indent=1)
            assert not f.closed
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (tmp_path / "summary.json").read_text() == text and '"loss": null' in text
    assert peak < len(text) // 10, f"writing {len(text)} bytes of JSON allocated {peak}"


def test_a_job_that_waits_its_turn_says_so_once(tmp_path, capsys):
    """A job that waited on another's download or report said nothing and looked hung: where the
    lock is held it says what it waits for, once, then takes its turn; a free lock says nothing."""
    import fcntl
    import threading
    import time

    from utils.atomic import exclusive
    lock, entered = tmp_path / ".lock", threading.Event()
    with exclusive(lock, waiting="waiting for another job"):
        pass
    assert capsys.readouterr().err == ""

    def second():
        with exclusive(lock, waiting="waiting for another job") as alone:
            entered.set()
            assert alone

    with open(lock, "a") as held:  # another job's hold (flock: per open file, also in one process)
        fcntl.flock(held, fcntl.LOCK_EX)
        thread = threading.Thread(target=second)
        thread.start()
        said = ""
        for _ in range(200):  # until it says it waits (10 s at most)
            said += capsys.readouterr().err
            if said:
                break
            time.sleep(0.05)
        assert not entered.is_set()  # it waits
    thread.join(10)
    assert entered.is_set() and said + capsys.readouterr().err == "waiting for another job\n"


def test_a_checkpoint_that_cannot_be_read_is_one_line_naming_it_once(tmp_path):
    """A folder given as --checkpoint said "cannot read checkpoint PATH ([Errno 21] Is a directory:
    'PATH')", the path twice; the reason alone follows it now."""
    from utils.runs import load_checkpoint
    with pytest.raises(UsageError) as err:
        load_checkpoint(tmp_path)
    assert str(err.value) == f"cannot read checkpoint {tmp_path} (Is a directory)"


def test_a_huge_file_that_is_no_checkpoint_is_refused_from_its_first_bytes(tmp_path, monkeypatch):
    """--checkpoint pointed by mistake at a 5 GB tar or dataset file: read_checkpoint read it whole
    into memory before its one-line 'not a checkpoint' error; its first bytes (neither torch.save's
    zip archive nor its legacy pickle) now refuse it, with the same line."""
    import builtins

    import utils.runs
    path = tmp_path / "cifar-10-python.tar"
    with open(path, "wb") as f:
        f.write(b"cifar-10-batches-py/\0")  # a tar's first member's name
        f.truncate(5 * 2**30)  # sparse: no disk used
    reads = []

    class Spy:
        def __init__(self, f):
            self.file = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.file.close()

        def fileno(self):
            return self.file.fileno()

        def read(self, size=-1):
            reads.append(size)
            assert 0 <= size <= 1 << 16, f"read({size}) of a {path.stat().st_size}-byte file"
            return self.file.read(size)

    monkeypatch.setattr(utils.runs, "open", lambda *a: Spy(builtins.open(*a)), raising=False)
    with pytest.raises(UsageError) as refused:
        utils.runs.read_checkpoint(path, advice="point --checkpoint at a checkpoint train.py wrote")
    assert str(refused.value) == (f"checkpoint {path} is corrupt or not a labelrep checkpoint (not the zip "
                                  "archive torch.save writes); point --checkpoint at a checkpoint train.py wrote")
    assert sum(reads) <= 1 << 16


def test_a_bench_record_a_full_disk_cuts_short_stays_as_it_was(tmp_path):
    """bench.py appended its tables to --record: a full disk (here a file-size limit just past the
    record's end) left half a table at its end, and the error named no file ('could not write a
    file'). The record is rewritten atomically: it stays as it was, and the error names it."""
    record = tmp_path / "BENCHMARKS.md"
    earlier = "# Benchmarks\n\nearlier tables\n" + "| resnet32 | 1.0 |\n" * 100
    record.write_text(earlier)
    code = textwrap.dedent(f"""
        import resource, signal, sys
        sys.path.insert(0, {str(REPO)!r})
        from bench import bench
        from utils.errors import call_cli
        bench.checkpoint_section = lambda args, device: ["| model | MB |", "| --- | ---: |"] + ["| resnet32 | 5.0 |"] * 50
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a failed write, not a killed process
        resource.setrlimit(resource.RLIMIT_FSIZE, ({len(earlier) + 100}, {len(earlier) + 100}))
        sys.exit(call_cli(bench.main, ["--what", "checkpoint", "--device", "cpu", "--record", {str(record)!r}]))
    """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert (proc.returncode, proc.stderr.splitlines()[-1]) == (2, f"error: could not write {record}: File too large")
    assert record.read_text() == earlier and [p.name for p in tmp_path.iterdir()] == [record.name]


def test_a_bench_record_is_appended_to_where_it_is(tmp_path):
    """bench.py's --record was rewritten whole (a temporary file renamed over it): a record that is
    a link to one kept elsewhere became a file of its own, the kept one never got the tables, and a
    group-writable record took the user's umask. The tables are appended to the record in place; a
    new record begins with the heading."""
    from bench import bench
    kept = tmp_path / "notes" / "BENCHMARKS.md"
    kept.parent.mkdir()
    kept.write_text("# Benchmarks\n\nearlier tables\n")
    kept.chmod(0o664)
    link = tmp_path / "BENCHMARKS.md"
    link.symlink_to(kept)
    bench.append_record(link, "\n## today\n")
    assert link.is_symlink() and kept.read_text() == "# Benchmarks\n\nearlier tables\n\n## today\n"
    assert stat.S_IMODE(kept.stat().st_mode) == 0o664
    new = tmp_path / "new.md"
    bench.append_record(new, "\n## today\n")
    assert new.read_text().startswith("# Benchmarks\n\nOutput of `bench/bench.py`") and new.read_text().endswith(
        "given.\n\n## today\n")


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="no /proc: the umask is read by setting it")
def test_a_files_mode_is_found_without_setting_the_umask(tmp_path, monkeypatch):
    """An atomic write read the umask by setting it to 0 and back: for that instant a file another
    thread made (a notebook's, a sweep's stage log) was writable by everyone. The umask is read
    from /proc now; written files still get the umask's permissions."""
    before = os.umask(0o027)
    try:
        monkeypatch.setattr(os, "umask", lambda mask: pytest.fail(f"os.umask({mask:#o}) called"))
        atomic.atomic_write_text(tmp_path / "results.json", "{}")
    finally:
        monkeypatch.undo()
        os.umask(before)
    assert stat.S_IMODE((tmp_path / "results.json").stat().st_mode) == 0o640


def test_a_run_files_lists_of_values_are_one_line_each(tmp_path):
    """write_json (config.json, results.json, attack_results.json, confusion.json) lays JSON out as
    json.dumps(indent=2) does, but for a list of plain values, on one line: an entry's per-class
    counts, a label's shape, a confusion matrix's row (a CIFAR-100 entry's 200 counts had 200 lines);
    the file reads back as written, NaN as null."""
    from utils.runs import write_json
    entry = {"attack": "pgd", "robust_acc": float("nan"), "class_images": [50] * 100,
             "class_robust": [3] * 100, "source": {"label": "category", "seed": 7}, "tags": []}
    document = {"label_shape": [10, 64, 64], "entries": [entry], "test": [[2, 0], [1, 3]], "valid": None}
    write_json(tmp_path / "a.json", document)
    text = (tmp_path / "a.json").read_text()
    assert json.loads(text) == {**document, "entries": [{**entry, "robust_acc": None}]}
    assert text == (
        '{\n  "label_shape": [10, 64, 64],\n  "entries": [\n    {\n      "attack": "pgd",\n'
        '      "robust_acc": null,\n'
        f'      "class_images": [{", ".join(["50"] * 100)}],\n'
        f'      "class_robust": [{", ".join(["3"] * 100)}],\n'
        '      "source": {\n        "label": "category",\n        "seed": 7\n      },\n      "tags": []\n'
        '    }\n  ],\n  "test": [\n    [2, 0],\n    [1, 3]\n  ],\n  "valid": null\n}\n')
