"""The SAM variants under real torch.distributed DDP (gloo, 2 processes via torchrun), per-replica e(w).

Every variant's 2 replicas x 8 examples must equal one process with m = 8 chunks of the 16 examples (g and
g_s averaged alike, the same coins, the same EMA, AE-SAM's one decision from the mean statistic, ESAM's
per-replica selection, SAF's table filled from both replicas, Momentum-SAM's shared buffer), and the two
replicas must stay bit-identical.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

WORKER = Path(__file__).with_name("ddp_variants_worker.py")
NAMES = ("looksam", "gsam", "rst", "sam_late", "mesa", "sam_on", "ae_sam", "esam", "saf", "msam")


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("ddp_variants")
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(WORKER.parent.parent), str(WORKER.parent)]),
    }
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(WORKER),
        str(out),
    ]
    failures = []
    for _attempt in range(2):  # torchrun --standalone can lose its port to a concurrent job: one retry
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        if proc.returncode == 0:
            break
        failures.append(proc.stdout[-3000:] + proc.stderr[-3000:])
    assert proc.returncode == 0, "\n=== next attempt ===\n".join(failures)
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_per_replica_ddp_matches_one_device_chunks_and_replicas_agree(reports, name):
    for report in reports:
        r = report[name]
        assert r["moved"] > 1e-3  # the run did train
        assert r["replicas_max_diff"] == 0.0
        if r["vs_chunks_max_diff"] is not None:
            assert r["vs_chunks_max_diff"] < 1e-5, r
