"""AutoAugment as batched uint8 tensor ops: the official SAM code's policies and torchvision's.

A policy is a list of sub-policies, each two ``(op, probability, magnitude)``; per image one sub-policy
is drawn uniformly, then each of its two ops is applied with its probability, signed ops with a random
sign (Cubuk et al. 2018). ``dataset.autoaugment_policy`` picks the policy family:

* ``official`` (the paper's cells): google-research/sam ``autoaugment/policies.py`` and
  ``autoaugment.py``, written here from their published description and constants. CIFAR: the 95
  sub-policies of the AutoAugment search (``policy_cifar``; 20 of the 25 that torchvision ships from the
  AutoAugment paper's appendix are among them); SVHN: its 25 (the same as torchvision's). Levels 0..10 map to magnitudes with the code's ImageNet constants even on
  32x32 images: translate ``level / 10 * 250`` px and the AA-internal cutout a ``2 * int(level / 10 *
  100)`` px square, so any translate of level >= 2 or cutout of level >= 4 leaves a uniformly gray
  image (fill 128, the code's ``replace``). Rotate ``level / 10 * 30`` degrees, shear ``level / 10 * 0.3``
  (signed); Color / Contrast / Brightness / Sharpness blend with factor ``level / 10 * 1.8 + 0.1``;
  Posterize keeps ``int(level / 10 * 4)`` bits; Solarize inverts pixels >= ``int(level / 10 * 256)``.
  Blends truncate to uint8 (extrapolations clip first), grayscale is TF's ``rgb_to_grayscale`` (weights
  0.2989, 0.587, 0.114; float to uint8 by ``* 255.5``, truncated), and Contrast blends with a constant
  ``int(H * W / 256)``: the code's "mean" is the sum of a 256-bin histogram over 256, i.e. the pixel count
  over 256 (4 on 32x32), kept as the code computes it. Geometric ops use nearest neighbours.
* ``torchvision``: ``torchvision.transforms.AutoAugment(AutoAugmentPolicy.CIFAR10)``: its 25
  sub-policies, 10 magnitude bins (translate up to 150/331 of the image, 14.5 px on 32x32), fill 0,
  nearest; the ops with the same arguments as torchvision's own implementation, through torchvision's
  public functional API, so the images are those of ``AutoAugment.forward`` (a test compares them).

``BatchedAutoAugment`` applies a policy to a batch with per-image draws (made per epoch in
``data.sampling``) by grouping the images that share (sub-policy, op, applied?, sign): about 100 op
calls per batch, whatever its size.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor
from torchvision.transforms import AutoAugment, AutoAugmentPolicy, InterpolationMode
from torchvision.transforms import functional as F

AUTOAUGMENT_POLICIES = ("official", "torchvision")
SIGNED_OPS = ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate")

SubPolicy = tuple[tuple[str, float, int | None], tuple[str, float, int | None]]

# google-research/sam autoaugment/policies.py, policy_cifar(): exp0_0..exp0_3, exp1_0..exp1_6,
# exp2_0..exp2_7 (19 blocks of 5 sub-policies), in the code's order.
OFFICIAL_CIFAR: tuple[SubPolicy, ...] = (
    # exp0_0
    (("Invert", 0.1, 7), ("Contrast", 0.2, 6)),
    (("Rotate", 0.7, 2), ("TranslateX", 0.3, 9)),
    (("Sharpness", 0.8, 1), ("Sharpness", 0.9, 3)),
    (("ShearY", 0.5, 8), ("TranslateY", 0.7, 9)),
    (("AutoContrast", 0.5, 8), ("Equalize", 0.9, 2)),
    # exp0_1
    (("Solarize", 0.4, 5), ("AutoContrast", 0.9, 3)),
    (("TranslateY", 0.9, 9), ("TranslateY", 0.7, 9)),
    (("AutoContrast", 0.9, 2), ("Solarize", 0.8, 3)),
    (("Equalize", 0.8, 8), ("Invert", 0.1, 3)),
    (("TranslateY", 0.7, 9), ("AutoContrast", 0.9, 1)),
    # exp0_2
    (("Solarize", 0.4, 5), ("AutoContrast", 0.0, 2)),
    (("TranslateY", 0.7, 9), ("TranslateY", 0.7, 9)),
    (("AutoContrast", 0.9, 0), ("Solarize", 0.4, 3)),
    (("Equalize", 0.7, 5), ("Invert", 0.1, 3)),
    (("TranslateY", 0.7, 9), ("TranslateY", 0.7, 9)),
    # exp0_3
    (("Solarize", 0.4, 5), ("AutoContrast", 0.9, 1)),
    (("TranslateY", 0.8, 9), ("TranslateY", 0.9, 9)),
    (("AutoContrast", 0.8, 0), ("TranslateY", 0.7, 9)),
    (("TranslateY", 0.2, 7), ("Color", 0.9, 6)),
    (("Equalize", 0.7, 6), ("Color", 0.4, 9)),
    # exp1_0
    (("ShearY", 0.2, 7), ("Posterize", 0.3, 7)),
    (("Color", 0.4, 3), ("Brightness", 0.6, 7)),
    (("Sharpness", 0.3, 9), ("Brightness", 0.7, 9)),
    (("Equalize", 0.6, 5), ("Equalize", 0.5, 1)),
    (("Contrast", 0.6, 7), ("Sharpness", 0.6, 5)),
    # exp1_1
    (("Brightness", 0.3, 7), ("AutoContrast", 0.5, 8)),
    (("AutoContrast", 0.9, 4), ("AutoContrast", 0.5, 6)),
    (("Solarize", 0.3, 5), ("Equalize", 0.6, 5)),
    (("TranslateY", 0.2, 4), ("Sharpness", 0.3, 3)),
    (("Brightness", 0.0, 8), ("Color", 0.8, 8)),
    # exp1_2
    (("Solarize", 0.2, 6), ("Color", 0.8, 6)),
    (("Solarize", 0.2, 6), ("AutoContrast", 0.8, 1)),
    (("Solarize", 0.4, 1), ("Equalize", 0.6, 5)),
    (("Brightness", 0.0, 0), ("Solarize", 0.5, 2)),
    (("AutoContrast", 0.9, 5), ("Brightness", 0.5, 3)),
    # exp1_3
    (("Contrast", 0.7, 5), ("Brightness", 0.0, 2)),
    (("Solarize", 0.2, 8), ("Solarize", 0.1, 5)),
    (("Contrast", 0.5, 1), ("TranslateY", 0.2, 9)),
    (("AutoContrast", 0.6, 5), ("TranslateY", 0.0, 9)),
    (("AutoContrast", 0.9, 4), ("Equalize", 0.8, 4)),
    # exp1_4
    (("Brightness", 0.0, 7), ("Equalize", 0.4, 7)),
    (("Solarize", 0.2, 5), ("Equalize", 0.7, 5)),
    (("Equalize", 0.6, 8), ("Color", 0.6, 2)),
    (("Color", 0.3, 7), ("Color", 0.2, 4)),
    (("AutoContrast", 0.5, 2), ("Solarize", 0.7, 2)),
    # exp1_5
    (("AutoContrast", 0.2, 0), ("Equalize", 0.1, 0)),
    (("ShearY", 0.6, 5), ("Equalize", 0.6, 5)),
    (("Brightness", 0.9, 3), ("AutoContrast", 0.4, 1)),
    (("Equalize", 0.8, 8), ("Equalize", 0.7, 7)),
    (("Equalize", 0.7, 7), ("Solarize", 0.5, 0)),
    # exp1_6
    (("Equalize", 0.8, 4), ("TranslateY", 0.8, 9)),
    (("TranslateY", 0.8, 9), ("TranslateY", 0.6, 9)),
    (("TranslateY", 0.9, 0), ("TranslateY", 0.5, 9)),
    (("AutoContrast", 0.5, 3), ("Solarize", 0.3, 4)),
    (("Solarize", 0.5, 3), ("Equalize", 0.4, 4)),
    # exp2_0
    (("Color", 0.7, 7), ("TranslateX", 0.5, 8)),
    (("Equalize", 0.3, 7), ("AutoContrast", 0.4, 8)),
    (("TranslateY", 0.4, 3), ("Sharpness", 0.2, 6)),
    (("Brightness", 0.9, 6), ("Color", 0.2, 8)),
    (("Solarize", 0.5, 2), ("Invert", 0.0, 3)),
    # exp2_1
    (("AutoContrast", 0.1, 5), ("Brightness", 0.0, 0)),
    (("Cutout", 0.2, 4), ("Equalize", 0.1, 1)),
    (("Equalize", 0.7, 7), ("AutoContrast", 0.6, 4)),
    (("Color", 0.1, 8), ("ShearY", 0.2, 3)),
    (("ShearY", 0.4, 2), ("Rotate", 0.7, 0)),
    # exp2_2
    (("ShearY", 0.1, 3), ("AutoContrast", 0.9, 5)),
    (("TranslateY", 0.3, 6), ("Cutout", 0.3, 3)),
    (("Equalize", 0.5, 0), ("Solarize", 0.6, 6)),
    (("AutoContrast", 0.3, 5), ("Rotate", 0.2, 7)),
    (("Equalize", 0.8, 2), ("Invert", 0.4, 0)),
    # exp2_3
    (("Equalize", 0.9, 5), ("Color", 0.7, 0)),
    (("Equalize", 0.1, 1), ("ShearY", 0.1, 3)),
    (("AutoContrast", 0.7, 3), ("Equalize", 0.7, 0)),
    (("Brightness", 0.5, 1), ("Contrast", 0.1, 7)),
    (("Contrast", 0.1, 4), ("Solarize", 0.6, 5)),
    # exp2_4
    (("Solarize", 0.2, 3), ("ShearX", 0.0, 0)),
    (("TranslateX", 0.3, 0), ("TranslateX", 0.6, 0)),
    (("Equalize", 0.5, 9), ("TranslateY", 0.6, 7)),
    (("ShearX", 0.1, 0), ("Sharpness", 0.5, 1)),
    (("Equalize", 0.8, 6), ("Invert", 0.3, 6)),
    # exp2_5
    (("AutoContrast", 0.3, 9), ("Cutout", 0.5, 3)),
    (("ShearX", 0.4, 4), ("AutoContrast", 0.9, 2)),
    (("ShearX", 0.0, 3), ("Posterize", 0.0, 3)),
    (("Solarize", 0.4, 3), ("Color", 0.2, 4)),
    (("Equalize", 0.1, 4), ("Equalize", 0.7, 6)),
    # exp2_6
    (("Equalize", 0.3, 8), ("AutoContrast", 0.4, 3)),
    (("Solarize", 0.6, 4), ("AutoContrast", 0.7, 6)),
    (("AutoContrast", 0.2, 9), ("Brightness", 0.4, 8)),
    (("Equalize", 0.1, 0), ("Equalize", 0.0, 6)),
    (("Equalize", 0.8, 4), ("Equalize", 0.0, 4)),
    # exp2_7
    (("Equalize", 0.5, 5), ("AutoContrast", 0.1, 2)),
    (("Solarize", 0.5, 5), ("AutoContrast", 0.9, 5)),
    (("AutoContrast", 0.6, 1), ("AutoContrast", 0.7, 8)),
    (("Equalize", 0.2, 0), ("AutoContrast", 0.1, 2)),
    (("Equalize", 0.6, 9), ("Equalize", 0.4, 4)),
)

# google-research/sam autoaugment/policies.py, policy_svhn() (Cubuk et al. 2018, Table 7 / appendix).
OFFICIAL_SVHN: tuple[SubPolicy, ...] = (
    (("ShearX", 0.9, 4), ("Invert", 0.2, 3)),
    (("ShearY", 0.9, 8), ("Invert", 0.7, 5)),
    (("Equalize", 0.6, 5), ("Solarize", 0.6, 6)),
    (("Invert", 0.9, 3), ("Equalize", 0.6, 3)),
    (("Equalize", 0.6, 1), ("Rotate", 0.9, 3)),
    (("ShearX", 0.9, 4), ("AutoContrast", 0.8, 3)),
    (("ShearY", 0.9, 8), ("Invert", 0.4, 5)),
    (("ShearY", 0.9, 5), ("Solarize", 0.2, 6)),
    (("Invert", 0.9, 6), ("AutoContrast", 0.8, 1)),
    (("Equalize", 0.6, 3), ("Rotate", 0.9, 3)),
    (("ShearX", 0.9, 4), ("Solarize", 0.3, 3)),
    (("ShearY", 0.8, 8), ("Invert", 0.7, 4)),
    (("Equalize", 0.9, 5), ("TranslateY", 0.6, 6)),
    (("Invert", 0.9, 4), ("Equalize", 0.6, 7)),
    (("Contrast", 0.3, 3), ("Rotate", 0.8, 4)),
    (("Invert", 0.8, 5), ("TranslateY", 0.0, 2)),
    (("ShearY", 0.7, 6), ("Solarize", 0.4, 8)),
    (("Invert", 0.6, 4), ("Rotate", 0.8, 4)),
    (("ShearY", 0.3, 7), ("TranslateX", 0.9, 3)),
    (("ShearX", 0.1, 6), ("Invert", 0.6, 5)),
    (("Solarize", 0.7, 2), ("TranslateY", 0.6, 7)),
    (("ShearY", 0.8, 4), ("Invert", 0.8, 8)),
    (("ShearX", 0.7, 9), ("TranslateY", 0.8, 3)),
    (("ShearY", 0.8, 5), ("AutoContrast", 0.7, 3)),
    (("ShearX", 0.7, 2), ("Invert", 0.1, 5)),
)

# The official code's constants (autoaugment.py): levels run 0..10; HParams(cutout_const=100,
# translate_const=250) for every dataset; empty pixels become replace = [128, 128, 128].
MAX_LEVEL = 10.0
TRANSLATE_CONST = 250
CUTOUT_CONST = 100
OFFICIAL_FILL = 128


# ---------------------------------------------------------------------------------------------- official
def official_magnitude(op: str, level: int) -> float:
    """The official level-to-argument mapping (unsigned; signed ops get their sign separately)."""
    if op == "Rotate":
        return level / MAX_LEVEL * 30.0
    if op in ("ShearX", "ShearY"):
        return level / MAX_LEVEL * 0.3
    if op in ("TranslateX", "TranslateY"):
        return level / MAX_LEVEL * float(TRANSLATE_CONST)
    if op in ("Color", "Contrast", "Brightness", "Sharpness"):
        return level / MAX_LEVEL * 1.8 + 0.1
    if op == "Posterize":
        return float(int(level / MAX_LEVEL * 4))
    if op == "Solarize":
        return float(int(level / MAX_LEVEL * 256))
    if op == "Cutout":
        return float(int(level / MAX_LEVEL * CUTOUT_CONST))
    if op in ("AutoContrast", "Equalize", "Invert"):
        return 0.0
    raise ValueError(f"unknown AutoAugment op {op!r}")


def blend(image1: Tensor, image2: Tensor, factor: float) -> Tensor:
    """image1 + factor * (image2 - image1) in float32 to uint8: truncated, clipped first when extrapolating."""
    if factor == 0.0:
        return image1.expand_as(image2).clone()
    if factor == 1.0:
        return image2.clone()
    temp = image1.float() + factor * (image2.float() - image1.float())
    if not 0.0 < factor < 1.0:
        temp = temp.clamp(0.0, 255.0)
    return temp.to(torch.uint8)  # float -> uint8 truncates toward zero, as tf.cast


def tf_grayscale(img: Tensor) -> Tensor:
    """TF's rgb_to_grayscale on uint8 (B, 3, H, W): weights on [0, 1] floats, back by * 255.5, truncated."""
    weights = torch.tensor([0.2989, 0.5870, 0.1140], device=img.device).view(1, 3, 1, 1)
    gray = (img.float() / 255.0 * weights).sum(1, keepdim=True)
    return (gray * 255.5).to(torch.uint8)


def _gray_rgb(img: Tensor) -> Tensor:
    return tf_grayscale(img).expand_as(img) if img.shape[1] == 3 else img


def _official_sharpness(img: Tensor, factor: float) -> Tensor:
    kernel = torch.tensor([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]], device=img.device) / 13.0
    channels = img.shape[1]
    smooth = torch.nn.functional.conv2d(img.float(), kernel.expand(channels, 1, 3, 3), groups=channels)
    degenerate = img.clone()
    degenerate[..., 1:-1, 1:-1] = smooth.clamp(0.0, 255.0).to(torch.uint8)  # borders keep the original
    return blend(degenerate, img, factor)


def _official_autocontrast(img: Tensor) -> Tensor:
    lo = img.amin(dim=(-2, -1), keepdim=True).float()
    hi = img.amax(dim=(-2, -1), keepdim=True).float()
    scale = 255.0 / (hi - lo).clamp(min=1.0)
    scaled = (img.float() * scale - lo * scale).clamp(0.0, 255.0).to(torch.uint8)
    return torch.where(hi > lo, scaled, img)


def _posterize(img: Tensor, bits: int) -> Tensor:
    return img & (0xFF & ~((1 << (8 - bits)) - 1))  # keep the top `bits` bits; 0 bits: black


def _official_geometric(img: Tensor, op: str, value: float) -> Tensor:
    fill = [float(OFFICIAL_FILL)] * img.shape[1]
    nearest = InterpolationMode.NEAREST
    if op == "Rotate":
        return F.rotate(img, value, interpolation=nearest, fill=fill)
    if op in ("TranslateX", "TranslateY"):
        shift = [int(value), 0] if op == "TranslateX" else [0, int(value)]
        return F.affine(img, angle=0.0, translate=shift, scale=1.0, shear=[0.0, 0.0], interpolation=nearest,
                        fill=fill)  # fmt: skip
    # Shear: the code's projective transform [1, s, 0, 0, 1, 0] maps output (x, y) to input (x + s y, y),
    # a shear about the top-left corner by angle atan(s).
    shear = [math.degrees(math.atan(value)), 0.0] if op == "ShearX" else [0.0, math.degrees(math.atan(value))]
    return F.affine(img, angle=0.0, translate=[0, 0], scale=1.0, shear=shear, interpolation=nearest, fill=fill,
                    center=[0, 0])  # fmt: skip


def official_cutout(img: Tensor, pad: int, cy: Tensor, cx: Tensor) -> Tensor:
    """The AA-internal cutout: rows [cy - pad, cy + pad) x cols [cx - pad, cx + pad), clipped, set to 128."""
    h, w = img.shape[-2:]
    rows = torch.arange(h, device=img.device)
    cols = torch.arange(w, device=img.device)
    cy, cx = cy.to(img.device)[:, None], cx.to(img.device)[:, None]
    in_rows = (rows >= cy - pad) & (rows < cy + pad)  # (B, H)
    in_cols = (cols >= cx - pad) & (cols < cx + pad)  # (B, W)
    inside = (in_rows[:, :, None] & in_cols[:, None, :])[:, None]  # (B, 1, H, W)
    return torch.where(inside, torch.full_like(img, OFFICIAL_FILL), img)


def apply_official_op(img: Tensor, op: str, value: float) -> Tensor:
    """One official op on a uint8 batch (B, C, H, W); ``value`` is the signed magnitude. Not Cutout."""
    if op in ("Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY"):
        return _official_geometric(img, op, value)
    if op == "Color":
        return blend(_gray_rgb(img), img, value)
    if op == "Contrast":
        h, w = img.shape[-2:]
        mean = min(max(h * w / 256.0, 0.0), 255.0)  # the code's histogram "mean": pixel count / 256
        return blend(torch.full_like(img, int(mean)), img, value)
    if op == "Brightness":
        return blend(torch.zeros_like(img), img, value)
    if op == "Sharpness":
        return _official_sharpness(img, value)
    if op == "Posterize":
        return _posterize(img, int(value))
    if op == "Solarize":
        return torch.where(img < int(value), img, 255 - img)
    if op == "AutoContrast":
        return _official_autocontrast(img)
    if op == "Equalize":
        return F.equalize(img)
    if op == "Invert":
        return 255 - img
    raise ValueError(f"unknown AutoAugment op {op!r}")


# ---------------------------------------------------------------------------------------------- torchvision
def torchvision_magnitudes(image_hw: tuple[int, int], num_bins: int = 10) -> dict[str, tuple[Tensor, bool]]:
    """torchvision's AutoAugment magnitude bins (op -> (magnitudes, signed)), as documented for v0.10+."""
    h, w = image_hw
    return {
        "ShearX": (torch.linspace(0.0, 0.3, num_bins), True),
        "ShearY": (torch.linspace(0.0, 0.3, num_bins), True),
        "TranslateX": (torch.linspace(0.0, 150.0 / 331.0 * w, num_bins), True),
        "TranslateY": (torch.linspace(0.0, 150.0 / 331.0 * h, num_bins), True),
        "Rotate": (torch.linspace(0.0, 30.0, num_bins), True),
        "Brightness": (torch.linspace(0.0, 0.9, num_bins), True),
        "Color": (torch.linspace(0.0, 0.9, num_bins), True),
        "Contrast": (torch.linspace(0.0, 0.9, num_bins), True),
        "Sharpness": (torch.linspace(0.0, 0.9, num_bins), True),
        "Posterize": (8 - (torch.arange(num_bins) / ((num_bins - 1) / 4)).round().int(), False),
        "Solarize": (torch.linspace(255.0, 0.0, num_bins), False),
        "AutoContrast": (torch.tensor(0.0), False),
        "Equalize": (torch.tensor(0.0), False),
        "Invert": (torch.tensor(0.0), False),
    }


def apply_torchvision_op(img: Tensor, op: str, value: float) -> Tensor:
    """One op as torchvision's AutoAugment applies it (fill 0, nearest), via the public functional API."""
    nearest = InterpolationMode.NEAREST
    if op in ("ShearX", "ShearY"):
        angle = math.degrees(math.atan(value))
        shear = [angle, 0.0] if op == "ShearX" else [0.0, angle]
        return F.affine(img, angle=0.0, translate=[0, 0], scale=1.0, shear=shear, interpolation=nearest, fill=None,
                        center=[0, 0])  # fmt: skip
    if op in ("TranslateX", "TranslateY"):
        shift = [int(value), 0] if op == "TranslateX" else [0, int(value)]
        return F.affine(img, angle=0.0, translate=shift, scale=1.0, interpolation=nearest, shear=[0.0, 0.0],
                        fill=None)  # fmt: skip
    if op == "Rotate":
        return F.rotate(img, value, interpolation=nearest, fill=None)
    enhance: dict[str, Callable[[Tensor, float], Tensor]] = {
        "Brightness": F.adjust_brightness,
        "Color": F.adjust_saturation,
        "Contrast": F.adjust_contrast,
        "Sharpness": F.adjust_sharpness,
    }
    if op in enhance:
        return enhance[op](img, 1.0 + value)
    if op == "Posterize":
        return F.posterize(img, int(value))
    if op == "Solarize":
        return F.solarize(img, value)
    if op == "AutoContrast":
        return F.autocontrast(img)
    if op == "Equalize":
        return F.equalize(img)
    if op == "Invert":
        return F.invert(img)
    raise ValueError(f"unknown AutoAugment op {op!r}")


# ---------------------------------------------------------------------------------------------- batched
@dataclass(frozen=True)
class AutoAugmentPolicySpec:
    """What BatchedAutoAugment needs to know about a policy family."""

    name: str  # "official" or "torchvision"
    sub_policies: tuple[SubPolicy, ...]


def policy_spec(policy: str, dataset: str = "cifar10") -> AutoAugmentPolicySpec:
    """The sub-policies of ``policy`` (official | torchvision) for ``dataset`` (svhn has its own)."""
    if policy not in AUTOAUGMENT_POLICIES:
        raise ValueError(f"dataset.autoaugment_policy={policy!r} is not one of {AUTOAUGMENT_POLICIES}")
    if policy == "torchvision":
        which = AutoAugmentPolicy.SVHN if dataset == "svhn" else AutoAugmentPolicy.CIFAR10
        return AutoAugmentPolicySpec(policy, tuple(tuple(sp) for sp in AutoAugment(which).policies))
    return AutoAugmentPolicySpec(policy, OFFICIAL_SVHN if dataset == "svhn" else OFFICIAL_CIFAR)


class BatchedAutoAugment:
    """A policy applied to a uint8 batch with per-image draws, by groups of images sharing an op call."""

    def __init__(self, image_hw: tuple[int, int], policy: str = "official", dataset: str = "cifar10") -> None:
        self.spec = policy_spec(policy, dataset)
        self.official = policy == "official"
        self.tv_magnitudes = torchvision_magnitudes(image_hw)

    @property
    def num_policies(self) -> int:
        return len(self.spec.sub_policies)

    def _magnitude(self, op: str, level: int | None) -> tuple[float, bool]:
        if self.official:
            return official_magnitude(op, int(level)), op in SIGNED_OPS
        magnitudes, signed = self.tv_magnitudes[op]
        return (float(magnitudes[level].item()) if level is not None else 0.0), signed

    def __call__(
        self,
        x: Tensor,
        policy: Tensor,
        probs: Tensor,
        signs: Tensor,
        cutout_y: Tensor | None = None,
        cutout_x: Tensor | None = None,
    ) -> Tensor:
        """x: (B, C, H, W) uint8 on any device; policy (B,), probs (B, 2), signs (B, 2) and the AA cutout
        centres (B,) on the CPU. An op is applied when its draw is < p (official) / <= p (torchvision, as
        ``AutoAugment.forward``); sign draw 0 negates a signed magnitude."""
        out = x.clone()
        for pid in torch.unique(policy).tolist():
            members = (policy == pid).nonzero().squeeze(1)  # CPU positions in the batch
            imgs = out[members.to(x.device)]
            for i, (op, p, level) in enumerate(self.spec.sub_policies[pid]):
                magnitude, signed = self._magnitude(op, level)
                applied = probs[members, i] < p if self.official else probs[members, i] <= p
                if op == "Cutout":
                    rows = applied.nonzero().squeeze(1)
                    if rows.numel():
                        if cutout_y is None or cutout_x is None:
                            raise ValueError(
                                "the official policy's Cutout op needs cutout_y / cutout_x draws"
                            )
                        at = members[rows]
                        dev_rows = rows.to(x.device)
                        imgs[dev_rows] = official_cutout(
                            imgs[dev_rows], int(magnitude), cutout_y[at], cutout_x[at]
                        )
                    continue
                if signed:
                    negative = signs[members, i] == 0
                    groups = [(applied & negative, -magnitude), (applied & ~negative, magnitude)]
                else:
                    groups = [(applied, magnitude)]
                apply = apply_official_op if self.official else apply_torchvision_op
                for chosen, value in groups:
                    rows = chosen.nonzero().squeeze(1)
                    if rows.numel() == 0:
                        continue
                    rows = rows.to(x.device)
                    imgs[rows] = apply(imgs[rows], op, value)
            out[members.to(x.device)] = imgs
        return out


class AutoAugmentImage:
    """One image (C, H, W) uint8 through BatchedAutoAugment, drawing from torch's global RNG (torchvision
    loader path, which seeds it per example): sub-policy, two probabilities, two signs, a cutout centre."""

    def __init__(self, image_hw: tuple[int, int], policy: str = "official", dataset: str = "cifar10") -> None:
        self.batched = BatchedAutoAugment(image_hw, policy, dataset)
        self.image_hw = image_hw

    def __call__(self, img: Tensor) -> Tensor:
        h, w = self.image_hw
        policy = torch.randint(self.batched.num_policies, (1,))
        probs = torch.rand((1, 2))
        signs = torch.randint(2, (1, 2))
        cy, cx = torch.randint(h, (1,)), torch.randint(w, (1,))
        return self.batched(img[None], policy, probs, signs, cy, cx)[0]

    def __repr__(self) -> str:
        return (
            f"AutoAugmentImage(policy={self.batched.spec.name!r}, {self.batched.num_policies} sub-policies)"
        )
