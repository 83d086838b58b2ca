"""What every SAM variant shares: a step counter, checkpointable per-run state, and its own step function.

A variant is a :class:`sam.SAM` (same ``first_step``/``restore``, same base optimizer and param groups),
so everything built for SAM (schedulers on ``base_optimizer``, the trainer's checkpoint of
``optimizer.state_dict()``) works unchanged. ``state_dict()`` carries the variant's per-run state next to
the base optimizer's (key ``"variant"``: tensors and numbers only, so ``torch.load(weights_only=True)``
reads it), which makes resume exact without any change to the trainer.

Random choices (RST's coin, ESAM's weight subset) come from a generator seeded with (seed, step): the
same on every DDP replica, and a resumed run draws exactly what the uninterrupted one drew.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from sam.optimizer import SAM
from sam.steps import StepFn, sam_step, sam_step_chunked

_SEED_STRIDE = 1_000_003


def step_generator(seed: int, step: int, salt: int = 0) -> torch.Generator:
    """A CPU generator that depends only on (seed, step, salt): counter-based, nothing to checkpoint."""
    return torch.Generator().manual_seed((seed * _SEED_STRIDE + step) * 7919 + salt)


def check_range(name: str, value: Any, low: float, high: float, *, low_open=False, high_open=False) -> float:
    """A number in [low, high] (open ends where asked), or a ValueError naming the value and the range."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok:
        ok = (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
    if not ok:
        interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        raise ValueError(f"{name}={value!r} is invalid: it must be a number in {interval}")
    return float(value)


class VariantSAM(SAM):
    """Base of the variants: SAM plus ``steps_taken`` and per-run state in ``state_dict``."""

    variant_name = "variant"

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        base_optimizer: type[torch.optim.Optimizer],
        rho: float = 0.05,
        adaptive: bool = False,
        eta: float = 0.0,
        **base_kwargs: Any,
    ) -> None:
        super().__init__(params, base_optimizer, rho=rho, adaptive=adaptive, eta=eta, **base_kwargs)
        self.steps_taken = 0  # steps this run has taken (each call of the step function counts one)

    # -- per-run state ---------------------------------------------------------------------------------
    def variant_state(self) -> dict[str, Any]:
        """The variant's own state beyond the base optimizer's (override and extend)."""
        return {"steps_taken": self.steps_taken}

    def load_variant_state(self, state: dict[str, Any]) -> None:
        self.steps_taken = int(state["steps_taken"])

    def state_dict(self) -> dict[str, Any]:
        sd = super().state_dict()
        sd["variant"] = {"name": self.variant_name, **self.variant_state()}
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        sd = dict(state_dict)
        variant = sd.pop("variant", None)
        if variant is None or variant.get("name") != self.variant_name:
            found = None if variant is None else variant.get("name")
            raise ValueError(
                f"optimizer state was written by {found or 'an optimizer without variant state'}, "
                f"not by {self.variant_name}: resume with the optimizer that wrote it"
            )
        super().load_state_dict(sd)
        self.load_variant_state(variant)

    # -- the step -------------------------------------------------------------------------------------------
    def make_step(self, m: int | None, per_device_batch: int) -> StepFn:
        """The step function for this run (``sam.select_step`` asks the optimizer when it has this method).

        By default SAM's own steps (whole batch, or chunks of m: m-sharpness, per-replica DDP), counting
        ``steps_taken``: a variant that only changes how e(w) is computed (``first_step``) needs no more.
        """
        whole = m is None or m == per_device_batch

        def step(model, optimizer, x, y, opts):
            result = (
                sam_step(model, optimizer, x, y, opts)
                if whole
                else sam_step_chunked(model, optimizer, x, y, opts, m=m)
            )
            self.steps_taken += 1
            return result

        return self._named(step, m, per_device_batch)

    def _named(self, fn: Callable, m: int | None, per_device_batch: int) -> StepFn:
        chunked = m is not None and m != per_device_batch
        fn.__name__ = f"{self.variant_name}_step" + (f"_m{m}" if chunked else "")
        return fn
