"""Preemption: SIGTERM / SIGUSR1 / SIGUSR2 -> finish the step, checkpoint, exit for requeue.

SLURM sends SIGTERM (and, with ``--signal``, SIGUSR1/2) before it kills a job. The handler only sets a
flag; the training loop checks it between steps, writes a checkpoint and calls :meth:`exit`. If another
handler was installed before ours (submitit's, which requeues the job), it is called then, so the
submitit launcher's requeue path still runs; otherwise the process exits with 128 + signal number.

:class:`FaultInjector` is test-only: it lets a test kill or signal a real training process at an exact
point (``SAM_REPRO_FAULT``), so "killed anywhere, resumed exactly" can be checked end to end.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections import Counter
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)

SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGUSR1", "SIGUSR2") if hasattr(signal, name))


class PreemptionHandler:
    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def install(self) -> PreemptionHandler:
        for sig in SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    @property
    def requested(self) -> bool:
        return self.received is not None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is None:
            log.warning(
                "received %s: finishing this step, then checkpointing and exiting",
                signal.Signals(signum).name,
            )
        self.received = signum

    def exit(self) -> None:
        """Hand over to the previous handler (submitit requeue) or exit with 128 + signum."""
        signum = self.received
        assert signum is not None
        previous = self._previous.get(signum)
        self.uninstall()
        if callable(previous):
            previous(signum, None)
        sys.exit(128 + signum)


FAULT_ENV = "SAM_REPRO_FAULT"
FAULT_POINTS = ("step", "ckpt_written", "ckpt_synced", "ckpt_rotated")


class FaultInjector:
    """Test-only. ``SAM_REPRO_FAULT=POINT:N[:ACTION],...`` fires ACTION the N-th time this process reaches POINT.

    Points: ``step`` (after each training step, where the loop looks at the preemption flag) and
    ``ckpt_written`` / ``ckpt_synced`` / ``ckpt_rotated`` (inside :meth:`CheckpointManager.save`).
    ACTION is a signal name sent to this very process (default ``KILL``: nothing runs after it, like a
    node failure; ``TERM`` / ``USR1`` take the preemption path) or ``NAN`` (returned to the caller, which
    makes the weights NaN). Unset, it does nothing.
    """

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
            if point not in FAULT_POINTS or not count.isdigit() or int(count) < 1 or not known_action:
                raise ValueError(
                    f"{FAULT_ENV}={spec!r}: {item!r} is not POINT:N[:ACTION] with POINT one of "
                    f"{', '.join(FAULT_POINTS)}, N >= 1 and ACTION a signal name (KILL, TERM, USR1, ...) or NAN"
                )
            self._rules[point] = (int(count), action)

    @classmethod
    def from_env(cls) -> FaultInjector:
        return cls(os.environ.get(FAULT_ENV, ""))

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
