"""Jobs and estimated GPU-hours of a sweep, before launching it.

Usage:
    python scripts/sweep_cost.py +sweep=table1
    python scripts/sweep_cost.py experiment=cifar10_wrn28_10_200ep_basic_sam '+sweep=[rho_grid,seeds5]'
    python scripts/sweep_cost.py 'experiment=glob(imagenet_*)' seed=0,1,2,3,4 [--tflops 100]

The arguments are the ones you would give ``python train.py -m``: the jobs are expanded exactly as
Hydra's basic sweeper does (the preset's ``hydra.sweeper.params`` plus comma lists / glob()), and each
distinct experiment is composed once to read its model, dataset, epochs and optimizer.

Estimate, per job: epochs x training images x FLOPs of one training example x passes, over an effective
throughput. FLOPs: the model's forward pass on one image at the dataset's size, counted by
``torch.utils.flop_counter`` on the meta device; a training step costs 3x the forward (forward +
backward), SAM twice that (two passes; the m-sharpness chunks add no FLOPs). Throughput: ``--tflops``,
default 100 TFLOP/s per GPU, an assumption (about a third of an A100's 312 TFLOP/s bf16 peak; measure
yours with benchmarks/bench_sam.py on the GPU and scale). Data loading, evaluation and checkpoints are not
counted.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root: trainer/, models/

import torch
from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from torch.utils.flop_counter import FlopCounterMode

import trainer.spec  # noqa: F401  (registers train.yaml's schema with Hydra)
from models import create_model

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
# Training images and image side per dataset (the official splits; SVHN with its extra images).
DATASETS = {
    "cifar10": (50_000, 32, 3, 10),
    "cifar100": (50_000, 32, 3, 100),
    "svhn": (604_388, 32, 3, 10),
    "fashion_mnist": (60_000, 28, 1, 10),
    "imagenet": (1_281_167, 224, 3, 1000),
    "digits": (1_437, 8, 1, 10),
}


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


def forward_flops(model_cfg: dict, dataset: str) -> float:
    _, side, chans, classes = DATASETS[dataset]
    kwargs = {k: v for k, v in model_cfg.items() if k not in ("name", "pretrained", "pretrained_file", "reset_head",
                                                              "freeze_bn_stats")}  # fmt: skip
    with torch.device("meta"), FlopCounterMode(display=False) as counter:
        create_model(model_cfg["name"], classes, in_chans=chans, **kwargs)(torch.empty(1, chans, side, side))
    return float(counter.get_total_flops())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("overrides", nargs="+", help="what you would pass to python train.py -m")
    parser.add_argument("--tflops", type=float, default=100.0, help="effective TFLOP/s per GPU (assumption)")
    args = parser.parse_args(argv)
    if args.tflops <= 0:
        parser.error(f"--tflops {args.tflops} must be > 0")
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        jobs = expand_jobs(args.overrides)
        cache: dict[tuple, tuple] = {}
        total_hours, by_model = 0.0, {}
        for job in jobs:
            key = tuple(o for o in job if not o.startswith("seed="))
            if key not in cache:
                cfg = compose("train", overrides=list(key))
                images = DATASETS[cfg.dataset.name][0]
                passes = 3 if cfg.optimizer.name == "sgd" or cfg.rho == 0 else 6
                flops = forward_flops(dict(cfg.model), cfg.dataset.name) * passes * images * cfg.epochs
                cache[key] = (cfg.model.name, flops / (args.tflops * 1e12) / 3600)
            model, hours = cache[key]
            total_hours += hours
            by_model[model] = by_model.get(model, 0.0) + hours
    print(f"{len(jobs)} jobs, {total_hours:,.1f} GPU-hours at {args.tflops:g} effective TFLOP/s per GPU")
    for model, hours in sorted(by_model.items(), key=lambda kv: -kv[1]):
        print(f"  {model}: {hours:,.1f} GPU-hours")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    sys.exit(main())
