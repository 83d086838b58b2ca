"""CIFAR ResNets of He et al. (CVPR 2016, Sec. 4.2): ResNet-(6n+2), used by the label-noise experiments.

A 3x3 stem conv (16 channels) + BN-ReLU, three stages of n basic blocks with 16, 32, 64 channels
(strides 1, 2, 2), global average pooling and a linear classifier. A block is the original
post-activation conv3x3-BN-ReLU-conv3x3-BN, added to the shortcut, then ReLU.

Shortcuts where the shape changes (the paper's options):

* ``"A"`` (default): parameter-free: take every second pixel and zero-pad the new channels. This is
  what the paper used on CIFAR, and it gives ResNet-32 its 0.46M parameters (464,154 with a
  10-class head).
* ``"B"``: 1x1 conv (stride) + BN projections: 0.467M for ResNet-32.

The pooling is adaptive, so the network also runs on other input sizes (e.g. 8x8 digits).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models._checks import check_depth, check_positive_int
from models.init import init_cifar_weights_

SHORTCUT_OPTIONS = ("A", "B")


class ShortcutA(nn.Module):
    """Identity with subsampling and zero channel padding (no parameters)."""

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.pad_channels = planes - in_planes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.pad_channels))


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN + shortcut, then ReLU."""

    def __init__(self, in_planes: int, planes: int, stride: int, shortcut: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        if stride == 1 and in_planes == planes:
            self.shortcut: nn.Module = nn.Identity()
        elif shortcut == "A":
            self.shortcut = ShortcutA(in_planes, planes, stride)
        else:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-``depth`` for CIFAR (depth = 6n + 2)."""

    def __init__(
        self, depth: int = 32, shortcut: str = "A", num_classes: int = 10, in_chans: int = 3
    ) -> None:
        super().__init__()
        depth = check_depth("resnet_cifar", depth, "6n + 2 (8, 14, 20, 32, 44, 56, 110, ...)", 6, 2, 8)
        if shortcut not in SHORTCUT_OPTIONS:
            raise ValueError(f"shortcut={shortcut!r} is not allowed: choose one of {list(SHORTCUT_OPTIONS)}")
        num_classes = check_positive_int("num_classes", num_classes)
        in_chans = check_positive_int("in_chans", in_chans)
        n = (depth - 2) // 6

        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(inplace=True)
        )
        blocks: list[nn.Module] = []
        in_planes = 16
        for planes, stride in zip((16, 32, 64), (1, 2, 2), strict=True):
            for i in range(n):
                blocks.append(BasicBlock(in_planes, planes, stride if i == 0 else 1, shortcut))
                in_planes = planes
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)
        init_cifar_weights_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.pool(self.blocks(self.stem(x)))  # (B, 64, 1, 1)
        return self.fc(torch.flatten(out, 1))


def resnet_cifar(num_classes: int, in_chans: int = 3, depth: int = 32, shortcut: str = "A") -> CifarResNet:
    """Generic CIFAR ResNet-depth (depth = 6n + 2), shortcut option "A" or "B"."""
    return CifarResNet(depth, shortcut, num_classes=num_classes, in_chans=in_chans)


def resnet32(num_classes: int, in_chans: int = 3, shortcut: str = "A") -> CifarResNet:
    """ResNet-32 (0.46M parameters with option-A shortcuts), the paper's label-noise model."""
    return CifarResNet(32, shortcut, num_classes=num_classes, in_chans=in_chans)
