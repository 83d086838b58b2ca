"""Mean ± 95% CI of the flatness measures (sharpness.json, scripts/sharpness.py) per cell, as Markdown.

lambda_max, lambda_max / lambda_k and the m-sharpness estimate per (optimizer, rho, m, label noise), beside
the cell's test error; the command is scripts/summarise_sharpness.py.
"""

from __future__ import annotations

import json
from pathlib import Path

from analysis.confidence import mean_ci95
from analysis.runs import group_runs, load_runs, warn_stderr

MEASURES = (
    ("lambda_max", "λ_max"),
    ("lambda_max_over_lambda_k", "λ_max / λ_k"),
    ("m_sharpness", "m-sharpness"),
)


def flatness_markdown(runs_dir: Path) -> str:
    """The Markdown table of every run below runs_dir that has a sharpness.json (a line saying so if none)."""
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
