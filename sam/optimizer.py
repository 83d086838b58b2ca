"""The SAM optimizer (Foret et al., ICLR 2021) and its adaptive variant ASAM (Kwon et al., ICML 2021).

One step is Algorithm 1 of the paper, as sketched in the README ("The optimizer"): ``first_step`` moves w
to w + e(w), ``second_step`` restores w exactly and lets the base optimizer step with the gradient taken
there. ASAM (``adaptive=True``) scales the ball element-wise by T_w = |w| + eta:
``e(w) = rho * T_w^2 g / ||T_w g||_2``, on every parameter with a gradient (biases and BatchNorm affine
included; with ``eta=0`` an exactly-zero parameter is never perturbed, which is what ``eta`` is for).
The API is the one of the widely used PyTorch SAM port (davda54/sam), so switching is one import.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import Tensor

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
        base_optimizer: the optimizer *class* that takes the actual step (e.g. ``torch.optim.SGD``).
        rho: radius of the neighbourhood (the paper's rho); ``rho=0`` is exactly the base optimizer.
        adaptive: ASAM; perturbation scaled element-wise by ``|w| + eta``.
        eta: ASAM's offset (0 as the common PyTorch port; the ASAM paper uses 0.01).
        **base_kwargs: passed to ``base_optimizer`` (lr, momentum, nesterov, weight_decay, ...).
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        base_optimizer: type[torch.optim.Optimizer],
        rho: float = 0.05,
        adaptive: bool = False,
        eta: float = 0.0,
        **base_kwargs: Any,
    ) -> None:
        _check_nonnegative_finite("rho", rho)
        _check_nonnegative_finite("eta", eta)
        if not (isinstance(base_optimizer, type) and issubclass(base_optimizer, torch.optim.Optimizer)):
            raise ValueError(
                f"base_optimizer must be a torch.optim.Optimizer class such as torch.optim.SGD "
                f"(the class, not an instance), got {base_optimizer!r}"
            )
        defaults = dict(rho=rho, adaptive=bool(adaptive), eta=eta, **base_kwargs)
        super().__init__(params, defaults)
        # The base optimizer shares our param-group dicts, so lr changes (schedulers) reach both.
        self.base_optimizer = base_optimizer(self.param_groups, **base_kwargs)
        self.param_groups = self.base_optimizer.param_groups
        self.defaults.update(self.base_optimizer.defaults)
        self._perturbed: list[Tensor] = []  # parameters currently sitting at w + e(w)
        self._saved: list[Tensor] = []  # their values at w, one persistent copy reused every step
        self._saved_for: tuple[int, ...] = ()
        self.grad_norm: Tensor | None = None  # ||g|| (||T_w g|| for ASAM) of the last first_step

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
        return bool(self._perturbed)

    # -- the two halves of a step -------------------------------------------------------------------
    @torch.no_grad()
    def first_step(self, zero_grad: bool = False, *, grads: Sequence[Tensor | None] | None = None) -> None:
        """Move every parameter that has a gradient from w to w + e(w).

        ``grads`` (aligned with :meth:`params`) replaces ``p.grad``. Either those tensors or, with
        ``zero_grad=True``, the ``.grad`` tensors are consumed (turned into e in place, then cleared),
        which saves a parameter-sized temporary. e(w) depends only on the gradient's direction, so
        still-scaled fp16 gradients (GradScaler) give the same e(w).
        """
        if self._perturbed:
            raise RuntimeError("first_step() called twice: call second_step() or restore() in between")
        consume = grads is not None or zero_grad
        groups = self._groups_with_gradients(grads)
        if not groups:
            self.grad_norm = None
            return
        # d = T_w g (ASAM) or g; e = rho T_w d / ||d|| (T_w = 1 for SAM). The norm spans all groups.
        scales = [_asam_scale(group, ps) if group["adaptive"] else None for group, ps, _ in groups]
        directions = [gs if t is None else _mul(gs, t, consume) for (_, _, gs), t in zip(groups, scales)]
        self.grad_norm = norm = global_grad_norm([d for ds in directions for d in ds])
        perturbed = [p for _, ps, _ in groups for p in ps]
        self._save(perturbed)
        self._perturbed = perturbed
        for (group, ps, _), t, d in zip(groups, scales, directions):
            if t is not None:
                torch._foreach_mul_(d, t)  # d = T_w g is ours (a copy or consumed): T_w^2 g in place
            e = _mul_scalar(d, group["rho"] / (norm + _NORM_EPS), in_place=consume or t is not None)
            torch._foreach_add_(ps, e)
        if zero_grad:
            self.zero_grad(set_to_none=True)

    @torch.no_grad()
    def restore(self) -> None:
        """Put every perturbed parameter back at w, bit-exactly (a copy, never w + e - e)."""
        if self._perturbed:
            torch._foreach_copy_(self._perturbed, self._saved)
            self._perturbed = []

    @torch.no_grad()
    def second_step(self, zero_grad: bool = False) -> None:
        """Restore w exactly, then let the base optimizer step with the gradient taken at w + e(w)."""
        self.restore()
        self.base_optimizer.step()
        if zero_grad:
            self.zero_grad(set_to_none=True)

    def step(
        self, closure: Callable[[], Tensor] | None = None, *, frozen_bn: Callable[[], Any] | None = None
    ) -> Tensor:
        """Both passes through a closure (the Lightning / Accelerate contract).

        The closure must zero the gradients, run forward and backward, and return the loss; it is
        called twice (at w, then at w + e(w)) and the loss at w is returned. ``frozen_bn`` optionally
        names a context-manager factory for the second call, e.g. ``lambda: frozen_bn_stats(model)``,
        so that BatchNorm statistics move once per step as with the two-call API.
        """
        if closure is None:
            raise ValueError(
                "SAM.step needs a closure (zero_grad + forward + backward, returning the loss); "
                "without one, call first_step() and second_step() around your own two passes"
            )
        with torch.enable_grad():
            loss = closure()
        self.first_step(zero_grad=True)
        try:
            with torch.enable_grad():
                if frozen_bn is None:
                    closure()
                else:
                    with frozen_bn():
                        closure()
        except BaseException:
            self.restore()
            raise
        self.second_step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.base_optimizer.zero_grad(set_to_none=set_to_none)

    # -- checkpointing --------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The base optimizer's state (momentum buffers, step counts) and the shared param groups."""
        if self._perturbed:
            raise RuntimeError("state_dict() between first_step() and second_step(): weights are at w+e")
        return self.base_optimizer.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.base_optimizer.load_state_dict(state_dict)
        self.param_groups = self.base_optimizer.param_groups

    # -- internals ------------------------------------------------------------------------------------
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
        if key != self._saved_for:
            self._saved = [torch.empty_like(p) for p in params]
            self._saved_for = key
        torch._foreach_copy_(self._saved, params)


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
