"""Calibration of a classifier's probabilities: expected calibration error, NLL, a reliability diagram.

ECE (Guo et al. 2017; Naeini et al. 2015) with B equal-width confidence bins (0, 1/B], ..., ((B-1)/B, 1]:
``ECE = sum_b (n_b / N) * |accuracy_b - mean confidence_b|``, where the confidence of an example is its
largest predicted probability and it is correct when that class is the label. Reported in percent.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

ECE_BINS = 15


@dataclass(frozen=True)
class Bin:
    lower: float
    upper: float
    count: int
    accuracy: float | None  # None for an empty bin
    confidence: float | None


def calibration_bins(probs: torch.Tensor, labels: torch.Tensor, num_bins: int = ECE_BINS) -> list[Bin]:
    """Per bin: how many examples, their accuracy and mean confidence. probs (N, K), labels (N,)."""
    if probs.ndim != 2 or labels.shape != (probs.shape[0],):
        raise ValueError(
            f"probs {tuple(probs.shape)} and labels {tuple(labels.shape)} are not (N, K) and (N,)"
        )
    conf, pred = probs.double().max(dim=1)
    correct = (pred == labels).double()
    edges = torch.linspace(0.0, 1.0, num_bins + 1, dtype=torch.float64)
    index = torch.bucketize(conf, edges[1:-1], right=False)  # (lo, hi]: conf == 1/B goes to bin 0
    bins = []
    for b in range(num_bins):
        mask = index == b
        n = int(mask.sum())
        acc = float(correct[mask].mean()) if n else None
        mean_conf = float(conf[mask].mean()) if n else None
        bins.append(Bin(float(edges[b]), float(edges[b + 1]), n, acc, mean_conf))
    return bins


def expected_calibration_error(bins: list[Bin]) -> float:
    """ECE in percent from the bins."""
    total = sum(b.count for b in bins)
    if total == 0:
        raise ValueError("no examples")
    return 100.0 * sum(b.count / total * abs(b.accuracy - b.confidence) for b in bins if b.count)


def negative_log_likelihood(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean -log p(label | x) in nats."""
    return float(F.cross_entropy(logits.double(), labels, reduction="mean"))


def reliability_diagram(bins: list[Bin], path: Path, title: str) -> None:
    """Accuracy per confidence bin against the diagonal (perfect calibration), counts underneath."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(4.5, 5.5), height_ratios=(3, 1), sharex=True)
    width = bins[0].upper - bins[0].lower
    centres = [b.lower + width / 2 for b in bins]
    accuracy = [b.accuracy or 0.0 for b in bins]
    confidence = [b.confidence if b.count else a for b, a in zip(bins, accuracy)]
    top.bar(centres, accuracy, width=width, color="tab:blue", edgecolor="k", label="accuracy")
    # The gap as an opaque box from accuracy to confidence (above or below the bar's top): its colour is
    # the legend's, never a blend with the bar beneath it.
    top.bar(
        centres,
        [abs(c - a) for c, a in zip(confidence, accuracy)],
        bottom=[min(c, a) for c, a in zip(confidence, accuracy)],
        width=width,
        color="tab:red",
        edgecolor="k",
        hatch="//",
        label="gap to confidence",
    )
    top.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    top.set(ylabel="accuracy", xlim=(0, 1), ylim=(0, 1), title=title)
    top.legend(loc="upper left", fontsize=8)
    bottom.bar(centres, [b.count for b in bins], width=width, edgecolor="k")
    bottom.set(xlabel="confidence (max probability)", ylabel="examples")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def calibration_report(logits: torch.Tensor, labels: torch.Tensor, num_bins: int = ECE_BINS) -> dict:
    bins = calibration_bins(torch.softmax(logits.double(), dim=1), labels, num_bins)
    return {
        "ece_pct": expected_calibration_error(bins),
        "nll": negative_log_likelihood(logits, labels),
        "ece_bins": num_bins,
        "bins": [b.__dict__ for b in bins],
    }


__all__ = [
    "ECE_BINS",
    "Bin",
    "calibration_bins",
    "calibration_report",
    "expected_calibration_error",
    "negative_log_likelihood",
    "reliability_diagram",
]
