"""Preemption: SIGTERM / SIGUSR1 / SIGUSR2 -> finish the step, checkpoint, exit for requeue.

SLURM sends SIGTERM (and, with ``--signal``, SIGUSR1/2) before it kills a job. The handler only sets a
flag; the training loop checks it between steps, writes a checkpoint and calls :meth:`exit`. If another
handler was installed before ours (submitit's, which requeues the job), it is called then, so the
submitit launcher's requeue path still runs; otherwise the process exits with 128 + signal number.
"""

from __future__ import annotations

import logging
import signal
import sys
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
