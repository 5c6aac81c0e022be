"""The eleven preprocessing op kinds: their parameters, checks and shape rules.

Semantics (TorchArrow / Velox "rec" functions; both :mod:`rap_share.fused` and
:mod:`rap_share.reference` implement exactly this):

=============  ==========================  ===============================================
op             parameters                  result
=============  ==========================  ===============================================
fill_null      value                       nulls replaced by ``value`` (cast to the column's dtype)
sigrid_hash    salt, max_value >= 1        :mod:`rap_share.hashing`, int64 in [0, max_value)
bucketize      borders (non-decreasing)    index of the first border >= x (int64)
logit          eps in (0, 0.5)             log(p / (1 - p)) with p = clamp(x, eps, 1 - eps), float32
boxcox         lmbda                       x > 0: log(x) if lmbda == 0 else (x**lmbda - 1) / lmbda; else x
clamp          lo <= hi                    elementwise clamp, dtype kept (int bounds for ints)
firstx         x >= 1                      the first min(x, len) elements of each list
onehot         lower < upper, num_classes  step = (upper - lower) / n, i = floor((x - lower) / step),
                                           a 0/1 list of n with a 1 at i when 0 <= i < n
ngram          n >= 1                      n' = min(n, len): all windows of n', concatenated
mapid          map (non-empty ints)        map[v], or 0 when v < 0 or v >= len(map)
=============  ==========================  ===============================================

Elementwise ops (all but firstx, onehot, ngram) apply to every value of a list and keep nulls
of a scalar column null; firstx, onehot and ngram need a column without nulls (fill_null first).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from rap_share.errors import OpError


@dataclass(frozen=True)
class OpSpec:
    name: str
    params: tuple[str, ...]  # positional order, as a script writes them
    defaults: tuple[tuple[str, object], ...]
    group: str  # cost-model group (see rap_share.costmodel)
    elementwise: bool  # applies per value and keeps the row structure
    int_input: bool = False  # needs integer values
    scalar_input: bool = False  # needs one value per row


OPS: dict[str, OpSpec] = {
    s.name: s
    for s in (
        OpSpec("fill_null", ("value",), (("value", 0),), "1d", True),
        OpSpec("sigrid_hash", ("salt", "max_value"), (), "1d", True, int_input=True),
        OpSpec("bucketize", ("borders",), (), "bucketize", True),
        OpSpec("logit", ("eps",), (("eps", 1e-5),), "1d", True),
        OpSpec("boxcox", ("lmbda",), (("lmbda", 0.0),), "1d", True),
        OpSpec("clamp", ("lo", "hi"), (), "1d", True),
        OpSpec("firstx", ("x",), (), "firstx", False),
        OpSpec("onehot", ("lower", "upper", "num_classes"), (), "onehot", False, scalar_input=True),
        OpSpec("ngram", ("n",), (), "ngram", False),
        OpSpec("mapid", ("map",), (), "1d", True, int_input=True),
    )
}
OP_NAMES = tuple(OPS)
FLOAT_OUTPUT = ("logit", "boxcox")


def spec(op: str) -> OpSpec:
    try:
        return OPS[op]
    except KeyError:
        raise ValueError(f"unknown op {op!r}; known ops: {', '.join(OP_NAMES)}") from None


def _number(op, col, name, v) -> float | int:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise OpError(op, col, f"{name} must be a number, got {v!r}")
    if isinstance(v, float) and not math.isfinite(v):
        raise OpError(op, col, f"{name} must be finite, got {v!r}")
    return v


def _integer(op, col, name, v, low: int | None = None) -> int:
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int):
        raise OpError(op, col, f"{name} must be an integer, got {v!r}")
    if low is not None and v < low:
        raise OpError(op, col, f"{name} must be >= {low}, got {v}")
    if not -(1 << 63) <= v < (1 << 63):
        raise OpError(op, col, f"{name} must fit in int64, got {v}")
    return v


def normalize(op: str, column: str, args: Sequence = (), kwargs: dict | None = None) -> dict:
    """Check an op's arguments and return them by name; errors name op, column and argument.

    >>> normalize("sigrid_hash", "cat_0", [0, 1460])
    {'salt': 0, 'max_value': 1460}
    """
    s = spec(op)
    kwargs = dict(kwargs or {})
    if len(args) > len(s.params):
        raise OpError(
            op, column, f"takes {len(s.params)} arguments ({', '.join(s.params)}), got {len(args)}"
        )
    p = dict(zip(s.params, args))
    for k, v in kwargs.items():
        if k not in s.params:
            raise OpError(op, column, f"unknown argument {k!r}; expected {', '.join(s.params)}")
        if k in p:
            raise OpError(op, column, f"argument {k!r} given twice")
        p[k] = v
    for k, v in s.defaults:
        p.setdefault(k, v)
    missing = [k for k in s.params if k not in p]
    if missing:
        raise OpError(op, column, f"missing argument(s) {', '.join(missing)}")
    return {k: _check_one(op, column, k, p[k], p) for k in s.params} | _cross_check(op, column, p)


def _check_one(op, col, name, v, p):
    if op == "fill_null":
        return _number(op, col, name, v)
    if op == "sigrid_hash":
        return _integer(op, col, name, v, low=1 if name == "max_value" else None)
    if op == "bucketize":
        if not isinstance(v, (list, tuple)) or not v:
            raise OpError(op, col, f"borders must be a non-empty list of numbers, got {v!r}")
        b = [float(_number(op, col, f"borders[{i}]", x)) for i, x in enumerate(v)]
        for i in range(1, len(b)):
            if b[i] < b[i - 1]:
                raise OpError(
                    op,
                    col,
                    f"borders must be sorted (non-decreasing); borders[{i - 1}]={b[i - 1]} "
                    f"> borders[{i}]={b[i]}",
                )
        return b
    if op == "logit":
        e = float(_number(op, col, name, v))
        if not 0.0 < e < 0.5:
            raise OpError(op, col, f"eps must be in (0, 0.5), got {e}")
        return e
    if op == "boxcox":
        return float(_number(op, col, name, v))
    if op == "clamp":
        return _number(op, col, name, v)
    if op in ("firstx", "ngram"):
        return _integer(op, col, name, v, low=1)
    if op == "onehot":
        if name == "num_classes":
            return _integer(op, col, name, v, low=1)
        return float(_number(op, col, name, v))
    if op == "mapid":
        if not isinstance(v, (list, tuple)) or not v:
            raise OpError(op, col, f"map must be a non-empty list of integers, got {v!r}")
        return [_integer(op, col, f"map[{i}]", x) for i, x in enumerate(v)]
    raise AssertionError(op)


def _cross_check(op, col, p) -> dict:
    if op == "clamp" and p["lo"] > p["hi"]:
        raise OpError(op, col, f"lo must be <= hi, got lo={p['lo']} > hi={p['hi']}")
    if op == "onehot" and not float(p["lower"]) < float(p["upper"]):
        raise OpError(op, col, f"lower must be < upper, got lower={p['lower']}, upper={p['upper']}")
    return {}


def check_input(
    op: str, column: str, *, is_float: bool, is_list: bool, has_nulls: bool, params: dict
) -> None:
    """Input-kind checks shared by both paths (dtype, list or scalar, nulls)."""
    s = spec(op)
    if s.int_input and is_float:
        raise OpError(op, column, "needs integer values, got a float column")
    if s.scalar_input and is_list:
        raise OpError(op, column, "needs one value per row, got a list column")
    if not s.elementwise and has_nulls:
        raise OpError(op, column, "input has nulls; apply fill_null first")
    if op == "clamp" and not is_float:
        for k in ("lo", "hi"):
            if not float(params[k]).is_integer():
                raise OpError(
                    op, column, f"{k}={params[k]} on an integer column must be an integer"
                )


def out_width(op: str, params: dict, width: float) -> float:
    """Per-row list length after the op (mean or max width in, same out); scalars are 1.

    >>> out_width("ngram", {"n": 4}, 8), out_width("firstx", {"x": 1}, 8)
    (20, 1)
    """
    if op == "firstx":
        return min(params["x"], width)
    if op == "onehot":
        return params["num_classes"]
    if op == "ngram":
        n = min(params["n"], width)
        return (width - n + 1) * n
    return width


def out_is_float(op: str, in_float: bool) -> bool:
    if op in FLOAT_OUTPUT:
        return True
    if op in ("sigrid_hash", "bucketize", "onehot", "mapid"):
        return False
    return in_float


def id_range(op: str, params: dict, in_range: int | None) -> int | None:
    """Exclusive upper bound of the ids an op emits (None when unbounded); sizes the tables."""
    if op == "sigrid_hash":
        return params["max_value"]
    if op == "bucketize":
        return len(params["borders"]) + 1
    if op == "onehot":
        return 2
    if op == "mapid":
        return max(max(params["map"]) + 1, 1) if min(params["map"]) >= 0 else None
    if op == "clamp":
        return int(params["hi"]) + 1 if params["lo"] >= 0 else None
    if op in ("firstx", "ngram"):
        return in_range
    return None if op in ("fill_null", "logit", "boxcox") else in_range
