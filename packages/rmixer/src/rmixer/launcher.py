"""Starting job processes cheaply, and finding them again after a server restart.

Importing torch takes a second or more, which would dominate short jobs. The default
launcher therefore keeps a *zygote*: one helper process that has imported torch and the
worker (but never touched CUDA) and forks one child per job. Each child starts its own
session (a Ctrl-C of the server does not reach it), sets up CUDA itself, and writes a result
file when it ends. ``subprocess`` mode runs ``python -m rmixer.worker SPEC`` instead.

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

    def __init__(self, mode: str = "zygote", env: dict | None = None) -> None:
        if mode not in MODES:
            raise ValueError(f"launcher: expected one of {MODES}, got {mode!r}")
        self.mode = mode
        self._env = {**os.environ, **(env or {})}
        self._lock = threading.Lock()
        self._zygote: subprocess.Popen | None = None
        self._ready = False

    def _spawn(self) -> None:
        if self._zygote is None or self._zygote.poll() is not None:
            self._zygote = subprocess.Popen(
                [sys.executable, "-m", "rmixer.launcher", "--zygote"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1, env=self._env,
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
        """Write ``spec`` to ``spec_path`` and start its process."""
        spec_path.write_text(json.dumps(spec), encoding="utf-8")
        result_path = Path(spec["result_path"])
        result_path.unlink(missing_ok=True)
        with self._lock:
            if self.mode == "subprocess":
                log = open(spec["log_path"], "a", encoding="utf-8")  # noqa: SIM115
                try:
                    p = subprocess.Popen([sys.executable, "-m", "rmixer.worker", str(spec_path)],
                                         stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                         start_new_session=True, env=self._env)  # fmt: skip
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
        if z is not None and z.poll() is None:
            z.stdin.close()
            try:
                z.wait(timeout=10)
            except subprocess.TimeoutExpired:
                z.kill()
                z.wait()
        if z is not None and z.stdout is not None:
            z.stdout.close()


def zygote_main() -> int:
    """Import torch and the worker once, then fork a child per spec path read on stdin."""
    from rmixer import worker

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
