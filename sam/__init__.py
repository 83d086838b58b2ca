"""sam: Sharpness-Aware Minimization for PyTorch, exact and fast.

``SAM`` (ASAM via ``adaptive=True``), ``frozen_bn_stats``, and the step functions the trainer uses.
"""

from sam.batchnorm import ChunkedBNStats, frozen_bn_stats
from sam.optimizer import SAM, global_grad_norm
from sam.precision import PRECISIONS, Precision, resolve_precision
from sam.randomness import RNGState, true_gradient
from sam.steps import (
    PERTURBATION_MODES,
    StepOptions,
    StepResult,
    sam_step,
    sam_step_chunked,
    select_step,
    sgd_step,
    sgd_step_chunked,
)
from sam.weight_decay import WEIGHT_DECAY_MODES, add_l2_gradient_, decoupled_param_groups

__all__ = [
    "PERTURBATION_MODES",
    "PRECISIONS",
    "SAM",
    "WEIGHT_DECAY_MODES",
    "ChunkedBNStats",
    "Precision",
    "RNGState",
    "StepOptions",
    "StepResult",
    "add_l2_gradient_",
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
__version__ = "0.1.0"
