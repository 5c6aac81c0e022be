"""Starting job processes cheaply, and finding them again after a server restart.

Importing torch takes a second or more, which would dominate short jobs, so processes are
started ahead of need. CUDA jobs never come from ``fork``: a process that inherited CUDA
state (or autograd's device threads, which any backward starts on a GPU machine) cannot use
the GPU. Each CUDA job therefore runs in a fresh interpreter (``python -m rmixer.worker
--wait``), pre-started as a *spare* with the job's environment (MPS pipe directory) already in
place, that imports torch and then waits for one spec path on stdin. CPU jobs are forked from
a *zygote* that has imported torch and the worker and runs with ``CUDA_VISIBLE_DEVICES=""``,
so it cannot hold CUDA state, whatever torch calls at import. Each job starts its own session
(a Ctrl-C of the server does not reach it) and writes a result file when it ends.
``subprocess`` mode runs ``python -m rmixer.worker SPEC`` for every job instead.

The scheduler tracks a job by pid plus the pid's start time (from ``/proc``), so after a
restart a live worker is re-attached and a reused pid is not mistaken for it; a job whose
process is gone reads its result file, or counts as killed.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

MODES = ("zygote", "subprocess")


def pid_start_time(pid: int) -> str | None:
    """The process's start time in clock ticks (Linux ``/proc/PID/stat`` field 22)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            text = f.read()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()[19]


def pid_alive(pid: int, start: str | None = None) -> bool:
    """True when ``pid`` runs and, if ``start`` is given, started at that time."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return start is None
    if start is not None and sys.platform.startswith("linux"):
        now = pid_start_time(pid)
        if now is None or now != start:
            return False
        try:  # a zombie has exited
            with open(f"/proc/{pid}/stat", encoding="ascii") as f:
                return f.read().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return False
    return True


@dataclass
class Handle:
    """A running job process."""

    job_id: int
    pid: int
    pid_start: str | None
    result_path: Path
    popen: subprocess.Popen | None = None

    def poll(self) -> dict | None:
        """None while it runs; afterwards its result (or a synthetic error result)."""
        if self.popen is not None:
            rc = self.popen.poll()
            if rc is None:
                return None
            for f in (self.popen.stdin, self.popen.stdout):  # a spare's pipes
                if f is not None:
                    with contextlib.suppress(OSError):
                        f.close()
        else:
            rc = None
            if pid_alive(self.pid, self.pid_start):
                return None
        try:
            return json.loads(self.result_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            how = f"exit code {rc}" if rc is not None and rc >= 0 else (
                f"signal {-rc}" if rc is not None else "killed or crashed")  # fmt: skip
            return {"status": "error", "job_id": self.job_id,
                    "error": f"worker process {self.pid} ended without a result ({how})"}  # fmt: skip

    def terminate(self, sig: int = signal.SIGTERM) -> None:
        if pid_alive(self.pid, self.pid_start):
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)


class Launcher:
    """Starts job processes (``zygote`` or ``subprocess`` mode); see the module docstring."""

    def __init__(self, mode: str = "zygote", env: dict | None = None, spares: int = 2) -> None:
        if mode not in MODES:
            raise ValueError(f"launcher: expected one of {MODES}, got {mode!r}")
        self.mode = mode
        self._env = {**os.environ, **(env or {})}
        self._lock = threading.Lock()
        self._zygote: subprocess.Popen | None = None
        self._ready = False
        self._spares: dict[tuple, list[subprocess.Popen]] = {}  # job env -> idle CUDA workers
        self.spares = spares
        self._ready_spares: set[int] = set()

    @staticmethod
    def is_cuda(spec: dict) -> bool:
        """A job that may touch CUDA: it must start in a fresh process, never a fork."""
        return not str(spec.get("device", "")).startswith("cpu")

    def _full_env(self, job_env: dict | None) -> dict:
        return {**self._env, **{k: str(v) for k, v in (job_env or {}).items()}}

    def _start_spare(self, job_env: dict | None) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "rmixer.worker", "--wait"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, text=True, bufsize=1, start_new_session=True,
            env=self._full_env(job_env),
        )  # fmt: skip

    def _top_up(self, job_env: dict | None) -> None:
        """Keep ``self.spares`` idle CUDA workers for this environment (lock held); drop
        the idle ones of any other environment (an MPS daemon of an earlier run)."""
        key = tuple(sorted((job_env or {}).items()))
        for other in [k for k in self._spares if k != key]:
            for p in self._spares.pop(other):
                _stop_spare(p)
        pool = [p for p in self._spares.get(key, []) if p.poll() is None]
        while len(pool) < self.spares:
            pool.append(self._start_spare(job_env))
        self._spares[key] = pool

    def _take_spare(self, job_env: dict | None) -> subprocess.Popen | None:
        pool = self._spares.get(tuple(sorted((job_env or {}).items())), [])
        while pool:
            p = pool.pop(0)
            if p.poll() is None:
                return p
            p.wait()
        return None

    def prestart_cuda(self, job_env: dict | None = None, wait: bool = False) -> None:
        """Start idle CUDA workers for jobs with this environment (they import torch); with
        ``wait``, return once each has said it is ready (so timings exclude the imports)."""
        if self.mode != "zygote" or self.spares <= 0:
            return
        with self._lock:
            self._top_up(job_env)
            pool = list(self._spares[tuple(sorted((job_env or {}).items()))])
        if wait:
            for p in pool:
                if p.pid not in self._ready_spares:
                    line = p.stdout.readline().strip()  # "" when it died: a cold start later
                    if line == "ready":
                        self._ready_spares.add(p.pid)

    def drop_spares(self) -> int:
        """End every idle CUDA worker; returns how many. An MPS daemon cannot quit while they
        live: each holds a client connection to its server."""
        with self._lock:
            spares, self._spares = [p for ps in self._spares.values() for p in ps], {}
            self._ready_spares.clear()
        for p in spares:
            _stop_spare(p)
        return len(spares)

    def _spawn(self) -> None:
        if self._zygote is None or self._zygote.poll() is not None:
            self._zygote = subprocess.Popen(  # GPU-blind: it only forks CPU jobs
                [sys.executable, "-m", "rmixer.launcher", "--zygote"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
                env={**self._env, "CUDA_VISIBLE_DEVICES": ""},
            )  # fmt: skip
            self._ready = False

    def _ensure_zygote(self) -> subprocess.Popen:
        self._spawn()
        if not self._ready:
            line = self._zygote.stdout.readline().strip()
            if line != "ready":
                raise RuntimeError(f"the job launcher (zygote) did not start: {line!r}")
            self._ready = True
        return self._zygote

    def prestart(self) -> None:
        """Start the zygote without waiting for it (it imports torch: seconds)."""
        if self.mode == "zygote":
            with self._lock:
                self._spawn()

    def warm(self) -> None:
        """Start the zygote if needed and wait until it is ready, before the first job."""
        if self.mode == "zygote":
            with self._lock:
                self._ensure_zygote()

    def start(self, spec: dict, spec_path: Path) -> Handle:
        """Write ``spec`` to ``spec_path`` and start its process (never a fork for CUDA)."""
        spec_path.write_text(json.dumps(spec), encoding="utf-8")
        result_path = Path(spec["result_path"])
        result_path.unlink(missing_ok=True)
        with self._lock:
            if self.mode == "zygote" and self.is_cuda(spec):
                p = self._take_spare(spec.get("env"))
                if p is not None:
                    try:
                        p.stdin.write(str(spec_path) + "\n")
                        p.stdin.close()
                    except OSError:  # it died after the check: start a fresh one below
                        _stop_spare(p)
                        p = None
                if self.spares > 0:
                    self._top_up(spec.get("env"))
                if p is not None:
                    self._ready_spares.discard(p.pid)  # its stdout pipe stays open: it may
                    # not have printed "ready" yet; it writes to the job log afterwards
                    return Handle(spec["job_id"], p.pid, pid_start_time(p.pid), result_path, p)
            if self.mode == "subprocess" or self.is_cuda(spec):
                log = open(spec["log_path"], "a", encoding="utf-8")  # noqa: SIM115
                try:
                    p = subprocess.Popen([sys.executable, "-m", "rmixer.worker", str(spec_path)],
                                         stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                         start_new_session=True,
                                         env=self._full_env(spec.get("env")))  # fmt: skip
                finally:
                    log.close()
                return Handle(spec["job_id"], p.pid, pid_start_time(p.pid), result_path, p)
            z = self._ensure_zygote()
            z.stdin.write(str(spec_path) + "\n")
            z.stdin.flush()
            reply = z.stdout.readline().strip()
        try:
            pid = int(reply)
        except ValueError:
            raise RuntimeError(f"the job launcher (zygote) failed to fork: {reply!r}") from None
        return Handle(spec["job_id"], pid, pid_start_time(pid), result_path)

    def attach(self, job_id: int, pid: int, pid_start: str | None, result_path: Path) -> Handle:
        """A handle on a job process started by an earlier server."""
        return Handle(job_id, pid, pid_start, Path(result_path))

    def close(self) -> None:
        with self._lock:
            z, self._zygote = self._zygote, None
            spares, self._spares = [p for ps in self._spares.values() for p in ps], {}
        for p in spares:
            _stop_spare(p)
        if z is not None and z.poll() is None:
            z.stdin.close()
            try:
                z.wait(timeout=10)
            except subprocess.TimeoutExpired:
                z.kill()
                z.wait()
        if z is not None and z.stdout is not None:
            z.stdout.close()


def _stop_spare(p: subprocess.Popen) -> None:
    """End an idle CUDA worker (it holds no job; it may still be importing torch)."""
    with contextlib.suppress(ProcessLookupError):
        p.kill()
    p.wait()
    for f in (p.stdin, p.stdout):
        with contextlib.suppress(OSError):
            f.close()


def zygote_main() -> int:
    """Import torch and the worker once, then fork a child per spec path read on stdin.
    CPU jobs only: the server starts it with ``CUDA_VISIBLE_DEVICES=""``."""
    import warnings

    from rmixer import worker

    # torch's thread pools make us multi-threaded; the children only run CPU torch code
    warnings.filterwarnings("ignore", r"This process .* is multi-threaded", DeprecationWarning)

    worker.warm_up()
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the server decides when we stop
    print("ready", flush=True)
    for line in sys.stdin:
        path = line.strip()
        if not path:
            continue
        try:
            spec = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            print(f"bad spec {path}: {exc}", flush=True)
            continue
        pid = os.fork()
        if pid == 0:  # the job
            try:
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                os.setsid()
                null = os.open(os.devnull, os.O_RDONLY)
                os.dup2(null, 0)
                worker.process_main(spec)
            finally:
                os._exit(1)
        print(pid, flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["--zygote"]:
        return zygote_main()
    usage = "usage: python -m rmixer.launcher --zygote  (the job launcher the server starts)"
    if argv in (["-h"], ["--help"]):
        print(usage)
        return 0
    print(usage, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
