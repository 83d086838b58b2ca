"""Argument checks shared by the model constructors: bad input -> ValueError naming value and rule."""

from __future__ import annotations

import numbers


def check_positive_int(name: str, value: object) -> int:
    """Return ``value`` as an int if it is an integer >= 1, else raise ValueError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name}={value!r} is not allowed: it must be an integer >= 1")
    return int(value)


def check_depth(model: str, depth: object, rule: str, period: int, offset: int, minimum: int) -> int:
    """Check ``depth = period * n + offset`` with ``n >= 1`` and ``depth >= minimum``."""
    if (
        isinstance(depth, bool)
        or not isinstance(depth, numbers.Integral)
        or depth < minimum
        or (depth - offset) % period != 0
    ):
        raise ValueError(f"{model}: depth={depth!r} is not allowed: depth must be {rule} (>= {minimum})")
    return int(depth)
