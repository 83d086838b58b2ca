"""Measure the sharpness of a trained model: Hessian lambda_max, lambda_max / lambda_k, and m-sharpness.

Usage:
    python scripts/sharpness.py RUN_DIR_OR_CHECKPOINT [--num-examples 1024] [--k 5] [--rho 0.05] [--m 128]
        [--tol 1e-3] [--max-iter 100] [--ascent-steps 1] [--batch-size 256] [--seed 0]
        [--data-root PATH] [--device cpu] [--out FILE.json]

RUN_DIR_OR_CHECKPOINT is a run directory (its final_model.pt is used) or a final_model.pt itself:
{"model": state_dict, "config": the resolved config}. The model is rebuilt with
models.create_model(cfg.model.name, num_classes, in_chans=..., **other cfg.model keys), the data with
data.build_data(cfg.dataset.name, augment="none", seed=cfg.seed, label_noise=cfg.label_noise,
val_fraction=cfg.dataset.val_fraction) so the subset holds the training examples and labels the model
was trained on. Everything is measured in fp32 on a fixed subset:
the first --num-examples training examples in the loader's epoch-0 order, with the model in eval() mode
(BatchNorm uses its running statistics). The loss is the mean cross-entropy over the subset, with no
label smoothing and no weight-decay term. The eigenvalues come from scipy's eigsh (ARPACK's restarted
Lanczos) on Hessian-vector products, stopped when every Ritz pair's residual is below --tol relative to
its eigenvalue; the output states the rule. Prints the numbers and writes them as JSON (default:
sharpness.json beside the checkpoint). The measures are analysis/flatness.py's.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root: analysis/, models/, data/

from analysis.flatness_report import STOPPING_RULE, load_checkpoint_and_data, measure_sharpness


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("path", type=Path, metavar="RUN_DIR_OR_CHECKPOINT")
    parser.add_argument("--num-examples", type=int, default=1024, help="size of the fixed training subset")
    parser.add_argument("--k", type=int, default=5, help="number of top Hessian eigenvalues")
    parser.add_argument("--rho", type=float, default=0.05, help="radius of the m-sharpness ball")
    parser.add_argument("--m", type=int, default=128, help="examples per m-sharpness chunk")
    parser.add_argument("--tol", type=float, default=1e-3, help="relative residual tolerance (eigsh)")
    parser.add_argument("--max-iter", type=int, default=100, help="ARPACK restarts at most (eigsh maxiter)")
    parser.add_argument("--ascent-steps", type=int, default=1, help="ascent steps for m-sharpness")
    parser.add_argument(
        "--batch-size", type=int, default=256, help="examples per Hessian-vector-product chunk"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the eigsh start vector")
    parser.add_argument("--data-root", default=None, help="dataset root (default: the run's dataset.root)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--out", type=Path, default=None, help="JSON file (default: sharpness.json by the run)"
    )
    args = parser.parse_args(argv)
    for name in ("num_examples", "k", "m", "max_iter", "ascent_steps", "batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.m > args.num_examples:
        parser.error(f"--m {args.m} is larger than --num-examples {args.num_examples}")

    model, batches, cfg, ckpt_path = load_checkpoint_and_data(
        args.path,
        num_examples=args.num_examples,
        batch_size=args.batch_size,
        data_root=args.data_root,
        device=args.device,
    )
    result = measure_sharpness(
        model,
        batches,
        k=args.k,
        rho=args.rho,
        m=args.m,
        tol=args.tol,
        max_iter=args.max_iter,
        seed=args.seed,
        ascent_steps=args.ascent_steps,
    )
    result = {
        "checkpoint": str(ckpt_path),
        "model": cfg["model"]["name"],
        "dataset": cfg["dataset"]["name"],
        "device": args.device,
        "subset": f"first {result['num_examples']} training examples, epoch-0 loader order, augment='none'",
        **result,
    }
    out = args.out or ckpt_path.parent / "sharpness.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")

    lam = ", ".join(f"{v:.4g}" for v in result["eigenvalues"])
    ratio = result["lambda_max_over_lambda_k"]
    print(
        f"{result['model']} on {result['dataset']}: {result['num_examples']} training examples, BN in eval()"
    )
    print(f"top-{args.k} Hessian eigenvalues: {lam}")
    print(f"lambda_max = {result['lambda_max']:.4g}")
    print(
        f"lambda_max / lambda_{args.k} = " + ("undefined (lambda_k = 0)" if ratio is None else f"{ratio:.4g}")
    )
    print(f"  ({STOPPING_RULE}; tol = {args.tol:g}, max_iter = {args.max_iter})")
    print(
        f"m-sharpness (rho = {args.rho:g}, m = {args.m}, {args.ascent_steps} ascent step(s), "
        f"{result['m_sharpness_chunks']} chunks) = {result['m_sharpness']:.4g}"
    )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
