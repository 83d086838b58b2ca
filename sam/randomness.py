"""Random draws across SAM's two passes.

The official code uses the same random draw (dropout masks, Shake-Shake / ShakeDrop coefficients) in
both passes, and takes the *true* gradient of the forward function in the first pass. We replay torch's
RNG state between the passes, and flip a ``true_gradient`` attribute on every module that has one.
A stochastic module therefore draws all its randomness from torch's global RNG in its forward, in a
fixed order, whatever its mode (see ``models/shake.py``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn


class RNGState:
    """A snapshot of the CPU generator and, for a CUDA device, that device's generator."""

    def __init__(self, device: torch.device) -> None:
        self.cpu = torch.get_rng_state()
        self.cuda_device = device if device.type == "cuda" else None
        self.cuda = torch.cuda.get_rng_state(device) if self.cuda_device is not None else None

    def restore(self) -> None:
        torch.set_rng_state(self.cpu)
        if self.cuda_device is not None:
            torch.cuda.set_rng_state(self.cuda, self.cuda_device)

    def state_dict(self) -> dict[str, Tensor]:
        """For checkpoints (tensors only, so ``torch.load(weights_only=True)`` reads it back)."""
        return {"cpu": self.cpu} if self.cuda is None else {"cpu": self.cpu, "cuda": self.cuda}

    @staticmethod
    def load(state: dict[str, Tensor], device: torch.device) -> None:
        """Set the generators from a :meth:`state_dict` (the CUDA one only on a CUDA device)."""
        torch.set_rng_state(state["cpu"])
        if device.type == "cuda" and "cuda" in state:
            torch.cuda.set_rng_state(state["cuda"], device)


@contextmanager
def true_gradient(model: nn.Module, enabled: bool) -> Iterator[None]:
    """Set ``true_gradient`` on every module that declares it; put the old values back on exit."""
    modules = [m for m in model.modules() if hasattr(m, "true_gradient")]
    old = [m.true_gradient for m in modules]
    for m in modules:
        m.true_gradient = enabled
    try:
        yield
    finally:
        for m, value in zip(modules, old):
            m.true_gradient = value
