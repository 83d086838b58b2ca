"""Variants that choose, step by step, between a full SAM step and a plain SGD step.

* ``RandomSwitchSAM`` (RST; Zhao, Zhang & Hu, "Randomized Sharpness-Aware Training for Boosting
  Computational Efficiency in Deep Learning", 2022): a Bernoulli trial with probability p(t) per step;
  p constant or linear in t from ``probability`` to ``probability_end``.
* ``LateSAM`` (Zhou et al., "Sharpness-Aware Minimization Efficiently Selects Flatter Minima Late in
  Training", ICLR 2025): SGD, then SAM for exactly the last ``late_fraction`` of the steps (default
  0.125: the paper's Fig. 1, SGD to epoch 175 and SAM from 175 to 200), or for the last ``late_epochs``
  epochs (the authors' code switches at an epoch: ``isSAM = start_SAM <= epoch``). The share is exact:
  a fraction that is not a whole number of steps is refused, naming the nearest exact choices.
* ``AESAM`` (Jiang, Yang, Zhang & Kwok, "An Adaptive Policy to Employ Sharpness-Aware Minimization",
  ICLR 2023): after the first pass, with s = ||g||^2,
  ``mu <- delta mu + (1 - delta) s``, ``var <- delta var + (1 - delta) (s - mu)^2``,
  and a SAM step when ``s >= mu + c_t sqrt(var)``, else an SGD step with g; ``c_t = lambda1 t/T +
  lambda2 (1 - t/T)`` moves linearly from lambda2 to lambda1 over training.

RST and LateSAM decide before the step, so they compose with m-sharpness chunks and per-replica DDP as
SAM does (each step is exactly ``sam_step``/``sam_step_chunked`` or ``sgd_step``/``sgd_step_chunked``).
A setting under which they would never take a SAM step (RST with p = 0 throughout, SAM-late with no SAM
step) is refused when built: the run would be SGD recorded under the variant's name.

AE-SAM decides from the batch's gradient before the second pass. Under per-replica DDP its statistic is
the mean over replicas of the local ||g||^2 (one scalar all-reduce, so every replica decides alike); an
SGD step then all-reduces the first-pass gradient. With m-chunks on one device it is the same step with
the chunks in the replicas' place: the first pass runs chunk by chunk (per-chunk BatchNorm statistics,
each chunk's ||g_i||^2, the mean gradient kept as the SGD direction); s = the mean of the ||g_i||^2; an
SGD step ends there (one pass), a SAM step then takes each chunk's g_i again (the same random draws, its
statistics frozen) for e_i and the second pass: three passes on SAM steps, because keeping the k chunk
gradients through the decision would cost k parameter copies. So m-chunks on one device equal per-replica
DDP with one chunk per replica.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from functools import partial
from typing import Any

import torch
from torch import Tensor

from sam.batchnorm import ChunkedBNStats, frozen_bn_stats
from sam.foreach import global_grad_norm
from sam.randomness import RNGState
from sam.steps import (
    StepFn,
    chunk_gradient,
    count_hits,
    num_chunks,
    sam_chunk_second_pass,
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
        if self.probability == 0 and not self.probability_end:
            raise ValueError(
                f"rst: probability=0 with probability_end={probability_end!r} never takes a SAM step: the run "
                "would be plain SGD recorded as rst; use optimizer=sgd, or a probability > 0"
            )
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
    """SGD, then SAM for exactly the last ``late_fraction`` of the steps (or the last ``late_epochs``)."""

    variant_name = "sam_late"

    def __init__(
        self,
        params: Iterable[Any],
        base_optimizer: type[torch.optim.Optimizer],
        *,
        late_fraction: float | None = 0.125,
        late_epochs: int | None = None,
        total_steps: int | None = None,
        steps_per_epoch: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(params, base_optimizer, **kwargs)
        self.total_steps = total = _check_total_steps(total_steps, "sam_late")
        if (late_fraction is None) == (late_epochs is None):
            raise ValueError(
                f"sam_late takes late_fraction (of the steps) or late_epochs, exactly one of them; got "
                f"late_fraction={late_fraction!r} and late_epochs={late_epochs!r} (set the other to null)"
            )
        if late_epochs is not None:
            if isinstance(late_epochs, bool) or not isinstance(late_epochs, int) or late_epochs < 0:
                raise ValueError(f"late_epochs={late_epochs!r} is invalid: it must be an integer >= 0")
            if not steps_per_epoch:
                raise ValueError("sam_late with late_epochs needs steps_per_epoch")
            sam_steps = late_epochs * steps_per_epoch
            if sam_steps > total:
                raise ValueError(
                    f"sam_late: late_epochs={late_epochs} is more than the run's {total // steps_per_epoch} "
                    "epochs; lower optimizer.variant.late_epochs"
                )
        else:
            fraction = check_range("late_fraction", late_fraction, 0.0, 1.0)
            exact = fraction * total
            sam_steps = round(exact)
            if abs(exact - sam_steps) > 1e-9 * total:
                lo, hi = math.floor(exact), math.ceil(exact)
                per_epoch = f" (late_epochs=N: N x {steps_per_epoch} steps)" if steps_per_epoch else ""
                raise ValueError(
                    f"sam_late: late_fraction={late_fraction} of the run's {total} steps is {exact:g} steps, "
                    f"not a whole number, and the SAM share must be exact: set optimizer.variant."
                    f"late_epochs{per_epoch} with late_fraction=null, or a late_fraction that is a whole "
                    f"number of steps ({lo}/{total} or {hi}/{total})"
                )
        if sam_steps == 0:
            raise ValueError(
                f"sam_late: late_fraction={late_fraction!r} / late_epochs={late_epochs!r} gives no SAM step in "
                f"the run's {total} steps: it would be plain SGD recorded as sam_late; use optimizer=sgd"
            )
        self.late_fraction = late_fraction
        self.late_epochs = late_epochs
        self.first_sam_step = total - sam_steps

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
        chunk = None if m is None or m == per_device_batch else m

        def step(model, optimizer, x, y, opts):
            if chunk is None or num_chunks(x, chunk) == 1:
                result, use = self._whole_batch(model, x, y, opts)
            else:
                result, use = self._chunked(model, x, y, opts, chunk)
            self.steps_taken += 1
            self.sam_steps += int(use)
            return result

        return self._named(step, m, per_device_batch)

    def _decide(self, model, sq: Tensor, opts) -> bool:
        """The shared decision from this device's statistic (mean over replicas under per-replica DDP)."""
        if opts.perturbation == "per_replica" and is_ddp(model):
            sq = sq.clone()
            all_reduce_mean_([sq])
        return self.decide(float(sq))

    def _whole_batch(self, model, x, y, opts):
        local = opts.perturbation == "per_replica"
        rng = RNGState(x.device)
        loss, correct = first_pass(model, self, x, y, opts, local=local)
        grads = [p.grad for p in trainable_params(self) if p.grad is not None]
        sq = global_grad_norm(grads).double() ** 2 / opts.precision.loss_scale**2
        del grads  # first_step consumes .grad: no reference may keep it alive through pass 2
        use = self._decide(model, sq, opts)
        if use:
            perturbed_pass(model, self, x, y, opts, rng)
        elif local and is_ddp(model):  # the SGD step's gradient, averaged as DDP's backward would
            all_reduce_mean_([p.grad for p in trainable_params(self) if p.grad is not None])
        return finish_step(self, opts, loss, correct), use

    def _chunked(self, model, x, y, opts, m: int):
        """Pass 1 per chunk (statistic, SGD direction); on a SAM step each chunk's g_i again, e_i, pass 2."""
        if opts.perturbation != "per_replica":
            raise ValueError("m-sharpness chunks need perturbation='per_replica' (synced e(w) has no chunks)")
        amp = opts.precision
        scale = amp.loss_scale
        params = trainable_params(self)
        all_params = self.params()
        chunks = num_chunks(x, m)
        parts = list(zip(x.split(m), y.split(m)))
        bn = ChunkedBNStats(model)
        self.zero_grad(set_to_none=True)
        rngs, losses, hits, squares = [], [], [], []
        for xc, yc in parts:
            rngs.append(RNGState(x.device))
            bn.begin_chunk()
            grads, loss, logits = chunk_gradient(model, xc, yc, opts, all_params)
            bn.end_chunk()
            losses.append(loss.detach())
            hits.append(count_hits(logits, yc))
            present = [g for g in grads if g is not None]
            squares.append(global_grad_norm(present).double() ** 2 / scale**2)
            with torch.no_grad():  # the SGD direction: the mean of the chunk gradients
                for p, g in zip(all_params, grads):
                    if g is not None:
                        p.grad = g / chunks if p.grad is None else p.grad.add_(g, alpha=1.0 / chunks)
            del grads, present
        bn.finish()
        use = self._decide(model, torch.stack(squares).mean(), opts)
        if use:
            self.zero_grad(set_to_none=True)
            for i, ((xc, yc), rng) in enumerate(zip(parts, rngs)):
                rng.restore()
                with frozen_bn_stats(model):  # the statistics moved once, in pass 1 above
                    grads = chunk_gradient(model, xc, yc, opts, all_params)[0]
                self.first_step(grads=grads)  # w -> w + e_i
                del grads
                sam_chunk_second_pass(model, self, xc, yc, opts, params, rng, chunks, last=i == chunks - 1)
        elif is_ddp(model):  # the SGD direction averaged over the replicas, as DDP's backward would
            all_reduce_mean_([p.grad for p in params if p.grad is not None])
        return finish_step(self, opts, torch.stack(losses).mean(), torch.stack(hits).sum()), use
