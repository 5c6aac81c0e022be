"""The baselines train the same weights as the reference too (same data, models, scale)."""

from __future__ import annotations

import pytest
import torch

from bagpipe.model_parallel import assign_tables, run_local_model_parallel
from bagpipe.models import dense_parameters
from bagpipe.oracle import OracleService
from bagpipe.training import run_local, run_reference, run_settings


def close(a, b, atol):
    return float((a - b).abs().max()) <= atol


@pytest.mark.parametrize("mode", ["ps", "static"])
def test_parameter_server_baselines(source, mode):
    s = run_settings(source, mode=mode, stop_iter=30, num_servers=2, cache_size=700,
                     emb_optim="adagrad", emb_lr=0.1)  # fmt: skip
    run = run_local(source, s)
    ref = run_reference(source, s)
    assert close(run.tables(), ref.tables, 2e-4)
    for p, q in zip(dense_parameters(run.models[0]), dense_parameters(ref.model)):
        assert close(p.detach(), q.detach(), 2e-4)
    if mode == "static":
        assert 0 < len(run.oracle.plan.initial_fetch[0]) <= 700  # the hot rows


def test_bagpipe_fetches_fewer_rows_than_ps(source):
    kw = dict(stop_iter=40, num_servers=1)
    bag = OracleService(source, run_settings(source, lookahead=20, **kw)).plan
    ps = OracleService(source, run_settings(source, mode="ps", **kw)).plan
    fetched = lambda p: sum(len(r.trainers[0].fetch) for r in p.rounds)  # noqa: E731
    assert fetched(bag) < fetched(ps) / 2


@pytest.mark.parametrize("model,opt", [("dlrm", "sgd"), ("deepfm", "adagrad")])
def test_model_parallel(source, model, opt):
    s = run_settings(source, stop_iter=30, emb_optim=opt, emb_lr=0.1, model=model)
    trainers = run_local_model_parallel(source, s, model=model, dense_optim=opt)
    ref = run_reference(source, s, model=model, dense_optim=opt)
    tabs = {}
    for tr in trainers:
        tabs.update(tr.tables())
    full = torch.cat([tabs[f] for f in range(len(source.table_sizes))])
    assert close(full, ref.tables, 2e-4)
    for tr in trainers:
        for p, q in zip(dense_parameters(tr.model), dense_parameters(ref.model)):
            assert close(p.detach(), q.detach(), 2e-4)


def test_assign_tables_balances_rows():
    owner = assign_tables([100, 90, 80, 10, 5], 2)
    load = [sum(n for n, o in zip([100, 90, 80, 10, 5], owner) if o == t) for t in range(2)]
    assert max(load) - min(load) <= 100
