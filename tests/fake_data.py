"""Small datasets in the real on-disk formats, for tests that go through the real readers."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np


def _dump(path: Path, obj: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f)


def _batch(rng: np.random.Generator, n: int, classes: int, label_key: str) -> dict:
    labels = rng.integers(0, classes, n)
    # class-dependent mean so a model can learn something; rows are R, G, B planes of 32x32
    base = (labels[:, None] * (200 // classes)).astype(np.int64)
    data = np.clip(base + rng.integers(0, 56, (n, 3072)), 0, 255).astype(np.uint8)
    return {"data": data, label_key: labels.tolist()}


def write_fake_cifar(root: Path, name: str, n_train: int = 500, n_test: int = 100, seed: int = 0) -> Path:
    """``root/cifar-10-batches-py`` or ``root/cifar-100-python`` with the official file names and keys.

    Keys are str: the official Python 2 pickles load that way with torchvision's ``encoding="latin1"``.
    """
    rng = np.random.default_rng(seed)
    root = Path(root)
    if name == "cifar10":
        d = root / "cifar-10-batches-py"
        d.mkdir(parents=True, exist_ok=True)
        per = n_train // 5
        for i in range(1, 6):
            _dump(d / f"data_batch_{i}", _batch(rng, per, 10, "labels"))
        _dump(d / "test_batch", _batch(rng, n_test, 10, "labels"))
        _dump(d / "batches.meta", {"label_names": [f"class{i}" for i in range(10)]})
    elif name == "cifar100":
        d = root / "cifar-100-python"
        d.mkdir(parents=True, exist_ok=True)
        _dump(d / "train", _batch(rng, n_train, 100, "fine_labels"))
        _dump(d / "test", _batch(rng, n_test, 100, "fine_labels"))
        _dump(d / "meta", {"fine_label_names": [f"class{i}" for i in range(100)]})
    else:
        raise ValueError(f"name={name!r} is not one of cifar10, cifar100")
    return root


def write_fake_run(root: Path, name: str, **fields) -> Path:
    """A run directory with a results.json as train.py writes it (the fields compare/plot read)."""
    run = {
        "model": "wrn28_10",
        "dataset": "cifar100",
        "augment": "cutout",
        "optimizer": "sam",
        "rho": 0.1,
        "m": 32,
        "seed": 0,
        "epochs": 200,
        "label_noise": 0.0,
        "test_error": 15.0,
        "test_error_top5": None,
        "train_loss": 0.1,
        **fields,
    }
    run_dir = Path(root) / name
    run_dir.mkdir(parents=True)
    (run_dir / "results.json").write_text(json.dumps(run))
    return run_dir
