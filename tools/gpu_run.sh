#!/usr/bin/env bash
# Run every package's benchmarks/gpu_check.sh on the GPU machine, one after another, each under a
# time limit, and pack each package's output as $OUT/<dist>.tgz (the device tool returns at most
# 8 files). Usage on the GPU machine, from the repo root:  bash tools/gpu_run.sh [DIST...]
# FBGEMM/TorchRec come from .device (tools: ../shared/tools/fbgemm-for-device) when it is carried.
set -u
: "${OUT:?OUT must name the folder whose files come back}"
export PYTHONPATH=$(ls -d packages/*/src | tr '\n' ':')${PYTHONPATH:+:$PYTHONPATH}
if [[ -f .device/fbgemm_unpack.py ]]; then
  export PYTHONPATH=$(python3 .device/fbgemm_unpack.py .device):$PYTHONPATH
fi
# Wheels the GPU machine lacks (highspy, xgboost-cpu), carried as .whl (see docs in the device tool).
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=$PYTHONPATH:/tmp/site
fi
# The copy on the GPU machine has no .git: pass GIT_COMMIT=$(git rev-parse HEAD) so result rows
# name the commit they measured (rec_common.results reads it).
export GIT_COMMIT=${GIT_COMMIT:-}
export PYTHONUNBUFFERED=1 EMB_KERNELS_CACHE=${EMB_KERNELS_CACHE:-$PWD/.emb_cache}
LIMIT=${GPU_CHECK_LIMIT_S:-240}
dists=("$@")
[[ ${#dists[@]} -eq 0 ]] && dists=($(ls packages | grep -v '^_'))
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv | tee "$OUT/gpu_run.log"
for d in "${dists[@]}"; do
  script=packages/$d/benchmarks/gpu_check.sh
  [[ -f $script ]] || { echo "== $d: no $script" | tee -a "$OUT/gpu_run.log"; continue; }
  work=$(mktemp -d)
  start=$(date +%s)
  echo "== $d: start" | tee -a "$OUT/gpu_run.log"
  OUT=$work timeout -k 10 "$LIMIT" bash "$script" > "$work/stdout.log" 2>&1
  rc=$?
  echo "== $d: rc=$rc in $(( $(date +%s) - start )) s" | tee -a "$OUT/gpu_run.log"
  tail -n 25 "$work/stdout.log" | sed "s/^/[$d] /" | tee -a "$OUT/gpu_run.log"
  tar -czf "$OUT/$d.tgz" -C "$work" .
done
