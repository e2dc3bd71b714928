"""Speed options must not change answers: channels_last and bf16 autocast against float32.

Run on the CPU with conftest's trained models (category logits, and a high-dimensional model decoded
by nearest target) and the paper's decoder head; the same code paths run on a GPU.
"""

import argparse
import functools
import json
import os
import platform
import subprocess
import sys
import warnings

import pytest
import torch

from architecture import build_model
from cifar import to_float
from conftest import REPO, flat, needs_compiler
from utils.errors import as_parsed, call_cli, run_cli
from utils.labelspace import CategorySpace, TargetSpace
from utils.training import ISOLATES_RECOMPILES, compiled, evaluate, fast_bf16, predict


def relative_error(outputs, reference):
    return ((outputs - reference).norm() / reference.norm()).item()


pytestmark = pytest.mark.usefixtures("one_thread")


def test_channels_last_gives_the_float32_predictions(trained, tiny):
    model, space = trained
    reference = predict(model, tiny.test_images)
    outputs = predict(model, tiny.test_images, channels_last=True)
    assert relative_error(outputs, reference) < 1e-5
    assert torch.equal(space.decode(outputs), space.decode(reference))


@pytest.mark.parametrize("channels_last", [False, True])
def test_bf16_autocast_keeps_predictions_and_accuracy(trained, tiny, channels_last):
    model, space = trained
    reference = predict(model, tiny.test_images)
    outputs = predict(model, tiny.test_images, amp=True, channels_last=channels_last)
    assert outputs.dtype == torch.float32  # predict hands back float32 whatever the autocast dtype
    assert relative_error(outputs, reference) < 0.03  # bf16 keeps 8 mantissa bits: ~0.4% per op
    agree = (space.decode(outputs) == space.decode(reference)).float().mean().item()
    assert agree >= 0.97
    fp32 = evaluate(model, space, tiny.test_images, tiny.test_labels)
    bf16 = evaluate(model, space, tiny.test_images, tiny.test_labels, amp=True, channels_last=channels_last)
    assert abs(bf16["acc"] - fp32["acc"]) <= 0.03
    assert bf16["loss"] == pytest.approx(fp32["loss"], rel=0.05)


def test_float32_under_a_callers_autocast(trained, tiny):
    """Without amp the numbers are float32's, as config.json records (amp false), inside a caller's
    bf16 autocast too (a notebook cell's `with torch.autocast(...)`): evaluate() and the attacks
    computed in bf16 there, and train.py trained in it."""
    from utils.attacks import gradient_sign, run_attack
    model, space = trained
    images, labels = tiny.test_images[:64], tiny.test_labels[:64]
    reference = predict(model, tiny.test_images)
    scores = evaluate(model, space, tiny.test_images, tiny.test_labels)
    sign = gradient_sign(model, space, to_float(images), labels)
    attacked = run_attack(model, space, images, labels, "pgd", 8 / 255, keep_images=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(predict(model, tiny.test_images), reference)
        assert evaluate(model, space, tiny.test_images, tiny.test_labels) == scores
        assert torch.equal(gradient_sign(model, space, to_float(images), labels), sign)
        assert torch.equal(run_attack(model, space, images, labels, "pgd", 8 / 255,
                                      keep_images=True)["adversarial"], attacked["adversarial"])
        assert not torch.equal(predict(model, tiny.test_images, amp=True), reference)  # amp is bf16


def test_a_bfloat16_model_is_evaluated_in_its_dtype(trained, tiny):
    """A caller's model.bfloat16() (a fast, small model for analyses of its own) ended in a
    RuntimeError traceback in predict() and evaluate() ('Input type (torch.FloatTensor) and weight
    type (CPUBFloat16Type) should be the same'): uint8 images became floats of the default dtype.
    Batches are made in the model's dtype and on its device, as run_attack makes them."""
    import copy
    model, space = trained
    reference = predict(model, tiny.test_images)
    scores = evaluate(model, space, tiny.test_images, tiny.test_labels)
    half = copy.deepcopy(model).bfloat16()
    outputs = predict(half, tiny.test_images)
    assert outputs.dtype == torch.float32
    assert relative_error(outputs, reference) < 0.03  # ~0.01 here: bf16 keeps 8 mantissa bits
    assert (space.decode(outputs) == space.decode(reference)).float().mean().item() >= 0.97
    in_half = evaluate(half, space, tiny.test_images, tiny.test_labels)
    assert abs(in_half["acc"] - scores["acc"]) <= 0.03
    assert in_half["loss"] == pytest.approx(scores["loss"], rel=0.05)


def test_a_float64_models_outputs_stay_float64(trained, tiny):
    """predict() rounded a float64 model's outputs to float32, so evaluate(outputs=predict(...)),
    MCR2's path, scored other numbers than the model gave."""
    import copy
    model, _ = trained
    double = copy.deepcopy(model).double().eval()
    outputs = predict(double, tiny.test_images[:16])
    assert outputs.dtype == torch.float64
    with torch.no_grad():
        assert torch.equal(outputs, double(to_float(tiny.test_images[:16], torch.float64)))


def test_bf16_decoder_head_stays_close(tiny, label_dir):
    """The paper's transposed-convolution head (64x64 targets) under bf16 + channels_last."""
    import numpy as np
    space = TargetSpace("speech", np.load(label_dir / "cifar10_speech.npy"))
    torch.manual_seed(0)
    model = build_model("resnet32", space.output_shape).eval()
    reference = predict(model, tiny.test_images[:64])
    for options in ({"channels_last": True}, {"amp": True}, {"amp": True, "channels_last": True}):
        limit = 1e-5 if not options.get("amp") else 0.03
        assert relative_error(predict(model, tiny.test_images[:64], **options), reference) < limit, options


def test_short_training_with_bf16_and_channels_last_learns_like_float32(tiny):
    """Five epochs of train.py's loop on the tiny colour CIFAR, float32 against bf16 autocast +
    channels_last, from the same initialisation and batches. Weights are not compared: at
    initialisation this 32-layer network's gradient is ill-conditioned (float32 itself is 0.4% off
    a float64 gradient, channels_last 1.3%, bf16 ~50%), and SGD amplifies any difference."""
    from conftest import recalibrate_batch_norm
    from utils.labelspace import CategorySpace
    from utils.training import TrainStep, train_epoch
    space, accuracy = CategorySpace(10), {}
    for name, options in (("float32", {}), ("bf16", {"amp": True, "channels_last": True})):
        torch.manual_seed(0)
        model = build_model("resnet32", (10,))
        if options.get("channels_last"):
            model = model.to(memory_format=torch.channels_last)
        generator = torch.Generator().manual_seed(0)
        step = TrainStep(model, space, 0.02, **options)
        for _ in range(5):
            train = train_epoch(step, tiny.train_images, tiny.train_labels, 32, generator)
        assert torch.isfinite(torch.tensor(train["loss"]))
        recalibrate_batch_norm(model, to_float(tiny.train_images))  # 50 steps leave them stale
        accuracy[name] = evaluate(model, space, tiny.test_images, tiny.test_labels, **options)["acc"]
    assert min(accuracy.values()) >= 0.5, accuracy  # chance is 0.1
    assert abs(accuracy["bf16"] - accuracy["float32"]) <= 0.15, accuracy


@needs_compiler
def test_compiled_model_gives_the_eager_predictions(category, tiny):
    model, space = category
    reference = predict(model, tiny.test_images)
    torch._dynamo.reset()
    outputs = predict(compiled(model, "reduce-overhead"), tiny.test_images)
    assert relative_error(outputs, reference) < 1e-4
    assert torch.equal(space.decode(outputs), space.decode(reference))


@needs_compiler
def test_only_the_first_batch_size_is_compiled():
    """The batch size of the first call gets a static graph; a trailing batch or an evaluation
    remainder runs eagerly (the same numbers) instead of compiling a graph of its own."""
    from torch._dynamo.utils import counters
    torch._dynamo.reset()
    twice = compiled(lambda x: x * 2, "default")
    compiles, before = [], counters["stats"]["unique_graphs"]
    for n in (4, 2, 3, 4):
        assert torch.equal(twice(torch.ones(n)), torch.full((n,), 2.0))
        compiles.append(counters["stats"]["unique_graphs"] - before)
    assert compiles == [1, 1, 1, 1]


def test_bench_accuracy_trains_fp32_and_bf16_as_separate_runs(cifar10_dir, tmp_path, capsys):
    from bench import bench
    record = tmp_path / "BENCHMARKS.md"
    bench.main(["--what", "accuracy", "--labels", "category", "--epochs", "1", "--valid_size", "50",
                "--data_dir", str(cifar10_dir), "--device", "cpu", "--record", str(record),
                "--train_flags=--level 50 --warmup_epochs 1"])
    text = record.read_text()
    rows = [line.split("|") for line in text.splitlines() if line.startswith("| resnet32 | category")]
    assert [r[4].strip() for r in rows] == ["fp32", "bf16 + channels_last"]
    fp32, bf16 = (float(r[5].strip(" %")) for r in rows)
    assert f"per pair: {bf16 - fp32:+.2f} points" in text
    assert "train.py for 1 epoch on" in text and "(150 training images, 100 test images" in text
    assert "--valid_size 50, --level 50 --warmup_epochs 1)" in text  # both runs took the extra flags
    out, err = capsys.readouterr()
    assert "already complete" not in err  # the bf16 run is trained, not the fp32 run read back
    # Where bf16 is emulated (a CPU without AVX-512), the --amp run says so, once.
    assert err.count("warning: --amp on a cpu without native bf16") == (not fast_bf16(torch.device("cpu")))
    assert out.count("| resnet32 | category") == 2 and '"test_acc"' not in out  # only the tables


def test_bench_accuracy_table_without_validation_images():
    """--valid_size 0 (valid_acc null): a '-' in the table, after all the training, not a crash."""
    from types import SimpleNamespace
    from bench.bench import accuracy_lines
    args = SimpleNamespace(train_flags="", epochs=1, data_dir="d", valid_size=0)
    fp32 = {"test_acc": 0.5, "valid_acc": None, "images_per_s": 100.0, "train_seconds": 3.0,
            "train_images": 10, "test_images": 5}
    lines = accuracy_lines(args, [("resnet32", "category", 0, "fp32", fp32),
                                  ("resnet32", "category", 0, "bf16", fp32 | {"test_acc": 0.6})])
    assert "| resnet32 | category | 0 | fp32 | 50.00% | - | 100 | 3 |" in lines
    assert "per pair: +10.00 points" in lines[-1]


@pytest.mark.parametrize("argv, message", [
    (["--what", "accuracy", "--data_dir", "{tmp}"], "cifar10 not found in {tmp}/cifar-10-batches-py"),
    (["--what", "accuracy", "--data_dir", "{tmp}", "--train_flags", "'unclosed"],
     "--train_flags \"'unclosed\": No closing quotation"),
    (["--what", "accuracy", "--data_dir", "{tmp}", "--train_flags", "--bogus 1"],
     "--train_flags: train.py has no --bogus 1"),
    # train.py read --epo as --epochs and --mod as --model: the rows trained vgg19 for 5 epochs, the
    # table said resnet32 for --epochs 30
    (["--what", "accuracy", "--data_dir", "{tmp}", "--train_flags", "--epo 5 --mod vgg19"],
     "--train_flags: --epo: shortened flags are refused (a new flag could change what they mean); write "
     "--epochs"),
    (["--what", "accuracy", "--data_dir", "{tmp}", "--train_flags", "--amp --seed=3 --lr 0.2"],
     "--train_flags: --seed, --amp set by bench.py itself (per row, or by its own flags)"),
    # train.py refuses the pair: each row started, and failed, after the one before it had trained
    (["--what", "accuracy", "--data_dir", "{tmp}", "--train_flags", "--force --resume"],
     "--train_flags: --force starts the run over, deleting its checkpoints, and --resume continues it from "
     "its last checkpoint: pass one of them"),
    (["--what", "train", "--train_images", "256"], "--train_images 256 is less than a batch of 512"),
    # each of these was a traceback, a silent substitute or a table of "failed" rows
    (["--labels", "foo"], "argument --labels: invalid choice: 'foo'"),
    (["--attack_images", "0"], "argument --attack_images: 0 must be positive"),
    (["--paper_attack_images", "-3"], "argument --paper_attack_images: -3 must be positive"),
    (["--compile_modes", "reduce_overhead"], "argument --compile_modes: invalid choice: 'reduce_overhead'"),
    (["--what", "host", "--train_images", "64"], "--train_images does not apply to --what host (only to "
     "--what train, all)"),  # it profiled batch 128 of the images whatever their number
    (["--what", "accuracy", "--data_dir", "{tmp}", "--seeds", "0", "-1"], "argument --seeds: -1 must be at least 0"),
    # used by no table asked for: --what train ignored them without a word
    (["--what", "train", "--checkpoint", "{tmp}/x.pth"], "--checkpoint does not apply to --what train (only "
     "to --what attack, all)"),
    (["--what", "host", "--compiled_only"], "--compiled_only does not apply to --what host (only to --what "
     "train, all)"),
    (["--what", "attack", "--batch_sizes", "64"], "--batch_sizes does not apply to --what attack (only to "
     "--what train, all)"),
    (["--what", "attack", "--checkpoint", "{tmp}/x.pth", "--models", "vgg19"], "--models does not apply to "
     "--what attack --checkpoint (it attacks the checkpoint's model and labels; --what all times training "
     "with them)"),
    (["--what", "attack", "--checkpoint", "{tmp}/x.pth", "--models", "vgg19", "--labels", "glove"], "--models and "
     "--labels do not apply to --what attack --checkpoint"),
    (["--what", "train", "--seeds", "1"], "--seeds does not apply to --what train (only to --what accuracy)"),
    (["--what", "all", "--epochs", "3"], "--epochs does not apply to --what all (only to --what accuracy)"),
    (["--what", "accuracy", "--data_dir", "{tmp}", "--repeats", "3"], "--repeats does not apply to --what "
     "accuracy (only to --what train, attack, checkpoint, all)"),
    (["--what", "train", "--compiled_only", "--compile_modes"], "--compiled_only with no --compile_modes "
     "leaves no variant of ours to time"),
    (["--what", "train", "--cudnn_benchmark"], "--cudnn_benchmark times cuDNN, which only a CUDA device runs"),
    (["--what", "host", "--cudnn_benchmark"], "--cudnn_benchmark does not apply to --what host (only to "
     "--what train, all)"),
    (["--what", "train", "--cudnn_benchmark", "--compile_modes"], "--cudnn_benchmark adds rows to the "
     "compiled variants of --what train and all"),
    (["--what", "host", "--data_dir", "{tmp}"], "--data_dir does not apply to --what host (only to --what "
     "attack, accuracy, all)"),
    # the tables were timed (minutes) and printed, and written nowhere
    (["--what", "checkpoint", "--record", "{tmp}/B.md"], "--record {tmp}/B.md and --no_record: pass one of them "
     "(--no_record prints the tables only)"),
])
def test_bench_bad_input_is_one_line(argv, message, tmp_path, capsys):
    from bench import bench
    with pytest.raises(SystemExit) as exit_info:
        run_cli(bench.main, [a.format(tmp=tmp_path) for a in argv] + ["--device", "cpu", "--no_record"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1, err
    assert message.format(tmp=tmp_path) in err


@pytest.mark.parametrize("flag, value, message", [
    ("batch_sizes", [0], "argument --batch_sizes: 0 must be at least 2"),
    ("models", ["resnet18"], "argument --models: invalid choice: 'resnet18' (choose from "),
])
def test_bench_main_reads_a_notebooks_namespace_as_the_command_line(flag, value, message, capsys, monkeypatch):
    """bench.main(args=...) took a notebook's edited namespace as it was: batch_sizes [0] or an
    unknown model went on to the timings (minutes), to end in a traceback. It is the command line's
    one-line error now, before anything is timed or printed."""
    from bench import bench
    monkeypatch.setattr(bench, "speed_sections", lambda *a, **k: pytest.fail("timed"))
    args = bench.parse_args(["--what", "train", "--device", "cpu", "--no_record"])
    # the parsed flags read again as they are, with what parse_args adds to them
    assert vars(as_parsed(bench.build_parser(), args, derived=bench.DERIVED)) == vars(args)
    setattr(args, flag, value)
    assert call_cli(functools.partial(bench.main, args=args)) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith(f"error: {message}") and err.endswith(" (see bench/bench.py --help)\n"), err
    assert err.count("\n") == 1


def test_bench_main_checks_a_notebooks_edited_train_flags_anew(capsys, monkeypatch):
    """bench.main(args=...) kept the train.py arguments the first parse made of --train_flags: an
    edited --train_flags trained every row with the old flags under a table that named the new
    ones, and flags bench.py sets itself went through. They are read again, and checked again."""
    from bench import bench
    timed = []
    monkeypatch.setattr(bench, "check_accuracy_runs", lambda args: None)
    monkeypatch.setattr(bench, "benchmark", lambda args, argv, device: timed.append(args))
    args = bench.parse_args(["--what", "accuracy", "--data_dir", "data", "--device", "cpu", "--no_record",
                             "--train_flags=--lr 0.4"])
    parser = bench.build_parser()
    assert vars(bench.checked(parser, argparse.Namespace(**vars(args)))) == vars(args)  # checked twice: the same
    args.train_flags = "--batch_size 512 --warmup_epochs 5"
    bench.main(args=args)
    assert timed[0].train_argv == ["--batch_size", "512", "--warmup_epochs", "5"]
    assert (timed[0].train_args.batch_size, timed[0].train_args.lr) == (512, None)
    args.train_flags = "--model vgg19"
    assert call_cli(functools.partial(bench.main, args=args)) == 2 and len(timed) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: --train_flags: --model set by bench.py itself") and err.count("\n") == 1, err


def test_bench_flags_name_its_tables():
    """Each flag `FLAG_TABLES` says acts on some tables only is one of bench.py's, and its tables are
    --what choices: a renamed flag there would be refused with every --what, or never."""
    from bench.bench import FLAG_TABLES, build_parser
    actions = {a.dest: a for a in build_parser()._actions}
    assert set(FLAG_TABLES) <= set(actions)
    assert all(set(tables) < set(actions["what"].choices) - {"all"} for tables in FLAG_TABLES.values())


def test_bench_repeated_values_are_one_row(cifar10_dir, tmp_path, monkeypatch):
    """--seeds 0 0 trained the fp32 and bf16 runs of seed 0, then read them back ('already
    complete') as two more rows of the record; a label given twice (speech, speech.npy) likewise."""
    import train
    from bench.bench import accuracy_rows, parse_args
    args = parse_args(["--what", "accuracy", "--data_dir", str(cifar10_dir), "--seeds", "0", "0",
                       "--labels", "speech", "speech.npy", "--models", "resnet32", "resnet32",
                       "--compile_modes", "default", "default", "--no_record"])
    assert (args.seeds, args.labels, args.models, args.compile_modes) == ([0], ["speech"], ["resnet32"], ["default"])
    assert parse_args(["--what", "train", "--batch_sizes", "256", "256", "--no_record"]).batch_sizes == [256]
    # batch 128 is the paper's, timed in every table: a second row of it
    assert parse_args(["--what", "train", "--batch_sizes", "128", "64", "--no_record"]).batch_sizes == [64]
    trained = []
    monkeypatch.setattr(train, "main", lambda argv: trained.append(argv) or {"test_acc": 0.5})
    rows = accuracy_rows(args, torch.device("cpu"))
    assert [row[2:4] for row in rows] == [(0, "fp32"), (0, "bf16 + channels_last + compile default")]
    assert len(trained) == 2


def test_bench_checks_its_record_before_it_measures(tmp_path, capsys):
    """An unwritable --record was found after all the timing (on a GPU, all the device time)."""
    from bench import bench
    for record in (tmp_path / "missing" / "B.md", tmp_path):
        with pytest.raises(SystemExit) as exit_info:
            run_cli(bench.main, ["--what", "train", "--device", "cpu", "--record", str(record)])
        out, err = capsys.readouterr()
        assert exit_info.value.code == 2 and err.startswith(f"error: --record {record}: ") and out == ""


def test_bench_checks_its_checkpoint_before_it_measures(monkeypatch, tmp_path, capsys):
    """--what all loaded --checkpoint after the first label's training timings (minutes; on a
    GPU, device time), and a checkpoint that did not load left them out of the record too."""
    from bench import bench

    def training_rows(*args):
        raise AssertionError("timed training before loading --checkpoint")
    monkeypatch.setattr(bench, "training_rows", training_rows)
    missing, record = tmp_path / "missing.pth", tmp_path / "B.md"
    for what in ("all", "attack"):  # --what attack printed the header first, then the error
        with pytest.raises(SystemExit) as exit_info:
            run_cli(bench.main, ["--what", what, "--checkpoint", str(missing), "--device", "cpu",
                                 "--record", str(record)])
        out, err = capsys.readouterr()
        assert exit_info.value.code == 2 and err.startswith(f"error: checkpoint {missing} does not exist"), err
        assert out == "" and err.count("\n") == 1 and not record.exists()


def test_bench_attacks_the_test_images_of_its_checkpoints_dataset(tmp_path, capsys):
    """--checkpoint of a CIFAR-100 run with --data_dir: the 100-class model was attacked on
    CIFAR-10's test images and labels (0 to 9), whatever the folder held beside them, and the
    table's share of correctly classified images was of those; a checkpoint that records no
    dataset is CIFAR-10's, and one of another class count is refused."""
    from bench import bench
    from cifar import load_cifar
    from conftest import make_cifar10, make_cifar100
    from utils.runs import save_checkpoint
    from utils.training import checkpoint_state
    data_dir = make_cifar100(make_cifar10(tmp_path / "data"))
    model, space = build_model("resnet32", (100,)), CategorySpace(100)
    for name, flags in (("c100.pth", {"dataset": "cifar100", "label_granularity": "fine"}), ("bare.pth", None)):
        save_checkpoint(tmp_path / name, checkpoint_state(model.state_dict(), model.model_args, space.state(),
                                                          1, {} if flags is None else {"flags": flags}))
    args = bench.parse_args(["--what", "attack", "--checkpoint", str(tmp_path / "c100.pth"),
                             "--data_dir", str(data_dir), "--no_record"])
    (images, labels), (trained, trained_space) = bench.attack_inputs(args, torch.device("cpu"))
    cifar100 = load_cifar("cifar100", data_dir)
    assert torch.equal(images, cifar100.test_images) and torch.equal(labels, cifar100.test_labels)
    assert trained_space.num_classes == 100
    with pytest.raises(SystemExit) as exit_info:
        run_cli(bench.main, ["--what", "attack", "--checkpoint", str(tmp_path / "bare.pth"), "--data_dir",
                             str(data_dir), "--device", "cpu", "--no_record"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1, err
    assert f"error: {tmp_path / 'bare.pth'} predicts 100 classes, but cifar10 (fine) has 10" in err


def test_bench_that_fails_leaves_no_empty_record(tmp_path, capsys):
    """Checking --record made it, empty, and an error after torch loaded (here, no CIFAR-10 in
    --data_dir) left that empty file where the user's BENCHMARKS.md would be."""
    from bench import bench
    record = tmp_path / "B.md"
    with pytest.raises(SystemExit) as exit_info:
        run_cli(bench.main, ["--what", "accuracy", "--data_dir", str(tmp_path), "--device", "cpu",
                             "--record", str(record)])
    assert exit_info.value.code == 2 and "cifar10 not found in" in capsys.readouterr().err
    assert not record.exists()


def test_bench_times_a_last_checkpoint_of_weights_momentum_and_history(tmp_path, capsys):
    from architecture import build_model
    from bench import bench
    record = tmp_path / "B.md"
    bench.main(["--what", "checkpoint", "--labels", "category", "--device", "cpu", "--repeats", "1",
                "--record", str(record)])
    rows = [line for line in record.read_text().splitlines() if line.startswith("| resnet32")]
    assert len(rows) == 1, rows
    assert "as train.py writes it; median of 1 write)" in record.read_text()  # not '1 writes'
    out, err = capsys.readouterr()  # the tables on stdout; where they went, last on stderr
    assert rows[0] in out.splitlines() and err.splitlines()[-1] == f"appended the tables to {record}"
    megabytes, wall_ms, cpu_ms, total_s = (float(cell) for cell in rows[0].strip("| ").split(" | ")[1:])
    model = build_model("resnet32", (10,))  # category logits
    tensors = sum(t.numel() * t.element_size() for t in model.state_dict().values()) + \
        sum(p.numel() * p.element_size() for p in model.parameters())  # weights, momentum
    assert tensors / 1e6 < megabytes < tensors / 1e6 + 0.3  # and the 600 rows of history
    assert 0 < cpu_ms and 0 < wall_ms and abs(total_s - 0.6 * wall_ms) <= 1
    # the caption says when train.py writes it, as train.py --help does (an epoch of over 20 s too)
    when = "after the last epoch, after any epoch of over 20 s and at a stop signal"
    assert when in " ".join(record.read_text().split())
    from train import build_parser
    assert when in " ".join(build_parser()._option_string_actions["--checkpoint_seconds"].help.split())


BENCH_SIGNALLED = """
import os, runpy, signal, sys
sys.path.insert(0, os.getcwd())
from utils import runs
save_checkpoint = runs.save_checkpoint
def and_signal(*args):
    save_checkpoint(*args)
    os.kill(os.getpid(), signal.SIGTERM)
runs.save_checkpoint = and_signal
sys.argv = ["bench/bench.py", *sys.argv[1:]]
runpy.run_path("bench/bench.py", run_name="__main__")
"""


def test_bench_ended_by_sigterm_leaves_nothing_in_tmpdir(tmp_path):
    """SIGTERM (`timeout`, `kill`) killed bench.py at once: the folder in TMPDIR it writes its
    checkpoints (and --what accuracy's runs) into stayed, 19 MB for resnet110 with speech labels.
    It ends as after Ctrl-C."""
    from conftest import REPO
    proc = subprocess.run([sys.executable, "-c", BENCH_SIGNALLED, "--what", "checkpoint", "--labels", "category",
                           "--device", "cpu", "--repeats", "2", "--no_record"], cwd=REPO, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "TMPDIR": str(tmp_path)})
    assert (proc.returncode, proc.stderr.splitlines()[-1:]) == (130, ["error: interrupted; got SIGTERM"])
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith("torchinductor")] == []


BENCH_GROUP_SIGNALLED = """
import os, runpy, signal, sys
sys.path.insert(0, os.getcwd())
from bench import paper_attack
read = paper_attack.PaperImages.__getitem__
def and_signal(self, i):  # in a DataLoader worker: SIGTERM to the whole process group, as `timeout` sends it
    os.killpg(0, signal.SIGTERM)
    return read(self, i)
paper_attack.PaperImages.__getitem__ = and_signal
sys.argv = ["bench/bench.py", *sys.argv[1:]]
runpy.run_path("bench/bench.py", run_name="__main__")
"""


@pytest.mark.parametrize("flags", [
    ["--what", "train", "--train_images", "128", "--batch_sizes", "--compile_modes"],
    ["--what", "attack", "--attack_images", "4", "--attack_batch_size", "4", "--paper_attack_images", "2"]])
def test_bench_ended_by_sigterm_to_its_process_group_is_one_line(flags):
    """`timeout`, SLURM's scancel and `kill -- -PGID` send SIGTERM to the paper pipeline's DataLoader
    workers too: torch let them die of it, and bench.py ended with a traceback, 'RuntimeError:
    DataLoader worker (pid N) is killed by signal: Terminated', where Ctrl-C (SIGINT to the same
    processes) gave `error: interrupted`. The workers end as at Ctrl-C now, and bench.py with its line."""
    from conftest import REPO
    proc = subprocess.run([sys.executable, "-c", BENCH_GROUP_SIGNALLED, *flags, "--labels", "category",
                           "--repeats", "1", "--device", "cpu", "--no_record"], cwd=REPO, capture_output=True,
                          text=True, timeout=300, start_new_session=True)
    assert (proc.returncode, proc.stderr.splitlines()[-1:]) == (130, ["error: interrupted; got SIGTERM"]), proc.stderr
    assert "Traceback" not in proc.stderr

BENCH_TRAINING_SIGNALLED = """
import os, runpy, signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal, even from a background job
sys.path.insert(0, os.getcwd())
from utils import training
train_epoch = training.train_epoch
def and_signal(*args, **kwargs):  # in the first epoch of --what accuracy's first train.py run
    os.kill(os.getpid(), getattr(signal, os.environ["BENCH_SIGNAL"]))
    return train_epoch(*args, **kwargs)
training.train_epoch = and_signal
sys.argv = ["bench/bench.py", *sys.argv[1:]]
runpy.run_path("bench/bench.py", run_name="__main__")
"""


@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGINT"])
def test_bench_accuracy_stopped_by_a_signal_is_interrupted_not_preempted(signal_name, cifar10_dir, tmp_path):
    """--what accuracy runs train.py in process, in a temporary folder: SIGTERM (`timeout`, scancel)
    was train.py's preemption, exit 75 (a job script's requeue: the benchmark started over) with
    'preempted: /tmp/tmpXXX/fp32/...: stopped by signal during epoch 1; no checkpoint was written,
    rerun with --resume', and Ctrl-C said the same of a folder bench.py had removed. Both end as
    bench.py's Ctrl-C now, exit 130, naming the run that stopped."""
    from conftest import REPO
    proc = subprocess.run([sys.executable, "-c", BENCH_TRAINING_SIGNALLED, "--what", "accuracy", "--labels",
                           "category", "--epochs", "1", "--valid_size", "50", "--data_dir", str(cifar10_dir),
                           "--device", "cpu", "--record", str(tmp_path / "B.md"), "--train_flags=--level 50"],
                          cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "BENCH_SIGNAL": signal_name, "TMPDIR": str(tmp_path)})
    assert (proc.returncode, proc.stderr.splitlines()[-1:]) == (130, [
        "error: interrupted; resnet32 category seed 0 fp32: stopped; --what accuracy trains its runs in a "
        "temporary folder, removed with them: nothing to resume"]), proc.stderr
    assert "--resume" not in proc.stderr and "preempted" not in proc.stderr
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith("torchinductor")] == []

def test_bench_leaves_a_callers_random_state_and_warning_filters(capsys):
    """bench.main seeded torch's global RNG (seed 0 for each model it built) and kept its filter of
    DataLoader's worker-count warning: a notebook's next torch.rand drew the same numbers whatever
    it had seeded, and its own DataLoader's warning was gone for good."""
    from bench import bench
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    filters = list(warnings.filters)
    bench.main(["--what", "checkpoint", "--labels", "category", "--device", "cpu", "--repeats", "1", "--no_record"])
    assert torch.equal(torch.rand(3), expected) and warnings.filters == filters


def test_bench_accuracy_keeps_the_runs_that_finished(monkeypatch, cifar10_dir, tmp_path, capsys):
    """One failing train.py run lost the finished ones: nothing was recorded."""
    import train
    from bench import bench
    from utils.errors import UsageError
    done = {"test_acc": 0.5, "valid_acc": 0.4, "images_per_s": 100.0, "train_seconds": 3.0,
            "train_images": 10, "test_images": 5}

    def fake_main(argv):
        if "--amp" in argv:
            raise UsageError("the bf16 run failed")
        return done
    monkeypatch.setattr(train, "main", fake_main)
    record = tmp_path / "B.md"
    bench.main(["--what", "accuracy", "--labels", "category", "--data_dir", str(cifar10_dir), "--device",
                "cpu", "--valid_size", "50", "--record", str(record), "--train_flags=--level 50"])
    text = record.read_text()
    assert "| resnet32 | category | 0 | fp32 | 50.00% | 40.00% | 100 | 3 |" in text
    assert "| resnet32 | category | 0 | bf16 + channels_last | failed | - | - | - |" in text
    assert "per pair" not in text and text.startswith("# Benchmarks")
    assert "resnet32 category seed 0 bf16 + channels_last: failed: UsageError: the bf16 run failed" in capsys.readouterr().err


def test_bench_appends_each_entry_to_the_record_below_its_one_heading(monkeypatch, cifar10_dir, tmp_path, capsys):
    """BENCHMARKS.md is a history, newest last: a second run adds its entry after the first's,
    which stays as it was; the file's heading is written once, into a new or empty file. What a
    run prints is the entry it adds, to the byte (stdout had a blank line more, after the header)."""
    import train
    from bench import bench
    results = iter([0.5, 0.25, 0.75, 0.5])  # test_acc of the fp32 and bf16 rows of two runs
    monkeypatch.setattr(train, "main", lambda argv: {
        "test_acc": next(results), "valid_acc": 0.4, "images_per_s": 100.0, "train_seconds": 3.0,
        "train_images": 10, "test_images": 5})
    record = tmp_path / "B.md"
    argv = ["--what", "accuracy", "--labels", "category", "--data_dir", str(cifar10_dir), "--device", "cpu",
            "--valid_size", "50", "--record", str(record)]
    bench.main(argv)
    first = record.read_text()
    capsys.readouterr()
    bench.main(argv)
    text = record.read_text()
    assert text.startswith(first) and text.count("# Benchmarks") == 1 and text.count("\n## ") == 2
    assert capsys.readouterr().out == text[len(first):]
    assert first.count("per pair: -25.00 points") == 1 and text.count("per pair: -25.00 points") == 2
    assert "| fp32 | 75.00% |" in text[len(first):] and "| fp32 | 75.00% |" not in first


def test_bench_accuracy_names_the_compile_mode_of_its_bf16_rows(monkeypatch, cifar10_dir):
    """--compile_modes MODE compiles the bf16 runs, and their precision cell says 'compile MODE'
    (it said 'bf16 + channels_last + default')."""
    import train
    from bench import bench
    argvs = []

    def fake_main(argv):
        argvs.append(argv)
        return {"test_acc": 0.5, "valid_acc": 0.4, "images_per_s": 100.0, "train_seconds": 3.0,
                "train_images": 10, "test_images": 5}
    monkeypatch.setattr(train, "main", fake_main)
    args = bench.parse_args(["--what", "accuracy", "--labels", "category", "--data_dir", str(cifar10_dir),
                             "--compile_modes", "default", "--no_record"])
    lines = bench.accuracy_lines(args, bench.accuracy_rows(args, torch.device("cpu")))
    assert [a[a.index("--compile") + 1] if "--compile" in a else None for a in argvs] == [None, "default"]
    assert [line.split(" | ")[3] for line in lines if line.startswith("| resnet32")] == [
        "fp32", "bf16 + channels_last + compile default"]


@pytest.mark.parametrize("flags, message", [
    (["--labels", "bert"], "no label file {labels}/cifar10_bert.npy for --label bert"),
    (["--valid_size", "300"], "--valid_size 300 leaves no training images: the dataset has 300"),
    (["--train_flags=--label_dir {tmp}"], "no label file {tmp}/cifar10_speech.npy for --label speech"),
])
def test_bench_accuracy_refuses_what_every_run_would(flags, message, cifar10_dir, tmp_path, monkeypatch,
                                                     capsys):
    """A label without its file (bert and glove ship none) or a --valid_size the data cannot give
    was a 'failed' row for every run, appended to --record with exit status 0: one error now,
    before any training."""
    import train
    from bench import bench
    from labels import LABEL_DIR

    def fake_main(argv):
        raise AssertionError("trained")
    monkeypatch.setattr(train, "main", fake_main)
    record = tmp_path / "B.md"
    with pytest.raises(SystemExit) as exit_info:
        run_cli(bench.main, ["--what", "accuracy", "--data_dir", str(cifar10_dir), "--device", "cpu",
                             "--valid_size", "50", "--record", str(record),
                             *[f.format(tmp=tmp_path) for f in flags]])
    out, err = capsys.readouterr()
    assert exit_info.value.code == 2 and err.count("\n") == 1 and out == "", err
    assert message.format(tmp=tmp_path, labels=LABEL_DIR) in err and not record.exists()


def test_bench_attack_table_counts_the_images_the_paper_loops_ran(monkeypatch, tmp_path):
    """The paper's loops run on the first of our --attack_images: with fewer of those than
    --paper_attack_images the caption said the larger number (10 here, for a loop on 3). One
    image is one ('paper loop on 1 images' before)."""
    from bench import bench
    given = []

    def fake_attack_rows(model, space, images, labels, device, repeats, paper_images, batch_size):
        given.append((len(images), paper_images))
        return [("ours: FGSM, batched", bench.Timing.of_pairs([200.0], [100.0]), "paper: FGSM")], (0.5, 0.25)
    monkeypatch.setattr(bench, "attack_rows", fake_attack_rows)
    for count, words in ((3, "3 images"), (1, "1 image")):
        record = tmp_path / f"B{count}.md"
        bench.main(["--what", "attack", "--labels", "category", "--device", "cpu", "--attack_images", str(count),
                    "--paper_attack_images", "10", "--repeats", "1", "--record", str(record)])
        assert given.pop() == (count, 10)
        assert (f"(paper loop on {words}, ours on {count} at batch 500; random images, 50% of them correctly "
                "classified and so attacked, 25% of the paper loop's, chosen among them for that share)"
                in record.read_text())


def test_bench_paper_loops_attack_our_share_of_images(monkeypatch):
    """The paper's one-image loops time some of our images, with the share the model classifies
    correctly (and so attacks) that ours has: an attacked image costs them a backward and a forward
    pass per step, a skipped one a forward pass. They ran on the first of ours, here all
    misclassified against half of ours (on random images and a random speech resnet32, 4% of the
    first 50 against 9% of 500: its 10-step loop ran 1.6x as fast as on 50 with our share)."""
    import utils.attacks
    from bench import bench

    class Written(torch.nn.Module):  # predicts the class written in an image's first pixel
        model_args = {"mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)}

        def __init__(self):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.ones(()))

        def forward(self, images):
            return self.scale * torch.nn.functional.one_hot((images[:, 0, 0, 0] * 255).round().long(), 10)
    images = torch.zeros(20, 3, 32, 32, dtype=torch.uint8)
    images[:, 0, 0, 0] = torch.arange(20) % 10
    labels = (torch.arange(20) + (torch.arange(20) < 10)) % 10  # the first 10 misclassified
    loaded = []
    monkeypatch.setattr(bench, "paper_loader", lambda images01, labels, mean, std: loaded.append(images01))
    for timed_out in ("paper_fgsm", "paper_iterative"):  # what is timed is not what this checks
        monkeypatch.setattr(bench, timed_out, lambda *args, **kwargs: None)
    monkeypatch.setattr(utils.attacks, "run_attack", lambda *args, **kwargs: None)
    monkeypatch.setattr(bench, "fast_bf16", lambda device: False)
    _, shares = bench.attack_rows(Written(), CategorySpace(10), images, labels, torch.device("cpu"), 1, 4)
    torch.testing.assert_close(loaded[0], to_float(images[[0, 1, 10, 11]]))
    assert shares == (0.5, 0.5)
    assert bench.paper_subset(torch.tensor([False, True, True]), 5).tolist() == [0, 1, 2]  # all ours


def test_bench_leaves_out_bf16_where_it_is_emulated(tmp_path, monkeypatch):
    """On a device without native bf16 the training table times float32 variants only (bf16
    would take minutes there and tell nothing) and says why; torch.compile builds on
    channels_last in float32 there."""
    from bench import bench
    monkeypatch.setattr(bench, "fast_bf16", lambda device: False)
    assert bench.fast_options(torch.device("cpu")) == ("channels_last", {"channels_last": True})
    record = tmp_path / "BENCHMARKS.md"
    bench.main(["--what", "train", "--labels", "category", "--device", "cpu", "--train_images", "128",
                "--repeats", "1", "--compile_modes", "--batch_sizes", "--record", str(record)])
    text = record.read_text()
    rows = [line.split("|")[1].strip() for line in text.splitlines() if line.startswith("| paper")
            or line.startswith("| ours")]
    assert rows == ["paper: PIL + DataLoader(4 workers), fp32", "ours: on-device data + augmentation",
                    "ours + channels_last"]
    assert "bf16 rows left out: this device has no native bf16" in text


def test_bench_training_caption_counts_the_images_its_epochs_timed(tmp_path, monkeypatch):
    """Each timed epoch trains on whole batches (the paper's loader drops its last one): of
    --train_images 300, 256 at batch 128 and at 256, the count the rates divide by, where the
    caption said 300; of 1000, 896, 768 and 512 at batches 128, 256 and 512."""
    from bench import bench

    class Paper:
        def compare(self, run, images, repeats):
            counted.append(images)
    counted = []
    space = bench.make_space("category")
    for batch_size in (128, 256):
        bench.our_training_timing(Paper(), "resnet32", space, torch.zeros(300, 3, 32, 32, dtype=torch.uint8),
                                  torch.zeros(300, dtype=torch.long), batch_size, torch.device("cpu"), 1)
    assert counted == [256, 256]
    timing = bench.Timing.of_pairs([2.0], [1.0])
    monkeypatch.setattr(bench, "training_rows", lambda *args: [("paper", 128, timing)])
    record = tmp_path / "B.md"
    for images, sizes, caption in (("300", ["256"], "(256 images per timed epoch;"),
                                   ("1000", ["256", "512"], "(images per timed epoch: 896 at batch 128, 768 "
                                    "at batch 256, 512 at batch 512;")):
        bench.main(["--what", "train", "--labels", "category", "--device", "cpu", "--train_images", images,
                    "--batch_sizes", *sizes, "--record", str(record)])
        assert f"**Training, resnet32, category labels** {caption}" in record.read_text()


def test_bench_compiled_only_times_the_compiled_variants(tmp_path, monkeypatch):
    """--compiled_only: the paper's pipeline and our compiled variants, at 128 and each of
    --batch_sizes, and none of the eager ones (a short GPU session's minutes)."""
    from bench import bench
    timed = []

    def fake_timing(paper, arch, space, images, labels, batch_size, device, repeats, **options):
        timed.append((batch_size, options))
        return bench.Timing.of_pairs([200.0], [100.0])
    monkeypatch.setattr(bench, "our_training_timing", fake_timing)
    record = tmp_path / "B.md"
    bench.main(["--what", "train", "--labels", "category", "--device", "cpu", "--train_images", "256",
                "--repeats", "1", "--compiled_only", "--compile_modes", "default", "--batch_sizes", "256",
                "--record", str(record)])
    base, options = bench.fast_options(torch.device("cpu"))
    assert timed == [(128, options | {"compile": "default"}), (256, options | {"compile": "default"})]
    rows = [line.split("|")[1:3] for line in record.read_text().splitlines() if line.startswith("| ")]
    assert [(name.strip(), int(batch)) for name, batch in rows[2:]] == [
        ("paper: PIL + DataLoader(4 workers), fp32", 128), (f"ours + {base} + compile default", 128),
        (f"ours + {base} + compile default, batch 256", 256)]


def test_bench_cudnn_benchmark_rows(monkeypatch):
    """--cudnn_benchmark: each compiled variant is timed twice, the second time with our epochs
    (not the paper's) under torch.backends.cudnn.benchmark, which is restored after."""
    from bench import bench
    timed, flags = [], []

    def fake_timing(paper, arch, space, images, labels, batch_size, device, repeats, **options):
        timed.append(options.get("cudnn_benchmark", False))
        return bench.Timing.of_pairs([200.0], [100.0])
    monkeypatch.setattr(bench, "our_training_timing", fake_timing)
    images = torch.randint(0, 256, (256, 3, 32, 32), dtype=torch.uint8)
    labels = torch.randint(0, 10, (256,))
    rows = bench.training_rows("resnet32", "category", images, labels, torch.device("cpu"), 1, [],
                               ["default"], compiled_only=True, cudnn_benchmark=True)
    base = bench.fast_options(torch.device("cpu"))[0]
    assert [name for name, _, _ in rows[1:]] == [f"ours + {base} + compile default",
                                                 f"ours + {base} + compile default + cudnn.benchmark"]
    assert timed == [False, True]
    monkeypatch.undo()

    class Paper:
        def compare(self, run, images, repeats):
            flags.append(torch.backends.cudnn.benchmark)
            run()
            flags.append(torch.backends.cudnn.benchmark)
    monkeypatch.setattr(bench, "train_epoch", lambda *args: flags.append(torch.backends.cudnn.benchmark))
    before = torch.backends.cudnn.benchmark
    bench.our_training_timing(Paper(), "resnet32", bench.make_space("category"), images, labels, 128,
                              torch.device("cpu"), 1, cudnn_benchmark=not before)
    assert flags == [before, not before, before] and torch.backends.cudnn.benchmark == before


def test_bench_host_compiles_no_mode_when_given_none(tmp_path, monkeypatch):
    """`--compile_modes` with no mode times no compiled step, as for --what train and accuracy;
    --what host compiled the default mode anyway (minutes on a CPU)."""
    from bench import bench
    our_step = bench.our_step

    def eager_step(*args, compile=None, **options):
        assert not compile, f"compiled with mode {compile}"
        return our_step(*args, **options)
    monkeypatch.setattr(bench, "our_step", eager_step)
    record = tmp_path / "B.md"
    bench.main(["--what", "host", "--labels", "category", "--device", "cpu", "--compile_modes",
                "--record", str(record)])
    lines = record.read_text().splitlines()
    rows = [line.split("|")[1:-1] for line in lines if line.startswith("| ours")]
    assert [row[0].strip() for row in rows] == ["ours, fp32", f"ours, {bench.fast_options(torch.device('cpu'))[0]}"]
    for row in rows:  # a CPU step returns when it is done: the two times are one
        host_ms, step_ms = (float(cell) for cell in row[-2:])
        assert 0 < host_ms <= step_ms <= host_ms * 1.01 + 0.01


def test_bench_pairs_each_timing_with_the_papers(monkeypatch):
    """Each of our timings follows one of the paper's, so a machine that slows down as the run
    goes on (1x, 2x, 3x, ... slower, pair by pair) still gives the true ratio (ours 2x as fast)."""
    from bench import bench
    clock, calls = [0.0], []

    def work(name, seconds):
        def run():
            calls.append(name)
            clock[0] += seconds * calls.count("paper")  # slower with every pair
        return run
    monkeypatch.setattr(bench.time, "perf_counter", lambda: clock[0])
    paper = bench.Paper(work("paper", 0.2), 100, torch.device("cpu"))
    timing = paper.compare(work("ours", 0.1), 100, repeats=3)
    assert calls == ["paper", "ours"] + ["paper", "ours"] * 3  # warm-ups, then pairs
    assert [timing.ratio, timing.low, timing.high] == pytest.approx([2.0] * 3)
    assert paper.timing().rate == pytest.approx(timing.paper)
    assert timing.rate == pytest.approx(100 / (0.1 * 3))  # the median pair, the second (3x slower)
    # Where every variant of ours failed before a pair, the paper's row is timed on its own.
    calls.clear()
    alone = bench.Paper(work("paper", 0.2), 100, torch.device("cpu"))
    assert alone.timing().rate == pytest.approx(100 / (0.2 * 2))  # the run after its warm-up


def test_bench_reports_the_median_of_the_pairs_ratios_and_their_range():
    """A pair sees one machine speed: "vs paper" is the median of the per-pair ratios, not the
    ratio of two medians that may come from different pairs (here 1.2x, from a fast pair of
    ours against a fast pair of the paper's), and the table shows the pairs' range."""
    from bench import bench
    timing = bench.Timing.of_pairs(ours=[120, 100, 330], paper=[100, 40, 110])  # 1.2, 2.5, 3.0
    assert (timing.rate, timing.paper) == (120, 100)
    assert timing.ratio == pytest.approx(2.5)
    assert timing.vs_paper(2) == "2.50x (1.20-3.00)"
    assert bench.Timing.of_pairs([100], [50]).vs_paper(1) == "2.0x"  # one pair: no range


def test_bench_paper_images_are_the_papers_pil_transforms():
    """The paper's data path as bench/paper_attack.py re-creates it: a uint8 image through PIL,
    normalised as it is at test time; in training a crop of the image padded by 4 black pixels on
    each side, at a random place, then flipped half the time. Its test loader gives one image at a
    time from 4 worker processes."""
    from bench.paper_attack import PaperImages, paper_loader
    torch.manual_seed(0)
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)

    def normalised(pixels):
        return (to_float(pixels) - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    image, label = PaperImages(to_float(images), torch.tensor([3, 5]), mean, std)[1]
    torch.testing.assert_close(image, normalised(images[1]))
    assert label == 5
    padded = torch.nn.functional.pad(images[0], (4, 4, 4, 4))
    crops = {(dy, dx, flip): normalised(padded[:, 4 + dy:36 + dy, 4 + dx:36 + dx].flip(-1) if flip
                                        else padded[:, 4 + dy:36 + dy, 4 + dx:36 + dx])
             for dy in range(-4, 5) for dx in range(-4, 5) for flip in (False, True)}
    train, drawn = PaperImages(to_float(images), torch.tensor([3, 5]), mean, std, train=True), []
    for _ in range(100):
        image = train[0][0]
        drawn += [key for key, crop in crops.items() if torch.allclose(image, crop)][:1]
    assert len(drawn) == 100  # each draw one of the crops, flipped or not
    assert {flip for _, _, flip in drawn} == {False, True}
    assert {dy for dy, _, _ in drawn} == {dx for _, dx, _ in drawn} == set(range(-4, 5))
    loader = paper_loader(to_float(images), torch.tensor([3, 5]), mean, std)
    assert (loader.batch_size, loader.num_workers) == (1, 4)


def test_bench_paper_images_make_each_pil_image_as_it_is_read(monkeypatch):
    """torchvision's CIFAR10, which the paper's dataset wraps, makes an item's PIL image from its
    uint8 array when the item is read, in the loader's workers: the re-creation made them all
    before any timing, about 10 of the 130 microseconds a training image costs a worker."""
    from PIL import Image

    from bench.paper_attack import PaperImages
    made, fromarray = [], Image.fromarray
    monkeypatch.setattr(Image, "fromarray", lambda *args, **kwargs: made.append(1) or fromarray(*args, **kwargs))
    images = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    dataset = PaperImages(to_float(images), torch.tensor([3, 5, 7]), (0.5,) * 3, (0.25,) * 3, train=True)
    assert made == []
    for i in (0, 1, 0, 2):
        dataset[i]
    assert len(made) == 4


def test_bench_paper_training_is_the_papers_loop(monkeypatch):
    """bench's paper pipeline trains from a DataLoader of 4 workers over the paper's augmented PIL
    images, and reads the loss with .item() at every step, as the paper's loop did (a sync a step)."""
    from bench import bench
    from bench.paper_attack import PaperImages
    loaders, items = [], []
    real_loader, real_item = bench.PaperLoader, torch.Tensor.item

    def loader(dataset, **options):  # the workers' options recorded, the batches read here
        loaders.append((dataset, options))
        return real_loader(dataset, **options | {"num_workers": 0, "persistent_workers": False})

    def item(tensor):  # those of the loop itself (the sampler's and the crops' draws call it too)
        caller = sys._getframe(1).f_code
        if (caller.co_filename, caller.co_name) == (bench.__file__, "epoch"):
            items.append(tuple(tensor.shape))
        return real_item(tensor)
    monkeypatch.setattr(bench, "PaperLoader", loader)
    monkeypatch.setattr(torch.Tensor, "item", item)
    images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    bench.paper_training("resnet32", bench.make_space("category"), images, torch.arange(8) % 10, 4,
                         torch.device("cpu"))  # its warm-up: one epoch of 2 steps
    monkeypatch.undo()
    (dataset, options), = loaders
    assert isinstance(dataset, PaperImages) and options["num_workers"] == 4 and options["shuffle"]
    assert [type(t).__name__ for t in dataset.transform.transforms] == [
        "RandomCrop", "RandomHorizontalFlip", "ToTensor", "Normalize"]
    assert items == [()] * 2  # the loss, at each step


def test_bench_marks_the_rows_that_ran_without_cuda_graphs(monkeypatch, capsys):
    """A mode that records CUDA graphs (reduce-overhead) but ran graphs without them, as torch's
    skip counter says, timed plain kernel launches: its rows say so, the others say nothing."""
    from torch._dynamo.utils import counters
    from bench import bench

    def timing(paper, arch, space, images, labels, batch_size, device, repeats, **options):
        if options.get("compile"):  # the default mode records no CUDA graphs: never a note
            counters["inductor"]["cudagraph_skips"] += 2  # what 2 graphs on a CPU do
        rate = 400 if options.get("compile") == "reduce-overhead" else 200
        return bench.Timing.of_pairs([rate], [100])
    monkeypatch.setattr(bench, "our_training_timing", timing)
    monkeypatch.setattr(bench, "fast_bf16", lambda device: False)
    images = torch.zeros(128, 3, 32, 32, dtype=torch.uint8)
    rows = bench.training_rows("resnet32", "category", images, torch.zeros(128, dtype=torch.long),
                               torch.device("cpu"), 1, [256], ["default", "reduce-overhead"])
    assert [name for name, _, _ in rows[3:]] == [
        "ours + channels_last + compile default",
        "ours + channels_last + compile reduce-overhead (2 graphs without CUDA graphs)",
        "ours + channels_last + compile reduce-overhead, batch 256 (2 graphs without CUDA graphs)"]
    # each row on stderr as it is measured: a run stopped before its table prints keeps them
    assert capsys.readouterr().err.splitlines()[-2:] == [
        "ours + channels_last + compile reduce-overhead: 400.0 images/s, 4.00x the paper's",
        "ours + channels_last + compile reduce-overhead, batch 256: 400.0 images/s, 4.00x the paper's"]


@needs_compiler
@pytest.mark.parametrize("label", ["speech", "mcr2"])  # the decoder head; MCR2's batch loss
def test_compiled_train_step_gives_the_eager_losses_gradients_and_update(tiny, label_dir, label):
    """`--compile` compiles the whole SGD step (augmentation, model, loss, decoding, the backward
    traced into the same graph, the foreach SGD update): the eager numbers, its gradient and
    update no further from float64's than twice eager float32's own rounding."""
    from cifar import draw_augmentation
    from utils.labelspace import load_label_space
    from utils.training import TrainStep
    space = load_label_space(label, "cifar10", 10, label_dir)
    batch, labels = tiny.train_images[:32], tiny.train_labels[:32]
    offsets, flips = draw_augmentation(32, torch.Generator().manual_seed(0), "cpu")
    results = {}
    for name, dtype, mode in (("float64", torch.float64, None), ("float32", torch.float32, None),
                              ("compiled", torch.float32, "reduce-overhead")):
        torch._dynamo.reset()
        torch.manual_seed(0)
        default = torch.get_default_dtype()
        torch.set_default_dtype(dtype)  # to_float makes images of the default dtype
        try:
            model = build_model("resnet32", space.output_shape).train()
            before = flat(model.parameters())
            loss_sum, correct = TrainStep(model, space, 0.1, compile=mode)(batch, offsets, flips,
                                                                          labels, 1 / 32)
        finally:
            torch.set_default_dtype(default)
        results[name] = (loss_sum.item(), correct.item(), flat(p.grad for p in model.parameters()),
                         flat(model.parameters()) - before)
    (_, _, exact_grads, exact_update), (loss_sum, correct, grads, update), compiled_step = results.values()
    c_loss_sum, c_correct, c_grads, c_update = compiled_step
    assert c_loss_sum == pytest.approx(loss_sum, rel=1e-4) and c_correct == correct
    # Fused kernels round differently: float32's gradient is itself 0.1-0.5% off float64's here.
    assert relative_error(c_grads, exact_grads) < 2 * relative_error(grads, exact_grads)
    assert relative_error(c_update, exact_update) < 2 * relative_error(update, exact_update)
    assert c_update.abs().max() > 0  # the step did update the weights


@needs_compiler
def test_compiled_step_leaves_little_host_work_and_keeps_its_graphs(tiny):
    """Outside its graphs a compiled step runs the random draws and a few small operators, but no
    per-parameter work: gradient accumulation is in the graph with the forward work and the
    backward, the SGD update in its own. Two graphs from the first step on: a new lr every step
    (a warm-up) is an in-place fill and a trailing batch an eager step, neither a recompile."""
    from torch._dynamo.utils import counters
    from bench.bench import host_work
    from cifar import draw_augmentation
    from utils.labelspace import CategorySpace
    from utils.training import TrainStep, set_lr
    torch._dynamo.reset()
    torch.manual_seed(0)
    step = TrainStep(build_model("resnet32", (10,)).train(), CategorySpace(10), 0.1, compile="default")
    generator = torch.Generator().manual_seed(0)

    def one_step(lr, images=16):
        set_lr(step.optimizer, lr)
        offsets, flips = draw_augmentation(images, generator, "cpu")
        return step(tiny.train_images[:images], offsets, flips, tiny.train_labels[:images],
                    1 / images)

    def follows_sgd(lr, images=16):
        """p -= lr * buffer, with the buffer this step made: the step used the optimizer's lr."""
        before = flat(step.model.parameters())
        one_step(lr, images)
        momentum = flat(step.optimizer.state[p]["momentum_buffer"] for p in step.model.parameters())
        torch.testing.assert_close(flat(step.model.parameters()), before - lr * momentum,
                                   rtol=0, atol=1e-6)

    graphs_before = counters["stats"]["unique_graphs"]
    follows_sgd(0.1)
    # Forward work with the backward, and the update: the first step's update (momentum buffers
    # made at the start, not in it) traced the graph every later step replays.
    assert counters["stats"]["unique_graphs"] - graphs_before == 2
    follows_sgd(0.05)
    follows_sgd(0.05, images=7)  # a trailing batch: an eager step, no graph of its own
    with torch.profiler.profile() as profile:
        one_step(0.01)
    assert counters["stats"]["unique_graphs"] - graphs_before == 2  # nor for a new lr
    work = host_work(profile)
    assert work["graphs"] == 2, work
    assert not any("AccumulateGrad" in name for name in work["operators"]), work
    assert sum(work["operators"].values()) <= 10, work  # eager: ~400 (see bench.py --what host)


@needs_compiler
@pytest.mark.skipif(not ISOLATES_RECOMPILES, reason="torch.compile without isolate_recompiles "
                    "(torch < 2.14): runs share the recompile limit")
def test_every_run_of_one_process_compiles_its_step(tiny):
    """A notebook calling train.main in a loop builds a TrainStep a run, in one process: its graphs
    guard on the run's optimizer, and each run's graphs count against a recompile limit of their
    own, so the runs after torch's recompile_limit (8; 1 here) still train compiled, not eagerly."""
    from torch._dynamo.utils import counters
    from cifar import draw_augmentation
    from utils.labelspace import CategorySpace
    from utils.training import TrainStep
    torch._dynamo.reset()
    offsets, flips = draw_augmentation(16, torch.Generator().manual_seed(0), "cpu")
    graphs = []
    # torch's own patch: pytest 9.2's monkeypatch undoes a config's with a delattr, which hides it
    with torch._dynamo.config.patch(recompile_limit=1):
        for run in range(2):
            torch.manual_seed(run)
            model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 10))
            step = TrainStep(model, CategorySpace(10), 0.1, compile="default")
            before = counters["stats"]["unique_graphs"]
            step(tiny.train_images[:16], offsets, flips, tiny.train_labels[:16], 1 / 16)
            graphs.append(counters["stats"]["unique_graphs"] - before)
    assert graphs == [2, 2]  # forward work with the backward, and the update; eager would be 0


COMPILED_STEP = """
import torch
from cifar import draw_augmentation
from utils.labelspace import CategorySpace
from utils.training import TrainStep
images, labels = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8), torch.arange(8)
model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 10))
step = TrainStep(model, CategorySpace(10), 0.1, compile="default")
offsets, flips = draw_augmentation(8, torch.Generator().manual_seed(0), "cpu")
print(step(images, offsets, flips, labels, 1 / 8).tolist())
"""


@needs_compiler
def test_a_compiled_step_prints_no_profiler_warning():
    """torch.compile warned at every --compile run, on stderr and in a sweep's train.log, as it
    traced the optimizer's step: "W... Profiler record function <class
    'torch.autograd.profiler.record_function'> will be ignored". That record is dropped; the step
    trains compiled as before. (On a machine with nvcc and no GPU, torch's own "No CUDA runtime is
    found" line may show: torch says it on importing its C++ builder.)"""
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "always"}
    proc = subprocess.run([sys.executable, "-c", COMPILED_STEP], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads(proc.stdout)) == 2  # the step's loss sum and correct decodes
    warned = [line for line in proc.stderr.splitlines() if "No CUDA runtime is found" not in line]
    assert warned == [], proc.stderr


FAULTS_OF_FIVE_STEPS = """
import ctypes, json, resource, sys, torch
from utils.training import M_MMAP_THRESHOLD, M_TRIM_THRESHOLD, keep_freed_memory

def faults_of_five_steps():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        held = [torch.ones(2 << 20) for _ in range(25)]  # a step's activations: 25 x 8 MiB, written
        del held
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

# glibc's starting thresholds, held: whether its own later choices give memory back varies from
# one process to the next (0 or 245,600 page faults here), these always do.
for parameter in (M_TRIM_THRESHOLD, M_MMAP_THRESHOLD):
    ctypes.CDLL(None).mallopt(parameter, 128 << 10)
given_back = faults_of_five_steps()
keep_freed_memory(torch.device(sys.argv[1]))
faults_of_five_steps()
print(json.dumps({"given_back": given_back, "kept": faults_of_five_steps()}))
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="tunes glibc's malloc")
@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_memory_a_cpu_step_frees_is_reused_without_page_faults(device):
    """`keep_freed_memory` on the CPU: buffers freed and made again, as a step's activations are,
    come back without a page fault, where glibc gives the memory back and every page faults again
    (1,000 MiB made here, 256,000 pages). For a GPU it leaves malloc alone."""
    from conftest import REPO
    proc = subprocess.run([sys.executable, "-c", FAULTS_OF_FIVE_STEPS, device], cwd=REPO, text=True,
                          capture_output=True, timeout=120, check=True)
    faults = json.loads(proc.stdout)
    assert faults["given_back"] > 200_000, faults
    if device == "cpu":
        assert faults["kept"] < 1_000, faults
    else:
        assert faults["kept"] > 200_000, faults
