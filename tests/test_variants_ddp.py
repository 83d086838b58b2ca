"""The SAM variants under real torch.distributed DDP (gloo, 2 processes via torchrun), per-replica e(w).

Every variant's 2 replicas x 8 examples must equal one process with m = 8 chunks of the 16 examples (g and
g_s averaged alike, the same coins, the same EMA, AE-SAM's one decision from the mean statistic, ESAM's
per-replica selection, SAF's table filled from both replicas, Momentum-SAM's shared buffer), and the two
replicas must stay bit-identical.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from ddp_launch import torchrun_reports

WORKER = Path(__file__).with_name("ddp_variants_worker.py")
NAMES = ("looksam", "gsam", "rst", "sam_late", "mesa", "sam_on", "ae_sam", "esam", "saf", "msam")


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("ddp_variants")
    return torchrun_reports(WORKER, out)


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_per_replica_ddp_matches_one_device_chunks_and_replicas_agree(reports, name):
    for report in reports:
        r = report[name]
        assert r["moved"] > 1e-3  # the run did train
        assert r["replicas_max_diff"] == 0.0
        if r["vs_chunks_max_diff"] is not None:
            assert r["vs_chunks_max_diff"] < 1e-5, r
