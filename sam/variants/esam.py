"""ESAM (Du et al., "Efficient Sharpness-aware Minimization for Improved Training of Neural Networks",
ICLR 2022): Stochastic Weight Perturbation (SWP) and Sharpness-sensitive Data Selection (SDS).

One step::

    P  = each trainable tensor independently with probability beta          (SWP; drawn from (seed, step))
    g_P = grad over P only of L(w) on the batch, per-example losses l_i(w)   (pass 1; BN statistics move)
    e  = (rho / beta) g_P / ||g_P||  on P, 0 elsewhere
    l_i(w + e) for every example, without gradients                         (SDS forward)
    S  = the round(gamma n) examples with the largest l_i(w + e) - l_i(w)
    g  = grad L_S(w + e), mean over S, all parameters                       (pass 2 on the subset)
    w  <- base step with g

SWP draws whole parameter tensors, as the authors' code does (it switches ``requires_grad`` per tensor),
so pass 1 really skips the weight gradients outside P; the 1/beta factor keeps the expected perturbation
size at rho. Our pass 1 asks autograd for P's gradients only (no ``requires_grad`` toggling). Same
draws (dropout) in all three forwards, statistics frozen after pass 1, L2 at w + e in pass 2.

Composes with per-replica DDP (each replica selects from its own examples; the draw of P is the same
everywhere; pass 2's backward averages) and fp16/bf16. With m-chunks each chunk would run the whole
three-forward step on its own, which we do not offer: ESAM runs with m = null.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from sam.batchnorm import frozen_bn_stats
from sam.randomness import RNGState, true_gradient
from sam.steps import StepFn, count_hits, guarded_loss, no_sync_if, trainable_params
from sam.variants.base import VariantSAM, check_range, step_generator
from sam.variants.passes import finish_step, is_ddp
from sam.weight_decay import add_l2_gradient_


def per_example_loss(loss_fn: Any, logits: Tensor, y: Tensor) -> Tensor:
    """Per-example values of a mean-reduced loss: exact for cross-entropy, one call per example otherwise."""
    if isinstance(loss_fn, nn.CrossEntropyLoss):
        return nn.functional.cross_entropy(
            logits,
            y,
            weight=loss_fn.weight,
            ignore_index=loss_fn.ignore_index,
            reduction="none",
            label_smoothing=loss_fn.label_smoothing,
        )
    if loss_fn is nn.functional.cross_entropy:
        return nn.functional.cross_entropy(logits, y, reduction="none")
    return torch.stack([loss_fn(logits[i : i + 1], y[i : i + 1]) for i in range(logits.shape[0])])


class ESAM(VariantSAM):
    variant_name = "esam"

    def __init__(
        self,
        params: Iterable[Any],
        base_optimizer: type[torch.optim.Optimizer],
        *,
        beta: float = 0.6,
        gamma: float = 0.5,
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(params, base_optimizer, **kwargs)
        self.beta = check_range("beta", beta, 0.0, 1.0, low_open=True)
        self.gamma = check_range("gamma", gamma, 0.0, 1.0, low_open=True)
        self.seed = int(seed)

    def chosen_tensors(self, step: int) -> list[bool]:
        """SWP: which trainable tensors are perturbed at this step (one uniform draw per tensor, in order)."""
        draws = torch.rand(len(trainable_params(self)), generator=step_generator(self.seed, step, salt=1))
        return (draws < self.beta).tolist()

    def subset_size(self, n: int) -> int:
        return min(n, max(1, round(self.gamma * n)))

    def make_step(self, m: int | None, per_device_batch: int) -> StepFn:
        if m is not None and m != per_device_batch:
            raise ValueError(
                f"esam selects examples and perturbs weights per device batch: set m=null "
                f"(got m={m}, device batch {per_device_batch})"
            )

        def step(model, optimizer, x, y, opts):
            result = self._step(model, x, y, opts)
            self.steps_taken += 1
            return result

        return self._named(step, m, per_device_batch)

    def _step(self, model: nn.Module, x: Tensor, y: Tensor, opts) -> Any:
        params = trainable_params(self)
        chosen = [p for p, c in zip(params, self.chosen_tensors(self.steps_taken)) if c]
        amp = opts.precision
        scale = amp.loss_scale
        rng = RNGState(x.device)
        local = opts.perturbation == "per_replica"
        if not local and is_ddp(model):
            raise ValueError(
                "esam under DDP needs optimizer.perturbation=per_replica (synced has no meaning here)"
            )

        # Pass 1 at w: per-example losses for SDS, gradients of the chosen tensors only (SWP).
        with no_sync_if(model, local), true_gradient(model, True):
            with amp.autocast():
                logits = model(x)
                loss = opts.loss_fn(logits, y)
            losses_w = per_example_loss(opts.loss_fn, logits.detach(), y).float()
            grads = list(torch.autograd.grad(amp.scale(loss), chosen)) if chosen else []
        add_l2_gradient_(chosen, opts.l2_weight_decay, scale, grads=grads)
        correct = count_hits(logits, y)
        del logits
        by_id = {id(p): gr for p, gr in zip(chosen, grads)}
        aligned = [by_id.get(id(p)) for p in self.params()]
        self.zero_grad(set_to_none=True)
        self._perturb(aligned)
        del grads, aligned, by_id
        guard = amp.overflow_guard(self.grad_norm)
        try:
            # SDS: the examples whose loss rises most at w + e (same draws, statistics frozen).
            with torch.no_grad(), frozen_bn_stats(model):
                rng.restore()
                with amp.autocast():
                    losses_e = per_example_loss(opts.loss_fn, model(x), y).float()
            keep = torch.topk(losses_e - losses_w, self.subset_size(x.shape[0])).indices.sort().values
            # Pass 2 at w + e on the selected examples, all parameters, L2 at w + e.
            rng.restore()
            l2_first = is_ddp(model)
            if l2_first:
                add_l2_gradient_(params, opts.l2_weight_decay, scale)
            with frozen_bn_stats(model):
                with amp.autocast():
                    loss_perturbed = opts.loss_fn(model(x[keep]), y[keep])
                amp.backward(guarded_loss(loss_perturbed, guard))
            if not l2_first:
                add_l2_gradient_(params, opts.l2_weight_decay, scale)
        finally:
            self.restore()
        return finish_step(self, opts, loss.detach(), correct)

    def _perturb(self, grads: list[Tensor | None]) -> None:
        """``first_step`` with radius rho / beta (the chosen tensors' gradients, consumed)."""
        saved = [group["rho"] for group in self.param_groups]
        for group in self.param_groups:
            group["rho"] = group["rho"] / self.beta
        try:
            self.first_step(grads=grads)
        finally:
            for group, rho in zip(self.param_groups, saved):
                group["rho"] = rho
