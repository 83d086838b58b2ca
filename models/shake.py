"""Shake-Shake (Gastaldi 2017) and ShakeDrop (Yamada et al. 2018) as autograd Functions and modules.

Both regularisers scale residual branches by a random coefficient in the forward pass and by a
*different*, independent random coefficient in the backward pass. SAM evaluates the gradient twice on
the same batch, and its two passes must see the same network function, so these modules follow one
protocol (the project's ``true_gradient`` contract):

* Every random number is drawn in ``forward`` with torch's global RNG (``torch.rand`` on the
  activation's device: the CPU or the current CUDA generator), in float32, always in the same order
  and always all of them, whatever ``true_gradient`` says. The SAM step snapshots the RNG state
  before pass 1 and restores it before pass 2, so pass 2 draws exactly pass 1's numbers.
* ``true_gradient = True`` (set by the SAM step for pass 1): the backward pass uses the forward
  coefficient, i.e. the exact gradient of the function computed (the official SAM code's
  ``true_gradient=True``, commit c2b0a5f "true gradient fix").
* ``true_gradient = False`` (default; SAM pass 2 and plain SGD): the backward pass uses the
  independent coefficient beta, the usual "shake".
* ``eval()`` mode draws nothing and uses the expectation of the forward coefficient.

Draw order, one ``torch.rand(B, 1, ..., 1)`` call each (per-image coefficients, the "Image" level of
both papers and of the official SAM code):

* Shake-Shake: ``alpha ~ U[0, 1)``, then ``beta ~ U[0, 1)``.
  Forward ``alpha * a + (1 - alpha) * b``; backward ``dL/da = c * g``, ``dL/db = (1 - c) * g`` with
  ``c = alpha`` (true gradient) or ``c = beta``. Eval: ``0.5 * (a + b)``.
* ShakeDrop: ``u ~ U[0, 1)`` (gate ``b = 1[u < p_l]``, a Bernoulli(p_l) draw), then
  ``alpha = lo + (hi - lo) * U[0, 1)``, then ``beta`` likewise on its range.
  Forward ``(b + alpha - b * alpha) * F``; backward ``(b + c - b * c) * g`` with ``c = alpha`` (true
  gradient) or ``c = beta``. Eval: ``E[b + alpha - b * alpha] * F = (p_l + E[alpha] - p_l E[alpha]) F``.
"""

from __future__ import annotations

import torch
from torch import nn


def _per_image_shape(x: torch.Tensor) -> tuple[int, ...]:
    # (B, 1, 1, 1) for a (B, C, H, W) activation: one coefficient per image, broadcast over the rest.
    return (x.shape[0],) + (1,) * (x.dim() - 1)


def _draw_uniform(x: torch.Tensor, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
    """One per-image draw from U[low, high) with the global RNG of ``x``'s device, in float32."""
    u = torch.rand(_per_image_shape(x), device=x.device, dtype=torch.float32)
    return u if (low, high) == (0.0, 1.0) else low + (high - low) * u


class ShakeShakeFunction(torch.autograd.Function):
    """``y = c_fwd * a + (1 - c_fwd) * b``; backward: ``(c_bwd * g, (1 - c_bwd) * g)``."""

    @staticmethod
    def forward(a: torch.Tensor, b: torch.Tensor, c_fwd: torch.Tensor, c_bwd: torch.Tensor) -> torch.Tensor:
        return a * c_fwd + b * (1 - c_fwd)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.save_for_backward(inputs[3])

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        (c_bwd,) = ctx.saved_tensors
        return grad_out * c_bwd, grad_out * (1 - c_bwd), None, None


class ShakeDropFunction(torch.autograd.Function):
    """``y = s_fwd * f``; backward: ``s_bwd * g`` (the scales are per-image, not learned)."""

    @staticmethod
    def forward(f: torch.Tensor, s_fwd: torch.Tensor, s_bwd: torch.Tensor) -> torch.Tensor:
        return f * s_fwd

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.save_for_backward(inputs[2])

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        (s_bwd,) = ctx.saved_tensors
        return grad_out * s_bwd, None, None


class ShakeShake(nn.Module):
    """Mixes two residual branches; see the module docstring for draws and ``true_gradient``."""

    def __init__(self) -> None:
        super().__init__()
        self.true_gradient = False

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return 0.5 * (a + b)
        alpha = _draw_uniform(a)  # draw 1
        beta = _draw_uniform(a)  # draw 2, drawn even when unused so the RNG stream never depends on mode
        c_bwd = alpha if self.true_gradient else beta
        return ShakeShakeFunction.apply(a, b, alpha.to(a.dtype), c_bwd.to(a.dtype))


class ShakeDrop(nn.Module):
    """Scales a residual branch by ``b + alpha - b * alpha``, ``b ~ Bernoulli(p_survive)``.

    ``p_survive`` is the block's p_l (Yamada et al. keep the block as-is with probability p_l).
    """

    def __init__(
        self,
        p_survive: float,
        alpha_range: tuple[float, float] = (-1.0, 1.0),
        beta_range: tuple[float, float] = (0.0, 1.0),
    ) -> None:
        super().__init__()
        if not 0.0 <= p_survive <= 1.0:
            raise ValueError(f"ShakeDrop p_survive={p_survive!r} must lie in [0, 1]")
        for name, (lo, hi) in (("alpha_range", alpha_range), ("beta_range", beta_range)):
            if not lo <= hi:
                raise ValueError(f"ShakeDrop {name}={(lo, hi)!r} must satisfy low <= high")
        self.p_survive = float(p_survive)
        self.alpha_range = (float(alpha_range[0]), float(alpha_range[1]))
        self.beta_range = (float(beta_range[0]), float(beta_range[1]))
        self.true_gradient = False

    def eval_scale(self) -> float:
        """E[b + alpha - b * alpha] = p + E[alpha] (1 - p), the scale used in eval mode."""
        mean_alpha = 0.5 * (self.alpha_range[0] + self.alpha_range[1])
        return self.p_survive + mean_alpha * (1.0 - self.p_survive)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return f * self.eval_scale()
        gate = (_draw_uniform(f) < self.p_survive).to(torch.float32)  # draw 1: b_l ~ Bernoulli(p_l)
        alpha = _draw_uniform(f, *self.alpha_range)  # draw 2
        beta = _draw_uniform(f, *self.beta_range)  # draw 3, drawn even when unused (fixed RNG stream)
        s_fwd = gate + alpha - gate * alpha
        s_bwd = s_fwd if self.true_gradient else gate + beta - gate * beta
        return ShakeDropFunction.apply(f, s_fwd.to(f.dtype), s_bwd.to(f.dtype))

    def extra_repr(self) -> str:
        return f"p_survive={self.p_survive:.4f}, alpha_range={self.alpha_range}, beta_range={self.beta_range}"
