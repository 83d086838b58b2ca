"""SAM-ON (Mueller, Vlaar, Rolnick & Hein, "Normalization Layers Are All That Sharpness-Aware
Minimization Needs", NeurIPS 2023): perturb only the normalization layers' affine parameters.

e(w) is SAM's (or ASAM's, ``adaptive=True``) built from the normalization parameters' gradient alone,
its norm over those parameters only; every other parameter stays at w in pass 2. All parameters are then
updated with the gradient taken at w + e. Same two passes as SAM, so the same cost; the point is the
accuracy the paper reports (it uses larger rho than SAM, since the ball covers fewer coordinates).

It is SAM with a filter in ``first_step``, so it runs through ``sam_step`` / ``sam_step_chunked``
unchanged: m-sharpness chunks, per-replica DDP, fp16/bf16 and BatchNorm statistics behave as SAM's.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _NormBase

from sam.optimizer import SAM

NORM_LAYERS: tuple[type[nn.Module], ...] = (_NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm)
if hasattr(nn, "RMSNorm"):
    NORM_LAYERS = (*NORM_LAYERS, nn.RMSNorm)


def normalization_parameters(model: nn.Module) -> list[Tensor]:
    """The affine parameters of every normalization layer (BatchNorm, LayerNorm, GroupNorm, ...)."""
    return [p for m in model.modules() if isinstance(m, NORM_LAYERS) for p in m.parameters(recurse=False)]


class SAMON(SAM):
    variant_name = "sam_on"

    def __init__(
        self,
        params: Iterable[Any],
        base_optimizer: type[torch.optim.Optimizer],
        *,
        model: nn.Module,
        **kwargs: Any,
    ) -> None:
        super().__init__(params, base_optimizer, **kwargs)
        norm = {id(p) for p in normalization_parameters(model)}
        self._perturb = [id(p) in norm for p in self.params()]
        if not any(self._perturb):
            raise ValueError(
                "sam_on perturbs normalization-layer parameters only, and the optimizer holds none of the "
                f"model's ({type(model).__name__} has no trainable BatchNorm/LayerNorm/GroupNorm affine "
                "parameters); use optimizer=sam"
            )

    @torch.no_grad()
    def first_step(self, zero_grad: bool = False, *, grads: Sequence[Tensor | None] | None = None) -> None:
        """SAM's ``first_step`` on the normalization parameters only (their gradients, their norm)."""
        if grads is None:  # p.grad is consumed (scaled in place): copy it unless zero_grad clears it anyway
            grads = [
                p.grad if zero_grad or p.grad is None or not keep else p.grad.clone()
                for p, keep in zip(self.params(), self._perturb)
            ]
        only_norm = [g if keep else None for g, keep in zip(grads, self._perturb)]
        super().first_step(grads=only_norm)
        if zero_grad:
            self.zero_grad(set_to_none=True)
