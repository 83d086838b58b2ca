"""Plot our runs: test error vs rho (with the SGD baseline and the paper's point) and training curves.

Usage:
    python scripts/plot.py RUNS_DIR [--out-dir DIR]

Reads every results.json below RUNS_DIR (and the metrics.jsonl beside it) and writes PNGs to --out-dir
(default: RUNS_DIR/plots), one pair per model / dataset / augment / epochs / label-noise setting:

  rho_<setting>.png     test error vs rho of the SAM runs, one line per (optimizer, m), mean ± 95% CI
                        over seeds as error bars; the SGD baseline (optimizer sgd or rho = 0) as a
                        horizontal line with its CI band; the paper's SAM number as a star at the paper's
                        rho and its SGD number as a dotted line, where the paper has the cell.
  curves_<setting>.png  train loss and test error vs epoch from metrics.jsonl, one line per cell (mean
                        over seeds, band = min..max over seeds).

Unreadable files are reported on stderr and skipped; failed runs (a NaN/inf test error) are listed and
left out. Prints the path of every PNG written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root: analysis/, models/, data/

from analysis.paper_tables import comparable_cells, load_paper_cells
from analysis.plots import write_plots
from analysis.runs import load_runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("runs_dir", type=Path, metavar="RUNS_DIR")
    parser.add_argument(
        "--out-dir", type=Path, default=None, help="where the PNGs go (default: RUNS_DIR/plots)"
    )
    args = parser.parse_args(argv)
    if not args.runs_dir.is_dir():
        parser.error(f"RUNS_DIR {str(args.runs_dir)!r} is not a directory")
    out_dir = args.out_dir or args.runs_dir / "plots"

    failed: list[dict] = []
    runs = load_runs(args.runs_dir, failed=failed)
    for run in failed:
        print(f"failed run, not plotted: {run['run_dir']} ({run['reason']})")
    if not runs:
        print(f"no usable results.json under {args.runs_dir}: nothing to plot")
        return 0
    written = write_plots(runs, comparable_cells(load_paper_cells()), out_dir)
    for path in written:
        print(path)
    if not written:
        print("no plots written (no SAM runs for a rho sweep and no metrics.jsonl for curves)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
