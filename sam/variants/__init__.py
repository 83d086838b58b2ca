"""The efficient SAM family (issue 15) as options of the same step machinery: ``optimizer=<name>``.

Each variant is a :class:`sam.SAM` subclass written from its paper; ``make_step`` gives
:func:`sam.select_step` the step function (SAM-ON needs none: it is SAM with a filter). Per-run state
lives in ``state_dict()``, so the trainer's checkpoint carries it.

| name      | paper                                                     | class             |
|-----------|-----------------------------------------------------------|-------------------|
| looksam   | Liu et al., CVPR 2022                                     | ``LookSAM``       |
| esam      | Du et al., ICLR 2022                                      | ``ESAM``          |
| rst       | Zhao, Zhang & Hu, 2022 (randomized sharpness-aware train) | ``RandomSwitchSAM``|
| sam_late  | Zhou et al., ICLR 2025                                    | ``LateSAM``       |
| ae_sam    | Jiang et al., ICLR 2023                                   | ``AESAM``         |
| mesa      | Du et al., NeurIPS 2022                                   | ``MESA``          |
| gsam      | Zhuang et al., ICLR 2022                                  | ``GSAM``          |
| sam_on    | Mueller et al., NeurIPS 2023                              | ``SAMON``         |
| saf       | Du et al., NeurIPS 2022 (SAF, the same paper as MESA)     | ``SAF``           |
| msam      | Becker, Altrock & Risse, 2024 (Momentum-SAM)              | ``MomentumSAM``   |

Defaults are each paper's (or its authors' released code's where the paper is silent); every value and
its source is in ``configs/optimizer/<name>.yaml``. A setting that would leave a variant's mechanism off
for the whole run (MESA's or SAF's trajectory loss starting after the last step, a switch that never
takes a SAM step) is refused when the optimizer is built, naming the setting.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from sam.optimizer import SAM
from sam.variants.base import VariantSAM, step_generator
from sam.variants.esam import ESAM
from sam.variants.gsam import GSAM
from sam.variants.looksam import LookSAM
from sam.variants.mesa import MESA
from sam.variants.msam import MomentumSAM
from sam.variants.saf import SAF
from sam.variants.samon import SAMON, normalization_parameters
from sam.variants.switching import AESAM, LateSAM, RandomSwitchSAM

VARIANTS: dict[str, type[SAM]] = {
    "looksam": LookSAM,
    "esam": ESAM,
    "rst": RandomSwitchSAM,
    "sam_late": LateSAM,
    "ae_sam": AESAM,
    "mesa": MESA,
    "gsam": GSAM,
    "sam_on": SAMON,
    "saf": SAF,
    "msam": MomentumSAM,
}
# Variants whose update does not involve rho (MESA, SAF): they run whatever rho says, and record rho = 0.
WITHOUT_RHO: set[str] = {"mesa", "saf"}


def register_variant(name: str, cls: type[SAM], *, without_rho: bool = False) -> type[SAM]:
    """Make ``optimizer=<name>`` build ``cls`` (a new variant in one file: docs/adding-a-variant.md).

    ``cls`` takes ``(params, base_optimizer, rho=..., adaptive=..., eta=..., **options, **base_kwargs)``
    and may ask for ``model``, ``total_steps``, ``steps_per_epoch``, ``seed``, ``example_indices`` and
    ``num_examples`` by naming them in its ``__init__``.
    """
    if not (isinstance(cls, type) and issubclass(cls, SAM)):
        raise TypeError(f"register_variant({name!r}, ...) needs a subclass of sam.SAM, got {cls!r}")
    if name in ("sgd", "sam", "asam") or VARIANTS.get(name, cls) is not cls:
        raise ValueError(f"optimizer name {name!r} is taken; pick another")
    VARIANTS[name] = cls
    if without_rho:
        WITHOUT_RHO.add(name)
    return cls


# Hyperparameters in epochs that the factory turns into steps.
_EPOCH_KEYS = {"start_epoch": "start_step"}
# Filled in by the factory from the run, not from the variant's options.
_RUN_KEYS = ("model", "total_steps", "steps_per_epoch", "seed", "example_indices", "num_examples")

__all__ = [
    "AESAM",
    "ESAM",
    "GSAM",
    "MESA",
    "SAF",
    "SAMON",
    "VARIANTS",
    "WITHOUT_RHO",
    "LateSAM",
    "LookSAM",
    "MomentumSAM",
    "RandomSwitchSAM",
    "VariantSAM",
    "build_variant",
    "normalization_parameters",
    "register_variant",
    "step_generator",
]


def build_variant(
    name: str,
    params: Iterable[Any],
    *,
    model: nn.Module,
    rho: float,
    adaptive: bool = False,
    eta: float = 0.0,
    options: dict[str, Any] | None = None,
    total_steps: int | None = None,
    steps_per_epoch: int | None = None,
    seed: int = 0,
    example_indices: Callable[[], torch.Tensor] | None = None,
    num_examples: int | None = None,
    base_optimizer: type[torch.optim.Optimizer] = torch.optim.SGD,
    **base_kwargs: Any,
) -> SAM:
    """The variant ``name`` with its paper's hyperparameters from ``options`` (unknown keys: ValueError).

    ``model`` is the plain module (MESA's teacher, SAM-ON's normalization layers); ``total_steps`` and
    ``steps_per_epoch`` turn schedules in epochs into steps; ``seed`` seeds the per-step draws.
    ``example_indices`` (SAF): called at the start of every step, returns the training-set index of each
    example of the batch about to be stepped (this device's, in the order of its rows); ``num_examples``
    (SAF, optional): the size of that index space, to allocate the stored outputs once.
    """
    if name not in VARIANTS:
        raise ValueError(f"optimizer {name!r} is not one of {', '.join(VARIANTS)}")
    cls = VARIANTS[name]
    options = dict(options or {})
    for epoch_key, step_key in _EPOCH_KEYS.items():
        if epoch_key in options:
            if steps_per_epoch is None:
                raise ValueError(f"{name}: {epoch_key} needs steps_per_epoch")
            value = options.pop(epoch_key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(
                    f"{name}: {epoch_key}={value!r} is invalid: it must be a number of epochs >= 0"
                )
            options[step_key] = round(value * steps_per_epoch)
    accepted = [
        p
        for p in inspect.signature(cls.__init__).parameters
        if p not in ("self", "params", "base_optimizer", "kwargs", *_RUN_KEYS)
    ]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        epoch_keys = [e for e, step_key in _EPOCH_KEYS.items() if step_key in accepted]
        valid = ", ".join(sorted({*accepted, *epoch_keys} - set(_EPOCH_KEYS.values())))
        raise ValueError(
            f"optimizer.variant has unknown key(s) {unknown} for {name}; valid: {valid or 'none'}"
        )
    run = {
        "model": model,
        "total_steps": total_steps,
        "steps_per_epoch": steps_per_epoch,
        "seed": seed,
        "example_indices": example_indices,
        "num_examples": num_examples,
    }
    wanted = inspect.signature(cls.__init__).parameters
    run = {k: v for k, v in run.items() if k in wanted}
    return cls(params, base_optimizer, rho=rho, adaptive=adaptive, eta=eta, **run, **options, **base_kwargs)
