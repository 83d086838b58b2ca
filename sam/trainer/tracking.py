"""Where metrics go: ``metrics.jsonl`` in the run directory always, Weights & Biases when asked.

W&B is imported only when ``logger=wandb``; ``WANDB_MODE=offline`` keeps runs on disk for ``wandb
sync``. The W&B run id is chosen once per run directory and kept across resumes.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
from pathlib import Path
from typing import Any

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
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text("".join(k + "\n" for k in keep))
        os.replace(tmp, self.path)

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
