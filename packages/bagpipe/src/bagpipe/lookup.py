"""Pooled lookups through the cache, and the embedding modules rec-common's models plug in.

One step's lookup gathers the unique rows of the trainer's shard from the cache into a small
leaf tensor; pooling runs on that leaf, so after ``backward()`` its ``.grad`` holds exactly
one summed gradient per row the step read: what the all-reduce and the row optimizer need.

A model with a 1-wide per-id table (Wide&Deep's wide part, DeepFM's first-order term) reads
column ``dim`` of the same rows through a second module, so both tables travel as one row.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bagpipe.cache import RowCache
from rec_common.jagged import JaggedBatch


def global_ids(sparse: JaggedBatch, table_offsets: Tensor) -> tuple[Tensor, Tensor]:
    """All ids of a batch as global rows, feature-major, and bag offsets for them.

    Bag ``f * B + b`` holds feature f of sample b (``include_last_offset`` layout).
    """
    b = sparse.batch_size
    vals, offs, base = [], [], 0
    for f in range(sparse.num_features):
        v, o, _ = sparse.feature(f)
        vals.append(v.to(torch.int64) + table_offsets[f])
        offs.append(o[:-1].to(torch.int64) + base)
        base += int(v.numel())
    offs.append(torch.tensor([base], dtype=torch.int64, device=sparse.device))
    rows = torch.cat(vals) if vals else torch.zeros(0, dtype=torch.int64)
    offsets = torch.cat(offs)
    assert offsets.numel() == sparse.num_features * b + 1
    return rows, offsets


PoolFn = Callable[[Tensor, Tensor, Tensor], Tensor]
POOLINGS = ("torch", "emb-kernels")


def torch_pool(ids: Tensor, weight: Tensor, offsets: Tensor) -> Tensor:
    """Sum pooling by ``F.embedding_bag`` (``offsets`` has one entry per bag plus the end)."""
    return F.embedding_bag(ids, weight, offsets, mode="sum", include_last_offset=True)


def make_pool(pooling: str | PoolFn = "torch") -> PoolFn:
    """The pooling function a step's lookup uses: ``"torch"`` (``F.embedding_bag``),
    ``"emb-kernels"`` or ``"emb-kernels:<variant>"`` (emb-kernels' differentiable
    ``embedding_bag``: its CUDA kernels on a GPU, its reference on CPU; variant ``fast`` by
    default), or any ``pool(ids, weight, offsets) -> [bags, dim]`` callable (sum pooling,
    ``include_last_offset`` layout, differentiable w.r.t. ``weight``)."""
    if callable(pooling):
        return pooling
    name, _, variant = str(pooling).partition(":")
    if name == "torch" and not variant:
        return torch_pool
    if name != "emb-kernels":
        raise ValueError(
            f"pooling: expected one of {POOLINGS} (or 'emb-kernels:<variant>', or a callable), "
            f"got {pooling!r}"
        )
    try:
        import emb_kernels
    except ImportError as exc:
        raise ValueError(
            "pooling 'emb-kernels' needs the emb-kernels package (pip install emb-kernels)"
        ) from exc
    variant = variant or "fast"
    if variant not in emb_kernels.VARIANTS:
        raise ValueError(
            f"pooling: unknown emb-kernels variant {variant!r}; expected one of "
            f"{emb_kernels.VARIANTS}"
        )

    def pool(ids: Tensor, weight: Tensor, offsets: Tensor) -> Tensor:
        return emb_kernels.embedding_bag(weight.contiguous(), ids, offsets, "sum",
                                         variant=variant, include_last_offset=True)  # fmt: skip

    pool.pooling = f"emb-kernels:{variant}"  # type: ignore[attr-defined]
    return pool


class StepLookup:
    """The rows one trainer reads in one step, as a leaf tensor gathered from the cache.

    ``pool`` pools columns of the leaf (default ``F.embedding_bag``; see :func:`make_pool`);
    it must be differentiable, since ``leaf.grad`` is what the trainers all-reduce.
    """

    def __init__(self, cache: RowCache, sparse: JaggedBatch, table_offsets: Tensor,
                 pool: PoolFn = torch_pool) -> None:  # fmt: skip
        self.sparse = sparse
        rows, offsets = global_ids(sparse, table_offsets.to(sparse.device))
        rows, offsets = rows.to(cache.device), offsets.to(cache.device)
        self.rows, self.inverse = torch.unique(rows, sorted=True, return_inverse=True)
        slots = cache.slots_of(self.rows)
        self.leaf = cache.weight.index_select(0, slots).requires_grad_(True)
        self.offsets = offsets
        self.num_features = sparse.num_features
        self.batch_size = sparse.batch_size
        self.pool = pool

    def pooled(self, start: int, stop: int) -> Tensor:
        """Sum-pooled columns ``start:stop`` of every feature: ``[B, F * (stop - start)]``."""
        w = stop - start
        out = self.pool(self.inverse, self.leaf[:, start:stop], self.offsets)
        out = out.view(self.num_features, self.batch_size, w).transpose(0, 1)
        return out.reshape(self.batch_size, self.num_features * w)

    def grad(self) -> Tensor:
        """The summed gradient of each row read (zeros if nothing reached it)."""
        g = self.leaf.grad
        return torch.zeros_like(self.leaf) if g is None else g


class CachedEmbedding(nn.Module):
    """rec-common's embedding contract over a cache: columns ``start:stop`` of the rows."""

    positional_keys = True

    def __init__(self, source, num_features: int, start: int, stop: int,
                 keys: Sequence[str] | None = None) -> None:  # fmt: skip
        super().__init__()
        self._source = [source]  # not a submodule
        self.start, self.stop = int(start), int(stop)
        self.dims = (self.stop - self.start,) * num_features
        self.keys = tuple(keys) if keys is not None else tuple(f"f{i}" for i in range(num_features))

    def forward(self, sparse: JaggedBatch) -> Tensor:
        return self._source[0].lookup(sparse).pooled(self.start, self.stop)
