"""Run train.py the way a user does: a subprocess from the repo root, Hydra overrides on the command line.

    from cli import run_train, results_numbers, final_weights
    proc = run_train(["model=wrn_tiny", "dataset=digits", "epochs=1"], tmp_path / "run")
    assert proc.returncode == 0, proc.output

``run_train`` never asserts: tests that expect a failure (bad input, kills, preemption) look at
``returncode`` and ``output`` themselves. ``run_many`` runs independent commands side by side, which
roughly halves the wall time of start-up-bound tests (torch + Hydra import) on two cores.

``compose_train`` / ``train_in_process`` are the same command in this process (Hydra's compose API and
train.py's ``train``), for tests of what a run computes rather than of the command itself.

``run_train`` and ``run_many`` run each command as a child forked from a server process that has
imported train.py's modules once (``run_forked``): a real process of its own, running train.py (or
``tests/faults.py``) as ``__main__`` with that ``sys.argv`` and the caller's environment, exiting through
its atexit handlers, killed by real signals: what ``python train.py ARGS`` runs, minus the ~5 s of
imports (torch, torchvision, Hydra), which were most of the suite's time. The server forks before any
torch computation, so no thread pool is inherited. ``fresh_interpreter=True`` (and any ``launcher``,
e.g. torchrun) starts a new ``python`` instead: for the README's own commands and torch.compile.
"""

from __future__ import annotations

import atexit
import importlib
import json
import os
import runpy
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]

# The smallest real run the end-to-end tests share (the issues' "$B"): 2 epochs x 4 steps of a
# 0.08M-parameter WRN on digits, m=16 (two e(w) chunks per batch), no logger. Tests add what they need.
TINY_RUN = [
    "model=wrn_tiny",
    "model.widen_factor=1",
    "dataset=digits",
    "batch_size=32",
    "m=16",
    "epochs=2",
    "seed=0",
    "device=cpu",
    "logger=none",
    "trainer.limit_train_batches=4",
]

# Differ between two otherwise identical runs (clock-dependent); everything else in results.json must not.
TIMING_KEYS = ("wall_time_s", "images_per_s", "epoch_time_s")
# Where the code came from: HEAD may move while the suite runs in a shared checkout.
PROVENANCE_KEYS = ("git_commit", "git_commits", "git_dirty")


@dataclass
class Run:
    cmd: list[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def output(self) -> str:
        """stdout + stderr, for assertion messages and for matching log lines (Hydra logs to stdout)."""
        return f"$ {' '.join(self.cmd)}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"


def train_command(
    args: list[str],
    run_dir: Path | None = None,
    launcher: list[str] | None = None,
    script: str = "train.py",
) -> list[str]:
    cmd = [*(launcher or [sys.executable]), script, *args]
    if run_dir is not None:
        cmd.append(f"hydra.run.dir={run_dir}")
    return cmd


def run_train(
    args: list[str],
    run_dir: Path | None = None,
    *,
    env: dict[str, str] | None = None,
    timeout: float = 300,
    launcher: list[str] | None = None,
    fault: str | None = None,
    fresh_interpreter: bool = False,
    root: Path = REPO,
) -> Run:
    """``python train.py ARGS [hydra.run.dir=RUN_DIR]`` from the repo root, one thread, W&B offline.

    ``env`` adds variables. ``fault`` (e.g. ``"step:3:TERM"``) runs ``tests/faults.py`` instead, which is
    train.py with that fault injected (see there). ``launcher`` replaces ``python`` (e.g. torchrun).
    A child still running after ``timeout`` seconds is killed (returncode -9). ``root``: the repository
    whose train.py runs (REPO, or a test's copy of it).
    """
    if launcher is None and not fresh_interpreter:
        job = {"args": args, "run_dir": run_dir, "env": env, "fault": fault}
        return run_forked([job], workers=1, timeout=timeout, root=root)[0]
    cmd = train_command(args, run_dir, launcher, script="tests/faults.py" if fault else "train.py")
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            cmd, cwd=root, env=child_env(env, fault), capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired as err:
        out, errs = (
            x.decode(errors="replace") if isinstance(x, bytes) else (x or "")
            for x in (err.stdout, err.stderr)
        )
        return Run(cmd, -signal.SIGKILL, out, errs, time.perf_counter() - start)
    return Run(cmd, proc.returncode, proc.stdout, proc.stderr, time.perf_counter() - start)


def run_script(script: str, args: list[str], *, root: Path = REPO, timeout: float = 300) -> Run:
    """``python SCRIPT ARGS`` from ``root`` (e.g. ``scripts/compare.py``), forked from the server like train.py."""
    job = {"args": [str(a) for a in args], "script": script}
    return run_forked([job], workers=1, timeout=timeout, root=root)[0]


def child_env(env: dict[str, str] | None = None, fault: str | None = None) -> dict[str, str]:
    """This process's environment for a train.py child: one thread, W&B offline, ``env`` added."""
    full_env = {k: v for k, v in os.environ.items() if k != "SAM_REPRO_FAULT"}
    full_env.update({"OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1", **(env or {})})
    if fault:
        full_env["SAM_REPRO_FAULT"] = fault
    return full_env


def run_many(jobs: list[dict[str, Any]], workers: int = 3) -> list[Run]:
    """``run_train(**job)`` for every job, ``workers`` at a time; results in the order of ``jobs``."""
    if any(job.get("launcher") or job.get("fresh_interpreter") for job in jobs):
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(lambda job: run_train(**job), jobs))
    return run_forked(jobs, workers=workers, timeout=max(job.get("timeout", 300) for job in jobs))


def results_numbers(run_dir: Path) -> dict[str, Any]:
    """results.json without the clock and provenance keys: what an interrupted run must reproduce exactly."""
    results = json.loads((Path(run_dir) / "results.json").read_text())
    return {k: v for k, v in results.items() if k not in TIMING_KEYS + PROVENANCE_KEYS}


def metrics_records(run_dir: Path) -> list[dict[str, Any]]:
    """metrics.jsonl, one dict per epoch, without the clock-dependent keys."""
    lines = (Path(run_dir) / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING_KEYS} for line in lines]


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(Path(run_dir) / "final_model.pt", weights_only=True)["model"]


def same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    """Bitwise: same keys, dtypes, shapes and every element equal (NaN never equals)."""
    return a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------------------------------- in-process
def compose_train(overrides: list[str]):
    """The config ``python train.py OVERRIDES`` runs, composed here (importing train registers the schema)."""
    from hydra import compose, initialize_config_dir

    import train  # noqa: F401

    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        return compose("train", overrides=overrides)


def train_in_process(overrides: list[str], run_dir: Path) -> dict[str, Any]:
    """train.py's ``train`` on the composed config, on one thread as ``run_train``'s processes (so the
    numbers are bitwise those of ``python train.py``); torch's threads, RNG and determinism are restored."""
    import train
    from trainer.rundir import release_claim

    threads, rng = torch.get_num_threads(), torch.get_rng_state()
    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    Path(run_dir).mkdir(parents=True, exist_ok=True)  # Hydra makes it for python train.py
    refused = True
    try:
        results = train.train(compose_train(overrides), Path(run_dir))
        refused = False
        return results
    finally:
        release_claim(run_dir, refused=refused)  # the run directory's lock, as train.py's main drops it
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
        torch.set_rng_state(rng)


# ---------------------------------------------------------------------------------------- fork server
_servers: dict[Path, subprocess.Popen] = {}  # one per repository root (a test's copy has its own)
_server_lock = threading.Lock()  # one request at a time: run_many's callers may be threads


def run_forked(
    jobs: list[dict[str, Any]], workers: int = 3, timeout: float = 120, root: Path = REPO
) -> list[Run]:
    """Each job ``{"args": [...], "run_dir": Path, "env": {...}, "fault": ..., "script": ...}`` forked: train.py
    (``tests/faults.py`` with a fault; another script of the repository with ``script``).

    ``root``: the repository whose train.py (and modules) run, REPO or a test's copy of it.
    Returns one :class:`Run` per job (returncode negative = killed by that signal, as subprocess).
    A child still running after ``timeout`` seconds is killed (returncode -9).
    """
    with _server_lock:
        return _run_forked(jobs, workers, timeout, Path(root))


def _run_forked(jobs: list[dict[str, Any]], workers: int, timeout: float, root: Path) -> list[Run]:
    server = _servers.get(root)
    if server is None or server.poll() is not None:
        env = {k: v for k, v in os.environ.items() if k != "SAM_REPRO_FAULT"}
        env.update({"OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1"})
        server = _servers[root] = subprocess.Popen(
            [sys.executable, __file__, "--fork-server", str(root)],
            cwd=root,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        atexit.register(server.stdin.close)
    request, outputs = [], []
    for i, job in enumerate(jobs):
        run_dir = job.get("run_dir")
        out_dir = Path(job.get("log_dir") or (Path(run_dir).parent if run_dir else tempfile.mkdtemp()))
        out_dir.mkdir(parents=True, exist_ok=True)
        paths = (out_dir / f"fork{i}.stdout", out_dir / f"fork{i}.stderr")
        outputs.append(paths)
        script = job.get("script") or ("tests/faults.py" if job.get("fault") else "train.py")
        argv = train_command(job["args"], job.get("run_dir"), script=script)[1:]
        env = child_env(job.get("env"), job.get("fault"))
        request.append({"argv": argv, "env": env, "stdout": str(paths[0]), "stderr": str(paths[1])})
    server.stdin.write(json.dumps({"jobs": request, "workers": workers, "timeout": timeout}) + "\n")
    server.stdin.flush()
    reply = server.stdout.readline()
    if not reply:
        raise RuntimeError(f"the fork server died (exit code {server.wait()})")
    runs = []
    for job, (out, err), result in zip(request, outputs, json.loads(reply)):
        runs.append(
            Run(
                [sys.executable, *job["argv"]],
                result["returncode"],
                out.read_text(),
                err.read_text(),
                result["seconds"],
            )
        )
        out.unlink()
        err.unlink()
    return runs


def _child(job: dict[str, Any], root: Path) -> None:
    """In the forked child: the caller's environment, output redirected, argv set; the script (train.py or
    tests/faults.py) as __main__; then what interpreter exit does (atexit handlers), and its exit code."""
    code = 1
    before = set(sys.modules)
    try:
        os.environ.clear()
        os.environ.update(job["env"])
        for fd, path in ((1, job["stdout"]), (2, job["stderr"])):
            os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), fd)
        sys.argv = job["argv"]
        try:
            runpy.run_path(str(root / job["argv"][0]), run_name="__main__")  # its imports are cached already
            code = 0
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
        except KeyboardInterrupt:  # uncaught: python prints it, then dies by SIGINT (returncode -2)
            traceback.print_exc()
            atexit._run_exitfuncs()
            sys.stderr.flush()
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGINT)
        atexit._run_exitfuncs()  # logging.shutdown, W&B teardown: what a normal exit runs
        if job["env"].get(NEW_MODULES_ENV):  # for the test that the server imported what runs import
            Path(job["env"][NEW_MODULES_ENV]).write_text("\n".join(sorted(set(sys.modules) - before)))
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


# train.py itself imports almost nothing (its --help answers before torch loads): the server imports what
# a run goes on to import (torch, torchvision, scikit-learn's digits, SciPy, Hydra's run machinery, W&B,
# our packages), so a forked run pays none of it (~10 s per run on a loaded 2-core machine).
NEW_MODULES_ENV = "SAM_REPRO_TEST_NEW_MODULES"  # a file: the modules a forked run imported itself
WARM_IMPORTS = (
    "train",
    "torch",
    "torchvision",
    "torch.utils.serialization",
    "sklearn.datasets",
    "sklearn.model_selection",
    "sklearn.datasets.data",
    "sklearn.datasets.descr",
    "scipy.stats",
    "hydra._internal.hydra",
    "omegaconf._impl",
    "hydra.core.utils",
    "hydra._internal.core_plugins.basic_launcher",
    "hydra._internal.core_plugins.basic_sweeper",
    "hydra._internal.core_plugins.file_config_source",
    "hydra._internal.core_plugins.importlib_resources_config_source",
    "hydra._internal.core_plugins.structured_config_source",
    "hydra._internal.core_plugins.bash_completion",
    "hydra._internal.core_plugins.fish_completion",
    "hydra._internal.core_plugins.zsh_completion",
    "hydra._internal.logging_config",
    "hydra_plugins.hydra_submitit_launcher.submitit_launcher",
    "hydra_plugins.sam_repro.slurm_launcher",
    "trainer.run",
    "trainer.build",
    "trainer.loop",
    "trainer.tracking",
    "data",
    "data.digits",
    "models",
    "sam",
    "sam.variants",
    "plugins",
    "analysis.sweep_summary",
    "tqdm",
    "wandb",
)


def _serve(root: Path) -> None:
    """Import a run's modules once; per request line, fork its jobs (``workers`` at a time), reply with codes."""
    sys.path.insert(0, str(root))
    for name in WARM_IMPORTS:  # what a run imports, paid once here rather than in every child
        importlib.import_module(name)

    for line in sys.stdin:
        request = json.loads(line)
        jobs, pending, running = request["jobs"], list(range(len(request["jobs"]))), {}
        results: list[dict[str, Any]] = [{}] * len(jobs)
        while pending or running:
            while pending and len(running) < request["workers"]:
                i = pending.pop(0)
                sys.stdout.flush()
                pid = os.fork()
                if pid == 0:
                    _child(jobs[i], root)
                running[pid] = (i, time.perf_counter())
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                time.sleep(0.02)
                for other, (_, started) in running.items():
                    if time.perf_counter() - started > request["timeout"]:
                        os.kill(other, signal.SIGKILL)
                continue
            i, started = running.pop(pid)
            results[i] = {
                "returncode": os.waitstatus_to_exitcode(status),
                "seconds": time.perf_counter() - started,
            }
        print(json.dumps(results), flush=True)


if __name__ == "__main__" and sys.argv[1:2] == ["--fork-server"]:
    _serve(Path(sys.argv[2]))


def copy_repository(dest: Path) -> Path:
    """The repository's files as a fresh clone has them (tracked and not ignored), nothing else."""
    import shutil

    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for rel in filter(None, listed.split("\0")):
        if (REPO / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, dest / rel)
    return dest
