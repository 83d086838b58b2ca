"""Run under ``torchrun --nproc_per_node=2`` (gloo): docs/frameworks.md's DDP recipes (issue 22).

The two-call recipe with pass 1 under ``ddp.no_sync()`` (per-replica e(w), the paper's) and without it
(synced e(w), from the all-reduced gradient), each against ``sam.sam_step`` with the same
``perturbation``, and ``sam.accumulated_sam_step`` under DDP. Writes ``rank{R}.json`` into argv[1].
"""

from __future__ import annotations

import json
import sys

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from sam import SAM, StepOptions, accumulated_sam_step, sam_step

STEPS = 3


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 4))


def sam_opt(model: nn.Module) -> SAM:
    return SAM(model.parameters(), torch.optim.SGD, rho=0.1, lr=0.1, momentum=0.9)


def flat(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def recipe(shards, per_replica: bool) -> torch.Tensor:
    ddp = DDP(mlp())
    optimizer = sam_opt(ddp)
    for x, y in shards:
        with ddp.no_sync() if per_replica else torch.enable_grad():  # pass 1: local gradient only
            nn.functional.cross_entropy(ddp(x), y).backward()
        optimizer.first_step(zero_grad=True)
        nn.functional.cross_entropy(ddp(x), y).backward()  # pass 2 all-reduces the SAM gradient
        optimizer.second_step(zero_grad=True)
    return flat(ddp)


def step_function(shards, perturbation: str) -> torch.Tensor:
    ddp = DDP(mlp())
    optimizer = sam_opt(ddp)
    opts = StepOptions(loss_fn=nn.CrossEntropyLoss(), perturbation=perturbation)
    for x, y in shards:
        sam_step(ddp, optimizer, x, y, opts)
    return flat(ddp)


def accumulated(shards, per_replica: bool, micro: int) -> torch.Tensor:
    ddp = DDP(mlp())
    optimizer = sam_opt(ddp)
    for x, y in shards:
        batches = list(zip(x.split(micro), y.split(micro)))
        accumulated_sam_step(
            optimizer,
            batches,
            lambda b: nn.functional.cross_entropy(ddp(b[0]), b[1]),
            no_sync=ddp.no_sync,
            per_replica=per_replica,
        )
    return flat(ddp)


def main(out_dir: str) -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    g = torch.Generator().manual_seed(7)
    data = [
        (torch.randn(2, 8, 6, generator=g), torch.randint(0, 4, (2, 8), generator=g)) for _ in range(STEPS)
    ]
    shards = [(x[rank], y[rank]) for x, y in data]
    report = {}
    for mode, per_replica in (("per_replica", True), ("synced", False)):
        got = recipe(shards, per_replica)
        gathered = [torch.empty_like(got) for _ in range(2)]
        dist.all_gather(gathered, got)
        report[f"{mode}_recipe_vs_sam_step"] = float((got - step_function(shards, mode)).abs().max())
        report[f"{mode}_ranks_differ"] = float((gathered[0] - gathered[1]).abs().max())
        report[f"{mode}_accumulated_one_micro_vs_recipe"] = float(
            (accumulated(shards, per_replica, 8) - got).abs().max()
        )
        report[f"{mode}_accumulated_two_micro_vs_recipe"] = float(
            (accumulated(shards, per_replica, 4) - got).abs().max()
        )
        report[f"{mode}_weights"] = got.tolist()
    report["per_replica_vs_synced"] = float(
        (torch.tensor(report["per_replica_weights"]) - torch.tensor(report["synced_weights"])).abs().max()
    )
    with open(f"{out_dir}/rank{rank}.json", "w") as f:
        json.dump(report, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
