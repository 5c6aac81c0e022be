#!/usr/bin/env bash
# Everything rmixer needs from a GPU machine, in one call (run from the repo root):
# the gpu tests, then the makespan benchmark (balance_24 and memory_24 under monolithic, mps,
# rmixer and rmixer@mps on 1 GPU + CPU, balance_24 on 2 GPUs when present; EXTRA=cognn,...
# adds ablation runs, BUDGET=s sizes the makespan step, 110 s by default: whole script < 5
# minutes; BUDGET=370 with MIXES=balance_24 GPU_COUNTS=1 gave jobs of 5-15 s on one H200).
#
#   OUT=/tmp/out bash packages/rmixer/benchmarks/gpu_check.sh
#
# Files under $OUT/rmixer (2): makespan.jsonl (result rows, per-run job spans, standalone
# profiles) and gantt.png (one panel per run). The log is stdout.
set -uo pipefail
cd "$(dirname "$0")/../../.."
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT/rmixer"
export PYTHONPATH=$(ls -d packages/*/src | tr '\n' ':')${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1
BUDGET=${BUDGET:-110}  # the whole makespan step; keep the script under 5 minutes
status=0

step() {  # step NAME TIMEOUT_S CMD...: run, remember a failure, go on
    local name=$1 limit=$2
    shift 2
    echo "=== $name: $*"
    local t0=$SECONDS
    timeout "$limit" "$@" 2>&1
    local rc=$?
    echo "=== $name: rc=$rc in $((SECONDS - t0)) s"
    [ "$rc" -eq 0 ] || status=1
}

step env 60 bash -c 'nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv;
  which nvidia-cuda-mps-control || echo "no nvidia-cuda-mps-control";
  python3 -c "import torch, os; print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, torch.cuda.device_count(), \"GPUs\", os.cpu_count(), \"cores\")";
  python3 -c "import pynvml" 2>/dev/null && echo "pynvml present" || echo "no pynvml (nvidia-smi readings)";
  python3 -c "import yaml" 2>/dev/null && echo "pyyaml present" || echo "no pyyaml (YAML task files unavailable; shipped lists are plain text)"'
step tests 100 python3 -m pytest packages/rmixer/tests/test_gpu.py -m gpu -q -p no:cacheprovider -s
# profiles are measured once and reused (FRESH=1 measures afresh): profiling takes ~35 s
PROFILES=${PROFILES:-/tmp/rmixer-profiles.json}
[ "${FRESH:-0}" = 1 ] && rm -f "$PROFILES"
# runs go most important first (balance_24 on 1 GPU: rmixer, monolithic, mps); the rest only
# if the budget allows; rows and the Gantt chart are rewritten after every run
step makespan $((BUDGET + 75)) python3 -m rmixer.makespan --mixes "${MIXES:-balance_24,memory_24}" \
    --gpu-counts "${GPU_COUNTS:-1,2}" --extra-policies "${EXTRA:-}" --budget-s "$BUDGET" --run-timeout 150 \
    --profiles "$PROFILES" --out-dir "$OUT/rmixer"
ls -la "$OUT/rmixer"
echo "gpu_check: status=$status"
exit $status
