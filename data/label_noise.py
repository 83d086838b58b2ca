"""Symmetric label noise for Table 4: two protocols behind one key (``label_noise_protocol``).

* ``uniform`` (default; the protocol of the work the paper follows): each training label is, independently
  with probability ``p``, replaced by a class drawn uniformly from **all** ``K`` classes, so it sometimes
  lands back on its own class. The expected fraction of wrong labels is ``p * (K - 1) / K`` (CIFAR-10 at
  "80%": 72%). This is Zhang et al. (2017)'s "partially corrupted labels", used by MentorNet (Jiang et al.
  2018) and by Jiang et al. (2019, "Beyond Synthetic Noise", whose CIFAR table the paper's Table 4 copies).
* ``flip``: exactly ``round(p * N)`` examples, chosen uniformly without replacement, each moved to a class
  drawn uniformly from the ``K - 1`` classes other than its own, so exactly a fraction ``p`` is wrong
  (harder than ``uniform`` at the same ``p``).

Both are pure functions of the run seed (their own stream), so turning noise on never shifts another draw.
What a run records (``label_noise_realised`` in results.json) is the realised fraction of training labels
that differ from the clean ones, under either protocol.
"""

import numpy as np

from data.seeding import STREAM_LABEL_NOISE, numpy_rng

LABEL_NOISE_PROTOCOLS = ("uniform", "flip")


def _check(labels: np.ndarray, fraction: float, num_classes: int) -> np.ndarray:
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"label_noise={fraction} must be in [0, 1)")
    return np.asarray(labels, dtype=np.int64)


def flip_labels(labels: np.ndarray, fraction: float, num_classes: int, seed: int) -> np.ndarray:
    """``flip``: a copy of ``labels`` ((N,) int64 in [0, num_classes)) with exactly round(p N) moved."""
    labels = _check(labels, fraction, num_classes)
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


def resample_labels(labels: np.ndarray, fraction: float, num_classes: int, seed: int) -> np.ndarray:
    """``uniform``: a copy of ``labels`` where each is, with probability p, redrawn uniformly over all K."""
    labels = _check(labels, fraction, num_classes)
    noisy = labels.copy()
    if fraction == 0.0 or len(labels) == 0:
        return noisy
    rng = numpy_rng(seed, STREAM_LABEL_NOISE)
    corrupt = rng.random(len(labels)) < fraction  # (N,) independent Bernoulli(p)
    noisy[corrupt] = rng.integers(0, num_classes, size=int(corrupt.sum()))  # uniform over all K classes
    return noisy


def noisy_labels(
    labels: np.ndarray, fraction: float, num_classes: int, seed: int, protocol: str = "uniform"
) -> np.ndarray:
    """The training labels under ``protocol`` (see the module docstring); ``fraction`` 0 returns a copy."""
    if protocol == "uniform":
        return resample_labels(labels, fraction, num_classes, seed)
    if protocol == "flip":
        return flip_labels(labels, fraction, num_classes, seed)
    raise ValueError(f"label_noise_protocol={protocol!r} is not one of {LABEL_NOISE_PROTOCOLS}")
