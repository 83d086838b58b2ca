"""Which CIFAR file is bad, and how: run when reading the dataset failed, so the error names the file.

torchvision reads every pickle of a split in one constructor; a truncated download or a foreign file
then surfaces as "pickle data was truncated" or "list indices must be integers" with no file name.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterable
from pathlib import Path


def _keys(entry: dict) -> set[str]:
    return {k.decode("latin1") if isinstance(k, bytes) else str(k) for k in entry}


def find_bad_cifar_file(directory: Path | str, files: Iterable[str], meta_file: str) -> str | None:
    """The first file under ``directory`` that is not an intact CIFAR pickle, as "PATH: what is wrong"."""
    for name in files:
        path = Path(directory) / name
        try:
            with open(path, "rb") as f:
                entry = pickle.load(f, encoding="latin1")
        except Exception as err:  # truncated, not a pickle, unreadable: all are "this file is bad"
            return f"{path}: cannot be unpickled, it is truncated or damaged ({type(err).__name__}: {err})"
        if not isinstance(entry, dict):
            return f"{path}: holds a pickled {type(entry).__name__}, not a dict as the official files"
        keys = _keys(entry)
        if name == meta_file:
            if not keys & {"label_names", "fine_label_names"}:
                return f"{path}: no label_names / fine_label_names (keys: {sorted(keys)})"
            continue
        if "data" not in keys or not keys & {"labels", "fine_labels"}:
            return f"{path}: expected keys data and labels / fine_labels, found {sorted(keys)}"
    return None
