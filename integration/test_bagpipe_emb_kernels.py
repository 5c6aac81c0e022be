"""bagpipe (oracle + servers + cached trainers) with emb-kernels, both ways.

Serving: the tables bagpipe's in-process run leaves on its servers, loaded into emb-kernels'
TableBatchedEmbeddingBags under the trained dense layers, give the same logits as bagpipe's
single-process no-cache reference model. Training: trainers whose lookup is emb-kernels'
differentiable ``embedding_bag`` (``run_local(pooling="emb-kernels")``) reach the tables of
the reference whose embeddings are emb-kernels' modules (``run_reference(embedding=...)``).
"""

from __future__ import annotations

import copy

import pytest
import torch

from bagpipe.models import copy_dense
from bagpipe.synthetic import synthetic_source
from bagpipe.training import run_local, run_reference, run_settings
from emb_kernels import TableBatchedEmbeddingBags

TABLE_SIZES = [40] * 6 + [150] * 3


def check_served_by_emb_kernels(device: str, variant: str) -> None:
    source = synthetic_source(1024, TABLE_SIZES, global_batch=64, seed=3)
    s = run_settings(source, lookahead=4, cleanup_proportion=0.5, stop_iter=12,
                     num_trainers=2, num_servers=2, emb_optim="adagrad", emb_lr=0.1)  # fmt: skip
    run = run_local(source, s, device=device)
    ref = run_reference(source, s)
    tables = run.tables()
    assert torch.allclose(tables, ref.tables, atol=1e-5), "bagpipe no longer matches its reference"
    assert not torch.allclose(ref.tables, run_reference(source, {**s, "stop_iter": 0}).tables)

    dim = s["dim"]
    tbe = TableBatchedEmbeddingBags(TABLE_SIZES, dim, variant=variant, device=device)
    with torch.no_grad():
        lo = 0
        for t, n in enumerate(TABLE_SIZES):
            tbe.table(t).copy_(tables[lo : lo + n, :dim])
            lo += n
    served = copy.deepcopy(ref.model)
    served.embedding = tbe
    copy_dense(run.models[0], served)  # trainer 0's dense layers (all trainers hold the same)
    served = served.to(device).eval()
    ref.model.eval()
    with torch.no_grad():
        for k in (s["stop_iter"], s["stop_iter"] + 1):  # batches after the trained ones
            dense, sparse, _ = source.batch(k)
            want = ref.model(dense, sparse)
            got = served(dense.to(device), sparse.to(device))
            torch.testing.assert_close(got.cpu(), want, rtol=1e-4, atol=1e-4)


def test_bagpipe_trained_model_served_by_emb_kernels_cpu():
    check_served_by_emb_kernels("cpu", "fast")


@pytest.mark.gpu
def test_bagpipe_trained_model_served_by_emb_kernels_cuda():
    """Trainers' caches on the GPU; serving through emb-kernels' fast and combined kernels."""
    check_served_by_emb_kernels("cuda", "fast")
    check_served_by_emb_kernels("cuda", "combined")


def check_trained_through_emb_kernels(device: str, pooling: str) -> None:
    """bagpipe's trainers pooling with emb-kernels (its backward feeds the row all-reduce)
    reach the tables of the no-cache reference whose embeddings are emb-kernels' modules."""
    source = synthetic_source(1024, TABLE_SIZES, global_batch=64, seed=5)
    s = run_settings(source, lookahead=4, cleanup_proportion=0.5, stop_iter=12, model="deepfm",
                     num_trainers=2, num_servers=2, emb_optim="adagrad", emb_lr=0.1)  # fmt: skip
    run = run_local(source, s, model="deepfm", device=device, pooling=pooling)
    ref = run_reference(source, s, model="deepfm",
                        embedding=lambda sizes, dim: TableBatchedEmbeddingBags(sizes, dim))  # fmt: skip
    assert isinstance(ref.model.embedding, TableBatchedEmbeddingBags)
    assert ref.model.embedding.weights.requires_grad
    # Adagrad divides by the root of small sums: float reordering shows up ~1e-5..1e-4
    torch.testing.assert_close(run.tables(), ref.tables, rtol=0, atol=2e-4)
    torch.testing.assert_close(run.tables(), run_reference(source, s, model="deepfm").tables,
                               rtol=0, atol=2e-4)  # fmt: skip
    start = run_reference(source, {**s, "stop_iter": 0}, model="deepfm").tables
    assert (run.tables() - start).abs().max() > 1e-2  # the tables did train
    for bag in run.caches:
        want = pooling if ":" in pooling else pooling + ":fast"
        assert bag.cache.misses == 0 and bag.pool.pooling == want


def test_bagpipe_trains_through_emb_kernels_cpu():
    check_trained_through_emb_kernels("cpu", "emb-kernels")


@pytest.mark.gpu
def test_bagpipe_trains_through_emb_kernels_cuda():
    """Trainers on the GPU pooling with emb-kernels' fast and combined kernels."""
    check_trained_through_emb_kernels("cuda", "emb-kernels:fast")
    check_trained_through_emb_kernels("cuda", "emb-kernels:combined")
