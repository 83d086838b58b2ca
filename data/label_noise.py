"""Symmetric label noise for Table 4: a fixed fraction of the training labels moved to another class.

Exactly ``round(p * N)`` examples, chosen uniformly without replacement, each get a class drawn uniformly
from the ``K - 1`` classes other than its own (so "p = 0.2" means 20% of labels are wrong, not 20% resampled,
some back to the right class). The choice is a pure function of the run seed.
"""

import numpy as np

from data.seeding import STREAM_LABEL_NOISE, numpy_rng


def flip_labels(labels: np.ndarray, fraction: float, num_classes: int, seed: int) -> np.ndarray:
    """Return a noisy copy of ``labels`` ((N,) int64 in [0, num_classes))."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"label_noise={fraction} must be in [0, 1)")
    labels = np.asarray(labels, dtype=np.int64)
    noisy = labels.copy()
    n_flip = round(fraction * len(labels))
    if n_flip == 0:
        return noisy
    if num_classes < 2:
        raise ValueError(f"label noise needs at least 2 classes, got num_classes={num_classes}")
    rng = numpy_rng(seed, STREAM_LABEL_NOISE)
    chosen = rng.choice(len(labels), size=n_flip, replace=False)
    shift = rng.integers(1, num_classes, size=n_flip)  # uniform over the other K-1 classes
    noisy[chosen] = (labels[chosen] + shift) % num_classes
    return noisy
