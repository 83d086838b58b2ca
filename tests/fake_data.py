"""Small datasets in the real on-disk formats, for tests that go through the real readers.

The writers live in data/standin.py (scripts/make_standin_data.py uses them too); this module keeps the
names the tests import, and the fake run directories.
"""

from __future__ import annotations

import json
from pathlib import Path

from data.standin import (  # noqa: F401  (re-exported for the tests)
    FINETUNE_WRITERS,
    jpg,
    level,
    write_aircraft,
    write_birdsnap,
    write_cars,
    write_cifar,
    write_fashion_mnist,
    write_flowers,
    write_food,
    write_imagenet_tree,
    write_pets,
    write_svhn,
)

write_fake_cifar = write_cifar


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
