"""DeepFM (Guo et al., 2017): a factorization machine and an MLP over shared field embeddings.

Every field gets a k-wide vector: sparse feature f its pooled embedding, dense feature j a
learned vector scaled by its value (the paper's treatment of continuous fields). The FM
second-order term is sum over pairs <v_i, v_j> = 0.5 * sum_k((sum_i v_ik)^2 - sum_i v_ik^2);
the first-order term is linear over the dense values plus one learned scalar per sparse id;
the deep part is an MLP over the concatenated field vectors. The logit is their sum.
"""

from __future__ import annotations

import math
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


def fm_second_order(fields: Tensor) -> Tensor:
    """Sum of pairwise dot products of ``fields [B, n, k]`` -> ``[B]``, in O(n*k)."""
    square_of_sum = fields.sum(dim=1).pow(2)
    sum_of_square = fields.pow(2).sum(dim=1)
    return 0.5 * (square_of_sum - sum_of_square).sum(dim=1)


class DeepFM(nn.Module):
    """DeepFM returning raw logits ``[B]`` (train with ``nn.BCEWithLogitsLoss``).

    Args:
        num_dense: dense features per sample (each becomes an FM field).
        table_sizes: rows per sparse feature (for the default embeddings).
        embedding_dim: k, the width shared by every field.
        deep_mlp: deep MLP widths after its input (``(num_dense + F) * k``), ending in 1.
        embedding: plugged field-embedding module; all widths must be equal.
        first_order_embedding: plugged 1-wide embedding module for the first-order term.
            Default: ``TorchEmbeddingBags(table_sizes, 1)``.
        keys, sparse_grad: for the default embeddings.

    >>> DeepFM(num_dense=13, table_sizes=[10] * 26, embedding_dim=8).deep_mlp.in_features
    312
    """

    def __init__(
        self,
        num_dense: int,
        table_sizes: Sequence[int] | None = None,
        embedding_dim: int | None = None,
        deep_mlp: str | Sequence[int] = "400-400-1",
        embedding: nn.Module | None = None,
        first_order_embedding: nn.Module | None = None,
        keys: Sequence[str] | None = None,
        sparse_grad: bool = False,
    ) -> None:
        super().__init__()
        self.num_dense = check_num_dense(num_dense, "DeepFM")
        self.embedding = resolve_embedding(
            embedding, table_sizes, embedding_dim, keys, "DeepFM", sparse_grad
        )
        dims = tuple(int(d) for d in self.embedding.dims)
        if len(set(dims)) != 1:
            raise ValueError(
                f"DeepFM: the FM term needs all field embeddings equally wide, got widths {dims}"
            )
        k = dims[0]
        if embedding_dim is not None and embedding is not None and int(embedding_dim) != k:
            raise ValueError(
                f"DeepFM: embedding_dim {embedding_dim} but the embedding's width is {k}"
            )
        self.embedding_dim = k
        if first_order_embedding is None and table_sizes is None:
            table_sizes = getattr(self.embedding, "table_sizes", None)
        self.first_order_embedding = resolve_embedding(
            first_order_embedding,
            table_sizes,
            1,
            keys,
            "DeepFM",
            sparse_grad,
            what="first_order_embedding",
        )
        fo_dims = tuple(int(d) for d in self.first_order_embedding.dims)
        if any(d != 1 for d in fo_dims) or len(fo_dims) != len(dims):
            raise ValueError(
                f"DeepFM: first_order_embedding needs {len(dims)} features of width 1, got {fo_dims}"
            )
        self.dense_linear = nn.Linear(self.num_dense, 1)
        self.dense_fields = nn.Parameter(torch.empty(self.num_dense, k))
        nn.init.normal_(self.dense_fields, 0.0, 1.0 / math.sqrt(k))
        self.num_fields = self.num_dense + len(dims)
        self.deep_mlp = logit_mlp(self.num_fields * k, deep_mlp, "deep_mlp", "DeepFM")

    def forward(self, dense: Tensor, sparse: JaggedBatch) -> Tensor:
        """Raw logits ``[B]``: first order + FM second order + deep."""
        check_inputs(dense, sparse, self.num_dense, "DeepFM")
        b = dense.shape[0]
        sparse_fields = lookup(self.embedding, sparse, "DeepFM").view(b, -1, self.embedding_dim)
        dense_fields = dense.unsqueeze(2) * self.dense_fields  # [B, num_dense, k]
        fields = torch.cat([dense_fields, sparse_fields], dim=1)  # [B, n, k]
        first = self.dense_linear(dense).squeeze(1)
        first = first + lookup(self.first_order_embedding, sparse, "DeepFM").sum(dim=1)
        deep = self.deep_mlp(fields.reshape(b, -1)).squeeze(1)
        return first + fm_second_order(fields) + deep
