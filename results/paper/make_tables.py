"""Write results/paper/*.yaml (the paper's Tables 1, 2, 4 and 5) from the checked transcription.

Usage:
    python results/paper/make_tables.py [--src results/paper/transcription/tables.yaml] [--out-dir results/paper]

The source is the team's checked transcription of the paper, committed beside this script under
transcription/ (a copy of the project's shared/paper/tables.yaml), so the script runs from a fresh clone.

The numbers are copied, never corrected: the paper's own inconsistencies stay visible (see
results/paper/README.md). What changes is only the shape: keys are normalised to the names our runs
write in results.json (model = our registry name, augment, optimizer, label_noise as a fraction), and
Table 2's separate top-1 / top-5 rows are merged into one cell per (model, epochs, optimizer).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent  # results/paper/: the tables are written beside this script
DEFAULT_SRC = HERE / "transcription" / "tables.yaml"
DEFAULT_OUT = HERE

# Paper label -> our model registry name (models.create_model).
MODEL_NAMES = {
    "WRN-28-10": "wrn28_10",
    "Shake-Shake (26 2x96d)": "shake_shake_26_2x96d",
    "PyramidNet": "pyramidnet272",
    "PyramidNet+ShakeDrop": "pyramidnet272_shakedrop",
    "ResNet-50": "resnet50",
    "ResNet-101": "resnet101",
    "ResNet-152": "resnet152",
    "ResNet-32": "resnet32",
}
# Table 2's augmentation is the standard ImageNet pipeline, which our data package calls "basic".
AUGMENT_NAMES = {
    "basic": "basic",
    "cutout": "cutout",
    "autoaugment": "autoaugment",
    "standard (resize/crop 224, normalize)": "basic",
}
# Table 4 "ours" block: paper method -> (optimizer, method). "standard" = plain training with that optimizer.
TABLE4_METHODS = {
    "SGD": ("sgd", "standard"),
    "SAM": ("sam", "standard"),
    "Mixup": ("sgd", "mixup"),
    "Bootstrap + Mixup": ("sgd", "bootstrap+mixup"),
    "Bootstrap + SAM": ("sam", "bootstrap"),
}
CI_STATISTIC = (
    "error is the mean test error (%) over 5 independent runs; error_pm is the half-width of the 95% "
    "confidence interval the paper prints after '±' (paper Sec. 3.1) - NOT a standard deviation. "
    "error_pm_is_upper_bound: true marks values printed as '±<x'."
)
TABLES = {
    "table1": {
        "key": "table1_cifar",
        "file": "table1_cifar.yaml",
        "title": "Table 1: CIFAR-10 / CIFAR-100 test error (%), SAM vs the standard (SGD) procedure",
        "statistic": CI_STATISTIC,
        "notes": [
            "SGD cells: every non-SAM run was allowed twice the epochs; the best of the standard and doubled "
            "epoch count is reported (Sec. 3.1).",
            "epochs: null = not stated in the paper (Shake-Shake, PyramidNet, PyramidNet+ShakeDrop).",
            "rho, lr, weight_decay come from Table 6; error_rho_0_05_table9 is Table 9 (SAM with rho=0.05).",
            "PyramidNet (vanilla) is mapped to pyramidnet272; the paper does not state its depth / alpha.",
        ],
    },
    "table2": {
        "key": "table2_imagenet",
        "file": "table2_imagenet.yaml",
        "title": "Table 2: ImageNet top-1 / top-5 test error (%), ResNet-50/101/152, SAM vs standard "
        "training",
        "statistic": CI_STATISTIC + " error_top5 / error_top5_pm: the same for top-5 error.",
        "notes": [
            "augment 'basic' = the paper's standard ImageNet preprocessing (resize/crop 224, normalise); "
            "the paper's wording is kept in augment_paper.",
            "'±<0.0' (sic) is stored as error_pm 0.0 with error_pm_is_upper_bound true.",
        ],
    },
    "table4": {
        "key": "table4_label_noise",
        "file": "table4_label_noise.yaml",
        "title": "Table 4: CIFAR-10 with noisy training labels; clean test set",
        "statistic": (
            "The paper prints test ACCURACY (%) with no ± and no stated number of runs; error = 100 - "
            "accuracy (accuracy kept in test_accuracy). error_pm is null throughout."
        ),
        "notes": [
            "block 'literature': numbers the paper quotes from Jiang et al. (2019); optimizer, model null.",
            "block 'ours': the authors' runs, ResNet-32, 200 epochs. method 'standard' = plain training with "
            "the optimizer; 'mixup', 'bootstrap+mixup', 'bootstrap' (= Bootstrap + SAM) are variants.",
            "label_noise is the fraction of flipped training labels (20% -> 0.2).",
            "augment: null = not stated in the paper.",
            "error null = '-' in the paper (no number reported).",
        ],
    },
    "table5": {
        "key": "table5_svhn_fashion_mnist",
        "file": "table5_svhn_fashion_mnist.yaml",
        "title": "Table 5 (App. B.1): SVHN and Fashion-MNIST test error (%)",
        "statistic": CI_STATISTIC + " (the paper's general statement; Table 5 itself does not restate it)",
        "notes": [
            "epochs: null = not stated in the paper.",
            "'Auto augment' rows: SVHN = the SVHN AutoAugment policy + cutout (augment autoaugment); "
            "Fashion-MNIST = cutout only (paper's words, see augment_note), so augment is cutout there and "
            "augment_paper keeps the paper's row label 'autoaugment'.",
            "rho, lr, weight_decay come from Table 7.",
        ],
    },
}
# Transcription keys copied as they are (renamed where the new name is clearer).
COPIED_KEYS = {
    "rho": "rho",
    "lr": "lr",
    "weight_decay": "weight_decay",
    "batch_size": "batch_size",
    "momentum": "momentum",
    "lr_schedule": "lr_schedule",
    "label_smoothing": "label_smoothing",
    "rho_source": "rho_source",
    "sam_error_with_rho_0_05_table9": "error_rho_0_05_table9",
    "baseline_note": "baseline_note",
    "epochs_note": "epochs_note",
    "augmentation_note": "augment_note",
    "optimizer_note": "optimizer_note",
    "mixup_alpha_note": "mixup_alpha_note",
    "note": "note",
}


def _lookup(mapping: dict, value, what: str):
    if value not in mapping:
        raise ValueError(f"unknown {what} {value!r} in the transcription; known: {sorted(mapping)}")
    return mapping[value]


def _base_cell(row: dict) -> dict:
    """Fields shared by every table, in a fixed order so the files read the same way."""
    return {
        "model": _lookup(MODEL_NAMES, row["model"], "model") if row.get("model") else None,
        "model_paper": row.get("model"),
        "dataset": row["dataset"],
        "augment": _lookup(AUGMENT_NAMES, row["augmentation"], "augmentation")
        if row.get("augmentation")
        else None,
        "epochs": row.get("epochs"),
        "optimizer": row.get("optimizer"),
        "method": "standard",
        "label_noise": 0.0,
        "rho": row.get("rho"),
        "error": row["error_pct"],
        "error_pm": row.get("error_pm"),
        "error_pm_is_upper_bound": bool(row.get("error_pm_is_upper_bound", False)),
    }


def _copy_extras(row: dict, cell: dict) -> dict:
    for src, dst in COPIED_KEYS.items():
        if src in row and src != "rho":
            cell[dst] = row[src]
    return cell


def convert_table1(rows: list[dict]) -> list[dict]:
    return [_copy_extras(r, _base_cell(r)) for r in rows]


def convert_table5(rows: list[dict]) -> list[dict]:
    """Fashion-MNIST's "auto augment" row is cutout only (App. B.1): its augment is ``cutout``, as our runs
    record it; the paper's row label stays in ``augment_paper``."""
    cells = []
    for row in rows:
        cell = _copy_extras(row, _base_cell(row))
        if cell["dataset"] == "fashion_mnist" and cell["augment"] == "autoaugment":
            cell["augment"], cell["augment_paper"] = "cutout", "autoaugment"
        cells.append(cell)
    return cells


def convert_table2(rows: list[dict]) -> list[dict]:
    """Merge the transcription's top1_error / top5_error rows into one cell each."""
    cells: dict[tuple, dict] = {}
    for row in rows:
        key = (row["model"], row["epochs"], row["optimizer"])
        if key not in cells:
            cells[key] = _copy_extras(row, _base_cell(row))
            cells[key].pop("note", None)  # notes belong to one metric; attached below
            cells[key]["augment_paper"] = row["augmentation"]
            for k in ("error", "error_pm", "error_pm_is_upper_bound"):
                cells[key][k] = None
        cell = cells[key]
        if row["metric"] == "top1_error":
            prefix = "error"
        elif row["metric"] == "top5_error":
            prefix = "error_top5"
        else:
            raise ValueError(f"unknown metric {row['metric']!r}; known: top1_error, top5_error")
        if cell.get(prefix) is not None:
            raise ValueError(f"duplicate {row['metric']} for {key}")
        cell[prefix] = row["error_pct"]
        cell[f"{prefix}_pm"] = row["error_pm"]
        cell[f"{prefix}_pm_is_upper_bound"] = bool(row.get("error_pm_is_upper_bound", False))
        if "note" in row:
            cell[f"{prefix}_note"] = row["note"]
    return list(cells.values())


def convert_table4(rows: list[dict]) -> list[dict]:
    cells = []
    for row in rows:
        cell = {
            "model": _lookup(MODEL_NAMES, row["model"], "model") if row.get("model") else None,
            "model_paper": row.get("model"),
            "dataset": row["dataset"],
            "augment": None,
            "epochs": row.get("epochs"),
            "optimizer": None,
            "method": row["method"],
            "method_paper": row["method"],
            "block": row["block"],
            "label_noise": row["noise_rate_pct"] / 100.0,
            "rho": row.get("rho"),
            "error": row["error_pct"],
            "error_pm": None,
            "error_pm_is_upper_bound": False,
            "test_accuracy": row["test_accuracy_pct"],
        }
        if row["block"] == "ours":
            cell["optimizer"], cell["method"] = _lookup(TABLE4_METHODS, row["method"], "Table 4 method")
        cells.append(_copy_extras(row, cell))
    return cells


CONVERTERS = {
    "table1": convert_table1,
    "table2": convert_table2,
    "table4": convert_table4,
    "table5": convert_table5,
}


def build_tables(src: Path) -> dict[str, dict]:
    """Return {table id: document} for every table, ready to dump."""
    data = yaml.safe_load(src.read_text())
    docs = {}
    for table, spec in TABLES.items():
        rows = data[spec["key"]]
        sources = sorted({r["source"] for r in rows})
        docs[table] = {
            "table": table,
            "title": spec["title"],
            "paper": data["meta"]["paper"],
            "paper_version": data["meta"]["version_transcribed"],
            "sources": sources,
            "transcription": f"shared/paper/tables.yaml, key {spec['key']} (a checked transcription)",
            "statistic": spec["statistic"],
            "notes": spec["notes"],
            "cells": CONVERTERS[table](rows),
        }
    return docs


def render(doc: dict) -> str:
    """One table's file text, as committed under results/paper/."""
    header = (
        f"# Generated by results/paper/make_tables.py from the transcription; do not edit by hand.\n"
        f"# {len(doc['cells'])} cells. Load with analysis/paper_tables.py.\n"
    )
    return header + yaml.safe_dump(doc, sort_keys=False, width=110, allow_unicode=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--src", type=Path, default=DEFAULT_SRC, help="the transcription (tables.yaml)")
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for table, doc in build_tables(args.src).items():
        path = args.out_dir / TABLES[table]["file"]
        path.write_text(render(doc))
        print(f"{path}: {len(doc['cells'])} cells")


if __name__ == "__main__":
    main()
