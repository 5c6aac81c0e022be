"""Runtime thread binding: vectorized block counts equal each schedule's work description."""

from __future__ import annotations

import random

import pytest
import torch

from recflex.binding import Binder
from recflex.inputs import pack
from recflex.plan import Plan
from recflex.schedules import TEMPLATES, template_candidates
from recflex.testing import random_batch


def mixed_plan(dims, seed=0, occupancy=None):
    rng = random.Random(seed)
    scheds = []
    for d in dims:
        opts = [c for t in TEMPLATES for c in template_candidates(t, d)]
        scheds.append(rng.choice(opts))
    return Plan(scheds, dims, [50] * len(dims), occupancy)


@pytest.mark.parametrize("batch_size", [1, 7, 512])
def test_binding_matches_schedule_work(batch_size):
    dims = [4, 8, 16, 32, 64, 128, 12, 3] * 3
    plan = mixed_plan(dims, seed=batch_size)
    batch = random_batch([50] * len(dims), batch_size, max_len=[1, 5, 40] * 8, absent=(3, 11))
    p = pack(batch)
    maxc = 37
    bnd = Binder(plan, maxc, task_order="feature").bind(p.offsets, p.batch_size)
    for f, s in enumerate(plan.schedules):
        lens = batch.lengths(f).tolist()
        assert int(bnd.blocks[f]) == s.work(dims[f], lens, maxc)["blocks"], (f, s)
        assert int(bnd.nnz[f]) == sum(lens)
    # tasks: feature f's blocks 0..n-1, in feature order
    total = int(bnd.blocks.sum())
    assert bnd.total_blocks == total == bnd.tasks.shape[0]
    feats = bnd.tasks[:, 0]
    assert torch.equal(
        feats, torch.repeat_interleave(torch.arange(len(dims)), bnd.blocks.long()).int()
    )
    for f in range(len(dims)):
        bids = bnd.tasks[feats == f, 1]
        assert torch.equal(bids, torch.arange(int(bnd.blocks[f]), dtype=torch.int32))


@pytest.mark.parametrize("batch_size", [0, 1, 7, 300])
@pytest.mark.parametrize("order", ["feature", "heavy-first"])
def test_sync_free_binding_bounds_the_exact_one(batch_size, order):
    """``num_ids``: the grid is ``grid_bound`` (>= the exact total), the tasks are the exact
    ones then ``(-1, 0)``, block counts and work ranges equal, the work list a longer list
    with the same prefix; nothing is read from the device (the bound is host arithmetic)."""
    dims = [4, 8, 16, 32, 64, 128, 12, 3] * 3
    plan = mixed_plan(dims, seed=batch_size + 3)
    batch = random_batch([50] * len(dims), batch_size, max_len=[1, 5, 40] * 8, absent=(3, 11))
    p = pack(batch)
    binder = Binder(plan, 37, task_order=order)
    exact = binder.bind(p.offsets, p.batch_size)
    n = p.indices.numel()
    free = binder.bind(p.offsets, p.batch_size, n)
    assert free.total_blocks == binder.grid_bound(batch_size, n) >= exact.total_blocks
    assert torch.equal(free.blocks, exact.blocks) and torch.equal(free.nnz, exact.nnz)
    assert torch.equal(free.work_start, exact.work_start)
    w = exact.work.shape[0]
    assert free.work.shape[0] == binder.work_bound(batch_size, n) >= w
    assert torch.equal(free.work[:w], exact.work)
    t = exact.total_blocks
    assert free.tasks.shape == (free.total_blocks, 2)
    assert torch.equal(free.tasks[:t], exact.tasks)
    assert bool((free.tasks[t:, 0] == -1).all()) and bool((free.tasks[t:, 1] == 0).all())
    meta, offs = free.pack()  # the layout the kernel reads
    assert torch.equal(meta[offs["tasks"] : offs["tasks"] + 2 * t], exact.tasks.reshape(-1))


def test_grid_bound_holds_for_extreme_batches():
    """The bound covers one huge bag, all-empty bags and batches of one id per bag."""
    dims = [4, 8, 16, 32, 64, 128, 12, 3] * 2
    for seed in range(4):
        plan = mixed_plan(dims, seed=seed)
        for max_len in (0, 1, 2000):
            batch = random_batch([50] * len(dims), 5, max_len=max_len, seed=seed)
            p = pack(batch)
            binder = Binder(plan, 1000)
            exact = binder.bind(p.offsets, 5)
            n = p.indices.numel()
            assert binder.grid_bound(5, n) >= exact.total_blocks, (seed, max_len)
            assert binder.work_bound(5, n) >= exact.work.shape[0], (seed, max_len)


def test_small_batches_launch_few_blocks_and_absent_features_none():
    dims = [16, 64, 8]
    plan = Plan(
        [
            template_candidates("WarpPerSample", 16)[0],
            template_candidates("WarpPerSample", 64)[0],
            template_candidates("ReduceByKey", 8)[0],
        ],
        dims,
        [50] * 3,
    )
    from rec_common.jagged import JaggedBatch

    one = pack(
        JaggedBatch.from_lengths(
            ["f0", "f1", "f2"],
            [torch.tensor([3, 4]), torch.tensor([5]), torch.tensor([], dtype=torch.int64)],
            [torch.tensor([2]), torch.tensor([1]), torch.tensor([0])],
        )
    )
    b = Binder(plan, 1000).bind(one.offsets, 1)
    assert b.blocks.tolist()[:2] == [1, 1]
    assert int(b.blocks[2]) == 1  # no lookups: one zero-fill block, no schedule blocks
    big = pack(random_batch([50] * 3, 512, absent=(2,)))
    bb = Binder(plan, 1000).bind(big.offsets, 512)
    assert int(bb.blocks[0]) > int(b.blocks[0])


def test_multiblock_work_list():
    plan = Plan([template_candidates("MultiBlockPerSample", 16)[0]], [16], [50])
    s = plan.schedules[0]
    tl = s.lookups_per_tile(16)
    batch = random_batch([50], 33, max_len=3 * tl, seed=3)
    p = pack(batch)
    bnd = Binder(plan, 5).bind(p.offsets, 33)
    lens = batch.lengths(0).tolist()
    want = [(i, t) for i, n in enumerate(lens) for t in range(-(-n // tl))]
    assert [tuple(x) for x in bnd.work.tolist()] == want
    assert bnd.work_start.tolist() == [0, len(want)]
    assert int(bnd.blocks[0]) == min(5, len(want))


def test_pack_layout_and_errors():
    batch = random_batch([10, 20], 4, seed=1)
    p = bnd_offsets = pack(batch)
    assert p.offsets.numel() == 2 * 4 + 1
    ids, offs = p.feature(1)
    assert torch.equal(ids, batch.values[1]) and torch.equal(offs, batch.offsets[1])
    plan = Plan([template_candidates("OneHot", 4)[0]] * 2, [4, 4], [10, 20])
    with pytest.raises(ValueError, match=r"expected 2\*5\+1"):
        Binder(plan, 10).bind(bnd_offsets.offsets, 5)
    with pytest.raises(ValueError, match="max_concurrent must be >= 1"):
        Binder(plan, 0)


def test_heavy_first_order_is_a_permutation():
    dims = [4, 64, 16, 128]
    plan = mixed_plan(dims, seed=5)
    p = pack(random_batch([50] * 4, 300, max_len=[1, 50, 5, 100]))
    a = Binder(plan, 64, task_order="feature").bind(p.offsets, 300)
    b = Binder(plan, 64).bind(p.offsets, 300)  # heavy-first is the default
    assert torch.equal(a.blocks, b.blocks)
    assert sorted(map(tuple, a.tasks.tolist())) == sorted(map(tuple, b.tasks.tolist()))
    firsts = list(dict.fromkeys(b.tasks[:, 0].tolist()))  # feature order of the launch
    load = [float(a.nnz[f]) * dims[f] / max(int(a.blocks[f]), 1) for f in firsts]
    assert load == sorted(load, reverse=True)
    with pytest.raises(ValueError, match="task_order"):
        Binder(plan, 64, task_order="random")


def test_static_binder_follows_the_task_order():
    # the binding ablation compares runtime and static binding in the same launch order
    from recflex.binding import StaticBinder

    dims = [4, 64, 16, 128]
    plan = mixed_plan(dims, seed=5)
    p = pack(random_batch([50] * 4, 300, max_len=[1, 50, 5, 100]))
    samples = [(p.offsets, 300)]
    heavy = StaticBinder(plan, 64, samples, "static-max").bind(p.offsets, 300)
    plain = StaticBinder(plan, 64, samples, "static-max", "feature").bind(p.offsets, 300)
    assert torch.equal(heavy.blocks, plain.blocks)
    assert sorted(map(tuple, heavy.tasks.tolist())) == sorted(map(tuple, plain.tasks.tolist()))
    firsts = list(dict.fromkeys(heavy.tasks[:, 0].tolist()))
    load = [float(heavy.nnz[f]) * dims[f] / max(int(heavy.blocks[f]), 1) for f in firsts]
    assert load == sorted(load, reverse=True)
    assert plain.tasks[:, 0].tolist() == sorted(plain.tasks[:, 0].tolist())
