"""scripts/sweep_cost.py against a hand computation: ResNet-32 (He et al. 2016: ~69M multiply-adds per
32x32 image, i.e. ~0.138 GFLOP) trained with SAM (6 forward-equivalents) on CIFAR-10's 50,000 images for
the 200 epochs of Table 4."""

from scripts.sweep_cost import main


def test_one_table4_job_costs_what_its_flops_say(capsys):
    assert main(["experiment=cifar10_resnet32_noise20_sam", "--tflops", "0.001"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    jobs, hours = first.split(" jobs, ")[0], float(first.split(", ")[1].split(" ")[0].replace(",", ""))
    expected = 0.138e9 * 6 * 50_000 * 200 / (0.001 * 1e12) / 3600  # 2,300 GPU-hours at 1 GFLOP/s
    assert jobs == "1" and abs(hours / expected - 1) < 0.01, (hours, expected)


def test_presets_expand_to_their_jobs(capsys):
    main(["experiment=cifar10_resnet32_noise20_sgd", "+sweep=seeds5", "--tflops", "0.001"])
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("5 jobs, ")
    hours = float(first.split(", ")[1].split(" ")[0].replace(",", ""))
    assert abs(hours / (5 * 0.138e9 * 3 * 50_000 * 200 / 1e9 / 3600) - 1) < 0.01  # SGD: 3 per example
