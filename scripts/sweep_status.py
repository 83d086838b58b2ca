"""Where a sweep stands: one line per job and a count, from its directory and SLURM's queue.

Usage:
    python scripts/sweep_status.py SWEEP_DIR     # e.g. multirun/slurm/1234 (scripts/sbatch/sweep.sbatch)

A job is ``finished`` once its directory holds results.json (its test error is shown). A job submitted
to SLURM (``hydra/launcher=slurm``: submitit's folder ``SWEEP_DIR/.submitit/<array>_<task>/``) has
SLURM's state while ``squeue`` lists it (PENDING, RUNNING...), and is ``ended`` when it no longer does
and left no results.json: it failed, was cancelled or was killed; its log is named. Without SLURM, a job
directory without results.json is ``unfinished`` (running, or it failed). The job that
``sweep.sbatch`` runs to submit and wait is shown too.

Exit status: 0 when every job finished, 1 while jobs are queued, running or not yet submitted, 3 when
nothing is left to wait for but some job ended without results.json, 2 for a missing SWEEP_DIR.
"""

from __future__ import annotations

import argparse
import getpass
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

QUEUED = {
    "PENDING",
    "RUNNING",
    "CONFIGURING",
    "COMPLETING",
    "REQUEUED",
    "REQUEUE_HOLD",
    "RESIZING",
    "SUSPENDED",
}


def squeue_states(job_ids: list[str]) -> dict[str, str]:
    """{job id: state} of those jobs SLURM still lists (array tasks one by one); {} without squeue."""
    if not job_ids or shutil.which("squeue") is None:
        return {}
    try:  # all of this user's jobs: `-j` with an id SLURM has forgotten fails on some versions
        out = subprocess.run(
            ["squeue", "-h", "-r", "--states=all", "-u", getpass.getuser(), "-o", "%i|%T"],
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    listed = dict(line.split("|", 1) for line in out.split() if "|" in line)
    return {job: listed[job] for job in job_ids if job in listed}


def submitted_tasks(sweep_dir: Path) -> dict[int, tuple[str, Path]]:
    """{job number: (SLURM id, submitit folder)}: array task i of the k-th array is job (earlier arrays' size) + i."""
    arrays: dict[int, dict[int, Path]] = {}
    for folder in (sweep_dir / ".submitit").glob("*_*"):
        match = re.fullmatch(r"(\d+)_(\d+)", folder.name)
        if match and folder.is_dir():
            arrays.setdefault(int(match[1]), {})[int(match[2])] = folder
    tasks, offset = {}, 0
    for array in sorted(arrays):
        for task, folder in arrays[array].items():
            tasks[offset + task] = (folder.name, folder)
        offset += max(arrays[array]) + 1
    return tasks


def job_number(job_dir: Path) -> int | None:
    match = re.match(r"(\d+)(_|$)", job_dir.name)
    return int(match[1]) if match else None


def test_error(job_dir: Path) -> str:
    try:
        error = json.loads((job_dir / "results.json").read_text()).get("test_error")
    except (OSError, ValueError):
        return "results.json unreadable"
    return f"test error {error:.2f}%" if isinstance(error, int | float) else f"test error {error}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("sweep_dir", type=Path, metavar="SWEEP_DIR")
    args = parser.parse_args(argv)
    sweep_dir: Path = args.sweep_dir
    if not sweep_dir.is_dir():
        print(
            f"error: {sweep_dir} is not a directory (a sweep submitted with scripts/sbatch/sweep.sbatch creates "
            "it when its job starts: `squeue --me` shows it pending)",
            file=sys.stderr,
        )
        return 2

    driver_file = sweep_dir / "sweep_job_id"
    driver = driver_file.read_text().strip() if driver_file.exists() else None
    tasks = submitted_tasks(sweep_dir)
    states = squeue_states([*(slurm_id for slurm_id, _ in tasks.values()), *([driver] if driver else [])])
    dirs = {p.name: p for p in sweep_dir.iterdir() if p.is_dir() and not p.name.startswith(".")}
    by_number = {job_number(p): p for p in dirs.values() if job_number(p) is not None}

    rows: list[tuple[str, str, str]] = []  # (state, job, detail)
    for number in sorted(set(tasks) | set(by_number)):
        job_dir = by_number.get(number)
        slurm_id, folder = tasks.get(number, (None, None))
        name = job_dir.name if job_dir else f"{number} (no directory yet)"
        if job_dir is not None and (job_dir / "results.json").exists():
            rows.append(("finished", name, test_error(job_dir)))
        elif slurm_id is None:
            rows.append(("unfinished", name, "no results.json: running, or it failed (train.log)"))
        elif states.get(slurm_id, "") in QUEUED:
            rows.append((states[slurm_id].lower(), name, f"SLURM {slurm_id}"))
        else:
            logs = sorted(folder.glob("*_log.err")) if folder else []
            log = logs[0] if logs else folder
            rows.append(
                (
                    "ended",
                    name,
                    f"SLURM {slurm_id} {states.get(slurm_id, 'gone')}, no results.json: see {log}",
                )
            )
    for name, job_dir in sorted(dirs.items()):  # named otherwise (experiment=quickstart: rho0.05)
        if job_number(job_dir) is None:
            done = (job_dir / "results.json").exists()
            rows.append(
                ("finished", name, test_error(job_dir)) if done else ("unfinished", name, "no results.json")
            )

    counts: dict[str, int] = {}
    for state, _, _ in rows:
        counts[state] = counts.get(state, 0) + 1
    summary = ", ".join(
        f"{n} {state}" for state, n in sorted(counts.items(), key=lambda kv: kv[0] != "finished")
    )
    print(f"{sweep_dir}: {len(rows)} jobs" + (f": {summary}" if rows else " yet"))
    driver_state = states.get(driver or "", "no longer queued")
    if driver:
        print(f"submitted by SLURM job {driver} (scripts/sbatch/sweep.sbatch): {driver_state.lower()}")
    width = max((len(name) for _, name, _ in rows), default=0)
    for state, name, detail in rows:
        print(f"  {state:<10} {name:<{width}}  {detail}")

    waiting = any(state not in ("finished", "ended") for state, _, _ in rows) or driver_state in QUEUED
    if not rows or waiting:
        return 1
    return 3 if counts.get("ended") else 0


if __name__ == "__main__":
    sys.exit(main())
