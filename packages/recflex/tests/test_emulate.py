"""The CPU emulation of every template's work decomposition equals per-feature embedding_bag."""

from __future__ import annotations

import random

import pytest
import torch

from recflex.binding import Binder
from recflex.inputs import pack
from recflex.plan import Plan
from recflex.reference import embedding_bag_reference, emulate
from recflex.schedules import TEMPLATES, template_candidates
from recflex.testing import assert_close, random_batch, tables_for


def run_plan(plan, tables, batch, maxc=64):
    p = pack(batch)
    binding = Binder(plan, maxc).bind(p.offsets, p.batch_size)
    return emulate(plan, tables, p, binding), embedding_bag_reference(tables, p)


def sampled(template, dim, k, seed):
    cands = template_candidates(template, dim)
    rng = random.Random(seed)
    return rng.sample(cands, min(k, len(cands)))


@pytest.mark.parametrize("template", TEMPLATES)
@pytest.mark.parametrize("dim", [4, 8, 16, 32, 64, 128, 6])
def test_each_template_across_its_space(template, dim):
    scheds = sampled(template, dim, 6, seed=dim)
    if not scheds:
        pytest.skip(f"{template} has no schedule for dim {dim}")
    nf = len(scheds)
    rows = [1, 97, 4096, 13, 300, 2][:nf]
    rows += [50] * (nf - len(rows))
    plan = Plan(scheds, [dim] * nf, rows)
    tables = tables_for(rows, [dim] * nf, seed=dim)
    for b, max_len in ((1, 3), (7, 20), (512, 60)):
        batch = random_batch(rows, b, max_len=max_len, absent=(nf - 1,) if nf > 1 else (), seed=b)
        out, ref = run_plan(plan, tables, batch, maxc=5)
        assert_close(out, ref)
        if nf > 1:  # the absent feature: exact zeros
            assert bool((out[:, -dim:] == 0).all())


@pytest.mark.parametrize("seed", range(4))
def test_random_mixed_plans(seed):
    rng = random.Random(seed)
    dims = [rng.choice([1, 2, 4, 8, 12, 16, 32, 64, 128]) for _ in range(24)]
    scheds = []
    for d in dims:
        opts = [c for t in TEMPLATES for c in template_candidates(t, d)]
        scheds.append(rng.choice(opts))
    rows = [rng.choice([1, 5, 1000]) for _ in dims]
    plan = Plan(scheds, dims, rows)
    tables = tables_for(rows, dims, seed=seed)
    for b in (1, 7, 512):
        batch = random_batch(
            rows,
            b,
            max_len=[rng.choice([1, 4, 100]) for _ in dims],
            absent=(0, 5),
            empty_frac=0.3,
            seed=seed * 10 + b,
        )
        out, ref = run_plan(plan, tables, batch, maxc=rng.choice([1, 16, 1000]))
        assert_close(out, ref)
        assert bool((out[:, : dims[0]] == 0).all())


def test_obms_tree_order_is_the_kernels():
    # the emulation adds row r + h into row r, halving h: same grouping as the kernel
    s = template_candidates("OneBlockMultiSample", 4)
    plan = Plan([s[0]], [4], [10])
    tables = [torch.arange(40, dtype=torch.float32).view(10, 4)]
    batch = random_batch([10], 3, max_len=30, empty_frac=0.0)
    out, ref = run_plan(plan, tables, batch)
    assert torch.equal(out, ref)  # small integers: exact in any order


def test_coverage_errors_are_raised():
    from recflex.reference import emulate_feature

    s = template_candidates("WarpPerSample", 16)[0]
    ids = torch.tensor([1, 2, 3])
    offs = torch.tensor([0, 1, 2, 3] + [3] * 300)
    with pytest.raises(RuntimeError, match="only 1 blocks were launched"):
        emulate_feature(s, torch.ones(5, 16), ids, offs, nblocks=1)
