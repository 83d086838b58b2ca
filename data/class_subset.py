"""Keep only some classes of a dataset (``dataset.classes=[5,6,7,8,9]``): transfer to held-out classes.

The kept classes are relabelled 0..k-1 in the order given, in train and test alike, so a model trained on
digits 0-4 and one finetuned on 5-9 both have 5-way heads. Class names follow the same order.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def check_classes(classes: Sequence[int], num_classes: int) -> list[int]:
    """The list itself, after checking: integers in [0, num_classes), no repeats, at least two."""
    values = list(classes)
    bad = [
        c
        for c in values
        if isinstance(c, bool) or not isinstance(c, int | np.integer) or not 0 <= c < num_classes
    ]
    if bad or len(set(values)) != len(values) or len(values) < 2:
        raise ValueError(
            f"dataset.classes={values} is invalid: it must list at least two distinct class indices in "
            f"[0, {num_classes})"
        )
    return [int(c) for c in values]


def select_classes(images, labels: np.ndarray, classes: Sequence[int]):
    """(images, labels) of the kept classes only, labels mapped to their position in ``classes``."""
    labels = np.asarray(labels)
    keep = np.flatnonzero(np.isin(labels, classes))
    remap = np.full(max([int(labels.max()) if labels.size else 0, *classes]) + 1, -1, dtype=np.int64)
    remap[list(classes)] = np.arange(len(classes))
    kept = images[keep] if isinstance(images, np.ndarray) else [images[i] for i in keep]
    return kept, remap[labels[keep]]
