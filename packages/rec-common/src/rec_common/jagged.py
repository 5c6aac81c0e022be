"""Jagged sparse batches: per-feature ids with bag boundaries.

A batch of B samples over F sparse features holds, for each feature f, a 1-D tensor of ids
``values[f]`` and ``offsets[f]`` of length B+1: the ids of sample b are
``values[f][offsets[f][b]:offsets[f][b+1]]`` (an empty range is an empty bag)::

    keys    = ("C1",              "C2")
    values  = ([7, 3, 9],         [4])
    offsets = ([0, 2, 2, 3],      [0, 0, 1, 1])      # B = 3
    bags    = C1: [7,3] [] [9]    C2: [] [4] []

Optional per-sample weights sit beside the ids (``weights[f]``, same length as ``values[f]``).
This is the layout FBGEMM's table-batched embeddings and TorchRec's ``KeyedJaggedTensor`` use,
one feature at a time, so conversion is a concatenation (:meth:`JaggedBatch.to_kjt`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

_INDEX_DTYPES = (torch.int32, torch.int64)


def _as_tuple(name: str, seq, n: int | None) -> tuple[Tensor, ...]:
    items = tuple(seq)
    if n is not None and len(items) != n:
        raise ValueError(f"{name}: expected one tensor per key ({n}), got {len(items)}")
    for i, t in enumerate(items):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name}[{i}]: expected a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 1:
            raise ValueError(f"{name}[{i}]: expected a 1-D tensor, got shape {tuple(t.shape)}")
    return items


@dataclass(frozen=True, init=False)
class JaggedBatch:
    """Sparse features of one batch, jagged per feature (see the module docstring).

    Construction checks shapes and dtypes (cheap); :meth:`validate` checks contents
    (monotone offsets, ids inside the tables), which costs a pass over the data.
    """

    keys: tuple[str, ...]
    values: tuple[Tensor, ...]
    offsets: tuple[Tensor, ...]
    weights: tuple[Tensor, ...] | None

    def __init__(
        self,
        keys: Sequence[str],
        values: Sequence[Tensor],
        offsets: Sequence[Tensor],
        weights: Sequence[Tensor] | None = None,
    ) -> None:
        keys = tuple(str(k) for k in keys)
        if len(set(keys)) != len(keys):
            dup = sorted({k for k in keys if keys.count(k) > 1})
            raise ValueError(f"keys: duplicate feature names {dup}")
        values = _as_tuple("values", values, len(keys))
        offsets = _as_tuple("offsets", offsets, len(keys))
        batch_size = None
        for k, v, o in zip(keys, values, offsets):
            if v.dtype not in _INDEX_DTYPES:
                raise TypeError(f"values of feature {k!r}: expected int32 or int64, got {v.dtype}")
            if o.dtype != v.dtype:
                raise TypeError(
                    f"offsets of feature {k!r}: dtype {o.dtype} differs from its values' {v.dtype}"
                )
            if o.numel() < 1:
                raise ValueError(f"offsets of feature {k!r}: expected batch_size+1 entries, got 0")
            if v.device != o.device:
                raise ValueError(f"feature {k!r}: values on {v.device} but offsets on {o.device}")
            if batch_size is None:
                batch_size = o.numel() - 1
            elif o.numel() - 1 != batch_size:
                raise ValueError(
                    f"offsets of feature {k!r}: {o.numel() - 1} bags, but feature "
                    f"{keys[0]!r} has {batch_size}; every feature needs one bag per sample"
                )
        if weights is not None:
            weights = _as_tuple("weights", weights, len(keys))
            for k, v, w in zip(keys, values, weights):
                if not w.is_floating_point():
                    raise TypeError(f"weights of feature {k!r}: expected floats, got {w.dtype}")
                if w.numel() != v.numel():
                    raise ValueError(
                        f"weights of feature {k!r}: {w.numel()} weights for {v.numel()} ids"
                    )
        object.__setattr__(self, "keys", keys)
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "offsets", offsets)
        object.__setattr__(self, "weights", weights)

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_lengths(
        cls,
        keys: Sequence[str],
        values: Sequence[Tensor],
        lengths: Sequence[Tensor],
        weights: Sequence[Tensor] | None = None,
    ) -> JaggedBatch:
        """Build from bag lengths instead of offsets."""
        values = _as_tuple("values", values, len(tuple(keys)))
        lengths = _as_tuple("lengths", lengths, len(values))
        offsets = []
        for k, v, n in zip(keys, values, lengths):
            if n.numel() and int(n.min()) < 0:
                pos = int(torch.nonzero(n < 0)[0])
                raise ValueError(
                    f"lengths of feature {k!r}: negative length {int(n[pos])} at sample {pos}"
                )
            o = torch.zeros(n.numel() + 1, dtype=v.dtype, device=v.device)
            torch.cumsum(n.to(v.dtype), 0, out=o[1:])
            offsets.append(o)
        return cls(keys, values, offsets, weights)

    @classmethod
    def from_dense(cls, ids: Tensor, keys: Sequence[str] | None = None) -> JaggedBatch:
        """One id per sample per feature (one-hot, as Criteo): ``ids`` is ``[B, F]``."""
        if not isinstance(ids, Tensor):
            ids = torch.as_tensor(ids)
        if ids.dim() != 2:
            raise ValueError(
                f"ids: expected a [batch, features] tensor, got shape {tuple(ids.shape)}"
            )
        if ids.dtype not in _INDEX_DTYPES:
            raise TypeError(f"ids: expected int32 or int64, got {ids.dtype}")
        b, f = ids.shape
        keys = tuple(keys) if keys is not None else tuple(f"f{i}" for i in range(f))
        if len(keys) != f:
            raise ValueError(f"keys: {len(keys)} names for {f} feature columns")
        offsets = torch.arange(b + 1, dtype=ids.dtype, device=ids.device)
        cols = ids.t().contiguous()
        return cls(keys, tuple(cols[i] for i in range(f)), (offsets,) * f)

    # ------------------------------------------------------------------ accessors
    @property
    def batch_size(self) -> int:
        return self.offsets[0].numel() - 1 if self.offsets else 0

    @property
    def num_features(self) -> int:
        return len(self.keys)

    @property
    def device(self) -> torch.device:
        return self.values[0].device if self.values else torch.device("cpu")

    def lengths(self, i: int | str) -> Tensor:
        """Bag lengths of feature ``i`` (an index or a key)."""
        o = self.offsets[self._index(i)]
        return o[1:] - o[:-1]

    def feature(self, key: int | str) -> tuple[Tensor, Tensor, Tensor | None]:
        """``(values, offsets, weights or None)`` of one feature."""
        i = self._index(key)
        return self.values[i], self.offsets[i], None if self.weights is None else self.weights[i]

    def num_ids(self) -> int:
        """Total number of ids over all features."""
        return sum(v.numel() for v in self.values)

    def _index(self, key: int | str) -> int:
        if isinstance(key, int):
            if not -len(self.keys) <= key < len(self.keys):
                raise IndexError(f"feature index {key} out of range for {len(self.keys)} features")
            return key % len(self.keys)
        try:
            return self.keys.index(key)
        except ValueError:
            raise KeyError(f"no feature named {key!r}; features are {list(self.keys)}") from None

    # ------------------------------------------------------------------ checks
    def validate(self, table_sizes: Sequence[int] | None = None) -> None:
        """Check offsets and ids; raise ``ValueError`` naming feature, position and value.

        Offsets must start at 0, never decrease and end at the number of ids; with
        ``table_sizes`` every id must be in ``[0, table_size)``.
        """
        if table_sizes is not None and len(table_sizes) != len(self.keys):
            raise ValueError(
                f"table_sizes: {len(table_sizes)} sizes for {len(self.keys)} features {list(self.keys)}"
            )
        for i, (k, v, o) in enumerate(zip(self.keys, self.values, self.offsets)):
            if int(o[0]) != 0:
                raise ValueError(f"feature {k!r}: offsets[0] is {int(o[0])}, expected 0")
            step = o[1:] - o[:-1]
            if step.numel() and bool((step < 0).any()):
                pos = int(torch.nonzero(step < 0)[0]) + 1
                raise ValueError(
                    f"feature {k!r}: offsets not monotone at position {pos}: "
                    f"offsets[{pos}]={int(o[pos])} < offsets[{pos - 1}]={int(o[pos - 1])}"
                )
            if int(o[-1]) != v.numel():
                raise ValueError(
                    f"feature {k!r}: last offset is {int(o[-1])} but there are {v.numel()} values"
                )
            if table_sizes is None or v.numel() == 0:
                continue
            n = int(table_sizes[i])
            bad = (v < 0) | (v >= n)
            if bool(bad.any()):
                pos = int(torch.nonzero(bad)[0])
                sample = (
                    int(
                        torch.searchsorted(
                            o, torch.tensor([pos], dtype=o.dtype, device=o.device), right=True
                        )[0]
                    )
                    - 1
                )
                raise ValueError(
                    f"feature {k!r}: id {int(v[pos])} at position {pos} (sample {sample}) is "
                    f"outside its table of {n} rows (expected 0 <= id < {n})"
                )

    # ------------------------------------------------------------------ conversions
    def to(self, device: torch.device | str, non_blocking: bool = False) -> JaggedBatch:
        def move(ts):
            return tuple(t.to(device, non_blocking=non_blocking) for t in ts)

        return JaggedBatch(
            self.keys,
            move(self.values),
            move(self.offsets),
            None if self.weights is None else move(self.weights),
        )

    def pin_memory(self) -> JaggedBatch:
        def pin(ts):
            return tuple(t.pin_memory() for t in ts)

        return JaggedBatch(
            self.keys,
            pin(self.values),
            pin(self.offsets),
            None if self.weights is None else pin(self.weights),
        )

    def with_index_dtype(self, dtype: torch.dtype) -> JaggedBatch:
        """The same batch with int32 or int64 ids and offsets."""
        if dtype not in _INDEX_DTYPES:
            raise TypeError(f"dtype: expected torch.int32 or torch.int64, got {dtype}")
        return JaggedBatch(
            self.keys,
            tuple(v.to(dtype) for v in self.values),
            tuple(o.to(dtype) for o in self.offsets),
            self.weights,
        )

    def concat_values(self) -> tuple[Tensor, Tensor]:
        """All ids in one tensor, feature-major, with ``B*F+1`` offsets (TBE's layout)."""
        if not self.keys:
            raise ValueError("an empty batch (no features) has no values to concatenate")
        dtype = self.values[0].dtype
        if any(v.dtype != dtype for v in self.values):
            dtype = torch.int64
        values = torch.cat([v.to(dtype) for v in self.values])
        lengths = torch.cat([self.lengths(i).to(dtype) for i in range(self.num_features)])
        offsets = torch.zeros(lengths.numel() + 1, dtype=dtype, device=values.device)
        torch.cumsum(lengths, 0, out=offsets[1:])
        return values, offsets

    def to_kjt(self):
        """TorchRec ``KeyedJaggedTensor`` with the same keys, ids, lengths and weights."""
        kjt_cls = _keyed_jagged_tensor()
        values, offsets = self.concat_values()
        weights = None if self.weights is None else torch.cat(self.weights)
        return kjt_cls(keys=list(self.keys), values=values, weights=weights, offsets=offsets)

    @classmethod
    def from_kjt(cls, kjt) -> JaggedBatch:
        """From a TorchRec ``KeyedJaggedTensor`` (keys kept, values split per key)."""
        keys = list(kjt.keys())
        stride = kjt.stride()
        lengths = kjt.lengths()
        values = kjt.values()
        if values.dtype not in _INDEX_DTYPES:
            values = values.to(torch.int64)
        weights = kjt.weights_or_none()
        per_key = lengths.view(len(keys), stride) if keys else lengths.view(0, stride)
        counts = per_key.sum(dim=1).tolist()
        vals = torch.split(values, counts)
        ws = None if weights is None else torch.split(weights, counts)
        return cls.from_lengths(keys, vals, [per_key[i] for i in range(len(keys))], ws)


def _keyed_jagged_tensor():
    try:
        from torchrec.sparse.jagged_tensor import KeyedJaggedTensor
    except ImportError as exc:
        raise ImportError(
            "JaggedBatch.to_kjt needs TorchRec. Install it with "
            "`pip install 'rec-common[torchrec]'` (on a CPU-only machine: "
            "`pip install fbgemm-gpu-cpu==1.8.0 tensordict iopath torchmetrics pyre-extensions "
            "&& pip install --no-deps torchrec==1.8.0`)"
        ) from exc
    return KeyedJaggedTensor
