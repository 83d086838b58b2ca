"""The one training entry point.

    python train.py model=wrn dataset=cifar100 rho=0.05           # one run
    python train.py -m rho=0.01,0.02,0.05,0.1,0.2,0.5 seed=0,1,2  # a sweep (add hydra/launcher=slurm)
    torchrun --nproc_per_node=8 train.py experiment=...           # DDP, per-replica e(w) (the paper's)
    python train.py experiment=quickstart                         # digits, SGD vs SAM, 2 CPU minutes

Running the identical command again with the same ``hydra.run.dir`` resumes from the last checkpoint
and ends exactly where an uninterrupted run ends. Every hyperparameter lives in ``configs/``; what may be
there, and in which range, is checked by ``sam/trainer/config.py``. Reads top-down: ``main`` (exit codes),
``train`` (resume or start, train, results), ``build`` (data, model, optimizer, step, schedule).
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

import logging
import pickle
import sys
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from data import build_data
from models import create_model
from models.pretrained import prepare_for_finetuning, split_finetune_options
from sam import StepOptions, resolve_precision, select_step
from sam.trainer.checkpoint import CheckpointManager
from sam.trainer.config import effective_m, unknown_key_message, validate
from sam.trainer.diskspace import disk_full_cause
from sam.trainer.distributed import DistContext, export_slurm_env, setup_distributed
from sam.trainer.exit_codes import ExitCode, RunError
from sam.trainer.inputs import check_data_fingerprint
from sam.trainer.loop import NonFiniteLossError
from sam.trainer.optimizers import build_optimizer
from sam.trainer.preemption import HANDLER as PREEMPTION
from sam.trainer.preflight import claim_run_dir, preflight, release_claim
from sam.trainer.provenance import device_name
from sam.trainer.run import OPERATIONAL_KEYS, Objects, Run, load_resume_state
from sam.trainer.rundir import LOCK_NAME, RunRecords
from sam.trainer.schedule import warmup_then

log = logging.getLogger("train")
CONFIG_DIR = Path(__file__).resolve().parent / "configs"


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def main(cfg: DictConfig) -> float | None:
    """One job: the run directory's checks, then training; every failure is one line and an exit code."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    export_slurm_env()  # SLURM tasks (hydra.launcher.tasks_per_node > 1, srun -n N) as torchrun's variables
    PREEMPTION.install(pending=EARLY_SIGNALS)  # before data and model: a signal during set-up counts too
    records = RunRecords().start()  # log lines wait in memory until the command is accepted
    try:
        results = train(cfg, run_dir, records)
    except Exception as err:
        code = exit_code(err)
        if code is None:
            raise  # a bug: the traceback is the message
        if records.file_handler is None:  # refused before it was accepted: the directory is untouched
            records.discard()
            if multirun and not any(p.name != LOCK_NAME for p in run_dir.iterdir()):
                records.accept(run_dir, cfg)  # a sweep's new job: its records let compare.py list it
            release_claim(run_dir, refused=True)
        cause = None if isinstance(err, RunError) else disk_full_cause(err)
        message = (
            str(err) if cause is None else f"no space left on the device writing {cause.filename or run_dir}"
        )
        log.error("%s", message)
        records.close()
        if multirun:
            raise  # Hydra marks this job failed; the other jobs of the sweep go on
        print(f"error: {message}", file=sys.stderr)
        sys.exit(int(code))
    release_claim(run_dir, refused=False)
    records.close()
    return results["test_error"]


def exit_code(err: BaseException) -> ExitCode | None:
    """The exit code of an expected failure (README: exit codes); None for a bug."""
    if isinstance(err, RunError):
        return err.exit_code
    if isinstance(err, NonFiniteLossError):
        return ExitCode.NON_FINITE
    if disk_full_cause(err) is not None:
        return ExitCode.DISK_FULL
    if isinstance(err, ValueError | FileNotFoundError):
        return ExitCode.BAD_INPUT
    return None


def train(cfg: DictConfig, run_dir: Path, records: RunRecords | None = None) -> dict[str, Any]:
    """Check the command against the run directory, resume or start, train, evaluate, write results.json.

    Nothing is written into ``run_dir`` before every check passed; then ``records`` (Hydra's job records
    and train.log; None in-process, outside a Hydra job) are written.
    """
    ctx = setup_distributed(cfg.device)
    validate(cfg, ctx.world_size)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    done = claim_run_dir(run_dir, resolved, OPERATIONAL_KEYS)  # the lock, or a finished run of this command
    if done is not None:
        log.info("%s holds a finished run of this command (results.json); nothing to do", run_dir)
        return done
    if cfg.trainer.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    ckpts = CheckpointManager(run_dir / "checkpoints")
    state = load_resume_state(ckpts, resolved)  # refuses a run directory of another command

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
    run = Run(cfg, run_dir, ctx, objs, resolved, ckpts)
    if state is not None:
        changes = check_data_fingerprint(
            state.get("data_fingerprint"),
            objs.data.fingerprint,
            checkpoint=state["path"],
            allow=cfg.trainer.allow_data_change,
        )
        run.resume(state)  # refuses a checkpoint that does not fit the model
        if changes:
            run.progress.data_changes.append({"from_step": run.progress.global_step, "changes": changes})
    del state
    if records is not None and ctx.is_main:  # accepted: Hydra's records and train.log, from here on
        records.accept(run_dir, cfg)
    elif records is not None:
        records.discard()  # rank 0 keeps the run's records
    run.train()
    return run.write_results()


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
        autoaugment_policy=cfg.dataset.autoaugment_policy,
        preprocessing=cfg.dataset.preprocessing,
        svhn_extra=cfg.dataset.svhn_extra is not False,
        classes=cfg.dataset.get("classes"),
        image_size=cfg.dataset.get("image_size"),
        train_repeats=cfg.dataset.get("train_repeats") or 1,
    )
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
    model_kwargs, finetune = split_finetune_options(OmegaConf.to_container(cfg.model, resolve=True))
    raw_model = create_model(cfg.model.name, data.num_classes, in_chans=data.in_chans, **model_kwargs)
    for line in prepare_for_finetuning(raw_model, finetune):  # model.pretrained / freeze_bn_stats
        log.info("%s", line)
    raw_model = raw_model.to(ctx.device)
    torch.manual_seed(seed_for(cfg.seed, ctx.rank))
    if cfg.channels_last:
        raw_model = raw_model.to(memory_format=torch.channels_last)

    steps_per_epoch = len(data.train)
    if cfg.trainer.limit_train_batches is not None:
        steps_per_epoch = min(steps_per_epoch, int(cfg.trainer.limit_train_batches))
    if steps_per_epoch < 1:
        raise ValueError(
            f"batch_size={cfg.batch_size} leaves no full training batch ({data.num_train} examples); lower batch_size"
        )
    built = build_optimizer(cfg, raw_model, steps_per_epoch)
    step_fn = select_step(built.optimizer, cfg.m, cfg.batch_size // ctx.world_size)

    model: nn.Module = raw_model
    if cfg.compile:
        model = torch.compile(model)
    if ctx.distributed:
        # Per-device BatchNorm as the official code; statistics averaged after every step (see run.py).
        model = DistributedDataParallel(
            model,
            device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None,
            broadcast_buffers=False,
        )

    scheduler = torch.optim.lr_scheduler.LambdaLR(
        built.base,
        warmup_then(
            cfg.schedule.name, cfg.epochs * steps_per_epoch, cfg.schedule.warmup_epochs * steps_per_epoch
        ),
    )
    options = StepOptions(
        loss_fn=nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing),
        l2_weight_decay=built.l2_weight_decay,
        grad_clip=cfg.grad_clip,
        precision=precision,
        perturbation=cfg.optimizer.perturbation,
    )
    return Objects(
        data=data,
        model=model,
        raw_model=raw_model,
        optimizer=built.optimizer,
        base_optimizer=built.base,
        scheduler=scheduler,
        step_fn=step_fn,
        step_options=options,
        steps_per_epoch=steps_per_epoch,
        val_batches=cfg.trainer.limit_val_batches,
        effective_m=effective_m(cfg, ctx.world_size),
    )


def check_command(cfg: DictConfig) -> None:
    """The checks of a composed config before Hydra creates anything (``preflight``)."""
    validate(cfg, int(os.environ.get("WORLD_SIZE", "1")))


if __name__ == "__main__":
    problem = unknown_key_message(sys.argv[1:])  # Hydra's own message does not name the valid keys
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        sys.exit(ExitCode.BAD_INPUT)
    # Values, a finished or locked run directory: refused before Hydra creates or writes anything.
    sys.argv[1:] = preflight(
        sys.argv[1:], config_dir=CONFIG_DIR, config_name="train", check=check_command, ignore=OPERATIONAL_KEYS
    )
    try:
        main()
    except KeyboardInterrupt:  # Ctrl-C before training started, or a second Ctrl-C: no traceback
        print("interrupted (Ctrl-C)", file=sys.stderr)
        sys.exit(130)
