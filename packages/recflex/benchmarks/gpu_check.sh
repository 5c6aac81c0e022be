#!/usr/bin/env bash
# Everything recflex needs from a GPU machine, in one call (run from the repo root, ~3-5 min,
# every step under a timeout so the whole script stays under 10 min):
# environment, the gpu-marked tests, kernel stats of the default plans (NVRTC), and the
# benchmark of the default plan against torch / FBGEMM TBE / TorchRec on models A..E, and the
# end-to-end step (lookup + MLP 1024-256-128-1 per batch, E2E_BATCHES=8 batches, same variants).
#
#   OUT=/tmp/out bash packages/recflex/benchmarks/gpu_check.sh
#
# Files under $OUT/recflex/ (2): run.log (everything printed), kernel.jsonl (result rows:
# kernel_time rows, then e2e_latency rows of the e2e step).
# Knobs: BATCHES (default 32 test batches per model), REPEATS (2), MODELS (A,B,C,D,E),
# E2E_BATCHES (8), STEPS ("env tests compile bench e2e").
# RECFLEX_TUNE=1 adds a "tune" step (not run by default):
# tune model A with a reduced budget (TUNE_BATCHES=32 tuning batches, 4 of them in the probes,
# occupancies TUNE_OCC=2,4,8, probes of <= 32 candidates built 16 at a time, the binding and
# dispatch ablations), then bench the tuned plan against the baselines. The plan and its
# report go to /tmp/recflex-tune/ (the report's summary is printed into run.log).
set -uo pipefail
cd "$(dirname "$0")/../../.."
OUT=${OUT:-$PWD/gpu-out}
DIR="$OUT/recflex"
mkdir -p "$DIR"
PP=$(ls -d packages/*/src | tr '\n' ':')
# FBGEMM/TorchRec for the baselines may come unpacked in .device/ (optional)
for d in .device .device/site-packages .device/lib/python*/site-packages; do
    [ -d "$d" ] && PP="$PP$PWD/$d:"
done
export PYTHONPATH="$PP${PYTHONPATH:-}"
export PYTHONUNBUFFERED=1
export RECFLEX_CACHE=${RECFLEX_CACHE:-/tmp/recflex-cache}
BATCHES=${BATCHES:-32}
REPEATS=${REPEATS:-2}
MODELS=${MODELS:-A,B,C,D,E}
E2E_BATCHES=${E2E_BATCHES:-8}
STEPS=${STEPS:-"env tests compile bench e2e"}
if [ "${RECFLEX_TUNE:-0}" = 1 ]; then STEPS="$STEPS tune"; fi
TUNE_BATCHES=${TUNE_BATCHES:-32}
TUNE_OCC=${TUNE_OCC:-2,4,8}
LOG="$DIR/run.log"
: >"$LOG"
rm -f "$DIR/kernel.jsonl"
status=0

step() {  # step NAME TIMEOUT_S CMD...: run, log, remember a failure, go on
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
        step env 60 bash -c 'nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,driver_version --format=csv;
            python3 -c "
import torch, numpy
print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, \"numpy\", numpy.__version__)
from cuda.bindings import nvrtc; print(\"nvrtc\", nvrtc.nvrtcVersion()[1:])
from recflex import baselines
for b in baselines.BASELINES: print(\"baseline\", b, baselines.available(b) or \"ok\")
"' ;;
    tests)
        step tests 200 python3 -m pytest packages/recflex -m gpu -q -p no:cacheprovider --maxfail=10 --durations=10 ;;
    compile)
        for m in A D; do
            step "compile-$m" 45 python3 -m recflex.compile --model "$m" --json
        done ;;
    bench)
        step bench 300 python3 -m recflex.bench --model "$MODELS" --plan default \
            --batches "$BATCHES" --repeats "$REPEATS" --out "$DIR/kernel.jsonl" ;;
    e2e)
        step e2e 120 python3 -m recflex.bench --e2e --model "$MODELS" --plan default \
            --batches "$E2E_BATCHES" --repeats "$REPEATS" --out "$DIR/kernel.jsonl" ;;
    tune)
        mkdir -p /tmp/recflex-tune
        step tune-A 560 python3 -m recflex.tune --model A --out /tmp/recflex-tune/A.json \
            --batches "$TUNE_BATCHES" --local-batches 4 --occupancies "$TUNE_OCC" --chunk 32 \
            --jobs 16 --ablations binding,dispatch --rows "$DIR/kernel.jsonl" --quiet
        python3 - /tmp/recflex-tune/A.report.json <<'PY' 2>&1 | tee -a "$LOG"
import json, sys
try:
    r = json.load(open(sys.argv[1]))
except OSError as e:
    sys.exit(f"no tuning report: {e}")
keys = ("clusters", "candidates", "occupancy", "global_curve", "wall_s", "local_s",
        "global_s", "compiles", "compile_s", "cache_hits", "ablations")
print(json.dumps({k: r.get(k) for k in keys}, indent=1))
print("notes:", r.get("notes", [])[:10])
PY
        [ -f /tmp/recflex-tune/A.json ] && step bench-tuned-A 200 python3 -m recflex.bench \
            --model A --plan /tmp/recflex-tune/A.json --batches "$BATCHES" --repeats "$REPEATS" \
            --out "$DIR/kernel.jsonl" ;;
    esac
done

python3 - "$DIR/kernel.jsonl" <<'PY' 2>&1 | tee -a "$LOG"
import json, pathlib, sys
p = pathlib.Path(sys.argv[1])
if p.exists():
    rows = [json.loads(l) for l in p.read_text().splitlines() if l.strip()]
    print("--- kernel_time: summed kernel time over the test batches (us); e2e_latency: median"
          " per-batch lookup + MLP latency (us); ratio = baseline time / time")
    for r in rows:
        ratio = f"{r['ratio']:.2f}x vs {r['baseline']}" if r.get("ratio") else "-"
        print(f"{r['workload']:12s} {r['metric']:12s} {r['variant']:11s} {r['value']:12.1f} {ratio}")
PY
echo "gpu_check: status=$status (see $LOG)" | tee -a "$LOG"
exit $status
