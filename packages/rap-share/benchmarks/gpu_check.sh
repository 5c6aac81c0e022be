#!/usr/bin/env bash
# rap-share on a GPU machine, in one call (run from anywhere; < 3 minutes on one H200):
# the gpu tests, the cost-model profile at a reduced grid (fused-kernel latency + stage
# capacity, regressors fitted and scored), and plan0 planned with that model and trained for a
# few steps with and without co-running, then figures 9 and 10 (rap_share.figures, reduced
# steps: RAP_FIG_STEPS / RAP_FIG_WARMUP). Writes three files under $OUT/rap-share/:
#   run.log       everything printed (tests, accuracy, plan summary, throughput rows)
#   profile.json  the measured profile; commit it to src/rap_share/profiles/ and fit the
#                 xgboost model with: python -m rap_share.costmodel fit profile.json --out ...
#   figures.tar.gz results/figure9.jsonl, figure10.jsonl, *.png and docs/figures.md
# GRAPHS=1 adds, after all of the above (figures.tar.gz is already written), the opt-in
# CUDA-graph path (unmeasured; see the package README): its gpu tests and figures 9 and 10
# with --graphs, each in its own processes, rows into a fourth file:
#   graphs.tar.gz  results/figure9.jsonl, figure10.jsonl, *.png, docs/figures.md of --graphs
# GRAPHS=only runs just the env step and the opt-in steps (figures plan with the shipped model).
#
#   OUT=/tmp/out bash packages/rap-share/benchmarks/gpu_check.sh
#   OUT=/tmp/out GRAPHS=1 bash packages/rap-share/benchmarks/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/../../.."
OUT=${OUT:-$PWD/gpu-out}
DEST="$OUT/rap-share"
mkdir -p "$DEST"
export PYTHONPATH=$(ls -d packages/*/src | tr '\n' ':')${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1
LOG="$DEST/run.log"
TMP=$(mktemp -d)
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

step env 60 bash -c 'nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv;
    python3 -c "import torch, numpy; print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, \"numpy\", numpy.__version__)
for m in (\"highspy\", \"xgboost\", \"jinja2\", \"gurobipy\", \"cudf\"):
    try:
        __import__(m); print(m, \"ok\")
    except Exception as e:
        print(m, \"missing:\", type(e).__name__)"'
GRAPHS=${GRAPHS:-0}
MODEL=""
if [ "$GRAPHS" != only ]; then
step tests 240 python3 -m pytest packages/rap-share -m gpu -q -p no:cacheprovider --maxfail=10
step profile 300 python3 -m rap_share.profile --out "$TMP/prof" --quick
cp "$TMP/prof/profile.json" "$DEST/profile.json" 2>/dev/null || status=1
MODEL=$(ls "$TMP"/prof/*.model.json 2>/dev/null | head -1)
if [ -n "$MODEL" ]; then
    step evaluate 60 python3 -m rap_share.costmodel evaluate "$TMP/prof/profile.json" --model "$MODEL"
    # plan0 on one GPU with the measured model; needs highspy for the MILP, else greedy levels
    SOLVER=highs
    python3 -c "import highspy" 2>/dev/null || SOLVER=greedy
    step plan 120 python3 -m rap_share.plan --script plan0 --gpus 1 --batch 4096 --out "$TMP/plan0" \
        --cost-model "$MODEL" --solver "$SOLVER" --max-table-rows 2000000 --rows 65536
    if [ -f "$TMP/plan0/train.py" ]; then
        step train-rap 90 python3 "$TMP/plan0/train.py" --steps 50 --warmup 10
        step train-no-overlap 90 python3 "$TMP/plan0/train.py" --steps 50 --warmup 10 --no-overlap
    fi
fi
# figures 9 and 10 (reduced steps; MPS started by the driver when it can be), then pack the
# results rows, plots and the docs page into one archive
FIGARGS="--steps ${RAP_FIG_STEPS:-30} --warmup ${RAP_FIG_WARMUP:-5} --out-dir $TMP/results --docs $TMP/docs/figures.md"
# plan with the model measured above in this run (not the shipped, stale profile)
[ -n "$MODEL" ] && FIGARGS="$FIGARGS --cost-model $MODEL"
step figure9 90 python3 -m rap_share.figures figure9 $FIGARGS
step figure10 130 python3 -m rap_share.figures figure10 $FIGARGS
tar -czf "$DEST/figures.tar.gz" -C "$TMP" results docs 2>/dev/null || status=1
fi
# the opt-in path (Config.graphs / --graphs / RAP_SHARE_GRAPHS=1), after the default results
# are packed: a crash here (run 2 had NaN losses and an illegal address) cannot lose them
if [ "$GRAPHS" != 0 ]; then
    dstatus=$status
    status=0
    G="$TMP/graphs"
    mkdir -p "$G"
    step graphs-tests 240 env RAP_SHARE_GRAPHS=1 python3 -m pytest -m gpu -q -p no:cacheprovider \
        --maxfail=10 packages/rap-share/tests/test_graphs.py packages/rap-share/tests/test_corun.py
    GFIGARGS="--graphs --steps ${RAP_FIG_STEPS:-30} --warmup ${RAP_FIG_WARMUP:-5} --out-dir $G/results --docs $G/docs/figures.md"
    [ -n "$MODEL" ] && GFIGARGS="$GFIGARGS --cost-model $MODEL"
    step graphs-figure9 90 python3 -m rap_share.figures figure9 $GFIGARGS
    step graphs-figure10 130 python3 -m rap_share.figures figure10 $GFIGARGS
    tar -czf "$DEST/graphs.tar.gz" -C "$G" results docs 2>/dev/null || status=1
    echo "gpu_check: default steps status=$dstatus, opt-in graph steps status=$status" | tee -a "$LOG"
    status=$((dstatus | status))
fi
rm -rf "$TMP"
echo "gpu_check: status=$status (see $LOG)" | tee -a "$LOG"
exit $status
