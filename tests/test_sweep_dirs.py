"""Sweep job directories named by the swept keys only (trainer/sweepdir.py), and scripts/sweep_status.py.

End to end through ``train.py -m`` (Hydra's local launcher) for the command line's sweep forms (a,b
lists whose values hold commas, range(), choice(), glob()), a config-defined sweep (``+sweep=seeds5``,
``hydra.sweeper.params``) and a multirun that sweeps nothing; the names' edge cases on the resolver
itself. The same names under SLURM: tests/test_slurm.py (fire-and-forget sweep).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli import run_many
from script_main import run_main

from scripts import sweep_status
from trainer.sweepdir import job_dir_name

# The smallest job: one step, one evaluation batch (seconds each).
JOB = [
    "model=wrn_tiny",
    "dataset=digits",
    "device=cpu",
    "epochs=1",
    "trainer.limit_train_batches=1",
    "trainer.limit_val_batches=1",
    "batch_size=32",
    "m=null",
    "logger=none",
]


def job_dirs(sweep: Path) -> list[str]:
    return sorted(p.name for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))


@pytest.mark.slow
def test_multirun_job_directories_name_the_swept_keys_only(tmp_path):
    sweeps = {
        "forms": [
            "dataset.classes=[0,1],[2,3]",
            "seed=range(0,1)",
            "rho=choice(0.05)",
            "model=glob(wrn_tin*)",
        ],
        "config": ["+sweep=seeds5", "rho=0.05"],
        "none": ["rho=0.05"],
    }
    runs = run_many(
        [
            {"args": ["-m", *JOB, *extra, f"hydra.sweep.dir={tmp_path / name}"], "timeout": 600}
            for name, extra in sweeps.items()
        ]
    )
    for run in runs:
        assert run.returncode == 0, run.output
    assert job_dirs(tmp_path / "forms") == [
        "0_dataset.classes=[0,1],model=wrn_tiny,rho=0.05,seed=0",
        "1_dataset.classes=[2,3],model=wrn_tiny,rho=0.05,seed=0",
    ]
    assert job_dirs(tmp_path / "config") == [f"{i}_seed={i}" for i in range(5)]
    assert job_dirs(tmp_path / "none") == ["0"]
    for name in sweeps:  # every job ran where its name says
        for job in job_dirs(tmp_path / name):
            assert (tmp_path / name / job / "results.json").exists(), job
    results = json.loads((tmp_path / "forms" / job_dirs(tmp_path / "forms")[1] / "results.json").read_text())
    assert results["config"]["dataset"]["classes"] == [2, 3]

    status = run_main(sweep_status.main, tmp_path / "config")  # a local sweep: no SLURM, all finished
    assert status.returncode == 0, status.stdout + status.stderr
    assert "5 jobs: 5 finished" in status.stdout
    assert "finished   3_seed=3  test error" in status.stdout


def write_sweep(sweep: Path, task: list[str], params: dict[str, str] | None = None) -> Path:
    sweep.mkdir(parents=True)
    lines = ["hydra:", "  overrides:", "    task:", *(f"    - {json.dumps(t)}" for t in task)]
    if params:
        lines += ["  sweeper:", "    params:", *(f"      {k}: {json.dumps(v)}" for k, v in params.items())]
    (sweep / "multirun.yaml").write_text("\n".join(lines) + "\n")
    return sweep


def test_resolver_keeps_swept_keys_sorted_and_makes_names_safe(tmp_path):
    sweep = write_sweep(
        tmp_path / "s",
        ["seed=0,1", "+x.list=[1,2],[3,4]", "experiment=glob(finetune/*)", "epochs=1", "model@m=a,b"],
        {"rho": "0.01,0.05", "m": "16"},
    )
    job = [
        "rho=0.05",
        "seed=1",
        "+x.list=[3,4]",
        "experiment=finetune/cifar10_sam",
        "epochs=1",
        "model@m=b",
        "m=16",
    ]
    assert (
        job_dir_name(7, job, sweep)
        == "7_experiment=finetune_cifar10_sam,model@m=b,rho=0.05,seed=1,x.list=[3,4]"
    )
    assert job_dir_name(3, ["epochs=1", "m=16"], sweep) == "3"  # none of the swept keys: the number alone
    assert job_dir_name(0, ["rho=0.1"], tmp_path / "no_multirun_yaml") == "0"  # another sweeper: the number
    long = job_dir_name(12, ["rho=" + "9" * 400, "seed=0"], sweep)
    assert long.startswith("12_rho=999") and len(long.encode()) <= 200


def test_status_lists_unfinished_jobs_and_a_missing_directory(tmp_path):
    sweep = write_sweep(tmp_path / "s", ["seed=0,1"])
    (sweep / "0_seed=0").mkdir()
    (sweep / "0_seed=0" / "results.json").write_text(json.dumps({"test_error": 12.5}))
    (sweep / "1_seed=1").mkdir()
    status = run_main(sweep_status.main, sweep)
    assert status.returncode == 1, status.stdout
    assert "2 jobs: 1 finished, 1 unfinished" in status.stdout
    assert "finished   0_seed=0  test error 12.50%" in status.stdout
    missing = run_main(sweep_status.main, tmp_path / "not_yet")
    assert missing.returncode == 2 and "squeue --me" in missing.stderr
