"""Gradient accumulation for SAM in your own loop: one SAM step over several micro-batches.

Frameworks' accumulation cannot be SAM (docs/frameworks.md: Lightning's ``accumulate_grad_batches`` and
Accelerate's ``gradient_accumulation_steps`` are refused), because SAM needs the whole batch's gradient
*before* it perturbs. :func:`accumulated_sam_step` does it in the two-call recipe: pass 1 accumulates the
gradient at w over all micro-batches, ``first_step`` perturbs once with e(w) from that gradient, pass 2
accumulates the gradient at w + e(w) over the same micro-batches, ``second_step`` steps once. Each
micro-batch's mean loss is weighted by its share of the examples, so the step is the one-big-batch SAM
step up to fp32 round-off (the sums are taken in another order). BatchNorm is the exception: each
micro-batch is normalised by its own statistics and updates the running statistics once (pass 1 only,
with ``SAM(..., model=model)``), as any gradient accumulation does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
from torch import Tensor

from sam.optimizer import SAM

__all__ = ["accumulated_sam_step"]


def accumulated_sam_step(
    optimizer: SAM,
    micro_batches: Sequence[Any],
    loss_fn: Callable[[Any], Tensor],
    *,
    backward: Callable[[Tensor], None] | None = None,
    no_sync: Callable[[], AbstractContextManager] | None = None,
    per_replica: bool = False,
    sizes: Sequence[int] | None = None,
) -> Tensor:
    """One SAM step over ``micro_batches``; returns the (detached) loss at w of the whole batch.

    ``loss_fn(micro_batch)`` runs the forward and returns that micro-batch's *mean* loss. ``backward``
    (default ``loss.backward()``) is e.g. ``accelerator.backward``, ``self.manual_backward`` or
    ``lambda loss: scaler.scale(loss).backward()``. ``sizes`` are the micro-batches' example counts
    (default: ``len`` of each micro-batch's first element, or of the micro-batch itself). Under DDP pass
    ``no_sync=ddp_model.no_sync``: every backward but the last of each pass skips the all-reduce, so
    e(w) comes from the all-reduced gradient (synced); with ``per_replica=True`` all of pass 1 is local
    (the paper's per-replica e(w)). Gradients present on entry are an error: the accumulation is ours.
    """
    if not micro_batches:
        raise ValueError("accumulated_sam_step needs at least one micro-batch")
    if any(p.grad is not None for p in optimizer.params()):
        raise RuntimeError(
            "accumulated_sam_step found gradients already present: call optimizer.zero_grad() first "
            "(it accumulates pass 1 over the micro-batches itself)"
        )
    if sizes is None:
        sizes = [_size(batch) for batch in micro_batches]
    if len(sizes) != len(micro_batches) or any(n <= 0 for n in sizes):
        raise ValueError(f"sizes must give a positive example count per micro-batch, got {list(sizes)}")
    total = sum(sizes)
    weights = [n / total for n in sizes]
    backward = backward if backward is not None else Tensor.backward
    last = len(micro_batches) - 1

    def sync_context(i: int, local: bool) -> AbstractContextManager:
        return no_sync() if no_sync is not None and (local or i < last) else nullcontext()

    loss_at_w = torch.zeros(())
    for i, (batch, weight) in enumerate(zip(micro_batches, weights)):
        with sync_context(i, per_replica):
            loss = loss_fn(batch)
            backward(loss * weight)
        loss_at_w = loss_at_w.to(loss.device) + loss.detach() * weight
    optimizer.first_step(zero_grad=True)  # w -> w + e(w), from the whole batch's gradient
    try:
        for i, (batch, weight) in enumerate(zip(micro_batches, weights)):
            with sync_context(i, False):
                backward(loss_fn(batch) * weight)
    except BaseException:
        optimizer.restore()
        raise
    optimizer.second_step(zero_grad=True)
    return loss_at_w


def _size(batch: Any) -> int:
    first = batch[0] if isinstance(batch, (tuple, list)) else batch
    return len(first)
