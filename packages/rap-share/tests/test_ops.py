"""Every op: fused torch path == numpy reference on random inputs, nulls, empty lists, edges."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rap_share import fused, hashing, reference
from rap_share.columns import Column, assert_columns_equal
from rap_share.errors import OpError
from rap_share.ops import normalize

FLOAT_TOL = {"logit": 2e-6, "boxcox": 2e-6}


def _scalar(rng, n, dtype, null_rate=0.0, lo=-50, hi=50):
    if np.issubdtype(dtype, np.floating):
        v = rng.uniform(lo, hi, n).astype(dtype)
    else:
        v = rng.integers(lo, hi, n).astype(dtype)
    valid = rng.random(n) >= null_rate if null_rate else None
    return Column(v, None, valid)


def _list(rng, n, dtype, max_len=6, lo=-5, hi=40):
    lens = rng.integers(0, max_len + 1, n)
    lens[: min(n, 3)] = 0  # empty lists on purpose
    off = np.zeros(n + 1, np.int64)
    np.cumsum(lens, out=off[1:])
    if np.issubdtype(dtype, np.floating):
        v = rng.uniform(lo, hi, off[-1]).astype(dtype)
    else:
        v = rng.integers(lo, hi, off[-1]).astype(dtype)
    return Column(v, off)


def check(op, cols, params):
    names = [f"c{i}" for i in range(len(cols))]
    got = fused.run(op, [c.to_torch() for c in cols], params, names)
    for c, p, g, n in zip(cols, params, got, names):
        want = reference.apply(op, c, p, n)
        tol = FLOAT_TOL.get(op, 0.0)
        assert_columns_equal(g, want, f"{op}[{n}]", rtol=tol, atol=tol)
    # fused == one column at a time (unfused)
    for c, p, g, n in zip(cols, params, got, names):
        single = fused.run(op, [c.to_torch()], [p], [n])[0]
        assert_columns_equal(g, single, f"{op}[{n}] fused vs unfused")


def test_sigrid_hash_published_vectors():
    vals = np.array([v for (v, _, _), _ in hashing.VELOX_TEST_VECTORS], np.int64)
    want = [e for _, e in hashing.VELOX_TEST_VECTORS]
    assert [hashing.sigrid_hash(int(v), 0, 100) for v in vals] == want
    assert reference.sigrid_hash(vals, 0, 100).tolist() == want
    p = {"salt": 0, "max_value": 100}
    got = fused.run("sigrid_hash", [Column(torch.from_numpy(vals))], [p])[0]
    assert got.values.tolist() == want


@pytest.mark.parametrize("seed", [0, 1])
def test_sigrid_hash_random_and_extremes(seed):
    rng = np.random.default_rng(seed)
    ext = np.array([0, 1, -1, 2**63 - 1, -(2**63), 2**32, 0xFFFFFFFF], np.int64)
    v = np.concatenate([rng.integers(-(2**63), 2**63 - 1, 500, dtype=np.int64), ext])
    cols = [Column(v), Column(v[:100], None, rng.random(100) > 0.3), _list(rng, 40, np.int64)]
    params = [normalize("sigrid_hash", "c", [s, m]) for s, m in ((0, 65536), (-7, 1), (2**62, 3))]
    check("sigrid_hash", cols, params)
    for x in ext.tolist() + v[:50].tolist():
        assert reference.sigrid_hash(np.array([x]), 12345, 977)[0] == hashing.sigrid_hash(
            x, 12345, 977
        )


def test_fill_null():
    rng = np.random.default_rng(0)
    cols = [
        _scalar(rng, 300, np.int64, 0.3),
        _scalar(rng, 200, np.float32, 0.5),
        _scalar(rng, 0, np.int64, 0.5),
        _scalar(rng, 50, np.int64),
    ]
    params = [{"value": 0}, {"value": 2.5}, {"value": 1}, {"value": 3}]
    check("fill_null", cols, params)
    out = fused.run("fill_null", [cols[0].to_torch()], [{"value": 7.9}])[0]
    assert out.valid is None and set(out.values[~torch.from_numpy(cols[0].valid)].tolist()) == {7}


def test_bucketize():
    rng = np.random.default_rng(0)
    borders = [[0.5, 1.0, 1.5], [-3.0, -3.0, 0.0, 10.0, 20.0], [5.0]]
    cols = [
        _scalar(rng, 300, np.float32, 0.2, -2, 3),
        _scalar(rng, 300, np.int64, 0.0, -5, 25),
        _list(rng, 30, np.int64),
    ]
    # boundary values: equal to a border goes to the lower bucket
    cols.append(Column(np.array([0.5, 1.0, 1.5, 0.49, 1.51, -np.inf, np.inf], np.float32)))
    borders.append([0.5, 1.0, 1.5])
    check("bucketize", cols, [{"borders": b} for b in borders])
    got = fused.run("bucketize", [cols[-1].to_torch()], [{"borders": borders[-1]}])[0]
    assert got.values.tolist() == [0, 1, 2, 0, 3, 0, 3]


def test_logit_boxcox_clamp_mapid():
    rng = np.random.default_rng(0)
    cols = [_scalar(rng, 400, np.float32, 0.2, -0.2, 1.2), _scalar(rng, 100, np.int64, 0.1, 0, 3)]
    check("logit", cols, [{"eps": 1e-5}, {"eps": 0.1}])
    cols = [
        _scalar(rng, 400, np.float32, 0.2, -3, 30),
        _scalar(rng, 100, np.int64, 0.0, -3, 30),
        _list(rng, 20, np.float32, lo=0, hi=5),
    ]
    check("boxcox", cols, [{"lmbda": 0.0}, {"lmbda": 0.5}, {"lmbda": -1.5}])
    cols = [
        _list(rng, 50, np.int64),
        _scalar(rng, 100, np.float32, 0.3),
        _scalar(rng, 10, np.int64),
    ]
    check("clamp", cols, [{"lo": 0, "hi": 16}, {"lo": -1.5, "hi": 2.25}, {"lo": 3, "hi": 3}])
    cols = [_list(rng, 50, np.int64, lo=-3, hi=12), _scalar(rng, 100, np.int64, 0.3, -2, 8)]
    check("mapid", cols, [{"map": [5, 4, 3, 2, 1, 0, 9, 9, 1, 2]}, {"map": [7]}])


def test_list_ops():
    rng = np.random.default_rng(0)
    cols = [
        _list(rng, 60, np.int64),
        _list(rng, 40, np.float32),
        _scalar(rng, 30, np.int64),
        _list(rng, 0, np.int64),
    ]
    check("firstx", cols, [{"x": 1}, {"x": 3}, {"x": 2}, {"x": 1}])
    check("ngram", cols, [{"n": 2}, {"n": 4}, {"n": 1}, {"n": 3}])
    got = fused.run(
        "ngram", [Column(torch.tensor([1, 2, 3, 4, 5]), torch.tensor([0, 4, 4, 5]))], [{"n": 2}]
    )[0]
    assert got.rows() == [[1, 2, 2, 3, 3, 4], [], [5]]
    cols = [
        _scalar(rng, 200, np.float32, 0, -2, 18),
        _scalar(rng, 50, np.int64, 0, 0, 16),
        Column(np.array([0.0, 16.0, 15.999, 3.2, -0.001], np.float32)),
    ]
    check(
        "onehot",
        cols,
        [
            {"lower": 0, "upper": 16, "num_classes": 5},
            {"lower": 0, "upper": 16, "num_classes": 8},
            {"lower": 0, "upper": 16, "num_classes": 4},
        ],
    )
    got = fused.run("onehot", [cols[2].to_torch()], [{"lower": 0, "upper": 16, "num_classes": 4}])[
        0
    ]
    assert got.rows() == [[1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 1], [1, 0, 0, 0], [0, 0, 0, 0]]


def test_mixed_dtypes_in_one_call():
    rng = np.random.default_rng(0)
    cols = [_scalar(rng, 50, np.int64, 0.2), _scalar(rng, 50, np.float32, 0.2)]
    check("fill_null", cols, [{"value": 0}, {"value": 0}])


@pytest.mark.parametrize(
    ("op", "args", "match"),
    [
        ("bucketize", [[1.0, 0.5]], r"bucketize on column 'int_3': borders must be sorted"),
        ("clamp", [5, 1], r"clamp on column 'int_3': lo must be <= hi"),
        ("ngram", [0], r"ngram on column 'int_3': n must be >= 1"),
        ("firstx", [0], r"firstx on column 'int_3': x must be >= 1"),
        ("sigrid_hash", [0, 0], r"sigrid_hash on column 'int_3': max_value must be >= 1"),
        ("logit", [0.7], r"logit on column 'int_3': eps"),
        ("onehot", [3, 1, 4], r"onehot on column 'int_3': lower must be < upper"),
        ("mapid", [[]], r"mapid on column 'int_3': map must be a non-empty"),
        ("onehot", [0, 1, 0], r"num_classes must be >= 1"),
    ],
)
def test_bad_parameters_name_op_and_column(op, args, match):
    with pytest.raises(OpError, match=match):
        normalize(op, "int_3", args)


def test_bad_inputs():
    nulls = Column(torch.tensor([1, 2]), None, torch.tensor([True, False]))
    with pytest.raises(OpError, match="ngram on column 'x': input has nulls"):
        fused.run("ngram", [nulls], [{"n": 2}], ["x"])
    with pytest.raises(OpError, match="sigrid_hash on column 'f': needs integer"):
        fused.run(
            "sigrid_hash", [Column(torch.tensor([1.5]))], [{"salt": 0, "max_value": 3}], ["f"]
        )
    with pytest.raises(OpError, match="onehot on column 'l': needs one value per row"):
        reference.apply(
            "onehot",
            Column(np.array([1]), np.array([0, 1])),
            {"lower": 0, "upper": 1, "num_classes": 2},
            "l",
        )
