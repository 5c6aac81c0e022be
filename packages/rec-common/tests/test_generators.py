"""In-memory generators: pooling, skew, batch sizes, traces, tables, determinism."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rec_common.generators import (
    TRACE_NAMES,
    TRACE_REFERENCE_STATS,
    BatchGenerator,
    BatchSizes,
    FeatureSpec,
    IdSampler,
    Pooling,
    Skew,
    TraceCursor,
    generate_batch,
    make_tables,
    make_trace,
    micro24_hot_rows,
    permute_ids,
    recflex_batch_sizes,
    top_hot_ids,
    trace_stats,
    zipf_ranks,
)
from rec_common.jagged import JaggedBatch


def _lengths(batch: JaggedBatch, i: int) -> np.ndarray:
    return batch.lengths(i).numpy()


def _assert_batches_equal(a: JaggedBatch, b: JaggedBatch) -> None:
    assert a.keys == b.keys
    for k, va, vb, oa, ob in zip(a.keys, a.values, b.values, a.offsets, b.offsets):
        assert torch.equal(oa, ob), f"offsets of {k} differ"
        assert torch.equal(va, vb), f"values of {k} differ"


# ---------------------------------------------------------------------------- specs
@pytest.mark.parametrize(
    "text",
    [
        "one-hot",
        "fixed:150",
        "normal:10,10,50",
        "normal:100,50",
        "uniform:1,20",
        "normal:0.5,1.5,3",
    ],
)
def test_pooling_parse_round_trips(text):
    assert str(Pooling.parse(text)) == text


@pytest.mark.parametrize(
    "text", ["zipf:1.05", "power:3", "hot-set:0.9,1000", "uniform", "trace:reuse_low"]
)
def test_skew_parse_round_trips(text):
    assert str(Skew.parse(text)) == text


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("fixed", "expected 1"),
        ("fixed:-3", ">= 0"),
        ("normal:1", "expected 2 or 3"),
        ("uniform:5,2", "lo <= hi"),
        ("poisson:3", "expected one-hot, fixed"),
        ("fixed:a", "numbers"),
    ],
)
def test_pooling_rejects_bad_specs(text, match):
    with pytest.raises(ValueError, match=match):
        Pooling.parse(text)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("zipf:0", "> 0"),
        ("zipf", "expected 1"),
        ("hot-set:1.5,10", r"\[0, 1\]"),
        ("trace:nope", "unknown trace"),
        ("lognormal:1", "expected uniform"),
    ],
)
def test_skew_rejects_bad_specs(text, match):
    with pytest.raises(ValueError, match=match):
        Skew.parse(text)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"rows": 0}, "rows must be >= 1"),
        ({"dim": 0}, "dim must be >= 1"),
        ({"coverage": 1.5}, "coverage must be in"),
        ({"rows": 10, "skew": "hot-set:0.5,20"}, "larger than the table"),
    ],
)
def test_feature_spec_rejects_bad_input(kwargs, match):
    args = {"name": "f", "rows": 100, "dim": 8} | kwargs
    with pytest.raises(ValueError, match=match):
        FeatureSpec(**args)


# ---------------------------------------------------------------------------- pooling
def test_fixed_pooling_is_exact():
    b = generate_batch([FeatureSpec("f", 1000, 8, "fixed:150")], 64, seed=1)
    assert (_lengths(b, 0) == 150).all()
    b.validate([1000])


def test_truncated_normal_stays_in_range_and_has_the_expected_mean():
    pool = Pooling.parse("normal:100,100,500")
    lengths = pool.sample(np.random.default_rng(0), 200_000)
    assert lengths.min() >= 0 and lengths.max() <= 500
    assert abs(lengths.mean() - pool.expected_length()) < 0.01 * pool.expected_length()
    # closed form: E[X] = mu + sd (phi(a) - phi(b)) / (Phi(b) - Phi(a)); flooring takes ~0.5
    a, b = -1.0, 4.0
    phi = lambda x: math.exp(-x * x / 2) / math.sqrt(2 * math.pi)  # noqa: E731
    cdf = lambda x: 0.5 * (1 + math.erf(x / math.sqrt(2)))  # noqa: E731
    mean = 100 + 100 * (phi(a) - phi(b)) / (cdf(b) - cdf(a))
    assert abs(pool.expected_length() - (mean - 0.5)) < 0.05


def test_one_sided_normal_is_non_negative_and_unbounded():
    lengths = Pooling.parse("normal:10,20").sample(np.random.default_rng(0), 100_000)
    assert lengths.min() == 0 and lengths.max() > 60


def test_truncated_normal_far_tail_is_finite():
    # both bounds deep in the upper tail: inverse CDF must not produce inf or nan
    lengths = Pooling.parse("normal:-100,1,5").sample(np.random.default_rng(0), 1000)
    assert lengths.min() >= 0 and lengths.max() <= 5


def test_uniform_pooling_covers_both_ends():
    lengths = Pooling.parse("uniform:2,5").sample(np.random.default_rng(0), 10_000)
    assert set(np.unique(lengths)) == {2, 3, 4, 5}


@pytest.mark.parametrize("coverage", [0.0, 0.3, 0.8, 1.0])
def test_coverage_sets_the_empty_bag_fraction(coverage):
    b = generate_batch([FeatureSpec("f", 100, 4, "fixed:3", coverage=coverage)], 20_000, seed=2)
    empty = float((_lengths(b, 0) == 0).mean())
    assert abs(empty - (1 - coverage)) < 0.015


# ---------------------------------------------------------------------------- skew
def test_zipf_ranks_follow_the_exact_law():
    n, a, size = 200, 1.05, 400_000
    ranks = zipf_ranks(np.random.default_rng(0), size, n, a)
    p = np.arange(1, n + 1, dtype=float) ** -a
    p /= p.sum()
    emp = np.bincount(ranks, minlength=n) / size
    sigma = np.sqrt(p * (1 - p) / size)
    assert ranks.min() >= 0 and ranks.max() < n
    assert np.all(np.abs(emp - p) < 5 * sigma + 1e-12)


def test_zipf_top_k_coverage_matches_theory_and_hot_rows_are_scattered():
    rows, a = 10_000, 1.05
    sampler = IdSampler("zipf:1.05", rows, state_seed=3)
    ids = sampler.sample(np.random.default_rng(0), 300_000)
    p = np.arange(1, rows + 1, dtype=float) ** -a
    p /= p.sum()
    counts = np.bincount(ids, minlength=rows)
    top100 = np.sort(counts)[::-1][:100].sum() / ids.size
    assert abs(top100 - p[:100].sum()) < 0.01
    hot = sampler.hot_ids(100)
    assert set(hot[:20]) <= set(np.argsort(-counts)[:60])  # hot_ids really are the hot rows
    assert hot.max() > 1000  # not clustered at the start of the table


def test_power_skew_is_mild_like_recflex():
    rows = 4096
    sampler = IdSampler("power:3", rows, state_seed=0)
    w = sampler.weights
    assert abs(w.max() / w.mean() - 4 / 3) < 0.03  # E[power(3)] = 3/4, max ~ 1
    ids = sampler.sample(np.random.default_rng(1), 2_000_000)
    freq = np.bincount(ids, minlength=rows)
    # the hottest rows by weight are hit ~1.33x the mean
    top = sampler.hot_ids(50)
    assert abs(freq[top].mean() / freq.mean() - 4 / 3) < 0.05


def test_hot_set_receives_its_fraction():
    sampler = IdSampler("hot-set:0.9,100", 100_000, state_seed=5)
    ids = sampler.sample(np.random.default_rng(0), 100_000)
    hot = set(sampler.hot_ids(100).tolist())
    assert len(hot) == 100
    share = np.isin(ids, list(hot)).mean()
    assert abs(share - (0.9 + 0.1 * 100 / 100_000)) < 0.01


def test_uniform_skew_is_flat():
    ids = IdSampler("uniform", 50, 0).sample(np.random.default_rng(0), 100_000)
    counts = np.bincount(ids, minlength=50)
    assert counts.min() > 1700 and counts.max() < 2300


@pytest.mark.parametrize("n", [1, 2, 3, 7, 1000, 4097, 65_536])
def test_permute_ids_is_a_permutation(n):
    y = permute_ids(np.arange(n), n, key=11)
    assert np.array_equal(np.sort(y), np.arange(n))
    if n > 100:
        assert not np.array_equal(y, permute_ids(np.arange(n), n, key=12))


# ---------------------------------------------------------------------------- batches
FEATS = [
    FeatureSpec("a", 1000, 16, "normal:10,5,30", coverage=0.8, skew="zipf:1.1"),
    FeatureSpec("b", 500, 8, "fixed:4", skew="power:3"),
    FeatureSpec("c", 2000, 4, "one-hot", skew="hot-set:0.5,10"),
    FeatureSpec("d", 300, 32, "uniform:0,6", coverage=0.5),
]


def test_batches_are_deterministic_for_a_seed():
    a = BatchGenerator(FEATS, seed=7).batch(128, index=3)
    b = BatchGenerator(FEATS, seed=7).batch(128, index=3)
    _assert_batches_equal(a, b)
    c = BatchGenerator(FEATS, seed=8).batch(128, index=3)
    assert not torch.equal(a.values[0], c.values[0])
    a.validate([f.rows for f in FEATS])


def test_batch_index_does_not_depend_on_earlier_batches():
    gen = BatchGenerator(FEATS, seed=1)
    list(gen.batches([5, 9, 13]))
    _assert_batches_equal(gen.batch(32, index=4), BatchGenerator(FEATS, seed=1).batch(32, index=4))


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64])
def test_index_dtype_and_weights(dtype):
    b = generate_batch(FEATS, 16, seed=0, index_dtype=dtype, weighted=True)
    assert all(v.dtype == dtype and o.dtype == dtype for v, o in zip(b.values, b.offsets))
    assert b.weights is not None
    for v, w in zip(b.values, b.weights):
        assert w.dtype == torch.float32 and w.numel() == v.numel()
    assert generate_batch(FEATS, 16).weights is None


def test_group_shares_lengths_and_absences_but_not_ids():
    feats = [
        FeatureSpec(f"f{i}", 4096, 8, "normal:20,10,100", coverage=0.6, skew="power:3", group=0)
        for i in range(3)
    ]
    b = generate_batch(feats, 256, seed=1000)
    assert np.array_equal(_lengths(b, 0), _lengths(b, 1))
    assert np.array_equal(_lengths(b, 0), _lengths(b, 2))
    assert not torch.equal(b.values[0], b.values[1])


def test_group_members_must_agree():
    feats = [
        FeatureSpec("x", 10, 4, "fixed:2", group=1),
        FeatureSpec("y", 11, 4, "fixed:2", group=1),
    ]
    with pytest.raises(ValueError, match="group 1"):
        BatchGenerator(feats)


def test_bad_batch_requests():
    with pytest.raises(ValueError, match="batch_size"):
        BatchGenerator(FEATS).batch(0)
    with pytest.raises(ValueError, match="seed"):
        BatchGenerator(FEATS, seed=-1)
    with pytest.raises(ValueError, match="at least one"):
        BatchGenerator([])


# ---------------------------------------------------------------------------- batch sizes
def test_recflex_batch_size_distribution():
    bs = recflex_batch_sizes(20_000, seed=0)
    assert bs.min() >= 1 and bs.max() <= 512
    frac512 = (bs == 512).mean()
    frac1 = (bs == 1).mean()
    assert 0.36 < frac512 < 0.46, frac512
    assert 0.14 < frac1 < 0.20, frac1
    assert 200 < bs.mean() < 320
    assert np.array_equal(bs[:128], recflex_batch_sizes(128, seed=0))  # prefix-stable


def test_batch_size_choice_and_fixed():
    choice = BatchSizes.parse({"kind": "choice", "values": [100, 200, 700]})
    assert set(choice.sample(500, seed=1)) == {100, 200, 700}
    assert (BatchSizes.parse(64).sample(5) == 64).all()
    with pytest.raises(ValueError, match="choice"):
        BatchSizes("choice")


# ---------------------------------------------------------------------------- traces
@pytest.mark.parametrize("name", ["reuse_low", "reuse_medium"])
def test_trace_stand_ins_match_the_artifact(name):
    ref = TRACE_REFERENCE_STATS[name]
    st = trace_stats(make_trace(name))
    assert st["entries"] == ref["entries"]
    assert abs(st["unique"] / ref["unique"] - 1) < 0.01
    assert abs(st["top10k"] - ref["top10k"]) < 0.01
    assert abs(st["top60k"] - ref["top60k"]) < 0.01


def test_high_and_random_traces():
    high = trace_stats(make_trace("reuse_high"))
    medium = trace_stats(make_trace("reuse_medium"))
    assert high["top60k"] > medium["top60k"] + 0.05
    assert abs(high["top60k"] - TRACE_REFERENCE_STATS["reuse_high"]["top60k"]) < 0.01
    assert np.median(micro24_hot_rows("reuse_high", 20)) < 1000  # hottest ids are small
    rnd = make_trace("random")
    assert abs(trace_stats(rnd)["unique"] / TRACE_REFERENCE_STATS["random"]["unique"] - 1) < 0.01
    pinned = micro24_hot_rows("random", 60_000)
    assert len(np.unique(pinned)) == 60_000
    assert abs(np.isin(rnd, pinned).mean() - 0.12) < 0.01


def test_traces_are_cached_copies_and_in_range():
    for name in TRACE_NAMES:
        t = make_trace(name)
        assert t.min() >= 0 and t.max() < 500_000
        assert t.flags.writeable
        t[:10] = -1  # a caller's edit must not reach the cache
        again = make_trace(name)
        assert again is not t and again.min() >= 0


def test_top_hot_ids_orders_by_frequency():
    trace = np.array([5, 3, 5, 9, 3, 5, 1])
    assert top_hot_ids(trace, 3).tolist() == [5, 3, 1]


def test_trace_cursor_wraps_and_drops_large_ids():
    cur = TraceCursor(np.array([0, 7, 1, 9, 2]), rows=5)
    assert cur.take(4).tolist() == [0, 1, 2, 0]
    assert cur.take(3).tolist() == [1, 2, 0]
    with pytest.raises(ValueError, match="below the table size"):
        TraceCursor(np.array([10, 11]), rows=5)


def test_trace_skew_shares_one_cursor_across_tables_and_batches():
    feats = [
        FeatureSpec(f"t{i}", 500_000, 8, "fixed:5", skew="trace:reuse_medium") for i in range(3)
    ]
    gen = BatchGenerator(feats)
    b0, b1 = gen.batch(4, 0), gen.batch(4, 1)
    stream = np.concatenate([v.numpy() for b in (b0, b1) for v in b.values])
    assert np.array_equal(stream, make_trace("reuse_medium")[: stream.size])


# ---------------------------------------------------------------------------- tables
def test_make_tables_bounds_zeros_and_determinism():
    tables = make_tables([1000, 50], [16, 4], seed=3)
    assert [tuple(t.shape) for t in tables] == [(1000, 16), (50, 4)]
    for t, n in zip(tables, [1000, 50]):
        bound = math.sqrt(1 / n)
        assert t.dtype == torch.float32
        assert float(t.abs().max()) <= bound
        assert not bool((t == 0).any())
    again = make_tables([1000, 50], [16, 4], seed=3)
    assert all(torch.equal(a, b) for a, b in zip(tables, again))
    assert not torch.equal(tables[0], make_tables([1000], 16, seed=4)[0])


def test_make_tables_half_precision_has_no_zeros():
    (t,) = make_tables([100_000], 8, dtype=torch.float16, seed=0)
    assert t.dtype == torch.float16 and not bool((t == 0).any())


def test_make_tables_rejects_mismatched_dims():
    with pytest.raises(ValueError, match="dims"):
        make_tables([10, 20], [4], seed=0)


def test_batches_on_threads_equal_batches_on_one_thread():
    from rec_common import workloads

    w = workloads.load("recflex-test")
    one = list(w.batches(6, seed=3))
    many = list(w.batches(6, seed=3, threads=3))
    assert len(one) == len(many) == 6
    for a, b in zip(one, many):
        assert a.keys == b.keys
        for f in range(a.num_features):
            va, oa, _ = a.feature(f)
            vb, ob, _ = b.feature(f)
            assert torch.equal(va, vb) and torch.equal(oa, ob)
