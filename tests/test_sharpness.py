"""analysis/flatness.py, analysis/flatness_report.py and scripts/sharpness.py against closed forms and independent computations.

Eigenvalues (scipy's eigsh on our Hessian-vector products): a quadratic 1/2 x^T A x (Hessian A, spectrum chosen, checked with numpy.linalg.eigh) and
linear least squares (Hessian X^T X / n), plus a tiny MLP whose full Hessian torch.func builds.
m-sharpness: least squares, where L(w + rho g/||g||) - L(w) is computed by hand in numpy.
"""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from script_main import run_main
from torch import nn

import data
import models
from analysis.flatness import hessian_eigenvalues, hessian_vector_product, m_sharpness
from analysis.flatness_report import measure_sharpness
from scripts import sharpness as sharpness_script

TOL = 1e-3


def random_symmetric(eigenvalues: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((len(eigenvalues), len(eigenvalues))))
    a = q @ np.diag(eigenvalues) @ q.T
    return (a + a.T) / 2


def assert_within_tol(estimate: torch.Tensor, truth: np.ndarray, tol: float = TOL) -> None:
    est = estimate.numpy()
    assert est.shape == truth.shape
    assert np.all(np.diff(est) <= 0), f"not sorted descending: {est}"
    assert np.all(np.abs(est - truth) <= tol * np.abs(truth)), f"{est} vs {truth}"


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_quadratic_top_eigenvalues_match_eigh(dtype):
    # Large negative eigenvalues must not appear: "top" means largest algebraic, not largest magnitude.
    rng = np.random.default_rng(1)
    spectrum = np.concatenate([[10.0, 8.0, 6.5, 5.0, 4.0], rng.uniform(-3, 3, 53), [-20.0, -15.0]])
    a = random_symmetric(spectrum, seed=2)
    truth = np.sort(np.linalg.eigh(a)[0])[::-1][:5]
    a_t = torch.tensor(a, dtype=dtype)
    # Two parameters of different shapes: x = (P.flatten(), v), so flattening/unflattening is exercised.
    p = torch.randn(5, 8, dtype=dtype, requires_grad=True)
    v = torch.randn(20, dtype=dtype, requires_grad=True)

    def loss():
        x = torch.cat([p.reshape(-1), v])
        return 0.5 * x @ a_t @ x

    assert_within_tol(hessian_eigenvalues(loss, [p, v], k=5, tol=TOL), truth)


def test_repeated_eigenvalues_are_counted_with_multiplicity():
    spectrum = np.array([7.0, 7.0, 7.0, 2.0, 1.0, 0.5, -1.0, -4.0])
    a_t = torch.tensor(random_symmetric(spectrum, seed=3))
    x = torch.randn(8, dtype=torch.float64, requires_grad=True)
    ev = hessian_eigenvalues(lambda: 0.5 * x @ a_t @ x, [x], k=4)
    assert_within_tol(ev, np.array([7.0, 7.0, 7.0, 2.0]))


def test_hessian_vector_product_is_a_times_v():
    a = random_symmetric(np.linspace(-2, 5, 12), seed=4)
    a_t = torch.tensor(a)
    x = torch.randn(12, dtype=torch.float64, requires_grad=True)
    vec = torch.randn(12, dtype=torch.float64)
    (hv,) = hessian_vector_product(lambda: 0.5 * x @ a_t @ x + x.sum(), [x], [vec])
    np.testing.assert_allclose(hv.numpy(), a @ vec.numpy(), rtol=1e-12, atol=1e-12)


def test_least_squares_hessian_is_gram_matrix_and_chunking_agrees():
    # L(w, b) = 1/(2n) ||X w + b - y||^2 -> H = Z^T Z / n with Z = [X, 1] (independent: numpy eigh).
    torch.manual_seed(0)
    n, d = 64, 9
    x = torch.randn(n, d, dtype=torch.float64) * torch.linspace(0.5, 3.0, d, dtype=torch.float64)
    y = torch.randn(n, dtype=torch.float64)
    layer = nn.Linear(d, 1).double()
    z = np.hstack([x.numpy(), np.ones((n, 1))])
    truth = np.sort(np.linalg.eigh(z.T @ z / n)[0])[::-1][:5]

    # Two parameters with zero Hessian rows: one the loss ignores, one it uses linearly.
    unused = torch.randn(3, dtype=torch.float64, requires_grad=True)
    linear = torch.randn(2, dtype=torch.float64, requires_grad=True)

    def loss():
        return 0.5 * ((layer(x).squeeze(1) - y) ** 2).mean() + 0.1 * linear.sum()

    params = [*layer.parameters(), unused, linear]
    assert_within_tol(hessian_eigenvalues(loss, params, k=5), truth)
    # The same loss as a sum of chunk closures (summed chunk loss / n) gives the same Hessian.
    chunks = [
        (lambda xs=xs, ys=ys: 0.5 * ((layer(xs).squeeze(1) - ys) ** 2).sum() / n)
        for xs, ys in zip(x.split(20), y.split(20), strict=True)
    ]
    assert_within_tol(hessian_eigenvalues(chunks, params, k=5), truth)


def test_bad_arguments_raise_value_error():
    x = torch.randn(4, dtype=torch.float64, requires_grad=True)
    for kwargs in ({"k": 0}, {"k": 4}, {"k": 5}, {"tol": 0.0}, {"k": 3, "max_iter": 0}):
        with pytest.raises(ValueError):
            hessian_eigenvalues(lambda: (x**2).sum(), [x], **kwargs)


def _least_squares_chunk_rise(w, x, y, rho):
    """L(w + rho g/||g||) - L(w) for L(w) = mean((x w - y)^2), by hand in numpy."""
    r = x @ w - y
    g = 2.0 / len(y) * x.T @ r
    eps = rho * g / np.linalg.norm(g)
    return np.mean((x @ (w + eps) - y) ** 2) - np.mean(r**2)


@pytest.mark.parametrize("m", [4, 6])
def test_m_sharpness_one_step_matches_closed_form_and_restores_weights(m):
    torch.manual_seed(0)
    n, d, rho = 12, 5, 0.3
    x = torch.randn(n, d, dtype=torch.float64)
    y = torch.randn(n, 1, dtype=torch.float64)
    model = nn.Linear(d, 1, bias=False).double()
    model.train()
    before = model.weight.detach().clone()
    # Uneven batches (5 + 7): chunks are consecutive runs of m examples across batch boundaries.
    batches = [(x[:5], y[:5]), (x[5:], y[5:])]
    got = m_sharpness(model, F.mse_loss, batches, rho=rho, m=m, ascent_steps=1)

    w = before.numpy().reshape(-1)
    xn, yn = x.numpy(), y.numpy().reshape(-1)
    expected = np.mean(
        [_least_squares_chunk_rise(w, xn[i : i + m], yn[i : i + m], rho) for i in range(0, n - n % m, m)]
    )
    assert got == pytest.approx(expected, rel=1e-10)
    assert torch.equal(model.weight, before)  # bit-exact restore
    assert model.training


def test_m_sharpness_restores_batchnorm_and_more_steps_never_lower():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    model.train()
    batches = [(torch.randn(16, 6), torch.randint(0, 3, (16,))) for _ in range(2)]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    one = m_sharpness(model, F.cross_entropy, batches, rho=0.05, m=8, ascent_steps=1)
    three = m_sharpness(model, F.cross_entropy, batches, rho=0.05, m=8, ascent_steps=3)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert model.training and model[1].training
    assert one > 0 and three >= one  # the 3-step estimate is a max over iterates that include step 1
    assert m_sharpness(model, F.cross_entropy, batches, rho=0.0, m=8) == 0.0
    with pytest.raises(ValueError):
        m_sharpness(model, F.cross_entropy, batches, rho=0.05, m=64)  # fewer than m examples


def test_measure_sharpness_on_tiny_mlp_matches_full_hessian():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(5), nn.Tanh(), nn.Linear(5, 3)).double()
    model.train()
    batches = [(torch.randn(10, 4, dtype=torch.float64), torch.randint(0, 3, (10,))) for _ in range(3)]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    result = measure_sharpness(model, batches, k=5, rho=0.05, m=10, tol=TOL)

    # Independent: the full Hessian of the eval-mode mean loss by torch.func, then numpy eigh.
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    flat0 = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    x_all = torch.cat([b[0] for b in batches])
    y_all = torch.cat([b[1] for b in batches])
    model.eval()

    def loss_of(flat):
        params, offset = {}, 0
        for name, shape in zip(names, shapes, strict=True):
            size = int(np.prod(shape))
            params[name] = flat[offset : offset + size].view(shape)
            offset += size
        return F.cross_entropy(torch.func.functional_call(model, params, (x_all,)), y_all)

    hessian = torch.autograd.functional.hessian(loss_of, flat0).numpy()
    model.train()
    truth = np.sort(np.linalg.eigh(hessian)[0])[::-1][:5]
    assert_within_tol(torch.tensor(result["eigenvalues"]), truth)
    assert result["lambda_max"] == pytest.approx(truth[0], rel=TOL)
    assert result["lambda_max_over_lambda_k"] == pytest.approx(truth[0] / truth[4], rel=3 * TOL)
    assert result["m_sharpness"] > 0 and result["num_examples"] == 30 and result["tol"] == TOL
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert model.training


def test_cli_end_to_end_on_digits(tmp_path):
    bundle = data.build_data("digits", root=str(tmp_path / "data"), batch_size=32, augment="none", seed=0)
    model_cfg = {"name": "wide_resnet", "depth": 10, "widen_factor": 1}
    model = models.create_model(
        "wide_resnet", bundle.num_classes, in_chans=bundle.in_chans, depth=10, widen_factor=1
    )
    config = {
        "seed": 0,
        "label_noise": 0.0,
        "model": model_cfg,
        "dataset": {"name": "digits", "root": str(tmp_path / "data")},
    }
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    torch.save({"model": model.state_dict(), "config": config}, run_dir / "final_model.pt")
    out = tmp_path / "sharp.json"
    args = ["--num-examples", "32", "--k", "2", "--m", "16", "--max-iter", "12", "--batch-size", "32"]
    proc = run_main(sharpness_script.main, run_dir, *args, "--out", out)  # in-process
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert result["num_examples"] == 32 and len(result["eigenvalues"]) == 2
    assert result["eigenvalues"] == sorted(result["eigenvalues"], reverse=True)
    assert result["tol"] == 1e-3 and "relative" in result["stopping_rule"]
    assert "lambda_max" in proc.stdout and "tol = 0.001" in proc.stdout
