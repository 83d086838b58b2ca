"""Test-only: ``python tests/faults.py ARGS`` is ``python train.py ARGS`` with a fault at an exact point.

``SAM_REPRO_FAULT=POINT:N[:ACTION],...`` fires ACTION the N-th time this process reaches POINT, through
the trainer's hooks (``trainer.hooks``), so "killed anywhere, resumed exactly" is checked end to end
on a real training process. Points: ``step`` (after each training step, where the loop looks at the
preemption flag) and ``ckpt_written`` / ``ckpt_synced`` / ``ckpt_rotated`` (inside a checkpoint write).
ACTION is a signal name sent to this very process (default ``KILL``: nothing runs after it, like a node
failure; ``TERM`` / ``USR1`` take the preemption path) or ``NAN`` (the weights become NaN, so every
later loss is NaN). The shipped ``train.py`` knows nothing of this.
"""

from __future__ import annotations

import logging
import math
import os
import runpy
import signal
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
FAULT_ENV = "SAM_REPRO_FAULT"
POINTS = {"step": "after_step", "ckpt_written": "checkpoint_written", "ckpt_synced": "checkpoint_synced"}
POINTS["ckpt_rotated"] = "checkpoint_rotated"

log = logging.getLogger("faults")


class FaultInjector:
    """``hit(point)`` counts visits; on the N-th it sends the signal (or returns ``"NAN"``)."""

    def __init__(self, spec: str = "") -> None:
        self._rules: dict[str, tuple[int, str]] = {}
        self._seen: Counter[str] = Counter()
        for item in filter(None, (part.strip() for part in spec.split(","))):
            point, _, rest = item.partition(":")
            count, _, action = rest.partition(":")
            action = (action or "KILL").upper()
            known_action = action == "NAN" or isinstance(
                getattr(signal, f"SIG{action}", None), signal.Signals
            )
            if point not in POINTS or not count.isdigit() or int(count) < 1 or not known_action:
                raise ValueError(
                    f"{FAULT_ENV}={spec!r}: {item!r} is not POINT:N[:ACTION] with POINT one of "
                    f"{', '.join(POINTS)}, N >= 1 and ACTION a signal name (KILL, TERM, USR1, ...) or NAN"
                )
            self._rules[point] = (int(count), action)

    def hit(self, point: str) -> str | None:
        """Count one visit to ``point``; on the N-th send the signal now. Returns the action that fired."""
        if point not in self._rules:
            return None
        self._seen[point] += 1
        count, action = self._rules[point]
        if self._seen[point] != count:
            return None
        log.warning("%s: %s at %s #%d", FAULT_ENV, action, point, count)
        if action != "NAN":
            os.kill(os.getpid(), getattr(signal, f"SIG{action}"))
        return action

    def hook(self, stage: str, run: Any) -> None:
        """A ``trainer.hooks`` hook: the points are the trainer's stages under their short names."""
        point = next(p for p, s in POINTS.items() if s == stage)
        if self.hit(point) == "NAN":
            with torch.no_grad():
                for p in run.objs.raw_model.parameters():
                    p.fill_(math.nan)


def main() -> None:
    sys.path[0] = str(REPO)  # train.py's imports, not tests/
    from trainer.hooks import add_hook

    add_hook(FaultInjector(os.environ.get(FAULT_ENV, "")).hook)
    sys.argv[0] = str(REPO / "train.py")
    runpy.run_path(str(REPO / "train.py"), run_name="__main__")


if __name__ == "__main__":
    main()
