"""MpsDaemon.stop when ``quit`` hangs (a client still holds a server): servers are shut down
forcibly, then the daemon quits; the benchmark is never left with a daemon it cannot stop."""

from __future__ import annotations

import os
import stat
import sys
import textwrap

from rmixer.mps import MpsDaemon

FAKE = textwrap.dedent(
    """\
    #!{python}
    import os, sys, time
    pipe = os.environ["CUDA_MPS_PIPE_DIRECTORY"]
    state = os.path.join(pipe, "servers")
    servers = open(state).read().split() if os.path.exists(state) else []
    if sys.argv[1:] == ["-d"]:
        open(os.path.join(pipe, "control"), "w").close()
        open(state, "w").write("777")
        sys.exit(0)
    if not os.path.exists(os.path.join(pipe, "control")):
        sys.exit(1)
    for line in sys.stdin.read().splitlines():
        cmd = line.split()
        if cmd == ["get_server_list"]:
            print("\\n".join(servers))
        elif cmd[:1] == ["shutdown_server"] and "-f" in cmd:
            servers = [s for s in servers if s != cmd[1]]
        elif cmd == ["quit"]:
            if servers:
                time.sleep(60)
            os.remove(os.path.join(pipe, "control"))
    open(state, "w").write(" ".join(servers))
    """
)


def test_stop_forces_servers_down_when_quit_hangs(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "nvidia-cuda-mps-control"
    exe.write_text(FAKE.format(python=sys.executable))
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    daemon = MpsDaemon(tmp_path / "mps")
    real = daemon._control

    def quick(*args, stdin=None, timeout=30):  # the real 30 s quit timeout, shortened
        return real(*args, stdin=stdin, timeout=min(timeout, 2))

    monkeypatch.setattr(daemon, "_control", quick)
    daemon.start()
    assert daemon.running()
    daemon.stop()
    assert not daemon.running()
    assert "server 777 shut down (-f)" in daemon.stop_note
