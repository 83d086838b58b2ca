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
  Accelerate's prepared optimizer);
- **Lightning's closure and signals**: pass 1 calls the training-step closure inside Lightning's wrapper
  (clipping and ``on_before_optimizer_step`` run once, on the SAM gradient), and Lightning's signal
  handlers (SLURM requeue: a checkpoint) wait while the weights are at w + e(w).

Never imports a framework: it only looks at modules the user has already imported.
"""

from __future__ import annotations

import functools
import signal
import sys
import threading
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
        if lightning_accumulates(closure):
            raise RuntimeError(LIGHTNING_ACCUMULATION)
        self.first_step(zero_grad=True)
        if self.grad_norm is not None and not bool(self.grad_norm > 0):
            self.restore()
            raise RuntimeError(ZEROED_GRADIENTS.format(base=type(self.base_optimizer).__name__))
        self._second_pass(closure, frozen_bn)
        self.second_step(zero_grad=True)
        return None

    @staticmethod
    def _first_pass_closure(closure: Callable[[], Tensor]) -> Callable[[], Tensor]:
        """The closure to call at w. Lightning's automatic optimization hands ``step`` its closure wrapped
        in ``plugin._wrap_closure``, which runs ``on_before_optimizer_step`` and gradient clipping after
        it; at w that would clip the gradient e(w) is taken from (value clipping turns its direction).
        Pass 1 calls the closure inside the wrapper, so hooks and clipping run once, on the final gradient."""
        inner = lightning_inner_closure(closure)
        return closure if inner is None else inner

    def _hold_framework_signals(self) -> None:
        """Before w moves to w + e(w): a framework's signal handler that checkpoints (Lightning's SLURM
        requeue on SIGUSR1) would save w + e(w), and ``state_dict()`` refuses to, so the handler would
        fail, save nothing and never requeue. Until w is back, such signals are recorded, not handled."""
        if self._pass.get("held_signals") is not None or not lightning_imported():
            return
        if threading.current_thread() is not threading.main_thread():
            return
        handlers = lightning_signal_handlers()
        if not handlers:
            return
        received: list[tuple[int, Any]] = []
        self._pass["held_signals"] = (handlers, received)
        for signum in handlers:
            signal.signal(signum, lambda num, frame: received.append((num, frame)))

    def _release_framework_signals(self) -> None:
        """Once w is back (``second_step``/``restore``): the framework's handlers again, and the signals that
        arrived in between handled now, so a checkpoint holds w and a state_dict SAM can give."""
        held = self._pass.get("held_signals")
        if held is None:
            return
        self._pass["held_signals"] = None
        handlers, received = held
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
        for signum, frame in received:
            handlers[signum](signum, frame)

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


def lightning_inner_closure(closure: Callable[[], Any]) -> Callable[[], Any] | None:
    """The training-step closure inside Lightning's ``partial(plugin._wrap_closure, model, optimizer,
    closure)``, or None when ``closure`` is not that (any other caller, or a Lightning that wraps otherwise)."""
    if not is_lightning_closure(closure) or getattr(closure.func, "__name__", "") != "_wrap_closure":
        return None
    args = getattr(closure, "args", ())
    if len(args) != 3 or closure.keywords or not callable(args[2]):
        return None
    return args[2]


def lightning_accumulates(closure: Callable[[], Any]) -> bool:
    """A Lightning closure on a Trainer with ``accumulate_grad_batches > 1`` (gradients present at ``step``
    are then an earlier batch's; without accumulation they are the user's own pass 1, davda54's port)."""
    if not is_lightning_closure(closure):
        return False
    trainer = getattr(next(iter(getattr(closure, "args", ())), None), "_trainer", None)
    return int(getattr(trainer, "accumulate_grad_batches", 1) or 1) > 1


def lightning_imported() -> bool:
    return "lightning" in sys.modules or "pytorch_lightning" in sys.modules


def lightning_signal_handlers() -> dict[int, Callable[[int, Any], Any]]:
    """The signals whose current handler is Lightning's (its ``_SignalConnector`` installs them in fit)."""
    found = {}
    for name in ("SIGUSR1", "SIGUSR2", "SIGHUP", "SIGTERM", "SIGINT"):
        signum = getattr(signal, name, None)  # Windows has no SIGUSR1
        if signum is None:
            continue
        handler = signal.getsignal(signum)
        if callable(handler) and type(handler).__module__.split(".")[0] in ("lightning", "pytorch_lightning"):
            found[int(signum)] = handler
    return found


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
