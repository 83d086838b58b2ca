"""Evaluate one finished run directory beyond its test error; the engine of scripts/evaluate.py.

Rebuilds the model from ``final_model.pt`` (weights and the resolved config train.py saved with them),
re-reads the run's dataset in file order, and measures: the test error again (it must equal
results.json's, a check that the right weights and data were loaded), calibration (ECE with 15 bins, NLL,
a reliability diagram), the rank of the penultimate features on a fixed test sample, a linear probe on a
target dataset / class subset, and the error under corruptions at 5 severities.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from analysis.evaluation.calibration import calibration_bins, calibration_report, reliability_diagram
from analysis.evaluation.corruptions import FAMILIES, NOT_IMPLEMENTED, SEVERITIES, corrupt, read_corrupted
from analysis.evaluation.features import feature_rank, linear_probe, logits_and_features
from data.build import load_arrays
from data.class_subset import select_classes
from data.resolution import resize_batch
from models import create_model
from models.pretrained import classifier_prefix, split_finetune_options


@dataclass(frozen=True)
class EvalOptions:
    probe_dataset: str | None = None  # None: the run's dataset
    probe_classes: Sequence[int] | None = None  # None: the run's classes (all, or its dataset.classes)
    rank_examples: int = 2048
    rank_threshold: float = 0.99
    corruptions: bool = True
    data_root: str | None = None  # None: the run's dataset.root
    batch_size: int = 512
    seed: int = 0


def evaluation_batches(
    images: np.ndarray,
    labels: np.ndarray,
    mean: Sequence[float],
    std: Sequence[float],
    size: int | None,
    batch_size: int,
    preprocessing: str = "official",
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The images in file order as the run's test loader gives them: normalised, then resized to ``size`` by
    the run's ``dataset.preprocessing`` through the trainer's own ``resize_batch`` (never a second rule)."""
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    for lo in range(0, len(labels), batch_size):
        x = (
            torch.from_numpy(np.ascontiguousarray(images[lo : lo + batch_size])).permute(0, 3, 1, 2).float()
            / 255.0
        )
        x = (x - mean_t) / std_t
        if size is not None and size != x.shape[-1]:
            x = resize_batch(x, size, preprocessing)
        yield x, torch.from_numpy(np.asarray(labels[lo : lo + batch_size], dtype=np.int64))


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


def load_run(run_dir: Path) -> tuple[dict, dict]:
    """(the final state dict, the run's resolved config) from train.py's final_model.pt.

    ValueError naming the file when it cannot be used: truncated or empty (a copy cut short), not a torch
    file, or not train.py's ``{'model': state_dict, 'config': {...}}`` with the model and dataset named.
    """
    path = Path(run_dir) / "final_model.pt"
    if not path.is_file():
        raise FileNotFoundError(
            f"{run_dir}: no final_model.pt (unfinished run, or trainer.save_final_model=false)"
        )
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises OSError, EOFError, RuntimeError, UnpicklingError, KeyError, ...
        raise ValueError(
            f"{path}: cannot be read ({_first_line(err)}): the file is truncated or damaged, or not the "
            "final_model.pt train.py writes"
        ) from None
    if not isinstance(saved, dict) or not isinstance(saved.get("model"), dict) or "config" not in saved:
        raise ValueError(f"{path}: expected train.py's {{'model': state_dict, 'config': ...}}")
    cfg = saved["config"]
    for group in ("model", "dataset"):
        if not isinstance(cfg, dict) or not isinstance(cfg.get(group), dict) or "name" not in cfg[group]:
            raise ValueError(
                f"{path}: its config names no {group} ({group}.name): not train.py's final_model.pt"
            )
    return saved["model"], cfg


def build_model(state: dict, cfg: dict, num_classes: int, in_chans: int) -> torch.nn.Module:
    """The run's architecture with its final weights, in eval mode (ValueError if they do not fit)."""
    kwargs, _ = split_finetune_options(cfg["model"])
    model = create_model(cfg["model"]["name"], num_classes, in_chans=in_chans, **kwargs)
    want = model.state_dict()
    missing = [k for k in want if k not in state]
    unexpected = [k for k in state if k not in want]
    reshaped = [
        k for k in want if k in state and getattr(state[k], "shape", None) != getattr(want[k], "shape", None)
    ]
    if missing or unexpected or reshaped:  # the weights of another architecture or class count
        found = [
            f"{len(keys)} {what} (first: {keys[0]})"
            for keys, what in (
                (missing, "missing"),
                (unexpected, "unexpected"),
                (reshaped, "of another shape"),
            )
            if keys
        ]
        raise ValueError(
            f"final_model.pt's weights do not fit {cfg['model']['name']} with {num_classes} classes "
            f"and {in_chans} input channels: tensors {', '.join(found)}"
        )
    model.load_state_dict(state)
    return model.eval()


def recorded_test_error(results_path: Path) -> tuple[float, dict]:
    """(results.json's test error, the number the reloaded model must reproduce; results.json), or ValueError
    naming the file."""
    try:
        results = json.loads(results_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{results_path}: cannot be read ({_first_line(err)})") from None
    if not isinstance(results, dict):
        raise ValueError(
            f"{results_path}: holds a JSON {type(results).__name__}, not train.py's results object"
        )
    value = results.get("test_error")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(
            f"{results_path}: test_error is {value!r}, not a number (an unfinished or failed run, or not "
            "train.py's results.json): nothing to check the reloaded model against"
        )
    return float(value), results


def _head(model: torch.nn.Module) -> torch.nn.Module:
    return model.get_submodule(classifier_prefix(model))


def evaluate_run(run_dir: Path, options: EvalOptions = EvalOptions()) -> dict:
    run_dir = Path(run_dir)
    state, cfg = load_run(run_dir)
    # results.json's test error, read before any work: a damaged one is refused at once
    results_path = run_dir / "results.json"
    recorded = None
    if results_path.is_file() and (cfg.get("trainer") or {}).get("limit_val_batches") is None:
        recorded, results = recorded_test_error(results_path)
    ds = cfg["dataset"]
    root = options.data_root or ds["root"]
    size = ds.get("image_size")
    method = ds.get("preprocessing", "official")  # how the run's loaders resized to ``size``
    arrays = load_arrays(ds["name"], root=root, classes=ds.get("classes"))
    model = build_model(state, cfg, arrays.num_classes, arrays.train_images.shape[3])
    head = _head(model)
    out: dict = {"run_dir": str(run_dir), "dataset": ds["name"], "classes": ds.get("classes")}

    # -- test set: error (checked against results.json), calibration, features for the rank
    logits, feats, labels = logits_and_features(
        model,
        head,
        evaluation_batches(
            arrays.test_images, arrays.test_labels, arrays.mean, arrays.std, size, options.batch_size, method
        ),
    )
    test_error = 100.0 * float((logits.argmax(1) != labels).double().mean())
    out["test_error_pct"] = test_error
    if recorded is not None:
        differs = abs(recorded - test_error) > 1e-6 + 100.0 / len(labels) * 0.5  # more than half an image
        out["results_json_test_error_pct"] = recorded
        if differs and results.get("precision", "fp32") == "fp32":
            raise ValueError(
                f"{run_dir}: the reloaded model's test error {test_error:.4f}% differs from results.json's "
                f"{recorded:.4f}%: the weights, data or config do not belong together"
            )
        if differs:  # trained and evaluated in bf16/fp16; we evaluate in fp32 on the CPU
            out["warning"] = (
                f"test error {test_error:.4f}% here (fp32) vs {recorded:.4f}% in results.json "
                f"({results['precision']} during training)"
            )
    out["calibration"] = calibration_report(logits, labels)
    out["ece_pct"] = out["calibration"]["ece_pct"]
    out["nll"] = out["calibration"]["nll"]
    reliability_diagram(
        calibration_bins(torch.softmax(logits.double(), 1), labels),
        run_dir / "reliability.png",
        f"{cfg['model']['name']} {ds['name']} rho={cfg['rho']} seed={cfg['seed']}: ECE {out['ece_pct']:.2f}%",
    )
    n_rank = min(options.rank_examples, len(feats))
    out["feature_rank"] = {
        "rank": feature_rank(feats[:n_rank], options.rank_threshold),
        "threshold": options.rank_threshold,
        "examples": n_rank,
        "dim": int(feats.shape[1]),
        "sample": f"the first {n_rank} test images of {ds['name']} (classes {ds.get('classes') or 'all'})",
    }

    # -- linear probe on the target
    target = options.probe_dataset or ds["name"]
    classes = (
        options.probe_classes
        if options.probe_classes is not None
        else (ds.get("classes") if target == ds["name"] else None)
    )
    probe_arrays = (
        arrays
        if (target == ds["name"] and classes == ds.get("classes"))
        else load_arrays(target, root=root, classes=classes)
    )
    _, train_f, train_y = logits_and_features(
        model,
        head,
        evaluation_batches(
            probe_arrays.train_images,
            probe_arrays.train_labels,
            arrays.mean,
            arrays.std,
            size,
            options.batch_size,
            method,
        ),
    )
    _, test_f, test_y = logits_and_features(
        model,
        head,
        evaluation_batches(
            probe_arrays.test_images,
            probe_arrays.test_labels,
            arrays.mean,
            arrays.std,
            size,
            options.batch_size,
            method,
        ),
    )
    probe = linear_probe(train_f.numpy(), train_y.numpy(), test_f.numpy(), test_y.numpy(), seed=options.seed)
    out["linear_probe"] = {
        "dataset": target,
        "classes": list(classes) if classes is not None else None,
        **asdict(probe),
    }
    out["linear_probe"]["val_error_pct"] = {str(k): v for k, v in probe.val_error_pct.items()}
    out["probe_error_pct"] = probe.test_error_pct

    # -- corruptions
    if options.corruptions:
        out["corruptions"] = corruption_errors(
            model, arrays, ds["name"], root, size, options, ds.get("classes"), method
        )
        out["corruption_error_pct"] = out["corruptions"]["mean_error_pct"]
    return out


@torch.no_grad()
def _error(model, images, labels, arrays, size, batch_size, preprocessing: str = "official") -> float:
    wrong = 0
    for x, y in evaluation_batches(images, labels, arrays.mean, arrays.std, size, batch_size, preprocessing):
        wrong += int((model(x).argmax(1) != y).sum())
    return 100.0 * wrong / len(labels)


def corruption_errors(
    model,
    arrays,
    dataset: str,
    root: str,
    size: int | None,
    options: EvalOptions,
    classes=None,
    preprocessing: str = "official",
) -> dict:
    files = read_corrupted(root, dataset)
    if files is not None and classes is not None:  # the released files hold every class: keep the run's
        files = {k: select_classes(images, labels, classes) for k, (images, labels) in files.items()}
    per_family: dict[str, dict[str, float]] = {}
    if files is not None:
        source = f"files under {root} (Hendrycks & Dietterich's released data)"
        for family, (images, labels) in files.items():
            n = len(labels) // 5  # the files stack severities 1..5 (with a class subset: still in that order)
            per_family[family] = {
                str(s): _error(
                    model,
                    images[(s - 1) * n : s * n],
                    labels[(s - 1) * n : s * n],
                    arrays,
                    size,
                    options.batch_size,
                    preprocessing,
                )
                for s in SEVERITIES
            }
    else:
        source = "generated on the fly (analysis/evaluation/corruptions.py; CIFAR-C constants)"
        for family in FAMILIES:
            per_family[family] = {
                str(s): _error(
                    model,
                    corrupt(arrays.test_images, family, s, options.seed),
                    arrays.test_labels,
                    arrays,
                    size,
                    options.batch_size,
                    preprocessing,
                )
                for s in SEVERITIES
            }
    errors = [e for fam in per_family.values() for e in fam.values()]
    return {
        "source": source,
        "families": per_family,
        "mean_error_pct": statistics.fmean(errors),
        "mean_error_by_severity_pct": {
            str(s): statistics.fmean(fam[str(s)] for fam in per_family.values()) for s in SEVERITIES
        },
        "not_implemented": list(NOT_IMPLEMENTED) if files is None else [],
    }


def write_evaluation(run_dir: Path, result: dict) -> Path:
    path = Path(run_dir) / "evaluation.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2, default=str))
    tmp.replace(path)
    return path
