"""Checks of a single-run command before Hydra creates or writes anything.

``@hydra.main`` creates the run directory (and would write ``.hydra/``) before the task function sees a
value, so ``rho='/../../x'`` made a directory outside ``runs/`` and a refused command rewrote a run's
records. :func:`preflight` composes the same config with Hydra's compose API first, validates it,
refuses a locked or finished-by-another-command run directory, takes the lock, and pins the resolved
``hydra.run.dir`` (its ``${now:...}`` is evaluated once, so the directory checked is the one used).
Multirun commands (``-m``) and commands with Hydra flags (``--cfg``, ``--help``...) are left to Hydra;
the job then does the same directory checks (:func:`claim_run_dir`).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from sam.trainer.exit_codes import ExitCode, RunError
from sam.trainer.rundir import finished_results, held_lock, lock_run_dir, release_run_dir

Check = Callable[[Any], None]  # raises ValueError / RunError for a config it refuses


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
    done = finished_results(run_dir, config, ignore)
    if done is not None:
        return done
    if is_main_process():
        lock_run_dir(run_dir)
    return finished_results(run_dir, config, ignore)  # it may have finished while we waited


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
    check: Check,
    ignore: Iterable[str] = (),
    job_name: str = "train",
) -> list[str]:
    """``argv`` with ``hydra.run.dir`` pinned, after every check passed; exits with the code otherwise.

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
        check(cfg)
        config = OmegaConf.to_container(cfg, resolve=True)
        done = claim_run_dir(run_dir, config, ignore)
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
    return [*argv, f"hydra.run.dir={_quote(str(run_dir))}"]
