"""SAM from a timm optimizer name (issue 12, item 10): docs/frameworks.md's recipe against the same optimizer
spelled out by hand, bit for bit, and a short error for the optimizer instance timm's factory returns."""

from __future__ import annotations

import pytest
import timm.optim as timm_optim
import torch
from framework_reference import LR, MOMENTUM, RHO, assert_same_state, batches, net
from torch import nn

from sam import SAM

pytestmark = pytest.mark.slow


def train(model: nn.Module, optimizer: SAM) -> nn.Module:
    for x, y in batches():
        optimizer.step(lambda x=x, y=y: nn.functional.cross_entropy(model(x), y).backward())
    return model


@pytest.mark.parametrize(
    ("name", "spelled_out", "kwargs"),
    [
        ("sgd", torch.optim.SGD, dict(momentum=MOMENTUM, nesterov=True)),  # timm's "sgd" is Nesterov
        ("momentum", torch.optim.SGD, dict(momentum=MOMENTUM, nesterov=False)),
        ("adamw", torch.optim.AdamW, {}),
    ],
)
def test_sam_from_a_timm_optimizer_name_equals_the_class_spelled_out(name, spelled_out, kwargs):
    model = net()
    params = timm_optim.param_groups_weight_decay(model, weight_decay=5e-4)  # no decay on 1-d tensors
    extra = dict(momentum=MOMENTUM) if name != "adamw" else {}
    recipe = SAM(params, timm_optim.get_optimizer_class(name), rho=RHO, lr=LR, model=model, **extra)

    reference = net()
    params = timm_optim.param_groups_weight_decay(reference, weight_decay=5e-4)
    by_hand = SAM(params, spelled_out, rho=RHO, lr=LR, model=reference, **kwargs)
    assert_same_state(train(model, recipe), train(reference, by_hand))


def test_timm_factory_instance_is_a_short_error_naming_the_recipe():
    model = net()
    instance = timm_optim.create_optimizer_v2(model, "sgd", lr=LR)
    with pytest.raises(ValueError, match=r"got an instance of SGD.*") as err:
        SAM(model.parameters(), instance, rho=RHO, lr=LR)
    assert "get_optimizer_class" in str(err.value) and len(str(err.value)) < 300
