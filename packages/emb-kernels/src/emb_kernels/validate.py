"""Input checks for the EmbeddingBag API, kept out of the kernels' hot loops.

:func:`prepare` checks types, shapes and devices on the host (no GPU work) and normalizes the
input to one form: 1-D ids, offsets of length B+1 in the ids' dtype, a non-negative
``padding_idx``. :func:`check_contents` is the separate validation pass: offsets start at 0,
never decrease and end inside (or, with ``include_last_offset``, exactly at the end of) the
ids; every id lies in ``[0, rows)``. It runs a few reductions on the tensors' device and reads
back one small tensor (one synchronization); only when something is wrong does it search for
the first offender, to name its position and value.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from emb_kernels.constants import MODES

INDEX_DTYPES = (torch.int32, torch.int64)
WEIGHT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
GPU_WEIGHT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@dataclass
class BagInputs:
    """Normalized EmbeddingBag input (see :func:`prepare`)."""

    weight: Tensor  # [rows, dim]
    indices: Tensor  # 1-D, contiguous, int32 or int64
    offsets: Tensor  # B+1 entries, same dtype and device as indices
    mode: str
    per_sample_weights: Tensor | None  # 1-D, weight's dtype, or None
    padding_idx: int | None  # in [0, rows) or None
    include_last_offset: bool
    shape_2d: tuple[int, int] | None  # (B, L) when the ids came as a 2-D tensor

    @property
    def batch_size(self) -> int:
        return self.offsets.numel() - 1

    @property
    def num_ids(self) -> int:
        return self.indices.numel()

    @property
    def rows(self) -> int:
        return self.weight.shape[0]

    @property
    def dim(self) -> int:
        return self.weight.shape[1]


def _tensor(name: str, x) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    return x


def prepare(
    weight: Tensor,
    indices: Tensor,
    offsets: Tensor | None,
    mode: str = "sum",
    per_sample_weights: Tensor | None = None,
    padding_idx: int | None = None,
    include_last_offset: bool = False,
) -> BagInputs:
    """Check types, shapes and devices (host only) and normalize; raise a clear error."""
    weight = _tensor("weight", weight)
    indices = _tensor("indices", indices)
    if mode not in MODES:
        raise ValueError(f"mode: expected one of {MODES}, got {mode!r}")
    if weight.dim() != 2:
        raise ValueError(
            f"weight: expected a 2-D [num_embeddings, embedding_dim] tensor, got shape "
            f"{tuple(weight.shape)}"
        )
    if weight.dtype not in WEIGHT_DTYPES:
        raise TypeError(
            f"weight: expected float32, float16, bfloat16 (or float64 on CPU), got {weight.dtype}"
        )
    if weight.shape[0] < 1 or weight.shape[1] < 1:
        raise ValueError(
            f"weight: needs at least one row and one column, got {tuple(weight.shape)}"
        )
    if indices.dtype not in INDEX_DTYPES:
        raise TypeError(f"indices: expected int32 or int64 ids, got {indices.dtype}")
    if indices.device != weight.device:
        raise ValueError(
            f"indices are on {indices.device} but weight is on {weight.device}; move them to "
            "the same device"
        )
    shape_2d = None
    if indices.dim() == 2:
        if offsets is not None:
            raise ValueError(
                "offsets: must be None when indices is 2-D ([B, L]: every row is one bag); "
                f"got offsets of shape {tuple(offsets.shape)}"
            )
        b, length = indices.shape
        shape_2d = (b, length)
        offsets = torch.arange(b + 1, device=indices.device, dtype=torch.int64) * length
        offsets = offsets.to(indices.dtype)
        indices = indices.reshape(-1)
        include_last_offset_effective = True
    elif indices.dim() == 1:
        if offsets is None:
            raise ValueError("offsets: required when indices is 1-D (where does each bag start?)")
        offsets = _tensor("offsets", offsets)
        include_last_offset_effective = bool(include_last_offset)
    else:
        raise ValueError(
            f"indices: expected a 1-D tensor of ids (with offsets) or a 2-D [B, L] tensor, got "
            f"shape {tuple(indices.shape)}"
        )
    if offsets.dtype not in INDEX_DTYPES:
        raise TypeError(f"offsets: expected int32 or int64, got {offsets.dtype}")
    if offsets.dim() != 1:
        raise ValueError(f"offsets: expected a 1-D tensor, got shape {tuple(offsets.shape)}")
    if offsets.device != indices.device:
        raise ValueError(
            f"offsets are on {offsets.device} but indices are on {indices.device}; move them to "
            "the same device"
        )
    if offsets.dtype != indices.dtype:  # as torch: mixed index dtypes are promoted to int64
        indices, offsets = indices.to(torch.int64), offsets.to(torch.int64)
    n = indices.numel()
    if include_last_offset_effective:
        if offsets.numel() < 1:
            raise ValueError(
                "offsets: with include_last_offset=True, expected B+1 entries (at least one), got 0"
            )
        full = offsets
    else:
        full = torch.cat([offsets, torch.tensor([n], dtype=offsets.dtype, device=offsets.device)])
    if per_sample_weights is not None:
        per_sample_weights = _tensor("per_sample_weights", per_sample_weights)
        if mode != "sum":
            raise ValueError(
                f"per_sample_weights: only supported with mode='sum' (got mode={mode!r}), as in "
                "torch.nn.functional.embedding_bag"
            )
        if per_sample_weights.dtype != weight.dtype:
            raise TypeError(
                f"per_sample_weights: dtype {per_sample_weights.dtype} differs from weight's "
                f"{weight.dtype}; convert them with .to(weight.dtype)"
            )
        if per_sample_weights.device != weight.device:
            raise ValueError(
                f"per_sample_weights are on {per_sample_weights.device} but weight is on "
                f"{weight.device}"
            )
        if per_sample_weights.numel() != n or (shape_2d is None and per_sample_weights.dim() != 1):
            raise ValueError(
                f"per_sample_weights: expected one weight per id, shape "
                f"{(n,) if shape_2d is None else shape_2d}, got {tuple(per_sample_weights.shape)}"
            )
        per_sample_weights = per_sample_weights.reshape(-1).contiguous()
    rows = weight.shape[0]
    if padding_idx is not None:
        if isinstance(padding_idx, bool) or not isinstance(padding_idx, int):
            raise TypeError(f"padding_idx: expected an int or None, got {padding_idx!r}")
        if not -rows <= padding_idx < rows:
            raise ValueError(
                f"padding_idx must be within the number of embeddings, {-rows} through "
                f"{rows - 1}, but got {padding_idx}"
            )
        padding_idx = padding_idx % rows
    return BagInputs(
        weight=weight,
        indices=indices.contiguous(),
        offsets=full.contiguous(),
        mode=mode,
        per_sample_weights=per_sample_weights,
        padding_idx=padding_idx,
        include_last_offset=include_last_offset_effective,
        shape_2d=shape_2d,
    )


def _where(table: str | None) -> str:
    return "" if table is None else f"table {table}: "


def check_contents(b: BagInputs, table: str | None = None) -> None:
    """The validation pass over offsets and ids (one host synchronization when all is well)."""
    full, n = b.offsets, b.num_ids
    flags = [full[0] != 0]
    flags.append((full[1:] < full[:-1]).any() if full.numel() > 1 else full[0] != full[0])
    flags.append(full[-1] != n)
    if n:
        lo, hi = torch.aminmax(b.indices)
        flags.append((lo < 0) | (hi >= b.rows))
    first_bad, decreasing, last_bad, *ids_bad = torch.stack(flags).tolist()
    where = _where(table)
    if first_bad:
        raise ValueError(
            f"{where}offsets[0] is {int(full[0])}; the first bag must start at position 0 "
            "(expected offsets[0] == 0)"
        )
    if decreasing:
        pos = int(torch.nonzero(full[1:] < full[:-1])[0]) + 1
        if not b.include_last_offset and pos == full.numel() - 1:
            raise ValueError(
                f"{where}offsets[{pos - 1}]={int(full[pos - 1])} is past the end of the "
                f"{n} ids (offsets must be <= len(indices))"
            )
        raise ValueError(
            f"{where}offsets not monotone at position {pos}: offsets[{pos}]={int(full[pos])} < "
            f"offsets[{pos - 1}]={int(full[pos - 1])} (a bag cannot have a negative length)"
        )
    if last_bad:
        raise ValueError(
            f"{where}include_last_offset=True: the last offset is {int(full[-1])} but there are "
            f"{n} ids; it must equal len(indices) (torch ignores a mismatch inconsistently)"
        )
    if ids_bad and ids_bad[0]:
        raise ValueError(describe_bad_id(b.indices, full, b.rows, table, b.shape_2d))


def describe_bad_id(
    indices: Tensor,
    offsets: Tensor,
    rows: int,
    table: str | None = None,
    shape_2d: tuple[int, int] | None = None,
    pos: int | None = None,
) -> str:
    """'id 11 at position 1 (bag 0) is outside the table of 10 rows ...' for the first bad id
    (or the one at ``pos``)."""
    if pos is None:
        bad = (indices < 0) | (indices >= rows)
        pos = int(torch.nonzero(bad)[0])
    value = int(indices[pos])
    bag = (
        int(
            torch.searchsorted(
                offsets, torch.tensor([pos], dtype=offsets.dtype, device=offsets.device), right=True
            )[0]
        )
        - 1
    )
    at = f"position {pos}"
    if shape_2d is not None and shape_2d[1]:
        at += f" (indices[{pos // shape_2d[1]}, {pos % shape_2d[1]}])"
    return (
        f"{_where(table)}id {value} at {at} (bag {bag}) is outside the table of {rows} rows "
        f"(expected 0 <= id < {rows})"
    )
