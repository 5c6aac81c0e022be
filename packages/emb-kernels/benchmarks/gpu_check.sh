#!/usr/bin/env bash
# Everything emb-kernels needs from a GPU machine, in one call of at most ~6 minutes (run from
# the repo root; no pip, no network): build the NVRTC modules, the gpu tests, the resource
# report, the MICRO'24 benchmark + figure, the anchors (with FBGEMM TBE when .device/ holds
# the pack from shared/tools/fbgemm-for-device), the fast-knob sweep on the anchors, the
# register-cap and prefetch sweeps, DLRM
# end to end, then (if time is left) ncu's L2 hit rates and compute-sanitizer.
#
#   OUT=/tmp/out bash packages/emb-kernels/benchmarks/gpu_check.sh
#
# Writes 3 files under $OUT/emb-kernels/: run.log, micro24.png and results.tar.gz (micro24,
# anchors, sweep-fast, sweeps, dlrm .jsonl, report.json, ncu*.csv when ncu ran). STEPS="..." runs a
# subset; "ncu-anchors" (not in the default list) profiles fast against FBGEMM on two anchors.
set -uo pipefail
cd "$(dirname "$0")/../../.."
OUT=${OUT:-$PWD/gpu-out}
DEST="$OUT/emb-kernels"
WORK=$(mktemp -d)
mkdir -p "$DEST"
export PYTHONPATH=$(ls -d packages/*/src | tr '\n' ':')${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1
export EMB_KERNELS_CACHE=${EMB_KERNELS_CACHE:-$PWD/.emb_cache}
export GIT_COMMIT=${GIT_COMMIT:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}
LOG="$DEST/run.log"
: >"$LOG"
STEPS=${STEPS:-"env fbgemm build tests report micro24 anchors sweep-fast sweeps dlrm ncu sanitizer"}
BUDGET_S=${BUDGET_S:-330}  # optional steps (ncu, sanitizer) start only before this
status=0
T0=$SECONDS

step() {  # step NAME TIMEOUT_S CMD...: run, log, remember a failure, go on
    local name=$1 limit=$2
    shift 2
    echo "=== $name (t=$((SECONDS - T0)) s): $*" | tee -a "$LOG"
    local t0=$SECONDS
    timeout "$limit" "$@" 2>&1 | tee -a "$LOG"
    local rc=${PIPESTATUS[0]}
    echo "=== $name: rc=$rc in $((SECONDS - t0)) s" | tee -a "$LOG"
    [ "$rc" -eq 0 ] || status=1
}

optional() {  # optional NAME: true when there is time left for an optional step
    if [ $((SECONDS - T0)) -ge "$BUDGET_S" ]; then
        echo "=== $1: skipped, $((SECONDS - T0)) s used of the ${BUDGET_S} s budget" | tee -a "$LOG"
        return 1
    fi
}

for s in $STEPS; do
    case $s in
    env)
        step env 60 bash -c 'nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,clocks.max.mem,driver_version --format=csv;
            python3 -c "import torch, cuda.bindings, numpy; from cuda.bindings import nvrtc
p = torch.cuda.get_device_properties(0)
print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, \"nvrtc\", nvrtc.nvrtcVersion()[1:], \"numpy\", numpy.__version__)
print(p.name, \"SMs\", p.multi_processor_count, \"L2 MiB\", getattr(p, \"L2_cache_size\", 0) / 2**20, \"mem GiB\", round(p.total_memory / 2**30, 1))
from emb_kernels import occupancy, l2p
print(\"OptMT device cap\", occupancy.device_register_cap(0), \"persisting L2 max MiB\", l2p.persisting_l2_max_bytes() / 2**20)"' ;;
    fbgemm)
        # FBGEMM/TorchRec packed by the lead into .device/ (shared/tools/fbgemm-for-device)
        if ls .device/fbgemm-*.tar.xz >/dev/null 2>&1; then
            if FB=$(python3 .device/fbgemm_unpack.py .device 2>>"$LOG"); then
                export PYTHONPATH="$FB:$PYTHONPATH"
                step fbgemm-import 60 python3 -c "from rec_common import fbgemm_tbe; print(fbgemm_tbe.status())"
            else
                echo "=== fbgemm: unpacking .device failed; FBGEMM baseline skipped" | tee -a "$LOG"
            fi
        else
            echo "=== fbgemm: no .device/fbgemm-*.tar.xz here; FBGEMM baseline skipped" | tee -a "$LOG"
        fi ;;
    build)
        step build 150 python3 -m emb_kernels.build --caps 32,40,42,48,56,64,none --jobs 12 ;;
    tests)
        step tests 120 python3 -m pytest packages/emb-kernels -m gpu --maxfail=10 -q -p no:cacheprovider ;;
    report)
        step report 60 python3 -m emb_kernels.report --json "$WORK/report.json" ;;
    micro24)
        step micro24 120 python3 -m emb_kernels.bench --workload micro24 \
            --hotness high,medium,low,random --plot --on-mismatch skip --out "$WORK/micro24.jsonl"
        [ -f "$WORK/micro24.png" ] && cp "$WORK/micro24.png" "$DEST/micro24.png" ;;
    anchors)
        step anchors 150 python3 -m emb_kernels.bench --workload anchors \
            --on-mismatch skip --out "$WORK/anchors.jsonl" ;;
    sweep-fast)
        # the fast kernel's opt-in knobs (split, seg_unroll, coop, hints...) next to fast,
        # torch and FBGEMM on the four anchor workloads, each output checked before timing;
        # rows written per workload, so a timeout keeps the finished ones
        step sweep-fast 90 python3 -m emb_kernels.bench --workload anchors --sweep fast \
            --repeats 5 --on-mismatch skip --out "$WORK/sweep-fast.jsonl" ;;
    sweeps)
        step sweep-registers 60 python3 -m emb_kernels.bench --workload micro24 \
            --hotness random,high --sweep registers --batches 4 --repeats 2 --on-mismatch skip \
            --out "$WORK/sweeps.jsonl"
        step sweep-prefetch 60 python3 -m emb_kernels.bench --workload micro24 \
            --hotness random,high --sweep prefetch --batches 4 --repeats 2 --on-mismatch skip \
            --out "$WORK/sweeps.jsonl" ;;
    dlrm)
        step dlrm 90 python3 -m emb_kernels.bench --workload dlrm --hotness random,high \
            --on-mismatch skip --out "$WORK/dlrm.jsonl" ;;
    ncu)
        # L2 hit rate and achieved occupancy per variant, application replay (no per-kernel
        # serialization and cache restore between the pin and the lookup)
        if ! command -v ncu >/dev/null; then
            echo "=== ncu: not installed here; no L2 hit-rate evidence in this run" | tee -a "$LOG"
        elif optional ncu; then
            step ncu 90 ncu --nvtx --print-nvtx-rename kernel --replay-mode application \
                --cache-control none --clock-control none --kernel-name "regex:ek_(base|rpf|fast)" \
                --metrics lts__t_sector_hit_rate.pct,sm__warps_active.avg.pct_of_peak_sustained_active,dram__bytes_read.sum,gpu__time_duration.sum \
                --csv --log-file "$WORK/ncu.csv" \
                python3 -m emb_kernels.bench --workload micro24 --hotness high,random \
                --variants baseline,optmt,optmt@cap42,l2p+optmt,combined,fast \
                --batches 1 --num-tables 2 --repeats 1 --warmup-runs 0 --fbgemm off \
                --on-mismatch skip --out "$WORK/ncu_bench.jsonl"
        fi ;;
    ncu-anchors)
        # where fast loses to the inference TBE (MLPerf multi-hot, the uniform anchor): DRAM
        # bytes, L2/L1 hit rates, occupancy and instructions of both kernels, same inputs
        if ! command -v ncu >/dev/null; then
            echo "=== ncu-anchors: ncu not installed here" | tee -a "$LOG"
        else
            for wl in mlperf-multihot anchor-1table; do
                step "ncu-$wl" 150 ncu --replay-mode application --cache-control none \
                    --clock-control none --kernel-name "regex:ek_fast|nbit|split_embedding" \
                    --metrics gpu__time_duration.sum,dram__bytes_read.sum,lts__t_sector_hit_rate.pct,lts__t_sectors_op_read.sum,l1tex__t_sector_hit_rate.pct,sm__warps_active.avg.pct_of_peak_sustained_active,smsp__inst_executed.sum,launch__registers_per_thread,launch__grid_size,launch__block_size,dram__throughput.avg.pct_of_peak_sustained_elapsed \
                    --csv --log-file "$WORK/ncu-$wl.csv" \
                    python3 -m emb_kernels.bench --workload "$wl" --skew uniform \
                    --variants "${NCU_VARIANTS:-fast,fbgemm}" \
                    --batches 2 --repeats 2 --warmup-runs 0 --on-mismatch skip \
                    --out "$WORK/ncu_bench.jsonl"
            done
        fi ;;
    sanitizer)
        # compute-sanitizer memcheck: bad ids with validation off must not read stray memory
        if command -v compute-sanitizer >/dev/null && optional sanitizer; then
            step sanitizer 90 compute-sanitizer --tool memcheck --report-api-errors no --error-exitcode 3 python3 -c '
import torch, emb_kernels
ids = torch.randint(0, 1000, (3000,), device="cuda"); ids[::97] = 5000; ids[5] = -3
w = torch.randn(1000, 64, device="cuda")
for step in (30, 1, 300):  # warp/segmented, one-hot segmented and block modes of fast
    offs = torch.arange(0, 3000, step, device="cuda")
    for v in emb_kernels.VARIANTS:
        try:
            emb_kernels.embedding_bag(w, ids, offs, variant=v, validate=False, hot_rows=[1, 2, 999] if v in ("l2p", "combined") else None)
            emb_kernels.check_errors()
        except ValueError as e:
            print(step, v, "reported:", str(e)[:90])
from emb_kernels import errors, ops
w = torch.randn(1000, 128, device="cuda")
for step in (10, 100):  # the opt-in fast paths: coop (and K > 1), split bags, seg_unroll=8, async_rows
    offs = torch.arange(0, 3000, step, device="cuda")
    for fo in ({"coop": True, "block_warps": 0}, {"split": 4, "split_min_pooling": 1},
               {"split": 8, "split_min_pooling": 1, "coop": True}, {"seg_unroll": 8, "coop": True},
               {"async_rows": 16}, {"async_rows": 8, "segment_bags": 3},
               {"async_rows": 8, "async_only": False}):
        l = ops.make_launcher(w, ids, offs, "sum", variant="fast", validate_input=False, fast=fo)
        l()
        errors.watch(w.device, lambda t, p: f"bad id at {p}")
        try:
            emb_kernels.check_errors()
        except ValueError as e:
            print(step, fo, "reported:", e)
torch.cuda.synchronize(); print("sanitizer run done")'
        fi ;;
    esac
done

python3 - "$WORK" <<'EOF' | tee -a "$LOG"
import json, pathlib, sys
work = pathlib.Path(sys.argv[1])
for name in ("micro24.jsonl", "anchors.jsonl", "sweep-fast.jsonl", "sweeps.jsonl", "dlrm.jsonl"):
    p = work / name
    if not p.exists():
        continue
    rows = [json.loads(l) for l in p.read_text().splitlines() if l.strip()]
    print(f"--- {name}: latency (us), ratio vs baseline; gather TB/s (copy fraction); pin")
    key = lambda r: (r["workload"], r["variant"])
    bw = {key(r): r for r in rows if r["metric"] == "gather_bandwidth"}
    pin = {key(r): r for r in rows if r["metric"] == "latency_pin_amortized"}
    for r in rows:
        if r["metric"] == "copy_bandwidth":
            print(f"{r['workload']:26s} {'copy':22s} {r['value']:.3f} TB/s (device-to-device)")
        if r["metric"] not in ("kernel_latency", "e2e_latency", "embedding_latency"):
            continue
        ratio = f"{r['ratio']:.2f}x" if r.get("ratio") else "-"
        b = bw.get(key(r))
        extra = f"{b['value']:6.3f} TB/s" if b else ""
        if b and b.get("copy_fraction"):
            extra += f" ({b['copy_fraction']:.0%} of copy)"
        if key(r) in pin:
            a = pin[key(r)]
            extra += f" amortized pin (K={a['pin_amortized_over']}) {a['value']:.1f}"
        if r["metric"] != "kernel_latency":
            extra = r["metric"] + (f" {r['speedup_vs_torch']:.2f}x torch" if r.get("speedup_vs_torch") else "")
        print(f"{r['workload']:26s} {r['variant']:22s} {r['value']:9.1f} {ratio:>6s} {extra} "
              f"regs={r.get('registers', '-')} cap={r.get('register_cap', '-')}")
EOF
( cd "$WORK" && ls ./*.jsonl ./*.json ./*.csv 2>/dev/null | grep -v ncu_bench | tar czf "$DEST/results.tar.gz" -T - ) \
    && echo "results.tar.gz: $(tar tzf "$DEST/results.tar.gz" | tr '\n' ' ')" | tee -a "$LOG"
rm -rf "$WORK"
echo "gpu_check: status=$status in $((SECONDS - T0)) s (see $LOG)" | tee -a "$LOG"
exit $status
