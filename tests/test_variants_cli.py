"""The SAM variants through ``python train.py``: every config composes and builds its step at the default
m (``optimizer=<name>`` runs as typed), and a run killed by SIGKILL and resumed ends bit-identical to an
uninterrupted one (per-run state rides in the checkpoint). SAF, which remembers past outputs per example,
takes each batch's dataset rows from the tensor loader; on torchvision's loader it is refused."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import torch
from cli import (
    compose_train,
    final_weights,
    metrics_records,
    results_numbers,
    run_many,
    same_tensors,
)
from omegaconf import OmegaConf
from torch import nn

from sam import select_step
from sam.variants import VARIANTS, build_variant

TINY = [
    "model=wrn_tiny",
    "model.widen_factor=1",
    "model.drop_rate=0.2",
    "dataset=digits",
    "augment=basic",
    "batch_size=32",
    "m=16",
    "epochs=1",
    "seed=0",
    "device=cpu",
    "logger=none",
    "trainer.limit_train_batches=4",
    "trainer.limit_val_batches=1",
    "trainer.eval_batch_size=128",
    "trainer.log_every_n_steps=1",
    "trainer.deterministic=true",
]
# Per-run state that must survive the kill: LookSAM's g_v (k=3: the resumed step 2 reuses the g_v of
# step 0), AE-SAM's running statistics (m-chunks: its per-chunk path), MESA's EMA teacher (trajectory loss
# from step 0), Momentum-SAM's momentum buffer (the base optimizer's, the direction of e).
STATEFUL = {
    "looksam": ["optimizer=looksam", "optimizer.variant.k=3"],
    "ae_sam": ["optimizer=ae_sam"],
    "mesa": ["optimizer=mesa", "optimizer.variant.start_epoch=0", "optimizer.variant.decay=0.5"],
    "msam": ["optimizer=msam", "rho=0.5"],
}
EVERY_STEP = "trainer.checkpoint_interval_min=1e-6"


@pytest.mark.parametrize("name", list(VARIANTS))
def test_every_variant_config_composes_and_builds_its_step_at_the_default_m(name):
    cfg = compose_train([f"optimizer={name}"])  # through train.py's schema
    assert cfg.optimizer.name == name
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))

    def build(**run):
        return build_variant(
            name,
            model.parameters(),
            model=model,
            rho=cfg.rho,
            adaptive=cfg.optimizer.adaptive,
            eta=cfg.optimizer.eta,
            options=OmegaConf.to_container(cfg.optimizer.variant),
            total_steps=80 * 10,  # the defaults' epochs (MESA's and SAF's start_epoch 6) fit; 1/8 is whole
            steps_per_epoch=10,
            seed=cfg.seed,
            lr=cfg.lr,
            momentum=cfg.optimizer.momentum,
            nesterov=cfg.optimizer.nesterov,
            **run,
        )

    if name == "saf":
        with pytest.raises(ValueError, match="optimizer=saf needs the training-set index"):
            build()
        opt = build(example_indices=lambda: torch.arange(8))
    else:
        opt = build()
    assert type(opt) is VARIANTS[name]
    select_step(opt, cfg.m, cfg.batch_size)  # m = 32 of the default batch 256: every variant runs as typed


@pytest.mark.slow
def test_sigkill_and_resume_of_stateful_variants_match_uninterrupted_runs(tmp_path: Path):
    jobs = {name: [*TINY, *extra] for name, extra in STATEFUL.items()}
    done = run_many([{"args": args, "run_dir": tmp_path / f"{n}_straight"} for n, args in jobs.items()])
    assert all(r.returncode == 0 for r in done), [r.output for r in done if r.returncode]
    killed = run_many(
        [
            {"args": [*args, EVERY_STEP], "run_dir": tmp_path / n, "fault": "step:3"}
            for n, args in jobs.items()
        ]
    )
    assert all(r.returncode == -signal.SIGKILL for r in killed), [r.output for r in killed]
    resumed = run_many([{"args": [*args, EVERY_STEP], "run_dir": tmp_path / n} for n, args in jobs.items()])
    for name, run in zip(jobs, resumed):
        assert run.returncode == 0 and "resumed from" in run.output, run.output
        ours, ref = results_numbers(tmp_path / name), results_numbers(tmp_path / f"{name}_straight")
        for results in (ours, ref):
            results["config"]["trainer"].pop("checkpoint_interval_min")
        assert ours == ref, name
        assert metrics_records(tmp_path / name) == metrics_records(tmp_path / f"{name}_straight")
        assert same_tensors(final_weights(tmp_path / name), final_weights(tmp_path / f"{name}_straight"))
        assert ours["optimizer"] == name


@pytest.mark.slow
def test_saf_runs_through_train_py_and_resumes_exactly(tmp_path: Path):
    (refused,) = run_many(
        [{"args": [*TINY, "optimizer=saf", "dataset.loader=torchvision"], "run_dir": tmp_path / "refused"}]
    )
    assert refused.returncode == 2, refused.output
    assert "optimizer=saf needs the dataset rows of every batch" in refused.output
    assert not (tmp_path / "refused").exists()  # a refused command changes nothing

    # Through train.py: the loss of epoch e against the
    # outputs of epoch e - 1 from epoch 1 on; killed at step 6 (in epoch 1, its table of epoch 0 in the
    # checkpoint), resumed, equal to the uninterrupted run bit for bit.
    args = ["optimizer=saf", "optimizer.variant.past_epochs=1", "optimizer.variant.start_epoch=1", EVERY_STEP]

    saf = [*TINY, "epochs=3", *args]
    straight, killed = run_many(
        [
            {"args": saf, "run_dir": tmp_path / "straight"},
            {"args": saf, "run_dir": tmp_path / "saf", "fault": "step:6"},
        ]
    )
    assert straight.returncode == 0, straight.output
    assert killed.returncode == -signal.SIGKILL, killed.output
    (resumed,) = run_many([{"args": saf, "run_dir": tmp_path / "saf"}])
    assert resumed.returncode == 0 and "resumed from" in resumed.output, resumed.output
    ours, ref = results_numbers(tmp_path / "saf"), results_numbers(tmp_path / "straight")
    for results in (ours, ref):
        results["config"]["trainer"].pop("checkpoint_interval_min", None)
    assert ours == ref
    assert metrics_records(tmp_path / "saf") == metrics_records(tmp_path / "straight")
    assert same_tensors(final_weights(tmp_path / "saf"), final_weights(tmp_path / "straight"))
    assert ours["optimizer"] == "saf" and ours["rho"] == 0.0
