"""Files of a run: its directory in the paper's layout, config, metrics, results and checkpoints.

    run_dir = run_directory("./outputs", "cifar10", level=100, seed=7, model="resnet32", label="speech")
    write_json(run_dir / "config.json", config)        # atomic: temp file, then rename
    save_checkpoint(run_dir / "last_checkpoint.pth", state)
    state = load_checkpoint(run_dir / "last_checkpoint.pth")   # weights_only=True

Every write goes to a temporary file in the same directory and is renamed over the target, so a
killed job or a full disk leaves the previous file intact.
"""
import json
import platform
import sys
from pathlib import Path

import numpy as np
import torch

from utils import __version__
from utils.atomic import atomic_write
from utils.errors import UsageError

RESULTS = "results.json"
CONFIG = "config.json"
METRICS = "metrics.jsonl"
LAST_CHECKPOINT = "last_checkpoint.pth"
ATTACK_RESULTS = "attack_results.json"   # attack.py's
ATTACK_EXAMPLES = "attack_examples.png"


def run_directory(base_dir, dataset, level, seed, model, label, label_noise=0.0):
    """The paper's layout: {base}/{dataset}/seed{s}/{model}/model_{label}, under less/{dataset}/level{L}
    below 100; runs with noisy training labels get their own directory, model_{label}_noise{R}."""
    base = Path(base_dir)
    if level < 100:
        base = base / "less" / dataset / f"level{level:g}"
    else:
        base = base / dataset
    name = f"model_{label}" + (f"_noise{label_noise:g}" if label_noise else "")
    return base / f"seed{seed}" / model / name


def best_checkpoint_name(label, seed, model):
    return f"{label}_seed{seed}_{model}_best_model.pth"


def write_json(path, obj):
    atomic_write(path, lambda f: f.write((json.dumps(obj, indent=2) + "\n").encode()))


def write_jsonl(path, rows):
    atomic_write(path, lambda f: f.write("".join(json.dumps(r) + "\n" for r in rows).encode()))


def read_json(path):
    try:
        return json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UsageError(f"{path} is not valid JSON ({err}); delete it to redo that step") from None


def save_checkpoint(path, state):
    atomic_write(path, lambda f: torch.save(state, f))


def load_checkpoint(path, map_location="cpu", advice="delete it, or pass --force to start the run over"):
    """Load a checkpoint safely (tensors and plain data only); a bad file is a one-line error
    that ends with `advice`."""
    path = Path(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise UsageError(f"checkpoint {path} does not exist") from None
    except Exception as err:  # torch raises many types for truncated or foreign files
        text = str(err).split("WeightsUnpickler error:")[-1].strip()
        reason = text.splitlines()[0] if text else type(err).__name__
        raise UsageError(f"checkpoint {path} is corrupt or not a labelrep checkpoint ({reason}); "
                         f"{advice}") from None


def environment():
    """Versions and machine facts recorded next to every result."""
    env = {"python": platform.python_version(), "torch": str(torch.__version__), "numpy": np.__version__,
           "labelrep": __version__, "platform": platform.platform(), "argv": sys.argv}
    if torch.cuda.is_available():
        env["cuda"] = torch.version.cuda
        env["gpu"] = torch.cuda.get_device_name()
    return env
