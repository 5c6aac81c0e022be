"""The profiler runs on CPU at toy size; the cost model fits, scores and plugs into the plan."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from rap_share import costmodel, profile
from rap_share.constants import STAGES
from rap_share.planner import make_plan


@pytest.fixture(scope="module")
def prof(tmp_path_factory):
    out = tmp_path_factory.mktemp("prof")
    rc = profile.main([
        "--out", str(out), "--device", "cpu", "--ops", "logit,sigrid_hash,firstx,ngram",
        "--degrees", "1,2,4,8", "--widths", "1,2,4", "--batches", "256,4096", "--units", "1",
        "--iters", "2", "--warmup-runs", "1", "--stage-batch", "64", "--max-table-rows", "100",
        "--embedding-dim", "8", "--bottom-mlp", "16", "--top-mlp", "16-1",
    ])  # fmt: skip
    assert rc == 0
    return out


def test_profile_writes_kernels_stages_and_model(prof):
    d = json.loads((prof / "profile.json").read_text())
    assert d["device"] == "cpu" and len(d["kernels"]) == 4 * 4 * 3 * 2
    assert all(r["ms"] > 0 for r in d["kernels"])
    # no CUDA graphs on a CPU: every kernel timed eagerly, and the profile says so
    assert d["timing"] == "eager fused calls" and not any(r["graph"] for r in d["kernels"])
    assert set(d["stages"]) == set(STAGES)
    for s in STAGES:
        st = d["stages"][s]
        assert st["base_ms"] > 0 and st["capacity_units"] in (0, 1)
        assert (st["capacity_ms"] > 0) == (st["capacity_units"] > 0)
    cm = costmodel.CostModel.load(prof / "cpu.model.json")
    assert cm.backend in costmodel.BACKENDS and set(cm.capacity_ms) == set(STAGES)
    assert set(cm.accuracy) <= set(costmodel.GROUPS)


@pytest.mark.parametrize("backend", ["nnls", "xgboost", "lstsq"])
def test_fit_backends_predict_positive_and_score(prof, backend):
    if backend == "xgboost":
        pytest.importorskip("xgboost")
    d = json.loads((prof / "profile.json").read_text())
    cm = costmodel.fit(d, backend)
    assert cm.backend == backend
    for r in d["kernels"][:10]:
        assert cm.kernel_ms(r["op"], r["degree"], r["width"], r["batch"], r["params"]) > 0
    ev = costmodel.evaluate(cm, d)
    assert 0.0 <= ev["within_10pct"] <= 1.0 and ev["n"] == len(d["kernels"])
    again = costmodel.CostModel.load(cm.save(prof / f"{backend}.json"))
    r = d["kernels"][3]
    a = cm.kernel_ms(r["op"], r["degree"], r["width"], r["batch"], r["params"])
    b = again.kernel_ms(r["op"], r["degree"], r["width"], r["batch"], r["params"])
    assert a == pytest.approx(b, rel=1e-6)


def test_fit_learns_a_clean_synthetic_profile():
    """On noiseless synthetic latencies the regressors reach RAP's accuracy metric."""
    rows = []
    for op in ("logit", "sigrid_hash", "firstx", "ngram", "bucketize", "onehot"):
        for d in (1, 2, 3, 4, 6, 8, 12, 16, 24, 32):
            for w in (2, 3, 4, 6, 8, 12, 16):
                for b in (1024, 4096, 16384):
                    ms = (0.01 + 1e-4 * d * w) * (0.7 * b / 4096 + 0.3)
                    rows.append({"op": op, "degree": d, "width": w, "batch": b, "ms": ms,
                                 "params": {"x": w, "n": 1, "num_classes": w}})  # fmt: skip
    cm = costmodel.fit({"kernels": rows, "device": "synthetic"}, "lstsq")
    assert min(cm.accuracy.values()) >= 0.9
    w0, w1 = cm.scaling["logit"]
    assert w0 == pytest.approx(0.7, abs=1e-6) and w1 == pytest.approx(0.3, abs=1e-6)
    assert "within_10pct" in costmodel.evaluate(cm, {"kernels": rows})


def test_fit_errors():
    with pytest.raises(ValueError, match="no kernel measurements"):
        costmodel.fit({"kernels": []})
    with pytest.raises(ValueError, match="reference batch"):
        costmodel.fit({"kernels": [{"op": "logit", "degree": 1, "width": 1, "batch": 8, "ms": 1.0,
                                    "params": {}}]}, "lstsq")  # fmt: skip
    with pytest.raises(ValueError, match="backend"):
        costmodel.fit({"kernels": [{"op": "logit"}]}, "bogus")


def test_plan_with_measured_model(prof):
    cm = costmodel.CostModel.load(prof / "cpu.model.json")
    plan = make_plan("plan0", 2, 64, cost_model=cm)
    d = plan.to_json()
    assert d["cost_model"]["device"] == "cpu"
    for gp in plan.gpus:
        sched = gp.schedule
        for s in STAGES:
            if s != "grad_comm" or sched.overflow_ms == 0:
                assert sched.load(s) <= sched.budgets[s] + 1e-9


def test_profile_inputs_shapes():
    cols = profile.make_columns("ngram", 3, 4, 10, torch.device("cpu"))
    assert len(cols) == 3 and cols[0].num_rows == 10 and cols[0].values.numel() == 40
    cols = profile.make_columns("fill_null", 2, 1, 10, torch.device("cpu"))
    assert cols[0].valid is not None
    assert np.all(profile.make_columns("onehot", 1, 8, 5, "cpu")[0].values.numpy() < 17)


def test_profile_cli_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        profile.main(["--out", str(tmp_path), "--ops", "nope"])
    assert exc.value.code == 2
    f = tmp_path / "file"
    f.write_text("x")
    rc = profile.main(["--out", str(f), "--device", "cpu", "--ops", "logit", "--degrees", "1",
                       "--widths", "1", "--batches", "4096", "--no-stages", "--iters", "1",
                       "--warmup-runs", "0", "--no-fit"])  # fmt: skip
    assert rc == 1 and "is not a folder" in capsys.readouterr().err


def test_default_model_from_shipped_files(prof, tmp_path, monkeypatch):
    monkeypatch.setattr(costmodel, "PROFILE_DIR", tmp_path)
    assert costmodel.default_model("NVIDIA H200").backend == "analytic"
    (tmp_path / "nvidia-h200.profile.json").write_text((prof / "profile.json").read_text())
    cm = costmodel.default_model("NVIDIA H200")
    assert cm.backend == "nnls" and "fitted at load time" in cm.note
    (tmp_path / "nvidia-h200.model.json").write_text((prof / "cpu.model.json").read_text())
    assert "fitted at load time" not in costmodel.default_model("NVIDIA H200").note
    assert costmodel.default_model("NVIDIA A100").backend == "analytic"


def _stages(base=1.0, corun_ms=1.5, capacity_ms=0.0, probe_ms=0.5):
    return {s: {"base_ms": base, "capacity_units": int(capacity_ms > 0), "capacity_ms": capacity_ms,
                "corun": [{"units": 1, "stage_ms": corun_ms, "probe_ms": probe_ms}]}
            for s in STAGES}  # fmt: skip


def test_measured_stage_times_give_positive_budgets(prof):
    """The H200 case: the smallest probe already stretched every stage (capacity 0); the
    budget is interpolated to the 5 % point, not 0."""
    b = costmodel.stage_budgets_from_profile(_stages(base=0.8, corun_ms=1.7, probe_ms=0.54))
    assert all(v == pytest.approx(0.54 * 0.05 * 0.8 / 0.9) for v in b.values())
    assert costmodel.stage_budgets_from_profile(_stages(capacity_ms=0.3))["emb_fwd"] == 0.3
    st = _stages(base=0.8, corun_ms=1.7, probe_ms=0.54)
    st["emb_bwd"]["capacity_ms"] = 0.4
    cm = costmodel._add_stages(costmodel.CostModel("nnls", "x"), {"stages": st})
    assert cm.measured_stages == ["emb_bwd"] and cm.capacity_ms["emb_bwd"] == 0.4
    assert costmodel.CostModel(**cm.to_json()).measured_stages == ["emb_bwd"]
    d = json.loads((prof / "profile.json").read_text())
    cm = costmodel.fit(d)
    assert all(v > 0 for v in cm.stage_budgets(4096).values())
    shipped = json.loads((costmodel.PROFILE_DIR / "nvidia-h200.profile.json").read_text())
    cm = costmodel.fit(shipped, "nnls")
    assert all(v > 0 for v in cm.stage_budgets(4096).values())
    assert cm.held_out["n"] > 0 and 0.0 <= cm.held_out["within_10pct"] <= 1.0


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan")])
def test_zero_or_negative_budgets_rejected(bad):
    cm = costmodel.analytic_model()
    cm.capacity_ms["mlp_bwd"] = bad
    with pytest.raises(ValueError, match="mlp_bwd"):
        cm.stage_budgets(4096)
    with pytest.raises(ValueError, match="base_ms must be > 0"):
        costmodel.stage_budgets_from_profile(_stages(base=bad))
    st = _stages()
    st["grad_comm"]["corun"] = []
    with pytest.raises(ValueError, match="grad_comm has no capacity"):
        costmodel.stage_budgets_from_profile(st)


def test_stage_profile_under_torchrun_on_two_ranks(tmp_path):
    """``torchrun --nproc-per-node 2 -m rap_share.profile`` (gloo on CPU): the stage profile
    of 2 ranks, grad_comm with the all-reduce, written once by rank 0."""
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "p2"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
           "--master-port", str(port), "-m", "rap_share.profile", "--out", str(out),
           "--device", "cpu", "--ops", "sigrid_hash", "--degrees", "1,2", "--widths", "1,4",
           "--batches", "256", "--units", "1,2", "--stage-batch", "128",
           "--max-table-rows", "1000", "--embedding-dim", "8", "--bottom-mlp", "16",
           "--top-mlp", "16-1", "--iters", "2", "--warmup-runs", "1", "--no-fit"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    prof = json.loads((out / "profile.json").read_text())
    assert prof["stage_world"] == 2
    st = prof["stages"]
    st = st.get("stages", st)
    assert set(st) == set(STAGES) and all(st[s]["base_ms"] > 0 for s in STAGES)


def test_profile_graphs_switch(monkeypatch):
    """``--graphs`` / ``--no-graphs``; unset, RAP_SHARE_GRAPHS decides (as for the figures)."""
    from rap_share import graphs

    assert profile.parser().parse_args(["--out", "x", "--graphs"]).graphs is True
    assert profile.parser().parse_args(["--out", "x", "--no-graphs"]).graphs is False
    unset = profile.parser().parse_args(["--out", "x"]).graphs
    monkeypatch.setenv(graphs.ENV, "0")
    assert unset is None and graphs.enabled(unset) is False


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_profile_kernels_as_graph_replays_on_gpu():
    """With ``graphs`` a fused launch is captured and its replay timed (``graph`` True); the
    same grid without it is timed eagerly. Both give positive times (no timing comparison:
    that is the profile's job, not a test's)."""
    dev = torch.device("cuda", 0)
    args = (["sigrid_hash", "logit"], [1, 8], [1], [4096], dev, 1, 3, False)
    on = profile.profile_kernels(*args, graphs=True)
    off = profile.profile_kernels(*args, graphs=False)
    assert all(r["graph"] and r["ms"] > 0 for r in on), on
    assert not any(r["graph"] for r in off) and all(r["ms"] > 0 for r in off)


def test_budgets_from_idle_gpu_time(prof, tmp_path, capsys):
    """``--budgets idle``: half of each stage's idle GPU time (base - busy), a token budget
    where a stage has none, every stage counted as measured; a profile without ``busy_ms``
    (a CPU profile) is refused, naming the stage."""
    st = _stages(base=2.0)
    for s, busy in zip(STAGES, [0.4, 1.0, 2.0, 0.0, 2.5]):
        st[s]["busy_ms"] = busy
    b = costmodel.stage_budgets_from_idle(st)
    assert [b[s] for s in STAGES] == pytest.approx([0.8, 0.5, 1e-3, 1.0, 1e-3])
    assert costmodel.stage_budgets_from_idle(st, share=1.0)["emb_fwd"] == pytest.approx(1.6)
    with pytest.raises(ValueError, match="share"):
        costmodel.stage_budgets_from_idle(st, share=0.0)
    d = json.loads((prof / "profile.json").read_text())
    with pytest.raises(ValueError, match="emb_fwd has no busy_ms"):
        costmodel.fit(d, budgets="idle")
    with pytest.raises(ValueError, match="budgets: expected one of"):
        costmodel.fit(d, budgets="free")
    d["stages"] = {s: dict(d["stages"][s], busy_ms=0.25 * d["stages"][s]["base_ms"])
                   for s in STAGES}  # fmt: skip
    cm = costmodel.fit(d, budgets="idle")
    assert cm.measured_stages == list(STAGES)
    for s in STAGES:
        assert cm.capacity_ms[s] == pytest.approx(0.375 * d["stages"][s]["base_ms"])
    path = tmp_path / "p.json"
    path.write_text(json.dumps(d))
    out = tmp_path / "m.json"
    assert costmodel.main(["fit", str(path), "--out", str(out), "--budgets", "idle"]) == 0
    assert "idle GPU time" in json.loads(out.read_text())["note"]
    cpu = prof / "profile.json"
    assert costmodel.main(["fit", str(cpu), "--out", str(out), "--budgets", "idle"]) == 1
    assert "no busy_ms" in capsys.readouterr().err
    assert not any("busy_ms" in v for v in json.loads(cpu.read_text())["stages"].values())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_stage_profile_measures_busy_time_on_gpu():
    """On CUDA every stage gets ``busy_ms``: the trainer stream's kernel time, positive and
    below the stage's length plus the trace's noise (no timing comparison beyond that)."""
    st = profile.profile_stages(torch.device("cuda", 0), 1024, [1], 3, 2, 10_000, 16,
                                progress=False, bottom_mlp="32", top_mlp="32-1")  # fmt: skip
    for s in STAGES:
        assert 0 < st["stages"][s]["busy_ms"] < 10 * st["stages"][s]["base_ms"], s
