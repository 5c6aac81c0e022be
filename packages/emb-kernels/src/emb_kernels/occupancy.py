"""Which register cap OptMT should use on a given GPU: wave arithmetic for the fixed grid.

The baseline kernel always launches ``BASELINE_GRID`` (1024) blocks of 256 threads. A cap
changes how many blocks fit on one SM, hence how many *waves* the grid needs; time drops
only when the wave count drops. The paper's 42 registers is the cap that takes an A100
(108 SMs) from 3 waves to 2; on an H100 or H200 (132 SMs) 42 leaves the grid at 2 waves and
only 32 registers (8 blocks/SM, 1056 resident >= 1024) gets it to 1. So the cap that
matters follows the SM count. :func:`pick_register_cap` keeps the paper's 42 when it already
reaches the fewest waves any candidate cap reaches, and otherwise takes the largest cap that
does (the fewest spills):

>>> pick_register_cap(sm_count=108)  # A100: 42 -> 5 blocks/SM -> 540 resident -> 2 waves
42
>>> pick_register_cap(sm_count=132)  # H100/H200: only 32 -> 8 blocks/SM -> 1 wave
32
>>> waves(1024, 132, blocks_per_sm(42))
2

The register prefetch (RPF) depth goes with the cap (:func:`pick_prefetch_distance`): a
row in flight lives in registers (a 64-bit address and the loaded value); when the cap is
below what the one-lookup kernel needs without spilling, there is no register for a second
row and extra rows become local-memory spills (H200 sweep at cap 32: P1 86.3 us, P2 91.6,
P4 104.7, P8 121.9). Otherwise the depth is what Little's law asks of the resident warps:

>>> pick_prefetch_distance(32)  # H100/H200 cap: no register to spare -> one row
1
>>> pick_prefetch_distance(42)  # 40 warps/SM x P rows >= ~204 rows in flight per SM
8
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

from emb_kernels.constants import (
    BASELINE_BLOCK,
    BASELINE_GRID,
    DEFAULT_MAX_REGISTERS,
    H200_COPY_TBPS,
    PREFETCH_DISTANCES,
    RPF_LOAD_LATENCY_S,
    RPF_MIN_REGISTERS,
    RPF_UNCAPPED_REGISTERS,
    RPF_WARP_ROW_BYTES,
    SWEEP_REGISTER_CAPS,
)

REGISTERS_PER_SM = 65536  # sm_80 .. sm_90
REGISTER_ALLOC_UNIT = 256  # registers are allocated per warp in units of 256
MAX_THREADS_PER_SM = 2048  # sm_80, sm_90 (sm_86/89: 1536)
MAX_BLOCKS_PER_SM = 32


def blocks_per_sm(
    registers: int,
    block_threads: int = BASELINE_BLOCK[0] * BASELINE_BLOCK[1],
    *,
    registers_per_sm: int = REGISTERS_PER_SM,
    max_threads_per_sm: int = MAX_THREADS_PER_SM,
    max_blocks_per_sm: int = MAX_BLOCKS_PER_SM,
) -> int:
    """Blocks of ``block_threads`` that fit on one SM at ``registers`` per thread (no smem)."""
    if registers < 1 or block_threads < 1:
        raise ValueError(
            f"registers and block_threads must be >= 1, got {registers}, {block_threads}"
        )
    warps = math.ceil(block_threads / 32)
    per_warp = math.ceil(registers * 32 / REGISTER_ALLOC_UNIT) * REGISTER_ALLOC_UNIT
    by_regs = (registers_per_sm // per_warp) // warps
    by_threads = max_threads_per_sm // (warps * 32)
    return max(0, min(by_regs, by_threads, max_blocks_per_sm))


def waves(grid: int, sm_count: int, blocks: int) -> int:
    """How many rounds ``grid`` blocks need on ``sm_count`` SMs holding ``blocks`` each."""
    if sm_count < 1 or blocks < 1:
        raise ValueError(f"sm_count and blocks must be >= 1, got {sm_count}, {blocks}")
    return math.ceil(grid / (sm_count * blocks))


def pick_register_cap(
    sm_count: int,
    *,
    grid: int = BASELINE_GRID,
    candidates: Sequence[int] = tuple(c for c in SWEEP_REGISTER_CAPS if c),
    paper: int = DEFAULT_MAX_REGISTERS,
    max_threads_per_sm: int = MAX_THREADS_PER_SM,
    registers_per_sm: int = REGISTERS_PER_SM,
) -> int:
    """The OptMT cap for a GPU with ``sm_count`` SMs (see the module docstring)."""
    if sm_count < 1:
        raise ValueError(f"sm_count must be >= 1, got {sm_count}")
    caps = sorted(set(candidates) | {paper})

    def w(cap: int) -> int:
        b = blocks_per_sm(
            cap, max_threads_per_sm=max_threads_per_sm, registers_per_sm=registers_per_sm
        )
        return waves(grid, sm_count, b) if b else 1 << 30

    best = min(w(c) for c in caps)
    if w(paper) == best:
        return paper
    return max(c for c in caps if w(c) == best)


@lru_cache(maxsize=8)
def device_register_cap(device_index: int) -> int:
    """:func:`pick_register_cap` for CUDA device ``device_index`` (read from torch)."""
    import torch

    props = torch.cuda.get_device_properties(device_index)
    return pick_register_cap(
        props.multi_processor_count,
        max_threads_per_sm=getattr(props, "max_threads_per_multi_processor", MAX_THREADS_PER_SM),
        registers_per_sm=getattr(props, "regs_per_multiprocessor", REGISTERS_PER_SM),
    )


def rows_in_flight_needed(
    sm_count: int,
    bandwidth_bytes_s: float = H200_COPY_TBPS * 1e12,
    latency_s: float = RPF_LOAD_LATENCY_S,
    row_bytes: int = RPF_WARP_ROW_BYTES,
) -> int:
    """Warp-row loads each SM must keep in flight to stream at ``bandwidth_bytes_s``
    (Little's law: bytes in flight = bandwidth x latency, per SM, in 128-byte warp rows)."""
    if sm_count < 1:
        raise ValueError(f"sm_count must be >= 1, got {sm_count}")
    return math.ceil(bandwidth_bytes_s / sm_count * latency_s / row_bytes)


def pick_prefetch_distance(
    cap: int | None,
    *,
    sm_count: int = 132,
    bandwidth_bytes_s: float = H200_COPY_TBPS * 1e12,
    one_row_spills: bool | None = None,
    distances: Sequence[int] = PREFETCH_DISTANCES,
) -> int:
    """RPF distance for the baseline kernel under register cap ``cap`` (None: no cap).

    1. Registers per in-flight row: if the cap is below RPF_MIN_REGISTERS (the one-lookup
       kernel's need without spilling), or ``one_row_spills`` (on a GPU: the loaded kernel
       has local bytes at this cap), no register is free for a second row: distance 1 (the smallest).
    2. Otherwise the smallest distance P with resident warps x P >= the rows in flight that
       Little's law asks per SM (:func:`rows_in_flight_needed`), the largest one if none does:
       extra rows then cost registers the cap already grants.
    """
    if not distances:
        raise ValueError("distances: expected at least one prefetch distance")
    ds = sorted(distances)
    if one_row_spills or (cap is not None and cap < RPF_MIN_REGISTERS):
        return ds[0]
    regs = RPF_UNCAPPED_REGISTERS if cap is None else min(cap, RPF_UNCAPPED_REGISTERS)
    warps = blocks_per_sm(regs) * (BASELINE_BLOCK[0] * BASELINE_BLOCK[1] // 32)
    need = rows_in_flight_needed(sm_count, bandwidth_bytes_s)
    for p in ds:
        if warps * p >= need:
            return p
    return ds[-1]


@lru_cache(maxsize=32)
def device_prefetch_distance(device_index: int, cap: int | None) -> int:
    """:func:`pick_prefetch_distance` for CUDA device ``device_index`` at ``cap``: the spill
    test reads the local bytes of the loaded one-lookup kernel (rpf1, fp32/int64) at that cap."""
    import torch

    from emb_kernels import kernels
    from emb_kernels import launch as L

    props = torch.cuda.get_device_properties(device_index)
    try:
        fn = L.get_function(
            kernels.BASELINE_SOURCE,
            kernels.baseline_name(torch.float32, torch.int64, "sum", 1),
            cap,
            device_index,
        )
        spills = L.function_attributes(fn)["local_bytes"] > 0
    except (RuntimeError, ImportError):  # no build here: the register arithmetic decides
        spills = False
    return pick_prefetch_distance(cap, sm_count=props.multi_processor_count, one_row_spills=spills)
