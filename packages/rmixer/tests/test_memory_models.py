"""Models train; the analytic memory estimate counts exactly what the built model holds."""

from __future__ import annotations

import pytest
import torch

from rmixer.configs import MODELS, normalize
from rmixer.memory import _blocks, estimate
from rmixer.models import Trainer, build_model


def tiny(model, **kw):
    raw = {"model": model, "batch_size": 16, "rows": 50, "num_tables": 3, "embedding_dim": 4}
    if model == "dlrm":
        raw.update(bottom_mlp="8-4", top_mlp="8-1")
    if model == "din":
        raw.update(num_items=40, seq_len=6, item_dim=4)
    return normalize({**raw, **kw}, "test")


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adagrad"])
def test_every_model_trains_and_loss_is_finite(model, optimizer):
    t = Trainer(tiny(model, optimizer=optimizer, lr=0.05), "cpu", num_batches=2)
    losses = [float(t.step()) for _ in range(6)]
    assert all(torch.isfinite(torch.tensor(losses)))


@pytest.mark.parametrize("model", MODELS)
def test_estimate_counts_parameters_exactly(model):
    cfg = tiny(model, rows=20000)
    params = sum(p.numel() * 4 for p in build_model(cfg).parameters())
    est = estimate(cfg, "cpu")
    assert est.params_mb == _blocks(params) and est.grads_mb == est.params_mb
    assert est.optimizer_mb == 0
    assert estimate(tiny(model, rows=20000, optimizer="adam"), "cpu").optimizer_mb == _blocks(
        2 * params
    )


def test_estimate_grows_with_batch_and_differs_by_device_kind():
    small, big = estimate(tiny("din", batch_size=64)), estimate(tiny("din", batch_size=4096))
    assert big.activations_mb > small.activations_mb and big.flops_per_iter > small.flops_per_iter
    assert estimate(tiny("dlrm"), "cuda").runtime_mb != estimate(tiny("dlrm"), "cpu").runtime_mb


def test_din_ignores_padding():
    """Extra padding (id 0) at the end of the behaviour sequence changes nothing."""
    cfg = tiny("din")
    model = build_model(cfg)
    (dense, sparse, history, target), _ = Trainer(cfg, "cpu", num_batches=1).batches[0]
    longer = torch.cat([history, torch.zeros(history.shape[0], 5, dtype=history.dtype)], dim=1)
    with torch.no_grad():
        assert torch.allclose(model(dense, sparse, history, target),
                              model(dense, sparse, longer, target), atol=1e-6)  # fmt: skip
