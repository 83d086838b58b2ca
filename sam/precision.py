"""Mixed precision for the step functions: the autocast dtype and, for fp16 only, loss scaling.

This is the one place that knows about ``torch.amp.GradScaler``. The step functions call the methods
below, which are the identity for fp32 and bf16 (no scaler), so their code reads the same for all three.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch
from torch import Tensor

from sam.foreach import global_grad_norm

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass
class Precision:
    """How the forward runs. ``scaler`` is set for fp16 only; bf16 needs none."""

    autocast_dtype: torch.dtype | None
    device_type: str
    scaler: torch.amp.GradScaler | None = None

    @property
    def name(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.autocast_dtype]

    def autocast(self) -> AbstractContextManager:
        if self.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(self.device_type, dtype=self.autocast_dtype)

    # -- loss scaling (fp16); the identity without a scaler ---------------------------------------------
    @property
    def loss_scale(self) -> float:
        """What a loss is multiplied by before backward, so hand-added gradients (L2) match it.

        One host read per step with fp16, where ``GradScaler.step`` synchronises anyway.
        """
        return 1.0 if self.scaler is None else float(self.scaler.get_scale())

    def scale(self, loss: Tensor) -> Tensor:
        return loss if self.scaler is None else self.scaler.scale(loss)

    def backward(self, loss: Tensor) -> None:
        self.scale(loss).backward()

    def overflow_guard(self, first_grad_norm: Tensor | None) -> Tensor | None:
        """With fp16, 1.0, or NaN when the first pass overflowed, to multiply the second loss by.

        Multiplying by exactly 1.0 changes nothing; NaN makes the second gradient non-finite, so the
        GradScaler skips the step and backs off. It travels through DDP's all-reduce, so an overflow on
        any replica skips the step on all of them without an extra collective. None without a scaler.
        """
        if self.scaler is None or first_grad_norm is None:
            return None
        norm = first_grad_norm
        return torch.where(torch.isfinite(norm), torch.ones_like(norm), torch.full_like(norm, float("nan")))

    def clip_and_step(
        self, base: torch.optim.Optimizer, params: list[Tensor], max_norm: float | None
    ) -> tuple[Tensor, Tensor]:
        """Unscale, clip to a global norm, step: (norm before clipping, whether the step was skipped)."""
        if self.scaler is not None:
            self.scaler.unscale_(base)
        if max_norm is not None:
            grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=True)
        else:
            grad_norm = global_grad_norm([p.grad for p in params])
        if self.scaler is None:
            base.step()
            return grad_norm, torch.zeros((), dtype=torch.bool, device=grad_norm.device)
        self.scaler.step(base)
        self.scaler.update()
        return grad_norm, ~torch.isfinite(grad_norm)


def resolve_precision(name: str, device: torch.device | str, init_scale: float = 2.0**16) -> Precision:
    """``auto`` is bf16 on GPUs that support it and fp32 elsewhere (docs/design.md §4)."""
    device = torch.device(device)
    if name not in PRECISIONS:
        raise ValueError(f"precision={name!r} is not one of {', '.join(PRECISIONS)}")
    if name == "auto":
        bf16_ok = device.type == "cuda" and torch.cuda.is_bf16_supported()
        name = "bf16" if bf16_ok else "fp32"
    if name == "fp32":
        return Precision(None, device.type)
    if name == "bf16":
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ValueError(
                f"precision=bf16 on {torch.cuda.get_device_name(device)}, which lacks bf16; use fp16"
            )
        return Precision(torch.bfloat16, device.type)
    if device.type != "cuda":
        raise ValueError(
            f"precision=fp16 needs a CUDA device, got device={device}; use precision=fp32 or bf16 on CPU"
        )
    return Precision(torch.float16, device.type, torch.amp.GradScaler(device.type, init_scale=init_scale))
