"""The run directory: one writer, writes a kill cannot corrupt, checkpoints, and the pre-Hydra claim.

Sections, bottom-up: a full disk gives one clear error (:func:`disk_full_guard`); atomic writes
(:func:`atomic_write`); checkpoints (:class:`CheckpointManager`: ``last.pt`` + ``prev.pt``); the lock,
finished-run check and records (:func:`lock_run_dir`, :func:`finished_results`, :class:`RunRecords`);
and :func:`preflight`, which claims the directory before Hydra creates or writes anything.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import logging.handlers
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported where used: the pre-flight answers before torch loads
    import torch

from trainer.cluster import ExitCode, RunError
from trainer.spec import LEGACY_DEFAULTS

# ----------------------------------------------------------------------------------------------------
# A full disk (or quota) while writing: one clear error, no partial file left behind.
#
# Every file the trainer writes goes through :func:`disk_full_guard`: on ``ENOSPC`` / ``EDQUOT`` it
# removes the half-written temporary file and raises :class:`DiskFullError` naming the path, the bytes the
# write needed and the bytes free there; ``train.py`` exits with ``ExitCode.DISK_FULL``. The files already
# in place (``last.pt``, ``prev.pt``, ``results.json``) are untouched, because writes go to a temporary
# file that only a complete, fsynced write renames over them.
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


class DiskFullError(RunError):
    """A write failed for lack of space; the partial file was removed."""

    exit_code = ExitCode.DISK_FULL


def disk_full_cause(err: BaseException | None) -> OSError | None:
    """The ENOSPC/EDQUOT error in ``err``'s chain: torch.save's zip writer re-raises it as a RuntimeError."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in DISK_FULL_ERRNOS:
            return err
        err = err.__cause__ or err.__context__
    return None


def is_disk_full(err: BaseException) -> bool:
    return disk_full_cause(err) is not None


def free_bytes(path: Path | str) -> int | None:
    """Bytes an unprivileged process may still write on the filesystem holding ``path`` (or its parent)."""
    path = Path(path)
    for candidate in (path, *path.parents):
        try:
            st = os.statvfs(candidate)
        except OSError:
            continue
        return st.f_bavail * st.f_frsize
    return None


def state_nbytes(obj: Any) -> int:
    """Bytes of the tensors inside ``obj`` (dicts, lists, tuples): about what ``torch.save`` writes."""
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(state_nbytes(v) for v in obj.values())
    if isinstance(obj, list | tuple):
        return sum(state_nbytes(v) for v in obj)
    return 0


def _size(n: int | None) -> str:
    if n is None:
        return "unknown"
    return f"{n} bytes ({n / 2**20:.1f} MiB)"


@contextmanager
def disk_full_guard(
    path: Path | str, needed: int | None = None, remove: Iterable[Path | str] = ()
) -> Iterator[None]:
    """Turn ENOSPC/EDQUOT inside the block (also when chained) into :class:`DiskFullError`, removing ``remove``."""
    try:
        yield
    except Exception as err:
        cause = disk_full_cause(err)
        if cause is None:
            raise
        for leftover in remove:
            Path(leftover).unlink(missing_ok=True)
        free = free_bytes(Path(path).parent)
        quota = " (disk quota exceeded)" if cause.errno == errno.EDQUOT else ""
        raise DiskFullError(
            f"no space left on the device{quota} writing {path}: it needs about {_size(needed)}, "
            f"{_size(free)} are free there. Nothing partial was left and the files already there are "
            "intact: free space, then run the identical command again to resume"
        ) from err


# ----------------------------------------------------------------------------------------------------
# Files that a kill at any instruction leaves either old or complete, never partial.
#
# The one way the trainer writes a file that a resume or a reader relies on: a temporary file beside the
# target, flushed and fsynced, renamed over the target (atomic), the directory fsynced so the rename is
# durable too.
def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(
    path: Path | str,
    write: Callable[[IO[bytes]], Any],
    *,
    before_replace: Callable[[], Any] | None = None,
    on_stage: Callable[[str], Any] | None = None,
    size_hint: int | None = None,
) -> Path:
    """``write(f)`` into ``PATH.tmp``, fsync, ``before_replace()``, rename over ``path``, fsync the directory.

    ``on_stage`` is called with ``"written"`` (complete, not yet durable) and ``"synced"`` (durable, not yet
    renamed): the points a kill can hit, for tests that kill there. A full disk raises
    :class:`~trainer.rundir.DiskFullError` (naming ``path`` and ``size_hint`` bytes) with the
    temporary file removed and ``path`` untouched.
    """
    path = Path(path)
    stage = on_stage or (lambda name: None)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with disk_full_guard(path, size_hint, remove=[tmp]), open(tmp, "wb") as f:
            write(f)
            stage("written")
            f.flush()
            os.fsync(f.fileno())
        stage("synced")
        if before_replace is not None:
            before_replace()
        os.replace(tmp, path)
    except Exception:
        tmp.unlink(missing_ok=True)  # a failed write leaves the old file and nothing else (a kill: the .tmp)
        raise
    fsync_dir(path.parent)
    return path


def atomic_write_text(path: Path | str, text: str) -> Path:
    data = text.encode()
    return atomic_write(path, lambda f: f.write(data), size_hint=len(data))


def atomic_torch_save(obj: Any, path: Path | str) -> Path:
    """``torch.save`` that leaves either the old file or the complete new one."""
    import torch

    return atomic_write(path, lambda f: torch.save(obj, f), size_hint=state_nbytes(obj))


# ----------------------------------------------------------------------------------------------------
# Checkpoints that never corrupt: temp file + fsync + rename, the last two kept, bad files skipped.
#
# A SLURM job can be killed at any instruction, including inside a write. ``save`` writes
# ``last.pt.tmp``, fsyncs it, moves the previous ``last.pt`` to ``prev.pt`` and renames the new file to
# ``last.pt`` (each rename is atomic; the directory is fsynced). ``load_latest`` tries ``last.pt`` then
# ``prev.pt``; a truncated, foreign or unreadable file is skipped with a warning that names it. When
# checkpoint files exist but none is usable, loading fails (:class:`CheckpointError`) rather than silently
# starting again from scratch and overwriting them.
log = logging.getLogger(__name__)

FORMAT = "sam-repro-checkpoint-v1"


class CheckpointError(ValueError):
    """``last.pt`` / ``prev.pt`` exist but none of them can be resumed from."""


class CheckpointManager:
    """``last.pt`` and ``prev.pt`` in one directory."""

    def __init__(self, directory: Path | str) -> None:
        self.dir = Path(directory)
        self.last = self.dir / "last.pt"
        self.prev = self.dir / "prev.pt"
        self._unusable: set[Path] = set()  # found bad by load_latest: never rotated into prev.pt

    def save(self, state: dict[str, Any], on_stage: Callable[[str], Any] | None = None) -> Path:
        """Write ``last.pt`` atomically, the previous one kept as ``prev.pt``.

        ``on_stage`` sees ``written``, ``synced`` and ``rotated`` (``last.pt`` moved to ``prev.pt``, the
        new file not yet renamed): the points a kill can hit, for tests.
        """
        import torch

        stage = on_stage or (lambda name: None)
        self.dir.mkdir(parents=True, exist_ok=True)

        def rotate() -> None:
            if self.last.exists() and self.last not in self._unusable:
                os.replace(self.last, self.prev)
            stage("rotated")  # only prev.pt exists now

        atomic_write(
            self.last,
            lambda f: torch.save({"format": FORMAT, **state}, f),
            before_replace=rotate,
            on_stage=stage,
            size_hint=state_nbytes(state),
        )
        self._unusable.discard(self.last)
        return self.last

    def load_latest(self, map_location: str | torch.device = "cpu") -> dict[str, Any] | None:
        """The newest readable checkpoint, or None when there is none (a fresh run).

        Raises :class:`CheckpointError` when ``last.pt`` or ``prev.pt`` exist but neither is usable: the
        run's progress would be lost, so a person decides (a kill mid-write leaves at most ``last.pt.tmp``).
        """
        import torch

        problems = []
        for path in (self.last, self.prev):
            if not path.exists():
                continue
            try:
                state = torch.load(path, map_location=map_location, weights_only=True)
            except Exception as err:  # truncated pickle, zip error, foreign content...
                first = (str(err).strip().splitlines() or [""])[0].split(". ")[0]  # torch's runs to 10 lines
                why = f"{type(err).__name__}: {first[:160]}"
                problems.append(f"{path}: unreadable ({why})")
                self._unusable.add(path)
                log.warning("checkpoint %s is unreadable (%s); skipping it", path, why)
                continue
            if not isinstance(state, dict) or state.get("format") != FORMAT:
                problems.append(f"{path}: not a sam-repro checkpoint (no format={FORMAT!r})")
                self._unusable.add(path)
                log.warning(
                    "checkpoint %s is not a sam-repro checkpoint (no format=%r); skipping it", path, FORMAT
                )
                continue
            weights = state.get("model") if isinstance(state.get("model"), dict) else {}
            if not all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point()):
                problems.append(f"{path}: NaN/inf weights (changed after it was written: never resumed from)")
                self._unusable.add(path)
                log.warning("checkpoint %s holds NaN/inf weights; skipping it", path)
                continue
            state["path"] = str(path)
            return state
        if problems:
            raise CheckpointError(
                f"no usable checkpoint in {self.dir}: {'; '.join(problems)}. Resuming needs a {FORMAT} file "
                f"written by train.py (last.pt or prev.pt); move {self.dir} away to start this run from scratch"
            )
        return None


# ----------------------------------------------------------------------------------------------------
# One run directory, one writer, one outcome.
#
# ``scripts/compare.py`` trusts run directories, so three rules keep one from ever being silently wrong:
#
# - **One writer.** :func:`lock_run_dir` takes ``fcntl.flock`` on ``RUN_DIR/.train.lock``. The kernel drops
#   the lock when the process dies (SIGKILL and node-local OOM kills included), so there is never a stale
#   lock to clean up (the file itself is removed when the run finishes); a second process (a SLURM requeue while the old job still runs, the same command
#   typed twice) gets :class:`RunDirLockedError` instead of mixing its checkpoints into the first one's.
# - **results.json means finished.** :func:`finished_results`: the identical command (operational keys such
#   as the logger may differ) finds the run done and does nothing; any other command is refused with the
#   differing keys named, whatever happened to ``checkpoints/``.
# - **Nothing is written before a command is accepted.** Hydra's records (``.hydra/``) and ``train.log`` are
#   written by :class:`RunRecords` only once every check passed, so a refused command leaves every file of
#   the directory byte-identical (``configs/hydra/job_logging/console.yaml`` keeps Hydra itself from
#   writing the log, ``hydra.output_subdir: null`` from writing ``.hydra/``).
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
    """``"key: old -> new"`` for every dotted key that differs, except ``ignore`` keys and their subkeys.

    A key the old config lacks matches when the new value is its ``LEGACY_DEFAULTS`` value (what the code
    computed before the key existed): a run started before an update resumes and finishes as it would have.
    """
    ignore = tuple(ignore)
    flat_old, flat_new = flatten_config(old), flatten_config(new)
    keys = sorted(
        k
        for k in flat_old.keys() | flat_new.keys()
        if flat_old.get(k, "<absent>") != flat_new.get(k, "<absent>")
        and not any(k == op or k.startswith(op + ".") for op in ignore)
        and not (k not in flat_old and k in LEGACY_DEFAULTS and flat_new[k] == LEGACY_DEFAULTS[k])
    )
    return [f"{k}: {flat_old.get(k, '<absent>')!r} -> {flat_new.get(k, '<absent>')!r}" for k in keys]


def keys_added_since(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Keys the new config has and the old one lacks (matched through ``LEGACY_DEFAULTS``), to record."""
    flat_old, flat_new = flatten_config(old), flatten_config(new)
    return sorted(k for k in flat_new.keys() - flat_old.keys() if k in LEGACY_DEFAULTS)


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
        raise RunDirMismatchError(
            f"{Path(run_dir) / 'results.json'} holds no config (written by older code, or edited), so it "
            "cannot tell whether this command already ran there; nothing was changed. Use another "
            "hydra.run.dir, or move the directory away"
        )
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


# ----------------------------------------------------------------------------------------------------
# Checks of a single-run command before Hydra creates or writes anything.
#
# ``@hydra.main`` creates the run directory (and would write ``.hydra/``) before the task function sees a
# value, so ``rho='/../../x'`` made a directory outside ``runs/`` and a refused command rewrote a run's
# records. :func:`preflight` composes the same config with Hydra's compose API first, validates it,
# refuses a locked or finished-by-another-command run directory, takes the lock, and pins the resolved
# ``hydra.run.dir`` (its ``${now:...}`` is evaluated once, so the directory checked is the one used).
# Multirun commands (``-m``) and commands with Hydra flags (``--cfg``, ``--help``...) are left to Hydra;
# the job then does the same directory checks (:func:`claim_run_dir`).
MakeSpec = Callable[[Any], Any]  # validates a composed config (ValueError / RunError) and returns its RunSpec
PREFLIGHT: dict[str, Any] = {}  # run directory -> the spec its pre-flight made and claimed, in this process


def is_main_process() -> bool:
    """Global rank 0 (or no launcher): the process that owns the run directory and its lock."""
    return int(os.environ.get("RANK", "0")) == 0


def claim_run_dir(
    run_dir: Path | str, config: dict[str, Any], ignore: Iterable[str] = ()
) -> dict[str, Any] | None:
    """Lock ``run_dir`` (rank 0) and return the results of a finished identical run, else None.

    Raises :class:`RunDirLockedError` (another writer) or :class:`RunDirMismatchError` (finished by
    another command). A finished directory is recognised without taking its lock, so no lock file is
    created in it.
    """
    ignore = tuple(ignore)
    try:
        for parent in (Path(run_dir), *Path(run_dir).parents):
            if parent.exists() and not parent.is_dir():
                raise NotADirectoryError(errno.ENOTDIR, "a regular file is in the way", str(parent))
        done = finished_results(run_dir, config, ignore)
        if done is not None:
            if is_main_process():
                note = restore_final_model(run_dir, config)
                if note:
                    log.warning("%s", note)
            return done
        if is_main_process():
            lock_run_dir(run_dir)
        return finished_results(run_dir, config, ignore)  # it may have finished while we waited
    except OSError as err:
        if is_disk_full(err):
            raise
        raise RunDirUnusableError(run_dir, err) from None


def restore_final_model(run_dir: Path | str, config: dict[str, Any]) -> str | None:
    """A finished run whose ``final_model.pt`` was deleted gets it back from its last checkpoint.

    The checkpoint written when training ended (``finished``) holds exactly the final weights. Returns a
    line for the log when something was restored or is gone for good, None when nothing was missing.
    """
    import torch

    run_dir = Path(run_dir)
    final = run_dir / "final_model.pt"
    if final.exists() or not config.get("trainer", {}).get("save_final_model", True):
        return None
    for path in (run_dir / "checkpoints" / "last.pt", run_dir / "checkpoints" / "prev.pt"):
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # missing, truncated or foreign: try the other one
            continue
        if isinstance(state, dict) and state.get("format") == FORMAT and state.get("finished"):
            atomic_torch_save({"model": state["model"], "config": state["config"]}, final)
            return f"{final} was missing: restored from {path}, which holds the run's final weights"
    return (
        f"{final} is gone and no finished checkpoint holds the final weights any more; results.json stands, "
        "the weights of this run are lost"
    )


class RunDirUnusableError(RunError):
    """``hydra.run.dir`` cannot hold a run: a regular file on the way, a read-only or denied path."""

    exit_code = ExitCode.BAD_INPUT

    def __init__(self, run_dir: Path | str, err: OSError) -> None:
        where = f" ({err.filename})" if err.filename and str(err.filename) != str(run_dir) else ""
        super().__init__(
            f"hydra.run.dir={str(run_dir)!r} cannot be used as a run directory: {err.strerror or err}{where}. "
            "Point hydra.run.dir at a directory this process can create and write"
        )


def release_claim(run_dir: Path | str, *, refused: bool) -> None:
    """Drop this process's lock on ``run_dir``, leaving the directory as a reader expects it.

    A run that ended removes the lock file (nothing is left to guard); a refused command removes only
    what it created itself (the lock file, then the directories made for it if they are empty), so the
    file system is as it found it.
    """
    lock = held_lock(run_dir)
    if lock is None:
        return
    release_run_dir(run_dir, remove=lock.created or not refused)
    for made in lock.made_dirs if refused else ():
        with contextlib.suppress(OSError):  # only an empty directory goes
            made.rmdir()


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _exit(code: ExitCode, message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(int(code))


def preflight(
    argv: list[str],
    *,
    config_dir: Path,
    config_name: str,
    make_spec: MakeSpec,
    ignore: Iterable[str] = (),
    job_name: str = "train",
) -> list[str]:
    """``argv`` with ``hydra.run.dir`` pinned, after every check passed; exits with the code otherwise.

    ``make_spec(cfg)`` validates the composed config and derives the run's facts (``RunSpec``): the job
    in this process takes that spec and this claim (:func:`take_preflight`) instead of doing both again.

    Exits 0 when the run directory holds a finished run of this command (nothing to do), 2 for a refused
    value or directory, 4 when another process holds the directory. A command Hydra cannot compose is
    returned unchanged, for Hydra to report.
    """
    if any(a.startswith("-") for a in argv) or any(a.replace(" ", "") == "hydra.mode=MULTIRUN" for a in argv):
        return argv
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf, open_dict

    try:
        with initialize_config_dir(config_dir=str(config_dir), job_name=job_name, version_base="1.3"):
            cfg = compose(config_name, overrides=argv, return_hydra_config=True)
    except Exception:  # Hydra reports composition errors itself, with its own exit code
        return argv
    HydraConfig.instance().set_config(cfg)  # for ${hydra:...} and ${now:...} in the config
    run_dir = Path(os.path.abspath(str(OmegaConf.select(cfg, "hydra.run.dir"))))
    with open_dict(cfg):
        del cfg["hydra"]
    try:
        spec = make_spec(cfg)
        done = claim_run_dir(run_dir, spec.config, ignore)
    except (RunError, ValueError) as err:
        release_claim(run_dir, refused=True)
        _exit(getattr(err, "exit_code", ExitCode.BAD_INPUT), str(err))
    if done is not None:
        release_claim(run_dir, refused=True)
        error = done.get("test_error")
        print(
            f"run directory {run_dir} holds a finished run of this command "
            f"(results.json: test_error {error}); nothing to do"
        )
        raise SystemExit(int(ExitCode.DONE))
    PREFLIGHT[str(run_dir)] = spec
    return [*argv, f"hydra.run.dir={_quote(str(run_dir))}"]


def take_preflight(run_dir: Path | str) -> Any | None:
    """The spec this process's :func:`preflight` made for ``run_dir`` (its claim held), once; else None."""
    return PREFLIGHT.pop(os.path.abspath(str(run_dir)), None)
