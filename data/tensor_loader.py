"""The fast loader: the whole uint8 dataset as one tensor on the training device, augmented per batch.

In the style of airbench: no worker processes and no per-image Python. The images are stored with each
pixel's channels packed in one int32, and each batch is one gather of them (reflect padding, crop and
flip folded into the gather's indices), one normalisation and, for per-image cutout, one mask built by
broadcasting comparisons (per-batch cutout is ``data.augment.BatchCutoutLoader`` around this loader).
AutoAugment, when asked for, is applied per batch by ``BatchedAutoAugment`` (groups of images sharing an
op call; see data.autoaugment).

Order and augmentation come from ``data.sampling``: a pure function of (seed, epoch), independent of
world_size and of the device (the draws are made on the CPU and copied over once per epoch). On a
CPU run the tensors simply live on the CPU.
"""

from collections.abc import Iterator

import torch

from data.augment import (
    AugmentSpec,
    crop_flip,
    cutout_keep_mask,
    normalise,
    pack_pixels,
    unpack_pixels,
)
from data.autoaugment import BatchedAutoAugment
from data.sampling import check_start_batch, draw_epoch, eval_batch_bounds, train_batch_bounds


class TensorLoader:
    """Loader protocol over in-memory images: yields (x float32 (B, C, H, W), y int64 (B,)) on the device.

    images: (N, H, W, C) uint8 and labels: (N,) int64, both already on the device. ``train=True``
    shuffles, augments with ``spec`` and drops the last partial batch; ``train=False`` keeps every example
    in order, unaugmented. ``batch_size`` is global; this rank yields its contiguous shard of each batch.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        batch_size: int,
        mean: torch.Tensor,
        std: torch.Tensor,
        train: bool,
        spec: AugmentSpec,
        seed: int = 0,
        world_size: int = 1,
        rank: int = 0,
    ) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4 or labels.shape != images.shape[:1]:
            raise ValueError(
                f"expected uint8 images (N, H, W, C) and labels (N,), got {images.shape} {images.dtype}"
                f" and {tuple(labels.shape)}"
            )
        self.packed = pack_pixels(images)  # (N, H, W) int32
        self.channels = images.shape[3]
        self.labels = labels
        self.device = images.device
        self.mean = mean.to(self.device, torch.float32)
        self.std = std.to(self.device, torch.float32)
        self.train = train
        self.spec = spec if train else AugmentSpec()
        self.seed = seed
        self.global_batch_size = batch_size
        self.num_examples = images.shape[0]
        self.image_hw = (images.shape[1], images.shape[2])
        self._autoaugment = BatchedAutoAugment(
            self.image_hw, self.spec.autoaugment_policy, self.spec.autoaugment_dataset
        )
        plan = train_batch_bounds if train else eval_batch_bounds
        self._bounds = plan(self.num_examples, batch_size, world_size, rank)
        self.epoch = 0
        self.start_batch = 0
        self.batch_indices: torch.Tensor | None = None  # dataset rows of the last training batch yielded

    def __len__(self) -> int:
        return len(self._bounds)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Make the order and augmentation those of (seed, epoch); the next pass starts at ``start_batch``."""
        self.epoch = int(epoch)
        self.start_batch = check_start_batch(start_batch, self._bounds)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        c = self.channels
        if not self.train:
            for lo, hi in self._bounds[self.start_batch :]:
                yield normalise(unpack_pixels(self.packed[lo:hi], c), self.mean, self.std), self.labels[lo:hi]
            return
        spec = self.spec
        draws = draw_epoch(
            self.num_examples,
            seed=self.seed,
            epoch=self.epoch,
            image_hw=self.image_hw,
            pad=spec.crop_pad,
            num_aa_policies=self._autoaugment.num_policies,
        )
        # One host-to-device copy per epoch of what the batches need.
        perm = draws.perm.to(self.device)
        crop_y, crop_x = draws.crop_y.to(self.device), draws.crop_x.to(self.device)
        flip = (draws.flip if spec.hflip else torch.zeros_like(draws.flip)).to(self.device)
        cut_y, cut_x = draws.cutout_y.to(self.device), draws.cutout_x.to(self.device)
        h, w = self.image_hw
        for lo, hi in self._bounds[self.start_batch :]:
            index = perm[lo:hi]
            src = self.packed
            if spec.autoaugment:
                # AutoAugment first, on the un-padded images (B, C, H, W) uint8, then crop from its output.
                batch = unpack_pixels(src[index], c).permute(0, 3, 1, 2)
                params = draws.aa_policy[lo:hi], draws.aa_probs[lo:hi], draws.aa_signs[lo:hi]
                centres = draws.aa_cutout_y[lo:hi], draws.aa_cutout_x[lo:hi]
                src = pack_pixels(self._autoaugment(batch, *params, *centres).permute(0, 2, 3, 1))
                index = torch.arange(hi - lo, device=self.device)
            if spec.crop_pad > 0 or spec.hflip:
                x = crop_flip(src, index, crop_y[lo:hi], crop_x[lo:hi], flip[lo:hi], spec.crop_pad)
            else:
                x = src[index]
            x = normalise(unpack_pixels(x, c), self.mean, self.std)
            if spec.cutout_size > 0 and spec.cutout_mode == "per_image":  # per batch: BatchCutoutLoader
                x.mul_(cutout_keep_mask(cut_y[lo:hi], cut_x[lo:hi], spec.cutout_size, h, w))
            self.batch_indices = perm[lo:hi]  # SAF keeps past outputs per example (sam/variants/saf.py)
            yield x, self.labels[perm[lo:hi]]
