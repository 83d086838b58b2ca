#!/usr/bin/env bash
# The CPU-scale study of results/digits/README.md: label noise x {SGD, SAM}, m-sharpness, flatness.
# Usage: bash results/digits/run_study.sh [RUNS_DIR]   (about 30-40 min on 2 CPU cores)
# Two Hydra multiruns run side by side, one thread each; then scripts/compare.py, plot.py and sharpness.py
# write the tables and figures into results/digits/.
set -euo pipefail
cd "$(dirname "$0")/../.."  # the repository root
RUNS=${1:-runs/digits_study}
PY=${PYTHON:-.venv/bin/python}
export OMP_NUM_THREADS=1
COMMON="model=wrn_tiny dataset=digits device=cpu epochs=30 batch_size=64 lr=0.05 weight_decay=5e-4 augment=basic trainer.log_every_n_steps=22"

# 1. label noise (Table 4, scaled down): noise 0/20/40/60 %, SGD (rho=0) vs SAM rho 0.05 / 0.1, 3 seeds; m = batch
$PY train.py -m $COMMON m=null label_noise=0.0,0.2,0.4,0.6 rho=0.0,0.05,0.1 seed=0,1 \
  hydra.sweep.dir=$RUNS/noise_a >$RUNS.noise_a.log 2>&1 &
# 2. the third seed, then m-sharpness (Figure 3): m = 4, 16 at rho 0.1 on clean labels (m = 64 is in run 1)
( $PY train.py -m $COMMON m=null label_noise=0.0,0.2,0.4,0.6 rho=0.0,0.05,0.1 seed=2 \
    hydra.sweep.dir=$RUNS/noise_b &&
  $PY train.py -m $COMMON label_noise=0.0 rho=0.1 m=4,16 seed=0,1,2 hydra.sweep.dir=$RUNS/msharp ) >$RUNS.noise_b.log 2>&1 &
wait

# 3. tables, figures, flatness of the clean-label SGD and SAM (rho 0.1) models
$PY scripts/compare.py $RUNS --tables table4 --out results/digits/compare.md
$PY scripts/compare.py $RUNS --tables table4 --csv --out results/digits/compare.csv >/dev/null
$PY scripts/plot.py $RUNS --out-dir results/digits/figures
for d in $(grep -l '"label_noise": 0.0' $RUNS/noise_*/*/results.json | xargs -n1 dirname); do
  $PY scripts/sharpness.py "$d" --num-examples 512 --k 5 --rho 0.1 --m 64 --out "$d/sharpness.json"
done
$PY scripts/summarise_sharpness.py $RUNS --out results/digits/flatness.md
