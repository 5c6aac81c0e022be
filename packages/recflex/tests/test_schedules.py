"""Schedules: parameter spaces, validity rules, candidates, the host work description."""

from __future__ import annotations

import math

import pytest

from recflex.schedules import (
    MULTI_HOT_TEMPLATES,
    TEMPLATES,
    Schedule,
    candidates,
    template_candidates,
    zero_fill_blocks,
)


def test_bad_template_and_params_name_the_problem():
    with pytest.raises(ValueError, match="expected one of OneHot"):
        Schedule("Nope", {})
    with pytest.raises(ValueError, match=r"missing \['items'\]"):
        Schedule("WarpPerSample", {"v": 4, "x": 8})
    with pytest.raises(ValueError, match="positive integer"):
        Schedule("OneHot", {"unroll": 0})


@pytest.mark.parametrize(
    ("sched", "dim", "msg"),
    [
        (Schedule("OneHot", {"unroll": 3}), 16, "unroll=3 must divide dim 16"),
        (
            Schedule("WarpPerSample", {"v": 4, "items": 1, "x": 8}),
            16,
            r"x\*v = 32 must be < 2\*dim",
        ),
        (Schedule("WarpPerSample", {"v": 3, "items": 1, "x": 4}), 12, "v=3: expected one of"),
        (
            Schedule("OneBlockMultiSample", {"v": 1, "items": 1, "x": 2, "y": 4}),
            16,
            r"\[dim/2, 2\*dim\)",
        ),
        (
            Schedule("OneBlockMultiSample", {"v": 4, "items": 1, "x": 4, "y": 128}),
            16,
            "must be <= 256",
        ),
        (Schedule("ReduceByKey", {"scan_dim": 4, "items": 1}), 64, "dims <= 32"),
        (Schedule("ReduceByKey", {"scan_dim": 1, "items": 1}), 24, "must divide 256"),
        (Schedule("MultiBlockPerSample", {"v": 4, "items": 3, "x": 4}), 16, "items=3"),
    ],
)
def test_validity_rules(sched, dim, msg):
    assert not sched.is_valid(dim)
    with pytest.raises(ValueError, match=msg):
        sched.validate(dim, feature="f7")


@pytest.mark.parametrize("dim", [1, 2, 3, 4, 8, 12, 16, 24, 32, 64, 128])
def test_candidates_are_valid_and_distinct(dim):
    for t in TEMPLATES:
        cands = template_candidates(t, dim)
        assert all(c.is_valid(dim) for c in cands)
        assert len(set(cands)) == len(cands)
    onehot = candidates(dim, multi_hot=False)
    assert [c["unroll"] for c in onehot] == [d for d in range(1, dim + 1) if dim % d == 0]
    multi = candidates(dim, multi_hot=True)
    assert {c.template for c in multi} <= set(MULTI_HOT_TEMPLATES)
    if dim > 32:
        assert all(c.template != "ReduceByKey" for c in multi)


def test_candidate_counts_are_of_the_papers_order():
    # the artifact: 132..156 multi-hot candidates for dims 4-32, ~100 for 64/128
    for dim in (4, 8, 16, 32, 64, 128):
        assert 40 <= len(candidates(dim, multi_hot=True)) <= 250, dim
    assert len(candidates(4, multi_hot=False)) == 3
    assert len(candidates(128, multi_hot=False)) == 8


def test_json_roundtrip_and_hash():
    s = Schedule("OneBlockMultiSample", {"y": 8, "x": 4, "v": 4, "items": 2})
    assert Schedule.from_dict(s.to_dict()) == s
    assert hash(s) == hash(Schedule("OneBlockMultiSample", s.params))
    assert repr(s) == "OneBlockMultiSample(v=4, items=2, x=4, y=8)"


def test_work_description():
    lengths = [3, 0, 0, 70, 1] * 40  # B = 200, 2960 lookups
    b, nnz = len(lengths), sum(lengths)
    maxc = 1000
    wps = Schedule("WarpPerSample", {"v": 4, "items": 1, "x": 8})
    assert wps.work(32, lengths, maxc) == {"tiles": math.ceil(b / 32), "blocks": math.ceil(b / 32)}
    obms = Schedule("OneBlockMultiSample", {"v": 4, "items": 1, "x": 4, "y": 8})
    assert obms.work(16, lengths, maxc)["blocks"] == math.ceil(b / 8)
    assert Schedule("OneHot", {"unroll": 1}).work(8, lengths, maxc)["blocks"] == 1
    ohmb = Schedule("OneHotMultiBlock", {"unroll": 1})
    assert ohmb.work(8, lengths * 3, maxc) == {"tiles": 3, "blocks": 3}
    mbps = Schedule("MultiBlockPerSample", {"v": 4, "items": 2, "x": 16})  # 32 lookups a tile
    tiles = sum(math.ceil(n / 32) for n in lengths)
    assert mbps.work(64, lengths, maxc) == {"tiles": tiles, "blocks": tiles}
    assert mbps.work(64, lengths, 7)["blocks"] == 7
    rbk = Schedule("ReduceByKey", {"scan_dim": 4, "items": 2})  # C=4, R=64, T=128
    assert rbk.lookups_per_tile(16) == 128
    assert rbk.work(16, lengths, maxc)["tiles"] == math.ceil(nnz / 128)
    # no lookups: only zero-fill blocks
    assert wps.work(32, [0] * 512, maxc) == {"tiles": 0, "blocks": zero_fill_blocks(512, 32)}
    assert zero_fill_blocks(1, 4) == 1 and zero_fill_blocks(0, 4) == 0


def test_smem_fits_static_limit():
    for dim in (4, 8, 16, 32, 64, 128):
        for t in TEMPLATES:
            for c in template_candidates(t, dim):
                assert c.smem_bytes(dim) <= 48 * 1024, (c, dim)
