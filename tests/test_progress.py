"""Progress a person can see (issue 23): without a terminal, the run's estimate and periodic lines with
img/s and ETAs; a GPU-scale run started on a CPU says so; a refused command answers before torch loads."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from cli import REPO, TINY_RUN, child_env, run_many

from trainer.tracking import duration


@pytest.mark.slow
def test_progress_lines_and_the_cpu_warning_without_a_terminal(tmp_path):
    every_step = ["trainer.log_every_n_steps=1", "trainer.progress_every_s=0.001"]
    tiny, big = run_many(
        [
            {"args": [*TINY_RUN, *every_step], "run_dir": tmp_path / "tiny"},
            # WRN-16-8 (11M parameters) on digits: one step is cheap, the run's scale is a GPU's
            {
                "args": [
                    *(a for a in TINY_RUN if not a.startswith("model")),
                    "model=wrn16_8",
                    "epochs=1",
                    "trainer.limit_train_batches=1",
                ],
                "run_dir": tmp_path / "big",
            },
        ]
    )
    assert tiny.returncode == 0 and big.returncode == 0, tiny.output + big.output
    out = tiny.output
    assert "estimate: " in out and "remaining steps of 2 epochs" in out  # once, after the first steps
    lines = [line for line in out.splitlines() if "run ETA" in line]
    assert lines and all("img/s" in line and "epoch ETA" in line for line in lines), out
    assert "epoch 2/2  step 4/4" in out  # the epoch and step counted from 1, as the epoch summary
    assert "GPU-scale run on a CPU" not in out
    assert "GPU-scale run on a CPU" in big.output and "wrn16_8 (11.0M parameters)" in big.output


def test_durations_read_as_clock_times():
    assert duration(59.6) == "00:01:00"
    assert duration(3 * 86400 + 3723) == "3d 01:02:03"
    assert duration(float("inf")) == "unknown"


def test_a_typo_or_a_refused_value_answers_without_importing_torch(tmp_path):
    probe = (
        "import runpy, sys; sys.argv = ['train.py'] + sys.argv[1:]\n"
        "try:\n    runpy.run_path('train.py', run_name='__main__')\n"
        "except SystemExit as e:\n    print('TORCH_LOADED', 'torch' in sys.modules, 'EXIT', e.code)\n"
    )
    for arg in ("rh0=0.1", "rho=-1", f"hydra.run.dir={tmp_path / 'x'}"):
        args = ["rho=-1", arg] if arg.startswith("hydra") else [arg]
        start = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-c", probe, *args], cwd=REPO, env=child_env(), capture_output=True, text=True
        )
        seconds = time.perf_counter() - start
        assert "TORCH_LOADED False EXIT 2" in proc.stdout, proc.stdout + proc.stderr
        assert proc.stderr.startswith("error: "), proc.stderr
        assert seconds < 30, seconds  # generous under load; the point is that torch never loads
