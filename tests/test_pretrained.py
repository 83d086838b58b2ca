"""models/pretrained.py: weights from a state-dict file, a run directory or a timm name (offline, with a
local file), the head kept or re-initialised, and eval-mode BatchNorm while finetuning.

Every check compares against the saved tensors themselves or against a second computation (eval-mode
forward), never against the loader's own report.
"""

import pytest
import torch
from torch import nn

from models import create_model
from models.pretrained import (
    FinetuneSpec,
    freeze_bn_statistics,
    load_pretrained,
    prepare_for_finetuning,
    resolve_pretrained,
    split_finetune_options,
)


def tiny(num_classes: int, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return create_model("wide_resnet", num_classes, in_chans=1, depth=10, widen_factor=1)


def test_run_directory_and_torchvision_style_files_load_body_and_reset_a_head_of_other_size(tmp_path):
    source = tiny(10, seed=1)
    run = tmp_path / "run"
    run.mkdir()
    torch.save({"model": source.state_dict(), "config": {"seed": 1}}, run / "final_model.pt")
    plain = tmp_path / "weights.pth"  # a bare state dict with DDP's 'module.' prefix
    torch.save({f"module.{k}": v for k, v in source.state_dict().items()}, plain)
    for where in (run, run / "final_model.pt", plain):
        target = tiny(5, seed=2)
        fresh_head = target.fc.weight.detach().clone()
        lines = prepare_for_finetuning(target, FinetuneSpec(pretrained=str(where)))
        assert "re-initialised" in lines[0]
        for k, v in source.state_dict().items():
            if not k.startswith("fc."):
                assert torch.equal(target.state_dict()[k], v), k
        assert torch.equal(target.fc.weight, fresh_head)  # the seeded initialisation, untouched


def test_head_kept_when_classes_match_unless_reset_is_asked(tmp_path):
    source = tiny(5, seed=1)
    path = tmp_path / "w.pt"
    torch.save(source.state_dict(), path)
    kept = tiny(5, seed=2)
    prepare_for_finetuning(kept, FinetuneSpec(pretrained=str(path)))
    assert torch.equal(kept.fc.weight, source.fc.weight)
    reset = tiny(5, seed=2)
    fresh = reset.fc.weight.detach().clone()
    prepare_for_finetuning(reset, FinetuneSpec(pretrained=str(path), reset_head=True))
    assert torch.equal(reset.fc.weight, fresh)
    with pytest.raises(ValueError, match="reset_head=false"):
        load_pretrained(tiny(3), source.state_dict(), reset_head=False)


def test_a_checkpoint_of_another_architecture_is_refused_naming_the_keys(tmp_path):
    other = create_model("resnet32", 10, in_chans=1)
    path = tmp_path / "other.pt"
    torch.save(other.state_dict(), path)
    with pytest.raises(ValueError, match=r"do not fit model WideResNet: missing .*unexpected"):
        prepare_for_finetuning(tiny(10), FinetuneSpec(pretrained=str(path)))


def test_bad_sources_are_named():
    with pytest.raises(FileNotFoundError, match="no such file"):
        resolve_pretrained("runs/does/not/exist")
    with pytest.raises(ValueError, match=r"neither an existing file .* nor a timm model name"):
        resolve_pretrained("no_such_architecture.tag")
    with pytest.raises(ValueError, match="reset_head='sometimes' is not one of auto, true, false"):
        split_finetune_options({"name": "x", "reset_head": "sometimes"})


def test_timm_name_offline_with_a_local_file_loads_those_weights(tmp_path):
    import timm

    torch.manual_seed(3)
    published = timm.create_model("test_efficientnet", pretrained=False)  # stands in for the download
    path = tmp_path / "test_efficientnet.pth"
    torch.save(published.state_dict(), path)
    kwargs, spec = split_finetune_options(
        {"name": "timm_model", "arch": "test_efficientnet", "pretrained": "test_efficientnet.r160_in1k",
         "pretrained_file": str(path), "reset_head": "auto", "freeze_bn_stats": False}
    )  # fmt: skip
    assert spec.pretrained_file == str(path)
    model = create_model("timm_model", 7, **kwargs)
    lines = prepare_for_finetuning(model, spec)
    assert "timm test_efficientnet.r160_in1k" in lines[0] and "(1000, 256) -> (7, 256)" in lines[0]
    ref = published.state_dict()
    body = [k for k in ref if not k.startswith("classifier.")]
    assert all(torch.equal(model.state_dict()[k], ref[k]) for k in body)
    same = create_model("timm_model", 1000, **kwargs)  # ImageNet finetuning: the head is kept
    prepare_for_finetuning(same, spec)
    assert torch.equal(same.classifier.weight, ref["classifier.weight"])


def test_frozen_bn_statistics_normalise_with_running_stats_in_train_mode():
    model = tiny(5)
    with torch.no_grad():  # non-trivial running statistics
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
    x = torch.randn(6, 1, 8, 8)
    expected = model.eval()(x)  # eval-mode forward: the second computation
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert freeze_bn_statistics(model) == sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    model.train()
    out = model(x)
    torch.testing.assert_close(out, expected)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # nothing moved
    out.sum().backward()  # BatchNorm's affine weights still learn
    bn = next(m for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    assert bn.weight.grad is not None and bn.weight.grad.abs().sum() > 0


def test_create_model_takes_a_model_config_with_finetuning_keys_off_and_refuses_them_on():
    cfg = {"depth": 10, "widen_factor": 1, "pretrained": None, "reset_head": "auto", "freeze_bn_stats": False}
    assert isinstance(create_model("wide_resnet", 3, in_chans=1, **cfg), nn.Module)
    with pytest.raises(ValueError, match=r"\['freeze_bn_stats'\] are finetuning options"):
        create_model("wide_resnet", 3, in_chans=1, **{**cfg, "freeze_bn_stats": True})
