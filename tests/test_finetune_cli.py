"""Finetuning and evaluation through the real CLIs: pretrain on digits 0-4 with train.py, finetune on 5-9
from the run directory with frozen BatchNorm statistics, then scripts/evaluate.py on both.

The promises are checked on the saved weights (BatchNorm buffers of the finetuned model equal the
pretrained ones bit for bit; the body moved; the head is 5-way) and on evaluation.json against
results.json (the reloaded model reproduces the recorded test error).
"""

import json

import pytest
import torch
from cli import final_weights, run_forked, run_train

from scripts.evaluate import main as evaluate_main

COMMON = [
    "model=wrn_tiny",
    "dataset=digits",
    "device=cpu",
    "batch_size=64",
    "m=null",
    "epochs=1",
    "logger=none",
]


@pytest.mark.slow
def test_pretrain_finetune_with_frozen_bn_then_evaluate(tmp_path):
    pre, fine = tmp_path / "pre", tmp_path / "fine"
    proc = run_train([*COMMON, "rho=0.05", "dataset.classes=[0,1,2,3,4]"], pre)
    assert proc.returncode == 0, proc.output
    proc = run_train(
        [*COMMON, "rho=0.05", "dataset.classes=[5,6,7,8,9]", f"model.pretrained={pre}", "model.reset_head=true", "model.freeze_bn_stats=true", "augment=none"],
        fine,
    )  # fmt: skip
    assert proc.returncode == 0, proc.output
    assert "head 'fc' re-initialised" in proc.output and "BatchNorm statistics frozen" in proc.output
    before, after = final_weights(pre), final_weights(fine)
    bn_buffers = [k for k in before if k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert bn_buffers and all(torch.equal(before[k], after[k]) for k in bn_buffers)
    assert not torch.equal(before["conv1.weight"], after["conv1.weight"])  # the body was finetuned
    assert after["fc.weight"].shape[0] == 5

    # in-process: the same main() as `python scripts/evaluate.py ...`, without another interpreter start
    assert (
        evaluate_main([str(pre), str(fine), "--probe-dataset", "digits", "--probe-classes", "5,6,7,8,9"]) == 0
    )
    for run in (pre, fine):
        result = json.loads((run / "evaluation.json").read_text())
        recorded = json.loads((run / "results.json").read_text())["test_error"]
        assert result["test_error_pct"] == pytest.approx(recorded, abs=1e-6)
        assert 0 <= result["ece_pct"] <= 100 and result["nll"] > 0
        assert 1 <= result["feature_rank"]["rank"] <= result["feature_rank"]["dim"]
        assert (
            result["linear_probe"]["classes"] == [5, 6, 7, 8, 9] and result["linear_probe"]["num_test"] == 180
        )
        fams = result["corruptions"]["families"]
        assert len(fams) == 12 and all(set(v) == {"1", "2", "3", "4", "5"} for v in fams.values())
        assert (run / "reliability.png").stat().st_size > 1000


@pytest.mark.slow  # a train.py start (fork server) and torch/timm imports: ~50 s on busy cores
def test_bad_pretrained_source_and_evaluating_an_unfinished_run_exit_2(tmp_path, capsys):
    (proc,) = run_forked(
        [{"args": [*COMMON, "model.pretrained=runs/no/such/run"], "run_dir": tmp_path / "x"}]
    )
    assert proc.returncode == 2 and "model.pretrained='runs/no/such/run': no such file" in proc.stderr
    (tmp_path / "empty").mkdir()
    assert evaluate_main([str(tmp_path / "empty")]) == 2
    assert "no final_model.pt" in capsys.readouterr().err


@pytest.mark.slow
def test_table3_path_timm_checkpoint_offline_on_flowers_files(tmp_path):
    """The Table 3 recipe end to end at toy size: a timm name + local checkpoint, Flowers-102 on-disk files,
    frozen BatchNorm statistics, steps as epochs x train_repeats."""
    import timm
    from fake_data import write_flowers

    write_flowers(tmp_path / "data")
    torch.manual_seed(0)
    published = timm.create_model("test_efficientnet", pretrained=False)
    ckpt = tmp_path / "test_efficientnet.pth"
    torch.save(published.state_dict(), ckpt)
    args = [
        "model=timm", "model.arch=test_efficientnet", "model.pretrained=test_efficientnet.r160_in1k",
        f"model.pretrained_file={ckpt}", "model.freeze_bn_stats=true", "dataset=flowers102",
        f"dataset.root={tmp_path / 'data'}", "dataset.download=false", "dataset.image_size=32",
        "dataset.num_workers=0", "dataset.train_repeats=2", "augment=none", "device=cpu", "epochs=1",
        "batch_size=2", "m=null", "rho=0.05", "logger=none", "trainer.eval_batch_size=4",
    ]  # fmt: skip
    run = tmp_path / "run"
    proc = run_train(args, run)
    assert proc.returncode == 0, proc.output
    assert (
        "timm test_efficientnet.r160_in1k" in proc.output and "(1000, 256) -> (102, 256)" in proc.output
    )  # Flowers has 102 classes
    assert "| 2 steps/epoch |" in proc.output  # 3 train images, batch 2: 1 step per pass x 2 passes
    after, before = final_weights(run), published.state_dict()
    frozen = [k for k in before if k.endswith(("running_mean", "running_var"))]
    assert frozen and all(torch.equal(after[k], before[k]) for k in frozen)
    assert json.loads((run / "results.json").read_text())["dataset"] == "flowers102"
