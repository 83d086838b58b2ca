"""SAM inside PyTorch Lightning (issue 12, items 1-6): docs/frameworks.md's recipes driven by a real Trainer, compared
with our two-call loop (tests/framework_reference.py) bit for bit: weights and BatchNorm buffers."""

from __future__ import annotations

import os
import signal

import lightning as L
import pytest
import torch
import torchmetrics
from framework_reference import (
    BATCH,
    STEPS,
    assert_same_state,
    batches,
    data,
    data_with_an_overflow,
    gradscaler_two_call_reference,
    make_sam,
    net,
    two_call_reference,
)
from lightning.pytorch.plugins.precision import MixedPrecision
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from sam import frozen_bn_stats

pytestmark = pytest.mark.slow


class AutomaticSAM(L.LightningModule):
    """docs/frameworks.md's automatic-optimization recipe."""

    def __init__(self, scheduler: bool = False) -> None:
        super().__init__()
        self.net = net()
        self.scheduler = scheduler

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.cross_entropy(self(x), y)
        if not self.optimizers().is_perturbed:  # Lightning calls this twice per step: log the loss at w
            self.log("train_loss", loss, on_step=True, on_epoch=True)
        return loss

    def configure_optimizers(self):
        optimizer = make_sam(self.parameters(), model=self)  # model=: BatchNorm statistics from pass 1
        if not self.scheduler:
            return optimizer
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 1, 0.5)  # attached to SAM itself
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


class ManualSAM(AutomaticSAM):
    """docs/frameworks.md's manual-optimization recipe: our two calls, counted as Lightning steps."""

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False

    def training_step(self, batch, batch_idx):
        x, y = batch
        optimizer = self.optimizers()
        loss = nn.functional.cross_entropy(self(x), y)
        self.manual_backward(loss)
        optimizer.first_step(zero_grad=True)
        self.manual_backward(nn.functional.cross_entropy(self(x), y))
        optimizer.second_step(zero_grad=True)  # through Lightning's step(): global_step counts it
        self.log("train_loss", loss)


class RecordLoss(L.Callback):
    def __init__(self) -> None:
        self.losses: list[torch.Tensor] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(trainer.callback_metrics["train_loss_step"].clone())


def loader() -> DataLoader:
    return DataLoader(TensorDataset(*data()), batch_size=BATCH, shuffle=False)


def fit(module: L.LightningModule, **trainer_kwargs) -> L.Trainer:
    kwargs = dict(
        max_epochs=1,
        accelerator="cpu",
        devices=1,
        enable_progress_bar=False,
        enable_model_summary=False,
        logger=False,
        enable_checkpointing=False,
    )
    trainer = L.Trainer(**{**kwargs, **trainer_kwargs})
    trainer.fit(module, loader())
    return trainer


def test_automatic_recipe_with_scheduler_on_sam_is_exact_and_logs_the_loss_at_w():
    expected, expected_losses = two_call_reference(scheduler=True)
    record = RecordLoss()
    module = AutomaticSAM(scheduler=True)
    trainer = fit(module, callbacks=[record])
    assert_same_state(module.net, expected)  # items 1 and 2: scheduler accepted, statistics once
    assert int(module.net[1].num_batches_tracked) == STEPS
    assert trainer.global_step == STEPS
    assert [float(v) for v in record.losses] == [float(v) for v in expected_losses]  # item 3
    torch.testing.assert_close(
        trainer.callback_metrics["train_loss_epoch"], torch.stack(expected_losses).mean()
    )
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.1 * 0.5**STEPS)


def test_accumulate_grad_batches_is_refused():
    with pytest.raises(RuntimeError, match=r"accumulate_grad_batches > 1\) is not SAM"):
        fit(AutomaticSAM(), accumulate_grad_batches=2)


def test_manual_recipe_counts_steps_stops_at_max_steps_and_checkpoints(tmp_path):
    expected, _ = two_call_reference(steps=3)
    module = ManualSAM()
    checkpoints = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=1, save_top_k=-1)
    trainer = fit(module, max_steps=3, enable_checkpointing=True, callbacks=[checkpoints])
    assert trainer.global_step == 3  # item 5: was 0 with first_step/second_step, so max_steps never stopped
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"epoch=0-step={s}.ckpt" for s in (1, 2, 3)]
    assert_same_state(module.net, expected)


def fp16_on_cpu(scale: float = 2.0**8) -> MixedPrecision:
    """Lightning's fp16 plugin with a CPU GradScaler: the GPU code path, reproduced on CPU."""
    return MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu", init_scale=scale))


class RecordSetupEnd(L.Callback):
    """Records whether Lightning got past setup (configure_optimizers) to its first training batch."""

    def __init__(self) -> None:
        self.batches = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.batches += 1


def test_fp16_automatic_optimization_is_refused_at_setup_naming_bf16_and_the_manual_recipe():
    module, started = AutomaticSAM(), RecordSetupEnd()
    before = {k: v.clone() for k, v in module.state_dict().items()}
    with pytest.raises(
        ValueError, match=r"precision='16-mixed' is refused at setup.*bf16-mixed.*manual two-call"
    ):
        fit(module, plugins=[fp16_on_cpu()], callbacks=[started])
    assert started.batches == 0  # refused in configure_optimizers, before any batch
    assert all(torch.equal(v, before[k]) for k, v in module.state_dict().items())  # weights and BN buffers


class AutomaticSAMWithoutModel(AutomaticSAM):
    def configure_optimizers(self):
        return make_sam(self.parameters())


def test_fp16_automatic_optimization_without_model_is_refused_before_any_weight_changes():
    module = AutomaticSAMWithoutModel()
    before = [p.detach().clone() for p in module.parameters()]
    with pytest.raises(ValueError, match=r"without a closure.*precision='16-mixed'.*bf16.*manual two-call"):
        fit(module, plugins=[fp16_on_cpu()])
    assert all(torch.equal(p, b) for p, b in zip(module.parameters(), before))


def test_fp16_is_not_refused_at_setup_for_manual_optimization_or_bf16():
    assert fit(ManualSAM(), max_steps=1, plugins=[fp16_on_cpu()]).global_step == 1
    assert fit(AutomaticSAM(), max_steps=1, precision="bf16-mixed").global_step == 1


def test_fp16_manual_recipe_equals_a_gradscaler_two_call_loop_and_survives_an_overflow():
    x, y = data_with_an_overflow()
    module = ManualSAM()
    trainer = L.Trainer(
        max_epochs=1, accelerator="cpu", devices=1, enable_progress_bar=False, enable_model_summary=False,
        logger=False, enable_checkpointing=False, plugins=[fp16_on_cpu(2.0**8)],
    )  # fmt: skip
    trainer.fit(module, DataLoader(TensorDataset(x, y), batch_size=BATCH, shuffle=False))
    expected, skipped = gradscaler_two_call_reference(x, y, 2.0**8, torch.float16)
    assert skipped == [False, False, True, False]
    assert_same_state(module.net, expected)
    assert not any(torch.isnan(p).any() for p in module.parameters())  # the skipped step kept w
    assert trainer.global_step == STEPS  # Lightning counts a step its scaler skipped, as for any optimizer


def clipped_two_call_reference(clip: float, algorithm: str) -> tuple[nn.Module, list[float]]:
    """Our two-call loop that clips only the final (SAM) gradient; returns the model and the pre-clip sizes."""
    model = net()
    optimizer = make_sam(model.parameters())
    sizes = []
    for x, y in batches():
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.first_step(zero_grad=True)
        with frozen_bn_stats(model):
            nn.functional.cross_entropy(model(x), y).backward()
        if algorithm == "norm":
            sizes.append(float(torch.nn.utils.clip_grad_norm_(model.parameters(), clip)))
        else:
            sizes.append(max(float(p.grad.abs().max()) for p in model.parameters()))
            torch.nn.utils.clip_grad_value_(model.parameters(), clip)
        optimizer.second_step(zero_grad=True)
    return model, sizes


class CountBeforeOptimizerStep(L.Callback):
    def __init__(self) -> None:
        self.calls = 0

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.calls += 1


@pytest.mark.parametrize("algorithm, clip", [("norm", 0.3), ("value", 0.05)])
def test_gradient_clipping_clips_only_the_sam_gradient_bit_for_bit(algorithm, clip):
    """Issue 22 item 7: Lightning clips after each closure call; pass 1 used to be clipped too, so value
    clipping turned the direction e(w) comes from (1.4e-3 off). SAM now calls the closure inside Lightning's
    wrapper at w, so clipping and on_before_optimizer_step run once per step, on the final gradient."""
    module, hooks = AutomaticSAM(), CountBeforeOptimizerStep()
    fit(module, gradient_clip_val=clip, gradient_clip_algorithm=algorithm, callbacks=[hooks])
    expected, sizes = clipped_two_call_reference(clip, algorithm)
    assert min(sizes) > clip  # clipping acted on every step
    assert_same_state(module.net, expected)
    assert hooks.calls == STEPS


class Davda54PortSAM(AutomaticSAM):
    """davda54/sam's Lightning port: pass 1 by calling the closure, then step(closure) for pass 2."""

    def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None):
        optimizer_closure()
        optimizer.step(closure=optimizer_closure)


def test_davda54_style_lightning_port_is_exact():
    """Issue 22 item 8: was refused blaming accumulate_grad_batches > 1, which was not set."""
    expected, _ = two_call_reference()
    module = Davda54PortSAM()
    trainer = fit(module, gradient_clip_val=0.3, gradient_clip_algorithm="value")  # clipped once: pass 2
    reference, _ = clipped_two_call_reference(0.3, "value")
    assert_same_state(module.net, reference)
    module = Davda54PortSAM()
    trainer = fit(module)
    assert_same_state(module.net, expected)
    assert trainer.global_step == STEPS


def test_davda54_style_lightning_port_with_accumulation_names_accumulation():
    with pytest.raises(RuntimeError, match=r"accumulate_grad_batches > 1\) is not SAM"):
        fit(Davda54PortSAM(), accumulate_grad_batches=2)


class SignalledBetweenThePasses(AutomaticSAM):
    """Sends itself the SLURM requeue signal (SIGUSR1) while the weights sit at w + e(w), in one step."""

    def __init__(self, at_batch: int) -> None:
        super().__init__()
        self.at_batch = at_batch

    def training_step(self, batch, batch_idx):
        if batch_idx == self.at_batch and self.optimizers().is_perturbed:
            os.kill(os.getpid(), signal.SIGUSR1)  # Python runs the handler here, between the passes
        return super().training_step(batch, batch_idx)


def test_slurm_requeue_signal_between_the_passes_checkpoints_at_w_and_requeues(tmp_path, monkeypatch):
    """Issue 22 item 9: Lightning's own SLURM handler (SIGUSR1 -> save_checkpoint -> scontrol requeue) ran
    between the passes, where SAM.state_dict() raises: nothing was saved, fit died, no requeue. SAM now
    holds Lightning's handlers while w is perturbed and runs them once w is back: the checkpoint holds w
    (and the momentum) before that step, then the job is requeued, and training goes on unchanged."""
    from lightning.pytorch.plugins.environments import SLURMEnvironment
    from lightning.pytorch.trainer.connectors import signal_connector

    for key, value in dict(
        SLURM_JOB_ID="4242", SLURM_JOB_NAME="train", SLURM_NTASKS="1", SLURM_PROCID="0", SLURM_LOCALID="0",
        SLURM_NODEID="0",
    ).items():  # fmt: skip
        monkeypatch.setenv(key, value)
    requeued = []
    monkeypatch.setattr(signal_connector, "call", lambda cmd, **kw: requeued.append(cmd) or 0)
    at = 2
    module = SignalledBetweenThePasses(at)
    fit(module, default_root_dir=tmp_path, plugins=[SLURMEnvironment(auto_requeue=True)])
    assert requeued == [["scontrol", "requeue", "4242"]]
    assert_same_state(module.net, two_call_reference()[0])  # the run itself is unchanged
    checkpoint = torch.load(tmp_path / "hpc_ckpt_1.ckpt", weights_only=False)
    model = net()
    optimizer = make_sam(model.parameters())
    for x, y in batches(at):
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.first_step(zero_grad=True)
        with frozen_bn_stats(model):
            nn.functional.cross_entropy(model(x), y).backward()
        optimizer.second_step(zero_grad=True)
    weights = {k.removeprefix("net."): v for k, v in checkpoint["state_dict"].items()}
    for name, value in model.named_parameters():  # w of step `at`, not w + e(w)
        torch.testing.assert_close(weights[name], value, rtol=0, atol=0, msg=name)
    momentum = checkpoint["optimizer_states"][0]["state"]
    for index, expected in optimizer.state_dict()["state"].items():
        torch.testing.assert_close(
            momentum[index]["momentum_buffer"], expected["momentum_buffer"], rtol=0, atol=0
        )
    x, _ = batches(at + 1)[at]
    model.train()(x)  # BatchNorm statistics: as after pass 1 of step `at` (SAM keeps pass 1's)
    for name in ("1.running_mean", "1.running_var", "1.num_batches_tracked"):
        torch.testing.assert_close(weights[name], model.state_dict()[name], rtol=0, atol=0, msg=name)


class CountingSAM(AutomaticSAM):
    """Counts examples with a torchmetrics metric, with and without the ``is_perturbed`` guard."""

    def __init__(self) -> None:
        super().__init__()
        self.seen_guarded, self.seen_unguarded = torchmetrics.SumMetric(), torchmetrics.SumMetric()
        self.calls = 0

    def training_step(self, batch, batch_idx):
        x, _ = batch
        self.calls += 1
        self.seen_unguarded.update(len(x))
        if not self.optimizers().is_perturbed:  # the step's metrics: once, at w
            self.seen_guarded.update(len(x))
        return super().training_step(batch, batch_idx)


class RecordOutputs(L.Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))


def test_training_step_runs_twice_per_step_and_the_is_perturbed_guard_counts_metrics_once():
    """Issue 22: automatic optimization calls training_step at w and at w + e(w): an unguarded metric
    counts every example twice (64 for 32), the guarded one once; ``outputs`` in on_train_batch_end (and
    the progress bar's loss) are pass 2's, the loss at w + e(w): log the loss at w inside the guard."""
    module, outputs = CountingSAM(), RecordOutputs()
    fit(module, callbacks=[outputs])
    assert module.calls == 2 * STEPS
    assert int(module.seen_unguarded.compute()) == 2 * STEPS * BATCH
    assert int(module.seen_guarded.compute()) == STEPS * BATCH
    _, losses_at_w = two_call_reference()
    assert all(got != float(at_w) for got, at_w in zip(outputs.losses, losses_at_w))  # pass 2's loss


class SchedulerOnBaseOptimizer(AutomaticSAM):
    def configure_optimizers(self):
        optimizer = make_sam(self.parameters(), model=self)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer.base_optimizer, 1, 0.5)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def test_lightning_needs_the_scheduler_on_sam_not_on_base_optimizer():
    """Issue 22: the README allows either in a plain loop; Lightning accepts only the optimizer that
    configure_optimizers returns (attached to SAM: exact, test_automatic_recipe_with_scheduler...)."""
    with pytest.raises(Exception, match="wasn't returned from `configure_optimizers`"):
        fit(SchedulerOnBaseOptimizer())
