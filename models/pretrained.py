"""Start a model from pretrained weights, for finetuning (the paper's Table 3, App. C.2).

``model.pretrained`` names where the weights come from, in this order of precedence:

* a file: one of our runs' ``final_model.pt`` (``{"model": state_dict, "config": ...}``), a plain
  timm / torchvision ``state_dict`` saved with ``torch.save`` (optionally wrapped in ``"state_dict"`` or
  ``"model"``), or a ``.safetensors`` file;
* a run directory: its ``final_model.pt``;
* a timm pretrained name with its tag (``tf_efficientnet_b7.ra_in1k``): timm downloads the weights when
  online; offline, ``model.pretrained_file=PATH`` hands timm a local copy of the same checkpoint.

The weights load into the architecture ``model.name`` builds, strictly: every tensor must exist with the
same shape, except the classifier head. ``model.reset_head``: ``auto`` keeps the pretrained head when its
class count matches the new dataset (the paper's ImageNet finetuning) and re-initialises it (the model's
own seeded initialisation) when it does not (App. C.2); ``true`` always re-initialises (same class count,
other classes, e.g. digits 0-4 -> 5-9); ``false`` always keeps it (an error when shapes differ).

``model.freeze_bn_stats=true`` makes every BatchNorm normalise with its running statistics during training
(eval-mode BatchNorm, App. C.2 and footnote 11): the statistics never move and batch statistics are never
used; BatchNorm's affine weights still train.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

FINETUNE_KEYS = ("pretrained", "pretrained_file", "reset_head", "freeze_bn_stats")
RESET_HEAD_CHOICES = ("auto", True, False)
_WRAPPER_KEYS = ("model", "state_dict", "model_state_dict")
_PREFIXES = ("module.", "_orig_mod.")  # DDP and torch.compile wrappers


@dataclass(frozen=True)
class FinetuneSpec:
    """What ``model.*`` asks for beyond the architecture (all off by default)."""

    pretrained: str | None = None
    pretrained_file: str | None = None
    reset_head: str | bool = "auto"
    freeze_bn_stats: bool = False

    @property
    def active(self) -> bool:
        return self.pretrained is not None or self.freeze_bn_stats


def split_finetune_options(model_cfg: Mapping[str, Any]) -> tuple[dict[str, Any], FinetuneSpec]:
    """Split a ``model`` config into (kwargs for ``create_model`` without ``name``, finetuning options)."""
    kwargs = {k: v for k, v in model_cfg.items() if k != "name" and k not in FINETUNE_KEYS}
    spec = FinetuneSpec(
        **{k: model_cfg[k] for k in FINETUNE_KEYS if k in model_cfg and model_cfg[k] is not None}
    )
    if spec.reset_head not in RESET_HEAD_CHOICES:
        raise ValueError(f"model.reset_head={spec.reset_head!r} is not one of auto, true, false")
    if not isinstance(spec.freeze_bn_stats, bool):
        raise ValueError(f"model.freeze_bn_stats={spec.freeze_bn_stats!r} must be true or false")
    if spec.pretrained_file is not None and spec.pretrained is None:
        raise ValueError(
            "model.pretrained_file is set but model.pretrained is not: name the timm checkpoint too"
        )
    return kwargs, spec


# ------------------------------------------------------------------------------------------ sources
def _unwrap(obj: Any, where: str) -> dict[str, Tensor]:
    """A state dict from a saved object: ours ({"model": ...}), Lightning-style, or a bare one."""
    if isinstance(obj, Mapping):
        for key in _WRAPPER_KEYS:
            if key in obj and isinstance(obj[key], Mapping):
                return _unwrap(obj[key], where)
        if obj and all(isinstance(v, Tensor) for v in obj.values()):
            out = {}
            for k, v in obj.items():
                for prefix in _PREFIXES:
                    k = k.removeprefix(prefix)
                out[k] = v
            return out
    raise ValueError(
        f"{where} holds no state dict: expected a mapping of tensors, or one under {list(_WRAPPER_KEYS)}"
    )


def load_state_file(path: str | Path) -> dict[str, Tensor]:
    """A state dict from a ``.pt``/``.pth``/``.bin`` (``torch.load``, tensors only) or ``.safetensors`` file."""
    path = Path(path).expanduser()
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return _unwrap(load_file(str(path)), str(path))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # not a torch file, or one that needs pickled code (refused for safety)
        raise ValueError(f"cannot read {path} as a torch state dict: {err}") from err
    return _unwrap(obj, str(path))


def _timm_state_dict(name: str, file: str | None) -> dict[str, Tensor]:
    import timm

    arch = name.split(".", 1)[0]
    if not name.startswith("hf-hub:") and not timm.is_model(arch):
        raise ValueError(
            f"model.pretrained={name!r} is neither an existing file or run directory nor a timm model name; "
            "give a path to a state dict / final_model.pt / run directory, or a timm name with its tag "
            "such as 'tf_efficientnet_b7.ra_in1k' (timm.list_pretrained() lists them)"
        )
    overlay = None
    if file is not None:
        if not Path(file).expanduser().is_file():
            raise FileNotFoundError(f"model.pretrained_file={file!r} does not exist")
        overlay = {"file": str(Path(file).expanduser())}
    try:
        source = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay)
    except Exception as err:  # offline without a file, unknown tag, corrupt download
        raise ValueError(
            f"timm could not load pretrained weights {name!r} ({type(err).__name__}: {err}). Offline, download "
            "the checkpoint elsewhere and pass it with model.pretrained_file=PATH"
        ) from err
    return source.state_dict()


def resolve_pretrained(source: str, file: str | None = None) -> tuple[dict[str, Tensor], str]:
    """(state dict, a description of where it came from) for a ``model.pretrained`` value."""
    path = Path(str(source)).expanduser()
    if path.is_dir():
        final = path / "final_model.pt"
        if not final.is_file():
            raise FileNotFoundError(
                f"model.pretrained={source!r} is a directory without final_model.pt (is the run finished?)"
            )
        return load_state_file(final), f"run {path}"
    if path.is_file():
        return load_state_file(path), f"file {path}"
    if "/" in str(source) and not str(source).startswith("hf-hub:"):
        raise FileNotFoundError(f"model.pretrained={source!r}: no such file or directory")
    return _timm_state_dict(str(source), file), f"timm {source}" + (f" (file {file})" if file else "")


# ------------------------------------------------------------------------------------------ loading
def classifier_prefix(model: nn.Module) -> str:
    """Name of the classifier module: timm's ``get_classifier()``, else the last ``nn.Linear``."""
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    if not isinstance(head, nn.Module) or isinstance(head, nn.Identity):
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        if not linears:
            raise ValueError(f"{type(model).__name__} has no nn.Linear classifier to re-initialise")
        head = linears[-1]
    for name, module in model.named_modules():
        if module is head:
            return name
    raise ValueError("the classifier is not a submodule of the model")


@dataclass(frozen=True)
class PretrainedReport:
    source: str
    loaded: int  # tensors copied from the checkpoint
    head: str  # classifier module name
    head_reset: bool
    head_shapes: str  # "checkpoint -> model" shapes of the head weight

    def __str__(self) -> str:
        action = "re-initialised" if self.head_reset else "kept from the checkpoint"
        return f"pretrained weights from {self.source}: {self.loaded} tensors; head '{self.head}' {action} ({self.head_shapes})"


def load_pretrained(
    model: nn.Module, state: Mapping[str, Tensor], source: str = "state dict", reset_head: str | bool = "auto"
) -> PretrainedReport:
    """Copy ``state`` into ``model`` strictly (all but the head must match name for name, shape for shape)."""
    own = model.state_dict()
    head = classifier_prefix(model)
    head_keys = {k for k in own if k.startswith(head + ".")}
    ckpt_head = {k for k in state if k.startswith(head + ".")}
    head_differs = ckpt_head != head_keys or any(state[k].shape != own[k].shape for k in head_keys)
    if reset_head is False and head_differs:
        shapes = {k: tuple(state[k].shape) for k in sorted(ckpt_head)}
        raise ValueError(
            f"model.reset_head=false but the checkpoint's head {shapes} does not fit the model's "
            f"{ {k: tuple(own[k].shape) for k in sorted(head_keys)} }; use reset_head=auto or true"
        )
    reset = reset_head is True or (reset_head == "auto" and head_differs)
    body_ckpt = {k: v for k, v in state.items() if not (reset and k in ckpt_head)}
    skip = head_keys if reset else set()
    missing = sorted(
        k for k in own if k not in body_ckpt and k not in skip and not k.endswith("num_batches_tracked")
    )
    unexpected = sorted(k for k in body_ckpt if k not in own)
    mismatched = sorted(k for k in body_ckpt if k in own and body_ckpt[k].shape != own[k].shape)
    if missing or unexpected or mismatched:
        detail = "; ".join(
            f"{what} ({len(keys)}): {', '.join(keys[:5])}{' ...' if len(keys) > 5 else ''}"
            for what, keys in (
                ("missing", missing),
                ("unexpected", unexpected),
                ("shape differs", mismatched),
            )
            if keys
        )
        raise ValueError(
            f"the weights from {source} do not fit model {type(model).__name__}: {detail}. "
            "Is model.name the architecture the checkpoint was trained with?"
        )
    with torch.no_grad():
        for k, v in body_ckpt.items():
            own[k].copy_(v.to(own[k].dtype))
    weight = f"{head}.weight"
    shapes = f"{tuple(state[weight].shape) if weight in state else '-'} -> {tuple(own[weight].shape) if weight in own else '-'}"
    return PretrainedReport(source, len(body_ckpt), head, reset, shapes)


def _eval_mode_pre_hook(module: nn.Module, args: Any) -> None:
    module.training = False


def freeze_bn_statistics(model: nn.Module) -> int:
    """Every BatchNorm normalises with its running statistics, in train() too; returns how many."""
    count = 0
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.register_forward_pre_hook(_eval_mode_pre_hook)
            count += 1
    return count


def prepare_for_finetuning(model: nn.Module, spec: FinetuneSpec) -> list[str]:
    """Apply ``spec`` to a freshly built (seeded) model; returns log lines saying what was done."""
    lines = []
    if spec.pretrained is not None:
        state, where = resolve_pretrained(spec.pretrained, spec.pretrained_file)
        lines.append(str(load_pretrained(model, state, where, spec.reset_head)))
    if spec.freeze_bn_stats:
        count = freeze_bn_statistics(model)
        if count == 0:
            raise ValueError(f"model.freeze_bn_stats=true but {type(model).__name__} has no BatchNorm layer")
        lines.append(f"BatchNorm statistics frozen (eval-mode normalisation) in {count} layers")
    return lines
