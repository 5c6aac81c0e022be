"""Where a DLRM step's stages leave the GPU idle: the stage profile of ``rap_share.profile``
(one probe unit, each stage in turn) traced with ``torch.profiler``, then, per stage, the
trainer stream's GPU busy time against the stage's GPU span (first kernel start to last
kernel end of the kernels launched in that stage; :mod:`rap_share.stagetrace`).

A stage whose busy time is far below its span is paced by the host: preprocessing kernels
fit into its idle GPU time, and a co-run "stretch" measured on it is mostly host jitter.

    PYTHONPATH=$(ls -d packages/*/src | tr '\\n' ':') \\
        python packages/rap-share/benchmarks/trace_stages.py OUT [BATCH]

Writes OUT/trace.json.gz (chrome://tracing) and prints one line per (probe stage, stage).
"""

from __future__ import annotations

import gzip
import json
import os
import statistics
import sys

import torch

from rap_share import profile, stagetrace


def traced(out: str, batch: int) -> str:
    """Run the one-unit stage profile twice (the first warms captures and the allocator) and
    trace the second with every stage boundary marked; returns the gzipped trace's path."""
    os.makedirs(out, exist_ok=True)
    cuda = torch.cuda.is_available()
    dev = torch.device("cuda:0" if cuda else "cpu")
    args = (dev, batch, [1], 3, 2, 1_000_000, 128)
    kw = {"progress": False, "graphs": cuda, "busy": False, "mark": True}  # no nested trace
    profile.profile_stages(*args, **kw)
    path = os.path.join(out, "trace.json.gz")
    trace = stagetrace.trace(lambda: profile.profile_stages(*args, **kw), 1)
    with gzip.open(path, "wt", encoding="utf-8") as g:
        json.dump(trace, g)
    return path


def main(argv: list[str]) -> int:
    if not argv or len(argv) > 2:
        print(__doc__, file=sys.stderr)
        return 2
    path = traced(argv[0], int(argv[1]) if len(argv) > 1 else 4096)
    with gzip.open(path) as f:
        rows = stagetrace.busy_vs_span(json.load(f))
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
