r"""Run a grid of experiments (train, then attack, per run) here, on SLURM, or anywhere else.

    python sweep.py --labels category speech --seeds 7 77 --levels 100 25 --dry_run
    python sweep.py --config grid.yaml --print | xargs -d '\n' -P 4 -I{} sh -c {}
    python sweep.py --config grid.yaml --slurm jobs/sweep.sbatch --partition gpu --gres gpu:1 --time 8:00:00
    python sweep.py --config grid.yaml --local --gpus 0,1,2,3
    python sweep.py --labels category speech --local --jobs 2 --epochs 30 --data_dir data --num_images 500

A run is one (dataset, model, label, level, seed) in that order; its stages run in order in one
unit of work (a line of --print, a SLURM array task, a local worker), because the attack needs the
trained checkpoint. Flags the sweep does not know are passed to every script that accepts them
(--epochs to train.py, --num_images to attack.py, --base_dir to both); --train_args and
--attack_args pass a string to one script only. What is done is read from the run directories, so
a sweep can be rerun at any time: finished stages are skipped, interrupted ones resume; --local
leaves a run that another job works on (another sweep's, a SLURM task's) to that job.
"""
if __name__ == "__main__":  # first: a Ctrl-C while modules load is one line, not a traceback
    from utils import errors
    errors.quiet_interrupts()

import argparse
import contextlib
import ctypes
import errno
import hashlib
import itertools
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from utils.errors import (STAMP, CliParser, DefaultsFormatter, ExtendList, OneFile, UsageError, did_you_mean,
                          log, nearest, nearest_existing, doc_paragraphs, nonempty, number, os_error_text,
                          os_errors_as_usage, run_cli, stamped)
from utils.grid import (AXES, GRID_FLAGS, STAGES, Scripts, axis_values, check_not_grid_flag,
                        check_runs_to_train, cores, counted, expand, load_grid_file, plan,
                        split_args, value_list)
from utils.atomic import append_whole, file_set, made_folders, not_through_a_link, print_json, utf8
from utils.preempt import HANGUP, REQUEUE_EXIT, leave_hung_up_terminal, present
from utils.runs import IN_USE, NOT_JSON, lock_free, run_holder

MODES = ("print", "slurm", "local")
# Keys of a grid file that are no flag of sweep.py: args, pass-through flags for every script that
# takes them (as unknown command-line flags are).
FILE_ONLY = {"args"}


def build_parser():
    parser = CliParser(prog="sweep.py", description=doc_paragraphs(__doc__)[0].split("\n")[0],
                       formatter_class=DefaultsFormatter,
                       epilog="Any other --flag (with its values) is passed to each of train.py and "
                              "attack.py that accepts it (--epochs to train.py, --num_images to "
                              "attack.py, --base_dir and --data_dir to both; one neither accepts is an "
                              f"error); flags after -- too. The grid sets {', '.join(GRID_FLAGS)} itself. "
                              "On stdout: --dry_run's table, then one JSON line; --print's commands "
                              "alone; --slurm's and --local's JSON line alone; the rest on stderr. Exit "
                              "status: 0 done, 2 after one `error:` line (bad input), and with --local 1 "
                              "where a stage failed, 75 stopped by SIGTERM, SIGUSR1, a hangup or a "
                              "stage's own stop, or runs left to the jobs that hold them (run it again to "
                              "continue), 130 Ctrl-C.")
    grid = parser.add_argument_group("grid (a run per combination, in this order)")
    grid.add_argument("--config", action=OneFile, type=nonempty, help="YAML or JSON file with any of these "
                      "options but --config and what to do as keys (labels: [category, speech]; train_args: "
                      "'--epochs 30'; args: [...] for pass-through flags); flags on the command line win")
    grid.add_argument("--datasets", nargs="+", action=ExtendList, default=["cifar10"], help="datasets")
    grid.add_argument("--models", nargs="+", action=ExtendList, default=["resnet32"], help="networks")
    grid.add_argument("--labels", nargs="+", action=ExtendList,  # read once, by the grid (parse_label)
                      default=["category"],
                      help="label representations")
    grid.add_argument("--levels", nargs="+", action=ExtendList, default=[100],
                      help="percent of the training set to train on (train.py's --level)")
    grid.add_argument("--seeds", nargs="+", action=ExtendList, default=[0], help="seeds")
    grid.add_argument("--stages", nargs="+", action=ExtendList, default=list(STAGES), choices=STAGES,
                      help="what each run does, in order")
    grid.add_argument("--train_args", action="append", help="flags for train.py only, as one "
                      "string (given twice: both, in order)")
    grid.add_argument("--attack_args", action="append", help="flags for attack.py only, as one "
                      "string (given twice: both, in order)")
    mode = parser.add_argument_group("what to do (one of)")
    mode.add_argument("--dry_run", action="store_true", help="list each run and what it still "
                      "needs; run nothing (also with the modes below)")
    mode.add_argument("--print", action="store_true", help="print one shell command per run "
                      "(its stages joined by &&) for xargs -P, GNU parallel or a notebook")
    mode.add_argument("--slurm", type=nonempty, metavar="FILE", help="write a SLURM job-array script, "
                      "a task per run, and its commands file beside it (line i+1 = task i), named by "
                      "its content")
    mode.add_argument("--local", action="store_true", help="run the grid on this machine, logging "
                      "each stage to {run_dir}/{stage}.log")
    local = parser.add_argument_group("--local")
    local.add_argument("--gpus", help="comma-separated GPU ids: one run at a time on each (an id "
                       "twice runs two there); sets CUDA_VISIBLE_DEVICES per run")
    local.add_argument("--jobs", type=int, default=1, help="concurrent runs without --gpus; each "
                       "gets cores/jobs threads, however many runs are left (OMP_NUM_THREADS / "
                       "MKL_NUM_THREADS, unless set already: those are passed on as they are, one set "
                       "alone for both)")
    slurm = parser.add_argument_group("--slurm (#SBATCH lines; one unset is the cluster's default)")
    slurm.add_argument("--job_name", default="labelrep", help="--job-name")
    slurm.add_argument("--partition", help="--partition")
    slurm.add_argument("--gres", help="--gres, e.g. gpu:1")
    slurm.add_argument("--time", help="--time per task (train + attack), e.g. 12:00:00")
    slurm.add_argument("--mem", help="--mem, e.g. 16G")
    slurm.add_argument("--cpus_per_task", type=int, help="--cpus-per-task (also the torch threads)")
    slurm.add_argument("--max_concurrent", type=int, help="tasks running at once (--array=0-N%%K), "
                       "per array (default: no limit)")
    slurm.add_argument("--max_array_size", type=int, default=1000, help="tasks per array: SLURM "
                       "refuses an array index of its MaxArraySize (1001 by default) or more; more "
                       "tasks go to further arrays (for jobs/x.sbatch: jobs/x.part2.sbatch and on)")
    slurm.add_argument("--signal_seconds", type=int, default=120, help="seconds before the time "
                       "limit at which SLURM sends USR1: the stage checkpoints, the task requeues")
    slurm.add_argument("--sbatch", nargs="+", action=ExtendList, default=[], metavar="OPTION",
                       help="more #SBATCH options, e.g. account=proj qos=high (a leading -- is added "
                       "if missing)")
    slurm.add_argument("--setup", nargs="+", action=ExtendList, default=[], metavar="LINE", help="shell lines run "
                       "before each task, e.g. 'source .venv/bin/activate'")
    slurm.add_argument("--python", type=nonempty, default="python", help="interpreter named in --print and "
                       "--slurm commands (--local uses the one running sweep.py)")
    return parser


def glued(argv):
    """`argv` with "--attack_args --amp" as "--attack_args=--amp": argparse reads a value that
    starts with "-" and holds no space as a flag, and said only "expected one argument"."""
    out = []
    for arg in argv:
        if out and out[-1] in ("--train_args", "--attack_args") and arg.startswith("-"):
            out[-1] = f"{out[-1]}={arg}"
        else:
            out.append(arg)
    return out


def parse(argv=None):
    """Flags, grid file and pass-through arguments -> (options, runs, scripts, routed args).

    Pass-through flags reach each script in this order, so that later ones win (argparse keeps
    the last value): the file's `args`, its `train_args`/`attack_args`, then the command line's
    other flags, then its --train_args/--attack_args. An error about a value the grid file gave
    names the file (`of_file`); opts.from_file: the options it gave that the command line did not;
    opts.repeats: a warning line for each axis that gives a value twice (`axis_values`).
    """
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    after = argv.index("--") if "--" in argv else len(argv)
    argv, tail = glued(argv[:after]), argv[after + 1:]
    first, _ = parser.parse_known_args(argv)
    # (flags routed to every script that takes them, {stage: flags for it alone}, the grid file they
    # come from or None)
    layers, from_file = [], set()
    if first.config:
        layer, keys = grid_file_layer(parser, first.config)
        layers.append((*layer, first.config))
        from_file = keys - given_options(parser, argv)
    opts, extra = parser.parse_known_args(argv)
    opts.from_file = from_file
    layers.append((extra + tail, {stage: [token for text in getattr(opts, f"{stage}_args") or []
                                          for token in split_args(text, f"--{stage}_args")]
                                  for stage in STAGES}, None))
    opts.repeats = []  # an axis's warning where it gives a value twice (seeds: [1, 1]), said by make_tasks
    for name in AXES:
        with of_file(opts, name):
            values, twice = axis_values(name, getattr(opts, name),
                                        f"{opts.config}: {name}" if name in opts.from_file else None)
        setattr(opts, name, values)
        opts.repeats += [twice] if twice else []
    with of_file(opts, "stages"):
        check_stages(opts)
    check_sbatch(opts)
    with of_file(opts, "setup"):
        opts.setup = text_list("setup", opts.setup)
    check_modes(opts, first)
    check_numbers(opts)
    check_gpus(opts)
    with of_file(opts, *(name for name in AXES if not getattr(opts, name))):  # the empty one it refuses
        runs = expand(vars(opts))

    scripts = Scripts.find()
    check_choices(opts, scripts)
    routed = {stage: [] for stage in scripts.stages}
    for shared, own, path in layers:
        with naming(path):  # a file's pass-through flags, each as its script reads it, before any run
            check_not_grid_flags(shared + own["train"] + own["attack"])
            check_passthrough(own, scripts)
            for stage, flags in scripts.route(shared, parser._option_string_actions).items():
                scripts[stage].parse(runs[0].flags() + flags + own[stage])
                routed[stage] = later_wins(later_wins(routed[stage], flags), own[stage])
    warn_unused_stage_args(opts, first)
    return opts, runs, scripts, routed


def later_wins(earlier, later):
    """Pass-through flags `earlier` then `later`, less each earlier flag (with its values) that
    `later` gives again: a later layer's value replaces an earlier one's, a list's too (attack.py's
    --epsilons, whose lists given twice on one command line add up, as `ExtendList`'s)."""
    again = {token.split("=", 1)[0] for token in later if token.startswith("--")}
    kept, keep = [], True
    for token in earlier:
        if token.startswith("--"):
            keep = token.split("=", 1)[0] not in again
        if keep:
            kept.append(token)
    return kept + later


def given_options(parser, argv):
    """The options (dests) that the command line `argv` gives itself, not a default or a grid file."""
    # argparse sets a default only where the namespace has no value yet; a list of its own, which
    # an option given replaces (or, appending, copies), for --train_args' append
    unset = []
    given, _ = parser.parse_known_args(argv, argparse.Namespace(**{a.dest: unset for a in parser._actions}))
    return {dest for dest, value in vars(given).items() if value is not unset}


@contextlib.contextmanager
def naming(path, key=None):
    """A UsageError raised inside said as one of the grid file at `path` and its `key`, in one line:
    '{path}: seeds: 1.5 is not a valid value', the key as the file writes it (without the command
    line's --); as raised where `path` is None (a value of the command line's). The file's value
    errors named neither (a user of several grid files, on a cluster's login node, was left to
    guess which file or key was wrong)."""
    try:
        yield
    except UsageError as err:
        if path is None:
            raise
        text = str(err)
        if key and text.startswith((f"--{key}:", f"--{key} ")):
            text = text[2:]
        elif key and not text.startswith((f"{key}:", f"{key} ")):
            text = f"{key}: {text}"
        raise UsageError(f"{path}: {text}") from None


def of_file(opts, *options):
    """`naming` for a check of `options`: the grid file's and the first of them it gave (not
    overridden on the command line: opts.from_file), where it gave one; else as raised."""
    key = next((o for o in options if o in opts.from_file), None)
    return naming(opts.config if key else None, key)


def grid_file_layer(parser, path):
    """The grid file at `path` (--config): (its pass-through flags as a layer of `parse`'s, the
    options it gives); its other keys become `parser`'s defaults, which the command line's flags
    override."""
    values = load_grid_file(path)
    dests = {a.dest for a in parser._actions} - {"help", "config", "dry_run", *MODES}
    keys = sorted(dests | set(FILE_ONLY))
    if unknown := sorted(set(values) - set(keys)):
        scripts = Scripts.find()
        raise UsageError(f"{path}: unknown key(s) {', '.join(k + key_hint(k, keys, scripts) for k in unknown)}; "
                         f"valid keys: {', '.join(keys)}")
    check_word_lists(values, path)
    check_comments(values, path)
    keys = set(values)
    with naming(path):
        layer = (split_args(values.pop("args", None), "args"),
                 {stage: split_args(values.pop(f"{stage}_args", None), f"{stage}_args") for stage in STAGES})
    parser.set_defaults(**single_values(parser, values, path))
    return layer, keys


def key_hint(key, keys, scripts):
    """What a grid file's unknown `key` is meant to be: ' (did you mean labels?)' for train.py's
    flag the grid sets (label) or a key near one of `keys`; ' (a flag of train.py: ...)' for a flag
    the sweep passes on (epochs, epsilons: keys of args); '' for none. The error listed every key
    but said neither."""
    if axis := GRID_FLAGS.get(f"--{key}"):
        return f" (did you mean {axis[2:]}?)"
    if takers := [script.path.name for script in scripts.stages.values() if f"--{key}" in script.passed()]:
        return f" (a flag of {' and '.join(takers)}: give it in args, as args: --{key} ...)"
    close = nearest(key, keys)
    return f" (did you mean {' or '.join(close)}?)" if close else ""


def check_comments(values, path):
    """A grid file's pass-through text with a '#' comment in it (a line of `args: |` ending
    `# a quick trial`) is an error: YAML keeps a text's lines whole, and the scripts were given
    '#', 'a', 'quick', 'trial' ("unrecognized arguments: '#' quick trial (see train.py --help)")."""
    for key in ("args", *(f"{stage}_args" for stage in STAGES)):
        if not isinstance(text := values.get(key), str):
            continue
        try:
            commented = shlex.split(text) != shlex.split(text, comments=True)
        except ValueError:  # an unclosed quote: split_args names it
            continue
        if commented:
            raise UsageError(f"{path}: {key}: a '#' in its text is passed on as text, not read as a "
                             f"comment; write comments outside the text of {key}, or quote a '#' meant as text")


def check_word_lists(values, path):
    """A grid file's axis or stages given as one text of several words (`labels: category speech`,
    `levels: 100, 25`) is an error naming the list to write: it was one label 'category speech'
    (no label file), or 'train attack', not a stage."""
    for key in (*AXES, "stages"):
        with naming(path, key):
            for value in value_list(key, values.get(key)):
                if isinstance(value, str) and len(words := [w for w in re.split(r"[\s,]+", value) if w]) > 1:
                    raise UsageError(f"{key}: {value!r} is one value; for several, write a list "
                                     f"({key}: [{', '.join(words)}])")


def check_stages(opts):
    """--stages: some of STAGES, kept in their order (the attack needs the trained checkpoint)."""
    given = text_list("stages", opts.stages)
    if not given or set(given) - set(STAGES):
        raise UsageError(f"--stages must be among {', '.join(STAGES)} "
                         f"(got {', '.join(given) or 'none'})")
    opts.stages = [s for s in STAGES if s in given]


def check_sbatch(opts):
    """--sbatch options, each given a leading -- if missing, that sbatch reads as meant: one line,
    naming an option the array script does not write itself; and a --slurm name of one line."""
    if opts.slurm:  # the header's comment lines name the file
        one_line("--slurm", opts.slurm, "the array script names its own file in comment lines, each one line")
    with of_file(opts, "sbatch"):
        opts.sbatch = [o.strip() for o in text_list("sbatch", opts.sbatch)]
        if "" in opts.sbatch:  # it wrote a bare '#SBATCH --'
            raise UsageError("--sbatch: an option must not be empty")
        # the rest of the line was a shell line in the header: sbatch read no #SBATCH line after it
        for option in opts.sbatch:
            one_line("--sbatch", option, "an #SBATCH option must fit on one line")
        opts.sbatch = [o if o.startswith("-") else f"--{o}" for o in opts.sbatch]
        for option in opts.sbatch:  # a second line for one the script writes: sbatch took the last
            if not option.lstrip("-").split("=", 1)[0].split():  # '-', '--=x'
                raise UsageError(f"--sbatch {option!r}: no option name; write NAME=VALUE (account=p)")
            shown = option.removeprefix("--")
            for name in sbatch_names(option):
                if written := SCRIPT_SBATCH.get(name):
                    raise UsageError(f"--sbatch {shown}: the array script writes --{written} itself "
                                     "(its tasks, logs and requeue rely on it); leave it out")
                if flag := SWEEP_SBATCH.get(name):
                    raise UsageError(f"--sbatch {shown}: use sweep.py's {flag}, which writes that line")


def check_modes(opts, first):
    """One of --print, --slurm, --local, or --dry_run alone; a warning for each flag given on the
    command line (`first`) of a mode other than the one chosen."""
    modes = [m for m in MODES if getattr(opts, m)]
    if len(modes) > 1:
        raise UsageError(f"choose one of --print, --slurm, --local (got {', '.join(modes)})")
    if not modes and not opts.dry_run:
        raise UsageError("say what to do: --dry_run, --print, --slurm FILE or --local")
    defaults = build_parser()
    for mode, (other, names) in itertools.product(modes, MODE_FLAGS.items()):
        # --gpus with --slurm wrote no GPU request, --partition with --local ran on without a word;
        # the command line's alone (`first`): a grid file's keys of both modes let it serve both
        unused = [f"--{n}" for n in names if getattr(first, n) not in (defaults.get_default(n), [])]
        if unused and other != mode:
            log(f"warning: {', '.join(unused)} only act{'s' * (len(unused) == 1)} with --{other}; "
                f"ignored with --{mode}")


# The integer options, each with its least value; checked here, not by argparse types: a grid
# file's values skip those
LEAST = {"jobs": 1, "cpus_per_task": 1, "max_concurrent": 1, "max_array_size": 1, "signal_seconds": 0}


def check_numbers(opts):
    """The integer options (LEAST), each at least its least value, as ints."""
    for name in LEAST:
        if getattr(opts, name) is not None:
            with of_file(opts, name):
                setattr(opts, name, whole_number(name, getattr(opts, name)))


def whole_number(name, value):
    """Integer option --`name`'s value (text or a number) as an int, at least LEAST[name]."""
    try:
        return number(int, LEAST[name], inclusive=True)(str(value))
    except argparse.ArgumentTypeError as err:
        raise UsageError(f"--{name}: {err}") from None


def check_gpus(opts):
    """--gpus as `gpu_ids`, without --jobs: a run per listed id. The pair is refused only where it
    acts (--local, or a dry run alone): --print and --slurm ignore both, as `check_modes` warns, and
    refusing them there said 'ignored' and then stopped on them."""
    if opts.gpus is not None:
        with of_file(opts, "gpus"):
            opts.gpus = gpu_ids(opts.gpus, here=opts.local)
        if opts.jobs != 1 and not (opts.print or opts.slurm):
            with of_file(opts, "jobs", "gpus"):
                raise UsageError(f"--jobs {opts.jobs} is for runs on the CPU; with --gpus, list an id twice "
                                 "to run two runs on that GPU (0,0,1,1)")


def check_not_grid_flags(tokens):
    """No pass-through flag of `tokens` sets what the grid sets itself (`check_not_grid_flag`)."""
    for token in tokens:
        if token.startswith("--"):
            check_not_grid_flag(token.split("=", 1)[0])


def check_choices(opts, scripts):
    """--datasets and --models among train.py's choices."""
    train_flags = scripts["train"].parser._option_string_actions
    for flag, axis in (("--dataset", "--datasets"), ("--model", "--models")):
        choices = train_flags[flag].choices
        if unknown := [v for v in getattr(opts, axis[2:]) if v not in choices]:
            named = ", ".join(v + did_you_mean(v, choices) for v in unknown)  # ResNet32, as papers write it
            with of_file(opts, axis[2:]):
                raise UsageError(f"{axis}: unknown {flag[2:]} {named}; choose from {', '.join(choices)}")


def check_passthrough(own, scripts):
    """Each --train_args/--attack_args flag of a layer (`own`: {stage: flags}) a flag of its script,
    by its full name."""
    for stage, flags in own.items():  # a script refuses a shortened flag (--see for --seed): said here, before any run
        options = [t.split("=", 1)[0] for t in flags if t.startswith("--")]
        if bad := [o for o in options if not scripts[stage].accepts(o)]:
            other = next(s for s in STAGES if s != stage)
            if bad[0] in scripts[other].passed():  # said 'give each flag its full name'
                raise UsageError(f"--{stage}_args: {bad[0]} is a flag of {scripts[other].path.name}, not "
                                 f"{scripts[stage].path.name}; give it in --{other}_args")
            raise UsageError(f"--{stage}_args: {bad[0]} is not a flag of {scripts[stage].path.name}"
                             f"{scripts[stage].closest(bad[0])} (give each flag its full name)")


def warn_unused_stage_args(opts, first):
    """A warning for each --train_args/--attack_args given for a stage --stages leaves out."""
    # the command line's alone, as for the modes' flags: a grid file's serve every --stages
    for stage in STAGES:
        if getattr(first, f"{stage}_args") and stage not in opts.stages:
            log(f"warning: --{stage}_args ignored: --stages {' '.join(opts.stages)} runs no {stage} stage")


def gpu_ids(value, here=True):
    """--gpus '0,1' (a grid file's 0 or [0, 1] too) -> ['0', '1']: indices or GPU-/MIG- UUIDs, as
    CUDA_VISIBLE_DEVICES takes them (one it cannot read hides every GPU: train.py would run on the CPU).
    here: the runs start on this machine (--local), whose CUDA_VISIBLE_DEVICES the indices count
    within; else (--slurm, a dry run, report.py --grid) they are read alone: a grid file's `gpus`
    for a workstation stopped them where the variable showed fewer GPUs (a job's allocation)."""
    ids = [str(g).strip() for g in (value if isinstance(value, list) else str(value).split(","))]
    if not (ids := [g for g in ids if g]):
        raise UsageError("--gpus needs ids, e.g. 0,1")
    if bad := [g for g in ids if not re.fullmatch(r"\d+|(GPU|MIG)-[\w/-]+", g)]:
        raise UsageError(f"--gpus: {bad[0]!r} is not a GPU id; give indices, e.g. 0,1 (or GPU-/MIG- UUIDs)")
    if not here or (inherited := os.environ.get("CUDA_VISIBLE_DEVICES")) is None:
        return ids
    # already narrowed (a SLURM allocation's): indices count within it, as CUDA's own do; setting
    # a physical index instead would give a run a GPU of another job
    visible = [v.strip() for v in inherited.split(",") if v.strip()]
    if beyond := [g for g in ids if g.isdigit() and int(g) >= len(visible)]:
        raise UsageError(f"--gpus: {beyond[0]} is not among the {len(visible)} GPUs CUDA_VISIBLE_DEVICES="
                         f"{inherited!r} shows (indices count within it, from 0)")
    return [visible[int(g)] if g.isdigit() else g for g in ids]


def single_values(parser, values, path):
    """A grid file's values for options of one value, as the command line would give them: a key
    left empty (null) is the option's default, text or a number is read by the option's type
    (an int option's number by `check_numbers`), a list, mapping or true/false is an error
    (--gpus, which takes a list, is read by `gpu_ids`)."""
    out = dict(values)
    for action in parser._actions:
        key = action.dest
        if key not in values or action.nargs is not None or key == "gpus":
            continue
        value = values[key]
        if value is None:  # `partition:` with nothing after it; was --job-name=None, a traceback for jobs
            del out[key]
        elif isinstance(value, bool) or not isinstance(value, (str, int, float)):
            quote = "; quote a word YAML reads as true or false ('yes')" if isinstance(value, bool) else ""
            raise UsageError(f"{path}: {key}: {value!r} is not one value (text or a number{quote})")
        elif action.type is int:  # argparse reads text by the type itself: 'argument --jobs: invalid int value'
            with naming(path, key):
                out[key] = whole_number(key, value)
        else:
            out[key] = str(value)
    return out


def text_list(name, value):
    """A list option's values (`value_list`) as text."""
    values = value_list(name, value)
    if not all(isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in values):
        raise UsageError(f"--{name}: {value!r} is neither a value nor a list of values")
    return [str(v) for v in values]


def make_tasks(opts, runs, scripts, routed, python):
    for line in opts.repeats:  # here, not in parse: report.py --grid parses the grid file twice
        log(line)
    if "attack" in opts.stages:  # once here, as well as in each attack stage's log
        for line in scripts["attack"].module.repeated_settings(scripts["attack"].parse(runs[0].flags()
                                                                                      + routed["attack"])):
            log(line)
    tasks = plan(runs, opts.stages, scripts, routed, python=python)
    if "train" in opts.stages:  # a label with no file, ...: the grid file's where it gave the labels
        with naming(opts.config if "labels" in opts.from_file else None):
            check_runs_to_train([t.run for t in tasks if "train" in t.todo], scripts["train"], routed["train"])
    return tasks


# ---------------------------------------------------------------- listing


# a stage's column is no wider: the longest note of a run in progress ('run: resume (120/600 epochs
# logged; files last written 40 min ago)') fits; a longer one pushes the rest of its own row along
NOTE_WIDTH = 66


def dry_run(tasks):
    """A table on stdout: each run, then for each stage 'run: why' or 'skip: why', then its run
    directory. A stage's column is as wide as its notes up to NOTE_WIDTH: one longer note (a
    refusal's reason, a list of missing settings: 100 characters and more) widened every row."""
    stages = tasks[0].stages
    rows = [["#", "run", *stages, "run directory"]]
    for task in tasks:
        cells = [f"{'run' if s in task.todo else 'skip'}: {task.notes[s]}" for s in stages]
        rows.append([str(task.index), task.name, *cells, str(task.run_dir)])
    widths = [max(len(r[i]) for r in rows) for i in (0, 1)]
    widths += [max(len(r[i]) for r in rows if len(r[i]) <= NOTE_WIDTH) for i in range(2, len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[-1])
    print(count_line(tasks))


def in_progress(tasks):
    """How many of the `tasks` another job (a train.py or attack.py) works on now (`Task.running`)."""
    return sum(bool(t.running) for t in tasks)


# what --local does with a run another job works on, and how to go on (`count_line`, `main`)
LEFT = "rerun the sweep once it ends"


def count_line(tasks, local=False):
    """The plan in one line: runs, those to run, of which refused and in progress in another job
    (local: --local's, which leaves those to their jobs), those complete, and each stage's count."""
    todo = [t for t in tasks if t.todo]
    runs = f"{len(tasks)} run{'s' * (len(tasks) != 1)}"
    stages = ", ".join(f"{s} {sum(s in t.todo for t in tasks)}" for s in tasks[0].stages)
    refused = sum(bool(t.refused) for t in tasks)  # they end with an error line: said before they run
    refused = f" ({refused} of them refused by their script: --dry_run says why)" if refused else ""
    # at work in another job (another sweep's, a SLURM task's): a stage there would be refused, so --local
    # leaves the run to it
    said = f"left to it; {LEFT}" if local else "--dry_run names it"
    running = f" ({in_progress(tasks)} of them in progress in another job: {said})" if in_progress(tasks) else ""
    return f"{runs}: {len(todo)} to run{refused}{running}, {len(tasks) - len(todo)} complete (skipped); {stages}"


# ---------------------------------------------------------------- SLURM

# sbatch options the array script writes: from the script itself (each option that would override
# one of its lines, with that line: --error would take stderr out of --output's log), and from
# sweep.py's flags (written where set, in this order)
SCRIPT_SBATCH = {"array": "array", "output": "output", "error": "output (stderr too)",
                 "open-mode": "open-mode", "requeue": "requeue", "no-requeue": "requeue", "signal": "signal"}
SWEEP_SBATCH = {"job-name": "--job_name", "partition": "--partition", "gres": "--gres", "time": "--time",
                "mem": "--mem", "cpus-per-task": "--cpus_per_task"}
SBATCH_LETTERS = {"a": "array", "o": "output", "e": "error", "J": "job-name", "p": "partition", "t": "time",
                  "c": "cpus-per-task"}  # sbatch's short options for the lines above
SBATCH_SWITCHES = "hsvHOQVW"  # sbatch's one-letter options without a value: -Qt 1:00:00 is -Q -t 1:00:00
# The flags of one mode, which the others ignore
MODE_FLAGS = {"local": ("gpus", "jobs"),
              "slurm": (*(flag[2:] for flag in SWEEP_SBATCH.values()), "max_concurrent", "max_array_size",
                        "signal_seconds", "sbatch", "setup")}
SCRIPT_MARK = "# labelrep sweep:"  # the second line of every array script sweep.py writes
SLURM_BODY = r'''
child=""
signalled=""
forward() {  # pass the signal to the running stage, which checkpoints and exits 75
  signalled=$1
  echo "$(date +%FT%T) task $task: got SIG$1, stopping the stage" >&2
  [ -n "$child" ] && kill -s "$1" "$child" 2>/dev/null
}
trap 'forward USR1' USR1
trap 'forward TERM' TERM

stage() {  # stage LOG COMMAND...: run one stage in the background, so the traps run at once
  local log=$1 status interrupted failed id=${SLURM_ARRAY_JOB_ID:-${SLURM_JOB_ID:-none}}_$task
  shift
  if [ -n "$signalled" ]; then  # one came while the last stage ended anyway (train.py's last epoch)
    echo "$(date +%FT%T) task $task: $(basename "${2:-$1}") not started after SIG$signalled" >&2
    return 75  # the next stage would run into the kill, and the task would not be requeued
  fi
  if [ -L "$log" ]; then  # a run folder copied from elsewhere: >> would write into the file it names
    echo "error: cannot use $log: a symbolic link (to $(readlink "$log")), not followed; remove it;" \
      "$(basename "${2:-$1}") not started" >&2
    return 2
  fi
  # a log this user may not write (another user's, made under umask 022): one line, nothing run
  # (bash's two lines, then the tail of that user's last attempt, as if it were this one's)
  failed=$({ mkdir -p "$(dirname "$log")" &&
             echo "=== $(date +%FT%T) $(hostname) job $id: $(printf '%q ' "$@")" >> "$log"; } 2>&1) || {
    echo "error: could not write $log: ${failed##*: }; $(basename "${2:-$1}") not started" >&2
    return 2
  }
  echo "$(date +%FT%T) task $task: $(basename "${2:-$1}") ... -> $log" >&2
  "$@" >> "$log" 2>&1 &
  child=$!
  while :; do  # a trap cuts wait short (status > 128); then wait again for the real status
    interrupted=$signalled
    wait "$child"
    status=$?
    [ "$signalled" != "$interrupted" ] && [ "$status" -gt 128 ] || break
  done
  child=""
  echo "$(date +%FT%T) task $task: exit $status" >&2
  # the last lines of this attempt, after its === header (an earlier one's "preempted" line misleads)
  [ "$status" -eq 0 ] || [ "$status" -eq 75 ] || awk '/^=== /{n=0} {line[n++ % 5]=$0}
    END {for (i = (n > 5 ? n - 5 : 0); i < n; i++) print line[i % 5]}' "$log" >&2
  return "$status"
}

task=${SLURM_ARRAY_TASK_ID:?set SLURM_ARRAY_TASK_ID to the task to run (0-based)}
number=$((offset + task + 1))  # an array after the first starts further down
line=$(sed -n "${number}p" "$commands")
[ -n "$line" ] || { echo "no line $number in $commands" >&2; exit 2; }
echo "$(date +%FT%T) task $task: line $number of $commands" >&2
eval "$line"
status=$?
# 75: the stage stopped on a signal and kept its checkpoint. After USR1 (the time limit is near)
# this task asks to run again; after TERM, SLURM decides (a preemption requeues it, scancel not).
if [ "$status" -eq 75 ] && [ "$signalled" != TERM ] && [ -n "${SLURM_ARRAY_JOB_ID:-}" ]; then
  # said first: SLURM may end this script as the requeue takes effect
  echo "$(date +%FT%T) task $task: requeueing ${SLURM_ARRAY_JOB_ID}_${task}: it starts again (after" \
    "SLURM's hold), skips the stages its run finished and resumes the stopped one" >&2
  scontrol requeue "${SLURM_ARRAY_JOB_ID}_${task}" && exit 0
  failed=$?
  echo "$(date +%FT%T) task $task: not requeued (scontrol requeue exit $failed): its run stays stopped;" \
    "submit this script again with --array=$task to resume it" >&2
elif [ "$status" -eq 75 ] && [ "$signalled" = TERM ]; then
  echo "$(date +%FT%T) task $task: stopped by SIGTERM, its checkpoint kept: SLURM requeues a preempted" \
    "task, which resumes it; a cancelled one stays stopped (submit it again to resume)" >&2
elif [ "$status" -eq 75 ]; then
  echo "$(date +%FT%T) task $task: stopped, its checkpoint kept; run the task again to resume it" >&2
fi
exit "$status"
'''


def one_line(source, value, why):
    """`value` (given as `source`, a flag) where it must fit on one line of a file: a line break or
    carriage return in it is a UsageError that says `why`, in the same words for every such flag."""
    if "\n" in value or "\r" in value:
        raise UsageError(f"{source} {value!r} holds a line break: {why}")
    return value


def sbatch_names(option):
    """The long names of the options an --sbatch option ('--account=p', '-t 1:00:00') sets, as
    sbatch reads its #SBATCH line: each word that starts with '-' (a line may hold several); a
    one-letter word by the first letter that takes a value (-Qt1:00:00 is -Q, then -t 1:00:00)
    where SBATCH_LETTERS names it; a long name that starts one of the options the script writes
    (SCRIPT_SBATCH, SWEEP_SBATCH) and no other of them as that option: sbatch's getopt_long reads
    an unambiguous prefix as the option (--outp=x is --output=x; --tim, which also starts sbatch's
    --time-min, sbatch refuses as ambiguous, so naming it --time loses nothing)."""
    names = []
    for word in re.findall(r'(?:[^\s"]|"[^"]*"?)+', option):  # sbatch keeps a double-quoted value whole
        if word.startswith("--"):
            name = word[2:].split("=", 1)[0]
            starts = [full for full in (*SCRIPT_SBATCH, *SWEEP_SBATCH) if name and full.startswith(name)]
            names.append(name if name in starts or len(starts) != 1 else starts[0])
        elif word.startswith("-"):
            letter = next((c for c in word[1:] if c not in SBATCH_SWITCHES), "")
            names.append(SBATCH_LETTERS.get(letter, ""))
    return [n for n in names if n]


def directive(flag, value, source):
    """An #SBATCH option; a value with white space, a ' or a # in double quotes, which sbatch reads
    as one word: unquoted, sbatch rejected the script for white space ("Invalid directive found in
    batch script") and for a ' ("Unmatched `'`"), and read a # as the start of a comment (a folder
    runs#1 logged every task to the file `runs` beside it). `source`: the sweep.py flag the value
    comes from, for the error about a value no line can hold."""
    value = one_line(source, str(value), "an #SBATCH option must fit on one line")
    if '"' in value:
        raise UsageError(f"{source} {value!r}: an #SBATCH line cannot hold a double quote")
    return f'--{flag}="{value}"' if any(c.isspace() or c in "'#" for c in value) else f"--{flag}={value}"


def ours(path):
    """Whether `path` is an array script sweep.py wrote (unreadable or absent: no)."""
    try:
        with open(path, "rb") as f:
            return SCRIPT_MARK.encode() in f.read(200)
    except OSError:
        return False


def part_scripts(script):
    """The scripts of an earlier sweep's further arrays beside `script` (FILE.part2.sbatch, ...)."""
    script = Path(script)
    return sorted(p for p in script.parent.glob(f"{script.stem}.part*{script.suffix}")
                  if re.fullmatch(rf"{re.escape(script.stem)}\.part\d+{re.escape(script.suffix)}", p.name)
                  and ours(p))


def drop_old_script(path):
    """With nothing to submit, an earlier sweep's scripts at `path` (and its further arrays') go,
    so that `sweep.py ... --slurm FILE && sbatch FILE` submits nothing rather than the old array
    (SLURM keeps a copy of a submitted script, and the commands files stay for tasks still
    queued); returns what a message adds."""
    path = Path(path)
    if not ours(path):
        return ""
    parts = part_scripts(path)
    for old in [path, *parts]:
        old.unlink()
    if not parts:
        return f"; removed the earlier {path}, so it is not submitted again"
    return (f"; removed the earlier {path} and its further arrays' {', '.join(p.name for p in parts)}, so they "
            "are not submitted again")


def setup_line(line):
    """A --setup line as the array script runs it: in the script's shell (a `source` or `module
    load` acts on the task), and its failure ends the task, which went on with another Python."""
    failed = shlex.quote(f"error: --setup line failed: {line}")
    return f'{{\n{line}\n}} || {{ echo {failed} "(exit $?)" >&2; exit 2; }}'


def command_lines(tasks, python, wrap=None):
    """Each task's stages as one shell line (`Task.shell`), as --print prints them and the commands
    file holds them (line i+1 is task i): a path or value holding a line break, which shlex quotes
    across lines, is a UsageError naming its flag (task i ran half a line, the next task the rest)."""
    cwd = Path.cwd()
    lines = [task.shell(python, wrap=wrap, cwd=cwd) for task in tasks]
    for line in (line for line in lines if "\n" in line):
        found = [*_broken_words(shlex.split(line))]
        flag, value = next((f for f in found if f[0]), found[0])  # past --slurm's log path, to --base_dir
        one_line(flag or ("--python" if value == python else "a run's command"), value,
                 "each run's commands must fit on one line of --print and --slurm; rename it, or run the "
                 "grid with --local")
    return lines


def _broken_words(words):
    """(flag, value) of each shell word holding a line break: `--flag=value` split, a value after
    its `--flag` with it, any other word with flag ''."""
    for k, word in enumerate(words):
        if "\n" not in word:
            continue
        if word.startswith("--") and "=" in word:
            yield tuple(word.split("=", 1))
        else:
            yield (words[k - 1] if k and words[k - 1].startswith("--") else ""), word


def shell_word(path):
    """`path` quoted as a shell word that no command reads as an option (./-x.sbatch, not -x.sbatch)."""
    return shlex.quote(f"./{path}" if str(path).startswith("-") else str(path))


def write_slurm(opts, tasks):
    """Write the array scripts and their commands file, as one set; returns (scripts, commands, number of
    tasks, the sbatch lines that submit the scripts).

    Task i of an array runs line offset+i+1 of the commands file, both named in its script. The
    commands file is named by its content: written again while an earlier array still waits in
    the queue, the new one does not move the earlier tasks' lines under them. Tasks beyond
    --max_array_size go to further arrays, FILE.part2.sbatch and on (SLURM refuses an index
    above its MaxArraySize - 1)."""
    todo = [t for t in tasks if t.todo]
    script = Path(opts.slurm)
    lines = command_lines(todo, opts.python,
                          wrap=lambda stage, task: ["stage", str(task.run_dir / f"{stage}.log")])
    text = "".join(line + "\n" for line in lines)
    commands = script.with_name(f"{script.stem}.{hashlib.sha256(utf8(text)).hexdigest()[:12]}.commands")
    logs = script.parent.resolve() / "logs"
    throttle = f"%{opts.max_concurrent}" if opts.max_concurrent else ""
    size = opts.max_array_size
    arrays = [(first, min(size, len(todo) - first)) for first in range(0, len(todo), size)]
    paths = array_paths(script, len(arrays))
    options = sbatch_options(opts, logs)
    submit = [f"sbatch {shell_word(p)}" for p in paths]
    texts = []
    for k, (path, (first, n)) in enumerate(zip(paths, arrays)):
        part = f", array {k + 1} of {len(paths)}" if len(paths) > 1 else ""
        header = [
            "#!/bin/bash",
            f"{SCRIPT_MARK} {counted(len(todo), 'run')} ({' then '.join(tasks[0].stages)} each){part}, "
            "by sweep.py",
            f"# task i runs line {first}+i+1 of the commands file",
            f"#   submit:            {' && '.join(submit)}",
            f"#   one task, no SLURM: SLURM_ARRAY_TASK_ID=0 bash {shell_word(path)}",
            f"#SBATCH --array=0-{n - 1}{throttle}",
            *[f"#SBATCH {option}" for option in options],
            "",
            *task_preamble(opts, commands, first),
        ]
        texts.append("\n".join(header) + "\n" + SLURM_BODY.lstrip("\n"))
    # one set: a failure part way (a full disk at part 2) leaves the earlier sweep's files as they
    # were, not a new part 1 beside an old part 2, and no new commands file nor folder behind
    with made_folders(logs), file_set() as put:
        put(commands, lambda f: f.write(utf8(text)))
        for path, body in zip(paths, texts):
            put(path, lambda f, body=body: f.write(utf8(body)), 0o777)  # executable, as the umask allows
    for stale in set(part_scripts(script)) - set(paths):  # an earlier, longer sweep's further arrays
        stale.unlink()
    return paths, commands, len(todo), submit


def array_paths(script, count):
    """The paths of `count` array scripts: `script`, then FILE.part2.sbatch and on; a file there
    that is no array script of sweep.py's is a UsageError (it is not overwritten)."""
    paths = [script] + [script.with_name(f"{script.stem}.part{k + 1}{script.suffix}") for k in range(1, count)]
    for path in paths:  # the grid file itself, a script of one's own: replaced without a word
        if path.exists() and not ours(path):
            raise UsageError(f"--slurm {path} exists and is no array script of sweep.py's; choose another "
                             "file name, or remove it")
    return paths


def sbatch_options(opts, logs):
    """The #SBATCH options of every array script (without the #SBATCH), each task's log in the
    folder `logs`: sweep.py's own (SWEEP_SBATCH), the log, the requeue on a signal, then --sbatch's."""
    options = [directive(name, value, flag) for name, flag in SWEEP_SBATCH.items()
               if (value := getattr(opts, flag[2:])) is not None]
    if "\\" in str(logs):  # a backslash in --output: SLURM drops it, and each task failed to launch
        raise UsageError(f"--slurm's folder {logs}: SLURM drops a backslash from the tasks' log file name "
                         "(#SBATCH --output); choose a folder without one")
    # %% for a % of the folder: "runs 100%a" was "runs 1000" for task 0, which failed to launch
    return options + [directive("output", f"{str(logs).replace('%', '%%')}/%A_%a.out", "--slurm's folder"),
                      "--open-mode=append", "--requeue", f"--signal=B:USR1@{opts.signal_seconds}", *opts.sbatch]


def task_preamble(opts, commands, first):
    """An array script's shell lines before SLURM_BODY: the commands file, the array's offset in
    it (`first`), the folder sweep.py ran in, the threads per CPU, the --setup lines."""
    return [
        f"commands={shlex.quote(str(commands.resolve()))}",
        f"offset={first}",
        f"cd {shlex.quote(str(Path.cwd()))} || exit 2",
        '[ -n "${SLURM_CPUS_PER_TASK:-}" ] && export OMP_NUM_THREADS=$SLURM_CPUS_PER_TASK '
        'MKL_NUM_THREADS=$SLURM_CPUS_PER_TASK',  # torch reads MKL's first
        *map(setup_line, opts.setup),
    ]


# ---------------------------------------------------------------- local pool


def last_line(path, prefix=None, unless=None):
    """The last non-empty line of a log's last attempt, after its last '=== ' header (the last
    starting with prefix, if given and one does, else the last line; none that holds the text
    `unless`), or ''."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 65536))
            lines = [l.strip() for l in f.read().decode(errors="replace").splitlines() if l.strip()]
    except OSError:
        return ""
    headers = [i for i, l in enumerate(lines) if l.startswith("=== ")]  # an earlier attempt's lines go
    lines = lines[headers[-1] + 1:] if headers else lines
    if unless:
        lines = [l for l in lines if unless not in l]
    if prefix:
        lines = [l for l in lines if l.startswith(prefix)] or lines
    return lines[-1] if lines else ""


def killed_by(status):
    """'killed by SIGKILL' for a Popen status of a stage a signal ended (the OOM killer's), else ''."""
    if status >= 0:
        return ""
    try:
        return f"killed by {signal.Signals(-status).name}"
    except ValueError:
        return f"killed by signal {-status}"


def summary_of(log):
    """A short result from a finished stage's JSON line: test_acc or clean/robust accuracies."""
    try:
        result = json.loads(last_line(log))
    except NOT_JSON:  # a stage's last line is its own JSON result, or whatever it printed last
        return ""
    if not isinstance(result, dict):
        return ""
    if "test_acc" in result:
        return f"test_acc {result['test_acc']:.4f}"
    if isinstance(result.get("robust_acc"), dict):  # attack.py's summary line
        clean = result.get("clean_acc")  # None when no setting ran
        shown = f"{clean:.4f}" if isinstance(clean, (int, float)) else "-"
        return f"clean_acc {shown}, {counted(len(result['robust_acc']), 'setting')}"
    return ""


PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def stop_with_sweep():
    """A Popen preexec_fn by which a stage gets SIGTERM (it checkpoints and exits 75) once the
    thread that started it ends, the sweep killed outright included (SIGKILL: `kill -9 -PGID`,
    `timeout -s KILL`, the OOM killer), which passes no signal on: the stage, in a session of its
    own, trained on orphaned, holding its run directory, and the sweep rerun found it in use.
    Linux's PR_SET_PDEATHSIG; None (no such guard) elsewhere. The worker thread that starts a stage
    waits for it, so it outlives it unless the sweep dies. prctl is looked up here, before the
    fork: the child of a process with threads must not import or take a lock."""
    libc = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
    prctl = getattr(libc, "prctl", None)
    if prctl is None:
        return None
    parent, term = os.getpid(), int(signal.SIGTERM)

    def preexec():
        # the default action until exec: the sweep's handler, copied here, would only note a
        # SIGTERM that came before exec, and the stage would start anyway
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        prctl(PR_SET_PDEATHSIG, term)
        if os.getppid() != parent:  # the sweep died before prctl: no signal will come
            os.kill(os.getpid(), term)
    return preexec


class LocalPool:
    """Runs the tasks' stages with one worker per slot; a slot is the environment of its runs.

    SIGTERM/SIGUSR1 (and Ctrl-C) stop handing out runs and pass SIGTERM/SIGUSR1 on to the running
    stages, which checkpoint and exit 75; rerunning the sweep resumes them. A sweep killed outright
    (SIGKILL) passes nothing on: on Linux its stages get SIGTERM from the kernel (`stop_with_sweep`).

    A run another job works on as the sweep plans (`Task.running`) is left to it, not started (its
    stage, refused 'in use', was counted failed); so is one that a job takes after the plan, which
    its stage finds in use (`held_by_another`).
    """

    def __init__(self, tasks, slots, stream=None):
        self.todo = [t for t in tasks if t.todo]
        self.queue = [t for t in self.todo if not t.running]
        self.total = len(self.queue)
        self.slots = slots
        self.stream = stream  # stderr when None
        self.lock = threading.Lock()
        self.running = set()
        self.signal = None
        self.outcomes = []  # dicts: run, stage, status, seconds, log, note
        # dicts: run, stage (the first left to do), holder (`run_holder`'s name for the job)
        self.held = [{"run": t.name, "stage": t.todo[0], "holder": t.running} for t in self.todo if t.running]

    def say(self, line):
        with self.lock:
            log(stamped(line), self.stream)

    def stop(self, signum, frame):
        if signum == HANGUP:  # the line below, written to the terminal gone, failed before the stages got it
            leave_hung_up_terminal()
        self.signal = signal.Signals(signum)
        forward = signal.SIGTERM if self.signal.name in ("SIGINT", "SIGHUP") else signum
        self.say(f"got {self.signal.name}: stopping the running stages, starting no more")
        with self.lock:
            for proc in self.running:
                proc.send_signal(forward)

    def next_task(self):
        with self.lock:
            if self.signal or not self.queue:
                return None
            task = self.queue.pop(0)
            return task, self.total - len(self.queue)

    def work(self, env):
        while (item := self.next_task()) is not None:
            task, number = item
            for stage in task.todo:
                if self.signal:
                    break
                if not self.run_stage(task, stage, number, env):
                    break

    def run_stage(self, task, stage, number, env):
        stage_log = task.run_dir / f"{stage}.log"
        argv = task.commands[stage]
        where = ", ".join(f"{k}={env[k]}" for k in ("CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS") if k in env)
        start = time.time()
        try:  # a full disk, a read-only or vanished --base_dir: this stage fails, not the worker thread
            out = open_log(stage_log, f"=== {time.strftime(STAMP)} {where}: {shlex.join(argv)}\n")
        except OSError as err:
            note = f"error: {os_error_text(err)}"
            self.say(f"[{number}/{self.total}] {stage} {task.name}: FAILED (not started): {note}")
            with self.lock:  # no log where none could be made: the note says why
                self.outcomes.append({"run": task.name, "stage": stage, "status": None, "seconds": 0.0,
                                      "log": str(stage_log) if stage_log.exists() else None, "note": note})
            return False
        self.say(f"[{number}/{self.total}] {stage} {task.name}: started ({where}), log {stage_log}")
        with out:
            with self.lock:
                if self.signal:
                    return False
                # in a session of its own: a terminal's Ctrl-C or hangup reaches this pool alone,
                # which passes it on as SIGTERM (the stage checkpoints and exits 75, resumable);
                # the kernel sends it should this thread end first (the sweep SIGKILLed)
                proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                        env={**os.environ, **env}, start_new_session=True,
                                        preexec_fn=stop_with_sweep())
                self.running.add(proc)
            status = proc.wait()
            with self.lock:
                self.running.discard(proc)
            said = last_line(stage_log, prefix="error:")
            if status not in (0, REQUEUE_EXIT) and not said.startswith("error:"):
                said = full_disk_note(out, stage_log) or said
        if status not in (0, REQUEUE_EXIT) and (holder := held_by_another(task.run_dir, said)):
            self.say(f"[{number}/{self.total}] {stage} {task.name}: in use by {holder}, which took the run "
                     f"after this sweep planned: left to it")
            with self.lock:
                self.held.append({"run": task.name, "stage": stage, "holder": holder})
            return False
        seconds = time.time() - start
        outcome = {"run": task.name, "stage": stage, "status": status, "seconds": round(seconds, 1),
                   "log": str(stage_log)}
        if status == 0:
            outcome["note"] = summary_of(stage_log)
            self.say(f"[{number}/{self.total}] {stage} {task.name}: done in {seconds:.0f} s"
                     + (f", {outcome['note']}" if outcome["note"] else ""))
        elif status == REQUEUE_EXIT:
            outcome["note"] = "stopped by a signal; rerun the sweep to resume"
            self.say(f"[{number}/{self.total}] {stage} {task.name}: stopped (exit 75), resumable")
        else:
            outcome["note"] = killed_by(status) or said
            self.say(f"[{number}/{self.total}] {stage} {task.name}: FAILED (exit {status}): "
                     f"{outcome['note']}")
        with self.lock:
            self.outcomes.append(outcome)
        return status == 0

    def run(self):
        handled = present("SIGTERM", "SIGUSR1", "SIGINT", "SIGHUP")
        previous = {s: signal.signal(s, self.stop) for s in handled}
        try:
            threads = [threading.Thread(target=self.work, args=(env,), daemon=True) for env in self.slots]
            for thread in threads:
                thread.start()
            for thread in threads:
                while thread.is_alive():
                    thread.join(0.2)  # short joins, so the signal handler runs promptly
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return self.outcomes

    def tally(self):
        """What became of the runs with stages to do: completed (every stage), the failed and the
        stopped stages' outcomes (a run's stages end at its first such), the runs held by another
        job (`held`: left to it at the plan, or found in use by a stage), and not_started (the
        other runs: a stage of theirs never began, by a signal before it, their first or a later
        one), so that the runs add up."""
        finished = {(o["run"], o["stage"]) for o in self.outcomes if o["status"] == 0}
        completed = sum(all((t.name, s) in finished for s in t.todo) for t in self.todo)
        ended = [o for o in self.outcomes if o["status"] != 0]
        return {"completed": completed,
                "failed": [o for o in ended if o["status"] != REQUEUE_EXIT],
                "stopped": [o for o in ended if o["status"] == REQUEUE_EXIT],
                "held": list(self.held),
                "not_started": len(self.todo) - completed - len({o["run"] for o in ended}) - len(self.held)}


def held_by_another(run_dir, said):
    """The job that holds `run_dir` (`run_holder`'s name for it) after a stage there failed refused
    as in use (`said`, its `error:` line, is `run_lock`'s refusal): one that took the run between
    the sweep's plan and the stage's start. None for any other failure, though a job holds the run
    now (the stage failed on its own), and where none holds it any more. The stage has ended, its
    record emptied with it: a job named is another."""
    return run_holder(run_dir) if IN_USE in said else None


def open_log(log, header):
    """`log` opened to append a stage's output, `header` written whole (`append_whole`: one that
    does not fit is cut off again, where an unbuffered write took what fit and said nothing, and
    the next attempt's lines ran on after half a header), on a line of its own (an earlier stage
    cut off mid-line, by a full disk or a kill, would have glued it to that line, where
    `last_line` no longer finds it). Unbuffered: a write that fails (a full disk) leaves nothing
    that closing the file would try to write again. A symbolic link there (a run folder copied from
    elsewhere) is an OSError, not followed: the stage's header and output went into the file it
    names (a train.log linked to ~/.bashrc)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    out = open(log, "a+b", buffering=0, opener=not_through_a_link)
    try:
        size = os.fstat(out.fileno()).st_size
        out.seek(max(size - 1, 0))  # and read: Windows has no os.pread (appends go to the end anyway)
        cut_off = size and out.read(1) != b"\n"
        append_whole(log, b"\n" * bool(cut_off) + utf8(header), out)
    except BaseException as err:
        out.close()
        if isinstance(err, OSError) and not err.filename:  # fstat's or read's names no file
            raise OSError(err.errno, err.strerror, str(log)) from None
        raise
    return out


def check_logs(tasks, base_dir):
    """That this sweep can write the stage logs of the `tasks` left to do, before any starts: a log
    there is opened to append (nothing written), else a file is made and removed in the nearest
    folder above it that is there (no run directory made). A --base_dir that takes no writes (a
    read-only mount, another user's folder) failed each run 'not started', each pointing at a log
    that was never written; now one UsageError naming what could not be written and the flag that
    moves it (`os_error_text`), or the log that is a symbolic link (`open_log`)."""
    from utils.atomic import check_writable
    checked = set()
    with os_errors_as_usage({"--base_dir": base_dir}):
        for stage_log in (task.run_dir / f"{stage}.log" for task in tasks for stage in task.todo):
            if os.path.lexists(stage_log):
                open(stage_log, "ab", opener=not_through_a_link).close()
                continue
            folder = Path(nearest_existing(stage_log.parent))
            if folder not in checked:
                checked.add(folder)
                try:
                    check_writable(folder / stage_log.name)
                except OSError as err:  # named by the folder: no log is there to name
                    raise OSError(err.errno, err.strerror, str(folder)) from None


def full_disk_note(out, log):
    """For a stage that failed with no `error:` line in its log `out`: the line it could not write
    where the log's file system is full (its progress lines took the last space, and the error
    had nowhere to go: the note was a cut-off progress line, or nothing), else ''. Full for the
    stage, which runs as this user: root writes on into the blocks a file system keeps back for
    it (ext4's 5%, where f_bavail is already 0), so a root stage's traceback there was named a
    full disk."""
    if not hasattr(os, "fstatvfs"):  # Windows: not known
        return ""
    try:
        space = os.fstatvfs(out.fileno())
    except OSError:
        return ""
    full = (space.f_bfree if os.geteuid() == 0 else space.f_bavail) == 0
    return f"error: {os_error_text(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(log)))}" if full else ""


def local_slots(opts):
    """One environment per concurrent run: a GPU each, or an equal share of the CPU cores, among
    all the slots whatever the number of runs left to run: a CPU's float rounding depends on its
    thread count, so a run resumed by the same command again trains on the count it began with."""
    core_count = len(cores())
    if opts.gpus:  # a list of ids (see gpu_ids)
        slots = [{"CUDA_VISIBLE_DEVICES": g} for g in opts.gpus]
    else:
        slots = [{} for _ in range(opts.jobs)]
    # torch's thread count is MKL_NUM_THREADS where set, else OMP_NUM_THREADS: one set already
    # stands for both (OMP_NUM_THREADS=1 alone ran each run on MKL_NUM_THREADS = cores/jobs threads)
    threads = (os.environ.get("MKL_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS")
               or str(max(1, core_count // max(1, len(slots)))))
    for slot in slots:
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            slot.setdefault(var, os.environ.get(var, threads))
    return slots


# ---------------------------------------------------------------- main


def main(argv=None):
    opts, runs, scripts, routed = parse(argv)
    python = sys.executable if opts.local else opts.python
    tasks = make_tasks(opts, runs, scripts, routed, python)
    todo = [t for t in tasks if t.todo]
    # --dry_run's JSON line, --print's summary: runs, those left to do, those another job works on now
    counts = {"runs": len(tasks), "to_run": len(todo), "running": in_progress(tasks)}
    if opts.dry_run:
        dry_run(tasks)
        print_json(counts)
        return counts
    if opts.print:
        for line in command_lines(todo, opts.python):
            print(line, flush=True)
        log(count_line(tasks))
        return counts
    if opts.slurm:
        if not todo:
            log(f"{count_line(tasks)}: nothing to submit, no script written{drop_old_script(opts.slurm)}")
            summary = {"runs": len(tasks), "tasks": 0, "script": None}
        else:
            with os_errors_as_usage({"--slurm": Path(opts.slurm).parent}):  # its logs/ too
                scripts, commands, n, submit = write_slurm(opts, tasks)
            arrays = f" in {len(scripts)} arrays of at most {opts.max_array_size}" if len(scripts) > 1 else ""
            log(f"{count_line(tasks)}\nwrote {', '.join(map(str, scripts))} ({counted(n, 'array task')}"
                f"{arrays}) and {commands}; submit with: {' && '.join(submit)}")
            summary = {"runs": len(tasks), "tasks": n, "script": str(scripts[0]),
                       "scripts": [str(p) for p in scripts], "commands": str(commands), "submit": submit}
        print_json(summary)
        return summary
    for task in todo:  # a job killed outright on another node left its record, but no lock: the run is free
        if task.running and lock_free(task.run_dir):
            task.running = None
    # the logs of the runs it starts: a run left to the job that holds it writes none
    base_dir = scripts["train"].parse(runs[0].flags() + routed["train"]).base_dir
    check_logs([t for t in todo if not t.running], base_dir)
    log(count_line(tasks, local=True))
    pool = LocalPool(tasks, local_slots(opts))
    pool.run()
    tally = pool.tally()
    summary = {"runs": len(tasks), "skipped": len(tasks) - len(todo), **tally,
               "signal": pool.signal.name if pool.signal else None}
    failed, stopped, held = tally["failed"], tally["stopped"], tally["held"]
    for outcome in failed:
        status = "not started" if outcome["status"] is None else f"exit {outcome['status']}"
        log(f"FAILED {outcome['stage']} {outcome['run']}: {status}: {outcome['note']}"
            + (f" (log: {outcome['log']})" if outcome["log"] else ""))
    for run in held:
        log(f"LEFT {run['stage']} {run['run']} to the job that holds it, {run['holder']}: {LEFT}")
    print_json(summary)
    if pool.signal is not None or stopped:
        sys.exit(130 if pool.signal == signal.SIGINT else REQUEUE_EXIT)
    if failed:
        sys.exit(1)
    if held:  # not done, nothing failed: as after a stop, run it again to go on (once those jobs end)
        sys.exit(REQUEUE_EXIT)
    return summary


if __name__ == "__main__":
    run_cli(main)
