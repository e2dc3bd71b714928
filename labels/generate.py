"""Generate label representations as `{out}/{dataset}_{name}.npy`, float32 (C, ...).

    # every family that can be made offline, for both datasets (speech spoken by espeak-ng)
    python -m labels.generate --dataset cifar10 cifar100 --label all \
        --out labels/label_files --force
    # the paper's speech labels, from the paper's recordings ({i}.wav, one per class)
    python -m labels.generate --dataset cifar10 --label speech \
        --audio_dir ../shared/reference/label_representations/cifar10_wav --out /tmp/labels
    # the follow-up's entropy and overlap labels
    python -m labels.generate --dataset cifar10 --label normal_dim=100 uniform_gap=3 \
        --out /tmp/labels
    # text families (need a downloaded or saved model / vector file)
    python -m labels.generate --dataset cifar100 --label bert --text_model path/to/bert-base-uncased
    python -m labels.generate --dataset cifar100 --label glove --glove path/to/glove.6B.50d.txt

Families (C classes; `FAMILIES` is the registry, `make_label` the entry point for code):
    speech      (C, 64, 64) in [-80, 0]  mel spectrogram (dB) of the spoken class name
    shuffle     (C, 64, 64) in [-80, 0]  speech with its 64 time columns permuted per class
    uniform     (C, 64, 64) in [0, 80]   class i is the constant 80 i / (C - 1)
    random      (C, 64, 64) in [0, 80)   uniform random
    composite   (C, 64, 64) in [0, 80]   sum of 10 oriented Gaussian blobs, rescaled per class
    lowdim      (C, C)      in [0, 80)   uniform random
    bert        (C, 48, 48) in [0, 80]   BERT hidden states of "[CLS] name [SEP]"
    glove       (C, 50)                  GloVe word vectors (raw values)
    normal_dim=D  (C, D)                 class i drawn from N(i, 0.1)      (follow-up: "entropy")
    uniform_gap=G (C, 50)                class i drawn from U(iG, 9 + iG)  (follow-up: "overlap")

Random families default to the seed the paper used where it is known (`Family.seed`): with it,
random, lowdim and shuffle reproduce the published files exactly (random and lowdim bit for bit;
shuffle bit for bit when given the paper's speech file through --speech_file).

Says each file written on stderr (`wrote PATH  SHAPE  [MIN, MAX]`); stdout holds one line, one JSON
object: `out` and every file written, with its shape, min and max (`| jq .out` reads it). Exit
status: 0 done, 2 after one `error:` line (bad input), 130 Ctrl-C or SIGTERM.
"""
import sys
from pathlib import Path

if __name__ == "__main__":  # first: a Ctrl-C while modules load is one line, not a traceback
    if not __package__:  # run as a file (python labels/generate.py), not with -m: import from the repo
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from utils import errors
    errors.quiet_interrupts()

import bz2
import contextlib
import gzip
import io
import itertools
import logging
import lzma
import math
import os
import re
import shutil
import subprocess
import tempfile
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field, fields

import numpy as np

from labels import LABEL_DIR, LabelError, check_targets, read_targets
from utils.atomic import file_set, made_folders, print_json, taking_turns, temporary_names
from utils.constants import env_flag, offline
from utils.errors import (CliParser, DefaultsFormatter, ExtendList, UsageError, as_parsed, choice, log, nonempty,
                          doc_paragraphs, number, os_errors_as_usage, run_cli, sigterm_as_interrupt)
from utils.flags import ignored_lines
from utils.pickles import meta_class_names
from utils.runs import check_folder_names, resolved

# ----------------------------------------------------------------------------- datasets and names

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)
# The 100 fine labels in the dataset's own (alphabetical) order: label i is CIFAR100_CLASSES[i].
CIFAR100_CLASSES = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle",
    "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle",
    "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch", "crab", "crocodile", "cup",
    "dinosaur", "dolphin", "elephant", "flatfish", "forest", "fox", "girl", "hamster", "house",
    "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion", "lizard", "lobster", "man",
    "maple_tree", "motorcycle", "mountain", "mouse", "mushroom", "oak_tree", "orange", "orchid",
    "otter", "palm_tree", "pear", "pickup_truck", "pine_tree", "plain", "plate", "poppy",
    "porcupine", "possum", "rabbit", "raccoon", "ray", "road", "rocket", "rose", "sea", "seal",
    "shark", "shrew", "skunk", "skyscraper", "snail", "snake", "spider", "squirrel", "streetcar",
    "sunflower", "sweet_pepper", "table", "tank", "telephone", "television", "tiger", "tractor",
    "train", "trout", "tulip", "turtle", "wardrobe", "whale", "willow_tree", "wolf", "woman",
    "worm",
)
# The 20 superclasses (--label_granularity coarse), in the dataset's order.
CIFAR100_COARSE_CLASSES = (
    "aquatic_mammals", "fish", "flowers", "food_containers", "fruit_and_vegetables",
    "household_electrical_devices", "household_furniture", "insects", "large_carnivores",
    "large_man-made_outdoor_things", "large_natural_outdoor_scenes", "large_omnivores_and_herbivores",
    "medium_mammals", "non-insect_invertebrates", "people", "reptiles", "small_mammals", "trees",
    "vehicles_1", "vehicles_2",
)


@dataclass(frozen=True)
class Dataset:
    """What the generators need to know about a dataset: its classes and where its meta file is."""
    num_classes: int
    class_names: tuple        # built-in names, standard order
    folder: str               # the folder the official archive unpacks to
    meta_file: str            # pickled dict inside `folder`
    meta_key: str             # key of the class-name list in it


DATASETS = {
    "cifar10": Dataset(10, CIFAR10_CLASSES, "cifar-10-batches-py", "batches.meta", "label_names"),
    "cifar100": Dataset(100, CIFAR100_CLASSES, "cifar-100-python", "meta", "fine_label_names"),
    # --label_granularity coarse (as utils.runs.dataset_folder names it); its files are named as
    # the fine ones, cifar100_{label}.npy, in a folder of their own
    "cifar100_coarse": Dataset(20, CIFAR100_COARSE_CLASSES, "cifar-100-python", "meta",
                               "coarse_label_names"),
}
GRANULAR = ("cifar100",)  # datasets with --label_granularity coarse

# Name sets: how a class name is written for a family. Each maps a dataset name to rewrites of
# individual class names; classes not listed are written as the dataset names them, with
# underscores read as spaces ("aquarium_fish" -> "aquarium fish").
NAME_SETS = {
    # The dataset's own names.
    "standard": {},
    # What the paper's recordings say: "car" for automobile. CIFAR-100's say the fine names as
    # they are, in the singular: no recording ends in a plural's sibilant (labels/README.md).
    "spoken": {"cifar10": {"automobile": "car"}},
    # The forms the paper's BERT and GloVe labels were made from (its cifar100_text.txt): plural
    # flowers, containers and fruit, "computer keyboard", trees without "tree".
    "text": {"cifar100": {
        "orchid": "orchids", "poppy": "poppies", "rose": "roses", "sunflower": "sunflowers",
        "tulip": "tulips", "bottle": "bottles", "bowl": "bowls", "can": "cans", "cup": "cups",
        "plate": "plates", "apple": "apples", "mushroom": "mushrooms", "orange": "oranges",
        "pear": "pears", "sweet_pepper": "sweet peppers", "keyboard": "computer keyboard",
        "maple_tree": "maple", "oak_tree": "oak", "palm_tree": "palm", "pine_tree": "pine",
        "willow_tree": "willow", "lawn_mower": "lawn-mower",
    }},
}


def get_dataset(name):
    """The `Dataset` called `name`; LabelError listing the valid names otherwise."""
    return DATASETS[choice("dataset", name, DATASETS, LabelError)]


def dataset_class_names(dataset, data_dir=None):
    """The dataset's class names in label order, from its meta file under `data_dir` when there is
    one (`data_dir` itself or `data_dir/<archive folder>`), else the built-in list; LabelError when
    `data_dir` is no folder."""
    spec = get_dataset(dataset)
    if data_dir is not None:
        if not Path(data_dir).is_dir():  # a typo: was a note, then the built-in names, exit 0
            what = "is a file, not a folder" if Path(data_dir).exists() else "does not exist"
            raise LabelError(f"--data_dir {data_dir} {what} (give the dataset's folder, or leave "
                             "it out for the built-in names)")
        for candidate in (Path(data_dir) / spec.meta_file,
                          Path(data_dir) / spec.folder / spec.meta_file):
            if candidate.is_file():
                names = meta_class_names(candidate, spec.meta_key, spec.num_classes, fix=(
                    "give --data_dir the dataset's own folder, or leave it out for the built-in names"))
                if names is None:
                    raise LabelError(f"{candidate} has no list of class names under '{spec.meta_key}'")
                return names
        log(f"note: no {spec.meta_file} under {data_dir}; using the built-in {dataset} class names")
    return list(spec.class_names)


def class_names(dataset, name_set="standard", data_dir=None):
    """Class names as a family should read them: `name_set` is a key of NAME_SETS or the path of a
    text file with one name per line (blank lines ignored), in class order."""
    num_classes = get_dataset(dataset).num_classes
    if name_set in NAME_SETS:
        rewrites = NAME_SETS[name_set].get(dataset, {})
        return [rewrites.get(n, n.replace("_", " "))
                for n in dataset_class_names(dataset, data_dir)]
    path = Path(name_set)
    if not path.is_file():
        raise LabelError(f"--names {name_set!r} is neither a name set ({', '.join(NAME_SETS)}) "
                         f"nor a file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise LabelError(f"--names file {path} is not UTF-8 text ({err.reason})") from None
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if len(names) != num_classes:
        raise LabelError(f"{path} holds {len(names)} names; {dataset} has {num_classes} classes")
    twice = [n for i, n in enumerate(names) if n in names[:i]]
    if twice:
        raise LabelError(f"{path} names {twice[0]!r} twice; two classes with one name would get one "
                         "target")
    return names


# ----------------------------------------------------------------------------- options and registry

DEFAULT_TEXT_MODEL = "bert-base-uncased"
DEFAULT_GLOVE = "glove-wiki-gigaword-50"     # gensim-downloader name of GloVe 6B, 50 dimensions
DEFAULT_ESPEAK_VOICE = "en-us"
# The follow-up's label sizes (its code was not published with them; see labels/README.md).
FOLLOWUP_DIMS = (1, 2, 5, 10, 25, 50, 100, 500, 1000, 2000, 4000)
FOLLOWUP_GAPS = (0, 1, 2, 3, 4, 5, 6, 8, 10)


@dataclass
class Options:
    """Inputs some families need besides the class names and seed (None: the family's default)."""
    audio_dir: str | None = None        # speech: {i}.wav per class; None: espeak-ng
    espeak_voice: str = DEFAULT_ESPEAK_VOICE
    speech_file: str | None = None      # shuffle: permute this speech file's targets
    speech_targets: np.ndarray | None = field(default=None, repr=False)  # shuffle: or these
    text_model: str | None = None       # bert: hub name or local directory
    glove: str | None = None            # glove: gensim-downloader name or GloVe text file


@dataclass(frozen=True)
class Family:
    """One label family: `make(class_names, seed, options, param)` -> float32 (C, ...)."""
    make: Callable
    help: str
    seed: int | None = 0            # default seed (the paper's where known); None: not random
    names: str | None = None        # default NAME_SETS key; None: the names are not used
    offline: bool = True            # part of `--label all` without extra flags
    param: Callable | None = None   # parses the value after "=" (parametrised families only)


# ----------------------------------------------------------------------------- speech

# The paper's recipe: load at 22050 Hz, trim silence, 64-band mel spectrogram (hop 256, up to
# 8 kHz), dB relative to the loudest bin (so values lie in [-80, 0]), resized to 64 x 64.
SAMPLE_RATE = 22050
HOP_LENGTH = 256
N_MELS = 64
FMAX = 8000
SPEECH_SIZE = (64, 64)


def _one_line(exc):
    return " ".join(str(exc).split()) or type(exc).__name__


def spectrogram_image(path):
    """Speech target of one recording: float (64, 64) in [-80, 0] dB, rows mel bands (low to high),
    columns time."""
    import librosa
    from skimage.transform import resize

    try:
        with warnings.catch_warnings():
            # librosa warns before falling back from soundfile to audioread; the error (if any)
            # is reported below as one line.
            warnings.simplefilter("ignore")
            audio, rate = librosa.load(path, sr=SAMPLE_RATE, mono=True)
    except Exception as exc:  # soundfile / audioread raise many types; all mean "unreadable"
        raise LabelError(f"cannot read audio file {path}: {_one_line(exc)}") from exc
    audio, _ = librosa.effects.trim(audio)
    if audio.size == 0 or not np.any(audio):
        raise LabelError(f"audio file {path} is silent")
    # Reflect padding at both ends, librosa's default before 0.10 and so the paper's: 0.10's
    # zero padding changes the first and last frames by up to 5 dB.
    power = librosa.feature.melspectrogram(y=audio, sr=rate, hop_length=HOP_LENGTH,
                                           n_mels=N_MELS, fmax=FMAX, pad_mode="reflect")
    decibels = librosa.power_to_db(power, ref=np.max)
    # Bilinear with anti-aliasing, as scikit-image's resize does by default when shrinking.
    return resize(decibels, SPEECH_SIZE, order=1, mode="reflect", anti_aliasing=True,
                  preserve_range=True)


def audio_files(audio_dir, num_classes):
    """Paths `audio_dir/{i}.wav` for i < num_classes; LabelError when the folder does not hold
    exactly one numbered recording per class."""
    folder = Path(audio_dir)
    if not folder.is_dir():
        raise LabelError(f"--audio_dir {folder} is not a directory")
    numbered = {}
    for p in sorted(folder.iterdir()):
        if m := re.fullmatch(r"(\d+)\.wav", p.name, flags=re.IGNORECASE):
            i = int(m.group(1))
            if str(i) != m.group(1) or i in numbered:  # 01.wav, or 1.WAV beside 1.wav
                raise LabelError(f"{folder} holds {p.name}" + (f" beside {numbered[i].name}" if i in numbered
                                 else "") + f": name recordings 0.wav .. {num_classes - 1}.wav, once "
                                 "each, without leading zeros")
            numbered[i] = p
    if len(numbered) != num_classes:
        raise LabelError(f"{folder} holds {len(numbered)} numbered .wav files; expected "
                         f"{num_classes} (0.wav .. {num_classes - 1}.wav, one per class)")
    missing = [f"{i}.wav" for i in range(num_classes) if i not in numbered]
    if missing:
        raise LabelError(f"{folder} lacks {', '.join(missing)} (expected 0.wav .. "
                         f"{num_classes - 1}.wav, one per class)")
    paths = [numbered[i] for i in range(num_classes)]
    for path in paths:  # a WAV cut short (a copy stopped part way) reads, without a word, as shorter audio
        with open(path, "rb") as f:
            head, size = f.read(12), os.fstat(f.fileno()).st_size
        declared = int.from_bytes(head[4:8], "little") + 8
        # a streaming writer's unknown length is 0 or 0xFFFFFFFF; one byte over: a missing pad byte
        if head[:4] == b"RIFF" and head[8:] == b"WAVE" and declared - 8 not in (0, 0xFFFFFFFF) \
                and declared > size + 1:
            raise LabelError(f"audio file {path} is cut short: its header gives {declared} bytes, the "
                             f"file holds {size}; copy it again")
    return paths


def synthesise_names(names, folder, voice=DEFAULT_ESPEAK_VOICE):
    """Speak each name with espeak-ng into `folder/{i}.wav` (22050 Hz, 16-bit mono)."""
    executable = shutil.which("espeak-ng")
    if executable is None:
        raise LabelError("espeak-ng is not installed (Debian/Ubuntu: apt-get install espeak-ng); "
                         "install it or pass --audio_dir with one recording per class")
    for i, name in enumerate(names):
        # The name goes through stdin so that no name can be read as an option.
        done = subprocess.run([executable, "-v", voice, "-w", str(Path(folder) / f"{i}.wav"),
                               "--stdin"], input=name, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise LabelError(f"espeak-ng failed on {name!r} with voice {voice!r}: "
                             f"{_one_line(done.stderr)}")


def make_speech(names, seed, options, param=None):
    """(C, 64, 64) in [-80, 0]: spectrograms of options.audio_dir/{i}.wav, or of the names spoken
    by espeak-ng when there is no audio_dir."""
    if options.audio_dir is not None:
        paths = audio_files(options.audio_dir, len(names))
        return np.stack([spectrogram_image(p) for p in paths])
    with tempfile.TemporaryDirectory(prefix="labels_speech_") as folder:
        synthesise_names(names, folder, options.espeak_voice)
        return np.stack([spectrogram_image(Path(folder) / f"{i}.wav") for i in range(len(names))])


def make_shuffle(names, seed, options, param=None):
    """Speech targets with the columns (time frames) of class i permuted by the i-th draw of
    RandomState(seed).permutation; the paper used seed 8, and this reproduces its shuffle file
    from its speech file exactly."""
    if options.speech_targets is not None:
        speech = np.asarray(options.speech_targets)
    elif options.speech_file is not None:
        speech = _speech_file(options.speech_file, len(names))
    else:
        speech = make_speech(names, None, options)
    if speech.ndim != 3 or len(speech) != len(names):
        raise LabelError(f"shuffle needs speech targets of shape ({len(names)}, H, W); "
                         f"got {speech.shape}")
    rng = np.random.RandomState(seed)
    return np.stack([target[:, rng.permutation(target.shape[1])] for target in speech])


def _speech_file(path, num_classes):
    """The targets of --speech_file `path`, which must be a speech label file of `num_classes`
    classes, (C, H, W). Errors name the flag and the file: another dataset's file or another
    label's (cifar10_speech.npy for --dataset cifar100, a glove file) said only 'shuffle needs
    speech targets of shape (100, H, W); got (10, 64, 64)', and a missing one 'label file ... is not
    a readable .npy file (No such file or directory)'."""
    if not os.path.lexists(path):
        raise LabelError(f"--speech_file {path} does not exist; give the --dataset's speech label "
                         "file ({dataset}_speech.npy)")
    speech = read_targets(path)
    if speech.ndim != 3 or len(speech) != num_classes:
        raise LabelError(f"--speech_file {path} holds targets of shape {speech.shape}; shuffle permutes "
                         f"the --dataset's speech targets, of shape ({num_classes}, H, W)")
    return speech


# ----------------------------------------------------------------------------- synthetic families

# The paper's image-shaped targets other than speech: its spectrograms' shape, values in [0, 80]
# (the width of their dB range); the follow-up's overlap labels are 50-dimensional.
IMAGE_SHAPE = SPEECH_SIZE
TARGET_MAX = 80.0
GAP_DIM = 50


def make_uniform(names, seed, options, param=None):
    """(C, 64, 64): class i is the constant 80 i / (C - 1)."""
    levels = TARGET_MAX * np.arange(len(names)) / max(len(names) - 1, 1)
    return np.broadcast_to(levels[:, None, None], (len(names), *IMAGE_SHAPE)).copy()


def make_random(names, seed, options, param=None):
    """(C, 64, 64) uniform in [0, 80). RandomState, not default_rng: with seed 48 it is the
    paper's file bit for bit."""
    return np.random.RandomState(seed).uniform(0, TARGET_MAX, (len(names), *IMAGE_SHAPE))


def make_lowdim(names, seed, options, param=None):
    """(C, C) uniform in [0, 80); seed 48 gives the paper's cifar10_lowdim bit for bit."""
    return np.random.RandomState(seed).uniform(0, TARGET_MAX, (len(names), len(names)))


def make_composite(names, seed, options, param=None, blobs=10, size=0.15, aspect=3.2,
                   pixels=IMAGE_SHAPE[0]):
    """(C, 64, 64) in [0, 80]: per class, the sum of `blobs` elongated Gaussians with uniformly
    random centres in the frame and orientations in [0, pi), min-max rescaled to [0, 80].

    Geometry in frame units (the image spans [-0.5, 0.5]^2): a blob's standard deviation is
    size / 2 across its long axis and aspect * size / 2 along it, so `size` 0.15 is the blob's
    width as a fraction of the frame. The paper drew its blobs with the `imagen` package, whose
    random draws we cannot replay; an elongation of 3.2 gives per-pixel mean, std and pairwise
    distances within a few percent of the paper's CIFAR-100 composites (labels/README.md), and is
    within 1% of imagen's default aspect ratio (1/0.31), which the paper's call left as it was.
    """
    rng = np.random.default_rng(seed)
    count = len(names)
    centres = rng.uniform(-0.5, 0.5, (count, blobs, 2, 1, 1))
    angles = rng.uniform(0.0, np.pi, (count, blobs, 1, 1))
    coords = (np.arange(pixels) + 0.5) / pixels - 0.5           # pixel centres
    y, x = np.meshgrid(coords, coords, indexing="ij")
    dx, dy = x - centres[:, :, 0], y - centres[:, :, 1]         # (C, blobs, H, W)
    along = dx * np.cos(angles) + dy * np.sin(angles)
    across = -dx * np.sin(angles) + dy * np.cos(angles)
    sigma = size / 2.0
    images = np.exp(-0.5 * ((along / (aspect * sigma)) ** 2 + (across / sigma) ** 2)).sum(axis=1)
    low = images.min(axis=(1, 2), keepdims=True)
    high = images.max(axis=(1, 2), keepdims=True)
    return TARGET_MAX * (images - low) / (high - low)


def make_normal_dim(names, seed, options, param):
    """(C, D): class i drawn from N(i, 0.1) (the follow-up's "entropy" labels; D = param)."""
    rng = np.random.default_rng(seed)
    return rng.normal(np.arange(len(names))[:, None], 0.1, (len(names), param))


def make_uniform_gap(names, seed, options, param):
    """(C, 50): class i drawn from U(i G, 9 + i G) (the follow-up's "overlap" labels; G = param)."""
    rng = np.random.default_rng(seed)
    low = param * np.arange(len(names))[:, None]
    return rng.uniform(low, low + 9.0, (len(names), GAP_DIM))


MAX_DIM = 100_000  # C x D float64 values: 80 MB for CIFAR-100 at most


def _parse_dim(text):
    # at most MAX_DIM's digits after leading zeros: int() of over 4300 digits is a ValueError
    if not (digits := re.fullmatch(r"\+?0*(\d{1,6})", text)) or not 1 <= int(digits[1]) <= MAX_DIM:
        raise LabelError(f"normal_dim={text}: D must be a whole number in 1 .. {MAX_DIM} (the "
                         "follow-up used 1 .. 4000)")
    return int(digits[1])


def _parse_gap(text):
    try:
        gap = float(text)
    except ValueError:
        gap = math.nan
    if not (math.isfinite(gap) and gap >= 0):
        raise LabelError(f"uniform_gap={text}: G must be a number >= 0")
    if gap > float(np.finfo(np.float32).max):  # float32 targets, and beyond about 1e306 numpy's OverflowError
        raise LabelError(f"uniform_gap={text}: G must be at most 3.4e38, float32's largest")
    return gap


# ----------------------------------------------------------------------------- text families

@contextlib.contextmanager
def _quiet(*logger_names):
    """Silence these libraries' log records (download retries, tracebacks) for the duration: the
    outcome is reported as one LabelError line instead."""
    loggers = [logging.getLogger(n) for n in logger_names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


@contextlib.contextmanager
def _no_progress_bars(transformers):
    """transformers' progress bars off for the duration: loading a model from disk drew a "Loading
    weights" bar on stderr, before the outcome's line. (A download keeps its bars on a terminal.)"""
    bars = transformers.utils.logging
    enabled = bars.is_progress_bar_enabled()
    bars.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            bars.enable_progress_bar()


def _looks_like_path(text):
    return os.sep in text or text.startswith(".") or text.endswith((".txt", ".gz", ".bin"))


def make_bert(names, seed, options, param=None):
    """(C, s, s) in [0, 80] with s*s = 3 * hidden size (48 x 48 for BERT-base): the last hidden
    states of [CLS], the name and [SEP], concatenated row-major. A name of several word pieces is
    the mean of their states, so every class has three rows. As in the paper, values whose
    magnitude exceeds mean + 2 std (over all classes) are set to 0, then all classes are min-max
    rescaled together to [0, 80]."""
    source = str(options.text_model or DEFAULT_TEXT_MODEL)
    if _looks_like_path(source) and not Path(source).is_dir():
        what = "a file, not a directory" if Path(source).exists() else "no such directory"
        raise LabelError(f"--text_model {source}: {what} (give a directory saved with "
                         f"save_pretrained, or a Hugging Face model name)")
    try:
        import torch
        import transformers
    except ImportError as exc:
        raise LabelError(f"bert needs torch and transformers ({_one_line(exc)}); "
                         f"pip install transformers") from exc
    model, tokenizer = _load_text_model(source, transformers)
    model.eval()
    rows = []
    with torch.no_grad():
        for name in names:
            tokens = tokenizer(name, return_tensors="pt")      # [CLS] pieces... [SEP]
            if tokens["input_ids"].shape[1] < 3:
                raise LabelError(f"{source} tokenises {name!r} to no word pieces")
            unknown = getattr(tokenizer, "unk_token_id", None)
            if unknown is not None and set(tokens["input_ids"][0, 1:-1].tolist()) == {unknown}:
                # every such name would get the one target of the unknown token
                raise LabelError(f"{source} knows no word piece of {name!r} (it tokenises to "
                                 f"{tokenizer.unk_token} only): a model folder saved without its "
                                 "tokenizer, or a vocabulary without the name")
            hidden = model(**tokens).last_hidden_state[0].double()   # (T, H)
            rows.append(torch.stack([hidden[0], hidden[1:-1].mean(0), hidden[-1]]).numpy())
    states = np.stack(rows).reshape(len(names), -1)                   # (C, 3H)
    side = math.isqrt(states.shape[1])
    if side * side != states.shape[1]:
        raise LabelError(f"{source}: 3 x hidden size = {states.shape[1]} is not a square number")
    states[np.abs(states) > states.mean() + 2 * states.std()] = 0.0
    return _rescale(states, source).reshape(len(names), side, side)


def _no_downloads():
    """The environment variable set that forbids the text families a download, or None: LABELREP_OFFLINE
    (the project's), or HF_HUB_OFFLINE, which Hugging Face's users set offline (labels/README.md: with
    either, neither BERT nor GloVe tries one)."""
    return "LABELREP_OFFLINE" if offline() else "HF_HUB_OFFLINE" if env_flag("HF_HUB_OFFLINE") else None


def _load_text_model(source, transformers):
    """(model, tokenizer) from a local directory, the local cache, or (online) the hub."""
    from utils.progress import on_a_terminal
    local = _no_downloads() or Path(source).is_dir()
    attempts = [True] if local else [True, False]
    for local_only in attempts:
        if not local_only:
            log(f"note: {source} is not cached; downloading it from the Hugging Face hub")
        # a download's bars on a terminal: a log file got lines of carriage-return updates
        bars = not local_only and on_a_terminal(sys.stderr)
        try:
            with _quiet("huggingface_hub", "transformers"), \
                    contextlib.nullcontext() if bars else _no_progress_bars(transformers):
                tokenizer = transformers.AutoTokenizer.from_pretrained(
                    source, local_files_only=local_only)
                model = transformers.AutoModel.from_pretrained(source, local_files_only=local_only)
            return model, tokenizer
        except Exception as exc:  # hub, file and config errors all mean "no usable model here"
            problem = _one_line(exc)
    problem = problem.split(". ")[0][:200]
    name = DEFAULT_TEXT_MODEL if Path(source).is_dir() else source  # a folder is no hub name to fetch
    raise LabelError(f"cannot load text model {source!r} ({problem}); offline, pass "
                     f"--text_model DIR, a directory where a networked machine ran "
                     f"AutoModel/AutoTokenizer.from_pretrained({name!r}).save_pretrained(DIR)")


def _rescale(values, source):
    low, high = values.min(), values.max()
    if not high > low:
        raise LabelError(f"{source} gives constant targets; cannot rescale them to [0, 80]")
    return TARGET_MAX * (values - low) / (high - low)


def make_glove(names, seed, options, param=None):
    """(C, d) GloVe vectors (d = 50 for the default). A name missing from the vocabulary as a
    whole ("pickup truck", "lawn-mower") is the mean of its words; every word must be known."""
    keys = [name.lower() for name in names]
    vectors = _load_glove(str(options.glove or DEFAULT_GLOVE),
                          {w for key in keys for w in (key, *_name_words(key))})
    rows, unknown = [], []
    for name, key in zip(names, keys, strict=True):
        words = [key] if key in vectors else _name_words(key)
        missing = [w for w in words if w not in vectors]
        if missing or not words:
            unknown.append(f"{name!r} ({', '.join(missing) or 'no words'})")
            continue
        rows.append(np.mean([vectors[w] for w in words], axis=0))
    if unknown:  # the first few: all 100 of CIFAR-100 against the wrong file made a 3 kB line
        more = f"; and {len(unknown) - 5} more of the {len(names)} names" if len(unknown) > 5 else ""
        raise LabelError(f"GloVe vectors lack: {'; '.join(unknown[:5])}{more}")
    return np.stack(rows)


def _name_words(key):
    return [w for w in re.split(r"[\s_\-]+", key) if w]


def _load_glove(source, words):
    """A mapping word -> float32 (d,) vector holding those of `words` (a set) that `source` has:
    a GloVe / word2vec text file (see `_read_vectors`), or a gensim-downloader name (the local
    gensim-data copy if there is one, read the same way; else gensim's KeyedVectors, downloaded)."""
    if Path(source).is_file():
        return _read_vectors(Path(source), words)
    if _looks_like_path(source):
        what = "a folder, not a file" if Path(source).is_dir() else "no such file"
        raise LabelError(f"--glove {source}: {what} (give a GloVe text file such as "
                         f"glove.6B.50d.txt, or a gensim-downloader name)")
    # gensim.downloader asks the network even for a model it already has: look locally first.
    data_dir = Path(os.environ.get("GENSIM_DATA_DIR", Path.home() / "gensim-data"))
    cached = data_dir / source / f"{source}.gz"
    if cached.is_file():
        return _read_vectors(cached, words)
    if flag := _no_downloads():
        raise LabelError(f"cannot get GloVe vectors {source!r} (none in {data_dir}, and {flag} "
                         "is set, so no download was tried); pass --glove PATH to a GloVe text file "
                         "(e.g. glove.6B.50d.txt from https://nlp.stanford.edu/projects/glove/)")
    try:
        import gensim.downloader
    except ImportError as exc:
        raise LabelError(f"glove needs gensim ({_one_line(exc)}); pip install gensim") from exc
    from utils.progress import library_bar
    log(f"note: {source} is not in {data_dir}; downloading it with gensim")
    try:
        with _quiet("gensim"), library_bar("stdout", end="\n"):  # its bar: stdout, its line left open
            return gensim.downloader.load(source)
    except Exception as exc:  # network, name and format errors all end the same way
        raise LabelError(f"cannot get GloVe vectors {source!r} ({_one_line(exc)[:200]}); offline, "
                         f"pass --glove PATH to a GloVe text file (e.g. glove.6B.50d.txt from "
                         f"https://nlp.stanford.edu/projects/glove/)") from exc


def _numbers(count):
    return f"{count} number{'' if count == 1 else 's'}"


def _read_vectors(path, words):
    """{word: float32 (d,) vector} for those of `words` (a set of str) that the word-vector text
    file `path` holds, in one pass that checks every line: GloVe's files have no header line,
    word2vec-format files (gensim-data's) start "COUNT DIM"; plain or compressed as gensim reads
    them (.gz, .bz2, .xz by extension). Words and values are read as gensim's
    load_word2vec_format reads them (UTF-8; float32; a word given twice keeps its first vector),
    without keeping the other words' vectors (2.2 M of them, 2.6 GB, in glove.840B.300d).

    LabelError naming the first line that is not a word and as many numbers as the header (or
    the first line) gives (gensim names no line, reads a word with one number as a vector of that
    number repeated, and stops at the header's count), or what is wrong with the file as a whole
    (no line, another count of lines than its header's, a word that is not UTF-8).
    """
    def problem(text):
        return LabelError(f"cannot read word vectors from {path}: {text}")

    vectors, undecodable, found = {}, None, 0
    with contextlib.closing(_file_lines(path)) as lines:
        count, size, lines = _vectors_header(lines)
        header = count is not None
        for found, line in enumerate(lines, 1):
            values = _vector_values(line, found + header, size, header, problem)
            size = len(values)
            try:
                word = line.rstrip().decode("utf-8").split(" ", 1)[0]  # as gensim decodes it
            except UnicodeDecodeError as exc:  # said once every line is known to be well formed
                undecodable = undecodable or _one_line(exc)
                continue
            if word in words and word not in vectors:
                # the double rounded to float32, as gensim's np.float32(text) is
                vectors[word] = np.array(values, dtype=np.float32)
    if size is None:
        raise problem("the file is empty")
    if header and found != count:
        raise problem(f"line 1 announces {count} words, {found} lines follow it")
    if undecodable:
        raise problem(undecodable)
    return vectors


def _vectors_header(lines):
    """(count, size, lines) of a word-vector file's `lines` (bytes): the word count and vector
    size its header line "COUNT DIM" gives and the lines after it, or (None, None, all its
    lines) where it has no header."""
    first = next(lines, b"")
    header = len(first.split()) == 2 and all(v.isdigit() for v in first.split())
    if header:
        count, size = map(int, first.split())
        return count, size, lines
    # the first line is a word's
    return None, None, itertools.chain([first] if first else [], lines)


def _vector_values(line, line_number, size, header, problem):
    """The numbers (floats) after the word of `line` (bytes, line `line_number` of the file), or
    `problem`'s LabelError where they are not `size` numbers (None: as many as it holds, the
    first line's; `header`: whether the file has a header line)."""
    values = line.rstrip().split(b" ")[1:]  # split as gensim does
    size = len(values) if size is None else size
    if not size:  # gensim read such lines as words without vectors, found none of the class names
        raise problem(f"line {line_number} holds no numbers after its first word (a word and its "
                      "values are separated by spaces)")
    try:
        values = list(map(float, values))
    except ValueError:
        values = None
    if values is None or len(values) != size:
        if values is not None and line_number == 2 and not header:  # either may be the odd one
            raise problem(f"line 1 holds a word and {_numbers(size)}, line 2 a word and "
                          f"{_numbers(len(values))}")
        raise problem(f"line {line_number} is not a word followed by {_numbers(size)}")
    return values


# What gensim's reader (smart_open) decompresses without a package of its own, by the file name's
# last extension in any case.
DECOMPRESSORS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}


def _file_lines(path):
    """The lines (bytes) of `path`, decompressed by its extension (`DECOMPRESSORS`); LabelError
    naming it when an archive is cut short or corrupt."""
    try:
        with DECOMPRESSORS.get(path.suffix.lower(), open)(path, "rb") as f:
            yield from f
    except (EOFError, OSError, zlib.error, lzma.LZMAError) as exc:
        if isinstance(exc, OSError) and exc.errno is not None:
            raise  # permission, I/O: call_cli's line ("cannot use PATH: Permission denied")
        raise LabelError(f"cannot read word vectors from {path}: {_one_line(exc)}") from exc


# ----------------------------------------------------------------------------- registry

FAMILIES = {
    "speech": Family(make_speech, "mel spectrogram of the spoken name, (C,64,64) in [-80,0]",
                     seed=None, names="spoken"),
    "shuffle": Family(make_shuffle, "speech with its columns permuted per class", seed=8,
                      names="spoken"),
    "uniform": Family(make_uniform, "class i constant 80i/(C-1), (C,64,64)", seed=None),
    "random": Family(make_random, "uniform random in [0,80), (C,64,64)", seed=48),
    "composite": Family(make_composite, "10 oriented Gaussian blobs, (C,64,64) in [0,80]", seed=0),
    "lowdim": Family(make_lowdim, "uniform random in [0,80), (C,C)", seed=48),
    "bert": Family(make_bert, "BERT hidden states of [CLS] name [SEP], (C,48,48) in [0,80]",
                   seed=None, names="text", offline=False),
    "glove": Family(make_glove, "GloVe word vectors, (C,50)", seed=None, names="text",
                    offline=False),
    "normal_dim": Family(make_normal_dim, "normal_dim=D: class i ~ N(i, 0.1), (C,D)",
                         param=_parse_dim),
    "uniform_gap": Family(make_uniform_gap, "uniform_gap=G: class i ~ U(iG, 9+iG), (C,50)",
                          param=_parse_gap),
}


def _valid_names():
    return ", ".join(f"{k}={'D' if k == 'normal_dim' else 'G'}" if f.param else k
                     for k, f in FAMILIES.items())


def parse_label(name):
    """(canonical name, Family, parameter) for a label name such as "speech" or "normal_dim=10".
    The canonical name is the file's: "uniform_gap=2.0" -> "uniform_gap=2". A LabelError's message
    starts with `name` ("normal_dim=0: ..."), to which the command line adds its flag."""
    key, sep, value = name.partition("=")
    family = FAMILIES.get(key)
    if family is None:
        raise LabelError(f"{name}: unknown label family; choose from {_valid_names()}, all")
    if family.param is None:
        if sep:
            raise LabelError(f"{name}: {key} takes no parameter")
        return key, family, None
    if not sep:
        raise LabelError(f"{name}: needs a parameter, e.g. {key}=10")
    param = family.param(value)
    # One spelling per file: "uniform_gap=2.0" and "uniform_gap=2" are the same label.
    text = str(int(param)) if float(param).is_integer() else repr(float(param))
    return f"{key}={text}", family, param


def offline_labels():
    """Every label `--label all` writes without a model or vector file: the paper's offline
    families and the follow-up's families at the follow-up's sizes."""
    return ([k for k, f in FAMILIES.items() if f.offline and f.param is None]
            + [f"normal_dim={d}" for d in FOLLOWUP_DIMS]
            + [f"uniform_gap={g}" for g in FOLLOWUP_GAPS])


def make_label(name, names, seed=None, **options):
    """Targets of label `name` for classes `names` (list of C strings): float32 (C, ...).

    seed: None for the family's default (`FAMILIES[...].seed`). options: fields of `Options`
    (audio_dir, espeak_voice, speech_file, speech_targets, text_model, glove).
    """
    _, family, param = parse_label(name)
    known = {f.name for f in fields(Options)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise LabelError(f"unknown option(s) {', '.join(unknown)}; "
                         f"choose from {', '.join(sorted(known))}")
    if isinstance(names, str):  # its characters would be the classes: 'cifar10' made 7
        raise LabelError(f"names {names!r} is one string; pass a list of class names, e.g. "
                         "labels.generate.class_names('cifar10')")
    if len(names) < 2:
        raise LabelError(f"need at least 2 classes, got {len(names)}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))
                             or not 0 <= seed < 2**32):
        raise LabelError(f"seed {seed!r} is not an integer from 0 to 2**32 - 1, as numpy's seeds are")
    seed = family.seed if seed is None else seed
    targets = check_targets(np.asarray(family.make(list(names), seed, Options(**options), param)),
                            f"the generated {name} targets")
    from utils.labelspace import TargetSpace
    try:
        TargetSpace(name, targets)  # raises unless each class's own target decodes to it
    except UsageError as err:
        raise LabelError(str(err)) from None
    return targets


# ----------------------------------------------------------------------------- writing and CLI

GENERATE_LOCK = ".labels_generate.lock"  # in --out while a generator writes there (`taking_turns`)
# the temporary name of a label file (`utils.atomic.file_set`'s), which one killed outright left in --out
LABEL_TEMPORARY = temporary_names(rf"(?:{'|'.join(map(re.escape, DATASETS))})_[^/]+\.npy")


def npy_writer(targets):
    """write(file) of `targets` as .npy, for `file_set`'s put. Through bytes in memory (a few MB):
    numpy's own write to a file reports a full disk without its cause ('4096000 requested and
    524256 written'), which came out as '[Errno None] None'."""
    data = io.BytesIO()
    np.save(data, targets, allow_pickle=False)
    return lambda f: f.write(data.getvalue())


def build_parser():
    about = doc_paragraphs(__doc__)
    parser = CliParser(
        prog="python -m labels.generate", description=about[0],
        formatter_class=DefaultsFormatter,
        epilog="families: " + _valid_names() + "; 'all' = every family that can be made offline "
               "(plus bert / glove when --text_model / --glove is given). " + about[-1])
    data = parser.add_argument_group("data")
    data.add_argument("--dataset", nargs="+", action=ExtendList, required=True,
                      choices=[d for d in DATASETS if not d.endswith("_coarse")],
                      help="dataset(s) to make labels for")
    data.add_argument("--label_granularity", default="fine", choices=("fine", "coarse"),
                      help="CIFAR-100's 100 fine classes or its 20 superclasses (coarse files "
                           "are named as the fine ones: give them an --out folder of their own, and "
                           "give train.py that folder as --label_dir)")
    data.add_argument("--data_dir", type=nonempty, default=None,
                      help="folder with the dataset's meta file (batches.meta / meta), directly or "
                           "in cifar-10-batches-py/ / cifar-100-python/ (default: built-in names)")
    data.add_argument("--names", type=nonempty, default=None,
                      help=f"how class names are written: {', '.join(NAME_SETS)} (default: "
                           f"spoken for speech and shuffle, text for bert/glove) or a file, one name a line")
    family = parser.add_argument_group("families")
    family.add_argument("--label", nargs="+", action=ExtendList, required=True,
                        help="label name(s), e.g. speech, normal_dim=10, uniform_gap=2, or all")
    family.add_argument("--seed", type=number(int, 0, inclusive=True, maximum=2**32 - 1), default=None,
                        help="random seed (default: the family's: shuffle 8 and random / lowdim 48 "
                             "as in the paper, 0 otherwise)")
    family.add_argument("--audio_dir", type=nonempty, default=None,
                        help="speech, shuffle: folder of {i}.wav, one recording per class "
                             "(default: speak the names with espeak-ng)")
    family.add_argument("--espeak_voice", default=DEFAULT_ESPEAK_VOICE,
                        help="speech, shuffle: espeak-ng voice when synthesising")
    family.add_argument("--speech_file", type=nonempty, default=None,
                        help="shuffle: permute this speech label file instead of making speech")
    family.add_argument("--text_model", type=nonempty, default=None,
                        help=f"bert: Hugging Face model name or saved directory "
                             f"(default: {DEFAULT_TEXT_MODEL})")
    family.add_argument("--glove", type=nonempty, default=None,
                        help=f"glove: GloVe text file or gensim-downloader name "
                             f"(default: {DEFAULT_GLOVE})")
    output = parser.add_argument_group("output")
    output.add_argument("--out", type=nonempty, default=str(LABEL_DIR),
                        help="folder for {dataset}_{label}.npy, as train.py's --label_dir reads them")
    output.add_argument("--force", action="store_true", help="overwrite existing files")
    return parser


def expand_labels(requested, text_model=None, glove=None):
    """Canonical label names for the --label arguments, 'all' expanded, duplicates dropped."""
    expanded = []
    for name in requested:
        if name == "all":
            expanded += offline_labels()
            expanded += ["bert"] if text_model else []
            expanded += ["glove"] if glove else []
        else:
            try:
                expanded.append(parse_label(name)[0])
            except LabelError as err:  # "--label x: unknown label family; ..." names the flag
                raise LabelError(f"--label {err}") from None
    # speech first, so that shuffle can reuse it
    unique = list(dict.fromkeys(expanded))
    return sorted(unique, key=lambda n: n != "speech")


# the families each option acts on (shuffle speaks the names too unless given --speech_file)
FAMILY_OPTIONS = {"audio_dir": ("speech", "shuffle"), "espeak_voice": ("speech", "shuffle"),
                  "speech_file": ("shuffle",), "text_model": ("bert",), "glove": ("glove",),
                  "names": tuple(name for name, family in FAMILIES.items() if family.names)}


def replaced_speech_lines(args, given, labels):
    """Warnings for speech options (of `given`) that act on nothing although speech or shuffle is among
    `labels`: what --speech_file replaces for shuffle alone, and a voice beside recordings."""
    chosen = set(labels)
    if args.speech_file is not None and "shuffle" in chosen and "speech" not in chosen:
        unused = [f"--{option}" for option in ("audio_dir", "espeak_voice") if option in given]
        return [f"warning: {', '.join(unused)} only act{'s' if len(unused) == 1 else ''} with --label speech "
                f"(shuffle permutes --speech_file); ignored for --label {' '.join(labels)}"] if unused else []
    if args.audio_dir is not None and "espeak_voice" in given and chosen & {"speech", "shuffle"}:
        return ["warning: --espeak_voice only acts without --audio_dir (its recordings replace espeak-ng's "
                "speech); ignored"]
    return []


def run(args):
    """Write the label files the flags `args` ask for, say each on stderr and return their summary,
    stdout's one line ({"out", "files": [{"file", "shape", "min", "max"}]}; the 'wrote' lines went
    to stdout before it, where `| jq` stopped at the first). A notebook's namespace is read as the
    command line reads it first (`as_parsed`): label=[] wrote nothing and printed an empty list,
    where `--label` alone is the command line's one-line error."""
    args = as_parsed(build_parser(), args)
    out = resolved(args.out)  # as it prints it: "wrote ../x/..." named no file from another folder
    labels = expand_labels(args.label, args.text_model, args.glove)
    datasets = list(dict.fromkeys(args.dataset))  # one given twice was made, written and listed twice
    for line in _warning_lines(args, labels):
        log(line)
    _check_output(args, out, labels, datasets)
    with os_errors_as_usage({"--out": out}):  # the default, the shipped label_files, may be read-only
        made = _write_labels(args, out, labels, datasets)
    for path, shape, low, high in made:
        log(f"wrote {path}  {tuple(shape)}  [{low:.4g}, {high:.4g}]")
    written = [{"file": str(path), "shape": list(shape), "min": low, "max": high}
               for path, shape, low, high in made]
    summary = {"out": str(out), "files": written}
    print_json(summary)
    return summary


def _warning_lines(args, labels):
    """Warnings for the options given that act on none of `labels`: the family options
    (`FAMILY_OPTIONS`, `replaced_speech_lines`), then --seed where no label is drawn at random."""
    parser = build_parser()
    given = [option for option in FAMILY_OPTIONS if getattr(args, option) != parser.get_default(option)]
    lines = ignored_lines(given, FAMILY_OPTIONS, labels) + replaced_speech_lines(args, given, labels)
    if args.seed is not None and all(parse_label(name)[1].seed is None for name in labels):
        drawn = " ".join(name for name, family in FAMILIES.items() if family.seed is not None)
        lines.append(f"warning: --seed only acts with a label drawn at random ({drawn}); ignored for "
                     f"--label {' '.join(labels)}")
    return lines


def _check_output(args, out, labels, datasets):
    """LabelError, before anything is made, for options that do not fit `datasets` or the --out
    folder `out`, and for files of `labels` already there (without --force)."""
    if args.label_granularity == "coarse":
        if set(datasets) - set(GRANULAR):
            raise LabelError(f"--label_granularity coarse is for {', '.join(GRANULAR)} only")
        if out == LABEL_DIR.resolve():
            raise LabelError("coarse label files are named as the fine ones: give --out a folder of "
                             "their own (then train.py --label_dir that folder)")
    check_folder_names("--out", out)  # not 'File name too long' once the labels were made
    if args.audio_dir is not None and len(datasets) > 1:
        raise LabelError("--audio_dir holds one dataset's recordings: give a single --dataset")
    if args.speech_file is not None and len(datasets) > 1:
        raise LabelError("--speech_file is one dataset's file: give a single --dataset")
    existing = [str(p) for d in datasets for n in labels
                if (p := out / f"{d}_{n}.npy").exists()]
    if existing and not args.force:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise LabelError(f"{existing[0]} exists{more}; pass --force to overwrite")


def _write_labels(args, out, labels, datasets):
    """Write out/{dataset}_{label}.npy for each of `datasets` and `labels`; (path, shape, min, max)
    of each file."""
    made = []
    # Every file or none: bad input met part way (a later dataset's names, a later family's
    # parameter) replaced nothing, where the files before it stayed and a rerun needed --force;
    # nor does it leave the --out folder it made (before the first label: a bad --out is said at once).
    # One generator at a time in --out, which removes the temporary files of one killed outright.
    with made_folders(out), taking_turns(out, GENERATE_LOCK, LABEL_TEMPORARY, "labels.generate"), \
            file_set() as put:
        for dataset in datasets:
            for name, targets in _dataset_targets(args, dataset, labels):
                path = out / f"{dataset}_{name}.npy"
                put(path, npy_writer(targets))
                made.append((path, targets.shape, float(targets.min()), float(targets.max())))
    return made


def _dataset_targets(args, dataset, labels):
    """(label, targets) of each of `labels` for `dataset`, made in turn as they are asked for."""
    options = {"audio_dir": args.audio_dir, "espeak_voice": args.espeak_voice,
               "speech_file": args.speech_file, "text_model": args.text_model, "glove": args.glove}
    names_by_set = {}   # read the meta file once per name set
    speech = None       # made once, reused by shuffle (both read the same names)
    for name in labels:
        name_set = args.names or parse_label(name)[1].names or "standard"
        if name_set not in names_by_set:
            spec = dataset if args.label_granularity == "fine" else f"{dataset}_coarse"
            names_by_set[name_set] = class_names(spec, name_set, args.data_dir)
        extra = {}
        if name == "shuffle" and speech is not None and args.speech_file is None:
            extra["speech_targets"] = speech
        targets = make_label(name, names_by_set[name_set], args.seed, **options, **extra)
        if name == "speech":
            speech = targets
        yield name, targets


def main(argv=None):
    """Write the label files the command line `argv` (sys.argv's where None) asks for; `run`'s
    summary of them. As train.main: bad input raises UsageError and Ctrl-C
    KeyboardInterrupt (it returned exit status 2 or 130, and a notebook's loop of calls went on
    past both); `run_cli` makes them the command line's `error:` line and exit status."""
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    # the files made so far wait as temporary files in --out until the last is made (speech through
    # espeak-ng, BERT: seconds to minutes): a `timeout` or `kill` left them there, and the recordings
    # in TMPDIR
    sigterm_as_interrupt()
    run_cli(main)
