"""cifar.py (loading, split, augmentation), architecture.py (heads, parameter counts), label spaces."""
import errno
import functools
import gzip
import math
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from architecture import ARCHITECTURES, build_model
from cifar import DATASETS, augment, load_cifar, split_indices, to_float
from conftest import REFERENCE_LABELS, REPO, SUBSET, make_cifar10
from utils import pickles
from utils.errors import UsageError, call_cli
from labels import LABEL_DIR, check_targets, granularity_fix, load_label, read_targets
from utils.labelspace import CategorySpace, TargetSpace, load_label_space, margin


def test_load_cifar10_shapes_and_names(cifar10_dir):
    data = load_cifar("cifar10", cifar10_dir)
    assert data.train_images.shape == (300, 3, 32, 32) and data.train_images.dtype == torch.uint8
    assert data.test_images.shape == (100, 3, 32, 32)
    assert data.train_labels.dtype == torch.int64 and data.num_classes == 10
    assert data.class_names[1] == "automobile"


def test_load_cifar100_granularity(cifar100_dir):
    fine = load_cifar("cifar100", cifar100_dir)
    coarse = load_cifar("cifar100", cifar100_dir, granularity="coarse")
    assert fine.num_classes == 100 and coarse.num_classes == 20
    assert torch.equal(coarse.train_labels, fine.train_labels // 5)  # how the fixture made them
    assert coarse.class_names[3] == "coarse3"


def rewrite_pickle(path, change):
    with open(path, "rb") as f:
        content = pickle.load(f, encoding="latin1")
    change(content)
    path.write_bytes(pickle.dumps(content))


@pytest.mark.parametrize("file, change, message", [
    # each was cast without a word (256 wrapped to 0, floats in [0, 1] to black, 0.5 to class 0)
    # or crashed: a traceback, or a 2-D label column that failed after an epoch had been written
    ("test_batch", lambda c: c.update(data=c["data"].astype(np.int64) + 100), "'data' holds int64 values in 100..355"),
    ("test_batch", lambda c: c.update(data=c["data"] / 255.0), "'data' holds float64 values in 0.0..1.0"),
    ("test_batch", lambda c: c.update(labels=[0.5] * len(c["labels"])), "'labels' holds float64 values"),
    ("test_batch", lambda c: c.update(labels=["cat"] * len(c["labels"])), "'labels' holds <U3 values"),
    ("test_batch", lambda c: c.update(labels=[2**70] * len(c["labels"])), "'labels' holds object values"),
    ("test_batch", lambda c: c.update(labels=np.array(c["labels"])[:, None]), "of shape (100, 1); expected one integer"),
    ("test_batch", lambda c: c.update(labels=[1, [2]] + c["labels"][2:]), "'labels' is not a regular array"),
    # lists that list one list by reference (a pickle's memo), 10**7 labels in a file of 300 kB: made
    # an array (10**10: 80 GB) before its shape was refused
    ("test_batch", lambda c: c.update(labels=functools.reduce(lambda x, _: [x] * 10, range(6), [1] * 10)),
     "'labels' lists 10000000 values in a file of "),
    ("test_batch", lambda c: c.update(data=[c["data"][0].tolist()] * 10**4, labels=[0] * 10**4),
     "'data' lists 30720000 values in a file of "),
    # one image's array listed by reference (a file of 43 kB): loaded as 10**4 images of it, and a
    # longer array listed so, terabytes
    ("test_batch", lambda c: c.update(data=[c["data"][0]] * 10**4, labels=[0] * 10**4),
     "'data' lists 30720000 values in a file of "),
    # was "cifar10 train labels lie outside 0..9", naming neither the file nor the class
    ("data_batch_4", lambda c: c["labels"].__setitem__(5, 10), "'labels' holds 1 class id outside 0..9 (image 5: 10)"),
    ("test_batch", lambda c: c.update(labels=[-1] * len(c["labels"])),
     "holds 100 class ids outside 0..9 (image 0: -1)"),
    # was "'labels' holds float64 values of shape (0,)": an empty list is float64 to numpy
    ("test_batch", lambda c: c.update(data=c["data"][:0], labels=[]), "'data' and 'labels' hold no images"),
    ("batches.meta", lambda c: c.update(label_names=5), "'label_names' is not a list of 10 class names"),
    ("batches.meta", lambda c: c.update(label_names=["a", "b"]), "'label_names' is not a list of 10 class names"),
])
def test_a_batch_with_values_that_are_not_pixels_or_class_ids_is_one_line(tmp_path, cifar10_dir, file, change,
                                                                           message):
    shutil.copytree(cifar10_dir, tmp_path / "data")
    path = tmp_path / "data" / "cifar-10-batches-py" / file
    rewrite_pickle(path, change)
    with pytest.raises(UsageError) as err:
        load_cifar("cifar10", tmp_path / "data")
    assert str(err.value).startswith(f"dataset file {path}: ") and message in str(err.value)


@pytest.mark.parametrize("lost_labels, columns", [(1, 3072), (0, 3071)])  # a label lost, rows cut short
def test_a_batch_whose_images_and_labels_do_not_pair_up_is_one_line(tmp_path, cifar10_dir, lost_labels, columns):
    """Images and labels are concatenated batch by batch: a batch with one label fewer than images
    gave every later image the label of its neighbour, without a word."""
    shutil.copytree(cifar10_dir, tmp_path / "data")
    path = tmp_path / "data" / "cifar-10-batches-py" / "data_batch_2"
    with open(path, "rb") as f:
        n = len(pickle.load(f, encoding="latin1")["labels"])
    rewrite_pickle(path, lambda c: c.update(labels=c["labels"][:n - lost_labels], data=c["data"][:, :columns]))
    with pytest.raises(UsageError) as err:
        load_cifar("cifar10", tmp_path / "data")
    assert str(err.value) == (f"dataset file {path} holds data of shape ({n}, {columns}) with {n - lost_labels} "
                              "labels; expected (N, 3072) and N labels")


def test_a_cifar100_batch_without_the_granularitys_labels_or_outside_its_classes_is_named(tmp_path, cifar100_dir):
    """Said "has no 'coarse_labels' or 'data' entry" (which?) and "cifar100 train labels lie outside
    0..19" (which file, which key?)."""
    shutil.copytree(cifar100_dir, tmp_path / "data")
    train, test = (tmp_path / "data" / "cifar-100-python" / name for name in ("train", "test"))
    rewrite_pickle(train, lambda c: c["coarse_labels"].__setitem__(3, 20))
    with pytest.raises(UsageError) as err:
        load_cifar("cifar100", tmp_path / "data", granularity="coarse")
    assert str(err.value) == f"dataset file {train}: 'coarse_labels' holds 1 class id outside 0..19 (image 3: 20)"
    rewrite_pickle(test, lambda c: c.update(labels=c.pop("fine_labels")))  # a CIFAR-10 batch's key
    with pytest.raises(UsageError) as err:
        load_cifar("cifar100", tmp_path / "data")
    assert str(err.value) == (f"dataset file {test} has no 'fine_labels' entry (it has 'batch_label', "
                              "'data', 'filenames', 'coarse_labels', 'labels')")


def test_a_pickle_row_is_the_red_green_and_blue_planes_each_row_by_row(tmp_path, cifar10_dir):
    """CIFAR's python pickles hold an image as 1024 red, 1024 green, then 1024 blue values, each plane
    row by row: pixel (c, y, x) is entry c * 1024 + y * 32 + x of its row (not interleaved RGB)."""
    shutil.copytree(cifar10_dir, tmp_path / "data")
    c, y, x = np.meshgrid(np.arange(3), np.arange(32), np.arange(32), indexing="ij")
    pixels = (c * 80 + y * 2 + x % 2).astype(np.uint8)

    def first_image(batch):
        batch["data"][0] = pixels.reshape(-1)
    rewrite_pickle(tmp_path / "data" / "cifar-10-batches-py" / "test_batch", first_image)
    assert torch.equal(load_cifar("cifar10", tmp_path / "data").test_images[0], torch.from_numpy(pixels))


class RunsCode:
    """What a tampered pickle holds: unpickling it would run a shell command."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_batch_whose_pickle_would_run_code_is_refused_unrun(tmp_path, cifar10_dir):
    """A downloaded or copied dataset is read as data: a pickle naming any callable other than
    numpy's array rebuilders is an error before anything in it runs."""
    shutil.copytree(cifar10_dir, tmp_path / "data")
    path, marker = tmp_path / "data" / "cifar-10-batches-py" / "test_batch", tmp_path / "ran"
    rewrite_pickle(path, lambda c: c.update(filenames=RunsCode(marker)))
    with pytest.raises(UsageError) as err:
        load_cifar("cifar10", tmp_path / "data")
    assert str(err.value).startswith(f"dataset file {path} is truncated or corrupt (unexpected object ")
    assert not marker.exists()


@pytest.mark.parametrize("opcode", [b"\x8d", b"\x8e", b"\x95"])  # BINUNICODE8, BINBYTES8, FRAME
def test_a_batch_whose_corrupt_length_asks_for_exabytes_is_one_line(tmp_path, cifar10_dir, opcode):
    """A corrupt byte that made a pickle's 8-byte length field huge was a MemoryError traceback."""
    shutil.copytree(cifar10_dir, tmp_path / "data")
    path = tmp_path / "data" / "cifar-10-batches-py" / "data_batch_2"
    path.write_bytes(b"\x80\x04" + opcode + (2 ** 62).to_bytes(8, "little") + path.read_bytes()[11:])
    with pytest.raises(UsageError) as err:
        load_cifar("cifar10", tmp_path / "data")
    assert str(err.value) == (f"dataset file {path} is truncated or corrupt (MemoryError); delete it and run "
                              "again to download a fresh copy")


def test_a_dataset_file_this_user_may_not_read_is_said_so(tmp_path, cifar10_dir, monkeypatch, capsys):
    """A batch file of mode 0600 in another user's dataset folder said "error: could not write
    .../test_batch: Permission denied": a read refused, told as a write refused."""
    shutil.copytree(cifar10_dir, tmp_path / "data")
    path = tmp_path / "data" / "cifar-10-batches-py" / "test_batch"
    real_open, real_access = open, os.access

    def refused(file, *args, **kwargs):  # as root, a file's mode is no bar
        if str(file) == str(path):
            raise PermissionError(errno.EACCES, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)
    monkeypatch.setattr(pickles, "open", refused, raising=False)
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: str(p) != str(path) and real_access(p, mode, **kw))
    assert call_cli(lambda argv: load_cifar("cifar10", tmp_path / "data")) == 2
    assert capsys.readouterr().err == f"error: cannot read {path}: Permission denied\n"


@pytest.mark.skipif(not SUBSET.exists(), reason="../shared/data is absent")
def test_real_cifar10_subset():
    data = load_cifar("cifar10", SUBSET)
    assert len(data.train_labels) == 5170 and len(data.test_labels) == 1017
    # the first test image of CIFAR-10 is a cat (class 3); the first training image a frog (6)
    assert data.test_labels[0] == 3 and data.train_labels[0] == 6


def test_split_matches_the_papers_global_shuffle():
    np.random.seed(7)
    paper = list(range(5170))
    np.random.shuffle(paper)
    split = split_indices(5170, seed=7, valid_size=1000, level=100, num_classes=10)
    assert split.valid.tolist() == paper[:1000]
    assert split.train.tolist() == paper[1000:]
    low = split_indices(5170, seed=7, valid_size=1000, level=25, num_classes=10)
    assert len(low.train) == 1292 and low.train.tolist() == paper[1000:2292]


def test_a_fractional_level_takes_its_percent_exactly():
    """0.29% of CIFAR's 50000 images is 145, not the 144 of the float product 144.99999999999997."""
    assert [len(split_indices(50000, seed=0, valid_size=5000, level=level, num_classes=10).train)
            for level in (0.29, 1.14, 2.5, 8)] == [145, 570, 1250, 4000]


def test_a_level_rounds_its_images_down_as_the_papers_int():
    """--level L trains on int(N * L / 100) images, the paper's rule, rounded down: 1.999% of
    50000 is 999.5 images, so 999 (rounding to nearest gave 1000, one image more than the paper's
    run, and sweep.py counted the same)."""
    from utils.constants import training_images
    assert training_images(50000, 5000, 1.999) == 999
    assert training_images(50000, 5000, 33.3333) == 16666  # 16666.65
    assert len(split_indices(50000, seed=0, valid_size=5000, level=1.999, num_classes=10).train) == 999


def test_split_rejects_a_level_that_does_not_fit():
    with pytest.raises(UsageError, match=r"--level 90 asks for 4653 training images, but only 4170"):
        split_indices(5170, seed=0, valid_size=1000, level=90, num_classes=10)
    # the README's --level 10 on the CIFAR-10 subset, with the default --valid_size: what to pass
    with pytest.raises(UsageError) as err:
        split_indices(5170, seed=0, valid_size=5000, level=10, num_classes=10)
    assert str(err.value) == ("--level 10 asks for 517 training images, but only 170 of the 5170 remain "
                              "after the 5000 validation images; pass a --valid_size of at most 4653, "
                              "or a lower --level")
    assert len(split_indices(5170, seed=0, valid_size=4653, level=10, num_classes=10).train) == 517
    # a --valid_size beyond the dataset at a lower level: the fix that fits the level, not a
    # --valid_size of at most 5168 that the level's check refused next
    with pytest.raises(UsageError) as err:
        split_indices(5170, seed=0, valid_size=6000, level=10, num_classes=10)
    assert str(err.value) == ("--level 10 asks for 517 training images, but only 0 of the 5170 remain "
                              "after the 6000 validation images; pass a --valid_size of at most 4653, "
                              "or a lower --level")


def test_float_images_are_refused_not_divided_again():
    """evaluate() on float images (a notebook passing on to_float's output) divided them by 255
    again, in the caller's tensor, and scored the near-black images near chance."""
    from utils.training import evaluate
    images = torch.rand(4, 3, 32, 32)
    before = images.clone()
    with pytest.raises(TypeError, match=r"^images must be uint8 in \[0, 255\], as cifar.load_cifar gives "
                                        r"them, not torch.float32$"):
        evaluate(build_model("resnet32", (10,)).eval(), CategorySpace(10), images, torch.arange(4))
    assert torch.equal(images, before)


def test_augment_is_a_seeded_shift_and_flip():
    images = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)
    a = augment(images, torch.Generator().manual_seed(0))
    b = augment(images, torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and a.dtype == torch.float32 and 0 <= a.min() and a.max() <= 1
    assert torch.equal(to_float(torch.tensor([0, 51, 255], dtype=torch.uint8)), torch.tensor([0, 0.2, 1]))
    padded = torch.nn.functional.pad(to_float(images), (4, 4, 4, 4))
    flipped, shifts = 0, set()
    for i in range(len(images)):
        views = {(dy, dx, f): padded[i, :, dy:dy + 32, dx:dx + 32].flip(2) if f else
                 padded[i, :, dy:dy + 32, dx:dx + 32] for dy in range(9) for dx in range(9) for f in (0, 1)}
        match = [k for k, v in views.items() if torch.equal(v, a[i])]
        assert match, f"image {i} is not a crop of its padded original"
        flipped += match[0][2]
        shifts.add(match[0][:2])
    assert 16 <= flipped <= 48  # about half are flipped
    # every shift of up to 4 pixels each way, the paper's RandomCrop(32, padding=4)
    assert {dy for dy, _ in shifts} == {dx for _, dx in shifts} == set(range(9))
    assert len(shifts) > 20  # rows and columns shift independently (81 crops), not together (9)


def test_augment_flips_each_image_with_probability_one_half():
    """The paper's RandomHorizontalFlip() flips half the images: of 10000 seeded draws, within 4
    standard deviations of 5000 (a binomial's is 50: a probability of 0.45 or 0.3 gives about 4500
    or 3000), and the crop offsets take each of 0..8 alike."""
    from cifar import draw_augmentation
    offsets, flips = draw_augmentation(10000, torch.Generator().manual_seed(0), "cpu")
    assert flips.dtype == torch.bool and abs(flips.sum().item() - 5000) < 200
    counts = torch.bincount(offsets.flatten(), minlength=9)
    assert len(counts) == 9 and counts.min() > 2100 and counts.max() < 2350


def test_normalisation_is_the_papers_for_every_dataset_and_model():
    """The paper's constants, kept on purpose (its std is not CIFAR's true std): a model built for
    any dataset normalises with them, and the attacks' paper protocol converts eps with them."""
    mean, std = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)
    for name, info in DATASETS.items():
        model = build_model("resnet32", (info.num_classes["fine"],), info.mean, info.std)
        assert (tuple(model.model_args["mean"]), tuple(model.model_args["std"])) == (mean, std), name
    images = torch.rand(2, 3, 32, 32)
    normalised = (images - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    model = build_model("resnet32", (10,)).eval()
    assert torch.allclose(model(images), model.head(model.trunk(normalised)), atol=1e-5)


def test_normalisation_from_numpy_is_kept_as_floats_a_safe_load_reads(tmp_path):
    """A mean computed with numpy went into model_args as numpy scalars, which a checkpoint's
    torch.load(weights_only=True) refuses; a zero std made every output NaN."""
    model = build_model("resnet32", (10,), np.float32([0.5, 0.25, 0.125]), torch.tensor([0.5, 0.5, 0.25]))
    torch.save(model.model_args, tmp_path / "args.pth")
    assert torch.load(tmp_path / "args.pth", weights_only=True) == {
        "arch": "resnet32", "output_shape": [10], "mean": [0.5, 0.25, 0.125], "std": [0.5, 0.5, 0.25]}
    with pytest.raises(ValueError, match=r"^normalisation std \[0.5, 0.0, 0.5\] is not 3 finite numbers, each"):
        build_model("resnet32", (10,), std=(0.5, 0, 0.5))


# The paper's code's parameter counts (category head on CIFAR-10; 64x64 and 48x48 decoders).
PARAMETERS = {"resnet32": (466_906, 579_577, 550_905), "resnet110": (1_730_714, 1_843_385, 1_814_713),
              "vgg19": (20_040_522, 20_178_281, 20_149_609)}


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_parameter_counts_equal_the_papers(arch):
    assert arch in PARAMETERS, f"pin {arch}'s parameter counts (category, 64x64, 48x48 heads) in PARAMETERS"
    counts = tuple(sum(p.numel() for p in build_model(arch, shape).parameters())
                   for shape in ((10,), (64, 64), (48, 48)))
    assert counts == PARAMETERS[arch]


@pytest.mark.parametrize("arch", ["resnet32", "vgg19"])
@pytest.mark.parametrize("shape", [(10,), (100,), (50,), (64, 64), (48, 48), (20, 30), (2, 8, 8)])
def test_every_head_gives_the_target_shape_and_trains(arch, shape):
    torch.manual_seed(0)
    model = build_model(arch, shape)
    images = torch.rand(4, 3, 32, 32)
    outputs = model(images)
    assert outputs.shape == (4, *shape)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    for _ in range(2):
        loss = (model(images) - 1).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert torch.isfinite(loss)


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_batch_norms_keep_torchs_defaults_as_the_papers(arch):
    """Every batch norm of every trunk and head is the paper code's plain nn.BatchNorm: running
    statistics with momentum 0.1 and eps 1e-5. Another momentum leaves the parameter counts as
    they are but changes the running statistics, so every eval-mode accuracy. A network of one's own
    may have none (a linear head on a trunk without batch norms)."""
    for shape in ((10,), (64, 64)):
        norms = [m for m in build_model(arch, shape).modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        assert {(m.momentum, m.eps, m.affine, m.track_running_stats) for m in norms} <= {
            (0.1, 1e-5, True, True)}


def test_the_decoder_is_the_head_of_exactly_the_2d_targets():
    """As README and labels/README.md say: (C, H, W) files, any H and W, get the paper's decoder;
    every other shape, (C, 1, H, W) among them, a linear layer reshaped to the target's shape."""
    from architecture import DecoderHead, LinearHead
    for shape in ((1, 64), (3, 5), (17, 23), (128, 128)):
        assert isinstance(build_model("resnet32", shape).head, DecoderHead), shape
    for shape in ((1,), (7,), (1000,), (1, 64, 64), (3, 32, 32), (2, 2, 2, 2)):
        assert isinstance(build_model("resnet32", shape).head, LinearHead), shape


def test_a_vgg_of_your_own_without_five_poolings_is_refused_by_name():
    """docs/reference.md's recipe for a wider VGG: with four 'M' entries the trunk gave (N, 2048)
    features, not the 512 its out_features says, and the head failed with a shape mismatch."""
    from architecture import VGG
    with pytest.raises(ValueError, match="its channels hold 4 'M' entries, not 5"):
        VGG(channels=[64, "M", 128, "M", 256, "M", 512, "M", 512])
    assert VGG(channels=[32, "M", 64, "M", 64, "M", 128, "M", 128, "M"])(torch.zeros(2, 3, 32, 32)).shape == (2, 128)


def test_resnet_blocks_downsample_once_per_stage_and_end_in_a_relu():
    """The paper's CIFAR ResNet: its three stages of (depth - 2) / 6 blocks work at 32x32, 16x16
    and 8x8 (only a stage's first block has stride 2), and each block's output is the ReLU of the
    sum with its shortcut. Parameter counts cannot tell a stride or a ReLU apart."""
    from architecture import BasicBlock
    model = build_model("resnet32", (10,)).eval()
    shapes, negative = [], []

    def record(block, inputs, out):
        shapes.append(tuple(out.shape[1:]))
        negative.append(bool((out < 0).any()))
    for block in model.trunk.modules():
        if isinstance(block, BasicBlock):
            block.register_forward_hook(record)
    with torch.no_grad():
        model(torch.rand(2, 3, 32, 32))
    assert shapes == [(16, 32, 32)] * 5 + [(32, 16, 16)] * 5 + [(64, 8, 8)] * 5
    assert not any(negative)


def test_trunk_features_are_the_papers_pooling_of_the_last_maps():
    """VGG19-BN layer by layer as the paper's code's cfg 'E': 3x3 convolutions (with bias), each
    followed by batch norm and ReLU, max-pooled 2x2 after the 2nd, 4th, 8th, 12th and 16th; its
    features are the flattened 1x1 map. A ResNet's are the average of its last block's 8x8 map.
    Parameter counts and output shapes cannot tell a pooling's kind or place, or a ReLU."""
    def describe(m):
        if isinstance(m, nn.Conv2d):
            return ("conv", m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding, m.bias is not None)
        if isinstance(m, nn.MaxPool2d):
            return ("maxpool", m.kernel_size, m.stride)
        return type(m).__name__
    expected, channels = [], 3
    for out in (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
                512, 512, 512, 512, "M"):
        if out == "M":
            expected.append(("maxpool", 2, 2))
        else:
            expected += [("conv", channels, out, (3, 3), (1, 1), (1, 1), True), "BatchNorm2d", "ReLU"]
            channels = out
    assert [describe(m) for m in build_model("vgg19", (10,)).trunk.layers] == expected + ["Flatten"]
    from architecture import BasicBlock
    model = build_model("resnet32", (10,)).eval()
    last = [b for b in model.trunk.modules() if isinstance(b, BasicBlock)][-1]
    maps = []
    last.register_forward_hook(lambda block, inputs, out: maps.append(out))
    with torch.no_grad():
        features = model.features(torch.rand(2, 3, 32, 32))
    torch.testing.assert_close(features, maps[0].mean((2, 3)))


def test_convolutions_start_from_the_papers_initialisation():
    """N(0, 2 / (k * k * out_channels)) for every convolution of the trunk (He et al.'s fan-out, as
    the paper's code base), batch norms as the identity."""
    torch.manual_seed(0)
    for arch in ("resnet32", "vgg19"):
        for m in build_model(arch, (10,)).trunk.modules():
            if isinstance(m, nn.Conv2d):
                expected = math.sqrt(2 / (m.kernel_size[0] * m.kernel_size[1] * m.out_channels))
                assert m.weight.std().item() == pytest.approx(expected, rel=0.15), (arch, m)
                assert m.bias is None or not m.bias.any()
            elif isinstance(m, nn.BatchNorm2d):
                assert (m.weight == 1).all() and not m.bias.any()


def test_the_decoder_is_the_papers():
    """Any 2-D target gets the decoder (LeakyReLU between its layers, as the paper's), whose
    output is cropped from the top-left corner; other shapes a linear layer."""
    from architecture import DecoderHead, LinearHead, make_head
    for shape in ((64, 64), (48, 48), (20, 30), (8, 8)):
        assert isinstance(make_head(64, shape), DecoderHead), shape
    assert isinstance(make_head(64, (50,)), LinearHead) and isinstance(make_head(64, (2, 8, 8)), LinearHead)
    head = make_head(64, (20, 30)).eval()
    activations = {type(m) for m in head.modules() if not isinstance(m, (nn.Sequential, DecoderHead))
                   and not m._parameters and not m._buffers}
    assert activations == {nn.LeakyReLU}
    features = torch.randn(3, 64)
    full = head.deconvs(head.project(features)[:, :, None, None])[:, 0]
    assert full.shape == (3, 32, 32) and torch.equal(head(features), full[:, :20, :30])


def test_the_decoder_layers_are_the_papers_in_order():
    """Layer by layer as the paper's code's HighDimensionalModel (64x64; its BERT model's first
    kernel is 3): BatchNorm1d, LeakyReLU, Linear to 64; a transposed convolution from 1x1 to k x k;
    then four times BatchNorm2d, LeakyReLU and a kernel-4, stride-2, padding-1 transposed
    convolution (64-32-16-8-1), nothing after the last. Parameter counts cannot tell the order."""
    from architecture import make_head

    def describe(m):
        if isinstance(m, nn.ConvTranspose2d):
            return ("deconv", m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding)
        if isinstance(m, nn.LeakyReLU):
            return ("leaky_relu", m.negative_slope)
        if isinstance(m, nn.Linear):
            return ("linear", m.in_features, m.out_features)
        return (type(m).__name__, m.num_features)
    for kernel, shape in ((4, (64, 64)), (3, (48, 48))):
        head = make_head(512, shape)
        assert [describe(m) for m in head.project] == [("BatchNorm1d", 512), ("leaky_relu", 0.01),
                                                       ("linear", 512, 64)]
        expected = [("deconv", 64, 64, (kernel, kernel), (1, 1), (0, 0))]
        for channels, out_channels in ((64, 32), (32, 16), (16, 8), (8, 1)):
            expected += [("BatchNorm2d", channels), ("leaky_relu", 0.01),
                         ("deconv", channels, out_channels, (4, 4), (2, 2), (1, 1))]
        assert [describe(m) for m in head.deconvs] == expected


def test_nearest_target_decoding():
    torch.manual_seed(0)
    targets = torch.randn(10, 64, 64) * 20
    space = TargetSpace("t", targets)
    assert space.decode(targets).tolist() == list(range(10))
    labels = torch.randint(0, 10, (200,))
    noisy = targets[labels] + torch.randn(200, 64, 64) * 5
    assert torch.equal(space.decode(noisy), labels)
    # against a brute-force mean squared distance
    outputs = torch.randn(50, 64, 64) * 20
    brute = ((outputs[:, None] - targets[None]) ** 2).mean((2, 3)).argmin(1)
    assert torch.equal(space.decode(outputs), brute)


def test_decoding_survives_a_large_common_offset_and_refuses_targets_it_cannot_tell_apart():
    """Distances from the targets' mean: 1000 + small differences decode as exactly as the small
    differences alone (the expanded ||o||^2 - 2 o.t + ||t||^2 in float32 lost them: 4 of 10 classes
    right). Targets so large that squared distances overflow float32 are refused, naming a class."""
    rng = np.random.default_rng(0)
    small = 0.05 * rng.random((10, 4096), dtype=np.float32)
    space = TargetSpace("offset", 1000 + small)
    assert space.decode(space.targets).tolist() == list(range(10))
    noisy = torch.as_tensor(1000 + small[[3, 7, 7, 1]] + 0.002 * rng.standard_normal((4, 4096), dtype=np.float32))
    assert space.decode(noisy).tolist() == [3, 7, 7, 1]
    with pytest.raises(UsageError, match=r"label huge: class 1's own target decodes as class 0 in float32; "
                                         r"its targets are too close together or too large"):
        TargetSpace("huge", 1e20 * rng.random((10, 64), dtype=np.float32))


def test_target_distances_are_the_squared_distances_the_decoder_ranks():
    """labels.target_distances (report.py's distance between two classes' targets): the squared
    distance, from the decoder's own scores, also under a large common offset; for a target as an
    output, the decoder's scores and minus its row rank the classes alike."""
    from labels import target_distances
    rng = np.random.default_rng(0)
    targets = 1000 + rng.random((10, 8, 8), dtype=np.float32)
    flat = targets.reshape(10, -1).astype(np.float64)
    brute = ((flat[:, None] - flat[None]) ** 2).sum(2)
    distances = target_distances(targets)
    assert distances == pytest.approx(brute, rel=1e-9, abs=1e-9)
    scores = TargetSpace("t", targets).scores(torch.as_tensor(targets)).double().numpy()
    assert (np.argsort(-scores, 1, kind="stable") == np.argsort(distances, 1, kind="stable")).all()


def test_decoding_ties_go_to_the_lowest_class():
    """As docs/reference.md says: an exact tie of class scores decodes as the lower class id, for
    each label space, and NaN outputs (a diverged run's) as class 0."""
    from utils.mcr2 import MCR2Space
    targets = TargetSpace("line", np.float32([[0], [2], [4]]))
    assert targets.decode(torch.tensor([[1.0], [3.0], [float("nan")]])).tolist() == [0, 1, 0]
    logits = torch.tensor([[0.0, 1, 1, 0], [0, 0, 0, 0], [float("nan")] * 4])
    assert CategorySpace(4).decode(logits).tolist() == [1, 0, 0]
    bases = torch.zeros(3, 2, 1)
    bases[1, 0, 0] = bases[2, 0, 0] = 1.0  # classes 1 and 2 share a subspace
    space = MCR2Space(3, feature_dim=2, n_components=1, bases=bases)
    assert space.decode(torch.tensor([[1.0, 0.0]])).tolist() == [1]


def test_bf16_rounding_of_targets_is_torchs_and_finds_classes_amp_cannot_decode():
    """Under --amp a model's outputs are bf16 (8 significant bits: steps of 4 between 512 and 1024):
    for targets 1000, 1001, ..., 1009, which float32 decodes, no output the model can give decodes
    as 6 of the 10 classes, and the run trained them to chance without a word. NumPy's rounding is
    torch's bit for bit; the shipped labels, and the offset test's above, in its own way, are checked."""
    from labels import bf16_rounded, decoding_problem
    rng = np.random.default_rng(0)
    spread = rng.standard_normal(10_000, dtype=np.float32) * 10.0 ** rng.integers(-30, 30, 10_000)
    values = np.concatenate([spread, [1000, 1002, 1006, -1e-40, 0, 3.3895e38]]).astype(np.float32)
    assert np.array_equal(bf16_rounded(values), torch.from_numpy(values).bfloat16().float().numpy())
    offset = 1000 + np.arange(10, dtype=np.float32)[:, None]
    space = TargetSpace("offset", offset)  # float32 tells them apart
    bf16_outputs = torch.arange(900, 1100, 0.25).bfloat16().unique().float()[:, None]
    assert sorted(set(space.decode(bf16_outputs).tolist())) == [0, 4, 8, 9]
    assert decoding_problem(offset, "label offset", bf16=True) == (
        "label offset: class 1's own target, rounded to bf16 as the model's outputs are under --amp, "
        "decodes as class 0; its targets are too close together for bf16's 8 significant bits")
    assert decoding_problem(offset, "label offset") is None
    small = 1000 + 0.05 * rng.random((10, 4096), dtype=np.float32)
    assert "rounded to bf16" in decoding_problem(small, "label offset", bf16=True)
    for path in sorted(LABEL_DIR.glob("*.npy")):  # each decodes under --amp as in float32
        assert decoding_problem(np.load(path), path.name, bf16=True) is None


def test_targets_whose_decoder_scores_overflow_are_refused():
    """(10, 1) targets 0, 3e18, ..., 2.7e19: squared distances up to 7.3e38 overflow float32, so
    the scores are +-inf (or NaN, inf - inf, which argmax takes for the largest), but their argmax
    still decoded each target as its class, so the targets were accepted and an output of 3.5e19
    decoded as class 8, not its nearest, 9. Just below the overflow they fit and decode right."""
    with pytest.raises(UsageError, match=r"^label big: its targets are too large for nearest-target "
                                         r"decoding in float32 \(class 0's scores overflow"):
        TargetSpace("big", 3e18 * np.arange(10, dtype=np.float32)[:, None])
    with pytest.raises(UsageError, match=r"^label eye: its targets are too large"):
        TargetSpace("eye", 2e19 * np.eye(10, dtype=np.float32))
    space = TargetSpace("fits", 1e18 * np.arange(10, dtype=np.float32)[:, None])
    outputs = (1e17 * torch.arange(-100, 120) + 3e16)[:, None]  # from -1e19 to 1.2e19, no ties
    nearest = torch.cdist(outputs.double(), space.targets.double()).argmin(1)
    assert torch.equal(space.decode(outputs), nearest)


def test_decoding_under_bf16_autocast_finds_the_nearest_target():
    """The distances' matrix product ran in bf16 under --amp: 476 of 1000 outputs went to another
    class than the nearest target (cifar100_normal_dim=10, whose classes lie 1 apart)."""
    space = load_label_space("normal_dim=10", "cifar100", 100, LABEL_DIR)
    generator = torch.Generator().manual_seed(0)
    outputs = (space.targets[torch.randint(0, 100, (1000,), generator=generator)]
               + 0.5 * torch.randn(1000, 10, generator=generator)).bfloat16()
    nearest = torch.cdist(outputs.double(), space.targets.double()).argmin(1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(space.decode(outputs), nearest)


def test_decoder_margin_is_positive_exactly_when_the_prediction_misses_the_goal():
    """The margin objective of attacks: nearest wrong class against the goal, in decoder scores."""
    torch.manual_seed(0)
    targets = torch.randn(10, 8, 8) * 20
    space = TargetSpace("t", targets)
    outputs = torch.randn(300, 8, 8) * 20
    goal = torch.randint(0, 10, (300,))
    squared = ((outputs[:, None] - targets[None]) ** 2).sum((2, 3))  # (N, C) brute force
    others = squared.scatter(1, goal[:, None], float("inf")).amin(1)
    expected = squared.gather(1, goal[:, None]).squeeze(1) - others  # d(goal) - nearest other
    got = margin(space.scores(outputs), goal)
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-2)
    assert torch.equal(got > 0, space.decode(outputs) != goal)
    logits = torch.tensor([[2.0, 5.0, 1.0], [0.0, -1.0, 3.0]])
    assert margin(CategorySpace(3).scores(logits), torch.tensor([1, 0])).tolist() == [-3.0, 3.0]


def test_category_space_loss_and_decode():
    space = CategorySpace(3, smoothing=0.1)
    logits = torch.tensor([[5.0, 0, 0], [0, 0, 5.0]])
    assert space.decode(logits).tolist() == [0, 2]
    # the paper's smoothing (torchtoolbox's LabelSmoothingLoss): the true class 0.9, the others 0.05
    smoothed = torch.tensor([[0.9, 0.05, 0.05], [0.05, 0.05, 0.9]])
    expected = -(smoothed * logits.log_softmax(1)).sum(1)
    assert torch.allclose(space.loss(logits, torch.tensor([0, 2])), expected)
    with pytest.raises(UsageError, match=r"--smoothing 0.7 must lie in \[0, 0.666667\] for 3 classes"):
        CategorySpace(3, smoothing=0.7)


def test_a_smoothed_category_space_is_rebuilt_from_its_checkpoint_state():
    """--resume and attack.py rebuild the label space from the checkpoint's state(): the smoothing
    comes back with it (--resume compares the rebuilt space with the run's: without it, a
    --smoothing run could not be resumed, "its label space differs from the run's in smoothing")."""
    from utils.labelspace import space_from_state
    space = CategorySpace(3, smoothing=0.1)
    again = space_from_state(space.state())
    assert again.state() == space.state() == {"name": "category", "num_classes": 3, "smoothing": 0.1}
    logits, labels = torch.tensor([[5.0, 0, 0], [0, 0, 5.0]]), torch.tensor([0, 2])
    assert torch.equal(again.loss(logits, labels), space.loss(logits, labels))


def test_attacks_climb_plain_cross_entropy_on_a_smoothed_model():
    """The paper's attack (attack_category_utils.py) climbs nn.functional.cross_entropy whatever
    the model trained with: a --smoothing model is attacked on the unsmoothed loss."""
    logits, labels = torch.tensor([[5.0, 0, 0], [0, 0, 5.0]]), torch.tensor([1, 2])
    plain = -logits.log_softmax(1)[[0, 1], [1, 2]]  # 5 + log(2 + e^-5), log(2 + e^5) - 5
    smoothed = CategorySpace(3, smoothing=0.1)
    assert torch.allclose(smoothed.adversarial_loss(logits, labels), plain)
    assert not torch.allclose(smoothed.loss(logits, labels), plain)  # training keeps the smoothing
    assert torch.allclose(CategorySpace(3).adversarial_loss(logits, labels), plain)


def test_target_loss_is_smooth_l1_per_image():
    targets = torch.zeros(2, 4, 4)
    targets[1] = 3.0
    space = TargetSpace("t", targets)
    outputs = torch.full((2, 4, 4), 0.5)
    # |0.5 - 0| < 1: 0.5 * 0.25 = 0.125; |0.5 - 3| = 2.5 >= 1: 2.5 - 0.5 = 2.0
    assert torch.allclose(space.loss(outputs, torch.tensor([0, 1])), torch.tensor([0.125, 2.0]))


def test_losses_are_float32_for_bf16_outputs():
    """Under --amp the model's outputs are bf16; the label spaces' training and attack losses are
    computed from them in float32 (bf16 keeps 8 bits of mantissa), as docs/reference.md's --amp
    says."""
    torch.manual_seed(0)
    labels = torch.randint(0, 10, (64,))
    spaces = ((CategorySpace(10, smoothing=0.1), (10,)), (TargetSpace("t", torch.randn(10, 8)), (8,)))
    for space, shape in spaces:
        outputs = (3 * torch.randn(64, *shape)).bfloat16()
        for loss in (space.loss, space.adversarial_loss):
            got = loss(outputs, labels)
            assert got.dtype == torch.float32 and torch.equal(got, loss(outputs.float(), labels)), space.name


@pytest.mark.skipif(not REFERENCE_LABELS.exists(), reason="../shared/reference is absent")
@pytest.mark.parametrize("path", sorted(REFERENCE_LABELS.glob("*.npy")) if REFERENCE_LABELS.exists()
                         else [], ids=lambda p: p.stem)
def test_every_published_label_file_decodes_to_its_class(path):
    dataset, label = path.stem.split("_", 1)
    classes = 10 if dataset == "cifar10" else 100
    space = load_label_space(label, dataset, classes, REFERENCE_LABELS)
    assert space.decode(space.targets).tolist() == list(range(classes))
    assert build_model("resnet32", space.output_shape)(torch.rand(2, 3, 32, 32)).shape[1:] == \
        space.targets.shape[1:]


@pytest.mark.parametrize("content, message", [
    (np.zeros((9, 64, 64), np.float32), "has 9 class targets, but the dataset has 10 classes"),
    (np.full((10, 5), np.nan, np.float32), "contains NaN or infinite values"),
    # one bad value among finite ones: a NaN target made every loss of its class NaN
    (np.eye(10, dtype=np.float32) + np.pad([[np.nan]], ((3, 6), (4, 5))), "contains NaN or infinite values"),
    (np.eye(10, dtype=np.float32) + np.pad([[np.inf]], ((9, 0), (0, 9))), "contains NaN or infinite values"),
    (np.array(["a"] * 10), "a label file must be a numeric array"),
    (np.array([{"a": 1}] * 10, dtype=object), "holds pickled objects"),
    (np.arange(10, dtype=np.float32), "expected [classes, ...]"),
    (np.zeros((10, 5), np.float32), "class 1 has the same target as class 0, so"),
    (np.zeros((10, 0), np.float32), "every class target must hold at least one value"),
    (np.zeros((10, 3, 0), np.float32), "every class target must hold at least one value"),
    (np.full((10, 5), 1e39), "holds values beyond float32's range"),
])
def test_bad_label_files(tmp_path, content, message):
    path = tmp_path / "cifar10_bad.npy"
    np.save(path, content, allow_pickle=True)
    with pytest.raises(UsageError) as err:
        read_targets(path, 10)
    assert message in str(err.value)


def test_a_label_file_whose_header_claims_terabytes_is_one_line(tmp_path):
    """A corrupt header (shape (10, 10**12), 400 bytes of data) made numpy try to allocate 36 TiB
    and die with a MemoryError traceback."""
    path = tmp_path / "cifar10_bighdr.npy"
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False,
                                                 "shape": (10, 10**12)})
        f.write(bytes(400))
    with pytest.raises(UsageError) as err:
        read_targets(path, 10)
    assert str(err.value).startswith(f"label file {path} is ")


def test_an_npz_archive_named_npy_is_told_apart(tmp_path):
    """np.load opens an .npz archive whatever its name: its NpzFile was reported as a value type."""
    path = tmp_path / "cifar10_speech.npy"
    with open(path, "wb") as f:
        np.savez(f, targets=np.eye(10, dtype=np.float32))
    with pytest.raises(UsageError) as err:
        read_targets(path, 10)
    assert str(err.value) == (f"label file {path} is a .npz archive (arrays: targets), not a .npy "
                              "array; save the targets with numpy.save")
    # torch.save writes a zip archive too: it was a .npz 'of arrays archive/data.pkl, ...'
    torch.save(torch.eye(10), path)
    with pytest.raises(UsageError) as err:
        read_targets(path, 10)
    assert str(err.value) == (f"label file {path} is a torch.save file, not a .npy array; save the "
                              "targets with numpy.save (a tensor's .numpy())")


def test_a_label_path_that_is_no_file_is_one_line(tmp_path):
    """A FIFO (np.load waited on it for good) or a folder."""
    fifo = tmp_path / "cifar10_fifo.npy"
    os.mkfifo(fifo)
    for path in (fifo, tmp_path):
        with pytest.raises(UsageError) as err:
            read_targets(path, 10)
        assert str(err.value) == f"label file {path} is not a regular file"


def test_the_list_of_labels_leaves_out_folders(tmp_path):
    """... and lists a family's sizes by value (normal_dim=10 came before normal_dim=2)."""
    for name in ("good", "normal_dim=10", "normal_dim=2", "normal_dim=1000", "b2", "a"):
        np.save(tmp_path / f"cifar10_{name}.npy", np.eye(10, dtype=np.float32))
    (tmp_path / "cifar10_folder.npy").mkdir()
    with pytest.raises(UsageError, match=r"cifar10_other.npy for --label other; labels found for cifar10 in "
                                         r".*: category, mcr2, a, b2, good, normal_dim=2, normal_dim=10, "
                                         r"normal_dim=1000$"):
        load_label_space("other", "cifar10", 10, tmp_path)
    with pytest.raises(UsageError, match=r"cifar10_folder.npy is not a regular file$"):
        load_label_space("folder", "cifar10", 10, tmp_path)


def test_a_missing_label_that_labels_generate_makes_says_how(tmp_path):
    """README's `--label bert` (not shipped) listed the labels found and stopped there; a name
    labels.generate makes says the command, a coarse run's its own, a typo nothing more."""
    np.save(tmp_path / "cifar10_good.npy", np.eye(10, dtype=np.float32))
    with pytest.raises(UsageError) as err:
        load_label_space("bert", "cifar10", 10, tmp_path)
    assert str(err.value) == (f"no label file {tmp_path / 'cifar10_bert.npy'} for --label bert; labels "
                              f"found for cifar10 in {tmp_path}: category, mcr2, good; make it with "
                              "python -m labels.generate --dataset cifar10 --label bert --out DIR "
                              "(labels/README.md), then pass --label_dir DIR")
    with pytest.raises(UsageError) as err:
        load_label_space("normal_dim=7", "cifar100", 20, tmp_path,
                         fix=granularity_fix("cifar100", "coarse", "normal_dim=7"))
    assert str(err.value).endswith("; a --label_granularity coarse run needs a file of its own: make one "
                                   "with python -m labels.generate --dataset cifar100 --label_granularity "
                                   "coarse --label normal_dim=7 --out DIR, then pass --label_dir DIR")
    with pytest.raises(UsageError) as err:
        load_label_space("speeh", "cifar10", 10, tmp_path)
    assert str(err.value).endswith(": category, mcr2, good")
    with pytest.raises(UsageError) as err:  # from Python: labels.generate makes nothing for it
        load_label("mnist", "speech", tmp_path)
    assert str(err.value).endswith(f"labels found for mnist in {tmp_path}: none")


def test_a_fine_run_of_a_coarse_label_file_says_to_pass_the_granularity(tmp_path):
    """A coarse file (20 targets, labels.generate --label_granularity coarse) given to a fine
    CIFAR-100 run said only "has 20 class targets, but the dataset has 100 classes", where the
    opposite case says how to make a coarse file; a count of no dataset's gets no hint (one of
    CIFAR-10's: test_train.py's test_another_datasets_label_file_says_dataset_or_file_is_the_mix_up)."""
    np.save(tmp_path / "cifar100_mine.npy", np.random.RandomState(0).rand(20, 8).astype(np.float32))
    np.save(tmp_path / "cifar100_eleven.npy", np.random.RandomState(0).rand(11, 8).astype(np.float32))
    with pytest.raises(UsageError) as err:
        load_label_space("mine", "cifar100", 100, tmp_path)
    assert str(err.value) == (f"label file {tmp_path / 'cifar100_mine.npy'} has 20 class targets, but the dataset "
                              "has 100 classes; 20 targets are one per cifar100 coarse class: pass "
                              "--label_granularity coarse to train on those")
    with pytest.raises(UsageError) as err:
        load_label_space("eleven", "cifar100", 100, tmp_path)
    assert str(err.value).endswith("has 11 class targets, but the dataset has 100 classes")


def test_a_coarse_run_of_a_label_of_your_own_says_to_save_its_file():
    """A coarse run's 100-row file of a label labels.generate does not make advised `labels.generate
    --label mine`, which ends in "unknown label family 'mine'"."""
    fix = granularity_fix("cifar100", "coarse", "mine")
    with pytest.raises(UsageError) as err:
        check_targets(np.random.RandomState(0).rand(100, 8), "label file cifar100_mine.npy", 20, fix)
    assert str(err.value) == ("label file cifar100_mine.npy has 100 class targets, but the dataset has 20 "
                              "classes; a --label_granularity coarse run needs a file of its own: save one "
                              f"target per coarse class as {Path('DIR', 'cifar100_mine.npy')} (labels/README.md, "
                              "'A label of your own'), then pass --label_dir DIR")
    assert "labels.generate" in granularity_fix("cifar100", "coarse", "normal_dim=7")


def test_a_label_dir_that_is_no_folder_is_named(tmp_path):
    """A --label_dir that is missing or a label file listed the builtin labels as found "in" it."""
    good = tmp_path / "cifar10_good.npy"
    np.save(good, np.eye(10, dtype=np.float32))
    for label_dir, what in ((tmp_path / "nowhere", "does not exist"),
                            (good, f"is a file, not a folder; pass the folder holding {good.name}, "
                                   f"--label_dir {tmp_path}")):
        with pytest.raises(UsageError) as err:
            load_label_space("good", "cifar10", 10, label_dir)
        assert str(err.value) == (f"no label file {label_dir / 'cifar10_good.npy'} for --label good: "
                                  f"--label_dir {label_dir} {what}")
    # the label file itself: which folder to pass
    with pytest.raises(UsageError) as err:
        load_label_space("other", "cifar10", 10, good)
    assert str(err.value).endswith(f"--label_dir {good} is a file, not a folder; pass the folder holding "
                                   "cifar10_other.npy")


def test_a_label_dir_at_the_other_datasets_file_names_dataset_as_the_mix_up(tmp_path):
    """--label_dir at labels/label_files/cifar10_speech.npy in a CIFAR-100 run said to pass "the
    folder holding cifar100_speech.npy", not that the file was CIFAR-10's (--dataset left at
    cifar10's, or the wrong file), nor that its own folder holds the one wanted."""
    for dataset, classes in (("cifar10", 10), ("cifar100", 100)):
        np.save(tmp_path / f"{dataset}_speech.npy", np.eye(classes, dtype=np.float32))
    given = tmp_path / "cifar10_speech.npy"
    with pytest.raises(UsageError) as err:
        load_label_space("speech", "cifar100", 100, given)
    assert str(err.value) == (f"no label file {given / 'cifar100_speech.npy'} for --label speech: --label_dir "
                              f"{given} is a file, not a folder; pass the folder holding cifar100_speech.npy, "
                              f"--label_dir {tmp_path}; cifar10_speech.npy is a cifar10 label file, which "
                              "--dataset cifar10 reads")
    (tmp_path / "cifar10_speech.npy").unlink()  # a folder without it: no --label_dir to offer
    given = tmp_path / "cifar100_speech.npy"
    with pytest.raises(UsageError) as err:
        load_label_space("speech", "cifar10", 10, given)
    assert str(err.value).endswith(f"--label_dir {given} is a file, not a folder; pass the folder holding "
                                   "cifar10_speech.npy; cifar100_speech.npy is a cifar100 label file, which "
                                   "--dataset cifar100 reads")


def test_a_partial_archive_is_removed_after_a_failed_download(tmp_path, monkeypatch, capsys):
    """torchvision takes an archive already in --data_dir as complete; a part of one (a killed
    download) would fail every later run alike, so a failure removes it. The messages name the
    folder absolute (the default ./data was 'downloading ... to data')."""
    import torchvision.datasets.utils as tv_utils
    monkeypatch.setattr(tv_utils, "download_url", lambda *args, **kwargs: None)  # never the network
    monkeypatch.chdir(tmp_path)
    archive = tmp_path / "data" / "cifar-10-python.tar.gz"
    archive.parent.mkdir()
    for part, reason in ((gzip.compress(np.random.RandomState(0).bytes(10_000))[:4000],
                          "the download failed: "),
                         (gzip.compress(bytes(10_000)), "the archive lacks data_batch_1, ")):
        archive.write_bytes(part)
        with pytest.raises(UsageError) as raised:
            load_cifar("cifar10", "data", download=True)
        assert str(raised.value).startswith(f"cifar10 not found in {tmp_path}/data/cifar-10-batches-py "
                                            f"({reason}")
        assert "; removed cifar-10-python.tar.gz)" in str(raised.value)
        assert not archive.exists()
    archive.unlink(missing_ok=True)
    with pytest.raises(UsageError):
        load_cifar("cifar10", "data", download=True)
    assert capsys.readouterr().err.startswith(f"downloading https://www.cs.toronto.edu/~kriz/"
                                              f"cifar-10-python.tar.gz to {tmp_path}/data\n")


def test_a_download_in_a_log_file_draws_no_bar(tmp_path, monkeypatch, capsys):
    """torchvision's download draws a tqdm bar on stderr wherever it goes: a job's log file got one
    line of hundreds of carriage-return updates of the 170 MB between 'downloading ...' and the
    run's first line. Away from a terminal the log has the 'downloading' line alone."""
    import tarfile

    import torchvision.datasets.utils as tv_utils
    source = make_cifar10(tmp_path / "source")

    def download_url(url, root, filename):  # as torchvision's: its bar, 32 kB at a time
        archive = tmp_path / "archive.tar.gz"
        with tarfile.open(archive, "w:gz") as tar:
            tar.add(source / "cifar-10-batches-py", "cifar-10-batches-py")
        data = archive.read_bytes()
        with open(Path(root) / filename, "wb") as f, tv_utils.tqdm(total=len(data), unit="B", unit_scale=True) as bar:
            for start in range(0, len(data), 32768):
                f.write(data[start:start + 32768])
                bar.update(len(data[start:start + 32768]))
    monkeypatch.setattr(tv_utils, "download_url", download_url)
    data = load_cifar("cifar10", tmp_path / "data", download=True)
    assert len(data.train_labels) == 300
    assert capsys.readouterr().err == (f"downloading https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz to "
                                       f"{tmp_path}/data\n")


def test_a_failed_download_leaves_no_folder_it_made(tmp_path, monkeypatch):
    """A mistyped --data_dir (cifar100-sample for cifar100-subset) was left behind, made and empty
    but for the download's lock file; a folder that was there stays, as do another job's files."""
    import torchvision.datasets.utils as tv_utils

    def offline(*args, **kwargs):
        raise OSError("<urlopen error [Errno -2] Name or service not known>")
    monkeypatch.setattr(tv_utils, "download_url", offline)
    for data_dir in (tmp_path / "typo" / "data", tmp_path):
        with pytest.raises(UsageError, match="the download failed: OSError"):
            load_cifar("cifar10", data_dir, download=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".cifar-10-python.tar.gz.lock"]
    (tmp_path / "typo").mkdir()
    (tmp_path / "typo" / "theirs").write_text("")
    with pytest.raises(UsageError):
        load_cifar("cifar10", tmp_path / "typo" / "data", download=True)
    assert [p.name for p in (tmp_path / "typo").iterdir()] == ["theirs"]


def test_a_data_dir_without_the_datasets_files_says_what_it_holds(tmp_path, cifar10_dir, cifar100_dir):
    """Offline, a folder that lacked only test_batch, held the other dataset's folder, or a file in
    place of the dataset's folder said only "cifar10 not found in ..."."""
    shutil.copytree(cifar10_dir, tmp_path / "data")
    folder = tmp_path / "data" / "cifar-10-batches-py"
    (folder / "test_batch").unlink()
    with pytest.raises(UsageError) as err:
        load_cifar("cifar10", tmp_path / "data", download=False)
    assert str(err.value).startswith(f"cifar10 not found in {folder} (it lacks test_batch; LABELREP_OFFLINE is "
                                     "set, so no download was tried); put the python-pickle files")
    with pytest.raises(UsageError) as err:
        load_cifar("cifar10", cifar100_dir, download=False)
    assert str(err.value).endswith(f"; {cifar100_dir} holds cifar-100-python/, which --dataset cifar100 reads")
    shutil.rmtree(folder)
    folder.write_text("")
    with pytest.raises(UsageError) as err:
        load_cifar("cifar10", tmp_path / "data", download=True)  # before any download
    assert str(err.value) == (f"{folder} is a file, not the folder of the cifar10 files; remove it, or pass "
                              "another --data_dir")
    folder.unlink()  # a batch that is a folder (an unpacked archive's copy gone wrong): no download
    shutil.copytree(cifar10_dir / "cifar-10-batches-py", folder)
    (folder / "test_batch").unlink()
    (folder / "test_batch").mkdir()
    with pytest.raises(UsageError) as err:
        load_cifar("cifar10", tmp_path / "data", download=True)
    assert str(err.value) == (f"{folder}/test_batch is not a file, as the cifar10 batch of that name "
                              "must be; remove it, or pass another --data_dir")


def test_a_data_dir_a_download_cannot_write_in_says_the_dataset_is_missing(tmp_path, monkeypatch):
    """A read-only --data_dir without the dataset said only "could not write {data_dir}/.cifar-10-python.tar.gz.lock:
    Read-only file system", not that the dataset was missing and a download was tried."""
    import errno
    import cifar

    def read_only(path, waiting=None):  # what a read-only mount answers (root ignores chmod)
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
    monkeypatch.setattr(cifar, "exclusive", read_only)
    with pytest.raises(UsageError) as err:
        load_cifar("cifar10", tmp_path, download=True)
    assert str(err.value).startswith(
        f"cifar10 not found in {tmp_path}/cifar-10-batches-py (a download there failed: could not write "
        f"{tmp_path}/.cifar-10-python.tar.gz.lock: Read-only file system); put the python-pickle files")


def served_archive(folder, monkeypatch, mode=None):
    """A CIFAR-10 archive of a small official-like folder made in `folder` (its files chmod
    `mode` first, where given), which torchvision's download_url then serves instead of the network."""
    import tarfile
    import torchvision.datasets.utils as tv_utils
    make_cifar10(folder / "official", per_batch=20, seed=1)
    archive = folder / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for path in (folder / "official" / "cifar-10-batches-py").iterdir():
            if mode is not None:
                path.chmod(mode)
        tar.add(folder / "official" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    monkeypatch.setattr(tv_utils, "download_url",
                        lambda url, root, filename, *args, **kwargs: shutil.copy(archive, Path(root) / filename))


def test_a_download_into_a_folder_that_lacks_a_file_keeps_the_files_it_has(tmp_path, monkeypatch, capsys):
    """A folder of one's own batches without test_batch had every batch replaced by the archive's
    when the download filled it in: a run trained on other images than the folder held, silently."""
    served_archive(tmp_path, monkeypatch)
    make_cifar10(tmp_path / "data", per_batch=30, seed=2)
    (tmp_path / "data" / "cifar-10-batches-py" / "test_batch").unlink()
    data = load_cifar("cifar10", tmp_path / "data", download=True)
    official = load_cifar("cifar10", tmp_path / "official")
    assert capsys.readouterr().err.endswith(f"to {tmp_path / 'data'} (it lacks test_batch)\n")
    assert len(data.train_labels) == 150  # its own, not the archive's 100
    assert torch.equal(data.test_images, official.test_images)


def test_downloaded_files_have_the_umasks_permissions(tmp_path, monkeypatch):
    """The batches unpacked from the archive kept its modes (0644 in the official one, 0600 in a
    copy of one's own), whatever the umask: a group sharing --data_dir under umask 002 got files
    that only their owner could rewrite or, 0600, read. They get the umask's, as a file written."""
    import stat
    served_archive(tmp_path, monkeypatch, mode=0o600)
    before = os.umask(0o002)
    try:
        load_cifar("cifar10", tmp_path / "data", download=True)
    finally:
        os.umask(before)
    modes = {stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "data" / "cifar-10-batches-py").iterdir()}
    assert modes == {0o664}


def test_a_downloads_temporary_folders_have_the_umasks_permissions(tmp_path, monkeypatch):
    """The folder a download unpacks in was 0700 (mkdtemp's), the archive's folder in it 0755: a job
    killed there left them to a --data_dir shared by a group, where the next job of another user
    could not remove them (an archive's size, for good). They get the umask's mode, as a folder made."""
    import stat
    served_archive(tmp_path, monkeypatch)
    folders = set()
    rename = os.replace

    def replace(source, target):  # a file moved out of the unpacked folder: its folders' modes now
        folders.update(stat.S_IMODE(p.stat().st_mode) for p in (Path(source).parent, Path(source).parent.parent))
        rename(source, target)
    monkeypatch.setattr(os, "replace", replace)
    before = os.umask(0o002)
    try:
        load_cifar("cifar10", tmp_path / "data", download=True)
    finally:
        os.umask(before)
    assert folders == {0o775}


@pytest.mark.parametrize("third_job", [False, True])
def test_a_job_that_waited_on_a_failed_download_takes_its_turn(tmp_path, monkeypatch, third_job):
    """Jobs on a new --data_dir: the first one's download failed, and it removed the folder it had
    made, lock file included, while a second job waited on that lock. The second then went on
    holding the removed file's lock: in the removed folder (its download failed: 'a download there
    failed: cannot use ...'), or, where a third job had made the folder and a lock file again
    meanwhile, beside the third, both downloading at once (each deletes the other's temporary
    folder). Now the second job locks the file at that path, after the third job: one downloads,
    the other finds the files. Threads stand for the jobs (flock locks an open file, not a process);
    hooks in flock and the download order them."""
    import fcntl
    import tarfile
    import threading
    import torchvision.datasets.utils as tv_utils
    make_cifar10(tmp_path / "source", per_batch=20)
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "source" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    data_dir = tmp_path / "new" / "data"
    events = {name: threading.Event() for name in ("a_downloads", "a_done", "b_waits", "b_next", "c_locked")}
    downloading, overlaps, flocks, results = set(), [], [], {}
    real_flock = fcntl.flock

    def wait(event):
        assert events[event].wait(60), f"no {event}"

    def flock(file, operation):
        job = threading.current_thread().name
        # a job's blocking waits: its try without waiting (LOCK_NB, which says 'waiting for ...'
        # where it fails) is no turn taken; counted, the second job went on at once, racing the
        # first job's removal of its folder
        if operation & fcntl.LOCK_NB == 0:
            flocks.append(job)
        waits = flocks.count(job) if operation & fcntl.LOCK_NB == 0 else 0
        if job == "B" and waits:  # waits on the first job's lock; then, fixed, on the third job's
            events["b_waits" if waits == 1 else "b_next"].set()
        real_flock(file, operation)
        if job == "B" and waits == 1:  # once the first job failed and removed its folder
            wait("c_locked" if third_job else "a_done")
        if job == "C":
            events["c_locked"].set()

    def download(url, root, filename, *args, **kwargs):
        job = threading.current_thread().name
        if downloading:
            overlaps.append((job, sorted(downloading)))
        downloading.add(job)
        try:
            if job == "A":
                events["a_downloads"].set()
                wait("b_waits")
                raise OSError("<urlopen error [Errno 101] Network is unreachable>")
            if job == "B":
                events["b_next"].set()
            if job == "C":  # until the second job downloads too, or waits on this one's lock
                wait("b_next")
            shutil.copy(archive, Path(root) / filename)
        finally:
            downloading.discard(job)

    def job():
        try:
            results[threading.current_thread().name] = len(load_cifar("cifar10", data_dir, download=True).train_labels)
        except UsageError as err:
            results[threading.current_thread().name] = str(err)
    monkeypatch.setattr(fcntl, "flock", flock)
    monkeypatch.setattr(tv_utils, "download_url", download)
    a, b = threading.Thread(target=job, name="A"), threading.Thread(target=job, name="B")
    a.start()
    wait("a_downloads")
    b.start()
    a.join(60)
    assert not data_dir.parent.exists()  # the folder the first job made is gone again
    events["a_done"].set()
    if third_job:
        c = threading.Thread(target=job, name="C")
        c.start()
        c.join(60)
    b.join(60)
    assert results.pop("A").startswith(f"cifar10 not found in {data_dir}/cifar-10-batches-py (the download "
                                       "failed: OSError: <urlopen error [Errno 101] Network is unreachable>)")
    assert results == ({"B": 100, "C": 100} if third_job else {"B": 100})
    assert overlaps == []
    assert sorted(p.name for p in data_dir.iterdir()) == [
        ".cifar-10-python.tar.gz.lock", "cifar-10-batches-py", "cifar-10-python.tar.gz"]


# A job that downloads: torchvision's download_url, which takes a file already there as complete,
# here copying the test's archive in two halves, the second once every job is about to load.
DOWNLOADING_JOB = """
import glob, os, sys, time
import torchvision.datasets.utils as tv_utils
from cifar import load_cifar

archive, data_dir, log, locks = sys.argv[1:]
if locks == "no":  # a file system without locks
    import fcntl
    def no_locks(*args):
        raise OSError(37, "No locks available")
    fcntl.flock = no_locks
def fake_download(url, root, filename=None, *args, **kwargs):  # torchvision's signature
    path = os.path.join(root, filename or os.path.basename(url))
    os.makedirs(root, exist_ok=True)
    if os.path.exists(path):
        return
    with open(log, "a") as f:
        print("download", file=f)
    with open(archive, "rb") as src, open(path, "wb") as dst:
        dst.write(src.read(os.path.getsize(archive) // 2))
        dst.flush()
        # every job about to load; without locks every one downloading (one late on a busy machine
        # found the others' archive whole and took it)
        while len(glob.glob(f"{log}.ready.*")) < 3 or (locks == "no" and open(log).read().count("download") < 3):
            time.sleep(0.1)
        time.sleep(1)  # the others are in load_cifar now
        dst.write(src.read())
tv_utils.download_url = fake_download
open(f"{log}.ready.{os.getpid()}", "w").close()
data = load_cifar("cifar10", data_dir, download=True)
print(len(data.train_labels), int(data.train_images.sum()), data.class_names[9])
"""


@pytest.mark.parametrize("locks", ["yes", "no"])
def test_jobs_started_together_download_once_and_all_read_the_whole_dataset(tmp_path, locks):
    """A job array on a fresh --data_dir: one job downloads, the others wait for it (they do not
    take its part of an archive for a whole one, nor download it again), and every job reads the
    whole dataset. Where the file system has no locks, each job downloads, and each still reads
    the whole dataset."""
    import tarfile
    make_cifar10(tmp_path / "source", per_batch=200)
    archive, log = tmp_path / "cifar-10-python.tar.gz", tmp_path / "downloads.log"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "source" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    (tmp_path / "job.py").write_text(DOWNLOADING_JOB)
    if locks == "yes":  # what a download killed before left; the job that holds the lock removes it
        (tmp_path / "data" / ".cifar-10-batches-py.k1ll3d").mkdir(parents=True)
        (tmp_path / "data" / ".cifar-10-batches-py.k1ll3d" / "cifar-10-python.tar.gz").write_bytes(b"part")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, tmp_path / "job.py", archive, tmp_path / "data", log, locks]
    jobs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             cwd=REPO, env=env) for _ in range(3)]
    outputs = [job.communicate(timeout=300) for job in jobs]
    assert [job.returncode for job in jobs] == [0, 0, 0], [err[-2000:] for _, err in outputs]
    expected = load_cifar("cifar10", tmp_path / "source")
    line = f"1000 {int(expected.train_images.sum())} truck"
    assert [out.strip() for out, _ in outputs] == [line] * 3
    downloads = 1 if locks == "yes" else 3
    assert log.read_text() == "download\n" * downloads
    assert sum("downloading " in err for _, err in outputs) == downloads
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == [
        ".cifar-10-python.tar.gz.lock", "cifar-10-batches-py", "cifar-10-python.tar.gz"]


def test_text_named_npy_is_not_a_npy_file(tmp_path):
    path = tmp_path / "cifar10_text.npy"
    path.write_text("0.1 0.2 0.3\n")
    with pytest.raises(UsageError, match="is not a .npy file \\(no NumPy header\\)"):
        read_targets(path, 10)


def test_truncated_label_file(tmp_path):
    path = tmp_path / "cifar10_cut.npy"
    np.save(path, np.random.rand(10, 64, 64).astype(np.float32))
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(UsageError, match="is not a readable .npy file"):
        read_targets(path, 10)


@pytest.mark.parametrize("arch", ["resnet32", "vgg19"])
@pytest.mark.parametrize("shape", [(10,), (64, 64)])
def test_fold_batch_norm_keeps_outputs_and_input_gradients(arch, shape):
    """Attacks run on the folded network: every trunk batch norm is gone, outputs and the input
    gradient equal the original's (eval mode, non-trivial running statistics). In float64, so the
    check is of the algebra: in float32 this deep, ill-conditioned network's input gradient moves
    by ~1e-3 relative under any change of summation order, folding included."""
    from architecture import fold_batch_norm
    torch.manual_seed(0)
    model = build_model(arch, shape)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    model = model.double().eval()
    folded = fold_batch_norm(model)
    assert not model.training and not folded.training
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.trunk.modules())
    images = torch.rand(8, 3, 32, 32, dtype=torch.float64)

    def output_and_gradient(net):
        x = images.clone().requires_grad_(True)
        out = net(x)
        return out.detach(), torch.autograd.grad(out.square().sum(), x)[0]

    (out, grad), (out_f, grad_f) = output_and_gradient(model), output_and_gradient(folded)
    assert ((out_f - out).norm() / out.norm()).item() < 1e-12
    assert ((grad_f - grad).norm() / grad.norm()).item() < 1e-10


def test_fold_batch_norm_leaves_a_training_model_training():
    """It switched the caller's model to eval mode: a caller folding between training steps
    would have gone on training with frozen batch statistics."""
    from architecture import fold_batch_norm
    model = build_model("resnet32", (10,)).train()
    folded = fold_batch_norm(model)
    assert model.training and not folded.training


def frozen_batch_norms(model):
    """`model` training with its batch norms frozen, as one fine-tunes; returns how many it froze."""
    model.train()
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for norm in norms:
        norm.eval()
    return len(norms)


def test_fold_batch_norm_leaves_frozen_batch_norms_frozen():
    """It put the caller's model back with model.train(), which also set the batch norms the
    caller had frozen (fine-tuning with fixed statistics) training again: run_attack between
    fine-tuning steps unfroze them."""
    from architecture import fold_batch_norm
    model = build_model("resnet32", (10,))
    frozen = frozen_batch_norms(model)
    fold_batch_norm(model)
    assert model.training and frozen
    assert [m.training for m in model.modules() if isinstance(m, nn.BatchNorm2d)] == [False] * frozen


def test_evaluation_leaves_the_callers_model_in_its_modes():
    """evaluate() and predict() left a caller's training model in eval mode (as run_attack did,
    mended earlier): a notebook's own loop that evaluated between epochs trained on with frozen
    batch statistics. They compute in eval mode, and leave each module in its mode, frozen batch
    norms included."""
    from utils.training import evaluate, predict
    torch.manual_seed(0)
    model, space = build_model("resnet32", (10,)), CategorySpace(10)
    frozen = frozen_batch_norms(model)
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    outputs, scores = predict(model, images), evaluate(model, space, images, torch.arange(4))
    assert model.training
    assert [m.training for m in model.modules() if isinstance(m, nn.BatchNorm2d)] == [False] * frozen
    with torch.no_grad():
        reference = model.eval()(to_float(images))
    assert torch.equal(outputs, reference)
    assert scores["loss"] == pytest.approx(space.loss(reference, torch.arange(4)).mean().item(), rel=1e-6)


class ShapeCheckingTrunk(nn.Module):
    """A trunk of one's own with Python control flow on its input's shape, which torch.fx cannot
    trace."""

    def __init__(self):
        super().__init__()
        self.layers = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                    nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.out_features = 8

    def forward(self, x):
        if x.shape[-1] != 32:
            raise ValueError(f"32x32 images expected, got {tuple(x.shape)}")
        return self.layers(x)


def test_fold_batch_norm_leaves_an_untraceable_trunk_unfolded(monkeypatch):
    """A registered trunk that trains, but that torch.fx cannot trace, made attack.py end in a
    TraceError traceback (symbolically traced variables cannot be used as inputs to control
    flow); the attacked copy is now the model unfolded, in eval mode, with the same outputs."""
    from utils.attacks import Shared
    monkeypatch.setitem(ARCHITECTURES, "shape_checking", ShapeCheckingTrunk)
    torch.manual_seed(0)
    model = build_model("shape_checking", (10,)).train()
    folded = Shared().network(model, channels_last=True)
    assert model.training and not folded.training
    images = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(folded(images), model.eval()(images), rtol=1e-5, atol=1e-6)
    assert folded.trunk is not model.trunk


def test_an_unknown_registry_name_lists_the_choices(tmp_path):
    with pytest.raises(UsageError, match=r"^unknown model 'resnet18'; choose from "
                                         + ", ".join(ARCHITECTURES) + "$"):
        build_model("resnet18", (10,))
    with pytest.raises(UsageError, match=r"^unknown dataset 'mnist'; choose from cifar10, cifar100$"):
        load_cifar("mnist", tmp_path)
