"""Model registry in the style of timm: ``create_model(name, num_classes, in_chans=3, **kw)``.

Every entry is a function ``f(num_classes, in_chans=3, **kw) -> nn.Module``; the keyword arguments a
model accepts are those of its function (e.g. ``wide_resnet(depth=..., widen_factor=...,
drop_rate=...)``). Unknown names and unknown keyword arguments raise ``ValueError`` listing the valid
choices, so a typo in a config fails loudly instead of being ignored.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from torch import nn

from models.imagenet_resnet import resnet50, resnet101, resnet152
from models.pyramidnet import pyramidnet, pyramidnet272, pyramidnet272_shakedrop
from models.resnet_cifar import resnet32, resnet_cifar
from models.shake_shake import shake_shake, shake_shake_26_2x96d
from models.timm_models import efficientnet_b7, timm_model
from models.wide_resnet import wide_resnet, wrn16_8, wrn28_10

_MODELS: dict[str, Callable[..., nn.Module]] = {
    # CIFAR (3x3 stems for 32x32 inputs); generic constructors first, then the paper's models.
    "wide_resnet": wide_resnet,
    "wrn28_10": wrn28_10,
    "wrn16_8": wrn16_8,
    "shake_shake": shake_shake,
    "shake_shake_26_2x96d": shake_shake_26_2x96d,
    "pyramidnet": pyramidnet,
    "pyramidnet272": pyramidnet272,
    "pyramidnet272_shakedrop": pyramidnet272_shakedrop,
    "resnet_cifar": resnet_cifar,
    "resnet32": resnet32,
    # ImageNet (timm).
    "resnet50": resnet50,
    "resnet101": resnet101,
    "resnet152": resnet152,
    # Finetuning (timm; weights from model.pretrained, see models/pretrained.py).
    "efficientnet_b7": efficientnet_b7,
    "timm_model": timm_model,
}


def list_models() -> list[str]:
    """Names accepted by :func:`create_model`, sorted."""
    return sorted(_MODELS)


def model_kwargs(name: str) -> list[str]:
    """Keyword arguments model ``name`` accepts besides ``num_classes`` and ``in_chans``."""
    params = inspect.signature(_get(name)).parameters
    return [p for p in params if p not in ("num_classes", "in_chans")]


def _get(name: str) -> Callable[..., nn.Module]:
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(list_models())}")
    return _MODELS[name]


# model.* keys that are not architecture (models/pretrained.py): a model config passed as **kwargs carries
# them; their "off" values are dropped here, an active one must go through prepare_for_finetuning.
_FINETUNE_DEFAULTS = {
    "pretrained": None,
    "pretrained_file": None,
    "reset_head": "auto",
    "freeze_bn_stats": False,
}


def _drop_inert_finetune_options(kw: dict) -> dict:
    active = sorted(k for k in kw if k in _FINETUNE_DEFAULTS and kw[k] != _FINETUNE_DEFAULTS[k])
    if active:
        raise ValueError(
            f"create_model builds the architecture only; {active} are finetuning options: split them off with "
            "models.pretrained.split_finetune_options and apply them with prepare_for_finetuning"
        )
    return {k: v for k, v in kw.items() if k not in _FINETUNE_DEFAULTS}


def create_model(name: str, num_classes: int, in_chans: int = 3, **kw) -> nn.Module:
    """Build model ``name`` with a ``num_classes``-way head for ``in_chans``-channel images.

    Works under ``with torch.device("meta"):`` (parameters are created without memory, e.g. to
    count them or to check a config) and the models accept ``channels_last`` inputs.
    """
    fn = _get(name)
    kw = _drop_inert_finetune_options(kw)
    unknown = sorted(set(kw) - set(model_kwargs(name)))
    if unknown:
        accepted = ", ".join(model_kwargs(name)) or "none"
        raise ValueError(f"model {name!r} got unknown argument(s) {unknown}; it accepts: {accepted}")
    return fn(num_classes=num_classes, in_chans=in_chans, **kw)
