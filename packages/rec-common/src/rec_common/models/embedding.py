"""The pluggable embedding lookup under every model, and its plain-torch default.

A model never indexes tables itself: it calls ``embedding(sparse)`` on a module that obeys
one contract, so a cache, a sharded store or a custom kernel can sit under the same model::

    module(sparse: JaggedBatch) -> Tensor[B, sum(module.dims)]   # pooled, concatenated in key order
    module.dims: tuple[int, ...]                                  # one width per feature
    module.keys: tuple[str, ...]                                  # feature names, in order

That is the layout FBGEMM's table-batched embeddings produce. :class:`TorchEmbeddingBags` is
the reference (one ``nn.EmbeddingBag`` per feature); :func:`validate_embedding` checks a
plugged module against the contract on a real batch and says what was wrong. A module may
set ``positional_keys = True`` to say it takes features by position and ignores the batch's
names (``TorchEmbeddingBags(keys=None)`` does); otherwise the batch's keys must equal ``.keys``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rec_common.jagged import JaggedBatch

_MODES = ("sum", "mean")


def default_keys(num_features: int) -> tuple[str, ...]:
    """``f0, f1, ...``: the names ``JaggedBatch.from_dense`` gives when none are passed."""
    return tuple(f"f{i}" for i in range(num_features))


class TorchEmbeddingBags(nn.Module):
    """One ``nn.EmbeddingBag`` per sparse feature, pooled and concatenated in key order.

    Args:
        table_sizes: rows of each feature's table.
        dims: one embedding width for all features, or one per feature.
        keys: feature names. When given, every batch must carry exactly these keys in this
            order (a mismatch raises). When ``None``, features are taken by position, the
            batch's names are not checked, and ``.keys`` reports ``f0, f1, ...``.
        mode: ``"sum"`` or ``"mean"`` pooling. An empty bag pools to zeros in both modes.
            With per-sample weights, ``"mean"`` is the weighted sum divided by the bag length.
        sparse: produce sparse gradients for the tables (use with ``torch.optim.SparseAdam``
            or plain SGD); the dense default suits any optimizer.
        check_ids: check every id is inside its table before the lookup and raise a
            ``ValueError`` naming feature, position and id (costs a min/max per feature and,
            on GPU, a synchronisation; turn off in tuned loops once the data is trusted).

    Weights start as U(-sqrt(1/n), sqrt(1/n)) for a table of n rows, as Meta's DLRM does.

    >>> emb = TorchEmbeddingBags([10, 20], dims=4)
    >>> emb(JaggedBatch.from_dense(torch.tensor([[1, 2], [3, 4]]))).shape
    torch.Size([2, 8])
    """

    def __init__(
        self,
        table_sizes: Sequence[int],
        dims: int | Sequence[int],
        keys: Sequence[str] | None = None,
        mode: str = "sum",
        sparse: bool = False,
        check_ids: bool = True,
    ) -> None:
        super().__init__()
        table_sizes = tuple(int(n) for n in table_sizes)
        if not table_sizes:
            raise ValueError("table_sizes: expected at least one table, got none")
        for i, n in enumerate(table_sizes):
            if n < 1:
                raise ValueError(f"table_sizes[{i}]: expected >= 1 rows, got {n}")
        if isinstance(dims, int):
            dims = (dims,) * len(table_sizes)
        dims = tuple(int(d) for d in dims)
        if len(dims) != len(table_sizes):
            raise ValueError(f"dims: {len(dims)} widths for {len(table_sizes)} tables")
        for i, d in enumerate(dims):
            if d < 1:
                raise ValueError(f"dims[{i}]: expected a width >= 1, got {d}")
        if mode not in _MODES:
            raise ValueError(f"mode: expected one of {_MODES}, got {mode!r}")
        self.positional_keys = keys is None
        keys = default_keys(len(table_sizes)) if keys is None else tuple(str(k) for k in keys)
        if len(keys) != len(table_sizes):
            raise ValueError(f"keys: {len(keys)} names for {len(table_sizes)} tables")
        self.table_sizes = table_sizes
        self.dims = dims
        self.keys = keys
        self.mode = mode
        self.check_ids = check_ids
        self.bags = nn.ModuleList(
            nn.EmbeddingBag(n, d, mode=mode, sparse=sparse, include_last_offset=True)
            for n, d in zip(table_sizes, dims)
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """U(-sqrt(1/n), sqrt(1/n)) per table of n rows (DLRM's ``create_emb``)."""
        for bag, n in zip(self.bags, self.table_sizes):
            bound = math.sqrt(1.0 / n)
            nn.init.uniform_(bag.weight, -bound, bound)

    def forward(self, sparse: JaggedBatch) -> Tensor:
        """Pooled embeddings ``[B, sum(dims)]``, features concatenated in key order."""
        check_batch_keys(
            sparse, self.keys, positional=self.positional_keys, owner="TorchEmbeddingBags"
        )
        if self.check_ids:
            self._check_ids(sparse)
        outs = []
        for i, bag in enumerate(self.bags):
            values, offsets, weights = sparse.feature(i)
            if weights is not None:
                weights = weights.to(bag.weight.dtype)
            if weights is not None and self.mode == "mean":
                pooled = F.embedding_bag(
                    values,
                    bag.weight,
                    offsets,
                    mode="sum",
                    sparse=bag.sparse,
                    per_sample_weights=weights,
                    include_last_offset=True,
                )
                lengths = (offsets[1:] - offsets[:-1]).clamp(min=1).to(pooled.dtype)
                pooled = pooled / lengths.unsqueeze(1)
            else:
                pooled = bag(values, offsets, per_sample_weights=weights)
            outs.append(pooled)
        return torch.cat(outs, dim=1)

    def _check_ids(self, sparse: JaggedBatch) -> None:
        """One host sync for all features; the slow search runs only when an id is bad."""
        flags = [
            (v.min() < 0) | (v.max() >= n)
            for v, n in zip(sparse.values, self.table_sizes)
            if v.numel()
        ]
        if not flags or not bool(torch.stack(flags).any()):
            return
        for key, values, rows in zip(sparse.keys, sparse.values, self.table_sizes):
            bad = (values < 0) | (values >= rows)
            if values.numel() and bool(bad.any()):
                pos = int(torch.nonzero(bad)[0])
                raise ValueError(
                    f"feature {key!r}: id {int(values[pos])} at position {pos} is outside its "
                    f"table of {rows} rows (expected 0 <= id < {rows})"
                )

    def extra_repr(self) -> str:
        return f"tables={len(self.table_sizes)}, dims={self.dims}, mode={self.mode!r}"


def check_batch_keys(
    sparse: JaggedBatch, keys: Sequence[str], positional: bool = False, owner: str = "embedding"
) -> None:
    """Raise if ``sparse`` does not carry ``keys`` in order (or, positional, as many features)."""
    if not isinstance(sparse, JaggedBatch):
        raise TypeError(
            f"{owner}: sparse must be a rec_common.jagged.JaggedBatch, got {type(sparse).__name__}"
        )
    if positional:
        if sparse.num_features != len(keys):
            raise ValueError(
                f"{owner}: the batch has {sparse.num_features} sparse features but there are "
                f"{len(keys)} tables"
            )
    elif tuple(sparse.keys) != tuple(keys):
        raise ValueError(
            f"{owner}: the batch's keys {list(sparse.keys)} differ from the tables' keys "
            f"{list(keys)}; build the tables with keys=batch.keys (or keys=None to match by position)"
        )


def validate_embedding(
    module: nn.Module, batch: JaggedBatch, dtype: torch.dtype | None = torch.float32
) -> Tensor:
    """Check that ``module`` obeys the embedding contract on ``batch``; return its output.

    Checks the ``.dims`` and ``.keys`` attributes, that the keys match the batch's, and that
    ``module(batch)`` is a ``[batch_size, sum(dims)]`` floating tensor of ``dtype`` (pass
    ``dtype=None`` to accept any floating dtype) with finite values. Raises ``TypeError`` or
    ``ValueError`` saying what was wrong and what was expected.
    """
    name = type(module).__name__
    for attr in ("dims", "keys"):
        if not hasattr(module, attr):
            raise TypeError(
                f"{name}: an embedding module needs a .{attr} attribute "
                "(.dims: one width per feature, .keys: feature names in order)"
            )
    try:
        dims = tuple(int(d) for d in module.dims)
        keys = tuple(str(k) for k in module.keys)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name}: .dims must be integers and .keys strings ({exc})") from None
    if len(dims) != len(keys):
        raise ValueError(
            f"{name}: {len(dims)} dims for {len(keys)} keys; expected one width per key"
        )
    if any(d < 1 for d in dims):
        raise ValueError(f"{name}: .dims must all be >= 1, got {dims}")
    positional = bool(getattr(module, "positional_keys", False))
    check_batch_keys(batch, keys, positional=positional, owner=name)
    out = module(batch)
    if not isinstance(out, Tensor):
        raise TypeError(f"{name}: forward must return a Tensor, got {type(out).__name__}")
    expected = (batch.batch_size, sum(dims))
    if tuple(out.shape) != expected:
        raise ValueError(
            f"{name}: output shape {tuple(out.shape)}, expected {expected} "
            f"(batch_size={batch.batch_size}, sum of dims {list(dims)} = {sum(dims)}); "
            "the contract is pooled embeddings concatenated in key order"
        )
    if not out.is_floating_point():
        raise TypeError(f"{name}: output dtype {out.dtype}, expected a floating dtype")
    if dtype is not None and out.dtype != dtype:
        raise TypeError(f"{name}: output dtype {out.dtype}, expected {dtype}")
    if out.numel() and not bool(torch.isfinite(out).all()):
        raise ValueError(f"{name}: output holds NaN or infinite values")
    return out
