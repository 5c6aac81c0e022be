"""Summed GPU kernel time over a list of batches, the paper's metric.

RecFlex reports the sum of kernel durations over the 128 test batches (``nsys stats
gpukernsum``): host preprocessing, copies and launch gaps are not counted. Here the CUDA
kernels a variant launches are recorded with the PyTorch profiler (CUPTI) and their device
durations summed; memsets launched by the variant count too. When the profiler cannot
record kernels, CUDA events around each batch give device time including launch gaps
(``method`` says which).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch


def _profile_kernels(run: Callable[[object], object], staged: Sequence[object]) -> float | None:
    from torch.profiler import ProfilerActivity, profile

    try:
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for s in staged:
                run(s)
            torch.cuda.synchronize()
    except Exception:  # CUPTI unavailable or busy
        return None
    from torch.autograd import DeviceType

    total = 0.0
    seen = 0
    try:  # the raw kineto events: no FunctionEvent tree for tens of thousands of kernels
        events = [(e.name(), e.device_type(), e.duration_ns() / 1e3)
                  for e in prof.profiler.kineto_results.events()]  # fmt: skip
    except AttributeError:
        events = [(e.name, e.device_type, e.time_range.elapsed_us()) for e in prof.events()]
    for name, dev, us in events:
        if dev != DeviceType.CUDA or "memcpy" in name.lower():
            continue
        total += float(us)
        seen += 1
    return total if seen else None


def _events(run: Callable[[object], object], staged: Sequence[object]) -> float:
    starts = [torch.cuda.Event(enable_timing=True) for _ in staged]
    ends = [torch.cuda.Event(enable_timing=True) for _ in staged]
    torch.cuda.synchronize()
    for s, a, b in zip(staged, starts, ends):
        a.record()
        run(s)
        b.record()
    torch.cuda.synchronize()
    return sum(a.elapsed_time(b) for a, b in zip(starts, ends)) * 1e3


def summed_kernel_time(
    run: Callable[[object], object],
    staged: Sequence[object],
    *,
    repeats: int = 3,
    warmup: int = 1,
    method: str = "auto",
) -> tuple[list[float], str]:
    """``repeats`` totals (us) of ``run(s)`` over every ``s`` in ``staged``, and the method
    used (``profiler`` kernel sums or ``events`` per-batch device time)."""
    if not torch.cuda.is_available():
        raise RuntimeError("summed kernel time needs a CUDA GPU")
    if method not in ("auto", "profiler", "events"):
        raise ValueError(f"method: expected auto, profiler or events, got {method!r}")
    for _ in range(warmup):
        for s in staged:
            run(s)
    torch.cuda.synchronize()
    totals: list[float] = []
    used = method
    for _ in range(repeats):
        t = None
        if method in ("auto", "profiler"):
            t = _profile_kernels(run, staged)
            used = "profiler"
            if t is None and method == "profiler":
                raise RuntimeError("the PyTorch profiler recorded no CUDA kernels (CUPTI?)")
        if t is None:
            t = _events(run, staged)
            used = "events"
        totals.append(t)
    return totals, used
