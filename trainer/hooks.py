"""Named points of a run where extra code may run: ``hook(stage, run)`` for each registered hook.

Stages: ``after_step`` (after every training step, before the loop looks at the preemption flag) and
``checkpoint_written`` / ``checkpoint_synced`` / ``checkpoint_rotated`` (inside each checkpoint write).
The trainer registers none; ``tests/faults.py`` registers one that kills or signals the process, or
turns the weights NaN, at an exact point, to test "killed anywhere, resumed exactly" end to end.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

STAGES = ("after_step", "checkpoint_written", "checkpoint_synced", "checkpoint_rotated")

Hook = Callable[[str, Any], None]  # (stage, the trainer.run.Run)
HOOKS: list[Hook] = []


def add_hook(hook: Hook) -> None:
    HOOKS.append(hook)


def fire(stage: str, run: Any) -> None:
    for hook in HOOKS:
        hook(stage, run)
