"""Jobs and GPU-hours of a sweep, before launching it: measured images/s where a GPU has measured the
model, else an estimate that counts memory traffic, with the source printed beside every number.

Usage:
    python scripts/sweep_cost.py +sweep=table1
    python scripts/sweep_cost.py experiment=cifar10_wrn28_10_200ep_basic_sam '+sweep=[rho_grid,seeds5]'
    python scripts/sweep_cost.py 'experiment=glob(finetune/*)'
    python scripts/sweep_cost.py 'experiment=glob(imagenet_*)' seed=0,1,2,3,4 [--precision fp32] [--efficiency 0.4]

The arguments are the ones you would give ``python train.py -m``: the jobs are expanded exactly as
Hydra's basic sweeper does (the preset's ``hydra.sweeper.params`` plus comma lists / glob()), and each
distinct experiment is composed once to read its model, dataset (sizes from ``analysis.cost.DATASETS``:
no dataset files needed; ``dataset.image_size`` respected), epochs, batch, m and optimizer.

Per job: epochs x training images (x ``dataset.train_repeats``) / images per second. Images per second:
the row of ``benchmarks/throughput.yaml`` for the model, image size and precision when a GPU has measured
it (``benchmarks/bench_throughput.py``, run by ``benchmarks/gpu_check.sh``), else a per-kernel roofline
estimate on an A100 (``analysis/cost.py``: FLOPs, bytes moved and kernel launches of every operator of
the forward pass traced on the meta device, backward 2x, SAM two passes per chunk of m). The estimate's
FLOPs-only figure is printed beside it so the memory-traffic share shows. Data loading, evaluation and
checkpoints are not counted.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root: trainer/, models/, analysis/

from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser

import trainer.spec  # noqa: F401  (registers train.yaml's schema with Hydra)
from analysis.cost import A100, THROUGHPUT_FILE, fmt_hours, gpu_hours, job_from_config, load_rows, throughput

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def expand_jobs(overrides: list[str]) -> list[list[str]]:
    """The jobs `python train.py -m OVERRIDES` launches, each as its list of overrides."""
    parser = OverridesParser.create(config_loader=GlobalHydra.instance().config_loader())
    parsed = parser.parse_overrides(overrides)
    cli_sweeps = [o.input_line for o in parsed if o.is_sweep_override()]
    fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
    cfg = compose("train", overrides=fixed, return_hydra_config=True)
    preset = [f"{k}={v}" for k, v in (cfg.hydra.sweeper.params or {}).items()]
    on_cli = {o.split("=", 1)[0].lstrip("+") for o in cli_sweeps}  # the command line wins over a preset
    preset = [o for o in preset if o.split("=", 1)[0] not in on_cli]
    (jobs,) = BasicSweeper.split_arguments(parser.parse_overrides([*fixed, *preset, *cli_sweeps]), None)
    return [[o for o in job if not o.startswith("+sweep=")] for job in jobs]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("overrides", nargs="+", help="what you would pass to python train.py -m")
    parser.add_argument(
        "--precision", choices=("bf16", "fp16", "fp32"), help="default: the config's (auto = bf16)"
    )
    parser.add_argument(
        "--efficiency", type=float, default=A100.efficiency, help="estimate: fraction of peak"
    )
    parser.add_argument("--throughput-file", type=Path, default=THROUGHPUT_FILE, help="measured rows")
    parser.add_argument(
        "--no-measured", action="store_true", help="estimate every job, ignoring measured rows"
    )
    args = parser.parse_args(argv)
    if not 0 < args.efficiency <= 1:
        parser.error(f"--efficiency {args.efficiency} must be in (0, 1]")
    hw = dataclasses.replace(A100, efficiency=args.efficiency)
    rows = [] if args.no_measured else load_rows(args.throughput_file)
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        jobs = expand_jobs(args.overrides)
        by_overrides: dict[tuple, object] = {}
        for job in jobs:
            key = tuple(o for o in job if not o.startswith("seed="))
            if key not in by_overrides:
                by_overrides[key] = job_from_config(compose("train", overrides=list(key)), args.precision)
    if not jobs:
        print(
            "0 jobs (Hydra's glob() does not look into subfolders such as finetune/: list those experiments, "
            "e.g. experiment=finetune/cifar10_efficientnet_b7_sam,finetune/imagenet_efficientnet_b7_sam)"
        )
        return 0
    rates: dict = {}  # (model, side, precision, sam, batch, m) -> Throughput
    groups: dict = {}  # the printed line -> [jobs, hours, flops-only hours]
    total = flops_total = 0.0
    measured_jobs = 0
    for job in jobs:
        spec = by_overrides[tuple(o for o in job if not o.startswith("seed="))]
        rk = (
            spec.model,
            spec.model_cfg,
            spec.classes,
            spec.side,
            spec.precision,
            spec.sam,
            spec.batch_size,
            spec.m,
        )
        if rk not in rates:
            rates[rk] = throughput(spec, rows, hw)
        tp = rates[rk]
        hours = gpu_hours(spec, tp.images_per_s)
        flops_hours = gpu_hours(spec, tp.flops_only_images_per_s) if not tp.measured else 0.0
        total, flops_total, measured_jobs = (
            total + hours,
            flops_total + flops_hours,
            measured_jobs + tp.measured,
        )
        opt = "SAM" if spec.sam else "SGD"
        line = (
            f"{spec.model} {spec.side}px {spec.precision} {opt} (batch {spec.batch_size}, m {spec.m}): "
            f"{tp.images_per_s:,.0f} img/s"
        )
        if not tp.measured:
            line += f" (FLOPs alone: {tp.flops_only_images_per_s:,.0f})"
        line = (line, tp.source)
        g = groups.setdefault(line, [0, 0.0])
        g[0], g[1] = g[0] + 1, g[1] + hours
    print(
        f"{len(jobs)} jobs, {fmt_hours(total)} GPU-hours ({measured_jobs} measured, {len(jobs) - measured_jobs} "
        f"estimated; FLOPs alone would give the estimated ones {fmt_hours(flops_total)})"
    )
    for (line, source), (n, hours) in sorted(groups.items(), key=lambda kv: -kv[1][1]):
        print(f"  {fmt_hours(hours)} GPU-hours, {n} jobs: {line}  [{source}]")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    sys.exit(main())
