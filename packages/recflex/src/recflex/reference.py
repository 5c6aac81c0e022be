"""CPU references: a plain per-feature ``embedding_bag`` + concat, and an emulation of the
fused kernel that runs each template's own work decomposition.

The emulation follows the kernel's index math block by block, vectorized in torch: which
block owns which sample (or (sample, tile) pair, or lookup tile), how a sample's lookups
are split over thread rows, the tree over those rows, the atomic adds of
MultiBlockPerSample and ReduceByKey's tile ownership. It raises ``RuntimeError`` when the
launched blocks leave a sample unprocessed or process one twice, so the binding and the
schedules are tested on a machine without a GPU.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from recflex.binding import Binding
from recflex.inputs import Packed
from recflex.plan import Plan
from recflex.schedules import Schedule


def embedding_bag_reference(tables: Sequence[torch.Tensor], packed: Packed) -> torch.Tensor:
    """Per-feature ``F.embedding_bag(mode='sum')`` in fp32, concatenated to ``[B, sum dims]``."""
    outs = []
    b = packed.batch_size
    for f, w in enumerate(tables):
        ids, offs = packed.feature(f)
        if b == 0:
            outs.append(torch.zeros(0, w.shape[1], device=w.device))
            continue
        outs.append(
            F.embedding_bag(
                ids.to(torch.int64),
                w.float(),
                offs.to(torch.int64),
                mode="sum",
                include_last_offset=True,
            )
        )
    return torch.cat(outs, dim=1)


def _segment_sum(src: torch.Tensor, index: torch.Tensor, n: int) -> torch.Tensor:
    """``out[i] = sum of src[j] with index[j] == i`` (``index_add_`` is slow on CPU here)."""
    if index.numel() == 0:
        return torch.zeros(n, src.shape[1], dtype=src.dtype)
    order = torch.argsort(index, stable=True)
    offs = torch.zeros(n + 1, dtype=torch.int64)
    offs[1:] = torch.cumsum(torch.bincount(index, minlength=n), 0)
    return F.embedding_bag(order, src, offs, mode="sum", include_last_offset=True)


def _check_cover(owner_block: torch.Tensor, nblocks: int, what: str, sched: Schedule) -> None:
    if owner_block.numel() and int(owner_block.max()) >= nblocks:
        raise RuntimeError(
            f"{sched!r}: {what} {int(torch.nonzero(owner_block >= nblocks)[0])} belongs to block "
            f"{int(owner_block.max())}, but only {nblocks} blocks were launched"
        )


def emulate_feature(
    sched: Schedule,
    table: torch.Tensor,
    ids: torch.Tensor,
    offs: torch.Tensor,
    nblocks: int,
    work: torch.Tensor | None = None,
) -> torch.Tensor:
    """One feature's ``[B, dim]`` output, computed the way its schedule's blocks compute it.

    ``offs``: local ``B+1`` offsets; ``nblocks``: the binding's block count for the feature;
    ``work``: its (sample, tile) pairs (MultiBlockPerSample).
    """
    b = offs.numel() - 1
    dim = table.shape[1]
    w = table.float()
    offs = offs.to(torch.int64)
    ids = ids.to(torch.int64)
    nnz = ids.numel()
    out = torch.zeros(b, dim)
    if b == 0 or nnz == 0:
        return out  # zero-fill blocks
    if bool(((ids < 0) | (ids >= w.shape[0])).any()):
        raise ValueError(f"ids outside the table of {w.shape[0]} rows")
    lens = offs[1:] - offs[:-1]
    sample = torch.repeat_interleave(torch.arange(b), lens)  # sample of each lookup
    pos = torch.arange(nnz) - offs[sample]  # position inside its bag
    rows = w[ids]
    t = sched.template
    p = sched.params
    if t in ("OneHot", "OneHotMultiBlock"):
        nb = 1 if t == "OneHot" else nblocks
        if nb < 1:
            raise RuntimeError(f"{sched!r}: no block launched for a feature with lookups")
        # tile s//256 is walked by block (s//256) % nb; every item of a sample by that block
        out = _segment_sum(rows, sample, b)
        return out
    if t == "WarpPerSample":
        y = sched.samples_per_block
        _check_cover(torch.arange(b) // y, nblocks, "sample", sched)
        out = _segment_sum(rows, sample, b)  # one thread group per sample, lookups in order
        return out
    if t == "OneBlockMultiSample":
        z, y, items = sched.samples_per_block, p["y"], p["items"]
        _check_cover(torch.arange(b) // z, nblocks, "sample", sched)
        row = (pos // items) % y  # thread row that loads this lookup
        part = _segment_sum(rows, sample * y + row, b * y).view(b, y, dim)
        h = y
        while h > 1:  # the kernel's tree: rows r < h/2 add row r + h/2
            h //= 2
            part = part[:, :h] + part[:, h : 2 * h]
        return part[:, 0].contiguous()
    if t == "MultiBlockPerSample":
        tl = sched.lookups_per_tile(dim)
        if work is None:
            raise ValueError("MultiBlockPerSample needs the binding's work list")
        work = work.to(torch.int64)
        need = torch.unique(sample * (nnz + 1) + pos // tl)
        have = work[:, 0] * (nnz + 1) + work[:, 1]
        if have.numel() != need.numel() or not torch.equal(torch.sort(have).values, need):
            raise RuntimeError(f"{sched!r}: the work list does not match the batch's tiles")
        if nblocks < 1:  # more blocks than pairs is fine: the kernel's extra blocks exit
            raise RuntimeError(f"{sched!r}: {nblocks} blocks for {work.shape[0]} tiles")
        # pair i -> block i % nblocks; each tile's partial sum is added atomically
        key = sample * (nnz + 1) + pos // tl
        pair = torch.searchsorted(torch.sort(have).values, key)
        part = _segment_sum(rows, pair, have.numel())
        out = _segment_sum(part, torch.sort(have).values // (nnz + 1), b)
        return out
    # ReduceByKey: tiles of T lookups; tile t owns the samples whose first lookup is in it
    T = sched.lookups_per_tile(dim)
    tiles = -(-nnz // T)
    starts = offs[:-1]
    bounds = torch.arange(tiles + 1) * T
    sb = torch.searchsorted(starts, bounds[:-1], right=False)
    se = torch.searchsorted(starts, bounds[1:], right=False)
    se[-1] = b
    owned = se - sb
    if int(owned.sum()) != b or bool((sb[1:] != se[:-1]).any()):
        raise RuntimeError(f"{sched!r}: tile ownership does not cover every sample once")
    if nblocks < 1:
        raise RuntimeError(f"{sched!r}: no block launched for {tiles} tiles")
    owner_tile = torch.repeat_interleave(torch.arange(tiles), owned)
    _check_cover(owner_tile % nblocks, nblocks, "sample", sched)
    out = _segment_sum(rows, sample, b)  # segmented scan over the owned samples' lookups
    return out


def emulate(
    plan: Plan, tables: Sequence[torch.Tensor], packed: Packed, binding: Binding
) -> torch.Tensor:
    """The fused kernel's output, from :func:`emulate_feature` per feature (CPU)."""
    b = packed.batch_size
    outs = []
    for f, (s, w) in enumerate(zip(plan.schedules, tables)):
        ids, offs = packed.feature(f)
        ws = binding.work_start
        work = binding.work[int(ws[f]) : int(ws[f + 1])] if s.accumulates else None
        outs.append(
            emulate_feature(s, w.cpu(), ids.cpu(), offs.cpu(), int(binding.blocks[f]), work)
        )
    if not outs:
        return torch.zeros(b, 0)
    return torch.cat(outs, dim=1)
