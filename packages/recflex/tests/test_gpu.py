"""The fused kernel on a GPU against per-feature embedding_bag (skipped without CUDA).

Each test compiles one plan (NVRTC, cached on disk) holding many features, so every template
is covered across sampled parameters with few builds; a module fixture builds them all in
parallel processes first.
"""

from __future__ import annotations

import random
import warnings

import pytest
import torch

from rec_common.jagged import JaggedBatch
from recflex import FusedEmbedding, Schedule
from recflex.inputs import pack
from recflex.plan import Plan
from recflex.reference import embedding_bag_reference
from recflex.schedules import TEMPLATES, template_candidates
from recflex.testing import assert_close, random_batch, tables_for

pytestmark = pytest.mark.gpu

DIMS = (4, 8, 16, 32, 64, 128, 6, 3)


def check(emb, tables, batch, atol=1e-5):
    out = emb(batch)
    torch.cuda.synchronize()
    emb.check_errors()
    ref = embedding_bag_reference([t.float().cpu() for t in tables], pack(batch).to("cpu"))
    assert_close(out, ref, atol=atol, rtol=atol)
    return out


def template_plan(template, per_dim=2, seed=0):
    rng = random.Random(seed)
    scheds, dims = [], []
    for d in DIMS:
        cands = template_candidates(template, d)
        for s in rng.sample(cands, min(per_dim, len(cands))):
            scheds.append(s)
            dims.append(d)
    rows = [rng.choice([1, 7, 1000, 4096]) for _ in dims]
    return Plan(scheds, dims, rows, occupancy=rng.choice([None, 1, 2, 4]))


def mixed_plan(seed):
    rng = random.Random(100 + seed)
    dims = [rng.choice(DIMS) for _ in range(24)]
    scheds = [rng.choice([c for t in TEMPLATES for c in template_candidates(t, d)]) for d in dims]
    rows = [rng.choice([1, 50, 4096]) for _ in dims]
    return Plan(scheds, dims, rows, occupancy=rng.choice([2, 4, 8])), rng


def jump_table_plan():
    a = template_plan("WarpPerSample", per_dim=1, seed=7)
    b = template_plan("OneBlockMultiSample", per_dim=1, seed=8)
    return Plan([*a.schedules, *b.schedules], [*a.dims, *b.dims], [*a.rows, *b.rows], 4)


TIMING_PLAN = Plan(
    [Schedule("WarpPerSample", {"v": 4, "items": 2, "x": 8})] * 4, [32] * 4, [100] * 4, 2
)
SMALL_PLAN = template_plan("OneBlockMultiSample", per_dim=1, seed=3)


@pytest.fixture(scope="module", autouse=True)
def _prebuild_kernels():
    """Compile every kernel these tests launch, in parallel processes (disk cache)."""
    if not torch.cuda.is_available():
        return
    from recflex import build, generate, launch

    arch = launch.arch_of(torch.cuda.current_device())
    ks = [generate(template_plan(t, seed=TEMPLATES.index(t))) for t in TEMPLATES]
    ks += [generate(mixed_plan(s)[0]) for s in range(2)]
    ks += [generate(jump_table_plan(), index_dtype="int32", weight_dtype="float16",
                    dispatch="jump-table")]  # fmt: skip
    ks += [generate(TIMING_PLAN), generate(TIMING_PLAN, timing=True), generate(SMALL_PLAN)]
    build.prebuild(ks, arch, jobs=min(16, len(ks)))


@pytest.mark.parametrize("template", TEMPLATES)
def test_template_across_its_space(template):
    plan = template_plan(template, seed=TEMPLATES.index(template))
    tables = [t.cuda() for t in tables_for(plan.rows, plan.dims)]
    emb = FusedEmbedding(tables, plan)
    nf = plan.num_features
    for b, max_len in ((1, 3), (7, 30), (512, 80)):
        batch = random_batch(list(plan.rows), b, max_len=max_len, absent=(0, nf - 1), seed=b)
        out = check(emb, tables, batch)
        assert bool((out[:, : plan.dims[0]] == 0).all())  # an absent feature: exact zeros
        assert bool((out[:, -plan.dims[-1] :] == 0).all())


@pytest.mark.parametrize("seed", range(2))
def test_random_mixed_plans(seed):
    plan, rng = mixed_plan(seed)
    rows = list(plan.rows)
    tables = [t.cuda() for t in tables_for(rows, list(plan.dims), seed=seed)]
    emb = FusedEmbedding(tables, plan)
    for b in (1, 7, 512):
        maxes = [rng.choice([1, 5, 200]) for _ in rows]
        batch = random_batch(rows, b, max_len=maxes, absent=(3, 9), empty_frac=0.3, seed=b + seed)
        check(emb, tables, batch)
        check(emb, tables, batch.to("cuda"))  # binding computed on the GPU


@pytest.mark.parametrize("seed", range(2))
def test_sync_free_forward_matches_and_does_not_sync(seed):
    """sync_free + validate=False on a GPU-resident batch: the same sums, padding blocks
    exit, and the forward queues its work without waiting for the GPU (a sync inside it
    would raise under torch.cuda.set_sync_debug_mode("error"))."""
    plan, rng = mixed_plan(seed)
    rows = list(plan.rows)
    tables = [t.cuda() for t in tables_for(rows, list(plan.dims), seed=seed)]
    emb = FusedEmbedding(tables, plan, sync_free=True, validate=False)
    for b in (1, 7, 512):
        maxes = [rng.choice([1, 5, 200]) for _ in rows]
        batch = random_batch(rows, b, max_len=maxes, absent=(3, 9), empty_frac=0.3, seed=b + seed)
        gpu = batch.to("cuda")
        check(emb, tables, gpu)
        assert emb.last_binding.total_blocks >= int(emb.last_binding.blocks.sum())
        torch.cuda.synchronize()
        try:
            with warnings.catch_warnings():  # "a prototype feature": a UserWarning, which
                warnings.simplefilter("ignore")  # the test settings turn into an error
                torch.cuda.set_sync_debug_mode("error")
            emb(gpu)
        finally:
            torch.cuda.set_sync_debug_mode(0)
        torch.cuda.synchronize()


def test_sync_free_forward_reports_bad_ids_a_batch_late():
    """sync_free + validate=False: a bad id is skipped and flagged; once that launch has
    finished, the next forward raises (no host sync needed); the flag is then clear."""
    plan = TIMING_PLAN
    tables = [t.cuda() for t in tables_for(plan.rows, plan.dims)]
    emb = FusedEmbedding(tables, plan, sync_free=True, validate=False)
    ids = [torch.tensor([1, 10**9, -5, 2])] + [torch.tensor([3])] * 3
    lens = [torch.tensor([2, 2])] + [torch.tensor([1, 0])] * 3
    bad = JaggedBatch.from_lengths([f"f{i}" for i in range(4)], ids, lens).to("cuda")
    good = random_batch(list(plan.rows), 4, max_len=3).to("cuda")
    out = emb(bad)  # no error yet: nothing waited for the launch
    torch.cuda.synchronize()
    t0 = tables[0].cpu()
    assert_close(out[:, :32].cpu(), torch.stack([t0[1], t0[2]]))
    with pytest.raises(ValueError, match="earlier batch had ids outside their tables"):
        emb(good)
    emb(good)  # the flag was cleared
    torch.cuda.synchronize()
    emb.check_errors()


def test_jump_table_int32_fp16():
    plan = jump_table_plan()
    tables = [t.cuda() for t in tables_for(plan.rows, plan.dims, dtype=torch.float16)]
    emb = FusedEmbedding(tables, plan, dispatch="jump-table")
    batch = random_batch(list(plan.rows), 64, index_dtype=torch.int32, max_len=20)
    check(emb, tables, batch, atol=2e-3)
    try:
        kjt = batch.to_kjt()
    except ImportError:
        return  # TorchRec is optional
    check(emb, tables, kjt, atol=2e-3)


def test_timing_build_and_exact_occupancy():
    plan = TIMING_PLAN
    tables = [t.cuda() for t in tables_for(plan.rows, plan.dims)]
    emb = FusedEmbedding(tables, plan, exact_occupancy=True)
    stats = emb.kernel_stats()
    assert stats["occupancy_blocks_per_sm"] == 2, stats
    assert stats["dynamic_smem_bytes"] > 0
    batch = random_batch(list(plan.rows), 100)
    gpu, binding, extra = emb.prepare(batch)
    timing = torch.zeros(binding.total_blocks, 3, dtype=torch.int64, device="cuda")
    out = emb.run_prepared(gpu, binding, extra, timing=timing)
    torch.cuda.synchronize()
    assert_close(out, embedding_bag_reference(tables, pack(batch).to("cuda")))
    assert bool((timing[:, 1] >= timing[:, 0]).all()) and bool((timing[:, 0] > 0).all())
    assert int(timing[:, 2].max()) < stats["sm_count"]


def test_one_sample_batch_launches_few_blocks():
    plan = SMALL_PLAN
    tables = [t.cuda() for t in tables_for(plan.rows, plan.dims)]
    emb = FusedEmbedding(tables, plan)
    batch = random_batch(list(plan.rows), 1, max_len=4, empty_frac=0.0)
    check(emb, tables, batch)
    assert emb.last_binding.total_blocks <= plan.num_features


def test_out_of_range_ids_are_skipped_and_flagged():
    plan = TIMING_PLAN
    tables = [t.cuda() for t in tables_for(plan.rows, plan.dims)]
    emb = FusedEmbedding(tables, plan, validate=False)
    ids = [torch.tensor([1, 10**9, -5, 2])] + [torch.tensor([3])] * 3
    lens = [torch.tensor([2, 2])] + [torch.tensor([1, 0])] * 3
    bad = JaggedBatch.from_lengths([f"f{i}" for i in range(4)], ids, lens)
    out = emb(bad)
    torch.cuda.synchronize()
    t0 = tables[0].cpu()
    assert_close(out[:, :32].cpu(), torch.stack([t0[1], t0[2]]))
    with pytest.raises(ValueError, match="outside their tables"):
        emb.check_errors()
    with pytest.raises(ValueError, match="outside its table"):
        FusedEmbedding(tables, plan)(bad)


def test_int64_addresses_past_2_to_31_elements():
    rows, d = (1 << 31) // 64 + 4096, 64  # row * dim overflows int32 for the last rows
    free, _ = torch.cuda.mem_get_info()
    if free < rows * d * 4 + (2 << 30):
        pytest.skip("needs ~9 GB of free GPU memory")
    w = torch.empty(rows, d, device="cuda")
    hi = torch.tensor([rows - 1, rows - 2, 5], device="cuda")
    w[hi] = torch.randn(3, d, device="cuda")
    plan = Plan(
        [
            Schedule("WarpPerSample", {"v": 4, "items": 2, "x": 16}),
            Schedule("OneHot", {"unroll": 4}),
        ],
        [d, d],
        [rows, rows],
    )
    ids = hi.cpu()
    batch = JaggedBatch.from_lengths(
        ["f0", "f1"], [ids, ids[:2]], [torch.tensor([2, 1]), torch.tensor([1, 1])]
    )
    out = FusedEmbedding([w, w], plan)(batch)
    want0 = torch.stack([w[hi[0]] + w[hi[1]], w[hi[2]]])
    want1 = torch.stack([w[hi[0]], w[hi[1]]])
    assert_close(out, torch.cat([want0, want1], dim=1))
    del w
    torch.cuda.empty_cache()


def test_bench_times_the_launch_and_the_whole_forward(tmp_path):
    import json

    from recflex import bench

    out = tmp_path / "rows.jsonl"
    rc = bench.main(["--model", "test", "--batches", "3", "--repeats", "1", "--variants",
                     "recflex,recflex-forward,recflex-feature-order,torch", "--out", str(out)])  # fmt: skip
    assert rc == 0
    rows = {r["variant"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert set(rows) == {"recflex", "recflex-forward", "recflex-feature-order", "torch"}
    assert all(r["value"] > 0 for r in rows.values())
    assert "host_prepare_us_per_batch" in rows["recflex"]
    assert "host_prepare_us_per_batch" not in rows["recflex-forward"]
