"""A full disk (or quota) while writing: one clear error, no partial file left behind.

Every file the trainer writes goes through :func:`disk_full_guard`: on ``ENOSPC`` / ``EDQUOT`` it
removes the half-written temporary file and raises :class:`DiskFullError` naming the path, the bytes the
write needed and the bytes free there; ``train.py`` exits with ``ExitCode.DISK_FULL``. The files already
in place (``last.pt``, ``prev.pt``, ``results.json``) are untouched, because writes go to a temporary
file that only a complete, fsynced write renames over them.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sam.trainer.exit_codes import ExitCode, RunError

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
