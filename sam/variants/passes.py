"""The passes the SAM variants are made of, each as ``sam.steps`` runs it, kept apart so they can be mixed.

``sam_step`` is ``first_pass`` + ``perturbed_pass`` + ``finish_step``; a variant adds what its paper adds
between them (keep g, compare the two gradients, skip the second pass, ...). Nothing here changes a number
``sam.steps`` computes: the same lines in the same order (tests pin ``first_pass + perturbed_pass`` to
``sam_step`` bit for bit).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from sam.optimizer import SAM
from sam.randomness import RNGState, true_gradient
from sam.steps import (
    StepOptions,
    StepResult,
    apply_update,
    count_hits,
    no_sync_if,
    num_chunks,
    sam_chunk_passes,
    sam_second_pass,
    sgd_chunk_passes,
    trainable_params,
)
from sam.weight_decay import add_l2_gradient_

__all__ = [
    "all_reduce_mean_",
    "dot",
    "finish_step",
    "first_pass",
    "is_ddp",
    "perturbed_pass",
    "plain_gradient",
    "sam_gradients_keeping_g",
]


def is_ddp(model: nn.Module) -> bool:
    return isinstance(model, DistributedDataParallel)


def first_pass(
    model: nn.Module, optimizer: SAM, x: Tensor, y: Tensor, opts: StepOptions, *, local: bool
) -> tuple[Tensor, Tensor]:
    """Forward/backward at w into ``.grad`` (plus the L2 gradient); BatchNorm statistics move here.

    ``local``: under DDP, keep the gradient on this replica (``no_sync``: SAM's per-replica e(w)).
    Returns the loss at w (detached) and the top-1 hits.
    """
    with no_sync_if(model, local), true_gradient(model, True):
        with opts.precision.autocast():
            logits = model(x)
            loss = opts.loss_fn(logits, y)
        opts.precision.backward(loss)
    add_l2_gradient_(trainable_params(optimizer), opts.l2_weight_decay, opts.precision.loss_scale)
    return loss.detach(), count_hits(logits, y)


def perturbed_pass(
    model: nn.Module, optimizer: SAM, x: Tensor, y: Tensor, opts: StepOptions, rng: RNGState
) -> None:
    """w -> w + e(w) from ``.grad`` (consumed), gradient at w + e(w) into ``.grad``, w restored exactly.

    Statistics frozen, the first pass's random draws replayed (``rng``), L2 evaluated at w + e(w).
    """
    amp = opts.precision
    params = trainable_params(optimizer)
    optimizer.first_step(zero_grad=True)
    guard = amp.overflow_guard(optimizer.grad_norm)
    try:
        rng.restore()
        sam_second_pass(model, x, y, opts, params, guard)
    finally:
        optimizer.restore()


def finish_step(optimizer: SAM, opts: StepOptions, loss: Tensor, correct: Tensor) -> StepResult:
    """Unscale, clip, base step, clear gradients (``sam.steps``' own ending)."""
    return apply_update(optimizer.base_optimizer, trainable_params(optimizer), opts, loss, correct)


@torch.no_grad()
def all_reduce_mean_(tensors: Sequence[Tensor]) -> None:
    """Average tensors over the DDP processes in place (one flat all-reduce); no-op without a group."""
    if not tensors or not (dist.is_available() and dist.is_initialized()):
        return
    flat = torch._utils._flatten_dense_tensors(list(tensors))
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    for t, f in zip(tensors, torch._utils._unflatten_dense_tensors(flat, list(tensors))):
        t.copy_(f)


def sam_gradients_keeping_g(
    model: nn.Module, optimizer: SAM, x: Tensor, y: Tensor, opts: StepOptions, m: int | None
) -> tuple[Tensor, Tensor, list[Tensor | None]]:
    """SAM's gradient g_sam in ``.grad`` (as ``sam_step`` / ``sam_step_chunked``), and g = grad L(w) kept.

    g is aligned with ``optimizer.params()`` (None where a parameter got no gradient), includes the L2
    term, carries the same loss scale as ``.grad`` (fp16), and is averaged like g_sam: over the chunks
    (mean of the k chunk gradients) and, under DDP with per-replica e(w), over the replicas (one extra
    all-reduce), so that GSAM / LookSAM combine two gradients of the same batch on every replica alike.
    """
    all_params = optimizer.params()
    chunks = 1 if m is None else num_chunks(x, m)
    local = opts.perturbation == "per_replica"
    if chunks == 1:
        rng = RNGState(x.device)
        loss, correct = first_pass(model, optimizer, x, y, opts, local=local)
        g = [None if p.grad is None else p.grad.clone() for p in all_params]
        perturbed_pass(model, optimizer, x, y, opts, rng)
    else:
        if not local:
            raise ValueError("m-sharpness chunks need perturbation='per_replica' (synced e(w) has no chunks)")
        loss, correct, g = _chunked(model, optimizer, x, y, opts, m, chunks)
    if local and is_ddp(model):
        all_reduce_mean_([t for t in g if t is not None])
    return loss, correct, g


def _chunked(
    model: nn.Module, optimizer: SAM, x: Tensor, y: Tensor, opts: StepOptions, m: int, chunks: int
) -> tuple[Tensor, Tensor, list[Tensor | None]]:
    """``sam_step_chunked``'s passes, also summing the chunks' first gradients (weight 1/k) into g."""
    g: list[Tensor | None] = [None] * len(optimizer.params())

    @torch.no_grad()
    def add_to_g(grads: list[Tensor | None]) -> None:
        for j, gi in enumerate(grads):
            if gi is not None:
                g[j] = gi / chunks if g[j] is None else g[j].add_(gi, alpha=1.0 / chunks)

    loss, correct = sam_chunk_passes(model, optimizer, x, y, opts, m, chunks, on_first_gradient=add_to_g)
    return loss, correct, g


def plain_gradient(
    model: nn.Module, optimizer: SAM, x: Tensor, y: Tensor, opts: StepOptions, m: int | None
) -> tuple[Tensor, Tensor]:
    """``sgd_step`` / ``sgd_step_chunked`` up to the update: grad L(w) (+ L2) in ``.grad``, DDP-averaged."""
    amp = opts.precision
    params = trainable_params(optimizer)
    scale = amp.loss_scale
    chunks = 1 if m is None else num_chunks(x, m)
    if chunks == 1:
        with amp.autocast():
            logits = model(x)
            loss = opts.loss_fn(logits, y)
        amp.backward(loss)
        add_l2_gradient_(params, opts.l2_weight_decay, scale)
        return loss.detach(), count_hits(logits, y)
    return sgd_chunk_passes(model, optimizer, x, y, opts, m, chunks)


def dot(a: Sequence[Tensor | None], b: Sequence[Tensor | None]) -> Tensor:
    """<a, b> over all tensors together (None entries skipped), in fp32 or wider."""
    terms = [torch.vdot(_wide(x), _wide(z)) for x, z in zip(a, b) if x is not None and z is not None]
    return torch.stack(terms).sum()


def _wide(t: Tensor) -> Tensor:
    return t.flatten() if t.dtype in (torch.float32, torch.float64) else t.flatten().float()
