"""Missing or foreign dataset files (issues 23 item 5 and 22's CIFAR crashes), through the real train.py.

No test sends anything off the machine: the download check is pointed (``SAM_DOWNLOAD_PROBE``) at a local
socket whose accept queue is full, so a connection to it hangs as to a host that never answers, or at a
closed local port, as to a host that refuses.
"""

from __future__ import annotations

import contextlib
import json
import pickle
import socket
import time
from pathlib import Path

import numpy as np
import pytest
from cli import TINY_RUN, run_script, run_train
from fake_data import write_fake_cifar

import data.download_check
import data.standin
from data import DatasetNotFoundError, build_data
from data.cifar import CIFAR10, CIFAR100, load_cifar
from data.download_check import PROBE_ENV, PROBE_TIMEOUT_S, unreachable
from data.standin import STANDIN_DATASETS, is_standin, write_standin

CIFAR_RUN = [a for a in TINY_RUN if not a.startswith("dataset=")]


@pytest.fixture
def blackhole():
    """HOST:PORT of a local listening socket that never accepts: connecting to it hangs."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    address = f"127.0.0.1:{server.getsockname()[1]}"
    fillers = []
    for _ in range(4):  # fill the accept queue: later connections wait for an answer that never comes
        client = socket.socket()
        client.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            client.connect(server.getsockname())
        fillers.append(client)
    time.sleep(0.1)
    yield address
    for s in (*fillers, server):
        s.close()


def _closed_port() -> str:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"127.0.0.1:{port}"


def test_the_probe_answers_within_its_timeout(blackhole, monkeypatch):
    monkeypatch.setenv(PROBE_ENV, blackhole)
    start = time.perf_counter()
    why = unreachable("https://www.cs.toronto.edu/x.tar.gz", timeout=0.5)
    assert time.perf_counter() - start < 2.0
    assert why == f"no answer from {blackhole} within 0.5 s"
    monkeypatch.setenv(PROBE_ENV, closed := _closed_port())
    assert unreachable("https://www.cs.toronto.edu/x.tar.gz").startswith(f"cannot connect to {closed}")
    monkeypatch.setenv(PROBE_ENV, "off")
    assert unreachable("https://www.cs.toronto.edu/x.tar.gz") is None


@pytest.mark.slow  # a train.py start-up each: seconds under load
def test_missing_cifar_offline_fails_in_seconds_with_one_message(tmp_path, blackhole):
    """The headline command without CIFAR, offline: exit 2 within the probe's seconds (was ~30 s of DNS),
    the message once (was twice: log line + error line), naming dataset.root, the files and the ways out,
    and no advice to set what is already the default (was "download=True")."""
    root = tmp_path / "data"
    proc = run_train(
        [*CIFAR_RUN, "dataset=cifar100", "rho=0.05", f"dataset.root={root}"],
        tmp_path / "run",
        env={PROBE_ENV: blackhole},
    )
    assert proc.returncode == 2, proc.output
    assert proc.seconds < PROBE_TIMEOUT_S + 12, proc.seconds  # the probe's 3 s + start-up on a loaded machine
    text = proc.stdout + proc.stderr
    assert text.count("cifar100:") == 1, proc.output
    (line,) = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    for needed in (
        f"dataset.root={root}",
        "cifar-100-python/{train,test,meta}",
        f"no answer from {blackhole} within 3 s",
        "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        "where the network is reachable",
        "python scripts/make_standin_data.py --dataset cifar100 --root DIR",
        "never comparable with the paper",
    ):
        assert needed in line, line
    assert "download=True" not in line and "dataset.download=true" not in line
    assert not (tmp_path / "run").exists()  # refused before anything was written


@pytest.mark.slow  # a train.py start-up each: seconds under load
def test_missing_cifar_with_download_off_never_probes(tmp_path, blackhole):
    proc = run_train(
        [*CIFAR_RUN, "dataset=cifar10", f"dataset.root={tmp_path}", "dataset.download=false"],
        tmp_path / "run",
        env={PROBE_ENV: blackhole},
    )
    assert proc.returncode == 2, proc.output
    (line,) = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert "files are missing and dataset.download=false" in line and "no answer" not in line
    assert "set dataset.download=true where the network is reachable" in line
    assert (proc.stdout + proc.stderr).count("cifar10:") == 1


@pytest.mark.parametrize(
    ("name", "needle"),
    [
        ("svhn", "train_32x32.mat"),
        ("fashion_mnist", "train-images-idx3-ubyte"),
        ("flowers102", "flowers-102/"),
    ],
)
def test_other_downloads_are_probed_first(tmp_path, blackhole, monkeypatch, name, needle):
    monkeypatch.setenv(PROBE_ENV, blackhole)
    monkeypatch.setattr(data.download_check, "PROBE_TIMEOUT_S", 0.5)
    start = time.perf_counter()
    with pytest.raises(DatasetNotFoundError) as err:
        build_data(name, root=tmp_path, batch_size=2, download=True)
    assert time.perf_counter() - start < 2.5
    msg = str(err.value)
    assert (
        f"no answer from {blackhole} within 0.5 s" in msg and needle in msg and "make_standin_data.py" in msg
    )
    assert "dataset.download=true" not in msg  # already on


def _bytes_keys(path: Path) -> None:
    """Rewrite a pickle as a Python 3 conversion script does: load with encoding="bytes", dump again."""
    with open(path, "rb") as f:
        entry = pickle.load(f)
    entry = {k.encode(): ([n.encode() for n in v] if k.endswith("names") else v) for k, v in entry.items()}
    with open(path, "wb") as f:
        pickle.dump(entry, f)


@pytest.mark.parametrize("spec", [CIFAR10, CIFAR100], ids=lambda s: s.name)
def test_bytes_keys_are_read_as_the_same_data(tmp_path, spec):
    """Decision: pickles with bytes keys hold the official arrays under other key types; they are read."""
    str_root, bytes_root = tmp_path / "str", tmp_path / "bytes"
    for root in (str_root, bytes_root):
        write_fake_cifar(root, spec.name, n_train=50, n_test=10)
    for f in spec.files:
        _bytes_keys(bytes_root / spec.dirname / f)
    for train in (True, False):
        want = load_cifar(spec, str_root, train=train, download=False)
        got = load_cifar(spec, bytes_root, train=train, download=False)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
        assert got[2] == want[2] and all(isinstance(n, str) for n in got[2])


@pytest.mark.slow  # through train.py
def test_wrong_size_images_name_the_file_through_train_py(tmp_path):
    root = write_fake_cifar(tmp_path / "data", "cifar10", n_train=50, n_test=10)
    bad = root / "cifar-10-batches-py" / "data_batch_3"
    with open(bad, "wb") as f:  # 64x64 images, as a downsampled-ImageNet batch
        pickle.dump({"data": np.zeros((10, 3 * 64 * 64), np.uint8), "labels": [0] * 10}, f)
    proc = run_train([*CIFAR_RUN, "dataset=cifar10", f"dataset.root={root}"], tmp_path / "run")
    assert proc.returncode == 2, proc.output
    (line,) = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert f"{bad}: data is a uint8 array of shape (10, 12288)" in line and "rows of 3072" in line, line
    assert (proc.stdout + proc.stderr).count(str(bad)) == 1


@pytest.mark.parametrize(
    ("entry", "says"),
    [
        ({"data": np.zeros((4, 3072), np.uint8), "labels": [0, 1]}, "4 images but 2 labels"),
        ({"data": np.zeros((2, 3072), np.float32), "labels": [0, 1]}, "float32 array of shape (2, 3072)"),
        ({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 10]}, "labels span [0, 10], outside [0, 10)"),
        ({b"data": np.zeros((2, 3072), np.uint8)}, "expected keys data and labels / fine_labels"),
    ],
)
def test_foreign_batches_name_the_file(tmp_path, entry, says):
    root = write_fake_cifar(tmp_path, "cifar10", n_train=50, n_test=10)
    bad = root / "cifar-10-batches-py" / "test_batch"
    with open(bad, "wb") as f:
        pickle.dump(entry, f)
    with pytest.raises(ValueError) as err:
        load_cifar(CIFAR10, root, train=False, download=False)
    assert str(err.value).startswith(f"cifar10: {bad}: ") and says in str(err.value)
    assert str(err.value).endswith("re-download or re-extract the official files")


def test_the_tests_writers_are_the_library_ones():
    import fake_data

    assert fake_data.write_fake_cifar is data.standin.write_cifar
    assert fake_data.FINETUNE_WRITERS is data.standin.FINETUNE_WRITERS


@pytest.mark.parametrize("name", STANDIN_DATASETS)
def test_every_standin_is_read_by_the_real_reader(tmp_path, name):
    summary = write_standin(name, tmp_path, n_train=40, n_test=20)
    assert summary.startswith(f"{name}: stand-in files under {tmp_path}")
    assert is_standin(tmp_path)
    b = build_data(name, root=tmp_path, batch_size=2, download=False, num_workers=0, image_size=32)
    assert b.fingerprint["standin"] is True and b.num_train >= 2


@pytest.mark.slow  # a fresh interpreter for the command, then a run
def test_standin_command_then_train_py_records_the_standin(tmp_path):
    root = tmp_path / "standin"
    made = run_script("scripts/make_standin_data.py", ["--dataset", "cifar10", "--root", root])
    assert made.returncode == 0, made.stderr
    assert "cifar10: stand-in files under" in made.stdout and "never comparable" in made.stdout
    assert (root / "STANDIN.txt").is_file() and (root / "cifar-10-batches-py" / "data_batch_5").is_file()
    proc = run_train([*CIFAR_RUN, "dataset=cifar10", f"dataset.root={root}", "epochs=1"], tmp_path / "run")
    assert proc.returncode == 0, proc.output
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["data_fingerprint"]["standin"] is True
    refused = run_script("scripts/make_standin_data.py", ["--dataset", "mnist", "--root", root])
    assert refused.returncode == 2 and "invalid choice: 'mnist'" in refused.stderr


@pytest.mark.slow  # a train.py command (the tests' fork server)
def test_a_failure_after_the_run_started_is_printed_once_and_kept_in_train_log(tmp_path):
    """The twice-printed refusal (Hydra's log line on stdout + the error line on stderr): now the terminal
    shows the error line alone, and train.log, once the run directory was accepted, still records it."""
    proc = run_train([*TINY_RUN, "lr=1e30"], tmp_path / "run")
    assert proc.returncode == 3, proc.output
    (line,) = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    message = line.removeprefix("error: ")
    assert (proc.stdout + proc.stderr).count(message) == 1, proc.output
    log = (tmp_path / "run" / "train.log").read_text()
    assert log.count(message) == 1 and "[ERROR]" in log
