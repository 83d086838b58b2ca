"""The efficient SAM variants written out from their papers' equations in plain float64 torch.

Independent of ``sam/``: gradients by ``torch.autograd.grad`` of ``functional_call`` losses
(``sam_reference``), every vector as a dict name -> tensor. Each function returns the direction the
base optimizer steps with (before clipping), and the per-run state the next step needs.
"""

from __future__ import annotations

import math

import torch
from sam_reference import grad_at, loss_at, sam_gradient
from torch import Tensor
from torch.func import functional_call

Vec = dict[str, Tensor]


def vdot(a: Vec, b: Vec) -> Tensor:
    return sum((a[k] * b[k]).sum() for k in a)


def norm(a: Vec) -> Tensor:
    return torch.sqrt(vdot(a, a))


def looksam(model, w, x, y, *, step, k, alpha, rho, l2, g_v):
    """Liu et al. 2022, Alg. 1: SAM every k steps storing g_v = g_s - ||g_s|| cos(g, g_s) g/||g||."""
    g = grad_at(model, w, x, y, l2)
    if step % k == 0:
        g_s = sam_gradient(model, w, x, y, rho=rho, l2=l2)
        cos = vdot(g, g_s) / (norm(g) * norm(g_s))
        g_v = {n: g_s[n] - norm(g_s) * cos * g[n] / norm(g) for n in w}
        return g_s, g_v
    return {n: g[n] + alpha * norm(g) / norm(g_v) * g_v[n] for n in w}, g_v


def gsam(model, w, x, y, *, alpha, rho, l2):
    """Zhuang et al. 2022: d = g_s - alpha g_perp, g_perp = g - (g . g_s / ||g_s||^2) g_s."""
    g = grad_at(model, w, x, y, l2)
    g_s = sam_gradient(model, w, x, y, rho=rho, l2=l2)
    coef = vdot(g, g_s) / vdot(g_s, g_s)
    return {n: g_s[n] - alpha * (g[n] - coef * g_s[n]) for n in w}


def sam_on(model, w, x, y, *, rho, l2, norm_keys):
    """Mueller et al. 2023: e = rho g_N / ||g_N|| on the normalization parameters N only."""
    g = grad_at(model, w, x, y, l2)
    gn = {n: g[n] for n in norm_keys}
    scale = rho / norm(gn)
    w_e = {n: w[n] + (scale * g[n] if n in norm_keys else 0.0) for n in w}
    return grad_at(model, w_e, x, y, l2)


def ae_sam_statistics(s: float, mean: float, var: float, *, delta: float, c: float):
    """mu_t = d mu + (1-d) s; var_t = d var + (1-d)(s - mu_t)^2; SAM iff s >= mu_t + c sqrt(var_t)."""
    mean = delta * mean + (1 - delta) * s
    var = delta * var + (1 - delta) * (s - mean) ** 2
    return s >= mean + c * math.sqrt(var), mean, var


def per_example_ce(model, params: Vec, x: Tensor, y: Tensor) -> Tensor:
    logits = functional_call(model, params, (x,))
    return -torch.log_softmax(logits, -1).gather(1, y[:, None]).squeeze(1)


def esam(model, w, x, y, *, rho, beta, gamma, l2, chosen: list[str]):
    """Du et al. 2022: e = rho/beta g_P/||g_P|| on the chosen tensors P; pass 2 on the top gamma n examples
    by l_i(w + e) - l_i(w)."""
    g = grad_at(model, w, x, y, l2)
    gp = {n: g[n] for n in chosen}
    scale = rho / beta / norm(gp) if chosen else 0.0
    w_e = {n: w[n] + (scale * g[n] if n in chosen else 0.0) for n in w}
    with torch.no_grad():
        rise = per_example_ce(model, w_e, x, y) - per_example_ce(model, w, x, y)
    k = min(len(y), max(1, round(gamma * len(y))))
    keep = torch.argsort(rise, descending=True)[:k]
    return grad_at(model, w_e, x[keep], y[keep], l2)


def mesa(model, w, x, y, *, ema: Vec, kl_weight, temperature, l2, active):
    """Du et al. 2022 (MESA): CE + lambda tau^2 KL(softmax(f_ema/tau) || softmax(f_w/tau))."""
    leaves = {n: v.detach().clone().requires_grad_(True) for n, v in w.items()}
    loss = loss_at(model, leaves, x, y, l2)
    if active:
        with torch.no_grad():
            p_t = torch.softmax(functional_call(model, ema, (x,)) / temperature, -1)
        log_p_s = torch.log_softmax(functional_call(model, leaves, (x,)) / temperature, -1)
        kl = (p_t * (torch.log(p_t) - log_p_s)).sum(-1).mean()
        loss = loss + kl_weight * temperature**2 * kl
    grads = torch.autograd.grad(loss, list(leaves.values()))
    return dict(zip(leaves.keys(), grads))


def esam_chunked(model, w, x, y, *, m, **kw):
    """ESAM with m-sharpness: each chunk of m examples its own ESAM gradient; their mean."""
    parts = [esam(model, w, xc, yc, **kw) for xc, yc in zip(x.split(m), y.split(m))]
    return {n: sum(p[n] for p in parts) / len(parts) for n in w}


def ae_sam_chunked_statistic(model, w, x, y, *, m, l2) -> tuple[float, Vec]:
    """AE-SAM's s over chunks: the mean of the chunks' ||g_i||^2, and the SGD direction (mean of the g_i)."""
    g = [grad_at(model, w, xc, yc, l2) for xc, yc in zip(x.split(m), y.split(m))]
    s = sum(float(vdot(gi, gi)) for gi in g) / len(g)
    return s, {n: sum(gi[n] for gi in g) / len(g) for n in w}


def msam(model, w, x, y, *, v: Vec | None, rho, l2):
    """Becker et al. 2024: g = grad L(w - rho v/||v||) with L2 at the perturbed point; no v yet: grad L(w)."""
    if v is None:
        return grad_at(model, w, x, y, l2)
    scale = rho / norm(v)
    return grad_at(model, {n: w[n] - scale * v[n] for n in w}, x, y, l2)


def saf(model, w, x, y, *, past: Tensor | None, kl_weight, temperature, l2):
    """Du et al. 2022 (SAF): CE + lambda tau^2 mean_i KL(softmax(zhat_i/tau) || softmax(f_w(x_i)/tau)), zhat_i
    the outputs recorded for example i E epochs earlier (``past``: None before the loss starts). Returns
    the gradient and the logits at w (what this step records)."""
    leaves = {n: v.detach().clone().requires_grad_(True) for n, v in w.items()}
    loss = loss_at(model, leaves, x, y, l2)
    logits = functional_call(model, leaves, (x,))
    if past is not None:
        p_t = torch.softmax(past / temperature, -1)
        log_p_s = torch.log_softmax(logits / temperature, -1)
        kl = (p_t * (torch.log(p_t) - log_p_s)).sum(-1).mean()
        loss = loss + kl_weight * temperature**2 * kl
    grads = torch.autograd.grad(loss, list(leaves.values()))
    return dict(zip(leaves.keys(), grads)), logits.detach()
