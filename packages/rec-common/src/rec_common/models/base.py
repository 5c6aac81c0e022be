"""What every model shares: choosing its embedding module and checking its inputs.

All models take ``forward(dense: Tensor[B, num_dense] float, sparse: JaggedBatch)`` and
return raw logits ``Tensor[B]``: train them with ``nn.BCEWithLogitsLoss`` and apply
``torch.sigmoid`` for click probabilities.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from rec_common.jagged import JaggedBatch
from rec_common.models.embedding import TorchEmbeddingBags
from rec_common.models.mlp import MLP, parse_arch


def resolve_embedding(
    embedding: nn.Module | None,
    table_sizes: Sequence[int] | None,
    embedding_dim: int | Sequence[int] | None,
    keys: Sequence[str] | None,
    owner: str,
    sparse_grad: bool = False,
    what: str = "embedding",
) -> nn.Module:
    """The module a model uses: ``embedding`` if given, else ``TorchEmbeddingBags(mode="sum")``.

    A plugged module is checked for ``.dims``/``.keys`` here; its output shape is checked on
    every call (:func:`lookup`, cheap). Without one, ``table_sizes`` and ``embedding_dim``
    are required.
    """
    if embedding is not None:
        if not isinstance(embedding, nn.Module):
            raise TypeError(f"{owner}: {what} must be an nn.Module, got {type(embedding).__name__}")
        for attr in ("dims", "keys"):
            if not hasattr(embedding, attr):
                raise TypeError(
                    f"{owner}: {what} ({type(embedding).__name__}) has no .{attr}; a plugged "
                    "embedding module needs .dims (one width per feature) and .keys (names in order)"
                )
        if len(tuple(embedding.dims)) != len(tuple(embedding.keys)):
            raise ValueError(
                f"{owner}: {what} has {len(tuple(embedding.dims))} dims for "
                f"{len(tuple(embedding.keys))} keys; expected one width per feature"
            )
        if table_sizes is not None and len(tuple(table_sizes)) != len(tuple(embedding.dims)):
            raise ValueError(
                f"{owner}: {len(tuple(table_sizes))} table_sizes but {what} "
                f"({type(embedding).__name__}) has {len(tuple(embedding.dims))} features"
            )
        return embedding
    if table_sizes is None:
        raise ValueError(f"{owner}: pass table_sizes (rows per sparse feature) or an {what} module")
    if embedding_dim is None:
        raise ValueError(f"{owner}: pass embedding_dim or an {what} module")
    return TorchEmbeddingBags(table_sizes, embedding_dim, keys=keys, mode="sum", sparse=sparse_grad)


def lookup(embedding: nn.Module, sparse: JaggedBatch, owner: str) -> Tensor:
    """``embedding(sparse)`` with its shape checked against the contract (no data is read)."""
    out = embedding(sparse)
    width = sum(embedding.dims)
    if not isinstance(out, Tensor) or tuple(out.shape) != (sparse.batch_size, width):
        got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(
            f"{owner}: the embedding module {type(embedding).__name__} returned {got}, expected "
            f"({sparse.batch_size}, {width}) = (batch_size, sum of dims); "
            "rec_common.models.validate_embedding(module, batch) tells more"
        )
    return out


def check_num_dense(num_dense: int, owner: str) -> int:
    if int(num_dense) < 1:
        raise ValueError(f"{owner}: num_dense must be >= 1, got {num_dense}")
    return int(num_dense)


def check_inputs(dense: Tensor, sparse: JaggedBatch, num_dense: int, owner: str) -> None:
    """Dense must be a float ``[B, num_dense]`` tensor with B = ``sparse.batch_size``."""
    if not isinstance(dense, Tensor):
        raise TypeError(
            f"{owner}: dense must be a Tensor [batch, {num_dense}], got {type(dense).__name__}"
        )
    if not isinstance(sparse, JaggedBatch):
        raise TypeError(
            f"{owner}: sparse must be a rec_common.jagged.JaggedBatch, got {type(sparse).__name__}"
        )
    if dense.dim() != 2 or dense.shape[1] != num_dense:
        raise ValueError(
            f"{owner}: dense has shape {tuple(dense.shape)}, expected (batch, {num_dense})"
        )
    if not dense.is_floating_point():
        raise TypeError(f"{owner}: dense must be floating point (float32), got {dense.dtype}")
    if dense.shape[0] != sparse.batch_size:
        raise ValueError(
            f"{owner}: dense has {dense.shape[0]} rows but the sparse batch has "
            f"{sparse.batch_size} samples"
        )


def logit_mlp(in_features: int, arch: str | Sequence[int], name: str, owner: str) -> MLP:
    """An MLP from ``in_features`` through the widths of ``arch``, which must end in 1 (the logit)."""
    sizes = parse_arch(arch, name)
    if sizes[-1] != 1:
        raise ValueError(
            f"{owner}: {name} {arch!r} ends in width {sizes[-1]}; it must end in 1 "
            f"(one logit per sample), e.g. '{'-'.join(map(str, sizes))}-1'"
        )
    return MLP([in_features, *sizes], last_relu=False)
