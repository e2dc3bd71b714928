"""sweep.py: grid expansion, flag routing, skipping, the SLURM array script (its task body by hand,
then a real single-node SLURM with a requeue), and --local runs with their logs and failures."""
import argparse
import csv
import errno
import io
import json
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import types
from pathlib import Path

import numpy as np
import pytest

import sweep
from architecture import ARCHITECTURES
from conftest import REPO, last_json, run_importing, run_script
from utils.errors import UsageError, call_cli
from utils.grid import (ATTACK_RESULTS, LAST_CHECKPOINT, Run, Task, attack_state, eps_text, missing_entries,
                        missing_note, parse_level, requested_attacks, well_formed)
from utils.runs import best_checkpoint_name, run_directory

# Tiny attacks: one setting on 20 images, no example figure.
ATTACK_FLAGS = ["--num_images", "20", "--attacks", "fgsm", "--epsilons", "8/255", "--targeted", "no",
                "--examples", "0"]


def tiny(data_dir, label_dir, base_dir, epochs=1, *extra):
    """Pass-through flags for a tiny run on the conftest data (routed to train.py and attack.py)."""
    return ["--data_dir", str(data_dir), "--label_dir", str(label_dir), "--base_dir", str(base_dir),
            "--epochs", str(epochs), "--valid_size", "50", "--device", "cpu",
            "--train_args", "--batch_size 64", *extra]


def plain_env():
    """The environment without SLURM's variables, so a task body never talks to a real cluster."""
    return {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}


def sweep_lines(capsys, argv):
    sweep.main(argv)
    return capsys.readouterr().out.splitlines()


# ---------------------------------------------------------------- grid and flags


def test_grid_order_repeats_and_config_files(tmp_path):
    opts, runs, _, _ = sweep.parse(["--labels", "speech", "category", "speech", "--levels", "100", "25",
                                    "--seeds", "7", "77", "--models", "resnet32", "vgg19", "--dry_run"])
    names = [r.name for r in runs]
    assert len(names) == 2 * 2 * 2 * 2 and names[:3] == [
        "cifar10/resnet32/speech/level100/seed7", "cifar10/resnet32/speech/level100/seed77",
        "cifar10/resnet32/speech/level25/seed7"]
    assert names[8] == "cifar10/vgg19/speech/level100/seed7"  # model varies slower than label
    assert opts.stages == ["train", "attack"]
    grid = {"labels": ["speech", "category"], "levels": [100, 25], "seeds": [7, 77],
            "models": ["resnet32", "vgg19"], "stages": "train", "args": ["--epochs", "3"]}
    (tmp_path / "grid.json").write_text(json.dumps(grid))
    (tmp_path / "grid.yaml").write_text("labels: [speech, category]\nlevels: [100, 25]\nseeds: [7, 77]\n"
                                        "models: [resnet32, vgg19]\nstages: train\nargs: --epochs 3\n")
    for name in ("grid.json", "grid.yaml"):
        opts, from_file, _, routed = sweep.parse(["--config", str(tmp_path / name), "--dry_run"])
        assert [r.name for r in from_file] == names
        assert opts.stages == ["train"] and routed["train"] == ["--epochs", "3"]
    _, runs, _, _ = sweep.parse(["--config", str(tmp_path / "grid.yaml"), "--seeds", "5", "--dry_run"])
    assert {r.seed for r in runs} == {5}  # the command line wins over the file


def test_a_value_an_axis_gives_twice_is_said(tmp_path, capsys):
    """`seeds: [1, 1]` (a slip for [1, 2] more often than meant) ran seed 1 once without a word, as
    `--labels speech speech.npy` did speech: each axis that gives a value twice, as read (25 and
    25.0 are one level), is a warning naming the grid file and key, or the flag, as attack.py's
    for its lists; the grid holds the run once."""
    (tmp_path / "grid.yaml").write_text("seeds: [1, 1]\nlevels: [25, 25.0, 100]\n")
    base = ["--base_dir", str(tmp_path / "runs"), "--stages", "train", "--dry_run"]
    sweep.main(["--config", str(tmp_path / "grid.yaml"), "--labels", "speech", "category", "speech.npy", *base])
    out, err = capsys.readouterr()
    assert [line.split()[1] for line in out.splitlines()[1:-2]] == [
        f"cifar10/resnet32/{label}/level{level}/seed1" for label in ("speech", "category") for level in (25, 100)]
    grid = tmp_path / "grid.yaml"
    assert err == "".join(f"warning: {name} lists {value} more than once; the grid holds each run once\n"
                          for name, value in (("--labels", "speech (also as speech.npy)"),
                                              (f"{grid}: levels", "25 (also as 25.0)"), (f"{grid}: seeds", "1")))
    sweep.main(["--config", str(grid), "--seeds", "1", "2", "--levels", "25", *base])
    assert capsys.readouterr().err == ""  # the command line's lists replace the file's


def test_a_list_flag_given_twice_takes_both_lists(tmp_path):
    """argparse kept a list flag's last list: `--sbatch account=p --sbatch qos=high` wrote no
    account line and `--setup A --setup B` ran B alone, without a word. Given again, a list adds
    up, in order; given once, it still replaces the grid file's list."""
    opts, runs, _, _ = sweep.parse(["--labels", "category", "--labels", "speech", "--seeds", "1", "--seeds", "2",
                                    "--sbatch", "account=p", "--sbatch", "qos=high", "comment=x",
                                    "--setup", "module load cuda", "--setup", "source .venv/bin/activate",
                                    "--slurm", str(tmp_path / "x.sbatch")])
    assert [(r.label, r.seed) for r in runs] == [("category", 1), ("category", 2), ("speech", 1), ("speech", 2)]
    assert opts.sbatch == ["--account=p", "--qos=high", "--comment=x"]
    assert opts.setup == ["module load cuda", "source .venv/bin/activate"]
    (tmp_path / "grid.yaml").write_text("labels: [speech, glove]\nseeds: [7]\n")
    _, runs, _, _ = sweep.parse(["--config", str(tmp_path / "grid.yaml"), "--labels", "category", "--labels",
                                 "uniform", "--dry_run"])
    assert [(r.label, r.seed) for r in runs] == [("category", 7), ("uniform", 7)]


def test_flags_go_to_the_scripts_that_take_them():
    _, _, _, routed = sweep.parse(["--dry_run", "--epochs", "30", "--num_images", "500", "--base_dir", "o",
                                   "--train_args", "--batch_size 64", "--attack_args", "--batch_size 250",
                                   "--", "--valid_size", "1000"])
    assert routed["train"] == ["--epochs", "30", "--base_dir", "o", "--valid_size", "1000", "--batch_size", "64"]
    assert routed["attack"] == ["--num_images", "500", "--base_dir", "o", "--batch_size", "250"]
    # one flag without a value, which argparse took for a flag of sweep.py's ("expected one argument")
    _, _, _, routed = sweep.parse(["--dry_run", "--train_args", "--amp", "--attack_args", "--amp"])
    assert routed == {"train": ["--amp"], "attack": ["--amp"]}
    # a flag glued to its value goes where its name goes (not "--epochs=30 is not a flag of train.py")
    _, _, _, routed = sweep.parse(["--dry_run", "--epochs=30", "--num_images=500", "--base_dir=o"])
    assert routed == {"train": ["--epochs=30", "--base_dir=o"], "attack": ["--num_images=500", "--base_dir=o"]}
    # --train_args given twice passes both strings, in order (the first was dropped without a word)
    _, _, _, routed = sweep.parse(["--dry_run", "--train_args", "--epochs 3", "--train_args=--lr 0.05",
                                   "--attack_args", "--steps 2", "--attack_args", "--restarts 2 --steps 4"])
    assert routed == {"train": ["--epochs", "3", "--lr", "0.05"],
                      "attack": ["--steps", "2", "--restarts", "2", "--steps", "4"]}


def test_the_command_line_wins_over_the_grid_file(tmp_path):
    """A grid file's pass-through flags reach the scripts before the command line's, so that the
    command line wins (argparse keeps a flag's last value), as --config's help says."""
    (tmp_path / "grid.yaml").write_text("args: --epochs 3 --num_images 50\ntrain_args: --batch_size 32\n")
    _, runs, scripts, routed = sweep.parse(["--config", str(tmp_path / "grid.yaml"), "--dry_run",
                                            "--epochs", "5", "--train_args", "--batch_size 64"])
    train = scripts["train"].parse(runs[0].flags() + routed["train"])
    assert (train.epochs, train.batch_size) == (5, 64)
    assert scripts["attack"].parse(runs[0].flags() + routed["attack"]).num_images == 50


def test_a_later_layers_list_replaces_the_earlier_and_a_repeat_is_said(tmp_path, capsys):
    """attack.py's --epsilons given twice takes both lists, as every list flag does; a sweep passes
    on the one of the last layer that gives it (the grid file's args, its attack_args, the command
    line's flags, its --attack_args), as any flag's value, and says once of an eps listed twice.
    attack.py kept the last list: `--epsilons 4/255 --epsilons 8/255` in a grid file attacked 8/255
    alone, without a word."""
    (tmp_path / "grid.yaml").write_text("args: --epsilons 8/255 --num_images 5\n"
                                        "attack_args: --epsilons 4/255 --epsilons 8/255 4/255\n")
    grid = ["--config", str(tmp_path / "grid.yaml"), "--base_dir", str(tmp_path / "runs"), "--dry_run"]
    for extra, epsilons in (([], ["4/255", "8/255"]), (["--epsilons", "2/255"], ["2/255"]),
                            (["--epsilons", "2/255", "--attack_args", "--epsilons 1/255"], ["1/255"])):
        _, runs, scripts, routed = sweep.parse(grid + extra)
        attack = scripts["attack"].parse(runs[0].flags() + routed["attack"])
        assert [label for label, _ in scripts["attack"].module.requested_settings(attack)[2]] == epsilons
        assert attack.num_images == 5
    sweep.main(grid)
    assert capsys.readouterr().err == ("warning: --epsilons lists 4/255 more than once; each setting is "
                                       "attacked once\n")


def test_help_says_where_flags_go():
    """sweep.py --help's epilog: its examples of pass-through flags go where it says, and the flags
    it names as the grid's own are each refused (it said only "passed to the scripts that accept it")."""
    text = " ".join(sweep.build_parser().format_help().split())
    assert ("--epochs to train.py, --num_images to attack.py, --base_dir and --data_dir to both; one "
            "neither accepts is an error" in text)
    _, _, _, routed = sweep.parse(["--dry_run", "--epochs", "3", "--num_images", "5", "--base_dir", "o",
                                   "--data_dir", "d"])
    assert routed == {"train": ["--epochs", "3", "--base_dir", "o", "--data_dir", "d"],
                      "attack": ["--num_images", "5", "--base_dir", "o", "--data_dir", "d"]}
    named = re.search(r"The grid sets (.*?) itself\.", text).group(1).split(", ")
    assert named == ["--dataset", "--model", "--label", "--level", "--seed", "--resume"]
    for flag in named:
        with pytest.raises(UsageError, match=f"^{flag} is set by the sweep"):
            sweep.parse(["--dry_run", flag, "1"])


@pytest.mark.parametrize("argv, message", [
    (["--dry_run", "--nonsense", "1"], "--nonsense is not a flag of train.py"),
    (["--dry_run", "--seed", "3"], "--seed is set by the sweep; use --seeds"),
    (["--dry_run", "--train_args", "--label speech"], "--label is set by the sweep; use --labels"),
    # train.py and attack.py read a shortened flag as the one it starts: every run trained seed 5
    # with no hint: --seed, which it starts, is the sweep's to set (it pointed there, which then said so)
    (["--dry_run", "--train_args", "--see 5"], "error: --train_args: --see is not a flag of train.py (give each "
     "flag its full name)"),
    # a flag of the other script said "(give each flag its full name)", which it was
    (["--dry_run", "--train_args", "--epsilons 8/255"], "error: --train_args: --epsilons is a flag of attack.py, "
     "not train.py; give it in --attack_args"),
    (["--dry_run", "--attack_args", "--restart 2"], "--attack_args: --restart is not a flag of attack.py; "
     "did you mean --restarts?"),
    # a near miss is named: the flag's own name, or the one it starts (--eps is not --steps, closer by letters)
    (["--dry_run", "--attack_args", "--n_images 200"], "--attack_args: --n_images is not a flag of attack.py; "
     "did you mean --num_images? (give each flag its full name)"),
    (["--dry_run", "--eps", "8/255"], "--eps is not a flag of train.py or attack.py; did you mean --epsilons?"),
    (["--dry_run", "--data-dir", "x"], "--data-dir is not a flag of train.py or attack.py; did you mean "
     "--data_dir?"),
    # sweep.py's own flags are near misses too, and the flags it sets are none: --lables named train.py's
    # --label ("--label is set by the sweep; use --labels"), --levle --level, --stage nothing
    (["--dry_run", "--lables", "speech"], "error: --lables is not a flag of train.py or attack.py; did you mean "
     "--labels?"),
    (["--dry_run", "--levle", "50"], "error: --levle is not a flag of train.py or attack.py; did you mean "
     "--levels?"),
    (["--dry_run", "--stage", "train"], "error: --stage is not a flag of train.py or attack.py; did you mean "
     "--stages?"),
    # every run attacked that one file, writing its results into the file's folder
    (["--dry_run", "--checkpoint", "x.pth"], "--checkpoint is not passed through a sweep: a sweep attacks "
     "each run's own best checkpoint"),
    # one source checkpoint for every run of the grid; and its entries are no white-box ones
    (["--dry_run", "--transfer_from", "x.pth"], "--transfer_from is not passed through a sweep: a sweep attacks "
     "each run white-box, and a transfer attack's source differs from run to run: run attack.py "
     "--transfer_from on each run"),
    # with the sweep's --resume, a stopped run started over on every rerun (and a requeued task never ended)
    (["--dry_run", "--force"], "--force is not passed through a sweep: each rerun of the sweep, or requeue "
     "of its task, would start its runs over; to train runs again, delete their run directories first"),
    (["--labels", "category"], "say what to do: --dry_run, --print, --slurm FILE or --local"),
    (["--print", "--local"], "choose one of --print, --slurm, --local"),
    (["--dry_run", "--levels", "150"], "level '150' is not a percentage"),
    (["--dry_run", "--seeds", "x"], "error: --seeds: 'x' is not an int"),
    # a typo: train.py's line with the labels found (sweep.py's said only "label file(s) not found")
    (["--dry_run", "--labels", "nosuch", "--stages", "train"], "/cifar10_nosuch.npy for --label nosuch; "
     "labels found for cifar10 in "),
    # a label of one's own saved the ways people get wrong: sweep.py said only "not found", train.py
    # (each run's first job) what to do
    (["--dry_run", "--labels", "mine", "--label_dir", "{tmp}/short"], "for --label mine: cifar10_mine.npz "
     "there is a .npz archive; save the targets with numpy.save as cifar10_mine.npy"),
    (["--dry_run", "--labels", "bare", "--label_dir", "{tmp}/short"], "for --label bare: bare.npy there is "
     "not named as a label file; rename it cifar10_bare.npy"),
    (["--dry_run", "--labels", "speech", "--label_dir", "{tmp}/short/cifar10_speech.npy"], "for --label "
     "speech: --label_dir {tmp}/short/cifar10_speech.npy is a file, not a folder; pass the folder holding "
     "cifar10_speech.npy, --label_dir {tmp}/short"),
    # a grid of a label of one's own and a shipped one, with --label_dir at the former's folder
    (["--dry_run", "--labels", "mine", "speech", "--label_dir", "{tmp}"], "/cifar10_speech.npy; "
     "--label_dir serves every label of the grid, so copy the shipped cifar10_speech.npy from "),
    (["--dry_run", "--models", "resnet18", "resnet32"], "--models: unknown model resnet18 (did you mean "
                                                        f"resnet110?); choose from {', '.join(sorted(ARCHITECTURES))}"),
    (["--dry_run", "--config", "{tmp}/bad.yaml"], "unknown key(s) label (did you mean labels?); "
     "valid keys:"),
    # each listed the valid keys alone: a flag of train.py or attack.py is given in args
    (["--dry_run", "--config", "{tmp}/flags.yaml"], "flags.yaml: unknown key(s) epochs (a flag of train.py: give "
     "it in args, as args: --epochs ...), lables (did you mean labels?), targeted (a flag of attack.py: give it "
     "in args, as args: --targeted ...); valid keys: args, attack_args, "),
    # the first file was dropped without a word: its runs were not planned
    (["--dry_run", "--config", "{tmp}/bad.yaml", "--config", "{tmp}/stages.yaml"], "error: argument --config: given "
     "twice ({tmp}/bad.yaml, then {tmp}/stages.yaml): give one grid file, and override its keys with flags (see "
     "sweep.py --help)"),
    (["--dry_run", "--config", "{tmp}/stages.yaml"], "{tmp}/stages.yaml: stages must be among train, attack "
     "(got test)"),
    (["--dry_run", "--config", "{tmp}/broken.yaml"], "broken.yaml is not valid yaml (expected ',' or ']', "
     "but got '<stream end>' at line 2, column 1)"),  # was yaml's context: "while parsing a flow sequence"
    # a key given twice kept its last value: the grid lost runs without a word
    (["--dry_run", "--config", "{tmp}/twice.yaml"], "twice.yaml gives labels more than once; give each "
     "option once (a list for several values)"),
    (["--dry_run", "--config", "{tmp}/twice.json"], "twice.json gives seeds more than once"),
    # an empty --config (an unset variable) ran the default grid; --slurm '' asked what to do
    (["--dry_run", "--config", ""], "argument --config: must not be empty (see sweep.py --help)"),
    (["--slurm", ""], "argument --slurm: must not be empty"),
    (["--slurm", "{tmp}/s.sbatch", "--sbatch", ""], "--sbatch: an option must not be empty"),  # '#SBATCH --'
    # a second line for an option the script writes: sbatch took the last (no requeue, a lost --time)
    # each named the line the script writes: it writes --requeue and no --error line
    (["--slurm", "{tmp}/s.sbatch", "--sbatch", "account=p", "no-requeue"], "--sbatch no-requeue: the array "
     "script writes --requeue itself (its tasks, logs and requeue rely on it); leave it out"),
    (["--slurm", "{tmp}/s.sbatch", "--sbatch", "error=e.log"], "--sbatch error=e.log: the array script writes "
     "--output (stderr too) itself"),
    (["--slurm", "{tmp}/s.sbatch", "--sbatch", "signal=USR1@300"], "--sbatch signal=USR1@300: the array script"),
    (["--slurm", "{tmp}/s.sbatch", "--sbatch", "time=1:00:00"], "--sbatch time=1:00:00: use sweep.py's --time, "
     "which writes that line"),
    (["--slurm", "{tmp}/s.sbatch", "--sbatch=-"], "error: --sbatch '-': no option name; write NAME=VALUE "
     "(account=p)"),  # was an IndexError traceback
    # sbatch's one-letter forms passed the check
    (["--slurm", "{tmp}/s.sbatch", "--sbatch=-t 1:00:00"], "--sbatch -t 1:00:00: use sweep.py's --time, "
     "which writes that line"),
    (["--slurm", "{tmp}/s.sbatch", "--sbatch=-o%j.log"], "--sbatch -o%j.log: the array script writes --output "
     "itself"),
    # sbatch reads -Qt as -Q -t, an unambiguous prefix of a long name as that option (getopt_long),
    # and every option of an #SBATCH line: each replaced the script's line
    (["--slurm", "{tmp}/s.sbatch", "--sbatch=-Qt 1:00:00"], "error: --sbatch -Qt 1:00:00: use sweep.py's "
     "--time, which writes that line"),
    (["--slurm", "{tmp}/s.sbatch", "--sbatch=-vHo%j.log"], "--sbatch -vHo%j.log: the array script writes "
     "--output itself"),
    (["--slurm", "{tmp}/s.sbatch", "--sbatch", "outp=x.log"], "error: --sbatch outp=x.log: the array script "
     "writes --output itself (its tasks, logs and requeue rely on it); leave it out"),
    (["--slurm", "{tmp}/s.sbatch", "--sbatch", "no-req"], "--sbatch no-req: the array script writes --requeue "
     "itself"),
    (["--slurm", "{tmp}/s.sbatch", "--sbatch", "part=gpu"], "--sbatch part=gpu: use sweep.py's --partition, "
     "which writes that line"),
    (["--slurm", "{tmp}/s.sbatch", "--sbatch", 'account=p --comment="a b" --sign=B:USR1@60'], "--sbatch "
     "account=p --comment=\"a b\" --sign=B:USR1@60: the array script writes --signal itself"),
    (["--dry_run", "--base_dir", ""], "argument --base_dir: must not be empty (see train.py --help)"),
    (["--slurm", "{tmp}/bad.yaml/s.sbatch"], "/bad.yaml: a file, not a folder"),  # was "File exists"
    # the grid file (or a script of one's own) named as --slurm was replaced by the array script
    (["--slurm", "{tmp}/jobs.yaml", "--base_dir", "{tmp}/runs"], "jobs.yaml exists and is no array script of "
     "sweep.py's; choose another file name, or remove it"),
    # trained at level 50 (level{L:g}), recorded as 50.00000000001
    (["--dry_run", "--levels", "50.00000000001"], "level 50.00000000001 has more digits than a run "
     "directory's name keeps (level50); give at most 6 significant digits"),
    (["--dry_run", "--labels", "speech", "speech_noise0.2"], "error: --labels: speech_noise0.2 ends like "
     "the run directory of a --label_noise run"),
    # these went into #SBATCH lines as they were (--cpus-per-task=0, --array=0-0%-1)
    (["--slurm", "{tmp}/s.sbatch", "--cpus_per_task", "0"], "--cpus_per_task: 0 must be at least 1"),
    (["--slurm", "{tmp}/s.sbatch", "--max_concurrent", "-1"], "--max_concurrent: -1 must be at least 1"),
    (["--slurm", "{tmp}/s.sbatch", "--signal_seconds", "-5"], "--signal_seconds: -5 must be at least 0"),
    # each was written into the header: the rest of the value a shell line, run by the task (a
    # $(...) in the name with it), and sbatch read no #SBATCH line after it (--array among them)
    (["--slurm", "{tmp}/s.sbatch", "--sbatch", "account=a\nqos=b"], "error: --sbatch 'account=a\\nqos=b' holds "
     "a line break: an #SBATCH option must fit on one line"),
    (["--slurm", "{tmp}/s\n$(touch x).sbatch"], "error: --slurm '{tmp}/s\\n$(touch x).sbatch' holds a line "
     "break: the array script names its own file in comment lines, each one line"),
    (["--slurm", "{tmp}/s.sbatch", "--time", "1:00\r00"], "error: --time '1:00\\r00' holds a line break: an "
     "#SBATCH option must fit on one line"),
    (["--dry_run", "--config", "{tmp}/jobs.yaml"], "{tmp}/jobs.yaml: jobs: '2.5' is not an int"),
    # a grid file's values were coerced: seed 1.5 ran as 1, a null label looked for cifar10_None.npy
    (["--dry_run", "--config", "{tmp}/seed.yaml"], "{tmp}/seed.yaml: seeds: 1.5 is not a valid value"),
    (["--dry_run", "--config", "{tmp}/null.yaml"], "{tmp}/null.yaml: labels: None is not a valid value"),
    # every run's train.py was `--label -x`: "argument --label: expected one argument (see train.py --help)"
    (["--dry_run", "--config", "{tmp}/dash.yaml"], "error: {tmp}/dash.yaml: labels: -x starts with '-', "
     "which a command line takes for a flag (--label -x: 'expected one argument'); rename the label file"),
    # a NUL character ("\\u0000") in a grid file's label or path: an "embedded null byte" traceback
    (["--dry_run", "--config", "{tmp}/nul.json"], "error: {tmp}/nul.json: labels: 'a\\x00b' holds a NUL "
     "character, which no file name can hold"),
    (["--dry_run", "--config", "{tmp}/nul_dir.json"], "error: {tmp}/nul_dir.json: argument --base_dir: "
     "'o\\x00ut' holds a NUL character, which no file name can hold"),
    (["--dry_run", "--config", "{tmp}/map.yaml"], "{tmp}/map.yaml: labels: {'speech': 1} is neither a "
     "value nor a list"),
    # a grid file's labels skipped train.py's check of --label: each of its train.py runs refused it
    (["--dry_run", "--config", "{tmp}/noisy.yaml"], "{tmp}/noisy.yaml: labels: speech_noise0.2 ends like the "
     "run directory of a --label_noise run"),
    (["--dry_run", "--seeds", "-1"], "error: --seeds: -1 must be at least 0"),
    # was train.py's check, naming the flag the sweep sets: "argument --seed: ... (see train.py --help)"
    (["--dry_run", "--seeds", "7", str(2**32)], "error: --seeds: 4294967296 must be at most 4294967295"),
    (["--dry_run", "--labels", "speech", "{tmp}/short/cifar10_speech.npy"], "error: --labels: "
     "'{tmp}/short/cifar10_speech.npy' is not a label name: it names the label file {dataset}_NAME.npy and the "
     "run directory model_NAME, so it must be non-empty and hold no /; that file is label speech with "
     "--label_dir {tmp}/short"),
    # each ran the grid on the CPU: an empty --gpus, or an id CUDA cannot read (it then hides every GPU)
    (["--dry_run", "--gpus", ""], "error: --gpus needs ids, e.g. 0,1"),
    (["--dry_run", "--gpus", "0;1"], "error: --gpus: '0;1' is not a GPU id; give indices, e.g. 0,1 (or "
                                     "GPU-/MIG- UUIDs)"),
    (["--dry_run", "--gpus", "0,1", "--jobs", "2"], "error: --jobs 2 is for runs on the CPU; with --gpus, "
                                                    "list an id twice to run two runs on that GPU (0,0,1,1)"),
    (["--dry_run", "--config", "{tmp}/binary.yaml"], "binary.yaml is not a text file (not UTF-8)"),
    # aliases repeating a list ('billion laughs'): at nine levels an error message or #SBATCH line
    # spelt out 9**9 values (a sweep at 7 GB of memory after a minute)
    (["--dry_run", "--config", "{tmp}/laughs.yaml"], "error: {tmp}/laughs.yaml holds over 100000 values (YAML "
     "aliases, *name, each repeating a list, multiply); a grid file names a few options and their values"),
    # json's and yaml's RecursionError, a traceback
    (["--dry_run", "--config", "{tmp}/deep.json"], "error: {tmp}/deep.json is not valid json (nested too deeply)"),
    (["--dry_run", "--config", "{tmp}/deep.yaml"], "error: {tmp}/deep.yaml is not valid yaml (nested too deeply)"),
    # a number Python will not convert (over 4300 digits), a date of no calendar: their ValueError, a traceback
    (["--dry_run", "--config", "{tmp}/huge.json"], "error: {tmp}/huge.json is not valid json (Exceeds the limit "
     "(4300 digits) for integer string conversion: value has 5000 digits)"),
    (["--dry_run", "--config", "{tmp}/huge.yaml"], "error: {tmp}/huge.yaml is not valid yaml (Exceeds the limit "
     "(4300 digits) for integer string conversion: value has 5000 digits)"),
    (["--dry_run", "--config", "{tmp}/date.yaml"], "error: {tmp}/date.yaml is not valid yaml (month must be in "
     "1..12)"),
    (["--dry_run", "--train_args", '--epochs "1'], "--train_args '--epochs \"1': No closing quotation"),
    # each was found by the first train.py job, after the sweep had queued every run
    (["--dry_run", "--label_granularity", "coarse"], "error: cifar10 has no 'coarse' labels; choose from fine"),
    (["--dry_run", "--datasets", "cifar100", "--labels", "speech", "--label_granularity", "coarse"],
     "labels/label_files/cifar100_speech.npy has 100 class targets, but the dataset has 20 classes; a "
     "--label_granularity coarse run needs a file of its own: make one with python -m labels.generate "
     "--dataset cifar100 --label_granularity coarse --label speech --out DIR, then pass --label_dir DIR"),
    # a coarse grid's folder without one of its labels was told to copy in the shipped (fine, 100-class) file
    (["--dry_run", "--datasets", "cifar100", "--labels", "lowdim", "--label_granularity", "coarse",
      "--label_dir", "{tmp}/short"], "short/cifar100_lowdim.npy; a --label_granularity coarse run needs a "
     "file of its own: make one with python -m labels.generate --dataset cifar100 --label_granularity coarse "
     "--label lowdim --out DIR, then pass --label_dir DIR"),
    # ... and one missing several was told how to make the first only
    (["--dry_run", "--datasets", "cifar100", "--labels", "mine", "lowdim", "speech", "--label_granularity",
      "coarse", "--label_dir", "{tmp}/short"], "short/cifar100_speech.npy; a --label_granularity coarse "
     "run needs files of its own: make them with python -m labels.generate --dataset cifar100 "
     "--label_granularity coarse --label lowdim speech --out DIR; save one target per coarse class as "
     f"{Path('DIR', 'cifar100_mine.npy')} (labels/README.md, 'A label of your own'), then pass --label_dir DIR"),
    # the dry run said "run: new", then every task's train.py refused it (at most 0.95 for 20 classes)
    (["--dry_run", "--datasets", "cifar100", "--labels", "category", "--label_granularity", "coarse",
      "--smoothing", "0.97"], "error: train.py refuses the --dataset cifar100 --label category runs: --smoothing "
     "0.97 must lie in [0, 0.95] for 20 classes (beyond it the true class gets less than each other class)"),
    (["--dry_run", "--labels", "speech", "--label_dir", "{tmp}/short"], "short/cifar10_speech.npy has "
     "9 class targets, but the dataset has 10 classes"),
    # a coarse file for a fine run: the opposite case said how to make a coarse file, this nothing
    (["--dry_run", "--datasets", "cifar100", "--labels", "sup", "--label_dir", "{tmp}/short"],
     "short/cifar100_sup.npy has 20 class targets, but the dataset has 100 classes; 20 targets are one per "
     "cifar100 coarse class: pass --label_granularity coarse to train on those"),
    # a CIFAR-10 file under a CIFAR-100 name: train.py's --dataset, which a sweep refuses, was named
    (["--dry_run", "--datasets", "cifar100", "--labels", "speech", "--label_dir", "{tmp}/cifar10s"],
     "cifar10s/cifar100_speech.npy has 10 class targets, but the dataset has 100 classes; 10 targets are one per "
     "cifar10 class: pass --datasets cifar10 to train on those, or a --label_dir holding cifar100's file of 100 "
     "targets"),
    (["--dry_run", "--labels", "dir", "--label_dir", "{tmp}/short"], "short/cifar10_dir.npy is not a "
     "regular file"),
    # train.py wrote the coarse run, attack.py attacked (and wrote into) the fine one
    (["--dry_run", "--datasets", "cifar100", "--labels", "category", "--stages", "train", "attack",
      "--train_args", "--label_granularity coarse"], "but attack.py would read"),
    # a --base_dir through a file: the dry run counted its runs to do, --slurm wrote their script, and
    # every task's train.py then refused it
    (["--dry_run", "--base_dir", "{tmp}/short/bare.npy/runs"], "error: cannot use {tmp}/short/bare.npy: a file, "
     "not a folder"),
    (["--slurm", "{tmp}/jobs/s.sbatch", "--base_dir", "{tmp}/short/bare.npy"], "error: cannot use "
     "{tmp}/short/bare.npy: a file, not a folder"),
])
def test_bad_input_is_one_line(capsys, tmp_path, argv, message):
    (tmp_path / "bad.yaml").write_text("label: [speech]\n")
    (tmp_path / "flags.yaml").write_text("epochs: 30\ntargeted: no\nlables: [speech]\n")
    (tmp_path / "stages.yaml").write_text("stages: [test]\n")
    (tmp_path / "broken.yaml").write_text("labels: [speech\n")
    (tmp_path / "twice.yaml").write_text("labels: [category]\nseeds: [1]\n--labels: [speech]\n")
    (tmp_path / "twice.json").write_text('{"seeds": [1], "labels": ["category"], "seeds": [2]}')
    (tmp_path / "jobs.yaml").write_text("jobs: 2.5\n")
    (tmp_path / "seed.yaml").write_text("seeds: [0, 1.5]\n")
    (tmp_path / "null.yaml").write_text("labels: [category, null]\n")
    (tmp_path / "map.yaml").write_text("labels: {speech: 1}\n")
    laughs = ["seeds:", '  - &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    laughs += [f"  - &{name} [{', '.join([f'*{last}'] * 9)}]" for last, name in zip("abcde", "bcdef")]
    (tmp_path / "laughs.yaml").write_text("\n".join(laughs) + "\nlabels: [*f]\n")
    (tmp_path / "deep.json").write_text('{"labels": ' + "[" * 100000 + "]" * 100000 + "}")
    (tmp_path / "deep.yaml").write_text("labels: " + "[" * 100000 + "]" * 100000 + "\n")
    (tmp_path / "huge.json").write_text('{"seeds": [' + "1" * 5000 + "]}")
    (tmp_path / "huge.yaml").write_text("seeds: [" + "1" * 5000 + "]\n")
    (tmp_path / "date.yaml").write_text("seeds: [2024-13-45]\n")
    (tmp_path / "dash.yaml").write_text("labels: [speech, '-x']\n")
    (tmp_path / "nul.json").write_text('{"labels": ["a\\u0000b"]}')
    (tmp_path / "nul_dir.json").write_text('{"args": ["--base_dir", "o\\u0000ut"]}')
    (tmp_path / "noisy.yaml").write_text("labels: [speech, speech_noise0.2]\n")
    (tmp_path / "binary.yaml").write_bytes(b"\xff\xfe")
    (tmp_path / "short").mkdir()
    np.save(tmp_path / "short" / "cifar10_speech.npy", np.eye(9, dtype=np.float32))
    np.save(tmp_path / "short" / "cifar100_sup.npy", np.eye(20, dtype=np.float32))
    (tmp_path / "cifar10s").mkdir()
    np.save(tmp_path / "cifar10s" / "cifar100_speech.npy", np.eye(10, dtype=np.float32))
    (tmp_path / "short" / "cifar10_dir.npy").mkdir()
    np.savez(tmp_path / "short" / "cifar10_mine.npz", targets=np.eye(10))
    np.save(tmp_path / "short" / "bare.npy", np.eye(10))
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    if "--stages" not in argv and not any("yaml" in a for a in argv):
        argv += ["--stages", "train"]
    assert call_cli(sweep.main, argv) == 2
    err = capsys.readouterr().err.strip()
    message = message.replace("{tmp}", str(tmp_path))
    assert err.count("\n") == 0 and err.startswith("error: ") and message in err, err
    assert not (tmp_path / "jobs").exists()


def test_every_run_train_py_refuses_for_its_flags_is_named_in_one_error(capsys, tmp_path):
    """Flags train.py refuses for a dataset's classes or for themselves, without data or label file
    (--smoothing beyond (C - 1) / C, --n_components not below --feature_dim): sweep.py queued every
    run, and each job ended with train.py's error line. Now every dataset and label refused, in one
    line with train.py's reason, before anything is written; a dataset whose classes allow it runs."""
    script = tmp_path / "jobs" / "s.sbatch"
    argv = ["--datasets", "cifar10", "cifar100", "--labels", "category", "mcr2", "--seeds", "1", "2",
            "--smoothing", "0.95", "--feature_dim", "16", "--base_dir", tmp_path / "runs",
            "--slurm", script]
    assert call_cli(sweep.main, [str(a) for a in argv]) == 2
    assert capsys.readouterr().err == (
        "error: 2 problems with the grid's flags: (1) train.py refuses the --dataset cifar10 --label category "
        "runs: --smoothing 0.95 must lie in [0, 0.9] for 10 classes (beyond it the true class gets less than "
        "each other class); (2) train.py refuses the --dataset cifar10 --label mcr2 and --dataset cifar100 "
        "--label mcr2 runs: --n_components 30 must be below --feature_dim 16: class subspaces of all 16 feature "
        "directions keep every feature whole, so nearest-subspace decoding could not tell the classes apart\n")
    assert not (tmp_path / "jobs").exists() and not (tmp_path / "runs").exists()
    rows = sweep_lines(capsys, ["--datasets", "cifar100", "--labels", "category", "--smoothing", "0.95",
                                "--base_dir", str(tmp_path / "runs"), "--dry_run"])
    assert "run: new" in rows[1] and rows[1].endswith("/model_category_smooth0.95")


def test_a_label_too_long_for_its_runs_checkpoint_is_refused_before_any_run(capsys, tmp_path, label_dir):
    """A label of 226 to 243 bytes has a label file, but a run's best checkpoint name (label +
    '_seed0_resnet32_best_model.pth') is over the 255 bytes of a file name: the sweep listed and
    queued its runs, and each train.py failed with 'File name too long' once the data had loaded.
    Now the sweep refuses it first, saying how long a label may be, and writes nothing."""
    label = "x" * 230
    shutil.copy(label_dir / "cifar10_glove.npy", tmp_path / f"cifar10_{label}.npy")
    for mode in (["--dry_run"], ["--slurm", tmp_path / "jobs" / "s.sbatch"]):
        argv = ["--labels", "category", label, "--label_dir", tmp_path, "--base_dir", tmp_path / "runs", *mode]
        assert call_cli(sweep.main, [str(a) for a in argv]) == 2
        assert capsys.readouterr() == ("", f"error: --label {label} is too long: its run's best checkpoint would "
                                           "have a name of 260 bytes, over the 255 a file name may have; use a "
                                           "label of at most 225 bytes\n")
    assert not (tmp_path / "jobs").exists() and not (tmp_path / "runs").exists()


def test_flags_and_label_files_train_py_refuses_are_named_in_one_error(capsys, tmp_path, label_dir):
    """A grid with a flag train.py refuses and a label file it cannot load: the flags' error came
    alone, and the rerun that fixed them then told of the file. Both now, in one line."""
    labels = tmp_path / "labels"
    labels.mkdir()
    shutil.copy(label_dir / "cifar10_speech.npy", labels)
    argv = ["--labels", "category", "glove", "--seeds", "1", "--smoothing", "0.95", "--label_dir", labels,
            "--base_dir", tmp_path / "runs", "--dry_run"]
    assert call_cli(sweep.main, [str(a) for a in argv]) == 2
    assert capsys.readouterr().err == (
        "error: 2 problems with the grid's flags and label files: (1) train.py refuses the --dataset cifar10 "
        "--label category runs: --smoothing 0.95 must lie in [0, 0.9] for 10 classes (beyond it the true class "
        f"gets less than each other class); (2) no label file {labels}/cifar10_glove.npy for --label glove; "
        f"labels found for cifar10 in {labels}: category, mcr2, speech; make it with python -m labels.generate "
        "--dataset cifar10 --label glove --out DIR (labels/README.md), then pass --label_dir DIR\n")
    assert not (tmp_path / "runs").exists()


def test_runs_train_py_refuses_for_their_split_are_named_in_one_error(capsys, tmp_path, cifar10_dir):
    """A --level or --valid_size that leaves a run too few training images of the dataset in
    --data_dir (the tiny CIFAR-10's 300 here; CIFAR's 50000 where it is not there yet): the dry run
    said 'run: new', --slurm queued every run and each job ended with train.py's error after
    loading the data. Now each level refused, with train.py's reason, in one line before anything
    is written; a grid whose runs fit plans as before."""
    script = tmp_path / "jobs" / "s.sbatch"

    def sweep_err(data_dir, *grid):
        for mode in (["--dry_run"], ["--slurm", script]):
            argv = ["--labels", "category", "--seeds", "1", "2", "--data_dir", data_dir, "--base_dir",
                    tmp_path / "runs", *grid, *mode]
            assert call_cli(sweep.main, [str(a) for a in argv]) == 2
            out, err = capsys.readouterr()
            assert out == "" and not script.parent.exists() and not (tmp_path / "runs").exists()
        return err
    assert sweep_err(cifar10_dir, "--levels", "0.01", "--valid_size", "50") == (
        "error: train.py refuses the --dataset cifar10 --level 0.01 runs: --level 0.01 leaves 0 training "
        "images for 10 classes; a run needs at least 10, one per class: pass a --level of at least 3.34\n")
    # fewer images than classes: some class has none to learn from, whichever the seed
    assert sweep_err(cifar10_dir, "--levels", "100", "3", "--valid_size", "50") == (
        "error: train.py refuses the --dataset cifar10 --level 3 runs: --level 3 leaves 9 training "
        "images for 10 classes; a run needs at least 10, one per class: pass a --level of at least 3.34\n")
    assert sweep_err(cifar10_dir, "--levels", "100", "25", "--train_args", "--valid_size 400") == (
        "error: 2 problems with the grid's flags: (1) train.py refuses the --dataset cifar10 --level 100 runs: "
        "--valid_size 400 leaves no training images: the dataset has 300; pass a --valid_size of at most 290; "
        "(2) train.py refuses the --dataset cifar10 --level 25 runs: --level 25 asks for 75 training images, "
        "but only 0 of the 300 remain after the 400 validation images; pass a --valid_size of at most 225, "
        "or a lower --level\n")
    assert sweep_err(tmp_path / "not_yet", "--valid_size", "60000") == (  # train.py would download CIFAR-10
        "error: train.py refuses the --dataset cifar10 --level 100 runs: --valid_size 60000 leaves no "
        "training images: the dataset has 50000; pass a --valid_size of at most 49990\n")
    rows = sweep_lines(capsys, ["--labels", "category", "--levels", "100", "25", "--seeds", "1", "2",
                                "--data_dir", str(cifar10_dir), "--valid_size", "225",
                                "--base_dir", str(tmp_path / "runs"), "--dry_run"])
    assert [row.split()[2:4] for row in rows[1:5]] == [["run:", "new"]] * 4


def test_every_unusable_label_file_is_named_in_one_error(capsys, tmp_path, label_dir):
    """A grid's missing and unusable label files, all in one error line before any job is written:
    sweep.py named the first (bert) alone, so each rerun told of the next (glove, then the file of
    9 classes); a file whose targets nearest-target decoding cannot tell apart passed, and every
    run's train.py failed on it. Each keeps its own reason (make_fix's command for bert)."""
    labels = tmp_path / "labels"
    labels.mkdir()
    shutil.copy(label_dir / "cifar10_speech.npy", labels)
    np.save(labels / "cifar10_nine.npy", np.eye(9, dtype=np.float32))
    # distinct, but 1e-30 apart: their squared distances underflow, so every class decodes as class 0
    np.save(labels / "cifar10_tiny.npy", 1e-30 * np.arange(40, dtype=np.float32).reshape(10, 4))
    script = tmp_path / "jobs" / "s.sbatch"
    argv = ["--labels", "category", "speech", "bert", "glove", "nine", "tiny", "shuffle", "--seeds", "1", "2",
            "--label_dir", labels, "--base_dir", tmp_path / "runs", "--slurm", script]
    assert call_cli(sweep.main, [str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"error: 5 problems with the grid's label files: (1) label file(s) not found: {labels}/cifar10_shuffle.npy; "
        "--label_dir serves every label of the grid, so copy the shipped cifar10_shuffle.npy from "
        f"{REPO}/labels/label_files into {labels}; "
        f"(2) no label file {labels}/cifar10_bert.npy for --label bert; labels found for cifar10 in {labels}: "
        "category, mcr2, nine, speech, tiny; make it with python -m labels.generate --dataset cifar10 --label "
        "bert --out DIR (labels/README.md), then pass --label_dir DIR; "
        f"(3) no label file {labels}/cifar10_glove.npy for --label glove; labels found for cifar10 in {labels}: "
        "category, mcr2, nine, speech, tiny; make it with python -m labels.generate --dataset cifar10 --label "
        "glove --out DIR (labels/README.md), then pass --label_dir DIR; "
        f"(4) label file {labels}/cifar10_nine.npy has 9 class targets, but the dataset has 10 classes; "
        f"(5) label file {labels}/cifar10_tiny.npy: class 1's own target decodes as class 0 in float32; its "
        "targets are too close together or too large (squared distances beyond 3.4e38) for nearest-target "
        "decoding\n")
    assert not script.parent.exists() and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("targets", [
    1e-30 * np.arange(40, dtype=np.float32).reshape(10, 4),  # a class's own target decodes as another
    3e18 * np.arange(10, dtype=np.float32)[:, None],  # squared distances overflow: scores inf or NaN
])
def test_a_label_file_train_py_cannot_decode_is_refused_with_its_reason(capsys, tmp_path, targets):
    """Targets that pass check_targets (numeric, finite, distinct) but that train.py's TargetSpace
    refuses: the sweep said nothing, and each run's job failed at train time. It now refuses the
    grid with train.py's reason, the file named."""
    from utils.labelspace import TargetSpace
    np.save(tmp_path / "cifar10_close.npy", targets)
    with pytest.raises(UsageError) as refused:
        TargetSpace("close", targets)
    reason = str(refused.value).removeprefix("label close: ")
    argv = ["--labels", "close", "--label_dir", tmp_path, "--base_dir", tmp_path / "runs", "--dry_run"]
    assert call_cli(sweep.main, [str(a) for a in argv]) == 2
    assert capsys.readouterr().err == f"error: label file {tmp_path}/cifar10_close.npy: {reason}\n"


@pytest.mark.parametrize("name, text, message", [
    ("none.yaml", None, "cannot read the grid file {tmp}/none.yaml: No such file or directory"),
    ("grid.json", "[1, 2", "{tmp}/grid.json is not valid json (Expecting ',' delimiter: line 1 column 6 "
                           "(char 5))"),
    ("grid.yaml", "- labels\n", "{tmp}/grid.yaml must hold a mapping of options (labels: [...], seeds: "
                                "[...]), not a list"),
    ("grid.yaml", "args: 5\n", "{tmp}/grid.yaml: args: pass-through arguments must be a string or a list, "
     "not 5"),
    ("grid.yaml", "args: 3 --epochs 1\n", "{tmp}/grid.yaml: pass-through argument '3' does not follow a "
     "--flag"),
    ("grid.yaml", "train_args: [--seed, 3]\n", "{tmp}/grid.yaml: --seed is set by the sweep; use --seeds"),
    ("grid.yaml", "args: --resume\n", "{tmp}/grid.yaml: --resume is set by the sweep"),
    # each was passed on as text: 'False' (attack.py: "invalid choice: 'False'"), "['fgsm', 'pgd']", and
    # '--epochs 3' as a flag of that name ("did you mean --epochs?")
    ("grid.yaml", "attack_args: [--targeted, no]\n", "{tmp}/grid.yaml: attack_args: False is not one flag or value "
     "(text or a number; quote a word YAML reads as true or false ('no'))"),
    ("grid.yaml", "args: [--attacks, [fgsm, pgd]]\n", "{tmp}/grid.yaml: args: ['fgsm', 'pgd'] is not one flag or "
     "value (text or a number)"),
    ("grid.yaml", "args:\n  - --epochs 3\n  - --data_dir=my data\n", "{tmp}/grid.yaml: args: '--epochs 3' is one "
     "item of the list; give the flag and each value as items of their own ([--epochs, 3]) or args as one string"),
    # one text of several words: a label 'category speech' (no label file) and a stage 'train attack'
    # ("--stages must be among train, attack (got train attack)")
    ("grid.yaml", "labels: category speech\n", "{tmp}/grid.yaml: labels: 'category speech' is one value; "
                                               "for several, write a list (labels: [category, speech])"),
    ("grid.yaml", "stages: train attack\n", "{tmp}/grid.yaml: stages: 'train attack' is one value; for "
                                            "several, write a list (stages: [train, attack])"),
    ("grid.yaml", "levels: 100, 25\n", "{tmp}/grid.yaml: levels: '100, 25' is one value; for several, write "
                                       "a list (levels: [100, 25])"),
    # an empty file, or one of comments alone (a template not yet filled in), ran the default grid
    ("grid.yaml", "# labels: [category, speech]\n", "{tmp}/grid.yaml holds no options (it is empty, comments "
     "alone, or {{}}): a grid file is a mapping of options (labels: [...], seeds: [...])"),
    # an empty mapping, {} (a generated file with no option set), ran the default grid too
    ("grid.json", "{}\n", "{tmp}/grid.json holds no options (it is empty, comments alone, or {{}}): a grid file "
     "is a mapping of options (labels: [...], seeds: [...])"),
    ("grid.yaml", "{}  # to fill in\n", "{tmp}/grid.yaml holds no options (it is empty, comments alone, or {{}}): "
     "a grid file is a mapping of options (labels: [...], seeds: [...])"),
    # a comment in a block of args was passed on: "unrecognized arguments: '#' quick trial (see train.py --help)"
    ("grid.yaml", "args: |\n  --epochs 3   # a quick trial\n  --num_images 20\n", "{tmp}/grid.yaml: args: a '#' "
     "in its text is passed on as text, not read as a comment; write comments outside the text of args, or quote a "
     "'#' meant as text"),
    ("grid.yaml", "labels: []\n", "{tmp}/grid.yaml: labels is empty: the grid has no runs"),
    ("grid.yaml", "stages: []\n", "{tmp}/grid.yaml: stages must be among train, attack (got none)"),  # was '(got )'
    ("grid.yaml", "seeds: [true]\n", "{tmp}/grid.yaml: seeds: True is not a valid value"),
    ("grid.yaml", "levels: [0]\n", "{tmp}/grid.yaml: levels: level 0 is not a percentage in (0, 100]"),
    ("grid.yaml", "levels: [all]\n", "{tmp}/grid.yaml: levels: level 'all' is not a number"),
    ("grid.yaml", "datasets: mnist\n", "{tmp}/grid.yaml: datasets: unknown dataset mnist; choose from cifar10, "
     "cifar100"),
    ("grid.yaml", "max-concurrent: 0\n", "{tmp}/grid.yaml: max_concurrent: 0 must be at least 1"),
    # '#SBATCH --'
    ("grid.yaml", "sbatch: [account=proj, '']\n", "{tmp}/grid.yaml: sbatch: an option must not be empty"),
    ("grid.yaml", "gpus: []\n", "{tmp}/grid.yaml: gpus needs ids, e.g. 0,1"),
    ("grid.yaml", "gpus: [0, 1.5]\n", "{tmp}/grid.yaml: gpus: '1.5' is not a GPU id; give indices, e.g. "
     "0,1 (or GPU-/MIG- UUIDs)"),
    ("grid.yaml", "gpus: 0,1\njobs: 2\n", "{tmp}/grid.yaml: jobs 2 is for runs on the CPU; with --gpus, list "
     "an id twice to run two runs on that GPU (0,0,1,1)"),
    # a hand-written file's slips, each a line naming the file and key (the value errors named neither)
    ("grid.yaml", "", "{tmp}/grid.yaml holds no options (it is empty, comments alone, or {{}}): a grid file is a "
     "mapping of options (labels: [...], seeds: [...])"),
    ("grid.yaml", "seeds: 1.5\n", "{tmp}/grid.yaml: seeds: 1.5 is not a valid value"),
    ("grid.yaml", "seeds: seven\n", "{tmp}/grid.yaml: seeds: 'seven' is not an int"),
    ("grid.yaml", "seeds: []\n", "{tmp}/grid.yaml: seeds is empty: the grid has no runs"),
    ("grid.yaml", "levels: [100, -25]\n", "{tmp}/grid.yaml: levels: level -25 is not a percentage in (0, 100]"),
    ("grid.yaml", "models: [ResNet32]\n", "{tmp}/grid.yaml: models: unknown model ResNet32 (did you mean "
     "resnet32?); choose from resnet110, resnet32, vgg19"),
    ("grid.yaml", "setup: {a: 1}\n", "{tmp}/grid.yaml: setup: {{'a': 1}} is neither a value nor a list of "
     "values"),
    # argparse read the text by --jobs' type: 'argument --jobs: invalid int value' (see sweep.py --help)
    ("grid.yaml", "jobs: two\n", "{tmp}/grid.yaml: jobs: 'two' is not an int"),
    ("grid.yaml", "args: --epoch 3\n", "{tmp}/grid.yaml: --epoch is not a flag of train.py or attack.py; did you "
     "mean --epochs?"),
    ("grid.yaml", "train_args: --lr abc\n", "{tmp}/grid.yaml: argument --lr: 'abc' is not a float (see train.py "
     "--help)"),
    # written as #SBATCH --partition="['gpu', 'cpu']" and --job-name=True; setup: [a, [b]] was a traceback
    ("grid.yaml", "partition: [gpu, cpu]\n", "{tmp}/grid.yaml: partition: ['gpu', 'cpu'] is not one value "
                                             "(text or a number)"),
    ("grid.yaml", "job_name: yes\n", "{tmp}/grid.yaml: job_name: True is not one value (text or a number; "
                                     "quote a word YAML reads as true or false ('yes'))"),
    ("grid.yaml", "setup: [a, [b]]\n", "{tmp}/grid.yaml: setup: ['a', ['b']] is neither a value nor a list of "
     "values"),
])
def test_a_bad_grid_file_is_one_exact_line(capsys, tmp_path, name, text, message):
    if text is not None:
        (tmp_path / name).write_text(text)
    assert call_cli(sweep.main, ["--dry_run", "--config", str(tmp_path / name)]) == 2
    out, err = capsys.readouterr()
    assert (out, err) == ("", f"error: {message.format(tmp=tmp_path)}\n")


def test_a_grid_files_values_are_refused_naming_it_and_the_command_lines_not(capsys, tmp_path):
    """An error about a value the grid file gave names the file (a label with no file, which each
    of its runs would have failed on, and --jobs beside --gpus); one about a value the command line
    gave beside it, which wins over the file's, is said as the command line's, as without a file.
    The file's value errors named no file: a user with several could not tell which was wrong."""
    grid = tmp_path / "grid.yaml"
    grid.write_text("labels: [speach]\nseeds: [1]\njobs: 2\n")

    def error(*argv):
        argv = ["--dry_run", "--config", str(grid), "--base_dir", str(tmp_path / "runs"), *argv]
        assert call_cli(sweep.main, argv) == 2
        out, err = capsys.readouterr()
        assert out == "" and err.count("\n") == 1
        return err
    assert error().startswith(f"error: {grid}: no label file {REPO}/labels/label_files/cifar10_speach.npy for "
                              "--label speach (did you mean speech?); labels found for cifar10 in ")
    assert error("--labels", "speech2").startswith("error: no label file ")
    # a capital, as papers write it, was left to be found in the list of 30 labels
    assert error("--labels", "Speech").startswith(f"error: no label file {REPO}/labels/label_files/cifar10_Speech.npy "
                                                  "for --label Speech (did you mean speech?); labels found ")
    assert error("--labels", "category", "--seeds", "1.5") == "error: --seeds: '1.5' is not an int\n"
    assert error("--labels", "category", "--gpus", "0") == (f"error: {grid}: jobs 2 is for runs on the CPU; with "
                                                            "--gpus, list an id twice to run two runs on that GPU "
                                                            "(0,0,1,1)\n")
    assert error("--labels", "category", "--jobs", "0") == "error: --jobs: 0 must be at least 1\n"
    grid = tmp_path / "folder.yaml"
    grid.mkdir()
    assert error() == f"error: cannot read the grid file {grid}: Is a directory\n"
    assert not (tmp_path / "runs").exists()


def test_a_grid_file_error_exits_2_from_the_command_line(tmp_path):
    (tmp_path / "grid.yaml").write_text("labels: [category\n")
    proc = run_script("sweep.py", "--config", tmp_path / "grid.yaml", "--dry_run", check=False)
    assert (proc.returncode, proc.stdout) == (2, "")
    assert proc.stderr == (f"error: {tmp_path}/grid.yaml is not valid yaml (expected ',' or ']', but got "
                           "'<stream end>' at line 2, column 1)\n")


def test_a_grid_files_slurm_time_is_the_text_written(tmp_path, capsys):
    """YAML 1.1 reads 12:00:00 as the base-60 number 43200: the array asked SLURM for
    --time=43200, 30 days in its minutes."""
    (tmp_path / "grid.yaml").write_text("time: 12:00:00\nmem: 16G\nstages: train\n")
    script, _ = slurm_script(tmp_path, capsys, ["--config", str(tmp_path / "grid.yaml"), "--base_dir",
                                                str(tmp_path / "out")])
    lines = script.read_text().splitlines()
    assert "#SBATCH --time=12:00:00" in lines and "#SBATCH --mem=16G" in lines


def test_a_grid_files_number_with_a_leading_zero_is_read_as_on_the_command_line(tmp_path):
    """YAML 1.1 reads 010 as the octal 8 and 0x10 as 16: `seeds: [010]` trained seed 8 and
    `--epochs 010` in a list 8 epochs, where the command line's --seeds 010 is seed 10 (and 0x10
    no seed). Such a number is now text, read by its option as the command line reads it."""
    (tmp_path / "grid.yaml").write_text("seeds: [010, 7]\ntrain_args: [--epochs, 010]\n")
    _, runs, _, routed = sweep.parse(["--config", str(tmp_path / "grid.yaml"), "--dry_run"])
    assert [r.seed for r in runs] == [10, 7] and routed["train"] == ["--epochs", "010"]
    (tmp_path / "grid.yaml").write_text("seeds: [0x10]\n")
    with pytest.raises(UsageError, match=r"grid.yaml: seeds: '0x10' is not an int$"):
        sweep.parse(["--config", str(tmp_path / "grid.yaml"), "--dry_run"])


def test_a_grid_files_empty_key_is_the_default_and_a_number_is_text(tmp_path, capsys, monkeypatch):
    """A key left empty wrote #SBATCH --job-name=None and --signal=B:USR1@None, named the
    interpreter '', and was a traceback for max_array_size (and jobs under --local); setup: 5
    was a traceback too."""
    (tmp_path / "grid.yaml").write_text("job_name:\nsignal_seconds:\nmax_array_size:\npython:\njobs:\n"
                                        "partition:\nsetup: 5\nmem: 16\nstages: train\n")
    grid = ["--config", str(tmp_path / "grid.yaml"), "--base_dir", str(tmp_path / "out")]
    script, commands = slurm_script(tmp_path, capsys, grid)
    lines = script.read_text().splitlines()
    for line in ("#SBATCH --job-name=labelrep", "#SBATCH --signal=B:USR1@120", "#SBATCH --array=0-0",
                 "#SBATCH --mem=16", "5"):
        assert line in lines
    assert not any(line.startswith("#SBATCH --partition") for line in lines)
    assert commands.read_text().split()[2] == "python"  # after 'stage LOG'
    opts, *_ = sweep.parse(grid + ["--local"])
    assert (opts.jobs, opts.max_array_size, opts.python) == (1, 1000, "python")
    monkeypatch.setattr(sweep, "cores", lambda: range(4))
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(var, raising=False)
    assert sweep.local_slots(opts) == [{"OMP_NUM_THREADS": "4", "MKL_NUM_THREADS": "4"}]


# ---------------------------------------------------------------- what is done, what runs


def make_trained(run_dir, epochs=4, metrics=4, results=True, attack=None, num_images=20, images_sha256=None):
    """A run directory as train.py (and, given `attack`'s names, attack.py) leaves it; entries of
    `images_sha256` (`test_images_sha256` of the sweep's --data_dir) are done there."""
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps({"flags": {"epochs": epochs, "valid_size": 50}}))
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps({"epoch": e + 1}) + "\n" for e in range(metrics)))
    (run_dir / "last_checkpoint.pth").write_bytes(b"checkpoint")
    if results:  # a best checkpoint, named from the folder (model_category: category_seed3_resnet32_...)
        seed, model, label = run_dir.parts[-3].removeprefix("seed"), run_dir.parts[-2], run_dir.name[6:]
        (run_dir / best_checkpoint_name(label.split("_noise")[0].split("_smooth")[0], seed, model)).write_bytes(b"best")
        (run_dir / "results.json").write_text(json.dumps({"test_acc": 0.5, "epochs": epochs, "test_images": 100}))
    if attack is not None:
        entries = [{"attack": a, "targeted": False, "eps": 8 / 255, "eps_label": "8/255", "protocol": "pixel",
                    "steps": 1 if a == "fgsm" else 10, "step_size": 8 / 255 if a == "fgsm" else 2.5 * 8 / 255 / 10,
                    "restarts": 1, "num_images": num_images, "seed": 3, "robust_acc": 0.1,  # the runs' seed
                    "images_sha256": images_sha256}
                   for a in attack]
        (run_dir / ATTACK_RESULTS).write_text(json.dumps({"num_images": num_images, "clean_acc": 0.5,
                                                          "entries": entries}))
        (run_dir / "attack_examples.png").write_bytes(b"png")  # drawn after the last entry


def test_a_sweep_with_smoothing_trains_and_attacks_its_own_directories(capsys, tmp_path):
    """--smoothing goes to both stages: category's runs are model_category_smooth0.1 for train.py and
    attack.py alike (a label it acts on not), and the shell lines name it for both."""
    grid = ["--labels", "category", "speech", "--seeds", "3", "--base_dir", str(tmp_path), "--smoothing", "0.1"]
    rows = sweep_lines(capsys, grid + ["--dry_run"])[1:3]
    assert rows[0].endswith("/seed3/resnet32/model_category_smooth0.1") and rows[1].endswith("/model_speech")
    [category, _] = sweep_lines(capsys, grid + ["--print"])
    assert category.count("--smoothing 0.1") == 2 and "attack.py" in category


def test_a_fractional_level_is_trained_and_attacked_at_that_level(capsys, tmp_path):
    """--levels 2.5 is train.py's and attack.py's --level 2.5 (percent of the training split), in
    less/cifar10/level2.5, not level 2."""
    [line] = sweep_lines(capsys, ["--levels", "2.5", "--base_dir", str(tmp_path), "--print"])
    train, attack = line.split(" && ")
    assert "--level 2.5 " in train and "--level 2.5 " in attack
    row = sweep_lines(capsys, ["--levels", "2.5", "--base_dir", str(tmp_path), "--dry_run"])[1]
    assert row.endswith(f"{tmp_path}/less/cifar10/level2.5/seed0/resnet32/model_category")


def test_a_run_file_that_cannot_be_read_is_not_one_to_delete(capsys, tmp_path):
    """A results.json or attack_results.json this user may not read (another user's of mode 0600;
    here a FIFO, as root reads any file) was "not a valid JSON object (train.py will stop; delete it
    to retrain)": finished work, to be deleted for a permission. It says why it cannot be read."""
    run_dir = tmp_path / "cifar10" / "seed0" / "resnet32" / "model_category"
    make_trained(run_dir, attack=["fgsm"])
    (run_dir / "attack_results.json").unlink()
    os.mkfifo(run_dir / "attack_results.json")
    grid = ["--base_dir", str(tmp_path), "--epochs", "4", "--valid_size", "50", "--attacks", "fgsm",
            "--epsilons", "8/255", "--targeted", "no", "--num_images", "20", "--dry_run"]
    assert "run: attack_results.json cannot be read (not a regular file)" in sweep_lines(capsys, grid)[1]
    (run_dir / "results.json").unlink()
    os.mkfifo(run_dir / "results.json")
    assert "run: results.json cannot be read (not a regular file)" in sweep_lines(capsys, grid)[1]


def test_dry_run_and_print_follow_the_run_directories(capsys, tmp_path):
    base = tmp_path / "out"

    def run(label):
        return base / "cifar10" / "seed3" / "resnet32" / f"model_{label}"
    make_trained(run("category"), attack=["fgsm", "pgd"])                # complete
    make_trained(run("speech"), attack=["fgsm"])                         # pgd missing
    make_trained(run("shuffle"), metrics=2, results=False)               # killed after epoch 2
    for name in ("metrics.jsonl", "last_checkpoint.pth"):  # 3 hours ago: stopped, not training
        os.utime(run("shuffle") / name, (time.time() - 3 * 3600,) * 2)
    make_trained(run("uniform"), epochs=2, attack=["fgsm", "pgd"], num_images=10)
    make_trained(run("lowdim"), epochs=2, metrics=1, results=False)          # stopped, other --epochs
    make_trained(run("composite"))
    (run("composite") / "results.json").write_text("[0.5]")               # JSON, but not train.py's
    run("random").mkdir(parents=True)  # in its first epoch on another node, or failed before it
    (run("random") / "train.log").write_text("=== 2026-01-02T10:00:00: python train.py\n")
    os.utime(run("random") / "train.log", (time.time() + 600,) * 2)  # by a node whose clock is ahead
    grid = ["--labels", "category", "speech", "shuffle", "uniform", "random", "lowdim", "composite", "--seeds", "3",
            "--base_dir", str(base), "--epochs", "4", "--valid_size", "50",
            "--attacks", "fgsm", "pgd", "--epsilons", "8/255", "--targeted", "no", "--num_images", "20"]
    lines = sweep_lines(capsys, grid + ["--dry_run"])
    rows = {line.split()[1].split("/")[2]: line for line in lines[1:-2]}
    # uniform's, lowdim's and composite's training ends with an error line: the count says so
    assert lines[-2] == ("7 runs: 6 to run (3 of them refused by their script: --dry_run says why), "
                         "1 complete (skipped); train 5, attack 6")
    assert "skip: done, test_acc 0.5000" in rows["category"] and "skip: done (2 settings)" in rows["category"]
    assert "run: resume: 1 of 2 settings missing (pgd untargeted 8/255)" in rows["speech"]
    assert "run: resume (2/4 epochs logged; files last written 3 h ago)" in rows["shuffle"]
    assert "run: after train" in rows["shuffle"]
    assert ("run: finished, but trained with --epochs 2 (sweep: 4): train.py refuses it; delete the "
            "run directory to start over") in rows["uniform"] and "run: after train" in rows["uniform"]
    assert "run: new (files last written 10 min ahead of this machine's clock)" in rows["random"]
    assert str(run("random")) in rows["random"]
    assert ("run: cannot resume: trained with --epochs 2 (sweep: 4): train.py refuses it; delete the "
            "run directory to start over" in rows["lowdim"])
    assert ("run: results.json is not a valid JSON object (train.py will stop; delete it to retrain)"
            in rows["composite"] and "run: after train" in rows["composite"])

    lines = sweep_lines(capsys, grid + ["--print"])
    # uniform's and lowdim's training is printed too: train.py then says why it refuses (one line)
    assert [line.count("train.py") + 10 * line.count("attack.py") for line in lines] == [10, 11, 11, 11, 11, 11]
    speech, shuffle = lines[0], lines[1]
    assert speech.startswith("python ") and "--label speech" in speech and "--epochs" not in speech
    train, attack = shuffle.split(" && ")
    assert train.endswith("--epochs 4 --valid_size 50 --resume") and "--num_images 20" in attack
    assert "--label shuffle --level 100 --seed 3" in train and "--level 100 --seed 3" in attack


def test_a_dry_run_names_the_jobs_at_work_in_its_runs(capsys, tmp_path):
    """sweep.py --dry_run, run again and again to watch a sweep, said of a run in its first epoch
    'run: new', as of one never started, and counted runs other jobs were training or attacking
    with those left to do: a second sweep started on the grid then failed them ('is in use by
    train.py ...') with no word before. The job that holds a run's lock names itself there
    (`utils.runs.run_holder`): its stage's note says it is in progress and by whom, the count and
    the JSON line count such runs apart; the record of a job killed outright names no one."""
    import socket
    from contextlib import ExitStack
    from test_runs import SINCE, dead_pid, held_by
    base = tmp_path / "out"

    def run(label):
        return base / "cifar10" / "seed3" / "resnet32" / f"model_{label}"
    make_trained(run("category"), attack=["fgsm", "pgd"])              # complete
    make_trained(run("speech"), attack=["fgsm"])                       # attacked now: pgd to come
    make_trained(run("shuffle"), metrics=2, results=False)             # training now, after epoch 2
    run("random").mkdir(parents=True)                                  # in its first epoch now
    make_trained(run("uniform"), metrics=2, results=False)             # killed outright after epoch 2
    (run("uniform") / ".lock").write_text(json.dumps({"script": "train.py", "pid": dead_pid(), "since": 1767369934,
                                                      "host": socket.gethostname(), "slurm_job": None}))
    grid = ["--labels", "category", "speech", "shuffle", "random", "uniform", "--seeds", "3", "--base_dir", str(base),
            "--epochs", "4", "--valid_size", "50", "--attacks", "fgsm", "pgd", "--epsilons", "8/255",
            "--targeted", "no", "--num_images", "20", "--dry_run"]
    with ExitStack() as jobs:
        by = {label: f"in progress by {script} (pid {jobs.enter_context(held_by(tmp_path, script, 'run_lock', run(label))).pid} "
                     f"on {socket.gethostname()}, {SINCE}): "
              for script, label in (("attack.py", "speech"), ("train.py", "shuffle"), ("train.py", "random"))}
        lines = sweep_lines(capsys, grid)
    rows = {line.split()[1].split("/")[2]: line for line in lines[1:-2]}
    assert f"run: {by['random']}in its first epoch  run: after train" in rows["random"]
    assert f"run: {by['shuffle']}resume (2/4 epochs logged; files last written " in rows["shuffle"]
    assert f"run: {by['speech']}resume: 1 of 2 settings missing (pgd untargeted 8/255)" in rows["speech"]
    assert "skip: done (2 settings)" in rows["category"]
    assert "run: resume (2/4 epochs logged; files last written " in rows["uniform"] and "in progress" not in rows["uniform"]
    assert lines[-2] == ("5 runs: 4 to run (3 of them in progress in another job: --dry_run names it), "
                         "1 complete (skipped); train 3, attack 4")
    assert json.loads(lines[-1]) == {"runs": 5, "to_run": 4, "running": 3}


def test_an_attack_stopped_before_its_figure_is_not_done(capsys, tmp_path):
    """attack.py draws attack_examples.png after its last setting's entry is written: a job killed
    in between (SIGKILL while it drew; SIGTERM after the last setting, exit 75 before attack.py
    went on to draw it then; a full disk) left every entry there, and the sweep skipped the run
    ever after, without the figure. attack.py run again reuses every entry and draws it; with
    --examples 0, or no checkpoint to draw from, the run is done."""
    run = tmp_path / "cifar10" / "seed3" / "resnet32" / "model_category"
    make_trained(run, attack=["fgsm"])
    (run / "attack_examples.png").unlink()
    grid = ["--labels", "category", "--seeds", "3", "--base_dir", str(tmp_path), "--epochs", "4", "--valid_size",
            "50", "--attacks", "fgsm", "--epsilons", "8/255", "--targeted", "no", "--num_images", "20"]
    row = sweep_lines(capsys, grid + ["--dry_run"])[1]
    assert "skip: done, test_acc 0.5000  run: resume: no attack_examples.png (drawn, nothing attacked)" in row
    [line] = sweep_lines(capsys, grid + ["--print"])
    assert "train.py" not in line and "attack.py" in line
    assert "skip: done (1 setting)" in sweep_lines(capsys, grid + ["--examples", "0", "--dry_run"])[1]
    (run / "category_seed3_resnet32_best_model.pth").unlink()  # a study copied back without checkpoints
    assert "skip: done (1 setting)" in sweep_lines(capsys, grid + ["--dry_run"])[1]


def test_a_long_note_in_the_dry_run_widens_its_own_row_alone(capsys, tmp_path):
    """A refusal's reason (115 characters) was the width of its stage's column in every row: each
    row of the table ran past 200 characters, wrapped three or four times at 80 columns. The other
    rows keep their columns; no row ends in spaces."""
    def run(label):
        return tmp_path / "cifar10" / "seed3" / "resnet32" / f"model_{label}"
    make_trained(run("category"), attack=["fgsm"])
    make_trained(run("uniform"), epochs=2)  # refused: trained with --epochs 2
    lines = sweep_lines(capsys, ["--labels", "category", "uniform", "--seeds", "3", "--base_dir", str(tmp_path),
                                 "--epochs", "4", "--valid_size", "50", "--attacks", "fgsm", "--epsilons", "8/255",
                                 "--targeted", "no", "--num_images", "20", "--dry_run"])
    refusal = ("run: finished, but trained with --epochs 2 (sweep: 4): train.py refuses it; delete the run "
               "directory to start over")
    name = "cifar10/resnet32/category/level100/seed3"
    train, attack = "skip: done, test_acc 0.5000", "skip: done (1 setting)"  # their columns' widths
    assert lines[:3] == [
        f"#  {'run':{len(name)}}  {'train':{len(train)}}  {'attack':{len(attack)}}  run directory",
        f"0  {name}  {train}  {attack}  {run('category')}",
        f"1  {'cifar10/resnet32/uniform/level100/seed3':{len(name)}}  {refusal}  "
        f"{'run: after train':{len(attack)}}  {run('uniform')}"]


def test_a_run_that_trains_again_is_attacked_again(capsys, tmp_path):
    """Training a run that is not done (resumed, or started over at epoch 1, which removes its
    attack results) gives it another best checkpoint: the attack results of its earlier model are
    not the trained run's. The dry run listed them as done, and the sweep trained the run and
    skipped its attack."""
    run = tmp_path / "cifar10" / "seed3" / "resnet32" / "model_category"
    make_trained(run, metrics=2, results=False, attack=["fgsm"])  # stopped after epoch 2, attacked then
    grid = ["--labels", "category", "--seeds", "3", "--base_dir", str(tmp_path), "--epochs", "4",
            "--valid_size", "50", "--attacks", "fgsm", "--epsilons", "8/255", "--targeted", "no",
            "--num_images", "20"]
    row = sweep_lines(capsys, grid + ["--dry_run"])[1]
    assert "run: resume (2/4 epochs logged" in row and "run: after train" in row
    [line] = sweep_lines(capsys, grid + ["--print"])
    train, attack = line.split(" && ")
    assert "train.py" in train and "attack.py" in attack


def test_a_run_of_other_than_the_default_batch_size_or_lr_is_not_done(capsys, tmp_path):
    """A sweep that leaves --batch_size and --lr unset asks for train.py's defaults of each label
    (128 and 0.1; 1000 and 0.01 for mcr2): a run trained with --batch_size 64 (a trial's
    --train_args) is not done, as train.py refuses it; the dry run skipped it as done."""
    base = tmp_path / "out"
    trained = {"category": {"batch_size": 64, "lr": 0.1}, "speech": {"batch_size": 128, "lr": 0.05},
               "mcr2": {"batch_size": 1000, "lr": 0.01}}
    for label, flags in trained.items():
        run_dir = base / "cifar10" / "seed3" / "resnet32" / f"model_{label}"
        make_trained(run_dir, results=label != "speech")  # speech: stopped after its 4 epochs' checkpoint
        (run_dir / "config.json").write_text(json.dumps({"flags": {"label": label, "epochs": 4, **flags}}))
    grid = ["--labels", *trained, "--seeds", "3", "--base_dir", str(base), "--epochs", "4", "--stages", "train"]
    rows = {line.split()[1].split("/")[2]: line for line in sweep_lines(capsys, grid + ["--dry_run"])[1:-2]}
    assert ("run: finished, but trained with --batch_size 64 (sweep: 128): train.py refuses it"
            in rows["category"])
    assert "run: cannot resume: trained with --lr 0.05 (sweep: 0.1): train.py refuses it" in rows["speech"]
    assert "skip: done, test_acc 0.5000" in rows["mcr2"]
    rows = sweep_lines(capsys, grid + ["--train_args", "--batch_size 64", "--dry_run"])
    assert "skip: done, test_acc 0.5000" in rows[1] and "--batch_size 1000 (sweep: 64)" in rows[3]


def test_a_dry_run_and_a_report_read_the_runs_without_torch(tmp_path, label_dir, cifar10_dir):
    """What is done, what a run trained with (its images too) and what it asks of attack.py are read
    without torch: loading it took half of the 7 s and 600 of the 640 MB of a 1,458-run dry run,
    and 470 MB of a report's."""
    from utils.grid import test_images_sha256
    base = tmp_path / "out"
    images = test_images_sha256("cifar10", cifar10_dir, "fine", 20)
    make_trained(base / "cifar10/seed3/resnet32/model_category", attack=["fgsm", "pgd"], images_sha256=images)
    make_trained(base / "cifar10/seed4/resnet32/model_category", epochs=2, attack=["fgsm", "pgd"],
                 images_sha256=images)
    make_trained(base / "cifar10/seed3/resnet32/model_speech", metrics=2, results=False)
    (base / "cifar10/seed3/resnet32/model_speech/config.json").write_text(json.dumps(  # other images
        {"flags": {"epochs": 4, "valid_size": 50}, "data_sha256": "0" * 64}))
    grid = tmp_path / "grid.yaml"
    grid.write_text(f"labels: [category, speech]\nseeds: [3, 4]\nargs: --base_dir {base} --label_dir "
                    f"{label_dir} --data_dir {cifar10_dir}\ntrain_args: --epochs 4 --valid_size 50\n"
                    "attack_args: --attacks fgsm pgd "
                    "--epsilons 8/255 --targeted no --num_images 20\n")
    commands = {"sweep.py": ["--config", grid, "--dry_run"],
                "report.py": ["--base_dir", base, "--out", tmp_path / "report", "--grid", grid,
                              "--no_figures"]}
    outputs = {}
    for script, argv in commands.items():
        proc, imported, said = run_importing(script, *argv)
        assert proc.returncode == 0, said[-20:]
        assert "yaml" in imported and "torch" not in imported, f"{script} loaded torch"
        outputs[script] = proc.stdout
    assert "run: finished, but trained with --epochs 2 (sweep: 4)" in outputs["sweep.py"]
    assert (f"run: cannot resume: trained with other images or labels than {cifar10_dir} holds"
            in outputs["sweep.py"])
    assert outputs["sweep.py"].splitlines()[-1] == '{"runs": 4, "to_run": 3, "running": 0}'
    tables = (tmp_path / "report" / "tables.md").read_text()  # what the sweep refuses, the report leaves out
    assert "left out of the tables: trained with --epochs 2 (the grid: 4), not as the grid asks" in tables
    assert (f"left out of the tables: trained with other images or labels than {cifar10_dir} holds (another "
            "copy of cifar10?), not as the grid asks" in tables)
    written = json.loads(outputs["report.py"].splitlines()[-1])
    assert written["missing"] == 1
    # the `files` written, as docs/experiments.md says: summary.json, every run's numbers, among them
    assert sorted(written["files"]) == sorted(p.name for p in (tmp_path / "report").iterdir())
    assert "summary.json" in written["files"]


def test_a_run_stopped_before_its_first_checkpoint_starts_over(capsys, tmp_path, cifar10_dir, label_dir):
    """metrics.jsonl with epochs but no last checkpoint (killed before its first one, written after
    --checkpoint_seconds): the dry run said 'new'; train.py --resume trains it from epoch 1."""
    base = tmp_path / "out"
    run_dir = base / "cifar10" / "seed3" / "resnet32" / "model_category"
    make_trained(run_dir, epochs=1, metrics=3, results=False)
    (run_dir / LAST_CHECKPOINT).unlink()
    grid = ["--labels", "category", "--seeds", "3", "--stages", "train", *tiny(cifar10_dir, label_dir, base)]
    [header, row, count, summary] = sweep_lines(capsys, grid + ["--dry_run"])
    assert json.loads(summary) == {"runs": 1, "to_run": 1, "running": 0}  # a notebook's last line
    assert "run: start over (3 epochs logged, no checkpoint to resume from; files last written " in row
    [line] = sweep_lines(capsys, grid + ["--print"])
    argv = shlex.split(line)
    assert argv[1:2] == ["train.py"] and argv[-1] == "--resume"
    proc = run_script(*argv[1:])
    assert "resuming" not in proc.stderr
    assert [json.loads(r)["epoch"] for r in (run_dir / "metrics.jsonl").read_text().splitlines()] == [1]


def test_a_run_that_lost_its_last_checkpoint_is_not_done(capsys, tmp_path):
    """A best checkpoint, but neither the last one nor results.json (the last deleted for space
    before the run ended): not skipped as done; the dry run says why train.py will refuse it."""
    run_dir = tmp_path / "cifar10" / "seed3" / "resnet32" / "model_category"
    make_trained(run_dir, results=False)
    (run_dir / LAST_CHECKPOINT).rename(run_dir / "category_seed3_resnet32_best_model.pth")
    grid = ["--seeds", "3", "--stages", "train", "--base_dir", str(tmp_path), "--dry_run"]
    [_, row, count, _] = sweep_lines(capsys, grid)
    assert ("run: cannot resume: a best checkpoint but no last_checkpoint.pth: train.py refuses it; delete "
            "the run directory to start over") in row
    assert count == ("1 run: 1 to run (1 of them refused by their script: --dry_run says why), 0 complete "
                     "(skipped); train 1")


def test_a_run_file_edited_to_a_value_of_another_kind_is_train_pys_refusal(capsys, tmp_path):
    """A finished run whose config.json was edited by hand to the text "4" for --epochs 4: train.py
    refuses it, naming the file and value (`mistyped`), but the dry run said 'trained with --epochs 4
    (sweep: 4): ... delete the run directory to start over', a change that is none and the advice to
    delete a finished run. A run still to resume was 'cannot resume' alike, where train.py compares
    its checkpoint, not config.json, and resumes it."""
    run_dir = tmp_path / "cifar10" / "seed3" / "resnet32" / "model_category"
    make_trained(run_dir)
    (run_dir / "config.json").write_text(json.dumps({"flags": {"epochs": "4", "valid_size": 50}}))
    grid = ["--seeds", "3", "--stages", "train", "--base_dir", str(tmp_path), "--epochs", "4",
            "--valid_size", "50", "--dry_run"]
    [_, row, count, _] = sweep_lines(capsys, grid)
    assert ('run: finished, but train.py refuses it: config.json records epochs "4" (text, not a number), which '
            "train.py never writes (edited by hand?); put back the values the run trained with") in row
    assert count == ("1 run: 1 to run (1 of them refused by their script: --dry_run says why), 0 complete "
                     "(skipped); train 1")
    (run_dir / "results.json").unlink()
    [_, row, count, _] = sweep_lines(capsys, grid)
    assert "run: resume (4/4 epochs logged; files last written" in row
    assert count == "1 run: 1 to run, 0 complete (skipped); train 1"


def test_a_smoothed_run_in_the_older_place_is_train_pys_refusal(capsys, tmp_path):
    """A --smoothing 0.1 run that a labelrep before b6cdd9e put in model_category: train.py says to
    move it to model_category_smooth0.1, asked for it or for the unsmoothed run. The dry run said
    `run: new` of the first (a run to train from epoch 1 beside it) and of the second 'trained with
    --smoothing 0.1 (sweep: 0): ... delete the run directory to start over', which deleted it. attack.py
    refuses either with the same line; an attack-only sweep's dry run said `run: new` of both."""
    seed_dir = tmp_path / "cifar10" / "seed3" / "resnet32"
    make_trained(seed_dir / "model_category")
    (seed_dir / "model_category" / "config.json").write_text(json.dumps(
        {"flags": {"epochs": 4, "valid_size": 50, "smoothing": 0.1}}))
    grid = ["--seeds", "3", "--base_dir", str(tmp_path), "--epochs", "4", "--valid_size", "50", "--dry_run"]
    said = (f"{seed_dir / 'model_category'} holds {{}} --smoothing 0.1 run: a labelrep before b6cdd9e wrote it "
            f"there; move it to {seed_dir / 'model_category_smooth0.1'}, where train.py, attack.py and report.py "
            "look for it now")
    refused = "1 run: 1 to run (1 of them refused by their script: --dry_run says why), 0 complete (skipped); {} 1"
    # an attack-only sweep said `run: new` of the unsmoothed run, whose attack.py refused the smoothed checkpoint
    for stage in ("train", "attack"):
        [_, row, count, _] = sweep_lines(capsys, grid + ["--stages", stage, "--smoothing", "0.1"])
        assert f"run: {stage}.py refuses it: {said.format('this')}  " in row and count == refused.format(stage)
        [_, row, count, _] = sweep_lines(capsys, grid + ["--stages", stage])
        assert f"run: {stage}.py refuses it: {said.format('no run without --smoothing but a')}, then run this again  " \
            in row and count == refused.format(stage)


def test_a_grid_path_the_locale_cannot_write_is_one_error_line(tmp_path):
    """A grid file (UTF-8) naming a --base_dir with an 'é', swept in an ASCII locale (LANG=C with
    PYTHONUTF8=0): a UnicodeEncodeError traceback from the first look at that folder; now one line
    that says how to run it."""
    grid = tmp_path / "grid.yaml"
    grid.write_text(f'labels: [category]\nseeds: [3]\nargs: --base_dir "{tmp_path}/runs é"\n', encoding="utf-8")
    proc = run_script("sweep.py", "--config", grid, "--dry_run", check=False,
                      env={"LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"})
    assert (proc.returncode, proc.stdout) == (2, "")
    assert proc.stderr == ("error: '\\xe9' cannot be written in this locale's encoding (ascii); run with "
                           "PYTHONUTF8=1 or a UTF-8 locale (LC_ALL=C.UTF-8)\n")


def test_pythonioencoding_named_where_it_sets_the_encoding_that_failed(tmp_path):
    """PYTHONIOENCODING=ascii sets stdout's encoding over PYTHONUTF8 and the locale: the error line's
    advice alone (PYTHONUTF8=1, LC_ALL=C.UTF-8) left --print's 'é' as unwritable as before."""
    proc = run_script("sweep.py", "--seeds", "3", "--stages", "train", "--base_dir", tmp_path / "runs é",
                      "--print", check=False, env={"PYTHONIOENCODING": "ascii", "PYTHONUTF8": "1"})
    assert (proc.returncode, proc.stdout) == (2, "")
    assert proc.stderr == ("error: '\\xe9' cannot be written in this locale's encoding (ascii); run with "
                           "PYTHONUTF8=1 or a UTF-8 locale (LC_ALL=C.UTF-8), and PYTHONIOENCODING unset (its "
                           "'ascii' sets stdout's encoding over both)\n")


def not_utf8_folder(tmp_path):
    """A folder under `tmp_path` whose name is not UTF-8 (b'runs \\xff': latin-1 on a UTF-8 system,
    which Python keeps as a lone surrogate), as bytes; the test skips where the file system refuses it."""
    folder = os.fsencode(tmp_path / "runs") + b" \xff"
    try:
        os.mkdir(folder)
    except OSError:
        pytest.skip("this file system refuses a name that is not UTF-8")
    return folder


def sweep_bytes(*argv, env=None):
    """sweep.py run with bytes arguments; its stdout as bytes. It must exit 0 (a traceback is 1)."""
    proc = subprocess.run([sys.executable, REPO / "sweep.py", *argv], capture_output=True, cwd=REPO,
                          env={**plain_env(), **(env or {})}, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_a_folder_name_that_is_not_utf8_is_printed_as_its_bytes(tmp_path):
    """A --base_dir whose name is not UTF-8, swept where stdout's UTF-8 is strict (LANG=en_US.UTF-8;
    PYTHONIOENCODING=utf-8): --print and --dry_run ended in a UnicodeEncodeError traceback ('surrogates
    not allowed'); now the shell line and the table name the folder by its own bytes."""
    folder = not_utf8_folder(tmp_path)
    grid, strict = ["--seeds", "3", "--stages", "train", "--base_dir", folder], {"PYTHONIOENCODING": "utf-8"}
    assert sweep_bytes(*grid, "--print", env=strict) == (
        b"python train.py --dataset cifar10 --model resnet32 --label category --level 100 --seed 3 "
        b"--base_dir '" + folder + b"' --resume\n")
    row = sweep_bytes(*grid, "--dry_run", env=strict).splitlines()[1]
    assert row.endswith(b"  " + folder + b"/cifar10/seed3/resnet32/model_category")


def test_a_slurm_script_in_a_folder_not_utf8_is_written(tmp_path):
    """--slurm and --base_dir in a folder whose name is not UTF-8, in any locale: the commands file's
    name hashed its text's str.encode(), a UnicodeEncodeError traceback before any file was written;
    now the commands file and the script name the folder by its own bytes."""
    folder = not_utf8_folder(tmp_path)
    script = folder + b"/jobs.sbatch"
    sweep_bytes("--seeds", "3", "--stages", "train", "--base_dir", folder, "--slurm", script)
    [commands] = [folder + b"/" + name for name in os.listdir(folder) if name.endswith(b".commands")]
    with open(commands, "rb") as f:
        assert f.read().endswith(b" --base_dir '" + folder + b"' --resume\n")
    with open(script, "rb") as f:
        assert b"\ncommands='" + commands + b"'\n" in f.read()


# ---------------------------------------------------------------- SLURM


def slurm_script(tmp_path, capsys, grid, *flags):
    script = tmp_path / "jobs" / "sweep.sbatch"
    summary = json.loads(sweep_lines(capsys, grid + ["--slurm", str(script), *flags])[-1])
    assert summary["script"] == str(script)
    return script, Path(summary["commands"])


@pytest.mark.parametrize("umask", [0o077, 0o002], ids=["umask077", "umask002"])
def test_slurm_script_has_the_umasks_permissions(tmp_path, capsys, umask):
    """The job script is executable as far as the umask lets it be, like the commands file beside
    it: it was made 0755 whatever the umask, readable by all under umask 077, not by a group's
    writers under 002."""
    before = os.umask(umask)
    try:
        script, commands = slurm_script(tmp_path, capsys, ["--seeds", "3", "--base_dir", str(tmp_path / "out")])
    finally:
        os.umask(before)
    assert stat.S_IMODE(script.stat().st_mode) == 0o777 & ~umask
    assert stat.S_IMODE(commands.stat().st_mode) == 0o666 & ~umask


def test_slurm_script_header_and_commands(tmp_path, capsys, cifar10_dir, label_dir):
    grid = ["--labels", "category", "speech", "--levels", "100", "20", "--seeds", "3",
            *tiny(cifar10_dir, label_dir, tmp_path / "out"), *ATTACK_FLAGS]
    script, commands = slurm_script(tmp_path, capsys, grid, "--partition", "gpu", "--gres", "gpu:1",
                                    "--time", "4:00:00", "--mem", "16G", "--max_concurrent", "2",
                                    "--sbatch", "account=proj", "qos=high", "--setup", "source /dev/null")
    text = script.read_text()
    for line in ("#SBATCH --array=0-3%2", "#SBATCH --partition=gpu", "#SBATCH --gres=gpu:1",
                 "#SBATCH --time=4:00:00", "#SBATCH --mem=16G", "#SBATCH --account=proj",
                 "#SBATCH --qos=high", "#SBATCH --requeue", "#SBATCH --signal=B:USR1@120",
                 f"#SBATCH --output={tmp_path}/jobs/logs/%A_%a.out", "\nsource /dev/null\n",
                 "scontrol requeue \"${SLURM_ARRAY_JOB_ID}_${task}\""):
        assert line in text, line
    assert (tmp_path / "jobs" / "logs").is_dir() and os.access(script, os.X_OK)
    assert subprocess.run(["bash", "-n", str(script)], check=False).returncode == 0
    tasks = commands.read_text().splitlines()
    assert len(tasks) == 4 and all(t.startswith("stage ") and " && stage " in t for t in tasks)
    assert "/less/cifar10/level20/seed3/resnet32/model_category/train.log python" in tasks[1]
    proc = subprocess.run(["bash", str(script)], env=plain_env() | {"SLURM_ARRAY_TASK_ID": "4"},
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 2 and "no line 5 in" in proc.stderr


def test_flags_of_another_mode_are_named_as_ignored(tmp_path, capsys):
    """--gpus 0 with --slurm wrote a script with no GPU request, and --partition with --local or
    --print went without a word."""
    base = ["--seeds", "3", "--base_dir", str(tmp_path / "out")]
    sweep.main(base + ["--gpus", "0", "--slurm", str(tmp_path / "s.sbatch")])
    assert capsys.readouterr().err.splitlines()[0] == "warning: --gpus only acts with --local; ignored with --slurm"
    sweep.main(base + ["--partition", "gpu", "--time", "1:00:00", "--jobs", "2", "--print"])
    assert capsys.readouterr().err.splitlines()[:2] == [
        "warning: --jobs only acts with --local; ignored with --print",
        "warning: --partition, --time only act with --slurm; ignored with --print"]
    sweep.main(base + ["--partition", "gpu", "--slurm", str(tmp_path / "s.sbatch"), "--dry_run"])
    assert "warning" not in capsys.readouterr().err
    # a grid file's keys of both modes: one grid for the cluster and a workstation, run either way quietly
    grid = tmp_path / "grid.yaml"
    grid.write_text("seeds: [3]\njobs: 2\npartition: gpu\ntime: '1:00:00'\n")
    for mode in (["--print"], ["--slurm", str(tmp_path / "s.sbatch")]):
        sweep.main(["--config", str(grid), "--base_dir", str(tmp_path / "out"), *mode])
        assert "warning" not in capsys.readouterr().err
    sweep.main(["--config", str(grid), "--base_dir", str(tmp_path / "out"), "--print", "--gres", "gpu:1"])
    assert capsys.readouterr().err.splitlines()[0] == "warning: --gres only acts with --slurm; ignored with --print"


def test_gpus_with_jobs_is_refused_only_where_they_act(tmp_path, capsys):
    """--gpus 0 --jobs 2 on a --slurm or --print line (a --local command copied): sweep.py warned that
    both were ignored, then refused the pair; now the warning alone, and the script is written.
    Where they act (--local, a dry run) the pair is still refused."""
    base = ["--seeds", "3", "--base_dir", str(tmp_path / "out"), "--gpus", "0", "--jobs", "2"]
    script = tmp_path / "s.sbatch"
    assert call_cli(sweep.main, base + ["--slurm", str(script)]) == 0
    assert capsys.readouterr().err.splitlines()[0] == (
        "warning: --gpus, --jobs only act with --local; ignored with --slurm")
    assert script.is_file()
    assert call_cli(sweep.main, base + ["--print"]) == 0
    assert capsys.readouterr().err.splitlines()[0] == (
        "warning: --gpus, --jobs only act with --local; ignored with --print")
    assert call_cli(sweep.main, base + ["--dry_run"]) == 2
    assert capsys.readouterr().err == ("error: --jobs 2 is for runs on the CPU; with --gpus, list an id twice "
                                       "to run two runs on that GPU (0,0,1,1)\n")


def test_a_stages_args_without_its_stage_is_named_as_ignored(tmp_path, capsys):
    """--attack_args with --stages train (or --train_args with --stages attack) went without a word;
    a grid file's, which serve every --stages, stay quiet."""
    base = ["--seeds", "3", "--base_dir", str(tmp_path / "out"), "--print"]
    sweep.main(base + ["--stages", "train", "--attack_args", "--num_images 100"])
    assert capsys.readouterr().err.splitlines()[0] == (
        "warning: --attack_args ignored: --stages train runs no attack stage")
    sweep.main(base + ["--stages", "attack", "--train_args", "--epochs 3"])
    assert capsys.readouterr().err.splitlines()[0] == (
        "warning: --train_args ignored: --stages attack runs no train stage")
    grid = tmp_path / "grid.yaml"
    grid.write_text("seeds: [3]\ntrain_args: '--epochs 3'\nattack_args: '--num_images 100'\n")
    for stage in ("train", "attack"):
        sweep.main(["--config", str(grid), "--base_dir", str(tmp_path / "out"), "--print", "--stages", stage])
        assert "warning" not in capsys.readouterr().err


def test_a_failing_setup_line_ends_the_task(tmp_path, capsys):
    """--setup "source .venv/bin/activate" with no .venv: the task went on with whatever python was
    on PATH. A line that succeeds acts in the script's shell (an export reaches the commands)."""
    grid = ["--seeds", "3", "--base_dir", str(tmp_path / "out"), "--stages", "train", "--python", "echo"]
    script, _ = slurm_script(tmp_path, capsys, grid, "--setup", "export LABELREP_MARK=set  # a comment",
                             "source missing/bin/activate")
    proc = subprocess.run(["bash", str(script)], env=plain_env() | {"SLURM_ARRAY_TASK_ID": "0"},
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 2 and "train.py" not in proc.stderr
    assert proc.stderr.splitlines()[-1] == "error: --setup line failed: source missing/bin/activate (exit 1)"
    script.unlink()
    script, _ = slurm_script(tmp_path, capsys, grid, "--setup", "export LABELREP_MARK=set  # a comment",
                             "[ $LABELREP_MARK = set ]")
    proc = subprocess.run(["bash", str(script)], env=plain_env() | {"SLURM_ARRAY_TASK_ID": "0"},
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0 and "task 0: exit 0" in proc.stderr, proc.stderr


def test_a_stage_whose_log_cannot_be_written_is_one_line_and_not_run(tmp_path, capsys):
    """A task resumed by another user of a shared study, whose run folder and logs were made under
    umask 022: bash said "Permission denied" twice, ran nothing, and printed the tail of the other
    user's last attempt as if it were this one's. Now one error line names the log and the stage
    is not started (a folder where the log should be stands for the file root could write)."""
    ran = tmp_path / "ran"
    stage = tmp_path / "stage"
    stage.write_text(f"#!/bin/sh\ntouch {ran}\n")
    stage.chmod(0o755)
    grid = ["--seeds", "3", "--base_dir", str(tmp_path / "out"), "--stages", "train", "--python", str(stage)]
    script, _ = slurm_script(tmp_path, capsys, grid)
    log = tmp_path / "out" / "cifar10" / "seed3" / "resnet32" / "model_category" / "train.log"
    log.mkdir(parents=True)
    proc = subprocess.run(["bash", str(script)], env=plain_env() | {"SLURM_ARRAY_TASK_ID": "0"},
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 2 and not ran.exists()
    assert proc.stderr.splitlines()[1:] == [f"error: could not write {log}: Is a directory; train.py not started"]


def test_a_stage_log_that_is_a_symbolic_link_is_not_written_through(tmp_path, capsys, cifar10_dir, label_dir):
    """A run folder copied from elsewhere whose train.log is a symbolic link to a file of this user's
    (~/.bashrc): the stage's === header and its whole output were appended to that file, by a local
    sweep (open_log) and by an array task (bash's >>). Now the link is not followed: a local sweep is
    one error line before any stage starts, an array task's stage is not started, a stage whose log
    became a link after the sweep's check fails 'not started'; the file it names is as it was."""
    ran, victim = tmp_path / "ran", tmp_path / "bashrc"
    stage = tmp_path / "stage"
    stage.write_text(f"#!/bin/sh\ntouch {ran}\n")
    stage.chmod(0o755)
    victim.write_text("alias ll='ls -l'\n")
    run_dir = tmp_path / "out" / "cifar10" / "seed3" / "resnet32" / "model_category"
    run_dir.mkdir(parents=True)
    (run_dir / "train.log").symlink_to(victim)
    said = f"cannot use {run_dir / 'train.log'}: a symbolic link (to {victim}), not followed; remove it"
    with pytest.raises(UsageError) as refused:
        sweep.main(["--seeds", "3", "--stages", "train", "--local", *tiny(cifar10_dir, label_dir, tmp_path / "out")])
    assert str(refused.value) == said
    grid = ["--seeds", "3", "--base_dir", str(tmp_path / "out"), "--stages", "train", "--python", str(stage)]
    script, _ = slurm_script(tmp_path, capsys, grid)
    proc = subprocess.run(["bash", str(script)], env=plain_env() | {"SLURM_ARRAY_TASK_ID": "0"},
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 2 and not ran.exists()
    assert proc.stderr.splitlines()[1:] == [f"error: {said}; train.py not started"]
    task = Task(0, Run("cifar10", "resnet32", "category", 100, 3), run_dir, ("train",), ["train"], {},
                {"train": [str(stage)]})
    [outcome] = sweep.LocalPool([task], [{}], stream=io.StringIO()).run()
    assert (outcome["status"], outcome["note"], ran.exists()) == (None, f"error: {said}", False)
    assert victim.read_text() == "alias ll='ls -l'\n"


def test_a_task_runs_on_its_cpus_per_task_threads(tmp_path, capsys):
    """torch reads MKL_NUM_THREADS before OMP_NUM_THREADS: one exported where the array was submitted
    (sbatch passes that environment on) outweighed the OMP_NUM_THREADS that --cpus_per_task set."""
    threads = tmp_path / "threads"
    threads.write_text('#!/bin/sh\necho "$OMP_NUM_THREADS $MKL_NUM_THREADS"\n')
    threads.chmod(0o755)
    grid = ["--seeds", "3", "--base_dir", str(tmp_path / "out"), "--stages", "train", "--python", str(threads)]
    script, _ = slurm_script(tmp_path, capsys, grid, "--cpus_per_task", "2")
    env = {"SLURM_ARRAY_TASK_ID": "0", "SLURM_CPUS_PER_TASK": "2", "MKL_NUM_THREADS": "8"}
    proc = subprocess.run(["bash", str(script)], env=plain_env() | env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    log = tmp_path / "out" / "cifar10" / "seed3" / "resnet32" / "model_category" / "train.log"
    assert log.read_text().splitlines()[-1] == "2 2"


def test_nothing_to_submit_removes_the_earlier_script(tmp_path, capsys, cifar10_dir, label_dir):
    """`sweep.py --slurm F && sbatch F` submitted the last sweep's array again once every run was
    done; a file sweep.py did not write is left alone."""
    grid = ["--labels", "category", "--seeds", "3", *tiny(cifar10_dir, label_dir, tmp_path / "out"),
            "--stages", "train"]
    script, commands = slurm_script(tmp_path, capsys, grid)
    assert sweep.drop_old_script(script) == f"; removed the earlier {script}, so it is not submitted again"
    assert not script.exists() and commands.exists()  # tasks still queued read the commands file
    assert sweep.drop_old_script(script) == ""
    other = tmp_path / "mine.sbatch"
    other.write_text("#!/bin/bash\n#SBATCH --array=0-9\n")
    assert sweep.drop_old_script(other) == "" and other.exists()


def test_a_slurm_sweep_with_every_run_done_writes_no_script(tmp_path, capsys, cifar10_dir, label_dir):
    """Once its runs are done, `sweep.py --slurm F` says so, removes the earlier F and prints a
    summary of no tasks and no script, which a submitting wrapper reads before `sbatch F`."""
    grid = ["--labels", "category", "--seeds", "3", *tiny(cifar10_dir, label_dir, tmp_path / "out"),
            "--stages", "train"]
    script, _ = slurm_script(tmp_path, capsys, grid)
    make_trained(tmp_path / "out" / "cifar10" / "seed3" / "resnet32" / "model_category", epochs=1)
    assert sweep.main(grid + ["--slurm", str(script)]) == {"runs": 1, "tasks": 0, "script": None}
    out, err = capsys.readouterr()
    assert json.loads(out) == {"runs": 1, "tasks": 0, "script": None}
    assert err == (f"1 run: 0 to run, 1 complete (skipped); train 0: nothing to submit, no script written; "
                   f"removed the earlier {script}, so it is not submitted again\n")
    assert not script.exists()


def test_the_slurm_message_counts_its_tasks(tmp_path, capsys, cifar10_dir, label_dir):
    """A grid of one run wrote "(1 array tasks)"."""
    grid = ["--labels", "category", "--seeds", "3", *tiny(cifar10_dir, label_dir, tmp_path / "out")]
    sweep.main(grid + ["--slurm", str(tmp_path / "jobs" / "sweep.sbatch")])
    assert f"wrote {tmp_path / 'jobs' / 'sweep.sbatch'} (1 array task) and " in capsys.readouterr().err


def test_a_large_grid_goes_to_arrays_slurm_accepts_and_queued_tasks_keep_their_lines(tmp_path, capsys,
                                                                                      cifar10_dir, label_dir):
    """SLURM refuses an array index above MaxArraySize - 1 (1000 by default): 3000 runs were one
    array no sbatch took. And a script written again while an earlier array waited in the queue
    moved that array's lines under it (its task 0 ran the new line 1)."""
    script = tmp_path / "jobs" / "sweep.sbatch"
    flags = ["--labels", "category", *tiny(cifar10_dir, label_dir, tmp_path / "out"), "--stages", "train",
             "--slurm", str(script), "--max_array_size", "2", "--max_concurrent", "1"]
    summary = json.loads(sweep_lines(capsys, flags + ["--seeds", "0", "1", "2", "3", "4"])[-1])
    parts = [script, script.with_name("sweep.part2.sbatch"), script.with_name("sweep.part3.sbatch")]
    assert summary["tasks"] == 5 and summary["scripts"] == list(map(str, parts))
    assert summary["submit"] == [f"sbatch {p}" for p in parts]
    texts = [p.read_text() for p in parts]
    assert ["#SBATCH --array=0-1%1" in texts[0], "#SBATCH --array=0-1%1" in texts[1],
            "#SBATCH --array=0-0%1" in texts[2]] == [True] * 3
    assert "offset=0\n" in texts[0] and "offset=2\n" in texts[1] and "offset=4\n" in texts[2]
    first = Path(summary["commands"])
    first.write_text("".join(f"echo line{i}\n" for i in range(1, 6)))

    def task(path, i, **env):
        proc = subprocess.run(["bash", str(path)], env=plain_env() | env | {"SLURM_ARRAY_TASK_ID": str(i)},
                              capture_output=True, text=True)
        return proc.returncode, proc.stdout, proc.stderr
    status, out, err = task(parts[2], 0, LABELREP_TASK_OFFSET="2")  # the environment moves nothing
    assert (status, out) == (0, "line5\n") and f"task 0: line 5 of {first}" in err
    again = json.loads(sweep_lines(capsys, flags + ["--seeds", "1", "2", "3"])[-1])
    assert Path(again["commands"]) != first and first.read_text().startswith("echo line1\n")
    assert again["scripts"] == list(map(str, parts[:2])) and not parts[2].exists()  # a stale array: gone
    # the new part2 names the new file and its own offset: an old submit line runs new lines alike
    assert f"commands={again['commands']}\noffset=2\n" in parts[1].read_text()
    # with nothing left to submit, both scripts go, each named (the message named the first alone)
    assert sweep.drop_old_script(script) == (f"; removed the earlier {script} and its further arrays' "
                                             "sweep.part2.sbatch, so they are not submitted again")
    assert not parts[0].exists() and not parts[1].exists()


@pytest.mark.parametrize("mode", ["--print", "--slurm"])
def test_a_path_with_a_line_break_is_refused_where_a_run_is_one_line(tmp_path, capsys, mode):
    """shlex quotes a line break as it is, across two lines: the commands file's line 1 (task 0) was
    half a command, an unclosed quote, and line 2 (task 1) ran the rest of it as a command; --print's
    lines fell apart in xargs -d '\\n'. One error line, and nothing written."""
    base = tmp_path / "runs\nold"
    flags = [mode, *([str(tmp_path / "jobs" / "s.sbatch")] if mode == "--slurm" else []), "--labels", "category",
             "speech", "--stages", "train", "--base_dir", str(base)]
    assert call_cli(sweep.main, flags) == 2
    out, err = capsys.readouterr()
    # named by its flag, as --sbatch's and --slurm's are (it named --slurm's log file, a path under it)
    assert (out, err) == ("", f"error: --base_dir {str(base)!r} holds a line break: each run's commands must fit "
                              "on one line of --print and --slurm; rename it, or run the grid with --local\n")
    assert not (tmp_path / "jobs").exists()
    assert call_cli(sweep.main, [*flags[:-2], "--train_args=--data_dir='a\nb'"]) == 2
    assert capsys.readouterr().err.startswith("error: --data_dir 'a\\nb' holds a line break: each run's")


def test_slurms_log_file_pattern_keeps_the_folders_name(tmp_path, capsys):
    """The folder of --slurm goes into #SBATCH --output, which SLURM reads as a file name pattern:
    in "runs 100%a" its %a was the task id (task 0's log was to go to "runs 1000/logs", which does
    not exist, and every task failed to launch); a backslash SLURM drops the same way, with no
    escape for it."""
    script, _ = slurm_script(tmp_path / "runs 100%a", capsys, ["--stages", "train", "--base_dir", str(tmp_path)])
    assert f'#SBATCH --output="{tmp_path}/runs 100%%a/jobs/logs/%A_%a.out"\n' in script.read_text()
    folder = tmp_path / "x\\y" / "jobs"
    assert call_cli(sweep.main, ["--stages", "train", "--base_dir", str(tmp_path), "--slurm",
                                 str(folder / "s.sbatch")]) == 2
    assert capsys.readouterr() == ("", f"error: --slurm's folder {folder}/logs: SLURM drops a backslash "
                                       "from the tasks' log file name (#SBATCH --output); choose a folder "
                                       "without one\n")
    assert not folder.exists()


def test_a_slurm_script_named_with_a_dash_is_named_so_no_command_reads_an_option(tmp_path, capsys,
                                                                                   monkeypatch):
    """--slurm=-s.sbatch: the submit line and the header's line for one task were `sbatch -s.sbatch`
    and `bash -s.sbatch`, which read the name as options (bash: '-.: invalid option')."""
    monkeypatch.chdir(tmp_path)
    summary = json.loads(sweep_lines(capsys, ["--stages", "train", "--base_dir", "out", "--slurm=-s.sbatch"])[-1])
    assert summary["submit"] == ["sbatch ./-s.sbatch"]
    text = (tmp_path / "-s.sbatch").read_text()
    one_task = next(line for line in text.splitlines() if "one task, no SLURM" in line).split(": ", 1)[1]
    assert one_task == "SLURM_ARRAY_TASK_ID=0 bash ./-s.sbatch"
    Path(summary["commands"]).write_text("echo task0 ran\n")
    proc = subprocess.run(["bash", "-c", one_task], env=plain_env(), capture_output=True, text=True)
    assert (proc.returncode, proc.stdout) == (0, "task0 ran\n"), proc.stderr


def test_a_sweep_that_attacks_without_a_base_dir_finds_its_runs_in_the_default_one(tmp_path, capsys,
                                                                                     monkeypatch):
    """attack.py leaves --base_dir unset (None) to tell one given with --checkpoint; a sweep that
    reads where attack.py will find each run took None for a folder: every sweep with the attack
    stage and no --base_dir (its defaults: `sweep.py --dry_run`) stopped with a TypeError traceback.
    Its runs are found in ./outputs, as train.py writes them and attack.py reads them."""
    monkeypatch.chdir(tmp_path)
    make_trained(tmp_path / "outputs" / "cifar10" / "seed3" / "resnet32" / "model_category", attack=["fgsm"])
    lines = sweep_lines(capsys, ["--labels", "category", "--seeds", "3", "--epochs", "4", "--valid_size", "50",
                                 "--stages", "train", "attack", "--attacks", "fgsm", "--epsilons", "8/255",
                                 "--targeted", "no", "--num_images", "20", "--dry_run"])
    assert lines[-2:] == ["1 run: 0 to run, 1 complete (skipped); train 0, attack 0", '{"runs": 1, "to_run": 0, "running": 0}']


def test_sbatch_options_are_read_as_sbatch_reads_them():
    """The long names an --sbatch option sets, as sbatch reads an #SBATCH line (getopt_long): -Qt
    is -Q -t, an unambiguous prefix is its option, a quoted value is one word; the options of
    sbatch's own that merely start like a written one stay allowed."""
    assert sweep.sbatch_names("-Qt 1:00:00") == ["time"]
    assert sweep.sbatch_names("--outp=x --account=p") == ["output", "account"]
    assert sweep.sbatch_names("--o=x") == ["o"]  # output or open-mode: sbatch says ambiguous itself
    for option in ("--time-min=30", "--mem-per-cpu=4G", "--gres-flags=enforce-binding", "-A proj", "-kt",
                   '--comment="a -t b"', "--nice=-5", "-Qq high", "--cpus-per-gpu=2"):
        names = sweep.sbatch_names(option)
        assert not set(names) & {*sweep.SCRIPT_SBATCH, *sweep.SWEEP_SBATCH}, (option, names)


def test_sbatch_directives_quote_white_space():
    """sbatch reads a double-quoted value as one word and rejects an unquoted space (the real
    SLURM test below runs in a folder with a space); it has no way to write a double quote."""
    assert sweep.directive("output", "/a b/%A_%a.out", "--slurm") == '--output="/a b/%A_%a.out"'
    assert sweep.directive("job-name", "labelrep", "--job_name") == "--job-name=labelrep"
    with pytest.raises(sweep.UsageError, match=re.escape("--job_name 'a\"b': an #SBATCH line cannot hold a "
                                                         "double quote")):
        sweep.directive("job-name", 'a"b', "--job_name")
    with pytest.raises(sweep.UsageError, match=re.escape("--job_name 'a\\nb' holds a line break: an #SBATCH "
                                                         "option must fit on one line")):
        sweep.directive("job-name", "a\nb", "--job_name")


def local_sweep_working(tmp_path, stage, **streams):
    """A process running a LocalPool of one train stage (`stage`, a script that prints "working"
    and works on), in a process group of its own as a terminal's, once the stage is working; it
    prints its outcomes as [[status, the pool's signal]]. `streams`: Popen's stdin, stdout and
    stderr where not pipes."""
    (tmp_path / "stage.py").write_text(stage)
    driver = textwrap.dedent(f"""
        import json, sys
        sys.path.insert(0, {str(REPO)!r})
        import sweep
        from utils.grid import Run, Task
        stage = [sys.executable, {str(tmp_path / "stage.py")!r}, "60", "0"]
        task = Task(0, Run("cifar10", "resnet32", "category", 100, 0), sweep.Path({str(tmp_path)!r}) / "run",
                    ("train",), ["train"], {{}}, {{"train": stage}})
        pool = sweep.LocalPool([task], [{{}}])
        print(json.dumps([(o["status"], pool.signal.name) for o in pool.run()]), flush=True)
        """)
    proc = subprocess.Popen([sys.executable, "-c", driver], text=True, start_new_session=True,
                            **{"stdout": subprocess.PIPE, "stderr": subprocess.PIPE} | streams)
    log = tmp_path / "run" / "train.log"
    while proc.poll() is None and not (log.exists() and "working" in log.read_text()):
        time.sleep(0.02)
    return proc


def test_ctrl_c_in_a_terminal_stops_a_local_sweep_resumably(tmp_path):
    """Ctrl-C signals the terminal's whole process group: the running stage got SIGINT itself,
    died of it and was reported as failed, not as stopped and resumable."""
    proc = local_sweep_working(tmp_path, STAGE)
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert json.loads(out) == [[75, "SIGINT"]], err


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="Windows has no SIGHUP")
def test_a_hangup_stops_a_local_sweep_resumably(tmp_path):
    """A sweep started over ssh without nohup or tmux gets SIGHUP when the connection drops. Its
    line saying so went to the terminal that hung up: the write failed (EIO) in the signal handler,
    before the pool passed SIGTERM on, and the sweep ended in that error, its outcomes lost (its
    stage stopped by the kernel's PR_SET_PDEATHSIG on Linux, left to train on elsewhere). Its lines
    there now go nowhere; the stage is stopped, resumable, and the outcomes are written (here
    stdout is a file: `> summary.json`)."""
    import pty
    leader, follower = pty.openpty()
    with open(tmp_path / "summary.json", "w") as summary:
        proc = local_sweep_working(tmp_path, STAGE, stdin=follower, stdout=summary, stderr=follower)
    os.close(follower)
    os.close(leader)  # the connection drops: the terminal hangs up, and the shell signals its job
    os.killpg(proc.pid, signal.SIGHUP)
    assert proc.wait(timeout=60) == 0
    assert json.loads((tmp_path / "summary.json").read_text()) == [[75, "SIGHUP"]]


@pytest.mark.parametrize("signum, status", [(signal.SIGTERM, 75), (signal.SIGINT, 130)])
def test_a_stopped_local_sweep_exits_75_or_130_with_its_summary(tmp_path, capsys, monkeypatch, signum, status):
    """sweep.py's exit status says how it stopped, as docs/experiments.md has it: 75 after SIGTERM
    (a requeue), 130 after Ctrl-C, with the signal and the stopped stage in its summary line. (Its
    stage: a stand-in for train.py, as the interpreter --local runs, that exits 75 when signalled.)"""
    stage = tmp_path / "stage"
    stage.write_text(f"#!{sys.executable}\n" + STAGE.replace("float(sys.argv[1])", "60").replace("int(sys.argv[2])", "0"))
    stage.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(stage))
    log = tmp_path / "out" / "cifar10" / "seed3" / "resnet32" / "model_category" / "train.log"

    def signal_when_working():
        while not (log.exists() and "working" in log.read_text()):
            time.sleep(0.02)
        os.kill(os.getpid(), signum)
    threading.Thread(target=signal_when_working, daemon=True).start()
    with pytest.raises(SystemExit) as stopped:
        sweep.main(["--seeds", "3", "--base_dir", str(tmp_path / "out"), "--stages", "train", "--local"])
    summary = json.loads(capsys.readouterr().out)
    assert stopped.value.code == status
    assert (summary["signal"], summary["completed"], summary["failed"]) == (signum.name, 0, [])
    assert [(s["run"], s["stage"], s["status"]) for s in summary["stopped"]] == [
        ("cifar10/resnet32/category/level100/seed3", "train", 75)]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_local_sweep_killed_outright_stops_its_stages(tmp_path):
    """A sweep SIGKILLed with its process group (`kill -9 -PGID`, `timeout -s KILL`, the OOM
    killer) could pass nothing on: its stage, in a session of its own, worked on orphaned,
    holding its run directory, and the sweep rerun found it in use. It gets SIGTERM now, and
    stops (checkpoints and exits 75) as it would for the sweep's own."""
    said = STAGE.replace("lambda *_: sys.exit(75)",
                         "lambda signum, _: print('got', signum, flush=True) or sys.exit(75)")
    proc = local_sweep_working(tmp_path, said)
    log = tmp_path / "run" / "train.log"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    for _ in range(600):  # a generous wait: the stage sleeps 60 s when no signal comes
        if f"got {int(signal.SIGTERM)}" in log.read_text():
            break
        time.sleep(0.1)
    assert log.read_text().splitlines()[1:] == ["working", f"got {int(signal.SIGTERM)}"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_stage_whose_sweep_died_before_it_started_does_not_start(monkeypatch):
    """The sweep killed between the fork and the child's prctl sends nothing: the child, orphaned
    already (another parent), stops itself before it becomes the stage."""
    monkeypatch.setattr(sweep.os, "getpid", lambda: 1 << 30)  # a parent pid the child never has
    preexec = sweep.stop_with_sweep()
    monkeypatch.undo()
    proc = subprocess.Popen([sys.executable, "-c", "print('started')"], stdout=subprocess.PIPE, preexec_fn=preexec)
    assert (proc.communicate(timeout=60)[0], proc.returncode) == (b"", -signal.SIGTERM)


# A stage that works until signalled: on USR1/TERM it exits 75 (as train.py and attack.py do).
STAGE = """import signal, sys, time
signal.signal(signal.SIGUSR1, lambda *_: sys.exit(75))
signal.signal(signal.SIGTERM, lambda *_: sys.exit(75))
print("working", flush=True)
time.sleep(float(sys.argv[1]))
sys.exit(int(sys.argv[2]))
"""


def test_task_body_without_slurm(tmp_path, capsys, cifar10_dir, label_dir):
    """The task body run by hand: it picks line i+1, logs each stage, stops a chain at a failure,
    and forwards USR1 to the running stage, whose exit 75 it returns (no requeue outside SLURM)."""
    script, commands = slurm_script(tmp_path, capsys, ["--stages", "train", *tiny(cifar10_dir, label_dir, tmp_path)])
    (tmp_path / "stage.py").write_text(STAGE)
    stage = f"python {tmp_path / 'stage.py'}"
    commands.write_text(f"stage {tmp_path}/a.log {stage} 0 0 && stage {tmp_path}/b.log {stage} 0 0\n"
                        f"stage {tmp_path}/c.log {stage} 0 3 && stage {tmp_path}/d.log {stage} 0 0\n"
                        f"stage {tmp_path}/e.log {stage} 60 0\n")
    (tmp_path / "c.log").write_text("=== an earlier attempt\npreempted: stopped by signal, rerun\n")

    def task(i):
        return subprocess.Popen(["bash", str(script)], env=plain_env() | {"SLURM_ARRAY_TASK_ID": str(i)},
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first, second, third = task(0), task(1), task(2)
    while not (tmp_path / "e.log").exists() or "working" not in (tmp_path / "e.log").read_text():
        time.sleep(0.02)
    third.send_signal(signal.SIGUSR1)
    tasks = (first, second, third)
    errs = [p.communicate(timeout=60)[1] for p in tasks]  # read to the end, pipes closed
    results = [(p.returncode, err) for p, err in zip(tasks, errs)]
    assert [status for status, _ in results] == [0, 3, 75]
    assert (tmp_path / "a.log").read_text().startswith("=== ") and (tmp_path / "b.log").exists()
    assert not (tmp_path / "d.log").exists()  # the chain stops at the failed stage
    assert "exit 3" in results[1][1] and "working" in results[1][1]  # the failed stage's log tail
    assert "preempted" not in results[1][1]  # of its last attempt only, as --local's note
    assert "got SIGUSR1" in results[2][1] and "exit 75" in results[2][1] and "requeued" not in results[2][1]
    assert results[2][1].splitlines()[-1].endswith(" task 2: stopped, its checkpoint kept; run the task again "
                                                   "to resume it")


@pytest.mark.parametrize("signum, status, requeue, said", [
    (signal.SIGUSR1, 0, "requeue 41_0\n", "requeueing 41_0: it starts again (after SLURM's hold), skips the "
                                          "stages its run finished and resumes the stopped one"),
    (signal.SIGTERM, 75, "", "stopped by SIGTERM, its checkpoint kept: SLURM requeues a preempted task, which "
                             "resumes it; a cancelled one stays stopped (submit it again to resume)")],
    ids=["USR1", "TERM"])
def test_a_task_requeues_itself_after_usr1_alone(signum, status, requeue, said, tmp_path, capsys):
    """In an array job, a stage stopped by USR1 (--signal: the time limit is near) has the task
    requeue itself with scontrol and end 0; one stopped by TERM (scancel, or a preemption, which
    SLURM requeues itself) ends 75 and asks for nothing: a cancelled task must not come back. Its
    log's last line says which, and what comes next (after TERM it said nothing past 'exit 75')."""
    script, commands = slurm_script(tmp_path, capsys, ["--seeds", "3", "--base_dir", str(tmp_path / "out")])
    (tmp_path / "stage.py").write_text(STAGE)
    commands.write_text(f"stage {tmp_path}/a.log python {tmp_path / 'stage.py'} 60 0\n")
    task = signalled_task(script, tmp_path, signum)
    _, err = task.communicate(timeout=60)
    assert task.returncode == status, err
    asked = tmp_path / "scontrol.args"
    assert (asked.read_text() if asked.exists() else "") == requeue
    assert err.splitlines()[-1].split(" ", 1)[1] == f"task 0: {said}", err


def test_a_failed_requeue_says_so(tmp_path, capsys):
    """The task's log said "requeued" before scontrol ran, and nothing when it failed (a controller
    out of reach): a task that ended 75, never to come back, read as one requeued. Its log now says
    what the requeue will do, and that it did not happen and how to resume."""
    script, commands = slurm_script(tmp_path, capsys, ["--seeds", "3", "--base_dir", str(tmp_path / "out")])
    (tmp_path / "stage.py").write_text(STAGE)
    commands.write_text(f"stage {tmp_path}/a.log python {tmp_path / 'stage.py'} 60 0\n")
    task = signalled_task(script, tmp_path, signal.SIGUSR1, scontrol_status=1)
    _, err = task.communicate(timeout=60)
    assert task.returncode == 75, err
    said = [line.split(" ", 1)[1] for line in err.splitlines()[-2:]]  # after each line's date and time
    assert said == ["task 0: requeueing 41_0: it starts again (after SLURM's hold), skips the stages its run "
                    "finished and resumes the stopped one",
                    "task 0: not requeued (scontrol requeue exit 1): its run stays stopped; submit this "
                    "script again with --array=0 to resume it"], err


def signalled_task(script, tmp_path, signum, scontrol_status=0):
    """Array task 0 of job 41 running `script`, sent `signum` once its stage logged "working" to
    a.log; scontrol, a stand-in, writes its arguments to scontrol.args and exits `scontrol_status`."""
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "scontrol").write_text(
        f'#!/bin/sh\necho "$@" >> {tmp_path}/scontrol.args\nexit {scontrol_status}\n')
    (tmp_path / "bin" / "scontrol").chmod(0o755)
    task = subprocess.Popen(["bash", str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=plain_env() | {"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_JOB_ID": "41",
                                               "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}"})
    while task.poll() is None and (not (tmp_path / "a.log").exists()
                                   or "working" not in (tmp_path / "a.log").read_text()):
        time.sleep(0.02)
    task.send_signal(signum)
    return task


def test_a_signal_while_a_stage_ends_anyway_starts_no_next_stage(tmp_path, capsys):
    """train.py ends its last epoch and final evaluation after a USR1 (exit 0, the run complete):
    the attack stage after it then ran into the time limit's kill, and the task, not exiting 75,
    was not requeued. The chain stops there and the task requeues as for a stopped stage."""
    script, commands = slurm_script(tmp_path, capsys, ["--seeds", "3", "--base_dir", str(tmp_path / "out")])
    # it ends (exit 0) once the USR1 has come, as train.py's last epoch does: a stage that slept 1 s
    # and ended had ended before a signal sent late on a busy machine, which then stopped the next
    (tmp_path / "ends.py").write_text("import signal, sys, time\n"
                                      "signal.signal(signal.SIGUSR1, lambda *_: sys.exit(0))\n"
                                      "print('working', flush=True)\ntime.sleep(60)\n")
    (tmp_path / "stage.py").write_text(STAGE)
    commands.write_text(f"stage {tmp_path}/a.log python {tmp_path / 'ends.py'} && "
                        f"stage {tmp_path}/b.log python {tmp_path / 'stage.py'} 0 0\n")
    task = signalled_task(script, tmp_path, signal.SIGUSR1)
    _, err = task.communicate(timeout=60)
    assert task.returncode == 0
    assert "task 0: exit 0\n" in err and "stage.py not started after SIGUSR1" in err, err
    assert not (tmp_path / "b.log").exists()
    assert (tmp_path / "scontrol.args").read_text() == "requeue 41_0\n"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SLURM_CONF = """ClusterName=labelrep
SlurmctldHost=localhost
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={root}/munge/socket
SlurmUser=root
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
NodeName=localhost CPUs={cpus} State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""


def stop_daemons(pid_files):
    """SIGTERM each daemon named in a pid file (those this test started), then wait for them."""
    pids = []
    for path in pid_files:
        try:
            pid = int(Path(path).read_text().split()[0])
            os.kill(pid, signal.SIGTERM)
            pids.append(pid)
        except (OSError, ValueError, IndexError):
            continue
    deadline = time.time() + 10
    while pids and time.time() < deadline:
        pids = [pid for pid in pids if os.path.exists(f"/proc/{pid}")]
        time.sleep(0.05)


@pytest.fixture(scope="module")
def slurm():
    """A one-node SLURM (its own munged, slurmctld, slurmd) in a temporary folder; yields the env
    for SLURM commands. Skips with the reason where it cannot start; stopped by pid afterwards."""
    tools = ("sbatch", "squeue", "scontrol", "scancel", "sinfo", "slurmctld", "slurmd", "munged")
    missing = [t for t in tools if not (shutil.which(t) or Path("/usr/sbin", t).exists())]
    if missing:
        pytest.skip(f"SLURM is not installed (no {', '.join(missing)}: "
                    "apt-get install slurmctld slurmd slurm-client munge)")
    if os.geteuid() != 0:
        pytest.skip("a local slurmd must run as root")
    try:
        munge_user = pwd.getpwnam("munge")
    except KeyError:
        pytest.skip("no munge user (install the munge package)")
    root = Path(tempfile.mkdtemp(prefix="labelrep-slurm-"))
    root.chmod(0o755)  # munged (user munge) must reach its socket below here
    for sub in ("munge", "state", "spool"):
        (root / sub).mkdir()
    key = root / "munge" / "munge.key"
    key.write_bytes(os.urandom(1024))
    for path in (root / "munge", key):
        os.chown(path, munge_user.pw_uid, munge_user.pw_gid)
    key.chmod(0o400)
    (root / "slurm.conf").write_text(SLURM_CONF.format(root=root, cpus=os.cpu_count(),
                                                       ctld_port=free_port(), slurmd_port=free_port()))
    env = plain_env() | {"SLURM_CONF": str(root / "slurm.conf")}
    munged = shutil.which("munged") or "/usr/sbin/munged"
    pid_files = [root / "slurmd.pid", root / "slurmctld.pid", root / "munge" / "munged.pid"]
    try:
        subprocess.run(["runuser", "-u", "munge", "--", munged, f"--socket={root}/munge/socket",
                        f"--key-file={key}", f"--pid-file={root}/munge/munged.pid",
                        f"--log-file={root}/munge/munged.log", f"--seed-file={root}/munge/seed"],
                       check=True, capture_output=True, timeout=30)
        for daemon in ("slurmctld", "slurmd"):
            subprocess.run([shutil.which(daemon) or f"/usr/sbin/{daemon}", "-f", str(root / "slurm.conf")],
                           check=True, capture_output=True, env=env, timeout=30)
        state = ""
        for _ in range(60):
            state = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, env=env,
                                   check=False).stdout
            if state.strip() == "idle":
                break
            time.sleep(0.25)
        else:
            logs = " | ".join((root / f).read_text()[-300:] for f in ("slurmctld.log", "slurmd.log")
                              if (root / f).exists())
            raise RuntimeError(f"the node did not come up (sinfo: {state.strip()!r}); {logs}")
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, RuntimeError) as err:
        detail = getattr(err, "stderr", b"") or b""
        reason = f"{err} {detail.decode(errors='replace') if isinstance(detail, bytes) else detail}"
        stop_daemons(pid_files)
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"SLURM could not start here: {reason.strip()}")
    yield env
    jobs = subprocess.run(["squeue", "-h", "-o", "%A"], capture_output=True, text=True, env=env,
                          check=False).stdout.split()
    if jobs:
        subprocess.run(["scancel", *jobs], env=env, check=False)
    stop_daemons(pid_files)
    shutil.rmtree(root, ignore_errors=True)


def squeue(env, job):
    return subprocess.run(["squeue", "-h", "-j", job, "-o", "%K %t %r"], capture_output=True, text=True,
                          env=env, check=False).stdout.split("\n")


# The tasks' interpreter (sweep.py --python): task 0's first job waits at the start of its 2nd
# epoch until the USR1 has come. The signal, sent once epoch 1 had ended, had to pass scancel,
# slurmctld, slurmd and the task's trap within the 1 s of epoch 2: on a busy machine it came in
# epoch 3, the last, which then ended the run (exit 0) with nothing preempted.
HELD_IN_EPOCH_2 = """#!{python}
import os, runpy, sys, time
sys.path.insert(0, {repo!r})
from utils import preempt, training
real, epochs = training.train_epoch, []
def held(*args, **kwargs):
    epochs.append(1)
    if len(epochs) == 2 and os.environ["SLURM_ARRAY_TASK_ID"] == "0":
        deadline = time.monotonic() + 120
        while not preempt.requested() and time.monotonic() < deadline:
            time.sleep(0.05)
    return real(*args, **kwargs)
training.train_epoch = held
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_real_slurm_array_trains_attacks_and_requeues(slurm, tmp_path, capsys, cifar10_dir, label_dir):
    """Two array tasks (category, speech), each training then attacking its run. Task 0 gets the
    time-limit warning (USR1) mid-training: it checkpoints, requeues itself and finishes. The
    script, its logs and the runs lie below a folder whose name has a space."""
    tmp_path = tmp_path / "a sweep"
    base = tmp_path / "out"
    grid = ["--labels", "category", "speech", "--seeds", "3", "--levels", "40",
            *tiny(cifar10_dir, label_dir, base, 3), *ATTACK_FLAGS]
    python = tmp_path / "python"
    python.parent.mkdir()
    python.write_text(HELD_IN_EPOCH_2.format(python=sys.executable, repo=str(REPO)))
    python.chmod(0o755)
    script, _ = slurm_script(tmp_path, capsys, grid, "--cpus_per_task", "1", "--python", str(python))
    job = subprocess.run(["sbatch", "--parsable", str(script)], capture_output=True, text=True, env=slurm,
                         check=True).stdout.strip().split(";")[0]
    runs = [base / "less" / "cifar10" / "level40" / "seed3" / "resnet32" / f"model_{label}"
            for label in ("category", "speech")]
    deadline = time.time() + 240
    while not (runs[0] / "metrics.jsonl").exists() or not (runs[0] / "metrics.jsonl").read_text():
        assert time.time() < deadline, "task 0 logged no epoch"
        time.sleep(0.1)  # in epoch 2 now (HELD_IN_EPOCH_2): the signal lets it end, and it is saved
    subprocess.run(["scancel", "--signal=USR1", "--batch", f"{job}_0"], env=slurm, check=True)
    released = False
    while time.time() < deadline:
        queue = [line for line in squeue(slurm, job) if line]
        if not queue:
            break
        if not released and any(line.startswith("0 PD") for line in queue):
            # A requeued job waits a while (its BeginTime) before it may start again. Let it start
            # sooner, but not at once: slurmd can refuse to relaunch a job id that ended less than
            # a second ago ("Job N already killed, do not launch batch job"), failing the task.
            time.sleep(5)
            subprocess.run(["scontrol", "update", f"JobId={job}_0", "StartTime=now"], env=slurm, check=True)
            released = True
        time.sleep(0.25)
    assert released, "task 0 was not requeued"
    shown = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True, env=slurm,
                           check=True).stdout
    assert shown.count("JobState=COMPLETED") == 2, shown
    out = (script.parent / "logs" / f"{job}_0.out").read_text()
    assert "got SIGUSR1" in out and "requeueing" in out and "not requeued" not in out
    train_log = (runs[0] / "train.log").read_text()
    assert "preempted" in train_log and "resuming" in train_log
    for run_dir in runs:
        assert json.loads((run_dir / "results.json").read_text())["epochs"] == 3
        assert json.loads((run_dir / ATTACK_RESULTS).read_text())["num_images"] == 20


def test_real_slurm_runs_an_array_below_a_folder_with_a_percent_sign(slurm, tmp_path, capsys, monkeypatch):
    """Submitted by the line sweep.py prints, in a folder named "runs 100%a" (its %a was each task's
    id in #SBATCH --output: every task failed to launch) and as -s.sbatch (sbatch read it as
    options): each task logs to {folder}/logs/{job}_{task}.out, each stage to its run's log."""
    folder = tmp_path / "runs 100%a"
    folder.mkdir()
    monkeypatch.chdir(folder)
    python = tmp_path / "python"
    python.write_text("#!/bin/sh\necho ran \"$7\"\n")  # train.py --dataset D --model M --label L
    python.chmod(0o755)
    summary = json.loads(sweep_lines(capsys, ["--labels", "category", "speech", "--stages", "train", "--base_dir",
                                              str(tmp_path / "out"), "--python", str(python), "--slurm=-s.sbatch"])[-1])
    job = subprocess.run(["bash", "-c", summary["submit"][0]], capture_output=True, text=True, env=slurm,
                         check=True).stdout.split()[-1]  # "Submitted batch job N"
    deadline = time.time() + 60
    while [line for line in squeue(slurm, job) if line]:
        assert time.time() < deadline, "the array did not end"
        time.sleep(0.25)
    shown = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True, env=slurm,
                           check=True).stdout
    assert shown.count("JobState=COMPLETED") == 2, shown
    for task, label in enumerate(("category", "speech")):
        assert f"task {task}: exit 0" in (folder / "logs" / f"{job}_{task}.out").read_text()
        log = tmp_path / "out" / "cifar10" / "seed0" / "resnet32" / f"model_{label}" / "train.log"
        assert log.read_text().endswith(f"ran {label}\n")


@pytest.mark.parametrize("name", ["runs#1", "it's"])
def test_real_slurm_runs_an_array_below_a_folder_with_a_hash_or_a_quote(slurm, tmp_path, capsys, monkeypatch,
                                                                         name):
    """sbatch reads an #SBATCH line as a shell would a word: unquoted (no white space in the folder's
    name), a # began a comment, so every task of a folder runs#1 logged to one file `runs` beside it,
    and a ' was "sbatch: fatal: ... Unmatched `'`", nothing submitted. Now each task logs to
    {folder}/logs/{job}_{task}.out."""
    folder = tmp_path / name
    folder.mkdir()
    monkeypatch.chdir(folder)
    python = tmp_path / "python"
    python.write_text("#!/bin/sh\necho ran \"$7\"\n")
    python.chmod(0o755)
    summary = json.loads(sweep_lines(capsys, ["--stages", "train", "--base_dir", str(tmp_path / "out"),
                                              "--python", str(python), "--slurm", "s.sbatch"])[-1])
    submitted = subprocess.run(["bash", "-c", summary["submit"][0]], capture_output=True, text=True, env=slurm)
    assert submitted.returncode == 0, submitted.stderr
    job = submitted.stdout.split()[-1]  # "Submitted batch job N"
    deadline = time.time() + 60
    while [line for line in squeue(slurm, job) if line]:
        assert time.time() < deadline, "the array did not end"
        time.sleep(0.25)
    assert "task 0: exit 0" in (folder / "logs" / f"{job}_0.out").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([name, "out", "python"])  # no `runs` file


# ---------------------------------------------------------------- --local


def test_local_runs_log_skip_and_report_failures(tmp_path, cifar10_dir, label_dir):
    """Two concurrent runs; one has a corrupt checkpoint to resume from and fails. (A label file
    of the wrong shape is refused before any run starts: test_bad_input_is_one_line.)"""
    labels = tmp_path / "labels"
    shutil.copytree(label_dir, labels)
    np.save(labels / "cifar10_bad.npy", np.random.RandomState(0).randn(10, 8).astype(np.float32))
    corrupt = tmp_path / "out" / "cifar10" / "seed3" / "resnet32" / "model_bad" / LAST_CHECKPOINT
    corrupt.parent.mkdir(parents=True)
    corrupt.write_bytes(b"not a checkpoint")
    grid = ["sweep.py", "--labels", "category", "bad", "--seeds", "3", "--local", "--jobs", "2",
            *tiny(cifar10_dir, labels, tmp_path / "out"), *ATTACK_FLAGS]
    proc = run_script(*grid, check=False)
    assert proc.returncode == 1, proc.stderr
    summary = last_json(proc)
    assert (summary["runs"], summary["completed"], summary["skipped"]) == (2, 1, 0)
    [failed] = summary["failed"]
    assert (failed["run"], failed["stage"], failed["status"]) == ("cifar10/resnet32/bad/level100/seed3", "train", 2)
    assert failed["note"].startswith(f"error: checkpoint {corrupt} ") and "--force" in failed["note"]
    assert "FAILED train cifar10/resnet32/bad/level100/seed3: exit 2: error: " in proc.stderr
    assert "OMP_NUM_THREADS=" in proc.stderr
    run_dir = tmp_path / "out" / "cifar10" / "seed3" / "resnet32" / "model_category"
    assert "test_acc" in (run_dir / "train.log").read_text() and (run_dir / "attack.log").exists()
    assert (run_dir / ATTACK_RESULTS).exists()
    assert not (run_dir.parent / "model_bad" / "attack.log").exists()  # no attack after a failed train

    again = run_script(*[a for a in grid if a != "bad"], check=True)
    assert last_json(again)["skipped"] == 1 and "1 run: 0 to run, 1 complete" in again.stderr



@pytest.mark.slow
def test_a_data_efficiency_sweep_driven_from_a_notebook(tmp_path, cifar10_dir, label_dir):
    """A notebook's data-efficiency study (docs/experiments.md): sweep.py --local over two labels
    and two levels, 1 epoch each, then report.py, each run as README's snippet runs a script
    (subprocess.run, capture_output, text: pipes, no terminal). What it relies on: stdout is the
    one JSON line it parses; stderr holds plain lines a cell can print as they come (no tqdm
    carriage returns, no terminal codes), each stage's after its date and time; the stage logs
    likewise; the report's data-efficiency rows and table give each label's levels from the
    largest, with the numbers and image counts of the runs' results.json; and every label of a
    seed and level trained on one subset (the same validation images: their confusion rows)."""
    env = {"OMP_NUM_THREADS": "1"}
    base = tmp_path / "runs"
    sweep = run_script("sweep.py", "--labels", "category", "glove", "--levels", "20", "100", "--seeds", "3",
                       "--stages", "train", "--local", "--jobs", "1", *tiny(cifar10_dir, label_dir, base), env=env)
    assert len(sweep.stdout.splitlines()) == 1
    assert json.loads(sweep.stdout) == {
        "runs": 4, "skipped": 0, "completed": 4, "failed": [], "stopped": [], "held": [], "not_started": 0,
        "signal": None}
    lines = sweep.stderr.splitlines()
    assert "\r" not in sweep.stderr and "\x1b" not in sweep.stderr
    assert lines[0] == "4 runs: 4 to run, 0 complete (skipped); train 4"
    assert all(re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d \[[1-4]/4\] train ", line) for line in lines[1:]), lines
    results, confusion = {}, {}
    for label in ("category", "glove"):
        for level in (100, 20):
            run_dir = run_directory(base, "cifar10", level, 3, "resnet32", label)
            log = (run_dir / "train.log").read_text()
            assert "\r" not in log and "\x1b" not in log and re.search(r"T\d\d:\d\d:\d\d epoch 1/1 ", log)
            results[label, level] = json.loads((run_dir / "results.json").read_text())
            confusion[label, level] = json.loads((run_dir / "confusion.json").read_text())["valid"]
            assert log.rstrip("\n").splitlines()[-1] == json.dumps(results[label, level])  # train.py's stdout line
    for level in (100, 20):  # one subset per seed and level, whatever the label
        assert [sum(row) for row in confusion["category", level]] == [sum(row) for row in confusion["glove", level]]
        assert results["category", level]["train_images"] == results["glove", level]["train_images"]

    out = tmp_path / "report"
    report = run_script("report.py", "--base_dir", base, "--out", out, "--label_dir", label_dir, env=env)
    assert (len(report.stdout.splitlines()), report.stderr) == (1, "")
    summary = json.loads(report.stdout)
    assert (summary["runs"], summary["trained"], summary["incomplete"]) == (4, 4, 0)
    assert "levels_cifar10_resnet32.png" in summary["files"]
    with open(out / "data_efficiency.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["label"], r["level"], r["n"], r["seeds"], r["train_images"]) for r in rows] == [
        ("category", "100", "1", "3", "250"), ("category", "20", "1", "3", "60"),
        ("glove", "100", "1", "3", "250"), ("glove", "20", "1", "3", "60")]
    assert [float(r["test_acc_mean"]) for r in rows] == [results[r["label"], int(r["level"])]["test_acc"]
                                                         for r in rows]
    table = (out / "tables.md").read_text().split("### cifar10, resnet32\n\n")[1].split("\n\n")[0]
    assert table.splitlines() == [
        "| label | 100% (250 images) | 20% (60 images) |", "|---|---|---|",
        *(f"| {label} | " + " | ".join(f"{results[label, level]['test_acc'] * 100:.2f} (n=1)" for level in (100, 20))
          + " |" for label in ("category", "glove"))]

def local_sweep_exit(capsys, argv):
    """sweep.main(argv), a --local sweep that ends with an exit status: (that status, its JSON line, its stderr)."""
    with pytest.raises(SystemExit) as ended:
        sweep.main(argv)
    out, err = capsys.readouterr()
    return ended.value.code, json.loads(out), err


def test_a_local_sweep_leaves_a_run_another_job_holds_to_it(tmp_path, capsys, monkeypatch):
    """A second --local sweep over a grid that overlaps one still at work (an extended grid; a
    terminal per GPU) started train.py on the runs the first one held: each stopped at once, 'RUN_DIR
    is in use by train.py (...)', and the sweep counted it FAILED and exited 1. A run held by another
    job as the sweep plans is not started now: the plan and the last lines say it is left to that
    job, the JSON line counts it apart (`held`, naming the job), the other runs complete, and the
    sweep exits 75, as after a stop: run it again to go on, once that job ends. Its logs are not
    written, nor checked before the runs start (here a train.log that takes no appends). (Its
    stages: a stand-in for train.py, as the interpreter --local runs, that prints a result.)"""
    from test_runs import SINCE, held_by
    stage = tmp_path / "stage"
    stage.write_text(f"#!{sys.executable}\nprint('{{\"test_acc\": 0.5}}')\n")
    stage.chmod(0o755)
    base = tmp_path / "out"
    held = base / "cifar10" / "seed3" / "resnet32" / "model_speech"
    (held / "train.log").mkdir(parents=True)
    grid = ["--labels", "category", "speech", "shuffle", "--seeds", "3", "--base_dir", str(base), "--stages", "train",
            "--local"]
    with held_by(tmp_path, "train.py", "run_lock", held) as holder:
        monkeypatch.setattr(sys, "executable", str(stage))
        status, summary, err = local_sweep_exit(capsys, grid)
    job = f"train.py (pid {holder.pid} on {socket.gethostname()}, {SINCE})"
    name = "cifar10/resnet32/speech/level100/seed3"
    assert status == 75, err
    assert summary == {"runs": 3, "skipped": 0, "completed": 2, "failed": [], "stopped": [],
                       "held": [{"run": name, "stage": "train", "holder": job}], "not_started": 0, "signal": None}
    lines = err.splitlines()
    assert lines[0] == ("3 runs: 3 to run (1 of them in progress in another job: left to it; rerun the sweep once "
                        "it ends), 0 complete (skipped); train 3")
    assert [line.split(" ", 1)[1].split(":")[0] for line in lines[1:-1]] == [
        "[1/2] train cifar10/resnet32/category/level100/seed3", "[1/2] train cifar10/resnet32/category/level100/seed3",
        "[2/2] train cifar10/resnet32/shuffle/level100/seed3", "[2/2] train cifar10/resnet32/shuffle/level100/seed3"]
    assert ": done in " in lines[2] + lines[4] and lines[2].endswith(", test_acc 0.5000") and lines[4].endswith(
        ", test_acc 0.5000")
    assert lines[-1] == f"LEFT train {name} to the job that holds it, {job}: rerun the sweep once it ends"
    assert sorted(p.name for p in held.iterdir()) == [".lock", "train.log"] and not any((held / "train.log").iterdir())


def test_a_local_sweeps_lines_say_the_date(tmp_path, capsys, monkeypatch):
    """A --local sweep submitted as one batch job (its stderr a log, read days later) began each stage's
    line with the time of day alone ('19:05:10 [1/1] train ...: started'), where a SLURM task's lines,
    the stage logs' `=== ` headers and train.py's epoch lines give the date too: a sweep of runs
    over days said neither on which day a stage started or ended. They now begin alike. (Its stage:
    a stand-in for train.py, as the interpreter --local runs, that prints a result.)"""
    import datetime
    stage = tmp_path / "stage"
    stage.write_text(f"#!{sys.executable}\nprint('{{\"test_acc\": 0.5}}')\n")
    stage.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(stage))
    before = datetime.datetime.now().replace(microsecond=0)
    summary = sweep.main(["--seeds", "3", "--base_dir", str(tmp_path / "out"), "--stages", "train", "--local"])
    after = datetime.datetime.now()
    err = capsys.readouterr().err
    assert summary["completed"] == 1, err
    log = tmp_path / "out" / "cifar10" / "seed3" / "resnet32" / "model_category" / "train.log"
    lines = err.splitlines()[1:] + log.read_text().splitlines()[:1]
    stamps = [re.match(r"(?:=== )?(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d) ", line) for line in lines]
    assert len(lines) == 3 and all(stamps), lines  # started, done, and the log's header
    assert all(before <= datetime.datetime.fromisoformat(stamp[1]) <= after for stamp in stamps), lines


def test_a_local_sweep_runs_a_run_whose_holder_died_on_another_node(tmp_path, capsys, monkeypatch):
    """A job killed outright on another node (the node lost; the file server frees its lock) leaves
    its record in the run's lock file, which names it as long as no job works there again
    (`run_holder`, read without locking, cannot tell it from a live job's). --local left such a run
    to that dead job at every sweep, exit 75, for good; it now finds the lock free and starts the
    run. --dry_run still names the recorded job: it takes no lock."""
    from test_runs import RECORD
    stage = tmp_path / "stage"
    stage.write_text(f"#!{sys.executable}\nprint('{{\"test_acc\": 0.5}}')\n")
    stage.chmod(0o755)
    base = tmp_path / "out"
    run_dir = base / "cifar10" / "seed3" / "resnet32" / "model_speech"
    run_dir.mkdir(parents=True)
    (run_dir / ".lock").write_text(json.dumps({**RECORD, "since": int(time.time())}))  # node07's job, gone
    grid = ["--labels", "speech", "--seeds", "3", "--base_dir", str(base), "--stages", "train"]
    assert sweep.main([*grid, "--dry_run"])["running"] == 1
    capsys.readouterr()
    monkeypatch.setattr(sys, "executable", str(stage))
    summary = sweep.main([*grid, "--local"])
    err = capsys.readouterr().err
    assert (summary["completed"], summary["held"]) == (1, []), err
    assert err.startswith("1 run: 1 to run, 0 complete (skipped); train 1\n"), err


def test_a_run_another_job_takes_after_the_plan_is_left_to_it(tmp_path, capsys, monkeypatch, cifar10_dir,
                                                             label_dir):
    """A job that takes a run between the sweep's plan and its stage's start: the stage is refused
    ('in use by train.py ...'), and was counted FAILED (exit 1). Now the sweep, finding the run held
    by another job once its stage has ended so, counts it held as at the plan. A stage that fails
    for a reason of its own stays a failure, though a job holds the run afterwards."""
    from contextlib import ExitStack
    from test_runs import SINCE, held_by
    base = tmp_path / "out"
    run_dir = base / "cifar10" / "seed3" / "resnet32" / "model_category"
    jobs = ExitStack()
    holders = []
    checked = sweep.check_logs

    def taken_once_planned(*args):  # between the plan and the pool
        checked(*args)
        holders.append(jobs.enter_context(held_by(tmp_path, "train.py", "run_lock", run_dir)))
    monkeypatch.setattr(sweep, "check_logs", taken_once_planned)
    with jobs:
        status, summary, err = local_sweep_exit(capsys, ["--labels", "category", "--seeds", "3", "--stages", "train",
                                                         "--local", *tiny(cifar10_dir, label_dir, base)])
    job = f"train.py (pid {holders[0].pid} on {socket.gethostname()}, {SINCE})"
    name = "cifar10/resnet32/category/level100/seed3"
    assert (status, summary["completed"], summary["failed"], summary["not_started"]) == (75, 0, [], 0), err
    assert summary["held"] == [{"run": name, "stage": "train", "holder": job}]
    assert f"[1/1] train {name}: in use by {job}, which took the run after this sweep planned: left to it" in err
    assert "FAILED" not in err

    (tmp_path / "stage.py").write_text(STAGE)
    task = Task(0, Run("cifar10", "resnet32", "category", 100, 3), run_dir, ("train",), ["train"], {},
                {"train": [sys.executable, str(tmp_path / "stage.py"), "0", "2"]})
    with held_by(tmp_path, "train.py", "run_lock", run_dir):
        pool = sweep.LocalPool([task], [{}], stream=io.StringIO())
        pool.run()
    tally = pool.tally()
    assert ([o["status"] for o in tally["failed"]], tally["held"]) == ([2], [])


def test_attack_defaults_come_from_attack_py():
    scripts = sweep.Scripts.find()
    attack = scripts["attack"]
    module = attack.module
    wanted = requested_attacks(attack.parse([]), module)
    assert len(wanted["keys"]) == len(module.ATTACK_NAMES) * 2 * len(module.PIXEL_EPSILONS)
    paper = requested_attacks(attack.parse(["--paper_protocol", "--targeted", "no"]), module)
    assert {k[0] for k in paper["keys"]} == {"fgsm", "iterative"} and {k[2] for k in paper["keys"]} == {"paper"}
    margin = requested_attacks(attack.parse(["--objective", "margin", "--attacks", "pgd"]), module)
    assert {k[0] for k in margin["keys"]} == {"pgd+margin"}  # its own entries, beside the loss ones
    done = {"entries": [{"attack": "pgd", "targeted": t, "protocol": "pixel", "eps": eps, "robust_acc": 0.5}
                        for _, t, _, eps in margin["keys"]]}
    assert sorted(missing_entries(done, margin["keys"])) == sorted(margin["keys"])
    done["entries"] = [e | {"objective": "margin"} for e in done["entries"]]
    assert missing_entries(done, margin["keys"]) == []


PGD_ON_20 = ["--attacks", "pgd", "--epsilons", "8/255", "--targeted", "no", "--seed", "3", "--num_images", "20"]


def asked(flags):
    """The settings a sweep asks of attack.py with `flags` (`requested_attacks`)."""
    attack = sweep.Scripts.find()["attack"]
    return requested_attacks(attack.parse(flags), attack.module)


def untargeted_pgd_on_20():
    """The settings a sweep asks of attack.py with PGD_ON_20, its one key, and the entry attack.py
    writes for it."""
    wanted = asked(PGD_ON_20)
    (key,) = wanted["keys"]
    done = {"attack": "pgd", "targeted": False, "protocol": "pixel", "eps": 8 / 255, "steps": 10,
            "step_size": 2.5 * (8 / 255) / 10, "restarts": 1, "num_images": 20, "seed": 3, "robust_acc": 0.25}
    return wanted, key, done


def test_transfer_entries_neither_do_nor_undo_a_runs_attack_stage(tmp_path):
    """attack.py --transfer_from's entries (pgd's images crafted against another run's model) counted
    as the run's white-box pgd: a run holding only them was done, and attack.py never called. They
    count for no setting the sweep asks, and a run holding every setting beside them is done."""
    wanted, key, done = untargeted_pgd_on_20()
    transfer = done | {"source": {"name": "category", "checkpoint_sha256": "0" * 64}}
    (tmp_path / ATTACK_RESULTS).write_text(json.dumps({"num_images": 20, "entries": [transfer]}))
    assert attack_state(tmp_path, wanted) == (False, "resume: 1 of 1 settings missing (pgd untargeted 8/255)")
    (tmp_path / ATTACK_RESULTS).write_text(json.dumps({"num_images": 20, "entries": [done, transfer]}))
    assert attack_state(tmp_path, wanted) == (True, "done (1 setting)")
    # a source record attack.py cannot reuse by is a malformed entry, as report.py and attack.py read it
    assert missing_entries({"entries": [done | {"source": {"name": "category"}}]}, wanted["keys"]) == [key]


def test_a_targeted_pgd_of_restarts_an_older_attack_py_wrote_is_not_done():
    """An entry of targeted PGD with --restarts written before entries recorded their device (so
    perhaps before f72d56a fixed how restarts count) is computed again by attack.py: the sweep
    counted it done and never called attack.py."""
    attack = sweep.Scripts.find()["attack"]
    flags = ["--attacks", "pgd", "--epsilons", "8/255", "--targeted", "yes", "--seed", "3", "--restarts", "2"]
    wanted = requested_attacks(attack.parse(flags), attack.module)
    (key,) = wanted["keys"]
    old = {"attack": "pgd", "targeted": True, "protocol": "pixel", "eps": 8 / 255, "steps": 10,
           "step_size": 2.5 * (8 / 255) / 10, "restarts": 2, "seed": 3, "robust_acc": 0.25}
    assert missing_entries({"entries": [old]}, wanted["keys"], wanted["plans"]) == [key]
    assert missing_entries({"entries": [old | {"device": "cpu"}]}, wanted["keys"], wanted["plans"]) == []


def test_an_attack_is_done_only_with_the_asked_steps_and_images(tmp_path):
    """attack.py computes anew what ran with other steps or on another number of images, so the
    sweep must call it: such entries do not count as done."""
    wanted, key, done = untargeted_pgd_on_20()
    for entry, missing in ((done, []), (done | {"num_images": 100}, [key]), (done | {"steps": 3}, [key]),
                           (done | {"step_size": 1 / 255}, [key]), (done | {"restarts": 2}, [key]),
                           (done | {"amp": True}, [key]), (done | {"amp": False}, []),
                           (done | {"dtype": "float64"}, [key]), (done | {"dtype": "float32"}, []),
                           (done | {"seed": 4}, [key])):  # other targets and starts: attack.py reruns it
        assert missing_entries({"entries": [entry]}, wanted["keys"], wanted["plans"], 20) == missing
    (tmp_path / ATTACK_RESULTS).write_text(json.dumps({"num_images": 20, "entries": [
        done | {"num_images": 100}]}))
    assert attack_state(tmp_path, wanted) == (
        False, "resume: 1 of 1 settings missing, 1 of them computed with other steps, precision, images or seed "
        "(20 images asked) (pgd untargeted 8/255)")
    # one image asked: '(1 images asked)' before
    assert missing_note({"entries": [done]}, wanted["keys"], wanted["plans"], 1) == (
        "1 of 1 settings missing, 1 of them computed with other steps, precision, images or seed "
        "(1 image asked) (pgd untargeted 8/255)")
    three = asked(PGD_ON_20 + ["--steps", "3"])
    (tmp_path / ATTACK_RESULTS).write_text(json.dumps({"num_images": 20, "entries": [
        done | {"steps": 3, "step_size": 2.5 * (8 / 255) / 3}]}))
    assert attack_state(tmp_path, three) == (True, "done (1 setting)")
    assert not attack_state(tmp_path, wanted)[0]
    in_bf16 = asked(PGD_ON_20 + ["--steps", "3", "--amp"])
    assert not attack_state(tmp_path, in_bf16)[0]  # attack.py computes it again in bf16
    near = done | {"step_size": done["step_size"] * 1.01}  # 2.02/255 for 2/255: another attack
    assert missing_entries({"entries": [near]}, wanted["keys"], wanted["plans"], 20) == [key]
    whole = asked(PGD_ON_20[:-2])  # no --num_images: all of them
    (tmp_path / ATTACK_RESULTS).write_text(json.dumps({"num_images": 20, "entries": [done]}))
    assert attack_state(tmp_path, whole, test_images=100)[0] is False  # a trial on 20 of 100 images
    assert attack_state(tmp_path, whole, test_images=20)[0] is True


def test_a_missing_setting_names_its_eps_as_attack_py_labels_it(tmp_path):
    """--epsilons 1 0.03 were named 255/255 and 7.65/255 in the dry run's note, where attack.py's
    progress lines and the report's tables write 1 and 0.03."""
    attack = sweep.Scripts.find()["attack"]
    wanted = requested_attacks(attack.parse(["--attacks", "fgsm", "--epsilons", "1", "0.03", "8/255",
                                             "--targeted", "no"]), attack.module)
    (tmp_path / ATTACK_RESULTS).write_text(json.dumps({"entries": []}))
    assert attack_state(tmp_path, wanted) == (
        False, "resume: 3 of 3 settings missing (fgsm untargeted 0.03, fgsm untargeted 8/255, fgsm untargeted 1)")


def test_an_attack_entry_counts_for_its_own_budget_alone():
    """Budgets a 1/255 step apart are settings of their own: an entry at 1/255 stands for neither 0
    nor 2/255 (report.py without a grid file compares budgets alone), while 8/255 written as the
    decimal 0.0313725490196 is 8/255."""
    keys = {("fgsm", False, "pixel", eps / 255) for eps in (0, 1, 2, 8)}
    done = {"entries": [{"attack": "fgsm", "targeted": False, "eps": eps, "robust_acc": 0.5}
                        for eps in (1 / 255, 0.0313725490196)]}
    assert missing_note(done, keys) == ("2 of 4 settings missing (fgsm untargeted 0, fgsm untargeted "
                                        "2/255)")


def test_a_run_trained_on_other_label_targets_is_named(tmp_path):
    """A finished run whose label file has changed since (another --label_dir, a regenerated
    file) is not done as asked: train.py refuses it, and the dry run says why."""
    from labels import targets_sha256
    from utils.grid import train_state
    targets = np.random.RandomState(0).rand(10, 8).astype(np.float32)
    np.save(tmp_path / "cifar10_speech.npy", targets)
    ns = sweep.Scripts.find()["train"].parse(["--label", "speech", "--label_dir", str(tmp_path)])
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "results.json").write_text(json.dumps({"test_acc": 0.5}))
    config = {"flags": {"label": "speech"}, "label_sha256": targets_sha256(targets)}
    (run_dir / "config.json").write_text(json.dumps(config))
    assert train_state(run_dir, ns) == (True, "done, test_acc 0.5000")
    config["label_sha256"] = targets_sha256(targets + 1)
    (run_dir / "config.json").write_text(json.dumps(config))
    assert train_state(run_dir, ns) == (False, f"finished, but trained with other speech targets "
                                               f"than {tmp_path} holds: train.py refuses it; delete "
                                               "the run directory to start over")
    np.save(tmp_path / "cifar10_speech.npy", targets + 1)   # the file regenerated: read again
    assert train_state(run_dir, ns) == (True, "done, test_acc 0.5000")
    (run_dir / "config.json").write_text("[1]")  # was an AttributeError traceback; as if absent
    assert train_state(run_dir, ns) == (True, "done, test_acc 0.5000")


def beside_a_read(monkeypatch, path, change):
    """`change()` done by another job while this one reads `path`: after the read where the file
    is missing then (train.py writes it), before the read where it is there (train.py removes it)."""
    import utils.grid
    read = utils.grid.read_text

    def racing(where, *limit):
        if Path(where) != path:
            return read(where, *limit)
        if path.exists():
            change()
            return read(where, *limit)
        try:
            return read(where, *limit)
        finally:
            change()
    monkeypatch.setattr(utils.grid, "read_text", racing)


def test_a_run_that_finishes_while_the_sweep_reads_it_is_no_invalid_file(tmp_path, monkeypatch):
    """A sweep read results.json, then asked whether it was there: a run that train.py finished in
    between (a sweep planned while the runs trained) was 'not a valid JSON object (train.py will
    stop; delete it to retrain)', a run counted refused; an attack_results.json that train.py
    removed in between (a run started over) likewise. Each file is read once now."""
    from utils.grid import train_state
    run_dir = tmp_path / "cifar10" / "seed3" / "resnet32" / "model_category"
    make_trained(run_dir, results=False)
    scripts = sweep.Scripts.find()
    ns = scripts["train"].module.label_defaults(scripts["train"].parse(["--epochs", "4", "--valid_size", "50"]))
    finished = run_dir / "results.json"
    beside_a_read(monkeypatch, finished, lambda: finished.write_text(json.dumps({"test_acc": 0.5})))
    done, note = train_state(run_dir, ns)
    assert not done and note.startswith("resume (4/4 epochs logged; files last written"), note
    assert train_state(run_dir, ns) == (True, "done, test_acc 0.5000")
    attacked = run_dir / ATTACK_RESULTS
    attacked.write_text(json.dumps({"entries": []}))
    beside_a_read(monkeypatch, attacked, lambda: attacked.unlink())
    wanted = requested_attacks(scripts["attack"].parse([]), scripts["attack"].module)
    assert attack_state(run_dir, wanted) == (False, "new")


def test_a_run_trained_on_other_images_is_named(tmp_path, cifar10_dir):
    """A finished run of other images than --data_dir holds (another copy or part of the dataset
    in the same --base_dir) is not done as asked: train.py refuses it, and the dry run skipped it
    as done. The sweep reads the dataset without torch, to the sha256 train.py records; a copy of
    the same batches elsewhere is the same data, and one not here yet is not compared."""
    from cifar import load_cifar, split_indices
    from conftest import make_cifar10
    from utils.grid import dataset_sha256, train_state
    from utils.training import data_facts
    data = load_cifar("cifar10", cifar10_dir)
    recorded = data_facts(data, split_indices(len(data.train_labels), 3, 50, num_classes=10))["data_sha256"]
    assert dataset_sha256("cifar10", cifar10_dir, "fine") == recorded
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "results.json").write_text(json.dumps({"test_acc": 0.5}))
    (run_dir / "config.json").write_text(json.dumps({"flags": {}, "data_sha256": recorded}))

    def state(data_dir):
        return train_state(run_dir, sweep.Scripts.find()["train"].parse(["--data_dir", str(data_dir)]))
    assert state(cifar10_dir) == (True, "done, test_acc 0.5000")
    other = make_cifar10(tmp_path / "other", seed=1)  # as many images, others
    assert state(other) == (False, f"finished, but trained with other images or labels than {other} "
                                   "holds (another copy of cifar10?): train.py refuses it; delete the "
                                   "run directory to start over")
    shutil.copytree(cifar10_dir, tmp_path / "copy")
    assert state(tmp_path / "copy") == (True, "done, test_acc 0.5000")
    assert state(tmp_path / "none") == (True, "done, test_acc 0.5000")  # no folder recorded: not known
    for folder, done in ((tmp_path / "none", True), (cifar10_dir, False)):  # not there yet: read it?
        (run_dir / "config.json").write_text(json.dumps({"flags": {"data_dir": str(folder)},
                                                         "data_sha256": recorded}))
        assert state(tmp_path / "none") == (done, "done, test_acc 0.5000" if done else (
            f"finished, but it read the data in {cifar10_dir}, and {tmp_path / 'none'} holds no readable "
            "cifar10 to compare: train.py reads it (downloads it where missing) and checks"))
    (run_dir / "config.json").write_text(json.dumps({"flags": {}, "data_sha256": recorded}))
    batch = tmp_path / "copy" / "cifar-10-batches-py" / "test_batch"
    batch.write_bytes(batch.read_bytes()[:-10])  # unreadable: train.py says why; not compared here
    assert state(tmp_path / "copy") == (True, "done, test_acc 0.5000")
    shutil.copy(other / "cifar-10-batches-py" / "test_batch", batch)  # another test split: read again
    assert state(tmp_path / "copy")[0] is False


def test_an_attack_on_other_test_images_is_not_done(tmp_path, cifar10_dir):
    """An attack-only sweep with another --data_dir (the real test set after a trial copy) calls
    attack.py, which computes every setting anew on those images: the dry run listed the run as
    done on the entries of the first images, and the sweep skipped it."""
    from conftest import make_cifar10
    from utils.grid import test_images_sha256
    run_dir = tmp_path / "out" / "cifar10" / "seed3" / "resnet32" / "model_category"
    run_dir.mkdir(parents=True)
    (run_dir / "results.json").write_text(json.dumps({"test_acc": 0.5, "test_images": 100}))
    (run_dir / "category_seed3_resnet32_best_model.pth").write_bytes(b"best")
    entry = {"attack": "fgsm", "targeted": False, "protocol": "pixel", "eps": 8 / 255, "steps": 1,
             "step_size": 8 / 255, "restarts": 1, "num_images": 20, "seed": 3, "robust_acc": 0.25,
             "images_sha256": test_images_sha256("cifar10", cifar10_dir, "fine", 20)}
    (run_dir / ATTACK_RESULTS).write_text(json.dumps({"num_images": 20, "entries": [entry]}))
    (run_dir / "attack_examples.png").write_bytes(b"png")
    other = make_cifar10(tmp_path / "other", seed=1)  # as many images, others
    assert test_images_sha256("cifar10", other, "fine", 20) not in (None, entry["images_sha256"])

    def dry_run(data_dir=None):
        given = [] if data_dir is None else ["--data_dir", data_dir]
        proc = run_script("sweep.py", "--labels", "category", "--seeds", "3", "--base_dir", tmp_path / "out",
                          *given, "--stages", "attack", "--attack_args",
                          "--attacks fgsm --epsilons 8/255 --targeted no --num_images 20", "--dry_run",
                          timeout=120)
        return last_json(proc)["to_run"], proc.stdout
    assert dry_run(cifar10_dir)[0] == 0
    shutil.copytree(cifar10_dir, tmp_path / "copy")  # the same images elsewhere: still done
    assert dry_run(tmp_path / "copy")[0] == 0
    to_run, out = dry_run(other)
    assert to_run == 1 and ("run: resume: 1 of 1 settings missing, 1 of them computed with other steps, "
                            "precision, images or seed (20 images asked)") in out
    assert dry_run(tmp_path / "none")[0] == 0  # no dataset there to compare: done as the entries say
    (run_dir / ATTACK_RESULTS).write_text(json.dumps({"num_images": 20, "entries": [entry], "config": {
        "data_dir": str(cifar10_dir)}}))  # unless they were computed on another folder's
    to_run, out = dry_run(tmp_path / "none")
    assert to_run == 1 and (f"run: resume: it read the data in {cifar10_dir}, and {tmp_path / 'none'} holds "
                            "no readable cifar10 to compare: attack.py reads it") in out
    assert dry_run(cifar10_dir)[0] == 0
    for trained_on, to_run in ((cifar10_dir, 0), (other, 1)):  # no --data_dir: attack.py reads the run's
        (run_dir / "config.json").write_text(json.dumps({"flags": {"data_dir": str(trained_on)}}))
        assert dry_run()[0] == to_run


def test_an_attack_is_done_where_attack_py_reuses_every_entry(tmp_path, cifar10_dir, capsys, monkeypatch):
    """Without --num_images attack.py attacks every test image of the folder it reads, whose
    sha256 says how many: entries on the 150 of another --data_dir were counted against the 100
    the run trained with, and the sweep resumed, without end, a run attack.py reused in full. A
    run without a readable config.json trained on the folder its checkpoint alone names (read
    with torch): the default folder's images were compared instead, and another copy there
    resumed it too."""
    from conftest import make_cifar10
    from utils.grid import test_images_sha256
    run_dir = tmp_path / "out" / "cifar10" / "seed3" / "resnet32" / "model_category"
    run_dir.mkdir(parents=True)
    (run_dir / "results.json").write_text(json.dumps({"test_acc": 0.5, "test_images": 100}))
    (run_dir / "category_seed3_resnet32_best_model.pth").write_bytes(b"best")
    bigger = make_cifar10(tmp_path / "bigger", test=150)

    def attacked(data_dir, num_images):
        entry = {"attack": "fgsm", "targeted": False, "protocol": "pixel", "eps": 8 / 255, "steps": 1,
                 "step_size": 8 / 255, "restarts": 1, "num_images": num_images or 150, "seed": 3,
                 "robust_acc": 0.25, "images_sha256": test_images_sha256("cifar10", data_dir, "fine", num_images)}
        (run_dir / ATTACK_RESULTS).write_text(json.dumps({"num_images": entry["num_images"], "entries": [entry]}))
        (run_dir / "attack_examples.png").write_bytes(b"png")

    def rows(*flags):
        argv = ["--labels", "category", "--seeds", "3", "--base_dir", str(tmp_path / "out"), "--stages",
                "attack", *flags, "--attack_args", "--attacks fgsm --epsilons 8/255 --targeted no", "--dry_run"]
        return sweep_lines(capsys, argv)[1]
    attacked(bigger, None)
    assert "skip: done (1 setting)" in rows("--data_dir", str(bigger))
    assert "run: resume: 1 of 1 settings missing" in rows("--data_dir", str(cifar10_dir))
    attacked(cifar10_dir, 20)
    monkeypatch.chdir(tmp_path)
    make_cifar10(tmp_path / "data", seed=1)  # the default --data_dir holds other images
    for config in (None, '{"flags": '):  # deleted, or cut short
        if config is not None:
            (run_dir / "config.json").write_text(config)
        assert "skip: done (1 setting)" in rows("--num_images", "20")
    (run_dir / "config.json").write_text(json.dumps({"flags": {}}))  # a run that trained on the default
    assert "run: resume: 1 of 1 settings missing" in rows("--num_images", "20")


def test_attacks_of_another_checkpoint_are_not_done(tmp_path, capsys, monkeypatch):
    """A best checkpoint copied in by hand over an attacked run's (a run trained on another
    machine): attack.py drops the entries of the checkpoint before it and attacks this one, and
    the sweep skipped the run as done. The checkpoint is read only where it is not the file
    attack.py recorded (size, mtime), so a run folder copied whole keeps its runs done unread,
    and a copy that keeps another file's mtime (cp -p, rsync -a) is read."""
    import hashlib
    import utils.grid
    run_dir = tmp_path / "cifar10" / "seed3" / "resnet32" / "model_category"
    make_trained(run_dir, attack=["fgsm"])
    checkpoint, results_path = run_dir / "category_seed3_resnet32_best_model.pth", run_dir / ATTACK_RESULTS
    checkpoint.write_bytes(b"attacked")
    attacked = checkpoint.stat()
    results = json.loads(results_path.read_text()) | {"checkpoint_sha256": hashlib.sha256(b"attacked").hexdigest()}
    results_path.write_text(json.dumps(results | {"checkpoint_mtime": attacked.st_mtime,
                                                  "checkpoint_size": attacked.st_size}))
    reads = []
    monkeypatch.setattr(utils.grid, "file_sha256", lambda path: reads.append(path) or hashlib.sha256(
        Path(path).read_bytes()).hexdigest())

    def row(content, mtime):
        checkpoint.write_bytes(content)
        os.utime(checkpoint, (mtime, mtime))
        argv = ["--labels", "category", "--seeds", "3", "--base_dir", str(tmp_path), "--stages", "attack",
                "--attack_args", "--attacks fgsm --epsilons 8/255 --targeted no --num_images 20", "--dry_run"]
        return sweep_lines(capsys, argv)[1]
    another = ("run: new: attack_results.json holds the attacks of another checkpoint than "
               "category_seed3_resnet32_best_model.pth")
    assert "skip: done (1 setting)" in row(b"attacked", int(attacked.st_mtime)) and not reads  # rsync -a, scp -p
    assert "skip: done (1 setting)" in row(b"attacked", attacked.st_mtime + 60) and len(reads) == 1  # cp
    assert another in row(b"attackeD", attacked.st_mtime - 3600)  # cp -p of another run's, as large
    assert another in row(b"another", attacked.st_mtime + 60)
    checkpoint.chmod(0)  # unreadable: not compared, done as the entries say (attack.py could not read it)
    if not os.access(checkpoint, os.R_OK):  # (root reads it all the same)
        assert "skip: done (1 setting)" in row(b"another", attacked.st_mtime + 60)
    checkpoint.chmod(0o644)
    results_path.write_text(json.dumps(results))  # an older attack.py's, which did not record the file
    os.utime(results_path, (attacked.st_mtime, attacked.st_mtime))
    assert another in row(b"another", attacked.st_mtime + 60)  # written after the results: read
    reads.clear()
    assert "skip: done (1 setting)" in row(b"another", attacked.st_mtime - 60) and not reads


def test_a_base_dir_inside_the_layout_is_refused_once_with_the_one_to_pass(tmp_path):
    """Each run's train.py refuses it (outputs/cifar10 would nest new runs in the old ones): the
    sweep says so once, before it plans, instead of failing every run."""
    make_trained(tmp_path / "cifar10" / "seed3" / "resnet32" / "model_category")
    for inside in (tmp_path / "cifar10", tmp_path / "cifar10" / "seed3" / "resnet32" / "model_category"):
        with pytest.raises(UsageError, match=re.escape(f"--base_dir {inside} is a folder inside the layout of "
                                                       "run directories (") + ".*" + re.escape(
                                                           f": pass --base_dir {tmp_path}")):
            sweep.main(["--labels", "category", "--seeds", "3", "--base_dir", str(inside), "--dry_run"])


def test_a_finished_run_without_its_best_checkpoint_is_counted_refused(capsys, tmp_path):
    """A run copied back without checkpoints (docs/experiments.md's way to continue the study)
    asked for a new attack setting: attack.py ends with 'no checkpoint', but the dry run said
    'resume' and the count had it among the runs to do. A run not trained yet is not refused: in
    the two-array workflow the train array runs first."""
    make_trained(tmp_path / "cifar10" / "seed3" / "resnet32" / "model_category")
    make_trained(tmp_path / "cifar10" / "seed3" / "resnet32" / "model_shuffle")
    (tmp_path / "cifar10" / "seed3" / "resnet32" / "model_shuffle" / "shuffle_seed3_resnet32_best_model.pth").unlink()
    lines = sweep_lines(capsys, ["--labels", "category", "shuffle", "speech", "--seeds", "3", "--base_dir",
                                 str(tmp_path), "--stages", "attack", "--attack_args",
                                 "--attacks fgsm --epsilons 8/255", "--dry_run"])
    rows = {line.split()[1].split("/")[2]: line for line in lines[1:-2]}
    assert "run: new " in rows["category"]
    assert ("run: finished, but without shuffle_seed3_resnet32_best_model.pth: attack.py refuses it; delete "
            "the run directory to train it again") in rows["shuffle"]
    assert "run: no trained model yet (its train stage is not in this sweep)" in rows["speech"]
    assert lines[-2] == ("3 runs: 3 to run (1 of them refused by their script: --dry_run says why), "
                         "0 complete (skipped); attack 3")


def test_a_dataset_batch_the_sweep_cannot_read_leaves_the_run_to_train_py(tmp_path, cifar10_dir,
                                                                         monkeypatch):
    """A batch train.py refuses with one line (a folder or a FIFO in its place, a file this user
    may not read) is not compared, as a corrupt one is not: the sweep stopped with "error: cannot
    use ...: Is a directory" where a run had recorded its data, or waited for ever on the FIFO."""
    from utils import pickles
    from utils.grid import dataset_sha256
    data = tmp_path / "data"
    shutil.copytree(cifar10_dir, data)
    batch = data / "cifar-10-batches-py" / "test_batch"
    run_dir = tmp_path / "out" / "cifar10" / "seed3" / "resnet32" / "model_category"
    run_dir.mkdir(parents=True)
    (run_dir / "results.json").write_text(json.dumps({"test_acc": 0.5}))
    (run_dir / "config.json").write_text(json.dumps({"flags": {}, "data_sha256": "0" * 64}))
    argv = ["--labels", "category", "--seeds", "3", "--base_dir", tmp_path / "out", "--data_dir", data,
            "--stages", "train", "--dry_run"]
    batch.unlink()
    for make in (batch.mkdir, lambda: os.mkfifo(batch)):
        make()
        proc = run_script("sweep.py", *argv, check=False, timeout=60)
        assert proc.returncode == 0 and "skip: done, test_acc 0.5000" in proc.stdout, proc.stderr
        if batch.is_dir():
            batch.rmdir()
        else:
            batch.unlink()
    shutil.copy(cifar10_dir / "cifar-10-batches-py" / "test_batch", batch)
    assert dataset_sha256("cifar10", data, "fine") is not None

    def refused(path, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))
    monkeypatch.setattr(pickles, "open", refused, raising=False)  # read as root, chmod 000 is no bar
    os.utime(batch, ns=(1, 1))  # another version of the files (an mtime no copy had): read again
    assert dataset_sha256("cifar10", data, "fine") is None


def test_local_pool_passes_sigterm_on_and_starts_nothing_more(tmp_path):
    """SIGTERM to a --local sweep reaches the running stage (exit 75) and no queued run starts."""
    (tmp_path / "stage.py").write_text(STAGE)
    tasks = [Task(i, Run("cifar10", "resnet32", f"label{i}", 100, 0), tmp_path / f"run{i}", ("train",),
                  ["train"], {}, {"train": [sys.executable, str(tmp_path / "stage.py"), "60", "0"]})
             for i in range(3)]
    log = tmp_path / "run0" / "train.log"

    def signal_when_working():
        while not (log.exists() and "working" in log.read_text()):
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGTERM)
    threading.Thread(target=signal_when_working, daemon=True).start()
    pool = sweep.LocalPool(tasks, [{}], stream=io.StringIO())
    outcomes = pool.run()
    assert pool.signal == signal.SIGTERM
    assert [(o["run"], o["status"]) for o in outcomes] == [("cifar10/resnet32/label0/level100/seed0", 75)]
    assert not (tmp_path / "run1").exists()
    assert signal.getsignal(signal.SIGTERM) is not pool.stop  # handlers restored
    tally = pool.tally()
    assert (tally["completed"], tally["failed"], tally["not_started"]) == (0, [], 2)
    assert [o["run"] for o in tally["stopped"]] == ["cifar10/resnet32/label0/level100/seed0"]


def test_local_pool_counts_a_run_completed_only_when_every_stage_finished(tmp_path):
    (tmp_path / "stage.py").write_text(STAGE)

    def task(i, *exits):
        stages = ("train", "attack")[:len(exits)]
        return Task(i, Run("cifar10", "resnet32", f"label{i}", 100, 0), tmp_path / f"run{i}", stages,
                    list(stages), {}, {s: [sys.executable, str(tmp_path / "stage.py"), "0", str(e)]
                                       for s, e in zip(stages, exits)})
    pool = sweep.LocalPool([task(0, 0, 0), task(1, 0, 3), task(2, 4, 0), task(3, 0)], [{}, {}],
                           stream=io.StringIO())
    pool.run()
    tally = pool.tally()
    assert (tally["completed"], tally["stopped"], tally["not_started"]) == (2, [], 0)
    assert sorted((o["run"].split("/")[2], o["stage"], o["status"]) for o in tally["failed"]) == \
        [("label1", "attack", 3), ("label2", "train", 4)]

    # a signal between a run's training and its attack: the run was counted nowhere (runs 1, all 0)
    pool = sweep.LocalPool([task(0, 0, 0)], [{}], stream=io.StringIO())
    pool.outcomes = [{"run": "cifar10/resnet32/label0/level100/seed0", "stage": "train", "status": 0}]
    assert pool.tally() == {"completed": 0, "failed": [], "stopped": [], "held": [], "not_started": 1}


def test_a_coarse_runs_name_is_report_pys(capsys, tmp_path):
    """A --label_granularity coarse run, which train.py writes under cifar100_coarse and report.py
    names cifar100_coarse/..., was cifar100/... in the dry run's rows, --local's progress lines and
    its JSON summary (as if a fine run's). Now each names it as report.py does, its smoothing too."""
    import report
    name = "cifar100_coarse/resnet32/category_smooth0.1/level30/seed0"
    grid = tmp_path / "grid.yaml"
    grid.write_text("datasets: [cifar100]\nlabels: [category]\nlevels: [30]\nstages: [train]\n"
                    f"args: --label_granularity coarse --smoothing 0.1 --base_dir {tmp_path / 'out'}\n")
    rows = sweep_lines(capsys, ["--config", str(grid), "--dry_run"])
    assert rows[1].split()[:2] == ["0", name]
    (tmp_path / "out").mkdir()  # no run yet: report.py lists the grid's as missing, by name
    report.main(["--grid", str(grid), "--out", str(tmp_path / "report"), "--no_figures"])
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert [m["run"] for m in summary["missing"]] == [name]

    opts, runs, scripts, routed = sweep.parse(["--config", str(grid), "--local"])
    [task] = sweep.make_tasks(opts, runs, scripts, routed, sys.executable)
    (tmp_path / "stage.py").write_text(STAGE)
    task.commands["train"] = [sys.executable, str(tmp_path / "stage.py"), "0", "3"]
    stream = io.StringIO()
    pool = sweep.LocalPool([task], [{}], stream=stream)
    pool.run()
    assert f"train {name}: FAILED (exit 3)" in stream.getvalue()
    assert [o["run"] for o in pool.tally()["failed"]] == [name]


def test_a_stages_log_keeps_its_earlier_attempts(tmp_path):
    """docs/experiments.md: a stage's output is appended to its log under a `===` header, so the
    sweep run again (after a failure or a stop) keeps what the earlier attempt said."""
    (tmp_path / "stage.py").write_text(STAGE)
    task = Task(0, Run("cifar10", "resnet32", "category", 100, 0), tmp_path / "run", ("train",), ["train"],
                {}, {"train": [sys.executable, str(tmp_path / "stage.py"), "0", "3"]})
    for _ in range(2):
        sweep.LocalPool([task], [{}], stream=io.StringIO()).run()
    text = (tmp_path / "run" / "train.log").read_text()
    assert (text.count("=== "), text.count("working")) == (2, 2)


def test_a_local_sweep_that_cannot_write_its_logs_is_one_line_before_any_run(tmp_path, cifar10_dir,
                                                                            label_dir, capsys, monkeypatch):
    """A --base_dir that is a file: a traceback from each worker thread, and exit 0 with every run
    'not_started'; then each run failed 'not started' (exit 1), pointing at a train.log that was
    never written. A read-only one (a mount, another user's folder) likewise. Now one error line
    before any run, naming what could not be written and the flag that moves it."""
    from conftest import read_only
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    proc = run_script("sweep.py", "--labels", "category", "speech", "--seeds", "3", "--local",
                      *tiny(cifar10_dir, label_dir, a_file), check=False)
    assert (proc.returncode, proc.stdout, proc.stderr) == (2, "", f"error: cannot use {a_file}: a file, not a folder\n")
    base = tmp_path / "outputs"
    run = base / "cifar10" / "seed3" / "resnet32" / "model_category"
    make_trained(run, epochs=1)  # trained: its attack is left, whose attack.log is not there yet
    read_only(monkeypatch, base)
    grid = ["--labels", "category", "speech", "--seeds", "3", "--local", *tiny(cifar10_dir, label_dir, base)]
    for folder in (run, run.parent):  # the trained run's logs in its folder, a new run's in the nearest there
        with pytest.raises(UsageError) as refused:
            sweep.main(grid)
        assert str(refused.value) == f"could not write {folder}: Read-only file system; pass another --base_dir"
        assert not any(run.glob("*.log")) and not (run.parent / "model_speech").exists()
        grid = [a for a in grid if a != "category"]
    assert "FAILED" not in capsys.readouterr().err


def test_a_stage_log_already_there_that_takes_no_appends_is_one_line_before_any_run(tmp_path, capsys):
    """A run left to do whose train.log is there is checked by appending to it, before any run
    starts: one that cannot be (here a folder of that name) is one line naming it, and no stage
    starts."""
    log = tmp_path / "out" / "cifar10" / "seed3" / "resnet32" / "model_category" / "train.log"
    log.mkdir(parents=True)
    argv = ["--seeds", "3", "--base_dir", str(tmp_path / "out"), "--stages", "train", "--local"]
    assert call_cli(sweep.main, argv) == 2
    assert capsys.readouterr() == ("", f"error: cannot use {log}: Is a directory\n")
    assert [p.name for p in log.parent.iterdir()] == ["train.log"]


def test_a_stage_whose_log_could_not_be_made_names_no_log(tmp_path):
    """A stage whose log could not be made once the sweep ran (its run folder made a file meanwhile)
    failed 'not started' with '(log: .../train.log)', a log that was never written."""
    (tmp_path / "run").write_text("")
    task = Task(0, Run("cifar10", "resnet32", "category", 100, 0), tmp_path / "run", ("train",), ["train"],
                {}, {"train": [sys.executable, "-c", "pass"]})
    [outcome] = sweep.LocalPool([task], [{}], stream=io.StringIO()).run()
    assert (outcome["status"], outcome["log"], outcome["note"]) == (
        None, None, f"error: cannot use {tmp_path / 'run'}: a file, not a folder")


def disk_writes(monkeypatch, room):
    """Writes through utils.atomic (`append_whole`: a stage log's header) on a disk that is full
    once a file holds `room` bytes: a write takes what fits, then fails with ENOSPC."""
    from utils import atomic

    class FullAt:
        def __getattr__(self, name):
            return getattr(os, name)

        @staticmethod
        def write(fd, data):
            size = os.fstat(fd).st_size
            if size >= room:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return os.write(fd, data[:room - size])
    monkeypatch.setattr(atomic, "os", FullAt())


def test_a_log_header_that_does_not_fit_on_the_disk_fails_the_stage(tmp_path, monkeypatch):
    """A full disk: the failed write is named by the log's path (the write's own error names none)."""
    disk_writes(monkeypatch, room=0)
    task = Task(0, Run("cifar10", "resnet32", "category", 100, 0), tmp_path / "run", ("train",), ["train"],
                {}, {"train": [sys.executable, "-c", "pass"]})
    log = io.StringIO()
    pool = sweep.LocalPool([task], [{}], stream=log)
    [outcome] = pool.run()
    note = f"error: could not write {tmp_path / 'run' / 'train.log'}: No space left on device"
    assert (outcome["status"], outcome["note"]) == (None, note)
    assert f"train cifar10/resnet32/category/level100/seed0: FAILED (not started): {note}" in log.getvalue()
    assert pool.tally()["failed"] == [outcome]


def test_a_log_header_goes_to_the_file_that_takes_the_stages_output(tmp_path, monkeypatch):
    """open_log wrote the header through a second open of the log's path: a log replaced between
    the two (another file moved there, as a user keeping the old log does) got the header, and the
    stage's output went under no header into the file moved away. Both go to the one file opened."""
    import builtins
    log = tmp_path / "train.log"
    log.write_bytes(b"earlier attempt\n")

    def replaced_once_opened(path, *args, **kwargs):
        opened = builtins.open(path, *args, **kwargs)
        (tmp_path / "other.log").write_bytes(b"another file\n")
        os.replace(tmp_path / "other.log", path)
        return opened
    monkeypatch.setattr(sweep, "open", replaced_once_opened, raising=False)
    with sweep.open_log(log, "=== header\n") as out:
        out.write(b"stage output\n")
        assert os.pread(out.fileno(), 100, 0) == b"earlier attempt\n=== header\nstage output\n"
    assert log.read_bytes() == b"another file\n"


def one_stage(tmp_path, command):
    """A LocalPool of one train stage running `command`: (its outcome, what the pool said)."""
    task = Task(0, Run("cifar10", "resnet32", "category", 100, 0), tmp_path / "run", ("train",), ["train"],
                {}, {"train": command})
    said = io.StringIO()
    [outcome] = sweep.LocalPool([task], [{}], stream=said).run()
    return outcome, said.getvalue()


def test_a_log_header_cut_short_by_a_full_disk_is_cut_off_again(tmp_path, monkeypatch):
    """An unbuffered write takes what fits and says nothing: on a full disk the header went in
    half ('... --attacks fgsm iter'), the stage started, and its lines ran on after it. The header
    is written whole or not at all, and the stage does not start."""
    log = tmp_path / "run" / "train.log"
    log.parent.mkdir()
    log.write_bytes(b"earlier attempt\n")

    disk_writes(monkeypatch, room=26)  # 10 bytes fit, then the disk is full
    outcome, _ = one_stage(tmp_path, [sys.executable, "-c", "print('trained')"])
    assert (outcome["status"], outcome["note"]) == (None, f"error: could not write {log}: No space left on device")
    assert log.read_bytes() == b"earlier attempt\n"


def test_a_stage_after_one_cut_off_mid_line_starts_a_line_of_its_own(tmp_path):
    """A log an earlier attempt left mid-line (a full disk, a kill) had the next header glued on:
    '14:53:5=== 2026-...', which last_line did not take for a header, so the earlier attempt's
    lines counted as this one's."""
    log = tmp_path / "run" / "train.log"
    log.parent.mkdir()
    log.write_bytes(b"=== earlier\nerror: an earlier attempt's error\n14:53:5")
    outcome, _ = one_stage(tmp_path, [sys.executable, "-c", "import sys; sys.exit(2)"])
    lines = log.read_text().splitlines()
    assert lines[2] == "14:53:5" and lines[3].startswith("=== ") and outcome["note"] == ""


def test_a_stage_whose_error_line_found_its_log_full_says_so(tmp_path, monkeypatch):
    """A stage whose log's disk filled up lost its error line: the sweep gave a cut-off progress
    line as the reason ('FAILED (exit 1): 14:53:5'), or nothing. Where the log's file system is
    full, the note says that the log could not be written."""
    log = tmp_path / "run" / "train.log"
    command = [sys.executable, "-c", "import sys; sys.stdout.write('14:53:54 [1/8] fgsm unt'); sys.exit(2)"]
    outcome, said = one_stage(tmp_path, command)
    assert outcome["note"] == "14:53:54 [1/8] fgsm unt"  # a disk with room: the log's last line, as it was
    monkeypatch.setattr(os, "fstatvfs", lambda fd: types.SimpleNamespace(f_bavail=0, f_bfree=0))  # no block left
    outcome, said = one_stage(tmp_path, command)
    note = f"error: could not write {log}: No space left on device"
    assert (outcome["status"], outcome["note"]) == (2, note)
    assert f"FAILED (exit 2): {note}" in said


@pytest.mark.parametrize("euid, full", [(0, False), (1000, True)])
def test_a_disk_full_to_users_is_not_full_to_a_root_stage(euid, full, tmp_path, monkeypatch):
    """A file system keeps blocks back for root (ext4: 5%): with f_bavail 0 and blocks still free,
    a stage run as root writes on, and its own last line (a traceback's) is the reason it failed,
    not a full disk; a user's stage there could write nothing more."""
    command = [sys.executable, "-c", "import sys; print('RuntimeError: out of memory'); sys.exit(1)"]
    monkeypatch.setattr(os, "fstatvfs", lambda fd: types.SimpleNamespace(f_bavail=0, f_bfree=2000))
    monkeypatch.setattr(os, "geteuid", lambda: euid)
    outcome, _ = one_stage(tmp_path, command)
    log = tmp_path / "run" / "train.log"
    assert outcome["note"] == (f"error: could not write {log}: No space left on device" if full
                               else "RuntimeError: out of memory")


def test_a_stage_summary_shows_an_accuracy_of_zero(tmp_path):
    """A model no image survives had its clean_acc 0.0 shown as nan."""
    log = tmp_path / "attack.log"
    log.write_text('progress\n{"clean_acc": 0.0, "robust_acc": {"fgsm/untargeted/8/255": 0.0}}\n')
    assert sweep.summary_of(log) == "clean_acc 0.0000, 1 setting"
    log.write_text('{"clean_acc": null, "robust_acc": {}}\n')
    assert sweep.summary_of(log) == "clean_acc -, 0 settings"
    log.write_text('{"test_acc": 0.5}\n')
    assert sweep.summary_of(log) == "test_acc 0.5000"


def test_a_stage_whose_last_line_nests_too_deeply_has_no_summary(tmp_path):
    """A finished stage whose log ends in a line of 5000 '[' (JSON nested past Python's recursion
    limit) stopped the local sweep with a RecursionError traceback; it has no summary, as any
    other last line that is not a result."""
    log = tmp_path / "train.log"
    log.write_text("[" * 5000 + "\n")
    assert sweep.summary_of(log) == ""


def test_a_failed_slurm_write_leaves_the_earlier_files_whole(tmp_path, cifar10_dir, label_dir):
    """A full disk truncated the commands file of an array already queued mid-line (its tasks
    would run broken commands)."""
    script = tmp_path / "x.sbatch"
    argv = ["--slurm", str(script), "--stages", "train", "--data_dir", str(cifar10_dir), "--label_dir",
            str(label_dir), "--base_dir", str(tmp_path / "runs"), "--valid_size", "50"]
    run_script("sweep.py", *argv, "--seeds", "0", "1")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    limit = textwrap.dedent(f"""
        import resource, runpy, signal, sys
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # a failed write, not a killed process
        resource.setrlimit(resource.RLIMIT_FSIZE, (1024, 1024))
        sys.argv = ["sweep.py"] + sys.argv[1:]
        runpy.run_path({str(REPO / "sweep.py")!r}, run_name="__main__")
    """)
    proc = subprocess.run([sys.executable, "-c", limit, *argv, "--seeds", *map(str, range(40))], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and proc.stderr.startswith("error: could not write "), proc.stderr
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before


def test_a_failed_slurm_write_leaves_the_earlier_arrays_as_they_were(tmp_path, capsys, monkeypatch,
                                                                      cifar10_dir, label_dir):
    """The commands file and the array scripts were written one at a time: a full disk at part 2
    left a new part 1 (a new grid's first tasks) beside the earlier grid's part 2, and a new
    commands file no script named. They are one set now: the earlier files stay as they were, no
    new file (nor folder) is left, and the error is one line naming the file."""
    jobs = tmp_path / "jobs"
    script = jobs / "sweep.sbatch"
    flags = ["--labels", "category", *tiny(cifar10_dir, label_dir, tmp_path / "out"), "--stages", "train",
             "--slurm", str(script), "--max_array_size", "2"]
    sweep_lines(capsys, flags + ["--seeds", "0", "1", "2", "3"])
    before = {p.relative_to(jobs): p.read_bytes() if p.is_file() else None for p in jobs.rglob("*")}
    real = tempfile.mkstemp

    def full_at_part2(*args, prefix="", **kwargs):
        if prefix.startswith(".sweep.part2.sbatch."):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(*args, prefix=prefix, **kwargs)
    monkeypatch.setattr(tempfile, "mkstemp", full_at_part2)
    assert call_cli(sweep.main, flags + ["--seeds", "4", "5", "6", "7", "8"]) == 2
    assert capsys.readouterr() == ("", f"error: could not write {jobs / 'sweep.part2.sbatch'}: "
                                       "No space left on device\n")
    assert {p.relative_to(jobs): p.read_bytes() if p.is_file() else None for p in jobs.rglob("*")} == before
    # a first --slurm into a new folder that fails leaves no folder either
    assert call_cli(sweep.main, [*flags[:-3], str(tmp_path / "new" / "sweep.sbatch"), *flags[-2:], "--seeds",
                                 "0", "1", "2"]) == 2
    assert not (tmp_path / "new").exists()


def test_grid_readers_and_names():
    """Levels, budgets and directory names as train.py and attack.py write them; entries of an
    unknown protocol are malformed."""
    for text in ("0", "-5", "101"):
        with pytest.raises(sweep.UsageError, match="is not a percentage in"):
            parse_level(text)
    assert parse_level("2.5") == 2.5 and parse_level("25") == 25
    assert eps_text(0.03) == "7.65/255" and eps_text(8 / 255) == "8/255" and eps_text(0.05, "paper") == "0.05"
    assert eps_text(0.0) == "0"  # as --epsilons and the tables write it: it was 0/255
    entry = {"attack": "fgsm", "targeted": False, "eps": 0.03, "robust_acc": 0.5}
    assert well_formed(entry) and well_formed(entry | {"protocol": "paper", "target_success": 1.0})
    assert not well_formed(entry | {"protocol": "bogus"})
    assert run_directory("o", "cifar10", 100, 1, "resnet32", "speech", 1.0).name == "model_speech_noise1"
    assert run_directory("o", "cifar10", 100, 1, "resnet32", "speech", 0.25).name == "model_speech_noise0.25"


def test_local_slots_share_the_cores(monkeypatch, tmp_path, cifar10_dir, label_dir):
    """--jobs 4 on 8 cores: 2 threads each (all 8 each oversubscribed the CPU 4 times), however
    many runs are left: with 1 left, as when the same command resumes a grid, it had 8, and a
    CPU's rounding, so a run's numbers, depends on the thread count."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(var, raising=False)
    opts = argparse.Namespace(gpus=None, jobs=4)
    assert sweep.local_slots(opts) == [{"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}] * 4

    class Started(Exception):
        pass

    def pool(tasks, slots):
        raise Started(len([t for t in tasks if t.todo]), slots)
    monkeypatch.setattr(sweep, "LocalPool", pool)
    with pytest.raises(Started) as started:
        sweep.main(["--labels", "category", "--seeds", "3", "--local", "--jobs", "4",
                    *tiny(cifar10_dir, label_dir, tmp_path)])
    assert started.value.args == (1, [{"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}] * 4)
    shown = " ".join(sweep.build_parser().format_help().split())  # it said: cores/runs if fewer runs are left
    assert "each gets cores/jobs threads, however many runs are left (OMP_NUM_THREADS" in shown
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the user's setting stays, and is torch's
    slot = sweep.local_slots(opts)[0]
    assert slot == {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # MKL's was 2, which torch reads first
    threads = subprocess.run([sys.executable, "-c", "import torch; print(torch.get_num_threads())"],
                             env=os.environ | slot, capture_output=True, text=True, check=True).stdout
    assert threads.strip() == "1"
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setenv("MKL_NUM_THREADS", "3")
    assert sweep.local_slots(opts)[0] == {"OMP_NUM_THREADS": "3", "MKL_NUM_THREADS": "3"}


def test_local_gpu_slots_follow_the_ids_given(monkeypatch):
    """A slot per id listed, in order (an id twice: two runs on that GPU), the cores shared
    among the slots; a grid file's `gpus: 0` is GPU 0 (it was false: the runs went to the CPU)."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "CUDA_VISIBLE_DEVICES"):
        monkeypatch.delenv(var, raising=False)

    def gpus(*argv):
        slots = sweep.local_slots(sweep.parse(["--dry_run", *argv])[0])
        return [slot["CUDA_VISIBLE_DEVICES"] for slot in slots]
    assert gpus("--gpus", " 0, 1,0 ,") == ["0", "1", "0"]
    assert sweep.local_slots(sweep.parse(["--dry_run", "--gpus", "0,1,0"])[0])[1] == {
        "CUDA_VISIBLE_DEVICES": "1", "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}  # 8 cores // 3 slots
    uuid = "GPU-8f1d2c3e-1a2b-4c5d-9e8f-0123456789ab"
    assert gpus("--gpus", f"{uuid},MIG-{uuid[4:]}") == [uuid, f"MIG-{uuid[4:]}"]
    with tempfile.TemporaryDirectory() as folder:
        for text, ids in (("gpus: 0\n", ["0"]), ("gpus: [2, 3]\n", ["2", "3"]),
                          ("gpus: '1,1'\n", ["1", "1"])):
            Path(folder, "grid.yaml").write_text(text)
            assert gpus("--config", str(Path(folder, "grid.yaml"))) == ids, text


def test_local_gpu_ids_count_within_an_inherited_cuda_visible_devices(monkeypatch, capsys):
    """In a SLURM allocation of GPUs 2 and 3 (CUDA_VISIBLE_DEVICES=2,3), --gpus 0,1 are those two,
    as CUDA counts; a run was given CUDA_VISIBLE_DEVICES=0, another job's GPU."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    opts = sweep.parse(["--local", "--dry_run", "--gpus", "1,0,1"])[0]
    assert [slot["CUDA_VISIBLE_DEVICES"] for slot in sweep.local_slots(opts)] == ["3", "2", "3"]
    uuid = "GPU-8f1d2c3e-1a2b-4c5d-9e8f-0123456789ab"
    assert sweep.parse(["--local", "--dry_run", "--gpus", uuid])[0].gpus == [uuid]
    for inherited, shown in (("2,3", 2), ("", 0)):
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", inherited)
        assert call_cli(sweep.main, ["--local", "--dry_run", "--gpus", "0,2"]) == 2
        assert capsys.readouterr().err == (
            f"error: --gpus: {2 if shown else 0} is not among the {shown} GPUs CUDA_VISIBLE_DEVICES="
            f"{inherited!r} shows (indices count within it, from 0)\n")


def test_a_grid_files_gpus_count_within_cuda_visible_devices_only_with_local(monkeypatch, capsys, tmp_path):
    """A grid file's `gpus: 0,1` (for a workstation) beside its SLURM keys, read where
    CUDA_VISIBLE_DEVICES shows one GPU (a job's allocation) or none: --slurm, a dry run and
    report.py --grid start no run here, and each stopped with '--gpus: 1 is not among the 1 GPUs'.
    With --local, the file's ids are refused, naming the file."""
    import report
    grid = tmp_path / "grid.yaml"
    grid.write_text(f"seeds: [3]\ngpus: 0,1\npartition: gpu\nargs: --base_dir {tmp_path / 'out'}\n")
    for inherited, shown in (("0", 1), ("", 0)):
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", inherited)
        assert sweep.main(["--config", str(grid), "--slurm", str(tmp_path / "s.sbatch")])["tasks"] == 1
        assert sweep.main(["--config", str(grid), "--dry_run"]) == {"runs": 1, "to_run": 1, "running": 0}
        assert report.grid_train_flags(grid).base_dir == str(tmp_path / "out")
        capsys.readouterr()
        assert call_cli(sweep.main, ["--config", str(grid), "--local", "--dry_run"]) == 2  # its runs' GPUs
        assert capsys.readouterr().err == (f"error: {grid}: gpus: {shown} is not among the {shown} GPUs "
                                           f"CUDA_VISIBLE_DEVICES={inherited!r} shows (indices count "
                                           "within it, from 0)\n")


# A stage that records the GPU it was given, then waits until `count` stages have started (so
# that each started in a slot of its own) and prints it.
GPU_STAGE = """import os, pathlib, sys, time
folder, count = pathlib.Path(sys.argv[1]), int(sys.argv[2])
(folder / f"{os.getpid()}.started").write_text(os.environ["CUDA_VISIBLE_DEVICES"])
deadline = time.time() + 60
while len(list(folder.glob("*.started"))) < count and time.time() < deadline:
    time.sleep(0.02)
print("gpu", os.environ["CUDA_VISIBLE_DEVICES"], flush=True)
"""


@pytest.mark.parametrize("gpus, runs, concurrent", [("0,1,2,3", 2, 2), ("5,5", 3, 2)])
def test_local_runs_get_their_slots_gpu(tmp_path, monkeypatch, gpus, runs, concurrent):
    """More GPUs than runs: each run on a GPU of its own; an id listed twice: two runs at once on
    it, the third after. The stage, its log header and sweep's line name the same GPU."""
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    (tmp_path / "stage.py").write_text(GPU_STAGE)
    (tmp_path / "started").mkdir()
    stage = [sys.executable, str(tmp_path / "stage.py"), str(tmp_path / "started"), str(concurrent)]
    tasks = [Task(i, Run("cifar10", "resnet32", f"label{i}", 100, 0), tmp_path / f"run{i}", ("train",),
                  ["train"], {}, {"train": stage}) for i in range(runs)]
    log = io.StringIO()
    slots = sweep.local_slots(sweep.parse(["--dry_run", "--gpus", gpus])[0])
    pool = sweep.LocalPool(tasks, slots, stream=log)
    assert [o["status"] for o in pool.run()] == [0] * runs
    used = []
    for i in range(runs):
        text = (tmp_path / f"run{i}" / "train.log").read_text()
        gpu = re.search(r"CUDA_VISIBLE_DEVICES=(\S+), OMP_NUM_THREADS=", text.splitlines()[0])[1]
        assert text.splitlines()[1] == f"gpu {gpu}"
        assert re.search(rf"train cifar10/resnet32/label{i}/level100/seed0: started "
                         rf"\(CUDA_VISIBLE_DEVICES={gpu}, OMP_NUM_THREADS=\d+\)", log.getvalue())
        used.append(gpu)
    assert sorted(p.read_text() for p in (tmp_path / "started").iterdir()) == sorted(used)
    if gpus == "5,5":
        assert used == ["5"] * 3
    else:
        assert len(set(used)) == 2 and set(used) <= {"0", "1", "2", "3"}


def test_a_failed_stage_is_named_by_its_last_error_line(tmp_path):
    log = tmp_path / "train.log"
    log.write_text("=== 2026-12-02T10:00:00 OMP_NUM_THREADS=1: python train.py\nTraceback (most recent "
                   "call last):\n  File x\nRuntimeError: boom\n")
    assert sweep.last_line(log, prefix="error:") == "RuntimeError: boom"  # no error: line: the last
    log.write_text("error: first\nepoch 1\nerror: second\nmore\n")
    assert sweep.last_line(log, prefix="error:") == "error: second"
    assert sweep.last_line(tmp_path / "none.log") == ""
    # appended attempts: the last one's lines alone, never its '=== command' header or an earlier error
    log.write_text("=== 2026-12-02T10:00:00 OMP_NUM_THREADS=1: python train.py\nerror: old cause\n"
                   "=== 2026-12-02T11:00:00 OMP_NUM_THREADS=1: python train.py\n")
    assert sweep.last_line(log, prefix="error:") == ""
    log.write_text(log.read_text() + "epoch 1/2\n")
    assert sweep.last_line(log, prefix="error:") == "epoch 1/2"


def test_a_stage_killed_by_a_signal_is_named_so(tmp_path):
    """A stage the OOM killer ended (SIGKILL) was reported with its log's '=== command' header as
    its error line."""
    (tmp_path / "stage.py").write_text("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n")
    task = Task(0, Run("cifar10", "resnet32", "category", 100, 0), tmp_path / "run", ("train",), ["train"],
                {}, {"train": [sys.executable, str(tmp_path / "stage.py")]})
    log = io.StringIO()
    pool = sweep.LocalPool([task], [{}], stream=log)
    pool.run()
    [failed] = pool.tally()["failed"]
    assert (failed["status"], failed["note"]) == (-signal.SIGKILL, "killed by SIGKILL")
    assert "FAILED (exit -9): killed by SIGKILL" in log.getvalue()


def test_a_read_only_slurm_folder_names_the_flag_that_moves_it(cifar10_dir, label_dir, tmp_path, monkeypatch,
                                                                capsys):
    """--slurm jobs/x.sbatch run from a read-only shared install: the error named the folder, not
    the flag that writes elsewhere."""
    from conftest import read_only
    (tmp_path / "jobs").mkdir()
    read_only(monkeypatch, tmp_path / "jobs")
    flags = ["--labels", "category", *tiny(cifar10_dir, label_dir, tmp_path / "out"), "--stages", "train",
             "--slurm", str(tmp_path / "jobs" / "x.sbatch")]
    assert call_cli(sweep.main, flags) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (f"error: could not write {tmp_path / 'jobs' / 'logs'}: "
                                                        "Read-only file system; pass another --slurm")
