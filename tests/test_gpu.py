"""CUDA checks (``pytest -m gpu`` on a machine with a GPU; deselected by default, skipped without CUDA).

They cover what CPU tests cannot: fp16 autocast with a real GradScaler, bf16 on the GPU, the CUDA RNG
replay between SAM's passes, the tensor loader on the device, and a short train.py run on CUDA.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
from torch import nn

from sam import SAM, StepOptions, resolve_precision, sam_step, select_step

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Dropout(0.2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 10),
    ).cuda()


def batch(n=64):
    g = torch.Generator(device="cuda").manual_seed(1)
    return torch.randn(n, 3, 16, 16, device="cuda", generator=g), torch.randint(
        0, 10, (n,), device="cuda", generator=g
    )


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_amp_sam_step_tracks_fp32_on_cuda(precision):
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("no bf16 on this GPU")
    a, b = net(), net()
    oa = SAM(a.parameters(), torch.optim.SGD, rho=0.05, lr=0.05, momentum=0.9, nesterov=True)
    ob = SAM(b.parameters(), torch.optim.SGD, rho=0.05, lr=0.05, momentum=0.9, nesterov=True)
    prec = resolve_precision(precision, "cuda")
    x, y = batch()
    for _ in range(3):
        torch.manual_seed(5)
        ra = sam_step(a, oa, x, y, StepOptions(nn.functional.cross_entropy, 5e-4, 5.0, prec))
        torch.manual_seed(5)
        sam_step(b, ob, x, y, StepOptions(nn.functional.cross_entropy, 5e-4, 5.0))
        assert not bool(ra.skipped)
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=0, atol=5e-3)


def test_fp16_overflow_skips_on_cuda():
    model = net()
    opt = SAM(model.parameters(), torch.optim.SGD, rho=0.05, lr=0.05)
    prec = resolve_precision("fp16", "cuda")
    x, y = batch()
    before = copy.deepcopy(model.state_dict())
    result = sam_step(
        model,
        opt,
        x,
        y,
        StepOptions(lambda o, t: nn.functional.cross_entropy(o, t) * float("inf"), precision=prec),
    )
    assert bool(result.skipped)
    for k, v in model.state_dict().items():
        if "running" not in k and "num_batches" not in k:
            assert torch.equal(v, before[k]), k


def test_cuda_rng_is_replayed_between_the_passes():
    seen = []

    class Noise(nn.Module):
        def forward(self, x):
            draw = torch.rand(x.shape[0], 1, device=x.device)
            seen.append(draw.clone())
            return x * draw

    model = nn.Sequential(nn.Linear(8, 8), Noise(), nn.Linear(8, 3)).cuda()
    opt = SAM(model.parameters(), torch.optim.SGD, rho=0.1, lr=0.1)
    x, y = torch.randn(16, 8, device="cuda"), torch.randint(0, 3, (16,), device="cuda")
    select_step(opt, m=8, per_device_batch=16)(model, opt, x, y, StepOptions(nn.functional.cross_entropy))
    assert len(seen) == 4 and torch.equal(seen[0], seen[1]) and torch.equal(seen[2], seen[3])
    assert not torch.equal(seen[0], seen[2])


def test_tensor_loader_on_cuda():
    from data import build_data

    data = build_data("digits", root=".", batch_size=64, augment="basic", device="cuda")
    x, y = next(iter(data.train))
    assert x.is_cuda and y.is_cuda and x.shape == (64, 1, 8, 8)


def test_train_py_on_cuda_with_fp16(tmp_path):
    from cli import run_train

    run = run_train(
        [
            "model=wrn_tiny",
            "dataset=digits",
            "epochs=1",
            "batch_size=64",
            "m=32",
            "device=cuda",
            "precision=fp16",
            "trainer.limit_train_batches=5",
        ],
        tmp_path / "run",
        fresh_interpreter=True,  # CUDA initialised in a new python, as a user's run
    )
    assert run.returncode == 0, run.output
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["precision"] == "fp16"
    assert results["device_name"] == torch.cuda.get_device_name(0)
