"""Reading the CIFAR pickles, file by file, so every problem names the file it is in.

torchvision reads every pickle of a split in one constructor; a truncated download, a foreign file or a
batch of other-sized images then surfaced as "pickle data was truncated", a KeyError or a numpy reshape
error, with no file name. Here each file is checked as it is read:

* keys may be ``str`` (the official Python 2 pickles, read with ``encoding="latin1"``) or ``bytes`` (what
  a Python 3 script writes after ``pickle.load(f, encoding="bytes")`` of the official files): both hold
  the same arrays, so both are read (bytes label names are decoded as latin-1);
* ``data`` must be uint8 rows of 3072 values (32x32 RGB, one colour plane after another), one label per
  row, labels in ``[0, num_classes)``; anything else is a ``CifarFileError`` (a ValueError: exit code 2)
  naming the file, what it holds and what was expected.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterable
from pathlib import Path

import numpy as np

ROW = 3 * 32 * 32  # one image: the R, G and B planes of 32x32, flattened


class CifarFileError(ValueError):
    """A CIFAR file is there but is not what the official files hold."""


def _keys(entry: dict) -> set[str]:
    return {k.decode("latin1") if isinstance(k, bytes) else str(k) for k in entry}


def _str_keys(entry: dict) -> dict:
    return {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in entry.items()}


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            entry = pickle.load(f, encoding="latin1")
    except Exception as err:  # truncated, not a pickle, unreadable: all are "this file is bad"
        raise CifarFileError(
            f"{path}: cannot be unpickled, it is truncated or damaged ({type(err).__name__}: {err})"
        ) from err
    if not isinstance(entry, dict):
        raise CifarFileError(
            f"{path}: holds a pickled {type(entry).__name__}, not a dict as the official files"
        )
    return _str_keys(entry)


def read_cifar_batch(path: Path | str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """One batch file: images (N, 32, 32, 3) uint8 (H, W, RGB) and labels (N,) int64."""
    path = Path(path)
    entry = _unpickle(path)
    label_key = next((k for k in ("labels", "fine_labels") if k in entry), None)
    if "data" not in entry or label_key is None:
        raise CifarFileError(f"{path}: expected keys data and labels / fine_labels, found {sorted(entry)}")
    data = np.asarray(entry["data"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != ROW:
        raise CifarFileError(
            f"{path}: data is a {data.dtype} array of shape {data.shape}; CIFAR batches hold uint8 rows of "
            f"{ROW} values (one 32x32 RGB image per row, one colour plane after another)"
        )
    try:
        labels = np.asarray(entry[label_key], dtype=np.int64).reshape(-1)
    except (TypeError, ValueError) as err:
        raise CifarFileError(f"{path}: {label_key} are not integers ({err})") from err
    if len(labels) != len(data):
        raise CifarFileError(f"{path}: {len(data)} images but {len(labels)} {label_key}")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise CifarFileError(
            f"{path}: {label_key} span [{labels.min()}, {labels.max()}], outside [0, {num_classes})"
        )
    return np.ascontiguousarray(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)), labels


def read_cifar_names(path: Path | str, key: str, num_classes: int) -> tuple[str, ...]:
    """The class names of a meta file (``batches.meta``: label_names; ``meta``: fine_label_names)."""
    path = Path(path)
    entry = _unpickle(path)
    if key not in entry:
        raise CifarFileError(f"{path}: no {key} (keys: {sorted(entry)})")
    names = tuple(n.decode("latin1") if isinstance(n, bytes) else str(n) for n in entry[key])
    if len(names) != num_classes:
        raise CifarFileError(f"{path}: {len(names)} {key}, expected {num_classes}")
    return names


def find_bad_cifar_file(directory: Path | str, files: Iterable[str], meta_file: str) -> str | None:
    """The first file under ``directory`` that is not an intact CIFAR pickle, as "PATH: what is wrong"."""
    for name in files:
        path = Path(directory) / name
        try:
            entry = _unpickle(path)
        except CifarFileError as err:
            return str(err)
        keys = _keys(entry)
        if name == meta_file:
            if not keys & {"label_names", "fine_label_names"}:
                return f"{path}: no label_names / fine_label_names (keys: {sorted(keys)})"
            continue
        if "data" not in keys or not keys & {"labels", "fine_labels"}:
            return f"{path}: expected keys data and labels / fine_labels, found {sorted(keys)}"
    return None
