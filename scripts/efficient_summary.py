"""Summarise the efficient-SAM study (issues 15, 21): error, cost and the share of SAM's gain per variant.

Usage:
    python scripts/efficient_summary.py RUNS_DIR --bench BENCH.json [--bench-model wrn_tiny_digits]
        [--out-dir results/digits/efficient] [--bootstrap 20000]

Reads every results.json under RUNS_DIR (results/digits/efficient/run_study.sh writes them), one section per
label-noise setting, one row per optimizer over its paired seeds: test error (95% t-interval), the share of
SAM's gain kept (95% paired bootstrap), the cost x SGD from ``benchmarks/bench_variants.py --out X.md``'s
``X.json`` at the two-pass share the runs took (95% bootstrap over the benchmark's rounds; without
``--bench``, the runs' own training time), and the goal's verdict on the intervals (yes / no / undecided).
Runs whose shared settings differ, or one variant run with two settings, are refused (exit 2).
Writes summary.md, summary.csv and pareto.png into --out-dir (analysis/efficient_study.py).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root: analysis/, models/, data/

from analysis.efficient_study import load, load_bench, write_summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", type=Path)
    p.add_argument("--out-dir", type=Path, default=Path("results/digits/efficient"))
    p.add_argument("--bootstrap", type=int, default=20000)
    p.add_argument("--bench", type=Path, default=None, help="bench_variants.py --out X.md's X.json")
    p.add_argument("--bench-model", default="wrn_tiny_digits", help="the benchmark's model the runs trained")
    args = p.parse_args(argv)
    try:
        bench = load_bench(args.bench, args.bench_model) if args.bench else None
        settings = load(args.runs)
        path = write_summary(settings, args.out_dir, args.bootstrap, bench=bench)
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(path.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
