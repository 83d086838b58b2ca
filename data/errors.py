"""The one error type for data that is not where the config says it is, and its message.

It subclasses FileNotFoundError so callers can catch the usual exception, and its message always says
which directory was searched, which files were expected there and the ways out: put the files there, or
download them where the network is reachable, or try the pipeline on stand-in files
(``scripts/make_standin_data.py``). It never advises what the config already does.
"""

from __future__ import annotations

from pathlib import Path

STANDIN_COMMAND = "python scripts/make_standin_data.py --dataset {name} --root DIR"


class DatasetNotFoundError(FileNotFoundError):
    """Dataset files are missing (and could not be downloaded)."""


def missing_data_message(
    name: str, root: Path | str, expected: str, why: str, *, download: bool | None, get: str
) -> str:
    """``name``'s files are not under ``root``, because ``why``; ``expected`` lists what should be there
    and ``get`` how to fetch it by hand. ``download``: the config's dataset.download (None: no download)."""
    if download is None:
        network = ""
    elif download:
        network = ", or run once where the network is reachable (dataset.download is already true)"
    else:
        network = ", or set dataset.download=true where the network is reachable"
    standin = STANDIN_COMMAND.format(name=name)
    return (
        f"{name}: {why}. Looked under dataset.root={root} for {expected}. Ways out: put the files there "
        f"({get}){network}, or point dataset.root=... at the directory that holds them. To try the "
        f"pipeline without the data: {standin}, then dataset.root=DIR (random stand-in images, never "
        "comparable with the paper)."
    )
