"""MESA (Du, Zhou, Feng, Tan & Zhou, "Sharpness-Aware Training for Free", NeurIPS 2022): the memory-
efficient variant of SAF, a sharpness-aware loss with no second pass.

An exponential moving average of the weights is the teacher; from step ``start_step`` on, the loss gets a
trajectory term, the KL divergence from the teacher's softened outputs to the model's::

    v <- decay v + (1 - decay) w                               (after every step; BN buffers too)
    L = CE(f_w(x), y) + lambda tau^2 KL(softmax(f_v(x)/tau) || softmax(f_w(x)/tau))

as the authors' ``MESA_train.py`` (AngusDujw/SAF): ``--reinforce`` lambda = 0.8 (README and run.sh for
MESA), ``--temperature`` tau = 5, timm's ``ModelEmaV2`` with ``--model-ema-decay`` 0.9998 (timm's default,
which the authors' run.sh keeps), teacher in eval mode, and the loss on while ``epoch > kl_start_epoch``
with ``--kl_start_epoch 5`` (0-based epochs): from the 7th epoch, i.e. our ``start_epoch`` 6 (the first
0-based epoch with the loss; the factory turns it into ``start_step``). One plain SGD step per batch plus
one teacher forward without gradients; memory one copy of w (+ buffers). The EMA is per-run state in
``state_dict()``. rho is not used.

A MESA whose trajectory loss would start at or after the run's last step (or whose lambda is 0) is plain
SGD: it is refused when built, naming ``start_epoch``.

Composes with m-chunks (the chunks of SGD; each chunk's loss gets the teacher outputs of its examples),
per-replica DDP (the EMA of identical weights is identical on every replica) and fp16/bf16 (the teacher
runs under the same autocast). The train loss reported is the cross-entropy part, comparable with SGD's.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

from sam.steps import StepFn, sgd_step, sgd_step_chunked
from sam.variants.base import VariantSAM, check_range


def refuse_if_never_on(
    name: str, start_step: int, total_steps: int | None, steps_per_epoch: int | None
) -> None:
    """A trajectory loss that starts at or after the last step leaves the run plain SGD: ValueError."""
    if total_steps is None or start_step < total_steps:
        return
    where = f"step {start_step}"
    if steps_per_epoch:
        where = f"epoch {start_step / steps_per_epoch:g} (step {start_step})"
    raise ValueError(
        f"{name}: the trajectory loss would start at {where}, but the run has only {total_steps} steps, so "
        f"it would never turn on and the run would be plain SGD recorded as {name}: lower "
        "optimizer.variant.start_epoch below the run's epochs, or train for more epochs"
    )


def trajectory_loss(student: Tensor, teacher: Tensor, temperature: float) -> Tensor:
    """tau^2 KL(softmax(teacher/tau) || softmax(student/tau)), summed over classes, mean over examples."""
    t = temperature
    dtype = torch.promote_types(student.dtype, torch.float32)  # fp32 at least (bf16/fp16 logits)
    log_p_student = nn.functional.log_softmax(student.to(dtype) / t, dim=-1)
    log_p_teacher = nn.functional.log_softmax(teacher.to(dtype) / t, dim=-1)
    kl = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(-1).mean()
    return kl * t * t


class MESA(VariantSAM):
    variant_name = "mesa"

    def __init__(
        self,
        params: Iterable[Any],
        base_optimizer: type[torch.optim.Optimizer],
        *,
        model: nn.Module,
        decay: float = 0.9998,
        kl_weight: float = 0.8,
        temperature: float = 5.0,
        start_step: int = 0,
        total_steps: int | None = None,
        steps_per_epoch: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(params, base_optimizer, **kwargs)
        self.decay = check_range("decay", decay, 0.0, 1.0)
        self.kl_weight = check_range("kl_weight", kl_weight, 0.0, float("inf"), low_open=True)
        self.temperature = check_range("temperature", temperature, 0.0, float("inf"), low_open=True)
        if isinstance(start_step, bool) or not isinstance(start_step, int) or start_step < 0:
            raise ValueError(f"start_step={start_step!r} is invalid: it must be an integer >= 0")
        self.start_step = start_step
        refuse_if_never_on("mesa", start_step, total_steps, steps_per_epoch)
        self.model = model  # the plain module (not DDP / compiled): the teacher runs it functionally
        self.ema = {k: v.detach().clone() for k, v in model.state_dict().items()}

    # -- teacher --------------------------------------------------------------------------------------------
    @torch.no_grad()
    def teacher_logits(self, x: Tensor, autocast) -> Tensor:
        modes = [(m, m.training) for m in self.model.modules()]
        self.model.eval()
        try:
            with autocast():
                return functional_call(self.model, self.ema, (x,))
        finally:
            for module, mode in modes:
                module.training = mode

    @torch.no_grad()
    def update_ema(self) -> None:
        for name, value in self.model.state_dict().items():
            target = self.ema[name]
            if target.is_floating_point():
                target.lerp_(value.detach(), 1.0 - self.decay)
            else:
                target.copy_(value)

    def variant_state(self) -> dict[str, Any]:
        return {**super().variant_state(), "ema": dict(self.ema)}

    def load_variant_state(self, state: dict[str, Any]) -> None:
        super().load_variant_state(state)
        missing = set(self.ema) ^ set(state["ema"])
        if missing:
            raise ValueError(f"mesa state does not match the model (keys differ: {sorted(missing)[:5]})")
        for k, v in state["ema"].items():
            self.ema[k] = v.to(device=self.ema[k].device, dtype=self.ema[k].dtype).clone()

    # -- the step ---------------------------------------------------------------------------------------------
    def make_step(self, m: int | None, per_device_batch: int) -> StepFn:
        whole = m is None or m == per_device_batch
        sgd_fn = sgd_step if whole else partial(sgd_step_chunked, m=m)
        chunk = per_device_batch if whole else m

        def step(model, optimizer, x, y, opts):
            if self.steps_taken >= self.start_step and self.kl_weight > 0:
                teacher = self.teacher_logits(x, opts.precision.autocast).split(chunk)
                parts: list[Tensor] = []
                base_loss = opts.loss_fn

                def loss_fn(logits: Tensor, targets: Tensor) -> Tensor:
                    t = teacher[len(parts)]
                    if t.shape != logits.shape:
                        raise RuntimeError(
                            f"MESA teacher chunk {tuple(t.shape)} != logits {tuple(logits.shape)}"
                        )
                    ce = base_loss(logits, targets)
                    parts.append(ce.detach())
                    return ce + self.kl_weight * trajectory_loss(logits, t, self.temperature)

                result = sgd_fn(model, self.base_optimizer, x, y, _with_loss(opts, loss_fn))
                result = result._replace(loss=torch.stack(parts).mean())
            else:
                result = sgd_fn(model, self.base_optimizer, x, y, opts)
            self.update_ema()
            self.steps_taken += 1
            return result

        return self._named(step, m, per_device_batch)


def _with_loss(opts: Any, loss_fn: Any) -> Any:
    from dataclasses import replace

    return replace(opts, loss_fn=loss_fn)
