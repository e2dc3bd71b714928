"""Throughput benchmark: the paper's pipeline against ours, training and attacks, in one run.

    python bench/bench.py                                  # resnet32, speech and category, this device
    python bench/bench.py --models resnet32 resnet110 vgg19 --labels speech --device cuda
    python bench/bench.py --what train --no_record         # print only, no BENCHMARKS.md entry
    python bench/bench.py --checkpoint outputs/.../speech_seed7_resnet32_best_model.pth \
        --data_dir data                                    # attacks on a trained model, real images
    python bench/bench.py --what accuracy --data_dir data --epochs 30 --seeds 0 1
                                                           # train.py in fp32 and in bf16: test acc
    python bench/bench.py --what accuracy --data_dir data --train_flags='--batch_size 512 --lr 0.4 --warmup_epochs 5'
    python bench/bench.py --what host --labels category    # operators a step runs outside graphs
    python bench/bench.py --what train --device cuda --compile_modes reduce-overhead --compiled_only \
        --cudnn_benchmark --batch_sizes                    # the compiled step alone, +- cuDNN's search
    python bench/bench.py --what checkpoint --models resnet32 vgg19   # the cost of a last checkpoint

Training images/s: (a) the paper's pipeline re-created (per-image PIL crop/flip/normalise in a
DataLoader with 4 workers, fp32, a host sync per step for the running loss) and (b) ours, the
training loop of train.py (`utils.training.train_epoch`: uint8 data on the device, batched
augmentation, no per-step sync) alone and with channels_last, bf16 autocast (where the device
computes in bf16), torch.compile (the default mode; on a GPU also reduce-overhead, which adds CUDA
graphs; --compiled_only: these rows only; --cudnn_benchmark: each also with cuDNN's algorithm
search) and larger batches. Attack images/s: the paper's one-image-at-a-time FGSM and 5-step
iterative attack against our batched attacks (FGSM, 5-step iterative, PGD-10). Host work (--what
host): the operators one training step runs from the host outside compiled graphs, counted by
torch.profiler, what keeps a GPU waiting at small batches, and the time a step takes to return to
the host beside the time it takes to finish on the device (alike where the device waits).
Checkpoints (--what checkpoint): the time to write train.py's last checkpoint of a run 600 epochs
in, what --checkpoint_seconds saves.
Each figure is the median of --repeats timed runs after a warm-up, with the device synchronised;
each of our timings is paired with one of the paper's taken just before it, and "vs paper" is the
median of the pairs' ratios, with their range: a machine whose speed drifts (this project's 2-core
CPU does, by up to 1.5x between identical epochs) slows both sides of a pair alike.
Appends a table with the device, versions and date to BENCHMARKS.md unless --no_record.

The tables go to stdout as they are measured; progress, and at the end the --record file they were
appended to, to stderr. Exit status: 0 done, 2 after one `error:` line (bad input), 130 Ctrl-C or
SIGTERM.
"""
import argparse
import collections
import contextlib
import datetime
import functools
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

if __name__ == "__main__":  # first: a Ctrl-C while modules load is one line, not a traceback
    from utils import errors
    errors.quiet_interrupts()

from train import COMPILE_MODES  # noqa: E402
from utils.errors import (CliParser, DefaultsFormatter, ExtendList, UsageError, as_parsed, call_cli,  # noqa: E402
                          doc_paragraphs, interrupt_says, log, nonempty, number, run_cli,
                          sigterm_as_interrupt)
from utils.flags import SHARED, add_flags, architecture_names, check_force_resume, label_name  # noqa: E402

LABEL_SHAPES = {"category": None, "speech": (64, 64), "bert": (48, 48), "glove": (50,)}
# The --what tables each flag acts on ('all' is train and attack); a flag not named acts on every
# one. Given (not at its default) with another --what, it would change nothing: parse_args refuses it.
FLAG_TABLES = {"train_images": ("train",), "compile_modes": ("train", "host", "accuracy"),
               "attack_images": ("attack",), "attack_batch_size": ("attack",),
               "paper_attack_images": ("attack",), "batch_sizes": ("train",), "compiled_only": ("train",),
               "cudnn_benchmark": ("train",), "checkpoint": ("attack",), "data_dir": ("attack", "accuracy"),
               "epochs": ("accuracy",), "seeds": ("accuracy",), "valid_size": ("accuracy",),
               "train_flags": ("accuracy",), "repeats": ("train", "attack", "checkpoint")}
# train.py flags that --what accuracy sets for each row
BENCH_TRAIN_FLAGS = ("--model", "--label", "--seed", "--data_dir", "--epochs", "--valid_size",
                     "--device", "--base_dir", "--amp", "--channels_last", "--compile")


def build_parser():
    about = doc_paragraphs(__doc__)
    parser = CliParser(prog="bench/bench.py", description=about[0].split("\n")[0],
                       epilog=about[-1],  # where its lines go, how it ends
                       formatter_class=DefaultsFormatter)
    what = parser.add_argument_group("what to time")
    what.add_argument("--what", choices=("train", "attack", "all", "accuracy", "host", "checkpoint"),
                      default="all", help="'all' is train and attack; 'accuracy' trains with "
                      "train.py in fp32 and bf16 on --data_dir and compares test accuracy; 'host' "
                      "counts the operators a training step runs from the host outside compiled "
                      "graphs; 'checkpoint' times the writing of a run's last checkpoint (a flag "
                      "that acts on none of its tables is refused)")
    # a list flag given twice adds up (utils.errors.ExtendList): --models resnet32 --models vgg19 times both
    what.add_argument("--models", nargs="+", action=ExtendList, default=["resnet32"],
                      choices=architecture_names(), metavar="MODEL",
                      help=f"architectures to time, of {', '.join(architecture_names())}")
    what.add_argument("--labels", nargs="+", action=ExtendList, type=label_name,
                      default=["speech", "category"], choices=LABEL_SHAPES, metavar="LABEL",
                      help="category, or a label whose shape is timed (speech 64x64, bert 48x48, "
                      "glove 50) with random targets: throughput does not depend on their values; "
                      "--what accuracy trains on the shipped label files (none for bert and glove: "
                      "python -m labels.generate makes them, --train_flags='--label_dir DIR' reads them)")
    add_flags(what, "device")
    what.add_argument("--compile_modes", nargs="*", action=ExtendList, default=None, choices=COMPILE_MODES,
                      metavar="MODE",
                      help=f"--what train, host and accuracy: torch.compile modes to time, of "
                      f"{', '.join(COMPILE_MODES)} (default: 'default reduce-overhead' on a GPU; 'default' on "
                      "the CPU, none for --what accuracy); --what accuracy compiles its bf16 runs with the "
                      "first")
    what.add_argument("--repeats", type=number(int), default=None,
                      help="--what train, attack and checkpoint: timed pairs (the paper's, then ours) per "
                      "variant (default: 7 on the "
                      "CPU, whose speed drifts, 3 on a GPU)")

    train = parser.add_argument_group("--what train (and all)")
    train.add_argument("--train_images", type=number(int), default=None,
                       help="images per timed training epoch (default: 1024 on the CPU, 20480 on a "
                       "GPU; --what host profiles one batch of 128)")
    train.add_argument("--batch_sizes", type=number(int, 2, inclusive=True), nargs="*", action=ExtendList,
                       default=[256, 512], help="larger batch sizes to try with the fastest variant")
    train.add_argument("--compiled_only", action="store_true", help="time the compiled variants only "
                       "(of ours; the paper's pipeline still runs): the eager rows took a GPU session "
                       "about 3 minutes per model and label")
    train.add_argument("--cudnn_benchmark", action="store_true", help="on a GPU: time each compiled "
                       "variant also with torch.backends.cudnn.benchmark (cuDNN times its convolution "
                       "algorithms for each shape on first use and keeps the fastest; train.py does "
                       "not set it)")

    attack = parser.add_argument_group("--what attack (and all)")
    attack.add_argument("--attack_images", type=number(int), default=500, help="images per batched attack run")
    attack.add_argument("--attack_batch_size", type=number(int), default=500, help="batch of our attacks")
    attack.add_argument("--paper_attack_images", type=number(int), default=None,
                        help="images for the one-at-a-time loops (default: 50 on the CPU, 200 on a GPU)")
    attack.add_argument("--checkpoint", type=nonempty, default=None, help="attack this train.py best-model "
                        "checkpoint (its model and labels; --models/--labels then apply to training "
                        "only) instead of a randomly initialised model")
    attack.add_argument("--data_dir", type=nonempty, default=None, help="attack the first test images "
                        "in this folder (cifar-10-batches-py; with --checkpoint, its run's dataset) "
                        "instead of random images; the data of --what accuracy")

    accuracy = parser.add_argument_group("--what accuracy (train.py runs on --data_dir)")
    accuracy.add_argument("--epochs", type=number(int), default=30, help="epochs per run")
    accuracy.add_argument("--seeds", type=SHARED["seed"]["type"], nargs="+", action=ExtendList, default=[0],
                          help="seeds")
    add_flags(accuracy, "valid_size", valid_size={"help": "validation images"})
    accuracy.add_argument("--train_flags", default="", help="more train.py flags for both runs, e.g. "
                          "--train_flags='--batch_size 512 --lr 0.4 --warmup_epochs 5'")

    out = parser.add_argument_group("output")
    out.add_argument("--record", type=nonempty, default=str(REPO / "BENCHMARKS.md"),
                     help="the file the tables are appended to, with device, versions and date")
    out.add_argument("--no_record", action="store_true", help="print the tables only")
    return parser


def parse_args(argv=None):
    """bench.py's flags from `argv`, with every check that needs no torch: a bad value is a
    UsageError before any timing and, from the command line, before torch loads (seconds)."""
    parser = build_parser()
    return checked(parser, parser.parse_args(argv))


def checked(parser, args):
    """`args`, `parser`'s flags, checked together and with what they imply (`DERIVED`) worked out
    from them: on a namespace checked before, the same again (a notebook's edited one is checked
    anew, its --train_flags read again where the first train_argv was timed under the new text)."""
    tables = ("train", "attack") if args.what == "all" else (args.what,)
    for flag, acts_on in FLAG_TABLES.items():  # a flag the chosen tables do not use did nothing, silently
        if getattr(args, flag) != parser.get_default(flag) and not set(acts_on) & set(tables):
            whats = [*acts_on, *(["all"] if {"train", "attack"} & set(acts_on) else [])]
            parser.error(f"--{flag} does not apply to --what {args.what} (only to --what {', '.join(whats)})")
    if args.what == "attack" and args.checkpoint:  # the checkpoint's model and labels are attacked
        if given := [f"--{f}" for f in ("models", "labels") if getattr(args, f) != parser.get_default(f)]:
            parser.error(f"{' and '.join(given)} {'does' if len(given) == 1 else 'do'} not apply to --what "
                         "attack --checkpoint (it attacks the checkpoint's model and labels; --what all "
                         "times training with them)")
    for flag in [a.dest for a in parser._actions if a.nargs in ("+", "*")]:  # --seeds 0 0: one row, not two
        if getattr(args, flag) is not None:
            setattr(args, flag, list(dict.fromkeys(getattr(args, flag))))
    if args.what == "accuracy" and not args.data_dir:
        parser.error("--what accuracy needs --data_dir (a CIFAR-10 folder)")
    if args.compiled_only and args.compile_modes == []:
        parser.error("--compiled_only with no --compile_modes leaves no variant of ours to time")
    if args.cudnn_benchmark and args.compile_modes == []:
        parser.error("--cudnn_benchmark adds rows to the compiled variants of --what train and all")
    check_train_flags(parser, args)
    # 128, the paper's, is timed anyway: given again, it was a second row of the same timing
    args.batch_sizes = [b for b in args.batch_sizes if b != 128]
    if args.train_images is not None:  # else its default depends on the device: main checks it
        check_train_images(parser, args)
    if args.no_record and args.record != parser.get_default("record"):  # which did they mean?
        parser.error(f"--record {args.record} and --no_record: pass one of them (--no_record prints the "
                     "tables only)")
    if not args.no_record:
        record = Path(args.record)
        existed = record.exists()
        try:  # before any timing: a record that cannot be written must not cost the measurements
            record.open("a").close()
            if not existed:  # made only to find out: a run that fails leaves no empty file behind
                record.unlink()
        except OSError as err:
            parser.error(f"--record {args.record}: {err.strerror or err}")
    return args


DERIVED = ("train_argv", "train_args")  # what `parse_args` adds to the flags (`check_train_flags`)


def check_train_flags(parser, args):
    """--train_flags as train.py's arguments (`args.train_argv`; for --what accuracy also parsed,
    `args.train_args`); what train.py would refuse is refused here, before any timing, naming
    train.py."""
    try:
        args.train_argv = shlex.split(args.train_flags)
    except ValueError as err:
        parser.error(f"--train_flags {args.train_flags!r}: {err}")
    if args.what == "accuracy":
        import train
        train_parser = train.build_parser()
        train_parser.prog = "train.py"
        args.train_args, unknown = train_parser.parse_known_args(args.train_argv)
        if unknown:
            parser.error(f"--train_flags: {train_parser.shortened(unknown) or 'train.py has no ' + ' '.join(unknown)}")
        try:  # train.py refuses them together: each row would have started, to fail
            check_force_resume(args.train_args)
        except UsageError as err:
            parser.error(f"--train_flags: {err}")
        # what each row is (and says it is): a later value in --train_flags would win over it
        own = [f for f in BENCH_TRAIN_FLAGS if any(t == f or t.startswith(f + "=") for t in args.train_argv)]
        if own:
            parser.error(f"--train_flags: {', '.join(own)} set by bench.py itself (per row, or by "
                         "its own flags), not through --train_flags")


def check_train_images(parser, args):
    """--train_images must hold a batch of each size the timing trains with."""
    largest = max([128, *args.batch_sizes])
    if args.what in ("train", "all") and largest > args.train_images:
        parser.error(f"--train_images {args.train_images} is less than a batch of {largest} (128, or "
                     "the largest of --batch_sizes)")


if __name__ == "__main__":  # --help, a bad flag or a bad value answer here, before torch loads
    parsed = []
    if status := call_cli(lambda argv: parsed.append(parse_args(argv))):
        sys.exit(status)
    errors.quiet_interrupts()  # call_cli gave Ctrl-C back to Python, and torch loads next

import numpy as np  # noqa: E402
import torch  # noqa: E402

from architecture import build_model  # noqa: E402
from cifar import draw_augmentation, to_float  # noqa: E402
from utils.atomic import append_whole, utf8  # noqa: E402
from utils.constants import PAPER_MEAN, PAPER_STD  # noqa: E402
from utils.grid import counted  # noqa: E402
from utils.labelspace import CategorySpace, TargetSpace  # noqa: E402
from utils.preempt import FINISH_SECONDS  # noqa: E402
from utils.runs import save_checkpoint  # noqa: E402
from utils.training import (MOMENTUM, WEIGHT_DECAY, TrainStep, checkpoint_state,  # noqa: E402
                            cudagraph_skips, fast_bf16, keep_freed_memory, make_optimizer,
                            resolve_device, run_label_space, train_epoch)
from bench.paper_attack import (PaperImages, PaperLoader, paper_fgsm, paper_iterative,  # noqa: E402
                                paper_loader)


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(run, images, device):
    """Images/s of one `run()` that processes `images` images."""
    synchronize(device)
    start = time.perf_counter()
    run()
    synchronize(device)
    return images / (time.perf_counter() - start)


class Timing(collections.namedtuple("Timing", "rate paper ratio low high")):
    """A paired comparison: our median images/s, the median of the paper's timings paired with
    ours, and the median, lowest and highest of the pairs' ratios (ours over the paper's)."""

    @classmethod
    def of_pairs(cls, ours, paper):
        ratios = [a / b for a, b in zip(ours, paper)]
        return cls(statistics.median(ours), statistics.median(paper), statistics.median(ratios),
                   min(ratios), max(ratios))

    def vs_paper(self, digits):
        """The table's "vs paper" cell: the median ratio and, where there were several pairs,
        their range; "failed" for a variant that failed (`attempt`)."""
        if np.isnan(self.ratio):
            return "failed"
        spread = f" ({self.low:.{digits}f}-{self.high:.{digits}f})" if self.low != self.high else ""
        return f"{self.ratio:.{digits}f}x{spread}"


FAILED = Timing(*[float("nan")] * 5)


def rate_cell(rate, digits):
    """A table's images/s cell; '-' for a variant that failed."""
    return "-" if np.isnan(rate) else f"{rate:,.{digits}f}"


class Paper:
    """The paper's side of a comparison: `run()` processes `images` images. Each of our timings
    is paired with one of the paper's, taken just before it: a machine's speed drifts (here one
    of our training epochs ran at 141 to 218 images/s, ten times in a row on an idle 2-core CPU),
    and a pair sees the same machine. Its row is the median of all its timings."""

    def __init__(self, run, images, device):
        self.run, self.images, self.device, self.rates = run, images, device, []
        run()  # warm-up: worker start

    def compare(self, run, images, repeats):
        """The `Timing` of our `run()` over `repeats` pairs after a warm-up."""
        run()  # warm-up: allocator, autotuning, compilation
        ours, paper = [], []
        for _ in range(repeats):
            paper.append(timed(self.run, self.images, self.device))
            ours.append(timed(run, images, self.device))
        self.rates += paper
        return Timing.of_pairs(ours, paper)

    def timing(self):
        """The paper's own row: the median of all its timings, or of one taken now where no
        variant of ours got as far as a pair (all failed)."""
        rate = statistics.median(self.rates or [timed(self.run, self.images, self.device)])
        return Timing(rate, rate, 1.0, 1.0, 1.0)


def make_space(label, num_classes=10):
    if label == "category":
        return CategorySpace(num_classes)
    rng = np.random.RandomState(0)
    return TargetSpace(label, rng.uniform(-80, 0, (num_classes, *LABEL_SHAPES[label])).astype(np.float32))


def paper_sgd(model):
    """The paper's optimiser as it ran under torch 1.x: SGD a parameter at a time (torch 2 defaults
    to the multi-tensor form on a GPU). lr does not change the speed."""
    return torch.optim.SGD(model.parameters(), lr=0.01, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY,
                           foreach=False)


def paper_training(arch, space, images, labels, batch_size, device, workers=4):
    """The paper's loop as a `Paper`: DataLoader workers, fp32, gradients zero-filled (torch 1.x's
    zero_grad), the running loss's `.item()` before the backward pass, as the paper's loop wrote it.
    Two differences make it faster than it was, so ratios to it understate ours: its 4 workers
    persist across epochs (the paper's restarted every epoch: 0.39 against 0.11 s per 1,024-image
    epoch on the 2-core CPU), and they pass class ids, not the class targets the paper's dataset
    returned (0.261 against 0.291 s per 2,048 speech images)."""
    model = build_model(arch, space.output_shape, seed=0).to(device)
    net = torch.nn.Sequential(model.trunk, model.head)  # the paper normalised in the transform
    opt, space = paper_sgd(net), space.to(device)
    dataset = PaperImages(to_float(images), labels, PAPER_MEAN, PAPER_STD, train=True)
    loader = PaperLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers,
                         persistent_workers=True, drop_last=True, generator=torch.Generator().manual_seed(0))

    def epoch():
        net.train()
        running = 0.0
        for batch, batch_labels in loader:
            batch, batch_labels = batch.to(device), batch_labels.to(device)
            loss = space.loss(net(batch), batch_labels).mean()
            running += loss.item()
            opt.zero_grad(set_to_none=False)
            loss.backward()
            opt.step()
    return Paper(epoch, len(loader) * batch_size, device)


def our_step(arch, space, device, amp=False, channels_last=False, compile=None):
    """train.py's TrainStep on a freshly initialised model (seed 0) in the given options."""
    model = build_model(arch, space.output_shape, seed=0).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if compile:
        torch._dynamo.reset()  # a fresh cache: earlier variants must not use up its recompile limit
    return TrainStep(model, space.to(device), 0.01, amp, channels_last, compile)


def our_training_timing(paper, arch, space, images, labels, batch_size, device, repeats,
                        cudnn_benchmark=False, **options):
    """`paper.compare` for train.py's loop: a `Timing`; with `cudnn_benchmark`, our epochs run
    under torch.backends.cudnn.benchmark (the paper pipeline's stay under torch's default, off)."""
    step = our_step(arch, space, device, **options)
    images, labels = images.to(device), labels.to(device)
    generator = torch.Generator(device).manual_seed(0)
    n = len(images) // batch_size * batch_size

    def epoch():
        was = torch.backends.cudnn.benchmark
        torch.backends.cudnn.benchmark = cudnn_benchmark
        try:
            train_epoch(step, images[:n], labels[:n], batch_size, generator)
        finally:
            torch.backends.cudnn.benchmark = was
    return paper.compare(epoch, n, repeats)


def attempt(name, measure):
    """`measure()`, or `FAILED` with the error on stderr: one failing variant must not cost the
    run. A `Timing` is also reported on stderr as it comes: a table prints when all its rows are
    measured, minutes later on a GPU that compiles, and a run stopped before then (a time limit)
    keeps the rows it measured in its log."""
    try:
        result = measure()
    except Exception as error:  # noqa: BLE001 - reported, and the row says it failed
        log(f"{name}: failed: {type(error).__name__}: {str(error).splitlines()[0]}")
        return FAILED
    if isinstance(result, Timing):
        log(f"{name}: {rate_cell(result.rate, 1)} images/s, {result.vs_paper(2)} the paper's")
    return result


def graph_note(mode, skips_before):
    """The suffix of a row's name: ' (N graphs without CUDA graphs)' where `mode` records CUDA
    graphs and torch ran N graphs without them since the count `skips_before` (`cudagraph_skips`),
    else '': such a row times plain kernel launches, not graph replays (TORCH_LOGS=cudagraphs
    gives torch's reasons)."""
    skipped = cudagraph_skips(mode, since=skips_before)
    return f" ({skipped} graphs without CUDA graphs)" if skipped else ""


def fast_options(device):
    """(name, options) of the precision and layout the compiled variants build on: bf16 +
    channels_last where `device` runs bf16 natively, channels_last in float32 elsewhere."""
    if fast_bf16(device):
        return "bf16 + channels_last", {"amp": True, "channels_last": True}
    return "channels_last", {"channels_last": True}


BF16_LEFT_OUT = ("bf16 rows left out: this device has no native bf16 (`utils.training.fast_bf16`), "
                 "where bf16 autocast is emulated and many times slower than float32")


def training_rows(arch, label, images, labels, device, repeats, batch_sizes, compile_modes,
                  compiled_only=False, cudnn_benchmark=False):
    """(name, batch size, `Timing`): the paper's pipeline first (the median of all its timings),
    then our variants (the compiled ones only with `compiled_only`; each compiled one also with
    cuDNN's algorithm search with `cudnn_benchmark`)."""
    space = make_space(label)
    paper = paper_training(arch, space, images, labels, 128, device)
    rows = []
    variants = [] if compiled_only else [("ours: on-device data + augmentation", {}),
                                         ("ours + channels_last", {"channels_last": True})]
    if fast_bf16(device) and not compiled_only:
        variants += [("ours + bf16 autocast", {"amp": True}),
                     ("ours + bf16 + channels_last", {"amp": True, "channels_last": True})]
    base, base_options = fast_options(device)
    for mode in compile_modes:
        variants.append((f"ours + {base} + compile {mode}", base_options | {"compile": mode}))
        if cudnn_benchmark:
            variants.append((f"ours + {base} + compile {mode} + cudnn.benchmark",
                             base_options | {"compile": mode, "cudnn_benchmark": True}))
    measured, ratios = {}, {}

    def timed_row(name, batch_size, options):
        skips = cudagraph_skips(options.get("compile"))
        timing = attempt(name, lambda: our_training_timing(
            paper, arch, space, images, labels, batch_size, device, repeats, **options))
        rows.append((name + graph_note(options.get("compile"), skips), batch_size, timing))
        return timing

    while variants:
        name, options = variants.pop(0)
        measured[name] = options
        ratios[name] = timed_row(name, 128, options).ratio
        if options.get("compile") and options["channels_last"] and np.isnan(ratios[name]):
            # torch 2.11's inductor mispredicts the strides of a channels-last transposed
            # convolution's backward on CUDA (pytorch#171622): the decoder heads compile only
            # in the contiguous layout there.
            variants.insert(0, (name.replace(" + channels_last", ""), options | {"channels_last": False}))
    best = max(measured, key=lambda name: -1 if np.isnan(ratios[name]) else ratios[name])
    for batch_size in batch_sizes:
        timed_row(f"{best}, batch {batch_size}", batch_size, measured[best])
    return [("paper: PIL + DataLoader(4 workers), fp32", 128, paper.timing())] + rows


def host_work(profile):
    """What a profiled training step ran from the host outside compiled graphs:
    {"operators": Counter of top-level operator events (aten ops and autograd nodes, not the ops
    they call in turn), "graphs": calls of compiled graphs}. On a GPU most operators are a kernel
    launch the GPU may wait for; a graph is one launch (a replay under CUDA graphs)."""
    operators, graphs = collections.Counter(), 0

    def visit(event, inside_operator):
        nonlocal graphs
        if event.name.startswith("## Call CompiledFxGraph"):
            graphs += 1
            return
        operator = event.name.startswith(("aten::", "autograd::engine::evaluate_function"))
        if operator and not inside_operator:
            operators[event.name] += 1
        for child in event.cpu_children:  # an autograd node can call a compiled backward graph
            visit(child, inside_operator or operator)

    for event in profile.events():
        if event.cpu_parent is None:
            visit(event, False)
    return {"operators": operators, "graphs": graphs}


HOST_STEPS = (3, 50)  # steps timed by --what host on a CPU, on a GPU


def host_rows(arch, label, images, labels, device, compile_modes, batch_size=128):
    """(variant, host_work of one profiled step after two warm-up steps, with "host_ms" and
    "step_ms" added: the milliseconds a step took to return and to finish on the device, over
    `HOST_STEPS` steps run back to back) for our eager step in fp32 and in the fast options
    (`fast_options`), and the compiled step in each mode. Where the two times are alike the device
    waits on the host; on a CPU they are the same."""
    space = make_space(label)
    images, labels = images[:batch_size].to(device), labels[:batch_size].to(device)
    base, base_options = fast_options(device)
    variants = [("ours, fp32", {}), (f"ours, {base}", base_options)]
    variants += [(f"ours, {base} + compile {mode}", base_options | {"compile": mode})
                 for mode in compile_modes]
    rows = []
    for name, options in variants:
        skips = cudagraph_skips(options.get("compile"))

        def profiled():
            step = our_step(arch, space, device, **options)
            generator = torch.Generator(device).manual_seed(0)

            def one_step():
                offsets, flips = draw_augmentation(batch_size, generator, device)
                step(images, offsets, flips, labels, 1 / batch_size)
            for _ in range(2):  # warm-up: compilation, autotuning, CUDA graph recording
                one_step(), synchronize(device)
            with torch.profiler.profile() as profile:
                one_step(), synchronize(device)
            steps = HOST_STEPS[device.type == "cuda"]
            start = time.perf_counter()
            for _ in range(steps):
                one_step()
            returned = time.perf_counter()
            synchronize(device)
            finished = time.perf_counter()
            return host_work(profile) | {"host_ms": (returned - start) / steps * 1e3,
                                         "step_ms": (finished - start) / steps * 1e3}
        work = attempt(name, profiled)
        rows.append((name + graph_note(options.get("compile"), skips), None if work is FAILED else work))
    return rows


def host_section(arch, label, rows, device):
    steps = HOST_STEPS[device.type == "cuda"]
    section = [f"\n**Host work per training step, {arch}, {label} labels, batch 128** (torch.profiler: "
               "operators run from the host outside compiled graphs, and graph calls; the mean time "
               f"a step took to return to the host and to finish on the device, over {steps} steps "
               "back to back)\n",
               "| step | operators | of them autograd nodes | of them gradient accumulations | graph calls "
               "| host ms a step | ms a step |",
               "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, work in rows:
        if work is None:
            section.append(f"| {name} | failed | - | - | - | - | - |")
            continue
        ops = work["operators"]
        autograd = sum(n for op, n in ops.items() if op.startswith("autograd::"))
        accumulate = sum(n for op, n in ops.items() if "AccumulateGrad" in op)
        section.append(f"| {name} | {sum(ops.values())} | {autograd} | {accumulate} | {work['graphs']} "
                       f"| {work['host_ms']:.2f} | {work['step_ms']:.2f} |")
    compiled = [work for name, work in rows if "compile" in name and work is not None]
    if compiled:
        ops = compiled[-1]["operators"]
        section.append("\nOutside the graphs of the compiled step: "
                       + ", ".join(f"{op} x{n}" if n > 1 else op for op, n in sorted(ops.items())) + ".")
    return section


EPSILONS = (1 / 255, 2 / 255, 4 / 255, 8 / 255)  # attack.py's default sweep (after eps 0)


def attack_rows(model, space, images, labels, device, repeats, paper_images, batch_size=500):
    """(name, `Timing`, the paper row it compares with) for the paper's one-image loops (the
    median of all their timings) and our batched attacks at eps 8/255 on the same model and
    images, and for an FGSM sweep over 1/255 ... 8/255 (images/s counts image x eps evaluations:
    the paper's loop runs once per eps, ours shares the clean forward pass and the gradient at the
    clean images across the sweep, as attack.py does). Both skip the images the model gets wrong,
    so a trained model (about half the images attacked) is the realistic case; a random one
    attacks about a tenth. The paper's loops run on `paper_images` of ours chosen with our share
    of correctly classified ones (`paper_subset`). Returns the rows and the two shares (ours, the
    paper loops')."""
    from utils.attacks import Shared, run_attack
    x, y = to_float(images).to(device), labels.to(device)
    eps = 8 / 255
    with torch.no_grad():
        correct = space.decode(model(x)) == y
    chosen = paper_subset(correct, paper_images)
    paper = paper_loops(model, space, x[chosen], y[chosen], eps, device)
    rows = []

    # Folding batch norms is done once per attack.py run, not per image: out of the timings.
    folded = Shared()
    for channels_last in (False, True):
        folded.network(model, channels_last)

    def compare(row, key, run, count):
        """The row `row`: our `run()` of `count` images timed against the paper's loop `key`."""
        rows.append((row, attempt(row, lambda: paper[key][1].compare(run, count, repeats)), key))

    def sweep(**options):
        shared = Shared(folded.networks)
        for e in EPSILONS:
            run_attack(model, space, x, y, "fgsm", e, batch_size=batch_size, shared=shared, **options)

    for suffix, options in attack_variants(device):
        for name, attack, steps, key in BATCHED_ATTACKS:
            compare(f"ours: {name}, batched{suffix}", key, lambda: run_attack(
                model, space, x, y, attack=attack, eps=eps, steps=steps, batch_size=batch_size,
                shared=Shared(folded.networks), **options), len(x))
        compare(f"ours: FGSM at 1, 2, 4, 8/255, one run{suffix}", "sweep", lambda: sweep(**options),
                len(x) * len(EPSILONS))
    papers = [(name, loop.timing(), name) for name, loop in paper.values()]
    shares = correct.float().mean().item(), correct[chosen].float().mean().item()
    return papers + [(name, timing, paper[key][0]) for name, timing, key in rows], shares


# our batched attacks at eps 8/255: (row name, attack.py's --attack, --steps, the paper loop's key)
BATCHED_ATTACKS = (("FGSM", "fgsm", 1, "FGSM"),
                   ("iterative (5 steps)", "iterative", 5, "iterative-5"),
                   ("PGD-10", "pgd", 10, "iterative-10"))


def paper_loops(model, space, images, labels, eps, device):
    """{key: (row name, `Paper`)} of the paper's one-image loops on `images` (float in [0, 1], on
    `device`): FGSM and the iterative method (5 and 10 steps) at `eps`, and FGSM at each of
    `EPSILONS`, its loop once per eps. Each loop runs once as its `Paper` is made (a warm-up)."""
    loader = paper_loader(images, labels, model.model_args["mean"], model.model_args["std"])
    loops = {
        "FGSM": ("paper: FGSM, one image at a time",
                 lambda: paper_fgsm(model, space, images, labels, eps, loader=loader), 1),
        "iterative-5": ("paper: iterative (5 steps), one image at a time",
                        lambda: paper_iterative(model, space, images, labels, eps, steps=5,
                                                loader=loader), 1),
        "iterative-10": ("paper: iterative (10 steps), one image at a time",
                         lambda: paper_iterative(model, space, images, labels, eps, steps=10,
                                                 loader=loader), 1),
        "sweep": ("paper: FGSM at 1, 2, 4, 8/255, its loop once per eps",
                  lambda: [paper_fgsm(model, space, images, labels, e, loader=loader) for e in EPSILONS],
                  len(EPSILONS)),
    }
    return {key: (name, Paper(run, len(images) * count, device)) for key, (name, run, count) in loops.items()}


def attack_variants(device):
    """(row suffix, run_attack options) of each precision and layout our attacks are timed in: bf16
    ones only where `device` runs bf16 natively."""
    variants = (("", {}), (", channels_last", {"channels_last": True}))
    if fast_bf16(device):
        variants += ((", bf16 autocast (--amp)", {"amp": True}),
                     (", bf16 + channels_last", {"amp": True, "channels_last": True}))
    return variants


def paper_subset(correct, n):
    """Indices, in order, of n of our images (`correct`: (N,) bool, the model's clean decodes right)
    whose share of correct ones is as near ours as n images allow: the first of each kind. An
    image the model gets wrong costs the paper's loop one forward pass, an attacked one a backward
    and a forward pass per step, so its images/s depends on that share: on our first 50 random
    images, 4% against 9% of all 500 (a random speech resnet32), its 10-step loop ran at 62.0
    images/s, on 50 chosen for that share (10%) at 39.5."""
    n = min(n, len(correct))
    right = round(n * correct.float().mean().item())
    kinds = correct.nonzero().squeeze(1)[:right], (~correct).nonzero().squeeze(1)[:n - right]
    return torch.cat(kinds).sort().values


def checkpoint_section(args, device, epochs=600):
    """The size and the time to write (synced) train.py's last checkpoint of each model and label
    `epochs` epochs into a run: weights, SGD momentum, the history's rows, from `device`."""
    folder = Path(tempfile.gettempdir())
    section = [f"\n**Last checkpoint after {epochs} epochs** (written to {folder} and synced, as "
               f"train.py writes it; median of {counted(args.repeats, 'write')})\n",
               f"| model, labels | MB | write, wall ms | write, CPU ms | written after each of {epochs} "
               "epochs: s |", "| --- | ---: | ---: | ---: | ---: |"]
    row = {"epoch": 1, "lr": 0.1, "train_loss": 1.0, "train_acc": 0.5, "valid_loss": 1.0,
           "valid_acc": 0.5, "seconds": 1.0, "images_per_s": 1e4}
    for arch in args.models:
        for label in args.labels:
            space = make_space(label).to(device)
            model = build_model(arch, space.output_shape).to(device)
            optimizer = make_optimizer(model, 0.1)
            labels = torch.arange(8, device=device) % 10
            space.loss(model(torch.rand(8, 3, 32, 32, device=device)), labels).sum().backward()
            optimizer.step()  # its momentum buffers, as a run's
            history = [row | {"epoch": i + 1} for i in range(epochs)]
            walls, cpus = [], []
            with tempfile.TemporaryDirectory(dir=folder) as where:
                for _ in range(args.repeats):
                    wall, cpu = time.perf_counter(), time.process_time()
                    save_checkpoint(Path(where) / "last_checkpoint.pth", checkpoint_state(
                        model.state_dict(), model.model_args, space.state(), epochs, {"flags": {}},
                        optimizer=optimizer.state_dict(), history=history,
                        best={"valid_acc": 0.5, "epoch": 1}))
                    walls.append(time.perf_counter() - wall)
                    cpus.append(time.process_time() - cpu)
                size = os.path.getsize(Path(where) / "last_checkpoint.pth")
            wall, cpu = statistics.median(walls), statistics.median(cpus)
            section.append(f"| {arch}, {label} | {size / 1e6:.1f} | {wall * 1e3:.0f} | {cpu * 1e3:.0f} | "
                           f"{wall * epochs:.0f} |")
    section.append("\n(train.py writes it at most every --checkpoint_seconds, 60 by default, and "
                   f"after the last epoch, after any epoch of over {FINISH_SECONDS} s and at a stop "
                   "signal; one that precedes a write of the best checkpoint holds the best epoch's "
                   "weights too, and the best checkpoint is the weights' size again.)")
    return section


def device_name(device):
    if device.type == "cuda":
        return torch.cuda.get_device_name()
    return f"{cpu_model()}, {counted(torch.get_num_threads(), 'thread')}"


def cpu_model():
    """The CPU's model name (/proc/cpuinfo on Linux), else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()} CPU"


def versions(device):
    """torch, torchvision, CUDA and cuDNN (on a GPU) and Python versions, for the record."""
    import torchvision
    parts = [f"torch {torch.__version__}", f"torchvision {torchvision.__version__}"]
    if device.type == "cuda":
        parts += [f"CUDA {torch.version.cuda}", f"cuDNN {torch.backends.cudnn.version()}"]
    return ", ".join(parts + [f"Python {platform.python_version()}"])


PRECISIONS = {"fp32": [], "bf16 + channels_last": ["--amp", "--channels_last"]}


def check_accuracy_runs(args):
    """What every train.py run of --what accuracy would refuse, refused before the first: no data
    in --data_dir, a label without its file, a --valid_size that leaves no training images (each
    was a table of 'failed' rows, appended to the record)."""
    from cifar import load_cifar, split_indices
    flags = args.train_args  # train.py's defaults, and what --train_flags sets: as its runs load them
    data = load_cifar(flags.dataset, args.data_dir, flags.label_granularity)
    for label in args.labels:
        run_label_space(argparse.Namespace(**vars(flags) | {"label": label}), data.num_classes)
    split_indices(len(data.train_labels), args.seeds[0], args.valid_size, flags.level,
                  num_classes=data.num_classes)


def accuracy_rows(args, device):
    """Train with train.py in fp32 and in bf16 + channels_last (plus --compile MODE when given) on
    --data_dir, --epochs epochs, each --seeds seed; (model, label, seed, precision, results)."""
    import tempfile

    import train
    rows = []
    with tempfile.TemporaryDirectory() as base_dir:
        for arch in args.models:
            for label in args.labels:
                for seed in args.seeds:
                    for precision, flags in PRECISIONS.items():
                        compile_flags = ["--compile", args.compile_modes[0]] if (
                            args.compile_modes and flags) else []
                        argv = ["--model", arch, "--label", label, "--seed", str(seed),
                                "--data_dir", args.data_dir, "--epochs", str(args.epochs),
                                "--valid_size", str(args.valid_size), "--device", device.type,
                                "--base_dir", str(Path(base_dir) / ("amp" if flags else "fp32")),
                                *flags, *compile_flags, *args.train_argv]
                        name = f"{arch} {label} seed {seed} {precision}"
                        # its JSON line is not a table; at Ctrl-C (SIGTERM too) train.py's words named
                        # the run's folder, removed with base_dir, and said to --resume it
                        with contextlib.redirect_stdout(sys.stderr), interrupt_says(
                                lambda: f"{name}: stopped; --what accuracy trains its runs in a temporary "
                                "folder, removed with them: nothing to resume"):
                            results = attempt(name, lambda: train.main(argv))
                        results = None if results is FAILED else results
                        rows.append((arch, label, seed, " + compile ".join([precision] + compile_flags[1:]),
                                     results))
    return rows


def accuracy_lines(args, rows):
    """The table of `accuracy_rows`; a run that failed (results None) is a row that says so."""
    extra = f", {args.train_flags}" if args.train_flags else ""
    done = [r for *_, r in rows if r is not None]
    sizes = (f"{done[0]['train_images']} training images, {done[0]['test_images']} test images, "
             if done else "")
    lines = [f"\n**fp32 against bf16: train.py for {counted(args.epochs, 'epoch')} on {args.data_dir}** "
             f"({sizes}--valid_size {args.valid_size}{extra})\n",
             "| model | label | seed | precision | test acc | best valid acc | images/s | train s |",
             "| --- | --- | ---: | --- | ---: | ---: | ---: | ---: |"]
    lines += [f"| {arch} | {label} | {seed} | {precision} | failed | - | - | - |" if r is None else
              f"| {arch} | {label} | {seed} | {precision} | {r['test_acc']:.2%} | "
              f"{'-' if r['valid_acc'] is None else format(r['valid_acc'], '.2%')} "
              f"| {r['images_per_s']:,.0f} | {r['train_seconds']:.0f} |"
              for arch, label, seed, precision, r in rows]
    diffs = [100 * (b["test_acc"] - a["test_acc"]) for (*_, a), (*_, b) in zip(rows[::2], rows[1::2])
             if a is not None and b is not None]
    if diffs:
        lines.append(f"\nbf16 minus fp32 test accuracy, per pair: {', '.join(f'{d:+.2f}' for d in diffs)} "
                     f"points (mean {statistics.mean(diffs):+.2f}).")
    return lines


def attack_inputs(args, device):
    """(test images, test labels) in --data_dir, or None, and the (model, label space) of
    --checkpoint, as attack.py rebuilds them, or None: loaded before the header and any timing, so
    that a folder or checkpoint that does not load is one error, and costs no training tables of
    --what all. The images are of the checkpoint's dataset (its run's --dataset and
    --label_granularity; CIFAR-10 without a checkpoint, or for one that records none)."""
    from cifar import load_cifar
    data, trained = None, None
    dataset, granularity = SHARED["dataset"]["default"], SHARED["label_granularity"]["default"]
    if args.checkpoint:
        from attack import check_classes, model_from_checkpoint, recorded_flags
        model, space, checkpoint = model_from_checkpoint(args.checkpoint)
        flags = recorded_flags(checkpoint)
        dataset, granularity = flags.get("dataset", dataset), flags.get("label_granularity", granularity)
        trained = model.to(device), space.to(device)
    if args.data_dir:
        loaded = load_cifar(dataset, args.data_dir, granularity)
        if trained:
            check_classes(args.checkpoint, trained[1], loaded, dataset, granularity)
        data = loaded.test_images, loaded.test_labels
    return data, trained


def speed_sections(args, device, data=None, trained=None):
    """The tables of --what train/attack/all (training, attacks) and host (host-side operators), one
    section (a list of markdown lines) at a time; the attacks on `data` and `trained`
    (`attack_inputs`) where not None."""
    images, labels = random_images(max(args.train_images, args.attack_images))
    attack_data = data if data is not None else (images, labels)
    attacks = args.what in ("attack", "all")
    attacked_once = False
    for arch in args.models:
        for label in args.labels:
            if args.what == "host":
                yield host_section(arch, label, host_rows(arch, label, images, labels, device,
                                                          args.compile_modes), device)
            if args.what in ("train", "all"):
                yield training_section(args, arch, label, images, labels, device)
            if attacks and not (args.checkpoint and attacked_once):
                attacked_once = True
                yield attack_section(args, arch, label, attack_data, device, trained)


def random_images(count):
    """`count` seeded random images, (count, 3, 32, 32) uint8, and labels, (count,) in [0, 10)."""
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (count, 3, 32, 32), dtype=torch.uint8, generator=generator)
    return images, torch.randint(0, 10, (len(images),), generator=generator)


def training_section(args, arch, label, images, labels, device):
    """The training table of `arch` and `label`, timed on the first --train_images `images`."""
    n_train = args.train_images
    rows = training_rows(arch, label, images[:n_train], labels[:n_train], device,
                         args.repeats, args.batch_sizes, args.compile_modes,
                         args.compiled_only, args.cudnn_benchmark)
    # an epoch trains on whole batches: the images its rate counts, per batch size
    timed_images = {bs: n_train // bs * bs for bs in (128, *args.batch_sizes)}
    per_epoch = (f"{timed_images[128]} images per timed epoch" if len(set(timed_images.values())) == 1
                 else "images per timed epoch: " + ", ".join(f"{n} at batch {bs}"
                                                             for bs, n in timed_images.items()))
    section = [f"\n**Training, {arch}, {label} labels** ({per_epoch}; each of our timings "
               "paired with one of the paper's, taken just before it)\n",
               "| pipeline | batch | images/s | the paper's in the paired timings | "
               "vs paper: the median pair (range) |",
               "| --- | ---: | ---: | ---: | ---: |"]
    section += [f"| {name} | {bs} | {rate_cell(t.rate, 0)} | {rate_cell(t.paper, 0)} | {t.vs_paper(2)} |"
                for name, bs, t in rows]
    if not fast_bf16(device):
        section.append(f"\n({BF16_LEFT_OUT}.)")
    if device.type == "cuda":
        section.append(projected_run(rows))
    return section


def projected_run(rows):
    """The training table's closing line: the minutes of a 600-epoch CIFAR-10 run at the rates of
    `rows` (`training_rows`; the paper's first)."""
    paper = rows[0][2].rate
    measured = [(name, bs, t.rate) for name, bs, t in rows if not np.isnan(t.rate)]
    best_at_128 = max((r for r in measured if r[1] == 128), key=lambda r: r[2])
    best = max(measured, key=lambda r: r[2])
    return ("\nProjected 600-epoch CIFAR-10 run (45,000 images/epoch), training "
            f"only: {600 * 45000 / best_at_128[2] / 60:.1f} minutes at batch 128 "
            f"({best_at_128[0]}), {600 * 45000 / best[2] / 60:.1f} minutes with "
            f"the fastest row; the paper's pipeline: "
            f"{600 * 45000 / paper / 60:.1f} minutes.")


def attack_section(args, arch, label, data, device, trained):
    """The attack table of `trained` (model, space) on `data` (images, labels), else of a random
    initialisation of `arch` for `label` on them."""
    images, labels = data
    n_paper = args.paper_attack_images if args.paper_attack_images is not None else (
        200 if device.type == "cuda" else 50)
    model, space, what = attacked_model(args, arch, label, device, trained)
    rows, (attacked, paper_attacked) = attack_rows(
        model, space, images[:args.attack_images], labels[:args.attack_images],
        device, args.repeats, n_paper, args.attack_batch_size)
    n_attack = min(args.attack_images, len(images))
    n_loop = min(n_paper, n_attack)  # the paper's loops run on some of our images
    source = f"the first test images of {args.data_dir}" if args.data_dir else "random images"
    section = [f"\n**Attacks, {what}, eps 8/255** (paper loop on {counted(n_loop, 'image')}, ours on "
               f"{n_attack} at batch {args.attack_batch_size}; {source}, {attacked:.0%} of them "
               f"correctly classified and so attacked, {paper_attacked:.0%} of the paper "
               "loop's, chosen among them for that share)\n",
               "| attack | images/s | the paper's in the paired timings | vs paper: the "
               "median pair (range) | compared with |",
               "| --- | ---: | ---: | ---: | --- |"]
    section += [f"| {name} | {rate_cell(t.rate, 1)} | {rate_cell(t.paper, 1)} | {t.vs_paper(1)} | "
                f"{'' if name == ref_name else ref_name} |" for name, t, ref_name in rows]
    section.append("\n(PGD-10, which the paper did not run, is compared with the paper's "
                   "loop run for 10 steps; the sweep rows count image x eps evaluations"
                   + ("" if fast_bf16(device) else f"; {BF16_LEFT_OUT}") + ".)")
    return section


def attacked_model(args, arch, label, device, trained):
    """(model, space, the table's words for them): `trained`'s (the --checkpoint's), else a
    seeded random initialisation of `arch` for `label`."""
    if trained:
        model, space = trained
        return model, space, f"{model.model_args['arch']}, {space.name} labels, trained ({args.checkpoint})"
    space = make_space(label).to(device)
    model = build_model(arch, space.output_shape, seed=0).to(device).eval()
    return model, space, f"{arch}, {label} labels, random initialisation"


def main(argv=None, args=None):
    """Run the benchmark of `argv`'s flags, or of `args`, their `parse_args` (the command line's
    are read before torch loads). `args` is read as the command line reads it (`as_parsed`) and
    checked as `parse_args` checks it: a notebook's edited value (batch_sizes [0], an unknown model,
    --train_flags naming --model) is the command line's one-line error before any timing, not a
    traceback after minutes of it, and an edited --train_flags is the one the rows train with, where
    they took the first parse's and the table named the new one."""
    if args is None:
        args = parse_args(argv)
    else:
        parser = build_parser()
        args = checked(parser, as_parsed(parser, args, derived=DERIVED))
    if args.what == "accuracy":  # missing data is one error, not a failed row per run
        check_accuracy_runs(args)
    device = resolve_device(args.device)
    # a caller's (a notebook's) random state and warning filters come back after: each model is
    # seeded 0 and the warning silenced for the benchmark alone (the next cell drew seed 0's numbers)
    with warnings.catch_warnings(), torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        # The paper's 4 DataLoader workers are re-created as they were, even on a 2-core machine.
        warnings.filterwarnings("ignore", message="This DataLoader will create")
        benchmark(args, argv, device)


def benchmark(args, argv, device):
    """`main`'s work on `device`: measure, print each table, append the entry to --record and say
    so on stderr (stdout holds the tables alone)."""
    keep_freed_memory(device)  # for the paper's pipeline too: its ratio to ours is not flattered
    if args.cudnn_benchmark and device.type != "cuda":
        build_parser().error("--cudnn_benchmark times cuDNN, which only a CUDA device runs")
    if args.train_images is None:
        args.train_images = 20480 if device.type == "cuda" else 1024
        check_train_images(build_parser(), args)
    record = None if args.no_record else Path(args.record)
    if args.repeats is None:
        args.repeats = 3 if device.type == "cuda" else 7
    if args.compile_modes is None:
        cpu_modes = [] if args.what == "accuracy" else ["default"]
        args.compile_modes = ["default", "reduce-overhead"] if device.type == "cuda" else cpu_modes
    # what attacks load, before the header: a --data_dir or --checkpoint that does not load is one error
    loaded = attack_inputs(args, device) if args.what in ("attack", "all") else (None, None)
    header = (f"\n## {datetime.date.today().isoformat()}: {device_name(device)}\n\n"
              f"{versions(device)}, `python bench/bench.py {shlex.join(argv if argv is not None else sys.argv[1:])}`\n")
    print(header, end="", flush=True)  # stdout: the entry appended to --record, as it is measured
    lines = []
    if args.what == "accuracy":
        sections = [accuracy_lines(args, accuracy_rows(args, device))]
    elif args.what == "checkpoint":
        sections = [checkpoint_section(args, device)]
    else:
        sections = speed_sections(args, device, *loaded)
    for section in sections:  # each table as soon as it is measured: a long run shows its progress
        print("\n".join(section), flush=True)
        lines.extend(section)
    text = header + "\n".join(lines) + "\n"
    if record is not None:
        append_record(record, text)
        log(f"appended the tables to {record}")  # where the result went, as the other scripts say


def append_record(record, text):
    """`text` added to the end of the --record file (begun with its heading where absent or empty)
    in place (`append_whole`): a table that a full disk cut short is cut off again, the error
    names the record, and a new record is not left empty. Not rewritten whole: a record that is
    a link (to one kept elsewhere) was replaced by a file of its own, and one in a folder that
    takes no new file (writable itself, as parse_args found it) failed after all the timings."""
    made = not record.exists()
    heading = "" if not made and record.stat().st_size else (
        "# Benchmarks\n\nOutput of `bench/bench.py`, newest last. Training rows time synthetic images "
        "(throughput does not depend on content); attack rows a --checkpoint on --data_dir's test images "
        "when given.\n")
    try:
        append_whole(record, utf8(heading + text))
    except OSError:
        if made:
            record.unlink(missing_ok=True)
        raise


if __name__ == "__main__":
    # its checkpoints and --what accuracy's runs are written in TMPDIR (a checkpoint of resnet110
    # with speech labels: 19 MB): a `timeout` or `kill` left them there
    sigterm_as_interrupt()
    run_cli(functools.partial(main, args=parsed[0]))
