"""Tables and figures of the digits transfer study (results/digits/transfer/run_study.py) from its runs.

Usage:
    python scripts/summarise_transfer.py RUNS_DIR [--out results/digits/transfer]

Reads RUNS_DIR/{grid,pretrain,finetune}/*/results.json and evaluation.json; writes OUT/summary.md (every
table), OUT/summary.csv (one row per metric and comparison) and OUT/figures/*.png. Each arm is the mean ±
the half-width of its 95% t-interval over seeds; SAM and SGD runs of one seed share the initialisation and
the data order, so each comparison is the paired difference (SAM - SGD, same seed), its 95% t-interval and
the paired t-test's p-value; "yes" = the interval excludes 0.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root: analysis/, models/, data/

from analysis.transfer_study import write_summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("runs_dir", type=Path)
    parser.add_argument("--out", type=Path, default=Path("results/digits/transfer"))
    args = parser.parse_args(argv)
    try:
        write_summary(args.runs_dir, args.out)
    except ValueError as err:
        sys.exit(str(err))
    print(f"wrote {args.out / 'summary.md'}, {args.out / 'summary.csv'} and {args.out / 'figures'}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
