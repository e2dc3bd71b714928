"""CIFAR's python-pickle files (batches and meta), read without letting a file run code."""
import pickle

import numpy as np

from utils.errors import UsageError


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles CIFAR batches but refuses any global other than numpy arrays and plain data,
    so a tampered file cannot run code."""
    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
               ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar")}

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"unexpected object {module}.{name}")
        return super().find_class(module, name)


def read_cifar_pickle(path, fix="delete it and run again to download a fresh copy"):
    """The dict a CIFAR pickle holds, its bytes keys decoded; UsageError for any other content,
    `fix` saying what to do about a corrupt file."""
    try:
        with open(path, "rb") as f:
            content = _ArrayUnpickler(f, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, MemoryError) as err:
        # MemoryError: a corrupt length field (an 8-byte one) asks for exabytes, refused at once
        raise UsageError(f"dataset file {path} is truncated or corrupt ({str(err) or type(err).__name__}); "
                         f"{fix}") from None
    if not isinstance(content, dict):
        raise UsageError(f"dataset file {path} is not a CIFAR batch (expected a dict)")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in content.items()}


def meta_class_names(path, key, num_classes, fix="delete it and run again to download a fresh copy"):
    """The class names a CIFAR meta file lists under `key` (bytes decoded), None where it has no
    such entry; UsageError unless they are a list of `num_classes` names."""
    listed = read_cifar_pickle(path, fix).get(key)
    if listed is None:
        return None
    if (not isinstance(listed, (list, tuple)) or len(listed) != num_classes
            or not all(isinstance(n, (str, bytes)) for n in listed)):
        raise UsageError(f"dataset file {path}: '{key}' is not a list of {num_classes} class names")
    return [n.decode() if isinstance(n, bytes) else n for n in listed]


def listed_values(value):
    """How many values np.asarray makes of a nested list (or tuple) `value`, taking its first item's
    length for every item's at each depth, and an array's size at the bottom; 1 for anything else.
    A pickle may list one list, or one array, many times by reference (its memo), so a file of 300 kB
    can list 10**10 labels: 80 GB once an array; a list written out takes at least 2 bytes a value,
    an array at least 1 (its bytes are the file's own)."""
    count = 1
    while isinstance(value, (list, tuple)):
        count *= len(value)
        value = value[0] if value else None
    return count * (value.size if isinstance(value, np.ndarray) else 1)


def cifar_batches(folder, files, label_key, num_classes):
    """Per batch file of `files` in `folder`, in turn: its images ((N, 3, 32, 32) uint8) and labels
    ((N,) int64 class ids under `label_key`) as numpy arrays; UsageError for a file that is not a
    batch of `num_classes` classes."""
    for name in files:
        path = folder / name
        batch = read_cifar_pickle(path)
        absent = [key for key in ("data", label_key) if key not in batch]
        if absent:  # a CIFAR-10 batch ('labels') in a CIFAR-100 folder, a coarse run without 'coarse_labels'
            raise UsageError(f"dataset file {path} has no {' or '.join(repr(k) for k in absent)} entry "
                             f"(it has {', '.join(map(repr, batch)) or 'none'})")
        size = path.stat().st_size
        for key in ("data", label_key):
            if (count := listed_values(batch[key])) > size:
                raise UsageError(f"dataset file {path}: '{key}' lists {count} values in a file of {size} "
                                 "bytes, its lists repeating one another: not a CIFAR batch")
        try:
            data, batch_labels = np.asarray(batch["data"]), np.asarray(batch[label_key])
        except ValueError:  # ragged: a row of another length, a list among the labels
            raise UsageError(f"dataset file {path}: 'data' or '{label_key}' is not a regular array "
                             "(rows or entries of different shapes)") from None
        if not data.size and not batch_labels.size:
            raise UsageError(f"dataset file {path}: 'data' and '{label_key}' hold no images")
        # checked before the casts, which would wrap 256 to 0 and turn floats in [0, 1] black (0.5 to 0)
        if data.dtype.kind not in "iu" or (data.dtype != np.uint8 and data.size
                                           and (data.min() < 0 or data.max() > 255)):
            raise UsageError(f"dataset file {path}: 'data' holds {data.dtype} values"
                             + (f" in {data.min()}..{data.max()}" if data.dtype.kind in "iuf" and data.size else "")
                             + "; expected pixels 0..255")
        if batch_labels.dtype.kind not in "iu" or batch_labels.ndim != 1:
            raise UsageError(f"dataset file {path}: '{label_key}' holds {batch_labels.dtype} values of "
                             f"shape {batch_labels.shape}; expected one integer class id per image")
        data, batch_labels = data.astype(np.uint8, copy=False), batch_labels.astype(np.int64, copy=False)
        if data.ndim != 2 or data.shape[1] != 3072 or len(data) != len(batch_labels):
            raise UsageError(f"dataset file {path} holds data of shape {data.shape} with "
                             f"{len(batch_labels)} labels; expected (N, 3072) and N labels")
        outside = np.flatnonzero((batch_labels < 0) | (batch_labels >= num_classes))
        if len(outside):  # named here, with the file, rather than found in the whole split later
            raise UsageError(f"dataset file {path}: '{label_key}' holds {len(outside)} class id"
                             f"{'s' * (len(outside) != 1)} outside 0..{num_classes - 1} (image {outside[0]}: "
                             f"{batch_labels[outside[0]]})")
        yield data.reshape(-1, 3, 32, 32), batch_labels
