"""analysis/efficient_study.py: share of SAM's gain, cost x SGD, Pareto front, on runs with known answers."""

from __future__ import annotations

import math

import pytest
from fake_data import write_fake_run

from analysis.efficient_study import bench_costs, load, pareto, summarise

# Per seed: (SGD, SAM, variant) test errors and images/s. The variant keeps half of SAM's gain in mean
# (SGD mean 6, SAM mean 2, variant mean 4) and trains at 1.25x SGD's time.
ERRORS = {0: (6.0, 2.0, 4.0), 1: (5.0, 3.0, 4.5), 2: (7.0, 1.0, 3.5)}
IPS = {"sgd": 400.0, "sam": 200.0, "looksam": 320.0}


def write_runs(root):
    for seed, errors in ERRORS.items():
        for name, err in zip(("sgd", "sam", "looksam"), errors):
            write_fake_run(
                root,
                f"{name}_{seed}",
                optimizer=name,
                seed=seed,
                test_error=err,
                images_per_s=IPS[name],
                wall_time_s=1.0,
            )


def test_share_of_gain_cost_and_front_are_the_defined_quantities(tmp_path):
    write_runs(tmp_path)
    rows = {r["optimizer"]: r for r in summarise(load(tmp_path), n_boot=2000)}
    v = rows["looksam"]
    assert v["n_seeds"] == 3 and v["test_error_mean"] == pytest.approx(4.0)
    assert v["share_of_sam_gain"] == pytest.approx((6.0 - 4.0) / (6.0 - 2.0))
    assert v["cost_x_sgd"] == pytest.approx(1.25) and v["cost_ci95"] == pytest.approx(0.0)
    assert v["share_ci_low"] <= 0.5 <= v["share_ci_high"] and v["share_ci_low"] < v["share_ci_high"]
    assert rows["sam"]["share_of_sam_gain"] == pytest.approx(1.0) and rows["sgd"]["share_of_sam_gain"] == 0.0
    assert not v["meets_goal"]  # 1.25x SGD but only 50% of the gain
    assert set(pareto(list(rows.values()))) == {"sgd", "sam", "looksam"}
    assert math.isclose(rows["sam"]["cost_x_sgd"], 2.0)


def test_missing_reference_and_duplicate_seeds_are_errors(tmp_path):
    write_fake_run(tmp_path, "only", optimizer="looksam", seed=0, images_per_s=1.0, wall_time_s=1.0)
    with pytest.raises(ValueError, match="needs SGD and SAM"):
        load(tmp_path)
    write_fake_run(tmp_path, "again", optimizer="looksam", seed=0, images_per_s=1.0, wall_time_s=1.0)
    with pytest.raises(ValueError, match="two runs of looksam seed 0"):
        load(tmp_path)


def test_bench_costs_replace_the_study_time_when_given(tmp_path):
    write_runs(tmp_path / "runs")
    log = tmp_path / "bench.log"
    log.write_text(
        "noise\nvariant           mean ms/step   x SGD  SAM steps  (efficient family, mean over rounds)\n"
        "sgd                      133.3    1.00\nsam                      269.5    2.02\n"
        "looksam                  163.4    1.23     20/100\n\nafter the run: load average 1\n"
    )
    assert bench_costs(log) == {"sgd": 1.0, "sam": 2.02, "looksam": 1.23}
    rows = {r["optimizer"]: r for r in summarise(load(tmp_path / "runs"), n_boot=200, bench=bench_costs(log))}
    assert rows["looksam"]["cost_x_sgd"] == 1.23 and rows["looksam"]["study_time_x_sgd"] == pytest.approx(
        1.25
    )
    with pytest.raises(ValueError, match="no 'mean ms/step' table"):
        bench_costs(tmp_path / "runs" / "sgd_0" / "results.json")


def test_runs_of_different_settings_are_not_paired_and_the_title_comes_from_the_runs(tmp_path):
    from analysis.efficient_study import setting_title, study_setting

    write_runs(tmp_path / "same")
    setting = study_setting(load(tmp_path / "same"))
    title = setting_title(setting)
    assert str(setting["epochs"]) in title and str(setting["dataset"]) in title
    assert ("label noise" in title) == bool(setting["label_noise"])
    write_runs(tmp_path / "mixed")
    write_fake_run(
        tmp_path / "mixed", "sgd_longer", optimizer="sgd", seed=9, test_error=5.0, images_per_s=400.0,
        wall_time_s=1.0, epochs=int(setting["epochs"]) + 10,
    )  # fmt: skip
    with pytest.raises(ValueError, match=r"differ in .*epochs"):
        load(tmp_path / "mixed")


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
