"""timm architectures for finetuning: EfficientNet-b7 (the paper's Table 3) and any timm model by name.

Both are randomly initialised here (``pretrained=False``); the pretrained weights come from
``model.pretrained`` (models/pretrained.py), which loads them into this architecture strictly.

``efficientnet_b7`` is timm's ``tf_efficientnet_b7``: the TensorFlow EfficientNet with 'same' padding and
TF BatchNorm epsilon, the architecture of the public tensorflow/tpu checkpoints the paper finetuned (their
RandAugment b7 is timm's ``tf_efficientnet_b7.ra_in1k``). Dropout 0.5 before the head and drop-connect 0.2
are the EfficientNet paper's b7 values (Tan & Le 2019); the SAM paper does not state them for finetuning.
"""

from __future__ import annotations

from torch import nn

from models._checks import check_positive_int


def _create(arch: str, num_classes: int, in_chans: int, **kwargs) -> nn.Module:
    import timm  # imported here: `import models` stays fast for the CIFAR-only users

    num_classes = check_positive_int("num_classes", num_classes)
    in_chans = check_positive_int("in_chans", in_chans)
    if not timm.is_model(arch):
        raise ValueError(f"arch={arch!r} is not a timm architecture (timm.list_models() lists them)")
    return timm.create_model(arch, pretrained=False, num_classes=num_classes, in_chans=in_chans, **kwargs)


def efficientnet_b7(
    num_classes: int, in_chans: int = 3, drop_rate: float = 0.5, drop_path_rate: float = 0.2
) -> nn.Module:
    """EfficientNet-b7, TF variant (66M parameters with 1000 classes), input 600x600."""
    return _create(
        "tf_efficientnet_b7", num_classes, in_chans, drop_rate=drop_rate, drop_path_rate=drop_path_rate
    )


def timm_model(
    num_classes: int,
    in_chans: int = 3,
    arch: str = "resnet18",
    drop_rate: float = 0.0,
    drop_path_rate: float = 0.0,
) -> nn.Module:
    """Any timm architecture: ``model=timm model.arch=convnext_tiny`` (drop-path where the model has it)."""
    kwargs = {"drop_rate": drop_rate}
    if drop_path_rate:
        kwargs["drop_path_rate"] = drop_path_rate
    return _create(arch, num_classes, in_chans, **kwargs)
