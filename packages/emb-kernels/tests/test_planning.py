"""CPU checks of the launch planning: the OptMT device cap and the fast kernel's work split."""

from __future__ import annotations

import pytest
import torch

from emb_kernels import kernels, occupancy, ops
from emb_kernels.constants import DEVICE_CAP


def test_blocks_and_waves_follow_the_register_allocation():
    # 256-thread blocks: 32 regs -> 8 blocks (thread limit), 40 -> 6, 42 and 48 -> 5, 64 -> 4
    assert [occupancy.blocks_per_sm(r) for r in (32, 40, 42, 48, 56, 64, 128)] == [
        8, 6, 5, 5, 4, 4, 2,
    ]  # fmt: skip
    assert occupancy.waves(1024, 132, 8) == 1 and occupancy.waves(1024, 132, 6) == 2
    assert occupancy.waves(1024, 108, 5) == 2 and occupancy.waves(1024, 108, 4) == 3
    with pytest.raises(ValueError, match="sm_count and blocks"):
        occupancy.waves(1024, 0, 5)
    with pytest.raises(ValueError, match="registers and block_threads"):
        occupancy.blocks_per_sm(0)


@pytest.mark.parametrize(
    "sm_count,cap",
    [(108, 42), (132, 32), (114, 42), (170, 32), (84, 32)],
)
def test_device_cap_keeps_the_paper_cap_where_it_reaches_the_fewest_waves(sm_count, cap):
    assert occupancy.pick_register_cap(sm_count) == cap
    best = min(
        occupancy.waves(1024, sm_count, occupancy.blocks_per_sm(c)) for c in (32, 40, 42, 48, 64)
    )
    assert occupancy.waves(1024, sm_count, occupancy.blocks_per_sm(cap)) == best


def test_device_cap_is_the_variants_default():
    assert ops.resolve_variant("optmt").max_registers == DEVICE_CAP
    assert ops.resolve_variant("combined").max_registers == DEVICE_CAP
    assert ops.resolve_variant("optmt", 42).max_registers == 42
    assert ops.resolve_variant("baseline").max_registers is None
    fixed = ops.resolve_variant("rpf", 40)
    assert ops.on_device(fixed, torch.device("cpu")) is fixed  # nothing to resolve
    with pytest.raises(TypeError, match="max_registers"):
        ops.resolve_variant("optmt", "auto")
    w = torch.randn(20, 8)
    out = ops.embedding_bag(w, torch.tensor([1, 2, 3]), torch.tensor([0, 1]), variant="optmt")
    assert out.shape == (2, 8)  # the CPU path ignores the cap


def anchor_plan(**kw):
    args = dict(
        dtype=torch.float32, index_dtype=torch.int64, rows=[4_000_000], dims=[128],
        weight_offsets=[0], out_cols=[0], out_stride=128, batch=16384, mode="sum",
        mean_pooling=32.0, device=torch.device("cpu"), sm_count=132,
    )  # fmt: skip
    args.update(kw)
    return kernels.plan_fast(**args)


def test_medium_bags_share_a_block_and_segments_stay_forceable():
    plan = anchor_plan()  # L 32, 16384 bags: block2 (H200: 75.1 / 47.0 us vs warp 75.6 / 54.9)
    assert plan.block_warps == 2 and plan.name == "ek_fast_block2_sum_f32_i64_v16"
    assert anchor_plan(mean_pooling=20.0).block_warps == 0  # < 32 ids: warp mode
    assert anchor_plan(mean_pooling=48.0, batch=500).block_warps == 2  # at most mean / 16
    assert anchor_plan(mean_pooling=150.0, batch=2048).block_warps == 4  # micro24: fill the GPU
    assert anchor_plan(mode="max").block_warps == 0
    # wave segments are off by default (no gain on the H200); forced K and plain warp remain
    assert not anchor_plan(block_warps=0).segmented
    k = int(anchor_plan(segment_bags=4).meta[8])
    assert k == 4 and anchor_plan(segment_bags=4).segmented
    assert not anchor_plan(segment_rows=0, block_warps=0).segmented
    with pytest.raises(ValueError, match="segment_bags needs warp mode"):
        anchor_plan(segment_bags=4, block_warps=2)
    with pytest.raises(ValueError, match="from 1 to 64"):
        anchor_plan(segment_bags=65)


def test_tables_are_numbered_longest_chain_first():
    pooling = [3.0, 2.0, 1.0, 100.0, 27.0]
    five = dict(rows=[1000] * 5, dims=[128] * 5, weight_offsets=[0] * 5,
                out_cols=[128 * i for i in range(5)], out_stride=640, batch=8192,
                mean_pooling=sum(pooling) / 5, table_pooling=pooling)  # fmt: skip
    assert anchor_plan(**five).async_rows == kernels.FAST_AUTO_ASYNC_ROWS  # the default: ring
    for ring in (0, 8):  # the register paths and the ring order their tables alike
        plan = anchor_plan(**five, async_rows=ring)
        meta = plan.meta.view(5, -1)
        order = meta[:, 9].tolist()
        assert order[:2] == [3, 4] and sorted(order) == [0, 1, 2, 3, 4]
        assert meta[:, 4].tolist() == sorted(meta[:, 4].tolist())  # first units ascend
        assert meta[0, 3] == 128 * 3  # columns follow the table, not the position
        same = anchor_plan(**five, async_rows=ring, longest_first=False)
        assert same.meta.view(5, -1)[:, 9].tolist() == [0, 1, 2, 3, 4]
        assert same.total_units == plan.total_units


def test_prefetch_distance_goes_with_the_cap():
    # cap 32 leaves no register for a second row (H200: P1 86.3 < P2 91.6 < P4 104.7 us)
    assert occupancy.pick_prefetch_distance(32) == 1
    # cap 42 / none: Little's law, 40 warps/SM x P >= 204 rows (H200 sweep: P8 best)
    assert occupancy.rows_in_flight_needed(132) == 204
    assert occupancy.pick_prefetch_distance(42) == 8 == occupancy.pick_prefetch_distance(None)
    assert occupancy.pick_prefetch_distance(42, one_row_spills=True) == 1
    assert occupancy.pick_prefetch_distance(42, sm_count=108, bandwidth_bytes_s=1.8e12) == 4
    assert ops.resolve_variant("combined").prefetch == "device"
    assert ops.resolve_variant("combined", prefetch_distance=2).prefetch == 2
    assert ops.resolve_variant("rpf").prefetch == 2  # the paper's rpf keeps its default
    with pytest.raises(ValueError, match="at least one prefetch distance"):
        occupancy.pick_prefetch_distance(42, distances=())


def test_concat_batch_matches_concat_values():
    from emb_kernels.batched import concat_batch
    from rec_common.jagged import JaggedBatch

    lengths = [torch.tensor([2, 0, 3]), torch.tensor([0, 0, 0]), torch.tensor([4, 1, 2])]
    values = [torch.arange(5), torch.arange(0), torch.arange(7)]
    batch = JaggedBatch.from_lengths(["a", "b", "c"], values, lengths)
    v, o = batch.concat_values()
    v2, o2 = concat_batch(batch, [5, 0, 7])
    assert torch.equal(v, v2) and torch.equal(o, o2)


def test_long_and_short_bags_keep_their_modes():
    assert anchor_plan(mean_pooling=150.0, batch=2048).block_warps > 0  # micro24: block mode
    one_hot = anchor_plan(mean_pooling=1.0)
    assert one_hot.segmented and int(one_hot.meta[8]) > 1


def test_coop_default_follows_the_constant_and_needs_a_warp_wide_row(monkeypatch):
    def plan(dims, **kw):
        return kernels.plan_fast(
            dtype=torch.float32, index_dtype=torch.int64, rows=[1000] * len(dims), dims=dims,
            weight_offsets=[0] * len(dims), out_cols=[0] * len(dims), out_stride=sum(dims),
            batch=4096, mode="sum", mean_pooling=8.0, device="cpu", sm_count=132, **kw,
        )  # fmt: skip

    assert plan([128, 128], coop=True).name.endswith("_u8c")
    assert not plan([128, 128], coop=False).coop
    assert plan([16, 32], coop=True).coop  # forced: still correct, fallback path only
    monkeypatch.setattr(kernels, "FAST_COOP", True)
    assert plan([128, 128]).coop  # mlperf-like: 32 float4 per row
    assert not plan([16, 32]).coop  # lane groups of 4 and 8: the old paths
    mixed = plan([16, 128])
    assert mixed.coop and mixed.name.endswith("_u8c")  # the 16-wide table falls back inside
    monkeypatch.setattr(kernels, "FAST_COOP", False)
    assert not plan([128, 128]).coop


def mlperf_plan(dims=None, dtype=torch.float32, **kw):
    from rec_common.criteo_tables import MLPERF_MULTI_HOT_SIZES as sizes

    n = len(sizes)
    dims = dims or [128] * n
    return kernels.plan_fast(
        dtype=dtype, index_dtype=torch.int64, rows=[1000] * n, dims=dims,
        weight_offsets=[0] * n, out_cols=[0] * n, out_stride=sum(dims), batch=8192, mode="sum",
        mean_pooling=sum(sizes) / n, device="cpu", sm_count=132,
        table_pooling=[float(s) for s in sizes], **kw,
    )  # fmt: skip


def test_split_parts_follow_the_pooling_and_the_knob():
    assert kernels.split_parts([100, 27, 1], None) == [1, 1, 1]
    assert kernels.split_parts([100, 27, 1], 4) == [4, 1, 1]
    assert kernels.split_parts([100, 27, 1], 8) == [8, 1, 1]  # 8 warps x 12.5 ids >= 8
    assert kernels.split_parts([100, 27, 40, 1], 8, 16) == [8, 2, 4, 1]
    assert kernels.split_parts([32.0], 2, 16) == [2]  # the anchor: 2 warps of 16 ids
    for bad in (3, 1, True, 16):
        with pytest.raises(ValueError, match="split must be one of"):
            kernels.split_parts([100], bad)
    with pytest.raises(ValueError, match="split_min_pooling must be a number"):
        kernels.split_parts([100], 2, 0)
    with pytest.raises(ValueError, match="split_min_pooling needs split"):
        kernels.split_parts([100], None, 16)


def test_split_plan_aligns_groups_and_orders_by_chain():
    default = mlperf_plan(async_rows=0)  # split is a register-path knob: compare with that path
    for s in (2, 4, 8):
        plan = mlperf_plan(split=s)
        meta = plan.meta.view(26, -1)
        assert meta.shape[1] == kernels.FAST_META_STRIDE == 11
        assert plan.name == "ek_fast_seg_sum_f32_i64_v16_u4s"
        assert plan.source == kernels.FAST_X_SOURCE
        t = meta[:, 9].tolist().index(20)  # the 100-id table
        assert int(meta[t, 10]) == s and plan.split[20] == s
        assert int(meta[t, 4]) % s == 0  # its S warps sit in one block
        assert meta[:, 4].tolist() == sorted(meta[:, 4].tolist())
        assert int(meta[t, 8]) == 1  # one bag per lane group
        # the other tables keep their bags per lane group and their single warp
        others = [i for i in range(26) if i != t]
        assert meta[others, 10].tolist() == [1] * 25
        k_default = {int(r[9]): int(r[8]) for r in default.meta.view(26, -1)}
        assert {int(r[9]): int(r[8]) for r in meta[others]} == {
            k: v for k, v in k_default.items() if k != 20
        }
        assert plan.total_units >= default.total_units + 8192 * (s - 1)
        assert plan.grid == -(-plan.total_units // 8)
    coop = mlperf_plan(split=4, coop=True)
    assert coop.name.endswith("_u8cs") and coop.coop
    # work of the split table is its pooling / S: 100 / 4 = 25 < 27, so the 27-id table leads
    assert mlperf_plan(split=4).meta.view(26, -1)[0, 9] == 21
    # no table long enough: the default kernel, no split
    short = anchor_plan(split=4)
    assert short.split == () and short.source == kernels.FAST_SOURCE
    assert anchor_plan(split=2, split_min_pooling=16).name.endswith("_u4s")


def test_split_pads_between_tables_of_different_splits():
    # a table of 20 ids (S=2, 4 bags per warp: 9 groups = 18 units) numbered before one of 40
    # ids (S=4; equal chains of 10, table order): 2 padding units start the latter at 20
    plan = kernels.plan_fast(
        dtype=torch.float16, index_dtype=torch.int32, rows=[50, 60, 70], dims=[64, 128, 16],
        weight_offsets=[0, 3200, 10880], out_cols=[0, 64, 192], out_stride=208, batch=33,
        mode="max", mean_pooling=20.0, device="cpu", sm_count=132, split=4,
        split_min_pooling=16, table_pooling=[20.0, 40.0, 3.0],
    )  # fmt: skip
    meta = plan.meta.view(3, -1).tolist()
    assert plan.name == "ek_fast_seg_max_f16_i32_v16_u4s"
    assert [(r[9], r[4], r[10]) for r in meta] == [(0, 0, 2), (1, 20, 4), (2, 20 + 17 * 4, 1)]


def test_seg_unroll_8_picks_the_u8_kernels_and_refuses_what_it_lacks():
    plan = mlperf_plan(seg_unroll=8)
    assert plan.name == "ek_fast_seg_sum_f32_i64_v16_u8" and plan.seg_unroll == 8
    assert plan.source == kernels.FAST_X_SOURCE
    assert mlperf_plan(seg_unroll=8, coop=True).name.endswith("_u8c8")
    assert mlperf_plan(seg_unroll=4).name == mlperf_plan(async_rows=0).name
    one = anchor_plan(seg_unroll=8)  # every lane group one bag: the segmented kernel anyway
    assert one.name == "ek_fast_seg_sum_f32_i64_v16_u8" and one.block_warps == 0
    with pytest.raises(ValueError, match="float32 only"):
        mlperf_plan(dtype=torch.bfloat16, seg_unroll=8)
    with pytest.raises(ValueError, match="seg_unroll must be one of"):
        mlperf_plan(seg_unroll=16)
    with pytest.raises(ValueError, match="exclude each other"):
        mlperf_plan(seg_unroll=8, split=2)
    with pytest.raises(ValueError, match="needs warp mode"):
        mlperf_plan(seg_unroll=8, block_warps=2)


def test_invalid_knob_combinations_say_why():
    with pytest.raises(ValueError, match="split .* needs warp mode"):
        anchor_plan(split=2, block_warps=2)
    with pytest.raises(ValueError, match="split .* needs warp mode"):
        anchor_plan(split=2, unroll=8)
    with pytest.raises(ValueError, match="split and segment_bags exclude"):
        anchor_plan(split=2, segment_bags=4)
    with pytest.raises(ValueError, match="split must be one of"):
        anchor_plan(split=6)


def test_defaults_are_unchanged_by_the_new_knobs():
    assert anchor_plan().name == "ek_fast_block2_sum_f32_i64_v16"
    plan = mlperf_plan(async_rows=0)  # the default is the ring (next test); without it:
    assert plan.name == "ek_fast_seg_sum_f32_i64_v16_u4" and plan.split == ()
    assert plan.seg_unroll == 4 and plan.source == kernels.FAST_SOURCE
    assert plan.meta.view(26, -1)[:, 10].tolist() == [1] * 26


def test_every_new_kernel_name_is_in_its_module():
    names = kernels.all_kernel_names()
    x = names[kernels.FAST_X_SOURCE]
    assert all(kernels.fast_source(n) == kernels.FAST_X_SOURCE for n in x)
    assert all(kernels.fast_source(n) == kernels.FAST_SOURCE for n in names[kernels.FAST_SOURCE])
    assert "ek_fast_seg_max_bf16_i32_v2_u8cs" in x and "ek_fast_seg_sum_f32_i64_v4_u8c8" in x
    assert not any("f16" in n and n.endswith(("_u8", "_u8c8")) for n in x)


def test_async_rows_refuses_bad_values_and_combinations():
    for bad in (4, 32, True, "8", -1):
        with pytest.raises(ValueError, match=r"async_rows must be one of \(8, 16\), 0 \(off\)"):
            mlperf_plan(async_rows=bad)
    for kw, what in (({"split": 2}, "split"), ({"seg_unroll": 8}, "seg_unroll=8"),
                     ({"coop": True}, "coop=True")):  # fmt: skip
        with pytest.raises(ValueError, match=f"async_rows and {what}.* exclude each other"):
            mlperf_plan(async_rows=8, **kw)
    for kw in ({"block_warps": 2}, {"unroll": 8, "block_warps": 0}, {"hint": True}):
        with pytest.raises(ValueError, match="async_rows needs warp mode"):
            anchor_plan(async_rows=16, **kw)
    assert mlperf_plan(async_rows=8, coop=False).async_rows == 8  # coop off explicitly: fine


@pytest.mark.parametrize("rows", [8, 16])
def test_async_rows_plan_says_which_tables_take_the_ring(rows):
    default = mlperf_plan(async_rows=0)
    plan = mlperf_plan(async_rows=rows)
    # every table rides the ring: the kernel without the fallback (suffix o)
    assert plan.name == f"ek_fast_seg_sum_f32_i64_v16_a{rows}o" and plan.async_rows == rows
    assert mlperf_plan(async_rows=rows, async_only=False).name.endswith(f"_a{rows}")
    assert plan.source == kernels.FAST_ASYNC_SOURCE and plan.block == 128
    assert plan.grid == -(-plan.total_units // 4)
    # the work split is the default one (K bags per warp); only the kernel and block differ
    assert torch.equal(plan.meta, default.meta) and plan.total_units == default.total_units
    assert plan.async_tables == (True,) * 26 and not any(default.async_tables)
    assert plan.paths[20] == f"async{rows}" and plan.paths[2] == f"async{rows} K=16"
    assert default.paths[20] == "warp" and default.paths[2] == "segmented K=16"
    assert anchor_plan(async_rows=rows, mode="max").name.startswith("ek_fast_seg_max_")
    # the uniform anchor: warp mode forced (the default is block2), one bag per warp
    one = anchor_plan(async_rows=rows)
    assert one.block_warps == 0 and one.paths == (f"async{rows}",) and one.block == 128
    # mixed widths: tables narrower than a warp of 16-byte vectors keep their paths
    mixed = mlperf_plan(dims=[64, 160, 16] + [128] * 23, async_rows=rows)
    assert mixed.async_tables == (False, True, False, *(True,) * 23)
    assert mixed.paths[0] == "segmented K=6" and mixed.paths[1] == f"async{rows} K=8"
    assert mixed.name.endswith(f"_a{rows}")  # the fallback kernel serves the narrow tables
    with pytest.raises(ValueError, match="async_only=True needs every table on the ring"):
        mlperf_plan(dims=[64, 160, 16] + [128] * 23, async_rows=rows, async_only=True)
    with pytest.raises(ValueError, match="async_only must be None, True or False"):
        mlperf_plan(async_rows=rows, async_only=1)


def test_async_rows_falls_back_where_no_kernel_serves_it():
    for plan, without in (
        (mlperf_plan(dtype=torch.float16, async_rows=8), mlperf_plan(dtype=torch.float16)),
        (mlperf_plan(dims=[64] * 26, async_rows=8), mlperf_plan(dims=[64] * 26)),
        (mlperf_plan(dims=[130] * 26, async_rows=16), mlperf_plan(dims=[130] * 26)),  # 8 B vecs
        (
            anchor_plan(dtype=torch.bfloat16, dims=[256], async_rows=16),
            anchor_plan(dtype=torch.bfloat16, dims=[256]),
        ),
    ):
        assert plan.async_rows == 0 and not any(plan.async_tables), plan.paths
        assert plan.name == without.name and plan.paths == without.paths
        assert plan.block == without.block and plan.source != kernels.FAST_ASYNC_SOURCE
    assert anchor_plan(dtype=torch.bfloat16, dims=[256]).paths == ("block2",)


def test_async_kernel_names_live_in_their_module():
    names = kernels.all_kernel_names()[kernels.FAST_ASYNC_SOURCE]
    assert sorted(names) == sorted(
        f"ek_fast_seg_{k}_f32_{i}_v16_a{d}{o}" for k in ("sum", "max") for i in ("i32", "i64")
        for d in (8, 16) for o in ("", "o")
    )  # fmt: skip
    assert all(kernels.fast_source(n) == kernels.FAST_ASYNC_SOURCE for n in names)
    assert kernels.fast_source("ek_fast_seg_sum_f32_i64_v16_u8") == kernels.FAST_X_SOURCE
    with pytest.raises(ValueError, match="no async_rows=8 kernel"):
        kernels.fast_name(torch.float16, torch.int64, False, 16, 4, async_rows=8)


def test_the_ring_is_the_default_for_wide_float32_multi_table_launches(monkeypatch):
    # measured rule (constants.FAST_AUTO_ASYNC_ROWS): MLPerf and Kaggle-like launches of
    # 128-float tables take the D = 8 ring; one-table launches, narrow or non-float32 tables
    # and any other knob keep the register paths
    assert mlperf_plan().name == "ek_fast_seg_sum_f32_i64_v16_a8o"
    assert mlperf_plan().async_rows == 8 and all(mlperf_plan().async_tables)
    assert mlperf_plan(dims=[256] * 26).async_rows == 8
    assert anchor_plan().name == "ek_fast_block2_sum_f32_i64_v16"  # one table
    assert mlperf_plan(dims=[64] + [128] * 25).async_rows == 0  # a narrow table
    assert mlperf_plan(dims=[130] * 26).async_rows == 0  # rows not a multiple of 16 bytes
    assert mlperf_plan(dtype=torch.bfloat16).async_rows == 0
    for kw in (dict(coop=False), dict(segment_bags=2), dict(longest_first=False),
               dict(block_warps=0), dict(hint=True), dict(async_rows=0)):  # fmt: skip
        assert mlperf_plan(**kw).async_rows == 0, kw
    monkeypatch.setattr(kernels, "FAST_COOP", True)
    assert mlperf_plan().async_rows == 0 and mlperf_plan().coop
