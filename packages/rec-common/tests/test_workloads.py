"""Named workloads: each loads, matches its paper's numbers, and yields valid batches."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from rec_common import workloads
from rec_common.criteo_tables import (
    KAGGLE_TABLE_SIZES,
    MLPERF_MULTI_HOT_SIZES,
    MLPERF_TABLE_SIZES,
    TERABYTE_TABLE_SIZES,
)
from rec_common.generators import make_trace
from rec_common.workloads import RECFLEX_ROWS, parse_recflex_line

ALL = [
    "criteo-kaggle", "criteo-terabyte", "mlperf-multihot", "micro24",
    "recflex-A", "recflex-B", "recflex-C", "recflex-D", "recflex-E", "recflex-F",
    "recflex-mlperf", "recflex-test",
]  # fmt: skip


def test_list_workloads_names_all_of_them():
    assert sorted(workloads.list_workloads()) == sorted(ALL)


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(
        ValueError, match="unknown workload 'recflex-Z'.*criteo-kaggle.*recflex-test"
    ):
        workloads.load("recflex-Z")


@pytest.mark.parametrize("name", ALL)
def test_every_workload_yields_valid_batches(name):
    w = workloads.load(name)
    if name == "micro24":
        w = w.scaled(max_rows=2000)  # its tables are 3 GB; ids >= 2000 are dropped from the trace
    assert w.num_features == len(set(w.keys)) > 0
    assert all(d > 0 for d in w.dims) and all(r > 0 for r in w.table_sizes)
    batches = list(w.batches(2, batch_size=3))
    assert len(batches) == 2
    for b in batches:
        assert b.batch_size == 3 and b.keys == w.keys
        assert all(v.dtype == w.index_dtype for v in b.values)
        b.validate(w.table_sizes)
    assert w.description and w.source


@pytest.mark.parametrize("name", ["recflex-A", "recflex-B", "recflex-C"])
def test_recflex_drawn_dims_are_close_to_the_committed_tables(name):
    w = workloads.load(name)
    ref = w.reference
    assert w.num_features == ref["features"]
    assert abs(w.sum_dims / ref["sum_dims"] - 1) < 0.01
    hist = w.dim_histogram()
    l1 = sum(abs(hist.get(int(d), 0) - n) for d, n in ref["dim_histogram"].items())
    assert l1 <= 0.04 * w.num_features, (hist, ref["dim_histogram"])
    assert abs(w.table_bytes() / 2**20 / ref["table_mib"] - 1) < 0.02
    assert abs(w.expected_lookups_per_sample() / ref["expected_lookups_per_sample"] - 1) < 0.02


@pytest.mark.parametrize(
    "name", ["recflex-D", "recflex-E", "recflex-F", "recflex-test", "recflex-mlperf"]
)
def test_recflex_fixed_dim_models_match_exactly(name):
    w = workloads.load(name)
    ref = w.reference
    assert w.num_features == ref["features"]
    assert w.sum_dims == ref["sum_dims"]
    assert w.dim_histogram() == {int(k): v for k, v in ref["dim_histogram"].items()}
    if "table_mib" in ref:
        assert abs(w.table_bytes() / 2**20 / ref["table_mib"] - 1) < 0.01
        assert abs(w.expected_lookups_per_sample() / ref["expected_lookups_per_sample"] - 1) < 0.01


def test_recflex_rows_follow_the_feature_types():
    w = workloads.load("recflex-A")
    counts = Counter(w.table_sizes)
    assert counts == {1024: 500, 4096: 400, 16384: 100}
    assert RECFLEX_ROWS == {
        "one-hot": 1024,
        "multi-hot": 4096,
        "multi-hot-static": 4096,
        "multi-hot-one-side": 16384,
    }
    f = w.features
    assert str(f[0].pooling) == "one-hot" and f[0].coverage == 1.0
    assert str(f[500].pooling) == "normal:10,10,50" and f[500].coverage == 0.8
    assert str(f[750].pooling) == "fixed:10"
    assert str(f[900].pooling) == "normal:100,50" and f[900].coverage == 0.5  # one-side
    assert all(str(x.skew) == "power:3" for x in f)
    assert [x.group for x in f[:101:50]] == [0, 1, 2]


def test_recflex_d_has_50_always_empty_features():
    w = workloads.load("recflex-D")
    empty = [f for f in w.features if f.coverage == 0]
    assert len(empty) == 50 and all(f.name in {f"f{i}" for i in range(700, 750)} for f in empty)
    b = next(w.batches(1, batch_size=64))
    assert all(b.lengths(f.name).sum() == 0 for f in empty)


def test_recflex_seeds_and_e_reuses_d_data():
    a = workloads.load("recflex-A")
    assert dict(a.seeds) == {"tune": 1000, "test": 5000} and a.default_seed == "test"
    assert [dict(workloads.load(f"recflex-{m}").seeds)["tune"] for m in "BCD"] == [2000, 3000, 4000]
    assert a.sample_batch_sizes(8, "tune") != a.sample_batch_sizes(8, "test")
    d, e = workloads.load("recflex-D"), workloads.load("recflex-E")
    assert d.sample_batch_sizes() == e.sample_batch_sizes()
    bd, be = next(d.batches(1, batch_size=16)), next(e.batches(1, batch_size=16))
    assert all(torch.equal(x, y) for x, y in zip(bd.values, be.values))
    assert all(torch.equal(x, y) for x, y in zip(bd.offsets, be.offsets))
    assert set(e.dims) == {32} and set(d.dims) == {8}
    with pytest.raises(ValueError, match="unknown seed name 'dev'"):
        a.seed("dev")


def test_recflex_f_is_d_lines_x50_then_x450():
    d, f = workloads.load("recflex-D"), workloads.load("recflex-F")
    assert f.features[:1000] == d.features
    assert f.num_features == 10_000
    tail = f.features[1000:]
    assert [str(x.pooling) for x in tail[::450]] == [str(x.pooling) for x in d.features[::50]]
    assert [x.coverage for x in tail[::450]] == [x.coverage for x in d.features[::50]]


def test_recflex_line_parser_rejects_bad_lines():
    assert parse_recflex_line("multi-hot,50,10,10,50,0.8") == (
        "multi-hot",
        50,
        [10.0, 10.0, 50.0, 0.8],
    )
    with pytest.raises(ValueError, match="takes 4 parameters"):
        parse_recflex_line("multi-hot,50,10,10")
    with pytest.raises(ValueError, match="unknown type"):
        parse_recflex_line("two-hot,5,1.0")


def test_recflex_batch_sizes_and_mlperf_quantiles():
    sizes = workloads.load("recflex-B").sample_batch_sizes()
    assert len(sizes) == 128 and min(sizes) >= 1 and max(sizes) <= 512
    ml = workloads.load("recflex-mlperf")
    assert set(ml.sample_batch_sizes(500)) == {100, 200, 300, 400, 500, 600, 700}
    assert ml.table_sizes == MLPERF_TABLE_SIZES and set(ml.dims) == {64}
    assert sum(str(f.pooling) == "one-hot" for f in ml.features) == 11


def test_criteo_workloads():
    k, t = workloads.load("criteo-kaggle"), workloads.load("criteo-terabyte")
    assert k.table_sizes == KAGGLE_TABLE_SIZES and set(k.dims) == {16}
    assert t.table_sizes == TERABYTE_TABLE_SIZES and set(t.dims) == {64}
    assert k.keys[0] == "C1" and k.keys[-1] == "C26"
    assert all(str(f.pooling) == "one-hot" for f in k.features + t.features)
    b = next(t.batches(1, batch_size=512))
    b.validate(t.table_sizes)
    assert (b.lengths(0) == 1).all()


def test_mlperf_multihot_uses_the_mlperf_sizes():
    w = workloads.load("mlperf-multihot")
    assert w.table_sizes == MLPERF_TABLE_SIZES and set(w.dims) == {128}
    b = next(w.batches(1, batch_size=8))
    assert [int(b.lengths(i)[0]) for i in range(26)] == list(MLPERF_MULTI_HOT_SIZES)
    assert w.expected_lookups_per_sample() == sum(MLPERF_MULTI_HOT_SIZES)


def test_micro24_spec_and_a_tiny_scaled_run():
    w = workloads.load("micro24")
    assert w.num_features == 12 and set(w.table_sizes) == {500_000} and set(w.dims) == {128}
    assert w.sample_batch_sizes() == [2048] * 12 and w.num_batches == 12
    assert w.index_dtype == torch.int64 and w.dtype == torch.float32 and w.pooling_mode == "sum"
    assert all(str(f.pooling) == "fixed:150" for f in w.features)
    assert w.table_bytes() == 12 * 500_000 * 128 * 4
    assert w.seeds["tables"] == 512
    # the full-size stream: table by table, one cursor for all tables and batches
    gen = w.generator()
    b0 = gen.batch(4, 0)
    stream = np.concatenate([v.numpy() for v in b0.values])
    assert np.array_equal(stream, make_trace("reuse_high")[: 12 * 4 * 150])
    # a tiny version, tables included
    small = workloads.load("micro24", skew="trace:reuse_low").scaled(max_rows=5000, batch_size=8)
    tables = small.make_tables()
    assert [tuple(t.shape) for t in tables] == [(5000, 128)] * 12
    for b in small.batches(3):
        b.validate(small.table_sizes)
        assert (b.lengths(0) == 150).all()
    assert all(str(f.skew) == "trace:reuse_low" for f in small.features)
    hot = small.generator().hot_ids(0, 100)
    assert hot.size == 100 and hot.max() < 5000  # pinned rows exist in the scaled table


def test_workload_batches_are_deterministic_and_weighted():
    w = workloads.load("recflex-test")
    a = list(w.batches(3, seed=9))
    b = list(w.batches(3, seed=9))
    assert [x.batch_size for x in a] == w.sample_batch_sizes(3, 9)
    for x, y in zip(a, b):
        assert all(torch.equal(p, q) for p, q in zip(x.values, y.values))
    wb = next(w.batches(1, batch_size=5, weighted=True, index_dtype=torch.int64))
    assert wb.weights is not None and wb.values[0].dtype == torch.int64
