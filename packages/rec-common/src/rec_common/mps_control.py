"""Stopping a CUDA MPS control daemon that does not quit when asked.

``quit`` waits for the daemon's MPS servers to exit, and a server stays while any client
holds a context, e.g. a process killed mid-run whose CUDA IPC handles were never released.
A daemon left that way keeps its servers on the GPUs, and the next MPS daemon's clients then
fail with "Unexpected error from cudaGetDeviceCount()". :func:`force_stop` shuts each server
down (``shutdown_server PID -f``) and then quits the daemon. rap-share and rmixer both start
private daemons (own pipe directory) and call it when a plain ``quit`` times out.
"""

from __future__ import annotations

import os
import shutil
import subprocess

BINARY = "nvidia-cuda-mps-control"


def control(env: dict[str, str], stdin: str, timeout: float = 10.0) -> subprocess.CompletedProcess:
    """Send ``stdin`` (commands, one per line) to the daemon whose pipe directory ``env`` names."""
    binary = shutil.which(BINARY)
    if binary is None:
        raise FileNotFoundError(f"{BINARY} is not on PATH")
    return subprocess.run([binary], input=stdin, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **env})  # fmt: skip


def server_pids(env: dict[str, str], timeout: float = 10.0) -> list[int]:
    """PIDs of the daemon's MPS servers (``get_server_list``); [] when it has none."""
    out = control(env, "get_server_list\n", timeout).stdout
    return [int(x) for x in out.split() if x.isdigit()]


def force_stop(env: dict[str, str], timeout: float = 10.0) -> str:
    """Shut the daemon's servers down forcibly, then quit it; returns what was done.

    Raises ``subprocess.TimeoutExpired`` only if the daemon still does not answer ``quit``.
    """
    done = []
    try:
        pids = server_pids(env, timeout)
    except subprocess.TimeoutExpired:
        pids = []
        done.append("get_server_list timed out")
    for pid in pids:
        try:
            control(env, f"shutdown_server {pid} -f\n", timeout)
            done.append(f"server {pid} shut down (-f)")
        except subprocess.TimeoutExpired:
            done.append(f"server {pid}: shutdown_server timed out")
    control(env, "quit\n", timeout)
    done.append("daemon quit")
    return "; ".join(done)
