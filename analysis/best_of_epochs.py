"""The paper's statistic for Table 1's SGD baselines: the better of training N and 2N epochs (Sec. 3.1).

Every non-SAM run of Table 1 was allowed twice the epochs of its SAM twin, and the table prints the
better of the two (the paper cells carry a ``baseline_note`` saying so). Given compare.py's rows (one per
group of identical runs), each SGD row at N epochs whose paper cell carries that note is paired with our
row at 2N epochs that agrees on every other field (model, dataset, augment, rho, m, label noise) and on
every other recorded setting (a row without a recorded config: on those fields alone); the pair's
statistic is the row with the lower mean test error, and which of N and 2N won is reported with both.
"""

from __future__ import annotations

from analysis.runs import CELL_KEYS, freeze


def _key(row: dict, epochs) -> tuple:
    """The row's cell and settings with its epochs replaced: equal for two halves of one baseline."""
    cell = tuple(epochs if k == "epochs" else row[k] for k in CELL_KEYS)
    return cell, freeze(row.get("settings"), drop=("epochs",))


def has_best_of_rule(paper_cell: dict | None) -> bool:
    """True for the paper cells whose number is the best of N and 2N epochs (Table 1's SGD column)."""
    return bool(paper_cell) and "2x epochs" in str(paper_cell.get("baseline_note", ""))


def best_of_n_and_2n(rows: list[dict]) -> list[dict]:
    """One dict per (N row, 2N row) pair: the cell, both halves, the winner and its difference to the paper."""
    by_key = {_key(r, r["epochs"]): r for r in rows if r["epochs"] is not None}
    pairs = []
    for row in rows:
        paper = row.get("paper_cell")
        if row["optimizer"] != "sgd" or row["epochs"] is None or not has_best_of_rule(paper):
            continue
        doubled = by_key.get(_key(row, 2 * row["epochs"]))
        if doubled is None:
            continue
        best, which = (doubled, "2N") if doubled["test_error_mean"] < row["test_error_mean"] else (row, "N")
        pairs.append(
            {
                **{k: row[k] for k in CELL_KEYS},
                "n": row,
                "2n": doubled,
                "best_of": which,
                "best_epochs": best["epochs"],
                "test_error_mean": best["test_error_mean"],
                "test_error_ci95": best["test_error_ci95"],
                "n_seeds": best["n_seeds"],
                "paper_cell": paper,
                "paper_error": paper["error"],
                "paper_error_pm": paper["error_pm"],
                "paper_error_pm_is_upper_bound": paper["error_pm_is_upper_bound"],
                "paper_table": paper["table"],
                "diff_test_error": best["test_error_mean"] - paper["error"],
            }
        )
    return pairs


def best_of_markdown(pairs: list[dict]) -> list[str]:
    """The Markdown section compare.py prints after its main table (nothing when there are no pairs)."""
    if not pairs:
        return []

    def mean_ci(r: dict) -> str:
        ci = r["test_error_ci95"]
        return (
            f"{r['test_error_mean']:.2f} ± " + ("n/a" if ci is None else f"{ci:.2f}") + f" ({r['n_seeds']})"
        )

    out = [
        "## SGD baselines: the paper's best of N and 2N epochs (Sec. 3.1)",
        "",
        "Table 1's SGD column is, per cell, the better of training N and 2N epochs. Each half as above "
        "(mean ± 95% CI (seeds)); 'best' is the lower mean, Δ = best − paper.",
        "",
        "| model | dataset | augment | ρ | m | N | ours at N | ours at 2N | best | paper | Δ best |",
        "|" + "---|" * 11,
    ]
    for p in pairs:
        pm = ("<" if p["paper_error_pm_is_upper_bound"] else "") + f"{p['paper_error_pm']:g}"
        m = "—" if p["m"] is None else p["m"]
        out.append(
            f"| {p['model']} | {p['dataset']} | {p['augment']} | {p['rho']:g} | {m} | {p['epochs']} "
            f"| {mean_ci(p['n'])} | {mean_ci(p['2n'])} | {p['best_of']} ({p['best_epochs']} epochs) "
            f"| {p['paper_error']:g} ± {pm} | {p['diff_test_error']:+.2f} |"
        )
    return [*out, ""]
