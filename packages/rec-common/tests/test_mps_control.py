"""force_stop against a fake nvidia-cuda-mps-control that hangs on quit while servers live."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap

import pytest

from rec_common import mps_control

FAKE = textwrap.dedent(
    """\
    #!{python}
    import os, sys, time
    state = os.path.join(os.environ["CUDA_MPS_PIPE_DIRECTORY"], "servers")
    servers = open(state).read().split() if os.path.exists(state) else []
    for line in sys.stdin.read().splitlines():
        cmd = line.split()
        if cmd == ["get_server_list"]:
            print("\\n".join(servers))
        elif cmd[:1] == ["shutdown_server"] and "-f" in cmd:
            servers = [s for s in servers if s != cmd[1]]
        elif cmd == ["quit"]:
            if servers:  # a real daemon waits for its servers' clients
                time.sleep(60)
            open(os.path.join(os.environ["CUDA_MPS_PIPE_DIRECTORY"], "quit"), "w").close()
    open(state, "w").write(" ".join(servers))
    """
)


@pytest.fixture
def fake_daemon(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    exe = bin_dir / mps_control.BINARY
    exe.write_text(FAKE.format(python=sys.executable))
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    pipe = tmp_path / "pipe"
    pipe.mkdir()
    (pipe / "servers").write_text("4242 4343")
    return {"CUDA_MPS_PIPE_DIRECTORY": str(pipe)}, pipe


def test_quit_hangs_while_servers_live_and_force_stop_ends_them(fake_daemon):
    env, pipe = fake_daemon
    assert mps_control.server_pids(env) == [4242, 4343]
    with pytest.raises(subprocess.TimeoutExpired):
        mps_control.control(env, "quit\n", timeout=1)
    what = mps_control.force_stop(env, timeout=5)
    assert "server 4242 shut down (-f)" in what and "server 4343 shut down (-f)" in what
    assert (pipe / "quit").exists() and mps_control.server_pids(env) == []


def test_missing_binary_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="nvidia-cuda-mps-control is not on PATH"):
        mps_control.force_stop({"CUDA_MPS_PIPE_DIRECTORY": str(tmp_path)})
