"""The GPU path: one op over many columns at once (horizontal fusion), in device-agnostic torch.

RAP's fused kernel processes C columns in one launch (grid.x = column). Here the C columns
are concatenated into one flat buffer with a per-value column index ``cid``; per-column
parameters become small tensors gathered by ``cid``, so one op costs one set of torch launches
whatever C is, on CUDA tensors on a GPU and on CPU tensors in CI::

    columns  a=[1, 2, 3]  b=[7, 8]          params  max_value: a=10, b=5
    flat     [1, 2, 3, 7, 8]    cid [0, 0, 0, 1, 1]    max_value[cid] = [10, 10, 10, 5, 5]

List ops (firstx, ngram, onehot) work on the concatenated rows of all columns the same way
and cost one host synchronisation to size their outputs. Columns of different dtypes in one
call are processed in one group per dtype. Results equal :mod:`rap_share.reference`
bit for bit for integer outputs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch
from torch import Tensor

from rap_share import ops as _ops
from rap_share.columns import Column
from rap_share.hashing import K_MUL

_K_MUL_I64 = K_MUL - (1 << 64)
_CHUNK = 1 << 20  # values per bucketize comparison block (bounds its [n, K] temporary)


def run(
    op: str,
    columns: Sequence[Column],
    params: Sequence[dict],
    names: Sequence[str] | None = None,
    check: bool = True,
) -> list[Column]:
    """Apply ``op`` to every column with its own parameters; returns the new columns in order.

    ``params`` are per column, as :func:`rap_share.ops.normalize` returns them. With
    ``check`` the input kinds are validated first (cheap, no device sync).
    """
    columns, params = list(columns), list(params)
    if len(columns) != len(params):
        raise ValueError(f"{op}: {len(columns)} columns but {len(params)} parameter sets")
    names = list(names) if names is not None else [f"#{i}" for i in range(len(columns))]
    _ops.spec(op)
    if not columns:
        return []
    if check:
        for c, p, n in zip(columns, params, names):
            _ops.check_input(
                op,
                n,
                is_float=c.is_float,
                is_list=c.is_list,
                has_nulls=c.valid is not None,
                params=p,
            )
    out: list[Column | None] = [None] * len(columns)
    groups: dict[torch.dtype, list[int]] = {}
    for i, c in enumerate(columns):
        groups.setdefault(c.values.dtype, []).append(i)
    fn = _ELEMENTWISE.get(op) or _LIST[op]
    for idx in groups.values():
        res = fn([columns[i] for i in idx], [params[i] for i in idx])
        for i, r in zip(idx, res):
            out[i] = r
    return out  # type: ignore[return-value]


# ---------------------------------------------------------------- cached constants
# Off outside :func:`cached_constants`: every call builds its constants from Python lists, as
# it always did. The CUDA-graph path (``rap_share.corun.Config.graphs``, the default) turns the
# cache on around its runs with :func:`cached_constants`; the eager path (``graphs=False``,
# ``RAP_SHARE_GRAPHS=0``) and the profiler never do.
_CACHE_ON = False
_CONST: dict = {}  # (device, what, key) -> a read-only device tensor (see _const)
_CONST_MAX = 4096


def constants_cached() -> bool:
    """Whether fused calls take their constant tensors from the cache right now."""
    return _CACHE_ON


@contextlib.contextmanager
def cached_constants(on: bool = True):
    """Within the block (process-wide, every thread), fused calls take their column ids and
    per-column parameters from a cache of device constants when ``on``; the previous setting
    is restored on exit. ``on=False`` is the eager path's (a fresh ``torch.tensor`` per call)."""
    global _CACHE_ON
    was, _CACHE_ON = _CACHE_ON, bool(on)
    try:
        yield
    finally:
        _CACHE_ON = was


def _const(key: tuple, device, make) -> Tensor:
    """A constant tensor (column ids, per-column parameters) made once per key and device.

    Building these from Python lists each call costs a pageable host-to-device copy (a host
    sync on CUDA) and extra launches per fused call; cached, a call launches only its compute,
    which also makes it capturable in a CUDA graph once warmed up. Never written to.

    Entries are never dropped: a cached tensor may be read by a captured CUDA graph or by
    kernels queued on another stream, and freeing it (the cache used to be cleared when full,
    H200 run 2) handed its memory to new allocations under them. Once full, new keys (e.g.
    per-batch sizes of list columns) get a fresh, uncached tensor.
    """
    k = (str(device), *key)
    t = _CONST.get(k)
    if t is None:
        t = make()
        if len(_CONST) >= _CONST_MAX:
            return t
        if t.device.type == "cuda":  # the copy is done before any other stream may read it
            torch.cuda.current_stream(t.device).synchronize()
        _CONST[k] = t
    return t


def _cached(key: tuple, device, make, plain) -> Tensor:
    """``make()`` through the cache when it is on, else ``plain()`` (the eager path's)."""
    return _const(key, device, make) if _CACHE_ON else plain()


def _cid(sizes: list[int], device) -> Tensor:
    """Column index of every value of the concatenated columns (cached when the cache is on)."""
    return _cached(
        ("cid", tuple(sizes)),
        device,
        lambda: torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes)).to(device),
        lambda: torch.repeat_interleave(
            torch.arange(len(sizes), device=device),
            torch.tensor(sizes, device=device),
            output_size=sum(sizes),
        ),
    )


# ---------------------------------------------------------------- flat views
def _flat(cols: list[Column]):
    """(values, cid, valid or None, numel per column) over the concatenated columns."""
    dev = cols[0].values.device
    sizes = [int(c.values.shape[0]) for c in cols]
    v = cols[0].values if len(cols) == 1 else torch.cat([c.values for c in cols])
    cid = _cid(sizes, dev)
    valid = None
    if any(c.valid is not None for c in cols):
        valid = torch.cat(
            [
                c.valid if c.valid is not None else torch.ones_like(c.values, dtype=torch.bool)
                for c in cols
            ]
        )
    return v, cid, valid, sizes


def _param(params, key, dtype, device) -> Tensor:
    vals = tuple(p[key] for p in params)
    return _cached(("param", key, dtype, vals), device,
                   lambda: torch.tensor(vals, dtype=dtype).to(device),
                   lambda: torch.tensor(vals, dtype=dtype, device=device))  # fmt: skip


def _split_like(cols, values: Tensor, valid: Tensor | None, sizes) -> list[Column]:
    vs = values.split(sizes)
    ms = valid.split(sizes) if valid is not None else [None] * len(cols)
    return [
        Column(v, c.offsets, m if c.valid is not None else None) for c, v, m in zip(cols, vs, ms)
    ]


def _zero_nulls(values: Tensor, valid: Tensor | None) -> Tensor:
    return values if valid is None else torch.where(valid, values, torch.zeros_like(values))


# ---------------------------------------------------------------- elementwise ops
def _fill_null(cols, params):
    v, cid, valid, sizes = _flat(cols)
    if valid is None:
        return [Column(c.values, c.offsets, None) for c in cols]
    fill = _param(params, "value", torch.float64, v.device)
    fill = fill.to(v.dtype) if v.is_floating_point() else fill.trunc().to(v.dtype)
    out = torch.where(valid, v, fill[cid])
    return [Column(x, c.offsets, None) for c, x in zip(cols, out.split(sizes))]


def _srl(x: Tensor, s: int) -> Tensor:
    """Logical right shift of int64 bits (torch's >> is arithmetic)."""
    return (x >> s) & ((1 << (64 - s)) - 1)


def twang_mix64(k: Tensor) -> Tensor:
    k = (~k) + (k << 21)
    k = k ^ _srl(k, 24)
    k = k + (k << 3) + (k << 8)
    k = k ^ _srl(k, 14)
    k = k + (k << 2) + (k << 4)
    k = k ^ _srl(k, 28)
    return k + (k << 31)


def hash_128_to_64(upper: Tensor, lower: Tensor) -> Tensor:
    a = (lower ^ upper) * _K_MUL_I64
    a = a ^ _srl(a, 47)
    b = (upper ^ a) * _K_MUL_I64
    b = b ^ _srl(b, 47)
    return b * _K_MUL_I64


def _sigrid_hash(cols, params):
    v, cid, valid, sizes = _flat(cols)
    salt = _param(params, "salt", torch.int64, v.device)
    mx = _param(params, "max_value", torch.int64, v.device)
    h = hash_128_to_64(salt[cid], twang_mix64(v.to(torch.int64)))
    out = torch.remainder(h, mx[cid])  # floor modulo; max_value 1 gives 0
    return _split_like(cols, _zero_nulls(out, valid), valid, sizes)


def _bucketize(cols, params):
    v, cid, valid, sizes = _flat(cols)
    k = max(len(p["borders"]) for p in params)

    def make(dev=v.device) -> Tensor:
        b = torch.full((len(params), k), float("inf"), dtype=torch.float64, device=dev)
        for i, p in enumerate(params):
            b[i, : len(p["borders"])] = torch.tensor(p["borders"], dtype=torch.float64)
        return b

    key = ("borders", tuple(tuple(float(b) for b in p["borders"]) for p in params))
    borders = _cached(key, v.device, lambda: make("cpu").to(v.device), make)
    x = v.to(torch.float64)
    out = torch.empty(x.shape, dtype=torch.int64, device=v.device)
    for s in range(0, x.numel(), _CHUNK):  # count of borders < x == first border >= x
        e = min(s + _CHUNK, x.numel())
        out[s:e] = (borders[cid[s:e]] < x[s:e, None]).sum(1)
    return _split_like(cols, _zero_nulls(out, valid), valid, sizes)


def _logit(cols, params):
    v, cid, valid, sizes = _flat(cols)
    eps = _param(params, "eps", torch.float32, v.device)[cid]
    p = torch.minimum(torch.maximum(v.to(torch.float32), eps), 1.0 - eps)
    out = torch.log(p / (1.0 - p))
    return _split_like(cols, _zero_nulls(out, valid), valid, sizes)


def _boxcox(cols, params):
    v, cid, valid, sizes = _flat(cols)
    lam = _param(params, "lmbda", torch.float32, v.device)[cid]
    x = v.to(torch.float32)
    pos = x > 0
    safe = torch.where(pos, x, torch.ones_like(x))
    lam_nz = torch.where(lam == 0, torch.ones_like(lam), lam)
    t = torch.where(lam == 0, torch.log(safe), (torch.pow(safe, lam) - 1.0) / lam_nz)
    out = torch.where(pos, t, x)
    return _split_like(cols, _zero_nulls(out, valid), valid, sizes)


def _clamp(cols, params):
    v, cid, valid, sizes = _flat(cols)
    if v.is_floating_point():
        lo = _param(params, "lo", v.dtype, v.device)[cid]
        hi = _param(params, "hi", v.dtype, v.device)[cid]
    else:
        ilo = [{"lo": int(p["lo"]), "hi": int(p["hi"])} for p in params]
        lo = _param(ilo, "lo", v.dtype, v.device)[cid]
        hi = _param(ilo, "hi", v.dtype, v.device)[cid]
    out = torch.minimum(torch.maximum(v, lo), hi)
    return _split_like(cols, _zero_nulls(out, valid), valid, sizes)


def _mapid(cols, params):
    v, cid, valid, sizes = _flat(cols)
    dev = v.device
    lens = [len(p["map"]) for p in params]
    flat = tuple(int(m) for p in params for m in p["map"])

    def ints(key, vals, cumsum=False):  # cached when the cache is on, else built here
        def build(d):
            t = torch.tensor(vals, dtype=torch.int64, device=d)
            return t.cumsum(0) if cumsum else t

        return _cached((key, tuple(vals)), dev, lambda: build("cpu").to(dev), lambda: build(dev))

    table = ints("map", flat)
    starts = ints("map_starts", [0, *lens[:-1]], cumsum=True)
    n = ints("map_lens", lens)[cid]
    x = v.to(torch.int64)
    ok = (x >= 0) & (x < n)
    idx = torch.where(ok, starts[cid] + x, torch.zeros_like(x))
    out = torch.where(ok, table[idx], torch.zeros_like(x))
    return _split_like(cols, _zero_nulls(out, valid), valid, sizes)


_ELEMENTWISE = {
    "fill_null": _fill_null, "sigrid_hash": _sigrid_hash, "bucketize": _bucketize,
    "logit": _logit, "boxcox": _boxcox, "clamp": _clamp, "mapid": _mapid,
}  # fmt: skip


# ---------------------------------------------------------------- list ops
def _rows(cols: list[Column]):
    """Row view over all columns: values, row lengths, row starts, row column id, rows per column."""
    dev = cols[0].values.device
    v = torch.cat([c.values for c in cols]) if len(cols) > 1 else cols[0].values
    lens = (
        torch.cat([c.lengths().to(torch.int64) for c in cols])
        if len(cols) > 1
        else cols[0].lengths().to(torch.int64)
    )
    nrows = [c.num_rows for c in cols]
    starts = torch.cumsum(lens, 0) - lens
    rc = _cid(nrows, dev)
    return v, lens, starts, rc, nrows


def _emit(cols, values: Tensor, out_lens: Tensor, rc: Tensor, nrows) -> list[Column]:
    """Split concatenated output rows back into list columns (one host sync for the sizes)."""
    per_col = torch.zeros(len(cols), dtype=torch.int64, device=values.device)
    per_col.index_add_(0, rc, out_lens)
    vs = values.split(per_col.tolist())
    ls = out_lens.split(nrows)
    out = []
    for v, ln in zip(vs, ls):
        off = torch.zeros(ln.numel() + 1, dtype=torch.int64, device=values.device)
        torch.cumsum(ln, 0, out=off[1:])
        out.append(Column(v, off))
    return out


def _gather_rows(lens: Tensor, total: int):
    """For each output element: its row and its position inside the row."""
    dev = lens.device
    row = torch.repeat_interleave(torch.arange(lens.numel(), device=dev), lens, output_size=total)
    start = torch.cumsum(lens, 0) - lens
    pos = torch.arange(total, device=dev) - start[row]
    return row, pos


def _firstx(cols, params):
    if _CACHE_ON and all(c.offsets is None for c in cols) and all(p["x"] >= 1 for p in params):
        # scalar rows (CUDA-graph path): every row keeps its one value, offsets 0..rows, no null
        # mask (as the general path below emits it), and no host sync
        dev = cols[0].values.device
        return [Column(c.values, _const(("arange", c.num_rows + 1), dev,
                                        lambda n=c.num_rows + 1: torch.arange(n).to(dev)))
                for c in cols]  # fmt: skip
    v, lens, _starts, rc, nrows = _rows(cols)
    x = _param(params, "x", torch.int64, v.device)[rc]
    new = torch.minimum(lens, x)
    total_in = int(v.numel())
    row, pos = _gather_rows(lens, total_in)
    keep = pos < x[row]
    return _emit(cols, v[keep], new, rc, nrows)


def _ngram(cols, params):
    v, lens, starts, rc, nrows = _rows(cols)
    n = torch.minimum(_param(params, "n", torch.int64, v.device)[rc], lens)
    cnt = (lens - n + 1) * n
    total = int(cnt.sum())
    row, j = _gather_rows(cnt, total)
    nn_ = n[row]
    src = starts[row] + j // nn_ + j % nn_
    return _emit(cols, v[src], cnt, rc, nrows)


def _onehot(cols, params):
    v, _lens, _starts, rc, nrows = _rows(cols)
    dev = v.device
    lower = _param(params, "lower", torch.float64, dev)
    upper = _param(params, "upper", torch.float64, dev)
    ncls = _param(params, "num_classes", torch.int64, dev)
    step = (upper - lower) / ncls.to(torch.float64)
    i = torch.floor((v.to(torch.float64) - lower[rc]) / step[rc])
    n = ncls[rc]
    hit = torch.where((i >= 0) & (i < n.to(torch.float64)), i, torch.full_like(i, -1.0)).to(
        torch.int64
    )
    total = int(n.sum())
    row, j = _gather_rows(n, total)
    out = (j == hit[row]).to(torch.int64)
    return _emit(cols, out, n, rc, nrows)


_LIST = {"firstx": _firstx, "ngram": _ngram, "onehot": _onehot}
