"""Load the paper's numbers from results/paper/*.yaml as flat cell dicts.

Each cell has the keys our runs write to results.json, so a run and a paper cell compare field by
field: table, model (our registry name), dataset, augment, epochs, optimizer (sam | sgd), method
("standard" = plain training with that optimizer), label_noise (fraction), rho, error, error_pm (95% CI
half-width, as the paper prints it), error_pm_is_upper_bound, and error_top5 / error_top5_pm where the
paper gives them (Table 2). A None in model/augment/epochs means the paper does not state it.
The files are written by results/paper/make_tables.py and results/paper/make_finetune_tables.py.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import yaml

PAPER_DIR = Path(__file__).resolve().parent.parent / "results" / "paper"
TABLE_FILES = {
    "table1": "table1_cifar.yaml",
    "table2": "table2_imagenet.yaml",
    "table4": "table4_label_noise.yaml",
    "table5": "table5_svhn_fashion_mnist.yaml",
    "table3": "table3_finetuning.yaml",
    "table10": "table10_finetuning_rho.yaml",
}
REQUIRED_KEYS = (
    "model",
    "dataset",
    "augment",
    "epochs",
    "optimizer",
    "method",
    "label_noise",
    "rho",
    "error",
)
# Fields a run must agree on to be compared with a paper cell (rho is shown, not matched: see compare.py).
MATCH_KEYS = ("model", "dataset", "augment", "epochs", "optimizer", "label_noise")


def load_paper_cells(tables: Iterable[str] | None = None, paper_dir: Path = PAPER_DIR) -> list[dict]:
    """All cells of the given tables (default: all), in file order, each tagged with its table."""
    names = list(TABLE_FILES) if tables is None else list(tables)
    cells = []
    for name in names:
        if name not in TABLE_FILES:
            raise ValueError(f"unknown paper table {name!r}; valid: {sorted(TABLE_FILES)}")
        doc = yaml.safe_load((Path(paper_dir) / TABLE_FILES[name]).read_text())
        for cell in doc["cells"]:
            missing = [k for k in REQUIRED_KEYS if k not in cell]
            if missing:
                raise ValueError(f"{TABLE_FILES[name]}: cell {cell} lacks keys {missing}")
            cells.append({"table": name, **cell})
    return cells


def comparable_cells(cells: Iterable[dict]) -> list[dict]:
    """Cells a plain SAM / SGD run can be compared with: the authors' standard runs that have a number."""
    return [c for c in cells if c["method"] == "standard" and c["optimizer"] and c["error"] is not None]


def cell_matches(cell: dict, **run_fields) -> bool:
    """True when the run agrees with the cell on MATCH_KEYS; a None in the cell (not stated) matches all.

    A cell with ``match_rho`` (Table 10: SAM at rho = 0.05) matches only runs with that rho.
    """
    if cell.get("match_rho") is not None:
        have = run_fields.get("rho")
        if have is None or abs(float(have) - float(cell["match_rho"])) > 1e-9:
            return False
    for key in MATCH_KEYS:
        want = cell[key]
        if want is None:
            continue
        have = run_fields.get(key)
        if key == "label_noise":
            if have is None or abs(float(have) - float(want)) > 1e-9:
                return False
        elif have != want:
            return False
    return True


def most_specific(matches: list[dict]) -> list[dict]:
    """Of several matching cells, the one that pins rho (Table 10 over Table 3's optimal-rho column)."""
    pinned = [c for c in matches if c.get("match_rho") is not None]
    return pinned if len(matches) > 1 and len(pinned) == 1 else matches


def find_paper_cell(cells: Iterable[dict], **run_fields) -> dict | None:
    """The comparable cell matching the run's model/dataset/augment/epochs/optimizer/label_noise, or None."""
    found = most_specific([c for c in comparable_cells(cells) if cell_matches(c, **run_fields)])
    if len(found) > 1:
        raise ValueError(f"{len(found)} paper cells match {run_fields}: {found}")
    return found[0] if found else None
