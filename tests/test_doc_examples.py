"""The documented transfer examples do what they say, run as written (plus a smoke size).

docs/finetuning.md: pretrain on digits 0-4, finetune on 5-9 with a finetuning recipe (not the training
defaults); docs/evaluation.md: the linear probe of that pretrained run on the unseen 5-9.
"""

from __future__ import annotations

import json
import re
import shlex
import sys

import pytest
from cli import REPO, Run, run_script

SMOKE = ["epochs=1", "trainer.limit_train_batches=2", "logger=none"]
pytestmark = pytest.mark.slow


def documented(page: str, starts: str) -> list[str]:
    """The page's command line that starts with ``starts``, as argv."""
    text = (REPO / "docs" / page).read_text()
    for line in re.findall(r"^(python [^\n#]+)", text, re.M):
        if line.startswith(starts):
            return shlex.split(line)
    raise AssertionError(f"docs/{page} has no command starting with {starts!r}")


def run(argv: list[str], tmp_path, extra: list[str]) -> Run:
    """``python SCRIPT ARGS`` as the page shows it, with runs/ under tmp_path (forked, tests/cli.py)."""
    args = [a.replace("runs/", f"{tmp_path}/runs/") for a in [*argv[2:], *extra]]
    return run_script(argv[1], args)


def test_pretrain_finetune_and_probe_as_documented(tmp_path):
    pre = run(documented("finetuning.md", "python train.py experiment=digits_pretrain"), tmp_path, SMOKE)
    assert pre.returncode == 0, pre.stderr
    fine = run(documented("finetuning.md", "python train.py experiment=digits_finetune"), tmp_path, SMOKE)
    assert fine.returncode == 0, fine.stderr
    results = json.loads((tmp_path / "runs" / "digits_fine" / "results.json").read_text())
    config = results["config"]
    # a finetuning recipe: not the training defaults (200 epochs, batch 256, m 32, lr 0.1)
    assert (config["lr"], config["batch_size"], config["m"], config["weight_decay"]) == (0.02, 64, None, 1e-5)
    assert config["model"]["reset_head"] is True and config["model"]["freeze_bn_stats"] is True
    assert config["dataset"]["classes"] == [5, 6, 7, 8, 9]
    assert "loaded pretrained weights" in (fine.stdout + fine.stderr).lower() or config["model"]["pretrained"]

    probe = run(documented("evaluation.md", "python scripts/evaluate.py runs/digits_pre"), tmp_path, [])
    assert probe.returncode == 0, probe.stderr
    evaluation = json.loads((tmp_path / "runs" / "digits_pre" / "evaluation.json").read_text())
    pretrained_on = json.loads((tmp_path / "runs" / "digits_pre" / "results.json").read_text())
    assert pretrained_on["config"]["dataset"]["classes"] == [0, 1, 2, 3, 4]  # the probe's classes are unseen
    assert "probe" in json.dumps(evaluation)


def test_finetune_without_its_pretrained_run_says_what_is_missing(tmp_path):
    missing = tmp_path / "no_such_run"
    proc = run(
        [sys.executable, "train.py", "experiment=digits_finetune", f"model.pretrained={missing}"],
        tmp_path,
        [*SMOKE, f"hydra.run.dir={tmp_path / 'fine'}"],
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert str(missing) in proc.stderr and "Traceback" not in proc.stderr
