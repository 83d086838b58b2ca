"""Run a script's ``main(argv)`` in-process and return what ``python scripts/NAME.py ARGS`` would.

A new interpreter costs seconds of imports (torch, matplotlib, scipy) per call; the scripts' logic is the
same in-process, so only end-to-end promises about train.py launch real subprocesses.
"""

from __future__ import annotations

import io
import subprocess
from collections.abc import Callable
from contextlib import redirect_stderr, redirect_stdout


def run_main(main: Callable[[list[str]], int | None], *args: object) -> subprocess.CompletedProcess:
    """``main(argv)`` with stdout/stderr captured and SystemExit turned into the exit code, as a shell sees it."""
    argv = [str(a) for a in args]
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exit_:  # argparse errors and explicit sys.exit
            code = exit_.code if isinstance(exit_.code, int) else (exit_.code is not None)
    return subprocess.CompletedProcess(argv, code or 0, out.getvalue(), err.getvalue())
