"""One rec-common DLRM, three embedding modules with the same weights: equal logits.

Proves emb-kernels' TableBatchedEmbeddingBags and recflex's FusedEmbedding both honour
rec-common's embedding contract (``forward(JaggedBatch) -> [B, sum of dims]``, features in
key order) well enough to be dropped into a trained model for inference: on CPU through their
reference / emulation paths, on a GPU through their real kernels.
"""

from __future__ import annotations

import copy

import pytest
import torch

from emb_kernels import TableBatchedEmbeddingBags
from rec_common.jagged import JaggedBatch
from rec_common.models import DLRM
from recflex import FusedEmbedding
from recflex.plan import default_plan

TABLE_SIZES = [50, 120, 7, 300, 64, 33]
DIM = 16
BATCH = 48


def multi_hot_batch(device) -> JaggedBatch:
    """Bags of 0..4 ids (empty bags included) per feature and sample."""
    g = torch.Generator().manual_seed(5)
    values, lengths = [], []
    for n in TABLE_SIZES:
        ln = torch.randint(0, 5, (BATCH,), generator=g)
        values.append(torch.randint(0, n, (int(ln.sum()),), generator=g).to(device))
        lengths.append(ln.to(device))
    keys = [f"f{i}" for i in range(len(TABLE_SIZES))]
    return JaggedBatch.from_lengths(keys, values=values, lengths=lengths)


def base_model() -> DLRM:
    return DLRM(
        num_dense=13,
        table_sizes=TABLE_SIZES,
        embedding_dim=DIM,
        bottom_mlp=f"13-32-{DIM}",
        top_mlp="32-1",
    ).eval()


def tables_of(model: DLRM) -> list[torch.Tensor]:
    return [bag.weight.detach().clone() for bag in model.embedding.bags]


def with_emb_kernels(model: DLRM, variant: str, device) -> DLRM:
    tbe = TableBatchedEmbeddingBags(TABLE_SIZES, DIM, variant=variant, device=device)
    with torch.no_grad():
        for t, w in enumerate(tables_of(model)):
            tbe.table(t).copy_(w)
    out = copy.deepcopy(model)
    out.embedding = tbe
    return out.to(device)


def with_recflex(model: DLRM, device) -> DLRM:
    tables = [w.to(device) for w in tables_of(model)]
    plan = default_plan([DIM] * len(TABLE_SIZES), TABLE_SIZES)
    out = copy.deepcopy(model)
    out.embedding = FusedEmbedding(tables, plan)
    return out.to(device)


def check_equal_logits(device: str, variants: list[str]) -> None:
    model = base_model()
    sparse = multi_hot_batch("cpu")
    dense = torch.rand(BATCH, 13)
    with torch.no_grad():
        want = model(dense, sparse)
        assert want.shape == (BATCH,)
        dev_sparse, dev_dense = multi_hot_batch(device), dense.to(device)
        for variant in variants:
            got = with_emb_kernels(model, variant, device)(dev_dense, dev_sparse)
            torch.testing.assert_close(got.cpu(), want, rtol=1e-5, atol=1e-5, msg=variant)
        # recflex: its pooled lookup equals the model's TorchEmbeddingBags on the same weights.
        tables = [w.to(device) for w in tables_of(model)]
        plan = default_plan([DIM] * len(TABLE_SIZES), TABLE_SIZES)
        fe = FusedEmbedding(tables, plan)
        torch.testing.assert_close(
            fe(dev_sparse).cpu(), model.embedding(sparse), rtol=1e-5, atol=1e-5
        )
        # A different weight gives a different answer: the comparison is not vacuous.
        fe.tables[0].data[:] += 1.0
        assert not torch.allclose(fe(dev_sparse).cpu(), model.embedding(sparse), atol=1e-3)


def check_recflex_in_dlrm(device: str) -> None:
    model = base_model()
    sparse, dense = multi_hot_batch(device), torch.rand(BATCH, 13)
    with torch.no_grad():
        want = model(dense, multi_hot_batch("cpu"))
        got = with_recflex(model, device)(dense.to(device), sparse)
    torch.testing.assert_close(got.cpu(), want, rtol=1e-5, atol=1e-5)


def test_dlrm_logits_equal_across_embedding_modules_cpu():
    """emb-kernels' plain-torch reference path in DLRM; recflex's emulation of its kernel."""
    check_equal_logits("cpu", ["fast", "baseline"])


@pytest.mark.gpu
def test_dlrm_logits_equal_across_embedding_modules_cuda():
    """emb-kernels' NVRTC kernels (fast, baseline, combined) and recflex's generated kernel."""
    check_equal_logits("cuda", ["fast", "baseline", "combined"])


def test_recflex_fused_embedding_plugs_into_dlrm_cpu():
    """Logits of the DLRM with FusedEmbedding plugged in equal the TorchEmbeddingBags model's."""
    check_recflex_in_dlrm("cpu")


@pytest.mark.gpu
def test_recflex_fused_embedding_plugs_into_dlrm_cuda():
    check_recflex_in_dlrm("cuda")
