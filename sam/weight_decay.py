"""Where weight decay goes: as an L2 term in the loss (official SAM code), or decoupled in the optimizer.

The official code adds ``0.5 * wd * sum ||w||^2`` over *all* parameters to the loss, so the decay is
part of e(w)'s direction and is evaluated at w + e(w) in the second pass. We add its gradient
``wd * w`` straight into the gradient buffers with one fused kernel (no graph, no per-parameter hooks).
Added *before* a backward that all-reduces (DDP), it is averaged with the rest of the gradient exactly
as if the term were in each replica's loss.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

WEIGHT_DECAY_MODES = ("l2_loss", "decoupled")


@torch.no_grad()
def add_l2_gradient_(
    params: Sequence[Tensor],
    weight_decay: float,
    scale: float = 1.0,
    grads: Sequence[Tensor | None] | None = None,
) -> None:
    """Add the gradient of ``scale * 0.5 * wd * sum ||p||^2`` at the parameters' current values.

    Into ``grads`` (aligned with ``params``; None entries are skipped) when given, else into each
    ``p.grad``, created where it is None, so a following backward accumulates on top. ``scale`` is what
    the loss is multiplied by before backward (GradScaler scale, 1/k for a chunk of k).
    """
    if not weight_decay:
        return
    alpha = weight_decay * scale
    if grads is not None:
        pairs = [(p, g) for p, g in zip(params, grads) if g is not None]
        if pairs:
            torch._foreach_add_([g for _, g in pairs], [p for p, _ in pairs], alpha=alpha)
        return
    present = [p for p in params if p.grad is not None]
    missing = [p for p in params if p.grad is None]
    if present:
        torch._foreach_add_([p.grad for p in present], present, alpha=alpha)
    if missing:
        for p, g in zip(missing, torch._foreach_mul(missing, alpha)):
            p.grad = g


def decoupled_param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Parameter groups for decay in the base optimizer: 1-d tensors (biases, BN affine) get none."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
