"""The CPU-scale transfer study of results/digits/transfer/README.md, in one command.

Usage:
    python results/digits/transfer/run_study.py [--runs runs/transfer_study] [--out DIR | --write-results]
                                                [--seeds 5] [--phase all|grid|pretrain|finetune|evaluate|summarise]

The report goes to RUNS/report unless --out says otherwise; --write-results writes the committed study in
results/digits/transfer/. Each command prints a line when it starts and ends (its output: RUNS/study.log).

Everything goes through the real CLIs (train.py multiruns, scripts/evaluate.py), on scikit-learn's digits:

1. rho grid: pretrain on digits 0-4 with 20% of its train split held out for validation, SGD (rho = 0) and
   SAM with the paper's grid rho in {0.01, 0.02, 0.05, 0.1, 0.2, 0.5}, two grid seeds (100, 101); SAM's rho
   is the one with the lowest mean validation error.
2. pretrain: SGD and SAM (that rho) on the whole 0-4 train split, seeds 0..S-1.
3. finetune: every pretrained model on digits 5-9 with SGD and with SAM (the same rho): head re-initialised,
   BatchNorm statistics frozen (App. C.2), no augmentation, weight decay 1e-5 -> the 2x2 table.
4. evaluate: scripts/evaluate.py on every run (pretrained runs: linear probe on digits 5-9; all: feature
   rank, ECE, NLL, corruption error at 5 severities).
5. summarise: scripts/summarise_transfer.py writes the tables and figures into --out.

Running the command again skips finished runs (train.py does nothing for a finished run directory).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]  # results/digits/transfer/ -> the repository root
GRID = ("0.01", "0.02", "0.05", "0.1", "0.2", "0.5")
GRID_SEEDS = (100, 101)
COMMON = [
    "model=wrn_tiny",
    "dataset=digits",
    "device=cpu",
    "batch_size=64",
    "m=null",
    "trainer.log_every_n_steps=100",
]
PRETRAIN = [
    *COMMON,
    "epochs=20",
    "lr=0.05",
    "weight_decay=5e-4",
    "augment=basic",
    "dataset.classes=[0,1,2,3,4]",
]
FINETUNE = [
    *COMMON,
    "epochs=10",
    "lr=0.02",
    "weight_decay=1e-5",
    "augment=none",
    "dataset.classes=[5,6,7,8,9]",
    "model.reset_head=true",
    "model.freeze_bn_stats=true",
]


def sh(cmd: list[str], log: Path) -> None:
    """Run one command (stdout/stderr to log); stop the study if it fails."""
    start = time.monotonic()
    print(f"$ {' '.join(cmd)}", flush=True)
    with open(log, "a") as f:
        proc = subprocess.run(
            cmd, cwd=REPO, stdout=f, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"}
        )
    print(f"  -> exit {proc.returncode} in {time.monotonic() - start:.0f} s (log {log})", flush=True)
    if proc.returncode != 0:
        sys.exit(f"study stopped: a command failed, see {log}")


def train(overrides: list[str], sweep_dir: Path, subdir: str, log: Path) -> None:
    sh(
        [
            sys.executable,
            "train.py",
            "-m",
            *overrides,
            f"hydra.sweep.dir={sweep_dir}",
            f"hydra.sweep.subdir={subdir}",
        ],
        log,
    )


def chosen_rho(runs: Path, grid: tuple[str, ...] = GRID) -> str:
    """The grid's rho with the lowest validation error, mean over the grid seeds (ties: the smaller rho)."""
    means = {}
    for rho in grid:
        errors = []
        for seed in GRID_SEEDS:
            path = runs / "grid" / f"rho{rho}_s{seed}" / "results.json"
            errors.append(json.loads(path.read_text())["val_error"])
        means[rho] = statistics.fmean(errors)
    best = min(means.values())
    rho = min((r for r, e in means.items() if e == best), key=float)
    (runs / "chosen_rho.json").write_text(json.dumps({"rho": float(rho), "mean_val_error": means}, indent=2))
    return rho


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=Path, default=Path("runs/transfer_study"))
    parser.add_argument("--out", type=Path, help="tables and figures (default: RUNS/report)")
    parser.add_argument(
        "--write-results",
        action="store_true",
        help="write into results/digits/transfer/ (the committed study)",
    )
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument(
        "--smoke", action="store_true", help="every phase at a tiny size (1 epoch, 2 batches, rho 0.05 only)"
    )
    phases = ("all", "grid", "pretrain", "finetune", "evaluate", "summarise")
    parser.add_argument("--phase", choices=phases, default="all")
    args = parser.parse_args(argv)
    if args.seeds < 2:
        parser.error("--seeds must be >= 2 (a confidence interval needs two)")
    runs = args.runs.resolve()
    runs.mkdir(parents=True, exist_ok=True)
    if args.write_results:
        args.out = REPO / "results" / "digits" / "transfer"
        print(f"writing the tables and figures into {args.out} (--write-results)", flush=True)
    args.out = args.out or runs / "report"
    log = runs / "study.log"
    seeds = ",".join(str(s) for s in range(args.seeds))
    grid_rhos = ("0.05",) if args.smoke else GRID
    if args.smoke:  # the same commands, cut to a few steps each
        PRETRAIN.extend(["epochs=1", "trainer.limit_train_batches=2"])
        FINETUNE.extend(["epochs=1", "trainer.limit_train_batches=2"])
    run = lambda phase: args.phase in ("all", phase)  # noqa: E731
    started = time.monotonic()

    if run("grid"):
        grid = ",".join(("0.0", *grid_rhos))
        seeds_grid = ",".join(map(str, GRID_SEEDS))
        train(
            [*PRETRAIN, "dataset.val_fraction=0.2", f"rho={grid}", f"seed={seeds_grid}"],
            runs / "grid",
            "rho${rho}_s${seed}",
            log,
        )
    rho = chosen_rho(runs, grid_rhos)
    print(f"SAM rho chosen on the validation split: {rho}", flush=True)
    if run("pretrain"):
        train([*PRETRAIN, f"rho=0.0,{rho}", f"seed={seeds}"], runs / "pretrain", "rho${rho}_s${seed}", log)
    if run("finetune"):
        for pre_rho in ("0.0", rho):  # one multirun per pretrained family: the path names its rho
            pretrained = str(runs / "pretrain" / f"rho{pre_rho}_s${{seed}}")
            train(
                [*FINETUNE, f"model.pretrained={pretrained}", f"rho=0.0,{rho}", f"seed={seeds}"],
                runs / "finetune",
                f"pre{pre_rho}_rho${{rho}}_s${{seed}}",
                log,
            )
    if run("evaluate"):
        py = sys.executable
        pre = sorted(str(p) for p in (runs / "pretrain").glob("rho*_s*") if (p / "results.json").exists())
        fine = sorted(str(p) for p in (runs / "finetune").glob("pre*_s*") if (p / "results.json").exists())
        sh(
            [py, "scripts/evaluate.py", *pre, "--probe-dataset", "digits", "--probe-classes", "5,6,7,8,9"],
            log,
        )
        sh([py, "scripts/evaluate.py", *fine], log)
    if run("summarise"):
        sh([sys.executable, "scripts/summarise_transfer.py", str(runs), "--out", str(args.out)], log)
    t = os.times()
    cpu = (t.children_user + t.children_system) / 60
    print(
        f"done in {(time.monotonic() - started) / 60:.1f} min wall, {cpu:.1f} CPU-min (all commands); runs in {runs}",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
