"""The efficient-SAM study (issue 15): error, cost and the share of SAM's gain per variant.

Per variant, over its seeds: the test error (mean and 95% t-interval half-width); the cost x SGD (from
``benchmarks/bench_sam.py --efficient`` output when given, else the study's own training time per seed,
``images_per_s(SGD) / images_per_s(variant)``); the share of SAM's gain kept,
``(err_SGD - err_variant) / (err_SGD - err_SAM)`` of the seed means, with a 95% percentile bootstrap
interval that resamples seeds jointly (the runs of one seed share the data split, label noise and initial
weights, so they are paired); and the Pareto front of mean cost and mean error. The command is
scripts/efficient_summary.py; results/digits/efficient/ holds its output.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
from pathlib import Path

import numpy as np

from analysis.confidence import mean_ci95
from analysis.runs import recorded_facts

GOAL_COST, GOAL_SHARE = 1.3, 0.8
PAPERS = {
    "sgd": "baseline",
    "sam": "Foret et al., ICLR 2021",
    "looksam": "Liu et al., CVPR 2022",
    "esam": "Du et al., ICLR 2022",
    "rst": "Zhao, Zhang & Hu, 2022",
    "sam_late": "Zhou et al., ICLR 2025",
    "ae_sam": "Jiang et al., ICLR 2023",
    "mesa": "Du et al., NeurIPS 2022",
    "gsam": "Zhuang et al., ICLR 2022",
    "sam_on": "Mueller et al., NeurIPS 2023",
}


def bench_costs(path: Path) -> dict[str, float]:
    """x SGD per variant from ``bench_sam.py --efficient`` output (its "mean ms/step" table)."""
    costs: dict[str, float] = {}
    in_table = False
    for line in path.read_text().splitlines():
        if "mean ms/step" in line:
            in_table = True
            continue
        fields = line.split()
        if in_table and len(fields) >= 3:
            try:
                costs[fields[0]] = float(fields[2])
            except ValueError:
                break
        elif in_table and costs:
            break
    if "sgd" not in costs:
        raise ValueError(f"{path} has no 'mean ms/step' table of bench_sam.py --efficient")
    return costs


def two_pass_share(run_dir: Path) -> float | None:
    """Share of two-pass (SAM) steps, from the final checkpoint's optimizer state (switching variants)."""
    path = run_dir / "checkpoints" / "last.pt"
    if not path.exists():
        return None
    import torch

    variant = torch.load(path, map_location="cpu", weights_only=True)["optimizer"].get("variant", {})
    if "sam_steps" in variant:
        return variant["sam_steps"] / max(variant["steps_taken"], 1)
    if variant.get("name") == "looksam":
        steps = variant["steps_taken"]
        return None if not steps else -(-steps // int(variant.get("k", 5))) / steps
    return None


def load(root: Path) -> dict[str, dict[int, dict]]:
    """optimizer -> seed -> results.json (a duplicate seed is an error: runs must be unambiguous)."""
    runs: dict[str, dict[int, dict]] = {}
    for path in sorted(root.rglob("results.json")):
        r = json.loads(path.read_text())
        r["optimizer"] = recorded_facts(r, path)["optimizer"]  # as the trainer decided it
        r["two_pass_share"] = two_pass_share(path.parent)
        by_seed = runs.setdefault(r["optimizer"], {})
        if r["seed"] in by_seed:
            raise ValueError(f"two runs of {r['optimizer']} seed {r['seed']} under {root} ({path})")
        by_seed[r["seed"]] = r
    if "sgd" not in runs or "sam" not in runs:
        raise ValueError(f"{root} needs SGD and SAM runs as the reference (found {sorted(runs)})")
    study_setting(runs)  # refuses runs whose shared settings differ
    return runs


# What every run of one study must share: the pairing is by seed, so anything else must be equal.
SHARED = ("model", "dataset", "epochs", "label_noise", "batch_size", "lr", "weight_decay", "augment")


def study_setting(runs: dict[str, dict[int, dict]]) -> dict:
    """The settings all runs share (from their results.json); ValueError naming any that differ."""
    values: dict[str, set] = {key: set() for key in SHARED}
    for by_seed in runs.values():
        for r in by_seed.values():
            config = r.get("config") or {}
            for key in SHARED:
                value = r.get(key, config.get(key))
                values[key].add(repr(value))
    differ = {k: sorted(v) for k, v in values.items() if len(v) > 1}
    if differ:
        raise ValueError(f"the runs of this study differ in {differ}: pair only runs of one setting")
    first = next(iter(next(iter(runs.values())).values()))
    config = first.get("config") or {}
    return {key: first.get(key, config.get(key)) for key in SHARED}


def setting_title(setting: dict) -> str:
    """``digits, wide_resnet, 30 epochs, 40% label noise`` from the runs themselves."""
    noise = setting.get("label_noise") or 0
    parts = [str(setting.get("dataset")), str(setting.get("model")), f"{setting.get('epochs')} epochs"]
    parts.append(f"{noise:.0%} label noise" if noise else "clean labels")
    return ", ".join(parts)


def summarise(
    runs: dict[str, dict[int, dict]], n_boot: int, seed: int = 0, bench: dict[str, float] | None = None
) -> list[dict]:
    sgd, sam = runs["sgd"], runs["sam"]
    rng = np.random.default_rng(seed)
    rows = []
    for name, by_seed in runs.items():
        seeds = sorted(set(by_seed) & set(sgd) & set(sam))
        err = np.array([by_seed[s]["test_error"] for s in seeds])
        e_sgd = np.array([sgd[s]["test_error"] for s in seeds])
        e_sam = np.array([sam[s]["test_error"] for s in seeds])
        cost = [sgd[s]["images_per_s"] / by_seed[s]["images_per_s"] for s in seeds]
        mean, ci = mean_ci95(err)
        cost_mean, cost_ci = mean_ci95(cost)
        gain = e_sgd.mean() - e_sam.mean()
        share = (e_sgd.mean() - err.mean()) / gain if gain else math.nan
        idx = rng.integers(0, len(seeds), size=(n_boot, len(seeds)))
        g_b = e_sgd[idx].mean(1) - e_sam[idx].mean(1)
        with np.errstate(divide="ignore", invalid="ignore"):
            s_b = (e_sgd[idx].mean(1) - err[idx].mean(1)) / g_b
        s_b = s_b[np.isfinite(s_b)]
        lo, hi = np.percentile(s_b, [2.5, 97.5]) if len(s_b) else (math.nan, math.nan)
        rows.append(
            dict(
                optimizer=name,
                paper=PAPERS.get(name, ""),
                n_seeds=len(seeds),
                seeds=" ".join(map(str, seeds)),
                test_error_mean=mean,
                test_error_ci95=ci,
                cost_x_sgd=bench[name] if bench else cost_mean,
                cost_ci95=None if bench else cost_ci,
                study_time_x_sgd=cost_mean,
                study_time_ci95=cost_ci,
                share_of_sam_gain=share,
                share_ci_low=float(lo),
                share_ci_high=float(hi),
                wall_time_s=statistics.fmean(by_seed[s]["wall_time_s"] for s in seeds),
                two_pass_share=_mean_or_none([by_seed[s]["two_pass_share"] for s in seeds]),
                meets_goal=bool((bench[name] if bench else cost_mean) <= GOAL_COST and share >= GOAL_SHARE),
            )
        )
    order = list(PAPERS)
    rows.sort(key=lambda r: order.index(r["optimizer"]) if r["optimizer"] in order else len(order))
    return rows


def _mean_or_none(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.fmean(present) if present else None


def pareto(rows: list[dict]) -> list[str]:
    """Optimizers no other row beats on both mean cost and mean error."""
    front = []
    for r in rows:
        dominated = any(
            o["cost_x_sgd"] <= r["cost_x_sgd"]
            and o["test_error_mean"] <= r["test_error_mean"]
            and (o["cost_x_sgd"] < r["cost_x_sgd"] or o["test_error_mean"] < r["test_error_mean"])
            for o in rows
        )
        if not dominated:
            front.append(r["optimizer"])
    return front


def fmt(x: float | None, digits: int = 2) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def write_markdown(rows: list[dict], front: list[str], path: Path) -> None:
    lines = [
        "| optimizer | paper | seeds | test error % (95% CI) | share of SAM's gain (95% CI) | cost x SGD | study time x SGD (95% CI) | two-pass steps | goal |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        err = f"{fmt(r['test_error_mean'])} ± {fmt(r['test_error_ci95'])}"
        cost = (
            fmt(r["cost_x_sgd"])
            if r["cost_ci95"] is None
            else f"{fmt(r['cost_x_sgd'])} ± {fmt(r['cost_ci95'])}"
        )
        study = f"{fmt(r['study_time_x_sgd'])} ± {fmt(r['study_time_ci95'])}"
        share = f"{fmt(100 * r['share_of_sam_gain'], 0)}% [{fmt(100 * r['share_ci_low'], 0)}, {fmt(100 * r['share_ci_high'], 0)}]"
        if r["optimizer"] in ("sgd", "sam"):
            share = "0% (reference)" if r["optimizer"] == "sgd" else "100% (reference)"
        goal = "" if r["optimizer"] in ("sgd", "sam") else ("**yes**" if r["meets_goal"] else "no")
        name = f"**{r['optimizer']}**" if r["optimizer"] in front else r["optimizer"]
        passes = {
            "sgd": "0%",
            "sam": "100%",
            "mesa": "0%",
            "gsam": "100%",
            "sam_on": "100%",
            "esam": "100%",
        }.get(r["optimizer"], "-")
        if r["two_pass_share"] is not None:
            passes = f"{100 * r['two_pass_share']:.0f}%"
        lines.append(
            f"| {name} | {r['paper']} | {r['n_seeds']} | {err} | {share} | {cost} | {study} | {passes} | {goal} |"
        )
    lines.append("")
    lines.append(f"Pareto front (mean cost, mean error; bold): {', '.join(front)}.")
    lines.append(
        f"Goal: cost <= {GOAL_COST}x SGD while keeping >= {int(100 * GOAL_SHARE)}% of SAM's gain (point estimates)."
    )
    path.write_text("\n".join(lines) + "\n")


def write_figure(rows: list[dict], front: list[str], path: Path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    for r in rows:
        ax.errorbar(
            r["cost_x_sgd"], r["test_error_mean"], xerr=r["cost_ci95"] or 0, yerr=r["test_error_ci95"] or 0,
            fmt="o", color="C3" if r["optimizer"] in front else "C0", capsize=3, alpha=0.85,
        )  # fmt: skip
        ax.annotate(r["optimizer"], (r["cost_x_sgd"], r["test_error_mean"]), textcoords="offset points",
                    xytext=(5, 4), fontsize=8)  # fmt: skip
    pts = sorted((r["cost_x_sgd"], r["test_error_mean"]) for r in rows if r["optimizer"] in front)
    ax.plot(*zip(*pts), color="C3", lw=1, ls="--", label="Pareto front (means)")
    by_name = {r["optimizer"]: r for r in rows}
    goal_error = by_name["sgd"]["test_error_mean"] - GOAL_SHARE * (
        by_name["sgd"]["test_error_mean"] - by_name["sam"]["test_error_mean"]
    )
    ax.axvline(GOAL_COST, color="grey", lw=0.8, ls=":", label=f"goal: <= {GOAL_COST}x SGD ...")
    ax.axhline(
        goal_error,
        color="grey",
        lw=0.8,
        ls="-.",
        label=f"... and <= this error ({int(100 * GOAL_SHARE)}% of SAM's gain)",
    )
    benched = rows[0]["cost_ci95"] is None
    ax.set_xlabel(
        "step time relative to SGD (interleaved benchmark, same model and batch)"
        if benched
        else "training time relative to SGD (the study's runs, per-seed ratio)"
    )
    ax.set_ylabel("clean test error %")
    ax.set_title(f"{title}: error vs cost (mean ± 95% CI over seeds)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=130)


def write_summary(rows: list[dict], out_dir: Path, title: str = "") -> Path:
    """summary.md (table + goal check), summary.csv and pareto.png into out_dir; the path of summary.md.

    ``title``: the study's setting, from its runs (:func:`setting_title`).
    """
    front = pareto(rows)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_markdown(rows, front, out_dir / "summary.md")
    with (out_dir / "summary.csv").open("w", newline="") as f:
        keys = [k for k in rows[0] if not k.startswith("_")]
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows({k: r[k] for k in keys} for r in rows)
    write_figure(rows, front, out_dir / "pareto.png", title)
    return out_dir / "summary.md"
