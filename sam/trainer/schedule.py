"""The learning-rate schedule of the official code: cosine decay to 0, stepped every iteration.

An optional linear warmup comes first (the official CIFAR and ImageNet runs use none).
"""

from __future__ import annotations

import math
from collections.abc import Callable

SCHEDULES = ("cosine", "constant")


def warmup_then(name: str, total_steps: int, warmup_steps: int = 0) -> Callable[[int], float]:
    """Multiplier of the peak lr at iteration s (for ``torch.optim.lr_scheduler.LambdaLR``)."""
    if name not in SCHEDULES:
        raise ValueError(f"schedule {name!r} is not one of {', '.join(SCHEDULES)}")

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if name == "constant":
            return 1.0
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor
