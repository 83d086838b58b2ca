"""The "beyond test error" table of compare.py: evaluation.json (scripts/evaluate.py) per cell, over seeds.

For every group of identical evaluated runs (compare.py's grouping, analysis/runs.py ``group_identical``:
one cell, every recorded setting but the seed equal, a copied run directory once; "differs" says what sets
a group apart from the others of its cell): mean ± the 95% t-interval half-width over seeds of ECE, NLL,
feature rank, linear-probe error and mean corruption error, so a cell's SAM and SGD rows read side by side.
"""

from __future__ import annotations

import json
from pathlib import Path

from analysis.confidence import mean_ci95
from analysis.runs import CELL_KEYS, group_identical

COLUMNS = (  # (evaluation.json key path, header)
    (("ece_pct",), "ECE (%)"),
    (("nll",), "NLL"),
    (("feature_rank", "rank"), "feature rank"),
    (("probe_error_pct",), "probe error (%)"),
    (("corruption_error_pct",), "corruption error (%)"),
)


def _get(doc: dict, path: tuple[str, ...]):
    for key in path:
        if not isinstance(doc, dict) or key not in doc:
            return None
        doc = doc[key]
    return doc


def read_evaluation(run_dir: Path) -> dict | None:
    path = Path(run_dir) / "evaluation.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _cell(values: list) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "—"
    mean, ci = mean_ci95(values)
    return f"{mean:.2f} ± " + ("n/a" if ci is None else f"{ci:.2f}")


def evaluation_markdown(runs: list[dict]) -> str:
    """A Markdown section, or "" when no run has an evaluation.json."""
    evaluated = [(r, ev) for r in runs if (ev := read_evaluation(r["run_dir"])) is not None]
    if not evaluated:
        return ""
    by_dir = {str(r["run_dir"]): ev for r, ev in evaluated}
    out = [
        "## Beyond test error (scripts/evaluate.py)",
        "",
        "Mean ± 95% CI half-width over the evaluated seeds of each cell. Probe: the linear probe's test error on "
        "its target (named below); corruption: mean error over families and severities.",
        "",
        "| model | dataset | augment | epochs | optimizer | ρ | differs | evaluated seeds | "
        + " | ".join(h for _, h in COLUMNS)
        + " | probe target |",
        "|" + "---|" * (9 + len(COLUMNS)),
    ]
    for group in group_identical([r for r, _ in evaluated]):
        cell = dict(zip(CELL_KEYS, group["cell"], strict=True))
        evs = [by_dir[str(r["run_dir"])] for r in group["runs"]]
        targets = sorted(
            {
                f"{_get(e, ('linear_probe', 'dataset'))} {_get(e, ('linear_probe', 'classes')) or ''}".strip()
                for e in evs
            }
        )
        out.append(
            f"| {cell['model']} | {cell['dataset']} | {cell['augment']} | {cell['epochs']} | {cell['optimizer']} "
            f"| {cell['rho']:g} | {', '.join(group['differs']) or '—'} | {len(evs)} | "
            + " | ".join(_cell([_get(e, path) for e in evs]) for path, _ in COLUMNS)
            + f" | {', '.join(targets)} |"
        )
    return "\n".join([*out, ""]) + "\n"
