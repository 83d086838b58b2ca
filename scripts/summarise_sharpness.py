"""Mean ± 95% CI of the flatness measures that scripts/sharpness.py wrote, per cell.

    python scripts/summarise_sharpness.py RUNS_DIR [--out FILE.md]

Reads every ``sharpness.json`` next to a ``results.json`` below RUNS_DIR and prints a Markdown table of
lambda_max, lambda_max/lambda_k and the m-sharpness estimate per (optimizer, rho, m, label noise).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root: sam/, models/, data/, scripts/

from scripts.run_results import group_runs, load_runs, mean_ci95, warn_stderr

MEASURES = (
    ("lambda_max", "λ_max"),
    ("lambda_max_over_lambda_k", "λ_max / λ_k"),
    ("m_sharpness", "m-sharpness"),
)


def table(runs_dir: Path) -> str:
    runs = []
    for run in load_runs(runs_dir):
        path = run["run_dir"] / "sharpness.json"
        if not path.exists():
            continue
        try:
            run["sharpness"] = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            warn_stderr(f"skipping {path}: {err}")
            continue
        runs.append(run)
    if not runs:
        return f"no sharpness.json next to a results.json below {runs_dir}\n"
    first = runs[0]["sharpness"]
    settings = {k: first.get(k) for k in ("k", "rho", "m", "num_examples", "tol") if k in first}
    out = [
        f"Flatness of the final models ({', '.join(f'{k}={v}' for k, v in settings.items())}); "
        "mean ± 95% CI over seeds (t distribution).",
        "",
        "| optimizer | ρ (training) | m | label noise | seeds | test error % | "
        + " | ".join(name for _, name in MEASURES)
        + " |",
        "|" + "---|" * (6 + len(MEASURES)),
    ]
    for key, cell in sorted(group_runs(runs).items(), key=lambda kv: (kv[0][7], kv[0][4] != "sgd", kv[0][5])):
        cols = []
        for field, _ in [("test_error", None), *MEASURES]:
            values = [r["test_error"] if field == "test_error" else r["sharpness"][field] for r in cell]
            mean, ci = mean_ci95(values)
            cols.append(f"{mean:.3g}" + (f" ± {ci:.2g}" if ci is not None else ""))
        m = "—" if key[6] is None else key[6]
        out.append(f"| {key[4]} | {key[5]:g} | {m} | {key[7]:g} | {len(cell)} | " + " | ".join(cols) + " |")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("runs_dir", type=Path)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    text = table(args.runs_dir)
    sys.stdout.write(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
