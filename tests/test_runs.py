"""utils/atomic.py and utils/runs.py: a file is replaced whole or not at all, also across a crash
of the machine, and what a killed job leaves behind is cleared by the next job."""
import errno
import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import REPO
from utils import atomic, runs
from utils.atomic import atomic_write_text
from utils.errors import UsageError
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


def test_a_second_process_in_a_run_directory_is_refused_until_the_first_ends(tmp_path):
    """Two jobs in one run directory, each taking run_lock: the second is a one-line error while
    the first holds it (a shared lock let both in, to write one run from two), and goes in once
    the first has ended."""
    code = ("import sys; from utils.runs import run_lock\n"
            "with run_lock(sys.argv[1]):\n    print('held', flush=True); sys.stdin.read()")
    first = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], cwd=REPO, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert first.stdout.readline() == "held\n"
        with pytest.raises(UsageError) as refused, run_lock(tmp_path):
            pass
    finally:
        first.communicate("")  # its stdin closed: it leaves the lock
    assert str(refused.value) == (f"{tmp_path} is in use by another train.py or attack.py job; wait for it "
                                  "to end, or use another --base_dir")
    assert first.returncode == 0
    with run_lock(tmp_path):
        assert (tmp_path / ".lock").exists()


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
        with pytest.raises(UsageError, match="is in use by another train.py or attack.py job"), run_lock(tmp_path):
            pass
    finally:
        first.communicate("")
    assert first.returncode == 0


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
