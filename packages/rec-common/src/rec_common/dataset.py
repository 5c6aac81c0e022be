"""A preprocessed Criteo directory, memory-mapped, and a fast batch iterator over it.

``python -m rec_common.criteo preprocess`` writes ``dense.npy`` float32 [N, 13], ``sparse.npy``
int32/int64 [N, 26], ``labels.npy`` float32 [N] and, last, ``meta.json``. :class:`CriteoDataset`
maps the arrays (nothing is read until used), :meth:`CriteoDataset.split` cuts contiguous row
ranges (train / validation / test), and :meth:`CriteoDataset.batches` yields whole batches by
slicing or gathering the arrays, never row by row::

    ds = CriteoDataset("data/kaggle")
    train, val = ds.split([0.9, 0.1])
    for dense, sparse, labels in train.batches(2048, shuffle=True, seed=epoch):
        ...  # dense [B, 13] float32, sparse: JaggedBatch with keys C1..C26, labels [B]

Batch order, as every rank computes it from the seed alone:

* no shuffling (``shuffle=False``): batch k holds rows ``k*B .. k*B+B-1``;
* ``shuffle=True, window=0``: the same contiguous batches in a random order;
* ``shuffle=True`` with a window (``window=None`` means ``DEFAULT_SHUFFLE_WINDOW`` rows): the rows
  are cut into windows of ``window`` rows (rounded up to a multiple of the batch size), the
  windows are visited in a random order, and inside a window the rows are permuted, so a batch
  is B random rows of one window. A larger window mixes more; a smaller one reads more locally.

In every mode the short batch (``N % B`` rows, if any) comes last; ``drop_last`` drops it. The
batch sequence is then dealt round-robin to ``world_size`` ranks (rank r gets batches r, r+W,
...): with ``drop_last=False`` every row is in exactly one rank's batches and ranks differ by at
most one batch; with ``drop_last=True`` the batches that would make ranks uneven are dropped as
well, so every rank gets ``(N // B) // world_size`` full batches.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from rec_common.criteo_tables import NUM_DENSE, NUM_SPARSE, SPARSE_NAMES

META_FILE = "meta.json"
DEFAULT_SHUFFLE_WINDOW = 1 << 20  # rows: 1M rows are ~160 MB of arrays, read as one region
_FILES = {"dense": "dense.npy", "sparse": "sparse.npy", "labels": "labels.npy"}


class CriteoDataset:
    """Rows ``start..stop`` of a preprocessed Criteo directory (all rows by default).

    ``table_sizes`` and ``meta`` come from ``meta.json``; indexing with an int, a slice or an
    index array gives numpy copies ``(dense, sparse, labels)``.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        path = Path(path)
        if not path.is_dir():
            raise ValueError(f"Criteo dataset {str(path)!r}: no such directory")
        meta_path = path / META_FILE
        if not meta_path.is_file():
            raise ValueError(
                f"Criteo dataset {str(path)!r}: no {META_FILE}, so preprocessing did not finish "
                f"(or never ran); run: python -m rec_common.criteo preprocess INPUT... --out {path}"
            )
        try:
            meta = json.loads(meta_path.read_text())
            n = int(meta["num_rows"])
            sizes = tuple(int(s) for s in meta["table_sizes"])
            files = meta.get("files", _FILES)
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{meta_path}: not a rec_common.criteo meta.json ({exc})") from None
        arrays = {}
        for name, shape in (
            ("dense", (n, NUM_DENSE)),
            ("sparse", (n, NUM_SPARSE)),
            ("labels", (n,)),
        ):
            file = path / files[name]
            try:
                arr = np.load(file, mmap_mode="r")
            except (OSError, ValueError) as exc:
                raise ValueError(
                    f"Criteo dataset {str(path)!r}: cannot map {file.name} ({exc})"
                ) from None
            if arr.shape != shape:
                raise ValueError(
                    f"Criteo dataset {str(path)!r}: {file.name} has shape {arr.shape}, "
                    f"meta.json says {shape}; the directory is inconsistent, preprocess again"
                )
            arrays[name] = arr
        if len(sizes) != NUM_SPARSE:
            raise ValueError(f"{meta_path}: expected {NUM_SPARSE} table sizes, got {len(sizes)}")
        self.path = path
        self.meta = meta
        self.table_sizes = sizes
        self._arrays = arrays
        self._start, self._stop = 0, n

    # ------------------------------------------------------------------ views
    def _view(self, start: int, stop: int) -> CriteoDataset:
        view = object.__new__(CriteoDataset)
        view.path, view.meta, view.table_sizes, view._arrays = (
            self.path, self.meta, self.table_sizes, self._arrays,
        )  # fmt: skip
        view._start, view._stop = self._start + start, self._start + stop
        return view

    @property
    def num_rows(self) -> int:
        return self._stop - self._start

    def __len__(self) -> int:
        return self.num_rows

    @property
    def dense(self) -> np.ndarray:
        """Read-only memory map of this range's dense features, float32 [n, 13]."""
        return self._arrays["dense"][self._start : self._stop]

    @property
    def sparse(self) -> np.ndarray:
        """Read-only memory map of this range's categorical ids [n, 26]."""
        return self._arrays["sparse"][self._start : self._stop]

    @property
    def labels(self) -> np.ndarray:
        """Read-only memory map of this range's labels, float32 [n]."""
        return self._arrays["labels"][self._start : self._stop]

    def __repr__(self) -> str:
        return (f"CriteoDataset({str(self.path)!r}, rows {self._start}..{self._stop}, "
                f"sparse {self._arrays['sparse'].dtype})")  # fmt: skip

    def __getitem__(self, index):
        """``(dense, sparse, labels)`` as numpy copies, for an int, a slice or an index array."""
        n = self.num_rows
        if isinstance(index, (int, np.integer)):
            i = int(index)
            if not -n <= i < n:
                raise IndexError(f"row {i} is out of range for a dataset of {n} rows")
            rows = self._start + (i % n if n else i)
        elif isinstance(index, slice):
            start, stop, step = index.indices(n)
            rows = slice(self._start + start, self._start + stop, step)
        else:
            idx = np.asarray(index)
            if idx.dtype == bool or not np.issubdtype(idx.dtype, np.integer):
                raise TypeError(
                    f"index: expected an int, a slice or integer indices, got {idx.dtype}"
                )
            if idx.size and (idx.min() < -n or idx.max() >= n):
                raise IndexError(f"indices out of range for a dataset of {n} rows")
            rows = self._start + np.where(idx < 0, idx + n, idx)
        return tuple(np.array(self._arrays[k][rows]) for k in ("dense", "sparse", "labels"))

    def split(self, parts: Sequence[float] | Sequence[int]) -> tuple[CriteoDataset, ...]:
        """Contiguous row ranges in order: fractions summing to 1, or row counts summing to len.

        >>> train, val, test = ds.split([0.8, 0.1, 0.1])  # doctest: +SKIP
        """
        parts = list(parts)
        n = self.num_rows
        if not parts:
            raise ValueError("split: expected at least one fraction or row count")
        if all(isinstance(p, (int, np.integer)) and not isinstance(p, bool) for p in parts):
            counts = [int(p) for p in parts]
            if min(counts) < 0 or sum(counts) != n:
                raise ValueError(f"split: row counts must be >= 0 and sum to {n}, got {counts}")
        elif all(isinstance(p, (float, np.floating)) for p in parts):
            if min(parts) < 0 or abs(sum(parts) - 1.0) > 1e-6:
                raise ValueError(f"split: fractions must be >= 0 and sum to 1, got {parts}")
            bounds = [round(x * n) for x in np.cumsum(parts)]
            bounds[-1] = n
            counts = list(np.diff([0, *bounds]).astype(int))
        else:
            raise TypeError(
                f"split: expected all floats (fractions) or all ints (rows), got {parts}"
            )
        views, start = [], 0
        for c in counts:
            views.append(self._view(start, start + int(c)))
            start += int(c)
        return tuple(views)

    def batches(
        self,
        batch_size: int,
        *,
        shuffle: bool = False,
        seed: int = 0,
        window: int | None = None,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
        as_torch: bool = True,
    ) -> CriteoBatches:
        """This rank's batches (see the module docstring for the order); iterable, with len()."""
        return CriteoBatches(self, batch_size, shuffle=shuffle, seed=seed, window=window,
                             rank=rank, world_size=world_size, drop_last=drop_last,
                             as_torch=as_torch)  # fmt: skip


def _check_int(name: str, value, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name}: expected an integer >= {low}, got {value!r}")
    return int(value)


class CriteoBatches:
    """One rank's batches over a :class:`CriteoDataset`; iterate to get them, ``len()`` counts."""

    def __init__(self, dataset: CriteoDataset, batch_size: int, *, shuffle: bool, seed: int,
                 window: int | None, rank: int, world_size: int, drop_last: bool,
                 as_torch: bool) -> None:  # fmt: skip
        self.dataset = dataset
        self.batch_size = _check_int("batch_size", batch_size, 1)
        self.world_size = _check_int("world_size", world_size, 1)
        self.rank = _check_int("rank", rank, 0)
        if self.rank >= self.world_size:
            raise ValueError(f"rank: expected 0 <= rank < world_size ({world_size}), got {rank}")
        self.seed = _check_int("seed", seed, 0)
        if window is None:
            window = DEFAULT_SHUFFLE_WINDOW
        window = _check_int("window", window, 0)
        self.shuffle, self.drop_last, self.as_torch = bool(shuffle), bool(drop_last), bool(as_torch)
        b = self.batch_size
        # window in whole batches (0: rows keep their order)
        self.window_batches = math.ceil(window / b) if self.shuffle and window > 0 else 0
        self._order = self._batch_order()

    def _batch_order(self) -> np.ndarray:
        """The global batch indices this rank visits, in order."""
        n, b = len(self.dataset), self.batch_size
        full, short = divmod(n, b)
        num = full + (1 if short and not self.drop_last else 0)
        order = np.arange(num, dtype=np.int64)
        if self.shuffle:
            rng = np.random.default_rng(np.random.SeedSequence([self.seed, 1]))
            if self.window_batches:
                wb = self.window_batches
                num_windows = math.ceil(num / wb) if num else 0
                full_windows = full // wb  # windows made of full batches only
                wins = np.concatenate([rng.permutation(full_windows),
                                       np.arange(full_windows, num_windows)])  # fmt: skip
                order = np.concatenate([np.arange(w * wb, min((w + 1) * wb, num)) for w in wins]
                                       ) if num else order  # fmt: skip
            else:
                order[:full] = rng.permutation(full)
        if self.drop_last:
            order = order[: len(order) - len(order) % self.world_size]
        return order[self.rank :: self.world_size]

    def __len__(self) -> int:
        return len(self._order)

    def _window_rows(self, w: int) -> np.ndarray:
        """The permuted dataset rows of window ``w`` (same on every rank for a seed)."""
        n, span = len(self.dataset), self.window_batches * self.batch_size
        lo, hi = w * span, min((w + 1) * span, n)
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, 2, w]))
        return lo + rng.permutation(hi - lo)

    def __iter__(self) -> Iterator[tuple]:
        ds, b = self.dataset, self.batch_size
        n = len(ds)
        arrays = [ds._arrays[k] for k in ("dense", "sparse", "labels")]
        cached_window, window_rows = -1, None
        for k in self._order:
            k = int(k)
            if self.window_batches:
                w = k // self.window_batches
                if w != cached_window:
                    cached_window, window_rows = w, self._window_rows(w)
                j = (k - w * self.window_batches) * b
                rows = np.sort(window_rows[j : j + b]) + ds._start  # sorted: reads in file order
                dense, sparse, labels = (a[rows] for a in arrays)
            else:
                lo = ds._start + k * b
                hi = min(lo + b, ds._start + n)
                dense, sparse, labels = (np.array(a[lo:hi]) for a in arrays)
            yield self._convert(dense, sparse, labels)

    def _convert(self, dense: np.ndarray, sparse: np.ndarray, labels: np.ndarray) -> tuple:
        if not self.as_torch:
            return dense, sparse, labels
        import torch

        from rec_common.jagged import JaggedBatch

        ids = JaggedBatch.from_dense(torch.from_numpy(sparse), keys=SPARSE_NAMES)
        return torch.from_numpy(dense), ids, torch.from_numpy(labels)
