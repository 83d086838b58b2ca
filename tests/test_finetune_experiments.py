"""configs/experiment/finetune/: one file per runnable Table 3 cell (EfficientNet-b7), App. C.2's settings.

The expected values are the paper's (App. C.2 and Table 3, typed here) and the datasets' published
training-set sizes, not the generator's constants.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from models import create_model
from trainer.spec import validate  # also registers the config schema train.yaml starts from

REPO = Path(__file__).resolve().parents[1]
FINETUNE = REPO / "configs" / "experiment" / "finetune"
# published train (+ validation) sizes of the sets as we read them; Birdsnap's is its paper's count
TRAIN_SIZES = {
    "cifar10": 50000,
    "cifar100": 50000,
    "flowers102": 2040,
    "oxford_pets": 3680,
    "stanford_cars": 8144,
    "fgvc_aircraft": 6667,
    "food101": 75750,
    "birdsnap": 47386,
}
PAPER_ERROR = {  # Table 3, EfficientNet-b7: (SAM, SGD)
    "fgvc_aircraft": (6.80, 8.15),
    "flowers102": (0.63, 1.16),
    "oxford_pets": (3.97, 4.24),
    "stanford_cars": (5.18, 5.94),
    "cifar10": (0.88, 0.95),
    "cifar100": (7.44, 7.68),
    "birdsnap": (13.64, 14.30),
    "food101": (7.02, 7.17),
    "imagenet": (15.14, 15.3),
}


@pytest.fixture(scope="module")
def cfgs():
    names = sorted(p.stem for p in FINETUNE.glob("*.yaml"))
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        return {n: compose("train", overrides=[f"experiment=finetune/{n}"]) for n in names}


@pytest.mark.slow  # composes 18 configs and imports train.py: ~25 s on busy cores
def test_one_file_per_b7_cell_with_app_c2_settings(cfgs):
    assert len(cfgs) == 18
    for name, cfg in cfgs.items():
        dataset = cfg.dataset.name
        sam = name.endswith("_sam")
        assert name == f"{dataset}_efficientnet_b7_{'sam' if sam else 'sgd'}"
        validate(cfg, world_size=8)
        assert cfg.model.name == "efficientnet_b7" and cfg.model.pretrained == "tf_efficientnet_b7.ra_in1k"
        assert cfg.model.freeze_bn_stats is True and cfg.dataset.image_size == 600
        assert (cfg.batch_size, cfg.weight_decay, cfg.optimizer.momentum) == (1024, 1e-5, 0.9)
        assert cfg.schedule.name == "cosine"
        assert cfg.rho == (0.05 if sam else 0.0) and cfg.optimizer.name == ("sam" if sam else "sgd")
        header = (FINETUNE / f"{name}.yaml").read_text()
        assert f"{PAPER_ERROR[dataset][0 if sam else 1]}" in header.split("\n")[2], name
        assert cfg.dataset.preprocessing == "official", name  # the SAM code's pipeline (and resize)
        if dataset == "imagenet":
            assert (cfg.epochs, cfg.lr, cfg.model.reset_head) == (10, 0.1, "auto")
            # the official README's command: --gradient_clipping 1.0 --label_smoothing 0.1
            assert (cfg.grad_clip, cfg.label_smoothing, cfg.augment) == (1.0, 0.1, "basic"), name
            continue
        assert (cfg.grad_clip, cfg.label_smoothing) == (5.0, 0.0), name  # the code's flag defaults
        assert cfg.lr == 0.016 and cfg.augment == ("autoaugment" if dataset.startswith("cifar") else "none")
        steps = cfg.epochs * cfg.dataset.train_repeats * (TRAIN_SIZES[dataset] // 1024)
        assert abs(steps - 5000) <= 50, (name, steps)  # "5k steps"


def test_files_are_what_the_generator_writes(tmp_path):
    src = REPO / "results" / "paper" / "transcription" / "tables.yaml"  # committed: runs from a fresh clone
    cmd = [
        sys.executable,
        "results/paper/make_finetune_tables.py",
        "--src",
        str(src),
        "--out-dir",
        str(tmp_path / "paper"),
        "--experiments",
        str(tmp_path / "exp"),
    ]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for path in FINETUNE.glob("*.yaml"):
        assert (tmp_path / "exp" / path.name).read_text() == path.read_text(), path.name
    for name in ("table3_finetuning.yaml", "table10_finetuning_rho.yaml"):
        assert (tmp_path / "paper" / name).read_text() == (REPO / "results" / "paper" / name).read_text()


@pytest.mark.slow  # builds b7 (on meta): ~10 s on busy cores
def test_efficientnet_b7_is_the_papers_size_on_meta():
    with torch.device("meta"):
        model = create_model("efficientnet_b7", 1000)
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(
        66.3e6, rel=0.01
    )  # EfficientNet paper: 66M


@pytest.mark.slow  # a 66M-parameter forward/backward on CPU
def test_efficientnet_b7_trains_at_32px_with_finite_gradients():
    torch.manual_seed(0)
    model = create_model("efficientnet_b7", 10)
    model.train()
    out = model(torch.randn(4, 3, 32, 32))
    assert out.shape == (4, 10)
    out.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
