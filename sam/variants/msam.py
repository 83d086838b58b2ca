"""Momentum-SAM (Becker, Altrock & Risse, "Momentum-SAM: Sharpness Aware Minimization without
Computational Overhead", 2024): SAM's perturbation taken along the momentum buffer, so no extra gradient.

With the base optimizer's momentum buffer v (torch.optim.SGD: v <- mu v + g, w <- w - lr v, or with
Nesterov w <- w - lr (g + mu v)), one step is::

    e   = -rho v / ||v||                    (the negative momentum direction, norm over all parameters)
    g   = grad L_B(w + e)                   (the one forward/backward of the step, L2 at w + e)
    w   <- base step from w with g          (w restored exactly first: the weights between steps are w)

as the authors' ``optimizer/msam.py`` (MarlonBecker/MSAM), which keeps the weights at w + e between steps
instead and moves them (p += rho v_t/||v_t||; v <- mu v + g; p -= lr v; p -= rho v_{t+1}/||v_{t+1}||): the
same trajectory of w, but here checkpoints, evaluation and the final model hold w itself (the authors'
``main.py`` moves back before evaluating). Before the first step there is no buffer yet (the authors': a
zero buffer with inverse norm 0): e = 0, a plain SGD step. The gradient of the step is taken at w + e,
also for BatchNorm's running statistics, which the one forward updates there (as the authors' code,
whose every forward is at w + e). Weight decay: our L2 term enters at w + e, as the authors' code adds
``weight_decay * p`` with p at w + e.

Defaults: rho = 3 (the authors' README for CIFAR-100 WRN-16-4 / ResNet-50 and ImageNet ResNet-50, and
the authors' ``default.ini``), momentum 0.9; rho is the run's top-level ``rho``, so pass ``rho=3``. The
authors' SGD has no Nesterov term (its ``step`` ignores ``nesterov``); our configs keep Nesterov for the
comparison with SGD and SAM (the buffer, and so e, is the same either way); ``optimizer.nesterov=false``
gives the authors' exact update.

Cost: one forward/backward per step plus a norm and two parameter-sized adds; memory: one copy of w (the
exact restore; the momentum buffer is SGD's own). Composes with m-chunks (SGD's chunks at w + e: e does
not depend on the batch, so chunks only set the BatchNorm batches), DDP (the buffer is identical on every
replica, so is e; the backward averages as SGD's) and fp16/bf16. ``adaptive`` (ASAM) has no meaning here
and is refused.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from sam.foreach import global_grad_norm
from sam.steps import StepFn
from sam.variants.base import VariantSAM
from sam.variants.passes import finish_step, plain_gradient

_NORM_EPS = 1e-12  # as the authors' 1 / (||v|| + 1e-12)


class MomentumSAM(VariantSAM):
    variant_name = "msam"

    def __init__(self, params: Iterable[Any], base_optimizer: type[torch.optim.Optimizer], **kwargs: Any):
        super().__init__(params, base_optimizer, **kwargs)
        for group in self.param_groups:
            if group["adaptive"]:
                raise ValueError(
                    "msam perturbs along the momentum buffer and has no adaptive (ASAM) form: set "
                    "optimizer.adaptive=false"
                )
            if not group.get("momentum", 0.0):
                raise ValueError(
                    "msam perturbs along the base optimizer's momentum buffer, and this one has none "
                    f"(momentum={group.get('momentum', 0.0)!r}): use SGD with momentum > 0"
                )

    @torch.no_grad()
    def perturb_along_momentum(self) -> None:
        """w -> w - rho v / ||v|| on every parameter that has a momentum buffer (w saved for the restore)."""
        pairs = []
        for group in self.param_groups:
            for p in group["params"]:
                buf = self.base_optimizer.state.get(p, {}).get("momentum_buffer")
                if p.requires_grad and buf is not None:
                    pairs.append((group, p, buf))
        if not pairs:  # the first step: no buffer yet, e = 0
            return
        norm = global_grad_norm([b for _, _, b in pairs])
        perturbed = [p for _, p, _ in pairs]
        self._save(perturbed)
        self._pass["perturbed"] = perturbed
        for group in self.param_groups:
            mine = [(p, b) for g, p, b in pairs if g is group]
            if mine and group["rho"]:
                scale = (-group["rho"] / (norm + _NORM_EPS)).to(mine[0][1].device)
                bufs = [b for _, b in mine]  # w += v * scale, fused, no parameter-sized temporary
                torch._foreach_addcmul_([p for p, _ in mine], bufs, [scale.to(b.dtype) for b in bufs])

    def make_step(self, m: int | None, per_device_batch: int) -> StepFn:
        chunk = None if m is None or m == per_device_batch else m

        def step(model, optimizer, x, y, opts):
            self.perturb_along_momentum()
            try:  # SGD's gradient (chunks, L2, DDP averaging) taken at w + e
                loss, correct = plain_gradient(model, self, x, y, opts, chunk)
            finally:
                self.restore()  # w exactly
            result = finish_step(self, opts, loss, correct)
            self.steps_taken += 1
            return result

        return self._named(step, m, per_device_batch)
