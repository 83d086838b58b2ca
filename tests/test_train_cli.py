"""train.py through the real CLI (subprocess, Hydra composition, real files), as a user runs it.

Only what needs the command itself: sweeps through Hydra's launchers, W&B offline on disk, torchrun, and
torch.compile. What train() computes from a composed config is tested in-process in test_trainer.py.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from cli import final_weights
from cli import run_train as run_cli

SMALL = ["model=wrn_tiny", "model.widen_factor=1", "trainer.eval_batch_size=256", "device=cpu", "logger=none"]


def run_train(args: list[str], run_dir: Path | None = None, **kwargs):
    """tests/cli.py's ``run_train`` for commands that must succeed."""
    run = run_cli(args, run_dir, **kwargs)
    assert run.returncode == 0, run.output
    return run


@pytest.mark.slow  # a multirun through train.py
@pytest.mark.parametrize("launcher", ["basic", "submitit_local"])
def test_multirun_over_two_values_writes_two_run_dirs(tmp_path, launcher):
    """Hydra's basic launcher, and submitit's (pickled jobs in their own processes, as on SLURM)."""
    sweep = tmp_path / "sweep"
    extra = [] if launcher == "basic" else ["hydra/launcher=submitit_local", "hydra.launcher.timeout_min=5"]
    run_train(
        [
            "-m",
            *SMALL,
            "dataset=digits",
            "epochs=1",
            "batch_size=64",
            "trainer.limit_train_batches=2",
            "rho=0.0,0.1",
            *extra,
            f"hydra.sweep.dir={sweep}",
        ],
        timeout=600,
        fresh_interpreter=True,  # the user's command itself: a new python
    )
    dirs = sorted(p.parent for p in sweep.rglob("results.json"))
    assert len(dirs) == 2
    assert sorted(json.loads((d / "results.json").read_text())["rho"] for d in dirs) == [0.0, 0.1]
    if launcher == "submitit_local":
        assert list(sweep.rglob("*_submitted.pkl")), "jobs were not submitted through submitit"


@pytest.mark.slow  # a train.py run with W&B
def test_wandb_offline_run_lands_on_disk_with_metrics(tmp_path):
    run_dir = tmp_path / "run"
    run_train(
        [
            *SMALL,
            "dataset=digits",
            "epochs=2",
            "batch_size=64",
            "trainer.limit_train_batches=3",
            "trainer.log_every_n_steps=1",
            "logger=wandb",
            "logger.project=sam-repro-test",
        ],
        run_dir,
        env={"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_DIR": str(run_dir)},
    )
    offline = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(offline) == 1
    run_id = (run_dir / "wandb_run_id.txt").read_text().strip()
    assert offline[0].name.endswith(run_id)
    data_files = list(offline[0].glob("run-*.wandb"))
    assert data_files and data_files[0].stat().st_size > 0
    # The .wandb file is W&B's protobuf record log (what `wandb sync` uploads); metric names and values
    # are stored as text inside it.
    blob = data_files[0].read_bytes()
    results = json.loads((run_dir / "results.json").read_text())
    for key in (
        b"train/loss_at_w",
        b"train/grad_norm",
        b"epoch/test_error",
        b"epoch/train_loss",
        b"model",
        b"rho",
    ):
        assert key in blob, key
    assert json.dumps(results["test_error"]).encode() in blob


@pytest.mark.slow
def test_torchrun_two_processes_match_single_process_chunks(tmp_path):
    """DDP over 2 gloo processes, per-replica e(w) from 32 examples each == one process with m = 32."""
    common = [
        *SMALL,
        "dataset=digits",
        "epochs=1",
        "batch_size=64",
        "m=32",
        "trainer.limit_train_batches=3",
        "rho=0.1",
        "seed=1",
    ]
    run_train(common, tmp_path / "single")
    run_train(
        common,
        tmp_path / "ddp",
        launcher=[sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"],
    )
    a, b = final_weights(tmp_path / "single"), final_weights(tmp_path / "ddp")
    for k in a:
        if a[k].is_floating_point():
            torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5, msg=k)
        else:
            assert torch.equal(a[k], b[k]), k
    ra = json.loads((tmp_path / "single" / "results.json").read_text())
    rb = json.loads((tmp_path / "ddp" / "results.json").read_text())
    assert rb["world_size"] == 2 and ra["world_size"] == 1
    assert rb["test_error"] == pytest.approx(ra["test_error"], abs=100 / 360 + 1e-9)


@pytest.mark.slow
def test_compile_and_channels_last_train_the_same_model(tmp_path):
    """torch.compile (inductor on CPU): the same SAM updates as eager in the same memory format.

    channels_last alone changes convolution round-off, which SAM steps at lr 0.1 amplify from < 1e-5
    after one step to ~3e-4 after two (measured, eager vs eager); so compile is compared with eager
    channels_last after one step (SAM vs SGD differ by far more). Three steps agreed to < 1e-5 on one CPU
    and differed by 4e-3 on another (AMD EPYC, 2026-12-07): inductor's round-off, amplified.
    """
    common = [*SMALL, "dataset=digits", "epochs=1", "batch_size=64", "m=32", "trainer.limit_train_batches=1"]
    run_train([*common, "channels_last=true"], tmp_path / "eager")
    # A new python for inductor (its compile workers), as a user's run has.
    run_train(
        [*common, "compile=true", "channels_last=true"],
        tmp_path / "compiled",
        timeout=900,
        fresh_interpreter=True,
    )
    a, b = final_weights(tmp_path / "eager"), final_weights(tmp_path / "compiled")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-3, atol=1e-4, msg=k)


@pytest.mark.slow  # the fork server's own check: it starts the server, which only the slow tests use
def test_a_forked_run_imports_nothing_heavy_itself(tmp_path):
    """tests/cli.py's fork server imports what a run imports (WARM_IMPORTS): train.py loads torch lazily (its
    --help answers first), so a server that imported train.py alone left every forked run paying ~10 s of
    torch, torchvision, scikit-learn, SciPy and Hydra imports, most of the suite's time."""
    from cli import NEW_MODULES_ENV, TINY_RUN

    log = tmp_path / "new_modules.txt"
    run = run_cli(TINY_RUN, tmp_path / "run", env={NEW_MODULES_ENV: str(log)})
    assert run.returncode == 0, run.output
    heavy = (
        "torch",
        "torchvision",
        "sklearn",
        "scipy",
        "hydra",
        "omegaconf",
        "wandb",
        "trainer",
        "data",
        "models",
    )
    new = [m for m in log.read_text().split() if m.split(".")[0] in heavy]
    assert not new, f"imported by the run, not by the fork server: {new}"
