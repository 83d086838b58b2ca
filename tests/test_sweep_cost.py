"""scripts/sweep_cost.py and analysis/cost.py: a measured row is used and says so; an unmeasured job is a
roofline estimate and says so; a memory-bound model costs more than its FLOPs imply; a finetuning cell
costs out at its image size without dataset files; benchmarks/bench_throughput.py writes a row the
estimator reads. The FLOP count is checked by hand: ResNet-32 (He et al. 2016: ~69M multiply-adds per
32x32 image, ~0.138 GFLOP) trained with SAM (6 forward-equivalents)."""

import pytest
import yaml

from analysis.cost import A100, DATASETS, Job, flops_only_images_per_s, load_rows, merge_row
from scripts.sweep_cost import main

EXP = "experiment=cifar10_resnet32_noise20_sam"  # Table 4: batch 128, m 16, 200 epochs, CIFAR-10


def first_hours(out: str) -> float:
    return float(out.splitlines()[0].split(", ")[1].split(" ")[0].replace(",", ""))


def flops_alone(out: str) -> float:
    return float(out.splitlines()[0].rsplit(" ", 1)[1].rstrip(")").replace(",", ""))


def resnet32_job(**kw) -> Job:
    base = dict(model="resnet32", model_cfg=(("name", "resnet32"),), dataset="cifar10", side=32, chans=3,
                classes=10, train_images=50_000, epochs=200, batch_size=128, m=16, sam=True, precision="bf16")  # fmt: skip
    return Job(**{**base, **kw})


def test_unmeasured_job_is_a_roofline_estimate_that_says_so(capsys, tmp_path):
    empty = tmp_path / "throughput.yaml"
    empty.write_text("rows: []\n")
    assert main([EXP, "--throughput-file", str(empty)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("1 jobs, ") and "(0 measured, 1 estimated" in out
    line = out.splitlines()[1]
    assert "resnet32 32px bf16 SAM (batch 128, m 16)" in line
    assert "[estimate: per-kernel roofline at A100 bf16 peak (312 TFLOP/s, 2 TB/s) x 0.4 efficiency" in line
    assert line.endswith("not measured]")


def test_flops_only_figure_matches_the_hand_count():
    rate = flops_only_images_per_s(resnet32_job())
    assert abs(rate / (312e12 * 0.4 / (0.138e9 * 6)) - 1) < 0.01, rate


def test_memory_bound_resnet32_costs_more_than_its_flops_imply(capsys, tmp_path):
    empty = tmp_path / "throughput.yaml"
    empty.write_text("rows: []\n")
    main([EXP, "--throughput-file", str(empty)])
    out = capsys.readouterr().out
    hours, flops_hours = first_hours(out), flops_alone(out)
    expected_flops_hours = 0.138e9 * 6 * 50_000 * 200 / (A100.peak_flops["bf16"] * A100.efficiency) / 3600
    assert abs(flops_hours / expected_flops_hours - 1) < 0.05, (flops_hours, expected_flops_hours)
    # small kernels in chunks of 16: bound by kernel launches and memory traffic, not FLOPs
    assert hours > 10 * flops_hours, (hours, flops_hours)


def test_measured_row_is_used_and_says_so(capsys, tmp_path):
    path = tmp_path / "throughput.yaml"
    path.write_text("# header kept\nrows: []\n")
    row = dict(model="resnet32", image_size=32, precision="bf16", batch_size=128, m=16, sam_images_per_s=5000.0,
               sgd_images_per_s=9000.0, gpu="NVIDIA H100 80GB HBM3", date="2026-12-07", commit="abc1234",
               command="python benchmarks/bench_throughput.py --experiment cifar10_resnet32_noise20_sam --write")  # fmt: skip
    merge_row(row, path)
    merge_row({**row, "sam_images_per_s": 4000.0}, path)  # same key: replaces
    assert path.read_text().startswith("# header kept\n") and len(load_rows(path)) == 1
    main(
        [
            EXP,
            "experiment=cifar10_resnet32_noise20_sam,cifar10_resnet32_noise20_sgd",
            "--throughput-file",
            str(path),
        ]
    )
    out = capsys.readouterr().out
    assert "(2 measured, 0 estimated" in out
    expected = 50_000 * 200 / 4000.0 / 3600 + 50_000 * 200 / 9000.0 / 3600
    assert abs(first_hours(out) / expected - 1) < 0.01, out
    assert "[measured: NVIDIA H100 80GB HBM3, 2026-12-07, commit abc1234" in out


@pytest.mark.slow  # two EfficientNet-b7 traces: 10-15 s on 2 shared cores
def test_finetuning_cell_costs_out_at_its_image_size(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("SAM_DATA_ROOT", str(tmp_path / "no_data_here"))  # no dataset files needed
    empty = tmp_path / "throughput.yaml"
    empty.write_text("rows: []\n")
    cell = "experiment=finetune/flowers102_efficientnet_b7_sgd"
    main([cell, "--throughput-file", str(empty)])
    out600 = capsys.readouterr().out
    assert "efficientnet_b7 600px bf16 SGD" in out600 and "estimate:" in out600
    main([cell, "dataset.image_size=300", "--throughput-file", str(empty)])
    out300 = capsys.readouterr().out
    assert "efficientnet_b7 300px" in out300
    assert first_hours(out600) > 3 * first_hours(out300)  # 4x the pixels
    assert DATASETS["flowers102"].train_images == 2_040


def test_finetuning_job_reads_image_size_and_repeats_without_data(tmp_path, monkeypatch):
    from hydra import compose, initialize_config_dir

    from analysis.cost import job_from_config
    from scripts.sweep_cost import CONFIGS

    monkeypatch.setenv("SAM_DATA_ROOT", str(tmp_path / "no_data_here"))
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=finetune/cifar100_efficientnet_b7_sam"])
    job = job_from_config(cfg)
    assert (job.model, job.side, job.classes, job.batch_size, job.m, job.sam) == (
        "efficientnet_b7",
        600,
        100,
        1024,
        16,
        True,
    )
    assert job.train_images == 50_000 * 13 and job.epochs == 8  # App. C.2: 8 x 13 passes ~ 5k steps of 1024


def test_presets_expand_to_their_jobs(capsys, tmp_path):
    empty = tmp_path / "throughput.yaml"
    empty.write_text("rows: []\n")
    main(["experiment=cifar10_resnet32_noise20_sgd", "+sweep=seeds5", "--throughput-file", str(empty)])
    assert capsys.readouterr().out.startswith("5 jobs, ")


def test_benchmark_writes_a_row_per_experiment_in_the_files_format(tmp_path):
    from benchmarks.bench_throughput import main as bench

    path = tmp_path / "throughput.yaml"
    path.write_text("# header\nrows: []\n")
    args = ["--experiment", "quickstart", "--device", "cpu", "--precision", "fp32", "--batch-size", "8", "--m", "4",
            "--steps", "1", "--warmup", "0", "--write", str(path), "--experiment", "cifar10_resnet32_noise20_sam"]  # fmt: skip
    rows = bench(args)
    written = {row["experiment"]: row for row in load_rows(path)}
    assert written == {row["experiment"]: yaml.safe_load(yaml.safe_dump(row)) for row in rows}
    first, second = written["quickstart"], written["cifar10_resnet32_noise20_sam"]
    assert first["model"] == "wide_resnet" and first["image_size"] == 8 and first["m"] == 4
    assert second["model"] == "resnet32" and second["image_size"] == 32
    for row, experiment in ((first, "quickstart"), (second, "cifar10_resnet32_noise20_sam")):
        assert row["gpu"] == "cpu" and row["sam_images_per_s"] > 0 and row["sgd_images_per_s"] > 0
        assert {"date", "commit", "command"} <= set(row)
        # the command that measures this row alone
        assert row["command"].startswith("python benchmarks/bench_throughput.py --device cpu")
        assert (
            row["command"].endswith(f"--experiment {experiment}")
            and row["command"].count("--experiment") == 1
        )


def test_every_dataset_config_has_a_size():
    from pathlib import Path

    configs = Path(__file__).resolve().parents[1] / "configs" / "dataset"
    assert {p.stem for p in configs.glob("*.yaml")} == set(DATASETS)
