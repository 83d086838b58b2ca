"""WRN-28-10 training throughput on CIFAR-shaped random data: images/s and peak memory of SAM steps.

    python benchmarks/bench_wrn.py --device cuda --precision bf16 --channels-last            # eager
    python benchmarks/bench_wrn.py --device cuda --precision bf16 --channels-last --compile  # torch.compile
    python benchmarks/bench_wrn.py --device cpu --depth 10 --widen-factor 1 --batch-size 8 --steps 2  # dry run

The step is the trainer's (``select_step`` with m = the batch: one perturbation per batch, L2 decay,
clipping at 5.0), on a fixed random batch already on the device, so the figure is the model's and the
optimizer's, not the data loader's. The last line is one JSON record (benchmarks/gpu_check.sh reads it).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models import create_model
from sam import SAM, StepOptions, resolve_precision, select_step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--precision", default="bf16", help="fp32, bf16 or fp16")
    p.add_argument("--depth", type=int, default=28)
    p.add_argument("--widen-factor", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=20, help="timed steps (after the warm-up)")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first (compilation happens here)")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--optimizer", choices=("sam", "sgd"), default="sam")
    args = p.parse_args()

    device = torch.device(args.device)
    torch.manual_seed(0)
    model = create_model("wide_resnet", 10, depth=args.depth, widen_factor=args.widen_factor).to(device)
    x = torch.randn(args.batch_size, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (args.batch_size,), device=device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    sgd = dict(lr=0.1, momentum=0.9, nesterov=True)
    if args.optimizer == "sam":
        optimizer = SAM(model.parameters(), torch.optim.SGD, rho=0.05, **sgd)
    else:
        optimizer = torch.optim.SGD(model.parameters(), **sgd)
    step = select_step(optimizer, None, args.batch_size)
    opts = StepOptions(
        nn.CrossEntropyLoss(),
        l2_weight_decay=5e-4,
        grad_clip=5.0,
        precision=resolve_precision(args.precision, device),
    )
    runner = torch.compile(model) if args.compile else model

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    t0 = time.perf_counter()
    for _ in range(args.warmup):
        step(runner, optimizer, x, y, opts)
    sync()
    warmup_s = time.perf_counter() - t0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(args.steps):
        t = time.perf_counter()
        result = step(runner, optimizer, x, y, opts)
        sync()
        times.append(time.perf_counter() - t)
    record = {
        "model": f"WRN-{args.depth}-{args.widen_factor}",
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "optimizer": args.optimizer,
        "precision": args.precision,
        "channels_last": args.channels_last,
        "compile": args.compile,
        "batch_size": args.batch_size,
        "images_per_s": args.batch_size / statistics.median(times),
        "peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
        "warmup_s": warmup_s,
        "loss_finite": bool(torch.isfinite(result.loss)),
    }
    print(
        f"{record['model']} {args.optimizer} {args.precision} channels_last={args.channels_last} "
        f"compile={args.compile} batch {args.batch_size}: {record['images_per_s']:.0f} img/s"
        + (f", peak {record['peak_memory_gib']:.2f} GiB" if record["peak_memory_gib"] is not None else "")
    )
    print(json.dumps(record))


if __name__ == "__main__":
    main()
