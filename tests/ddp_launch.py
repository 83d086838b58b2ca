"""Launch a test worker on 2 gloo processes with real torchrun, and read each rank's JSON report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def torchrun_reports(worker: Path, out: Path, nproc: int = 2, timeout: float = 300) -> list[dict]:
    """Run ``torchrun --standalone --nproc_per_node=N worker out``; the ``out/rank{r}.json`` it wrote.

    One retry of the launch itself: torchrun --standalone picks a free port between its check and its use,
    which a concurrent job can take. The numbers the tests assert on come from one clean run.
    """
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(TESTS.parent), str(TESTS)]),
    }
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    failures = []
    for _attempt in range(2):
        proc = subprocess.run(
            [*cmd, str(worker), str(out)], env=env, capture_output=True, text=True, timeout=timeout
        )
        if proc.returncode == 0:
            break
        failures.append(proc.stdout[-3000:] + proc.stderr[-3000:])
    assert proc.returncode == 0, "\n=== next attempt ===\n".join(failures)
    return [json.loads((Path(out) / f"rank{r}.json").read_text()) for r in range(nproc)]
