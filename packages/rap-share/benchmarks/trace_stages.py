"""Where a DLRM step's stages leave the GPU idle: the stage profile of ``rap_share.profile``
(one probe unit, each stage in turn) traced with ``torch.profiler``, then, per stage, the
trainer stream's GPU busy time against the stage's GPU span (first kernel start to last
kernel end of the kernels launched in that stage).

A stage whose busy time is far below its span is paced by the host: preprocessing kernels
fit into its idle GPU time, and a co-run "stretch" measured on it is mostly host jitter.

    PYTHONPATH=$(ls -d packages/*/src | tr '\\n' ':') \\
        python packages/rap-share/benchmarks/trace_stages.py OUT [BATCH]

Writes OUT/trace.json.gz (chrome://tracing) and prints one line per (probe stage, stage).
"""

from __future__ import annotations

import bisect
import collections
import gzip
import json
import os
import statistics
import sys

import torch

from rap_share import profile

MARK = "STAGE:"


def traced(out: str, batch: int) -> str:
    """Run the one-unit stage profile twice (the first warms captures and the allocator) and
    trace the second; returns the gzipped chrome trace's path."""
    os.makedirs(out, exist_ok=True)
    cuda = torch.cuda.is_available()
    dev = torch.device("cuda:0" if cuda else "cpu")
    hook = profile._Recorder.__call__

    def marked(self, stage):
        with torch.profiler.record_function(f"{MARK}{stage}:{self.probe_stage}"):
            pass
        return hook(self, stage)

    profile._Recorder.__call__ = marked
    try:
        args = (dev, batch, [1], 3, 2, 1_000_000, 128)
        profile.profile_stages(*args, progress=False, graphs=cuda)
        acts = [torch.profiler.ProfilerActivity.CPU]
        if cuda:
            acts.append(torch.profiler.ProfilerActivity.CUDA)
        with torch.profiler.profile(activities=acts) as prof:
            profile.profile_stages(*args, progress=False, graphs=cuda)
    finally:
        profile._Recorder.__call__ = hook
    raw = os.path.join(out, "trace.json")
    prof.export_chrome_trace(raw)
    with open(raw, "rb") as f, gzip.open(raw + ".gz", "wb") as g:
        g.write(f.read())
    os.remove(raw)
    return raw + ".gz"


def busy_vs_span(trace: dict) -> dict[tuple[str, str], list[tuple[float, float]]]:
    """``(probe stage, stage) -> [(span_us, busy_us), ...]`` over the traced steps, for the
    kernels of the trainer's stream (the stream that ran the most kernels)."""
    ev = trace["traceEvents"]
    marks = sorted((e for e in ev if e.get("name", "").startswith(MARK)), key=lambda e: e["ts"])
    launch = {e["args"]["correlation"]: e["ts"] for e in ev
              if e.get("cat") == "cuda_runtime" and "correlation" in e.get("args", {})}  # fmt: skip
    kernels = [e for e in ev if e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset")]
    if not kernels:
        return {}
    main = collections.Counter(k["args"].get("stream") for k in kernels).most_common(1)[0][0]
    starts = [m["ts"] for m in marks]
    by_mark = collections.defaultdict(list)
    for k in kernels:
        t = launch.get(k["args"].get("correlation"))
        if k["args"].get("stream") == main and t is not None:
            i = bisect.bisect_right(starts, t) - 1
            if i >= 0:
                by_mark[i].append(k)
    out = collections.defaultdict(list)
    for i, m in enumerate(marks):
        ks = by_mark.get(i)
        if ks:
            stage, probe_stage = m["name"][len(MARK) :].split(":", 1)
            span = max(k["ts"] + k["dur"] for k in ks) - min(k["ts"] for k in ks)
            out[(probe_stage, stage)].append((span, sum(k["dur"] for k in ks)))
    return out


def main(argv: list[str]) -> int:
    if not argv or len(argv) > 2:
        print(__doc__, file=sys.stderr)
        return 2
    path = traced(argv[0], int(argv[1]) if len(argv) > 1 else 4096)
    with gzip.open(path) as f:
        rows = busy_vs_span(json.load(f))
    if not rows:
        print(f"no GPU kernels in {path} (no CUDA device?)")
    for (probe_stage, stage), v in sorted(rows.items()):
        span = statistics.median(x[0] for x in v)
        busy = statistics.median(x[1] for x in v)
        print(
            f"probe in {probe_stage:9s} stage {stage:9s} GPU span {span:7.0f} us  "
            f"busy {busy:6.0f} us ({busy / span:4.0%})  steps {len(v)}"
        )
    print(f"trace: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
