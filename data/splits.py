"""The validation split carved out of the training set (the paper tuned rho on 10% of train).

A seeded random subset of ``round(val_fraction * N)`` training examples, a pure function of the run
seed; the remaining examples are the training set. The validation set never uses the test set, keeps
its clean labels (label noise is applied afterwards, to the remaining training examples only; the paper's
Table 8 reports its noisy-label rho search on a clean validation set) and is never augmented.
"""

import numpy as np

from data.seeding import STREAM_SPLIT, numpy_rng


def train_val_split(num_examples: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train_indices, val_indices), both sorted, disjoint and covering range(num_examples)."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction={val_fraction} must be in [0, 1)")
    n_val = round(val_fraction * num_examples)
    if n_val >= num_examples:
        raise ValueError(f"val_fraction={val_fraction} leaves no training examples out of {num_examples}")
    perm = numpy_rng(seed, STREAM_SPLIT).permutation(num_examples)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])
