"""Wide & Deep (Cheng et al., 2016): a linear model and an MLP, summed into one logit.

The wide part is linear over the dense features plus one learned scalar per sparse id
(a second, 1-wide embedding collection under the same contract, so it can be plugged too);
the deep part is an MLP over the dense features and the pooled embeddings.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from rec_common.jagged import JaggedBatch
from rec_common.models.base import (
    check_inputs,
    check_num_dense,
    logit_mlp,
    lookup,
    resolve_embedding,
)


class WideAndDeep(nn.Module):
    """Wide & Deep returning raw logits ``[B]`` (train with ``nn.BCEWithLogitsLoss``).

    Args:
        num_dense: dense features per sample.
        table_sizes: rows per sparse feature (for the default deep and wide embeddings).
        embedding_dim: width of the deep embeddings.
        deep_mlp: deep MLP widths after its input (``num_dense + sum of embedding widths``),
            ending in 1, e.g. ``"256-128-1"``.
        embedding: plugged deep embedding module (any widths).
        wide_embedding: plugged wide embedding module; all its widths must be 1. Default:
            ``TorchEmbeddingBags(table_sizes, 1)``.
        keys, sparse_grad: for the default embeddings.

    >>> WideAndDeep(num_dense=13, table_sizes=[10] * 26, embedding_dim=16).deep_mlp.in_features
    429
    """

    def __init__(
        self,
        num_dense: int,
        table_sizes: Sequence[int] | None = None,
        embedding_dim: int | None = None,
        deep_mlp: str | Sequence[int] = "256-128-1",
        embedding: nn.Module | None = None,
        wide_embedding: nn.Module | None = None,
        keys: Sequence[str] | None = None,
        sparse_grad: bool = False,
    ) -> None:
        super().__init__()
        self.num_dense = check_num_dense(num_dense, "WideAndDeep")
        self.embedding = resolve_embedding(
            embedding, table_sizes, embedding_dim, keys, "WideAndDeep", sparse_grad
        )
        if wide_embedding is None and table_sizes is None:
            table_sizes = getattr(self.embedding, "table_sizes", None)
        self.wide_embedding = resolve_embedding(
            wide_embedding, table_sizes, 1, keys, "WideAndDeep", sparse_grad, what="wide_embedding"
        )
        wide_dims = tuple(int(d) for d in self.wide_embedding.dims)
        if any(d != 1 for d in wide_dims):
            raise ValueError(f"WideAndDeep: wide_embedding widths must all be 1, got {wide_dims}")
        if len(wide_dims) != len(tuple(self.embedding.dims)):
            raise ValueError(
                f"WideAndDeep: wide_embedding has {len(wide_dims)} features, the deep embedding "
                f"{len(tuple(self.embedding.dims))}"
            )
        self.wide_dense = nn.Linear(self.num_dense, 1)
        deep_in = self.num_dense + sum(int(d) for d in self.embedding.dims)
        self.deep_mlp = logit_mlp(deep_in, deep_mlp, "deep_mlp", "WideAndDeep")

    def forward(self, dense: Tensor, sparse: JaggedBatch) -> Tensor:
        """Raw logits ``[B]``: wide(dense, ids) + deep(dense, embeddings)."""
        check_inputs(dense, sparse, self.num_dense, "WideAndDeep")
        wide = self.wide_dense(dense).squeeze(1)
        wide = wide + lookup(self.wide_embedding, sparse, "WideAndDeep").sum(dim=1)
        emb = lookup(self.embedding, sparse, "WideAndDeep")
        deep = self.deep_mlp(torch.cat([dense, emb], dim=1)).squeeze(1)
        return wide + deep
