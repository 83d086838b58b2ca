"""Tests of models/: sizes against the papers, forward/backward, init, the shake ops, the registry.

References are independent of the code under test: the papers' parameter counts, torchvision's
documented counts, the closed-form init rules, and the shake ops' equations recomputed from the
documented RNG draws (re-seed, draw in the documented order).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from models import create_model, list_models
from models.init import init_cifar_weights_
from models.pyramidnet import PyramidNet
from models.shake import ShakeDrop, ShakeShake
from models.shake_shake import ShakeShortcut
from models.wide_resnet import WideBasicBlock

CONTRACT_NAMES = {
    "wide_resnet",
    "wrn28_10",
    "wrn16_8",
    "shake_shake_26_2x96d",
    "pyramidnet272",
    "pyramidnet272_shakedrop",
    "resnet32",
    "resnet50",
    "resnet101",
    "resnet152",
}
IMAGENET = {"resnet50", "resnet101", "resnet152"}
# Small variants of the generic constructors (the full ones are covered by their named presets).
SMALL_KWARGS = {
    "wide_resnet": {"depth": 10, "widen_factor": 1},
    "shake_shake": {"depth": 8, "base_width": 8},
    "pyramidnet": {"depth": 11, "alpha": 8},
    "resnet_cifar": {"depth": 8},
}


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def build_on_meta(name: str, num_classes: int, **kw) -> nn.Module:
    with torch.device("meta"):
        return create_model(name, num_classes, **kw)


@pytest.fixture(autouse=True)
def _one_thread():
    # The suite shares two busy cores with other jobs.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ----------------------------------------------------------------------------- sizes
@pytest.mark.parametrize(
    ("name", "num_classes", "paper_params"),
    [
        # WRN-28-10, ResNet-32 and ResNet-50/101/152 have exact counts below (which imply these bounds).
        ("wrn16_8", 10, 11.0e6),  # Zagoruyko & Komodakis
        ("shake_shake_26_2x96d", 10, 26.2e6),  # Gastaldi, Table 1
        ("pyramidnet272", 10, 26.0e6),  # Han et al., Table 4
        ("pyramidnet272_shakedrop", 10, 26.0e6),  # ShakeDrop adds no parameters
    ],
)
def test_parameter_count_within_1pct_of_paper(name, num_classes, paper_params):
    model = build_on_meta(name, num_classes)
    assert all(p.is_meta for p in model.parameters()), "meta construction must allocate nothing"
    assert abs(n_params(model) / paper_params - 1) < 0.01, n_params(model)


@pytest.mark.parametrize(
    ("name", "num_classes", "exact"),
    [
        ("wrn28_10", 10, 36_479_194),  # the count of the WRN authors' PyTorch model
        ("resnet32", 10, 464_154),  # option-A ResNet-32 of He et al.
        ("resnet50", 1000, 25_557_032),  # torchvision's documented counts (same architecture)
        ("resnet101", 1000, 44_549_160),
        ("resnet152", 1000, 60_192_808),
    ],
)
def test_parameter_count_exact_where_known(name, num_classes, exact):
    model = build_on_meta(name, num_classes)
    assert all(p.is_meta for p in model.parameters()), "meta construction must allocate nothing"
    assert n_params(model) == exact


@pytest.mark.parametrize(
    ("depth", "alpha", "bottleneck", "paper_millions"),
    # Han et al. Table 4, which truncates widths; printed to 0.1M, so the tolerance is 0.05M.
    [(110, 48, False, 1.7), (200, 240, True, 26.6), (236, 220, True, 26.8), (272, 200, True, 26.0)],
)
def test_pyramidnet_width_rule_matches_han_et_al(depth, alpha, bottleneck, paper_millions):
    with torch.device("meta"):
        model = PyramidNet(depth, alpha, bottleneck, width_rounding="floor", num_classes=10)
    assert abs(n_params(model) / 1e6 - paper_millions) <= 0.05


def test_resnet32_option_b_adds_projection_parameters():
    a = n_params(build_on_meta("resnet32", 10))
    b = n_params(build_on_meta("resnet32", 10, shortcut="B"))
    # Two projections: 1x1 conv 16->32 + BN(32), 1x1 conv 32->64 + BN(64).
    assert b - a == (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)


# ----------------------------------------------------------------------------- forward / backward
def _forward_backward(model: nn.Module, x: torch.Tensor, num_classes: int) -> None:
    model.train()
    out = model(x)
    assert out.shape == (x.shape[0], num_classes)
    assert torch.isfinite(out).all()
    out.square().mean().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname


# EfficientNet-b7 (finetuning at 600 px) shrinks 8x8 inputs to 1x1 long before its head (NaN BatchNorm
# gradients on a batch of 2); tests/test_finetune_experiments.py runs it at 32 px.
# The deepest registry models run on the meta device: the full architecture's shapes and gradient graph on
# digits, without a minute of CPU; their blocks' values are checked by the same family at a small depth
# (ResNet-50 for ResNet-101/152, the bottleneck PyramidNets of DEEP_STAND_INS).
ON_META = ("pyramidnet272", "pyramidnet272_shakedrop", "resnet101", "resnet152")
DEEP_STAND_INS = {
    "pyramidnet_bottleneck": ("pyramidnet", {"depth": 11, "alpha": 8, "bottleneck": True}),
    "pyramidnet_bottleneck_shakedrop": (
        "pyramidnet",
        {"depth": 11, "alpha": 8, "bottleneck": True, "shakedrop": True},
    ),
}


@pytest.mark.parametrize(
    "name",
    [  # the meta-device ones take seconds each (hundreds of layers): in the slow suite
        pytest.param(n, marks=pytest.mark.slow) if n in ON_META else n
        for n in list_models()
        if n != "efficientnet_b7"
    ],
)
def test_forward_backward_digits_shape(name):
    """Every registry model on (B, 1, 8, 8) digits-shaped input with in_chans=1."""
    torch.manual_seed(0)
    if name in ON_META:
        model = build_on_meta(name, 10, in_chans=1)
        model.train()
        out = model(torch.randn(2, 1, 8, 8, device="meta"))
        assert out.shape == (2, 10)
        out.square().mean().backward()
        assert all(p.grad is not None and p.grad.shape == p.shape for p in model.parameters())
        return
    model = create_model(name, 10, in_chans=1, **SMALL_KWARGS.get(name, {}))
    _forward_backward(model, torch.randn(2, 1, 8, 8), 10)


@pytest.mark.parametrize("stand_in", sorted(DEEP_STAND_INS))
def test_forward_backward_digits_shape_of_the_deep_models_blocks(stand_in):
    """The blocks of the models run on meta above, with values: finite outputs and gradients on digits."""
    torch.manual_seed(0)
    family, kwargs = DEEP_STAND_INS[stand_in]
    _forward_backward(create_model(family, 10, in_chans=1, **kwargs), torch.randn(2, 1, 8, 8), 10)


@pytest.mark.parametrize("name", [*sorted(SMALL_KWARGS), "resnet32", "resnet50"])
def test_forward_backward_native_resolution(name):
    torch.manual_seed(0)
    size = 64 if name in IMAGENET else 32
    model = create_model(name, 100, **SMALL_KWARGS.get(name, {}))
    _forward_backward(model, torch.randn(2, 3, size, size), 100)


@pytest.mark.parametrize(
    ("name", "kw"),
    [*SMALL_KWARGS.items(), ("pyramidnet", {"depth": 8, "alpha": 6, "bottleneck": False, "shakedrop": True})],
)
def test_channels_last_matches_contiguous(name, kw):
    torch.manual_seed(0)
    model = create_model(name, 10, **kw).eval()
    x = torch.randn(2, 3, 32, 32)
    expected = model(x)
    got = model.to(memory_format=torch.channels_last)(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_meta_forward_gives_output_shape():
    with torch.device("meta"):
        model = create_model("pyramidnet", 7, depth=11, alpha=8, shakedrop=True)
        out = model(torch.empty(3, 3, 32, 32))
    assert out.is_meta and out.shape == (3, 7)


def test_dropout_only_when_asked():
    assert not any(isinstance(m, nn.Dropout) for m in create_model("wide_resnet", 10, depth=10).modules())
    drops = [
        m
        for m in create_model("wide_resnet", 10, depth=10, drop_rate=0.3).modules()
        if isinstance(m, nn.Dropout)
    ]
    # WRN-10: one block in each of the three groups, one dropout per block.
    assert len(drops) == 3 and all(d.p == 0.3 for d in drops)


def _randomise_bn(module: nn.Module) -> None:
    gen = torch.Generator().manual_seed(5)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            for t in (m.weight.data, m.bias.data, m.running_mean):
                t.copy_(torch.randn(t.shape, generator=gen))
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)


def test_wide_resnet_block_is_pre_activation_with_projection_on_activated_input():
    """The WRN paper's block, written out with torch.nn.functional (eval-mode BN)."""
    torch.manual_seed(0)
    block = WideBasicBlock(4, 8, stride=2, drop_rate=0.0)
    _randomise_bn(block)
    block.eval()
    x = torch.randn(2, 4, 8, 8)

    def bn(t, m):
        return F.batch_norm(t, m.running_mean, m.running_var, m.weight, m.bias, False, 0.0, m.eps)

    act = F.relu(bn(x, block.bn1))
    branch = F.conv2d(
        F.relu(bn(F.conv2d(act, block.conv1.weight, stride=2, padding=1), block.bn2)),
        block.conv2.weight,
        padding=1,
    )
    expected = branch + F.conv2d(act, block.shortcut.weight, stride=2)
    torch.testing.assert_close(block(x), expected)


@pytest.mark.parametrize("stride", [1, 2])
def test_shake_shake_shortcut_is_gastaldis_two_shifted_paths(stride):
    torch.manual_seed(0)
    sc = ShakeShortcut(4, 6, stride)
    _randomise_bn(sc)
    sc.eval()
    x = torch.randn(2, 4, 8, 8)
    # Path 1 samples pixels (i*s, j*s); path 2 the pixels one step right and down, (i*s + 1, j*s + 1),
    # with zeros past the border.
    shifted = torch.zeros_like(x)
    shifted[:, :, :-1, :-1] = x[:, :, 1:, 1:]
    h = torch.cat(
        [
            F.conv2d(x[:, :, ::stride, ::stride], sc.conv1.weight),
            F.conv2d(shifted[:, :, ::stride, ::stride], sc.conv2.weight),
        ],
        dim=1,
    )
    m = sc.bn
    expected = F.batch_norm(h, m.running_mean, m.running_var, m.weight, m.bias, False, 0.0, m.eps)
    torch.testing.assert_close(sc(x), expected)


# ----------------------------------------------------------------------------- initialisation
def _assert_kaiming_fan_out(model: nn.Module) -> int:
    """Each conv's sample std against sqrt(2 / fan_out), fan_out = C_out * k_h * k_w (5-sigma band)."""
    checked = 0
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            w = m.weight.detach().double()
            out_c, _, kh, kw = w.shape
            target = math.sqrt(2.0 / (out_c * kh * kw))
            # The sample std of N normal draws has relative standard error ~ 1/sqrt(2N).
            tol = 5.0 / math.sqrt(2 * w.numel())
            assert abs(w.std().item() / target - 1) < tol, (name, w.std().item(), target)
            assert abs(w.mean().item()) < 5 * target / math.sqrt(w.numel()), name
            checked += 1
    return checked


@pytest.mark.parametrize(
    ("name", "kw"),
    [
        ("wide_resnet", {"depth": 10, "widen_factor": 2}),
        ("shake_shake", {"depth": 8, "base_width": 16}),
        ("pyramidnet", {"depth": 11, "alpha": 16}),
        ("resnet32", {}),
    ],
)
def test_cifar_init_as_official_code(name, kw):
    torch.manual_seed(0)
    num_classes = 100
    model = create_model(name, num_classes, **kw)
    assert _assert_kaiming_fan_out(model) > 0
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(torch.all(m.weight == 1) and torch.all(m.bias == 0) for m in bns)
    (fc,) = [m for m in model.modules() if isinstance(m, nn.Linear)]
    bound = 1.0 / math.sqrt(num_classes)  # U[-1/sqrt(classes), 1/sqrt(classes)], the official dense init
    assert fc.weight.abs().max() <= bound and fc.weight.abs().max() > 0.95 * bound
    tol = 5.0 / math.sqrt(fc.weight.numel())  # loose band around the uniform std bound / sqrt(3)
    assert abs(fc.weight.std().item() / (bound / math.sqrt(3)) - 1) < tol
    assert torch.all(fc.bias == 0)


def test_meta_built_model_can_be_materialised_and_initialised():
    model = build_on_meta("wide_resnet", 10, depth=10, widen_factor=2).to_empty(device="cpu")
    torch.manual_seed(0)
    init_cifar_weights_(model)
    assert _assert_kaiming_fan_out(model) > 0
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(torch.all(m.weight == 1) and torch.all(m.bias == 0) for m in bns)


def _assert_lecun_normal_truncated(model: nn.Module) -> int:
    """Each conv / linear weight: std sqrt(1 / fan_in) (JAX's truncated_normal keeps the variance), every
    |w| within the truncation 2 * sqrt(1 / fan_in) / 0.8796 (two stds of the untruncated normal)."""
    checked = 0
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            w = m.weight.detach().double()
            target = math.sqrt(1.0 / w[0].numel())
            # The sample std of N draws has relative standard error ~ sqrt((kurtosis - 1) / 4N); the
            # truncated normal's kurtosis (2.37) is below the normal's 3, so 5/sqrt(2N) still bounds it.
            assert abs(w.std().item() / target - 1) < 5.0 / math.sqrt(2 * w.numel()), (name, w.std().item())
            bound = 2.0 * target / 0.87962566103423978
            assert w.abs().max().item() <= bound * (1 + 1e-6), name
            if w.numel() > 10_000:  # the tails are reached: a plain normal or a narrower truncation fails
                assert w.abs().max().item() > 0.98 * bound, name
            if m.bias is not None:
                assert torch.all(m.bias == 0), name
            checked += 1
    return checked


@pytest.mark.parametrize(
    ("init", "zero_init_last"), [("official", True), ("official", False), ("timm", True)]
)
def test_imagenet_resnet_init(init, zero_init_last):
    torch.manual_seed(0)
    model = create_model("resnet50", 1000, zero_init_last=zero_init_last, init=init)
    if init == "official":  # the Flax ResNet's default: LeCun normal fan-in, truncated, convs and head
        assert _assert_lecun_normal_truncated(model) == 53 + 1
        conv = model.layer3[0].conv2  # a 256-channel 3x3 conv: 1 / sqrt(2304) = 0.0208
        assert abs(conv.weight.std().item() - 0.0208) < 0.0003
    else:
        assert _assert_kaiming_fan_out(model) == 53
        fc = model.get_classifier()
        target = 1.0 / math.sqrt(fc.in_features)  # LeCun normal, untruncated
        assert abs(fc.weight.std().item() / target - 1) < 5.0 / math.sqrt(2 * fc.weight.numel())
        assert torch.all(fc.bias == 0)
    last_bns = {f"{n}.bn3" for n, m in model.named_modules() if type(m).__name__ == "Bottleneck"}
    assert len(last_bns) == 16  # 3 + 4 + 6 + 3 bottleneck blocks
    for n, m in model.named_modules():
        if isinstance(m, nn.BatchNorm2d):
            expected_weight = 0.0 if (zero_init_last and n in last_bns) else 1.0
            assert torch.all(m.weight == expected_weight) and torch.all(m.bias == 0), n


@pytest.mark.parametrize("size", [7, 8, 112])
def test_same_pad_max_pool_is_tensorflows_same(size):
    """TF SAME: out = ceil(n / 2), pad_total = max((out - 1) * 2 + 3 - n, 0), pad_total // 2 before."""
    from models.imagenet_resnet import SamePadMaxPool2d

    x = torch.randn(1, 2, size, size, generator=torch.Generator().manual_seed(size))
    out_n = -(-size // 2)
    before = max((out_n - 1) * 2 + 3 - size, 0) // 2
    a = x.numpy()
    expected = np.empty((1, 2, out_n, out_n), dtype=a.dtype)
    for i in range(out_n):
        for j in range(out_n):
            r0, c0 = 2 * i - before, 2 * j - before
            win = a[:, :, max(r0, 0) : r0 + 3, max(c0, 0) : c0 + 3]
            expected[:, :, i, j] = win.max(axis=(2, 3))
    np.testing.assert_array_equal(SamePadMaxPool2d(3, 2)(x).numpy(), expected)


def test_official_stem_has_no_relu_before_the_pool():
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    for stem, negative in (("official", True), ("timm", False)):
        torch.manual_seed(0)
        m = create_model("resnet50", 10, stem=stem).eval()
        with torch.no_grad():
            y = m.maxpool(m.act1(m.bn1(m.conv1(x))))
        assert y.shape == (2, 64, 16, 16)
        assert bool((y < 0).any()) is negative, stem
        assert m(x).shape == (2, 10)


# ----------------------------------------------------------------------------- shake ops
B = 64  # enough images that both ShakeDrop gate values occur


def _inputs(*shape, seed=1234):
    gen = torch.Generator().manual_seed(seed)  # own generator: the global RNG stays for the op's draws
    return [torch.randn(*shape, generator=gen, dtype=torch.float64, requires_grad=True) for _ in range(2)]


def _shake_shake_draws(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The documented Shake-Shake draws: alpha then beta, U[0, 1) per image, float32."""
    torch.manual_seed(seed)
    alpha = torch.rand(B, 1, 1, 1)
    beta = torch.rand(B, 1, 1, 1)
    return alpha.double(), beta.double()


@pytest.mark.parametrize("true_gradient", [True, False])
def test_shake_shake_forward_and_backward_follow_documented_draws(true_gradient):
    a, b = _inputs(B, 3, 4, 4)
    grad_out = torch.randn(B, 3, 4, 4, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    op = ShakeShake().train()
    op.true_gradient = true_gradient
    torch.manual_seed(42)
    y = op(a, b)
    y.backward(grad_out)

    alpha, beta = _shake_shake_draws(42)
    assert not torch.allclose(alpha, beta)
    torch.testing.assert_close(y, alpha * a + (1 - alpha) * b)
    c = alpha if true_gradient else beta
    torch.testing.assert_close(a.grad, c * grad_out)
    torch.testing.assert_close(b.grad, (1 - c) * grad_out)


def test_shake_shake_eval_is_the_mean_and_draws_nothing():
    a, b = _inputs(B, 3, 4, 4)
    op = ShakeShake().eval()
    state = torch.get_rng_state()
    y = op(a, b)
    assert torch.equal(torch.get_rng_state(), state)
    torch.testing.assert_close(y, 0.5 * (a + b))


def _shake_drop_draws(seed, p, alpha_range, beta_range):
    """The documented ShakeDrop draws: gate u, then alpha, then beta, each U[0, 1) per image."""
    torch.manual_seed(seed)
    gate = (torch.rand(B, 1, 1, 1) < p).double()
    alpha = alpha_range[0] + (alpha_range[1] - alpha_range[0]) * torch.rand(B, 1, 1, 1).double()
    beta = beta_range[0] + (beta_range[1] - beta_range[0]) * torch.rand(B, 1, 1, 1).double()
    return gate, alpha, beta


@pytest.mark.parametrize("true_gradient", [True, False])
def test_shake_drop_forward_and_backward_follow_documented_draws(true_gradient):
    (f, _) = _inputs(B, 5, 2, 2)
    grad_out = torch.randn(B, 5, 2, 2, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    p, alpha_range, beta_range = 0.6, (-1.0, 1.0), (0.0, 1.0)
    op = ShakeDrop(p, alpha_range, beta_range).train()
    op.true_gradient = true_gradient
    torch.manual_seed(3)
    y = op(f)
    y.backward(grad_out)

    gate, alpha, beta = _shake_drop_draws(3, p, alpha_range, beta_range)
    assert 0 < gate.sum() < B, "both gate values must occur for the test to mean anything"
    torch.testing.assert_close(y, (gate + alpha - gate * alpha) * f)
    c = alpha if true_gradient else beta
    torch.testing.assert_close(f.grad, (gate + c - gate * c) * grad_out)


@pytest.mark.parametrize(("p", "alpha_range"), [(0.5, (-1.0, 1.0)), (0.8, (0.0, 1.0))])
def test_shake_drop_eval_uses_expected_scale(p, alpha_range):
    (f, _) = _inputs(B, 5, 2, 2)
    op = ShakeDrop(p, alpha_range).eval()
    state = torch.get_rng_state()
    y = op(f)
    assert torch.equal(torch.get_rng_state(), state)
    mean_alpha = sum(alpha_range) / 2  # E[b + alpha - b alpha] = p + (1 - p) E[alpha]
    torch.testing.assert_close(y, (p + (1 - p) * mean_alpha) * f)


def test_shakedrop_survival_probabilities_decay_linearly():
    model = create_model("pyramidnet", 10, depth=20, alpha=12, shakedrop=True, p_L=0.5)
    probs = [m.p_survive for m in model.modules() if isinstance(m, ShakeDrop)]
    L = 6  # depth 20 bottleneck: 2 blocks per stage
    assert probs == pytest.approx([1 - (l / L) * (1 - 0.5) for l in range(1, L + 1)])
    full = build_on_meta("pyramidnet272_shakedrop", 10)
    probs = [m.p_survive for m in full.modules() if isinstance(m, ShakeDrop)]
    assert len(probs) == 90 and probs[0] == pytest.approx(1 - 0.5 / 90) and probs[-1] == pytest.approx(0.5)
    assert not any(isinstance(m, ShakeDrop) for m in build_on_meta("pyramidnet", 10, depth=20).modules())


STOCHASTIC = [
    ("shake_shake", {"depth": 8, "base_width": 8}),
    ("pyramidnet", {"depth": 11, "alpha": 8, "shakedrop": True}),
]


@pytest.mark.parametrize(("name", "kw"), STOCHASTIC)
def test_rng_replay_is_bit_identical_whatever_true_gradient(name, kw):
    """SAM's protocol: restore the RNG state, run again; the mode must not change the draws."""
    torch.manual_seed(0)
    model = create_model(name, 10, **kw).train()
    flags = [m for m in model.modules() if hasattr(m, "true_gradient")]
    assert flags and not any(m.true_gradient for m in flags)  # default False
    x = torch.randn(4, 3, 16, 16)
    outputs, states_after = [], []
    for true_gradient in (True, False, True):
        for m in flags:
            m.true_gradient = true_gradient
        torch.manual_seed(123)
        outputs.append(model(x))
        states_after.append(torch.get_rng_state())
    assert torch.equal(outputs[0], outputs[1]) and torch.equal(outputs[0], outputs[2])
    assert all(torch.equal(s, states_after[0]) for s in states_after)
    torch.manual_seed(124)
    assert not torch.equal(model(x), outputs[0]), "a different seed must give different noise"


@pytest.mark.parametrize(("name", "kw"), STOCHASTIC)
def test_true_gradient_is_the_gradient_of_the_replayed_forward(name, kw):
    """With true_gradient=True the backward is d(forward)/dw: compare with a central difference taken
    under RNG replay; with False (beta) it is not."""
    torch.manual_seed(0)
    model = create_model(name, 10, **kw).double().train()
    x = torch.randn(4, 3, 8, 8, dtype=torch.float64)
    params = list(model.parameters())
    direction = [torch.randn_like(p) for p in params]

    def loss() -> torch.Tensor:
        torch.manual_seed(99)  # the SAM step's snapshot/restore of the RNG state
        return model(x).square().mean()

    def directional_derivative_by_backward(true_gradient: bool) -> float:
        for m in model.modules():
            if hasattr(m, "true_gradient"):
                m.true_gradient = true_gradient
        model.zero_grad()
        loss().backward()
        return sum((p.grad * d).sum() for p, d in zip(params, direction, strict=True)).item()

    h = 1e-6
    with torch.no_grad():
        for p, d in zip(params, direction, strict=True):
            p.add_(h * d)
        up = loss().item()
        for p, d in zip(params, direction, strict=True):
            p.sub_(2 * h * d)
        down = loss().item()
        for p, d in zip(params, direction, strict=True):
            p.add_(h * d)
    numeric = (up - down) / (2 * h)
    assert directional_derivative_by_backward(True) == pytest.approx(numeric, rel=1e-5)
    assert directional_derivative_by_backward(False) != pytest.approx(numeric, rel=1e-2)


# ----------------------------------------------------------------------------- registry and errors
def test_registry_has_contract_names():
    assert set(list_models()) >= CONTRACT_NAMES
    assert list_models() == sorted(list_models())


def test_unknown_model_name_lists_valid_names():
    with pytest.raises(ValueError, match="wrn28_10x") as err:
        create_model("wrn28_10x", 10)
    for name in list_models():
        assert name in str(err.value)


@pytest.mark.parametrize(
    ("name", "kw", "must_mention"),
    [
        ("wide_resnet", {"depth": 27}, ["depth=27", "6n + 4"]),
        ("wide_resnet", {"depth": 4}, ["depth=4", "6n + 4"]),
        ("wide_resnet", {"widen_factor": 0}, ["widen_factor=0", ">= 1"]),
        ("wide_resnet", {"widen_factor": 2.5}, ["widen_factor=2.5", "integer"]),
        ("wrn28_10", {"drop_rate": 1.0}, ["drop_rate=1.0", "[0, 1)"]),
        ("wrn28_10", {"depth": 16}, ["depth", "drop_rate"]),  # presets fix the architecture
        ("shake_shake", {"depth": 25}, ["depth=25", "6n + 2"]),
        ("shake_shake", {"base_width": 95}, ["base_width=95", "even"]),
        ("pyramidnet", {"depth": 100}, ["depth=100", "9n + 2"]),
        ("pyramidnet", {"depth": 12, "bottleneck": False}, ["depth=12", "6n + 2"]),
        ("pyramidnet", {"alpha": -1}, ["alpha=-1", ">= 0"]),
        ("pyramidnet272_shakedrop", {"p_L": 0.0}, ["p_L=0.0", "(0, 1]"]),
        ("pyramidnet", {"width_rounding": "ceil"}, ["'ceil'", "round", "floor"]),
        ("resnet32", {"shortcut": "C"}, ["'C'", "'A'", "'B'"]),
        ("resnet_cifar", {"depth": 33}, ["depth=33", "6n + 2"]),
        ("resnet50", {"zero_init_last": "yes"}, ["zero_init_last='yes'", "True or False"]),
        ("resnet50", {"init": "kaiming"}, ["'kaiming'", "'official'", "'timm'"]),
        ("resnet101", {"stem": "deep"}, ["'deep'", "'official'", "'timm'"]),
    ],
)
def test_bad_kwargs_raise_value_error_naming_value_and_rule(name, kw, must_mention):
    with pytest.raises(ValueError) as err:
        build_on_meta(name, 10, **kw)
    for text in must_mention:
        assert text in str(err.value), str(err.value)


@pytest.mark.parametrize("name", ["wrn16_8", "resnet32", "resnet50"])
@pytest.mark.parametrize(("arg", "value"), [("num_classes", 0), ("in_chans", 0)])
def test_bad_num_classes_or_in_chans(name, arg, value):
    kwargs = {"num_classes": 10, "in_chans": 3, arg: value}
    with pytest.raises(ValueError, match=f"{arg}={value}"):
        build_on_meta(name, **kwargs)
