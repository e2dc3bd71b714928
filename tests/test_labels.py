"""Tests of labels/: every family's contract, the paper's files reproduced, the shipped files, the
stats tool, and bad input ending in one error line.

    python -m pytest tests/test_labels.py -q

Nothing here touches the network: BERT is a tiny random model saved by a fixture, GloVe a tiny
text file, speech comes from synthesised tones or espeak-ng (skipped when not installed). Tests
that compare with the paper's published files use ../shared and skip without it.
"""

import json
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from labels import LABEL_DIR, LabelError, available_labels, generate, load_label, stats
from labels.generate import (
    CIFAR10_CLASSES,
    CIFAR100_CLASSES,
    class_names,
    make_label,
    offline_labels,
    parse_label,
)
from utils.errors import UsageError, call_cli

# No test may reach the Hugging Face hub. huggingface_hub reads this when first imported, which
# happens only inside the BERT fixture and generator (labels/ imports transformers lazily).
os.environ["HF_HUB_OFFLINE"] = "1"

ROOT = Path(__file__).resolve().parents[1]

SHARED = ROOT.parent / "shared"
REFERENCE = SHARED / "reference" / "label_representations"
HAS_ESPEAK = shutil.which("espeak-ng") is not None

needs_reference = pytest.mark.skipif(not REFERENCE.is_dir(), reason="../shared is absent")
needs_espeak = pytest.mark.skipif(not HAS_ESPEAK, reason="espeak-ng is not installed")


def expected_shape(name, num_classes):
    """The shape a label file of family `name` must have (the contract train.py relies on)."""
    key, _, value = parse_label(name)[0].partition("=")
    if key == "normal_dim":
        return (num_classes, int(value))
    if key == "lowdim":
        return (num_classes, num_classes)
    if key in ("glove", "uniform_gap"):
        return (num_classes, 50)
    if key == "bert":
        return (num_classes, 48, 48)
    assert key in ("speech", "shuffle", "uniform", "random", "composite"), key
    return (num_classes, 64, 64)


def min_class_distance(targets):
    """Smallest mean squared distance between two classes' targets."""
    return stats.label_stats(targets)["min_msd"]


def cli(main, argv, capsys):
    """Run a tool's main(argv); (exit status, stdout, stderr). A failure must be one error line."""
    status = call_cli(main, [str(a) for a in argv])
    out, err = capsys.readouterr()
    if status != 0:
        assert err.count("\n") == 1 and err.startswith("error: "), err
    return status, out, err


def files_written(out):
    """The number of files labels.generate's stdout, one JSON line, lists."""
    assert out.count("\n") == 1, out
    return len(json.loads(out)["files"])


def said(err):
    """labels.generate's stderr less its 'wrote' lines: its warnings."""
    return "".join(line for line in err.splitlines(keepends=True) if not line.startswith("wrote "))


def write_tones(folder, count, rate=16000):
    """`folder/{i}.wav`: a 0.4 s tone per class (frequencies 300 Hz * 1.3^i) between silences."""
    import soundfile

    folder.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(0.4 * rate)) / rate
    silence = np.zeros(int(0.1 * rate))
    for i in range(count):
        tone = 0.5 * np.sin(2 * np.pi * 300 * 1.3 ** i * t) * np.hanning(t.size)
        soundfile.write(folder / f"{i}.wav", np.concatenate([silence, tone, silence]), rate,
                        subtype="PCM_16")
    return folder


@pytest.fixture(scope="module")
def tones(tmp_path_factory):
    return write_tones(tmp_path_factory.mktemp("tones"), 10)


@pytest.fixture(scope="module")
def tone_speech(tones):
    return make_label("speech", CIFAR10_CLASSES, audio_dir=tones)


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    """A randomly initialised one-layer BERT (hidden size 768, so targets are 48 x 48) with its
    own word-piece vocabulary, saved as a model directory."""
    import transformers
    folder = tmp_path_factory.mktemp("tiny_bert")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "air", "##plane", "auto", "##mobile",
             "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    (folder / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "BertTokenizer", "do_lower_case": True}))
    config = transformers.BertConfig(vocab_size=len(vocab), hidden_size=768, num_hidden_layers=1,
                                     num_attention_heads=1, intermediate_size=32,
                                     max_position_embeddings=16)
    transformers.BertModel(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_glove(tmp_path_factory):
    """A GloVe-format text file (no header): 50 random values for a few words."""
    words = [n for n in CIFAR10_CLASSES] + ["pickup", "truck", "lawn-mower", "sweet", "peppers"]
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("glove") / "tiny.50d.txt"
    lines = [w + " " + " ".join(f"{v:.5f}" for v in rng.normal(size=50))
             for w in dict.fromkeys(words)]
    path.write_text("\n".join(lines) + "\n")
    return path


# ----------------------------------------------------------------------------- family contracts

SYNTHETIC = ["uniform", "random", "composite", "lowdim", "normal_dim=3", "normal_dim=50",
             "uniform_gap=0", "uniform_gap=2.5"]


@pytest.mark.parametrize("num_classes", [10, 100])
@pytest.mark.parametrize("name", SYNTHETIC)
def test_synthetic_family_contract(name, num_classes):
    names = [f"class {i}" for i in range(num_classes)]
    targets = make_label(name, names, seed=3)
    assert targets.shape == expected_shape(name, num_classes)
    assert targets.dtype == np.float32 and np.isfinite(targets).all()
    assert np.array_equal(targets, make_label(name, names, seed=3))       # deterministic
    assert min_class_distance(targets) > 0                                  # classes differ
    if parse_label(name)[1].seed is not None:                              # seeded families
        assert not np.array_equal(targets, make_label(name, names, seed=4))
    key, _, value = name.partition("=")
    rows = targets.reshape(num_classes, -1)
    if key in ("uniform", "random", "composite", "lowdim"):
        assert targets.min() >= 0 and targets.max() <= 80
    if key == "uniform":
        assert np.allclose(rows, (80 * np.arange(num_classes) / (num_classes - 1))[:, None])
    if key == "composite":   # each class rescaled to exactly [0, 80]
        assert np.allclose(rows.min(1), 0) and np.allclose(rows.max(1), 80)
    if key == "normal_dim":  # class i ~ N(i, 0.1)
        tolerance = 5 * 0.1 / np.sqrt(int(value)) + 1e-3
        assert np.abs(rows.mean(1) - np.arange(num_classes)).max() < tolerance
        # and its spread, 0.1 (the follow-up's entropy): within 5 standard errors, 0.1 / sqrt(2 n)
        spread = np.sqrt(np.mean((rows - np.arange(num_classes)[:, None]) ** 2))
        assert abs(spread - 0.1) < 5 * 0.1 / np.sqrt(2 * rows.size)
    if key == "uniform_gap":  # class i ~ U(iG, 9 + iG)
        low = float(value) * np.arange(num_classes)[:, None]
        assert (rows >= low - 1e-4).all() and (rows <= low + 9 + 1e-4).all()
        # filling the whole width 9 (its overlap with the next class), not a part of it:
        # of 500 draws or more, none within 0.2 of an end has a chance below 1e-4
        assert (rows - low).min() < 0.2 and (rows - low).max() > 8.8


def test_speech_from_tones(tone_speech, tones):
    assert tone_speech.shape == (10, 64, 64) and tone_speech.dtype == np.float32
    assert tone_speech.min() >= -80 - 1e-4 and tone_speech.max() <= 0
    assert np.all(tone_speech.reshape(10, -1).max(1) > -1)   # each class peaks near 0 dB
    assert min_class_distance(tone_speech) > 1
    assert np.array_equal(tone_speech, make_label("speech", CIFAR10_CLASSES, audio_dir=tones))
    # a higher tone puts its energy in higher mel bands (rows)
    peaks = [np.argmax(t.mean(1)) for t in tone_speech]
    assert peaks == sorted(peaks) and peaks[0] < peaks[-1]


def test_shuffle_permutes_each_class_columns(tone_speech):
    shuffled = make_label("shuffle", CIFAR10_CLASSES, seed=8, speech_targets=tone_speech)
    assert shuffled.shape == tone_speech.shape and shuffled.dtype == np.float32
    for speech_class, shuffled_class in zip(tone_speech, shuffled, strict=True):
        assert sorted(map(tuple, speech_class.T)) == sorted(map(tuple, shuffled_class.T))
    assert not np.array_equal(shuffled, tone_speech)
    assert np.array_equal(shuffled, make_label("shuffle", CIFAR10_CLASSES, seed=8,
                                               speech_targets=tone_speech))
    assert not np.array_equal(shuffled, make_label("shuffle", CIFAR10_CLASSES, seed=9,
                                                   speech_targets=tone_speech))
    # a permutation per class, drawn in class order from one RandomState(seed) (the paper's)
    ramps = np.broadcast_to(np.arange(64, dtype=np.float32), (10, 2, 64))
    orders = make_label("shuffle", CIFAR10_CLASSES, seed=8, speech_targets=ramps)[:, 0].astype(int)
    rng = np.random.RandomState(8)
    assert [list(order) for order in orders] == [list(rng.permutation(64)) for _ in range(10)]


@needs_espeak
def test_speech_and_shuffle_from_espeak(tmp_path, capsys):
    status, out, _ = cli(generate.main, ["--dataset", "cifar10", "--label", "speech", "shuffle",
                                         "--out", tmp_path], capsys)
    assert status == 0 and files_written(out) == 2
    speech = np.load(tmp_path / "cifar10_speech.npy", allow_pickle=False)
    shuffled = np.load(tmp_path / "cifar10_shuffle.npy", allow_pickle=False)
    for targets in (speech, shuffled):
        assert targets.shape == (10, 64, 64) and targets.dtype == np.float32
        assert targets.min() >= -80 - 1e-4 and targets.max() <= 0
        assert min_class_distance(targets) > 1
    again = make_label("speech", class_names("cifar10", "spoken"))
    assert np.array_equal(speech, again)   # espeak-ng and the recipe are deterministic


def test_bert_tiny_model(tiny_bert, tmp_path, capsys):
    targets = make_label("bert", CIFAR10_CLASSES, text_model=tiny_bert)
    assert targets.shape == (10, 48, 48) and targets.dtype == np.float32
    assert targets.min() == 0 and targets.max() == pytest.approx(80)
    assert np.array_equal(targets, make_label("bert", CIFAR10_CLASSES, text_model=tiny_bert))
    assert min_class_distance(targets) > 0
    # airplane and automobile are two word pieces each: mean-pooled, still 48 x 48
    status, _, _ = cli(generate.main, ["--dataset", "cifar10", "--label", "bert",
                                         "--text_model", tiny_bert, "--out", tmp_path], capsys)
    assert status == 0
    assert np.array_equal(np.load(tmp_path / "cifar10_bert.npy", allow_pickle=False), targets)


def test_bert_sets_values_beyond_two_std_to_zero(monkeypatch):
    """The paper's recipe: a hidden-state value whose magnitude exceeds mean + 2 std (over all
    classes) is set to 0 before the [0, 80] rescaling; one at 2.5 std is, one at 1.5 std is not,
    and of the states negated, one at -2.5 std is, by its magnitude."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    states = np.random.RandomState(0).uniform(-1, 1, (2, 3, 3))  # 2 classes, [CLS] name [SEP], H=3
    flat = states.reshape(-1)
    mean, std = flat.mean(), flat.std()
    flat[4] = 2.5 * std + mean  # (the mean and std move little with it: checked below)
    flat[13] = 1.5 * std + mean

    class Model:
        def eval(self):
            return self

        def __call__(self, input_ids):
            return type("Out", (), {"last_hidden_state": torch.from_numpy(states[input_ids[0, 0]])[None]})

    def tokenizer(name, return_tensors):
        return {"input_ids": torch.tensor([[["a", "b"].index(name)] * 3])}
    monkeypatch.setattr(generate, "_load_text_model", lambda source, transformers: (Model(), tokenizer))
    values = states.reshape(2, 9).copy()
    for sign in (1, -1):
        states[:] = sign * values.reshape(2, 3, 3)
        signed = sign * values
        # the test's premise: the outlier beyond mean + 2 std in magnitude, the 1.5 std value within
        assert abs(signed[0, 4]) > signed.mean() + 2 * signed.std() > abs(signed[1, 4]), sign
        targets = make_label("bert", ["a", "b"], text_model="fake").reshape(2, 9)
        kept = signed.copy()
        kept[0, 4] = 0.0
        assert np.allclose(targets, 80 * (kept - kept.min()) / (kept.max() - kept.min()), atol=1e-5), sign


def test_bert_unreadable_model(tmp_path, capsys):
    status, _, err = cli(generate.main, ["--dataset", "cifar10", "--label", "bert", "--text_model",
                                         tmp_path / "no_such_model", "--out", tmp_path], capsys)
    assert status == 2 and "no such directory" in err
    (tmp_path / "empty").mkdir()
    status, _, err = cli(generate.main, ["--dataset", "cifar10", "--label", "bert", "--text_model",
                                         tmp_path / "empty", "--out", tmp_path], capsys)
    assert status == 2 and "cannot load text model" in err and "--text_model DIR" in err
    # not from_pretrained('.../empty'): the folder is what failed
    assert "ran AutoModel/AutoTokenizer.from_pretrained('bert-base-uncased').save_pretrained(DIR)" in err
    assert not list(tmp_path.glob("*.npy"))


def test_bert_with_labelrep_offline_tries_no_download(monkeypatch, tmp_path, capsys):
    """LABELREP_OFFLINE=1 without HF_HUB_OFFLINE tried the hub after the cache, and failed offline
    after about a minute of retries."""
    import transformers
    asked = []

    def refuse(source, local_files_only):
        asked.append(local_files_only)
        raise OSError(f"{source} is not in the cache")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", refuse)
    status, _, err = cli(generate.main, ["--dataset", "cifar10", "--label", "bert", "--out", tmp_path], capsys)
    assert (status, asked) == (2, [True]) and err.startswith(
        "error: cannot load text model 'bert-base-uncased' (bert-base-uncased is not in the cache); offline, ")
    monkeypatch.delenv("LABELREP_OFFLINE")
    assert call_cli(generate.main, ["--dataset", "cifar10", "--label", "bert", "--out", str(tmp_path)]) == 2
    assert asked == [True, True, False]  # the cache, then the hub
    assert capsys.readouterr().err.startswith("note: bert-base-uncased is not cached; downloading it from ")


def test_a_bert_download_in_a_log_file_draws_no_bars(tiny_bert, monkeypatch, tmp_path, capsys):
    """A download from the hub kept the hub's tqdm bars wherever stderr went: a log file got lines
    of carriage-return updates per file. Away from a terminal they are off, as for a cached model."""
    import transformers
    bars = []

    def from_pretrained(real):
        def load(source, local_files_only):
            if local_files_only:
                raise OSError(f"{source} is not in the cache")
            bars.append(transformers.utils.logging.is_progress_bar_enabled())  # as the download starts
            return real(tiny_bert)
        return load
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("LABELREP_OFFLINE")
    for auto in (transformers.AutoTokenizer, transformers.AutoModel):
        monkeypatch.setattr(auto, "from_pretrained", from_pretrained(auto.from_pretrained))
    status, _, err = cli(generate.main, ["--dataset", "cifar10", "--label", "bert", "--out", tmp_path], capsys)
    assert status == 0 and bars == [False, False]
    assert err.startswith("note: bert-base-uncased is not cached; downloading it from the Hugging Face hub\n")
    assert transformers.utils.logging.is_progress_bar_enabled()  # as it was, after


def test_bert_without_its_tokenizer_is_one_line(tiny_bert, tmp_path, capsys):
    """A model folder saved without its tokenizer loads (transformers makes a tokenizer of no
    vocabulary) and read every name as [UNK], all classes alike: the error named no cause, after a
    "Loading weights" progress bar on stderr."""
    folder = tmp_path / "model_only"
    folder.mkdir()
    for f in tiny_bert.iterdir():
        if f.name not in ("vocab.txt", "tokenizer_config.json"):
            shutil.copy(f, folder)
    status, _, err = cli(generate.main, ["--dataset", "cifar10", "--label", "bert", "--text_model",
                                         folder, "--out", tmp_path], capsys)
    assert (status, err) == (2, f"error: {folder} knows no word piece of 'airplane' (it tokenises to "
                                "[UNK] only): a model folder saved without its tokenizer, or a "
                                "vocabulary without the name\n")
    assert not list(tmp_path.glob("*.npy"))


def test_glove_tiny_file(tiny_glove, tmp_path, capsys):
    from gensim.models import KeyedVectors

    vectors = KeyedVectors.load_word2vec_format(str(tiny_glove), no_header=True)
    names = ["cat", "pickup truck", "lawn-mower", "sweet_peppers"]
    targets = make_label("glove", names, glove=tiny_glove)
    assert targets.shape == (4, 50) and targets.dtype == np.float32
    assert np.allclose(targets[0], vectors["cat"])
    assert np.allclose(targets[1], (vectors["pickup"] + vectors["truck"]) / 2)  # words averaged
    assert np.allclose(targets[2], vectors["lawn-mower"])                       # known as a whole
    assert np.allclose(targets[3], (vectors["sweet"] + vectors["peppers"]) / 2)
    assert np.array_equal(targets, make_label("glove", names, glove=tiny_glove))
    with pytest.raises(LabelError, match="zebra"):
        make_label("glove", ["cat", "zebra"], glove=tiny_glove)
    with pytest.raises(LabelError) as err:  # a vocabulary without the names: the first five, and a count
        make_label("glove", ["cat", *(f"x{i}" for i in range(8))], glove=tiny_glove)
    assert str(err.value) == ("GloVe vectors lack: 'x0' (x0); 'x1' (x1); 'x2' (x2); 'x3' (x3); 'x4' (x4); "
                              "and 3 more of the 9 names")
    status, _, _ = cli(generate.main, ["--dataset", "cifar10", "--label", "glove", "--glove",
                                       tiny_glove, "--out", tmp_path], capsys)
    assert status == 0
    written = np.load(tmp_path / "cifar10_glove.npy", allow_pickle=False)
    assert written.shape == (10, 50) and min_class_distance(written) > 0
    status, _, err = cli(generate.main, ["--dataset", "cifar10", "--label", "glove", "--glove",
                                         tmp_path / "missing.txt", "--out", tmp_path, "--force"],
                         capsys)
    assert status == 2 and "no such file" in err


def test_a_glove_download_keeps_stdout_one_json_line(tiny_glove, tmp_path, monkeypatch, capsys):
    """gensim's download bar goes to stdout, carriage returns and no newline: the JSON line came
    after it on the same line (`| jq .out` failed), a log file got thousands of updates on one
    line. Away from a terminal the bar is dropped; a note line says what is downloaded."""
    downloader = pytest.importorskip("gensim.downloader")
    from gensim.models import KeyedVectors
    vectors = KeyedVectors.load_word2vec_format(str(tiny_glove), no_header=True)

    def load(name):  # a download of three chunks, as gensim reports one
        for chunk in (1, 2, 3):
            downloader._progress(chunk, 8192, 3 * 8192)
        return vectors
    monkeypatch.setattr(downloader, "load", load)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("LABELREP_OFFLINE")
    monkeypatch.setenv("GENSIM_DATA_DIR", str(tmp_path / "gensim-data"))
    status, out, err = cli(generate.main, ["--dataset", "cifar10", "--label", "glove", "--out", tmp_path], capsys)
    assert status == 0 and files_written(out) == 1
    note, wrote = err.splitlines()
    assert note == f"note: glove-wiki-gigaword-50 is not in {tmp_path / 'gensim-data'}; downloading it with gensim"
    assert wrote.startswith(f"wrote {tmp_path / 'cifar10_glove.npy'}  (10, 50)  [") and "\r" not in err


def test_glove_with_hf_hub_offline_tries_no_download(tmp_path, monkeypatch, capsys):
    """labels/README.md: with HF_HUB_OFFLINE=1, as with LABELREP_OFFLINE=1, neither text family tries a
    download. GloVe read LABELREP_OFFLINE alone: it said 'downloading it with gensim', then gensim's
    error on a second line (or, without gensim, that it needed gensim), not how to supply a file."""
    monkeypatch.delenv("LABELREP_OFFLINE")   # HF_HUB_OFFLINE=1 (this file's)
    monkeypatch.setenv("GENSIM_DATA_DIR", str(tmp_path))
    for name in ("gensim", "gensim.downloader"):
        monkeypatch.setitem(sys.modules, name, None)   # a download would need it: ImportError
    status, _, err = cli(generate.main, ["--dataset", "cifar10", "--label", "glove", "--out", tmp_path], capsys)
    assert (status, err) == (2, f"error: cannot get GloVe vectors 'glove-wiki-gigaword-50' (none in {tmp_path}, "
                                "and HF_HUB_OFFLINE is set, so no download was tried); pass --glove PATH to "
                                "a GloVe text file (e.g. glove.6B.50d.txt from "
                                "https://nlp.stanford.edu/projects/glove/)\n")
    assert not list(tmp_path.glob("*.npy"))


def test_a_malformed_glove_line_is_named(tiny_glove, tmp_path, capsys):
    """It said "invalid literal for int() with base 10: 'airplane'" (the parse of the file as one
    with a header, tried last), whatever line was wrong."""
    lines = tiny_glove.read_text().splitlines()
    glove = tmp_path / "broken.50d.txt"
    for line, why in ((lines[2].rsplit(" ", 1)[0], "a value short"), (lines[2] + " x", "text"), ("", "blank"),
                      (lines[2].split(" ")[0] + " 0.5", "one value: gensim made it a vector of 50 x 0.5")):
        glove.write_text("\n".join(lines[:2] + [line] + lines[3:]) + "\n")
        status, _, err = cli(generate.main, ["--dataset", "cifar10", "--label", "glove", "--glove", glove,
                                             "--out", tmp_path], capsys)
        assert (status, err) == (2, f"error: cannot read word vectors from {glove}: line 3 is not a word "
                                    "followed by 50 numbers\n"), why
    glove.write_text("")
    status, _, err = cli(generate.main, ["--dataset", "cifar10", "--label", "glove", "--glove", glove,
                                         "--out", tmp_path], capsys)
    assert err == f"error: cannot read word vectors from {glove}: the file is empty\n"
    assert not list(tmp_path.glob("*.npy"))


def test_a_glove_file_with_a_word2vec_header_is_read_and_checked(tiny_glove, tmp_path, capsys):
    """A word2vec-format file ("COUNT DIM" first) gives the headless file's vectors; a count that is
    not the file's was gensim's "unexpected end of input; is count incorrect or file otherwise
    damaged?" (more words announced) or a file read only up to it (fewer)."""
    lines = tiny_glove.read_text().splitlines()
    glove = tmp_path / "headed.50d.txt"
    body = "\n".join(lines) + "\n"

    def error(text):
        glove.write_text(text)
        status, _, err = cli(generate.main, ["--dataset", "cifar10", "--label", "glove", "--glove", glove,
                                             "--out", tmp_path], capsys)
        assert status == 2 and err.startswith(f"error: cannot read word vectors from {glove}: "), err
        return err.split(": ", 2)[2].rstrip("\n")

    glove.write_text(f"{len(lines)} 50\n" + body)
    names = ["cat", "pickup truck"]
    assert np.array_equal(make_label("glove", names, glove=glove),
                          make_label("glove", names, glove=tiny_glove))
    assert error("400000 50\n" + body) == f"line 1 announces 400000 words, {len(lines)} lines follow it"
    assert error("3 50\n" + body) == f"line 1 announces 3 words, {len(lines)} lines follow it"
    assert error("400000 50\n") == "line 1 announces 400000 words, 0 lines follow it"
    assert error(f"{len(lines)} 50\n" + "\n".join(lines[:2] + ["cat 0.5"] + lines[3:]) + "\n") == (
        "line 4 is not a word followed by 50 numbers")
    # without a header the first line gives the size: line 1 or line 2 may be the odd one
    assert error("the 0.5\n" + body) == "line 1 holds a word and 1 number, line 2 a word and 50 numbers"
    # a tab-separated file was "the word vectors lack" every class name
    assert error(body.replace(" ", "\t")) == ("line 1 holds no numbers after its first word (a word and its "
                                             "values are separated by spaces)")
    assert error("2 0\ncat\ndog\n") == ("line 2 holds no numbers after its first word (a word and its values "
                                         "are separated by spaces)")
    assert not list(tmp_path.glob("*.npy"))


def test_a_glove_file_is_read_in_one_pass_without_gensim(tiny_glove, tmp_path, monkeypatch, capsys):
    """The file was checked line by line, then read again by gensim, which kept every word's
    vector (2.6 GB for glove.840B.300d): now one pass keeps the vectors of the asked words alone,
    as gensim reads them (float32, a repeated word's first), from plain, .gz, .bz2 or .xz files,
    with no gensim. A cut-short .gz was an EOFError traceback."""
    import bz2
    import gzip
    import lzma

    from gensim.models import KeyedVectors

    text = tiny_glove.read_bytes() + b"cat " + b" ".join([b"9.5"] * 50) + b"\n"   # cat twice
    (tmp_path / "glove.txt").write_bytes(text)
    gensim_vectors = KeyedVectors.load_word2vec_format(str(tmp_path / "glove.txt"), no_header=True)
    expected = np.stack([gensim_vectors[name] for name in CIFAR10_CLASSES])
    for name in [m for m in sys.modules if m.split(".")[0] in ("gensim", "smart_open")]:
        monkeypatch.setitem(sys.modules, name, None)   # import gensim / smart_open: ImportError

    vectors = generate._read_vectors(tmp_path / "glove.txt", {"cat", "pickup", "zebra"})
    assert sorted(vectors) == ["cat", "pickup"]
    for word, vector in vectors.items():
        assert vector.dtype == np.float32 and np.array_equal(vector, gensim_vectors[word]), word
    for suffix, compress in ((".gz", gzip.compress), (".GZ", gzip.compress), (".bz2", bz2.compress),
                             (".xz", lzma.compress)):
        glove = tmp_path / f"glove.txt{suffix}"
        glove.write_bytes(compress(text))
        status, _, _ = cli(generate.main, ["--dataset", "cifar10", "--label", "glove", "--glove", glove,
                                           "--out", tmp_path / suffix], capsys)
        written = np.load(tmp_path / suffix / "cifar10_glove.npy", allow_pickle=False)
        assert status == 0 and written.dtype == np.float32 and np.array_equal(written, expected), suffix
    glove = tmp_path / "cut.txt.gz"
    glove.write_bytes(gzip.compress(text)[:300])
    status, _, err = cli(generate.main, ["--dataset", "cifar10", "--label", "glove", "--glove", glove,
                                         "--out", tmp_path], capsys)
    assert (status, err) == (2, f"error: cannot read word vectors from {glove}: Compressed file ended "
                                "before the end-of-stream marker was reached\n")
    monkeypatch.setenv("GENSIM_DATA_DIR", str(tmp_path))   # no local copy: the downloader needs gensim
    status, _, err = cli(generate.main, ["--dataset", "cifar10", "--label", "glove", "--out", tmp_path],
                         capsys)   # LABELREP_OFFLINE=1 (conftest): no download tried, gensim or not
    assert (status, err) == (2, f"error: cannot get GloVe vectors 'glove-wiki-gigaword-50' (none in {tmp_path}, "
                                "and LABELREP_OFFLINE is set, so no download was tried); pass --glove PATH to "
                                "a GloVe text file (e.g. glove.6B.50d.txt from "
                                "https://nlp.stanford.edu/projects/glove/)\n")
    monkeypatch.delenv("LABELREP_OFFLINE")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    status, _, err = cli(generate.main, ["--dataset", "cifar10", "--label", "glove", "--out", tmp_path],
                         capsys)
    assert status == 2 and err.startswith("error: glove needs gensim (") and not list(tmp_path.glob("*.npy"))


# ----------------------------------------------------------------------------- the paper's files

@needs_reference
@pytest.mark.parametrize("dataset", ["cifar10", "cifar100"])
def test_speech_reproduces_paper_recordings(dataset):
    count = generate.DATASETS[dataset].num_classes
    targets = make_label("speech", [str(i) for i in range(count)],
                         audio_dir=REFERENCE / f"{dataset}_wav")
    published = np.load(REFERENCE / f"{dataset}_speech.npy", allow_pickle=False)
    closeness = stats.compare(published, targets)
    # dB; librosa >= 0.10's zero-padded STFT ends gave 0.026-0.030 mean and 5.4 max (column 0)
    assert closeness["mean_abs_diff"] < 0.005 and closeness["max_abs_diff"] < 0.5, closeness
    assert closeness["min_class_corr"] > 0.99999, closeness


@needs_reference
@pytest.mark.parametrize("dataset, name", [("cifar10", "random"), ("cifar100", "random"),
                                           ("cifar10", "lowdim"), ("cifar10", "uniform"),
                                           ("cifar100", "uniform")])
def test_default_seeds_reproduce_paper_exactly(dataset, name):
    names = generate.DATASETS[dataset].class_names
    published = np.load(REFERENCE / f"{dataset}_{name}.npy", allow_pickle=False)
    assert np.array_equal(make_label(name, names), published)


@needs_reference
@pytest.mark.parametrize("dataset", ["cifar10", "cifar100"])
def test_shuffle_of_paper_speech_is_paper_shuffle(dataset, tmp_path, capsys):
    status, _, _ = cli(generate.main, ["--dataset", dataset, "--label", "shuffle", "--speech_file",
                                       REFERENCE / f"{dataset}_speech.npy", "--out", tmp_path],
                       capsys)
    assert status == 0
    assert np.array_equal(np.load(tmp_path / f"{dataset}_shuffle.npy", allow_pickle=False),
                          np.load(REFERENCE / f"{dataset}_shuffle.npy", allow_pickle=False))


@needs_reference
def test_text_names_are_the_papers():
    listed = [n.strip() for n in (REFERENCE / "cifar100_text.txt").read_text().split(",")]
    assert sorted(class_names("cifar100", "text")) == sorted(n for n in listed if n)


@needs_reference
@pytest.mark.parametrize("name", ["bert", "glove"])
def test_published_cifar100_text_labels_follow_the_text_files_order(name):
    """labels/README.md: the published rows follow cifar100_text.txt (5 names per superclass), not
    fine-label order, and its recipe puts each row on its own fine class."""
    text = [n.strip() for n in (REFERENCE / "cifar100_text.txt").read_text().split(",") if n.strip()]
    fine = class_names("cifar100", "text")
    published = np.load(REFERENCE / f"cifar100_{name}.npy", allow_pickle=False)
    reordered = np.empty_like(published)
    reordered[[fine.index(n) for n in text]] = published
    superclass = np.empty(100, dtype=int)
    superclass[[fine.index(n) for n in text]] = np.arange(100) // 5   # of each fine class

    def within_superclass(targets):
        rows = targets.reshape(100, -1).astype(np.float64)
        rows -= rows.mean(0)
        rows /= np.linalg.norm(rows, axis=1, keepdims=True)
        same = (superclass[:, None] == superclass) & ~np.eye(100, dtype=bool)
        return (rows @ rows.T)[same].mean()

    assert within_superclass(published) < 0.05 < 0.15 < within_superclass(reordered)


@needs_reference
@pytest.mark.parametrize("name", ["bert", "glove"])
def test_published_cifar100_text_labels_are_said_to_be_in_another_order(name, tmp_path, capsys):
    """A run given the paper's cifar100_bert.npy or cifar100_glove.npy (--label_dir the published
    files) trained apple against beaver's target and said nothing: their rows follow
    cifar100_text.txt's order (labels/README.md). Loading one says so; reordered, as the README
    does, it loads without a word."""
    targets = load_label("cifar100", name, REFERENCE, 100)
    assert capsys.readouterr().err == (
        f"warning: label file {REFERENCE / f'cifar100_{name}.npy'} is the paper's published cifar100_{name}.npy, "
        "whose row j is the j-th name of its cifar100_text.txt (beaver, dolphin, ...: superclass by "
        "superclass), not fine class j: class 0 (apple) trains against beaver's target; reorder its rows "
        "as labels/README.md shows to train each class against its own name's\n")
    text = [n.strip() for n in (REFERENCE / "cifar100_text.txt").read_text().split(",") if n.strip()]
    fine = class_names("cifar100", "text")
    reordered = np.empty_like(targets)
    reordered[[fine.index(n) for n in text]] = targets
    np.save(tmp_path / f"cifar100_{name}.npy", reordered)
    assert np.array_equal(load_label("cifar100", name, tmp_path, 100), reordered)
    assert capsys.readouterr().err == ""


def test_builtin_names():
    assert len(CIFAR10_CLASSES) == 10 and len(set(CIFAR100_CLASSES)) == 100
    assert list(CIFAR100_CLASSES) == sorted(CIFAR100_CLASSES)   # fine labels are alphabetical
    assert class_names("cifar10", "spoken")[1] == "car"
    assert class_names("cifar100", "standard")[1] == "aquarium fish"


@pytest.mark.skipif(not (SHARED / "data").is_dir(), reason="../shared is absent")
def test_meta_files_give_builtin_names():
    data = SHARED / "data"
    assert generate.dataset_class_names("cifar10", data / "cifar10-subset") == list(CIFAR10_CLASSES)
    assert (generate.dataset_class_names("cifar100", data / "cifar100-subset")
            == list(CIFAR100_CLASSES))


# ----------------------------------------------------------------------------- shipped files

SHIPPED = sorted(LABEL_DIR.glob("*.npy"))


def test_every_offline_label_is_shipped():
    """And the other way round: `--label all` (offline) regenerates every shipped file, e.g.
    uniform_gap=10, the follow-up's largest gap, which a shorter list of gaps left out."""
    for dataset in ("cifar10", "cifar100"):
        assert set(offline_labels()) == set(available_labels(dataset))
    assert generate.expand_labels(["uniform_gap=2", "uniform_gap=2.0", "shuffle", "speech", "shuffle"]) == [
        "speech", "uniform_gap=2", "shuffle"]  # once each, speech first (shuffle reuses it)


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_file(path):
    dataset, _, name = path.stem.partition("_")
    assert dataset in generate.DATASETS and parse_label(name)[0] == name
    targets = load_label(dataset, name)
    assert targets.dtype == np.float32 and np.isfinite(targets).all()
    assert targets.shape == expected_shape(name, generate.DATASETS[dataset].num_classes)
    assert min_class_distance(targets) > 0
    if parse_label(name)[1].make not in (generate.make_speech, generate.make_shuffle):
        # seeded synthetic families: the shipped file is exactly what the generator makes
        assert np.array_equal(targets, make_label(name, generate.DATASETS[dataset].class_names))


@needs_espeak
def test_shipped_speech_matches_this_machine():
    shipped = load_label("cifar10", "speech")
    closeness = stats.compare(shipped, make_label("speech", class_names("cifar10", "spoken")))
    assert closeness["mean_abs_diff"] < 0.1 and closeness["min_class_corr"] > 0.999, closeness
    shuffled = make_label("shuffle", CIFAR10_CLASSES, speech_targets=shipped)
    assert np.array_equal(shuffled, load_label("cifar10", "shuffle"))


def test_targets_sha256_tells_shapes_apart_but_not_the_files_dtype():
    """config.json's label_sha256 (`targets_sha256`): a flat (10, 64) target and the same numbers as
    (10, 8, 8) are other labels (a linear head against the 2-D decoder), so their digests differ;
    the same targets saved in float64 are the same float32 targets train.py regresses."""
    from labels import targets_sha256
    flat = np.random.RandomState(0).uniform(-1, 1, (10, 64)).astype(np.float32)
    assert targets_sha256(flat) != targets_sha256(flat.reshape(10, 8, 8))
    assert targets_sha256(flat) == targets_sha256(flat.astype(np.float64))


def test_load_label_names_the_alternatives():
    with pytest.raises(LabelError, match="speech"):
        load_label("cifar10", "no_such_label")


@pytest.mark.parametrize("targets, rounded", [
    (2**40 + np.arange(10, dtype=np.int64)[:, None], True),  # 2**40 + 1 is 2**40 in float32
    (1 + 1e-9 * np.arange(10.0)[:, None], True),
    (np.ones((10, 3), np.float16), False),
])
def test_classes_the_same_in_float32_say_whether_the_file_differs(tmp_path, targets, rounded):
    """Distinct in the file, equal once trained in float32: 'the same target as another class'
    read as a wrong claim about the file."""
    np.save(tmp_path / "cifar10_mine.npy", targets)
    with pytest.raises(LabelError) as err:
        load_label("cifar10", "mine", tmp_path, 10)
    assert str(err.value) == (f"label file {tmp_path}/cifar10_mine.npy: class 1 has the same target as "
                              "class 0" + (" once rounded to float32, the precision it trains in (the "
                                           "file's values differ)" if rounded else "")
                              + ", so nearest-target decoding cannot tell them apart")


def test_an_npz_saved_under_the_labels_name_is_named(tmp_path):
    """numpy.savez(folder/cifar10_mine) writes cifar10_mine.npz: --label mine said only that no
    .npy was there."""
    np.savez(tmp_path / "cifar10_mine", targets=np.eye(10, dtype=np.float32))
    with pytest.raises(LabelError) as err:
        load_label("cifar10", "mine", tmp_path, 10)
    assert str(err.value) == (f"no label file {tmp_path}/cifar10_mine.npy for --label mine: cifar10_mine.npz "
                              "there is a .npz archive; save the targets with numpy.save as cifar10_mine.npy")


def test_a_label_given_as_its_file_name_is_that_label(tmp_path):
    """--label s10x7.npy looked for cifar10_s10x7.npy.npy: each script reads a .npy ending as the
    label it names (`utils.flags.label_name`), so its file and run directory are the label's."""
    import attack
    import sweep
    import train
    from bench.bench import parse_args
    from utils.grid import axis_values
    assert train.build_parser().parse_args(["--label", "s10x7.npy"]).label == "s10x7"
    assert attack.build_parser().parse_args(["--label", "s10x7.npy"]).label == "s10x7"
    assert axis_values("labels", ["s10x7.npy", "s10x7"])[0] == ["s10x7"]  # sweep.py's, a grid file's too
    # sweep.py's command line read the ending off twice: x.npy.npy ran label x, not train.py's x.npy
    _, runs, _, _ = sweep.parse(["--dry_run", "--labels", "x.npy.npy", "s10x7.npy"])
    assert [run.label for run in runs] == ["x.npy", "s10x7"]
    assert parse_args(["--labels", "speech.npy", "--no_record"]).labels == ["speech"]


def test_a_broken_link_as_label_file_is_named_as_such(tmp_path, capsys):
    """A label file that is a symbolic link to a moved file (or to itself) is listed by ls, but train.py
    and sweep.py said "no label file ...; labels found: ..." without it, and labels.stats
    "not a readable .npy file (No such file or directory)"; a link to a good file is read."""
    np.save(tmp_path / "cifar10_good.npy", 5 * np.eye(10, dtype=np.float32))
    (tmp_path / "cifar10_link.npy").symlink_to("cifar10_good.npy")
    (tmp_path / "cifar10_moved.npy").symlink_to(tmp_path / "gone" / "cifar10_moved.npy")
    (tmp_path / "cifar10_loop.npy").symlink_to("cifar10_loop.npy")
    assert np.array_equal(load_label("cifar10", "link", tmp_path), 5 * np.eye(10))
    for name, target in (("moved", tmp_path / "gone" / "cifar10_moved.npy"), ("loop", "cifar10_loop.npy")):
        message = f"label file {tmp_path / f'cifar10_{name}.npy'} is a broken symbolic link (to {target})"
        with pytest.raises(LabelError) as err:
            load_label("cifar10", name, tmp_path, num_classes=10)
        assert str(err.value) == message
        status, out, err = cli(stats.main, [tmp_path / f"cifar10_{name}.npy"], capsys)
        assert (status, out, err) == (2, "", f"error: {message}\n")


def test_a_label_file_named_otherwise_says_how_to_name_it(tmp_path):
    """The whole file name (cifar10_s10x7.npy, read as cifar10_s10x7), or a file without the
    dataset in its name: 'no label file' listed labels that did not include it, or did without
    saying that the dataset is not part of the name."""
    np.save(tmp_path / "cifar10_s10x7.npy", np.random.rand(10, 7).astype(np.float32))
    np.save(tmp_path / "bare.npy", np.random.rand(10, 7).astype(np.float32))
    with pytest.raises(LabelError) as err:
        load_label("cifar10", "cifar10_s10x7", tmp_path)
    assert str(err.value) == (f"no label file {tmp_path}/cifar10_cifar10_s10x7.npy for --label cifar10_s10x7: "
                              "--label is the NAME of cifar10_NAME.npy; pass --label s10x7")
    with pytest.raises(LabelError) as err:
        load_label("cifar10", "bare", tmp_path)
    assert str(err.value) == (f"no label file {tmp_path}/cifar10_bare.npy for --label bare: bare.npy there is "
                              "not named as a label file; rename it cifar10_bare.npy")
    assert load_label("cifar10", "s10x7", tmp_path).shape == (10, 7)


def test_another_datasets_file_named_as_the_label_names_dataset_as_the_mix_up(tmp_path):
    """--label cifar10_speech (or cifar10_speech.npy) in a CIFAR-100 run listed the labels found,
    without saying that the file is CIFAR-10's: --dataset, or the label's name, is the mix-up."""
    np.save(tmp_path / "cifar10_speech.npy", np.random.rand(10, 7).astype(np.float32))
    with pytest.raises(LabelError) as err:
        load_label("cifar100", "cifar10_speech", tmp_path)
    assert str(err.value) == (f"no label file {tmp_path}/cifar100_cifar10_speech.npy for --label cifar10_speech: "
                              "cifar10_speech.npy there is a cifar10 label file, which --dataset cifar10 reads "
                              "as --label speech")
    np.save(tmp_path / "cifar100_speech.npy", np.random.rand(100, 7).astype(np.float32))
    with pytest.raises(LabelError) as err:  # the run's own file of that label is there too
        load_label("cifar100", "cifar10_speech", tmp_path)
    assert str(err.value).endswith("which --dataset cifar10 reads as --label speech; for cifar100 pass --label speech")
    with pytest.raises(LabelError) as err:
        load_label("cifar10", "cifar100_speech", tmp_path)
    assert str(err.value).endswith(": cifar100_speech.npy there is a cifar100 label file, which --dataset cifar100 "
                                   "reads as --label speech; for cifar10 pass --label speech")


def test_a_family_name_spelt_otherwise_names_the_file_generate_wrote(tmp_path, capsys):
    """labels.generate --label uniform_gap=2.0 writes cifar10_uniform_gap=2.npy; train.py --label
    uniform_gap=2.0 then said 'make it with python -m labels.generate ... --label uniform_gap=2.0',
    which writes the same file again: the error sent the user round in a loop."""
    assert cli(generate.main, ["--dataset", "cifar10", "--label", "uniform_gap=2.0", "--out", tmp_path],
               capsys)[0] == 0
    for name, canonical in (("uniform_gap=2.0", "uniform_gap=2"), ("normal_dim=010", "normal_dim=10")):
        with pytest.raises(LabelError) as err:
            load_label("cifar10", name, tmp_path)
        assert str(err.value) == (f"no label file {tmp_path}/cifar10_{name}.npy for --label {name}: "
                                  f"labels.generate writes this label as cifar10_{canonical}.npy; "
                                  f"pass --label {canonical}")
    assert load_label("cifar10", "uniform_gap=2", tmp_path).shape == (10, 50)


# ----------------------------------------------------------------------------- the CLI

def test_refuses_to_overwrite_without_force(tmp_path, capsys):
    argv = ["--dataset", "cifar10", "--label", "uniform", "--out", tmp_path]
    assert cli(generate.main, argv, capsys)[0] == 0
    target = tmp_path / "cifar10_uniform.npy"
    target.write_bytes(b"sentinel")
    status, _, err = cli(generate.main, argv, capsys)
    assert status == 2 and "--force" in err and target.read_bytes() == b"sentinel"
    assert cli(generate.main, argv + ["--force"], capsys)[0] == 0
    assert np.load(target, allow_pickle=False).shape == (10, 64, 64)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]   # no leftovers


def test_a_full_disk_keeps_the_old_file(tmp_path):
    """A write cut short (here by a 100 kB file-size limit, as by a full disk) keeps the old file
    and says why: numpy's own write to a file lost the cause, '[Errno None] None'."""
    target = tmp_path / "cifar10_uniform.npy"   # 164 kB
    target.write_bytes(b"sentinel")
    limit = ("import resource, runpy, signal; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
             "resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000)); "
             "runpy.run_module('labels.generate', run_name='__main__', alter_sys=True)")
    proc = subprocess.run([sys.executable, "-c", limit, "--dataset", "cifar10", "--label", "uniform",
                           "--out", str(tmp_path), "--force"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert (proc.returncode, proc.stderr) == (2, f"error: could not write {target}: File too large\n")
    assert target.read_bytes() == b"sentinel"
    assert [p.name for p in tmp_path.iterdir()] == [target.name]   # no leftovers


def test_unusable_out_is_one_line(tmp_path, capsys):
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    for out in (a_file, a_file / "below"):  # below it, the file is named: was 'a_file/below: Not a directory'
        status, _, err = cli(generate.main, ["--dataset", "cifar10", "--label", "uniform", "--out",
                                             out], capsys)
        assert status == 2 and err == f"error: cannot use {a_file}: a file, not a folder\n"
    status, _, err = cli(generate.main, ["--dataset", "cifar10", "--label", "uniform", "--out", ""], capsys)
    assert status == 2 and err == ("error: argument --out: must not be empty (see python -m labels.generate "
                                   "--help)\n")  # wrote into the current folder


def test_an_option_of_another_family_is_named_as_ignored(tmp_path, capsys):
    """--speech_file only shuffles; given for speech it was silently not used."""
    status, out, err = cli(generate.main, ["--dataset", "cifar10", "--label", "uniform", "random",
                                           "--speech_file", tmp_path / "speech.npy", "--glove", "g.txt",
                                           "--names", "spoken", "--out", tmp_path], capsys)
    assert status == 0 and files_written(out) == 2
    assert said(err).splitlines() == [
        "warning: --speech_file only acts with --label shuffle; ignored for --label uniform random",
        "warning: --glove only acts with --label glove; ignored for --label uniform random",
        "warning: --names only acts with --label speech or shuffle or bert or glove; ignored for --label uniform "
        "random"]
    # uniform draws nothing at random: a --seed for it was silently not used
    status, out, err = cli(generate.main, ["--dataset", "cifar10", "--label", "uniform", "--seed", "3",
                                           "--out", tmp_path, "--force"], capsys)
    assert status == 0 and said(err) == ("warning: --seed only acts with a label drawn at random (shuffle random "
                                   "composite lowdim normal_dim uniform_gap); ignored for --label uniform\n")
    # a parametrised family's name (normal_dim=10) is no key of FAMILIES: was a KeyError traceback
    status, out, err = cli(generate.main, ["--dataset", "cifar10", "--label", "uniform", "normal_dim=10",
                                           "--seed", "3", "--out", tmp_path, "--force"], capsys)
    assert status == 0 and said(err) == "" and files_written(out) == 2
    assert np.array_equal(np.load(tmp_path / "cifar10_normal_dim=10.npy"),
                          make_label("normal_dim=10", CIFAR10_CLASSES, seed=3))


def test_speech_options_that_a_recording_or_speech_file_replaces_are_named_as_ignored(tones, tmp_path, capsys):
    """--espeak_voice beside --audio_dir (the recordings are read, no name is spoken), and --audio_dir
    or --espeak_voice beside --speech_file for shuffle alone (it permutes the file) were silently not used."""
    status, out, err = cli(generate.main, ["--dataset", "cifar10", "--label", "speech", "--audio_dir", tones,
                                           "--espeak_voice", "en-gb", "--out", tmp_path], capsys)
    assert status == 0 and files_written(out) == 1
    assert said(err) == ("warning: --espeak_voice only acts without --audio_dir (its recordings replace espeak-ng's "
                   "speech); ignored\n")
    speech = tmp_path / "cifar10_speech.npy"
    status, out, err = cli(generate.main, ["--dataset", "cifar10", "--label", "shuffle", "--speech_file", speech,
                                           "--audio_dir", tmp_path / "no_such_folder", "--out", tmp_path], capsys)
    assert status == 0 and files_written(out) == 1
    assert said(err) == ("warning: --audio_dir only acts with --label speech (shuffle permutes --speech_file); "
                   "ignored for --label shuffle\n")
    assert np.array_equal(np.load(tmp_path / "cifar10_shuffle.npy"),
                          make_label("shuffle", CIFAR10_CLASSES, speech_targets=np.load(speech)))
    # with speech among the labels, --audio_dir makes it: no warning
    status, out, err = cli(generate.main, ["--dataset", "cifar10", "--label", "speech", "shuffle", "--speech_file",
                                           speech, "--audio_dir", tones, "--out", tmp_path / "both"], capsys)
    assert status == 0 and files_written(out) == 2 and said(err) == ""


def test_bad_meta_and_names_files_are_one_line(tmp_path, capsys):
    meta = tmp_path / "batches.meta"
    for content, message in ((b"garbage", " is truncated or corrupt"),
                             (pickle.dumps({"names": []}), " has no list of class names under 'label_names'"),
                             (pickle.dumps({"label_names": 5}), ": 'label_names' is not a list of 10 class names"),
                             (pickle.dumps({"label_names": ["a", "b"]}), ": 'label_names' is not a list of 10 class names"),
                             (pickle.dumps(print), " is truncated or corrupt")):  # runs no code
        meta.write_bytes(content)
        status, _, err = cli(generate.main, ["--dataset", "cifar10", "--label", "uniform",
                                             "--data_dir", tmp_path, "--out", tmp_path], capsys)
        assert status == 2 and f"{meta}{message}" in err and "download" not in err  # it downloads nothing
    # a --data_dir that is no folder (a typo) was a note, the built-in names and exit 0
    for data_dir, what in ((tmp_path / "typo", "does not exist"), (meta, "is a file, not a folder")):
        status, out, err = cli(generate.main, ["--dataset", "cifar10", "--label", "uniform",
                                               "--data_dir", data_dir, "--out", tmp_path / "out"], capsys)
        assert status == 2 and err == (f"error: --data_dir {data_dir} {what} (give the dataset's folder, "
                                       "or leave it out for the built-in names)\n")
        assert not (tmp_path / "out").exists()
    # a folder without the meta file: the built-in names, with a note
    (tmp_path / "out").mkdir()
    status, _, err = cli(generate.main, ["--dataset", "cifar10", "--label", "uniform", "--data_dir",
                                         tmp_path / "out", "--out", tmp_path / "out"], capsys)
    assert status == 0 and said(err) == (f"note: no batches.meta under {tmp_path / 'out'}; using the built-in "
                                   "cifar10 class names\n")
    names = tmp_path / "names.txt"
    names.write_bytes("caf\xe9\n".encode("latin1"))
    status, _, err = cli(generate.main, ["--dataset", "cifar10", "--label", "glove", "--names",
                                         names, "--glove", names, "--out", tmp_path], capsys)
    assert status == 2 and f"--names file {names} is not UTF-8 text" in err


def test_all_writes_every_offline_family(tones, tmp_path, capsys):
    status, _, _ = cli(generate.main, ["--dataset", "cifar10", "--label", "all", "--audio_dir",
                                       tones, "--out", tmp_path], capsys)
    assert status == 0
    assert sorted(p.stem for p in tmp_path.glob("*.npy")) == sorted(
        f"cifar10_{n}" for n in offline_labels())


def test_a_family_of_your_own_as_the_readme_adds_one(tmp_path, capsys, monkeypatch):
    """labels/README.md's 'A family of your own': its function and FAMILIES entry, as written there,
    make a file labels.generate writes and train.py's checks accept; for CIFAR-100's superclasses too."""
    section = (ROOT / "labels" / "README.md").read_text().split("## A family of your own")[1]
    code, entry = re.search(r"```python\n(.*?)```", section, re.S)[1].split("# and its entry")
    namespace = vars(generate).copy()
    exec(code, namespace)
    (name, family), = eval("{" + entry.split("\n", 1)[1] + "}", namespace).items()
    monkeypatch.setitem(generate.FAMILIES, name, family)
    for granularity, classes in (("fine", 10), ("coarse", 20)):
        dataset = "cifar10" if granularity == "fine" else "cifar100"
        status, _, _ = cli(generate.main, ["--dataset", dataset, "--label_granularity", granularity,
                                           "--label", name, "--out", tmp_path / granularity], capsys)
        assert status == 0
        targets = np.load(tmp_path / granularity / f"{dataset}_{name}.npy", allow_pickle=False)
        assert targets.shape == (classes, 32) and targets.dtype == np.float32
        assert 0 <= targets.min() and targets.max() <= 80


def test_each_dataset_gets_its_own_classes(tmp_path, capsys):
    """--dataset cifar10 cifar100, as the README regenerates the shipped files: a target per class
    of each dataset, 10 and 100, not the first dataset's class names for both."""
    status, _, _ = cli(generate.main, ["--dataset", "cifar10", "cifar100", "--label", "uniform", "lowdim",
                                       "--out", tmp_path], capsys)
    assert status == 0
    assert {p.name: np.load(p).shape for p in tmp_path.glob("*.npy")} == {
        "cifar10_uniform.npy": (10, 64, 64), "cifar10_lowdim.npy": (10, 10),
        "cifar100_uniform.npy": (100, 64, 64), "cifar100_lowdim.npy": (100, 100)}


FAMILY_NAMES = "speech, shuffle, uniform, random, composite, lowdim, bert, glove, normal_dim=D, uniform_gap=G, all"


@pytest.mark.parametrize("label, message", [
    ("sound", f"unknown label family; choose from {FAMILY_NAMES}"),
    ("normal_dim=0", "D must be a whole number in 1 .. 100000"),
    ("normal_dim=2.5", "D must be a whole number in 1 .. 100000"),
    ("normal_dim=99999999999999999999", "D must be a whole number in 1 .. 100000"),  # numpy's traceback
    # int()'s ValueError traceback for over 4300 digits, found by fuzzing parse_label
    pytest.param("normal_dim=" + "1" * 4400, "D must be a whole number in 1 .. 100000", id="4400-digits"),
    ("normal_dim", "needs a parameter"),
    ("uniform_gap=-1", "number >= 0"),
    ("uniform_gap=x", "number >= 0"),
    # make_label: numpy's OverflowError traceback; the command line: "File name too long" for its
    # 309-digit name, found by fuzzing parse_label
    ("uniform_gap=1e308", "G must be at most 3.4e38, float32's largest"),
    ("speech=3", "takes no parameter"),
])
def test_bad_label_names(label, message, tmp_path, capsys):
    """Each names the flag and the value given ("unknown label family 'x'" named no flag), and
    from Python, the name given."""
    status, _, err = cli(generate.main, ["--dataset", "cifar10", "--label", "speech", label, "--out",
                                         tmp_path], capsys)
    assert status == 2 and err.startswith(f"error: --label {label}: ") and message in err
    with pytest.raises(LabelError) as python:
        make_label(label, CIFAR10_CLASSES)
    assert str(python.value).startswith(f"{label}: ") and message in str(python.value)


def test_an_unknown_family_lists_the_known_ones(tmp_path, capsys):
    status, _, err = cli(generate.main, ["--dataset", "cifar10", "--label", "x", "--out", tmp_path], capsys)
    assert status == 2 and err == f"error: --label x: unknown label family; choose from {FAMILY_NAMES}\n"


def test_bad_audio_dirs(tones, tmp_path, capsys):
    def speech_from(folder):
        return cli(generate.main, ["--dataset", "cifar10", "--label", "speech", "--audio_dir",
                                   folder, "--out", tmp_path / "out"], capsys)

    missing = tmp_path / "missing_class"
    shutil.copytree(tones, missing)
    (missing / "3.wav").rename(missing / "10.wav")
    status, _, err = speech_from(missing)
    assert status == 2 and "lacks 3.wav" in err

    too_few = tmp_path / "too_few"
    shutil.copytree(tones, too_few)
    (too_few / "9.wav").unlink()
    status, _, err = speech_from(too_few)
    assert status == 2 and "holds 9 numbered .wav files; expected 10" in err

    too_many = write_tones(tmp_path / "too_many", 11)
    status, _, err = speech_from(too_many)
    assert status == 2 and "holds 11 numbered .wav files" in err

    broken = tmp_path / "broken"
    shutil.copytree(tones, broken)
    (broken / "0.wav").write_bytes(b"not audio")
    status, _, err = speech_from(broken)
    assert status == 2 and "cannot read audio file" in err and "0.wav" in err

    cut = tmp_path / "cut"  # a copy stopped part way: its first half was made into a target
    shutil.copytree(tones, cut)
    whole = (cut / "4.wav").read_bytes()
    (cut / "4.wav").write_bytes(whole[:len(whole) // 2])
    status, _, err = speech_from(cut)
    assert status == 2 and (f"audio file {cut / '4.wav'} is cut short: its header gives {len(whole)} "
                            f"bytes, the file holds {len(whole) // 2}; copy it again") in err

    padded = tmp_path / "padded"
    shutil.copytree(tones, padded)
    shutil.copy(padded / "5.wav", padded / "01.wav")  # was read as class 1, beside 1.wav or for it
    (padded / "1.wav").unlink()
    status, _, err = speech_from(padded)
    assert status == 2 and "holds 01.wav: name recordings 0.wav .. 9.wav, once each, without leading zeros" in err
    (padded / "01.wav").rename(padded / "1.wav")
    shutil.copy(padded / "5.wav", padded / "1.WAV")
    status, _, err = speech_from(padded)
    assert status == 2 and ("holds 1.wav beside 1.WAV" in err or "holds 1.WAV beside 1.wav" in err)

    status, _, err = speech_from(tmp_path / "nowhere")
    assert status == 2 and "not a directory" in err
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").glob("*.npy"))


def test_a_speech_file_of_another_dataset_or_label_names_the_flag(tmp_path, capsys):
    """--speech_file of another dataset (cifar10's for --dataset cifar100) or another label said only
    'shuffle needs speech targets of shape (100, H, W); got (10, 64, 64)', naming neither the flag
    nor the file; a missing one 'label file ... is not a readable .npy file'."""
    speech, glove = tmp_path / "cifar10_speech.npy", tmp_path / "cifar10_glove.npy"
    np.save(speech, np.random.RandomState(0).uniform(-80, 0, (10, 64, 64)).astype(np.float32))
    np.save(glove, np.random.RandomState(0).normal(size=(10, 50)).astype(np.float32))
    for dataset, path, message in (
            ("cifar100", speech, f"--speech_file {speech} holds targets of shape (10, 64, 64); shuffle permutes "
                                 "the --dataset's speech targets, of shape (100, H, W)"),
            ("cifar10", glove, f"--speech_file {glove} holds targets of shape (10, 50); shuffle permutes the "
                               "--dataset's speech targets, of shape (10, H, W)"),
            ("cifar10", tmp_path / "x.npy", f"--speech_file {tmp_path / 'x.npy'} does not exist; give the "
                                            "--dataset's speech label file ({dataset}_speech.npy)")):
        status, _, err = cli(generate.main, ["--dataset", dataset, "--label", "shuffle", "--speech_file", path,
                                             "--out", tmp_path / "out"], capsys)
        assert (status, err) == (2, f"error: {message}\n")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("argv, message", [
    # a typo in a names file's path
    (["--label", "glove", "--names", "{tmp}/nmaes.txt"],
     "--names '{tmp}/nmaes.txt' is neither a name set (standard, spoken, text) nor a file"),
    (["--label", "glove", "--glove", "{tmp}/glove.6B.50d.txt"], "--glove {tmp}/glove.6B.50d.txt: no such file "
     "(give a GloVe text file such as glove.6B.50d.txt, or a gensim-downloader name)"),
    (["--label", "bert", "--text_model", "{tmp}/bert-base"], "--text_model {tmp}/bert-base: no such directory "
     "(give a directory saved with save_pretrained, or a Hugging Face model name)"),
    # one dataset's recordings for both: the first's ten words would have been cifar100's first ten classes
    (["--dataset", "cifar10", "cifar100", "--label", "speech", "--audio_dir", "{tmp}"],
     "--audio_dir holds one dataset's recordings: give a single --dataset"),
    (["--dataset", "cifar10", "cifar100", "--label", "shuffle", "--speech_file", "{tmp}/cifar10_speech.npy"],
     "--speech_file is one dataset's file: give a single --dataset"),
    (["--dataset", "cifar10", "--label", "speech", "--audio_dir", "{tmp}/cifar10_speech.npy"],
     "--audio_dir {tmp}/cifar10_speech.npy is not a directory"),
    (["--dataset", "cifar10", "cifar100", "--label", "uniform", "--label_granularity", "coarse"],
     "--label_granularity coarse is for cifar100 only"),
])
def test_generate_flags_that_do_not_fit_are_one_exact_line(argv, message, tmp_path, capsys):
    if "--dataset" not in argv:
        argv = ["--dataset", "cifar10", *argv]
    status, _, err = cli(generate.main, [a.replace("{tmp}", str(tmp_path)) for a in argv]
                         + ["--out", tmp_path / "out"], capsys)
    assert (status, err) == (2, f"error: {message.replace('{tmp}', str(tmp_path))}\n")
    assert not (tmp_path / "out").exists()


def test_the_readmes_parameter_ranges_are_the_generators():
    """labels/README.md's family table: normal_dim's D and uniform_gap's G at its bounds are made,
    past them refused. It said G <= 3.4e38, where CIFAR-10's targets overflow float32's squared
    distances from G about 3.3e17 (uniform_gap=1e18 ends in "class 1's own target decodes as
    class 0"), and D >= 1, where D above 100000 is refused."""
    table = (ROOT / "labels" / "README.md").read_text()
    dim = re.search(r"N\(i, 0\.1\), 1 <= D <= (\d+) \|", table)
    gaps = re.search(r"G >= 0 and at most about (\S+) for CIFAR-10, (\S+) for CIFAR-100", table)
    assert dim and gaps
    assert generate.parse_label(f"normal_dim={dim[1]}")[2] == int(dim[1])
    with pytest.raises(LabelError, match="D must be a whole number"):
        generate.parse_label(f"normal_dim={int(dim[1]) + 1}")
    for dataset, gap in (("cifar10", float(gaps[1])), ("cifar100", float(gaps[2]))):
        names = generate.class_names(dataset, "standard")
        assert make_label(f"uniform_gap={gap:g}", names).shape == (len(names), 50)
        with pytest.raises(LabelError, match="for nearest-target decoding"):
            make_label(f"uniform_gap={1.2 * gap:g}", names)


def test_a_model_or_vector_path_of_the_wrong_kind_is_named_as_such(tmp_path, capsys):
    """--glove given a folder and --text_model a file said "no such file" / "no such directory" of
    paths that exist, sending the user to look for a typo."""
    (tmp_path / "vectors.txt").write_text("cat 1 2\n")
    for argv, message in (
            (["--label", "glove", "--glove", tmp_path], f"--glove {tmp_path}: a folder, not a file (give a "
             "GloVe text file such as glove.6B.50d.txt, or a gensim-downloader name)"),
            (["--label", "bert", "--text_model", tmp_path / "vectors.txt"],
             f"--text_model {tmp_path / 'vectors.txt'}: a file, not a directory (give a directory saved "
             "with save_pretrained, or a Hugging Face model name)")):
        status, _, err = cli(generate.main, ["--dataset", "cifar10", *argv, "--out", tmp_path / "out"], capsys)
        assert (status, err) == (2, f"error: {message}\n")
    assert not (tmp_path / "out").exists()


def test_a_silent_recording_is_named(tones, tmp_path, capsys):
    silent = tmp_path / "silent"
    shutil.copytree(tones, silent)
    import soundfile
    soundfile.write(silent / "6.wav", np.zeros(8000), 16000, subtype="PCM_16")
    status, _, err = cli(generate.main, ["--dataset", "cifar10", "--label", "speech", "--audio_dir", silent,
                                         "--out", tmp_path / "out"], capsys)
    assert (status, err) == (2, f"error: audio file {silent / '6.wav'} is silent\n")


@needs_espeak
def test_a_voice_espeak_lacks_is_named(tmp_path, capsys):
    status, _, err = cli(generate.main, ["--dataset", "cifar10", "--label", "speech", "--espeak_voice",
                                         "xx-nonsense", "--out", tmp_path / "out"], capsys)
    assert status == 2 and err.startswith("error: espeak-ng failed on 'airplane' with voice 'xx-nonsense': ")


def test_speech_without_espeak_says_how_to_install(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))   # no espeak-ng on it
    status, _, err = cli(generate.main, ["--dataset", "cifar10", "--label", "speech", "--out",
                                         tmp_path], capsys)
    assert status == 2 and "espeak-ng is not installed" in err and "apt-get install" in err


def test_generated_targets_are_checked_before_they_are_written(tiny_glove, tmp_path, capsys):
    """What train.py would refuse is not written: uniform_gap=1e38 overflows float32 (the file held
    inf), a name listed twice gave two classes one GloVe vector."""
    status, _, err = cli(generate.main, ["--dataset", "cifar10", "--label", "uniform_gap=1e38",
                                         "--out", tmp_path], capsys)
    assert status == 2 and "the generated uniform_gap=" in err and "beyond float32's range" in err
    names = tmp_path / "names.txt"
    names.write_text("\n".join([*CIFAR10_CLASSES[:9], "cat"]) + "\n")
    status, _, err = cli(generate.main, ["--dataset", "cifar10", "--label", "glove", "--names",
                                         names, "--glove", tiny_glove, "--out", tmp_path], capsys)
    assert status == 2 and f"{names} names 'cat' twice" in err
    # squared distances beyond float32's range: nearest-target decoding takes every class for class 0
    status, _, err = cli(generate.main, ["--dataset", "cifar10", "--label", "uniform_gap=1e18",
                                         "--out", tmp_path], capsys)
    assert status == 2 and "class 1's own target decodes as class 0 in float32" in err
    assert not list(tmp_path.glob("*.npy"))


def test_bad_input_part_way_writes_no_file(tiny_glove, tmp_path, capsys):
    """A run failing at its second dataset or family wrote the files before it, so that the same
    command, rerun once the input was fixed, was refused for them ('exists; pass --force')."""
    argv = ["--dataset", "cifar10", "cifar100", "--label", "glove", "--glove", tiny_glove, "--out", tmp_path]
    status, out, err = cli(generate.main, argv, capsys)   # the tiny file lacks CIFAR-100's names
    assert (status, out) == (2, "") and "GloVe vectors lack: 'apples'" in err
    status, out, err = cli(generate.main, ["--dataset", "cifar10", "--label", "uniform", "uniform_gap=1e38",
                                           "--out", tmp_path], capsys)
    assert (status, out) == (2, "") and "beyond float32's range" in err
    assert list(tmp_path.iterdir()) == []   # neither a file nor a temporary one
    out_dir = tmp_path / "new" / "labels"   # nor the --out folder, made and left empty
    status, _, err = cli(generate.main, argv[:-1] + [out_dir], capsys)
    assert status == 2 and "GloVe vectors lack: 'apples'" in err and not (tmp_path / "new").exists()
    status, out, err = cli(generate.main, argv[:2] + argv[3:], capsys)   # cifar10 alone, without --force
    assert status == 0 and err.startswith(f"wrote {tmp_path / 'cifar10_glove.npy'}  (10, 50)")


# Python code that runs labels.generate with argv[1:] and sends itself {signal} as the second file is
# made (the first waits in --out as a temporary file until the last is made)
GENERATE_SIGNALLED = """
import os, runpy, signal, sys
import numpy as np
save, saved = np.save, []
def and_signal(*args, **kwargs):
    saved.append(args)
    if len(saved) == 2:
        os.kill(os.getpid(), signal.{signal})
    return save(*args, **kwargs)
np.save = and_signal
sys.argv = ["generate.py", *sys.argv[1:]]
runpy.run_module("labels.generate", run_name="__main__", alter_sys=True)
"""


def test_sigterm_part_way_leaves_no_temporary_file(tmp_path):
    """SIGTERM (`timeout`, `kill`) killed labels.generate at once: the files made before it stayed in
    --out as temporary files (.cifar10_random.npy.*.tmp; 26 after 13 s of `--label all` for both
    datasets), which no later run removed. It ends as after Ctrl-C, the earlier files as they were."""
    argv = ["--dataset", "cifar10", "--label", "random", "lowdim", "--out", tmp_path, "--force"]
    assert call_cli(generate.main, argv[:-1]) == 0
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    proc = subprocess.run([sys.executable, "-c", GENERATE_SIGNALLED.format(signal="SIGTERM"), *map(str, argv),
                           "--seed", "3"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert (proc.returncode, proc.stderr, proc.stdout) == (130, "error: interrupted; got SIGTERM\n", "")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_the_next_run_removes_what_one_killed_outright_left(tmp_path, capsys):
    """SIGKILL (the OOM killer, a job's time limit past its grace period) leaves the files made so far
    in --out as temporary files (.cifar10_random.npy.*.tmp; 26, 2.5 MB, 35 s into `--label all` for
    both datasets), which no later run removed. The next run into the folder removes them, and leaves
    no lock file of its own; the folder's other files stay."""
    (tmp_path / "notes.txt").write_text("mine")
    argv = ["--dataset", "cifar10", "--label", "random", "lowdim", "--out", tmp_path]
    proc = subprocess.run([sys.executable, "-c", GENERATE_SIGNALLED.format(signal="SIGKILL"), *map(str, argv)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL
    assert [p.name.startswith(".cifar10_random.npy.") for p in tmp_path.glob("*.tmp")] == [True]
    status, _, _ = cli(generate.main, argv, capsys)
    assert status == 0 and sorted(p.name for p in tmp_path.iterdir()) == [
        "cifar10_lowdim.npy", "cifar10_random.npy", "notes.txt"]


def test_a_dataset_given_twice_is_written_once(tmp_path, capsys):
    status, out, _ = cli(generate.main, ["--dataset", "cifar10", "cifar10", "--label", "uniform", "--out",
                                         tmp_path], capsys)
    assert status == 0 and files_written(out) == 1
    assert [f["file"] for f in json.loads(out.splitlines()[-1])["files"]] == [
        str(tmp_path / "cifar10_uniform.npy")]


@pytest.mark.parametrize("seed", ["-1", str(2**32)])
def test_generate_seed_must_suit_numpy(seed, tmp_path, capsys):
    """numpy's seeds lie in [0, 2**32): beyond, a traceback after all the speech synthesis."""
    status = call_cli(generate.main, ["--dataset", "cifar10", "--label", "random", "--seed", seed, "--out",
                                       str(tmp_path)])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1 and err.startswith("error: argument --seed: ")
    assert err.endswith("(see python -m labels.generate --help)\n")


def test_generate_run_reads_a_notebooks_namespace_as_the_command_line(tmp_path, capsys):
    """labels.generate.run(args) with label=[] (a notebook's namespace) wrote nothing and printed
    an empty file list; `--label` alone is the command line's error. A string is a one-label list."""
    args = generate.build_parser().parse_args(["--dataset", "cifar10", "--label", "uniform", "--out",
                                               str(tmp_path)])
    args.label = []
    assert call_cli(generate.run, args) == 2
    out, err = capsys.readouterr()
    assert (out, err) == ("", "error: argument --label: expected at least one argument (see python -m "
                              "labels.generate --help)\n")
    assert list(tmp_path.iterdir()) == []
    args.label = "normal_dim=7"  # was read a character at a time: "--label n: unknown label family"
    generate.run(args)
    assert np.load(tmp_path / "cifar10_normal_dim=7.npy", allow_pickle=False).shape == (10, 7)
    assert args.label == "normal_dim=7"  # the caller's namespace is left as it was


@pytest.mark.parametrize("seed", [-1, 2**32, 1.5, "7", True])
def test_make_label_seed_must_suit_numpy(seed):
    """From Python too: a float or string seed made numpy's casting error, naming no seed."""
    with pytest.raises(LabelError, match=rf"^seed {re.escape(repr(seed))} is not an integer from 0 to 2\*\*32 - 1"):
        generate.make_label("random", ["a", "b"], seed=seed)
    assert generate.make_label("random", ["a", "b"], seed=np.uint32(2**32 - 1)).shape == (2, 64, 64)


def test_names_file_must_match_class_count(tmp_path, capsys):
    names = tmp_path / "names.txt"
    names.write_text("one\ntwo\n")
    status, _, err = cli(generate.main, ["--dataset", "cifar10", "--label", "glove", "--names",
                                         names, "--glove", names, "--out", tmp_path], capsys)
    assert status == 2 and "holds 2 names; cifar10 has 10 classes" in err


def test_make_label_rejects_unknown_options():
    with pytest.raises(LabelError, match="unknown option"):
        make_label("uniform", CIFAR10_CLASSES, audio_folder="x")


def test_make_label_refuses_names_given_as_one_string():
    """make_label("random", "cifar10") made targets for 7 classes, one per character."""
    with pytest.raises(LabelError) as err:
        make_label("random", "cifar10")
    assert str(err.value) == ("names 'cifar10' is one string; pass a list of class names, e.g. "
                              "labels.generate.class_names('cifar10')")
    assert make_label("random", tuple(CIFAR10_CLASSES)).shape == (10, 64, 64)


@pytest.mark.parametrize("entry", [["-m", "labels.generate"], ["labels/generate.py"]])
def test_generate_entry_points(tmp_path, entry):
    """As a module (the README's way) and as a file (what a user may try first)."""
    bad = subprocess.run([sys.executable, *entry, "--dataset", "cifar10",
                          "--label", "sound", "--out", str(tmp_path)],
                         cwd=ROOT, capture_output=True, text=True, check=False)
    assert bad.returncode == 2 and bad.stderr.startswith("error: --label sound: unknown label family")
    assert bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr
    good = subprocess.run([sys.executable, *entry, "--dataset", "cifar10",
                           "--label", "normal_dim=7", "--out", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, check=False)
    assert good.returncode == 0, good.stderr
    assert np.load(tmp_path / "cifar10_normal_dim=7.npy", allow_pickle=False).shape == (10, 7)
    stats_file = subprocess.run([sys.executable, "labels/stats.py", "--json",
                                 str(tmp_path / "cifar10_normal_dim=7.npy")],
                                cwd=ROOT, capture_output=True, text=True, check=False)
    assert stats_file.returncode == 0, stats_file.stderr
    assert json.loads(stats_file.stdout)[0]["shape"] == [10, 7]


# ----------------------------------------------------------------------------- stats

def test_stats_by_hand(tmp_path):
    targets = np.array([[0, 0], [0, 2], [2, 2]], dtype=np.float32)
    row = stats.label_stats(targets)
    # normalised: [[0,0],[0,1],[1,1]] -> L1 distances 1, 2, 1 and L2 distances 1, sqrt 2, 1
    assert row["shape"] == [3, 2] and row["min"] == 0 and row["max"] == 2 and row["std"] == 1
    assert row["l1_mean"] == pytest.approx(4 / 3) and row["l1_std"] == pytest.approx(np.sqrt(2 / 9))
    assert row["l2_mean"] == pytest.approx((2 + np.sqrt(2)) / 3)
    assert row["l2_std"] == pytest.approx((2 - np.sqrt(2)) / 3)   # of 1, sqrt 2, 1: not the L1 std
    assert row["min_msd"] == pytest.approx(2.0)          # raw values: (0 + 4) / 2
    assert row["entropy"] == pytest.approx(1 / 3)       # 0, 1 and 0 bits
    assert stats.value_entropy([0.1234561, 0.1234564]) == 0   # equal after rounding to 6 decimals
    assert stats.value_entropy([0.1, 0.2, 0.3, 0.4]) == pytest.approx(2)
    assert stats.value_entropy([1e-6, 2e-6, 3e-6, 4e-6]) == pytest.approx(2)   # apart in the 6th
    # normalised over [min, max], not by max: speech labels lie in [-80, 0]
    assert stats.label_stats(np.array([[-1.0], [1.0]]))["l1_mean"] == 1.0


def test_stats_of_targets_refuse_what_a_label_file_may_not_hold():
    """label_stats, labels/README.md's entry point for targets in memory, measured NaN targets
    (min nan, l1_mean 0), a (C,) array and two equal classes without a word, and raised a
    TypeError for objects; now the label file's check (labels.check_targets), as the CLI's."""
    bad = {"contains NaN or infinite values": np.array([[0.0, 1.0], [np.nan, 2.0]]),
           r"has shape \(5,\); expected \[classes, ...\]": np.arange(5.0),
           "class 2 has the same target as class 0": np.array([[1.0], [2.0], [1.0]]),
           "holds object values": np.array([[{}, 1], [2, 3]], dtype=object),
           r"need targets of shape \(C, ...\) with C >= 2, got \(1, 4\)": np.ones((1, 4))}
    for reason, targets in bad.items():
        with pytest.raises(LabelError, match=reason):
            stats.label_stats(targets)
    assert stats.label_stats([[0, 1], [2, 3]])["min_msd"] == 4.0   # a list of numbers is measured


def test_compare_refuses_markdown(tmp_path, capsys):
    """--compare --markdown printed the comparison's lines, --markdown ignored without a word."""
    path = tmp_path / "a.npy"
    np.save(path, np.eye(3, dtype=np.float32))
    status, out, err = cli(stats.main, [path, "--compare", path, "--markdown"], capsys)
    assert (status, out, err) == (2, "", "error: --markdown is for the statistics table; --compare prints "
                                         "lines, or JSON with --json\n")


def test_stats_paths_read_as_the_other_scripts_paths(tmp_path, capsys, monkeypatch):
    """`--compare "$REF"` with REF unset printed the statistics table, not a comparison, with exit
    status 0, and a notebook's ~/a.npy (no shell to expand it) was 'not a readable .npy file':
    labels.stats' paths are read as every other script's (`nonempty`)."""
    monkeypatch.setenv("HOME", str(tmp_path))
    np.save(tmp_path / "a.npy", np.eye(3, dtype=np.float32))
    status, out, err = cli(stats.main, ["--compare", "", "~/a.npy"], capsys)
    assert (status, out, err) == (2, "", "error: argument --compare: must not be empty (see python -m "
                                         "labels.stats --help)\n")
    status, out, _ = cli(stats.main, ["--json", "--compare", "~/a.npy", "~/a.npy"], capsys)
    assert status == 0 and json.loads(out)[0]["file"] == str(tmp_path / "a.npy")
    status, out, _ = cli(stats.main, ["~/a.npy"], capsys)
    assert status == 0 and str(tmp_path / "a.npy") in out


def test_compare_by_hand():
    """Per-class Pearson correlation; a constant class target correlates 1 with its equal, and
    is undefined (NaN, which the minimum keeps) against another constant."""
    same = stats.compare([[0, 1, 2], [1, 1, 1]], [[0, 2, 4], [1, 1, 1]])
    assert same["min_class_corr"] == 1.0 and same["max_abs_diff"] == 2.0
    assert same["mean_abs_diff"] == pytest.approx(3 / 6)
    other = stats.compare([[1, 1], [0, 1]], [[2, 2], [0, 1]])
    assert np.isnan(other["min_class_corr"]) and np.isnan(other["mean_class_corr"])
    opposite = stats.compare([[0, 1], [1, 0]], [[0, 1], [0, 1]])   # correlations 1 and -1
    assert opposite["min_class_corr"] == pytest.approx(-1) and opposite["mean_class_corr"] == pytest.approx(0)


def test_stats_cli(tmp_path, capsys):
    path = tmp_path / "cifar10_uniform.npy"
    np.save(path, make_label("uniform", CIFAR10_CLASSES))
    status, out, _ = cli(stats.main, ["--json", path], capsys)
    rows = json.loads(out)
    assert status == 0 and rows[0]["shape"] == [10, 64, 64] and set(stats.COLUMNS) <= set(rows[0])
    status, out, _ = cli(stats.main, ["--markdown", path, path], capsys)
    assert status == 0 and out.startswith("| file | shape |") and out.count("\n") == 4
    piped = tmp_path / "cifar10_a|b.npy"  # a | in a path: escaped, not a column of its own
    np.save(piped, make_label("uniform", CIFAR10_CLASSES))
    status, out, _ = cli(stats.main, ["--markdown", piped], capsys)
    header, rule, row = out.splitlines()
    assert status == 0 and "cifar10_a\\|b.npy" in row
    assert row.replace("\\|", "").count("|") == header.count("|") == rule.count("|")
    status, out, _ = cli(stats.main, ["--compare", path, path], capsys)
    assert status == 0 and "mean |diff| 0.0000" in out
    status, _, err = cli(stats.main, [tmp_path / "missing.npy"], capsys)
    # the path once: was "... not a readable .npy file ([Errno 2] No such file or directory: '.../missing.npy')"
    assert status == 2 and err == (f"error: label file {tmp_path}/missing.npy is not a readable .npy file "
                                   "(No such file or directory)\n")
    np.save(tmp_path / "cifar10_empty.npy", np.zeros((0, 4)))  # a reshape traceback
    status, _, err = cli(stats.main, [tmp_path / "cifar10_empty.npy"], capsys)
    assert status == 2 and "has shape (0, 4); expected [classes, ...] with one target per class" in err
    np.save(tmp_path / "cifar10_flat.npy", np.arange(10.0))  # labels/README.md's advice, in the error
    status, _, err = cli(stats.main, [tmp_path / "cifar10_flat.npy"], capsys)
    assert status == 2 and ("has shape (10,); expected [classes, ...] with one target per class (one "
                            "number per class: save it as shape (10, 1))") in err
    np.save(tmp_path / "one.npy", np.ones((1, 4)))  # the error named no file
    status, _, err = cli(stats.main, [path, tmp_path / "one.npy"], capsys)
    assert status == 2 and err == (f"error: {tmp_path / 'one.npy'}: need targets of shape (C, ...) with "
                                   "C >= 2, got (1, 4)\n")
    np.save(tmp_path / "flat.npy", np.eye(10))
    status, _, err = cli(stats.main, ["--compare", path, tmp_path / "flat.npy"], capsys)
    assert status == 2 and err == (f"error: --compare {path} against {tmp_path / 'flat.npy'}: shapes differ: "
                                   "(10, 64, 64) vs (10, 10)\n")
    done = subprocess.run([sys.executable, "-m", "labels.stats", str(path)], cwd=ROOT,
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0 and "cifar10_uniform.npy" in done.stdout


def test_stats_warns_of_targets_train_py_cannot_decode(tmp_path, capsys):
    """A file whose distinct targets nearest-target decoding cannot tell apart in float32 (1e-30
    apart) is measured, its tiny min_msd the reason, with a warning in train.py's words: it was
    measured without a word, then every run of it failed. A file train.py takes has no warning."""
    path = tmp_path / "cifar10_tiny.npy"
    np.save(path, 1e-30 * np.arange(40, dtype=np.float32).reshape(10, 4))
    status, out, err = cli(stats.main, ["--json", path, LABEL_DIR / "cifar10_speech.npy"], capsys)
    rows = json.loads(out)
    assert status == 0 and len(rows) == 2 and rows[0]["min_msd"] == pytest.approx(2.5e-61)
    assert err == (f"warning: label file {path}: class 1's own target decodes as class 0 in float32; its "
                   "targets are too close together or too large (squared distances beyond 3.4e38) for "
                   "nearest-target decoding; train.py and sweep.py refuse it\n")


def test_generate_and_stats_mains_raise_in_process_and_return_what_they_print(tmp_path, monkeypatch, capsys):
    """labels.generate.main and labels.stats.main returned the exit status, 2 after the error line,
    130 after Ctrl-C: a notebook's loop of calls went on past bad input and past the stop button,
    and what they made was on stdout alone. As train.main, they raise and return their result."""
    argv = ["--dataset", "cifar10", "--label", "uniform", "--out", str(tmp_path)]
    summary = generate.main(argv)
    path = tmp_path / "cifar10_uniform.npy"
    assert summary == {"out": str(tmp_path), "files": [{"file": str(path), "shape": [10, 64, 64],
                                                        "min": 0.0, "max": 80.0}]}
    rows = stats.main([str(path), "--json"])
    assert [(r["file"], r["shape"], r["max"]) for r in rows] == [(str(path), [10, 64, 64], 80.0)]
    assert json.loads(capsys.readouterr().out.splitlines()[-1]) == rows
    with pytest.raises(UsageError, match=f"^{re.escape(str(path))} exists; pass --force to overwrite$"):
        generate.main(argv)
    with pytest.raises(UsageError, match="^--markdown is for the statistics table"):
        stats.main([str(path), "--compare", str(path), "--markdown"])

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(generate, "make_label", stopped)
    with pytest.raises(KeyboardInterrupt):
        generate.main(argv + ["--force"])
    assert np.load(path, allow_pickle=False).shape == (10, 64, 64)  # the file before stays


def test_stats_help_says_what_each_column_means(capsys):
    """What min_msd or l2_std mean was in the module's docstring alone, not in --help."""
    with pytest.raises(SystemExit) as exit_info:
        stats.main(["--help"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0
    columns = out[out.index("\nColumns (targets (C, ...) flattened to C vectors of D values):\n"):]
    for name in stats.COLUMNS:  # each at the start of a line that says what it is
        assert re.search(rf"^    (\w+, )*{name}\b.*  \w", columns, re.MULTILINE), (name, columns)
    assert re.search(r"^    min_msd +smallest mean squared distance between two classes'$",
                     columns, re.MULTILINE)


def test_a_reader_that_leaves_ends_a_tool_quietly():
    """`labels.stats ... | head` ended with 'error: cannot use a file: Broken pipe' and status 2
    when head left first; now silently, with a shell's status for it (every script's call_cli)."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader has left before the first line
    try:
        done = subprocess.run([sys.executable, "-m", "labels.stats", "--json",
                               str(LABEL_DIR / "cifar10_uniform.npy")], cwd=ROOT, stdout=write_end,
                              stderr=subprocess.PIPE, text=True, check=False)
    finally:
        os.close(write_end)
    assert (done.returncode, done.stderr) == (141, "")


CIFAR100_META = SHARED / "data" / "cifar100-subset" / "cifar-100-python" / "meta"


@pytest.mark.skipif(not CIFAR100_META.is_file(), reason="needs ../shared's CIFAR-100 sample")
def test_the_built_in_superclass_names_are_the_datasets_own_in_its_order():
    assert generate.dataset_class_names("cifar100_coarse", CIFAR100_META.parent) == \
        list(generate.CIFAR100_COARSE_CLASSES)


def test_coarse_labels_for_cifar100_superclasses(tmp_path, capsys):
    """--label_granularity coarse runs need 20 targets, which nothing could make (a --names file
    of 20 was refused for cifar100's 100 classes)."""
    status, _, err = cli(generate.main, ["--dataset", "cifar100", "--label_granularity", "coarse",
                                         "--label", "uniform", "lowdim", "--out", tmp_path], capsys)
    assert status == 0 and "cifar100_uniform.npy  (20, 64, 64)" in err
    assert np.load(tmp_path / "cifar100_lowdim.npy").shape == (20, 20)
    status, _, err = cli(generate.main, ["--dataset", "cifar100", "--label_granularity", "coarse",
                                         "--label", "uniform"], capsys)
    assert status == 2 and "coarse label files are named as the fine ones: give --out" in err
    status, _, err = cli(generate.main, ["--dataset", "cifar10", "--label_granularity", "coarse",
                                         "--label", "uniform", "--out", tmp_path / "x"], capsys)
    assert status == 2 and "--label_granularity coarse is for cifar100 only" in err


def test_the_readme_says_what_names_a_coarse_label_is_made_of():
    """labels/README.md's 'Class names' spoke of the fine CIFAR-100 names alone; a coarse label is
    made of the 20 superclass names (the meta file's coarse_label_names), which neither the spoken
    nor the text rewrites touch: every name set gives the standard names. The README says so."""
    standard = class_names("cifar100_coarse", "standard")
    assert (len(standard), standard[0], standard[-1]) == (20, "aquatic mammals", "vehicles 2")
    assert all(class_names("cifar100_coarse", name_set) == standard for name_set in generate.NAME_SETS)
    assert generate.DATASETS["cifar100_coarse"].meta_key == "coarse_label_names"
    section = (ROOT / "labels" / "README.md").read_text().split("**Class names.**")[1].split("\n## ")[0]
    assert "`--label_granularity coarse`" in section and "`coarse_label_names`" in section
    assert "The `spoken` and `text` rewrites above are of fine names and do not apply: every\nname set " \
           "gives the standard names" in section


def test_generate_names_its_out_folder_resolved(tmp_path, capsys, monkeypatch):
    """--out link/../labels wrote a/labels (after a link, '..' is its target's parent) but printed
    'wrote link/../labels/...', and its JSON line's absolute '.../link/../labels', read as text,
    named another folder (tmp_path/labels); a relative --out, no file from another folder."""
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "a" / "b")
    monkeypatch.chdir(tmp_path)
    status, out, err = cli(generate.main, ["--dataset", "cifar10", "--label", "uniform", "--out", "link/../labels"],
                           capsys)
    written = tmp_path / "a" / "labels" / "cifar10_uniform.npy"
    assert status == 0 and err == f"wrote {written}  (10, 64, 64)  [0, 80]\n"
    line = json.loads(out.splitlines()[-1])
    assert (line["out"], line["files"][0]["file"]) == (str(written.parent), str(written)) and written.is_file()
    status, _, err = cli(generate.main, ["--dataset", "cifar10", "--label", "uniform", "--out", "link/../labels"],
                         capsys)
    assert status == 2 and err == f"error: {written} exists; pass --force to overwrite\n"


def test_an_out_folder_name_too_long_is_refused_before_anything_is_made(tmp_path, capsys):
    """An --out with a folder name over NAME_MAX made the labels, then failed with 'File name too
    long' and left the folders above it made and empty."""
    out = tmp_path / "new" / ("o" * 256)
    status, _, err = cli(generate.main, ["--dataset", "cifar10", "--label", "uniform", "--out", str(out)], capsys)
    assert status == 2 and err == (f"error: --out {out}: its folder name {'o' * 256} is 256 bytes, over the "
                                   "255 a file name may have\n")
    assert not (tmp_path / "new").exists()


def test_generate_stdout_is_its_json_line_alone(tmp_path, capsys):
    """`python -m labels.generate ... | jq .out` stopped at the first line: the 'wrote' lines went to
    stdout before the JSON line. They go to stderr, as train.py's and sweep.py --slurm's do."""
    status, out, err = cli(generate.main, ["--dataset", "cifar10", "--label", "uniform", "--out", tmp_path], capsys)
    assert status == 0 and json.loads(out)["out"] == str(tmp_path)
    assert err == f"wrote {tmp_path / 'cifar10_uniform.npy'}  (10, 64, 64)  [0, 80]\n"


def test_the_tools_last_stdout_line_is_strict_json(tmp_path, capsys):
    """generate printed no JSON line, and stats --json printed an indented array (last line ']')
    with NaN for an undefined correlation, which strict parsers (jq, JavaScript) refuse."""
    status, out, _ = cli(generate.main, ["--dataset", "cifar10", "--label", "uniform", "lowdim", "--out",
                                         tmp_path], capsys)
    written = json.loads(out.splitlines()[-1])
    assert status == 0 and written == {"out": str(tmp_path), "files": [
        {"file": str(tmp_path / "cifar10_uniform.npy"), "shape": [10, 64, 64], "min": 0.0, "max": 80.0},
        {"file": str(tmp_path / "cifar10_lowdim.npy"), "shape": [10, 10],
         "min": written["files"][1]["min"], "max": written["files"][1]["max"]}]}
    np.save(tmp_path / "shifted.npy", np.load(tmp_path / "cifar10_uniform.npy") + 1)  # constants vs constants
    status, out, _ = cli(stats.main, ["--json", "--compare", tmp_path / "cifar10_uniform.npy",
                                      tmp_path / "shifted.npy"], capsys)
    assert status == 0 and out.count("\n") == 1
    [row] = json.loads(out, parse_constant=lambda name: pytest.fail(f"{name} in {out}"))
    assert (row["min_class_corr"], row["mean_class_corr"], row["max_abs_diff"]) == (None, None, 1.0)


def test_a_read_only_out_names_the_flag_that_moves_it(tmp_path, monkeypatch, capsys):
    """--out defaults to the shipped label_files, read-only in a shared install: the error named
    the file, not the flag that writes elsewhere."""
    from conftest import read_only
    read_only(monkeypatch, tmp_path)
    assert call_cli(generate.main, ["--dataset", "cifar10", "--label", "uniform_gap=7", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr() == ("", f"error: could not write {tmp_path / 'cifar10_uniform_gap=7.npy'}: "
                                       "Read-only file system; pass another --out\n")
