#!/usr/bin/env bash
# rap-share on a GPU machine, in one call (run from anywhere; a few minutes on one H200):
# the gpu tests (every gpu-marked test, the CUDA-graph path's included), the cost-model
# profile at a reduced grid (fused-kernel latency + stage capacity, regressors fitted and
# scored), and plan0 planned with that model and trained for a few steps with and without
# co-running, then figures 9 and 10 (rap_share.figures, reduced steps: RAP_FIG_STEPS /
# RAP_FIG_WARMUP). Tests and figures run the default path, CUDA graphs (the default since the
# H200 measurement of 2026-11-30; RAP_SHARE_GRAPHS=0 / --no-graphs is the eager path). Writes
# three files under $OUT/rap-share/:
#   run.log        everything printed (tests, accuracy, plan summary, throughput rows)
#   profile.json   the measured profile; commit it to src/rap_share/profiles/ and fit the
#                  xgboost model with: python -m rap_share.costmodel fit profile.json --out ...
#   figures.tar.gz results/figure9.jsonl, figure10.jsonl, *.png and docs/figures.md
# EAGER=1 adds, after all of the above (figures.tar.gz is already written), the eager path
# for comparison: figures 9 and 10 with --no-graphs, each in its own processes, rows into a
# fourth file:
#   eager.tar.gz   results/figure9.jsonl, figure10.jsonl, *.png, docs/figures.md of --no-graphs
# EAGER=only runs just the env step and the eager steps (figures plan with the shipped model).
# PRIORITY=1 adds figure 10 with --trainer-priority high (unmeasured) into priority.tar.gz.
#
# Carry .whl/ (highspy and xgboost-cpu wheels, git-ignored) with the device tool: the GPU
# machine has neither, and the figures need highspy to plan.
#
#   OUT=/tmp/out bash packages/rap-share/benchmarks/gpu_check.sh
#   OUT=/tmp/out EAGER=1 bash packages/rap-share/benchmarks/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/../../.."
OUT=${OUT:-$PWD/gpu-out}
DEST="$OUT/rap-share"
mkdir -p "$DEST"
export PYTHONPATH=$(ls -d packages/*/src | tr '\n' ':')${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1
# wheels the GPU machine lacks (highspy for the MILP, xgboost-cpu), when carried as .whl/
# (see docs/developing.md); without highspy the figures cannot plan and fail
if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site \
        .whl/*.whl && export PYTHONPATH=$PYTHONPATH:/tmp/site
fi
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
EAGER=${EAGER:-0}
MODEL=""
if [ "$EAGER" != only ]; then
# every gpu-marked test, test_graphs.py's CUDA-graph tests included (they run by default)
step tests 360 python3 -m pytest packages/rap-share -m gpu -q -p no:cacheprovider --maxfail=10
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
# the eager path (Config(graphs=False) / --no-graphs / RAP_SHARE_GRAPHS=0) for comparison,
# after the default results are packed: a failure here cannot lose them
if [ "$EAGER" != 0 ]; then
    dstatus=$status
    status=0
    E="$TMP/eager"
    mkdir -p "$E"
    EFIGARGS="--no-graphs --steps ${RAP_FIG_STEPS:-30} --warmup ${RAP_FIG_WARMUP:-5} --out-dir $E/results --docs $E/docs/figures.md"
    [ -n "$MODEL" ] && EFIGARGS="$EFIGARGS --cost-model $MODEL"
    step eager-figure9 90 python3 -m rap_share.figures figure9 $EFIGARGS
    step eager-figure10 130 python3 -m rap_share.figures figure10 $EFIGARGS
    tar -czf "$DEST/eager.tar.gz" -C "$E" results docs 2>/dev/null || status=1
    echo "gpu_check: default steps status=$dstatus, eager steps status=$status" | tee -a "$LOG"
    status=$((dstatus | status))
fi
# PRIORITY=1: figure 10 again with the trainer on high-priority streams (--trainer-priority
# high, every variant), into priority.tar.gz: does the stage stretch of RAP shrink?
if [ "${PRIORITY:-0}" != 0 ]; then
    P="$TMP/priority"
    mkdir -p "$P"
    PFIGARGS="--trainer-priority high --steps ${RAP_FIG_STEPS:-30} --warmup ${RAP_FIG_WARMUP:-5} --out-dir $P/results --docs $P/docs/figures.md"
    [ -n "$MODEL" ] && PFIGARGS="$PFIGARGS --cost-model $MODEL"
    step priority-figure10 130 python3 -m rap_share.figures figure10 $PFIGARGS
    tar -czf "$DEST/priority.tar.gz" -C "$P" results docs 2>/dev/null || status=1
fi
rm -rf "$TMP"
echo "gpu_check: status=$status (see $LOG)" | tee -a "$LOG"
exit $status
