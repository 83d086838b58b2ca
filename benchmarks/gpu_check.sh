#!/usr/bin/env bash
# The whole GPU check in one command (under 8 minutes on one modern GPU, plus about 3 (estimated) for the
# tp_* throughput steps), from the repository root:
#
#   benchmarks/gpu_check.sh                 # --device cuda: pytest -m gpu, the benchmarks, WRN-28-10 throughput
#   benchmarks/gpu_check.sh --device cpu    # dry run: every step end to end with tiny sizes (no GPU needed)
#
# Steps: `pytest -m gpu`; benchmarks/bench_sam.py in bf16 and in fp16 (SGD, SAM, ASAM and chunked m=32);
# benchmarks/bench_train.py (train.py's loop vs a bare loop); benchmarks/bench_data.py (tensor loader vs
# DataLoader); benchmarks/bench_wrn.py: WRN-28-10 SAM steps on CIFAR-shaped random data, bf16 +
# channels_last, eager and torch.compile, images/s and peak memory; benchmarks/bench_throughput.py: images/s
# of SAM and SGD steps for each paper model at its cell's m (tp_* steps), merged into
# benchmarks/throughput.yaml (the dry run writes a copy in $OUT instead). Each step's full output goes to
# $OUT (default runs/gpu_check/<time>/<step>.log); one table at the end: step, status, seconds, headline.
# A failing step does not stop the others; the exit status is the number of failed steps.
set -uo pipefail
cd "$(dirname "$0")/.."
DEVICE=cuda
while [ $# -gt 0 ]; do
  case "$1" in
    --device) DEVICE=$2; shift 2 ;;
    --device=*) DEVICE=${1#--device=}; shift ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (use --device cuda|cpu)" >&2; exit 2 ;;
  esac
done
# The README installs into .venv and never activates it: use that interpreter unless PYTHON= says otherwise.
if [ -n "${PYTHON:-}" ]; then PY=$PYTHON
elif [ -x .venv/bin/python ]; then PY=.venv/bin/python
else PY=python3; fi
OUT=${OUT:-runs/gpu_check/$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"

if [ "$DEVICE" = cpu ]; then  # dry run: tiny sizes, same code paths
  SAM_ARGS=(--device cpu --model wrn_tiny_digits --batch-size 8 --m 4 --rounds 1 --warmup 0 --threads 1 --no-memory)
  FP16=fp32  # fp16 needs CUDA: the dry run takes the same path in fp32
  TRAIN_ARGS=(--device cpu --batch-size 16 --batches 2 --rounds 1 --depth 10 --widen-factor 1 --threads 1)
  DATA_ARGS=(--device cpu --num-images 512 --batch-size 64 --repeats 1 --workers 1)
  WRN_ARGS=(--device cpu --depth 10 --widen-factor 1 --batch-size 8 --steps 2 --warmup 1)
  TP_FILE=$OUT/throughput.yaml  # never the committed file: the dry run's figures are not measurements
  cp benchmarks/throughput.yaml "$TP_FILE"
  TP_ARGS=(--device cpu --precision fp32 --batch-size 4 --m 2 --steps 1 --warmup 0 --write "$TP_FILE")
  # each cell's config, data shape, batch split and m path on the tiny WRN (the paper's models take
  # minutes each here; ResNet-32 runs as itself)
  TP_TINY=(--override model=wrn_tiny)
  TP_SMALL=(--image-size 32)  # the 224 and 600 px cells at CIFAR size
  TP_IMAGENET=(--override model=wrn_tiny --override "'~model.init'" --override "'~model.stem'")  # keys only the ResNets take
  TP_B7=()
else
  SAM_ARGS=(--device "$DEVICE" --m 32)
  FP16=fp16
  TRAIN_ARGS=(--device "$DEVICE")
  DATA_ARGS=(--device "$DEVICE")
  WRN_ARGS=(--device "$DEVICE" --batch-size 128 --steps 20 --warmup 5)
  TP_FILE=benchmarks/throughput.yaml  # commit it after a GPU run: scripts/sweep_cost.py uses its rows
  TP_ARGS=(--device "$DEVICE" --steps 5 --warmup 2 --write "$TP_FILE")
  TP_TINY=()
  TP_SMALL=()
  TP_IMAGENET=(--batch-size 256)  # 2 chunks of the cell's m = 128 (its 4096 would take 32 per step)
  TP_B7=(--batch-size 32)         # 2 chunks of m = 16 at 600 px
fi
TP="$PY benchmarks/bench_throughput.py ${TP_ARGS[*]}"
# images/s per paper model for scripts/sweep_cost.py (the cell's batch and m unless set above): a step per
# model on a GPU; the dry run measures the same experiments in four processes (each start costs seconds)
if [ "$DEVICE" = cpu ]; then
  TP_STEPS=(
    "tp_cifar_models|$TP --experiment cifar10_wrn28_10_200ep_basic_sam --experiment fashion_mnist_wrn28_10_basic_sam --experiment cifar100_shake_shake_26_2x96d_basic_sam --experiment cifar100_pyramidnet272_basic_sam --experiment cifar100_pyramidnet272_shakedrop_basic_sam ${TP_TINY[*]}"
    "tp_resnet32|$TP --experiment cifar10_resnet32_noise20_sam"
    "tp_imagenet_resnets|$TP --experiment imagenet_resnet50_100ep_sam --experiment imagenet_resnet101_100ep_sam --experiment imagenet_resnet152_100ep_sam ${TP_IMAGENET[*]} ${TP_SMALL[*]}"
    "tp_efficientnet_b7|$TP --experiment finetune/cifar10_efficientnet_b7_sam ${TP_TINY[*]} ${TP_B7[*]} ${TP_SMALL[*]}"
  )
else
  TP_STEPS=(
    "tp_wrn28_10|$TP --experiment cifar10_wrn28_10_200ep_basic_sam"
    "tp_wrn28_10_fmnist|$TP --experiment fashion_mnist_wrn28_10_basic_sam"
    "tp_shake_shake|$TP --experiment cifar100_shake_shake_26_2x96d_basic_sam"
    "tp_pyramidnet272|$TP --experiment cifar100_pyramidnet272_basic_sam"
    "tp_pyramidnet272_sd|$TP --experiment cifar100_pyramidnet272_shakedrop_basic_sam"
    "tp_resnet32|$TP --experiment cifar10_resnet32_noise20_sam"
    "tp_resnet50|$TP --experiment imagenet_resnet50_100ep_sam ${TP_IMAGENET[*]}"
    "tp_resnet101|$TP --experiment imagenet_resnet101_100ep_sam ${TP_IMAGENET[*]}"
    "tp_resnet152|$TP --experiment imagenet_resnet152_100ep_sam ${TP_IMAGENET[*]}"
    "tp_efficientnet_b7|$TP --experiment finetune/cifar10_efficientnet_b7_sam ${TP_B7[*]}"
  )
fi

STEPS=(
  "pytest_gpu|$PY -m pytest -m gpu -n0 -q -p no:cacheprovider tests/test_gpu.py"  # -n0: one GPU, one test at a time
  "bench_sam_bf16|$PY benchmarks/bench_sam.py ${SAM_ARGS[*]} --variants sgd,sam,asam,chunked --precision bf16"
  "bench_sam_fp16|$PY benchmarks/bench_sam.py ${SAM_ARGS[*]} --variants sgd,sam,asam,chunked --precision $FP16"
  "bench_train|$PY benchmarks/bench_train.py ${TRAIN_ARGS[*]}"
  "bench_data|$PY benchmarks/bench_data.py ${DATA_ARGS[*]}"
  "wrn28_10_bf16_cl|$PY benchmarks/bench_wrn.py ${WRN_ARGS[*]} --precision bf16 --channels-last"
  "wrn28_10_bf16_cl_compile|$PY benchmarks/bench_wrn.py ${WRN_ARGS[*]} --precision bf16 --channels-last --compile"
  "${TP_STEPS[@]}"
)

$PY - <<'PY' > "$OUT/device.txt" 2>&1
import torch
print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device", "| torch", torch.__version__)
PY
echo "gpu_check: device=$DEVICE ($(cat "$OUT/device.txt")), python $PY -> $OUT"

failed=0
ROWS=()
for entry in "${STEPS[@]}"; do
  name=${entry%%|*}
  cmd=${entry#*|}
  echo "== $name: $cmd"
  start=$(date +%s)
  eval "$cmd" > "$OUT/$name.log" 2>&1
  rc=$?
  seconds=$(( $(date +%s) - start ))
  status=ok
  [ $rc -ne 0 ] && { status="FAIL($rc)"; failed=$((failed + 1)); }
  # Headline: the line a reader wants (pytest's summary, a ratio, img/s), else the last line.
  headline=$(grep -E "passed|failed|skipped|error" "$OUT/$name.log" | tail -1)
  case "$name" in
    bench_sam*) headline=$(grep -E "^(sam|chunked) " "$OUT/$name.log" | tr -s ' ' | paste -sd ';' -) ;;
    bench_train) headline=$(grep -E "ours / bare" "$OUT/$name.log" | tail -1) ;;
    bench_data) headline=$(grep -E "^basic " "$OUT/$name.log" | tr -s ' ' | tail -1) ;;
    wrn*) headline=$(grep -E "img/s" "$OUT/$name.log" | tail -1) ;;
    tp_*) headline="$(grep -c " img/s, SGD" "$OUT/$name.log") row(s); $(grep -E "img/s" "$OUT/$name.log" | tail -1)" ;;
  esac
  [ -z "$headline" ] && headline=$(grep -v '^\s*$' "$OUT/$name.log" | tail -1)
  ROWS+=("$(printf '%-26s %-9s %6ss  %s' "$name" "$status" "$seconds" "${headline:0:110}")")
  echo "   $status in ${seconds}s"
done

{
  echo
  echo "== gpu_check summary ($(cat "$OUT/device.txt"), --device $DEVICE)"
  printf '%-26s %-9s %7s  %s\n' step status time headline
  printf '%s\n' "${ROWS[@]}"
  echo "logs: $OUT; throughput rows: $TP_FILE"
} | tee "$OUT/summary.txt"
exit $failed
