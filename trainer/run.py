"""One run in one run directory: resume, epochs, checkpoints, preemption, results.json.

``train.py`` builds the objects (:class:`Objects`) and hands them to a :class:`Run`. Everything a run
writes goes through here; every checkpoint holds the whole :class:`Progress`, so a run killed anywhere
and started again with the identical command ends exactly where an uninterrupted run ends.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from omegaconf import OmegaConf
from torch import nn

from sam.randomness import RNGState
from trainer import cluster, hooks
from trainer.build import Objects, build
from trainer.cluster import DistContext, all_reduce_sum, average_bn_stats, gather_objects
from trainer.loop import EpochTotals, NonFiniteLossError, evaluate, train_one_epoch
from trainer.rundir import (
    CheckpointError,
    CheckpointManager,
    RunRecords,
    atomic_torch_save,
    atomic_write_text,
    claim_run_dir,
    config_differences,
    keys_added_since,
)
from trainer.spec import OPERATIONAL_KEYS, RunSpec
from trainer.tracking import (
    MetricsFile,
    NullTracker,
    ProgressLog,
    check_data_fingerprint,
    code_state,
    device_name,
    extend_code_history,
    git_commit,
    make_tracker,
)

log = logging.getLogger("train")
# Beyond these, a CPU run is a GPU-scale experiment (the digits quickstart: 0.3M parameters, 0.1M examples).
PAPER_SCALE_PARAMS = 5_000_000
PAPER_SCALE_EXAMPLES = 20_000_000
REPO = Path(__file__).resolve().parents[1]


def check_same_run(state: dict[str, Any], spec: RunSpec) -> list[str]:
    """Refuse to resume a run directory with a command that would compute something else.

    Returns what the resume accepts and the run must record: keys added since the checkpoint at their
    legacy value, and (only with ``trainer.allow_config_change``) settings that changed.
    """
    saved = state.get("config")
    if saved is None:  # a foreign file: loading it into this model refuses it if it does not fit
        return []
    diffs = config_differences(saved, spec.config, OPERATIONAL_KEYS)
    added = [
        f"{k}: added since the checkpoint, at its legacy value" for k in keys_added_since(saved, spec.config)
    ]
    if diffs and not spec.trainer.allow_config_change:
        shown = ", ".join(diffs[:8]) + (f" (+{len(diffs) - 8} more)" if len(diffs) > 8 else "")
        raise CheckpointError(
            f"checkpoint {state['path']} was written by a different run ({shown}); resume with the command "
            "that wrote it, or use another hydra.run.dir (trainer.allow_config_change=true resumes anyway "
            "and records the change in results.json: the run is then no longer one setting)"
        )
    return added + diffs


def load_resume_state(ckpts: CheckpointManager, spec: RunSpec) -> dict[str, Any] | None:
    """The newest usable checkpoint of this run directory (None: a fresh run), checked to be this run's.

    ``state["accepted_changes"]`` lists what the resume accepted (see :func:`check_same_run`).
    """
    state = ckpts.load_latest(map_location="cpu")  # it remembers a bad last.pt, never to rotate it in
    if state is not None:
        state["accepted_changes"] = check_same_run(state, spec)
    return state


# ---------------------------------------------------------------------------------------------- metrics
def channels(batches, channels_last: bool):
    for x, y in batches:
        yield (x.contiguous(memory_format=torch.channels_last) if channels_last else x), y


def eval_metrics(spec: RunSpec, objs: Objects, loader, prefix: str) -> dict[str, float]:
    loader.set_epoch(0)
    sums = evaluate(
        objs.model,
        channels(loader, spec.channels_last),
        objs.step_options.precision.autocast,
        spec.trainer.limit_val_batches,
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


def epoch_record(
    spec: RunSpec, objs: Objects, totals: EpochTotals, epoch: int, seconds: float
) -> dict[str, Any]:
    packed = torch.stack([totals.loss_sum.double(), totals.correct.double(), totals.skipped.double()])
    loss_sum, correct, skipped = all_reduce_sum(packed).tolist()
    examples = totals.examples * (dist.get_world_size() if dist.is_initialized() else 1)
    record = {
        "epoch": epoch,  # 1-based, the epoch just completed: as the log's "epoch 3/200", W&B and the plots
        "train_loss": loss_sum / max(examples, 1),
        "train_error": 100.0 * (1 - correct / max(examples, 1)),
        "skipped_steps": int(skipped),
        "lr": objs.base_optimizer.param_groups[0]["lr"],
        "epoch_time_s": seconds,
        "images_per_s": examples / max(seconds, 1e-9),
    }
    record.update(eval_metrics(spec, objs, objs.data.test, "test"))
    if objs.data.val is not None:
        record.update(eval_metrics(spec, objs, objs.data.val, "val"))
    return record


def finite_weights(model: nn.Module) -> bool:
    """False once a parameter or buffer holds NaN/inf: a checkpoint of such weights is no good to resume."""
    tensors = [t for t in model.state_dict().values() if t.is_floating_point()]
    return bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all()) if tensors else True


def finite_or_null(tree: Any) -> Any:
    """``tree`` with every NaN/inf float replaced by None: what JSON (and compare.py) can read."""
    if isinstance(tree, float):
        return tree if math.isfinite(tree) else None
    if isinstance(tree, dict):
        return {k: finite_or_null(v) for k, v in tree.items()}
    if isinstance(tree, list | tuple):
        return [finite_or_null(v) for v in tree]
    return tree


def _last_train_loss(run_dir: Path) -> float | None:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return None
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    return json.loads(lines[-1])["train_loss"] if lines else None


# ---------------------------------------------------------------------------------------------- the run
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
    code_history: list = field(default_factory=list)  # every (commit, dirty) that trained this run
    data_changes: list = field(default_factory=list)  # fingerprint differences accepted on resume
    config_changes: list = field(default_factory=list)  # config differences accepted on resume


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


class Run:
    """One run in one run directory: resume, epochs, checkpoints, preemption, results.json.

    Its stages call ``trainer.hooks`` (after every step, inside every checkpoint write).
    """

    def __init__(
        self,
        spec: RunSpec,
        run_dir: Path,
        ctx: DistContext,
        objs: Objects,
        ckpts: CheckpointManager,
    ) -> None:
        self.spec, self.run_dir, self.ctx, self.objs = spec, run_dir, ctx, objs
        self.ckpts = ckpts
        self.progress = Progress()
        self.totals = EpochTotals().to(ctx.device)
        self.metrics = MetricsFile(run_dir / "metrics.jsonl")
        self.tracker: Any = NullTracker()
        self.preemption = cluster.HANDLER  # installed by train.py's main, before data and model
        self.preemption.rank = ctx.rank
        self.started = time.perf_counter()
        self.last_checkpoint = time.monotonic()
        minutes = spec.trainer.checkpoint_interval_min
        self.interval_s = 60.0 * minutes if minutes else math.inf
        self.flags = torch.zeros(2, device=ctx.device)
        self.epoch_first_step = 0
        self.progress_log = ProgressLog(
            objs.steps_per_epoch,
            spec.epochs,
            spec.trainer.progress_every_s,
            on_tty=sys.stderr.isatty(),
            device=device_name(ctx.device),
        )
        self.last_good: tuple[str, int, int] | None = (
            None  # (checkpoint, epoch, step) of the last finite save
        )

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
        if not finite_weights(objs.raw_model):  # never written by a finite run: damaged or planted
            raise CheckpointError(
                f"checkpoint {state['path']} holds NaN/inf weights, so it is not a point to resume from (this "
                "trainer never saves non-finite weights: the file was changed after it was written); move it "
                "away to resume from the previous checkpoint, or use another hydra.run.dir"
            )
        self.last_good = (state["path"], p.epoch, p.global_step)
        log.info(
            "resumed from %s at epoch %d, batch %d (step %d)", state["path"], p.epoch, p.batch, p.global_step
        )

    def save_checkpoint(self, finished: bool = False) -> None:
        objs = self.objs
        rngs = gather_objects(RNGState(self.ctx.device).state_dict(), self.ctx)
        totals = gather_objects(self.totals.state_dict(), self.ctx)  # every rank's share of the epoch
        if self.ctx.is_main and (not finite_weights(objs.raw_model) or int(self.totals.nonfinite_run) > 0):
            log.warning(
                "weights or loss are NaN/inf: not checkpointing, %s keeps the last good checkpoint",
                self.ckpts.dir,
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
                "config": self.spec.config,
                "data_fingerprint": objs.data.fingerprint,
            }
            if objs.step_options.precision.scaler is not None:
                payload["scaler"] = objs.step_options.precision.scaler.state_dict()
            path = self.ckpts.save(payload, on_stage=lambda stage: hooks.fire(f"checkpoint_{stage}", self))
            self.last_good = (str(path), self.progress.epoch, self.progress.global_step)
        self.last_checkpoint = time.monotonic()

    def exit_for_requeue(self) -> None:
        where = f" at epoch {self.progress.epoch} batch {self.progress.batch} ({self.ckpts.dir})"
        log.warning("checkpointed%s; exiting for requeue", where)
        self.tracker.finish(exit_code=1)
        self.preemption.exit(where)

    # -- hooks of the epoch loop ----------------------------------------------------------------------
    def should_stop(self) -> bool:
        """Preemption or a timed checkpoint; agreed by all ranks so nobody waits in a collective alone."""
        hooks.fire("after_step", self)
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
        if self.ctx.is_main:
            self.progress_log.update(
                self.epoch_first_step + index, metrics["train/images_per_s"], float(result.loss)
            )

    # -- the loop ---------------------------------------------------------------------------------------
    def train_epoch(self) -> bool:
        """Train the current epoch from ``progress.batch``; False when it stopped early (checkpoint due)."""
        spec, objs, p = self.spec, self.objs, self.progress
        objs.data.train.set_epoch(p.epoch, p.batch)
        self.epoch_first_step = p.global_step - p.batch
        t0 = time.perf_counter()
        index = train_one_epoch(
            objs.model,
            objs.optimizer,
            objs.step_fn,
            objs.step_options,
            channels(objs.data.train, spec.channels_last),
            objs.scheduler,
            self.totals,
            num_batches=objs.steps_per_epoch,
            start_batch=p.batch,
            max_nonfinite_steps=spec.trainer.max_nonfinite_steps,
            check_every=spec.trainer.log_every_n_steps,
            after_step=(lambda: average_bn_stats(objs.model)) if self.ctx.distributed else None,
            on_log=self.on_log,
            should_stop=self.should_stop,
            description=f"epoch {p.epoch + 1}/{spec.epochs}",
        )
        seconds = time.perf_counter() - t0
        self.totals.seconds += seconds
        p.train_seconds += seconds
        p.train_images += (index - p.batch) * spec.batch_size
        p.global_step += index - p.batch
        p.batch = index
        return index == objs.steps_per_epoch

    def end_epoch(self) -> None:
        spec, p = self.spec, self.progress
        record = epoch_record(spec, self.objs, self.totals, p.epoch + 1, seconds=self.totals.seconds)
        self.totals = self.totals.next_epoch().to(self.ctx.device)
        p.epoch, p.batch = p.epoch + 1, 0
        if self.ctx.is_main:
            self.metrics.append(finite_or_null(record))  # valid JSON lines (NaN -> null)
            self.tracker.log_epoch(record, step=p.global_step)
            skipped = f"  skipped {record['skipped_steps']}" if record["skipped_steps"] else ""
            log.info(
                "epoch %d/%d  train loss %.4f err %.2f%%  test err %.2f%% (top-5 %.2f%%)  lr %.4g  %.0f img/s%s",
                p.epoch,
                spec.epochs,
                record["train_loss"],
                record["train_error"],
                record["test_error"],
                record["test_error_top5"],
                record["lr"],
                record["images_per_s"],
                skipped,
            )

    def where_last_good(self) -> str:
        """Where the run can go on from, for the message of a NaN/inf failure."""
        if self.last_good is None:
            return f"no good checkpoint was written (none in {self.ckpts.dir})"
        path, epoch, step = self.last_good
        return (
            f"the last good checkpoint is {path} (epoch {epoch}, step {step}): the identical command resumes "
            "from it (raise trainer.max_nonfinite_steps if the NaN/inf steps were transient), or lower lr/rho "
            "in another hydra.run.dir"
        )

    def check_finite_end(self) -> None:
        """A run must end on finite weights and a finite last loss, however few NaN/inf steps it had.

        ``trainer.max_nonfinite_steps`` bounds a streak *during* training; a streak still running when the
        last epoch ends (or non-finite final weights) fails the run the same way (exit 3), since its
        results would be those of a diverged model.
        """
        streak = int(self.totals.nonfinite_run)
        bad = torch.tensor(
            [float(streak > 0 or not finite_weights(self.objs.raw_model))], device=self.ctx.device
        )
        if all_reduce_sum(bad).item() > 0:  # every rank decides alike (a lone raise would hang the others)
            what = (
                f"the last {streak} training losses were NaN/inf"
                if streak
                else "the final weights are NaN/inf"
            )
            raise NonFiniteLossError(
                f"the run diverged: {what} when training ended (below trainer.max_nonfinite_steps="
                f"{self.spec.trainer.max_nonfinite_steps}, but a run must end on a finite loss); no results.json "
                f"or final weights were written; {self.where_last_good()}"
            )

    def train(self) -> None:
        history = self.progress.code_history
        now = code_state(REPO)
        if history and history[-1].get("threads") not in (None, now["threads"]):
            log.warning(
                "resumed with %d CPU threads; the run so far used %d: it goes on correctly but not bit-exactly "
                "as an uninterrupted run would (recorded in results.json's git_commits)",
                now["threads"],
                history[-1]["threads"],
            )
        self.progress.code_history = extend_code_history(history, now, self.progress.global_step)
        self.progress_log.start(self.progress.global_step)
        if self.ctx.is_main:
            self.metrics.truncate_after(self.progress.epoch)
            (self.run_dir / "config.yaml").write_text(OmegaConf.to_yaml(self.spec.config))
        self.tracker = make_tracker(self.spec, self.run_dir, self.progress.wandb_run_id, self.ctx.is_main)
        self.preemption.install()
        failed = True
        try:
            while self.progress.epoch < self.spec.epochs:
                if self.train_epoch():
                    self.end_epoch()
                    self.save_checkpoint(finished=self.progress.epoch == self.spec.epochs)
                else:  # stopped mid-epoch: checkpoint where we are
                    self.save_checkpoint()
                # Training done: a signal now only costs the final evaluation, not a requeue.
                if self.preemption.requested and self.progress.epoch < self.spec.epochs:
                    self.exit_for_requeue()
            self.check_finite_end()
            failed = False
        except NonFiniteLossError as err:
            if "the run diverged" in str(err):
                raise
            raise NonFiniteLossError(f"{err} {self.where_last_good()}") from None
        finally:
            self.preemption.uninstall()
            if failed:
                self.tracker.finish(exit_code=1)

    def write_results(self) -> dict[str, Any]:
        spec, objs, ctx, p = self.spec, self.objs, self.ctx, self.progress
        results = {
            "model": spec.model,
            "dataset": spec.dataset,
            "augment": spec.augment,
            "optimizer": spec.optimizer,
            "rho": spec.rho,
            "m": spec.m,  # examples per BatchNorm batch / per e(w): SGD runs in chunks of m too
            "seed": spec.seed,
            "epochs": spec.epochs,
            "label_noise": spec.label_noise,
            "label_noise_realised": objs.data.label_noise_realised,
            **eval_metrics(spec, objs, objs.data.test, "test"),
            "train_loss": _last_train_loss(self.run_dir),
            "wall_time_s": self.wall_time(),
            "images_per_s": p.train_images / max(p.train_seconds, 1e-9),
            "num_params": sum(t.numel() for t in objs.raw_model.parameters()),
            "world_size": ctx.world_size,
            "precision": objs.step_options.precision.name,
            "step_function": getattr(objs.step_fn, "__name__", str(objs.step_fn)),
            "spec": spec.facts(),  # what the run was, as the trainer decided it: readers never re-derive it
            "git_commit": git_commit(REPO),
            "git_commits": self.progress.code_history,  # every commit that trained part of this run
            "git_dirty": any(h.get("dirty") for h in self.progress.code_history),
            "data_fingerprint": objs.data.fingerprint,
            "data_changes": self.progress.data_changes,
            "config_changes": self.progress.config_changes,
            "torch_version": torch.__version__,
            "device_name": device_name(ctx.device),
            "config": self.spec.config,
        }
        if objs.data.val is not None:
            results.update(eval_metrics(spec, objs, objs.data.val, "val"))
        if not all(math.isfinite(results[k]) for k in ("test_loss", "test_error")):
            raise NonFiniteLossError(
                f"the run diverged: test loss {results['test_loss']}, test error {results['test_error']} at the "
                f"end; no results.json or final weights were written; {self.where_last_good()}"
            )
        if ctx.is_main:
            if spec.trainer.save_final_model:
                atomic_torch_save(
                    {"model": objs.raw_model.state_dict(), "config": spec.config},
                    self.run_dir / "final_model.pt",
                )
            text = json.dumps(finite_or_null(results), indent=2, allow_nan=False)  # valid JSON, always
            path = atomic_write_text(self.run_dir / "results.json", text)
            self.tracker.summary(results)
            self.tracker.finish()
            log.info(
                "done: test error %.2f%% (top-5 %.2f%%) -> %s",
                results["test_error"],
                results["test_error_top5"],
                path,
            )
        return results


# ---------------------------------------------------------------------------------------------- entry
def execute(
    spec: RunSpec, run_dir: Path, ctx: DistContext, records: RunRecords | None, claimed: bool
) -> dict:
    """Resume or start, train, evaluate, write results.json; the results of a finished identical run.

    Nothing is written into ``run_dir`` before every check passed; then ``records`` (Hydra's job records
    and train.log; None in-process, outside a Hydra job) are written. ``claimed``: this process's
    pre-flight already took the directory (``trainer/rundir.py``), so it is not claimed again.
    """
    if not claimed:
        done = claim_run_dir(run_dir, spec.config, OPERATIONAL_KEYS)  # the lock, or a finished identical run
        if done is not None:
            log.info("%s holds a finished run of this command (results.json); nothing to do", run_dir)
            return done
    if spec.trainer.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    ckpts = CheckpointManager(run_dir / "checkpoints")
    state = load_resume_state(ckpts, spec)  # refuses a run directory of another command

    objs = build(spec, ctx)
    log.info(
        "model %s (%.2fM params) | %s | %s on %s x%d | batch %d, m %d (examples per e(w)) | %d steps/epoch | %s",
        spec.model,
        sum(p.numel() for p in objs.raw_model.parameters()) / 1e6,
        spec.dataset,
        getattr(objs.step_fn, "__name__", str(objs.step_fn)),
        device_name(ctx.device),
        ctx.world_size,
        spec.batch_size,
        spec.m,
        objs.steps_per_epoch,
        objs.step_options.precision.name,
    )
    params = sum(p.numel() for p in objs.raw_model.parameters())
    examples = spec.epochs * objs.steps_per_epoch * spec.batch_size
    if ctx.device.type == "cpu" and (params > PAPER_SCALE_PARAMS or examples > PAPER_SCALE_EXAMPLES):
        log.warning(
            "%s (%.1fM parameters), %d epochs of %d examples, on %s: a GPU-scale run on a CPU, days to weeks at "
            "full length (the run's own estimate follows after its first logged steps); use device=cuda for "
            "real runs",
            spec.model,
            params / 1e6,
            spec.epochs,
            objs.steps_per_epoch * spec.batch_size,
            device_name(ctx.device),
        )
    if spec.label_noise:
        log.info(
            "label noise: asked %.3f, realised %.4f of training labels flipped",
            spec.label_noise,
            objs.data.label_noise_realised,
        )
    run = Run(spec, run_dir, ctx, objs, ckpts)
    if state is not None:
        changes = check_data_fingerprint(
            state.get("data_fingerprint"),
            objs.data.fingerprint,
            checkpoint=state["path"],
            allow=spec.trainer.allow_data_change,
        )
        run.resume(state)  # refuses a checkpoint that does not fit the model
        if changes:
            run.progress.data_changes.append({"from_step": run.progress.global_step, "changes": changes})
        if state["accepted_changes"]:
            log.warning("resuming with config changes: %s", "; ".join(state["accepted_changes"]))
            step = run.progress.global_step
            run.progress.config_changes.append({"from_step": step, "changes": state["accepted_changes"]})
    del state
    if records is not None and ctx.is_main:  # accepted: Hydra's records and train.log, from here on
        records.accept(run_dir, spec.cfg)
    elif records is not None:
        records.discard()  # rank 0 keeps the run's records
    run.train()
    return run.write_results()
