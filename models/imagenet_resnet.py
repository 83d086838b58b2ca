"""ImageNet ResNet-50/101/152 (He et al. 2016), built with timm, randomly initialised.

Why timm rather than torchvision: the architecture is the same in both (ResNet v1.5: the stride sits
on the 3x3 conv of the bottleneck, as in the official SAM code's Flax ResNet), but timm takes
``in_chans`` natively (torchvision would need its stem replaced by hand), and exposes
``zero_init_last``, which the official code's initialisation needs. timm is already a project
dependency. ``pretrained=False`` always: nothing is downloaded.

Parameter counts with a 1000-class head: 25.6M / 44.5M / 60.2M (the papers' numbers).

Initialisation, as the official Flax ResNet (``sam_jax/imagenet_models/resnet.py``) where it matters:
convolutions Kaiming normal fan-out (timm's), BatchNorm weight 1 / bias 0 except the last BN of
every residual block, whose weight starts at 0 (``zero_init_last=True``, the official
``scale_init=zeros``; pass ``zero_init_last=False`` for all ones); the classifier is reinitialised
to the official Flax ``Dense`` default: LeCun normal weight (std 1/sqrt(in_features)), bias 0.
Known difference: the official Flax stem has no ReLU between its BN and max-pool; timm's (the
standard ResNet) has one, and we keep it.
"""

from __future__ import annotations

import math

from torch import nn

from models._checks import check_positive_int


def _timm_resnet(arch: str, num_classes: int, in_chans: int, zero_init_last: bool) -> nn.Module:
    num_classes = check_positive_int("num_classes", num_classes)
    in_chans = check_positive_int("in_chans", in_chans)
    if not isinstance(zero_init_last, bool):
        raise ValueError(f"zero_init_last={zero_init_last!r} is not allowed: it must be True or False")
    import timm  # imported here: `import models` stays fast for the CIFAR-only users

    model = timm.create_model(
        arch, pretrained=False, num_classes=num_classes, in_chans=in_chans, zero_init_last=zero_init_last
    )
    fc: nn.Linear = model.get_classifier()
    if not fc.weight.is_meta:  # meta tensors hold no values (see models/init.py)
        nn.init.normal_(fc.weight, std=1.0 / math.sqrt(fc.in_features))
        nn.init.zeros_(fc.bias)
    return model


def resnet50(num_classes: int, in_chans: int = 3, zero_init_last: bool = True) -> nn.Module:
    """ResNet-50 (25.6M parameters with 1000 classes)."""
    return _timm_resnet("resnet50", num_classes, in_chans, zero_init_last)


def resnet101(num_classes: int, in_chans: int = 3, zero_init_last: bool = True) -> nn.Module:
    """ResNet-101 (44.5M parameters with 1000 classes)."""
    return _timm_resnet("resnet101", num_classes, in_chans, zero_init_last)


def resnet152(num_classes: int, in_chans: int = 3, zero_init_last: bool = True) -> nn.Module:
    """ResNet-152 (60.2M parameters with 1000 classes)."""
    return _timm_resnet("resnet152", num_classes, in_chans, zero_init_last)
