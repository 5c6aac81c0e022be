"""Turn a batch (rec-common ``JaggedBatch``, TorchRec ``KeyedJaggedTensor``, or ready
``(indices, offsets)``) into the fused kernel's input: all ids in one tensor and ``F*B+1``
offsets, feature-major (TBE's layout)::

    >>> import torch
    >>> from rec_common.jagged import JaggedBatch
    >>> jb = JaggedBatch.from_lengths(["a", "b"], [torch.tensor([7, 3, 9]), torch.tensor([4])],
    ...                               [torch.tensor([2, 0, 1]), torch.tensor([0, 1, 0])])
    >>> p = pack(jb)
    >>> p.indices.tolist(), p.offsets.tolist(), p.batch_size
    ([7, 3, 9, 4], [0, 2, 2, 3, 3, 4, 4], 3)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from rec_common.jagged import JaggedBatch


@dataclass(frozen=True)
class Packed:
    """``indices`` (all ids), ``offsets`` (``F*B+1``), the batch size and the feature keys."""

    indices: torch.Tensor
    offsets: torch.Tensor
    batch_size: int
    keys: tuple[str, ...] | None = None

    @property
    def num_features(self) -> int:
        b = self.batch_size
        return (self.offsets.numel() - 1) // b if b else 0

    def to(self, device, index_dtype: torch.dtype | None = None, non_blocking: bool = False):
        dt = index_dtype or self.indices.dtype
        return Packed(
            self.indices.to(device, dt, non_blocking=non_blocking),
            self.offsets.to(device, dt, non_blocking=non_blocking),
            self.batch_size,
            self.keys,
        )

    def feature(self, f: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Feature ``f``'s ids and local ``B+1`` offsets (starting at 0)."""
        b = self.batch_size
        o = self.offsets[f * b : (f + 1) * b + 1]
        return self.indices[o[0] : o[-1]], o - o[0]


def _is_kjt(x) -> bool:
    return type(x).__name__ == "KeyedJaggedTensor" and hasattr(x, "offsets")


def pack(batch, keys: Sequence[str] | None = None) -> Packed:
    """Pack ``batch`` (JaggedBatch, KeyedJaggedTensor or Packed); with ``keys``, check its
    features are exactly those, in that order."""
    if isinstance(batch, Packed):
        out = batch
    elif isinstance(batch, JaggedBatch):
        out = _pack_jagged(batch)
    elif _is_kjt(batch):
        values = batch.values()
        if values.dtype not in (torch.int32, torch.int64):
            values = values.to(torch.int64)
        offsets = batch.offsets().to(values.dtype)
        out = Packed(values, offsets, int(batch.stride()), tuple(batch.keys()))
    else:
        raise TypeError(
            f"batch: expected a rec_common JaggedBatch, a TorchRec KeyedJaggedTensor or a "
            f"recflex Packed, got {type(batch).__name__}"
        )
    if keys is not None and out.keys is not None and tuple(keys) != tuple(out.keys):
        want, got = tuple(keys), tuple(out.keys)
        if len(want) != len(got):
            raise ValueError(f"batch has {len(got)} features, the plan {len(want)}")
        i = next(i for i in range(len(want)) if want[i] != got[i])
        raise ValueError(
            f"batch feature {i} is {got[i]!r}, the plan expects {want[i]!r} (same names, "
            f"same order)"
        )
    return out


def _pack_jagged(batch: JaggedBatch) -> Packed:
    if not batch.keys:
        raise ValueError("batch has no features")
    dtype = batch.values[0].dtype
    if any(v.dtype != dtype for v in batch.values):
        dtype = torch.int64
    b = batch.batch_size
    indices = torch.cat([v.to(dtype) for v in batch.values])
    local = torch.stack([o.to(dtype) for o in batch.offsets])  # [F, B+1]
    nnz = local[:, -1]
    base = torch.cumsum(nnz, 0) - nnz
    offsets = torch.empty(local.shape[0] * b + 1, dtype=dtype, device=indices.device)
    offsets[:-1] = (local[:, :-1] + base[:, None]).reshape(-1)
    offsets[-1:].fill_(indices.numel())  # a fill, not a copy from the host (no sync)
    return Packed(indices, offsets, b, batch.keys)


def validate_ids(packed: Packed, rows: torch.Tensor, names: Sequence[str] | None = None) -> None:
    """Raise ``ValueError`` naming feature, sample and value of the first id outside its
    table (one vectorized pass; ``rows`` on the ids' device, one entry per feature)."""
    b = packed.batch_size
    nf = rows.numel()
    if packed.offsets.numel() != nf * b + 1:
        raise ValueError(
            f"offsets: expected {nf}*{b}+1 = {nf * b + 1} entries for {nf} features, got "
            f"{packed.offsets.numel()}"
        )
    offs = packed.offsets.to(torch.int64)
    n = packed.indices.numel()
    # the offsets' checks in one device -> host read, then the ids' in one more (two syncs
    # on a GPU); the details of a failure are read only then
    drop = offs[1:] < offs[:-1]
    failed = torch.stack([drop.any(), offs[0] != 0, offs[-1] != n]).tolist()
    if failed[0]:
        pos = int(torch.nonzero(drop)[0])
        raise ValueError(
            f"offsets decrease at position {pos + 1}: {int(offs[pos])} -> {int(offs[pos + 1])}"
        )
    if failed[1] or failed[2]:
        raise ValueError(
            f"offsets must run from 0 to the number of ids ({n}), got "
            f"{int(offs[0])}..{int(offs[-1])}"
        )
    if n == 0 or b == 0:
        return
    nnz = offs[b::b][:nf] - offs[0 : nf * b : b]  # valid offsets: >= 0, summing to n
    limit = torch.repeat_interleave(rows.to(torch.int64), nnz, output_size=n)
    ids = packed.indices.to(torch.int64)
    bad = (ids < 0) | (ids >= limit)
    if bool(bad.any()):
        pos = int(torch.nonzero(bad)[0])
        seg = (
            int(torch.searchsorted(offs, torch.tensor([pos], device=offs.device), right=True)[0])
            - 1
        )
        f, s = divmod(seg, b)
        name = names[f] if names is not None else f"f{f}"
        raise ValueError(
            f"feature {f} ({name!r}): id {int(ids[pos])} (sample {s}) is outside its table of "
            f"{int(rows[f])} rows (expected 0 <= id < {int(rows[f])})"
        )
