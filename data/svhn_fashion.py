"""SVHN and Fashion-MNIST (paper Table 5) through ``torchvision.datasets``, in their real on-disk formats.

* SVHN (``svhn``): ``root/train_32x32.mat``, ``test_32x32.mat``, ``extra_32x32.mat``, MATLAB files with
  ``X`` (32, 32, 3, N) uint8 and ``y`` (N, 1) labels 1..10 (10 is the digit 0; torchvision maps it to 0).
  Training uses **train + extra** (73,257 + 531,131 images) as the paper (App. B.1: "all available data")
  and the official code do; ``extra=False`` trains on train alone. Reading .mat files needs scipy.
* Fashion-MNIST (``fashion_mnist``): ``root/FashionMNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte``
  (the IDX files, unzipped), 60,000 / 10,000 grayscale 28x28 images.

Normalisation constants are the official code's (``sam_jax/datasets/dataset_source.py``): SVHN's own
per-channel statistics; for Fashion-MNIST it uses MNIST's 0.1307 / 0.3081, and so do we. Like data.cifar,
we check that the files exist rather than their md5 (tests and scripts/make_standin_data.py write small
files in the real formats); a missing file gives a ``DatasetNotFoundError`` naming it and how to get it,
after probing the download host for a few seconds when dataset.download is on (``data.download_check``).
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
from torchvision import datasets

from data.download_check import unreachable
from data.errors import DatasetNotFoundError, missing_data_message

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


def _missing_error(
    name: str, root: Path, expected: str, why: str, download: bool, get: str
) -> DatasetNotFoundError:
    return DatasetNotFoundError(missing_data_message(name, root, expected, why, download=download, get=get))


def _svhn_split(root: Path, split: str, download: bool) -> tuple[np.ndarray, np.ndarray]:
    url, filename, _ = datasets.SVHN.split_list[split]
    path = root / filename
    get = f"download {url}"
    if not path.is_file() and download:
        offline = unreachable(url)
        if offline is not None:
            why = f"{filename} is missing and cannot be downloaded: {offline}"
            raise _missing_error("svhn", root, filename, why, True, get)
        try:
            datasets.SVHN(str(root), split=split, download=True)
        except Exception as err:  # bad checksum, unwritable root, a dropped connection
            raise _missing_error(
                "svhn", root, filename, f"the download of {url} failed ({err!r})", True, get
            ) from err
    if not path.is_file():
        why = f"{filename} is missing" + ("" if download else " and dataset.download=false")
        raise _missing_error("svhn", root, filename, why, download, get)
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


def _fashion_files_present(root: Path) -> bool:
    raw = root / "FashionMNIST" / "raw"
    return all((raw / Path(url).stem).is_file() for url, _ in datasets.FashionMNIST.resources)


def load_fashion_mnist(root: str | Path, *, download: bool = False):
    """(train images, train labels, test images, test labels): (N, 28, 28, 1) uint8 and (N,) int64."""
    root = Path(root).expanduser()
    files = ", ".join(Path(url).stem for url, _ in datasets.FashionMNIST.resources)
    expected = f"FashionMNIST/raw/ holding the unzipped IDX files {files}"
    mirror = datasets.FashionMNIST.mirrors[0]
    get = f"download the .gz files from {mirror} and gunzip them there"
    if download and not _fashion_files_present(root):
        offline = unreachable(mirror)
        if offline is not None:
            why = f"files are missing and cannot be downloaded: {offline}"
            raise _missing_error("fashion_mnist", root, expected, why, True, get)
    out = []
    for train in (True, False):
        try:
            dataset = datasets.FashionMNIST(str(root), train=train, download=download)
        except RuntimeError as err:  # torchvision: "Dataset not found. You can use download=True ..."
            why = "files are missing" + ("" if download else " and dataset.download=false")
            raise _missing_error("fashion_mnist", root, expected, why, download, get) from err
        except Exception as err:  # the download itself failed
            why = f"the download from {mirror} failed ({err!r})"
            raise _missing_error("fashion_mnist", root, expected, why, download, get) from err
        out += [dataset.data.numpy()[..., None].astype(np.uint8), dataset.targets.numpy().astype(np.int64)]
    return tuple(out)
