"""SAM inside Hugging Face Accelerate (issue 12, items 7-9): docs/frameworks.md's recipes through a real Accelerator
and its optimizer wrapper, compared with our two-call loop (tests/framework_reference.py) bit for bit."""

from __future__ import annotations

import accelerate
import pytest
import torch
from accelerate.state import AcceleratorState, GradientState
from framework_reference import (
    BATCH,
    STEPS,
    assert_same_state,
    data,
    data_with_an_overflow,
    gradscaler_two_call_reference,
    make_sam,
    net,
    two_call_reference,
)
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

pytestmark = pytest.mark.slow


@pytest.fixture
def make_accelerator():
    """A fresh Accelerator per test: its state is a process-wide singleton, reset afterwards."""

    def make(fp16_scaler: float | None = None, **kwargs) -> accelerate.Accelerator:
        accelerator = accelerate.Accelerator(cpu=True, **kwargs)
        if fp16_scaler is not None:  # what mixed_precision="fp16" sets up on a GPU, reproduced on CPU
            accelerator.scaler = torch.amp.GradScaler("cpu", init_scale=fp16_scaler)
        return accelerator

    yield make
    AcceleratorState._reset_state(True)
    GradientState._reset_state()


def prepared(accelerator, x=None, y=None):
    model = net()
    optimizer = make_sam(model.parameters(), model=model)  # model=: BatchNorm statistics from pass 1
    x, y = data() if x is None else (x, y)
    loader = DataLoader(TensorDataset(x, y), batch_size=BATCH, shuffle=False)
    return accelerator.prepare(model, optimizer, loader)


def closure_recipe(accelerator, model, optimizer, loader) -> list[torch.Tensor]:
    sam = optimizer.optimizer  # Accelerate's wrapper returns None from step(): log the loss in the closure
    losses = []
    for x, y in loader:

        def closure(x=x, y=y):
            loss = nn.functional.cross_entropy(model(x), y)
            accelerator.backward(loss)
            if not sam.is_perturbed:
                losses.append(loss.detach())  # the loss at w
            return loss

        optimizer.step(closure)
        optimizer.zero_grad()
    return losses


def two_call_recipe(accelerator, model, optimizer, loader) -> None:
    sam = optimizer.optimizer  # Accelerate's wrapper hides first_step; its step() ends the SAM step
    for x, y in loader:
        accelerator.backward(nn.functional.cross_entropy(model(x), y))
        sam.first_step(zero_grad=True)
        accelerator.backward(nn.functional.cross_entropy(model(x), y))
        optimizer.step()  # fp16: unscales, then SAM's step; skipped on an overflow
        if optimizer.step_was_skipped:
            sam.restore()  # a skipped step leaves w + e(w)
        optimizer.zero_grad()


def test_closure_recipe_through_the_wrapper_is_exact(make_accelerator):
    expected, expected_losses = two_call_reference()
    accelerator = make_accelerator()
    model, optimizer, loader = prepared(accelerator)
    losses = closure_recipe(accelerator, model, optimizer, loader)
    assert_same_state(accelerator.unwrap_model(model), expected)
    assert len(losses) == len(expected_losses)
    assert all(torch.equal(a, b) for a, b in zip(losses, expected_losses))


def test_two_call_recipe_through_the_wrapper_is_exact(make_accelerator):
    expected, _ = two_call_reference()
    accelerator = make_accelerator()
    model, optimizer, loader = prepared(accelerator)
    two_call_recipe(accelerator, model, optimizer, loader)
    assert_same_state(accelerator.unwrap_model(model), expected)


@pytest.mark.parametrize("recipe", ["closure", "two_call"])
def test_gradient_accumulation_is_refused(make_accelerator, recipe):
    accelerator = make_accelerator(gradient_accumulation_steps=2)
    model, optimizer, loader = prepared(accelerator)
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(RuntimeError, match=r"gradient_accumulation_steps=2.*never be trained on"):
        for x, y in loader:
            with accelerator.accumulate(model):
                if recipe == "closure":
                    optimizer.step(
                        lambda x=x, y=y: accelerator.backward(nn.functional.cross_entropy(model(x), y))
                    )
                else:
                    accelerator.backward(nn.functional.cross_entropy(model(x), y))
                    optimizer.optimizer.first_step(zero_grad=True)
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))


def test_fp16_two_call_recipe_equals_a_gradscaler_loop_and_survives_an_overflow(make_accelerator):
    x, y = data_with_an_overflow()
    accelerator = make_accelerator(fp16_scaler=2.0**8, mixed_precision="fp16")
    model, optimizer, loader = prepared(accelerator, x, y)
    two_call_recipe(accelerator, model, optimizer, loader)
    expected, skipped = gradscaler_two_call_reference(x, y, 2.0**8, None)  # no autocast on CPU
    assert skipped == [False, False, True, False]
    assert_same_state(accelerator.unwrap_model(model), expected)


def test_fp16_closure_is_refused_with_our_message_before_anything_runs(make_accelerator):
    accelerator = make_accelerator(fp16_scaler=2.0**8, mixed_precision="fp16")
    model, optimizer, loader = prepared(accelerator)
    x, y = next(iter(loader))
    calls = []

    def closure():
        calls.append(1)
        return accelerator.backward(nn.functional.cross_entropy(model(x), y))

    before = {k: v.clone() for k, v in model.state_dict().items()}
    refused = r"mixed_precision='fp16' is refused before anything ran.*bf16.*manual two-call recipe"
    # The first step (was: Accelerate's GradScaler asserting "_scale is None" before calling us).
    with pytest.raises(RuntimeError, match=refused):
        optimizer.step(closure)
    assert calls == [] and all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    # Gradients at w first (davda54's pattern): refused the same way, w unchanged.
    accelerator.backward(nn.functional.cross_entropy(model(x), y))
    with pytest.raises(RuntimeError, match=refused):
        optimizer.step(closure)
    assert all(torch.equal(p, before[k]) for k, p in model.named_parameters())
    # The two-call recipe still works on the same wrapper after the refusals.
    optimizer.zero_grad()
    two_call_recipe(accelerator, model, optimizer, loader)
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.parametrize("on", ["sam", "base_optimizer"])
def test_prepared_scheduler_on_sam_or_on_base_optimizer_is_exact(make_accelerator, on):
    """Issue 22: under Accelerate the scheduler may be attached to SAM or to ``optimizer.base_optimizer``
    (the same param groups) and prepared; stepped after each SAM step it equals the README's loop."""
    accelerator = make_accelerator()
    model = net()
    sam = make_sam(model.parameters(), model=model)
    scheduler = torch.optim.lr_scheduler.StepLR(sam if on == "sam" else sam.base_optimizer, 1, 0.5)
    loader = DataLoader(TensorDataset(*data()), batch_size=BATCH, shuffle=False)
    model, optimizer, loader, scheduler = accelerator.prepare(model, sam, loader, scheduler)
    for x, y in loader:

        def closure(x=x, y=y):
            loss = nn.functional.cross_entropy(model(x), y)
            accelerator.backward(loss)
            return loss

        optimizer.step(closure)
        scheduler.step()
        optimizer.zero_grad()
    expected, _ = two_call_reference(scheduler=True)
    assert_same_state(model, expected)
    assert sam.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5**STEPS)
