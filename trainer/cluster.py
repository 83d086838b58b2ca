"""Where a run lives on a cluster: exit codes, DDP, and preemption (SLURM signals, requeue).

- :class:`ExitCode` / :class:`RunError`: one exit code per outcome a requeue script treats differently.
- :func:`setup_distributed` and the reductions: torchrun or SLURM tasks as one DDP context.
- :data:`HANDLER` (:class:`PreemptionHandler`): a signal sets a flag; the loop checkpoints, then requeues.

The SLURM launcher's ``sacct`` workaround is in ``hydra_plugins/sam_repro/slurm_launcher.py``.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from types import FrameType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is imported where it is used: a typo or --help answers before torch loads
    import torch
    from torch import Tensor, nn


# ----------------------------------------------------------------------------------------------------
# Exit codes of ``train.py``: one per outcome a requeue script must treat differently.
#
# A wrapper around ``python train.py`` (SLURM ``--requeue``, a sweep driver) decides from the exit code
# alone whether to requeue, wait, free disk or give up, so every way a run can end has its own code.
class ExitCode(IntEnum):
    DONE = 0  # finished now, or finished before (the identical command again does nothing)
    CONFIG_ERROR = 1  # Hydra could not compose the config (unknown group option or key)
    BAD_INPUT = 2  # a value, a dataset file or the run directory does not fit this command: fix the command
    NON_FINITE = 3  # the loss or the weights became NaN/inf: the last good checkpoint is kept
    LOCKED = 4  # another process is writing this run directory: do not start a second writer
    DISK_FULL = 5  # a write failed for lack of space: free space, then run the identical command again
    # 128 + N: stopped by signal N after checkpointing (preemption, Ctrl-C): run the identical command again


class RunError(Exception):
    """An expected failure that ``train.py`` reports in one line (no traceback) and exits with."""

    exit_code: ExitCode = ExitCode.BAD_INPUT


# ----------------------------------------------------------------------------------------------------
# torch.distributed plumbing: torchrun or SLURM tasks, device choice, reductions, per-device BN averaging.
#
# A DDP job is started either by ``torchrun`` (which sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT)
# or by SLURM itself: ``srun`` with several tasks, which is what ``hydra.launcher.tasks_per_node > 1`` and
# ``scripts/sbatch/train.sbatch`` with ``--ntasks-per-node`` do. :func:`export_slurm_env` translates the
# second into the first (SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID; the first host of the job's node list
# as master, through submitit's helper), so everything downstream reads one set of variables.
@dataclass(frozen=True)
class DistContext:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> this process's GPU if there is one, else CPU; a bad name is a clear error."""
    import torch

    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ValueError(f"device={name!r} is not a torch device (use auto, cpu, cuda, cuda:N)") from err
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device={name!r} but CUDA is not available here (use device=cpu or auto)")
        if device.index is None:
            device = torch.device(f"cuda:{local_rank}")
    return device


def slurm_tasks() -> int:
    """Number of tasks of the SLURM job step this process runs in (1 outside ``srun``).

    The batch script itself has SLURM_NTASKS too but no SLURM_STEP_ID: ``python train.py`` run there
    directly is one process, whatever ``--ntasks`` says.
    """
    if "SLURM_STEP_ID" not in os.environ or "SLURM_PROCID" not in os.environ:
        return 1
    return int(os.environ.get("SLURM_STEP_NUM_TASKS", os.environ.get("SLURM_NTASKS", "1")))


def export_slurm_env() -> bool:
    """Under ``srun`` with more than one task and no torchrun: set torch's variables from SLURM's.

    Returns True when it did. Call it before anything reads RANK (the run-directory lock, the process
    group). The master port is derived from the job id, the same on every task and every requeue.
    """
    if "WORLD_SIZE" in os.environ or slurm_tasks() <= 1:
        return False
    try:
        from submitit.helpers import TorchDistributedEnvironment
    except ImportError as err:
        raise RuntimeError(
            f"this is task {os.environ['SLURM_PROCID']} of {slurm_tasks()} SLURM tasks: forming one DDP job "
            'from them needs submitit (pip install -e ".[slurm]")'
        ) from err
    TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
    return True


def setup_distributed(device_name: str) -> DistContext:
    """Initialise the process group when launched by torchrun or SLURM tasks (NCCL on GPU, gloo on CPU)."""
    import torch
    import torch.distributed as dist

    export_slurm_env()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, local_rank)
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0
    return DistContext(rank=rank, world_size=world, local_rank=local_rank, device=device)


def gather_objects(obj: object, ctx: DistContext) -> list[object]:
    """Every rank's ``obj``, in rank order (a one-element list without DDP)."""
    if not ctx.distributed:
        return [obj]
    import torch.distributed as dist

    out: list[object] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def all_reduce_sum(tensor: Tensor) -> Tensor:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def average_bn_stats(model: nn.Module) -> None:
    """Mean of every replica's BN running statistics (the official code's pmean), in one collective.

    With this after each step, DDP over k replicas keeps exactly the statistics that one device
    computing k chunks keeps (``sam.ChunkedBNStats``).
    """
    import torch
    import torch.distributed as dist
    from torch.nn.modules.batchnorm import _NormBase

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    stats = [
        b
        for m in model.modules()
        if isinstance(m, _NormBase) and m.track_running_stats and m.running_mean is not None
        for b in (m.running_mean, m.running_var)
    ]
    if not stats:
        return
    with torch.no_grad():
        flat = torch.cat([s.reshape(-1).float() for s in stats])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat /= dist.get_world_size()
        offset = 0
        for s in stats:
            s.copy_(flat[offset : offset + s.numel()].view_as(s))
            offset += s.numel()


# ----------------------------------------------------------------------------------------------------
# Preemption and Ctrl-C: finish the step, write a checkpoint, then requeue (SLURM) or exit.
#
# Every signal SLURM sends before it takes a job away must end in a checkpoint and a requeue: SIGTERM at
# the start of a preemption's grace time, SIGUSR1/SIGUSR2 from ``--signal`` (submitit asks for USR2) before
# the time limit or from ``scancel --signal``. The handler only sets a flag; the training loop checks it
# between steps, checkpoints and calls :meth:`PreemptionHandler.exit`, which requeues whichever of them
# came:
#
# * under submitit (``hydra/launcher=slurm``): submitit's requeue handler, the one it installed for its own
#   signal. Handing SIGTERM to submitit's SIGTERM handler instead would only log "Bypassing signal SIGTERM"
#   and the job would end FAILED;
# * in a plain SLURM job (``sbatch --requeue``, e.g. ``scripts/sbatch/train.sbatch``): ``scontrol requeue``
#   from rank 0 (it fails harmlessly where the job cannot be requeued: a cancelled or timed-out job);
# * otherwise the process exits with 128 + the signal number.
#
# SIGINT (Ctrl-C) stops the same way but never requeues: one line, exit 130, no traceback. A second Ctrl-C
# while the step finishes stops at once (Python's KeyboardInterrupt).
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
