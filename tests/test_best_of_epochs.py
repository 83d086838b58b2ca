"""compare.py's best of N and 2N epochs for Table 1's SGD baselines (paper Sec. 3.1), on fake run dirs.

The expected means are computed here from the fake runs' own numbers; the paper's number is a literal
from Table 1 (CIFAR-10, WRN-28-10 200 epochs, basic, SGD: 3.5).
"""

import csv
import io
import statistics

from scripts import compare
from tests.fake_data import write_fake_run

CELL = {
    "model": "wrn28_10",
    "dataset": "cifar10",
    "augment": "basic",
    "optimizer": "sgd",
    "rho": 0.0,
    "m": 32,
}


def _runs(root, epochs: int, errors: list[float]) -> None:
    for seed, err in enumerate(errors):
        write_fake_run(root, f"e{epochs}_s{seed}", **CELL, epochs=epochs, seed=seed, test_error=err)


def test_best_of_n_and_2n_picks_the_lower_mean_and_says_which(tmp_path, capsys):
    n_errors, doubled_errors = [3.6, 3.7, 3.5], [3.3, 3.4, 3.45]
    _runs(tmp_path, 200, n_errors)
    _runs(tmp_path, 400, doubled_errors)
    # A SAM row and an SGD row without its 2N half: no best-of row for either.
    write_fake_run(
        tmp_path, "sam", **{**CELL, "optimizer": "sam", "rho": 0.05}, epochs=200, seed=0, test_error=2.7
    )
    write_fake_run(tmp_path, "lone", **{**CELL, "augment": "cutout"}, epochs=200, seed=0, test_error=3.0)

    assert compare.main([str(tmp_path), "--csv", "--tables", "table1"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    (best,) = [r for r in rows if r["status"] == "best_of_n_and_2n"]
    assert (best["best_of"], best["best_epochs"], best["epochs"]) == ("2N", "400", "200")
    assert float(best["test_error_mean"]) == statistics.fmean(doubled_errors)
    assert float(best["paper_error"]) == 3.5
    assert abs(float(best["diff_test_error"]) - (statistics.fmean(doubled_errors) - 3.5)) < 1e-12
    # Each half keeps its own row.
    assert {r["epochs"] for r in rows if r["status"] in ("matched", "no_paper_cell") and r["augment"] == "basic"
            and r["optimizer"] == "sgd"} == {"200", "400"}  # fmt: skip

    assert compare.main([str(tmp_path), "--tables", "table1"]) == 0
    text = capsys.readouterr().out
    assert "best of N and 2N epochs" in text and "| 2N (400 epochs) |" in text


def test_n_wins_when_its_mean_is_lower(tmp_path, capsys):
    _runs(tmp_path, 200, [3.2, 3.3])
    _runs(tmp_path, 400, [3.6, 3.5])
    compare.main([str(tmp_path), "--csv", "--tables", "table1"])
    (best,) = [
        r for r in csv.DictReader(io.StringIO(capsys.readouterr().out)) if r["status"] == "best_of_n_and_2n"
    ]
    assert (best["best_of"], best["best_epochs"]) == ("N", "200")
    assert float(best["test_error_mean"]) == statistics.fmean([3.2, 3.3])
