"""Bagpipe (in-process: same logic, threads for trainers) computes the same weights as one
process training without a cache, for every lookahead, cleanup proportion and cache size."""

from __future__ import annotations

import pytest
import torch

from bagpipe.models import dense_parameters
from bagpipe.oracle import OracleService
from bagpipe.server import init_tables
from bagpipe.training import run_local, run_reference, run_settings

STEPS = 50
# Adagrad divides by the root of small sums early on, so float reordering (an all-reduce of
# shard gradients vs one backward over the global batch) shows up ~10x larger than with SGD.
ADAGRAD_ATOL = 2e-4


def assert_close(name, got, want, atol):
    diff = (got - want).abs()
    if diff.max() > atol:
        idx = torch.nonzero(diff > atol)[:5].tolist()
        raise AssertionError(f"{name}: max diff {diff.max():.3g} > {atol}; first at {idx}")


def check_equivalent(source, s, model="dlrm", dense_optim="sgd", atol=2e-5):
    run = run_local(source, s, model=model, dense_optim=dense_optim)
    ref = run_reference(source, s, model=model, dense_optim=dense_optim)
    assert_close("tables", run.tables(), ref.tables, atol)
    want = dense_parameters(ref.model)
    for t, m in enumerate(run.models):
        for i, (p, q) in enumerate(zip(dense_parameters(m), want)):
            assert_close(f"trainer {t} dense param {i}", p.detach(), q.detach(), atol)
    for bag in run.caches:
        assert bag.cache.lookups > 0 and bag.cache.misses == 0
        assert bag.cache.peak <= s["cache_size"]
    return run, ref


def tight(source, s):
    return dict(s, cache_size=max(OracleService(source, s).plan.peak_resident))


@pytest.mark.parametrize("prop", [0.25, 0.3, 1.0])
@pytest.mark.parametrize("L", [1, 5, 200])
def test_sgd_tight_cache(source, L, prop):
    s = tight(source, run_settings(source, lookahead=L, cleanup_proportion=prop,
                                   stop_iter=STEPS, num_servers=2))  # fmt: skip
    run, _ = check_equivalent(source, s)
    assert max(b.cache.peak for b in run.caches) == s["cache_size"]


@pytest.mark.parametrize("L,prop,cache", [(1, 0.25, "tight"), (5, 0.3, "loose"),
                                          (200, 1.0, "tight"), (200, 0.25, "loose")])  # fmt: skip
def test_adagrad(source, L, prop, cache):
    s = run_settings(source, lookahead=L, cleanup_proportion=prop, stop_iter=STEPS,
                     emb_optim="adagrad", emb_lr=0.1)  # fmt: skip
    if cache == "tight":
        s = tight(source, s)
    check_equivalent(source, s, dense_optim="adagrad", atol=ADAGRAD_ATOL)


@pytest.mark.parametrize("model", ["wide-deep", "dcn", "deepfm"])
def test_other_models(source, model):
    s = run_settings(source, lookahead=5, cleanup_proportion=0.3, stop_iter=STEPS,
                     emb_optim="adagrad", emb_lr=0.1, model=model, num_trainers=2)  # fmt: skip
    check_equivalent(
        source, tight(source, s), model=model, dense_optim="adagrad", atol=ADAGRAD_ATOL
    )


def test_singleton_rows_are_updated(source):
    s = run_settings(source, lookahead=5, cleanup_proportion=0.3, stop_iter=STEPS)
    run, _ = check_equivalent(source, s)
    assert sum(sp.num_private for sp in run.oracle.plan.steps) > 0
    init = torch.cat(init_tables(s["seed"], s["table_sizes"], s["row_width"]))
    # rows read by exactly one step and one trainer changed, and as the reference says
    plan = run.oracle.plan
    private_rows = set()
    for k, sp in enumerate(plan.steps[:-1]):
        if sp.num_private:
            for t in range(2):
                mine = set(plan.initial_fetch[t].tolist()) if k == 0 else set()
                private_rows |= mine - set(sp.sync_now.tolist()) - set(sp.sync_later.tolist())
    rows = sorted(r for r in private_rows if r < init.shape[0])
    assert rows, "expected private rows at step 0"
    moved = (run.tables()[rows] - init[rows]).abs().amax(dim=1)
    assert bool((moved > 0).all())


def test_three_trainers(source):
    s = run_settings(source, lookahead=5, cleanup_proportion=1.0, stop_iter=20, num_trainers=4,
                     num_servers=3)  # fmt: skip
    check_equivalent(source, tight(source, s))
