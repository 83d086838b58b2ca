"""Preemption and Ctrl-C: finish the step, write a checkpoint, then requeue (SLURM) or exit.

Every signal SLURM sends before it takes a job away must end in a checkpoint and a requeue: SIGTERM at
the start of a preemption's grace time, SIGUSR1/SIGUSR2 from ``--signal`` (submitit asks for USR2) before
the time limit or from ``scancel --signal``. The handler only sets a flag; the training loop checks it
between steps, checkpoints and calls :meth:`PreemptionHandler.exit`, which requeues whichever of them
came:

* under submitit (``hydra/launcher=slurm``): submitit's requeue handler, the one it installed for its own
  signal. Handing SIGTERM to submitit's SIGTERM handler instead would only log "Bypassing signal SIGTERM"
  and the job would end FAILED;
* in a plain SLURM job (``sbatch --requeue``, e.g. ``scripts/sbatch/train.sbatch``): ``scontrol requeue``
  from rank 0 (it fails harmlessly where the job cannot be requeued: a cancelled or timed-out job);
* otherwise the process exits with 128 + the signal number.

SIGINT (Ctrl-C) stops the same way but never requeues: one line, exit 130, no traceback. A second Ctrl-C
while the step finishes stops at once (Python's KeyboardInterrupt).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)

REQUEUE_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGTERM", "SIGUSR1", "SIGUSR2") if hasattr(signal, name)
)
SIGNALS = (*REQUEUE_SIGNALS, signal.SIGINT)
SUBMITIT_REQUEUE = "checkpoint_and_try_requeue"  # submitit.core.job_environment.SignalHandler's method


class PreemptionHandler:
    """Catches SLURM's signals and Ctrl-C as a flag; :meth:`exit` requeues or exits once checkpointed."""

    def __init__(self, rank: int = 0) -> None:
        self.rank = rank
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def install(self, pending: list[int] | None = None) -> PreemptionHandler:
        """Catch the signals (again: a no-op); those in ``pending`` (caught during imports) count as received."""
        if not self._previous:
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        for signum in pending or ():
            self._handle(signum, None)
        if pending:
            pending.clear()
        return self

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
        self.received = None

    def __reduce__(self) -> tuple[type, tuple[int]]:
        """Pickled (submitit pickles train.py's globals with the job, also for its requeue): a fresh one.

        A copy carrying ``received`` into the requeued job would stop it again after its first step.
        """
        return (PreemptionHandler, (self.rank,))

    @property
    def requested(self) -> bool:
        return self.received is not None

    @property
    def interrupted(self) -> bool:
        """Stopped by Ctrl-C (SIGINT) rather than by the scheduler."""
        return self.received == signal.SIGINT

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGINT and self.received == signal.SIGINT:
            raise KeyboardInterrupt  # the second Ctrl-C: stop now, without a checkpoint
        if self.received is None:
            log.warning(
                "received %s: finishing this step, then checkpointing and %s",
                signal.Signals(signum).name,
                "exiting" if signum == signal.SIGINT else "requeuing",
            )
        # Ctrl-C wins over a scheduler signal (the user wants out); otherwise keep the first.
        if self.received is None or signum == signal.SIGINT:
            self.received = signum

    def _submitit_requeue(self) -> Callable[[int, FrameType | None], None] | None:
        return next(
            (h for h in self._previous.values() if getattr(h, "__name__", "") == SUBMITIT_REQUEUE), None
        )

    def exit(self, where: str = "") -> None:
        """After the checkpoint: requeue (SLURM) or exit 128 + signum; Ctrl-C exits 130 with one line."""
        signum = self.received
        assert signum is not None
        submitit_requeue = self._submitit_requeue()
        # From here on this process only exits. Later SLURM signals (submitit's USR2 right after a SIGTERM,
        # the requeue's own SIGTERM) are ignored: handed to submitit they would start a second requeue
        # inside this one. Nothing is restored afterwards (uninstall() then has nothing to do).
        for sig in REQUEUE_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
        if signal.getsignal(signal.SIGINT) == self._handle:
            signal.signal(signal.SIGINT, self._previous.get(signal.SIGINT, signal.default_int_handler))
        self._previous.clear()
        if signum == signal.SIGINT:
            if self.rank == 0:
                print(
                    f"interrupted (Ctrl-C): checkpointed{where}; run the same command to resume",
                    file=sys.stderr,
                )
            sys.exit(128 + signum)
        job_id = os.environ.get("SLURM_JOB_ID")
        if job_id and self.rank == 0 and not slurm_job_running(job_id):
            pass  # cancelled (scancel) or past its time limit: SLURM would still requeue it, it must not be
        elif submitit_requeue is not None:
            try:
                submitit_requeue(signum, None)  # rank 0: dumps the job, `scontrol requeue`, exits
            except subprocess.CalledProcessError as err:
                log.error("submitit could not requeue the job (%s); exiting", err)
        elif job_id and self.rank == 0:
            requeue_slurm_job(job_id)
        sys.exit(128 + signum)


HANDLER = PreemptionHandler()  # the process's one handler: train.py installs it first, the Run uses it


def slurm_job_running(job_id: str) -> bool:
    """Whether the job is still RUNNING: so during a preemption's grace time or after ``--signal``.

    ``scancel JOB`` and the time limit put it in COMPLETING before the SIGTERM arrives; ``scontrol requeue``
    would still bring such a job back, so a job a user cancelled must not be requeued.
    """
    try:
        proc = subprocess.run(
            ["squeue", "-h", "-j", job_id, "-o", "%T"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        log.warning("cannot ask SLURM for the state of job %s (%s): requeuing anyway", job_id, err)
        return True
    state = proc.stdout.strip()
    if proc.returncode == 0 and state and state != "RUNNING":
        log.warning("SLURM job %s is %s (cancelled, or past its time limit): not requeuing it", job_id, state)
        return False
    return True


def requeue_slurm_job(job_id: str) -> bool:
    """``scontrol requeue JOB``: True when SLURM took it (a batch job that is still running)."""
    try:
        proc = subprocess.run(
            ["scontrol", "requeue", job_id], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        log.error("cannot requeue SLURM job %s: %s", job_id, err)
        return False
    if proc.returncode:
        log.warning("SLURM did not requeue job %s: %s", job_id, (proc.stderr or proc.stdout).strip())
        return False
    log.warning("requeued SLURM job %s; it resumes from the checkpoint", job_id)
    return True
