"""A preprocessing column: one value per row, or a list per row (values + offsets).

Both the torch path and the numpy reference use :class:`Column`; ``values``, ``offsets`` and
``valid`` are torch tensors in one and numpy arrays in the other::

    scalar column  values=[5, 7, 0]    offsets=None         valid=[True, True, False]  (row 2 null)
    list column    values=[4, 1, 9]    offsets=[0, 2, 2, 3]                            ([4,1] [] [9])

Only scalar columns can hold nulls (``valid`` False); a list column has none (an empty list is
a row with no values, not a null). Raw Criteo columns are scalar: ``int_*`` dense counts and
``cat_*`` categorical values, both int64 with nulls.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


@dataclass
class Column:
    values: Any
    offsets: Any = None
    valid: Any = None

    def __post_init__(self) -> None:
        if self.values.ndim != 1:
            raise ValueError(f"Column values must be 1-D, got shape {tuple(self.values.shape)}")
        if self.offsets is not None:
            if self.valid is not None:
                raise ValueError("a list column cannot hold nulls (valid must be None)")
            if self.offsets.ndim != 1 or self.offsets.shape[0] < 1:
                raise ValueError("Column offsets must be 1-D with num_rows + 1 entries")
        elif self.valid is not None and tuple(self.valid.shape) != tuple(self.values.shape):
            raise ValueError(
                f"Column valid mask has shape {tuple(self.valid.shape)}, values "
                f"{tuple(self.values.shape)}"
            )

    @property
    def is_list(self) -> bool:
        return self.offsets is not None

    @property
    def num_rows(self) -> int:
        return int(self.values.shape[0]) if self.offsets is None else int(self.offsets.shape[0]) - 1

    @property
    def is_torch(self) -> bool:
        return isinstance(self.values, torch.Tensor)

    @property
    def is_float(self) -> bool:
        if self.is_torch:
            return self.values.is_floating_point()
        return np.issubdtype(self.values.dtype, np.floating)

    def lengths(self):
        """Per-row lengths (ones for a scalar column)."""
        if self.offsets is None:
            if self.is_torch:
                return torch.ones(self.num_rows, dtype=torch.int64, device=self.values.device)
            return np.ones(self.num_rows, dtype=np.int64)
        return self.offsets[1:] - self.offsets[:-1]

    def to_numpy(self) -> Column:
        if not self.is_torch:
            return self
        f = lambda t: None if t is None else t.detach().cpu().numpy()  # noqa: E731
        return Column(f(self.values), f(self.offsets), f(self.valid))

    def to_torch(self, device: str | torch.device = "cpu") -> Column:
        if self.is_torch:
            return Column(
                *(
                    None if t is None else t.to(device)
                    for t in (self.values, self.offsets, self.valid)
                )
            )
        f = lambda a: None if a is None else torch.from_numpy(np.ascontiguousarray(a)).to(device)  # noqa: E731
        return Column(f(self.values), f(self.offsets), f(self.valid))

    def rows(self) -> list:
        """Python lists per row (None for a null), for messages and small tests."""
        c = self.to_numpy()
        if c.offsets is None:
            out = c.values.tolist()
            if c.valid is not None:
                out = [v if ok else None for v, ok in zip(out, c.valid.tolist())]
            return out
        return [c.values[a:b].tolist() for a, b in zip(c.offsets[:-1], c.offsets[1:])]


def assert_columns_equal(
    got: Column, want: Column, name: str = "column", rtol: float = 0.0, atol: float = 0.0
) -> None:
    """Raise AssertionError naming the first differing rows; exact unless tolerances are given.

    Integer columns are always compared exactly; null positions must match, and their values
    are ignored.
    """
    g, w = got.to_numpy(), want.to_numpy()
    if (g.offsets is None) != (w.offsets is None):
        raise AssertionError(f"{name}: one is a list column and the other is not")
    if g.offsets is not None and not np.array_equal(g.offsets, w.offsets):
        bad = (
            np.nonzero(g.offsets != w.offsets)[0][:5] if g.offsets.shape == w.offsets.shape else []
        )
        raise AssertionError(
            f"{name}: offsets differ (first rows {list(bad)}): {g.offsets[:8]} vs {w.offsets[:8]}"
        )
    gv_mask = np.ones(g.values.shape, bool) if g.valid is None else g.valid
    wv_mask = np.ones(w.values.shape, bool) if w.valid is None else w.valid
    if not np.array_equal(gv_mask, wv_mask):
        bad = np.nonzero(gv_mask != wv_mask)[0][:5]
        raise AssertionError(f"{name}: null masks differ at rows {list(bad)}")
    if g.values.shape != w.values.shape:
        raise AssertionError(f"{name}: {g.values.shape[0]} values vs {w.values.shape[0]} expected")
    if g.values.dtype != w.values.dtype:
        raise AssertionError(f"{name}: dtype {g.values.dtype} vs expected {w.values.dtype}")
    gv, wv = g.values[gv_mask], w.values[wv_mask]
    if np.issubdtype(gv.dtype, np.floating) and (rtol or atol):
        close = np.isclose(gv, wv, rtol=rtol, atol=atol, equal_nan=True)
    else:
        close = (gv == wv) | (
            np.isnan(gv) & np.isnan(wv) if np.issubdtype(gv.dtype, np.floating) else False
        )
    if not np.all(close):
        idx = np.nonzero(~close)[0][:5]
        pairs = ", ".join(f"[{i}] {gv[i]!r} != {wv[i]!r}" for i in idx)
        raise AssertionError(f"{name}: {int((~close).sum())} of {gv.size} values differ: {pairs}")
