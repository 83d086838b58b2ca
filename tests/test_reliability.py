"""Reliability of a run, end to end through the real CLI (issue 6).

- Kill anywhere, resume exactly: SIGKILL mid-epoch and at every stage of a checkpoint write, then the
  identical command again, ends with the results.json numbers, metrics.jsonl and final weights of a run
  never interrupted (CPU, fixed seed, deterministic algorithms; dropout and m-sharpness chunks on, so the
  RNG state and the data order must survive the resume too).
- Checkpoints never corrupt: atomic save at each fault stage, a torn or foreign last.pt falls back to
  prev.pt with a warning that names it, exactly two kept; none usable -> a clear error, not a silent restart.
- Preemption: SIGTERM / SIGUSR1 finish the step, checkpoint, exit 128 + signum; a previous handler
  (submitit's requeue) is called.
- Numerics: skipped (overflowed) steps are counted; a loss that stays NaN stops the run with a message
  and keeps the last good checkpoint.
- Sweeps: one failing job does not stop the others.
- Bad input: a table of bad command lines, each refused within seconds with a message naming the value
  and what is accepted, before any training, writing nothing into another run's directory.
- Determinism: same seed -> identical numbers and weights; another seed -> different ones.

Kills and signals are injected at exact points by ``tests/faults.py`` (train.py with a hook on the
trainer's stages; ``run_train(..., fault=SPEC)``): ``step:N[:SIGNAL|NAN]`` after the N-th step of the
process, ``ckpt_{written,synced,rotated}:N`` inside its N-th checkpoint write; the default signal is SIGKILL.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import re
import shutil
import signal
from pathlib import Path

import pytest
import torch
from cli import (
    TINY_RUN,
    final_weights,
    metrics_records,
    results_numbers,
    run_forked,
    run_script,
    run_train,
    same_tensors,
    train_in_process,
)
from fake_data import write_fake_cifar
from faults import FaultInjector
from torch import nn

from sam import SAM, Precision, StepOptions, sam_step, sgd_step
from trainer.cluster import PreemptionHandler
from trainer.loop import EpochTotals, NonFiniteLossError, train_one_epoch
from trainer.rundir import (
    FORMAT,
    CheckpointError,
    CheckpointManager,
    RunDirMismatchError,
    atomic_torch_save,
    atomic_write,
    atomic_write_text,
)

# tests/cli.py's TINY_RUN (2 epochs x 4 steps, m=16: two e(w) chunks per batch) with dropout (global RNG)
# and the basic augmentation (per-epoch draws) on, so a resume must restore all of them.
TINY = [
    *TINY_RUN,
    "model.drop_rate=0.2",
    "augment=basic",
    "trainer.limit_val_batches=1",
    "trainer.eval_batch_size=128",
    "trainer.log_every_n_steps=1",
    "trainer.deterministic=true",
]
STEPS_PER_EPOCH = 4
EVERY_STEP = "trainer.checkpoint_interval_min=1e-6"  # a timed mid-epoch checkpoint after every step
KILLED = -signal.SIGKILL


def ckpt_files(run_dir: Path) -> set[str]:
    return {p.name for p in (run_dir / "checkpoints").iterdir()}


def load_ckpt(path: Path) -> dict:
    return torch.load(path, weights_only=True)


def assert_same_run(run_dir: Path, reference: Path, *, ignore_config: tuple[str, ...] = ()) -> None:
    """results.json numbers, metrics.jsonl and final weights equal the reference run's, bit for bit."""
    ours, ref = results_numbers(run_dir), results_numbers(reference)
    for results in (ours, ref):
        for dotted in ignore_config:  # e.g. the checkpoint interval: how often, not what, is computed
            *parents, leaf = dotted.split(".")
            node = results["config"]
            for key in parents:
                node = node[key]
            node.pop(leaf)
    assert ours == ref
    assert metrics_records(run_dir) == metrics_records(reference)
    assert same_tensors(final_weights(run_dir), final_weights(reference))


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Uninterrupted runs: seed 0 twice and seed 1, in-process (train.py's ``train`` on the composed
    command, one thread): the references the killed and resumed ``python train.py`` runs must equal."""
    root = tmp_path_factory.mktemp("uninterrupted")
    args = {"seed0": TINY, "seed0_again": TINY, "seed1": [*TINY, "seed=1"]}
    for name, overrides in args.items():
        train_in_process(overrides, root / name)
    return {name: root / name for name in args}


# ------------------------------------------------------------------------------------------ determinism
def test_same_seed_gives_identical_numbers_and_another_seed_does_not(runs):
    assert_same_run(runs["seed0_again"], runs["seed0"])
    a, b = results_numbers(runs["seed0"]), results_numbers(runs["seed1"])
    assert a["train_loss"] != b["train_loss"] and a["seed"] == 0 and b["seed"] == 1
    assert not same_tensors(final_weights(runs["seed0"]), final_weights(runs["seed1"]))
    # every epoch is logged with its count of skipped (fp16-overflow) steps; none in fp32
    records = metrics_records(runs["seed0"])
    assert [r["epoch"] for r in records] == [1, 2] and all(r["skipped_steps"] == 0 for r in records)
    assert ckpt_files(runs["seed0"]) == {"last.pt", "prev.pt"}  # the last two, nothing else
    last, prev = (load_ckpt(runs["seed0"] / "checkpoints" / n) for n in ("last.pt", "prev.pt"))
    assert (last["epoch"], last["finished"], prev["epoch"], prev["finished"]) == (2, True, 1, False)


def test_resuming_with_a_command_that_computes_something_else_is_refused(runs, tmp_path):
    """In-process (train.py's train on the composed command); the exit code is the bad-input table's."""
    run_dir = tmp_path / "copy"
    shutil.copytree(runs["seed0"], run_dir)
    before = (run_dir / "results.json").read_text()
    with pytest.raises(RunDirMismatchError, match=r"finished run of another command \(rho: 0\.05 -> 0\.2\)"):
        train_in_process([*TINY, "rho=0.2"], run_dir)
    same = train_in_process([*TINY, "trainer.log_every_n_steps=7"], run_dir)  # operational keys may change
    assert same == json.loads(before) and (run_dir / "results.json").read_text() == before


# ------------------------------------------------------------------------------------- kill and resume
@pytest.mark.slow
def test_sigkill_mid_epoch_and_inside_checkpoint_writes_then_resume_matches_uninterrupted(runs, tmp_path):
    """Processes of one run: four die by SIGKILL at different points, the fifth finishes it."""
    run_dir, args = tmp_path / "run", [*TINY, EVERY_STEP]
    ckpt = run_dir / "checkpoints"

    # 1. Mid-epoch, between two steps: the timed checkpoints of steps 1 and 2 exist, step 3 is lost.
    run = run_train(args, run_dir, fault="step:3")
    assert run.returncode == KILLED, run.output
    last = load_ckpt(ckpt / "last.pt")
    assert (last["epoch"], last["batch"], last["global_step"]) == (0, 2, 2)

    # 2. Inside the 2nd write (the end of epoch 1), after torch.save, before fsync: last.pt.tmp is left,
    #    metrics.jsonl already has epoch 0 (it must be dropped on resume, then written again).
    run = run_train(args, run_dir, fault="ckpt_written:2")
    assert run.returncode == KILLED, run.output
    assert "resumed from" in run.output and "last.pt.tmp" in ckpt_files(run_dir)
    assert load_ckpt(ckpt / "last.pt")["global_step"] == 3
    assert [r["epoch"] for r in metrics_records(run_dir)] == [1]

    # 3. Between the two renames of the 2nd write: last.pt is gone, prev.pt is the newest durable one.
    run = run_train(args, run_dir, fault="ckpt_rotated:2")
    assert run.returncode == KILLED, run.output
    assert "last.pt" not in ckpt_files(run_dir)
    assert load_ckpt(ckpt / "prev.pt")["global_step"] == STEPS_PER_EPOCH  # the end-of-epoch checkpoint

    # 4. After fsync of the 3rd write, before the renames; then last.pt is torn (as a disk that lost it).
    run = run_train(args, run_dir, fault="ckpt_synced:3")
    assert run.returncode == KILLED, run.output
    torn = ckpt / "last.pt"
    torn.write_bytes(torn.read_bytes()[: torn.stat().st_size // 2])

    # 5. The identical command: skips the torn file with a warning naming it, resumes from prev.pt, ends.
    run = run_train(args, run_dir)
    assert run.returncode == 0, run.output
    assert f"checkpoint {torn} is unreadable" in run.output
    assert f"resumed from {ckpt / 'prev.pt'}" in run.output
    assert_same_run(run_dir, runs["seed0"], ignore_config=("trainer.checkpoint_interval_min",))
    # The torn file was never rotated into prev.pt: both kept checkpoints are good ones.
    assert ckpt_files(run_dir) == {"last.pt", "prev.pt"}
    assert load_ckpt(ckpt / "last.pt")["finished"] and load_ckpt(ckpt / "prev.pt")["format"] == FORMAT

    # 6. Killed after the final checkpoint, before results.json: the command evaluates and writes it.
    (run_dir / "results.json").unlink()
    (run_dir / "final_model.pt").unlink()
    run = run_train(args, run_dir)
    assert run.returncode == 0 and "train loss" not in run.output, run.output  # no epoch trained again
    assert_same_run(run_dir, runs["seed0"], ignore_config=("trainer.checkpoint_interval_min",))

    # 7. Once finished, the same command again is a no-op.
    run = run_train(args, run_dir)
    assert run.returncode == 0 and "nothing to do" in run.output, run.output


# ------------------------------------------------------------------------------------------ preemption
@pytest.mark.slow
def test_sigterm_and_sigusr1_checkpoint_exit_for_requeue_and_resume_exactly(runs, tmp_path):
    """SLURM's signals, sent to the training process after a known step, twice; then the run completes."""
    run_dir = tmp_path / "run"
    run = run_train(TINY, run_dir, fault="step:3:TERM")
    assert run.returncode == 128 + signal.SIGTERM, run.output
    assert "received SIGTERM" in run.output and "exiting for requeue" in run.output
    state = load_ckpt(run_dir / "checkpoints" / "last.pt")
    assert (state["epoch"], state["batch"], state["global_step"]) == (0, 3, 3)  # the step was finished

    run = run_train(TINY, run_dir, fault="step:2:USR1")  # resumed at step 3: dies after step 5
    assert run.returncode == 128 + signal.SIGUSR1, run.output
    state = load_ckpt(run_dir / "checkpoints" / "last.pt")
    assert (state["epoch"], state["batch"], state["global_step"]) == (1, 1, 5)

    run = run_train(TINY, run_dir)
    assert run.returncode == 0, run.output
    assert_same_run(run_dir, runs["seed0"])  # the identical command: config included


def _restore_signals(signums):
    saved = {s: signal.getsignal(s) for s in signums}
    return lambda: [signal.signal(s, h) for s, h in saved.items()]


def test_preemption_requeues_through_submitit_whichever_signal_came():
    """submitit installs its checkpoint-and-requeue handler (for USR2) and a SIGTERM handler that only logs
    before train.py runs. Every SLURM signal must reach the requeue (issue 13 item 1), and nothing after
    the requeue may start a second one (the handlers are left ignoring the signals)."""
    restore = _restore_signals((signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2))
    calls = []

    def checkpoint_and_try_requeue(signum, frame):  # submitit's name: dump the job, requeue, sys.exit(-1)
        calls.append(signum)
        raise SystemExit(-1)

    def bypass(signum, frame):  # submitit's SIGTERM handler only logs
        calls.append(("bypass", signum))

    try:
        for term_or_usr2 in (signal.SIGTERM, signal.SIGUSR2):
            signal.signal(signal.SIGUSR2, checkpoint_and_try_requeue)
            signal.signal(signal.SIGTERM, bypass)
            handler = PreemptionHandler().install()
            os.kill(os.getpid(), term_or_usr2)
            assert handler.requested and handler.received == term_or_usr2
            assert calls[-1:] != [term_or_usr2]  # nothing happens inside the handler: the step finishes
            with pytest.raises(SystemExit) as exit_info:
                handler.exit()
            assert calls[-1] == term_or_usr2 and exit_info.value.code == -1  # requeued, never "bypassed"
            assert all(signal.getsignal(s) == signal.SIG_IGN for s in (signal.SIGTERM, signal.SIGUSR2))
        assert not [c for c in calls if isinstance(c, tuple)]

        signal.signal(signal.SIGUSR1, signal.SIG_DFL)  # no submitit, no SLURM job: exit 128 + signum
        handler = PreemptionHandler().install()
        os.kill(os.getpid(), signal.SIGUSR1)
        with pytest.raises(SystemExit) as exit_info:
            handler.exit()
        assert exit_info.value.code == 128 + signal.SIGUSR1
    finally:
        restore()


def test_fault_injector_fires_once_at_the_nth_visit_and_rejects_bad_specs():
    faults = FaultInjector("step:3:NAN,ckpt_written:1:USR2")
    assert [faults.hit("step") for _ in range(4)] == [None, None, "NAN", None]
    assert faults.hit("ckpt_synced") is None
    for bad in ("step", "step:0", "stepp:1", "step:1:NOSUCHSIGNAL", "step:x"):
        with pytest.raises(ValueError, match="SAM_REPRO_FAULT"):
            FaultInjector(bad)
    assert FaultInjector("").hit("step") is None


# ---------------------------------------------------------------------------------------- checkpoints
class Boom(Exception):
    pass


@pytest.mark.parametrize("stage", ["written", "synced", "rotated"])
def test_checkpoint_save_interrupted_at_any_stage_leaves_the_previous_one_loadable(tmp_path, stage):
    def fail_at(s):
        if s == stage:
            raise Boom(s)

    good = CheckpointManager(tmp_path)
    good.save({"step": 1})
    good.save({"step": 2})
    with pytest.raises(Boom):
        CheckpointManager(tmp_path).save({"step": 3}, on_stage=fail_at)
    again = CheckpointManager(tmp_path)  # a new process
    assert again.load_latest()["step"] == 2
    again.save({"step": 4})
    assert {p.name for p in tmp_path.iterdir()} == {"last.pt", "prev.pt"}
    assert load_ckpt(tmp_path / "last.pt")["step"] == 4 and load_ckpt(tmp_path / "prev.pt")["step"] == 2


def test_a_failed_atomic_write_leaves_the_old_file_and_no_temporary_one(tmp_path):
    path = atomic_write_text(tmp_path / "results.json", "old")

    def half_then_fail(f):
        f.write(b"half of the new")
        raise Boom("disk went away")

    with pytest.raises(Boom):
        atomic_write(path, half_then_fail)
    assert path.read_text() == "old" and {p.name for p in tmp_path.iterdir()} == {"results.json"}
    atomic_torch_save({"w": torch.ones(2)}, tmp_path / "w.pt")
    assert torch.equal(torch.load(tmp_path / "w.pt", weights_only=True)["w"], torch.ones(2))


@pytest.mark.parametrize("damage", ["truncated", "foreign", "empty"])
def test_a_bad_last_checkpoint_is_named_skipped_and_never_kept(tmp_path, caplog, damage):
    ckpts = CheckpointManager(tmp_path)
    ckpts.save({"step": 1})
    ckpts.save({"step": 2})
    last = tmp_path / "last.pt"
    if damage == "truncated":
        last.write_bytes(last.read_bytes()[:100])
    elif damage == "foreign":  # a readable torch file, but someone else's
        torch.save({"state_dict": {"w": torch.zeros(2)}}, last)
    else:
        last.write_bytes(b"")
    resumed = CheckpointManager(tmp_path)
    with caplog.at_level(logging.WARNING, logger="trainer.rundir"):
        assert resumed.load_latest()["step"] == 1
    assert str(last) in caplog.text
    resumed.save({"step": 3})  # the bad file is overwritten, not rotated into prev.pt
    assert load_ckpt(tmp_path / "prev.pt")["step"] == 1 and load_ckpt(last)["step"] == 3


def test_no_usable_checkpoint_is_an_error_naming_the_files_but_a_torn_temp_file_is_not(tmp_path):
    ckpts = CheckpointManager(tmp_path)
    assert ckpts.load_latest() is None  # no directory yet: a fresh run
    tmp_path.joinpath("last.pt.tmp").write_bytes(b"half a checkpoint")  # killed inside the first save
    assert ckpts.load_latest() is None
    tmp_path.joinpath("last.pt").write_bytes(b"garbage")
    torch.save([1, 2, 3], tmp_path / "prev.pt")
    with pytest.raises(CheckpointError, match=r"last\.pt: unreadable.*prev\.pt: not a sam-repro checkpoint"):
        ckpts.load_latest()


# ------------------------------------------------------------------------------------------- numerics
def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 4))


def test_overflowing_steps_are_skipped_and_counted_and_isolated_ones_do_not_stop_the_run():
    """GradScaler path on CPU: an inf in pass 2 (step 2) or pass 1 (step 4) skips exactly that step."""
    model = _mlp()
    optimizer = SAM(model.parameters(), torch.optim.SGD, rho=0.05, lr=0.1, momentum=0.9)
    precision = Precision(None, "cpu", torch.amp.GradScaler("cpu", init_scale=2.0**10))
    calls = {"n": 0}
    overflow_at = {4, 7}  # loss calls: step s makes calls 2s-1 (pass 1, at w) and 2s (pass 2)

    def loss_fn(logits, y):
        calls["n"] += 1
        loss = nn.functional.cross_entropy(logits, y)
        return loss * math.inf if calls["n"] in overflow_at else loss

    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(8, 6, generator=g), torch.randint(0, 4, (8,), generator=g)) for _ in range(5)]
    weights = []
    totals = EpochTotals()
    train_one_epoch(
        model,
        optimizer,
        sam_step,
        StepOptions(loss_fn, precision=precision),
        batches,
        None,
        totals,
        num_batches=5,
        max_nonfinite_steps=2,
        check_every=1,
        should_stop=lambda: weights.append([p.detach().clone() for p in model.parameters()]) or False,
    )
    assert int(totals.skipped) == 2 and totals.steps == 5
    unchanged = [all(torch.equal(a, b) for a, b in zip(w0, w1)) for w0, w1 in itertools.pairwise(weights)]
    assert unchanged == [True, False, True, False]  # steps 2 and 4 left the weights as they were
    assert int(totals.nonfinite_run) == 0  # step 4's inf loss at w was followed by a finite one


def test_a_loss_that_stays_non_finite_stops_the_loop_also_across_short_epochs():
    model = _mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    options = StepOptions(lambda logits, y: nn.functional.cross_entropy(logits, y) * math.nan)
    batch = [(torch.randn(8, 6), torch.randint(0, 4, (8,)))] * 2
    totals = EpochTotals()
    kwargs = dict(num_batches=2, max_nonfinite_steps=3, check_every=1)
    train_one_epoch(model, optimizer, sgd_step, options, batch, None, totals, **kwargs)
    assert int(totals.nonfinite_run) == 2
    totals = totals.next_epoch()  # epochs of 2 steps, limit 3: the run must carry over
    assert totals.steps == 0 and int(totals.loss_sum) == 0
    with pytest.raises(NonFiniteLossError, match=r"3 consecutive steps.*max_nonfinite_steps=3"):
        train_one_epoch(model, optimizer, sgd_step, options, batch, None, totals, **kwargs)


@pytest.mark.slow
def test_a_nan_loss_stops_the_run_with_a_message_and_keeps_the_last_good_checkpoint(tmp_path):
    """Weights turn NaN after step 6 of 3 x 4: steps 7-11 are NaN, the limit of 5 is hit in epoch 3."""
    run_dir = tmp_path / "run"
    args = [*TINY, "epochs=3", "trainer.max_nonfinite_steps=5"]
    run = run_train(args, run_dir, fault="step:6:NAN")
    assert run.returncode == 3, run.output
    assert "NaN/inf for 5 consecutive steps" in run.stderr and "max_nonfinite_steps=5" in run.stderr
    assert "not checkpointing" in run.output  # the end of epoch 2 (NaN weights) was not saved
    assert not (run_dir / "results.json").exists()
    assert ckpt_files(run_dir) == {"last.pt"}
    state = load_ckpt(run_dir / "checkpoints" / "last.pt")
    assert (state["epoch"], state["global_step"]) == (1, STEPS_PER_EPOCH)
    assert all(torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point())


# --------------------------------------------------------------------------------------------- sweeps
@pytest.mark.slow
def test_a_failing_job_in_a_sweep_does_not_stop_the_others(tmp_path):
    sweep = tmp_path / "sweep"
    args = [
        "-m",
        *TINY,
        "epochs=1",
        "trainer.limit_train_batches=2",
        "rho=-1,0.05",
        f"hydra.sweep.dir={sweep}",
    ]
    args.append("hydra.sweep.subdir=job${hydra.job.num}")
    run = run_train(args)
    assert run.returncode != 0 and "rho=-1" in run.stderr, run.output  # the sweep reports the failure
    job_dirs = sorted(p.parent for p in sweep.glob("*/.hydra"))
    assert len(job_dirs) == 2, run.output
    finished = [d for d in job_dirs if (d / "results.json").exists()]
    assert len(finished) == 1 and results_numbers(finished[0])["rho"] == 0.05  # the later job ran
    # scripts/compare.py summarises the finished cell and lists the failed one as missing.
    compare = run_script("scripts/compare.py", [sweep, "--csv"])
    assert compare.returncode == 0, compare.stderr
    ours = [line for line in compare.stdout.splitlines() if ",digits," in line]
    finished_rows = [line for line in ours if line.startswith("matched") or line.startswith("no_paper_cell")]
    assert len(finished_rows) == 1 and ",0.05," in finished_rows[0], compare.stdout
    failed_rows = [line for line in ours if line.startswith("missing_run")]
    assert len(failed_rows) == 1 and ",-1.0," in failed_rows[0], compare.stdout  # the failed cell is missing
    markdown = run_script("scripts/compare.py", [sweep]).stdout
    assert "Runs without results.json" in markdown and "job0" in markdown


# ------------------------------------------------------------------------------------------ bad input
def _corrupt_checkpoint(run_dir: Path) -> None:
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "last.pt").write_bytes(b"\x00not a checkpoint\x00" * 64)


def _other_models_checkpoint(run_dir: Path) -> None:
    CheckpointManager(run_dir / "checkpoints").save(
        {"model": {"stem.weight": torch.zeros(3)}, "optimizer": {}, "scheduler": {}, "epoch": 1}
    )


def _unreadable_dataset(root: Path) -> None:
    write_fake_cifar(root, "cifar10", n_train=50, n_test=10)
    torn = root / "cifar-10-batches-py" / "data_batch_3"
    torn.write_bytes(torn.read_bytes()[:1000])  # a download cut short


# (id, overrides ({tmp} = a per-case folder), setup(tmp) or None, the bad value, what is accepted)
BAD_INPUTS = [
    ("unknown model", ["model=resnet9000"], None, r"resnet9000", r"Available options in 'model'"),
    ("unknown dataset", ["dataset=mnist"], None, r"mnist", r"Available options in 'dataset'"),
    ("unknown optimizer", ["optimizer=adam"], None, r"adam", r"Available options in 'optimizer'"),
    ("rho < 0", ["rho=-0.1"], None, r"rho=-0\.1", r"finite number >= 0"),
    ("rho nan", ["rho=nan"], None, r"rho=nan", r"finite number >= 0"),
    ("m not dividing the batch", ["m=7"], None, r"m=7", r"one of \[1, 2, 4, 8, 16, 32\]"),
    ("label noise 1", ["label_noise=1.0"], None, r"label_noise=1\.0", r"\[0, 1\)"),
    ("label noise < 0", ["label_noise=-0.2"], None, r"label_noise=-0\.2", r"\[0, 1\)"),
    ("negative epochs", ["epochs=-3"], None, r"epochs=-3", r"integer >= 1"),
    ("batch 0", ["batch_size=0"], None, r"batch_size=0", r"integer >= 1"),
    (
        "missing dataset root",
        ["dataset=cifar10", "dataset.root={tmp}/nowhere", "dataset.download=false"],
        None,
        r"nowhere",
        r"dataset\.root=",
    ),
    (
        "unreadable dataset files",
        ["dataset=cifar10", "dataset.root={tmp}/data", "dataset.download=false"],
        lambda tmp: _unreadable_dataset(tmp / "data"),
        r"data/cifar-10-batches-py/data_batch_3: cannot be unpickled, it is truncated",
        r"official files",
    ),
    (
        "corrupt checkpoint",
        [],
        lambda tmp: _corrupt_checkpoint(tmp / "run"),
        r"checkpoints/last\.pt: unreadable",
        r"written by train\.py.*move .* away",
    ),
    (
        "another model's checkpoint",
        [],
        lambda tmp: _other_models_checkpoint(tmp / "run"),
        r"checkpoint \S*last\.pt does not fit",
        r"resume with the command that wrote it",
    ),
    ("unknown precision", ["precision=fp8"], None, r"precision='fp8'", r"auto, fp32, bf16, fp16"),
    ("fp16 on cpu", ["precision=fp16"], None, r"precision=fp16", r"precision=fp32 or bf16"),
    ("unknown experiment", ["experiment=cifar10_wrn99"], None, r"cifar10_wrn99", r"'experiment'"),
    (
        "unknown key",
        ["trainer.max_epochs=3"],
        None,
        r"trainer\.max_epochs",
        r"Keys under trainer: .*limit_train_batches",
    ),
    ("unknown top-level key", ["rhoo=0.1"], None, r"'rhoo'", r"Top-level keys: .*rho"),
]


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.mark.slow  # many train.py commands
def test_bad_command_lines_fail_fast_with_a_clear_message_and_write_nothing_elsewhere(runs, tmp_path):
    """Every case runs train.py as __main__ with its argv, in a child forked from a process that has
    imported its modules (tests/cli.py ``run_forked``: ``python train.py ARGS`` without ~6 s of imports);
    one case also runs as a real ``python train.py`` to time the whole command, interpreter included."""
    other_run = runs["seed0"]  # a finished run a careless failure might write into
    before_other = _tree(other_run)
    cases, jobs, before = tmp_path / "cases", [], []
    for i, (_, overrides, setup, _, _) in enumerate(BAD_INPUTS):
        case = cases / f"case{i}"
        case.mkdir(parents=True)
        if setup is not None:
            setup(case)
        before.append(_tree(case))
        args = [*TINY, *(o.format(tmp=case) for o in overrides)]
        jobs.append({"args": args, "run_dir": case / "run", "log_dir": tmp_path / "logs"})
    done = run_forked(jobs)
    whole = tmp_path / "whole_command" / "run"
    _corrupt_checkpoint(whole)
    whole_command = run_train(TINY, whole)
    assert whole_command.returncode == 2 and "last.pt: unreadable" in whole_command.stderr, (
        whole_command.output
    )
    assert whole_command.seconds < 60, f"{whole_command.seconds:.0f} s"

    problems = []
    for (name, _, _, bad_value, accepted), job, run, tree in zip(BAD_INPUTS, jobs, done, before):
        case, text, mine = job["run_dir"].parent, run.stdout + run.stderr, []
        if run.returncode <= 0:
            mine.append(f"exit code {run.returncode}")
        for what, pattern in (("the bad value", bad_value), ("what is accepted", accepted)):
            if not re.search(pattern, text, flags=re.DOTALL):
                mine.append(f"the message does not name {what} ({pattern!r})")
        if run.seconds > 30:
            mine.append(f"took {run.seconds:.0f} s")
        if "epoch 1/" in text:
            mine.append("training started")
        # Refused: nothing written (not even Hydra's records or a lock file); what was there is untouched.
        after = _tree(case)
        extra = set(after) - set(tree)
        if extra or any(after.get(p) != v for p, v in tree.items()):
            mine.append(f"wrote {sorted(extra)} or changed some of {sorted(tree)}")
        problems += [f"{name}: {m}" for m in mine] + ([run.output[-3000:]] if mine else [])
    assert not problems, "\n".join(problems)
    assert _tree(other_run) == before_other
    assert {p.name for p in cases.iterdir()} == {f"case{i}" for i in range(len(BAD_INPUTS))}
