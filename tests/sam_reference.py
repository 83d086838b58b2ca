"""SAM written out from the equations in plain torch, independent of ``sam/`` (the tests' oracle)."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.func import functional_call


def loss_at(model, params: dict[str, Tensor], x: Tensor, y: Tensor, l2: float) -> Tensor:
    out = functional_call(model, params, (x,))
    loss = torch.nn.functional.cross_entropy(out, y)
    if l2:
        loss = loss + 0.5 * l2 * sum((p**2).sum() for p in params.values())
    return loss


def grad_at(model, params: dict[str, Tensor], x: Tensor, y: Tensor, l2: float) -> dict[str, Tensor]:
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}
    loss = loss_at(model, leaves, x, y, l2)
    grads = torch.autograd.grad(loss, list(leaves.values()))
    return dict(zip(leaves.keys(), grads))


def sam_gradient(model, w, x, y, *, rho, l2=0.0, adaptive=False, eta=0.0) -> dict[str, Tensor]:
    """g = grad L(w); e = rho T^2 g / ||T g|| (T = |w| + eta for ASAM, else 1); return grad L(w + e)."""
    g = grad_at(model, w, x, y, l2)
    t = {k: (w[k].abs() + eta) if adaptive else torch.ones_like(w[k]) for k in w}
    norm = torch.sqrt(sum(((t[k] * g[k]) ** 2).sum() for k in w))
    e = {k: rho * t[k] ** 2 * g[k] / (norm + 1e-12) for k in w}
    return grad_at(model, {k: w[k] + e[k] for k in w}, x, y, l2)


def clip(grads: dict[str, Tensor], max_norm: float | None) -> dict[str, Tensor]:
    if max_norm is None:
        return grads
    norm = torch.sqrt(sum((g**2).sum() for g in grads.values()))
    coef = min(1.0, max_norm / (float(norm) + 1e-6))
    return {k: g * coef for k, g in grads.items()}


def nesterov_sgd(w, buf, grads, *, lr, momentum=0.9, decoupled_wd=0.0, decay_keys=()):
    """torch.optim.SGD(nesterov=True) written out: d = g + wd w; b = mu b + d; w -= lr (d + mu b)."""
    new_w, new_buf = {}, {}
    for k in w:
        d = grads[k] + (decoupled_wd * w[k] if k in decay_keys else 0.0)
        b = d.clone() if buf.get(k) is None else momentum * buf[k] + d
        new_buf[k] = b
        new_w[k] = w[k] - lr * (d + momentum * b)
    return new_w, new_buf
