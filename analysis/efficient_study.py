"""The efficient-SAM study (issues 15, 21): error, cost and the share of SAM's gain per variant and setting.

A study is every results.json under one folder, grouped by label-noise setting (the only setting allowed
to differ; anything else that differs is refused, as is a variant whose settings differ between its runs).
Per setting and variant, over its seeds:

* test error: mean and the half-width of the 95% t-interval over seeds (the paper's statistic);
* share of SAM's gain kept, ``(err_SGD - err_variant) / (err_SGD - err_SAM)`` of the seed means, with a
  95% percentile bootstrap interval that resamples seeds jointly (one seed's runs share the data split,
  the noisy labels and the initial weights: they are paired); SAM's gain itself gets the same interval;
* cost x SGD: from ``benchmarks/bench_variants.py``'s JSON (each timed round's ratio to SGD, per kind of
  step), at the share of two-pass steps the study's runs took (from their final optimizer state), with a
  95% bootstrap interval over the benchmark's rounds; without a benchmark, the runs' own training time
  (``images_per_s(SGD) / images_per_s(variant)`` per seed, t-interval: noisy on a shared machine);
* the goal (>= 80% of SAM's gain at <= 1.3x SGD's step time), decided on the intervals: **yes** when both
  intervals lie inside it, **no** when either lies outside, else **undecided**.

The command is scripts/efficient_summary.py; results/digits/efficient/ holds its output.
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
    "saf": "Du et al., NeurIPS 2022",
    "gsam": "Zhuang et al., ICLR 2022",
    "sam_on": "Mueller et al., NeurIPS 2023",
    "msam": "Becker, Altrock & Risse, 2024",
}
# What every run of one study shares (the pairing is by seed); label_noise splits it into settings.
SHARED = (
    "model", "dataset", "epochs", "batch_size", "lr", "weight_decay", "augment", "label_noise_protocol",
)  # fmt: skip
Runs = dict[str, dict[int, dict]]  # optimizer -> seed -> results.json


def two_pass_share(run_dir: Path) -> float | None:
    """Share of two-pass (SAM) steps, from the final checkpoint's optimizer state (switching variants)."""
    path = run_dir / "checkpoints" / "last.pt"
    if not path.exists():
        return None
    import torch

    variant = torch.load(path, map_location="cpu", weights_only=True)["optimizer"].get("variant", {})
    if "sam_steps" in variant:
        return variant["sam_steps"] / max(variant["steps_taken"], 1)
    return None


def _value(r: dict, key: str):
    config = r.get("config") or {}
    return r.get(key, config.get(key))


def variant_setting(r: dict) -> str:
    """What the run's optimizer ran with, from its results.json: rho, adaptive, the variant's options."""
    opt = (r.get("config") or {}).get("optimizer") or {}
    parts = [] if r["optimizer"] == "sgd" else [f"rho {r.get('rho')}"]
    if opt.get("adaptive"):
        parts.append(f"adaptive (eta {opt.get('eta')})")
    parts += [f"{k} {v}" for k, v in sorted((opt.get("variant") or {}).items()) if v is not None]
    return ", ".join(parts)


def load(root: Path) -> dict[float, Runs]:
    """label noise -> optimizer -> seed -> results.json; ValueError for anything that cannot be paired."""
    settings: dict[float, Runs] = {}
    for path in sorted(root.rglob("results.json")):
        r = json.loads(path.read_text())
        r["optimizer"] = recorded_facts(r, path)["optimizer"]  # as the trainer decided it
        r["two_pass_share"] = two_pass_share(path.parent)
        r["variant_setting"] = variant_setting(r)
        noise = float(r.get("label_noise") or 0.0)
        by_seed = settings.setdefault(noise, {}).setdefault(r["optimizer"], {})
        if r["seed"] in by_seed:
            raise ValueError(f"two runs of {r['optimizer']} seed {r['seed']} at label noise {noise} ({path})")
        by_seed[r["seed"]] = r
    if not settings:
        raise ValueError(f"no results.json under {root}")
    for noise, runs in settings.items():
        if "sgd" not in runs or "sam" not in runs:
            raise ValueError(
                f"label noise {noise}: needs SGD and SAM runs as the reference (found {sorted(runs)})"
            )
    study_setting(settings)
    variant_settings(settings)
    return settings


def study_setting(settings: dict[float, Runs]) -> dict:
    """The settings all runs share (from their results.json); ValueError naming any that differ."""
    values: dict[str, set] = {key: set() for key in SHARED}
    runs = [r for by_opt in settings.values() for by_seed in by_opt.values() for r in by_seed.values()]
    for r in runs:
        for key in SHARED:
            values[key].add(repr(_value(r, key)))
    differ = {k: sorted(v) for k, v in values.items() if len(v) > 1}
    if differ:
        raise ValueError(f"the runs of this study differ in {differ}: pair only runs of one setting")
    models = {model_name(r) for r in runs}
    if len(models) > 1:
        raise ValueError(
            f"the runs of this study train different models {sorted(models)}: one model per study"
        )
    return {key: _value(runs[0], key) for key in SHARED} | {"model": models.pop()}


def variant_settings(settings: dict[float, Runs]) -> dict[str, str]:
    """optimizer -> its setting, the same in every run of it; ValueError naming a variant whose runs differ."""
    found: dict[str, set[str]] = {}
    for by_opt in settings.values():
        for name, by_seed in by_opt.items():
            found.setdefault(name, set()).update(r["variant_setting"] for r in by_seed.values())
    differ = {name: sorted(v) for name, v in found.items() if len(v) > 1}
    if differ:
        raise ValueError(
            f"runs of one optimizer ran with different settings {differ}: one setting per variant"
        )
    return {name: next(iter(v)) for name, v in found.items()}


def model_name(r: dict) -> str:
    """``wide_resnet 10-2`` (family, depth-width) from a run's results.json and config."""
    model = (r.get("config") or {}).get("model") or {}
    size = "-".join(str(model[k]) for k in ("depth", "widen_factor") if model.get(k) is not None)
    return f"{r.get('model')} {size}".strip()


def setting_title(setting: dict, noise: float) -> str:
    """``digits, wide_resnet 10-2, 24 epochs, 40% label noise`` from the runs themselves."""
    parts = [str(setting.get("dataset")), str(setting.get("model")), f"{setting.get('epochs')} epochs"]
    parts.append(f"{noise:.0%} label noise" if noise else "clean labels")
    return ", ".join(parts)


# -- cost from the benchmark ----------------------------------------------------------------------------------
def load_bench(path: Path, model: str) -> dict[str, dict[str, list[float]]]:
    """variant -> kind of step ("all", or "sam"/"other") -> per-round ratios to SGD, from bench_variants' JSON."""
    try:
        data = json.loads(path.read_text())
        variants = data["models"][model]["variants"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(
            f"{path} is not bench_variants.py --out's JSON with model {model!r} ({type(err).__name__}: {err})"
        ) from err
    return {name: v["ratios"] for name, v in variants.items()}


def bench_cost(
    kinds: dict[str, list[float]], share: float | None, n_boot: int, rng
) -> tuple[float, float, float]:
    """Median ratio (share-weighted over kinds of step) and its 95% bootstrap interval over the rounds."""
    if "all" in kinds:
        weights = {"all": 1.0}
    else:
        if share is None:
            raise ValueError("a switching variant's cost needs the two-pass share its runs took")
        weights = {"sam": share, "other": 1.0 - share}
        kinds = {**{"sam": [], "other": []}, **kinds}
        if any(w > 0 and not kinds[k] for k, w in weights.items()):
            raise ValueError(
                f"the benchmark timed no {[k for k, w in weights.items() if w > 0 and not kinds[k]]} steps"
            )
    point = sum(w * float(np.median(kinds[k])) for k, w in weights.items() if w > 0)
    boot = np.zeros(n_boot)
    for k, w in weights.items():
        if w > 0:
            v = np.asarray(kinds[k])
            boot += w * np.median(v[rng.integers(0, len(v), size=(n_boot, len(v)))], axis=1)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return point, float(lo), float(hi)


# -- per setting --------------------------------------------------------------------------------------------
def verdict(cost: tuple[float, float], share: tuple[float, float]) -> str:
    """yes / no / undecided for the goal, from the intervals of cost and of the share of SAM's gain."""
    (cost_lo, cost_hi), (share_lo, share_hi) = cost, share
    if any(math.isnan(v) for v in (cost_lo, cost_hi, share_lo, share_hi)):
        return "undecided"
    if cost_hi <= GOAL_COST and share_lo >= GOAL_SHARE:
        return "yes"
    if cost_lo > GOAL_COST or share_hi < GOAL_SHARE:
        return "no"
    return "undecided"


def _goal(name: str, gain_resolved: bool, cost: tuple[float, float], share: tuple[float, float]) -> str:
    """The goal column: empty for the two references, n/a without a resolved SAM gain, else the verdict."""
    if name in ("sgd", "sam"):
        return ""
    return verdict(cost, share) if gain_resolved else "n/a"


def summarise(
    runs: Runs, n_boot: int, seed: int = 0, bench: dict[str, dict[str, list[float]]] | None = None
) -> list[dict]:
    """One row per optimizer of one setting (see the module docstring for each quantity).

    Where SAM's own gain over SGD is not distinguishable from zero (its interval reaches 0), there is no
    gain to keep: every variant's goal is "n/a" rather than a verdict on a ratio of noise.
    """
    gain_resolved = sam_gain(runs, n_boot, seed)[1] > 0
    sgd, sam = runs["sgd"], runs["sam"]
    rng = np.random.default_rng(seed)
    rows = []
    for name, by_seed in runs.items():
        seeds = sorted(set(by_seed) & set(sgd) & set(sam))
        err = np.array([by_seed[s]["test_error"] for s in seeds])
        e_sgd = np.array([sgd[s]["test_error"] for s in seeds])
        e_sam = np.array([sam[s]["test_error"] for s in seeds])
        study_time = [sgd[s]["images_per_s"] / by_seed[s]["images_per_s"] for s in seeds]
        mean, ci = mean_ci95(err)
        time_mean, time_ci = mean_ci95(study_time)
        gain = e_sgd.mean() - e_sam.mean()
        share = (e_sgd.mean() - err.mean()) / gain if gain else math.nan
        idx = rng.integers(0, len(seeds), size=(n_boot, len(seeds)))
        g_b = e_sgd[idx].mean(1) - e_sam[idx].mean(1)
        with np.errstate(divide="ignore", invalid="ignore"):
            s_b = (e_sgd[idx].mean(1) - err[idx].mean(1)) / g_b
        s_b = s_b[np.isfinite(s_b)]
        lo, hi = np.percentile(s_b, [2.5, 97.5]) if len(s_b) else (math.nan, math.nan)
        passes = _mean_or_none([by_seed[s]["two_pass_share"] for s in seeds])
        if bench is not None:
            if name not in bench:
                raise ValueError(f"the benchmark has no {name!r} (it has {sorted(bench)})")
            cost, cost_lo, cost_hi = bench_cost(bench[name], passes, n_boot, rng)
        else:
            half = time_ci or 0.0
            cost, cost_lo, cost_hi = time_mean, time_mean - half, time_mean + half
        rows.append(
            dict(
                optimizer=name,
                paper=PAPERS.get(name, ""),
                setting=by_seed[seeds[0]]["variant_setting"] if seeds else "",
                n_seeds=len(seeds),
                seeds=" ".join(map(str, seeds)),
                test_error_mean=mean,
                test_error_ci95=ci,
                share_of_sam_gain=share if name != "sgd" else 0.0,
                share_ci_low=float(lo),
                share_ci_high=float(hi),
                cost_x_sgd=cost,
                cost_ci_low=cost_lo,
                cost_ci_high=cost_hi,
                cost_source="bench_variants" if bench is not None else "study time",
                study_time_x_sgd=time_mean,
                study_time_ci95=time_ci,
                two_pass_share=passes,
                wall_time_s=statistics.fmean(by_seed[s]["wall_time_s"] for s in seeds),
                goal=_goal(name, gain_resolved, (cost_lo, cost_hi), (float(lo), float(hi))),
            )
        )
    order = list(PAPERS)
    rows.sort(key=lambda r: order.index(r["optimizer"]) if r["optimizer"] in order else len(order))
    return rows


def sam_gain(runs: Runs, n_boot: int, seed: int = 0) -> tuple[float, float, float]:
    """SAM's gain over SGD in error points (seed means), with its paired 95% bootstrap interval."""
    seeds = sorted(set(runs["sgd"]) & set(runs["sam"]))
    d = np.array([runs["sgd"][s]["test_error"] - runs["sam"][s]["test_error"] for s in seeds])
    idx = np.random.default_rng(seed).integers(0, len(d), size=(n_boot, len(d)))
    lo, hi = np.percentile(d[idx].mean(1), [2.5, 97.5])
    return float(d.mean()), float(lo), float(hi)


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


# -- output -------------------------------------------------------------------------------------------------
def fmt(x: float | None, digits: int = 2) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def pct(x: float) -> str:
    return fmt(100 * x, 0)


def markdown_table(rows: list[dict], front: list[str]) -> list[str]:
    lines = [
        "| optimizer | paper | seeds | test error % (95% CI) | share of SAM's gain [95% CI] | "
        "cost x SGD [95% CI] | two-pass steps | goal |",
        "|---|---|---|---|---|---|---|---|",
    ]
    fixed = {"sgd": "0%", "sam": "100%", "esam": "100%", "gsam": "100%", "sam_on": "100%"}
    for r in rows:
        err = f"{fmt(r['test_error_mean'])} ± {fmt(r['test_error_ci95'])}"
        share = f"{pct(r['share_of_sam_gain'])}% [{pct(r['share_ci_low'])}, {pct(r['share_ci_high'])}]"
        if r["optimizer"] in ("sgd", "sam"):
            share = "0% (reference)" if r["optimizer"] == "sgd" else "100% (reference)"
        cost = f"{fmt(r['cost_x_sgd'])} [{fmt(r['cost_ci_low'])}, {fmt(r['cost_ci_high'])}]"
        if r["optimizer"] == "sgd":
            cost = "1.00 (reference)"
        passes = fixed.get(
            r["optimizer"], "0% (one pass)" if r["optimizer"] in ("mesa", "saf", "msam") else "-"
        )
        if r["two_pass_share"] is not None:
            passes = f"{100 * r['two_pass_share']:.1f}%"
        goal = f"**{r['goal']}**" if r["goal"] == "yes" else r["goal"]
        name = f"**{r['optimizer']}**" if r["optimizer"] in front else r["optimizer"]
        lines.append(
            f"| {name} | {r['paper']} | {r['n_seeds']} | {err} | {share} | {cost} | {passes} | {goal} |"
        )
    return lines


def write_markdown(sections: list[dict], settings_by_variant: dict[str, str], path: Path) -> None:
    lines = []
    for sec in sections:
        gain, lo, hi = sec["sam_gain"]
        met = [r["optimizer"] for r in sec["rows"] if r["goal"] == "yes"]
        open_ = [r["optimizer"] for r in sec["rows"] if r["goal"] == "undecided"]
        resolved = (
            "" if lo > 0 else " Its interval reaches 0: there is no gain to keep, so no goal verdict (n/a)."
        )
        lines += [
            f"### {sec['title']}",
            "",
            f"SAM's gain over SGD: {gain:.2f} points [{lo:.2f}, {hi:.2f}] (paired bootstrap over seeds).{resolved}",
            "",
            *markdown_table(sec["rows"], sec["front"]),
            "",
            f"Pareto front (mean cost, mean error; bold): {', '.join(sec['front'])}.",
            f"Goal (>= {int(100 * GOAL_SHARE)}% of SAM's gain at <= {GOAL_COST}x SGD, both intervals inside): "
            f"met by {', '.join(met) or 'none'}; undecided: {', '.join(open_) or 'none'}.",
            "",
        ]
    lines += ["### Settings, from each run's results.json", "", "| optimizer | setting |", "|---|---|"]
    lines += [f"| {name} | {s or '-'} |" for name, s in settings_by_variant.items()]
    path.write_text("\n".join(lines) + "\n")


def write_figure(sections: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(sections), figsize=(6.2 * len(sections), 4.8), squeeze=False)
    for ax, sec in zip(axes[0], sections):
        rows, front = sec["rows"], sec["front"]
        by_name = {r["optimizer"]: r for r in rows}
        e_sgd, e_sam = by_name["sgd"]["test_error_mean"], by_name["sam"]["test_error_mean"]
        # A run far off the others' scale (e.g. a diverged method) is marked at the top, not drawn there.
        limit = 3 * (e_sgd + (by_name["sgd"]["test_error_ci95"] or 0))
        shown = [r for r in rows if r["test_error_mean"] <= limit]
        top = 1.15 * max(r["test_error_mean"] + (r["test_error_ci95"] or 0) for r in shown)
        for r in rows:
            if r["test_error_mean"] > limit:
                ax.annotate(
                    f"{r['optimizer']}: {r['test_error_mean']:.1f}% (off scale)", (r["cost_x_sgd"], top),
                    xytext=(0, -14), textcoords="offset points", ha="center", fontsize=8,
                    arrowprops={"arrowstyle": "->", "color": "grey"},
                )  # fmt: skip
                continue
            x, y = r["cost_x_sgd"], r["test_error_mean"]
            xerr = [[x - r["cost_ci_low"]], [r["cost_ci_high"] - x]]
            ax.errorbar(
                x, y, xerr=xerr, yerr=r["test_error_ci95"] or 0, fmt="o", capsize=3, alpha=0.85,
                color="C3" if r["optimizer"] in front else "C0",
            )  # fmt: skip
            ax.annotate(r["optimizer"], (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
        pts = sorted((r["cost_x_sgd"], r["test_error_mean"]) for r in rows if r["optimizer"] in front)
        ax.plot(*zip(*pts), color="C3", lw=1, ls="--", label="Pareto front (means)")
        ax.set_ylim(0, top)
        ax.axvline(GOAL_COST, color="grey", lw=0.8, ls=":", label=f"goal: <= {GOAL_COST}x SGD ...")
        ax.axhline(
            e_sgd - GOAL_SHARE * (e_sgd - e_sam), color="grey", lw=0.8, ls="-.",
            label=f"... and <= this error ({int(100 * GOAL_SHARE)}% of SAM's gain)",
        )  # fmt: skip
        source = rows[0]["cost_source"]
        ax.set_xlabel(
            "step time x SGD at the runs' two-pass share (bench_variants, 95% CI over rounds)"
            if source == "bench_variants"
            else "training time x SGD (the study's runs, 95% CI over seeds)",
            fontsize=8,
        )
        ax.set_ylabel("clean test error % (mean, 95% CI over seeds)")
        ax.set_title(sec["title"], fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=130)


def write_summary(settings: dict[float, Runs], out_dir: Path, n_boot: int, bench: dict | None = None) -> Path:
    """summary.md, summary.csv and pareto.png (one panel per label-noise setting) into out_dir."""
    setting = study_setting(settings)
    sections = []
    for noise in sorted(settings):
        rows = summarise(settings[noise], n_boot, bench=bench)
        sections.append(
            dict(
                noise=noise,
                title=setting_title(setting, noise),
                rows=rows,
                front=pareto(rows),
                sam_gain=sam_gain(settings[noise], n_boot),
            )
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    write_markdown(sections, variant_settings(settings), out_dir / "summary.md")
    with (out_dir / "summary.csv").open("w", newline="") as f:
        keys = ["label_noise", *sections[0]["rows"][0]]
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        for sec in sections:
            w.writerows({"label_noise": sec["noise"], **r} for r in sec["rows"])
    write_figure(sections, out_dir / "pareto.png")
    return out_dir / "summary.md"
