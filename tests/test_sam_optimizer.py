"""sam.SAM against the equations (tests/sam_reference.py), and its API promises."""

from __future__ import annotations

import copy
import math
import warnings

import pytest
import torch
from sam_reference import clip, nesterov_sgd, sam_gradient
from torch import nn

from sam import SAM, StepOptions, frozen_bn_stats, sam_step, sgd_step


def mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 4))


def batches(n: int, seed: int = 1, size: int = 32):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(size, 6, generator=g), torch.randint(0, 4, (size,), generator=g)) for _ in range(n)]


def two_call_step(model, opt, x, y, l2=0.0):
    """The documented two-call API, with the L2 term literally in the loss."""

    def loss():
        ce = nn.functional.cross_entropy(model(x), y)
        return ce + 0.5 * l2 * sum((p**2).sum() for p in model.parameters()) if l2 else ce

    loss().backward()
    opt.first_step(zero_grad=True)
    loss().backward()
    opt.second_step(zero_grad=True)


@pytest.mark.parametrize("adaptive", [False, True], ids=["sam", "asam"])
@pytest.mark.parametrize("wd_mode", ["l2_loss", "decoupled"])
@pytest.mark.parametrize("grad_clip", [None, 0.05])
def test_updates_match_equations(adaptive, wd_mode, grad_clip):
    rho, lr, wd, eta = (0.5 if adaptive else 0.05), 0.1, 5e-3, (0.01 if adaptive else 0.0)
    model = mlp()
    names = [n for n, _ in model.named_parameters()]
    decay_keys = {n for n, p in model.named_parameters() if p.ndim > 1}
    if wd_mode == "decoupled":
        groups = [
            {"params": [p for p in model.parameters() if p.ndim > 1], "weight_decay": wd},
            {"params": [p for p in model.parameters() if p.ndim <= 1], "weight_decay": 0.0},
        ]
        opt = SAM(
            groups, torch.optim.SGD, rho=rho, adaptive=adaptive, eta=eta, lr=lr, momentum=0.9, nesterov=True
        )
        opts = StepOptions(nn.functional.cross_entropy, l2_weight_decay=0.0, grad_clip=grad_clip)
    else:
        opt = SAM(
            model.parameters(),
            torch.optim.SGD,
            rho=rho,
            adaptive=adaptive,
            eta=eta,
            lr=lr,
            momentum=0.9,
            nesterov=True,
        )
        opts = StepOptions(nn.functional.cross_entropy, l2_weight_decay=wd, grad_clip=grad_clip)

    ref_model = mlp()
    w = {n: p.detach().clone().double() for n, p in ref_model.named_parameters()}
    ref_model.double()
    buf: dict = {}
    l2 = wd if wd_mode == "l2_loss" else 0.0
    for x, y in batches(4):
        sam_step(model, opt, x, y, opts)
        g = sam_gradient(ref_model, w, x.double(), y, rho=rho, l2=l2, adaptive=adaptive, eta=eta)
        g = clip(g, grad_clip)
        w, buf = nesterov_sgd(
            w, buf, g, lr=lr, decoupled_wd=wd if wd_mode == "decoupled" else 0.0, decay_keys=decay_keys
        )
    for name, p in zip(names, model.parameters()):
        torch.testing.assert_close(p.detach().double(), w[name], rtol=1e-5, atol=1e-6)


def test_perturbation_has_norm_rho_and_restore_is_bit_exact():
    model = mlp()
    opt = SAM(model.parameters(), torch.optim.SGD, rho=0.07, lr=0.1)
    x, y = batches(1)[0]
    nn.functional.cross_entropy(model(x), y).backward()
    before = [p.detach().clone() for p in model.parameters()]
    opt.first_step()
    moved = torch.sqrt(
        sum(((p.detach() - b).double() ** 2).sum() for p, b in zip(model.parameters(), before))
    )
    assert math.isclose(float(moved), 0.07, rel_tol=1e-5)
    assert opt.is_perturbed
    opt.restore()
    for p, b in zip(model.parameters(), before):
        assert torch.equal(p, b)
    assert not opt.is_perturbed


def test_norm_is_global_across_param_groups():
    model = mlp()
    groups = [{"params": list(model.parameters())[:2]}, {"params": list(model.parameters())[2:]}]
    opt = SAM(groups, torch.optim.SGD, rho=0.1, lr=0.1)
    x, y = batches(1)[0]
    nn.functional.cross_entropy(model(x), y).backward()
    g = [p.grad.clone() for p in model.parameters()]
    before = [p.detach().clone() for p in model.parameters()]
    opt.first_step()
    total = torch.sqrt(sum((gi**2).sum() for gi in g))
    for p, b, gi in zip(model.parameters(), before, g):
        torch.testing.assert_close(p.detach() - b, 0.1 * gi / total, rtol=1e-4, atol=1e-7)


def test_rho_zero_is_bitwise_sgd_including_batchnorm_and_dropout():
    def net():
        torch.manual_seed(3)
        return nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.Dropout(0.3),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(8, 5),
        )

    a, b = net(), net()
    opt_sam = SAM(a.parameters(), torch.optim.SGD, rho=0.0, lr=0.05, momentum=0.9, nesterov=True)
    opt_sgd = torch.optim.SGD(b.parameters(), lr=0.05, momentum=0.9, nesterov=True)
    opts = StepOptions(nn.functional.cross_entropy, l2_weight_decay=5e-4, grad_clip=5.0)
    g = torch.Generator().manual_seed(0)
    for step in range(5):
        x, y = torch.randn(8, 3, 6, 6, generator=g), torch.randint(0, 5, (8,), generator=g)
        torch.manual_seed(100 + step)
        sam_step(a, opt_sam, x, y, opts)
        torch.manual_seed(100 + step)
        sgd_step(b, opt_sgd, x, y, opts)
    for (name, ta), tb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(ta, tb), name
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(
            opt_sam.base_optimizer.state[pa]["momentum_buffer"], opt_sgd.state[pb]["momentum_buffer"]
        )


def test_closure_api_equals_two_call_api():
    a, b = mlp(), mlp()
    oa = SAM(a.parameters(), torch.optim.SGD, rho=0.05, lr=0.1, momentum=0.9, nesterov=True)
    ob = SAM(b.parameters(), torch.optim.SGD, rho=0.05, lr=0.1, momentum=0.9, nesterov=True)
    for x, y in batches(3):
        two_call_step(a, oa, x, y)

        def closure(x=x, y=y):
            ob.zero_grad()
            loss = nn.functional.cross_entropy(b(x), y)
            loss.backward()
            return loss

        ob.step(closure)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


def bn_net(seed: int = 3) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 25, 4)
    )


def test_closure_with_frozen_bn_moves_statistics_once_as_the_two_call_loop():
    a, b = bn_net(), bn_net()
    oa = SAM(a.parameters(), torch.optim.SGD, rho=0.5, lr=0.1, momentum=0.9)
    ob = SAM(b.parameters(), torch.optim.SGD, rho=0.5, lr=0.1, momentum=0.9)
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        x, y = torch.randn(8, 3, 5, 5, generator=g), torch.randint(0, 4, (8,), generator=g)
        one_forward = copy.deepcopy(b)
        one_forward(x)  # independent of SAM: the statistics of one train-mode forward at w
        nn.functional.cross_entropy(a(x), y).backward()
        oa.first_step(zero_grad=True)
        with frozen_bn_stats(a):
            nn.functional.cross_entropy(a(x), y).backward()
        oa.second_step(zero_grad=True)

        def closure(x=x, y=y):
            ob.zero_grad()
            loss = nn.functional.cross_entropy(b(x), y)
            loss.backward()
            return loss

        ob.step(closure, frozen_bn=lambda: frozen_bn_stats(b))
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            assert torch.equal(getattr(b[1], name), getattr(one_forward[1], name)), name
    for (name, ta), tb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(ta, tb), name
    assert int(b[1].num_batches_tracked) == 3  # once per step; without frozen_bn it would be 6


def test_closure_without_frozen_bn_moves_statistics_in_both_passes():
    model = bn_net()
    opt = SAM(model.parameters(), torch.optim.SGD, rho=0.5, lr=0.1)
    x, y = torch.randn(8, 3, 5, 5), torch.randint(0, 4, (8,))

    def closure():
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return loss

    opt.step(closure)
    assert int(model[1].num_batches_tracked) == 2


def test_closure_returns_loss_at_w():
    model = mlp()
    opt = SAM(model.parameters(), torch.optim.SGD, rho=0.05, lr=0.1)
    x, y = batches(1)[0]
    expected = nn.functional.cross_entropy(model(x), y).detach()

    def closure():
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return loss

    assert torch.equal(opt.step(closure).detach(), expected)


def test_state_dict_round_trip_continues_bit_exactly(tmp_path):
    data = batches(6)

    def build():
        model = mlp()
        opt = SAM(model.parameters(), torch.optim.SGD, rho=0.05, lr=0.1, momentum=0.9, nesterov=True)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt.base_optimizer, T_max=6)
        return model, opt, sched

    def run(model, opt, sched, part):
        for x, y in part:
            two_call_step(model, opt, x, y, l2=5e-4)
            sched.step()

    ref = build()
    run(*ref, data)

    model, opt, sched = build()
    run(model, opt, sched, data[:3])
    torch.save(
        {"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict()}, tmp_path / "c.pt"
    )
    model, opt, sched = build()
    ckpt = torch.load(tmp_path / "c.pt")
    model.load_state_dict(ckpt["model"])
    opt.load_state_dict(ckpt["opt"])
    sched.load_state_dict(ckpt["sched"])
    assert all("momentum_buffer" in opt.base_optimizer.state[p] for p in model.parameters())
    run(model, opt, sched, data[3:])
    for pa, pb in zip(ref[0].parameters(), model.parameters()):
        assert torch.equal(pa, pb)
    assert opt.param_groups[0]["lr"] == ref[1].param_groups[0]["lr"]


def test_scheduler_on_base_optimizer_works_without_warning():
    model = mlp()
    opt = SAM(model.parameters(), torch.optim.SGD, rho=0.05, lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt.base_optimizer, step_size=1, gamma=0.5)
    x, y = batches(1)[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        two_call_step(model, opt, x, y)
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.05)


@pytest.mark.parametrize("rho", [-0.1, float("nan"), float("inf"), "0.05", None])
def test_bad_rho_is_a_clear_error(rho):
    with pytest.raises(ValueError, match="rho") as err:
        SAM(mlp().parameters(), torch.optim.SGD, rho=rho, lr=0.1)
    assert repr(rho) in str(err.value)


@pytest.mark.parametrize(
    "base", [torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1), "sgd", nn.Linear]
)
def test_base_optimizer_must_be_an_optimizer_class(base):
    with pytest.raises(ValueError, match="base_optimizer"):
        SAM(mlp().parameters(), base, lr=0.1)


def test_zero_gradient_gives_zero_perturbation_not_nan():
    model = mlp()
    opt = SAM(model.parameters(), torch.optim.SGD, rho=0.05, lr=0.1)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    before = [p.detach().clone() for p in model.parameters()]
    opt.first_step()
    for p, b in zip(model.parameters(), before):
        assert torch.equal(p, b)


def test_weights_restored_when_second_pass_raises():
    model = mlp()
    opt = SAM(model.parameters(), torch.optim.SGD, rho=0.5, lr=0.1)
    x, y = batches(1)[0]
    before = [p.detach().clone() for p in model.parameters()]
    calls = {"n": 0}

    def flaky_loss(out, target):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("boom in pass 2")
        return nn.functional.cross_entropy(out, target)

    with pytest.raises(RuntimeError, match="boom"):
        sam_step(model, opt, x, y, StepOptions(flaky_loss))
    for p, b in zip(model.parameters(), before):
        assert torch.equal(p, b)
    assert not opt.is_perturbed

    def flaky_closure():
        opt.zero_grad()
        calls["n"] += 1
        if calls["n"] == 4:
            raise RuntimeError("boom in closure pass 2")
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return loss

    with pytest.raises(RuntimeError, match="closure"):
        opt.step(flaky_closure)
    for p, b in zip(model.parameters(), before):
        assert torch.equal(p, b)


def test_asam_scales_each_parameter_by_abs_w():
    model = mlp()
    opt = SAM(model.parameters(), torch.optim.SGD, rho=0.5, adaptive=True, lr=0.1)
    x, y = batches(1)[0]
    nn.functional.cross_entropy(model(x), y).backward()
    w0 = {n: p.detach().clone() for n, p in model.named_parameters()}
    g = {n: p.grad.clone() for n, p in model.named_parameters()}
    opt.first_step()
    norm = torch.sqrt(sum(((w0[n].abs() * g[n]) ** 2).sum() for n in w0))
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.detach() - w0[n], 0.5 * w0[n] ** 2 * g[n] / norm, rtol=1e-4, atol=1e-7)


def test_deepcopy_and_add_param_group():
    model = mlp()
    extra = nn.Parameter(torch.randn(3))
    opt = SAM(model.parameters(), torch.optim.SGD, rho=0.05, lr=0.1)
    opt.add_param_group({"params": [extra], "rho": 0.2})
    assert opt.param_groups[-1]["rho"] == 0.2 and opt.param_groups is opt.base_optimizer.param_groups
    assert len(opt.base_optimizer.param_groups) == 2
    copy.deepcopy(opt)
    with pytest.raises(ValueError, match="rho"):
        opt.add_param_group({"params": [nn.Parameter(torch.randn(2))], "rho": -1.0})
