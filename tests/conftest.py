"""Under pytest-xdist every worker computes with one torch thread: the workers already fill the cores,
and two threads per worker on two cores only add contention."""

import os

import torch

if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)
