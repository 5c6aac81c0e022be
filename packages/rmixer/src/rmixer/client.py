"""Client of the rmixer server: submit task files, follow, cancel and read jobs.

    python -m rmixer.client submit tasks.txt --wait
    python -m rmixer.client status [ID ...]
    python -m rmixer.client cancel ID
    python -m rmixer.client logs ID

The server URL comes from ``--url`` or ``$RMIXER_URL`` (default loopback), the token from
``--token`` or ``$RMIXER_TOKEN``. Task files are parsed here (:mod:`rmixer.tasks`), so a
malformed line is reported with its file and line before anything is sent.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request

from rmixer import constants
from rmixer.store import TERMINAL
from rmixer.tasks import TaskError, TaskSpec, read_tasks

DEFAULT_URL = f"http://127.0.0.1:{constants.DEFAULT_PORT}"


class ClientError(RuntimeError):
    """The server refused or could not be reached; ``status`` is the HTTP status (0: none)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Client:
    """Thin JSON-over-HTTP client (standard library only)."""

    def __init__(self, url: str | None = None, token: str | None = None, timeout: float = 30.0):
        self.url = (url or os.environ.get("RMIXER_URL") or DEFAULT_URL).rstrip("/")
        self.token = token if token is not None else os.environ.get("RMIXER_TOKEN")
        self.timeout = timeout

    def request(self, method: str, path: str, body: dict | None = None) -> dict:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as exc:
            try:
                msg = json.loads(exc.read()).get("error", exc.reason)
            except ValueError:
                msg = exc.reason
            raise ClientError(exc.code, f"{method} {path}: HTTP {exc.code}: {msg}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ClientError(0, f"cannot reach the rmixer server at {self.url} ({reason}); "
                                 "is it running? (python -m rmixer.server)") from None  # fmt: skip

    def submit(self, specs: list[TaskSpec | dict]) -> dict:
        jobs = [s.as_request() if isinstance(s, TaskSpec) else s for s in specs]
        return self.request("POST", "/v1/jobs", {"jobs": jobs})

    def job(self, job_id: int) -> dict:
        return self.request("GET", f"/v1/jobs/{int(job_id)}")

    def jobs(self, state: str | None = None) -> list[dict]:
        return self.request("GET", "/v1/jobs" + (f"?state={state}" if state else ""))["jobs"]

    def cancel(self, job_id: int) -> dict:
        return self.request("POST", f"/v1/jobs/{int(job_id)}/cancel", {})

    def logs(self, job_id: int, tail: int | None = None) -> str:
        q = f"?tail={int(tail)}" if tail is not None else ""
        return self.request("GET", f"/v1/jobs/{int(job_id)}/logs{q}")["log"]

    def status(self) -> dict:
        return self.request("GET", "/v1/status")

    def wait(self, ids: list[int], timeout: float | None = None, poll_s: float = 0.2) -> list[dict]:
        """Poll until every job in ``ids`` is done, failed or cancelled; returns their rows."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            rows = {j["id"]: j for j in self.jobs()}
            missing = [i for i in ids if i not in rows]
            if missing:
                raise ClientError(404, f"jobs {missing} are unknown to the server")
            if all(rows[i]["state"] in TERMINAL for i in ids):
                return [rows[i] for i in ids]
            if deadline is not None and time.monotonic() > deadline:
                left = [i for i in ids if rows[i]["state"] not in TERMINAL]
                raise ClientError(0, f"timed out after {timeout} s; jobs {left} still not finished")
            time.sleep(poll_s)


def _line(job: dict) -> str:
    took = ""
    if job.get("started_at") and job.get("finished_at"):
        took = f"{job['finished_at'] - job['started_at']:.2f}s"
    err = f"  {job['error']}" if job.get("error") else ""
    return (f"{job['id']:>5}  {job['state']:<9} {job.get('device') or '-':<10} {job['model']:<16} "
            f"{job['name']:<20} {took:>8}{err}")  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m rmixer.client",
        description="Talk to an rmixer server: submit task files, show, cancel, read logs.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        epilog="example: python -m rmixer.client submit "
        "packages/rmixer/src/rmixer/tasklists/tiny_6.txt --wait",
    )
    p.add_argument("--url", default=None, help=f"server URL (default $RMIXER_URL or {DEFAULT_URL})")
    p.add_argument("--token", default=None, help="token (default: $RMIXER_TOKEN; never shown)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per HTTP request")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("submit", help="submit the jobs of task files (three-field lines or YAML)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)  # fmt: skip
    s.add_argument("tasks", nargs="+", help="task files")
    s.add_argument("--iterations", type=int, default=None, help="override every job's iterations")
    s.add_argument("--wait", action="store_true", help="wait until all finish; print makespan")
    s.add_argument("--wait-timeout", type=float, default=None, help="give up waiting after S s")
    st = sub.add_parser("status", help="jobs (all, or the given ids) and the devices",
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter)  # fmt: skip
    st.add_argument("ids", nargs="*", type=int)
    st.add_argument("--state", default=None, help="only jobs in this state")
    st.add_argument("--json", action="store_true", help="print JSON")
    sub.add_parser("list", help="all jobs, one line each")
    c = sub.add_parser("cancel", help="cancel a queued or running job")
    c.add_argument("id", type=int)
    lg = sub.add_parser("logs", help="a job's worker output",
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter)  # fmt: skip
    lg.add_argument("id", type=int)
    lg.add_argument("--tail", type=int, default=None, help="last N lines only")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    client = Client(args.url, args.token, args.timeout)
    try:
        if args.command == "submit":
            specs = []
            for path in args.tasks:
                specs.extend(read_tasks(path, args.iterations))
            t0 = time.time()
            reply = client.submit(specs)
            ids = reply["ids"]
            print(f"submitted {len(ids)} jobs as batch {reply['batch']}: ids {ids[0]}..{ids[-1]}")
            if not args.wait:
                return 0
            rows = client.wait(ids, args.wait_timeout)
            span = max(r["finished_at"] or t0 for r in rows) - t0
            for r in rows:
                print(_line(r))
            failed = [r for r in rows if r["state"] != "done"]
            print(f"makespan {span:.3f} s for {len(rows)} jobs "
                  f"({len(rows) / span * 3600 if span > 0 else 0:.1f} jobs/hour); "
                  f"{len(rows) - len(failed)} done, {len(failed)} not done")  # fmt: skip
            if failed:
                print(f"error: {len(failed)} job(s) did not finish: "
                      f"{[(r['id'], r['state']) for r in failed]}", file=sys.stderr)  # fmt: skip
                return 1
            return 0
        if args.command in ("status", "list"):
            ids = getattr(args, "ids", [])
            rows = (
                [client.job(i) for i in ids] if ids else client.jobs(getattr(args, "state", None))
            )
            if getattr(args, "json", False):
                print(json.dumps({"jobs": rows, "server": client.status()}, indent=1))
                return 0
            for r in rows:
                print(_line(r))
            if args.command == "status" and not ids:
                st = client.status()
                print(f"policy {st['policy']} ({st['mode']}); jobs {st['jobs']}")
                for d in st["devices"]:
                    print(f"  {d['name']:<10} {d['in_use']}/{d['slots']} slots, reserved "
                          f"{d['reserved_mb']:.0f}/{d['total_mb']:.0f} MB")  # fmt: skip
            return 0
        if args.command == "cancel":
            print(_line(client.cancel(args.id)))
            return 0
        if args.command == "logs":
            print(client.logs(args.id, args.tail))
            return 0
    except (TaskError, ClientError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 2


if __name__ == "__main__":
    sys.exit(main())
