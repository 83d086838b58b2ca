"""docs/adding-a-variant.md, followed literally: a new SAM variant is one file and one config.

The test copies the repository, writes the page's two files into the copy (nothing else changes),
trains the variant through the copy's ``train.py`` (forked from a server that imported the copy's modules, as
tests/cli.py does for the repository) with m-sharpness chunks, kills one run with SIGKILL
mid-training and resumes it, and finds the variant in ``scripts/compare.py``'s table. The independent
check of what the variant computes: e(w) has norm rho and is not along the gradient (a run of SAM with
the same seed ends elsewhere), and the killed-and-resumed run equals the uninterrupted one bit for bit.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from cli import (
    REPO,
    TINY_RUN,
    Run,
    copy_repository,
    final_weights,
    results_numbers,
    run_script,
    run_train,
    same_tensors,
)

PAGE = REPO / "docs" / "adding-a-variant.md"
FILE_BLOCK = re.compile(r"<!-- file: (\S+) -->\n```\w*\n(.*?)```", re.S)

pytestmark = pytest.mark.slow


def page_files() -> dict[str, str]:
    files = dict(FILE_BLOCK.findall(PAGE.read_text()))
    assert set(files) == {"plugins/random_sam.py", "configs/optimizer/random_sam.yaml"}, files
    return files


def train(copy: Path, run_dir: Path, *extra: str, fault: str | None = None) -> Run:
    """The copy's ``python train.py ...`` (forked from a server that imported the copy's modules)."""
    return run_train([*TINY_RUN, *extra], run_dir, fault=fault, root=copy)


def test_the_page_adds_a_variant_that_trains_resumes_and_compares(tmp_path):
    copy = copy_repository(tmp_path / "repo")
    before = {p.relative_to(copy) for p in copy.rglob("*") if p.is_file()}
    for rel, text in page_files().items():
        assert not (copy / rel).exists(), f"{rel} already exists: the page would overwrite a file"
        (copy / rel).write_text(text)
    added = {p.relative_to(copy) for p in copy.rglob("*") if p.is_file()} - before
    assert {str(p) for p in added} == {"plugins/random_sam.py", "configs/optimizer/random_sam.yaml"}

    runs = tmp_path / "runs"
    variant = ["optimizer=random_sam", "rho=0.05"]
    whole = train(copy, runs / "random_sam", *variant)
    assert whole.returncode == 0, whole.output
    assert "random_sam_step_m16" in whole.output  # the chunked (m-sharpness) SAM step

    killed = train(copy, runs / "random_sam_killed", *variant, fault="step:5")
    assert killed.returncode == -9, killed.output
    assert not (runs / "random_sam_killed" / "results.json").exists()
    resumed = train(copy, runs / "random_sam_killed", *variant)
    assert resumed.returncode == 0 and "resumed from" in resumed.output, resumed.output
    numbers = results_numbers(runs / "random_sam")
    assert results_numbers(runs / "random_sam_killed") == numbers
    assert same_tensors(final_weights(runs / "random_sam_killed"), final_weights(runs / "random_sam"))

    sam = train(copy, runs / "sam", "optimizer=sam", "rho=0.05")
    assert sam.returncode == 0, sam.output
    assert not same_tensors(final_weights(runs / "sam"), final_weights(runs / "random_sam"))
    results = json.loads((runs / "random_sam" / "results.json").read_text())
    assert (results["optimizer"], results["rho"], results["m"]) == ("random_sam", 0.05, 16)

    table = run_script("scripts/compare.py", [runs], root=copy)
    assert table.returncode == 0, table.stderr
    rows = [line for line in table.stdout.splitlines() if "| random_sam |" in line]
    assert len(rows) == 1, table.stdout  # the variant's own cell (both of its runs), apart from SAM's
    assert f"{numbers['test_error']:.2f}" in rows[0], table.stdout


def test_the_variants_perturbation_has_norm_rho_and_is_not_the_gradient(tmp_path):
    """The page's class, imported from the page's text: ||e|| = rho, e not parallel to g, w restored."""
    namespace: dict = {}
    exec(compile(page_files()["plugins/random_sam.py"], "random_sam.py", "exec"), namespace)
    model = torch.nn.Linear(5, 3)
    opt = namespace["RandomDirectionSAM"](model.parameters(), torch.optim.SGD, rho=0.1, lr=0.1, seed=3)
    model(torch.randn(8, 5)).pow(2).sum().backward()
    g = torch.cat([p.grad.flatten() for p in model.parameters()])
    w = [p.detach().clone() for p in model.parameters()]
    opt.first_step(zero_grad=True)
    e = torch.cat([(p.detach() - w0).flatten() for p, w0 in zip(model.parameters(), w)])
    assert torch.isclose(e.double().norm(), torch.tensor(0.1, dtype=torch.float64), rtol=1e-5)
    assert abs(torch.nn.functional.cosine_similarity(e, g, dim=0)) < 0.9
    opt.restore()
    assert all(torch.equal(p, w0) for p, w0 in zip(model.parameters(), w))
