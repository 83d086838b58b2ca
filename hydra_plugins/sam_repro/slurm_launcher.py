"""Hydra launcher plugin: hydra-submitit-launcher's SLURM launcher, with job states from ``squeue``
where ``sacct`` has no database.

Hydra loads launchers only from the ``hydra_plugins`` namespace, found on ``sys.path`` (the repository
root, where ``train.py`` runs): it is not installed. Without the ``[slurm]`` extra this module defines
nothing.

submitit learns the state of its jobs from ``sacct``. On a cluster without ``slurmdbd`` every call fails
(submitit logs "Bypassing sacct error" each time) and every job stays UNKNOWN, which submitit counts as
unfinished: a job that dies without writing its result (killed, cancelled while pending, node failure)
then keeps the launcher waiting forever. :class:`SqueueFallbackWatcher` asks ``squeue --states=all``
instead when sacct fails, and counts a job SLURM no longer lists as finished, so submitit raises its
"has not produced any output" error (naming the job and its log) instead of waiting.

``configs/hydra/launcher/slurm.yaml`` selects ``hydra_plugins.sam_repro.slurm_launcher.SlurmLauncher``,
which installs this watcher before submitting; everything else is hydra-submitit-launcher's.
"""

from __future__ import annotations

import getpass
import logging
import subprocess
import time
from collections.abc import Sequence
from typing import Any

try:
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import (
        SlurmLauncher as _SubmititSlurmLauncher,
    )
except ImportError:  # pip install -e ".[slurm]" brings it
    _SubmititSlurmLauncher = None

log = logging.getLogger(__name__)
GONE = "GONE"  # the state we give a job that neither sacct nor squeue knows any more


def _watcher_module():
    """submitit, imported when a sweep is launched (Hydra imports every plugin, even for --help)."""
    from submitit.slurm.slurm import SlurmInfoWatcher, SlurmJob

    return SlurmInfoWatcher, SlurmJob


if _SubmititSlurmLauncher is not None:

    def fallback_watcher_class() -> type:
        """SqueueFallbackWatcher, defined on first use (its base class is submitit's)."""
        SlurmInfoWatcher, _ = _watcher_module()

        class SqueueFallbackWatcher(SlurmInfoWatcher):
            """submitit's sacct watcher; while sacct fails, the states come from squeue (one warning, not one per poll)."""

            def __init__(self, delay_s: int = 60) -> None:
                super().__init__(delay_s)
                self.sacct_failed = False

            def update(self) -> None:
                command = self._make_command()
                if command is None:
                    return
                self._num_calls += 1
                info: dict[str, dict[str, str]] | None = None
                try:
                    info = self.read_info(
                        subprocess.check_output(command, stderr=subprocess.PIPE, timeout=60)
                    )
                except (OSError, subprocess.SubprocessError) as err:
                    if not self.sacct_failed:
                        stderr = getattr(err, "stderr", b"") or b""
                        log.warning(
                            "sacct failed (%s); job states come from squeue while it does",
                            stderr.decode(errors="replace").strip() or err,
                        )
                    self.sacct_failed = True
                if info is None:
                    info = self._from_squeue()
                if info is not None:
                    self._info_dict.update(info)
                self._last_status_check = time.time()
                for job_id in self._registered - self._finished:
                    if self.is_done(job_id, mode="cache"):
                        self._finished.add(job_id)

            def _from_squeue(self) -> dict[str, dict[str, str]] | None:
                """States of this user's jobs from squeue; registered jobs it does not list are GONE."""
                try:
                    out = subprocess.run(
                        ["squeue", "-h", "--states=all", "-u", getpass.getuser(), "-o", "%i|%T|%N"],
                        capture_output=True,
                        text=True,
                        timeout=60,
                        check=True,
                    ).stdout
                except (OSError, subprocess.SubprocessError) as err:
                    log.warning("squeue failed too (%s); job states unknown for now", err)
                    return None
                info = self.read_info("JobID|State|NodeList\n" + out) if out.strip() else {}
                for job_id in self._registered - self._finished:
                    if job_id not in info:
                        info[job_id] = {"JobID": job_id, "State": GONE, "NodeList": ""}
                return info

        return SqueueFallbackWatcher

    def use_squeue_when_sacct_fails() -> None:
        """Give every SlurmJob created from now on the fallback watcher (idempotent)."""
        _, SlurmJob = _watcher_module()
        if type(SlurmJob.watcher).__name__ != "SqueueFallbackWatcher":
            SlurmJob.watcher = fallback_watcher_class()(delay_s=600)

    class SlurmLauncher(_SubmititSlurmLauncher):
        """submitit's SLURM launcher; job states from squeue while sacct fails."""

        def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[Any]:
            use_squeue_when_sacct_fails()
            return super().launch(job_overrides, initial_job_idx)
