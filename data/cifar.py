"""CIFAR-10 / CIFAR-100 through ``torchvision.datasets``: its ``.data`` / ``.targets`` feed our loaders.

On-disk format (https://www.cs.toronto.edu/~kriz/cifar.html), under ``root``:

* ``cifar-10-batches-py/``: ``data_batch_1`` .. ``data_batch_5``, ``test_batch``, ``batches.meta``;
* ``cifar-100-python/``: ``train``, ``test``, ``meta`` (torchvision reads the 100 fine labels).

torchvision reads the pickles (only read files you downloaded from the official source) and downloads
the archive when asked. What we add: a clear ``DatasetNotFoundError`` naming the directory, the missing
files and how to get them, instead of torchvision's "Dataset not found or corrupted". Like our reader
before it, we check that the files exist, not their md5 (torchvision's per-file check would reject the
small files the tests write in the real format); the archive's md5 is still checked on download.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torchvision import datasets

from data.cifar_files import find_bad_cifar_file
from data.errors import DatasetNotFoundError


@dataclass(frozen=True)
class CifarSpec:
    name: str
    dataset_class: type[datasets.CIFAR10]  # torchvision's reader (CIFAR100 subclasses CIFAR10)
    num_classes: int
    # Per-channel mean / std of the training images in [0, 1] (the standard published statistics).
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @property
    def dirname(self) -> str:
        return self.dataset_class.base_folder

    @property
    def url(self) -> str:
        return self.dataset_class.url

    @property
    def md5(self) -> str:
        return self.dataset_class.tgz_md5

    @property
    def files(self) -> tuple[str, ...]:
        cls = self.dataset_class
        return (*(f for f, _ in cls.train_list + cls.test_list), cls.meta["filename"])


CIFAR10 = CifarSpec(
    name="cifar10",
    dataset_class=datasets.CIFAR10,
    num_classes=10,
    mean=(0.4914, 0.4822, 0.4465),
    std=(0.2470, 0.2435, 0.2616),
)
CIFAR100 = CifarSpec(
    name="cifar100",
    dataset_class=datasets.CIFAR100,
    num_classes=100,
    mean=(0.5071, 0.4865, 0.4409),
    std=(0.2673, 0.2564, 0.2762),
)
CIFAR_SPECS = {spec.name: spec for spec in (CIFAR10, CIFAR100)}


def _files_present(cls: type[datasets.CIFAR10]) -> type[datasets.CIFAR10]:
    """``cls`` whose integrity check is "the file exists" (md5 None, which torchvision's check accepts)."""
    return type(
        cls.__name__,
        (cls,),
        {
            "train_list": [[f, None] for f, _ in cls.train_list],
            "test_list": [[f, None] for f, _ in cls.test_list],
            "meta": {**cls.meta, "md5": None},
        },
    )


def _missing(directory: Path, spec: CifarSpec) -> list[str]:
    return [f for f in spec.files if not (directory / f).is_file()]


def _not_found_message(directory: Path, spec: CifarSpec, missing: list[str], why: str) -> str:
    return (
        f"{spec.name}: {why}. Looked in {directory} for {', '.join(spec.files)}; "
        f"missing: {', '.join(missing)}. "
        f"Get the data with download=True (needs internet), or download {spec.url} (md5 {spec.md5}) and "
        f"extract it inside {directory.parent} so that {directory} holds those files, or point the config "
        f"at the directory that contains {spec.dirname}/ with dataset.root=..."
    )


def open_cifar(spec: CifarSpec, root: str | Path, *, train: bool, download: bool = True) -> datasets.CIFAR10:
    """torchvision's dataset for one split, downloading the archive first if files are missing and allowed."""
    root = Path(root).expanduser()
    directory = root / spec.dirname
    missing = _missing(directory, spec)
    if missing and download:
        try:
            spec.dataset_class(str(root), train=train, download=True)  # fetches and checks the archive
        except Exception as err:  # offline, bad checksum, unwritable root: all end the same way
            raise DatasetNotFoundError(
                _not_found_message(directory, spec, missing, f"the download failed ({err!r})")
            ) from err
        missing = _missing(directory, spec)
    if missing:
        why = "files are missing after the download" if download else "files are missing and download=False"
        raise DatasetNotFoundError(_not_found_message(directory, spec, missing, why))
    try:
        return _files_present(spec.dataset_class)(str(root), train=train, download=False)
    except Exception as err:  # torchvision names no file: find the bad one, say what is wrong with it
        bad = find_bad_cifar_file(directory, spec.files, spec.dataset_class.meta["filename"])
        if bad is None:
            raise
        raise ValueError(f"{spec.name}: {bad}; re-download or re-extract the official files") from err


def load_cifar(
    spec: CifarSpec, root: str | Path, *, train: bool, download: bool = True
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """One whole split: images (N, 32, 32, 3) uint8 (H, W, RGB), labels (N,) int64 in [0, num_classes),
    and the class names (from ``batches.meta`` / ``meta``)."""
    dataset = open_cifar(spec, root, train=train, download=download)
    images = np.ascontiguousarray(dataset.data, dtype=np.uint8)
    labels = np.asarray(dataset.targets, dtype=np.int64)
    if images.shape[1:] != (32, 32, 3) or labels.shape != (len(images),):
        raise ValueError(f"{spec.name} under {root}: images {images.shape} / labels {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= spec.num_classes):
        raise ValueError(f"{root}: labels outside [0, {spec.num_classes}) for {spec.name}")
    return images, labels, tuple(str(n) for n in dataset.classes)
