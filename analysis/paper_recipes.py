"""The full settings of a paper cell: the experiment file in configs/experiment that runs it, composed.

compare.py sets a run beside a paper number only if the run computed what that cell's experiment file
computes: its settings (analysis/runs.py: ``settings_of``, the resolved config without the seed and the
operational keys) equal the file's composed with ``train.yaml``, as ``python train.py experiment=NAME``
composes it. A run with another lr, epochs, m, clipping, ... is not the paper's recipe.

Which files implement a cell follows configs/experiment/README.md's naming rule,
``<dataset>_<model>[_<N>ep]_<variant>_<optimizer>`` (``finetune/`` for Tables 3 and 10, ``_sgd_2n`` for
the 2N half of a baseline): the candidates are composed (Hydra's compose API, about 0.1-0.3 s a file,
cached per process) and kept only where their composed model, dataset, augment, epochs, optimizer and
label noise are the cell's (``analysis.paper_tables.cell_matches``).
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

from analysis.paper_tables import cell_matches, load_paper_cells
from analysis.runs import RHO_FREE, settings_of

REPO = Path(__file__).resolve().parent.parent
CONFIGS = REPO / "configs"
EXPERIMENTS = CONFIGS / "experiment"
NOT_CELLS = ("table/",)  # the tables' shared bases, not runnable cells

_COMPOSED: dict[str, dict | str] = {}  # experiment name -> resolved config, or why it does not compose


@functools.cache
def _paper_models() -> frozenset[str]:
    return frozenset(c["model"] for c in load_paper_cells() if c["model"])


def candidate_names(cell: dict, experiments: Path = EXPERIMENTS) -> list[str]:
    """Experiment names (``finetune/...`` under a folder) that may run paper cell ``cell``, by file name."""
    prefix = f"{cell['dataset']}_{cell['model']}_"
    # pyramidnet272's files are not pyramidnet272_shakedrop's
    others = tuple(f"{cell['dataset']}_{m}_" for m in _paper_models() if m.startswith(f"{cell['model']}_"))
    suffixes = ("_sam",) if cell["optimizer"] == "sam" else ("_sgd", "_sgd_2n")
    names = []
    for path in sorted(experiments.rglob("*.yaml")):
        name = path.relative_to(experiments).with_suffix("").as_posix()
        stem = path.stem
        if name.startswith(NOT_CELLS) or not stem.startswith(prefix) or not stem.endswith(suffixes):
            continue
        if others and stem.startswith(others):
            continue
        token = re.search(r"_(\d+)ep_", stem)  # only where a table has an epochs axis
        if token and cell["epochs"] is not None:
            epochs = int(token[1]) * (2 if stem.endswith("_2n") else 1)
            if epochs != cell["epochs"]:
                continue
        names.append(name)
    return names


def compose(names: list[str]) -> dict[str, dict | str]:
    """``{name: resolved config}`` of experiment files (a str: why the file does not compose)."""
    todo = [n for n in names if n not in _COMPOSED]
    if todo:
        # Hydra, and trainer/spec.py's schema (train.yaml's first default), only when a cell is checked.
        from hydra import compose as hydra_compose
        from hydra import initialize_config_dir
        from hydra.core.global_hydra import GlobalHydra
        from omegaconf import OmegaConf

        import trainer.spec  # noqa: F401  (registers train_schema with Hydra's ConfigStore)

        outer = GlobalHydra.instance().hydra if GlobalHydra.instance().is_initialized() else None
        GlobalHydra.instance().clear()
        try:
            with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
                for name in todo:
                    try:
                        cfg = hydra_compose("train", overrides=[f"experiment={name}"])
                        _COMPOSED[name] = OmegaConf.to_container(cfg, resolve=True)
                    except Exception as err:  # a broken file: reported on the row, never a crash
                        _COMPOSED[name] = (
                            f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
                        )
        finally:
            GlobalHydra.instance().clear()
            if outer is not None:
                GlobalHydra.instance().initialize(outer)
    return {n: _COMPOSED[n] for n in names}


def recipe_fields(config: dict) -> dict:
    """The cell fields of a composed config, as the trainer's RunSpec records them."""
    name, rho = config["optimizer"]["name"], float(config["rho"])
    uses_sam = name != "sgd" and (rho > 0 or name in RHO_FREE)
    return {
        "model": config["model"]["name"],
        "dataset": config["dataset"]["name"],
        "augment": config["augment"],
        "epochs": config["epochs"],
        "optimizer": name if uses_sam else "sgd",
        "rho": rho if uses_sam and name not in RHO_FREE else 0.0,
        "label_noise": config["label_noise"],
        "uses_sam": uses_sam,
    }


def recipes(cell: dict) -> list[tuple[str, dict | str]]:
    """``(experiment name, settings)`` of each file that runs ``cell``; settings is a str when the file
    does not compose (why), so a broken file is named rather than silently skipped."""
    out = []
    for name, config in compose(candidate_names(cell)).items():
        if isinstance(config, str):
            out.append((name, config))
            continue
        try:
            fields = recipe_fields(config)
        except (KeyError, TypeError, ValueError) as err:
            out.append((name, f"its composed config lacks {err}"))
            continue
        if cell_matches(cell, **fields):
            out.append((name, settings_of(config, fields["optimizer"], fields["uses_sam"])))
    return out
