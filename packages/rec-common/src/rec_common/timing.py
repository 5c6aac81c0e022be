"""Timing a callable the way kernel papers do: warm-up, many runs, median and spread.

On a CUDA device each run is bracketed by CUDA events (device time of the work queued by the
call, launch overhead included); with ``flush_l2=True`` a buffer larger than the L2 cache is
overwritten before every run so each run starts cold. On CPU it falls back to
``time.perf_counter_ns`` around the call.

>>> t = benchmark(lambda: sum(range(1000)), warmup=2, iters=5, device="cpu")
>>> t.n, t.unit
(5, 'us')
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch


@dataclass(frozen=True)
class Timing:
    """Median and 20th/80th percentiles of ``n`` runs, in microseconds."""

    median: float
    p20: float
    p80: float
    n: int
    samples: tuple[float, ...]
    device: str
    unit: str = "us"

    def as_dict(self) -> dict:
        d = asdict(self)
        d.pop("samples")
        return d

    def __str__(self) -> str:
        return f"{self.median:.1f} us (p20 {self.p20:.1f}, p80 {self.p80:.1f}, n={self.n}, {self.device})"


def quantile(samples: list[float] | tuple[float, ...], q: float) -> float:
    """Linear-interpolated quantile, ``q`` in [0, 1] (numpy's default method)."""
    if not samples:
        raise ValueError("quantile of no samples")
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"q must be between 0 and 1, got {q}")
    xs = sorted(samples)
    pos = q * (len(xs) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def summarize(samples_us: list[float], device: str) -> Timing:
    return Timing(
        median=statistics.median(samples_us),
        p20=quantile(samples_us, 0.2),
        p80=quantile(samples_us, 0.8),
        n=len(samples_us),
        samples=tuple(samples_us),
        device=device,
    )


class L2Flusher:
    """Overwrites a buffer twice the size of the GPU's L2 so the next kernel starts cold."""

    def __init__(self, device: torch.device):
        props = torch.cuda.get_device_properties(device)
        l2 = getattr(props, "L2_cache_size", 0) or 64 * 2**20
        self._buf = torch.empty(2 * l2 // 4, dtype=torch.int32, device=device)

    def __call__(self) -> None:
        self._buf.zero_()


def _resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device='cuda' was asked for, but CUDA is not available here")
    return device


def benchmark(
    fn: Callable[[], object],
    *,
    warmup: int = 10,
    iters: int = 100,
    flush_l2: bool = False,
    device: str | torch.device | None = None,
    setup: Callable[[], object] | None = None,
) -> Timing:
    """Time ``fn()`` ``iters`` times after ``warmup`` untimed calls.

    ``device`` defaults to CUDA when present. ``setup`` runs before every timed call,
    outside the timed region (e.g. to reset a cache); so does the L2 flush.
    """
    if iters < 1:
        raise ValueError(f"iters must be >= 1, got {iters}")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    dev = _resolve_device(device)
    for _ in range(warmup):
        if setup is not None:
            setup()
        fn()
    if dev.type == "cuda":
        return _benchmark_cuda(fn, iters, flush_l2, dev, setup)
    samples = []
    for _ in range(iters):
        if setup is not None:
            setup()
        t0 = time.perf_counter_ns()
        fn()
        samples.append((time.perf_counter_ns() - t0) / 1e3)
    return summarize(samples, "cpu")


def _benchmark_cuda(fn, iters, flush_l2, dev, setup) -> Timing:
    flusher = L2Flusher(dev) if flush_l2 else None
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
    torch.cuda.synchronize(dev)
    for i in range(iters):
        if setup is not None:
            setup()
        if flusher is not None:
            flusher()
        starts[i].record()
        fn()
        ends[i].record()
    torch.cuda.synchronize(dev)
    samples = [s.elapsed_time(e) * 1e3 for s, e in zip(starts, ends)]
    return summarize(samples, torch.cuda.get_device_name(dev))
