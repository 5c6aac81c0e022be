"""Command-line tools: --help everywhere, profile, the event-log tools, MPS errors, and the
makespan benchmark's pipeline on CPU-backed stand-ins of GPUs."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest

from rmixer import devices, makespan, mps, profile, tools
from rmixer.events import EventLog, read_events
from rmixer.knowledge import Knowledge

CLIS = ["rmixer.server", "rmixer.client", "rmixer.profile", "rmixer.tools", "rmixer.makespan",
        "rmixer.mps", "rmixer.worker", "rmixer.launcher"]  # fmt: skip


@pytest.mark.parametrize("module", CLIS)
def test_help_shows_an_example(module, capsys):
    main = importlib.import_module(module).main
    try:
        rc = main(["--help"])
    except SystemExit as exc:
        rc = exc.code
    out = capsys.readouterr().out
    assert rc == 0 and "usage" in out.lower()
    if module != "rmixer.launcher":
        assert "example:" in out


def test_profile_cli_fills_the_cache_and_reuses_it(tmp_path, capsys):
    cache = tmp_path / "p.json"
    argv = ["tiny_dcn", "tiny_din", "--devices", "cpu", "--iterations", "5", "--warmup", "2",
            "--cache", str(cache), "--cpu-threads", "1"]  # fmt: skip
    assert profile.main(argv) == 0, capsys.readouterr().err
    k = Knowledge.load(cache)
    entries = list(k.entries.values())
    assert len(entries) == 2 and {e["kind"] for e in entries} == {"cpu"}
    for e in entries:
        assert e["iter_s"] > 0 and e["peak_mb"] > 0 and e["intensity_source"] == "cpu-flops"
        assert e["klass"] in ("compute", "memory", "low") and e["correction"] > 0
    capsys.readouterr()
    assert profile.main(argv) == 0
    assert "0 new profile(s), 2 cached" in capsys.readouterr().out
    with pytest.raises(SystemExit) as err:
        profile.main([*argv[:2], "--devices", "gpu0"])
    assert err.value.code == 2 and "--devices" in capsys.readouterr().err


def synthetic_log(path):
    log = EventLog(path)
    for i, (dev, s, e) in enumerate(
        [("cuda:0", 0.0, 2.0), ("cuda:0", 0.5, 3.0), ("cpu", 0.0, 4.0)]
    ):
        log.emit("job_end", job=i, name=f"j{i}", model="dlrm" if i < 2 else "din", key=f"k{i}",
                 device=dev, run_on=dev, t_dispatch=100.0, t_start=100.0 + s, t_end=100.0 + e,
                 iterations=10, state="done", peak_mb=10.0)  # fmt: skip
    log.emit("job_end", job=9, name="x", model="dlrm", device="cpu", t_start=1, t_end=2,
             state="failed")  # fmt: skip
    log.close()


def test_event_tools(tmp_path, capsys):
    path = tmp_path / "events.jsonl"
    synthetic_log(path)
    spans = tools.job_spans(read_events(path))
    assert len(spans) == 3 and tools.makespan(spans) == pytest.approx(4.0)
    w = tools.workload(spans)
    assert w["cuda:0"]["busy_s"] == pytest.approx(4.5) and w["cpu"]["jobs"] == 1
    k = Knowledge({"cuda/k0": {"key": "k0", "setup_s": 0.0, "iter_s": 0.1, "model": "dlrm"}})
    t = tools.times(spans, k)
    assert t["dlrm"]["standalone_s"] == pytest.approx(1.0) and t["din"]["standalone_s"] is None
    assert tools.main(["gantt", str(path), "--out", str(tmp_path / "g.png")]) == 0
    assert (tmp_path / "g.png").stat().st_size > 1000
    assert tools.main(["workload", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.split("\n", 1)[1])["cpu"]["jobs"] == 1
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"event": "x"}\nnot json\n')
    assert tools.main(["times", str(bad)]) == 1
    assert f"{bad}:2" in capsys.readouterr().err


def test_mps_without_the_binary_says_why(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    d = mps.MpsDaemon(tmp_path / "m")
    with pytest.raises(mps.MpsError, match="not on PATH"):
        d.start()
    assert mps.main(["start", "--dir", str(tmp_path / "m")]) == 1


def test_device_helpers():
    assert devices.parse_gpus(" 0,2 ") == [0, 2]
    for bad in ("a", "0,0", "-1"):
        with pytest.raises(ValueError, match="--gpus"):
            devices.parse_gpus(bad)
    d = devices.Device("cuda:0", "gpu", 2, 10000, baseline_mb=1000)
    d.reserve(1, 1000, 50, "compute")
    d.live_used_mb = 1000 + 1200 + 1500  # 1.5 GB more than bookkept: not released yet
    assert d.used_mb() == 3700 and d.fits(10)  # still room: placement goes on
    assert not d.fits(5500)  # 3700 + 1.2 x 5500 > 10000, though reserved 2200 + 6600 fits
    d.live_used_mb = 1500  # below the bookkeeping (a job not started yet): reservations count
    assert d.used_mb() == 2200 and not d.fits(6700) and d.fits(6500)
    d.live_used_mb = None
    assert d.majority_class() == "compute" and d.fits(10)
    with pytest.raises(ValueError, match="already running"):
        d.reserve(1, 1, 1, "low")
    with pytest.raises(ValueError, match="no devices"):
        devices.build_devices([], 4, 0)


@pytest.mark.slow
@pytest.mark.parametrize("gpus,copies", [(1, 1), (4, 2)])  # 4: issue 14's machine, stand-ins
def test_makespan_pipeline_on_cpu_stand_ins(tmp_path, capsys, gpus, copies):
    """The benchmark end to end, without a GPU: profiles, runs, rows, Gantt."""
    mix = tmp_path / "mix.txt"
    models = ["dlrm", "dcn", "din", "deepfm"] * copies
    mix.write_text("".join(f"{m} tiny_{m} j{i}\n" for i, m in enumerate(models)))
    out = tmp_path / "out"
    rc = makespan.main(
        ["--cpu-as-gpu", str(gpus), "--mixes", str(mix), "--gpu-counts", str(gpus),
         "--gpu-slots", "2",
         "--cpu-slots", "1", "--iterations-scale", "0.5", "--gpu-memory-mb", "4000",
         "--out-dir", str(out), "--profile-iterations", "4", "--cpu-threads", "1"]
    )  # fmt: skip
    text = capsys.readouterr()
    assert rc == 0, text.out + text.err
    rows = [json.loads(x) for x in (out / "makespan.jsonl").read_text().splitlines()]
    spans = [r for r in rows if r["benchmark"] == "makespan" and r["metric"] == "makespan"]
    assert {r["variant"] for r in spans} == {"monolithic", "mps", "rmixer", "rmixer@mps"}
    for r in spans:
        assert r["done"] == len(models) and r["ooms"] == 0 and r["max_slots_in_use"] <= 2
        assert r["num_gpus"] == gpus and r["baseline"] == "monolithic" and r["ratio"] > 0
        assert len(r["job_spans"]) == len(models)
        before, after = r["cpu_corun_slowdown"]  # the CPU gate's correction, learned on the way
        assert before >= 1.0 and after >= 1.0
        assert all(s["dispatch"] <= s["start"] < s["end"] for s in r["job_spans"])
        median_wait, max_wait = r["start_wait_s"]
        assert 0.0 <= median_wait <= max_wait and r["spares"] >= 4
        assert r["cpu_rescued"] >= 0
    assert {r["metric"] for r in rows} == {"makespan", "throughput", "iteration_time"}
    assert {r["workload"] for r in rows if r["benchmark"] == "standalone"} >= {"dlrm-7e41f7b6b2"}
    assert (out / "gantt.png").exists()
    if gpus == 1:
        assert "target on 1 GPU" in text.out


def test_makespan_plan_keeps_the_important_runs_and_says_when_over_budget():
    from rmixer.configs import config_key
    from rmixer.knowledge import Knowledge
    from rmixer.tasks import read_tasks

    mixes = {m: read_tasks(makespan.tasklist_path(m)) for m in ("balance_24", "memory_24")}
    k = Knowledge({})
    for specs in mixes.values():
        for s in specs:
            k.put("cuda", {"key": config_key(s.config), "setup_s": 0.5, "iter_s": 0.008})
    jobs = {m: [s.as_request() for s in specs] for m, specs in mixes.items()}
    runs = makespan.order_runs(
        list(mixes), [1, 2], ["monolithic", "mps", "rmixer"], [], {"balance_24"}
    )
    assert runs[:3] == [("balance_24", 1, p) for p in ("rmixer", "monolithic", "mps")]
    chosen, f, over = makespan.plan_runs(jobs, runs, k, "cuda", 10)
    assert over and f == 0 and chosen == runs[:2]
    assert "every job at the floor" in makespan.describe_scale(f, jobs)
    chosen, f, over = makespan.plan_runs(jobs, runs, k, "cuda", 2000)
    assert not over and chosen == runs and f > 0
    total = sum(makespan.predict_run(jobs[m], g, p, k, "cuda", f) for m, g, p in chosen)
    assert total == pytest.approx(2000, rel=0.01)
    assert "0.0000" not in makespan.describe_scale(1e-7, jobs)


def test_mps_model_reproduces_run_5(capsys):
    """The model behind MPS_INTENSITY_FILL, on the committed run 5 (one H200): it must keep
    giving the numbers docs/rmixer/makespan.md and the constant's comment quote."""
    import importlib.util

    root = Path(__file__).resolve().parents[3]
    results = root / "results/rmixer/makespan.jsonl"
    script = root / "packages/rmixer/benchmarks/mps_model.py"
    if not results.exists() or not script.exists():
        pytest.skip("needs the repository's results/ and benchmarks/ (a source checkout)")
    spec = importlib.util.spec_from_file_location("mps_model", script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main([str(results), "--commit-prefix", "dc13fd39", "--gpus", "1",
                     "--caps", "150", "--fills", "150"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "mps 40.75 s" in out and "rmixer@mps 39.25 s" in out
    assert "mps-rounds 39.0  intensity-desc 38.2  fill150 30.8" in out
