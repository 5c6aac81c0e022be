#!/usr/bin/env bash
# Everything bagpipe needs from a GPU machine (1, 2 or more GPUs), in one call from the repo root:
# the gpu tests, then a short figure 9 (DLRM, Kaggle-sized tables, global batch 16384, 80 steps,
# bagpipe vs the no-cache PS, static hot cache and model-parallel baselines).
# Knobs: MODELS (dlrm), FIG_STEPS (80), FIG_WARMUP (20), VARIANT_STEPS (e.g. ps=150),
# FIG_TIMEOUT (330 s), TRAINERS (default: the GPUs present, at least 2). The paper-length run
# on nvidia-h200-x2 (about 9 minutes):
#   STEPS="env figure9" MODELS=dlrm,wide-deep,dcn,deepfm FIG_STEPS=550 FIG_WARMUP=50 \
#   VARIANT_STEPS=ps=120 FIG_TIMEOUT=560 bash packages/bagpipe/benchmarks/gpu_check.sh
#
#   OUT=/tmp/out bash packages/bagpipe/benchmarks/gpu_check.sh
#
# Issue 13 on one 8-GPU host (nvidia-h200-x8): the same with TRAINERS=4, then TRAINERS=8 (each
# call appends its rows; a run's trainer count is its rows' `trainers`, `gpus` is the GPUs the
# host has). Split MODELS over calls if a call's limit is short.
#
# Files under $OUT/bagpipe/ (2): run.log, figure9.jsonl. With 1 GPU the 2 trainers share it (gloo).
set -uo pipefail
cd "$(dirname "$0")/../../.."
OUT=${OUT:-$PWD/gpu-out}
DEST="$OUT/bagpipe"
mkdir -p "$DEST"
export PYTHONPATH=$(ls -d packages/*/src | tr '\n' ':')${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1
LOG="$DEST/run.log"
WORK=${WORK:-/tmp/bagpipe-gpu-work}
STEPS=${STEPS:-"env tests figure9"}
status=0

step() {  # step NAME TIMEOUT_S CMD...
    local name=$1 limit=$2
    shift 2
    echo "=== $name: $*" | tee -a "$LOG"
    local t0=$SECONDS
    timeout "$limit" "$@" 2>&1 | tee -a "$LOG"
    local rc=${PIPESTATUS[0]}
    echo "=== $name: rc=$rc in $((SECONDS - t0)) s" | tee -a "$LOG"
    [ "$rc" -eq 0 ] || status=1
}

for s in $STEPS; do
    case $s in
    env)
        step env 60 bash -c 'nvidia-smi --query-gpu=name,memory.total --format=csv; nproc; free -g | head -2;
            python3 -c "import torch; print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, \"gpus\", torch.cuda.device_count())"' ;;
    tests)
        step tests 180 python3 -m pytest packages/bagpipe/tests -m gpu -q -p no:cacheprovider -x ;;
    figure9)
        step figure9 "${FIG_TIMEOUT:-330}" python3 -m bagpipe.figure9 --models "${MODELS:-dlrm}" \
            --steps "${FIG_STEPS:-80}" --warmup "${FIG_WARMUP:-20}" \
            --variant-steps "${VARIANT_STEPS:-}" --global-batch 16384 --servers 2 \
            ${TRAINERS:+--trainers "$TRAINERS"} \
            --timeout 300 --work "$WORK" --out "$DEST/figure9.jsonl" ;;
    esac
done
echo "gpu_check: status=$status (see $LOG)"
exit $status
