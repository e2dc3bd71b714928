"""train.py end to end: the JSON line, the run files, determinism, resume, preemption, bad input."""
import argparse
import io
import json
import os
import pickle
import re
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time
import traceback
import types
from pathlib import Path

import numpy as np
import pytest
import torch

import attack
import report
import sweep
import train
from architecture import ARCHITECTURES
from conftest import (REFERENCE_LABELS, REPO, SUBSET, flat, last_json, make_cifar10, needs_compiler, run_importing,
                      run_script, unstamped)
from utils.errors import UsageError, as_parsed, call_cli, run_cli
from utils.grid import attack_state, train_state
from utils.runs import (ATTACK_EXAMPLES, ATTACK_RESULTS, CONFUSION, LAST_CHECKPOINT, LAYOUT_TEXT, RESULTS,
                        run_directory, save_checkpoint, write_json)
from utils.training import _rounding_changes, _segments

TIMING = ("seconds", "images_per_s")


def flags(data_dir, base_dir, label_dir, label="speech", epochs=2, **extra):
    args = ["--model", "resnet32", "--dataset", "cifar10", "--label", label, "--seed", "3",
            "--data_dir", data_dir, "--label_dir", label_dir, "--base_dir", base_dir,
            "--valid_size", "50", "--epochs", epochs, "--batch_size", "64", "--device", "cpu"]
    for k, v in extra.items():
        args += [f"--{k}"] + ([] if v is True else [v])
    return [str(a) for a in args]


def metrics(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def rerun_argv(config, base_dir):
    """train.py's command line rebuilt from a run's config.json alone, into `base_dir`: every flag
    it records (a switch on as the bare flag, an unset --compile left out) but --resume and --force."""
    argv = []
    for name, value in (config["flags"] | {"base_dir": str(base_dir)}).items():
        if name not in ("resume", "force") and value is not None and value is not False:
            shown = repr(value) if isinstance(value, float) else str(value)  # every digit of a float
            argv += [f"--{name}"] + ([] if value is True else [shown])
    return argv


def same_weights(run_dir, other):
    """Whether both run directories' last and best checkpoints hold equal weights, bit for bit."""
    names = [LAST_CHECKPOINT, *(p.name for p in run_dir.glob("*_best_model.pth"))]
    loaded = [[torch.load(d / name, weights_only=True)["model"] for d in (run_dir, other)] for name in names]
    return len(names) == 2 and all(a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
                                   for a, b in loaded)


@pytest.fixture(scope="module")
def speech_run(cifar10_dir, label_dir, tmp_path_factory):
    base = tmp_path_factory.mktemp("runs")
    proc = run_script("train.py", *flags(cifar10_dir, base, label_dir))
    return base, proc


def test_json_line_and_run_files(speech_run):
    base, proc = speech_run
    result = last_json(proc)
    run_dir = base / "cifar10" / "seed3" / "resnet32" / "model_speech"
    assert result["run_dir"] == str(run_dir)
    for key in ("dataset", "model", "label", "seed", "level", "epochs", "valid_acc", "test_acc",
                "test_loss", "train_seconds"):
        assert key in result
    assert (result["label"], result["seed"], result["level"], result["epochs"]) == ("speech", 3, 100, 2)
    assert result["label_granularity"] == "fine"  # coarse runs said only "cifar100"
    assert result["train_images"] == 250 and result["test_images"] == 100
    assert 0 <= result["test_acc"] <= 1
    assert json.loads((run_dir / "results.json").read_text()) == result
    config = json.loads((run_dir / "config.json").read_text())
    assert config["flags"]["label"] == "speech" and config["flags"]["valid_size"] == 50
    assert config["environment"]["torch"] == torch.__version__
    rows = metrics(run_dir)
    assert [r["epoch"] for r in rows] == [1, 2]
    assert set(rows[0]) >= {"epoch", "lr", "train_loss", "valid_loss", "valid_acc"}
    # the best epoch: metrics.jsonl's highest validation accuracy, a tie by the lower loss, then the first
    best = min(rows, key=lambda r: (-r["valid_acc"], r["valid_loss"], r["epoch"]))
    assert (result["best_epoch"], result["valid_acc"]) == (best["epoch"], best["valid_acc"])
    assert (run_dir / "speech_seed3_resnet32_best_model.pth").is_file()
    assert (run_dir / "last_checkpoint.pth").is_file()
    # not a TTY: what trains where, at once (a cluster log said nothing until its first epoch ended),
    # then one plain progress line per epoch on stderr, each after the date and time it was written
    lines = proc.stderr.splitlines()
    assert unstamped(lines[0]) == (f"starting {run_dir} at epoch 1 of 2: 250 training and 50 validation images, "
                                   "batch 64, lr 0.1, on cpu")
    # each after the date and time it was written
    assert [re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d epoch (\d)/2 lr .* valid_acc .*", line)[1]
            for line in lines[1:]] == ["1", "2"]
    # the time left, as the bar shows it, after each epoch but the last
    assert re.search(r" img/s eta \d+:\d\d:\d\d$", lines[1]) and lines[2].endswith(" img/s"), lines


@pytest.mark.parametrize("umask", [0o022, 0o027], ids=["umask022", "umask027"])
def test_run_files_have_the_umasks_permissions(tmp_path, umask):
    """Written through a temporary file (created 0600), they still get what `open` would give
    them, so a shared group can read a run's results and checkpoints."""
    before = os.umask(umask)
    try:
        write_json(tmp_path / "run" / "results.json", {"test_acc": 0.5})
        save_checkpoint(tmp_path / "run" / "last_checkpoint.pth", {"epoch": 1})
    finally:
        os.umask(before)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "run").iterdir()}
    assert modes == {"results.json": 0o666 & ~umask, "last_checkpoint.pth": 0o666 & ~umask}


def test_a_run_started_with_stdout_and_stderr_closed_trains_to_the_end(cifar10_dir, label_dir, tmp_path):
    """`python train.py ... >&- 2>&-` (a daemon's start): Python gives a closed stream as None, and
    its first progress line ended the run (AttributeError, no results.json, exit 1, said nowhere);
    through pyenv's shim, stderr was the shim's script open for reading there (EBADF, the same).
    Now what would go there is dropped, and the run writes its results."""
    readable_only = os.open(REPO / "README.md", os.O_RDONLY)

    def closed_streams():  # in the child: stdout closed, stderr a descriptor open only for reading
        os.close(1)
        os.dup2(readable_only, 2)
    try:
        done = subprocess.run([sys.executable, str(REPO / "train.py"),
                               *flags(cifar10_dir, tmp_path, label_dir, label="category", epochs=1)],
                              cwd=REPO, preexec_fn=closed_streams, timeout=600, check=False)
    finally:
        os.close(readable_only)
    assert done.returncode == 0
    result = json.loads((tmp_path / "cifar10" / "seed3" / "resnet32" / "model_category" / RESULTS).read_text())
    assert result["epochs"] == 1 and result["best_epoch"] == 1


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full, a device that is always full")
@pytest.mark.parametrize("script", ["train.py", "attack.py", "sweep.py", "report.py"])
def test_an_error_on_a_full_stderr_still_exits_2(script, tmp_path):
    """A job's log on a full disk (stderr there) took the error line and the status with it: the
    OSError raised writing the line ended the script as a crash, status 1, where a sweep or a
    notebook reads 2 as bad input or a full disk. The status stays 2."""
    with open("/dev/full", "w") as full:
        proc = subprocess.run([sys.executable, str(REPO / script), "--no_such_flag"], cwd=REPO, stderr=full,
                              stdout=subprocess.PIPE, timeout=300)
    assert (proc.returncode, proc.stdout) == (2, b"")


def test_same_flags_give_the_same_metrics_and_weights(speech_run, tmp_path):
    """config.json is enough to rerun a run: the command line rebuilt from its flags, on its
    number of CPU threads, trains the same metrics and the same weights, bit for bit."""
    base, _ = speech_run
    run = ("cifar10", "seed3", "resnet32", "model_speech")
    config = json.loads(base.joinpath(*run, "config.json").read_text())
    run_script("train.py", *rerun_argv(config, tmp_path),
               env={"OMP_NUM_THREADS": str(config["environment"]["threads"])})
    assert metrics(tmp_path.joinpath(*run)) == metrics(base.joinpath(*run))
    assert same_weights(tmp_path.joinpath(*run), base.joinpath(*run))


def test_the_recorded_sha256s_are_the_readmes(speech_run, cifar10_dir, label_dir):
    """docs/reference.md: config.json's label_sha256 is labels.targets_sha256 of the label targets
    (not the file's sha256sum, which a reader compared it with), its data_sha256
    utils.runs.tensors_sha256 of load_cifar's train images, train labels, test images and test
    labels."""
    from cifar import load_cifar
    from labels import targets_sha256
    from utils.runs import tensors_sha256
    base, _ = speech_run
    config = json.loads((base / "cifar10" / "seed3" / "resnet32" / "model_speech" / "config.json").read_text())
    data = load_cifar("cifar10", cifar10_dir)
    assert config["label_sha256"] == targets_sha256(np.load(label_dir / "cifar10_speech.npy"))
    assert config["data_sha256"] == tensors_sha256(data.train_images, data.train_labels, data.test_images,
                                                   data.test_labels)


def test_config_records_how_predictions_are_decoded(speech_run):
    """config.json says how the run's predictions were decoded, which its label's name does not
    (a label file of one-hot rows, `onehot5`, reads as category's argmax): it recorded none."""
    from utils.labelspace import CategorySpace
    from utils.mcr2 import MCR2Space
    base, _ = speech_run
    config = json.loads((base / "cifar10" / "seed3" / "resnet32" / "model_speech" / "config.json").read_text())
    assert config["decoding"] == "nearest_target"
    assert (CategorySpace(10).decoding, MCR2Space(10).decoding) == ("argmax", "nearest_subspace")


def test_the_readme_names_the_run_files_fields(speech_run):
    """README's 'What a run writes' names every field of a metrics.jsonl row (it said 'train
    loss/acc', 'images/s' for train_loss, train_acc, images_per_s) and only fields results.json has."""
    base, proc = speech_run
    text = (REPO / "README.md").read_text()
    rows = {row.split(" | ")[0].strip("| `"): set(re.findall(r"`(\w+)`", row.split(" | ", 1)[1]))
            for row in text[text.index("### What a run writes"):].split("\n\n")[2].splitlines()[2:]}
    assert rows["metrics.jsonl"] == set(json.loads((Path(last_json(proc)["run_dir"]) / "metrics.jsonl")
                                            .read_text().splitlines()[0]))
    assert rows["results.json"] - {"seconds"} <= set(last_json(proc))


@pytest.mark.parametrize("label, smoothing", [("speech", 0.0), ("category", 0.1)])
def test_results_time_speed_and_smoothing_are_the_readmes(label, smoothing, tmp_path):
    """README's results.json: train_seconds is the sum of the epochs' seconds, images_per_s the
    median epoch's (a first epoch that compiles does not skew it), and --smoothing as it acted:
    0 for a label it does not act on, however given."""
    from utils.training import _results
    args = train.build_parser().parse_args(flags(tmp_path, tmp_path, tmp_path, label=label, epochs=3,
                                                 smoothing="0.1"))
    history = [{"seconds": 9.0, "images_per_s": 10.0}, {"seconds": 2.0, "images_per_s": 100.0},
               {"seconds": 2.5, "images_per_s": 110.0}]
    scores = {"valid": {"valid_acc": 0.5}, "test": {"test_acc": 0.4}, "decoders": {}}
    config = {"run_dir": str(tmp_path), "train_images": 250, "test_images": 100, "world_size": 1}
    results = _results(args, config, tmp_path / "best.pth", 2, scores, history, torch.device("cpu"))
    assert (results["train_seconds"], results["images_per_s"]) == (13.5, 100.0)
    assert (results["smoothing"], results["best_epoch"], results["test_acc"]) == (smoothing, 2, 0.4)


def test_finished_run_is_not_retrained(speech_run, cifar10_dir, label_dir):
    base, proc = speech_run
    run_dir = base / "cifar10" / "seed3" / "resnet32" / "model_speech"
    before = (run_dir / "last_checkpoint.pth").stat().st_mtime_ns
    again = run_script("train.py", *flags(cifar10_dir, base, label_dir))
    assert last_json(again) == last_json(proc)
    assert "already complete" in again.stderr
    assert (run_dir / "last_checkpoint.pth").stat().st_mtime_ns == before


def test_a_resumed_run_keeps_a_best_epoch_before_the_stop(cifar10_dir, label_dir, tmp_path, monkeypatch, capsys):
    """Epoch 1 is made the best of 3 and the run is stopped in epoch 3: the resumed run ends on
    epoch 1's weights, as the run that was never stopped. Every epoch shuffles and augments with
    a generator of its own."""
    from utils import training
    monkeypatch.setattr(training, "is_better", lambda valid, best, history: len(history) == 1)
    real, seeds = training.train_epoch, []

    def recorded(step, images, labels, batch_size, generator, lr, **kwargs):
        seeds.append(generator.initial_seed())
        return real(step, images, labels, batch_size, generator, lr, **kwargs)
    monkeypatch.setattr(training, "train_epoch", recorded)
    straight = train.main(flags(cifar10_dir, tmp_path / "a", label_dir, label="category", epochs=3) + ["--resume"])
    assert len(set(seeds)) == 3
    # --resume with nothing to resume (a sweep's first start, or a typo in --seed) said nothing of it
    assert (f"starting {straight['run_dir']} at epoch 1 of 3 (--resume found no checkpoint there): 250 "
            "training and 50 validation images, batch 64, lr 0.1, on cpu\n" in capsys.readouterr().err)

    def stopped_in_epoch_three(*args, **kwargs):
        return None if len(seeds) == 5 else recorded(*args, **kwargs)  # None: a preemption
    monkeypatch.setattr(training, "train_epoch", stopped_in_epoch_three)
    every_epoch = flags(cifar10_dir, tmp_path / "b", label_dir, label="category", epochs=3, checkpoint_seconds=0)
    with pytest.raises(SystemExit):
        train.main(every_epoch)
    monkeypatch.setattr(training, "train_epoch", real)
    capsys.readouterr()
    resumed = train.main(every_epoch + ["--resume"])
    assert resumed["best_epoch"] == straight["best_epoch"] == 1
    # a requeued job's log said "resuming RUN after epoch 2": not of how many, nor on what
    assert unstamped(capsys.readouterr().err.splitlines()[0]) == (
        f"resuming {resumed['run_dir']} after epoch 2 of 3: 250 training and 50 validation images, batch 64, "
        "lr 0.1, on cpu")
    # scored with epoch 1's weights, not the last epoch's: its validation again, to the last digit
    first = metrics(Path(straight["run_dir"]))[0]
    assert (straight["valid_acc"], straight["valid_loss"]) == (first["valid_acc"], first["valid_loss"])
    for key in ("valid_acc", "valid_loss", "test_acc", "test_loss"):
        assert resumed[key] == straight[key], key


def recorded_saves(monkeypatch, killed_at=None):
    """The checkpoints train.py writes, as ("last" or "best", epoch), in order; the write numbered
    `killed_at` (from 0) raises instead, as a job killed before it."""
    from utils import training
    saves, real = [], training.save_checkpoint

    def recorded(path, state):
        saves.append(("last" if path.name == "last_checkpoint.pth" else "best", state["epoch"]))
        if killed_at is not None and len(saves) == killed_at + 1:
            raise KeyboardInterrupt("killed")
        real(path, state)
    monkeypatch.setattr(training, "save_checkpoint", recorded)
    return saves


@pytest.mark.parametrize("seconds, written", [
    (0, [("last", 1), ("last", 2), ("best", 1), ("last", 3)]),
    (3600, [("last", 3), ("best", 1)])])
def test_checkpoints_are_written_when_due_and_the_best_where_no_file_holds_it(
        seconds, written, cifar10_dir, label_dir, tmp_path, monkeypatch):
    """--checkpoint_seconds 0: the last checkpoint after every epoch, the best epoch's weights
    in the best checkpoint once a later last checkpoint no longer holds them; else the last after
    the last epoch alone. Rows of metrics.jsonl come every epoch. (An epoch over
    preempt.FINISH_SECONDS also writes one, which a loaded machine's 22 s epoch of tiny data did:
    the limit is out of reach here.)"""
    from utils import preempt, training
    monkeypatch.setattr(training, "is_better", lambda valid, best, history: len(history) == 1)
    monkeypatch.setattr(preempt, "FINISH_SECONDS", float("inf"))
    saves = recorded_saves(monkeypatch)
    results = train.main(flags(cifar10_dir, tmp_path, label_dir, label="category", epochs=3,
                               checkpoint_seconds=seconds))
    assert saves == written and results["best_epoch"] == 1
    assert [row["epoch"] for row in metrics(Path(results["run_dir"]))] == [1, 2, 3]
    assert torch.load(results["checkpoint"], weights_only=True)["valid_acc"] == results["valid_acc"]


@pytest.mark.parametrize("stopped_at", [2, 3])
def test_a_job_killed_in_a_checkpoint_write_resumes_to_the_uninterrupted_results(
        stopped_at, cifar10_dir, label_dir, tmp_path, monkeypatch):
    """Epochs 1 and 4 are the best, an epoch takes a second of a fake clock and the last checkpoint
    is due every 3: after epoch 6 the run writes the last checkpoint (holding epoch 4's weights
    too), then the best. A job killed before either write (here: the write raises) resumes and
    ends as the run that was not stopped. Writing the best first, as before, lost epoch 4's
    weights: the last checkpoint of epoch 3 named epoch 1 best, the best file held epoch 4."""
    from utils import preempt, training
    monkeypatch.setattr(training, "is_better", lambda valid, best, history: len(history) in (1, 4))
    # an epoch over FINISH_SECONDS of real time (a loaded machine) is saved whatever the fake clock says
    monkeypatch.setattr(preempt, "FINISH_SECONDS", float("inf"))
    clock, real_epoch = [0.0], training.train_epoch

    def second_long_epoch(*args, **kwargs):
        clock[0] += 1
        return real_epoch(*args, **kwargs)
    monkeypatch.setattr(training, "train_epoch", second_long_epoch)
    monkeypatch.setattr(training, "time", types.SimpleNamespace(monotonic=lambda: clock[0],
                                                                perf_counter=time.perf_counter))
    real_save, saves = training.save_checkpoint, recorded_saves(monkeypatch, killed_at=stopped_at)
    args = flags(cifar10_dir, tmp_path / "b", label_dir, label="category", epochs=7, level=10,
                 checkpoint_seconds=3)
    with pytest.raises(KeyboardInterrupt):
        train.main(args)
    assert saves == [("last", 3), ("best", 1), ("last", 6), ("best", 4)][:stopped_at + 1]
    monkeypatch.setattr(training, "save_checkpoint", real_save)
    resumed = train.main(args + ["--resume"])
    straight = train.main(flags(cifar10_dir, tmp_path / "a", label_dir, label="category", epochs=7,
                                level=10, checkpoint_seconds=3))
    assert resumed["best_epoch"] == straight["best_epoch"] == 4
    for key in ("valid_acc", "valid_loss", "test_acc", "test_loss"):
        assert resumed[key] == straight[key], key
    best = torch.load(resumed["checkpoint"], weights_only=True)
    assert best["epoch"] == 4 and best["valid_acc"] == straight["valid_acc"]


@pytest.mark.parametrize("finish_seconds", [3600, 0])  # longer or shorter than any epoch here
def test_a_stop_signal_lets_an_epoch_end_when_the_checkpoint_is_older(finish_seconds, cifar10_dir, label_dir,
                                                                      tmp_path, monkeypatch):
    """Between checkpoints a SIGTERM in an epoch lets it end, then writes the last checkpoint and
    exits 75: no trained epoch is lost. Where the checkpoint is of the epoch's start (the first
    epoch here), or the last epoch took longer than preempt.FINISH_SECONDS (SLURM's kill would
    come before the epoch's end), the signal stops it at once; such a last epoch was saved
    whatever --checkpoint_seconds says, so that stop loses no trained epoch either (it lost every
    epoch since the last checkpoint, up to --checkpoint_seconds of them)."""
    from utils import preempt, training
    monkeypatch.setattr(preempt, "FINISH_SECONDS", finish_seconds)
    real, stoppable = training.train_epoch, []

    def signalled_in_epoch_two(*args, **kwargs):
        stoppable.append(kwargs["stoppable"])
        if len(stoppable) == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # caught by the run's handler
        return real(*args, **kwargs)
    monkeypatch.setattr(training, "train_epoch", signalled_in_epoch_two)
    args = flags(cifar10_dir, tmp_path, label_dir, label="category", epochs=3, checkpoint_seconds=3600)
    with pytest.raises(SystemExit) as stopped:
        train.main(args)
    assert stopped.value.code == 75
    run_dir = tmp_path / "cifar10" / "seed3" / "resnet32" / "model_category"
    if finish_seconds:
        assert stoppable == [True, False]
        checkpoint = torch.load(run_dir / "last_checkpoint.pth", weights_only=True)
        assert checkpoint["epoch"] == 2 and [row["epoch"] for row in metrics(run_dir)] == [1, 2]
    else:
        assert stoppable == [True, True]
        checkpoint = torch.load(run_dir / "last_checkpoint.pth", weights_only=True)
        assert checkpoint["epoch"] == 1 and [row["epoch"] for row in metrics(run_dir)] == [1]


def test_sigterm_then_resume_gives_the_uninterrupted_results(cifar10_dir, label_dir, tmp_path):
    args = flags(cifar10_dir, tmp_path / "a", label_dir, label="category", epochs=4)
    straight = last_json(run_script("train.py", *args))

    # every epoch saved: the signal, sent once epoch 1 has ended, stops epoch 2 at once however long
    # an epoch takes on a busy machine
    args = flags(cifar10_dir, tmp_path / "b", label_dir, label="category", epochs=4, checkpoint_seconds=0)
    run_dir = tmp_path / "b" / "cifar10" / "seed3" / "resnet32" / "model_category"
    proc = subprocess.Popen([sys.executable, "train.py", *args], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not ((run_dir / "metrics.jsonl").exists() and (run_dir / "metrics.jsonl").read_text()) \
            and time.time() < deadline:  # epoch 1 has ended
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 75, err
    assert "preempted" in err and not (run_dir / "results.json").exists()
    resumed = run_script("train.py", *args, "--resume")
    assert "resuming" in resumed.stderr
    result = last_json(resumed)
    for key in ("valid_acc", "test_acc", "test_loss", "best_epoch"):
        assert result[key] == straight[key]
    assert metrics(run_dir) == metrics(tmp_path / "a" / "cifar10" / "seed3" / "resnet32" / "model_category")
    assert same_weights(run_dir, tmp_path / "a" / "cifar10" / "seed3" / "resnet32" / "model_category")
    # config.json keeps the first job's command line and machine beside the resumed one's
    segments = json.loads((run_dir / "config.json").read_text())["segments"]
    stopped_after = json.loads(resumed.stderr.split("resuming ")[1].split("after epoch ")[1].split()[0])
    assert [s["after_epoch"] for s in segments] == [0, stopped_after]
    assert ["--resume" in s["environment"]["argv"] for s in segments] == [False, True]


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="Windows has no SIGHUP")
@pytest.mark.parametrize("stderr", ["terminal", "log file"])
def test_a_hangup_stops_a_run_as_sigterm_does(stderr, cifar10_dir, label_dir, tmp_path):
    """train.py started over ssh without nohup or tmux gets SIGHUP when the connection drops: it
    died at once (exit -1), and every epoch since its last checkpoint was lost (with the default
    --checkpoint_seconds 60, a run of short epochs had none). It now stops as for SIGTERM, its
    checkpoint kept, with exit 75 and the preempted line in a log file; on the terminal that hung
    up, where every write fails (EIO), its lines go nowhere, not into an error after the stop."""
    import fcntl
    import pty
    import select
    import struct
    import termios
    args = flags(cifar10_dir, tmp_path, label_dir, label="category", epochs=4)
    run_dir = tmp_path / "cifar10" / "seed3" / "resnet32" / "model_category"
    leader, follower = pty.openpty()  # the ssh session's terminal, 80 columns: a bar is drawn
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    log = tmp_path / "train.log"
    with open(log, "w") as log_file:
        proc = subprocess.Popen([sys.executable, "train.py", *args], cwd=REPO, stdin=follower, stdout=follower,
                                stderr=follower if stderr == "terminal" else log_file, start_new_session=True)
    os.close(follower)
    deadline = time.time() + 300
    while not ((run_dir / "metrics.jsonl").exists() and (run_dir / "metrics.jsonl").read_text()) \
            and time.time() < deadline:  # epoch 1 has ended; what the terminal shows is read meanwhile
        if select.select([leader], [], [], 0.02)[0]:
            os.read(leader, 4096)
    os.close(leader)  # the connection drops: the terminal hangs up
    proc.send_signal(signal.SIGHUP)
    assert proc.wait(timeout=300) == 75, log.read_text()
    checkpoint = torch.load(run_dir / LAST_CHECKPOINT, weights_only=True)
    assert checkpoint["epoch"] >= 1 and len(metrics(run_dir)) == checkpoint["epoch"]
    if stderr == "log file":
        line = unstamped(log.read_text().splitlines()[-1])
        assert line.startswith(f"preempted: {run_dir}: stopped by signal ") and line.endswith("rerun with --resume")
    assert not (run_dir / RESULTS).exists()


def test_an_amp_run_resumed_ends_as_the_uninterrupted_one(monkeypatch, cifar10_dir, label_dir, tmp_path):
    """Under --amp every step's forward used the weights of the run's first step: torch keeps a
    weight's bf16 copy until the outermost autocast exits, and run_training's autocast(device, False)
    around the whole run never exited. A run resumed after epoch 1 (its first step cast the weights
    anew) then ended otherwise than the uninterrupted one (epoch 2's train_loss 36.4 against 41.2 on
    the CIFAR-10 subset), whose forward passes never saw what its steps had trained."""
    from utils import training

    def argv(base):
        return flags(cifar10_dir, base, label_dir, label="category", amp=True, level=40, checkpoint_seconds=0)
    straight = train.main(argv(tmp_path / "a"))
    train_epoch, calls = training.train_epoch, []

    def stop_in_epoch_2(*args, **kwargs):  # a preemption at the start of epoch 2
        calls.append(1)
        return train_epoch(*args, **kwargs) if len(calls) == 1 else None
    monkeypatch.setattr(training, "train_epoch", stop_in_epoch_2)
    with pytest.raises(SystemExit) as stopped:
        train.main(argv(tmp_path / "b"))
    assert stopped.value.code == 75
    monkeypatch.undo()
    run_dir = Path(train.main(argv(tmp_path / "b") + ["--resume"])["run_dir"])
    assert [row["epoch"] for row in metrics(run_dir)] == [1, 2]
    assert metrics(run_dir) == metrics(Path(straight["run_dir"]))
    assert same_weights(run_dir, Path(straight["run_dir"]))


def test_a_result_names_the_code_that_made_it():
    from utils.runs import code_version, environment
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    assert environment()["git"] == code_version() and code_version()["commit"] == head.strip()
    assert isinstance(code_version()["dirty"], bool)


def test_a_checkout_another_user_owns_still_names_its_commit(monkeypatch):
    """A lab's shared checkout, run by another user: git refused it ('detected dubious ownership'),
    and every run recorded "git": null. GIT_TEST_ASSUME_DIFFERENT_OWNER is git's own stand-in for
    another owner."""
    from utils.runs import code_version
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    monkeypatch.setenv("GIT_TEST_ASSUME_DIFFERENT_OWNER", "1")
    refused = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True)
    if refused.returncode == 0:
        pytest.skip("this git does not check a checkout's owner")
    assert code_version()["commit"] == head.strip()


def utils_checkout(folder):
    """A git checkout in `folder` of a copy of utils/, committed once; the git argv that works in it."""
    shutil.copytree(REPO / "utils", folder / "utils", ignore=shutil.ignore_patterns("__pycache__"))
    git = ["git", "-C", str(folder), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "utils"], check=True)
    subprocess.run([*git, "commit", "-qm", "first"], check=True)
    return git


def test_a_notebooks_later_run_names_the_code_as_it_is_then(tmp_path):
    """One process (a kernel) records the checkout as it is at each run: edited after its first
    run (reloaded, %autoreload), then committed. The first answer was kept for the process, so a
    later run's config.json named the first run's commit, and "dirty": false for edited code."""
    if not shutil.which("git"):
        pytest.skip("no git")
    git = utils_checkout(tmp_path)
    code = textwrap.dedent(f"""
        import json, subprocess
        from utils.runs import environment
        seen = [environment()["git"]]
        with open("utils/__init__.py", "a") as f:
            f.write("# edited\\n")
        seen.append(environment()["git"])
        subprocess.run({git!r} + ["commit", "-qam", "second"], check=True)
        seen.append(environment()["git"])
        print(json.dumps(seen))""")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    first, edited, committed = json.loads(proc.stdout)
    assert first["dirty"] is False and edited == {"commit": first["commit"], "dirty": True}
    assert committed["dirty"] is False and committed["commit"] != first["commit"]


def test_a_read_only_base_dir_names_the_flag_that_moves_it(cifar10_dir, label_dir, tmp_path, monkeypatch,
                                                            capsys):
    """--base_dir defaults to ./outputs, in a read-only folder where train.py runs from a shared
    install: the error named the folder, not the flag that writes elsewhere."""
    from conftest import read_only
    from utils.errors import call_cli
    read_only(monkeypatch, tmp_path)
    assert call_cli(train.main, flags(cifar10_dir, tmp_path / "outputs", label_dir, epochs=1)) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (f"error: could not write {tmp_path / 'outputs'}: "
                                                        "Read-only file system; pass another --base_dir")


@pytest.mark.parametrize("script", [train, attack])
def test_a_label_or_base_dir_too_long_for_a_file_name_is_refused_first(script, cifar10_dir, label_dir, tmp_path,
                                                                       capsys):
    """A --label of 226 to 243 bytes has a label file, but not a best checkpoint (label +
    '_seed3_resnet32_best_model.pth', over the 255 bytes of a file name); a --base_dir folder of
    over 255 bytes is none. train.py said 'cannot use .../..._best_model.pth (or .../results.json):
    File name too long' once the data had loaded, and left the folders it had made; attack.py said
    the same of the checkpoint. Now each is refused first, naming the flag, and nothing is made."""
    from utils.errors import call_cli
    label, folder = "x" * 230, "o" * 256
    shutil.copy(label_dir / "cifar10_glove.npy", tmp_path / f"cifar10_{label}.npy")

    def argv(base_dir, label="glove", labels=label_dir):  # flags both scripts take
        return [str(a) for a in ("--model", "resnet32", "--label", label, "--seed", 3, "--data_dir", cifar10_dir,
                                 "--label_dir", labels, "--base_dir", base_dir, "--device", "cpu")] + (
                                     ["--valid_size", "50", "--epochs", "1"] if script is train else [])
    assert call_cli(script.main, argv(tmp_path / "runs", label, tmp_path)) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"error: --label {label} is too long: its run's best checkpoint would have a name of 260 bytes, over "
        "the 255 a file name may have; use a label of at most 225 bytes")
    assert call_cli(script.main, argv(tmp_path / "runs" / folder)) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"error: --base_dir {tmp_path / 'runs' / folder}: its folder name {folder} is 256 bytes, over the 255 "
        "a file name may have")
    assert not (tmp_path / "runs").exists()


def test_naming_the_code_writes_nothing_in_its_checkout(tmp_path):
    """A run named its code with `git status`, which refreshed the checkout's stale .git/index in
    place (through .git/index.lock): a read-only shared install refused the write, and a writable
    one's own `git commit` running meanwhile failed on the lock."""
    if not shutil.which("git"):
        pytest.skip("no git")
    utils_checkout(tmp_path)
    index = tmp_path / ".git" / "index"
    os.utime(tmp_path / "utils" / "runs.py", ns=(0, 0))  # its stat no longer the index's: a stale index
    before = (index.read_bytes(), index.stat().st_mtime_ns)
    code = "import json; from utils.runs import code_version; print(json.dumps(code_version()))"
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(tmp_path), "PYTHONDONTWRITEBYTECODE": "1"})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["dirty"] is False
    assert (index.read_bytes(), index.stat().st_mtime_ns) == before


def test_a_result_records_its_thread_count(speech_run):
    """The same flags trained on 1 and 2 CPU threads ended 2.6 points of validation accuracy apart
    (2 epochs on the CIFAR-10 subset: rounding, amplified), and config.json did not say which."""
    from utils.runs import environment
    base, _ = speech_run
    config = json.loads((base / "cifar10" / "seed3" / "resnet32" / "model_speech" / "config.json").read_text())
    assert isinstance(config["environment"]["threads"], int) and config["environment"]["threads"] >= 1
    assert config["segments"][0]["environment"]["threads"] == config["environment"]["threads"]
    before = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            assert environment()["threads"] == threads
    finally:
        torch.set_num_threads(before)


def test_a_result_records_the_cpu_and_its_vector_instructions():
    """torch's CPU kernels round otherwise with other vector instructions: the same 2 resnet32
    epochs (category, seed 7, 250 images of the tests' tiny CIFAR-10) ended at 12% validation
    accuracy with AVX512 and 22% with AVX2 (ATEN_CPU_CAPABILITY=avx2, on one AMD EPYC), and with
    DEFAULT's a seed draws other initial weights; config.json named neither the CPU nor its
    instructions, and a resume on a node of another CPU went without a word."""
    from utils.runs import environment
    env = environment()
    assert env["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert env["cpu"] is None or isinstance(env["cpu"], str) and env["cpu"]
    script = "import json; from utils.runs import environment; print(json.dumps(environment()))"
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "ATEN_CPU_CAPABILITY": "default"})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["cpu_capability"] == "DEFAULT"
    cpu = {"device": "cpu", "world_size": 1, "compile": "off",
           "environment": {"threads": 2, "dtype": "float32", "cpu": "AMD EPYC", "cpu_capability": "AVX512"}}

    def on(device="cpu", **facts):
        return cpu | {"device": device, "environment": cpu["environment"] | facts}
    assert _rounding_changes([cpu, on(cpu_capability="AVX2")]) == ["cpu_capability AVX512 -> AVX2"]
    assert _rounding_changes([cpu, on(cpu="Intel Xeon")]) == ["cpu AMD EPYC -> Intel Xeon"]
    assert _rounding_changes([on(cpu=None, cpu_capability=None), cpu]) == []  # an older train.py's
    assert _rounding_changes([on("cuda", cpu="Intel Xeon"), on("cuda")]) == []  # a GPU run's: not its CPU's


def test_a_result_records_the_default_dtype_it_computed_in():
    """A run follows torch's default dtype (the model's weights, cifar.to_float's images): from a
    notebook that had set float64 for its own work, train.main trained 4x slower in float64, to other
    numbers (validation loss 45.234 against float32's 45.547 after one epoch on the CIFAR-10
    subset), and config.json, attack_results.json and a resume's warnings said nothing of it."""
    from utils.runs import environment
    assert environment()["dtype"] == "float32"
    try:
        torch.set_default_dtype(torch.float64)
        assert environment()["dtype"] == "float64"
    finally:
        torch.set_default_dtype(torch.float32)
    cpu = {"device": "cpu", "world_size": 1, "compile": "off", "environment": {"threads": 1, "dtype": "float32"}}
    resumed = cpu | {"environment": {"threads": 1, "dtype": "float64"}}
    assert _rounding_changes([cpu, resumed]) == ["dtype float32 -> float64"]
    assert _rounding_changes([cpu | {"environment": {"threads": 1}}, resumed]) == []  # an older train.py's


def test_a_result_records_the_float32_matmul_precision_it_computed_in():
    """A notebook's torch.set_float32_matmul_precision("medium") (for speed elsewhere) ran train.main's
    float32 matmuls in bf16 on a CPU (TF32 on a GPU with "high"): the same 2 resnet32 epochs (category,
    seed 7, the tests' tiny CIFAR-10) ended at 22% validation accuracy, not 12%, and config.json
    said float32 and nothing else; a resume under another precision went without a word."""
    from utils.runs import environment
    before = torch.get_float32_matmul_precision()
    assert environment()["matmul_precision"] == before == "highest"  # torch's default
    try:
        torch.set_float32_matmul_precision("medium")
        assert environment()["matmul_precision"] == "medium"
    finally:
        torch.set_float32_matmul_precision(before)
    cpu = {"device": "cpu", "world_size": 1, "compile": "off",
           "environment": {"threads": 1, "dtype": "float32", "matmul_precision": "highest"}}
    resumed = cpu | {"environment": cpu["environment"] | {"matmul_precision": "medium"}}
    assert _rounding_changes([cpu, resumed]) == ["matmul_precision highest -> medium"]
    assert _rounding_changes([cpu | {"environment": {"threads": 1}}, resumed]) == []  # an older train.py's


@pytest.mark.parametrize("script", ["train", "attack"])
def test_shared_flags_parse_alike(script):
    """Both scripts find a run's directory from the same flags with the same defaults."""
    import importlib
    parser = importlib.import_module(script).build_parser()
    args = parser.parse_args(["--level", "8.0", "--seed", "7"])
    assert args.level == 8 and type(args.level) is int  # the directory is level8, not level8.0
    assert parser.parse_args(["--level", "12.5"]).level == 12.5
    assert args.seed == 7
    if script == "train":
        assert args.base_dir == "./outputs"
    else:  # unset, so that a --base_dir given with --checkpoint is told from none; the flags find the run in train.py's
        import attack
        assert args.base_dir is None and attack.flags_base_dir(args) == str(Path("outputs").resolve())
    if script == "train":
        assert args.label_dir.endswith("labels/label_files") and args.data_dir == "./data"
    else:  # attack.py: the run's own
        assert args.label_dir is None and args.data_dir is None
    if script == "train":
        assert (args.dataset, args.label_granularity, args.label_noise) == ("cifar10", "fine", 0.0)
    else:  # unset, so that --checkpoint can take its run's; else train.py's
        assert (args.dataset, args.label_granularity, args.label_noise, args.smoothing) == (None,) * 4
        import attack
        import train
        trained = train.build_parser().parse_args([])
        assert dict(attack.RUN_FLAGS) == {f: getattr(trained, f) for f, _ in attack.RUN_FLAGS}


@pytest.mark.parametrize("script, argv", [
    ("train", flags("data", "runs", "labels", label="mcr2", warmup_epochs="2.5", compile=True, level="12.5")),
    ("attack", ["--epsilons", "8/255", "0.03", "--attacks", "fgsm", "pgd", "--step_size", "1/255", "--num_images",
                "5", "--checkpoint", "~/run/best.pth"]),
])
def test_a_parsed_namespace_is_read_again_as_it_is(script, argv):
    """`as_parsed`, which attack.run and run_training read a caller's namespace through, leaves
    what the command line made as it is: its defaults (None, a list, a path string) and parsed values."""
    import importlib
    parser = importlib.import_module(script).build_parser()
    for args in (parser.parse_args([]), parser.parse_args(argv)):
        assert vars(as_parsed(parser, args)) == vars(args)


def test_a_notebooks_values_are_read_as_their_text():
    """A notebook's values of the parsed kind pass; a string is read as the command line reads it
    (a string eps was a traceback in attack.run: 'too many values to unpack')."""
    parser = attack.build_parser()
    args = parser.parse_args([])
    args.base_dir, args.num_images, args.step_size = Path("~/runs"), np.int64(5), 0.01
    args.epsilons, args.attacks = ["8/255", ("2/255", 2 / 255), 0.5], "fgsm"
    parsed = as_parsed(parser, args)
    assert parsed.base_dir == os.path.expanduser("~/runs") and parsed.num_images == 5 and parsed.step_size == 0.01
    assert parsed.epsilons == [("8/255", 8 / 255), ("2/255", 2 / 255), ("0.5", 0.5)] and parsed.attacks == ["fgsm"]
    assert args.base_dir == Path("~/runs") and args.attacks == "fgsm"  # the caller's namespace as it was


def test_a_notebooks_switch_must_be_true_or_false(cifar10_dir, label_dir, tmp_path, monkeypatch):
    """A switch given another value through Python was used for its truth: channels_last="False"
    trained channels-last and config.json recorded "False", force=1 recorded 1, amp="no" was a
    TypeError traceback after config.json was written. It is a one-line error naming the flag,
    before anything is written; True and False pass as they are."""
    from utils.training import run_training
    monkeypatch.chdir(tmp_path)
    args = train.build_parser().parse_args(flags(cifar10_dir, tmp_path / "runs", label_dir, epochs=1))
    for flag, value in (("amp", "no"), ("force", 1), ("channels_last", "False")):
        edited = argparse.Namespace(**vars(args) | {flag: value})
        with pytest.raises(UsageError) as raised:
            run_training(edited)
        assert str(raised.value) == (f"argument --{flag}: a switch takes True or False, not {value!r} (see train.py "
                                     "--help)")
    assert list(tmp_path.iterdir()) == []
    attack_args = attack.build_parser().parse_args([])
    attack_args.paper_protocol = "yes"
    with pytest.raises(UsageError, match=r"^argument --paper_protocol: a switch takes True or False, not 'yes' "
                                         r"\(see attack.py --help\)$"):
        attack.run(attack_args)
    parser = train.build_parser()
    assert as_parsed(parser, argparse.Namespace(**vars(args) | {"amp": True, "force": None})).amp is True


def test_a_notebooks_numpy_bool_is_a_switchs_true_or_false():
    """A switch's np.True_ (a pandas row of a sweep table driving run_training) was refused, 'a
    switch takes True or False, not np.True_'. numpy's True and False pass as Python's, which
    config.json records (json cannot write numpy's); numbers stay refused, numpy's too."""
    parser = train.build_parser()
    args = parser.parse_args(["--epochs", "1"])
    parsed = as_parsed(parser, argparse.Namespace(**vars(args) | {"amp": np.True_, "force": np.False_}))
    assert (parsed.amp, parsed.force) == (True, False) and type(parsed.amp) is type(parsed.force) is bool
    for value in (1, 0, np.int64(1), 1.0, np.array(True)):
        with pytest.raises(UsageError, match=r"^argument --amp: a switch takes True or False, not "):
            as_parsed(parser, argparse.Namespace(**vars(args) | {"amp": value}))


def test_a_notebooks_misspelt_attribute_is_refused_not_ignored(cifar10_dir, label_dir, tmp_path, monkeypatch):
    """An attribute of a notebook's namespace that no flag has was ignored: `args.epoch = 1` (for
    epochs) trained the default 600 epochs, `args.num_image = 100` attacked every test image. It is
    the command line's error for an unknown flag, naming the one meant, before anything is written."""
    from utils.training import run_training
    monkeypatch.chdir(tmp_path)
    args = train.build_parser().parse_args(flags(cifar10_dir, tmp_path / "runs", label_dir, label="category", epochs=1))
    args.epoch = 1
    with pytest.raises(UsageError) as raised:
        run_training(args)
    assert str(raised.value) == ("unrecognized attribute 'epoch' (no train.py flag reads it); did you mean 'epochs'? "
                                 "(see train.py --help)")
    assert list(tmp_path.iterdir()) == []
    args = attack.build_parser().parse_args([])
    args.num_image, args.colour = 100, "red"
    with pytest.raises(UsageError) as raised:
        attack.run(args)
    assert str(raised.value) == ("unrecognized attributes 'num_image', 'colour' (no attack.py flag reads them); did "
                                 "you mean 'num_images'? (see attack.py --help)")


@pytest.mark.parametrize("flag, value, cli", [
    ("batch_size", 0, "0"),  # a traceback after config.json: range() arg 3 must not be zero
    ("epochs", 2.5, "2.5"),  # a traceback: 'float' object cannot be interpreted as an integer
    ("lr", float("nan"), "nan"),  # trained, silently, to NaN losses
    ("model", "resnet18", "resnet18"),  # refused, in other words than the command line's
    ("base_dir", "", ""),  # trained into the current folder
])
def test_run_training_reads_a_notebooks_values_as_the_command_line(flag, value, cli, capsys, monkeypatch,
                                                                   cifar10_dir, label_dir, tmp_path):
    """run_training(args) from a notebook refuses a value the command line refuses, with its line,
    before anything is written."""
    from utils.training import run_training
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    argv = flags(cifar10_dir, work / "runs", label_dir, label="category", epochs=1)
    args = train.label_defaults(train.build_parser().parse_args(argv))
    setattr(args, flag, value)
    with pytest.raises(UsageError) as raised:
        run_training(args)
    argv = [*argv, f"--{flag}", cli]  # the last of a flag given twice wins
    assert run_cli_capture(capsys, argv) == f"error: {raised.value}"
    if flag == "batch_size":
        assert str(raised.value) == "argument --batch_size: 0 must be at least 2 (see train.py --help)"
    assert list(work.iterdir()) == []


def test_the_seed_alone_draws_the_initial_weights(tiny):
    """--seed seeds the initialisation: the same seed draws the same weights, another seed others,
    and another label (another head) the same trunk."""
    from utils.training import _seeded_model

    def drawn(seed, shape):
        args = types.SimpleNamespace(seed=seed, model="resnet32", channels_last=False)
        return _seeded_model(args, shape, tiny.info, torch.device("cpu")).state_dict()
    first, again, other, speech = drawn(3, (10,)), drawn(3, (10,)), drawn(4, (10,)), drawn(3, (10, 64, 64))
    assert all(torch.equal(first[k], again[k]) for k in first)
    convs = [k for k in first if k.endswith("conv1.weight")]
    assert convs and not any(torch.equal(first[k], other[k]) for k in convs)
    trunk = [k for k in first if k.startswith("trunk.")]
    assert trunk and all(torch.equal(first[k], speech[k]) for k in trunk)


def test_the_best_epoch_breaks_accuracy_ties_by_loss():
    """As the paper's train.py: an epoch with the best epoch's validation accuracy and a lower
    validation loss becomes the best (the first of the tied epochs was kept)."""
    from utils.training import is_better
    history = [{"valid_acc": 0.12, "valid_loss": 82.99}]
    best = {"valid_acc": 0.12, "epoch": 1}
    assert is_better({"acc": 0.12, "loss": 12.55}, best, history)
    assert not is_better({"acc": 0.12, "loss": 90.0}, best, history)
    assert not is_better({"acc": 0.12, "loss": 82.99}, best, history)  # a full tie keeps the earlier epoch
    assert not is_better({"acc": 0.11, "loss": 1.0}, best, history)
    assert is_better({"acc": 0.13, "loss": 99.0}, best, history)
    assert not is_better({"acc": 0.12, "loss": float("nan")}, best, history)
    # diverged: NaN outputs decode as class 0 (its share, 0.102 of the subset's validation images at
    # seed 1, beat a finite epoch's 0.091), and attack.py refuses NaN weights
    assert not is_better({"acc": 0.13, "loss": float("nan")}, best, history)
    assert is_better({"acc": 0.1, "loss": float("nan")}, {"valid_acc": -1.0, "epoch": -1}, [])
    assert is_better({"acc": None, "loss": None}, best, history)  # no validation: the last epoch
    assert is_better({"acc": 0.0, "loss": 5.0}, {"valid_acc": -1.0, "epoch": -1}, [])


def test_unset_flags_train_the_readmes_recipe():
    """A run without flags is the README's split and recipe: 5000 validation images, every other
    training image, 600 epochs, batch 128 and lr 0.1 (batch 1000 and lr 0.01 for mcr2), seed 0,
    no smoothing or label noise. A default changed here changes every study that relies on it."""
    args = train.label_defaults(train.build_parser().parse_args([]))
    assert {k: vars(args)[k] for k in ("valid_size", "level", "epochs", "batch_size", "lr", "warmup_epochs",
                                       "seed", "smoothing", "label_noise", "model", "label")} == {
        "valid_size": 5000, "level": 100, "epochs": 600, "batch_size": 128, "lr": 0.1, "warmup_epochs": 0,
        "seed": 0, "smoothing": 0.0, "label_noise": 0.0, "model": "resnet32", "label": "category"}
    mcr2 = train.label_defaults(train.build_parser().parse_args(["--label", "mcr2"]))
    assert (mcr2.batch_size, mcr2.lr) == (1000, 0.01)


def test_lr_schedule_with_warmup():
    from utils.training import lr_at
    # The paper's steps (no warm-up): 0.1 until epoch 300, 0.01 until 450, then 0.001.
    # exactly: metrics.jsonl and the progress lines logged 0.1 * 0.1 as lr 0.010000000000000002
    assert [lr_at(e, 600, 0.1) for e in (0, 299, 300, 449, 450, 599)] == [0.1, 0.1, 0.01, 0.01, 0.001, 0.001]
    # Two warm-up epochs of four steps: base_lr / 8, 2 / 8, ... up to base_lr at the end of epoch 2.
    steps = [lr_at(epoch, 600, 0.4, 2, k / 4) for epoch in (0, 1) for k in (1, 2, 3, 4)]
    assert steps == pytest.approx([0.05 * k for k in range(1, 9)])
    assert lr_at(2, 600, 0.4, 2, 0.25) == lr_at(299, 600, 0.4, 2) == 0.4  # warmed up
    assert lr_at(300, 600, 0.4, 2) == pytest.approx(0.04)
    # Epoch counts not divisible by 4 drop at the first epoch at or past 50% and 75%: for the
    # README's 30-epoch runs, epochs 15 and 23 (0-based).
    assert [lr_at(e, 30, 0.1) for e in (14, 15, 22, 23)] == pytest.approx([0.1, 0.01, 0.01, 0.001])
    # an odd count rounds the 50% drop up alike: of 25 epochs, 0-12 at the base lr, drops at 13 and 19
    assert [lr_at(e, 25, 0.1) for e in (12, 13, 18, 19)] == pytest.approx([0.1, 0.01, 0.01, 0.001])


def test_warmup_sets_every_steps_lr(tiny):
    from architecture import build_model
    from utils.labelspace import CategorySpace
    from utils.training import TrainStep, train_epoch
    images, labels = tiny.train_images[:250], tiny.train_labels[:250]

    def train(lr):
        torch.manual_seed(0)
        model, space = build_model("resnet32", (10,)), CategorySpace(10)
        step = TrainStep(model, space, 0.1)
        train_epoch(step, images, labels, 64, torch.Generator().manual_seed(0), lr)
        return flat(model.parameters()), step.optimizer

    asked = []
    warm, optimizer = train(lambda done: asked.append(done) or 0.1 * done)
    assert asked == [0.25, 0.5, 0.75, 1.0]  # 250 images in batches of 64: four steps
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1)
    constant, _ = train(lambda done: 0.1)
    assert torch.equal(constant, train(None)[0])  # the lr given is the lr used
    assert not torch.allclose(warm, constant)


def test_a_train_step_is_the_papers_sgd_on_the_batchs_mean_loss(tiny):
    """A TrainStep against SGD by hand on the mean loss of the augmented batch: weight decay 1e-4 on
    every parameter (here 0.1% of the first update), then momentum 0.9, not Nesterov's, seen in a
    second step whose loss is scaled to 0 (its update is the momentum and the decay alone)."""
    import copy
    from architecture import build_model
    from cifar import crop_and_flip, draw_augmentation
    from utils.labelspace import CategorySpace
    from utils.training import TrainStep
    torch.manual_seed(0)
    model, space, lr = build_model("resnet32", (10,)).train(), CategorySpace(10), 0.1
    reference = copy.deepcopy(model)
    batch, labels = tiny.train_images[:16], tiny.train_labels[:16]
    offsets, flips = draw_augmentation(16, torch.Generator().manual_seed(0), "cpu")
    loss = space.loss(reference(crop_and_flip(batch, offsets, flips)), labels).mean()
    weights = flat(reference.parameters())
    buffer = flat(torch.autograd.grad(loss, list(reference.parameters()))) + 1e-4 * weights
    step = TrainStep(model, space, lr)
    loss_sum, _ = step(batch, offsets, flips, labels, 1 / 16)
    assert loss_sum.item() == pytest.approx(16 * loss.item(), rel=1e-6)
    moved = flat(model.parameters()) - weights
    assert (moved + lr * buffer).norm() < 1e-5 * moved.norm()
    weights = flat(model.parameters())
    step(batch, offsets, flips, labels, 0.0)
    expected = -lr * (0.9 * buffer + 1e-4 * weights)
    assert (flat(model.parameters()) - weights - expected).norm() < 1e-5 * expected.norm()


def test_a_train_step_trains_under_a_callers_no_grad(tiny):
    """A notebook that turned gradients off for its own analyses (torch.set_grad_enabled(False))
    and then called train.main got a traceback from the first step ('element 0 of tensors does not
    require grad'); the attacks already turned them on for themselves."""
    from architecture import build_model
    from cifar import draw_augmentation
    from utils.labelspace import CategorySpace
    from utils.training import TrainStep
    torch.manual_seed(0)
    model = build_model("resnet32", (10,)).train()
    weights = flat(model.parameters())
    offsets, flips = draw_augmentation(8, torch.Generator().manual_seed(0), "cpu")
    with torch.no_grad():
        loss_sum, _ = TrainStep(model, CategorySpace(10), 0.1)(tiny.train_images[:8], offsets, flips,
                                                               tiny.train_labels[:8], 1 / 8)
        assert not torch.is_grad_enabled()  # the caller's mode again
    assert loss_sum.item() > 0 and not torch.equal(flat(model.parameters()), weights)


def test_an_epoch_trains_in_train_mode_and_drops_a_trailing_single_image(tiny):
    """train_epoch puts a model evaluate() left in eval mode back to training (batch statistics,
    running averages updated), and skips a last batch of one image, on which the decoder head's
    batch norm cannot train: 9 images in batches of 4 train on 8."""
    from architecture import build_model
    from utils.labelspace import TargetSpace
    from utils.training import TrainStep, train_epoch
    torch.manual_seed(0)
    space = TargetSpace("t", torch.randn(10, 16, 16))
    model = build_model("resnet32", space.output_shape).eval()
    running = model.trunk.layers[1].running_mean.clone()
    result = train_epoch(TrainStep(model, space, 0.01), tiny.train_images[:9], tiny.train_labels[:9], 4,
                         torch.Generator().manual_seed(0))
    assert result["images"] == 8
    assert not torch.equal(model.trunk.layers[1].running_mean, running)


def test_every_step_follows_the_mean_loss_of_its_own_batch(tiny):
    """train_epoch scales each step's loss sum by 1 / its batch's size: a trailing batch smaller
    than --batch_size (10 images in batches of 4: 4, 4, 2) is a mean too, not a sum / 4."""
    from utils.training import train_epoch

    class Recorder:
        def __init__(self):
            self.model, self.seen = torch.nn.Identity(), []

        def __call__(self, batch, offsets, flips, labels, scale):
            self.seen.append((len(batch), scale))
            return torch.zeros(2)
    step = Recorder()
    train_epoch(step, tiny.train_images[:10], tiny.train_labels[:10], 4, torch.Generator().manual_seed(0))
    assert step.seen == [(4, 1 / 4), (4, 1 / 4), (2, 1 / 2)]


def test_an_epochs_order_and_augmentation_come_from_its_generator_alone(tiny):
    """train_epoch draws its shuffle, crops and flips from the generator it is given (the run's,
    seeded by --seed and the epoch), not from torch's global one: the same generator gives the same
    batches whatever the global state (a resumed run's epochs are the uninterrupted run's), and
    another seed other batches. An order of range(N), unshuffled, trained every epoch alike."""
    from utils.training import train_epoch

    class Recorder:
        def __init__(self):
            self.model, self.seen = torch.nn.Identity(), []

        def __call__(self, batch, offsets, flips, labels, scale):
            self.seen.append((labels.clone(), offsets.clone(), flips.clone()))
            return torch.zeros(2)

    def epoch(seed, global_seed):
        torch.manual_seed(global_seed)
        step = Recorder()
        train_epoch(step, tiny.train_images[:64], torch.arange(64), 16, torch.Generator().manual_seed(seed))
        return [torch.cat(drawn, -1) for drawn in zip(*step.seen)]  # labels (64,), offsets (2, 64), flips
    first, again, other = epoch(0, 0), epoch(0, 1), epoch(1, 0)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert sorted(first[0].tolist()) == list(range(64)) and not torch.equal(first[0], torch.arange(64))
    assert not any(torch.equal(a, b) for a, b in zip(first, other))


def test_a_noisy_run_trains_on_the_noisy_labels(cifar10_dir, label_dir, tmp_path, monkeypatch):
    """--label_noise changes the labels the training steps see: label_noise's of the run's split and
    --seed (config.json's label_noise_changed alone would not show it)."""
    from cifar import label_noise, load_cifar, split_indices
    from utils import training
    real, seen = training.train_epoch, []

    def recorded(step, images, labels, *args, **kwargs):
        seen.append(labels.clone())
        return real(step, images, labels, *args, **kwargs)
    monkeypatch.setattr(training, "train_epoch", recorded)
    train.main(flags(cifar10_dir, tmp_path, label_dir, label="category", epochs=1, level=10, label_noise=0.5))
    data = load_cifar("cifar10", cifar10_dir)
    split = split_indices(len(data.train_labels), seed=3, valid_size=50, level=10, num_classes=10)
    clean = data.train_labels[split.train]
    assert len(seen) == 1 and int((seen[0] != clean).sum()) == 15  # round(0.5 x 30)
    assert torch.equal(seen[0], label_noise(clean, 0.5, 10, seed=3))


def test_a_run_lets_the_whole_training_set_go_once_split(cifar10_dir, label_dir, tmp_path, monkeypatch):
    """run_training kept load_cifar's training images to the end beside its split's copies of them:
    on a full CIFAR-10, 150 MB held twice on a CPU (resident memory at the first epoch 1065 MB,
    now 919), and on the host beside a GPU's copies. The epochs train on the split's copies alone."""
    import gc
    import weakref

    from cifar import load_cifar
    from utils import training
    loaded, real = [], training._train_epochs

    def load(*args, **kwargs):
        data = load_cifar(*args, **kwargs)
        loaded.append(weakref.ref(data.train_images))
        return data

    def train_epochs(*args, **kwargs):
        gc.collect()
        held = loaded[0]() is not None
        assert not held, "the whole training set is still held as the epochs train"
        return real(*args, **kwargs)
    monkeypatch.setattr(training, "load_cifar", load)
    monkeypatch.setattr(training, "_train_epochs", train_epochs)
    results = train.main(flags(cifar10_dir, tmp_path, label_dir, label="category", epochs=1, level=10))
    assert len(loaded) == 1 and results["train_images"] == 30 and results["test_images"] == 100


def test_evaluation_is_per_image_in_eval_mode_and_leaves_the_model_as_it_was():
    """evaluate() and predict() use the running statistics (an image's output does not depend on
    the batch it is in) and change no weight or running average, also for a model left training;
    the loss and accuracy are means over the images, whatever the batches."""
    from architecture import build_model
    from cifar import to_float
    from utils.labelspace import CategorySpace
    from utils.training import evaluate, predict
    torch.manual_seed(0)
    model, space = build_model("resnet32", (10,)).train(), CategorySpace(10)
    images, labels = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8), torch.arange(8)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    alone, together = predict(model.train(), images, batch_size=1), predict(model, images, batch_size=8)
    assert torch.allclose(alone, together, atol=1e-5)
    result = evaluate(model.train(), space, images, labels, batch_size=3)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    with torch.no_grad():
        outputs = model.eval()(to_float(images))
    assert result["loss"] == pytest.approx(space.loss(outputs, labels).mean().item(), rel=1e-5)
    assert result["acc"] == (space.decode(outputs) == labels).float().mean().item()


@pytest.mark.parametrize("space", ["category", "targets"])
def test_evaluation_counts_the_decoded_classes_of_each_true_class(space):
    """evaluate(confusion=True): row the true class, column the class decoded (`space.decode`),
    counted over every batch; it sums to the images and its trace over them is the accuracy,
    exactly. Off by default (each epoch's validation), and None, as the accuracy, for no image."""
    from utils.labelspace import CategorySpace, TargetSpace
    from utils.training import evaluate
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2])
    decoded = torch.tensor([0, 0, 1, 1, 2, 2, 2, 0, 2])
    targets = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]])
    space = CategorySpace(3) if space == "category" else TargetSpace("points", targets.numpy())
    outputs = torch.eye(3)[decoded] if isinstance(space, CategorySpace) else targets[decoded] + 0.01
    model = torch.nn.Linear(1, 1)  # where the outputs are scored, and in what dtype
    images = torch.zeros(9, 3, 32, 32, dtype=torch.uint8)
    result = evaluate(model, space, images, labels, batch_size=4, outputs=outputs, confusion=True)
    assert result["confusion"].dtype == torch.int64
    assert result["confusion"].tolist() == [[2, 1, 0], [0, 1, 1], [1, 0, 3]]
    assert result["acc"] == 6 / 9 == result["confusion"].trace().item() / result["confusion"].sum().item()
    assert "confusion" not in evaluate(model, space, images, labels, outputs=outputs)
    assert evaluate(model, space, images[:0], labels[:0], outputs=outputs[:0], confusion=True) == {
        "loss": None, "acc": None, "confusion": None}


def test_confusion_counts_of_uint8_labels_stay_in_their_rows():
    """Labels as uint8 (a notebook's own, which cross-entropy takes): the cell index true x C +
    decoded was computed in uint8 and wrapped past 255, so CIFAR-100's images of class 3 were
    counted in rows 0 to 39 (trace/N 0.03 beside an accuracy of 1.0). Each is in its own row."""
    from utils.labelspace import CategorySpace
    from utils.training import evaluate
    labels = torch.arange(100).repeat(2)
    outputs = torch.eye(100)[labels]  # every image decoded as its class
    images = torch.zeros(200, 3, 32, 32, dtype=torch.uint8)
    result = evaluate(torch.nn.Linear(1, 1), CategorySpace(100), images, labels.to(torch.uint8), outputs=outputs,
                      confusion=True)
    assert result["acc"] == 1.0
    assert torch.equal(result["confusion"], 2 * torch.eye(100, dtype=torch.int64))


def test_a_run_writes_the_confusion_matrices_of_its_best_checkpoint(speech_run, cifar10_dir):
    """confusion.json, beside results.json: the dataset's class names in class-id order, and the
    test and validation counts, a row for each true class, whose traces give results.json's
    accuracies."""
    from cifar import load_cifar, split_indices
    base, proc = speech_run
    result = last_json(proc)
    run_dir = Path(result["run_dir"])
    confusion = json.loads((run_dir / CONFUSION).read_text())
    data = load_cifar("cifar10", cifar10_dir)
    assert confusion["classes"] == data.class_names == [
        "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    valid = data.train_labels[split_indices(len(data.train_labels), 3, 50, num_classes=10).valid]
    for split, labels in (("test", data.test_labels), ("valid", valid)):
        counts = np.array(confusion[split])
        assert counts.shape == (10, 10) and counts.dtype == np.int64
        assert counts.sum(1).tolist() == np.bincount(labels.numpy(), minlength=10).tolist()  # rows: true classes
        assert counts.trace() / counts.sum() == result[f"{split}_acc"]
    assert counts.sum() == 50 and np.array(confusion["test"]).sum() == result["test_images"] == 100
    assert (run_dir / CONFUSION).stat().st_mtime_ns <= (run_dir / RESULTS).stat().st_mtime_ns
    assert set(json.loads(proc.stdout.splitlines()[-1])) == set(json.loads((run_dir / RESULTS).read_text()))


def test_a_finished_run_without_confusion_json_is_still_finished(speech_run, capsys, cifar10_dir, label_dir,
                                                                 tmp_path):
    """A run finished by a labelrep before confusion.json: train.py prints its results again (and
    computes nothing), a sweep skips it as done, and report.py counts it complete, in its tables,
    and out of class_accuracy.csv alone, saying why."""
    base, run_dir = finished_copy(speech_run, tmp_path)
    (run_dir / CONFUSION).unlink()

    def files():  # the run lock's file is touched by each job: not the run's
        return {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir() if p.name != ".lock"}
    before = files()
    assert train.main(flags(cifar10_dir, base, label_dir)) == last_json(speech_run[1]) | {
        "run_dir": str(run_dir), "checkpoint": str(run_dir / "speech_seed3_resnet32_best_model.pth")}
    assert "run already complete" in capsys.readouterr().err
    assert files() == before  # nothing computed again: no confusion.json made
    ns = sweep.Scripts.find()["train"].parse(flags(cifar10_dir, base, label_dir))
    assert train_state(run_dir, ns)[0]
    summary = report.report(base, tmp_path / "report", draw=False)
    assert summary["incomplete"] == [] and summary["clean_accuracy"][0]["n"] == 1
    assert summary["class_accuracy"] == [] and "class_accuracy.csv" not in summary["files"]
    assert summary["class_accuracy_unmeasured"] == [{
        "run": "cifar10/resnet32/speech/level100/seed3", "run_dir": "cifar10/seed3/resnet32/model_speech",
        "reason": "no confusion.json (trained by a labelrep before train.py wrote one)"}]


def test_warmup_run_records_its_lrs(cifar10_dir, label_dir, tmp_path):
    args = flags(cifar10_dir, tmp_path, label_dir, label="category", epochs=4, warmup_epochs=2)
    result = last_json(run_script("train.py", *args))
    run_dir = Path(result["run_dir"])
    # The lr at each epoch's last step: warm-up to 0.1 over two epochs, then the paper's drops at
    # 50% and 75% of the epochs.
    assert [r["lr"] for r in metrics(run_dir)] == pytest.approx([0.05, 0.1, 0.01, 0.001])
    # the lr the last epoch stepped with, not only the one its row records
    optimizer = torch.load(run_dir / LAST_CHECKPOINT, weights_only=True)["optimizer"]
    assert optimizer["param_groups"][0]["lr"] == pytest.approx(0.001)
    assert json.loads((run_dir / "config.json").read_text())["flags"]["warmup_epochs"] == 2


def run_cli_capture(capsys, argv):
    with pytest.raises(SystemExit) as exit_info:
        run_cli(train.main, argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@pytest.mark.parametrize("change, message", [
    ({"model": "resnet18"}, "invalid choice: 'resnet18'"),
    ({"compile": "fastest"}, "argument --compile: invalid choice: 'fastest'"),
    ({"dataset": "mnist"}, "invalid choice: 'mnist'"),
    ({"label": "nosuch"}, "no label file"),
    ({"level": "90"}, "--level 90 asks for 270 training images, but only 250"),
    ({"level": "0"}, "argument --level: 0 must be positive"),
    ({"level": "150"}, "argument --level: 150 must be at most 100"),
    ({"label_noise": "1.5"}, "argument --label_noise: 1.5 must be at most 1"),
    ({"label_noise": "-0.5"}, "argument --label_noise: -0.5 must be at least 0"),
    # trained into model_speech_noise0.123456, another rate's directory (which --force would empty)
    ({"label_noise": "0.1234561"}, "argument --label_noise: 0.1234561 has more digits than a run "
     "directory's name keeps (model_{label}_noise0.123456); give at most 6 significant digits"),
    # said what was wrong, not which --valid_size would do (the README's default 5000 on a small copy)
    ({"valid_size": "400"}, "--valid_size 400 leaves no training images: the dataset has 300; pass a "
     "--valid_size of at most 290"),
    ({"valid_size": "299"}, "--valid_size 299 leaves 1 training image for 10 classes; a run needs at least "
     "10, one per class: pass a --valid_size of at most 290"),
    # trained on 4 or 5 images, so that 5 or more of the 10 classes had none to learn from; a
    # data-efficiency table listed its accuracy among the others' (a fraction of 1 meant as 100%
    # is --level 1, which leaves 50 of CIFAR-100's 50000 images for its 100 classes)
    ({"valid_size": "295"}, "--valid_size 295 leaves 5 training images for 10 classes; a run needs at least "
     "10, one per class: pass a --valid_size of at most 290"),
    ({"level": "1.5"}, "--level 1.5 leaves 4 training images for 10 classes; a run needs at least 10, one "
     "per class: pass a --level of at least 3.34"),
    ({"dataset": "cifar100", "label": "category", "level": "20"}, "--level 20 leaves 60 training images for "
     "100 classes; a run needs at least 100, one per class: pass a --level of at least 33.34"),
    ({"batch_size": "1"}, "argument --batch_size: 1 must be at least 2"),
    ({"epochs": "0"}, "argument --epochs: 0 must be positive"),
    ({"lr": "-0.1"}, "argument --lr: -0.1 must be positive"),
    ({"warmup_epochs": "-1"}, "argument --warmup_epochs: -1 must be at least 0"),
    ({"batch_size": "x"}, "argument --batch_size: 'x' is not an int"),
    ({"label": "glove", "dataset": "cifar100"}, "has 10 class targets, but the dataset has 100"),
    ({"label": "glove", "dataset": "cifar100", "label_granularity": "coarse"},  # says how to go on
     "has 10 class targets, but the dataset has 20 classes; a --label_granularity coarse run needs a "
     "file of its own: make one with python -m labels.generate --dataset cifar100 --label_granularity "
     "coarse --label glove --out DIR, then pass --label_dir DIR"),
    ({"label_granularity": "coarse"}, "cifar10 has no 'coarse' labels; choose from fine"),
    ({"device": "tpu"}, "argument --device: invalid choice: 'tpu'"),
    ({"seed": "-1"}, "argument --seed: -1 must be at least 0"),
    ({"seed": "4294967296"}, "argument --seed: 4294967296 must be at most 4294967295"),
    ({"label": "category", "smoothing": "0.95"}, "--smoothing 0.95 must lie in [0, 0.9] for 10 classes"),
    ({"label": "mcr2", "feature_dim": "0"}, "argument --feature_dim: 0 must be above 1"),
    # said "--n_components 30 must be below --feature_dim 1", and --n_components 0 "must be positive"
    ({"label": "mcr2", "feature_dim": "1", "n_components": "1"}, "argument --feature_dim: 1 must be above 1"),
    ({"label": "mcr2", "feature_dim": "10000000"}, "argument --feature_dim: 10000000 must be at most 8192"),
    ({"label": "mcr2", "gam1": "nan"}, "argument --gam1: nan is not a finite number"),  # was an SVD traceback
    ({"label": "mcr2", "gam2": "-1"}, "argument --gam2: -1 must be positive"),
    ({"label": "mcr2", "mcr2_eps": "inf"}, "argument --mcr2_eps: inf is not a finite number"),  # trained nothing
    # was "cannot use /dev/null/cifar10/seed3/resnet32/model_speech: Not a directory"
    ({"base_dir": "/dev/null"}, "cannot use /dev/null: a file, not a folder"),
    # an unset variable (--base_dir "$OUT") trained into the current folder
    ({"base_dir": ""}, "argument --base_dir: must not be empty (see train.py --help)"),
    ({"label_dir": ""}, "argument --label_dir: must not be empty"),
    # said "labels found for cifar10 in no_such_folder: category, mcr2", as if the folder were there
    # (named resolved, as every path a run prints)
    ({"label_dir": "no_such_folder"},
     f"for --label speech: --label_dir {Path.cwd().resolve() / 'no_such_folder'} does not exist"),
    # trained into level50, recorded as 50.00000000001; a rerun at 50 said "--level 50 (now 50)"
    ({"level": "50.00000000001"}, "argument --level: 50.00000000001 has more digits than a run directory's "
     "name keeps (level50); give at most 6 significant digits"),
    # trained into model_speech_noise0.2, which report.py read as speech with --label_noise 0.2
    ({"label": "speech_noise0.2"}, "argument --label: speech_noise0.2 ends like the run directory of a "
     "--label_noise run (model_{label}_noise{R})"),
    ({"label": "category_smooth0.1"}, "argument --label: category_smooth0.1 names the runs of --label "
     "category --smoothing S; pass those flags"),
    # trained into model_sub/x (a folder report.py skips) and model_ (an empty name)
    ({"label": "sub/x"}, "argument --label: 'sub/x' is not a label name"),
    # a label file's path, a likely first try with a file of one's own: the error said what a label
    # name is, not which one the file is
    ({"label": "mine/cifar10_speech.npy"}, "error: argument --label: 'mine/cifar10_speech.npy' is not a label "
     "name: it names the label file {dataset}_NAME.npy and the run directory model_NAME, so it must be "
     "non-empty and hold no /; that file is label speech with --label_dir mine (see train.py --help)"),
    ({"label": ""}, "argument --label: '' is not a label name"),
    # trained as model_-5, where argparse reads -5 as a value (-x as a flag: every hint naming it failed)
    ({"label": "-5"}, "error: argument --label: -5 starts with '-', which a command line takes for a flag"),
    # a notebook's argv, a grid file's "\\u0000": Python's "ValueError: embedded null byte" traceback
    ({"base_dir": "o\0ut"}, "error: argument --base_dir: 'o\\x00ut' holds a NUL character, which no file "
     "name can hold (see train.py --help)"),
    ({"data_dir": "d\0"}, "error: argument --data_dir: 'd\\x00' holds a NUL character"),
    ({"label": "a\0b"}, "error: argument --label: 'a\\x00b' holds a NUL character, which no file name can hold"),
])
def test_bad_flags_are_one_line(capsys, cifar10_dir, cifar100_dir, label_dir, tmp_path, change, message):
    args = flags(cifar10_dir, tmp_path, label_dir)
    if change.get("dataset") == "cifar100":
        np.save(tmp_path / "cifar100_glove.npy", np.random.rand(10, 50).astype(np.float32))
        args[args.index("--data_dir") + 1] = str(cifar100_dir)
        args[args.index("--label_dir") + 1] = str(tmp_path)
    for k, v in change.items():
        if f"--{k}" in args:
            args[args.index(f"--{k}") + 1] = v
        else:
            args += [f"--{k}", v]
    assert message in run_cli_capture(capsys, args)
    assert not list(tmp_path.glob("cifar10/**/results.json"))


@pytest.mark.parametrize("change, message", [
    ({"label": "category", "smoothing": "0.95"}, "error: --smoothing 0.95 must lie in [0, 0.9] for 10 classes"),
    ({"label": "mcr2", "feature_dim": "10"}, "error: --n_components 30 must be below --feature_dim 10"),
    ({"label": "nosuch"}, "error: no label file"),
    ({"label": "uniform_gap=2.0"}, "labels.generate writes this label as cifar10_uniform_gap=2.npy; pass "
     "--label uniform_gap=2"),
])
def test_label_flags_refused_before_the_data(capsys, label_dir, tmp_path, change, message):
    """A label flag or file train.py refuses is refused before the dataset is read: found by fuzzing
    train.py's flags with no --data_dir, these said "cifar10 not found in ..." (online: after a
    170 MB download) and only a rerun with the data said what was wrong."""
    args = flags(tmp_path / "no_data", tmp_path, label_dir, **change)
    assert message in run_cli_capture(capsys, args)
    assert not (tmp_path / "no_data").exists()


@pytest.mark.parametrize("save, message", [
    # a label of one's own saved the ways people get wrong: one number per class, another dataset's
    # class count, a text file under the .npy name
    (lambda path: np.save(path, np.arange(10.0)), "has shape (10,); expected [classes, ...] with one target per "
     "class (one number per class: save it as shape (10, 1))"),
    (lambda path: np.save(path, np.random.rand(100, 50)), "has 100 class targets, but the dataset has 10 classes; "
     "100 targets are one per cifar100 fine class: pass --dataset cifar100 to train on those, or a --label_dir "
     "holding cifar10's file of 10 targets"),
    (lambda path: path.write_text("0.1 0.2\n"), "is not a .npy file (no NumPy header); save one with numpy.save"),
])
def test_a_label_file_of_ones_own_saved_wrong_is_one_exact_line(capsys, tmp_path, save, message):
    labels = tmp_path / "labels"
    labels.mkdir()
    save(labels / "cifar10_mine.npy")
    line = run_cli_capture(capsys, flags(tmp_path / "no_data", tmp_path, labels, label="mine"))
    assert line == f"error: label file {labels / 'cifar10_mine.npy'} {message}"


@pytest.mark.parametrize("dataset, given, message", [
    ("cifar100", "cifar10", "has 10 class targets, but the dataset has 100 classes; 10 targets are one per "
     "cifar10 class: pass --dataset cifar10 to train on those, or a --label_dir holding cifar100's file of "
     "100 targets"),
    ("cifar10", "cifar100", "has 100 class targets, but the dataset has 10 classes; 100 targets are one per "
     "cifar100 fine class: pass --dataset cifar100 to train on those, or a --label_dir holding cifar10's file "
     "of 10 targets"),
])
def test_another_datasets_label_file_says_dataset_or_file_is_the_mix_up(capsys, tmp_path, label_dir, dataset,
                                                                        given, message):
    """A --label_dir holding the other dataset's targets under the run's name (a CIFAR-10 speech file
    in a CIFAR-100 run's folder) said only "has 10 class targets, but the dataset has 100 classes",
    not that --dataset or the file was the mix-up."""
    labels = tmp_path / "labels"
    labels.mkdir()
    shutil.copy(label_dir / f"{given}_speech.npy", labels / f"{dataset}_speech.npy")
    line = run_cli_capture(capsys, flags(tmp_path / "no_data", tmp_path, labels, dataset=dataset))
    assert line == f"error: label file {labels / f'{dataset}_speech.npy'} {message}"


def test_an_unusable_base_dir_in_process_is_the_command_lines_usage_error(capsys, cifar10_dir, label_dir,
                                                                          tmp_path):
    """main(argv) in a notebook raised "NotADirectoryError: [Errno 20] Not a directory:
    .../runs/cifar10/seed3/resnet32/model_speech" where the command line says one line; the README
    promises a UsageError for bad input."""
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    args = flags(cifar10_dir, a_file / "runs", label_dir)
    with pytest.raises(UsageError) as raised:
        train.main(args)
    assert str(raised.value) == f"cannot use {a_file}: a file, not a folder"
    assert isinstance(raised.value.__cause__, NotADirectoryError)  # the OSError, for a traceback
    assert run_cli_capture(capsys, args) == f"error: {raised.value}"


def test_compile_without_a_cxx_compiler_is_one_line(capsys, cifar10_dir, label_dir, tmp_path):
    from torch._inductor import config
    args = flags(cifar10_dir, tmp_path, label_dir) + ["--compile", "default", "--device", "cpu"]
    # torch's own patch: pytest 9.2's monkeypatch undoes it with a delattr, which hides cpp.cxx from
    # every later --compile in the process ("torch._inductor.config.cpp.cxx does not exist")
    with config.patch({"cpp.cxx": (str(tmp_path / "no-such-g++"),)}):
        assert "--compile on the CPU needs a C++ compiler" in run_cli_capture(capsys, args)
    assert not list(tmp_path.glob("cifar10/**/config.json"))  # refused before any work


def test_missing_and_truncated_dataset(capsys, cifar10_dir, label_dir, tmp_path):
    line = run_cli_capture(capsys, flags(tmp_path / "nowhere", tmp_path, label_dir))
    assert "cifar10 not found in" in line and "data_batch_1" in line
    broken = tmp_path / "broken"
    (broken / "cifar-10-batches-py").mkdir(parents=True)
    for f in (cifar10_dir / "cifar-10-batches-py").iterdir():
        data = f.read_bytes()
        (broken / "cifar-10-batches-py" / f.name).write_bytes(data[:len(data) // 2]
                                                               if f.name == "data_batch_3" else data)
    line = run_cli_capture(capsys, flags(broken, tmp_path, label_dir))
    assert "data_batch_3 is truncated or corrupt" in line


def test_a_data_dir_of_the_batches_themselves_or_a_file_is_one_line(capsys, cifar10_dir, label_dir, tmp_path):
    """The batches' own folder started a download of the archive into it; a file was 'File exists'
    (or, offline, "cifar10 not found in {file}/cifar-10-batches-py")."""
    batches = cifar10_dir / "cifar-10-batches-py"
    line = run_cli_capture(capsys, flags(batches, tmp_path, label_dir))
    assert line == (f"error: --data_dir {batches} holds the cifar10 files themselves; pass the folder that "
                    f"holds cifar-10-batches-py/ (--data_dir {cifar10_dir})")
    a_file = batches / "batches.meta"
    line = run_cli_capture(capsys, flags(a_file, tmp_path, label_dir))
    assert line == f"error: --data_dir {a_file} is a file, not a folder"
    assert sorted(p.name for p in batches.iterdir()) == sorted(  # nothing downloaded or unpacked there
        ["batches.meta", "test_batch"] + [f"data_batch_{i}" for i in range(1, 6)])
    assert not list(tmp_path.iterdir())


def test_a_data_dir_of_the_other_datasets_batches_is_one_line(capsys, cifar10_dir, cifar100_dir, label_dir,
                                                              tmp_path):
    """--dataset cifar100 --data_dir .../cifar-10-batches-py said only 'cifar100 not found in
    .../cifar-10-batches-py/cifar-100-python', and online started a download into CIFAR-10's folder."""
    batches = cifar10_dir / "cifar-10-batches-py"
    line = run_cli_capture(capsys, flags(batches, tmp_path, label_dir) + ["--dataset", "cifar100"])
    assert line == (f"error: --data_dir {batches} holds the cifar10 files, which --dataset cifar10 reads with "
                    f"--data_dir {cifar10_dir}; for cifar100 pass the folder that holds cifar-100-python/")
    assert sorted(p.name for p in batches.iterdir()) == sorted(
        ["batches.meta", "test_batch"] + [f"data_batch_{i}" for i in range(1, 6)])
    python = cifar100_dir / "cifar-100-python"
    line = run_cli_capture(capsys, flags(python, tmp_path, label_dir))
    assert line == (f"error: --data_dir {python} holds the cifar100 files, which --dataset cifar100 reads with "
                    f"--data_dir {cifar100_dir}; for cifar10 pass the folder that holds cifar-10-batches-py/")
    assert not list(tmp_path.iterdir())
    # batches in a folder of another name: its parent as --data_dir reads them only once it is renamed
    # (it named that parent alone, where cifar10 looks for cifar-10-batches-py/ and finds none)
    mine = tmp_path / "data" / "mycifar10"
    shutil.copytree(batches, mine)  # a copy: a link is named by its target, as the run records it
    line = run_cli_capture(capsys, flags(mine, tmp_path / "runs", label_dir) + ["--dataset", "cifar100"])
    assert line == (f"error: --data_dir {mine} holds the cifar10 files, which --dataset cifar10 reads with "
                    f"--data_dir {mine.parent}, once mycifar10/ is renamed cifar-10-batches-py/; for cifar100 "
                    "pass the folder that holds cifar-100-python/")
    line = run_cli_capture(capsys, flags(mine, tmp_path / "runs", label_dir))
    assert line == (f"error: --data_dir {mine} holds the cifar10 files themselves; pass the folder that holds "
                    f"cifar-10-batches-py/ (--data_dir {mine.parent}, once mycifar10/ is renamed "
                    "cifar-10-batches-py/)")
    assert [p.name for p in tmp_path.iterdir()] == ["data"]


def test_corrupt_checkpoint_on_resume_is_left_alone(capsys, cifar10_dir, label_dir, tmp_path):
    run_dir = tmp_path / "cifar10" / "seed3" / "resnet32" / "model_speech"
    run_dir.mkdir(parents=True)
    (run_dir / "last_checkpoint.pth").write_bytes(b"not a checkpoint")
    line = run_cli_capture(capsys, flags(cifar10_dir, tmp_path, label_dir, resume=True))
    assert "last_checkpoint.pth is corrupt" in line
    assert (run_dir / "last_checkpoint.pth").read_bytes() == b"not a checkpoint"
    line = run_cli_capture(capsys, flags(cifar10_dir, tmp_path, label_dir))
    assert "holds an unfinished run; pass --resume" in line


def momentum_buffer_of_shape_3(checkpoint):
    return {"optimizer": checkpoint["optimizer"] | {"state": {0: {"momentum_buffer": torch.zeros(3)}}}}


def rows_with(**values):
    return lambda checkpoint: {"history": [r | values for r in checkpoint["history"]]}


def best_model_of_another_form(checkpoint):
    return {"best": {"valid_acc": 0.1, "epoch": 1}, "best_model": {"head.weight": torch.zeros(3)},
            "best_space": checkpoint["label_space"]}


def best_of_no_validation_accuracy(checkpoint):
    """A run with validation images whose best epoch has none: a TypeError traceback once the next
    epoch's accuracy was compared with it."""
    return {"history": checkpoint["history"][:1], "best": {"valid_acc": None, "epoch": 1}}


@pytest.mark.parametrize("change, message", [
    ({"best": {}}, "holds best entries of another form"),
    ({"history": "abc"}, "holds history, best entries of another form"),  # trained an epoch, then failed
    ({"history": [1, 2]}, "holds history, best entries of another form"),
    ({"optimizer": None}, "holds optimizer entries of another form"),
    ({"config": {}}, "holds config entries of another form"),  # resumed with no flag checked
    ({"label_space": None}, "holds label_space entries of another form"),
    ({"model": {"head.weight": torch.zeros(3)}}, "holds entries train.py did not write (RuntimeError: "
                                                 "Error(s) in loading state_dict for LabelModel:"),
    ({"optimizer": {"state": {}, "param_groups": "x"}}, "holds entries train.py did not write"),
    # each of these was a traceback: in the first step, or after the last epoch (the run's totals)
    (momentum_buffer_of_shape_3, "(ValueError: a momentum buffer of torch.Size([3]) for a parameter of "
                                 "torch.Size([16, 3, 3, 3]))"),
    (rows_with(seconds="x"), "holds history, best entries of another form"),
    (rows_with(images_per_s=None), "holds history, best entries of another form"),
    ({"best": {"valid_acc": "x", "epoch": 2}}, "holds best entries of another form"),
    (best_of_no_validation_accuracy, "holds best entries of another form"),
    ({"config": {"flags": {}, "segments": "x"}}, "holds config entries of another form"),
    (best_model_of_another_form, "(ValueError: its best_model weights are not of the form of its model "
                                 "weights)"),
    # these went into the best checkpoint, for attack.py to refuse or to use
    ({"label_space": {"name": "category", "num_classes": 10}}, "(ValueError: its label space differs from "
                                                                "the run's in name, targets)"),
    ({"label_space": {"name": "speech", "num_classes": 10.0}}, "(ValueError: its label space 'speech' has "
                                                                "10.0 classes, not a name and a whole number"),
])
def test_a_last_checkpoint_of_another_form_is_one_line_and_changes_nothing(speech_run, capsys, cifar10_dir,
                                                                           label_dir, tmp_path, change, message):
    base, run_dir = finished_copy(speech_run, tmp_path)
    (run_dir / "results.json").unlink()
    path = run_dir / "last_checkpoint.pth"
    checkpoint = torch.load(path, weights_only=True)
    torch.save(checkpoint | (change(checkpoint) if callable(change) else change), path)
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    line = run_cli_capture(capsys, flags(cifar10_dir, base, label_dir, resume=True))
    assert line.startswith(f"error: checkpoint {path} holds entries" if "did not write" in message
                           or message.startswith("(") else f"error: {path} holds ") and message in line
    assert line.endswith("; pass --force to start the run over")  # deleted, it left the best: refused
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == before


@pytest.mark.parametrize("which", ["last_checkpoint.pth", "speech_seed3_resnet32_best_model.pth"])
@pytest.mark.parametrize("size", [0, 10, 5000, 60000, 0.5, -1])
def test_a_truncated_checkpoint_on_resume_says_so(speech_run, capsys, cifar10_dir, label_dir, tmp_path,
                                                  which, size):
    """Cut short at 4 KB to 68 KB, torch's reason was '[Errno 22] Invalid argument'; elsewhere
    'failed finding central directory'."""
    base, run_dir = finished_copy(speech_run, tmp_path)
    (run_dir / "results.json").unlink()
    with_best_epoch(run_dir, 1)  # of 2: the best checkpoint alone holds its weights
    path = run_dir / which
    whole = path.read_bytes()
    path.write_bytes(whole[:int(size * len(whole)) if isinstance(size, float) else size])
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    line = run_cli_capture(capsys, flags(cifar10_dir, base, label_dir, resume=True))
    reason = "not the zip archive torch.save writes" if size == 0 else \
        "truncated: the zip archive torch.save writes, cut short"
    assert line.startswith(f"error: checkpoint {path} is corrupt or not a labelrep checkpoint ({reason}); ")
    assert line.endswith("; pass --force to start the run over" if which == "last_checkpoint.pth"
                         else "cannot restore them: pass --force to train the run over")
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == before


@pytest.mark.parametrize("which", ["last_checkpoint.pth", "speech_seed3_resnet32_best_model.pth"])
def test_a_checkpoint_with_a_flipped_bit_on_resume_says_so(speech_run, capsys, cifar10_dir, label_dir, tmp_path,
                                                           which):
    """One bit flipped in a weight (a failing disk, a bad copy): torch.load gave other weights
    without a word, and the run resumed from them, or reported a test accuracy of weights it never
    trained."""
    import zipfile
    base, run_dir = finished_copy(speech_run, tmp_path)
    (run_dir / "results.json").unlink()
    with_best_epoch(run_dir, 1)
    path = run_dir / which
    whole = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        entry = max(archive.infolist(), key=lambda info: info.file_size)  # the largest weight
        start = whole.find(archive.read(entry))  # stored, not compressed: its bytes are in the file
    whole[start + entry.file_size // 2] ^= 0x04
    path.write_bytes(whole)
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    line = run_cli_capture(capsys, flags(cifar10_dir, base, label_dir, resume=True))
    assert line.startswith(f"error: checkpoint {path} is corrupt or not a labelrep checkpoint (its entry "
                           f"{entry.filename} does not match the checksum written with it); ")
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == before


@pytest.mark.parametrize("change, message", [
    # a traceback after the last epoch: the final evaluation loads them
    ({"model": {"head.weight": torch.zeros(3)}}, "is not the checkpoint of the run's best epoch"),
    ({"label_space": {"name": "speech", "num_classes": 10, "targets": torch.zeros(10, 64, 64)}},
     "holds entries train.py did not write (LabelError: its speech label space: class 1 has the same target "
     "as class 0"),
])
def test_a_best_checkpoint_of_another_form_on_resume_is_one_line(speech_run, capsys, cifar10_dir, label_dir,
                                                                 tmp_path, change, message):
    base, run_dir = finished_copy(speech_run, tmp_path)
    (run_dir / "results.json").unlink()
    with_best_epoch(run_dir, 1)
    path = run_dir / "speech_seed3_resnet32_best_model.pth"
    torch.save(torch.load(path, weights_only=True) | change | {"epoch": 1}, path)
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    line = run_cli_capture(capsys, flags(cifar10_dir, base, label_dir, resume=True))
    assert line.startswith(f"error: checkpoint {path} " if "did not write" in message else f"error: {path} ")
    assert message in line and line.endswith("cannot restore them: pass --force to train the run over")
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == before


class Planted:
    """What a malicious checkpoint holds: unpickling it would run a shell command."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_checkpoint_that_would_run_code_is_refused_by_name(capsys, cifar10_dir, label_dir, tmp_path):
    """The message called it an unreadable zip and passed on torch's advice to load it with
    weights_only=False, which would run the code."""
    run_dir = tmp_path / "cifar10" / "seed3" / "resnet32" / "model_speech"
    run_dir.mkdir(parents=True)
    torch.save({"model": Planted(tmp_path / "ran")}, run_dir / "last_checkpoint.pth")
    line = run_cli_capture(capsys, flags(cifar10_dir, tmp_path, label_dir, resume=True))
    assert ("last_checkpoint.pth is corrupt or not a labelrep checkpoint (it holds what a safe load "
            "refuses: Trying to load unsupported GLOBAL posix.system") in line
    assert "weights_only" not in line and not (tmp_path / "ran").exists()


def test_bad_input_never_overwrites_a_result(speech_run, capsys, label_dir, tmp_path):
    base, _ = speech_run
    run_dir = base / "cifar10" / "seed3" / "resnet32" / "model_speech"
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    run_cli_capture(capsys, flags(tmp_path / "nowhere", base, label_dir, force=True))
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == before


def test_finished_run_asked_with_other_flags_is_one_line(speech_run, capsys, cifar10_dir, label_dir,
                                                        tmp_path, monkeypatch):
    base, _ = speech_run
    from utils import training
    monkeypatch.setattr(training, "fast_bf16", lambda device: True)  # no bf16 warning line on any CPU
    # the line names the flags that read its results, as a refused resume's does: 'pass --force' alone
    # left one who had meant this run to find them
    line = run_cli_capture(capsys, flags(cifar10_dir, base, label_dir, epochs=3))
    assert ("model_speech holds a finished run trained with --epochs 2 (now 3); ask for it with --epochs 2 to "
            "read its results, pass --force") in line
    line = run_cli_capture(capsys, flags(cifar10_dir, base, label_dir, amp=True, warmup_epochs="0.5"))
    assert ("trained with --warmup_epochs 0 (now 0.5), --amp off (now on); ask for it with --warmup_epochs 0 "
            "and without --amp to read its results, pass --force") in line
    other = tmp_path / "labels"   # the same label name, other targets (e.g. the paper's files)
    other.mkdir()
    np.save(other / "cifar10_speech.npy", np.load(label_dir / "cifar10_speech.npy") + 1)
    line = run_cli_capture(capsys, flags(cifar10_dir, base, other))
    assert (f"holds a finished run trained with other speech targets than {other} holds; ask for it with "
            f"--label_dir {label_dir} to read its results") in line
    # as it says: its results, exit 0
    assert train.main(flags(cifar10_dir, base, label_dir, warmup_epochs="0"))["epochs"] == 2


def test_a_finished_run_without_its_config_is_checked_by_its_results(speech_run, capsys, cifar10_dir,
                                                                     label_dir, tmp_path):
    """config.json deleted by hand: a finished run asked for with other flags gave its old results,
    exit 0, and the sweep counted it done; results.json records the flags that name the run."""
    base, run_dir = finished_copy(speech_run, tmp_path)
    (run_dir / "config.json").unlink()
    line = run_cli_capture(capsys, flags(cifar10_dir, base, label_dir, epochs=3))
    assert ("model_speech holds a finished run trained with --epochs 2 (now 3); ask for it with --epochs 2 to "
            "read its results, pass --force") in line
    ns = sweep.Scripts.find()["train"].parse(flags(cifar10_dir, base, label_dir, epochs=3))
    assert train_state(run_dir, ns)[1].startswith("finished, but trained with --epochs 2 (sweep: 3)")
    assert train.main(flags(cifar10_dir, base, label_dir))["epochs"] == 2  # as asked: its results


def test_a_finished_run_without_its_config_is_checked_for_its_training_images(speech_run, capsys, cifar10_dir,
                                                                              label_dir, tmp_path):
    """config.json deleted by hand: results.json's train_images still tells a finished run asked for
    on another copy of the dataset (another --data_dir), which is an error, not its old results."""
    base, run_dir = finished_copy(speech_run, tmp_path)
    (run_dir / "config.json").unlink()
    line = run_cli_capture(capsys, flags(fewer_training_images(cifar10_dir, tmp_path / "data"), base, label_dir))
    assert "holds a finished run trained with 250 training images (now 240: another --data_dir?)" in line


BROKEN_AMP = "01d393a8d6eaa150002b7f0cce889044f8016cca"  # labelrep between 21d7ed3 and 754614a


def as_broken_amp_run(config):
    """`config` (config.json's or a checkpoint's) as an --amp run of a labelrep whose --amp
    training never applied its updates (utils.flags.AMP_BROKEN_COMMITS) leaves it."""
    config["flags"]["amp"] = True
    config["segments"][0]["environment"]["git"]["commit"] = BROKEN_AMP
    return config


def test_an_amp_run_of_a_labelrep_that_trained_amp_wrongly_is_refused(speech_run, capsys, cifar10_dir,
                                                                     label_dir, tmp_path, monkeypatch):
    """A study upgraded in its middle: an --amp run trained by a labelrep of 21d7ed3..754614a (its
    training forwards used the first step's weights: train_acc 7.6% against 34.4% after 2 epochs)
    was a finished run to train.py (its old results, exit 0), done to the sweep and a seed beside
    the new ones in the report; its last checkpoint resumed as if sound."""
    from utils import training
    monkeypatch.setattr(training, "fast_bf16", lambda device: True)  # no bf16 warning line on any CPU
    base, run_dir = finished_copy(speech_run, tmp_path)
    config = as_broken_amp_run(json.loads((run_dir / "config.json").read_text()))
    (run_dir / "config.json").write_text(json.dumps(config))
    reason = ("--amp by labelrep 01d393a, whose --amp training never applied the optimiser's updates to "
              "its forward passes (fixed in 754614a)")
    line = run_cli_capture(capsys, flags(cifar10_dir, base, label_dir, amp=True))
    assert line.endswith(f"model_speech holds a finished run trained with {reason}; pass --force to train "
                         "it again with these flags (in a sweep, which passes no --force: delete the run "
                         "directory), or use another --base_dir"), line
    ns = sweep.Scripts.find()["train"].parse(flags(cifar10_dir, base, label_dir, amp=True))
    assert train_state(run_dir, ns) == (False, f"finished, but trained with {reason}: train.py refuses it; "
                                               "delete the run directory to start over")
    summary = report.report(base, tmp_path / "out", draw=False)
    assert summary["incomplete"] == [{"run": "cifar10/resnet32/speech/level100/seed3",
                                      "run_dir": "cifar10/seed3/resnet32/model_speech", "reasons": [
                                          f"left out of the tables: trained with {reason}; train it again "
                                          "(train.py --force)"], "running": None}]
    (run_dir / "results.json").unlink()  # unfinished: its last checkpoint is no start either
    checkpoint = torch.load(run_dir / LAST_CHECKPOINT, weights_only=True)
    as_broken_amp_run(checkpoint["config"])
    torch.save(checkpoint, run_dir / LAST_CHECKPOINT)
    line = run_cli_capture(capsys, flags(cifar10_dir, base, label_dir, amp=True, resume=True))
    assert line.endswith(f"last_checkpoint.pth was trained with {reason}; pass --force to start over (in a "
                         "sweep: delete the run directory)"), line
    from utils.flags import broken_training
    config["segments"][0]["environment"]["git"]["commit"] = "754614a4" + "0" * 32  # the fix's: sound
    assert broken_training(config) is None and broken_training(as_broken_amp_run(config)) == reason
    config["flags"]["amp"] = False  # the commit broke --amp alone
    assert broken_training(config) is None


def without_warmup_flag(config):
    """`config` (config.json's or a checkpoint's) as a labelrep before ae81f9b, which had no
    --warmup_epochs, wrote it."""
    del config["flags"]["warmup_epochs"]
    return config


def test_a_run_from_before_warmup_epochs_asked_for_a_warmup_is_refused(speech_run, capsys, cifar10_dir,
                                                                      label_dir, tmp_path):
    """A run trained before --warmup_epochs existed (ae81f9b) records no such flag, and trained
    without a warm-up. Asked for --warmup_epochs 1, train.py printed its old results (exit 0), the
    sweep counted it done, report.py --grid put it in the warm-up grid's tables, and its last
    checkpoint resumed into a warm-up schedule; each now refuses it as a run of --warmup_epochs 0."""
    base, run_dir = finished_copy(speech_run, tmp_path)
    config = without_warmup_flag(json.loads((run_dir / "config.json").read_text()))
    (run_dir / "config.json").write_text(json.dumps(config))
    argv = flags(cifar10_dir, base, label_dir, warmup_epochs=1)
    line = run_cli_capture(capsys, argv)
    assert line.endswith("model_speech holds a finished run trained with --warmup_epochs 0 (now 1); ask for it "
                         "with --warmup_epochs 0 to read its results, pass --force to train it again with these flags (in a sweep, which passes no --force: delete the run "
                         "directory), or use another --base_dir"), line
    ns = sweep.Scripts.find()["train"].parse(argv)
    assert train_state(run_dir, ns) == (False, "finished, but trained with --warmup_epochs 0 (sweep: 1): train.py "
                                               "refuses it; delete the run directory to start over")
    grid = tmp_path / "grid.yaml"
    grid.write_text(f"labels: [speech]\nseeds: [3]\nstages: [train]\nargs: --data_dir {cifar10_dir} --label_dir "
                    f"{label_dir} --base_dir {base}\ntrain_args: --valid_size 50 --epochs 2 --batch_size 64 "
                    "--device cpu --warmup_epochs 1\n")
    summary = report.report(base, tmp_path / "out", grid, draw=False)
    assert [i["reasons"] for i in summary["incomplete"]] == [[
        "left out of the tables: trained with --warmup_epochs 0 (the grid: 1), not as the grid asks (its sweep "
        "refuses the run: delete the run directory to train it again)"]]
    assert train.main(flags(cifar10_dir, base, label_dir))["epochs"] == 2  # without a warm-up: its results
    capsys.readouterr()
    (run_dir / RESULTS).unlink()  # stopped after its last epoch
    checkpoint = torch.load(run_dir / LAST_CHECKPOINT, weights_only=True)
    without_warmup_flag(checkpoint["config"])
    torch.save(checkpoint, run_dir / LAST_CHECKPOINT)
    line = run_cli_capture(capsys, argv + ["--resume"])
    assert line.endswith("last_checkpoint.pth was trained with --warmup_epochs 0 (now 1); resume it with "
                         "--warmup_epochs 0, or pass --force to start over (in a sweep: delete the run "
                         "directory)"), line
    from utils.flags import ADDED_FLAGS  # what an older run trained with: train.py's default still
    assert ADDED_FLAGS == {k: train.build_parser().get_default(k) for k in ADDED_FLAGS}


def test_a_flag_that_differs_in_a_late_digit_is_shown_with_it(speech_run, capsys, cifar10_dir, label_dir):
    """A finished run of --lr 0.1 asked for with 0.1 * 3 / 3 (a sweep's arithmetic) says which
    values differ: '--lr 0.1 (now 0.1)' named none."""
    base, _ = speech_run
    line = run_cli_capture(capsys, flags(cifar10_dir, base, label_dir, lr=repr(0.1 * 3 / 3)))
    assert "trained with --lr 0.1 (now 0.10000000000000002); ask for it with --lr 0.1 to read its" in line


def test_a_fractional_level_run_of_the_older_rounding_is_refused_by_train_and_sweep(capsys, label_dir,
                                                                                    tmp_path):
    """Before 1570041 a fractional --level took int(N * level / 100) in floats: 64.6% of 500 images
    gave 322, not 323. Such a run, asked for again, was refused by train.py as 'another
    --data_dir?' and counted done by the sweep; both now name the rounding."""
    data = make_cifar10(tmp_path / "data", per_batch=100)  # 500 training images
    argv = flags(data, tmp_path / "runs", label_dir, epochs=1, level=64.6)
    train.main(argv)
    capsys.readouterr()
    [run_dir] = [p.parent for p in (tmp_path / "runs").rglob("results.json")]
    ns = sweep.Scripts.find()["train"].parse(argv)
    assert train_state(run_dir, ns)[0]
    for name in ("config.json", "results.json"):  # as a labelrep before 1570041 wrote them
        saved = json.loads((run_dir / name).read_text())
        assert saved["train_images"] == 323
        (run_dir / name).write_text(json.dumps(saved | {"train_images": 322}))
    reason = "322 training images (now 323: a labelrep before 1570041 rounded --level 64.6 of 500 images down to 322)"
    line = run_cli_capture(capsys, argv)
    assert line.endswith(f"model_speech holds a finished run trained with {reason}; pass --force to train it "
                         "again with these flags (in a sweep, which passes no --force: delete the run "
                         "directory), or use another --base_dir"), line
    assert train_state(run_dir, ns) == (False, f"finished, but trained with {reason.replace('now', 'sweep:')}: "
                                               "train.py refuses it; delete the run directory to start over")
    grid = tmp_path / "grid.yaml"  # and report.py --grid of that sweep leaves it out of the tables
    grid.write_text(f"labels: [speech]\nlevels: [64.6]\nseeds: [3]\nstages: [train]\nargs: --data_dir {data} "
                    f"--label_dir {label_dir} --base_dir {tmp_path / 'runs'}\ntrain_args: --valid_size 50 "
                    "--epochs 1 --batch_size 64 --device cpu\n")
    summary = report.report(tmp_path / "runs", tmp_path / "out", grid, draw=False)
    assert [i["reasons"] for i in summary["incomplete"]] == [[
        f"left out of the tables: trained with {reason.replace('now', 'the grid:')}, not as the grid asks (its "
        "sweep refuses the run: delete the run directory to train it again)"]]
    from utils.flags import older_rounding  # 1570041's own example; a count no rounding explains
    assert older_rounding(0.29, 144, 145) == "a labelrep before 1570041 rounded --level 0.29 of 50000 images down to 144"
    assert older_rounding(0.29, 140, 145) is None and older_rounding(8, 3999, 4000) is None


def test_a_resume_of_the_older_rounding_says_no_flags_resume_it(capsys, label_dir, tmp_path):
    """The last checkpoint of a fractional --level run of a labelrep before 1570041 (64.6% of 500
    images: 322, not 323) was refused with 'use the same flags to resume', which no flags do: the
    count is the code's rounding. Where flags alone differ, the line names them."""
    data = make_cifar10(tmp_path / "data", per_batch=100)  # 500 training images
    argv = flags(data, tmp_path / "runs", label_dir, epochs=1, level=64.6)
    train.main(argv)
    capsys.readouterr()
    [run_dir] = [p.parent for p in (tmp_path / "runs").rglob("results.json")]
    (run_dir / RESULTS).unlink()  # stopped after its last epoch
    checkpoint = torch.load(run_dir / LAST_CHECKPOINT, weights_only=True)
    line = run_cli_capture(capsys, argv + ["--resume", "--lr", "0.2"])
    assert line.endswith("last_checkpoint.pth was trained with --lr 0.1 (now 0.2); resume it with --lr 0.1, or "
                         "pass --force to start over (in a sweep: delete the run directory)"), line
    checkpoint["config"]["train_images"] = 322  # as a labelrep before 1570041 wrote it
    torch.save(checkpoint, run_dir / LAST_CHECKPOINT)
    reason = "322 training images (now 323: a labelrep before 1570041 rounded --level 64.6 of 500 images down to 322)"
    advice = "no flags resume it: pass --force to start over (in a sweep: delete the run directory)"
    line = run_cli_capture(capsys, argv + ["--resume"])
    assert line.endswith(f"last_checkpoint.pth was trained with {reason}; {advice}"), line
    line = run_cli_capture(capsys, argv + ["--resume", "--lr", "0.2"])  # the same flags would not do either
    assert line.endswith(f"last_checkpoint.pth was trained with --lr 0.1 (now 0.2), {reason}; {advice}"), line


def test_a_refused_resume_names_what_resumes_it(speech_run, capsys, cifar10_dir, label_dir, tmp_path):
    """A run resumed by one who no longer knows its flags (a job requeued days later, a run moved
    from a laptop to a cluster) was told 'use the same flags to resume', which were only to be read
    out of '--batch_size 64 (now 128)'; with other label targets or data, passed the same flags, it
    was told the same. The line now says what to pass (the values it trained with, the folder it
    read its labels or data from), or that no flags resume it, and passing that resumes it."""
    base, run_dir = finished_copy(speech_run, tmp_path)
    (run_dir / RESULTS).unlink()  # stopped after its last epoch
    argv = flags(cifar10_dir, base, label_dir, resume=True)
    del argv[argv.index("--batch_size"):argv.index("--batch_size") + 2]  # forgotten: train.py's 128
    end = ", or pass --force to start over (in a sweep: delete the run directory)"
    line = run_cli_capture(capsys, argv + ["--lr", "0.05", "--channels_last"])
    assert line.endswith("last_checkpoint.pth was trained with --batch_size 64 (now 128), --lr 0.1 (now 0.05), "
                         "--channels_last off (now on); resume it with --batch_size 64 --lr 0.1 and without "
                         f"--channels_last{end}"), line
    fewer = fewer_training_images(cifar10_dir, tmp_path / "data")
    line = run_cli_capture(capsys, argv + ["--batch_size", "64", "--data_dir", str(fewer)])
    assert line.endswith(f"was trained with 250 training images (now 240: another --data_dir?); resume it with "
                         f"--data_dir {cifar10_dir}{end}"), line
    own, other = tmp_path / "my labels", tmp_path / "labels"  # its folder (a space: quoted), one regenerated
    shutil.copytree(label_dir, own)
    shutil.copytree(label_dir, other)
    targets = np.load(label_dir / "cifar10_speech.npy")
    np.save(other / "cifar10_speech.npy", targets + 1)
    checkpoint = torch.load(run_dir / LAST_CHECKPOINT, weights_only=True)
    checkpoint["config"]["flags"]["label_dir"] = str(own)  # as if it had trained from there
    torch.save(checkpoint, run_dir / LAST_CHECKPOINT)
    argv += ["--batch_size", "64"]
    line = run_cli_capture(capsys, argv + ["--label_dir", str(other)])
    assert line.endswith(f"was trained with other speech targets than {other} holds; resume it with "
                         f"--label_dir '{own}'{end}"), line
    np.save(own / "cifar10_speech.npy", targets + 1)  # its own folder's file changed: no flag brings it back
    line = run_cli_capture(capsys, argv + ["--label_dir", str(own)])
    assert line.endswith(f"was trained with other speech targets than {own} holds; no flags resume it: "
                         "pass --force to start over (in a sweep: delete the run directory)"), line
    np.save(own / "cifar10_speech.npy", targets)
    assert train.main(argv + ["--label_dir", str(own)])["epochs"] == 2  # resumed, as the lines said


def test_another_valid_size_is_not_blamed_on_the_data(speech_run, capsys, cifar10_dir, label_dir):
    """A finished run of --level 100 asked for with another --valid_size trains on another number
    of images: the line named the flag, then put the count down to 'another --data_dir?'."""
    base, _ = speech_run
    line = run_cli_capture(capsys, flags(cifar10_dir, base, label_dir, valid_size=40))
    assert line.endswith("model_speech holds a finished run trained with --valid_size 50 (now 40); ask for it "
                         "with --valid_size 50 to read its results, pass --force to train it again with these flags (in a sweep, which passes no --force: "
                         "delete the run directory), or use another --base_dir"), line


def test_run_files_that_hold_no_json_object_are_one_line(speech_run, capsys, cifar10_dir, label_dir,
                                                         tmp_path):
    """A results.json or config.json holding valid JSON of another shape (a list, null) was a
    TypeError or AttributeError traceback."""
    base, _ = speech_run
    copy = tmp_path / "copy"
    shutil.copytree(base, copy)
    run_dir = copy / "cifar10" / "seed3" / "resnet32" / "model_speech"
    for name, text, kind in (("config.json", "null", "null"), ("results.json", "[1]", "an array")):
        kept = (run_dir / name).read_text()
        (run_dir / name).write_text(text)
        line = run_cli_capture(capsys, flags(cifar10_dir, copy, label_dir))
        assert line == (f"error: {run_dir / name} holds {kind}, not the JSON object labelrep writes; "
                        "delete it to redo that step")
        (run_dir / name).write_text(kept)


@pytest.mark.parametrize("flags_entry", [None, "--epochs 2 --lr 0.1"])
def test_a_config_whose_flags_are_no_mapping_compares_none(speech_run, capsys, cifar10_dir, label_dir,
                                                          tmp_path, flags_entry):
    """config.json's flags null or text (an edited file) was a TypeError traceback; like a config.json
    without flags, it holds none to compare with the flags asked for."""
    base, run_dir = finished_copy(speech_run, tmp_path)
    config = json.loads((run_dir / "config.json").read_text())
    (run_dir / "config.json").write_text(json.dumps(config | {"flags": flags_entry}))
    results = train.main(flags(cifar10_dir, base, label_dir))
    assert results["test_acc"] == last_json(speech_run[1])["test_acc"]
    assert "run already complete" in capsys.readouterr().err


@pytest.mark.parametrize("name, entry, value, said", [
    ("config.json", "epochs", "2", 'epochs "2" (text, not a number)'),
    ("config.json", "train_images", "250", 'train_images "250" (text, not a number)'),
    ("config.json", "model", None, "model null (null, not text)"),
    ("results.json", "level", "100", 'level "100" (text, not a number)')])
def test_a_run_file_edited_to_values_of_another_kind_names_them(speech_run, capsys, cifar10_dir, label_dir,
                                                                 tmp_path, name, entry, value, said):
    """A finished run's config.json (or, without one, results.json) edited by hand so that a value is
    of another kind than train.py writes (the text "2" for --epochs 2) read as another run: 'trained
    with --epochs 2 (now 2); pass --force', whose --force deletes the run's checkpoints and results.
    The file and its values are named, and nothing is touched."""
    base, run_dir = finished_copy(speech_run, tmp_path)
    if name == "results.json":
        (run_dir / "config.json").unlink()
    record = json.loads((run_dir / name).read_text())
    (record["flags"] if entry in record.get("flags", {}) else record)[entry] = value
    (run_dir / name).write_text(json.dumps(record))
    before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
    line = run_cli_capture(capsys, flags(cifar10_dir, base, label_dir))
    assert line == (f"error: {run_dir / name} records {said}, which train.py never writes (edited by hand?); "
                    "put back the values the run trained with")
    assert {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()} == before


def test_another_label_types_flags_are_ignored_with_a_warning(speech_run, capsys, cifar10_dir,
                                                               label_dir):
    """--smoothing acts on category labels only, the MCR2 flags on mcr2: given with speech they
    change nothing, so a finished speech run is still the run asked for (a sweep over several
    labels passes them to all), and a warning says they did nothing."""
    base, proc = speech_run
    again = train.main(flags(cifar10_dir, base, label_dir, smoothing="0.1", gam1="2",
                             n_components="5"))
    assert again == last_json(proc)
    err = capsys.readouterr().err
    assert "warning: --smoothing only acts with --label category; ignored for --label speech" in err
    assert "warning: --gam1, --n_components only act with --label mcr2; ignored for --label speech" in err


def test_a_warm_up_that_outlasts_the_first_lr_phase_warns(tmp_path, capsys):
    """A quick trial of a large-batch recipe (--epochs 4 --warmup_epochs 5) rose to a tenth of
    --lr and dropped from there without a word: the warm-up multiplies with the lr drops."""
    status = call_cli(train.main, ["--epochs", "4", "--warmup_epochs", "5", "--lr", "0.4", "--data_dir",
                                   str(tmp_path), "--base_dir", str(tmp_path / "out"), "--device", "cpu"])
    err = capsys.readouterr().err.splitlines()
    assert status == 2 and err[0] == ("warning: --warmup_epochs 5 outlasts the first of the schedule's lr phases "
                                      "(--epochs 4 divides the lr by 10 after epoch 2): the lr never reaches "
                                      "--lr 0.4")
    call_cli(train.main, ["--epochs", "4", "--warmup_epochs", "2", "--data_dir", str(tmp_path), "--device", "cpu",
                          "--base_dir", str(tmp_path / "out")])
    assert "warning" not in capsys.readouterr().err  # ends as the first phase does: --lr is reached
    # a one-epoch trial has no lr drop: the run, not a drop after its last epoch, cuts the warm-up short
    call_cli(train.main, ["--epochs", "1", "--warmup_epochs", "2", "--data_dir", str(tmp_path), "--device", "cpu",
                          "--base_dir", str(tmp_path / "out")])
    assert capsys.readouterr().err.splitlines()[0] == (
        "warning: --warmup_epochs 2 outlasts the first of the schedule's lr phases (--epochs 1 ends the run "
        "first): the lr never reaches --lr 0.1")


def test_smoothed_category_runs_have_a_directory_of_their_own(cifar10_dir, label_dir, tmp_path, capsys):
    """The paper's model_category_smooth{S}, beside the plain run (which made a --smoothing run a
    refusal: 'holds a finished run trained with --smoothing 0'); attack.py finds it with the same
    flags, and report.py counts it as the label category_smooth0.1."""
    base = tmp_path / "runs"
    plain = train.main(flags(cifar10_dir, base, label_dir, label="category", epochs=1))
    smoothed = train.main(flags(cifar10_dir, base, label_dir, label="category", epochs=1, smoothing="0.1"))
    assert (Path(plain["run_dir"]).name, Path(smoothed["run_dir"]).name) == ("model_category",
                                                                            "model_category_smooth0.1")
    assert json.loads((Path(smoothed["run_dir"]) / "config.json").read_text())["flags"]["smoothing"] == 0.1
    assert (plain["smoothing"], smoothed["smoothing"]) == (0.0, 0.1)  # the result line says it, too
    attacked = attack.main(["--base_dir", str(base), "--data_dir", str(cifar10_dir), "--label", "category",
                            "--seed", "3", "--smoothing", "0.1", "--attacks", "fgsm", "--epsilons", "8/255",
                            "--targeted", "no", "--num_images", "5", "--examples", "0", "--device", "cpu"])
    assert attacked["run_dir"] == smoothed["run_dir"]
    capsys.readouterr()
    report.report(base, tmp_path / "report", draw=False)
    rows = (tmp_path / "report" / "clean_accuracy.csv").read_text().splitlines()
    assert [row.split(",")[2] for row in rows[1:]] == ["category", "category_smooth0.1"], rows


def test_a_smoothed_run_in_the_older_place_is_moved_not_trained_anew(cifar10_dir, label_dir, tmp_path, capsys):
    """A labelrep before b6cdd9e put a --smoothing run in model_category. Asked for again with the
    same flags, train.py trained a new run from epoch 1 in model_category_smooth0.1, the old one's
    epochs unused (a --resume too: '--resume found no checkpoint there'); asked for without
    --smoothing, it said to --force the plain run, which deleted the smoothed one. Both say where
    to move it, and touch nothing, as attack.py does; moved there, it is the finished run it was."""
    base = tmp_path / "runs"
    argv = flags(cifar10_dir, base, label_dir, label="category", epochs=1, smoothing="0.1")
    trained = train.main(argv)
    seed_dir = Path(trained["run_dir"]).parent
    (seed_dir / "model_category_smooth0.1").rename(seed_dir / "model_category")
    before = {p.name: p.read_bytes() for p in (seed_dir / "model_category").iterdir()}
    said = (f"error: {seed_dir / 'model_category'} holds {{}} --smoothing 0.1 run: a labelrep before b6cdd9e wrote "
            f"it there; move it to {seed_dir / 'model_category_smooth0.1'}, where train.py, attack.py and "
            "report.py look for it now")
    capsys.readouterr()
    assert run_cli_capture(capsys, argv) == said.format("this")
    assert run_cli_capture(capsys, argv + ["--resume"]) == said.format("this")
    plain = flags(cifar10_dir, base, label_dir, label="category", epochs=1)
    assert run_cli_capture(capsys, plain) == said.format("no run without --smoothing but a") + ", then run this again"
    # attack.py said 'no checkpoint at .../model_category_smooth0.1/...' of the one and 'category_seed3_resnet32_
    # best_model.pth was trained with --smoothing 0.1, not 0.0' of the other, where a sweep said `run: new`
    attacked = ["--base_dir", str(base), "--label", "category", "--seed", "3", "--device", "cpu"]
    for smoothing, what in (("0.1", "this"), ("0", "no run without --smoothing but a")):
        assert call_cli(attack.main, attacked + ["--smoothing", smoothing]) == 2
        assert capsys.readouterr().err == said.format(what) + ", then run this again" * (smoothing == "0") + "\n"
    assert sorted(p.name for p in seed_dir.iterdir()) == ["model_category"]
    assert {p.name: p.read_bytes() for p in (seed_dir / "model_category").iterdir()} == before
    (seed_dir / "model_category").rename(seed_dir / "model_category_smooth0.1")
    assert train.main(argv)["test_acc"] == trained["test_acc"]
    assert "run already complete" in capsys.readouterr().err


def test_attacks_an_older_attack_py_ran_on_a_smoothed_loss_are_not_reused(cifar10_dir, label_dir, tmp_path,
                                                                          capsys):
    """An attack.py before 4eb33c9 climbed a --smoothing run's smoothed loss, not plain cross-entropy
    (a 6-epoch --smoothing 0.3 run: PGD at 64/255 left 36% robust where it leaves 0%). Its run,
    moved to model_category_smooth{S} as report.py advises, kept those results: attack.py reused
    them, the sweep counted them done and report.py showed them. An attack.py that old had no
    --smoothing, so its config records none."""
    from utils.grid import requested_attacks
    base = tmp_path / "runs"
    trained = train.main(flags(cifar10_dir, base, label_dir, label="category", epochs=1, smoothing="0.1"))
    argv = ["--base_dir", str(base), "--data_dir", str(cifar10_dir), "--label", "category", "--seed", "3",
            "--smoothing", "0.1", "--attacks", "fgsm", "--epsilons", "8/255", "--targeted", "no",
            "--num_images", "5", "--examples", "0", "--device", "cpu"]
    computed = attack.main(argv)["robust_acc"]
    run_dir = Path(trained["run_dir"])
    path = run_dir / ATTACK_RESULTS
    results = json.loads(path.read_text())
    del results["config"]["smoothing"]  # as an attack.py before b6cdd9e wrote it, with its numbers
    del results["entries"][0]["class_images"], results["entries"][0]["class_robust"]
    results["entries"][0]["robust_acc"] = 0.8
    path.write_text(json.dumps(results))
    stale = ("holds attacks on a --smoothing run by an attack.py older than b6cdd9e, which before 4eb33c9 "
             "climbed the smoothed loss, not plain cross-entropy")
    script = sweep.Scripts.find()["attack"]
    assert attack_state(run_dir, requested_attacks(script.parse(argv), script.module)) == (
        False, f"new: {ATTACK_RESULTS} {stale}")
    capsys.readouterr()
    summary = report.report(base, tmp_path / "report", draw=False)
    assert summary["incomplete"][0]["reasons"] == [f"{ATTACK_RESULTS} left out: it {stale} (attack the run again)"]
    assert attack.main(argv)["robust_acc"] == computed
    assert f"{path}: dropping 1 entry: it {stale}\n" in capsys.readouterr().err
    assert "smoothing" in json.loads(path.read_text())["config"]


def finished_copy(speech_run, tmp_path):
    """A copy of the finished speech run's directory tree, to change without touching the run."""
    base, _ = speech_run
    shutil.copytree(base, tmp_path / "runs")
    return tmp_path / "runs", tmp_path / "runs" / "cifar10" / "seed3" / "resnet32" / "model_speech"


def fewer_training_images(cifar10_dir, folder):
    """A copy of the tiny CIFAR-10 in `folder` whose first batch holds 50 images, not 60: its
    speech runs train on 240 images, not 250."""
    shutil.copytree(cifar10_dir, folder)
    batch = folder / "cifar-10-batches-py" / "data_batch_1"
    with open(batch, "rb") as f:
        content = pickle.load(f, encoding="latin1")
    content = {k: v[:50] if k in ("data", "labels") else v for k, v in content.items()}
    batch.write_bytes(pickle.dumps(content))
    return folder


def test_a_trained_model_without_its_last_checkpoint_is_not_trained_over(speech_run, capsys, cifar10_dir,
                                                                          label_dir, tmp_path):
    """results.json and last_checkpoint.pth deleted (to attack again, to save space): --resume
    started over from epoch 1 and wrote over the best checkpoint and metrics.jsonl."""
    base, run_dir = finished_copy(speech_run, tmp_path)
    (run_dir / RESULTS).unlink()
    (run_dir / LAST_CHECKPOINT).unlink()
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    best = run_dir / "speech_seed3_resnet32_best_model.pth"
    assert run_cli_capture(capsys, flags(cifar10_dir, base, label_dir, resume=True)) == (
        f"error: {best} holds a trained model, but last_checkpoint.pth, which --resume continues from, "
        "is gone; pass --force to train the run again from epoch 1")
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == before
    assert train_state(run_dir) == (False, "cannot resume: a best checkpoint but no last_checkpoint.pth: "
                                           "train.py refuses it; delete the run directory to start over")


def test_force_with_resume_is_refused_before_anything_is_touched(speech_run, capsys, cifar10_dir, label_dir,
                                                                 tmp_path):
    """--force won silently over --resume: the run started over, its checkpoints and results
    deleted, where --resume asked to keep its work."""
    base, run_dir = finished_copy(speech_run, tmp_path)
    (run_dir / RESULTS).unlink()  # a stopped run, whose last checkpoint --resume would continue
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    assert run_cli_capture(capsys, flags(cifar10_dir, base, label_dir, force=True, resume=True)) == (
        "error: --force starts the run over, deleting its checkpoints, and --resume continues it from "
        "its last checkpoint: pass one of them")
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == before


def test_force_drops_the_old_results_and_checkpoints_before_it_trains(speech_run, monkeypatch, capsys,
                                                                      cifar10_dir, label_dir, tmp_path):
    base, run_dir = finished_copy(speech_run, tmp_path)
    (run_dir / ATTACK_RESULTS).write_text('{"entries": []}')   # what attack.py wrote on it
    (run_dir / ATTACK_EXAMPLES).write_bytes(b"\x89PNG")
    monkeypatch.setattr("utils.training.train_epoch", lambda *args, **kwargs: None)  # a preemption
    with pytest.raises(SystemExit) as stopped:
        train.main(flags(cifar10_dir, base, label_dir, force=True, lr="0.05"))
    assert stopped.value.code == 75
    # a --resume must not return the old run's results, nor a sweep take its attacks for done
    assert not [p.name for p in run_dir.iterdir() if p.name in (RESULTS, CONFUSION, ATTACK_RESULTS, ATTACK_EXAMPLES)]
    # nor --resume continue the old run's checkpoint, nor attack.py attack its best weights
    assert not [p.name for p in run_dir.iterdir() if p.suffix == ".pth"]
    assert json.loads((run_dir / "config.json").read_text())["flags"]["lr"] == 0.05


def test_a_start_at_epoch_1_drops_the_attack_results_of_the_model_before(speech_run, monkeypatch, capsys,
                                                                         cifar10_dir, label_dir, tmp_path):
    """An attacked run whose results.json and checkpoints were deleted trained again from epoch 1
    (with --resume, as a sweep runs it) and kept attack_results.json: sweep.py counted its attack
    stage done and report.py showed the old model's robust accuracy as the new one's, where
    attack.py drops those entries as computed on another checkpoint."""
    base, run_dir = finished_copy(speech_run, tmp_path)
    for path in (run_dir / RESULTS, *run_dir.glob("*.pth")):  # the last and the best checkpoint
        path.unlink()
    entry = {"attack": "fgsm", "targeted": False, "protocol": "pixel", "eps": 8 / 255, "robust_acc": 0.25}
    (run_dir / ATTACK_RESULTS).write_text(json.dumps({"num_images": 20, "entries": [entry]}))
    (run_dir / ATTACK_EXAMPLES).write_bytes(b"\x89PNG")
    wanted = {"keys": {("fgsm", False, "pixel", 8 / 255)}, "plans": None, "num_images": 20}
    assert attack_state(run_dir, wanted) == (True, "done (1 setting)")
    monkeypatch.setattr("utils.training.train_epoch", lambda *args, **kwargs: None)  # a preemption
    with pytest.raises(SystemExit) as stopped:
        train.main(flags(cifar10_dir, base, label_dir, resume=True))
    assert stopped.value.code == 75
    assert f"{run_dir}: removing {ATTACK_RESULTS}, of a model trained before; attack the new one again" \
        in capsys.readouterr().err
    assert not (run_dir / ATTACK_RESULTS).exists() and not (run_dir / ATTACK_EXAMPLES).exists()
    assert attack_state(run_dir, wanted) == (False, "new")


def test_a_second_job_is_refused_before_it_loads_the_data(speech_run, capsys, label_dir, tmp_path):
    """A second train.py started on a run directory another job holds (an array task submitted
    twice) loaded the whole dataset first (minutes and gigabytes of a full CIFAR), then was refused:
    with a --data_dir it cannot read it said 'cifar10 not found', not that the run was in use. A
    folder with a lock file is locked before the load; one without (a new run's) after it, as
    before, so bad data leaves no folder made (test_a_data_dir_of_the_batches_themselves...)."""
    import fcntl
    base, run_dir = finished_copy(speech_run, tmp_path)
    with open(run_dir / ".lock", "a") as other_job:   # as another process's run_lock holds it
        fcntl.flock(other_job, fcntl.LOCK_EX | fcntl.LOCK_NB)
        line = run_cli_capture(capsys, flags(tmp_path / "no_data", base, label_dir))
    assert line == (f"error: {run_dir} is in use by another train.py or attack.py job; wait for it "
                    "to end, or use another --base_dir")


def test_a_second_job_on_a_run_directory_is_one_line(speech_run, capsys, cifar10_dir, label_dir,
                                                     tmp_path):
    """Two jobs in one run directory would leave a run mixed from both; the second is refused.
    The one that holds it removes the temporary files a killed job left behind (its own kind
    only: the folder may be any folder, for attack.py --checkpoint)."""
    import fcntl
    base, run_dir = finished_copy(speech_run, tmp_path)
    with open(run_dir / ".lock", "a") as other_job:   # as another process's run_lock holds it
        fcntl.flock(other_job, fcntl.LOCK_EX | fcntl.LOCK_NB)
        line = run_cli_capture(capsys, flags(cifar10_dir, base, label_dir, force=True))
    assert line == (f"error: {run_dir} is in use by another train.py or attack.py job; wait for it "
                    "to end, or use another --base_dir")
    assert (run_dir / "results.json").exists()
    left = run_dir / ".last_checkpoint.pth.x1y2z3w4.tmp"   # a job killed while writing (mkstemp: 8 characters)
    left.write_bytes(b"part of a checkpoint")
    (run_dir / ".notes.tmp").write_text("not ours")
    again = train.main(flags(cifar10_dir, base, label_dir))   # the finished run, where it is now
    assert again["epochs"] == 2 and again["run_dir"] == str(run_dir)
    assert again["checkpoint"] == str(run_dir / "speech_seed3_resnet32_best_model.pth")
    assert not left.exists() and (run_dir / ".notes.tmp").exists()


# Runs a script as `python SCRIPT ARGS` would from a terminal, with SIGTERM (or $SIGNAL_AT_TORCH)
# sent to itself as torch starts to load.
SIGNAL_AT_TORCH = """
import builtins, os, runpy, signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal, even from a background job
real_import = builtins.__import__
def hooked(name, *args, **kwargs):
    if name == os.environ.get("SIGNAL_AT_IMPORT", "torch") and not hooked.sent:
        hooked.sent = True
        os.kill(os.getpid(), getattr(signal, os.environ.get("SIGNAL_AT_TORCH", "SIGTERM")))
    return real_import(name, *args, **kwargs)
hooked.sent = False
builtins.__import__ = hooked
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_a_signal_while_torch_loads_is_a_requeue(cifar10_dir, label_dir, tmp_path):
    """SLURM's signal may come while a job starts (torch loading over NFS, the dataset being
    read): exit 75 and a line, not a job killed with 143 that no requeue follows."""
    proc = subprocess.run([sys.executable, "-c", SIGNAL_AT_TORCH, str(REPO / "train.py"),
                           *flags(cifar10_dir, tmp_path, label_dir, epochs=1)],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 75, proc.stderr[-2000:]
    assert "stopped by signal while starting; nothing was written, rerun with --resume" in proc.stderr
    assert not list(tmp_path.rglob("*.json*")) and not list(tmp_path.rglob("*.pth"))  # left at once


# train.py, attack.py and bench.py load torch once their flags are read (their --help loads none)
WORK = ["--data_dir", "no_such_folder", "--base_dir", "no_such_folder"]


@pytest.mark.parametrize("script, module, argv, said", [
    ("train.py", "torch", WORK, "error: interrupted\n"), ("attack.py", "torch", WORK, "error: interrupted\n"),
    ("bench/bench.py", "torch", ["--no_record"], "error: interrupted\n"),
    ("sweep.py", "numpy", ["--help"], "error: interrupted\n"),
    ("report.py", "numpy", ["--help"], "error: interrupted\n"),
    ("labels/generate.py", "numpy", ["--help"], "error: interrupted\n"),
    ("labels/stats.py", "numpy", ["--help"], "error: interrupted\n")])
def test_ctrl_c_while_modules_load_is_one_line(script, module, argv, said):
    """It was a KeyboardInterrupt traceback from inside `import torch` (or numpy), and death by SIGINT."""
    proc = subprocess.run([sys.executable, "-c", SIGNAL_AT_TORCH, str(REPO / script), *argv],
                          cwd=REPO, capture_output=True, text=True, timeout=600,
                          env=os.environ | {"SIGNAL_AT_TORCH": "SIGINT", "SIGNAL_AT_IMPORT": module})
    assert (proc.returncode, proc.stderr, proc.stdout) == (130, said, "")
    assert not (REPO / "no_such_folder").exists()


def test_a_script_started_with_sigint_ignored_keeps_ignoring_it():
    """A shell's background job (`python train.py ... &`) inherits SIGINT ignored; the quiet
    handler made the script's Ctrl-C stop it."""
    code = ("import signal; signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
            "from utils import errors\nerrors.quiet_interrupts()\n"
            "errors.call_cli(lambda argv: print(signal.getsignal(signal.SIGINT) is signal.SIG_IGN))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert proc.stdout == "True\n", proc.stderr


def test_an_error_naming_a_path_with_a_line_break_is_one_line(label_dir, tmp_path, capsys):
    """A script's error is one line (call_cli joins a message's lines) with exit status 2, also
    where it names a folder whose name holds a line break: a log read line by line, or sweep.py's
    last 'error:' line, would lose the rest."""
    data_dir = tmp_path / "two\nlines"
    assert call_cli(train.main, flags(data_dir, tmp_path / "out", label_dir, epochs=1)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: cifar10 not found in {tmp_path}/two lines/"), err


def test_ctrl_c_while_training_says_how_to_go_on(cifar10_dir, label_dir, tmp_path, capsys, monkeypatch):
    import utils.training
    real_train_epoch = utils.training.train_epoch

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(utils.training, "train_epoch", interrupted)
    assert call_cli(train.main, flags(cifar10_dir, tmp_path, label_dir, epochs=1)) == 130
    run_dir = tmp_path / "cifar10" / "seed3" / "resnet32" / "model_speech"
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"error: interrupted; {run_dir}: stopped during epoch 1; no checkpoint was written, rerun with --resume")

    # in validation and in a checkpoint's write, it said only 'rerun with --resume to continue from
    # the last checkpoint': not which run, nor what was kept
    monkeypatch.setattr(utils.training, "train_epoch", real_train_epoch)
    monkeypatch.setattr(utils.training, "is_better", lambda valid, best, history: len(history) == 1)
    saves = recorded_saves(monkeypatch, killed_at=2)  # the best (epoch 1), once epoch 2's last is written
    three = flags(cifar10_dir, tmp_path, label_dir, epochs=3, checkpoint_seconds=0)
    assert call_cli(train.main, three) == 130
    assert saves == [("last", 1), ("last", 2), ("best", 1)]
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"error: interrupted; {run_dir}: stopped during epoch 2; the checkpoint after epoch 2 is kept, rerun "
        "with --resume")

    def interrupted_in_validation(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(utils.training, "evaluate", interrupted_in_validation)
    assert call_cli(train.main, three + ["--resume"]) == 130
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"error: interrupted; {run_dir}: stopped during epoch 3; the checkpoint after epoch 2 is kept, rerun "
        "with --resume")


def test_a_gpu_out_of_memory_is_one_line_and_keeps_the_last_checkpoint(cifar10_dir, label_dir, tmp_path, capsys,
                                                                        monkeypatch):
    """torch.OutOfMemoryError (a GPU's) in epoch 2 ended train.py in a traceback of tens of lines whose
    last was torch's paragraph on its CUDA allocator's settings: one line now, with what ran out, the
    size torch could not have and what to lower, exit status 2. The checkpoint after epoch 1 is as it
    was, and --resume goes on from it."""
    import architecture
    run_dir = tmp_path / "cifar10" / "seed3" / "resnet32" / "model_speech"
    forward, kept = architecture.LabelModel.forward, {}

    def short_of_memory(self, images):  # from epoch 2, once the checkpoint after epoch 1 is written
        if (run_dir / LAST_CHECKPOINT).exists():
            kept.setdefault("checkpoint", (run_dir / LAST_CHECKPOINT).read_bytes())
            raise torch.OutOfMemoryError(
                "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79.19 GiB of which "
                "1.20 GiB is free. Including non-PyTorch memory, this process has 77.98 GiB memory in use. If "
                "reserved but unallocated memory is large try setting PYTORCH_CUDA_ALLOC_CONF=expandable_segments:"
                "True to avoid fragmentation. See documentation for Memory Management (https://pytorch.org/docs/"
                "stable/notes/cuda.html#environment-variables)")
        return forward(self, images)
    monkeypatch.setattr(architecture.LabelModel, "forward", short_of_memory)
    argv = flags(cifar10_dir, tmp_path, label_dir, epochs=2, checkpoint_seconds=0)
    assert call_cli(train.main, argv, memory=train.MEMORY) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "error: out of the GPU's memory: torch could not allocate 2.00 GiB (GPU 0 had 1.20 GiB free of 79.19 GiB); "
        "lower --batch_size (or --feature_dim with --label mcr2), or --resume on a machine with more memory")
    assert (run_dir / LAST_CHECKPOINT).read_bytes() == kept["checkpoint"]
    assert len(metrics(run_dir)) == 1 and not (run_dir / RESULTS).exists()
    monkeypatch.setattr(architecture.LabelModel, "forward", forward)
    assert call_cli(train.main, argv + ["--resume"]) == 0
    assert f"resuming {run_dir} after epoch 1 of 2" in capsys.readouterr().err
    assert [row["epoch"] for row in metrics(run_dir)] == [1, 2]


@pytest.mark.skipif(sys.platform != "linux", reason="needs Linux's RLIMIT_AS to refuse the allocation")
def test_a_run_too_big_for_the_machines_memory_is_one_line(cifar100_dir, tmp_path):
    """--label mcr2 --feature_dim 8192 on CIFAR-100 asks for 100 Gram matrices of 8192 x 8192 floats at
    once, 25 GiB, in its first step: where the machine has less (here, a limit on the process's address
    space: the allocation is refused before any memory is touched), train.py ended in a RuntimeError
    traceback ('DefaultCPUAllocator: can't allocate memory ...') with exit status 1. One line now,
    exit status 2."""
    import resource
    limit = 12 << 30  # ample for the tiny run, below the 25 GiB

    def limited():
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    argv = ["--dataset", "cifar100", "--label", "mcr2", "--feature_dim", "8192", "--data_dir", cifar100_dir,
            "--base_dir", tmp_path, "--valid_size", "100", "--epochs", "1", "--device", "cpu"]
    proc = subprocess.run([sys.executable, str(REPO / "train.py"), *map(str, argv)], capture_output=True, text=True,
                          cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, preexec_fn=limited, timeout=600)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.splitlines()[-1] == (
        "error: out of this machine's memory: torch could not allocate 25.00 GiB; lower --batch_size (or "
        "--feature_dim with --label mcr2), or --resume on a machine with more memory"), proc.stderr
    assert "Traceback" not in proc.stderr


def test_ctrl_c_while_scoring_the_best_epoch_says_what_is_kept(cifar10_dir, label_dir, tmp_path, capsys,
                                                               monkeypatch):
    """A Ctrl-C after the last epoch, while the best epoch was scored on the validation and test
    splits (a notebook's stop button in the minute a CIFAR-10 run takes for it on a CPU), said only
    'rerun with --resume to continue from the last checkpoint', as one during the data's load: not
    which run, nor that every epoch was kept; the --resume it asks for then writes the results."""
    import utils.training
    real_scores = utils.training._scores

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(utils.training, "_scores", interrupted)
    argv = flags(cifar10_dir, tmp_path, label_dir, epochs=1)
    assert call_cli(train.main, argv) == 130
    run_dir = tmp_path / "cifar10" / "seed3" / "resnet32" / "model_speech"
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"error: interrupted; {run_dir}: stopped after epoch 1, while scoring the best epoch; the checkpoint "
        "after epoch 1 is kept, rerun with --resume")
    assert not (run_dir / "results.json").exists()
    monkeypatch.setattr(utils.training, "_scores", real_scores)
    assert call_cli(train.main, argv + ["--resume"]) == 0
    assert json.loads((run_dir / "results.json").read_text())["best_epoch"] == 1


def test_a_resume_by_another_commit_warns(speech_run, capsys, cifar10_dir, label_dir, tmp_path, monkeypatch):
    """A checkout pulled between a stop and its --resume trained the later epochs with other code,
    silently: the resume says so, naming both commits; one of the same commit, or where either is
    unknown (no git checkout), says nothing."""
    import utils.runs
    base, run_dir = finished_copy(speech_run, tmp_path)
    first = json.loads((run_dir / "config.json").read_text())["segments"][0]["environment"]["git"]
    if first is None:
        pytest.skip("not a git checkout: the run recorded no commit")
    other = {"commit": "f" * 40, "dirty": False}
    # each resume is compared with the one before: the start's commit, the same, another, then none
    for now, warned in ((first, False), (other, True), (None, False)):
        (run_dir / RESULTS).unlink(missing_ok=True)
        monkeypatch.setattr(utils.runs, "code_version", lambda: now)
        train.main(flags(cifar10_dir, base, label_dir, resume=True))
        said = [line for line in capsys.readouterr().err.splitlines() if "labelrep commit" in line]
        assert said == ([f"warning: resumed with labelrep commit {first['commit'][:7]} -> fffffff: the epochs "
                         "before were trained by other code (config.json's segments record each commit)"]
                        if warned else [])


def test_a_resume_on_another_thread_count_warns(speech_run, capsys, cifar10_dir, label_dir, tmp_path):
    """The same flags on 1 and 2 CPU threads train other numbers: a resume that changes the count
    says so, as the README's promise of an uninterrupted run's numbers holds only without."""
    base, run_dir = finished_copy(speech_run, tmp_path)
    threads = json.loads((run_dir / "config.json").read_text())["environment"]["threads"]
    before = torch.get_num_threads()
    try:
        for now, warned in ((threads, False), (threads + 1, True)):
            (run_dir / RESULTS).unlink(missing_ok=True)
            torch.set_num_threads(now)
            train.main(flags(cifar10_dir, base, label_dir, resume=True))
            err = capsys.readouterr().err
            assert (f"warning: resumed with threads {threads} -> {now}: float rounding differs from the epochs "
                    "before, so the run will not end bit for bit as an uninterrupted one" in err) is warned, err
    finally:
        torch.set_num_threads(before)
    segments = json.loads((run_dir / "config.json").read_text())["segments"]
    assert [s["device"] for s in segments] == ["cpu", "cpu"]  # the start, then this resume
    cpu = segments[-1]
    gpu = {"device": "cuda", "environment": cpu["environment"] | {"gpu": "NVIDIA H200"}}
    assert _rounding_changes([gpu, cpu]) == ["device cuda -> cpu"]  # a CPU run on a GPU machine: its threads
    assert _rounding_changes([cpu | {"environment": cpu["environment"] | {"gpu": "NVIDIA H200"}}, cpu]) == []
    assert _rounding_changes([gpu, gpu | {"environment": gpu["environment"] | {"gpu": "NVIDIA H100"}}]) == [
        "gpu NVIDIA H200 -> NVIDIA H100"]
    assert _rounding_changes([{"environment": "edited"}, cpu]) == []  # nor an older train.py's, without a device
    # a torchrun run resumed in one process (or with another --nproc_per_node) rounds otherwise too: it
    # went without a word, and no segment said how many processes trained it
    assert [s["world_size"] for s in segments] == [1, 1]
    assert _rounding_changes([cpu | {"world_size": 2}, cpu]) == ["processes 2 -> 1"]
    assert _rounding_changes([{k: v for k, v in cpu.items() if k != "world_size"}, cpu]) == []


def test_a_resume_that_changes_compile_warns():
    """Compiled kernels round otherwise than eager ones (1 resnet32 epoch on the CIFAR-10 subset,
    level 5: training loss 2.4157 eager, 2.4152 with --compile): a resume that turns --compile on
    or off, or changes its mode, says so, as one on another thread count does."""
    def resumed(before, now):
        cpu, environment = torch.device("cpu"), {"threads": 2}
        start = _segments(None, {"flags": {"compile": before}, "environment": environment, "world_size": 1}, cpu)
        return _segments({"config": {"segments": start}, "history": [{}]},
                         {"flags": {"compile": now}, "environment": environment, "world_size": 1}, cpu)
    assert [s["compile"] for s in resumed(None, "default")] == ["off", "default"]  # config.json's segments
    assert _rounding_changes(resumed(None, "default")) == ["compile off -> default"]
    assert _rounding_changes(resumed("max-autotune", None)) == ["compile max-autotune -> off"]
    assert _rounding_changes(resumed(None, None)) == _rounding_changes(resumed("default", "default")) == []
    older = {"device": "cpu", "environment": {"threads": 2}}  # an older train.py's segment: not compared
    assert _rounding_changes([older, resumed(None, "default")[-1]]) == []


def test_resume_rewrites_the_metrics_from_the_checkpoint(speech_run, cifar10_dir, label_dir, tmp_path):
    """A job killed between the last checkpoint's write and the metrics' lost a row for good."""
    base, run_dir = finished_copy(speech_run, tmp_path)
    rows = (run_dir / "metrics.jsonl").read_text().splitlines()
    (run_dir / "metrics.jsonl").write_text(rows[0] + "\n")
    (run_dir / "results.json").unlink()
    run_script("train.py", *flags(cifar10_dir, base, label_dir, resume=True))
    assert (run_dir / "metrics.jsonl").read_text().splitlines() == rows


def test_resume_checks_the_checkpoint_labels_and_data(speech_run, capsys, cifar10_dir, label_dir,
                                                      tmp_path):
    base, run_dir = finished_copy(speech_run, tmp_path)
    smaller = fewer_training_images(cifar10_dir, tmp_path / "data")
    # finished, it gave its old results for other data
    line = run_cli_capture(capsys, flags(smaller, base, label_dir))
    assert "holds a finished run trained with 250 training images (now 240: another --data_dir?)" in line
    (run_dir / "results.json").unlink()   # as if stopped after its last epoch
    other = tmp_path / "labels"
    other.mkdir()
    np.save(other / "cifar10_speech.npy", np.random.RandomState(1).uniform(-80, 0, (10, 64, 64))
            .astype(np.float32))
    line = run_cli_capture(capsys, flags(cifar10_dir, base, other, resume=True))
    assert "was trained with other speech targets than" in line
    line = run_cli_capture(capsys, flags(smaller, base, label_dir, resume=True))
    assert "trained with 250 training images (now 240: another --data_dir?)" in line
    # the same counts, other pixels: another copy of the dataset (a corrupted or altered one)
    altered = tmp_path / "altered"
    shutil.copytree(cifar10_dir, altered)
    batch = altered / "cifar-10-batches-py" / "test_batch"
    with open(batch, "rb") as f:
        content = pickle.load(f, encoding="latin1")
    content["data"] = content["data"].copy()
    content["data"][0, 0] ^= 1
    batch.write_bytes(pickle.dumps(content))
    line = run_cli_capture(capsys, flags(altered, base, label_dir, resume=True))
    assert f"trained with other images or labels than {altered} holds (another copy of cifar10?)" in line
    torch.save({"weights": torch.zeros(1)}, run_dir / "last_checkpoint.pth")
    line = run_cli_capture(capsys, flags(cifar10_dir, base, label_dir, resume=True))
    assert "last_checkpoint.pth is not a train.py checkpoint (it lacks model, optimizer" in line


def with_best_epoch(run_dir, epoch):
    """Make the stopped run's last checkpoint name `epoch` as its best."""
    path = run_dir / "last_checkpoint.pth"
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["best"] = {"valid_acc": checkpoint["history"][epoch - 1]["valid_acc"], "epoch": epoch}
    torch.save(checkpoint, path)
    return checkpoint


def test_a_lost_best_checkpoint_on_resume_says_what_works_and_writes_nothing(speech_run, capsys,
                                                                            cifar10_dir, label_dir, tmp_path):
    """The old advice (delete it) led to "does not exist" and no advice; the resume had already
    rewritten config.json and metrics.jsonl. (Lost, since the last checkpoint is not the best.)"""
    base, run_dir = finished_copy(speech_run, tmp_path)
    (run_dir / "results.json").unlink()
    with_best_epoch(run_dir, 1)  # of 2: the best checkpoint alone holds its weights
    best = run_dir / "speech_seed3_resnet32_best_model.pth"
    whole = best.read_bytes()
    best.write_bytes(whole[:1000])
    (run_dir / "metrics.jsonl").write_text("")
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    for _ in range(2):
        line = run_cli_capture(capsys, flags(cifar10_dir, base, label_dir, resume=True))
        assert ("the best epoch's weights (epoch 1) are lost and last_checkpoint.pth (epoch 2) cannot "
                "restore them: pass --force") in line
        assert {p.name: p.read_bytes() for p in run_dir.iterdir() if p.name != best.name} == \
            {k: v for k, v in before.items() if k != best.name}
        best.unlink(missing_ok=True)
    torch.save(torch.load(io.BytesIO(whole), weights_only=True) | {"epoch": 2}, best)  # epoch 1's is needed
    line = run_cli_capture(capsys, flags(cifar10_dir, base, label_dir, resume=True))
    assert f"{best} is not the checkpoint of the run's best epoch; the best epoch's weights" in line


def test_a_job_stopped_between_the_checkpoint_writes_resumes_with_the_best_weights(
        speech_run, cifar10_dir, label_dir, tmp_path):
    """The last checkpoint is written first: a job stopped before the best one (here: an old best
    checkpoint) resumes with the last checkpoint's weights, its best epoch, and rewrites the best."""
    base, run_dir = finished_copy(speech_run, tmp_path)
    (run_dir / "results.json").unlink()
    last = with_best_epoch(run_dir, 2)
    best = run_dir / "speech_seed3_resnet32_best_model.pth"
    stale = torch.load(best, weights_only=True)
    stale["model"] = {k: torch.zeros_like(v) for k, v in stale["model"].items()}
    torch.save(stale | {"epoch": 1}, best)
    resumed = last_json(run_script("train.py", *flags(cifar10_dir, base, label_dir, resume=True)))
    rewritten = torch.load(best, weights_only=True)
    assert rewritten["epoch"] == 2 and all(torch.equal(rewritten["model"][k], v) for k, v in last["model"].items())
    # the final evaluation is of epoch 2's weights, not the old best checkpoint's
    assert resumed["best_epoch"] == 2
    assert resumed["valid_loss"] == pytest.approx(last["history"][1]["valid_loss"], rel=1e-6)


def test_a_finished_run_resumed_without_its_results_keeps_its_best_checkpoint(
        speech_run, cifar10_dir, label_dir, tmp_path):
    """A finished run whose results.json is gone (deleted, or its job stopped in the final
    evaluation) resumes to the same results and leaves its best checkpoint byte for byte as it was:
    attack.py's results count for the file of their checkpoint_sha256. It was written again (with
    the resume's config in it), and every attack of the run computed again."""
    base, run_dir = finished_copy(speech_run, tmp_path)
    results = json.loads((run_dir / "results.json").read_text())
    best = run_dir / "speech_seed3_resnet32_best_model.pth"
    before = best.read_bytes()
    (run_dir / "results.json").unlink()
    resumed = last_json(run_script("train.py", *flags(cifar10_dir, base, label_dir, resume=True)))
    assert best.read_bytes() == before
    assert (resumed["best_epoch"], resumed["test_acc"]) == (results["best_epoch"], results["test_acc"])


def test_a_signal_after_the_result_line_changes_no_exit_status(speech_run, cifar10_dir, label_dir):
    """SLURM's USR1 in the half second of torch's teardown after the JSON line killed the job
    (exit -10), and the task script ran none of the stages after it."""
    base, _ = speech_run
    codes = []
    for delay in (0.05, 0.2):
        proc = subprocess.Popen([sys.executable, "train.py", *flags(cifar10_dir, base, label_dir)], cwd=REPO,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert json.loads(proc.stdout.readline())["epochs"] == 2  # the finished run's results
        time.sleep(delay)
        proc.send_signal(signal.SIGUSR1)
        proc.communicate(timeout=60)  # the rest of stdout, then the pipe closed
        codes.append(proc.returncode)
    assert codes == [0, 0]


@pytest.mark.parametrize("when", ["exit handler", "teardown"])
def test_ctrl_c_after_the_result_line_changes_no_exit_status(when, speech_run, cifar10_dir, label_dir, tmp_path):
    """A Ctrl-C in the half second of torch's teardown after the JSON line was a KeyboardInterrupt
    inside its exit handlers ('Exception ignored in atexit callback' and a torch traceback on
    stderr), or, once Python had put SIGINT's default action back, killed the finished run (exit
    -2). The run's own process sends it here, from an exit handler registered as torch's are
    (before main), or from an object freed with the modules, after Python's handlers are gone."""
    base, _ = speech_run
    driver = tmp_path / "driver.py"
    driver.write_text(textwrap.dedent("""
        import atexit, os, signal, sys, time
        from utils import errors
        errors.quiet_interrupts()  # as train.py's first lines
        import train

        def interrupt(kill=os.kill, pid=os.getpid(), sig=signal.SIGINT, sleep=time.sleep):
            kill(pid, sig)
            sleep(1)  # where the Ctrl-C is not ignored, it lands here

        class Teardown:
            def __del__(self):
                interrupt()

        if sys.argv[1] == "exit handler":
            atexit.register(interrupt)
        else:
            kept = Teardown()
        errors.run_cli(train.main, sys.argv[2:])
    """))
    proc = subprocess.run([sys.executable, str(driver), when, *flags(cifar10_dir, base, label_dir)], cwd=REPO,
                          capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0 and json.loads(proc.stdout)["epochs"] == 2  # the finished run's results
    [line] = proc.stderr.splitlines()
    assert unstamped(line) == (f"{Path(json.loads(proc.stdout)['run_dir']) / RESULTS} exists: run already complete "
                               "(pass --force to train again)")


def test_run_cli_in_process_leaves_the_callers_ctrl_c():
    """Only a script's process ignores Ctrl-C after its main: a caller of run_cli (a test, a
    driver) that catches its SystemExit keeps its own."""
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(SystemExit) as ended:
        run_cli(lambda argv: None)
    assert ended.value.code == 0 and signal.getsignal(signal.SIGINT) is before


def test_no_validation_images_is_no_validation_accuracy(cifar10_dir, label_dir, tmp_path):
    proc = run_script("train.py", *flags(cifar10_dir, tmp_path, label_dir, epochs=1),
                      "--valid_size", "0")
    result = last_json(proc)
    assert result["valid_acc"] is None and result["valid_loss"] is None
    assert result["best_epoch"] == 1 and 0 <= result["test_acc"] <= 1
    assert "no validation images" in proc.stderr
    run_dir = Path(result["run_dir"])  # its checkpoint's best valid_acc, None, resumes
    (run_dir / RESULTS).unlink()
    resumed = last_json(run_script("train.py", *flags(cifar10_dir, tmp_path, label_dir, epochs=1),
                                   "--valid_size", "0", "--resume"))
    assert resumed["valid_acc"] is None and resumed["test_acc"] == result["test_acc"]


@pytest.mark.parametrize("lr, diverged", [("1e6", "training"), ("1e3", "validation")])
def test_a_diverged_run_is_strict_json_and_a_warning(cifar10_dir, label_dir, tmp_path, lr, diverged):
    """NaN is not JSON: a notebook's json.loads in strict mode, or any other language's parser,
    must read a diverged run's results (its losses are null). At lr 1e3 the training loss stays
    finite (3e10) while the weights do not: that too was a diverged run, without a warning."""
    def strict(text):
        return json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in JSON"))
    proc = run_script("train.py", *flags(cifar10_dir, tmp_path, label_dir, epochs=1, lr=lr))
    result = strict(proc.stdout.strip().splitlines()[-1])
    assert result["test_loss"] is None and 0 <= result["test_acc"] <= 1
    run_dir = Path(result["run_dir"])
    assert strict((run_dir / "results.json").read_text()) == result
    row = strict((run_dir / "metrics.jsonl").read_text())
    assert row["valid_loss"] is None and (row["train_loss"] is None) == (diverged == "training")
    assert f"warning: the {diverged} loss is nan in epoch 1: the run diverged" in proc.stderr


def test_amp_warns_of_targets_its_bf16_outputs_cannot_decode(label_dir, tmp_path, capsys):
    """train.py and attack.py --amp with class targets 1000, 1001, ..., 1009: the model's bf16 outputs
    cannot decode as 6 of the classes, and the run trained without a word. A warning now says so,
    before the data loads (here, none is there); not without --amp, nor for targets bf16 decodes."""
    from architecture import build_model
    from utils.labelspace import TargetSpace
    from utils.runs import save_checkpoint
    labels = tmp_path / "labels"
    shutil.copytree(label_dir, labels)
    np.save(labels / "cifar10_offset.npy", 1000 + np.arange(10, dtype=np.float32)[:, None])
    warning = ("warning: label offset: class 1's own target, rounded to bf16 as the model's outputs are "
               "under --amp, decodes as class 0; its targets are too close together for bf16's 8 "
               "significant bits; drop --amp (float32 tells them apart)")
    missing = tmp_path / "no data"
    for label, amp, warned in (("offset", True, True), ("offset", False, False), ("speech", True, False)):
        argv = flags(missing, tmp_path / "runs", labels, label=label, **({"amp": True} if amp else {}))
        with pytest.raises(UsageError, match="cifar10 not found in"):
            train.main(argv)
        err = capsys.readouterr().err
        assert (warning in err.splitlines()) == warned, err
    space = TargetSpace("offset", np.load(labels / "cifar10_offset.npy"))
    model = build_model("resnet32", space.output_shape)
    checkpoint = tmp_path / "offset.pth"
    save_checkpoint(checkpoint, {"model": model.state_dict(), "model_args": model.model_args,
                                 "label_space": space.state()})
    with pytest.raises(UsageError, match="cifar10 not found in"):
        attack.main(["--checkpoint", str(checkpoint), "--data_dir", str(missing), "--amp", "--device", "cpu"])
    assert warning in capsys.readouterr().err.splitlines()


def test_a_diverged_run_returns_its_json_line_to_a_notebook(cifar10_dir, label_dir, tmp_path):
    """train.main(argv) returns the JSON line's dict: null losses, as a rerun of the finished run
    returns them, not NaN (a notebook's `result["test_loss"] is None` held on the rerun alone)."""
    argv = flags(cifar10_dir, tmp_path, label_dir, epochs=1, lr="1e6")
    result = train.main(argv)
    assert result["test_loss"] is None and result["valid_loss"] is None
    assert result == json.loads((Path(result["run_dir"]) / "results.json").read_text()) == train.main(argv)


def test_a_full_disk_is_one_line_and_leaves_no_partial_file(cifar10_dir, label_dir, tmp_path):
    """The first checkpoint (1.9 MB) passes a 1 MB file-size limit no more than a full disk:
    torch.save's error, a RuntimeError around the OSError, is still the one error line."""
    limit = textwrap.dedent(f"""
        import resource, runpy, signal, sys
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # a failed write, not a killed process
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
        sys.argv = ["train.py"] + sys.argv[1:]
        runpy.run_path({str(REPO / "train.py")!r}, run_name="__main__")
    """)
    proc = subprocess.run([sys.executable, "-c", limit, *flags(cifar10_dir, tmp_path, label_dir,
                                                               epochs=1)],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    run_dir = tmp_path / "cifar10" / "seed3" / "resnet32" / "model_speech"
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: could not write {run_dir / 'last_checkpoint.pth'}: File too large")
    assert sorted(p.name for p in run_dir.iterdir()) == [".lock", "config.json", "metrics.jsonl"]
    assert [row["epoch"] for row in metrics(run_dir)] == [1]  # its row is whole; a --resume rewrites it


def test_a_metrics_row_that_does_not_fit_on_the_disk_is_cut_off(tmp_path):
    """A full disk mid-append left half a row, which the next append ran on into, and an error
    naming no file ('could not write a file')."""
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"epoch": 1}\n')
    code = textwrap.dedent(f"""
        import resource, signal, sys
        from utils.runs import append_jsonl
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # a failed write, not a killed process
        resource.setrlimit(resource.RLIMIT_FSIZE, (30, 30))  # room for 17 of the row's bytes
        try:
            append_jsonl({str(path)!r}, {{"epoch": 2, "train_loss": 1.25}})
        except OSError as err:
            print(err.filename, err.strerror)
    """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.stdout == f"{path} File too large\n", proc.stderr
    assert path.read_text() == '{"epoch": 1}\n'


def test_cli_error_through_a_subprocess(tmp_path, label_dir):
    proc = run_script("train.py", *flags(tmp_path, tmp_path, label_dir), check=False)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr


@pytest.mark.skipif(not (SUBSET.exists() and REFERENCE_LABELS.exists()), reason="../shared is absent")
def test_issue_command_on_the_real_subset(tmp_path):
    """The issue's own command, cut to a few batches' worth of images to stay quick."""
    proc = run_script("train.py", "--model", "resnet32", "--dataset", "cifar10", "--label", "speech",
                      "--seed", "7", "--data_dir", SUBSET, "--label_dir", REFERENCE_LABELS,
                      "--valid_size", "1000", "--level", "5", "--epochs", "1", "--base_dir", tmp_path)
    result = last_json(proc)
    assert result["train_images"] == 258 and result["test_images"] == 1017


PUBLISHED = sorted(p.name[len("cifar10_"):-len(".npy")] for p in REFERENCE_LABELS.glob("cifar10_*.npy"))


@pytest.mark.skipif(not (SUBSET.exists() and PUBLISHED), reason="../shared is absent")
@pytest.mark.parametrize("label", PUBLISHED)
def test_every_published_label_trains_on_the_real_subset(label, tmp_path, capsys):
    """Each of the paper's label files (its own shapes: 64x64, 48x48, 50- and 10-vectors) trains with
    the issue's flags, in-process and cut to 2% of the subset; the JSON line names its shape's head."""
    result = train.main(["--model", "resnet32", "--dataset", "cifar10", "--label", label, "--seed", "7",
                         "--data_dir", str(SUBSET), "--label_dir", str(REFERENCE_LABELS),
                         "--valid_size", "1000", "--level", "2", "--epochs", "1",
                         "--base_dir", str(tmp_path), "--device", "cpu"])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == result
    assert result["label"] == label and result["train_images"] == 103 and result["test_images"] == 1017
    assert 0 <= result["test_acc"] <= 1 and np.isfinite(result["test_loss"])
    config = json.loads((Path(result["run_dir"]) / "config.json").read_text())
    assert tuple(config["label_shape"]) == np.load(REFERENCE_LABELS / f"cifar10_{label}.npy").shape[1:]


def test_resuming_under_compile_keeps_the_traced_sgd():
    """A checkpoint of an eager run (fused SGD, a float lr) resumed with --compile: the momentum
    and lr are the checkpoint's, the implementation stays the one torch.compile traces."""
    from architecture import build_model
    from utils.training import load_optimizer_state, make_optimizer
    model = build_model("resnet32", (10,))
    eager = make_optimizer(model, 0.1)
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    eager.step()
    traced = make_optimizer(model, 0.5, compile="default")
    lr = traced.param_groups[0]["lr"]
    load_optimizer_state(traced, eager.state_dict())
    group = traced.param_groups[0]
    assert group["foreach"] and not group["fused"]
    assert group["lr"] is lr and lr.item() == pytest.approx(0.1)  # the same tensor, the saved value
    first = next(model.parameters())
    assert torch.equal(traced.state[first]["momentum_buffer"], eager.state[first]["momentum_buffer"])
    # And the other way: a compiled run's checkpoint (a tensor lr) resumed eagerly.
    eager_again = make_optimizer(model, 0.3)
    load_optimizer_state(eager_again, traced.state_dict())
    assert eager_again.param_groups[0]["fused"] and eager_again.param_groups[0]["lr"] == pytest.approx(0.1)
    assert isinstance(eager_again.param_groups[0]["lr"], float)


def test_progress_on_terminals_with_and_without_a_width():
    """tqdm draws nothing on a terminal that reports 0 columns (some containers' and CI's), or
    columns but 0 rows (`stty cols 120` in one), and a tty suppressed the plain lines too: no
    progress at all. A bar is closed however its block ends, so the error line after a Ctrl-C
    starts a line of its own."""
    import fcntl
    import pty
    import select
    import struct
    import termios

    from utils.progress import Progress

    def shown(screen):  # all that reached the terminal: the kernel passes it on asynchronously
        data = b""
        while select.select([screen], [], [], 1.0)[0] and (chunk := screen.read(4096)):
            data += chunk
        return data
    leader, follower = pty.openpty()
    with os.fdopen(follower, "w") as stream, os.fdopen(leader, "rb", buffering=0) as screen:
        for rows, columns in ((24, 0), (0, 120)):
            fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
            with Progress(2, "run", "epoch", stream=stream) as progress:
                assert progress.bar is None
                progress.step("epoch 1/2 loss 1.0", loss="1.0")
            assert b"epoch 1/2 loss 1.0" in shown(screen)
        fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
        with pytest.raises(KeyboardInterrupt):
            with Progress(2, "run", "epoch", stream=stream) as progress:
                assert progress.bar is not None
                progress.message("warning: a message")
                raise KeyboardInterrupt
        assert progress.bar is None
        screen_bytes = shown(screen)
        assert screen_bytes.endswith(b"\r\n")  # closed: the next line starts afresh
        # a message (a warning mid-run) clears the bar's line and is a line of its own, the bar
        # drawn again below it: printed after the bar, it ran on from the bar's text
        assert b"\rwarning: a message\r\n" in screen_bytes, screen_bytes


def test_a_bar_on_an_80_column_terminal_shows_the_steps_numbers_whole():
    """On an 80-column terminal tqdm cut the bar's line at its end, where its rate ("3.21s/epoch")
    had pushed the numbers the bar is for: a run showed "valid=12." for 12.00%, a resnet110's
    bar no validation accuracy, an attack's "acc=1" for 14.06%. A long label's description gives
    way to them too: "resnet110 normal_dim=1000" with a regression loss showed "valid=93."."""
    import fcntl
    import pty
    import select
    import struct
    import termios

    from utils.progress import Progress

    leader, follower = pty.openpty()
    with os.fdopen(follower, "w") as stream, os.fdopen(leader, "rb", buffering=0) as screen:
        fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
        with Progress(200, "resnet110 category", "epoch", initial=136, stream=stream) as progress:
            progress.step("epoch 137/200", loss="0.123", valid="93.45%")
        with Progress(30, "resnet110 composite attacks", "setting", stream=stream) as progress:
            progress.step("[1/30] pgd", acc="14.06%")
        with Progress(200, "resnet110 normal_dim=1000", "epoch", initial=136, stream=stream) as progress:
            progress.step("epoch 137/200", loss="41.100", valid="93.45%")
        data = b""
        while select.select([screen], [], [], 1.0)[0] and (chunk := screen.read(4096)):
            data += chunk
    lines = data.decode().replace("\r\n", "\r").split("\r")
    assert max(map(len, lines)) <= 80, lines
    assert any(re.search(r" 137/200 \[[\d:]+<[\d:]+, loss=0\.123, valid=93\.45%\]$", line) for line in lines), lines
    assert any(re.search(r" 1/30 \[[\d:]+<[\d:]+, acc=14\.06%\]$", line) for line in lines), lines
    assert any(re.search(r"^resnet110 normal_dim\S*…: .* 137/200 \[[\d:]+<[\d:]+, loss=41\.100, valid=93\.45%\]$",
                         line) for line in lines), lines


def test_a_log_file_line_says_when_it_was_written():
    """A cluster log of epoch lines said how long each epoch took, not when it ended: a stalled
    job's log did not show when it stalled. Then it said the time of day alone ("11:05:47"), of no
    day: a log read days later, or a job requeued the next day, did not say when an epoch ended or
    how long the job sat preempted. Messages (warnings) keep their "warning:" start."""
    import datetime
    import io

    from utils.progress import Progress
    log = io.StringIO()
    with Progress(2, "run", "epoch", stream=log) as progress:
        before = datetime.datetime.now().replace(microsecond=0)
        progress.step("epoch 1/2 loss 1.0", loss="1.0")
        progress.message("warning: a message")
        after = datetime.datetime.now()
    first, second = log.getvalue().splitlines()
    stamp = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d) epoch 1/2 loss 1\.0", first)
    assert stamp, first
    assert before <= datetime.datetime.fromisoformat(stamp[1]) <= after
    assert second == "warning: a message"


def test_a_log_file_line_says_the_time_left(monkeypatch):
    """A terminal's bar showed the time left; a log file's lines (a cluster job's) did not, so a
    200-epoch run's log said nothing of when it would end. Its epoch lines now end with it, as this
    process's epochs took on average (a resumed run's from its resume); the last has none, and steps
    of unequal cost (an attack's settings) none at all."""
    from utils.progress import Progress
    clock = iter([1000.0, 1090.0, 1270.0, 2000.0])
    monkeypatch.setattr(time, "monotonic", lambda: next(clock))
    log = io.StringIO()
    with Progress(200, "run", "epoch", initial=197, stream=log, eta=True) as progress:  # resumed after 197
        for epoch in (198, 199, 200):
            progress.step(f"epoch {epoch}/200")
    with Progress(2, "run", "setting", stream=log) as progress:
        progress.step("[1/2] fgsm")
    assert [line.split(" ", 1)[1] for line in log.getvalue().splitlines()] == [
        "epoch 198/200 eta 0:03:00", "epoch 199/200 eta 0:02:15", "epoch 200/200", "[1/2] fgsm"]


def test_each_stderr_line_is_one_write(monkeypatch):
    """print writes a line's text and its newline apart on Python's unbuffered stderr: under
    torchrun two ranks' error lines came out spliced ("...not torchrunerror: ...not torchrun" and an
    empty line). A line written whole is one write(2) of at most a pipe's atomic size, which no
    other process's line can split."""
    import io

    from utils.errors import UsageError, call_cli, log
    from utils.progress import Progress

    class Writes(io.StringIO):
        def __init__(self):
            super().__init__()
            self.calls = []

        def write(self, text):
            self.calls.append(text)
            return super().write(text)

    stderr = Writes()
    monkeypatch.setattr(sys, "stderr", stderr)

    def refused(argv):
        raise UsageError("attack.py runs in one process: start it with python, not torchrun")
    assert call_cli(refused, []) == 2
    with Progress(2, "run", "epoch") as progress:
        progress.step("epoch 1/2 loss 1.0", loss="1.0")
        progress.message("warning: a message")
    assert len(stderr.calls) == 3, stderr.calls
    assert stderr.calls[0] == "error: attack.py runs in one process: start it with python, not torchrun\n"
    assert all(call.endswith("\n") and call.count("\n") == 1 for call in stderr.calls), stderr.calls
    monkeypatch.setattr(sys, "stderr", None)  # closed (`2>&-`) while modules load: the line is dropped
    log("error: interrupted")


def test_run_training_leaves_a_callers_namespace_as_it_was(monkeypatch, cifar10_dir, label_dir, tmp_path):
    """run_training(args) resolves its folders in a copy: a notebook's namespace, reused for another
    run, keeps the relative folders it gave. Its --lr, unset, is its --label's default, as train.py's
    (a namespace straight from the parser was "TypeError: '<' not supported between instances of
    'NoneType' and 'float'", in torch's SGD, without train.label_defaults first)."""
    from utils.training import run_training
    monkeypatch.chdir(tmp_path)
    args = train.build_parser().parse_args(
        flags(os.path.relpath(cifar10_dir), "runs", label_dir, label="category", epochs=1))
    given = dict(vars(args))
    result = run_training(args)
    assert result["run_dir"] == str(tmp_path.resolve() / "runs/cifar10/seed3/resnet32/model_category")
    assert vars(args) == given and args.base_dir == "runs" and args.lr is None
    flags_run = json.loads((Path(result["run_dir"]) / "config.json").read_text())["flags"]
    assert (flags_run["lr"], flags_run["batch_size"]) == (0.1, 64)


def test_a_notebook_keeps_its_signal_handlers_and_random_state(monkeypatch, cifar10_dir, label_dir,
                                                               tmp_path):
    """run_training() in a notebook's kernel took over SIGTERM and SIGUSR1 for good, a signal once
    caught stopped every later run at its start (exit 75), and the run's seed reseeded torch's
    global RNG."""
    from utils import training
    caught = []
    ours = signal.signal(signal.SIGTERM, lambda *frame: caught.append(frame))
    real = training.train_epoch

    def signalled(*args, **kwargs):  # a SIGTERM in the first epoch, caught by the run's own handler
        os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kwargs)
    try:
        monkeypatch.setattr(training, "train_epoch", signalled)
        with pytest.raises(SystemExit) as stopped:
            train.main(flags(cifar10_dir, tmp_path, label_dir, label="category", epochs=1))
        assert stopped.value.code == 75 and signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL
        handler = signal.getsignal(signal.SIGTERM)
        monkeypatch.setattr(training, "train_epoch", real)
        torch.manual_seed(123)
        expected = torch.rand(3)
        torch.manual_seed(123)
        result = train.main(flags(cifar10_dir, tmp_path, label_dir, label="category", epochs=1))
        assert result["epochs"] == 1 and result["best_epoch"] == 1
        assert torch.equal(torch.rand(3), expected)
    finally:
        signal.signal(signal.SIGTERM, ours)
    assert handler is not training.preempt._handle and not caught  # the run's, not the kernel's


@pytest.mark.parametrize("cell", ["autocast", "inference_mode"])
def test_a_callers_autocast_or_inference_mode_leaves_the_run_as_its_flags_say(cell, cifar10_dir, label_dir,
                                                                              tmp_path):
    """train.main in a notebook cell's `with torch.autocast(...)` trained and scored the run in bf16
    while its config.json said amp false (a validation loss of 399 against float32's 70 on the
    CIFAR-10 subset); in `with torch.inference_mode()` it ended in a RuntimeError traceback
    ('element 0 of tensors does not require grad'). The run's numbers are float32's, as the flags say."""
    plain = train.main(flags(cifar10_dir, tmp_path / "plain", label_dir, label="category", epochs=1))
    with torch.autocast("cpu", dtype=torch.bfloat16) if cell == "autocast" else torch.inference_mode():
        inside = train.main(flags(cifar10_dir, tmp_path / cell, label_dir, label="category", epochs=1))
    assert metrics(Path(inside["run_dir"])) == metrics(Path(plain["run_dir"]))
    assert (inside["test_loss"], inside["test_acc"]) == (plain["test_loss"], plain["test_acc"])
    assert json.loads((Path(inside["run_dir"]) / "config.json").read_text())["flags"]["amp"] is False


def test_a_signal_in_the_last_epochs_validation_reaches_the_caller_after_the_results(
        monkeypatch, cifar10_dir, label_dir, tmp_path):
    """It reached the caller's handler before the best checkpoint and results.json were written: a
    notebook or driver with SIGTERM's default handler was killed with its run trained, and the next
    train.main refused the run as unfinished ('pass --resume')."""
    from utils import training
    run_dir = tmp_path / "cifar10" / "seed3" / "resnet32" / "model_category"
    written = []
    ours = signal.signal(signal.SIGTERM, lambda *frame: written.append(sorted(
        p.name for p in run_dir.iterdir() if not p.name.startswith("."))))
    real = training.evaluate

    def signalled(*args, **kwargs):  # the first evaluation: the last (only) epoch's validation
        if not written and not training.preempt.requested():
            os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kwargs)
    try:
        monkeypatch.setattr(training, "evaluate", signalled)
        result = train.main(flags(cifar10_dir, tmp_path, label_dir, label="category", epochs=1))
    finally:
        signal.signal(signal.SIGTERM, ours)
    assert result["best_epoch"] == 1 and Path(result["run_dir"]) == run_dir
    assert written == [["category_seed3_resnet32_best_model.pth", "config.json", CONFUSION, LAST_CHECKPOINT,
                        "metrics.jsonl", RESULTS]]  # once, with every file of the run there


@pytest.mark.parametrize("main, flag, message", [
    (train.main, "--bogus", "unrecognized arguments: --bogus (see train.py --help)"),
    (train.main, "--label_d", "--label_d: shortened flags are refused (a new flag could change what they "
     "mean); write --label_dir (see train.py --help)"),
    (train.main, "--lab", "--lab: shortened flags are refused (a new flag could change what they mean); "
     "write one of --label_granularity, --label, --label_dir, --label_noise (see train.py --help)"),
    # argparse's '--' starts every flag, and is none: it was "shortened", listing them all
    (train.main, "--", "unrecognized arguments: -- (see train.py --help)"),
    # an empty argument (`train.py "$EXTRA"` with EXTRA unset) said "unrecognized arguments: (see ...)",
    # naming nothing; one holding spaces read as several
    (train.main, "", "unrecognized arguments: '' (see train.py --help)"),
    (report.main, "8 / 255", "unrecognized arguments: '8 / 255' (see report.py --help)"),
    (attack.main, "--bogus", "unrecognized arguments: --bogus (see attack.py --help)"),
    (report.main, "--bogus", "unrecognized arguments: --bogus (see report.py --help)"),
    # a near miss names the flag: a hyphen for an underscore, a letter out of place, a name half-remembered
    (report.main, "--base-dir", "unrecognized arguments: --base-dir; did you mean --base_dir? (see report.py "
     "--help)"),
    (train.main, "--batchsize", "unrecognized arguments: --batchsize; did you mean --batch_size? (see "
     "train.py --help)"),
    (attack.main, "--n_images", "unrecognized arguments: --n_images; did you mean --num_images? (see "
     "attack.py --help)"),
    (sweep.main, "--stages", "argument --stages: expected at least one argument (see sweep.py --help)"),
])
def test_a_bad_flag_in_process_is_a_usage_error(monkeypatch, main, flag, message):
    """It was SystemExit(2) after a line naming the caller (ipykernel_launcher.py --help), then a
    UsageError shown below argparse's own traceback ('During handling of the above exception')."""
    monkeypatch.setattr(sys, "argv", ["ipykernel_launcher.py"])
    with pytest.raises(UsageError) as err:
        main([flag])
    assert str(err.value) == message
    shown = "".join(traceback.format_exception(err.value))
    assert shown.count("Traceback") == 1 and "ArgumentError" not in shown, shown


def test_in_process_argv_may_hold_paths_and_numbers_and_is_what_the_run_records(cifar10_dir, label_dir,
                                                                                   tmp_path, monkeypatch):
    """main(["--data_dir", Path(...), "--epochs", 1]) was a TypeError from argparse's insides ('PosixPath'
    object is not subscriptable), and config.json and attack_results.json recorded the kernel's
    sys.argv (ipykernel_launcher.py -f ...) as the run's command line."""
    argv = flags(cifar10_dir, tmp_path, label_dir, label="category", epochs=1)
    argv[argv.index("--epochs") + 1] = 1
    argv[argv.index("--data_dir") + 1] = Path(cifar10_dir)
    result = train.main(argv)
    config = json.loads((Path(result["run_dir"]) / "config.json").read_text())
    assert config["environment"]["argv"] == ["train.py", *map(str, argv)] and config["flags"]["epochs"] == 1
    monkeypatch.chdir(Path(cifar10_dir).parent)  # relative folders are recorded absolute, as train.py's
    attack_argv = ["--checkpoint", Path(result["checkpoint"]), "--label_dir", label_dir, "--attacks", "fgsm",
                   "--epsilons", "8/255", "--targeted", "no", "--num_images", 5, "--examples", 0,
                   "--device", "cpu", "--data_dir", Path(cifar10_dir).name]
    summary = attack.main(attack_argv)
    recorded = json.loads(Path(summary["results"]).read_text())
    assert recorded["environment"]["argv"] == ["attack.py", *map(str, attack_argv)] and summary["num_images"] == 5
    assert recorded["config"]["data_dir"] == config["flags"]["data_dir"] == str(Path(cifar10_dir).absolute())
    assert recorded["config"]["label_dir"] == str(Path(label_dir).absolute())
    with pytest.raises(UsageError) as err:
        train.main("--epochs 1")
    assert str(err.value) == "train.py: argv is a list of arguments, not one string (shlex.split it)"


@pytest.mark.parametrize("script", ["train", "attack", "report"])
def test_main_without_a_list_in_a_notebook_says_to_pass_one(script, monkeypatch):
    """A notebook's main() with no list read the kernel's own command line and said only
    'unrecognized arguments: -f .../kernel-1.json': the error now says whose arguments those are
    and what to pass, before any work. The command line's (no kernel) is argparse's error as it was."""
    import importlib
    main = importlib.import_module(script).main
    kernel_file = "/root/.local/share/jupyter/runtime/kernel-1.json"
    monkeypatch.setattr(sys, "argv", ["ipykernel_launcher.py", "-f", kernel_file])
    with pytest.raises(UsageError) as err:
        main()
    assert "ipykernel" not in sys.modules and str(err.value).startswith(f"unrecognized arguments: -f {kernel_file}")
    assert "notebook" not in str(err.value)
    monkeypatch.setitem(sys.modules, "ipykernel", types.ModuleType("ipykernel"))
    with pytest.raises(UsageError) as err:
        main()
    assert str(err.value) == (f"unrecognized arguments: -f {kernel_file}, the notebook kernel's own command line, "
                              "which main() reads when given no list; pass the flags as one (main([]) for the "
                              f"defaults) (see {script}.py --help)")


class TinyTrunk(torch.nn.Module):
    """A network of one's own, as README says to register one: features (N, F), out_features F."""

    def __init__(self):
        super().__init__()
        self.layers = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, stride=4), torch.nn.ReLU(),
                                          torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
        self.out_features = 4

    def forward(self, x):
        return self.layers(x)


def test_a_network_a_notebook_registers_is_a_model_of_the_next_run(cifar10_dir, label_dir, tmp_path,
                                                                   monkeypatch):
    """--model's choices were ARCHITECTURES's entries when utils.flags was imported: a network the
    kernel registered after that was 'argument --model: invalid choice' for train.main and attack.main."""
    from architecture import ARCHITECTURES
    monkeypatch.setitem(ARCHITECTURES, "tiny", TinyTrunk)
    argv = flags(cifar10_dir, tmp_path, label_dir, label="category", epochs=1)
    argv[argv.index("--model") + 1] = "tiny"
    result = train.main(argv)
    assert result["model"] == "tiny"
    assert Path(result["checkpoint"]).name == "category_seed3_tiny_best_model.pth"
    summary = attack.main(["--model", "tiny", "--label", "category", "--seed", "3", "--base_dir", tmp_path,
                           "--data_dir", cifar10_dir, "--attacks", "fgsm", "--epsilons", "8/255",
                           "--targeted", "no", "--num_images", 5, "--examples", 0, "--device", "cpu"])
    assert summary["num_images"] == 5 and summary["run_dir"] == result["run_dir"]


def test_runs_in_a_notebooks_threads_keep_their_seeds_initial_weights(cifar10_dir, label_dir, tmp_path,
                                                                      monkeypatch):
    """Two runs started in threads of one process (a notebook's, one per GPU) each seeded torch's
    global generator and drew their initial weights from it together: each run's heads were drawn
    from the other's seed, so neither run's weights were its seed's (a run of that seed alone gave
    others), and the caller's random state was left at one run's draws. Here the two builds are
    made to overlap: each waits for the other (3 s at most) once its trunk is built, then the first
    to come draws its head first."""
    import architecture
    monkeypatch.setitem(ARCHITECTURES, "tiny", TinyTrunk)
    both_built, first_head = threading.Barrier(2), threading.Event()
    real_head = architecture.make_head

    def head_after_the_other_trunk(*args):
        try:
            second = both_built.wait(timeout=3) == 1  # CPython numbers the threads as they come
        except threading.BrokenBarrierError:  # builds that take turns: the wait ends
            second = False
        if second:  # the first thread's head is drawn first
            first_head.wait(timeout=3)
        head = real_head(*args)
        first_head.set()
        return head
    monkeypatch.setattr(architecture, "make_head", head_after_the_other_trunk)

    def argv(seed, base_dir):
        argv = flags(cifar10_dir, base_dir, label_dir, label="glove", epochs=1, level=20)
        argv[argv.index("--model") + 1], argv[argv.index("--seed") + 1] = "tiny", str(seed)
        return argv
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    runs = {}
    threads = [threading.Thread(target=lambda seed: runs.update({seed: train.main(argv(seed, tmp_path / "threads"))}),
                                args=(seed,)) for seed in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert torch.equal(torch.rand(3), expected)
    monkeypatch.setattr(architecture, "make_head", real_head)
    for seed in (1, 2):
        alone = train.main(argv(seed, tmp_path / "alone"))
        assert same_weights(Path(runs[seed]["run_dir"]), Path(alone["run_dir"])), seed


@needs_compiler
def test_a_notebooks_later_run_warns_of_its_own_graphs_without_cuda_graphs(cifar10_dir, label_dir, tmp_path,
                                                                           monkeypatch, capsys):
    """--compile reduce-overhead's warning after the first epoch counted every graph the process had
    run without CUDA graphs: a notebook's second run (tiny trunk, CPU) said 5 for its own 2, and a
    run on a GPU that recorded all of its own warned of graphs an earlier run or cell ran on the CPU."""
    from torch._dynamo.utils import counters
    monkeypatch.setitem(ARCHITECTURES, "tiny", TinyTrunk)
    earlier = counters["inductor"]["cudagraph_skips"] + 100  # an earlier run's in this process, a cell's
    monkeypatch.setitem(counters["inductor"], "cudagraph_skips", earlier)
    argv = flags(cifar10_dir, tmp_path, label_dir, label="category", epochs=1, compile="reduce-overhead")
    argv[argv.index("--model") + 1] = "tiny"
    train.main(argv)
    warned, = [line for line in capsys.readouterr().err.splitlines() if "without CUDA graphs" in line]
    skipped = int(re.fullmatch(r"warning: --compile reduce-overhead ran (\d+) compiled graph\(s\) without CUDA "
                               r"graphs \(there are none on the CPU\)", warned).group(1))
    assert 0 < skipped <= counters["inductor"]["cudagraph_skips"] - earlier, warned  # this run's graphs alone


@pytest.mark.parametrize("command, flags", [
    (["train.py"], ["--label", "--level", "--checkpoint_seconds", "--resume"]),
    (["attack.py"], ["--checkpoint", "--attacks", "--epsilons", "--paper_protocol"]),
    (["sweep.py"], ["--labels", "--seeds", "--slurm", "--dry_run"]),
    (["report.py"], ["--base_dir", "--out"]),
    (["bench/bench.py"], ["--what", "--record"]),
    (["-m", "labels.generate"], ["--label", "--out"]),
    (["-m", "labels.stats"], ["--json", "--compare"]),
])
@pytest.mark.parametrize("optimize", [[], ["-OO"]], ids=["", "-OO"])
def test_every_script_documents_its_flags(command, flags, optimize):
    """Under python -OO too (or PYTHONOPTIMIZE=2), which strips the docstrings --help quotes: each
    script stopped there with a traceback ('NoneType' object has no attribute 'split')."""
    proc = subprocess.run([sys.executable, *optimize, *command, "--help"], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.startswith("usage: ") and not proc.stderr, proc.stderr
    assert all(flag in proc.stdout for flag in flags), proc.stdout


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full, a device that is always full")
@pytest.mark.parametrize("command", [["train.py"], ["sweep.py"], ["bench/bench.py"], ["-m", "labels.stats"]])
def test_help_to_a_full_disk_says_so(command):
    """`--help > file` on a full disk exited 0 with nothing written: argparse drops a write that
    fails. It is the error line that names standard output, exit status 2."""
    with open("/dev/full", "w") as full:
        proc = subprocess.run([sys.executable, *command, "--help"], cwd=REPO, stdout=full, stderr=subprocess.PIPE,
                              text=True, timeout=120)
    assert (proc.returncode, proc.stderr) == (2, "error: could not write standard output: No space left on "
                                                 "device\n")


# What a script's --help and a mistyped argument never load: torch alone took 2.5 s, before a typo's
# one-line error on a cluster's login node or in a notebook's loop
HEAVY = {"torch", "torchvision", "torchattacks", "transformers", "gensim", "librosa", "scipy", "matplotlib"}
# The registry's names as each script lists them (a network a researcher registers is among them):
# train.py's and attack.py's --model choices and sweep.py's sorted, bench.py's in the registry's order
MODELS = sorted(ARCHITECTURES)
CLI_CASES = [  # command, arguments, exit status, first line of stdout (status 0) or stderr
    (["train.py"], ["--help"], 0, "usage: train.py [-h] [--dataset {cifar10,cifar100}]"),
    (["train.py"], ["--model", "nosuch"], 2, "error: argument --model: invalid choice: 'nosuch' (choose from "
     f"{', '.join(map(repr, MODELS))}) (see train.py --help)"),
    (["train.py"], ["--epochs", "x"], 2, "error: argument --epochs: 'x' is not an int (see train.py --help)"),
    (["attack.py"], ["--help"], 0, f"usage: attack.py [-h] [--model {{{','.join(MODELS)}}}]"),
    (["attack.py"], ["--model", "nosuch"], 2, "error: argument --model: invalid choice: 'nosuch' (choose "
     f"from {', '.join(map(repr, MODELS))}) (see attack.py --help)"),
    (["attack.py"], ["--attacks", "nosuch"], 2, "error: argument --attacks: invalid choice: 'nosuch' (choose "
     "from 'fgsm', 'iterative', 'pgd') (see attack.py --help)"),
    (["sweep.py"], ["--help"], 0, "usage: sweep.py [-h] [--config CONFIG]"),
    (["sweep.py"], ["--models", "nosuch", "--dry_run"], 2,
     f"error: --models: unknown model nosuch; choose from {', '.join(MODELS)}"),
    (["sweep.py"], ["--nosuch", "1", "--dry_run"], 2, "error: --nosuch is not a flag of train.py or attack.py"),
    (["report.py"], ["--help"], 0, "usage: report.py [-h] [--base_dir BASE_DIR] [--out OUT] [--grid GRID]"),
    (["report.py"], ["--nosuch"], 2, "error: unrecognized arguments: --nosuch (see report.py --help)"),
    (["bench/bench.py"], ["--help"], 0, "usage: bench/bench.py [-h]"),
    (["bench/bench.py"], ["--models", "nosuch"], 2, "error: argument --models: invalid choice: 'nosuch' "
     f"(choose from {', '.join(map(repr, ARCHITECTURES))}) (see bench/bench.py --help)"),
    # bad values that bench.py found only once torch had loaded (seconds)
    (["bench/bench.py"], ["--what", "accuracy"], 2,
     "error: --what accuracy needs --data_dir (a CIFAR-10 folder) (see bench/bench.py --help)"),
    (["bench/bench.py"], ["--what", "accuracy", "--data_dir", "no_such_folder", "--train_flags=--bogus 1"], 2,
     "error: --train_flags: train.py has no --bogus 1 (see bench/bench.py --help)"),
    (["bench/bench.py"], ["--what", "train", "--train_images", "256"], 2, "error: --train_images 256 is less "
     "than a batch of 512 (128, or the largest of --batch_sizes) (see bench/bench.py --help)"),
    (["bench/bench.py"], ["--record", "no_such_folder/B.md"], 2,
     "error: --record no_such_folder/B.md: No such file or directory (see bench/bench.py --help)"),
    (["-m", "labels.generate"], ["--help"], 0, "usage: python -m labels.generate [-h] --dataset"),
    (["-m", "labels.generate"], ["--dataset", "nosuch"], 2, "error: argument --dataset: invalid choice: "
     "'nosuch' (choose from 'cifar10', 'cifar100') (see python -m labels.generate --help)"),
    (["-m", "labels.stats"], ["--help"], 0, "usage: python -m labels.stats [-h]"),
    (["-m", "labels.stats"], ["--nosuch"], 2, "error: the following arguments are required: files (see "
     "python -m labels.stats --help)"),
    # a shortened flag was read as the one it starts (--check 30 as --checkpoint_seconds 30)
    (["train.py"], ["--check", "30"], 2, "error: --check: shortened flags are refused (a new flag could "
     "change what they mean); write --checkpoint_seconds (see train.py --help)"),
    (["attack.py"], ["--check=x.pth"], 2, "error: --check: shortened flags are refused (a new flag could "
     "change what they mean); write --checkpoint (see attack.py --help)"),
    (["report.py"], ["--ti", "x"], 2, "error: --ti: shortened flags are refused (a new flag could change "
     "what they mean); write --title (see report.py --help)"),
    (["bench/bench.py"], ["--rep", "2"], 2, "error: --rep: shortened flags are refused (a new flag could "
     "change what they mean); write --repeats (see bench/bench.py --help)"),
    (["-m", "labels.generate"], ["--dataset", "cifar10", "--label", "nosuch", "--fo"], 2, "error: --fo: "
     "shortened flags are refused (a new flag could change what they mean); write --force (see python -m "
     "labels.generate --help)"),
    (["-m", "labels.stats"], ["--js", "x.npy"], 2, "error: --js: shortened flags are refused (a new flag "
     "could change what they mean); write --json (see python -m labels.stats --help)"),
]


@pytest.mark.parametrize("command, argv, status, first_line", CLI_CASES,
                         ids=[" ".join(command + argv) for command, argv, _, _ in CLI_CASES])
def test_help_and_a_bad_argument_answer_before_torch_loads(command, argv, status, first_line):
    proc, imported, errors = run_importing(*command, *argv)
    assert "argparse" in imported and not imported & HEAVY, sorted(imported & HEAVY)
    assert proc.returncode == status, errors
    if status == 0:
        assert proc.stdout.startswith(first_line) and not errors, proc.stdout[:500] + "\n".join(errors)
    else:
        assert errors == [first_line]


def test_the_model_names_read_without_torch_are_the_registrys():
    """--help and a typo read architecture.py's network names from its file (importing it loads torch):
    they are the registry's; from a file that changes the registry beyond its dict, none (it is imported)."""
    from utils.flags import _dict_keys
    source = (REPO / "architecture.py").read_text()
    assert _dict_keys(source, "ARCHITECTURES") == list(ARCHITECTURES)
    assert {"vgg19", "resnet32", "resnet110"} <= set(ARCHITECTURES)  # and a network of one's own
    for change in ('ARCHITECTURES["resnet56"] = partial(ResNet, depth=56)', "ARCHITECTURES.update(more)",
                   "ARCHITECTURES |= more", 'del ARCHITECTURES["vgg19"]', "ARCHITECTURES = dict(more)",
                   "def register(trunk):\n    ARCHITECTURES[trunk.__name__] = trunk\n    return trunk"):
        assert _dict_keys(f"{source}\n{change}\n", "ARCHITECTURES") is None, change
    assert _dict_keys(f"{source}\nNAMES = sorted(ARCHITECTURES)\n", "ARCHITECTURES") == list(ARCHITECTURES)


@pytest.mark.skipif(torch.cuda.is_available(), reason="asks for a GPU where there is none")
def test_a_gpu_asked_for_where_there_is_none_is_one_line(capsys, cifar10_dir, label_dir, tmp_path):
    line = run_cli_capture(capsys, flags(cifar10_dir, tmp_path, label_dir, epochs=1) + ["--device", "cuda"])
    assert line == "error: --device cuda was asked for, but torch sees no CUDA device"
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


@pytest.mark.parametrize("module, argv", [
    (train, ["--base_dir", "~/runs", "--data_dir", "~/data", "--label_dir", "~/labels"]),
    (attack, ["--base_dir", "~/runs", "--checkpoint", "~/runs/best.pth"]),
    (sweep, ["--config", "~/grid.yaml", "--slurm", "~/jobs/sweep.sbatch"]),
    (report, ["--base_dir", "~/runs", "--out", "~/report"])])
def test_a_leading_tilde_is_the_home_folder(monkeypatch, tmp_path, module, argv):
    """A notebook's argv list (no shell) or a sweep's quoted command passes ~ as is: ~/runs was a
    folder named ~ in the working directory."""
    monkeypatch.setenv("HOME", str(tmp_path))
    args = vars(module.build_parser().parse_args(argv))
    given = dict(zip(argv[::2], argv[1::2]))
    assert {flag: args[flag[2:]] for flag in given} == {
        flag: str(tmp_path / path[2:]) for flag, path in given.items()}


def test_paths_printed_and_recorded_are_absolute(monkeypatch, cifar10_dir, label_dir, tmp_path):
    """A relative --base_dir or --checkpoint gave paths relative to the job's directory, which a
    notebook that ran the job elsewhere (subprocess cwd=...) could not open."""
    monkeypatch.chdir(tmp_path)
    data_dir = os.path.relpath(cifar10_dir, tmp_path)
    result = train.main(flags(data_dir, "runs", label_dir, label="category", epochs=1))
    run_dir = tmp_path / "runs" / "cifar10" / "seed3" / "resnet32" / "model_category"
    assert result["run_dir"] == str(run_dir) and result["checkpoint"].startswith(f"{run_dir}/")
    config = json.loads((run_dir / "config.json").read_text())
    recorded = Path(config["flags"]["data_dir"])  # absolute, its '..' applied
    assert config["run_dir"] == str(run_dir) and data_dir.startswith("../")
    assert recorded == (tmp_path / data_dir).resolve() and ".." not in recorded.parts
    assert config["flags"]["base_dir"] == str(tmp_path / "runs")  # was "runs", as typed
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # where the relative --data_dir is no folder
    checkpoint = os.path.relpath(result["checkpoint"])
    attack_flags = ["--label_dir", str(label_dir), "--attacks", "fgsm", "--epsilons", "8/255", "--targeted",
                    "no", "--num_images", "5", "--examples", "0", "--device", "cpu"]
    # no --data_dir: the run's own (./data, the default, would be a download)
    # ../runs/...: absolute, its '..' applied as the system reads it
    summary = attack.main(["--checkpoint", checkpoint, *attack_flags])
    assert summary["run_dir"] == str(run_dir) and checkpoint.startswith("../runs/")
    assert Path(summary["results"]) == Path(summary["run_dir"]) / ATTACK_RESULTS
    recorded = json.loads((run_dir / ATTACK_RESULTS).read_text())
    assert recorded["checkpoint"] == recorded["config"]["checkpoint"] == result["checkpoint"]  # was ../runs/...
    moved = torch.load(result["checkpoint"], weights_only=True)
    moved["config"]["flags"]["data_dir"] = "/nowhere/cifar10"  # trained on another machine
    torch.save(moved, tmp_path / "moved.pth")
    with pytest.raises(UsageError) as err:
        attack.main(["--checkpoint", str(tmp_path / "moved.pth"), *attack_flags])
    assert str(err.value) == (f"{tmp_path / 'moved.pth'} was trained on the data in /nowhere/cifar10, which "
                              "is not here; pass --data_dir with the folder of its dataset on this machine")


def test_recorded_paths_are_resolved_and_hold_after_the_working_folder_is_renamed(monkeypatch, cifar10_dir,
                                                                                   label_dir, tmp_path):
    """From work/sub with --data_dir ../../.. and --base_dir ../.., config.json recorded
    work/sub/../../..; after sub was renamed attack.py said the run 'was trained on the data in
    .../sub/../..., which is not here'. After a link, '..' is its target's parent, as the system
    reads it (not the text's: link/../runs is a/runs here, not runs)."""
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "a" / "b")
    work = tmp_path / "work" / "sub"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    data_dir, labels = os.path.relpath(cifar10_dir), os.path.relpath(label_dir)
    base_dir = "../../link/../runs"
    result = train.main(flags(data_dir, base_dir, labels, label="category", epochs=1))
    run_dir = tmp_path / "a" / "runs" / "cifar10" / "seed3" / "resnet32" / "model_category"
    assert result["run_dir"] == str(run_dir) and result["checkpoint"].startswith(f"{run_dir}/")
    assert json.loads((run_dir / RESULTS).read_text())["run_dir"] == str(run_dir)
    config = json.loads((run_dir / "config.json").read_text())
    assert config["run_dir"] == str(run_dir) and data_dir.startswith("../../../")
    assert {k: config["flags"][k] for k in ("data_dir", "label_dir", "base_dir")} == {
        "data_dir": str(Path(cifar10_dir).resolve()), "label_dir": str(Path(label_dir).resolve()),
        "base_dir": str(tmp_path / "a" / "runs")}
    work.rename(work.with_name("sub2"))
    monkeypatch.chdir(work.with_name("sub2"))
    # no --data_dir or --label_dir: the run's, as it recorded them
    summary = attack.main(["--base_dir", base_dir, "--label", "category", "--seed", "3", "--attacks", "fgsm",
                           "--epsilons", "8/255", "--targeted", "no", "--num_images", "5", "--examples", "0",
                           "--device", "cpu"])
    assert summary["run_dir"] == str(run_dir) and summary["results"] == str(run_dir / ATTACK_RESULTS)
    recorded = json.loads((run_dir / ATTACK_RESULTS).read_text())
    assert recorded["run_dir"] == str(run_dir) and recorded["config"]["base_dir"] == str(tmp_path / "a" / "runs")
    assert recorded["config"]["data_dir"] == config["flags"]["data_dir"]


def test_messages_name_the_paths_given_resolved(monkeypatch, cifar10_dir, tmp_path, capsys):
    """From work/sub, a missing label file of --label_dir ../../link/../labels was 'no label file
    ../../link/../labels/cifar10_bert.npy', which a job's log, read in another folder, named no file
    by, and --data_dir's '.../work/sub/../../link/../data' read as text is not the folder the system
    read (after a link, '..' is its target's parent: a/data here); so for --checkpoint's."""
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "labels").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "a" / "b")
    (tmp_path / "work" / "sub").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "work" / "sub")
    labels, data = tmp_path / "a" / "labels", tmp_path / "a" / "data"
    line = run_cli_capture(capsys, flags(os.path.relpath(cifar10_dir), "runs", "../../link/../labels",
                                         label="bert"))
    assert line.startswith(f"error: no label file {labels / 'cifar10_bert.npy'} for --label bert; labels found "
                           f"for cifar10 in {labels}: category, mcr2; ")
    line = run_cli_capture(capsys, flags("../../link/../data", "runs", labels, label="category"))
    assert line.startswith(f"error: cifar10 not found in {data / 'cifar-10-batches-py'} (")
    with pytest.raises(UsageError) as err:
        attack.main(["--checkpoint", "../../link/../best.pth", "--device", "cpu"])
    assert str(err.value) == f"--checkpoint {tmp_path / 'a' / 'best.pth'} does not exist"


def test_a_base_dir_inside_the_layout_is_refused_with_the_one_to_pass(capsys, cifar10_dir, label_dir, tmp_path):
    """--base_dir runs/less (or a dataset's, seed's or run's folder) trained a new run nested in
    the old ones' folders (runs/less/less/cifar10/level4/...) and exited 0; report.py named the
    --base_dir meant, as train.py now does. A folder holding runs is their --base_dir."""
    base = tmp_path / "runs"
    full = run_directory(base, "cifar10", 100, 7, "resnet32", "speech")
    less = run_directory(base, "cifar10", 4, 12, "resnet32", "category")
    full.mkdir(parents=True)
    less.mkdir(parents=True)
    before = sorted(base.rglob("*"))
    for inside in (base / "less", base / "less" / "cifar10" / "level4", base / "cifar10" / "seed7", full, less,
                   full / ".."):
        line = run_cli_capture(capsys, flags(cifar10_dir, inside, label_dir, label="category", level=4))
        assert line == (f"error: --base_dir {inside.resolve()} is a folder inside the layout of run directories "
                        f"({LAYOUT_TEXT}): pass --base_dir {base}")
    proc = run_script("train.py", *flags(cifar10_dir, base / "less", label_dir), check=False)
    assert proc.returncode == 2 and proc.stdout == "" and proc.stderr == (
        f"error: --base_dir {base / 'less'} is a folder inside the layout of run directories ({LAYOUT_TEXT}): "
        f"pass --base_dir {base}\n")
    assert sorted(base.rglob("*")) == before  # nothing written
    result = train.main(flags(cifar10_dir, base, label_dir, label="category", level=40, epochs=1))
    assert result["run_dir"] == str(base / "less" / "cifar10" / "level40" / "seed3" / "resnet32" / "model_category")


def test_the_readmes_notebook_code_runs(cifar10_dir, tmp_path):
    """README's 'From a notebook' blocks, as printed, on the tiny dataset (1 epoch): the model they
    load decodes the test images as train.py's evaluation did."""
    text = (REPO / "README.md").read_text()
    section = text[text.index("### From a notebook"):]
    blocks = [b.split("\n", 1)[1] for b in section.split("```python")[1:3]]
    code = "\n".join(b[:b.index("```")] for b in blocks)
    for old, new in (("/path/to/labelrep", str(REPO)), ("/data/cifar10", str(cifar10_dir)),
                     ("/scratch/runs", str(tmp_path)),
                     ('"--epochs", "30"', '"--epochs", "1", "--valid_size", "50", "--device", "cpu"')):
        assert old in code, old
        code = code.replace(old, new)
    code += "\nprint(json.dumps({'accuracy': accuracy, 'test_acc': result['test_acc']}))\n"
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                          env=os.environ | {"OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    shown = json.loads(proc.stdout.splitlines()[-1])
    assert shown["accuracy"] == pytest.approx(shown["test_acc"], abs=1e-6)  # all 100 test images


@pytest.mark.parametrize("stderr, said", [
    ("", "exit status -9"),
    # killed after some epochs: the last line is a progress line, which alone read as the error
    ("11:05:47 epoch 1/30 lr 0.1 train_loss 2.5092 train_acc 9.09% valid_loss 3.5421 valid_acc 12.00% 3.5s "
     "155 img/s\n",
     "exit status -9: 11:05:47 epoch 1/30 lr 0.1 train_loss 2.5092 train_acc 9.09% valid_loss 3.5421 valid_acc 12.00% "
     "3.5s 155 img/s")], ids=["silent", "after_an_epoch"])
def test_the_readmes_subprocess_code_says_how_a_killed_run_ended(tmp_path, stderr, said):
    """README's subprocess block raised IndexError, not its RuntimeError, for a run killed outright
    (out of memory, SIGKILL), which leaves no line on stderr; and for one killed after an epoch it
    raised that epoch's progress line, not how the run ended."""
    text = (REPO / "README.md").read_text()
    section = text[text.index("### From a notebook"):]
    code = section.split("```python")[1].split("\n", 1)[1].split("```")[0]
    (tmp_path / "train.py").write_text(f"import os, signal, sys\nsys.stderr.write({stderr!r})\n"
                                       "sys.stderr.flush()\nos.kill(os.getpid(), signal.SIGKILL)\n")
    code = code.replace('"/path/to/labelrep"', repr(str(tmp_path)))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.stderr.strip().splitlines()[-1] == f"RuntimeError: {said}"


def test_the_readmes_subprocess_code_raises_the_error_line(tmp_path):
    """Bad input: README's subprocess block raises with the exit status and train.py's one error: line."""
    text = (REPO / "README.md").read_text()
    section = text[text.index("### From a notebook"):]
    code = section.split("```python")[1].split("\n", 1)[1].split("```")[0]
    for old, new in (("/path/to/labelrep", REPO), ("/data/cifar10", tmp_path / "nodata"), ("/scratch/runs", tmp_path)):
        code = code.replace(f'"{old}"', repr(str(new)))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.stderr.strip().splitlines()[-1].startswith("RuntimeError: exit status 2: error: ")


def test_the_readmes_layout_names_every_python_file():
    """README's Layout table left out six modules (utils/errors.py, flags.py, atomic.py, pickles.py,
    preempt.py, progress.py): a row names each tracked .py file, or its folder (`bench/`), and
    nothing that is gone. A package's __init__.py goes with its modules."""
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    text = (REPO / "README.md").read_text()
    table = text[text.index("## Layout"):]
    table = table[:table.index("\n## ", 1)]
    named = {path for row in table.splitlines() if row.startswith("| `")
             for path in row.split(" | ")[0].strip("| ").replace("`", "").split(", ")}
    tracked = subprocess.run(["git", "-C", str(REPO), "ls-files", "*.py"], capture_output=True, text=True,
                             check=True).stdout.split()
    unlisted = [f for f in tracked if Path(f).name != "__init__.py" and f not in named
                and not any(f.startswith(path) for path in named if path.endswith("/"))]
    assert unlisted == []
    assert [path for path in sorted(named) if not (REPO / path).exists()] == []


def test_a_validation_split_larger_than_the_training_images_is_told(cifar10_dir, label_dir, tmp_path,
                                                                    capsys):
    """The README's first command on a 5170-image copy of CIFAR-10 trained on 170 images
    (--valid_size 5000) and said nothing of it."""
    train.main(flags(cifar10_dir, tmp_path, label_dir, label="category", epochs=1, valid_size=200))
    assert capsys.readouterr().err.splitlines()[0] == (
        "warning: --valid_size 200 leaves 100 of the 300 training images to train on; a smaller "
        "--valid_size trains on more")
    train.main(flags(cifar10_dir, tmp_path, label_dir, label="category", epochs=1, valid_size=200, level=30))
    assert "warning" not in capsys.readouterr().err  # fewer images than the split is what a level asks
    # a batch above the training images (MCR2's default 1000 on a small --level): one step an epoch
    train.main(flags(cifar10_dir, tmp_path, label_dir, label="category", epochs=1, level=20, batch_size=100))
    assert capsys.readouterr().err.splitlines()[0] == (
        "warning: --batch_size 100 is more than the 60 training images: each epoch is one step of 60")


def test_a_signal_after_the_loops_last_look_reaches_the_caller():
    """catching() cleared it: a driver calling train.main in a loop under SLURM lost the
    preemption when it came during the last epoch's validation."""
    from utils import preempt
    caught = []
    ours = {sig: signal.signal(sig, lambda signum, frame: caught.append(signum))
            for sig in (signal.SIGTERM, signal.SIGUSR1)}
    try:
        with preempt.catching():
            for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGTERM):
                os.kill(os.getpid(), sig)
            assert preempt.requested() and not caught  # the loop's to act on, while it runs
        assert caught == [signal.SIGTERM, signal.SIGUSR1] and not preempt.requested()  # each, once
        caught.clear()
        with pytest.raises(SystemExit), preempt.catching():
            os.kill(os.getpid(), signal.SIGTERM)
            preempt.exit_for_requeue("stopped")  # acted on: spent
        with pytest.raises(ValueError), preempt.catching():  # the error is the caller's news, not
            os.kill(os.getpid(), signal.SIGTERM)            # a signal that may end its process
            raise ValueError
        assert caught == [] and signal.getsignal(signal.SIGTERM) is not preempt._handle
    finally:
        for sig, handler in ours.items():
            signal.signal(sig, handler)


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="Windows has no SIGHUP")
def test_a_run_under_nohup_trains_on_after_a_hangup():
    """nohup starts a command with SIGHUP ignored, to go on when the terminal goes: a run there
    keeps ignoring it, as train.py and attack.py did before they stopped for a hangup."""
    from utils import preempt
    before = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with preempt.catching():
            signal.raise_signal(signal.SIGHUP)
            assert not preempt.requested() and signal.getsignal(signal.SIGTERM) is preempt._handle
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, before)


def test_a_callers_signals_are_not_ignored_at_its_exit(tmp_path):
    """catching() registered install's exit handler in the caller's process too: a driver script
    (or a kernel) that had called train.main ran its own exit handlers with SIGTERM and SIGUSR1
    ignored, so a `kill` sent while it cleaned up was lost."""
    script = tmp_path / "driver.py"
    script.write_text(textwrap.dedent("""
        import atexit, signal
        from utils import preempt
        def ours(signum, frame):
            pass
        signal.signal(signal.SIGTERM, ours)
        atexit.register(lambda: print(signal.getsignal(signal.SIGTERM) is ours,
                                      signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL))
        with preempt.catching():
            pass
    """))
    proc = subprocess.run([sys.executable, str(script)], cwd=REPO, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "True True\n", "")
