"""The one training entry point.

    python train.py model=wrn dataset=cifar100 rho=0.05           # one run
    python train.py -m rho=0.01,0.02,0.05,0.1,0.2,0.5 seed=0,1,2  # a sweep (add hydra/launcher=slurm)
    torchrun --nproc_per_node=8 train.py experiment=...           # DDP, per-replica e(w) (the paper's)
    python train.py experiment=quickstart                         # digits, SGD vs SAM, 2 CPU minutes

Running the identical command again with the same ``hydra.run.dir`` resumes from the last checkpoint
and ends exactly where an uninterrupted run ends. Every hyperparameter lives in ``configs/``.
"""

# ruff: noqa: E402  (the early signal catcher below comes before the slow imports)
from __future__ import annotations

import os
import signal

# SLURM can signal a job step (preemption, --signal) while Python still imports torch or builds the data:
# remember it, so the trainer checkpoints and requeues at its first step instead of dying on the default
# action. Only in a SLURM job step (srun): a sweep's submitting process must stay killable.
EARLY_SIGNALS: list[int] = []
if __name__ == "__main__" and "SLURM_STEP_ID" in os.environ:
    for _sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(_sig, lambda signum, _frame: EARLY_SIGNALS.append(signum))

import json
import logging
import math
import pickle
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import hydra
import torch
import torch.distributed as dist
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from data import DataBundle, build_data
from models import create_model
from sam import SAM, StepOptions, decoupled_param_groups, resolve_precision, select_step
from sam.precision import PRECISIONS
from sam.steps import PERTURBATION_MODES
from sam.weight_decay import WEIGHT_DECAY_MODES
from sam.trainer.checkpoint import CheckpointError, CheckpointManager, atomic_torch_save
from sam.trainer.distributed import (
    DistContext,
    all_reduce_sum,
    average_bn_stats,
    export_slurm_env,
    gather_objects,
    setup_distributed,
)
from sam.trainer.loop import EpochTotals, NonFiniteLossError, evaluate, train_one_epoch
from sam.trainer.preemption import FaultInjector, PreemptionHandler
from sam.trainer.provenance import device_name, git_commit
from sam.randomness import RNGState
from sam.trainer.schedule import SCHEDULES, warmup_then
from sam.trainer.tracking import MetricsFile, NullTracker, WandbTracker

log = logging.getLogger("train")
# Installed when main() starts (before data and model are built), so a signal during set-up is not lost
# and submitit's requeue handler, installed before us in a submitit job, is the one it chains to.
PREEMPTION = PreemptionHandler(pending=EARLY_SIGNALS)
REPO = Path(__file__).resolve().parent
OPTIMIZERS = ("sgd", "sam", "asam")
LOGGERS = ("none", "wandb")


# ---------------------------------------------------------------------------------------------- config
# (key, test, what is accepted); None is accepted only where the rule says "or null".
NUMERIC_RULES = (
    ("rho", lambda v: math.isfinite(v) and v >= 0, "a finite number >= 0 (0 = the SGD baseline)"),
    ("epochs", lambda v: isinstance(v, int) and v >= 1, "an integer >= 1"),
    ("batch_size", lambda v: isinstance(v, int) and v >= 1, "an integer >= 1"),
    ("m", lambda v: isinstance(v, int) and v >= 1, "an integer >= 1, or null (= the per-device batch)"),
    ("lr", lambda v: math.isfinite(v) and v > 0, "a finite number > 0"),
    ("weight_decay", lambda v: math.isfinite(v) and v >= 0, "a finite number >= 0"),
    ("label_noise", lambda v: 0 <= v < 1, "a fraction in [0, 1)"),
    ("label_smoothing", lambda v: 0 <= v < 1, "a fraction in [0, 1)"),
    ("grad_clip", lambda v: math.isfinite(v) and v > 0, "a number > 0, or null (no clipping)"),
)


def validate(cfg: DictConfig, world_size: int) -> None:
    """Every user-facing value checked before anything is built: ValueError naming value and choices."""
    for key, ok, accepted in NUMERIC_RULES:
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


def uses_sam(cfg: DictConfig) -> bool:
    return cfg.optimizer.name in ("sam", "asam") and cfg.rho > 0


# ---------------------------------------------------------------------------------------------- build
@dataclass
class Objects:
    data: DataBundle
    model: nn.Module  # possibly DDP-wrapped / compiled: what the step runs
    raw_model: nn.Module  # the plain module: what checkpoints hold
    optimizer: torch.optim.Optimizer
    base_optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    step_fn: Any
    step_options: StepOptions
    steps_per_epoch: int
    val_batches: int | None
    effective_m: int


def seed_for(seed: int, rank: int) -> int:
    """Per-process stream for dropout / Shake noise; rank 0 of a DDP run equals a single process."""
    return seed + 1_000_003 * rank


def build(cfg: DictConfig, ctx: DistContext) -> Objects:
    precision = resolve_precision(cfg.precision, ctx.device)
    data = build_data(
        cfg.dataset.name,
        root=os.path.expanduser(cfg.dataset.root),
        batch_size=cfg.batch_size,
        eval_batch_size=cfg.trainer.eval_batch_size,
        augment=cfg.augment,
        cutout_size=cfg.dataset.cutout_size,
        label_noise=cfg.label_noise,
        val_fraction=cfg.dataset.val_fraction,
        seed=cfg.seed,
        device=ctx.device,
        loader=cfg.dataset.loader,
        num_workers=cfg.dataset.num_workers,
        world_size=ctx.world_size,
        rank=ctx.rank,
        download=cfg.dataset.download,
        autoaugment_cutout=cfg.dataset.autoaugment_cutout,
    )
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
    model_kwargs = {k: v for k, v in OmegaConf.to_container(cfg.model).items() if k != "name"}
    raw_model = create_model(cfg.model.name, data.num_classes, in_chans=data.in_chans, **model_kwargs).to(
        ctx.device
    )
    torch.manual_seed(seed_for(cfg.seed, ctx.rank))
    if cfg.channels_last:
        raw_model = raw_model.to(memory_format=torch.channels_last)

    opt_cfg = cfg.optimizer
    if opt_cfg.weight_decay_mode == "l2_loss":  # official: 0.5*wd*||w||^2 in the loss, all parameters
        params, base_wd, l2 = raw_model.parameters(), 0.0, cfg.weight_decay
    else:
        params, base_wd, l2 = decoupled_param_groups(raw_model, cfg.weight_decay), cfg.weight_decay, 0.0
    sgd_kwargs = dict(lr=cfg.lr, momentum=opt_cfg.momentum, nesterov=opt_cfg.nesterov, weight_decay=base_wd)
    if uses_sam(cfg):
        optimizer = SAM(
            params, torch.optim.SGD, rho=cfg.rho, adaptive=opt_cfg.adaptive, eta=opt_cfg.eta, **sgd_kwargs
        )
        base = optimizer.base_optimizer
    else:
        optimizer = base = torch.optim.SGD(params, **sgd_kwargs)

    per_device = cfg.batch_size // ctx.world_size
    step_fn = select_step(optimizer, cfg.m, per_device)
    synced = opt_cfg.perturbation == "synced"
    if synced and cfg.m is not None and cfg.m != per_device:
        raise ValueError(
            f"optimizer.perturbation=synced takes e(w) from the whole batch; m={cfg.m} must be null"
        )
    effective_m = cfg.batch_size if synced else (cfg.m or per_device)

    model: nn.Module = raw_model
    if cfg.compile:
        model = torch.compile(model)
    if ctx.distributed:
        # Per-device BatchNorm as the official code; statistics averaged after every step (see below).
        model = DistributedDataParallel(
            model,
            device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None,
            broadcast_buffers=False,
        )

    steps_per_epoch = len(data.train)
    if cfg.trainer.limit_train_batches is not None:
        steps_per_epoch = min(steps_per_epoch, int(cfg.trainer.limit_train_batches))
    if steps_per_epoch < 1:
        raise ValueError(
            f"batch_size={cfg.batch_size} leaves no full training batch ({data.num_train} examples); lower batch_size"
        )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        base,
        warmup_then(
            cfg.schedule.name, cfg.epochs * steps_per_epoch, cfg.schedule.warmup_epochs * steps_per_epoch
        ),
    )
    options = StepOptions(
        loss_fn=nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing),
        l2_weight_decay=l2,
        grad_clip=cfg.grad_clip,
        precision=precision,
        perturbation=opt_cfg.perturbation,
    )
    return Objects(
        data,
        model,
        raw_model,
        optimizer,
        base,
        scheduler,
        step_fn,
        options,
        steps_per_epoch,
        cfg.trainer.limit_val_batches,
        effective_m,
    )


# ---------------------------------------------------------------------------------------------- run
def channels(batches, channels_last: bool):
    for x, y in batches:
        yield (x.contiguous(memory_format=torch.channels_last) if channels_last else x), y


def eval_metrics(objs: Objects, loader, prefix: str, cfg: DictConfig) -> dict[str, float]:
    loader.set_epoch(0)
    sums = evaluate(
        objs.model,
        channels(loader, cfg.channels_last),
        objs.step_options.precision.autocast,
        objs.val_batches,
    )
    keys = ("loss_sum", "top1", "top5", "examples")
    device = next(objs.raw_model.parameters()).device
    packed = (
        torch.stack([sums[k].double() for k in keys])
        if sums
        else torch.zeros(4, dtype=torch.float64, device=device)
    )
    loss_sum, top1, top5, n = all_reduce_sum(packed).tolist()
    n = max(n, 1.0)
    return {
        f"{prefix}_loss": loss_sum / n,
        f"{prefix}_error": 100.0 * (1 - top1 / n),
        f"{prefix}_error_top5": 100.0 * (1 - top5 / n),
    }


def finite_weights(model: nn.Module) -> bool:
    """False once a parameter or buffer holds NaN/inf: a checkpoint of such weights is no good to resume."""
    tensors = [t for t in model.state_dict().values() if t.is_floating_point()]
    return bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all()) if tensors else True


def make_tracker(cfg: DictConfig, run_dir: Path, resolved: dict, run_id: str | None, ctx: DistContext):
    if cfg.logger.name == "none" or not ctx.is_main:
        return NullTracker()
    if cfg.logger.name != "wandb":
        raise ValueError(f"logger={cfg.logger.name!r} is not one of wandb, none")
    group = cfg.logger.group
    if group is None:
        hc = HydraConfig.get()
        group = Path(hc.sweep.dir).name if hc.mode == RunMode.MULTIRUN else run_dir.name
    id_file = run_dir / "wandb_run_id.txt"
    if run_id is None and id_file.exists():
        run_id = id_file.read_text().strip() or None
    tracker = WandbTracker(
        run_dir=run_dir,
        config=resolved,
        project=cfg.logger.project,
        entity=cfg.logger.entity,
        group=group,
        tags=list(cfg.logger.tags),
        name=run_dir.name,
        run_id=run_id,
    )
    id_file.write_text(tracker.run_id)
    return tracker


# Keys that change how a run is executed or logged, not what it computes: they may differ on resume.
OPERATIONAL_KEYS = (
    "logger",
    "device",
    "compile",
    "dataset.root",
    "dataset.num_workers",
    "dataset.download",
    "trainer.log_every_n_steps",
    "trainer.checkpoint_interval_min",
    "trainer.save_final_model",
    "trainer.eval_batch_size",
)


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for k, v in tree.items():
        out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def check_same_run(state: dict[str, Any], resolved: dict[str, Any]) -> None:
    """Refuse to resume a run directory with a command that would compute something else."""
    saved = state.get("config")
    if saved is None:
        return
    old, new = _flatten(saved), _flatten(resolved)
    changed = sorted(
        k
        for k in old.keys() | new.keys()
        if old.get(k) != new.get(k) and not any(k == op or k.startswith(op + ".") for op in OPERATIONAL_KEYS)
    )
    if changed:
        diffs = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed[:8])
        raise CheckpointError(
            f"checkpoint {state['path']} was written by a different run ({diffs}); resume with the command "
            "that wrote it, or use another hydra.run.dir"
        )


@dataclass
class Progress:
    """Where the run is and what it has counted so far; every checkpoint holds all of it."""

    epoch: int = 0
    batch: int = 0  # the next batch of `epoch` (> 0 after a mid-epoch checkpoint)
    global_step: int = 0
    wall_time_s: float = 0.0  # spent by earlier processes of this run
    train_seconds: float = 0.0
    train_images: int = 0
    wandb_run_id: str | None = None


class Run:
    """One run in one run directory: resume, epochs, checkpoints, preemption, results.json."""

    def __init__(
        self,
        cfg: DictConfig,
        run_dir: Path,
        ctx: DistContext,
        objs: Objects,
        resolved: dict,
        ckpts: CheckpointManager,
        faults: FaultInjector,
    ) -> None:
        self.cfg, self.run_dir, self.ctx, self.objs, self.resolved = cfg, run_dir, ctx, objs, resolved
        self.ckpts, self.faults = ckpts, faults
        self.progress = Progress()
        self.totals = EpochTotals().to(ctx.device)
        self.metrics = MetricsFile(run_dir / "metrics.jsonl")
        self.tracker: Any = NullTracker()
        self.preemption = PREEMPTION
        self.preemption.rank = ctx.rank
        self.started = time.perf_counter()
        self.last_checkpoint = time.monotonic()
        minutes = cfg.trainer.checkpoint_interval_min
        self.interval_s = 60.0 * minutes if minutes else math.inf
        self.flags = torch.zeros(2, device=ctx.device)
        self.epoch_first_step = 0

    def wall_time(self) -> float:
        return self.progress.wall_time_s + (time.perf_counter() - self.started)

    # -- resume and checkpoints ---------------------------------------------------------------------
    def resume(self, state: dict[str, Any]) -> None:
        objs, ctx = self.objs, self.ctx
        try:
            objs.raw_model.load_state_dict(state["model"])
            objs.optimizer.load_state_dict(state["optimizer"])
            objs.scheduler.load_state_dict(state["scheduler"])
        except (KeyError, RuntimeError, ValueError) as err:
            raise CheckpointError(
                f"checkpoint {state['path']} does not fit this run's model/optimizer ({type(err).__name__}: "
                f"{str(err)[:300]}...); resume with the command that wrote it, or use another hydra.run.dir"
            ) from err
        if objs.step_options.precision.scaler is not None and "scaler" in state:
            objs.step_options.precision.scaler.load_state_dict(state["scaler"])
        self.progress = Progress(**{k: state.get(k, v) for k, v in asdict(Progress()).items()})
        self.totals = EpochTotals.from_state_dict(totals_for_rank(state["totals"], ctx), ctx.device)
        if len(state["rng"]) == ctx.world_size:
            RNGState.load(state["rng"][ctx.rank], ctx.device)
        else:
            log.warning(
                "checkpoint has RNG states for %d processes, this run has %d: reseeding",
                len(state["rng"]),
                ctx.world_size,
            )
        p = self.progress
        log.info(
            "resumed from %s at epoch %d, batch %d (step %d)", state["path"], p.epoch, p.batch, p.global_step
        )

    def save_checkpoint(self, finished: bool = False) -> None:
        objs = self.objs
        rngs = gather_objects(RNGState(self.ctx.device).state_dict(), self.ctx)
        totals = gather_objects(self.totals.state_dict(), self.ctx)  # every rank's: its share of the epoch
        if self.ctx.is_main and not finite_weights(objs.raw_model):
            log.warning(
                "weights are NaN/inf: not checkpointing, %s keeps the last good checkpoint", self.ckpts.dir
            )
        elif self.ctx.is_main:
            payload = {
                **asdict(self.progress),
                "wall_time_s": self.wall_time(),
                "wandb_run_id": self.tracker.run_id,
                "finished": finished,
                "model": objs.raw_model.state_dict(),
                "optimizer": objs.optimizer.state_dict(),
                "scheduler": objs.scheduler.state_dict(),
                "rng": rngs,
                "totals": totals,
                "config": self.resolved,
            }
            if objs.step_options.precision.scaler is not None:
                payload["scaler"] = objs.step_options.precision.scaler.state_dict()
            self.ckpts.save(payload)
        self.last_checkpoint = time.monotonic()

    def exit_for_requeue(self) -> None:
        where = f" at epoch {self.progress.epoch} batch {self.progress.batch} ({self.ckpts.dir})"
        log.warning("checkpointed%s", where)
        self.tracker.finish(exit_code=1)
        self.preemption.exit(where)

    # -- hooks of the epoch loop ----------------------------------------------------------------------
    def should_stop(self) -> bool:
        """Preemption or a timed checkpoint; agreed by all ranks so nobody waits in a collective alone."""
        if self.faults.hit("step") == "NAN":  # test-only: the weights turn NaN, so every later loss is NaN
            with torch.no_grad():
                for p in self.objs.raw_model.parameters():
                    p.fill_(math.nan)
        self.flags[0] = float(self.preemption.requested)
        self.flags[1] = float(time.monotonic() - self.last_checkpoint > self.interval_s)
        if self.ctx.distributed:
            dist.all_reduce(self.flags, op=dist.ReduceOp.MAX)
        return bool(self.flags.any())

    def on_log(self, index: int, result: Any, images_per_s: float) -> None:
        metrics = {
            "train/loss_at_w": float(result.loss),
            "train/lr": self.objs.base_optimizer.param_groups[0]["lr"],
            "train/grad_norm": float(result.grad_norm),
            "train/images_per_s": images_per_s * self.ctx.world_size,
        }
        self.tracker.log_step(metrics, step=self.epoch_first_step + index)

    # -- the loop ---------------------------------------------------------------------------------------
    def train_epoch(self) -> bool:
        """Train the current epoch from ``progress.batch``; False when it stopped early (checkpoint due)."""
        cfg, objs, p = self.cfg, self.objs, self.progress
        objs.data.train.set_epoch(p.epoch, p.batch)
        self.epoch_first_step = p.global_step - p.batch
        t0 = time.perf_counter()
        index = train_one_epoch(
            objs.model,
            objs.optimizer,
            objs.step_fn,
            objs.step_options,
            channels(objs.data.train, cfg.channels_last),
            objs.scheduler,
            self.totals,
            num_batches=objs.steps_per_epoch,
            start_batch=p.batch,
            max_nonfinite_steps=cfg.trainer.max_nonfinite_steps,
            check_every=cfg.trainer.log_every_n_steps,
            after_step=(lambda: average_bn_stats(objs.model)) if self.ctx.distributed else None,
            on_log=self.on_log,
            should_stop=self.should_stop,
            description=f"epoch {p.epoch + 1}/{cfg.epochs}",
        )
        seconds = time.perf_counter() - t0
        self.totals.seconds += seconds
        p.train_seconds += seconds
        p.train_images += (index - p.batch) * cfg.batch_size
        p.global_step += index - p.batch
        p.batch = index
        return index == objs.steps_per_epoch

    def end_epoch(self) -> None:
        cfg, p = self.cfg, self.progress
        record = epoch_record(cfg, self.objs, self.totals, p.epoch, seconds=self.totals.seconds)
        self.totals = self.totals.next_epoch().to(self.ctx.device)
        p.epoch, p.batch = p.epoch + 1, 0
        if self.ctx.is_main:
            self.metrics.append(record)
            self.tracker.log_epoch(record, step=p.global_step)
            skipped = f"  skipped {record['skipped_steps']}" if record["skipped_steps"] else ""
            log.info(
                "epoch %d/%d  train loss %.4f err %.2f%%  test err %.2f%% (top-5 %.2f%%)  lr %.4g  %.0f img/s%s",
                p.epoch,
                cfg.epochs,
                record["train_loss"],
                record["train_error"],
                record["test_error"],
                record["test_error_top5"],
                record["lr"],
                record["images_per_s"],
                skipped,
            )

    def train(self) -> None:
        if self.ctx.is_main:
            self.metrics.truncate_after(self.progress.epoch)
            (self.run_dir / "config.yaml").write_text(OmegaConf.to_yaml(self.resolved))
        self.tracker = make_tracker(
            self.cfg, self.run_dir, self.resolved, self.progress.wandb_run_id, self.ctx
        )
        self.preemption.install()
        failed = True
        try:
            while self.progress.epoch < self.cfg.epochs:
                if self.train_epoch():
                    self.end_epoch()
                    self.save_checkpoint(finished=self.progress.epoch == self.cfg.epochs)
                else:  # stopped mid-epoch: checkpoint where we are
                    self.save_checkpoint()
                # Training done: a signal now only costs the final evaluation, not a requeue.
                if self.preemption.requested and self.progress.epoch < self.cfg.epochs:
                    self.exit_for_requeue()
            failed = False
        finally:
            self.preemption.uninstall()
            if failed:
                self.tracker.finish(exit_code=1)

    def write_results(self) -> dict[str, Any]:
        cfg, objs, ctx, p = self.cfg, self.objs, self.ctx, self.progress
        sam_run = uses_sam(cfg)
        results = {
            "model": cfg.model.name,
            "dataset": cfg.dataset.name,
            "augment": cfg.augment,
            "optimizer": cfg.optimizer.name if sam_run else "sgd",
            "rho": cfg.rho if sam_run else 0.0,
            "m": objs.effective_m if sam_run else None,
            "seed": cfg.seed,
            "epochs": cfg.epochs,
            "label_noise": cfg.label_noise,
            "label_noise_realised": objs.data.label_noise_realised,
            **eval_metrics(objs, objs.data.test, "test", cfg),
            "train_loss": _last_train_loss(self.run_dir),
            "wall_time_s": self.wall_time(),
            "images_per_s": p.train_images / max(p.train_seconds, 1e-9),
            "num_params": sum(t.numel() for t in objs.raw_model.parameters()),
            "world_size": ctx.world_size,
            "precision": objs.step_options.precision.name,
            "git_commit": git_commit(REPO),
            "torch_version": torch.__version__,
            "device_name": device_name(ctx.device),
            "config": self.resolved,
        }
        if objs.data.val is not None:
            results.update(eval_metrics(objs, objs.data.val, "val", cfg))
        if ctx.is_main:
            if cfg.trainer.save_final_model:
                atomic_torch_save(
                    {"model": objs.raw_model.state_dict(), "config": self.resolved},
                    self.run_dir / "final_model.pt",
                )
            path = self.run_dir / "results.json"
            tmp = path.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(results, indent=2))
            os.replace(tmp, path)
            self.tracker.summary(results)
            self.tracker.finish()
            log.info(
                "done: test error %.2f%% (top-5 %.2f%%) -> %s",
                results["test_error"],
                results["test_error_top5"],
                path,
            )
        return results


def totals_for_rank(saved: Any, ctx: DistContext) -> dict[str, Any]:
    """This rank's running totals of the interrupted epoch (a checkpoint holds every rank's)."""
    if isinstance(saved, dict):  # checkpoints before every rank's totals were kept: rank 0's only
        saved = [saved]
    if len(saved) == ctx.world_size:
        return saved[ctx.rank]
    log.warning(
        "checkpoint has epoch totals of %d processes, this run has %d: the interrupted epoch's train loss "
        "counts rank 0's share only",
        len(saved),
        ctx.world_size,
    )
    return saved[0] if ctx.rank == 0 else EpochTotals().state_dict()


def build_objects(cfg: DictConfig, ctx: DistContext) -> Objects:
    """``build``, with unreadable dataset files turned into an error that names dataset.root."""
    try:
        return build(cfg, ctx)
    except (OSError, EOFError, pickle.UnpicklingError) as err:  # the only files build reads: the dataset's
        if isinstance(err, FileNotFoundError):
            raise  # already names the missing files and how to get them
        raise ValueError(
            f"dataset={cfg.dataset.name!r}: cannot read the files under dataset.root={cfg.dataset.root!r} "
            f"({type(err).__name__}: {err}); expected the dataset's official files, intact (re-download or "
            "re-extract them)"
        ) from err


def train(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """Build everything, resume if a checkpoint exists, train, evaluate, write results.json."""
    ctx = setup_distributed(cfg.device)
    validate(cfg, ctx.world_size)
    if cfg.trainer.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    # Test-only kill/signal/NaN points (tests/test_reliability.py); inert unless SAM_REPRO_FAULT is set.
    faults = FaultInjector.from_env()
    ckpts = CheckpointManager(run_dir / "checkpoints", fault=lambda stage: faults.hit(f"ckpt_{stage}"))
    state = ckpts.load_latest(map_location="cpu")  # it remembers a bad last.pt, never to rotate it in
    if state is not None:
        check_same_run(state, resolved)
        if state.get("finished") and (run_dir / "results.json").exists():
            log.info("%s is complete (results.json exists); nothing to do", run_dir)
            return json.loads((run_dir / "results.json").read_text())

    objs = build_objects(cfg, ctx)
    log.info(
        "model %s (%.2fM params) | %s | %s on %s x%d | batch %d, m %d (examples per e(w)) | %d steps/epoch | %s",
        cfg.model.name,
        sum(p.numel() for p in objs.raw_model.parameters()) / 1e6,
        cfg.dataset.name,
        getattr(objs.step_fn, "__name__", str(objs.step_fn)),
        device_name(ctx.device),
        ctx.world_size,
        cfg.batch_size,
        objs.effective_m,
        objs.steps_per_epoch,
        objs.step_options.precision.name,
    )
    if cfg.label_noise:
        log.info(
            "label noise: asked %.3f, realised %.4f of training labels flipped",
            cfg.label_noise,
            objs.data.label_noise_realised,
        )
    run = Run(cfg, run_dir, ctx, objs, resolved, ckpts, faults)
    if state is not None:
        run.resume(state)
    del state
    run.train()
    return run.write_results()


def epoch_record(
    cfg: DictConfig, objs: Objects, totals: EpochTotals, epoch: int, seconds: float
) -> dict[str, Any]:
    packed = torch.stack([totals.loss_sum.double(), totals.correct.double(), totals.skipped.double()])
    loss_sum, correct, skipped = all_reduce_sum(packed).tolist()
    examples = totals.examples * (dist.get_world_size() if dist.is_initialized() else 1)
    record = {
        "epoch": epoch,
        "train_loss": loss_sum / max(examples, 1),
        "train_error": 100.0 * (1 - correct / max(examples, 1)),
        "skipped_steps": int(skipped),
        "lr": objs.base_optimizer.param_groups[0]["lr"],
        "epoch_time_s": seconds,
        "images_per_s": examples / max(seconds, 1e-9),
    }
    record.update(eval_metrics(objs, objs.data.test, "test", cfg))
    if objs.data.val is not None:
        record.update(eval_metrics(objs, objs.data.val, "val", cfg))
    return record


def _last_train_loss(run_dir: Path) -> float | None:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return None
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    return json.loads(lines[-1])["train_loss"] if lines else None


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def main(cfg: DictConfig) -> float | None:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    export_slurm_env()  # SLURM tasks (hydra.launcher.tasks_per_node > 1, srun -n N) as torchrun's variables
    PREEMPTION.install()
    try:
        results = train(cfg, run_dir)
    except (ValueError, FileNotFoundError, NonFiniteLossError) as err:
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise  # Hydra marks this job failed; the other jobs of the sweep go on
        log.error("%s", err)
        print(f"error: {err}", file=sys.stderr)
        sys.exit(3 if isinstance(err, NonFiniteLossError) else 2)
    return results["test_error"]


def _exit_bad_input(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def check_override_keys(argv: list[str]) -> None:
    """Catch ``key=value`` overrides of keys the config does not have, naming the keys it does have.

    Hydra alone says "Key 'x' is not in struct" without the choices. Group contents (``model.depth``)
    depend on the chosen option and are left to Hydra; ``+key``/``~key`` and ``hydra.*`` pass through.
    """
    root = OmegaConf.load(REPO / "configs" / "train.yaml")
    defaults = OmegaConf.to_container(root.defaults)
    groups = sorted({next(iter(d)) if isinstance(d, dict) else d for d in defaults} - {"_self_"})
    top = sorted(k for k in root if k not in ("defaults", "hydra"))
    for arg in argv:
        if arg.startswith(("-", "+", "~")) or "=" not in arg:
            continue
        key = arg.split("=", 1)[0]
        head, _, rest = key.partition(".")
        if head in groups or head == "hydra" or "/" in head:
            continue
        if head not in top:
            _exit_bad_input(
                f"{key!r} is not a config key. Top-level keys: {', '.join(top)}; "
                f"groups: {', '.join(groups)} (e.g. model=wrn16_8)"
            )
        node = root[head]
        if rest and OmegaConf.is_dict(node) and rest.split(".")[0] not in node:
            _exit_bad_input(f"{key!r} is not a config key. Keys under {head}: {', '.join(node.keys())}")


if __name__ == "__main__":
    check_override_keys(sys.argv[1:])
    try:
        main()
    except KeyboardInterrupt:  # Ctrl-C before training started, or a second Ctrl-C: no traceback
        print("interrupted (Ctrl-C)", file=sys.stderr)
        sys.exit(130)
