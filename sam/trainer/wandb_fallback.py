"""Start a W&B run that never stops training: online when possible, else offline with a warning.

A cluster node without internet (or a user without ``wandb login``) used to cost ~100 s and exit 1, or
a traceback. Here, on every start and every resume: no API key -> offline at once; the server
unreachable within ``probe_timeout_s`` -> offline at once; ``wandb.init`` failing online for any other
reason -> offline. The warning names the local run directory and the ``wandb sync`` command that uploads
it later. An explicit ``WANDB_MODE`` (offline, disabled) is respected as it is.
"""

from __future__ import annotations

import logging
import netrc
import os
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

log = logging.getLogger(__name__)


def has_api_key(base_url: str) -> bool:
    """An API key in ``WANDB_API_KEY`` or in the netrc entry of the server (where ``wandb login`` puts it)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(base_url).hostname or ""
    path = os.environ.get("NETRC") or os.path.expanduser("~/.netrc")
    try:
        entry = netrc.netrc(path).authenticators(host)
    except (OSError, netrc.NetrcParseError):
        return False
    return bool(entry and entry[2])


def server_reachable(base_url: str, timeout_s: float) -> str | None:
    """None when a TCP connection to the server opens within ``timeout_s``, else why not."""
    url = urlparse(base_url)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "", port), timeout=timeout_s):
            return None
    except OSError as err:
        return f"{url.hostname}:{port} unreachable ({err})"


def init_wandb_run(wandb: Any, *, run_dir: Path, probe_timeout_s: float = 10.0, **init_kwargs: Any) -> Any:
    """``wandb.init(dir=run_dir, **init_kwargs)`` online, or offline with a warning when online fails."""
    requested = os.environ.get("WANDB_MODE", init_kwargs.pop("mode", None) or "online")
    if requested != "online":
        return wandb.init(dir=str(run_dir), mode=requested, **init_kwargs)
    base_url = os.environ.get("WANDB_BASE_URL") or wandb.Settings().base_url
    why = None
    if not has_api_key(base_url):
        why = "no API key (run `wandb login` or set WANDB_API_KEY)"
    else:
        why = server_reachable(base_url, probe_timeout_s)
    if why is None:
        try:
            return wandb.init(dir=str(run_dir), mode="online", **init_kwargs)
        except Exception as err:  # wandb's errors vary by version: CommError, UsageError, TimeoutError...
            why = f"wandb.init failed online: {type(err).__name__}: {str(err).splitlines()[0][:200]}"
    run = wandb.init(dir=str(run_dir), mode="offline", **init_kwargs)
    sync_dir = getattr(run.settings, "sync_dir", None) or f"{run_dir}/wandb/offline-run-*"
    log.warning(
        "W&B cannot log online (%s): logging offline to %s; training goes on. Upload it later with "
        "`wandb sync %s` (every start or resume of this run has its own offline-run-* directory: "
        "`wandb sync %s/wandb/offline-run-*` uploads them all, in order)",
        why,
        sync_dir,
        sync_dir,
        run_dir,
    )
    return run
