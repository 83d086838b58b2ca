"""Our runs against the paper's tables: one row per computation, the paper's number beside it where the
run is the paper's recipe, and (when asked) the paper cells without runs.

Runs are pooled only where they computed the same thing (analysis/runs.py, ``group_identical``): every
recorded setting equal except the seed and the operational keys; a cell's rows that differ say how
("differs"), and a copied run directory counts once. Per row: our mean test error ± the 95% CI half-width
over seeds (the paper's statistic), the number of seeds, and the paper's number with the difference
ours - paper, but only where the row ran the paper cell's experiment file exactly (analysis/paper_recipes.py;
rho aside where the paper does not publish it: Table 3's "optimal" rho). Otherwise the paper column says
why: a smoke run (limited batches), the settings that differ from the recipe, or no recipe to check
against. results.json files without a recorded config pool by the cell keys only and are compared by those
(marked). Then Table 1's best of N and 2N epochs for SGD (analysis/best_of_epochs.py), the runs that
failed (never averaged), the jobs without a results.json, the "beyond test error" table
(analysis/evaluation_table.py) and, with ``show_missing``, the paper cells without runs (otherwise their
number and the flag that lists them). The command is scripts/compare.py.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from analysis.best_of_epochs import best_of_markdown, best_of_n_and_2n
from analysis.confidence import mean_ci95
from analysis.evaluation_table import evaluation_markdown
from analysis.paper_recipes import recipes
from analysis.paper_tables import cell_matches, comparable_cells, load_paper_cells, most_specific
from analysis.runs import (
    CELL_KEYS,
    LEGACY_NOTE,
    find_unfinished_runs,
    format_value,
    group_identical,
    is_smoke,
    load_runs,
    setting_differences,
)

SMOKE_NOTE = "smoke run (limited batches): not comparable"
MISSING_FLAG = "--missing"
MAX_LISTED_DIFFERENCES = 6

CSV_COLUMNS = (
    "status",
    *CELL_KEYS,
    "differs",
    "n_seeds",
    "seeds",
    "n_duplicates",
    "duplicates",
    "test_error_mean",
    "test_error_ci95",
    "test_error_top5_mean",
    "test_error_top5_ci95",
    "paper_table",
    "paper_error",
    "paper_error_pm",
    "paper_error_pm_is_upper_bound",
    "paper_error_top5",
    "paper_error_top5_pm",
    "paper_rho",
    "diff_test_error",
    "diff_test_error_top5",
    "best_of",
    "best_epochs",
    "recipe",
    "note",
)


def _differences_text(diffs: list[tuple[str, object, object]]) -> str:
    shown = [f"{k}={format_value(have)} (recipe: {format_value(want)})" for k, have, want in diffs]
    more = len(shown) - MAX_LISTED_DIFFERENCES
    return ", ".join(shown[:MAX_LISTED_DIFFERENCES]) + (f" and {more} more" if more > 0 else "")


def match_paper(group: dict, paper_cells: list[dict]) -> tuple[str, dict | None, str | None, str | None]:
    """(status, the paper cell this group ran exactly, the experiment file it ran or was held against,
    why not / a note). Status: matched, not_comparable (a paper cell has this group's cell keys, but the
    group did not run its recipe) or no_paper_cell.

    A group without a recorded config is matched by its cell keys (as before configs were recorded),
    with :data:`LEGACY_NOTE`; a smoke run never; any other only when its settings equal those of an
    experiment file that runs the cell (rho free where the cell leaves it unstated).
    """
    smoke = SMOKE_NOTE if is_smoke(group["settings"]) else None
    fields = dict(zip(CELL_KEYS, group["cell"], strict=True))
    loose = [c for c in paper_cells if cell_matches(c, **fields)]
    if not loose:
        return "no_paper_cell", None, None, smoke
    if smoke:
        return "not_comparable", None, None, smoke
    first = most_specific(loose)
    if len(first) > 1:
        raise ValueError(f"{len(first)} paper cells match {fields}: {first}")
    if group["settings"] is None:
        return "matched", first[0], None, LEGACY_NOTE
    closest = None  # (number of differences, name, text)
    broken = []
    for cell in [*first, *(c for c in loose if c is not first[0])]:
        free = ("rho",) if cell["rho"] is None else ()
        for name, recipe in recipes(cell):
            if isinstance(recipe, str):
                broken.append(f"experiment={name} does not compose ({recipe})")
                continue
            run_settings = {k: v for k, v in group["settings"].items() if not k.startswith("spec.")}
            diffs = setting_differences(run_settings, recipe, free)
            if not diffs:
                return "matched", cell, name, None
            if closest is None or len(diffs) < closest[0]:
                closest = (len(diffs), name, _differences_text(diffs))
    if closest is not None:
        return (
            "not_comparable",
            None,
            closest[1],
            f"not the paper's recipe (experiment={closest[1]}): {closest[2]}",
        )
    if broken:
        return "not_comparable", None, None, "; ".join(broken)
    why = f"no experiment file runs the paper's {first[0]['table']} cell: its settings cannot be checked"
    return "not_comparable", None, None, why


def summarise_group(group: dict, paper_cells: list[dict]) -> dict:
    """One row: the group's cell fields, our mean/CI over seeds, the paper cell it ran and the difference."""
    runs = group["runs"]
    row = dict(zip(CELL_KEYS, group["cell"], strict=True))
    row["settings"] = group["settings"]
    row["differs"] = ", ".join(group["differs"])
    row["n_seeds"] = len(runs)
    row["seeds"] = " ".join(str(r["seed"]) for r in sorted(runs, key=lambda r: str(r["seed"])))
    row["n_duplicates"] = len(group["duplicates"])
    row["duplicate_dirs"] = [str(r["path"].parent) for r in group["duplicates"]]
    row["duplicates"] = "; ".join(row["duplicate_dirs"])
    row["test_error_mean"], row["test_error_ci95"] = mean_ci95(r["test_error"] for r in runs)
    top5 = [r["test_error_top5"] for r in runs if r["test_error_top5"] is not None]
    row["test_error_top5_mean"], row["test_error_top5_ci95"] = mean_ci95(top5) if top5 else (None, None)
    row["status"], paper, row["recipe"], row["note"] = match_paper(group, paper_cells)
    row["paper_cell"] = paper
    if paper is not None:
        row["paper_table"] = paper["table"]
        row["paper_error"] = paper["error"]
        row["paper_error_pm"] = paper["error_pm"]
        row["paper_error_pm_is_upper_bound"] = paper["error_pm_is_upper_bound"]
        row["paper_error_top5"] = paper.get("error_top5")
        row["paper_error_top5_pm"] = paper.get("error_top5_pm")
        row["paper_rho"] = paper["rho"]
        row["diff_test_error"] = row["test_error_mean"] - paper["error"]
        if row["test_error_top5_mean"] is not None and paper.get("error_top5") is not None:
            row["diff_test_error_top5"] = row["test_error_top5_mean"] - paper["error_top5"]
    return row


def missing_row(cell: dict) -> dict:
    row = {k: cell[k] for k in ("model", "dataset", "augment", "epochs", "optimizer", "label_noise")}
    row.update(status="missing", n_seeds=0, paper_table=cell["table"], paper_error=cell["error"])
    row.update(paper_error_pm=cell["error_pm"], paper_error_pm_is_upper_bound=cell["error_pm_is_upper_bound"])
    row.update(paper_error_top5=cell.get("error_top5"), paper_error_top5_pm=cell.get("error_top5_pm"))
    row["paper_rho"] = cell["rho"]
    return row


def build_rows(runs: list[dict], tables: list[str]) -> tuple[list[dict], list[dict]]:
    """(one row per group of identical runs, one row per comparable paper cell no row ran)."""
    paper_cells = comparable_cells(load_paper_cells(tables))
    rows = [summarise_group(group, paper_cells) for group in group_identical(runs)]
    matched = {id(r["paper_cell"]) for r in rows if r["paper_cell"] is not None}
    missing = [missing_row(c) for c in paper_cells if id(c) not in matched]
    return rows, missing


def _num(value, fmt: str = ".2f") -> str:
    return "—" if value is None else format(value, fmt)


def _mean_ci(mean, ci) -> str:
    if mean is None:
        return "—"
    return f"{mean:.2f} ± " + ("n/a" if ci is None else f"{ci:.2f}")


def _paper(value, pm, upper_bound=False) -> str:
    if value is None:
        return "—"
    if pm is None:
        return f"{value:g}"
    return f"{value:g} ± {'<' if upper_bound else ''}{pm:g}"


def _signed(value) -> str:
    return "—" if value is None else f"{value:+.2f}"


def unfinished_rows(runs_dir: Path) -> list[dict]:
    """Jobs of a sweep that left no results.json (failed, killed, running): their cells are missing."""
    return [
        {
            **{k: job[k] for k in CELL_KEYS},
            "status": "missing_run",
            "seeds": job["seed"],
            "n_seeds": 0,
            "run_dir": str(job["run_dir"]),
        }
        for job in find_unfinished_runs(runs_dir)
    ]


def failed_rows(failed: list[dict]) -> list[dict]:
    """Runs whose results.json reports a failure (NaN/inf test error): listed, never averaged."""
    return [
        {
            **{k: run[k] for k in CELL_KEYS},
            "status": "failed_run",
            "seeds": run["seed"],
            "n_seeds": 0,
            "run_dir": str(run["run_dir"]),
            "reason": run["reason"],
        }
        for run in failed
    ]


def failed_markdown(failed: list[dict]) -> list[str]:
    if not failed:
        return []
    out = [
        f"## Failed runs: left out of every mean ({len(failed)})",
        "",
        "| model | dataset | augment | epochs | label noise | optimizer | ρ | m | seed | why | run directory |",
        "|" + "---|" * 11,
    ]
    for r in failed:
        out.append(
            f"| {r['model']} | {r['dataset']} | {r['augment']} | {r['epochs']} | {r['label_noise']:g} "
            f"| {r['optimizer']} | {r['rho']:g} | {r['m'] if r['m'] is not None else '—'} | {r['seeds']} "
            f"| {r['reason']} | `{r['run_dir']}` |"
        )
    return [*out, ""]


def unfinished_markdown(unfinished: list[dict]) -> list[str]:
    if not unfinished:
        return []
    out = [
        f"## Runs without results.json: failed, killed or still running ({len(unfinished)})",
        "",
        "| model | dataset | augment | epochs | label noise | optimizer | ρ | m | seed | run directory |",
        "|" + "---|" * 10,
    ]
    for r in unfinished:
        out.append(
            f"| {r['model']} | {r['dataset']} | {r['augment']} | {r['epochs']} | {r['label_noise']:g} "
            f"| {r['optimizer']} | {r['rho']:g} | {r['m'] if r['m'] is not None else '—'} | {r['seeds']} "
            f"| `{r['run_dir']}` |"
        )
    return [*out, ""]


def _seeds(row: dict) -> str:
    """The number of seeds, and the copies of a run directory that were counted once."""
    if not row.get("n_duplicates"):
        return str(row["n_seeds"])
    paths = ", ".join(f"`{p}`" for p in row["duplicate_dirs"])
    plural = "s" if row["n_duplicates"] > 1 else ""
    return f"{row['n_seeds']} (+{row['n_duplicates']} duplicate{plural}: {paths})"


def _paper_top1(row: dict) -> str:
    if row["paper_cell"] is None and row["note"]:
        return row["note"]
    return _paper(row.get("paper_error"), row.get("paper_error_pm"), row.get("paper_error_pm_is_upper_bound"))


def runs_markdown(rows: list[dict], runs_dir: Path, n_runs: int) -> list[str]:
    out = ["# Our runs vs the paper (Foret et al., ICLR 2021)", ""]
    if n_runs == 0:
        return [*out, f"No runs found: no usable results.json under `{runs_dir}`.", ""]
    n_cells = len({tuple(r[k] for k in CELL_KEYS) for r in rows})
    out += [
        f"{n_runs} runs in {len(rows)} rows ({n_cells} cells) under `{runs_dir}`. A row pools the runs that "
        "differ only in seed: every setting of their recorded config is equal but the seed and the "
        "operational keys (logger, device, data root, ...); 'differs' names what sets a row apart from the "
        "other rows of its cell, and a copied run directory (same seed, same settings) counts once. Ours: "
        "mean test error (%) ± half-width of the 95% CI over seeds, t_{0.975,n-1}·s/√n (n/a for one seed). "
        "Paper: mean ± 95% CI over 5 runs as printed ('<' = printed as ±<x), only where the row ran the "
        "paper cell's experiment file (configs/experiment) exactly, seed aside (ρ too where the paper does "
        "not publish it: Table 3's optimal ρ); otherwise that column says why. Δ = ours − paper.",
        "",
        "| model | dataset | augment | epochs | label noise | optimizer | ρ | m | differs | seeds | ours top-1 "
        "| paper top-1 | Δ top-1 | ours top-5 | paper top-5 | Δ top-5 | paper ρ | paper table |",
        "|" + "---|" * 18,
    ]
    for r in rows:
        out.append(
            f"| {r['model']} | {r['dataset']} | {r['augment']} | {r['epochs']} | {r['label_noise']:g} "
            f"| {r['optimizer']} | {r['rho']:g} | {_num(r['m'], 'd')} | {r['differs'] or '—'} | {_seeds(r)} "
            f"| {_mean_ci(r['test_error_mean'], r['test_error_ci95'])} "
            f"| {_paper_top1(r)} | {_signed(r.get('diff_test_error'))} "
            f"| {_mean_ci(r['test_error_top5_mean'], r['test_error_top5_ci95'])} "
            f"| {_paper(r.get('paper_error_top5'), r.get('paper_error_top5_pm'))} "
            f"| {_signed(r.get('diff_test_error_top5'))} "
            f"| {_num(r.get('paper_rho'), 'g')} | {r.get('paper_table') or '—'} |"
        )
    return [*out, ""]


def hidden_missing_line(n_missing: int) -> str:
    """What compare says instead of listing the paper cells without runs."""
    return (
        f"{n_missing} paper cells without runs are not listed: add {MISSING_FLAG} to list them "
        "(--tables chooses the tables)."
    )


def missing_markdown(missing: list[dict]) -> list[str]:
    out = [f"## Paper cells without runs ({len(missing)})", ""]
    if not missing:
        return [*out, "None: every paper cell has at least one run.", ""]
    out += [
        "| paper table | model | dataset | augment | epochs | label noise | optimizer | paper ρ "
        "| paper top-1 | paper top-5 |",
        "|" + "---|" * 10,
    ]
    for r in missing:
        out.append(
            f"| {r['paper_table']} | {r['model']} | {r['dataset']} | {r['augment'] or 'not stated'} "
            f"| {r['epochs'] or 'not stated'} | {r['label_noise']:g} | {r['optimizer']} "
            f"| {_num(r['paper_rho'], 'g')} "
            f"| {_paper(r['paper_error'], r['paper_error_pm'], r['paper_error_pm_is_upper_bound'])} "
            f"| {_paper(r['paper_error_top5'], r['paper_error_top5_pm'])} |"
        )
    return [*out, ""]


def to_csv(rows: list[dict], missing: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in [*rows, *missing]:
        writer.writerow({k: "" if row.get(k) is None else row[k] for k in CSV_COLUMNS})
    return buf.getvalue()


def compare_with_paper(
    runs_dir: Path, tables: list[str], as_csv: bool = False, show_missing: bool = False
) -> tuple[str, int, int]:
    """The whole report on the runs below ``runs_dir`` (Markdown, or CSV), the number of usable runs and
    the number of paper cells without runs (listed only with ``show_missing``: last, after our runs)."""
    failed: list[dict] = []
    runs = load_runs(runs_dir, failed=failed)
    rows, missing = build_rows(runs, tables)
    unfinished = unfinished_rows(runs_dir)
    failures = failed_rows(failed)
    best_of = best_of_n_and_2n(rows)  # Table 1's SGD statistic: the better of N and 2N epochs
    if as_csv:
        best_rows = [{**p, "status": "best_of_n_and_2n"} for p in best_of]
        listed = missing if show_missing else []
        return to_csv(rows, [*best_rows, *failures, *unfinished, *listed]), len(runs), len(missing)
    lines = runs_markdown(rows, runs_dir, len(runs))
    if not show_missing:
        lines += [hidden_missing_line(len(missing)), ""]
    lines += best_of_markdown(best_of)
    lines += failed_markdown(failures)
    lines += unfinished_markdown(unfinished)
    text = "\n".join(lines)
    extra = evaluation_markdown(runs)  # runs with an evaluation.json (scripts/evaluate.py)
    text += "\n" + extra if extra else ""
    if show_missing:
        text += "\n" + "\n".join(missing_markdown(missing))
    return text, len(runs), len(missing)
