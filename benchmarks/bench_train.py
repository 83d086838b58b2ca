"""Training throughput of train.py's loop against a bare hand-written SAM loop, same model and data.

    python benchmarks/bench_train.py                      # CIFAR-shaped data, WRN-10-2, batch 128, SAM
    python benchmarks/bench_train.py --optimizer sgd --batches 20 --rounds 5 --device cuda

Both loops run the same maths on the same batches from the same tensor loader: SAM (rho 0.05, Nesterov
0.9), weight decay as the L2 gradient, clipping at 5.0. "ours" is exactly what train.py runs per epoch
(``trainer.loop.train_one_epoch`` with the step function ``select_step`` picks: BN freezing, RNG replay,
``true_gradient`` toggling, L2 hooks, device-side loss/accuracy totals, non-finite checks, tqdm); "bare"
is the shortest correct loop a user would write by hand. Rounds alternate between the two in one
process; the script prints images/s medians and the ratio ours/bare (target >= 0.95).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root: sam/, models/, data/, trainer/

from data import build_data
from models import create_model
from sam import SAM, StepOptions, frozen_bn_stats, select_step
from trainer.loop import EpochTotals, train_one_epoch


def write_cifar_shaped(root: Path, n: int) -> None:
    """Random CIFAR-10-shaped data in the real pickle format, so the real reader and loader run."""
    import pickle

    rng = np.random.default_rng(0)
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    for name, count in [*((f"data_batch_{i}", n // 5) for i in range(1, 6)), ("test_batch", 256)]:
        batch = {  # str keys, as the official files read with encoding="latin1"
            "data": rng.integers(0, 256, (count, 3072), dtype=np.uint8),
            "labels": rng.integers(0, 10, count).tolist(),
        }
        (d / name).write_bytes(pickle.dumps(batch, protocol=2))
    (d / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"c{i}" for i in range(10)]}, protocol=2))


def bare_sam_epoch(model, optimizer, loader, batches, wd, clip, scheduler) -> None:
    """The hand-written baseline: Algorithm 1 with L2 and clipping, nothing else."""
    params = [p for p in model.parameters() if p.requires_grad]
    loss_fn = nn.CrossEntropyLoss()
    for i, (x, y) in enumerate(loader):
        if i >= batches:
            break
        loss_fn(model(x), y).backward()
        torch._foreach_add_([p.grad for p in params], params, alpha=wd)
        if isinstance(optimizer, SAM):
            optimizer.first_step(zero_grad=True)
            with frozen_bn_stats(model):
                loss_fn(model(x), y).backward()
            torch._foreach_add_([p.grad for p in params], params, alpha=wd)
            optimizer.restore()
            base = optimizer.base_optimizer
        else:
            base = optimizer
        torch.nn.utils.clip_grad_norm_(params, clip, foreach=True)
        base.step()
        base.zero_grad(set_to_none=True)
        scheduler.step()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--optimizer", choices=("sam", "sgd"), default="sam")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--batches", type=int, default=8, help="batches per timed round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--depth", type=int, default=10)
    parser.add_argument("--widen-factor", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    wd, clip = 5e-4, 5.0

    with tempfile.TemporaryDirectory() as tmp:
        write_cifar_shaped(Path(tmp), max(args.batch_size * (args.batches + 1), 1280))
        data = build_data(
            "cifar10", root=tmp, batch_size=args.batch_size, augment="basic", device=device, download=False
        )

    def fresh():
        torch.manual_seed(0)
        model = create_model("wide_resnet", 10, depth=args.depth, widen_factor=args.widen_factor).to(device)
        kw = dict(lr=0.05, momentum=0.9, nesterov=True)
        opt = (
            SAM(model.parameters(), torch.optim.SGD, rho=0.05, **kw)
            if args.optimizer == "sam"
            else torch.optim.SGD(model.parameters(), **kw)
        )
        base = opt.base_optimizer if isinstance(opt, SAM) else opt
        sched = torch.optim.lr_scheduler.LambdaLR(base, lambda s: 1.0)
        return model, opt, sched

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def ours(epoch: int) -> float:
        model, opt, sched = fresh()
        opts = StepOptions(nn.CrossEntropyLoss(), l2_weight_decay=wd, grad_clip=clip)
        step = select_step(opt, None, args.batch_size)
        data.train.set_epoch(epoch)
        totals = EpochTotals().to(device)
        sync()
        t0 = time.perf_counter()
        train_one_epoch(
            model, opt, step, opts, data.train, sched, totals, num_batches=args.batches, check_every=50
        )
        float(totals.loss_sum)  # the loop's own end-of-epoch sync
        sync()
        return time.perf_counter() - t0

    def bare(epoch: int) -> float:
        model, opt, sched = fresh()
        data.train.set_epoch(epoch)
        sync()
        t0 = time.perf_counter()
        bare_sam_epoch(model, opt, data.train, args.batches, wd, clip, sched)
        sync()
        return time.perf_counter() - t0

    ours(0), bare(0)  # warm-up (allocator, kernels, caches)
    times: dict[str, list[float]] = {"ours": [], "bare": []}
    for r in range(args.rounds):
        order = (("ours", ours), ("bare", bare)) if r % 2 == 0 else (("bare", bare), ("ours", ours))
        for name, fn in order:
            times[name].append(fn(r + 1))
    images = args.batches * args.batch_size
    rate = {k: images / statistics.median(v) for k, v in times.items()}
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"cpu, {torch.get_num_threads()} threads"
    )
    print(
        f"device: {name} | {args.optimizer}, WRN-{args.depth}-{args.widen_factor}, batch {args.batch_size}, "
        f"{args.batches} batches x {args.rounds} rounds (medians)"
    )
    print(f"{'loop':<6} {'images/s':>10}")
    for k in ("bare", "ours"):
        print(f"{k:<6} {rate[k]:>10.1f}")
    print(f"ours / bare = {rate['ours'] / rate['bare']:.3f}   (target >= 0.95)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
