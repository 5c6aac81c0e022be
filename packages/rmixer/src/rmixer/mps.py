"""Starting and stopping the CUDA MPS control daemon, only when asked.

The daemon runs with its own pipe and log directories (under a folder we own), so no root
is needed and an MPS daemon someone else runs is left alone; job processes join it through
``CUDA_MPS_PIPE_DIRECTORY`` (:attr:`MpsDaemon.env`). When it cannot start (no binary, not
permitted, a GPU in exclusive mode) :meth:`MpsDaemon.start` raises :class:`MpsError` saying
why; callers report it and run without MPS.

python -m rmixer.mps start --dir /tmp/rmixer-mps   # and: stop, status
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

BINARY = "nvidia-cuda-mps-control"


class MpsError(RuntimeError):
    """MPS could not be started or stopped; the message says why."""


class MpsDaemon:
    """One MPS control daemon with pipe/log directories under ``base``."""

    def __init__(self, base: str | os.PathLike) -> None:
        self.base = Path(base)
        self.pipe_dir = self.base / "pipe"
        self.log_dir = self.base / "log"
        self.started = False
        self.stop_note = ""  # what a forced stop did (see rec_common.mps_control)

    @property
    def env(self) -> dict[str, str]:
        """Environment a CUDA process needs to join this daemon."""
        return {"CUDA_MPS_PIPE_DIRECTORY": str(self.pipe_dir),
                "CUDA_MPS_LOG_DIRECTORY": str(self.log_dir)}  # fmt: skip

    def _control(
        self, *args: str, stdin: str | None = None, timeout: float = 30
    ) -> subprocess.CompletedProcess:
        binary = shutil.which(BINARY)
        if binary is None:
            raise MpsError(f"{BINARY} is not on PATH: MPS is unavailable on this machine")
        return subprocess.run([binary, *args], input=stdin, capture_output=True, text=True,
                              timeout=timeout, env={**os.environ, **self.env})  # fmt: skip

    def running(self) -> bool:
        """True when a daemon answers on our pipe (the ``control`` file can outlive it)."""
        if not (self.pipe_dir / "control").exists():
            return False
        try:
            return self._control(stdin="get_server_list\n", timeout=5).returncode == 0
        except (MpsError, subprocess.TimeoutExpired):
            return False

    def start(self) -> dict[str, str]:
        """Start the daemon (``-d``) and check that it answers; returns :attr:`env`."""
        self.pipe_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        if self.running():
            raise MpsError(f"an MPS daemon already uses {self.pipe_dir}; stop it first")
        proc = self._control("-d")
        if proc.returncode != 0:
            raise MpsError(f"{BINARY} -d failed (exit {proc.returncode}): "
                           f"{(proc.stderr or proc.stdout).strip() or 'no message'}")  # fmt: skip
        for _ in range(50):
            if self.running():
                break
            time.sleep(0.1)
        else:
            raise MpsError(f"{BINARY} -d returned but no control pipe appeared in {self.pipe_dir}; "
                           f"see {self.log_dir}/control.log")  # fmt: skip
        self.started = True
        return self.env

    def stop(self) -> None:
        """Ask the daemon to quit (only one this object started or that uses our dirs)."""
        if not self.running():
            self.started = False
            return
        try:
            proc = self._control(stdin="quit\n")
        except subprocess.TimeoutExpired:  # servers kept alive by clients: end them, then quit
            from rec_common.mps_control import force_stop

            try:
                self.stop_note = force_stop(self.env)
            except subprocess.TimeoutExpired:
                raise MpsError(f"the MPS daemon in {self.pipe_dir} does not quit, even after its "
                               f"servers were shut down; log:\n{self.log_tail()}") from None  # fmt: skip
            proc = None
        if proc is not None and proc.returncode != 0:
            raise MpsError(f"stopping MPS failed (exit {proc.returncode}): {proc.stderr.strip()}")
        for _ in range(100):
            if not self.running():
                break
            time.sleep(0.1)
        self.started = False

    def log_tail(self, n: int = 20) -> str:
        path = self.log_dir / "control.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])


def running_servers() -> list[str]:
    """``"PID NAME"`` of every MPS server on this machine's GPUs (nvidia-smi), [] if none or
    unknown. A server left by another program makes this run's MPS clients fail."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,process_name",
                              "--format=csv,noheader"], capture_output=True, text=True,
                             timeout=20).stdout  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [" ".join(x.strip() for x in line.split(","))
            for line in out.splitlines() if "mps-server" in line]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m rmixer.mps",
        description="Start, stop or check an MPS control daemon with private pipe/log dirs.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        epilog="example: python -m rmixer.mps start --dir /tmp/rmixer-mps; then export the "
        "printed CUDA_MPS_PIPE_DIRECTORY for jobs",
    )
    parser.add_argument("action", choices=["start", "stop", "status"])
    parser.add_argument("--dir", default="/tmp/rmixer-mps", help="pipe and log directory base")
    args = parser.parse_args(argv)
    daemon = MpsDaemon(args.dir)
    try:
        if args.action == "start":
            for k, v in daemon.start().items():
                print(f"export {k}={v}")
        elif args.action == "stop":
            daemon.stop()
            print("MPS daemon stopped")
        else:
            print("running" if daemon.running() else "not running")
    except MpsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
