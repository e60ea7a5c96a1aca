#!/usr/bin/env bash
# The CUDA measurements of docs/performance.md in one run (at most about 11 minutes):
# the generated tests on the GPU, then bench/fusion.py, model.py, memory.py, deq.py and
# handwritten.py with --device cuda, every output into one results file.
#
#     bash bench/gpu.sh            # writes bench/results/gpu-<UTC date and time>.txt
#     OUT=/some/folder bash bench/gpu.sh   # writes $OUT/gpu-<date>.txt instead
#
# Needs a CUDA build of torch already installed (the script never installs torch: pip
# would pick a build for another CUDA); installs this checkout (pip install -e .) and,
# when it can, torchdeq, both with torch pinned to the installed version. Each step has
# a time limit; a step that fails or runs out of time is recorded in the file and the
# next step still runs; the exit status is 1 when any step failed.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

fail() {
    echo "bench/gpu.sh: $*" >&2
    exit 1
}

python -c "import torch" 2>/dev/null || fail "torch is not installed (install a CUDA build of torch first)"
python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" ||
    fail "no CUDA device: torch $(python -c 'import torch; print(torch.__version__)') sees none (this script measures the GPU; the CPU figures come from the benches run directly)"

STAMP=$(date -u +%Y-%m-%d-%H%M)
if [ -n "${OUT:-}" ]; then
    RESULTS_DIR=$OUT
else
    RESULTS_DIR=$ROOT/bench/results
fi
mkdir -p "$RESULTS_DIR"
RESULTS=$RESULTS_DIR/gpu-$STAMP.txt

# pip may add packages but never replace the installed torch.
PIN=$(mktemp)
python -c "import torch; print('torch==' + torch.__version__)" >"$PIN"
# Without network access the build backend cannot be fetched: build with the installed one.
python -m pip install -q -c "$PIN" -e . ||
    python -m pip install -q -c "$PIN" --no-build-isolation -e . ||
    fail "pip install -e . failed (see above)"
python -c "import pytest" 2>/dev/null || python -m pip install -q -c "$PIN" pytest ||
    fail "pytest is missing and could not be installed"
python -c "import torchdeq" 2>/dev/null || python -m pip install -q -c "$PIN" torchdeq ||
    echo "torchdeq not installed: bench/deq.py prints its columns as '-'"
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}

{
    echo "# bench/gpu.sh, $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    python -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda, 'device', torch.cuda.get_device_name(0))"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
    echo "CPU cores: $(nproc)"
} >"$RESULTS"

FAILED=0

# step NAME SECONDS COMMAND...: run COMMAND under a time limit, output into the results.
step() {
    local name=$1 limit=$2
    shift 2
    echo "== $name" | tee -a "$RESULTS"
    local start=$SECONDS
    timeout --kill-after=10 "$limit" "$@" >>"$RESULTS" 2>&1
    local status=$?
    local took=$((SECONDS - start))
    if [ "$status" -eq 0 ]; then
        echo "-- $name: ok (${took} s)" | tee -a "$RESULTS"
    elif [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
        echo "-- $name: TIMED OUT after ${limit} s" | tee -a "$RESULTS"
        FAILED=1
    else
        echo "-- $name: FAILED (exit $status, ${took} s)" | tee -a "$RESULTS"
        FAILED=1
    fi
}

WORKERS=""
python -c "import xdist" 2>/dev/null && WORKERS="-n 4"

# The limits add up to 10.5 minutes with the installs (estimates: not yet run on a GPU).
# model.py compiles every case twice cold (one fresh process per variant): the four
# cases below cover mlp, conv, attention blocks and a staged model within its limit.
# shellcheck disable=SC2086  # WORKERS is empty or two words
step "generated tests on cuda" 120 \
    env OPTGEN_TEST_DEVICE=cuda python -m pytest -q -p no:cacheprovider $WORKERS generated
# The allocator setting is a glibc one: CUDA's caching allocator is always "warm".
step "bench/fusion.py" 75 \
    python bench/fusion.py --device cuda --allocators default --sizes 16M --repeats 7
step "bench/model.py" 180 python bench/model.py --device cuda --repeats 15 \
    --cases nesterov,nesterov_conv,nesterov_transformer,deep_nesterov
step "bench/memory.py" 40 python bench/memory.py --device cuda --repeats 5
step "bench/deq.py" 40 python bench/deq.py --device cuda --repeats 10
# Two staged models against their hand-written twins; one cold compile per variant.
step "bench/handwritten.py" 180 python bench/handwritten.py --device cuda --compile-repeats 1

rm -f "$PIN"
echo "results: $RESULTS"
exit "$FAILED"
