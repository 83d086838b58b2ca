"""Figures of our runs: test error vs rho (with the SGD baseline and the paper's point) and training curves.

One pair per setting (model, dataset, augment, epochs, label noise); see scripts/plot.py, the command,
for what each figure shows.
"""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
import numpy as np

from analysis.confidence import mean_ci95
from analysis.paper_tables import find_paper_cell
from analysis.runs import CELL_KEYS, group_runs, read_metrics, warn_stderr

SETTING_KEYS = ("model", "dataset", "augment", "epochs", "label_noise")


def setting_of(key: dict) -> tuple:
    return tuple(key[k] for k in SETTING_KEYS)


def setting_title(setting: tuple) -> str:
    model, dataset, augment, epochs, noise = setting
    title = f"{model} · {dataset} · {augment} · {epochs} epochs"
    return title + (f" · {noise:.0%} label noise" if noise else "")


def setting_slug(setting: tuple) -> str:
    model, dataset, augment, epochs, noise = setting
    slug = f"{model}_{dataset}_{augment}_{epochs}ep" + (f"_noise{noise:g}" if noise else "")
    return re.sub(r"[^A-Za-z0-9_.+-]", "-", slug)


def cell_label(cell: dict, n: int) -> str:
    if cell["optimizer"] == "sgd":
        return f"SGD (n={n})"
    m = "" if cell["m"] is None else f", m={cell['m']}"
    return f"{cell['optimizer'].upper()} ρ={cell['rho']:g}{m} (n={n})"


def plot_rho_sweep(
    setting: tuple, cells: list[tuple[dict, list[dict]]], paper: list[dict], out: Path
) -> bool:
    """One rho-sweep figure; False (nothing written) when the setting has no SAM runs."""
    sam = [(c, runs) for c, runs in cells if c["optimizer"] != "sgd"]
    if not sam:
        return False
    fig, ax = plt.subplots(figsize=(7, 4.5))
    rhos_seen = []
    series: dict[tuple, list[tuple[float, float, float | None, int]]] = {}
    for cell, runs in sam:
        mean, ci = mean_ci95(r["test_error"] for r in runs)
        series.setdefault((cell["optimizer"], cell["m"]), []).append((cell["rho"], mean, ci, len(runs)))
    for (optimizer, m), points in sorted(series.items(), key=lambda kv: (kv[0][0], kv[0][1] or 0)):
        points.sort()
        x = [p[0] for p in points]
        y = [p[1] for p in points]
        yerr = [0.0 if p[2] is None else p[2] for p in points]
        n = sorted({p[3] for p in points})
        label = (
            f"{optimizer.upper()}" + ("" if m is None else f" m={m}") + f" (seeds: {'/'.join(map(str, n))})"
        )
        ax.errorbar(x, y, yerr=yerr, marker="o", capsize=3, label=label)
        rhos_seen += x

    sgd = [(c, runs) for c, runs in cells if c["optimizer"] == "sgd"]
    for _cell, runs in sgd:
        mean, ci = mean_ci95(r["test_error"] for r in runs)
        ci_text = "n/a" if ci is None else f"{ci:.2f}"
        line = ax.axhline(
            mean, color="black", lw=1.2, label=f"SGD baseline {mean:.2f} ± {ci_text} (n={len(runs)})"
        )
        if ci is not None:
            ax.axhspan(mean - ci, mean + ci, color=line.get_color(), alpha=0.12)

    fields = dict(zip(SETTING_KEYS, setting, strict=True))
    paper_sam = find_paper_cell(paper, **fields, optimizer="sam")
    if paper_sam is not None and paper_sam["rho"] is not None:
        ax.errorbar(
            [paper_sam["rho"]],
            [paper_sam["error"]],
            yerr=[paper_sam["error_pm"] or 0.0],
            marker="*",
            markersize=14,
            color="tab:red",
            capsize=3,
            ls="none",
            label=f"paper SAM ({paper_sam['table']}): {paper_sam['error']:g} at ρ={paper_sam['rho']:g}",
        )
        rhos_seen.append(paper_sam["rho"])
    paper_sgd = find_paper_cell(paper, **fields, optimizer="sgd")
    if paper_sgd is not None:
        ax.axhline(
            paper_sgd["error"],
            color="tab:red",
            ls=":",
            lw=1.2,
            label=f"paper SGD ({paper_sgd['table']}): {paper_sgd['error']:g}",
        )

    positive = [r for r in rhos_seen if r > 0]
    if len(set(positive)) >= 2 and len(positive) == len(rhos_seen) and max(positive) / min(positive) >= 4:
        ax.set_xscale("log")
        ticks = sorted(set(positive))
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])  # label the rho values run, not powers of ten
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("ρ (SAM neighbourhood radius)")
    ax.set_ylabel("test error (%)")
    ax.set_title(f"Test error vs ρ: {setting_title(setting)}", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return True


def _mean_curve(curves: list[dict[int, float]]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(epochs, mean, min, max) over the runs that logged each epoch."""
    epochs = sorted(set().union(*curves))
    values = [[c[e] for c in curves if e in c] for e in epochs]
    return (
        np.array(epochs),
        np.array([np.mean(v) for v in values]),
        np.array([np.min(v) for v in values]),
        np.array([np.max(v) for v in values]),
    )


def plot_curves(setting: tuple, cells: list[tuple[dict, list[dict]]], out: Path, warn=warn_stderr) -> bool:
    """Train loss and test error vs epoch, one line per cell; False when no run has usable metrics."""
    fig, (ax_loss, ax_err) = plt.subplots(1, 2, figsize=(11, 4.2))
    drawn = False
    all_losses = []
    for cell, runs in cells:
        per_metric: dict[str, list[dict[int, float]]] = {"train_loss": [], "test_error": []}
        for run in runs:
            path = run["run_dir"] / "metrics.jsonl"
            if not path.is_file():
                warn(f"no metrics.jsonl in {run['run_dir']}; its curve is left out")
                continue
            records = read_metrics(path, warn=warn)
            for metric, curves in per_metric.items():
                curve = {
                    r["epoch"]: float(r[metric])
                    for r in records
                    if isinstance(r.get(metric), int | float) and not isinstance(r.get(metric), bool)
                }
                if curve:
                    curves.append(curve)
        label = cell_label(cell, len(runs))
        for ax, metric in ((ax_loss, "train_loss"), (ax_err, "test_error")):
            if not per_metric[metric]:
                continue
            epochs, mean, low, high = _mean_curve(per_metric[metric])
            (line,) = ax.plot(epochs, mean, marker="." if len(epochs) < 30 else None, label=label)
            if len(per_metric[metric]) > 1:
                ax.fill_between(epochs, low, high, color=line.get_color(), alpha=0.15)
            if metric == "train_loss":
                all_losses += list(low)
            drawn = True
    if not drawn:
        plt.close(fig)
        return False
    if all_losses and min(all_losses) > 0:
        ax_loss.set_yscale("log")
    ax_loss.set_ylabel("train loss")
    ax_err.set_ylabel("test error (%)")
    for ax in (ax_loss, ax_err):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))  # whole epochs, from 1
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"Training curves (mean over seeds, band = min..max): {setting_title(setting)}", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return True


def write_plots(runs: list[dict], paper: list[dict], out_dir: Path) -> list[Path]:
    """Both figures of every setting the runs cover, into out_dir; the paths written."""
    settings: dict[tuple, list[tuple[dict, list[dict]]]] = {}
    for key, members in group_runs(runs).items():
        cell = dict(zip(CELL_KEYS, key, strict=True))
        settings.setdefault(setting_of(cell), []).append((cell, members))
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for setting, cells in settings.items():
        slug = setting_slug(setting)
        for name, draw in (
            (f"rho_{slug}.png", lambda p, s=setting, c=cells: plot_rho_sweep(s, c, paper, p)),
            (f"curves_{slug}.png", lambda p, s=setting, c=cells: plot_curves(s, c, p)),
        ):
            if draw(out_dir / name):
                written.append(out_dir / name)
    return written
