"""CIFAR's python-pickle files (batches and meta), read without letting a file run code."""
import pickle

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
