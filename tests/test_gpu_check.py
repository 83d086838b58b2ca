"""benchmarks/gpu_check.sh right after the README's install (issue 23): the dry run passes from the
repository root with a clean PATH, finding the README's .venv/bin/python without activation.

CI runs this on its fresh clone after the README's install command, which is exactly that situation.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from cli import REPO

pytestmark = pytest.mark.slow


def test_the_cpu_dry_run_passes_with_a_clean_path(tmp_path):
    venv_python = REPO / ".venv" / "bin" / "python"
    if not venv_python.exists():
        pytest.skip("no .venv here: the README's install command makes it (CI has one)")
    env = {
        "PATH": "/usr/bin:/bin",  # no venv on PATH, no `python` that could import torch
        "HOME": os.environ.get("HOME", str(tmp_path)),
        "OUT": str(tmp_path / "gpu_check"),
        "OMP_NUM_THREADS": "1",
        "WANDB_MODE": "offline",
        **({"SLURM_CONF": os.environ["SLURM_CONF"]} if "SLURM_CONF" in os.environ else {}),
    }
    proc = subprocess.run(
        ["bash", "benchmarks/gpu_check.sh", "--device", "cpu"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=1500,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]  # its exit status is the number of failed steps
    assert "No module named torch" not in out
    assert Path(env["OUT"], "device.txt").read_text().startswith("no CUDA device | torch")
    assert "python .venv/bin/python" in out  # found without activation, not from PATH
