"""A run directory is never silently wrong (issue 10), end to end through the real ``python train.py``.

Each case ends in a one-line message and an exit code a requeue script can act on (docs/operations.md, "Exit codes"),
with nothing lost and nothing another run wrote overwritten:

- two writers: the second is refused (exit 4) while the first runs, which then finishes cleanly;
- a directory with results.json is finished: the identical command does nothing (exit 0), another is
  refused naming the keys (exit 2), also after ``checkpoints/`` was deleted; a refused command leaves
  every file byte-identical (``.hydra/`` and ``train.log`` included);
- a resume on other data is refused (exit 2) unless ``trainer.allow_data_change=true``; every commit that
  trained the run is recorded; ``trainer.max_nonfinite_steps`` may change on resume;
- a diverged run exits 3 naming the last good checkpoint, with no results.json and no NaN weights saved;
- W&B online without an API key or without a reachable server logs offline and says how to sync;
- a full disk exits 5 naming the path and the bytes needed, leaves no ``*.tmp`` and the checkpoint intact;
- bad values and bad dataset files are refused before training (exit 2) and create no directory.

Every test but the last launches training (~5 s each on an idle machine), so they are marked slow.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from cli import REPO, TINY_RUN, run_forked, run_many, run_script, run_train, train_command
from fake_data import write_fake_cifar

# The issue's $B (tests/cli.py's TINY_RUN), evaluation cut to one batch.
B = [*TINY_RUN, "trainer.limit_val_batches=1", "trainer.eval_batch_size=128"]


def tree(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every file below root: its bytes and mtime (a refused command must change neither)."""
    return {
        str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def holds_flock(pid: int, path: Path) -> bool:
    """Whether ``pid`` holds a flock on ``path`` (read from /proc/locks, without touching the lock)."""
    try:
        inode = path.stat().st_ino
    except FileNotFoundError:
        return False
    for line in Path("/proc/locks").read_text().splitlines():
        f = line.split()
        if len(f) >= 6 and f[1] == "FLOCK" and f[4] == str(pid) and f[5].endswith(f":{inode}"):
            return True
    return False


@pytest.mark.slow
def test_one_writer_per_run_directory_and_a_finished_run_is_never_rewritten(tmp_path):
    run_dir = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    first = subprocess.Popen(
        train_command(B, run_dir),
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not holds_flock(first.pid, run_dir / ".train.lock"):
            assert first.poll() is None and time.monotonic() < deadline, "the first run never took the lock"
            time.sleep(0.01)
        first.send_signal(signal.SIGSTOP)  # alive, lock held, mid-run: what a requeue meets
        before = tree(run_dir)
        (second,) = run_forked([{"args": B, "run_dir": run_dir, "log_dir": tmp_path / "logs"}])
        assert second.returncode == 4, second.output
        assert f"in use: process {first.pid}" in second.stderr and "Traceback" not in second.output
        assert tree(run_dir) == before
    finally:
        first.send_signal(signal.SIGCONT)
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, out + err
    epochs = [json.loads(line)["epoch"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2]

    finished = tree(run_dir)
    same, other = run_forked(
        [
            {"args": [*B, "logger=none"], "run_dir": run_dir, "log_dir": tmp_path / "logs"},
            {"args": [*B, "rho=0.3", "epochs=3"], "run_dir": run_dir, "log_dir": tmp_path / "logs"},
        ]
    )
    assert same.returncode == 0 and "nothing to do" in same.stdout, same.output
    assert other.returncode == 2, other.output
    assert "epochs: 2 -> 3" in other.stderr and "rho: 0.05 -> 0.3" in other.stderr
    assert tree(run_dir) == finished  # .hydra/, train.log, results.json: byte-identical

    shutil.rmtree(run_dir / "checkpoints")  # to save disk: results.json still says finished
    finished = tree(run_dir)
    same, other = run_forked(
        [
            {"args": B, "run_dir": run_dir, "log_dir": tmp_path / "logs"},
            {"args": [*B, "seed=1"], "run_dir": run_dir, "log_dir": tmp_path / "logs"},
        ]
    )
    assert same.returncode == 0 and "nothing to do" in same.stdout, same.output
    assert other.returncode == 2 and "seed: 0 -> 1" in other.stderr, other.output
    assert tree(run_dir) == finished and not (run_dir / "checkpoints").exists()


@pytest.mark.slow
def test_a_resume_on_other_data_is_refused_and_allowed_only_deliberately(tmp_path):
    """A finished run without its results.json is a run to resume (its checkpoint says finished)."""
    data_a, data_b = write_fake_cifar(tmp_path / "a", "cifar10", 100, 40), tmp_path / "b"
    shutil.copytree(data_a, data_b)  # moved data: the same files elsewhere is no change
    data_c = write_fake_cifar(tmp_path / "c", "cifar10", 100, 40, seed=1)  # same sizes, other pixels
    args = [*B, "dataset=cifar10", "dataset.download=false", "epochs=1", "trainer.limit_train_batches=2"]
    run_dir = tmp_path / "run"
    first = run_train([*args, f"dataset.root={data_a}"], run_dir)
    assert first.returncode == 0, first.output
    results = json.loads((run_dir / "results.json").read_text())
    fingerprint = results["data_fingerprint"]
    assert fingerprint["train_examples"] == 100 and fingerprint["test_examples"] == 40
    assert (
        results["git_commits"][0]["commit"] == results["git_commit"] and "dirty" in results["git_commits"][0]
    )
    (run_dir / "results.json").unlink()

    before = tree(run_dir)
    other = run_train([*args, f"dataset.root={data_c}"], run_dir)
    assert other.returncode == 2, other.output
    assert "content_blake2b" in other.stderr and "trainer.allow_data_change=true" in other.stderr
    assert tree(run_dir) == before

    moved, deliberate = run_many(
        [
            {"args": [*args, f"dataset.root={data_b}", "trainer.max_nonfinite_steps=7"], "run_dir": run_dir},
            {
                "args": [*args, f"dataset.root={data_c}", "trainer.allow_data_change=true"],
                "run_dir": tmp_path / "x",
            },
        ]
    )
    assert moved.returncode == 0, moved.output  # moved files and a new max_nonfinite_steps: accepted
    assert json.loads((run_dir / "results.json").read_text())["data_fingerprint"] == fingerprint
    assert deliberate.returncode == 0, deliberate.output  # (a fresh directory: nothing to compare)


@pytest.mark.slow
def test_a_diverged_run_exits_3_naming_the_last_good_checkpoint_and_writes_no_result(tmp_path):
    """lr=1e30 diverges in epoch 1 (no good checkpoint); NaN weights after step 6 of 8 leave epoch 1's.

    The run ends before max_nonfinite_steps (100) NaN steps: a run must still end on a finite loss.
    """
    exploded, late_nan = run_many(
        [
            {"args": [*B, "lr=1e30"], "run_dir": tmp_path / "exploded"},
            {"args": B, "run_dir": tmp_path / "late_nan", "fault": "step:6:NAN"},
        ]
    )
    for run, run_dir in ((exploded, tmp_path / "exploded"), (late_nan, tmp_path / "late_nan")):
        assert run.returncode == 3, run.output
        assert "Traceback" not in run.output and "NaN/inf" in run.stderr
        assert not (run_dir / "results.json").exists() and not (run_dir / "final_model.pt").exists()
        for ckpt in (run_dir / "checkpoints").glob("*.pt"):
            state = torch.load(ckpt, weights_only=True)["model"]
            assert all(torch.isfinite(t).all() for t in state.values() if t.is_floating_point())
    assert "no good checkpoint" in exploded.stderr
    last = tmp_path / "late_nan" / "checkpoints" / "last.pt"
    assert f"last good checkpoint is {last} (epoch 1, step 4)" in late_nan.stderr
    assert torch.load(last, weights_only=True)["global_step"] == 4
    compare = run_script("scripts/compare.py", [tmp_path, "--csv"])
    assert compare.returncode == 0, compare.stderr
    assert [r.split(",")[0] for r in compare.stdout.splitlines() if ",digits," in r] == ["missing_run"] * 2


@pytest.mark.slow
def test_wandb_without_a_key_or_a_server_logs_offline_on_the_first_start_and_on_resume(tmp_path):
    run_dir = tmp_path / "run"
    args = [*B, "epochs=1", "trainer.limit_train_batches=2", "logger=wandb", "logger.project=sam-repro-test"]
    no_key = {
        "WANDB_MODE": "online",
        "WANDB_API_KEY": "",
        "HOME": str(tmp_path),
        "NETRC": str(tmp_path / "n"),
    }
    first = run_train(args, run_dir, env=no_key)
    assert first.returncode == 0, first.output
    assert "W&B cannot log online (no API key" in first.output and "wandb sync" in first.output
    (run_dir / "results.json").unlink()  # resume: the checkpoint is there
    no_server = {**no_key, "WANDB_API_KEY": "k" * 40, "WANDB_BASE_URL": "http://127.0.0.1:9"}
    resumed = run_train(args, run_dir, env=no_server)
    assert resumed.returncode == 0, resumed.output
    assert "W&B cannot log online (127.0.0.1:9 unreachable" in resumed.output, resumed.output
    assert resumed.seconds < first.seconds + 60  # no ~100 s wait for a server that is not there
    assert len(list((run_dir / "wandb").glob("offline-run-*"))) == 2


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)]).returncode == 0


@pytest.mark.slow
def test_a_full_disk_exits_5_naming_path_and_bytes_and_keeps_the_checkpoint(tmp_path):
    """A real 1 MiB tmpfs: epoch 1's checkpoint (~650 kB) fits, epoch 2's does not beside it."""
    disk = tmp_path / "disk"
    if os.geteuid() != 0 or not _mount_tmpfs(disk, "1m"):
        pytest.skip("needs root to mount a small tmpfs")
    try:
        run_dir = disk / "run"
        full = run_train(B, run_dir)
        assert full.returncode == 5, full.output
        last = run_dir / "checkpoints" / "last.pt"
        assert re.search(rf"writing {re.escape(str(last))}: it needs about \d+ bytes", full.stderr), (
            full.output
        )
        assert "Traceback" not in full.output
        assert not list(run_dir.rglob("*.tmp"))
        assert torch.load(last, weights_only=True)["epoch"] == 1  # epoch 1's checkpoint, intact
        assert subprocess.run(["mount", "-o", "remount,size=8m", str(disk)]).returncode == 0
        resumed = run_train(B, run_dir)  # space freed: the identical command resumes and finishes
        assert resumed.returncode == 0, resumed.output
        assert "resumed from" in resumed.output and (run_dir / "results.json").exists()
    finally:
        subprocess.run(["umount", str(disk)])


def _pickle_of_a_list(root: Path) -> None:
    write_fake_cifar(root, "cifar10", n_train=50, n_test=10)
    with open(root / "cifar-10-batches-py" / "data_batch_2", "wb") as f:
        pickle.dump([1, 2, 3], f)  # a pickle, not the official dict


def _truncated(root: Path) -> None:
    write_fake_cifar(root, "cifar10", n_train=50, n_test=10)
    torn = root / "cifar-10-batches-py" / "test_batch"
    torn.write_bytes(torn.read_bytes()[:500])


CIFAR = ["dataset=cifar10", "dataset.download=false", "dataset.root={tmp}/data"]
# (overrides ({tmp} = the case's folder), setup or None, exit code, what the message must name)
REFUSED = [
    (["trainer.log_every_n_steps=0"], None, 2, r"trainer\.log_every_n_steps=0 .*integer >= 1"),
    (["trainer.limit_train_batches=0"], None, 2, r"trainer\.limit_train_batches=0 .*integer >= 1, or null"),
    (["trainer.limit_train_batches=-1"], None, 2, r"trainer\.limit_train_batches=-1 .*integer >= 1, or null"),
    (["trainer.max_nonfinite_steps=0"], None, 2, r"trainer\.max_nonfinite_steps=0 .*integer >= 1"),
    (["device=mps"], None, 2, r"device='mps' .*auto, cpu, cuda, cuda:N"),
    (
        ["rho='/../../x'"],
        None,
        1,
        r"'/\.\./\.\./x' of type 'str' could not be converted to Float",
    ),  # Hydra's type check
    (CIFAR, _pickle_of_a_list, 2, r"data_batch_2: holds a pickled list, not a dict"),
    (CIFAR, _truncated, 2, r"test_batch: cannot be unpickled, it is truncated"),
]


@pytest.mark.slow  # train.py commands
def test_bad_values_and_dataset_files_are_refused_up_front_and_create_no_directory(tmp_path):
    jobs = []
    for i, (overrides, setup, _, _) in enumerate(REFUSED):
        case = tmp_path / f"case{i}"
        case.mkdir()
        if setup is not None:
            setup(case / "data")
        args = [*B, *(o.format(tmp=case) for o in overrides), f"hydra.run.dir={case}/runs/r_${{rho}}"]
        jobs.append({"args": args, "log_dir": tmp_path / "logs"})
    done = run_forked(jobs)
    problems = []
    for (overrides, _, code, pattern), run, i in zip(REFUSED, done, range(len(REFUSED))):
        case = tmp_path / f"case{i}"
        if run.returncode != code or not re.search(pattern, run.stderr) or "Traceback" in run.output:
            problems.append(f"{overrides}: exit {run.returncode}\n{run.output[-2000:]}")
        made = sorted(str(p.relative_to(tmp_path)) for p in case.rglob("*") if "data" not in p.parts)
        if made:
            problems.append(f"{overrides}: created {made}")
    assert not problems, "\n".join(problems)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["logs", *(f"case{i}" for i in range(len(REFUSED)))]
    )
