"""torch.distributed plumbing: torchrun or SLURM tasks, device choice, reductions, per-device BN averaging.

A DDP job is started either by ``torchrun`` (which sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT)
or by SLURM itself: ``srun`` with several tasks, which is what ``hydra.launcher.tasks_per_node > 1`` and
``scripts/sbatch/train.sbatch`` with ``--ntasks-per-node`` do. :func:`export_slurm_env` translates the
second into the first (SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID; the first host of the job's node list
as master, through submitit's helper), so everything downstream reads one set of variables.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _NormBase


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
    out: list[object] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def all_reduce_sum(tensor: Tensor) -> Tensor:
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


@torch.no_grad()
def average_bn_stats(model: nn.Module) -> None:
    """Mean of every replica's BN running statistics (the official code's pmean), in one collective.

    With this after each step, DDP over k replicas keeps exactly the statistics that one device
    computing k chunks keeps (``sam.ChunkedBNStats``).
    """
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
    flat = torch.cat([s.reshape(-1).float() for s in stats])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= dist.get_world_size()
    offset = 0
    for s in stats:
        s.copy_(flat[offset : offset + s.numel()].view_as(s))
        offset += s.numel()
