"""Run under ``torchrun --nproc_per_node=2`` (gloo): Lightning's automatic optimization under its DDP
strategy gives synced e(w) (issue 22). Writes ``rank{R}.json`` into argv[1]."""

from __future__ import annotations

import json
import sys

import lightning as L
import torch
from ddp_framework_worker import flat, mlp, recipe, sam_opt
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

STEPS, BATCH = 3, 8


class Automatic(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = mlp()
        self.seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def training_step(self, batch, batch_idx):
        x, y = batch
        if not self.optimizers().is_perturbed:
            self.seen.append((x.clone(), y.clone()))
        return nn.functional.cross_entropy(self.net(x), y)

    def configure_optimizers(self):
        return sam_opt(self)


class ManualPerReplica(Automatic):
    """Manual optimization with pass 1 under DDP's ``no_sync()``: the per-replica recipe in Lightning."""

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False

    def training_step(self, batch, batch_idx):
        x, y = batch
        self.seen.append((x.clone(), y.clone()))
        optimizer = self.optimizers()
        with self.trainer.strategy.model.no_sync():
            self.manual_backward(nn.functional.cross_entropy(self.net(x), y))
        optimizer.first_step(zero_grad=True)
        self.manual_backward(nn.functional.cross_entropy(self.net(x), y))
        optimizer.second_step(zero_grad=True)


def fit(module: L.LightningModule, x: torch.Tensor, y: torch.Tensor) -> L.Trainer:
    trainer = L.Trainer(
        accelerator="cpu", devices=2, strategy="ddp", max_epochs=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(module, DataLoader(TensorDataset(x, y), batch_size=BATCH, shuffle=False))
    return trainer


def main(out_dir: str) -> None:
    g = torch.Generator().manual_seed(7)
    x, y = (
        torch.randn(2 * BATCH * STEPS, 6, generator=g),
        torch.randint(0, 4, (2 * BATCH * STEPS,), generator=g),
    )
    module = Automatic()
    trainer = fit(module, x, y)
    rank = trainer.global_rank
    shards = module.seen  # this rank's batches, as Lightning's DistributedSampler dealt them
    got = flat(module.net)
    report = {
        "steps": trainer.global_step,
        "batches": len(shards),
        "automatic_vs_synced": float((got - recipe(shards, per_replica=False)).abs().max()),
        "automatic_vs_per_replica": float((got - recipe(shards, per_replica=True)).abs().max()),
    }
    manual = ManualPerReplica()
    fit(manual, x, y)
    report["manual_no_sync_vs_per_replica"] = float(
        (flat(manual.net) - recipe(manual.seen, per_replica=True)).abs().max()
    )
    report["manual_no_sync_vs_synced"] = float(
        (flat(manual.net) - recipe(manual.seen, per_replica=False)).abs().max()
    )
    with open(f"{out_dir}/rank{rank}.json", "w") as f:
        json.dump(report, f)


if __name__ == "__main__":
    main(sys.argv[1])
