"""Hot-row selection and the method-(b) id remap, on CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import emb_kernels
from emb_kernels import l2p
from rec_common.generators import make_trace, trace_stats


def test_select_hot_rows_is_top_n_by_frequency():
    trace = np.array([5, 1, 5, 2, 5, 1, 9, 9, 9, 9, 3, 12])
    assert l2p.select_hot_rows(trace, 3).tolist() == [9, 5, 1]
    # ids at or above `rows` are dropped before ranking; ties go to the smaller id
    assert l2p.select_hot_rows(trace, 3, rows=9).tolist() == [5, 1, 2]
    assert l2p.select_hot_rows(torch.tensor(trace), 0).tolist() == []


def test_select_hot_rows_from_a_micro24_trace_covers_what_the_stats_say():
    trace = make_trace("reuse_medium")
    hot = l2p.select_hot_rows(trace, 60_000)
    assert len(hot) == 60_000 and len(set(hot.tolist())) == 60_000
    covered = l2p.hot_fraction(trace, hot)
    assert covered == pytest.approx(trace_stats(trace)["top60k"], abs=1e-9)


def test_hot_row_count_and_errors():
    assert l2p.hot_row_count(512, 30 * 2**20) == 61_440
    assert l2p.hot_row_count(512, 0) == 0
    with pytest.raises(ValueError, match="row_bytes must be >= 1"):
        l2p.hot_row_count(0, 100)
    with pytest.raises(ValueError, match="pass n, or row_bytes"):
        l2p.select_hot_rows([1, 2, 3])
    with pytest.raises(ValueError, match="1-D"):
        l2p.select_hot_rows(np.zeros((2, 2), dtype=np.int64), 1)


@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64])
def test_remap_is_a_bijection_and_lookups_are_unchanged(index_dtype):
    rows, dim = 1000, 12
    weight = torch.randn(rows, dim)
    hot = torch.randperm(rows)[:137]
    table = l2p.RemappedTable(weight, hot)
    assert sorted(table.perm.tolist()) == list(range(rows))
    assert torch.equal(table.inverse[table.perm], torch.arange(rows))
    assert torch.equal(table.perm[: hot.numel()], hot)  # hot rows first, hottest first
    assert torch.equal(table.weight, weight[table.perm])
    assert table.hot_bytes == 137 * dim * 4
    ids = torch.randint(0, rows, (500,), dtype=index_dtype)
    offsets = torch.arange(0, 500, 10, dtype=index_dtype)
    new_ids = table.remap(ids)
    assert new_ids.dtype == index_dtype
    assert torch.equal(table.weight[new_ids.long()], weight[ids.long()])
    a = emb_kernels.embedding_bag(weight, ids, offsets, variant="baseline")
    b = emb_kernels.embedding_bag(table.weight, new_ids, offsets, variant="baseline")
    assert torch.allclose(a, b, rtol=0, atol=1e-6)


def test_remapped_table_rejects_bad_hot_rows():
    w = torch.randn(10, 2)
    with pytest.raises(ValueError, match="ids must be in"):
        l2p.RemappedTable(w, [3, 10])
    with pytest.raises(ValueError, match="distinct"):
        l2p.RemappedTable(w, [3, 3])


def test_l2p_variants_accept_hot_rows_on_cpu():
    weight = torch.randn(30, 4)
    ids = torch.randint(0, 30, (20,))
    offsets = torch.tensor([0, 5, 11])
    ref = emb_kernels.embedding_bag(weight, ids, offsets, variant="baseline")
    for variant in ("l2p", "combined"):
        out = emb_kernels.embedding_bag(weight, ids, offsets, variant=variant, hot_rows=[1, 2])
        assert torch.equal(out, ref)
