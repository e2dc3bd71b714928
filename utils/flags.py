"""The flags train.py and attack.py share, declared once so that their defaults and checks cannot
drift apart: where a run's directory is and what it trained on, and how the work executes.

    add_flags(group, "dataset", "seed", seed={"help": "what the seed means in this script"})
"""
import argparse
import ast
import importlib.util
import json
import shlex
import sys
from fractions import Fraction
from pathlib import Path

from utils.constants import DATASETS, check_components, check_rate_scale, check_smoothing
from utils.errors import UsageError, file_name_text, nonempty, number
from utils.runs import NOISY

REPO = Path(__file__).resolve().parents[1]


def _named_exactly(value, text, name):
    """`value`, unless the run directory's name that holds it ({name}{value:g}) drops its digits,
    and so would be another value's too."""
    if float(f"{value:g}") != value:
        raise argparse.ArgumentTypeError(f"{text} has more digits than a run directory's name keeps "
                                         f"({name}{value:g}); give at most 6 significant digits")
    return value


def level(text):
    """--level as a number in (0, 100]: an int when whole, so that a run directory reads level8,
    not level8.0."""
    value = _named_exactly(number(float, maximum=100)(text), text, "level")
    return int(value) if value.is_integer() else value


def noise_rate(text):
    """--label_noise as a number in [0, 1], that its run directory, model_{label}_noise{R}, names."""
    return _named_exactly(number(float, 0, inclusive=True, maximum=1)(text), text, "model_{label}_noise")


def smoothing(text):
    """--smoothing as a number >= 0 (its most, (C - 1) / C, depends on the dataset), that the run
    directory of a category run, model_category_smooth{S}, names."""
    return _named_exactly(number(float, 0, inclusive=True)(text), text, "model_category_smooth")


def label_name(text):
    """--label as given, less a .npy ending (speech.npy is label speech: its file is
    {dataset}_speech.npy, its run directory model_speech), unless its run directory,
    model_{label}, would be another run's (a --label_noise run's model_{label}_noise{R}) or a
    folder that report.py does not read, or it starts with '-' (--label=-x alone reads it)."""
    given, text = text, file_name_text(text).removesuffix(".npy")
    if not text or "/" in text:
        raise argparse.ArgumentTypeError(f"{given!r} is not a label name: it names the label file "
                                         "{dataset}_NAME.npy and the run directory model_NAME, so "
                                         "it must be non-empty and hold no /" + _label_of_file(given))
    if NOISY.match(text):
        raise argparse.ArgumentTypeError(f"{text} ends like the run directory of a --label_noise "
                                         f"run (model_{{label}}_noise{{R}}), so its runs would be "
                                         "reported as a noisy label's; rename the label file")
    if text.startswith("-"):  # a sweep's `--label -x`, and every hint that names --label, was a flag
        raise argparse.ArgumentTypeError(f"{text} starts with '-', which a command line takes for a flag "
                                         f"(--label {text}: 'expected one argument'); rename the label file")
    if text.startswith("category_smooth"):  # the paper's name for them, model_category_smooth{S}
        raise argparse.ArgumentTypeError(f"{text} names the runs of --label category --smoothing S; "
                                         "pass those flags (or rename the label file)")
    return text


def _label_of_file(path):
    """For a label file's path given as a label ('labels/mine/cifar10_speech.npy', a researcher's
    likely first try): '; that file is label speech with --label_dir labels/mine', which `label_name`'s
    error adds; '' for a path that names no {dataset}_NAME.npy."""
    file = Path(path)
    dataset = next((d for d in DATASETS if file.name.startswith(f"{d}_")), None)
    name = file.name.removesuffix(".npy")[len(dataset or "") + 1:]
    if dataset is None or not file.name.endswith(".npy") or not name:
        return ""
    return f"; that file is label {name} with --label_dir {file.parent}"


SHARED = {
    "model": {"default": "resnet32", "help": "network"},  # choices: architecture_names() in add_flags
    "dataset": {"default": "cifar10", "choices": sorted(DATASETS), "help": "dataset"},
    "label_granularity": {"default": "fine", "choices": ("fine", "coarse"),
                          "help": "CIFAR-100 labels: the 100 fine classes or the 20 superclasses"},
    "seed": {"type": number(int, 0, inclusive=True, maximum=2**32 - 1), "default": 0,
             "help": "seed"},  # numpy's seeds, which split the data, end at 2**32 - 1
    "valid_size": {"type": number(int, 0, inclusive=True), "default": 5000,
                   "help": "validation images taken first from the seeded permutation (0: none; the "
                   "last epoch is then the best)"},
    "level": {"type": level, "default": 100, "help": "percent of the whole training set, validation "
              "images included, to train on (100: every image left after validation; at least one image "
              "per class); runs of one --seed and --valid_size train on the same images, whatever their label"},
    "smoothing": {"type": smoothing, "default": 0.0,
                  "help": "label smoothing for --label category, as the paper's: the true class keeps "
                  "1 - S, every other class gets S / (C - 1); its runs are model_category_smooth{S}"},
    "label_noise": {"type": noise_rate, "default": 0.0,
                    "help": "fraction of the training labels "
                    "replaced by a random other class (seeded; validation and test stay clean)"},
    "data_dir": {"type": nonempty, "default": "./data",
                 "help": "folder holding cifar-10-batches-py / cifar-100-python"},
    "label_dir": {"type": nonempty, "default": str(REPO / "labels" / "label_files"),
                  "help": "folder of {dataset}_{label}.npy files"},
    "base_dir": {"type": nonempty, "default": "./outputs", "help": "root of the run directories"},
    "device": {"default": "auto", "choices": ("auto", "cpu", "cuda"),
               "help": "device (auto: cuda where torch sees one, else cpu)"},
    "amp": {"action": "store_true", "help": "bf16 autocast (losses stay float32); on a CPU without "
            "native bf16 it is emulated, many times slower (a warning says so)"},
    "channels_last": {"action": "store_true",
                      "help": "channels-last memory format (faster on CPUs; same results up to rounding)"},
}


# Flags that change what a run computes: a resumed run must agree with its checkpoint on these. Here,
# with `run_changes`, without torch: sweep.py and report.py compare every run's flags by them.
RESULT_FLAGS = ("model", "dataset", "label", "seed", "level", "epochs", "batch_size", "lr",
                "warmup_epochs", "valid_size", "smoothing", "label_granularity", "label_noise", "amp",
                "channels_last", "feature_dim", "mcr2_eps", "gam1", "gam2", "n_components")

# RESULT_FLAGS that labelrep added after runs had been made without them (--warmup_epochs in
# ae81f9b), with the value such a run trained with (train.py's default, which trains as before the
# flag): a saved config of an older labelrep, which lacks the flag, is compared as having it, so
# that a run from before ae81f9b asked for --warmup_epochs 5 is refused, not passed off as a
# warm-up run.
ADDED_FLAGS = {"warmup_epochs": 0}

# train.py's flags that only one label type uses: given with another, they are ignored (with a
# warning), and a run's check of its saved flags leaves them out, so that a sweep over several
# labels can pass them to all.
LABEL_ONLY = {"smoothing": "category", "feature_dim": "mcr2", "mcr2_eps": "mcr2", "gam1": "mcr2",
              "gam2": "mcr2", "n_components": "mcr2"}


def trained_folder(flags, name):
    """The --data_dir or --label_dir (`name`) a run trained with, as its config's `flags` record it
    (an older run's relative to the folder train.py ran in); the default for a run without one.
    attack.py reads a run's data and targets there when the flag is not given."""
    own = flags.get(name)
    return own if isinstance(own, str) else SHARED[name]["default"]


def check_force_resume(args):
    """train.py's --force with --resume (in its parsed flags `args`) is a UsageError: --force won
    silently, and the work --resume was to keep went. run_training and bench.py's --train_flags
    (which refuses before its first row) both check by this."""
    if args.force and args.resume:
        raise UsageError("--force starts the run over, deleting its checkpoints, and --resume continues "
                         "it from its last checkpoint: pass one of them")


def ignored_lines(flags, owners, chosen, option="label"):
    """The warnings for `flags` (names without --) given where they act on nothing: a flag of
    `owners` acts only with its --`option` value (LABEL_ONLY's) or values, none of them among
    `chosen`; one line per owner, in the order of `flags`. train.py's and attack.py's label flags,
    attack.py's attack flags (--restarts with fgsm alone), labels.generate's family options."""
    by_owner = {}
    for flag in flags:
        owner = (owners[flag],) if isinstance(owners.get(flag), str) else owners.get(flag, chosen)
        if not set(owner) & set(chosen):
            by_owner.setdefault(tuple(owner), []).append(f"--{flag}")
    return [f"warning: {', '.join(given)} only act{'s' if len(given) == 1 else ''} with --{option} "
            f"{' or '.join(owner)}; ignored for --{option} {' '.join(chosen)}"
            for owner, given in by_owner.items()]


def acts_on(flag, label):
    """Whether train.py's flag `flag` (a name without --) changes a run of `label`."""
    return LABEL_ONLY.get(flag, label) == label


def check_label_flags(args, num_classes):
    """train.py's refusals of its flags `args` that need neither the data nor a label file, for a
    dataset of `num_classes` classes (`dataset_info`'s): --smoothing beyond its most for those
    classes, --n_components not below --feature_dim, an MCR2 loss float32 cannot compute (each
    where it acts, `acts_on`); a UsageError.
    The checks are those train.py's label spaces make (`CategorySpace`, `MCR2Space`); sweep.py makes
    them before it queues a run (`utils.grid.check_runs_to_train`), so that no run of a grid is
    queued to fail on them."""
    if acts_on("smoothing", args.label):
        check_smoothing(args.smoothing, num_classes)
    if acts_on("n_components", args.label):
        check_components(args.n_components, args.feature_dim)
        check_rate_scale(args.feature_dim, args.mcr2_eps, args.gam1)


# labelrep's commits from 21d7ed3 to 754614a, which fixed it: their --amp training never let the
# optimiser's updates reach a training forward (torch's autocast cache, kept for the whole run), so
# an --amp run they started or resumed did not learn as its flags say (a 2-epoch category run:
# train_acc 7.6% against 34.4%). A researcher's own runs of those commits are refused, not reused.
AMP_BROKEN_COMMITS = frozenset((
    "21d7ed365aeef69b7ac038214d6a48a883faf9b5", "7a9210d08a7997a43cd2a453cb272aede7e413c6",
    "c32c1f566fe57d65b548c087986ea5b88b8c903f", "e3ce3a605c62eacc0aad940aaa4e5778ca94b882",
    "5aa40e18ac7d0522b447d24f44950f63205e089f", "61f97be11d0d4f671a4f938842b8c79145f66908",
    "a7f6447f274a4dbc05802b520d5f36b34a0f02bc", "1513fcd2503b558e767162bd8bfb6531c899c484",
    "505e9afcac5f002fb9eba347259b96b753834a8d", "a2479fe644fe4170c6ac065b231d60f5dbe8c16d",
    "932d161134bfa860bd01c6dc4bb8911699c3f7f6", "6b92b84b02dd7f21040b57b689f1869d67285d9e",
    "01d393a8d6eaa150002b7f0cce889044f8016cca"))


def broken_training(config):
    """Why the run a saved `config` (config.json's, or a checkpoint's) describes trained otherwise
    than its flags say, whatever is asked now: '--amp by labelrep 01d393a, ...' where its start or
    a resume ran --amp on one of AMP_BROKEN_COMMITS (as config.json's environment and segments
    record the checkout's commit); else None."""
    config = config if isinstance(config, dict) else {}
    flags, segments = config.get("flags"), config.get("segments")
    if not isinstance(flags, dict) or flags.get("amp") is not True:
        return None
    for start in [config] + (segments if isinstance(segments, list) else []):
        if (commit := json_get(start, "environment", "git", "commit")) in AMP_BROKEN_COMMITS:
            return (f"--amp by labelrep {commit[:7]}, whose --amp training never applied the optimiser's "
                    "updates to its forward passes (fixed in 754614a)")
    return None


def json_get(value, *keys):
    """value[k1][k2]... of parsed JSON, or None where a level is missing or not a dict."""
    for key in keys:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def _shown(value):
    """A flag's value as a command line gives it: on/off for a switch, 1 for 1.0, every digit where
    fewer would show two values alike (0.30000000000000004, not 0.3)."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        short = f"{value:g}"
        return short if float(short) == value else repr(value)
    return str(value)


def run_changes(config, args, label_sha256, now="now", data=None):
    """What a run with this saved `config` trained otherwise than `args` asks: '--flag saved
    (now value)' for every RESULT_FLAGS flag it set otherwise (a flag None in `args` is picked
    later, e.g. --lr by label type; one of another label type's, e.g. --smoothing for speech,
    acts on nothing), other label targets, if it recorded their `label_sha256` and
    `label_sha256` (the targets asked for now) differs, and, with `data` (`data_facts` now),
    another number of training images (but where another --valid_size or --level, named, sets it)
    or other images and labels; and `broken_training`'s reason, where it has one."""
    differ = _differences(config, args, label_sha256, data)
    saved = differ["flags"]
    changes = [f"--{k} {_shown(saved[k])} ({now} {_shown(getattr(args, k))})" for k in saved]
    if broken := broken_training(config):
        changes.append(broken)
    if differ["labels"]:
        changes.append(f"other {args.label} targets than {args.label_dir} holds")
    if differ["images"]:
        changes.append(images_change(*differ["images"], now, differ["rounding"]))
    elif differ["data"]:
        changes.append(f"other images or labels than {args.data_dir} holds (another copy of "
                       f"{args.dataset}?)")
    return changes


def _differences(config, args, label_sha256, data):
    """What `run_changes` names, as facts: "flags", {flag: saved value} of the RESULT_FLAGS set
    otherwise; "labels", whether the label targets differ; "images", (saved, now) where the number
    of training images differs for no flag's reason, and "rounding", `older_rounding`'s reason for
    it or None; "data", whether the images or labels differ."""
    saved = config.get("flags")
    saved = saved if isinstance(saved, dict) else {}  # none recorded (null in an edited config.json)
    asked = {k: getattr(args, k, None) for k in RESULT_FLAGS
             if acts_on(k, args.label)}
    flags = {k: saved[k] for k, v in asked.items() if v is not None and k in saved and saved[k] != v}
    data = data or {}
    train_images = data.get("train_images")
    saved_images = config.get("train_images", train_images)
    other_data = bool(config.get("data_sha256")) and data.get("data_sha256") not in (None, config["data_sha256"])
    counted_otherwise = train_images is not None and saved_images != train_images
    images = rounding = None
    if counted_otherwise and not {"valid_size", "level"} & set(flags):  # else the count is theirs, not the data's
        images = saved_images, train_images
        level = saved.get("level", getattr(args, "level", None))
        rounding = not other_data and older_rounding(level, saved_images, train_images) or None
    return {"flags": flags, "labels": bool(config.get("label_sha256") and label_sha256
                                          and config["label_sha256"] != label_sha256),
            "images": images, "rounding": rounding, "data": other_data and not counted_otherwise}


def resume_flags(config, args, label_sha256, data):
    """What resumes the run whose saved `config` (a checkpoint's) `run_changes` finds otherwise
    than `args` asks: 'with --epochs 2 --batch_size 64 and without --amp', the values it trained
    with of the flags that differ, and of --label_dir or --data_dir where its label targets or data
    differ and it read them from another folder; None where no flags do (the same folder's files
    differ, or an older labelrep's rounding of --level counted its images)."""
    differ = _differences(config, args, label_sha256, data)
    if differ["rounding"]:
        return None
    flags, recorded = dict(differ["flags"]), config.get("flags") or {}
    for flag, other in (("label_dir", differ["labels"]), ("data_dir", differ["data"] or differ["images"])):
        if other:
            if recorded.get(flag) in (None, getattr(args, flag)):
                return None
            flags[flag] = recorded[flag]
    given = [f"--{k}" + ("" if v is True else f" {shlex.quote(_shown(v))}") for k, v in flags.items() if v is not False]
    dropped = [f"--{k}" for k, v in flags.items() if v is False]  # a switch it trained without
    return " and ".join(f"{word} {' '.join(part)}" for word, part in (("with", given), ("without", dropped)) if part)


def _kind(value):
    """What kind of JSON value `value` (parsed) is, as a message says it: 'a number', 'text', ..."""
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, (int, float)):
        return "a number"
    return {str: "text", list: "a list", dict: "an object"}.get(type(value), "null")


def mistyped(source, config, args, label_sha256=None, data=None):
    """Why train.py refuses a finished run whose saved `config` (`recorded_config`'s, read from the
    file `source`) records another kind of JSON value than what `args`, `label_sha256` and `data`
    (`run_changes`') ask now, and train.py writes: '{source} records epochs "1" (text, not a
    number), which train.py never writes (edited by hand?); ...'; else None. A file edited by hand:
    compared as a change, the text "1" read '--epochs 1 (now 1)', with the advice to --force a run
    over (a sweep's, to delete it)."""
    saved = config.get("flags") if isinstance(config.get("flags"), dict) else {}
    pairs = [(k, saved[k], getattr(args, k, None)) for k in RESULT_FLAGS if k in saved and acts_on(k, args.label)]
    pairs += [(k, config[k], now) for k, now in (("label_sha256", label_sha256), *(data or {}).items())
              if k in config]
    if odd := [f"{k} {json.dumps(value)} ({_kind(value)}, not {_kind(now)})" for k, value, now in pairs
               if now is not None and _kind(value) != _kind(now)]:
        return (f"{source} records {', '.join(odd)}, which train.py never writes (edited by hand?); put "
                "back the values the run trained with")
    return None


def images_change(saved, count, now, why=None):
    """'322 training images (now 323: WHY)': a run trained on `saved` images where `count` is
    asked `now` ('now', 'the grid:', 'the other seeds:'), for the reason `why` (`older_rounding`'s;
    'another --data_dir?' where there is none)."""
    return f"{saved} training images ({now} {count}: {why or 'another --data_dir?'})"


def older_rounding(level, saved, count):
    """Why a run of a fractional --level `level` trained on `saved` images where its flags take
    `count` of the same data now, where a labelrep before 1570041 explains it: its float product
    N * level / 100 fell just below the whole number `count`, the exact share of N images, and was
    rounded down to `saved` (0.29% of 50000: 144, not 145); else None."""
    if not isinstance(level, (int, float)) or isinstance(level, bool) or float(level).is_integer() \
            or not isinstance(saved, int) or not isinstance(count, int):
        return None
    num_images = count * 100 / Fraction(str(level))  # the only N whose exact share the floats missed
    if num_images.denominator != 1 or int(num_images.numerator * level / 100) != saved:
        return None
    return (f"a labelrep before 1570041 rounded --level {_shown(level)} of {num_images} images down to "
            f"{saved}")


def recorded_config(config, results):
    """A finished run's config.json (`config`) as `run_changes` compares it; where the file is gone
    (None: deleted by hand, or not JSON to the sweep), what its results.json (`results`) records:
    the flags that name the run, --epochs and the number of training images (not --lr,
    --batch_size or the label targets), so that a check is not skipped for want of the file. A
    config.json of an older labelrep counts with the ADDED_FLAGS it lacks (`with_added_flags`)."""
    if config is not None:
        return with_added_flags(config)
    if not isinstance(results, dict):
        return config
    kept = {k: results[k] for k in RESULT_FLAGS if k in results}
    return {"flags": kept} | ({"train_images": results["train_images"]} if "train_images" in results else {})


def with_added_flags(config):
    """A run's saved `config` (config.json's or a checkpoint's, parsed) with each of the ADDED_FLAGS
    its flags lack set to what the run trained with; `config` itself where it records no flags."""
    flags = config.get("flags") if isinstance(config, dict) else None
    return config | {"flags": ADDED_FLAGS | flags} if isinstance(flags, dict) else config


def architecture_names():
    """The names of architecture.py's ARCHITECTURES, in its order, now: a network a notebook adds
    there is then a --model of the next train.main or attack.main. Where that module is not loaded
    yet (a command line's --help or typo), they are read from its file, not run (it imports torch,
    seconds), when the file assigns the registry one dict of names and changes it nowhere else."""
    spec = None if "architecture" in sys.modules else importlib.util.find_spec("architecture")
    if spec and spec.origin and (names := _dict_keys(Path(spec.origin).read_bytes(), "ARCHITECTURES")):
        return names
    from architecture import ARCHITECTURES
    return list(ARCHITECTURES)


def _dict_keys(source, name):
    """The keys of `name = {"key": ..., ...}` at the top level of Python `source`, or None where
    `name` is built otherwise, or bound, set, deleted or has a method called anywhere else."""
    tree = ast.parse(source)
    defined = [s for s in tree.body if isinstance(s, ast.Assign) and len(s.targets) == 1
               and isinstance(s.targets[0], ast.Name) and s.targets[0].id == name]
    if len(defined) != 1 or not isinstance(defined[0].value, ast.Dict):
        return None
    keys = defined[0].value.keys  # None for a **mapping
    if not all(isinstance(k, ast.Constant) and isinstance(k.value, str) for k in keys):
        return None
    for node in ast.walk(tree):  # each other use of `name` (its child) must be a read of its items
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Name) and child.id == name and child is not defined[0].targets[0] and (
                    not isinstance(child.ctx, ast.Load) or isinstance(node, ast.Attribute)
                    or isinstance(node, ast.Subscript) and not isinstance(node.ctx, ast.Load)):
                return None
    return [k.value for k in keys]


def add_flags(group, *names, **changes):
    """Declare the shared flags `names` in an argparse group, in that order; `changes` maps a
    flag's name to the settings this script changes (a help that says what it means here).
    --model's choices are `architecture_names()` now, not at import."""
    for name in names:
        choices = {"choices": sorted(architecture_names())} if name == "model" else {}
        group.add_argument(f"--{name}", **(SHARED[name] | choices | changes.get(name, {})))
