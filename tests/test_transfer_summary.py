"""scripts/summarise_transfer.py (analysis/transfer_study.py): the paired statistics against hand
computation, and the tables it writes from run directories laid out as results/digits/transfer/run_study.py
leaves them."""

import json
import math

import pytest

from analysis.transfer_study import ci95, paired
from scripts.summarise_transfer import main


def test_paired_difference_ci_and_p_by_hand():
    # differences 1, 2, 1: mean 4/3, s = sqrt(1/3), half-width t_{0.975,2} * s / sqrt(3) = 4.302653 / 3
    d = paired({0: 1.0, 1: 3.0, 2: 2.0}, {0: 0.0, 1: 1.0, 2: 1.0})
    assert d["diff"] == pytest.approx(4 / 3)
    assert d["ci"] == pytest.approx(4.302653 / 3, rel=1e-6)
    # t = 4 with 2 df: the t(2) CDF is 1/2 + t / (2 sqrt(t^2 + 2)), so p = 1 - 4 / sqrt(18)
    assert d["p"] == pytest.approx(1 - 4 / math.sqrt(18), rel=1e-6)
    assert d["significant"] is False  # 4/3 < 4.302653/3: the interval includes 0
    mean, half = ci95([1.0, 2.0, 3.0, 4.0])  # s = sqrt(5/3), t_{0.975,3} = 3.182446
    assert (mean, half) == (2.5, pytest.approx(3.182446 * math.sqrt(5 / 3) / 2, rel=1e-6))


def write(run_dir, rho, seed, test_error, rank, pre_rho=None, ece=1.0):
    run_dir.mkdir(parents=True)
    config = {"pre_rho": pre_rho} if pre_rho is not None else {}
    spec = {"uses_sam": rho > 0, "optimizer": "sam" if rho > 0 else "sgd", "rho": rho, "m": 64}  # as train.py
    (run_dir / "results.json").write_text(
        json.dumps({"seed": seed, "rho": rho, "test_error": test_error, "spec": spec, "config": config})
    )
    sev = {str(s): 10.0 * s for s in range(1, 6)}
    ev = {"probe_error_pct": 3.0, "feature_rank": {"rank": rank}, "ece_pct": ece, "nll": 0.01, "corruption_error_pct": 30.0,
          "corruptions": {"mean_error_by_severity_pct": sev, "families": {"contrast": sev}, "source": "generated"}}  # fmt: skip
    (run_dir / "evaluation.json").write_text(json.dumps(ev))


def test_tables_from_run_directories(tmp_path):
    runs = tmp_path / "runs"
    for seed, (r_sgd, r_sam) in enumerate([(50, 40), (54, 38), (52, 42)]):
        write(runs / "pretrain" / f"rho0.0_s{seed}", 0.0, seed, 0.5, r_sgd)
        write(runs / "pretrain" / f"rho0.2_s{seed}", 0.2, seed, 0.5, r_sam)
        for pre in (0.0, 0.2):
            for rho in (0.0, 0.2):
                write(
                    runs / "finetune" / f"pre{pre}_rho{rho}_s{seed}",
                    rho,
                    seed,
                    1.0 + seed + rho,
                    30,
                    pre_rho=pre,
                )
    out = tmp_path / "out"
    assert main([str(runs), "--out", str(out)]) == 0
    text = (out / "summary.md").read_text()
    # rank differences -10, -16, -10: mean -12, s = sqrt(12), half-width 4.302653 * sqrt(12) / sqrt(3) = 8.61
    assert "| feature rank (99% variance) | 52.00 ± 4.97 | 40.00 ± 4.97 | -12.00 ± 8.61 |" in text
    # finetuning: SAM (rho 0.2) adds exactly 0.2 to every seed's error: difference +0.20 with zero spread
    assert "| SAM vs SGD finetuning, SGD-pretrained | test_error | +0.20 ± 0.00 |" in text
    assert (out / "figures" / "pretrain_metrics.png").stat().st_size > 1000
    assert (out / "summary.csv").read_text().startswith("metric,table") or "metric" in (
        out / "summary.csv"
    ).read_text()
