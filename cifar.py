"""CIFAR-10/100: python-pickle batches -> uint8 tensors, the paper's seeded split, on-device augmentation.

    data = load_cifar("cifar10", "./data")                  # downloads on first use
    split = split_indices(len(data.train_labels), seed=7, valid_size=5000, level=100,
                          num_classes=data.num_classes)
    images = augment(data.train_images[split.train[:128]].to(device), generator)  # float in [0, 1]

The whole split lives on the device as uint8 (CIFAR-10's 60000 images are 184 MB), so a training
epoch is one seeded permutation and batched tensor ops, with no per-image PIL work and no workers.
"""
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from utils.atomic import exclusive, made_folders, umask_mode
from utils.constants import DATASETS, DatasetInfo, check_split, dataset_info, offline
from utils.errors import UsageError, log, os_error_text
from utils.pickles import cifar_batches, meta_class_names


@dataclass
class CifarData:
    """One dataset in memory. images: (N, 3, 32, 32) uint8; labels: (N,) int64 class ids; the
    training ones None where only the test split was read (`load_cifar`'s train=False) or a run
    let them go once split."""
    info: DatasetInfo
    granularity: str
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    class_names: list

    @property
    def num_classes(self):
        return self.info.num_classes[self.granularity]


def _not_found(info, folder, reason, needed):
    """The UsageError for a dataset that is not in `folder`, for the `reason` given, naming the
    files the command reads (`needed`: attack.py's the test batches alone) and the meta file, which
    only names the classes."""
    files = f"{', '.join(needed)}, and {info.meta_file} for the class names"
    # the other dataset's folder where this one's was looked for: a --dataset left at its default
    others = "".join(f"; {folder.parent} holds {other.folder}/, which --dataset {other.name} reads"
                     for other in DATASETS.values() if other is not info and (folder.parent / other.folder).is_dir())
    return UsageError(f"{info.name} not found in {folder} ({reason}); put the python-pickle files "
                      f"({files}) there, or pass --data_dir to where they are{others}")


def _lacking(folder, needed):
    """'it lacks test_batch' where `folder` holds some of the `needed` files but not all; '' where
    it holds none (then the whole dataset is missing)."""
    missing = [f for f in needed if not (folder / f).is_file()]
    return f"it lacks {', '.join(missing)}" if len(missing) < len(needed) else ""


def _download(info, data_dir, needed):
    """Download the archive (unless data_dir holds it), unpack it, and move its files into
    data_dir/<folder>, leaving the files already there as they are (a folder of one's own batches
    that lacks the test batch gets the archive's test batch, not the archive's training batches).

    Many jobs may start at once on one fresh data_dir (a job array on a new cluster): they take
    turns, and one that waited finds the files and downloads nothing. Each file appears whole, by
    a rename from a folder of this job's own, so no job reads half a batch or writes into another
    job's archive. An archive that fails to unpack, or lacks the `needed` files, is removed:
    torchvision takes one already there as complete, so it would fail every later run alike."""
    archive, folder = data_dir / info.url.rsplit("/", 1)[-1], data_dir / info.folder
    lock = data_dir / f".{archive.name}.lock"
    while True:
        try:  # made_folders: a mistyped --data_dir is not left behind
            with made_folders(data_dir) as created, exclusive(
                    lock, waiting=f"waiting for another job's download of {archive.name} into {data_dir}") as alone:
                try:
                    return _install(info, archive, folder, needed, alone)
                except UsageError:
                    # made and empty but for the lock file (kept in a folder that was there):
                    # removed while held, so a job waiting on it locks the next one (`exclusive`)
                    if created:
                        lock.unlink(missing_ok=True)
                    raise
        except FileNotFoundError as err:  # data_dir removed since made, by a job whose download failed
            if err.filename != str(lock):
                raise


def _install(info, archive, folder, needed, alone):
    """`_download`'s work, in archive.parent, under its lock (`alone`: False on a file system
    without locks): its files in `folder`, or a UsageError."""
    # torchvision's downloader, without its md5 check: real copies of the batches exist whose
    # checksums differ from the official archive's, and we validate the content ourselves.
    from torchvision.datasets.utils import download_url, extract_archive

    from utils.progress import library_bar
    data_dir = archive.parent
    if all((folder / f).is_file() for f in needed):
        return  # another job installed them while this one waited
    if alone:  # what a killed download left, up to an archive and its contents
        for left in data_dir.glob(f".{info.folder}.*"):
            shutil.rmtree(left, ignore_errors=True)
    with tempfile.TemporaryDirectory(dir=data_dir, prefix=f".{info.folder}.") as tmp:
        unpacked = Path(tmp) / info.folder
        # 0700 from mkdtemp: a killed job's folder stayed, one the next job of another user of a
        # shared --data_dir could not remove (as the archive's folder unpacked in it, 0755)
        os.chmod(tmp, umask_mode(0o777))
        try:
            if not archive.is_file():
                lacking = _lacking(folder, needed)
                log(f"downloading {info.url} to {data_dir}" + (f" ({lacking})" if lacking else ""))
                with library_bar():  # its tqdm bar on a terminal, not in a job's log file
                    download_url(info.url, tmp, archive.name)
                os.replace(Path(tmp) / archive.name, archive)
            extract_archive(str(archive), tmp)
            if unpacked.is_dir():
                os.chmod(unpacked, umask_mode(0o777))
            missing = [f for f in needed if not (unpacked / f).is_file()]
            reason = f"the archive lacks {', '.join(missing)}" if missing else None
        except Exception as err:  # any network or archive failure gets the same actionable message
            reason = f"the download failed: {type(err).__name__}: {err}"
        if reason:
            if archive.is_file():
                archive.unlink()
                reason += f"; removed {archive.name}"
            raise _not_found(info, folder, reason, needed)
        folder.mkdir(exist_ok=True)
        # the needed files last: a job that finds them all finds the meta file too
        for path in sorted(unpacked.iterdir(), key=lambda path: path.name in needed):
            if not (folder / path.name).exists():  # one there is the user's, or a killed job's copy
                if path.is_file():  # the archive's mode (0644, a copy's 0600) passes the umask by
                    os.chmod(path, umask_mode())  # a group sharing --data_dir could not read it
                os.replace(path, folder / path.name)


def load_cifar(name, data_dir, granularity="fine", download=None, train=True):
    """Read a dataset's train and test batches from `data_dir/<folder>`, downloading if absent.
    `train` False reads the test batches alone, and needs no others (attack.py: a full dataset's
    training images were 150 MB held through every attack, and most of its load's peak memory).

    Set LABELREP_OFFLINE=1 (cluster nodes without a network, tests) to fail at once instead.
    """
    if download is None:
        download = not offline()
    info = dataset_info(name, granularity)
    data_dir = Path(data_dir).absolute()  # what it says and downloads to, whatever the working folder
    folder = data_dir / info.folder
    needed = (info.train_files if train else ()) + info.test_files
    if not all((folder / f).is_file() for f in needed):
        _check_data_dir(name, info, data_dir, needed)
        _fetch(info, data_dir, needed, download)
    return _read_batches(info, folder, granularity, train)


def _check_data_dir(name, info, data_dir, needed):
    """UsageError where a download into data_dir/<folder> would not help: data_dir or the folder
    is a file, a batch's name is taken by something else, or data_dir holds this dataset's or the
    other's batches themselves instead of their folder."""
    folder = data_dir / info.folder
    if data_dir.exists() and not data_dir.is_dir():
        raise UsageError(f"--data_dir {data_dir} is a file, not a folder")
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"{folder} is a file, not the folder of the {name} files; remove it, or "
                         "pass another --data_dir")
    odd = [folder / f for f in needed if (folder / f).exists() and not (folder / f).is_file()]
    if odd:  # a download would not replace it, and the run would fail after it anyway
        raise UsageError(f"{odd[0]} is not a file, as the {name} batch of that name must be; "
                         "remove it, or pass another --data_dir")

    def renamed(wanted):  # the parent serves only as the --data_dir of a folder of that name
        return "" if data_dir.name == wanted else f", once {data_dir.name}/ is renamed {wanted}/"
    if all((data_dir / f).is_file() for f in needed):  # not a download into the wrong folder
        raise UsageError(f"--data_dir {data_dir} holds the {name} files themselves; pass the folder "
                         f"that holds {info.folder}/ (--data_dir {data_dir.parent}{renamed(info.folder)})")
    for other in DATASETS.values():  # the other dataset's batches: no download into their folder
        if other is not info and all((data_dir / f).is_file() for f in other.train_files + other.test_files):
            raise UsageError(f"--data_dir {data_dir} holds the {other.name} files, which --dataset "
                             f"{other.name} reads with --data_dir {data_dir.parent}{renamed(other.folder)}; "
                             f"for {name} pass the folder that holds {info.folder}/")


def _fetch(info, data_dir, needed, download):
    """`_download` the `needed` files into data_dir/<folder>, or the not-found UsageError saying
    what the folder lacks and why no download brought it (`download` False: LABELREP_OFFLINE)."""
    folder = data_dir / info.folder
    if not download:
        raise _not_found(info, folder, "; ".join(filter(None, (
            _lacking(folder, needed), "LABELREP_OFFLINE is set, so no download was tried"))), needed)
    try:
        _download(info, data_dir, needed)
    except OSError as err:  # a read-only --data_dir said "could not write <lock file>", not why it wrote
        raise _not_found(info, folder, "; ".join(filter(None, (
            _lacking(folder, needed), f"a download there failed: {os_error_text(err)}"))), needed) from None


def _read_batches(info, folder, granularity, train=True):
    """The `CifarData` of the batches in `folder` (the training ones where `train`), with the meta
    file's class names where it holds them, else numbered classes ("0", "1", ...)."""
    label_key, num_classes = info.label_keys[granularity], info.num_classes[granularity]

    def read(files):
        images, labels = zip(*cifar_batches(folder, files, label_key, num_classes))
        return torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels))
    train_images, train_labels = read(info.train_files) if train else (None, None)
    test_images, test_labels = read(info.test_files)
    class_names = None
    if (folder / info.meta_file).is_file():
        class_names = meta_class_names(folder / info.meta_file, info.name_keys[granularity], num_classes)
    if class_names is None:  # no meta file, or one without names: numbered classes
        class_names = [str(i) for i in range(num_classes)]
    return CifarData(info, granularity, train_images, train_labels, test_images, test_labels,
                     class_names)


@dataclass(frozen=True)
class Split:
    train: np.ndarray  # indices into the training images
    valid: np.ndarray


def split_indices(num_images, seed, valid_size=5000, level=100, *, num_classes):
    """The paper's split: permute range(N) with `seed`, first `valid_size` are validation.

    level 100 trains on every remaining image; a lower level trains on the next
    int(N * level / 100) indices (the paper's rule, a fraction of the whole training set), the
    same images whatever the label, so that labels are compared on one subset per seed.
    RandomState(seed).permutation equals the paper's np.random.seed(seed); np.random.shuffle(idx),
    without touching numpy's global generator. A split of fewer training images than the
    dataset's `num_classes` is refused (`check_split`).
    """
    # train.py's reason where it refuses the split
    train_len = check_split(num_images, valid_size, level, num_classes)
    order = np.random.RandomState(seed).permutation(num_images)
    return Split(train=order[valid_size:valid_size + train_len], valid=order[:valid_size])


def label_noise(labels, fraction, num_classes, seed):
    """Training labels with round(fraction * N) of them replaced by a different, random class.

    The images to corrupt and their new classes come from RandomState(seed), so a run is
    reproducible; each corrupted label is drawn uniformly from the other num_classes - 1 classes,
    so exactly that many labels are wrong. labels: (N,) int64 -> a new (N,) tensor.
    """
    if not 0 <= fraction <= 1:
        raise UsageError(f"--label_noise must lie in [0, 1], got {fraction}")
    rng = np.random.RandomState(seed)
    count = round(fraction * len(labels))
    chosen = rng.choice(len(labels), size=count, replace=False)
    shift = rng.randint(1, num_classes, size=count)
    noisy = labels.clone()
    noisy[chosen] = (labels[chosen] + torch.from_numpy(shift)) % num_classes
    return noisy


def to_float(images, dtype=None):
    """uint8 (N, 3, H, W) -> floats in [0, 1] of `dtype` (None: the default dtype, float32 unless
    changed). Images of another dtype are a TypeError: float ones, divided by 255 again, scored
    near chance, and in place, in the caller's tensor (`.to` returns it when of `dtype` already)."""
    if images.dtype != torch.uint8:
        raise TypeError(f"images must be uint8 in [0, 255], as cifar.load_cifar gives them, not {images.dtype}")
    return images.to(dtype or torch.get_default_dtype()).div_(255)


def augment(images, generator):
    """The paper's training augmentation, batched on the images' device.

    images: (N, 3, 32, 32) uint8. Random 32x32 crop of the image zero-padded by 4 pixels, then a
    random horizontal flip, both drawn from `generator` (a torch.Generator on the same device).
    Returns torch's default float dtype (float32 unless set otherwise) in [0, 1].
    """
    return crop_and_flip(images, *draw_augmentation(len(images), generator, images.device))


def draw_augmentation(n, generator, device):
    """`augment`'s random draws for n images: crop offsets (2, n) in 0..8 and flips (n,)."""
    offsets = torch.randint(0, 9, (2, n), device=device, generator=generator)
    flips = torch.rand(n, device=device, generator=generator) < 0.5
    return offsets, flips


def crop_and_flip(images, offsets, flips):
    """`augment` with its draws given: no generator, so torch.compile can take it in a graph."""
    n, _, h, w = images.shape
    device = images.device
    padded = F.pad(images, (4, 4, 4, 4))
    rows = offsets[0, :, None] + torch.arange(h, device=device)               # (N, H)
    cols = offsets[1, :, None] + torch.arange(w, device=device)               # (N, W)
    cols = torch.where(flips[:, None], cols.flip(1), cols)
    batch = torch.arange(n, device=device)[:, None, None]
    # Advanced indices on dims 0, 2, 3 broadcast to (N, H, W) and the channel dim goes last.
    crops = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]
    return to_float(crops.permute(0, 3, 1, 2).contiguous())
