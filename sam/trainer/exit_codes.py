"""Exit codes of ``train.py``: one per outcome a requeue script must treat differently.

A wrapper around ``python train.py`` (SLURM ``--requeue``, a sweep driver) decides from the exit code
alone whether to requeue, wait, free disk or give up, so every way a run can end has its own code.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    DONE = 0  # finished now, or finished before (the identical command again does nothing)
    CONFIG_ERROR = 1  # Hydra could not compose the config (unknown group option or key)
    BAD_INPUT = 2  # a value, a dataset file or the run directory does not fit this command: fix the command
    NON_FINITE = 3  # the loss or the weights became NaN/inf: the last good checkpoint is kept
    LOCKED = 4  # another process is writing this run directory: do not start a second writer
    DISK_FULL = 5  # a write failed for lack of space: free space, then run the identical command again
    # 128 + N: stopped by signal N after checkpointing (preemption, Ctrl-C): run the identical command again


class RunError(Exception):
    """An expected failure that ``train.py`` reports in one line (no traceback) and exits with."""

    exit_code: ExitCode = ExitCode.BAD_INPUT
