"""Everything SAM does for callers other than a plain PyTorch loop, kept apart from Algorithm 1.

``sam/optimizer.py`` is the algorithm; this module is what frameworks and other SAM ports need on top
of it, and nothing else. ``SAM`` inherits :class:`FrameworkInterop`: its ``__setattr__``, and the hooks
that SAM's methods call, one line each, marked ``(frameworks.py)`` there. What it is for:

- **factories**: timm's ``get_optimizer_class`` and Hydra's ``_partial_`` hand over a ``functools.partial``
  of an optimizer class instead of the class;
- **davda54/sam's users**: ``loss.backward(); optimizer.step(closure)`` (gradients already present at
  w), and its state dicts (no base-optimizer state, the saved w per parameter);
- **refusals**: call patterns that would give silently wrong SAM or a foreign error are refused with a
  message that says what to do instead (docs/frameworks.md): gradient accumulation in
  Lightning or Accelerate, and fp16 loss scaling around a closure (Lightning's automatic optimization,
  Accelerate's prepared optimizer).

Never imports a framework: it only looks at modules the user has already imported.
"""

from __future__ import annotations

import functools
import sys
import warnings
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import torch
from torch import Tensor

# Per-parameter state other SAM ports keep in their own state_dict (davda54/sam: the saved w).
FOREIGN_STATE_KEYS = ("old_p", "e_w")


class FrameworkInterop:
    """Mixin of :class:`sam.SAM` (and only of it): what SAM does for frameworks and davda54/sam's users.

    Keeps no state of its own: it reads SAM's ``_pass`` dict, which Lightning's optimizer wrapper shares.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        # Accelerate's fp16 wrapper patches ``step`` just before its GradScaler calls it: refuse the
        # closure form there, with our message, before the scaler asserts or anything runs.
        pending = self.__dict__.get("_pass", {}).get("awaiting_second_step", True)
        if name == "step" and not pending and is_accelerate_scaler_patch(value):
            raise RuntimeError(ACCELERATE_FP16)
        super().__setattr__(name, value)

    @staticmethod
    def _refuse_unsupported_setup(base_optimizer: Any, model: Any) -> None:
        """At construction: an Optimizer class or a partial of one; no Lightning fp16 automatic optimization."""
        check_base_optimizer(base_optimizer)
        if model is not None and lightning_fp16_automatic(model):
            raise ValueError(LIGHTNING_FP16)

    @staticmethod
    def _refuse_accelerate_accumulation() -> None:
        steps = accelerate_accumulation_steps()
        if steps > 1:
            raise RuntimeError(ACCELERATE_ACCUMULATION.format(steps=steps, skipped=steps - 1))

    @classmethod
    def _refuse_inexact_closure_step(cls) -> None:
        """Before ``step(closure)`` runs anything: Accelerate's gradient accumulation and fp16 scaler."""
        cls._refuse_accelerate_accumulation()
        if accelerate_mixed_precision() == "fp16":
            raise RuntimeError(ACCELERATE_FP16)

    def _step_from_present_gradients(
        self, closure: Callable[[], Tensor], frozen_bn: Callable[[], AbstractContextManager] | None
    ) -> None:
        """davda54/sam's ``loss.backward(); optimizer.step(closure)``: e(w) from the gradients already
        present, the closure once at w + e(w), the base step; returns None, as davda54/sam does."""
        if is_lightning_closure(closure):
            raise RuntimeError(LIGHTNING_ACCUMULATION)
        self.first_step(zero_grad=True)
        if self.grad_norm is not None and not bool(self.grad_norm > 0):
            self.restore()
            raise RuntimeError(ZEROED_GRADIENTS.format(base=type(self.base_optimizer).__name__))
        self._second_pass(closure, frozen_bn)
        self.second_step(zero_grad=True)
        return None

    def _adopt_foreign_state_dict(self, state_dict: dict[str, Any]) -> dict[str, Any]:
        """Another SAM port's state dict as ours: missing rho/adaptive/eta from our defaults, and the
        per-parameter entries no base optimizer writes (davda54's ``old_p``) dropped, with a warning
        when nothing of the base optimizer's state is left. Our own state dicts pass unchanged."""
        defaults = self.defaults
        groups = [
            {**{k: defaults[k] for k in ("rho", "adaptive", "eta")}, **g} for g in state_dict["param_groups"]
        ]
        state, dropped = {}, set()
        for index, entry in state_dict["state"].items():
            dropped.update(k for k in entry if k in FOREIGN_STATE_KEYS)
            kept = {k: v for k, v in entry.items() if k not in FOREIGN_STATE_KEYS}
            if kept:
                state[index] = kept
        if dropped and not state:
            warnings.warn(
                f"loaded another SAM port's state_dict (davda54/sam style: per-parameter {sorted(dropped)} dropped). "
                "It holds no base-optimizer state, so momentum buffers and step counts start from zero: the "
                "run does not continue exactly as it would have without the restart.",
                stacklevel=3,
            )
        return {**state_dict, "param_groups": groups, "state": state}


def check_base_optimizer(base: Any) -> None:
    """An Optimizer subclass, or functools.partial(s) of one (timm's ``get_optimizer_class``, Hydra)."""
    target = base
    while isinstance(target, functools.partial):
        target = target.func
    if isinstance(target, type) and issubclass(target, torch.optim.Optimizer):
        return
    got = f"an instance of {type(base).__name__}" if isinstance(base, torch.optim.Optimizer) else repr(base)
    if len(got) > 80:
        got = got[:77] + "..."
    raise ValueError(
        "base_optimizer must be a torch.optim.Optimizer class such as torch.optim.SGD, or a "
        f"functools.partial of one (timm.optim.get_optimizer_class returns either), got {got}"
    )


def is_lightning_closure(closure: Callable[[], Any]) -> bool:
    """Lightning's precision plugins pass ``functools.partial(plugin._wrap_closure, ...)`` to ``step``."""
    owner = getattr(getattr(closure, "func", None), "__self__", None)
    return type(owner).__module__.split(".")[0] in ("lightning", "pytorch_lightning")


def lightning_fp16_automatic(model: Any) -> bool:
    """True for a LightningModule on a Trainer whose precision plugin scales the loss (fp16 "16-mixed")
    and that uses automatic optimization: Lightning will call ``step()`` without a closure."""
    trainer = getattr(model, "_trainer", None)  # the property raises when no Trainer is attached
    if trainer is None or not getattr(model, "automatic_optimization", False):
        return False
    return getattr(getattr(trainer, "precision_plugin", None), "scaler", None) is not None


def is_accelerate_scaler_patch(step: Any) -> bool:
    """Accelerate's ``AcceleratedOptimizer.step`` replaces ``optimizer.step`` by its own function right
    before ``GradScaler.step(optimizer, closure)``, and only when it has a GradScaler (fp16)."""
    return getattr(step, "__module__", "").split(".")[0] == "accelerate"


def accelerate_accumulation_steps() -> int:
    """Accelerate's ``gradient_accumulation_steps`` when an ``Accelerator`` exists in this process, else 1."""
    state = sys.modules.get("accelerate.state")
    if state is None or not state.GradientState._shared_state:
        return 1
    return int(state.GradientState().num_steps)


def accelerate_mixed_precision() -> str | None:
    """Accelerate's ``mixed_precision`` ("no", "fp16", "bf16", ...) when an ``Accelerator`` exists, else None."""
    state = sys.modules.get("accelerate.state")
    if state is None or not state.AcceleratorState._shared_state:
        return None
    return str(state.AcceleratorState().mixed_precision)


NEEDS_CLOSURE = (
    "SAM.step() was called without a closure and without first_step() before it, so there is no way to "
    "take the second gradient. Pass a closure (forward + backward at the current weights, returning the "
    "loss), or call first_step()/second_step() around your own two passes. A framework calling step() "
    "without a closure is fp16 loss scaling (Lightning precision='16-mixed', Accelerate "
    "mixed_precision='fp16'): use bf16 (precision='bf16-mixed' / mixed_precision='bf16'), or the manual "
    "two-call recipe in docs/frameworks.md, which supports fp16."
)

LIGHTNING_ACCUMULATION = (
    "SAM.step(closure) was called by Lightning with gradients already accumulated from an earlier batch: "
    "Trainer(accumulate_grad_batches > 1) is not SAM (e(w) would come from the accumulated gradient and "
    "the update from the last batch's perturbed gradient only). Use accumulate_grad_batches=1 with a "
    "larger batch, or the paper's m-sharpness chunks on one device (sam.sam_step_chunked)."
)

ACCELERATE_ACCUMULATION = (
    "SAM under Accelerate with gradient_accumulation_steps={steps}: SAM over accumulated micro-batches is "
    "not defined here. Accelerate's optimizer.step(closure) skips the closure on the {skipped} of every "
    "{steps} steps that do not sync, so those batches would never be trained on, and first_step() would "
    "clear the gradient accumulated so far. Use gradient_accumulation_steps=1 with a larger batch."
)

ACCELERATE_FP16 = (
    "SAM.step(closure) under Accelerate with mixed_precision='fp16' is refused before anything ran: "
    "Accelerate's GradScaler wraps step() and cannot unscale gradients that SAM's closure computes "
    "inside it (on the first step it fails before SAM is called; later the closure's scaled gradients "
    "would reach the base optimizer). Use mixed_precision='bf16', or the manual two-call recipe in the "
    "docs/frameworks.md, which supports fp16."
)

LIGHTNING_FP16 = (
    "SAM(model=...) in a LightningModule with automatic optimization and precision='16-mixed' is "
    "refused at setup: Lightning's fp16 plugin runs the closure itself and then calls step() without "
    "it, so SAM could not take its second pass. Use precision='bf16-mixed', or manual optimization "
    "with the manual two-call recipe in docs/frameworks.md, which "
    "supports fp16."
)

ZEROED_GRADIENTS = (
    "SAM.step(closure) found gradients that are present but all zero (zero_grad(set_to_none=False)?): "
    "e(w) would be 0 and the step plain {base}. Clear them with zero_grad() (set_to_none=True) before "
    "step(closure), or run a backward at w first (davda54/sam's pattern)."
)
