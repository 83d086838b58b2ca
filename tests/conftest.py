"""Suite-wide settings for pytest-xdist (pyproject's addopts: ``-n auto --dist loadfile``).

Every worker computes with one torch thread: the workers already fill the cores, and two threads per
worker on two cores only add contention. Files are handed out in collection order
(``--no-loadscope-reorder``), which this hook makes xdist's own order (most tests first) except that
the SLURM scenarios start first: they take minutes of mostly waiting for the scheduler, which then
overlaps the rest of the suite instead of ending it.
"""

from __future__ import annotations

import os
from collections import Counter

import pytest

if os.environ.get("PYTEST_XDIST_WORKER"):
    import torch  # only in workers: the controller never computes

    torch.set_num_threads(1)

FIRST = ("test_slurm.py",)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    tests_per_file = Counter(item.path for item in items)
    items.sort(key=lambda item: (item.path.name not in FIRST, -tests_per_file[item.path]))  # stable
