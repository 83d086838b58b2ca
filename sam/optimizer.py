"""The SAM optimizer (Foret et al., ICLR 2021) and its adaptive variant ASAM (Kwon et al., ICML 2021).

One step is Algorithm 1 of the paper, as sketched in the README ("The optimizer"): ``first_step`` moves w
to w + e(w), ``second_step`` restores w exactly and lets the base optimizer step with the gradient taken
there. ASAM (``adaptive=True``) scales the ball element-wise by T_w = |w| + eta:
``e(w) = rho * T_w^2 g / ||T_w g||_2``, on every parameter with a gradient (biases and BatchNorm affine
included; with ``eta=0`` an exactly-zero parameter is never perturbed, which is what ``eta`` is for).
The API is the one of the widely used PyTorch SAM port (davda54/sam), so switching is one import.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable, Iterable, Sequence
from contextlib import nullcontext
from typing import Any

import torch
from torch import Tensor, nn

from sam import frameworks
from sam.batchnorm import bn_stat_buffers
from sam.version import __version__

# Added to ||g|| so that a zero gradient gives e = 0 rather than 0/0. Far below fp32 resolution of any
# real gradient norm, so it never changes a non-degenerate step.
_NORM_EPS = 1e-12


def _check_nonnegative_finite(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r} ({type(value).__name__})")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def global_grad_norm(tensors: Sequence[Tensor]) -> Tensor:
    """L2 norm of all tensors taken together, with fused per-device norms and no host sync.

    Computed in float32 for float32 / bf16 / fp16 tensors and in float64 for float64 ones."""
    if not tensors:
        raise ValueError("global_grad_norm needs at least one tensor")
    by_device: dict[torch.device, list[Tensor]] = {}
    for t in tensors:
        by_device.setdefault(t.device, []).append(t)
    first = tensors[0].device
    norms = []
    for group in by_device.values():
        per_tensor = torch.stack(torch._foreach_norm(group))
        per_tensor = per_tensor.to(torch.promote_types(per_tensor.dtype, torch.float32))
        norms.append(torch.linalg.vector_norm(per_tensor).to(first, non_blocking=True))
    return norms[0] if len(norms) == 1 else torch.linalg.vector_norm(torch.stack(norms))


class SAM(torch.optim.Optimizer):
    """Sharpness-Aware Minimization wrapped around any ``torch.optim.Optimizer`` class.

    Args:
        params: parameters or parameter groups; a group may set its own ``rho``/``adaptive``/``eta``.
        base_optimizer: the optimizer class that takes the actual step (e.g. ``torch.optim.SGD``), or a
            ``functools.partial`` of one (timm's ``get_optimizer_class``, Hydra's ``_partial_``).
        rho: radius of the neighbourhood (the paper's rho); ``rho=0`` is exactly the base optimizer.
        adaptive: ASAM; perturbation scaled element-wise by ``|w| + eta``.
        eta: ASAM's offset (0 as the common PyTorch port; the ASAM paper uses 0.01).
        model: the module whose BatchNorm running statistics the second pass must not move: with it,
            ``first_step`` snapshots them and ``restore``/``second_step`` put them back, so statistics
            come from pass 1 only however SAM is driven (``step(closure)`` in Lightning, Accelerate).
            A LightningModule with automatic optimization under fp16 ``"16-mixed"`` is refused here, at
            setup, as Lightning would call ``step()`` without the closure.
        **base_kwargs: passed to ``base_optimizer`` (lr, momentum, nesterov, weight_decay, ...).
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
        _check_base_optimizer(base_optimizer)
        if model is not None and frameworks.lightning_fp16_automatic(model):
            raise ValueError(frameworks.LIGHTNING_FP16)
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
            awaiting_second_step=False,  # first_step ran, second_step not yet
            grad_norm=None,
        )

    def __repr__(self) -> str:
        base = type(self.base_optimizer).__name__
        return f"sam-repro {__version__} SAM(base_optimizer={base}, {len(self.param_groups)} group(s))\n" + (
            super().__repr__()
        )

    def __setattr__(self, name: str, value: Any) -> None:
        # Accelerate's fp16 wrapper patches ``step`` just before its GradScaler calls it: refuse the
        # closure form there, with our message, before the scaler asserts or anything runs.
        pending = self.__dict__.get("_pass", {}).get("awaiting_second_step", True)
        if name == "step" and not pending and frameworks.is_accelerate_scaler_patch(value):
            raise RuntimeError(frameworks.ACCELERATE_FP16)
        super().__setattr__(name, value)

    # -- parameter groups -------------------------------------------------------------------------
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

    # -- the two halves of a step -------------------------------------------------------------------
    @torch.no_grad()
    def first_step(self, zero_grad: bool = False, *, grads: Sequence[Tensor | None] | None = None) -> None:
        """Move every parameter that has a gradient from w to w + e(w).

        ``grads`` (aligned with :meth:`params`) replaces ``p.grad``. Either those tensors or, with
        ``zero_grad=True``, the ``.grad`` tensors are consumed (turned into e in place, then cleared),
        which saves a parameter-sized temporary. e(w) depends only on the gradient's direction, so
        still-scaled fp16 gradients (GradScaler) give the same e(w).
        """
        if self._pass["perturbed"]:
            raise RuntimeError(
                "first_step() called while the weights are still at w + e(w): call second_step() or "
                "restore() in between (under fp16, a GradScaler that skips step() leaves them there: "
                "call restore() before the framework's step())"
            )
        _refuse_accelerate_accumulation()
        self._pass["awaiting_second_step"] = True
        if self.model is not None:
            self._pass["bn_saved"] = [(b, b.clone()) for b in bn_stat_buffers(self.model)]
        consume = grads is not None or zero_grad
        groups = self._groups_with_gradients(grads)
        if not groups:
            self._pass["grad_norm"] = None
            return
        # d = T_w g (ASAM) or g; e = rho T_w d / ||d|| (T_w = 1 for SAM). The norm spans all groups.
        scales = [_asam_scale(group, ps) if group["adaptive"] else None for group, ps, _ in groups]
        directions = [gs if t is None else _mul(gs, t, consume) for (_, _, gs), t in zip(groups, scales)]
        self._pass["grad_norm"] = norm = global_grad_norm([d for ds in directions for d in ds])
        perturbed = [p for _, ps, _ in groups for p in ps]
        self._save(perturbed)
        self._pass["perturbed"] = perturbed
        for (group, ps, _), t, d in zip(groups, scales, directions):
            if t is not None:
                torch._foreach_mul_(d, t)  # d = T_w g is ours (a copy or consumed): T_w^2 g in place
            e = _mul_scalar(d, group["rho"] / (norm + _NORM_EPS), in_place=consume or t is not None)
            torch._foreach_add_(ps, e)
        if zero_grad:
            self.zero_grad(set_to_none=True)

    def restore(self) -> None:
        """Abandon the step: every perturbed parameter back at w, bit-exactly (a copy, never w + e - e).

        With ``model``, its BatchNorm statistics go back to their values after pass 1 as well. For a
        step that a GradScaler skipped (Accelerate: ``optimizer.step_was_skipped``), and on errors.
        """
        self._restore_weights()
        self._pass["awaiting_second_step"] = False

    def second_step(self, zero_grad: bool = False) -> None:
        """Restore w exactly, then let the base optimizer step with the gradient taken at w + e(w).

        The base step goes through ``self.step()``, so whatever watches ``step`` sees it: an LR
        scheduler attached to this object, and a framework's wrapper (Lightning's ``LightningOptimizer``
        counts it in ``global_step``; a GradScaler unscales before it and may skip it, w restored).
        """
        self._restore_weights()
        if self._pass["awaiting_second_step"]:
            self.step()
        else:
            self._base_step()
        if zero_grad:
            self.zero_grad(set_to_none=True)

    def step(
        self, closure: Callable[[], Tensor] | None = None, *, frozen_bn: Callable[[], Any] | None = None
    ) -> Tensor | None:
        """A whole SAM step through a closure (the ``optimizer.step(closure)`` contract), or its end.

        - After ``first_step`` (``second_step`` and frameworks' wrappers call ``step()`` there): calls the
          closure once if given (wrappers pass one that does nothing) and takes the base step.
        - Gradients already present (davda54/sam's ``loss.backward(); optimizer.step(closure)``): e(w)
          from them, the closure once at w + e(w), base step; returns None, as davda54/sam.
        - Otherwise: the closure at w, then at w + e(w); returns the loss at w.

        The closure runs forward and backward and returns the loss (zeroing gradients in it is
        allowed, not needed). ``frozen_bn`` (e.g. ``lambda: frozen_bn_stats(model)``) is entered around
        the call at w + e(w); ``SAM(..., model=model)`` does the same without it. Framework patterns
        that cannot be exact raise ``RuntimeError`` (gradient accumulation, Accelerate's fp16).
        """
        if self._pass["awaiting_second_step"]:
            loss = _call(closure) if closure is not None else None
            self._restore_weights()
            self._base_step()
            return loss
        if closure is None:
            raise ValueError(frameworks.NEEDS_CLOSURE)
        _refuse_framework_patterns(closure)
        davda54_pattern = any(p.grad is not None for p in self.params())
        if davda54_pattern and frameworks.is_lightning_closure(closure):
            raise RuntimeError(frameworks.LIGHTNING_ACCUMULATION)
        loss = None if davda54_pattern else _call(closure)
        self.first_step(zero_grad=True)
        if davda54_pattern and self.grad_norm is not None and not bool(self.grad_norm > 0):
            self.restore()
            raise RuntimeError(frameworks.ZEROED_GRADIENTS.format(base=type(self.base_optimizer).__name__))
        try:
            with frozen_bn() if frozen_bn is not None else nullcontext():
                _call(closure)
        except BaseException:
            self.restore()
            raise
        self.second_step(zero_grad=True)
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.base_optimizer.zero_grad(set_to_none=set_to_none)

    # -- checkpointing --------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The base optimizer's state (momentum buffers, step counts) and the shared param groups."""
        if self._pass["perturbed"]:
            raise RuntimeError("state_dict() between first_step() and second_step(): weights are at w+e")
        return self.base_optimizer.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load ours or another SAM port's (davda54/sam): missing rho/adaptive/eta come from our defaults,
        and per-parameter entries no base optimizer writes (davda54's ``old_p``) are dropped."""
        state_dict = _adopt_foreign_state_dict(state_dict, self.defaults)
        self.base_optimizer.load_state_dict(state_dict)
        self.param_groups = self.base_optimizer.param_groups

    # -- internals ------------------------------------------------------------------------------------
    @torch.no_grad()
    def _restore_weights(self) -> None:
        if self._pass["perturbed"]:
            torch._foreach_copy_(self._pass["perturbed"], self._pass["saved"])
            self._pass["perturbed"] = []
        if self._pass["bn_saved"]:
            buffers, values = zip(*self._pass["bn_saved"])
            torch._foreach_copy_(list(buffers), list(values))
            self._pass["bn_saved"] = []

    def _base_step(self) -> None:
        self._pass["awaiting_second_step"] = False
        self.base_optimizer.step()

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


def _asam_scale(group: dict[str, Any], params: list[Tensor]) -> list[Tensor]:
    """T_w = |w| + eta."""
    t = torch._foreach_abs(params)
    if group["eta"]:
        torch._foreach_add_(t, group["eta"])
    return t


def _mul(tensors: list[Tensor], others: list[Tensor], in_place: bool) -> list[Tensor]:
    if in_place:
        torch._foreach_mul_(tensors, others)
        return tensors
    return list(torch._foreach_mul(tensors, others))


def _mul_scalar(tensors: list[Tensor], factor: Tensor, in_place: bool) -> list[Tensor]:
    """``tensors * factor`` for a 0-d tensor, moved to each device once (fused kernels want one device)."""
    out = list(tensors)
    by_device: dict[torch.device, list[int]] = {}
    for i, t in enumerate(tensors):
        by_device.setdefault(t.device, []).append(i)
    for device, index in by_device.items():
        part = [tensors[i] for i in index]
        f = factor.to(device, non_blocking=True)
        if in_place:
            torch._foreach_mul_(part, f)
        else:
            for i, r in zip(index, torch._foreach_mul(part, f)):
                out[i] = r
    return out


def _call(closure: Callable[[], Tensor]) -> Tensor:
    with torch.enable_grad():
        return closure()


def _refuse_accelerate_accumulation() -> None:
    steps = frameworks.accelerate_accumulation_steps()
    if steps > 1:
        raise RuntimeError(frameworks.ACCELERATE_ACCUMULATION.format(steps=steps, skipped=steps - 1))


def _refuse_framework_patterns(closure: Callable[[], Tensor]) -> None:
    _refuse_accelerate_accumulation()
    if frameworks.accelerate_mixed_precision() == "fp16":
        raise RuntimeError(frameworks.ACCELERATE_FP16)


def _check_base_optimizer(base: Any) -> None:
    """An Optimizer subclass, or functools.partial(s) of one."""
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


# Per-parameter state other SAM ports keep in their own state_dict (davda54/sam: the saved w).
_FOREIGN_STATE_KEYS = ("old_p", "e_w")


def _adopt_foreign_state_dict(state_dict: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    groups = [
        {**{k: defaults[k] for k in ("rho", "adaptive", "eta")}, **g} for g in state_dict["param_groups"]
    ]
    state, dropped = {}, set()
    for index, entry in state_dict["state"].items():
        dropped.update(k for k in entry if k in _FOREIGN_STATE_KEYS)
        kept = {k: v for k, v in entry.items() if k not in _FOREIGN_STATE_KEYS}
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
