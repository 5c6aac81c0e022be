#!/usr/bin/env bash
# Everything recflex needs from a GPU machine, in one call (run from the repo root, ~3-5 min,
# every step under a timeout so the whole script stays under 10 min):
# environment, the gpu-marked tests, kernel stats of the default plans (NVRTC), and the
# benchmark of the default plan against torch / FBGEMM TBE / TorchRec on models A..E, and the
# end-to-end step (lookup + MLP 1024-256-128-1 per batch, E2E_BATCHES=8 batches, same variants).
#
#   OUT=/tmp/out bash packages/recflex/benchmarks/gpu_check.sh
#
# Files under $OUT/recflex/ (2, or 4 with the tune step): run.log (everything printed),
# kernel.jsonl (result rows: kernel_time rows, e2e_latency rows of the e2e step, ablation rows
# and the tuned plan's kernel_time rows of the tune step), tuned-A.json (the tuned plan) and
# tuned-A.report.json (the tuning report: stage timings, local scores, ablations); the two
# tune files are copied there even when the step is cut by its timeout (the report is then
# the last one written, with "stage" saying how far it got).
# Knobs: BATCHES (default 32 test batches per model), REPEATS (2), MODELS (A,B,C,D,E),
# E2E_BATCHES (8), STEPS ("env tests compile bench e2e").
# RECFLEX_TUNE=1 adds a "tune" step (not run by default):
# tune each of TUNE_MODELS (default A; TUNE_LIMIT_S applies to each) with a reduced budget (TUNE_BATCHES=32 tuning batches, 4 of them in the probes,
# occupancies TUNE_OCC=4,8,2 measured in that order, probes of <= 32 candidates built 16 at a
# time), then the ablations TUNE_ABLATIONS=binding,dispatch,naive,mutation (mutation: the 4
# largest-spread multi-hot clusters, MUTATION_CANDIDATES=6 candidates each), then bench the
# tuned plan against the baselines (TUNE_BENCH=0: tune only). TUNE_LIMIT_S_<model> (e.g.
# TUNE_LIMIT_S_C=200) gives one model its own limit, with the same 54% / 75% split; TUNE_JOBS
# (16) parallel builds. Budget (the step's timeout TUNE_LIMIT_S=560 s): the local
# stage starts another occupancy only while it fits TUNE_LOCAL_BUDGET_S (54% of the limit,
# 302 s; judged by the slowest occupancy so far), and no ablation starts after
# TUNE_DEADLINE_S (75%, 420 s). One device call has 600 s: for the tune alone plus the tuned
# bench, run STEPS=env RECFLEX_TUNE=1 TUNE_LIMIT_S=460 (bench-tuned-A then has ~120 s).
# Estimate per occupancy (from the 2-core dev machine, unmeasured on the H200): 33 probe
# kernels (a 32-candidate probe builds in ~8 s with nvcc; 16 in parallel: ~25 s) + 328 probe
# runs x 4 batches (host binding + launches, ~0.1-0.4 s each: 30-130 s); global stage ~10-60 s; binding ~10 s; dispatch one build + run ~10-60 s;
# mutation 24 whole-model builds ~20-120 s (H200 run: 60 s). The naive ablation times every
# one of model A's 8194 candidates alone on the 4 local batches (CUDA events): ~820 distinct
# one-feature kernels built up front, 16 at a time (unmeasured; guess 40-90 s), then
# ~5 ms of host work per candidate (~40 s). Timings per stage print as they happen.
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
TUNE_MODELS=${TUNE_MODELS:-A}  # e.g. A,B,C,D,E: one tune (and its bench) after another
TUNE_BATCHES=${TUNE_BATCHES:-32}
TUNE_OCC=${TUNE_OCC:-4,8,2}
TUNE_ABLATIONS=${TUNE_ABLATIONS:-binding,dispatch,naive,mutation}
MUTATION_CANDIDATES=${MUTATION_CANDIDATES:-6}
TUNE_LIMIT_S=${TUNE_LIMIT_S:-560}
TUNE_LOCAL_BUDGET_S=${TUNE_LOCAL_BUDGET_S:-$((TUNE_LIMIT_S * 54 / 100))}
TUNE_DEADLINE_S=${TUNE_DEADLINE_S:-$((TUNE_LIMIT_S * 3 / 4))}
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
        step bench "${BENCH_LIMIT_S:-300}" python3 -m recflex.bench --model "$MODELS" --plan default \
            --batches "$BATCHES" --repeats "$REPEATS" --out "$DIR/kernel.jsonl" ;;
    e2e)
        step e2e "${E2E_LIMIT_S:-120}" python3 -m recflex.bench --e2e --model "$MODELS" --plan default \
            --batches "$E2E_BATCHES" --repeats "$REPEATS" --out "$DIR/kernel.jsonl" ;;
    tune)
        T=/tmp/recflex-tune
        mkdir -p "$T"
        for m in ${TUNE_MODELS//,/ }; do
        rm -f "$T/tuned-$m.json" "$T/tuned-$m.report.json"
        lim_var="TUNE_LIMIT_S_$m"  # e.g. TUNE_LIMIT_S_C=200: that model's own limit
        lim=${!lim_var:-$TUNE_LIMIT_S}
        if [ "$lim" = "$TUNE_LIMIT_S" ]; then
            local_s=$TUNE_LOCAL_BUDGET_S deadline_s=$TUNE_DEADLINE_S
        else
            local_s=$((lim * 54 / 100)) deadline_s=$((lim * 3 / 4))
        fi
        step "tune-$m" "$lim" python3 -m recflex.tune --model "$m" --out "$T/tuned-$m.json" \
            --batches "$TUNE_BATCHES" --local-batches 4 --occupancies "$TUNE_OCC" --chunk 32 \
            --jobs "${TUNE_JOBS:-16}" --ablations "$TUNE_ABLATIONS" --mutation-features 4 \
            --mutation-candidates "$MUTATION_CANDIDATES" --local-budget-s "$local_s" \
            --deadline-s "$deadline_s" --rows "$DIR/kernel.jsonl" --quiet
        for f in "tuned-$m.json" "tuned-$m.report.json"; do  # whatever exists, even after a timeout
            [ -f "$T/$f" ] && cp "$T/$f" "$DIR/$f"
        done
        python3 - "$T/tuned-$m.report.json" <<'PY' 2>&1 | tee -a "$LOG"
import json, sys
try:
    r = json.load(open(sys.argv[1]))
except (OSError, ValueError) as e:
    sys.exit(f"no tuning report: {e}")
keys = ("model", "stage", "error", "clusters", "candidates", "occupancies", "occupancy",
        "global_curve", "wall_s", "local_s", "global_s", "compiles", "compile_s", "cache_hits",
        "total_s", "ablations_failed", "stages")
print(json.dumps({k: r.get(k) for k in keys if k in r}, indent=1))
ab = r.get("ablations", {})
print("ablations:", json.dumps({k: v for k, v in ab.items() if k in ("binding", "dispatch")}))
if "naive" in ab:
    print(f"naive: {ab['naive']['cost']:.1f} vs two-stage {r.get('cost', float('nan')):.1f}")
for mu in ab.get("mutation", []):
    print(f"mutation {mu['feature']}: chosen ranks {mu['rank_of_chosen']} of {len(mu['costs'])}")
print("local_scores rows:", len(r.get("local_scores", [])), "tuner notes:", r.get("tuner_notes"))
print("notes:", r.get("notes", [])[:10])
PY
        [ -f "$T/tuned-$m.json" ] && [ "${TUNE_BENCH:-1}" = 1 ] && step "bench-tuned-$m" 200 python3 -m recflex.bench \
            --model "$m" --plan "$T/tuned-$m.json" --batches "$BATCHES" --repeats "$REPEATS" \
            --out "$DIR/kernel.jsonl"
        done ;;
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
