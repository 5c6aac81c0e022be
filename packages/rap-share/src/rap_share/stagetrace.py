"""A training stage's GPU busy time, from a ``torch.profiler`` trace of a few steps.

A stage hook (:class:`rap_share.profile._Recorder` with ``mark``) opens an empty
``record_function`` named ``STAGE:<stage>:<probe stage>`` at every stage boundary. Each
kernel of the trainer's stream (the stream that ran the most kernels) belongs to the stage in
which the host launched it. Its GPU time counts towards that stage's busy time. The busy time
against the stage's length tells how much of the stage leaves the GPU idle: on one H200 at
batch 4096 the DLRM step's kernels filled 7-45 % of each stage (docs/rap-share/figures.md).
"""

from __future__ import annotations

import bisect
import collections
import json
import os
import statistics
import tempfile
import warnings
from collections.abc import Callable

import torch

MARK = "STAGE:"


def busy_vs_span(trace: dict) -> dict[tuple[str, str], list[tuple[float, float]]]:
    """``(probe stage, stage) -> [(span_us, busy_us), ...]`` over the traced steps: the
    stage's GPU span (first kernel start to last kernel end) and the summed duration of the
    trainer stream's kernels launched in it. Empty when the trace has no kernels."""
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
    return dict(out)


def trace(step: Callable[[], None], n: int) -> dict:
    """The chrome trace (a dict) of ``n`` calls of ``step`` under ``torch.profiler`` (CPU and,
    when present, CUDA activity)."""
    acts = [torch.profiler.ProfilerActivity.CPU]
    if torch.cuda.is_available():
        acts.append(torch.profiler.ProfilerActivity.CUDA)
    with warnings.catch_warnings():
        # torch 2.11 warns once per process that a second profiling cycle clears the first's
        # events; each call here is one cycle, so nothing is lost (pytest makes it an error)
        warnings.filterwarnings("ignore", message=".*Profiler clears events", category=UserWarning)
        with torch.profiler.profile(activities=acts) as prof:
            for _ in range(n):
                step()
    fd, path = tempfile.mkstemp(suffix=".json")
    os.close(fd)
    try:
        prof.export_chrome_trace(path)
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    finally:
        os.remove(path)


def stage_busy_ms(step: Callable[[], None], n: int = 5) -> dict[str, float]:
    """Median GPU busy time (ms) of each stage over ``n`` traced calls of ``step`` (one
    training step whose stage hook marks the boundaries, no probe); ``{}`` without kernels."""
    rows = busy_vs_span(trace(step, n))
    return {
        s: statistics.median(b for _, b in v) / 1e3 for (p, s), v in rows.items() if p == "None"
    }
