"""Attack a trained model: robust accuracy under FGSM, the iterative method and PGD, in batches.

    python attack.py --model resnet32 --dataset cifar10 --label speech --seed 7
    python attack.py --label category --seed 7 --attacks pgd --epsilons 8/255 --restarts 5
    python attack.py --label speech --seed 7 --paper_protocol       # the paper's eps and clamps
    python attack.py --checkpoint path/to/speech_seed7_resnet32_best_model.pth --num_images 1000
    python attack.py --label speech --seed 7 --transfer_from path/to/category_seed7_resnet32_best_model.pth

Finds the best checkpoint train.py saved under {base_dir}/{dataset}/seed{seed}/{model}/model_{label}/
(same flags as train.py: --level, --smoothing, --label_noise, --label_granularity), or takes
--checkpoint, and evaluates every attack x targeted x eps on the test split. Writes
attack_results.json (every setting, every number, images/s) into the run directory (the
checkpoint's folder) after each finished setting, so a rerun, or a run requeued after SIGTERM,
reuses finished settings, and attack_examples.png once, at the end. With --transfer_from, a
transfer (black-box) attack: each setting's images are crafted against another run's model and
classified by this one, in entries of their own ("pgd<category"), without a figure. Progress goes
to stderr; the last line on stdout is one JSON object. Exit status: 0 done, 2 after one `error:`
line (bad input), 75 stopped by SIGTERM, SIGUSR1 or a hangup (rerun it), 130 Ctrl-C.
"""
import argparse
import glob
import os
import re
import textwrap
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

if __name__ == "__main__":  # first, before torch loads: a preemption signal then is a requeue too
    from utils import errors, preempt
    preempt.install()
    errors.quiet_interrupts()

from utils.constants import ATTACKS, DEFAULT_STEPS, OBJECTIVES, STEP_FACTOR, dataset_info, schedule  # noqa: E402
from utils.errors import (CliParser, DefaultsFormatter, EveryProcessError, ExtendList, UsageError,  # noqa: E402
                          as_parsed, choice, nonempty, number, doc_paragraphs, interrupt_says, log,
                          os_errors_as_usage, repeated, run_cli, stamped)
from utils.flags import (LABEL_ONLY, SHARED, acts_on, add_flags, ignored_lines, json_get,  # noqa: E402
                         label_name, trained_folder)
from utils.grid import (COMMAND_LINE_DTYPE, FILELESS_LABELS, attack_entries, counted, entry_attack,  # noqa: E402
                        older_place, outdated_entries, read_json_or_none, smoothed_loss_attacks, smoothed_run)

# The defaults of --attacks and --epsilons, without and with --paper_protocol (see requested_settings)
ATTACK_NAMES, PAPER_ATTACKS = ATTACKS, ("fgsm", "iterative")
PIXEL_EPSILONS = ("0", "1/255", "2/255", "4/255", "8/255")
PAPER_EPSILONS = ("0", "0.05", "0.1", "0.15", "0.2", "0.25", "0.3")  # its attack.py, normalised units
# What makes two entries the same computation (with a transfer's source checkpoint: `identity`); a
# rerun reuses an entry whose identity matches.
IDENTITY = ("protocol", "attack", "objective", "targeted", "eps", "steps", "step_size", "restarts",
            "num_images", "seed", "amp", "dtype", "images_sha256")
# entries written before the key existed
IDENTITY_DEFAULTS = {"objective": "loss", "dtype": COMMAND_LINE_DTYPE}
EXAMPLES = 6  # test images in attack_examples.png by default
# What the line for torch running out of memory advises (`run_cli`): an attack's memory grows with
# its batch, and a rerun reuses the settings saved before (their results do not depend on it)
MEMORY = "lower --batch_size; a rerun reuses the settings finished before"


def fraction(text, name="eps"):
    """'8/255', '0.03' or '0' -> its value, a Fraction; one above 0 that a float would read as 0 is
    an error."""
    try:
        value = Fraction(text.strip())
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"'{text}' is not a number or a fraction like 8/255") from None
    if 0 < value < 1 and not float(value):  # (1 or more cannot underflow; 1e400 has no float)
        raise argparse.ArgumentTypeError(f"{name} {text} is below the smallest float (it would be 0)")
    return value


def grey_levels(text, value):
    """How to write `text`, a value above 1, if it meant grey levels ('; ... write 8/255'), else ''.
    8 for 8 of 255 grey levels is many papers' scale, not ours; the types know no --paper_protocol,
    whose eps and steps are in normalised units, not grey levels."""
    return (f"; for {text.strip()} of 255 grey levels (pixel units, without --paper_protocol) write "
            f"{text.strip()}/255" if 1 < value <= 255 else "")


def epsilon(text):
    """'8/255', '0.03' or '0' -> (label as written, value); the value must lie in [0, 1]."""
    value = fraction(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"eps {text} is outside [0, 1]{grey_levels(text, value)}")
    return text.strip(), float(value)


def step_size(text):
    """--step_size '2/255' or '0.0078' -> its value, a float in (0, 1] (in --epsilons' units). A step
    of 1 already crosses any eps-ball (eps is at most 1); '2', many papers' PGD step of 2 grey
    levels, was taken as 2 in [0, 1], every step to a corner of the ball: another attack."""
    value = fraction(text, "step size")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} must be positive")
    try:
        step = float(value)
    except OverflowError:  # 1e400: was a traceback
        raise argparse.ArgumentTypeError(f"step size {text} is above the largest float") from None
    if value > 1:
        raise argparse.ArgumentTypeError(f"step size {text} is above 1{grey_levels(text, value)}")
    return step


def build_parser():
    about = doc_paragraphs(__doc__)
    parser = CliParser(prog="attack.py", description=about[0].split("\n")[0],
                       epilog=about[-1],  # what it writes, and where its lines go
                       formatter_class=DefaultsFormatter)
    run = parser.add_argument_group("the run to attack (train.py's flags)")
    add_flags(run, "model", model={
        "default": None, "help": "network (default: the checkpoint's with --checkpoint, else resnet32)"})
    run.add_argument("--label", type=label_name, default=None, help="label representation (default: the "
                     "checkpoint's with --checkpoint, else category)")
    add_flags(run, "dataset", "label_granularity", "seed", "level", dataset={
        "default": None, "help": "dataset (default: the checkpoint's with --checkpoint, else cifar10)"},
        label_granularity={"default": None, "help": "CIFAR-100 labels: the 100 fine classes or the 20 "
                           "superclasses (default: the checkpoint's with --checkpoint, else fine)"}, seed={
        "default": None, "help": "the run's seed (default: the checkpoint's with --checkpoint, "
        "else 0); also seeds the target classes and the random starts"}, level={
        "default": None, "help": "percent of the training set the run trained on (default: the "
        "checkpoint's with --checkpoint, else 100)"})
    add_flags(run, "smoothing", "label_noise", "base_dir", smoothing={
        "default": None, "help": "the category run's --smoothing (default: the checkpoint's with "
        "--checkpoint, else 0)"}, label_noise={"default": None, "help": "the run's --label_noise "
        "(default: the checkpoint's with --checkpoint, else 0)"}, base_dir={
        "default": None, "help": f"root of the run directories (default: {SHARED['base_dir']['default']}); "
        "given with --checkpoint, the checkpoint's folder must lie under it"})
    run.add_argument("--checkpoint", type=nonempty, default=None, help="a best-model .pth to attack "
                     "instead of the one found from the flags above; results go to its folder. The "
                     "flags above take its run's values when unset and must match them when given, "
                     "except --seed (it reseeds the targets and random starts) and a flag that acted "
                     "on nothing in the run; a --base_dir given must hold its folder")
    data = parser.add_argument_group("data")
    add_flags(data, "data_dir", "label_dir", data_dir={
        "default": None, "help": "folder holding cifar-10-batches-py / cifar-100-python (default: the "
        "run's own, as its checkpoint recorded it; ./data if it recorded none)"}, label_dir={
        "default": None, "help": "folder of {dataset}_{label}.npy files; if the run's file is there, "
        "its shape must match the checkpoint's (the checkpoint's own targets are used) (default: the "
        "run's own, as its checkpoint recorded it; labels/label_files if it recorded none)"})
    data.add_argument("--num_images", type=number(int), default=None,
                      help="attack the first N test images (default: the whole test split)")
    attack = parser.add_argument_group("attacks")
    attack.add_argument("--attacks", nargs="+", action=ExtendList, default=None, choices=ATTACK_NAMES,
                        help=f"attacks to run (default: all; {' '.join(PAPER_ATTACKS)} with --paper_protocol)")
    attack.add_argument("--epsilons", nargs="+", action=ExtendList, type=epsilon, default=None,
                        help="L-inf radii in pixel units (images in [0, 1]), numbers or fractions "
                        "(default: "
                        f"{' '.join(PIXEL_EPSILONS)}; with --paper_protocol: {' '.join(PAPER_EPSILONS)}"
                        ", in normalised units)")
    attack.add_argument("--targeted", default="both", choices=("no", "yes", "both"),
                        help="untargeted, targeted (towards a seeded random other class), or both")
    attack.add_argument("--steps", type=number(int), default=None,
                        help=f"steps of iterative and pgd (default: {DEFAULT_STEPS['pixel']}; "
                        f"{DEFAULT_STEPS['paper']} with --paper_protocol)")
    attack.add_argument("--step_size", type=step_size, default=None,
                        help="step of iterative and pgd, a number or a fraction in --epsilons' units "
                        "(at most 1), not a multiple of eps (default: "
                        f"{STEP_FACTOR['pixel']:g} * eps / steps; {STEP_FACTOR['paper']:g} * eps / steps "
                        "with --paper_protocol)")
    attack.add_argument("--restarts", type=number(int), default=1,
                        help="pgd runs from random starts (1: one run, no "
                        "restart); per image the first that succeeds is kept (targeted, where "
                        "none reaches the target, the last that misclassified the image)")
    attack.add_argument("--objective", default="loss", choices=OBJECTIVES,
                        help="what the attacks climb: the label's loss, as in the paper, or the "
                        "decoder's margin (nearest wrong class against the true one; see README)")
    attack.add_argument("--transfer_from", type=nonempty, default=None, metavar="CHECKPOINT",
                        help="a transfer (black-box) attack: craft each setting's images against this "
                        "best-model .pth of another run (same dataset and classes, any model or label; "
                        "its loss, decoder and threat) and classify them with the attacked run's model. "
                        "Entries of their own, named after the source (pgd<category), beside the "
                        "white-box ones; no attack_examples.png")
    attack.add_argument("--paper_protocol", action="store_true",
                        help="the paper's protocol: eps and step sizes in normalised units, FGSM clamped "
                        "to each image's own min/max, iterative without range clamp (see README)")
    out = parser.add_argument_group("execution and output")
    out.add_argument("--batch_size", type=number(int), default=500, help="images per batch")
    add_flags(out, "device", "amp", "channels_last")
    out.add_argument("--examples", type=number(int, inclusive=True), default=None,
                     help=f"test images shown in attack_examples.png (default: {EXAMPLES}; 0: no figure, "
                     "as always with --transfer_from); "
                     "given, the figure is drawn again even when every setting is reused")
    return parser


def requested_settings(args):
    """What the flags ask to compute: (protocol, attacks, epsilons as (label, value) pairs,
    targeted modes), each without repeats; unset --attacks and --epsilons take the protocol's
    defaults. sweep.py and report.py read a run's settings from here too
    (`utils.grid.requested_attacks`)."""
    protocol = "paper" if args.paper_protocol else "pixel"
    attacks = list(dict.fromkeys(args.attacks or (PAPER_ATTACKS if args.paper_protocol else ATTACK_NAMES)))
    epsilons = args.epsilons or [epsilon(e) for e in
                                 (PAPER_EPSILONS if args.paper_protocol else PIXEL_EPSILONS)]
    unique = {}  # each eps once, however written (8/255, 0.0313725...), as first written
    for label, value in epsilons:
        unique.setdefault(value, (label, value))
    modes = {"no": [False], "yes": [True], "both": [False, True]}[args.targeted]
    return protocol, attacks, list(unique.values()), modes


def repeated_settings(args):
    """A warning line (`repeated`) for each of --attacks and --epsilons that lists an attack or eps
    more than once (an eps by its value), which `requested_settings` attacks once."""
    lists = (("--attacks", [(a, a) for a in args.attacks or []]), ("--epsilons", args.epsilons or []))
    return [line for flag, listed in lists if (line := repeated(flag, listed, "each setting is attacked once"))]


# flag -> the attacks it acts on (FGSM takes one step of eps; only pgd starts again at random)
ATTACK_ONLY = {"steps": ("iterative", "pgd"), "step_size": ("iterative", "pgd"), "restarts": ("pgd",)}


def _best_in(folder, flag="--checkpoint"):
    """'; pass --checkpoint F' for the best checkpoint F train.py wrote in run directory `folder` (a
    --checkpoint of the run directory is a likely slip), '; pass one of ...' for several, '' for none."""
    from utils.runs import BEST_SUFFIX
    found = sorted(str(p) for p in Path(folder).glob(f"*{BEST_SUFFIX}") if p.is_file())
    if not found:
        return ""
    return f"; pass {flag} {found[0]}" if len(found) == 1 else f"; pass one of {', '.join(found)}"


def checkpoint_file(flag, given):
    """The checkpoint file a flag (--checkpoint, --transfer_from) names, its folder `resolved` (the
    file itself may be a link: results go beside it); a missing one or a folder is a UsageError."""
    from utils.runs import resolved
    given = Path(given)
    path = resolved(given.parent) / given.name
    if not path.is_file():
        raise UsageError(f"{flag} {path} " + (f"is a folder, not a checkpoint file{_best_in(path, flag)}"
                                              if path.is_dir() else "does not exist"))
    return path


def find_checkpoint(args):
    """The checkpoint path and the run directory its results go to. Unset run flags take train.py's
    defaults where the flags find the checkpoint (with --checkpoint, `load_model` gives them the
    checkpoint's)."""
    from utils.runs import (CONFIG, LAST_CHECKPOINT, RESULTS, best_checkpoint_name, check_base_dir,
                            check_name_lengths, resolved, run_dir_of)
    if args.checkpoint is None:  # the flags find the checkpoint
        for flag, default in RUN_FLAGS:
            setattr(args, flag, default if getattr(args, flag) is None else getattr(args, flag))
        args.base_dir = flags_base_dir(args)
    if args.checkpoint:
        # its folder as run_dir_of's (the file itself may be a link: the results go beside it), in
        # every message and in attack_results.json's config too
        given = Path(args.checkpoint)
        path = checkpoint_file("--checkpoint", given)
        args.checkpoint = str(path)
        if path.name == LAST_CHECKPOINT and (path.parent / CONFIG).is_file():
            raise UsageError(f"{path} is the last checkpoint of train.py's run in {path.parent}, where "
                             "attack results count as the run's best checkpoint's; attack a copy of it "
                             "in a folder of its own")
        check_holds(args.base_dir, given.parent, path.parent)
        return path, path.parent
    check_base_dir(args.base_dir)  # --base_dir outputs/less said only "no checkpoint at outputs/less/less/..."
    dataset_info(args.dataset, args.label_granularity)  # cifar10 coarse: train.py's error, not "no checkpoint"
    check_name_lengths(args)  # a run that no file system holds: not 'File name too long' for its checkpoint
    run_dir = run_dir_of(args)
    if moved := older_place(args, run_dir):  # not "no checkpoint at", nor "trained with --smoothing 0.1, not 0"
        raise UsageError(moved)
    check_place(run_dir, args)
    path = run_dir / best_checkpoint_name(args.label, args.seed, args.model)
    if not path.is_file() and (run_dir / RESULTS).is_file():  # "train it" would find it complete
        raise UsageError(f"{run_dir} finished training, but its best checkpoint {path.name} is not there "
                         "(deleted, or not copied with the run's files); train the run again with train.py "
                         "--force and the same flags, or delete the run directory and train it anew")
    if not path.is_file():
        found = sorted(p.name for p in run_dir.glob("*.pth")) if run_dir.is_dir() else []
        where = f" (that folder holds {', '.join(found)})" if found else ""
        if not found:  # runs of this label, seed and model that other placing flags name
            base, dataset, name = resolved(args.base_dir), args.dataset, glob.escape(path.name)
            others = sorted(str(p.parent) for folder in (dataset, f"{dataset}_*", f"less/{dataset}/level*",
                                                         f"less/{dataset}_*/level*")
                            for p in base.glob(f"{folder}/seed{args.seed}/{args.model}/model_*/{name}"))
            if others:
                more = f" and {len(others) - 3} more" if len(others) > 3 else ""
                where = (f" (trained with another --level, --smoothing, --label_noise or --label_granularity "
                         f"in {', '.join(others[:3])}{more})")
            elif labels := trained_labels(run_dir.parent, args.seed, args.model):  # --label misspelt
                where = f" (labels trained in {run_dir.parent}: {', '.join(labels)})"
        raise UsageError(f"no checkpoint at {path}{where}; train it with train.py and the same --base_dir/"
                         "--dataset/--seed/--model/--label/--level/--smoothing/--label_noise/"
                         "--label_granularity, or pass --checkpoint PATH")
    return path, run_dir


def check_holds(base_dir, folder, run_dir):
    """A --base_dir given with --checkpoint (None: not given) must hold `run_dir`, the checkpoint's
    folder, where the results go: one elsewhere was ignored, and the results were not where asked.
    It holds it below itself, links followed, or at `folder`, the folder as given, where that path
    goes down from the --base_dir through links (a seed's folder linked to another disk: report.py
    and the flags read the run there), with no '..' after it (which a link's target would apply)."""
    from utils.runs import resolved
    if base_dir is None:
        return
    base, parts = resolved(base_dir), (Path.cwd() / folder).parts
    through = any(".." not in parts[i:] and resolved(Path(*parts[:i])) == base for i in range(1, len(parts) + 1))
    if not (run_dir.is_relative_to(base) or through):
        raise UsageError(f"--base_dir {base_dir} does not hold --checkpoint's folder {run_dir}, where its "
                         "results go; leave out --base_dir, or copy the checkpoint into a folder of its own "
                         f"under {base_dir} and attack that copy")


def check_place(run_dir, args):
    """The run directory the flags `args` found must hold their run: one whose config.json records
    other run flags (a run's folder copied into another seed's place, `cp -r seed1 seed2`) was
    attacked as the run the folder names, its results written there as that run's, which report.py
    pools. train.py refuses such a folder alike ('holds a finished run trained with --seed 1')."""
    from utils.runs import CONFIG
    flags = json_get(read_json_or_none(run_dir / CONFIG), "flags")
    if isinstance(flags, dict) and (other := trained_otherwise(flags, args)):
        raise UsageError(f"{run_dir} holds a run trained with {other}, as its {CONFIG} records (a copy of "
                         "another run's folder?); attack that run with its own flags, in the folder train.py "
                         "wrote it to, or train this one there with train.py --force")


def trained_labels(folder, seed, model):
    """The labels of the runs in `folder` (a model's folder of the layout) with a best checkpoint
    of `seed` and `model`, each once, sorted: what --label may be, where the one given found none."""
    from utils.runs import best_checkpoint_name
    suffix = best_checkpoint_name("", seed, model)  # "_seed3_resnet32_best_model.pth"
    return sorted({p.name.removesuffix(suffix) for p in folder.glob(f"model_*/*{glob.escape(suffix)}")})


def check_finished(run_dir):
    """Attacks are of a run's final model: while train.py has yet to finish the run, its best
    checkpoint may still change, and results on it would outlive it (sweep.py and report.py would
    count them as the run's)."""
    from utils.runs import CONFIG, RESULTS
    if (run_dir / CONFIG).exists() and not (run_dir / RESULTS).exists():
        raise UsageError(f"{run_dir} has not finished training (it has {CONFIG} but no {RESULTS}), so "
                         "its best checkpoint may still change; finish it with train.py --resume first")


def recorded_flags(checkpoint):
    """The train.py flags a best-model checkpoint records ({} for one of no train.py run)."""
    return checkpoint.get("config", {}).get("flags", {})


ADVICE = "point --checkpoint at a checkpoint train.py wrote, or train the run again"


def model_from_checkpoint(path):
    """(model in eval mode, label space, checkpoint dict) rebuilt from a train.py best-model
    checkpoint alone; a file that is not one, or weights that do not fit, is a UsageError."""
    from utils.runs import load_checkpoint
    return model_from_state(path, load_checkpoint(path, advice=ADVICE))


def checkpoint_record(data, written):
    """What attack_results.json records of the checkpoint file, from its bytes `data` and
    os.stat_result `written` as `utils.runs.read_checkpoint` read them: its sha256, and its size,
    mtime and zip index (`zip_index_sha256`), with which sweep.py and report.py know it unread."""
    import hashlib
    import io

    from utils.runs import zip_index_sha256
    return {"checkpoint_sha256": hashlib.sha256(data).hexdigest(), "checkpoint_mtime": written.st_mtime,
            "checkpoint_size": written.st_size, "checkpoint_index_sha256": zip_index_sha256(io.BytesIO(data))}


# The types of the RUN_FLAGS (below) a checkpoint's config records, which attack.py takes where they are
# not given: a --label_granularity ['x'] was a TypeError traceback, a --level 'abc' attacked as the run's.
RECORDED_TYPES = {"dataset": str, "label_granularity": str, "level": (int, float), "smoothing": (int, float),
                  "label_noise": (int, float)}


def model_from_state(path, checkpoint, advice=ADVICE):
    """`model_from_checkpoint` of the `checkpoint` dict loaded from `path` (which messages name, with
    `advice`, what to do, where the file is no checkpoint of a run)."""
    from architecture import ARCHITECTURES, build_model
    from utils.labelspace import space_from_state
    from utils.runs import malformed
    if not isinstance(checkpoint, dict) or not {"model", "model_args", "label_space"} <= set(checkpoint):
        raise UsageError(f"{path} is not a best-model checkpoint of train.py (it lacks model, "
                         "model_args or label_space)")
    import torch
    with malformed(path, advice):
        model_args, space = checkpoint["model_args"], space_from_state(checkpoint["label_space"])
        if isinstance(model_args["arch"], str) and model_args["arch"] not in ARCHITECTURES:
            raise UsageError(f"{path} holds a {model_args['arch']}, a network this checkout's "
                             f"architecture.py does not register (it has {', '.join(ARCHITECTURES)}); "
                             "add its entry to ARCHITECTURES there, as in the checkout that trained it")
        choice("model", model_args["arch"], ARCHITECTURES, error=ValueError)  # the file's, not a flag's
        try:  # its label file is found by this name: a hand-edited '../../x' read one outside --label_dir
            label_name(space.name)
        except argparse.ArgumentTypeError as err:
            raise UsageError(f"{path} records a label name train.py refuses: {err}; {advice}") from None
        if unfit := _unfit_weight(model_args, checkpoint["model"]):
            raise UsageError(f"{path}: the weights do not fit a {model_args['arch']} with outputs "
                             f"{tuple(model_args['output_shape'])} ({unfit})")
        if tuple(model_args["output_shape"]) != tuple(space.output_shape):  # each output against a target
            raise UsageError(f"{path}: the model outputs {tuple(model_args['output_shape'])} but its "
                             f"{space.name} targets have shape {tuple(space.output_shape)}")
        # seeded: the initial weights, replaced next, leave a caller's RNG, and a run's in another thread
        model = build_model(model_args["arch"], model_args["output_shape"], model_args["mean"], model_args["std"],
                            seed=0)
        try:
            model.load_state_dict(checkpoint["model"])
        except RuntimeError as err:  # torch's first line says only "Error(s) in loading state_dict"
            reason = " ".join(str(err).split()[:30])
            raise UsageError(f"{path}: the weights do not fit a {model_args['arch']} with outputs "
                             f"{tuple(model_args['output_shape'])} ({reason})") from None
        flags = recorded_flags(checkpoint)
        if not isinstance(flags, dict):
            raise TypeError("its config's flags are not a mapping")
        if type(flags.get("seed", 0)) is not int:  # it seeds the targets and starts unless --seed is given
            raise TypeError(f"its config's seed {flags['seed']!r} is not a whole number")
        for flag, kind in RECORDED_TYPES.items():  # each is the run's unless given (`load_model`)
            if flag in flags and (isinstance(flags[flag], bool) or not isinstance(flags[flag], kind)):
                raise TypeError(f"its config's {flag} {flags[flag]!r} is not "
                                f"{'text' if kind is str else 'a number'}")
    broken = [name for name, value in model.state_dict().items()
              if value.is_floating_point() and not torch.isfinite(value).all()]
    if broken:  # its outputs, and so every attack's result, would be NaN decoded as some class
        raise UsageError(f"{path} holds NaN or infinite weights ({', '.join(broken[:3])}"
                         f"{', ...' if len(broken) > 3 else ''}): its run diverged, and attacks "
                         "on it measure nothing; train it again (a lower --lr may help)")
    return model.eval(), space, checkpoint


def _unfit_weight(model_args, weights):
    """The first weight of a network of `model_args` that a checkpoint's `weights` lack or hold in
    another shape ('head.linear.weight: (10, 64) in the file, (100000000, 64) in the network'), else
    None. Found on the network's shapes alone (torch's meta device): built for real first, a file of
    a few kB whose model_args and label space name 10**8 classes allocated and initialised 25 GB of
    weights before its own were found not to fit."""
    import torch

    from architecture import build_model
    with torch.device("meta"):
        skeleton = build_model(model_args["arch"], model_args["output_shape"], model_args["mean"],
                               model_args["std"])
    for name, value in skeleton.state_dict().items():
        held = weights.get(name)
        if not isinstance(held, torch.Tensor):
            return f"{name}: not in the file"
        if held.shape != value.shape:
            return f"{name}: {tuple(held.shape)} in the file, {tuple(value.shape)} in the network"
    return None


# The flags that say which run is attacked, each with its value when neither the command line nor
# the checkpoint gives one: train.py's defaults
RUN_FLAGS = tuple((flag, "category" if flag == "label" else SHARED[flag]["default"])
                  for flag in ("model", "label", "dataset", "label_granularity", "seed", "level",
                               "smoothing", "label_noise"))


def load_model(args, path):
    """Rebuild the model and its label space from the checkpoint alone: (model, label space,
    `checkpoint_record`), all of one read of the file. Of RUN_FLAGS, those left
    unset take the checkpoint's values (its run's seed draws the targets and random starts);
    those given, but for the seed and a flag that acted on nothing, must match them. An unset
    --data_dir is the run's, which must be here; an unset --label_dir is the run's, here or not."""
    from utils.runs import read_checkpoint
    checkpoint, data, written = read_checkpoint(path, advice=ADVICE)
    record = checkpoint_record(data, written)
    del data  # not held through the attacks (80 MB for a vgg19)
    model, space, checkpoint = model_from_state(path, checkpoint)
    model_args = checkpoint["model_args"]
    trained = recorded_flags(checkpoint) | {"model": model_args["arch"], "label": space.name}
    if args.data_dir is None:  # the run's data (a checkpoint of no train.py run: the default)
        own = trained_folder(trained, "data_dir")
        if own == trained.get("data_dir") and not Path(own).is_dir():
            where = "" if Path(own).is_absolute() else " (relative to the folder train.py ran in)"
            raise UsageError(f"{path} was trained on the data in {own}{where}, which is not here; pass "
                             "--data_dir with the folder of its dataset on this machine")
        args.data_dir = own
    if args.label_dir is None:  # the folder its targets were read from: a file there is its label's
        args.label_dir = trained_folder(trained, "label_dir")
    # as train.py says it, for a value other than the default (which the flags that find the
    # checkpoint fill in): a sweep passes --smoothing to every label's runs
    passed = [flag for flag, default in RUN_FLAGS if getattr(args, flag) not in (None, default)]
    for line in ignored_lines(passed, LABEL_ONLY, [trained["label"]]):
        log(line)
    for flag, default in RUN_FLAGS:
        if getattr(args, flag) is None:
            setattr(args, flag, trained.get(flag, default))
    if other := trained_otherwise(trained, args, reseeded=args.checkpoint is not None):
        raise UsageError(f"{path} was trained with {other}")
    return model, space, record


def trained_otherwise(trained, args, reseeded=False):
    """'--seed 1, not 2' for the first of RUN_FLAGS that a run's recorded flags `trained` (a flag
    they lack at train.py's default) set otherwise than `args`; None where none does. Not --seed
    where `reseeded` (with --checkpoint it draws other targets and random starts), nor a flag that
    acted on nothing in the run (a sweep passes --smoothing to every label's runs)."""
    values = {flag: trained.get(flag, default) for flag, default in RUN_FLAGS}
    for flag, value in values.items():
        given = getattr(args, flag)
        if given != value and not (flag == "seed" and reseeded) and acts_on(flag, values["label"]):
            return f"--{flag} {value}, not {given}"
    return None


def check_classes(path, space, data, dataset, granularity):
    """The checkpoint's classes are those of `data` (`dataset` at `granularity`)."""
    if space.num_classes != data.num_classes:
        raise UsageError(f"{path} predicts {space.num_classes} classes, but {dataset} ({granularity}) has "
                         f"{data.num_classes}")


def check_fits(args, path, space, data):
    """The checkpoint's classes are the dataset's, and a label file of the run's name in
    --label_dir, if there is one, holds targets of its shape."""
    from labels import LabelError, label_path, read_targets, targets_sha256
    from utils.labelspace import space_sha256
    check_classes(path, space, data, args.dataset, args.label_granularity)
    label_file = label_path(args.dataset, space.name, args.label_dir)
    if space.name not in FILELESS_LABELS and label_file.is_file():
        try:
            targets = read_targets(label_file)
        except LabelError as err:  # the checkpoint's targets are used; the file is only checked against
            raise LabelError(f"{err}; {path} carries its own targets, so fix or remove that file, or point "
                             "--label_dir at a folder without it, to attack the run") from None
        shape = targets.shape[1:]  # a file of another class count is another granularity's: not the run's
        if len(targets) == data.num_classes and tuple(shape) != tuple(space.output_shape):
            raise UsageError(f"{path} was trained on {space.name} targets of shape "
                             f"{tuple(space.output_shape)}, but {label_file} holds shape {tuple(shape)}; "
                             "it carries its own targets, so point --label_dir at the folder it was "
                             "trained from, or at one without that file, to attack the run")
        if len(targets) == data.num_classes and targets_sha256(targets) != space_sha256(space.state()):
            log(f"note: {label_file} holds other {space.name} targets than {path} was trained on (a file "
                "changed or regenerated since); the attacks use the checkpoint's")


def load_run(args, path):
    """The run to attack, of the checkpoint at `path` (`find_checkpoint`'s): (model, label space,
    dataset, what attack_results.json records of the checkpoint (`checkpoint_record`), the
    checkpoint's `version` as it was before the load). Unset run flags take the checkpoint's values
    (`load_model`); the checkpoint, the dataset and a label file of its name must fit together."""
    from cifar import load_cifar
    from utils.training import warn_bf16_targets
    loaded = version(path)  # before the load: a file replaced during it is read again (`run`)
    model, space, record = load_model(args, path)
    warn_bf16_targets(space, args.amp)
    data = load_cifar(args.dataset, args.data_dir, args.label_granularity, train=False)  # it attacks test images
    check_fits(args, path, space, data)
    return model, space, data, record, loaded


SOURCE_ADVICE = "point --transfer_from at a best checkpoint train.py wrote"


@dataclass
class Source:
    """The model a transfer attack crafts its images against (--transfer_from), its label space,
    and the record of it that each of its entries carries (`load_source`)."""
    model: object
    space: object
    record: dict


def load_source(args, data, attacked, model):
    """The --transfer_from checkpoint, rebuilt from one read of it: a `Source` whose record holds its
    path, `checkpoint_record` (sha256, size, mtime, zip index), label, model and seed, and its `name`
    in the entries' settings: its label as its
    run folder names it (category_smooth0.1), after its network where that is not the attacked
    one's (vgg19:category). It must be a best-model checkpoint of the attacked run's dataset (and
    granularity) and classes, other bytes than the attacked checkpoint (`attacked`, its
    `checkpoint_record`: its own images are the white-box attacks), and under --paper_protocol,
    whose eps are in normalised units, normalise as the attacked `model` does."""
    from utils.runs import dataset_folder, read_checkpoint, run_folder_name
    from utils.training import warn_bf16_targets
    path = checkpoint_file("--transfer_from", args.transfer_from)
    check_source_run(path)
    checkpoint, raw, written = read_checkpoint(path, advice=SOURCE_ADVICE)
    recorded = checkpoint_record(raw, written)  # by which report.py knows the source unchanged, unread
    del raw
    if recorded["checkpoint_sha256"] == attacked["checkpoint_sha256"]:
        raise UsageError(f"--transfer_from {path} is the attacked checkpoint itself (the same bytes), whose "
                         "attacks are the white-box ones: leave out --transfer_from, or pass another run's "
                         "checkpoint")
    source, space, checkpoint = model_from_state(path, checkpoint, SOURCE_ADVICE)
    flags = dict(RUN_FLAGS) | recorded_flags(checkpoint)
    trained, asked = (dataset_folder(flags["dataset"], flags["label_granularity"]),
                      dataset_folder(args.dataset, args.label_granularity))
    if trained != asked:
        raise UsageError(f"--transfer_from {path} was trained on {trained}, but the attacked run on {asked}; "
                         "a transfer attack's source must be of the same dataset and classes")
    check_classes(path, space, data, args.dataset, args.label_granularity)
    normalised = [(m.model_args["mean"], m.model_args["std"]) for m in (source, model)]
    if args.paper_protocol and normalised[0] != normalised[1]:
        raise UsageError(f"--transfer_from {path} normalises its images by another mean and std than the "
                         "attacked run, so --paper_protocol's eps, in normalised units, would be other "
                         "budgets for the two; leave out --paper_protocol (pixel units)")
    warn_bf16_targets(space, args.amp)
    arch = source.model_args["arch"]
    name = run_folder_name(space.name, flags["label_noise"], flags["smoothing"]).removeprefix("model_")
    record = {"name": name if arch == args.model else f"{arch}:{name}", "checkpoint": str(path), **recorded,
              "label": space.name, "model": arch, "seed": flags["seed"]}
    return Source(source, space, record)


def check_source_run(path):
    """A --transfer_from in a folder of train.py's run must be the best checkpoint of the finished
    run: its last checkpoint holds another epoch's weights (whose entries would go by the run's
    name all the same), and the best checkpoint of a run still training may change (`check_finished`)."""
    from utils.runs import CONFIG, LAST_CHECKPOINT
    folder = path.parent
    if not (folder / CONFIG).is_file():  # a copy in a folder of its own: it is what it is
        return
    if path.name == LAST_CHECKPOINT:
        raise UsageError(f"--transfer_from {path} is the last checkpoint of train.py's run in {folder} (its "
                         f"last epoch's weights), not the run's best{_best_in(folder, '--transfer_from')}")
    try:
        check_finished(folder)
    except UsageError as err:
        raise UsageError(f"--transfer_from {path}: {err}") from None


def retrained_sources(entries, source, path, log):
    """`entries` less the transfer entries crafted against an earlier version of the --transfer_from
    checkpoint at the same path (`source`, its record: its run trained again), which are logged;
    and whether there were any."""
    stale = [e for e in entries if e.get("source") and e["source"].get("checkpoint") == source["checkpoint"]
             and e["source"]["checkpoint_sha256"] != source["checkpoint_sha256"]]
    if stale:
        log(f"{path}: dropping {counted(len(stale), 'transfer entry')} crafted against an "
            f"earlier {source['checkpoint']} (written again since)")
    return [e for e in entries if e not in stale], bool(stale)


def flags_base_dir(args):
    """The --base_dir under which the flags find the run: the one given, else train.py's default,
    resolved. The parser leaves it None, so that `check_holds` knows whether one was given with
    --checkpoint; a sweep, which reads where attack.py will find each run, asks here too."""
    from utils.runs import resolved
    return str(resolved(SHARED["base_dir"]["default"])) if args.base_dir is None else args.base_dir


def version(path):
    """What changes when the file at `path` is written again: a rename over it (train.py's
    `atomic_write`) gives it another inode, a copy over it another mtime or size."""
    stat = os.stat(path)
    return stat.st_dev, stat.st_ino, stat.st_mtime_ns, stat.st_size


def identity(entry):
    """What `entry` computed (`IDENTITY`), and for a transfer the sha256 of its source checkpoint."""
    source = entry.get("source")
    return (*(entry.get(k, IDENTITY_DEFAULTS.get(k)) for k in IDENTITY),
            source["checkpoint_sha256"] if source else None)


def setting_key(entry):
    mode = "targeted" if entry["targeted"] else "untargeted"
    return f"{entry_attack(entry)}/{mode}/{entry['eps_label']}"


def setting_name(entry):
    """'pgd+margin targeted eps 8/255': a setting as progress lines and messages name it."""
    mode = "targeted" if entry["targeted"] else "untargeted"
    return f"{entry_attack(entry)} {mode} eps {entry['eps_label']}"


def computed_line(entry):
    """The progress line of a setting computed now: robust accuracy, target success, time, speed."""
    success, rate = entry.get("target_success"), entry["images_per_s"]
    hit = "" if not entry["targeted"] else " target_success " + (
        "- (no image attacked)" if success is None else f"{success:.2%}")
    speed = "no attack at eps 0" if rate is None else f"{rate:.1f} img/s"
    return (f"{setting_name(entry)}: robust_acc {entry['robust_acc']:.2%}{hit} {entry['num_images']} images "
            f"{entry['seconds']:.1f}s {speed}")


def run_setting(model, space, images, labels, targets, entry, args, **options):
    """`run_attack` of the setting `entry` names (attack, eps, targeted, protocol, steps, step size,
    restarts, objective) with the flags' seed, batch size, amp and memory format; `targets`: the
    images' target classes, attacked towards when the entry is targeted; `options`: run_attack's
    others (shared, stop, keep_images)."""
    from utils.attacks import run_attack
    return run_attack(model, space, images, labels, entry["attack"], entry["eps"],
                      targets=targets if entry["targeted"] else None, protocol=entry["protocol"],
                      steps=entry["steps"], step_size=entry["step_size"], restarts=entry["restarts"],
                      seed=args.seed, batch_size=args.batch_size, amp=args.amp,
                      objective=entry.get("objective", "loss"), channels_last=args.channels_last, **options)


def load_previous(path, figure, checkpoint, checkpoint_sha, log, smoothed=False):
    """Entries of an earlier run on the same checkpoint (by content). Those of a checkpoint since
    retrained at the same path, or since deleted, are dropped, with its figure (attack_examples.png,
    which --examples 0 would otherwise leave beside the new results), and so are those that an older
    attack.py computed on the smoothed loss of a run trained with --smoothing (`smoothed`); those of
    another checkpoint that still exists are an error, not lost work."""
    from utils.runs import read_json
    if not path.exists():
        return []
    previous = read_json(path)
    if not isinstance(previous.get("entries"), list):
        raise UsageError(f"{path} is not an attack.py results file (no list of entries); delete it "
                         "to compute the attacks again")
    entries, malformed, outdated = attack_entries(previous)  # as sweep.py and report.py read the file
    if malformed:
        log(f"{path}: dropping {counted(malformed, 'malformed entry')} "
            "(computed again if asked for)")
    if outdated:
        log(f"{path}: dropping {outdated_entries(outdated)} (computed again if asked for)")
    if stale := smoothed_loss_attacks(previous, smoothed):
        log(f"{path}: dropping {counted(len(entries), 'entry')}: it {stale}" + (
            f"; and {figure.name}" if figure.exists() else ""))
        figure.unlink(missing_ok=True)
        return []
    if previous.get("checkpoint_sha256") != checkpoint_sha:
        other = Path(str(previous.get("checkpoint", "")))
        if entries and other.is_file() and other.resolve() != checkpoint.resolve():
            raise UsageError(f"{path} holds the results of attacks on {other}, not on {checkpoint}; "
                             f"attack a copy of {checkpoint.name} in a folder of its own, or delete "
                             f"{path.name} to replace those results")
        had_figure = figure.exists()
        if entries or had_figure:
            log(f"{path}: dropping {counted(len(entries), 'entry')} computed on another checkpoint"
                + (f", and {figure.name}" if had_figure else ""))
        figure.unlink(missing_ok=True)
        return []
    return entries


CHARACTERS_AN_INCH = 14  # of the figure's 8- and 9-point titles, about


def wrapped(text, width):
    """`text` in lines of at most `width` characters where it can be, broken after a space, an
    underscore or a hyphen: CIFAR-100's names (large_man-made_outdoor_things) have no spaces."""
    lines = [""]
    for piece in re.findall(r"[^ _-]*[ _-]|[^ _-]+", text):
        if lines[-1] and len(lines[-1] + piece.rstrip()) > width:
            lines.append("")
        lines[-1] += piece
    return "\n".join(lines)


def save_examples(path, model, space, images, labels, targets, class_names, entries, args):
    """attack_examples.png: clean / adversarial / amplified perturbation for the first few
    (--examples) correctly classified of `images`, under the strongest of the first attack's
    `entries` (its largest eps, untargeted before targeted)."""
    import torch
    from matplotlib.figure import Figure  # not pyplot: a notebook's backend and figures stay as they were

    from utils.runs import write_file
    entry = max((e for e in entries if e["attack"] == entries[0]["attack"]),
                key=lambda e: (e["eps"], not e["targeted"]))
    protocol = entry["protocol"]
    count = min(len(images), max(64, 4 * args.examples))  # enough to find a few correctly classified images
    images, labels, targets = images[:count], labels[:count], targets[:count]
    result = run_setting(model, space, images, labels, targets, entry, args, keep_images=True)
    shown = (result["clean_pred"] == labels.cpu()).nonzero().squeeze(1)[:args.examples]
    if not len(shown):
        shown = torch.arange(min(args.examples, len(labels)))
    clean = images[shown].float().cpu() / 255
    adversarial = result["adversarial"][shown].float()
    radius = entry["eps"] * (max(model.model_args["std"]) if protocol == "paper" else 1.0)
    gain = 0.5 / radius if radius > 0 else 1.0
    rows = [("clean", clean), ("adversarial", adversarial.clamp(0, 1)),
            (f"perturbation x{gain:.0f} + 0.5", ((adversarial - clean) * gain + 0.5).clamp(0, 1))]
    width = max(1.6 * len(shown), 4.8)  # inches: wide enough for the title with one or two images
    column = int(width / len(shown) * CHARACTERS_AN_INCH)  # of a title over its image
    figure = Figure(figsize=(width, 5.4), layout="constrained")
    axes = figure.subplots(3, len(shown), squeeze=False)
    for row, (name, pictures) in enumerate(rows):
        for col, i in enumerate(shown.tolist()):
            ax = axes[row][col]
            ax.imshow(pictures[col].permute(1, 2, 0).numpy(), interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            if row == 0:
                ax.set_title(wrapped(f"#{i} {class_names[labels[i]]}", column), fontsize=8)
            elif row == 1:  # a targeted attack's goal beside what it reached
                goal = f" (target {class_names[targets[i]]})" if entry["targeted"] else ""
                ax.set_title(wrapped(f"-> {class_names[result['adv_pred'][i]]}{goal}", column), fontsize=8)
            if col == 0:
                ax.set_ylabel(name, fontsize=8)
    mode = "targeted" if entry["targeted"] else "untargeted"
    units = " (normalised units, paper protocol)" if protocol == "paper" else ""
    name = entry_attack(entry)
    title = (f"{args.model} {space.name}: {name} {mode}, eps {entry['eps_label']}{units}; "
             f"perturbation amplified x{gain:.0f} for visibility")
    figure.suptitle(textwrap.fill(title, int(width * CHARACTERS_AN_INCH)), fontsize=9)
    write_file(path, lambda f: figure.savefig(f, format="png", dpi=100))


def warn_ignored(args, attacks):
    """Logs a line for each of --steps, --step_size and --restarts given that acts on none of
    `attacks` (`ATTACK_ONLY`)."""
    parser = build_parser()
    given = [flag for flag in ATTACK_ONLY if getattr(args, flag) != parser.get_default(flag)]
    for line in ignored_lines(given, ATTACK_ONLY, attacks, "attacks"):  # as for a label's flags
        log(line)


def reload(args, path, data):
    """`load_run`'s model, label space and checkpoint record again, of the file at `path` as it is
    now."""
    log(f"note: {path} was written again since this job loaded it (its run's final checkpoint, "
        "or a copy over it); attacking it as it is now")
    model, space, record = load_model(args, path)
    check_fits(args, path, space, data)
    return model, space, record


def select_images(args, data, space):
    """The first --num_images of the test split (all when unset): (their number, images, labels,
    the target classes a targeted attack aims them at). The targets are drawn for the whole split,
    then cut: an image's target does not depend on --num_images."""
    from utils.attacks import draw_targets
    total = len(data.test_labels)
    n = total if args.num_images is None else args.num_images
    if n > total:
        raise UsageError(f"--num_images {n}, but the {args.dataset} test split has {total} images")
    images, labels = data.test_images[:n], data.test_labels[:n]
    return n, images, labels, draw_targets(data.test_labels, space.num_classes, args.seed)[:n]


class Job:
    """One attack.py job in its locked run directory: the settings the flags ask for, on the first
    --num_images test images, each reused from attack_results.json where an earlier run computed
    it, else computed now and written there at once, so that a rerun, or this job requeued after a
    signal, goes on where it stopped. `current`: this job's entries, in order, computed or reused.
    With a `Source` (--transfer_from), each setting's images are crafted against its model and
    classified by this run's: a transfer attack, whose entries record the source."""

    def __init__(self, args, argv, requested, device, run_dir, checkpoint, record, model, space, data,
                 source=None):
        from utils.attacks import Shared, attack_dtype
        from utils.runs import ATTACK_EXAMPLES, ATTACK_RESULTS, environment, tensors_sha256
        self.args, self.device = args, device
        self.run_dir, self.checkpoint, self.record = run_dir, checkpoint, record
        self.model, self.space = model.to(device).eval(), space.to(device)
        # torch's default dtype where the model was rebuilt (a notebook's float64), and --amp, set
        # the precision; an entry of another is another computation
        self.dtype = str(attack_dtype(self.model)).removeprefix("torch.")
        self.n, self.images, self.labels, self.targets = select_images(args, data, self.space)
        self.images_sha, self.class_names = tensors_sha256(self.images, self.labels), data.class_names
        self.path, self.png = run_dir / ATTACK_RESULTS, run_dir / ATTACK_EXAMPLES
        self.entries = load_previous(self.path, self.png, checkpoint, record["checkpoint_sha256"], log,
                                     smoothed_run(args.label, args.smoothing))
        self.source, self.dropped = source, False  # dropped: entries of a retrained source, to write out
        if source is not None:
            self.source = Source(source.model.to(device).eval(), source.space.to(device), source.record)
            self.entries, self.dropped = retrained_sources(self.entries, source.record, self.path, log)
        # a reuse reports the entry's clean accuracy and, targeted, its target success (null: no
        # image attacked); one edited without them is computed again (and stays, for report.py)
        self.done = {identity(e): e for e in self.entries if e.get("clean_acc") is not None
                     and (not e["targeted"] or "target_success" in e)}
        self.kept = len(self.entries)
        self.env = environment(argv)  # once: the document is written after every setting
        self.protocol, self.attacks, self.epsilons, modes = requested
        self.settings = [(attack, targeted, label, eps) for attack in self.attacks for targeted in modes
                         for label, eps in self.epsilons]
        self.current, self.clean_acc = [], None
        self.shared = Shared()  # clean predictions and clean-image gradients, computed once for all settings

    def start_line(self):
        """What is attacked, on what."""
        count = len(self.settings)
        source = "" if self.source is None else f" with images crafted against {self.source.record['checkpoint']}"
        return (f"attacking {self.checkpoint}{source}: {count} setting{'s' * (count != 1)} on {self.n} "
                f"test images, batch {self.args.batch_size}, on {self.device}")

    def attack(self, setting, progress, place):
        """One setting of `settings`: reused where an earlier run computed it, else computed now;
        its progress line, after `place` ('[2/5] '), says which."""
        entry = self.entry(*setting)
        if identity(entry) in self.done:  # named as this command writes its eps (0.5, not an earlier 1/2)
            entry = self.done[identity(entry)] | {"eps_label": entry["eps_label"]}
            progress.step(f"{place}{setting_name(entry)}: robust_acc {entry['robust_acc']:.2%} "
                          f"(reused from {self.path.name})", acc=f"{entry['robust_acc']:.2%}")
        else:
            entry = self.compute(entry, progress)
            progress.step(place + computed_line(entry), acc=f"{entry['robust_acc']:.2%}")
        self.current.append(entry)
        self.clean_acc = entry["clean_acc"]

    def entry(self, attack, targeted, eps_label, eps):
        """A setting's entry before it is computed: what it computes (its `identity`), and how
        this command writes its eps."""
        args = self.args
        plan = schedule(attack, eps, self.protocol, args.steps, args.step_size, args.restarts)
        return {"protocol": self.protocol, "attack": attack, "objective": args.objective,
                "targeted": targeted, "eps": eps,
                "eps_label": eps_label, "steps": plan.steps, "step_size": plan.step_size,
                "restarts": plan.restarts, "num_images": self.n, "seed": args.seed, "amp": args.amp,
                "dtype": self.dtype, "images_sha256": self.images_sha} | (
                    {} if self.source is None else {"source": self.source.record})

    def stoppable(self, entry):
        """Whether a stop signal ends `entry`'s attack at once, its work lost, rather than letting
        it end and be saved (`preempt.may_finish`), as train.py does with an epoch. Settings differ
        in cost (FGSM's one step, PGD's ten, each restart again; eps 0 attacks nothing), so the time
        it may take is that of the last setting this job computed of the same attack, mode, steps
        and restarts, eps over 0, times its restarts (that one may have needed only the first);
        without such a setting it is not known, and the signal stops the attack at once."""
        from utils import preempt
        plan = ("attack", "objective", "targeted", "steps", "restarts")
        seconds = [e["seconds"] for e in self.entries[self.kept:]
                   if e["eps"] > 0 and all(e.get(k) == entry.get(k) for k in plan)]
        return not preempt.may_finish(seconds[-1] * entry["restarts"] if seconds else None)

    def compute(self, entry, progress):
        """`entry` with its numbers, computed now and written to attack_results.json at once; a
        signal during the attack ends the job, to be requeued, at once where it is `stoppable`,
        else once the entry is written (the loop in `run`)."""
        from utils import preempt
        from utils.runs import provenance, write_json
        stop = preempt.requested if self.stoppable(entry) else None
        # a transfer's images are crafted against the source, and this run's model judges them
        crafted, judge = ((self.model, self.space), None) if self.source is None else (
            (self.source.model, self.source.space), (self.model, self.space))
        result = run_setting(*crafted, self.images, self.labels, self.targets, entry, self.args,
                             shared=self.shared, stop=stop, judge=judge)
        if result is None:
            progress.close()
            preempt.exit_for_requeue(self.stopped(f" by signal during {setting_name(entry)}"))
        entry |= {k: result[k] for k in ("clean_acc", "robust_acc", "attacked", "class_images", "class_robust",
                                         "images_per_s", "seconds")}
        # what its images/s were measured on (--channels_last, which changes them, not the numbers
        # beyond float rounding, is no part of its identity), and the code that computed it: a
        # file's entries may come from several runs, its `environment` is the last one's
        entry |= {"device": self.device.type, "batch_size": self.args.batch_size,
                  "channels_last": self.args.channels_last, "computed_by": provenance(self.env)}
        if entry["targeted"]:
            entry["target_success"] = result["target_success"]
        self.entries.append(entry)
        self.done[identity(entry)] = entry
        write_json(self.path, self.document(entry["clean_acc"]))
        # the figure, drawn after the last setting, is of these results: a run that fails
        # before it (a full disk) or is stopped leaves none, which the next run draws
        if self.args.examples > 0:
            self.png.unlink(missing_ok=True)
        return entry

    def saved(self):
        """How many of the settings asked its file holds, which a rerun reuses: this job's and an
        earlier run's."""
        return sum(identity(self.entry(*setting)) in self.done for setting in self.settings)

    def to_compute(self):
        """Whether this job computes a setting, or writes attack_results.json for want of one."""
        return not self.path.exists() or self.dropped or self.saved() < len(self.settings)

    def to_draw(self, computed, redraw):
        """Whether this job draws attack_examples.png: asked (--examples above 0), and it computed a
        setting (`computed`), --examples was given (`redraw`), or the figure is missing."""
        return self.args.examples > 0 and (computed or redraw or not self.png.exists())

    def check_writable(self, redraw, elsewhere):
        """Before any attack: where this job will write in its run folder (a setting to compute, the
        figure to draw), a folder that refuses writes (a read-only archive of finished runs, another
        user's) is a UsageError naming it and what to do, not an error after the attacks' or the
        figure's work (the figure alone attacks up to 4 x --examples images once more)."""
        from utils.atomic import check_writable
        from utils.errors import REFUSED_ERRORS, os_error_text
        computed = self.to_compute()
        if not self.to_draw(computed, redraw) and not computed:
            return
        try:
            check_writable(self.path)
        except OSError as err:
            if err.errno not in REFUSED_ERRORS:
                raise
            only_figure = "" if computed else (
                f"its {self.path.name} holds every setting asked: pass --examples 0 to read them "
                f"without drawing {self.png.name}, or ")
            raise UsageError(f"{os_error_text(OSError(err.errno, err.strerror, str(self.run_dir)))}; nothing "
                             f"attacked: {only_figure}{elsewhere}") from None

    def document(self, clean_acc):
        """attack_results.json: the run, its checkpoint, the flags, the class names (the entries' per-class
        counts are by class id) and every entry, earlier runs' too."""
        from utils.runs import resolved_folders
        args = self.args
        return {"run_dir": str(self.run_dir), "checkpoint": str(self.checkpoint), **self.record,
                "model": args.model, "label": args.label, "dataset": args.dataset, "num_images": self.n,
                "classes": self.class_names, "clean_acc": clean_acc, "entries": self.entries,
                "config": vars(args) | resolved_folders(args) | {"epsilons": [
                    label for label, _ in self.epsilons], "attacks": self.attacks, "protocol": self.protocol},
                "environment": self.env}

    def stopped(self, how):
        """What a job stopped in its loop (by Ctrl-C or a signal) keeps, as its last message: the
        settings `saved` (a requeued job stopped while reusing had said 1 of 80)."""
        count = self.saved()
        kept = (f"{count} finished setting{'s are' if count != 1 else ' is'} kept in {self.path}"
                if count else "no setting had finished")
        return f"{self.run_dir}: stopped{how}; {kept}, rerun to continue"

    def finish(self):
        """Writes attack_results.json once more where this job computed a setting or found no
        file; returns whether it did."""
        from utils.runs import write_json
        computed = len(self.entries) > self.kept or self.dropped or not self.path.exists()
        if computed:  # else nothing to write: a read-only archive of finished runs can be reread
            write_json(self.path, self.document(self.clean_acc))
        return computed

    def summary(self):
        """attack.py's JSON line: robust accuracy (and target success) per setting of this job."""
        current = self.current
        return {"run_dir": str(self.run_dir), "results": str(self.path), "protocol": self.protocol,
                **({} if self.source is None else {"source": self.source.record}),
                "num_images": self.n, "clean_acc": self.clean_acc,
                "robust_acc": {setting_key(e): e["robust_acc"] for e in current},
                "target_success": {setting_key(e): e["target_success"] for e in current if e["targeted"]}}

    def draw_examples(self):
        """attack_examples.png of this job's settings (`save_examples`)."""
        with interrupt_says(lambda: self.stopped(f" while drawing {self.png.name}")):
            save_examples(self.png, self.model, self.space, self.images, self.labels, self.targets,
                          self.class_names, self.current, self.args)


def run(args, argv=None):
    """Attack as the flags say; returns the summary. `argv`: the command line attack_results.json
    records (`utils.runs.command_line`; sys.argv when None)."""
    from utils import preempt
    from utils.progress import Progress
    from utils.runs import run_lock_before_loading, with_resolved_folders
    from utils.training import keep_freed_memory, resolve_device, warn_slow_bf16

    # a copy, each value as the command line reads it (a notebook's batch_size 0 was a traceback,
    # num_images 0 robust accuracy 0 of no image), its folders as messages name them (unset: the
    # run's, which the steps below fill in): a notebook's namespace reused for another run kept the
    # first run's folders, checkpoint and examples
    args = with_resolved_folders(as_parsed(build_parser(), args))
    requested = requested_settings(args)  # (protocol, attacks, epsilons, targeted modes)
    warn_ignored(args, requested[1])
    for line in repeated_settings(args):
        log(line)
    redraw = args.examples is not None  # asked for: a figure of every setting reused is drawn again
    if args.transfer_from and args.examples:  # the run's figure is of white-box attacks
        raise UsageError(f"--transfer_from draws no attack_examples.png (the run's figure shows its "
                         f"white-box attacks); leave out --examples {args.examples}")
    args.examples = (0 if args.transfer_from else EXAMPLES) if args.examples is None else args.examples
    device = resolve_device(args.device)
    keep_freed_memory(device)
    warn_slow_bf16(device, args.amp)

    path, run_dir = find_checkpoint(args)
    elsewhere = ("attack a copy of the checkpoint in a folder of its own" if args.checkpoint
                 else "use another --base_dir")
    # a run folder that takes no writes: the same copy, where this job may write
    copy = elsewhere if args.checkpoint else "copy the run directory into another --base_dir and attack it there"
    # one job at a time in a run directory; one there now refuses this one before the loads
    with run_lock_before_loading(run_dir, elsewhere=elsewhere) as lock:
        # bad input ends here, before a folder without a lock file (a checkpoint's copy) is locked;
        # the checkpoint is read once: its weights and `record` (sha256, ...) are of the same bytes
        model, space, data, record, loaded = load_run(args, path)
        source = load_source(args, data, record, model) if args.transfer_from else None
        lock()
        check_finished(run_dir)
        # the weights of the file as it is now, which no other job changes while this one holds the
        # lock: one written since the load (a copy over it by hand; a train.py's final best
        # checkpoint on a file system without locks) had this job attack other weights than the file's
        if version(path) != loaded:
            model, space, record = reload(args, path, data)
        job = Job(args, argv, requested, device, run_dir, path, record, model, space, data, source)
        job.check_writable(redraw, copy)
        log(stamped(job.start_line()))  # a log file (a cluster job's) says at once what is attacked, on what
        total = len(job.settings)
        # a signal the loop did not act on reaches the handler of a caller of main(argv) (a
        # notebook's) once the job's files, the figure too, are written
        with preempt.catching():
            with Progress(total, f"{args.model} {args.label} attacks", "setting") as progress, \
                    interrupt_says(lambda: job.stopped("")):
                for index, setting in enumerate(job.settings, 1):
                    # a log's lines say how far along, as the bar does
                    job.attack(setting, progress, place=f"[{index}/{total}] ")
                    # after the last setting every entry is saved and the figure alone is left (a
                    # second or two): the job ends as usual, as train.py does after its last epoch
                    if preempt.requested() and index < total:
                        progress.close()
                        preempt.exit_for_requeue(job.stopped(" by signal"))
            computed = job.finish()
            summary = job.summary()
            if job.to_draw(computed, redraw):
                job.draw_examples()
        if args.examples > 0:
            summary["examples"] = str(job.png)
        return summary


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if os.environ.get("WORLD_SIZE", "1") != "1":  # torchrun's processes would each attack the whole run
        raise EveryProcessError("attack.py runs in one process: start it with python, not torchrun")
    from utils.atomic import print_json
    from utils.runs import command_line
    with os_errors_as_usage():
        summary = run(args, command_line(parser.prog, argv))
    print_json(summary)
    return summary


if __name__ == "__main__":
    run_cli(main, memory=MEMORY)
