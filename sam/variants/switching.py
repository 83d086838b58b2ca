"""Variants that choose, step by step, between a full SAM step and a plain SGD step.

* ``RandomSwitchSAM`` (RST; Zhao, Zhang & Hu, "Randomized Sharpness-Aware Training for Boosting
  Computational Efficiency in Deep Learning", 2022): a Bernoulli trial with probability p(t) per step;
  p constant or linear in t from ``probability`` to ``probability_end``.
* ``LateSAM`` (Zhou et al., "Sharpness-Aware Minimization Efficiently Selects Flatter Minima Late in
  Training", ICLR 2025): SGD for the first (1 - f) of the steps, SAM for the last fraction f.
* ``AESAM`` (Jiang, Yang, Zhang & Kwok, "An Adaptive Policy to Employ Sharpness-Aware Minimization",
  ICLR 2023): after the first pass, with s = ||g||^2,
  ``mu <- delta mu + (1 - delta) s``, ``var <- delta var + (1 - delta) (s - mu)^2``,
  and a SAM step when ``s >= mu + c_t sqrt(var)``, else an SGD step with g; ``c_t = lambda1 t/T +
  lambda2 (1 - t/T)`` moves linearly from lambda2 to lambda1 over training.

RST and LateSAM decide before the step, so they compose with m-sharpness chunks and per-replica DDP as
SAM does (each step is exactly ``sam_step``/``sam_step_chunked`` or ``sgd_step``/``sgd_step_chunked``).
AE-SAM decides from the whole batch's gradient before the second pass; with m-chunks each chunk would
need its own g again (a third pass), so it runs with one perturbation per device batch (m = null).
Under per-replica DDP its statistic is the mean over replicas of the local ||g||^2 (one scalar
all-reduce, so every replica decides alike); an SGD step then all-reduces the first-pass gradient.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from functools import partial
from typing import Any

import torch

from sam.foreach import global_grad_norm
from sam.randomness import RNGState
from sam.steps import (
    StepFn,
    sam_step,
    sam_step_chunked,
    sgd_step,
    sgd_step_chunked,
    trainable_params,
)
from sam.variants.base import VariantSAM, check_range, step_generator
from sam.variants.passes import all_reduce_mean_, finish_step, first_pass, is_ddp, perturbed_pass


def _check_total_steps(total_steps: Any, who: str) -> int:
    if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1:
        raise ValueError(
            f"{who} needs total_steps (an integer >= 1: epochs x steps per epoch), got {total_steps!r}"
        )
    return total_steps


class SwitchingSAM(VariantSAM):
    """SAM or SGD per step, decided before the step by :meth:`use_sam`; counts the SAM steps taken."""

    def __init__(self, params: Iterable[Any], base_optimizer: type[torch.optim.Optimizer], **kwargs: Any):
        super().__init__(params, base_optimizer, **kwargs)
        self.sam_steps = 0

    def use_sam(self) -> bool:
        raise NotImplementedError

    def variant_state(self) -> dict[str, Any]:
        return {**super().variant_state(), "sam_steps": self.sam_steps}

    def load_variant_state(self, state: dict[str, Any]) -> None:
        super().load_variant_state(state)
        self.sam_steps = int(state["sam_steps"])

    def make_step(self, m: int | None, per_device_batch: int) -> StepFn:
        whole = m is None or m == per_device_batch
        sam_fn = sam_step if whole else partial(sam_step_chunked, m=m)
        sgd_fn = sgd_step if whole else partial(sgd_step_chunked, m=m)

        def step(model, optimizer, x, y, opts):
            use = self.use_sam()
            result = (
                sam_fn(model, self, x, y, opts) if use else sgd_fn(model, self.base_optimizer, x, y, opts)
            )
            self.steps_taken += 1
            self.sam_steps += int(use)
            return result

        return self._named(step, m, per_device_batch)


class RandomSwitchSAM(SwitchingSAM):
    """RST: SAM with probability p(t) (a coin per step from (seed, step): identical on every replica)."""

    variant_name = "rst"

    def __init__(
        self,
        params: Iterable[Any],
        base_optimizer: type[torch.optim.Optimizer],
        *,
        probability: float = 0.5,
        probability_end: float | None = None,
        total_steps: int | None = None,
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(params, base_optimizer, **kwargs)
        self.probability = check_range("probability", probability, 0.0, 1.0)
        self.probability_end = None
        if probability_end is not None:
            self.probability_end = check_range("probability_end", probability_end, 0.0, 1.0)
            self.total_steps = _check_total_steps(total_steps, "rst with probability_end")
        self.seed = int(seed)

    def probability_at(self, step: int) -> float:
        if self.probability_end is None:
            return self.probability
        t = min(step / self.total_steps, 1.0)
        return self.probability + (self.probability_end - self.probability) * t

    def use_sam(self) -> bool:
        draw = torch.rand((), generator=step_generator(self.seed, self.steps_taken)).item()
        return draw < self.probability_at(self.steps_taken)


class LateSAM(SwitchingSAM):
    """SGD, then SAM for the last ``late_fraction`` of the ``total_steps`` steps."""

    variant_name = "sam_late"

    def __init__(
        self,
        params: Iterable[Any],
        base_optimizer: type[torch.optim.Optimizer],
        *,
        late_fraction: float = 0.25,
        total_steps: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(params, base_optimizer, **kwargs)
        self.late_fraction = check_range("late_fraction", late_fraction, 0.0, 1.0)
        self.total_steps = _check_total_steps(total_steps, "sam_late")
        self.first_sam_step = self.total_steps - round(self.late_fraction * self.total_steps)

    def use_sam(self) -> bool:
        return self.steps_taken >= self.first_sam_step


class AESAM(VariantSAM):
    """AE-SAM: a SAM step only when ||g||^2 is large against its running mean and deviation."""

    variant_name = "ae_sam"

    def __init__(
        self,
        params: Iterable[Any],
        base_optimizer: type[torch.optim.Optimizer],
        *,
        total_steps: int | None = None,
        delta: float = 0.9,
        lambda1: float = -1.0,
        lambda2: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(params, base_optimizer, **kwargs)
        self.total_steps = _check_total_steps(total_steps, "ae_sam")
        self.delta = check_range("delta", delta, 0.0, 1.0, high_open=True)
        self.lambda1 = check_range("lambda1", lambda1, -math.inf, math.inf, low_open=True, high_open=True)
        self.lambda2 = check_range("lambda2", lambda2, -math.inf, math.inf, low_open=True, high_open=True)
        self.mean = 0.0  # running mean of ||g||^2
        self.var = 0.0  # running variance of ||g||^2
        self.sam_steps = 0

    def threshold_c(self, step: int) -> float:
        t = min(step / self.total_steps, 1.0)
        return self.lambda1 * t + self.lambda2 * (1.0 - t)

    def decide(self, sq_norm: float) -> bool:
        """Update the running statistics with s = ||g||^2 and say whether this step is a SAM step."""
        if not math.isfinite(sq_norm):  # fp16 overflow: the step is skipped anyway; statistics untouched
            return False
        d = self.delta
        self.mean = d * self.mean + (1 - d) * sq_norm
        self.var = d * self.var + (1 - d) * (sq_norm - self.mean) ** 2
        return sq_norm >= self.mean + self.threshold_c(self.steps_taken) * math.sqrt(self.var)

    def variant_state(self) -> dict[str, Any]:
        return {**super().variant_state(), "mean": self.mean, "var": self.var, "sam_steps": self.sam_steps}

    def load_variant_state(self, state: dict[str, Any]) -> None:
        super().load_variant_state(state)
        self.mean, self.var = float(state["mean"]), float(state["var"])
        self.sam_steps = int(state["sam_steps"])

    def make_step(self, m: int | None, per_device_batch: int) -> StepFn:
        if m is not None and m != per_device_batch:
            raise ValueError(
                f"ae_sam decides from the whole device batch's gradient before the second pass, so it takes "
                f"one perturbation per device batch: set m=null (got m={m}, device batch {per_device_batch})"
            )

        def step(model, optimizer, x, y, opts):
            local = opts.perturbation == "per_replica"
            rng = RNGState(x.device)
            loss, correct = first_pass(model, self, x, y, opts, local=local)
            grads = [p.grad for p in trainable_params(self) if p.grad is not None]
            sq = global_grad_norm(grads).double() ** 2 / opts.precision.loss_scale**2
            del grads  # first_step consumes .grad: no reference may keep it alive through pass 2
            if local and is_ddp(model):
                sq = sq.clone()
                all_reduce_mean_([sq])
            use = self.decide(float(sq))
            if use:
                perturbed_pass(model, self, x, y, opts, rng)
            elif local and is_ddp(model):  # the SGD step's gradient, averaged as DDP's backward would
                all_reduce_mean_([p.grad for p in trainable_params(self) if p.grad is not None])
            result = finish_step(self, opts, loss, correct)
            self.steps_taken += 1
            self.sam_steps += int(use)
            return result

        return self._named(step, m, per_device_batch)
