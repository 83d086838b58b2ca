"""From a :class:`~trainer.spec.RunSpec` to the objects a run needs: data, model, optimizer, step, schedule.

Weight decay goes where the spec says (docs/design.md §4: ``l2_loss``, the official code, adds 0.5*wd*||w||^2 to the
loss for every parameter, so it enters e(w); ``decoupled`` hands it to SGD, without BatchNorm and biases).
The schedule is the official code's: cosine decay to 0 stepped every iteration, after optional warmup.
"""

from __future__ import annotations

import logging
import math
import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import OmegaConf
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from data import DataBundle, build_data
from models import create_model
from models.pretrained import prepare_for_finetuning, split_finetune_options
from sam import SAM, StepOptions, decoupled_param_groups, resolve_precision, select_step
from sam.variants import VARIANTS, build_variant
from trainer.cluster import DistContext
from trainer.spec import SCHEDULES, RunSpec

log = logging.getLogger("train")


@dataclass
class Objects:
    """What :func:`build` makes from a spec: everything a :class:`~trainer.run.Run` drives."""

    data: DataBundle
    model: nn.Module  # possibly DDP-wrapped / compiled: what the step runs
    raw_model: nn.Module  # the plain module: what checkpoints hold
    optimizer: torch.optim.Optimizer
    base_optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    step_fn: Any
    step_options: StepOptions
    steps_per_epoch: int


def build(spec: RunSpec, ctx: DistContext) -> Objects:
    """``build_unchecked``, with unreadable dataset files turned into an error that names dataset.root."""
    try:
        return build_unchecked(spec, ctx)
    except (OSError, EOFError, pickle.UnpicklingError) as err:  # the only files build reads: the dataset's
        if isinstance(err, FileNotFoundError):
            raise  # already names the missing files and how to get them
        raise ValueError(
            f"dataset={spec.dataset!r}: cannot read the files under dataset.root={spec.cfg.dataset.root!r} "
            f"({type(err).__name__}: {err}); expected the dataset's official files, intact (re-download or "
            "re-extract them)"
        ) from err


def seed_for(seed: int, rank: int) -> int:
    """Per-process stream for dropout / Shake noise; rank 0 of a DDP run equals a single process."""
    return seed + 1_000_003 * rank


def build_unchecked(spec: RunSpec, ctx: DistContext) -> Objects:
    cfg = spec.cfg
    precision = resolve_precision(spec.precision, ctx.device)
    data = build_data(
        cfg.dataset.name,
        root=os.path.expanduser(cfg.dataset.root),
        batch_size=cfg.batch_size,
        eval_batch_size=cfg.trainer.eval_batch_size,
        augment=cfg.augment,
        cutout_size=cfg.dataset.cutout_size,
        cutout_mode=cfg.dataset.cutout_mode,
        label_noise=cfg.label_noise,
        label_noise_protocol=cfg.label_noise_protocol,
        val_fraction=cfg.dataset.val_fraction,
        seed=cfg.seed,
        device=ctx.device,
        loader=cfg.dataset.loader,
        num_workers=cfg.dataset.num_workers,
        world_size=ctx.world_size,
        rank=ctx.rank,
        download=cfg.dataset.download,
        autoaugment_cutout=cfg.dataset.autoaugment_cutout,
        autoaugment_policy=cfg.dataset.autoaugment_policy,
        autoaugment_crop_flip=cfg.dataset.autoaugment_crop_flip,
        preprocessing=cfg.dataset.preprocessing,
        svhn_extra=cfg.dataset.svhn_extra is not False,
        classes=cfg.dataset.get("classes"),
        image_size=cfg.dataset.get("image_size"),
        train_repeats=cfg.dataset.get("train_repeats") or 1,
    )
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
    model_kwargs, finetune = split_finetune_options(OmegaConf.to_container(cfg.model, resolve=True))
    raw_model = create_model(cfg.model.name, data.num_classes, in_chans=data.in_chans, **model_kwargs)
    for line in prepare_for_finetuning(raw_model, finetune):  # model.pretrained / freeze_bn_stats
        log.info("%s", line)
    raw_model = raw_model.to(ctx.device)
    torch.manual_seed(seed_for(cfg.seed, ctx.rank))
    if spec.channels_last:
        raw_model = raw_model.to(memory_format=torch.channels_last)

    steps_per_epoch = len(data.train)
    if spec.trainer.limit_train_batches is not None:
        steps_per_epoch = min(steps_per_epoch, int(spec.trainer.limit_train_batches))
    if steps_per_epoch < 1:
        raise ValueError(
            f"batch_size={cfg.batch_size} leaves no full training batch ({data.num_train} examples); lower batch_size"
        )
    built = build_optimizer(spec, raw_model, steps_per_epoch, data)
    step_fn = select_step(built.optimizer, spec.step_m, spec.per_device_batch)

    model: nn.Module = raw_model
    if spec.compile:
        model = torch.compile(model)
    if ctx.distributed:
        # Per-device BatchNorm as the official code; statistics averaged after every step (trainer/run.py).
        model = DistributedDataParallel(
            model,
            device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None,
            broadcast_buffers=False,
        )

    scheduler = torch.optim.lr_scheduler.LambdaLR(
        built.base,
        warmup_then(
            cfg.schedule.name, cfg.epochs * steps_per_epoch, cfg.schedule.warmup_epochs * steps_per_epoch
        ),
    )
    options = StepOptions(
        loss_fn=nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing),
        l2_weight_decay=built.l2_weight_decay,
        grad_clip=cfg.grad_clip,
        precision=precision,
        perturbation=cfg.optimizer.perturbation,
    )
    return Objects(
        data=data,
        model=model,
        raw_model=raw_model,
        optimizer=built.optimizer,
        base_optimizer=built.base,
        scheduler=scheduler,
        step_fn=step_fn,
        step_options=options,
        steps_per_epoch=steps_per_epoch,
    )


# -- the learning-rate schedule of the official code ------------------------------------------------------
def warmup_then(name: str, total_steps: int, warmup_steps: int = 0) -> Callable[[int], float]:
    """Multiplier of the peak lr at iteration s (for ``torch.optim.lr_scheduler.LambdaLR``)."""
    if name not in SCHEDULES:
        raise ValueError(f"schedule {name!r} is not one of {', '.join(SCHEDULES)}")

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if name == "constant":
            return 1.0
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


# -- the optimizer -----------------------------------------------------------------------------------------
@dataclass
class BuiltOptimizer:
    optimizer: torch.optim.Optimizer  # what the step function drives (SAM, a variant, or SGD itself)
    base: torch.optim.Optimizer  # the SGD that takes the update: the LR schedule attaches here
    l2_weight_decay: float  # added to the loss by the step functions (l2_loss mode), else 0


def build_optimizer(
    spec: RunSpec, model: nn.Module, steps_per_epoch: int, data: DataBundle | None = None
) -> BuiltOptimizer:
    """SGD, SAM/ASAM or a variant over SGD, with weight decay where the spec says."""
    cfg = spec.cfg
    opt_cfg = cfg.optimizer
    if opt_cfg.weight_decay_mode == "l2_loss":
        params: Any = model.parameters()
        base_wd, l2 = 0.0, cfg.weight_decay
    else:
        params, base_wd, l2 = decoupled_param_groups(model, cfg.weight_decay), cfg.weight_decay, 0.0
    sgd_kwargs = dict(lr=cfg.lr, momentum=opt_cfg.momentum, nesterov=opt_cfg.nesterov, weight_decay=base_wd)
    if not spec.uses_sam:
        sgd = torch.optim.SGD(params, **sgd_kwargs)
        return BuiltOptimizer(sgd, sgd, l2)
    sam_kwargs = dict(rho=cfg.rho, adaptive=opt_cfg.adaptive, eta=opt_cfg.eta, **sgd_kwargs)
    if opt_cfg.name in VARIANTS:  # the efficient SAM family (sam/variants)
        optimizer = build_variant(
            opt_cfg.name,
            params,
            model=model,
            options=OmegaConf.to_container(opt_cfg.variant) if opt_cfg.variant is not None else None,
            total_steps=cfg.epochs * steps_per_epoch,
            steps_per_epoch=steps_per_epoch,
            seed=cfg.seed,
            **example_identity(spec, data),
            **sam_kwargs,
        )
    else:
        optimizer = SAM(params, torch.optim.SGD, **sam_kwargs)
    return BuiltOptimizer(optimizer, optimizer.base_optimizer, l2)


def example_identity(spec: RunSpec, data: DataBundle | None) -> dict[str, Any]:
    """Which dataset rows each training batch holds, for variants that remember past outputs (SAF).

    The tensor loader says so (``batch_indices``, this rank's rows); torchvision's DataLoader does not, so
    such a variant is refused there with the way out.
    """
    if data is None:
        return {}
    loader = data.train
    if getattr(loader, "batch_indices", "absent") == "absent":
        if spec.optimizer == "saf":
            raise ValueError(
                f"optimizer=saf needs the dataset rows of every batch, which only the tensor loader gives; "
                f"dataset={spec.dataset} runs on torchvision's DataLoader here: use dataset.loader=tensor, "
                "or another optimizer"
            )
        return {}
    return {"example_indices": lambda: loader.batch_indices, "num_examples": data.num_train}
