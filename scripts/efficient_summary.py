"""Summarise the efficient-SAM study (issue 15): error, cost and the share of SAM's gain per variant.

Usage:
    python scripts/efficient_summary.py RUNS_DIR [--out-dir results/digits/efficient] [--bootstrap 20000]
        [--bench BENCH_LOG]

Reads every results.json under RUNS_DIR (results/digits/efficient/run_study.sh writes them); one row per
optimizer, over its seeds. Per variant:

* test error: mean and the half-width of the 95% t-interval over seeds (the paper's statistic);
* cost: with ``--bench``, the x SGD of ``benchmarks/bench_sam.py --efficient --model wrn_tiny_digits``
  (all variants interleaved in one process: the reliable number on a shared machine); always also the
  study's own training time relative to SGD, per seed ``images_per_s(SGD) / images_per_s(variant)``
  (start-up and evaluation excluded), mean and 95% t-interval;
* share of SAM's gain kept: ``(err_SGD - err_variant) / (err_SGD - err_SAM)`` of the seed means, with a
  95% percentile bootstrap interval that resamples seeds jointly (the runs of one seed share the data
  split, label noise and initial weights, so they are paired).

Writes ``summary.md`` (table + goal check), ``summary.csv`` and ``pareto.png`` (error vs cost, the
non-dominated variants joined) into --out-dir (analysis/efficient_study.py).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root: analysis/, models/, data/

from analysis.efficient_study import bench_costs, load, setting_title, study_setting, summarise, write_summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", type=Path)
    p.add_argument("--out-dir", type=Path, default=Path("results/digits/efficient"))
    p.add_argument("--bootstrap", type=int, default=20000)
    p.add_argument(
        "--bench",
        type=Path,
        default=None,
        help="output of bench_sam.py --efficient --model wrn_tiny_digits: its x SGD is the cost (else the study's time)",
    )
    args = p.parse_args(argv)
    try:
        bench = bench_costs(args.bench) if args.bench else None
        runs = load(args.runs)
        rows = summarise(runs, args.bootstrap, bench=bench)
    except ValueError as err:
        raise SystemExit(f"error: {err}") from err
    print(write_summary(rows, args.out_dir, setting_title(study_setting(runs))).read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
