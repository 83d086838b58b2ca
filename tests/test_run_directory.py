"""A run directory is never silently wrong (issue 10): the pieces, in-process, with real files and processes.

The end-to-end promises (through ``python train.py``) are in ``tests/test_run_directory_cli.py``.
"""

from __future__ import annotations

import csv
import errno
import fcntl
import hashlib
import io
import json
import logging
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from fake_data import write_fake_cifar, write_fake_run
from omegaconf import OmegaConf

from data.fingerprint import data_fingerprint
from trainer.cluster import ExitCode
from trainer.rundir import (
    LOCK_NAME,
    DiskFullError,
    RunDirLock,
    RunDirLockedError,
    RunDirMismatchError,
    RunRecords,
    config_differences,
    disk_full_guard,
    finished_results,
    state_nbytes,
)
from trainer.tracking import (
    DataChangedError,
    check_data_fingerprint,
    extend_code_history,
    has_api_key,
    server_reachable,
)

REPO = Path(__file__).resolve().parents[1]

HOLD_LOCK = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
fcntl.flock(fd, fcntl.LOCK_EX)
print("locked", flush=True)
time.sleep(120)
"""


# ------------------------------------------------------------------------------------------------ lock
def test_a_locked_run_directory_is_refused_naming_the_holder_until_the_holder_dies(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(run_dir / LOCK_NAME)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunDirLockedError) as refused:
            RunDirLock(run_dir).acquire()
        assert refused.value.exit_code == ExitCode.LOCKED == 4
        assert f"process {holder.pid}" in str(refused.value) and str(run_dir) in str(refused.value)
    finally:
        holder.send_signal(signal.SIGKILL)  # no cleanup runs: the kernel alone drops the lock
        holder.wait()
    lock = RunDirLock(run_dir).acquire()
    assert lock.held and not lock.created  # the dead holder's file, locked again
    with pytest.raises(RunDirLockedError):  # one writer, also within one machine's other descriptors
        RunDirLock(run_dir).acquire()
    lock.release()
    assert (run_dir / LOCK_NAME).read_bytes() == b""  # the lock file holds nothing and stays
    RunDirLock(run_dir).acquire().release(remove=True)
    assert not (run_dir / LOCK_NAME).exists()


def test_a_lock_on_a_removed_lock_file_is_never_shared(tmp_path):
    """B opened the lock file, A removed it and released; B must not lock the orphan beside C's new file."""
    a = RunDirLock(tmp_path).acquire()
    assert a.created
    b = RunDirLock(tmp_path)
    fd, _ = b._open()  # B opened the file A holds...
    a.release(remove=True)  # ...A finished and removed it
    c = RunDirLock(tmp_path).acquire()  # C creates a new lock file
    assert c.created
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # B's flock on the orphan succeeds: the danger...
    assert not b._same_file(fd)  # ...which acquire() checks for, then starts over
    os.close(fd)
    with pytest.raises(RunDirLockedError):  # and finds C's lock
        b.acquire()
    c.release(remove=True)
    assert b.acquire().held and b.created


def test_the_lock_creates_a_missing_run_directory_and_knows_what_it_made(tmp_path):
    lock = RunDirLock(tmp_path / "a" / "b").acquire()
    assert (tmp_path / "a" / "b" / LOCK_NAME).is_file() and lock.created
    assert lock.made_dirs == [tmp_path / "a" / "b", tmp_path / "a"]
    lock.release()


# ------------------------------------------------------------------------------------- finished runs
CONFIG = {"rho": 0.05, "seed": 0, "logger": {"name": "none"}, "trainer": {"max_nonfinite_steps": 100}}


def test_config_differences_name_each_changed_key_and_skip_operational_ones():
    new = {"rho": 0.3, "seed": 0, "logger": {"name": "wandb"}, "trainer": {"max_nonfinite_steps": 7}, "x": 1}
    assert config_differences(CONFIG, new, ignore=("logger", "trainer.max_nonfinite_steps")) == [
        "rho: 0.05 -> 0.3",
        "x: '<absent>' -> 1",
    ]
    assert config_differences(CONFIG, new) == [
        "logger.name: 'none' -> 'wandb'",
        "rho: 0.05 -> 0.3",
        "trainer.max_nonfinite_steps: 100 -> 7",
        "x: '<absent>' -> 1",
    ]


def test_a_results_json_means_finished_for_the_same_command_and_refused_for_another(tmp_path):
    assert finished_results(tmp_path, CONFIG) is None
    (tmp_path / "results.json").write_text(json.dumps({"test_error": 12.5, "config": CONFIG}))
    wandb_logged = {**CONFIG, "logger": {"name": "wandb"}}
    assert finished_results(tmp_path, wandb_logged, ignore=("logger",))["test_error"] == 12.5
    with pytest.raises(RunDirMismatchError, match=r"finished run of another command \(rho: 0\.05 -> 0\.3\)"):
        finished_results(tmp_path, {**CONFIG, "rho": 0.3}, ignore=("logger",))
    (tmp_path / "results.json").write_text('{"test_error": Na')
    with pytest.raises(RunDirMismatchError, match="not valid JSON"):
        finished_results(tmp_path, CONFIG)


# ------------------------------------------------------------------------------------------- records
def test_log_records_reach_train_log_only_when_the_command_is_accepted(tmp_path):
    log = logging.getLogger("test_run_directory")
    log.setLevel(logging.INFO)
    refused = RunRecords().start()
    log.info("refused line")
    refused.discard()
    accepted = RunRecords().start()
    log.info("early line")
    (tmp_path / "train.log").write_text("old line\n")
    hydra_cfg = OmegaConf.create({"hydra": {"overrides": {"task": ["rho=0.1"]}}})
    accepted.accept(tmp_path, OmegaConf.create({"rho": 0.1}), hydra_cfg)
    log.info("late line")
    accepted.close()
    lines = (tmp_path / "train.log").read_text().splitlines()
    assert lines[0] == "old line" and "early line" in lines[1] and "late line" in lines[2] and len(lines) == 3
    assert (tmp_path / ".hydra" / "overrides.yaml").read_text() == "- rho=0.1\n"
    assert OmegaConf.load(tmp_path / ".hydra" / "config.yaml") == {"rho": 0.1}


# ------------------------------------------------------------------------------------------ disk full
def test_a_full_disk_names_path_and_size_and_leaves_no_partial_file(tmp_path):
    """/dev/full answers every write with ENOSPC: the kernel's real error, no root needed."""
    target, tmp = tmp_path / "last.pt", tmp_path / "last.pt.tmp"
    target.write_bytes(b"the previous checkpoint")
    tmp.symlink_to("/dev/full")
    state = {"w": torch.zeros(1000, 10), "b": [torch.zeros(5, dtype=torch.float64)], "step": 3}
    needed = state_nbytes(state)
    assert needed == 1000 * 10 * 4 + 5 * 8
    with pytest.raises(DiskFullError) as full:
        with disk_full_guard(target, needed, remove=[tmp]), open(tmp, "wb") as f:
            torch.save(state, f)
    assert full.value.exit_code == ExitCode.DISK_FULL == 5
    assert str(target) in str(full.value) and f"{needed} bytes" in str(full.value)
    assert isinstance(full.value.__cause__, OSError) and full.value.__cause__.errno == errno.ENOSPC
    assert not tmp.exists() and not tmp.is_symlink()
    assert target.read_bytes() == b"the previous checkpoint"
    with pytest.raises(PermissionError), disk_full_guard(target):  # other errors pass through
        raise PermissionError(errno.EACCES, "no")
    tmp.write_bytes(b"half")
    with pytest.raises(DiskFullError, match="disk quota exceeded"), disk_full_guard(target, 10, remove=[tmp]):
        try:  # torch.save's zip writer turns the OSError into a RuntimeError when it closes the archive
            raise OSError(errno.EDQUOT, "Disk quota exceeded")
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos") from None
    assert not tmp.exists()


# ------------------------------------------------------------------------------------------ fingerprint
def test_the_data_fingerprint_sees_one_changed_pixel_or_label_but_not_a_moved_folder():
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, (20, 4, 4, 3), dtype=np.uint8), rng.integers(0, 10, 20)
    tx, ty = rng.integers(0, 256, (5, 4, 4, 3), dtype=np.uint8), rng.integers(0, 10, 5)
    base = data_fingerprint(x, y, tx, ty, num_train=18, num_val=2, num_classes=10)
    assert {k: base[k] for k in ("train_examples", "val_examples", "test_examples", "num_classes")} == {
        "train_examples": 18,
        "val_examples": 2,
        "test_examples": 5,
        "num_classes": 10,
    }
    assert len(base["content_blake2b"]) == 32
    assert data_fingerprint(x.copy(), y.copy(), tx, ty, num_train=18, num_val=2, num_classes=10) == base
    x2 = x.copy()
    x2[7, 1, 2, 0] ^= 1
    y2 = y.copy()
    y2[3] = (y2[3] + 1) % 10
    for changed in (
        data_fingerprint(x2, y, tx, ty, num_train=18, num_val=2, num_classes=10),
        data_fingerprint(x, y2, tx, ty, num_train=18, num_val=2, num_classes=10),
        data_fingerprint(x[:19], y[:19], tx, ty, num_train=17, num_val=2, num_classes=10),
    ):
        assert changed["content_blake2b"] != base["content_blake2b"]
    files = [f"/data/a/train/c{i % 2}/{i}.jpg" for i in range(6)]
    moved = [f.replace("/data/a/", "/scratch/job7/") for f in files]
    labels = np.arange(6) % 2
    at = data_fingerprint(files, labels, files[:2], labels[:2], num_train=6, num_val=0, num_classes=2)
    assert at == data_fingerprint(moved, labels, moved[:2], labels[:2], num_train=6, num_val=0, num_classes=2)
    renamed = [*files[:-1], "/data/a/train/c1/other.jpg"]
    assert at != data_fingerprint(
        renamed, labels, files[:2], labels[:2], num_train=6, num_val=0, num_classes=2
    )


def test_a_changed_fingerprint_is_refused_unless_allowed_and_code_changes_are_recorded(caplog):
    saved = {"train_examples": 100, "content_blake2b": "aa"}
    assert check_data_fingerprint(saved, dict(saved), checkpoint="c.pt", allow=False) == []
    now = {"train_examples": 90, "content_blake2b": "bb"}
    with pytest.raises(DataChangedError, match=r"train_examples: 100 -> 90.*trainer\.allow_data_change=true"):
        check_data_fingerprint(saved, now, checkpoint="c.pt", allow=False)
    with caplog.at_level(logging.WARNING):
        assert len(check_data_fingerprint(saved, now, checkpoint="c.pt", allow=True)) == 2
    assert "changed data" in caplog.text

    a, b = {"commit": "aaa", "dirty": False}, {"commit": "aaa", "dirty": True}
    history = extend_code_history([], a, step=0)
    assert extend_code_history(history, a, step=40) == [{**a, "from_step": 0}]
    assert extend_code_history(history, b, step=40) == [{**a, "from_step": 0}, {**b, "from_step": 40}]


# --------------------------------------------------------------------------------------------- W&B
def test_wandb_api_key_and_server_probes(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    assert not has_api_key("https://api.example.org")
    (tmp_path / "netrc").write_text("machine api.example.org\n  login user\n  password " + "k" * 40 + "\n")
    os.chmod(tmp_path / "netrc", 0o600)
    assert has_api_key("https://api.example.org") and not has_api_key("https://other.example.org")
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    assert has_api_key("https://other.example.org")
    started = time.perf_counter()
    assert "unreachable" in server_reachable("http://127.0.0.1:9", timeout_s=5)  # discard port: refused
    assert time.perf_counter() - started < 5


# --------------------------------------------------------------------------------------- compare/plot
def test_compare_and_plot_list_a_nan_run_as_failed_and_summarise_the_others(tmp_path, capsys):
    """Both scripts' ``main`` in-process (their imports cost seconds per subprocess)."""
    from scripts import compare, plot

    runs = tmp_path / "runs"
    for seed, err in enumerate([15.0, 16.0]):
        write_fake_run(runs, f"ok{seed}", seed=seed, test_error=err)
    write_fake_run(runs, "nan", seed=2, test_error=math.nan)  # json.dumps writes NaN, as train.py used to
    assert "NaN" in (runs / "nan" / "results.json").read_text()
    write_fake_run(runs, "inf_alone", seed=0, rho=0.5, test_error=math.inf)
    for run_dir in runs.iterdir():  # plot.py draws curves from metrics.jsonl
        error = json.loads((run_dir / "results.json").read_text())["test_error"]
        (run_dir / "metrics.jsonl").write_text(
            json.dumps({"epoch": 0, "train_loss": 1.0, "test_error": error})
        )

    assert compare.main([str(runs), "--csv"]) == 0
    table = capsys.readouterr()
    rows = list(csv.DictReader(io.StringIO(table.out)))
    cell = [r for r in rows if r["status"] == "matched" and r["rho"] == "0.1"]
    assert len(cell) == 1 and cell[0]["n_seeds"] == "2" and float(cell[0]["test_error_mean"]) == 15.5
    failed = sorted((r["rho"], r["seeds"]) for r in rows if r["status"] == "failed_run")
    assert failed == [("0.1", "2"), ("0.5", "0")]
    assert not [r for r in rows if r["rho"] == "0.5" and r["status"] != "failed_run"]
    assert "test_error is nan" in table.err and "test_error is inf" in table.err

    assert compare.main([str(runs)]) == 0
    section = capsys.readouterr().out.split("## Failed runs: left out of every mean (2)")[1]
    assert "test_error is nan" in section and str(runs / "nan") in section

    assert plot.main([str(runs), "--out-dir", str(tmp_path / "plots")]) == 0
    assert f"failed run, not plotted: {runs / 'nan'}" in capsys.readouterr().out
    assert len(list((tmp_path / "plots").glob("*.png"))) == 2


def test_fingerprint_hash_is_blake2b_of_the_bytes_read():
    """The digest equals one computed here from the documented layout (an independent computation)."""
    x, y = np.arange(24, dtype=np.uint8).reshape(2, 2, 2, 3), np.array([1, 0])
    tx, ty = x[:1], y[:1]
    h = hashlib.blake2b(digest_size=16)
    for images, labels in ((x, y), (tx, ty)):
        h.update(f"array uint8 {images.shape}\n".encode() + images.tobytes())
        h.update(f"labels {labels.shape}\n".encode() + labels.astype(np.int64).tobytes())
    got = data_fingerprint(x, y, tx, ty, num_train=2, num_val=0, num_classes=2)
    assert got["content_blake2b"] == h.hexdigest()


def test_the_bad_cifar_file_is_named_with_what_is_wrong(tmp_path):
    import pickle

    from data.cifar_files import find_bad_cifar_file

    root = write_fake_cifar(tmp_path, "cifar10", n_train=50, n_test=10)
    directory = root / "cifar-10-batches-py"
    files = [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta"]
    assert find_bad_cifar_file(directory, files, "batches.meta") is None
    good = (directory / "test_batch").read_bytes()
    (directory / "test_batch").write_bytes(good[:500])
    assert find_bad_cifar_file(directory, files, "batches.meta").startswith(
        f"{directory / 'test_batch'}: cannot be unpickled, it is truncated"
    )
    (directory / "test_batch").write_bytes(good)
    with open(directory / "data_batch_2", "wb") as f:
        pickle.dump([1, 2, 3], f)
    assert find_bad_cifar_file(directory, files, "batches.meta") == (
        f"{directory / 'data_batch_2'}: holds a pickled list, not a dict as the official files"
    )
