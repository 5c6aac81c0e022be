"""The trainers' pooling hook and the reference's embedding factory.

A pooling written from scratch (``index_add_``, its own autograd) trains to the same tables
as the default ``F.embedding_bag``; a reference over another embedding module (a factory)
trains like the default one. emb-kernels' pooling is tested in integration/ (a sibling).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bagpipe.lookup import make_pool, torch_pool
from bagpipe.trainer import main as trainer_main
from bagpipe.training import run_local, run_reference, run_settings
from rec_common.models import TorchEmbeddingBags


def index_add_pool(ids, weight, offsets):
    """Sum pooling without F.embedding_bag: each id's row added to its bag."""
    lengths = offsets[1:] - offsets[:-1]
    bags = torch.repeat_interleave(torch.arange(lengths.numel()), lengths)
    out = torch.zeros(lengths.numel(), weight.shape[1], dtype=weight.dtype)
    return out.index_add(0, bags, weight.index_select(0, ids))


def test_custom_pool_equals_default(source):
    s = run_settings(source, lookahead=5, cleanup_proportion=0.3, stop_iter=12,
                     emb_optim="adagrad", emb_lr=0.1, model="deepfm")  # fmt: skip
    calls = []

    def pool(ids, weight, offsets):
        calls.append(weight.shape)
        return index_add_pool(ids, weight, offsets)

    got = run_local(source, s, model="deepfm", pooling=pool)
    want = run_local(source, s, model="deepfm")
    assert calls and {c[1] for c in calls} == {s["dim"], 1}  # deep and first-order columns
    torch.testing.assert_close(
        got.tables(), want.tables(), rtol=0, atol=2e-4
    )  # Adagrad: float reordering
    assert not torch.equal(want.tables(), run_reference(source, {**s, "stop_iter": 0}).tables)


class Stacked(nn.Module):
    """TorchEmbeddingBags with its tables exposed only as ``table(f)`` views."""

    def __init__(self, sizes, dim):
        super().__init__()
        self.inner = TorchEmbeddingBags(sizes, dim)
        self.dims, self.keys, self.positional_keys = (
            self.inner.dims, self.inner.keys, self.inner.positional_keys)  # fmt: skip

    def table(self, f):
        return self.inner.bags[f].weight

    def forward(self, sparse):
        return self.inner(sparse)


def test_reference_embedding_factory(source):
    s = run_settings(source, lookahead=5, stop_iter=10, model="wide-deep")
    want = run_reference(source, s, model="wide-deep")
    got = run_reference(source, s, model="wide-deep", embedding=Stacked)
    torch.testing.assert_close(got.tables, want.tables, rtol=0, atol=1e-6)
    assert got.losses == pytest.approx(want.losses, abs=1e-6)
    with pytest.raises(TypeError, match="neither bags"):
        run_reference(source, s, embedding=lambda sizes, dim: nn.Linear(1, 1))
    with pytest.raises(ValueError, match="table 0 has shape"):
        run_reference(source, s, embedding=lambda sizes, dim: Stacked(sizes, dim + 1))


def test_pool_names():
    assert make_pool("torch") is torch_pool
    assert make_pool(index_add_pool) is index_add_pool
    for bad in ("numpy", "torch:fast"):
        with pytest.raises(ValueError, match="pooling: expected one of"):
            make_pool(bad)
    with pytest.raises(SystemExit) as exc:
        trainer_main(["--pooling", "numpy"])
    assert exc.value.code == 2
