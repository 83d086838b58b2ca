#!/usr/bin/env bash
# The CPU-scale study of results/digits/README.md: label noise x {SGD, SAM}, m-sharpness, flatness.
#
#   bash results/digits/run_study.sh [--runs DIR] [--out DIR] [--smoke] [--write-results]
#
#   --runs DIR        run directories (default runs/digits_study; finished runs are skipped on a rerun)
#   --out DIR         tables and figures (default DIR/report under --runs)
#   --write-results   write the tables and figures into results/digits/ (the committed study) instead
#   --smoke           every step end to end at a tiny size (1 seed, 1 epoch, 2 batches): about 3 minutes
#
# The full study takes about 30-40 min on 2 CPU cores: two Hydra multiruns side by side, one thread each,
# each printing a line per job; then scripts/compare.py, plot.py and sharpness.py write the report.
# The committed numbers used exactly p*N flipped labels (label_noise_protocol=flip), kept here.
set -euo pipefail
cd "$(dirname "$0")/../.."  # the repository root
RUNS=runs/digits_study OUT="" SMOKE=0 WRITE=0
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) RUNS=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --smoke) SMOKE=1; shift ;;
    --write-results) WRITE=1; shift ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done
if [ "$WRITE" = 1 ]; then OUT=results/digits; echo "writing the report into results/digits/ (--write-results)"; fi
OUT=${OUT:-$RUNS/report}
if [ -n "${PYTHON:-}" ]; then PY=$PYTHON; elif [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
export OMP_NUM_THREADS=1
mkdir -p "$RUNS" "$OUT" "$OUT/figures"

EPOCHS=30 SEEDS_A=0,1 SEED_B=2 SEEDS_M=0,1,2 NOISE=0.0,0.2,0.4,0.6 RHOS=0.0,0.05,0.1 MS=4,16 LIMIT=""
if [ "$SMOKE" = 1 ]; then
  EPOCHS=1 SEEDS_A=0 SEED_B=1 SEEDS_M=0 NOISE=0.0,0.4 RHOS=0.0,0.1 MS=16 LIMIT="trainer.limit_train_batches=2"
fi
COMMON="model=wrn_tiny dataset=digits device=cpu epochs=$EPOCHS batch_size=64 lr=0.05 weight_decay=5e-4 augment=basic label_noise_protocol=flip trainer.log_every_n_steps=22 $LIMIT"

progress() {  # one line per job from a multirun's output (the full output goes to its log file)
  tee "$RUNS/$1.log" | grep --line-buffered -E "#[0-9]+ : |done: |error" | sed -u "s/^/[$1] /"
}
echo "digits study -> $RUNS (report: $OUT); logs: $RUNS/*.log"
# 1. label noise (Table 4, scaled down): SGD (rho=0) vs SAM rho 0.05 / 0.1; m = batch
$PY train.py -m $COMMON m=null label_noise=$NOISE rho=$RHOS seed=$SEEDS_A hydra.sweep.dir=$RUNS/noise_a 2>&1 \
  | progress noise_a &
# 2. one more seed, then m-sharpness (Figure 3): m = 4, 16 at rho 0.1 on clean labels (m = 64 is in run 1)
( $PY train.py -m $COMMON m=null label_noise=$NOISE rho=$RHOS seed=$SEED_B hydra.sweep.dir=$RUNS/noise_b &&
  $PY train.py -m $COMMON label_noise=0.0 rho=0.1 m=$MS seed=$SEEDS_M hydra.sweep.dir=$RUNS/msharp ) 2>&1 \
  | progress noise_b &
wait

# 3. tables, figures, flatness of the clean-label SGD and SAM (rho 0.1) models
echo "report -> $OUT"
$PY scripts/compare.py "$RUNS" --tables table4 --out "$OUT/compare.md" >/dev/null
$PY scripts/compare.py "$RUNS" --tables table4 --csv --out "$OUT/compare.csv" >/dev/null
$PY scripts/plot.py "$RUNS" --out-dir "$OUT/figures"
SHARP_N=512
[ "$SMOKE" = 1 ] && SHARP_N=64
for d in $(grep -l '"label_noise": 0.0' "$RUNS"/noise_*/*/results.json | xargs -n1 dirname); do
  echo "flatness: $d"
  $PY scripts/sharpness.py "$d" --num-examples $SHARP_N --k 5 --rho 0.1 --m 64 --out "$d/sharpness.json"
done
$PY scripts/summarise_sharpness.py "$RUNS" --out "$OUT/flatness.md"
echo "done: $OUT"
