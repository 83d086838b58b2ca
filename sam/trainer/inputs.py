"""What a run read and ran: the data fingerprint checked on resume, and every commit that trained it.

A resume must compute what the interrupted run computed. The data fingerprint (``data/fingerprint.py``:
split sizes and a content hash) is saved in every checkpoint; a resume that reads other data is refused
(:class:`DataChangedError`) unless ``trainer.allow_data_change=true`` says it is deliberate, which is
then logged and recorded. Code may change between a kill and a resume (a fix, a pull), so it is not
refused but recorded: ``code_history`` lists every (commit, dirty) that ran part of the run, with the
step it started at, and results.json carries the list.
"""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path
from typing import Any

from sam.trainer.exit_codes import ExitCode, RunError

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
    """``{"commit": HEAD or "unknown", "dirty": tracked or untracked changes (None when unknown)}``."""
    head = (_git(repo, "rev-parse", "HEAD") or "").strip() or "unknown"
    status = _git(repo, "status", "--porcelain")
    return {"commit": head, "dirty": None if status is None else bool(status.strip())}


def extend_code_history(
    history: list[dict[str, Any]], state: dict[str, Any], step: int
) -> list[dict[str, Any]]:
    """``history`` plus ``state`` (from ``step`` on) when it differs from the last entry's code."""
    history = [dict(h) for h in history]
    if not history or {k: history[-1].get(k) for k in state} != state:
        history.append({**state, "from_step": step})
    return history
