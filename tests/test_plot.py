"""scripts/plot.py on synthetic run directories: real PNGs come out, bad inputs are named and skipped."""

import json
from pathlib import Path

import matplotlib.image
import numpy as np
from fake_data import write_fake_run
from script_main import run_main

from scripts import plot

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def write_run(root: Path, name: str, epochs_logged: int = 5, **fields) -> Path:
    """A run directory with results.json and a metrics.jsonl of ``epochs_logged`` epochs."""
    run_dir = write_fake_run(root, name, **{"rho": 0.05, "test_error": 16.0, **fields})
    test_error = json.loads((run_dir / "results.json").read_text())["test_error"]
    lines = [
        json.dumps({"epoch": e, "train_loss": 3.0 / e, "test_error": test_error + 30.0 / e, "lr": 0.1})
        for e in range(1, epochs_logged + 1)
    ]
    (run_dir / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    return run_dir


def assert_real_png(path: Path) -> None:
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    assert np.ptp(image[..., :3]) > 0  # not a blank canvas


def test_plot_writes_rho_sweep_and_curves(tmp_path):
    runs = tmp_path / "runs"
    for rho, base in [(0.02, 16.5), (0.05, 15.8), (0.1, 15.2), (0.2, 15.6)]:
        for seed in range(2):
            write_run(runs, f"sam_{rho}_{seed}", rho=rho, seed=seed, test_error=base + 0.2 * seed)
    for seed in range(2):
        write_run(
            runs, f"sgd_{seed}", optimizer="sgd", rho=0.0, m=None, seed=seed, test_error=17.0 + 0.3 * seed
        )
    bad_metrics = write_run(runs, "sam_0.05_2", rho=0.05, seed=2, test_error=15.9)
    with (bad_metrics / "metrics.jsonl").open("a") as f:
        f.write("{not json\n")
    (runs / "broken").mkdir()
    (runs / "broken" / "results.json").write_text("[1, 2")
    out_dir = tmp_path / "plots"

    proc = run_main(plot.main, runs, "--out-dir", out_dir)
    assert proc.returncode == 0, proc.stderr
    assert str(runs / "broken" / "results.json") in proc.stderr
    assert f"{bad_metrics / 'metrics.jsonl'}:6" in proc.stderr
    printed = [Path(line) for line in proc.stdout.splitlines() if line.endswith(".png")]
    assert sorted(p.name for p in printed) == [
        "curves_wrn28_10_cifar100_cutout_200ep.png",
        "rho_wrn28_10_cifar100_cutout_200ep.png",
    ]
    for path in printed:
        assert path.parent == out_dir
        assert_real_png(path)


def test_plot_with_no_runs_exits_cleanly(tmp_path):
    proc = run_main(plot.main, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "nothing to plot" in proc.stdout
    assert not list(tmp_path.rglob("*.png"))
