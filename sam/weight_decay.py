"""Where weight decay goes: as an L2 term in the loss (official SAM code), or decoupled in the optimizer.

The official code adds ``0.5 * wd * sum ||w||^2`` over *all* parameters to the loss, so the decay is
part of e(w)'s direction and is evaluated at w + e(w) in the second pass. We add its gradient
``wd * w`` through a hook on each parameter: the gradient reaches DDP's all-reduce, ``autograd.grad``
and GradScaler exactly as if the term were in the loss, without building it into the graph.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor, nn

WEIGHT_DECAY_MODES = ("l2_loss", "decoupled")


@contextmanager
def l2_in_loss(
    params: Sequence[Tensor], weight_decay: float, loss_scale: Tensor | None = None
) -> Iterator[None]:
    """Backward passes inside behave as if ``loss_scale * 0.5 * wd * sum ||p||^2`` were in the loss.

    ``loss_scale`` (a 0-d tensor, default 1) is whatever the loss was multiplied by before backward:
    the GradScaler scale, 1/k for a chunk of k. The term is evaluated at the parameters' current value.
    """
    if not weight_decay:
        yield
        return
    if loss_scale is None:

        def make_hook(p: Tensor):
            return lambda g: g.add(p, alpha=weight_decay)
    else:

        def make_hook(p: Tensor):
            return lambda g: torch.addcmul(g, p, loss_scale, value=weight_decay)

    handles = [p.register_hook(make_hook(p)) for p in params if p.requires_grad]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def decoupled_param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Parameter groups for decay in the base optimizer: 1-d tensors (biases, BN affine) get none."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
