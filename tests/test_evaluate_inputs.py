"""scripts/evaluate.py on inputs it cannot use: one line naming the file, exit 2 (its docstring's promise),
never a traceback (issue 22: a truncated final_model.pt was an OSError traceback and exit 1).

Through the command's main() in-process, as ``python scripts/evaluate.py RUN_DIR``; every case is refused
before any model runs, so no test trains or evaluates anything.
"""

from __future__ import annotations

import json

import pytest
import torch
from script_main import run_main

from models import create_model
from scripts import evaluate

CONFIG = {  # what train.py saves beside the weights (the keys evaluate reads)
    "model": {"name": "wide_resnet", "depth": 10, "widen_factor": 1, "drop_rate": 0.0},
    "dataset": {"name": "digits", "root": "unused"},
    "rho": 0.05,
    "seed": 0,
    "trainer": {"limit_val_batches": None},
}


def saved_model(run_dir, config=CONFIG, state=None):
    """RUN_DIR/final_model.pt as train.py writes it: {'model': state_dict, 'config': resolved config}."""
    run_dir.mkdir(parents=True, exist_ok=True)
    if state is None:
        state = create_model("wide_resnet", 10, in_chans=1, depth=10, widen_factor=1).state_dict()
    path = run_dir / "final_model.pt"
    torch.save({"model": state, "config": config}, path)
    return path


def refused(run_dir) -> str:
    """evaluate.py RUN_DIR: exit 2 and one line on stderr, which is returned."""
    proc = run_main(evaluate.main, run_dir, "--no-corruptions")
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


@pytest.mark.parametrize("keep", [0.5, 0.0, 0.99])
def test_a_truncated_final_model_is_named_and_exit_2(tmp_path, keep):
    path = saved_model(tmp_path / "run")
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])  # a copy cut short, an empty file
    line = refused(tmp_path / "run")
    assert str(path) in line and "cannot be read" in line and "truncated" in line


def test_a_file_that_is_not_a_torch_file_is_named(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "final_model.pt").write_text("not a checkpoint")
    line = refused(tmp_path / "run")
    assert str(tmp_path / "run" / "final_model.pt") in line and "cannot be read" in line


def test_a_config_without_its_dataset_is_named(tmp_path):
    path = saved_model(tmp_path / "run", config={"model": CONFIG["model"]})
    line = refused(tmp_path / "run")
    assert str(path) in line and "names no dataset (dataset.name)" in line


def test_weights_of_another_model_are_refused_in_one_line(tmp_path):
    saved_model(tmp_path / "run", state={"fc.weight": torch.zeros(3, 3)})
    line = refused(tmp_path / "run")
    assert "weights do not fit wide_resnet with 10 classes and 1 input channels" in line
    assert "missing (first: " in line and "of another shape (first: fc.weight)" in line


@pytest.mark.parametrize(
    ("results", "says"),
    [
        ({"test_error": None, "status": "failed"}, "test_error is None, not a number"),
        ([1, 2], "holds a JSON list"),
        ('{"test_error": ', "cannot be read (JSONDecodeError"),
    ],
)
def test_a_results_json_without_a_test_error_is_named(tmp_path, results, says):
    saved_model(tmp_path / "run")
    path = tmp_path / "run" / "results.json"
    path.write_text(results if isinstance(results, str) else json.dumps(results))
    line = refused(tmp_path / "run")
    assert str(path) in line and says in line
