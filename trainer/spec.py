"""The RunSpec: every check of what a user asks for, and every fact derived from it, made once.

- :class:`RunSpec` is computed once per process from the composed config (:meth:`RunSpec.from_config`):
  after it, nothing reads the raw config to decide what a run is. Its facts (SAM or not, the recorded
  optimizer, rho and m, the per-device batch, precision, the step's chunk size) go into results.json,
  where compare, plot and evaluate read them instead of deriving them again.

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

import copy
import difflib
import math
import os
import re
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, get_type_hints

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from trainer.keys import LEGACY_DEFAULTS, OPERATIONAL_KEYS  # noqa: F401  (re-exported)
from trainer.sweepdir import job_dir_name

SCHEDULES = ("cosine", "constant")  # trainer/build.py: warmup_then


def optimizer_names() -> tuple[str, ...]:
    """Every ``optimizer.name`` a run accepts: SGD, SAM, ASAM, the variants, and plugins/' variants."""
    import plugins  # noqa: F401  (registers the variants in plugins/)
    from sam.variants import VARIANTS

    return ("sgd", "sam", "asam", *VARIANTS)


def without_rho(name: str) -> bool:
    """A variant whose update has no rho (MESA): it records rho = 0."""
    import plugins  # noqa: F401
    from sam.variants import WITHOUT_RHO

    return name in WITHOUT_RHO


LOGGERS = ("none", "wandb")
# Config groups (``model=wrn``, ``+sweep=table1``): every folder of configs/ but Hydra's own.
CONFIGS = Path(__file__).resolve().parents[1] / "configs"
GROUPS = tuple(sorted(p.name for p in CONFIGS.iterdir() if p.is_dir() and p.name != "hydra"))


# Field order is the order of the composed config (and so of config.yaml and results.json's "config").
@dataclass
class DatasetConfig:
    name: str = MISSING
    root: str = MISSING
    loader: str = MISSING
    download: bool = MISSING
    val_fraction: float = MISSING
    cutout_size: int = MISSING
    cutout_mode: str = "per_batch"  # data/augment.py: per_batch (official) | per_image
    autoaugment_cutout: bool = MISSING
    autoaugment_policy: str = MISSING
    autoaugment_crop_flip: bool = True  # false: the official aa-only (AutoAugment without crop + flip)
    preprocessing: str = "official"  # official | torchvision: file pipeline; resize at image_size
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
    progress_every_s: float = 60.0
    checkpoint_interval_min: float | None = MISSING
    max_nonfinite_steps: int = MISSING
    allow_data_change: bool = MISSING
    allow_config_change: bool = False
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
    label_noise_protocol: str = MISSING  # data/label_noise.py: uniform | flip
    precision: str = MISSING
    device: str = MISSING
    grad_clip: float | None = MISSING
    label_smoothing: float = MISSING
    compile: bool = MISSING
    channels_last: bool = MISSING
    trainer: TrainerConfig = field(default_factory=TrainerConfig)


ConfigStore.instance().store(name="train_schema", node=TrainConfig)
# configs/train.yaml's hydra.sweep.subdir: "0_rho=0.01,seed=0", the swept keys only (trainer/sweepdir.py)
OmegaConf.register_new_resolver("sweep_job_dir", job_dir_name, replace=True)


def unknown_key_message(overrides: list[str]) -> str | None:
    """The first override whose key the schema lacks, as a message naming the close match and valid keys.

    ``+key=`` / ``++key=`` / ``~key`` are checked like ``key=``: a typo behind a ``+`` would otherwise add
    a key nothing reads, and the run would train at the default. Group selections (``model=wrn``),
    ``hydra.*`` and keys inside the open groups (``model.depth``, ``logger.project``) are left to Hydra,
    which knows the chosen option.
    """
    top = [f.name for f in fields(TrainConfig)]
    for arg in overrides:
        if arg.startswith("-") or ("=" not in arg and not arg.startswith("~")):
            continue
        key = arg.lstrip("+~").split("=", 1)[0]
        head, _, rest = key.partition(".")
        if head == "hydra" or "/" in head or (head in GROUPS and not rest):
            continue
        if head not in top:
            keys = [k for k in top if k not in GROUPS]
            return (
                f"{key!r} is not a config key{close_match(head, top)}. Top-level keys: {', '.join(keys)}; "
                f"groups: {', '.join(GROUPS)} (e.g. model=wrn16_8)"
            )
        schema = get_type_hints(TrainConfig)[head]
        if rest and is_dataclass(schema):
            keys = [f.name for f in fields(schema)]
            sub = rest.split(".")[0]
            if sub not in keys:
                return (
                    f"{key!r} is not a config key{close_match(sub, keys, head + '.')}. "
                    f"Keys under {head}: {', '.join(keys)}"
                )
    return None


def close_match(word: str, choices: list[str], prefix: str = "") -> str:
    """`` (did you mean 'rho'?)`` for the closest choice, or nothing."""
    found = difflib.get_close_matches(word, choices, n=1, cutoff=0.5)
    return f" (did you mean {prefix + found[0]!r}?)" if found else ""


# Every number in the schema, with the values it may take (tests/test_spec.py checks that no
# numeric key is missing here). (key, test, what is accepted); None passes only where it says "or null".
SEED_LIMIT = 2**32  # numpy and torch generators take any seed below it
RANGES = (
    ("rho", lambda v: math.isfinite(v) and v >= 0, "a finite number >= 0 (0 = the SGD baseline)"),
    ("m", lambda v: v >= 1, "an integer >= 1, or null (= the per-device batch)"),
    ("seed", lambda v: 0 <= v < SEED_LIMIT, f"an integer in [0, {SEED_LIMIT})"),
    ("epochs", lambda v: v >= 1, "an integer >= 1"),
    ("batch_size", lambda v: v >= 1, "an integer >= 1"),
    ("lr", lambda v: math.isfinite(v) and v > 0, "a finite number > 0"),
    ("weight_decay", lambda v: math.isfinite(v) and v >= 0, "a finite number >= 0"),
    ("label_noise", lambda v: 0 <= v < 1, "a fraction in [0, 1)"),
    ("grad_clip", lambda v: math.isfinite(v) and v > 0, "a number > 0, or null (no clipping)"),
    ("label_smoothing", lambda v: 0 <= v < 1, "a fraction in [0, 1)"),
    ("dataset.val_fraction", lambda v: 0 <= v < 1, "a fraction in [0, 1)"),
    ("dataset.cutout_size", lambda v: v >= 0, "an integer >= 0 (pixels; 0 = no cutout)"),
    ("dataset.num_workers", lambda v: v >= 0, "an integer >= 0"),
    ("dataset.image_size", lambda v: v >= 1, "an integer >= 1 (pixels), or null (native resolution)"),
    ("dataset.train_repeats", lambda v: v >= 1, "an integer >= 1, or null (1)"),
    ("optimizer.eta", lambda v: math.isfinite(v) and v >= 0, "a finite number >= 0"),
    ("optimizer.momentum", lambda v: 0 <= v < 1, "a number in [0, 1)"),
    ("schedule.warmup_epochs", lambda v: v >= 0, "an integer >= 0 (and at most epochs)"),
    ("trainer.limit_train_batches", lambda v: v >= 1, "an integer >= 1, or null (every batch)"),
    ("trainer.limit_val_batches", lambda v: v >= 1, "an integer >= 1, or null (every batch)"),
    ("trainer.eval_batch_size", lambda v: v >= 1, "an integer >= 1"),
    ("trainer.log_every_n_steps", lambda v: v >= 1, "an integer >= 1"),
    ("trainer.progress_every_s", lambda v: math.isfinite(v) and v > 0, "a number of seconds > 0"),
    (
        "trainer.checkpoint_interval_min",
        lambda v: math.isfinite(v) and v >= 0,
        "a number >= 0, or null (0/null: at epoch ends only)",
    ),
    ("trainer.max_nonfinite_steps", lambda v: v >= 1, "an integer >= 1 (a run still ends on a finite loss)"),
)
DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


def validate(cfg: DictConfig, world_size: int) -> None:
    """Ranges and choices of a composed config, before anything is built: ValueError naming value and choices."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ValueError(
            f"{', '.join(missing)} must be given (the config leaves it open: ???), e.g. {missing[0]}=VALUE"
        )
    for key, ok, accepted in RANGES:
        value = OmegaConf.select(cfg, key)
        if value is None and "or null" in accepted:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not ok(value):
            raise ValueError(f"{key}={value!r} is invalid: it must be {accepted}")
    if cfg.schedule.warmup_epochs > cfg.epochs:
        raise ValueError(
            f"schedule.warmup_epochs={cfg.schedule.warmup_epochs} is invalid: it must be at most epochs={cfg.epochs}"
        )
    if not DEVICE.fullmatch(str(cfg.device)):
        raise ValueError(f"device={cfg.device!r} is not one of auto, cpu, cuda, cuda:N")
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
    # The choices live with the code that uses them (sam/, data/): imported only once the ranges passed,
    # so a refused number answers before torch loads.
    from data.augment import CUTOUT_MODES
    from data.label_noise import LABEL_NOISE_PROTOCOLS
    from sam.precision import PRECISIONS
    from sam.steps import PERTURBATION_MODES
    from sam.weight_decay import WEIGHT_DECAY_MODES

    for key, value, choices in (
        ("precision", cfg.precision, PRECISIONS),
        ("optimizer.name", cfg.optimizer.name, optimizer_names()),
        ("optimizer.weight_decay_mode", cfg.optimizer.weight_decay_mode, WEIGHT_DECAY_MODES),
        ("optimizer.perturbation", cfg.optimizer.perturbation, PERTURBATION_MODES),
        ("schedule.name", cfg.schedule.name, SCHEDULES),
        ("logger.name", cfg.logger.name, LOGGERS),
        ("label_noise_protocol", cfg.label_noise_protocol, LABEL_NOISE_PROTOCOLS),
        ("dataset.cutout_mode", cfg.dataset.cutout_mode, CUTOUT_MODES),
    ):
        if value not in choices:
            raise ValueError(f"{key}={value!r} is not one of {', '.join(choices)}")
    if cfg.optimizer.perturbation == "synced" and cfg.m is not None and cfg.m != per_device:
        raise ValueError(
            f"optimizer.perturbation=synced takes e(w) from the whole batch; m={cfg.m} must be null"
        )


@dataclass(frozen=True)
class TrainerSettings:
    """How the loop runs and records (``trainer.*``), validated."""

    limit_train_batches: int | None
    limit_val_batches: int | None
    eval_batch_size: int
    log_every_n_steps: int
    progress_every_s: float
    checkpoint_interval_min: float | None
    max_nonfinite_steps: int
    allow_data_change: bool
    allow_config_change: bool
    deterministic: bool
    save_final_model: bool


@dataclass(frozen=True)
class RunSpec:
    """What one run is: the validated config and every fact derived from it, decided here and only here.

    ``cfg`` (read-only) is what ``trainer/build.py`` turns into objects; the run itself reads the fields.
    """

    cfg: DictConfig = field(repr=False)  # the composed config, read-only
    config: dict[str, Any] = field(repr=False)  # the resolved config: checkpoints and results.json record it
    world_size: int
    device: str  # resolved: "cpu", "cuda:0", ...
    # -- what the user asked for, validated
    model: str
    dataset: str
    augment: str
    seed: int
    epochs: int
    batch_size: int
    label_noise: float
    channels_last: bool
    compile: bool
    logger: str
    trainer: TrainerSettings
    # -- derived facts (results.json records them; readers never derive them again)
    uses_sam: bool  # SAM, ASAM or a variant with rho > 0 (MESA needs no rho); rho = 0 is the SGD baseline
    optimizer: str  # the optimizer that ran: "sgd" for SGD and for SAM at rho = 0
    rho: float  # rho that ran: 0 for SGD and for variants whose update has no rho
    per_device_batch: int
    m: int  # examples per BatchNorm batch and per e(w), for every optimizer (SGD runs in chunks of m too)
    step_m: int | None  # the chunk size the step function gets (None: the whole per-device batch)
    precision: str  # resolved: fp32 | bf16 | fp16

    @classmethod
    def from_config(cls, cfg: DictConfig, world_size: int, device: Any = None) -> RunSpec:
        """Validate ``cfg`` (ValueError naming the value and the choices) and derive every fact.

        ``device``: the process's device; None resolves ``cfg.device`` for this process (LOCAL_RANK), after
        the checks, so that a refused command answers before torch is imported.
        """
        validate(cfg, world_size)
        from sam.precision import resolve_precision
        from trainer.cluster import resolve_device

        if device is None:
            device = resolve_device(cfg.device, int(os.environ.get("LOCAL_RANK", "0")))
        config = OmegaConf.to_container(cfg, resolve=True)
        frozen = copy.deepcopy(cfg)  # interpolations kept (Hydra's records show them), never changed again
        OmegaConf.set_readonly(frozen, True)
        name = cfg.optimizer.name
        sam_run = name != "sgd" and (cfg.rho > 0 or without_rho(name))
        per_device = cfg.batch_size // world_size
        synced = cfg.optimizer.perturbation == "synced" and sam_run
        return cls(
            cfg=frozen,
            config=config,
            world_size=world_size,
            device=str(device),
            model=cfg.model.name,
            dataset=cfg.dataset.name,
            augment=cfg.augment,
            seed=cfg.seed,
            epochs=cfg.epochs,
            batch_size=cfg.batch_size,
            label_noise=cfg.label_noise,
            channels_last=cfg.channels_last,
            compile=cfg.compile,
            logger=cfg.logger.name,
            trainer=TrainerSettings(**{f.name: cfg.trainer[f.name] for f in fields(TrainerSettings)}),
            uses_sam=sam_run,
            optimizer=name if sam_run else "sgd",
            rho=float(cfg.rho) if sam_run and not without_rho(name) else 0.0,
            per_device_batch=per_device,
            m=cfg.batch_size if synced else (cfg.m or per_device),  # synced: e(w) from the whole batch
            step_m=cfg.m,
            precision=resolve_precision(cfg.precision, device).name,
        )

    def facts(self) -> dict[str, Any]:
        """The derived facts results.json records (``spec`` block) for compare, plot and evaluate."""
        return {
            "uses_sam": self.uses_sam,
            "optimizer": self.optimizer,
            "rho": self.rho,
            "m": self.m,
            "per_device_batch": self.per_device_batch,
            "world_size": self.world_size,
            "precision": self.precision,
        }
