"""LookSAM (Liu, Mai, Chen, Hsieh & You, "Towards Efficient and Scalable Sharpness-Aware Minimization",
CVPR 2022), Algorithm 1.

Every k-th step (t mod k = 0) is a full SAM step, which also stores the component of the SAM gradient
g_s orthogonal to the plain gradient g::

    g_v = g_s - (<g, g_s> / ||g||^2) g          (= g_s - ||g_s|| cos(theta) g / ||g||)

The other k - 1 steps take one pass (g only) and reuse the stored direction, rescaled to g's norm::

    g_s ~= g + alpha (||g|| / ||g_v||) g_v

The base optimizer steps with g_s either way. g_v (one parameter-sized copy) is per-run state: it is in
``state_dict()``, so a resumed run reuses exactly the direction the uninterrupted run stored.

Composes with m-sharpness chunks (SAM steps: g and g_s are the means over the chunks of g_i and of the
chunk SAM gradients; reuse steps: chunked SGD) and per-replica DDP (g is all-reduced like g_s, so every
replica stores the same g_v). fp16: g_v's scale does not matter (only its direction is used); a SAM step
whose gradients overflowed keeps the previous g_v.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from sam.foreach import global_grad_norm
from sam.steps import StepFn
from sam.variants.base import VariantSAM, check_range
from sam.variants.passes import dot, finish_step, plain_gradient, sam_gradients_keeping_g

_EPS = 1e-12


class LookSAM(VariantSAM):
    variant_name = "looksam"

    def __init__(
        self,
        params: Iterable[Any],
        base_optimizer: type[torch.optim.Optimizer],
        *,
        k: int = 5,
        alpha: float = 0.7,
        **kwargs: Any,
    ) -> None:
        super().__init__(params, base_optimizer, **kwargs)
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k={k!r} is invalid: it must be an integer >= 1 (a SAM step every k steps)")
        self.k = k
        self.alpha = check_range("alpha", alpha, 0.0, float("inf"))
        self.g_v: list[Tensor | None] | None = None  # aligned with self.params()
        self.sam_steps = 0  # two-pass steps taken (every k-th, and the first after a start without g_v)

    def variant_state(self) -> dict[str, Any]:
        state = {**super().variant_state(), "k": self.k, "sam_steps": self.sam_steps}
        if self.g_v is not None:
            state["g_v"] = [t for t in self.g_v if t is not None]
            state["g_v_present"] = [t is not None for t in self.g_v]
        return state

    def load_variant_state(self, state: dict[str, Any]) -> None:
        super().load_variant_state(state)
        # checkpoints written before k and sam_steps were recorded: SAM at t = 0, k, 2k, ...
        self.sam_steps = int(state.get("sam_steps", -(-self.steps_taken // self.k)))
        if "g_v" not in state:
            self.g_v = None
            return
        stored = iter(state["g_v"])
        self.g_v = [
            next(stored).to(device=p.device, dtype=p.dtype) if present else None
            for p, present in zip(self.params(), state["g_v_present"])
        ]

    @torch.no_grad()
    def _store_orthogonal(self, g: list[Tensor | None], scaled: bool) -> None:
        """g_v from g (consumed) and g_s (``.grad``); kept unless an fp16 overflow made it non-finite."""
        g_s = [p.grad for p in self.params()]
        coef = dot(g, g_s) / (dot(g, g) + _EPS)
        # g_v = g_s - coef g, built in g's own buffers (g is ours and not needed after): no extra copy
        g_v = [None if a is None or b is None else a.mul_(-coef.to(a.dtype)).add_(b) for a, b in zip(g, g_s)]
        if scaled and not torch.isfinite(global_grad_norm([t for t in g_v if t is not None])):
            return  # fp16 overflow: this step is skipped; keep the last good direction
        self.g_v = g_v

    @torch.no_grad()
    def _add_stored_direction(self) -> None:
        grads = [p.grad for p in self.params()]
        pairs = [(a, b) for a, b in zip(grads, self.g_v) if a is not None and b is not None]
        if not pairs:
            return
        g_norm = global_grad_norm([a for a, _ in pairs])
        v_norm = global_grad_norm([b for _, b in pairs])
        factor = self.alpha * g_norm / (v_norm + _EPS)
        for a, b in pairs:
            a.add_(b * factor.to(a.dtype))

    def make_step(self, m: int | None, per_device_batch: int) -> StepFn:
        chunk = None if m is None or m == per_device_batch else m

        def step(model, optimizer, x, y, opts):
            if self.steps_taken % self.k == 0 or self.g_v is None:
                loss, correct, g = sam_gradients_keeping_g(model, self, x, y, opts, chunk)
                self._store_orthogonal(g, scaled=opts.precision.scaler is not None)
                del g
                self.sam_steps += 1
            else:
                loss, correct = plain_gradient(model, self, x, y, opts, chunk)
                self._add_stored_direction()
            result = finish_step(self, opts, loss, correct)
            self.steps_taken += 1
            return result

        return self._named(step, m, per_device_batch)
