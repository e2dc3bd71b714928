"""Train one network on CIFAR-10/100 against one label representation.

    python train.py --model resnet32 --dataset cifar10 --label speech --seed 7
    python train.py --model vgg19 --dataset cifar100 --label category --level 8 --epochs 600
    python train.py ... --resume          # continue a killed run from its last checkpoint

Writes {base_dir}/{dataset}/seed{seed}/{model}/model_{label}/ (utils.runs.run_directory: under
less/{dataset}/level{L}/ when --level < 100, model_category_smooth{S} with --smoothing S,
model_{label}_noise{R} with --label_noise R, dataset cifar100_coarse with --label_granularity
coarse): config.json, metrics.jsonl, the best and last checkpoints, confusion.json (the best
checkpoint's test and validation confusion matrices) and results.json.
Progress goes to stderr; the last line on stdout is the results as one JSON object. Exit status:
0 done, 2 after one `error:` line (bad input), 75 stopped by SIGTERM, SIGUSR1 or a hangup (rerun
with --resume), 130 Ctrl-C.
"""
import os

if __name__ == "__main__":  # first, before torch loads: a preemption signal then is a requeue too
    from utils import errors, preempt
    preempt.install()
    errors.quiet_interrupts()

from utils.constants import lr_milestones  # noqa: E402
from utils.errors import (CliParser, DefaultsFormatter, UsageError, doc_paragraphs, log, number,  # noqa: E402
                          os_errors_as_usage, other_rank, run_cli)
from utils.flags import LABEL_ONLY, add_flags, ignored_lines, label_name  # noqa: E402

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


# What the line for torch running out of memory advises (`run_cli`): the training step's memory
# grows with the batch, MCR2's loss and subspaces with the features' dimension too (feature_dim^2
# per class); memory spent in scoring the best epoch, after the last checkpoint, needs a machine
# with more, where --resume goes on from that checkpoint
MEMORY = "lower --batch_size (or --feature_dim with --label mcr2), or --resume on a machine with more memory"

# Defaults that depend on --label (None: every label but those named), set after parsing
LABEL_DEFAULTS = {None: {"batch_size": 128, "lr": 0.1}, "mcr2": {"batch_size": 1000, "lr": 0.01}}


def build_parser():
    about = doc_paragraphs(__doc__)
    parser = CliParser(prog="train.py", description=about[0].split("\n")[0],
                       epilog=about[-1],  # what it writes, and where its lines go
                       formatter_class=DefaultsFormatter)
    data = parser.add_argument_group("data")
    add_flags(data, "dataset", "data_dir", "label_granularity", "seed", "valid_size", "level", data_dir={
        "help": "folder holding (or receiving) cifar-10-batches-py / cifar-100-python"}, seed={
        "help": "seeds the split, the initialisation, the augmentation and --label_noise"})
    label = parser.add_argument_group("labels")
    label.add_argument("--label", type=label_name, default="category", help="'category', 'mcr2' "
                       "(features trained by rate reduction: see the MCR2 flags), or NAME for "
                       "the targets in {label_dir}/{dataset}_NAME.npy (speech, shuffle, uniform, "
                       "composite, random, lowdim, bert, glove, ...)")
    add_flags(label, "label_dir")
    add_flags(label, "smoothing", "label_noise")
    add_flags(parser.add_argument_group("model"), "model")
    mcr2 = parser.add_argument_group("MCR2 (--label mcr2)")
    mcr2.add_argument("--feature_dim", type=number(int, 1, maximum=8192), default=128,
                      help="dimension of the features, 2 to 8192 (their covariances are D x D; "
                      "--n_components lies below it)")
    mcr2.add_argument("--mcr2_eps", type=number(float), default=0.5, help="eps^2 of the coding rate")
    mcr2.add_argument("--gam1", type=number(float), default=1.0, help="weight inside R(Z)")
    mcr2.add_argument("--gam2", type=number(float), default=1.0, help="weight of R(Z) in the loss")
    mcr2.add_argument("--n_components", type=number(int), default=30,
                      help="principal directions per class for nearest-subspace decoding (below "
                      "--feature_dim)")
    opt = parser.add_argument_group("optimisation")
    opt.add_argument("--epochs", type=number(int), default=600,
                     help="epochs (the lr drops 10x at 50%% and 75%%)")
    opt.add_argument("--batch_size", type=number(int, 2, inclusive=True), default=None,
                     help=f"images per SGD step (default: {LABEL_DEFAULTS[None]['batch_size']}; "
                     f"{LABEL_DEFAULTS['mcr2']['batch_size']} for --label mcr2, as its paper)")
    opt.add_argument("--lr", type=number(float), default=None,
                     help=f"initial learning rate (default: {LABEL_DEFAULTS[None]['lr']:g}; "
                     f"{LABEL_DEFAULTS['mcr2']['lr']:g} for --label mcr2); for a larger batch scale "
                     "it with the batch (0.4 at 512) and add --warmup_epochs")
    opt.add_argument("--warmup_epochs", type=number(float, 0, inclusive=True), default=0,
                     help="epochs over which the lr rises linearly, step by step, to --lr before "
                     "the paper's schedule (0: none, as the paper)")
    run = parser.add_argument_group("execution and output")
    add_flags(run, "device", "amp")
    run.add_argument("--compile", nargs="?", const="default", default=None, metavar="MODE",
                     choices=COMPILE_MODES, help="torch.compile the training step and the model; "
                     "MODE, one of " + ", ".join(COMPILE_MODES) + " ('default' where none is given): "
                     "'reduce-overhead' adds CUDA graphs on a GPU, 'max-autotune' also autotunes "
                     "kernels (minutes of compilation), 'max-autotune-no-cudagraphs' without CUDA "
                     "graphs; without the flag, no compilation")
    add_flags(run, "channels_last", "base_dir")
    from utils.preempt import FINISH_SECONDS
    run.add_argument("--checkpoint_seconds", type=number(float, 0, inclusive=True), default=60,
                     metavar="S", help="write the last checkpoint (what --resume continues from) "
                     "at most every S seconds, and after the last epoch, after any epoch of over "
                     f"{FINISH_SECONDS} s and at a stop signal "
                     "(SIGTERM, SIGUSR1, SIGHUP: the epoch under way ends first, unless the checkpoint is "
                     f"of its start or the last epoch took over {FINISH_SECONDS} s; under torchrun it "
                     "always ends); 0: after every epoch")
    run.add_argument("--resume", action="store_true", help="continue an unfinished run from its last "
                     "checkpoint (a run with none starts at epoch 1); without it an unfinished run is "
                     "refused; not with --force")
    run.add_argument("--force", action="store_true", help="start the run over at epoch 1, finished "
                     "or not: deletes its checkpoints, results and attack results; not with --resume")
    return parser


def label_defaults(args):
    """`args` with --batch_size and --lr, where unset, the defaults of its --label (LABEL_DEFAULTS),
    as the run trains with them and config.json records them (sweep.py compares a run with these)."""
    for flag, value in LABEL_DEFAULTS.get(args.label, LABEL_DEFAULTS[None]).items():
        if getattr(args, flag) is None:
            setattr(args, flag, value)
    return args


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    main_process = not other_rank()  # under torchrun, lines from rank 0 alone
    for line in ignored_lines([k for k in LABEL_ONLY if getattr(args, k) != parser.get_default(k)], LABEL_ONLY,
                              [args.label]):
        if main_process:
            log(line)
    label_defaults(args)
    first_drop = lr_milestones(args.epochs)[0]  # the schedule's first lr / 10
    if args.warmup_epochs > first_drop and main_process:
        phase = (f"--epochs {args.epochs} divides the lr by 10 after epoch {first_drop}" if first_drop < args.epochs
                 else f"--epochs {args.epochs} ends the run first")  # one epoch: no drop
        log(f"warning: --warmup_epochs {args.warmup_epochs:g} outlasts the first of the schedule's lr phases "
            f"({phase}): the lr never reaches --lr {args.lr:g}")
    from utils import distributed
    from utils.atomic import print_json
    from utils.runs import command_line
    from utils.training import run_training
    try:
        with os_errors_as_usage({"--base_dir": args.base_dir}):
            results = run_training(args, command_line(parser.prog, argv))
        distributed.finish()  # under torchrun: every process done, then the group closed
    except RuntimeError as err:
        if not distributed.lost_peer(err):
            raise
        raise UsageError(f"process {os.environ.get('RANK')} of this torchrun stopped: another process "
                         "ended first (its error is above, or torchrun's report below says how it "
                         "ended)") from None
    except KeyboardInterrupt as err:  # in the epoch loop it says what is kept
        raise KeyboardInterrupt(str(err) or "rerun with --resume to continue from the last "
                                "checkpoint") from None
    finally:  # on every way out: an error, a stop for a signal
        distributed.leave()
    if main_process:
        print_json(results)
    return results


if __name__ == "__main__":
    run_cli(main, memory=MEMORY)
