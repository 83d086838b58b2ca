"""Training steps: the readable core the trainer calls once per batch.

Each returns a :class:`StepResult` of device tensors (no host sync): the loss measured at w, the norm
of the gradient the base optimizer used (before clipping), and whether the step was skipped (fp16
overflow). Pick one once with :func:`select_step`; pass objects, not configs. ``sam_step`` is Algorithm 1
as sketched in the README ("The optimizer loop") plus what a real run needs: L2 decay, clipping, mixed
precision (``Precision`` owns fp16 loss scaling), DDP, and the same random draws in both passes.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from sam.batchnorm import ChunkedBNStats, frozen_bn_stats
from sam.optimizer import SAM
from sam.precision import Precision
from sam.randomness import RNGState, true_gradient
from sam.weight_decay import add_l2_gradient_

PERTURBATION_MODES = ("per_replica", "synced")

LossFn = Callable[[Tensor, Tensor], Tensor]


class StepResult(NamedTuple):
    loss: Tensor  # training loss at w (without the L2 term), detached
    grad_norm: Tensor  # norm of the final gradient, after unscaling, before clipping
    skipped: Tensor  # bool: the update was not applied (non-finite gradient under a GradScaler)
    correct: Tensor  # top-1 hits of the first pass (at w) on this device's batch, for the train error


@dataclass
class StepOptions:
    """Everything a step needs besides the model, optimizer and batch.

    Attributes:
        loss_fn: ``loss_fn(logits, targets)``, e.g. ``nn.CrossEntropyLoss(label_smoothing=0.1)``.
        l2_weight_decay: the official code's L2 term ``0.5 * wd * ||w||^2`` in the loss (0 when decay
            lives in the base optimizer instead).
        grad_clip: clip the final (averaged) gradient to this global norm; None for no clipping.
        precision: autocast dtype and, for fp16, the GradScaler.
        perturbation: under DDP, ``per_replica`` (the paper: e(w) from each replica's own examples,
            first pass under ``no_sync``) or ``synced`` (e(w) from the all-reduced first gradient).
    """

    loss_fn: LossFn
    l2_weight_decay: float = 0.0
    grad_clip: float | None = None
    precision: Precision = field(default_factory=lambda: Precision(None, "cpu"))
    perturbation: str = "per_replica"

    def __post_init__(self) -> None:
        if self.perturbation not in PERTURBATION_MODES:
            raise ValueError(f"perturbation={self.perturbation!r} is not one of {PERTURBATION_MODES}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"grad_clip must be > 0 or None (no clipping), got {self.grad_clip!r}")
        if self.l2_weight_decay < 0:
            raise ValueError(f"l2_weight_decay must be >= 0, got {self.l2_weight_decay!r}")


StepFn = Callable[[nn.Module, torch.optim.Optimizer, Tensor, Tensor, StepOptions], StepResult]


def select_step(optimizer: torch.optim.Optimizer, m: int | None, per_device_batch: int) -> StepFn:
    """The step function for this run, chosen once.

    SAM: one perturbation per device batch (``sam_step``), or one per chunk of m examples
    (``sam_step_chunked``: the paper's m-sharpness). SGD with m below the device batch runs the same
    chunks (``sgd_step_chunked``): gradient accumulation whose BatchNorm statistics are those of the
    paper's per-accelerator batches, so a baseline on one GPU normalises exactly as SAM's chunks do.
    """
    if m is not None and (m <= 0 or per_device_batch % m):
        raise ValueError(
            f"m={m} must divide the per-device batch {per_device_batch} "
            f"(valid: a divisor of {per_device_batch}, or null for m = the per-device batch)"
        )
    make_step = getattr(optimizer, "make_step", None)
    if make_step is not None:  # a SAM variant (sam.variants) brings its own step
        return make_step(m, per_device_batch)
    whole_batch = m is None or m == per_device_batch
    if not isinstance(optimizer, SAM):
        return sgd_step if whole_batch else _with_m(sgd_step_chunked, m)
    return sam_step if whole_batch else _with_m(sam_step_chunked, m)


def _with_m(step: Callable[..., StepResult], m: int) -> StepFn:
    def chunked(model, optimizer, x, y, opts):
        return step(model, optimizer, x, y, opts, m=m)

    chunked.__name__ = f"{step.__name__}_m{m}"
    return chunked


def sgd_step(
    model: nn.Module, optimizer: torch.optim.Optimizer, x: Tensor, y: Tensor, opts: StepOptions
) -> StepResult:
    """One forward/backward and a step of the optimizer (SAM's baseline, every other line shared)."""
    amp = opts.precision
    params = trainable_params(optimizer)
    with amp.autocast():
        logits = model(x)
        loss = opts.loss_fn(logits, y)
    amp.backward(loss)
    add_l2_gradient_(params, opts.l2_weight_decay, amp.loss_scale)  # w is the same on every replica
    return apply_update(optimizer, params, opts, loss.detach(), count_hits(logits, y))


def sam_step(model: nn.Module, optimizer: SAM, x: Tensor, y: Tensor, opts: StepOptions) -> StepResult:
    """Algorithm 1: gradient at w, ascend to w + e(w), gradient there, restore w, base step."""
    amp = opts.precision
    params = trainable_params(optimizer)
    scale = amp.loss_scale
    rng = RNGState(x.device)

    # Pass 1 at w: BatchNorm running statistics move here, once per batch.
    with no_sync_if(model, opts.perturbation == "per_replica"), true_gradient(model, True):
        with amp.autocast():
            logits = model(x)
            loss = opts.loss_fn(logits, y)
        amp.backward(loss)
    add_l2_gradient_(params, opts.l2_weight_decay, scale)
    correct = count_hits(logits, y)
    del logits
    optimizer.first_step(zero_grad=True)  # w -> w + e(w)
    guard = amp.overflow_guard(optimizer.grad_norm)

    # Pass 2 at w + e(w): same batch, same random draws, statistics frozen.
    try:
        rng.restore()
        sam_second_pass(model, x, y, opts, params, guard)
    finally:
        optimizer.restore()  # w exactly, also when pass 2 raised
    return apply_update(optimizer.base_optimizer, params, opts, loss.detach(), correct)


def sam_step_chunked(
    model: nn.Module, optimizer: SAM, x: Tensor, y: Tensor, opts: StepOptions, *, m: int
) -> StepResult:
    """m-sharpness on one device: each chunk of m examples gets its own e(w); SAM gradients averaged.

    This is what the paper's 8 accelerators x 32 examples compute, on one device: per chunk, pass 1
    (its own BatchNorm batch statistics, as per-device BN), e_i from that chunk's gradient, pass 2 at
    w + e_i; the k SAM gradients are averaged (accumulated into ``.grad`` with weight 1/k). Running
    statistics are the mean of the k chunks' first-pass updates (:class:`ChunkedBNStats`).
    Under DDP each replica chunks its own shard; only the last chunk's backward all-reduces.
    """
    chunks = num_chunks(x, m)
    if chunks == 1:
        return sam_step(model, optimizer, x, y, opts)
    if opts.perturbation != "per_replica":
        raise ValueError("m-sharpness chunks need perturbation='per_replica' (synced e(w) has no chunks)")

    loss, hits = sam_chunk_passes(model, optimizer, x, y, opts, m, chunks)
    return apply_update(optimizer.base_optimizer, trainable_params(optimizer), opts, loss, hits)


def sam_second_pass(
    model: nn.Module, x: Tensor, y: Tensor, opts: StepOptions, params: list[Tensor], guard: Tensor | None
) -> None:
    """Pass 2 at w + e(w) on the whole batch, BatchNorm frozen, plus the L2 gradient at w + e(w).

    Under DDP each replica's e differs, so L2 goes into .grad before the backward that averages;
    otherwise after, in the same order as sgd_step (rho = 0 is then bit-equal to SGD).
    """
    amp = opts.precision
    l2_first = isinstance(model, DistributedDataParallel)
    if l2_first:
        add_l2_gradient_(params, opts.l2_weight_decay, amp.loss_scale)
    with frozen_bn_stats(model):
        with amp.autocast():
            loss_perturbed = opts.loss_fn(model(x), y)
        amp.backward(guarded_loss(loss_perturbed, guard))
    if not l2_first:
        add_l2_gradient_(params, opts.l2_weight_decay, amp.loss_scale)


def sam_chunk_passes(
    model: nn.Module,
    optimizer: SAM,
    x: Tensor,
    y: Tensor,
    opts: StepOptions,
    m: int,
    chunks: int,
    on_first_gradient: Callable[[list[Tensor | None]], None] | None = None,
) -> tuple[Tensor, Tensor]:
    """The two passes of every chunk, up to the base step: the k SAM gradients averaged in ``.grad``.

    ``on_first_gradient`` sees each chunk's gradient at w (aligned with ``optimizer.params()``) before
    e_i consumes it; the SAM variants use it to build the batch's plain gradient. Returns the mean loss
    at w and the number of correct predictions.
    """
    params = trainable_params(optimizer)
    all_params = optimizer.params()
    bn = ChunkedBNStats(model)
    optimizer.zero_grad(set_to_none=True)
    losses, hits = [], []
    for i, (xc, yc) in enumerate(zip(x.split(m), y.split(m))):
        rng = RNGState(x.device)
        bn.begin_chunk()
        # Pass 1 at w, into its own gradient list (.grad accumulates the chunks' SAM gradients).
        grads, loss, logits = chunk_gradient(model, xc, yc, opts, all_params)
        bn.end_chunk()
        losses.append(loss.detach())
        hits.append(count_hits(logits, yc))
        del logits
        if on_first_gradient is not None:
            on_first_gradient(grads)
        optimizer.first_step(grads=grads)  # w -> w + e_i
        del grads
        sam_chunk_second_pass(model, optimizer, xc, yc, opts, params, rng, chunks, last=i == chunks - 1)
    bn.finish()
    return torch.stack(losses).mean(), torch.stack(hits).sum()


def chunk_gradient(
    model: nn.Module, xc: Tensor, yc: Tensor, opts: StepOptions, all_params: list[Tensor]
) -> tuple[list[Tensor | None], Tensor, Tensor]:
    """grad L_chunk(w) (+ L2) as its own list aligned with ``all_params``, kept on this replica (no
    all-reduce, .grad untouched); also the chunk's loss and logits."""
    amp = opts.precision
    with no_sync_if(model, True), true_gradient(model, True):
        with amp.autocast():
            logits = model(xc)
            loss = opts.loss_fn(logits, yc)
        grads = list(torch.autograd.grad(amp.scale(loss), all_params, allow_unused=True))
    add_l2_gradient_(all_params, opts.l2_weight_decay, amp.loss_scale, grads=grads)
    return grads, loss, logits


def sam_chunk_second_pass(
    model: nn.Module,
    optimizer: SAM,
    xc: Tensor,
    yc: Tensor,
    opts: StepOptions,
    params: list[Tensor],
    rng: RNGState,
    chunks: int,
    *,
    last: bool,
) -> None:
    """Pass 2 of one chunk at w + e_i, weight 1/k, with pass 1's randomness; w restored exactly even if it raises.

    DDP averages only the last chunk's backward (``last``): the k SAM gradients are summed locally first.
    """
    amp = opts.precision
    guard = amp.overflow_guard(optimizer.grad_norm)
    try:
        rng.restore()
        add_l2_gradient_(params, opts.l2_weight_decay, amp.loss_scale / chunks)
        with no_sync_if(model, not last), frozen_bn_stats(model):
            with amp.autocast():
                loss_perturbed = opts.loss_fn(model(xc), yc) / chunks
            amp.backward(guarded_loss(loss_perturbed, guard))
    finally:
        optimizer.restore()


def sgd_step_chunked(
    model: nn.Module, optimizer: torch.optim.Optimizer, x: Tensor, y: Tensor, opts: StepOptions, *, m: int
) -> StepResult:
    """SGD over chunks of m examples: per-chunk BatchNorm batches, gradients averaged (accumulated 1/k)."""
    chunks = num_chunks(x, m)
    if chunks == 1:
        return sgd_step(model, optimizer, x, y, opts)
    params = trainable_params(optimizer)
    loss, hits = sgd_chunk_passes(model, optimizer, x, y, opts, m, chunks)
    return apply_update(optimizer, params, opts, loss, hits)


def sgd_chunk_passes(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: Tensor,
    y: Tensor,
    opts: StepOptions,
    m: int,
    chunks: int,
) -> tuple[Tensor, Tensor]:
    """The k chunks' gradients at w (+ L2), averaged into ``.grad`` (DDP averages the last); loss and hits."""
    amp = opts.precision
    params = trainable_params(optimizer)
    scale = amp.loss_scale
    bn = ChunkedBNStats(model)
    optimizer.zero_grad(set_to_none=True)
    losses, hits = [], []
    for i, (xc, yc) in enumerate(zip(x.split(m), y.split(m))):
        bn.begin_chunk()
        add_l2_gradient_(params, opts.l2_weight_decay, scale / chunks)  # as SAM's chunks: bit-equal at rho=0
        with no_sync_if(model, i < chunks - 1):
            with amp.autocast():
                logits = model(xc)
                loss = opts.loss_fn(logits, yc)
            amp.backward(loss / chunks)
        bn.end_chunk()
        losses.append(loss.detach())
        hits.append(count_hits(logits, yc))
    bn.finish()
    return torch.stack(losses).mean(), torch.stack(hits).sum()


# -- what every step shares; public: the SAM variants (sam.variants) build their steps from these -----
def trainable_params(optimizer: torch.optim.Optimizer) -> list[Tensor]:
    """The optimizer's parameters that require a gradient, over groups in order."""
    return [p for group in optimizer.param_groups for p in group["params"] if p.requires_grad]


def num_chunks(x: Tensor, m: int) -> int:
    """How many chunks of m examples the batch ``x`` splits into; m must divide the batch."""
    if m <= 0 or x.shape[0] % m:
        raise ValueError(f"m={m} must divide the per-device batch {x.shape[0]}")
    return x.shape[0] // m


def count_hits(logits: Tensor, y: Tensor) -> Tensor:
    """Top-1 hits; soft or multi-dimensional targets (mixup-style) are compared by their argmax."""
    target = y if y.ndim == 1 else y.argmax(-1)
    return (logits.detach().argmax(-1) == target).sum()


def no_sync_if(model: nn.Module, enabled: bool) -> AbstractContextManager:
    """DDP's ``no_sync()`` (the backward keeps its gradient on this replica) when enabled and ``model`` is
    DDP; otherwise nothing."""
    if enabled and isinstance(model, DistributedDataParallel):
        return model.no_sync()
    return nullcontext()


def guarded_loss(loss: Tensor, guard: Tensor | None) -> Tensor:
    """The second pass's loss times the fp16 overflow guard (``Precision.overflow_guard``)."""
    return loss if guard is None else loss * guard


def apply_update(
    base: torch.optim.Optimizer, params: list[Tensor], opts: StepOptions, loss: Tensor, correct: Tensor
) -> StepResult:
    """Unscale (fp16), clip (global norm, after DDP's averaging), step, and clear gradients."""
    with_grad = [p for p in params if p.grad is not None]
    if not with_grad:
        raise RuntimeError("no parameter received a gradient; is the loss connected to the model?")
    grad_norm, skipped = opts.precision.clip_and_step(base, with_grad, opts.grad_clip)
    base.zero_grad(set_to_none=True)
    return StepResult(loss, grad_norm.detach(), skipped, correct)
