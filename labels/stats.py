"""Measure label files: a row of statistics per file, as a table, Markdown or JSON.

    python -m labels.stats labels/label_files/cifar10_*.npy
    python -m labels.stats --markdown ../shared/reference/label_representations/cifar10_speech.npy \
        labels/label_files/cifar10_speech.npy
    python -m labels.stats --json labels/label_files/cifar100_normal_dim=*.npy
    # how close one file is to another, class by class (e.g. regenerated vs published speech)
    python -m labels.stats --compare ../shared/reference/label_representations/cifar10_speech.npy \
        /tmp/labels/cifar10_speech.npy

Columns (targets (C, ...) flattened to C vectors of D values):
    shape, min, max, std  of the raw values
    l1_mean, l1_std       mean / std over class pairs of the L1 distance, and
    l2_mean, l2_std       of the L2 distance, after min-max normalising the
                          whole file to [0, 1]; the paper's get_distances.py for
                          vector labels (it swaps the L1 and L2 names); for
                          (C, H, W) labels it took matrix norms of each (H, W)
                          difference (largest column sum, largest singular
                          value), not distances
    min_msd               smallest mean squared distance between two classes'
                          raw targets: the margin nearest-target (MSE) decoding
                          has to separate
    entropy               Shannon entropy (bits) of each class's values rounded
                          to 6 decimals, averaged over classes (as the
                          follow-up computed it)

The table (--json: one JSON line; --compare: a line per file) goes to stdout,
warnings to stderr. Exit status: 0 done, 2 after one `error:` line (bad
input), 130 Ctrl-C.
"""
import sys
from pathlib import Path

if __name__ == "__main__":  # first: a Ctrl-C while modules load is one line, not a traceback
    if not __package__:  # run as a file (python labels/stats.py), not with -m: import from the repo
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from utils import errors
    errors.quiet_interrupts()

import argparse

import numpy as np

from labels import LabelError, check_targets, decoding_problem, read_targets
from utils.atomic import json_text, markdown_table
from utils.errors import CliParser, UsageError, doc_paragraphs, log, nonempty, run_cli

COLUMNS = ("shape", "min", "max", "std", "l1_mean", "l1_std", "l2_mean", "l2_std", "min_msd",
           "entropy")


def value_entropy(values, decimals=6):
    """Shannon entropy in bits of the empirical distribution of `values` rounded to `decimals`."""
    _, counts = np.unique(np.round(np.asarray(values, dtype=np.float64).ravel(), decimals),
                          return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


def label_stats(targets):
    """Statistics of targets (C, ...) with C >= 2 that a label file may hold (`check_targets`:
    numeric, finite, classes distinct; measured in float32, as trained), as a dict keyed by COLUMNS."""
    targets = check_targets(np.asarray(targets), "targets")
    if len(targets) < 2:
        raise LabelError(f"need targets of shape (C, ...) with C >= 2, got {targets.shape}")
    from scipy.spatial.distance import pdist  # here: --help and a typo answer without scipy's load
    vectors = targets.reshape(len(targets), -1).astype(np.float64)
    low, high = vectors.min(), vectors.max()
    unit = (vectors - low) / (high - low) if high > low else np.zeros_like(vectors)
    l1 = pdist(unit, "cityblock")
    l2 = pdist(unit, "euclidean")
    msd = pdist(vectors, "sqeuclidean") / vectors.shape[1]
    return {
        "shape": list(targets.shape),
        "min": float(low), "max": float(high), "std": float(vectors.std()),
        "l1_mean": float(l1.mean()), "l1_std": float(l1.std()),
        "l2_mean": float(l2.mean()), "l2_std": float(l2.std()),
        "min_msd": float(msd.min()),
        "entropy": float(np.mean([value_entropy(v) for v in vectors])),
    }


def _correlation(x, y):
    """Pearson correlation; for a constant vector (e.g. a uniform label) 1 when the two are
    equal, else nan."""
    dx, dy = x - x.mean(), y - y.mean()
    scale = np.sqrt((dx * dx).sum() * (dy * dy).sum())
    if scale == 0:
        return 1.0 if np.array_equal(x, y) else float("nan")
    return float((dx * dy).sum() / scale)


def compare(reference, candidate):
    """How far `candidate` targets are from `reference` (same shape): mean and max absolute
    difference, and the lowest and mean per-class Pearson correlation."""
    reference, candidate = np.asarray(reference, np.float64), np.asarray(candidate, np.float64)
    if reference.shape != candidate.shape:
        raise LabelError(f"shapes differ: {reference.shape} vs {candidate.shape}")
    a = reference.reshape(len(reference), -1)
    b = candidate.reshape(len(candidate), -1)
    correlations = [_correlation(x, y) for x, y in zip(a, b, strict=True)]
    return {"mean_abs_diff": float(np.abs(a - b).mean()),
            "max_abs_diff": float(np.abs(a - b).max()),
            "min_class_corr": float(np.min(correlations)),
            "mean_class_corr": float(np.mean(correlations))}


def value_text(value):
    """A statistic as a table shows it: a shape as 10x64x64, a number to 4 significant digits."""
    if isinstance(value, list):
        return "x".join(map(str, value))
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.3e}"
    return str(value)


def format_rows(rows, markdown=False):
    """Rows (dicts with 'file' and COLUMNS) as an aligned text table or a Markdown table."""
    header = ("file",) + COLUMNS
    cells = [[value_text(row[c]) for c in header] for row in rows]
    if markdown:
        return markdown_table(header, cells)
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(header)]
    return "\n".join("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                               for i, (c, w) in enumerate(zip(r, widths, strict=True)))
                     for r in [list(header)] + cells)


def file_row(path, measure, what=""):
    """{"file": path, **measure(its targets)}; a LabelError of `measure` names the file (`what`, then
    the path), as read_targets' own do."""
    targets = read_targets(path)
    try:
        return {"file": str(path), **measure(targets)}
    except LabelError as err:
        raise LabelError(f"{what}{path}: {err}") from None


def stats_row(path):
    """`file_row` of `label_stats`, with a warning on stderr where nearest-target decoding cannot tell
    the targets apart in float32 (`decoding_problem`): train.py and sweep.py refuse such a file, and
    its statistics (min_msd, the smallest margin) say why, so they are printed too."""
    def measure(targets):
        if problem := decoding_problem(targets, f"label file {path}"):
            log(f"warning: {problem}; train.py and sweep.py refuse it")
        return label_stats(targets)
    return file_row(path, measure)


def run(args):
    if args.compare and args.markdown:  # was ignored: the comparison has no Markdown table
        raise UsageError("--markdown is for the statistics table; --compare prints lines, or JSON "
                         "with --json")
    if args.compare:
        reference = read_targets(args.compare)
        rows = [file_row(p, lambda targets: compare(reference, targets), f"--compare {args.compare} against ")
                for p in args.files]
        if args.json:
            print(json_text(rows))
        else:
            for row in rows:
                print(f"{row['file']}: mean |diff| {row['mean_abs_diff']:.4f}, max |diff| "
                      f"{row['max_abs_diff']:.3f}, per-class correlation min "
                      f"{row['min_class_corr']:.5f} mean {row['mean_class_corr']:.5f}")
        return rows
    rows = [stats_row(Path(p)) for p in args.files]
    print(json_text(rows) if args.json else format_rows(rows, args.markdown))
    return rows


def build_parser():
    about = doc_paragraphs(__doc__)  # --help ends with the docstring's columns
    parser = CliParser(prog="python -m labels.stats", description=about[0], epilog="\n\n".join(about[2:]),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    # nonempty: ~ is the home folder in a notebook's argv too, and "$REF" unset is an error, where
    # `--compare ""` printed the statistics table instead of a comparison
    parser.add_argument("files", nargs="+", type=nonempty, help="label files (.npy, (C, ...))")
    style = parser.add_mutually_exclusive_group()
    style.add_argument("--json", action="store_true", help="print JSON (one line) instead of a table")
    style.add_argument("--markdown", action="store_true", help="print a Markdown table")
    parser.add_argument("--compare", metavar="REFERENCE", type=nonempty, default=None,
                        help="instead, compare each file with this one (same shape): mean and "
                        "max |diff|, per-class correlation, as lines or --json")
    return parser


def main(argv=None):
    """Print the statistics (or --compare lines) the command line `argv` (sys.argv's where None)
    asks for; their rows, as --json prints them. As train.main: bad input raises UsageError and Ctrl-C
    KeyboardInterrupt (it returned exit status 2 or 130, and a notebook's loop of calls went on
    past both); `run_cli` makes them the command line's `error:` line and exit status."""
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    run_cli(main)
