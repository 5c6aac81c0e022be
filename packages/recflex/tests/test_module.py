"""FusedEmbedding on the CPU (emulation backend), its inputs and its errors."""

from __future__ import annotations

import pytest
import torch

from rec_common import workloads
from rec_common.jagged import JaggedBatch
from recflex import FusedEmbedding, Schedule, default_plan, default_plan_for
from recflex.inputs import pack
from recflex.plan import Plan
from recflex.reference import embedding_bag_reference
from recflex.testing import assert_close, random_batch, tables_for


def test_workload_batches_match_reference():
    w = workloads.load("recflex-test")
    tables = w.make_tables()
    emb = FusedEmbedding(tables, default_plan_for(w))
    for batch in w.batches(3):
        assert_close(emb(batch), embedding_bag_reference(tables, pack(batch)))


def test_kjt_input_and_int32():
    rows, dims = [5, 40, 1], [4, 16, 8]
    tables = tables_for(rows, dims)
    plan = default_plan(dims, rows, [1, 10, 2])
    batch = random_batch(rows, 9, index_dtype=torch.int32, absent=(2,))
    emb = FusedEmbedding(tables, plan)
    ref = embedding_bag_reference(tables, pack(batch))
    assert_close(emb(batch), ref)
    assert_close(FusedEmbedding(tables, plan, backend="torch")(batch), ref)
    pytest.importorskip("torchrec", reason="TorchRec is optional (recflex[torchrec])")
    assert_close(emb(batch.to_kjt()), ref)


def test_fp16_tables():
    rows, dims = [30, 30], [8, 32]
    tables = tables_for(rows, dims, dtype=torch.float16)
    emb = FusedEmbedding(tables, default_plan(dims, rows))
    batch = random_batch(rows, 5)
    out = emb(batch)
    assert out.dtype == torch.float32
    assert_close(out, embedding_bag_reference(tables, pack(batch)), atol=1e-3, rtol=1e-3)


def test_one_row_tables_and_all_empty():
    rows, dims = [1, 1], [4, 64]
    tables = tables_for(rows, dims)
    emb = FusedEmbedding(tables, default_plan(dims, rows))
    batch = random_batch(rows, 7, max_len=5)
    assert_close(emb(batch), embedding_bag_reference(tables, pack(batch)))
    empty = random_batch(rows, 3, absent=(0, 1))
    assert bool((emb(empty) == 0).all())
    assert emb(random_batch(rows, 0)).shape == (0, 68)  # a batch of no samples


def test_errors_name_the_problem():
    rows, dims = [10, 20], [4, 8]
    tables = tables_for(rows, dims)
    plan = default_plan(dims, rows)
    emb = FusedEmbedding(tables, plan)
    bad = JaggedBatch.from_lengths(
        ["f0", "f1"],
        [torch.tensor([3]), torch.tensor([20])],
        [torch.tensor([1, 0]), torch.tensor([0, 1])],
    )
    with pytest.raises(
        ValueError, match=r"feature 1 \('f1'\): id 20 \(sample 1\) is outside its table of 20 rows"
    ):
        emb(bad)
    renamed = JaggedBatch.from_lengths(
        ["f0", "g"], [torch.tensor([3]), torch.tensor([2])], [torch.tensor([1]), torch.tensor([1])]
    )
    with pytest.raises(ValueError, match="batch feature 1 is 'g', the plan expects 'f1'"):
        emb(renamed)
    with pytest.raises(ValueError, match=r"feature 1 \('f1'\) has dim 16"):
        FusedEmbedding(tables_for(rows, [4, 16]), plan)
    with pytest.raises(TypeError, match="float32 or float16"):
        FusedEmbedding([t.double() for t in tables], plan)
    with pytest.raises(ValueError, match="backend"):
        FusedEmbedding(tables, plan, backend="gpu")
    with pytest.raises(TypeError, match="KeyedJaggedTensor"):
        emb({"f0": torch.tensor([1])})


def test_multiblock_plan_on_cpu():
    rows, dims = [100, 100], [16, 32]
    plan = Plan(
        [
            Schedule("MultiBlockPerSample", {"v": 4, "items": 1, "x": 4}),
            Schedule("ReduceByKey", {"scan_dim": 8, "items": 1}),
        ],
        dims,
        rows,
    )
    tables = tables_for(rows, dims)
    batch = random_batch(rows, 33, max_len=200)
    emb = FusedEmbedding(tables, plan)
    assert_close(emb(batch), embedding_bag_reference(tables, pack(batch)))
    assert emb.last_binding.work.shape[0] > 33  # long bags: several tiles per sample


def test_replaced_table_is_used():
    # The launch path reads the tables through _table_list() (fast); a table swapped in
    # through the ParameterList must still be the one looked up.
    rows, dims = [6, 9], [4, 8]
    tables = tables_for(rows, dims)
    batch = random_batch(rows, 5)
    for backend in ("emulate", "torch"):
        emb = FusedEmbedding(tables, default_plan(dims, rows), backend=backend)
        emb(batch)
        new = torch.randn(9, 8)
        emb.tables[1] = torch.nn.Parameter(new, requires_grad=False)
        assert emb._table_list()[1] is emb.tables[1]
        assert_close(emb(batch), embedding_bag_reference([tables[0], new], pack(batch)))


def test_plan_cached_properties_match_a_fresh_walk():
    rows, dims = [6, 9, 3], [4, 8, 16]
    plan = default_plan(dims, rows, [1, 10, 2])
    assert plan.sum_dims == 28 and plan.col_offsets == (0, 4, 12)
    assert plan.needs_zeroed_output == any(s.accumulates for s in plan.schedules)
    again = Plan.from_json(plan.to_json())  # the cached values stay out of the JSON
    assert again == plan and again.to_dict() == plan.to_dict()
