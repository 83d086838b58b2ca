"""GSAM (Zhuang et al., "Surrogate Gap Guided Sharpness-Aware Minimization", ICLR 2022), Algorithm 1.

Both of SAM's passes, then the update direction is SAM's gradient minus alpha times the component of the
plain gradient g orthogonal to it (descending on the surrogate gap without hurting the perturbed loss)::

    g_s = grad L(w + e),  e = rho_t g / ||g||
    g_perp = g - (<g, g_s> / ||g_s||^2) g_s
    d = g_s - alpha g_perp

rho_t follows the learning rate, as the paper's schedule (Sec. 5; README "Case 1: same as in paper"):
``rho_t = rho_min + (rho - rho_min) lr_t / lr_0`` per parameter group (lr_0: its learning rate when the
optimizer was built; lr_min = 0 for our schedules). ``rho_min_ratio`` gives rho_min as a fraction of rho
(default 0.5: the paper's Table 4 for its SGD-trained CNNs, ResNet-50/101: rho_max 0.04, rho_min 0.02);
``rho_min`` gives it in absolute terms instead (set ``rho_min_ratio: null`` with it); ratio 1 is constant
rho. alpha defaults to 0.4, the authors' PyTorch CIFAR-10 WRN example (``example/train.py``; Table 4
ranges from 0.005 to 1.0 by model).

Cost: SAM's two passes. Composes with m-sharpness chunks and per-replica DDP (g and g_s averaged alike,
one extra all-reduce of g), fp16 (the decomposition is linear in the common loss scale) and bf16.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from sam.steps import StepFn
from sam.variants.base import VariantSAM, check_range
from sam.variants.passes import dot, finish_step, sam_gradients_keeping_g

_EPS = 1e-12


class GSAM(VariantSAM):
    variant_name = "gsam"

    def __init__(
        self,
        params: Iterable[Any],
        base_optimizer: type[torch.optim.Optimizer],
        *,
        alpha: float = 0.4,
        rho_min: float | None = None,
        rho_min_ratio: float | None = 0.5,
        **kwargs: Any,
    ) -> None:
        super().__init__(params, base_optimizer, **kwargs)
        self.alpha = check_range("alpha", alpha, 0.0, float("inf"))
        if (rho_min is None) == (rho_min_ratio is None):
            raise ValueError(
                f"gsam takes rho_min (absolute) or rho_min_ratio (a fraction of rho), exactly one of them; got "
                f"rho_min={rho_min!r} and rho_min_ratio={rho_min_ratio!r} (set the other to null)"
            )
        if rho_min_ratio is not None:
            check_range("rho_min_ratio", rho_min_ratio, 0.0, 1.0)
        for group in self.param_groups:
            group.setdefault("rho_max", group["rho"])
            group.setdefault("rho_min", group["rho"] * rho_min_ratio if rho_min is None else rho_min)
            group.setdefault("lr_0", group["lr"])
            check_range("rho_min", group["rho_min"], 0.0, group["rho_max"])

    def update_rho(self) -> None:
        """rho_t from each group's current learning rate (lr_0 -> rho_max, 0 -> rho_min)."""
        for group in self.param_groups:
            lo, hi = group["rho_min"], group["rho_max"]
            group["rho"] = hi if lo == hi else lo + (hi - lo) * group["lr"] / group["lr_0"]

    @torch.no_grad()
    def decompose(self, g: list[Tensor | None]) -> None:
        """``.grad`` (g_s) -> g_s - alpha (g - <g, g_s>/||g_s||^2 g_s)."""
        g_s = [p.grad for p in self.params()]
        coef = dot(g, g_s) / (dot(g_s, g_s) + _EPS)
        for a, b in zip(g, g_s):
            if a is not None and b is not None:
                b.add_(a - coef.to(b.dtype) * b, alpha=-self.alpha)

    def make_step(self, m: int | None, per_device_batch: int) -> StepFn:
        chunk = None if m is None or m == per_device_batch else m

        def step(model, optimizer, x, y, opts):
            self.update_rho()
            loss, correct, g = sam_gradients_keeping_g(model, self, x, y, opts, chunk)
            self.decompose(g)
            del g
            result = finish_step(self, opts, loss, correct)
            self.steps_taken += 1
            return result

        return self._named(step, m, per_device_batch)
