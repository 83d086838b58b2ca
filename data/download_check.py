"""Can a dataset's download host be reached? Asked before torchvision tries, so an offline machine is told
in seconds, not after a resolver's timeouts (about 30 s per attempt where DNS does not answer).

The check opens one TCP connection to the URL's host (or to the proxy urllib would use for it) within
``PROBE_TIMEOUT_S``; name resolution runs inside that limit too (in a daemon thread: ``getaddrinfo``
takes no timeout). Nothing is sent over the connection. Two environment variables:

* ``SAM_DOWNLOAD_PROBE=off`` skips the check (a network where the probe is wrong but the download works);
* ``SAM_DOWNLOAD_PROBE=HOST:PORT`` probes that address instead of the download host (the tests point it at
  a local socket that never answers, to time the offline path without sending anything off the machine).
"""

from __future__ import annotations

import os
import socket
import threading
import urllib.request
from urllib.parse import urlsplit

PROBE_ENV = "SAM_DOWNLOAD_PROBE"
PROBE_TIMEOUT_S = 3.0


def _probe_address(url: str) -> tuple[str, int]:
    override = os.environ.get(PROBE_ENV, "").strip()
    if override:
        host, _, port = override.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"{PROBE_ENV}={override!r}: expected off or HOST:PORT")
        return host.strip("[]"), int(port)
    parts = urlsplit(url)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(parts.hostname or ""):
        parts = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    return parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)


def unreachable(url: str, timeout: float | None = None) -> str | None:
    """None when ``url``'s host accepts a TCP connection within ``timeout`` s (default ``PROBE_TIMEOUT_S``)
    or the check is off, else why not, as a phrase ("no answer from HOST:PORT within 3 s")."""
    timeout = PROBE_TIMEOUT_S if timeout is None else timeout
    if os.environ.get(PROBE_ENV, "").strip().lower() == "off":
        return None
    host, port = _probe_address(url)
    outcome: list[BaseException | None] = []

    def connect() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            outcome.append(None)
        except OSError as err:
            outcome.append(err)

    thread = threading.Thread(target=connect, name="download-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    if not outcome:
        return f"no answer from {host}:{port} within {timeout:g} s"
    err = outcome[0]
    if err is None:
        return None
    if isinstance(err, socket.gaierror):
        return f"cannot resolve {host} ({err.strerror or err})"
    if isinstance(err, TimeoutError | socket.timeout):
        return f"no answer from {host}:{port} within {timeout:g} s"
    return f"cannot connect to {host}:{port} ({err.strerror or err})"
