"""One run directory, one writer, one outcome.

``scripts/compare.py`` trusts run directories, so three rules keep one from ever being silently wrong:

- **One writer.** :func:`lock_run_dir` takes ``fcntl.flock`` on ``RUN_DIR/.train.lock``. The kernel drops
  the lock when the process dies (SIGKILL and node-local OOM kills included), so there is never a stale
  lock to clean up (the file itself is removed when the run finishes); a second process (a SLURM requeue while the old job still runs, the same command
  typed twice) gets :class:`RunDirLockedError` instead of mixing its checkpoints into the first one's.
- **results.json means finished.** :func:`finished_results`: the identical command (operational keys such
  as the logger may differ) finds the run done and does nothing; any other command is refused with the
  differing keys named, whatever happened to ``checkpoints/``.
- **Nothing is written before a command is accepted.** Hydra's records (``.hydra/``) and ``train.log`` are
  written by :class:`RunRecords` only once every check passed, so a refused command leaves every file of
  the directory byte-identical (``configs/hydra/job_logging/console.yaml`` keeps Hydra itself from
  writing the log, ``hydra.output_subdir: null`` from writing ``.hydra/``).
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import logging.handlers
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sam.trainer.exit_codes import ExitCode, RunError

log = logging.getLogger(__name__)

LOCK_NAME = ".train.lock"
RECORDS_DIR = ".hydra"  # where Hydra would have written them, so existing tools keep finding them
LOG_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"  # Hydra's default job log format


class RunDirLockedError(RunError):
    """Another live process holds the run directory's lock."""

    exit_code = ExitCode.LOCKED


class RunDirMismatchError(RunError):
    """The run directory holds a (finished) run of another command."""

    exit_code = ExitCode.BAD_INPUT


# ------------------------------------------------------------------------------------------------ lock
def _lock_holders(fd: int) -> list[int]:
    """PIDs holding a flock on the file behind ``fd`` (Linux ``/proc/locks``); [] where unknown."""
    inode = os.fstat(fd).st_ino
    try:
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return []
    pids = []
    for line in lines:
        fields = line.split()
        # "1: FLOCK  ADVISORY  WRITE 12345 fd:01:1234567 0 EOF" (blocked waiters carry a "->" field)
        ours = len(fields) >= 6 and fields[1] == "FLOCK" and fields[5].rsplit(":", 1)[-1] == str(inode)
        if ours and fields[4].isdigit():
            pids.append(int(fields[4]))
    return pids


class RunDirLock:
    """An exclusive ``flock`` on ``RUN_DIR/.train.lock``, held until :meth:`release` or process exit.

    The holder may delete the lock file (:meth:`release` with ``remove=True``: a finished run, or a
    refused command that created it): whoever locks re-checks that the path still names the file it
    locked, so a process that opened the old file never shares the lock with one that made a new file.
    """

    def __init__(self, run_dir: Path | str) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self.created = False  # whether this process created the lock file
        self.made_dirs: list[Path] = []  # directories this process created for it, deepest first
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def _open(self) -> tuple[int, bool] | None:
        try:  # O_RDWR: NFS emulates flock with POSIX locks, which need a file open for writing
            return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644), True
        except FileExistsError:
            try:
                return os.open(self.path, os.O_RDWR), False
            except FileNotFoundError:
                return None  # its holder removed it just now: try again

    def acquire(self) -> RunDirLock:
        """Create the directory and lock file if needed and lock it, or raise :class:`RunDirLockedError`."""
        if self._fd is not None:
            return self
        missing, d = [], self.run_dir
        while not d.exists():
            missing.append(d)
            d = d.parent
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.made_dirs = missing
        while True:
            opened = self._open()
            if opened is None:
                continue
            fd, created = opened
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                holders = _lock_holders(fd) if err.errno in (errno.EAGAIN, errno.EACCES) else []
                os.close(fd)
                if err.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                who = (
                    f"process {', '.join(map(str, holders))} on this machine"
                    if holders
                    else "another process"
                )
                raise RunDirLockedError(
                    f"run directory {self.run_dir} is in use: {who} holds {self.path} (another train.py is "
                    "writing this run; a second writer would mix checkpoints and results). Wait until it "
                    "ends, then run the identical command again to resume or confirm it finished; or use "
                    "another hydra.run.dir"
                ) from None
            if self._same_file(fd):
                self._fd, self.created = fd, created
                return self
            os.close(fd)  # locked a file its holder had just removed: lock the current one instead

    def _same_file(self, fd: int) -> bool:
        try:
            return os.stat(self.path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            return False

    def release(self, remove: bool = False) -> None:
        """Drop the lock; ``remove`` deletes the lock file first (only while holding it)."""
        if self._fd is None:
            return
        if remove and self._same_file(self._fd):
            self.path.unlink()
        os.close(self._fd)  # closing the only descriptor drops the flock
        self._fd = None


_HELD: dict[Path, RunDirLock] = {}


def lock_run_dir(run_dir: Path | str) -> RunDirLock:
    """The lock of ``run_dir`` for this process: taken once, then the same lock (pre-Hydra check and job)."""
    key = Path(os.path.abspath(run_dir))
    if key not in _HELD:
        _HELD[key] = RunDirLock(key).acquire()
    return _HELD[key]


def held_lock(run_dir: Path | str) -> RunDirLock | None:
    return _HELD.get(Path(os.path.abspath(run_dir)))


def release_run_dir(run_dir: Path | str, remove: bool = False) -> None:
    lock = _HELD.pop(Path(os.path.abspath(run_dir)), None)
    if lock is not None:
        lock.release(remove=remove)


# ------------------------------------------------------------------------------------- finished runs
def flatten_config(tree: Any, prefix: str = "") -> dict[str, Any]:
    """A nested config as ``{"a.b.c": value}``."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for k, v in tree.items():
        out.update(flatten_config(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def config_differences(old: dict[str, Any], new: dict[str, Any], ignore: Iterable[str] = ()) -> list[str]:
    """``"key: old -> new"`` for every dotted key that differs, except ``ignore`` keys and their subkeys."""
    ignore = tuple(ignore)
    flat_old, flat_new = flatten_config(old), flatten_config(new)
    keys = sorted(
        k
        for k in flat_old.keys() | flat_new.keys()
        if flat_old.get(k, "<absent>") != flat_new.get(k, "<absent>")
        and not any(k == op or k.startswith(op + ".") for op in ignore)
    )
    return [f"{k}: {flat_old.get(k, '<absent>')!r} -> {flat_new.get(k, '<absent>')!r}" for k in keys]


def read_results(run_dir: Path | str) -> dict[str, Any] | None:
    """``RUN_DIR/results.json`` as a dict, None when there is none; unreadable -> :class:`RunDirMismatchError`."""
    path = Path(run_dir) / "results.json"
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        results = json.loads(text)
    except ValueError as err:
        raise RunDirMismatchError(
            f"{path} is not valid JSON ({err}); the run directory looks finished but its record is damaged. "
            "Move it away to run this command again"
        ) from None
    if not isinstance(results, dict):
        raise RunDirMismatchError(f"{path} holds {type(results).__name__}, not a results object")
    return results


def finished_results(
    run_dir: Path | str, config: dict[str, Any], ignore: Iterable[str] = ()
) -> dict[str, Any] | None:
    """The results of a finished run of this very command in ``run_dir``; None when it is not finished.

    Raises :class:`RunDirMismatchError` naming the keys when results.json was written by another command.
    """
    results = read_results(run_dir)
    if results is None:
        return None
    saved = results.get("config")
    if not isinstance(saved, dict):
        log.warning("%s/results.json holds no config to compare this command with", run_dir)
        return results
    diffs = config_differences(saved, config, ignore)
    if diffs:
        shown = ", ".join(diffs[:8]) + (f" (+{len(diffs) - 8} more)" if len(diffs) > 8 else "")
        raise RunDirMismatchError(
            f"run directory {run_dir} holds a finished run of another command ({shown}); nothing was "
            "changed. Use another hydra.run.dir for this command"
        )
    return results


# ------------------------------------------------------------------------------------------- records
class RunRecords:
    """Hydra's records of a job, held back until the command is accepted.

    Log records are kept in memory from :meth:`start` on; :meth:`accept` writes ``.hydra/`` (as Hydra
    would) and appends them, and everything logged later, to ``train.log``; :meth:`discard` drops them.
    """

    def __init__(self) -> None:
        self._buffer = logging.handlers.MemoryHandler(capacity=sys.maxsize, flushLevel=logging.CRITICAL + 1)
        self.file_handler: logging.FileHandler | None = None

    def start(self) -> RunRecords:
        logging.getLogger().addHandler(self._buffer)
        return self

    def accept(
        self, run_dir: Path | str, task_config: Any, hydra_config: Any = None, log_name: str = "train.log"
    ) -> None:
        """Write the records of the accepted command; ``hydra_config`` defaults to this job's."""
        run_dir = Path(run_dir)
        write_hydra_records(run_dir, task_config, hydra_config)
        handler = logging.FileHandler(run_dir / log_name, mode="a")
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        root = logging.getLogger()
        root.addHandler(handler)
        self._buffer.setTarget(handler)
        self._buffer.flush()
        root.removeHandler(self._buffer)
        self.file_handler = handler

    def discard(self) -> None:
        logging.getLogger().removeHandler(self._buffer)
        self._buffer.buffer.clear()

    def close(self) -> None:
        self.discard()
        if self.file_handler is not None:
            logging.getLogger().removeHandler(self.file_handler)
            self.file_handler.close()
            self.file_handler = None


def write_hydra_records(run_dir: Path | str, task_config: Any, hydra_config: Any = None) -> None:
    """``.hydra/config.yaml``, ``hydra.yaml`` and ``overrides.yaml``, the files Hydra writes per job."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    hydra_cfg = hydra_config if hydra_config is not None else HydraConfig.instance().cfg  # {"hydra": ...}
    out = Path(run_dir) / RECORDS_DIR
    out.mkdir(parents=True, exist_ok=True)
    for name, node in (
        ("config.yaml", task_config),
        ("hydra.yaml", hydra_cfg),
        ("overrides.yaml", hydra_cfg.hydra.overrides.task),
    ):
        (out / name).write_text(OmegaConf.to_yaml(node))
