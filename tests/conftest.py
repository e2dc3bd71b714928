"""Fixtures: tiny CIFAR-format datasets written to a temporary folder, and script runners.

The tiny CIFAR-10 is learnable on purpose: each class is a solid colour plus noise, so a couple of
epochs separate trained from untrained models (attack tests rely on that).
"""
import contextlib
import datetime
import errno
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from architecture import build_model
from cifar import load_cifar, to_float
from utils.labelspace import CategorySpace, TargetSpace
from utils.training import evaluate

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SUBSET = SHARED / "data" / "cifar10-subset"
REFERENCE_LABELS = SHARED / "reference" / "label_representations"

needs_compiler = pytest.mark.skipif(not shutil.which(os.environ.get("CXX", "g++")),
                                    reason="torch.compile on the CPU needs a C++ compiler")

# Tests never download: a missing dataset must fail at once with the message.
os.environ["LABELREP_OFFLINE"] = "1"


def class_images(labels, rng):
    """Images whose colour encodes the class, with noise: (N, 3072) uint8."""
    palette = np.random.RandomState(1).randint(0, 256, size=(100, 3))
    base = palette[labels][:, :, None].repeat(1024, axis=2).astype(np.float64)
    noisy = base + rng.normal(0, 40, size=base.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8).reshape(len(labels), 3072)


def write_batch(path, labels, rng, label_key="labels", extra=None):
    batch = {"batch_label": path.name, "data": class_images(labels, rng), label_key: list(labels),
             "filenames": [f"{i}.png" for i in range(len(labels))]}
    batch.update(extra or {})
    with open(path, "wb") as f:
        pickle.dump(batch, f)


def make_cifar10(root, per_batch=60, test=100, seed=0):
    rng = np.random.RandomState(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for i in range(1, 6):
        write_batch(folder / f"data_batch_{i}", rng.randint(0, 10, per_batch), rng)
    write_batch(folder / "test_batch", rng.randint(0, 10, test), rng)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": names, "num_cases_per_batch": per_batch, "num_vis": 3072}, f)
    return root


def make_cifar100(root, train=300, test=100, seed=0):
    rng = np.random.RandomState(seed)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    for name, n in (("train", train), ("test", test)):
        fine = rng.randint(0, 100, n)
        write_batch(folder / name, fine, rng, label_key="fine_labels",
                    extra={"coarse_labels": list(fine // 5)})
    with open(folder / "meta", "wb") as f:
        pickle.dump({"fine_label_names": [f"fine{i}" for i in range(100)],
                     "coarse_label_names": [f"coarse{i}" for i in range(20)]}, f)
    return root


@pytest.fixture(scope="session")
def cifar10_dir(tmp_path_factory):
    return make_cifar10(tmp_path_factory.mktemp("cifar10"))


@pytest.fixture(scope="session")
def cifar100_dir(tmp_path_factory):
    return make_cifar100(tmp_path_factory.mktemp("cifar100"))


@pytest.fixture(scope="session")
def label_dir(tmp_path_factory):
    """Label files of each shape family for the tiny datasets."""
    folder = tmp_path_factory.mktemp("labels")
    rng = np.random.RandomState(0)
    for dataset, classes in (("cifar10", 10), ("cifar100", 100)):
        np.save(folder / f"{dataset}_speech.npy", rng.uniform(-80, 0, (classes, 64, 64)).astype(np.float32))
        np.save(folder / f"{dataset}_bert.npy", rng.uniform(0, 80, (classes, 48, 48)).astype(np.float32))
        np.save(folder / f"{dataset}_glove.npy", rng.normal(0, 1, (classes, 50)).astype(np.float32))
    return folder


def run_script(script, *args, check=True, env=None, timeout=600):
    """Run a repo script in a subprocess; returns the CompletedProcess (stdout, stderr as text)."""
    proc = subprocess.run([sys.executable, str(REPO / script), *map(str, args)], capture_output=True,
                          text=True, cwd=REPO, env={**os.environ, **(env or {})}, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{script} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return proc


def run_importing(*argv, timeout=120):
    """Run `python -X importtime *argv` in the repo: (the CompletedProcess, the top-level packages
    it imported, its stderr lines other than the import times)."""
    proc = subprocess.run([sys.executable, "-X", "importtime", *map(str, argv)], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)
    imported = {name.split(".")[0] for name in re.findall(r"^import time:.*\| +(\S+)$", proc.stderr, re.M)}
    said = [line for line in proc.stderr.splitlines() if not line.startswith("import time:")]
    return proc, imported, said


def last_json(proc):
    return json.loads(proc.stdout.strip().splitlines()[-1])


def unstamped(line):
    """A log's status or progress `line` without the date and time it must start with
    (utils.errors.STAMP, as `date +%FT%T` writes it)."""
    match = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d) (.*)", line)
    assert match and datetime.datetime.fromisoformat(match[1]), line
    return match[2]


# ---------------------------------------------------------------- trained models
# Trained in-process on the tiny colour CIFAR, so the suite stays fast on a shared CPU: a resnet32
# with category labels (a few Adam steps), and a high-dimensional model that shares its trunk and
# regresses the 4096 values of the fixture's speech targets, flattened, with a linear head fitted by
# least squares (the decoder head is slow to train).


@contextlib.contextmanager
def torch_threads(count):
    """`count` torch threads for the block, then the number there was."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module: on a CPU shared with other jobs, two threads each stall
    waiting for the other."""
    with torch_threads(1):
        yield


def read_only(monkeypatch, folder):
    """Writes into `folder` refused as a read-only mount refuses them (a shared install, a dataset
    mount; root, who may run the tests, ignores chmod): a new folder there, and the temporary file
    of an atomic write."""
    real_mkstemp, real_mkdir = tempfile.mkstemp, os.mkdir

    def inside(path):
        return Path(os.path.abspath(path)).is_relative_to(os.path.abspath(folder))

    def mkstemp(*args, dir=None, **kwargs):
        if dir is not None and inside(dir):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(Path(dir) / ".tmpfile"))
        return real_mkstemp(*args, dir=dir, **kwargs)

    def mkdir(path, *args, **kwargs):
        if inside(path) and os.path.isdir(os.path.dirname(os.path.abspath(path))):  # else ENOENT, as a mount
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_mkdir(path, *args, **kwargs)
    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    monkeypatch.setattr(os, "mkdir", mkdir)


@pytest.fixture(scope="session")
def tiny(cifar10_dir):
    return load_cifar("cifar10", cifar10_dir)


def flat(tensors):
    """Tensors (parameters, gradients, buffers) as one detached float64 vector."""
    return torch.cat([t.detach().flatten() for t in tensors]).double()


def recalibrate_batch_norm(model, images):
    """Running statistics = the exact statistics of `images` (a few steps leave them stale)."""
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # cumulative average
    model.train()
    with torch.no_grad():
        model(images)
    model.eval()


@pytest.fixture(scope="session")
@torch_threads(1)  # the same weights whichever test builds it first: float rounding follows the threads
def category(tiny):
    torch.manual_seed(0)
    space, model = CategorySpace(10), build_model("resnet32", (10,))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(20):
        index = torch.randint(0, len(tiny.train_labels), (32,), generator=generator)
        loss = space.loss(model(to_float(tiny.train_images[index])), tiny.train_labels[index]).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    recalibrate_batch_norm(model, to_float(tiny.train_images))
    assert evaluate(model, space, tiny.test_images, tiny.test_labels)["acc"] > 0.8
    return model, space


@pytest.fixture(scope="session")
@torch_threads(1)
def highdim(category, tiny, label_dir):
    space = TargetSpace("speech_flat", np.load(label_dir / "cifar10_speech.npy").reshape(10, -1))
    model = build_model("resnet32", space.output_shape)
    model.trunk.load_state_dict(category[0].trunk.state_dict())
    model.eval()
    with torch.no_grad():
        features = model.features(to_float(tiny.train_images))
        design = torch.cat([features, torch.ones(len(features), 1)], 1)
        solution = torch.linalg.lstsq(design, space.targets[tiny.train_labels]).solution
        model.head.linear.weight.copy_(solution[:-1].T)
        model.head.linear.bias.copy_(solution[-1])
    assert evaluate(model, space, tiny.test_images, tiny.test_labels)["acc"] > 0.8
    return model, space


@pytest.fixture(params=["category", "highdim"])
def trained(request):
    return request.getfixturevalue(request.param)


