"""SVHN and Fashion-MNIST (paper Table 5) through ``torchvision.datasets``, in their real on-disk formats.

* SVHN (``svhn``): ``root/train_32x32.mat``, ``test_32x32.mat``, ``extra_32x32.mat``, MATLAB files with
  ``X`` (32, 32, 3, N) uint8 and ``y`` (N, 1) labels 1..10 (10 is the digit 0; torchvision maps it to 0).
  Training uses **train + extra** (73,257 + 531,131 images) as the paper (App. B.1: "all available data")
  and the official code do; ``extra=False`` trains on train alone. Reading .mat files needs scipy.
* Fashion-MNIST (``fashion_mnist``): ``root/FashionMNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte``
  (the IDX files, unzipped), 60,000 / 10,000 grayscale 28x28 images.

Normalisation constants are the official code's (``sam_jax/datasets/dataset_source.py``): SVHN's own
per-channel statistics; for Fashion-MNIST it uses MNIST's 0.1307 / 0.3081, and so do we. Like data.cifar,
we check that the files exist rather than their md5 (tests write small files in the real formats); a
missing file gives a ``DatasetNotFoundError`` naming it and how to get it.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
from torchvision import datasets

from data.errors import DatasetNotFoundError

SVHN_MEAN = (0.43090966, 0.4302428, 0.44634357)
SVHN_STD = (0.19759192, 0.20029082, 0.19811132)
FASHION_MEAN = (0.1307,)
FASHION_STD = (0.3081,)
FASHION_CLASSES = tuple(datasets.FashionMNIST.classes)


class _SVHNFilesPresent(datasets.SVHN):
    """torchvision's SVHN whose integrity check is "the file exists" (md5 None, which it accepts)."""

    split_list: ClassVar[dict] = {
        split: [url, name, None] for split, (url, name, _) in datasets.SVHN.split_list.items()
    }


def _missing_error(name: str, path: Path, root: Path, how: str) -> DatasetNotFoundError:
    return DatasetNotFoundError(
        f"{name}: {path} is missing. {how} Get the data with dataset.download=true (needs internet), or put "
        f"the files under {root}, or point dataset.root=... at the directory that holds them."
    )


def _svhn_split(root: Path, split: str, download: bool) -> tuple[np.ndarray, np.ndarray]:
    url, filename, _ = datasets.SVHN.split_list[split]
    path = root / filename
    if not path.is_file() and download:
        try:
            datasets.SVHN(str(root), split=split, download=True)
        except Exception as err:  # offline, bad checksum, unwritable root
            raise _missing_error("svhn", path, root, f"The download of {url} failed ({err!r}).") from err
    if not path.is_file():
        raise _missing_error("svhn", path, root, f"Expected {filename} from {url}.")
    dataset = _SVHNFilesPresent(str(root), split=split, download=False)
    images = np.ascontiguousarray(dataset.data.transpose(0, 2, 3, 1), dtype=np.uint8)  # (N, H, W, C)
    return images, np.asarray(dataset.labels, dtype=np.int64)


def load_svhn(root: str | Path, *, download: bool = False, extra: bool = True):
    """(train images, train labels, test images, test labels): (N, 32, 32, 3) uint8 and (N,) int64 in 0..9."""
    root = Path(root).expanduser()
    train_x, train_y = _svhn_split(root, "train", download)
    if extra:
        extra_x, extra_y = _svhn_split(root, "extra", download)
        train_x, train_y = np.concatenate([train_x, extra_x]), np.concatenate([train_y, extra_y])
    test_x, test_y = _svhn_split(root, "test", download)
    return train_x, train_y, test_x, test_y


def load_fashion_mnist(root: str | Path, *, download: bool = False):
    """(train images, train labels, test images, test labels): (N, 28, 28, 1) uint8 and (N,) int64."""
    root = Path(root).expanduser()
    out = []
    for train in (True, False):
        try:
            dataset = datasets.FashionMNIST(str(root), train=train, download=download)
        except RuntimeError as err:  # torchvision: "Dataset not found. You can use download=True ..."
            raw = root / "FashionMNIST" / "raw"
            files = ", ".join(Path(url).stem for url, _ in datasets.FashionMNIST.resources)
            raise _missing_error(
                "fashion_mnist", raw, root, f"Expected the IDX files {files} there ({err})."
            ) from err
        except Exception as err:  # the download itself failed
            raise _missing_error(
                "fashion_mnist", root / "FashionMNIST", root, f"The download failed ({err!r})."
            ) from err
        out += [dataset.data.numpy()[..., None].astype(np.uint8), dataset.targets.numpy().astype(np.int64)]
    return tuple(out)
