"""Run under ``torchrun --nproc_per_node=2`` (gloo): SAM under real DDP vs. its single-process meaning.

Writes ``rank{R}.json`` into the directory given as argv[1]; tests/test_ddp.py asserts on it.
"""

from __future__ import annotations

import copy
import json
import sys

import torch
import torch.distributed as dist
from sam_reference import clip, nesterov_sgd, sam_gradient
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from sam import SAM, Precision, StepOptions, sam_step, select_step

L2, RHO, LR = 1e-2, 0.1, 0.1
CLIP = 0.05  # below every step's averaged SAM gradient norm (~0.3): clipping is active on each step


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 4))


def sam_opt(model):
    return SAM(model.parameters(), torch.optim.SGD, rho=RHO, lr=LR, momentum=0.9, nesterov=True)


def max_diff(a: nn.Module, b: nn.Module) -> float:
    return max(float((p - q).abs().max()) for p, q in zip(a.parameters(), b.parameters()))


def main(out_dir: str) -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    g = torch.Generator().manual_seed(42)
    data = [(torch.randn(16, 6, generator=g), torch.randint(0, 4, (16,), generator=g)) for _ in range(3)]
    shard = slice(rank * 16 // world, (rank + 1) * 16 // world)
    opts = {
        mode: StepOptions(nn.functional.cross_entropy, l2_weight_decay=L2, grad_clip=None, perturbation=mode)
        for mode in ("synced", "per_replica")
    }
    report: dict = {"rank": rank}

    # synced: e(w) from the all-reduced gradient == single-process full-batch SAM
    def ddp_vs_one_process(m_ddp: int | None, m_single: int | None, mode: str) -> float:
        """Train a DDP replica on its shard and one process on the whole batch; max weight difference."""
        ddp, single = DDP(mlp()), mlp()
        o_ddp, o_single = sam_opt(ddp), sam_opt(single)
        step_ddp = select_step(o_ddp, m=m_ddp, per_device_batch=16 // world)
        step_single = select_step(o_single, m=m_single, per_device_batch=16)
        for x, y in data:
            step_ddp(ddp, o_ddp, x[shard], y[shard], opts[mode])
            step_single(single, o_single, x, y, opts[mode])
        return max_diff(ddp.module, single)

    report["synced_vs_full_batch"] = ddp_vs_one_process(None, None, "synced")

    # per_replica: mean over shards of each shard's SAM gradient, computed by hand
    ddp = DDP(mlp())
    o_ddp = sam_opt(ddp)
    ref = mlp().double()
    w = {n: p.detach().double().clone() for n, p in ref.named_parameters()}
    buf: dict = {}
    for x, y in data:
        sam_step(ddp, o_ddp, x[shard], y[shard], opts["per_replica"])
        grads = [
            sam_gradient(ref, w, xs.double(), ys, rho=RHO, l2=L2)
            for xs, ys in zip(x.split(16 // world), y.split(16 // world))
        ]
        w, buf = nesterov_sgd(w, buf, {k: sum(gr[k] for gr in grads) / world for k in w}, lr=LR)
    report["per_replica_vs_by_hand"] = max(
        float((p.detach().double() - w[n]).abs().max()) for n, p in ddp.module.named_parameters()
    )
    per_replica_model = copy.deepcopy(ddp.module)

    # one device, chunks of m = 16 / world: the same computation as per_replica DDP
    chunked = mlp()
    o_chunked = sam_opt(chunked)
    step = select_step(o_chunked, m=16 // world, per_device_batch=16)
    for x, y in data:
        step(chunked, o_chunked, x, y, opts["per_replica"])
    report["one_device_chunks_vs_per_replica_ddp"] = max_diff(chunked, per_replica_model)

    # chunks inside each replica (m = 4): equals one device with m = 4 over the global batch
    report["ddp_chunks_vs_one_device_chunks"] = ddp_vs_one_process(4, 4, "per_replica")

    # Active clipping (the official order): per-replica e, SAM gradients averaged across replicas, then
    # the average clipped to CLIP. DDP (one replica = one chunk) and one device with chunks of m must both
    # be that, computed by hand in float64.
    clipped = StepOptions(nn.functional.cross_entropy, l2_weight_decay=L2, grad_clip=CLIP)
    ddp, chunked = DDP(mlp()), mlp()
    o_ddp, o_chunked = sam_opt(ddp), sam_opt(chunked)
    step = select_step(o_chunked, m=16 // world, per_device_batch=16)
    w = {n: p.detach().double().clone() for n, p in ref.named_parameters()}
    buf, norms = {}, []
    for x, y in data:
        sam_step(ddp, o_ddp, x[shard], y[shard], clipped)
        step(chunked, o_chunked, x, y, clipped)
        grads = [
            sam_gradient(ref, w, xs.double(), ys, rho=RHO, l2=L2)
            for xs, ys in zip(x.split(16 // world), y.split(16 // world))
        ]
        mean = {k: sum(gr[k] for gr in grads) / world for k in w}
        norms.append(float(torch.sqrt(sum((g**2).sum() for g in mean.values()))))
        w, buf = nesterov_sgd(w, buf, clip(mean, CLIP), lr=LR)
    report["clip_active_every_step"] = min(norms) > CLIP
    for name, model in (("clipped_ddp_vs_by_hand", ddp.module), ("clipped_chunks_vs_by_hand", chunked)):
        report[name] = max(
            float((p.detach().double() - w[n]).abs().max()) for n, p in model.named_parameters()
        )

    # fp16 GradScaler logic: an overflow in pass 1 on rank 1 only skips the step on every rank
    ddp = DDP(mlp())
    o_ddp = sam_opt(ddp)
    prec = Precision(None, "cpu", torch.amp.GradScaler("cpu", init_scale=2.0**10))
    calls = {"n": 0}

    def overflow_on_rank1_pass1(out, target):
        calls["n"] += 1
        loss = nn.functional.cross_entropy(out, target)
        return loss * float("inf") if (rank == 1 and calls["n"] == 1) else loss

    before = [p.detach().clone() for p in ddp.module.parameters()]
    x, y = data[0]
    result = sam_step(ddp, o_ddp, x[shard], y[shard], StepOptions(overflow_on_rank1_pass1, precision=prec))
    report["overflow_skipped"] = bool(result.skipped)
    report["overflow_weights_unchanged"] = all(
        torch.equal(p, b) for p, b in zip(ddp.module.parameters(), before)
    )
    report["overflow_scale_after"] = prec.scaler.get_scale()

    with open(f"{out_dir}/rank{rank}.json", "w") as f:
        json.dump(report, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
