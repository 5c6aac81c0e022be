"""The rmixer server: an HTTP/JSON API over the scheduler, job state in SQLite.

    python -m rmixer.server --gpus 0,1 --gpu-slots 4 --cpu-slots 2 --policy rmixer

API (JSON bodies; with a token, every request carries ``Authorization: Bearer TOKEN``):

=======  ==========================  ===========================================================
method   path                        answer
=======  ==========================  ===========================================================
POST     /v1/jobs                    body ``{"jobs": [JOB, ...]}`` -> 201 ``{"batch", "ids"}``
GET      /v1/jobs[?state=&batch=]    ``{"jobs": [JOB_STATUS, ...]}``
GET      /v1/jobs/ID                 ``JOB_STATUS``
POST     /v1/jobs/ID/cancel          ``JOB_STATUS`` (unchanged when already finished)
GET      /v1/jobs/ID/logs[?tail=N]   ``{"id", "log"}``: the worker's output
GET      /v1/status                  devices (slots, reserved MB), counts per state, policy
=======  ==========================  ===========================================================

``JOB`` = ``{"name": str, "model": str, "config": {model config}, "iterations": int,
"source": str (optional)}``; ``JOB_STATUS`` adds ``id``, ``batch``, ``state``
(queued|running|done|failed|cancelled), ``device``, ``attempts``, ``submitted_at``,
``started_at``, ``finished_at`` (Unix seconds), ``error``, ``result``, ``history``, ``pid``. Errors are
``{"error": message}`` with 400 (bad request), 401 (no or wrong token; logged), 404, 413.

The server binds loopback unless told otherwise; any other address needs a token. On a
restart it re-attaches workers that still run, collects results of those that ended, and
re-queues the rest (the event log names each).
"""

from __future__ import annotations

import argparse
import hmac
import ipaddress
import json
import os
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from rmixer import __version__, constants
from rmixer.configs import ConfigError, normalize
from rmixer.devices import GpuMemoryReader, build_devices, parse_gpus
from rmixer.events import EventLog
from rmixer.knowledge import Knowledge, default_cache
from rmixer.launcher import MODES as LAUNCHERS
from rmixer.launcher import Launcher
from rmixer.memory import estimate
from rmixer.policies import POLICIES, make_policy
from rmixer.scheduler import MODES, Scheduler
from rmixer.store import Store

MAX_BODY = 8 * 2**20
MAX_JOBS_PER_REQUEST = 10_000
PUBLIC_FIELDS = ("id", "batch", "name", "model", "iterations", "source", "state", "device",
                 "attempts", "submitted_at", "started_at", "finished_at", "error", "result",
                 "config", "history", "pid")  # fmt: skip


class RequestError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def validate_submission(body: object) -> list[dict]:
    """The jobs of a POST /v1/jobs body, normalized; RequestError(400) naming the problem."""
    if not isinstance(body, dict) or not isinstance(body.get("jobs"), list):
        raise RequestError(400, 'expected a JSON object {"jobs": [...]}')
    jobs = body["jobs"]
    if not jobs:
        raise RequestError(400, "jobs: empty list")
    if len(jobs) > MAX_JOBS_PER_REQUEST:
        raise RequestError(400, f"jobs: at most {MAX_JOBS_PER_REQUEST} per request")
    out = []
    for i, j in enumerate(jobs):
        where = f"jobs[{i}]"
        if not isinstance(j, dict):
            raise RequestError(400, f"{where}: expected an object")
        unknown = sorted(set(j) - {"name", "model", "config", "iterations", "source"})
        if unknown:
            raise RequestError(400, f"{where}: unknown field(s) {unknown}")
        for key in ("name", "model"):
            if not isinstance(j.get(key), str) or not j[key].strip():
                raise RequestError(400, f"{where}.{key}: expected a non-empty string")
        it = j.get("iterations")
        if isinstance(it, bool) or not isinstance(it, int) or it < 1:
            raise RequestError(400, f"{where}.iterations: expected a positive integer, got {it!r}")
        try:
            cfg = normalize(j.get("config"), f"{where}.config")
        except ConfigError as exc:
            raise RequestError(400, str(exc)) from None
        try:
            estimate(cfg)  # builds the model on the meta device: shapes checked, no memory
        except (ValueError, TypeError) as exc:
            raise RequestError(400, f"{where}.config: the model cannot be built: {exc}") from None
        if j["model"].split("_")[-1] != cfg["model"]:
            raise RequestError(400, f"{where}.model: {j['model']!r} does not match the config's "
                                    f"model {cfg['model']!r}")  # fmt: skip
        source = j.get("source")
        out.append({"name": j["name"], "model": j["model"], "config": cfg, "iterations": it,
                    "source": str(source) if source is not None else None})  # fmt: skip
    return out


def public(job: dict) -> dict:
    return {k: job.get(k) for k in PUBLIC_FIELDS}


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class App:
    """What request handlers need: the scheduler, the token and the event log."""

    def __init__(self, scheduler: Scheduler, token: str | None) -> None:
        self.scheduler = scheduler
        self.token = token

    def authorized(self, header: str | None) -> bool:
        if not self.token:
            return True
        if not header or not header.startswith("Bearer "):
            return False
        return hmac.compare_digest(header[7:].strip().encode(), self.token.encode())

    def handle(self, method: str, path: str, query: dict, body: object) -> tuple[int, dict]:
        s = self.scheduler
        parts = [p for p in path.split("/") if p]
        if parts[:1] != ["v1"]:
            raise RequestError(404, f"no such path {path!r}; the API lives under /v1/")
        rest = parts[1:]
        if rest == ["status"] and method == "GET":
            return 200, {"version": __version__, **s.status()}
        if rest == ["jobs"] and method == "POST":
            jobs = validate_submission(body)
            batch, ids = s.submit(jobs)
            return 201, {"batch": batch, "ids": ids}
        if rest == ["jobs"] and method == "GET":
            state = query.get("state", [None])[0]
            batch = query.get("batch", [None])[0]
            try:
                batch = int(batch) if batch is not None else None
            except ValueError:
                raise RequestError(400, f"batch: expected an integer, got {batch!r}") from None
            return 200, {"jobs": [public(j) for j in s.store.list(state=state, batch=batch)]}
        if len(rest) >= 2 and rest[0] == "jobs":
            try:
                jid = int(rest[1])
            except ValueError:
                raise RequestError(400, f"job id: expected an integer, got {rest[1]!r}") from None
            job = s.store.get(jid)
            if job is None:
                raise RequestError(404, f"no job {jid}")
            if len(rest) == 2 and method == "GET":
                return 200, public(job)
            if rest[2:] == ["cancel"] and method == "POST":
                return 200, public(s.cancel(jid))
            if rest[2:] == ["logs"] and method == "GET":
                tail = query.get("tail", [None])[0]
                log_path = s.job_paths(jid)["log"]
                text = log_path.read_text(errors="replace") if log_path.exists() else ""
                if tail is not None:
                    try:
                        n = int(tail)
                    except ValueError:
                        raise RequestError(
                            400, f"tail: expected an integer, got {tail!r}"
                        ) from None
                    text = "\n".join(text.splitlines()[-n:]) if n > 0 else ""
                return 200, {"id": jid, "log": text}
        raise RequestError(404, f"no route for {method} {path}")


def make_handler(app: App) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = f"rmixer/{__version__}"

        def log_message(self, fmt, *args):  # requests are in the event log, not on stderr
            pass

        def _send(self, status: int, obj: dict) -> None:
            data = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _serve(self, method: str) -> None:
            url = urlparse(self.path)
            if not app.authorized(self.headers.get("Authorization")):
                app.scheduler.events.emit("auth_refused", client=self.client_address[0],
                                          method=method, path=url.path)  # fmt: skip
                self._send(401, {"error": "missing or wrong token (Authorization: Bearer TOKEN)"})
                return
            body = None
            try:
                if method == "POST":
                    n = int(self.headers.get("Content-Length") or 0)
                    if n > MAX_BODY:
                        raise RequestError(413, f"request body over {MAX_BODY} bytes")
                    raw = self.rfile.read(n) if n else b""
                    try:
                        body = json.loads(raw) if raw else {}
                    except ValueError as exc:
                        raise RequestError(400, f"body is not JSON ({exc})") from None
                status, obj = app.handle(method, url.path, parse_qs(url.query), body)
            except RequestError as exc:
                status, obj = exc.status, {"error": str(exc)}
            except Exception as exc:  # answer 500 and log, never die
                app.scheduler.events.emit("request_error", path=url.path,
                                          error=f"{type(exc).__name__}: {exc}")  # fmt: skip
                status, obj = 500, {"error": f"internal error: {type(exc).__name__}: {exc}"}
            self._send(status, obj)

        def do_GET(self):
            self._serve("GET")

        def do_POST(self):
            self._serve("POST")

    return Handler


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m rmixer.server",
        description="Run the rmixer scheduler with its HTTP/JSON API.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        epilog="example: python -m rmixer.server --gpus 0,1 --gpu-slots 4 --cpu-slots 2 "
        "--policy rmixer --state-dir ./rmixer-state",
    )
    p.add_argument("--gpus", default="", help="GPU indices, e.g. '0,1'; '' or 'none' for CPU only")
    p.add_argument("--gpu-slots", type=int, default=4, help="concurrent jobs per GPU")
    p.add_argument("--cpu-slots", type=int, default=2, help="concurrent jobs on the CPU (0: none)")
    p.add_argument(
        "--cpu-as-gpu",
        type=int,
        default=0,
        help="CPU-backed stand-ins of GPUs, to try policies on a machine without one",
    )
    p.add_argument("--policy", default="rmixer", choices=sorted(POLICIES))
    p.add_argument(
        "--mode",
        default="online",
        choices=MODES,
        help="online: any queued job is eligible; batch: one submission at a time",
    )
    p.add_argument(
        "--beta",
        type=float,
        default=constants.DEFAULT_BETA,
        help="dyMix: the CPU takes jobs only while more than beta x GPU slots remain",
    )
    p.add_argument(
        "--margin",
        type=float,
        default=constants.MEMORY_MARGIN,
        help="memory reserved per job = estimate x margin",
    )
    p.add_argument(
        "--host", default="127.0.0.1", help="address to bind (non-loopback needs a token)"
    )
    p.add_argument("--port", type=int, default=constants.DEFAULT_PORT, help="0 picks a free port")
    p.add_argument(
        "--token",
        default=None,
        help="shared secret clients must send (default: $RMIXER_TOKEN; never shown)",
    )
    p.add_argument(
        "--state-dir",
        default="rmixer-state",
        help="SQLite job table, events.jsonl, per-job logs and results",
    )
    p.add_argument("--profiles", default=None, help=f"profile cache (default {default_cache()})")
    p.add_argument("--launcher", default="zygote", choices=LAUNCHERS)
    p.add_argument(
        "--cpu-threads",
        type=int,
        default=None,
        help="threads per CPU job (default: (cores - GPU slots) / CPU slots)",
    )
    p.add_argument(
        "--cpu-rescue",
        type=float,
        default=constants.CPU_RESCUE_FACTOR,
        help="re-queue a CPU job for a GPU once it has run this many times its predicted time "
        "(0: never)",
    )
    p.add_argument(
        "--gpu-memory-mb",
        type=float,
        default=None,
        help="cap on the memory each GPU may use (also the size of --cpu-as-gpu devices)",
    )
    p.add_argument(
        "--mps",
        action="store_true",
        help="start an MPS control daemon for the jobs (stopped on exit)",
    )
    p.add_argument(
        "--stop-jobs-on-exit",
        action="store_true",
        help="terminate and re-queue running jobs on shutdown (default: leave them "
        "running for the next server to re-attach)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the random policy")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.token is None:
        args.token = os.environ.get("RMIXER_TOKEN") or None
    if not is_loopback(args.host) and not args.token:
        parser.error(f"--host {args.host} is not a loopback address: give --token (or set "
                     "RMIXER_TOKEN) so that only clients holding it are served")  # fmt: skip
    for name in ("gpu_slots", "cpu_slots", "cpu_as_gpu"):
        if getattr(args, name) < 0 or (name == "gpu_slots" and args.gpu_slots < 1):
            parser.error(f"--{name.replace('_', '-')}: got {getattr(args, name)}, expected "
                         f"{'>= 1' if name == 'gpu_slots' else '>= 0'}")  # fmt: skip
    try:
        gpus = parse_gpus(args.gpus)
    except ValueError as exc:
        parser.error(str(exc))
    state = Path(args.state_dir)
    state.mkdir(parents=True, exist_ok=True)
    events = EventLog(state / "events.jsonl")
    mps = None
    try:
        reader = GpuMemoryReader() if gpus else None
        devices = build_devices(gpus, args.gpu_slots, args.cpu_slots, cpu_as_gpu=args.cpu_as_gpu,
                                reader=reader, gpu_memory_mb=args.gpu_memory_mb)  # fmt: skip
        knowledge = Knowledge.load(args.profiles)
        job_env = {}
        if args.mps:
            from rmixer.mps import MpsDaemon, MpsError

            mps = MpsDaemon(state / "mps")
            try:
                job_env = mps.start()
                events.emit("mps_started", **job_env)
            except MpsError as exc:
                print(f"error: --mps: {exc}", file=sys.stderr)
                return 1
        store = Store(state / "jobs.db")
        scheduler = Scheduler(
            store, devices, make_policy(args.policy, args.seed), knowledge, events, state,
            launcher=Launcher(args.launcher), mode=args.mode, margin=args.margin, beta=args.beta,
            cpu_threads=args.cpu_threads, job_env=job_env, reader=reader,
            cpu_rescue=args.cpu_rescue,
        )  # fmt: skip
        httpd = ThreadingHTTPServer(
            (args.host, args.port), make_handler(App(scheduler, args.token))
        )
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        if mps is not None and mps.started:
            mps.stop()
        return 1
    host, port = httpd.server_address[:2]
    url = f"http://{host}:{port}"
    events.emit("server_start", url=url, pid=os.getpid(), policy=args.policy, mode=args.mode,
                devices=[d.snapshot() for d in devices], profiles=str(knowledge.path),
                token=bool(args.token), version=__version__)  # fmt: skip
    from rmixer.memory import warm_up

    scheduler.launcher.prestart()  # the zygote imports torch while we warm the estimator
    if any(d.run_on.startswith("cuda") for d in devices):
        scheduler.launcher.prestart_cuda(scheduler.job_env)  # fresh processes for CUDA jobs
    warm_up()
    recovered = scheduler.recover()
    try:
        scheduler.launcher.warm()
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    (state / "server.json").write_text(json.dumps({"url": url, "pid": os.getpid()}))
    print(f"rmixer server {__version__} on {url} (policy {args.policy}, {args.mode}, devices "
          f"{', '.join(f'{d.name}x{d.slots}' for d in devices)}); recovered {recovered}; "
          f"state in {state}", flush=True)  # fmt: skip

    def shutdown(signum, frame):
        threading.Thread(target=httpd.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)
    scheduler.start()
    try:
        httpd.serve_forever(poll_interval=0.2)
    finally:
        httpd.server_close()
        scheduler.stop(stop_jobs=args.stop_jobs_on_exit)
        if mps is not None and mps.started:
            mps.stop()
        events.emit("server_stop", pid=os.getpid(), counts=store.counts())
        events.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
