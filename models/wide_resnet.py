"""Wide Residual Networks (Zagoruyko & Komodakis, BMVC 2016), pre-activation blocks, for 32x32 inputs.

WRN-d-k: a 3x3 stem conv (16 channels), three groups of n = (d - 4) / 6 blocks with 16k, 32k, 64k
channels (strides 1, 2, 2), then BN-ReLU, global average pooling and a linear classifier. A block is
BN-ReLU-conv3x3(stride)-BN-ReLU-[dropout]-conv3x3 plus a shortcut: the identity, or, where the shape
changes, one of two (``shortcut``):

* ``"avgpool_pad"``: the official SAM code's (``sam_jax/models/wide_resnet.py`` ``_output_add``, which
  mimics AutoAugment's ``wrn.py``): average pooling with kernel = stride, then zero channels appended after
  the input's. Parameter-free. Which input it sees is the official one too: the first block of the network
  (``activate_before_residual``) adds its BN-ReLU'd input, every later block its raw input.
* ``"conv1x1"`` (the constructors' default, for the models' other users): a 1x1 conv (stride) on the
  pre-activated input, as the WRN paper's code.

WRN-28-10 (CIFAR-100 head) has 36,536,884 parameters with ``conv1x1`` (the WRN paper: 36.5M) and
36,278,324 with ``avgpool_pad``; WRN-16-8 11.0M (paper: 11.0M) with ``conv1x1``. The experiment files'
``model=wrn`` sets ``avgpool_pad``, the architecture the paper's numbers came from.
No dropout by default, as the official SAM code; ``drop_rate`` adds the paper's dropout between the
two convolutions (it draws from torch's global RNG, so SAM's RNG replay gives both passes one mask).

The pooling is adaptive, so the network also runs on other input sizes (e.g. 8x8 digits).
"""

from __future__ import annotations

import numbers

import torch
import torch.nn.functional as F
from torch import nn

from models._checks import check_depth, check_positive_int
from models.init import init_cifar_weights_

SHORTCUTS = ("conv1x1", "avgpool_pad")  # the WRN paper's projection | the official SAM code's pool + pad


class WideBasicBlock(nn.Module):
    """Pre-activation block: BN-ReLU-conv3x3-BN-ReLU-dropout-conv3x3 + shortcut (see the module docstring)."""

    def __init__(
        self,
        in_planes: int,
        planes: int,
        stride: int,
        drop_rate: float,
        shortcut: str = "conv1x1",
        activate_before_residual: bool = False,
    ) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.dropout = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.stride, self.pad_channels = stride, planes - in_planes
        self.pool_pad = shortcut == "avgpool_pad"
        self.activate_before_residual = activate_before_residual and self.pool_pad
        self.shortcut = (
            nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False)
            if not self.pool_pad and (stride != 1 or in_planes != planes)
            else None
        )

    def _pool_pad(self, x: torch.Tensor) -> torch.Tensor:
        """The official parameter-free shortcut: (B, C, H, W) -> (B, C + pad, H / s, W / s)."""
        if self.pad_channels == 0:
            return x  # the official code pools and pads only where the channel count changes
        x = F.avg_pool2d(x, self.stride, self.stride) if self.stride > 1 else x
        return F.pad(x, (0, 0, 0, 0, 0, self.pad_channels))  # zeros after the existing channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = self.relu(self.bn1(x))
        if self.pool_pad:  # the official input: activated for the network's first block, else raw
            residual = self._pool_pad(act if self.activate_before_residual else x)
        else:  # a projection shortcut sees the pre-activated input (as the WRN code); the identity sees x
            residual = x if self.shortcut is None else self.shortcut(act)
        out = self.conv1(act)
        out = self.conv2(self.dropout(self.relu(self.bn2(out))))
        return out + residual


class WideResNet(nn.Module):
    """WRN-``depth``-``widen_factor`` with an adaptive-average-pooled linear head."""

    def __init__(
        self,
        depth: int = 28,
        widen_factor: int = 10,
        drop_rate: float = 0.0,
        num_classes: int = 10,
        in_chans: int = 3,
        shortcut: str = "conv1x1",
    ) -> None:
        super().__init__()
        if shortcut not in SHORTCUTS:
            raise ValueError(f"shortcut={shortcut!r} is not allowed: choose one of {list(SHORTCUTS)}")
        depth = check_depth("wide_resnet", depth, "6n + 4 (10, 16, 22, 28, 40, ...)", 6, 4, 10)
        widen_factor = check_positive_int("widen_factor", widen_factor)
        if not isinstance(drop_rate, numbers.Real) or not 0.0 <= drop_rate < 1.0:
            raise ValueError(f"drop_rate={drop_rate!r} is not allowed: it must lie in [0, 1)")
        num_classes = check_positive_int("num_classes", num_classes)
        in_chans = check_positive_int("in_chans", in_chans)
        n = (depth - 4) // 6
        widths = [16 * widen_factor, 32 * widen_factor, 64 * widen_factor]

        self.conv1 = nn.Conv2d(in_chans, 16, 3, padding=1, bias=False)
        blocks: list[nn.Module] = []
        in_planes = 16
        for planes, stride in zip(widths, (1, 2, 2), strict=True):
            for i in range(n):
                first = not blocks  # the official code's activate_before_residual (first block only)
                block = WideBasicBlock(in_planes, planes, stride if i == 0 else 1, drop_rate, shortcut, first)
                blocks.append(block)
                in_planes = planes
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(in_planes)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)
        init_cifar_weights_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.blocks(self.conv1(x))
        out = self.pool(self.relu(self.bn(out)))  # (B, 64k, 1, 1)
        return self.fc(torch.flatten(out, 1))


def wide_resnet(
    num_classes: int,
    in_chans: int = 3,
    depth: int = 28,
    widen_factor: int = 10,
    drop_rate: float = 0.0,
    shortcut: str = "conv1x1",
) -> WideResNet:
    """Generic WRN-depth-widen_factor (depth = 6n + 4)."""
    return WideResNet(depth, widen_factor, drop_rate, num_classes, in_chans, shortcut)


def wrn28_10(
    num_classes: int, in_chans: int = 3, drop_rate: float = 0.0, shortcut: str = "conv1x1"
) -> WideResNet:
    """WRN-28-10, the paper's main CIFAR model: 36.5M parameters (conv1x1), 36.3M (avgpool_pad, official)."""
    return WideResNet(28, 10, drop_rate, num_classes, in_chans, shortcut)


def wrn16_8(
    num_classes: int, in_chans: int = 3, drop_rate: float = 0.0, shortcut: str = "conv1x1"
) -> WideResNet:
    """WRN-16-8 (11.0M parameters with conv1x1)."""
    return WideResNet(16, 8, drop_rate, num_classes, in_chans, shortcut)
