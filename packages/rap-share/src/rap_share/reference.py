"""The CPU reference: each op on one column in numpy, written independently of the torch path.

This is what the GPU path is tested against, and what a CPU preprocessing worker runs. It
follows the table in :mod:`rap_share.ops` literally (per column, searchsorted for bucketize,
uint64 arithmetic for sigrid_hash, per-row slices for the list ops).
"""

from __future__ import annotations

import numpy as np

from rap_share import ops as _ops
from rap_share.columns import Column
from rap_share.hashing import K_MUL


def apply(op: str, column: Column, params: dict, name: str = "column") -> Column:
    """``op`` on one numpy :class:`Column` (torch columns are converted)."""
    c = column.to_numpy()
    _ops.check_input(
        op,
        name,
        is_float=c.is_float,
        is_list=c.is_list,
        has_nulls=c.valid is not None,
        params=params,
    )
    if op in _LIST:
        return _LIST[op](c, params)
    out = _ELEMENTWISE[op](c.values, params)
    if op == "fill_null":
        return Column(out, c.offsets, None)
    if c.valid is not None:
        out = np.where(c.valid, out, np.zeros((), out.dtype))
    return Column(out, c.offsets, c.valid)


def _twang(k: np.ndarray) -> np.ndarray:
    k = (~k) + (k << np.uint64(21))
    k ^= k >> np.uint64(24)
    k = k + (k << np.uint64(3)) + (k << np.uint64(8))
    k ^= k >> np.uint64(14)
    k = k + (k << np.uint64(2)) + (k << np.uint64(4))
    k ^= k >> np.uint64(28)
    return k + (k << np.uint64(31))


def _h128(upper: np.uint64, lower: np.ndarray) -> np.ndarray:
    kmul = np.uint64(K_MUL)
    a = (lower ^ upper) * kmul
    a ^= a >> np.uint64(47)
    b = (upper ^ a) * kmul
    b ^= b >> np.uint64(47)
    return b * kmul


def sigrid_hash(values: np.ndarray, salt: int, max_value: int) -> np.ndarray:
    if max_value == 1:
        return np.zeros(values.shape, np.int64)
    with np.errstate(over="ignore"):
        h = _h128(
            np.uint64(salt & ((1 << 64) - 1)), _twang(values.astype(np.int64).view(np.uint64))
        )
    return np.mod(h.view(np.int64), np.int64(max_value))


def _bucketize(v, p):
    return np.searchsorted(
        np.asarray(p["borders"], np.float64), v.astype(np.float64), side="left"
    ).astype(np.int64)


def _logit(v, p):
    eps = np.float32(p["eps"])
    x = np.clip(v.astype(np.float32), eps, np.float32(1) - eps)
    return np.log(x / (np.float32(1) - x)).astype(np.float32)


def _boxcox(v, p):
    x = v.astype(np.float32)
    lam = np.float32(p["lmbda"])
    out = x.copy()
    pos = x > 0
    if lam == 0:
        out[pos] = np.log(x[pos])
    else:
        out[pos] = (np.power(x[pos], lam) - np.float32(1)) / lam
    return out


def _clamp(v, p):
    if np.issubdtype(v.dtype, np.floating):
        lo, hi = v.dtype.type(p["lo"]), v.dtype.type(p["hi"])
    else:
        lo, hi = v.dtype.type(int(p["lo"])), v.dtype.type(int(p["hi"]))
    return np.clip(v, lo, hi)


def _mapid(v, p):
    m = np.asarray(p["map"], np.int64)
    x = v.astype(np.int64)
    out = np.zeros(x.shape, np.int64)
    ok = (x >= 0) & (x < m.size)
    out[ok] = m[x[ok]]
    return out


_ELEMENTWISE = {
    "sigrid_hash": lambda v, p: sigrid_hash(v, p["salt"], p["max_value"]),
    "bucketize": _bucketize, "logit": _logit, "boxcox": _boxcox, "clamp": _clamp, "mapid": _mapid,
}  # fmt: skip


def _list_rows(c: Column) -> list[np.ndarray]:
    if c.offsets is None:
        return [c.values[i : i + 1] for i in range(c.values.shape[0])]
    return [c.values[a:b] for a, b in zip(c.offsets[:-1], c.offsets[1:])]


def _from_rows(rows: list[np.ndarray], dtype) -> Column:
    lens = np.array([r.size for r in rows], np.int64)
    off = np.zeros(lens.size + 1, np.int64)
    np.cumsum(lens, out=off[1:])
    vals = np.concatenate(rows).astype(dtype) if rows else np.zeros(0, dtype)
    return Column(vals, off)


def _firstx(c: Column, p) -> Column:
    return _from_rows([r[: p["x"]] for r in _list_rows(c)], c.values.dtype)


def _ngram(c: Column, p) -> Column:
    out = []
    for r in _list_rows(c):
        n = min(p["n"], r.size)
        out.append(np.concatenate([r[s : s + n] for s in range(r.size - n + 1)]) if n else r[:0])
    return _from_rows(out, c.values.dtype)


def _onehot(c: Column, p) -> Column:
    n = p["num_classes"]
    lower, upper = float(p["lower"]), float(p["upper"])
    step = (upper - lower) / float(n)
    out = np.zeros((c.values.shape[0], n), np.int64)
    idx = np.floor((c.values.astype(np.float64) - lower) / step)
    ok = (idx >= 0) & (idx < n)
    out[np.nonzero(ok)[0], idx[ok].astype(np.int64)] = 1
    return Column(out.reshape(-1), np.arange(0, n * (c.values.shape[0] + 1), n, dtype=np.int64))


_LIST = {"firstx": _firstx, "ngram": _ngram, "onehot": _onehot}


def fill_null(c: Column, p) -> Column:
    if c.valid is None:
        return Column(c.values.copy(), c.offsets, None)
    v = c.values
    fill = (
        v.dtype.type(p["value"])
        if np.issubdtype(v.dtype, np.floating)
        else v.dtype.type(int(np.trunc(p["value"])))
    )
    return Column(np.where(c.valid, v, fill), None, None)


_LIST["fill_null"] = fill_null
