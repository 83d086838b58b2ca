"""Which example sits at each position of an epoch, which rank sees it, and its augmentation draws.

Both loaders (tensor and torchvision) take their order and their random numbers from here, so:

* global batch ``b`` of epoch ``e`` is positions ``[b*B, (b+1)*B)`` of a permutation drawn from a CPU
  ``torch.Generator`` seeded by ``(seed, epoch)``; rank ``r`` of ``world_size`` takes the r-th contiguous
  slice of it. The global batch, and each example's augmentation, are therefore the same for any
  world_size, and a run resumed at batch k sees exactly batches k.. of the uninterrupted epoch;
* every per-example random number of the epoch (crop offsets, flips, cutout centres, AutoAugment choices,
  and a per-example seed for the torchvision path) is drawn once, for the whole epoch, in a fixed order,
  whatever the augmentation, so switching augmentation never changes the epoch order.

The generator runs on the CPU so that results do not depend on the device either.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from data.seeding import STREAM_EPOCH, derive_seed


@dataclass(frozen=True)
class EpochDraws:
    """Random numbers for one epoch; index ``j`` belongs to the example at position ``j`` (``perm[j]``)."""

    perm: torch.Tensor  # (N,) int64, dataset index at each position
    crop_y: torch.Tensor  # (N,) int64 in [0, 2*pad], top offset into the padded image
    crop_x: torch.Tensor  # (N,) int64 in [0, 2*pad]
    flip: torch.Tensor  # (N,) bool, horizontal flip
    cutout_y: torch.Tensor  # (N,) int64 in [0, H), cutout centre row
    cutout_x: torch.Tensor  # (N,) int64 in [0, W)
    aa_policy: torch.Tensor  # (N,) int64 in [0, num_aa_policies), AutoAugment sub-policy
    aa_probs: torch.Tensor  # (N, 2) float32 in [0, 1), compared with each op's probability
    aa_signs: torch.Tensor  # (N, 2) int64 in {0, 1}, 0 negates a signed magnitude (as torchvision)
    sample_seed: torch.Tensor  # (N,) int64, seeds the per-image transforms of the torchvision path
    aa_cutout_y: torch.Tensor  # (N,) int64 in [0, H), centre row of the official policy's Cutout op
    aa_cutout_x: torch.Tensor  # (N,) int64 in [0, W)


def draw_epoch(
    num_examples: int, *, seed: int, epoch: int, image_hw: tuple[int, int], pad: int, num_aa_policies: int
) -> EpochDraws:
    """Draw the whole epoch's order and augmentation parameters (cheap: a few tensors of length N)."""
    gen = torch.Generator(device="cpu").manual_seed(derive_seed(seed, STREAM_EPOCH, epoch))
    n = num_examples
    h, w = image_hw
    # The order of these draws is part of the format: never reorder, only append.
    perm = torch.randperm(n, generator=gen)
    crop_y = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    crop_x = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    flip = torch.randint(0, 2, (n,), generator=gen).bool()
    cutout_y = torch.randint(0, h, (n,), generator=gen)
    cutout_x = torch.randint(0, w, (n,), generator=gen)
    aa_policy = torch.randint(0, num_aa_policies, (n,), generator=gen)
    aa_probs = torch.rand((n, 2), generator=gen)
    aa_signs = torch.randint(0, 2, (n, 2), generator=gen)
    sample_seed = torch.randint(0, 2**62, (n,), generator=gen)
    aa_cutout_y = torch.randint(0, h, (n,), generator=gen)
    aa_cutout_x = torch.randint(0, w, (n,), generator=gen)
    return EpochDraws(
        perm,
        crop_y,
        crop_x,
        flip,
        cutout_y,
        cutout_x,
        aa_policy,
        aa_probs,
        aa_signs,
        sample_seed,
        aa_cutout_y,
        aa_cutout_x,
    )


def rank_slice(start: int, stop: int, world_size: int, rank: int) -> tuple[int, int]:
    """This rank's contiguous part of [start, stop); sizes differ by at most one (first ranks larger)."""
    base, extra = divmod(stop - start, world_size)
    lo = start + rank * base + min(rank, extra)
    return lo, lo + base + (1 if rank < extra else 0)


def train_batch_bounds(
    num_examples: int, batch_size: int, world_size: int, rank: int
) -> list[tuple[int, int]]:
    """Position ranges of this rank's shard of every full global batch (the last partial batch is dropped)."""
    return [
        rank_slice(b * batch_size, (b + 1) * batch_size, world_size, rank)
        for b in range(num_examples // batch_size)
    ]


def eval_batch_bounds(
    num_examples: int, batch_size: int, world_size: int, rank: int
) -> list[tuple[int, int]]:
    """Position ranges covering every example once across ranks; empty shards are skipped."""
    bounds = []
    for b in range(-(-num_examples // batch_size)):
        lo, hi = rank_slice(b * batch_size, min((b + 1) * batch_size, num_examples), world_size, rank)
        if hi > lo:
            bounds.append((lo, hi))
    return bounds


def check_start_batch(start_batch: int, bounds: Sequence[tuple[int, int]]) -> int:
    if not 0 <= start_batch <= len(bounds):
        raise ValueError(f"start_batch={start_batch} is outside [0, {len(bounds)}] (batches in this epoch)")
    return int(start_batch)
