"""A Hydra callback that prints one table when a multirun ends (the quickstart's SGD-vs-SAM comparison).

Configured in a config as::

    hydra:
      callbacks:
        summary:
          _target_: analysis.sweep_summary.SweepSummary

It reads every ``results.json`` below the sweep directory (analysis/runs.py) and prints test error
mean ± 95% CI per optimizer/rho/m. For paper comparisons use ``python scripts/compare.py RUNS_DIR``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from analysis.confidence import mean_ci95
from analysis.runs import group_runs, load_runs  # Hydra imports this module from the repo root


def summary_table(sweep_dir: Path) -> str:
    runs = load_runs(sweep_dir)
    if not runs:
        return f"no results.json below {sweep_dir}"
    lines = [
        f"{'optimizer':<9} {'rho':>6} {'m':>5} {'seeds':>5} {'test error %':>16} {'train loss':>10} {'wall s':>7}",
    ]
    for key, cell in sorted(group_runs(runs).items(), key=lambda kv: (kv[0][4] != "sgd", kv[0][5])):
        mean, ci = mean_ci95([r["test_error"] for r in cell])
        err = f"{mean:.2f}" + (f" ± {ci:.2f}" if ci is not None else "")
        train_loss = [r.get("train_loss") for r in cell if r.get("train_loss") is not None]
        wall = sum(r.get("wall_time_s") or 0.0 for r in cell) / len(cell)
        loss = f"{sum(train_loss) / len(train_loss):.4f}" if train_loss else "-"
        m = "-" if key[6] is None else str(key[6])
        lines.append(f"{key[4]:<9} {key[5]:>6g} {m:>5} {len(cell):>5} {err:>16} {loss:>10} {wall:>7.0f}")
    return "\n".join(lines)


class SweepSummary(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        print(f"\n== {sweep_dir} ==\n{summary_table(sweep_dir)}\n", flush=True)
