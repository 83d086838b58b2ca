"""The SAM variants through ``python train.py``: every config composes and builds, and a run killed by
SIGKILL and resumed ends bit-identical to an uninterrupted one (per-run state rides in the checkpoint)."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from cli import compose_train, final_weights, metrics_records, results_numbers, run_many, same_tensors
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
# step 0), AE-SAM's running statistics (m=null), MESA's EMA teacher (trajectory loss from step 0).
STATEFUL = {
    "looksam": ["optimizer=looksam", "optimizer.variant.k=3"],
    "ae_sam": ["optimizer=ae_sam", "m=null"],
    "mesa": ["optimizer=mesa", "optimizer.variant.start_epoch=0", "optimizer.variant.decay=0.5"],
}
EVERY_STEP = "trainer.checkpoint_interval_min=1e-6"


@pytest.mark.parametrize("name", list(VARIANTS))
def test_every_variant_config_composes_and_builds(name):
    cfg = compose_train([f"optimizer={name}"])  # through train.py's schema
    assert cfg.optimizer.name == name
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    opt = build_variant(
        name,
        model.parameters(),
        model=model,
        rho=cfg.rho,
        adaptive=cfg.optimizer.adaptive,
        eta=cfg.optimizer.eta,
        options=OmegaConf.to_container(cfg.optimizer.variant),
        total_steps=100,
        steps_per_epoch=10,
        seed=cfg.seed,
        lr=cfg.lr,
    )
    assert type(opt) is VARIANTS[name]
    select_step(opt, None, 8)


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
            results.pop("git_commit")
            results["config"]["trainer"].pop("checkpoint_interval_min")
        assert ours == ref, name
        assert metrics_records(tmp_path / name) == metrics_records(tmp_path / f"{name}_straight")
        assert same_tensors(final_weights(tmp_path / name), final_weights(tmp_path / f"{name}_straight"))
        assert ours["optimizer"] == name
