"""Edges of a run's life that used to crash or mislead (issue 22): each ends in one clear line and the
documented exit code, or is handled and recorded."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
import torch
from cli import REPO, TINY_RUN, child_env, final_weights, results_numbers, run_many, run_train, same_tensors


@pytest.mark.slow  # a train.py start-up each: seconds under load
def test_a_run_directory_that_cannot_be_one_is_refused_with_exit_2(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    file_run, under_file, denied = run_many(
        [
            {"args": TINY_RUN, "run_dir": blocker, "log_dir": tmp_path / "logs"},
            {"args": TINY_RUN, "run_dir": blocker / "run", "log_dir": tmp_path / "logs"},
            # sysfs: no directory can be made there
            {"args": TINY_RUN, "run_dir": "/sys/sam-repro-test-run", "log_dir": tmp_path / "logs"},
        ]
    )
    for run in (file_run, under_file, denied):
        assert run.returncode == 2, run.output
        assert "cannot be used as a run directory" in run.stderr and "Traceback" not in run.output
    assert "a regular file is in the way" in under_file.stderr and str(blocker) in under_file.stderr
    assert blocker.read_text() == "not a directory"


@pytest.mark.slow
def test_ctrl_c_while_importing_is_one_line_and_exit_130(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "train.py", *TINY_RUN, f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=REPO,
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(0.5)  # inside `import torch` and friends (seconds on this machine)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, out + err
    assert "Traceback" not in err and "interrupted (Ctrl-C)" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_checkpoints_with_planted_nan_weights_are_never_resumed_from(tmp_path):
    args = [*TINY_RUN, "trainer.checkpoint_interval_min=0"]
    killed, whole = run_many(
        [
            {"args": args, "run_dir": tmp_path / "killed", "fault": "step:7"},  # after epoch 1's checkpoint
            {"args": args, "run_dir": tmp_path / "whole"},
        ]
    )
    assert killed.returncode == -9 and whole.returncode == 0, killed.output + whole.output
    ckpts = tmp_path / "killed" / "checkpoints"
    assert sorted(p.name for p in ckpts.glob("*.pt")) == ["last.pt"]
    state = torch.load(ckpts / "last.pt", weights_only=False)
    name = next(k for k, v in state["model"].items() if v.is_floating_point())
    state["model"][name].fill_(float("nan"))
    torch.save(state, ckpts / "last.pt")
    refused = run_train(args, tmp_path / "killed")
    assert refused.returncode == 2, refused.output
    assert "NaN/inf weights" in refused.stderr and "last good" not in refused.output


@pytest.mark.slow
def test_a_deleted_final_model_is_restored_by_the_identical_command(tmp_path):
    run = run_train(TINY_RUN, tmp_path / "run")
    assert run.returncode == 0, run.output
    weights = final_weights(tmp_path / "run")
    (tmp_path / "run" / "final_model.pt").unlink()
    again = run_train(TINY_RUN, tmp_path / "run")
    assert again.returncode == 0 and "nothing to do" in again.stdout, again.output
    assert "restored from" in again.output
    assert same_tensors(final_weights(tmp_path / "run"), weights)


@pytest.mark.slow
def test_resuming_with_another_thread_count_is_recorded_and_warned(tmp_path):
    killed = run_train(TINY_RUN, tmp_path / "run", fault="step:5")
    assert killed.returncode == -9, killed.output
    resumed = run_train(TINY_RUN, tmp_path / "run", env={"OMP_NUM_THREADS": "2"}, fresh_interpreter=True)
    assert resumed.returncode == 0, resumed.output
    assert "resumed with 2 CPU threads; the run so far used 1" in resumed.output
    history = json.loads((tmp_path / "run" / "results.json").read_text())["git_commits"]
    assert [h["threads"] for h in history] == [1, 2]
    assert results_numbers(tmp_path / "run")["test_error"] is not None


def test_epochs_count_from_one_and_older_files_are_renumbered(tmp_path):
    """metrics.jsonl numbers the epoch just completed from 1, as the log and the plots; a file written by
    an older version (from 0) is renumbered when a run resumes on it and when it is read."""
    from analysis.runs import read_metrics
    from trainer.tracking import MetricsFile

    old = tmp_path / "metrics.jsonl"
    old.write_text("".join(json.dumps({"epoch": e, "test_error": 10.0 - e}) + "\n" for e in range(3)))
    assert [r["epoch"] for r in read_metrics(old, warn=print)] == [1, 2, 3]
    MetricsFile(old).truncate_after(2)  # a resume after 2 completed epochs
    assert [json.loads(line) for line in old.read_text().splitlines()] == [
        {"epoch": 1, "test_error": 10.0},
        {"epoch": 2, "test_error": 9.0},
    ]
