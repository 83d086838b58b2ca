"""The optimizer a config asks for: SGD, SAM/ASAM, or one of the efficient variants, each over SGD.

Also where weight decay goes (DESIGN §2): ``l2_loss`` (the official code) adds 0.5*wd*||w||^2 to the
loss for every parameter, so it enters e(w); ``decoupled`` hands it to SGD, without BatchNorm and biases.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from sam import SAM, decoupled_param_groups
from sam.trainer.config import uses_sam
from sam.variants import VARIANTS, build_variant


@dataclass
class BuiltOptimizer:
    optimizer: torch.optim.Optimizer  # what the step function drives (SAM, a variant, or SGD itself)
    base: torch.optim.Optimizer  # the SGD that takes the update: the LR schedule attaches here
    l2_weight_decay: float  # added to the loss by the step functions (l2_loss mode), else 0


def build_optimizer(cfg: DictConfig, model: nn.Module, steps_per_epoch: int) -> BuiltOptimizer:
    opt_cfg = cfg.optimizer
    if opt_cfg.weight_decay_mode == "l2_loss":
        params: Any = model.parameters()
        base_wd, l2 = 0.0, cfg.weight_decay
    else:
        params, base_wd, l2 = decoupled_param_groups(model, cfg.weight_decay), cfg.weight_decay, 0.0
    sgd_kwargs = dict(lr=cfg.lr, momentum=opt_cfg.momentum, nesterov=opt_cfg.nesterov, weight_decay=base_wd)
    if not uses_sam(cfg):
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
            **sam_kwargs,
        )
    else:
        optimizer = SAM(params, torch.optim.SGD, **sam_kwargs)
    return BuiltOptimizer(optimizer, optimizer.base_optimizer, l2)
