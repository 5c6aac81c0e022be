"""Probe kernels of the GPU cost source: their plans and data on the CPU, an nvcc build of a
timing probe, and (gpu-marked) the probe measurements and a short tuning run on a GPU."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch

from recflex import build, models
from recflex.codegen import generate
from recflex.inputs import pack
from recflex.module import FusedEmbedding
from recflex.probe import chunks, probe_plan, replicate
from recflex.reference import embedding_bag_reference
from recflex.schedules import candidates
from recflex.testing import assert_close, random_batch
from recflex.tuner import LocalJob, NoCache, Tuner, clusters_of, feature_batches, tuning_batches


def test_chunks_are_bounded_and_cover():
    cands = candidates(16, True)
    cs = chunks(cands, 32)
    assert all(len(c) <= 32 for c in cs) and len(cs) == math.ceil(len(cands) / 32)
    assert [s for c in cs for s in c] == cands
    assert max(map(len, cs)) - min(map(len, cs)) <= 1
    with pytest.raises(ValueError, match="chunk size"):
        chunks(cands, 0)


def test_probe_plan_fills_every_slot():
    ch = candidates(16, True)[:7]
    p = probe_plan(ch, 16, 4096, occupancy=3, sm_count=132)
    assert p.num_features == math.ceil(132 * 3 / 7) * 7 >= 132 * 3
    assert p.schedules[:7] == tuple(ch) and p.schedules[7:14] == tuple(ch)
    assert p.occupancy == 3 and set(p.dims) == {16} and set(p.rows) == {4096}
    k = generate(p, timing=True, exact_occupancy=True)
    assert k.num_functions == 7 and "__launch_bounds__(256, 3)" in k.source


def test_replicated_batch_runs_every_copy_on_the_same_bags():
    b = pack(random_batch([50], 9, max_len=5, seed=3))
    r = replicate(b, 4)
    assert r.num_features == 4 and r.indices.numel() == 4 * b.indices.numel()
    ch = candidates(8, True)[:2]
    plan = probe_plan(ch, 8, 50, occupancy=1, sm_count=2)
    table = torch.randn(50, 8)
    emb = FusedEmbedding([table] * plan.num_features, plan, backend="emulate")
    out = emb(replicate(b, plan.num_features))
    one = embedding_bag_reference([table], b)
    assert_close(out, one.repeat(1, plan.num_features))


@pytest.mark.skipif(build.find_nvcc() is None, reason="nvcc is not on PATH")
def test_timing_probe_compiles_with_nvcc():
    ch = candidates(16, True)[:3]
    k = generate(probe_plan(ch, 16, 4096, 4, 132), index_dtype="int32", timing=True,
                 exact_occupancy=True)  # fmt: skip
    u = build.compile_nvcc(k.source, "sm_90")
    assert u["registers"] > 0 and u["spill_stores"] == 0


def test_cli_analytic_and_errors(tmp_path):
    out = tmp_path / "p.json"
    cmd = [sys.executable, "-m", "recflex.tune", "--model", "test", "--cost", "analytic",
           "--out", str(out), "--batches", "2", "--occupancies", "2,4", "--quiet",
           "--cache-dir", str(tmp_path / "c"), "--ablations", "dispatch"]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "occupancy" in r.stdout and "dispatch" in r.stdout
    assert out.is_file() and (tmp_path / "p.report.json").is_file()
    bad = subprocess.run([*cmd[:-2], "--ablations", "speed"], capture_output=True, text=True,
                         timeout=120)  # fmt: skip
    assert bad.returncode == 2 and "unknown ablation" in bad.stderr
    if not torch.cuda.is_available():
        gpu = [c if c != "analytic" else "gpu" for c in cmd]
        r = subprocess.run(gpu, capture_output=True, text=True, timeout=120)
        assert r.returncode == 1 and r.stderr.startswith("error: GpuCost measures on a CUDA GPU")


# ---------------------------------------------------------------------------- GPU
@pytest.mark.gpu
def test_gpu_probe_scores_every_candidate(tmp_path):
    from recflex.probe import GpuCost

    w = models.workload("test")
    cost = GpuCost(chunk=16, jobs=8)
    c = next(c for c in clusters_of(w) if c.multi_hot)
    bs = feature_batches(tuning_batches(w, 2), c.rep)
    job = LocalJob(c, 2, bs, "x")
    cost.prepare_local([job])
    scores = cost.local_costs(job)
    assert len(scores) == len(c.candidates)
    fin = [s for s in scores if math.isfinite(s)]
    assert len(fin) >= len(scores) // 2 and min(fin) > 0, cost.notes
    assert cost.stats["compiles"] >= 1


@pytest.mark.gpu
def test_gpu_tune_small_model_matches_reference(tmp_path):
    from recflex.probe import GpuCost

    w = models.workload("test")
    cost = GpuCost(chunk=32, jobs=8)
    t = Tuner(cost, cache=NoCache(), occupancies=[2, 4], progress=False, local_batches=2)
    res = t.tune(w, tuning_batches(w, 4))
    assert res.plan.occupancy in (2, 4) and res.report["compiles"] > 0
    tables = w.make_tables(device="cuda")
    emb = FusedEmbedding(tables, res.plan)
    for b in w.batches(2, seed=123):
        out = emb(b)
        ref = embedding_bag_reference([x.cpu() for x in tables], pack(b))
        assert_close(out, ref)


@pytest.mark.gpu
def test_gpu_naive_scores_every_candidate_alone():
    from recflex import ablations
    from recflex.probe import GpuCost

    w = models.workload("test")
    cost = GpuCost(chunk=16, jobs=8)
    t = Tuner(cost, cache=NoCache(), occupancies=[2], progress=False, local_batches=2)
    batches = tuning_batches(w, 2)
    c = next(c for c in clusters_of(w) if c.multi_hot)
    job = LocalJob(c, None, feature_batches(batches, c.rep), "x")
    cost.prepare_alone([job])
    built = cost.stats["compiles"]
    scores = cost.alone_costs(job)
    assert cost.stats["compiles"] == built  # everything was built up front
    assert len(scores) == len(c.candidates)
    fin = [s for s in scores if math.isfinite(s)]
    assert len(fin) >= len(scores) // 2 and min(fin) > 0, cost.notes
    res = ablations.naive(t, w, batches)
    assert math.isfinite(res["cost"]) and res["plan"].occupancy is None
