"""Arithmetic on lists of tensors with torch's fused ``_foreach`` kernels, across devices.

The fused kernels want every tensor of a call on one device; these helpers group by device, so SAM and
the steps work unchanged on a model split over devices. ``global_grad_norm`` is public (``sam``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def global_grad_norm(tensors: Sequence[Tensor]) -> Tensor:
    """L2 norm of all tensors taken together, with fused per-device norms and no host sync.

    Computed in float32 for float32 / bf16 / fp16 tensors and in float64 for float64 ones."""
    if not tensors:
        raise ValueError("global_grad_norm needs at least one tensor")
    by_device: dict[torch.device, list[Tensor]] = {}
    for t in tensors:
        by_device.setdefault(t.device, []).append(t)
    first = tensors[0].device
    norms = []
    for group in by_device.values():
        per_tensor = torch.stack(torch._foreach_norm(group))
        per_tensor = per_tensor.to(torch.promote_types(per_tensor.dtype, torch.float32))
        norms.append(torch.linalg.vector_norm(per_tensor).to(first, non_blocking=True))
    return norms[0] if len(norms) == 1 else torch.linalg.vector_norm(torch.stack(norms))


def mul(tensors: list[Tensor], others: list[Tensor], in_place: bool) -> list[Tensor]:
    """``tensors * others`` element-wise, pairwise; in place (returning ``tensors``) when asked."""
    if in_place:
        torch._foreach_mul_(tensors, others)
        return tensors
    return list(torch._foreach_mul(tensors, others))


def mul_scalar(tensors: list[Tensor], factor: Tensor, in_place: bool) -> list[Tensor]:
    """``tensors * factor`` for a 0-d tensor, moved to each device once (fused kernels want one device)."""
    out = list(tensors)
    by_device: dict[torch.device, list[int]] = {}
    for i, t in enumerate(tensors):
        by_device.setdefault(t.device, []).append(i)
    for device, index in by_device.items():
        part = [tensors[i] for i in index]
        f = factor.to(device, non_blocking=True)
        if in_place:
            torch._foreach_mul_(part, f)
        else:
            for i, r in zip(index, torch._foreach_mul(part, f)):
                out[i] = r
    return out
