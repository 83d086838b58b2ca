"""train.py's ``train`` in-process on configs composed by Hydra's compose API, as ``python train.py`` does.

The end-to-end promises (a killed run resumes exactly, DDP equals chunks, the user's command, bad command
lines) go through real subprocesses in test_reliability.py and test_train_cli.py; what composition and the
trainer compute is checked here, without paying ~6 s of imports per command.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from cli import compose_train
from fake_data import write_fake_cifar
from hydra import compose, initialize_config_dir
from torch.nn.modules.batchnorm import _BatchNorm

import train
from data import build_data
from models import create_model
from trainer.spec import validate

REPO = Path(__file__).resolve().parents[1]
SMALL = [
    "model=wrn_tiny",
    "model.widen_factor=1",
    "dataset=digits",
    "device=cpu",
    "logger=none",
    "epochs=1",
    "batch_size=32",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.eval_batch_size=128",
    "trainer.save_final_model=false",
]


@pytest.mark.parametrize(
    ("overrides", "examples_per_bn_batch"),
    [
        (["optimizer=sgd", "m=16"], 16),  # the SGD baseline in the paper's per-accelerator chunks
        (["optimizer=sgd", "m=null"], 32),
        (["rho=0", "m=8"], 8),  # SAM with rho = 0 is the SGD baseline, in chunks of m as well
        (["rho=0.05", "m=16"], 16),
    ],
)
def test_results_record_the_m_every_optimizer_ran_with(tmp_path, overrides, examples_per_bn_batch):
    """results.json's m is what BatchNorm saw in training: counted here by a hook on every BN forward."""
    cfg = compose_train([*SMALL, *overrides])
    seen: list[int] = []

    def count(module, args):
        if isinstance(module, _BatchNorm) and module.training:
            seen.append(args[0].shape[0])

    handle = torch.nn.modules.module.register_module_forward_pre_hook(count)
    try:
        results = train.train(cfg, tmp_path)
    finally:
        handle.remove()
    assert seen and set(seen) == {examples_per_bn_batch}
    assert results["m"] == examples_per_bn_batch
    assert json.loads((tmp_path / "results.json").read_text())["m"] == examples_per_bn_batch


def test_the_schema_types_values_and_validate_checks_ranges():
    cfg = compose_train(["rho=0", "trainer.checkpoint_interval_min=1"])
    assert isinstance(cfg.rho, float) and isinstance(cfg.trainer.checkpoint_interval_min, float)
    validate(cfg, world_size=8)
    with pytest.raises(ValueError, match=r"must divide the per-device batch 32 .*valid: null or one of"):
        validate(compose_train(["m=64"]), world_size=8)


@pytest.fixture(autouse=True)
def _restore_global_torch_state():
    """train() reseeds torch (and may switch on deterministic algorithms): undo it for the next test."""
    deterministic, rng = torch.are_deterministic_algorithms_enabled(), torch.get_rng_state()
    yield
    torch.use_deterministic_algorithms(deterministic)
    torch.set_rng_state(rng)


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cifar")
    write_fake_cifar(root, "cifar10", n_train=320, n_test=64)
    write_fake_cifar(root, "cifar100", n_train=320, n_test=64)
    return root


RESULT_KEYS = {
    "model",
    "dataset",
    "augment",
    "optimizer",
    "rho",
    "m",
    "seed",
    "epochs",
    "test_error",
    "test_error_top5",
    "train_loss",
    "wall_time_s",
    "images_per_s",
    "git_commit",
    "torch_version",
    "device_name",
    "config",
}


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100"])
def test_one_epoch_on_fake_cifar_writes_complete_results(tmp_path, cifar_root, dataset):
    overrides = [f"dataset={dataset}", f"dataset.root={cifar_root}", "dataset.download=false", "m=16"]
    cfg = compose_train([*SMALL, *overrides, "model=wrn_tiny", "augment=cutout", "rho=0.1"])
    train.train(cfg, tmp_path)
    results = json.loads((tmp_path / "results.json").read_text())
    assert results.keys() >= RESULT_KEYS
    assert results["dataset"] == dataset and results["model"] == "wide_resnet" and results["m"] == 16
    assert results["optimizer"] == "sam" and results["rho"] == 0.1 and results["augment"] == "cutout"
    assert 0.0 <= results["test_error_top5"] <= results["test_error"] <= 100.0
    assert results["config"]["dataset"]["root"] == str(cifar_root)
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["epoch"] == 1
    assert (tmp_path / "checkpoints" / "last.pt").exists() and (tmp_path / "config.yaml").exists()


def test_logged_test_error_equals_error_recomputed_from_saved_weights(tmp_path):
    cfg = compose_train(
        [*SMALL, "batch_size=64", "trainer.limit_train_batches=4", "trainer.limit_val_batches=null"]
    )
    cfg.trainer.save_final_model = True
    results = train.train(cfg, tmp_path)
    saved = torch.load(tmp_path / "final_model.pt", weights_only=True)
    saved_cfg = saved["config"]
    data = build_data("digits", root=".", batch_size=64, augment="none", seed=saved_cfg["seed"])
    kwargs = {k: v for k, v in saved_cfg["model"].items() if k != "name"}
    model = create_model(saved_cfg["model"]["name"], data.num_classes, in_chans=data.in_chans, **kwargs)
    model.load_state_dict(saved["model"])
    model.eval()
    wrong = total = 0
    with torch.no_grad():
        for x, y in data.test:
            wrong += int((model(x).argmax(1) != y).sum())
            total += y.numel()
    assert total == 360
    assert results["test_error"] == pytest.approx(100.0 * wrong / total, abs=1e-9)
    last_epoch = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    assert last_epoch["test_error"] == pytest.approx(results["test_error"], abs=1e-9)


def test_quickstart_composes_as_a_two_job_multirun():
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=quickstart"], return_hydra_config=True)
    assert str(cfg.hydra.mode) == "RunMode.MULTIRUN" and cfg.hydra.sweeper.params.rho == "0.0,0.05"
    assert (cfg.model.name, cfg.dataset.name, cfg.m, cfg.device) == ("wide_resnet", "digits", None, "cpu")


def test_slurm_launcher_composes_with_overridable_fields():
    overrides = ["hydra/launcher=slurm", "hydra.launcher.partition=gpu", "hydra.launcher.account=myproj"]
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        launcher = compose("train", overrides=overrides, return_hydra_config=True).hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.partition, launcher.account, launcher.gpus_per_node, launcher.signal_delay_s) == (
        "gpu",
        "myproj",
        1,
        300,
    )
