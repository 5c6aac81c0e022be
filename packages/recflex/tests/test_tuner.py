"""The two-stage tuner on the CPU, through injectable cost sources (no GPU needed)."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

from recflex import models
from recflex.ablations import binding, dispatch, heaviest_clusters, mutation, naive
from recflex.binding import StaticBinder
from recflex.inputs import pack
from recflex.module import FusedEmbedding, default_plan_for
from recflex.reference import embedding_bag_reference, emulate
from recflex.schedules import Schedule
from recflex.testing import assert_close
from recflex.tuner import (
    AnalyticCost,
    CallableCost,
    NoCache,
    TuneCache,
    Tuner,
    cluster_features,
    clusters_of,
    tune,
    tuning_batches,
)


@pytest.fixture(scope="module")
def test_model():
    return models.workload("test")


@pytest.fixture(scope="module")
def batches(test_model):
    return tuning_batches(test_model, 3)


def merged_model(w):
    """recflex-test with features 4 and 5 cloned twice into their own lines (groups), so
    clusters of 3 identical features exist next to a different-dim one."""
    f4, f5 = w.features[4], w.features[5]
    feats = [
        *w.features[:4],
        f4,
        dataclasses.replace(f4, name="f4b"),
        dataclasses.replace(f4, name="f4c"),
        f5,
        dataclasses.replace(f5, name="f5b", dim=32),  # same line, other shape: own cluster
    ]
    return dataclasses.replace(w, features=tuple(feats))


def pseudo_cost(s: Schedule, o) -> float:
    """A fixed, arbitrary-looking cost per (schedule, occupancy)."""
    return float(sum(ord(ch) * (i + 1) for i, ch in enumerate(repr(s))) % 9973 + 10 * (o or 0))


def test_ranks_candidates_by_given_cost(test_model, batches):
    seen = []

    def local(cluster, o, bs):
        seen.append((cluster.index, o))
        return [pseudo_cost(s, o) for s in cluster.candidates]

    def glob(plan, bs, dispatch, binding):
        return abs(plan.occupancy - 3) + 1.0

    cost = CallableCost(local, glob, occupancies=[1, 2, 3, 4])
    res = Tuner(cost, cache=NoCache(), progress=False).tune(test_model, batches)
    assert res.plan.occupancy == 3
    assert res.report["global_curve"] == {"1": 3.0, "2": 2.0, "3": 1.0, "4": 2.0}
    for c in res.clusters:
        for o in (1, 2, 3, 4):
            want = min(c.candidates, key=lambda s: pseudo_cost(s, o))
            assert res.best[(c.index, o)] == want
        for f in c.features:
            assert res.plan.schedules[f] == res.best[(c.index, 3)]
    assert sorted(seen) == sorted((c.index, o) for c in res.clusters for o in (1, 2, 3, 4))
    assert res.plan.meta["origin"] == "tuned"


def test_clustering_merges_identical_features(test_model):
    w = merged_model(test_model)
    cl = clusters_of(w)
    by_names = {c.names: c for c in cl}
    assert ("f4", "f4b", "f4c") in by_names  # one line, one shape: tuned once
    assert ("f5",) in by_names and ("f5b",) in by_names  # same line, different dim
    assert len(cl) == 4 + 1 + 2
    assert len(clusters_of(w, merge=False)) == w.num_features
    # groups of None never merge
    assert len(cluster_features([16, 16], [10, 10], [True, True], [None, None])) == 2
    assert len(cluster_features([16, 16], [10, 10], [True, True], [7, 7])) == 1
    assert len(cluster_features([16, 16], [10, 11], [True, True], [7, 7])) == 2

    calls = []

    def local(cluster, o, bs):
        calls.append(cluster.names)
        return [pseudo_cost(s, o) for s in cluster.candidates]

    bs = tuning_batches(w, 2)
    res = Tuner(CallableCost(local, occupancies=[2]), cache=NoCache(), progress=False).tune(w, bs)
    assert len(calls) == 7
    s = res.plan.schedules
    assert s[4] == s[5] == s[6]
    assert res.report["clusters"] == 7 and res.report["features"] == 9


def test_cache_hits_skip_work(test_model, batches, tmp_path):
    calls = {"local": 0, "global": 0}

    def local(cluster, o, bs):
        calls["local"] += 1
        return [pseudo_cost(s, o) for s in cluster.candidates]

    def glob(plan, bs, dispatch, binding):
        calls["global"] += 1
        return float(plan.occupancy)

    def run(bs):
        cost = CallableCost(local, glob, occupancies=[2, 4])
        return Tuner(cost, cache=TuneCache(tmp_path), progress=False).tune(test_model, bs)

    first = run(batches)
    assert calls == {"local": 6 * 2, "global": 2}
    assert first.report["cache_hits"] == 0
    second = run(batches)
    assert calls == {"local": 12, "global": 2}  # nothing measured again
    assert second.plan == first.plan
    assert second.report["cache_hits"] == 6 * 2 + 2 and second.report["cache_misses"] == 0
    run(batches[:2])  # other data: measured again
    assert calls["local"] == 24 and calls["global"] == 4


def test_no_valid_candidate_names_the_feature(test_model):
    w = test_model
    wide = dataclasses.replace(w.features[4], dim=64)
    w2 = dataclasses.replace(w, features=(*w.features[:4], wide, w.features[5]))
    with pytest.raises(ValueError, match=r"feature 'f4' \(dim 64, multi-hot\) has no valid"):
        Tuner(AnalyticCost(), templates=("ReduceByKey",), progress=False).tune(w2, 1)


def test_all_candidates_failing_names_the_feature(test_model, batches):
    def local(cluster, o, bs):
        bad = "f5" in cluster.names
        return [math.inf if bad else 1.0 for _ in cluster.candidates]

    t = Tuner(CallableCost(local, occupancies=[2]), cache=NoCache(), progress=False)
    with pytest.raises(RuntimeError, match=r"feature 'f5'.*no candidate schedule could run"):
        t.tune(test_model, batches)


def test_bad_cost_source_and_occupancies(test_model):
    with pytest.raises(TypeError, match="CostSource"):
        Tuner(lambda *a: 0)
    with pytest.raises(ValueError, match="occupancies"):
        Tuner(AnalyticCost(), occupancies=[0, 9])

    def short(cluster, o, bs):
        return [1.0]

    t = Tuner(CallableCost(short, occupancies=[1]), cache=NoCache(), progress=False)
    with pytest.raises(RuntimeError, match="1 costs for 5 candidates"):
        t.tune(test_model, 1)


def test_tuned_plan_output_equals_reference(test_model, batches):
    res = tune(test_model, cost=AnalyticCost(), batches=batches, cache=NoCache(), progress=False)
    tables = test_model.make_tables()
    emb = FusedEmbedding(tables, res.plan, backend="emulate")
    for b in models.workload("test").batches(2, seed=77):
        assert_close(emb(b), embedding_bag_reference(tables, pack(b)))
    # the saved plan reloads for these tables
    assert res.report["occupancy"] == res.plan.occupancy
    assert len(res.report["cluster_info"][4]["scores_at_optimum"]) == 152


def test_save_and_report(test_model, batches, tmp_path):
    res = tune(test_model, cost=AnalyticCost(), batches=batches, occupancies=[4], cache=NoCache(),
               progress=False)  # fmt: skip
    p, r = res.save(tmp_path / "plan.json")
    from recflex.plan import Plan

    assert Plan.load(p, rows=test_model.table_sizes, dims=test_model.dims) == res.plan
    rep = json.loads(r.read_text())
    for k in ("wall_s", "compiles", "cache_hits", "global_curve", "occupancy", "local"):
        assert k in rep


def test_ablations_on_the_analytic_model(test_model, batches):
    t = Tuner(AnalyticCost(), cache=NoCache(), occupancies=[2, 4], progress=False)
    res = t.tune(test_model, batches)
    n = naive(t, test_model, batches)
    assert n["plan"].occupancy is None and math.isfinite(n["cost"])
    b = binding(t, res.plan, batches)
    assert set(b) == {"runtime", "static-mean", "static-max"}
    assert b["static-max"] >= b["runtime"]
    d = dispatch(t, res.plan, batches)
    assert set(d) == {"if-else", "jump-table"}
    pick = heaviest_clusters(res, 2)
    assert len(pick) == 2
    m = mutation(t, res, batches, pick)
    for row in m:
        assert len(row["costs"]) == len(row["candidates"])
        assert row["candidates"][row["chosen"]] == repr(res.plan.schedules[
            res.clusters[row["cluster"]].rep])  # fmt: skip
    with pytest.raises(ValueError, match="cluster 99 does not exist"):
        mutation(t, res, batches, [99])


@pytest.mark.parametrize("mode", ["static-mean", "static-max"])
def test_static_binding_stays_correct(test_model, batches, mode):
    plan = default_plan_for(test_model)
    plan = plan.__class__(
        (Schedule("OneHotMultiBlock", {"unroll": 4}),) * 4
        + (Schedule("ReduceByKey", {"scan_dim": 4, "items": 2}),
           Schedule("MultiBlockPerSample", {"v": 4, "items": 2, "x": 4})),
        plan.dims, plan.rows, 4, plan.names,
    )  # fmt: skip
    sb = StaticBinder(plan, 528, [(p.offsets, p.batch_size) for p in batches], mode)
    tables = test_model.make_tables()
    for p in tuning_batches(test_model, 2):  # unseen sizes
        bd = sb.bind(p.offsets, p.batch_size)
        assert torch.equal(bd.blocks.to(torch.int64), sb.fixed)
        assert_close(emulate(plan, tables, p, bd), embedding_bag_reference(tables, p))
    with pytest.raises(ValueError, match="static-mean or static-max"):
        StaticBinder(plan, 528, [(batches[0].offsets, batches[0].batch_size)], "dynamic")


def test_tuning_figure_from_a_report(test_model, batches, tmp_path):
    pytest.importorskip("matplotlib")
    from recflex.figures import main as figures_main

    t = Tuner(AnalyticCost(), cache=NoCache(), occupancies=[2, 4], progress=False)
    res = t.tune(test_model, batches)
    res.report["ablations"] = {
        "naive": {"cost": naive(t, test_model, batches)["cost"]},
        "dispatch": dispatch(t, res.plan, batches),
        "mutation": mutation(t, res, batches, heaviest_clusters(res, 1)),
    }
    _, rep = res.save(tmp_path / "T.json")
    assert figures_main(["tuning", "--report", str(rep), "--out-dir", str(tmp_path)]) == 0
    assert (tmp_path / "recflex-tuning-T.png").stat().st_size > 10_000
    assert figures_main(["tuning", "--report", str(tmp_path / "none.json")]) == 1


def test_a_failing_occupancy_keeps_the_others_and_checkpoints(test_model, batches):
    seen = []

    def glob(plan, bs, dispatch, binding):
        if plan.occupancy == 2:
            raise RuntimeError("NVRTC: out of memory")
        return float(plan.occupancy)

    cost = CallableCost(lambda c, o, bs: [1.0] * len(c.candidates), glob, occupancies=[2, 4])
    t = Tuner(cost, cache=NoCache(), progress=False, checkpoint=seen.append, log=lambda m: None)
    res = t.tune(test_model, batches)
    assert res.plan.occupancy == 4 and res.report["global_curve"] == {"2": None, "4": 4.0}
    assert "out of memory" in res.report["tuner_notes"][0]
    stages = [c["stage"] for c in seen]
    assert stages[0] == "local" and stages[-1] == "global"
    assert len(seen[-1]["local_scores"]) == 6 * 2  # every (cluster, o) finished
    assert {s["occupancies"][0] for s in res.report["stages"]["local"]} == {2, 4}


def test_local_budget_cuts_later_occupancies_and_a_crash_leaves_scores(test_model, batches):
    cost = CallableCost(lambda c, o, bs: [float(o)] * len(c.candidates), occupancies=[1, 2])
    t = Tuner(cost, cache=NoCache(), progress=False, occupancies=[4, 2, 8], local_budget_s=0)
    res = t.tune(test_model, batches)  # the first occupancy given always runs
    assert res.report["occupancies"] == [4] and res.plan.occupancy == 4
    assert "skipped o=2" in res.report["tuner_notes"][0]
    seen = []
    calls = []

    def local(c, o, bs):
        calls.append(c.index)
        if len(calls) == 4:
            raise RuntimeError("killed")
        return [1.0] * len(c.candidates)

    t = Tuner(CallableCost(local, occupancies=[4]), cache=NoCache(), progress=False,
              checkpoint=seen.append, checkpoint_every_s=0)  # fmt: skip
    with pytest.raises(RuntimeError, match="killed"):
        t.tune(test_model, batches)
    assert [r["cluster"] for r in seen[-1]["local_scores"]] == [0, 1, 2]


def test_tune_cli_writes_the_report_as_it_goes(tmp_path, capsys):
    import signal
    import subprocess
    import sys
    import time

    from recflex import tune as tune_cli

    out = tmp_path / "t.json"
    argv = ["--model", "test", "--cost", "analytic", "--out", str(out), "--batches", "2",
            "--occupancies", "2,4", "--no-cache", "--quiet", "--ablations",
            "binding,dispatch,mutation", "--mutation-candidates", "3", "--mutation-features", "1",
            "--rows", str(tmp_path / "rows.jsonl")]  # fmt: skip
    assert tune_cli.main(argv) == 0
    rep = json.loads((tmp_path / "t.report.json").read_text())
    assert rep["stage"] == "done" and out.is_file()
    assert [a["what"] for a in rep["stages"]["ablations"]] == ["binding", "dispatch", "mutation"]
    (m,) = rep["ablations"]["mutation"]
    assert len(m["candidates"]) == 3 and m["of"] == len(
        rep["cluster_info"][m["cluster"]]["candidates"]
    )
    assert m["candidates"][m["chosen"]] in rep["cluster_info"][m["cluster"]]["candidates"]
    rows = [json.loads(x) for x in (tmp_path / "rows.jsonl").read_text().splitlines()]
    assert [r["variant"] for r in rows] == ["two-stage", "binding-static-mean",
                                            "binding-static-max", "dispatch-jump-table"]  # fmt: skip
    assert "[tune" in capsys.readouterr().out
    # past the deadline: no ablation starts, the report says so
    late = [*argv[:-2], "--deadline-s", "0", "--report", str(tmp_path / "r.json")]
    assert tune_cli.main(late) == 0
    rep = json.loads((tmp_path / "r.json").read_text())
    assert set(rep["ablations_failed"]) == {"binding", "dispatch", "mutation"}
    # killed by a timeout (SIGTERM) midway: the report is there, marked killed
    slow = tmp_path / "slow.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "recflex.tune", "--model", "test", "--cost", "analytic",
         "--out", str(slow), "--batches", "400", "--local-batches", "400", "--no-cache",
         "--quiet"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    rpath = tmp_path / "slow.report.json"
    try:
        deadline = time.monotonic() + 60
        while not rpath.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    rep = json.loads(rpath.read_text())
    assert rc == 128 + signal.SIGTERM and rep["stage"] == "killed"
    assert rep["stage_at_kill"] in ("local", "global") and "killed by signal" in rep["error"]
