"""Datasets and loaders for sam-repro: CIFAR-10/100, ImageNet, SVHN, Fashion-MNIST, the finetuning sets
and the embedded ``digits`` set.

``build_data(name, *, root, batch_size, ...) -> DataBundle`` is the entry point. Every loader follows
one protocol:

* ``for x, y in loader``: x float32 normalised (B, C, H, W) and y int64 (B,), both on the device;
* ``len(loader)``: batches per epoch; training loaders drop the last partial batch, evaluation
  loaders keep every example, in order, unaugmented;
* ``loader.set_epoch(epoch, start_batch=0)``: the epoch's order and augmentation become a pure function
  of (seed, epoch), and the next pass starts at batch ``start_batch`` (resuming mid-epoch);
* ``batch_size`` is global: under DDP rank r yields the r-th contiguous slice (batch_size // world_size)
  of every global batch, so the global batch does not depend on world_size. Evaluation shards are
  disjoint and cover the set.

Two implementations: ``TensorLoader`` (default for CIFAR and digits: the dataset on the device, batched
tensor augmentation) and ``TorchLoader`` (torchvision transforms in a DataLoader: ImageNet, and the
reference for CIFAR with ``loader="torchvision"``).
"""

from data.augment import AUGMENTS
from data.build import DATASET_AUGMENTS, DATASETS, LOADERS, DataBundle, Loader, build_data
from data.errors import DatasetNotFoundError

__all__ = [
    "AUGMENTS",
    "DATASETS",
    "DATASET_AUGMENTS",
    "LOADERS",
    "DataBundle",
    "DatasetNotFoundError",
    "Loader",
    "build_data",
]
