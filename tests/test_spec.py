"""The RunSpec's checks: every numeric key has a range, typos are refused (``+`` or not), and a resume
accepts a key added since the checkpoint only at the value that computes what the old code computed."""

from __future__ import annotations

import json
import math
import typing
from dataclasses import fields, is_dataclass

import pytest
import torch
from cli import TINY_RUN, compose_train, results_numbers, run_many, run_train

from trainer.spec import LEGACY_DEFAULTS, RANGES, TrainConfig, validate

# An independent statement of what each number may be: (key, a valid value, an invalid value).
EXPECTED = [
    ("rho", 0.0, -0.01),
    ("rho", 0.5, math.inf),
    ("m", 8, 0),
    ("seed", 2**32 - 1, 2**32),
    ("seed", 0, -1),
    ("epochs", 1, 0),
    ("batch_size", 1, 0),
    ("lr", 1e-4, 0.0),
    ("lr", 0.1, math.nan),
    ("weight_decay", 0.0, -1e-4),
    ("label_noise", 0.8, 1.0),
    ("grad_clip", 5.0, 0.0),
    ("label_smoothing", 0.1, -0.1),
    ("dataset.val_fraction", 0.1, 1.0),
    ("dataset.cutout_size", 0, -1),
    ("dataset.num_workers", 0, -1),
    ("dataset.image_size", 32, 0),
    ("dataset.train_repeats", 2, 0),
    ("optimizer.eta", 0.01, -0.01),
    ("optimizer.momentum", 0.9, 2.0),
    ("optimizer.momentum", 0.0, 1.0),
    ("schedule.warmup_epochs", 0, -1),
    ("schedule.warmup_epochs", 2, 3),  # more warmup than the 2 epochs of the run
    ("trainer.limit_train_batches", 1, 0),
    ("trainer.limit_val_batches", 1, 0),
    ("trainer.eval_batch_size", 1, 0),
    ("trainer.log_every_n_steps", 1, 0),
    ("trainer.progress_every_s", 0.5, 0.0),
    ("trainer.checkpoint_interval_min", 0.0, -1.0),
    ("trainer.max_nonfinite_steps", 1, 0),
]
BASE = ["model=wrn_tiny", "dataset=digits", "batch_size=32", "m=null", "epochs=2", "device=cpu"]


def numeric_keys(schema: type, prefix: str = "") -> list[str]:
    """Every int/float key of the schema (Optional included), dotted."""
    hints = typing.get_type_hints(schema)
    keys = []
    for f in fields(schema):
        hint = hints[f.name]
        if is_dataclass(hint):
            keys += numeric_keys(hint, f"{prefix}{f.name}.")
        elif {int, float} & set(typing.get_args(hint) or (hint,)):
            keys.append(prefix + f.name)
    return keys


def test_every_numeric_key_has_a_range_and_the_table_covers_them_all():
    ranged = {key for key, _, _ in RANGES}
    assert set(numeric_keys(TrainConfig)) == ranged
    assert {key for key, _, _ in EXPECTED} == ranged


@pytest.mark.parametrize(("key", "good", "bad"), EXPECTED)
def test_each_range_accepts_the_valid_and_refuses_the_invalid_value(key, good, bad):
    validate(compose_train([*BASE, f"{key}={good}"]), world_size=1)
    with pytest.raises(ValueError, match=rf"^{key.replace('.', '[.]')}=.* is invalid"):
        validate(compose_train([*BASE, f"{key}={bad}"]), world_size=1)


def test_legacy_defaults_name_real_keys_with_values_of_their_type():
    for key, value in LEGACY_DEFAULTS.items():
        current = compose_train(BASE)
        node = current
        for part in key.split("."):
            node = node[part]
        assert type(node) is type(value), key


@pytest.mark.slow  # train.py commands
def test_typos_are_refused_with_a_plus_or_without(tmp_path):
    runs = run_many(
        [
            {"args": [*TINY_RUN, "+rh0=0.1"], "run_dir": tmp_path / "a"},
            {"args": [*TINY_RUN, "+trainer.max_nonfinite_step=5"], "run_dir": tmp_path / "b"},
            {"args": [*TINY_RUN, "++lr_=0.1"], "run_dir": tmp_path / "c"},
            {"args": [*TINY_RUN, "schedule.warmup_epochs=-1"], "run_dir": tmp_path / "d"},
            {"args": [*TINY_RUN, "optimizer.momentum=2"], "run_dir": tmp_path / "e"},
            {"args": [*TINY_RUN, "seed=1000000000000000000000000000000"], "run_dir": tmp_path / "f"},
        ]
    )
    expected = [
        "'rh0' is not a config key (did you mean 'rho'?)",
        "'trainer.max_nonfinite_step' is not a config key (did you mean 'trainer.max_nonfinite_steps'?)",
        "'lr_' is not a config key (did you mean 'lr'?)",
        "schedule.warmup_epochs=-1 is invalid",
        "optimizer.momentum=2",
        "seed=1000000000000000000000000000000 is invalid",
    ]
    for run, message, name in zip(runs, expected, "abcdef"):
        assert run.returncode == 2, run.output
        assert message in run.stderr, run.output
        assert not (tmp_path / name).exists(), "a refused command must not create its run directory"


@pytest.mark.slow  # a train.py command (the tests' fork server)
def test_a_results_json_without_config_is_refused_not_taken_as_done(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "results.json").write_text(json.dumps({"test_error": 1.0}))
    run = run_train([*TINY_RUN, "rho=0.3", "seed=7"], run_dir)
    assert run.returncode == 2, run.output
    assert "holds no config" in run.stderr
    assert json.loads((run_dir / "results.json").read_text()) == {"test_error": 1.0}


def _strip_key_from_checkpoints(run_dir, key: str) -> None:
    """What a checkpoint written before ``key`` existed holds: the config without it."""
    for path in (run_dir / "checkpoints").glob("*.pt"):
        state = torch.load(path, weights_only=False)
        node = state["config"]
        *parents, last = key.split(".")
        for part in parents:
            node = node[part]
        del node[last]
        torch.save(state, path)


@pytest.mark.slow
def test_a_key_added_since_the_checkpoint_resumes_at_its_legacy_value_only(tmp_path):
    key = "trainer.allow_config_change"
    killed, whole = run_many(
        [
            {"args": TINY_RUN, "run_dir": tmp_path / "killed", "fault": "step:5"},
            {"args": TINY_RUN, "run_dir": tmp_path / "whole"},
        ]
    )
    assert killed.returncode == -9 and whole.returncode == 0, killed.output + whole.output
    _strip_key_from_checkpoints(tmp_path / "killed", key)

    changed = run_train([*TINY_RUN, "lr=0.05"], tmp_path / "killed")  # a real change: refused
    assert changed.returncode == 2 and "lr: 0.1 -> 0.05" in changed.stderr, changed.output
    assert "trainer.allow_config_change=true" in changed.stderr

    resumed = run_train(TINY_RUN, tmp_path / "killed")  # the key at its legacy value: resumes
    assert resumed.returncode == 0, resumed.output
    numbers = results_numbers(tmp_path / "killed")
    assert numbers.pop("config_changes") == [
        {"from_step": 4, "changes": [f"{key}: added since the checkpoint, at its legacy value"]}
    ]
    expected = results_numbers(tmp_path / "whole")
    assert expected.pop("config_changes") == []
    assert numbers == expected  # ends exactly where the uninterrupted run ends


@pytest.mark.slow
def test_allow_config_change_resumes_a_changed_setting_and_records_it(tmp_path):
    killed = run_train(TINY_RUN, tmp_path / "run", fault="step:5")
    assert killed.returncode == -9, killed.output
    resumed = run_train([*TINY_RUN, "lr=0.05", "trainer.allow_config_change=true"], tmp_path / "run")
    assert resumed.returncode == 0, resumed.output
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["config_changes"] == [{"from_step": 4, "changes": ["lr: 0.1 -> 0.05"]}]
