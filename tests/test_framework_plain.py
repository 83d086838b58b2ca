"""SAM in plain PyTorch and in code written for davda54/sam (issue 12, items 1, 2, 10-13), against our
two-call loop (tests/framework_reference.py) bit for bit, and davda54/sam's algorithm written out below."""

from __future__ import annotations

import functools
import os
import re
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from ddp_launch import torchrun_reports
from framework_reference import (
    LR,
    MOMENTUM,
    RHO,
    STEPS,
    assert_same_state,
    batches,
    make_sam,
    net,
    two_call_reference,
)
from torch import nn

import sam
from sam import SAM

REPO = Path(__file__).resolve().parent.parent


class Davda54SAM(torch.optim.Optimizer):
    """davda54/sam's algorithm and checkpoint layout, written out as the oracle for its call pattern.

    e(w) = rho (|w|^2 if adaptive else 1) g / (||(|w| if adaptive else 1) g|| + 1e-12), w saved per
    parameter as ``state[p]["old_p"]``; ``step(closure)`` uses the gradients already present at w and
    calls the closure once at w + e(w). Its ``state_dict`` is this object's, without the base optimizer's.
    """

    def __init__(self, params, base_optimizer, rho=0.05, adaptive=False, **kwargs):
        super().__init__(params, dict(rho=rho, adaptive=adaptive, **kwargs))
        self.base_optimizer = base_optimizer(self.param_groups, **kwargs)
        self.param_groups = self.base_optimizer.param_groups

    @torch.no_grad()
    def first_step(self, zero_grad=False):
        per_param = [
            ((p.abs() if group["adaptive"] else 1.0) * p.grad).norm(p=2)
            for group in self.param_groups
            for p in group["params"]
            if p.grad is not None
        ]
        norm = torch.stack(per_param).norm(p=2)
        for group in self.param_groups:
            scale = group["rho"] / (norm + 1e-12)
            for p in group["params"]:
                if p.grad is not None:
                    self.state[p]["old_p"] = p.detach().clone()
                    p.add_((p**2 if group["adaptive"] else 1.0) * p.grad * scale)
        if zero_grad:
            self.zero_grad()

    @torch.no_grad()
    def second_step(self, zero_grad=False):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.copy_(self.state[p]["old_p"])
        self.base_optimizer.step()
        if zero_grad:
            self.zero_grad()

    def step(self, closure=None):
        self.first_step(zero_grad=True)
        with torch.enable_grad():
            closure()
        self.second_step()


# -- plain PyTorch: the README recipe (items 1, 2) --------------------------------------------------------
def test_readme_recipe_scheduler_on_sam_and_model_argument_equal_the_two_call_loop():
    expected, _ = two_call_reference(scheduler=True)
    model = net()
    optimizer = make_sam(model.parameters(), model=model)  # BatchNorm statistics from pass 1 only
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 1, 0.5)  # attached to SAM itself
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. "lr_scheduler.step() before optimizer.step()"
        for x, y in batches():
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.first_step(zero_grad=True)
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.second_step(zero_grad=True)
            scheduler.step()
    assert_same_state(model, expected)
    assert optimizer.param_groups[0]["lr"] == LR * 0.5**STEPS
    assert int(model[1].num_batches_tracked) == STEPS


def test_step_closure_with_model_argument_equals_the_two_call_loop():
    expected, expected_losses = two_call_reference()
    model = net()
    optimizer = make_sam(model.parameters(), model=model)
    for (x, y), expected_loss in zip(batches(), expected_losses):

        def closure(x=x, y=y):
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            return loss

        assert torch.equal(optimizer.step(closure).detach(), expected_loss)  # the loss at w
    assert_same_state(model, expected)


def test_without_model_argument_the_closure_moves_statistics_twice():
    model = net()
    optimizer = make_sam(model.parameters())
    x, y = batches(1)[0]
    optimizer.step(lambda: nn.functional.cross_entropy(model(x), y).backward())
    assert int(model[1].num_batches_tracked) == 2


# -- davda54/sam's README pattern (item 12) -------------------------------------------------------------
def davda54_pattern(optimizer, model, data):
    """davda54/sam's README: loss.backward(); optimizer.step(closure); optimizer.zero_grad()."""
    returned = []
    for x, y in data:

        def closure(x=x, y=y):
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            return loss

        nn.functional.cross_entropy(model(x), y).backward()
        returned.append(optimizer.step(closure))
        optimizer.zero_grad()
    return returned


def test_davda54_call_pattern_matches_davda54_with_dropout_and_batchnorm():
    data = batches()
    ours, theirs, two_call = net(dropout=0.3), net(dropout=0.3), net(dropout=0.3)
    torch.manual_seed(7)
    returned = davda54_pattern(make_sam(ours.parameters()), ours, data)
    torch.manual_seed(7)
    davda54_pattern(
        Davda54SAM(theirs.parameters(), torch.optim.SGD, rho=RHO, lr=LR, momentum=MOMENTUM), theirs, data
    )
    # The same passes with our two-call API: pass 1 at w, pass 2 at w + e, statistics moving in both.
    opt = make_sam(two_call.parameters())
    torch.manual_seed(7)
    for x, y in data:
        nn.functional.cross_entropy(two_call(x), y).backward()
        opt.first_step(zero_grad=True)
        nn.functional.cross_entropy(two_call(x), y).backward()
        opt.second_step(zero_grad=True)

    assert returned == [None] * STEPS  # as davda54/sam's step
    assert_same_state(ours, two_call)
    assert int(ours[1].num_batches_tracked) == 2 * STEPS  # davda54/sam moves them in both passes too
    assert_same_state(ours, theirs)


def test_davda54_call_pattern_with_model_argument_moves_statistics_once():
    model = net()
    davda54_pattern(make_sam(model.parameters(), model=model), model, batches())
    assert int(model[1].num_batches_tracked) == STEPS


def test_gradients_zeroed_in_place_are_refused_not_a_silent_sgd_step():
    model = net()
    optimizer = make_sam(model.parameters())
    x, y = batches(1)[0]
    nn.functional.cross_entropy(model(x), y).backward()
    optimizer.zero_grad(set_to_none=False)
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(RuntimeError, match=r"present but all zero.*set_to_none"):
        optimizer.step(lambda: nn.functional.cross_entropy(model(x), y).backward())
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))
    assert not optimizer.is_perturbed


# -- davda54/sam checkpoints (item 11) ------------------------------------------------------------------
def test_davda54_checkpoint_loads_fills_group_defaults_and_drops_old_p(tmp_path):
    model = net()
    theirs = Davda54SAM(model.parameters(), torch.optim.SGD, rho=0.5, adaptive=True, lr=LR, momentum=MOMENTUM)
    data = batches(6)
    for x, y in data[:2]:
        nn.functional.cross_entropy(model(x), y).backward()
        theirs.step(lambda x=x, y=y: nn.functional.cross_entropy(model(x), y).backward())
        theirs.zero_grad()
    torch.save({"model": model.state_dict(), "optimizer": theirs.state_dict()}, tmp_path / "davda54.pt")
    checkpoint = torch.load(tmp_path / "davda54.pt")
    assert "eta" not in checkpoint["optimizer"]["param_groups"][0]
    assert "old_p" in checkpoint["optimizer"]["state"][0]

    resumed, fresh = net(), net()
    resumed.load_state_dict(checkpoint["model"])
    fresh.load_state_dict(checkpoint["model"])
    ours = SAM(resumed.parameters(), torch.optim.SGD, rho=0.5, adaptive=True, lr=LR, momentum=MOMENTUM)
    with pytest.warns(UserWarning, match="momentum buffers and step counts start from zero"):
        ours.load_state_dict(checkpoint["optimizer"])
    reference = SAM(fresh.parameters(), torch.optim.SGD, rho=0.5, adaptive=True, lr=LR, momentum=MOMENTUM)
    for model_, opt in ((resumed, ours), (fresh, reference)):
        for x, y in data[2:]:
            nn.functional.cross_entropy(model_(x), y).backward()
            opt.first_step(zero_grad=True)  # was KeyError: 'eta'
            nn.functional.cross_entropy(model_(x), y).backward()
            opt.second_step(zero_grad=True)
    assert_same_state(resumed, fresh)
    saved = ours.state_dict()
    assert all("old_p" not in entry for entry in saved["state"].values())
    assert saved["param_groups"][0]["eta"] == 0.0 and saved["param_groups"][0]["adaptive"] is True


# -- base optimizers from timm / Hydra (item 10) --------------------------------------------------------
def test_partial_base_optimizer_equals_the_class_with_the_same_arguments():
    data = batches()
    results = []
    for base, kwargs in (
        (torch.optim.SGD, dict(momentum=MOMENTUM, nesterov=True)),
        (functools.partial(torch.optim.SGD, nesterov=True), dict(momentum=MOMENTUM)),
        (functools.partial(functools.partial(torch.optim.SGD, momentum=MOMENTUM), nesterov=True), {}),
    ):
        model = net()
        opt = SAM(model.parameters(), base, rho=RHO, lr=LR, model=model, **kwargs)
        for x, y in data:
            opt.step(lambda x=x, y=y, m=model: nn.functional.cross_entropy(m(x), y).backward())
        results.append(model)
    assert_same_state(results[1], results[0])
    assert_same_state(results[2], results[0])


def test_an_optimizer_instance_is_a_short_clear_error():
    params = list(net().parameters())
    with pytest.raises(ValueError) as err:
        SAM(params, torch.optim.SGD(params, lr=0.1), lr=0.1)
    message = str(err.value)
    assert "got an instance of SGD" in message and "functools.partial" in message
    assert "\n" not in message and len(message) < 300
    with pytest.raises(ValueError, match="got 'sgd'"):
        SAM(params, "sgd", lr=0.1)


# -- telling our `sam` from davda54's (item 13) -----------------------------------------------------------
def test_version_is_the_package_version_and_the_repr_names_it():
    version = re.search(r'^version = "(.+)"$', (REPO / "pyproject.toml").read_text(), re.M).group(1)
    assert sam.__version__ == version
    assert repr(make_sam(net().parameters())).startswith(f"sam-repro {version} SAM(base_optimizer=SGD")


def test_a_davda54_sam_py_on_the_path_wins_and_the_readme_check_shows_it(tmp_path):
    (tmp_path / "sam.py").write_text("class SAM:\n    pass\n")  # davda54/sam's file, minus torch
    check = "import sam; print(sam.__file__, getattr(sam, '__version__', None))"  # the README's check
    shadowed = subprocess.run(
        [sys.executable, "-c", check], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert shadowed.stdout.split() == [str(tmp_path / "sam.py"), "None"], shadowed.stderr
    assert Path(sam.__file__) == REPO / "sam" / "__init__.py"  # and ours, here, says what it is


def test_step_without_closure_or_first_step_names_bf16_and_the_manual_recipe():
    optimizer = make_sam(net().parameters())
    with pytest.raises(ValueError, match=r"bf16.*manual two-call recipe"):
        optimizer.step()


def _net_without_bn() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 25, 3)
    ).double()


def _accumulation_runs(sizes: list[int], steps: int = STEPS) -> tuple[nn.Module, SAM, nn.Module, SAM]:
    """One-big-batch two-call SAM and ``sam.accumulated_sam_step`` over micro-batches of ``sizes``."""
    g = torch.Generator().manual_seed(3)
    n = sum(sizes)
    data = [
        (torch.randn(n, 3, 5, 5, generator=g).double(), torch.randint(0, 3, (n,), generator=g))
        for _ in range(steps)
    ]
    big, accumulated = _net_without_bn(), _net_without_bn()
    big_opt, acc_opt = make_sam(big.parameters()), make_sam(accumulated.parameters())
    loss = nn.functional.cross_entropy
    for x, y in data:
        expected_loss = loss(big(x), y)
        expected_loss.backward()
        big_opt.first_step(zero_grad=True)
        loss(big(x), y).backward()
        big_opt.second_step(zero_grad=True)
        micro = list(zip(x.split(sizes), y.split(sizes)))
        got_loss = sam.accumulated_sam_step(acc_opt, micro, lambda b: loss(accumulated(b[0]), b[1]))
        torch.testing.assert_close(got_loss, expected_loss.detach(), rtol=0, atol=1e-12)
    return big, big_opt, accumulated, acc_opt


@pytest.mark.parametrize("sizes", [[8, 8, 8, 8], [10, 6, 16]])
def test_accumulated_sam_step_equals_the_one_big_batch_step(sizes):
    """Issue 22: gradient accumulation in our two-call recipe (pass 1 over the micro-batches, one
    first_step, pass 2 over them, one second_step) is the one-big-batch SAM step: float64, to round-off
    (the sums run in another order; 1e-12 after 4 steps), weights and momentum buffers. Without BatchNorm:
    with it, each micro-batch is normalised by its own statistics, as in any accumulation."""
    big, big_opt, accumulated, acc_opt = _accumulation_runs(sizes)
    for (name, a), b in zip(accumulated.state_dict().items(), big.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12, msg=name)
    for a, b in zip(acc_opt.state_dict()["state"].values(), big_opt.state_dict()["state"].values()):
        torch.testing.assert_close(a["momentum_buffer"], b["momentum_buffer"], rtol=0, atol=1e-12)
    assert not any(
        torch.equal(a, b) for a, b in zip(accumulated.parameters(), _net_without_bn().parameters())
    )


def test_accumulated_sam_step_with_one_micro_batch_is_the_two_call_step_bit_for_bit():
    big, _, accumulated, _ = _accumulation_runs([32])
    assert_same_state(accumulated, big)


def test_accumulated_sam_step_refuses_gradients_already_present():
    model = _net_without_bn()
    optimizer = make_sam(model.parameters())
    x, y = torch.randn(4, 3, 5, 5).double(), torch.randint(0, 3, (4,))
    nn.functional.cross_entropy(model(x), y).backward()
    with pytest.raises(RuntimeError, match="gradients already present"):
        sam.accumulated_sam_step(
            optimizer, [(x, y)], lambda b: nn.functional.cross_entropy(model(b[0]), b[1])
        )


DDP_WORKER = Path(__file__).with_name("ddp_framework_worker.py")


@pytest.mark.slow
def test_ddp_recipes_per_replica_with_no_sync_and_synced_without(tmp_path):
    """Issue 22: under DDP the two-call recipe gives synced e(w) (from the all-reduced gradient) as
    written; pass 1 under ``ddp.no_sync()`` gives the paper's per-replica e(w), our trainer's default.
    Each equals ``sam_step`` with that ``perturbation`` bit for bit on 2 gloo processes; both keep the
    replicas identical; they differ from each other. ``accumulated_sam_step(no_sync=ddp.no_sync)`` is
    the same step (one micro-batch: bit for bit; two: to fp32 round-off)."""
    for report in torchrun_reports(DDP_WORKER, tmp_path):
        for mode in ("per_replica", "synced"):
            assert report[f"{mode}_recipe_vs_sam_step"] == 0.0, mode
            assert report[f"{mode}_ranks_differ"] == 0.0, mode
            assert report[f"{mode}_accumulated_one_micro_vs_recipe"] == 0.0, mode
            assert report[f"{mode}_accumulated_two_micro_vs_recipe"] < 1e-6, mode
        assert report["per_replica_vs_synced"] > 1e-4


def test_signal_handlers_that_are_not_lightnings_run_between_the_passes_unheld():
    """Issue 22 item 9's hold is for Lightning's handlers only: anyone else's SIGUSR1 handler (our
    trainer's) still runs where the signal arrives, between the passes, and stays installed."""
    pytest.importorskip("lightning")  # imported: SAM looks at the handlers, and leaves this one alone
    model = net()
    optimizer = make_sam(model.parameters(), model=model)
    seen = []

    def handler(signum, frame):
        seen.append(optimizer.is_perturbed)

    previous = signal.signal(signal.SIGUSR1, handler)
    try:
        x, y = batches(1)[0]
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.first_step(zero_grad=True)
        os.kill(os.getpid(), signal.SIGUSR1)
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.second_step(zero_grad=True)
        assert seen == [True]
        assert signal.getsignal(signal.SIGUSR1) is handler
    finally:
        signal.signal(signal.SIGUSR1, previous)


@pytest.mark.slow
def test_lightning_under_ddp_automatic_is_synced_and_manual_with_no_sync_is_per_replica(tmp_path):
    """Issue 22: Lightning's DDP strategy (2 gloo processes) with automatic optimization equals the
    synced two-call recipe on the batches each rank saw, bit for bit, and not the per-replica one; manual
    optimization with pass 1's manual_backward under ``trainer.strategy.model.no_sync()`` is per-replica."""
    worker = Path(__file__).with_name("ddp_lightning_worker.py")
    for report in torchrun_reports(worker, tmp_path):
        assert report["steps"] == report["batches"] == 3
        assert report["automatic_vs_synced"] == 0.0
        assert report["automatic_vs_per_replica"] > 1e-4
        assert report["manual_no_sync_vs_per_replica"] == 0.0
        assert report["manual_no_sync_vs_synced"] > 1e-4
