"""Ctrl-C through the real train.py (issue 10 item 7): the step finishes, a checkpoint is written, the
process exits 130 with one line and no traceback, and the identical command resumes exactly."""

from __future__ import annotations

import pytest
from cli import TINY_RUN, final_weights, metrics_records, results_numbers, run_many, run_train, same_tensors

B = TINY_RUN


@pytest.mark.slow
def test_ctrl_c_checkpoints_exits_130_in_one_line_and_resumes_exactly(tmp_path):
    ref_dir, run_dir = tmp_path / "ref", tmp_path / "run"
    ref, stopped = run_many(
        [
            {"args": B, "run_dir": ref_dir, "timeout": 600},
            {
                "args": B,
                "run_dir": run_dir,
                "fault": "step:3:INT",
                "timeout": 600,
            },  # tests/faults.py sends a real SIGINT
        ]
    )
    assert ref.returncode == 0, ref.output
    assert stopped.returncode == 130, stopped.output
    assert "Traceback" not in stopped.output and "KeyboardInterrupt" not in stopped.output, stopped.output
    message = [line for line in stopped.stderr.splitlines() if line.startswith("interrupted")]
    assert len(message) == 1, stopped.output
    assert "checkpointed at epoch 0 batch 3" in message[0] and "run the same command to resume" in message[0]
    assert (run_dir / "checkpoints" / "last.pt").exists()
    assert not (run_dir / "results.json").exists()

    resumed = run_train(B, run_dir, timeout=600)
    assert resumed.returncode == 0, resumed.output
    assert metrics_records(run_dir) == metrics_records(ref_dir)
    assert results_numbers(run_dir) == results_numbers(ref_dir)
    assert same_tensors(final_weights(run_dir), final_weights(ref_dir))
