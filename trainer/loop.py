"""The epoch loop and evaluation: plain functions over objects, no framework around the step."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from tqdm import tqdm

from sam.steps import StepFn, StepOptions, StepResult


@dataclass
class EpochTotals:
    """Running sums of one training epoch, kept on the device (no per-step host sync).

    They are part of a mid-epoch checkpoint, so a resumed epoch reports the same train loss.
    """

    loss_sum: Tensor = field(default_factory=lambda: torch.zeros((), dtype=torch.float64))
    correct: Tensor = field(default_factory=lambda: torch.zeros((), dtype=torch.int64))
    skipped: Tensor = field(default_factory=lambda: torch.zeros((), dtype=torch.int64))
    nonfinite_run: Tensor = field(default_factory=lambda: torch.zeros((), dtype=torch.int64))
    examples: int = 0
    steps: int = 0
    seconds: float = 0.0

    def to(self, device: torch.device) -> EpochTotals:
        for name in ("loss_sum", "correct", "skipped", "nonfinite_run"):
            setattr(self, name, getattr(self, name).to(device))
        return self

    def add(self, result: StepResult, batch: int) -> None:
        self.loss_sum += result.loss.double() * batch
        self.correct += result.correct
        self.skipped += result.skipped.long()
        finite = torch.isfinite(result.loss)
        self.nonfinite_run = torch.where(finite, torch.zeros_like(self.nonfinite_run), self.nonfinite_run + 1)
        self.examples += batch
        self.steps += 1

    def next_epoch(self) -> EpochTotals:
        """Zeroed sums for the next epoch. The run of non-finite losses goes on across the boundary, so
        ``max_nonfinite_steps`` also stops runs whose epochs are shorter than it."""
        return EpochTotals(nonfinite_run=self.nonfinite_run.clone())

    def state_dict(self) -> dict[str, Any]:
        return {
            "loss_sum": self.loss_sum.cpu(),
            "correct": self.correct.cpu(),
            "skipped": self.skipped.cpu(),
            "nonfinite_run": self.nonfinite_run.cpu(),
            "examples": self.examples,
            "steps": self.steps,
            "seconds": self.seconds,
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any], device: torch.device) -> EpochTotals:
        return cls(**state).to(device)


class NonFiniteLossError(RuntimeError):
    """The loss stayed NaN/inf for too many consecutive steps; the run stops, checkpoints kept."""


def train_one_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    step_fn: StepFn,
    opts: StepOptions,
    batches: Iterable[tuple[Tensor, Tensor]],
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    totals: EpochTotals,
    *,
    num_batches: int,
    start_batch: int = 0,
    max_nonfinite_steps: int = 100,
    check_every: int = 50,
    after_step: Callable[[], None] | None = None,
    on_log: Callable[[int, StepResult, float], None] | None = None,  # (batch index, result, images/s)
    should_stop: Callable[[], bool] = lambda: False,
    description: str = "train",
) -> int:
    """Train until ``num_batches`` (or a stop request); return the index of the next batch to run.

    ``batches`` yields from ``start_batch`` on. Every ``check_every`` steps the host looks at the
    device-side counters once: non-finite losses, and ``on_log`` (per-step logging) gets the last result.
    """
    model.train()
    index = start_batch
    bar = tqdm(
        total=num_batches,
        initial=start_batch,
        desc=description,
        leave=False,
        dynamic_ncols=True,
        disable=not sys.stderr.isatty(),
    )
    tick, examples_at_tick = time.perf_counter(), totals.examples
    try:
        for x, y in batches:
            if index >= num_batches:
                break
            result = step_fn(model, optimizer, x, y, opts)
            if scheduler is not None:
                scheduler.step()
            if after_step is not None:
                after_step()
            totals.add(result, x.shape[0])
            index += 1
            bar.update(1)
            if index % check_every == 0 or index == num_batches:
                run = int(totals.nonfinite_run)
                if run >= max_nonfinite_steps:
                    raise NonFiniteLossError(
                        f"the training loss was NaN/inf for {run} consecutive steps (limit "
                        f"trainer.max_nonfinite_steps={max_nonfinite_steps}); stopping. Lower lr or rho, "
                        f"or use precision=fp32."
                    )
                now = time.perf_counter()
                images_per_s = (totals.examples - examples_at_tick) / max(now - tick, 1e-9)  # this process's
                tick, examples_at_tick = now, totals.examples
                if on_log is not None:
                    on_log(index, result, images_per_s)
                lr = optimizer.param_groups[0]["lr"]
                bar.set_postfix(loss=f"{float(result.loss):.4f}", lr=f"{lr:.4g}", img_s=f"{images_per_s:.0f}")
            if should_stop():
                break
    finally:
        bar.close()
    return index


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor]],
    autocast: Callable[[], Any],
    num_batches: int | None = None,
) -> dict[str, Tensor]:
    """Sums over this process's share of the set: loss, top-1 and top-5 hits, examples (device tensors)."""
    model.eval()
    sums: dict[str, Tensor] = {}
    for i, (x, y) in enumerate(batches):
        if num_batches is not None and i >= num_batches:
            break
        with autocast():
            logits = model(x)
        logits = logits.float()
        top5 = logits.topk(min(5, logits.shape[-1]), dim=-1).indices
        hits = top5 == y[:, None]
        batch = {
            "loss_sum": nn.functional.cross_entropy(logits, y, reduction="sum").double(),
            "top1": hits[:, 0].sum(),
            "top5": hits.any(dim=-1).sum(),
            "examples": torch.tensor(y.shape[0], device=y.device),
        }
        for k, v in batch.items():
            sums[k] = sums[k] + v if k in sums else v
    model.train()
    return sums
