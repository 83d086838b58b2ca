"""The step functions: BatchNorm semantics, AMP (bf16, fp16 + GradScaler), m-sharpness chunks, randomness."""

from __future__ import annotations

import copy

import pytest
import torch
from sam_reference import loss_at, nesterov_sgd, sam_gradient
from torch import nn

from sam import (
    SAM,
    Precision,
    StepOptions,
    frozen_bn_stats,
    resolve_precision,
    sam_step,
    select_step,
    sgd_step,
)


def bn_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(6, 4),
    )


def mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 4))


def image_batch(n=16, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 5, 5, generator=g), torch.randint(0, 4, (n,), generator=g)


def bn_buffers(model):
    return {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "num_batches" in k}


def test_frozen_bn_stats_restores_buffers_and_keeps_train_mode_forward():
    model = bn_net()
    x, _ = image_batch()
    model(x)  # some non-trivial statistics first
    before = bn_buffers(model)
    expected = copy.deepcopy(model)(x)  # train-mode forward (batch statistics)
    with frozen_bn_stats(model):
        out = model(x)
        model(x * 3)
    for k, v in bn_buffers(model).items():
        assert torch.equal(v, before[k]), k
    torch.testing.assert_close(out, expected)
    with pytest.raises(KeyError), frozen_bn_stats(model):
        model(x * 5)
        raise KeyError("inside")
    for k, v in bn_buffers(model).items():
        assert torch.equal(v, before[k]), k


def test_sam_step_moves_running_stats_once_from_the_unperturbed_pass():
    model = bn_net()
    reference = copy.deepcopy(model)
    x, y = image_batch()
    reference(x)  # exactly one train-mode forward at w
    opt = SAM(model.parameters(), torch.optim.SGD, rho=0.5, lr=0.1)
    sam_step(model, opt, x, y, StepOptions(nn.functional.cross_entropy))
    for k, v in bn_buffers(reference).items():
        assert torch.equal(bn_buffers(model)[k], v), k


def test_bf16_autocast_runs_without_scaler_and_tracks_fp32():
    a, b = bn_net(), bn_net()
    oa = SAM(a.parameters(), torch.optim.SGD, rho=0.05, lr=0.1, momentum=0.9)
    ob = SAM(b.parameters(), torch.optim.SGD, rho=0.05, lr=0.1, momentum=0.9)
    bf16 = resolve_precision("bf16", "cpu")
    assert bf16.scaler is None and bf16.autocast_dtype is torch.bfloat16
    x, y = image_batch()
    ra = sam_step(a, oa, x, y, StepOptions(nn.functional.cross_entropy, precision=bf16))
    rb = sam_step(b, ob, x, y, StepOptions(nn.functional.cross_entropy))
    assert torch.isfinite(ra.loss) and not ra.skipped
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert pa.dtype == torch.float32
        torch.testing.assert_close(pa, pb, rtol=0, atol=2e-3)  # bf16 has ~3 significant digits
    assert abs(float(ra.loss) - float(rb.loss)) < 2e-2


def fp16_logic_precision(scale=2.0**10):
    """The fp16 code path (GradScaler) on CPU tensors; fp32 arithmetic so results are comparable."""
    return Precision(None, "cpu", torch.amp.GradScaler("cpu", init_scale=scale, growth_interval=1000))


@pytest.mark.parametrize("l2", [0.0, 5e-3])
def test_gradscaler_path_equals_fp32_sam_when_nothing_overflows(l2):
    a, b = mlp(), mlp()
    oa = SAM(a.parameters(), torch.optim.SGD, rho=0.05, lr=0.1, momentum=0.9, nesterov=True)
    ob = SAM(b.parameters(), torch.optim.SGD, rho=0.05, lr=0.1, momentum=0.9, nesterov=True)
    prec = fp16_logic_precision()
    g = torch.Generator().manual_seed(0)
    for _ in range(4):
        x, y = torch.randn(16, 6, generator=g), torch.randint(0, 4, (16,), generator=g)
        ra = sam_step(
            a,
            oa,
            x,
            y,
            StepOptions(nn.functional.cross_entropy, l2_weight_decay=l2, grad_clip=1.0, precision=prec),
        )
        rb = sam_step(
            b, ob, x, y, StepOptions(nn.functional.cross_entropy, l2_weight_decay=l2, grad_clip=1.0)
        )
        assert not ra.skipped
        torch.testing.assert_close(ra.grad_norm, rb.grad_norm, rtol=1e-6, atol=0)
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-6, atol=1e-7)
    assert prec.scaler.get_scale() == 2.0**10


@pytest.mark.parametrize("bad_pass", [1, 2])
def test_inf_in_either_pass_skips_the_step_and_backs_off(bad_pass):
    model = mlp()
    opt = SAM(model.parameters(), torch.optim.SGD, rho=0.05, lr=0.1, momentum=0.9, nesterov=True)
    prec = fp16_logic_precision()
    x, y = torch.randn(16, 6), torch.randint(0, 4, (16,))
    sam_step(model, opt, x, y, StepOptions(nn.functional.cross_entropy, precision=prec))  # momentum exists
    weights = [p.detach().clone() for p in model.parameters()]
    momentum = [opt.base_optimizer.state[p]["momentum_buffer"].clone() for p in model.parameters()]
    calls = {"n": 0}

    def loss_with_overflow(out, target):
        calls["n"] += 1
        loss = nn.functional.cross_entropy(out, target)
        return loss * float("inf") if calls["n"] == bad_pass else loss

    result = sam_step(model, opt, x, y, StepOptions(loss_with_overflow, precision=prec))
    assert bool(result.skipped)
    for p, w, mbuf in zip(model.parameters(), weights, momentum):
        assert torch.equal(p, w)
        assert torch.equal(opt.base_optimizer.state[p]["momentum_buffer"], mbuf)
    assert prec.scaler.get_scale() == 2.0**9
    # and training continues normally afterwards
    assert not bool(
        sam_step(model, opt, x, y, StepOptions(nn.functional.cross_entropy, precision=prec)).skipped
    )


def test_fp16_on_cpu_and_unknown_precision_are_clear_errors():
    with pytest.raises(ValueError, match=r"fp16.*CUDA"):
        resolve_precision("fp16", "cpu")
    with pytest.raises(ValueError, match=r"'fp8'.*bf16"):
        resolve_precision("fp8", "cpu")
    assert resolve_precision("auto", "cpu").autocast_dtype is None


def test_chunked_m_sharpness_equals_per_chunk_sam_by_hand():
    model = mlp()
    ref_model = mlp().double()
    w = {n: p.detach().double().clone() for n, p in model.named_parameters()}
    opt = SAM(model.parameters(), torch.optim.SGD, rho=0.1, lr=0.1, momentum=0.9, nesterov=True)
    step = select_step(opt, m=4, per_device_batch=16)
    buf: dict = {}
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        x, y = torch.randn(16, 6, generator=g), torch.randint(0, 4, (16,), generator=g)
        result = step(model, opt, x, y, StepOptions(nn.functional.cross_entropy, l2_weight_decay=1e-2))
        expected_loss = torch.stack(
            [loss_at(ref_model, w, xc.double(), yc, 0.0) for xc, yc in zip(x.split(4), y.split(4))]
        ).mean()
        torch.testing.assert_close(result.loss.double(), expected_loss, rtol=1e-5, atol=1e-6)
        per_chunk = [
            sam_gradient(ref_model, w, xc.double(), yc, rho=0.1, l2=1e-2)
            for xc, yc in zip(x.split(4), y.split(4))
        ]
        mean = {k: sum(c[k] for c in per_chunk) / 4 for k in w}
        w, buf = nesterov_sgd(w, buf, mean, lr=0.1)
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.detach().double(), w[n], rtol=1e-5, atol=1e-6)


def test_chunked_running_stats_are_the_mean_of_per_chunk_updates():
    model = bn_net()
    x, y = image_batch(16)
    expected = []
    for xc in x.split(4):
        m = copy.deepcopy(model)
        m(xc)
        expected.append(bn_buffers(m))
    opt = SAM(model.parameters(), torch.optim.SGD, rho=0.1, lr=0.1)
    select_step(opt, m=4, per_device_batch=16)(model, opt, x, y, StepOptions(nn.functional.cross_entropy))
    got = bn_buffers(model)
    for k in got:
        if "num_batches" in k:
            assert int(got[k]) == 1
        else:
            torch.testing.assert_close(got[k], sum(e[k] for e in expected) / 4, rtol=1e-6, atol=1e-7)


def test_m_must_divide_the_batch():
    opt = SAM(mlp().parameters(), torch.optim.SGD, rho=0.1, lr=0.1)
    with pytest.raises(ValueError, match="m=5 must divide the per-device batch 16"):
        select_step(opt, m=5, per_device_batch=16)
    assert select_step(opt, m=None, per_device_batch=16) is sam_step
    assert select_step(opt, m=16, per_device_batch=16) is sam_step
    sgd = torch.optim.SGD(mlp().parameters(), lr=0.1)
    assert select_step(sgd, m=None, per_device_batch=16) is sgd_step
    assert select_step(sgd, m=4, per_device_batch=16).__name__ == "sgd_step_chunked_m4"
    with pytest.raises(ValueError, match="m=3"):
        select_step(sgd, m=3, per_device_batch=16)


def test_chunked_sam_with_rho_zero_is_bitwise_chunked_sgd():
    a, b = bn_net(), bn_net()
    oa = SAM(a.parameters(), torch.optim.SGD, rho=0.0, lr=0.1, momentum=0.9, nesterov=True)
    ob = torch.optim.SGD(b.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    step_a, step_b = select_step(oa, m=4, per_device_batch=16), select_step(ob, m=4, per_device_batch=16)
    opts = StepOptions(nn.functional.cross_entropy, l2_weight_decay=5e-4, grad_clip=5.0)
    for seed in range(3):
        x, y = image_batch(16, seed=seed)
        ra, rb = step_a(a, oa, x, y, opts), step_b(b, ob, x, y, opts)
        assert torch.equal(ra.loss, rb.loss) and torch.equal(ra.correct, rb.correct)
    for (name, ta), tb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(ta, tb), name


def test_chunked_sgd_is_the_mean_of_chunk_gradients_with_per_chunk_bn_stats():
    model = bn_net()
    reference = copy.deepcopy(model)
    x, y = image_batch(16)
    grads, stats = [], []
    for xc, yc in zip(x.split(4), y.split(4)):
        m = copy.deepcopy(reference)
        nn.functional.cross_entropy(m(xc), yc).backward()
        grads.append([p.grad for p in m.parameters()])
        stats.append(bn_buffers(m))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    select_step(opt, m=4, per_device_batch=16)(model, opt, x, y, StepOptions(nn.functional.cross_entropy))
    for p, p0, *gs in zip(model.parameters(), reference.parameters(), *grads):
        torch.testing.assert_close(p, p0 - 0.1 * sum(gs) / 4, rtol=1e-5, atol=1e-7)
    for k, v in bn_buffers(model).items():
        expected = stats[0][k] if "num_batches" in k else sum(st[k] for st in stats) / 4
        torch.testing.assert_close(v, expected, rtol=1e-6, atol=1e-7)


class RecordingNoise(nn.Module):
    """A stochastic layer following the true_gradient protocol, recording what it saw."""

    def __init__(self):
        super().__init__()
        self.true_gradient = False
        self.seen = []

    def forward(self, x):
        draw = torch.rand(x.shape[0], 1)
        self.seen.append((self.true_gradient, draw.clone()))
        return x * (0.5 + draw)


@pytest.mark.parametrize("m", [None, 4])
def test_both_passes_see_the_same_draws_and_first_pass_uses_true_gradient(m):
    noise = RecordingNoise()
    model = nn.Sequential(nn.Linear(6, 8), noise, nn.Linear(8, 4))
    opt = SAM(model.parameters(), torch.optim.SGD, rho=0.1, lr=0.1)
    x, y = torch.randn(8, 6), torch.randint(0, 4, (8,))
    select_step(opt, m=m, per_device_batch=8)(model, opt, x, y, StepOptions(nn.functional.cross_entropy))
    passes = noise.seen
    assert len(passes) == (2 if m is None else 4)
    for first, second in zip(passes[::2], passes[1::2]):
        assert first[0] is True and second[0] is False
        assert torch.equal(first[1], second[1])
    assert noise.true_gradient is False
    if m is not None:  # different chunks get different draws
        assert not torch.equal(passes[0][1], passes[2][1])
