#!/usr/bin/env bash
# The paper-scale image comparison on one GPU: Fashion-MNIST's full training set (60,000
# images) and test set (10,000), 20 epochs, 5 seeds, the default models of
# `optgen experiment fashion-mnist` (deep_{gd,heavy_ball,nesterov,apg2}, the FLOPs-matched
# staged family, and both isotropic gd/APG2 pairs), bf16 autocast, channels_last, a global
# batch of 256.
#
#     bash bench/gpu_experiment.sh                       # data from Debian's package
#     DATA=/path/to/fashion-mnist bash bench/gpu_experiment.sh
#     OUT=/some/folder EPOCHS=30 SEEDS=8 bash bench/gpu_experiment.sh
#
# Writes $OUT/fashion-mnist.json, .png and modules/ (default bench/results/gpu-experiment-
# <UTC date and time>/) and the run's output beside them; rerunning with the same OUT
# resumes a run that was stopped. Estimate, not yet measured on a GPU: 8 models x 5 seeds x
# 20 epochs is 48 million training images at 5-90 MFLOPs each, about 1.3e16 FLOPs with the
# backward pass; at a few tens of TFLOP/s that is minutes of arithmetic, and these small
# models are bound by kernel launches rather than FLOPs, so expect 10-40 minutes on an
# H100. Add COMPILE=1 for torch.compile of the training forward (about a minute of
# compilation per model and seed). On N GPUs: GPUS=N runs the same computation under
# torchrun (NCCL, one rank a GPU).
#
# Needs a CUDA build of torch already installed (never installs torch) and the IDX files
# (`apt-get install dataset-fashion-mnist`, or DATA=folder of the four .gz files).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

fail() {
    echo "bench/gpu_experiment.sh: $*" >&2
    exit 1
}

python -c "import torch" 2>/dev/null || fail "torch is not installed (install a CUDA build of torch first)"
python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" ||
    fail "no CUDA device: this script runs the GPU comparison; on CPUs run optgen experiment fashion-mnist"

STAMP=$(date -u +%Y-%m-%d-%H%M)
OUT=${OUT:-$ROOT/bench/results/gpu-experiment-$STAMP}
EPOCHS=${EPOCHS:-20}
SEEDS=${SEEDS:-5}
BATCH=${BATCH:-256}
GPUS=${GPUS:-1}
mkdir -p "$OUT"

PIN=$(mktemp)
python -c "import torch; print('torch==' + torch.__version__)" >"$PIN"
python -m pip install -q -c "$PIN" -e ".[experiments]" ||
    python -m pip install -q -c "$PIN" --no-build-isolation -e ".[experiments]" ||
    fail "pip install -e .[experiments] failed (see above)"
rm -f "$PIN"
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}

ARGS=(fashion-mnist --train-size 60000 --epochs "$EPOCHS" --seeds "$SEEDS" --batch "$BATCH"
    --device cuda --bf16 --channels-last --out "$OUT" --resume)
[ -n "${DATA:-}" ] && ARGS+=(--data "$DATA")
[ -n "${COMPILE:-}" ] && ARGS+=(--compile)

{
    echo "# bench/gpu_experiment.sh, $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    python -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda, 'device', torch.cuda.get_device_name(0))"
    echo "optgen experiment ${ARGS[*]} on $GPUS GPU(s)"
} | tee "$OUT/run.txt"

START=$SECONDS
if [ "$GPUS" -gt 1 ]; then
    torchrun --standalone --nproc_per_node "$GPUS" -m optgen experiment "${ARGS[@]}" 2>&1 | tee -a "$OUT/run.txt"
else
    python -m optgen experiment "${ARGS[@]}" 2>&1 | tee -a "$OUT/run.txt"
fi
STATUS=${PIPESTATUS[0]}
echo "wall time: $((SECONDS - START)) s, exit $STATUS" | tee -a "$OUT/run.txt"
echo "tables: python -m optgen.experiments.tables on a page marked <!-- table: images $OUT/fashion-mnist.json -->"
exit "$STATUS"
