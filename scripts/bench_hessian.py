"""Top Hessian eigenvalues: our Lanczos vs scipy's eigsh (ARPACK) on the same Hessian-vector products.

Usage:
    python scripts/bench_hessian.py [--k 5] [--tol 1e-3] [--num-examples 512] [--threads 1] [--seed 0]

A small WideResNet (depth 10, widen 2) on scikit-learn's digits, briefly trained with SGD so the spectrum
is that of a network that learned something, in fp32 eval() mode as scripts/sharpness.py measures. Both
methods get the same matvec (one double-backward HVP over the fixed subset) at the same tolerance; the
reference is eigsh at tol 1e-10. Printed per method: HVPs (the cost), seconds, and the worst relative error of the
top-k eigenvalues against the reference; then the ratios Lanczos / eigsh in the same process.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root: sam/, models/, data/, scripts/

from data import build_data
from models import create_model
from sam.sharpness import hessian_eigenvalues


def trained_model_and_subset(num_examples: int, seed: int):
    torch.manual_seed(seed)
    bundle = build_data("digits", root=".", batch_size=64, augment="none", seed=seed)
    model = create_model("wide_resnet", 10, in_chans=1, depth=10, widen_factor=2, drop_rate=0.0)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()
    for epoch in range(2):
        bundle.train.set_epoch(epoch)
        for x, y in bundle.train:
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
    model.eval()
    bundle.train.set_epoch(0)
    xs, ys = zip(*bundle.train, strict=True)
    x, y = torch.cat(xs)[:num_examples], torch.cat(ys)[:num_examples]
    return model, x, y


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--tol", type=float, default=1e-3)
    p.add_argument("--num-examples", type=int, default=512)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model, x, y = trained_model_and_subset(args.num_examples, args.seed)
    params = [q for q in model.parameters() if q.requires_grad]
    print(f"wide_resnet 10-2 on digits: {sum(q.numel() for q in params)} parameters, {len(y)} examples, "
          f"k = {args.k}, tol = {args.tol:g}, {torch.get_num_threads()} threads")  # fmt: skip

    def run(method: str, tol: float) -> tuple[torch.Tensor, int, float]:
        calls = []

        def loss():
            return F.cross_entropy(model(x), y)

        t0 = time.perf_counter()
        ev = hessian_eigenvalues(
            loss, params, k=args.k, tol=tol, max_iter=300, seed=args.seed, method=method,
            on_matvec=lambda: calls.append(1),
        )  # fmt: skip
        return ev, len(calls), time.perf_counter() - t0

    reference, n_ref, t_ref = run("eigsh", 1e-10)
    print(f"reference (eigsh, tol 1e-10): {', '.join(f'{v:.6g}' for v in reference.tolist())} "
          f"[{n_ref} HVPs, {t_ref:.1f} s]")  # fmt: skip
    results = {}
    for method in ("lanczos", "eigsh"):
        ev, hvps, seconds = run(method, args.tol)
        err = float(((ev - reference).abs() / reference.abs()).max())
        results[method] = (hvps, seconds, err)
        print(f"{method:>8}: {', '.join(f'{v:.6g}' for v in ev.tolist())}; {hvps} HVPs, {seconds:.2f} s; "
              f"worst relative error {err:.2e}")  # fmt: skip
    (nl, tl, el), (ne, te, ee) = results["lanczos"], results["eigsh"]
    print(f"lanczos / eigsh: HVPs {nl / ne:.2f}x, time {tl / te:.2f}x, "
          f"worst relative error {el / max(ee, 1e-300):.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
