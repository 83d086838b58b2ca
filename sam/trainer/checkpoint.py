"""Checkpoints that never corrupt: temp file + fsync + rename, the last two kept, bad files skipped.

A SLURM job can be killed at any instruction, including inside a write. ``save`` writes
``last.pt.tmp``, fsyncs it, moves the previous ``last.pt`` to ``prev.pt`` and renames the new file to
``last.pt`` (each rename is atomic; the directory is fsynced). ``load_latest`` tries ``last.pt`` then
``prev.pt``; a truncated, foreign or unreadable file is skipped with a warning that names it. When
checkpoint files exist but none is usable, loading fails (:class:`CheckpointError`) rather than silently
starting again from scratch and overwriting them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

FORMAT = "sam-repro-checkpoint-v1"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` that leaves either the old file or the complete new one, never a partial one."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


class CheckpointError(ValueError):
    """``last.pt`` / ``prev.pt`` exist but none of them can be resumed from."""


class CheckpointManager:
    """``last.pt`` and ``prev.pt`` in one directory. ``fault`` lets tests kill the process mid-write."""

    def __init__(self, directory: Path | str, fault: Callable[[str], None] | None = None) -> None:
        self.dir = Path(directory)
        self.last = self.dir / "last.pt"
        self.prev = self.dir / "prev.pt"
        self._fault = fault or (lambda stage: None)
        self._unusable: set[Path] = set()  # found bad by load_latest: never rotated into prev.pt

    def save(self, state: dict[str, Any]) -> Path:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / "last.pt.tmp"
        with open(tmp, "wb") as f:
            torch.save({"format": FORMAT, **state}, f)
            self._fault("written")  # the new file is complete but not yet durable
            f.flush()
            os.fsync(f.fileno())
        self._fault("synced")
        if self.last.exists() and self.last not in self._unusable:
            os.replace(self.last, self.prev)
        self._fault("rotated")  # only prev.pt exists now
        os.replace(tmp, self.last)
        _fsync_dir(self.dir)
        self._unusable.discard(self.last)
        return self.last

    def load_latest(self, map_location: str | torch.device = "cpu") -> dict[str, Any] | None:
        """The newest readable checkpoint, or None when there is none (a fresh run).

        Raises :class:`CheckpointError` when ``last.pt`` or ``prev.pt`` exist but neither is usable: the
        run's progress would be lost, so a person decides (a kill mid-write leaves at most ``last.pt.tmp``).
        """
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
            state["path"] = str(path)
            return state
        if problems:
            raise CheckpointError(
                f"no usable checkpoint in {self.dir}: {'; '.join(problems)}. Resuming needs a {FORMAT} file "
                f"written by train.py (last.pt or prev.pt); move {self.dir} away to start this run from scratch"
            )
        return None
