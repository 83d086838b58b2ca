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

from sam.trainer.atomic import atomic_write

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
        )
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
