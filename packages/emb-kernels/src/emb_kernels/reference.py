"""The plain-torch EmbeddingBag every kernel is tested against, and the CPU path.

Written from torch ops (``index_select`` + ``index_add_`` / ``scatter_reduce_``), not by calling
``F.embedding_bag``, so that the tests comparing it with ``F.embedding_bag`` check something.
It takes the normalized form (offsets of length B+1, ids already validated)::

    >>> w = torch.arange(8.0).view(4, 2)
    >>> embedding_bag_reference(w, torch.tensor([1, 3, 0]), torch.tensor([0, 2, 2, 3]))
    tensor([[ 8., 10.],
            [ 0.,  0.],
            [ 0.,  1.]])

Accumulation is in float32 (float64 for float64 weights, or ``acc_dtype``); the result is
cast to the weight's dtype unless ``out_dtype`` says otherwise. Padding ids contribute nothing
and are not counted by ``mean``; an empty bag (or one holding only padding) pools to zeros.
"""

from __future__ import annotations

import torch
from torch import Tensor


def bag_ids(offsets: Tensor, num_ids: int) -> Tensor:
    """The bag of every position: ``[0, 0, 2]`` for offsets ``[0, 2, 2, 3]`` (int64)."""
    lengths = (offsets[1:] - offsets[:-1]).to(torch.int64)
    bags = torch.arange(lengths.numel(), device=offsets.device)
    return torch.repeat_interleave(bags, lengths, output_size=num_ids)


def embedding_bag_reference(
    weight: Tensor,
    indices: Tensor,
    offsets: Tensor,
    mode: str = "sum",
    per_sample_weights: Tensor | None = None,
    padding_idx: int | None = None,
    *,
    acc_dtype: torch.dtype | None = None,
    out_dtype: torch.dtype | None = None,
) -> Tensor:
    """Pooled rows ``[B, D]`` for ids ``indices`` split by ``offsets`` (B+1 entries)."""
    if mode not in ("sum", "mean", "max"):
        raise ValueError(f"mode: expected 'sum', 'mean' or 'max', got {mode!r}")
    if acc_dtype is None:
        acc_dtype = torch.float64 if weight.dtype == torch.float64 else torch.float32
    out_dtype = weight.dtype if out_dtype is None else out_dtype
    num_bags = offsets.numel() - 1
    dim = weight.shape[1]
    ids = indices.to(torch.int64)
    bags = bag_ids(offsets, ids.numel())
    if padding_idx is not None:
        keep = ids != padding_idx
        ids, bags = ids[keep], bags[keep]
        if per_sample_weights is not None:
            per_sample_weights = per_sample_weights[keep]
    rows = weight.index_select(0, ids).to(acc_dtype)
    if per_sample_weights is not None:
        rows = rows * per_sample_weights.to(acc_dtype).unsqueeze(1)
    counts = torch.bincount(bags, minlength=num_bags)
    out = torch.zeros(num_bags, dim, dtype=acc_dtype, device=weight.device)
    if mode == "max":
        out.fill_(float("-inf"))
        if ids.numel():
            out.scatter_reduce_(0, bags.unsqueeze(1).expand(-1, dim), rows, reduce="amax")
        out[counts == 0] = 0
    else:
        out.index_add_(0, bags, rows)
        if mode == "mean":
            out = out / counts.clamp(min=1).to(acc_dtype).unsqueeze(1)
    return out.to(out_dtype)


def offset2bag_and_sizes(
    indices: Tensor, offsets: Tensor, padding_idx: int | None = None
) -> tuple[Tensor, Tensor]:
    """PyTorch's auxiliary outputs: the bag of every id, and each bag's non-padding count."""
    bags = bag_ids(offsets, indices.numel())
    keep = torch.ones_like(bags, dtype=torch.bool)
    if padding_idx is not None:
        keep = indices.to(torch.int64) != padding_idx
    sizes = torch.bincount(bags[keep], minlength=offsets.numel() - 1)
    return bags.to(indices.dtype), sizes.to(indices.dtype)
