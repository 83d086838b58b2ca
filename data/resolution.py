"""Inputs at the pretrained model's resolution (finetuning: CIFAR at 600x600 for EfficientNet-b7, say).

``ResizedLoader`` wraps any loader of the protocol and resizes every (already augmented, normalised) batch
on the device, as the SAM code does for CIFAR at an EfficientNet's resolution (``dataset_source.py``:
after batching, normalisation and cutout, ``tf.compat.v1.image.resize_bicubic``). Resizing is linear
with weights summing to one, so it commutes with normalisation; the 32x32 augmentation (crop, flip,
AutoAugment, cutout) happens at the native resolution. How it resizes is ``dataset.preprocessing``:

* ``official``: TF1's legacy ``resize_bicubic`` (``align_corners=False``, ``half_pixel_centers=False``):
  output pixel ``d`` samples input coordinate ``d * in / out`` (no half-pixel shift), with the cubic
  convolution kernel at ``a = -0.75``, its fractional offset quantised to 1/1024 (TF's coefficient
  table), taps clamped at the border, no antialiasing. Written here as two (out, in) matrices, from the
  rules of TF's ``resize_bicubic_op.cc``; checked once against TensorFlow 2.21's
  ``tf.compat.v1.image.resize_bicubic`` (max difference 3e-6 on normalised 32 -> 600, 45, 224 and 16 px
  batches; TF is not a dependency, so the test suite checks a loop written from the same rules).
* ``torchvision``: bilinear, half-pixel centres, no antialiasing (``F.interpolate``), as torchvision's
  default resize and our pipeline before the official one was written.

Image-file datasets (ImageNet, the finetuning sets) are decoded at ``size`` by their own transform
(``data.imagenet.imagenet_transform``), not resized here.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

RESIZE_METHODS = ("official", "torchvision")  # the values of dataset.preprocessing
TF_CUBIC_A = -0.75  # TF1's legacy bicubic kernel (Keys' a = -0.5 is used only with half_pixel_centers)
TF_TABLE_SIZE = 1024  # TF quantises the fractional offset to 1/1024


def _cubic(t: np.ndarray, a: float = TF_CUBIC_A) -> np.ndarray:
    """The cubic convolution kernel at distances ``t`` >= 0 (float32, as TF's table)."""
    t = np.abs(t).astype(np.float32)
    near = ((a + 2) * t - (a + 3)) * t * t + 1  # |t| <= 1
    far = ((a * t - 5 * a) * t + 8 * a) * t - 4 * a  # 1 < |t| < 2
    return np.where(t <= 1, near, np.where(t < 2, far, 0)).astype(np.float32)


@lru_cache(maxsize=16)
def tf1_bicubic_matrix(in_size: int, out_size: int) -> torch.Tensor:
    """(out_size, in_size) float32 W with ``resize(x) = W @ x`` along one axis, as TF1's resize_bicubic."""
    scale = np.float32(in_size) / np.float32(out_size)
    src = np.arange(out_size, dtype=np.float32) * scale  # legacy scaler: no half-pixel centres
    base = np.floor(src).astype(np.int64)
    offset = np.rint((src - base) * TF_TABLE_SIZE).astype(np.int64)  # lrintf: round half to even
    t = offset.astype(np.float64) / TF_TABLE_SIZE
    weights = np.stack([_cubic(1 + t), _cubic(t), _cubic(1 - t), _cubic(2 - t)], axis=1)  # (out, 4)
    taps = np.clip(base[:, None] + np.arange(-1, 3), 0, in_size - 1)  # (out, 4), border clamped
    matrix = np.zeros((out_size, in_size), dtype=np.float32)
    np.add.at(matrix, (np.repeat(np.arange(out_size), 4), taps.ravel()), weights.ravel())
    return torch.from_numpy(matrix)


def resize_batch(x: torch.Tensor, size: int, method: str = "official") -> torch.Tensor:
    """(B, C, H, W) float -> (B, C, size, size) by ``method`` (see the module docstring)."""
    if method not in RESIZE_METHODS:
        raise ValueError(f"dataset.preprocessing={method!r} is not one of {RESIZE_METHODS}")
    if method == "torchvision":
        return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    h, w = x.shape[-2:]
    rows = tf1_bicubic_matrix(h, size).to(x.device, x.dtype)  # (size, H)
    cols = tf1_bicubic_matrix(w, size).to(x.device, x.dtype)  # (size, W)
    return rows @ x @ cols.T  # (size, H) @ (B, C, H, W) @ (W, size)


class ResizedLoader:
    """A loader whose batches come out at ``size`` x ``size`` (``method``: official | torchvision)."""

    def __init__(self, loader, size: int, method: str = "official") -> None:
        if size < 1:
            raise ValueError(f"image_size={size} must be a positive integer")
        if method not in RESIZE_METHODS:
            raise ValueError(f"dataset.preprocessing={method!r} is not one of {RESIZE_METHODS}")
        self.loader, self.size, self.method = loader, int(size), method

    def __len__(self) -> int:
        return len(self.loader)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.loader.set_epoch(epoch, start_batch)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for x, y in self.loader:
            yield resize_batch(x, self.size, self.method), y

    def __getattr__(self, name: str):  # batch_size, num_examples, ... of the wrapped loader
        return getattr(self.loader, name)


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
