"""Flatness of a trained network: top Hessian eigenvalues and the paper's m-sharpness.

The paper (Sec. 4.2, Fig. 3) reports the Hessian's lambda_max and lambda_max / lambda_5 computed with
Lanczos (here scipy's eigsh, ARPACK's restarted Lanczos, on Hessian-vector products), and (Sec. 4.1,
App. C.6) the m-sharpness max_{||eps|| <= rho} L_S(w + eps) - L_S(w) averaged over sets S of m examples.
Both are measurements, not training code, so they live here rather than in the installed ``sam``: they
leave the model exactly as found. m-sharpness and the Hessian-vector products need torch only; the
eigenvalues need scipy (the ``[analysis]`` extra), imported when called.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
from torch import Tensor, nn

from sam import global_grad_norm

LossClosure = Callable[[], Tensor]


def _as_closures(loss_fn: LossClosure | Sequence[LossClosure]) -> list[LossClosure]:
    closures = [loss_fn] if callable(loss_fn) else list(loss_fn)
    if not closures:
        raise ValueError("loss_fn must be a callable or a non-empty sequence of callables")
    return closures


def _grads(loss: Tensor, params: list[Tensor], create_graph: bool) -> list[Tensor]:
    grads = torch.autograd.grad(loss, params, create_graph=create_graph, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)]


def _hvp_from_grads(grads: list[Tensor], params: list[Tensor], vectors: list[Tensor]) -> list[Tensor]:
    # H v = d(g . v)/dw = the vector-Jacobian product of g with v (H is symmetric); keeps the graph of g.
    # A gradient without a graph (a parameter the loss ignores, or enters linearly) has zero Hessian rows.
    live = [i for i, g in enumerate(grads) if g.requires_grad]
    out: list[Tensor | None] = [None] * len(params)
    if live:
        out = list(
            torch.autograd.grad(
                [grads[i] for i in live],
                params,
                grad_outputs=[vectors[i] for i in live],
                retain_graph=True,
                allow_unused=True,
            )
        )
    return [torch.zeros_like(p) if h is None else h.detach() for p, h in zip(params, out, strict=True)]


def hessian_vector_product(
    loss_fn: LossClosure | Sequence[LossClosure], params: Sequence[Tensor], vectors: Sequence[Tensor]
) -> list[Tensor]:
    """H v for the Hessian H of loss_fn() w.r.t. params, by double backward (no Hessian is formed).

    `vectors` has one tensor per parameter, same shapes. A sequence of closures means the sum of their
    losses (evaluated one at a time, so memory is that of one closure).
    """
    params = list(params)
    vectors = [v.detach() for v in vectors]
    if len(vectors) != len(params) or any(v.shape != p.shape for v, p in zip(vectors, params, strict=False)):
        raise ValueError("vectors must have one tensor per parameter with the parameter's shape")
    total = [torch.zeros_like(p) for p in params]
    for closure in _as_closures(loss_fn):
        grads = _grads(closure(), params, create_graph=True)
        for acc, h in zip(total, _hvp_from_grads(grads, params, vectors), strict=True):
            acc.add_(h)
    return total


def _flatten(tensors: Sequence[Tensor]) -> Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def _unflatten(flat: Tensor, like: Sequence[Tensor]) -> list[Tensor]:
    return [chunk.view_as(p) for chunk, p in zip(flat.split([p.numel() for p in like]), like, strict=True)]


def eigsh_top_eigenvalues(
    matvec: Callable[[Tensor], Tensor],
    dim: int,
    k: int = 5,
    tol: float = 1e-3,
    max_iter: int = 100,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> Tensor:
    """Top-k eigenvalues of a symmetric linear map by scipy's ``eigsh`` (ARPACK, implicitly restarted Lanczos).

    ``matvec`` takes and returns a flat tensor of ``dtype`` on ``device``; ARPACK works in float64 on the
    CPU. Stopping rule (ARPACK's): every Ritz pair's residual ||A x - theta x|| <= tol * |theta|, or
    ``max_iter`` restarts (then ArpackNoConvergence). The start vector is drawn from a CPU generator seeded
    with ``seed``. Returns a float64 CPU tensor sorted descending. Needs scipy (the ``[analysis]`` extra),
    imported here so that the Hessian-vector products alone need torch only.
    """
    import numpy as np
    from scipy.sparse.linalg import LinearOperator, eigsh

    if k < 1 or k >= dim:
        raise ValueError(f"k must be in [1, dim={dim}) for eigsh, got {k}")
    if not tol > 0:
        raise ValueError(f"tol must be > 0, got {tol}")
    if max_iter < 1:
        raise ValueError(f"max_iter must be >= 1, got {max_iter}")

    def apply(v: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(v, dtype=np.float64).reshape(-1)).to(device, dtype)
        return matvec(x).detach().to("cpu", torch.float64).numpy()

    operator = LinearOperator((dim, dim), matvec=apply, dtype=np.float64)
    start = torch.randn(dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).numpy()
    values = eigsh(operator, k=k, which="LA", tol=tol, maxiter=max_iter, v0=start, return_eigenvectors=False)
    return torch.from_numpy(np.sort(values)[::-1].copy())


def hessian_eigenvalues(
    loss_fn: LossClosure | Sequence[LossClosure],
    params: list[Tensor],
    k: int = 5,
    tol: float = 1e-3,
    max_iter: int = 100,
    seed: int = 0,
) -> Tensor:
    """Top-k (largest algebraic) eigenvalues of the Hessian of loss_fn() w.r.t. params, sorted descending.

    scipy's eigsh (ARPACK's implicitly restarted Lanczos) on Hessian-vector products (double backward);
    the Hessian is never formed. Stopping rule (see eigsh_top_eigenvalues): every Ritz pair's residual
    ||H x - theta x|| <= tol * |theta|, or max_iter restarts (then ArpackNoConvergence). Returns a float64
    CPU tensor. (Our own Lanczos, which this replaced, reached 3e-4 where eigsh reaches 2e-8 at the same
    tol and a similar number of products: benchmarks/README.md.)

    loss_fn is a closure returning the scalar loss; its graph is built once and reused for every product.
    For a loss too large for one graph, pass a sequence of closures whose losses SUM to the loss (e.g. each
    chunk's summed loss divided by the total number of examples); each product then re-runs them one by
    one. Put the model in the mode you want measured (eval() for BatchNorm running statistics) first.
    Memory: ARPACK's basis, about max(2k + 1, 20) float64 CPU vectors of the size of params.
    """
    params = list(params)
    if not params:
        raise ValueError("params is empty")
    closures = _as_closures(loss_fn)
    dim = sum(p.numel() for p in params)
    if len(closures) == 1:
        grads = _grads(closures[0](), params, create_graph=True)  # one graph, reused by every product

        def hvp(flat: Tensor) -> Tensor:
            return _flatten(_hvp_from_grads(grads, params, _unflatten(flat, params)))

    else:

        def hvp(flat: Tensor) -> Tensor:
            return _flatten(hessian_vector_product(closures, params, _unflatten(flat, params)))

    return eigsh_top_eigenvalues(
        hvp,
        dim,
        k=k,
        tol=tol,
        max_iter=max_iter,
        seed=seed,
        dtype=params[0].dtype,
        device=params[0].device,
    )


def _chunks_of(batches: Iterable[tuple[Tensor, Tensor]], m: int) -> Iterable[tuple[Tensor, Tensor]]:
    """Re-cut (x, y) batches into chunks of exactly m examples (a final remainder < m is dropped)."""
    xs: list[Tensor] = []
    ys: list[Tensor] = []
    held = 0
    for x, y in batches:
        xs.append(x)
        ys.append(y)
        held += len(x)
        if held < m:
            continue
        x_all, y_all = torch.cat(xs), torch.cat(ys)
        full = (held // m) * m
        yield from zip(x_all[:full].split(m), y_all[:full].split(m), strict=True)
        xs, ys, held = [x_all[full:]], [y_all[full:]], held - full


def m_sharpness(
    model: nn.Module,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    batches: Iterable[tuple[Tensor, Tensor]],
    rho: float,
    m: int,
    ascent_steps: int = 1,
    step_size: float | None = None,
) -> float:
    """The paper's m-sharpness: mean over sets S of m examples of max_{||eps|| <= rho} L_S(w+eps) - L_S(w).

    The batches are re-cut into consecutive chunks of exactly m examples (a remainder < m is dropped). For
    each chunk the max is approximated as in the paper's App. C.6 / Table 11: `ascent_steps` steps of
    normalised gradient ascent, eps <- Proj_{||eps|| <= rho}(eps + step_size * g / ||g||) with
    g = grad L_S(w + eps), from eps = 0 and with step_size = rho by default. One step is therefore SAM's
    eps = rho g / ||g||, and the estimate is L_S(w + rho g / ||g||) - L_S(w); with several steps it is the
    largest L_S(w + eps) - L_S(w) over the iterates (each is feasible, so it stays a lower bound). eps spans
    every parameter with requires_grad, under one global L2 norm. loss_fn(outputs, targets) must return
    the chunk's MEAN loss.

    Measured with the model in eval() mode, so BatchNorm uses its running statistics (and dropout is off):
    a chunk of m examples would otherwise be normalised by its own statistics. The train/eval flags and the
    weights are restored exactly (copied back from a saved clone, not by subtracting eps) on exit.
    """
    if not rho >= 0:
        raise ValueError(f"rho must be >= 0, got {rho}")
    if m < 1:
        raise ValueError(f"m must be >= 1, got {m}")
    if ascent_steps < 1:
        raise ValueError(f"ascent_steps must be >= 1, got {ascent_steps}")
    step = rho if step_size is None else step_size
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no parameters with requires_grad=True")
    saved = [p.detach().clone() for p in params]
    modes = {mod: mod.training for mod in model.modules()}
    model.eval()
    total, count = 0.0, 0
    try:
        for x, y in _chunks_of(batches, m):
            with torch.no_grad():
                base = loss_fn(model(x), y).item()
            eps = [torch.zeros_like(p) for p in params]
            rises: list[float] = []  # L_S(w + eps) - L_S(w) at each iterate
            for _ in range(ascent_steps):
                grads = _grads(loss_fn(model(x), y), params, create_graph=False)
                gnorm = global_grad_norm(grads).item()
                if gnorm == 0.0:  # a stationary point of L_S: eps stays where it is
                    rises.append(rises[-1] if rises else 0.0)
                    break
                with torch.no_grad():
                    torch._foreach_add_(eps, grads, alpha=step / gnorm)
                    enorm = global_grad_norm(eps).item()
                    if enorm > rho:  # project back onto the rho-ball
                        torch._foreach_mul_(eps, rho / enorm)
                    for p, w, e in zip(params, saved, eps, strict=True):
                        p.copy_(w + e)
                    rises.append(loss_fn(model(x), y).item() - base)
            with torch.no_grad():
                for p, w in zip(params, saved, strict=True):
                    p.copy_(w)
            total += max(rises)
            count += 1
    finally:
        with torch.no_grad():
            for p, w in zip(params, saved, strict=True):
                p.copy_(w)
        for mod, training in modes.items():
            mod.training = training
    if count == 0:
        raise ValueError(f"fewer than m={m} examples in batches: no chunk to measure")
    return total / count


__all__ = ["eigsh_top_eigenvalues", "hessian_eigenvalues", "hessian_vector_product", "m_sharpness"]
