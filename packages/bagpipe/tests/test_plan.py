"""The oracle's plan alone: residency is exact, capacity is known, rules hold."""

from __future__ import annotations

import numpy as np
import pytest

from bagpipe.errors import CacheTooSmall
from bagpipe.oracle import OracleService
from bagpipe.plan import cleanup_interval, make_plan
from bagpipe.training import run_settings


def simulate(plan, steps):
    """Replay the plan; check every row read is resident and every op is legal."""
    n = plan.num_trainers
    res = [set(map(int, plan.initial_fetch[t])) if not plan.rounds[0].fetch_ahead else set()
           for t in range(n)]  # fmt: skip
    pending = [set(map(int, plan.initial_fetch[t])) for t in range(n)]
    if not plan.rounds[0].fetch_ahead:
        pending = [set() for _ in range(n)]
    written = {}
    for r in plan.rounds:
        for t in range(n):
            tr = r.trainers[t]
            ev = set(map(int, tr.evict))
            assert ev <= res[t], f"round {r.index}: trainer {t} evicts rows it does not hold"
            assert set(map(int, tr.write_back)) <= ev
            for row in map(int, tr.write_back):
                written[row] = written.get(row, 0) + 1
            res[t] -= ev
            assert not (pending[t] & res[t])
            res[t] |= pending[t]
            pending[t] = set(map(int, tr.fetch))
            if not r.fetch_ahead:
                res[t] |= pending[t]
                pending[t] = set()
        for k in range(r.first_step, r.last_step):
            for t in range(n):
                missing = set(map(int, steps[k][t])) - res[t]
                assert not missing, f"step {k}: trainer {t} misses rows {sorted(missing)[:5]}"
    for t in range(n):
        assert set(map(int, plan.final[t].evict)) == res[t]
    return res


def random_steps(k, n, rows, per, seed):
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, rows + 1) ** 1.1
    p /= p.sum()
    return [[np.unique(rng.choice(rows, per, p=p)) for _ in range(n)] for _ in range(k)]


@pytest.mark.parametrize(
    "L,prop", [(1, 1.0), (3, 1.0), (5, 0.3), (7, 0.5), (20, 0.25), (200, 0.25)]
)
@pytest.mark.parametrize("n", [1, 2, 3])
def test_every_read_is_resident(L, prop, n):
    steps = random_steps(60, n, 300, 25, seed=L * 10 + n)
    plan = make_plan(steps, 300, L, cleanup_interval(L, prop), check=True)
    simulate(plan, steps)
    # replicated rows: every trainer holds them; sync lists are disjoint
    for sp in plan.steps:
        assert not np.intersect1d(sp.sync_now, sp.sync_later).size


def test_private_rows_are_owned_by_one_trainer():
    steps = [[np.array([1, 5]), np.array([2, 5])], [np.array([5]), np.array([3])]]
    plan = make_plan(steps, 10, lookahead=1, cleanup_interval=1, check=True)
    assert plan.initial_fetch[0].tolist() == [1, 5]  # 1 private to trainer 0
    assert plan.initial_fetch[1].tolist() == [2, 5]  # 2 private to trainer 1
    assert plan.steps[0].num_private == 2
    assert plan.steps[0].sync_now.tolist() == [5]
    # row 1 leaves at the first boundary; trainer 0 writes it back
    assert 1 in plan.rounds[1].trainers[0].write_back.tolist()


def test_peak_matches_simulation_and_capacity_error(source):
    s = run_settings(source, lookahead=5, cleanup_proportion=0.3, stop_iter=30)
    o = OracleService(source, s)
    peak = max(o.plan.peak_resident)
    assert 0 < peak < sum(source.table_sizes)
    with pytest.raises(CacheTooSmall, match=rf"--cache-size {peak} or more"):
        OracleService(source, dict(s, cache_size=peak - 1))
    OracleService(source, dict(s, cache_size=peak))  # exactly enough is fine


def test_baseline_plans_are_consistent():
    steps = random_steps(20, 2, 200, 20, seed=1)
    simulate(make_plan(steps, 200, 1, 1, mode="ps"), steps)
    simulate(make_plan(steps, 200, 1, 1, mode="static", hot_rows=np.arange(10)), steps)


def test_bad_inputs():
    with pytest.raises(ValueError, match="lookahead"):
        make_plan([[np.array([1])]], 5, 0, 1)
    with pytest.raises(ValueError, match="outside"):
        make_plan([[np.array([7])]], 5, 1, 1)


@pytest.mark.parametrize("size", [0, 1, 2, 17, 5000])
def test_sorted_unique_matches_numpy(size):
    from bagpipe.plan import sorted_unique

    a = np.random.default_rng(size).integers(-5, 50, size)
    got = sorted_unique(a)
    assert got.dtype == np.int64
    assert got.tolist() == np.unique(a).tolist()


def test_step_rows_one_hot_fast_path_matches_the_jagged_path():
    from bagpipe.data import BatchSource
    from bagpipe.oracle import step_rows
    from bagpipe.server import table_offsets
    from bagpipe.synthetic import synthetic_arrays

    sizes = [7, 300, 1, 50]
    dense, sparse, labels = synthetic_arrays(96, sizes, seed=3)
    one_hot = BatchSource(dense, sparse, labels, sizes, "<t>", 32)
    ragged = [(sparse[:, f].copy(), np.arange(97)) for f in range(len(sizes))]
    jagged = BatchSource(dense, ragged, labels, sizes, "<t>", 32)
    off = table_offsets(sizes)
    for k in range(4):  # batch 3 wraps around to batch 0
        for n in (1, 2, 4):
            a, b = step_rows(one_hot, k, off, n), step_rows(jagged, k, off, n)
            assert [x.tolist() for x in a] == [x.tolist() for x in b]


@pytest.mark.parametrize("shards", [2, 3, 7])
def test_row_ranges_on_threads_give_the_same_plan(shards):
    steps = random_steps(40, 2, 500, 60, seed=shards)
    one = make_plan(steps, 500, 5, 2, check=True, shards=1)
    many = make_plan(steps, 500, 5, 2, check=True, shards=shards)
    assert one.peak_resident == many.peak_resident and one.peak_round == many.peak_round
    for a, b in zip(one.steps, many.steps):
        assert a.sync_now.tolist() == b.sync_now.tolist()
        assert a.sync_later.tolist() == b.sync_later.tolist()
        assert a.num_private == b.num_private
    for ra, rb in zip(one.rounds, many.rounds):
        for ta, tb in zip(ra.trainers, rb.trainers):
            for x, y in (
                (ta.evict, tb.evict),
                (ta.write_back, tb.write_back),
                (ta.fetch, tb.fetch),
            ):
                assert x.tolist() == y.tolist()
    for ta, tb in zip(one.final, many.final):
        assert ta.evict.tolist() == tb.evict.tolist()
    simulate(many, steps)
