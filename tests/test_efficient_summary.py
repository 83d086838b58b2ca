"""analysis/efficient_study.py: share of SAM's gain, cost x SGD, the goal's verdict, on runs with known answers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from fake_data import write_fake_run

from analysis.efficient_study import (
    bench_cost,
    load,
    load_bench,
    pareto,
    sam_gain,
    summarise,
    verdict,
    write_summary,
)

# Per seed: (SGD, SAM, variant) test errors and images/s. The variant keeps half of SAM's gain in mean
# (SGD mean 6, SAM mean 2, variant mean 4) and trains at 1.25x SGD's time.
ERRORS = {0: (6.0, 2.0, 4.0), 1: (5.0, 3.0, 4.5), 2: (7.0, 1.0, 3.5)}
IPS = {"sgd": 400.0, "sam": 200.0, "looksam": 320.0}


def write_runs(root, noise=0.0, **fields):
    for seed, errors in ERRORS.items():
        for name, err in zip(("sgd", "sam", "looksam"), errors):
            run = write_fake_run(
                root, f"{name}_{seed}_{noise}", optimizer=name, seed=seed, test_error=err, label_noise=noise,
                images_per_s=IPS[name], wall_time_s=1.0, **fields,
            )  # fmt: skip
            if name == "looksam":  # its final optimizer state: 1 two-pass step in 4
                (run / "checkpoints").mkdir()
                state = {"optimizer": {"variant": {"name": "looksam", "steps_taken": 8, "sam_steps": 2}}}
                torch.save(state, run / "checkpoints" / "last.pt")


def write_bench(path, looksam=None):
    ratios = {"sgd": {"all": [1.0] * 5}, "sam": {"all": [1.9, 2.0, 2.0, 2.1, 2.2]}}
    ratios["looksam"] = looksam or {"sam": [2.0] * 6, "other": [1.0] * 6}
    variants = {k: {"ratios": v, "persistent_copies": 0.0} for k, v in ratios.items()}
    path.write_text(json.dumps({"models": {"wrn_tiny_digits": {"variants": variants}}}))
    return path


def test_share_of_gain_study_time_and_front_are_the_defined_quantities(tmp_path):
    write_runs(tmp_path)
    (runs,) = load(tmp_path).values()
    rows = {r["optimizer"]: r for r in summarise(runs, n_boot=2000)}
    v = rows["looksam"]
    assert v["n_seeds"] == 3 and v["test_error_mean"] == pytest.approx(4.0)
    assert v["share_of_sam_gain"] == pytest.approx((6.0 - 4.0) / (6.0 - 2.0))
    assert v["cost_x_sgd"] == pytest.approx(1.25) and v["cost_ci_low"] == pytest.approx(1.25)
    assert v["share_ci_low"] <= 0.5 <= v["share_ci_high"] and v["share_ci_low"] < v["share_ci_high"]
    assert v["two_pass_share"] == pytest.approx(0.25)
    assert rows["sam"]["share_of_sam_gain"] == pytest.approx(1.0) and rows["sgd"]["share_of_sam_gain"] == 0.0
    assert v["goal"] == "no"  # the share's interval lies below 80%
    assert set(pareto(list(rows.values()))) == {"sgd", "sam", "looksam"}
    assert rows["sam"]["cost_x_sgd"] == pytest.approx(2.0)
    gain, lo, hi = sam_gain(runs, 2000)
    assert gain == pytest.approx(4.0) and lo <= 4.0 <= hi  # paired differences 4, 2, 6


def test_bench_cost_is_the_runs_share_of_each_kinds_median(tmp_path):
    write_runs(tmp_path / "runs")
    bench = load_bench(write_bench(tmp_path / "bench.json"), "wrn_tiny_digits")
    (runs,) = load(tmp_path / "runs").values()
    rows = {r["optimizer"]: r for r in summarise(runs, n_boot=500, bench=bench)}
    assert rows["looksam"]["cost_x_sgd"] == pytest.approx(0.25 * 2.0 + 0.75 * 1.0)
    assert rows["looksam"]["cost_ci_low"] == pytest.approx(1.25) == rows["looksam"]["cost_ci_high"]
    assert rows["sam"]["cost_x_sgd"] == pytest.approx(2.0)
    assert 1.9 <= rows["sam"]["cost_ci_low"] < 2.0 < rows["sam"]["cost_ci_high"] <= 2.2
    assert rows["looksam"]["study_time_x_sgd"] == pytest.approx(1.25)  # kept beside it
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="two-pass share"):
        bench_cost({"sam": [2.0], "other": [1.0]}, None, 10, rng)
    with pytest.raises(ValueError, match="timed no \\['sam'\\]"):
        bench_cost({"other": [1.0]}, 0.5, 10, rng)
    with pytest.raises(ValueError, match="model 'resnet18'"):
        load_bench(tmp_path / "bench.json", "resnet18")
    with pytest.raises(ValueError, match=r"bench_variants\.py --out"):
        load_bench(tmp_path / "runs" / "sgd_0_0.0" / "results.json", "wrn_tiny_digits")


@pytest.mark.parametrize(
    ("cost", "share", "expected"),
    [
        ((1.0, 1.2), (0.85, 1.1), "yes"),
        ((1.0, 1.35), (0.85, 1.1), "undecided"),  # the cost may pass 1.3x
        ((1.0, 1.2), (0.5, 0.9), "undecided"),  # the share may fall under 80%
        ((1.31, 1.5), (0.9, 1.0), "no"),
        ((1.0, 1.1), (0.2, 0.79), "no"),
        ((1.0, 1.1), (float("nan"), 1.0), "undecided"),
    ],
)
def test_the_goal_is_decided_on_both_intervals(cost, share, expected):
    assert verdict(cost, share) == expected


def test_no_goal_verdict_where_sams_own_gain_is_not_resolved(tmp_path):
    """SAM 1 point better on one seed, 1 worse on another: its gain's interval reaches 0, so a variant's
    "share" of it is a ratio of noise and the goal is n/a, not a verdict."""
    for seed, (e_sgd, e_sam) in {0: (1.0, 0.0), 1: (1.0, 2.0), 2: (1.0, 1.0)}.items():
        for name, err in (("sgd", e_sgd), ("sam", e_sam), ("mesa", 1.0)):
            write_fake_run(
                tmp_path, f"{name}_{seed}", optimizer=name, seed=seed, test_error=err, images_per_s=1.0,
                wall_time_s=1.0,
            )  # fmt: skip
    (runs,) = load(tmp_path).values()
    gain, lo, hi = sam_gain(runs, 2000)
    assert gain == pytest.approx(0.0) and lo < 0 < hi
    rows = {r["optimizer"]: r for r in summarise(runs, n_boot=2000)}
    assert rows["mesa"]["goal"] == "n/a"


def test_missing_reference_duplicate_seeds_and_mixed_variant_settings_are_errors(tmp_path):
    write_fake_run(tmp_path / "a", "only", optimizer="looksam", seed=0, images_per_s=1.0, wall_time_s=1.0)
    with pytest.raises(ValueError, match="needs SGD and SAM"):
        load(tmp_path / "a")
    write_fake_run(tmp_path / "a", "again", optimizer="looksam", seed=0, images_per_s=1.0, wall_time_s=1.0)
    with pytest.raises(ValueError, match="two runs of looksam seed 0"):
        load(tmp_path / "a")
    write_runs(tmp_path / "b")
    write_fake_run(
        tmp_path / "b", "sam_other_rho", optimizer="sam", seed=7, rho=0.5, test_error=2.0, images_per_s=1.0,
        wall_time_s=1.0,
    )  # fmt: skip
    with pytest.raises(ValueError, match=r"different settings .*sam.*rho 0\.1.*rho 0\.5"):
        load(tmp_path / "b")


def test_two_label_settings_are_two_sections_and_other_differences_are_refused(tmp_path):
    write_runs(tmp_path / "study", noise=0.0)
    write_runs(tmp_path / "study", noise=0.4)
    settings = load(tmp_path / "study")
    assert sorted(settings) == [0.0, 0.4]
    text = write_summary(settings, tmp_path / "out", n_boot=200).read_text()
    assert "### cifar100, wrn28_10, 200 epochs, clean labels" in text  # the title from the runs
    assert "### cifar100, wrn28_10, 200 epochs, 40% label noise" in text
    assert "| looksam | rho 0.1 |" in text  # each variant's setting, from results.json
    csv_lines = (tmp_path / "out" / "summary.csv").read_text().splitlines()
    assert csv_lines[0].startswith("label_noise,optimizer") and len(csv_lines) == 1 + 2 * 3
    assert (tmp_path / "out" / "pareto.png").stat().st_size > 10_000
    write_fake_run(
        tmp_path / "study", "sgd_longer", optimizer="sgd", seed=9, test_error=5.0, images_per_s=400.0,
        wall_time_s=1.0, epochs=210,
    )  # fmt: skip
    with pytest.raises(ValueError, match=r"differ in .*epochs"):
        load(tmp_path / "study")


def test_the_command_refuses_with_exit_2_and_names_the_problem(tmp_path, capsys):
    from scripts.efficient_summary import main

    write_runs(tmp_path / "runs")
    write_bench(tmp_path / "bench.json")
    out = tmp_path / "out"
    assert main([str(tmp_path / "runs"), "--bench", str(tmp_path / "bench.json"), "--out-dir", str(out)]) == 0
    assert "1.25 [1.25, 1.25]" in (out / "summary.md").read_text()
    assert main([str(tmp_path / "runs"), "--bench", str(tmp_path / "bench.json"), "--bench-model", "x"]) == 2
    assert "model 'x'" in capsys.readouterr().err


def test_the_reliability_diagrams_gap_is_drawn_in_its_legends_colour(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from analysis.evaluation.calibration import Bin, reliability_diagram

    figures = []
    monkeypatch.setattr(plt.Figure, "savefig", lambda self, *a, **k: figures.append(self))
    bins = [Bin(0.0, 0.5, 10, accuracy=0.6, confidence=0.3), Bin(0.5, 1.0, 10, accuracy=0.7, confidence=0.9)]
    reliability_diagram(bins, tmp_path / "r.png", "t")
    top = figures[0].axes[0]
    handles, labels = top.get_legend_handles_labels()
    gap = handles[labels.index("gap to confidence")]
    for patch in gap.patches:
        assert patch.get_facecolor() == gap.patches[0].get_facecolor() and patch.get_alpha() in (None, 1.0)
        assert patch.get_height() > 0  # a box from accuracy to confidence, above or below the bar


def test_bench_variants_json_feeds_the_summary(tmp_path):
    """The benchmark's --out JSON holds every timed round per kind of step, as load_bench reads it."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from bench_variants import main as bench_main

    out = tmp_path / "bench.md"
    bench_main(
        ["--models", "wrn_tiny_digits", "--variants", "sgd,sam,looksam,msam", "--rounds", "2", "--warmup", "0",
         "--batch-size", "16", "--threads", "1", "--out", str(out)]
    )  # fmt: skip
    bench = load_bench(out.with_suffix(".json"), "wrn_tiny_digits")
    assert bench["sgd"]["all"] == [1.0, 1.0]  # SGD over itself, round by round
    assert len(bench["looksam"]["sam"]) == 1 and len(bench["looksam"]["other"]) == 1  # k = 5: step 0 is SAM's
    assert set(bench["msam"]) == {"all"} and len(bench["sam"]["all"]) == 2
    assert "| looksam |" in out.read_text()
