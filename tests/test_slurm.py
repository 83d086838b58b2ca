"""train.py under a real SLURM scheduler: job arrays, requeue on every signal SLURM sends, DDP from tasks.

CI starts a single-node cluster (``.ci/slurm/start.sh``: munge, slurmctld, slurmd, no slurmdbd) and
sets ``SAM_REPRO_SLURM=1``; then these tests must run, and fail if the cluster is not usable. Elsewhere
they skip, saying how to start one. Nothing is mocked: jobs are submitted with sbatch (through submitit
or the shipped template), signalled with scancel, preempted by a higher-priority partition and timed out
by SLURM itself.

Every scenario is started at once by one module fixture (they take 10 s to 2 min each, mostly waiting
for the scheduler), then each test checks one. A job that should be interrupted uses the test-only
hook (``tests/slurm_site/sitecustomize.py``, on the jobs' PYTHONPATH): at its second step it creates a
marker file holding its SLURM job id and waits for a signal, so the interruption lands mid-epoch whatever the machine's speed. The requeued
job finds the marker and runs through. An interrupted run must end bit-identical to the same run
uninterrupted (run here without SLURM).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cli import REPO, TINY_RUN, final_weights, metrics_records, results_numbers, run_train, same_tensors

pytestmark = pytest.mark.slow

REQUIRED = os.environ.get("SAM_REPRO_SLURM") == "1"
PARTITIONS = ("debug", "low", "high")  # .ci/slurm/start.sh: low is preempted by high
TINY = [*TINY_RUN, "rho=0.05"]
DDP = [*TINY[:3], "batch_size=64", "m=16", *TINY[5:]]  # 2 processes x 32 examples, 2 chunks each
SITE = REPO / "tests" / "slurm_site"  # its sitecustomize.py: the wait-at-step-2 hook in every job
# The README's SLURM check, verbatim (runs/ becomes the test's directory).
README_ARRAY = (
    "python train.py -m experiment=quickstart epochs=2 trainer.limit_train_batches=4 "
    "hydra/launcher=slurm_cpu hydra.launcher.partition=debug hydra.sweep.dir=runs/slurm_check"
)
README_COMPARE = "python scripts/compare.py runs/slurm_check"
README_SBATCH = (
    "sbatch --partition=debug --time=3 --signal=USR1@90 scripts/sbatch/train.sbatch "
    "experiment=quickstart hydra.mode=RUN rho=0.05 epochs=2 trainer.limit_train_batches=4 "
    "hydra.run.dir=runs/slurm_sbatch"
)
README_DDP = "hydra.launcher.tasks_per_node=2"
# docs/operations.md's fire-and-forget sweep and its status command, verbatim (runs/ becomes the test's
# directory): one small driver job (1 CPU) and two jobs of 2 CPUs on the node's 16.
DOCS_SWEEP = (
    "sbatch --partition=debug --time=10 scripts/sbatch/sweep.sbatch hydra/launcher=slurm_cpu "
    "hydra.launcher.partition=debug model=wrn_tiny dataset=digits device=cpu epochs=1 "
    "trainer.limit_train_batches=1 batch_size=32 m=null seed=0,1 hydra.sweep.dir=runs/slurm_sweep"
)
DOCS_STATUS = ".venv/bin/python scripts/sweep_status.py runs/slurm_sweep"
SBATCH_RUN = README_SBATCH.split("train.sbatch ")[1].rsplit(" hydra.run.dir", 1)[0].split()


def cluster_problem() -> str | None:
    """Why this machine has no usable test cluster, or None."""
    for tool in ("sbatch", "squeue", "scontrol", "scancel", "sinfo"):
        if shutil.which(tool) is None:
            return f"{tool} is not on PATH"
    try:
        proc = subprocess.run(["sinfo", "-h", "-o", "%P %t"], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return "sinfo did not answer within 30 s"
    if proc.returncode:
        return f"sinfo failed: {proc.stderr.strip()}"
    partitions = {line.split()[0].rstrip("*") for line in proc.stdout.splitlines() if line.strip()}
    missing = sorted(set(PARTITIONS) - partitions)
    if missing:
        return f"partitions {missing} are missing (the cluster of .ci/slurm/start.sh has {list(PARTITIONS)})"
    return None


@pytest.fixture(scope="module")
def cluster() -> None:
    if not REQUIRED:
        pytest.skip(
            "no SLURM test cluster: run `sudo .ci/slurm/start.sh && source /tmp/sam-repro-slurm/env.sh` "
            "(it sets SAM_REPRO_SLURM=1), as CI does"
        )
    problem = cluster_problem()
    if problem:
        pytest.fail(f"SAM_REPRO_SLURM=1 but the SLURM test cluster is not usable: {problem}")


# ------------------------------------------------------------------------------------------ scenarios
@dataclass
class Outcome:
    returncode: int | None = None  # None: still running at the deadline (killed)
    output: str = ""
    run_dir: Path | None = None
    job_id: str | None = None
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        return f"rc={self.returncode} job={self.job_id} notes={self.notes}\n{self.output[-6000:]}"


def wait_env(marker: Path) -> dict[str, str]:
    """The environment that makes the job wait at step 2 (tests/slurm_site/sitecustomize.py)."""
    path = os.pathsep.join(filter(None, [str(SITE), os.environ.get("PYTHONPATH")]))
    return {"PYTHONPATH": path, "SAM_REPRO_WAIT_MARKER": str(marker)}


def env_with(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SAM_REPRO_FAULT", "SAM_REPRO_WAIT"))}
    env.update({"OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1", **extra})
    return env


DEADLINE_S = 600  # per scenario; they run side by side and mostly wait for the scheduler


def wait_for(path: Path, deadline: float, proc: subprocess.Popen | None = None) -> bool:
    """Until ``path`` has content, ``proc`` ended, or the monotonic ``deadline``."""
    while time.monotonic() < deadline and (proc is None or proc.poll() is None):
        if path.exists() and path.read_text().strip():
            return True
        time.sleep(0.2)
    return path.exists() and bool(path.read_text().strip())


def slurm(*args: str, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(list(args), capture_output=True, text=True, timeout=60, env=env, cwd=REPO)
    assert proc.returncode == 0, f"{' '.join(args)}: {proc.stderr}"
    return proc.stdout


def signal_once(job: str, sig: str) -> None:
    """``scancel --signal=SIG JOB`` without scancel's own retries: a job being requeued answers "try again
    later", and a retry would hit the requeued job while it starts, which SLURM itself never does."""
    with contextlib.suppress(subprocess.TimeoutExpired):
        subprocess.run(["scancel", f"--signal={sig}", job], capture_output=True, timeout=3)


def job_gone(job_id: str) -> bool:
    out = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True).stdout
    return not out.strip()


def launch(
    tmp: Path,
    overrides: list[str],
    *,
    wait: bool = False,
    act: Callable[[str], None] | None = None,
    deadline_s: float = DEADLINE_S,
) -> Outcome:
    """``train.py -m OVERRIDES hydra/launcher=slurm_cpu`` (one job); ``act(job_id)`` once it waits at step 2."""
    marker = tmp / "marker"
    extra = wait_env(marker) if wait else {}
    cmd = [
        sys.executable,
        "train.py",
        "-m",
        "hydra/launcher=slurm_cpu",
        "hydra.launcher.timeout_min=10",
        f"hydra.sweep.dir={tmp / 'sweep'}",
        *overrides,
    ]
    log = (tmp / "launcher.log").open("w")
    proc = subprocess.Popen(cmd, cwd=REPO, env=env_with(extra), stdout=log, stderr=subprocess.STDOUT)
    outcome = Outcome()
    deadline = time.monotonic() + deadline_s
    if wait:
        if wait_for(marker, deadline, proc):
            outcome.job_id = marker.read_text().split()[0]
            if act is not None:
                act(outcome.job_id)
        else:
            outcome.notes.append("the job never reached step 2")
    try:
        outcome.returncode = proc.wait(timeout=max(deadline - time.monotonic(), 1))
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        outcome.notes.append(f"the launcher was still waiting after {deadline_s} s")
    log.close()
    outcome.output = (tmp / "launcher.log").read_text() + "".join(
        f"\n--- {p.name}\n{p.read_text(errors='replace')[-20000:]}" for p in sorted(tmp.rglob("*_log.*"))
    )
    found = sorted((tmp / "sweep").glob("*/config.yaml"))
    outcome.run_dir = found[0].parent if found else None
    return outcome


def local_reference(tmp: Path, args: list[str], launcher: list[str] | None = None) -> Outcome:
    """The same run without SLURM, uninterrupted (torchrun for DDP)."""
    run_dir = tmp / "run"
    if launcher is None:  # forked from the tests' server (tests/cli.py): the same run, without the imports
        run = run_train(args, run_dir, timeout=DEADLINE_S)
        return Outcome(run.returncode, run.stdout + run.stderr, run_dir)
    cmd = [*launcher, "train.py", *args, f"hydra.run.dir={run_dir}"]
    proc = subprocess.run(cmd, cwd=REPO, env=env_with({}), capture_output=True, text=True, timeout=DEADLINE_S)
    return Outcome(proc.returncode, proc.stdout + proc.stderr, run_dir)


def readme_array(tmp: Path) -> Outcome:
    cmd = README_ARRAY.replace("runs/", f"{tmp}/").split()
    proc = subprocess.run(
        [sys.executable, *cmd[1:]],
        cwd=REPO,
        env=env_with({}),
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
    )
    compare = README_COMPARE.replace("runs/", f"{tmp}/").split()
    table = subprocess.run(
        [sys.executable, *compare[1:]],
        cwd=REPO,
        env=env_with({}),
        capture_output=True,
        text=True,
        timeout=120,
    )
    return Outcome(
        proc.returncode,
        proc.stdout + proc.stderr + "\n--- compare\n" + table.stdout + table.stderr,
        tmp / "slurm_check",
    )


def sbatch_template(tmp: Path) -> Outcome:
    """The README's sbatch line: SLURM's own USR1 before the time limit, the template requeues."""
    marker = tmp / "marker"
    args = README_SBATCH.replace("runs/", f"{tmp}/").split()
    env = env_with({**wait_env(marker), "PYTHON": sys.executable})
    job_id = (
        slurm(args[0], "--parsable", f"--output={tmp}/slurm-%j.out", *args[1:], env=env).strip().split(";")[0]
    )
    outcome = Outcome(job_id=job_id, run_dir=tmp / "slurm_sbatch")
    deadline = time.monotonic() + DEADLINE_S
    while not job_gone(job_id) and time.monotonic() < deadline:
        time.sleep(1)
    if not job_gone(job_id):
        outcome.notes.append(f"still queued or running after {DEADLINE_S} s")
        subprocess.run(["scancel", job_id])
    outcome.returncode = 0 if (outcome.run_dir / "results.json").exists() else 1
    outcome.output = "".join(p.read_text(errors="replace") for p in tmp.glob("slurm-*.out"))
    return outcome


@pytest.fixture(scope="module")
def outcomes(cluster, tmp_path_factory) -> dict[str, Outcome]:
    names = ("array", "sbatch", "term_usr2", "preempt", "high", "time_limit", "ddp", "cancelled")
    names += ("reference", "reference_sbatch", "reference_ddp")
    dirs = {name: tmp_path_factory.mktemp(name) for name in names}  # here: mktemp is not thread-safe

    def tmp(name: str) -> Path:
        return dirs[name]

    def term_then_usr2(job: str) -> None:  # submitit's own model of a preemption (SlurmJob._interrupt)
        slurm("scancel", "--signal=TERM", job)
        signal_once(job, "USR2")

    def preempt(job: str) -> None:  # a job of the high partition needs the memory the low one holds
        slurm(
            "sbatch",
            "--partition=high",
            "--mem=40G",
            "--time=1",
            f"--output={tmp('high')}/%j.out",
            "--wrap=sleep 2",
        )

    scenarios: dict[str, Callable[[], Outcome]] = {
        "array": lambda: readme_array(tmp("array")),
        "sbatch": lambda: sbatch_template(tmp("sbatch")),
        "term_usr2": lambda: launch(tmp("term_usr2"), TINY, wait=True, act=term_then_usr2),
        "preempt_grace": lambda: launch(
            tmp("preempt"),
            [*TINY, "hydra.launcher.partition=low", "hydra.launcher.mem_gb=40"],
            wait=True,
            act=preempt,
        ),
        "time_limit": lambda: launch(
            tmp("time_limit"),
            # SLURM sends the warning up to 30 s early: at 3 - 1.5 - 0.5 = 1 minute at the earliest.
            [*TINY, "hydra.launcher.timeout_min=3", "hydra.launcher.signal_delay_s=90"],
            wait=True,
        ),
        "ddp": lambda: launch(
            tmp("ddp"),
            [*DDP, README_DDP, "hydra.launcher.cpus_per_task=1"],
            wait=True,
            act=lambda job: signal_once(job, "USR2"),
        ),
        "cancelled": lambda: launch(tmp("cancelled"), TINY, wait=True, act=lambda job: slurm("scancel", job)),
        "reference": lambda: local_reference(tmp("reference"), TINY),
        "reference_sbatch": lambda: local_reference(tmp("reference_sbatch"), SBATCH_RUN),
        "reference_ddp": lambda: local_reference(
            tmp("reference_ddp"),
            DDP,
            [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"],
        ),
    }
    with ThreadPoolExecutor(max_workers=len(scenarios)) as pool:
        futures = {name: pool.submit(fn) for name, fn in scenarios.items()}
        results = {}
        for name, future in futures.items():
            try:
                results[name] = future.result()
            except Exception as err:  # one broken scenario must not hide the others' results
                results[name] = Outcome(notes=[f"{type(err).__name__}: {err}"])
    return results


def assert_same_run(outcome: Outcome, reference: Outcome) -> None:
    assert reference.returncode == 0, reference.describe()
    assert outcome.returncode == 0, outcome.describe()
    assert outcome.run_dir is not None and (outcome.run_dir / "results.json").exists(), outcome.describe()
    run, ref = outcome.run_dir, reference.run_dir
    assert metrics_records(run) == metrics_records(ref)
    got, want = results_numbers(run), results_numbers(ref)
    for key in ("git_commit", "git_commits", "git_dirty"):  # provenance of the run, not its numbers
        got.pop(key, None), want.pop(key, None)
    assert got == want
    assert same_tensors(final_weights(run), final_weights(ref))


# ---------------------------------------------------------------------------------------------- tests
def test_readme_array_runs_two_jobs_and_compare_lists_them(outcomes):
    out = outcomes["array"]
    assert out.returncode == 0, out.describe()
    results = sorted(out.run_dir.glob("*/results.json"))
    assert len(results) == 2, out.describe()
    table = out.output.split("--- compare")[-1]
    for row in (r"\| digits \|.*\| sgd \| 0 \|", r"\| digits \|.*\| sam \| 0\.05 \|"):
        assert re.search(row, table), out.describe()


def test_readme_commands_are_the_tested_ones():
    readme = (REPO / "README.md").read_text()
    for command in (README_ARRAY, README_COMPARE, README_SBATCH, README_DDP):
        assert command in readme, f"README.md no longer shows the tested command: {command}"


def test_sigterm_then_usr2_under_submitit_requeues_and_resumes_exactly(outcomes):
    """Item 1: submitit's model of a preemption (SIGTERM, then USR2) used to end the job FAILED 15:0."""
    out = outcomes["term_usr2"]
    assert "resumed from" in out.output, out.describe()  # the requeued job's own log
    assert_same_run(out, outcomes["reference"])


def test_real_preemption_with_grace_time_sigterm_requeues_and_resumes_exactly(outcomes):
    """Item 1: partition-priority preemption sends SIGTERM at the start of GraceTime."""
    out = outcomes["preempt_grace"]
    assert "resumed from" in out.output, out.describe()
    assert_same_run(out, outcomes["reference"])


def test_time_limit_warning_requeues_and_resumes_exactly(outcomes):
    """submitit's USR2 `signal_delay_s` before a 3-minute limit, sent by SLURM itself."""
    out = outcomes["time_limit"]
    assert "resumed from" in out.output, out.describe()
    assert_same_run(out, outcomes["reference"])


def test_sbatch_template_requeues_at_the_time_limit_and_resumes_exactly(outcomes):
    """Item 2: the shipped template runs train.py under srun, so SLURM's USR1 reaches it."""
    out = outcomes["sbatch"]
    assert "restart 1" in out.output, out.describe()  # the template's line on the requeued start
    assert_same_run(out, outcomes["reference_sbatch"])


def test_tasks_per_node_2_is_one_ddp_job_equal_to_torchrun_with_all_ranks_totals(outcomes):
    """Items 3 and 4: two SLURM tasks form one DDP job; interrupted mid-epoch, it ends as torchrun's run
    (the interrupted epoch's train loss included, which needs every rank's running totals)."""
    out = outcomes["ddp"]
    assert "x2 " in out.output or "x2 |" in out.output, out.describe()  # the start line: cpu ... x2
    assert_same_run(out, outcomes["reference_ddp"])


def test_job_that_dies_without_output_ends_the_launcher_instead_of_hanging(outcomes):
    """Item 7: no slurmdbd, so sacct fails; a cancelled job used to leave the launcher waiting forever."""
    out = outcomes["cancelled"]
    assert out.returncode not in (0, None), out.describe()
    assert "has not produced any output" in out.output, out.describe()
    assert "Bypassing sacct error" not in out.output, out.describe()


# ------------------------------------------------------------------------------ fire-and-forget sweeps
@pytest.fixture(scope="module")
def sweep_fire_and_forget(cluster, tmp_path_factory) -> tuple[Outcome, float, list[int]]:
    """docs/operations.md's ``sbatch scripts/sbatch/sweep.sbatch ...``, then its status command until it
    reports every job finished (bounded). Its own fixture: ``-k fire_and_forget`` runs it alone."""
    tmp = tmp_path_factory.mktemp("sweep")
    args = DOCS_SWEEP.replace("runs/", f"{tmp}/").split()
    env = env_with({"PYTHON": sys.executable})
    start = time.monotonic()
    job_id = slurm(args[0], "--parsable", f"--output={tmp}/driver-%j.out", *args[1:], env=env).strip()
    submit_s = time.monotonic() - start
    status_cmd = [sys.executable, *DOCS_STATUS.replace("runs/", f"{tmp}/").split()[1:]]
    outcome = Outcome(job_id=job_id, run_dir=tmp / "slurm_sweep")
    codes: list[int] = []
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        proc = subprocess.run(status_cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
        codes.append(proc.returncode)
        outcome.returncode, outcome.output = proc.returncode, proc.stdout + proc.stderr
        if proc.returncode in (0, 3):  # nothing left to wait for
            break
        time.sleep(2)
    else:
        outcome.notes.append(f"the sweep was not finished after {DEADLINE_S} s")
        subprocess.run(["scancel", job_id])
    outcome.output += "".join(
        f"\n--- {p.name}\n{p.read_text(errors='replace')[-6000:]}"
        for p in sorted([*tmp.glob("driver-*.out"), *tmp.rglob("*_log.err")])
    )
    return outcome, submit_s, codes


def test_fire_and_forget_sweep_returns_at_once_and_its_status_reports_both_jobs_finished(
    sweep_fire_and_forget,
):
    """Issue 23 item 8: submit a sweep, exit, check on it later with one command; job directories are
    named by the swept key only."""
    out, submit_s, codes = sweep_fire_and_forget
    assert submit_s < 5, f"sbatch took {submit_s:.1f} s"
    assert out.returncode == 0, out.describe()
    assert 1 in codes or 2 in codes, codes  # seen before it finished: not yet there (2) or queued (1)
    assert sorted(p.parent.name for p in out.run_dir.glob("*/results.json")) == ["0_seed=0", "1_seed=1"]
    assert "2 jobs: 2 finished" in out.output, out.describe()
    assert f"submitted by SLURM job {out.job_id}" in out.output, out.describe()


def test_docs_sweep_commands_are_the_tested_ones():
    docs = (REPO / "docs" / "operations.md").read_text()
    for command in (DOCS_SWEEP, DOCS_STATUS):
        assert command in docs, f"docs/operations.md no longer shows the tested command: {command}"
