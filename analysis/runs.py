"""Read run directories (results.json, metrics.jsonl) and group their seeds into cells.

A run directory is what train.py writes (``trainer/run.py``). A *cell* is one experimental condition:
(model, dataset, augment, epochs, optimizer, rho, m, label_noise). m is the m of every optimizer (examples
per BatchNorm batch and per e(w)): SGD baselines run in chunks of m too, so SGD runs with different m are
different cells.

A cell names a condition, not a computation: runs with another lr, batch size, or a one-batch smoke run
share its key. :func:`group_identical` (what compare.py pools) splits a cell into runs whose every recorded
setting except the seed is equal (:func:`run_settings`: the resolved ``config`` of results.json, flattened,
without the seed and the operational keys that do not change what is computed), says which settings set
each group apart from the others of its cell, and counts a run directory copied under another name
(same seed, same settings) once. :func:`group_runs` is the plain per-cell grouping of the other readers.

Which optimizer ran, with which rho and m, was decided once by the trainer (``trainer/spec.py``,
``RunSpec``) and recorded in results.json's ``spec`` block: :func:`recorded_facts` reads that block and
derives nothing. Only results.json files written before the block existed take the legacy path
(:func:`legacy_facts`), so that old run directories still read.

Bad files never stop a command: they are reported through ``warn`` (stderr by default) and skipped.
"""

from __future__ import annotations

import json
import math
import sys
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

import yaml

REQUIRED_KEYS = ("model", "dataset", "augment", "seed", "epochs", "test_error")
SPEC_KEYS = ("uses_sam", "optimizer", "rho", "m")  # of the spec block (RunSpec.facts)
CELL_KEYS = ("model", "dataset", "augment", "epochs", "optimizer", "rho", "m", "label_noise")

Warn = Callable[[str], None]

from trainer.keys import LEGACY_DEFAULTS, OPERATIONAL_KEYS  # noqa: E402  (plain constants: no Hydra, no torch)

NOT_SETTINGS = ("seed", *OPERATIONAL_KEYS)  # what may differ between the seeds of one computation
# Settings a run without SAM (the SGD baseline, SAM at rho 0) does not use: `optimizer=sam rho=0` and
# `optimizer=sgd` compute the same thing.
SAM_ONLY = ("rho", "optimizer.adaptive", "optimizer.eta", "optimizer.perturbation", "optimizer.variant")
SMOKE_KEYS = ("trainer.limit_train_batches", "trainer.limit_val_batches")
ABSENT = "<absent>"


def warn_stderr(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def _number(value, key: str, path: Path) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{path}: {key} must be a number, got {value!r}")
    return float(value)


def recorded_facts(raw: dict, path: Path) -> dict:
    """``{"uses_sam", "optimizer", "rho", "m"}`` as the trainer recorded them in results.json's ``spec``.

    A results.json without a ``spec`` block predates it and goes to :func:`legacy_facts`.
    """
    spec = raw.get("spec")
    if spec is None:
        return legacy_facts(raw, path)
    if not isinstance(spec, dict):
        raise ValueError(f"{path}: spec must be a JSON object, got {type(spec).__name__}")
    missing = [k for k in SPEC_KEYS if k not in spec]
    if missing:
        raise ValueError(f"{path}: the spec block lacks {missing} (required: {list(SPEC_KEYS)})")
    if not isinstance(spec["uses_sam"], bool):
        raise ValueError(f"{path}: spec.uses_sam must be true or false, got {spec['uses_sam']!r}")
    return {
        "uses_sam": spec["uses_sam"],
        "optimizer": str(spec["optimizer"]),
        "rho": _number(spec["rho"], "spec.rho", path),
        "m": int(_number(spec["m"], "spec.m", path)),
    }


class FailedRun(ValueError):
    """A results.json whose run failed (a NaN/inf test error, or a status other than finished).

    ``run`` holds its cell fields, so it can be listed as failed rather than summarised.
    """

    def __init__(self, run: dict, reason: str) -> None:
        super().__init__(f"{run['path']}: the run failed ({reason})")
        self.run = {**run, "reason": reason}


def _under(key: str, prefixes: Iterable[str]) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def flatten_config(tree, prefix: str = "") -> dict:
    """A nested config as ``{"a.b.c": value}`` (trainer/rundir.py's rule)."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict = {}
    for k, v in tree.items():
        out.update(flatten_config(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def settings_of(config: dict, optimizer: str, uses_sam: bool) -> dict:
    """What a resolved config computes, as ``{"dotted.key": value}``: every key but the seed and the
    operational ones, keys added since the run at their legacy value, ``optimizer.name`` the optimizer
    that ran (``sgd`` for SAM at rho 0) and, without SAM, none of the SAM-only keys."""
    flat = flatten_config(config)
    for key, value in LEGACY_DEFAULTS.items():
        flat.setdefault(key, value)
    flat = {k: v for k, v in flat.items() if not _under(k, NOT_SETTINGS)}
    flat["optimizer.name"] = optimizer
    if not uses_sam:
        flat = {k: v for k, v in flat.items() if not _under(k, SAM_ONLY)}
    return flat


def run_settings(raw: dict, facts: dict, path: Path) -> dict | None:
    """The settings of one results.json (:func:`settings_of` on its ``config``, plus the precision the
    trainer resolved, ``spec.precision``: ``precision=auto`` is bf16 on a GPU and fp32 on a CPU); None
    when it recorded no config (older code)."""
    config = raw.get("config")
    if config is None:
        return None
    if not isinstance(config, dict):
        raise ValueError(f"{path}: config must be a JSON object, got {type(config).__name__}")
    settings = settings_of(config, facts["optimizer"], facts["uses_sam"])
    spec = raw.get("spec")
    if isinstance(spec, dict) and spec.get("precision") is not None:
        settings["spec.precision"] = spec["precision"]
    return settings


def is_smoke(settings: dict | None) -> bool:
    """A run with limited batches (trainer.limit_train_batches / limit_val_batches set)."""
    return settings is not None and any(settings.get(k) is not None for k in SMOKE_KEYS)


def load_run(path: Path) -> dict:
    """One results.json as a flat dict of cell fields; ValueError naming the file if unusable.

    ``settings`` holds what it computed (:func:`run_settings`; None without a recorded config).
    Raises :class:`FailedRun` for a run that failed: it must never enter a mean.
    """
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: cannot read JSON ({err})") from err
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(raw).__name__}")
    missing = [k for k in REQUIRED_KEYS if k not in raw]
    if missing:
        raise ValueError(f"{path}: missing keys {missing} (required: {list(REQUIRED_KEYS)})")
    if raw["test_error"] is None and raw.get("status", "finished") == "finished":
        raise ValueError(f"{path}: test_error is null")
    facts = recorded_facts(raw, path)
    run = {
        "model": str(raw["model"]),
        "dataset": str(raw["dataset"]),
        "augment": str(raw["augment"]),
        "epochs": int(_number(raw["epochs"], "epochs", path)),
        **facts,
        "label_noise": _number(raw.get("label_noise", 0.0) or 0.0, "label_noise", path),
        "seed": raw["seed"],
        "test_error": None if raw["test_error"] is None else _number(raw["test_error"], "test_error", path),
        "test_error_top5": None,
        "train_loss": raw.get("train_loss"),
        "wall_time_s": raw.get("wall_time_s"),
        "path": path,
        "run_dir": path.parent,
        "settings": run_settings(raw, facts, path),
    }
    if raw.get("test_error_top5") is not None:
        run["test_error_top5"] = _number(raw["test_error_top5"], "test_error_top5", path)
    status = raw.get("status", "finished")
    if status != "finished":
        raise FailedRun(run, f"status {status!r}")
    for key in ("test_error", "test_error_top5"):
        if run[key] is not None and not math.isfinite(run[key]):
            raise FailedRun(run, f"{key} is {run[key]}")
    return run


def find_results_files(root: Path) -> list[Path]:
    return sorted(Path(root).rglob("results.json"))


def load_runs(root: Path, warn: Warn = warn_stderr, failed: list[dict] | None = None) -> list[dict]:
    """Every usable results.json below root (recursively); unusable ones are reported and skipped.

    Failed runs (:class:`FailedRun`) are reported, left out, and appended to ``failed`` when given.
    """
    runs = []
    for path in find_results_files(root):
        try:
            runs.append(load_run(path))
        except FailedRun as err:
            warn(f"{err}: left out of every mean")
            if failed is not None:
                failed.append(err.run)
        except ValueError as err:
            warn(f"skipping {err}")
    return runs


def find_unfinished_runs(root: Path, warn: Warn = warn_stderr) -> list[dict]:
    """Hydra job directories (``.hydra/config.yaml``) without a results.json: failed or still running.

    Each comes back as a cell dict (the fields of CELL_KEYS, plus seed and run_dir) so that a sweep's
    failed cell can be reported as missing. Such a job recorded no facts, so its cell is read from its
    composed config by the legacy rule (:func:`legacy_optimizer`); m null is taken as the batch size.
    """
    unfinished = []
    for config_path in sorted(Path(root).rglob(".hydra/config.yaml")):
        run_dir = config_path.parent.parent
        if (run_dir / "results.json").exists():
            continue
        try:
            cfg = yaml.safe_load(config_path.read_text())
            rho = float(cfg["rho"])
            optimizer = legacy_optimizer(str(cfg["optimizer"]["name"]), rho)
            unfinished.append(
                {
                    "model": str(cfg["model"]["name"]),
                    "dataset": str(cfg["dataset"]["name"]),
                    "augment": str(cfg["augment"]),
                    "epochs": cfg["epochs"],
                    "optimizer": optimizer,
                    "rho": 0.0 if optimizer == "sgd" else rho,
                    "m": cfg.get("m") or cfg.get("batch_size"),  # null: the batch of one process
                    "label_noise": cfg.get("label_noise", 0.0),
                    "seed": cfg.get("seed"),
                    "run_dir": run_dir,
                }
            )
        except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError) as err:
            warn(f"skipping {config_path}: cannot read the job's config ({err})")
    return unfinished


def cell_key(run: dict) -> tuple:
    return tuple(run[k] for k in CELL_KEYS)


def _sortable(key: tuple) -> tuple:
    # None sorts first; mixed types never meet because each position has one type (or None).
    return tuple((0, "") if v is None else (1, v) for v in key)


def group_runs(runs: Iterable[dict], warn: Warn = warn_stderr) -> dict[tuple, list[dict]]:
    """{cell key: runs}, cells sorted by key; warns when a seed repeats inside a cell (a duplicate run?)."""
    groups: dict[tuple, list[dict]] = {}
    for run in runs:
        groups.setdefault(cell_key(run), []).append(run)
    for key, members in groups.items():
        seeds = [r["seed"] for r in members]
        for seed in sorted({s for s in seeds if seeds.count(s) > 1}, key=str):
            paths = ", ".join(str(r["path"]) for r in members if r["seed"] == seed)
            warn(f"cell {dict(zip(CELL_KEYS, key, strict=True))} has seed {seed} more than once: {paths}")
    return {k: groups[k] for k in sorted(groups, key=_sortable)}


def freeze(settings: dict | None, drop: Iterable[str] = ()) -> str | None:
    """A hashable, order-free form of settings (without ``drop``), for grouping."""
    if settings is None:
        return None
    drop = tuple(drop)
    kept = {k: v for k, v in settings.items() if not _under(k, drop)}
    return json.dumps(kept, sort_keys=True, default=str)


def format_value(value) -> str:
    """A setting as a command-line override writes it: ``null``, ``true``, ``0.001``, ``cosine``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return f"{value:g}" if isinstance(value, float) else str(value)
    return json.dumps(value)


def setting_differences(have: dict, want: dict, free: Iterable[str] = ()) -> list[tuple[str, object, object]]:
    """``(key, have's value, want's value)`` for every key whose values differ (absent: ``ABSENT``)."""
    free = tuple(free)
    keys = sorted(k for k in have.keys() | want.keys() if not _under(k, free))
    return [
        (k, have.get(k, ABSENT), want.get(k, ABSENT))
        for k in keys
        if have.get(k, ABSENT) != want.get(k, ABSENT)
    ]


LEGACY_NOTE = "no config recorded: pooled by the cell keys only"


def group_identical(runs: Iterable[dict]) -> list[dict]:
    """Runs pooled only where they computed the same thing: one group per (cell, settings).

    Each group: ``cell`` (the CELL_KEYS tuple), ``settings`` (None for results.json files without a
    config: those pool by the cell keys only), ``runs`` (one per seed), ``duplicates`` (further runs with
    a seed already in the group: a copied run directory counts once; each with ``duplicate_of``), and
    ``differs``: what sets it apart from the other groups of its cell, as ``key=value`` strings: each
    setting that varies in the cell where the group's value is not the one most groups share (with no
    such value, every group lists its own). Empty when the cell has one group, or for the usual settings;
    :data:`LEGACY_NOTE` for a group without a config. Groups come sorted by cell, then by ``differs``;
    runs within a group by path.
    """
    by_key: dict[tuple, list[dict]] = {}
    for run in sorted(runs, key=lambda r: str(r["path"])):
        by_key.setdefault((cell_key(run), freeze(run.get("settings"))), []).append(run)
    groups = []
    for (cell, _), members in by_key.items():
        first: dict[str, dict] = {}
        unique, duplicates = [], []
        for run in members:
            seed = json.dumps(run["seed"], default=str)
            if seed in first:
                duplicates.append({**run, "duplicate_of": first[seed]["path"]})
            else:
                first[seed] = run
                unique.append(run)
        groups.append(
            {"cell": cell, "settings": members[0].get("settings"), "runs": unique, "duplicates": duplicates}
        )
    by_cell: dict[tuple, list[dict]] = {}
    for group in groups:
        by_cell.setdefault(group["cell"], []).append(group)
    for siblings in by_cell.values():
        known = [g["settings"] for g in siblings if g["settings"] is not None]
        usual = {}  # per key that varies in the cell: the value more groups have than any other, if one
        for key in sorted({k for s in known for k in s}):
            counts = Counter(json.dumps(s.get(key, ABSENT), default=str) for s in known)
            if len(counts) > 1:
                (top, n_top), *rest = counts.most_common()
                usual[key] = top if n_top > rest[0][1] else None
        for group in siblings:
            if group["settings"] is None:
                group["differs"] = [LEGACY_NOTE]
                continue
            group["differs"] = [
                f"{k}={format_value(group['settings'].get(k, ABSENT))}"
                for k, common in usual.items()
                if json.dumps(group["settings"].get(k, ABSENT), default=str) != common
            ]
    return sorted(groups, key=lambda g: (_sortable(g["cell"]), g["differs"]))


def read_metrics(path: Path, warn: Warn = warn_stderr) -> list[dict]:
    """Per-epoch records of a metrics.jsonl, sorted by epoch; for a repeated epoch (resume) the last wins.

    Unparseable lines and lines without an integer 'epoch' are reported and skipped.
    """
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        warn(f"skipping {path}: cannot read ({err})")
        return []
    by_epoch: dict[int, dict] = {}
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            warn(f"{path}:{lineno}: skipping unparseable line ({err})")
            continue
        epoch = record.get("epoch") if isinstance(record, dict) else None
        if isinstance(epoch, bool) or not isinstance(epoch, int):
            warn(f"{path}:{lineno}: skipping line without an integer 'epoch'")
            continue
        by_epoch[epoch] = record
    if 0 in by_epoch:  # written before epochs were counted from 1 everywhere: renumber (one counting)
        by_epoch = {e + 1: {**r, "epoch": e + 1} for e, r in by_epoch.items()}
    return [by_epoch[e] for e in sorted(by_epoch)]


# ------------------------------------------------------------------------------------------------ legacy
# results.json files written before the spec block existed (before issue 19's RunSpec) record only the
# top-level optimizer, rho and m (m null for SGD in the oldest ones). Their facts are derived here, as
# the readers did then; this is the only place in analysis/ that derives them.
RHO_FREE = ("mesa", "saf")  # sam.variants.WITHOUT_RHO: recorded with rho 0, yet not the SGD baseline


def legacy_optimizer(name: str, rho: float) -> str:
    """'sgd' for the SGD baseline (optimizer sgd, or SAM/ASAM/a variant with rho 0), else the name."""
    return "sgd" if name == "sgd" or (rho == 0.0 and name not in RHO_FREE) else name


def _legacy_m(cfg, world_size) -> int | None:
    """m, or the per-device batch when m is null (what train.py ran), from a run's resolved config."""
    if not isinstance(cfg, dict) or not isinstance(cfg.get("batch_size"), int):
        return None
    return cfg.get("m") or cfg["batch_size"] // (
        world_size if isinstance(world_size, int) and world_size > 0 else 1
    )


def legacy_facts(raw: dict, path: Path) -> dict:
    """The facts of a results.json without a ``spec`` block, derived from its top-level fields and config."""
    missing = [k for k in ("optimizer", "rho") if k not in raw]
    if missing:
        raise ValueError(
            f"{path}: no spec block and missing keys {missing} (a results.json before it has both)"
        )
    rho = _number(raw["rho"], "rho", path)
    optimizer = legacy_optimizer(str(raw["optimizer"]).lower(), rho)
    m = raw.get("m")
    if m is None:  # results.json before issue 9 recorded null for SGD runs: the config says what ran
        m = _legacy_m(raw.get("config"), raw.get("world_size", 1))
    return {
        "uses_sam": optimizer != "sgd",
        "optimizer": optimizer,
        "rho": 0.0 if optimizer == "sgd" else rho,
        "m": None if m is None else int(_number(m, "m", path)),
    }
