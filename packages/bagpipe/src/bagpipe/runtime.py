"""The multi-process glue: RPC world layout, start-up handshake, liveness watchdog, the RPC
handlers of the oracle and the servers, and a trainer's RPC links.

Ranks: oracle 0, server j is 1 + j, trainer t is 1 + M + t (names ``oracle``, ``server_j``,
``trainer_t``). Every role pings every other one each second once the handshake is done; a
peer that stops answering makes the role exit 1 with ``error: ... lost contact with NAME``.
A role that cannot join the RPC world within ``startup_timeout`` exits the same way.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import os
import sys
import threading
import time
import warnings
from datetime import timedelta

import torch
import torch.distributed.rpc as rpc

from bagpipe import config as cfg
from bagpipe.errors import BagpipeError
from bagpipe.server import split_by_server

PING_EVERY_S = 1.0
PING_TIMEOUT_S = 5.0


def role_names(num_servers: int, num_trainers: int) -> list[str]:
    return ["oracle"] + [f"server_{j}" for j in range(num_servers)] + [
        f"trainer_{t}" for t in range(num_trainers)]  # fmt: skip


def die(me: str, message: str) -> None:
    """Print ``error: ...`` and leave now, whatever other threads are doing."""
    print(f"error: {me}: {message}", file=sys.stderr, flush=True)
    os._exit(1)


class _State:
    """What the RPC handlers of this process reach (one role per process)."""

    def __init__(self) -> None:
        self.me = ""
        self.settings: dict | None = None
        self.names: list[str] = []
        self.cv = threading.Condition()
        self.hellos: dict = {}
        self.finished: set = set()
        self.error: str | None = None
        self.plan_ready = False
        self.oracle = None
        self.store = None
        self.watchdog_stop = threading.Event()
        self.lost: tuple | None = None
        self.store_ready = threading.Event()


S = _State()


# ------------------------------------------------------------------ start-up
def init_world(me: str, rank: int, world_size: int, addr: str, port: int,
               startup_timeout: float, num_threads: int = 32) -> None:  # fmt: skip
    """Join the RPC world; exit 1 with an error if that takes more than ``startup_timeout``."""
    S.me = me
    done = threading.Event()

    def guard() -> None:
        if not done.wait(startup_timeout):
            die(me, f"could not join the run at {addr}:{port} within {startup_timeout:.0f} s "
                    "(is every role started, with the same --master-ip/--master-port and "
                    "role counts?)")  # fmt: skip

    threading.Thread(target=guard, daemon=True, name="startup-guard").start()
    warnings.filterwarnings("ignore", message="You are using a Backend", category=UserWarning)
    opts = rpc.TensorPipeRpcBackendOptions(
        init_method=f"tcp://{addr}:{port}", num_worker_threads=num_threads,
        rpc_timeout=120.0, _transports=["uv"], _channels=["basic"],
    )  # fmt: skip
    rpc.init_rpc(me, rank=rank, world_size=world_size, rpc_backend_options=opts)
    done.set()


def _hello(name: str, settings: dict, timeout: float):
    """Oracle side: record a role's settings; answer once every role (and the plan) is in."""
    with S.cv:
        if S.error is None and S.settings is not None:
            try:
                cfg.compare("oracle", S.settings, name, settings)
            except BagpipeError as exc:
                S.error = str(exc)
        S.hellos[name] = settings
        S.cv.notify_all()
        ok = S.cv.wait_for(
            lambda: S.error is not None or (S.plan_ready and len(S.hellos) == len(S.names) - 1),
            timeout,
        )
        if not ok:
            missing = sorted(set(S.names[1:]) - set(S.hellos))
            return {"error": f"the handshake timed out waiting for {missing or 'the plan'}"}
        if S.error is not None:
            return {"error": S.error}
        return {"settings": S.settings}


def handshake(settings: dict, timeout: float = 600.0) -> dict:
    """Non-oracle roles: compare settings with the oracle's; returns the merged settings."""
    ans = rpc.rpc_sync("oracle", _hello, args=(S.me, settings, timeout), timeout=timeout + 30)
    if "error" in ans:
        raise BagpipeError(ans["error"])
    return cfg.merge(ans["settings"], settings)


def oracle_set_ready(settings: dict | None, error: str | None) -> None:
    with S.cv:
        if settings is not None:
            S.settings = settings
            for name, other in S.hellos.items():
                if S.error is None:
                    try:
                        cfg.compare("oracle", settings, name, other)
                    except BagpipeError as exc:
                        S.error = str(exc)
        if error is not None and S.error is None:
            S.error = error
        S.plan_ready = True
        S.cv.notify_all()


def oracle_wait_handshake(timeout: float) -> None:
    with S.cv:
        ok = S.cv.wait_for(lambda: len(S.hellos) == len(S.names) - 1 or S.error is not None,
                           timeout)  # fmt: skip
        if S.error is not None:
            raise BagpipeError(S.error)
        if not ok:
            missing = sorted(set(S.names[1:]) - set(S.hellos))
            raise BagpipeError(f"handshake: no word from {missing} within {timeout:.0f} s")


# ------------------------------------------------------------------ liveness
def _ping() -> str:
    return S.me


def _peer_lost(peer: str, reporter: str) -> None:
    """Handler: another role lost ``peer``; stop too, naming it."""
    with S.cv:
        if S.lost is None:
            S.lost = (peer, reporter)
    threading.Thread(target=die, args=(S.me, f"lost contact with {peer} (reported by {reporter})"),
                     daemon=True).start()  # fmt: skip


def lost(peer: str, detail: str) -> None:
    """Tell every other role that ``peer`` is gone, then exit 1 naming it (or the first loss)."""
    with S.cv:
        first = S.lost
        if first is None:
            S.lost = (peer, S.me)
    if first is not None:
        die(S.me, f"lost contact with {first[0]} (reported by {first[1]})")
    for p in S.names:
        if p not in (S.me, peer):
            with contextlib.suppress(Exception):  # best effort
                rpc.rpc_async(p, _peer_lost, args=(peer, S.me), timeout=2.0)
    time.sleep(1.0)  # let the notices leave before our connections close
    die(S.me, f"lost contact with {peer} ({detail})")


def dead_peers(timeout: float = PING_TIMEOUT_S) -> list[str]:
    futs = [(p, rpc.rpc_async(p, _ping, timeout=timeout)) for p in S.names if p != S.me]
    out = []
    for p, f in futs:
        try:
            f.wait()
        except Exception:
            out.append(p)
    return out


def fail(exc: BaseException) -> None:
    """A role's main failed after joining: name a lost peer if there is one, else the error."""
    if S.lost is not None:
        die(S.me, f"lost contact with {S.lost[0]} (reported by {S.lost[1]})")
    dead = dead_peers(3.0)
    if dead:
        lost(dead[0], f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}")
    msg = str(exc) if isinstance(exc, BagpipeError) else f"{type(exc).__name__}: {exc}"
    die(S.me, msg)


def start_watchdog(names: list[str]) -> None:
    peers = [n for n in names if n != S.me]

    def loop() -> None:
        while not S.watchdog_stop.wait(PING_EVERY_S):
            futs = [(p, rpc.rpc_async(p, _ping, timeout=PING_TIMEOUT_S)) for p in peers]
            for p, f in futs:
                try:
                    f.wait()
                except Exception as exc:
                    if S.watchdog_stop.is_set():
                        return
                    time.sleep(0.3)  # a notice naming the first lost role may be on its way
                    text = str(exc).splitlines()[0][:160] if str(exc) else "no answer"
                    lost(p, f"{type(exc).__name__}: {text}")

    threading.Thread(target=loop, daemon=True, name="watchdog").start()


def _finished(name: str, timeout: float) -> bool:
    with S.cv:
        S.finished.add(name)
        S.cv.notify_all()
        return S.cv.wait_for(lambda: len(S.finished) == len(S.names), timeout)


def finish(timeout: float = 600.0) -> None:
    """Wait until every role is done, then leave the RPC world (exit 1 if that hangs)."""
    if S.me == "oracle":
        ok = _finished("oracle", timeout)
    else:
        ok = rpc.rpc_sync("oracle", _finished, args=(S.me, timeout), timeout=timeout + 30)
    if not ok:
        raise BagpipeError("other roles did not finish in time")
    S.watchdog_stop.set()
    t = threading.Timer(30.0, die, args=(S.me, "shutting down the RPC world took over 30 s"))
    t.daemon = True
    t.start()
    rpc.shutdown(graceful=True)
    t.cancel()


# ------------------------------------------------------------------ oracle handlers
def _start_info(trainer: int):
    return S.oracle.start_info(trainer)


def _round_message(trainer: int, g: int):
    return S.oracle.round_message(trainer, g)


def _final_message(trainer: int):
    return S.oracle.final_message(trainer)


# ------------------------------------------------------------------ server handlers
@rpc.functions.async_execution
def _fetch(rows, wait_round: int):
    fut = torch.futures.Future()
    if not S.store_ready.wait(120.0):
        fut.set_exception(BagpipeError(f"{S.me}: the store was not ready within 120 s"))
        return fut
    S.store.fetch(rows, wait_round, fut.set_result)
    return fut


def _write_back(trainer: int, round_index: int, rows, weights, states):
    S.store_ready.wait(120.0)
    S.store.write_back(trainer, round_index, rows, weights, states)
    return True


class _Fetch:
    def __init__(self, futs, n: int, width: int, state_width: int, timeout: float) -> None:
        self.futs, self.n, self.width, self.sw, self.timeout = futs, n, width, state_width, timeout

    def wait(self):
        w = torch.empty(self.n, self.width)
        s = torch.empty(self.n, self.sw)
        for pos, f in self.futs:
            pw, ps = f.wait()
            w[pos] = pw
            s[pos] = ps
        return w, s


class RpcLinks:
    """A trainer's links over RPC (see :mod:`bagpipe.transport` for the interface).

    Write-backs leave the training thread at once: the rows' device copies go to one sender
    thread, which moves them to host memory (pinned, on a side stream when they are on a GPU),
    splits them by server and posts them. A round boundary used to wait here for the copy, the
    split and the serialization of every evicted row (~250 ms for 540k rows on an H200), a
    stall of one step per round. Order is kept (one sender); the servers' ``wait_round``
    bookkeeping keeps every fetch behind the write-backs it depends on.
    """

    def __init__(self, trainer: int, num_servers: int, width: int, state_width: int) -> None:
        self.trainer, self.m, self.width, self.sw = trainer, num_servers, width, state_width
        self._writes: list = []
        self._sending: list[cf.Future] = []
        self._sender = cf.ThreadPoolExecutor(1, thread_name_prefix=f"write-back-{trainer}")
        self._stream = None

    def start(self) -> dict:
        return rpc.rpc_sync("oracle", _start_info, args=(self.trainer,))

    def round_async(self, g: int):
        return rpc.rpc_async("oracle", _round_message, args=(self.trainer, g))

    def final(self) -> dict:
        return rpc.rpc_sync("oracle", _final_message, args=(self.trainer,))

    def fetch_async(self, rows, wait_round: int):
        futs = []
        for j, (pos, r) in enumerate(split_by_server(rows, self.m)):
            if r.numel():
                futs.append((pos, rpc.rpc_async(f"server_{j}", _fetch, args=(r, wait_round))))
        return _Fetch(futs, rows.numel(), self.width, self.sw, 120.0)

    def write_back(self, round_index: int, rows, weights, states) -> None:
        """Post ``rows`` (CPU) with ``weights``/``states`` (copies, any device); returns at once."""
        self._collect(block=False)
        ready = None
        if weights.is_cuda:
            ready = torch.cuda.Event()
            ready.record()  # after the gather that made these copies
        self._sending.append(
            self._sender.submit(self._send, round_index, rows, weights, states, ready)
        )

    def _to_host(self, t, ready):
        if ready is None:
            return t.cpu()
        if self._stream is None:
            self._stream = torch.cuda.Stream(device=t.device)
        with torch.cuda.device(t.device), torch.cuda.stream(self._stream):
            self._stream.wait_event(ready)
            h = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
            h.copy_(t, non_blocking=True)
            self._stream.synchronize()
        return h

    def _send(self, round_index: int, rows, weights, states, ready) -> list:
        weights, states = self._to_host(weights, ready), self._to_host(states, ready)
        rows = rows.cpu()
        return [rpc.rpc_async(f"server_{j}", _write_back,
                              args=(self.trainer, round_index, r, weights[pos], states[pos]))
                for j, (pos, r) in enumerate(split_by_server(rows, self.m))]  # fmt: skip

    def _collect(self, block: bool) -> None:
        """Move posted write-backs to ``_writes``; raise the first failure (send or answer)."""
        keep = []
        for f in self._sending:
            if block or f.done():
                self._writes.extend(f.result())
            else:
                keep.append(f)
        self._sending = keep
        self._writes = [f for f in self._writes if not f.done() or f.wait() is None]

    def flush(self) -> None:
        self._collect(block=True)
        for f in self._writes:
            f.wait()
        self._writes = []
        self._sender.shutdown(wait=True)


def init_trainer_group(backend: str, addr: str, port: int, rank: int, world: int):
    import torch.distributed as dist

    dist.init_process_group(backend, init_method=f"tcp://{addr}:{port}", rank=rank,
                            world_size=world, timeout=timedelta(seconds=60))  # fmt: skip


def now() -> float:
    return time.perf_counter()
