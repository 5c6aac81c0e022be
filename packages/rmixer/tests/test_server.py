"""The server and client end to end on loopback with real CPU jobs: submit/wait/status/logs,
cancel, token refusal, bad requests, malformed task files, restart recovery."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from rmixer import client
from rmixer.launcher import pid_alive
from rmixer.store import Store

TOKEN = "s3cret-token"


def start_server(state: Path, *extra: str) -> subprocess.Popen:
    (state / "server.json").unlink(missing_ok=True)
    proc = subprocess.Popen(
        [sys.executable, "-m", "rmixer.server", "--port", "0", "--state-dir", str(state),
         "--cpu-as-gpu", "1", "--gpu-memory-mb", "4000", "--cpu-threads", "1", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 180
    while not (state / "server.json").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            out = proc.communicate()[0]
            pytest.fail(f"the server did not start (rc {proc.returncode}):\n{out}")
        time.sleep(0.1)
    proc.url = json.loads((state / "server.json").read_text())["url"]
    return proc


def stop_server(proc: subprocess.Popen, state: Path, sig=signal.SIGTERM) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout:
        proc.stdout.close()


def kill_leftover_jobs(state: Path) -> None:
    store = Store(state / "jobs.db")
    for j in store.list(state="running"):
        if j["pid"] and pid_alive(j["pid"], j["pid_start"]):
            os.kill(j["pid"], signal.SIGKILL)
    store.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    state = tmp_path_factory.mktemp("state")
    proc = start_server(state, "--token", TOKEN, "--gpu-slots", "2", "--cpu-slots", "1")
    yield proc, state
    stop_server(proc, state)
    kill_leftover_jobs(state)


def task_file(tmp_path: Path, n: int = 4, name: str = "tasks.txt") -> Path:
    kinds = ["tiny_dlrm", "tiny_dcn", "tiny_deepfm", "tiny_widedeep", "tiny_din"]
    models = ["dlrm", "dcn", "deepfm", "widedeep", "din"]
    lines = [f"{models[i % 5]} {kinds[i % 5]} job-{i}" for i in range(n)]
    p = tmp_path / name
    p.write_text("\n".join(lines) + "\n")
    return p


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    rc = client.main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_submit_wait_status_logs(server, tmp_path, capsys):
    proc, state = server
    url = proc.url
    rc, out, err = run_cli(capsys, "--url", url, "--token", TOKEN, "submit",
                           str(task_file(tmp_path, 5)), "--wait", "--wait-timeout", "120")  # fmt: skip
    assert rc == 0, err
    assert "makespan" in out and "5 done, 0 not done" in out
    c = client.Client(url, TOKEN)
    jobs = c.jobs()
    assert {j["state"] for j in jobs[-5:]} == {"done"}
    jid = jobs[-1]["id"]
    assert "iter 20/20" in c.logs(jid)
    rc, out, _ = run_cli(capsys, "--url", url, "--token", TOKEN, "status")
    assert rc == 0 and "policy rmixer" in out and "gpu-cpu:0" in out
    rc, out, _ = run_cli(capsys, "--url", url, "--token", TOKEN, "logs", str(jid), "--tail", "1")
    assert rc == 0 and "done in" in out
    st = c.status()
    assert all(d["in_use"] == 0 for d in st["devices"])
    events = [json.loads(x) for x in (state / "events.jsonl").read_text().splitlines()]
    starts = [e for e in events if e["event"] == "job_start"]
    assert all(e["slots_in_use"] <= e["slots"] for e in starts)


def test_yaml_tasks_and_cancel(server, tmp_path):
    proc, _ = server
    c = client.Client(proc.url, TOKEN)
    y = tmp_path / "t.yaml"
    y.write_text(
        "jobs:\n  - {model: dlrm, config: tiny_dlrm, name: forever, iterations: 100000000}\n"
    )
    from rmixer.tasks import read_tasks

    (jid,) = c.submit(read_tasks(y))["ids"]
    deadline = time.monotonic() + 60
    while c.job(jid)["state"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert c.cancel(jid)["state"] == "cancelled"
    assert c.wait([jid], timeout=60)[0]["state"] == "cancelled"


def test_requests_without_the_token_are_refused_and_logged(server, capsys):
    proc, state = server
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        req = urllib.request.Request(proc.url + "/v1/status", headers=headers)
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=10)
        assert err.value.code == 401
        err.value.close()
    rc, _, err = run_cli(capsys, "--url", proc.url, "--token", "", "status")
    assert rc == 1 and "HTTP 401" in err
    events = [json.loads(x) for x in (state / "events.jsonl").read_text().splitlines()]
    refused = [e for e in events if e["event"] == "auth_refused"]
    assert len(refused) >= 3 and refused[0]["path"] == "/v1/status"


@pytest.mark.parametrize(
    ("body", "status", "match"),
    [
        ({"jobs": []}, 400, "empty list"),
        ({"jobz": []}, 400, "expected a JSON object"),
        ({"jobs": [{"name": "a", "model": "dlrm", "config": {"model": "dlrm"}, "iterations": 0}]},
         400, "iterations: expected a positive integer"),
        ({"jobs": [{"name": "a", "model": "dlrm", "config": {"model": "dlrm", "embedding_dim": 4},
                    "iterations": 3}]}, 400, "cannot be built"),
        ({"jobs": [{"name": "a", "model": "dcn", "config": {"model": "dlrm"}, "iterations": 3}]},
         400, "does not match"),
        ({"jobs": [{"name": "a", "model": "dlrm", "config": {"model": "dlrm"}, "iterations": 3,
                    "gpu": 1}]}, 400, "unknown field"),
    ],
)  # fmt: skip
def test_bad_submissions(server, body, status, match):
    c = client.Client(server[0].url, TOKEN)
    with pytest.raises(client.ClientError, match=match) as err:
        c.request("POST", "/v1/jobs", body)
    assert err.value.status == status


def test_unknown_paths_and_jobs(server):
    c = client.Client(server[0].url, TOKEN)
    for path, code in (("/v1/jobs/99999", 404), ("/nope", 404), ("/v1/jobs/abc", 400)):
        with pytest.raises(client.ClientError) as err:
            c.request("GET", path)
        assert err.value.status == code


def test_malformed_task_file_is_an_error_naming_file_and_line(server, tmp_path, capsys):
    c = client.Client(server[0].url, TOKEN)
    before = len(c.jobs())
    bad = tmp_path / "bad.txt"
    bad.write_text("dlrm tiny_dlrm ok\ndlrm tiny_dlrm two words\n")
    rc, _, err = run_cli(capsys, "--url", server[0].url, "--token", TOKEN, "submit", str(bad))
    assert rc == 1 and f"error: {bad}:2: expected 3 fields" in err
    assert len(c.jobs()) == before  # nothing was sent


def test_unreachable_server_is_explained(capsys):
    rc, _, err = run_cli(capsys, "--url", "http://127.0.0.1:9", "status")
    assert rc == 1 and "cannot reach the rmixer server" in err


def test_non_loopback_bind_needs_a_token(tmp_path):
    env = {**os.environ}
    env.pop("RMIXER_TOKEN", None)
    proc = subprocess.run(
        [sys.executable, "-m", "rmixer.server", "--host", "0.0.0.0", "--port", "0",
         "--state-dir", str(tmp_path)], capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert proc.returncode == 2 and "--token" in proc.stderr


def test_restart_loses_no_job(tmp_path):
    """Killed server: the running job is re-attached (then cancelled through the new server,
    which reaches the re-attached process), the queued ones run."""
    state = tmp_path / "state"
    state.mkdir()
    cfg = json.loads((Path(client.__file__).parent / "configs" / "tiny_dlrm.json").read_text())
    a = start_server(state, "--gpu-slots", "1", "--cpu-slots", "0")
    try:
        c = client.Client(a.url)
        ids = c.submit([{"name": f"r{i}", "model": "dlrm", "config": cfg,
                         "iterations": 10**8 if i == 0 else 20} for i in range(3)])["ids"]  # fmt: skip
        deadline = time.monotonic() + 60
        while c.job(ids[0])["state"] != "running":
            assert time.monotonic() < deadline
            time.sleep(0.02)
        pid = c.job(ids[0])
        stop_server(a, state, signal.SIGKILL)  # no chance to clean up
        b = start_server(state, "--gpu-slots", "1", "--cpu-slots", "0")
        try:
            cb = client.Client(b.url)
            assert cb.job(ids[0])["state"] == "running"
            assert cb.cancel(ids[0])["state"] == "cancelled"
            rows = cb.wait(ids, timeout=120)
            assert [r["state"] for r in rows] == ["cancelled", "done", "done"]
            deadline = time.monotonic() + 30
            while pid_alive(pid["pid"]):
                assert time.monotonic() < deadline, "the re-attached worker was not stopped"
                time.sleep(0.05)
        finally:
            stop_server(b, state)
    finally:
        kill_leftover_jobs(state)
    events = [json.loads(x) for x in (state / "events.jsonl").read_text().splitlines()]
    rec = [e for e in events if e["event"] == "recovered"][-1]
    assert rec["reattached"] == [ids[0]] and rec["queued"] == ids[1:]
    assert any(e["event"] == "job_reattached" and e["job"] == ids[0] for e in events)
