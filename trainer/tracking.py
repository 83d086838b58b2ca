"""What a run reports and where its numbers came from: metrics.jsonl, W&B, provenance, data fingerprint.

- provenance: the code's commit and the device (results.json);
- inputs: the data fingerprint checked on resume, and every commit that trained the run;
- W&B: online when possible, else offline with a warning (training never stops for it);
- :func:`make_tracker`: ``metrics.jsonl`` always, W&B when ``logger=wandb``.
"""

from __future__ import annotations

import json
import logging
import math
import netrc
import os
import platform
import secrets
import socket
import subprocess
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

from trainer.cluster import ExitCode, RunError
from trainer.rundir import atomic_write_text, disk_full_guard


# ----------------------------------------------------------------------------------------------------
# Where a number came from: the code's commit and the device it ran on (for results.json).
def git_commit(repo: Path) -> str:
    """HEAD of the repository the code runs from, or "unknown" outside a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


# ----------------------------------------------------------------------------------------------------
# What a run read and ran: the data fingerprint checked on resume, and every commit that trained it.
#
# A resume must compute what the interrupted run computed. The data fingerprint (``data/fingerprint.py``:
# split sizes and a content hash) is saved in every checkpoint; a resume that reads other data is refused
# (:class:`DataChangedError`) unless ``trainer.allow_data_change=true`` says it is deliberate, which is
# then logged and recorded. Code may change between a kill and a resume (a fix, a pull), so it is not
# refused but recorded: ``code_history`` lists every (commit, dirty) that ran part of the run, with the
# step it started at, and results.json carries the list.
log = logging.getLogger(__name__)

ALLOW_FLAG = "trainer.allow_data_change"


class DataChangedError(RunError):
    """The data read now is not the data the checkpoint was trained on."""

    exit_code = ExitCode.BAD_INPUT


def check_data_fingerprint(
    saved: dict[str, Any] | None, current: dict[str, Any], *, checkpoint: str, allow: bool
) -> list[str]:
    """The differing fields (``"key: saved -> now"``); raises :class:`DataChangedError` unless ``allow``.

    A checkpoint written before fingerprints existed (``saved`` None) cannot be checked: a warning says so.
    """
    if not saved:
        log.warning(
            "checkpoint %s has no data fingerprint (an older run): the data is not checked", checkpoint
        )
        return []
    diffs = [
        f"{k}: {saved.get(k)!r} -> {current.get(k)!r}"
        for k in sorted(saved.keys() | current.keys())
        if saved.get(k) != current.get(k)
    ]
    if diffs and not allow:
        raise DataChangedError(
            f"the data differs from what checkpoint {checkpoint} was trained on ({'; '.join(diffs)}): "
            "resuming would train on other data. Point dataset.root at the original files, or add "
            f"{ALLOW_FLAG}=true to resume on this data deliberately (recorded in results.json)"
        )
    if diffs:
        log.warning("resuming on changed data (%s=true): %s", ALLOW_FLAG, "; ".join(diffs))
    return diffs


def _git(repo: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def code_state(repo: Path) -> dict[str, Any]:
    """``{"commit": HEAD or "unknown", "dirty": changes (None when unknown), "threads": torch's CPU threads}``.

    The thread count is recorded because CPU reductions are split by thread: a run resumed with another
    count continues correctly but not bit-exactly (``trainer/run.py`` warns).
    """
    head = (_git(repo, "rev-parse", "HEAD") or "").strip() or "unknown"
    status = _git(repo, "status", "--porcelain")
    dirty = None if status is None else bool(status.strip())
    return {"commit": head, "dirty": dirty, "threads": torch.get_num_threads()}


def extend_code_history(
    history: list[dict[str, Any]], state: dict[str, Any], step: int
) -> list[dict[str, Any]]:
    """``history`` plus ``state`` (from ``step`` on) when it differs from the last entry's code."""
    history = [dict(h) for h in history]
    if not history or {k: history[-1].get(k) for k in state} != state:
        history.append({**state, "from_step": step})
    return history


# ----------------------------------------------------------------------------------------------------
# Start a W&B run that never stops training: online when possible, else offline with a warning.
#
# A cluster node without internet (or a user without ``wandb login``) used to cost ~100 s and exit 1, or
# a traceback. Here, on every start and every resume: no API key -> offline at once; the server
# unreachable within ``probe_timeout_s`` -> offline at once; ``wandb.init`` failing online for any other
# reason -> offline. The warning names the local run directory and the ``wandb sync`` command that uploads
# it later. An explicit ``WANDB_MODE`` (offline, disabled) is respected as it is.
log = logging.getLogger(__name__)


def has_api_key(base_url: str) -> bool:
    """An API key in ``WANDB_API_KEY`` or in the netrc entry of the server (where ``wandb login`` puts it)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(base_url).hostname or ""
    path = os.environ.get("NETRC") or os.path.expanduser("~/.netrc")
    try:
        entry = netrc.netrc(path).authenticators(host)
    except (OSError, netrc.NetrcParseError):
        return False
    return bool(entry and entry[2])


def server_reachable(base_url: str, timeout_s: float) -> str | None:
    """None when a TCP connection to the server opens within ``timeout_s``, else why not."""
    url = urlparse(base_url)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "", port), timeout=timeout_s):
            return None
    except OSError as err:
        return f"{url.hostname}:{port} unreachable ({err})"


def init_wandb_run(wandb: Any, *, run_dir: Path, probe_timeout_s: float = 10.0, **init_kwargs: Any) -> Any:
    """``wandb.init(dir=run_dir, **init_kwargs)`` online, or offline with a warning when online fails."""
    requested = os.environ.get("WANDB_MODE", init_kwargs.pop("mode", None) or "online")
    if requested != "online":
        return wandb.init(dir=str(run_dir), mode=requested, **init_kwargs)
    base_url = os.environ.get("WANDB_BASE_URL") or wandb.Settings().base_url
    why = None
    if not has_api_key(base_url):
        why = "no API key (run `wandb login` or set WANDB_API_KEY)"
    else:
        why = server_reachable(base_url, probe_timeout_s)
    if why is None:
        try:
            return wandb.init(dir=str(run_dir), mode="online", **init_kwargs)
        except Exception as err:  # wandb's errors vary by version: CommError, UsageError, TimeoutError...
            why = f"wandb.init failed online: {type(err).__name__}: {str(err).splitlines()[0][:200]}"
    run = wandb.init(dir=str(run_dir), mode="offline", **init_kwargs)
    sync_dir = getattr(run.settings, "sync_dir", None) or f"{run_dir}/wandb/offline-run-*"
    log.warning(
        "W&B cannot log online (%s): logging offline to %s; training goes on. Upload it later with "
        "`wandb sync %s` (every start or resume of this run has its own offline-run-* directory: "
        "`wandb sync %s/wandb/offline-run-*` uploads them all, in order)",
        why,
        sync_dir,
        sync_dir,
        run_dir,
    )
    return run


# ----------------------------------------------------------------------------------------------------
# Where metrics go: ``metrics.jsonl`` in the run directory always, Weights & Biases when asked.
#
# W&B is imported only when ``logger=wandb``; ``WANDB_MODE=offline`` keeps runs on disk for ``wandb
# sync``. The W&B run id is chosen once per run directory and kept across resumes.
log = logging.getLogger(__name__)


class MetricsFile:
    """One JSON object per epoch. On resume, lines past the checkpoint's epoch are dropped."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def truncate_after(self, completed_epochs: int) -> None:
        """Keep the records of epochs 1..``completed_epochs``; rewritten atomically (a kill keeps the old file).

        Records are numbered from 1 (the epoch just completed); a file an older version wrote numbers them
        from 0 and is renumbered here, so a run resumed across the change counts one way.
        """
        if not self.path.exists():
            return
        records = []
        for line in self.path.read_text().splitlines():
            try:
                record = json.loads(line)
                records.append((int(record["epoch"]), record, line))
            except (ValueError, KeyError, TypeError):
                continue  # a half-written last line from a kill
        shift = 1 if records and records[0][0] == 0 else 0
        keep = []
        for epoch, record, line in records:
            if epoch + shift <= completed_epochs:
                keep.append(json.dumps({**record, "epoch": epoch + shift}) if shift else line)
        atomic_write_text(self.path, "".join(k + "\n" for k in keep))

    def append(self, record: dict[str, Any]) -> None:
        line = json.dumps(record) + "\n"
        with (
            disk_full_guard(self.path, len(line)),
            open(self.path, "a") as f,
        ):  # a torn line is dropped on resume
            f.write(line)
            f.flush()


class WandbTracker:
    """A thin wrapper so the trainer never touches ``wandb`` directly."""

    def __init__(
        self,
        *,
        run_dir: Path,
        config: dict[str, Any],
        project: str,
        entity: str | None,
        group: str | None,
        tags: list[str],
        name: str,
        run_id: str | None,
    ) -> None:
        import wandb  # only when logger=wandb

        self._wandb = wandb
        self.run_id = run_id or secrets.token_hex(4)  # W&B ids: [a-z0-9]; kept across resumes
        self.run = init_wandb_run(  # offline with a warning when online fails (wandb_fallback.py)
            wandb,
            run_dir=run_dir,
            project=project,
            entity=entity,
            group=group,
            tags=list(tags),
            name=name,
            id=self.run_id,
            resume="allow",
            config=config,
        )
        self.run.define_metric("epoch")
        self.run.define_metric("epoch/*", step_metric="epoch")
        log.info("W&B run %s (%s) in %s", self.run_id, self.run.settings.mode, run_dir)

    def log_step(self, metrics: dict[str, float], step: int) -> None:
        self.run.log(metrics, step=step)

    def log_epoch(self, metrics: dict[str, float], step: int) -> None:
        self.run.log(
            {f"epoch/{k}": v for k, v in metrics.items() if k != "epoch"} | {"epoch": metrics["epoch"]},
            step=step,
        )

    def summary(self, results: dict[str, Any]) -> None:
        for k, v in results.items():
            if isinstance(v, (int, float, str)):
                self.run.summary[k] = v

    def finish(self, exit_code: int = 0) -> None:
        self.run.finish(exit_code=exit_code)


class NullTracker:
    run_id: str | None = None

    def log_step(self, metrics: dict[str, float], step: int) -> None:
        pass

    def log_epoch(self, metrics: dict[str, float], step: int) -> None:
        pass

    def summary(self, results: dict[str, Any]) -> None:
        pass

    def finish(self, exit_code: int = 0) -> None:
        pass


def make_tracker(spec: Any, run_dir: Path, run_id: str | None, is_main: bool) -> Any:
    """W&B on the main process when ``logger=wandb`` (grouped by sweep), else a tracker that does nothing."""
    if spec.logger == "none" or not is_main:
        return NullTracker()
    settings = spec.config["logger"]
    group = settings["group"]
    if group is None:
        hc = HydraConfig.get()
        group = Path(hc.sweep.dir).name if hc.mode == RunMode.MULTIRUN else run_dir.name
    id_file = run_dir / "wandb_run_id.txt"
    if run_id is None and id_file.exists():
        run_id = id_file.read_text().strip() or None
    tracker = WandbTracker(
        run_dir=run_dir,
        config=spec.config,
        project=settings["project"],
        entity=settings["entity"],
        group=group,
        tags=list(settings["tags"]),
        name=run_dir.name,
        run_id=run_id,
    )
    id_file.write_text(tracker.run_id)
    return tracker


# ----------------------------------------------------------------------------------------------------
# Progress a person can read anywhere: the tqdm bar needs a terminal, SLURM logs have none.
class ProgressLog:
    """Log lines with images/s and the ETA of the epoch and of the run, at most every ``every_s`` seconds.

    Without a terminal (a SLURM log, a pipe) these lines are the only sign of life within an epoch; with
    one, the tqdm bar shows the epoch and only the first estimate of the whole run is logged.
    """

    def __init__(self, steps_per_epoch: int, epochs: int, every_s: float, on_tty: bool, device: str) -> None:
        self.steps_per_epoch, self.epochs, self.every_s = steps_per_epoch, epochs, every_s
        self.on_tty, self.device = on_tty, device
        self.origin: tuple[float, int] | None = None  # (time, global step) when this process began training
        self.last_line = -math.inf

    def start(self, global_step: int) -> None:
        self.origin = (time.monotonic(), global_step)

    def update(self, global_step: int, images_per_s: float, loss: float) -> None:
        now = time.monotonic()
        t0, s0 = self.origin or (now, global_step)
        rate = (global_step - s0) / max(now - t0, 1e-9)  # steps/s of this process so far
        total = self.steps_per_epoch * self.epochs
        epoch, in_epoch = divmod(global_step, self.steps_per_epoch)
        if in_epoch == 0 and global_step:
            epoch, in_epoch = epoch - 1, self.steps_per_epoch
        epoch_eta = (self.steps_per_epoch - in_epoch) / rate if rate > 0 else math.inf
        run_eta = (total - global_step) / rate if rate > 0 else math.inf
        if self.last_line == -math.inf:
            log.info(
                "estimate: %s for the %d remaining steps of %d epochs at %.2f steps/s on %s",
                duration(run_eta),
                total - global_step,
                self.epochs,
                rate,
                self.device,
            )
        elif self.on_tty or now - self.last_line < self.every_s:
            return
        else:
            log.info(
                "epoch %d/%d  step %d/%d  loss %.4f  %.0f img/s  epoch ETA %s  run ETA %s",
                epoch + 1,
                self.epochs,
                in_epoch,
                self.steps_per_epoch,
                loss,
                images_per_s,
                duration(epoch_eta),
                duration(run_eta),
            )
        self.last_line = now


def duration(seconds: float) -> str:
    """``1d 02:03:04`` / ``02:03:04``; ``unknown`` before any step was timed."""
    if not math.isfinite(seconds):
        return "unknown"
    days, rest = divmod(round(seconds), 86400)
    hours, rest = divmod(rest, 3600)
    text = f"{hours:02d}:{rest // 60:02d}:{rest % 60:02d}"
    return f"{days}d {text}" if days else text
