"""An experiment grid: its runs in a stable order, what each still needs, and the commands for it.

    grid = {"datasets": ["cifar10"], "models": ["resnet32"], "labels": ["category", "speech"],
            "levels": [100, 25], "seeds": [7]}
    runs = expand(grid)                        # Run(dataset, model, label, level, seed), dataset first
    scripts = Scripts.find()
    routed = scripts.route(["--epochs", "30", "--num_images", "500"])   # {"train": [...], "attack": [...]}
    tasks = plan(runs, ("train", "attack"), scripts, routed)
    tasks[0].todo        # ["train", "attack"], ["attack"] or [] (done)
    tasks[0].commands    # {"train": [python, train.py, ..., "--resume"], "attack": [...]}

A run is one (dataset, model, label, level, seed); its stages (train, then attack) run in that order
inside one unit of work, because the attack reads the checkpoint the training wrote. What a stage
still needs is read from the run directory, with the digests of what its scripts would read (the
label file and dataset batches a run trains on, the test images and checkpoint it is attacked on:
see `train_state` and `attack_state`), so every caller (a dry run, a SLURM script, a local pool, a
report) agrees on it, and with train.py and attack.py.
"""
import argparse
import contextlib
import functools
import hashlib
import importlib.util
import itertools
import json
import math
import os
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from stat import S_ISREG

import numpy as np

from labels import (LABEL_DIR, LabelError, decoding_problem, granularity_fix, label_path, load_label,
                    read_targets, targets_sha256)
from utils.constants import (DATASETS, check_split, class_count, dataset_info, training_images,
                             schedule)  # what attack.py runs for its flags
from utils.errors import UsageError, closest_flag, repeated
from utils.flags import (SHARED, acts_on, check_label_flags, label_name, level,  # as train.py, attack.py
                         json_get, mistyped, recorded_config, run_changes, trained_folder)
from utils.pickles import cifar_batches
from utils.runs import (ATTACK_EXAMPLES, ATTACK_RESULTS, BEST_SUFFIX, CONFIG, LAST_CHECKPOINT, METRICS, NOT_JSON,
                        RESULTS, best_checkpoint_name, check_base_dir, check_name_lengths, file_sha256, json_failure,
                        read_text, resolved, run_dir_of, run_folder_name, run_holder, run_key, run_name,
                        zip_index_sha256)

REPO = Path(__file__).resolve().parents[1]
STAGES = ("train", "attack")
FILELESS_LABELS = ("category", "mcr2")  # label spaces that read no label file
REFUSED = "train.py refuses it; delete the run directory to start over"
# in a stage's note: its script will end with an error line, not do the stage (`Task.refused`); a
# run not trained yet is not (a train array may run first)
REFUSALS = ("train.py refuses it", " will stop; delete it", "attack.py refuses it")
SCRIPT_FILES = {"train": REPO / "train.py", "attack": REPO / "attack.py"}
# Flags the grid sets on every command; passing them through would fight the grid.
GRID_FLAGS = {"--dataset": "--datasets", "--model": "--models", "--label": "--labels",
              "--level": "--levels", "--seed": "--seeds", "--resume": None}
# Flags a sweep does not pass on: train.py's --force, which it refuses beside the sweep's --resume (and
# which alone started the runs over at epoch 1 on every rerun: a SLURM task requeued at its time limit
# never ended); attack.py's --checkpoint attacked that one file for every run and wrote each run's
# results into its folder; its --transfer_from, one source checkpoint for every run of the grid
NOT_PASSED = {"--force": "each rerun of the sweep, or requeue of its task, would start its runs over; "
                         "to train runs again, delete their run directories first",
              "--checkpoint": "a sweep attacks each run's own best checkpoint; attack another file with "
                              "attack.py --checkpoint",
              "--transfer_from": "a sweep attacks each run white-box, and a transfer attack's source "
                                 "differs from run to run: run attack.py --transfer_from on each run"}


def counted(count, noun):
    """'1 epoch', '3 epochs', '2 entries': a count and its noun, in the plural unless one (a
    consonant's y as ies)."""
    if count == 1:
        return f"{count} {noun}"
    return f"{count} {noun[:-1] + 'ies' if noun.endswith('y') and noun[-2:-1] not in 'aeiou' else noun + 's'}"


def last_written(run_dir, ago=True):
    """'files last written 3 min ago': when a run's training last wrote to its directory (its
    metrics.jsonl each epoch, its last checkpoint, a sweep's train.log), so that a run still
    training (seconds or minutes) tells itself from one that stopped (hours, days); '' if none is
    there. A lock would tell for certain, but only on the node that holds it. ago=False: the time
    itself ('files last written 2026-12-04 21:07 UTC'), as a report, read later, says it."""
    times = []
    for name in (METRICS, LAST_CHECKPOINT, "train.log"):
        with contextlib.suppress(OSError):
            times.append((Path(run_dir) / name).stat().st_mtime)
    if not times:
        return ""
    if not ago:
        return f"files last written {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(max(times)))}"
    age = time.time() - max(times)  # below -1 s: the node that wrote them has a clock ahead of ours
    when = "ago" if age > -1 else "ahead of this machine's clock"
    size, unit = next((s, u) for s, u in ((86400, "d"), (3600, "h"), (60, "min"), (1, "s"))
                      if abs(age) >= 2 * s or s == 1)
    return f"files last written {abs(age) / size:.0f} {unit} {when}"


def parse_level(text):
    """'25' -> 25, '2.5' -> 2.5: percent of the training split, as train.py --level reads it."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise UsageError(f"level {text!r} is not a number") from None
    if not 0 < value <= 100:
        raise UsageError(f"level {text!r} is not a percentage in (0, 100]")
    try:
        return level(str(value))  # as train.py reads it
    except argparse.ArgumentTypeError as err:
        raise UsageError(f"level {err}") from None


def parse_name(value):
    """A dataset, model or label name: text (a grid file's number, list or null is not one)."""
    if not isinstance(value, str) or not value:
        raise TypeError(value)
    return value


def parse_label(value):
    """A label name as train.py's --label reads it (`utils.flags.label_name`: speech.npy is speech),
    so that a grid file's labels are those of the runs train.py makes."""
    try:
        return label_name(parse_name(value))
    except argparse.ArgumentTypeError as err:
        raise UsageError(f"--labels: {err}") from None


def parse_seed(value):
    """A seed as train.py's --seed reads it (a whole number from 0 to 2**32 - 1, numpy's seeds), as
    an int or its digits (not 1.5, not true). Its error names --seeds: 2**32 was refused by train.py's
    own check, 'argument --seed: ... (see train.py --help)', naming a flag the sweep sets itself."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(value)
    try:
        return SHARED["seed"]["type"](str(value))
    except argparse.ArgumentTypeError as err:
        raise UsageError(f"--seeds: {err}") from None


# The grid's axes in expansion order (the first varies slowest); flag name -> how a value is read.
AXES = {"datasets": parse_name, "models": parse_name, "labels": parse_label, "levels": parse_level,
        "seeds": parse_seed}


@dataclass(frozen=True)
class Run:
    dataset: str
    model: str
    label: str
    level: float
    seed: int

    @property
    def name(self):
        """The grid's name of the run (`run_name`), before the flags passed through: a coarse or
        --smoothing run's task is named by its run directory (`Task.name`)."""
        return run_name(asdict(self))

    def flags(self):
        return ["--dataset", self.dataset, "--model", self.model, "--label", self.label,
                "--level", f"{self.level:g}", "--seed", str(self.seed)]


def value_list(name, values):
    """The values of list option --`name`, from the command line or a grid file: a scalar is a list
    of one, null none."""
    if values is None:
        return []
    if isinstance(values, (str, int, float)):
        values = [values]
    if not isinstance(values, (list, tuple)):
        raise UsageError(f"--{name}: {values!r} is neither a value nor a list of values")
    return list(values)


def axis_values(name, values, source=None):
    """(A grid axis as a list without repeats, in the order given, a scalar a list of one; the
    warning line where it repeats a value, as read: 25 and 25.0, speech and speech.npy are one
    (`repeated`), else None). `source`: how the warning names the list (default --`name`)."""
    read = AXES[name]
    listed = []  # (text, value)
    for value in value_list(name, values):
        try:
            listed.append((str(value), read(value)))
        except (TypeError, ValueError):
            raise UsageError(f"--{name}: {value!r} is not a valid value") from None
    return (list(dict.fromkeys(value for _, value in listed)),
            repeated(source or f"--{name}", listed, "the grid holds each run once"))


def expand(grid):
    """Every combination of the axes, ordered dataset, model, label, level, seed (slowest first);
    each axis a list as `axis_values` reads it (read once: a label file x.npy.npy is label x.npy)."""
    for name in AXES:
        if not grid[name]:
            raise UsageError(f"--{name} is empty: the grid has no runs")
    return [Run(*combo) for combo in itertools.product(*(grid[name] for name in AXES))]


def load_grid_file(path):
    """A YAML or JSON mapping of sweep options (`labels: [category, speech]`, `seeds: 7`, ...)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise UsageError(f"cannot read the grid file {path}: {err.strerror}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path} is not a text file (not UTF-8): a grid file is YAML or JSON") from None
    import yaml

    def unique(pairs):  # a mapping's (key, value) pairs: json and yaml keep the last of a key given twice
        names = [option(k) for k, _ in pairs]
        if repeated := sorted({name for name in names if names.count(name) > 1}):
            raise UsageError(f"{path} gives {', '.join(repeated)} more than once; give each option once "
                             "(a list for several values)")
        return dict(pairs)

    class Loader(yaml.SafeLoader):
        """YAML without its base-60 numbers (`time: 12:00:00` is SLURM's text, not 43200) nor its
        octal and hex ones (`seeds: [010]` was seed 8, `--seeds 010` is seed 10), refusing a key
        given twice: such a number stays text, read by its option as the command line reads it."""
        def resolve(self, kind, value, implicit):
            tag = super().resolve(kind, value, implicit)
            numeric = tag in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")
            digits = value.lstrip("+-") if kind is yaml.ScalarNode else ""
            radix = tag == "tag:yaml.org,2002:int" and digits.startswith("0") and len(digits) > 1
            return "tag:yaml.org,2002:str" if numeric and (":" in digits or radix) else tag

        def construct_mapping(self, node, deep=False):
            mapping = super().construct_mapping(node, deep)
            unique([(self.construct_object(key, deep), None) for key, _ in node.value])
            return mapping
    try:
        grid = json.loads(text, object_pairs_hook=unique) if path.suffix == ".json" else yaml.load(text, Loader)
    except (*NOT_JSON, yaml.YAMLError) as err:
        mark = getattr(err, "problem_mark", None)  # yaml's first line says where it was, not what
        reason = (f"{err.problem} at line {mark.line + 1}, column {mark.column + 1}" if mark and err.problem
                  else json_failure(err).splitlines()[0] if str(err) else type(err).__name__)
        raise UsageError(f"{path} is not valid {path.suffix.lstrip('.') or 'YAML'} ({reason})") from None
    if grid is None or grid == {}:  # ran the default grid (cifar10, category, seed 0) in place of the one meant
        raise UsageError(f"{path} holds no options (it is empty, comments alone, or {{}}): a grid file is a "
                         "mapping of options (labels: [...], seeds: [...])")
    if not isinstance(grid, dict):
        raise UsageError(f"{path} must hold a mapping of options (labels: [...], seeds: [...]), "
                         f"not a {type(grid).__name__}")
    if values_in(grid, GRID_VALUES) > GRID_VALUES:
        raise UsageError(f"{path} holds over {GRID_VALUES} values (YAML aliases, *name, each repeating "
                         "a list, multiply); a grid file names a few options and their values")
    return {option(k): v for k, v in grid.items()}


GRID_VALUES = 100_000  # the most values a grid file may hold: thousands of seeds, labels and flags


def values_in(value, most):
    """How many values parsed YAML or JSON `value` holds, those in its lists and mappings counted
    (keys too), up to most + 1: a YAML alias (*name) stands for its whole list again, so nine lines
    of aliases each repeating the last nine times hold 9**9 values ('billion laughs'), which the
    first error message or #SBATCH line to show one of them spelt out in gigabytes (a sweep 7 GB
    and still going after a minute)."""
    count, left = 0, [value]
    while left and count <= most:
        item = left.pop()
        count += 1
        if isinstance(item, dict):
            left += [*item.keys(), *item.values()]
        elif isinstance(item, (list, tuple)):
            left += item
    return count


def option(key):
    """A grid file's key as sweep.py's option: '--max-concurrent' -> 'max_concurrent'."""
    return str(key).lstrip("-").replace("-", "_")


def split_args(value, key):
    """Pass-through arguments given as one shell string or as a list of strings; key names them."""
    if value is None:
        return []
    if isinstance(value, str):
        try:
            return shlex.split(value)
        except ValueError as err:  # "No closing quotation"
            raise UsageError(f"{key} {value!r}: {err}") from None
    if isinstance(value, (list, tuple)):
        return [list_item(v, key) for v in value]
    raise UsageError(f"{key}: pass-through arguments must be a string or a list, not {value!r}")


def list_item(item, key):
    """One item of a grid file's pass-through list as text: a flag or one value. YAML's true/false
    (from no, yes, on, off), a null or a list was passed on as 'False', 'None' or "['fgsm', 'pgd']"
    (attack.py: "invalid choice: 'False'"), and '--epochs 3' as one flag named so."""
    if isinstance(item, bool) or not isinstance(item, (str, int, float)):
        word = "yes" if item else "no"
        quote = f"; quote a word YAML reads as true or false ('{word}')" if isinstance(item, bool) else ""
        raise UsageError(f"{key}: {item!r} is not one flag or value (text or a number{quote})")
    if (text := str(item)).startswith("--") and len(text.split("=", 1)[0].split()) > 1:
        raise UsageError(f"{key}: {text!r} is one item of the list; give the flag and each value as "
                         f"items of their own ([{', '.join(text.split())}]) or {key} as one string")
    return text


def _load_module(name, path):
    spec = importlib.util.spec_from_file_location(f"_sweep_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass
class Script:
    """One stage's script, its module and its argparse parser."""
    stage: str
    path: Path
    parser: object
    module: object

    def accepts(self, option):
        return option in self.parser._option_string_actions

    def passed(self):
        """The script's flags a sweep passes on: not those the grid sets (GRID_FLAGS) nor those it
        refuses to pass (NOT_PASSED)."""
        return [o for o in self.parser._option_string_actions if o not in GRID_FLAGS and o not in NOT_PASSED]

    def closest(self, option):
        """'; did you mean --X?' for an `option` the script has not, near one a sweep passes it on
        (`passed`: --see is not sent to --seed, which the sweep refuses); else ''."""
        return closest_flag(option, self.passed())

    def parse(self, argv):
        """The namespace the script would see for argv (a bad flag is its UsageError)."""
        return self.parser.parse_args(argv)


@dataclass
class Scripts:
    stages: dict = field(default_factory=dict)  # stage -> Script

    @classmethod
    def find(cls):
        """Load every stage's script: a sweep of one stage routes flags by both parsers, and
        train.py's resolves every run's directory."""
        return cls({stage: Script(stage, path, (module := _load_module(stage, path)).build_parser(), module)
                    for stage, path in SCRIPT_FILES.items()})

    def __getitem__(self, stage):
        return self.stages[stage]

    def route(self, args, own=()):
        """Send each pass-through flag (with its values) to every script whose parser knows it.

        args: ["--epochs", "30", "--data_dir", "d", ...]. Returns {stage: [args]}. A flag that no
        script of the sweep accepts, or one the grid sets itself, is a UsageError; one near a flag
        of sweep.py's (`own`) or one it passes on is named there (--lables: --labels, not
        train.py's --label, which the sweep refuses).
        """
        routed = {stage: [] for stage in self.stages}
        groups, current = [], None
        for token in args:
            if token.startswith("--"):
                current = [token]
                groups.append(current)
            elif current is None:
                raise UsageError(f"pass-through argument {token!r} does not follow a --flag")
            else:
                current.append(token)
        for group in groups:
            option = group[0].split("=", 1)[0]
            check_not_grid_flag(option)
            takers = [s for s, script in self.stages.items() if script.accepts(option)]
            if not takers:
                names = " or ".join(script.path.name for script in self.stages.values())
                near = dict.fromkeys([*own, *(o for script in self.stages.values() for o in script.passed())])
                hint = closest_flag(option, list(near))
                raise UsageError(f"{option} is not a flag of {names}{hint}")
            for stage in takers:
                routed[stage] += group
        return routed


def check_not_grid_flag(option):
    if option in GRID_FLAGS:
        instead = GRID_FLAGS[option]
        raise UsageError(f"{option} is set by the sweep" + (f"; use {instead}" if instead else ""))
    if option in NOT_PASSED:
        raise UsageError(f"{option} is not passed through a sweep: {NOT_PASSED[option]}")


def cores():
    """The CPU cores this process may run on (a SLURM job's share, a taskset's), not the machine's."""
    return os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)


def read_lines(path):
    """The values of a JSON-lines file (metrics.jsonl), None for a line that is not JSON (one
    bad line loses that line, not the file); [] for a file that cannot be read."""
    try:
        text = read_text(path)
    except (OSError, UnicodeDecodeError):
        return []
    rows = []
    for line in filter(str.strip, text.splitlines()):
        try:
            rows.append(json.loads(line))
        except NOT_JSON:
            rows.append(None)
    return rows


def read_json_or_none(path):
    value = read_json_file(path)[1]
    return None if isinstance(value, OSError) else value


def read_json_file(path, limit=None):
    """(whether `path` is there, its JSON value: None where it is not JSON, the OSError where it
    cannot be read, `unreadable` says so), from one read: asked apart, a file train.py wrote
    between the read and the question (a sweep or a report reading runs while they train) was a
    file there that is not valid JSON, and one it removed likewise. `limit`: `read_text`'s."""
    try:
        return True, json.loads(read_text(path, limit))
    except (FileNotFoundError, NotADirectoryError):
        return False, None
    except OSError as err:  # another user's file of mode 0600: no reason to delete it, as a bad one
        return True, err
    except NOT_JSON:
        return True, None


def unreadable(name, value):
    """'NAME cannot be read (Permission denied)' where `value`, of `read_json_file`, is the OSError
    of a file that is there but cannot be read; else None."""
    return f"{name} cannot be read ({value.strerror or value})" if isinstance(value, OSError) else None


def requested_attacks(namespace, module):
    """What attack.py will compute for its parsed flags: {"keys": {(attack label, targeted,
    protocol, eps)}, "plans": {key: (steps, step_size, restarts, amp, seed)}, "num_images": N or
    None, "eps_labels": {(protocol, eps): its label as --epsilons wrote it}, "smoothed": whether the
    run trained with --smoothing (`smoothed_run`), "examples": whether it draws attack_examples.png}
    (seed None: the checkpoint's, any).

    The settings are attack.py's own (`module`: attack.py loaded; its `requested_settings`).
    """
    protocol, attacks, epsilons, targeted = module.requested_settings(namespace)
    plans = {}
    for attack, (_, eps) in itertools.product(attacks, epsilons):
        plan = schedule(attack, eps, protocol, namespace.steps, namespace.step_size, namespace.restarts)
        for t in targeted:
            plans[(attack_label(attack, namespace.objective), t, protocol, eps)] = (
                plan.steps, plan.step_size, plan.restarts, namespace.amp, namespace.seed)
    return {"keys": set(plans), "plans": plans, "num_images": namespace.num_images,
            "eps_labels": {(protocol, eps): label for label, eps in epsilons},
            "smoothed": smoothed_run(namespace.label, namespace.smoothing),
            "examples": namespace.examples != 0}  # unset (None): attack.py's default figure


def smoothed_run(label, smoothing):
    """Whether a run of `label` with --smoothing `smoothing` (None: not given) trained smoothed."""
    return acts_on("smoothing", label) and nonnegative(smoothing) and smoothing > 0


def older_place(args, run_dir):
    """Why train.py refuses a run where a category run with --smoothing S of a labelrep before b6cdd9e
    lies in the folder of the run without (model_category), where train.py now looks for it in
    model_category_smooth{S} (report.py says so), or None: asked for with --smoothing S, its own
    folder empty, it trained anew from epoch 1 there, its epochs unused; asked for without, it was
    that run trained otherwise, and the advice, --force (a sweep's: delete the run directory),
    deleted it. The line says where to move it. `args`: train.py's flags (or attack.py's, which has
    no --force: its run's best checkpoint is another run's); `run_dir`: their run's."""
    if getattr(args, "force", False) or not acts_on("smoothing", args.label):
        return None
    run_dir = Path(run_dir)
    plain = run_dir.parent / run_folder_name(args.label, args.label_noise)
    saved = read_json_or_none(plain / CONFIG)  # results.json only without it: train_state reads it once, after
    config = recorded_config(saved, read_json_or_none(plain / RESULTS) if saved is None else None)
    smoothing = json_get(config, "flags", "smoothing")
    if not smoothed_run(args.label, smoothing):
        return None
    own = run_dir.parent / run_folder_name(args.label, args.label_noise, smoothing)
    if run_dir == plain or run_dir == own and not any((own / name).exists()
                                                      for name in (CONFIG, RESULTS, LAST_CHECKPOINT)):
        what = "this" if run_dir == own else "no run without --smoothing but a"
        return (f"{plain} holds {what} --smoothing {smoothing:g} run: a labelrep before b6cdd9e wrote it "
                f"there; move it to {own}, where train.py, attack.py and report.py look for it now"
                + ("" if run_dir == own else ", then run this again"))
    return None


def smoothed_loss_attacks(results, smoothed):
    """Why a parsed attack_results.json of a run trained with --smoothing (`smoothed`) holds no
    results attack.py computes now: an attack.py before b6cdd9e, which had no --smoothing (its
    config records none), wrote it, and one before 4eb33c9 climbed the smoothed training loss,
    not plain cross-entropy as the paper's attack code and attack.py now (PGD at 64/255 on a
    --smoothing 0.3 run: 36% robust accuracy where it is 0%); else None. Those of 4eb33c9 to
    b6cdd9e, minutes apart, are computed again too."""
    config = results.get("config") if isinstance(results, dict) else None
    if not smoothed or not isinstance(config, dict) or "smoothing" in config:
        return None
    return ("holds attacks on a --smoothing run by an attack.py older than b6cdd9e, which before 4eb33c9 "
            "climbed the smoothed loss, not plain cross-entropy")


TRANSFER = "<"  # "pgd<category": pgd's images crafted against a category run (attack.py --transfer_from)


def attack_label(attack, objective="loss", source=None):
    """The name an attack goes by in keys and tables: "pgd" with the paper's loss objective,
    "pgd+margin" with the margin objective; with `source`, the name of the run a transfer attack
    crafted its images against (`transfer_source`), "pgd<category", "pgd+margin<vgg19:speech"."""
    label = attack if objective in (None, "loss") else f"{attack}+{objective}"
    return label if source is None else f"{label}{TRANSFER}{source}"


def attack_parts(label):
    """`attack_label`'s (attack, objective) again, a transfer's source left out: "pgd+margin" ->
    ("pgd", "margin"), "pgd" and "pgd<category" -> ("pgd", "") (the loss objective)."""
    attack, _, objective = label.partition(TRANSFER)[0].partition("+")
    return attack, objective


def transfer_source(entry):
    """The name of the run whose model an attack_results.json entry's images were crafted against
    (its `source` record's name: attack.py --transfer_from), or None for a white-box entry."""
    source = entry.get("source")
    return source["name"] if isinstance(source, dict) else None


def entry_attack(entry):
    """'pgd', 'pgd+margin', 'pgd<category': the attack of an attack_results.json entry as settings,
    keys and tables name it (`attack_label` of its attack, objective and transfer source)."""
    return attack_label(entry["attack"], entry.get("objective"), transfer_source(entry))


def well_formed_source(source):
    """Whether an entry's `source` record names its run (non-empty text) and its checkpoint's
    sha256 (text), by which attack.py reuses the entry."""
    return (isinstance(source, dict) and isinstance(source.get("name"), str) and source["name"] != ""
            and isinstance(source.get("checkpoint_sha256"), str))


def fresh_transfers(entries, path):
    """(`entries` of attack_results.json at `path` less the transfer entries whose source checkpoint
    was written again since they were crafted against it (its run trained again: `attacked_another`,
    each source file checked once), the paths of those sources). attack.py drops such entries on
    its next run with that source; until then report.py leaves them out."""
    def checkpoint(entry):  # text where attack.py wrote it
        found = (entry.get("source") or {}).get("checkpoint")
        return found if isinstance(found, str) else None
    changed = {}
    for entry in entries:
        if (file := checkpoint(entry)) is not None and file not in changed:
            changed[file] = attacked_another(path, entry["source"], Path(file))
    stale = {file for file, written in changed.items() if written}
    return [e for e in entries if checkpoint(e) not in stale], sorted(stale)


def nonnegative(value, kind=(int, float)):
    """Whether a value read from JSON is a finite number >= 0 of `kind` (a bool, NaN or text is not)."""
    return isinstance(value, kind) and not isinstance(value, bool) and 0 <= value < math.inf


def accuracy(value):
    """`value` if it is an accuracy, a fraction in [0, 1] (not NaN, not a percentage); else None."""
    return value if nonnegative(value) and value <= 1 else None


def well_formed(entry):
    """Whether an attack_results.json entry names its setting and holds its result, as attack.py
    writes it: attack, objective and eps_label text, targeted true/false, protocol pixel or paper,
    eps a finite number >= 0, robust_acc an accuracy; clean_acc and target_success accuracies,
    steps, restarts, num_images and seed whole numbers, step_size a finite number >= 0, amp
    true/false and images_sha256 text, where present (attack.py's reuse keys on them), a
    transfer's source record (`well_formed_source`), and per-class counts (`class_counts`)."""
    if not isinstance(entry, dict):
        return False
    return (isinstance(entry.get("attack"), str) and isinstance(entry.get("targeted"), bool)
            and isinstance(entry.get("objective", "loss"), str)
            and isinstance(entry.get("eps_label", ""), str)
            and entry.get("protocol", "pixel") in ("pixel", "paper")
            and nonnegative(entry.get("eps")) and accuracy(entry.get("robust_acc")) is not None
            and all(entry.get(k) is None or accuracy(entry[k]) is not None
                    for k in ("clean_acc", "target_success"))
            and all(entry.get(k) is None or nonnegative(entry[k], int)
                    for k in ("steps", "restarts", "num_images", "seed"))
            and (entry.get("step_size") is None or nonnegative(entry["step_size"]))
            and entry.get("amp") in (None, True, False)
            and (entry.get("images_sha256") is None or isinstance(entry["images_sha256"], str))
            and ("source" not in entry or well_formed_source(entry["source"]))
            and class_counts(entry) is not False)


def class_counts(entry):
    """An attack_results.json entry's (class_images, class_robust): per class id, its evaluated test
    images and those still classified as it after the attack (attack.py writes them from this
    version on); None where the entry has neither (written before), False where they are not two
    lists of whole numbers >= 0 of one length, each robust count at most its images, the images
    summing to the entry's num_images where it has one and the robust ones to its robust_acc of
    them (a well-formed entry's)."""
    images, robust = entry.get("class_images"), entry.get("class_robust")
    if images is None and robust is None:
        return None
    if not (isinstance(images, list) and isinstance(robust, list) and len(images) == len(robust)
            and all(nonnegative(n, int) for n in images + robust)
            and all(r <= n for r, n in zip(robust, images))
            and entry.get("num_images", sum(images)) == sum(images)
            and math.isclose(sum(robust), entry["robust_acc"] * sum(images), abs_tol=1e-6)):
        return False
    return images, robust


# how attack.py and report.py name the entries `outdated` finds, after their count
def outdated_entries(count):
    """'1 targeted PGD entry of several restarts written by an attack.py that may predate ...':
    `count` entries that `outdated` finds, as attack.py and report.py name those they drop."""
    return (f"{counted(count, 'targeted PGD entry')} of several restarts written by an attack.py that may "
            "predate f72d56a's fix of how restarts count")


def outdated(entry):
    """Whether a well-formed attack_results.json entry may hold numbers attack.py computes otherwise
    now: a targeted PGD of several restarts written before entries recorded their device (1ca2340),
    so perhaps before f72d56a, whose fix keeps an image an earlier restart misclassified (the older
    code counted it robust where a later restart left it correct: 9% robust accuracy where it is
    5%). Those of f72d56a to 1ca2340 are computed again too, for want of telling them apart."""
    return entry["attack"] == "pgd" and entry["targeted"] and (entry.get("restarts") or 1) > 1 \
        and "device" not in entry


def attack_entries(results):
    """(well-formed entries but `outdated` ones, count of the malformed, count of the outdated) of
    a parsed attack_results.json."""
    entries = results.get("entries") if isinstance(results, dict) else None
    entries = entries if isinstance(entries, list) else []
    good = [e for e in entries if well_formed(e)]
    current = [e for e in good if not outdated(e)]
    return current, len(entries) - len(good), len(good) - len(current)


# what attack.py's command line computes in (torch's default dtype); an entry written before entries
# recorded theirs was computed in it
COMMAND_LINE_DTYPE = "float32"


def entry_dtype(entry):
    """The dtype an attack_results.json entry was computed in: a notebook's float64 attack is
    another computation than the command line's."""
    return entry.get("dtype", COMMAND_LINE_DTYPE)


def entry_key(entry):
    """(attack label, targeted, protocol, eps) of a well-formed entry; a transfer's attack label
    names its source ("pgd<category"), so it never stands for the white-box setting."""
    return entry_attack(entry), bool(entry["targeted"]), entry.get("protocol", "pixel"), float(entry["eps"])


def missing_entries(results, keys, plans=None, num_images=None, images_sha256=None):
    """The (attack, targeted, protocol, eps) keys that attack_results.json lacks (a malformed
    entry counts for none). With `plans` ({key: (steps, step_size, restarts, amp, seed)}, from
    `requested_attacks`) an entry counts only if it ran its key's plan (in bf16 or not, as
    asked, in float32 as attack.py's command line computes, not a notebook's float64, with the
    seed's targets and random starts), with `num_images` only if it ran on
    that many images, and with `images_sha256` (`test_images_sha256`) only if on those images:
    attack.py computes those anew, so a sweep must call it."""
    by_setting = {}  # (attack, targeted, protocol) -> entries: a key is looked for among its own alone
    for entry in attack_entries(results)[0]:
        by_setting.setdefault(entry_key(entry)[:3], []).append(entry)

    def counts(entry, key):
        if not math.isclose(entry_key(entry)[3], key[3], rel_tol=1e-9, abs_tol=1e-12):
            return False
        if num_images is not None and entry.get("num_images", results.get("num_images")) != num_images:
            return False
        if images_sha256 is not None and entry.get("images_sha256") != images_sha256:
            return False
        plan = (plans or {}).get(key)
        step_size = entry.get("step_size")
        return plan is None or ((entry.get("steps"), entry.get("restarts"), bool(entry.get("amp")),
                                 entry_dtype(entry)) == (plan[0], plan[2], plan[3], COMMAND_LINE_DTYPE)
                                and plan[4] in (None, entry.get("seed"))
                                and isinstance(step_size, (int, float))
                                and math.isclose(step_size, plan[1], rel_tol=1e-9, abs_tol=1e-12))
    return sorted((k for k in keys if not any(counts(e, k) for e in by_setting.get(k[:3], ()))),
                  key=lambda k: (k[0], k[1], k[2], k[3]))


def eps_text(eps, protocol="pixel"):
    """How budgets are written: 8/255 for 0.0313725... (pixel units, in 1/255 steps of a pixel);
    0.05 under the paper's protocol, whose budgets are in normalised units."""
    if protocol == "paper" or eps == 0:  # 0, as attack.py's --epsilons and the report's tables write it
        return f"{round(eps, 9):g}"
    return f"{round(eps * 255, 6):g}/255"


def describe_key(key, eps_labels=None):
    """'pgd untargeted 8/255': a setting as a note names it, its eps as `eps_labels` ({(protocol,
    eps): label}) has it, the label attack.py writes (--epsilons 1 is 1, not 255/255), else by
    `eps_text`."""
    attack, targeted, protocol, eps = key
    eps = (eps_labels or {}).get((protocol, eps)) or eps_text(eps, protocol)
    return f"{attack} {'targeted' if targeted else 'untargeted'} {eps}" + (
        " (paper protocol)" if protocol == "paper" else "")


def file_versions(paths):
    """(mtime, size) of each file, a key that changes when one is written again; None where one
    cannot be read (is missing, or is no plain file: a folder, or a FIFO, whose open would wait)."""
    try:
        stats = [Path(p).stat() for p in paths]
    except OSError:
        return None
    if not all(S_ISREG(stat.st_mode) for stat in stats):
        return None
    return tuple((stat.st_mtime_ns, stat.st_size) for stat in stats)


def label_file_sha256(path):
    """`targets_sha256` of a label file; None if it cannot be read (train.py will say why).
    Read once per version of the file (a sweep asks once per run)."""
    versions = file_versions([path])
    return None if versions is None else _targets_sha256(Path(path), versions)


@functools.cache
def _targets_sha256(path, versions):
    """`targets_sha256` of the label file at `path`, cached per version of it."""
    try:
        return targets_sha256(read_targets(path))
    except UsageError:
        return None


def dataset_sha256(name, data_dir, granularity):
    """The `data_sha256` train.py records of a dataset in data_dir (the images and labels of its
    training then test batches, at `granularity`), read without torch; None where its batches are
    not all there (train.py downloads them) or not readable (train.py says why). Read once per
    version of the files (a sweep asks once per run)."""
    return (_batches_read(name, data_dir, granularity, ("train", "test")) or (None,))[0]


def test_images_sha256(name, data_dir, granularity, count=None):
    """The `images_sha256` attack.py records of an entry computed on the first `count` (None:
    all) test images of a dataset in data_dir, with their labels; None as for `dataset_sha256`."""
    return (_batches_read(name, data_dir, granularity, ("test",), count) or (None,))[0]


def _batches_read(name, data_dir, granularity, splits, count=None):
    """`_split_sha256` of the dataset's batches in data_dir, or None where one is missing or no
    plain file."""
    try:
        info = dataset_info(name, granularity)
    except UsageError:
        return None
    folder = Path(data_dir).absolute() / info.folder
    files = {"train": info.train_files, "test": info.test_files}
    versions = file_versions(folder / f for split in splits for f in files[split])
    return None if versions is None else _split_sha256(folder, name, granularity, splits, count, versions)


def train_image_count(name, data_dir, granularity):
    """How many training images train.py reads of the dataset in data_dir (`len(train_labels)` of
    `cifar.load_cifar`), read without torch; the downloaded dataset's (`num_train_images`) where a
    batch is missing, as train.py then downloads it; None where one is not readable (train.py says
    why). Read once per version of the batches (a sweep asks once per dataset and level)."""
    info = dataset_info(name, granularity)
    folder = Path(data_dir).absolute() / info.folder
    versions = file_versions(folder / f for f in info.train_files)
    return info.num_train_images if versions is None else _train_label_count(folder, name, granularity, versions)


@functools.cache
def _train_label_count(folder, name, granularity, versions):
    """The number of labels (one per image) of the training batches in `folder`, as `cifar_batches`
    checks them, cached per version of the files; None where a batch is not readable. Their images
    are unpickled too, as no cheaper count holds (a stub for the arrays saved nothing): on a 2-core
    CPU 0.1 s for the 5170-image subset, 0.3 s for CIFAR-10's 50000; `_split_sha256`'s hash would
    add about a third."""
    info = dataset_info(name, granularity)
    try:
        return sum(len(labels) for _, labels in cifar_batches(folder, info.train_files, info.label_keys[granularity],
                                                             info.num_classes[granularity]))
    except (UsageError, OSError):  # OSError: a batch this user may not read (train.py says so)
        return None


@functools.cache
def _split_sha256(folder, name, granularity, splits, count, versions):
    """sha256 of the images then the labels of each split in `splits` of the batches in `folder`
    (of the first `count` images of each where given), cached per version of the files: the bytes
    `tensors_sha256` hashes of the tensors train.py and attack.py read, read a batch at a time
    (CIFAR-10's train and test splits: 0.2 s and 60 MB more on a 2-core CPU; read at once, 440 MB);
    with the number of images read of each split. None where a batch is not readable."""
    info = dataset_info(name, granularity)
    digest, counts = hashlib.sha256(), []
    try:
        for split in splits:
            labels, taken = [], 0
            for images, batch_labels in cifar_batches(folder, getattr(info, f"{split}_files"),
                                                      info.label_keys[granularity],
                                                      info.num_classes[granularity]):
                end = None if count is None else count - taken
                digest.update(np.ascontiguousarray(images[:end]))
                labels.append(batch_labels[:end])
                taken += len(labels[-1])
                if taken == count:  # the batches after it are not read
                    break
            digest.update(np.concatenate(labels))
            counts.append(taken)
    except (UsageError, OSError):  # OSError: a batch this user may not read (train.py says so)
        return None
    return digest.hexdigest(), tuple(counts)


def uncompared_data(recorded, data_dir, dataset, script):
    """Where a run's images could not be compared with those in `data_dir` (not there yet, or not
    readable) and `recorded` (config flags) names another folder as the one it read: a note that
    `script` reads data_dir (downloading it where missing) and finds out; else None. (A trial on a
    copy of the data, then the grid on a dataset not downloaded yet: the trial's runs were listed
    done.)"""
    own = recorded.get("data_dir") if isinstance(recorded, dict) else None
    if not isinstance(own, str) or resolved(own) == resolved(data_dir):
        return None
    return (f"it read the data in {own}, and {data_dir} holds no readable {dataset} to compare: "
            f"{script} reads it (downloads it where missing) and checks")


def train_state(run_dir, train_namespace=None, running=None):
    """(done, note) for the train stage of a run directory; `running`: the job working in it now
    (`run_holder`), where one is.

    train_namespace: train.py's parsed flags with its `label_defaults` (--batch_size, --lr) filled in.
    done: results.json exists and the run trained what the sweep asks for (train.py skips such a
    run). note: a short human description; it names the flags (and label targets) that differ
    from what the sweep asks for: such a run is not done, and train.py refuses it with an error
    line, so the sweep counts it as failed instead of passing its old results off as asked; so is
    a finished run whose config.json (or results.json) records a value of another kind than
    train.py writes, with train.py's reason (`mistyped`).
    """
    run_dir = Path(run_dir)
    if train_namespace is not None and (moved := older_place(train_namespace, run_dir)):
        return False, f"train.py refuses it: {moved}"  # before anything it reads: train.py checks it first
    results = run_dir / RESULTS
    there, values = read_json_file(results)  # values None: missing, or not JSON
    if why := unreadable(RESULTS, values):
        return False, why
    diffs, unchecked, odd = [], None, None
    if train_namespace is not None:
        saved = read_json_or_none(run_dir / CONFIG)
        config = recorded_config(saved, values)
        facts = asked_facts(config if isinstance(config, dict) else {}, train_namespace)
        diffs, unchecked = asked_changes(config, train_namespace, now="sweep:", facts=facts)
        if isinstance(config, dict):  # named as the file it was read from, in the run directory's row
            odd = mistyped(CONFIG if saved is not None else RESULTS, config, train_namespace, *facts)
    if there:
        if not isinstance(values, dict):
            return False, ("results.json is not a valid JSON object (train.py will stop; delete it "
                           "to retrain)")
        if odd:  # before the changes: the text "1" for --epochs 1 is no change, nor deleting the run a fix
            return False, f"finished, but train.py refuses it: {odd}"
        if diffs:
            return False, f"finished, but trained with {', '.join(diffs)}: {REFUSED}"
        if unchecked:
            return False, f"finished, but {unchecked}"
        test_acc = accuracy(values.get("test_acc"))
        return True, "done" + ("" if test_acc is None else f", test_acc {test_acc:.4f}")
    if (run_dir / LAST_CHECKPOINT).exists():
        # train.py compares the checkpoint's own flags and writes config.json anew: one edited by
        # hand (`odd`) tells nothing of them, as one deleted does not
        if diffs and not odd:
            return False, f"cannot resume: trained with {', '.join(diffs)}: {REFUSED}"
        epochs = getattr(train_namespace, "epochs", "?")
        return False, (f"resume ({len(read_lines(run_dir / METRICS))}/{epochs} epochs logged; "
                       f"{last_written(run_dir)})")
    if any(run_dir.glob(f"*{BEST_SUFFIX}")):  # its last checkpoint deleted: train.py refuses
        return False, f"cannot resume: a best checkpoint but no {LAST_CHECKPOINT}: {REFUSED}"
    if logged := len(read_lines(run_dir / METRICS)):  # stopped before its first checkpoint
        return False, (f"start over ({counted(logged, 'epoch')} logged, no checkpoint to resume from; "
                       f"{last_written(run_dir)})")
    if running:  # nothing logged yet, by a job at work: not a new run
        return False, "in its first epoch"
    last = last_written(run_dir)  # its train.log's: in its first epoch (on another node), or failed before
    return False, f"new ({last})" if last else "new"


def asked_changes(config, ns, now, facts=None):
    """What a run with the recorded `config` (`recorded_config`'s) trained otherwise than train.py's
    namespace `ns` (its `label_defaults` filled in) asks, compared with the label targets and the
    dataset `ns` names as they are now (`facts`: `asked_facts`' where the caller has them already):
    (`run_changes`' list, `now` its word for what is asked; a note where the run read its data
    elsewhere and ns's data cannot be read to compare, else None)."""
    config = config if isinstance(config, dict) else {}
    label_sha256, data = facts or asked_facts(config, ns)
    diffs = run_changes(config, ns, label_sha256, now=now, data=data)
    if config.get("data_sha256") and data["data_sha256"] is None:
        return diffs, uncompared_data(config.get("flags"), ns.data_dir, ns.dataset, "train.py")
    return diffs, None


def asked_facts(config, ns):
    """(label_sha256, data) of what train.py's namespace `ns` asks now, as train.py compares a run's
    recorded `config` with them (`run_changes`, `mistyped`): its label targets' `targets_sha256`
    (None for a label without a file, or a file that cannot be read) and, where `config` records
    its data's, {"data_sha256", "train_images"} of the dataset in ns's --data_dir (each None where
    it cannot be read), else None."""
    label_sha256 = None if ns.label in FILELESS_LABELS else \
        label_file_sha256(label_path(ns.dataset, ns.label, ns.label_dir))
    # the dataset is read only to compare it with a run's (CIFAR-10: 0.2 s, once per version of it):
    # its images and labels, and the number of training images the flags take of it now
    data = None
    if config.get("data_sha256") or config.get("train_images") is not None:
        sha, counts = _batches_read(ns.dataset, ns.data_dir, ns.label_granularity, ("train", "test")) or (None, None)
        data = {"data_sha256": sha, "train_images": counts and training_images(counts[0], ns.valid_size, ns.level)}
    return label_sha256, data


def attack_state(run_dir, wanted, test_images=None, images_sha256=None, checkpoint=None, asked_data=None):
    """(done, note) for the attack stage: attack_results.json holds every wanted entry.

    wanted: `requested_attacks(...)`. An entry counts when its attack, targeted flag, protocol
    and eps match and it ran the asked steps, step size, restarts and precision (--amp) on the
    asked number of images (test_images when --num_images is unset), and on the images of
    `images_sha256` where given (those of --data_dir: `test_images_sha256`); where those could not
    be read, `asked_data` ((dataset, --data_dir), given) finds entries of another folder not done
    (`uncompared_data`). None counts when the file's are of another checkpoint than `checkpoint`,
    where given (`attacked_another`).
    """
    path = Path(run_dir) / ATTACK_RESULTS
    there, results = read_json_file(path)
    if not there:
        return False, "new"
    if why := unreadable(ATTACK_RESULTS, results):
        return False, why
    if not isinstance(results, dict):
        return False, (f"{ATTACK_RESULTS} is not a valid JSON object (attack.py will stop; delete it "
                       "to attack again)")
    if checkpoint is not None and attacked_another(path, results, checkpoint):
        return False, f"new: {ATTACK_RESULTS} holds the attacks of another checkpoint than {checkpoint.name}"
    if stale := smoothed_loss_attacks(results, wanted.get("smoothed")):
        return False, f"new: {ATTACK_RESULTS} {stale}"
    asked = wanted["num_images"] or test_images  # None: all, and the count is not known here
    if missing := missing_note(results, wanted["keys"], wanted["plans"], asked, images_sha256,
                               wanted.get("eps_labels")):
        return False, f"resume: {missing}"
    if images_sha256 is None and asked_data and (
            unchecked := uncompared_data(results.get("config"), asked_data[1], asked_data[0], "attack.py")):
        return False, f"resume: {unchecked}"
    return True, f"done ({counted(len(wanted['keys']), 'setting')})"


def missing_figure(run_dir, wanted, checkpoint):
    """'no attack_examples.png' where a run whose attack_results.json holds every `wanted` setting
    (`requested_attacks`') lacks the figure attack.py draws after the last one (a job stopped in
    between, killed while it drew or by a full disk, left every entry without it), and `checkpoint`,
    the best one it is drawn from, is there (a study copied back without it is done); else None.
    The one rule by which sweep.py attacks such a run again (every entry reused, the figure drawn)
    and report.py --grid lists it incomplete; none where `wanted` asks no figure (--examples 0)."""
    if wanted.get("examples") and checkpoint is not None and Path(checkpoint).is_file() \
            and not (Path(run_dir) / ATTACK_EXAMPLES).exists():
        return f"no {ATTACK_EXAMPLES}"
    return None


def attacked_another(path, results, checkpoint):
    """Whether attack_results.json (at `path`, parsed: `results`) holds the attacks of another file
    than `checkpoint`: one copied in by hand (train.py removes the attack results of a run it trains
    again). attack.py drops them, or stops while the file they record at another path (another
    .pth in the folder, the run folder this one was copied from) is still there. Its bytes are read
    only where it is not the file attack.py recorded, by size and mtime (to within 2 s: a copy may
    keep whole seconds, and FAT even ones), or, in results of an attack.py that did not record
    them, where it was written after them: a sweep reads no finished run's checkpoint, nor one of a
    run folder copied with cp -a or rsync -a; one copied in with cp -p is read, as it keeps another
    file's mtime. Where its recorded zip index (`zip_index_sha256`) is there, that index alone is
    read: a study copied with cp -r or scp -r, which give every file a new mtime, is not hashed
    whole again at every sweep and report."""
    versions = file_versions([checkpoint, path])
    if versions is None:  # missing, a folder, or a FIFO whose open would wait: attack.py says so
        return False
    (mtime_ns, size), (written_ns, _) = versions
    recorded_mtime, recorded_size = results.get("checkpoint_mtime"), results.get("checkpoint_size")
    if isinstance(recorded_mtime, (int, float)) and isinstance(recorded_size, int):
        unchanged = size == recorded_size and abs(mtime_ns / 1e9 - recorded_mtime) <= 2
    else:
        unchanged = mtime_ns <= written_ns
    if unchanged:
        return False
    if isinstance(index := results.get("checkpoint_index_sha256"), str) and (
            found := zip_index_sha256(checkpoint)) is not None:
        return index != found
    try:
        return results.get("checkpoint_sha256") != file_sha256(checkpoint)
    except OSError:  # unreadable: attack.py says why
        return False


def missing_note(results, keys, plans=None, num_images=None, images_sha256=None, eps_labels=None):
    """The settings of `keys` that attack_results.json `results` lacks (see `missing_entries`), as
    a note: '3 of 16 settings missing, 3 of them computed with other steps, precision, images or
    seed (1017 images asked) (fgsm untargeted 1/255, ...)', each named by `describe_key`; None
    when none is."""
    missing = missing_entries(results, keys, plans, num_images, images_sha256)
    if not missing:
        return None
    shown = ", ".join(describe_key(k, eps_labels) for k in missing[:3])
    more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
    otherwise = len(missing) - len(missing_entries(results, keys))
    why = (f", {otherwise} of them computed with other steps, precision, images or seed"
           + (f" ({counted(num_images, 'image')} asked)" if num_images else "") if otherwise else "")
    return f"{len(missing)} of {len(keys)} settings missing{why} ({shown}{more})"


@dataclass
class Task:
    """One run of the grid: its directory, the stages asked for, those left to do, their commands."""
    index: int
    run: Run
    run_dir: Path
    stages: tuple
    todo: list
    notes: dict  # stage -> short description of its state
    commands: dict  # stage -> argv (list of strings), for the stages in todo
    # as report.py names the run (`run_key`): cifar100_coarse/..., .../category_smooth0.1/...; else `run`'s
    name: str = None
    # the job working in its run directory as the sweep was planned (`run_holder`), doing the first
    # stage of todo: 'train.py (pid 4123 on node07, since 17:05:34 UTC)'; None where none was
    running: str = None

    def __post_init__(self):
        self.name = self.name or self.run.name

    @property
    def refused(self):
        """The stages left that their script will refuse, as their notes say (REFUSALS)."""
        return [s for s in self.todo if any(m in self.notes[s] for m in REFUSALS)]

    def shell(self, python="python", wrap=None, cwd=None):
        """The stages left as one shell line, joined by && (a failed stage stops the run)."""
        parts = []
        for stage in self.todo:
            argv = [python, display_path(self.commands[stage][1], cwd), *self.commands[stage][2:]]
            parts.append(shlex.join(wrap(stage, self) + argv if wrap else argv))
        return " && ".join(parts)


def display_path(path, cwd=None):
    """A script path relative to cwd when it lies below it (shorter lines), else absolute."""
    path, cwd = Path(path), Path(cwd or Path.cwd())
    try:
        return str(path.relative_to(cwd))
    except ValueError:
        return str(path)


def plan(runs, stages, scripts, routed, python=sys.executable):
    """A Task per run with the stages still to do, in grid order.

    routed: {stage: pass-through args} for every loaded script (see `Scripts.route`); train.py's
    parser resolves the run directory even for an attack-only sweep, so a --base_dir or
    --label_granularity given through it is honoured.
    """
    stages = tuple(s for s in STAGES if s in stages)
    tasks = []
    for index, run in enumerate(runs):
        argv = {stage: run.flags() + routed.get(stage, []) for stage in scripts.stages}
        # with --batch_size and --lr as the run trains them: a run of other ones is not done
        train_ns = scripts["train"].module.label_defaults(scripts["train"].parse(argv["train"]))
        if not tasks:  # every run's (a grid's --base_dir is its args'): refused once, not by each run
            check_base_dir(train_ns.base_dir)
        check_name_lengths(train_ns)  # each run's: its seed and model are in its checkpoint's name
        run_dir = run_dir_of(train_ns)
        attack_ns = scripts["attack"].parse(argv["attack"]) if "attack" in stages else None
        if attack_ns is not None:  # unset, None (it tells one given with --checkpoint): its default
            attack_ns.base_dir = scripts["attack"].module.flags_base_dir(attack_ns)
        _check_one_run_dir(run, run_dir, attack_ns)
        running = run_holder(run_dir)  # before its files, as report.py reads it
        notes, todo, commands = {}, [], {}
        train_done = True
        if "train" in stages:
            train_done, notes["train"] = train_state(run_dir, train_ns, running)
            if not train_done:
                todo.append("train")
                commands["train"] = [python, str(scripts["train"].path), *argv["train"], "--resume"]
        if "attack" in stages:
            attack_done, notes["attack"] = _attack_done(run_dir, train_ns, attack_ns, scripts["attack"],
                                                        train_done)
            if not attack_done:
                todo.append("attack")
                commands["attack"] = [python, str(scripts["attack"].path), *argv["attack"]]
        running = running if todo else None  # a job that has finished what the grid asks meanwhile
        if running:  # the stage it is doing: train.py trains what is not done, attack.py attacks a trained run
            notes[todo[0]] = f"in progress by {running}: {notes[todo[0]]}"
        tasks.append(Task(index, run, run_dir, stages, todo, notes, commands, run_name(run_key(train_ns)), running))
    return tasks


def _check_one_run_dir(run, run_dir, attack_ns):
    """attack.py reads `run` where train.py writes it, `run_dir` (attack_ns: attack.py's namespace,
    None in a sweep without the attack stage), else a UsageError names the flags to give both."""
    elsewhere = run_dir_of(attack_ns) if attack_ns is not None else run_dir
    if elsewhere.resolve() != run_dir.resolve():  # '../w/outs' for 'outs' is the same folder
        raise UsageError(f"train.py would write {run.name} to {run_dir} but attack.py would read "
                         f"{elsewhere}: give --base_dir, --label_granularity, --smoothing and "
                         "--label_noise to both stages (on the command line or in a grid file's args), "
                         "not in --train_args or --attack_args alone")


def _attack_done(run_dir, train_ns, attack_ns, attack, train_done):
    """(whether the run's attack stage is done, its note), as `attack_state` finds the settings
    attack.py would compute (attack: the attack Script; train_done: whether its training is done,
    or not in the sweep); a run the sweep trains is attacked again."""
    if train_done and (moved := older_place(train_ns, run_dir)):  # (else its train stage says it)
        return False, f"attack.py refuses it: {moved}"
    wanted = requested_attacks(attack_ns, attack.module)
    trained = read_json_or_none(run_dir / RESULTS)
    trained = trained if isinstance(trained, dict) else None
    test_images, images = _test_images(run_dir, train_ns, attack_ns, trained, wanted["num_images"])
    # (a run the sweep trains gets another checkpoint, and is attacked after it anyway)
    checkpoint = run_dir / best_checkpoint_name(train_ns.label, train_ns.seed, train_ns.model)
    done, note = attack_state(
        run_dir, wanted, test_images, images, checkpoint if train_done else None,
        (train_ns.dataset, attack_ns.data_dir) if attack_ns.data_dir else None)
    if done and train_done and (figure := missing_figure(run_dir, wanted, checkpoint)):
        return False, f"resume: {figure} (drawn, nothing attacked)"
    if not done or not train_done:  # training gives another best checkpoint: attack it too
        if not train_done:
            note = "after train"
        elif trained is None:
            note = "no trained model yet (its train stage is not in this sweep)"
        elif not checkpoint.is_file():  # a run copied back without it: attack.py stops
            note = (f"finished, but without {checkpoint.name}: attack.py refuses it; "
                    "delete the run directory to train it again")
        return False, note
    return True, note


def _test_images(run_dir, train_ns, attack_ns, trained, num_images):
    """(test_images, images_sha256) for `attack_state`: how many test images the run tested (its
    results.json, `trained`; None where the sha256 covers them all), and the sha256 of the
    `num_images` (None: all) test images attack.py reads, where an attack_results.json is there to
    compare (else None, as where nothing names their folder or they cannot be read)."""
    images = None  # the test images attack.py reads: entries computed on others are not done
    test_images = (trained or {}).get("test_images")
    if (run_dir / ATTACK_RESULTS).exists():  # (unset, its --data_dir and granularity are the run's)
        config = read_json_or_none(run_dir / CONFIG)
        flags = config.get("flags") if isinstance(config, dict) else None
        if attack_ns.data_dir or isinstance(flags, dict):  # else only its checkpoint (torch) names it
            data_dir = attack_ns.data_dir or trained_folder(flags, "data_dir")
            images = test_images_sha256(train_ns.dataset, data_dir, train_ns.label_granularity, num_images)
        if images is not None and num_images is None:  # every image there, however
            test_images = None  # many the run tested: the sha256 says how many
    return test_images, images


def check_runs_to_train(runs, train, args):
    """Before any of `runs` is queued, train.py's checks that need no torch: of their flags
    (`flag_problems`), of their split of the training images in their --data_dir (`split_problems`),
    then of the label files they train on (`label_file_problems`). `train` is train.py's Script,
    `args` the flags the sweep passes it besides the run's own. Else one UsageError with train.py's
    reason for each, all at once: a grid of hundreds of runs is fixed in one go, not one problem per
    rerun."""
    if not runs:
        return
    parsed = train.parse(runs[0].flags() + args)
    for dataset in dict.fromkeys(r.dataset for r in runs):  # cifar10 coarse: its error alone
        dataset_info(dataset, parsed.label_granularity)
    flags = flag_problems(runs, train, args) + split_problems(runs, train, args)
    files = label_file_problems(runs, parsed.label_dir, parsed.label_granularity)
    what = "flags and label files" if flags and files else "flags" if flags else "label files"
    refuse_all(flags + files, what)


def label_file_problems(runs, label_dir, granularity):
    """train.py's reason for each label file the runs train on that it refuses: each in
    label_dir, readable, with a target per class of its dataset at `granularity`, which
    nearest-target decoding tells apart (`decoding_problem`); [] where all are usable."""
    needed = sorted({(r.dataset, r.label) for r in runs if r.label not in FILELESS_LABELS})
    problems, covered = _missing_files(needed, label_dir, granularity)
    for dataset, name in (label for label in needed if label not in covered):
        classes = DATASETS[dataset].num_classes.get(granularity)  # None: train.py says what is wrong
        fix = granularity_fix(dataset, granularity, name)
        try:  # train.py's checks: a .npz, a name without the dataset, a typo, ... (a hint's dataset by --datasets)
            targets = load_label(dataset, name, label_dir, classes, fix, FILELESS_LABELS, GRID_FLAGS["--dataset"])
        except LabelError as err:
            problems.append(str(err))
            if not Path(label_dir).is_dir():  # the folder's problem, the same for every file
                break
            continue
        # train.py's TargetSpace refuses it: each of its runs would fail
        if problem := decoding_problem(targets, f"label file {label_path(dataset, name, label_dir)}"):
            problems.append(problem)
    return problems


def flag_problems(runs, train, args):
    """train.py's checks of each run's flags that need neither data nor a label file
    (`check_label_flags`: --smoothing's most for the dataset's classes, ...): `refused_runs` of each
    dataset and label. `train`, `args`: as `check_runs_to_train`'s."""
    def check(ns):
        check_label_flags(ns, class_count(ns.dataset, ns.label_granularity))
    return refused_runs(runs, train, args, lambda run: f"--dataset {run.dataset} --label {run.label}", check)


def split_problems(runs, train, args):
    """train.py's check of each run's split (`check_split`: at least one training image per class,
    no more than --valid_size leaves) of the training images in its --data_dir (`train_image_count`):
    `refused_runs` of each dataset and level. `train`, `args`: as `check_runs_to_train`'s."""
    def check(ns):
        count = train_image_count(ns.dataset, ns.data_dir, ns.label_granularity)
        if count is not None:  # batches train.py cannot read: it says why
            check_split(count, ns.valid_size, ns.level, class_count(ns.dataset, ns.label_granularity))
    return refused_runs(runs, train, args, lambda run: f"--dataset {run.dataset} --level {run.level:g}", check)


def refused_runs(runs, train, args, group, check):
    """train.py's reason for each set of `runs` it refuses, 'train.py refuses the --dataset cifar10
    --label mcr2 and --dataset cifar100 --label mcr2 runs: <reason>' (each of their jobs would end
    with that error line): `check` raises it for train.py's flags of a run (parsed from its own and
    `args`); `group(run)` names the runs that share what it reads, so one run of each is checked.
    [] where it refuses none."""
    firsts = {}
    for run in runs:
        firsts.setdefault(group(run), run)
    refused = {}  # train.py's reason -> the groups of runs it refuses
    for name, run in firsts.items():
        ns = train.parse(run.flags() + args)
        try:
            check(ns)
        except UsageError as err:
            refused.setdefault(str(err), []).append(name)
    return [f"train.py refuses the {' and '.join(names)} runs: {reason}" for reason, names in refused.items()]


def refuse_all(problems, what):
    """A UsageError naming every one of `problems` (the grid's `what`: flags, label files) in one
    line, '2 problems with the grid's flags: (1) ...; (2) ...', or the one alone; none: nothing."""
    if len(problems) > 1:
        raise UsageError(f"{len(problems)} problems with the grid's {what}: "
                         + "; ".join(f"({k}) {problem}" for k, problem in enumerate(problems, 1)))
    if problems:
        raise UsageError(problems[0])


def _missing_files(needed, label_dir, granularity):
    """([a problem], the (dataset, label)s it names) for the files of `needed` missing from
    label_dir that one fix serves: a coarse grid's (files of its own), or the shipped labels a
    --label_dir of one's own lacks; ([], []) where none (`load_label` gives each file its reason)."""
    if not Path(label_dir).is_dir():  # load_label says what --label_dir is
        return [], []
    missing = [(d, n) for d, n in needed if not label_path(d, n, label_dir).exists()]
    if missing and granularity != "fine":  # the shipped files hold the fine classes': a fix per dataset
        fixes = [granularity_fix(d, granularity, *[n for d2, n in missing if d2 == d])
                 for d in dict.fromkeys(d for d, _ in missing)]
        fix = "; ".join(fixes)
    elif missing := [(d, n) for d, n in missing if label_path(d, n, LABEL_DIR).exists()]:
        fix = (f"--label_dir serves every label of the grid, so copy the shipped "
               f"{', '.join(label_path(d, n).name for d, n in missing)} from {LABEL_DIR} into {label_dir}")
    else:
        return [], []
    paths = ", ".join(str(label_path(d, n, label_dir)) for d, n in missing)
    return [f"label file(s) not found: {paths}; {fix}"], missing
