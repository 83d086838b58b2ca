"""Mixed precision for the step functions: autocast dtype and, for fp16, a GradScaler."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch

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


def resolve_precision(name: str, device: torch.device | str, init_scale: float = 2.0**16) -> Precision:
    """``auto`` is bf16 on GPUs that support it and fp32 elsewhere (as DESIGN §4)."""
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
