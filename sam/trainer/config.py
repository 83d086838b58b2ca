"""Every check of what a user asks for, in one module.

- :class:`TrainConfig` is the schema of ``configs/train.yaml`` (registered with Hydra's ConfigStore as
  ``train_schema``, the first entry of its defaults list): Hydra rejects a key it lacks and converts or
  rejects a value of the wrong type while composing, for the command line and every config file alike.
  The values and their comments stay in the YAML files; the schema only says what may be there.
- :func:`unknown_key_message` turns an override of a key the schema lacks into a message that names the
  valid keys (Hydra's own says "not in struct" without them); ``train.py`` calls it before composing.
- :func:`validate` checks ranges and choices once the config is composed, before anything is built.

``model`` and ``logger`` stay open dictionaries: their keys depend on the chosen option (a model's
constructor arguments; W&B's settings), and Hydra's struct mode still rejects keys the option lacks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, get_type_hints

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig

from sam.precision import PRECISIONS
from sam.steps import PERTURBATION_MODES
from sam.trainer.schedule import SCHEDULES
from sam.variants import VARIANTS, WITHOUT_RHO
from sam.weight_decay import WEIGHT_DECAY_MODES

OPTIMIZERS = ("sgd", "sam", "asam", *VARIANTS)
LOGGERS = ("none", "wandb")
GROUPS = ("model", "dataset", "optimizer", "schedule", "logger", "experiment")


# Field order is the order of the composed config (and so of config.yaml and results.json's "config").
@dataclass
class DatasetConfig:
    name: str = MISSING
    root: str = MISSING
    loader: str = MISSING
    download: bool = MISSING
    val_fraction: float = MISSING
    cutout_size: int = MISSING
    autoaugment_cutout: bool = MISSING
    autoaugment_policy: str = MISSING
    preprocessing: str = "official"  # ImageNet only (data/imagenet.py): official | torchvision
    num_workers: int = MISSING
    # only the finetuning datasets (Table 3) set these
    classes: list[int] | None = None
    image_size: int | None = None
    train_repeats: int | None = None
    svhn_extra: bool | None = None  # SVHN only: train + extra (null = true)


@dataclass
class OptimizerConfig:
    name: str = MISSING
    adaptive: bool = MISSING
    eta: float = MISSING
    momentum: float = MISSING
    nesterov: bool = MISSING
    weight_decay_mode: str = MISSING
    perturbation: str = MISSING
    variant: dict[str, Any] | None = None  # the options of an efficient SAM variant (sam/variants)


@dataclass
class ScheduleConfig:
    name: str = MISSING
    warmup_epochs: int = MISSING


@dataclass
class TrainerConfig:
    limit_train_batches: int | None = MISSING
    limit_val_batches: int | None = MISSING
    eval_batch_size: int = MISSING
    log_every_n_steps: int = MISSING
    checkpoint_interval_min: float | None = MISSING
    max_nonfinite_steps: int = MISSING
    deterministic: bool = MISSING
    save_final_model: bool = MISSING


@dataclass
class TrainConfig:
    model: dict[str, Any] = field(default_factory=dict)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    logger: dict[str, Any] = field(default_factory=dict)
    rho: float = MISSING
    m: int | None = MISSING
    seed: int = MISSING
    epochs: int = MISSING
    batch_size: int = MISSING
    lr: float = MISSING
    weight_decay: float = MISSING
    augment: str = MISSING
    label_noise: float = MISSING
    precision: str = MISSING
    device: str = MISSING
    grad_clip: float | None = MISSING
    label_smoothing: float = MISSING
    compile: bool = MISSING
    channels_last: bool = MISSING
    trainer: TrainerConfig = field(default_factory=TrainerConfig)


ConfigStore.instance().store(name="train_schema", node=TrainConfig)


def unknown_key_message(overrides: list[str]) -> str | None:
    """The first ``key=value`` override whose key the schema lacks, as a message naming the valid keys.

    Group selections (``model=wrn``), additions and deletions (``+key``, ``~key``), ``hydra.*`` and keys
    inside the open groups (``model.depth``) are left to Hydra, which knows the chosen option.
    """
    top = [f.name for f in fields(TrainConfig)]
    for arg in overrides:
        if arg.startswith(("-", "+", "~")) or "=" not in arg:
            continue
        key = arg.split("=", 1)[0]
        head, _, rest = key.partition(".")
        if head == "hydra" or "/" in head or (head in GROUPS and not rest):
            continue
        if head not in top:
            return (
                f"{key!r} is not a config key. Top-level keys: {', '.join(k for k in top if k not in GROUPS)}; "
                f"groups: {', '.join(GROUPS)} (e.g. model=wrn16_8)"
            )
        schema = get_type_hints(TrainConfig)[head]
        if rest and is_dataclass(schema):
            keys = [f.name for f in fields(schema)]
            if rest.split(".")[0] not in keys:
                return f"{key!r} is not a config key. Keys under {head}: {', '.join(keys)}"
    return None


# (key, test, what is accepted); None is accepted only where the rule says "or null". Types are the schema's.
RANGES = (
    ("rho", lambda v: math.isfinite(v) and v >= 0, "a finite number >= 0 (0 = the SGD baseline)"),
    ("epochs", lambda v: v >= 1, "an integer >= 1"),
    ("batch_size", lambda v: v >= 1, "an integer >= 1"),
    ("m", lambda v: v >= 1, "an integer >= 1, or null (= the per-device batch)"),
    ("lr", lambda v: math.isfinite(v) and v > 0, "a finite number > 0"),
    ("weight_decay", lambda v: math.isfinite(v) and v >= 0, "a finite number >= 0"),
    ("label_noise", lambda v: 0 <= v < 1, "a fraction in [0, 1)"),
    ("label_smoothing", lambda v: 0 <= v < 1, "a fraction in [0, 1)"),
    ("grad_clip", lambda v: math.isfinite(v) and v > 0, "a number > 0, or null (no clipping)"),
)


def validate(cfg: DictConfig, world_size: int) -> None:
    """Ranges and choices of a composed config, before anything is built: ValueError naming value and choices."""
    for key, ok, accepted in RANGES:
        value = cfg[key]
        if value is None and "or null" in accepted:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not ok(value):
            raise ValueError(f"{key}={value!r} is invalid: it must be {accepted}")
    if cfg.batch_size % world_size:
        raise ValueError(
            f"batch_size={cfg.batch_size} must be divisible by the number of processes ({world_size})"
        )
    per_device = cfg.batch_size // world_size
    if cfg.m is not None and per_device % cfg.m:
        divisors = [d for d in range(1, per_device + 1) if per_device % d == 0]
        raise ValueError(
            f"m={cfg.m} must divide the per-device batch {per_device} (batch_size={cfg.batch_size} over "
            f"{world_size} process(es)); valid: null or one of {divisors}"
        )
    for key, value, choices in (
        ("precision", cfg.precision, PRECISIONS),
        ("optimizer.name", cfg.optimizer.name, OPTIMIZERS),
        ("optimizer.weight_decay_mode", cfg.optimizer.weight_decay_mode, WEIGHT_DECAY_MODES),
        ("optimizer.perturbation", cfg.optimizer.perturbation, PERTURBATION_MODES),
        ("schedule.name", cfg.schedule.name, SCHEDULES),
        ("logger.name", cfg.logger.name, LOGGERS),
    ):
        if value not in choices:
            raise ValueError(f"{key}={value!r} is not one of {', '.join(choices)}")
    if cfg.optimizer.perturbation == "synced" and cfg.m is not None and cfg.m != per_device:
        raise ValueError(
            f"optimizer.perturbation=synced takes e(w) from the whole batch; m={cfg.m} must be null"
        )


def uses_sam(cfg: DictConfig) -> bool:
    """SAM, ASAM or a variant with rho > 0 (MESA needs no rho); rho = 0 is the SGD baseline with every
    other line shared."""
    return cfg.optimizer.name != "sgd" and (cfg.rho > 0 or cfg.optimizer.name in WITHOUT_RHO)


def effective_m(cfg: DictConfig, world_size: int) -> int:
    """Examples per BatchNorm batch and per e(w), for every optimizer: SGD baselines also run in chunks of
    m (``select_step``), so their m is what they compute, not a SAM-only field."""
    per_device = cfg.batch_size // world_size
    if cfg.optimizer.perturbation == "synced" and uses_sam(cfg):
        return cfg.batch_size  # e(w) from the all-reduced gradient (BatchNorm still per device)
    return cfg.m or per_device
