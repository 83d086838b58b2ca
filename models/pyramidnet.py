"""PyramidNet (Han, Kim & Kim, CVPR 2017) with optional ShakeDrop (Yamada et al. 2018), 32x32 inputs.

PyramidNet-``depth`` with widening factor ``alpha``: a 3x3 stem conv (16 channels) + BN, then
N = 3n residual blocks (n = (depth - 2) / 9 bottleneck or (depth - 2) / 6 basic blocks per stage;
strides 1, 2, 2 at the stage starts) whose width grows linearly: block k (1-based) has
``round(16 + k * alpha / N)`` channels (times 4 at a bottleneck's output), then BN-ReLU, global
average pooling and a linear classifier. Blocks:

* bottleneck: BN-conv1x1-BN-ReLU-conv3x3(stride)-BN-ReLU-conv1x1(x4)-BN;
* basic: BN-conv3x3(stride)-BN-ReLU-conv3x3-BN;

and a parameter-free shortcut: 2x2 average pooling where the stride is 2, then zero channel padding.
Widths are rounded (not truncated) by default, as in the official SAM code and later PyramidNet
work: ``pyramidnet272`` (depth 272, alpha 200, bottleneck) then has 26.21M parameters, 0.8% above
the PyramidNet paper's 26.0M, which truncates (``width_rounding="floor"``: 26.05M).

ShakeDrop (``shakedrop=True``): each block's branch F is scaled by ``b_l + alpha - b_l * alpha`` in
the forward pass, ``b_l ~ Bernoulli(p_l)``, ``alpha ~ U[alpha_range]``, with the survival probability
decaying linearly over the blocks, ``p_l = 1 - (l / L) (1 - p_L)`` for block l = 1..L; the paper's
(and the official SAM code's) p_L = 0.5, alpha in [-1, 1], beta in [0, 1], per-image draws.
Randomness and SAM's two passes: see :mod:`models.shake` (the ``true_gradient`` protocol).
The pooling is adaptive, so the network also runs on other input sizes (e.g. 8x8 digits).
"""

from __future__ import annotations

import math
import numbers

import torch
import torch.nn.functional as F
from torch import nn

from models._checks import check_depth, check_positive_int
from models.init import init_cifar_weights_
from models.shake import ShakeDrop


def shakedrop_survival_probs(num_blocks: int, p_L: float) -> list[float]:
    """Linear decay rule: ``p_l = 1 - (l / L) (1 - p_L)`` for l = 1..L (the last block gets p_L)."""
    return [1.0 - (l / num_blocks) * (1.0 - p_L) for l in range(1, num_blocks + 1)]


class PyramidBlock(nn.Module):
    """One PyramidNet block (bottleneck or basic), its ShakeDrop if any, and the pad shortcut."""

    def __init__(
        self, in_planes: int, planes: int, stride: int, bottleneck: bool, shakedrop: ShakeDrop | None
    ) -> None:
        super().__init__()
        self.out_planes = planes * 4 if bottleneck else planes
        if bottleneck:
            self.branch = nn.Sequential(
                nn.BatchNorm2d(in_planes),
                nn.Conv2d(in_planes, planes, 1, bias=False),
                nn.BatchNorm2d(planes),
                nn.ReLU(inplace=True),
                nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False),
                nn.BatchNorm2d(planes),
                nn.ReLU(inplace=True),
                nn.Conv2d(planes, self.out_planes, 1, bias=False),
                nn.BatchNorm2d(self.out_planes),
            )
        else:
            self.branch = nn.Sequential(
                nn.BatchNorm2d(in_planes),
                nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False),
                nn.BatchNorm2d(planes),
                nn.ReLU(inplace=True),
                nn.Conv2d(planes, planes, 3, padding=1, bias=False),
                nn.BatchNorm2d(planes),
            )
        self.shakedrop = shakedrop
        self.stride = stride
        self.pad_channels = self.out_planes - in_planes
        if self.pad_channels < 0:
            raise ValueError(f"PyramidNet block narrows {in_planes} -> {self.out_planes} channels")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.branch(x)
        if self.shakedrop is not None:
            out = self.shakedrop(out)
        shortcut = x
        if self.stride != 1:
            shortcut = F.avg_pool2d(shortcut, 2, self.stride, ceil_mode=True, count_include_pad=False)
        if self.pad_channels:
            shortcut = F.pad(shortcut, (0, 0, 0, 0, 0, self.pad_channels))  # zeros on new channels
        return out + shortcut


class PyramidNet(nn.Module):
    """PyramidNet-``depth`` (widening ``alpha``), optionally with ShakeDrop."""

    def __init__(
        self,
        depth: int = 272,
        alpha: float = 200,
        bottleneck: bool = True,
        shakedrop: bool = False,
        p_L: float = 0.5,  # the ShakeDrop paper's name
        alpha_range: tuple[float, float] = (-1.0, 1.0),
        beta_range: tuple[float, float] = (0.0, 1.0),
        width_rounding: str = "round",
        num_classes: int = 10,
        in_chans: int = 3,
    ) -> None:
        super().__init__()
        if bottleneck:
            depth = check_depth("pyramidnet (bottleneck)", depth, "9n + 2 (11, 20, ..., 110, 272)", 9, 2, 11)
        else:
            depth = check_depth("pyramidnet (basic)", depth, "6n + 2 (8, 14, ..., 110)", 6, 2, 8)
        if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or alpha < 0:
            raise ValueError(f"alpha={alpha!r} is not allowed: the widening factor must be a number >= 0")
        if not isinstance(p_L, numbers.Real) or not 0.0 < p_L <= 1.0:
            raise ValueError(f"p_L={p_L!r} is not allowed: it must lie in (0, 1]")
        rounders = {"round": round, "floor": math.floor}
        if width_rounding not in rounders:
            raise ValueError(
                f"width_rounding={width_rounding!r} is not allowed: choose one of {list(rounders)}"
            )
        num_classes = check_positive_int("num_classes", num_classes)
        in_chans = check_positive_int("in_chans", in_chans)
        n = (depth - 2) // (9 if bottleneck else 6)
        num_blocks = 3 * n
        probs = shakedrop_survival_probs(num_blocks, p_L)

        self.stem = nn.Sequential(nn.Conv2d(in_chans, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16))
        blocks: list[PyramidBlock] = []
        in_planes = 16
        for k in range(1, num_blocks + 1):
            planes = int(rounders[width_rounding](16 + k * alpha / num_blocks))
            stride = 2 if k in (n + 1, 2 * n + 1) else 1
            sd = ShakeDrop(probs[k - 1], alpha_range, beta_range) if shakedrop else None
            blocks.append(PyramidBlock(in_planes, planes, stride, bottleneck, sd))
            in_planes = blocks[-1].out_planes
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(in_planes)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)
        init_cifar_weights_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.blocks(self.stem(x))
        out = self.pool(self.relu(self.bn(out)))  # (B, C_final, 1, 1)
        return self.fc(torch.flatten(out, 1))


def pyramidnet(
    num_classes: int,
    in_chans: int = 3,
    depth: int = 272,
    alpha: float = 200,
    bottleneck: bool = True,
    shakedrop: bool = False,
    p_L: float = 0.5,
    alpha_range: tuple[float, float] = (-1.0, 1.0),
    beta_range: tuple[float, float] = (0.0, 1.0),
    width_rounding: str = "round",
) -> PyramidNet:
    """Generic PyramidNet (small variants for tests: e.g. depth=11, alpha=8)."""
    return PyramidNet(
        depth,
        alpha,
        bottleneck,
        shakedrop,
        p_L,
        tuple(alpha_range),
        tuple(beta_range),
        width_rounding,
        num_classes=num_classes,
        in_chans=in_chans,
    )


def pyramidnet272(num_classes: int, in_chans: int = 3) -> PyramidNet:
    """PyramidNet-272, alpha = 200, bottleneck, no ShakeDrop (the paper's "PyramidNet" rows)."""
    return PyramidNet(272, 200, True, False, num_classes=num_classes, in_chans=in_chans)


def pyramidnet272_shakedrop(
    num_classes: int,
    in_chans: int = 3,
    p_L: float = 0.5,
    alpha_range: tuple[float, float] = (-1.0, 1.0),
    beta_range: tuple[float, float] = (0.0, 1.0),
) -> PyramidNet:
    """PyramidNet-272, alpha = 200, bottleneck, ShakeDrop (p_L = 0.5, alpha in [-1, 1], beta in [0, 1])."""
    return PyramidNet(
        272,
        200,
        True,
        True,
        p_L,
        tuple(alpha_range),
        tuple(beta_range),
        num_classes=num_classes,
        in_chans=in_chans,
    )
