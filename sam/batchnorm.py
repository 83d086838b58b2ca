"""BatchNorm running statistics under SAM: they come from the first (unperturbed) pass only.

Snapshot/restore of the buffers, not ``momentum=0`` (which still counts ``num_batches_tracked``) and
not ``eval()`` (which would change pass 2's forward to use running statistics).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _NormBase


def _stat_buffers(model: nn.Module) -> tuple[list[Tensor], list[Tensor]]:
    """(float running statistics, num_batches_tracked counters) of every norm layer that tracks them."""
    stats: list[Tensor] = []
    counters: list[Tensor] = []
    for module in model.modules():
        if isinstance(module, _NormBase) and module.track_running_stats:
            if module.running_mean is not None:
                stats += [module.running_mean, module.running_var]
            if module.num_batches_tracked is not None:
                counters.append(module.num_batches_tracked)
    return stats, counters


def bn_stat_buffers(model: nn.Module) -> list[Tensor]:
    """Every running-statistics buffer (means, variances, counters) that a train-mode forward moves."""
    stats, counters = _stat_buffers(model)
    return stats + counters


@contextmanager
def frozen_bn_stats(model: nn.Module) -> Iterator[None]:
    """On exit (normal or exception) every BN buffer is bit-exactly what it was on entry."""
    buffers = bn_stat_buffers(model)
    saved = [b.clone() for b in buffers]
    try:
        yield
    finally:
        if buffers:
            with torch.no_grad():
                torch._foreach_copy_(buffers, saved)


class ChunkedBNStats:
    """Running statistics for one-device m-sharpness, as the paper's per-accelerator BatchNorm.

    With the batch split into k chunks (one per simulated accelerator), each chunk's first pass updates
    the statistics *from the same starting point*, and the k results are averaged: the EMA update is
    linear, so this equals k devices each updating once and averaging (the official code's pmean of
    per-device statistics), and ``num_batches_tracked`` moves by exactly one per step.
    """

    def __init__(self, model: nn.Module) -> None:
        self.stats, self.counters = _stat_buffers(model)
        self.start = [b.clone() for b in self.stats]
        self.start_counters = [c.clone() for c in self.counters]
        self.sum: list[Tensor] | None = None
        self.chunks = 0

    @torch.no_grad()
    def begin_chunk(self) -> None:
        """Reset to the step's starting statistics (the first chunk starts there already)."""
        if self.chunks and self.stats:
            torch._foreach_copy_(self.stats, self.start)

    @torch.no_grad()
    def end_chunk(self) -> None:
        """Record the statistics this chunk's first pass produced."""
        self.chunks += 1
        if not self.stats:
            return
        if self.sum is None:
            self.sum = [b.clone() for b in self.stats]
        else:
            torch._foreach_add_(self.sum, self.stats)

    @torch.no_grad()
    def finish(self) -> None:
        """Write the mean over chunks; count one step."""
        if self.stats and self.sum is not None:
            torch._foreach_div_(self.sum, float(self.chunks))
            torch._foreach_copy_(self.stats, self.sum)
        if self.counters:
            torch._foreach_copy_(self.counters, self.start_counters)
            torch._foreach_add_(self.counters, 1)
