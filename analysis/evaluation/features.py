"""Penultimate features of a classifier: their rank, and a linear probe on them.

* Features are the input of the classifier head (a forward hook on it), flattened: what a linear head sees.
* Feature rank (Andriushchenko et al., NeurIPS 2023, "SAM leads to low-rank features"): the number of
  principal components needed to explain ``threshold`` (99%) of the variance of the centred features, on a
  fixed sample.
* Linear probe: multinomial logistic regression (scikit-learn, L-BFGS) on standardised frozen features;
  the inverse regularisation C is chosen on a seeded validation split of the target's training set (the
  strongest regularisation among the best), refitted on the whole training set, and scored on its test set.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

PROBE_CS = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)


@torch.no_grad()
def logits_and_features(
    model: nn.Module, head: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(logits, features, labels) over ``batches`` in eval mode; features = the head's input, flattened."""
    captured: list[torch.Tensor] = []
    handle = head.register_forward_hook(
        lambda m, inputs, out: captured.append(inputs[0].flatten(1).float().cpu())
    )
    was_training = model.training
    model.eval()
    logits, labels = [], []
    try:
        for x, y in batches:
            logits.append(model(x).float().cpu())
            labels.append(y.cpu())
    finally:
        handle.remove()
        model.train(was_training)
    if len(captured) != len(logits):
        raise RuntimeError("the head ran a different number of times than the model: cannot pair features")
    return torch.cat(logits), torch.cat(captured), torch.cat(labels)


def feature_rank(features: torch.Tensor | np.ndarray, threshold: float = 0.99) -> int:
    """Smallest k such that the top-k principal components explain >= ``threshold`` of the variance."""
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold={threshold} must be in (0, 1]")
    x = torch.as_tensor(features, dtype=torch.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"features must be (N >= 2, D), got {tuple(x.shape)}")
    x = x - x.mean(dim=0, keepdim=True)
    var = torch.linalg.svdvals(x) ** 2
    total = var.sum()
    if total <= 0:
        return 0
    explained = torch.cumsum(var, 0) / total
    # the tolerance keeps exactly-rank-k data (explained == 1 up to round-off) at k
    return int(torch.searchsorted(explained, torch.tensor(threshold - 1e-9, dtype=torch.float64)).item()) + 1


@dataclass(frozen=True)
class ProbeResult:
    test_error_pct: float
    C: float
    val_error_pct: dict[float, float]
    num_train: int
    num_test: int


def linear_probe(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    *,
    val_fraction: float = 0.2,
    Cs: Iterable[float] = PROBE_CS,
    seed: int = 0,
) -> ProbeResult:
    """Multinomial logistic regression on frozen features, C chosen on a validation split (see module doc)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    train_x, test_x = np.asarray(train_x, np.float64), np.asarray(test_x, np.float64)
    train_y, test_y = np.asarray(train_y), np.asarray(test_y)
    n = len(train_y)
    n_val = max(1, round(val_fraction * n))
    if n - n_val < 2:
        raise ValueError(f"{n} training examples are too few for a probe with a validation split")
    perm = np.random.default_rng(seed).permutation(n)
    fit_idx, val_idx = perm[n_val:], perm[:n_val]

    def fit(x, y, C):
        scaler = StandardScaler().fit(x)
        clf = LogisticRegression(C=C, max_iter=2000, random_state=seed).fit(scaler.transform(x), y)
        return lambda z: clf.predict(scaler.transform(z))

    val_error = {}
    for C in Cs:
        predict = fit(train_x[fit_idx], train_y[fit_idx], C)
        val_error[float(C)] = 100.0 * float(np.mean(predict(train_x[val_idx]) != train_y[val_idx]))
    best = min(val_error.values())
    C = min(c for c, e in val_error.items() if e == best)  # ties: the strongest regularisation
    predict = fit(train_x, train_y, C)
    error = 100.0 * float(np.mean(predict(test_x) != test_y))
    return ProbeResult(error, C, val_error, n, len(test_y))
