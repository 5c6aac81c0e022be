"""Recommendation models over a pluggable embedding lookup.

Every model takes ``forward(dense: Tensor[B, num_dense] float32, sparse: JaggedBatch)`` and
returns raw logits ``Tensor[B]`` (train with ``nn.BCEWithLogitsLoss``; ``torch.sigmoid``
gives click probabilities). Each takes ``embedding=`` a module obeying the contract in
:mod:`rec_common.models.embedding`; by default ``TorchEmbeddingBags(table_sizes,
embedding_dim, mode="sum")``.

>>> import torch
>>> from rec_common.jagged import JaggedBatch
>>> model = DLRM(num_dense=13, table_sizes=[100] * 26, embedding_dim=16,
...              bottom_mlp="64-16", top_mlp="64-1")
>>> ids = torch.randint(0, 100, (4, 26))
>>> model(torch.rand(4, 13), JaggedBatch.from_dense(ids)).shape
torch.Size([4])
"""

from rec_common.models.dcn import CrossNetwork, DCNv2
from rec_common.models.deepfm import DeepFM, fm_second_order
from rec_common.models.dlrm import DLRM, interaction_width
from rec_common.models.embedding import TorchEmbeddingBags, validate_embedding
from rec_common.models.mlp import MLP, parse_arch
from rec_common.models.wide_deep import WideAndDeep

__all__ = [
    "DLRM",
    "MLP",
    "CrossNetwork",
    "DCNv2",
    "DeepFM",
    "TorchEmbeddingBags",
    "WideAndDeep",
    "fm_second_order",
    "interaction_width",
    "parse_arch",
    "validate_embedding",
]
