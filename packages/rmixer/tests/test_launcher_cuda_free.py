"""The job-start path never touches CUDA in a process that forks, and CUDA jobs are never
forked (the first H200 run failed every CUDA job with "Cannot re-initialize CUDA in forked
subprocess" because the zygote forked them after torch had set CUDA up)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import torch
from helpers import tiny_job

from rmixer.launcher import Launcher


def _ppid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _spec(tmp: Path, name: str, device: str) -> dict:
    return {"job_id": name, "device": device, "config": tiny_job(0)["config"], "iterations": 3,
            "threads": 1, "result_path": str(tmp / f"{name}.result.json"),
            "log_path": str(tmp / f"{name}.log"), "env": {"RMIXER_TEST_MARK": "1"}}  # fmt: skip


def _wait(handle, timeout: float = 90.0) -> dict:
    deadline = time.monotonic() + timeout
    while (res := handle.poll()) is None:
        assert time.monotonic() < deadline, f"job {handle.job_id} did not end in {timeout} s"
        time.sleep(0.05)
    return res


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="reads /proc (Linux)")
def test_job_start_never_touches_cuda_and_cuda_jobs_are_not_forked(tmp_path, monkeypatch):
    def forbidden(*_a, **_k):
        raise AssertionError("the launcher touched torch.cuda in the server process")

    for name in ("_lazy_init", "init", "is_available", "device_count", "mem_get_info",
                 "set_device", "is_initialized"):  # fmt: skip
        monkeypatch.setattr(torch.cuda, name, forbidden)
    if hasattr(torch._C, "_cuda_getDeviceCount"):
        monkeypatch.setattr(torch._C, "_cuda_getDeviceCount", forbidden)
    la = Launcher("zygote", spares=1)
    try:
        la.warm()
        la.prestart_cuda({"RMIXER_TEST_MARK": "1"}, wait=True)
        zygote = la._zygote.pid
        env = Path(f"/proc/{zygote}/environ").read_bytes().split(b"\0")
        assert b"CUDA_VISIBLE_DEVICES=" in env, "the zygote must be GPU-blind"
        cpu = la.start(_spec(tmp_path, "c", "cpu"), tmp_path / "c.spec.json")
        gpu = la.start(_spec(tmp_path, "g", "cuda:0"), tmp_path / "g.spec.json")
        cold = la.start(_spec(tmp_path, "g2", "cuda:0"), tmp_path / "g2.spec.json")
        # CUDA jobs: fresh interpreters started by us (a spare, then a cold start), not forks
        for h in (gpu, cold):
            assert h.popen is not None and _ppid(h.pid) == os.getpid() != zygote
            assert h.popen.args[1:3] == ["-m", "rmixer.worker"]
        res_cpu, res_gpu, res_cold = _wait(cpu), _wait(gpu), _wait(cold)
    finally:
        la.close()
    assert res_cpu["status"] == "done" and cpu.popen is None, res_cpu  # CPU: a cheap fork
    # the CUDA jobs ran their own code in their own process: done on a GPU machine, else
    # a CUDA error from the worker itself, never the fork error
    for res, h in ((res_gpu, gpu), (res_cold, cold)):
        assert res["pid"] == h.pid
        assert "forked subprocess" not in res.get("error", ""), res
        if not torch.backends.cuda.is_built():
            assert res["status"] == "error" and res["error"], res
    assert not la._spares and la._zygote is None


def test_drop_spares_ends_the_idle_cuda_workers():
    # The makespan benchmark drops them before it stops an MPS daemon: idle workers are its
    # clients, and the daemon does not quit while they live.
    la = Launcher("zygote", spares=2)
    try:
        la.prestart_cuda({"RMIXER_TEST_MARK": "1"}, wait=True)
        procs = [p for ps in la._spares.values() for p in ps]
        assert len(procs) == 2 and all(p.poll() is None for p in procs)
        assert la.drop_spares() == 2
        assert all(p.poll() is not None for p in procs) and not la._spares
        assert la.drop_spares() == 0
    finally:
        la.close()
