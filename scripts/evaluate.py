"""Evaluate finished runs beyond their test error: writes RUN_DIR/evaluation.json and reliability.png.

Usage:
    python scripts/evaluate.py RUN_DIR [RUN_DIR ...] [--probe-dataset digits --probe-classes 5,6,7,8,9]
                               [--no-corruptions] [--rank-examples 2048] [--data-root PATH]

Per run (see analysis/evaluation/run_evaluation.py): the test error again (must equal results.json's),
ECE (15 equal-width bins, %), NLL, a reliability diagram, the rank of the penultimate features (principal
components for 99% of their variance) on the first --rank-examples test images, a linear probe
(logistic regression, C chosen on a validation split) on the target's train split scored on its test
split, and the error under 12 corruption families x 5 severities (the real CIFAR-10-C/100-C files under
the dataset root when present, else generated; analysis/evaluation/corruptions.py says which are
faithful).
scripts/compare.py reads the evaluation.json files into a "beyond test error" table (SAM vs SGD).

Exit codes: 0 done; 2 bad input, in one line naming the file (a run directory without final_model.pt, a
truncated or damaged final_model.pt, weights that do not fit the recorded model, a results.json without a
test error, an unknown or missing dataset, a run directory that cannot be written, ...).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root: analysis/, models/, data/

from analysis.evaluation.run_evaluation import EvalOptions, evaluate_run, write_evaluation


def _classes(text: str) -> list[int]:
    try:
        return [int(c) for c in text.split(",") if c.strip()]
    except ValueError as err:
        raise argparse.ArgumentTypeError(
            f"--probe-classes {text!r}: expected integers like 5,6,7,8,9"
        ) from err


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR")
    parser.add_argument("--probe-dataset", help="dataset of the linear probe (default: the run's)")
    parser.add_argument("--probe-classes", type=_classes, help="class subset of the probe, e.g. 5,6,7,8,9")
    parser.add_argument("--rank-examples", type=int, default=2048)
    parser.add_argument("--no-corruptions", action="store_true")
    parser.add_argument("--data-root", help="overrides the runs' dataset.root")
    parser.add_argument("--seed", type=int, default=0, help="probe split and corruption draws")
    args = parser.parse_args(argv)
    options = EvalOptions(
        probe_dataset=args.probe_dataset,
        probe_classes=args.probe_classes,
        rank_examples=args.rank_examples,
        corruptions=not args.no_corruptions,
        data_root=args.data_root,
        seed=args.seed,
    )
    for run_dir in args.run_dirs:
        try:
            result = evaluate_run(run_dir, options)
            path = write_evaluation(run_dir, result)
        except KeyError as err:
            print(f"error: {run_dir}: missing key {err}", file=sys.stderr)
            return 2
        except (ValueError, OSError) as err:  # OSError: FileNotFoundError, PermissionError, a full disk, ...
            print(f"error: {run_dir}: {err}", file=sys.stderr)
            return 2
        summary = {
            k: result.get(k)
            for k in ("test_error_pct", "ece_pct", "nll", "probe_error_pct", "corruption_error_pct")
        }
        summary["feature_rank"] = result["feature_rank"]["rank"]
        print(
            f"{path}: {json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in summary.items()})}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
