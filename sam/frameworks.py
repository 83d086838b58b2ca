"""What ``SAM.step`` can tell about the framework calling it, to refuse what it cannot make exact.

Never imports a framework: it only looks at modules the user has already imported. Used for three
call patterns that would otherwise give silently wrong SAM or a foreign error (README, "Use it in your
framework"): gradient accumulation in Lightning or Accelerate, and fp16 loss scaling around a closure
(Lightning's automatic optimization, Accelerate's prepared optimizer).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any


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
    "two-call recipe in the README section 'Use it in your framework', which supports fp16."
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
    "README section 'Use it in your framework', which supports fp16."
)

LIGHTNING_FP16 = (
    "SAM(model=...) in a LightningModule with automatic optimization and precision='16-mixed' is "
    "refused at setup: Lightning's fp16 plugin runs the closure itself and then calls step() without "
    "it, so SAM could not take its second pass. Use precision='bf16-mixed', or manual optimization "
    "with the manual two-call recipe in the README section 'Use it in your framework', which "
    "supports fp16."
)

ZEROED_GRADIENTS = (
    "SAM.step(closure) found gradients that are present but all zero (zero_grad(set_to_none=False)?): "
    "e(w) would be 0 and the step plain {base}. Clear them with zero_grad() (set_to_none=True) before "
    "step(closure), or run a backward at w first (davda54/sam's pattern)."
)
