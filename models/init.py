"""Weight initialisation of the CIFAR models, as the official SAM code (``sam_jax/models/utils.py``).

* Convolutions: Kaiming normal, fan-out mode, gain sqrt(2): ``std = sqrt(2 / (C_out * k_h * k_w))``
  (JAX ``variance_scaling(2.0, "fan_out", "normal")``); biases (none in our models) 0.
* BatchNorm: weight 1, bias 0 (PyTorch's and Flax's default, stated so that nothing depends on it).
* Linear (the classifier): weight ``U[-1/sqrt(out_features), 1/sqrt(out_features)]``, bias 0: the
  official ``dense_layer_init_fn`` (taken from the AutoAugment code; the official docstring notes that
  the default initialisation costs about 0.5% error on CIFAR-100).

The ImageNet ResNets follow the official Flax ResNet's own defaults instead (see ``imagenet_resnet.py``).

Parameters on the ``meta`` device are skipped: they hold no values, and ``nn.init`` on meta tensors
imports torch's compiler stack (seconds). A model built on meta and materialised with ``to_empty()``
must be initialised again with :func:`init_cifar_weights_`.
"""

from __future__ import annotations

import math

from torch import nn


def init_cifar_weights_(model: nn.Module) -> nn.Module:
    """Initialise every Conv / BatchNorm / Linear of ``model`` in place (see module docstring)."""
    for m in model.modules():
        if any(p.is_meta for p in m.parameters(recurse=False)):
            continue
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            if m.affine:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            bound = 1.0 / math.sqrt(m.out_features)
            nn.init.uniform_(m.weight, -bound, bound)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return model
