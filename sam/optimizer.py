"""The SAM optimizer (Foret et al., ICLR 2021) and its adaptive variant ASAM (Kwon et al., ICML 2021).

Algorithm 1 of the paper (README, "The optimizer loop"): ``first_step`` moves w to w + e(w) with
e(w) = rho g / ||g||_2, the norm over all parameters together; ``second_step`` puts w back exactly (a
copy of the saved w, never w + e - e) and lets the base optimizer step with the gradient taken at
w + e(w). ASAM (``adaptive=True``) scales the ball element-wise by T_w = |w| + eta:
e(w) = rho T_w^2 g / ||T_w g||_2, on every parameter with a gradient (biases and BatchNorm affine
included; with eta = 0 an exactly-zero parameter is never perturbed, which is what eta is for).
The API is davda54/sam's, so switching is one import. What frameworks and davda54/sam's users need
beyond the algorithm is inherited from ``sam/frameworks.py``; each call into it is marked there.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
from torch import Tensor, nn

from sam import frameworks
from sam.batchnorm import bn_stat_buffers
from sam.foreach import global_grad_norm, mul, mul_scalar
from sam.version import __version__

__all__ = ["SAM", "global_grad_norm"]  # global_grad_norm lives in sam.foreach; imported from here too

# Added to ||g|| so that a zero gradient gives e = 0 rather than 0/0. Far below fp32 resolution of any
# real gradient norm, so it never changes a non-degenerate step.
_NORM_EPS = 1e-12

Closure = Callable[[], Tensor]


class SAM(frameworks.FrameworkInterop, torch.optim.Optimizer):
    """Sharpness-Aware Minimization around any ``torch.optim.Optimizer`` class.

    ``base_optimizer`` (e.g. ``torch.optim.SGD``, or a ``functools.partial`` of one) takes the actual step,
    built with ``**base_kwargs`` (lr, momentum, weight_decay, ...). ``rho`` is the paper's radius
    (``rho=0`` is exactly the base optimizer); ``adaptive`` is ASAM with offset ``eta`` (0 as davda54/sam,
    0.01 in the ASAM paper); a param group may set its own ``rho``/``adaptive``/``eta``. With ``model``,
    its BatchNorm running statistics come from pass 1 only however SAM is driven: ``first_step``
    snapshots them, ``restore``/``second_step`` put them back.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        base_optimizer: type[torch.optim.Optimizer] | Callable[..., torch.optim.Optimizer],
        rho: float = 0.05,
        adaptive: bool = False,
        eta: float = 0.0,
        *,
        model: nn.Module | None = None,
        **base_kwargs: Any,
    ) -> None:
        _check_nonnegative_finite("rho", rho)
        _check_nonnegative_finite("eta", eta)
        self._refuse_unsupported_setup(base_optimizer, model)  # (frameworks.py)
        defaults = dict(rho=rho, adaptive=bool(adaptive), eta=eta, **base_kwargs)
        super().__init__(params, defaults)
        # The base optimizer shares our param-group dicts, so lr changes (schedulers) reach both.
        self.base_optimizer = base_optimizer(self.param_groups, **base_kwargs)
        self.param_groups = self.base_optimizer.param_groups
        self.defaults.update(self.base_optimizer.defaults)
        self.model = model
        # What changes between first_step and second_step, in one mutable dict: a wrapper that forwards
        # attribute reads to us (Lightning's LightningOptimizer) then reads and changes the same state.
        self._pass: dict[str, Any] = dict(
            perturbed=[],  # parameters currently sitting at w + e(w)
            saved=[],  # their values at w: one persistent copy, allocated again only if the set changes
            saved_for=(),
            bn_saved=[],  # (buffer, value after pass 1) of ``model``'s BatchNorm statistics
            awaiting_second_step=False,  # first_step ran, the base step not yet
            grad_norm=None,
            held_signals=None,  # (frameworks.py) a framework's checkpointing signal handlers, held while at w + e
        )

    # -- Algorithm 1 ----------------------------------------------------------------------------------
    @torch.no_grad()
    def first_step(self, zero_grad: bool = False, *, grads: Sequence[Tensor | None] | None = None) -> None:
        """Move every parameter that has a gradient from w to w + e(w).

        ``grads`` (aligned with :meth:`params`) replaces ``p.grad``. Those, or with ``zero_grad=True`` the
        ``.grad`` tensors, are consumed (turned into e in place, then cleared): one parameter-sized
        temporary less. e(w) depends on the gradient's direction only: fp16-scaled gradients give it too.
        """
        if self._pass["perturbed"]:
            raise RuntimeError(
                "first_step() called while the weights are still at w + e(w): call second_step() or "
                "restore() in between (under fp16, a GradScaler that skips step() leaves them there: "
                "call restore() before the framework's step())"
            )
        self._refuse_accelerate_accumulation()  # (frameworks.py)
        self._pass["awaiting_second_step"] = True
        if self.model is not None:
            self._pass["bn_saved"] = [(b, b.clone()) for b in bn_stat_buffers(self.model)]
        consume = grads is not None or zero_grad
        groups = self._groups_with_gradients(grads)
        if not groups:
            self._pass["grad_norm"] = None
            return
        # d = T_w g (ASAM) or g; e = rho T_w d / ||d|| (T_w = 1 for SAM). The norm spans all groups.
        scales = [_asam_scale(ps, group["eta"]) if group["adaptive"] else None for group, ps, _ in groups]
        directions = [gs if t is None else mul(gs, t, consume) for (_, _, gs), t in zip(groups, scales)]
        self._pass["grad_norm"] = norm = global_grad_norm([d for ds in directions for d in ds])
        perturbed = [p for _, ps, _ in groups for p in ps]
        self._hold_framework_signals()  # (frameworks.py) until w is back
        self._save(perturbed)
        self._pass["perturbed"] = perturbed
        for (group, ps, _), t, d in zip(groups, scales, directions):
            if t is not None:
                torch._foreach_mul_(d, t)  # d = T_w g is ours (a copy or consumed): T_w^2 g in place
            e = mul_scalar(d, group["rho"] / (norm + _NORM_EPS), in_place=consume or t is not None)
            torch._foreach_add_(ps, e)
        if zero_grad:
            self.zero_grad(set_to_none=True)

    def second_step(self, zero_grad: bool = False) -> None:
        """Restore w exactly, then let the base optimizer step with the gradient taken at w + e(w).

        The base step goes through ``self.step()``, so whatever watches ``step`` sees it: an LR scheduler
        on this object, a framework's wrapper (Lightning counts it; a GradScaler unscales, may skip it).
        """
        self._restore_weights()
        if self._pass["awaiting_second_step"]:
            self.step()
        else:
            self._base_step()
        if zero_grad:
            self.zero_grad(set_to_none=True)

    def restore(self) -> None:
        """Abandon the step: w back bit-exactly, and ``model``'s BatchNorm statistics as after pass 1.

        For a step that a GradScaler skipped (Accelerate: ``optimizer.step_was_skipped``), and on errors.
        """
        self._restore_weights()
        self._pass["awaiting_second_step"] = False

    def step(
        self, closure: Closure | None = None, *, frozen_bn: Callable[[], AbstractContextManager] | None = None
    ) -> Tensor | None:
        """A whole SAM step through a closure (the ``optimizer.step(closure)`` contract), or its end.

        The closure (forward, backward, returns the loss) runs at w, then at w + e(w) inside
        ``frozen_bn()`` if given (e.g. ``lambda: frozen_bn_stats(model)``); returns the loss at w. After
        ``first_step`` (``second_step`` and frameworks' wrappers call ``step()`` there) it ends the step:
        the closure once if given, the base step. Gradients already present: davda54/sam's call, and
        framework patterns that cannot be exact are refused (both in frameworks.py).
        """
        if self._pass["awaiting_second_step"]:  # the end of a step that first_step began
            loss = _call(closure) if closure is not None else None
            self._restore_weights()
            self._base_step()
            return loss
        if closure is None:
            raise ValueError(frameworks.NEEDS_CLOSURE)
        self._refuse_inexact_closure_step()  # (frameworks.py)
        if any(p.grad is not None for p in self.params()):  # davda54/sam's call
            return self._step_from_present_gradients(closure, frozen_bn)  # (frameworks.py)
        loss = _call(self._first_pass_closure(closure))  # (frameworks.py)
        self.first_step(zero_grad=True)
        self._second_pass(closure, frozen_bn)
        self.second_step(zero_grad=True)
        return loss

    # -- Algorithm 1's bookkeeping: the parameters with a gradient, the saved w, the exact restore -------
    def _groups_with_gradients(
        self, grads: Sequence[Tensor | None] | None
    ) -> list[tuple[dict[str, Any], list[Tensor], list[Tensor]]]:
        """(group, params, gradients) for each group, keeping only parameters that have a gradient."""
        flat = iter([p.grad for p in self.params()] if grads is None else grads)
        groups = []
        for group in self.param_groups:
            pairs = [(p, next(flat)) for p in group["params"]]
            pairs = [(p, g) for p, g in pairs if g is not None]
            if pairs:
                groups.append((group, [p for p, _ in pairs], [g for _, g in pairs]))
        return groups

    def _save(self, params: list[Tensor]) -> None:
        """Copy w into the persistent buffers (allocated again only when the set of parameters changes)."""
        key = tuple(id(p) for p in params)
        if key != self._pass["saved_for"]:
            self._pass["saved"] = [torch.empty_like(p) for p in params]
            self._pass["saved_for"] = key
        torch._foreach_copy_(self._pass["saved"], params)

    @torch.no_grad()
    def _restore_weights(self) -> None:
        """w from the saved copy, and ``model``'s BatchNorm statistics from their snapshot."""
        if self._pass["perturbed"]:
            torch._foreach_copy_(self._pass["perturbed"], self._pass["saved"])
            self._pass["perturbed"] = []
        if self._pass["bn_saved"]:
            buffers, values = zip(*self._pass["bn_saved"])
            torch._foreach_copy_(list(buffers), list(values))
            self._pass["bn_saved"] = []
        self._release_framework_signals()  # (frameworks.py)

    def _base_step(self) -> None:
        self._pass["awaiting_second_step"] = False
        self.base_optimizer.step()

    def _second_pass(self, closure: Closure, frozen_bn: Callable[[], AbstractContextManager] | None) -> None:
        """The closure at w + e(w), inside ``frozen_bn()`` if given; w restored if it raises."""
        try:
            with frozen_bn() if frozen_bn is not None else nullcontext():
                _call(closure)
        except BaseException:
            self.restore()
            raise

    # -- the rest of the optimizer interface ----------------------------------------------------------
    def params(self) -> list[Tensor]:
        """All parameters, flattened over groups in order (the order ``first_step(grads=...)`` uses)."""
        return [p for group in self.param_groups for p in group["params"]]

    @property
    def is_perturbed(self) -> bool:
        """True between ``first_step`` and ``second_step``/``restore``: weights are at w + e(w)."""
        return bool(self._pass["perturbed"])

    @property
    def grad_norm(self) -> Tensor | None:
        """||g|| (||T_w g|| for ASAM) of the last ``first_step``; None if no parameter had a gradient."""
        return self._pass["grad_norm"]

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.base_optimizer.zero_grad(set_to_none=set_to_none)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        for key in ("rho", "eta"):
            if key in param_group:
                _check_nonnegative_finite(key, param_group[key])
        if getattr(self, "base_optimizer", None) is None:  # called from Optimizer.__init__
            super().add_param_group(param_group)
            return
        for key in ("rho", "adaptive", "eta"):
            param_group.setdefault(key, self.defaults[key])
        self.base_optimizer.add_param_group(param_group)

    def state_dict(self) -> dict[str, Any]:
        """The base optimizer's state (momentum buffers, step counts) and the shared param groups."""
        if self._pass["perturbed"]:
            raise RuntimeError("state_dict() between first_step() and second_step(): weights are at w+e")
        return self.base_optimizer.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load ours or another SAM port's (davda54/sam): missing rho/adaptive/eta come from our defaults,
        and per-parameter entries no base optimizer writes (davda54's ``old_p``) are dropped."""
        state_dict = self._adopt_foreign_state_dict(state_dict)  # (frameworks.py)
        self.base_optimizer.load_state_dict(state_dict)
        self.param_groups = self.base_optimizer.param_groups

    def __repr__(self) -> str:
        base = type(self.base_optimizer).__name__
        return f"sam-repro {__version__} SAM(base_optimizer={base}, {len(self.param_groups)} group(s))\n" + (
            super().__repr__()
        )


def _asam_scale(params: list[Tensor], eta: float) -> list[Tensor]:
    """T_w = |w| + eta."""
    t = torch._foreach_abs(params)
    if eta:
        torch._foreach_add_(t, eta)
    return t


def _call(closure: Closure) -> Tensor:
    with torch.enable_grad():
        return closure()


def _check_nonnegative_finite(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r} ({type(value).__name__})")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)
