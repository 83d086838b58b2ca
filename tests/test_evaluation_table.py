"""compare.py's "beyond test error" table from evaluation.json files, against hand-computed statistics."""

import json

from fake_data import write_fake_run
from script_main import run_main

from scripts import compare

T975_1 = 12.706205  # t_{0.975, 1}


def test_compare_adds_mean_and_ci_of_evaluation_metrics_per_cell(tmp_path):
    root = tmp_path / "runs"
    cells = {"sam": (0.1, [2.0, 4.0]), "sgd": (0.0, [5.0, 5.0])}
    for opt, (rho, eces) in cells.items():
        for seed, ece in enumerate(eces):
            run = write_fake_run(
                root, f"{opt}{seed}", model="wide_resnet", dataset="digits", rho=rho, seed=seed
            )
            ev = {"ece_pct": ece, "nll": 0.1 * (seed + 1), "feature_rank": {"rank": 10 + seed}, "probe_error_pct": 3.0,
                  "corruption_error_pct": 20.0, "linear_probe": {"dataset": "digits", "classes": [5, 6, 7, 8, 9]}}  # fmt: skip
            (run / "evaluation.json").write_text(json.dumps(ev))
    write_fake_run(root, "not_evaluated", model="resnet32", dataset="digits", seed=0)
    proc = run_main(compare.main, root)
    assert proc.returncode == 0, proc.stderr
    section = proc.stdout.split("## Beyond test error")[1]
    sam = next(line for line in section.splitlines() if "| sam |" in line)
    sgd = next(line for line in section.splitlines() if "| sgd |" in line)
    # ECE 2, 4: mean 3, s = sqrt(2), half-width t * s / sqrt(2) = t; NLL 0.1, 0.2: 0.15 ± t * 0.05
    assert (
        f"| 2 | 3.00 ± {T975_1:.2f} | 0.15 ± {T975_1 * 0.05:.2f} | 10.50 ± {T975_1 * 0.5:.2f} | 3.00 ± 0.00 |"
        in sam
    )
    assert "| 2 | 5.00 ± 0.00 |" in sgd and "digits [5, 6, 7, 8, 9]" in sgd
    assert "resnet32" not in section
