"""The one training entry point.

    python train.py model=wrn dataset=cifar100 rho=0.05           # one run
    python train.py -m rho=0.01,0.02,0.05,0.1,0.2,0.5 seed=0,1,2  # a sweep (add hydra/launcher=slurm)
    torchrun --nproc_per_node=8 train.py experiment=...           # DDP, per-replica e(w) (the paper's)
    python train.py experiment=quickstart                         # digits, SGD vs SAM, 2 CPU minutes

Running the identical command again with the same ``hydra.run.dir`` resumes from the last checkpoint
and ends exactly where an uninterrupted run ends. Every hyperparameter lives in ``configs/``; what may be
there, and in which range, is checked by ``trainer/spec.py``. Reads top-down: ``main`` (exit codes),
``train`` (resume or start, train, results), ``build`` (data, model, optimizer, step, schedule).
"""

# ruff: noqa: E402  (the early signal catcher below comes before the slow imports)
from __future__ import annotations

import os
import signal
import sys

# SLURM can signal a job step (preemption, --signal) while Python still imports torch or builds the data:
# remember it, so the trainer checkpoints and requeues at its first step instead of dying on the default
# action. Only in a SLURM job step (srun): a sweep's submitting process must stay killable.
EARLY_SIGNALS: list[int] = []
if __name__ == "__main__" and "SLURM_STEP_ID" in os.environ:
    for _sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(_sig, lambda signum, _frame: EARLY_SIGNALS.append(signum))


def _interrupted_while_importing(_signum: int, _frame: object) -> None:
    """Ctrl-C during the imports below: one line and exit 130, not a traceback from inside torch."""
    print("interrupted (Ctrl-C) while starting; nothing was written", file=sys.stderr)
    os._exit(130)


if __name__ == "__main__":
    signal.signal(signal.SIGINT, _interrupted_while_importing)

import logging
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

# torch-free: --help, a typo and a refused value answer before torch loads (trainer.run imports it).
from trainer.cluster import HANDLER as PREEMPTION
from trainer.cluster import ExitCode, RunError, export_slurm_env, setup_distributed
from trainer.rundir import LOCK_NAME, RunRecords, disk_full_cause, preflight, release_claim, take_preflight
from trainer.spec import OPERATIONAL_KEYS, RunSpec, unknown_key_message

log = logging.getLogger("train")
CONFIG_DIR = Path(__file__).resolve().parent / "configs"


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def main(cfg: DictConfig) -> float | None:
    """One job: the run directory's checks, then training; every failure is one line and an exit code."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    export_slurm_env()  # SLURM tasks (hydra.launcher.tasks_per_node > 1, srun -n N) as torchrun's variables
    PREEMPTION.install(pending=EARLY_SIGNALS)  # before data and model: a signal during set-up counts too
    records = RunRecords().start()  # log lines wait in memory until the command is accepted
    try:
        results = train(cfg, run_dir, records)
    except Exception as err:
        code = exit_code(err)
        if code is None:
            raise  # a bug: the traceback is the message
        if records.file_handler is None:  # refused before it was accepted: the directory is untouched
            records.discard()
            if multirun and not any(p.name != LOCK_NAME for p in run_dir.iterdir()):
                records.accept(run_dir, cfg)  # a sweep's new job: its records let compare.py list it
            release_claim(run_dir, refused=True)
        cause = None if isinstance(err, RunError) else disk_full_cause(err)
        message = (
            str(err) if cause is None else f"no space left on the device writing {cause.filename or run_dir}"
        )
        if multirun:
            log.error("%s", message)
            records.close()
            raise  # Hydra marks this job failed; the other jobs of the sweep go on
        if records.file_handler is not None:  # train.log gets it; the terminal once, from the line below
            records.file_handler.handle(
                log.makeRecord(log.name, logging.ERROR, __file__, 0, "%s", (message,), None)
            )
        records.close()
        print(f"error: {message}", file=sys.stderr)
        sys.exit(int(code))
    release_claim(run_dir, refused=False)
    records.close()
    return results["test_error"]


def exit_code(err: BaseException) -> ExitCode | None:
    """The exit code of an expected failure (docs/operations.md, "Exit codes"); None for a bug."""
    from trainer.loop import NonFiniteLossError

    if isinstance(err, RunError):
        return err.exit_code
    if isinstance(err, NonFiniteLossError):
        return ExitCode.NON_FINITE
    if disk_full_cause(err) is not None:
        return ExitCode.DISK_FULL
    if isinstance(err, ValueError | FileNotFoundError):
        return ExitCode.BAD_INPUT
    return None


def train(cfg: DictConfig, run_dir: Path, records: RunRecords | None = None) -> dict[str, Any]:
    """The spec (this process's pre-flight one, or made now), then resume or start, train, write results."""
    from trainer.run import execute

    ctx = setup_distributed(cfg.device)
    spec = take_preflight(run_dir)
    claimed = spec is not None
    if spec is None:
        spec = RunSpec.from_config(cfg, ctx.world_size, ctx.device)
    elif (spec.config, spec.world_size, spec.device) != (
        OmegaConf.to_container(cfg, resolve=True),
        ctx.world_size,
        str(ctx.device),
    ):
        raise RuntimeError(f"pre-flight and Hydra composed different runs for {run_dir} (a bug)")
    return execute(spec, Path(run_dir), ctx, records, claimed)


def spec_before_hydra(cfg: DictConfig) -> RunSpec:
    """The spec of a composed config before Hydra runs the job (``preflight``), for this process."""
    return RunSpec.from_config(cfg, int(os.environ.get("WORLD_SIZE", "1")))


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)  # imported: Ctrl-C is KeyboardInterrupt again
    try:
        problem = unknown_key_message(sys.argv[1:])  # Hydra's own message does not name the valid keys
        if problem is not None:
            print(f"error: {problem}", file=sys.stderr)
            sys.exit(ExitCode.BAD_INPUT)
        export_slurm_env()  # SLURM tasks as torchrun's variables first: the spec's world size, the lock's rank
        # Values, a finished or locked run directory: refused before Hydra creates or writes anything.
        sys.argv[1:] = preflight(
            sys.argv[1:],
            config_dir=CONFIG_DIR,
            config_name="train",
            make_spec=spec_before_hydra,
            ignore=OPERATIONAL_KEYS,
        )
        main()
    except KeyboardInterrupt:  # Ctrl-C before training started, or a second Ctrl-C: no traceback
        print("interrupted (Ctrl-C)", file=sys.stderr)
        sys.exit(130)
