"""The SAM optimizer (Foret et al., ICLR 2021) and its adaptive variant ASAM (Kwon et al., ICML 2021).

One step of SAM, as Algorithm 1 of the paper::

    g      = grad L(w)                          # pass 1, on the batch
    e(w)   = rho * g / ||g||_2                  # norm over ALL parameters together
    g_sam  = grad L(w + e(w))                   # pass 2, same batch
    w      <- base_optimizer_step(w, g_sam)     # w restored exactly first

ASAM (``adaptive=True``) replaces the Euclidean ball with one scaled by T_w = |w| + eta, element-wise:
``e(w) = rho * T_w^2 g / ||T_w g||_2``. Every parameter with a gradient is scaled, biases and BatchNorm
affine parameters included (with ``eta=0`` a parameter that is exactly zero is therefore never perturbed;
that is what ``eta`` is for).

The API is the one of the widely used PyTorch SAM port, so switching is one import::

    optimizer = SAM(model.parameters(), torch.optim.SGD, rho=0.05, lr=0.1, momentum=0.9, nesterov=True)
    loss_fn(model(x), y).backward()
    optimizer.first_step(zero_grad=True)
    loss_fn(model(x), y).backward()
    optimizer.second_step(zero_grad=True)

``step(closure)`` drives the same two passes for frameworks that call ``optimizer.step(closure)``
(Lightning, Accelerate). Learning-rate schedulers attach to ``optimizer.base_optimizer``; ``state_dict``
is the base optimizer's (momentum buffers, step counts), so a resumed run continues bit-exactly.
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
    """L2 norm of all tensors taken together, with fused per-device norms and no host sync."""
    if not tensors:
        raise ValueError("global_grad_norm needs at least one tensor")
    by_device: dict[torch.device, list[Tensor]] = {}
    for t in tensors:
        by_device.setdefault(t.device, []).append(t)
    first = tensors[0].device
    norms = []
    for group in by_device.values():
        per_tensor = torch._foreach_norm(group)
        norms.append(torch.linalg.vector_norm(torch.stack(per_tensor).float()).to(first, non_blocking=True))
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
    def first_step(
        self,
        zero_grad: bool = False,
        *,
        grads: Sequence[Tensor | None] | None = None,
        reuse_saved: bool = False,
    ) -> None:
        """Move every parameter that has a gradient from w to w + e(w).

        ``grads`` (aligned with :meth:`params`) replaces ``p.grad``; such tensors are consumed (scaled in
        place). With ``zero_grad=True`` the ``.grad`` tensors are consumed the same way and then cleared,
        which saves one parameter-sized temporary. The direction is invariant to a common scale of the
        gradients, so still-scaled fp16 gradients (GradScaler) give the same e(w). ``reuse_saved=True``
        promises that w has not changed since the last :meth:`restore` (m-sharpness chunks within one step),
        so the saved copy is reused instead of copied again.
        """
        if self._perturbed:
            raise RuntimeError("first_step() called twice: call second_step() or restore() in between")
        scratch = grads is not None or zero_grad
        if grads is None:
            grads = [p.grad for p in self.params()]
        groups: list[tuple[dict[str, Any], list[Tensor], list[Tensor]]] = []
        flat = iter(grads)
        for group in self.param_groups:
            ps, gs = [], []
            for p in group["params"]:
                g = next(flat)
                if g is not None:
                    ps.append(p)
                    gs.append(g)
            if ps:
                groups.append((group, ps, gs))
        if not groups:
            self.grad_norm = None
            return

        # d = T_w g (ASAM) or g; the norm is over all parameters of all groups together. Scratch gradients
        # and ASAM's T_w g are ours to consume, so d and then e are built in place: no extra copy.
        scales = [self._asam_scale(group, ps) if group["adaptive"] else None for group, ps, _ in groups]
        directions = []
        for (_, _, gs), t in zip(groups, scales):
            if t is not None and scratch:
                torch._foreach_mul_(gs, t)
            directions.append(gs if t is None or scratch else torch._foreach_mul(gs, t))
        norm = global_grad_norm([d for ds in directions for d in ds])
        self.grad_norm = norm

        perturbed = [p for _, ps, _ in groups for p in ps]
        if not (reuse_saved and tuple(id(p) for p in perturbed) == self._saved_for):
            self._save(perturbed)
        for (group, ps, _), t, d in zip(groups, scales, directions):
            for device, (ps_d, ds_d, t_d) in _split_by_device(ps, d, t).items():
                factor = (group["rho"] / (norm + _NORM_EPS)).to(device, non_blocking=True)
                owned = scratch or t_d is not None
                e = ds_d if owned else torch._foreach_mul(ds_d, factor)  # e = rho g / ||g||
                if t_d is not None:  # e = rho T^2 g / ||T g||
                    torch._foreach_mul_(e, t_d)
                if owned:
                    torch._foreach_mul_(e, factor)
                torch._foreach_add_(ps_d, e)
        self._perturbed = perturbed
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
    def _asam_scale(self, group: dict[str, Any], params: list[Tensor]) -> list[Tensor]:
        t = torch._foreach_abs(params)
        if group["eta"]:
            torch._foreach_add_(t, group["eta"])
        return t

    def _save(self, params: list[Tensor]) -> None:
        key = tuple(id(p) for p in params)
        if key != self._saved_for:
            self._saved = [torch.empty_like(p) for p in params]
            self._saved_for = key
        torch._foreach_copy_(self._saved, params)


def _split_by_device(
    ps: list[Tensor], ds: list[Tensor], ts: list[Tensor] | None
) -> dict[torch.device, tuple[list[Tensor], list[Tensor], list[Tensor] | None]]:
    """Foreach kernels and the 0-d scale tensor want one device per call."""
    out: dict[torch.device, tuple[list[Tensor], list[Tensor], list[Tensor] | None]] = {}
    for i, p in enumerate(ps):
        entry = out.setdefault(p.device, ([], [], None if ts is None else []))
        entry[0].append(p)
        entry[1].append(ds[i])
        if ts is not None:
            entry[2].append(ts[i])  # type: ignore[union-attr]
    return out
