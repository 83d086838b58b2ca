"""CIFAR-10 / CIFAR-100: torchvision downloads the archive, ``data.cifar_files`` reads the pickles.

On-disk format (https://www.cs.toronto.edu/~kriz/cifar.html), under ``root``:

* ``cifar-10-batches-py/``: ``data_batch_1`` .. ``data_batch_5``, ``test_batch``, ``batches.meta``;
* ``cifar-100-python/``: ``train``, ``test``, ``meta`` (the 100 fine labels are read).

Only read pickles you downloaded from the official source (or wrote with scripts/make_standin_data.py).
When files are missing and dataset.download is on, the download host is probed first
(``data.download_check``, a few seconds at most), so an offline machine gets one ``DatasetNotFoundError``
naming ``dataset.root``, the files expected there and the ways out, instead of a resolver's timeouts.
Like our reader before it, we check that the files exist, not their md5 (the md5 would reject stand-in
files in the real format); the archive's md5 is still checked on download. Each file is read on its own,
so a damaged or foreign file is a ValueError naming it (``data/cifar_files.py``); pickles with bytes
keys, as Python 3 conversion scripts write them, hold the official arrays and are read as they are.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torchvision import datasets

from data.cifar_files import CifarFileError, read_cifar_batch, read_cifar_names
from data.download_check import unreachable
from data.errors import DatasetNotFoundError, missing_data_message


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


def _missing(directory: Path, spec: CifarSpec) -> list[str]:
    return [f for f in spec.files if not (directory / f).is_file()]


def _not_found(
    root: Path, spec: CifarSpec, missing: list[str], why: str, download: bool
) -> DatasetNotFoundError:
    directory = root / spec.dirname
    expected = f"{spec.dirname}/{{{','.join(spec.files)}}}" + (
        "" if missing == list(spec.files) else f" (missing: {', '.join(missing)})"
    )
    get = f"download {spec.url} (md5 {spec.md5}) and extract it in {root}, which makes {directory}"
    return DatasetNotFoundError(
        missing_data_message(spec.name, root, expected, why, download=download, get=get)
    )


def ensure_cifar_files(spec: CifarSpec, root: str | Path, *, download: bool = True) -> Path:
    """The directory holding every file of ``spec``, downloading the archive first if files are missing,
    download is on and the host answers (``data.download_check``: an offline machine is told in seconds)."""
    root = Path(root).expanduser()
    directory = root / spec.dirname
    missing = _missing(directory, spec)
    if missing and download:
        offline = unreachable(spec.url)
        if offline is not None:
            raise _not_found(
                root, spec, missing, f"files are missing and cannot be downloaded: {offline}", True
            )
        try:
            spec.dataset_class(str(root), train=True, download=True)  # fetches and checks the archive
        except Exception as err:  # bad checksum, unwritable root, a dropped connection
            raise _not_found(
                root, spec, missing, f"the download of {spec.url} failed ({err!r})", True
            ) from err
        missing = _missing(directory, spec)
    if missing:
        why = (
            "files are missing after the download"
            if download
            else "files are missing and dataset.download=false"
        )
        raise _not_found(root, spec, missing, why, download)
    return directory


def load_cifar(
    spec: CifarSpec, root: str | Path, *, train: bool, download: bool = True
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """One whole split: images (N, 32, 32, 3) uint8 (H, W, RGB), labels (N,) int64 in [0, num_classes),
    and the class names (from ``batches.meta`` / ``meta``). A bad file is a ValueError naming it."""
    directory = ensure_cifar_files(spec, root, download=download)
    cls = spec.dataset_class
    try:
        batches = [
            read_cifar_batch(directory / f, spec.num_classes)
            for f, _ in (cls.train_list if train else cls.test_list)
        ]
        names = read_cifar_names(directory / cls.meta["filename"], cls.meta["key"], spec.num_classes)
    except CifarFileError as err:
        raise CifarFileError(f"{spec.name}: {err}; re-download or re-extract the official files") from err
    images = np.concatenate([x for x, _ in batches])
    labels = np.concatenate([y for _, y in batches])
    return images, labels, names
