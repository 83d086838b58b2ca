"""Training augmentations as batched tensor ops, plus the per-image Cutout of the torchvision path.

Definitions (the same for both loaders; tests check each against an independent computation):

* ``basic``: pad ``pad`` pixels by **reflection** (numpy/torch ``reflect``: the edge pixel is not repeated,
  as the official SAM code), take a random crop of the original size (offsets uniform over the
  ``(2*pad+1)**2`` positions), then flip horizontally with probability 1/2 (not for digits).
* ``cutout`` (DeVries & Taylor, 2017): ``basic``, then an ``s x s`` square, its centre uniform over the
  image's pixels and the square clipped at the borders (rows ``[cy - s//2, cy - s//2 + s)``), so the
  zeroed area is often smaller than ``s*s``. It is applied after normalisation (the mask multiplies the
  normalised image), so cut pixels hold the dataset mean. ``cutout_mode`` says how many squares:
  ``per_batch`` (default, the official SAM code: one location per batch, applied after batching, the same
  square on every image of the global batch; :class:`BatchCutoutLoader`) or ``per_image`` (DeVries &
  Taylor: one location per image, drawn with the epoch's other per-example numbers).
* ``autoaugment``: an AutoAugment policy (``data.autoaugment``; ``autoaugment_policy``: ``official``, the
  SAM code's 95 CIFAR sub-policies with its ImageNet constants and gray fill, or ``torchvision``'s
  ``AutoAugment(CIFAR10)``) on the un-padded uint8 image, then ``basic``, in that order as the official
  SAM code. ``autoaugment_crop_flip=False`` drops the ``basic`` step: the official ``aa-only`` mode, whose
  help text says it "should be preferred for SVHN". The paper does not say whether its CIFAR AA column also
  used cutout; our default is no cutout (the official code treats cutout as a separate, off-by-default
  flag), and ``autoaugment_cutout=True`` adds it (after crop and flip), as in Cubuk et al.'s setup.

The tensor loader stores each pixel's channels packed in one int32 (``pack_pixels``), so a crop is a
single ``index_select`` of 4-byte elements. Its AutoAugment is batched (``data.autoaugment``): every
image gets its own sub-policy, probabilities and signs (drawn per epoch in ``data.sampling``), applied by
groups of images sharing an op call.
"""

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from data.autoaugment import AUTOAUGMENT_POLICIES
from data.seeding import STREAM_BATCH_CUTOUT, derive_seed

AUGMENTS = ("none", "basic", "cutout", "autoaugment")
CUTOUT_MODES = ("per_batch", "per_image")


@dataclass(frozen=True)
class AugmentSpec:
    """What a training loader does to each image (all off = evaluation)."""

    crop_pad: int = 0  # reflect-pad then random crop of the original size; 0 = no crop
    hflip: bool = False
    cutout_size: int = 0  # side of the cutout square; 0 = no cutout
    cutout_mode: str = "per_batch"  # CUTOUT_MODES; the loaders cut per image only for "per_image"
    autoaugment: bool = False
    autoaugment_policy: str = "official"  # data.autoaugment.AUTOAUGMENT_POLICIES
    autoaugment_dataset: str = "cifar10"  # whose sub-policies: svhn has its own, everything else CIFAR's


def make_spec(
    augment: str,
    *,
    pad: int,
    hflip: bool,
    cutout_size: int,
    cutout_mode: str = "per_batch",
    autoaugment_cutout: bool = False,
    autoaugment_policy: str = "official",
    autoaugment_dataset: str = "cifar10",
    autoaugment_crop_flip: bool = True,
) -> AugmentSpec:
    """Turn an ``augment`` name into an AugmentSpec (see the module docstring for the definitions)."""
    if augment not in AUGMENTS:
        raise ValueError(f"augment={augment!r} is not one of {AUGMENTS}")
    if cutout_mode not in CUTOUT_MODES:
        raise ValueError(f"dataset.cutout_mode={cutout_mode!r} is not one of {CUTOUT_MODES}")
    if autoaugment_policy not in AUTOAUGMENT_POLICIES:
        raise ValueError(
            f"dataset.autoaugment_policy={autoaugment_policy!r} is not one of {AUTOAUGMENT_POLICIES}"
        )
    if cutout_size < 0:
        raise ValueError(f"cutout_size={cutout_size} must be >= 0")
    if augment == "none":
        return AugmentSpec()
    if augment == "basic":
        return AugmentSpec(crop_pad=pad, hflip=hflip)
    if augment == "cutout":
        if cutout_size == 0:
            raise ValueError("augment='cutout' needs cutout_size > 0")
        return AugmentSpec(crop_pad=pad, hflip=hflip, cutout_size=cutout_size, cutout_mode=cutout_mode)
    return AugmentSpec(
        crop_pad=pad if autoaugment_crop_flip else 0,
        hflip=hflip and autoaugment_crop_flip,
        cutout_size=cutout_size if autoaugment_cutout else 0,
        cutout_mode=cutout_mode,
        autoaugment=True,
        autoaugment_policy=autoaugment_policy,
        autoaugment_dataset=autoaugment_dataset,
    )


def reflect_index(i: torch.Tensor, n: int) -> torch.Tensor:
    """Map [-(n-1), 2n-2] onto [0, n) by reflection, the edge not repeated (-1 -> 1, n -> n-2)."""
    i = i.abs()
    return torch.where(i >= n, 2 * (n - 1) - i, i)


def pack_pixels(images: torch.Tensor) -> torch.Tensor:
    """(N, H, W, C) uint8 with C <= 4 -> (N, H, W) int32, one pixel's channels (zero-padded to 4) per element.

    Gathering one 4-byte element per pixel is several times faster than gathering 3-byte rows.
    """
    n, h, w, c = images.shape
    if c > 4:
        raise ValueError(f"pack_pixels handles at most 4 channels, got {c}")
    padded = torch.zeros((n, h, w, 4), dtype=torch.uint8, device=images.device)
    padded[..., :c] = images
    return padded.view(torch.int32).reshape(n, h, w)


def unpack_pixels(packed: torch.Tensor, channels: int) -> torch.Tensor:
    """Inverse of ``pack_pixels``: (..., H, W) int32 -> (..., H, W, channels) uint8 (a view)."""
    return packed.unsqueeze(-1).view(torch.uint8)[..., :channels]


def crop_flip(
    src: torch.Tensor,
    index: torch.Tensor,
    crop_y: torch.Tensor,
    crop_x: torch.Tensor,
    flip: torch.Tensor,
    pad: int,
) -> torch.Tensor:
    """Reflect-pad, crop and flip ``src[index]`` in one gather, without materialising the padded images.

    src: (N, H, W), one element per pixel (e.g. packed by ``pack_pixels``); index, crop_y, crop_x, flip:
    (B,). Output pixel (i, j) of image b is padded pixel (crop_y + i, crop_x + j') with j' = W-1-j when
    flipped, i.e. source pixel (reflect(crop_y + i - pad), reflect(crop_x + j' - pad)). Returns (B, H, W).
    """
    n, h, w = src.shape
    rows = torch.arange(h, device=src.device)
    cols = torch.arange(w, device=src.device)
    r = reflect_index(crop_y[:, None] + rows - pad, h)  # (B, H)
    col = crop_x[:, None] + cols - pad  # (B, W)
    col = reflect_index(torch.where(flip[:, None], col.flip(1), col), w)
    flat = (index[:, None, None] * h + r[:, :, None]) * w + col[:, None, :]  # (B, H, W)
    return src.reshape(n * h * w).index_select(0, flat.reshape(-1)).view(flat.shape)


def normalise(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """(B, H, W, C) uint8 (any strides) -> (B, C, H, W) float32 ``(x/255 - mean) / std`` (mean, std: (C,))."""
    out = x.permute(0, 3, 1, 2).to(torch.float32, memory_format=torch.contiguous_format)
    scale = (1.0 / (255.0 * std)).view(1, -1, 1, 1)
    return out.mul_(scale).sub_((mean / std).view(1, -1, 1, 1))


def cutout_keep_mask(cy: torch.Tensor, cx: torch.Tensor, size: int, h: int, w: int) -> torch.Tensor:
    """(B, 1, H, W) float mask, 0 inside each image's clipped ``size x size`` square, built by comparisons.

    A pixel is kept when its row or its column is outside the square: max(row_out, col_out), broadcast.
    """
    rows = torch.arange(h, device=cy.device)
    cols = torch.arange(w, device=cy.device)
    y0 = (cy - size // 2)[:, None]
    x0 = (cx - size // 2)[:, None]
    row_out = ((rows < y0) | (rows >= y0 + size)).to(torch.float32)  # (B, H)
    col_out = ((cols < x0) | (cols >= x0 + size)).to(torch.float32)  # (B, W)
    return torch.maximum(row_out[:, None, :, None], col_out[:, None, None, :])


class Cutout:
    """Per-image cutout for the torchvision path: (C, H, W) normalised tensor -> copy with one square zeroed.

    Draws the centre from torch's global RNG (the torchvision path seeds it per example). A separate
    implementation (slicing) from ``cutout_keep_mask`` (comparisons), so each checks the other.
    """

    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        h, w = img.shape[-2:]
        cy = int(torch.randint(h, ()).item())
        cx = int(torch.randint(w, ()).item())
        y0, x0 = cy - self.size // 2, cx - self.size // 2
        out = img.clone()
        out[..., max(y0, 0) : max(y0 + self.size, 0), max(x0, 0) : max(x0 + self.size, 0)] = 0
        return out

    def __repr__(self) -> str:
        return f"Cutout(size={self.size})"


class BatchCutoutLoader:
    """The official cutout: one ``size x size`` location per global batch, applied after batching.

    Wraps a training loader of the protocol (its batches already augmented and normalised) and zeroes
    the same clipped square (``cutout_keep_mask``) on every image of a batch, as the SAM code's
    ``augmentation.cutout`` does after ``ds.batch``. The centre of global batch ``b`` of epoch ``e`` is
    drawn from its own stream, keyed by (seed, e): a pure function of (seed, epoch, b), so it is the same
    on every rank of a DDP run (each rank holds a slice of the one global batch), does not depend on
    where a run resumed, and leaves every other draw of the epoch untouched.
    """

    def __init__(self, loader, size: int, seed: int) -> None:
        if size < 1:
            raise ValueError(f"cutout_size={size} must be >= 1 for per-batch cutout")
        self.loader, self.size, self.seed = loader, int(size), int(seed)
        self.epoch, self.start_batch = 0, 0

    def __len__(self) -> int:
        return len(self.loader)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.loader.set_epoch(epoch, start_batch)  # validates start_batch
        self.epoch, self.start_batch = int(epoch), int(start_batch)

    def centres(self, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(cy, cx), each (batches per epoch,) int64: the centre of every global batch of this epoch."""
        gen = torch.Generator(device="cpu").manual_seed(
            derive_seed(self.seed, STREAM_BATCH_CUTOUT, self.epoch)
        )
        n = len(self.loader)
        return torch.randint(0, h, (n,), generator=gen), torch.randint(0, w, (n,), generator=gen)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        cy = cx = None
        for b, (x, y) in enumerate(self.loader, start=self.start_batch):
            h, w = x.shape[-2:]
            if cy is None:
                cy, cx = self.centres(h, w)
            keep = cutout_keep_mask(cy[b : b + 1].to(x.device), cx[b : b + 1].to(x.device), self.size, h, w)
            yield x.mul_(keep), y  # (B, C, H, W) * (1, 1, H, W): one square for the whole batch

    def __getattr__(self, name: str):  # batch_size, num_examples, ... of the wrapped loader
        return getattr(self.loader, name)
