"""DCN-v2 (Wang et al., 2021): a cross network and a deep network over [dense, embeddings].

Each cross layer computes ``x_{l+1} = x0 * (W x_l + b) + x_l`` with a full ``D x D`` matrix
W, or, with ``low_rank=r``, ``W = U V^T`` (``U, V: D x r``), which costs ``2*D*r`` instead of
``D^2`` weights. "stacked" feeds the cross output to the deep network; "parallel" runs both
on x0 and concatenates them. A linear head gives the logit.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from rec_common.jagged import JaggedBatch
from rec_common.models.base import check_inputs, check_num_dense, lookup, resolve_embedding
from rec_common.models.mlp import MLP, parse_arch

STRUCTURES = ("stacked", "parallel")


class CrossNetwork(nn.Module):
    """``num_layers`` DCN-v2 cross layers on ``[B, width]`` inputs, full or low-rank."""

    def __init__(self, width: int, num_layers: int = 3, low_rank: int | None = None) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers: expected >= 1 cross layers, got {num_layers}")
        if low_rank is not None and not low_rank >= 1:
            raise ValueError(f"low_rank: expected a rank >= 1 or None (full rank), got {low_rank}")
        self.width, self.low_rank = width, low_rank
        layers: list[nn.Module] = []
        for _ in range(num_layers):
            if low_rank is None:
                layer: nn.Module = nn.Linear(width, width)
            else:
                layer = nn.Sequential(
                    nn.Linear(width, low_rank, bias=False), nn.Linear(low_rank, width)
                )
            for m in layer.modules():
                if isinstance(m, nn.Linear):
                    nn.init.xavier_normal_(m.weight)
                    if m.bias is not None:
                        nn.init.zeros_(m.bias)
            layers.append(layer)
        self.layers = nn.ModuleList(layers)

    def forward(self, x0: Tensor) -> Tensor:
        x = x0
        for layer in self.layers:
            x = x0 * layer(x) + x
        return x


class DCNv2(nn.Module):
    """DCN-v2 returning raw logits ``[B]`` (train with ``nn.BCEWithLogitsLoss``).

    Args:
        num_dense: dense features per sample.
        table_sizes: rows per sparse feature (for the default embedding).
        embedding_dim: embedding width.
        num_cross_layers: cross layers (>= 1).
        low_rank: rank r of each cross matrix, or ``None`` for full ``D x D`` matrices.
        deep_mlp: hidden widths of the deep network (each followed by ReLU), e.g.
            ``"512-256"``; ``None`` or ``""`` for a cross network alone. A linear head maps
            the (stacked) deep output or the (parallel) concatenation to one logit.
        structure: ``"stacked"`` (cross, then deep) or ``"parallel"`` (both on x0).
        embedding: plugged embedding module (any widths).
        keys, sparse_grad: for the default embedding.

    >>> DCNv2(num_dense=13, table_sizes=[10] * 26, embedding_dim=16, low_rank=64).cross.width
    429
    """

    def __init__(
        self,
        num_dense: int,
        table_sizes: Sequence[int] | None = None,
        embedding_dim: int | None = None,
        num_cross_layers: int = 3,
        low_rank: int | None = None,
        deep_mlp: str | Sequence[int] | None = "512-256",
        structure: str = "stacked",
        embedding: nn.Module | None = None,
        keys: Sequence[str] | None = None,
        sparse_grad: bool = False,
    ) -> None:
        super().__init__()
        self.num_dense = check_num_dense(num_dense, "DCNv2")
        if structure not in STRUCTURES:
            raise ValueError(f"DCNv2: structure must be one of {STRUCTURES}, got {structure!r}")
        self.structure = structure
        self.embedding = resolve_embedding(
            embedding, table_sizes, embedding_dim, keys, "DCNv2", sparse_grad
        )
        width = self.num_dense + sum(int(d) for d in self.embedding.dims)
        self.cross = CrossNetwork(width, num_cross_layers, low_rank)
        no_deep = deep_mlp is None or not (
            deep_mlp.strip() if isinstance(deep_mlp, str) else len(deep_mlp)
        )
        hidden = [] if no_deep else parse_arch(deep_mlp, "deep_mlp")
        if hidden:
            self.deep: nn.Module = MLP([width, *hidden], last_relu=True)
            deep_out = hidden[-1]
        else:
            self.deep = nn.Identity()
            deep_out = width
        if structure == "stacked" or not hidden:
            head_in = deep_out
        else:
            head_in = width + deep_out
        self.head = nn.Linear(head_in, 1)

    def forward(self, dense: Tensor, sparse: JaggedBatch) -> Tensor:
        """Raw logits ``[B]``."""
        check_inputs(dense, sparse, self.num_dense, "DCNv2")
        x0 = torch.cat([dense, lookup(self.embedding, sparse, "DCNv2")], dim=1)
        if self.structure == "stacked":
            h = self.deep(self.cross(x0))
        elif isinstance(self.deep, nn.Identity):
            h = self.cross(x0)
        else:
            h = torch.cat([self.cross(x0), self.deep(x0)], dim=1)
        return self.head(h).squeeze(1)
