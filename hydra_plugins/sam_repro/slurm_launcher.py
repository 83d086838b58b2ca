"""Hydra launcher plugin: hydra-submitit-launcher's SLURM launcher, guarded against a missing ``sacct``.

Hydra loads launchers only from the ``hydra_plugins`` namespace; the logic lives in
:mod:`sam.trainer.slurm_jobs`. Without the ``[slurm]`` extra this module defines nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

try:
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import (
        SlurmLauncher as _SubmititSlurmLauncher,
    )
except ImportError:  # pip install -e ".[slurm]" brings it
    _SubmititSlurmLauncher = None

if _SubmititSlurmLauncher is not None:

    class SlurmLauncher(_SubmititSlurmLauncher):
        """submitit's SLURM launcher; job states from squeue while sacct fails (see sam.trainer.slurm_jobs)."""

        def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[Any]:
            from sam.trainer.slurm_jobs import use_squeue_when_sacct_fails

            use_squeue_when_sacct_fails()
            return super().launch(job_overrides, initial_job_idx)
