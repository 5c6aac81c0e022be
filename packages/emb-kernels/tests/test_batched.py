"""The table-batched module on CPU against one F.embedding_bag per table."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from emb_kernels import TableBatchedEmbeddingBags
from rec_common.generators import BatchGenerator, FeatureSpec
from rec_common.jagged import JaggedBatch
from rec_common.models.embedding import validate_embedding


def make_batch(sizes, batch=17, weighted=False, index_dtype=torch.int64):
    feats = [
        FeatureSpec(f"f{i}", rows=n, dim=4, pooling="uniform:0,9") for i, n in enumerate(sizes)
    ]
    return BatchGenerator(feats, seed=3, weighted=weighted, index_dtype=index_dtype).batch(batch)


def per_table_truth(tbe, batch, mode):
    outs = []
    for t in range(len(tbe.dims)):
        v, o, w = batch.feature(t)
        outs.append(
            F.embedding_bag(
                v,
                tbe.table(t).double(),
                o,
                mode=mode,
                include_last_offset=True,
                per_sample_weights=None if w is None else w.double(),
            )
        )
    return torch.cat(outs, dim=1)


@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64])
def test_matches_per_table_torch(mode, index_dtype):
    sizes, dims = [50, 7, 1, 300], [4, 13, 1, 32]
    tbe = TableBatchedEmbeddingBags(sizes, dims, mode=mode)
    batch = make_batch(sizes, index_dtype=index_dtype)
    out = tbe(batch)
    assert out.shape == (17, sum(dims)) and out.dtype == torch.float32
    truth = per_table_truth(tbe, batch, mode)
    assert torch.allclose(out.double(), truth, rtol=1e-5, atol=1e-6)


def test_weighted_sum_and_kjt_input():
    sizes = [40, 60]
    tbe = TableBatchedEmbeddingBags(sizes, 8)
    batch = make_batch(sizes, weighted=True)
    out = tbe(batch)
    assert torch.allclose(out.double(), per_table_truth(tbe, batch, "sum"), rtol=1e-5, atol=1e-6)
    pytest.importorskip("torchrec")
    assert torch.equal(tbe(batch.to_kjt()), out)


def test_contract_and_errors():
    tbe = TableBatchedEmbeddingBags([10, 20], [4, 8], keys=["a", "b"])
    batch = JaggedBatch.from_dense(torch.tensor([[1, 2], [3, 19]]), keys=["a", "b"])
    validate_embedding(tbe, batch)
    assert tbe.dims == (4, 8) and tbe.keys == ("a", "b")
    bad = JaggedBatch.from_dense(torch.tensor([[1, 2], [3, 20]]), keys=["a", "b"])
    with pytest.raises(ValueError, match=r"feature 'b': id 20 at position 1"):
        tbe(bad)
    with pytest.raises(ValueError, match="differ from the tables' keys"):
        tbe(JaggedBatch.from_dense(torch.tensor([[1, 2]]), keys=["x", "y"]))
    with pytest.raises(TypeError, match="expected a rec_common JaggedBatch"):
        tbe(torch.zeros(2, 2))
    mean = TableBatchedEmbeddingBags([10], 4, mode="mean")
    weighted = JaggedBatch(
        ["f0"], [torch.tensor([1, 2])], [torch.tensor([0, 2])], [torch.tensor([0.5, 1.0])]
    )
    with pytest.raises(ValueError, match="only supported with mode='sum'"):
        mean(weighted)
    with pytest.raises(ValueError, match="dims: 1 widths for 2 tables"):
        TableBatchedEmbeddingBags([10, 20], [4])
    with pytest.raises(ValueError, match="variant: expected one of"):
        TableBatchedEmbeddingBags([10], 4, variant="nope")


def test_plugs_into_rec_common_dlrm():
    from rec_common.models.dlrm import DLRM

    sizes = [30, 40, 50]
    tbe = TableBatchedEmbeddingBags(sizes, 16)
    model = DLRM(num_dense=5, embedding=tbe, bottom_mlp="32-16", top_mlp="8-1")
    batch = make_batch(sizes, batch=6)
    assert model(torch.randn(6, 5), batch).shape == (6,)


def test_hot_rows_are_checked_and_kept_for_pinning_variants():
    with pytest.raises(ValueError, match="only the 'l2p' and 'combined'"):
        TableBatchedEmbeddingBags([10, 20], 4, variant="fast", hot_rows=[[1], [2]])
    with pytest.raises(ValueError, match="one entry per table"):
        TableBatchedEmbeddingBags([10, 20], 4, variant="combined", hot_rows=[[1]])
    with pytest.raises(ValueError, match=r"hot_rows\[1\]: ids must be in \[0, 20\)"):
        TableBatchedEmbeddingBags([10, 20], 4, variant="combined", hot_rows=[[1], [20]])
    tbe = TableBatchedEmbeddingBags([10, 20], 4, variant="combined", hot_rows=[[1, 2], None])
    assert tbe.hot_rows[0].tolist() == [1, 2] and tbe.hot_rows[1] is None
    assert tbe.sharing("fast").hot_rows is None and tbe.sharing("l2p").hot_rows is not None
    batch = JaggedBatch.from_dense(torch.tensor([[1, 2], [3, 4]]))
    assert torch.equal(tbe(batch), tbe.sharing("baseline")(batch))


def test_e2e_model_swaps_embedding_modules_with_equal_logits():
    import numpy as np

    from emb_kernels import e2e
    from rec_common.generators import BatchGenerator, FeatureSpec

    tables = [torch.rand(50, 128) for _ in range(3)]
    model, modules = e2e.build(tables, np.array([1, 2, 3]))
    assert set(modules) == set(e2e.E2E_VARIANTS)
    feats = [FeatureSpec(f"t{i}", rows=50, dim=128, pooling="fixed:5") for i in range(3)]
    sparse = BatchGenerator(feats, seed=0).batch(4)
    dense = torch.rand(4, e2e.NUM_DENSE)
    outs = {}
    for v, m in modules.items():
        model.embedding = m
        with torch.inference_mode():
            outs[v] = model(dense, sparse)
    for v, o in outs.items():
        torch.testing.assert_close(o, outs["torch"], msg=v)
