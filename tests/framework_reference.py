"""What every framework test compares with: our documented two-call loop on the same data and seed.

A tiny conv net with BatchNorm (its running statistics are part of every comparison), fixed batches,
and ``two_call_reference``: pass 1, ``first_step``, pass 2 under ``frozen_bn_stats``, ``second_step``,
with the scheduler (if any) attached to ``base_optimizer`` as the README documented before issue 12.
"""

from __future__ import annotations

import torch
from torch import nn

from sam import SAM, frozen_bn_stats

RHO, LR, MOMENTUM = 0.1, 0.1, 0.9
BATCH, STEPS = 8, 4


def net(seed: int = 0, dropout: float = 0.0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Dropout(dropout),
        nn.Flatten(),
        nn.Linear(4 * 25, 3),
    )


def data(steps: int = STEPS, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    n = steps * BATCH
    return torch.randn(n, 3, 5, 5, generator=g), torch.randint(0, 3, (n,), generator=g)


def batches(steps: int = STEPS, seed: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The first ``steps`` batches of ``data()`` (what a DataLoader over it yields, unshuffled)."""
    x, y = data(max(steps, STEPS), seed)
    return list(zip(x.split(BATCH), y.split(BATCH)))[:steps]


def make_sam(params, model=None, **kwargs) -> SAM:
    return SAM(params, torch.optim.SGD, rho=RHO, lr=LR, momentum=MOMENTUM, model=model, **kwargs)


def two_call_reference(steps: int = STEPS, scheduler: bool = False) -> tuple[nn.Module, list[torch.Tensor]]:
    """Weights and buffers after ``steps`` two-call SAM steps, and the loss at w of each step."""
    model = net()
    opt = make_sam(model.parameters())
    sched = torch.optim.lr_scheduler.StepLR(opt.base_optimizer, 1, 0.5) if scheduler else None
    losses = []
    for x, y in batches(steps):
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.first_step(zero_grad=True)
        with frozen_bn_stats(model):
            nn.functional.cross_entropy(model(x), y).backward()
        opt.second_step(zero_grad=True)
        if sched is not None:
            sched.step()
        losses.append(loss.detach())
    return model, losses


def assert_same_state(got: nn.Module, expected: nn.Module) -> None:
    """Weights and BatchNorm buffers bit for bit (a NaN matches a NaN: an inf batch poisons statistics)."""
    got_state, expected_state = got.state_dict(), expected.state_dict()
    assert len(got_state) == len(expected_state)
    for (name, a), b in zip(got_state.items(), expected_state.values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True, msg=f"{name} differs")


def gradscaler_two_call_reference(
    x: torch.Tensor, y: torch.Tensor, init_scale: float, autocast_dtype: torch.dtype | None
) -> tuple[nn.Module, list[bool]]:
    """Our two-call loop with a ``torch.amp.GradScaler`` (fp16's loss scaling) on CPU, batch by batch.

    Returns the model and, per step, whether the scaler skipped it (an overflow: w kept, scale halved).
    """
    model = net()
    optimizer = make_sam(model.parameters())
    scaler = torch.amp.GradScaler("cpu", init_scale=init_scale)
    autocast = lambda: torch.autocast("cpu", dtype=autocast_dtype, enabled=autocast_dtype is not None)  # noqa: E731
    skipped = []
    for xb, yb in zip(x.split(BATCH), y.split(BATCH)):
        with autocast():
            loss = nn.functional.cross_entropy(model(xb), yb)
        scaler.scale(loss).backward()
        optimizer.first_step(zero_grad=True)
        with frozen_bn_stats(model):
            with autocast():
                loss = nn.functional.cross_entropy(model(xb), yb)
            scaler.scale(loss).backward()
        scale = scaler.get_scale()
        scaler.step(optimizer)  # unscale, then SAM.step() finishes the step unless a gradient is inf
        scaler.update()
        skipped.append(scaler.get_scale() < scale)
        optimizer.restore()  # a skipped step leaves w + e(w)
        optimizer.zero_grad()
    return model, skipped


def data_with_an_overflow(batch_index: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """``data()`` with an inf in one batch: its scaled gradient overflows, so a GradScaler skips that step."""
    x, y = data()
    x[BATCH * batch_index, 0, 0, 0] = float("inf")
    return x, y
