"""The reference loader: torchvision transforms on PIL images in a torch DataLoader with worker processes.

Used for ImageNet (which does not fit in memory) and, with ``loader="torchvision"``, for CIFAR/digits as
the reference the tensor loader is checked against. It follows the same loader protocol:

* the order (and under DDP each rank's contiguous shard of every global batch) comes from
  ``data.sampling``, exactly as in the tensor loader. We use our own batch sampler rather than
  ``DistributedSampler``: the latter shards by striding (rank r gets examples r, r+W, ...), pads the
  evaluation set with repeated examples and cannot start mid-epoch, while the contract asks for
  contiguous shards of a world-size-independent global batch, disjoint eval shards and ``start_batch``;
* every example is transformed under its own seed (drawn per epoch with the order), and the CPU
  generator's state is restored afterwards, so the training process's global RNG is untouched.
  Augmentation is then a function of (seed, epoch, position) alone: not of num_workers, world_size,
  or where a run resumed.
"""

from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision import transforms as T
from torchvision.datasets.folder import default_loader

from data.augment import AugmentSpec, Cutout
from data.autoaugment import AutoAugmentImage
from data.sampling import check_start_batch, draw_epoch, eval_batch_bounds, train_batch_bounds


class ArrayImages:
    """(N, H, W, C) uint8 array -> PIL images ("RGB" or, for one channel, "L")."""

    def __init__(self, images: np.ndarray) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> Image.Image:
        img = self.images[i]
        return Image.fromarray(img[:, :, 0] if img.shape[2] == 1 else img)  # 2-D uint8 -> "L", 3-D -> "RGB"


class FileImages:
    """Image file paths -> RGB PIL images (torchvision's default loader)."""

    def __init__(self, paths: Sequence[str]) -> None:
        self.paths = list(paths)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> Image.Image:
        return default_loader(self.paths[i])


class SeededTransformDataset(Dataset):
    """Key (index, sample_seed) -> (transform(image), label), the transform seeded per example."""

    def __init__(self, images: ArrayImages | FileImages, labels: np.ndarray, transform: Callable) -> None:
        self.images = images
        self.labels = np.asarray(labels, dtype=np.int64)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int]:
        index, sample_seed = key
        # Seed only the CPU generator, and restore it after: torch.random.fork_rng + torch.manual_seed does
        # the same but also touches every accelerator backend and costs ~50x more per image.
        state = torch.get_rng_state()
        torch.default_generator.manual_seed(sample_seed)
        try:
            x = self.transform(self.images[index])
        finally:
            torch.set_rng_state(state)
        return x, int(self.labels[index])


class PlanBatchSampler(Sampler[list[tuple[int, int]]]):
    """Yields this rank's batches as lists of (index, sample_seed), following ``data.sampling``."""

    def __init__(
        self, num_examples: int, batch_size: int, *, train: bool, seed: int, world_size: int, rank: int
    ):
        self.num_examples = num_examples
        self.train = train
        self.seed = seed
        plan = train_batch_bounds if train else eval_batch_bounds
        self.bounds = plan(num_examples, batch_size, world_size, rank)
        self.epoch = 0
        self.start_batch = 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch = int(epoch)
        self.start_batch = check_start_batch(start_batch, self.bounds)

    def __len__(self) -> int:
        return len(self.bounds) - self.start_batch

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        if not self.train:
            for lo, hi in self.bounds[self.start_batch :]:
                yield [(i, 0) for i in range(lo, hi)]
            return
        # Only the order and the per-example seeds are used here (fixed dummy shapes keep them reproducible).
        draws = draw_epoch(
            self.num_examples, seed=self.seed, epoch=self.epoch, image_hw=(1, 1), pad=0, num_aa_policies=1
        )
        perm, seeds = draws.perm.tolist(), draws.sample_seed.tolist()
        for lo, hi in self.bounds[self.start_batch :]:
            yield list(zip(perm[lo:hi], seeds[lo:hi], strict=True))


class TorchLoader:
    """Loader protocol around a DataLoader: moves batches to ``device`` (non-blocking from pinned memory)."""

    def __init__(
        self,
        dataset: SeededTransformDataset,
        sampler: PlanBatchSampler,
        *,
        device: torch.device,
        num_workers: int,
    ) -> None:
        self.device = device
        self.sampler = sampler
        self.num_examples = len(dataset)
        pin = device.type == "cuda"  # pinning only helps host-to-GPU copies
        self._loader = DataLoader(
            dataset,
            batch_sampler=sampler,
            num_workers=num_workers,
            pin_memory=pin,
            persistent_workers=num_workers > 0,
            # Without its own generator, every new iterator draws its workers' base seed from the global RNG,
            # and the model's initialisation / dropout would depend on the loader type.
            generator=torch.Generator(),
        )

    def __len__(self) -> int:
        return len(self.sampler.bounds)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.sampler.set_epoch(epoch, start_batch)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for x, y in self._loader:
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)


def array_transform(spec: AugmentSpec, mean: Sequence[float], std: Sequence[float], size: int) -> T.Compose:
    """PIL-path transforms for CIFAR/digits arrays, in the tensor path's order (see data.augment)."""
    steps: list = []
    if spec.autoaugment and spec.autoaugment_policy == "torchvision":
        which = (
            T.AutoAugmentPolicy.SVHN if spec.autoaugment_dataset == "svhn" else T.AutoAugmentPolicy.CIFAR10
        )
        steps.append(T.AutoAugment(which))  # on PIL images: torchvision's own ops
    elif spec.autoaugment:
        steps += [
            T.PILToTensor(),
            AutoAugmentImage((size, size), "official", spec.autoaugment_dataset),
            T.ToPILImage(),
        ]
    if spec.crop_pad > 0:
        steps.append(T.RandomCrop(size, padding=spec.crop_pad, padding_mode="reflect"))
    if spec.hflip:
        steps.append(T.RandomHorizontalFlip())
    steps += [T.ToTensor(), T.Normalize(mean, std)]
    if spec.cutout_size > 0 and spec.cutout_mode == "per_image":  # per batch: BatchCutoutLoader
        steps.append(Cutout(spec.cutout_size))
    return T.Compose(steps)
