"""ImageNet ResNet-50/101/152 (He et al. 2016), built with timm, randomly initialised.

Why timm rather than torchvision: the architecture is the same in both (ResNet v1.5: the stride sits
on the 3x3 conv of the bottleneck, as in the official SAM code's Flax ResNet), but timm takes
``in_chans`` natively (torchvision would need its stem replaced by hand), and exposes
``zero_init_last``, which the official code's initialisation needs. timm is already a project
dependency. ``pretrained=False`` always: nothing is downloaded.

Parameter counts with a 1000-class head: 25.6M / 44.5M / 60.2M (the papers' numbers).

Two switches follow the official Flax ResNet (``sam_jax/imagenet_models/resnet.py``, old ``flax.nn``):

* ``init="official"`` (default): every convolution (the projection shortcuts too) and the classifier
  get Flax's default kernel init, LeCun normal fan-in, truncated: a normal truncated at two standard
  deviations and rescaled so the variance is exactly ``1 / fan_in`` (JAX ``variance_scaling(1.0,
  "fan_in", "truncated_normal")``; std 0.0208 on a 256-channel 3x3 conv, 0.0221 on the 2048-wide head),
  biases 0. ``init="timm"``: timm's Kaiming normal fan-out convolutions (std 0.0295 on that conv), with
  the head LeCun normal untruncated. BatchNorm: weight 1 / bias 0, except the last BN of every residual
  block, whose weight starts at 0 (``zero_init_last=True``, the official ``scale_init=zeros``).
* ``stem="official"`` (default): conv 7x7/2, BN, then the 3x3/2 max-pool with no ReLU between, the pool
  padded as TensorFlow's ``SAME`` (one row and column of -inf after the image, none before).
  ``stem="timm"``: the standard stem, BN -> ReLU -> max-pool padded by one on every side.
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn

from models._checks import check_positive_int

INITS = ("official", "timm")
STEMS = ("official", "timm")
# Standard deviation of a standard normal truncated to [-2, 2] (JAX's truncated_normal correction).
TRUNCATED_STD = 0.87962566103423978


class SamePadMaxPool2d(nn.Module):
    """3x3 / stride 2 max-pool with TensorFlow's SAME padding (extra padding after, -inf fill)."""

    def __init__(self, kernel_size: int = 3, stride: int = 2) -> None:
        super().__init__()
        self.kernel_size, self.stride = kernel_size, stride

    def forward(self, x: Tensor) -> Tensor:
        pads = []
        for size in (x.shape[-1], x.shape[-2]):  # F.pad order: last dim first
            total = max((math.ceil(size / self.stride) - 1) * self.stride + self.kernel_size - size, 0)
            pads += [total // 2, total - total // 2]
        return F.max_pool2d(F.pad(x, pads, value=-math.inf), self.kernel_size, self.stride)


def lecun_normal_truncated_(weight: Tensor) -> Tensor:
    """Flax's default kernel init: truncated normal with variance 1 / fan_in (fan_in = in * kh * kw)."""
    fan_in = weight[0].numel()
    std = math.sqrt(1.0 / fan_in) / TRUNCATED_STD
    return nn.init.trunc_normal_(weight, mean=0.0, std=std, a=-2.0 * std, b=2.0 * std)


def _official_init_(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)) and not m.weight.is_meta:
            lecun_normal_truncated_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def _timm_resnet(
    arch: str, num_classes: int, in_chans: int, zero_init_last: bool, init: str, stem: str
) -> nn.Module:
    num_classes = check_positive_int("num_classes", num_classes)
    in_chans = check_positive_int("in_chans", in_chans)
    if not isinstance(zero_init_last, bool):
        raise ValueError(f"zero_init_last={zero_init_last!r} is not allowed: it must be True or False")
    if init not in INITS:
        raise ValueError(f"init={init!r} is not one of {INITS}")
    if stem not in STEMS:
        raise ValueError(f"stem={stem!r} is not one of {STEMS}")
    import timm  # imported here: `import models` stays fast for the CIFAR-only users

    model = timm.create_model(
        arch, pretrained=False, num_classes=num_classes, in_chans=in_chans, zero_init_last=zero_init_last
    )
    if init == "official":
        _official_init_(model)
    else:
        fc: nn.Linear = model.get_classifier()
        if not fc.weight.is_meta:  # meta tensors hold no values (see models/init.py)
            nn.init.normal_(fc.weight, std=1.0 / math.sqrt(fc.in_features))
            nn.init.zeros_(fc.bias)
    if stem == "official":
        model.act1 = nn.Identity()
        model.maxpool = SamePadMaxPool2d(3, 2)
    return model


def resnet50(
    num_classes: int,
    in_chans: int = 3,
    zero_init_last: bool = True,
    init: str = "official",
    stem: str = "official",
) -> nn.Module:
    """ResNet-50 (25.6M parameters with 1000 classes)."""
    return _timm_resnet("resnet50", num_classes, in_chans, zero_init_last, init, stem)


def resnet101(
    num_classes: int,
    in_chans: int = 3,
    zero_init_last: bool = True,
    init: str = "official",
    stem: str = "official",
) -> nn.Module:
    """ResNet-101 (44.5M parameters with 1000 classes)."""
    return _timm_resnet("resnet101", num_classes, in_chans, zero_init_last, init, stem)


def resnet152(
    num_classes: int,
    in_chans: int = 3,
    zero_init_last: bool = True,
    init: str = "official",
    stem: str = "official",
) -> nn.Module:
    """ResNet-152 (60.2M parameters with 1000 classes)."""
    return _timm_resnet("resnet152", num_classes, in_chans, zero_init_last, init, stem)


__all__ = [
    "INITS",
    "STEMS",
    "SamePadMaxPool2d",
    "lecun_normal_truncated_",
    "resnet50",
    "resnet101",
    "resnet152",
]
