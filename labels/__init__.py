"""Label representations: every family the paper and its follow-up used, their statistics, and
the shipped label files.

    python -m labels.generate --dataset cifar10 --label speech --out labels/label_files
    python -m labels.generate --dataset cifar10 cifar100 --label all --force
    python -m labels.stats labels/label_files/cifar10_*.npy

A label file is `{dataset}_{name}.npy`: float32 targets of shape (C, *shape), row i the target of
class i. `load_label` reads a shipped (or any) file; `labels.generate` makes them (`FAMILIES`,
`make_label`); `labels.stats` measures them. This module imports numpy only, so training code can
use it without the audio and text dependencies of the generators.
"""

import hashlib
import re
from pathlib import Path

import numpy as np

from utils.constants import DATASETS
from utils.errors import UsageError, did_you_mean, log

LABEL_DIR = Path(__file__).resolve().parent / "label_files"


class LabelError(UsageError, ValueError):
    """Bad input to a label generator or loader; the command-line tools print it as one line."""


def label_path(dataset, name, label_dir=LABEL_DIR):
    """Path of the label file for `dataset` (e.g. "cifar10") and label `name` (e.g. "speech")."""
    return Path(label_dir) / f"{dataset}_{name}.npy"


def available_labels(dataset, label_dir=LABEL_DIR):
    """The label names that have a file for `dataset` in `label_dir`, sorted with numbers by value
    (normal_dim=2 before normal_dim=10)."""
    prefix = f"{dataset}_"
    names = [p.name[len(prefix):-len(".npy")] for p in Path(label_dir).glob(f"{prefix}*.npy") if p.is_file()]
    # re.split keeps text at even places and the digits at odd ones: like compared with like
    return sorted(names, key=lambda n: [int(t) if i % 2 else t for i, t in enumerate(re.split(r"(\d+)", n))])


def targets_sha256(targets):
    """sha256 of class targets as float32, their shape included (config.json's label_sha256):
    tells whether two runs regressed the same targets without keeping the targets."""
    array = np.ascontiguousarray(np.asarray(targets, dtype=np.float32))
    return hashlib.sha256(repr(array.shape).encode() + array.tobytes()).hexdigest()


def read_targets(path, num_classes=None, fix=None, dataset=None, dataset_flag="--dataset"):
    """Load and check a label file (see `check_targets`); C == num_classes when given. Raises
    LabelError with a one-line reason otherwise."""
    path = Path(path)
    if path.is_symlink() and not path.exists():  # ls lists it: "No such file or directory" read as a typo
        raise LabelError(f"label file {path} is a broken symbolic link (to {path.readlink()})")
    if path.exists() and not path.is_file():  # a folder, or a FIFO that np.load would wait on forever
        raise LabelError(f"label file {path} is not a regular file")
    try:
        # allow_pickle=False: a label file is plain numbers, never code.
        targets = np.load(path, allow_pickle=False)
    except ValueError as err:
        with open(path, "rb") as f:
            if f.read(6) != b"\x93NUMPY":
                raise LabelError(f"label file {path} is not a .npy file (no NumPy header); save "
                                 "one with numpy.save") from None
        if "allow_pickle" in str(err):
            raise LabelError(f"label file {path} holds pickled objects; a label file must be a "
                             "numeric array") from None
        raise LabelError(f"label file {path} is not a readable .npy file ({err})") from None
    except (OSError, EOFError) as err:  # an OSError's text names the path again: its reason alone
        raise LabelError(f"label file {path} is not a readable .npy file "
                         f"({getattr(err, 'strerror', None) or err})") from None
    except MemoryError:  # a header whose shape is far larger than the file
        raise LabelError(f"label file {path} is corrupt: its header asks for more memory than "
                         "this machine has") from None
    if isinstance(targets, np.lib.npyio.NpzFile):  # np.load reads an archive whatever its name
        names = ", ".join(targets.files) or "none"
        # torch.save writes a zip archive too, its tensors pickled in data.pkl
        torch_file = any(name.endswith("/data.pkl") for name in targets.files)
        targets.close()
        if torch_file:
            raise LabelError(f"label file {path} is a torch.save file, not a .npy array; save the "
                             "targets with numpy.save (a tensor's .numpy())") from None
        raise LabelError(f"label file {path} is a .npz archive (arrays: {names}), not a .npy array; "
                         "save the targets with numpy.save") from None
    return check_targets(targets, f"label file {path}", num_classes, fix, dataset, dataset_flag)


def granularity_fix(dataset, granularity, *labels):
    """How to get the label files of a coarse run (a file shares the fine one's name, so a fine one
    found there says what to do): labels.generate's command for the names it makes, how to save
    one's own for the others; None for the fine labels."""
    if granularity == "fine":
        return None
    made = [name for name in labels if _generated(name)]
    own = [str(label_path(dataset, name, "DIR")) for name in labels if name not in made]
    fixes = ([f"make {'one' if len(made) == 1 else 'them'} with python -m labels.generate --dataset "
              f"{dataset} --label_granularity {granularity} --label {' '.join(made)} --out DIR"]
             if made else [])
    fixes += ([f"save one target per {granularity} class as {' and '.join(own)} (labels/README.md, "
               "'A label of your own')"] if own else [])
    files = "a file" if len(labels) == 1 else "files"
    return (f"a --label_granularity {granularity} run needs {files} of its own: "
            f"{'; '.join(fixes)}, then pass --label_dir DIR")


def _canonical(name):
    """The name labels.generate writes label `name` under (normal_dim=7; "uniform_gap=2.0" ->
    "uniform_gap=2"), None for a name it does not make."""
    from labels.generate import parse_label  # here: it imports this module (its own imports are light)
    try:
        return parse_label(name)[0]
    except LabelError:
        return None


def _generated(name):
    """Whether labels.generate makes label `name` (speech, bert, normal_dim=7, ...)."""
    return _canonical(name) is not None


def count_switch(dataset, count, num_classes, dataset_flag="--dataset"):
    """How to train on a file of `count` class targets where they are one per class of another
    granularity of `dataset` than a run's of `num_classes` classes (a coarse file given to a fine
    CIFAR-100 run), or of another dataset (a CIFAR-10 file given to a CIFAR-100 run: the dataset or
    the label file is the mix-up); None where they are not. (A coarse run given a fine file is told
    how to make its own: `granularity_fix`.) `dataset_flag`: the flag that picks the dataset in the
    command that runs (sweep.py's --datasets)."""
    if dataset not in DATASETS:
        return None
    for info in DATASETS.values():
        for granularity, size in info.num_classes.items():
            if size != count:
                continue
            classes = f"{info.name} {granularity}" if len(info.num_classes) > 1 else info.name
            if info.name == dataset:
                return (f"{count} targets are one per {classes} class: pass --label_granularity "
                        f"{granularity} to train on those")
            flags = f"{dataset_flag} {info.name}" + (f" --label_granularity {granularity}" * (granularity != "fine"))
            return (f"{count} targets are one per {classes} class: pass {flags} to train on those, "
                    f"or a --label_dir holding {dataset}'s file of {num_classes} targets")
    return None


def make_fix(dataset, name):
    """How to make a missing label file that labels.generate knows (bert, glove, normal_dim=7: not
    shipped); None for a name it does not make (a typo: the labels found say what was meant), or for
    a dataset it has no class names for."""
    if dataset not in DATASETS or not _generated(name):
        return None
    return (f"make it with python -m labels.generate --dataset {dataset} --label {name} --out DIR "
            "(labels/README.md), then pass --label_dir DIR")


def check_targets(targets, source, num_classes=None, fix=None, dataset=None, dataset_flag="--dataset"):
    """Class targets as float32 (C, ...), or LabelError naming `source`: numeric, one target per
    class (C == num_classes when given; `fix` says how to get such a file, else, for C of another
    granularity of `dataset` or of another dataset, `count_switch` how to train on it, naming
    `dataset_flag`), finite in
    float32, classes distinct. (Whether nearest-target decoding tells them apart in float32:
    `decoding_problem`.)"""
    if not isinstance(targets, np.ndarray) or targets.dtype.kind not in "fiu":
        raise LabelError(f"{source} holds {getattr(targets, 'dtype', type(targets))} "
                         "values; a label file must be a numeric array")
    if targets.ndim < 2 or not len(targets):
        one = f" (one number per class: save it as shape ({len(targets)}, 1))" if targets.ndim == 1 else ""
        raise LabelError(f"{source} has shape {targets.shape}; expected [classes, ...] "
                         f"with one target per class{one}")
    if 0 in targets.shape[1:]:
        raise LabelError(f"{source} has shape {targets.shape}; every class target must hold "
                         "at least one value")
    if num_classes is not None and targets.shape[0] != num_classes:
        fix = fix or (dataset and count_switch(dataset, targets.shape[0], num_classes, dataset_flag))
        raise LabelError(f"{source} has {targets.shape[0]} class targets, but the dataset has "
                         f"{num_classes} classes" + (f"; {fix}" if fix else ""))
    if not np.isfinite(targets).all():
        raise LabelError(f"{source} contains NaN or infinite values")
    given = targets
    with np.errstate(over="ignore"):
        targets = np.ascontiguousarray(targets, dtype=np.float32)
    if not np.isfinite(targets).all():
        raise LabelError(f"{source} holds values beyond float32's range (about 3.4e38)")
    flat = targets.reshape(len(targets), -1)
    _, first, inverse = np.unique(flat, axis=0, return_index=True, return_inverse=True)
    if len(first) < len(targets):
        dup = sorted(set(range(len(targets))) - set(first.tolist()))[0]
        twin = int(first[inverse.reshape(-1)[dup]])
        # distinct in the file, equal in float32 (int64 beyond 2**24, float64 1e-8 apart at 1)
        rounded = "" if np.array_equal(given[dup], given[twin]) else (
            " once rounded to float32, the precision it trains in (the file's values differ)")
        raise LabelError(f"{source}: class {dup} has the same target as class {twin}{rounded}, "
                         "so nearest-target decoding cannot tell them apart")
    return targets


def nearest_scores(outputs, center, offsets, sq_norms):
    """(N, C) scores of nearest-target decoding, larger for nearer targets: minus the squared distance
    of each output (N, D) to each class target, up to a term the same for every class. With o and t
    measured from the targets' mean m (center (D,); offsets (C, D), the targets less m; sq_norms (C,),
    their squared norms), ||o - t||^2 = ||o - m||^2 - 2 (o - m).(t - m) + ||t - m||^2. NumPy arrays
    or torch tensors alike: training decodes with torch, a sweep checks label files without it."""
    return 2 * (outputs - center) @ offsets.T - sq_norms[None, :]


def target_distances(targets):
    """(C, C) squared distances between class targets (C, ...), as nearest-target decoding measures
    them, in float64: each target taken as an output, its `nearest_scores` to every target taken back
    from its own squared norm from the mean (the term the scores leave out). Row i ranks the classes
    as the decoder ranks them for an output at target i; the diagonal is 0 up to rounding."""
    flat = np.asarray(targets, dtype=np.float64).reshape(len(targets), -1)
    center = flat.mean(0)
    offsets = flat - center
    sq_norms = np.square(offsets).sum(1)
    return sq_norms[:, None] - nearest_scores(flat, center, offsets, sq_norms)


def bf16_rounded(values):
    """float32 `values` rounded to the nearest bfloat16 (ties to even), as float32: what a model's
    outputs under bf16 autocast can be. In NumPy, which has no bfloat16: the upper 16 bits of each
    float32 kept, rounded on the lower 16."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    # a finite value's bits plus at most 0x8000 stay below 2**32 (the largest round up to inf, as in bf16)
    rounded = (bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))) & np.uint32(0xFFFF0000)
    return rounded.view(np.float32)


def decoding_problem(targets, source, bf16=False):
    """Why nearest-target decoding in float32 cannot serve class targets (C, ...) (`check_targets`'s),
    naming `source`, or None: a class's own target decodes as another class (targets too close
    together, or so large that squared distances overflow), or a class's scores overflow (an inf, or
    NaN from inf - inf, which argmax takes for the largest, can decode each target as its class while
    outputs near them decode to another than the nearest). train.py refuses such targets
    (`utils.labelspace.TargetSpace`), a sweep before any run, labels.stats warns of them.

    `bf16`: whether a class's own target, rounded to bf16 as a model's outputs under --amp are,
    decodes as another class (`bf16_rounded`; 8 significant bits: steps of 4 between 512 and 1024,
    so targets 1000, 1001, ..., 1009 decode as classes 0, 0, 0, 4, 4, 4, 8, 8, 8, 8), where float32
    tells them apart; train.py and attack.py warn of it under --amp."""
    flat = np.asarray(targets, dtype=np.float64).reshape(len(targets), -1)
    center = flat.mean(0)  # distances from the mean: a large offset common to all cancels no difference
    offsets = (flat - center).astype(np.float32)
    outputs = flat.astype(np.float32)
    with np.errstate(all="ignore"):  # an overflow is a finding, not a warning
        scores = nearest_scores(bf16_rounded(outputs) if bf16 else outputs, center.astype(np.float32),
                                offsets, np.square(offsets).sum(1))
    own = scores.argmax(1)
    if wrong := np.flatnonzero(own != np.arange(len(own))).tolist():
        if bf16:
            return (f"{source}: class {wrong[0]}'s own target, rounded to bf16 as the model's outputs are "
                    f"under --amp, decodes as class {own[wrong[0]]}; its targets are too close together "
                    "for bf16's 8 significant bits")
        return (f"{source}: class {wrong[0]}'s own target decodes as class {own[wrong[0]]} in float32; "
                "its targets are too close together or too large (squared distances beyond 3.4e38) for "
                "nearest-target decoding")
    if overflow := np.flatnonzero(~np.isfinite(scores).all(1)).tolist():
        return (f"{source}: its targets are too large for nearest-target decoding in float32 (class "
                f"{overflow[0]}'s scores overflow: squared distances beyond 3.4e38)")
    return None


def _named_otherwise(dataset, name, label_dir):
    """What to do where --label `name` (any .npy ending dropped by `utils.flags.label_name`) is the
    whole name of a file in label_dir, not the NAME of {dataset}_NAME.npy, or a family's name spelt
    otherwise than labels.generate writes it (uniform_gap=2.0): None where it is neither."""
    canonical = _canonical(name)
    if canonical not in (None, name):  # labels.generate --label uniform_gap=2.0 wrote uniform_gap=2
        return (f"labels.generate writes this label as {dataset}_{canonical}.npy; "
                f"pass --label {canonical}")
    short = name.removeprefix(f"{dataset}_")
    if short != name and label_path(dataset, short, label_dir).is_file():  # --label cifar10_speech.npy
        return f"--label is the NAME of {dataset}_NAME.npy; pass --label {short}"
    if not (Path(label_dir) / f"{name}.npy").is_file():
        return None
    named_for = next((d for d in DATASETS if name.startswith(f"{d}_")), None)
    if named_for is None:
        return f"{name}.npy there is not named as a label file; rename it {dataset}_{name}.npy"
    if named_for != dataset:  # --label cifar10_speech in a cifar100 run: --dataset may be the mix-up
        short = name.removeprefix(f"{named_for}_")
        ours = label_path(dataset, short, label_dir).is_file()
        return (f"{name}.npy there is a {named_for} label file, which --dataset {named_for} reads as "
                f"--label {short}" + (f"; for {dataset} pass --label {short}" if ours else ""))
    return None


# The paper's published CIFAR-100 text labels (../shared/reference), by `targets_sha256`: their row j
# is the j-th name of its cifar100_text.txt, which lists the names superclass by superclass (beaver,
# dolphin, ...), not fine class j (apple, aquarium fish, ...): labels/README.md reorders them.
TEXT_ORDER_FILES = {
    "73b9d5f407b5218d95b76b2ce8caa16fbe3dc731a3a03e86cb5ef310e6cebfe4": "cifar100_bert.npy",
    "a216845d31eab9f74628165a87c1ae06b822f8f766a9909015b2656cfed91a8e": "cifar100_glove.npy",
}


def load_label(dataset, name, label_dir=LABEL_DIR, num_classes=None, fix=None, builtin=(), dataset_flag="--dataset"):
    """Targets of label `name` for `dataset`: float32 array (C, *shape), checked by `read_targets`
    (`num_classes`, `fix`, `dataset_flag`). Raises LabelError naming the labels that do exist (`builtin` names
    first: labels that need no file), and how to make it (`make_fix`), when there is no such file.
    Warns of a file whose rows are not in class order (`TEXT_ORDER_FILES`): it trains, each class
    against another's target, as the paper's runs did, which a run may mean to repeat."""
    path = label_path(dataset, name, label_dir)
    if not Path(label_dir).is_dir():  # a typo, or the label file itself: no folder to list labels of
        what = "does not exist"
        if Path(label_dir).exists():  # the label file itself, most likely: its folder is meant
            given, parent = Path(label_dir).name, Path(label_dir).parent
            what = f"is a file, not a folder; pass the folder holding {path.name}" + (
                f", --label_dir {parent}" if (parent / path.name).is_file() else "")
            # another dataset's file of the label (a CIFAR-10 one for a CIFAR-100 run): --dataset may be the mix-up
            if other := next((d for d in DATASETS if d != dataset and label_path(d, name).name == given), None):
                what += f"; {given} is a {other} label file, which --dataset {other} reads"
        raise LabelError(f"no label file {path} for --label {name}: --label_dir {label_dir} {what}")
    # a broken symbolic link is there too: read_targets says so, as what a folder or FIFO is
    there = path.exists() or path.is_symlink()
    if not there and (archive := path.with_suffix(".npz")).is_file():  # numpy.savez's name
        raise LabelError(f"no label file {path} for --label {name}: {archive.name} there is a .npz "
                         f"archive; save the targets with numpy.save as {path.name}")
    if not there and (named := _named_otherwise(dataset, name, label_dir)):
        raise LabelError(f"no label file {path} for --label {name}: {named}")
    if not there:
        known = [*builtin, *available_labels(dataset, label_dir)]
        how = make_fix(dataset, name)  # a coarse run's fix says how to make its own file
        # a typo or a capital (Speech) was left to be found in a list of 30
        raise LabelError(f"no label file {path} for --label {name}{did_you_mean(name, known)}; labels found "
                         f"for {dataset} in {label_dir}: {', '.join(known) or 'none'}"
                         + (f"; {fix or how}" if how else ""))
    targets = read_targets(path, num_classes, fix, dataset, dataset_flag)
    if published := TEXT_ORDER_FILES.get(targets_sha256(targets)):
        log(f"warning: label file {path} is the paper's published {published}, whose row j is the j-th "
            "name of its cifar100_text.txt (beaver, dolphin, ...: superclass by superclass), not fine class "
            "j: class 0 (apple) trains against beaver's target; reorder its rows as labels/README.md shows "
            "to train each class against its own name's")
    return targets
