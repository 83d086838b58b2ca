"""configs/experiment/: every paper-cell file composes with train.yaml and holds the paper's values.

The cell files are short and hand-written: each composes a base file per table (experiment/table/) with
its own values, and each SGD file inherits its SAM twin. The expected values are literals transcribed
here from the paper (Table 6, Sec. 3.1, Sec. 3.3; see shared/paper/README.md) and the cells in
results/paper/, so a slip in a file fails here. Every file is composed once with Hydra's compose API (the
same composition `python train.py experiment=NAME` does), passed to the trainer's `validate`, and its model built
on the meta device.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from analysis.paper_tables import find_paper_cell, load_paper_cells
from data.augment import make_spec
from data.build import DATASET_AUGMENTS, DATASETS, LOADERS
from models import create_model, list_models
from models.pretrained import split_finetune_options
from sam.weight_decay import WEIGHT_DECAY_MODES
from trainer.spec import SCHEDULES, optimizer_names, validate

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
EXPERIMENTS = CONFIGS / "experiment"
HANDWRITTEN = {
    "quickstart",
    "digits_pretrain",
    "digits_finetune",
}  # experiment files that are not paper cells

# Table 1 row groups: file-name token -> (registry model, configs/model file, epochs we run).
# WRN epochs are the paper's (Table 1); the others are prior work's 1800 (the paper is silent).
T1_MODELS = {
    "wrn28_10_200ep": ("wrn28_10", "wrn", 200),
    "wrn28_10_1800ep": ("wrn28_10", "wrn", 1800),
    "shake_shake_26_2x96d": ("shake_shake_26_2x96d", "shake_shake", 1800),
    "pyramidnet272": ("pyramidnet272", "pyramidnet", 1800),
    "pyramidnet272_shakedrop": ("pyramidnet272_shakedrop", "pyramidnet_shakedrop", 1800),
}
# Paper Table 6 (App. C.1): (lr, weight decay, rho) per row group and dataset.
TABLE6 = {
    "wrn28_10_200ep": {"cifar10": (0.1, 5e-4, 0.05), "cifar100": (0.1, 5e-4, 0.1)},
    "wrn28_10_1800ep": {"cifar10": (0.05, 1e-3, 0.05), "cifar100": (0.05, 1e-3, 0.1)},
    "shake_shake_26_2x96d": {"cifar10": (0.02, 1e-3, 0.02), "cifar100": (0.02, 1e-3, 0.05)},
    "pyramidnet272": {"cifar10": (0.05, 5e-4, 0.05), "cifar100": (0.05, 5e-4, 0.2)},
    "pyramidnet272_shakedrop": {"cifar10": (0.02, 5e-4, 0.05), "cifar100": (0.05, 5e-4, 0.05)},
}
AUGMENTS = ("basic", "cutout", "autoaugment")
T1_NAMES = {
    f"{ds}_{tok}_{aug}_{opt}"
    for ds in ("cifar10", "cifar100")
    for tok in T1_MODELS
    for aug in AUGMENTS
    for opt in ("sam", "sgd")
}
T1_2N_NAMES = {f"{n}_2n" for n in T1_NAMES if n.endswith("_sgd")}  # the 2N half of each SGD baseline
T2_NAMES = {
    f"imagenet_{model}_{ep}ep_{opt}"
    for model in ("resnet50", "resnet101", "resnet152")
    for ep in (100, 200, 400)
    for opt in ("sam", "sgd")
}
T4_NAMES = {f"cifar10_resnet32_noise{pct}_{opt}" for pct in (20, 40, 60, 80) for opt in ("sam", "sgd")}
T5_NAMES = {
    f"{ds}_{model}_{aug}_{opt}"
    for ds in ("svhn", "fashion_mnist")
    for model in ("wrn28_10", "shake_shake_26_2x96d")
    for aug in ("basic", "autoaugment")  # the paper's row labels
    for opt in ("sam", "sgd")
}
T5_2N_NAMES = {f"{n}_2n" for n in T5_NAMES if n.endswith("_sgd")}  # Sec. 3.1's N/2N rule, as Table 1
# Paper Table 7 (App. C.1): (lr, weight decay, rho) per dataset and model.
TABLE7 = {
    ("svhn", "wrn28_10"): (0.01, 5e-4, 0.01),
    ("svhn", "shake_shake_26_2x96d"): (0.01, 5e-4, 0.01),
    ("fashion_mnist", "wrn28_10"): (0.1, 5e-4, 0.05),
    ("fashion_mnist", "shake_shake_26_2x96d"): (0.1, 5e-4, 0.02),
}
NUM_CLASSES = {
    "cifar10": 10,
    "cifar100": 100,
    "imagenet": 1000,
    "digits": 10,
    "svhn": 10,
    "fashion_mnist": 10,
}
IN_CHANS = {"fashion_mnist": 1, "digits": 1}
# Published parameter counts of the paper's models (WRN, Shake-Shake, PyramidNet, He et al., torchvision).
PAPER_PARAMS = {
    "wrn28_10": 36.5e6,
    "shake_shake_26_2x96d": 26.2e6,
    "pyramidnet272": 26.0e6,
    "pyramidnet272_shakedrop": 26.0e6,
    "resnet32": 0.46e6,
    "resnet50": 25.6e6,
    "resnet101": 44.5e6,
    "resnet152": 60.2e6,
}


def experiment_names() -> list[str]:
    return sorted(p.stem for p in EXPERIMENTS.glob("*.yaml"))


# Composing is ~0.1-0.4 s a file, so the fast suite composes a sample (every table base, every model
# family, each kind of file: SAM, SGD, 2N) and the full suite (-m slow) every file, through the same tests.
SAMPLE = {
    "quickstart",
    "cifar10_wrn28_10_200ep_autoaugment_sam",
    "cifar10_wrn28_10_200ep_autoaugment_sgd",
    "cifar10_wrn28_10_200ep_autoaugment_sgd_2n",
    "cifar100_shake_shake_26_2x96d_cutout_sam",
    "cifar100_pyramidnet272_shakedrop_basic_sam",
    "cifar10_pyramidnet272_basic_sgd",
    "imagenet_resnet50_100ep_sam",
    "imagenet_resnet152_400ep_sgd",
    "cifar10_resnet32_noise80_sam",
    "cifar10_resnet32_noise80_sgd",
    "svhn_wrn28_10_autoaugment_sam",
    "svhn_wrn28_10_autoaugment_sgd",
    "svhn_wrn28_10_autoaugment_sgd_2n",
    "fashion_mnist_shake_shake_26_2x96d_autoaugment_sam",
}


@pytest.fixture(scope="module", params=["sample", pytest.param("all", marks=pytest.mark.slow)])
def cfgs(request) -> dict[str, DictConfig]:
    """Experiment files composed once with train.yaml, as `python train.py experiment=NAME` does."""
    names = sorted(SAMPLE) if request.param == "sample" else experiment_names()
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return {name: compose("train", overrides=[f"experiment={name}"]) for name in names}


def test_the_sample_is_made_of_existing_files():
    assert set(experiment_names()) >= SAMPLE


def flat(cfg: DictConfig) -> dict:
    out = {}

    def walk(node, prefix):
        for key, value in node.items():
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}.")
            else:
                out[f"{prefix}{key}"] = value

    walk(OmegaConf.to_container(cfg, resolve=False), "")
    return out


def official_code_defaults(cfg: DictConfig) -> None:
    """The settings every paper cell takes from the official code (docs/design.md §4)."""
    assert cfg.optimizer.momentum == 0.9 and cfg.optimizer.nesterov is True
    assert cfg.optimizer.weight_decay_mode == "l2_loss" and cfg.optimizer.perturbation == "per_replica"
    assert cfg.schedule.name == "cosine" and cfg.schedule.warmup_epochs == 0
    assert cfg.grad_clip == 5.0


# ---------------------------------------------------------------------------------------------- files
def test_exactly_one_file_per_paper_cell():
    names = set(experiment_names())
    assert len(T1_NAMES) == 60 and len(T1_2N_NAMES) == 30 and len(T2_NAMES) == 18 and len(T4_NAMES) == 8
    assert len(T5_NAMES) == 16 and len(T5_2N_NAMES) == 8
    assert names - HANDWRITTEN == T1_NAMES | T1_2N_NAMES | T2_NAMES | T4_NAMES | T5_NAMES | T5_2N_NAMES
    assert len([n for n in names if n in T1_NAMES]) == 60
    assert len([n for n in names if n in T2_NAMES]) == 18


def test_every_sgd_file_is_its_sam_twin_with_sgd_and_rho_0():
    """The file itself, not only its composition: the SGD baseline inherits everything from its twin."""
    sgd_names = [n for n in experiment_names() if n.endswith("_sgd")]
    assert len(sgd_names) == 30 + 9 + 4 + 8
    for name in sgd_names:
        text = yaml.safe_load((EXPERIMENTS / f"{name}.yaml").read_text())
        twin = name.removesuffix("_sgd") + "_sam"
        assert text == {"defaults": [twin, {"override /optimizer": "sgd"}], "rho": 0.0}, name


def test_every_2n_file_is_its_sgd_file_at_twice_the_epochs(cfgs):
    """Sec. 3.1: each Table 1 and 5 SGD baseline is the better of N and 2N epochs; the 2N file differs in
    epochs only (Table 5's: N = 200, so 400)."""
    for name in (T1_2N_NAMES | T5_2N_NAMES) & cfgs.keys():
        sgd = name.removesuffix("_2n")
        assert yaml.safe_load((EXPERIMENTS / f"{name}.yaml").read_text()) == {
            "defaults": [sgd],
            "epochs": 2 * cfgs[sgd].epochs,
        }, name
        doubled, single = flat(cfgs[name]), flat(cfgs[sgd])
        assert {k for k in single if single[k] != doubled[k]} == {"epochs"}, name
        assert doubled["epochs"] == 2 * single["epochs"] and single["epochs"] in (200, 1800), name


def test_every_sam_file_composes_its_tables_base():
    bases = {"cifar": "table/table1_cifar", "imagenet": "table/table2_imagenet"}
    for name in experiment_names():
        if not name.endswith("_sam"):
            continue
        if name.startswith(("svhn_", "fashion_mnist_")):
            base = "table/table5_svhn_fashion_mnist"
        else:
            base = "table/table4_label_noise" if "_noise" in name else bases[name.split("_")[0].rstrip("01")]
        defaults = yaml.safe_load((EXPERIMENTS / f"{name}.yaml").read_text())["defaults"]
        assert defaults[0] == base, name


def test_every_file_is_global_and_its_header_cites_the_papers_number(cfgs):
    cells = load_paper_cells(["table1", "table2", "table4", "table5"])
    for name in set(cfgs) - HANDWRITTEN - T1_2N_NAMES - T5_2N_NAMES:
        lines = (EXPERIMENTS / f"{name}.yaml").read_text().splitlines()
        assert lines[0] == "# @package _global_", name
        cfg = cfgs[name]
        cell = find_paper_cell(
            cells,
            model=cfg.model.name,
            dataset=cfg.dataset.name,
            augment=cfg.augment,
            epochs=cfg.epochs,
            optimizer="sam" if cfg.rho > 0 else "sgd",
            label_noise=cfg.label_noise,
        )
        assert cell is not None, name
        table = {"table1": "1", "table2": "2", "table4": "4", "table5": "5"}[cell["table"]]
        header = " ".join(line.removeprefix("#").strip() for line in lines if line.startswith("#"))
        assert lines[1].startswith(f"# Table {table}: "), name
        if table == "4":
            assert f"{cell['test_accuracy']} % test accuracy" in header, name
        elif table == "5":
            assert f"{cell['error']} ± {cell['error_pm']} % test error" in header, name
        else:
            bound = "<" if cell["error_pm_is_upper_bound"] else ""
            assert f"{cell['error']:.1f} ± {bound}{cell['error_pm']}" in header, name
        if table == "2":
            assert f"{cell['error_top5']:.2f} ± {cell['error_top5_pm']}" in header, name


# ---------------------------------------------------------------------------------------------- values
def test_table1_values_are_table6_and_the_papers_setup(cfgs):
    cells = load_paper_cells(["table1"])
    for name in T1_NAMES & cfgs.keys():
        cfg = cfgs[name]
        dataset, rest = name.split("_", 1)
        token = next(t for t in sorted(T1_MODELS, key=len, reverse=True) if rest.startswith(t + "_"))
        augment, optimizer = rest[len(token) + 1 :].rsplit("_", 1)
        model, model_config, epochs = T1_MODELS[token]
        lr, wd, rho = TABLE6[token][dataset]
        assert cfg.model.name == model and cfg.dataset.name == dataset and cfg.augment == augment, name
        assert cfg.lr == lr and cfg.weight_decay == wd and cfg.epochs == epochs, name
        assert cfg.optimizer.name == optimizer and cfg.rho == (rho if optimizer == "sam" else 0.0), name
        assert cfg.batch_size == 256 and cfg.m == 32, name  # App. C.1; 256 / 8 GPUs
        assert cfg.label_noise == 0.0 and cfg.label_smoothing == 0.0, name
        if augment == "cutout":
            assert cfg.dataset.cutout_size == 16, name
        assert cfg.dataset.cutout_mode == "per_batch", name  # the official batch-level cutout
        assert cfg.dataset.autoaugment_policy == "official" and cfg.dataset.autoaugment_cutout is False, name
        assert cfg.dataset.autoaugment_crop_flip is True, name  # official 'autoaugment': policy + crop/flip
        if model == "wrn28_10":
            assert cfg.model.shortcut == "avgpool_pad", name  # the official WRN
        official_code_defaults(cfg)
        sam_file = (EXPERIMENTS / f"{name.removesuffix('_sgd').removesuffix('_sam')}_sam.yaml").read_text()
        assert re.search(rf"^  - override /model: {model_config}$", sam_file, re.MULTILINE), name
        # ...and the transcription in results/paper agrees with the literals above.
        (cell,) = [
            c
            for c in cells
            if (c["model"], c["dataset"], c["augment"], c["optimizer"])
            == (model, dataset, augment, optimizer)
            and c["epochs"] in (None, epochs)
        ]
        assert (cell["lr"], cell["weight_decay"], cell["batch_size"]) == (lr, wd, 256), name
        assert cell["rho"] == (rho if optimizer == "sam" else None), name


def test_sgd_file_differs_from_its_sam_twin_only_in_optimizer_and_rho(cfgs):
    pairs = [(n, n[: -len("sam")] + "sgd") for n in cfgs if n.endswith("_sam") and n[:-3] + "sgd" in cfgs]
    assert pairs
    for sam_name, sgd_name in pairs:
        sam, sgd = flat(cfgs[sam_name]), flat(cfgs[sgd_name])
        assert sam.keys() == sgd.keys()
        assert {k for k in sam if sam[k] != sgd[k]} == {"optimizer.name", "rho"}, sam_name
        assert (sam["optimizer.name"], sgd["optimizer.name"], sgd["rho"]) == ("sam", "sgd", 0.0)
        assert sam["rho"] > 0


def test_table2_values_are_the_papers_imagenet_setup(cfgs):
    for name in T2_NAMES & cfgs.keys():
        cfg = cfgs[name]
        _, model, epochs, optimizer = name.split("_")
        assert cfg.model.name == model and cfg.dataset.name == "imagenet" and cfg.epochs == int(epochs[:-2])
        # Sec. 3.1 / App. C.1: batch 4096, lr 1.0 cosine, wd 1e-4, label smoothing 0.1, rho 0.05.
        assert (cfg.batch_size, cfg.lr, cfg.weight_decay, cfg.label_smoothing) == (4096, 1.0, 1e-4, 0.1), name
        assert cfg.optimizer.name == optimizer and cfg.rho == (0.05 if optimizer == "sam" else 0.0), name
        assert cfg.m == 128 and cfg.augment == "basic" and cfg.label_noise == 0.0, name  # 4096 / 32 cores
        # The official Flax ResNet and input pipeline (issue 11): init, stem, preprocessing.
        assert (cfg.model.init, cfg.model.stem, cfg.dataset.preprocessing) == ("official",) * 3, name
        official_code_defaults(cfg)


def test_table4_values_are_the_papers_and_our_stated_choices(cfgs):
    for name in T4_NAMES & cfgs.keys():
        cfg = cfgs[name]
        noise, optimizer = int(name.split("_")[2][len("noise") :]) / 100, name.rsplit("_", 1)[1]
        assert cfg.model.name == "resnet32" and cfg.dataset.name == "cifar10" and cfg.epochs == 200
        assert cfg.label_noise == noise and cfg.optimizer.name == optimizer
        assert cfg.label_noise_protocol == "uniform", name  # Jiang et al. (2019), whom Sec. 3.3 follows
        paper_rho = 0.05 if noise == 0.8 else 0.1  # Sec. 3.3
        assert cfg.rho == (paper_rho if optimizer == "sam" else 0.0), name
        # Not in the paper: the official code's flag defaults, and m = 128 / 8 GPUs.
        assert (cfg.batch_size, cfg.lr, cfg.weight_decay, cfg.augment, cfg.m) == (128, 0.1, 1e-3, "basic", 16)
        official_code_defaults(cfg)
    text = (EXPERIMENTS / "table" / "table4_label_noise.yaml").read_text()
    assert "NOT in the paper" in text and "OUR choice" in text


def test_table5_values_are_table7_and_the_papers_setup(cfgs):
    for name in T5_NAMES & cfgs.keys():
        cfg = cfgs[name]
        dataset = "svhn" if name.startswith("svhn_") else "fashion_mnist"
        model = "wrn28_10" if "_wrn28_10_" in name else "shake_shake_26_2x96d"
        row, optimizer = name.rsplit("_", 2)[-2:]
        lr, wd, rho = TABLE7[(dataset, model)]
        assert (cfg.dataset.name, cfg.model.name, cfg.optimizer.name) == (dataset, model, optimizer), name
        assert (cfg.lr, cfg.weight_decay, cfg.rho) == (lr, wd, rho if optimizer == "sam" else 0.0), name
        assert (cfg.batch_size, cfg.m, cfg.epochs, cfg.label_noise) == (256, 32, 200, 0.0), name
        # App. B.1: SVHN's "auto augment" = its AutoAugment policy + cutout; Fashion-MNIST's = cutout only.
        expected = {"basic": "basic", "autoaugment": "autoaugment" if dataset == "svhn" else "cutout"}[row]
        assert cfg.augment == expected, name
        if dataset == "svhn":
            assert cfg.dataset.svhn_extra is True and cfg.dataset.autoaugment_cutout is True, name
            assert cfg.dataset.autoaugment_crop_flip is False, name  # the official aa-only mode
        assert cfg.dataset.cutout_size == 16 and cfg.dataset.autoaugment_policy == "official", name
        assert cfg.dataset.cutout_mode == "per_batch", name
        if model == "wrn28_10":
            assert cfg.model.shortcut == "avgpool_pad", name
        official_code_defaults(cfg)


# ---------------------------------------------------------------------------------------------- usable
@pytest.mark.parametrize("world_size", [1, 2, 4, 8])
def test_every_experiment_validates_with_valid_choices(cfgs, world_size):
    for name, cfg in cfgs.items():
        validate(cfg, world_size=world_size)  # ValueError on anything a run would reject
        assert cfg.optimizer.name in optimizer_names() and cfg.schedule.name in SCHEDULES, name
        assert cfg.optimizer.weight_decay_mode in WEIGHT_DECAY_MODES, name
        assert cfg.dataset.name in DATASETS and cfg.dataset.loader in LOADERS, name
        assert cfg.augment in DATASET_AUGMENTS[cfg.dataset.name], name
        assert cfg.model.name in list_models(), name
        make_spec(
            cfg.augment, pad=4, hflip=True, cutout_size=cfg.dataset.cutout_size,
            cutout_mode=cfg.dataset.cutout_mode, autoaugment_crop_flip=cfg.dataset.autoaugment_crop_flip,
        )  # fmt: skip


def test_every_model_config_builds_the_papers_model_on_meta(cfgs):
    built = {}
    for name, cfg in cfgs.items():
        model_cfg = {k: v for k, v in OmegaConf.to_container(cfg.model).items() if k != "name"}
        kwargs, _ = split_finetune_options(model_cfg)  # the architecture only, as trainer/build.py does
        key = (cfg.model.name, NUM_CLASSES[cfg.dataset.name], tuple(sorted(kwargs.items())))
        if key in built:
            continue
        with torch.device("meta"):
            chans = IN_CHANS.get(cfg.dataset.name, 3)
            model = create_model(cfg.model.name, NUM_CLASSES[cfg.dataset.name], in_chans=chans, **kwargs)
        built[key] = sum(p.numel() for p in model.parameters())
        if cfg.model.name in PAPER_PARAMS:  # the quickstart's tiny WRN has no paper size
            assert abs(built[key] / PAPER_PARAMS[cfg.model.name] - 1) < 0.02, (name, built[key])
    models_in_sample = {cfg.model.name for cfg in cfgs.values()}
    assert {k[0] for k in built} >= set(PAPER_PARAMS) & models_in_sample


def test_command_line_overrides_win_over_the_experiment():
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=["experiment=cifar10_wrn28_10_200ep_basic_sam", "seed=3", "rho=0.1", "epochs=400"],
        )
        sgd = compose(
            "train", overrides=["experiment=imagenet_resnet50_100ep_sgd", "batch_size=1024", "lr=0.25"]
        )
    assert (cfg.seed, cfg.rho, cfg.epochs, cfg.lr, cfg.m) == (3, 0.1, 400, 0.1, 32)
    assert (sgd.batch_size, sgd.lr, sgd.m, sgd.optimizer.name) == (1024, 0.25, 128, "sgd")
    validate(sgd, world_size=8)  # 1024 / 8 = 128 = m


# ---------------------------------------------------------------------------------------------- sweeps
# Every selection the README documents, and the files it must pick (computed here from the grids).
GLOBS = {
    "glob(cifar*,exclude=*_noise*)": T1_NAMES | T1_2N_NAMES,
    "glob(cifar*,exclude=[*_noise*,*_2n])": T1_NAMES,
    "glob(cifar*_2n)": T1_2N_NAMES,
    "glob(cifar*_sam,exclude=*_noise*)": {n for n in T1_NAMES if n.endswith("_sam")},
    "glob(cifar*_sgd,exclude=*_noise*)": {n for n in T1_NAMES if n.endswith("_sgd")},
    "glob(cifar10_*,exclude=*_noise*)": {n for n in T1_NAMES | T1_2N_NAMES if n.startswith("cifar10_")},
    "glob(*_wrn28_10_200ep_*)": {n for n in T1_NAMES | T1_2N_NAMES if "_wrn28_10_200ep_" in n},
    "glob(imagenet_*)": T2_NAMES,
    "glob(*_noise*)": T4_NAMES,
    "glob(svhn_*)": {n for n in T5_NAMES | T5_2N_NAMES if n.startswith("svhn_")},
    "glob(fashion_mnist_*)": {n for n in T5_NAMES | T5_2N_NAMES if n.startswith("fashion_mnist_")},
    "glob([svhn_*,fashion_mnist_*])": T5_NAMES | T5_2N_NAMES,
    "glob([svhn_*,fashion_mnist_*],exclude=*_2n)": T5_NAMES,
}


def test_glob_sweeps_select_the_documented_files():
    readme = (EXPERIMENTS / "README.md").read_text()
    documented = set(re.findall(r"experiment=(glob\([^']*\))'", readme))
    assert documented == set(GLOBS), documented ^ set(GLOBS)
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        parser = OverridesParser.create(config_loader=GlobalHydra.instance().config_loader())
        for pattern, expected in GLOBS.items():
            overrides = parser.parse_overrides([f"experiment={pattern}", "seed=0,1,2,3,4"])
            (jobs,) = BasicSweeper.split_arguments(overrides, max_batch_size=None)  # what `-m` launches
            assert len(jobs) == 5 * len(expected), pattern
            picked = {job[0].removeprefix("experiment=") for job in jobs}
            assert picked == expected, (pattern, picked ^ expected)
    assert len(GLOBS["glob(cifar*,exclude=*_noise*)"]) == 90
    assert len(GLOBS["glob(cifar*_sam,exclude=*_noise*)"]) == 30
    assert len(GLOBS["glob(imagenet_*)"]) == 18 and len(GLOBS["glob(*_noise*)"]) == 8


# ---------------------------------------------------------------------------------------------- presets
def _preset_jobs(overrides: list[str]) -> list[list[str]]:
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
        assert cfg.hydra.mode.name == "MULTIRUN"  # the preset alone makes it a multirun (no -m needed)
        params = [f"{k}={v}" for k, v in cfg.hydra.sweeper.params.items()]
        parser = OverridesParser.create(config_loader=GlobalHydra.instance().config_loader())
        (jobs,) = BasicSweeper.split_arguments(parser.parse_overrides(params), max_batch_size=None)
    return jobs


def test_sweep_presets_launch_the_documented_jobs():
    # The paper's rho grid (Sec. 3.1) and five seeds, alone and together.
    rhos = {("rho=" + r) for r in ("0.01", "0.02", "0.05", "0.1", "0.2", "0.5")}
    assert {job[0] for job in _preset_jobs(["+sweep=rho_grid"])} == rhos
    assert {job[0] for job in _preset_jobs(["+sweep=seeds5"])} == {f"seed={s}" for s in range(5)}
    both = _preset_jobs(["experiment=cifar10_wrn28_10_200ep_basic_sam", "+sweep=[rho_grid,seeds5]"])
    assert len(both) == 30 and len({tuple(j) for j in both}) == 30
    # All of Table 1 as one multirun: 60 cells + 30 2N halves, five seeds each.
    table1 = _preset_jobs(["+sweep=table1"])
    assert len(table1) == 450
    assert {j[0].removeprefix("experiment=") for j in table1} == T1_NAMES | T1_2N_NAMES
    readme = (EXPERIMENTS / "README.md").read_text()
    assert "`+sweep=table1` | 450 |" in readme and "`+sweep=rho_grid` | 6 |" in readme
