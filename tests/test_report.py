"""report.py on hand-made run directories with known numbers: tables, CSVs, summary, figures."""
import csv
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conftest import REPO, last_json, run_script
from report import cell, label_styles, log_error, main as report_main, mean_std, report
from utils.atomic import code_span
from utils.errors import UsageError, call_cli
from utils.runs import run_directory, run_lock

EPS1, EPS8 = 1 / 255, 8 / 255


def entry(attack, eps, robust, targeted=False, success=None, protocol="pixel"):
    row = {"attack": attack, "targeted": targeted, "eps": eps, "eps_label": f"{round(eps * 255):d}/255",
           "protocol": protocol, "steps": 1 if attack == "fgsm" else 10, "step_size": eps,
           "restarts": 1, "robust_acc": robust, "images_per_s": 100.0, "seconds": 1.0}
    if targeted:
        row["target_success"] = success
    return row


def make_run(base, label, seed, level=100, test_acc=None, valid_acc=None, epochs=4, done_epochs=None,
             attack=None, clean_acc=None, model="resnet32", dataset="cifar10", label_noise=0.0):
    """A run directory as train.py (and attack.py) leave it; test_acc None = training unfinished."""
    run_dir = run_directory(base, dataset, level, seed, model, label, label_noise)
    run_dir.mkdir(parents=True)
    done = epochs if test_acc is not None else done_epochs
    curve = [0.1 * (e + 1) for e in range(done)]
    (run_dir / "config.json").write_text(json.dumps({"flags": {"epochs": epochs, "label": label}}))
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps({"epoch": e + 1, "valid_acc": v}) + "\n"
                                                   for e, v in enumerate(curve)))
    (run_dir / "last_checkpoint.pth").write_bytes(b"checkpoint")
    if test_acc is not None:
        (run_dir / "results.json").write_text(json.dumps({
            "run_dir": str(run_dir), "dataset": dataset, "model": model, "label": label, "seed": seed,
            "level": level, "epochs": epochs, "best_epoch": epochs, "valid_acc": valid_acc,
            "valid_loss": 1.0, "test_acc": test_acc, "test_loss": 1.0,
            "train_images": 4170 if level == 100 else 1292, "test_images": 1017,
            "train_seconds": 10.0, "images_per_s": 400.0, "checkpoint": "x.pth", "device": "cpu"}))
    if attack is not None:
        (run_dir / "attack_results.json").write_text(json.dumps({
            "run_dir": str(run_dir), "checkpoint": "x.pth", "model": model, "label": label,
            "dataset": dataset, "num_images": 1017, "clean_acc": clean_acc,
            "entries": [{"seed": seed} | e for e in attack],  # attack.py's own seed unless given
            "config": {}, "environment": {}}))
    return run_dir


def test_a_targeted_pgd_of_restarts_an_older_attack_py_wrote_is_left_out(tmp_path):
    """Such an entry (no device recorded: perhaps before f72d56a fixed how restarts count) was
    averaged with the new code's entries of the same setting. Left out, counted in words that read
    right for one ('1 targeted PGD entries' before) and for several."""
    from report import read_run
    old = entry("pgd", EPS8, 0.09, targeted=True, success=0.2) | {"restarts": 5}
    for seed, attack, kept, count in ((1, [old, old | {"targeted": False}], [False], "1 targeted PGD entry"),
                                      (2, [old, old | {"eps": EPS1, "eps_label": "1/255"}], [],
                                       "2 targeted PGD entries")):
        run_dir = make_run(tmp_path, "category", seed, test_acc=0.5, valid_acc=0.5, clean_acc=0.5, attack=attack)
        key = {"dataset": "cifar10", "model": "resnet32", "label": "category", "level": 100, "seed": seed}
        record = read_run(tmp_path, run_dir.relative_to(tmp_path), key)
        assert [e["targeted"] for e in record["attack"]["entries"]] == kept
        assert record["problems"] == [
            f"attack_results.json: {count} of several restarts written by an attack.py that may "
            "predate f72d56a's fix of how restarts count left out (attack the run again)"]


def test_a_run_that_finishes_while_the_report_reads_it_is_no_invalid_file(tmp_path, monkeypatch):
    """report.py read results.json, then asked whether it was there: a run that train.py finished
    in between (a report made while the runs trained) was listed as 'results.json is not valid
    JSON'; an attack_results.json that train.py removed in between (a run started over) likewise."""
    from report import read_run
    from test_sweep import beside_a_read
    run_dir = make_run(tmp_path, "category", 1, done_epochs=2, attack=[entry("fgsm", EPS8, 0.2)], clean_acc=0.5)
    key = {"dataset": "cifar10", "model": "resnet32", "label": "category", "level": 100, "seed": 1}
    rel = run_dir.relative_to(tmp_path)
    finished, attacked = run_dir / "results.json", run_dir / "attack_results.json"
    beside_a_read(monkeypatch, finished, lambda: finished.write_text(json.dumps({"test_acc": 0.5})))
    beside_a_read(monkeypatch, attacked, lambda: attacked.unlink())
    record = read_run(tmp_path, rel, key)
    assert len(record["problems"]) == 1, record["problems"]
    assert record["problems"][0].startswith("training unfinished with 2 of 4 epochs logged")
    assert record["train"] is None and record["attack"] is None


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """category: 3 seeds at levels 100 and 25; speech: 2 finished seeds + 1 unfinished at level 100,
    1 seed of 3 at level 25; attacks at level 100 (speech seed 2 lacks its PGD entry)."""
    base = tmp_path_factory.mktemp("outputs")
    for seed, acc, robust, success in ((1, 0.5, 0.1, 0.9), (2, 0.6, 0.2, 0.8), (3, 0.7, 0.3, 0.7)):
        make_run(base, "category", seed, test_acc=acc, valid_acc=acc + 0.05, clean_acc=acc,
                 attack=[entry("fgsm", EPS8, robust), entry("fgsm", 1 / 255, robust + 0.2),
                         entry("pgd", EPS8, robust / 2), entry("fgsm", EPS8, 0.0, True, success)])
        make_run(base, "category", seed, level=25, test_acc=acc - 0.2, valid_acc=acc - 0.2)
    make_run(base, "speech", 1, test_acc=0.7, valid_acc=0.7, clean_acc=0.7,
             attack=[entry("fgsm", EPS8, 0.4), entry("fgsm", 1 / 255, 0.6), entry("pgd", EPS8, 0.3),
                     entry("fgsm", EPS8, 0.1, True, 0.5)])
    make_run(base, "speech", 2, test_acc=0.8, valid_acc=0.8, clean_acc=0.8,
             attack=[entry("fgsm", EPS8, 0.5), entry("fgsm", 1 / 255, 0.7), entry("fgsm", EPS8, 0.2, True, 0.4)])
    make_run(base, "speech", 3, done_epochs=2)
    make_run(base, "speech", 1, level=25, test_acc=0.45, valid_acc=0.45)
    return base


@pytest.fixture(scope="module")
def made(study, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    return out, report(study, out)


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def table_rows(markdown, heading):
    """The first table after a heading as {first cell: other cells}, its header row included."""
    lines = markdown.split(heading, 1)[1].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = {}
    for line in lines[start:start + 1] + lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = cells[1:]
    return rows


def test_mean_and_sample_std():
    assert mean_std([0.5, 0.6, 0.7])[0] == pytest.approx(0.6)
    assert mean_std([0.5, 0.6, 0.7])[1] == pytest.approx(0.1)  # ddof=1
    assert mean_std([0.4, None]) == (0.4, None, 1)
    assert mean_std([0.5, 0.6, 1.0])[:2] == (pytest.approx(0.7), pytest.approx(0.264575, abs=1e-6))  # not the median
    assert cell(mean_std([0.5, 0.6, 0.7])) == "60.00 ± 10.00 (n=3)"
    assert cell(mean_std([0.45])) == "45.00 (n=1)"
    assert cell(mean_std([])) == "-"


def test_clean_table_and_csv(made):
    out, summary = made
    markdown = (out / "tables.md").read_text()
    clean = table_rows(markdown, "### cifar10 (level 100: 4170 training images, 4 epochs)")
    assert clean == {"label": ["resnet32"], "category": ["60.00 ± 10.00 (n=3)"], "speech": ["75.00 ± 7.07 (n=2)"]}
    rows = {r["label"]: r for r in read_csv(out / "clean_accuracy.csv")}
    assert set(rows) == {"category", "speech"}
    assert float(rows["category"]["test_acc_mean"]) == pytest.approx(0.6)
    assert float(rows["category"]["test_acc_std"]) == pytest.approx(0.1)
    assert float(rows["category"]["valid_acc_mean"]) == pytest.approx(0.65)
    assert rows["speech"]["n"] == "2" and rows["speech"]["seeds"] == "1 2"
    assert [r["label"] for r in summary["clean_accuracy"]] == ["category", "speech"]


def test_a_label_holding_a_bar_stays_one_cell(tmp_path):
    """A label file named cifar10_p|q.npy trains as label p|q; its table row split it into two cells."""
    make_run(tmp_path, "p|q", 0, test_acc=0.5, valid_acc=0.5)
    report(tmp_path, tmp_path / "report", draw=False)
    markdown = (tmp_path / "report" / "tables.md").read_text()
    assert "\n| p\\|q | 50.00 (n=1) |\n" in markdown


def test_labels_holding_markdown_show_as_they_are(tmp_path):
    """A label is any file name without a /, and each character Markdown reads as markup is
    escaped where it shows one: a*b*c showed as a<em>b</em>c, <b>x as a bold x, a\\_b as a_b,
    [x](y) as a link, and a line break split its row in two (the rest a row of its own). An _
    between letters, as in the study's normal_dim=10, is no emphasis and stays as it was."""
    labels = ["a*b*c", "<b>x", "a\\_b", "[x](y)", "new\nline", "normal_dim=10", "_x_", "`c`"]
    for label in labels:
        make_run(tmp_path, label, 0, test_acc=0.5, valid_acc=0.5)
    make_run(tmp_path, "normal_dim=10", 1, test_acc=0.5, valid_acc=0.5)
    report(tmp_path, tmp_path / "report", draw=False)
    markdown = (tmp_path / "report" / "tables.md").read_text()
    table = markdown.split("| label | resnet32 |\n|---|---|\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert sorted(table) == sorted(f"| {cell} | 50.00{n} |" for cell, n in (
        ("a\\*b\\*c", " (n=1)"), ("\\<b>x", " (n=1)"), ("a\\\\\\_b", " (n=1)"), ("\\[x\\](y)", " (n=1)"),
        ("new line", " (n=1)"), ("normal_dim=10", " ± 0.00 (n=2)"), ("\\_x\\_", " (n=1)"), ("\\`c\\`", " (n=1)")))
    # the missing seed-1 runs of the others, listed below the tables, likewise
    assert "\n- cifar10/resnet32/a\\*b\\*c/level100/seed1: no run directory\n" in markdown


def test_data_efficiency_table(made):
    out, _ = made
    table = table_rows((out / "tables.md").read_text(), "### cifar10, resnet32\n")
    assert table["label"] == ["100% (4170 images)", "25% (1292 images)"]
    assert table["category"] == ["60.00 ± 10.00 (n=3)", "40.00 ± 10.00 (n=3)"]
    assert table["speech"] == ["75.00 ± 7.07 (n=2)", "45.00 (n=1)"]
    rows = read_csv(out / "data_efficiency.csv")
    assert [(r["label"], r["level"], r["n"]) for r in rows] == [
        ("category", "100", "3"), ("category", "25", "3"), ("speech", "100", "2"), ("speech", "25", "1")]
    assert rows[3]["test_acc_std"] == ""


def test_robust_tables(made):
    out, _ = made
    markdown = (out / "tables.md").read_text()
    fgsm = table_rows(markdown, "### cifar10, resnet32, level 100: fgsm, untargeted")
    assert fgsm["label"] == ["clean", "1/255", "8/255"]
    assert fgsm["category"] == ["60.00 ± 10.00 (n=3)", "40.00 ± 10.00 (n=3)", "20.00 ± 10.00 (n=3)"]
    assert fgsm["speech"] == ["75.00 ± 7.07 (n=2)", "65.00 ± 7.07 (n=2)", "45.00 ± 7.07 (n=2)"]
    pgd = table_rows(markdown, "### cifar10, resnet32, level 100: pgd, untargeted")
    assert pgd["category"][1] == "10.00 ± 5.00 (n=3)" and pgd["speech"][1] == "30.00 (n=1)"
    targeted = markdown.split("fgsm, targeted", 1)[1]
    assert table_rows(targeted, "Targeted attack success rate")["category"] == ["80.00 ± 10.00 (n=3)"]
    rows = read_csv(out / "robust_accuracy.csv")
    row = next(r for r in rows if (r["label"], r["attack"], r["targeted"], r["eps_label"]) ==
               ("category", "fgsm", "False", "8/255"))
    assert float(row["robust_acc_mean"]) == pytest.approx(0.2) and float(row["eps"]) == pytest.approx(EPS8)
    assert row["num_images"] == "1017" and row["steps"] == "1"


def test_robust_tables_say_what_their_numbers_count(made, tmp_path):
    """The robust section defines its clean column (the attacked images, not every test image),
    its eps units and the target success rate's denominator; without attacks it says so alone."""
    section = (made[0] / "tables.md").read_text().split("## Robust accuracy under attack\n\n", 1)[1]
    legend = section.split("\n", 1)[0]
    assert legend.startswith("Robust accuracy: % of the attacked test images")
    assert "`clean`: the same images without attack" in legend and "pixel units (x/255)" in legend
    assert "% of the images classified correctly before the attack" in legend
    assert "`+margin` (attack.py --objective margin): the decoder's margin" in legend  # fgsm+margin's
    make_run(tmp_path / "runs", "category", 1, test_acc=0.3, valid_acc=0.3)
    report(tmp_path / "runs", tmp_path / "out", draw=False)
    section = (tmp_path / "out" / "tables.md").read_text().split("## Robust accuracy under attack\n\n", 1)[1]
    assert section.startswith("No attack results.\n") and "Robust accuracy: %" not in section


def test_a_runs_other_settings_are_rows_not_seeds(tmp_path):
    """attack.py rerun with other --steps or --num_images adds entries beside the first ones: each
    setting is a table of its own with its entries' clean accuracy, never more seeds."""
    make_run(tmp_path / "runs", "category", 1, test_acc=0.3, valid_acc=0.3, clean_acc=0.1, attack=[
        entry("pgd", EPS8, 0.1) | {"num_images": 100, "clean_acc": 0.28},
        entry("pgd", EPS8, 0.2) | {"steps": 3, "num_images": 100, "clean_acc": 0.28},
        entry("fgsm", EPS8, 0.15) | {"num_images": 100, "clean_acc": 0.28},
        entry("fgsm", EPS8, 0.0) | {"num_images": 1, "clean_acc": 1.0},
        entry("iterative", EPS8, 0.12) | {"num_images": 100, "clean_acc": 0.28}])
    report(tmp_path / "runs", tmp_path / "out")
    markdown = (tmp_path / "out" / "tables.md").read_text()
    # the heading names the steps of the attacks that take them and PGD's restarts: FGSM's said
    # "steps 1, restarts 1", which no flag sets
    heading = "### cifar10, resnet32, level 100: {}, untargeted ({})"
    for attack, setting, cells in (("pgd", "100 test images, steps 10, restarts 1", ["28.00 (n=1)", "10.00 (n=1)"]),
                                   ("pgd", "100 test images, steps 3, restarts 1", ["28.00 (n=1)", "20.00 (n=1)"]),
                                   ("fgsm", "100 test images", ["28.00 (n=1)", "15.00 (n=1)"]),
                                   ("fgsm", "1 test image", ["100.00 (n=1)", "0.00 (n=1)"]),  # '1 test images'
                                   ("iterative", "100 test images, steps 10", ["28.00 (n=1)", "12.00 (n=1)"])):
        assert table_rows(markdown, heading.format(attack, setting))["category"] == cells
    rows = read_csv(tmp_path / "out" / "robust_accuracy.csv")
    assert len(rows) == 5 and {r["n"] for r in rows} == {"1"}
    assert (tmp_path / "out" / "robust_cifar10_resnet32_level100_untargeted.png").is_file()


def test_transfer_attacks_are_tables_of_their_own_expected_of_no_other_run(tmp_path):
    """attack.py --transfer_from's entries (pgd's images crafted against a category run, classified
    by the speech run) were read as the speech run's white-box PGD: one of them took the PGD
    table's cell, and every other run was listed as lacking the setting. They are tables of their
    own, named after their source, in the CSV and the figures too; the runs are complete."""
    source = {"name": "category", "checkpoint": "c.pth", "checkpoint_sha256": "0" * 64, "label": "category",
              "model": "resnet32", "seed": 1}
    make_run(tmp_path / "runs", "category", 1, test_acc=0.9, valid_acc=0.9, clean_acc=0.9,
             attack=[entry("pgd", EPS8, 0.1)])
    make_run(tmp_path / "runs", "speech", 1, test_acc=0.8, valid_acc=0.8, clean_acc=0.8,
             attack=[entry("pgd", EPS8, 0.3), entry("pgd", EPS8, 0.6) | {"source": source},
                     entry("pgd", EPS8, 0.5) | {"source": source | {"seed": 2}}])  # another seed's: not shown
    summary = report(tmp_path / "runs", tmp_path / "out")
    markdown = (tmp_path / "out" / "tables.md").read_text()
    white = table_rows(markdown, "### cifar10, resnet32, level 100: pgd, untargeted")
    assert white["category"][1:] == ["10.00 (n=1)"] and white["speech"][1:] == ["30.00 (n=1)"]
    transfer = table_rows(markdown, "### cifar10, resnet32, level 100: pgd<category, untargeted")
    assert transfer == {"label": ["clean", "8/255"], "speech": ["80.00 (n=1)", "60.00 (n=1)"]}
    assert "`<category` (attack.py --transfer_from): a transfer attack" in markdown
    assert summary["incomplete"] == [] and "## Incomplete runs\n\nNone." in markdown
    rows = read_csv(tmp_path / "out" / "robust_accuracy.csv")
    assert sorted((r["label"], r["attack"], r["robust_acc_mean"]) for r in rows) == [
        ("category", "pgd", "0.1"), ("speech", "pgd", "0.3"), ("speech", "pgd<category", "0.6")]
    from report import attack_title
    assert attack_title("pgd+margin<vgg19:category") == "PGD (margin objective) from vgg19:category"


def test_transfer_entries_of_a_source_written_again_are_left_out(tmp_path):
    """A source run trained again after a transfer attack (its best checkpoint written anew at its
    path): report.py showed the numbers of images crafted against the earlier model as the
    transfer's, with nothing said, where attack.py drops them on its next run with that source.
    They are left out, the run listed as incomplete; those of an unchanged source stay."""
    import os

    from attack import checkpoint_record
    sources = {}
    for name in ("category", "glove"):
        path = tmp_path / f"{name}.pth"
        path.write_bytes(name.encode() * 100)
        sources[name] = {"name": name, "checkpoint": str(path), "label": name, "model": "resnet32", "seed": 1,
                         **checkpoint_record(path.read_bytes(), os.stat(path))}
    make_run(tmp_path / "runs", "speech", 1, test_acc=0.8, valid_acc=0.8, clean_acc=0.8,
             attack=[entry("pgd", EPS8, 0.3)] + [entry("pgd", EPS8, 0.6) | {"source": source}
                                                 for source in sources.values()])
    report(tmp_path / "runs", tmp_path / "out")
    markdown = (tmp_path / "out" / "tables.md").read_text()
    heading = "### cifar10, resnet32, level 100: pgd<{}, untargeted"
    assert table_rows(markdown, heading.format("category"))["speech"] == ["80.00 (n=1)", "60.00 (n=1)"]
    assert "## Incomplete runs\n\nNone." in markdown
    (tmp_path / "category.pth").write_bytes(b"trained again")
    summary = report(tmp_path / "runs", tmp_path / "out")
    markdown = (tmp_path / "out" / "tables.md").read_text()
    assert heading.format("category") not in markdown
    assert table_rows(markdown, heading.format("glove"))["speech"] == ["80.00 (n=1)", "60.00 (n=1)"]
    assert {i["run"]: i["reasons"] for i in summary["incomplete"]} == {"cifar10/resnet32/speech/level100/seed1": [
        f"attack_results.json: the transfer entries crafted against an earlier {tmp_path / 'category.pth'} "
        "left out: written again since (attack the run again with --transfer_from it)"]}


def test_an_entry_without_its_step_size_is_a_table_of_its_own(tmp_path):
    """An entry without step_size (well-formed: attack.py's reuse does without one) beside the other
    seed's with one splits the table by step size: its heading was a TypeError traceback."""
    make_run(tmp_path / "runs", "category", 1, test_acc=0.6, valid_acc=0.6, clean_acc=0.6,
             attack=[entry("pgd", EPS8, 0.2) | {"step_size": None}])
    make_run(tmp_path / "runs", "category", 2, test_acc=0.6, valid_acc=0.6, clean_acc=0.6,
             attack=[entry("pgd", EPS8, 0.4)])
    summary = report(tmp_path / "runs", tmp_path / "out")
    markdown = (tmp_path / "out" / "tables.md").read_text()
    heading = "### cifar10, resnet32, level 100: pgd, untargeted (1017 test images, steps 10, restarts 1, step size {})"
    assert table_rows(markdown, heading.format("?"))["category"] == ["60.00 ± 0.00 (n=2)", "20.00 (n=1)"]
    assert table_rows(markdown, heading.format("8/255"))["category"] == ["60.00 ± 0.00 (n=2)", "40.00 (n=1)"]
    assert "robust_cifar10_resnet32_level100_untargeted.png" in summary["files"]


def test_a_step_size_rerun_leaves_the_default_step_sizes_one_table(tmp_path):
    """One run attacked again at 8/255 with --step_size 1/255: the table split by step size, and as
    attack.py's default step size follows eps (2.5 eps / steps), every eps became a table of its own,
    4/255's (default step 1/255) joined to the rerun's 8/255 as if one setting."""
    for seed, robust in ((1, 0.2), (2, 0.4)):
        attack = [entry("pgd", k / 255, robust / k) | {"step_size": 2.5 * k / 255 / 10} for k in (1, 2, 4, 8)]
        attack += [entry("pgd", EPS8, 0.01) | {"step_size": 1 / 255}] if seed == 1 else []
        make_run(tmp_path / "runs", "category", seed, test_acc=0.6, valid_acc=0.6, clean_acc=0.6, attack=attack)
    report(tmp_path / "runs", tmp_path / "out", draw=False)
    markdown = (tmp_path / "out" / "tables.md").read_text()
    heading = "### cifar10, resnet32, level 100: pgd, untargeted (1017 test images, steps 10, restarts 1{})"
    pgd = [line for line in markdown.splitlines() if line.startswith("### cifar10, resnet32, level 100: pgd")]
    assert pgd == [heading.format(""), heading.format(", step size 1/255")]
    assert table_rows(markdown, heading.format("") + "\n") == {
        "label": ["clean", "1/255", "2/255", "4/255", "8/255"],
        "category": ["60.00 ± 0.00 (n=2)", "30.00 ± 14.14 (n=2)", "15.00 ± 7.07 (n=2)", "7.50 ± 3.54 (n=2)",
                     "3.75 ± 1.77 (n=2)"]}
    assert table_rows(markdown, heading.format(", step size 1/255")) == {
        "label": ["clean", "8/255"], "category": ["60.00 ± 0.00 (n=2)", "1.00 (n=1)"]}


def test_a_run_attacked_again_with_another_seed_is_one_seed(tmp_path):
    """attack.py --checkpoint ... --seed 5 (other targets and random starts) adds entries of the same
    setting beside the run's own: they were averaged as a second seed (n=2 from one run)."""
    make_run(tmp_path / "runs", "category", 1, test_acc=0.6, valid_acc=0.6, clean_acc=0.6, attack=[
        entry("pgd", EPS8, 0.2) | {"seed": 1}, entry("pgd", EPS8, 0.4) | {"seed": 5}])
    make_run(tmp_path / "runs", "category", 2, test_acc=0.6, valid_acc=0.6, clean_acc=0.6, attack=[
        entry("pgd", EPS8, 0.1) | {"seed": 9}, entry("pgd", EPS8, 0.5) | {"seed": 8}])
    report(tmp_path / "runs", tmp_path / "out", draw=False)
    rows = read_csv(tmp_path / "out" / "robust_accuracy.csv")
    # the run's own seed's entry, else the last written
    assert [(r["n"], r["seeds"], float(r["robust_acc_mean"])) for r in rows] == [("2", "1 2", 0.35)]


def test_a_setting_attacked_in_float64_too_shows_the_float32_entry(tmp_path):
    """A notebook's attack.run in float64 adds an entry ("dtype": "float64") of a setting the
    command line computed in float32 (entries without a dtype are float32): the table showed the
    last written, so seed 1's row mixed its float64 number with the other seeds' float32 ones.
    The float32 entry is shown, whichever was written last; a float64 entry alone still counts."""
    float64 = {"dtype": "float64", "clean_acc": 0.7}
    make_run(tmp_path / "runs", "category", 1, test_acc=0.6, valid_acc=0.6, clean_acc=0.6, attack=[
        entry("pgd", EPS8, 0.2) | {"clean_acc": 0.6}, entry("pgd", EPS8, 0.9) | float64])
    make_run(tmp_path / "runs", "category", 2, test_acc=0.6, valid_acc=0.6, clean_acc=0.6, attack=[
        entry("pgd", EPS8, 0.9) | float64, entry("pgd", EPS8, 0.4) | {"dtype": "float32", "clean_acc": 0.6}])
    make_run(tmp_path / "runs", "category", 3, test_acc=0.6, valid_acc=0.6, clean_acc=0.6, attack=[
        entry("pgd", EPS8, 0.3) | float64])
    report(tmp_path / "runs", tmp_path / "out", draw=False)
    rows = read_csv(tmp_path / "out" / "robust_accuracy.csv")
    assert [(r["n"], r["seeds"], float(r["robust_acc_mean"]), float(r["clean_acc_mean"])) for r in rows] == [
        ("3", "1 2 3", pytest.approx(0.3), pytest.approx(0.6 + 0.1 / 3))]


def test_attacks_of_another_checkpoint_are_left_out(tmp_path):
    """The run's best checkpoint, of other bytes than attack_results.json's entries were computed
    on (copied in by hand, with cp -p too, beside the run's own kept under another name): the
    results are of the model before it (attack.py drops them), not of this run's."""
    import hashlib
    reasons = {}
    for seed, copied in ((1, False), (2, True), (3, True)):
        run_dir = make_run(tmp_path / "runs", "category", seed, test_acc=0.6, valid_acc=0.6, clean_acc=0.6,
                           attack=[entry("pgd", EPS8, 0.2 * seed)])
        checkpoint = run_dir / f"category_seed{seed}_resnet32_best_model.pth"
        checkpoint.write_bytes(b"attacked")
        attacked = checkpoint.stat()
        results = json.loads((run_dir / "attack_results.json").read_text())
        (run_dir / "attack_results.json").write_text(json.dumps(results | {
            "checkpoint_sha256": hashlib.sha256(b"attacked").hexdigest(),
            "checkpoint_mtime": attacked.st_mtime, "checkpoint_size": attacked.st_size}))
        if copied:
            (run_dir / f"kept_{checkpoint.name}").write_bytes(b"attacked")
            checkpoint.write_bytes(b"copied in" if seed == 2 else b"attackeD")
            os.utime(checkpoint, (attacked.st_mtime - 3600,) * 2)  # cp -p: the copied file's mtime
            reasons[f"cifar10/resnet32/category/level100/seed{seed}"] = [
                "attack_results.json left out: it holds the attacks of another checkpoint than "
                f"{checkpoint.name} (attack the run again)"]
    summary = report(tmp_path / "runs", tmp_path / "out", draw=False)
    rows = read_csv(tmp_path / "out" / "robust_accuracy.csv")
    assert [(r["n"], r["seeds"], float(r["robust_acc_mean"])) for r in rows] == [("1", "1", 0.2)]
    assert {i["run"]: i["reasons"] for i in summary["incomplete"]} == reasons


def test_a_labels_clean_accuracy_is_over_every_seed_of_its_table(tmp_path):
    """A seed without one eps's entry (an attack stopped part way) left the clean column with the
    largest eps's seeds alone, unlike the figure's clean point."""
    for seed, clean in ((1, 0.6), (2, 0.8)):
        attack = [entry("fgsm", 1 / 255, clean - 0.1)] + ([entry("fgsm", EPS8, 0.1)] if seed == 1 else [])
        make_run(tmp_path / "runs", "category", seed, test_acc=0.7, valid_acc=0.7, clean_acc=clean, attack=attack)
    report(tmp_path / "runs", tmp_path / "out")
    fgsm = table_rows((tmp_path / "out" / "tables.md").read_text(),
                      "### cifar10, resnet32, level 100: fgsm, untargeted")
    assert fgsm["category"] == ["70.00 ± 14.14 (n=2)", "60.00 ± 14.14 (n=2)", "10.00 (n=1)"]
    rows = read_csv(tmp_path / "out" / "robust_accuracy.csv")
    assert {(r["eps_label"], r["clean_acc_mean"], r["clean_acc_n"]) for r in rows} == {
        ("1/255", "0.7", "2"), ("8/255", "0.7", "2")}


def test_label_styles_do_not_depend_on_the_other_labels_of_a_report():
    """Colours went by position among the labels present: random was green beside category and
    speech, purple among eight labels."""
    alone = label_styles(["category", "speech", "random"])
    among = label_styles(["category", "speech", "shuffle", "composite", "random", "uniform", "bert", "mine"])
    assert all(alone[label] == among[label] for label in alone)
    assert len({(s["color"], s["marker"]) for s in among.values()}) == len(among)


def test_a_light_shade_is_not_drawn_with_its_dark_colours_marker():
    """Types past tab10's ten colours are drawn in tab20's light shades of them: each had its dark
    twin's marker too (uniform_gap=0 light-red diamonds beside composite's red ones, normal_dim=1
    light-blue circles beside category's), so the two looked alike in greyscale and on a crowded plot."""
    import matplotlib
    tab20 = matplotlib.colormaps["tab20"].colors  # pairs (a tab10 colour, its light shade)
    labels = ["category", "speech", "shuffle", "composite", "random", "uniform", "lowdim", "bert", "glove",
              *(f"t{i:02d}" for i in range(31))]
    styles = label_styles(labels)
    looks = [(tab20.index(tuple(s["color"])) // 2, s["marker"]) for s in styles.values()]
    assert len(set(looks)) == len(labels)  # colour family and marker: no two alike
    assert (styles["category"]["marker"], styles["t01"]["marker"]) == ("o", "s")  # t01: light blue


def test_only_finished_runs_trained_alike_are_averaged(tmp_path):
    """A seed trained with other flags (--epochs 5 among 4) is left out of every table, with the
    reason; an attacked run without results.json counts in no robust table either (its clean
    accuracy would differ between the clean and the robust tables)."""
    attack = [entry("fgsm", EPS8, 0.2)]
    for seed, acc, epochs in ((1, 0.5, 4), (2, 0.7, 4), (3, 0.99, 5)):
        make_run(tmp_path / "runs", "category", seed, test_acc=acc, valid_acc=acc, epochs=epochs,
                 clean_acc=acc, attack=[entry("fgsm", EPS8, acc / 2)])
    make_run(tmp_path / "runs", "category", 4, done_epochs=4, clean_acc=0.1, attack=attack)
    summary = report(tmp_path / "runs", tmp_path / "out")
    markdown = (tmp_path / "out" / "tables.md").read_text()
    assert table_rows(markdown, "### cifar10 (level 100")["category"] == ["60.00 ± 14.14 (n=2)"]
    heading = "### cifar10, resnet32, level 100: fgsm, untargeted (1017 test images)"
    assert table_rows(markdown, heading)["category"] == ["60.00 ± 14.14 (n=2)", "30.00 ± 7.07 (n=2)"]
    incomplete = {i["run"]: i["reasons"] for i in summary["incomplete"]}
    assert incomplete["cifar10/resnet32/category/level100/seed3"] == [
        "left out of the tables: trained with --epochs 5 (the other seeds: 4)"]
    assert incomplete["cifar10/resnet32/category/level100/seed4"][0].startswith("training unfinished")


def test_a_diverged_run_is_named_with_its_epoch(tmp_path):
    """A run whose loss went non-finite (metrics.jsonl's null) still counts in the means, as its
    results.json says, but the report names it and the epoch: a 10% among 60% was otherwise an
    unexplained spread. A validation loss of null beside a validation accuracy counts too (weights
    gone non-finite); with no validation images (valid_acc null) it does not. One left out of the
    tables for another reason (seed 5's other --epochs) is said to be, not counted in the means."""
    runs = tmp_path / "runs"
    for seed, acc in ((1, 0.6), (2, 0.1), (3, 0.58), (4, 0.61), (5, 0.1)):
        make_run(runs, "speech", seed, test_acc=acc, valid_acc=acc, epochs=5 if seed == 5 else 4)
    rows = {2: {"train_loss": None, "valid_loss": None, "valid_acc": 0.1},  # from epoch 3 on
            3: {"train_loss": 2.0, "valid_loss": None, "valid_acc": 0.1},   # the weights only
            4: {"train_loss": 2.0, "valid_loss": None, "valid_acc": None},  # --valid_size 0
            5: {"train_loss": None, "valid_loss": None, "valid_acc": 0.1}}
    for seed, row in rows.items():
        metrics = run_directory(runs, "cifar10", 100, seed, "resnet32", "speech") / "metrics.jsonl"
        lines = [{"epoch": e, "train_loss": 1.0, "valid_loss": 1.0, "valid_acc": 0.5} for e in (1, 2)]
        lines += [{"epoch": e} | row for e in (3, 4)]
        metrics.write_text("".join(json.dumps(line) + "\n" for line in lines))
    summary = report(runs, tmp_path / "out")
    diverged = {r["seed"]: r["diverged_epoch"] for r in summary["runs"]}
    assert diverged == {1: None, 2: 3, 3: 3, 4: None, 5: 3}
    markdown = (tmp_path / "out" / "tables.md").read_text()
    section = markdown.split("## Diverged runs", 1)[1].split("## Incomplete runs")[0]
    assert "- `cifar10/seed2/resnet32/model_speech`: from epoch 3; best epoch 4\n" in section
    assert ("- `cifar10/seed5/resnet32/model_speech`: from epoch 3; best epoch 5; left out of the tables "
            "(see the incomplete runs)\n") in section
    assert "seed1" not in section and "seed4" not in section
    assert table_rows(markdown, "### cifar10 (level 100")["speech"][0].endswith("(n=4)")  # still counted
    csv_rows = {r["seed"]: r["diverged_epoch"] for r in read_csv(tmp_path / "out" / "runs.csv")}
    assert csv_rows == {"1": "", "2": "3", "3": "3", "4": "", "5": "3"}


def test_a_diverged_run_still_training_is_not_said_to_be_in_the_means(tmp_path, capsys):
    """A run that a train.py job trains now, its loss gone non-finite at epoch 2, was listed among
    the diverged runs as one of the means ("their means above include them, but for those left out
    of the tables, as said beside them": nothing beside it) and among the runs in progress: one
    run in two states, though no table holds it. It is said to be in no table now; the report's
    line counts it once, as incomplete and running, beside the finished run."""
    from test_runs import held_by
    base = tmp_path / "outputs"
    make_run(base, "category", 1, test_acc=0.6, valid_acc=0.6)
    training = make_run(base, "category", 2, done_epochs=2)
    (training / "metrics.jsonl").write_text('{"epoch": 1, "train_loss": 2.0, "valid_acc": 0.1}\n'
                                            '{"epoch": 2, "train_loss": null, "valid_acc": 0.1}\n')
    with held_by(tmp_path, "train.py", "run_lock", training):
        report_main(["--base_dir", str(base), "--out", str(tmp_path / "out"), "--no_figures", "--workers", "1"])
    markdown = (tmp_path / "out" / "tables.md").read_text()
    section = markdown.split("## Diverged runs", 1)[1].split("## Incomplete runs")[0]
    assert section.splitlines()[-2] == ("- `cifar10/seed2/resnet32/model_category`: from epoch 2; in no table, "
                                        "without training results (see the incomplete runs)")
    assert table_rows(markdown, "### cifar10 (level 100")["category"] == ["60.00 (n=1)"]
    line = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert [line[k] for k in ("runs", "trained", "incomplete", "running", "missing")] == [2, 1, 1, 1, 0]


def test_missing_and_incomplete_are_listed(made):
    out, summary = made
    incomplete = {i["run"]: i["reasons"] for i in summary["incomplete"]}
    [reason] = incomplete["cifar10/resnet32/speech/level100/seed3"]
    assert re.fullmatch(r"training unfinished with 2 of 4 epochs logged, files last written "
                        r"20\d\d-\d\d-\d\d \d\d:\d\d UTC \(no results.json\)", reason), reason
    assert incomplete["cifar10/resnet32/speech/level100/seed2"] == [
        "attack results: 1 of 4 settings missing (pgd untargeted 8/255)"]
    assert incomplete["cifar10/resnet32/category/level25/seed1"] == ["no attack results"]
    assert len(incomplete) == 3 + 1 + 1 + 1  # category level 25 x3, speech level 25 seed 1
    assert [m["run"] for m in summary["missing"]] == ["cifar10/resnet32/speech/level25/seed2",
                                                      "cifar10/resnet32/speech/level25/seed3"]
    markdown = (out / "tables.md").read_text()
    assert f"- `cifar10/seed3/resnet32/model_speech`: {reason}" in markdown
    assert "- cifar10/resnet32/speech/level25/seed3: no run directory" in markdown
    statuses = {(r["label"], r["level"], r["seed"]): r["status"] for r in read_csv(out / "runs.csv")}
    assert statuses[("speech", "100", "3")] == "incomplete" and statuses[("category", "100", "1")] == "complete"


def test_runs_csv_says_why_a_run_is_incomplete_and_whether_its_accuracy_counts(tmp_path):
    """runs.csv said `incomplete` alike of a run left out of the tables and of one whose test accuracy
    is in them (only an attack setting missing), and why only in tables.md and summary.json: a
    notebook reading runs.csv could not tell which runs a table's mean holds, nor why."""
    attacks = [entry("fgsm", EPS8, 0.1), entry("pgd", EPS8, 0.05)]
    for seed in (1, 2):
        make_run(tmp_path / "runs", "category", seed, test_acc=0.5, valid_acc=0.5, clean_acc=0.5, attack=attacks)
    make_run(tmp_path / "runs", "category", 3, test_acc=0.6, valid_acc=0.6, clean_acc=0.6, attack=attacks[:1])
    make_run(tmp_path / "runs", "category", 4, test_acc=0.7, valid_acc=0.7, clean_acc=0.7, attack=attacks,
             epochs=5)
    make_run(tmp_path / "runs", "category", 5, done_epochs=2)
    summary = report(tmp_path / "runs", tmp_path / "out", draw=False)
    rows = {r["seed"]: r for r in read_csv(tmp_path / "out" / "runs.csv")}
    assert {seed: (r["status"], r["in_tables"]) for seed, r in rows.items()} == {
        "1": ("complete", "True"), "2": ("complete", "True"), "3": ("incomplete", "True"),
        "4": ("incomplete", "False"), "5": ("incomplete", "False")}
    assert [int(seed) for seed, r in rows.items() if r["in_tables"] == "True"] == summary["clean_accuracy"][0]["seeds"]
    # summary.json, "all of the above as JSON", says so too: a jq or JS reader had the reasons' text alone
    assert [r["seed"] for r in summary["runs"] if r["in_tables"]] == summary["clean_accuracy"][0]["seeds"]
    written = json.loads((tmp_path / "out" / "summary.json").read_text())["runs"]
    assert {str(r["seed"]): str(r["in_tables"]) for r in written} == {seed: r["in_tables"] for seed, r in rows.items()}
    reasons = {i["run_dir"]: "; ".join(i["reasons"]) for i in summary["incomplete"]}
    assert {r["run_dir"]: r["reasons"] for r in rows.values() if r["reasons"]} == reasons
    assert rows["3"]["reasons"] == "attack results: 1 of 2 settings missing (pgd untargeted 8/255)"
    assert rows["4"]["reasons"] == "left out of the tables: trained with --epochs 5 (the other seeds: 4)"
    assert rows["1"]["reasons"] == ""


def test_runs_are_listed_in_the_order_of_the_tables_not_of_their_folders_names(tmp_path):
    """runs.csv, summary.json's runs and tables.md's incomplete runs listed the run directories as
    their paths sort: seed10 before seed9, level 100 before 10, 25 and 5, labels by name (speech
    before shuffle), where the CSVs and tables beside them list the labels in the paper's order,
    levels from the largest and seeds by value; a reader matching rows across files found them
    apart."""
    labels, levels, seeds = ("category", "speech", "shuffle"), (100, 25, 5), (9, 10)
    for label in labels:
        for level in levels:
            for seed in seeds:
                make_run(tmp_path / "runs", label, seed, level=level, test_acc=0.5, valid_acc=0.5)
                make_run(tmp_path / "runs", label, seed, level=level, done_epochs=1, label_noise=0.2)
    summary = report(tmp_path / "runs", tmp_path / "out", draw=False)
    order = [(label, level, seed) for label in labels for level in levels for seed in seeds]
    assert [(r["label"], r["level"]) for r in summary["data_efficiency"]] == \
        [(label, level) for label in labels for level in levels]
    noisy = [(f"{label}_noise0.2", level, seed) for label, level, seed in order]
    listed = sorted(order + noisy, key=lambda run: (labels.index(run[0].partition("_")[0]), "_" in run[0]))
    assert [(r["label"], int(r["level"]), int(r["seed"])) for r in read_csv(tmp_path / "out" / "runs.csv")] == listed
    assert [(r["label"], r["level"], r["seed"]) for r in summary["runs"]] == listed
    assert [i["run"] for i in summary["incomplete"]] == [
        f"cifar10/resnet32/{label}/level{level}/seed{seed}" for label, level, seed in noisy]
    markdown = (tmp_path / "out" / "tables.md").read_text()
    shown = re.findall(r"^- `(.*?)`: training unfinished", markdown, re.M)
    assert shown == [i["run_dir"] for i in summary["incomplete"]]


def test_a_level_figure_draws_the_labels_run_at_two_levels_with_their_images(tmp_path):
    """A label trained at one level alone was a point at that level among the lines (13 of the
    mini-study's 20 labels, stacked at level 100 over category's point); the x axis said "% of the
    training split" alone, which level 100 (what the validation split leaves: 4170 of 5170) is not."""
    from report import level_figures
    base = tmp_path / "runs"
    for level, acc in ((100, 0.7), (25, 0.4)):
        make_run(base, "category", 1, level=level, test_acc=acc, valid_acc=acc)
    make_run(base, "speech", 1, test_acc=0.6, valid_acc=0.6)
    make_run(base, "random", 1, level=25, test_acc=0.3, valid_acc=0.3)
    summary = report(base, tmp_path / "out", draw=False)
    styles = label_styles(["category", "speech", "random"])
    [(_, draw, args)] = level_figures(summary["data_efficiency"], styles)
    ax = draw(*args).axes[0]
    assert [line.get_label() for line in ax.lines] == ["category"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["25", "100"]
    assert ax.get_xlabel() == ("training data (% of the training split)\n"
                               "(100: the 4170 images beside the validation split)")
    # no label at two levels: no figure (it was one of points)
    rows = [r for r in summary["data_efficiency"] if r["label"] != "category"]
    assert list(level_figures(rows, label_styles(["speech", "random"]))) == []


def test_a_level_figures_tick_labels_do_not_run_together(tmp_path):
    """On the level figure's log axis the numbers of close levels ran together: a grid of levels
    1 2 4 8 10 20 40 60 80 100 read "80100" at its end. A label that would touch the next one is
    left out (its tick stays), the largest level's kept."""
    from report import level_figures
    base = tmp_path / "runs"
    levels = (1, 2, 4, 8, 10, 20, 40, 60, 80, 100)
    for level in levels:
        make_run(base, "category", 1, level=level, test_acc=0.5, valid_acc=0.5)
    summary = report(base, tmp_path / "out", draw=False)
    [(_, draw, args)] = level_figures(summary["data_efficiency"], label_styles(["category"]))
    figure = draw(*args)
    figure.draw_without_rendering()  # laid out as its PNG
    ax = figure.axes[0]
    assert list(ax.get_xticks()) == list(levels)  # every level's tick
    shown = [t for t in ax.get_xticklabels() if t.get_visible()]
    assert {"1", "100"} <= {t.get_text() for t in shown} and len(shown) >= 7
    boxes = [t.get_window_extent() for t in shown]
    assert all(left.x1 < right.x0 for left, right in zip(boxes, boxes[1:])), [t.get_text() for t in shown]


def test_summary_json_and_figures(made):
    out, _ = made
    saved = json.loads((out / "summary.json").read_text())
    assert saved["run_dirs"] == len(saved["runs"]) == 10 and saved["trained"] == 9 and saved["attacked"] == 5
    assert {r["run_dir"] for r in saved["runs"]} >= {"cifar10/seed1/resnet32/model_category"}
    curve = next(c for c in saved["curves"] if (c["label"], c["level"]) == ("speech", 100))
    assert curve["valid_acc"] == pytest.approx([0.1, 0.2, 0.3, 0.4])  # seed 3 stopped at epoch 2
    figures = [f for f in saved["files"] if f.endswith(".png")]
    assert sorted(figures) == ["curves_cifar10_resnet32_level100.png", "curves_cifar10_resnet32_level25.png",
                               "levels_cifar10_resnet32.png", "robust_cifar10_resnet32_level100_targeted.png",
                               "robust_cifar10_resnet32_level100_untargeted.png"]
    for name in figures:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_figures_draw_the_tables_numbers(tmp_path):
    """A robust figure's x axis is eps in 1/255 steps (the paper protocol's in its normalised units),
    its lines starting at the clean accuracy at eps 0; a level figure is test accuracy against the
    level. Only the figures' files were checked, not what they show."""
    from report import level_figures, robust_figures
    base = tmp_path / "runs"
    paper = dict(entry("fgsm", 0.3, 0.2, protocol="paper"), eps_label="0.3")
    for seed in (1, 2):
        make_run(base, "category", seed, test_acc=0.7, valid_acc=0.9, clean_acc=0.7,
                 attack=[entry("fgsm", 1 / 255, 0.5), entry("fgsm", EPS8, 0.1), paper,
                         entry("pgd+margin", EPS8, 0.05)])
        make_run(base, "category", seed, level=25, test_acc=0.4, valid_acc=0.5)
    summary = report(base, tmp_path / "out", draw=False)
    styles = label_styles(["category"])
    plans = [*robust_figures(summary["robust_accuracy"], styles),
             *level_figures(summary["data_efficiency"], styles)]
    figures = {name: draw(*args) for name, draw, args in plans}
    drawn = {name: figure.axes[0].lines[0].get_xydata().T.tolist() for name, figure in figures.items()}
    # the margin objective's panel was titled "pgd+margin", beside "FGSM"
    assert [ax.get_title() for ax in figures["robust_cifar10_resnet32_level100_untargeted"].axes
            if ax.get_title()] == ["FGSM\n1017 test images", "PGD (margin objective)\n1017 test images, steps 10, "
                                   "restarts 1"]
    # three panels a row at most: the mini-study's five made a 24-inch strip
    make_run(tmp_path / "five", "speech", 1, test_acc=0.5, valid_acc=0.5, clean_acc=0.5,
             attack=[entry(attack, EPS8, 0.1) for attack in ("fgsm", "pgd", "iterative", "fgsm+margin",
                                                             "pgd+margin")])
    five = report(tmp_path / "five", tmp_path / "out5", draw=False)["robust_accuracy"]
    [(_, draw_five, args)] = robust_figures(five, label_styles(["speech"]))
    panels = draw_five(*args).axes
    assert [ax.get_subplotspec().rowspan.start for ax in panels] == [0, 0, 0, 1, 1]
    assert drawn.keys() == {"robust_cifar10_resnet32_level100_untargeted", "levels_cifar10_resnet32",
                            "robust_cifar10_resnet32_level100_untargeted_paper"}
    expected = {"robust_cifar10_resnet32_level100_untargeted": [[0, 1, 8], [70, 50, 10]],
                "robust_cifar10_resnet32_level100_untargeted_paper": [[0, 0.3], [70, 20]],
                "levels_cifar10_resnet32": [[25, 100], [40, 70]]}
    for name, (xs, ys) in expected.items():
        assert drawn[name] == [pytest.approx(xs, rel=1e-6), pytest.approx(ys)], name


def error_bars(ax):
    """The (x, low, high) of each error bar of an axes' one errorbar line."""
    [container] = ax.containers
    [bars] = container.lines[2]
    return [(x, low, high) for (x, low), (_, high) in bars.get_segments()]


def test_figures_error_bars_are_the_sample_std_over_seeds_in_percent(tmp_path):
    """The figures' legends say "mean ± s.d. over n seeds", as the tables' cells: each point's bar
    spans the mean plus or minus the sample std (n - 1), in percent, the clean point's too. Only
    the means were checked (on seeds that agreed, drawn without bars): bars of the standard error
    (/ sqrt(n): 5.77 for 10), of the population std (8.16) or in fractions went unseen."""
    from report import level_figures, robust_figures
    base = tmp_path / "runs"
    for seed, acc, robust in ((1, 0.5, 0.1), (2, 0.6, 0.2), (3, 0.7, 0.6)):
        make_run(base, "category", seed, test_acc=acc, valid_acc=acc, clean_acc=acc,
                 attack=[entry("fgsm", EPS8, robust)])
        make_run(base, "category", seed, level=25, test_acc=acc - 0.2, valid_acc=acc - 0.2)
    summary = report(base, tmp_path / "out", draw=False)
    styles = label_styles(["category"])
    [(_, draw, args)] = robust_figures(summary["robust_accuracy"], styles)
    # clean 50, 60, 70: 60 +- 10; robust 10, 20, 60: 30 +- sqrt((20^2 + 10^2 + 30^2) / 2) = 26.46
    spread = ((20 ** 2 + 10 ** 2 + 30 ** 2) / 2) ** 0.5
    assert error_bars(draw(*args).axes[0]) == [(0, pytest.approx(50), pytest.approx(70)),
                                               (pytest.approx(8), pytest.approx(30 - spread),
                                                pytest.approx(30 + spread))]
    [(_, draw, args)] = level_figures(summary["data_efficiency"], styles)
    assert error_bars(draw(*args).axes[0]) == [(25, pytest.approx(30), pytest.approx(50)),
                                               (100, pytest.approx(50), pytest.approx(70))]


def test_panel_titles_naming_their_settings_stay_apart(tmp_path):
    """A robust figure's panels of one attack at several settings name the setting under the attack,
    on one line: "1017 test images, steps 10, restarts 1, bf16, step size 0.5/255" is wider than a
    panel, and two such titles side by side ran into each other. Wrapped, they stay apart."""
    from report import robust_figures
    attack = [entry("pgd", k / 255, 0.5 / k) | {"step_size": step / 255, "amp": True}
              for step in (0.5, 0.75) for k in (1, 8)]
    make_run(tmp_path / "runs", "category", 1, test_acc=0.6, valid_acc=0.6, clean_acc=0.6, attack=attack)
    summary = report(tmp_path / "runs", tmp_path / "out", draw=False)
    [(_, draw, args)] = robust_figures(summary["robust_accuracy"], label_styles(["category"]))
    figure = draw(*args)
    figure.draw_without_rendering()  # laid out as its PNG
    left, right = (ax.title for ax in figure.axes)
    assert left.get_text().replace("\n", " ") == "PGD 1017 test images, steps 10, restarts 1, bf16, step size 0.5/255"
    assert left.get_window_extent().x1 < right.get_window_extent().x0, (left.get_text(), right.get_text())


def test_transfer_panels_name_their_setting_as_the_white_box_ones_do(tmp_path):
    """A robust figure's panels named their setting (test images, steps, restarts) only where one
    attack had several: beside white-box PGD at 10 and at 20 steps, each titled with its steps, the
    transfer panel was "PGD from category" alone, and which of the two it compared with (it is
    crafted at 10 steps) was in no title. Every panel names its setting now, through one title,
    white-box and transfer alike."""
    from report import robust_figures
    source = {"name": "category", "checkpoint": "c.pth", "checkpoint_sha256": "0" * 64, "label": "category",
              "model": "resnet32", "seed": 1}
    make_run(tmp_path / "runs", "category", 1, test_acc=0.9, valid_acc=0.9, clean_acc=0.9,
             attack=[entry("pgd", EPS8, 0.1), entry("fgsm", EPS8, 0.2)])
    make_run(tmp_path / "runs", "speech", 1, test_acc=0.8, valid_acc=0.8, clean_acc=0.8,
             attack=[entry("pgd", EPS8, 0.3), entry("pgd", EPS8, 0.2) | {"steps": 20, "num_images": 500},
                     entry("pgd", EPS8, 0.6) | {"source": source}, entry("fgsm", EPS8, 0.7) | {"source": source}])
    summary = report(tmp_path / "runs", tmp_path / "out", draw=False)
    [(_, draw, args)] = robust_figures(summary["robust_accuracy"], label_styles(["category", "speech"]))
    assert [ax.get_title() for ax in draw(*args).axes] == [
        "FGSM\n1017 test images", "FGSM from category\n1017 test images",
        "PGD\n1017 test images, steps 10, restarts 1", "PGD\n500 test images, steps 20, restarts 1",
        "PGD from category\n1017 test images, steps 10, restarts 1"]


def test_a_figure_is_drawn_once_into_the_bytes_savefig_wrote(study, tmp_path, monkeypatch):
    """Figure.savefig drew each figure twice (once without rendering, for constrained layout): a
    third of a large report's time. Drawn once, a figure's PNG is still savefig's, byte for byte."""
    import io
    import report as module
    real, compared = module.write_figure, []

    def and_savefig(plan, f, figure_format):
        mine = io.BytesIO()
        real(plan, mine, figure_format)
        _, draw, args = plan
        saved = io.BytesIO()
        draw(*args).savefig(saved, format="png", dpi=120)
        compared.append((plan[0], mine.getvalue() == saved.getvalue()))
        f.write(mine.getvalue())
    monkeypatch.setattr(module, "write_figure", and_savefig)
    report(study, tmp_path / "out")
    assert len(compared) == 5 and all(same for _, same in compared), compared


def test_workers_write_the_same_report(study, tmp_path, monkeypatch):
    """report.py reads the runs and draws the figures in worker processes, one a core (a large
    study's report took a minute on one): every file as one process writes it, byte for byte."""
    import concurrent.futures
    import report as module
    pools = []

    class Pool(concurrent.futures.ProcessPoolExecutor):
        def __init__(self, *args, **kwargs):
            pools.append(args[0])
            super().__init__(*args, **kwargs)
    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", Pool)
    monkeypatch.setattr(module, "cores", lambda: range(3))  # a machine of 3 cores, this one or not
    monkeypatch.setattr(module, "RUNS_PER_WORKER", 4)  # 10 runs: 2 workers
    monkeypatch.setattr(module, "FIGURES_PER_WORKER", 1)  # 5 figures: 3 workers
    one = report(study, tmp_path / "one")
    several = report(study, tmp_path / "several", workers=8)
    assert pools == [2, 3]
    assert several["files"] == one["files"] and len(one["files"]) == 11
    for name in one["files"]:
        assert (tmp_path / "several" / name).read_bytes() == (tmp_path / "one" / name).read_bytes(), name


def test_a_killed_worker_is_one_line(monkeypatch):
    """A worker killed (out of memory) was a BrokenProcessPool traceback."""
    import os
    import report as module
    monkeypatch.setattr(module, "cores", lambda: range(2))
    with pytest.raises(UsageError, match=r"^a worker process of the 2 ended without its result \(killed, out "
                                         r"of memory\?\); rerun with fewer --workers \(1: none\)$"):
        with module.in_workers(2, 2, 1, chunksize=1) as pool_map:
            list(pool_map(os._exit, [1, 1]))


def test_without_worker_processes_the_report_is_written_in_one(study, tmp_path, monkeypatch):
    """Where processes cannot share a queue (a sandbox without POSIX semaphores), the report is
    read and drawn in the one process instead of stopping with the platform's error."""
    import concurrent.futures
    import report as module

    def no_semaphores(*args, **kwargs):
        raise OSError(38, "Function not implemented")
    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", no_semaphores)
    monkeypatch.setattr(module, "cores", lambda: range(2))
    monkeypatch.setattr(module, "RUNS_PER_WORKER", 1)
    monkeypatch.setattr(module, "FIGURES_PER_WORKER", 1)
    summary = report(study, tmp_path / "out", workers=2)
    assert summary["run_dirs"] == 10 and all((tmp_path / "out" / name).is_file() for name in summary["files"])


def test_a_notebook_keeps_its_backend_and_figures(study, tmp_path):
    """report() switched the caller's matplotlib backend to Agg (a notebook's inline figures
    stopped showing) and drew through pyplot's global figure list."""
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(REPO)!r})
        import matplotlib
        matplotlib.use("svg")  # as a notebook's inline backend
        import matplotlib.pyplot as plt
        plt.figure()
        from report import report
        files = report({str(study)!r}, {str(tmp_path / "out")!r})["files"]
        print(matplotlib.get_backend(), plt.get_fignums(), sum(f.endswith(".png") for f in files))
    """)
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert shown.stdout.split("\n")[-2] == "svg [1] 5"


def test_grid_file_names_the_expected_runs(study, tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text("labels: [category, speech, uniform]\nlevels: [100]\nseeds: [1, 2]\nstages: [train]\n")
    summary = report(study, tmp_path / "out", grid, draw=False)
    assert [m["run"] for m in summary["missing"]] == ["cifar10/resnet32/uniform/level100/seed1",
                                                      "cifar10/resnet32/uniform/level100/seed2"]
    assert not any("attack" in r for i in summary["incomplete"] for r in i["reasons"])
    assert summary["expected_runs"] == f"grid file {grid}"


def test_cli_json_line_and_bad_base_dir(study, tmp_path):
    result = last_json(run_script("report.py", "--base_dir", study, "--out", tmp_path / "r", "--no_figures"))
    assert (result["runs"], result["incomplete"], result["missing"]) == (10, 6, 2)
    assert (tmp_path / "r" / "tables.md").exists() and not list((tmp_path / "r").glob("*.png"))
    proc = run_script("report.py", "--base_dir", tmp_path / "nowhere", check=False)
    assert proc.returncode == 2 and proc.stderr.startswith("error: --base_dir") and proc.stdout == ""
    # an empty --grid (an unset variable) was no grid: the runs it expects went unlisted as missing
    proc = run_script("report.py", "--base_dir", study, "--out", tmp_path / "r", "--grid", "", check=False)
    assert (proc.returncode, proc.stderr) == (2, "error: argument --grid: must not be empty (see report.py "
                                                 "--help)\n")
    # two grid files: the first was dropped without a word, its runs not expected
    proc = run_script("report.py", "--base_dir", study, "--grid", "a.yaml", "--grid=b.yaml", check=False)
    assert (proc.returncode, proc.stderr) == (2, "error: argument --grid: given twice (a.yaml, then b.yaml): give "
                                                 "one grid file, and override its keys with flags (see report.py "
                                                 "--help)\n")
    proc = run_script("report.py", "--base_dir", study, "--out", tmp_path / "r" / "tables.md", check=False)
    assert (proc.returncode, proc.stderr) == (2, f"error: cannot use {tmp_path / 'r' / 'tables.md'}: a file, "
                                                 "not a folder\n")  # was "File exists"


def test_a_base_dir_holding_a_line_break_is_one_error_line(tmp_path, capsys):
    """A --base_dir from a shell's command substitution ("$(ls -d outputs*)" finding two folders)
    holds a line break: its error is still one line, which a batch log's reader takes as the error."""
    from utils.errors import call_cli
    assert call_cli(report_main, ["--base_dir", f"{tmp_path}/a\nb", "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr() == ("", f"error: --base_dir {tmp_path}/a b is not a directory\n")


def test_a_base_dir_the_locale_cannot_decode_is_reported(study, tmp_path):
    """In an ASCII locale an 'é' of the command line is two bytes Python cannot decode (kept as
    lone surrogates), and writing tables.md and runs.csv as UTF-8 ended in a UnicodeEncodeError
    traceback; they now hold the path's bytes as given."""
    base = tmp_path / "runs é"
    shutil.copytree(study, base)
    proc = run_script("report.py", "--base_dir", base, "--out", tmp_path / "r", "--no_figures",
                      env={"LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"})
    assert (proc.returncode, proc.stderr) == (0, "")
    assert f"From `{base}`" in (tmp_path / "r" / "tables.md").read_text(encoding="utf-8")


def test_a_report_that_does_not_fit_on_the_disk_leaves_the_earlier_one(study, tmp_path, monkeypatch, capsys):
    """It stopped at the figure that did not fit, with the new CSVs and tables.md written beside the
    earlier figures and summary.json: a set of files no report made."""
    import errno
    import os
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from utils.errors import call_cli
    base, out = tmp_path / "runs", tmp_path / "report"
    shutil.copytree(study, base)
    report(base, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    make_run(base, "category", 4, test_acc=0.9, valid_acc=0.9)  # another seed: every table changes
    real, drawn = FigureCanvasAgg.print_png, []

    def third_does_not_fit(canvas, f, **kwargs):
        drawn.append(f)
        if len(drawn) == 3:
            f.write(b"part of a png")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(canvas, f, **kwargs)
    monkeypatch.setattr(FigureCanvasAgg, "print_png", third_does_not_fit)
    assert call_cli(report_main, ["--base_dir", str(base), "--out", str(out)]) == 2
    line = capsys.readouterr().err.strip()
    assert line.startswith(f"error: could not write {out}/") and line.endswith(".png: No space left on device")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # nor a temporary file left
    monkeypatch.undo()
    assert "cifar10/resnet32/category/level100/seed4" in {r["run"] for r in report(base, out)["runs"]}
    assert (out / "tables.md").read_bytes() != before["tables.md"]


def report_signalled(base, out, signum):
    """Python code that runs report.py on `base` into `out` (no figures) and sends itself `signum`
    once robust_accuracy.csv, its third file, is written (as report.py's own)."""
    return textwrap.dedent(f"""
        import os, runpy, signal, sys
        sys.path.insert(0, {str(REPO)!r})
        import report
        write_csv = report.write_csv
        def and_signal(*args):
            write_csv(*args)
            if args[1].name == "robust_accuracy.csv":
                os.kill(os.getpid(), {int(signum)})
        report.write_csv = and_signal
        sys.argv = ["report.py", "--base_dir", {str(base)!r}, "--out", {str(out)!r}, "--no_figures"]
        runpy.run_path({str(REPO / "report.py")!r}, run_name="__main__")
    """)


def test_a_report_ended_by_sigterm_leaves_the_earlier_one_and_no_temporary_file(study, tmp_path):
    """SIGTERM (`timeout`, `kill`) killed report.py at once: its temporary files stayed in --out
    (.tables.md.*.tmp, a figure's size each), its worker processes too. It ends as after Ctrl-C."""
    base, out = tmp_path / "runs", tmp_path / "report"
    shutil.copytree(study, base)
    report(base, out, draw=False)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    make_run(base, "category", 4, test_acc=0.9, valid_acc=0.9)  # another seed: every table changes
    code = report_signalled(base, out, signal.SIGTERM)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert (proc.returncode, proc.stderr, proc.stdout) == (130, "error: interrupted; got SIGTERM\n", "")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_a_report_killed_outright_leaves_no_temporary_file_after_the_next(study, tmp_path):
    """SIGKILL (a job's time limit, the OOM killer) mid-write left the report's temporary files in
    --out (.tables.md.*.tmp, .robust_accuracy.csv.*.tmp, a figure's size each), and every rerun
    kept them: the next report in the folder removes them."""
    base, out = tmp_path / "runs", tmp_path / "report"
    shutil.copytree(study, base)
    code = report_signalled(base, out, signal.SIGKILL)
    assert subprocess.run([sys.executable, "-c", code], timeout=300).returncode == -signal.SIGKILL
    left = sorted(p.name for p in out.iterdir() if p.name.endswith(".tmp"))
    assert [re.sub(r"\.\w+\.tmp$", "", name) for name in left] == [
        ".clean_accuracy.csv", ".data_efficiency.csv", ".robust_accuracy.csv"]
    # files of another program stay, and a folder named like a report's temporary file is passed over
    for name in (".notes.tmp", ".notes.md.backup.tmp"):
        (out / name).write_text("mine")
    (out / ".tables.md.abcd1234.tmp").mkdir()
    report(base, out, draw=False)
    assert sorted(p.name for p in out.iterdir() if p.name.endswith(".tmp")) == [
        ".notes.md.backup.tmp", ".notes.tmp", ".tables.md.abcd1234.tmp"]


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full, a device that is always full")
def test_a_stdout_on_a_full_disk_is_named(study, tmp_path):
    """A script's JSON line to a stdout on a full disk (a cluster job's log) said 'could not write a
    file': which one, when the report's own files were written?"""
    with open("/dev/full", "w") as full:
        proc = subprocess.run([sys.executable, str(REPO / "report.py"), "--base_dir", str(study), "--out",
                               str(tmp_path / "out"), "--no_figures"], stdout=full, stderr=subprocess.PIPE,
                              text=True, timeout=300)
    assert (proc.returncode, proc.stderr) == (2, "error: could not write standard output: No space left on "
                                                 "device\n")
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["trained"] > 0  # the report is kept
    # any line on stdout, not only the last (a sweep's plan, unbuffered as many jobs run Python)
    with open("/dev/full", "w") as full:
        proc = subprocess.run([sys.executable, str(REPO / "sweep.py"), "--dry_run", "--base_dir", str(study)],
                              stdout=full, stderr=subprocess.PIPE, text=True, timeout=300,
                              env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert (proc.returncode, proc.stderr) == (2, "error: could not write standard output: No space left on "
                                                 "device\n")


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states from /proc")
def test_a_killed_reports_workers_end_with_it(tmp_path):
    """A report killed (SIGKILL, the OOM killer; SIGTERM before it was caught) left its worker
    processes waiting for work forever, ~100 MB each, with its stdout open: a shell's
    `$(timeout 60 python report.py ...)` never returned."""
    code = textwrap.dedent(f"""
        import multiprocessing, os, signal, sys
        sys.path.insert(0, {str(REPO)!r})
        import report
        report.cores = lambda: range(2)
        with report.in_workers(2, 2, 1, chunksize=1) as pool_map:
            list(pool_map(abs, [1, 2]))
            print(*(p.pid for p in multiprocessing.active_children()), flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    with open(tmp_path / "stdout", "w+") as stdout:  # not a pipe: a worker left holding it would hang this
        assert subprocess.run([sys.executable, "-c", code], stdout=stdout, timeout=300).returncode == -9
        stdout.seek(0)
        workers = [int(pid) for pid in stdout.read().split()]

    def alive(pid):  # a worker ended but not reaped (no init to reap it in a container) is a zombie
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except FileNotFoundError:
            return False
    assert workers
    try:
        deadline = time.monotonic() + 30
        while any(map(alive, workers)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(map(alive, workers))
    finally:
        for pid in filter(alive, workers):
            os.kill(pid, signal.SIGKILL)


def test_a_folder_in_the_way_of_a_report_file_leaves_the_earlier_report(study, tmp_path, capsys):
    """A folder named runs.csv in --out failed the report at its rename, once the CSVs renamed
    before it had replaced the earlier report's: new CSVs beside the earlier tables.md and summary.json."""
    from utils.errors import call_cli
    base, out = tmp_path / "runs", tmp_path / "report"
    shutil.copytree(study, base)
    report(base, out, draw=False)
    (out / "runs.csv").unlink()
    (out / "runs.csv").mkdir()
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    make_run(base, "category", 4, test_acc=0.9, valid_acc=0.9)  # another seed: every table changes
    assert call_cli(report_main, ["--base_dir", str(base), "--out", str(out), "--no_figures"]) == 2
    assert capsys.readouterr().err == f"error: cannot use {out / 'runs.csv'}: Is a directory\n"
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before  # no temporary file
    assert (out / "runs.csv").is_dir()


def test_an_out_folder_name_too_long_is_refused_before_the_runs_are_read(study, tmp_path):
    """An --out with a folder name over NAME_MAX read every run, then failed with 'File name too
    long' and left the folders above it made and empty."""
    out = tmp_path / "new" / ("o" * 256)
    proc = run_script("report.py", "--base_dir", study, "--out", out, "--no_figures", check=False)
    assert (proc.returncode, proc.stdout) == (2, "")
    assert proc.stderr == f"error: --out {out}: its folder name {'o' * 256} is 256 bytes, over the 255 a file name may have\n"
    assert not (tmp_path / "new").exists()


def test_another_programs_summary_json_is_no_earlier_report(study, tmp_path):
    """An --out holding another program's summary.json, whose "files" named the user's data.csv:
    the report replaced that summary.json and deleted data.csv as an earlier report's stale file."""
    out = tmp_path / "mine"
    out.mkdir()
    (out / "data.csv").write_text("mine")
    (out / "summary.json").write_text(json.dumps({"files": ["data.csv"]}))
    proc = run_script("report.py", "--base_dir", study, "--out", out, "--no_figures", check=False)
    assert (proc.returncode, proc.stdout) == (2, "")
    assert proc.stderr == (f"error: {out / 'summary.json'} is no report's summary.json (no expected_runs and "
                           "files); choose another --out, or remove it\n")
    assert sorted(p.name for p in out.iterdir()) == ["data.csv", "summary.json"]
    assert (out / "data.csv").read_text() == "mine"


def test_a_folder_named_summary_json_in_out_is_named_in_the_error(study, tmp_path, capsys):
    """A folder in --out where the report's summary.json goes: the error named the file by its
    descriptor's number ('error: cannot use 4: Is a directory'). A folder where another of its
    files goes is named likewise, and no file is written."""
    out = tmp_path / "out"
    (out / "summary.json").mkdir(parents=True)
    assert call_cli(report_main, ["--base_dir", str(study), "--out", str(out), "--no_figures"]) == 2
    assert capsys.readouterr() == ("", f"error: cannot use {out / 'summary.json'}: Is a directory\n")
    assert [p.name for p in out.iterdir()] == ["summary.json"]
    # one of the files it writes, renamed into place together: none is, and the error names it
    (out / "summary.json").rmdir()
    (out / "tables.md").mkdir()
    assert call_cli(report_main, ["--base_dir", str(study), "--out", str(out), "--no_figures"]) == 2
    assert capsys.readouterr() == ("", f"error: cannot use {out / 'tables.md'}: Is a directory\n")
    assert [p.name for p in out.iterdir()] == ["tables.md"]


def test_the_json_line_names_the_report_folder_absolute(study, tmp_path, monkeypatch, capsys):
    """A relative --out was printed as given: a notebook that ran report.py with another working
    directory (subprocess cwd=...) could not open it; through a link, its absolute form kept
    link/.., which read as text named another folder than the one written (after a link, '..' is
    its target's parent: a/ here)."""
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "a" / "b")
    monkeypatch.chdir(tmp_path)
    report_main(["--base_dir", study, "--out", "my report", "--no_figures"])
    line = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert line["out"] == str(tmp_path / "my report") and (tmp_path / "my report" / "tables.md").is_file()
    report_main(["--base_dir", study, "--out", "link/../my report", "--no_figures"])
    out = tmp_path / "a" / "my report"
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["out"] == str(out)
    assert (out / "tables.md").is_file()


def test_an_out_it_cannot_use_is_a_usage_error_in_process(study, tmp_path):
    """report() and report.main in a notebook: an --out that is a file, or a folder in one, was a
    FileExistsError ('File exists') or NotADirectoryError, not the UsageError with the command
    line's one line that train.main and attack.main raise for such a folder."""
    a_file = tmp_path / "a_file"
    a_file.write_text("mine")
    for out in (a_file, a_file / "report"):
        with pytest.raises(UsageError) as err:
            report(study, out, draw=False)
        assert str(err.value) == f"cannot use {a_file}: a file, not a folder"
        with pytest.raises(UsageError) as err:
            report_main(["--base_dir", study, "--out", out, "--no_figures"])
        assert str(err.value) == f"cannot use {a_file}: a file, not a folder"
    assert a_file.read_text() == "mine"


def test_label_noise_table(tmp_path):
    """Runs trained with --label_noise: a label x noise table, a CSV and summary rows; labels
    without noisy runs stay out of it."""
    base = tmp_path / "outputs"
    for label, accs in (("category", (0.6, 0.5, 0.3)), ("mcr2", (0.4, 0.35, 0.2))):
        for noise, acc in zip((0.0, 0.2, 0.4), accs):
            for seed in (1, 2):
                make_run(base, label, seed, test_acc=acc + 0.02 * (seed - 1), valid_acc=acc, label_noise=noise)
    make_run(base, "speech", 1, test_acc=0.55, valid_acc=0.55)
    summary = report(base, tmp_path / "report", draw=False)
    markdown = (tmp_path / "report" / "tables.md").read_text()
    rows = table_rows(markdown, "## Label noise")
    assert rows["label"] == ["noise 0", "noise 0.2", "noise 0.4"]
    assert rows["category"] == ["61.00 ± 1.41 (n=2)", "51.00 ± 1.41 (n=2)", "31.00 ± 1.41 (n=2)"]
    assert rows["mcr2"][2] == "21.00 ± 1.41 (n=2)" and "speech" not in rows
    csv_rows = read_csv(tmp_path / "report" / "label_noise.csv")
    assert [(r["label"], float(r["label_noise"])) for r in csv_rows][:3] == [
        ("category", 0.0), ("category", 0.2), ("category", 0.4)]
    assert float(csv_rows[2]["test_acc_mean"]) == pytest.approx(0.31)
    assert len(summary["label_noise"]) == 6 and "label_noise.csv" in summary["files"]
    # the clean-accuracy table keeps every run, noisy ones under their own name
    assert set(table_rows(markdown, "## Clean test accuracy")) >= {"category", "category_noise0.2", "speech"}


def test_a_grid_is_reported_from_where_its_sweep_trains(tmp_path):
    """--base_dir defaulted to ./outputs whatever the grid's --base_dir: its runs, trained
    elsewhere, were all "missing"; one --base_dir above them said so without a hint."""
    make_run(tmp_path / "runs" / "study", "category", 1, test_acc=0.5, valid_acc=0.5)
    grid = tmp_path / "grid.yaml"
    grid.write_text(f"labels: [category]\nseeds: [1]\nstages: [train]\nargs: --base_dir {tmp_path}/runs/study\n")
    result = last_json(run_script("report.py", "--grid", grid, "--out", tmp_path / "out", "--no_figures"))
    assert (result["runs"], result["trained"], result["missing"]) == (1, 1, 0)
    assert ": 1 run directory, 1 trained, 0 attacked;" in (tmp_path / "out" / "tables.md").read_text()  # not "directories"
    proc = run_script("report.py", "--grid", grid, "--base_dir", tmp_path / "runs", "--out", tmp_path / "out",
                      "--no_figures")
    assert last_json(proc)["missing"] == 1 and proc.stderr == (
        f"warning: no run directories under --base_dir {tmp_path / 'runs'}; the grid's sweep trains its runs "
        f"under {tmp_path}/runs/study (its --base_dir; leave out --base_dir to read them there)\n")


def test_a_grids_relative_base_dir_from_elsewhere_says_where_it_is_read(tmp_path, monkeypatch, capsys):
    """A grid file's relative --base_dir is read from the directory report.py runs in, as its sweep
    read it; run from another, the error named '--base_dir runs/study', a flag not given."""
    make_run(tmp_path / "runs" / "study", "category", 1, test_acc=0.5, valid_acc=0.5)
    grid = tmp_path / "grid.yaml"
    grid.write_text("labels: [category]\nseeds: [1]\nstages: [train]\nargs: --base_dir runs/study\n")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert call_cli(report_main, ["--grid", str(grid), "--out", "out", "--no_figures"]) == 2
    assert capsys.readouterr().err == (
        f"error: the grid's --base_dir runs/study is not a directory under {tmp_path}/elsewhere: a grid file's "
        "paths are relative to the directory its sweep runs in; run report.py there (once the sweep has "
        "trained a run), or pass --base_dir\n")
    monkeypatch.chdir(tmp_path)
    assert report_main(["--grid", str(grid), "--out", "out", "--no_figures"])["trained"] == 1


def test_a_grid_of_coarse_runs_expects_them_where_train_py_writes_them(tmp_path):
    """The grid's runs were keyed by the dataset alone: its coarse runs were looked for as fine
    ones (listed missing) and the fine ones held to the grid."""
    make_run(tmp_path / "runs", "category", 1, test_acc=0.5, valid_acc=0.5, dataset="cifar100_coarse")
    grid = tmp_path / "grid.yaml"
    grid.write_text("datasets: [cifar100]\nlabels: [category]\nlevels: [100]\nseeds: [1]\n"
                    "stages: [train]\nargs: --label_granularity coarse\ntrain_args: --epochs 4\n")
    summary = report(tmp_path / "runs", tmp_path / "out", grid, draw=False)
    assert summary["missing"] == [] and summary["incomplete"] == []


def test_a_grid_of_noisy_runs_expects_them_where_train_py_writes_them(tmp_path):
    """A grid with --label_noise in its args looked for model_{label}, not model_{label}_noise{R}:
    its finished runs were listed missing and not held to the grid's attack settings."""
    make_run(tmp_path / "runs", "category", 1, test_acc=0.5, valid_acc=0.5, label_noise=0.2)
    grid = tmp_path / "grid.yaml"
    grid.write_text("labels: [category]\nseeds: [1]\nargs: --label_noise 0.2 --attacks fgsm "
                    "--epsilons 8/255 --targeted no\ntrain_args: --epochs 4\n")
    summary = report(tmp_path / "runs", tmp_path / "out", grid, draw=False)
    assert summary["missing"] == []
    assert [(i["run"], i["reasons"]) for i in summary["incomplete"]] == [
        ("cifar10/resnet32/category_noise0.2/level100/seed1", ["no attack results"])]


def test_a_smoothed_run_of_an_older_train_py_is_no_plain_category_run(tmp_path):
    """Before model_category_smooth{S}, a --smoothing run was written to model_category: it was shown
    as the label category (alone, or winning a tie of flag sets, the plain seed left out)."""
    base = tmp_path / "runs"
    for seed, acc, smoothing, noise in ((1, 0.3, 0.1, 0.0), (2, 0.6, 0.0, 0.0), (1, 0.2, 0.05, 0.2)):
        run_dir = make_run(base, "category", seed, test_acc=acc, valid_acc=acc, label_noise=noise)
        (run_dir / "config.json").write_text(json.dumps({"flags": {"epochs": 4, "smoothing": smoothing}}))
    summary = report(base, tmp_path / "out", draw=False)
    assert [(r["label"], r["test_acc_mean"]) for r in summary["data_efficiency"]] == [("category", 0.6)]
    assert {i["run_dir"]: i["reasons"] for i in summary["incomplete"]} == {
        "cifar10/seed1/resnet32/model_category": [
            "left out of the tables: trained with --smoothing 0.1, so its directory is "
            "cifar10/seed1/resnet32/model_category_smooth0.1 (where train.py writes it now); move it there"],
        "cifar10/seed1/resnet32/model_category_noise0.2": [
            "left out of the tables: trained with --smoothing 0.05, so its directory is "
            "cifar10/seed1/resnet32/model_category_smooth0.05_noise0.2 (where train.py writes it now); "
            "move it there"]}


def test_a_run_copied_to_another_seeds_directory_is_left_out(tmp_path):
    """seed7 copied to seed10 (cp -r, a merge of two machines' outputs into the wrong folder): the
    one run was averaged twice, n=3 from two trainings, though config.json and results.json record
    --seed 7 and a sweep refuses the copy (train.py: 'trained with --seed 7')."""
    base = tmp_path / "runs"
    for seed, acc in ((7, 0.6), (8, 0.4)):
        run_dir = make_run(base, "category", seed, test_acc=acc, valid_acc=acc)
        flags = {"epochs": 4, "label": "category", "seed": seed}
        (run_dir / "config.json").write_text(json.dumps({"flags": flags}))
    shutil.copytree(base / "cifar10/seed7", base / "cifar10/seed10")
    summary = report(base, tmp_path / "out", draw=False)
    assert [(r["seeds"], r["test_acc_mean"]) for r in summary["data_efficiency"]] == [([7, 8], 0.5)]
    assert {i["run_dir"]: i["reasons"] for i in summary["incomplete"]} == {
        "cifar10/seed10/resnet32/model_category": ["left out of the tables: trained with --seed 7, not the seed "
                                                   "10 of its directory (a copy of another run?)"]}


def test_a_run_copied_to_another_level_model_or_labels_directory_is_left_out(tmp_path):
    """A level-100 speech run copied into less/cifar10/level25 (cp -r into the wrong folder), into
    resnet110/, model_random and model_speech_noise0.2: each was that row's one seed (the level-25
    cell 60.00 (n=1) from 4170 training images), though its flags record where train.py writes it
    and a sweep refuses it there. A smoothed category run in its own folder stays in."""
    base = tmp_path / "runs"
    run_dir = make_run(base, "speech", 7, test_acc=0.6, valid_acc=0.6)
    (run_dir / "config.json").write_text(json.dumps({"flags": {
        "epochs": 4, "label": "speech", "seed": 7, "model": "resnet32", "level": 100, "label_noise": 0.0}}))
    copies = ["less/cifar10/level25/seed7/resnet32/model_speech", "cifar10/seed7/resnet110/model_speech",
              "cifar10/seed7/resnet32/model_random", "cifar10/seed7/resnet32/model_speech_noise0.2"]
    for copy in copies:
        shutil.copytree(run_dir, base / copy)
    smoothed = make_run(base, "category", 7, test_acc=0.5, valid_acc=0.5)
    smoothed = smoothed.rename(smoothed.parent / "model_category_smooth0.1")
    (smoothed / "config.json").write_text(json.dumps({"flags": {
        "epochs": 4, "label": "category", "seed": 7, "model": "resnet32", "level": 100, "smoothing": 0.1}}))
    summary = report(base, tmp_path / "out", draw=False)
    assert [(r["model"], r["label"], r["level"], r["test_acc_mean"]) for r in summary["data_efficiency"]] == [
        ("resnet32", "category_smooth0.1", 100, 0.5), ("resnet32", "speech", 100, 0.6)]
    assert {i["run_dir"]: i["reasons"] for i in summary["incomplete"]} == {
        copies[0]: ["left out of the tables: trained with --level 100, not the level 25 of its directory "
                    "(a copy of another run?)"],
        copies[1]: ["left out of the tables: trained with --model resnet32, not the model resnet110 of its "
                    "directory (a copy of another run?)"],
        copies[2]: ["left out of the tables: trained with --label speech, not the label random of its "
                    "directory (a copy of another run?)"],
        copies[3]: ["left out of the tables: trained with --label speech, not the label speech_noise0.2 of "
                    "its directory (a copy of another run?)"]}


def test_coarse_runs_in_a_fine_folder_are_left_out(tmp_path):
    """cifar100_coarse/ merged into cifar100/ (cp -r, rsync of two machines' outputs): the two coarse
    seeds outvoted the fine one, which was left out as trained otherwise, and the row of cifar100
    showed their accuracy on 20 superclasses, though their config.json records --label_granularity
    coarse and train.py refuses them there."""
    base = tmp_path / "runs"
    for seed, acc, dataset in ((1, 0.2, "cifar100"), (2, 0.6, "cifar100_coarse"), (3, 0.8, "cifar100_coarse")):
        run_dir = make_run(base, "category", seed, test_acc=acc, valid_acc=acc, dataset=dataset)
        (run_dir / "config.json").write_text(json.dumps({"flags": {
            "epochs": 4, "label": "category", "seed": seed, "dataset": "cifar100",
            "label_granularity": "coarse" if dataset.endswith("_coarse") else "fine"}}))
    for seed in (2, 3):
        shutil.copytree(base / f"cifar100_coarse/seed{seed}", base / f"cifar100/seed{seed}")
    summary = report(base, tmp_path / "out", draw=False)
    assert [(r["dataset"], r["seeds"], r["test_acc_mean"]) for r in summary["data_efficiency"]] == [
        ("cifar100", [1], 0.2), ("cifar100_coarse", [2, 3], 0.7)]
    assert {i["run_dir"]: i["reasons"] for i in summary["incomplete"]} == {
        f"cifar100/seed{seed}/resnet32/model_category": [
            "left out of the tables: trained with --dataset cifar100 --label_granularity coarse, whose runs "
            "train.py writes under cifar100_coarse, not cifar100 (a copy of another run?)"] for seed in (2, 3)}


def test_grid_attack_settings_are_what_its_runs_must_have(tmp_path):
    """With --grid, a run must hold the attack settings the grid asks attack.py for: extra entries
    (an iterative or paper-protocol table run by hand) are fine, a missing one is listed, and a run
    outside the grid (a --label_noise run) needs no attack results."""
    base = tmp_path / "outputs"
    make_run(base, "category", 1, test_acc=0.6, valid_acc=0.6, clean_acc=0.6,
             attack=[entry("fgsm", 1 / 255, 0.5), entry("fgsm", EPS8, 0.2), entry("iterative", EPS8, 0.1),
                     entry("fgsm", 0.1, 0.3, protocol="paper")])
    make_run(base, "speech", 1, test_acc=0.5, valid_acc=0.5, clean_acc=0.5, attack=[entry("fgsm", EPS8, 0.3)])
    make_run(base, "category", 1, test_acc=0.4, valid_acc=0.4, label_noise=0.2)
    grid = tmp_path / "grid.yaml"
    grid.write_text("labels: [category, speech]\nseeds: [1]\nargs: --attacks fgsm --epsilons 1/255 8/255 "
                    "--targeted no\ntrain_args: --epochs 4\n")
    summary = report(base, tmp_path / "report", grid, draw=False)
    assert summary["missing"] == []
    assert [(i["run"], i["reasons"]) for i in summary["incomplete"]] == [
        ("cifar10/resnet32/speech/level100/seed1", ["attack results: 1 of 2 settings missing (fgsm untargeted 1/255)"])]


def test_a_run_without_its_examples_figure_is_incomplete_as_its_sweep_finds_it(tmp_path, capsys):
    """attack.py draws attack_examples.png after its last setting's entry: a job stopped in between
    left every entry without it. sweep.py attacked such a run again, report.py --grid counted it
    complete; both now follow one rule (`utils.grid.missing_figure`): not done where the grid draws
    a figure and the best checkpoint to draw it from is there."""
    import sweep
    base = tmp_path / "outputs"
    run_dir = make_run(base, "category", 1, test_acc=0.6, valid_acc=0.6, clean_acc=0.6,
                       attack=[entry("fgsm", EPS8, 0.2) | {"num_images": 1017}])
    best = run_dir / "category_seed1_resnet32_best_model.pth"
    best.write_bytes(b"best")
    os.utime(best, (0, 0))  # written before its attack results, as train.py and attack.py do
    grid = tmp_path / "grid.yaml"
    args = f"--attacks fgsm --epsilons 8/255 --targeted no --base_dir {base}"

    def both(examples=""):
        grid.write_text(f"labels: [category]\nseeds: [1]\nargs: {args} {examples}\nstages: [attack]\n")
        sweep.main(["--config", str(grid), "--dry_run"])
        [row] = [line for line in capsys.readouterr().out.splitlines() if line.startswith("0 ")]
        reasons = [i["reasons"] for i in report(base, tmp_path / "report", grid, draw=False)["incomplete"]]
        return row.split("  ")[-2], reasons
    assert both() == ("run: resume: no attack_examples.png (drawn, nothing attacked)", [[
        "attack results: every setting, but no attack_examples.png (its attack.py stopped before drawing it: "
        "attack the run again)"]])
    assert both("--examples 0") == ("skip: done (1 setting)", [])  # no figure asked
    (run_dir / "attack_examples.png").write_bytes(b"png")
    assert both() == ("skip: done (1 setting)", [])
    (run_dir / "attack_examples.png").unlink()
    best.unlink()  # a study copied back without its checkpoints
    assert both() == ("skip: done (1 setting)", [])


def test_runs_that_jobs_work_in_are_said_to_be_in_progress(tmp_path, capsys):
    """report.py, run again and again while a sweep's jobs train and attack, said of a run in its
    first epoch 'training not started, or stopped or failed in its first epoch', of one whose attack.py was
    drawing its figure after the last setting 'its attack.py stopped before drawing it: attack the
    run again', and its JSON line told a sweep at work from one stopped short of its runs in no
    way. The job that holds a run's lock names itself there (`utils.runs.run_holder`): such a run
    is in progress, named with its job, and counted as `running`; the record of a job killed
    outright names no one. The report reads the lock files without making or changing one."""
    import socket
    from contextlib import ExitStack
    from test_runs import SINCE, dead_pid, held_by
    base = tmp_path / "outputs"
    first = make_run(base, "category", 1, done_epochs=0)
    (first / "last_checkpoint.pth").unlink()  # in its first epoch: none yet
    second = make_run(base, "category", 2, done_epochs=2)
    fgsm = [entry("fgsm", EPS8, 0.2) | {"num_images": 1017}]
    attacked = make_run(base, "category", 3, test_acc=0.6, valid_acc=0.6, clean_acc=0.6, attack=fgsm)
    drawing = make_run(base, "category", 4, test_acc=0.6, valid_acc=0.6, clean_acc=0.6,
                       attack=fgsm + [entry("fgsm", 1 / 255, 0.4) | {"num_images": 1017}])
    for seed, run_dir in ((3, attacked), (4, drawing)):
        best = run_dir / f"category_seed{seed}_resnet32_best_model.pth"
        best.write_bytes(b"best")
        os.utime(best, (0, 0))  # written before its attack results
    killed = make_run(base, "category", 5, done_epochs=2)
    record = {"script": "train.py", "pid": dead_pid(), "host": socket.gethostname(), "slurm_job": None,
              "since": 1767369934}
    (killed / ".lock").write_text(json.dumps(record))
    grid = tmp_path / "grid.yaml"
    grid.write_text(f"labels: [category]\nseeds: [1, 2, 3, 4, 5]\nstages: [attack]\n"
                    f"args: --attacks fgsm --epsilons 1/255 8/255 --targeted no --base_dir {base}\n")
    with ExitStack() as jobs:
        pids = [jobs.enter_context(held_by(tmp_path, script, "run_lock", run_dir)).pid for script, run_dir in (
            ("train.py", first), ("train.py", second), ("attack.py", attacked), ("attack.py", drawing))]
        locks = {p: p.read_bytes() for p in base.rglob(".lock")}
        assert report_main(["--base_dir", str(base), "--out", str(tmp_path / "report"), "--grid", str(grid),
                            "--no_figures", "--workers", "1"])
        assert {p: p.read_bytes() for p in base.rglob(".lock")} == locks  # none made, none changed
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    by = [f"in progress by {script} (pid {pid} on {socket.gethostname()}, {SINCE}): "
          for script, pid in zip(("train.py", "train.py", "attack.py", "attack.py"), pids)]

    def written(run_dir):
        return f"files last written {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime((run_dir / 'metrics.jsonl').stat().st_mtime))}"
    assert [i["reasons"] for i in summary["incomplete"]] == [
        [by[0] + f"training, in its first epoch, {written(first)}"],
        [by[1] + f"training, 2 of 4 epochs logged, {written(second)}"],
        [by[2] + "attack results: 1 of 2 settings missing (fgsm untargeted 1/255)"],
        [by[3] + "attack results: every setting, but no attack_examples.png yet"],
        [f"training unfinished with 2 of 4 epochs logged, {written(killed)} (no results.json)"]]
    assert "5 incomplete (4 in progress), 0 missing" in (tmp_path / "report" / "tables.md").read_text()
    line = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert (line["incomplete"], line["running"], line["missing"]) == (5, 4, 0)


def test_paths_in_tables_md_keep_their_backticks(tmp_path):
    """A base folder named a`b ended tables.md's code span `.../a` early and left 'b`: ...' as
    text. A code span now takes a longer fence than any backtick run it holds (CommonMark)."""
    base = tmp_path / "a`b"
    make_run(base, "category", 1, test_acc=0.6, valid_acc=0.6)
    make_run(base, "speech", 1, done_epochs=2)  # incomplete: its directory is listed
    report(base, tmp_path / "report", draw=False)
    lines = (tmp_path / "report" / "tables.md").read_text().splitlines()
    assert lines[2].startswith(f"From ``{base}``: 2 run directories")
    assert any(line.startswith("- `cifar10/seed1/resnet32/model_speech`: training unfinished") for line in lines)
    assert [code_span(t) for t in ("a`b", "`x", "a``b`c", " a ", "plain")] == [
        "``a`b``", "`` `x ``", "```a``b`c```", "`  a  `", "`plain`"]


def test_a_missing_setting_names_its_eps_as_attack_py_labels_it(tmp_path):
    """--epsilons 1 was 'fgsm untargeted 255/255' in the incomplete runs' line, beside a table
    column headed 1 (attack.py's label), with a grid file and without."""
    base = tmp_path / "outputs"
    one = dict(entry("fgsm", 1.0, 0.0), eps_label="1")
    make_run(base, "category", 1, test_acc=0.6, valid_acc=0.6, clean_acc=0.6, attack=[entry("fgsm", EPS8, 0.2), one])
    make_run(base, "speech", 1, test_acc=0.5, valid_acc=0.5, clean_acc=0.5, attack=[entry("fgsm", EPS8, 0.3)])
    grid = tmp_path / "grid.yaml"
    grid.write_text("labels: [category, speech]\nseeds: [1]\nargs: --attacks fgsm --epsilons 8/255 1 "
                    "--targeted no\ntrain_args: --epochs 4\n")
    for grid_file in (grid, None):
        summary = report(base, tmp_path / "report", grid_file, draw=False)
        assert [i["reasons"] for i in summary["incomplete"]] == [["attack results: 1 of 2 settings missing "
                                                                  "(fgsm untargeted 1)"]]
        markdown = (tmp_path / "report" / "tables.md").read_text()
        assert table_rows(markdown, "fgsm, untargeted")["label"] == ["clean", "8/255", "1"]
        assert ("- `cifar10/seed1/resnet32/model_speech`: attack results: 1 of 2 settings missing (fgsm "
                "untargeted 1)\n") in markdown


def test_a_grids_setting_computed_otherwise_is_named_so(tmp_path):
    """A quick trial's attacks (50 images) stood in a grid report as plainly missing, though its
    robust tables showed them."""
    base = tmp_path / "outputs"
    trial = [dict(entry("fgsm", eps, 0.3), num_images=50) for eps in (1 / 255, EPS8)]
    make_run(base, "category", 1, test_acc=0.6, valid_acc=0.6, clean_acc=0.6, attack=trial)
    grid = tmp_path / "grid.yaml"
    grid.write_text("labels: [category]\nseeds: [1]\nargs: --attacks fgsm --epsilons 1/255 8/255 --targeted no\n"
                    "train_args: --epochs 4\n")
    summary = report(base, tmp_path / "report", grid, draw=False)
    assert [i["reasons"] for i in summary["incomplete"]] == [[
        "attack results: 2 of 2 settings missing, 2 of them computed with other steps, precision, "
        "images or seed (1017 images asked) (fgsm untargeted 1/255, fgsm untargeted 8/255)"]]


def test_malformed_run_files_are_listed_not_averaged(tmp_path):
    """Values that are no accuracy (NaN, a percentage, text, null) and entries or files of the
    wrong shape made report.py crash with a traceback or average them into the tables."""
    base = tmp_path / "runs"
    make_run(base, "category", 1, test_acc=0.6, valid_acc=0.6, clean_acc=0.6,
             attack=[entry("fgsm", EPS8, 0.2), entry("pgd", EPS8, 0.1)])
    bad_values = {2: "NaN", 3: '"0.61"', 4: "61.0", 5: "null"}
    for seed, value in bad_values.items():
        # seed 2's attack results count in no table either: its training's outcome is not known
        run_dir = make_run(base, "category", seed, test_acc=0.5, valid_acc=0.5, clean_acc=0.5,
                           attack=[entry("pgd", EPS8, 0.9)] if seed == 2 else None)
        text = (run_dir / "results.json").read_text()
        (run_dir / "results.json").write_text(text.replace('"test_acc": 0.5', f'"test_acc": {value}'))
    run_dir = make_run(base, "category", 6, test_acc=0.7, valid_acc=0.7, clean_acc=0.7,
                       attack=[entry("fgsm", EPS8, 0.3), entry("pgd", EPS8, 0.2)])
    results = json.loads((run_dir / "attack_results.json").read_text())
    results["entries"][1]["robust_acc"] = float("nan")
    results["entries"] += [{"eps": 0.1}, 5]  # 5: no entry at all, as a hand edit may leave
    for field, value in (("step_size", "x"), ("num_images", "100"), ("restarts", [1]), ("eps_label", 5)):
        results["entries"].append(dict(entry("fgsm", EPS8, 0.3), **{field: value}))
    (run_dir / "attack_results.json").write_text(json.dumps(results))
    (run_dir / "config.json").write_text("[1]")
    (run_dir / "metrics.jsonl").write_text("[1]\n2\n")
    make_run(base, "category", 8, test_acc=0.9, valid_acc=90.0)  # a percentage: its test_acc is not trusted
    summary = report(base, tmp_path / "out", draw=False)
    markdown = (tmp_path / "out" / "tables.md").read_text()
    assert table_rows(markdown, "### cifar10 (level 100")["category"] == ["65.00 ± 7.07 (n=2)"]
    pgd = table_rows(markdown, "### cifar10, resnet32, level 100: pgd, untargeted")
    assert pgd["category"] == ["60.00 (n=1)", "10.00 (n=1)"]
    incomplete = {i["run"].split("/")[-1]: i["reasons"] for i in summary["incomplete"]}
    for seed in bad_values:
        assert incomplete[f"seed{seed}"] == ["results.json is not valid JSON or has no test_acc in [0, 1]"]
    assert incomplete["seed8"] == ["results.json has a valid_acc outside [0, 1]"]
    assert incomplete["seed6"][:2] == [
        "config.json is not valid JSON or has no flags",
        "attack_results.json: 7 malformed entries left out (without an attack, targeted, eps >= 0 or a "
        "robust_acc in [0, 1])"]
    run_dir = make_run(base, "category", 7, test_acc=0.6, valid_acc=0.6)
    text = (run_dir / "results.json").read_text()
    (run_dir / "results.json").write_text(text.replace('"epochs": 4', '"epochs": "x"')
                                          .replace('"train_images": 4170', '"train_images": [1]'))
    report(base, tmp_path / "out2", draw=False)  # shown as unknown, not a traceback
    assert "### cifar10 (level 100: 4170 training images, 4 epochs)" in (tmp_path / "out2" / "tables.md").read_text()


def test_a_fifo_in_place_of_a_run_file_is_reported_not_waited_on(tmp_path):
    """A FIFO named attack_results.json or metrics.jsonl is read as unreadable: report.py (and the
    sweep's dry run, through the same readers) waited on it for a writer that never came. read_json,
    train.py's and attack.py's reader, raises the OSError they end on with a one-line error."""
    from utils.grid import read_json_or_none, read_lines
    from utils.runs import read_json
    base = tmp_path / "runs"
    make_run(base, "category", 1, test_acc=0.6, valid_acc=0.6, clean_acc=0.6, attack=[entry("fgsm", EPS8, 0.2)])
    run_dir = make_run(base, "category", 2, test_acc=0.5, valid_acc=0.5, clean_acc=0.5,
                       attack=[entry("fgsm", EPS8, 0.4)])
    for name in ("attack_results.json", "metrics.jsonl"):
        (run_dir / name).unlink()
        os.mkfifo(run_dir / name)
    proc = run_script("report.py", "--base_dir", base, "--out", tmp_path / "out", "--no_figures", timeout=300)
    assert (last_json(proc)["attacked"], last_json(proc)["incomplete"]) == (1, 1)
    markdown = (tmp_path / "out" / "tables.md").read_text()
    # not "is not valid JSON", as a file to delete: another user's of mode 0600 says "(Permission denied)"
    assert ("- `cifar10/seed2/resnet32/model_category`: attack_results.json cannot be read (not a regular "
            "file)") in markdown
    assert table_rows(markdown, "### cifar10 (level 100")["category"] == ["55.00 ± 7.07 (n=2)"]
    assert read_json_or_none(run_dir / "attack_results.json") is None and read_lines(run_dir / "metrics.jsonl") == []
    with pytest.raises(OSError, match="not a regular file"):
        read_json(run_dir / "attack_results.json")


def test_run_files_nested_too_deeply_are_bad_files_not_tracebacks(tmp_path, capsys):
    """A run folder from elsewhere whose results.json, config.json, attack_results.json or
    metrics.jsonl nests arrays deeper than Python's recursion limit: json.loads raised a
    RecursionError, a traceback (exit 1) in report.py, sweep.py, train.py and attack.py. Now such a
    file is one that is not valid JSON, as any other: report.py leaves the run out saying so, and
    read_json (train.py's and attack.py's reader) is a one-line error that names it."""
    from utils.grid import read_json_or_none, read_lines
    from utils.runs import read_json
    base = tmp_path / "runs"
    make_run(base, "category", 1, test_acc=0.6, valid_acc=0.6, clean_acc=0.6, attack=[entry("fgsm", EPS8, 0.2)])
    run_dir = make_run(base, "category", 2, test_acc=0.5, valid_acc=0.5, clean_acc=0.5,
                       attack=[entry("fgsm", EPS8, 0.4)])
    deep = "[" * 100000 + "]" * 100000
    for name in ("results.json", "config.json", "attack_results.json", "metrics.jsonl"):
        (run_dir / name).write_text(deep + "\n")
    summary = report(base, tmp_path / "out", draw=False)
    assert [i["reasons"] for i in summary["incomplete"]] == [[
        "config.json is not valid JSON or has no flags", "results.json is not valid JSON or has no test_acc in [0, 1]",
        "attack_results.json is not valid JSON or has no entries"]]
    assert read_json_or_none(run_dir / "config.json") is None and read_lines(run_dir / "metrics.jsonl") == [None]
    with pytest.raises(UsageError) as refused:
        read_json(run_dir / "results.json")
    assert str(refused.value) == (f"{run_dir / 'results.json'} is not valid JSON (nested too deeply); delete it "
                                  "to redo that step")


def test_run_files_holding_a_number_python_will_not_convert_are_bad_files_not_tracebacks(tmp_path):
    """A run folder from elsewhere whose results.json or confusion.json holds a whole number of
    over 4300 digits, which json.loads refuses with a ValueError of its own (no JSONDecodeError):
    report.py stopped with a traceback, and train.py's reader likewise. Now such a file is one that
    is not valid JSON, as any other."""
    from utils.runs import read_json
    base, huge = tmp_path / "runs", "1" * 5000
    make_run(base, "category", 1, test_acc=0.6, valid_acc=0.6)
    run_dir = make_run(base, "category", 2, test_acc=0.5, valid_acc=0.5)
    (make_run(base, "speech", 1, test_acc=0.5, valid_acc=0.5) / "confusion.json").write_text(
        f'{{"classes": ["a", "b"], "test": [[{huge}, 0], [0, 1]], "valid": null}}')
    (run_dir / "results.json").write_text(f'{{"test_acc": 0.5, "epochs": {huge}}}')
    summary = report(base, tmp_path / "out", draw=False)
    assert [i["reasons"] for i in summary["incomplete"]] == [["results.json is not valid JSON or has no test_acc "
                                                              "in [0, 1]"]]
    assert [u["reason"] for u in summary["class_accuracy_unmeasured"]] == [
        "no confusion.json (trained by a labelrep before train.py wrote one)",
        "confusion.json is not valid JSON or has no test counts of its classes (C names, C rows of C counts)"]
    with pytest.raises(UsageError) as refused:
        read_json(run_dir / "results.json")
    assert str(refused.value) == (f"{run_dir / 'results.json'} is not valid JSON (Exceeds the limit (4300 digits) "
                                  "for integer string conversion: value has 5000 digits); delete it to redo that step")


def test_a_run_file_larger_than_labelrep_writes_is_not_read(tmp_path, monkeypatch):
    """A run folder from elsewhere whose results.json held 200 MB (valid JSON, a list of junk beside the
    numbers): report.py took 1.8 GB and 9 s to read it, and a few of 1 GB, its workers the machine's
    memory. A file over READ_LIMIT (64 MiB; here 1 MiB) is not read: the readers of report.py and a
    sweep say it cannot be read and why, train.py's and attack.py's error line likewise."""
    from utils import runs
    from utils.errors import os_error_text
    from utils.grid import read_json_file, unreadable
    monkeypatch.setattr(runs, "READ_LIMIT", 1 << 20, raising=False)
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"test_acc": 0.5, "junk": "x" * (1 << 20)}))
    size = path.stat().st_size
    there, value = read_json_file(path)
    assert there and unreadable("results.json", value) == (f"results.json cannot be read ({size} bytes, over "
                                                           "the 1 MiB of any file labelrep writes; not read)")
    with pytest.raises(OSError) as refused:
        runs.read_json(path)
    assert os_error_text(refused.value) == (f"cannot use {path}: {size} bytes, over the 1 MiB of any file "
                                            "labelrep writes; not read")


def test_unfinished_and_broken_runs_are_named_where_the_report_is_read(tmp_path):
    """The problem notes of runs that never trained, stopped, or hold no readable attack results,
    with the last error line of the sweep's train.log, in tables.md, runs.csv and the JSON line."""
    base = tmp_path / "runs"
    make_run(base, "category", 1, test_acc=0.6, valid_acc=0.6, clean_acc=0.6,
             attack=[entry("fgsm", EPS8, 0.2)])
    never = run_directory(base, "cifar10", 100, 2, "resnet32", "category", 0.0)
    never.mkdir(parents=True)
    (never / "config.json").write_text(json.dumps({"flags": {"epochs": 4, "label": "category"}}))
    (never / "train.log").write_text("=== 2026-01-02T10:00:00 CUDA_VISIBLE_DEVICES=0: python train.py\n"
                                     "error: CUDA out of memory\n")
    stopped = make_run(base, "category", 3, done_epochs=2)
    # its error line quotes a path of Markdown markup, which shows as it is ('*run*' was in italics)
    (stopped / "train.log").write_text("error: an earlier job's\nepoch 2/4\nerror: disk full: /scratch/*run*/<x>\nmore\n")
    unknown = make_run(base, "category", 4, done_epochs=2)
    (unknown / "config.json").unlink()  # its --epochs not known: no 'of N'
    (unknown / "last_checkpoint.pth").unlink()
    for seed, text in ((5, '{"entries": [{"attack": "fgsm",'), (6, '{"entries": {}}')):
        run_dir = make_run(base, "category", seed, test_acc=0.5, valid_acc=0.5)
        (run_dir / "attack_results.json").write_text(text)
    for run_dir in (never, stopped, unknown):  # stopped, not training now: its last write's time says
        for path in run_dir.iterdir():
            os.utime(path, (1_764_000_000,) * 2)  # 2025-11-24 16:00 UTC
    proc = run_script("report.py", "--base_dir", base, "--out", tmp_path / "out", "--no_figures")
    assert (last_json(proc)["incomplete"], last_json(proc)["missing"]) == (5, 0)
    markdown = (tmp_path / "out" / "tables.md").read_text()
    listed = markdown.split("## Incomplete runs\n\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert listed == [
        "- `cifar10/seed2/resnet32/model_category`: training not started, or stopped or failed in its first epoch "
        "(files last written 2025-11-24 16:00 UTC); "
        "train.log: error: CUDA out of memory",
        "- `cifar10/seed3/resnet32/model_category`: training unfinished with 2 of 4 epochs logged, files last "
        "written 2025-11-24 16:00 UTC (no results.json); train.log: error: disk full: /scratch/\\*run\\*/\\<x>",
        "- `cifar10/seed4/resnet32/model_category`: training unfinished with 2 epochs logged, files last written "
        "2025-11-24 16:00 UTC (no results.json)",
        "- `cifar10/seed5/resnet32/model_category`: attack_results.json is not valid JSON or has no entries",
        "- `cifar10/seed6/resnet32/model_category`: attack_results.json is not valid JSON or has no entries"]
    assert table_rows(markdown, "### cifar10 (level 100")["category"] == ["53.33 ± 5.77 (n=3)"]
    status = {r["seed"]: (r["status"], r["epochs_done"]) for r in read_csv(tmp_path / "out" / "runs.csv")}
    assert status == {"1": ("complete", "4"), "2": ("incomplete", "0"), "3": ("incomplete", "2"),
                      "4": ("incomplete", "2"), "5": ("incomplete", "4"), "6": ("incomplete", "4")}


def test_a_failed_attack_is_named_with_its_attack_log_error(tmp_path):
    """A sweep whose attack.py failed on a run (a corrupt checkpoint, out of memory) left it listed
    as 'no attack results', or as missing settings where it failed part way, without the error line
    its attack.log holds, which the report quotes from a train.log. It is quoted now: the last
    attempt's, and none while a job attacks the run (its log's error is an earlier attempt's)."""
    from test_runs import held_by
    base = tmp_path / "outputs"
    fgsm = [entry("fgsm", EPS8, 0.2) | {"num_images": 1017}, entry("fgsm", EPS1, 0.4) | {"num_images": 1017}]
    make_run(base, "category", 1, test_acc=0.6, valid_acc=0.6, clean_acc=0.6, attack=fgsm)
    logs = {2: "=== 2026-01-02T10:00:00 CUDA_VISIBLE_DEVICES=0: python attack.py\nerror: CUDA out of memory\n",
            3: "error: an earlier attempt's\n=== 2026-01-02T11:00:00 python attack.py\n[1/2] fgsm untargeted eps "
               "8/255: robust_acc 20.00%\nerror: disk full\n",
            4: "error: an earlier attempt's\n=== 2026-01-02T11:00:00 python attack.py\n",  # killed: no error
            5: "error: an earlier attempt's\n"}
    runs = {seed: make_run(base, "category", seed, test_acc=0.6, valid_acc=0.6, clean_acc=0.6,
                           attack=fgsm[:1] if seed == 3 else None) for seed in logs}
    for seed, text in logs.items():
        (runs[seed] / "attack.log").write_text(text)
    grid = tmp_path / "grid.yaml"
    grid.write_text(f"labels: [category]\nseeds: [1, 2, 3, 4, 5]\nstages: [attack]\n"
                    f"args: --attacks fgsm --epsilons 1/255 8/255 --targeted no --base_dir {base}\n")
    with held_by(tmp_path, "attack.py", "run_lock", runs[5]):
        summary = report(base, tmp_path / "out", grid, draw=False)
    reasons = {i["run"][-5:]: (i["running"], i["reasons"]) for i in summary["incomplete"]}
    job, running = reasons.pop("seed5")
    assert job.startswith("attack.py (pid ") and running == [f"in progress by {job}: no attack results yet"]
    assert reasons == {
        "seed2": (None, ["no attack results; attack.log: error: CUDA out of memory"]),
        "seed3": (None, ["attack results: 1 of 2 settings missing (fgsm untargeted 1/255); attack.log: error: "
                         "disk full"]),
        "seed4": (None, ["no attack results"])}
    assert ("- `cifar10/seed2/resnet32/model_category`: no attack results; attack.log: error: CUDA out of "
            "memory\n") in (tmp_path / "out" / "tables.md").read_text()


def test_two_directories_of_one_run_are_named_not_merged(tmp_path):
    """seed07 beside seed7, or model_speech_noise0.20 beside model_speech_noise0.2, are the same
    run written twice: they were averaged as two seeds, or one hid the other."""
    base = tmp_path / "runs"
    make_run(base, "category", 7, test_acc=0.4, valid_acc=0.4)
    copy = make_run(base, "category", 8, test_acc=0.6, valid_acc=0.6)
    (base / "cifar10" / "seed07" / "resnet32").mkdir(parents=True)
    copy.rename(base / "cifar10" / "seed07" / "resnet32" / "model_category")
    make_run(base, "speech", 7, test_acc=0.5, valid_acc=0.5)
    make_run(base, "speech", 7, test_acc=0.3, valid_acc=0.3, label_noise=0.2)
    copy = make_run(base, "speech", 9, test_acc=0.35, valid_acc=0.35, label_noise=0.2)
    copy.rename(base / "cifar10" / "seed7" / "resnet32" / "model_speech_noise0.20")
    summary = report(base, tmp_path / "out", draw=False)
    markdown = (tmp_path / "out" / "tables.md").read_text()
    clean = table_rows(markdown, "### cifar10 (level 100")
    assert "category" not in clean and clean["speech"] == ["50.00 (n=1)"]
    assert "speech_noise0.2" not in clean and summary["label_noise"] == []
    reasons = {i["run_dir"]: i["reasons"] for i in summary["incomplete"]}
    assert reasons["cifar10/seed07/resnet32/model_category"] == [
        "left out of the tables: the same run as cifar10/seed7/resnet32/model_category"]
    assert reasons["cifar10/seed7/resnet32/model_speech_noise0.20"] == [
        "left out of the tables: the same run as cifar10/seed7/resnet32/model_speech_noise0.2"]


def test_unfinished_seeds_do_not_outvote_a_finished_one(tmp_path):
    base = tmp_path / "runs"
    make_run(base, "category", 1, test_acc=0.6, valid_acc=0.6, epochs=30)
    for seed in (2, 3):
        make_run(base, "category", seed, epochs=50, done_epochs=3)
    summary = report(base, tmp_path / "out", draw=False)
    assert table_rows((tmp_path / "out" / "tables.md").read_text(),
                      "### cifar10 (level 100")["category"] == ["60.00 (n=1)"]
    reasons = {i["run"].split("/")[-1]: i["reasons"] for i in summary["incomplete"]}
    assert reasons["seed2"][-1] == "left out of the tables: trained with --epochs 50 (the other seeds: 30)"


def test_each_statistic_counts_its_own_seeds(tmp_path):
    """A target success rate over two seeds (the third attacked no image: no rate) was shown with
    the robust accuracy's n=3."""
    base = tmp_path / "runs"
    for seed, success in ((1, 0.5), (2, 0.7), (3, None)):
        make_run(base, "category", seed, test_acc=0.5, valid_acc=0.5, clean_acc=0.5,
                 attack=[entry("fgsm", EPS8, 0.1 * seed, targeted=True, success=success)])
    summary = report(base, tmp_path / "out", draw=False)
    markdown = (tmp_path / "out" / "tables.md").read_text()
    heading = "### cifar10, resnet32, level 100: fgsm, targeted"
    assert table_rows(markdown, heading)["category"] == ["50.00 ± 0.00 (n=3)", "20.00 ± 10.00 (n=3)"]
    assert table_rows(markdown.split(heading, 1)[1], "Targeted attack success rate")["category"] == [
        "60.00 ± 14.14 (n=2)"]
    assert summary["robust_accuracy"][0]["target_success_n"] == 2
    row = read_csv(tmp_path / "out" / "robust_accuracy.csv")[0]
    assert (row["n"], row["target_success_n"], row["clean_acc_n"]) == ("3", "2", "3")


def test_paper_protocol_budgets_are_in_normalised_units(tmp_path):
    """They were written as pixel budgets: eps 0.3 of the paper's protocol as 76.5/255."""
    base = tmp_path / "runs"
    paper = dict(entry("fgsm", 0.3, 0.1, protocol="paper"), eps_label="0.3")
    make_run(base, "category", 1, test_acc=0.6, valid_acc=0.6, clean_acc=0.6, attack=[paper])
    make_run(base, "category", 2, test_acc=0.6, valid_acc=0.6, clean_acc=0.6,
             attack=[entry("fgsm", EPS8, 0.2)])
    summary = report(base, tmp_path / "out", draw=False)
    reasons = {i["run"].split("/")[-1]: i["reasons"] for i in summary["incomplete"]}
    assert reasons["seed2"] == ["attack results: 1 of 2 settings missing (fgsm untargeted 0.3 (paper protocol))"]
    table = table_rows((tmp_path / "out" / "tables.md").read_text(), "fgsm, untargeted, paper protocol")
    assert table["label"] == ["clean", "0.3"]


def test_two_reports_into_one_out_take_turns(tmp_path, monkeypatch):
    """Two reports writing the same --out at once: each removed the files of the summary.json it
    had read that it did not write, so one without label noise runs, reading the report before
    both and finishing last, deleted the label_noise.csv the other had written since and its
    summary.json lists. Now the second report waits for the first, then replaces its files, and
    --out holds no lock file after. Threads stand for the processes (flock locks an open file);
    hooks order them: the second report reads summary.json after the first has, and writes while
    the first is about to remove stale files."""
    import fcntl
    import threading
    import report as report_module
    noisy, plain, out = tmp_path / "noisy", tmp_path / "plain", tmp_path / "out"
    for base in (noisy, plain):
        make_run(base, "category", 1, test_acc=0.6, valid_acc=0.6)
    make_run(noisy, "category", 1, test_acc=0.5, valid_acc=0.5, label_noise=0.2)
    report(noisy, out, draw=False)  # the report before both: with label_noise.csv
    events = {name: threading.Event() for name in ("plain_read", "noisy_turn", "plain_written", "noisy_done")}
    real_read, real_remove, real_flock = (report_module.read_json_file, report_module.remove_stale,
                                          fcntl.flock)

    def wait(event):
        assert events[event].wait(60), f"no {event}"

    def read_json_file(path, *limit):
        value = real_read(path, *limit)
        job = threading.current_thread().name
        if path == out / "summary.json" and job == "plain":
            events["plain_read"].set()
            wait("noisy_turn")
        elif path == out / "summary.json" and job == "noisy":
            events["noisy_turn"].set()
            wait("plain_written")
        return value

    def remove_stale(*args, **kwargs):
        if threading.current_thread().name == "plain":
            events["plain_written"].set()
            wait("noisy_done")
        real_remove(*args, **kwargs)
        if threading.current_thread().name == "noisy":
            events["noisy_done"].set()

    def flock(file, operation):
        if threading.current_thread().name == "noisy" and events["plain_read"].is_set():
            events["noisy_turn"].set()  # waits for the plain report's turn to end
            events["noisy_done"].set()
        real_flock(file, operation)
    monkeypatch.setattr(report_module, "read_json_file", read_json_file)
    monkeypatch.setattr(report_module, "remove_stale", remove_stale)
    monkeypatch.setattr(fcntl, "flock", flock)
    summaries = {}
    jobs = [threading.Thread(target=lambda base=base: summaries.update({base.name: report(base, out, draw=False)}),
                             name=base.name) for base in (plain, noisy)]
    jobs[0].start()
    wait("plain_read")
    jobs[1].start()
    for job in jobs:
        job.join(60)
    assert summaries.keys() == {"plain", "noisy"}
    last = json.loads((out / "summary.json").read_text())
    assert last == json.loads(json.dumps(summaries["noisy"]))  # the report that waited, whole
    assert sorted(p.name for p in out.iterdir()) == sorted(last["files"] + ["summary.json"])
    assert "label_noise.csv" in last["files"]


def test_an_earlier_summary_json_over_the_run_files_read_limit_is_read(tmp_path, monkeypatch):
    """A report's summary.json grows with its runs (34 MB for 600 attacked in 42 settings, 80 MB
    for 1,800), and the next report into the same --out read it with the limit of a run's files
    (64 MiB; here 1 MiB): past about 1,400 such runs it stopped, 'cannot use .../summary.json: ...
    bytes, over the 64 MiB of any file labelrep writes; not read'. It is read, and its stale files
    go."""
    from utils import runs
    monkeypatch.setattr(runs, "READ_LIMIT", 1 << 20, raising=False)
    base, out = tmp_path / "runs", tmp_path / "out"
    make_run(base, "category", 1, test_acc=0.6, valid_acc=0.6)
    noisy = make_run(base, "category", 1, test_acc=0.5, valid_acc=0.5, label_noise=0.2)
    report(base, out, draw=False)
    earlier = json.loads((out / "summary.json").read_text())
    earlier["runs"] *= 1 + (1 << 20) // len(json.dumps(earlier["runs"]))  # as a report of many runs
    (out / "summary.json").write_text(json.dumps(earlier, indent=1))
    assert (out / "summary.json").stat().st_size > 1 << 20 and "label_noise.csv" in earlier["files"]
    shutil.rmtree(noisy)
    summary = report(base, out, draw=False)
    assert "label_noise.csv" not in summary["files"] and not (out / "label_noise.csv").exists()
    assert json.loads((out / "summary.json").read_text())["files"] == summary["files"]


def test_a_report_of_no_runs_is_an_error_and_old_files_go(tmp_path):
    """A mistyped --base_dir wrote an empty report beside the old one's figures; a rerun after
    runs were removed kept their figures and label_noise.csv beside the new tables."""
    base, out = tmp_path / "runs", tmp_path / "out"
    proc = run_script("report.py", "--base_dir", tmp_path, "--out", out, check=False)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith(f"error: no run directories under {tmp_path} ") and not out.exists()
    for noise in (0.0, 0.2):
        make_run(base, "category", 1, test_acc=0.6, valid_acc=0.6, done_epochs=4, label_noise=noise)
    make_run(base, "category", 1, level=25, test_acc=0.5, valid_acc=0.5)
    first = report(base, out)
    assert {"label_noise.csv", "levels_cifar10_resnet32.png"} <= set(first["files"])
    (out / "notes.txt").write_text("mine")
    for rel in ("cifar10/seed1/resnet32/model_category_noise0.2", "less"):
        shutil.rmtree(base / rel)
    second = report(base, out)
    assert sorted(p.name for p in out.iterdir()) == sorted(second["files"] + ["notes.txt", "summary.json"])
    assert not (out / "label_noise.csv").exists() and not (out / "levels_cifar10_resnet32.png").exists()
    figures = {p.name for p in out.glob("*.png")}
    assert figures and not report(base, out, draw=False)["files"][-1].endswith(".png")
    assert {p.name for p in out.glob("*.png")} == figures  # --no_figures leaves the figures alone


def test_figures_a_no_figures_report_kept_go_with_the_next_report(tmp_path):
    """A report, then one with --no_figures (which keeps the figures), then a full one after runs
    were removed: the first report's figures of those runs stayed beside the new tables, for the
    --no_figures report's summary.json no longer listed them."""
    base, out = tmp_path / "runs", tmp_path / "out"
    make_run(base, "category", 1, test_acc=0.6, valid_acc=0.6)
    make_run(base, "category", 1, level=25, test_acc=0.5, valid_acc=0.5)
    assert "levels_cifar10_resnet32.png" in report(base, out)["files"]
    kept = run_script("report.py", "--base_dir", base, "--out", out, "--no_figures")
    assert (out / "levels_cifar10_resnet32.png").exists() and kept.returncode == 0
    listed = json.loads((out / "summary.json").read_text())
    shutil.rmtree(base / "less")
    last = report(base, out)
    assert not (out / "levels_cifar10_resnet32.png").exists()
    assert sorted(p.name for p in out.glob("*.png")) == sorted(f for f in last["files"] if f.endswith(".png"))
    assert "levels_cifar10_resnet32.png" in listed["kept_figures"] and last["kept_figures"] == []


@pytest.mark.parametrize("figure_format, header", [("pdf", b"%PDF-"), ("svg", b"<?xml")])
def test_a_vector_report_names_its_figures_as_the_png_ones_and_reruns_into_the_same_bytes(
        made, study, tmp_path, figure_format, header):
    """--figure_format pdf or svg (for a paper): the PNG report's figures, each of that format under
    the PNG's name with its extension, listed in summary.json. matplotlib writes when a PDF or SVG
    was made into it, and salts an SVG's ids at random: a rerun of the same report wrote other
    bytes, and a committed report changed at every rerun."""
    out, summary = made
    png = [name for name in summary["files"] if name.endswith(".png")]
    first, again = (report(study, tmp_path / name, figure_format=figure_format) for name in ("one", "two"))
    figures = [name for name in first["files"] if name.endswith(f".{figure_format}")]
    assert figures == [name.removesuffix(".png") + f".{figure_format}" for name in png] and len(figures) == 5
    assert first["files"] == [*summary["files"][:-len(png)], *figures]
    assert json.loads((tmp_path / "one" / "summary.json").read_text())["files"] == first["files"]
    assert sorted(p.name for p in (tmp_path / "one").iterdir()) == sorted([*first["files"], "summary.json"])
    assert again["files"] == first["files"]
    for name in [*first["files"], "summary.json"]:
        content = (tmp_path / "one" / name).read_bytes()
        assert content == (tmp_path / "two" / name).read_bytes(), name
        if name in figures:
            assert content.startswith(header) and b"CreationDate" not in content and b"dc:date" not in content


def test_latex_text_typesets_labels_titles_and_cells_as_they_read():
    """Every text of tables.tex goes through one escape: the committed study's labels, a --title's
    TeX specials, a cell's ±. Unescaped, an _ or a $ was an error, a % hid the rest of its line, an
    & split a cell, a < printed as ¡."""
    from utils.atomic import latex_text
    assert [latex_text(label) for label in ("bert_rescaled", "normal_dim=1000", "category_noise0.2",
                                            "uniform_gap=0")] == [
        r"bert\_rescaled", r"normal\_dim=1000", r"category\_noise0.2", r"uniform\_gap=0"]
    assert latex_text("58.41 ± 1.46 (n=3)") == r"58.41 $\pm$ 1.46 (n=3)"
    assert latex_text("R&D 100% #1 _x_ $5 {a} ~b ^c \\d") == (
        r"R\&D 100\% \#1 \_x\_ \$5 \{a\} \textasciitilde{}b \textasciicircum{}c \textbackslash{}d")
    assert latex_text("a<b>c|d[e]*f\ng") == r"a\textless{}b\textgreater{}c\textbar{}d{[}e{]}{*}f g"


def test_latex_text_keeps_the_fonts_ligatures_apart():
    """TeX's fonts join -- and --- into en and em dashes, '' into a closing quote and (T1) ,, into a
    low one, and print ` as an opening quote: a label two--dash typeset as two–dash, tick`s as
    tick‘s. A {} between the characters keeps them apart; a single hyphen, as in a folder's name,
    stays as it is."""
    from utils.atomic import latex_text
    assert latex_text("two--dash") == "two-{}-dash" and latex_text("a---b") == "a-{}-{}-b"
    assert latex_text("it''s a,,b") == "it'{}'s a,{},b" and latex_text("x-y 'q'") == "x-y 'q'"
    assert latex_text("tick`s") == r"tick\textasciigrave{}s"


def test_latex_writes_tables_md_tables_as_booktabs_tables(made, study, tmp_path):
    """--latex (for a paper): tables.tex beside tables.md, listed after it in summary.json, holding
    its tables in its order, each a float captioned with its section and heading; tables.md and the
    other files are the report's without it, and a rerun writes the same bytes."""
    out, summary = made
    assert not (out / "tables.tex").exists() and "tables.tex" not in summary["files"]
    first, again = (report(study, tmp_path / name, draw=False, latex=True) for name in ("one", "two"))
    assert first["files"] == ["tables.md", "tables.tex", *(n for n in summary["files"][1:] if n.endswith(".csv"))]
    for name in [*first["files"], "summary.json"]:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name
    assert (tmp_path / "one" / "tables.md").read_bytes() == (out / "tables.md").read_bytes()
    latex = (tmp_path / "one" / "tables.tex").read_text()
    assert latex.startswith("% Results: the tables of tables.md, written by report.py --latex.\n"
                            "% Needs \\usepackage{booktabs} (\\toprule, \\midrule, \\bottomrule).")
    assert "\n\\begin{table}[htbp]\n\\centering\n" + "\n".join([
        r"\caption{Data efficiency: test accuracy per training-set level. cifar10, resnet32}",
        r"\begin{tabular}{lrr}",
        r"\toprule",
        r"label & 100\% (4170 images) & 25\% (1292 images) \\",
        r"\midrule",
        r"category & 60.00 $\pm$ 10.00 (n=3) & 40.00 $\pm$ 10.00 (n=3) \\",
        r"speech & 75.00 $\pm$ 7.07 (n=2) & 45.00 (n=1) \\",
        r"\bottomrule",
        r"\end{tabular}",
        r"\end{table}"]) + "\n" in latex
    markdown = (out / "tables.md").read_text()
    captions, section, heading = [], None, None  # tables.md's headings, as the captions say them
    for line in markdown.splitlines():
        if line.startswith("## "):
            section = line[3:]
        elif line.startswith("### "):
            heading = line[4:]
            captions.append(f"{section}. {heading}")
        elif line == "Targeted attack success rate (%):":
            captions.append(rf"Targeted attack success rate (\%). {heading}")
    assert re.findall(r"^\\caption\{(.*)\}$", latex, re.MULTILINE) == captions
    assert len(captions) == markdown.count("\n|---") == 7


def odd_study(base):
    """Runs of a label of every character LaTeX reads as markup, and of category under another model
    (so the label's other cell has no value)."""
    make_run(base, "a&b%c#d_e$f{g}h~i^j\\k[l]*m<n>o|p±q", 0, test_acc=0.5, valid_acc=0.5)
    make_run(base, "category", 0, test_acc=0.6, valid_acc=0.6, model="resnet110")
    return base


ODD_TITLE = "R&D 100% #1 _x_ $5 {a} ~b ^c \\d\nof two lines"


def test_tables_tex_escapes_every_label_and_the_title_stays_a_comment(tmp_path):
    report(odd_study(tmp_path / "runs"), tmp_path / "out", title=ODD_TITLE, draw=False, latex=True)
    latex = (tmp_path / "out" / "tables.tex").read_text()
    assert latex.startswith(f"% {ODD_TITLE.replace(chr(10), ' ')}: the tables of tables.md")
    assert ("\na\\&b\\%c\\#d\\_e\\$f\\{g\\}h\\textasciitilde{}i\\textasciicircum{}j\\textbackslash{}k{[}l{]}{*}m"
            "\\textless{}n\\textgreater{}o\\textbar{}p$\\pm$q & -- & 50.00 (n=1) \\\\\n") in latex


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex (TeX Live) is not installed")
def test_tables_tex_compiles_with_pdflatex(tmp_path):
    """A document of booktabs that \\inputs tables.tex, its labels and title full of TeX's specials,
    compiles without an error."""
    report(odd_study(tmp_path / "runs"), tmp_path, title=ODD_TITLE, draw=False, latex=True)
    (tmp_path / "paper.tex").write_text("\\documentclass{article}\n\\usepackage{booktabs}\n\\begin{document}\n"
                                        "\\input{tables.tex}\n\\end{document}\n")
    proc = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "-no-shell-escape",
                           "paper.tex"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    log = (tmp_path / "paper.log").read_text(errors="replace")
    assert proc.returncode == 0 and not re.search(r"^! ", log, re.MULTILINE), log[-3000:]
    assert "Output written on paper.pdf" in log


def test_a_report_without_latex_removes_an_earlier_tables_tex(study, tmp_path, capsys):
    """report.py --latex, then a report without it into the same --out: its tables.tex was the
    earlier runs' tables, passing for this report's."""
    out = tmp_path / "out"
    argv = ["--base_dir", str(study), "--out", str(out), "--no_figures", "--workers", "1"]
    assert call_cli(report_main, [*argv, "--latex"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["files"][:2] == ["tables.md", "tables.tex"]
    assert "tables.tex" in json.loads((out / "summary.json").read_text())["files"]
    assert call_cli(report_main, argv) == 0
    assert "tables.tex" not in json.loads(capsys.readouterr().out.splitlines()[-1])["files"]
    assert not (out / "tables.tex").exists()


def test_a_report_of_another_figure_format_removes_the_earlier_figures(study, tmp_path):
    """Into one --out, a PDF report after a PNG one left the PNG figures beside the PDFs, passing
    for this report's; with --no_figures the earlier figures stay, of any format, until the next
    report with figures replaces them."""
    out = tmp_path / "out"
    pngs = [name for name in report(study, out)["files"] if name.endswith(".png")]
    pdf = report(study, out, figure_format="pdf")
    assert sorted(p.name for p in out.iterdir()) == sorted([*pdf["files"], "summary.json"])
    assert not list(out.glob("*.png")) and len(list(out.glob("*.pdf"))) == len(pngs)
    kept = report(study, out, draw=False)
    assert sorted(kept["kept_figures"]) == sorted(p.name for p in out.glob("*.pdf")) and len(kept["kept_figures"]) == 5
    svg = report(study, out, figure_format="svg")
    assert sorted(p.name for p in out.iterdir()) == sorted([*svg["files"], "summary.json"])
    assert [name.removesuffix(".svg") for name in svg["files"] if name.endswith(".svg")] == [
        name.removesuffix(".png") for name in pngs]


def test_a_figure_format_of_none_of_the_choices_is_one_error_line(study, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["--base_dir", str(study), "--out", str(out), "--figure_format", "eps"]
    assert call_cli(report_main, argv) == 2
    assert capsys.readouterr().err == ("error: argument --figure_format: invalid choice: 'eps' "
                                       "(choose from 'png', 'pdf', 'svg') (see report.py --help)\n")
    with pytest.raises(UsageError, match=r"^unknown figure_format 'PDF'; choose from png, pdf, svg$"):
        report(study, out, figure_format="PDF")  # a notebook's, before the runs are read
    assert not out.exists()


def test_the_report_reads_every_run_directory_train_py_writes(tmp_path):
    """find_runs parses what utils.runs.run_directory builds: level, noise and coarse folders."""
    from report import find_runs
    from utils.runs import dataset_folder
    cases = [("cifar10", "fine", 100, 0, "resnet32", "speech", 0.0),
             ("cifar100", "coarse", 100, 7, "vgg19", "category", 0.0),
             ("cifar10", "fine", 12.5, 3, "resnet110", "glove", 0.2),
             ("cifar100", "coarse", 8, 2**32 - 1, "resnet32", "normal_dim=4000", 0.05)]
    expected = {}
    for dataset, granularity, level, seed, model, label, noise in cases:
        folder = dataset_folder(dataset, granularity)
        run_dir = run_directory(tmp_path, folder, level, seed, model, label, noise)
        run_dir.mkdir(parents=True)
        expected[run_dir.relative_to(tmp_path).as_posix()] = {
            "dataset": folder, "model": model, "label": label + (f"_noise{noise:g}" if noise else ""),
            "level": level, "seed": seed}
    assert find_runs(tmp_path) == expected


def test_a_perfect_score_is_an_accuracy(tmp_path):
    """1.0 is a fraction in [0, 1]: a run at 100% test accuracy, or a targeted attack that always
    succeeded, is averaged like any other."""
    base = tmp_path / "runs"
    make_run(base, "category", 1, test_acc=1.0, valid_acc=1.0, clean_acc=1.0,
             attack=[entry("fgsm", EPS8, 1.0, targeted=True, success=1.0)])
    summary = report(base, tmp_path / "out", draw=False)
    markdown = (tmp_path / "out" / "tables.md").read_text()
    assert table_rows(markdown, "### cifar10 (level 100")["category"] == ["100.00 (n=1)"]
    assert summary["robust_accuracy"][0]["target_success_mean"] == 1.0 and not summary["incomplete"]


def test_validation_curves_average_the_seeds_in_the_tables(tmp_path):
    """Epoch e's value is the mean over the seeds (not their median), and a seed left out of the
    tables (trained with other flags) is left out of the curves too."""
    base = tmp_path / "runs"
    for seed, first in ((1, 0.1), (2, 0.2), (3, 0.6)):
        run_dir = make_run(base, "category", seed, test_acc=0.5, valid_acc=0.5)
        curve = [first, 0.5, 0.5, 0.5]
        (run_dir / "metrics.jsonl").write_text("".join(json.dumps({"epoch": e + 1, "valid_acc": v}) + "\n"
                                                       for e, v in enumerate(curve)))
    make_run(base, "category", 4, test_acc=0.5, valid_acc=0.5, epochs=6)  # odd flags: left out
    make_run(base, "category", 5, test_acc=0.5, valid_acc=0.5, epochs=6)
    make_run(base, "category", 6, test_acc=0.5, valid_acc=0.5)
    summary = report(base, tmp_path / "out", draw=False)
    [curve] = summary["curves"]
    assert curve["valid_acc"] == pytest.approx([(0.1 + 0.2 + 0.6 + 0.1) / 4, 1.7 / 4, 1.8 / 4, 1.9 / 4])


def test_a_tie_between_flag_sets_keeps_the_first_seeds(tmp_path):
    base = tmp_path / "runs"
    make_run(base, "category", 1, test_acc=0.6, valid_acc=0.6, epochs=4)
    make_run(base, "category", 2, test_acc=0.5, valid_acc=0.5, epochs=5)
    summary = report(base, tmp_path / "out", draw=False)
    reasons = {i["run"].split("/")[-1]: i["reasons"] for i in summary["incomplete"]}
    assert reasons == {"seed2": ["left out of the tables: trained with --epochs 5 (the other seeds: 4)"]}



def test_with_a_grid_its_own_runs_set_the_flags_trials_beside_them_are_left_out(tmp_path):
    """Two earlier trials (--epochs 4) in the grid's --base_dir outvoted the grid's one run (--epochs
    5): the grid's run was left out of the tables, which showed the trials' mean."""
    base = tmp_path / "runs"
    for seed, acc in ((1, 0.6), (2, 0.8)):
        make_run(base, "category", seed, test_acc=acc, valid_acc=acc, epochs=4)
    make_run(base, "category", 3, test_acc=0.3, valid_acc=0.3, epochs=5)
    grid = tmp_path / "grid.yaml"
    grid.write_text("labels: [category]\nseeds: [3]\nstages: [train]\ntrain_args: --epochs 5\n")
    summary = report(base, tmp_path / "out", grid, draw=False)
    assert table_rows((tmp_path / "out" / "tables.md").read_text(), "### cifar10 (level 100")["category"] == [
        "30.00 (n=1)"]
    reasons = {i["run"].split("/")[-1]: i["reasons"] for i in summary["incomplete"]}
    assert reasons == {f"seed{s}": ["left out of the tables: trained with --epochs 4 (the other seeds: 5)"]
                       for s in (1, 2)}
    summary = report(base, tmp_path / "out2", draw=False)  # without the grid, the most seeds' flags
    assert [i["run"].split("/")[-1] for i in summary["incomplete"]] == ["seed3"]


def test_a_run_trained_otherwise_than_the_grid_asks_is_left_out(tmp_path):
    """The grid's --epochs raised from 4 to 6 after two seeds had finished: report --grid tabled
    them (their own flags agreed, and outvoted the seed trained since) as the grid's results, which
    the grid's sweep refuses (train.py stops on such a run). So too a seed trained on label targets
    the grid's --label_dir no longer holds. A run outside the grid is not held to its flags."""
    from labels import LABEL_DIR, label_path
    from utils.grid import label_file_sha256
    base = tmp_path / "runs"
    now = label_file_sha256(label_path("cifar10", "speech"))
    for seed, acc, epochs, targets in ((1, 0.6, 4, now), (2, 0.4, 4, now), (3, 0.3, 6, now),
                                       (4, 0.1, 6, "b" * 64)):
        run_dir = make_run(base, "speech", seed, test_acc=acc, valid_acc=acc, epochs=epochs)
        config = {"flags": {"epochs": epochs, "label": "speech"}, "label_sha256": targets}
        (run_dir / "config.json").write_text(json.dumps(config))
    make_run(base, "speech", 1, level=25, test_acc=0.2, valid_acc=0.2, epochs=4)
    grid = tmp_path / "grid.yaml"
    grid.write_text("labels: [speech]\nlevels: [100]\nseeds: [1, 2, 3, 4]\nstages: [train]\n"
                    "train_args: --epochs 6\n")
    summary = report(base, tmp_path / "out", grid, draw=False)
    assert [(r["level"], r["test_acc_mean"], r["n"]) for r in summary["data_efficiency"]] == [(100, 0.3, 1),
                                                                                              (25, 0.2, 1)]
    reasons = {i["run"].split("/")[-1]: i["reasons"] for i in summary["incomplete"]}
    refused = "not as the grid asks (its sweep refuses the run: delete the run directory to train it again)"
    assert reasons == {**{f"seed{s}": [f"left out of the tables: trained with --epochs 4 (the grid: 6), {refused}"]
                          for s in (1, 2)},
                       "seed4": [f"left out of the tables: trained with other speech targets than {LABEL_DIR} "
                                 f"holds, {refused}"]}
    markdown = (tmp_path / "out" / "tables.md").read_text()
    assert table_rows(markdown, "### cifar10, resnet32")["speech"] == ["30.00 (n=1)", "20.00 (n=1)"]
    shutil.rmtree(base / "less")  # and the grid raised to 8 epochs: no run is the grid's; the tables say so
    grid.write_text(grid.read_text().replace("--epochs 6", "--epochs 8"))
    report(base, tmp_path / "out", grid, draw=False)
    markdown = (tmp_path / "out" / "tables.md").read_text()
    for heading in ("## Clean test accuracy", "## Data efficiency: test accuracy per training-set level"):
        assert markdown.split(heading + "\n\n")[1].startswith(
            "No training results (see the incomplete and missing runs below).\n\n## ")


def test_a_grid_run_whose_config_was_edited_to_another_kind_is_train_pys_refusal(tmp_path):
    """A grid's finished run whose config.json was edited by hand to the text "6" for --epochs 6:
    train.py and the grid's sweep refuse it, naming the file and value (`mistyped`), but report.py
    --grid said 'trained with --epochs 6 (the grid: 6), not as the grid asks (...: delete the run
    directory to train it again)', a change that is none and the advice to delete a finished run."""
    base = tmp_path / "runs"
    for seed, epochs in ((1, 6), (2, "6")):
        run_dir = make_run(base, "category", seed, test_acc=0.5, valid_acc=0.5, epochs=6)
        (run_dir / "config.json").write_text(json.dumps({"flags": {"epochs": epochs, "label": "category"}}))
    grid = tmp_path / "grid.yaml"
    grid.write_text("labels: [category]\nseeds: [1, 2]\nstages: [train]\ntrain_args: --epochs 6\n")
    summary = report(base, tmp_path / "out", grid, draw=False)
    reasons = {i["run"].split("/")[-1]: i["reasons"] for i in summary["incomplete"]}
    assert reasons == {"seed2": ['left out of the tables: train.py refuses it: config.json records epochs "6" '
                                 "(text, not a number), which train.py never writes (edited by hand?); put back "
                                 "the values the run trained with"]}
    assert [(r["seeds"], r["n"]) for r in summary["clean_accuracy"]] == [([1], 1)]


def test_an_attack_only_grid_holds_no_run_to_training_flags(tmp_path):
    """A grid of stages [attack] alone (grid-margin.yaml: no train_args, as its sweep trains nothing
    and checks no training flag) left every run it names out of the tables as 'trained with
    --epochs 4 (the grid: 600) ... its sweep refuses the run', though that sweep found them done."""
    base = tmp_path / "runs"
    for seed, acc in ((1, 0.6), (2, 0.4)):
        make_run(base, "category", seed, test_acc=acc, valid_acc=acc, clean_acc=acc,
                 attack=[entry("fgsm", EPS8, acc / 2)])
    grid = tmp_path / "grid.yaml"
    grid.write_text("labels: [category]\nseeds: [1]\nstages: [attack]\n"
                    "args: --attacks fgsm --epsilons 8/255 --targeted no\n")
    summary = report(base, tmp_path / "out", grid, draw=False)
    assert summary["incomplete"] == [] and summary["missing"] == []
    markdown = (tmp_path / "out" / "tables.md").read_text()
    assert table_rows(markdown, "### cifar10 (level 100")["category"] == ["50.00 ± 14.14 (n=2)"]
    assert [(r["n"], r["robust_acc_mean"]) for r in summary["robust_accuracy"]] == [(2, 0.25)]


def test_a_flag_a_run_did_not_record_is_train_pys_default(tmp_path):
    """A study extended after an update: seed 7 trained before --warmup_epochs existed (its
    config.json has no such key), seeds 8 and 9 recorded the default 0. Seed 7 was left out of
    every table as 'trained with --warmup_epochs None (the other seeds: 0)'; a seed trained with
    a warm-up still is."""
    base = tmp_path / "runs"
    for seed, acc, warmup in ((7, 0.6, None), (8, 0.5, 0), (9, 0.4, 0), (10, 0.9, 5)):
        run_dir = make_run(base, "category", seed, test_acc=acc, valid_acc=acc, epochs=4)
        flags = {"epochs": 4, "label": "category"} | ({} if warmup is None else {"warmup_epochs": warmup})
        (run_dir / "config.json").write_text(json.dumps({"flags": flags}))
    summary = report(base, tmp_path / "out", draw=False)
    reasons = {i["run"].split("/")[-1]: i["reasons"] for i in summary["incomplete"]}
    assert reasons == {"seed10": ["left out of the tables: trained with --warmup_epochs 5 (the other seeds: 0)"]}
    markdown = (tmp_path / "out" / "tables.md").read_text()
    assert table_rows(markdown, "### cifar10 (level 100")["category"] == ["50.00 ± 10.00 (n=3)"]


def test_a_run_without_config_json_is_checked_on_what_results_json_records(tmp_path):
    """A finished seed whose config.json was gone (deleted by hand, or never copied) was averaged
    with the others unchecked and unlisted: a 5-epoch seed among 30-epoch ones made category
    40.00 ± 26.46 (n=3), '5/30 epochs' in a heading the only sign. Its flags are those its
    results.json records (as train.py and sweep.py check such a run); the others are unknown,
    not train.py's defaults."""
    base = tmp_path / "runs"
    for seed, acc, epochs in ((1, 0.6, 30), (2, 0.5, 30), (3, 0.1, 5), (4, 0.4, 30)):
        run_dir = make_run(base, "category", seed, test_acc=acc, valid_acc=acc, epochs=epochs)
        flags = {"epochs": epochs, "label": "category", "valid_size": 1000}  # not train.py's default 5000
        (run_dir / "config.json").write_text(json.dumps({"flags": flags}))
        if seed >= 3:
            (run_dir / "config.json").unlink()
    summary = report(base, tmp_path / "out", draw=False)
    markdown = (tmp_path / "out" / "tables.md").read_text()
    assert "### cifar10 (level 100: 4170 training images, 30 epochs)" in markdown
    assert table_rows(markdown, "### cifar10 (level 100")["category"] == ["50.00 ± 10.00 (n=3)"]
    reasons = {i["run"].split("/")[-1]: i["reasons"] for i in summary["incomplete"]}
    unchecked = "no config.json: compared with its other seeds on the flags its results.json records"
    assert reasons == {"seed3": [unchecked, "left out of the tables: trained with --epochs 5 (the other seeds: 30)"],
                       "seed4": [unchecked]}


def test_a_seed_trained_on_other_label_targets_is_left_out(tmp_path):
    """A seed added after its label file was regenerated (same flags, other targets) was averaged
    with the others; config.json's label_sha256 and data_sha256 are compared where recorded (a run
    older than them, like the mini-study's seed 7, is compared on its flags alone)."""
    base = tmp_path / "runs"
    for seed, acc, labels_sha, data_sha in ((1, 0.6, "a" * 64, "d" * 64), (2, 0.5, "a" * 64, "d" * 64),
                                            (3, 0.1, "b" * 64, "d" * 64), (4, 0.4, None, None),
                                            (5, 0.1, "a" * 64, "e" * 64), (6, 0.5, [1], 7)):  # 6: edited
        run_dir = make_run(base, "speech", seed, test_acc=acc, valid_acc=acc)
        config = json.loads((run_dir / "config.json").read_text())
        config.update({k: v for k, v in (("label_sha256", labels_sha), ("data_sha256", data_sha)) if v})
        (run_dir / "config.json").write_text(json.dumps(config))
    summary = report(base, tmp_path / "out", draw=False)
    markdown = (tmp_path / "out" / "tables.md").read_text()
    assert table_rows(markdown, "### cifar10 (level 100")["speech"] == ["50.00 ± 8.16 (n=4)"]
    reasons = {i["run"].split("/")[-1]: i["reasons"] for i in summary["incomplete"]}
    assert reasons == {"seed3": ["left out of the tables: trained with other label_sha256 bbbbbbbbbbbb... "
                                 "(the other seeds: aaaaaaaaaaaa...)"],
                       "seed5": ["left out of the tables: trained with other data_sha256 eeeeeeeeeeee... "
                                 "(the other seeds: dddddddddddd...)"]}


def test_a_seed_of_the_older_rounding_is_left_out_without_a_grid(tmp_path):
    """A fractional --level seed trained by a labelrep before 1570041 (0.29% of 50000: 144 images,
    not 145), which train.py and sweep.py refuse and report.py --grid leaves out, was averaged with
    the seeds of 145 without --grid ('144/145 training images'). It is left out, naming the
    rounding, also where most seeds share it; a count no rounding explains is not."""
    base = tmp_path / "runs"
    for label, seed, acc, images in (("speech", 1, 0.6, 145), ("speech", 2, 0.4, 145), ("speech", 3, 0.1, 144),
                                     ("category", 1, 0.1, 144), ("category", 2, 0.1, 144), ("category", 3, 0.5, 145),
                                     ("bert", 1, 0.6, 145), ("bert", 2, 0.4, 140)):
        run_dir = make_run(base, label, seed, level=0.29, test_acc=acc, valid_acc=acc)
        results = json.loads((run_dir / "results.json").read_text())
        (run_dir / "results.json").write_text(json.dumps(results | {"train_images": images}))
    summary = report(base, tmp_path / "out", draw=False)
    reasons = {i["run"]: i["reasons"] for i in summary["incomplete"]}
    why = ("left out of the tables: trained with 144 training images (the other seeds: 145: a labelrep before "
           "1570041 rounded --level 0.29 of 50000 images down to 144)")
    assert reasons == {"cifar10/resnet32/speech/level0.29/seed3": [why],
                       "cifar10/resnet32/category/level0.29/seed1": [why],
                       "cifar10/resnet32/category/level0.29/seed2": [why]}
    rows = {r["label"]: r for r in summary["clean_accuracy"]}
    assert [(rows[k]["seeds"], rows[k]["train_images"], rows[k]["test_acc_mean"]) for k in ("speech", "category")] \
        == [([1, 2], [145], pytest.approx(0.5)), ([3], [145], pytest.approx(0.5))]
    assert rows["bert"]["seeds"] == [1, 2]


def test_a_flag_edited_into_a_list_is_another_seeds_flag(tmp_path):
    """A config.json flag holding a list (an edited file) was a TypeError traceback."""
    base = tmp_path / "runs"
    make_run(base, "category", 1, test_acc=0.6, valid_acc=0.6, epochs=4)
    run_dir = make_run(base, "category", 2, test_acc=0.5, valid_acc=0.5, epochs=4)
    (run_dir / "config.json").write_text(json.dumps({"flags": {"epochs": [4], "label": "category"}}))
    summary = report(base, tmp_path / "out", draw=False)
    reasons = {i["run"].split("/")[-1]: i["reasons"] for i in summary["incomplete"]}
    assert reasons == {"seed2": ["left out of the tables: trained with --epochs [4] (the other seeds: 4)"]}


def test_without_level_100_the_clean_table_is_the_largest_level(tmp_path):
    base = tmp_path / "runs"
    make_run(base, "category", 1, level=50, test_acc=0.5, valid_acc=0.5)
    make_run(base, "category", 1, level=25, test_acc=0.3, valid_acc=0.3)
    report(base, tmp_path / "out", draw=False)
    assert [(r["level"], r["test_acc_mean"]) for r in read_csv(tmp_path / "out" / "clean_accuracy.csv")] == [
        ("50", "0.5")]


def test_the_latest_error_line_of_a_log_is_named(tmp_path):
    (tmp_path / "train.log").write_text("error: an old failure\nepoch 1/3\nerror: the new one\n")
    assert log_error(tmp_path, "train") == "error: the new one"
    assert log_error(tmp_path, "attack") == ""
    # the sweep appends each attempt under a '=== command' header: a rerun killed before its first
    # epoch (no error line of its own) was reported with the earlier attempt's error
    (tmp_path / "train.log").write_text("=== 2026-01-02T10:00:00 OMP_NUM_THREADS=1: python train.py\n"
                                        "error: label file not found\n"
                                        "=== 2026-01-02T11:00:00 OMP_NUM_THREADS=1: python train.py\n")
    assert log_error(tmp_path, "train") == ""


def test_another_jobs_refusal_is_no_error_of_the_run(tmp_path):
    """A second sweep started on a run in training was refused ('in use by train.py (pid ...)'), and
    its sweep appended that line, under its own header, to the train.log the first job writes;
    the first job, then killed without an error line of its own, was reported with that refusal as
    its error. An error line of its own is still named."""
    base = tmp_path / "runs"
    run_dir = make_run(base, "category", 1, done_epochs=2)
    with run_lock(run_dir), pytest.raises(UsageError) as refused:
        with run_lock(run_dir):
            pass
    header = "=== 2026-01-02T1{}:00:00 OMP_NUM_THREADS=1: python train.py --label category\n"
    log = (header.format(0) + '{"epoch": 1}\n' + header.format(1) + f"error: {refused.value}\n"
           + '{"epoch": 2}\n')
    (run_dir / "train.log").write_text(log)
    assert f"{run_dir} is in use by " in log
    assert log_error(run_dir, "train") == ""
    reasons = report(base, tmp_path / "out", draw=False)["incomplete"][0]["reasons"]
    assert not any("train.log" in reason for reason in reasons), reasons
    (run_dir / "train.log").write_text(log + "error: CUDA out of memory\n")  # the job's own end
    assert log_error(run_dir, "train") == "error: CUDA out of memory"


def test_noise_variants_follow_their_label_by_rising_noise(tmp_path):
    base = tmp_path / "runs"
    for noise in (0.4, 0.0, 0.2):
        make_run(base, "speech", 1, test_acc=0.5, valid_acc=0.5, label_noise=noise)
    report(base, tmp_path / "out", draw=False)
    assert [r["label"] for r in read_csv(tmp_path / "out" / "clean_accuracy.csv")] == [
        "speech", "speech_noise0.2", "speech_noise0.4"]


def test_a_familys_sizes_follow_in_rising_order(tmp_path):
    """The follow-up's normal_dim=D grid came out as D = 1, 10, 100, 2, 25, ... in every table."""
    base = tmp_path / "runs"
    for label in ("normal_dim=1000", "normal_dim=10", "normal_dim=2", "uniform_gap=10", "uniform_gap=2",
                  "category_smooth0.2", "speech", "category_smooth0.05", "category"):
        make_run(base, label, 1, test_acc=0.5, valid_acc=0.5)
    make_run(base, "normal_dim=2", 1, test_acc=0.5, valid_acc=0.5, label_noise=0.2)
    report(base, tmp_path / "out", draw=False)
    assert [r["label"] for r in read_csv(tmp_path / "out" / "clean_accuracy.csv")] == [
        "category", "category_smooth0.05", "category_smooth0.2", "speech",  # smoothed beside category
        "normal_dim=2", "normal_dim=2_noise0.2", "normal_dim=10", "normal_dim=1000",
        "uniform_gap=2", "uniform_gap=10"]
    tables = (tmp_path / "out" / "tables.md").read_text()
    assert tables.index("| normal_dim=2 |") < tables.index("| normal_dim=10 |") < tables.index(
        "| normal_dim=1000 |")


def test_a_directory_of_no_level_train_py_writes_is_passed_over(tmp_path):
    """A stray less/cifar10/level0/... folder made the whole report one error line."""
    base = tmp_path / "runs"
    make_run(base, "category", 1, test_acc=0.5, valid_acc=0.5)
    (base / "less" / "cifar10" / "level0" / "seed1" / "resnet32" / "model_category").mkdir(parents=True)
    summary = report(base, tmp_path / "out", draw=False)
    assert [r["run_dir"] for r in summary["runs"]] == ["cifar10/seed1/resnet32/model_category"]


def test_a_base_dir_of_less_data_runs_alone_is_no_dataset_level(tmp_path):
    """--base_dir outputs/less/cifar10 reported its level-25 runs as a dataset "level25" at level
    100; it holds no run directory of the layout, and the error names the --base_dir that does."""
    base = tmp_path / "runs"
    make_run(base, "category", 1, level=25, test_acc=0.5, valid_acc=0.5)
    proc = run_script("report.py", "--base_dir", base / "less" / "cifar10", "--out", tmp_path / "out",
                      check=False)
    assert proc.returncode == 2 and proc.stdout == "" and len(proc.stderr.splitlines()) == 1
    assert proc.stderr.endswith(f"; {base}/less/cifar10 is a folder inside that layout: pass --base_dir {base}\n")
    assert [(r["dataset"], r["level"]) for r in report(base, tmp_path / "out", draw=False)["runs"]] == [
        ("cifar10", 25)]


def test_a_base_dir_of_a_datasets_folder_names_the_base_dir(tmp_path):
    """--base_dir outputs/cifar100 (to report one dataset) said only 'no run directories under
    outputs/cifar100', where outputs/less/cifar100 named --base_dir outputs."""
    base = tmp_path / "runs"
    run_dir = make_run(base, "category", 1, test_acc=0.5, valid_acc=0.5)
    for inside in (base / "cifar10", base / "cifar10" / "seed1", run_dir):
        with pytest.raises(UsageError) as err:
            report(inside, tmp_path / "out", draw=False)
        assert str(err.value).endswith(f"; {inside} is a folder inside that layout: pass --base_dir {base}")
    # `..` as the system reads it (--base_dir .. from a seed folder), not a folder inside outputs/cifar10/seed1,
    # and a link to a dataset's folder by its target's place: not its own folder read as a dataset
    (tmp_path / "link").symlink_to(base / "cifar10")
    for inside in (base / "cifar10" / "seed1" / "..", run_dir / ".." / "..", tmp_path / "link"):
        with pytest.raises(UsageError) as err:
            report(inside, tmp_path / "out", draw=False)
        assert str(err.value).endswith(f"; {inside} is a folder inside that layout: pass --base_dir {base}")
    (tmp_path / "other" / "model_x").mkdir(parents=True)
    with pytest.raises(UsageError) as err:
        report(tmp_path / "other", tmp_path / "out", draw=False)
    assert str(err.value).endswith("model_{label}_noise{R})")


def test_a_malformed_metrics_line_loses_that_line_alone(tmp_path):
    """One line that is not JSON made the whole metrics file unread: 'training stopped after epoch
    0', and no curve."""
    base = tmp_path / "runs"
    run_dir = make_run(base, "category", 1, done_epochs=3)
    (run_dir / "metrics.jsonl").write_text('{"epoch": 1, "valid_acc": 0.1}\n{"epoch": 2, "val\n'
                                           '{"epoch": 3, "valid_acc": 0.3}\n')
    make_run(base, "category", 2, done_epochs=3)  # its curve: 0.1, 0.2, 0.3
    summary = report(base, tmp_path / "out")  # the figure too: a curve with a gap is drawn
    assert summary["incomplete"][0]["reasons"][0].startswith("training unfinished with 3 of 4 epochs logged, ")
    [curve] = summary["curves"]
    assert curve["valid_acc"] == pytest.approx([0.1, 0.2, 0.3])  # the bad line: that epoch of that seed
    assert "curves_cifar10_resnet32_level100.png" in summary["files"]


def test_thirty_label_types_and_their_noise_variants_look_unlike():
    """The follow-up's grids hold some 30 label types: past 20, colours repeated with the same
    marker and dash, so label 20 was drawn as label 0."""
    labels = [f"t{i:02d}" for i in range(30)] + ["t00_noise0.2", "t20_noise0.2", "t25_noise0.4"]
    looks = [tuple(sorted(style.items())) for style in label_styles(labels).values()]
    assert len(set(looks)) == len(labels)
    # a noise sweep of ten rates: with four dash patterns, rates 0 and 0.4 were drawn alike
    labels = ["category"] + [f"{base}_noise{rate / 10:g}" for base in ("category", "speech", "t20")
                             for rate in range(1, 10)] + [f"t{i:02d}" for i in range(30)]
    looks = [repr(sorted(style.items())) for style in label_styles(labels).values()]
    assert len(set(looks)) == len(labels)


@pytest.mark.parametrize("folder, base, title", [
    ("cifar10-subset", "cifar10-subset", "Mini-study: CIFAR-10 subset, CPU"),
    ("cifar10-subset-120-epochs", "cifar10-subset-120", "Level 10 over 120 epochs: CIFAR-10 subset, ResNet-32, CPU"),
    ("cifar10-subset-warmup", "cifar10-subset-warmup", "ResNet-110 with lr warm-up: CIFAR-10 subset, CPU"),
    ("cifar10-subset-transfer", "cifar10-subset-transfer", "Transfer attacks: CIFAR-10 subset, ResNet-32, CPU")])
def test_the_committed_mini_study_is_what_report_py_makes_of_its_runs(tmp_path, monkeypatch, folder, base,
                                                                      title):
    """docs/results/cifar10-subset is report.py's output of the runs beside it, made with the
    command of docs/experiments.md (its sequel's, with the command of its grid file): tables, CSVs
    and summary.json byte for byte, the same figures (named, not drawn). A change to what report.py
    writes that was not run on them shows here (its summary.json lacked the kept_figures key added
    after it was made). Its label statistics are of the paper's label files in ../shared."""
    import report as module
    if not (REPO.parent / "shared" / "reference" / "label_representations").is_dir():
        pytest.skip("../shared/reference/label_representations (the label files the runs trained with) is absent")
    results = REPO / "docs" / "results" / folder
    root = tmp_path / "repo"
    root.mkdir()
    monkeypatch.chdir(root)  # the paths the documented command gives, from the repository root
    (tmp_path / "shared").symlink_to(REPO.parent / "shared")
    (root / "docs").symlink_to(REPO / "docs")
    (root / "outputs").mkdir()
    (root / "outputs" / base).symlink_to(results / "runs")
    monkeypatch.setattr(module, "write_figure", lambda plan, f, figure_format: None)
    monkeypatch.setattr(module, "trained_folder", lambda flags, name: "absent")  # no run's own folder
    argv = ["--base_dir", f"outputs/{base}", "--out", str(tmp_path / "out"), "--grid",
            f"docs/results/{folder}/grid.yaml", "--title", title, "--workers", "1"]
    if folder == "cifar10-subset":  # docs/experiments.md's command: its BERT rescaled is in labels/ there
        argv += ["--label_dir", "../shared/reference/label_representations", "docs/results/cifar10-subset/labels"]
    summary = module.main(argv)
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    committed = sorted(p.name for p in results.iterdir() if p.is_file() and p.suffix != ".yaml")
    assert written == committed == sorted(summary["files"] + ["summary.json"])
    for name in written:
        if not module.is_figure(name):
            assert (tmp_path / "out" / name).read_bytes() == (results / name).read_bytes(), name


def counted_entry(attack, eps, images, robust, targeted=False):
    """An `entry` as attack.py writes it from this version on: with the per-class counts of CIFAR-10's
    first classes `images` and `robust` (none of the others), its num_images and robust_acc theirs."""
    images, robust = (counts + [0] * (10 - len(counts)) for counts in (images, robust))
    row = entry(attack, eps, sum(robust) / sum(images), targeted, success=0.5 if targeted else None)
    return row | {"num_images": sum(images), "class_images": images, "class_robust": robust}


def with_class_names(run_dir):
    """`run_dir`'s attack_results.json with CIFAR-10's class names, as attack.py writes them."""
    path = run_dir / "attack_results.json"
    path.write_text(json.dumps(json.loads(path.read_text()) | {"classes": CIFAR10_NAMES}))
    return run_dir


def test_class_robust_accuracy_is_each_classs_robust_images_over_its_images_over_seeds(tmp_path):
    """class_robust_accuracy.csv: per robust row (attack setting and eps) and class, the class's
    robust images over its images in each seed's entry, mean and sample std over the seeds (a class
    without images in a seed has none there); tables.md a label by class table per untargeted
    setting at its largest eps every label has; the runs whose entries an older attack.py wrote
    (no counts) named as not measured. A report without any counts writes nothing of it."""
    base, out = tmp_path / "outputs", tmp_path / "report"
    pgd = [counted_entry("pgd", EPS8, [4, 2, 2, 2], [2, 1, 0, 2]),
           counted_entry("pgd", EPS8, [4, 2, 2, 2], [1, 0, 0, 0], targeted=True)]
    with_class_names(make_run(base, "speech", 1, test_acc=0.5, valid_acc=0.5, clean_acc=0.5, attack=[
        *pgd, counted_entry("fgsm", EPS1, [4, 2, 2, 2], [3, 2, 1, 2]),
        counted_entry("fgsm", EPS8, [4, 2, 2, 2], [2, 2, 0, 1])]))
    with_class_names(make_run(base, "speech", 2, test_acc=0.5, valid_acc=0.5, clean_acc=0.5, attack=[
        counted_entry("pgd", EPS8, [3, 3, 0, 4], [3, 0, 0, 1]), counted_entry("fgsm", EPS1, [3, 3, 0, 4], [3, 1, 0, 2]),
        counted_entry("fgsm", EPS8, [3, 3, 0, 4], [2, 1, 0, 2])]))
    make_run(base, "speech", 3, test_acc=0.5, valid_acc=0.5, clean_acc=0.5,  # an older attack.py's: no counts
             attack=[e | {"num_images": 10} for e in (entry("pgd", EPS8, 0.3), entry("fgsm", EPS1, 0.4),
                                                      entry("fgsm", EPS8, 0.2))])
    with_class_names(make_run(base, "category", 1, test_acc=0.5, valid_acc=0.5, clean_acc=0.5, attack=[
        counted_entry("pgd", EPS8, [2, 2, 2, 2, 2], [0, 1, 0, 0, 0]),
        counted_entry("fgsm", EPS1, [2, 2, 2, 2, 2], [1, 1, 2, 0, 0])]))
    summary = report(base, out, draw=False)
    assert "class_robust_accuracy.csv" in summary["files"]
    rows = read_csv(out / "class_robust_accuracy.csv")
    assert list(rows[0]) == ["dataset", "model", "label", "level", "attack", "targeted", "protocol", "eps",
                             "eps_label", "class", "class_name", "n", "seeds", "robust_acc_mean", "robust_acc_std",
                             "class_images", "num_images", "steps", "step_size", "restarts", "amp", "label_sha256"]
    # a row per class of each robust row (10 classes of 6 rows), in robust_accuracy.csv's order
    robust = read_csv(out / "robust_accuracy.csv")
    assert [(r["label"], r["attack"], r["targeted"], r["eps_label"]) for r in rows[::10]] == [
        (r["label"], r["attack"], r["targeted"], r["eps_label"]) for r in robust]
    assert len(rows) == 60
    find = {(r["label"], r["attack"], r["targeted"], r["eps_label"], r["class"]): r for r in rows}
    cells = lambda r: {k: r[k] for k in ("class_name", "n", "seeds", "class_images")}
    # speech's untargeted PGD at 8/255: class 0 2/4 and 3/3, class 1 1/2 and 0/3, class 2 0/2 and no image
    speech = [find["speech", "pgd", "False", "8/255", str(c)] for c in range(5)]
    assert [cells(r) for r in speech] == [
        {"class_name": "airplane", "n": "2", "seeds": "1 2", "class_images": "3 4"},
        {"class_name": "automobile", "n": "2", "seeds": "1 2", "class_images": "2 3"},
        {"class_name": "bird", "n": "1", "seeds": "1", "class_images": "0 2"},
        {"class_name": "cat", "n": "2", "seeds": "1 2", "class_images": "2 4"},
        {"class_name": "deer", "n": "0", "seeds": "", "class_images": "0"}]
    assert [float(r["robust_acc_mean"]) for r in speech[:4]] == pytest.approx([0.75, 0.25, 0.0, 0.625])
    assert [float(r["robust_acc_std"]) for r in speech[:2]] == pytest.approx([0.5 / 2 ** 0.5, 0.5 / 2 ** 0.5])
    assert (speech[2]["robust_acc_std"], speech[4]["robust_acc_mean"]) == ("", "")
    assert {r["num_images"] for r in speech} == {"10"} and speech[0]["steps"] == "10"
    # pooled exactly: each seed's class robust images over its images are its entry's robust_acc
    assert float(find["speech", "pgd", "True", "8/255", "0"]["robust_acc_mean"]) == 0.25
    assert summary["class_robust_accuracy"][0]["robust_acc_n"] == 1  # category's fgsm 1/255, class 0
    # tables.md: untargeted settings alone, each at the largest eps all its labels have (fgsm: 1/255,
    # category's only), after the per-class test accuracy
    markdown = (out / "tables.md").read_text()
    section = markdown.split("## Per-class robust accuracy\n", 1)[1].split("## Diverged", 1)[0]
    assert re.findall("### (.*)", section) == [
        "cifar10, resnet32, level 100: fgsm, untargeted, eps 1/255 (10 test images)",
        "cifar10, resnet32, level 100: pgd, untargeted, eps 8/255 (10 test images, steps 10, restarts 1)"]
    fgsm = table_rows(section, "fgsm, untargeted")
    assert fgsm["label"] == CIFAR10_NAMES
    assert fgsm["category"][:6] == ["50.00 (n=1)", "50.00 (n=1)", "100.00 (n=1)", "0.00 (n=1)", "0.00 (n=1)", "-"]
    assert fgsm["speech"][:3] == ["87.50 ± 17.68 (n=2)", "66.67 ± 47.14 (n=2)", "50.00 (n=1)"]
    assert table_rows(section, "pgd, untargeted")["speech"][:2] == ["75.00 ± 35.36 (n=2)", "25.00 ± 35.36 (n=2)"]
    reason = ("attacked before attack.py counted robust images per class: 3 of its 3 settings (fgsm untargeted "
              "1/255, fgsm untargeted 8/255, pgd untargeted 8/255), which attack.py reuses as they are (delete "
              "its attack_results.json and attack it again to count them)")
    assert section.endswith(f"Not measured:\n\n- cifar10/resnet32/speech/level100/seed3: {reason}\n\n")
    assert summary["class_robust_accuracy_unmeasured"] == [
        {"run": "cifar10/resnet32/speech/level100/seed3", "run_dir": "cifar10/seed3/resnet32/model_speech",
         "reason": reason}]
    # runs attacked before attack.py counted alone: no file or section, summary.json names them (the committed reports')
    for run_dir in (base / "cifar10").glob("seed[12]/resnet32/model_*"):
        shutil.rmtree(run_dir)
    again = report(base, out, draw=False)
    assert not (out / "class_robust_accuracy.csv").exists() and "class_robust_accuracy.csv" not in again["files"]
    assert "Per-class robust" not in (out / "tables.md").read_text()
    assert again["class_robust_accuracy"] == [] and again["class_robust_accuracy_unmeasured"] == summary[
        "class_robust_accuracy_unmeasured"]


def test_per_class_counts_that_do_not_add_up_make_an_entry_malformed():
    """Counts edited by hand (or cut short) would pool into wrong per-class rows, or fail in them:
    they must be two lists of whole counts >= 0 of one length, robust at most the images, summing
    to the entry's num_images and robust_acc; an entry with neither is well-formed (an older one)."""
    from utils.grid import class_counts, well_formed
    good = counted_entry("pgd", EPS8, [4, 2], [2, 1])
    assert well_formed(good) and class_counts(good) == ([4, 2] + [0] * 8, [2, 1] + [0] * 8)
    old = {k: v for k, v in good.items() if not k.startswith("class_")}
    assert well_formed(old) and class_counts(old) is None
    for edit in ({"class_robust": None}, {"class_images": [4, 2]}, {"class_images": [4, 2.0] + [0] * 8},
                 {"class_robust": [-1, 4] + [0] * 8}, {"class_robust": [0, 3] + [0] * 8},
                 {"num_images": 7}, {"robust_acc": 0.6}, {"class_images": "4 2"}):
        assert not well_formed(good | edit), edit


def with_config(run_dir, **config):
    """`run_dir`'s config.json with `config`'s keys set (flags: those named added to its flags)."""
    path = run_dir / "config.json"
    old = json.loads(path.read_text())
    flags = old["flags"] | config.pop("flags", {})
    path.write_text(json.dumps(old | config | {"flags": flags}))
    return run_dir


def test_label_statistics_are_of_the_file_holding_the_targets_the_runs_trained(tmp_path):
    """The follow-up asked whether a label's entropy, or the distance between its classes, goes with
    its robustness: tables.md, label_stats.csv and summary.json give labels.stats' numbers of the
    targets each label's runs recorded (label_sha256), from the first --label_dir file holding
    them; a file of the same name with other targets (regenerated since) is passed over, and a
    label whose targets no folder holds is named with the sha256 it needs."""
    import numpy as np
    from labels import targets_sha256
    from labels.stats import label_stats
    rng = np.random.default_rng(0)
    trained, redrawn, other_draw = (rng.uniform(0, 80, (10, 6, 6)).astype(np.float32) for _ in range(3))
    regenerated, kept = tmp_path / "regenerated", tmp_path / "kept"
    for folder, targets in ((regenerated, redrawn), (kept, trained)):
        folder.mkdir()
        np.save(folder / "cifar10_speech.npy", targets)
    base = tmp_path / "runs"
    for seed in (1, 2):
        with_config(make_run(base, "speech", seed, test_acc=0.7, valid_acc=0.7), label_sha256=targets_sha256(trained))
    with_config(make_run(base, "speech", 3, test_acc=0.6, valid_acc=0.6, label_noise=0.2),
                label_sha256=targets_sha256(trained))  # noise: the same targets, one row
    with_config(make_run(base, "speech", 1, test_acc=0.6, valid_acc=0.6, model="vgg19"),
                label_sha256=targets_sha256(other_draw))  # another draw of the label: a row of its own
    make_run(base, "category", 1, test_acc=0.7, valid_acc=0.7)
    with_config(make_run(base, "category_smooth0.1", 1, test_acc=0.7, valid_acc=0.7), flags={"smoothing": 0.1})
    make_run(base, "mcr2", 1, test_acc=0.7, valid_acc=0.7)  # no targets: no row

    summary = report(base, tmp_path / "out", draw=False, label_dirs=[regenerated, kept])
    rows = {(r["label"], r["label_sha256"]): r for r in summary["label_stats"]}
    assert list(rows) == [("category", None), ("category_smooth0.1", None), ("speech", targets_sha256(trained))]
    expected = label_stats(trained)
    assert rows["speech", targets_sha256(trained)] == {"dataset": "cifar10", "label": "speech",
                                                       "label_sha256": targets_sha256(trained), "runs": 3, **expected}
    category = rows["category", None]
    assert category["shape"] == [10, 10] and category["min_msd"] == pytest.approx(0.2)
    assert category["entropy"] == pytest.approx(-(0.9 * np.log2(0.9) + 0.1 * np.log2(0.1)))  # 9 zeros, a one
    # smoothed: each class's 0.9 against the others' 0.1 / 9, in two places of ten
    assert rows["category_smooth0.1", None]["min_msd"] == pytest.approx(2 * (0.9 - 0.1 / 9) ** 2 / 10)
    other = targets_sha256(other_draw)
    assert summary["label_stats_unmeasured"] == [{"dataset": "cifar10", "label": "speech", "reason": (
        f"no cifar10_speech.npy with the targets its runs trained (label_sha256 {other[:12]}) in --label_dir "
        f"({regenerated}, {kept}), labels/label_files or the --label_dir its runs trained with; pass the "
        "folder holding it as --label_dir")}]
    markdown = (tmp_path / "out" / "tables.md").read_text()
    table = table_rows(markdown, "## Label statistics")
    assert table["speech"] == ["10x6x6", f"{expected['entropy']:.4g}", f"{expected['min_msd']:.4g}",
                               f"{expected['l2_mean']:.4g}", f"{expected['l1_mean']:.4g}", f"{expected['std']:.4g}"]
    assert set(table) == {"label", "category", "category_smooth0.1", "speech"}
    assert f"- cifar10, speech: no cifar10_speech.npy with the targets its runs trained (label_sha256 {other[:12]})" \
        in markdown
    csv_rows = read_csv(tmp_path / "out" / "label_stats.csv")
    assert [(r["label"], r["runs"], r["shape"]) for r in csv_rows] == [
        ("category", "1", "10 10"), ("category_smooth0.1", "1", "10 10"), ("speech", "3", "10 6 6")]
    assert float(csv_rows[2]["entropy"]) == pytest.approx(expected["entropy"])

    # the kept file alone: another draw found too, each row named by its targets in tables.md
    np.save(regenerated / "cifar10_speech.npy", other_draw)
    summary = report(base, tmp_path / "out", draw=False, label_dirs=[kept, regenerated])
    assert sorted(r["runs"] for r in summary["label_stats"] if r["label"] == "speech") == [1, 3]
    assert summary["label_stats_unmeasured"] == []
    table = table_rows((tmp_path / "out" / "tables.md").read_text(), "## Label statistics")
    assert {f"speech ({targets_sha256(trained)[:8]})", f"speech ({other[:8]})"} <= set(table)


def test_label_statistics_read_the_grids_label_dir_and_name_runs_that_recorded_no_targets(tmp_path, capsys):
    """With --grid and no --label_dir, the label files are looked for where the grid's sweep trained
    from (its --label_dir, as its --base_dir); a run older than label_sha256 cannot be matched to a
    file, and says so; a --label_dir that is no folder is an error naming it."""
    import numpy as np
    from labels import targets_sha256
    labels = tmp_path / "labels"
    labels.mkdir()
    targets = np.arange(20, dtype=np.float32).reshape(10, 2)
    np.save(labels / "cifar10_lowdim.npy", targets)
    base = tmp_path / "runs"
    with_config(make_run(base, "lowdim", 7, test_acc=0.5, valid_acc=0.5), label_sha256=targets_sha256(targets))
    make_run(base, "speech", 7, test_acc=0.5, valid_acc=0.5)  # no label_sha256
    grid = tmp_path / "grid.yaml"
    grid.write_text(f"labels: [lowdim, speech]\nseeds: [7]\nlevels: [100]\nstages: [train]\n"
                    f"args: --base_dir {base} --label_dir {labels}\ntrain_args: --epochs 4\n")
    summary = report_main(["--grid", str(grid), "--out", str(tmp_path / "out"), "--no_figures", "--workers", "1"])
    assert [(r["label"], r["min_msd"]) for r in summary["label_stats"]] == [("lowdim", pytest.approx(4.0))]  # rows 2 apart
    assert summary["label_stats_unmeasured"] == [{"dataset": "cifar10", "label": "speech", "reason": (
        "its runs recorded no label_sha256 (trained before train.py recorded which targets)")}]
    capsys.readouterr()
    for folder, what in ((tmp_path / "nowhere", "does not exist"), (labels / "cifar10_lowdim.npy", "is not a folder")):
        assert call_cli(report_main, ["--grid", str(grid), "--out", str(tmp_path / "out"), "--label_dir", str(labels),
                                      "--label_dir", str(folder)]) == 2
        assert capsys.readouterr().err == f"error: --label_dir {folder} {what}\n"


def test_label_statistics_of_category_at_the_most_smoothing_or_an_odd_one_are_not_measured(tmp_path):
    """train.py takes --smoothing up to (C - 1) / C, which gives every class the same target: the
    report ended with 'error: targets: class 1 has the same target as class 0' and wrote nothing.
    Now such a label, and one whose runs recorded a smoothing train.py does not take (an edited
    config.json: measured as unsmoothed, or as a true class below the others), is listed under 'Not
    measured' with why, and the report is written."""
    base = tmp_path / "runs"
    with_config(make_run(base, "category_smooth0.9", 1, test_acc=0.1, valid_acc=0.1), flags={"smoothing": 0.9})
    with_config(make_run(base, "category_smooth0.1", 1, test_acc=0.5, valid_acc=0.5), flags={"smoothing": "0.1"})
    with_config(make_run(base, "category_smooth0.5", 1, test_acc=0.5, valid_acc=0.5), flags={"smoothing": 5})
    summary = report(base, tmp_path / "out", draw=False)
    assert summary["label_stats"] == []
    assert [u["reason"] for u in summary["label_stats_unmeasured"]] == [
        "its runs recorded --smoothing '0.1', not a number in [0, 0.9] as train.py takes for 10 classes",
        "its runs recorded --smoothing 5, not a number in [0, 0.9] as train.py takes for 10 classes",
        "--smoothing 0.9 gives every class the same target (each value 1/10), so there is no distance "
        "between classes to measure"]
    assert ("- cifar10, category_smooth0.9: --smoothing 0.9 gives every class the same target (each value "
            "1/10), so there is no distance between classes to measure") in (tmp_path / "out" / "tables.md").read_text()


def test_label_statistics_of_coarse_runs_count_the_classes_their_folder_names(tmp_path):
    """A run's classes came from its config.json's label_granularity: one that recorded a list (an
    edited config.json) ended the report in a traceback (TypeError: unhashable type: 'list'), and
    a coarse run that recorded none (older flags) was measured on CIFAR-100's 100 one-hot classes.
    Now the run directory's dataset folder, cifar100_coarse as train.py names it, says: 20."""
    import numpy as np
    from labels import targets_sha256
    labels = tmp_path / "labels"
    labels.mkdir()
    targets = np.arange(40, dtype=np.float32).reshape(20, 2)
    np.save(labels / "cifar100_lowdim.npy", targets)
    base = tmp_path / "runs"
    with_config(make_run(base, "category", 1, test_acc=0.5, valid_acc=0.5, dataset="cifar100_coarse"),
                flags={"dataset": "cifar100"})
    with_config(make_run(base, "lowdim", 1, test_acc=0.5, valid_acc=0.5, dataset="cifar100_coarse"),
                label_sha256=targets_sha256(targets), flags={"dataset": "cifar100", "label_granularity": ["coarse"]})
    summary = report(base, tmp_path / "out", draw=False, label_dirs=[labels])
    assert [(r["dataset"], r["label"], r["shape"]) for r in summary["label_stats"]] == [
        ("cifar100_coarse", "category", [20, 20]), ("cifar100_coarse", "lowdim", [20, 2])]
    assert summary["label_stats_unmeasured"] == []
    assert table_rows((tmp_path / "out" / "tables.md").read_text(), "## Label statistics")["category"][0] == "20x20"


def test_label_statistics_of_mcr2_runs_alone_say_they_have_no_targets(tmp_path):
    """A study of MCR2 runs alone has no targets to measure: the section said 'No trained runs.'
    under an intro that counted them trained."""
    make_run(tmp_path / "runs", "mcr2", 1, test_acc=0.5, valid_acc=0.5)
    summary = report(tmp_path / "runs", tmp_path / "out", draw=False)
    markdown = (tmp_path / "out" / "tables.md").read_text()
    assert summary["trained"] == 1 and "No trained runs." not in markdown
    section = markdown[markdown.index("## Label statistics"):markdown.index("## Diverged runs")]
    assert section.endswith("\n\nNo trained run in the tables has class targets (MCR2 regresses none).\n\n")


def test_the_docs_join_of_label_statistics_and_robust_accuracy_keeps_noisy_labels_and_draws(tmp_path):
    """docs/experiments.md's snippet sets label_stats.csv beside robust_accuracy.csv. Merged on
    dataset and label, a noisy label's rows (lowdim_noise0.2), which trained lowdim's targets,
    found no row and were dropped without a word; its join takes the label less its _noise{R}.
    And a label trained in two draws (resnet32 on the shipped file, vgg19 on a regenerated one)
    has two label_stats rows, each of which was paired with every robust row of the label: the
    accuracy CSVs now name the targets their runs trained (label_sha256), and the join pairs each
    row with its own draw's statistics (the snippet's keys and regex, applied here as pandas
    would: pandas is no dependency)."""
    import numpy as np
    from labels import LABEL_DIR, targets_sha256
    shipped = np.load(LABEL_DIR / "cifar10_lowdim.npy")
    lowdim = targets_sha256(shipped)
    redrawn = tmp_path / "redrawn"
    redrawn.mkdir()
    np.save(redrawn / "cifar10_lowdim.npy", np.random.default_rng(1).uniform(0, 1, shipped.shape).astype(np.float32))
    other = targets_sha256(np.load(redrawn / "cifar10_lowdim.npy"))
    base = tmp_path / "runs"
    for noise, robust in ((0.0, 0.3), (0.2, 0.1)):
        with_config(make_run(base, "lowdim", 1, test_acc=0.5, valid_acc=0.5, label_noise=noise,
                             attack=[entry("pgd", EPS8, robust)], clean_acc=0.5), label_sha256=lowdim)
    with_config(make_run(base, "lowdim", 1, test_acc=0.4, valid_acc=0.4, model="vgg19",
                         attack=[entry("pgd", EPS8, 0.2)], clean_acc=0.4), label_sha256=other)
    make_run(base, "category", 1, test_acc=0.6, valid_acc=0.6, attack=[entry("pgd", EPS8, 0.05)], clean_acc=0.6)
    report(base, tmp_path / "out", draw=False, label_dirs=[redrawn, LABEL_DIR])
    snippet = (REPO / "docs" / "experiments.md").read_text().split("import pandas as pd")[1]
    trained = re.search(r'robust\["label"\]\.str\.replace\(r"([^"]+)", "", regex=True\)', snippet)
    assert trained, "the snippet no longer maps a noisy label onto the label it trained"
    keys = re.search(r'pgd\.merge\(stats, on=\[([^]]+)\]\)', snippet)
    assert keys and re.findall(r'"(\w+)"', keys[1]) == ["dataset", "trained", "label_sha256"], \
        "the snippet no longer joins on the dataset, the label trained and its targets"
    # pandas types a column by its cells: label_sha256 empty in every row (category alone measured,
    # the label files not found) read as float NaN, and merge refused it beside the other's text
    reads = re.findall(r'pd\.read_csv\("report/(\w+)\.csv"(, dtype=(\w+))?\)', snippet)
    assert [name for name, _, _ in reads] == ["label_stats", "robust_accuracy"]
    assert all(re.search(rf'^{kind} = \{{"label_sha256": str\}}', snippet, re.M) for _, _, kind in reads), \
        "the snippet reads a label_sha256 column empty in every row as numbers, which merge refuses"
    stats = {(r["dataset"], r["label"], r["label_sha256"]): r for r in read_csv(tmp_path / "out" / "label_stats.csv")}
    assert len(stats) == 3  # category, and lowdim's two draws
    robust = read_csv(tmp_path / "out" / "robust_accuracy.csv")
    assert sorted((r["model"], r["label"], r["label_sha256"]) for r in robust) == [
        ("resnet32", "category", ""), ("resnet32", "lowdim", lowdim), ("resnet32", "lowdim_noise0.2", lowdim),
        ("vgg19", "lowdim", other)]
    joined = {(r["model"], r["label"]): stats[r["dataset"], re.sub(trained[1], "", r["label"]), r["label_sha256"]]
              for r in robust}  # a KeyError: a row the join drops
    assert joined["vgg19", "lowdim"]["runs"] == "1" and joined["resnet32", "lowdim_noise0.2"]["runs"] == "2"
    clean = read_csv(tmp_path / "out" / "clean_accuracy.csv")
    assert {(r["model"], r["label"]): r["label_sha256"] for r in clean} == {
        ("resnet32", "category"): "", ("resnet32", "lowdim"): lowdim, ("resnet32", "lowdim_noise0.2"): lowdim,
        ("vgg19", "lowdim"): other}
    runs = read_csv(tmp_path / "out" / "runs.csv")  # which draw each run trained, excluded or not
    assert {(r["model"], r["label"]): r["label_sha256"] for r in runs} == {
        ("resnet32", "category"): "", ("resnet32", "lowdim"): lowdim, ("resnet32", "lowdim_noise0.2"): lowdim,
        ("vgg19", "lowdim"): other}


def test_a_read_only_out_names_the_flag_that_moves_it(study, tmp_path, monkeypatch, capsys):
    """--out defaults to ./report, in a read-only folder where report.py runs from a shared
    install: the error named 'report' alone, not the flag that writes elsewhere."""
    from conftest import read_only
    (tmp_path / "ro").mkdir()
    read_only(monkeypatch, tmp_path / "ro")
    out = tmp_path / "ro" / "report"
    assert call_cli(report_main, ["--base_dir", str(study), "--out", str(out), "--workers", "1", "--no_figures"]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (f"error: could not write {out}: Read-only file system; "
                                                        "pass another --out")


CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def of_cifar10(test):
    """A CIFAR-10 confusion matrix holding the counts `test` of its first classes, none of the others."""
    return [row + [0] * (10 - len(row)) for row in test] + [[0] * 10 for _ in range(10 - len(test))]


def with_confusion(run_dir, test):
    """confusion.json in `run_dir` as train.py writes it, with the test counts `test` of CIFAR-10's
    first classes (`of_cifar10`); its results.json's test_images and test_acc made theirs, as
    train.py scores them."""
    test = of_cifar10(test)
    (run_dir / "confusion.json").write_text(json.dumps({"classes": CIFAR10_NAMES, "test": test, "valid": None}))
    results = json.loads((run_dir / "results.json").read_text())
    total = sum(map(sum, test))
    results |= {"test_images": total, "test_acc": sum(test[c][c] for c in range(len(test))) / total}
    (run_dir / "results.json").write_text(json.dumps(results))


def test_class_accuracy_csv_is_each_classs_test_accuracy_over_seeds(tmp_path):
    """class_accuracy.csv: per class, its row's diagonal over the row's sum in each seed's
    confusion.json, mean and sample std over the seeds (a class without test images in a seed has
    no accuracy there); seeds without a confusion.json that holds their results.json's test counts
    are left out of it alone, each named in summary.json with why. A later report of the runs
    without any removes the file."""
    base, out = tmp_path / "outputs", tmp_path / "report"
    with_confusion(make_run(base, "category", 1, test_acc=0.5, valid_acc=0.5), [[3, 1, 0], [0, 2, 2], [1, 0, 1]])
    with_confusion(make_run(base, "category", 2, test_acc=0.5, valid_acc=0.5), [[4, 0, 0], [1, 1, 0], [0, 0, 0]])
    other = make_run(base, "speech", 1, test_acc=0.5, valid_acc=0.5)  # another model's counts
    (other / "confusion.json").write_text(json.dumps({"classes": CIFAR10_NAMES, "test": of_cifar10([[1, 0], [0, 1]]),
                                                      "valid": None}))
    broken = make_run(base, "speech", 2, test_acc=0.5, valid_acc=0.5)
    (broken / "confusion.json").write_text(json.dumps({"classes": ["a", "b"], "test": [[1, 0.5], [0, 1]]}))
    two = make_run(base, "speech", 4, test_acc=0.5, valid_acc=0.5)  # another dataset's, its counts the run's
    (two / "confusion.json").write_text(json.dumps({"classes": ["a", "b"], "test": [[1, 1], [0, 0]]}))
    results = json.loads((two / "results.json").read_text())
    (two / "results.json").write_text(json.dumps(results | {"test_images": 2}))
    make_run(base, "speech", 3, done_epochs=2)  # unfinished: in no table, and not named
    summary = report(base, out, draw=False)
    assert "class_accuracy.csv" in summary["files"]
    # the others are complete: per-class counts are no part of a run's result
    assert [i["run"] for i in summary["incomplete"]] == ["cifar10/resnet32/speech/level100/seed3"]
    rows = read_csv(out / "class_accuracy.csv")
    assert list(rows[0]) == ["dataset", "model", "label", "level", "class", "class_name", "n", "seeds",
                             "test_acc_mean", "test_acc_std", "test_images", "label_sha256"]
    assert [{k: r[k] for k in ("label", "class", "class_name", "n", "seeds", "test_images")} for r in rows[:4]] == [
        {"label": "category", "class": "0", "class_name": "airplane", "n": "2", "seeds": "1 2", "test_images": "4"},
        {"label": "category", "class": "1", "class_name": "automobile", "n": "2", "seeds": "1 2", "test_images": "2 4"},
        {"label": "category", "class": "2", "class_name": "bird", "n": "1", "seeds": "1", "test_images": "0 2"},
        {"label": "category", "class": "3", "class_name": "cat", "n": "0", "seeds": "", "test_images": "0"}]
    assert len(rows) == 10 and {r["test_acc_mean"] for r in rows[3:]} == {""}  # no test image of theirs
    # 3/4 and 4/4; 2/4 and 1/2; 1/2, and no image of class 2 in seed 2
    assert [float(r["test_acc_mean"]) for r in rows[:3]] == pytest.approx([0.875, 0.5, 0.5])
    # ddof=1: |0.75 - 1| / sqrt(2); none for one seed
    assert float(rows[0]["test_acc_std"]) == pytest.approx(0.125 * 2 ** 0.5)
    assert (float(rows[1]["test_acc_std"]), rows[2]["test_acc_std"]) == (0.0, "")
    assert summary["class_accuracy"][2]["test_acc_n"] == 1
    # tables.md: a label by class table of the same numbers, in %, after the label statistics
    markdown = (out / "tables.md").read_text()
    table = table_rows(markdown, "## Per-class test accuracy\n")
    assert table["label"] == CIFAR10_NAMES
    assert table["category"] == ["87.50 ± 17.68 (n=2)", "50.00 ± 0.00 (n=2)", "50.00 (n=1)"] + ["-"] * 7
    section = markdown.split("## Per-class")[1].split("## Target distance")[0]
    assert "### cifar10, resnet32 (level 100)\n" in markdown and "speech |" not in section
    # and says which runs of the tables it leaves out, and why: their seeds are in no n of it
    assert section.endswith(
        "Not measured:\n\n"
        "- cifar10/resnet32/speech/level100/seed1: confusion.json holds other test counts than results.json "
        "scores (2/2 correct, against test_acc 0.5 of 1017 images): another model's?\n"
        "- cifar10/resnet32/speech/level100/seed2: confusion.json is not valid JSON or has no test counts of "
        "its classes (C names, C rows of C counts)\n"
        "- cifar10/resnet32/speech/level100/seed4: confusion.json holds 2 classes, not cifar10's 10: another "
        "run's?\n\n")
    assert summary["class_accuracy_unmeasured"] == [
        {"run": "cifar10/resnet32/speech/level100/seed1", "run_dir": "cifar10/seed1/resnet32/model_speech",
         "reason": "confusion.json holds other test counts than results.json scores (2/2 correct, against "
                   "test_acc 0.5 of 1017 images): another model's?"},
        {"run": "cifar10/resnet32/speech/level100/seed2", "run_dir": "cifar10/seed2/resnet32/model_speech",
         "reason": "confusion.json is not valid JSON or has no test counts of its classes (C names, C rows of "
                   "C counts)"},
        {"run": "cifar10/resnet32/speech/level100/seed4", "run_dir": "cifar10/seed4/resnet32/model_speech",
         "reason": "confusion.json holds 2 classes, not cifar10's 10: another run's?"}]
    for run_dir in base.glob("cifar10/seed*/resnet32/model_category"):
        (run_dir / "confusion.json").unlink()
    again = report(base, out, draw=False)
    assert again["class_accuracy"] == [] and not (out / "class_accuracy.csv").exists()
    assert "## Per-class" not in (out / "tables.md").read_text()
    # CIFAR-100's 100 classes are too many columns for a table: class_accuracy.csv's alone
    hundred = make_run(base, "category", 1, test_acc=0.01, valid_acc=0.01, dataset="cifar100")
    counts = [[int(i == j) for j in range(100)] for i in range(100)]
    (hundred / "confusion.json").write_text(json.dumps({"classes": [f"c{i}" for i in range(100)], "test": counts}))
    results = json.loads((hundred / "results.json").read_text())
    (hundred / "results.json").write_text(json.dumps(results | {"test_images": 100, "test_acc": 1.0}))
    last = report(base, out, draw=False)
    assert len(last["class_accuracy"]) == 100 and len(read_csv(out / "class_accuracy.csv")) == 100
    assert "### cifar100, resnet32 (level 100)\n\n100 classes: in class_accuracy.csv.\n" in (out / "tables.md").read_text()
    assert len(again["class_accuracy_unmeasured"]) == 5 and len(again["incomplete"]) == 1


def test_spearman_ranks_ties_by_their_mean_rank():
    """Spearman's rho by hand: x = 10, 20, 20, 30, 40 ranks 1, 2.5, 2.5, 4, 5 and y = 3, 1, 2, 2, 5
    ranks 4, 1, 2.5, 2.5, 5; about the mean rank 3, sum dx dy = -2 + 1 + 0.25 - 0.5 + 4 = 2.75 and
    sum dx^2 = sum dy^2 = 9.5, so rho = 2.75 / 9.5 = 11/38. Values within `tolerance` tie, in a chain."""
    from report import ranks, spearman
    x, y = ranks([10, 20, 20, 30, 40]), ranks([3, 1, 2, 2, 5])
    assert x.tolist() == [1, 2.5, 2.5, 4, 5] and y.tolist() == [4, 1, 2.5, 2.5, 5]
    assert spearman(x, y) == pytest.approx(11 / 38)
    assert spearman(ranks([1, 2, 3]), ranks([0.3, 0.2, 0.1])) == pytest.approx(-1)
    assert ranks([2.0, 1.0, 1.0 + 1e-9]).tolist() == [3, 1, 2]
    assert ranks([2.0, 1.0, 1.0 + 1e-9], tolerance=1e-6).tolist() == [3, 1.5, 1.5]
    assert ranks([0.0, 1.2, 0.6], tolerance=0.7).tolist() == [2, 2, 2]  # 0 ~ 0.6 ~ 1.2


def test_a_pairs_confusion_rate_is_both_ways_over_both_classes_images():
    """Classes 0 and 1: 2 of class 0's 8 test images decoded as 1 and 3 of class 1's 7 as 0, so
    5 / 15; 0 and 2: 1 / 8 (class 2 has none); 1 and 2: 0 / 7; 2 and 3, no images: no rate."""
    from report import pair_rates
    rates = pair_rates([[5, 2, 1, 0], [3, 4, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    assert rates[:5].tolist() == pytest.approx([1 / 3, 1 / 8, 0, 0, 0])  # (0,1) (0,2) (0,3) (1,2) (1,3)
    assert math.isnan(rates[5])  # (2, 3)


def test_target_confusion_ties_targets_float32_cannot_tell_apart():
    """uniform's targets (class i the constant i * 80/9, stored in float32) lie 9 distances apart;
    float32's rounding makes pairs of one distance differ by ~1e-7 of the largest, which would rank
    them apart: they tie. Its 45 pairs, and only the closest confused: rho is the correlation of the
    gaps' mean ranks with one pair's."""
    import numpy as np
    from labels import target_distances
    from report import ranks, target_confusion
    uniform = (np.arange(10, dtype=np.float32) * np.float32(80 / 9))[:, None].repeat(4, 1)
    distances = target_distances(uniform)[np.triu_indices(10, 1)]
    assert len(set(ranks(distances).tolist())) > 9  # float32's rounding, ranked as it is
    test = np.diag([10] * 10)
    test[0, 0], test[0, 1] = 9, 1  # classes 0 and 1, one gap apart
    measured = target_confusion(uniform, test.tolist())
    gap = np.array([j - i for i, j in zip(*np.triu_indices(10, 1))])  # the 9 - g pairs of gap g tie
    gap_rank = {g: (gap < g).sum() + ((gap == g).sum() + 1) / 2 for g in range(1, 10)}
    x, y = np.array([gap_rank[g] for g in gap]), np.where(np.arange(45) == 0, 45, 22.5)
    assert measured == {"spearman": pytest.approx(np.corrcoef(x, y)[0, 1]), "pairs": 45}
    assert measured["spearman"] < 0
    assert target_confusion(uniform, np.diag([10] * 10).tolist()) == (
        "its 45 pairs of classes all have one confusion rate (0): nothing to rank")


def test_target_confusion_csv_correlates_target_distance_with_confusion_over_seeds(tmp_path):
    """target_confusion.csv: per run, Spearman's rho over its class pairs between the distance of
    their targets and their confusion rate, mean and sample std over seeds, and each seed's. Targets
    2^c - 1 on a line put the 45 pairs at 45 distances. Seed 1 confuses each pair the less, the
    farther apart: rho -1. Seed 2 confuses the closest pair alone (classes 0 and 1), the other 44
    tie at 0: about the mean rank 23, rho = (1 - 23) / sqrt(45 (45^2 - 1) / 12 * 44 / 45). Category
    and MCR2 are left out with why, as a run without confusion.json is."""
    import numpy as np
    from labels import targets_sha256
    labels, base, out = tmp_path / "labels", tmp_path / "outputs", tmp_path / "report"
    labels.mkdir()
    targets = np.stack([2.0 ** np.arange(10) - 1, np.zeros(10)], 1).astype(np.float32)
    np.save(labels / "cifar10_lowdim.npy", targets)
    sha = targets_sha256(targets)
    pairs = sorted(zip(*np.triu_indices(10, 1)), key=lambda p: targets[p[1], 0] - targets[p[0], 0])
    far = [[0] * 10 for _ in range(10)]
    for k, (i, j) in enumerate(pairs):  # the k-th closest: 45 - k images of i decoded as j
        far[i][j] = 45 - k
    for i in range(10):  # 500 test images a class
        far[i][i] = 500 - sum(far[i])
    close = [[10 * (i == j) for j in range(10)] for i in range(10)]
    close[0][0], close[0][1] = 9, 1
    for seed, test in ((1, far), (2, close)):
        with_confusion(with_config(make_run(base, "lowdim", seed, test_acc=0.5, valid_acc=0.5), label_sha256=sha), test)
    with_config(make_run(base, "lowdim", 3, test_acc=0.5, valid_acc=0.5), label_sha256=sha)  # no confusion.json
    for label in ("category", "mcr2"):
        with_confusion(make_run(base, label, 1, test_acc=0.5, valid_acc=0.5), close)
    summary = report(base, out, draw=False, label_dirs=[labels])
    assert "target_confusion.csv" in summary["files"]
    rho = (1 - 23) / (45 * (45 ** 2 - 1) / 12 * 44 / 45) ** 0.5  # -0.2554
    rows = read_csv(out / "target_confusion.csv")
    assert [{k: v for k, v in r.items() if k not in ("spearman_mean", "spearman_std", "spearman")} for r in rows] == [
        {"dataset": "cifar10", "model": "resnet32", "label": "lowdim", "level": "100", "n": "2", "seeds": "1 2",
         "pairs": "45", "label_sha256": sha}]
    assert [float(v) for v in rows[0]["spearman"].split()] == pytest.approx([-1, rho])
    assert float(rows[0]["spearman_mean"]) == pytest.approx((rho - 1) / 2)
    assert float(rows[0]["spearman_std"]) == pytest.approx((1 + rho) / 2 ** 0.5)  # ddof=1
    assert summary["target_confusion"][0]["spearman"] == pytest.approx([-1, rho])
    assert summary["target_confusion_unmeasured"] == [
        {"run": "cifar10/resnet32/category/level100/seed1", "run_dir": "cifar10/seed1/resnet32/model_category",
         "reason": "category decodes by the argmax of its logits, not by the nearest target, and its one-hot "
                   "targets lie all one distance apart: no distance to rank"},
        {"run": "cifar10/resnet32/lowdim/level100/seed3", "run_dir": "cifar10/seed3/resnet32/model_lowdim",
         "reason": "no confusion.json (trained by a labelrep before train.py wrote one)"},
        {"run": "cifar10/resnet32/mcr2/level100/seed1", "run_dir": "cifar10/seed1/resnet32/model_mcr2",
         "reason": "MCR2 regresses no class targets (it decodes by its classes' subspaces)"}]
    markdown = (out / "tables.md").read_text()
    section = markdown.split("## Target distance and confusion\n")[1].split("## Diverged")[0]
    assert "Negative: closer targets, more confusion" in section
    table = table_rows(markdown, "## Target distance and confusion\n")
    std = (1 + rho) / 2 ** 0.5
    assert table["lowdim"] == [f"{(rho - 1) / 2:.2f} ± {std:.2f} (n=2)", "45"] == ["-0.63 ± 0.53 (n=2)", "45"]
    assert section.endswith("\n".join(f"- {u['run']}: {u['reason']}" for u in summary["target_confusion_unmeasured"])
                            + "\n\n")
    # without the label file, the run is named with the file it needs
    (labels / "cifar10_lowdim.npy").unlink()
    again = report(base, out, draw=False, label_dirs=[labels])
    assert again["target_confusion"] == [] and not (out / "target_confusion.csv").exists()
    assert again["target_confusion_unmeasured"][1]["reason"].startswith(
        f"no cifar10_lowdim.npy with the targets its runs trained (label_sha256 {sha[:12]})")
    assert "No run with its confusion.json regressed class targets." in (out / "tables.md").read_text()
