"""torchrun with 2 CPU processes (gloo) trains the same weights as 1 process with the same global batch."""
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import REPO, needs_compiler, run_script
from utils.errors import UsageError

# float64 takes rounding out of the comparison: in float32 the gradients of the batch norm
# parameters (sums with heavy cancellation) differ by ~1e-3 relative between any two summation
# orders, which is not what this test is about. Both runs go through this same launcher.
LAUNCHER = """
import runpy, sys, torch
torch.set_default_dtype(torch.float64)
sys.argv = ["train.py"] + sys.argv[1:]
runpy.run_path({train!r}, run_name="__main__")
"""


def torchrun_argv(tmp_path, processes=2):
    """torchrun with `processes` processes, its log folders in tmp_path: by default each run made
    a folder of them in TMPDIR (/tmp/torchelastic_*) and left it there, one per test and run."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
            "--log_dir", str(tmp_path / "torchrun_logs")]


def train(tmp_path, base, label, cifar10_dir, label_dir, processes, *extra):
    launcher = tmp_path / "launch.py"
    launcher.write_text(LAUNCHER.format(train=str(REPO / "train.py")))
    args = ["--model", "resnet32", "--label", label, "--seed", "5", "--data_dir", cifar10_dir,
            "--label_dir", label_dir, "--base_dir", base, "--valid_size", "60", "--epochs", "1",
            "--batch_size", "48", "--device", "cpu", *extra]
    prefix = torchrun_argv(tmp_path, processes) if processes > 1 else [sys.executable]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(prefix + [str(launcher)] + [str(a) for a in args], capture_output=True,
                          text=True, cwd=REPO, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = base / "cifar10" / "seed5" / "resnet32" / f"model_{label}"
    checkpoint = torch.load(run_dir / f"{label}_seed5_resnet32_best_model.pth", weights_only=True)
    return proc, checkpoint["model"]


@pytest.mark.parametrize("label, extra", [
    ("speech", []),  # the decoder head: BatchNorm1d and BatchNorm2d
    # The global batch norm's all_reduce inside a compiled step (a collective torch.compile could
    # not trace left the whole model eager). Category labels: the speech head's first steps at lr
    # 0.1 multiply any rounding difference by 100-1000 a step, so compiled kernels' other rounding
    # (1e-15 after one step in float64) grows to 1e-3 within an epoch; one step agrees to 1e-11.
    # reduce-overhead: on the CPU it compiles as the default mode does, and says it ran without
    # CUDA graphs (there are none there).
    pytest.param("category", ["--compile", "reduce-overhead"], marks=needs_compiler,
                 id="category-compile"),
])
def test_two_processes_train_the_same_weights(tmp_path, cifar10_dir, label_dir, label, extra):
    _, single = train(tmp_path, tmp_path / "one", label, cifar10_dir, label_dir, 1)
    proc, double = train(tmp_path, tmp_path / "two", label, cifar10_dir, label_dir, 2, *extra)
    assert proc.stdout.count('"run_dir"') == 1  # one JSON line, from rank 0
    warnings = [line for line in proc.stderr.splitlines() if "without CUDA graphs" in line]
    if extra:  # one line, from rank 0, after the first epoch
        assert len(warnings) == 1 and re.fullmatch(
            r"warning: --compile reduce-overhead ran \d+ compiled graph\(s\) without CUDA graphs "
            r"\(there are none on the CPU\)", warnings[0]), proc.stderr[-2000:]
    else:
        assert not warnings
    for name, value in single.items():
        if value.is_floating_point():
            diff = (value - double[name]).norm() / value.norm().clamp_min(1e-12)
            assert diff < 1e-5, f"{name}: relative difference {diff:.2e}"
        else:
            assert torch.equal(value, double[name]), name
    # What the run reports is the global batch's and the whole split's too, said and written once:
    # train, validation and test numbers summed over the processes' shares, one progress line and
    # one metrics row per epoch (rank 0 alone writes)
    assert proc.stderr.count("epoch 1/1 ") == 1, proc.stderr[-2000:]
    run_dirs = {n: tmp_path / n / "cifar10" / "seed5" / "resnet32" / f"model_{label}" for n in ("one", "two")}
    rows = {n: [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
            for n, run_dir in run_dirs.items()}
    assert len(rows["two"]) == len(rows["one"]) == 1
    results = {n: json.loads((run_dir / "results.json").read_text()) for n, run_dir in run_dirs.items()}
    for key in ("train_loss", "train_acc", "valid_loss", "valid_acc"):
        assert rows["two"][0][key] == pytest.approx(rows["one"][0][key], rel=1e-6), key
    for key in ("valid_loss", "valid_acc", "test_loss", "test_acc"):
        assert results["two"][key] == pytest.approx(results["one"][key], rel=1e-6), key
    # the confusion matrices too: each image counted once, by its true class's row
    confusion = {n: json.loads((run_dir / "confusion.json").read_text()) for n, run_dir in run_dirs.items()}
    for split in ("valid", "test"):
        one, two = (torch.tensor(confusion[n][split]) for n in ("one", "two"))
        assert torch.equal(two.sum(1), one.sum(1)) and two.trace() == one.trace(), split


@contextlib.contextmanager
def one_process_group():
    """A gloo group of this process alone, in which GlobalBatchNorm's all_reduce runs (as the identity)."""
    import torch.distributed as dist
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        yield
    finally:
        if dist.is_initialized():  # train.main leaves it on its way out
            dist.destroy_process_group()


def test_the_processes_shares_of_a_batch_cover_it_once():
    """Each process's share of a global batch of n items: together every item once, in order, the
    shares at most one apart. The tests' batches split evenly in two; an odd batch (the last of an
    epoch, 10000 test images over 3 processes) lost its remainder to a share of n // world each."""
    from utils.distributed import Context
    for world in (1, 2, 3, 4):
        for n in (0, 1, 5, 48, 127, 10000):
            shares = [Context(rank, world).share(n) for rank in range(world)]
            assert [i for share in shares for i in range(n)[share]] == list(range(n))
            sizes = [len(range(n)[share]) for share in shares]
            assert max(sizes) - min(sizes) <= 1, (world, n, sizes)
    assert Context(2, 3).share(10000) == slice(6667, 10000)


@needs_compiler
def test_global_batch_norm_compiles_whole_and_matches_batch_norm():
    """Its all_reduce is a collective torch.compile traces: one graph, no fallback to eager (the
    autograd-function all_reduce it had before could not be traced and left the model eager)."""
    from utils.distributed import GlobalBatchNorm
    with one_process_group():
        torch._dynamo.reset()
        torch.manual_seed(0)
        x = torch.randn(6, 4, 5, 5, requires_grad=True)
        reference, norm = torch.nn.BatchNorm2d(4), GlobalBatchNorm(4)
        expected = reference(x)
        (grad,) = torch.autograd.grad(expected.square().sum(), x)
        out = torch.compile(norm, fullgraph=True, dynamic=False)(x)  # fullgraph: a break raises
        (compiled_grad,) = torch.autograd.grad(out.square().sum(), x)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(compiled_grad, grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(norm.running_var, reference.running_var)
    torch.testing.assert_close(norm.running_mean, reference.running_mean)


@pytest.mark.parametrize("setting", [{}, {"momentum": None}, {"affine": False}, {"track_running_stats": False}])
def test_global_batch_norm_of_any_setting_trains_as_batch_norm(setting):
    """A network of one's own may hold a batch norm of another setting than the paper's: momentum
    None (the cumulative average), affine False (no weight or bias) or no running statistics.
    Under torchrun each stopped its first step with a TypeError (`1 - None`, `None / Tensor`,
    `None += 1`); each now trains, keeps its statistics and evaluates as BatchNorm does."""
    from utils.distributed import global_batch_norm
    torch.manual_seed(0)
    reference = torch.nn.Sequential(torch.nn.BatchNorm2d(4, **setting))
    own = torch.nn.Sequential(torch.nn.BatchNorm2d(4, **setting))
    global_batch_norm(own)
    with one_process_group():
        for step in range(3):  # a cumulative average differs from momentum 0.1's from the second step
            x = (torch.randn(6, 4, 5, 5) * (step + 1)).requires_grad_()
            expected, out = reference(x), own(x)
            torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(torch.autograd.grad(out.square().sum(), x),
                                       torch.autograd.grad(expected.square().sum(), x), rtol=1e-4, atol=1e-4)
    for mine, theirs in zip(own[0].buffers(), reference[0].buffers(), strict=True):
        torch.testing.assert_close(mine, theirs)
    assert len(list(own.buffers())) == (3 if setting.get("track_running_stats", True) else 0)
    own.eval(), reference.eval()
    x = torch.randn(6, 4, 5, 5) + 1
    torch.testing.assert_close(own(x), reference(x), rtol=1e-5, atol=1e-5)


def test_global_batch_norm_under_amp_takes_its_statistics_as_batch_norm():
    """Under --amp a batch norm's input is bf16. BatchNorm sums it in float32; GlobalBatchNorm
    summed it in bf16, where E[x^2] - E[x]^2 lost the variance of channels whose mean is 12 times
    their std (0 in one here: outputs up to 550, where BatchNorm's are within 5), and returned
    float32 where BatchNorm returns bf16 (a torchrun run's activations between convolutions were
    float32, one process's bf16)."""
    from utils.distributed import GlobalBatchNorm
    torch.manual_seed(0)
    x = (torch.randn(24, 4, 8, 8) * 0.5 + 6).to(torch.bfloat16).requires_grad_()
    reference, norm = torch.nn.BatchNorm2d(4), GlobalBatchNorm(4)
    with one_process_group(), torch.autocast("cpu", dtype=torch.bfloat16):
        expected, out = reference(x), norm(x)
        (grad,) = torch.autograd.grad(expected.float().square().sum(), x)
        (own_grad,) = torch.autograd.grad(out.float().square().sum(), x)
    assert expected.abs().max() < 5
    torch.testing.assert_close(out.float(), expected.float(), rtol=0.01, atol=0.01)  # bf16 rounding
    assert out.dtype == expected.dtype == torch.bfloat16
    torch.testing.assert_close(own_grad.float(), grad.float(), rtol=0.02, atol=0.02)
    torch.testing.assert_close(norm.running_var, reference.running_var, rtol=1e-3, atol=0)
    torch.testing.assert_close(norm.running_mean, reference.running_mean)


@pytest.mark.parametrize("how", ["signal", "error"])
def test_a_process_that_stops_early_leaves_its_group(tmp_path, cifar10_dir, monkeypatch, how):
    """A process that exited with its gloo group open could abort in the group's destructor
    ("terminate called without an active exception", exit -6, not 75 or 2): 2 of 8 two-process
    runs stopped by a signal while starting did, and 2 of 6 that stopped on a usage error (an
    unfinished run without --resume). Every way out of train.main leaves the group."""
    import torch.distributed as dist
    import train
    from utils import preempt
    args = ["--data_dir", cifar10_dir, "--base_dir", tmp_path, "--valid_size", "60", "--epochs", "1",
            "--device", "cpu"]
    if how == "signal":
        monkeypatch.setattr(preempt, "requested", lambda: True)
    else:
        run_dir = tmp_path / "cifar10" / "seed0" / "resnet32" / "model_category"
        run_dir.mkdir(parents=True)
        (run_dir / "last_checkpoint.pth").write_bytes(b"an unfinished run's")
    with one_process_group():
        with pytest.raises(SystemExit if how == "signal" else UsageError) as stop:
            train.main(list(map(str, args)))
        assert not dist.is_initialized()
    if how == "signal":
        assert stop.value.code == 75
    else:
        assert "holds an unfinished run; pass --resume" in str(stop.value)


def torchrun(tmp_path, *args, env=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run([*torchrun_argv(tmp_path), *map(str, args)], capture_output=True,
                          text=True, cwd=REPO, env=env, timeout=600)


def test_mcr2_is_refused_under_torchrun(tmp_path):
    """Before the data loads (here, a folder without it): not after a download of 170 MB. Nor is
    anything left in TMPDIR (`torchrun_argv`)."""
    (tmp_path / "tmp").mkdir()
    proc = torchrun(tmp_path, REPO / "train.py", "--label", "mcr2", "--data_dir", tmp_path / "no_data",
                    "--base_dir", tmp_path, "--valid_size", "60", "--epochs", "1", "--device", "cpu",
                    env={"TMPDIR": str(tmp_path / "tmp")})
    assert proc.returncode != 0
    assert len(error_lines(proc)) == 1, proc.stderr[-3000:]  # from rank 0, not one from each process
    assert "error: --label mcr2 does not train under torchrun" in proc.stderr
    assert not list(tmp_path.rglob("config.json"))
    assert [p.name for p in (tmp_path / "tmp").iterdir() if not p.name.startswith("torchinductor")] == []


def error_lines(proc):
    return [line for line in proc.stderr.splitlines() if line.startswith("error:")]


def test_attack_is_refused_under_torchrun(tmp_path, cifar10_dir):
    """Each process attacked the whole run: one ran, the other said its own folder was 'in use by
    another train.py or attack.py job', and torchrun then stopped the one that ran."""
    proc = torchrun(tmp_path, REPO / "attack.py", "--data_dir", cifar10_dir, "--base_dir", tmp_path,
                    "--device", "cpu")
    assert proc.returncode != 0
    refusal = "error: attack.py runs in one process: start it with python, not torchrun"
    assert error_lines(proc) == [refusal], proc.stderr[-3000:]  # from rank 0, not one from each process
    assert not list(tmp_path.rglob("*.json"))


def test_a_bad_flag_under_torchrun_is_one_line(tmp_path):
    """Every process parses the same command line: each printed the same error."""
    proc = torchrun(tmp_path, REPO / "train.py", "--model", "resnet33")
    assert proc.returncode != 0
    assert error_lines(proc) == ["error: argument --model: invalid choice: 'resnet33' (choose from "
                                 "'resnet110', 'resnet32', 'vgg19') (see train.py --help)"], proc.stderr[-3000:]


def test_a_rank_outside_torchrun_still_says_its_error():
    """The line left to rank 0 is left only where there are other processes: a RANK that a job's
    environment holds without torchrun's WORLD_SIZE (a launcher's, exported) must not make a bad
    flag an exit 2 without a word."""
    proc = run_script("train.py", "--model", "resnet33", check=False, env={"RANK": "1"})
    assert proc.returncode == 2 and proc.stderr.startswith("error: argument --model: invalid choice"), proc.stderr
    # and its warnings (rank 0's alone under torchrun), here one before the missing dataset's error
    proc = run_script("train.py", "--feature_dim", "64", "--data_dir", "/nonexistent", "--epochs", "1",
                      check=False, env={"RANK": "1"})
    assert proc.returncode == 2 and proc.stderr.startswith("warning: --feature_dim only acts with --label mcr2"), \
        proc.stderr


def test_ctrl_c_under_torchrun_is_one_line(tmp_path, cifar10_dir):
    """Ctrl-C reaches torchrun, which passes SIGINT to every process: each printed the same
    'error: interrupted; ...' line."""
    proc = subprocess.Popen(
        [*torchrun_argv(tmp_path), REPO / "train.py", "--data_dir", cifar10_dir, "--base_dir", tmp_path,
         "--valid_size", "60", "--epochs", "3", "--batch_size", "48", "--device", "cpu"],
        stderr=subprocess.PIPE, text=True, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"})
    lines = []
    for line in proc.stderr:  # both processes are in the epoch loop once rank 0 reports an epoch
        lines.append(line)
        if line.startswith(("epoch 1/3", "error:")) or " epoch 1/3 " in line:
            proc.send_signal(signal.SIGINT)
            break
    lines += proc.stderr.readlines()
    proc.wait(timeout=120)
    stderr = "".join(lines)
    assert proc.returncode != 0
    interrupted = [line for line in lines if line.startswith("error: interrupted; ")]
    assert len(interrupted) == 1 and "rerun with --resume" in interrupted[0], stderr[-3000:]
    assert "[rank0]: Traceback" not in stderr and "[rank1]: Traceback" not in stderr


# Rank 1 dies by SIGKILL in its 2nd step. Its sockets linger 0 s, so that the kernel resets their
# connections, as it does for a socket with data unread (which the kill of a busy process leaves):
# rank 0's collective then fails with a RuntimeError gloo words "Connection reset by peer".
KILLED = """
import os, runpy, signal, socket, struct, sys
from utils import distributed
forward, calls = distributed.GlobalBatchNorm.forward, []
def dying(self, x):
    calls.append(x)
    if os.environ["RANK"] == "1" and len(calls) == 40:
        for fd in map(int, os.listdir("/proc/self/fd")):
            link = f"/proc/self/fd/{{fd}}"
            if os.path.exists(link) and os.readlink(link).startswith("socket:"):
                with socket.socket(fileno=os.dup(fd)) as s:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        os.kill(os.getpid(), signal.SIGKILL)
    return forward(self, x)
distributed.GlobalBatchNorm.forward = dying
sys.argv = ["train.py"] + sys.argv[1:]
runpy.run_path({train!r}, run_name="__main__")
"""


def test_a_killed_process_stops_the_other_with_one_line(tmp_path, cifar10_dir):
    """The survivor's collective failed with a 90-line traceback."""
    launcher = tmp_path / "killed.py"
    launcher.write_text(KILLED.format(train=str(REPO / "train.py")))
    proc = torchrun(tmp_path, launcher, "--data_dir", cifar10_dir, "--base_dir", tmp_path,
                    "--valid_size", "60", "--epochs", "1", "--batch_size", "48", "--device", "cpu")
    assert proc.returncode != 0
    assert "exitcode  : -9" in proc.stderr  # torchrun's report: the kill
    assert len(error_lines(proc)) == 1, proc.stderr[-3000:]
    assert error_lines(proc)[0].startswith("error: process 0 of this torchrun stopped: another process ended "
                                           "first"), proc.stderr[-3000:]
    assert "reset by peer" not in proc.stderr and "[rank0]: Traceback" not in proc.stderr


@pytest.mark.parametrize("checkpointed", [False, True])
def test_an_error_of_rank_0_alone_is_one_line_from_each_process(tmp_path, cifar10_dir, checkpointed):
    """Rank 0 alone takes the run folder's lock; held by another job, it stopped with its error
    while rank 1 went on into DDP and died with a gloo traceback of 100 lines. Where that job had
    written its last checkpoint, rank 1 also read the folder and printed a second, wrong error
    about the other job's run: '... holds an unfinished run; pass --resume to continue it'."""
    run_dir = tmp_path / "cifar10" / "seed3" / "resnet32" / "model_category"
    run_dir.mkdir(parents=True)
    if checkpointed:
        (run_dir / "last_checkpoint.pth").write_bytes(b"the other job's")
    holder = subprocess.Popen(["flock", str(run_dir / ".lock"), "sleep", "300"])
    try:
        deadline = time.time() + 10
        while not (run_dir / ".lock").exists() and time.time() < deadline:
            time.sleep(0.05)
        proc = torchrun(tmp_path, REPO / "train.py", "--data_dir", cifar10_dir, "--base_dir", tmp_path,
                        "--seed", "3", "--valid_size", "60", "--epochs", "1", "--device", "cpu")
    finally:
        holder.kill()
        holder.wait()
    assert proc.returncode != 0
    assert "error: " + str(run_dir) + " is in use by another train.py or attack.py job" in proc.stderr
    assert "error: process 1 of this torchrun stopped: another process ended first" in proc.stderr
    assert "[rank1]: Traceback" not in proc.stderr and "[rank0]: Traceback" not in proc.stderr
    assert len(error_lines(proc)) == 2, proc.stderr[-3000:]
