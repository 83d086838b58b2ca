"""analysis/runs.py reads what the trainer decided (results.json's spec block) and derives it only for
results.json files written before that block existed (the legacy path)."""

from __future__ import annotations

import pytest
from fake_data import write_fake_run

from analysis.runs import CELL_KEYS, group_runs, load_run, load_runs


def test_the_spec_block_is_read_as_recorded_even_where_the_legacy_rule_says_otherwise(tmp_path):
    # The top level and the config say SAM, rho 0.05, m null with batch 256 on 8 processes: the legacy
    # rule would give ("sam", 0.05, 32). The spec block says the run was SGD with m 64: that is what it was.
    run_dir = write_fake_run(
        tmp_path,
        "run",
        optimizer="sam",
        rho=0.05,
        m=None,
        world_size=8,
        config={"m": None, "batch_size": 256},
        spec={
            "uses_sam": False,
            "optimizer": "sgd",
            "rho": 0.0,
            "m": 64,
            "per_device_batch": 64,
            "world_size": 1,
            "precision": "fp32",
        },
    )
    run = load_run(run_dir / "results.json")
    assert (run["optimizer"], run["rho"], run["m"], run["uses_sam"]) == ("sgd", 0.0, 64, False)


def test_a_spec_rho_of_zero_stays_the_recorded_optimizer(tmp_path):
    """MESA has no rho: its spec says rho 0 and optimizer mesa, and it must not join the SGD cell."""
    spec = {"uses_sam": True, "optimizer": "mesa", "rho": 0.0, "m": 32}
    write_fake_run(tmp_path, "mesa", optimizer="mesa", rho=0.0, spec=spec)
    write_fake_run(
        tmp_path, "sgd", optimizer="sgd", rho=0.0, spec={**spec, "uses_sam": False, "optimizer": "sgd"}
    )
    cells = {key[CELL_KEYS.index("optimizer")] for key in group_runs(load_runs(tmp_path))}
    assert cells == {"mesa", "sgd"}


def test_legacy_results_without_a_spec_block_are_derived_as_before(tmp_path):
    """Before the spec block: SAM at rho 0 is the SGD baseline (rho 0), m null is read from the config
    (256 over 8 processes: 32), and the rho-free MESA is not mistaken for SGD."""
    sam_at_zero = write_fake_run(
        tmp_path,
        "sam0",
        optimizer="SAM",
        rho=0.0,
        m=None,
        world_size=8,
        config={"m": None, "batch_size": 256},
    )
    run = load_run(sam_at_zero / "results.json")
    assert (run["optimizer"], run["rho"], run["m"], run["uses_sam"]) == ("sgd", 0.0, 32, False)
    asam = load_run(write_fake_run(tmp_path, "asam", optimizer="asam", rho=0.5, m=16) / "results.json")
    assert (asam["optimizer"], asam["rho"], asam["m"], asam["uses_sam"]) == ("asam", 0.5, 16, True)
    mesa = load_run(write_fake_run(tmp_path, "mesa", optimizer="mesa", rho=0.0) / "results.json")
    assert (mesa["optimizer"], mesa["rho"]) == ("mesa", 0.0)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"optimizer": "sgd", "rho": 0.0, "m": 64}, r"lacks \['uses_sam'\]"),
        ({"uses_sam": "no", "optimizer": "sgd", "rho": 0.0, "m": 64}, "uses_sam must be true or false"),
        ({"uses_sam": True, "optimizer": "sam", "rho": "0.05", "m": 64}, "spec.rho must be a number"),
        ([], "spec must be a JSON object"),
    ],
)
def test_a_malformed_spec_block_is_an_error_naming_the_file_never_a_fallback(tmp_path, spec, message):
    run_dir = write_fake_run(tmp_path, "bad", spec=spec)
    with pytest.raises(ValueError, match=message) as err:
        load_run(run_dir / "results.json")
    assert str(run_dir / "results.json") in str(err.value)
