"""Training throughput of any experiment's model: images/s of a SAM step and of an SGD step, optionally
written as a row of benchmarks/throughput.yaml (which scripts/sweep_cost.py uses in place of its estimate).

    python benchmarks/bench_throughput.py --experiment cifar10_resnet32_noise20_sam --write   # on a GPU
    python benchmarks/bench_throughput.py --experiment finetune/cifar10_efficientnet_b7_sam --batch-size 64
    python benchmarks/bench_throughput.py --experiment cifar10_resnet32_noise20_sam --device cpu \\
        --batch-size 8 --m 4 --steps 1 --warmup 1 --write /tmp/throughput.yaml                 # dry run

The experiment gives the model (as its config names it, architecture keys included; no pretrained
weights are loaded: speed does not depend on them), the image size (``dataset.image_size`` or the
dataset's own), the class count, the batch and m; ``--batch-size``/``--m``/``--image-size`` override
them (the paper's batch may not fit one GPU: a smaller batch with the same m runs the same chunks). The
step is the trainer's (``select_step``: chunks of m, L2 decay, clipping at the config's grad_clip) on a
fixed random batch already on the device, so the figure is the model's and the optimizer's, not the
data loader's. SAM and SGD rounds are interleaved; the median step time of each gives images/s.
``--write [FILE]`` merges the row (model, image_size, precision, batch_size, m, gpu identify it) into
FILE (default benchmarks/throughput.yaml) with the GPU, date, commit and this command. The last line
printed is the row as JSON.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from analysis.cost import THROUGHPUT_FILE, git_commit, job_from_config, merge_row, model_kwargs, today  # noqa: E402
from models import create_model  # noqa: E402
from sam import SAM, StepOptions, resolve_precision, select_step  # noqa: E402


def compose_experiment(name: str, overrides: list[str]):
    from hydra import compose, initialize_config_dir

    import trainer.spec  # noqa: F401  (registers train.yaml's schema)

    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        return compose("train", overrides=[f"experiment={name}", *overrides])


def measure(args: argparse.Namespace, argv: list[str]) -> dict:
    cfg = compose_experiment(args.experiment, args.override)
    job = job_from_config(cfg, args.precision)
    side = args.image_size or job.side
    batch = args.batch_size or job.batch_size
    m = args.m if args.m is not None else job.m
    if m is not None and m >= batch:
        m = None
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = create_model(job.model, job.classes, in_chans=job.chans, **model_kwargs(dict(cfg.model))).to(
        device
    )
    x = torch.randn(batch, job.chans, side, side, device=device)
    y = torch.randint(0, job.classes, (batch,), device=device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opts = StepOptions(
        nn.CrossEntropyLoss(),
        l2_weight_decay=float(cfg.weight_decay),
        grad_clip=cfg.grad_clip,
        precision=resolve_precision(job.precision, device),
    )
    sgd = dict(lr=1e-3, momentum=0.9, nesterov=True)
    optimizers = {
        "sam": SAM(model.parameters(), torch.optim.SGD, rho=0.05, **sgd),
        "sgd": torch.optim.SGD(model.parameters(), **sgd),
    }
    steps = {k: select_step(o, m, batch) for k, o in optimizers.items()}

    def run(kind: str) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t = time.perf_counter()
        steps[kind](model, optimizers[kind], x, y, opts)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - t

    for _ in range(args.warmup):
        for kind in steps:
            run(kind)
    times: dict[str, list[float]] = {k: [] for k in steps}
    for _ in range(args.steps):  # interleaved: drift hits both alike
        for kind in steps:
            times[kind].append(run(kind))
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return {
        "model": job.model,
        "image_size": side,
        "precision": job.precision,
        "batch_size": batch,
        "m": m,
        "sam_images_per_s": round(batch / statistics.median(times["sam"]), 1),
        "sgd_images_per_s": round(batch / statistics.median(times["sgd"]), 1),
        "gpu": gpu,
        "date": today(),
        "commit": git_commit(),
        "command": "python benchmarks/bench_throughput.py " + shlex.join(argv),
        "experiment": args.experiment,
        "channels_last": args.channels_last,
        "steps": args.steps,
        "torch": str(torch.__version__),
    }


def main(argv: list[str] | None = None) -> list[dict]:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--experiment",
        action="append",
        required=True,
        help="an experiment config, e.g. cifar10_resnet32_noise20_sam (repeatable: one row each, one process)",
    )
    p.add_argument("--override", action="append", default=[], help="a config override (repeatable)")
    p.add_argument("--device", default="cuda")
    p.add_argument(
        "--precision", choices=("bf16", "fp16", "fp32"), help="default: the config's (auto = bf16)"
    )
    p.add_argument("--batch-size", type=int, help="default: the experiment's")
    p.add_argument("--m", type=int, help="default: the experiment's (0 or >= batch: one chunk)")
    p.add_argument("--image-size", type=int, help="default: the experiment's")
    p.add_argument("--steps", type=int, default=10, help="timed steps of each optimizer")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--write", nargs="?", const=str(THROUGHPUT_FILE), help="merge the row into this file")
    args = p.parse_args(argv)
    if args.m == 0:
        args.m = None
    rows = []
    for experiment in args.experiment:  # each row records the command that measures it alone
        one = argparse.Namespace(**{**vars(args), "experiment": experiment})
        row = measure(one, [*_without_experiments(argv), "--experiment", experiment])
        print(
            f"{row['model']} {row['image_size']}px {row['precision']} batch {row['batch_size']} m {row['m']} "
            f"on {row['gpu']}: SAM {row['sam_images_per_s']:,.1f} img/s, SGD {row['sgd_images_per_s']:,.1f} img/s"
        )
        if args.write:
            merge_row(row, Path(args.write))
            print(f"written to {args.write}")
        print(json.dumps(row))
        rows.append(row)
    return rows


def _without_experiments(argv: list[str]) -> list[str]:
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--experiment":
            skip = True
        elif not arg.startswith("--experiment="):
            out.append(arg)
    return out


if __name__ == "__main__":
    main()
