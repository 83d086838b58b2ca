"""The flatness report of one trained model: what scripts/sharpness.py measures and writes as JSON.

:func:`measure_sharpness` takes a model and a fixed set of batches (top-k Hessian eigenvalues of the mean
cross-entropy and the m-sharpness, analysis/flatness.py); :func:`load_checkpoint_and_data` rebuilds a run's
model from its final_model.pt and reads the first training examples it was trained on.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from analysis.flatness import hessian_eigenvalues, m_sharpness
from models.pretrained import split_finetune_options

STOPPING_RULE = (
    "scipy eigsh (ARPACK implicitly restarted Lanczos); stopped when every Ritz pair's residual "
    "||H x - theta x|| <= tol * |theta| (relative), or max_iter restarts (then an error)"
)


def measure_sharpness(
    model: nn.Module,
    batches: list[tuple[Tensor, Tensor]],
    *,
    k: int = 5,
    rho: float = 0.05,
    m: int = 128,
    tol: float = 1e-3,
    max_iter: int = 100,
    seed: int = 0,
    ascent_steps: int = 1,
) -> dict:
    """Top-k Hessian eigenvalues of the mean cross-entropy over `batches`, and the m-sharpness at rho.

    The model is measured in eval() mode (BatchNorm running statistics, no dropout); its weights, buffers
    and train/eval flags are as before on return. One loss closure per batch, each the batch's summed
    loss over the total count, so a Hessian-vector product needs the memory of one batch only.
    """
    if not batches:
        raise ValueError("batches is empty")
    num_examples = sum(len(y) for _, y in batches)
    params = [p for p in model.parameters() if p.requires_grad]
    modes = {mod: mod.training for mod in model.modules()}
    model.eval()
    try:
        with torch.no_grad():
            loss = (
                sum(F.cross_entropy(model(x), y, reduction="sum").item() for x, y in batches) / num_examples
            )
        closures = [
            (lambda x=x, y=y: F.cross_entropy(model(x), y, reduction="sum") / num_examples)
            for x, y in batches
        ]
        eigenvalues = hessian_eigenvalues(closures, params, k=k, tol=tol, max_iter=max_iter, seed=seed)
        sharp = m_sharpness(model, F.cross_entropy, batches, rho=rho, m=m, ascent_steps=ascent_steps)
    finally:
        for mod, training in modes.items():
            mod.training = training
    lam = eigenvalues.tolist()
    return {
        "num_examples": num_examples,
        "loss": loss,
        "k": k,
        "eigenvalues": lam,
        "lambda_max": lam[0],
        "lambda_k": lam[-1],
        "lambda_max_over_lambda_k": lam[0] / lam[-1] if lam[-1] != 0 else None,
        "tol": tol,
        "max_iter": max_iter,
        "seed": seed,
        "stopping_rule": STOPPING_RULE,
        "rho": rho,
        "m": m,
        "ascent_steps": ascent_steps,
        "m_sharpness": sharp,
        "m_sharpness_chunks": num_examples // m,
        "bn_mode": "eval (BatchNorm running statistics, dropout off)",
        "loss_fn": "cross-entropy, mean over the subset; no label smoothing, no weight-decay term",
    }


def _strip_prefixes(state: dict) -> dict:
    # torch.compile and DDP wrappers prefix every key; the bare model has none.
    for prefix in ("_orig_mod.", "module."):
        if state and all(key.startswith(prefix) for key in state):
            state = {key[len(prefix) :]: value for key, value in state.items()}
    return state


def load_checkpoint_and_data(
    path: Path, *, num_examples: int, batch_size: int, data_root: str | None, device: str
):
    """(model in fp32 on device, the first num_examples training examples as batches, config)."""
    # Imported here: measure_sharpness needs neither models/ nor data/.
    import data
    import models

    ckpt_path = path / "final_model.pt" if path.is_dir() else path
    if not ckpt_path.is_file():
        raise ValueError(f"no checkpoint at {ckpt_path} (expected a run directory or a final_model.pt)")
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    cfg = ckpt["config"]
    ds_cfg = cfg["dataset"]
    bundle = data.build_data(
        ds_cfg["name"],
        root=data_root or ds_cfg["root"],
        batch_size=batch_size,
        augment="none",
        label_noise=float(cfg.get("label_noise") or 0.0),
        val_fraction=float(ds_cfg.get("val_fraction") or 0.0),
        seed=cfg["seed"],
        device=device,
    )
    # the final weights are loaded below, so finetuning options (model.pretrained, ...) are not re-applied
    model_kwargs, _ = split_finetune_options(
        {k: v for k, v in cfg["model"].items() if k not in ("num_classes", "in_chans")}
    )
    model = models.create_model(
        cfg["model"]["name"], bundle.num_classes, in_chans=bundle.in_chans, **model_kwargs
    )
    model.load_state_dict(_strip_prefixes(ckpt["model"]))
    model.to(device=device, dtype=torch.float32)

    loader = bundle.train
    loader.set_epoch(0)
    batches, held = [], 0
    for x, y in loader:
        take = min(len(y), num_examples - held)
        batches.append((x[:take].to(device, torch.float32), y[:take].to(device)))
        held += take
        if held >= num_examples:
            break
    if held < num_examples:
        print(f"warning: the training set has only {held} examples; using all of them", file=sys.stderr)
    return model, batches, cfg, ckpt_path
