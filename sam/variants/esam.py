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
everywhere; pass 2's backward averages) and fp16/bf16. With m-chunks (m-sharpness) each chunk of m
examples runs the whole step on its own, as a replica would: its own BatchNorm batch statistics in pass
1, its own e_i from its g_P, its own top round(gamma m) examples, its pass-2 gradient weighted 1/k; the
same P for every chunk of the step. So m-chunks on one device equal per-replica DDP with one chunk per
replica. Defaults beta = 0.6, gamma = 0.5: the authors' run.sh (dydjw9/Efficient_SAM) for ResNet-18 on
CIFAR-10/100 (its WRN-18 and PyramidNet lines use beta = 0.5).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from sam.batchnorm import ChunkedBNStats, frozen_bn_stats
from sam.randomness import RNGState, true_gradient
from sam.steps import StepFn, count_hits, guarded_loss, no_sync_if, num_chunks, trainable_params
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
        chunk = None if m is None or m == per_device_batch else m

        def step(model, optimizer, x, y, opts):
            result = self._step(model, x, y, opts, chunk)
            self.steps_taken += 1
            return result

        return self._named(step, m, per_device_batch)

    def _step(self, model: nn.Module, x: Tensor, y: Tensor, opts, m: int | None) -> Any:
        params = trainable_params(self)
        chosen = [p for p, c in zip(params, self.chosen_tensors(self.steps_taken)) if c]
        local = opts.perturbation == "per_replica"
        if not local and is_ddp(model):
            raise ValueError(
                "esam under DDP needs optimizer.perturbation=per_replica (synced has no meaning here)"
            )
        chunks = 1 if m is None else num_chunks(x, m)
        if chunks > 1 and not local:
            raise ValueError("m-sharpness chunks need perturbation='per_replica' (synced e(w) has no chunks)")
        if chunks == 1:
            loss, correct = self._chunk(model, x, y, opts, params, chosen, 1, last=True, local=local)
            return finish_step(self, opts, loss, correct)
        bn = ChunkedBNStats(model)
        self.zero_grad(set_to_none=True)
        losses, hits = [], []
        for i, (xc, yc) in enumerate(zip(x.split(m), y.split(m))):
            loss, correct = self._chunk(
                model, xc, yc, opts, params, chosen, chunks, last=i == chunks - 1, local=True, bn=bn
            )
            losses.append(loss)
            hits.append(correct)
        bn.finish()
        return finish_step(self, opts, torch.stack(losses).mean(), torch.stack(hits).sum())

    def _chunk(self, model, x, y, opts, params, chosen, chunks: int, *, last: bool, local: bool, bn=None):
        """ESAM's step on one device batch (chunks = 1) or one chunk (its gradient weighted 1/chunks,
        accumulated in ``.grad``). Returns the loss at w (detached) and the top-1 hits."""
        amp = opts.precision
        scale = amp.loss_scale
        rng = RNGState(x.device)
        # Pass 1 at w: per-example losses for SDS, gradients of the chosen tensors only (SWP).
        if bn is not None:
            bn.begin_chunk()
        with no_sync_if(model, local), true_gradient(model, True):
            with amp.autocast():
                logits = model(x)
                loss = opts.loss_fn(logits, y)
            losses_w = per_example_loss(opts.loss_fn, logits.detach(), y).float()
            grads = list(torch.autograd.grad(amp.scale(loss), chosen)) if chosen else []
        if bn is not None:
            bn.end_chunk()
        add_l2_gradient_(chosen, opts.l2_weight_decay, scale, grads=grads)
        correct = count_hits(logits, y)
        del logits
        by_id = {id(p): gr for p, gr in zip(chosen, grads)}
        aligned = [by_id.get(id(p)) for p in self.params()]
        if chunks == 1:
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
            l2_first = is_ddp(model) or chunks > 1
            if l2_first:
                add_l2_gradient_(params, opts.l2_weight_decay, scale / chunks)
            with no_sync_if(model, not last), frozen_bn_stats(model):
                with amp.autocast():
                    loss_perturbed = opts.loss_fn(model(x[keep]), y[keep]) / chunks
                amp.backward(guarded_loss(loss_perturbed, guard))
            if not l2_first:
                add_l2_gradient_(params, opts.l2_weight_decay, scale)
        finally:
            self.restore()
        return loss.detach(), correct

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
