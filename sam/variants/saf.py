"""SAF (Du, Zhou, Feng, Tan & Zhou, "Sharpness-Aware Training for Free", NeurIPS 2022): SAM's sharpness
term replaced by a trajectory loss against the model's own outputs recorded epochs earlier, so a step is
one SGD forward/backward and no teacher forward (MESA, ``mesa.py``, is the same paper's EMA-teacher form).

For example i of the batch, in epoch e (0-based), with its logits z_i = f_w(x_i) of this step::

    L = CE(z, y) + lambda tau^2 (1/|B|) sum_i KL(softmax(zhat_i^(e - E)/tau) || softmax(z_i/tau))
    zhat_i^(e) <- z_i (detached)                        (recorded every step, for E epochs later)

as the authors' ``SAF_train.py`` (AngusDujw/SAF): the logits recorded are the training forward's own
(train mode, the step's random draws, before the update), kept in E + 1 slots per example
(``train_logits[indices, epoch % (E + 1)]``), the loss read from slot (e - E) mod (E + 1), and on while
``epoch > kl_start_epoch``. Defaults: lambda = 0.3 (``--reinforce``: the README's SAF value, 0.3/0.8 for
SAF/MESA, and the ImageNet command in run.sh), tau = 5 (``--temperature``), E = 3 (``--minus_epoch``'s
default in SAF_train.py; the README lists 2/3), the loss from ``kl_start_epoch 5``, i.e. our
``start_epoch`` 6 (the first 0-based epoch with the loss). ``start_epoch`` must be at least E (the
outputs of epoch start_epoch - E must exist). An example that the epoch E earlier did not see (the
dropped last partial batch) reads what its slot holds, outputs of an earlier epoch or zeros before any
(a uniform target), as in the authors' code.

**Example indices.** SAF must know which training example each row of the batch is. The step asks the
``example_indices`` callable (given when the optimizer is built) at the start of every step; it returns
this device's batch's training-set indices, an int64 tensor of shape (B,) in the order of the rows.
Without it SAF is refused when built. ``num_examples`` (optional) sizes the stored outputs up front;
otherwise they grow to the largest index seen.

Under DDP the (indices, logits) of every replica are all-gathered each step, so that every replica holds
every example's outputs (an example moves between replicas from epoch to epoch) and the table is the same
on all of them (one checkpoint resumes them all). Per-run state: the table (E + 1 x N x C, float32) and
the step count, in ``state_dict()``. Composes with m-chunks (SGD's chunks; each chunk's loss gets its
examples' outputs) and fp16/bf16 (recorded in float32). rho is not used. A SAF whose loss would start
at or after the run's last step, or whose lambda is 0, is plain SGD: refused when built.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace
from functools import partial
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from sam.steps import StepFn, sgd_step, sgd_step_chunked
from sam.variants.base import VariantSAM, check_range
from sam.variants.mesa import refuse_if_never_on, trajectory_loss
from sam.variants.passes import is_ddp

NEEDS_INDICES = (
    "optimizer=saf needs the training-set index of every example in each batch, to look up that example's "
    "outputs from earlier epochs, and this trainer does not give them yet: its loaders yield (x, y) only. "
    "Build the optimizer with example_indices= (a callable returning the current batch's indices; see "
    "sam/variants/saf.py), or use optimizer=mesa, the same paper's form that needs no indices"
)


class SAF(VariantSAM):
    variant_name = "saf"

    def __init__(
        self,
        params: Iterable[Any],
        base_optimizer: type[torch.optim.Optimizer],
        *,
        kl_weight: float = 0.3,
        temperature: float = 5.0,
        past_epochs: int = 3,
        start_step: int = 0,
        steps_per_epoch: int | None = None,
        total_steps: int | None = None,
        example_indices: Callable[[], Tensor] | None = None,
        num_examples: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(params, base_optimizer, **kwargs)
        if example_indices is None:
            raise ValueError(NEEDS_INDICES)
        self.kl_weight = check_range("kl_weight", kl_weight, 0.0, float("inf"), low_open=True)
        self.temperature = check_range("temperature", temperature, 0.0, float("inf"), low_open=True)
        if isinstance(past_epochs, bool) or not isinstance(past_epochs, int) or past_epochs < 1:
            raise ValueError(f"past_epochs={past_epochs!r} is invalid: it must be an integer >= 1")
        if isinstance(steps_per_epoch, bool) or not isinstance(steps_per_epoch, int) or steps_per_epoch < 1:
            raise ValueError(f"saf needs steps_per_epoch (an integer >= 1), got {steps_per_epoch!r}")
        if isinstance(start_step, bool) or not isinstance(start_step, int) or start_step < 0:
            raise ValueError(f"start_step={start_step!r} is invalid: it must be an integer >= 0")
        if start_step < past_epochs * steps_per_epoch:
            raise ValueError(
                f"saf: start_epoch={start_step / steps_per_epoch:g} is before past_epochs={past_epochs}: the "
                f"trajectory loss of epoch e compares with the outputs of epoch e - {past_epochs}, which do "
                f"not exist yet; set optimizer.variant.start_epoch >= {past_epochs}"
            )
        refuse_if_never_on("saf", start_step, total_steps, steps_per_epoch)
        if num_examples is not None and (isinstance(num_examples, bool) or num_examples < 1):
            raise ValueError(f"num_examples={num_examples!r} is invalid: it must be an integer >= 1")
        self.past_epochs = past_epochs
        self.start_step = start_step
        self.steps_per_epoch = steps_per_epoch
        self.example_indices = example_indices
        self.num_examples = num_examples
        self.outputs: Tensor | None = None  # (past_epochs + 1, N, C) float32: zhat, slot epoch % (E + 1)

    # -- the stored outputs -----------------------------------------------------------------------------
    def _table(self, rows: int, classes: int, device: torch.device) -> Tensor:
        """The table, allocated (zeros) or grown to hold index ``rows - 1``."""
        slots = self.past_epochs + 1
        if self.outputs is None:
            n = max(rows, self.num_examples or 0)
            self.outputs = torch.zeros(slots, n, classes, device=device)
        elif rows > self.outputs.shape[1]:
            grown = torch.zeros(slots, max(rows, 2 * self.outputs.shape[1]), classes, device=device)
            grown[:, : self.outputs.shape[1]] = self.outputs
            self.outputs = grown
        if self.outputs.shape[2] != classes or self.outputs.device != device:
            raise RuntimeError(
                f"saf: outputs of {classes} classes on {device}, but the stored ones have "
                f"{self.outputs.shape[2]} on {self.outputs.device}"
            )
        return self.outputs

    def _batch_indices(self, x: Tensor) -> Tensor:
        idx = self.example_indices()
        if not isinstance(idx, Tensor) or idx.shape != (x.shape[0],) or idx.is_floating_point():
            raise RuntimeError(
                f"saf: example_indices() must return an integer tensor of shape ({x.shape[0]},), one index "
                f"per row of the batch; got {type(idx).__name__} {getattr(idx, 'shape', '')}"
            )
        if idx.device.type == "cpu" and idx.numel() and int(idx.min()) < 0:  # (no host sync on a GPU)
            raise RuntimeError("saf: example_indices() returned a negative index")
        return idx.to(device=x.device, dtype=torch.long)

    def _rows(self, idx: Tensor) -> int:
        """How many rows the table needs for ``idx``: num_examples when given (no host sync), else max + 1."""
        return self.num_examples if self.num_examples is not None else int(idx.max()) + 1

    @torch.no_grad()
    def _record(self, model, epoch: int, idx: Tensor, logits: Tensor) -> None:
        """zhat^(epoch) <- logits for these examples (every replica's, under DDP)."""
        logits = logits.float()
        if is_ddp(model) and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            world = dist.get_world_size()
            all_idx = [torch.empty_like(idx) for _ in range(world)]
            all_logits = [torch.empty_like(logits) for _ in range(world)]
            dist.all_gather(all_idx, idx)
            dist.all_gather(all_logits, logits)
            idx, logits = torch.cat(all_idx), torch.cat(all_logits)
        table = self._table(self._rows(idx), logits.shape[1], logits.device)
        table[epoch % (self.past_epochs + 1), idx] = logits

    def variant_state(self) -> dict[str, Any]:
        state = super().variant_state()
        if self.outputs is not None:
            state["outputs"] = self.outputs
        return state

    def load_variant_state(self, state: dict[str, Any]) -> None:
        super().load_variant_state(state)
        outputs = state.get("outputs")
        if outputs is not None and outputs.shape[0] != self.past_epochs + 1:
            raise ValueError(
                f"saf state holds {outputs.shape[0]} epochs of outputs, but past_epochs={self.past_epochs} "
                f"needs {self.past_epochs + 1}: resume with the past_epochs that wrote it"
            )
        device = self.outputs.device if self.outputs is not None else None
        if outputs is not None and device is None:
            device = next(iter(p.device for p in self.params()))
        self.outputs = None if outputs is None else outputs.to(device=device, dtype=torch.float32).clone()

    # -- the step -----------------------------------------------------------------------------------------
    def make_step(self, m: int | None, per_device_batch: int) -> StepFn:
        whole = m is None or m == per_device_batch
        sgd_fn = sgd_step if whole else partial(sgd_step_chunked, m=m)
        chunk = per_device_batch if whole else m

        def step(model, optimizer, x, y, opts):
            idx = self._batch_indices(x)
            epoch = self.steps_taken // self.steps_per_epoch
            active = self.steps_taken >= self.start_step
            pieces = idx.split(chunk)
            past_slot = (epoch - self.past_epochs) % (self.past_epochs + 1)
            seen: list[Tensor] = []
            ce_parts: list[Tensor] = []
            base_loss = opts.loss_fn

            def loss_fn(logits: Tensor, targets: Tensor) -> Tensor:
                rows = pieces[len(ce_parts)]
                if rows.shape[0] != logits.shape[0]:
                    raise RuntimeError(f"saf: chunk of {logits.shape[0]} logits for {rows.shape[0]} indices")
                ce = base_loss(logits, targets)
                ce_parts.append(ce.detach())
                seen.append(logits.detach())
                if not active:
                    return ce
                table = self._table(self._rows(rows), logits.shape[1], logits.device)
                return ce + self.kl_weight * trajectory_loss(logits, table[past_slot, rows], self.temperature)

            result = sgd_fn(model, self.base_optimizer, x, y, replace(opts, loss_fn=loss_fn))
            self._record(model, epoch, idx, torch.cat(seen))
            self.steps_taken += 1
            return result._replace(loss=torch.stack(ce_parts).mean())

        return self._named(step, m, per_device_batch)
