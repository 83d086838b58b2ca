"""Mean ± 95% CI of the flatness measures that scripts/sharpness.py wrote, per cell.

Usage:
    python scripts/summarise_sharpness.py RUNS_DIR [--out FILE.md]

Reads every ``sharpness.json`` next to a ``results.json`` below RUNS_DIR and prints a Markdown table of
lambda_max, lambda_max/lambda_k and the m-sharpness estimate per (optimizer, rho, m, label noise)
(analysis/flatness_table.py).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root: analysis/, models/, data/

from analysis.flatness_table import flatness_markdown


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("runs_dir", type=Path)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    text = flatness_markdown(args.runs_dir)
    sys.stdout.write(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
