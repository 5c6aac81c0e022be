"""Toy job requests and a scheduler factory for tests."""

from __future__ import annotations

from pathlib import Path

from rmixer.configs import load, normalize
from rmixer.devices import build_devices
from rmixer.events import EventLog
from rmixer.knowledge import Knowledge
from rmixer.policies import make_policy
from rmixer.scheduler import Scheduler
from rmixer.store import Store

OPEN_STORES: list[Store] = []  # closed after each test by conftest
KINDS = ("tiny_dlrm", "tiny_dcn", "tiny_deepfm", "tiny_widedeep", "tiny_din")


def tiny_job(i: int = 0, iterations: int = 10, **config) -> dict:
    """A toy job request (milliseconds per iteration on one CPU thread)."""
    cfg, _ = load(KINDS[i % len(KINDS)])
    cfg = normalize({**cfg, **config}, "test") if config else cfg
    return {"name": f"t{i}", "model": cfg["model"], "config": cfg, "iterations": iterations,
            "source": "test"}  # fmt: skip


def make_scheduler(work: Path, launcher, policy="rmixer", gpu_slots=2, cpu_slots=1,
                   knowledge=None, mode="online", store=None, **kw) -> Scheduler:  # fmt: skip
    devices = build_devices([], gpu_slots, cpu_slots, cpu_as_gpu=1, gpu_memory_mb=4000)
    if store is None:
        store = Store(work / "jobs.db")
        OPEN_STORES.append(store)
    return Scheduler(store, devices, make_policy(policy),
                     knowledge or Knowledge({}), EventLog(work / "events.jsonl", keep=True), work,
                     launcher=launcher, mode=mode, cpu_threads=1, poll_s=0.01, **kw)  # fmt: skip


def events_of(sched: Scheduler, name: str) -> list[dict]:
    return [e for e in sched.events.kept if e["event"] == name]


def finish(sched: Scheduler) -> None:
    """Stop the loop (leaving the shared launcher up) and close the event log."""
    sched.stop(close_launcher=False)
    sched.events.close()
