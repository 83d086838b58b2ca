"""The efficient SAM variants (sam/variants, issue 15) against their papers' equations in float64
(tests/variants_reference.py), and the promises they share with SAM: BatchNorm statistics from the first
pass only, m-chunks, bf16 and the fp16 GradScaler path, exact resume from ``state_dict()``."""

from __future__ import annotations

import copy
import io

import pytest
import torch
import variants_reference as ref
from sam_reference import clip, grad_at, nesterov_sgd, sam_gradient
from torch import nn

from sam import Precision, StepOptions, resolve_precision, sam_step, select_step
from sam.randomness import RNGState
from sam.variants import VARIANTS, build_variant
from sam.variants.passes import finish_step, first_pass, perturbed_pass

LR, RHO, L2 = 0.1, 0.1, 5e-3
CE = nn.functional.cross_entropy


def mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 4)).double()


def ln_mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 16), nn.LayerNorm(16), nn.Tanh(), nn.Linear(16, 4)).double()


def bn_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.Dropout(0.2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(6, 4),
    )


def batches(n: int, size: int = 16, seed: int = 1, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(size, 6, generator=g, dtype=dtype), torch.randint(0, 4, (size,), generator=g))
        for _ in range(n)
    ]


def image_batches(n: int, size: int = 16, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(size, 3, 5, 5, generator=g), torch.randint(0, 4, (size,), generator=g)) for _ in range(n)
    ]


# SAF's epochs in the shared-promise tests: one step each (its loss on from step 1 with past_epochs 1), and
# the same 16 examples in every batch (its outputs of the step before are the targets).
STEPS_PER_EPOCH = {"saf": 1}


def make(name, model, *, options=None, total_steps=12, rho=RHO, lr=LR, steps_per_epoch=None, **kw):
    if name == "saf":
        kw.setdefault("example_indices", lambda: torch.arange(16))
    return build_variant(
        name,
        model.parameters(),
        model=model,
        rho=rho,
        options=options,
        total_steps=total_steps,
        steps_per_epoch=steps_per_epoch or STEPS_PER_EPOCH.get(name, 4),
        seed=0,
        lr=lr,
        momentum=0.9,
        nesterov=True,
        **kw,
    )


def weights(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def assert_weights(model, w, rtol=1e-6, atol=1e-9):
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), w[n], rtol=rtol, atol=atol, msg=n)


def opts(**kw) -> StepOptions:
    return StepOptions(CE, l2_weight_decay=L2, **kw)


# ----------------------------------------------------------------------------- against the equations
@pytest.mark.parametrize("grad_clip", [None, pytest.param(0.3, marks=pytest.mark.slow)])
def test_looksam_matches_its_algorithm(grad_clip):
    model, ref_model = mlp(), mlp()
    opt = make("looksam", model, options={"k": 3, "alpha": 0.7})
    step = select_step(opt, None, 16)
    w, buf, g_v = weights(model), {}, None
    for t, (x, y) in enumerate(batches(5)):  # SAM, reuse, reuse, SAM, reuse
        step(model, opt, x, y, opts(grad_clip=grad_clip))
        d, g_v = ref.looksam(ref_model, w, x, y, step=t, k=3, alpha=0.7, rho=RHO, l2=L2, g_v=g_v)
        w, buf = nesterov_sgd(w, buf, clip(d, grad_clip), lr=LR)
        assert_weights(model, w)


def test_gsam_matches_its_algorithm_with_rho_following_the_learning_rate():
    model, ref_model = mlp(), mlp()
    opt = make("gsam", model, options={"alpha": 0.3, "rho_min": 0.02, "rho_min_ratio": None})
    step = select_step(opt, None, 16)
    w, buf = weights(model), {}
    for t, (x, y) in enumerate(batches(5)):
        lr_t = LR * (1 - t / 6)
        for group in opt.param_groups:
            group["lr"] = lr_t
        step(model, opt, x, y, opts())
        rho_t = 0.02 + (RHO - 0.02) * lr_t / LR
        d = ref.gsam(ref_model, w, x, y, alpha=0.3, rho=rho_t, l2=L2)
        w, buf = nesterov_sgd(w, buf, d, lr=lr_t)
        assert_weights(model, w)


def test_sam_on_perturbs_only_normalization_parameters():
    model, ref_model = ln_mlp(), ln_mlp()
    opt = make("sam_on", model)
    step = select_step(opt, None, 16)
    norm_keys = {"1.weight", "1.bias"}
    w, buf = weights(model), {}
    for x, y in batches(4):
        step(model, opt, x, y, opts())
        d = ref.sam_on(ref_model, w, x, y, rho=RHO, l2=L2, norm_keys=norm_keys)
        w, buf = nesterov_sgd(w, buf, d, lr=LR)
        assert_weights(model, w)
    with pytest.raises(ValueError, match="normalization-layer parameters only"):
        make("sam_on", mlp())


def test_ae_sam_matches_its_policy_and_takes_both_kinds_of_step():
    model, ref_model = mlp(), mlp()
    total, delta, l1, l2c = 14, 0.6, -0.5, 0.8
    opt = make("ae_sam", model, options={"delta": delta, "lambda1": l1, "lambda2": l2c}, total_steps=total)
    step = select_step(opt, None, 16)
    w, buf, mean, var, kinds = weights(model), {}, 0.0, 0.0, []
    for t, (x, y) in enumerate(batches(total)):
        step(model, opt, x, y, opts())
        g = grad_at(ref_model, w, x, y, L2)
        s = float(ref.vdot(g, g))
        c = l1 * t / total + l2c * (1 - t / total)
        use, mean, var = ref.ae_sam_statistics(s, mean, var, delta=delta, c=c)
        kinds.append(use)
        d = sam_gradient(ref_model, w, x, y, rho=RHO, l2=L2) if use else g
        w, buf = nesterov_sgd(w, buf, d, lr=LR)
        assert_weights(model, w)
    assert any(kinds) and not all(kinds), kinds
    assert opt.sam_steps == sum(kinds)
    assert opt.mean == pytest.approx(mean, rel=1e-6) and opt.var == pytest.approx(var, rel=1e-6)  # fp32 norms


def test_esam_matches_swp_and_sds():
    model, ref_model = mlp(), mlp()
    beta, gamma = 0.5, 0.4
    opt = make("esam", model, options={"beta": beta, "gamma": gamma})
    step = select_step(opt, None, 16)
    names = [n for n, _ in model.named_parameters()]
    w, buf, sizes = weights(model), {}, set()
    for t, (x, y) in enumerate(batches(6)):
        chosen = [n for n, c in zip(names, opt.chosen_tensors(t)) if c]
        sizes.add(len(chosen))
        step(model, opt, x, y, opts())
        d = ref.esam(ref_model, w, x, y, rho=RHO, beta=beta, gamma=gamma, l2=L2, chosen=chosen)
        w, buf = nesterov_sgd(w, buf, d, lr=LR)
        assert_weights(model, w)
    assert len(sizes) > 1  # the subset really changes from step to step
    # SWP's draw: each tensor with probability beta, the same for every replica and resume (seed, step)
    draws = torch.tensor([opt.chosen_tensors(t) for t in range(2000)], dtype=torch.float64)
    assert abs(draws.mean().item() - beta) < 0.02
    assert opt.chosen_tensors(5) == make("esam", mlp(), options={"beta": beta}).chosen_tensors(5)


@pytest.mark.parametrize("name", ["rst", "sam_late"])
def test_switching_variants_take_exactly_a_sam_or_an_sgd_step(name):
    model, ref_model = mlp(), mlp()
    total = 8
    options = {"probability": 0.5} if name == "rst" else {"late_fraction": 0.25}
    opt = make(name, model, options=options, total_steps=total)
    step = select_step(opt, None, 16)
    w, buf, kinds = weights(model), {}, []
    for t, (x, y) in enumerate(batches(total)):
        step(model, opt, x, y, opts())
        moved = weights(model)
        cands = {
            kind: nesterov_sgd(w, buf, d, lr=LR)
            for kind, d in (
                ("sam", sam_gradient(ref_model, w, x, y, rho=RHO, l2=L2)),
                ("sgd", grad_at(ref_model, w, x, y, L2)),
            )
        }
        close = [
            k
            for k, (cw, _) in cands.items()
            if all(torch.allclose(moved[n], cw[n], rtol=1e-6, atol=1e-9) for n in w)
        ]
        assert len(close) == 1, (t, close)
        kinds.append(close[0])
        w, buf = cands[close[0]]
    assert opt.sam_steps == kinds.count("sam")
    if name == "sam_late":
        assert kinds == ["sgd"] * 6 + ["sam"] * 2
    else:
        assert 0 < kinds.count("sam") < total
        coins = make("rst", mlp(), options={"probability": 0.3})
        hits = 0
        for s in range(2000):
            coins.steps_taken = s
            hits += coins.use_sam()
        assert abs(hits / 2000 - 0.3) < 0.03


def test_mesa_matches_the_trajectory_loss_with_an_ema_teacher():
    model, ref_model = mlp(), mlp()
    decay, lam, tau = 0.8, 0.8, 2.0
    opt = make(
        "mesa", model, options={"decay": decay, "kl_weight": lam, "temperature": tau, "start_epoch": 0.5}
    )
    assert opt.start_step == 2  # 0.5 epochs of 4 steps
    step = select_step(opt, None, 16)
    w, buf = weights(model), {}
    ema = {n: v.clone() for n, v in w.items()}
    for t, (x, y) in enumerate(batches(6)):
        result = step(model, opt, x, y, opts())
        d = ref.mesa(ref_model, w, x, y, ema=ema, kl_weight=lam, temperature=tau, l2=L2, active=t >= 2)
        torch.testing.assert_close(
            result.loss, CE(ref_model_forward(ref_model, w, x), y), rtol=1e-9, atol=1e-12
        )
        w, buf = nesterov_sgd(w, buf, d, lr=LR)
        ema = {n: decay * ema[n] + (1 - decay) * w[n] for n in w}
        assert_weights(model, w)
    for n, v in ema.items():
        torch.testing.assert_close(opt.ema[n], v, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(("nesterov", "m"), [(False, None), (True, None), (True, 4)])
def test_msam_perturbs_along_the_momentum_buffer(nesterov, m):
    """Becker et al. 2024: g_t = grad L(w_t - rho v_t/||v_t||); v_{t+1} = mu v_t + g_t; heavy-ball w_{t+1} =
    w_t - lr v_{t+1} (the paper's and the authors' code), or Nesterov w_{t+1} = w_t - lr (g_t + mu v_{t+1})."""
    model, ref_model = mlp(), mlp()
    rho = 0.3
    opt = build_variant(
        "msam", model.parameters(), model=model, rho=rho, lr=LR, momentum=0.9, nesterov=nesterov
    )
    step = select_step(opt, m, 16)
    w, v = weights(model), None
    for x, y in batches(5):
        step(model, opt, x, y, opts())
        g = ref.msam(ref_model, w, x, y, v=v, rho=rho, l2=L2)
        v = {n: g[n].clone() if v is None else 0.9 * v[n] + g[n] for n in w}
        w = {n: w[n] - LR * ((g[n] + 0.9 * v[n]) if nesterov else v[n]) for n in w}
        assert_weights(model, w)
    with pytest.raises(ValueError, match="no adaptive"):
        build_variant("msam", mlp().parameters(), model=model, rho=rho, adaptive=True, lr=LR, momentum=0.9)
    with pytest.raises(ValueError, match="has none"):
        build_variant("msam", mlp().parameters(), model=model, rho=rho, lr=LR, momentum=0.0)


@pytest.mark.parametrize("m", [None, 4])
def test_saf_matches_the_trajectory_loss_against_outputs_of_past_epochs(m):
    """16 examples, batches of 8 (2 steps per epoch), a new order every epoch, E = 2: from epoch 2 on the
    loss of example i compares with its own logits recorded in epoch e - 2 (the training forward's)."""
    model, ref_model = mlp(), mlp()
    lam, tau, past_epochs, epochs = 0.5, 2.0, 2, 4
    g = torch.Generator().manual_seed(3)
    pool_x = torch.randn(16, 6, generator=g, dtype=torch.float64)
    pool_y = torch.randint(0, 4, (16,), generator=g)
    current = {}
    opt = build_variant(
        "saf", model.parameters(), model=model, rho=RHO, lr=LR, momentum=0.9, nesterov=True,
        options={"kl_weight": lam, "temperature": tau, "past_epochs": past_epochs, "start_epoch": 2},
        total_steps=2 * epochs, steps_per_epoch=2, example_indices=lambda: current["idx"],
    )  # fmt: skip
    step = select_step(opt, m, 8)
    w, buf, recorded = weights(model), {}, {}
    for e in range(epochs):
        order = torch.randperm(16, generator=g)
        for b in range(2):
            idx = order[8 * b : 8 * b + 8]
            current["idx"] = idx
            x, y = pool_x[idx], pool_y[idx]
            result = step(model, opt, x, y, opts())
            past = torch.stack([recorded[(e - past_epochs, int(i))] for i in idx]) if e >= 2 else None
            d, logits = ref.saf(ref_model, w, x, y, past=past, kl_weight=lam, temperature=tau, l2=L2)
            torch.testing.assert_close(result.loss, CE(logits, y), rtol=1e-9, atol=1e-12)  # the CE part
            for i, z in zip(idx, logits):
                recorded[(e, int(i))] = z
            w, buf = nesterov_sgd(w, buf, d, lr=LR)
            assert_weights(model, w)
    assert opt.outputs.shape == (past_epochs + 1, 16, 4)


def test_saf_is_refused_without_example_indices():
    with pytest.raises(ValueError, match="optimizer=saf needs the training-set index of every example"):
        build_variant(
            "saf", mlp().parameters(), model=mlp(), rho=RHO, steps_per_epoch=4, total_steps=40, lr=LR
        )


def test_esam_with_chunks_runs_its_step_per_chunk():
    model, ref_model = mlp(), mlp()
    beta, gamma = 0.5, 0.5
    opt = make("esam", model, options={"beta": beta, "gamma": gamma})
    step = select_step(opt, 8, 16)
    names = [n for n, _ in model.named_parameters()]
    w, buf = weights(model), {}
    for t, (x, y) in enumerate(batches(3)):
        chosen = [n for n, c in zip(names, opt.chosen_tensors(t)) if c]
        step(model, opt, x, y, opts())
        d = ref.esam_chunked(ref_model, w, x, y, m=8, rho=RHO, beta=beta, gamma=gamma, l2=L2, chosen=chosen)
        w, buf = nesterov_sgd(w, buf, d, lr=LR)
        assert_weights(model, w)


def test_ae_sam_with_chunks_decides_from_the_mean_chunk_statistic():
    model, ref_model = mlp(), mlp()
    total, delta, l1, l2c = 7, 0.6, -0.5, 0.8
    opt = make("ae_sam", model, options={"delta": delta, "lambda1": l1, "lambda2": l2c}, total_steps=total)
    step = select_step(opt, 4, 16)
    w, buf, mean, var, kinds = weights(model), {}, 0.0, 0.0, []
    for t, (x, y) in enumerate(batches(total)):
        step(model, opt, x, y, opts())
        s, g = ref.ae_sam_chunked_statistic(ref_model, w, x, y, m=4, l2=L2)
        c = l1 * t / total + l2c * (1 - t / total)
        use, mean, var = ref.ae_sam_statistics(s, mean, var, delta=delta, c=c)
        kinds.append(use)
        if use:
            parts = [
                sam_gradient(ref_model, w, xc, yc, rho=RHO, l2=L2) for xc, yc in zip(x.split(4), y.split(4))
            ]
            d = {n: sum(p[n] for p in parts) / 4 for n in w}
        else:
            d = g
        w, buf = nesterov_sgd(w, buf, d, lr=LR)
        assert_weights(model, w)
    assert any(kinds) and not all(kinds), kinds
    assert opt.sam_steps == sum(kinds)


@pytest.mark.parametrize(
    ("options", "total", "sam_steps"),
    [({"late_fraction": 0.125}, 16, 2), ({"late_fraction": None, "late_epochs": 1}, 12, 4)],
)
def test_sam_late_takes_exactly_its_share(options, total, sam_steps):
    opt = make("sam_late", mlp(), options=options, total_steps=total)
    assert opt.first_sam_step == total - sam_steps
    kinds = []
    for t in range(total):
        opt.steps_taken = t
        kinds.append(opt.use_sam())
    assert sum(kinds) == sam_steps and kinds[-sam_steps:] == [True] * sam_steps


def test_looksam_records_k_and_its_two_pass_steps():
    model = mlp()
    opt = make("looksam", model, options={"k": 3})
    step = select_step(opt, None, 16)
    for x, y in batches(7):
        step(model, opt, x, y, opts())
    state = opt.state_dict()["variant"]
    assert state["k"] == 3 and state["sam_steps"] == 3  # steps 0, 3, 6


def ref_model_forward(model, w, x):
    from torch.func import functional_call

    return functional_call(model, w, (x,))


@pytest.mark.parametrize("name", ["gsam", pytest.param("looksam", marks=pytest.mark.slow)])
def test_chunks_combine_the_means_of_the_chunk_gradients(name):
    model, ref_model = mlp(), mlp()
    options = {"alpha": 0.3} if name == "gsam" else {"k": 2, "alpha": 0.5}
    opt = make(name, model, options=options)
    step = select_step(opt, 4, 16)
    w, buf, g_v = weights(model), {}, None
    for t, (x, y) in enumerate(batches(2)):
        step(model, opt, x, y, opts())
        parts = list(zip(x.split(4), y.split(4)))
        g_chunks = [grad_at(ref_model, w, xc, yc, L2) for xc, yc in parts]
        g = {n: sum(c[n] for c in g_chunks) / 4 for n in w}
        if name == "looksam" and t % 2:
            d = {n: g[n] + 0.5 * ref.norm(g) / ref.norm(g_v) * g_v[n] for n in w}
        else:
            s_chunks = [sam_gradient(ref_model, w, xc, yc, rho=RHO, l2=L2) for xc, yc in parts]
            g_s = {n: sum(c[n] for c in s_chunks) / 4 for n in w}
            if name == "gsam":
                coef = ref.vdot(g, g_s) / ref.vdot(g_s, g_s)
                d = {n: g_s[n] - 0.3 * (g[n] - coef * g_s[n]) for n in w}
            else:
                coef = ref.vdot(g, g_s) / ref.vdot(g, g)
                d, g_v = g_s, {n: g_s[n] - coef * g[n] for n in w}
        w, buf = nesterov_sgd(w, buf, d, lr=LR)
        assert_weights(model, w)


# ----------------------------------------------------------------------------- shared promises
# Options that make the first step a two-pass (SAM) step wherever the variant has one.
TWO_PASS = {
    "looksam": {"k": 2},
    "esam": {"beta": 0.7, "gamma": 0.5},
    "rst": {"probability": 1.0},
    "sam_late": {"late_fraction": 1.0},
    "ae_sam": {},
    "mesa": {"start_epoch": 0, "decay": 0.5},
    "gsam": {"alpha": 0.3},
    "sam_on": {},
    "saf": {"past_epochs": 1, "start_epoch": 1},  # its loss from step 1 (one step per epoch here)
    "msam": {},  # e along the momentum from step 1
}


def bn_buffers(model):
    return {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "num_batches" in k}


@pytest.mark.parametrize("name", list(VARIANTS))
def test_batchnorm_statistics_move_once_from_the_first_pass(name):
    model = bn_net()
    ((x, y),) = image_batches(1)
    reference = copy.deepcopy(model)
    torch.manual_seed(5)
    reference(x)  # exactly one train-mode forward at w (same dropout draws)
    opt = make(name, model, options=TWO_PASS[name], rho=0.5)
    torch.manual_seed(5)
    select_step(opt, None, 16)(model, opt, x, y, StepOptions(CE))
    if hasattr(opt, "sam_steps"):
        assert opt.sam_steps == 1
    for k, v in bn_buffers(reference).items():
        assert torch.equal(bn_buffers(model)[k], v), k


def test_the_passes_compose_to_sam_step_bit_for_bit():
    a, b = bn_net(), bn_net()
    oa = make("rst", a, options={"probability": 1.0})  # a SAM: same first_step, same base optimizer
    ob = make("rst", b, options={"probability": 1.0})
    for x, y in image_batches(3):
        torch.manual_seed(3)
        ra = sam_step(a, oa, x, y, opts(grad_clip=1.0))
        torch.manual_seed(3)
        rng = RNGState(x.device)
        loss, correct = first_pass(b, ob, x, y, opts(grad_clip=1.0), local=True)
        perturbed_pass(b, ob, x, y, opts(grad_clip=1.0), rng)
        rb = finish_step(ob, opts(grad_clip=1.0), loss, correct)
        assert torch.equal(ra.loss, rb.loss) and torch.equal(ra.grad_norm, rb.grad_norm)
    for pa, pb in zip(a.state_dict().values(), b.state_dict().values()):
        assert torch.equal(pa, pb)


def _train(name, model, opt, steps, precision=None, m=None, start=0):
    step = select_step(opt, m, 16)
    results = []
    for i, (x, y) in enumerate(image_batches(steps + start, seed=7)[start:]):
        torch.manual_seed(100 + start + i)  # dropout draws per step, as the trainer's RNG stream
        o = opts(grad_clip=2.0) if precision is None else opts(grad_clip=2.0, precision=precision)
        results.append(step(model, opt, x, y, o))
    return results


@pytest.mark.slow
@pytest.mark.parametrize("name", list(VARIANTS))
def test_state_dict_resume_continues_bit_exactly(name):
    options = {**TWO_PASS[name], **({"probability": 0.5} if name == "rst" else {})}
    if name == "sam_late":
        options = {"late_fraction": 0.5}
    m = 8
    straight = bn_net()
    o_straight = make(name, straight, options=options, total_steps=6)
    _train(name, straight, o_straight, 6, m=m)

    first = bn_net()
    o_first = make(name, first, options=options, total_steps=6)
    _train(name, first, o_first, 3, m=m)
    buffer = io.BytesIO()
    torch.save({"model": first.state_dict(), "optimizer": o_first.state_dict()}, buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)  # what the trainer's checkpoint reader accepts
    resumed = bn_net(seed=1)  # different initial weights: everything must come from the checkpoint
    o_resumed = make(name, resumed, options=options, total_steps=6)
    resumed.load_state_dict(state["model"])
    o_resumed.load_state_dict(state["optimizer"])
    _train(name, resumed, o_resumed, 3, m=m, start=3)
    for (k, v), w in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(v, w), k
    if name != "sam_on":
        assert o_resumed.state_dict()["variant"].keys() == o_straight.state_dict()["variant"].keys()


def test_a_checkpoint_of_another_optimizer_is_refused():
    model = bn_net()
    looksam = make("looksam", model)
    with pytest.raises(ValueError, match="written by gsam"):
        looksam.load_state_dict(make("gsam", bn_net()).state_dict())


@pytest.mark.slow
@pytest.mark.parametrize("name", list(VARIANTS))
def test_bf16_tracks_fp32_and_the_gradscaler_path_equals_fp32(name):
    options = TWO_PASS[name]
    runs = {}
    for label, precision in (
        ("fp32", None),
        ("bf16", resolve_precision("bf16", "cpu")),
        # the fp16 code path (GradScaler) on CPU, fp32 arithmetic: equal to fp32 when nothing overflows
        ("scaler", Precision(None, "cpu", torch.amp.GradScaler("cpu", init_scale=2.0**10))),
    ):
        model = bn_net()
        opt = make(name, model, options=options, total_steps=4)
        results = _train(name, model, opt, 4, precision=precision)
        assert not any(bool(r.skipped) for r in results)
        runs[label] = model
    for a, b, c in zip(*(runs[k].parameters() for k in ("fp32", "bf16", "scaler"))):
        torch.testing.assert_close(b, a, rtol=0, atol=5e-2)  # bf16: ~3 significant digits, 4 steps
        torch.testing.assert_close(c, a, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("name", "options", "m", "message"),
    [
        ("looksam", {"kk": 3}, None, r"unknown key\(s\) \['kk'\] for looksam; valid: alpha, k"),
        ("looksam", {"k": 0}, None, "k=0 is invalid"),
        ("esam", {"beta": 1.5}, None, r"beta=1.5 is invalid: it must be a number in \(0.0, 1.0\]"),
        ("rst", {"probability": -0.1}, None, "probability=-0.1 is invalid"),
        ("rst", {"probability": 0.0}, None, "rst: probability=0 .* never takes a SAM step"),
        ("mesa", {"start_epoch": -1}, None, "start_epoch=-1 is invalid"),
        (
            "mesa",
            {"start_epoch": 3},
            None,
            r"mesa: the trajectory loss would start at epoch 3 \(step 12\).*start_epoch",
        ),
        ("mesa", {"kl_weight": 0.0}, None, "kl_weight=0.0 is invalid"),
        (
            "gsam",
            {"rho_min": 0.5, "rho_min_ratio": None},
            None,
            r"rho_min=0.5 is invalid: it must be a number in \[0.0, 0.1\]",
        ),
        ("gsam", {"rho_min": 0.02}, None, "exactly one of them"),
        (
            "sam_late",
            {"late_fraction": 0.3},
            None,
            r"late_fraction=0.3 of the run's 12 steps is 3.6 steps.*late_epochs",
        ),
        ("sam_late", {"late_fraction": 0.0}, None, "gives no SAM step"),
        (
            "sam_late",
            {"late_fraction": None, "late_epochs": 4},
            None,
            "late_epochs=4 is more than the run's 3 epochs",
        ),
        ("saf", {"past_epochs": 3, "start_epoch": 2}, None, "start_epoch=2 is before past_epochs=3"),
        (
            "saf",
            {"past_epochs": 1, "start_epoch": 12},
            None,
            "saf: the trajectory loss would start at epoch 12",
        ),
    ],
)
def test_bad_options_are_clear_errors(name, options, m, message):
    with pytest.raises(ValueError, match=message):
        model = bn_net()
        select_step(make(name, model, options=options), m, 16)
    with pytest.raises(ValueError, match="'nope' is not one of looksam, esam"):
        make("nope", bn_net())
