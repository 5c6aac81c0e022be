"""The dispatch loop: queued jobs in, placements out, results collected, nothing lost.

:class:`Scheduler` owns the devices' bookkeeping and the running processes; the job table
lives in :class:`~rmixer.store.Store`. Each :meth:`Scheduler.step` collects finished
processes (done, out of memory -> re-queued on another device with a larger estimate, crashed
-> failed with its error), moves CPU jobs far behind their prediction back to the queue for a
GPU (:meth:`Scheduler._rescue_cpu_stragglers`), refreshes live GPU memory, then asks the
policy for placements until it has none. The server runs ``step`` in a thread; the benchmark calls
:meth:`run_until_idle`.

Online mode considers every queued job; batch mode (the artifact's) runs one submission at a
time, the next starting when the previous has finished.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

from rmixer import constants
from rmixer.configs import config_key
from rmixer.devices import Device, GpuMemoryReader
from rmixer.events import EventLog
from rmixer.knowledge import Knowledge
from rmixer.launcher import Handle, Launcher, pid_alive
from rmixer.policies import Context, PendingJob, Policy
from rmixer.store import TERMINAL, Store

MODES = ("online", "batch")


class Scheduler:
    """See the module docstring. ``workdir`` holds per-job specs, results and logs."""

    def __init__(
        self,
        store: Store,
        devices: list[Device],
        policy: Policy,
        knowledge: Knowledge,
        events: EventLog,
        workdir: str | os.PathLike,
        *,
        launcher: Launcher | None = None,
        mode: str = "online",
        margin: float = constants.MEMORY_MARGIN,
        beta: float = constants.DEFAULT_BETA,
        cpu_threads: int | None = None,
        gpu_threads: int = 1,
        job_env: dict | None = None,
        reader: GpuMemoryReader | None = None,
        poll_s: float = constants.POLL_S,
        cpu_rescue: float = constants.CPU_RESCUE_FACTOR,
        cpu_rescue_min_s: float = constants.CPU_RESCUE_MIN_S,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode: expected one of {MODES}, got {mode!r}")
        if margin < 1.0:
            raise ValueError(
                f"margin: expected >= 1.0 (reserve at least the estimate), got {margin}"
            )
        if beta < 0:
            raise ValueError(f"beta: expected >= 0, got {beta}")
        if cpu_rescue < 0 or cpu_rescue_min_s < 0:
            raise ValueError(
                f"cpu_rescue: expected >= 0 (0: never), got {cpu_rescue} "
                f"(minimum {cpu_rescue_min_s} s)"
            )
        self.store, self.devices, self.policy = store, devices, policy
        self.knowledge, self.events = knowledge, events
        self.workdir = Path(workdir)
        (self.workdir / "jobs").mkdir(parents=True, exist_ok=True)
        self.launcher = launcher or Launcher()
        self.mode, self.margin, self.beta, self.poll_s = mode, margin, beta, poll_s
        self.cpu_rescue, self.cpu_rescue_min_s = cpu_rescue, cpu_rescue_min_s
        gpu_slots = sum(d.slots for d in devices if d.kind == "gpu")
        cpu_slots = sum(d.slots for d in devices if d.kind == "cpu")
        cores = os.cpu_count() or 1
        self.cpu_threads = cpu_threads or max(1, (cores - gpu_slots) // max(1, cpu_slots))
        self.gpu_threads = gpu_threads
        self.job_env = dict(job_env or {})
        self.mps = "CUDA_MPS_PIPE_DIRECTORY" in self.job_env  # GPU jobs run as MPS clients
        self.reader = reader
        self._reader_thread: threading.Thread | None = None
        self._latest: dict[str, float | None] = {}
        self.peak_live_mb: dict[str, float] = {}  # highest live reading per GPU
        self._handles: dict[int, Handle] = {}
        self._views: dict[int, PendingJob] = {}
        self._epoch: set[int] = set()
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.device_by_name = {d.name: d for d in devices}

    # ------------------------------------------------------------------ paths
    def job_paths(self, job_id: int) -> dict[str, Path]:
        base = self.workdir / "jobs"
        return {"spec": base / f"{job_id}.spec.json", "result": base / f"{job_id}.result.json",
                "log": base / f"{job_id}.log"}  # fmt: skip

    # ------------------------------------------------------------------ API used by the server
    def submit(self, jobs: list[dict]) -> tuple[int, list[int]]:
        batch, ids = self.store.submit(jobs)
        for jid, j in zip(ids, jobs):
            self.events.emit("job_submitted", job=jid, batch=batch, name=j["name"],
                             model=j["model"], iterations=j["iterations"], source=j.get("source"))  # fmt: skip
        self._wake.set()
        return batch, ids

    def cancel(self, job_id: int) -> dict:
        """Cancel a queued or running job; returns the job row (unchanged when terminal)."""
        with self._lock:
            job = self.store.get(job_id)
            if job is None:
                raise KeyError(job_id)
            if job["state"] in TERMINAL:
                return job
            self.store.update(job_id, state="cancelled", finished_at=time.time())
            handle = self._handles.get(job_id)
            if handle is not None:
                handle.terminate()
            self.events.emit("job_cancelled", job=job_id, name=job["name"], was=job["state"],
                             device=job["device"])  # fmt: skip
        self._wake.set()
        return self.store.get(job_id)

    def status(self) -> dict:
        with self._lock:
            return {"policy": self.policy.name, "mode": self.mode, "margin": self.margin,
                    "beta": self.beta, "devices": [d.snapshot() for d in self.devices],
                    "jobs": self.store.counts(), "launcher": self.launcher.mode,
                    "memory_reader": self.reader.source if self.reader else "none"}  # fmt: skip

    # ------------------------------------------------------------------ recovery
    def recover(self) -> dict:
        """After a restart: re-attach live workers, collect results of those that ended
        while the server was down, re-queue the rest. Logs one event per job."""
        out = {"reattached": [], "collected": [], "requeued": [], "queued": []}
        with self._lock:
            for job in self.store.list(state="running"):
                jid, dev = job["id"], self.device_by_name.get(job["device"] or "")
                paths = self.job_paths(jid)
                alive = job["pid"] is not None and pid_alive(job["pid"], job["pid_start"])
                if alive and dev is not None and dev.free_slots > 0:
                    handle = self.launcher.attach(
                        jid, job["pid"], job["pid_start"], paths["result"]
                    )
                    view = self._view(job)
                    dev.reserve(jid, view.mem_on(dev), view.intensity, view.klass, self.margin)
                    self._handles[jid] = handle
                    self._epoch.add(jid)
                    out["reattached"].append(jid)
                    self.events.emit("job_reattached", job=jid, name=job["name"], pid=job["pid"],
                                     device=dev.name)  # fmt: skip
                    continue
                if alive:  # its device is gone from this server's configuration
                    Handle(jid, job["pid"], job["pid_start"], paths["result"]).terminate()
                if paths["result"].exists() and not alive:
                    dummy = Handle(jid, job["pid"] or -1, job["pid_start"], paths["result"])
                    self._finish(job, dummy.poll(), dev, collected=True)
                    out["collected"].append(jid)
                    continue
                self.store.update(jid, state="queued", device=None, pid=None, pid_start=None)
                out["requeued"].append(jid)
                self.events.emit("job_requeued", job=jid, name=job["name"],
                                 reason="its worker is gone after a server restart"
                                 if not alive else f"device {job['device']} is not configured")  # fmt: skip
            out["queued"] = [j["id"] for j in self.store.list(state="queued")]
        self.events.emit("recovered", **{k: v for k, v in out.items()})
        return out

    # ------------------------------------------------------------------ the loop
    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="rmixer-scheduler", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.step()
            except Exception as exc:  # log and keep scheduling
                self.events.emit("scheduler_error", error=f"{type(exc).__name__}: {exc}")
            self._wake.wait(self.poll_s)
            self._wake.clear()

    def stop(self, stop_jobs: bool = False, close_launcher: bool = True) -> None:
        """Stop the loop; with ``stop_jobs`` terminate running jobs and re-queue them, else
        leave them running for the next server to re-attach."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        with self._lock:
            if stop_jobs:
                for jid, h in list(self._handles.items()):
                    h.terminate()
                    self.store.update(jid, state="queued", device=None, pid=None, pid_start=None)
                    self.events.emit("job_requeued", job=jid, reason="server stopped its jobs")
                self._handles.clear()
        if close_launcher:
            self.launcher.close()

    def idle(self) -> bool:
        with self._lock:
            c = self.store.counts()
            return c["queued"] == 0 and c["running"] == 0 and not self._handles

    def run_until_idle(self, timeout: float = 3600.0) -> None:
        """Step until no job is queued or running (the benchmark's driver)."""
        deadline = time.monotonic() + timeout
        while not self.idle():
            if time.monotonic() > deadline:
                raise TimeoutError(f"jobs still queued or running after {timeout} s")
            self.step()
            time.sleep(self.poll_s)

    def step(self) -> list[tuple[int, str]]:
        """Collect finished jobs, then place what the policy picks; returns the placements."""
        with self._lock:
            self._reap()
            self._rescue_cpu_stragglers()
            self._refresh_live()
            return self._place()

    # ------------------------------------------------------------------ internals
    def _view(self, job: dict) -> PendingJob:
        v = self._views.get(job["id"])
        gpu_kind = next((d.knowledge_kind for d in self.devices if d.kind == "gpu"), "cpu")
        if v is None:
            cfg = job["config"]
            gpu = self.knowledge.info(cfg, gpu_kind)
            cpu = self.knowledge.info(cfg, "cpu")
            v = PendingJob(job["id"], job["id"], job["name"], job["iterations"], gpu, cpu)
            self._views[job["id"]] = v
            if gpu.source != "profile":
                self.events.emit("job_unprofiled", job=job["id"], name=job["name"], key=gpu.key,
                                 knowledge=gpu.source, hint="run python -m rmixer.profile")  # fmt: skip
        v.mem_bump = job["mem_bump"]
        v.exclude = frozenset(job["exclude"])
        return v

    def _read_all(self) -> dict[str, float | None]:
        out = {}
        for d in self.devices:
            if d.run_on.startswith("cuda"):
                reading = self.reader.read(int(d.run_on.split(":")[1]))
                out[d.name] = None if reading is None else reading[0]
        return out

    def _reader_loop(self) -> None:
        """Slow readers (nvidia-smi: tens of ms a call) run here, every 0.5 s, so the
        scheduling loop never waits on them."""
        while not self._stop.wait(0.5):
            self._latest = self._read_all()

    def _refresh_live(self) -> None:
        if self.reader is None or not any(d.run_on.startswith("cuda") for d in self.devices):
            return
        if self.reader.source == "nvml":  # microseconds: read every step
            latest = self._read_all()
        else:
            if self._reader_thread is None:
                self._latest = self._read_all()
                self._reader_thread = threading.Thread(target=self._reader_loop, daemon=True,
                                                       name="rmixer-memory-reader")  # fmt: skip
                self._reader_thread.start()
            latest = self._latest
        for d in self.devices:
            if d.name in latest:
                d.live_used_mb = latest[d.name]
                if d.live_used_mb is not None:
                    self.peak_live_mb[d.name] = max(self.peak_live_mb.get(d.name, 0.0),
                                                    d.live_used_mb)  # fmt: skip

    def _active_jobs(self) -> tuple[list[dict], list[int], int]:
        """(queued jobs eligible now, epoch ids, finished in the epoch)."""
        queued = self.store.list(state="queued")
        if self.mode == "batch":
            open_batches = sorted({j["batch"] for j in self.store.list(state="running")} |
                                  {j["batch"] for j in queued})  # fmt: skip
            if not open_batches:
                return [], [], 0
            batch = open_batches[0]
            members = [j for j in self.store.list(batch=batch) if j["state"] != "cancelled"]
            eligible = [j for j in queued if j["batch"] == batch]
            finished = sum(j["state"] in TERMINAL for j in members)
            return eligible, [j["id"] for j in members], finished
        if not queued and not self._handles:
            self._epoch.clear()
            return [], [], 0
        self._epoch.update(j["id"] for j in queued)
        rows = {j["id"]: j for j in self.store.list() if j["id"] in self._epoch}
        epoch = [i for i in self._epoch if rows.get(i, {}).get("state") != "cancelled"]
        finished = sum(rows[i]["state"] in TERMINAL for i in epoch if i in rows)
        return queued, epoch, finished

    def _place(self) -> list[tuple[int, str]]:
        queued, epoch_ids, finished = self._active_jobs()
        if not queued:
            return []
        views = []
        for job in queued:
            try:
                v = self._view(job)
            except Exception as exc:  # a config that cannot even build its model
                msg = f"cannot build the model: {type(exc).__name__}: {exc}"
                self.store.update(job["id"], state="failed", error=msg, finished_at=time.time())
                self.events.emit("job_failed", job=job["id"], name=job["name"], error=msg)
                continue
            if self._fail_if_impossible(job, v):
                continue
            views.append(v)
        epoch = []
        for jid in epoch_ids:
            v = self._views.get(jid)
            if v is None:
                row = self.store.get(jid)
                try:
                    v = self._view(row) if row else None
                except Exception:  # failed above; it counts among the finished
                    v = None
            if v is not None:
                epoch.append((v.intensity, v.seq, v.id))
        ctx = Context(views, self.devices, set(self._handles), epoch, finished, self.margin,
                      self.beta, self.knowledge.corun_slowdown("cpu"), self.mps)  # fmt: skip
        placed = []
        while ctx.pending:
            choice = self.policy.pick(ctx)
            if choice is None:
                break
            job = self.store.get(choice.job.id)
            ok = self._dispatch(job, choice.job, choice.device)
            ctx.pending = [p for p in ctx.pending if p.id != choice.job.id]
            ctx.running = set(self._handles)
            if ok:
                placed.append((choice.job.id, choice.device.name))
        return placed

    def _usable(self, v: PendingJob, kind: str | None = None) -> list[Device]:
        """Devices (of ``kind``, when given) this policy uses that ``v`` is not barred from."""
        return [d for d in self.devices if self.policy.slots(d) > 0 and d.name not in v.exclude
                and kind in (None, d.kind)]  # fmt: skip

    def _could_hold(self, v: PendingJob, d: Device) -> bool:
        """``v`` fits on ``d`` when nothing else runs there."""
        return self.margin * v.mem_on(d) <= d.total_mb - d.baseline_mb

    def _fail_if_impossible(self, job: dict, v: PendingJob) -> bool:
        usable = self._usable(v)
        if any(self._could_hold(v, d) for d in usable):
            return False
        need = {d.name: round(self.margin * v.mem_on(d)) for d in usable}
        room = {d.name: round(d.total_mb - d.baseline_mb) for d in usable}
        msg = (f"does not fit on any device this policy uses: needs {need} MB "
               f"(estimate x {self.margin}), devices offer {room} MB")  # fmt: skip
        self.store.update(job["id"], state="failed", error=msg, finished_at=time.time())
        self.events.emit("job_failed", job=job["id"], name=job["name"], error=msg)
        return True

    def _dispatch(self, job: dict, v: PendingJob, dev: Device) -> bool:
        jid = job["id"]
        info = v.info_on(dev)
        reserved = dev.reserve(jid, v.mem_on(dev), v.intensity, v.klass, self.margin)
        paths = self.job_paths(jid)
        spec = {
            "job_id": jid, "device": dev.run_on, "config": job["config"],
            "iterations": job["iterations"], "seed": jid, "result_path": str(paths["result"]),
            "log_path": str(paths["log"]), "env": self.job_env,
            "threads": self.cpu_threads if dev.run_on == "cpu" else self.gpu_threads,
        }  # fmt: skip
        now = time.time()  # the dispatch: before the launcher hands the spec to a worker
        try:
            handle = self.launcher.start(spec, paths["spec"])
        except Exception as exc:  # reported as the job's failure
            dev.release(jid)
            msg = f"could not start the worker: {type(exc).__name__}: {exc}"
            self.store.update(jid, state="failed", error=msg, finished_at=time.time())
            self.events.emit("job_failed", job=jid, name=job["name"], error=msg)
            return False
        self._handles[jid] = handle
        self.store.update(jid, state="running", device=dev.name, pid=handle.pid,
                          pid_start=handle.pid_start, started_at=now,
                          attempts=job["attempts"] + 1, reserved_mb=reserved)  # fmt: skip
        self.events.emit(
            "job_start", job=jid, name=job["name"], model=job["model"], device=dev.name,
            pid=handle.pid, attempt=job["attempts"] + 1, mem_est_mb=round(info.mem_mb * v.mem_bump, 1),
            reserved_mb=round(reserved, 1), intensity=round(v.intensity, 2), klass=v.klass,
            knowledge=info.source, slots_in_use=len(dev.running), slots=dev.slots,
            dispatch_ts=round(now, 3),
        )  # fmt: skip
        return True

    def _reap(self) -> None:
        for jid, handle in list(self._handles.items()):
            result = handle.poll()
            if result is None:
                continue
            del self._handles[jid]
            job = self.store.get(jid)
            dev = self.device_by_name.get(job["device"] or "")
            self._finish(job, result, dev)

    def _finish(self, job: dict, result: dict, dev: Device | None, collected: bool = False) -> None:
        jid = job["id"]
        if dev is not None:
            dev.release(jid)
        self.policy.on_finish(jid)
        now = time.time()
        status = result.get("status", "error")
        base = {"job": jid, "name": job["name"], "model": job["model"], "device": job["device"],
                "key": config_key(job["config"]), "run_on": dev.run_on if dev else None,
                "attempt": job["attempts"], "t_dispatch": job["started_at"],
                "t_start": result.get("t_start"), "t_ready": result.get("t_ready"),
                "t_end": result.get("t_end", now), "peak_mb": result.get("peak_mb"),
                "iterations": job["iterations"], "collected_after_restart": collected}  # fmt: skip
        current = self.store.get(jid)
        if current["state"] == "cancelled":
            self.events.emit("job_end", **base, state="cancelled")
            return
        if status == "done":
            self.store.update(jid, state="done", finished_at=now, result=result)
            self.events.emit("job_end", **base, state="done")
            if dev is not None and dev.kind == "cpu":
                self._learn_corun(job, result)
            return
        if status == "oom":
            self._retry_oom(job, result, dev, base)
            return
        err = result.get("error") or "unknown error"
        self.store.update(jid, state="failed", finished_at=now, result=result, error=err)
        self.events.emit("job_end", **base, state="failed", error=err)

    def _learn_corun(self, job: dict, result: dict) -> None:
        """A CPU job finished: record how much slower than its profile it ran."""
        view = self._views.get(job["id"])
        t0, t1 = result.get("t_start"), result.get("t_end")
        if view is None or t0 is None or t1 is None:
            return
        self._record_cpu_corun(job["id"], t1 - t0, view.cpu.standalone_s(job["iterations"]))

    def _record_cpu_corun(self, job_id: int, observed_s: float, predicted_s: float | None) -> None:
        """One CPU job's observed against predicted time into the co-run slowdown, saved with
        the profiles when they came from a file."""
        before = self.knowledge.corun_slowdown("cpu")
        self.knowledge.record_corun("cpu", observed_s, predicted_s)
        after = self.knowledge.corun_slowdown("cpu")
        if after != before:
            self.events.emit("corun_slowdown", kind="cpu", before=round(before, 3),
                             after=round(after, 3), job=job_id)  # fmt: skip
        if self.knowledge.path is not None:
            try:
                self.knowledge.save()
            except OSError as exc:  # a read-only cache must not stop the scheduler
                self.events.emit("knowledge_not_saved", error=str(exc))

    def _rescue_cpu_stragglers(self) -> None:
        """Stop every CPU job that has run ``cpu_rescue`` x its predicted time (standalone
        profile x the co-run slowdown so far; at least ``cpu_rescue_min_s``) and re-queue it,
        barred from the CPU, when a GPU could hold it. Its time so far, a lower bound on its
        slowdown, is recorded at once, so the CPU gate stops sending more jobs there. Jobs
        without a CPU profile are left alone (nothing to compare with)."""
        if self.cpu_rescue <= 0:
            return
        now = time.time()
        slowdown = self.knowledge.corun_slowdown("cpu")
        on_cpu = [(jid, d) for d in self.devices if d.kind == "cpu" for jid in d.running]
        for jid, dev in on_cpu:
            handle, view = self._handles.get(jid), self._views.get(jid)
            job = self.store.get(jid) if handle is not None and view is not None else None
            if job is None or not job["started_at"]:
                continue
            predicted = view.cpu.standalone_s(job["iterations"])
            elapsed = now - job["started_at"]
            if not predicted or elapsed < max(self.cpu_rescue_min_s,
                                              self.cpu_rescue * predicted * slowdown):  # fmt: skip
                continue
            if not any(self._could_hold(view, d) for d in self._usable(view, "gpu")):
                continue  # the CPU is its only place: let it finish
            handle.terminate(signal.SIGKILL)
            del self._handles[jid]
            dev.release(jid)
            self.policy.on_finish(jid)
            exclude = sorted({*job["exclude"], dev.name})
            self.store.add_history(jid, {"device": dev.name, "status": "rescued", "at": now,
                                         "elapsed_s": round(elapsed, 3)})  # fmt: skip
            self.store.update(jid, state="queued", device=None, pid=None, pid_start=None,
                              exclude=exclude)  # fmt: skip
            self.events.emit("job_rescued", job=jid, name=job["name"], model=job["model"],
                             device=dev.name, elapsed_s=round(elapsed, 3),
                             predicted_s=round(predicted * slowdown, 3), exclude=exclude)  # fmt: skip
            self._record_cpu_corun(jid, elapsed, predicted)

    def _retry_oom(self, job: dict, result: dict, dev: Device | None, base: dict) -> None:
        jid = job["id"]
        self.store.add_history(jid, {"device": job["device"], "status": "oom",
                                     "error": result.get("error"), "at": time.time()})  # fmt: skip
        exclude = set(job["exclude"])
        others = [d for d in self.devices if self.policy.slots(d) > 0
                  and d.name not in exclude | {job["device"]}]  # fmt: skip
        if others and job["device"]:
            exclude.add(job["device"])  # retried elsewhere when there is an elsewhere
        bump = job["mem_bump"] * constants.OOM_BUMP
        if job["attempts"] >= constants.MAX_ATTEMPTS:
            err = (f"out of memory on {job['attempts']} attempts (last on {job['device']}: "
                   f"{result.get('error')})")  # fmt: skip
            self.store.update(
                jid, state="failed", finished_at=time.time(), result=result, error=err
            )
            self.events.emit("job_end", **base, state="failed", error=err, oom=True)
            return
        self.store.update(jid, state="queued", device=None, pid=None, pid_start=None,
                          exclude=sorted(exclude), mem_bump=bump)  # fmt: skip
        self.events.emit("job_oom", **base, retry=True, exclude=sorted(exclude), mem_bump=bump,
                         error=result.get("error"))  # fmt: skip
