"""The scheduler with real job processes on the CPU: crashes, OOM retries, cancel, batch
mode and recovery after a restart."""

from __future__ import annotations

import os
import signal
import time

from helpers import events_of, finish, make_scheduler, tiny_job

from rmixer.configs import config_key
from rmixer.knowledge import Knowledge
from rmixer.memory import estimate
from rmixer.policies import Placement, Policy


def wait_for(cond, timeout=60.0, sched=None):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        if sched is not None:
            sched.step()
        time.sleep(0.01)


def test_crashing_jobs_are_reported_and_the_rest_go_on(tmp_path, launcher, reap):
    s = make_scheduler(tmp_path, launcher)
    bad = tiny_job(0, lr=1e30)  # diverges: the worker raises on the NaN loss
    long = tiny_job(1, iterations=10**7)
    _, ids = s.submit([tiny_job(i) for i in range(4)] + [bad, long])
    wait_for(lambda: s.store.get(ids[5])["state"] == "running", sched=s)
    victim = s.store.get(ids[5])
    reap.append((victim["pid"], victim["pid_start"]))
    os.kill(victim["pid"], signal.SIGKILL)  # a job that dies without a word
    s.run_until_idle(timeout=120)
    finish(s)
    rows = {j["id"]: j for j in s.store.list()}
    assert [rows[i]["state"] for i in ids[:4]] == ["done"] * 4
    assert rows[ids[4]]["state"] == "failed" and "diverged" in rows[ids[4]]["error"]
    assert rows[ids[5]]["state"] == "failed" and "without a result" in rows[ids[5]]["error"]
    assert all(d.reserved_mb == d.baseline_mb and not d.running for d in s.devices)
    ends = {e["job"]: e["state"] for e in events_of(s, "job_end")}
    assert ends[ids[4]] == ends[ids[5]] == "failed"
    for e in s.events.kept:  # millisecond timestamps
        assert round(e["ts"], 3) == e["ts"] and len(e["time"].split(".")[1]) == 3


def test_a_config_that_cannot_build_fails_alone(tmp_path, launcher):
    s = make_scheduler(tmp_path, launcher)
    _, ids = s.submit([tiny_job(0, embedding_dim=4), tiny_job(1)])  # DLRM: bottom_mlp ends in 8
    s.run_until_idle(timeout=60)
    finish(s)
    bad, good = (s.store.get(i) for i in ids)
    assert bad["state"] == "failed" and "dot interaction" in bad["error"]
    assert good["state"] == "done"


def test_out_of_memory_is_retried_elsewhere_then_reported(tmp_path, launcher):
    huge = tiny_job(0, rows=2**36)  # 2 TiB of tables: the allocation fails at once
    cfg = huge["config"]
    # a profile that badly underestimates this job, as a stale cache might
    k = Knowledge({})
    for kind in ("cpu",):
        k.put(kind, {"key": config_key(cfg), "model": "dlrm", "iter_s": 0.001, "setup_s": 0.1,
                     "peak_mb": 100.0, "correction": 100.0 / estimate(cfg, kind).total_mb,
                     "intensity": 1.0, "klass": "low"})  # fmt: skip
    s = make_scheduler(tmp_path, launcher, knowledge=k, cpu_slots=1)
    _, ids = s.submit([huge, tiny_job(1), tiny_job(2)])
    s.run_until_idle(timeout=120)
    finish(s)
    job = s.store.get(ids[0])
    ooms = events_of(s, "job_oom")
    assert job["state"] == "failed" and "out of memory on 3 attempts" in job["error"]
    assert [o["device"] for o in ooms][:2] == ["gpu-cpu:0", "cpu"]  # retried elsewhere
    assert ooms[0]["mem_bump"] == 1.5 and ooms[0]["exclude"] == ["gpu-cpu:0"]
    assert len(job["history"]) == 3 and job["attempts"] == 3
    assert [s.store.get(i)["state"] for i in ids[1:]] == ["done", "done"]


def test_cancel_queued_and_running(tmp_path, launcher, reap):
    s = make_scheduler(tmp_path, launcher, policy="monolithic", cpu_slots=0)
    _, ids = s.submit([tiny_job(0, iterations=10**7), tiny_job(1)])
    wait_for(lambda: s.store.get(ids[0])["state"] == "running", sched=s)
    j = s.store.get(ids[0])
    reap.append((j["pid"], j["pid_start"]))
    assert s.cancel(ids[1])["state"] == "cancelled"  # still queued behind the first
    assert s.cancel(ids[0])["state"] == "cancelled"
    s.run_until_idle(timeout=60)
    finish(s)
    assert [s.store.get(i)["state"] for i in ids] == ["cancelled", "cancelled"]
    assert [e["job"] for e in events_of(s, "job_start")] == [ids[0]]
    assert not s.devices[0].running


def test_batch_mode_runs_one_submission_at_a_time(tmp_path, launcher):
    s = make_scheduler(tmp_path, launcher, mode="batch", cpu_slots=0)
    _, first = s.submit([tiny_job(i, iterations=30) for i in range(3)])
    _, second = s.submit([tiny_job(i) for i in range(2)])
    s.run_until_idle(timeout=120)
    finish(s)
    ends = {e["job"]: e for e in events_of(s, "job_end")}
    starts = {e["job"]: e for e in events_of(s, "job_start")}
    assert min(starts[i]["ts"] for i in second) >= max(ends[i]["ts"] for i in first)


def test_restart_reattaches_live_workers_and_requeues_the_rest(tmp_path, launcher, reap):
    a = make_scheduler(tmp_path, launcher, cpu_slots=0)
    _, ids = a.submit([tiny_job(0, iterations=400), tiny_job(1, iterations=400), tiny_job(2),
                       tiny_job(3)])  # fmt: skip
    wait_for(lambda: a.store.counts()["running"] == 2, sched=a)
    running = a.store.list(state="running")
    reap.extend((j["pid"], j["pid_start"]) for j in running)
    finish(a)  # the server goes away; its workers keep running
    # a third job "was running" under a worker that is gone
    a.store.update(ids[3], state="running", device="gpu-cpu:0", pid=2**22 + 7, pid_start="1")
    b = make_scheduler(tmp_path, launcher, cpu_slots=0, store=a.store)
    rec = b.recover()
    assert sorted(rec["reattached"] + rec["collected"]) == sorted(j["id"] for j in running)
    assert rec["requeued"] == [ids[3]] and ids[2] in rec["queued"]
    b.run_until_idle(timeout=120)
    finish(b)
    assert [b.store.get(i)["state"] for i in ids] == ["done"] * 4
    assert events_of(b, "recovered") and events_of(b, "job_requeued")


def test_cpu_jobs_teach_the_corun_slowdown_and_it_is_saved(tmp_path, launcher):
    """A CPU job that runs slower than its (here absurdly fast) profile raises the CPU's
    co-run slowdown, which the CPU gate then applies; it is saved with the profiles."""
    jobs = [tiny_job(i) for i in range(8)]  # enough GPU work left for the gate to let one go
    k = Knowledge({}, tmp_path / "profiles.json")
    for j in jobs:
        cfg = j["config"]
        k.put("cpu", {"key": config_key(cfg), "model": cfg["model"], "iter_s": 1e-6,
                      "setup_s": 1e-6, "peak_mb": 100.0,
                      "correction": 100.0 / estimate(cfg, "cpu").total_mb,
                      "intensity": 1.0, "klass": "low"})  # fmt: skip
    # learning only: the rescue is off, so every CPU job finishes where it was placed
    s = make_scheduler(tmp_path, launcher, policy="sequential", gpu_slots=1, cpu_slots=1,
                       knowledge=k, cpu_rescue=0.0)  # fmt: skip
    assert k.corun_slowdown("cpu") == 1.0
    _, ids = s.submit(jobs)
    s.run_until_idle(timeout=120)
    finish(s)
    on_cpu = [i for i in ids if s.store.get(i)["device"] == "cpu"]
    assert on_cpu and all(s.store.get(i)["state"] == "done" for i in ids)
    ratios = k.entries["corun/cpu"]["ratios"]
    assert len(ratios) == len(on_cpu) and min(ratios) > 10  # ms-long jobs vs a 10 us profile
    assert k.corun_slowdown("cpu") > 10
    assert Knowledge.load(tmp_path / "profiles.json").corun_slowdown("cpu") == k.corun_slowdown(
        "cpu"
    )
    learned = events_of(s, "corun_slowdown")
    assert learned and learned[0]["before"] == 1.0 and learned[0]["after"] > 10


def test_under_mps_the_scheduler_uses_the_fill_rule_end_to_end(tmp_path, launcher):
    """With MPS in the jobs' environment the scheduler tells the policy (Context.mps), dyMix
    places by the fill rule, and real CPU jobs (which ignore the variable) all finish."""
    from helpers import OPEN_STORES

    from rmixer.devices import build_devices
    from rmixer.events import EventLog
    from rmixer.policies import make_policy
    from rmixer.scheduler import Scheduler
    from rmixer.store import Store

    store = Store(tmp_path / "jobs.db")
    OPEN_STORES.append(store)
    policy = make_policy("rmixer")
    filled = []
    real_fill = policy.fill
    policy.fill = lambda order, dev, ctx: filled.append(ctx.mps) or real_fill(order, dev, ctx)
    devices = build_devices([], 2, 0, cpu_as_gpu=1, gpu_memory_mb=4000)
    s = Scheduler(store, devices, policy, Knowledge({}),
                  EventLog(tmp_path / "events.jsonl", keep=True), tmp_path, launcher=launcher,
                  cpu_threads=1, poll_s=0.01,
                  job_env={"CUDA_MPS_PIPE_DIRECTORY": str(tmp_path / "pipe")})  # fmt: skip
    assert s.mps
    _, ids = s.submit([tiny_job(i) for i in range(4)])
    s.run_until_idle(timeout=120)
    finish(s)
    assert [s.store.get(i)["state"] for i in ids] == ["done"] * 4
    assert filled and all(filled)  # every GPU placement went through the fill rule


class CpuFirst(Policy):
    """A policy for the rescue tests: every job to the CPU when it may go there, else a GPU."""

    name = "cpu-first"

    def pick(self, ctx):
        for job in ctx.pending:
            for dev in [*ctx.cpus, *ctx.gpus]:
                if self.can_take(job, dev, ctx):
                    return Placement(job, dev)
        return None


def _rescue_scheduler(tmp_path, launcher, job, **kw):
    from helpers import OPEN_STORES

    from rmixer.devices import build_devices
    from rmixer.events import EventLog
    from rmixer.scheduler import Scheduler
    from rmixer.store import Store

    cfg = job["config"]
    k = Knowledge({}, tmp_path / "profiles.json")
    k.put("cpu", {"key": config_key(cfg), "model": cfg["model"], "iter_s": 1e-6, "setup_s": 1e-6,
                  "peak_mb": 100.0, "correction": 100.0 / estimate(cfg, "cpu").total_mb,
                  "intensity": 1.0, "klass": "low"})  # fmt: skip
    store = Store(tmp_path / "jobs.db")
    OPEN_STORES.append(store)
    devices = build_devices([], 1, 1, cpu_as_gpu=1, gpu_memory_mb=4000)
    return Scheduler(store, devices, CpuFirst(), k,
                     EventLog(tmp_path / "events.jsonl", keep=True), tmp_path, launcher=launcher,
                     cpu_threads=1, poll_s=0.01, **kw)  # fmt: skip


def test_a_cpu_job_far_behind_its_prediction_moves_to_a_gpu(tmp_path, launcher):
    """A CPU job past 4x its (absurdly fast) CPU profile, and past the minimum, is stopped
    and re-queued barred from the CPU; it finishes on a GPU, and its time so far has already
    taught the co-run slowdown (saved with the profiles)."""
    job = tiny_job(0, iterations=2000)  # seconds on one thread; the profile says 2 ms
    s = _rescue_scheduler(tmp_path, launcher, job, cpu_rescue=4.0, cpu_rescue_min_s=0.3)
    _, (jid,) = s.submit([job])
    s.run_until_idle(timeout=120)
    finish(s)
    row = s.store.get(jid)
    assert row["state"] == "done" and row["device"] == "gpu-cpu:0"
    assert row["exclude"] == ["cpu"] and row["attempts"] == 2
    assert [h["status"] for h in row["history"]] == ["rescued"]
    (moved,) = events_of(s, "job_rescued")
    assert moved["job"] == jid and moved["device"] == "cpu" and moved["elapsed_s"] >= 0.3
    (ratio,) = s.knowledge.entries["corun/cpu"]["ratios"]
    assert ratio >= 0.3 / 0.0021  # elapsed over the 2 ms prediction: a lower bound
    assert Knowledge.load(tmp_path / "profiles.json").corun_slowdown("cpu") == ratio
    (end,) = events_of(s, "job_end")
    assert end["device"] == "gpu-cpu:0" and end["state"] == "done"
    assert all(d.reserved_mb == d.baseline_mb and not d.running for d in s.devices)


def test_cpu_rescue_off_lets_the_cpu_job_finish_there(tmp_path, launcher):
    job = tiny_job(0, iterations=200)
    s = _rescue_scheduler(tmp_path, launcher, job, cpu_rescue=0.0, cpu_rescue_min_s=0.0)
    _, (jid,) = s.submit([job])
    s.run_until_idle(timeout=120)
    finish(s)
    row = s.store.get(jid)
    assert row["state"] == "done" and row["device"] == "cpu" and row["attempts"] == 1
    assert not events_of(s, "job_rescued")


def test_cpu_rescue_rejects_negative_settings(tmp_path, launcher):
    import pytest

    from rmixer.devices import build_devices
    from rmixer.events import EventLog
    from rmixer.scheduler import Scheduler

    devices = build_devices([], 1, 1, cpu_as_gpu=1, gpu_memory_mb=4000)
    for kw in ({"cpu_rescue": -1.0}, {"cpu_rescue_min_s": -0.5}):
        with pytest.raises(ValueError, match="cpu_rescue: expected >= 0"):
            Scheduler(None, devices, CpuFirst(), Knowledge({}), EventLog(None), tmp_path,
                      launcher=launcher, **kw)  # fmt: skip
