"""``build_data``: one call from a dataset name and its options to train / val / test loaders.

Order of operations (each step seeded by the run seed, each in its own module):
load the official train and test splits -> carve the validation split out of train (clean labels) ->
corrupt a fraction of the remaining training labels (label noise, ``label_noise_protocol``) -> wrap each
split in a loader (per-batch cutout and resizing wrap the training loader, in the official code's order:
augment, batch, normalise, cutout, resize).
"""

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from data.augment import AUGMENTS, CUTOUT_MODES, AugmentSpec, BatchCutoutLoader, make_spec
from data.cifar import CIFAR_SPECS, load_cifar
from data.class_subset import check_classes, select_classes
from data.digits import digits_stats, load_digits_split
from data.finegrained import FINEGRAINED_DATASETS, load_finegrained
from data.fingerprint import data_fingerprint
from data.imagenet import (
    IMAGENET_MEAN,
    IMAGENET_SIZE,
    IMAGENET_STD,
    PREPROCESSINGS,
    imagenet_transform,
    load_imagenet_folders,
)
from data.label_noise import LABEL_NOISE_PROTOCOLS, noisy_labels
from data.resolution import RepeatedLoader, ResizedLoader
from data.splits import train_val_split
from data.standin import is_standin
from data.svhn_fashion import (
    FASHION_CLASSES,
    FASHION_MEAN,
    FASHION_STD,
    SVHN_MEAN,
    SVHN_STD,
    load_fashion_mnist,
    load_svhn,
)
from data.tensor_loader import TensorLoader
from data.torch_loader import (
    ArrayImages,
    FileImages,
    PlanBatchSampler,
    SeededTransformDataset,
    TorchLoader,
    array_transform,
)

DATASETS = ("cifar10", "cifar100", "imagenet", "digits", "svhn", "fashion_mnist", *FINEGRAINED_DATASETS)
LOADERS = ("auto", "tensor", "torchvision")
# Flips change digits (and the official ImageNet recipe has no cutout/AutoAugment here), so fewer choices.
DATASET_AUGMENTS = {
    "cifar10": AUGMENTS,
    "cifar100": AUGMENTS,
    "digits": ("none", "basic"),
    "imagenet": ("none", "basic"),
    "svhn": AUGMENTS,  # Table 5: basic, and its SVHN AutoAugment policy + cutout
    "fashion_mnist": ("none", "basic", "cutout"),  # Table 5's "auto augment" row is cutout only
    **{name: ("none", "basic") for name in FINEGRAINED_DATASETS},
}
FINETUNE_SIZE = 224  # default resolution of the finetuning datasets (dataset.image_size)


class Loader(Protocol):
    """What the training loop relies on (see data/__init__.py)."""

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...
    def __len__(self) -> int: ...
    def set_epoch(self, epoch: int, start_batch: int = 0) -> None: ...


@dataclass
class DataBundle:
    train: Loader
    test: Loader
    val: Loader | None  # None when val_fraction == 0
    num_classes: int
    in_chans: int
    image_size: int
    num_train: int  # training examples (after the validation split)
    label_noise_realised: float  # fraction of training labels that differ from the clean ones (any protocol)
    mean: tuple[float, ...] = field(default=())  # normalisation, per channel, in [0, 1] units
    std: tuple[float, ...] = field(default=())
    class_names: tuple[str, ...] = field(default=())
    fingerprint: dict = field(default_factory=dict)  # data/fingerprint.py: counts + content hash


@dataclass
class _Raw:
    """A dataset before splitting: arrays (CIFAR, digits) or image files (ImageNet)."""

    train_images: np.ndarray | list[str]
    train_labels: np.ndarray
    test_images: np.ndarray | list[str]
    test_labels: np.ndarray
    num_classes: int
    in_chans: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: tuple[str, ...]
    pad: int  # reflect padding of the "basic" random crop
    hflip: bool


def _load_table5(name: str, root: str | Path, download: bool, svhn_extra: bool) -> _Raw:
    """SVHN / Fashion-MNIST arrays; crop (4 px reflect) and flip as the official code's basic augmentation."""
    if name == "svhn":
        train_x, train_y, test_x, test_y = load_svhn(root, download=download, extra=svhn_extra)
        names = tuple(str(d) for d in range(10))
        return _Raw(train_x, train_y, test_x, test_y, 10, 3, 32, SVHN_MEAN, SVHN_STD, names, 4, True)
    train_x, train_y, test_x, test_y = load_fashion_mnist(root, download=download)
    return _Raw(
        train_x, train_y, test_x, test_y, 10, 1, 28, FASHION_MEAN, FASHION_STD, FASHION_CLASSES, 4, True
    )


def _load(
    name: str, root: str | Path, download: bool, image_size: int | None = None, svhn_extra: bool = True
) -> _Raw:
    if name in FINEGRAINED_DATASETS:  # ImageNet's file pipeline at their size (App. C.2)
        f = load_finegrained(name, root, download)
        size = image_size or FINETUNE_SIZE
        return _Raw(
            f.train_paths, f.train_labels, f.test_paths, f.test_labels, len(f.class_names), 3, size,
            IMAGENET_MEAN, IMAGENET_STD, f.class_names, 0, True,
        )  # fmt: skip
    if name in CIFAR_SPECS:
        spec = CIFAR_SPECS[name]
        train_x, train_y, names = load_cifar(spec, root, train=True, download=download)
        test_x, test_y, _ = load_cifar(spec, root, train=False, download=False)
        return _Raw(
            train_x, train_y, test_x, test_y, spec.num_classes, 3, 32, spec.mean, spec.std, names, 4, True
        )
    if name in ("svhn", "fashion_mnist"):
        return _load_table5(name, root, download, svhn_extra)
    if name == "digits":
        train_x, train_y, test_x, test_y = load_digits_split()
        mean, std = digits_stats(train_x)
        names = tuple(str(d) for d in range(10))
        # 1-px reflect crop and no flip: a mirrored 2 or 5 is not a 2 or 5.
        return _Raw(train_x, train_y, test_x, test_y, 10, 1, 8, mean, std, names, 1, False)
    train, val = load_imagenet_folders(root)  # image_size: the same pipeline at the model's resolution
    return _Raw(
        [p for p, _ in train.samples],
        np.asarray(train.targets, dtype=np.int64),
        [p for p, _ in val.samples],
        np.asarray(val.targets, dtype=np.int64),
        len(train.classes),
        3,
        image_size or IMAGENET_SIZE,
        IMAGENET_MEAN,
        IMAGENET_STD,
        tuple(train.classes),
        0,
        True,
    )


def _select(raw: _Raw, classes: Sequence[int] | None) -> _Raw:
    """Only ``classes``, relabelled 0..k-1 in that order (transfer to held-out classes), or all of them."""
    if classes is None:
        return raw
    kept = check_classes(classes, raw.num_classes)
    train_x, train_y = select_classes(raw.train_images, raw.train_labels, kept)
    test_x, test_y = select_classes(raw.test_images, raw.test_labels, kept)
    names = tuple(raw.class_names[c] for c in kept) if raw.class_names else ()
    return replace(
        raw,
        train_images=train_x,
        train_labels=train_y,
        test_images=test_x,
        test_labels=test_y,
        num_classes=len(kept),
        class_names=names,
    )


@dataclass(frozen=True)
class DatasetArrays:
    """A whole in-memory dataset (digits, CIFAR): uint8 (N, H, W, C) images, int64 labels, normalisation."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: tuple[str, ...]


def load_arrays(
    name: str, *, root: str | Path, download: bool = False, classes: Sequence[int] | None = None
) -> DatasetArrays:
    """The official train / test splits of an in-memory dataset, unaugmented and in file order.

    For analysis (scripts/evaluate.py: probes, corruptions), which needs every image once, in order,
    before normalisation. Image-file datasets (ImageNet, the finetuning sets) are refused by name.
    """
    _check_choice("dataset", name, DATASETS)
    if name == "imagenet" or name in FINEGRAINED_DATASETS:
        raise ValueError(f"load_arrays reads in-memory datasets (digits, cifar10, cifar100), not {name!r}")
    raw = _select(_load(name, root, download), classes)
    return DatasetArrays(
        raw.train_images, raw.train_labels, raw.test_images, raw.test_labels, raw.num_classes,
        tuple(raw.mean), tuple(raw.std), raw.class_names,
    )  # fmt: skip


def _subset(images: np.ndarray | list[str], index: np.ndarray) -> np.ndarray | list[str]:
    return images[index] if isinstance(images, np.ndarray) else [images[i] for i in index]


def _workers(requested: int) -> int:
    """Never more workers than CPUs this process may use (SLURM binds tasks to a subset)."""
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, min(requested, available))


def _check_choice(what: str, value: object, choices: tuple) -> None:
    if value not in choices:
        raise ValueError(f"{what}={value!r} is not one of {choices}")


def build_data(
    name: str,
    *,
    root: str | Path,
    batch_size: int,
    eval_batch_size: int | None = None,
    augment: str = "basic",
    cutout_size: int = 16,
    cutout_mode: str = "per_batch",
    label_noise: float = 0.0,
    label_noise_protocol: str = "uniform",
    val_fraction: float = 0.0,
    seed: int = 0,
    device: str | torch.device = "cpu",
    loader: str = "auto",
    num_workers: int = 2,
    world_size: int = 1,
    rank: int = 0,
    download: bool = True,
    autoaugment_cutout: bool = False,
    autoaugment_policy: str = "official",
    autoaugment_crop_flip: bool = True,
    preprocessing: str = "official",
    svhn_extra: bool = True,
    classes: Sequence[int] | None = None,
    image_size: int | None = None,
    train_repeats: int = 1,
) -> DataBundle:
    """Build the loaders of ``name`` (see data/__init__.py for the protocol and the choices)."""
    _check_choice("dataset", name, DATASETS)
    _check_choice(f"augment (for {name})", augment, DATASET_AUGMENTS[name])
    _check_choice("loader", loader, LOADERS)
    _check_choice("dataset.preprocessing", preprocessing, PREPROCESSINGS)
    _check_choice("dataset.cutout_mode", cutout_mode, CUTOUT_MODES)
    _check_choice("label_noise_protocol", label_noise_protocol, LABEL_NOISE_PROTOCOLS)
    if (name == "imagenet" or name in FINEGRAINED_DATASETS) and loader == "tensor":
        raise ValueError(
            f"loader='tensor' keeps the whole dataset in memory; for {name} use 'auto' or 'torchvision'"
        )
    if image_size is not None and (
        isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1
    ):
        raise ValueError(f"image_size={image_size!r} must be a positive integer or null (native)")
    if not 0.0 <= label_noise < 1.0:
        raise ValueError(f"label_noise={label_noise} must be in [0, 1)")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction={val_fraction} must be in [0, 1)")
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(
            f"need world_size >= 1 and 0 <= rank < world_size, got world_size={world_size}, rank={rank}"
        )
    if batch_size < 1 or batch_size % world_size:
        raise ValueError(
            f"batch_size={batch_size} (global) must be a positive multiple of world_size={world_size}"
        )
    eval_batch_size = batch_size if eval_batch_size is None else eval_batch_size
    if eval_batch_size < 1:
        raise ValueError(f"eval_batch_size={eval_batch_size} must be positive")
    if seed < 0:
        raise ValueError(f"seed={seed} must be a non-negative integer")
    if num_workers < 0:
        raise ValueError(f"num_workers={num_workers} must be >= 0")

    raw = _select(_load(name, root, download, image_size, svhn_extra), classes)
    train_idx, val_idx = train_val_split(len(raw.train_labels), val_fraction, seed)
    clean = raw.train_labels[train_idx]
    noisy = noisy_labels(clean, label_noise, raw.num_classes, seed, label_noise_protocol)
    if batch_size > len(noisy):
        raise ValueError(f"batch_size={batch_size} is larger than the {len(noisy)} training examples")
    spec = make_spec(
        augment,
        pad=raw.pad,
        hflip=raw.hflip,
        cutout_size=cutout_size,
        cutout_mode=cutout_mode,
        autoaugment_cutout=autoaugment_cutout,
        autoaugment_policy=autoaugment_policy,
        autoaugment_dataset=name,
        autoaugment_crop_flip=autoaugment_crop_flip,
    )
    dev = torch.device(device)
    use_tensor = isinstance(raw.train_images, np.ndarray) and loader in ("tensor", "auto")
    arrays = isinstance(raw.train_images, np.ndarray)  # image files get image_size in their transform
    resize = image_size if arrays and image_size not in (None, raw.image_size) else None

    def make(images: np.ndarray | list[str], labels: np.ndarray, train: bool, bs: int) -> Loader:
        made = _make(images, labels, train, bs)
        if train and spec.cutout_size > 0 and spec.cutout_mode == "per_batch":
            made = BatchCutoutLoader(made, spec.cutout_size, seed)  # after batching, before resizing
        return ResizedLoader(made, resize, preprocessing) if resize else made

    def _make(images: np.ndarray | list[str], labels: np.ndarray, train: bool, bs: int) -> Loader:
        shard = {"world_size": world_size, "rank": rank}
        if use_tensor:
            return TensorLoader(
                torch.from_numpy(np.ascontiguousarray(images)).to(dev),
                torch.from_numpy(labels).to(dev),
                batch_size=bs,
                mean=torch.tensor(raw.mean),
                std=torch.tensor(raw.std),
                train=train,
                spec=spec,
                seed=seed,
                **shard,
            )
        this_spec = spec if train else AugmentSpec()
        if isinstance(images, np.ndarray):
            source, transform = (
                ArrayImages(images),
                array_transform(this_spec, raw.mean, raw.std, raw.image_size),
            )
        else:
            source = FileImages(images)  # ImageNet and the finetuning sets: decoded at raw.image_size
            transform = imagenet_transform(this_spec, preprocessing, raw.image_size)
        dataset = SeededTransformDataset(source, labels, transform)
        sampler = PlanBatchSampler(len(labels), bs, train=train, seed=seed, **shard)
        return TorchLoader(dataset, sampler, device=dev, num_workers=_workers(num_workers))

    fingerprint = data_fingerprint(
        raw.train_images,
        raw.train_labels,
        raw.test_images,
        raw.test_labels,
        num_train=len(noisy),
        num_val=len(val_idx),
        num_classes=raw.num_classes,
    )
    if name != "digits" and is_standin(root):  # scripts/make_standin_data.py's files: say so in results.json
        fingerprint["standin"] = True
    val = None
    if len(val_idx):
        val = make(_subset(raw.train_images, val_idx), raw.train_labels[val_idx], False, eval_batch_size)
    train = make(_subset(raw.train_images, train_idx), noisy, True, batch_size)
    return DataBundle(
        train=RepeatedLoader(train, train_repeats) if train_repeats != 1 else train,
        test=make(raw.test_images, raw.test_labels, False, eval_batch_size),
        val=val,
        num_classes=raw.num_classes,
        in_chans=raw.in_chans,
        image_size=resize or raw.image_size,
        num_train=len(noisy),
        label_noise_realised=float(np.mean(noisy != clean)),
        mean=tuple(raw.mean),
        std=tuple(raw.std),
        class_names=raw.class_names,
        fingerprint=fingerprint,
    )
