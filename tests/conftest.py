"""Suite-wide settings for pytest-xdist (pyproject's addopts: ``-n auto --dist loadfile``).

Every worker computes with one torch thread: the workers already fill the cores, and two threads per
worker on two cores only add contention. Files are handed out in collection order
(``--no-loadscope-reorder``), which this hook makes xdist's own order (most tests first) except that
the longest files start first: the SLURM scenarios take minutes of mostly waiting for the scheduler,
which then overlaps the rest of the suite instead of ending it, and a file of one long test (the GPU
check's dry run, a fresh install, the documented examples) sorted last by its count would end the suite
on one core.
"""

from __future__ import annotations

import os
from collections import Counter

import pytest

if os.environ.get("PYTEST_XDIST_WORKER"):
    import torch  # only in workers: the controller never computes

    torch.set_num_threads(1)

FIRST = (  # in this order, then the rest by number of tests
    "test_slurm.py",
    "test_gpu_check.py",
    "test_package.py",
    "test_adding_a_variant.py",
    "test_doc_examples.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    tests_per_file = Counter(item.path for item in items)

    def rank(item: pytest.Item) -> tuple[int, int]:
        name = item.path.name
        return (FIRST.index(name), 0) if name in FIRST else (len(FIRST), -tests_per_file[item.path])

    items.sort(key=rank)  # stable: a file's tests keep their order
