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
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

from emb_kernels.constants import (
    BASELINE_BLOCK,
    BASELINE_GRID,
    DEFAULT_MAX_REGISTERS,
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
