"""Starting and stopping a private CUDA MPS daemon for the co-run baselines.

The daemon gets its own pipe and log folders (``CUDA_MPS_PIPE_DIRECTORY`` /
``CUDA_MPS_LOG_DIRECTORY``), so only processes started with :meth:`MpsDaemon.env` become its
clients and a daemon someone else runs is left alone. :meth:`MpsDaemon.start` returns False
with a reason (no ``nvidia-cuda-mps-control``, the daemon would not start, or a client cannot
create a CUDA context under it, as in containers without the needed IPC rights) instead of
raising, so callers can run the MPS variants time-sliced and say so.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time

_PROBE = (
    "import torch; torch.zeros(1, device='cuda').add_(1); torch.cuda.synchronize(); print('ok')"
)


class MpsDaemon:
    def __init__(self) -> None:
        self.dir = ""
        self.active = False
        self.reason = "not started"

    def env(self) -> dict[str, str]:
        """Environment entries that make a new process a client of this daemon."""
        if not self.active:
            return {}
        return {
            "CUDA_MPS_PIPE_DIRECTORY": os.path.join(self.dir, "pipe"),
            "CUDA_MPS_LOG_DIRECTORY": os.path.join(self.dir, "log"),
        }

    def _control(self, *args: str, text: str | None = None, timeout: float = 20.0):
        env = {**os.environ, **{
            "CUDA_MPS_PIPE_DIRECTORY": os.path.join(self.dir, "pipe"),
            "CUDA_MPS_LOG_DIRECTORY": os.path.join(self.dir, "log"),
        }}  # fmt: skip
        return subprocess.run(["nvidia-cuda-mps-control", *args], input=text, env=env,
                              capture_output=True, text=True, timeout=timeout)  # fmt: skip

    def start(self) -> bool:
        """Start the daemon and check that a client works; False (see ``reason``) if not."""
        if shutil.which("nvidia-cuda-mps-control") is None:
            self.reason = "nvidia-cuda-mps-control is not on PATH"
            return False
        self.dir = tempfile.mkdtemp(prefix="rap-mps-")
        os.makedirs(os.path.join(self.dir, "pipe"))
        os.makedirs(os.path.join(self.dir, "log"))
        try:
            r = self._control("-d")
        except (OSError, subprocess.TimeoutExpired) as e:
            self.reason = f"nvidia-cuda-mps-control -d failed: {e}"
            return False
        if r.returncode != 0:
            self.reason = f"nvidia-cuda-mps-control -d exited {r.returncode}: {r.stderr.strip()}"
            return False
        self.active = True
        time.sleep(0.5)
        try:
            probe = subprocess.run([sys.executable, "-c", _PROBE], env={**os.environ, **self.env()},
                                   capture_output=True, text=True, timeout=60)  # fmt: skip
            ok = probe.returncode == 0 and "ok" in probe.stdout
            why = (probe.stderr.strip().splitlines() or ["no output"])[-1]
        except subprocess.TimeoutExpired:
            ok, why = False, "the probe client hung for 60 s"
        if not ok:
            self.stop()
            self.reason = f"the MPS daemon started but a CUDA client failed under it: {why}"
            return False
        self.reason = "MPS daemon running"
        return True

    def stop(self) -> None:
        if self.active:
            try:
                self._control(text="quit\n")
            except subprocess.TimeoutExpired:  # a client still holds a server: end it, then quit
                from rec_common.mps_control import force_stop

                with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                    print(f"[mps] quit timed out; {force_stop(self.env())}", file=sys.stderr)
            except OSError:
                pass
            self.active = False
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = ""

    def __enter__(self) -> MpsDaemon:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
