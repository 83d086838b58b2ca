"""Our runs against the paper's tables: one row per cell, the paper's number beside it, and what is missing.

Runs are grouped into cells (analysis/runs.py); per cell: our mean test error ± the 95% CI half-width
over seeds (the paper's statistic), the number of seeds, the paper's number for the same model/dataset/
augment/epochs/optimizer/label_noise with the paper's rho beside it (rho itself is not matched, so a rho
sweep reads against the paper's tuned value), and the difference ours - paper. Then the paper cells
without runs, Table 1's best of N and 2N epochs for SGD (analysis/best_of_epochs.py), the runs that
failed (never averaged), the jobs without a results.json, and the "beyond test error" table
(analysis/evaluation_table.py). The command is scripts/compare.py.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from analysis.best_of_epochs import best_of_markdown, best_of_n_and_2n
from analysis.confidence import mean_ci95
from analysis.evaluation_table import evaluation_markdown
from analysis.paper_tables import cell_matches, comparable_cells, load_paper_cells, most_specific
from analysis.runs import CELL_KEYS, find_unfinished_runs, group_runs, load_runs

CSV_COLUMNS = (
    "status",
    *CELL_KEYS,
    "n_seeds",
    "seeds",
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
)


def summarise_cell(key: tuple, runs: list[dict], paper_cells: list[dict]) -> dict:
    """One row: the cell's fields, our mean/CI over seeds, the matching paper cell and the difference."""
    row = dict(zip(CELL_KEYS, key, strict=True))
    row["status"] = "no_paper_cell"
    row["n_seeds"] = len(runs)
    row["seeds"] = " ".join(str(r["seed"]) for r in sorted(runs, key=lambda r: str(r["seed"])))
    row["test_error_mean"], row["test_error_ci95"] = mean_ci95(r["test_error"] for r in runs)
    top5 = [r["test_error_top5"] for r in runs if r["test_error_top5"] is not None]
    row["test_error_top5_mean"], row["test_error_top5_ci95"] = mean_ci95(top5) if top5 else (None, None)
    matches = most_specific([c for c in paper_cells if cell_matches(c, **row)])
    if len(matches) > 1:
        raise ValueError(f"{len(matches)} paper cells match {row}: {matches}")
    paper = matches[0] if matches else None
    row["paper_cell"] = paper
    if paper is not None:
        row["status"] = "matched"
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
    """(one row per cell of our runs, one row per comparable paper cell no run matched)."""
    paper_cells = comparable_cells(load_paper_cells(tables))
    rows = [summarise_cell(key, members, paper_cells) for key, members in group_runs(runs).items()]
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


def to_markdown(rows: list[dict], missing: list[dict], runs_dir: Path, n_runs: int) -> str:
    out = ["# Our runs vs the paper (Foret et al., ICLR 2021)", ""]
    if n_runs == 0:
        out += [f"No runs found: no usable results.json under `{runs_dir}`.", ""]
    else:
        out += [
            f"{n_runs} runs in {len(rows)} cells under `{runs_dir}`. Ours: mean test error (%) ± half-width "
            "of the 95% CI over seeds, t_{0.975,n-1}·s/√n (n/a for one seed). Paper: mean ± 95% CI over 5 "
            "runs as printed ('<' = printed as ±<x). Δ = ours − paper. Paper cells match on model, dataset, "
            "augment, epochs, optimizer and label noise (a field the paper leaves unstated matches any "
            "value); ρ is not matched, 'paper ρ' is the paper's tuned value.",
            "",
            "| model | dataset | augment | epochs | label noise | optimizer | ρ | m | seeds | ours top-1 "
            "| paper top-1 | Δ top-1 | ours top-5 | paper top-5 | Δ top-5 | paper ρ | paper table |",
            "|" + "---|" * 17,
        ]
        for r in rows:
            paper_top1 = _paper(
                r.get("paper_error"), r.get("paper_error_pm"), r.get("paper_error_pm_is_upper_bound")
            )
            out.append(
                f"| {r['model']} | {r['dataset']} | {r['augment']} | {r['epochs']} | {r['label_noise']:g} "
                f"| {r['optimizer']} | {r['rho']:g} | {_num(r['m'], 'd')} | {r['n_seeds']} "
                f"| {_mean_ci(r['test_error_mean'], r['test_error_ci95'])} "
                f"| {paper_top1} | {_signed(r.get('diff_test_error'))} "
                f"| {_mean_ci(r['test_error_top5_mean'], r['test_error_top5_ci95'])} "
                f"| {_paper(r.get('paper_error_top5'), r.get('paper_error_top5_pm'))} "
                f"| {_signed(r.get('diff_test_error_top5'))} "
                f"| {_num(r.get('paper_rho'), 'g')} | {r.get('paper_table') or '—'} |"
            )
        out.append("")
    out += [f"## Paper cells without runs ({len(missing)})", ""]
    if missing:
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
    else:
        out.append("None: every paper cell has at least one run.")
    return "\n".join(out) + "\n"


def to_csv(rows: list[dict], missing: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in [*rows, *missing]:
        writer.writerow({k: "" if row.get(k) is None else row[k] for k in CSV_COLUMNS})
    return buf.getvalue()


def compare_with_paper(runs_dir: Path, tables: list[str], as_csv: bool = False) -> tuple[str, int]:
    """The whole report on the runs below ``runs_dir`` (Markdown, or CSV) and the number of usable runs."""
    failed: list[dict] = []
    runs = load_runs(runs_dir, failed=failed)
    rows, missing = build_rows(runs, tables)
    unfinished = unfinished_rows(runs_dir)
    failures = failed_rows(failed)
    best_of = best_of_n_and_2n(rows)  # Table 1's SGD statistic: the better of N and 2N epochs
    if as_csv:
        best_rows = [{**p, "status": "best_of_n_and_2n"} for p in best_of]
        return to_csv(rows, [*best_rows, *failures, *unfinished, *missing]), len(runs)
    text = to_markdown(rows, missing, runs_dir, len(runs))
    text += "\n".join(["", *best_of_markdown(best_of)]) if best_of else ""
    text += "\n".join(["", *failed_markdown(failures)]) if failures else ""
    text += "\n".join(["", *unfinished_markdown(unfinished)]) if unfinished else ""
    extra = evaluation_markdown(runs)  # runs with an evaluation.json (scripts/evaluate.py)
    text += "\n" + extra if extra else ""
    return text, len(runs)
