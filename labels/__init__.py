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

from pathlib import Path

import numpy as np

LABEL_DIR = Path(__file__).resolve().parent / "label_files"


class LabelError(ValueError):
    """Bad input to a label generator or loader; the command-line tools print it as one line."""


def label_path(dataset, name, label_dir=LABEL_DIR):
    """Path of the label file for `dataset` (e.g. "cifar10") and label `name` (e.g. "speech")."""
    return Path(label_dir) / f"{dataset}_{name}.npy"


def available_labels(dataset, label_dir=LABEL_DIR):
    """Sorted label names that have a file for `dataset` in `label_dir`."""
    prefix = f"{dataset}_"
    return sorted(p.name[len(prefix):-len(".npy")] for p in Path(label_dir).glob(f"{prefix}*.npy"))


def load_label(dataset, name, label_dir=LABEL_DIR):
    """Targets of label `name` for `dataset`: float32 array (C, *shape).

    Raises LabelError naming the labels that do exist when there is no such file.
    """
    path = label_path(dataset, name, label_dir)
    if not path.is_file():
        known = ", ".join(available_labels(dataset, label_dir)) or "none"
        raise LabelError(f"no label file {path}; labels for {dataset} in {label_dir}: {known}")
    # allow_pickle=False: a label file is plain numbers, never code.
    return np.load(path, allow_pickle=False).astype(np.float32, copy=False)
