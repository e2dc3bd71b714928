"""The paper's tables and figures from every run under a base directory.

    python report.py --base_dir outputs --out report/
    python report.py --base_dir outputs --out report/ --grid grid.yaml   # the runs expected

Reads each run directory of the paper's layout ({base}/{dataset}/seed{s}/{model}/model_{label},
{base}/less/{dataset}/level{L}/..., model_category_smooth{S}, model_{label}_noise{R}; see
utils.runs.run_directory):
config.json, results.json, metrics.jsonl, confusion.json, attack_results.json. Writes to --out:
tables.md (and with --latex tables.tex, its tables as LaTeX booktabs tables for a paper);
clean_accuracy.csv, data_efficiency.csv, robust_accuracy.csv, runs.csv, label_noise.csv (with
--label_noise runs), label_stats.csv (labels.stats of the targets each label trained, from the
label files in --label_dir that hold them), class_accuracy.csv (each class's test accuracy, from
the runs' confusion.json; in tables.md too, up to 20 classes), class_robust_accuracy.csv (each
class's robust accuracy per attack setting, where attack_results.json's entries count it; in
tables.md too), target_confusion.csv (per run, over its pairs of classes, Spearman's rho between
the distance of their targets and how often they are confused; not for category or MCR2); figures,
PNG or --figure_format pdf or svg (robust
accuracy against eps, accuracy against data level, validation curves); and summary.json with every
number, plus the runs that are missing or incomplete. Accuracies are fractions in the CSVs and JSON,
percentages in tables.md: mean +- sample std over seeds (n = seeds). Warnings go to stderr; stdout
is one JSON line: `out`, the numbers of runs, trained, attacked, incomplete (running: those of them
that a train.py or attack.py job works on now) and missing, and the files written. Exit status: 0 done, 2 after one `error:` line (bad input), 130 Ctrl-C or SIGTERM
(the earlier report kept).
"""
if __name__ == "__main__":  # first: a Ctrl-C while modules load is one line, not a traceback
    from utils import errors
    errors.quiet_interrupts()

import contextlib
import csv
import functools
import io
import itertools
import math
import os
import re
import signal
import statistics
import textwrap
import threading
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from labels import LABEL_DIR, LabelError, label_path, read_targets, target_distances, targets_sha256
from labels.stats import COLUMNS as STAT_COLUMNS, label_stats, value_text
from utils.errors import (CliParser, DefaultsFormatter, ExtendList, OneFile, UsageError, choice, log, nonempty,
                          number, doc_paragraphs, os_errors_as_usage, run_cli, sigterm_as_interrupt)
from utils.grid import (ATTACK_RESULTS, COMMAND_LINE_DTYPE, FILELESS_LABELS, TRANSFER, accuracy, asked_changes,
                        asked_facts, attack_entries, attack_parts, attacked_another, class_counts, cores, counted, describe_key,
                        entry_dtype, entry_key, eps_text, fresh_transfers, last_written, missing_figure, missing_note,
                        nonnegative, outdated_entries, parse_level, read_json_file, read_lines,
                        smoothed_loss_attacks, smoothed_run, transfer_source, unreadable)
from utils.atomic import (Table, code_span, dump_json, file_set, markdown_text, print_json, taking_turns,
                          temporary_names, utf8)
from utils.constants import ATTACKS, class_count, most_smoothing, schedule
from utils.flags import (RESULT_FLAGS, SHARED, acts_on, add_flags, broken_training, images_change, mistyped,
                         older_rounding, recorded_config, trained_folder, with_added_flags)
from utils.runs import (CONFIG, CONFUSION, IN_USE, LAST_CHECKPOINT, LAYOUT, LAYOUT_TEXT, METRICS, NOISY, RESULTS,
                        best_checkpoint_name, check_folder_names, dataset_folder, enclosing_base_dir, resolved,
                        run_folder_name, run_holder, run_key, run_name)

# The paper's order of label types in its tables; others follow alphabetically.
LABEL_ORDER = ("category", "speech", "shuffle", "composite", "random", "uniform", "lowdim", "bert", "glove")
ATTACK_TITLES = {"fgsm": "FGSM", "pgd": "PGD", "iterative": "Iterative"}  # as the papers write them
KEY = ("dataset", "model", "label", "level", "seed")
UNKNOWN = object()  # a flag of a run without config.json that its results.json does not record
FINGERPRINTS = ("label_sha256", "data_sha256")  # config.json's sha256 of the label targets and dataset
# train.py --label_noise R runs live in model_{label}_noise{R} (utils.runs.run_directory); the report
# keeps "{label}_noise{R}" as their label and adds a table of accuracy against R. Category runs with
# --smoothing S, in model_category_smooth{S}, are the label category_smooth{S} (the paper's name).
# --figure_format's choices, each the extension of its files: its matplotlib backend and what its
# files are written without, so that a rerun writes the same bytes (a PDF or SVG records when it
# was made unless told not to; an SVG's ids are salted, `FIGURE_RC`). A file of any of them in
# --out is a report's figure (`is_figure`), whichever format the report at hand draws.
FIGURE_FORMATS = {"png": ("agg", {}),
                  "pdf": ("pdf", {"metadata": {"CreationDate": None}}),
                  "svg": ("svg", {"metadata": {"Date": None}})}
FIGURE_RC = {"svg.hashsalt": "labelrep"}  # matplotlib's default: a random salt for each SVG written
DEFAULT_FIGURE_FORMAT = "png"  # every report's before --figure_format: theirs stay as they were
# a name report() writes in --out, no folder
REPORT_FILE = re.compile(rf"[\w.+=-]+\.(md|tex|csv|{'|'.join(FIGURE_FORMATS)})")
# report.py reads runs and draws figures in up to one process a CPU core, 8 at most: each holds
# ~100 MB, and past 8 the rest (the tables, summary.json) takes the most time. A worker's start
# (Python; matplotlib) costs about as much as reading 50 runs or drawing 2 figures.
SUMMARY = "summary.json"  # the report's machine-readable result, in --out beside its files
# The largest summary.json read (an earlier report's): 34 MB for 600 full-size runs attacked in
# 42 settings, so about 1,400 such runs wrote more than utils.runs.READ_LIMIT, which the next
# report refused
SUMMARY_LIMIT = 1 << 30
REPORT_LOCK = ".report.lock"  # in --out while a report writes there (`taking_turns`)
# atomic_write's temporary name for one of a report's files (tables.md, a CSV, a figure, summary.json)
REPORT_TEMPORARY = temporary_names(rf"{REPORT_FILE.pattern}|{re.escape(SUMMARY)}")
REPORT_WORKERS = 8
RUNS_PER_WORKER = 100
FIGURES_PER_WORKER = 4


def build_parser():
    about = doc_paragraphs(__doc__)
    parser = CliParser(prog="report.py", description=about[0].split("\n")[0],
                       epilog=about[-1],  # what it writes, and where its lines go
                       formatter_class=DefaultsFormatter)
    add_flags(parser, "base_dir", base_dir={"default": None, "help": "root of the run directories "
                                            "(default: the --grid's --base_dir, else ./outputs)"})
    parser.add_argument("--out", type=nonempty, default="./report",
                        help="folder for tables, CSVs, figures, summary (an earlier report's files "
                        "there are replaced)")
    parser.add_argument("--grid", action=OneFile, type=nonempty, help="sweep.py's --config grid file (YAML/JSON): its "
                        "runs are the ones expected, so absent ones are listed as missing (default: "
                        "in each dataset, every combination of the models, labels, levels and seeds seen "
                        "there)")
    parser.add_argument("--label_dir", nargs="+", action=ExtendList, type=nonempty, metavar="DIR",
                        help="folders of the label files the runs trained with (train.py's --label_dir), "
                        "for the label statistics table; a file counts only where its targets are the "
                        "ones a run recorded (default: the --grid's --label_dir; the shipped "
                        "labels/label_files and the folder each run trained with are searched too)")
    parser.add_argument("--title", default="Results", help="heading of tables.md")
    parser.add_argument("--figure_format", choices=FIGURE_FORMATS, default=DEFAULT_FIGURE_FORMAT,
                        help="file format of the figures (pdf, svg: vector, for a paper); an earlier "
                        "report's figures of another format in --out are removed")
    parser.add_argument("--latex", action="store_true", help="also write tables.tex: tables.md's tables "
                        "as LaTeX booktabs tables, for a paper (an earlier report's tables.tex in --out "
                        "is removed without it)")
    parser.add_argument("--no_figures", action="store_true", help="no figures, only tables, CSVs "
                        "and JSON (an earlier report's figures in --out, of any format, are left as "
                        "they were)")
    parser.add_argument("--workers", type=number(int), default=REPORT_WORKERS,
                        help="processes that read the runs and draw the figures, at most one a CPU core "
                        "(~100 MB each; 1: all in this one)")
    return parser


# ---------------------------------------------------------------- reading runs


def split_noise(label):
    """'speech_noise0.2' -> ('speech', 0.2); 'speech' -> ('speech', 0.0)."""
    match = NOISY.match(label)
    return (match["label"], float(match["noise"])) if match else (label, 0.0)


def label_rank(label):
    """Sort key: the paper's labels in its order, category_smooth{S} after category by S, then the
    others by name, a family's sizes by value (normal_dim=2 before normal_dim=10), each followed by
    its noise variants by rising noise."""
    base, noise = split_noise(label)
    if base in LABEL_ORDER:
        return LABEL_ORDER.index(base), "", -math.inf, "", noise
    family, _, value = base.partition("_smooth" if base.startswith("category_smooth") else "=")
    try:
        size = float(value)
    except ValueError:  # no number after "=", or no "=": before the family's sizes
        size = -math.inf
    order = LABEL_ORDER.index(family) if family in LABEL_ORDER else len(LABEL_ORDER)
    return order, family if order == len(LABEL_ORDER) else "", size, base, noise


def table_order(key):
    """Sort key of a (dataset, model, label, level, ...) tuple (a `KEY` or its first four) as the
    accuracy tables list them: dataset, model, label (`label_rank`), level from the largest, then
    the rest (the seed) by value, not as its folder's name sorts (seed10 before seed9)."""
    return (key[0], key[1], label_rank(key[2]), -key[3], *key[4:])


def attack_rank(attack):
    """fgsm, iterative, pgd, then their other objectives ("pgd+margin") after each, then the rest."""
    base = attack_parts(attack)[0]
    return (ATTACKS.index(base) if base in ATTACKS else len(ATTACKS), attack)


def find_runs(base):
    """Run directories under base that follow the paper's layout -> {relative path: key}. Labels
    are written as train.py names them ('speech_noise0.20' as 'speech_noise0.2', 'speech_noise0'
    as 'speech'), so that two directories of one run (seed07 beside seed7, less/.../level100
    beside the full run) have one key."""
    runs = {}
    # at the layout's two depths only: a walk of everything below (a --base_dir of /, or one that
    # also holds a dataset) took minutes, and met the files of processes that ended meanwhile
    for path in sorted(itertools.chain(base.glob("*/*/*/model_*"), base.glob("less/*/*/*/*/model_*"))):
        if not path.is_dir():
            continue
        rel = path.relative_to(base).as_posix()
        match = LAYOUT.match(rel)
        if match:
            dataset = match["less_dataset"] or match["dataset"]
            try:
                level = parse_level(match["level"]) if match["level"] else 100
            except UsageError:  # level0, levelx: no directory train.py writes, as other names
                continue
            label, noise = split_noise(match["label"])
            runs[rel] = {"dataset": dataset, "model": match["model"],
                         "label": label + (f"_noise{noise:g}" if noise else ""),
                         "level": level, "seed": int(match["seed"])}
    return runs


def exclude_duplicates(records):
    """Directories that hold the same run (same dataset, model, label, level and seed, written
    differently) are each left out of the tables, with the others named: which one holds the
    run is for its owner to say, not for an average."""
    groups = defaultdict(list)
    for record in records:
        groups[tuple(record[k] for k in KEY)].append(record)
    for same in groups.values():
        for record in same if len(same) > 1 else ():
            others = ", ".join(r["run_dir"] for r in same if r is not record)
            record["excluded"] = True
            record["problems"].append(f"left out of the tables: the same run as {others}")


def log_error(run_dir, stage):
    """The last 'error: ...' line of {stage}.log's last attempt (an earlier attempt's error is no
    cause of this one's end), if the sweep logged one. Not another job's refusal to work in the
    run directory (a sweep or task started twice: `run_lock`'s 'in use'), which the sweep appends
    to the log of the job that holds it: that job, killed without an error line, was shown with
    the refusal as its error."""
    from sweep import last_line
    line = last_line(run_dir / f"{stage}.log", prefix="error:", unless=IN_USE)
    return line if line.startswith("error:") else ""


def read_run(base, rel, key):
    """Everything a report needs from one run directory; `problems` says what is unfinished."""
    run_dir = base / rel
    record = {**key, "run": run_name(key), "run_dir": rel, "train": None, "attack": None,
              "classes": None, "attack_classes": None, "curve": [], "problems": [], "excluded": False,
              # read before its files: a job that ends meanwhile leaves them whole, where one read
              # after them would find a run that its job has just finished said to have stopped
              "running": run_holder(run_dir)}
    results_there, results = read_json_file(run_dir / RESULTS)
    config_there, config = read_json_file(run_dir / CONFIG)
    record["flags"] = run_flags(record, config_there, config, results)
    # what the run trained on: compared across seeds where recorded (runs older than them lack them)
    record["fingerprints"] = {k: config.get(k) for k in FINGERPRINTS} if isinstance(config, dict) else {}
    exclude_misplaced(record)
    if broken := broken_training(config):  # train.py and sweep.py refuse it: its numbers are no result
        record["excluded"] = True
        record["problems"].append(f"left out of the tables: trained with {broken}; train it again "
                                  "(train.py --force)")
    history = read_lines(run_dir / METRICS)
    # None where an epoch has no validation accuracy (--valid_size 0) or a malformed line
    record["curve"] = [accuracy(row.get("valid_acc")) if isinstance(row, dict) else None for row in history]
    record["diverged_epoch"] = diverged_epoch(history)
    record["epochs"] = record["flags"].get("epochs")
    if results_there:
        read_training(record, results)
        if record["train"]:
            read_classes(record, run_dir)
    else:
        record["problems"].append(unfinished_training(run_dir, history, record["epochs"], record["running"]))
    read_attacks(record, run_dir)
    return record


def run_flags(record, config_there, config, results):
    """The flags the run trained with: its config.json's (`config`, parsed), else those its
    results.json (`results`) records; record["all_flags"] says whether config.json had them, its
    problems why not."""
    flags = config.get("flags") if isinstance(config, dict) else None
    # without config.json's flags, a finished run's are those its results.json records, as train.py
    # checks such a run (`recorded_config`); the others are unknown, not train.py's defaults
    record["all_flags"] = isinstance(flags, dict)
    if not record["all_flags"]:
        if config_there:
            record["problems"].append(unreadable(CONFIG, config) or f"{CONFIG} is not valid JSON or has no flags")
        elif isinstance(results, dict):
            record["problems"].append(f"no {CONFIG}: compared with its other seeds on the flags its "
                                      f"{RESULTS} records")
        flags = (recorded_config(None, results) or {"flags": {}})["flags"]
    return flags


def exclude_misplaced(record):
    """A run whose flags say it belongs in another directory (a category run with --smoothing, a
    dataset, granularity or seed not its folder's) is marked excluded, with where it belongs in its
    problems."""
    flags, rel = record["flags"], record["run_dir"]
    label, noise = split_noise(record["label"])
    smoothing = flags.get("smoothing")
    if smoothed_run(label, smoothing):  # an older train.py's place: model_category
        own = Path(rel).parent / run_folder_name(label, noise, smoothing)
        record["excluded"] = True
        record["problems"].append(f"left out of the tables: trained with --smoothing {smoothing:g}, "
                                  f"so its directory is {own} (where train.py writes it now); move it there")
    # a coarse run's 20-class accuracy in a fine row (its folder copied or merged into cifar100/);
    # train.py and a sweep refuse such a run, so only the report could average it in
    dataset, granularity = flags.get("dataset"), flags.get("label_granularity")
    if isinstance(dataset, str) and isinstance(granularity, str) and \
            (own := dataset_folder(dataset, granularity)) != record["dataset"]:
        record["excluded"] = True
        record["problems"].append(f"left out of the tables: trained with --dataset {dataset} --label_granularity "
                                  f"{granularity}, whose runs train.py writes under {own}, not "
                                  f"{record['dataset']} (a copy of another run?)")
    # not compared across seeds (exclude_odd_seeds): a copy of seed7 is no seed10, and a level-100 run
    # copied into less/cifar10/level25 was that row's one seed (or a speech run in model_random, ...)
    for name, trained, own in misplaced_flags(flags, record):
        record["excluded"] = True
        record["problems"].append(f"left out of the tables: trained with {trained}, not the {name} {own} "
                                  "of its directory (a copy of another run?)")


def misplaced_flags(flags, record):
    """(name, the flags, the directory's value) of each of the run's seed, model, label (its
    --label, --label_noise and --smoothing, as train.py names its folder) and level where its
    recorded `flags` (those that record it) name another run directory than the one it lies in,
    `record`'s. Not an older train.py's smoothed category run in model_category (`exclude_misplaced`
    says where it goes)."""
    label, noise = split_noise(record["label"])
    seed, model, level, name = (flags.get(k) for k in ("seed", "model", "level", "label"))
    rate, smoothing = flags.get("label_noise", noise), flags.get("smoothing") or 0.0
    found = []
    if isinstance(seed, int) and not isinstance(seed, bool) and seed != record["seed"]:
        found.append(("seed", f"--seed {seed}", record["seed"]))
    if isinstance(model, str) and model != record["model"]:
        found.append(("model", f"--model {model}", record["model"]))
    if isinstance(name, str) and nonnegative(rate) and nonnegative(smoothing) \
            and not smoothed_run(label, smoothing) \
            and (folder := run_folder_name(name, rate, smoothing).removeprefix("model_")) != record["label"]:
        found.append(("label", f"--label {name}" + (f" --label_noise {rate:g}" if rate else "")
                      + (f" --smoothing {smoothing:g}" if folder.startswith("category_smooth") else ""),
                      record["label"]))
    # as the directory names it (level{L:g}), as the label's rates are
    if nonnegative(level) and (own := f"{record['level']:g}") != f"{level:g}":
        found.append(("level", f"--level {level:g}", own))
    return found


def read_training(record, results):
    """record["train"] from results.json (`results`, parsed), and its epochs; or a problem saying
    what results.json lacks."""
    if not isinstance(results, dict) or accuracy(results.get("test_acc")) is None:
        record["problems"].append(unreadable(RESULTS, results)
                                  or "results.json is not valid JSON or has no test_acc in [0, 1]")
    elif results.get("valid_acc") is not None and accuracy(results["valid_acc"]) is None:
        record["problems"].append("results.json has a valid_acc outside [0, 1]")
    else:
        record["train"] = {k: results.get(k) for k in (
            "test_acc", "test_loss", "valid_acc", "valid_loss", "best_epoch", "epochs",
            "train_images", "test_images", "train_seconds", "images_per_s", "device")}
        for k in ("best_epoch", "epochs", "train_images", "test_images"):  # shown, averaged
            if not nonnegative(record["train"][k], int):
                record["train"][k] = None
        record["epochs"] = record["train"]["epochs"] or record["epochs"]


def read_classes(record, run_dir):
    """record["classes"] from the finished run's confusion.json: its class names, its test counts
    (`test`, C rows of C), and each class's test images (its row's sum) and test accuracy (the
    diagonal over the row's sum; None for a class without test images); or, where the run has none
    that holds the test counts its results.json scored, a str saying why. No problem of the run: one
    of a labelrep before train.py wrote confusion.json is finished all the same, and is left out of
    class_accuracy.csv and target_confusion.csv alone."""
    there, confusion = read_json_file(run_dir / CONFUSION)
    names, test = (confusion.get("classes"), confusion.get("test")) if isinstance(confusion, dict) else (None, None)
    if not there:
        record["classes"] = f"no {CONFUSION} (trained by a labelrep before train.py wrote one)"
    elif not (isinstance(names, list) and len(names) >= 2 and all(isinstance(n, str) for n in names)
              and count_matrix(test, len(names))):
        record["classes"] = unreadable(CONFUSION, confusion) or (
            f"{CONFUSION} is not valid JSON or has no test counts of its classes (C names, C rows of C counts)")
    elif len(names) != (expected := dataset_classes(record["dataset"])) and expected:  # one copied from another run
        record["classes"] = f"{CONFUSION} holds {len(names)} classes, not {record['dataset']}'s {expected}: another run's?"
    else:
        rows = [sum(row) for row in test]
        total, correct = sum(rows), sum(test[c][c] for c in range(len(test)))
        images, acc = record["train"]["test_images"], record["train"]["test_acc"]
        if not total or images not in (None, total) or not math.isclose(correct / total, acc, abs_tol=1e-9):
            scored = f"{correct}/{total}" if total else "no test image"
            record["classes"] = (f"{CONFUSION} holds other test counts than {RESULTS} scores ({scored} correct, "
                                 f"against test_acc {acc:g} of {images or '?'} images): another model's?")
        else:
            record["classes"] = {"names": names, "test_images": rows, "test": test,
                                 "test_acc": [test[c][c] / n if n else None for c, n in enumerate(rows)]}


def dataset_classes(folder):
    """`folder_classes`, or None for a dataset labelrep has not."""
    try:
        return folder_classes(folder)
    except UsageError:
        return None


def folder_classes(folder):
    """The number of classes of a run directory's dataset folder (`dataset_folder`'s, as train.py
    named it: cifar100_coarse has 20); `class_count`'s UsageError for a dataset labelrep has not."""
    name, _, granularity = folder.partition("_")
    return class_count(name, granularity or "fine")


def count_matrix(value, classes):
    """Whether `value`, read from JSON, is a `classes` x `classes` matrix of whole counts >= 0."""
    return isinstance(value, list) and len(value) == classes and all(
        isinstance(row, list) and len(row) == classes and all(nonnegative(n, int) for n in row) for row in value)


def unfinished_training(run_dir, history, epochs, running=None):
    """Why the run in `run_dir` has no results.json: how far its training got (`history`: its
    metrics.jsonl rows, of `epochs`, None where unknown) and when it last wrote; train.log's error.
    `running`: the job working in it now (`run_holder`), whose training is under way, not stopped
    (nor failed: an error in train.log is an earlier attempt's)."""
    out_of = f" of {epochs}" if epochs else ""
    logged = f"{len(history)}{out_of} epochs" if out_of else counted(len(history), "epoch")
    last = last_written(run_dir, ago=False)  # stopped, or still training: the time of its last write tells
    if running:  # and when it last wrote: a job on another node killed outright is named all the same
        return (f"in progress by {running}: training, " + (f"{logged} logged" if history else "in its first epoch")
                + (f", {last}" if last else ""))
    if history or (run_dir / LAST_CHECKPOINT).exists():
        reason = f"training unfinished with {logged} logged, {last} (no results.json)"
    else:  # or stopped in its first epoch (a signal: nothing kept); a sweep's train.log says when it last wrote
        reason = "training not started, or stopped or failed in its first epoch" + (f" ({last})" if last else "")
    error = log_error(run_dir, "train")
    return reason + (f"; train.log: {error}" if error else "")


def read_attacks(record, run_dir):
    """record["attack"] from attack_results.json, where the run has one, and record["attack_classes"]
    (the class names its entries' per-class counts index); its problems say what is wrong with it.
    One that holds the attacks of another checkpoint than the run's best is left out whole: its
    entries, malformed or not, are no results of this run."""
    attack_path = run_dir / ATTACK_RESULTS
    attack_there, attack = read_json_file(attack_path)
    if not attack_there:
        return
    if not isinstance(attack, dict) or not isinstance(attack.get("entries"), list):
        record["problems"].append(unreadable(ATTACK_RESULTS, attack)
                                  or f"{ATTACK_RESULTS} is not valid JSON or has no entries")
        return
    entries, malformed, outdated = attack_entries(attack)
    flags = record["flags"]
    best = best_checkpoint(record, run_dir)
    if best and attacked_another(attack_path, attack, best):
        record["problems"].append(f"{ATTACK_RESULTS} left out: it holds the attacks of another "
                                  f"checkpoint than {best.name} (attack the run again)")
        return
    if stale := smoothed_loss_attacks(attack, smoothed_run(flags.get("label"), flags.get("smoothing"))):
        record["problems"].append(f"{ATTACK_RESULTS} left out: it {stale} (attack the run again)")
        return
    if malformed:
        record["problems"].append(
            f"{ATTACK_RESULTS}: {counted(malformed, 'malformed entry')} left out "
            "(without an attack, targeted, eps >= 0 or a robust_acc in [0, 1])")
    if outdated:
        record["problems"].append(f"{ATTACK_RESULTS}: {outdated_entries(outdated)} left out (attack the run again)")
    entries, retrained = fresh_transfers(entries, attack_path)
    if retrained:
        record["problems"].append(f"{ATTACK_RESULTS}: the transfer entries crafted against an earlier "
                                  f"{' or '.join(retrained)} left out: written again since (attack the run "
                                  "again with --transfer_from it)")
    images, names = attack.get("num_images"), attack.get("classes")
    record["attack"] = {"clean_acc": accuracy(attack.get("clean_acc")),
                        "num_images": images if isinstance(images, int) else None,
                        "entries": entries}
    # the class names of its entries' per-class counts (an attack.py before them wrote none)
    if isinstance(names, list) and all(isinstance(n, str) for n in names):
        record["attack_classes"] = names


def best_checkpoint(record, run_dir):
    """The checkpoint attack.py attacks in `run_dir`, the run of `record`; None where its name is
    unknown (the run's flags do not record its label)."""
    flags = record["flags"]
    return run_dir / best_checkpoint_name(flags["label"], record["seed"], record["model"]) \
        if "label" in flags else None


def diverged_epoch(history):
    """The first epoch of metrics.jsonl's rows (`history`) whose loss was not finite, which
    train.py logs as null: the training loss, or the validation loss beside a validation accuracy
    (weights gone non-finite while the training loss stayed finite); None where none was."""
    for epoch, row in enumerate(history, 1):
        if isinstance(row, dict) and (row.get("train_loss", 0) is None
                                      or row.get("valid_acc") is not None and row.get("valid_loss", 0) is None):
            return epoch
    return None


@functools.cache
def flag_defaults():
    """train.py's defaults of RESULT_FLAGS, where it has one that does not depend on the label
    (--batch_size's and --lr's do, and every run records theirs)."""
    import train
    parser = train.build_parser()
    return {k: v for k in RESULT_FLAGS if (v := parser.get_default(k)) is not None}


def exclude_off_grid(records, asked):
    """A run of the --grid trained otherwise than the grid asks now (its --epochs raised since, its
    label file regenerated) holds no result of the grid: marked excluded, what differs in its
    problems, as a sweep of the grid refuses it (train.py would stop on it). asked: {run key
    tuple: train.py's namespace the grid's sweep trains that run with} (`expected_runs`)."""
    for record in records:
        ns = asked.get(tuple(record[k] for k in KEY))
        if ns is None or record["excluded"]:
            continue
        # and the number of images it trained on: a fractional --level's of an older labelrep (1570041)
        images = {"train_images": record["train"]["train_images"]} if (record["train"] or {}).get(
            "train_images") is not None else {}
        recorded = {"flags": record["flags"], **record["fingerprints"], **images}
        # config.json's flags of an older labelrep count with those it added since; results.json's alone do not
        recorded = with_added_flags(recorded) if record["all_flags"] else recorded
        # a value of another kind (an edited file) is train.py's refusal, not a change: the text "4"
        # read 'trained with --epochs 4 (the grid: 4)', with the advice to delete a finished run (a
        # fingerprint None: not recorded, as runs before it was)
        written = {k: v for k, v in recorded.items() if v is not None}
        facts = asked_facts(written, ns)  # as of `recorded`: it reads only the fingerprints written
        if odd := mistyped(CONFIG if record["all_flags"] else RESULTS, written, ns, *facts):
            record["excluded"] = True
            record["problems"].append(f"left out of the tables: train.py refuses it: {odd}")
            continue
        diffs, _ = asked_changes(recorded, ns, now="the grid:", facts=facts)
        if diffs:
            record["excluded"] = True
            record["problems"].append(f"left out of the tables: trained with {', '.join(diffs)}, not as the "
                                      "grid asks (its sweep refuses the run: delete the run directory to "
                                      "train it again)")


def exclude_odd_seeds(records, grid_runs=()):
    """A run trained with other flags than the other seeds of its (dataset, model, label, level)
    (say --epochs 5 among 30, or --smoothing) is no further seed of the same experiment: it is
    marked excluded, with the flags in its problems, so the tables and curves average like with
    like. Each flag's value most of the group's finished runs share is the group's (the first run's,
    its lowest seed's, on a tie; among all its runs when none has finished): unfinished runs, which
    count in no table, do not outvote a finished one, and where the group has finished runs of
    `grid_runs` (the --grid's run keys) they vote alone: a trial beside the grid's runs, trained
    with other flags, tied or outvoted them. A flag a run did not record (it trained before the flag existed:
    --warmup_epochs) counts as train.py's default, which is what such a run trained with; one
    without config.json is compared on the flags its results.json records alone. The label
    targets' and the dataset's sha256 (FINGERPRINTS) count as flags where a run recorded them: a
    seed added after its label file was regenerated trained on other targets. A seed of a
    fractional --level that an older labelrep trained on one image fewer than another seed's
    (`older_rounded`) is left out too."""
    unrecorded = flag_defaults()
    groups = defaultdict(list)
    for record in records:
        if record["flags"] and not record["excluded"]:  # no flags: no results.json, incomplete already
            groups[tuple(record[k] for k in KEY[:4])].append(record)
    for (_, _, label, _), runs in groups.items():
        if len(runs) < 2:
            continue
        base = split_noise(label)[0]
        compared = [k for k in RESULT_FLAGS if k != "seed" and acts_on(k, base)]
        # a list or mapping (an edited config.json) as its text: signatures are counted
        signatures = [tuple(str(v) if isinstance(v := r["flags"].get(
                                k, unrecorded.get(k) if r["all_flags"] else UNKNOWN), (list, dict)) else v
                            for k in compared)
                      + tuple(v if isinstance(v := r["fingerprints"].get(k), str) and v else UNKNOWN
                              for k in FINGERPRINTS) for r in runs]
        finished = [(tuple(r[k] for k in KEY) in grid_runs, s) for r, s in zip(runs, signatures) if r["train"]]
        voters = [s for in_grid, s in finished if in_grid] or [s for _, s in finished] or signatures
        common = [_most_common([v for v in column if v is not UNKNOWN]) for column in zip(*voters)]
        counts = {r["train"]["train_images"] for r in runs if r["train"]} - {None}
        for record, signature in zip(runs, signatures):
            odd = [f"--{k} {mine} (the other seeds: {theirs})" if k in compared
                   else f"other {k} {mine[:12]}... (the other seeds: {theirs[:12]}...)"
                   for k, mine, theirs in zip(compared + list(FINGERPRINTS), signature, common)
                   if mine != theirs and UNKNOWN not in (mine, theirs)]
            if rounded := older_rounded(record, counts):
                odd.append(rounded)
            if odd:
                record["excluded"] = True
                record["problems"].append("left out of the tables: trained with " + ", ".join(odd))


def older_rounded(record, counts):
    """'144 training images (the other seeds: 145: a labelrep before 1570041 rounded --level 0.29
    of 50000 images down to 144)' where the finished run `record` of a fractional --level trained
    on one image fewer than another finished seed of its group (`counts`: theirs) by the older
    rounding, which train.py and sweep.py refuse; else None. Not a vote: the older count is the
    one left out, however many seeds share it."""
    mine = (record["train"] or {}).get("train_images")
    level = record["flags"].get("level", record["level"])
    return next((images_change(mine, count, "the other seeds:", why) for count in sorted(counts)
                 if (why := older_rounding(level, mine, count))), None)


def _most_common(values):
    """The value most of `values` share (the first's on a tie); UNKNOWN where there is none."""
    counts = Counter(values)
    return max(counts, key=lambda v: (counts[v], -values.index(v))) if values else UNKNOWN


def expected_runs(records, grid_file):
    """The runs a complete study holds, and the attack settings each should have.

    Returns (expected runs as key dicts, {run key tuple: a `requested_attacks`-like dict of the
    attack settings it should have, or None}, {run key tuple: train.py's namespace the sweep
    trains it with}, a description). From a sweep grid file if given: its runs, and for each the
    (attack, targeted, protocol, eps) settings the sweep asks attack.py for, so runs outside the
    grid (an extra label, a --label_noise run) are not held to them, and the training flags where
    the grid trains its runs. Else per dataset every combination of the models, labels, levels and
    seeds seen there, each expected to have every attack setting seen in its dataset where any run
    of the dataset was attacked.
    """
    if grid_file:
        return expected_from_grid(grid_file)
    return expected_from_records(records)


def expected_from_grid(grid_file):
    """`expected_runs` from a sweep grid file: its runs, the attack settings and training flags the
    sweep asks of each."""
    import sweep
    from utils.grid import requested_attacks
    opts, runs, scripts, routed = sweep.parse(["--config", str(grid_file), "--dry_run"])
    wanted, asked = {}, {}
    for r in runs:  # as its run directory names it (find_runs): cifar100_coarse, speech_noise0.2
        train = scripts["train"].module.label_defaults(scripts["train"].parse(r.flags() + routed["train"]))
        key = tuple(run_key(train)[k] for k in KEY)  # category_smooth0.1 too
        wanted[key] = None
        if "train" in opts.stages:  # an attack-only grid's sweep checks no training flag (utils.grid.plan)
            asked[key] = train
        if "attack" in opts.stages:
            script = scripts["attack"]
            wanted[key] = requested_attacks(script.parse(r.flags() + routed["attack"]),
                                            script.module)
    return ([dict(zip(KEY, key)) for key in wanted], wanted, asked, f"grid file {grid_file}")


def expected_from_records(records):
    """`expected_runs` without a grid file: per dataset every combination of the values seen there,
    each run with every attack setting seen in its dataset where any run of it was attacked."""
    seen, attacked = values_seen(records)
    settings, eps_labels = attack_settings_seen(records)
    expected = []
    for dataset, values in seen.items():
        for model in sorted(values["model"]):
            for label in sorted(values["label"], key=label_rank):
                for level in sorted(values["level"], reverse=True):
                    for seed in sorted(values["seed"]):
                        expected.append({"dataset": dataset, "model": model, "label": label,
                                         "level": level, "seed": seed})
    wanted = {tuple(r[k] for k in KEY): {"keys": settings[r["dataset"]], "plans": None, "num_images": None,
                                         "eps_labels": eps_labels} if attacked[r["dataset"]] else None
              for r in expected}
    return expected, wanted, {}, "every combination of the values seen"


def values_seen(records):
    """({dataset: {KEY[1:] name: the values the records hold, first seen first}}, {dataset: whether
    any of its runs was attacked})."""
    seen = defaultdict(lambda: {k: [] for k in KEY[1:]})
    attacked = defaultdict(bool)
    for record in records:
        values = seen[record["dataset"]]
        for k in KEY[1:]:
            if record[k] not in values[k]:
                values[k].append(record[k])
        attacked[record["dataset"]] |= record["attack"] is not None
    return seen, attacked


def attack_settings_seen(records):
    """({dataset: the `entry_key`s of every white-box attack entry of its runs}, {(protocol, eps): its
    label}). A transfer attack's (attack.py --transfer_from), of one run against another, is
    expected of no other run (nor of its source)."""
    settings = defaultdict(set)  # every attack setting seen in a dataset is expected of its runs
    eps_labels = {}  # (protocol, eps) -> its label, as attack.py wrote it first
    for record in records:
        if record["attack"]:
            settings[record["dataset"]] |= {entry_key(e) for e in record["attack"]["entries"]
                                            if transfer_source(e) is None}
            for e in record["attack"]["entries"]:
                eps_labels.setdefault(entry_key(e)[2:], e.get("eps_label"))
    return settings, eps_labels


# ---------------------------------------------------------------- numbers


def mean_std(values):
    """(mean, sample std or None for a single value, n) of the non-None values."""
    values = [v for v in values if v is not None]
    if not values:
        return None, None, 0
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None), len(values)


def columns(name, mean_std_n):
    """A statistic's columns in a row: {name}_mean, {name}_std and {name}_n (the seeds it holds)."""
    return dict(zip((f"{name}_mean", f"{name}_std", f"{name}_n"), mean_std_n))


def cell(mean_std_n, scale=100):
    """A statistic (`mean_std`'s) times `scale`, fractions as percentages by default: '61.23 ± 1.00
    (n=3)' or '61.23 (n=1)'; '-' when there is nothing."""
    mean, std, n = mean_std_n
    if n == 0:
        return "-"
    if std is None:
        return f"{mean * scale:.2f} (n=1)"
    return f"{mean * scale:.2f} ± {std * scale:.2f} (n={n})"


def accuracy_rows(records):
    """Clean accuracy per (dataset, model, label, level) over the seeds with results.json."""
    groups = defaultdict(list)
    for record in records:
        if record["train"] and not record["excluded"]:
            groups[tuple(record[k] for k in KEY[:4])].append(record)
    rows = []
    for key in sorted(groups, key=table_order):
        runs = groups[key]
        test = mean_std([r["train"]["test_acc"] for r in runs])
        valid = mean_std([r["train"]["valid_acc"] for r in runs])
        rows.append({**dict(zip(KEY[:4], key)), "n": test[2], "seeds": sorted(r["seed"] for r in runs),
                     **columns("test_acc", test), **columns("valid_acc", valid),
                     "train_images": sorted({r["train"]["train_images"] for r in runs}, key=str),
                     "test_images": sorted({r["train"]["test_images"] for r in runs}, key=str),
                     "epochs": sorted({r["train"]["epochs"] for r in runs}, key=str),
                     "best_epoch_mean": mean_std([r["train"]["best_epoch"] for r in runs])[0],
                     "label_sha256": targets_trained(runs)})
    return rows


def class_accuracy_rows(records):
    """Each class's test accuracy per (dataset, model, label, level) over the seeds of the accuracy
    tables whose confusion.json holds it (`read_classes`; a class without test images in a seed has
    no accuracy there), and those seeds without one, with why: (rows, unmeasured)."""
    groups, unmeasured = defaultdict(list), []
    for record in filter(in_tables, records):
        if isinstance(record["classes"], dict):
            groups[tuple(record[k] for k in KEY[:4])].append(record)
        else:
            unmeasured.append({"run": record["run"], "run_dir": record["run_dir"], "reason": record["classes"]})
    rows = []
    for key in sorted(groups, key=table_order):
        runs = groups[key]
        rows += per_class_rows(dict(zip(KEY[:4], key)), {r["seed"]: r["classes"] for r in runs}, "test_acc",
                               "test_images", targets_trained(runs))
    return rows, unmeasured


def per_class_rows(head, seeds, name, count, label_sha256):
    """A table row's rows per class: `head` (the columns that name the row), the class id and name,
    and the statistic `name` of that class over `seeds` ({seed: {"names": class names or None,
    `name`: a value per class (None: the seed has no image of the class), `count`: a count per
    class}}, each as long as the seed's classes): n and seeds, those where the class has a value,
    `columns`, the class's `count` (a list where seeds differ), and `label_sha256`."""
    rows = []
    for c in range(max(len(values[count]) for values in seeds.values())):
        held = {seed: values for seed, values in seeds.items() if c < len(values[count])}
        stat = mean_std([values[name][c] for values in held.values()])
        rows.append({**head, "class": c,
                     "class_name": one(v["names"][c] for v in held.values() if c < len(v["names"] or ())),
                     "n": stat[2],
                     "seeds": sorted(seed for seed, values in held.items() if values[name][c] is not None),
                     **columns(name, stat), count: sorted({values[count][c] for values in held.values()}),
                     "label_sha256": label_sha256})
    return rows


def class_robust_rows(records):
    """Each class's robust accuracy per `robust_groups` key (a robust row), over the seeds whose
    entry counts its images per class (`class_counts`: of the images of the class, those still
    classified as it after the attack), and the runs of those rows with entries that do not, with
    which: (rows, unmeasured)."""
    groups, rows, lacking = robust_groups(records), [], defaultdict(list)  # lacking: run_dir -> entries
    for key in sorted(groups, key=robust_order):
        seeds = {}
        for record, entry in groups[key]:
            if counts := class_counts(entry):
                seeds[record["seed"]] = {"names": record["attack_classes"], "class_images": counts[0],
                                         "robust_acc": [r / n if n else None for r, n in zip(counts[1], counts[0])]}
            else:
                lacking[record["run_dir"]].append(entry)
        if seeds:
            items = groups[key]
            rows += per_class_rows(robust_head(key, items), seeds, "robust_acc", "class_images",
                                   targets_trained([r for r, _ in items if r["seed"] in seeds]))
    settings = Counter(r["run_dir"] for items in groups.values() for r, _ in items)
    unmeasured = []
    for record in records:  # in the tables' order
        entries = lacking.get(record["run_dir"])
        if not entries:
            continue
        shown = ", ".join(describe_key(entry_key(e), {entry_key(e)[2:]: e.get("eps_label")}) for e in entries[:3])
        more = f" and {len(entries) - 3} more" if len(entries) > 3 else ""
        unmeasured.append({"run": record["run"], "run_dir": record["run_dir"], "reason": (
            f"attacked before attack.py counted robust images per class: {len(entries)} of its "
            f"{settings[record['run_dir']]} settings ({shown}{more}), which attack.py reuses as they are (delete its "
            f"{ATTACK_RESULTS} and attack it again to count them)")})
    return rows, unmeasured


# why the runs of a label that no nearest-target decoder decodes have no target distances to rank
NO_TARGET_DISTANCES = {
    "category": "category decodes by the argmax of its logits, not by the nearest target, and its one-hot "
                "targets lie all one distance apart: no distance to rank",
    "mcr2": "MCR2 regresses no class targets (it decodes by its classes' subspaces)"}


def target_confusion_rows(records, label_dirs=()):
    """Per (dataset, model, label, level), over the seeds of the accuracy tables, Spearman's rho
    between the distance of two classes' targets and their confusion rate (`target_confusion`):
    mean, std and n, each seed's rho (`spearman`, in the seeds' order) and the pairs of classes it
    ranks; and the runs left out, with why (`run_target_confusion`): (rows, unmeasured)."""
    groups, unmeasured, files = defaultdict(list), [], {}
    for record in filter(in_tables, records):
        measured = run_target_confusion(record, files, label_dirs)
        if isinstance(measured, str):
            unmeasured.append({"run": record["run"], "run_dir": record["run_dir"], "reason": measured})
        else:  # records come in the tables' order: a group's seeds by value
            groups[tuple(record[k] for k in KEY[:4])].append((record, measured))
    rows = []
    for key in sorted(groups, key=table_order):
        runs = [record for record, _ in groups[key]]
        rhos = [measured["spearman"] for _, measured in groups[key]]
        rho = mean_std(rhos)
        rows.append({**dict(zip(KEY[:4], key)), "n": rho[2], "seeds": [r["seed"] for r in runs],
                     **columns("spearman", rho), "spearman": rhos,
                     "pairs": one(measured["pairs"] for _, measured in groups[key]),
                     "label_sha256": targets_trained(runs)})
    return rows, unmeasured


def run_target_confusion(record, files, label_dirs):
    """`target_confusion` of a run of the tables, of the targets it trained (`trained_targets`,
    `files` its cache) and its confusion.json's test counts; or a str saying why there is none:
    category and MCR2 (`NO_TARGET_DISTANCES`), no usable confusion.json (`read_classes`), targets
    not recorded or not found."""
    label = split_noise(record["label"])[0]
    if (base := label.partition("_smooth")[0]) in NO_TARGET_DISTANCES:
        return NO_TARGET_DISTANCES[base]
    if isinstance(record["classes"], str):
        return record["classes"]
    if not (sha := targets_trained([record])):
        return "it recorded no label_sha256 (trained before train.py recorded which targets)"
    targets = trained_targets(files, record["dataset"], label, sha, [record], label_dirs)
    return targets if isinstance(targets, str) else target_confusion(targets, record["classes"]["test"])


def target_confusion(targets, test):
    """Over the pairs of classes with test images, Spearman's rho between the distance of their
    targets (C, ...) as the nearest-target decoder measures it (`labels.target_distances`: squared,
    which ranks as the distance does) and their confusion rate in `test` (`pair_rates`):
    {"spearman": rho, "pairs": how many}, or a str saying why nothing ranks. Negative: the classes
    whose targets lie closer are confused more. Distances less than float32's resolution of the
    largest apart tie: the decoder's float32 scores cannot tell them apart (uniform's equally spaced
    targets, stored in float32, lie 1e-7 of the largest apart where they are equally far)."""
    distances = target_distances(targets)[np.triu_indices(len(targets), 1)]
    rates = pair_rates(test)
    kept = ~np.isnan(rates)
    distances, rates = distances[kept], rates[kept]
    if np.ptp(rates) == 0:  # a model that confuses no two classes, say
        return f"its {kept.sum()} pairs of classes all have one confusion rate ({rates[0]:g}): nothing to rank"
    distance_ranks = ranks(distances, np.finfo(np.float32).eps * distances.max())
    if np.ptp(distance_ranks) == 0:
        return "its targets lie all one distance apart: nothing to rank"
    return {"spearman": spearman(distance_ranks, ranks(rates)), "pairs": int(kept.sum())}


def pair_rates(test):
    """The confusion rate of each unordered pair of classes i < j (in `np.triu_indices` order) of
    test counts `test` (C rows of C, row the true class, column the decoded one): the test images
    of i decoded as j and of j decoded as i, over the test images of i and j; nan for a pair
    without test images."""
    counts = np.asarray(test, dtype=np.float64)
    i, j = np.triu_indices(len(counts), 1)
    images = counts.sum(1)
    with np.errstate(invalid="ignore"):  # 0 / 0: a pair without test images
        return (counts[i, j] + counts[j, i]) / (images[i] + images[j])


def ranks(values, tolerance=0.0):
    """The ranks of `values` (n,), 1 for the smallest, values that tie given the mean of the ranks they
    span (Spearman's convention: 10, 20, 20, 30 rank 1, 2.5, 2.5, 4); values tie where each, in
    sorted order, is at most `tolerance` above the one before."""
    order = np.argsort(values, kind="stable")
    ordered = np.asarray(values, dtype=np.float64)[order]
    tie = np.r_[0, np.cumsum(np.diff(ordered) > tolerance)]  # each sorted value's run of ties
    counts = np.bincount(tie)
    out = np.empty(len(ordered))
    out[order] = (np.cumsum(counts) - (counts - 1) / 2)[tie]
    return out


def spearman(x_ranks, y_ranks):
    """Spearman's rank correlation, in [-1, 1], of two rankings of n items (`ranks`, neither all
    alike): Pearson's correlation of the ranks."""
    return float(np.corrcoef(x_ranks, y_ranks)[0, 1])


def targets_trained(runs):
    """The `label_sha256` of the targets a table row's runs trained (one: `exclude_odd_seeds`
    leaves a group's runs those of one file, so a join with label_stats.csv finds the draw they
    trained), 'a/b' where they differ, None where none recorded it (category, MCR2, or trained
    before train.py recorded it)."""
    shas = sorted({sha for r in runs if isinstance(sha := r["fingerprints"].get("label_sha256"), str) and sha})
    return "/".join(shas) or None


def noise_rows(accuracy):
    """Rows of the label-noise table: the accuracy rows of every label trained with --label_noise
    and of the same label without noise, with `label` the base label and `label_noise` the rate."""
    noisy = {(r["dataset"], r["model"], r["level"], split_noise(r["label"])[0]) for r in accuracy
             if split_noise(r["label"])[1] > 0}
    rows = []
    for row in accuracy:
        base, noise = split_noise(row["label"])
        if (row["dataset"], row["model"], row["level"], base) in noisy:
            rows.append({**row, "label": base, "label_noise": noise})
    return sorted(rows, key=lambda r: (r["dataset"], r["model"], -r["level"], label_rank(r["label"]),
                                       r["label_noise"]))


def full_levels(rows):
    """Per (dataset, model): the level of the clean table, 100 if it was run, else the largest."""
    levels = defaultdict(set)
    for row in rows:
        levels[(row["dataset"], row["model"])].add(row["level"])
    return {k: (100 if 100 in v else max(v)) for k, v in levels.items()}


ROBUST_KEY = KEY[:4] + ("attack", "targeted", "protocol", "eps", "num_images", "steps", "step_size",
                       "restarts", "amp")
SETTING = ("num_images", "steps", "restarts", "amp")  # what one table of robust accuracy holds fixed
NO_ACCURACY = "No training results (see the incomplete and missing runs below)."
ROBUST_LEGEND = (
    "Robust accuracy: % of the attacked test images (as many as the heading says) still classified as "
    "their true class after the attack; images misclassified before it count as failures. `clean`: the "
    "same images without attack (the clean table's accuracy is over every test image). Columns are "
    "L-infinity budgets eps in pixel units (x/255), the paper protocol's in its normalised units. "
    "An attack climbs the label's training loss, as the paper's did; `+margin` (attack.py --objective "
    "margin): the decoder's margin instead, the nearest wrong class against the true one; `<category` "
    "(attack.py --transfer_from): a transfer attack, its images crafted against a category run's model "
    "(`<vgg19:category`: a vgg19's) and classified by the row's. "
    "Targeted attack success rate: % of the images classified correctly before the attack whose "
    "prediction became the target class.")


def robust_groups(records):
    """The entries of the robust rows: {`ROBUST_KEY` tuple: [(record, entry), ...], a run's one
    entry (its seed's) per key}, a key per (dataset, model, label, level, attack, targeted,
    protocol, eps) and attack setting (test images, steps, step size, restarts, bf16). A run's
    entries for another setting (attack.py rerun with other --steps or --num_images) are keys of
    their own, not more seeds."""
    groups = defaultdict(list)
    for record in records:
        if not (record["attack"] and record["train"]) or record["excluded"]:
            continue  # the clean table's runs only: finished, and trained as their group
        chosen = {}  # key -> (rank, entry): a run is one seed of its row
        for entry in record["attack"]["entries"]:
            # entries carry their image count and clean accuracy; the file's are the last call's
            entry = {"num_images": record["attack"]["num_images"],
                     "clean_acc": record["attack"]["clean_acc"], **entry}
            attack, targeted, protocol, eps = entry_key(entry)
            step_size = entry.get("step_size")
            key = (*(record[k] for k in KEY[:4]), attack, targeted, protocol, round(eps, 9),
                   entry["num_images"], entry.get("steps"),
                   None if step_size is None else round(step_size, 12), entry.get("restarts"),
                   bool(entry.get("amp")))
            # attack.py --seed S (other targets and starts) or another --data_dir adds an entry of
            # the same setting, and a notebook's float64 attack one of another dtype: the run's own
            # seed's is kept, then the float32 one (the command line's, as the other runs' entries
            # are), then a transfer from a source of the run's seed, else the last written
            rank = (entry.get("seed", record["seed"]) == record["seed"],
                    entry_dtype(entry) == COMMAND_LINE_DTYPE,
                    (entry.get("source") or {}).get("seed", record["seed"]) == record["seed"])
            if rank >= chosen.get(key, ((False, False, False),))[0]:
                chosen[key] = rank, entry
        for key, (_, entry) in chosen.items():
            groups[key].append((record, entry))
    return groups


def robust_order(key):
    """Sort key of a `ROBUST_KEY` tuple, as the robust rows go: per dataset, model, level (from the
    largest), attack and setting, each label's eps in turn."""
    return (key[0], key[1], -key[3], attack_rank(key[4]), key[5], key[6], -(key[8] or 0), str(key[9:]),
            label_rank(key[2]), key[7])


def robust_head(key, items):
    """A robust row's columns that name it: the `ROBUST_KEY` tuple `key`'s, and its eps as attack.py
    wrote it (`items`: its (record, entry) pairs)."""
    return {**dict(zip(ROBUST_KEY, key)), "eps_label": items[0][1].get("eps_label") or eps_text(key[7], key[6])}


def robust_rows(records):
    """Robust accuracy per `robust_groups` key, over seeds. Each row's clean accuracy is over every
    seed attacked in its table (at any eps: a seed without this eps had its clean images counted all
    the same), so a label's is one."""
    groups = robust_groups(records)
    def table_of(key):  # the key less its eps and step size (which follows eps): a table's
        return key[:7] + key[8:10] + key[11:]
    clean = defaultdict(dict)  # table_of(key) -> {seed: clean accuracy}
    for key, items in groups.items():
        clean[table_of(key)].update((r["seed"], e.get("clean_acc")) for r, e in items)
    clean = {table: mean_std(seeds.values()) for table, seeds in clean.items()}  # one for all its eps
    rows = []
    for key in sorted(groups, key=robust_order):
        items = groups[key]
        robust = mean_std([e.get("robust_acc") for _, e in items])
        success = mean_std([e.get("target_success") for _, e in items])
        rows.append({**robust_head(key, items), "n": robust[2], "seeds": sorted(r["seed"] for r, _ in items),
                     **columns("robust_acc", robust), **columns("target_success", success),
                     **columns("clean_acc", clean[table_of(key)]),
                     "label_sha256": targets_trained([r for r, _ in items])})
    return rows


def setting_text(row, step_size=False):
    """What a robust table (or figure panel) holds fixed, in words: the steps of the attacks that
    take them (not FGSM's one) and PGD's restarts, the only attack that restarts."""
    attack = attack_parts(row["attack"])[0]
    text = (counted(row["num_images"], "test image") + (f", steps {row['steps']}" if attack != "fgsm" else "")
            + (f", restarts {row['restarts']}" if attack == "pgd" else "") + (", bf16" if row["amp"] else ""))
    if not step_size:
        return text
    # '?': an entry without its step size (attack.py writes one; well_formed lets one go without)
    step = "?" if row["step_size"] is None else eps_text(row["step_size"], row["protocol"])
    return f"{text}, step size {step}"


def default_step(row):
    """Whether a robust row's step size is attack.py's default for its attack, eps and steps, which
    follows eps (2.5 eps / steps in pixel units; FGSM's is eps)."""
    attack = attack_parts(row["attack"])[0]
    if attack not in ATTACKS or row["step_size"] is None or not row["steps"]:
        return False
    # rel_tol: the row's eps is rounded to 9 decimals
    return math.isclose(row["step_size"], schedule(attack, row["eps"], row["protocol"], row["steps"]).step_size,
                        rel_tol=1e-6)


def robust_table_key(row):
    """What a robust table of tables.md holds fixed besides its setting: dataset, model, level,
    attack, mode and protocol."""
    return row["dataset"], row["model"], row["level"], row["attack"], row["targeted"], row["protocol"]


def robust_tables(robust, key=robust_table_key):
    """Rows grouped into tables, (key(row) + setting) -> rows, one row per label and eps (and class,
    of per-class rows) in each: rows that differ only in step size (attack.py --step_size) get a
    table per step size, but for the rows of attack.py's default step size (`default_step`), which
    stay one table."""
    tables = defaultdict(list)
    for row in robust:
        tables[(*key(row), *(row[k] for k in SETTING))].append(row)
    for name, rows in list(tables.items()):
        if len({(r["label"], r["eps"], r.get("class")) for r in rows}) < len(rows):
            del tables[name]
            for row in rows:
                tables[name if default_step(row) else (*name, row["step_size"])].append(row)
    return tables


def robust_table_order(key):
    """Sort key of a `robust_tables` key of `robust_table_key`'s tables: per dataset, model, level
    (from the largest), attack, mode, protocol and setting."""
    return key[0], key[1], -key[2], attack_rank(key[3]), key[4], key[5], -(key[6] or 0), str(key[7:])


def incomplete_and_missing(base, records, expected, wanted):
    """Runs under `base` with problems (unfinished training, no or partial attack results, no
    attack_examples.png where the grid draws one: `missing_figure`, as sweep.py; each of the last
    three with the error line of a sweep's attack.log, `log_error`) and absent runs.
    wanted: {run key tuple: `requested_attacks`-like dict of the attack settings it should have,
    or None} (see expected_runs)."""
    by_key = {tuple(r[k] for k in KEY): r for r in records}
    incomplete = []
    for record in records:
        reasons = list(record["problems"])
        settings = wanted.get(tuple(record[k] for k in KEY))
        running = record["running"]
        if record["train"] and settings and settings["keys"]:
            # a job at work in the run attacks it (or has just trained it): what it lacks is to come
            now = f"in progress by {running}: " if running else ""
            run_dir = base / record["run_dir"]
            # else a sweep's attack.py that failed says why in its log, as train.log's error is quoted
            error = "" if running else log_error(run_dir, "attack")
            failed = f"; attack.log: {error}" if error else ""
            if record["attack"] is None and not any(ATTACK_RESULTS in p for p in reasons):
                reasons.append(f"{now}no attack results" + (" yet" if running else failed))
            elif record["attack"] is not None:
                images = ((settings["num_images"] or record["train"].get("test_images"))
                          if settings["plans"] else None)
                if missing := missing_note(record["attack"], settings["keys"], settings["plans"], images,
                                           eps_labels=settings["eps_labels"]):
                    reasons.append(f"{now}attack results: {missing}{failed}")
                elif figure := missing_figure(run_dir, settings, best_checkpoint(record, run_dir)):
                    # drawn after the last setting: by the job at work, else attack.py stopped first
                    reasons.append(f"{now}attack results: every setting, but {figure} " + ("yet" if running else
                                   f"(its attack.py stopped before drawing it: attack the run again){failed}"))
        if reasons:
            incomplete.append({"run": record["run"], "run_dir": record["run_dir"], "reasons": reasons,
                               "running": running})
    missing = [{"run": run_name(key), "reason": "no run directory"} for key in expected
               if tuple(key[k] for k in KEY) not in by_key]
    return incomplete, missing


# ---------------------------------------------------------------- writing


def write_csv(put, path, rows, columns):
    """`rows` as a CSV file of `columns`, through `put` (a `file_set`'s)."""
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if row.get(c) is None else
                         " ".join(map(str, row[c])) if isinstance(row.get(c), list) else row[c]
                         for c in columns])
    put(path, lambda f: f.write(utf8(text.getvalue())))


def one(values):
    """Values that are all one value as that value; several as 'a/b' (a group mixing settings)."""
    values = sorted({v for v in values if v is not None})
    return values[0] if len(values) == 1 else "/".join(map(str, values)) if values else "?"


def stats(row, name):
    return row[f"{name}_mean"], row[f"{name}_std"], row[f"{name}_n"]


def stat_cells(find, label, columns, name):
    """The statistic `name` ('test_acc', ...) of find[(label, c)] for each column c, as `cell`
    writes it; '-' where `find` has no such row."""
    return [cell(stats(find[(label, c)], name)) if (label, c) in find else "-" for c in columns]


def headed(section, heading, header, rows):
    """tables.md's lines of a table under its ### `heading`, the table a `Table` captioned
    'section. heading' (a LaTeX caption stands alone, without the page's ## heading above it)."""
    return [f"### {heading}", "", Table(f"{section}. {heading}", header, rows), ""]


def clean_markdown(accuracy):
    """tables.md's clean test accuracy: per dataset, a label by model table at its full level."""
    section = "Clean test accuracy"
    out = [f"## {section}", ""]
    out += [] if accuracy else [NO_ACCURACY, ""]
    levels = full_levels(accuracy)
    for dataset in sorted({r["dataset"] for r in accuracy}):
        rows = [r for r in accuracy if r["dataset"] == dataset and r["level"] == levels[(dataset, r["model"])]]
        models = sorted({r["model"] for r in rows})
        # every label of the dataset: one without a run at this level shows '-', not nothing
        labels = sorted({r["label"] for r in accuracy if r["dataset"] == dataset}, key=label_rank)
        find = {(r["label"], r["model"]): r for r in rows}
        images = one(i for r in rows for i in r["train_images"])
        level_text = ", ".join(sorted({f"level {levels[(dataset, m)]:g}" for m in models}))
        epochs = one(e for r in rows for e in r["epochs"])
        out += headed(section, f"{dataset} ({level_text}: {images} training images, {counted(epochs, 'epoch')})",
                      ["label", *models], [[label, *stat_cells(find, label, models, "test_acc")] for label in labels])
    return out


def per_level(rows):
    """Table rows grouped per (dataset, model, level), as tables.md lists them (level from the
    largest): [((dataset, model, level), its rows), ...]."""
    groups = defaultdict(list)
    for r in rows:
        groups[(r["dataset"], r["model"], r["level"])].append(r)
    return sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1], -kv[0][2]))


CLASS_TABLE_MOST = 20  # the classes a per-class table of tables.md shows: CIFAR-100's 100 are class_accuracy.csv's


def class_markdown(classes):
    """tables.md's per-class test accuracy (`class_accuracy_rows`' rows and unmeasured, `classes`): per
    dataset, model and level, a label by class table, for a dataset of up to CLASS_TABLE_MOST classes,
    then the runs of the accuracy tables left out of it, with why (their seeds are not in its n);
    nothing where no run has its confusion.json."""
    class_rows, unmeasured = classes
    if not class_rows:
        return []
    section = "Per-class test accuracy"
    out = [f"## {section}", "", "Of each class's test images, the share the runs decoded as it (each run's "
           f"{CONFUSION}; class_accuracy.csv).", ""]
    for (dataset, model, level), rows in per_level(class_rows):
        names = {r["class"]: r["class_name"] for r in rows}
        heading = f"{dataset}, {model} (level {level:g})"
        if len(names) > CLASS_TABLE_MOST:
            out += [f"### {heading}", "", f"{len(names)} classes: in class_accuracy.csv.", ""]
            continue
        find = {(r["label"], r["class"]): r for r in rows}
        out += headed(section, heading, ["label", *(names[c] for c in sorted(names))],
                      [[label, *stat_cells(find, label, sorted(names), "test_acc")]
                       for label in sorted({r["label"] for r in rows}, key=label_rank)])
    return out + not_measured(unmeasured)


CLASS_ROBUST_LEGEND = (
    "Of each class's attacked test images (as many as the heading says), the share still classified as "
    "that class after the attack (images misclassified before it count as failures, as in the robust "
    "tables): for each untargeted attack setting, at the largest eps every label of it was attacked at "
    "(each setting at every eps is in class_robust_accuracy.csv).")


def class_robust_markdown(class_robust):
    """tables.md's per-class robust accuracy (`class_robust_rows`' rows and unmeasured, `class_robust`):
    per untargeted attack setting of each dataset, model and level (a robust table), a label by class
    table at its largest eps above 0 that each of its labels has (else its largest), for a dataset of
    up to CLASS_TABLE_MOST classes; then the runs whose entries it lacks, with why; nothing where no
    entry counts its images per class."""
    class_rows, unmeasured = class_robust
    attacked = [r for r in class_rows if not r["targeted"] and r["eps"] > 0]
    if not attacked:
        return []
    section = "Per-class robust accuracy"
    out = [f"## {section}", "", CLASS_ROBUST_LEGEND, ""]
    tables = robust_tables(attacked)
    for key in sorted(tables, key=robust_table_order):
        rows = tables[key]
        labels = sorted({r["label"] for r in rows}, key=label_rank)
        common = set.intersection(*({r["eps"] for r in rows if r["label"] == label} for label in labels))
        eps = max(common or {r["eps"] for r in rows})
        rows = [r for r in rows if r["eps"] == eps]
        names = {r["class"]: r["class_name"] for r in rows}
        heading = robust_heading(key, rows, eps_label=rows[0]["eps_label"])
        if len(names) > CLASS_TABLE_MOST:
            out += [f"### {heading}", "", f"{len(names)} classes: in class_robust_accuracy.csv.", ""]
            continue
        find = {(r["label"], r["class"]): r for r in rows}
        out += headed(section, heading, ["label", *(names[c] for c in sorted(names))],
                      [[label, *stat_cells(find, label, sorted(names), "robust_acc")] for label in labels])
    return out + not_measured(unmeasured)


def not_measured(unmeasured):
    """tables.md's list of the runs a per-class table leaves out, each with why (their seeds are in
    no n of it): `unmeasured`'s {"run", "reason"}s; nothing where there are none."""
    if not unmeasured:
        return []
    return ["Not measured:", ""] + [f"- {markdown_text(u['run'] + ': ' + u['reason'])}" for u in unmeasured] + [""]


TARGET_CONFUSION_LEGEND = (
    "Do classes whose targets lie close get confused more? (the follow-up's overlap between class "
    "targets, per pair of classes.) For each run, over every pair of classes: Spearman's rank "
    "correlation (rho, ties ranked by their mean rank) between the distance of the two classes' targets, "
    "as the nearest-target decoder measures it, and the pair's confusion rate, the test images of "
    f"either decoded as the other over the two classes' test images (its {CONFUSION}); mean ± "
    "sample std over seeds (target_confusion.csv). Negative: closer targets, more confusion; near "
    "0: the distance between two classes' targets does not go with how often they are confused; "
    "positive: the reverse.")


def target_confusion_markdown(target):
    """tables.md's correlation of target distance and confusion (`target_confusion_rows`' rows and
    unmeasured, `target`): per dataset, model and level, a table of each label's rho and pairs, then
    the runs of the accuracy tables left out, with why."""
    rows, unmeasured = target
    section = "Target distance and confusion"
    out = [f"## {section}", "", TARGET_CONFUSION_LEGEND, ""]
    for (dataset, model, level), group in per_level(rows):
        out += headed(section, f"{dataset}, {model} (level {level:g})", ["label", "Spearman's rho", "pairs"],
                      [[r["label"], cell(stats(r, "spearman"), scale=1), str(r["pairs"])]
                       for r in sorted(group, key=lambda r: label_rank(r["label"]))])
    if not rows:
        out += [f"No run with its {CONFUSION} regressed class targets.", ""]
    return out + not_measured(unmeasured)


def level_images(rows):
    """{level: its training images} of accuracy rows, as `one` writes them ('?' where unrecorded)."""
    return {level: one(i for r in rows if r["level"] == level for i in r["train_images"])
            for level in {r["level"] for r in rows}}


def efficiency_markdown(accuracy):
    """tables.md's data efficiency: per dataset and model, a label by training-set level table."""
    section = "Data efficiency: test accuracy per training-set level"
    out = [f"## {section}", ""]
    out += [] if accuracy else [NO_ACCURACY, ""]
    for dataset, model in sorted({(r["dataset"], r["model"]) for r in accuracy}):
        rows = [r for r in accuracy if (r["dataset"], r["model"]) == (dataset, model)]
        images = level_images(rows)
        level_list = sorted(images, reverse=True)
        find = {(r["label"], r["level"]): r for r in rows}
        labels = sorted({r["label"] for r in rows}, key=label_rank)
        out += headed(section, f"{dataset}, {model}",
                      ["label", *(f"{lv:g}% ({images[lv]} images)" for lv in level_list)],
                      [[label, *stat_cells(find, label, level_list, "test_acc")] for label in labels])
    return out


def noise_markdown(accuracy):
    """tables.md's label noise: per dataset, model and level, a label by noise rate table; nothing
    without --label_noise runs."""
    noise = noise_rows(accuracy)
    if not noise:
        return []
    section = "Label noise: test accuracy per fraction of corrupted training labels"
    out = [f"## {section}", "",
           "`--label_noise R` replaced round(R x N) training labels by a random other class; "
           "validation and test labels are clean.", ""]
    for (dataset, model, level), rows in per_level(noise):
        rates = sorted({r["label_noise"] for r in rows})
        find = {(r["label"], r["label_noise"]): r for r in rows}
        labels = sorted({r["label"] for r in rows}, key=label_rank)
        out += headed(section, f"{dataset}, {model}, level {level:g}",
                      ["label", *(f"noise {rate:g}" for rate in rates)],
                      [[label, *stat_cells(find, label, rates, "test_acc")] for label in labels])
    return out


def robust_heading(key, rows, eps_label=None):
    """The heading of the robust table `key` (`robust_tables`') of `rows`: what it holds fixed, and
    `eps_label` where it is of one eps."""
    dataset, model, level, attack, targeted, protocol = key[:6]
    kind = "targeted" if targeted else "untargeted"
    return (f"{dataset}, {model}, level {level:g}: {attack}, {kind}" + (f", eps {eps_label}" if eps_label else "")
            + (", paper protocol" if protocol == "paper" else "")
            + f" ({setting_text(rows[0], step_size=len(key) > 10)})")


def robust_markdown(robust):
    """tables.md's robust accuracy: per attack setting (`robust_tables`), a label by eps table,
    and for a targeted attack its success rates."""
    section = "Robust accuracy under attack"
    out = [f"## {section}", ""]
    out += [ROBUST_LEGEND if robust else "No attack results.", ""]
    tables = robust_tables(robust)
    for key in sorted(tables, key=robust_table_order):
        targeted, rows = key[4], tables[key]
        eps_list = sorted({r["eps"] for r in rows})
        eps_label = {r["eps"]: r["eps_label"] for r in rows}
        labels = sorted({r["label"] for r in rows}, key=label_rank)
        find = {(r["label"], r["eps"]): r for r in rows}
        clean = {r["label"]: r for r in rows}
        heading = robust_heading(key, rows)
        out += headed(section, heading, ["label", "clean", *(eps_label[e] for e in eps_list)],
                      [[label, cell(stats(clean[label], "clean_acc")), *stat_cells(find, label, eps_list, "robust_acc")]
                       for label in labels])
        if targeted:
            success = "Targeted attack success rate (%)"
            out += [f"{success}:", "", Table(f"{success}. {heading}", ["label", *(eps_label[e] for e in eps_list)],
                                             [[label, *stat_cells(find, label, eps_list, "target_success")]
                                              for label in labels]), ""]
    return out


# ---------------------------------------------------------------- label statistics

LABEL_STAT_COLUMNS = ("shape", "entropy", "min_msd", "l2_mean", "l1_mean", "std")  # tables.md's
LABEL_STATS_LEGEND = (
    "Statistics of the class targets each label's runs regressed (`python -m labels.stats --help` "
    "says how each is computed): entropy in bits of a class's values, averaged over classes (the "
    "follow-up's); min_msd, the smallest mean squared distance between two classes' targets; "
    "l2_mean and l1_mean, the mean distance between two classes' targets scaled to [0, 1]; std of "
    "all values. Measured on the label file whose targets are the ones the runs recorded "
    "(config.json's label_sha256), found in report.py's --label_dir, the shipped labels/label_files "
    "or the --label_dir a run trained with; category on its one-hot targets (smoothed as trained), "
    "which it fits by cross-entropy and decodes by argmax, not by regression and nearest target (its "
    "min_msd is no decoding margin); MCR2 regresses no targets. Whether a label's entropy or the "
    "distance between its classes goes with its robustness: label_stats.csv joins "
    "robust_accuracy.csv on dataset, label and label_sha256 (the targets trained), a noisy label's "
    "rows (speech_noise0.2) on the label whose targets they trained (speech; docs/experiments.md's "
    "'Reports' has a snippet).")


def label_stat_rows(records, label_dirs=()):
    """`labels.stats.label_stats` of the targets each label of the tables' runs regressed, a row per
    dataset, label (its noise rates one) and targets trained (label_sha256: two draws of a label are
    two rows), and the labels not measured with why: (rows, unmeasured). A label file counts only
    where its targets are the ones recorded (`trained_targets`)."""
    groups = defaultdict(list)
    for record in records:
        label = split_noise(record["label"])[0]
        if record["train"] and not record["excluded"] and label not in FILELESS_LABELS[1:]:
            groups[(record["dataset"], label)].append(record)
    rows, unmeasured, files = [], [], {}
    for (dataset, label), runs in sorted(groups.items(), key=lambda kv: (kv[0][0], label_rank(kv[0][1]))):
        flags = runs[0]["flags"]
        try:
            num_classes = folder_classes(dataset)
        except UsageError as err:
            unmeasured.append({"dataset": dataset, "label": label, "reason": str(err)})
            continue
        if label.partition("_smooth")[0] == "category":
            stats = category_stats(num_classes, flags.get("smoothing", 0.0))
            if isinstance(stats, str):
                unmeasured.append({"dataset": dataset, "label": label, "reason": stats})
            else:
                rows.append({"dataset": dataset, "label": label, "label_sha256": None, "runs": len(runs),
                             **stats})
            continue
        by_targets = defaultdict(list)
        for record in runs:
            by_targets[targets_trained([record])].append(record)  # None: unrecorded
        if None in by_targets and len(by_targets) == 1:
            unmeasured.append({"dataset": dataset, "label": label, "reason": (
                "its runs recorded no label_sha256 (trained before train.py recorded which targets)")})
        for sha, same in sorted((k, v) for k, v in by_targets.items() if k is not None):
            targets = trained_targets(files, dataset, label, sha, same, label_dirs)
            if isinstance(targets, str):
                unmeasured.append({"dataset": dataset, "label": label, "reason": targets})
            else:
                rows.append({"dataset": dataset, "label": label, "label_sha256": sha, "runs": len(same),
                             **label_stats(targets)})
    return rows, unmeasured


def trained_targets(files, dataset, label, sha256, runs, label_dirs=()):
    """The targets of `label` (no noise rate) that `runs` of `dataset` trained, recorded as
    `sha256`: those of the first label file holding them (`targets_in`, `files` its cache) in
    `label_dirs`, then `LABEL_DIR`, then the --label_dir each run trained with (a folder that has
    gone, or was relative to another working directory, is passed over); else a str saying which
    file was not found where."""
    name = dataset.partition("_")[0]  # its label files': cifar100 for cifar100_coarse
    folders = [*label_dirs, LABEL_DIR, *(trained_folder(r["flags"], "label_dir") for r in runs)]
    targets = targets_in(files, [label_path(name, label, d) for d in folders], sha256)
    if targets is not None:
        return targets
    given = f"--label_dir ({', '.join(map(str, label_dirs))}), " if label_dirs else ""
    return (f"no {name}_{label}.npy with the targets its runs trained (label_sha256 {sha256[:12]}) in "
            f"{given}labels/label_files or the --label_dir its runs trained with; pass the folder holding "
            "it as --label_dir")


def category_stats(num_classes, smoothing):
    """`label_stats` of category's one-hot targets smoothed by `smoothing` (its runs' recorded
    --smoothing), or a str saying why they are not measured."""
    most = most_smoothing(num_classes)
    if not (nonnegative(smoothing) and smoothing <= most):
        return (f"its runs recorded --smoothing {smoothing!r}, not a number in [0, {most:g}] as train.py "
                f"takes for {num_classes} classes")
    try:
        return label_stats(one_hot(num_classes, smoothing))
    except LabelError:  # at the most, (C - 1) / C, every value of every class's target is 1 / C
        return (f"--smoothing {smoothing:g} gives every class the same target (each value 1/{num_classes}), "
                "so there is no distance between classes to measure")


def one_hot(num_classes, smoothing=0.0):
    """Category's targets: the identity, or with label smoothing s the true class 1 - s and each
    other s / (C - 1) (`utils.labelspace.CategorySpace`'s)."""
    eye = np.eye(num_classes)
    return eye * (1 - smoothing) + (1 - eye) * smoothing / (num_classes - 1)


def targets_in(files, paths, sha256):
    """The targets of the first of `paths` that is a readable label file holding targets of
    `sha256` (`targets_sha256`), else None; `files` caches each path's (sha256, targets)."""
    for path in dict.fromkeys(resolved(p) for p in paths):
        if path not in files:
            try:
                targets = read_targets(path) if path.is_file() else None
            except (LabelError, OSError):
                targets = None
            files[path] = (None, None) if targets is None else (targets_sha256(targets), targets)
        if files[path][0] == sha256:
            return files[path][1]
    return None


def label_stats_markdown(measured):
    """tables.md's label statistics (`label_stat_rows`' rows and unmeasured, `measured`): a table
    per dataset, then the labels not measured."""
    rows, unmeasured = measured
    section = "Label statistics"
    out = [f"## {section}", "", LABEL_STATS_LEGEND, ""]
    several = Counter((r["dataset"], r["label"]) for r in rows)
    for dataset in sorted({r["dataset"] for r in rows}):
        out += headed(section, dataset, ["label", *LABEL_STAT_COLUMNS], [
            [r["label"] + (f" ({r['label_sha256'][:8]})" if several[(dataset, r["label"])] > 1 else ""),
             *(value_text(r[c]) for c in LABEL_STAT_COLUMNS)] for r in rows if r["dataset"] == dataset])
    if not rows and not unmeasured:
        out += ["No trained run in the tables has class targets (MCR2 regresses none).", ""]
    if unmeasured:
        out += ["Not measured:", ""] + [f"- {markdown_text(u['dataset'] + ', ' + u['label'] + ': ' + u['reason'])}"
                                        for u in unmeasured] + [""]
    return out


def tables_page(title, base, records, accuracy, robust, measured, classes, class_robust, target, incomplete,
                missing, expected_from, counts):
    """tables.md's lines, each table a `Table` (`tables_markdown` and `tables_latex` write them): what
    was read, the clean, data-efficiency, label-noise, robust, label statistics, per-class,
    per-class robust and target distance and confusion tables (the per-class and target distance
    ones where a run has its confusion.json, the per-class robust one where an entry counts its
    images per class), then the diverged, incomplete and missing runs."""
    directories = counted(counts["run_dirs"], "run directory")
    running = sum(bool(i["running"]) for i in incomplete)
    intro = (f"From {code_span(str(base))}: {directories}, {counts['trained']} trained, "
             f"{counts['attacked']} attacked; {len(incomplete)} incomplete"
             + (f" ({running} in progress)" if running else "")
             + f", {len(missing)} missing (expected runs: {expected_from}).")
    legend = ("Accuracies in %: mean ± sample standard deviation over seeds (n = number of seeds; "
              "n=1 has no deviation). Test accuracy is on the dataset's test split; the paper's "
              "code reported its validation accuracy (in the CSVs as valid_acc).")
    out = [f"# {title}", "", intro, legend, ""]
    out += clean_markdown(accuracy) + efficiency_markdown(accuracy) + noise_markdown(accuracy)
    out += robust_markdown(robust) + label_stats_markdown(measured) + class_markdown(classes)
    out += class_robust_markdown(class_robust)
    out += target_confusion_markdown(target) if classes[0] else []
    out += ["## Diverged runs", "", "Runs whose loss went non-finite (their means above include them, "
            "but for those left out of the tables, as said beside them; a run's test accuracy is of its "
            "best epoch's weights).", ""]
    out += [f"- {code_span(r['run_dir'])}: from epoch {r['diverged_epoch']}"
            + (f"; best epoch {r['train']['best_epoch']}" if r["train"] and r["train"]["best_epoch"] else "")
            # one still training (or stopped) is in no mean yet, which the legend says of the others
            + ("" if in_tables(r) else "; " + ("left out of the tables" if r["excluded"]
                                                 else "in no table, without training results")
               + " (see the incomplete runs)")
            for r in records if r["diverged_epoch"]] or ["None."]
    out += ["", "## Incomplete runs", ""]
    # a reason may quote train.log's error line, any text: it shows as it is, on its line
    out += [f"- {code_span(i['run_dir'])}: {markdown_text('; '.join(i['reasons']))}" for i in incomplete] or ["None."]
    out += ["", "## Missing runs", ""]
    out += [f"- {markdown_text(m['run'] + ': ' + m['reason'])}" for m in missing] or ["None."]
    return out


def tables_markdown(page):
    """tables.md's text of `tables_page`'s lines."""
    return "\n".join(line.markdown() if isinstance(line, Table) else line for line in page) + "\n"


def tables_latex(title, page):
    """tables.tex's text (--latex): the tables of `tables_page`'s lines, in tables.md's order, as
    LaTeX floats (`Table.latex`) for a paper to \\input, after a comment of what it needs."""
    name = " ".join(str(title).splitlines())  # in a comment, which a line break would end
    head = [f"% {name}: the tables of tables.md, written by report.py --latex.",
            "% Needs \\usepackage{booktabs} (\\toprule, \\midrule, \\bottomrule). Each table is a table float;",
            "% a wide one may need \\small or \\resizebox (graphicx) to fit the page."]
    return "\n\n".join(["\n".join(head), *(line.latex() for line in page if isinstance(line, Table))]) + "\n"


def label_styles(labels):
    """Line style per label: a colour per label type, the same in every report (tab10 in
    LABEL_ORDER, then other types by name in tab20's light shades, then round again), a marker
    per type, shifted by one for each ten types, so that a light shade's marker is not its dark
    twin's (lines of one colour family stay apart in greyscale), and for its label-noise
    variants the same colour with another dash pattern (past 8 variants, another marker too), so
    that no two lines of a figure look alike (the follow-up's grids hold some 30 label types)."""
    import matplotlib
    others = sorted({split_noise(label)[0] for label in labels} - set(LABEL_ORDER))
    families = matplotlib.colormaps["tab10"].colors  # tab20's odd colours are their light shades
    palette = families + matplotlib.colormaps["tab20"].colors[1::2]
    dashes = ("-", "--", ":", "-.", (0, (5, 1)), (0, (3, 1, 1, 1, 1, 1)), (0, (1, 3)), (0, (8, 3, 2, 3)))
    markers = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")
    noises = sorted({split_noise(label)[1] for label in labels})
    styles = {}
    for label in labels:
        base, noise = split_noise(label)
        i = LABEL_ORDER.index(base) if base in LABEL_ORDER else len(LABEL_ORDER) + others.index(base)
        k = noises.index(noise)
        styles[label] = {"color": palette[i % len(palette)], "linestyle": dashes[k % len(dashes)],
                         "marker": markers[(i + i // len(families) + 3 * (k // len(dashes))) % len(markers)]}
    return styles


def legend_beside(fig, axes, seeds, title="mean ± s.d. over n seeds"):
    """One legend of the labels drawn on `axes` (a label may be missing from some), in the tables'
    order, each with its number of seeds (`seeds`: label -> the n of its points), right of the
    axes in columns of at most 20 labels; the figure is widened by 1.8 inches a column to hold it
    (constrained layout gives the axes what is left)."""
    lines = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            lines.setdefault(label, handle)
    order = sorted(lines, key=label_rank)
    shown = [f"{label} (n={'-'.join(map(str, sorted({min(seeds[label]), max(seeds[label])})))})"
             for label in order]
    columns = math.ceil(len(order) / 20)
    width, height = fig.get_size_inches()
    fig.set_size_inches(width + 1.8 * columns, height)
    fig.legend([lines[label] for label in order], shown, loc="outside right upper", fontsize=8,
               ncols=columns, title=title, title_fontsize=8)


def plot_line(ax, xs, stats_list, label, style):
    means = [s[0] * 100 for s in stats_list]
    errors = [0 if s[1] is None else s[1] * 100 for s in stats_list]
    if any(errors):
        ax.errorbar(xs, means, yerr=errors, label=label, capsize=3, **style)
    else:
        ax.plot(xs, means, label=label, **style)


FIGURE_DPI = 120
PANELS_PER_ROW = 3  # a robust figure's attack panels: wider reads poorly on a page or a slide
PANEL_TITLE_WIDTH = 40  # characters of a 4.5-inch panel's title, wrapped: a longer line ran into the next one's


def figures(put, out, accuracy, robust, curves, labels, workers=1, figure_format=DEFAULT_FIGURE_FORMAT):
    """Figures in `out`, files of `figure_format` (of FIGURE_FORMATS), through `put` (a `file_set`'s);
    returns their file names (a plan's name and the format's extension). Drawn on
    Figure objects, not through pyplot: a notebook that calls report() keeps its backend and its
    open figures. `curves` as `curve_means` returns them; `labels`: every run's, so that a label
    looks the same in every figure (`label_styles`). With workers > 1, drawn in up to as many
    processes (`in_workers`), into the same bytes."""
    import matplotlib

    styles = label_styles(labels)
    plans = [*robust_figures(robust, styles), *level_figures(accuracy, styles),
             *curve_figures(curves, styles)]
    # a notebook's style too; not its backend (reading that one can switch backends)
    rc = {k: matplotlib.rcParams[k] for k in matplotlib.rcParams if k != "backend"}
    names = [f"{name}.{figure_format}" for name, _, _ in plans]
    with in_workers(workers, len(plans), FIGURES_PER_WORKER, chunksize=1, rc=rc) as pool_map:
        if pool_map is map:  # drawn in this process, straight into the file
            for name, plan in zip(names, plans):
                put(out / name, functools.partial(write_figure, plan, figure_format=figure_format))
        else:
            drawn = pool_map(functools.partial(figure_bytes, figure_format=figure_format), plans)
            for name, content in zip(names, drawn):
                put(out / name, lambda f, content=content: f.write(content))
    return names


def write_figure(plan, file, figure_format):
    """A figure plan, (file name without extension, function returning its Figure, the function's
    arguments), into `file` as `figure_format` (of FIGURE_FORMATS): drawn once, at FIGURE_DPI (a
    PDF's or SVG's points are 1/72 inch whatever it is). (Figure.savefig draws a figure with a
    layout engine twice, once without rendering to lay it out: a third more time for the same file.)"""
    import importlib
    import matplotlib
    backend, options = FIGURE_FORMATS[figure_format]
    canvas = importlib.import_module(f"matplotlib.backends.backend_{backend}").FigureCanvas
    _, draw, args = plan
    fig = draw(*args)
    fig.dpi = FIGURE_DPI
    with matplotlib.rc_context(FIGURE_RC):
        getattr(canvas(fig), f"print_{figure_format}")(file, **options)


def figure_bytes(plan, figure_format):
    """`write_figure`'s file as bytes (a worker process's, for the report's process to write)."""
    file = io.BytesIO()
    write_figure(plan, file, figure_format)
    return file.getvalue()


@contextlib.contextmanager
def in_workers(workers, count, least, chunksize, rc=None):
    """A `map` for `count` tasks: the builtin, or with workers > 1, the one of a pool of up to
    that many processes (no more than the CPU cores, and each given `least` tasks or more; tasks
    go to them `chunksize` at a time), results in order; `rc`: matplotlib settings for them (the
    caller's). Spawned, not forked: a caller's threads (a notebook's) cannot leave a lock held in a
    copy of itself. Ctrl-C or an error in the block ends them after their task at hand, and the
    block's error is reported, not one from each; a worker killed is a UsageError; a report killed
    (`timeout`, `kill`, the OOM killer) ends its workers too (`start_worker`). Where processes
    cannot share a queue (a sandbox without POSIX semaphores), the builtin too."""
    workers = min(workers, len(cores()), count // least)
    pool = None
    if workers > 1:
        try:
            from concurrent.futures import ProcessPoolExecutor
            from multiprocessing import get_context
            pool = ProcessPoolExecutor(workers, get_context("spawn"), initializer=start_worker,
                                       initargs=(rc,))
        except (OSError, ImportError):
            pass
    if pool is None:
        yield map
        return

    def pool_map(function, *items):
        # map starts the workers; they inherit SIGINT blocked, so Ctrl-C is the report's alone (it
        # ends them), and one pressed meanwhile reaches the report when it unblocks it
        block = getattr(signal, "pthread_sigmask", None)
        mask = block(signal.SIG_BLOCK, {signal.SIGINT}) if block else None
        try:
            return pool.map(function, *items, chunksize=chunksize)
        finally:
            if block:
                block(signal.SIG_SETMASK, mask)
    from concurrent.futures.process import BrokenProcessPool
    try:
        yield pool_map
    except BrokenProcessPool:  # the files written so far are the earlier report's still (`file_set`)
        raise UsageError(f"a worker process of the {workers} ended without its result (killed, out of "
                         "memory?); rerun with fewer --workers (1: none)") from None
    finally:
        pool.shutdown(cancel_futures=True)


def start_worker(rc):
    """A worker process's start: matplotlib's settings `rc` (the caller's, or None), and a thread
    that ends the worker once the report's process is gone. A worker waits for its next task
    forever otherwise: killed reports left their workers behind, ~100 MB each, holding the
    report's stdout open (`out=$(timeout 60 python report.py ...)` never returned)."""
    from multiprocessing import parent_process
    parent = parent_process()
    if parent is not None:
        threading.Thread(target=lambda: (parent.join(), os._exit(1)), daemon=True).start()
    if rc is not None:
        import matplotlib
        matplotlib.rcParams.update(rc)


def robust_figures(robust, styles):
    """Plans (`write_figure`'s) of robust accuracy against eps: a figure per dataset, model, level,
    targeted or not and protocol; `styles`: a line style per label (`label_styles`)."""
    figures_rows = defaultdict(list)
    for row in robust:
        figures_rows[(row["dataset"], row["model"], row["level"], row["targeted"], row["protocol"])].append(row)
    for key, rows in sorted(figures_rows.items(), key=lambda kv: str(kv[0])):
        dataset, model, level, targeted, protocol = key
        name = (f"robust_{dataset}_{model}_level{level:g}_{'targeted' if targeted else 'untargeted'}"
                + ("_paper" if protocol == "paper" else ""))
        yield name, robust_figure, (key, rows, styles)


def attack_title(attack):
    """An attack's name in a figure title: "pgd+margin" -> "PGD (margin objective)", "pgd<category" ->
    "PGD from category" (a transfer attack's images, crafted against a category run)."""
    name, objective = attack_parts(attack)
    source = attack.partition(TRANSFER)[2]
    return (ATTACK_TITLES.get(name, name) + (f" ({objective} objective)" if objective else "")
            + (f" from {source}" if source else ""))


def panel_title(panel, rows, targeted):
    """The title of a robust figure's panel `panel` (a `robust_tables` key: its attack and setting)
    of `rows`: the attack (`attack_title`), white-box or transfer, over the setting it holds fixed
    (`setting_text`: test images, steps, restarts; the step size where the attack has panels of
    several), as a robust table's heading says it. Every panel names it: a transfer panel ("PGD
    from category") without it could not be told apart from the white-box panel of another
    setting beside it, nor compared with the one of its own."""
    setting = setting_text(rows[0], step_size=len(panel) > 1 + len(SETTING))
    return (f"{attack_title(panel[0])}{' targeted' if targeted else ''}\n"
            + textwrap.fill(setting, PANEL_TITLE_WIDTH))  # wrapped: a long one ran into its neighbour's


def robust_figure(key, rows, styles):
    """The figure of `robust_figures`' key (dataset, model, level, targeted, protocol) and rows: a
    panel per attack (and setting)."""
    from matplotlib.figure import Figure

    dataset, model, level, targeted, protocol = key
    # pixel budgets are drawn in 1/255 steps, the paper protocol's in its normalised units
    scale, units = (1, "normalised units") if protocol == "paper" else (255, "x/255")
    # a panel per attack and setting, each titled with its setting (`panel_title`)
    panels = robust_tables(rows, lambda r: (r["attack"],))
    panel_keys = sorted(panels, key=lambda k: (attack_rank(k[0]), -(k[1] or 0), str(k[2:])))
    # at most PANELS_PER_ROW panels a row: the grid's five in one row made a 24-inch strip
    columns = min(len(panel_keys), PANELS_PER_ROW)
    rows_of_panels = math.ceil(len(panel_keys) / columns)
    fig = Figure(figsize=(4.5 * columns, 3.8 * rows_of_panels), layout="constrained")
    axes = fig.subplots(rows_of_panels, columns, squeeze=False).ravel()
    for ax in axes[len(panel_keys):]:
        ax.remove()  # the last row's spare places
    axes = axes[:len(panel_keys)]
    seeds = defaultdict(set)
    for ax, panel in zip(axes, panel_keys):
        panel_rows = panels[panel]
        for label in sorted({r["label"] for r in panel_rows}, key=label_rank):
            line = sorted((r for r in panel_rows if r["label"] == label), key=lambda r: r["eps"])
            xs = [r["eps"] * scale for r in line]
            ys = [stats(r, "robust_acc") for r in line]
            if xs[0] > 0 and line[0]["clean_acc_mean"] is not None:  # start from the clean point
                xs, ys = [0.0] + xs, [stats(line[0], "clean_acc")] + ys
            plot_line(ax, xs, ys, label, styles[label])
            seeds[label].update(y[2] for y in ys)
        ax.set(title=panel_title(panel, panel_rows, targeted), xlabel=f"eps ({units})",
               ylabel="robust accuracy (%)", ylim=(0, 100))
        ax.grid(alpha=0.3)
    legend_beside(fig, axes, seeds)
    fig.suptitle(f"{dataset}, {model}, level {level:g}" + (", paper protocol" if protocol == "paper" else ""))
    return fig


def level_figures(accuracy, styles):
    """Plans (`write_figure`'s) of test accuracy against the training-set level: a figure per dataset
    and model, of its labels trained at two levels or more (a label run at one level alone is a
    point among the others' at that level, a line of nothing: it is in the tables)."""
    levels = defaultdict(set)
    for r in accuracy:
        levels[(r["dataset"], r["model"], r["label"])].add(r["level"])
    for dataset, model in sorted({(r["dataset"], r["model"]) for r in accuracy}):
        rows = [r for r in accuracy if (r["dataset"], r["model"]) == (dataset, model)
                and len(levels[(dataset, model, r["label"])]) >= 2]
        if rows:
            yield f"levels_{dataset}_{model}", level_figure, (dataset, model, rows, styles)


def level_figure(dataset, model, rows, styles):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 4), layout="constrained")
    ax = fig.subplots()
    seeds = defaultdict(set)
    for label in sorted({r["label"] for r in rows}, key=label_rank):
        line = sorted((r for r in rows if r["label"] == label), key=lambda r: r["level"])
        plot_line(ax, [r["level"] for r in line], [stats(r, "test_acc") for r in line], label, styles[label])
        seeds[label].update(r["test_acc_n"] for r in line)
    images = level_images(rows)
    # a level is a share of the whole training split, but level 100 is what the validation split
    # leaves (4170 of the subset's 5170 images): said under the axis, as the tables' header does
    whole = f"\n(100: the {images[100]} images beside the validation split)" if 100 in images else ""
    ax.set(xscale="log", xlabel="training data (% of the training split)" + whole, ylabel="test accuracy (%)",
           title=f"{dataset}, {model}: accuracy against data level")
    levels = sorted(images)
    ax.set_xticks(levels, [f"{level:g}" for level in levels])  # the levels run, not powers of ten
    ax.minorticks_off()
    ax.grid(alpha=0.3)
    legend_beside(fig, [ax], seeds)
    fig.draw_without_rendering()  # laid out: where its tick labels fall
    hide_crowded(ax.get_xticklabels())
    return fig


def hide_crowded(labels):
    """Hides each of a laid-out axis's tick labels (left to right) that would touch the next one
    shown right of it, its tick kept: on a log axis levels 80 and 100 read "80100". From the right
    end, so that the largest level (100) keeps its number."""
    shown = None
    for label in reversed(labels):
        box = label.get_window_extent()
        space = label.get_fontsize() * label.figure.dpi / 72 / 2  # half an em between two labels
        if shown is not None and box.x1 + space > shown.x0:
            label.set_visible(False)
        else:
            shown = box


def curve_figures(curves, styles):
    """Plans (`write_figure`'s) of validation accuracy per epoch, the mean over seeds (`curve_means`'):
    a figure per dataset, model and level."""
    for (dataset, model, level), by_label in sorted(curves.items()):
        yield (f"curves_{dataset}_{model}_level{level:g}", curve_figure,
               (dataset, model, level, by_label, styles))


def curve_figure(dataset, model, level, by_label, styles):
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(5.5, 4), layout="constrained")
    ax = fig.subplots()
    for label in sorted(by_label, key=label_rank):
        values = by_label[label]["valid_acc"]
        style = styles[label] | {"markevery": max(1, len(values) // 10), "markersize": 4}  # ~10 a line
        ax.plot(range(1, len(values) + 1), [math.nan if v is None else v * 100 for v in values],
                label=label, **style)
    ax.set(xlabel="epoch", ylabel="validation accuracy (%)", title=f"{dataset}, {model}, level {level:g}")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    ax.grid(alpha=0.3)
    legend_beside(fig, [ax], {label: {values["n"]} for label, values in by_label.items()},
                  title="mean over n seeds")
    return fig


def curve_means(records):
    """{(dataset, model, level): {label: {"valid_acc": mean validation accuracy per epoch over
    seeds, "n": the seeds}}}.

    Epoch e is averaged over the seeds that reached it with a validation accuracy, so an
    unfinished run shortens nothing and a malformed metrics line loses that epoch of that seed
    alone; None where no seed has one (--valid_size 0 has none at all: no curve).
    """
    curves = defaultdict(lambda: defaultdict(list))
    for record in records:
        if any(v is not None for v in record["curve"]) and not record["excluded"]:
            curves[(record["dataset"], record["model"], record["level"])][record["label"]].append(record["curve"])
    out = {}
    for key, by_label in curves.items():
        out[key] = {}
        for label, runs in by_label.items():
            epochs = [[c[e] for c in runs if len(c) > e and c[e] is not None]
                      for e in range(max(len(c) for c in runs))]
            out[key][label] = {"valid_acc": [statistics.fmean(values) if values else None for values in epochs],
                               "n": len(runs)}
    return out


def report(base_dir, out_dir, grid=None, title="Results", draw=True, workers=1, label_dirs=(),
           figure_format=DEFAULT_FIGURE_FORMAT, latex=False):
    """Read every run under base_dir and write the report to out_dir; returns the summary dict.
    draw: the figures too, files of `figure_format` (of FIGURE_FORMATS). latex: tables.tex too.
    workers > 1 reads the runs and draws the figures in up to that many processes (`in_workers`),
    spawned: a script that passes it calls report() under `if __name__ == "__main__":`, as
    multiprocessing requires (report.py passes its --workers, REPORT_WORKERS by default).
    `label_dirs`: folders of the label files the runs trained with (`label_stat_rows`)."""
    choice("figure_format", figure_format, FIGURE_FORMATS)  # a notebook's, said before the runs are read
    # an --out it cannot use is the command line's UsageError, in a notebook too
    with os_errors_as_usage({"--out": out_dir}):
        return _report(base_dir, out_dir, grid, title, draw, workers, label_dirs, figure_format, latex)


def _report(base_dir, out_dir, grid, title, draw, workers, label_dirs, figure_format, latex):
    """`report`, its OSErrors as they come."""
    base, out = Path(base_dir), Path(out_dir)
    records = read_runs(base, grid, workers)
    exclude_duplicates(records)
    expected, wanted, asked, expected_from = expected_runs(records, grid)
    exclude_off_grid(records, asked)
    exclude_odd_seeds(records, wanted if grid else ())
    accuracy = accuracy_rows(records)
    robust = robust_rows(records)
    measured = label_stat_rows(records, label_dirs)
    classes = class_accuracy_rows(records)
    class_robust = class_robust_rows(records)
    target = target_confusion_rows(records, label_dirs)
    incomplete, missing = incomplete_and_missing(base, records, expected, wanted)
    counts = {"run_dirs": len(records), "trained": sum(r["train"] is not None for r in records),
              "attacked": sum(r["attack"] is not None for r in records)}
    out.mkdir(parents=True, exist_ok=True)
    curves = curve_means(records)
    summary = {"base_dir": str(base_dir), "expected_runs": expected_from, **counts,
               "clean_accuracy": clean_rows(accuracy), "data_efficiency": accuracy,
               "label_noise": noise_rows(accuracy), "robust_accuracy": robust, "label_stats": measured[0],
               "label_stats_unmeasured": measured[1], "class_accuracy": classes[0],
               "class_accuracy_unmeasured": classes[1], "class_robust_accuracy": class_robust[0],
               "class_robust_accuracy_unmeasured": class_robust[1], "target_confusion": target[0],
               "target_confusion_unmeasured": target[1], "curves": curve_rows(curves),
               "runs": [{**{k: r[k] for k in ("run", "run_dir", *KEY, "epochs", "diverged_epoch", "train",
                                              "attack", "problems")}, "label_sha256": targets_trained([r]),
                         "in_tables": in_tables(r)} for r in records],
               "incomplete": incomplete, "missing": missing}
    page = tables_page(title, base_dir, records, accuracy, robust, measured, classes, class_robust, target,
                       incomplete, missing, expected_from, counts)
    # tables.md, and with --latex its tables (the same `Table`s) as tables.tex
    texts = {"tables.md": tables_markdown(page), **({"tables.tex": tables_latex(title, page)} if latex else {})}
    # One report at a time in --out: two at once left a mix of both reports' files, or one deleted a
    # file that the other's summary.json lists (each removes the files of the summary.json it read
    # that it did not write); a second waits, then replaces the first's files. Each reads the
    # earlier report's files there as the last one left them, not as one writes them meanwhile.
    with taking_turns(out, REPORT_LOCK, REPORT_TEMPORARY, "report.py"):
        earlier = earlier_summary(out)
        # one set: a failure part way (a full disk) leaves the earlier report's files as they were
        with file_set() as put:
            csvs = write_csvs(put, out, summary, records)
            for name, text in texts.items():
                put(out / name, lambda f, text=text: f.write(utf8(text)))
            written = (figures(put, out, accuracy, robust, curves, [r["label"] for r in records], workers,
                               figure_format) if draw else [])
            summary["files"] = [*texts, *csvs, *written]
            # --no_figures: an earlier report's figures left in place, for a later report to remove
            summary["kept_figures"] = [] if draw else [name for name in earlier
                                                       if is_figure(name) and (out / name).is_file()]
            put(out / SUMMARY, lambda f: dump_json(f, summary, indent=1))
        remove_stale(out, earlier, summary["files"], figures_too=draw)
    return summary


def read_runs(base, grid, workers):
    """The record (`read_run`) of every run directory under `base`, read in up to `workers`
    processes, in the tables' order (`table_order`); a UsageError where `base` is no folder, or
    holds no run and no `grid` is given."""
    if not base.is_dir():
        raise UsageError(f"--base_dir {base} is not a directory")
    runs = find_runs(base)
    if not runs and not grid:  # with a grid, a report of the runs still missing is one
        above = enclosing_base_dir(base)
        within = f"; {base} is a folder inside that layout: pass --base_dir {above}" if above else ""
        raise UsageError(f"no run directories under {base} (the layout of train.py's --base_dir: "
                         f"{LAYOUT_TEXT}){within}")
    with in_workers(workers, len(runs), RUNS_PER_WORKER, chunksize=64) as pool_map:
        records = list(pool_map(read_run, [base] * len(runs), runs, runs.values()))
    # runs.csv, summary.json and tables.md's lists of runs in the tables' order, not their paths'
    return sorted(records, key=lambda r: table_order(tuple(r[k] for k in KEY)))


def clean_rows(accuracy):
    """The rows of `accuracy` at their (dataset, model)'s full level: the clean accuracy's."""
    levels = full_levels(accuracy)
    return [r for r in accuracy if r["level"] == levels[(r["dataset"], r["model"])]]


def curve_rows(curves):
    """`curve_means`' curves as summary.json lists them: one row per dataset, model, level and label."""
    return [{"dataset": k[0], "model": k[1], "level": k[2], "label": label, **values}
            for k, by_label in sorted(curves.items()) for label, values in by_label.items()]


def earlier_summary(out):
    """The files the report in `out` before this one lists in its summary.json (`earlier_files`; []
    where there is none); a UsageError where it is another program's. The rest of it is let go at
    once: kept, 600 runs' 34 MB summary.json held 80 MB to the end of the report."""
    there, earlier = read_json_file(out / SUMMARY, SUMMARY_LIMIT)
    if isinstance(earlier, OSError):  # summary.json of mode 000, a folder: it says which files are ours
        raise earlier
    # another program's summary.json: replacing it, and deleting the files its "files" names,
    # would lose someone's work; a report's has held these keys since its first
    ours = isinstance(earlier, dict) and {"expected_runs", "files"} <= earlier.keys()
    if there and not ours:
        raise UsageError(f"{out / SUMMARY} is no report's summary.json (no expected_runs and files); "
                         "choose another --out, or remove it")
    return earlier_files(earlier)


def in_tables(record):
    """Whether a run's test accuracy is one of its group's seeds (`accuracy_rows`'), which an
    incomplete run's is where it finished training and was not left out (attack settings or its
    config.json missing), as its status alone does not tell: runs.csv's and summary.json's
    `in_tables`."""
    return bool(record["train"]) and not record["excluded"]


def write_csvs(put, out, summary, records):
    """The CSV files of `summary`'s accuracy tables (`report`'s) and of its runs, a row per record
    of `records` with its status, into `out` through `put` (a `file_set`'s); returns their names."""
    accuracy_columns = ["dataset", "model", "label", "level", "n", "seeds", "test_acc_mean", "test_acc_std",
                        "valid_acc_mean", "valid_acc_std", "valid_acc_n", "train_images", "test_images",
                        "epochs", "best_epoch_mean", "label_sha256"]
    noise_columns = accuracy_columns[:3] + ["label_noise"] + accuracy_columns[3:]
    robust_columns = [
        "dataset", "model", "label", "level", "attack", "targeted", "protocol", "eps", "eps_label", "n",
        "seeds", "robust_acc_mean", "robust_acc_std", "target_success_mean", "target_success_std",
        "target_success_n", "clean_acc_mean", "clean_acc_std", "clean_acc_n", "num_images", "steps",
        "step_size", "restarts", "amp", "label_sha256"]
    class_columns = ["dataset", "model", "label", "level", "class", "class_name", "n", "seeds", "test_acc_mean",
                     "test_acc_std", "test_images", "label_sha256"]
    class_robust_columns = [*robust_columns[:9], "class", "class_name", "n", "seeds", "robust_acc_mean",
                            "robust_acc_std", "class_images", *robust_columns[19:]]
    target_columns = ["dataset", "model", "label", "level", "n", "seeds", "spearman_mean", "spearman_std", "spearman",
                      "pairs", "label_sha256"]
    run_columns = ["dataset", "model", "label", "level", "seed", "status", "test_acc", "epochs_done", "epochs",
                   "diverged_epoch", "run_dir", "label_sha256", "in_tables", "reasons"]
    unfinished = {i["run_dir"]: i["reasons"] for i in summary["incomplete"]}
    run_rows = [{**r, "status": "incomplete" if r["run_dir"] in unfinished else "complete",
                 "test_acc": (r["train"] or {}).get("test_acc"), "epochs_done": len(r["curve"]),
                 "label_sha256": targets_trained([r]), "in_tables": in_tables(r),
                 "reasons": "; ".join(unfinished.get(r["run_dir"], []))}
                for r in records]
    files = [("clean_accuracy.csv", summary["clean_accuracy"], accuracy_columns),
             ("data_efficiency.csv", summary["data_efficiency"], accuracy_columns),
             *([("label_noise.csv", summary["label_noise"], noise_columns)] if summary["label_noise"] else []),
             ("robust_accuracy.csv", summary["robust_accuracy"], robust_columns),
             *([("label_stats.csv", summary["label_stats"], ["dataset", "label", "label_sha256", "runs",
                                                              *STAT_COLUMNS])] if summary["label_stats"] else []),
             *([("class_accuracy.csv", summary["class_accuracy"], class_columns)] if summary["class_accuracy"] else []),
             *([("class_robust_accuracy.csv", summary["class_robust_accuracy"], class_robust_columns)]
               if summary["class_robust_accuracy"] else []),
             *([("target_confusion.csv", summary["target_confusion"], target_columns)]
               if summary["target_confusion"] else []),
             ("runs.csv", run_rows, run_columns)]
    for name, rows, columns in files:
        write_csv(put, out / name, rows, columns)
    return [name for name, _, _ in files]


def earlier_files(earlier):
    """The report files an earlier report's summary.json (`earlier`, parsed) lists: those it wrote
    and, where it was made with --no_figures, the figures of the one before it that it kept."""
    listed = [name for key in ("files", "kept_figures") if isinstance(earlier, dict)
              and isinstance(names := earlier.get(key), list) for name in names]
    return list(dict.fromkeys(n for n in listed if isinstance(n, str) and REPORT_FILE.fullmatch(n)))


def is_figure(name):
    """Whether a report's file name is a figure's, of any format (FIGURE_FORMATS): an earlier
    report's may be of another --figure_format than this one's."""
    return Path(name).suffix[1:] in FIGURE_FORMATS


def remove_stale(out, earlier, files, figures_too=True):
    """Delete the files an earlier report in `out` wrote or kept (`earlier`: those its summary.json
    lists) that this one did not write (a figure of runs since deleted, label_noise.csv without
    noise runs now): beside this report's files they would pass for its own. Without figures_too
    (--no_figures), the earlier figures stay as they are."""
    for name in earlier:
        if name not in files and (figures_too or not is_figure(name)):
            (out / name).unlink(missing_ok=True)


def grid_train_flags(grid_file):
    """train.py's flags in a sweep of `grid_file` (its defaults where the grid sets none): its
    --base_dir and --label_dir are the report's defaults."""
    import sweep
    _, _, scripts, routed = sweep.parse(["--config", str(grid_file), "--dry_run"])
    return scripts["train"].parse(routed["train"])


def main(argv=None):
    args = build_parser().parse_args(argv)
    grid_flags = grid_train_flags(args.grid) if args.grid else None
    grid_base = grid_flags.base_dir if grid_flags else None
    base_dir = args.base_dir or grid_base or SHARED["base_dir"]["default"]
    label_dirs = args.label_dir or ([grid_flags.label_dir] if grid_flags else [])
    check_folder_names("--out", args.out)  # not 'File name too long' once every run was read
    if not args.base_dir and grid_base and not Path(grid_base).is_absolute() and not Path(grid_base).is_dir():
        # was '--base_dir outputs/x is not a directory': a flag not given, a path read from elsewhere
        raise UsageError(f"the grid's --base_dir {grid_base} is not a directory under {Path.cwd()}: a grid "
                         "file's paths are relative to the directory its sweep runs in; run report.py "
                         "there (once the sweep has trained a run), or pass --base_dir")
    for folder in args.label_dir or []:
        if not Path(folder).is_dir():
            raise UsageError(f"--label_dir {folder} " + ("is not a folder" if Path(folder).exists()
                                                         else "does not exist"))
    summary = report(base_dir, args.out, args.grid, args.title, draw=not args.no_figures,
                     workers=args.workers, label_dirs=label_dirs, figure_format=args.figure_format,
                     latex=args.latex)
    if grid_base and not summary["run_dirs"] and resolved(base_dir) != resolved(grid_base):
        log(f"warning: no run directories under --base_dir {base_dir}; the grid's sweep trains its runs "
            f"under {grid_base} (its --base_dir; leave out --base_dir to read them there)")
    # resolved, as the paths train.py and attack.py print: a notebook's directory is rarely the job's
    line = {"out": str(resolved(args.out)), "runs": summary["run_dirs"], "trained": summary["trained"],
            "attacked": summary["attacked"], "incomplete": len(summary["incomplete"]),
            # of them, those a job works on now: the sweep is still going, not stopped short of them
            "running": sum(bool(i["running"]) for i in summary["incomplete"]),
            "missing": len(summary["missing"]), "files": [*summary["files"], SUMMARY]}
    print_json(line)
    return summary


if __name__ == "__main__":
    # main of the module `report`, not of `__main__`: worker processes find its functions by that
    # name whatever ran this file (python, python -m cProfile)
    from report import main as report_main
    sigterm_as_interrupt()  # killed at once, it left its workers and .tables.md.*.tmp in --out
    run_cli(report_main)
