"""The paper's "±": the half-width of a 95% t-interval of the mean over seeds (Sec. 3.1)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable

from scipy import stats


def mean_ci95(values: Iterable[float]) -> tuple[float, float | None]:
    """Mean and the half-width of its 95% t-interval, t_{0.975, n-1} * s / sqrt(n) (None when n < 2).

    The paper's "±" is this statistic over 5 runs (Sec. 3.1), so ours is computed the same way.
    """
    values = [float(v) for v in values]
    if not values:
        raise ValueError("mean_ci95 needs at least one value")
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, None
    n = len(values)
    return mean, float(stats.t.ppf(0.975, n - 1)) * statistics.stdev(values) / math.sqrt(n)
