"""Run under ``torchrun --nproc_per_node=2`` (gloo): the SAM variants under real per-replica DDP.

Writes ``rank{R}.json`` into argv[1] (tests/test_variants_ddp.py asserts on it): per variant, the max
weight difference between a DDP replica (8 examples each) and one process running the variant with
m = 8 chunks on all 16 examples (its single-device meaning), and the max difference between the two
replicas' weights (they must agree bit for bit).
"""

from __future__ import annotations

import json
import sys

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from sam import StepOptions, select_step
from sam.variants import build_variant

OPTIONS = {
    "looksam": {"k": 2},
    "gsam": {"alpha": 0.3},
    "rst": {"probability": 0.5},
    "sam_late": {"late_fraction": 0.5},
    "mesa": {"start_epoch": 0, "decay": 0.5},
    "sam_on": {},
    "ae_sam": {},
    "esam": {"beta": 0.7},
    "saf": {"past_epochs": 1, "start_epoch": 1},  # epoch 1 (steps 2, 3) against the outputs of epoch 0
    "msam": {},
}
CHUNKED = tuple(OPTIONS)  # every variant: 2 replicas x 8 examples == one process, m = 8 chunks of 16
# The 16 examples of each step, from a pool of 32: epoch 0 (steps 0, 1) sees each once, epoch 1 again in
# another order (SAF's targets are their outputs of epoch 0, recorded on whichever replica saw them).
BATCH_IDS = [list(range(16)), list(range(16, 32)), [*range(8, 24)], [*range(0, 8), *range(24, 32)]]
CURRENT: dict = {}


def net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.LayerNorm(16), nn.Tanh(), nn.Linear(16, 4))


def make(name: str, model: nn.Module, raw: nn.Module, ids_now):
    extra = {"example_indices": ids_now, "num_examples": 32} if name == "saf" else {}
    return build_variant(
        name, model.parameters(), model=raw, rho=0.1, options=OPTIONS[name], total_steps=4,
        steps_per_epoch=2, seed=0, lr=0.1, momentum=0.9, nesterov=True, **extra,
    )  # fmt: skip


def flat(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def main(out_dir: str) -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    g = torch.Generator().manual_seed(42)
    pool_x, pool_y = torch.randn(32, 6, generator=g), torch.randint(0, 4, (32,), generator=g)
    ids = [torch.tensor(b) for b in BATCH_IDS]
    data = [(pool_x[i], pool_y[i]) for i in ids]
    shard = slice(rank * 8, (rank + 1) * 8)
    opts = StepOptions(nn.functional.cross_entropy, l2_weight_decay=1e-2, perturbation="per_replica")
    report: dict = {"rank": rank}
    for name in OPTIONS:
        raw = net()
        ddp = DDP(raw)
        o_ddp = make(name, ddp, raw, lambda: CURRENT["ids"][shard])
        step_ddp = select_step(o_ddp, None, 8)
        single = net()
        o_single = make(name, single, single, lambda: CURRENT["ids"])
        step_single = select_step(o_single, 8, 16) if name in CHUNKED else None
        for (x, y), batch_ids in zip(data, ids):
            CURRENT["ids"] = batch_ids
            step_ddp(ddp, o_ddp, x[shard], y[shard], opts)
            if step_single is not None:
                step_single(single, o_single, x, y, opts)
        mine = flat(raw)
        both = [torch.empty_like(mine) for _ in range(world)]
        dist.all_gather(both, mine)
        report[name] = {
            "replicas_max_diff": float((both[0] - both[1]).abs().max()),
            "vs_chunks_max_diff": float((mine - flat(single)).abs().max()) if step_single else None,
            "moved": float((mine - flat(net())).abs().max()),
        }
    with open(f"{out_dir}/rank{rank}.json", "w") as f:
        json.dump(report, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
