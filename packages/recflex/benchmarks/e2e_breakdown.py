"""Where an end-to-end (lookup + MLP) batch spends its time, per variant (GPU machine).

``python -m recflex.bench --e2e`` reports one latency per batch; this script splits it for a
few batches: the batch size, the host time to enqueue the lookup, the lookup's GPU time, the
MLP's GPU time, and the whole forward with a synchronize around each call, then the top CUDA
kernels of one forward from the profiler. It exists to explain a gap between the summed
kernel times and the e2e latencies.

    python packages/recflex/benchmarks/e2e_breakdown.py --model C --batches 8 \
        --variants recflex,fbgemm-tbe
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import statistics
import time

import torch

from recflex import bench, e2e


def _gpu_us(fn, *a):
    torch.cuda.synchronize()
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    t0 = time.perf_counter()
    s.record()
    out = fn(*a)
    host = (time.perf_counter() - t0) * 1e6
    e.record()
    torch.cuda.synchronize()
    return out, s.elapsed_time(e) * 1e3, host


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="C")
    ap.add_argument("--batches", type=int, default=8)
    ap.add_argument("--variants", default="recflex,fbgemm-tbe")
    ap.add_argument("--plan", default="default")
    ap.add_argument("--occupancy", type=int, default=None)
    ap.add_argument("--dispatch", default="if-else")
    ap.add_argument("--out", default=None, help="JSON file for the per-batch numbers")
    args = ap.parse_args()
    dev = torch.device("cuda")
    w, plan, tables, host, _common = bench._test_batches(args.model, args, print, dev)
    mlp = e2e.make_mlp(w.sum_dims, device=dev)
    report = {}
    for name in args.variants.split(","):
        prepare, lookup, _emb = bench.make_variant(name, tables, plan, args.dispatch)
        staged = [prepare(p) for p in host]
        for s in staged:  # warm-up
            with torch.no_grad():
                mlp(lookup(s))
        rows = []
        for i, s in enumerate(staged):
            with torch.no_grad():
                emb_out, lk_gpu, lk_host = _gpu_us(lookup, s)
                _, mlp_gpu, _ = _gpu_us(mlp, emb_out)
                _, fwd_gpu, fwd_host = _gpu_us(e2e.forward_fn(lookup, mlp), s)
            rows.append(
                {
                    "batch": i,
                    "B": int(emb_out.shape[0]),
                    "lookup_host_us": round(lk_host, 1),
                    "lookup_gpu_us": round(lk_gpu, 1),
                    "mlp_gpu_us": round(mlp_gpu, 1),
                    "forward_gpu_us": round(fwd_gpu, 1),
                    "forward_host_us": round(fwd_host, 1),
                }
            )
            print(name, rows[-1])
        prof_host = cProfile.Profile()  # host side of the lookup, 20 calls
        with torch.no_grad():
            prof_host.enable()
            for i in range(20):
                lookup(staged[i % len(staged)])
            prof_host.disable()
        torch.cuda.synchronize()
        buf = io.StringIO()
        pstats.Stats(prof_host, stream=buf).sort_stats("tottime").print_stats(15)
        print(f"--- {name}: host time of 20 lookups (cProfile, by own time)\n{buf.getvalue()}")
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            with torch.no_grad():
                for s in staged[:2]:
                    mlp(lookup(s))
            torch.cuda.synchronize()
        table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=12)
        print(f"--- {name}: top CUDA kernels over 2 forwards\n{table}")
        med = {k: statistics.median(r[k] for r in rows) for k in rows[0] if k != "batch"}
        print(f"=== {name} medians: {med}")
        report[name] = {"rows": rows, "medians": med, "profile": table}
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
