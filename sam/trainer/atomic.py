"""Files that a kill at any instruction leaves either old or complete, never partial.

The one way the trainer writes a file that a resume or a reader relies on: a temporary file beside the
target, flushed and fsynced, renamed over the target (atomic), the directory fsynced so the rename is
durable too.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch


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
) -> Path:
    """``write(f)`` into ``PATH.tmp``, fsync, ``before_replace()``, rename over ``path``, fsync the directory.

    ``on_stage`` is called with ``"written"`` (complete, not yet durable) and ``"synced"`` (durable, not yet
    renamed): the points a kill can hit, for tests that kill there.
    """
    path = Path(path)
    stage = on_stage or (lambda name: None)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
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
    return atomic_write(path, lambda f: f.write(text.encode()))


def atomic_torch_save(obj: Any, path: Path | str) -> Path:
    """``torch.save`` that leaves either the old file or the complete new one."""
    return atomic_write(path, lambda f: torch.save(obj, f))
