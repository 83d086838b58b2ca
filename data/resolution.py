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


class RepeatedLoader:
    """One training "epoch" = ``repeats`` passes over the data (``dataset.train_repeats``).

    Finetuning is specified in steps (App. C.2: 5k steps at batch 1024), which on a small set is thousands
    of one-batch epochs, each followed by a test evaluation and a checkpoint. Pass ``p`` of epoch ``e`` is
    the wrapped loader's epoch ``e * repeats + p``, so order and augmentation stay a pure function of
    (seed, epoch) and a resume at any batch continues exactly.
    """

    def __init__(self, loader, repeats: int) -> None:
        if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
            raise ValueError(f"train_repeats={repeats!r} must be an integer >= 1")
        self.loader, self.repeats = loader, repeats
        self.epoch, self.start_batch = 0, 0

    def __len__(self) -> int:
        return self.repeats * len(self.loader)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        if not 0 <= start_batch <= len(self):
            raise ValueError(f"start_batch={start_batch} is outside [0, {len(self)}] (batches in this epoch)")
        self.epoch, self.start_batch = int(epoch), int(start_batch)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        per_pass = len(self.loader)
        first_pass, skip = divmod(self.start_batch, per_pass) if per_pass else (self.repeats, 0)
        for p in range(first_pass, self.repeats):
            self.loader.set_epoch(self.epoch * self.repeats + p, skip if p == first_pass else 0)
            yield from self.loader

    def __getattr__(self, name: str):
        return getattr(self.loader, name)
