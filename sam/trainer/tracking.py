"""Where metrics go: ``metrics.jsonl`` in the run directory always, Weights & Biases when asked.

W&B is imported only when ``logger=wandb``; ``WANDB_MODE=offline`` keeps runs on disk for ``wandb
sync``. The W&B run id is chosen once per run directory and kept across resumes.
"""

from __future__ import annotations

import json
import logging
import secrets
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

from sam.trainer.atomic import atomic_write_text
from sam.trainer.wandb_fallback import init_wandb_run

log = logging.getLogger(__name__)


class MetricsFile:
    """One JSON object per epoch. On resume, lines past the checkpoint's epoch are dropped."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def truncate_after(self, completed_epochs: int) -> None:
        """Keep the records of epochs < ``completed_epochs``; rewritten atomically (a kill keeps the old file)."""
        if not self.path.exists():
            return
        keep = []
        for line in self.path.read_text().splitlines():
            try:
                if json.loads(line)["epoch"] < completed_epochs:
                    keep.append(line)
            except (ValueError, KeyError, TypeError):
                continue  # a half-written last line from a kill
        atomic_write_text(self.path, "".join(k + "\n" for k in keep))

    def append(self, record: dict[str, Any]) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()


class WandbTracker:
    """A thin wrapper so the trainer never touches ``wandb`` directly."""

    def __init__(
        self,
        *,
        run_dir: Path,
        config: dict[str, Any],
        project: str,
        entity: str | None,
        group: str | None,
        tags: list[str],
        name: str,
        run_id: str | None,
    ) -> None:
        import wandb  # only when logger=wandb

        self._wandb = wandb
        self.run_id = run_id or secrets.token_hex(4)  # W&B ids: [a-z0-9]; kept across resumes
        self.run = init_wandb_run(  # offline with a warning when online fails (wandb_fallback.py)
            wandb,
            run_dir=run_dir,
            project=project,
            entity=entity,
            group=group,
            tags=list(tags),
            name=name,
            id=self.run_id,
            resume="allow",
            config=config,
        )
        self.run.define_metric("epoch")
        self.run.define_metric("epoch/*", step_metric="epoch")
        log.info("W&B run %s (%s) in %s", self.run_id, self.run.settings.mode, run_dir)

    def log_step(self, metrics: dict[str, float], step: int) -> None:
        self.run.log(metrics, step=step)

    def log_epoch(self, metrics: dict[str, float], step: int) -> None:
        self.run.log(
            {f"epoch/{k}": v for k, v in metrics.items() if k != "epoch"} | {"epoch": metrics["epoch"]},
            step=step,
        )

    def summary(self, results: dict[str, Any]) -> None:
        for k, v in results.items():
            if isinstance(v, (int, float, str)):
                self.run.summary[k] = v

    def finish(self, exit_code: int = 0) -> None:
        self.run.finish(exit_code=exit_code)


class NullTracker:
    run_id: str | None = None

    def log_step(self, metrics: dict[str, float], step: int) -> None:
        pass

    def log_epoch(self, metrics: dict[str, float], step: int) -> None:
        pass

    def summary(self, results: dict[str, Any]) -> None:
        pass

    def finish(self, exit_code: int = 0) -> None:
        pass


def make_tracker(cfg: Any, run_dir: Path, resolved: dict, run_id: str | None, is_main: bool) -> Any:
    """W&B on the main process when ``logger=wandb`` (grouped by sweep), else a tracker that does nothing."""
    if cfg.logger.name == "none" or not is_main:
        return NullTracker()
    group = cfg.logger.group
    if group is None:
        hc = HydraConfig.get()
        group = Path(hc.sweep.dir).name if hc.mode == RunMode.MULTIRUN else run_dir.name
    id_file = run_dir / "wandb_run_id.txt"
    if run_id is None and id_file.exists():
        run_id = id_file.read_text().strip() or None
    tracker = WandbTracker(
        run_dir=run_dir,
        config=resolved,
        project=cfg.logger.project,
        entity=cfg.logger.entity,
        group=group,
        tags=list(cfg.logger.tags),
        name=run_dir.name,
        run_id=run_id,
    )
    id_file.write_text(tracker.run_id)
    return tracker
