"""The docs' example commands parse with the scripts' current flags: a flag renamed or removed in
a script, but still in a ```bash block of README.md, docs/experiments.md or labels/README.md, fails
here, not in a user's shell. Parsing only (sweep.py's `parse`, the others' parser): nothing trains.
"""
import re
import shlex
from string import Template

import pytest

import attack
import report
import sweep
import train
from conftest import REPO, SHARED
from labels import generate, stats
from utils.errors import UsageError

DOCS = ("README.md", "docs/experiments.md", "docs/reference.md", "labels/README.md")
PARSERS = {"train.py": train.build_parser, "attack.py": attack.build_parser, "report.py": report.build_parser,
           "labels.generate": generate.build_parser, "labels.stats": stats.build_parser}
COMMAND = re.compile(r"\bpython (-m )?(?P<script>[\w/]+\.py|labels\.\w+)\b")
SEPARATORS = {"&&", "||", "|", ";"}


def _joined(block):
    """(line offset, line) of a shell block, a line ending in a backslash joined to the next."""
    start, pending = 0, ""
    for offset, line in enumerate(block.splitlines()):
        start = start if pending else offset
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        yield start, pending + line
        pending = ""


def shell_lines(text):
    """The lines of each ```bash block in `text`, (line number, line), continuation lines joined
    and the block's variables substituted as a shell would: NAME=value, and `for NAME in ...; do`
    with its last value (the loop's flags are then given)."""
    for block in re.finditer(r"```bash\n(.*?)```", text, re.S):
        first, env = text[:block.start()].count("\n") + 2, {}
        for offset, line in _joined(block[1]):
            for name, values in re.findall(r"\bfor (\w+) in (.*?); do\b", line):
                env[name] = shlex.split(values)[-1]
            if assigned := re.fullmatch(r'(\w+)=("[^"]*"|\S*)', line.strip()):
                env[assigned[1]] = " ".join(shlex.split(assigned[2]))
            yield first + offset, Template(line).safe_substitute(env)


def commands(text):
    """(line number, script, argv) of each command of ours in `text`'s bash blocks; a synopsis's
    optional parts ([--title ...]) are read as given, '...' as a value."""
    for number, line in shell_lines(text):
        if not COMMAND.search(line):
            continue
        words = shlex.split(line, comments=True)
        for start, word in enumerate(words):
            rest = words[start + 1:]
            if word != "python" or not rest:
                continue
            script = rest[1] if rest[0] == "-m" and len(rest) > 1 else rest[0]
            if script not in (*PARSERS, "sweep.py"):
                continue
            argv = rest[2 if rest[0] == "-m" else 1:]
            argv = argv[:next((i for i, w in enumerate(argv) if w in SEPARATORS), len(argv))]
            yield number, script, ["x" if w == "..." else w.strip("[]") for w in argv]


def parse(script, argv, tmp_path):
    """`argv` through `script`'s parser; sweep.py's through its `parse` (its pass-through flags too,
    against train.py's and attack.py's), with a stand-in for a grid file the docs only name."""
    if script != "sweep.py":
        return PARSERS[script]().parse_args(argv)
    if "--config" in argv and not (REPO / argv[argv.index("--config") + 1]).exists():
        stand_in = tmp_path / "grid.yaml"
        stand_in.write_text("labels: [category]\n")
        argv = [*argv]
        argv[argv.index("--config") + 1] = str(stand_in)
    return sweep.parse(argv)


EXAMPLES = [(f"{doc}:{number}", script, argv)
            for doc in DOCS for number, script, argv in commands((REPO / doc).read_text())]


def test_the_docs_have_examples_of_every_script():
    assert {script for _, script, _ in EXAMPLES} == {*PARSERS, "sweep.py"}


@pytest.mark.parametrize("where, script, argv", EXAMPLES,
                         ids=[f"{where} {script} {' '.join(argv)}" for where, script, argv in EXAMPLES])
def test_a_docs_example_command_parses(where, script, argv, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)  # the docs' grid files, as the docs run them
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)  # --local --gpus 0,1,2,3 counts within it
    parse(script, argv, tmp_path)


@pytest.mark.parametrize("block, message", [
    ("python train.py --label speech --epoch 30", "--epoch: shortened flags are refused"),
    ("python attack.py --label speech --nosuch 3", "unrecognized arguments: --nosuch 3"),
    ("for s in 7 8; do\n  python report.py --base_dir outputs --seed $s\ndone", "unrecognized arguments: --seed 8"),
    ("python sweep.py --labels speech --dry_run --epoch 30", "--epoch is not a flag of train.py or attack.py"),
    ("python -m labels.generate --dataset cifar10 --label speech --outdir x", "unrecognized arguments: --outdir x"),
])
def test_a_docs_example_with_a_flag_the_script_lacks_fails(block, message, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    [(_, script, argv)] = commands(f"text\n```bash\n{block}\n```\n")
    with pytest.raises(UsageError, match=re.escape(message)):
        parse(script, argv, tmp_path)


@pytest.mark.parametrize("script", [*PARSERS, "sweep.py", "bench/bench.py"])
def test_help_fits_80_columns_and_shows_defaults_as_typed(script, monkeypatch):
    """At 80 columns: labels.generate's epilog and labels.stats' column notes ran to 190 and 96
    characters, bench.py's usage lines for --models and --labels to 92 and 96 (each choice list
    written twice); every switch said '(default: False)', sweep.py's lists "(default: ['cifar10'])"
    and "(default: [])", bench.py's --train_flags '(default: )'. Every default reads '(default: X)':
    a default written in a flag's help read '(default 128; ...)' (train.py's --batch_size, 16 such
    flags), '(default)' or '; default: built-in names' (labels.generate, which showed none of its
    own, --label_granularity's fine and --espeak_voice's en-us among them)."""
    monkeypatch.setenv("COLUMNS", "80")
    from bench import bench
    build = {"sweep.py": sweep.build_parser, "bench/bench.py": bench.build_parser}.get(script) or PARSERS[script]
    text = build().format_help()
    assert not [line for line in text.splitlines() if len(line) > 80], text  # the usage block too
    body = text[text.index("\n\n"):]  # after the usage block
    for shown in ("(default: False)", "(default: [", "(default: )"):
        assert shown not in " ".join(body.split()), shown
    assert not re.findall(r"\(default(?!: )|(?<!\()default: ", " ".join(body.split()))
    if script == "sweep.py":
        assert "(default: train attack)" in " ".join(body.split())
    if script == "labels.generate":
        assert "(default: fine)" in " ".join(body.split())


# What each script's --help ends with: where its lines go and how it ends (its exit statuses past
# 0 and 2), for a script that runs several of them. train.py's and attack.py's --help said neither,
# labels.generate's, labels.stats', report.py's, bench.py's and sweep.py's neither.
ENDINGS = {"train.py": ("last line on stdout is the results as one JSON object", "75 stopped by SIGTERM, "
                        "SIGUSR1 or a hangup (rerun with --resume), 130 Ctrl-C."),
           "attack.py": ("last line on stdout is one JSON object", "75 stopped by SIGTERM, SIGUSR1 or a hangup "
                         "(rerun it), 130 Ctrl-C."),
           "report.py": ("stdout is one JSON line", "130 Ctrl-C or SIGTERM (the earlier report kept)."),
           "labels.generate": ("stdout holds one line, one JSON object", "130 Ctrl-C or SIGTERM."),
           "labels.stats": ("goes to stdout, warnings to stderr", "130 Ctrl-C."),
           "sweep.py": ("--slurm's and --local's JSON line alone", "and with --local 1 where a stage failed, 75 "
                        "stopped by SIGTERM, SIGUSR1, a hangup or a stage's own stop, or runs left to the jobs "
                        "that hold them (run it again to continue), 130 Ctrl-C."),
           "bench/bench.py": ("The tables go to stdout", "130 Ctrl-C or SIGTERM.")}


@pytest.mark.parametrize("script", ENDINGS)
def test_help_says_where_output_goes_and_each_exit_status(script):
    from bench import bench
    build = {"sweep.py": sweep.build_parser, "bench/bench.py": bench.build_parser}.get(script) or PARSERS[script]
    text = " ".join(build().format_help().split())
    streams, statuses = ENDINGS[script]
    assert streams in text and text.endswith(f"Exit status: 0 done, 2 after one `error:` line (bad input), "
                                             f"{statuses}"), text[-400:]


def test_bench_help_groups_each_flag_under_the_tables_it_acts_on():
    """bench.py's help puts a flag under '--what X' only where X is among the tables FLAG_TABLES
    lets it act on (what parse_args refuses it without); 25 flags were one ungrouped list."""
    from bench import bench
    groups = {group.title: [a.dest for a in group._group_actions] for group in bench.build_parser()._action_groups}
    titled = {title: dests for title, dests in groups.items() if title.startswith("--what ")}
    assert [t.split()[1] for t in titled] == ["train", "attack", "accuracy"]
    for title, dests in titled.items():
        assert dests and all(title.split()[1] in bench.FLAG_TABLES[d] for d in dests), (title, dests)
    assert groups["options"] == ["help"]  # every flag is in a group


@pytest.mark.parametrize("script, argv, dest, expected", [
    ("bench/bench.py", ["--models", "resnet32", "--models", "vgg19", "--no_record"], "models", ["resnet32", "vgg19"]),
    ("bench/bench.py", ["--what", "accuracy", "--data_dir", "d", "--seeds", "1", "--seeds", "2", "--no_record"],
     "seeds", [1, 2]),
    ("labels.generate", ["--dataset", "cifar10", "--label", "uniform", "--label", "lowdim"], "label",
     ["uniform", "lowdim"]),
    ("labels.generate", ["--dataset", "cifar10", "--dataset", "cifar100", "--label", "uniform"], "dataset",
     ["cifar10", "cifar100"]),
    # attack.py's too: `--attacks fgsm --attacks pgd` attacked with pgd alone (sweep.py's layers: test_sweep)
    ("attack.py", ["--attacks", "fgsm", "--attacks", "pgd"], "attacks", ["fgsm", "pgd"]),
    ("attack.py", ["--epsilons", "1/255", "2/255", "--epsilons", "4/255"], "epsilons",
     [("1/255", 1 / 255), ("2/255", 2 / 255), ("4/255", 4 / 255)]),
])
def test_a_list_flag_given_twice_takes_both_lists_in_every_script(script, argv, dest, expected):
    """argparse kept a list flag's last list: `--models resnet32 --models vgg19` timed vgg19 alone,
    `--label uniform --label lowdim` wrote lowdim alone, without a word (sweep.py's: test_sweep)."""
    from bench import bench
    args = bench.parse_args(argv) if script == "bench/bench.py" else PARSERS[script]().parse_args(argv)
    assert getattr(args, dest) == expected


def _holder_line(tmp_path, script, since, slurm_job=None):
    """What `utils.atomic.holder_of` says of `script`, pid 4123 on node07 (the docs' example),
    holding a lock since `since` (a struct_time in UTC), in a process whose zone is UTC."""
    import calendar
    import json
    from utils.atomic import holder_of
    lock = tmp_path / "lock"
    lock.write_text(json.dumps({"script": script, "pid": 4123, "host": "node07", "slurm_job": slurm_job,
                                "since": calendar.timegm(since)}))
    with open(lock, "rb") as f:
        return holder_of(f)


def test_the_docs_quote_the_job_holding_a_lock_as_the_scripts_name_it(tmp_path):
    """Every '(pid 4123 on node07, ...)' the docs quote, of a run in use, a report or a download
    waiting its turn, is a line `holder_of` writes: docs/reference.md's download line had no zone
    ('since 17:05:34)'), which every such line names."""
    import os
    import time
    zone = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    try:
        today = time.gmtime()
        at_17 = time.struct_time((*today[:3], 17, 5, 34, *today[6:]))
        earlier = time.struct_time((2026, 1, 2, 17, 5, 34, 4, 2, 0))
        written = {_holder_line(tmp_path, script, when, job) for script in ("train.py", "report.py")
                   for when in (at_17, earlier) for job in (None, "881_12")}
    finally:
        if zone is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = zone
        time.tzset()
    quoted = [(doc, quote) for doc in DOCS
              for quote in re.findall(r"\w+\.py \(pid 4123 on node07, [^)]*\)", " ".join((REPO / doc).read_text().split()))]
    assert len(quoted) >= 5, quoted  # README's, experiments.md's two, reference.md's two
    assert [(doc, quote) for doc, quote in quoted if quote not in written] == [], written


# ---------------------------------------------------------------- the README's result tables

STUDY = REPO / "docs" / "results" / "cifar10-subset"


def readme_table(title):
    """The README table after the paragraph that starts with **title** (at a line's start: not a
    list item's term): (header cells, {first cell: the row's other cells})."""
    after = (REPO / "README.md").read_text().split(f"\n**{title}**", 1)[1]
    lines = after[after.index("\n|"):].split("\n\n", 1)[0].strip().splitlines()
    header, *rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines if not line.startswith("|---")]
    return header[1:], {row[0]: row[1:] for row in rows}


def csv_rows(name, study=STUDY):
    import csv
    with open(study / name, newline="") as f:
        return list(csv.DictReader(f))


def study_label(cell):
    """The label of a README row's first cell: 'bert, rescaled to [0, 80]' is bert_rescaled,
    'mcr2 (nearest subspace; ...)' mcr2."""
    name = re.split(r" \(|,", cell)[0]
    return "bert_rescaled" if cell.startswith("bert, rescaled") else name


def spread(mean, std, scale=100, digits=2):
    return f"{float(mean) * scale:.{digits}f} ± {float(std) * scale:.{digits}f}"


def test_the_readmes_accuracy_table_is_the_studys_data_efficiency_csv():
    """Every cell of the README's clean-accuracy table (level 100, 25, 10 and the shares kept) is
    what report.py wrote in docs/results/cifar10-subset: a number copied wrong, or left stale by a
    rerun of the study, fails here."""
    header, rows = readme_table("Clean test accuracy and data efficiency")
    means = {(r["label"], int(r["level"])): r for r in csv_rows("data_efficiency.csv") if r["model"] == "resnet32"}
    levels = [int(re.match(r"level (\d+)", h).group(1)) for h in header[:3]]
    checked = 0
    for first, cells in rows.items():
        label = study_label(first)
        for level, cell in zip(levels, cells):
            if cell != "-":
                row = means[(label, level)]
                assert cell == spread(row["test_acc_mean"], row["test_acc_std"]) + "%", (first, level)
                checked += 1
        if re.fullmatch(r"[\d.]+ / [\d.]+", cells[3]):
            full = float(means[(label, 100)]["test_acc_mean"])
            assert cells[3] == " / ".join(f"{float(means[(label, lv)]['test_acc_mean']) / full:.2f}"
                                          for lv in (25, 10)), first
    assert checked == 25


ROBUST_COLUMNS = {"FGSM": "fgsm", "PGD": "pgd", "PGD margin": "pgd+margin"}


def test_the_readmes_robust_accuracy_table_is_the_studys_robust_accuracy_csv():
    """Every cell of the README's robust-accuracy table (clean, FGSM and PGD with either objective,
    and the targeted hit rates) is one of report.py's rows in docs/results/cifar10-subset for its
    label, attack and eps, at level 100."""
    header, rows = readme_table("Robust accuracy")
    clean = {r["label"]: r for r in csv_rows("data_efficiency.csv") if r["model"] == "resnet32" and r["level"] == "100"}
    robust = [r for r in csv_rows("robust_accuracy.csv") if r["model"] == "resnet32" and r["level"] == "100"
              and r["protocol"] == "pixel"]

    def found(label, attack, targeted, eps, key, digits):
        return {spread(r[f"{key}_mean"], r[f"{key}_std"], digits=digits) for r in robust
                if (r["label"], r["attack"], r["targeted"], r["eps_label"]) == (label, attack, str(targeted), eps)
                and r[f"{key}_mean"]}
    checked = 0
    for first, cells in rows.items():
        label = study_label(first)
        for column, cell in zip(header, cells):
            if column == "clean":
                assert cell == spread(clean[label]["test_acc_mean"], clean[label]["test_acc_std"]), first
            elif hit := re.fullmatch(r"targeted hit, (loss|margin)", column):
                attack = "pgd" if hit.group(1) == "loss" else "pgd+margin"
                assert cell in found(label, attack, True, "8/255", "target_success", 1), (first, column)
            else:
                attack, eps = column.rsplit(" ", 1)
                assert cell in found(label, ROBUST_COLUMNS[attack], False, eps, "robust_acc", 2), (first, column)
            checked += 1
    assert checked == 11 * 9


def test_the_readmes_transfer_table_is_the_transfer_studys_robust_accuracy_csv():
    """Every cell of the README's transfer-attack table (white-box and transferred FGSM and PGD,
    untargeted, and targeted PGD's hit rates) is report.py's row in docs/results/cifar10-subset-transfer
    for its label, attack, mode and eps, a transferred one's crafted against the other label's run
    (`pgd<category` in speech's row)."""
    study = STUDY.parent / "cifar10-subset-transfer"
    header, rows = readme_table("Transfer attacks")
    clean = {r["label"]: r for r in csv_rows("data_efficiency.csv", study)}
    robust = {(r["label"], r["attack"], r["targeted"], r["eps_label"]): r for r in csv_rows("robust_accuracy.csv", study)}
    checked = 0
    for label, cells in rows.items():
        other = {"category": "speech", "speech": "category"}[label]
        for column, cell in zip(header, cells):
            if column == "clean":
                assert cell == spread(clean[label]["test_acc_mean"], clean[label]["test_acc_std"]), label
            else:
                hit, how, attack, eps = re.fullmatch(r"(targeted hit, )?(white-box|transferred) (FGSM|PGD) (\S+)",
                                                     column).groups()
                name = attack.lower() + (f"<{other}" if how == "transferred" else "")
                key, digits = ("target_success", 1) if hit else ("robust_acc", 2)
                row = robust[(label, name, str(bool(hit)), eps)]
                assert cell == spread(row[f"{key}_mean"], row[f"{key}_std"], digits=digits), (label, column)
            checked += 1
    assert checked == 2 * 9 and len(header) == 9


def test_the_readmes_target_distance_figures_are_the_transfer_studys():
    """The README's target-distance paragraph: speech's rho, mean ± std and each seed's, is
    target_confusion.csv's in docs/results/cifar10-subset-transfer; the most confused pair and the
    farthest pair, with their rates and ranks, are those of its runs' confusion.json (the three seeds'
    counts pooled) and the speech targets' distances (../shared's label file)."""
    import json
    import numpy as np
    study = STUDY.parent / "cifar10-subset-transfer"
    text = " ".join((REPO / "README.md").read_text().split("\n**Target distance and confusion**", 1)[1]
                    .split("\n\n", 1)[0].split())
    (row,) = csv_rows("target_confusion.csv", study)
    assert row["label"] == "speech" and row["seeds"] == "7 8 9" and row["pairs"] == "45"
    seeds = ", ".join(f"{float(v):.2f}" for v in row["spearman"].split())
    assert (f"is {spread(row['spearman_mean'], row['spearman_std'], scale=1)} (seeds 7, 8, 9: {seeds}, "
            "over the 45 pairs)") in text
    targets = SHARED / "reference" / "label_representations" / "cifar10_speech.npy"
    if not targets.exists():
        pytest.skip(f"{targets} not found: the pairs' distances need the paper's speech targets")
    from labels import target_distances
    from report import pair_rates
    runs = study / "runs" / "cifar10"
    counts = sum(np.array(json.loads((runs / f"seed{s}/resnet32/model_speech/confusion.json").read_text())["test"])
                 for s in (7, 8, 9))
    names = json.loads((runs / "seed7/resnet32/model_speech/confusion.json").read_text())["classes"]
    rates, i, j = pair_rates(counts), *np.triu_indices(10, 1)
    distances = target_distances(np.load(targets, allow_pickle=False))[i, j]
    by_rate, by_distance = list(np.argsort(-rates, kind="stable")), list(np.argsort(distances, kind="stable"))
    ordinal = {1: "", 3: "3rd ", 5: "5th "}
    top, far = by_rate[0], by_distance[-1]
    assert (f"{names[i[top]].capitalize()} and {names[j[top]]}, the most confused pair ({rates[top]:.0%} of their "
            f"test images, the three seeds pooled), are the {ordinal[by_distance.index(top) + 1]}closest") in text
    assert (f"{names[i[far]]} and {names[j[far]]}, the farthest apart of all 45, are the "
            f"{ordinal[by_rate.index(far) + 1]}most confused ({rates[far]:.0%})") in text
