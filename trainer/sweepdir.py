"""Short job directory names for sweeps: the job number and the swept keys with this job's values.

``python train.py -m rho=0.01,0.05 seed=0,1 dataset=digits device=cpu`` writes its jobs to
``0_rho=0.01,seed=0``, ``1_rho=0.01,seed=1``, ``2_rho=0.05,seed=0`` and ``3_rho=0.05,seed=1`` below the
sweep directory: only the keys that take several values (``a,b`` lists, ``range()``, ``choice()``,
``glob()``, on the command line or in ``hydra.sweeper.params``, as ``+sweep=NAME`` sets them), sorted by
key, with the value the job got. A sweep without a swept key names its jobs by number alone. The number
keeps every name unique; the job's full overrides stay in its ``.hydra/overrides.yaml``.

``configs/train.yaml`` sets ``hydra.sweep.subdir: ${sweep_job_dir:...}``, the resolver that
``trainer/spec.py`` registers (every composition of ``train.yaml`` imports it, for the schema). The
swept keys are read from the sweep's own ``multirun.yaml``, which Hydra's sweeper writes into the sweep
directory before it launches a job, so the names are the same for the local launcher, submitit's
processes and SLURM jobs on other nodes (their environment need not be exported). Torch-free.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

MAX_NAME = 200  # bytes a directory name may take of the usual 255, with room for the number


def override_key(item: str) -> str:
    """``+key@pkg=value`` -> ``key@pkg``: the key of one override as written."""
    return item.split("=", 1)[0].lstrip("+~")


@functools.lru_cache(maxsize=8)
def _swept_keys(path: str, mtime_ns: int) -> frozenset[str] | None:
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    try:
        sweep = OmegaConf.load(path)
        overrides = [str(o) for o in OmegaConf.select(sweep, "hydra.overrides.task", default=[])]
        params = OmegaConf.select(sweep, "hydra.sweeper.params", default=None) or {}
        overrides += [f"{key}={value}" for key, value in params.items()]
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception:  # unreadable or foreign: the number alone
        return None
    return frozenset(
        o.key_or_group + (f"@{o.package}" if o.package else "") for o in parsed if o.is_sweep_override()
    )


def swept_keys(sweep_dir: str | Path) -> frozenset[str] | None:
    """The keys a sweep varies, from its ``multirun.yaml``; None when there is none."""
    path = Path(sweep_dir) / "multirun.yaml"
    try:
        mtime = path.stat().st_mtime_ns
    except OSError:
        return None
    return _swept_keys(str(path), mtime)


def job_dir_name(num: Any, task_overrides: Any, sweep_dir: Any) -> str:
    """``<num>_<key=value,...>`` of the swept keys among one job's overrides, or ``<num>``."""
    keys = swept_keys(str(sweep_dir)) or frozenset()
    items = sorted(
        (override_key(str(item)), str(item).split("=", 1)[1])
        for item in task_overrides
        if "=" in str(item) and override_key(str(item)) in keys
    )
    swept = ",".join(f"{key}={value}" for key, value in items).replace("/", "_")
    name = f"{num}_{swept}" if swept else str(num)
    return name.encode()[:MAX_NAME].decode(errors="ignore")
