"""Inputs at the pretrained model's resolution (finetuning: CIFAR at 600x600 for EfficientNet-b7, say).

* ``ResizedLoader`` wraps any loader of the protocol and resizes every (already augmented, normalised)
  batch on the device with bilinear interpolation. Normalisation and resizing commute (interpolation is
  affine with weights summing to one), so this equals resizing the raw images first; the 32x32 augmentation
  (crop, flip, AutoAugment) happens at the native resolution, as upsampled CIFAR finetuning usually does.
* ``file_transform`` is the torchvision pipeline for image-file datasets at ``size``: evaluation (and
  ``augment=none`` training, the paper's finetuning of non-CIFAR sets) resizes the short side to
  ``size / 0.875`` and centre-crops ``size`` (ImageNet's 256/224 ratio); ``augment=basic`` is
  RandomResizedCrop(size) + horizontal flip.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torchvision import transforms as T

from data.augment import AugmentSpec

CENTER_CROP_FRACTION = 0.875


class ResizedLoader:
    """A loader whose batches come out at ``size`` x ``size``."""

    def __init__(self, loader, size: int) -> None:
        if size < 1:
            raise ValueError(f"image_size={size} must be a positive integer")
        self.loader, self.size = loader, int(size)

    def __len__(self) -> int:
        return len(self.loader)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.loader.set_epoch(epoch, start_batch)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for x, y in self.loader:
            yield F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False), y

    def __getattr__(self, name: str):  # batch_size, num_examples, ... of the wrapped loader
        return getattr(self.loader, name)


def file_transform(spec: AugmentSpec, size: int, mean: Sequence[float], std: Sequence[float]) -> T.Compose:
    """Training transform when ``spec`` asks for augmentation, else the evaluation transform."""
    if spec.crop_pad > 0 or spec.hflip:
        steps = [T.RandomResizedCrop(size), T.RandomHorizontalFlip()]
    else:
        steps = [T.Resize(round(size / CENTER_CROP_FRACTION)), T.CenterCrop(size)]
    return T.Compose([*steps, T.ToTensor(), T.Normalize(mean, std)])
