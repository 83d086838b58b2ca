"""Compare our runs with the paper's Tables 1, 2, 3 (finetuning), 4, 5 and 10 (finetuning at rho = 0.05).

Usage:
    python scripts/compare.py RUNS_DIR [--out FILE] [--csv] [--missing] [--tables table1 table2 ...]

Finds every results.json below RUNS_DIR and pools runs only where they computed the same thing: the same
cell (model, dataset, augment, epochs, optimizer, rho, m, label_noise, as the trainer recorded them: a SAM
run with rho=0 is the SGD baseline) and every other recorded setting equal (the resolved config, without
the seed and the operational keys such as logger, device, dataset.root, trainer.eval_batch_size). Runs of
one cell that differ (another lr, a one-batch smoke run, ...) are separate rows whose "differs" column
names the settings that set them apart ("lr=0.001"); a copy of a run directory (same seed, same settings)
counts once, and the seeds column names it ("1 (+1 duplicate: PATH)"). Per row: our mean test error ±
the 95% CI half-width over seeds (t_{0.975,n-1} * s / sqrt(n), the paper's statistic; "n/a" for one seed),
the number of seeds, and the paper's number and the difference ours - paper, only where the row ran the
paper cell's experiment file (configs/experiment) exactly, seed aside (rho too where the paper does not
publish it: Table 3's "optimal" rho). Otherwise the paper column says why: "smoke run (limited batches):
not comparable", "not the paper's recipe (experiment=NAME): lr=0.001 (recipe: 0.1)", ... A results.json
without a recorded config (older code) pools and matches by the cell keys alone, and its row says so.
Runs that failed (a NaN/inf test error: never averaged) and job directories without a results.json are
listed in their own sections. The paper cells without runs are counted, and listed (last) with
--missing. Unreadable results.json files are reported on stderr and skipped.
Runs with an evaluation.json (scripts/evaluate.py) add a "beyond test error" table: ECE, NLL, feature
rank, linear-probe and corruption error per cell, mean ± 95% CI over seeds.

Table 1's SGD cells are the paper's best of N and 2N epochs (Sec. 3.1): where our runs have both halves
(the *_sgd and *_sgd_2n experiment files), a section (CSV status best_of_n_and_2n) gives the better mean,
which half won, and its difference to the paper, beside each half's own row.

    --csv          print CSV instead of Markdown (one row per group of identical runs; status
                   matched|not_comparable (note says why)|no_paper_cell, missing with --missing, and one row
                   per run that failed (failed_run: NaN/inf test error) or has no results.json (missing_run))
    --missing      also list the paper cells without runs (after our runs)
    --out FILE     also write the output (Markdown, or CSV with --csv) to FILE
    --tables ...   which paper tables to compare with (default: all)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root: analysis/, models/, data/

from analysis.paper_comparison import compare_with_paper, hidden_missing_line
from analysis.paper_tables import TABLE_FILES


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("runs_dir", type=Path, metavar="RUNS_DIR")
    parser.add_argument("--out", type=Path, metavar="FILE", help="also write the output to FILE")
    parser.add_argument("--csv", action="store_true", help="CSV instead of Markdown")
    parser.add_argument("--missing", action="store_true", help="also list the paper cells without runs")
    parser.add_argument("--tables", nargs="+", choices=sorted(TABLE_FILES), default=sorted(TABLE_FILES))
    args = parser.parse_args(argv)
    if not args.runs_dir.is_dir():
        parser.error(f"RUNS_DIR {str(args.runs_dir)!r} is not a directory")

    text, n_runs, n_missing = compare_with_paper(
        args.runs_dir, args.tables, as_csv=args.csv, show_missing=args.missing
    )
    if args.csv and not n_runs:
        print(f"no usable results.json under {args.runs_dir}", file=sys.stderr)
    if args.csv and not args.missing:
        print(hidden_missing_line(n_missing), file=sys.stderr)
    sys.stdout.write(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
