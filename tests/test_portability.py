"""Portability: the scripts on Windows (no fcntl, no SIGUSR1 or SIGHUP, no os.fchmod before Python
3.13, no os.pread, os.fstatvfs, os.O_NONBLOCK or os.O_NOFOLLOW), simulated on Linux by running them in an interpreter with those
taken away."""
import io
import json
import os
import sys

import pytest

from conftest import REPO, run_script

# run in a fresh interpreter, before the script: what Windows lacks, gone
WINDOWS = """
import os, runpy, signal, sys
sys.modules["fcntl"] = None  # import fcntl: ImportError
for name in ("SIGUSR1", "SIGUSR2", "SIGHUP", "SIGKILL", "SIGALRM", "SIGQUIT", "pthread_sigmask"):
    if hasattr(signal, name):
        delattr(signal, name)
for name in ("fchmod", "pread", "fstatvfs", "geteuid", "O_NONBLOCK", "O_NOFOLLOW"):
    if hasattr(os, name):
        delattr(os, name)
script, sys.argv = sys.argv[1], sys.argv[1:]
sys.path.insert(0, os.path.dirname(script))
runpy.run_path(script, run_name="__main__")
"""


def run_on_windows(tmp_path, script, *args):
    (tmp_path / "windows.py").write_text(WINDOWS)
    return run_script(tmp_path / "windows.py", REPO / script, *args, check=False)


@pytest.mark.slow
def test_train_and_attack_run_without_posix_calls(cifar10_dir, label_dir, tmp_path):
    """Each script imported fcntl (utils/errors.py, atomic.py, runs.py) and preempt's SIGUSR1 at
    import, and wrote each file through os.fchmod: on Windows none of them started (ImportError:
    No module named 'fcntl'). Now a run trains and is attacked there, without locks, and SIGTERM
    alone is caught; report.py tabulates them."""
    base = tmp_path / "runs"
    train = run_on_windows(tmp_path, "train.py", "--model", "resnet32", "--dataset", "cifar10",
                           "--label", "category", "--seed", "0", "--data_dir", cifar10_dir,
                           "--base_dir", base, "--valid_size", "50", "--epochs", "1",
                           "--batch_size", "64", "--device", "cpu")
    assert train.returncode == 0, train.stderr[-3000:]
    result = json.loads(train.stdout.splitlines()[-1])
    attack = run_on_windows(tmp_path, "attack.py", "--checkpoint", result["checkpoint"], "--attacks", "fgsm",
                            "--epsilons", "0.01", "--device", "cpu")
    assert attack.returncode == 0, attack.stderr[-3000:]
    assert set(json.loads(attack.stdout.splitlines()[-1])["robust_acc"]) == {"fgsm/untargeted/0.01",
                                                                             "fgsm/targeted/0.01"}
    report = run_on_windows(tmp_path, "report.py", "--base_dir", base, "--out", tmp_path / "report", "--no_figures")
    assert report.returncode == 0, report.stderr[-3000:]
    assert json.loads(report.stdout.splitlines()[-1])["attacked"] == 1


def test_a_local_sweep_runs_its_stages_without_posix_calls(monkeypatch, tmp_path):
    """sweep.py --local caught SIGUSR1 and SIGHUP, read its stage logs' last byte with os.pread and
    looked for a full disk with os.fstatvfs and os.geteuid: on Windows the pool's first line was an
    AttributeError, and no run started. Now it catches the signals there are (SIGTERM, SIGINT),
    runs the stages and reports a failed one, its log appended to."""
    import signal

    import sweep
    from utils.grid import Run, Task
    for name in ("SIGUSR1", "SIGHUP"):
        monkeypatch.delattr(signal, name)
    for name in ("pread", "fstatvfs", "geteuid", "O_NOFOLLOW"):
        monkeypatch.delattr(os, name)
    monkeypatch.setattr(sys, "platform", "win32")  # stop_with_sweep: no PR_SET_PDEATHSIG, no preexec_fn
    stage = tmp_path / "stage.py"
    stage.write_text("import sys\nprint('working')\nsys.exit(int(sys.argv[1]))\n")
    tasks = [Task(i, Run("cifar10", "resnet32", f"label{i}", 100, 0), tmp_path / f"run{i}", ("train",),
                  ["train"], {}, {"train": [sys.executable, str(stage), str(status)]})
             for i, status in enumerate((0, 3))]
    (tmp_path / "run1").mkdir()
    (tmp_path / "run1" / "train.log").write_bytes(b"an earlier attempt, cut off")
    stream = io.StringIO()
    pool = sweep.LocalPool(tasks, [{}], stream=stream)
    assert sorted((o["run"], o["status"]) for o in pool.run()) == [
        ("cifar10/resnet32/label0/level100/seed0", 0), ("cifar10/resnet32/label1/level100/seed0", 3)]
    assert "train cifar10/resnet32/label1/level100/seed0: FAILED (exit 3)" in stream.getvalue()
    first, header, *output = (tmp_path / "run1" / "train.log").read_text().splitlines()
    assert (first, header[:4], output) == ("an earlier attempt, cut off", "=== ", ["working"])
