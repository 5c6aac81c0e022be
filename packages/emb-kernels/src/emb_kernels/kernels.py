"""Kernel names and launchers, one function per kernel family.

Names follow the ``extern "C"`` wrappers of ``csrc/*.cu``:

* ``ek_base_<dtype>_<index>``, ``ek_rpf<P>_<dtype>_<index>``, ``ek_base_max_<dtype>_<index>``
  in ``bag_baseline.cu`` (built once per register cap: OptMT is a cap, not a source change);
* ``ek_fast_warp_<sum|max>_<dtype>_<index>_v<VB>_u<U>[_h]``,
  ``ek_fast_seg_<sum|max>_<dtype>_<index>_v<VB>_u4`` (segmented), ``..._u8c`` (segmented with
  cooperative id loads), ``..._u4s`` / ``..._u8cs`` (those two with split bags), ``..._u8`` /
  ``..._u8c8`` (those two with 8 rows in flight in the segmented path, float32),
  ``ek_fast_seg_<sum|max>_f32_<index>_v16_a<D>`` (rows through a cp.async ring of D per warp
  in shared memory) and ``ek_fast_block<WB>_sum_<dtype>_<index>_v<VB>``: the split and
  ``_u8``/``_u8c8`` ones in ``bag_fast_x.cu``, the ``_a<D>`` ones in ``bag_fast_async.cu``,
  the others in ``bag_fast.cu`` (device code of all three: ``bag_fast.cuh``);
* ``ek_l2p_prefetch`` and ``ek_spin`` in ``l2p.cu``.

dtype is f32/f16/bf16 and index i32/i64. Launchers take tensors already checked by
:mod:`emb_kernels.validate` and enqueue on PyTorch's current stream.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from emb_kernels import launch as L
from emb_kernels.constants import (
    BASELINE_BLOCK,
    BASELINE_GRID,
    FAST_ASYNC_ROWS,
    FAST_ASYNC_WARPS,
    FAST_AUTO_ASYNC_MIN_TABLES,
    FAST_AUTO_ASYNC_ROWS,
    FAST_AUTO_ASYNC_SEGMENT_ROWS,
    FAST_BLOCK_MODE_MIN_POOLING,
    FAST_BLOCK_THREADS,
    FAST_BLOCK_WARPS,
    FAST_COOP,
    FAST_COOP_UNROLL,
    FAST_DEFAULT_UNROLL,
    FAST_HINT_UNROLLS,
    FAST_LONGEST_FIRST,
    FAST_MAX_ROWS,
    FAST_META_STRIDE,
    FAST_SEG_RESIDENT_WARPS_PER_SM,
    FAST_SEG_UNROLLS,
    FAST_SEGMENT_ROWS,
    FAST_SPLIT_MIN_IDS_PER_WARP,
    FAST_SPLIT_MIN_POOLING,
    FAST_SPLIT_TABLE_MIN_POOLING,
    FAST_SPLIT_WARPS,
    FAST_TARGET_WARPS_PER_SM,
    FAST_UNROLLS_F32_V16,
    FAST_WAVE_SEGMENTS,
    L2P_PREFETCH_GRID,
    L2P_PREFETCH_STEP_BYTES,
    MODE_CODES,
    PREFETCH_DISTANCES,
)

TYPE_NAMES = {torch.float32: "f32", torch.float16: "f16", torch.bfloat16: "bf16"}
INDEX_NAMES = {torch.int32: "i32", torch.int64: "i64"}
BASELINE_SOURCE = "bag_baseline.cu"
FAST_SOURCE = "bag_fast.cu"
FAST_X_SOURCE = "bag_fast_x.cu"  # the opt-in split / seg_unroll=8 kernels (a module apart)
FAST_ASYNC_SOURCE = "bag_fast_async.cu"  # the async_rows kernels (a module apart)
L2P_SOURCE = "l2p.cu"


# ---------------------------------------------------------------------------- names
def baseline_name(
    dtype: torch.dtype, index_dtype: torch.dtype, mode: str, prefetch: int = 0
) -> str:
    t, i = TYPE_NAMES[dtype], INDEX_NAMES[index_dtype]
    if mode == "max":
        return f"ek_base_max_{t}_{i}"
    if prefetch:
        if prefetch not in PREFETCH_DISTANCES:
            raise ValueError(
                f"prefetch_distance must be one of {PREFETCH_DISTANCES}, got {prefetch}"
            )
        return f"ek_rpf{prefetch}_{t}_{i}"
    return f"ek_base_{t}_{i}"


def fast_name(
    dtype: torch.dtype,
    index_dtype: torch.dtype,
    is_max: bool,
    vec_bytes: int,
    unroll: int,
    block_warps: int = 0,
    hint: bool = False,
    segmented: bool = False,
    coop: bool = False,
    split: bool = False,
    seg_unroll: int = 4,
    async_rows: int = 0,
    async_only: bool = False,
) -> str:
    t, i = TYPE_NAMES[dtype], INDEX_NAMES[index_dtype]
    if block_warps:
        return f"ek_fast_block{block_warps}_sum_{t}_{i}_v{vec_bytes}"
    kind = "max" if is_max else "sum"
    if async_rows:
        if (async_rows not in FAST_ASYNC_ROWS or dtype != torch.float32 or vec_bytes != 16
                or split or coop or seg_unroll != 4):  # fmt: skip
            raise ValueError(f"fast: no async_rows={async_rows} kernel for {dtype}, "
                             f"{vec_bytes}-byte vectors, split={split}, coop={coop}, "
                             f"seg_unroll={seg_unroll}")  # fmt: skip
        return f"ek_fast_seg_{kind}_{t}_{i}_v16_a{async_rows}" + ("o" if async_only else "")
    s = "s" if split else ""
    if seg_unroll != 4:
        if split or seg_unroll not in FAST_SEG_UNROLLS or dtype != torch.float32:
            raise ValueError(f"fast: no kernel for seg_unroll={seg_unroll} with split={split} "
                             f"and {dtype}")  # fmt: skip
        if coop:
            return f"ek_fast_seg_{kind}_{t}_{i}_v{vec_bytes}_u{FAST_COOP_UNROLL}c{seg_unroll}"
        return f"ek_fast_seg_{kind}_{t}_{i}_v{vec_bytes}_u{seg_unroll}"
    if coop:
        return f"ek_fast_seg_{kind}_{t}_{i}_v{vec_bytes}_u{FAST_COOP_UNROLL}c{s}"
    if segmented or split:
        return f"ek_fast_seg_{kind}_{t}_{i}_v{vec_bytes}_u4{s}"
    return f"ek_fast_warp_{kind}_{t}_{i}_v{vec_bytes}_u{unroll}" + ("_h" if hint else "")


def all_kernel_names() -> dict[str, list[str]]:
    """Every instantiated kernel, by source file (what the compile check looks for)."""
    base, fast, fast_x, fast_async = [], [], [], []
    for dtype in TYPE_NAMES:
        for idx in INDEX_NAMES:
            base.append(baseline_name(dtype, idx, "sum"))
            base.append(baseline_name(dtype, idx, "max"))
            base.extend(baseline_name(dtype, idx, "sum", p) for p in PREFETCH_DISTANCES)
            for vb in vec_widths(dtype):
                for is_max in (False, True):
                    fast.append(fast_name(dtype, idx, is_max, vb, FAST_DEFAULT_UNROLL))
                    fast.append(fast_name(dtype, idx, is_max, vb, 4, segmented=True))
                    fast.append(fast_name(dtype, idx, is_max, vb, 4, coop=True))
                    fast_x.append(fast_name(dtype, idx, is_max, vb, 4, split=True))
                    fast_x.append(fast_name(dtype, idx, is_max, vb, 4, coop=True, split=True))
                    if dtype == torch.float32:
                        for coop in (False, True):
                            fast_x.append(fast_name(dtype, idx, is_max, vb, 4, segmented=True,
                                                    coop=coop, seg_unroll=8))  # fmt: skip
                fast.extend(fast_name(dtype, idx, False, vb, 4, wb) for wb in FAST_BLOCK_WARPS)
            if dtype == torch.float32:
                fast_async.extend(fast_name(dtype, idx, is_max, 16, 4, async_rows=d, async_only=o)
                                  for d in FAST_ASYNC_ROWS for is_max in (False, True)
                                  for o in (False, True))  # fmt: skip
                fast.extend(fast_name(dtype, idx, False, 16, u) for u in FAST_UNROLLS_F32_V16)
                fast.extend(
                    fast_name(dtype, idx, False, 16, u, hint=True) for u in FAST_HINT_UNROLLS
                )
    return {
        BASELINE_SOURCE: base,
        FAST_SOURCE: fast,
        FAST_X_SOURCE: fast_x,
        FAST_ASYNC_SOURCE: fast_async,
        L2P_SOURCE: ["ek_l2p_prefetch", "ek_spin"],
    }


def fast_source(name: str) -> str:
    """The module of a fast kernel: the opt-in split and seg_unroll=8 kernels live in
    FAST_X_SOURCE, the async_rows ones (``_a<D>``) in FAST_ASYNC_SOURCE, the others in
    FAST_SOURCE."""
    if name.startswith("ek_fast_seg_") and name.endswith(
        tuple(f"_a{d}{o}" for d in FAST_ASYNC_ROWS for o in ("", "o"))
    ):
        return FAST_ASYNC_SOURCE
    if name.endswith(("_u4s", "_u8cs", "_u8c8")) or (
        name.startswith("ek_fast_seg_") and name.endswith("_u8")
    ):
        return FAST_X_SOURCE
    return FAST_SOURCE


def vec_widths(dtype: torch.dtype) -> tuple[int, ...]:
    """Vector widths (bytes per lane per row) instantiated for a dtype, widest first."""
    return (16, 8, 4) if dtype == torch.float32 else (16, 8, 4, 2)


# ---------------------------------------------------------------------------- baseline family
@dataclass
class AuxOutputs:
    """PyTorch's extra outputs of the sum/mean/max kernels (written only when asked for)."""

    offset2bag: Tensor
    bag_size: Tensor
    max_indices: Tensor | None


def launch_baseline(
    weight: Tensor,
    indices: Tensor,
    offsets: Tensor,
    out: Tensor,
    mode: str,
    per_sample_weights: Tensor | None,
    padding_idx: int | None,
    err: Tensor,
    *,
    max_registers: int | None = None,
    prefetch: int = 0,
    aux: AuxOutputs | None = None,
    table: int = 0,
) -> None:
    """The paper's kernel (baseline/OptMT/RPF): grid 1024 x block (32, 8), offsets B+1 long."""
    batch = offsets.numel() - 1
    name = baseline_name(weight.dtype, indices.dtype, mode, 0 if mode == "max" else prefetch)
    fn = L.get_function(BASELINE_SOURCE, name, max_registers, weight.device)
    common = [
        L.ptr(indices),
        L.ptr(offsets),
        L.ptr(weight),
        L.ptr(out),
        L.ptr(None if aux is None else aux.offset2bag),
        L.i64(indices.numel()),
        L.i64(batch),
        L.i64(weight.shape[1]),
        L.i64(weight.stride(0)),
        L.i64(weight.stride(1)),
    ]
    pad = -1 if padding_idx is None else padding_idx
    if mode == "max":
        args = [
            *common,
            L.ptr(None if aux is None else aux.bag_size),
            L.ptr(None if aux is None else aux.max_indices),
            L.i64(pad),
            L.i64(weight.shape[0]),
            L.ptr(err),
            L.i32(table),
        ]
    else:
        args = [
            *common,
            L.i32(MODE_CODES[mode]),
            L.ptr(None if aux is None else aux.bag_size),
            L.ptr(per_sample_weights),
            L.i64(1),
            L.i64(pad),
            L.i64(weight.shape[0]),
            L.ptr(err),
            L.i32(table),
        ]
    L.launch(fn, (BASELINE_GRID,), BASELINE_BLOCK, args, device=weight.device)


def make_aux(indices: Tensor, batch: int, dim: int, mode: str) -> AuxOutputs:
    return AuxOutputs(
        offset2bag=torch.empty_like(indices),
        bag_size=torch.empty(batch, dtype=indices.dtype, device=indices.device),
        max_indices=(
            torch.empty(batch, dim, dtype=indices.dtype, device=indices.device)
            if mode == "max"
            else None
        ),
    )


# ---------------------------------------------------------------------------- fast
@dataclass
class FastPlan:
    """How one ``fast`` launch splits its work (see csrc/bag_fast.cuh for the meta layout)."""

    name: str
    vec_bytes: int
    unroll: int
    block_warps: int  # 0: warp mode (a warp owns up to 32/G bags); else warps per bag
    hint: bool
    segmented: bool  # warp mode where lane groups walk several short bags as one stream
    coop: bool  # the segmented kernel with cooperative id loads (tables of >= 32 vectors)
    total_units: int
    meta: Tensor  # int64 [T * FAST_META_STRIDE] on the device
    grid: int
    split: tuple[int, ...] = ()  # warps per bag of each table (split kernels); () = none
    seg_unroll: int = 4  # rows in flight per lane in the segmented path (8: `_u8`, `_u8c8`)
    async_rows: int = 0  # D of the `_a<D>` kernels (rows per warp in shared memory); 0 = none
    # the path each table takes, in table order: "block<W>", "async<D>[ K=<k>]", "split<S>",
    # "coop", "segmented K=<k>" or "warp" (one bag per lane group, rows in registers)
    paths: tuple[str, ...] = ()

    @property
    def source(self) -> str:
        return fast_source(self.name)

    @property
    def async_tables(self) -> tuple[bool, ...]:
        """Per table (table order): whether it gathers through the shared-memory ring."""
        return tuple(p.startswith("async") for p in self.paths)

    @property
    def block_mode(self) -> bool:
        return self.block_warps > 0

    @property
    def block(self) -> int:
        if self.async_rows:
            return 32 * FAST_ASYNC_WARPS
        return 32 * self.block_warps if self.block_warps else FAST_BLOCK_THREADS


_AUTO_ASYNC_UNSET = ("unroll", "block_warps", "segment_rows", "segment_bags", "longest_first",
                     "coop", "split", "split_min_pooling", "seg_unroll", "async_only")  # fmt: skip


def _auto_async_rows(dtype: torch.dtype, elem: int, dims: Sequence[int], opts: dict) -> int:
    """``async_rows`` when left at None: FAST_AUTO_ASYNC_ROWS for float32 launches of at
    least FAST_AUTO_ASYNC_MIN_TABLES tables, all >= 32 16-byte vectors wide, with no other
    knob set and FAST_COOP off (constants.py has the measurements behind the rule), else 0."""
    if dtype != torch.float32 or len(dims) < FAST_AUTO_ASYNC_MIN_TABLES or opts["hint"]:
        return 0
    if FAST_COOP:  # cooperative ids on by default: that path, not the ring
        return 0
    if any(opts[k] is not None for k in _AUTO_ASYNC_UNSET):
        return 0
    if not all(d * elem // 16 >= 32 and (d * elem) % 16 == 0 for d in dims):
        return 0
    return FAST_AUTO_ASYNC_ROWS


def _pow2_at_least(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def plan_fast(
    *,
    dtype: torch.dtype,
    index_dtype: torch.dtype,
    rows: Sequence[int],
    dims: Sequence[int],
    weight_offsets: Sequence[int],
    out_cols: Sequence[int],
    out_stride: int,
    batch: int,
    mode: str,
    mean_pooling: float,
    device: torch.device,
    unroll: int | None = None,
    block_warps: int | None = None,
    hint: bool = False,
    pointer_align: int = 16,
    sm_count: int | None = None,
    table_pooling: Sequence[float] | None = None,
    segment_rows: int | None = None,
    segment_bags: int | None = None,
    longest_first: bool | None = None,
    coop: bool | None = None,
    split: int | None = None,
    split_min_pooling: float | None = None,
    seg_unroll: int | None = None,
    async_rows: int | None = None,
    async_only: bool | None = None,
) -> FastPlan:
    """Choose vector width, mode (warp or block per bag) and work units for a fast launch.

    ``weight_offsets``/``out_cols``/``out_stride`` are in elements; ``pointer_align`` is the
    largest power of two dividing both base pointers (weights and output). ``block_warps``:
    None picks (see :func:`_auto_block_warps`), 0 forces warp mode, 2/4/8 force block mode.
    In warp mode, tables whose mean pooling (``table_pooling``, default ``mean_pooling``) is
    below ``segment_rows`` (default FAST_SEGMENT_ROWS; 0 turns it off) get lane groups that
    walk K = ceil(segment_rows / pooling) bags each (the segmented kernel); by default K is
    halved until the launch has FAST_TARGET_WARPS_PER_SM warps per SM, an explicit
    ``segment_rows`` is taken as is. Tables of medium bags (FAST_SEGMENT_ROWS <= pooling <
    FAST_SPLIT_MIN_POOLING) that would need more than one wave of resident warps in warp mode
    get K = ceil(units / resident warps) bags per lane group instead (FAST_WAVE_SEGMENTS: one
    wave, the stream of rows never stopping at a bag start). ``segment_bags`` forces K for
    every table (warp mode, default unroll, no hints). ``longest_first`` (default
    FAST_LONGEST_FIRST) numbers the tables' units longest chain first (:func:`launch_order`).
    ``coop`` (default FAST_COOP where the plan is warp mode with the default unroll and no
    hints) launches the segmented kernel with cooperative id loads (``_u8c``): tables whose
    row slice is a whole warp walk their ids 32 per coalesced load, shuffled, 8 rows in
    flight; the others take the plain segmented path in the same kernel.
    ``split`` (2, 4 or 8; default None: off) shares the bags of each table whose mean pooling
    is >= ``split_min_pooling`` (default FAST_SPLIT_TABLE_MIN_POOLING) among up to ``split``
    warps of a block (:func:`split_parts`), inside the same warp-mode launch (kernels ``_u4s``,
    or ``_u8cs`` with ``coop``); needs warp mode, the default unroll and no hints.
    ``seg_unroll=8`` (float32 only; default 4) launches the segmented kernel (``_u8``, or
    ``_u8c8`` with ``coop``) with 8 rows in flight per lane group (3 blocks per SM), even
    where every lane group walks one bag; not with ``split``.
    ``async_rows`` (8 or 16; 0: off; None: 8 for float32 launches of several tables that
    all take the ring and set no other knob, else off: :func:`_auto_async_rows`) gathers
    the rows of every table whose lane group is the whole warp (>= 32 16-byte vectors per
    row: float32 dims >= 128) through a cp.async ring of that many rows per warp in shared
    memory (kernels ``_a8`` / ``_a16``,
    blocks of FAST_ASYNC_WARPS warps), ids loaded cooperatively, K >= 1 bags per warp as in
    the segmented mode; the other tables take the U = 4 segmented path in the same launch.
    Implies warp mode; needs the default unroll, no hints, and excludes ``split``,
    ``seg_unroll=8`` and ``coop=True`` (the async path loads ids cooperatively already).
    Launches it cannot serve (not float32, rows not 16-byte aligned, no table 32 vectors
    wide) fall back to the kernels they would get without it: ``plan.async_rows`` is then 0.
    ``plan.paths`` says which path each table took. Where every table takes the ring, the
    launch uses the ``_a<D>o`` kernel, compiled without the fallback and so with fewer
    registers and more resident warps (``async_only``: None picks it then, False keeps the
    kernel with the fallback, True requires it and raises where a table cannot take the ring).
    """
    if any(r > FAST_MAX_ROWS for r in rows):
        raise ValueError(
            f"variant 'fast' supports tables of up to {FAST_MAX_ROWS} rows; use 'baseline' for "
            f"{max(rows)} rows"
        )
    elem = torch.empty(0, dtype=dtype).element_size()
    vb = None
    for w in vec_widths(dtype):
        sizes = [d * elem for d in dims] + [o * elem for o in weight_offsets]
        sizes += [c * elem for c in out_cols] + [out_stride * elem, pointer_align]
        if all(s % w == 0 for s in sizes):
            vb = w
            break
    if vb is None:  # pragma: no cover - every width divides the element size
        raise AssertionError("no vector width fits")
    if seg_unroll is not None and (
        isinstance(seg_unroll, bool) or seg_unroll not in FAST_SEG_UNROLLS
    ):
        raise ValueError(f"fast: seg_unroll must be one of {FAST_SEG_UNROLLS}, got {seg_unroll!r}")
    seg8 = seg_unroll == 8
    if seg8 and dtype != torch.float32:
        raise ValueError(f"fast: seg_unroll=8 is instantiated for float32 only, not {dtype}")
    if seg8 and split is not None:
        raise ValueError("fast: seg_unroll=8 and split exclude each other (no such kernel)")
    if async_rows is None:
        async_rows = _auto_async_rows(dtype, elem, dims, locals())
        if async_rows:  # the automatic ring walks ~FAST_AUTO_ASYNC_SEGMENT_ROWS ids per warp
            segment_rows = FAST_AUTO_ASYNC_SEGMENT_ROWS
    elif isinstance(async_rows, bool) or async_rows not in (0, *FAST_ASYNC_ROWS):
        raise ValueError(f"fast: async_rows must be one of {FAST_ASYNC_ROWS}, 0 (off) or None "
                         f"(auto), got {async_rows!r}")  # fmt: skip
    if async_rows:
        for what, bad in (("split", split is not None), ("seg_unroll=8", seg8),
                          ("coop=True (the async path loads ids cooperatively already)",
                           bool(coop))):  # fmt: skip
            if bad:
                raise ValueError(f"fast: async_rows and {what} exclude each other")
        if (block_warps or 0) or unroll not in (None, FAST_DEFAULT_UNROLL) or hint:
            raise ValueError("fast: async_rows needs warp mode (block_warps=0 or None), the "
                             "default unroll and no load hints")  # fmt: skip
    # the async kernels exist for float32 16-byte rows; they serve tables of >= 32 vectors
    use_async = (
        bool(async_rows)
        and dtype == torch.float32
        and vb == 16
        and any(d * elem // vb >= 32 for d in dims)
    )
    if block_warps is None and (segment_bags is not None or split is not None or seg8 or use_async):
        block_warps = 0  # forcing lane groups of K bags (or split bags) forces warp mode
    if block_warps is None:
        block_warps = _auto_block_warps(
            dtype, elem, vb, dims, batch, mode, mean_pooling, device, sm_count
        )
    if block_warps and block_warps not in FAST_BLOCK_WARPS:
        raise ValueError(
            f"fast: block_warps must be 0 or one of {FAST_BLOCK_WARPS}, got {block_warps}"
        )
    if block_warps and mode == "max":
        raise ValueError("fast: block mode (warps sharing a bag) supports sum and mean, not max")
    if unroll is None:
        unroll = FAST_DEFAULT_UNROLL
    fp32_v16_sum = dtype == torch.float32 and vb == 16 and not block_warps and mode != "max"
    if unroll != FAST_DEFAULT_UNROLL and not (fp32_v16_sum and unroll in FAST_UNROLLS_F32_V16):
        raise ValueError(
            f"fast: unroll {unroll} is instantiated only for float32 sum/mean in warp mode with "
            f"16-byte rows ({FAST_UNROLLS_F32_V16}); this launch can use {FAST_DEFAULT_UNROLL}"
        )
    if hint and not (fp32_v16_sum and unroll in FAST_HINT_UNROLLS):
        raise ValueError(
            f"fast: load hints are instantiated only for float32 sum/mean in warp mode with "
            f"16-byte rows and unroll {FAST_HINT_UNROLLS}"
        )
    pooling = list(table_pooling) if table_pooling is not None else [mean_pooling] * len(dims)
    kbs = [1] * len(dims)
    can_segment = not block_warps and unroll == FAST_DEFAULT_UNROLL and not hint
    parts = split_parts(pooling, split, split_min_pooling)
    if split is not None and not can_segment:
        raise ValueError(
            "fast: split (warps sharing a bag inside the warp-mode launch) needs warp mode "
            "(block_warps=0), the default unroll and no load hints"
        )
    if seg8 and not can_segment:
        raise ValueError(
            "fast: seg_unroll=8 needs warp mode (block_warps=0), the default unroll and no load "
            "hints"
        )
    if split is not None and segment_bags is not None:
        raise ValueError("fast: split and segment_bags exclude each other (split tables walk one "
                         "bag per lane group)")  # fmt: skip
    if segment_bags is not None:
        if not can_segment:
            raise ValueError(
                "fast: segment_bags needs warp mode (block_warps=0), the default unroll and no "
                "load hints"
            )
        if isinstance(segment_bags, bool) or not 1 <= int(segment_bags) <= 64:
            raise ValueError(f"fast: segment_bags must be from 1 to 64, got {segment_bags!r}")
        kbs = [int(segment_bags)] * len(dims)
    elif can_segment:
        kbs = segment_bag_counts(pooling, segment_rows)
        kbs = [1 if s > 1 else k for k, s in zip(kbs, parts)]  # split tables: one bag each
    shapes = []
    for d in dims:
        nvec = d * elem // vb
        if block_warps or nvec >= 32:
            shapes.append((nvec, 32, math.ceil(nvec / 32)))
        else:
            shapes.append((nvec, _pow2_at_least(nvec), 1))

    def count_units(kbs: list[int]) -> int:
        per = [1 if block_warps else 32 // lanes for _, lanes, _ in shapes]
        return sum(math.ceil(batch / (p * k)) * sl * s
                   for p, k, (_, _, sl), s in zip(per, kbs, shapes, parts))  # fmt: skip

    auto = segment_rows is None and segment_bags is None
    if auto and any(k > 1 for k in kbs):  # auto: keep the GPU filled
        if sm_count is None:
            sm_count = _sm_count(device)
        while max(kbs) > 1 and count_units(kbs) < FAST_TARGET_WARPS_PER_SM * sm_count:
            kbs = [max(1, k // 2) for k in kbs]
    if auto and can_segment and FAST_WAVE_SEGMENTS:
        medium = [
            k == 1 and s == 1 and FAST_SEGMENT_ROWS <= p < FAST_SPLIT_MIN_POOLING
            for k, p, s in zip(kbs, pooling, parts)
        ]
        if any(medium):
            if sm_count is None:
                sm_count = _sm_count(device)
            seg = fast_name(dtype, index_dtype, mode == "max", vb, FAST_DEFAULT_UNROLL,
                            segmented=True)  # fmt: skip
            slots = sm_count * resident_warps_per_sm(seg, device)
            k = math.ceil(count_units(kbs) / slots)
            if k >= 2:
                kbs = [min(64, k) if m else kb for kb, m in zip(kbs, medium)]
    segmented = any(k > 1 for k in kbs)
    if coop is None:  # by default where some table's row slice is a whole warp
        coop = (
            not use_async
            and FAST_COOP
            and can_segment
            and segment_rows != 0
            and any(lanes == 32 for _, lanes, _ in shapes)
        )
    elif coop and not can_segment:
        raise ValueError(
            "fast: coop (cooperative id loads) needs warp mode (block_warps=0), the default "
            "unroll and no load hints"
        )
    coop = bool(coop)  # the coop kernel is a segmented one (K = 1 allowed); `segmented` still
    # says whether some lane group walks several bags
    order = launch_order(pooling, kbs, block_warps, longest_first, parts)
    meta: list[int] = []
    unit = 0
    for t in order:
        nvec, lanes, slices = shapes[t]
        per_warp = 1 if block_warps else 32 // lanes
        units = math.ceil(batch / (per_warp * kbs[t])) * slices * parts[t]
        # the S warps of a split bag must be consecutive warps of one block: start at a
        # multiple of S (the padding units fall past the previous table's last bag and exit)
        unit += -unit % parts[t]
        meta += [weight_offsets[t], rows[t], dims[t], out_cols[t], unit, lanes, slices, nvec,
                 kbs[t], t, parts[t]]  # fmt: skip
        unit += units
    assert len(meta) == FAST_META_STRIDE * len(dims)
    warps_per_block = FAST_ASYNC_WARPS if use_async else FAST_BLOCK_THREADS // 32
    grid = unit if block_warps else math.ceil(unit / warps_per_block)
    is_split = any(s > 1 for s in parts)
    ring = int(async_rows) if use_async else 0
    every_table_async = bool(ring) and all(shapes[t][1] == 32 for t in range(len(dims)))
    if async_only is not None and not isinstance(async_only, bool):
        raise ValueError(f"fast: async_only must be None, True or False, got {async_only!r}")
    if async_only and not every_table_async:
        raise ValueError("fast: async_only=True needs every table on the ring (float32, rows of "
                         ">= 128 floats, 16-byte aligned, async_rows set)")  # fmt: skip
    only = every_table_async if async_only is None else async_only

    def path(t: int) -> str:
        _, lanes, _ = shapes[t]
        k = kbs[t]
        if block_warps:
            return f"block{block_warps}"
        if ring and lanes == 32:  # the device's test (ek_fast_seg): K >= 1 bags per warp
            return f"async{ring}" + (f" K={k}" if k > 1 else "")
        if parts[t] > 1:
            return f"split{parts[t]}"
        if coop and lanes == 32 and k == 1:
            return "coop"
        return f"segmented K={k}" if k > 1 else "warp"

    return FastPlan(
        name=fast_name(
            dtype,
            index_dtype,
            mode == "max",
            vb,
            unroll,
            block_warps,
            hint,
            segmented or seg8,
            coop,
            is_split,
            8 if seg8 else 4,
            ring,
            only,
        ),
        vec_bytes=vb,
        unroll=unroll,
        block_warps=block_warps,
        hint=hint,
        segmented=segmented,
        coop=coop,
        total_units=unit,
        meta=torch.tensor(meta, dtype=torch.int64).to(device),
        grid=grid,
        split=tuple(parts) if is_split else (),
        seg_unroll=8 if seg8 else 4,
        async_rows=ring,
        paths=tuple(path(t) for t in range(len(dims))),
    )


def split_parts(
    pooling: Sequence[float], split: int | None, min_pooling: float | None = None
) -> list[int]:
    """Warps per bag for each table under the ``split`` knob: 1 for tables whose mean pooling
    is below ``min_pooling`` (default FAST_SPLIT_TABLE_MIN_POOLING), else the largest power of
    two S <= ``split`` with S * FAST_SPLIT_MIN_IDS_PER_WARP <= pooling (so every warp still
    walks >= 2 groups of 4 rows). ``split=None`` gives all ones."""
    if split is None:
        if min_pooling is not None:
            raise ValueError("fast: split_min_pooling needs split (2, 4 or 8)")
        return [1] * len(pooling)
    if isinstance(split, bool) or split not in FAST_SPLIT_WARPS:
        raise ValueError(f"fast: split must be one of {FAST_SPLIT_WARPS}, got {split!r}")
    lo = FAST_SPLIT_TABLE_MIN_POOLING if min_pooling is None else min_pooling
    if isinstance(lo, bool) or not isinstance(lo, (int, float)) or not lo >= 1:
        raise ValueError(f"fast: split_min_pooling must be a number >= 1, got {min_pooling!r}")
    out = []
    for p in pooling:
        s = 1
        if p >= lo:
            while s * 2 <= split and s * 2 * FAST_SPLIT_MIN_IDS_PER_WARP <= p:
                s *= 2
        out.append(s)
    return out


def launch_order(
    pooling: Sequence[float],
    kbs: Sequence[int],
    block_warps: int = 0,
    longest_first: bool | None = None,
    parts: Sequence[int] | None = None,
) -> list[int]:
    """Tables in the order their work units are numbered (and so dispatched): longest chain
    of rows per unit first (ids per bag x bags per lane group, / warps per bag in block mode),
    ties in table order. Blocks start in index order, so a table of long bags numbered last
    (mlperf-multihot's 100-id table) would run alone at the end; first, the short units of
    the other tables fill in behind it. ``longest_first=False`` (default FAST_LONGEST_FIRST)
    keeps table order. ``parts``: warps per bag of split tables (divides their chain)."""
    if not (FAST_LONGEST_FIRST if longest_first is None else longest_first):
        return list(range(len(kbs)))
    parts = [1] * len(kbs) if parts is None else parts
    work = [p * k / max(1, block_warps) / s for p, k, s in zip(pooling, kbs, parts)]
    return sorted(range(len(kbs)), key=lambda t: -work[t])


def resident_warps_per_sm(kernel: str, device) -> int:
    """Warps of ``kernel`` (a bag_fast.cu name, 256-thread blocks) resident per SM: read from
    the loaded kernel on a GPU, FAST_SEG_RESIDENT_WARPS_PER_SM when planning on a CPU."""
    if torch.device(device).type != "cuda":
        return FAST_SEG_RESIDENT_WARPS_PER_SM
    fn = L.get_function(FAST_SOURCE, kernel, None, device)
    return max(1, L.max_active_blocks(fn, FAST_BLOCK_THREADS)) * (FAST_BLOCK_THREADS // 32)


def segment_bag_counts(pooling: Sequence[float], segment_rows: int | None = None) -> list[int]:
    """Bags per lane group for each table: ceil(segment_rows / mean pooling) for tables whose
    bags are shorter than ``segment_rows`` ids (at most 64), else 1."""
    rows = FAST_SEGMENT_ROWS if segment_rows is None else int(segment_rows)
    if rows <= 0:
        return [1] * len(pooling)
    return [max(1, min(64, math.ceil(rows / max(p, 1.0)))) if p < rows else 1 for p in pooling]


segment_bags = segment_bag_counts  # the name batched.py and older callers use


def _sm_count(device) -> int:
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 132  # planning on a CPU (tests): an H100


def _auto_block_warps(dtype, elem, vb, dims, batch, mode, mean_pooling, device, sm_count) -> int:
    """Warps per bag when the caller does not say: 0 (warp mode) for short bags.

    Long bags (mean >= FAST_BLOCK_MODE_MIN_POOLING) get 8 warps each, for balance. Bags of
    >= FAST_SPLIT_MIN_POOLING ids get the fewest of 2, 4, 8 warps that gives the launch
    FAST_TARGET_WARPS_PER_SM warps per SM (MICRO'24's 2048 bags of 150 ids: 4), at least 2
    (the H200 anchor, 16384 bags of 32: block2 beat warp mode, 75.1 vs 75.6 us uniform and
    47.0 vs 54.9 zipf: half the rows per warp chain, 56 instead of 62 registers) and at most
    mean / 16, so every warp still walks >= 4 groups of 4 rows.
    """
    if mode == "max":
        return 0
    if mean_pooling >= FAST_BLOCK_MODE_MIN_POOLING:
        return 8
    if mean_pooling < FAST_SPLIT_MIN_POOLING:
        return 0
    if sm_count is None:
        sm_count = _sm_count(device)
    units = 0
    for d in dims:
        nvec = d * elem // vb
        lanes = 32 if nvec >= 32 else _pow2_at_least(nvec)
        units += math.ceil(batch / (32 // lanes if nvec < 32 else 1)) * math.ceil(nvec / 32)
    target = FAST_TARGET_WARPS_PER_SM * sm_count
    most = max([wb for wb in FAST_BLOCK_WARPS if wb * 16 <= mean_pooling] or [FAST_BLOCK_WARPS[0]])
    for wb in FAST_BLOCK_WARPS:
        if units * wb >= target or wb >= most:
            return min(wb, most)
    return most


def pointer_alignment(*tensors: Tensor) -> int:
    a = 16
    for t in tensors:
        p = t.data_ptr()
        while a > 1 and p % a:
            a //= 2
    return a


def launch_fast(
    plan: FastPlan,
    indices: Tensor,
    offsets: Tensor,
    weights: Tensor,
    per_sample_weights: Tensor | None,
    out: Tensor,
    *,
    num_tables: int,
    batch: int,
    out_stride: int,
    mode: str,
    padding_idx: int | None,
    err: Tensor,
) -> None:
    """One launch for all tables (ids concatenated, offsets T*B+1 long)."""
    if plan.total_units == 0:
        return
    if pointer_alignment(weights, out) % plan.vec_bytes:
        raise ValueError(
            f"fast: a base pointer is not {plan.vec_bytes}-byte aligned; plan again with "
            "pointer_align=pointer_alignment(weights, out)"
        )
    if (
        plan.segmented or plan.coop or plan.split or plan.seg_unroll != 4 or plan.async_rows
    ) and max(indices.numel(), batch) >= 2**31:
        raise ValueError(
            "fast: the segmented mode keeps positions in 32 bits; with 2^31 or more ids plan "
            "with segment_rows=0 (or block_warps) instead"
        )
    fn = L.get_function(plan.source, plan.name, None, weights.device)
    if plan.async_rows:  # the ring is shared memory: ask for the largest carveout (a hint)
        L.prefer_max_shared(fn)
    args = [
        L.ptr(indices),
        L.ptr(offsets),
        L.ptr(weights),
        L.ptr(per_sample_weights),
        L.ptr(plan.meta),
        L.i32(num_tables),
        L.i64(batch),
        L.i64(plan.total_units),
        L.ptr(out),
        L.i64(out_stride),
        L.i32(MODE_CODES[mode]),
        L.i64(-1 if padding_idx is None else padding_idx),
        L.ptr(err),
    ]
    L.launch(fn, (plan.grid,), (plan.block,), args, device=weights.device)


# ---------------------------------------------------------------------------- L2P and timing
def launch_pin(weight: Tensor, hot_rows: Tensor, step_bytes: int = L2P_PREFETCH_STEP_BYTES) -> None:
    """Method (a): prefetch.global.L2::evict_last over every hot row of ``weight``."""
    if weight.stride(1) != 1:
        raise ValueError("L2 pinning needs rows stored contiguously (weight.stride(1) == 1)")
    if hot_rows.dtype != torch.int64 or hot_rows.device != weight.device:
        raise ValueError("hot_rows: expected an int64 tensor on the weight's device")
    if hot_rows.numel() == 0:
        return
    elem = weight.element_size()
    row_bytes = weight.shape[1] * elem
    chunks = math.ceil(row_bytes / step_bytes)
    total = hot_rows.numel() * chunks
    grid = max(1, min(L2P_PREFETCH_GRID, math.ceil(total / 256)))
    fn = L.get_function(L2P_SOURCE, "ek_l2p_prefetch", None, weight.device)
    args = [
        L.ptr(weight),
        L.ptr(hot_rows),
        L.i64(hot_rows.numel()),
        L.i64(weight.stride(0) * elem),
        L.i64(row_bytes),
        L.i64(step_bytes),
        L.i64(weight.shape[0]),
    ]
    L.launch(fn, (grid,), (256,), args, device=weight.device)


def launch_spin(nanoseconds: int, device: torch.device | None = None) -> None:
    """Keep the GPU busy for about ``nanoseconds`` (one thread polling the global timer)."""
    fn = L.get_function(L2P_SOURCE, "ek_spin", None, device)
    L.launch(fn, (1,), (1,), [L.u64(nanoseconds)], device=device)
