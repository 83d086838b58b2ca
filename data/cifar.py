"""CIFAR-10 / CIFAR-100: our reader for the official python pickles, and the download when files are missing.

On-disk format (https://www.cs.toronto.edu/~kriz/cifar.html), under ``root``:

* ``cifar-10-batches-py/``: ``data_batch_1`` .. ``data_batch_5``, ``test_batch``, ``batches.meta``;
* ``cifar-100-python/``: ``train``, ``test``, ``meta`` (we use the 100 fine labels).

Each batch is a pickled dict with bytes keys: ``b"data"`` (N, 3072) uint8, each row the R, G then B planes
of a 32x32 image in row-major order, and ``b"labels"`` (CIFAR-10) or ``b"fine_labels"`` (CIFAR-100).
The files are pickles: only read files you downloaded from the official source.
"""

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data.errors import DatasetNotFoundError


@dataclass(frozen=True)
class CifarSpec:
    name: str
    dirname: str
    url: str
    md5: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str
    label_key: bytes
    class_names_key: bytes
    num_classes: int
    # Per-channel mean / std of the training images in [0, 1] (the standard published statistics).
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @property
    def files(self) -> tuple[str, ...]:
        return (*self.train_files, *self.test_files, self.meta_file)


CIFAR10 = CifarSpec(
    name="cifar10",
    dirname="cifar-10-batches-py",
    url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    md5="c58f30108f718f92721af3b95e74349a",
    train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
    test_files=("test_batch",),
    meta_file="batches.meta",
    label_key=b"labels",
    class_names_key=b"label_names",
    num_classes=10,
    mean=(0.4914, 0.4822, 0.4465),
    std=(0.2470, 0.2435, 0.2616),
)
CIFAR100 = CifarSpec(
    name="cifar100",
    dirname="cifar-100-python",
    url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
    md5="eb9058c3a382ffc7106e4002c42a8d85",
    train_files=("train",),
    test_files=("test",),
    meta_file="meta",
    label_key=b"fine_labels",
    class_names_key=b"fine_label_names",
    num_classes=100,
    mean=(0.5071, 0.4865, 0.4409),
    std=(0.2673, 0.2564, 0.2762),
)
CIFAR_SPECS = {spec.name: spec for spec in (CIFAR10, CIFAR100)}


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


def locate_cifar(root: str | Path, spec: CifarSpec, download: bool = True) -> Path:
    """Return ``root/<dirname>`` once every file is there, downloading the archive if allowed."""
    root = Path(root).expanduser()
    directory = root / spec.dirname
    missing = _missing(directory, spec)
    if missing and download:
        # Imported here: the download helper is only needed on a first run.
        from torchvision.datasets.utils import download_and_extract_archive

        try:
            download_and_extract_archive(spec.url, download_root=str(root), md5=spec.md5)
        except Exception as err:  # offline, bad checksum, unwritable root: all end the same way
            raise DatasetNotFoundError(
                _not_found_message(directory, spec, missing, f"the download failed ({err!r})")
            ) from err
        missing = _missing(directory, spec)
    if missing:
        why = "files are missing after the download" if download else "files are missing and download=False"
        raise DatasetNotFoundError(_not_found_message(directory, spec, missing, why))
    return directory


def _unpickle(path: Path) -> dict:
    with open(path, "rb") as f:
        entry = pickle.load(f, encoding="bytes")
    # The official files have bytes keys (python 2 pickles); accept str keys from re-pickled copies too.
    return {k.encode() if isinstance(k, str) else k: v for k, v in entry.items()}


def read_cifar_batch(path: str | Path, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    """One pickle -> images (N, 32, 32, 3) uint8 (H, W, RGB), labels (N,) int64."""
    entry = _unpickle(Path(path))
    if b"data" not in entry or label_key not in entry:
        raise ValueError(f"{path}: expected keys b'data' and {label_key!r}, found {sorted(entry)}")
    data = np.asarray(entry[b"data"], dtype=np.uint8)
    labels = np.asarray(entry[label_key], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or labels.shape != (data.shape[0],):
        raise ValueError(f"{path}: data {data.shape} / labels {labels.shape} are not (N, 3072) / (N,)")
    # Row = [R plane (1024) | G plane | B plane], each plane row-major: (N, C, H, W) -> (N, H, W, C).
    images = np.ascontiguousarray(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    return images, labels


def load_cifar(
    spec: CifarSpec, root: str | Path, *, train: bool, download: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """The whole train or test split: images (N, 32, 32, 3) uint8, labels (N,) int64 in [0, num_classes)."""
    directory = locate_cifar(root, spec, download)
    parts = [
        read_cifar_batch(directory / f, spec.label_key)
        for f in (spec.train_files if train else spec.test_files)
    ]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    if labels.size and (labels.min() < 0 or labels.max() >= spec.num_classes):
        raise ValueError(f"{directory}: labels outside [0, {spec.num_classes}) for {spec.name}")
    return images, labels


def read_class_names(spec: CifarSpec, root: str | Path, download: bool = True) -> tuple[str, ...]:
    """Class names from ``batches.meta`` / ``meta``."""
    meta = _unpickle(locate_cifar(root, spec, download) / spec.meta_file)
    return tuple(n.decode() if isinstance(n, bytes) else str(n) for n in meta[spec.class_names_key])
