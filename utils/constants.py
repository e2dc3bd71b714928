"""The plain facts the command lines offer as choices, in a module without torch, so that a
script's --help and a mistyped flag answer at once rather than after torch loads (seconds).

    DATASETS["cifar100"].num_classes["coarse"]    # 20; cifar.py loads the files DATASETS describes
    ATTACKS, OBJECTIVES, DEFAULT_STEPS["paper"]   # utils/attacks.py runs them
    schedule("pgd", 8 / 255)                      # its preset: Schedule("pgd", 10, 2 / 255, True, 1)
    lr_milestones(600)                            # (300, 450): the paper's lr drops, as train.py runs them

The networks' names are architecture.py's registry's (`utils.flags.architecture_names`).
"""
import math
import os
from dataclasses import dataclass
from fractions import Fraction

from utils.errors import UsageError, choice


def env_flag(name):
    """Whether the environment variable `name` is set to anything but "" or 0."""
    return os.environ.get(name, "") not in ("", "0")


def offline():
    """Whether LABELREP_OFFLINE is set: what would download (CIFAR, a text model, GloVe vectors)
    fails at once instead, on a cluster node without a network."""
    return env_flag("LABELREP_OFFLINE")

# The paper's normalisation constants (kuangliu/pytorch-cifar's). The std is not CIFAR's true
# per-channel std (about 0.247, 0.243, 0.261); we keep the paper's numbers for fidelity.
PAPER_MEAN = (0.4914, 0.4822, 0.4465)
PAPER_STD = (0.2023, 0.1994, 0.2010)


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    folder: str          # folder inside data_dir that the archive unpacks to
    url: str
    train_files: tuple
    test_files: tuple
    meta_file: str
    num_classes: dict    # granularity -> number of classes
    label_keys: dict     # granularity -> key of the labels list in a batch
    name_keys: dict      # granularity -> key of the class names in the meta file
    num_train_images: int  # in its train_files as downloaded from url (a --data_dir may hold fewer)
    mean: tuple = PAPER_MEAN
    std: tuple = PAPER_STD


DATASETS = {
    "cifar10": DatasetInfo(
        name="cifar10", folder="cifar-10-batches-py",
        url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        train_files=tuple(f"data_batch_{i}" for i in range(1, 6)), test_files=("test_batch",),
        meta_file="batches.meta", num_classes={"fine": 10}, label_keys={"fine": "labels"},
        name_keys={"fine": "label_names"}, num_train_images=50000),
    "cifar100": DatasetInfo(
        name="cifar100", folder="cifar-100-python",
        url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        train_files=("train",), test_files=("test",), meta_file="meta",
        num_classes={"fine": 100, "coarse": 20},
        label_keys={"fine": "fine_labels", "coarse": "coarse_labels"},
        name_keys={"fine": "fine_label_names", "coarse": "coarse_label_names"}, num_train_images=50000),
}


def dataset_info(name, granularity="fine"):
    """DATASETS[name], for labels of `granularity` (a UsageError for a dataset or granularity it
    does not have: train.py's, and a sweep's before it queues a run of cifar10 coarse)."""
    info = DATASETS[choice("dataset", name, DATASETS)]
    if granularity not in info.label_keys:
        raise UsageError(f"{name} has no '{granularity}' labels; choose from {', '.join(info.label_keys)}")
    return info


def class_count(name, granularity="fine"):
    """How many classes dataset `name` has at `granularity` (`dataset_info`'s UsageError for one
    it does not have): what a run's label file needs a target for."""
    return dataset_info(name, granularity).num_classes[granularity]

# utils/attacks.py's presets (its docstring says what each is), protocols and objectives
ATTACKS = ("fgsm", "iterative", "pgd")
PROTOCOLS = ("pixel", "paper")
OBJECTIVES = ("loss", "margin")
DEFAULT_STEPS = {"pixel": 10, "paper": 5}
STEP_FACTOR = {"pixel": 2.5, "paper": 1.0}  # default step size = factor * eps / steps


@dataclass(frozen=True)
class Schedule:
    """How an attack moves: `steps` steps of `step_size` (the protocol's units), from a random start
    or not, `restarts` times."""
    attack: str
    steps: int
    step_size: float
    random_start: bool
    restarts: int


def schedule(attack, eps, protocol="pixel", steps=None, step_size=None, restarts=1):
    """The preset for `attack` at `eps`: FGSM ignores steps, step_size and restarts. A negative eps,
    steps or restarts below 1 (restarts 1: one run, no restart) or a step size of 0 or less (but at
    eps 0) is a UsageError: each attacked nothing, or up the true class's score, or (steps 0) ran
    the default steps, and the run reported a robust accuracy all the same."""
    choice("attack", attack, ATTACKS)
    choice("protocol", protocol, PROTOCOLS)
    if not eps >= 0:
        raise UsageError(f"eps {eps} must be at least 0")
    for name, value in (("steps", steps), ("restarts", restarts)):
        if value is not None and not (value >= 1 and value % 1 == 0):
            raise UsageError(f"{name} {value} must be a whole number of at least 1")
    if step_size is not None and not (step_size > 0 or step_size == eps == 0):  # attack.py's eps 0 entries
        raise UsageError(f"step size {step_size} must be positive")
    if attack == "fgsm":
        return Schedule("fgsm", 1, eps, False, 1)
    steps = steps or DEFAULT_STEPS[protocol]
    if step_size is None:
        step_size = STEP_FACTOR[protocol] * eps / steps
    pgd = attack == "pgd"
    return Schedule(attack, steps, step_size, pgd, restarts if pgd else 1)


def most_smoothing(num_classes):
    """The largest --smoothing for `num_classes` classes, (C - 1) / C: it leaves the true class no
    less than each other class (`utils.labelspace.CategorySpace`; report.py measures its targets)."""
    return (num_classes - 1) / num_classes


def check_smoothing(smoothing, num_classes):
    """A UsageError where --smoothing `smoothing` lies outside [0, `most_smoothing`] for
    `num_classes` classes (`utils.labelspace.CategorySpace`'s, and a sweep's before it queues a run,
    through `utils.flags.check_label_flags`)."""
    if not 0 <= smoothing <= (most := most_smoothing(num_classes)):
        raise UsageError(f"--smoothing {smoothing} must lie in [0, {most:g}] for {num_classes} classes "
                         "(beyond it the true class gets less than each other class)")


def check_components(n_components, feature_dim):
    """A UsageError where --n_components is not below --feature_dim: MCR2's class subspaces of every
    feature direction keep each feature whole, so nearest-subspace decoding could not tell the classes
    apart (`utils.mcr2.MCR2Space`'s, and a sweep's, through `utils.flags.check_label_flags`)."""
    if n_components >= feature_dim:
        raise UsageError(f"--n_components {n_components} must be below --feature_dim {feature_dim}: "
                         f"class subspaces of all {feature_dim} feature directions keep every "
                         "feature whole, so nearest-subspace decoding could not tell the classes apart")


def check_rate_scale(feature_dim, eps2, gam1):
    """A UsageError where MCR2's coding rates cannot be computed in float32 (`utils.mcr2.rate`):
    each is 1/2 log det(I + s G) of a Gram matrix G of unit features over their count (eigenvalues
    in [0, 1]), s = --feature_dim / --mcr2_eps, times --gam1 in R. Where the larger s passes 2^24,
    float32's 1 / resolution, G's rounding outweighs I: the loss was NaN from the first step (said
    as a divergence a lower --lr may help) or noise; where it is below 2^-24, both s G vanish
    beside I: a loss of 0 that trained nothing (`MCR2Space`'s check, and a sweep's, through
    `check_label_flags`)."""
    weight = feature_dim * max(gam1, 1)
    scale = weight / eps2
    if not 2 ** -24 <= scale <= 2 ** 24:
        large = scale > 1
        why = ("beyond float32's 2^24: their rounding outweighs the identity, and the loss is NaN or noise"
               if large else "below float32's 2^-24: the identity outweighs them, and the loss is 0, "
               "which trains nothing")
        bound = f"at least {weight / 2 ** 24:.3g}" if large else f"at most {weight * 2 ** 24:.3g}"
        raise UsageError(f"--mcr2_eps {eps2:g} with --feature_dim {feature_dim} and --gam1 {gam1:g} scales "
                         f"the coding rate's Gram matrices by {scale:.3g}, {why}; keep --feature_dim x "
                         "max(--gam1, 1) / --mcr2_eps within [2^-24, 2^24] (with these --feature_dim and "
                         f"--gam1: --mcr2_eps {bound})")


def lr_milestones(epochs):
    """The paper's step schedule: the (0-based) epochs from which its lr is divided by 10, at 50%
    and 75% of `epochs` (300 and 450 of 600; the paper's code fixes those two whatever the run's
    length, README "Recipe"); `utils.training.lr_at` follows it."""
    return math.ceil(0.5 * epochs), math.ceil(0.75 * epochs)


def training_images(num_images, valid_size, level):
    """How many of a dataset's `num_images` training images a run of --valid_size and --level
    trains on (`cifar.split_indices`; sweep.py counts them without torch): every one left after
    the validation images at level 100, else int(num_images * level / 100), the level's decimal
    digits taken exactly (in floats 50000 * 0.29 / 100 is 144.99999999999997: a labelrep before
    1570041 trained on 144 images, not 145)."""
    if level == 100:
        return max(num_images - valid_size, 0)
    return int(num_images * Fraction(str(level)) / 100)


def check_split(num_images, valid_size, level, num_classes):
    """`training_images` of a run of --valid_size and --level on a dataset of `num_images` training
    images and `num_classes` classes, or a UsageError where train.py refuses its split: a --level
    outside (0, 100], fewer training images than classes (some class would have none to learn
    from, whichever the seed), or more than remain after the validation images
    (`cifar.split_indices`'s checks, and a sweep's before it queues a run:
    `utils.grid.split_problems`)."""
    if not 0 < level <= 100:
        raise UsageError(f"--level must lie in (0, 100], got {level}")
    # a lower level's own check says what --valid_size leaves room for its images
    if valid_size < 0 or (valid_size >= num_images and level == 100):
        raise UsageError(f"--valid_size {valid_size} leaves no training images: the dataset has "
                         f"{num_images}; pass a --valid_size of at most {max(num_images - num_classes, 0)}")
    remaining = max(num_images - valid_size, 0)
    train_len = training_images(num_images, valid_size, level)
    if train_len > remaining:
        raise UsageError(f"--level {level} asks for {train_len} training images, but only {remaining} "
                         f"of the {num_images} remain after the {valid_size} validation images; pass a "
                         f"--valid_size of at most {num_images - train_len}, or a lower --level")
    if train_len < num_classes:
        if level == 100:
            given, fix = f"--valid_size {valid_size}", f"--valid_size of at most {num_images - num_classes}"
        else:  # the lowest level of two decimals whose int(N * L / 100) is C
            lowest = math.ceil(Fraction(100 * num_classes, num_images) * 100) / 100
            given, fix = f"--level {level}", f"--level of at least {lowest:g}"
        raise UsageError(f"{given} leaves {train_len} training image{'s' * (train_len != 1)} for {num_classes} "
                         f"classes; a run needs at least {num_classes}, one per class: pass a {fix}")
    return train_len
