"""Test-only (tests/test_slurm.py puts this directory on PYTHONPATH of the jobs it submits).

With ``SAM_REPRO_WAIT_MARKER=PATH`` set, every Python process that imports ``trainer.hooks`` gets a
hook that, at the ``SAM_REPRO_WAIT_STEP``-th training step (default 2), creates PATH (holding
``SLURM_JOB_ID PID``) and waits until a signal reaches the trainer (at most 240 s): the test sees the
marker, then has SLURM preempt, signal or time out the job at that exact step. It fires only while PATH
does not exist yet, so the requeued job runs through. This is how a SLURM job, which Python starts
itself (submitit's ``python -m submitit.core._submit``, the template's ``srun python train.py``), gets a
hook without any test code in train.py.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys
import time

MARKER = os.environ.get("SAM_REPRO_WAIT_MARKER")
STEP = int(os.environ.get("SAM_REPRO_WAIT_STEP", "2"))
TIMEOUT_S = 240.0


def wait_hook(stage: str, run) -> None:
    if stage != "after_step":
        return
    wait_hook.steps = getattr(wait_hook, "steps", 0) + 1
    if wait_hook.steps != STEP:
        return
    try:
        with open(MARKER, "x") as f:
            f.write(f"{os.environ.get('SLURM_JOB_ID', '')} {os.getpid()}")
    except FileExistsError:
        return  # an earlier start of this job waited already
    print(
        f"sitecustomize: waiting for a signal at step {STEP} (marker {MARKER})", file=sys.stderr, flush=True
    )
    deadline = time.monotonic() + TIMEOUT_S
    while not run.preemption.requested and time.monotonic() < deadline:
        time.sleep(0.1)  # a signal interrupts the sleep; the trainer's handler sets the flag


class _AddHookOnImport(importlib.abc.MetaPathFinder):
    """After ``trainer.hooks`` is executed, register :func:`wait_hook` (no import of torch here)."""

    def find_spec(self, name, path, target=None):
        if name != "trainer.hooks":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return None
        exec_module = spec.loader.exec_module

        def exec_and_hook(module):
            exec_module(module)
            module.add_hook(wait_hook)

        spec.loader.exec_module = exec_and_hook
        return spec


if MARKER:
    sys.meta_path.insert(0, _AddHookOnImport())
