"""Shake-Shake regularised ResNets (Gastaldi 2017), "Shake-Shake-Image", for 32x32 inputs.

Shake-Shake ``depth 2x{base_width}d``: a 3x3 stem conv (16 channels) + BN, three stages of
n = (depth - 2) / 6 blocks with base_width, 2 base_width and 4 base_width channels (strides 1, 2, 2),
then ReLU, global average pooling and a linear classifier. A block has two residual branches, each
ReLU-conv3x3(stride)-BN-ReLU-conv3x3-BN, mixed by :class:`models.shake.ShakeShake` (per-image
coefficients; eval uses 0.5), plus a shortcut: the identity, or, where the shape changes, Gastaldi's
two-path shortcut (1x1 average pooling with stride, then a 1x1 conv to half the channels; the second
path is first shifted by one pixel right and down; the halves are concatenated and batch-normalised).
``shake_shake_26_2x96d`` has 26.2M parameters (paper: 26.2M). The official SAM model
``WideResnet28x6_ShakeShake`` is this network.

Randomness and SAM's two passes: see :mod:`models.shake` (the ``true_gradient`` protocol).
The pooling is adaptive, so the network also runs on other input sizes (e.g. 8x8 digits).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models._checks import check_depth, check_positive_int
from models.init import init_cifar_weights_
from models.shake import ShakeShake


class ShakeShortcut(nn.Module):
    """Gastaldi's shortcut for a change of shape: two strided 1x1 paths, one shifted by a pixel."""

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.conv1 = nn.Conv2d(in_planes, planes // 2, 1, bias=False)
        self.conv2 = nn.Conv2d(in_planes, planes // 2, 1, bias=False)
        self.bn = nn.BatchNorm2d(planes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h1 = self.conv1(F.avg_pool2d(x, 1, self.stride))
        # Shift by one pixel: pad one zero row/column at the bottom/right, drop the first row/column.
        shifted = F.pad(x, (0, 1, 0, 1))[:, :, 1:, 1:]
        h2 = self.conv2(F.avg_pool2d(shifted, 1, self.stride))
        return self.bn(torch.cat([h1, h2], dim=1))


class ShakeBranch(nn.Sequential):
    """ReLU-conv3x3(stride)-BN-ReLU-conv3x3-BN."""

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__(
            nn.ReLU(inplace=False),  # not in place: the input also feeds the other branch and the shortcut
            nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(planes),
            nn.ReLU(inplace=True),
            nn.Conv2d(planes, planes, 3, padding=1, bias=False),
            nn.BatchNorm2d(planes),
        )


class ShakeShakeBlock(nn.Module):
    """Two branches mixed by Shake-Shake, plus a shortcut."""

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.branch1 = ShakeBranch(in_planes, planes, stride)
        self.branch2 = ShakeBranch(in_planes, planes, stride)
        self.shake = ShakeShake()
        self.shortcut = (
            ShakeShortcut(in_planes, planes, stride) if stride != 1 or in_planes != planes else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x) + self.shake(self.branch1(x), self.branch2(x))


class ShakeShakeResNet(nn.Module):
    """Shake-Shake ResNet ``depth 2x{base_width}d`` (Shake-Shake-Image)."""

    def __init__(
        self, depth: int = 26, base_width: int = 96, num_classes: int = 10, in_chans: int = 3
    ) -> None:
        super().__init__()
        depth = check_depth("shake_shake", depth, "6n + 2 (8, 14, 20, 26, ...)", 6, 2, 8)
        base_width = check_positive_int("base_width", base_width)
        if base_width % 2:
            raise ValueError(f"base_width={base_width} is not allowed: it must be even (shortcut halves)")
        num_classes = check_positive_int("num_classes", num_classes)
        in_chans = check_positive_int("in_chans", in_chans)
        n = (depth - 2) // 6

        self.stem = nn.Sequential(nn.Conv2d(in_chans, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16))
        blocks: list[nn.Module] = []
        in_planes = 16
        for planes, stride in zip((base_width, 2 * base_width, 4 * base_width), (1, 2, 2), strict=True):
            for i in range(n):
                blocks.append(ShakeShakeBlock(in_planes, planes, stride if i == 0 else 1))
                in_planes = planes
        self.blocks = nn.Sequential(*blocks)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)
        init_cifar_weights_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.pool(self.relu(self.blocks(self.stem(x))))  # (B, 4 base_width, 1, 1)
        return self.fc(torch.flatten(out, 1))


def shake_shake(
    num_classes: int, in_chans: int = 3, depth: int = 26, base_width: int = 96
) -> ShakeShakeResNet:
    """Generic Shake-Shake ResNet ``depth 2x{base_width}d`` (depth = 6n + 2, base_width even)."""
    return ShakeShakeResNet(depth, base_width, num_classes=num_classes, in_chans=in_chans)


def shake_shake_26_2x96d(num_classes: int, in_chans: int = 3) -> ShakeShakeResNet:
    """Shake-Shake 26 2x96d (26.2M parameters), the paper's Shake-Shake model."""
    return ShakeShakeResNet(26, 96, num_classes=num_classes, in_chans=in_chans)
