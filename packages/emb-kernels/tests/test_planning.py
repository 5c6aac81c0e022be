"""CPU checks of the launch planning: the OptMT device cap and the fast kernel's work split."""

from __future__ import annotations

import pytest
import torch

from emb_kernels import kernels, occupancy, ops
from emb_kernels.constants import DEVICE_CAP, FAST_SEG_RESIDENT_WARPS_PER_SM


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


def test_medium_bags_go_segmented_so_one_wave_holds_them():
    plan = anchor_plan()
    k = -(-16384 // (132 * FAST_SEG_RESIDENT_WARPS_PER_SM))  # ceil(units / resident warps)
    assert plan.segmented and plan.name == "ek_fast_seg_sum_f32_i64_v16_u4"
    assert plan.total_units == -(-16384 // k) <= 132 * FAST_SEG_RESIDENT_WARPS_PER_SM
    assert int(plan.meta[8]) == k  # bags per lane group
    # a batch that already fits in one wave stays in plain warp mode
    small = anchor_plan(batch=2000)
    assert not small.segmented and small.total_units == 2000
    # forced K, and forced plain warp mode
    assert int(anchor_plan(segment_bags=4).meta[8]) == 4
    assert not anchor_plan(segment_rows=0).segmented
    with pytest.raises(ValueError, match="segment_bags needs warp mode"):
        anchor_plan(segment_bags=4, block_warps=2)
    with pytest.raises(ValueError, match="from 1 to 64"):
        anchor_plan(segment_bags=65)


def test_long_and_short_bags_keep_their_modes():
    assert anchor_plan(mean_pooling=150.0, batch=2048).block_warps > 0  # micro24: block mode
    one_hot = anchor_plan(mean_pooling=1.0)
    assert one_hot.segmented and int(one_hot.meta[8]) > 1
