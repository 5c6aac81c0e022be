"""GPU paths: profiling on CUDA, live memory readings, jobs on cuda:i, a real CUDA OOM
retried and reported, the MPS daemon. Skipped without a GPU."""

from __future__ import annotations

import pytest
import torch
from helpers import events_of, finish, tiny_job

from rmixer.configs import config_key, load
from rmixer.devices import GpuMemoryReader, build_devices
from rmixer.events import EventLog
from rmixer.knowledge import Knowledge
from rmixer.memory import estimate
from rmixer.mps import MpsDaemon, MpsError
from rmixer.policies import make_policy
from rmixer.profile import profile_all
from rmixer.scheduler import Scheduler
from rmixer.store import Store

pytestmark = pytest.mark.gpu


def test_memory_reader_agrees_with_torch():
    r = GpuMemoryReader()
    assert r.source in ("nvml", "nvidia-smi", "torch")
    used, total = r.read(0)
    assert total == pytest.approx(
        torch.cuda.get_device_properties(0).total_memory / 2**20, rel=0.05
    )
    assert 0 <= used <= total


def test_profile_on_cuda_measures_intensity_and_memory(tmp_path, launcher):
    k = Knowledge({}, tmp_path / "p.json")
    configs = {}
    for name in ("dcn_small", "dcn_wide"):
        cfg, _ = load(name)
        configs[config_key(cfg)] = cfg
    entries, errors = profile_all(configs, ["cuda:0"], k, iterations=10, progress=False,
                                  launcher=launcher)  # fmt: skip
    assert not errors and len(entries) == 2
    by = {e["config"]["batch_size"]: e for e in entries}
    for e in entries:
        assert e["intensity_source"] in ("cuda-kernels", "nvml")
        assert 0 < e["intensity"] <= 100 and e["iter_s"] > 0
        assert e["peak_mb"] > 0 and e["correction"] == pytest.approx(
            e["peak_mb"] / e["analytic_mb"]
        )
    assert by[2048]["intensity"] > by[256]["intensity"]  # the big MLPs keep the GPU busier
    # the context size varies with driver and lazy loading (run 2, H200: dcn_small 86 MB in
    # all), so no absolute floor; what the wider config adds must match the analytic growth
    small, wide = (estimate(by[b]["config"], "cuda") for b in (256, 2048))
    grown = wide.total_mb - small.total_mb
    assert 0.5 < (by[2048]["peak_mb"] - by[256]["peak_mb"]) / grown < 3, (by, grown)
    print({e["key"]: (round(e["intensity"], 1), round(e["peak_mb"]), e["klass"]) for e in entries})


def test_jobs_run_on_the_gpu_and_the_cpu(tmp_path, launcher):
    reader = GpuMemoryReader()
    devices = build_devices([0], 2, 1, reader=reader)
    store = Store(tmp_path / "jobs.db")
    s = Scheduler(store, devices, make_policy("sequential"), Knowledge({}),
                  EventLog(tmp_path / "e.jsonl", keep=True), tmp_path, launcher=launcher,
                  reader=reader, cpu_threads=2)  # fmt: skip
    _, ids = s.submit([tiny_job(i, iterations=50) for i in range(5)])
    s.run_until_idle(timeout=300)
    finish(s)
    assert [store.get(i)["state"] for i in ids] == ["done"] * 5
    ends = events_of(s, "job_end")
    assert {e["device"] for e in ends} <= {"cuda:0", "cpu"} and any(
        e["device"] == "cuda:0" for e in ends
    )
    assert all(e["peak_mb"] > 0 for e in ends)
    assert s.peak_live_mb.get("cuda:0", 0) > 0
    store.close()


def test_a_real_cuda_oom_is_retried_and_reported(tmp_path, launcher):
    total_mb = torch.cuda.get_device_properties(0).total_memory / 2**20
    rows = int(total_mb * 2**20 / (8 * 4) * 1.5)  # tables 1.5x the GPU
    job = tiny_job(0, rows=rows, num_tables=1)
    cfg = job["config"]
    k = Knowledge({})
    k.put("cuda", {"key": config_key(cfg), "model": "dlrm", "iter_s": 0.001, "setup_s": 0.1,
                   "peak_mb": 100.0, "correction": 100.0 / estimate(cfg, "cuda").total_mb,
                   "intensity": 1.0, "klass": "low"})  # a stale, far too low profile  # fmt: skip
    devices = build_devices([0], 2, 0)
    store = Store(tmp_path / "jobs.db")
    s = Scheduler(store, devices, make_policy("rmixer"), k, EventLog(tmp_path / "e.jsonl", keep=True),
                  tmp_path, launcher=launcher)  # fmt: skip
    _, ids = s.submit([job, tiny_job(1)])
    s.run_until_idle(timeout=300)
    finish(s)
    bad = store.get(ids[0])
    assert bad["state"] == "failed" and "out of memory" in bad["error"]
    assert events_of(s, "job_oom") and events_of(s, "job_oom")[0]["device"] == "cuda:0"
    assert store.get(ids[1])["state"] == "done"
    store.close()


def test_mps_daemon_starts_and_stops_or_says_why(tmp_path):
    d = MpsDaemon(tmp_path / "mps")
    try:
        env = d.start()
    except MpsError as exc:
        pytest.skip(f"MPS unavailable here: {exc}")
    try:
        assert d.running() and env["CUDA_MPS_PIPE_DIRECTORY"].startswith(str(tmp_path))
    finally:
        d.stop()
    assert not d.running()
