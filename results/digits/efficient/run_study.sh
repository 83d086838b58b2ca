#!/usr/bin/env bash
# The efficient-SAM study of results/digits/efficient/README.md (issue 15): every variant at 40% label
# noise on digits, 5 seeds, the setting of results/digits/ (SAM's largest gain there).
# Usage: bash results/digits/efficient/run_study.sh [RUNS_DIR]   (about 1-1.5 h on 2 shared CPU cores)
# Three Hydra multiruns side by side, one thread each, seed-major so that a partial study covers every
# variant; then scripts/efficient_summary.py writes the table and the Pareto figure.
set -euo pipefail
cd "$(dirname "$0")/../../.."  # the repository root
RUNS=${1:-runs/efficient}
PY=${PYTHON:-.venv/bin/python}
export OMP_NUM_THREADS=1
mkdir -p "$RUNS"
COMMON="model=wrn_tiny dataset=digits device=cpu epochs=30 batch_size=64 lr=0.05 weight_decay=5e-4 augment=basic m=null label_noise=0.4 rho=0.1 trainer.log_every_n_steps=22"
SEEDS=0,1,2,3,4
# MESA's EMA horizon in epochs as on CIFAR-10 (decay 0.9995 = 2,000 steps = 5 epochs of 391 steps; here
# 22 steps/epoch: decay 0.99 = 100 steps = 4.5 epochs); its trajectory loss from epoch 1 of 30 (5 of 200).
MESA="optimizer.variant.decay=0.99 optimizer.variant.start_epoch=1"

$PY train.py -m $COMMON seed=$SEEDS optimizer=sgd,sam,looksam,esam,rst \
  hydra.sweep.dir=$RUNS/a >$RUNS/a.log 2>&1 &
$PY train.py -m $COMMON seed=$SEEDS optimizer=sam_late,ae_sam,gsam,sam_on hydra.sweep.dir=$RUNS/b >$RUNS/b.log 2>&1 &
$PY train.py -m $COMMON seed=$SEEDS optimizer=mesa $MESA hydra.sweep.dir=$RUNS/mesa >$RUNS/mesa.log 2>&1 &
wait
$PY scripts/efficient_summary.py "$RUNS" --out-dir results/digits/efficient
