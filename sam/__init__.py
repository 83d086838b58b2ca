"""sam: Sharpness-Aware Minimization for PyTorch, exact and fast (needs torch only).

``SAM`` (ASAM via ``adaptive=True``), ``frozen_bn_stats``, and the step functions that wrap the two
passes with what a real run needs (L2 weight decay, clipping, AMP, m-sharpness chunks, DDP); the SAM
variants in ``sam.variants``. This package is the optimizer library and nothing else: every module in
it imports only torch and the standard library (tests/test_package.py installs it and checks).
"""

from sam.accumulation import accumulated_sam_step
from sam.batchnorm import frozen_bn_stats
from sam.foreach import global_grad_norm
from sam.optimizer import SAM
from sam.precision import Precision, resolve_precision
from sam.randomness import true_gradient
from sam.steps import (
    StepOptions,
    StepResult,
    sam_step,
    sam_step_chunked,
    select_step,
    sgd_step,
    sgd_step_chunked,
)
from sam.version import __version__ as __version__
from sam.weight_decay import decoupled_param_groups

__all__ = [
    "SAM",
    "Precision",
    "StepOptions",
    "StepResult",
    "accumulated_sam_step",
    "decoupled_param_groups",
    "frozen_bn_stats",
    "global_grad_norm",
    "resolve_precision",
    "sam_step",
    "sam_step_chunked",
    "select_step",
    "sgd_step",
    "sgd_step_chunked",
    "true_gradient",
]
