"""The stage runner (CUDA graphs, eager fallback), packed raw loading and the diagnostics."""

import numpy as np
import pytest
import torch

from rap_share import corun, figures
from rap_share.columns import Column
from rap_share.constants import STAGES
from rap_share.graphs import StagedRunner
from rap_share.runtime import RawSource, pack_columns, unpack_columns


@pytest.fixture(scope="module")
def setup():
    cfg = corun.Config(plan="plan0", batch=64, solver="greedy")
    _, progs = corun.build_programs(cfg, 0)
    raw = RawSource.synthetic(512, table_sizes="kaggle")
    return cfg, progs, raw


def _same(a: dict, b: dict) -> None:
    assert torch.equal(a["dense"].cpu(), b["dense"].cpu())
    assert torch.equal(torch.as_tensor(a["labels"]).cpu(), torch.as_tensor(b["labels"]).cpu())
    for (va, oa), (vb, ob) in zip(a["sparse"], b["sparse"]):
        assert torch.equal(va.cpu(), vb.cpu()) and torch.equal(oa.cpu(), ob.cpu())


def test_pack_roundtrip():
    cols = {"a": Column(np.arange(4), None, np.array([1, 0, 1, 1], bool)),
            "b": Column(np.arange(4) * 2), "c": Column(np.ones(4, np.float32))}  # fmt: skip
    host, layout = pack_columns(cols)
    assert len(host) == 3  # int64 values, their masks, float32 values
    env = unpack_columns(host, layout)
    for k, c in cols.items():
        assert np.array_equal(env[k].values.numpy(), c.values)
        assert (env[k].valid is None) == (c.valid is None)
    assert env["a"].valid.tolist() == [True, False, True, True]


def test_runner_cpu_falls_back_and_equals_preprocess(setup):
    cfg, progs, raw = setup
    r = StagedRunner(raw, progs["rap"], cfg, 0, torch.device("cpu"))
    assert not r.graphed and "not a CUDA device" in r.note
    for it in range(3):
        _same(r.run_all(it), corun.preprocess(raw, progs["rap"], it, cfg, 0, torch.device("cpu")))
    off = StagedRunner(raw, progs["rap"], cfg, 0, torch.device("cpu"), graphs=False)
    assert off.note == "eager (graphs off)"


def test_runner_capture_failure_falls_back(setup, monkeypatch):
    cfg, progs, raw = setup

    def boom(self):
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(StagedRunner, "_capture", boom)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a, **k: None)
    r = StagedRunner(raw, progs["rap"], cfg, 0, torch.device("cuda", 0))
    assert not r.graphed and r.note.startswith("eager (capture failed: RuntimeError")


def test_diagnostics_rows_and_summary(setup):
    _, _, raw = setup
    import tempfile

    path = tempfile.mktemp(suffix=".npz")
    raw.save(path)
    tr = corun.Trainer(corun.Config(plan="plan0", batch=64, steps=2, warmup=1, solver="greedy",
                                    embedding_dim=8, max_table_rows=1000), 0,
                       torch.device("cpu"), path)  # fmt: skip
    diag = tr.prep_diagnostics(n=1)
    assert diag["unfused"]["wall_ms"] > 0 and diag["fused_runner"]["wall_ms"] > 0
    assert diag["unfused_launches"] > diag["fused_launches"]
    runs = []
    for v in ("ideal", "rap"):
        res = tr.run(v)
        res.update(config=corun.config_dict(tr.cfg), device="cpu", mps=False, prep=diag)
        runs.append(res)
    rows = figures.to_rows(runs, "figure10", "none")
    thr = [r for r in rows if r["metric"] == "throughput"]
    assert all(r["prep"] == diag and set(r["stage_ms"]) == set(STAGES) for r in thr)
    text = "\n".join(figures.diagnostics(thr))
    assert "preprocessing alone" in text and "Ideal -> RAP" in text


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_runner_graphs_equal_eager_on_gpu(setup):
    cfg, progs, raw = setup
    dev = torch.device("cuda", 0)
    r = StagedRunner(raw, progs["rap"], cfg, 0, dev)
    assert r.graphed, r.note
    for it in range(4):  # both slots, twice
        r.load(it)
        for s in STAGES:
            r.stage(s, it)
        torch.cuda.synchronize()
        _same(r.outputs(it), corun.preprocess(raw, progs["rap"], it, cfg, 0, dev))
