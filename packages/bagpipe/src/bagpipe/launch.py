"""Start a whole run on this host: the oracle, M embedding servers and N trainers on free
loopback ports, their logs streamed with a ``[role]`` prefix. Exits 0 when every role did,
else 1 naming the role that failed first; it stops only the processes it started.

Flags it does not know are passed to every role (e.g. ``--emb-optim adagrad``); trainer-only
flags go through ``--trainer-args``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time

from bagpipe.cli import parser, positive_int

EXAMPLE = ("python -m bagpipe.launch --trainers 2 --servers 2 --model dlrm --data DIR "
           "--mini-batch-size 256 --stop-iter 50 --cache-size 20000 --lookahead-value 5")  # fmt: skip


# baselines whose trainers are the whole run: mode -> role module
TRAINER_ONLY = {"model-parallel": "bagpipe.model_parallel", "torchrec-dmp": "bagpipe.torchrec_dmp"}
MODES = ("bagpipe", "ps", "static", *TRAINER_ONLY)


def free_ports(n: int) -> list[int]:
    """``n`` distinct free TCP ports on loopback (bound to port 0, then released)."""
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def _pump(name: str, stream, out, lock: threading.Lock) -> None:
    for line in iter(stream.readline, ""):
        with lock:
            out.write(f"[{name}] {line}")
            out.flush()
    stream.close()


def role_commands(args, rest: list[str], ports: list[int]) -> list[tuple[str, list[str]]]:
    common = ["--master-ip", "127.0.0.1", "--master-port", str(ports[0]),
              "--world-size-trainers", str(args.trainers), "--num-servers", str(args.servers),
              "--startup-timeout", str(args.startup_timeout), "--model", args.model, *rest]  # fmt: skip
    py = [sys.executable, "-m"]
    if args.mode in TRAINER_ONLY:  # trainers only, each reads its shards itself
        return [(f"trainer_{t}", [*py, TRAINER_ONLY[args.mode], "--trainer-id", str(t),
                                  "--data", args.data, "--master-port-ccom", str(ports[1]),
                                  "--device", args.device, *common,
                                  *(["--stats-out", f"{args.out}/trainer_{t}.json"]
                                    if args.out else []),
                                  *(["--dump-dir", args.out] if args.dump else []),
                                  *args.trainer_args.split()])
                for t in range(args.trainers)]  # fmt: skip
    common += ["--mode", args.mode]
    cmds = [("oracle", [*py, "bagpipe.oracle_cacher", "--data", args.data, *common,
                        *([] if not args.out else ["--stats-out", f"{args.out}/oracle.json"])])]  # fmt: skip
    for j in range(args.servers):
        cmds.append((f"server_{j}", [*py, "bagpipe.embedding_server", "--server-id", str(j),
                                     *common, *(["--dump-dir", args.out] if args.dump else [])]))  # fmt: skip
    for t in range(args.trainers):
        extra = ["--stats-out", f"{args.out}/trainer_{t}.json"] if args.out else []
        extra += ["--dump-dir", args.out] if args.dump else []
        cmds.append((f"trainer_{t}", [*py, "bagpipe.trainer", "--trainer-id", str(t),
                                      "--master-port-ccom", str(ports[1]), "--device", args.device,
                                      *common, *extra, *args.trainer_args.split()]))  # fmt: skip
    return cmds


def run(args, rest: list[str], out=sys.stdout) -> int:
    ports = free_ports(2)
    env = dict(os.environ)
    env.setdefault("TP_SOCKET_IFNAME", "lo")
    env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    env.setdefault("PYTHONUNBUFFERED", "1")
    if args.device == "cpu":
        env.setdefault("OMP_NUM_THREADS", "1")
    lock = threading.Lock()
    procs: list[tuple[str, subprocess.Popen]] = []
    pumps = []
    deadline = time.monotonic() + args.timeout
    try:
        for name, cmd in role_commands(args, rest, ports):
            p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                 env=env, start_new_session=True)  # fmt: skip
            procs.append((name, p))
            _say(out, lock, f"[launch] {name} pid {p.pid}")
            th = threading.Thread(target=_pump, args=(name, p.stdout, out, lock), daemon=True)
            th.start()
            pumps.append(th)
        failed: list[tuple[str, int]] = []
        while True:
            running = False
            for name, p in procs:
                rc = p.poll()
                if rc is None:
                    running = True
                elif rc != 0 and name not in [f for f, _ in failed]:
                    failed.append((name, rc))
            if failed or not running:
                break
            if time.monotonic() > deadline:
                _say(
                    out,
                    lock,
                    f"error: launch: the run took longer than --timeout {args.timeout:.0f} s",
                )
                return 1
            time.sleep(0.1)
        if failed:
            grace = time.monotonic() + 35.0  # let the others notice and explain themselves
            while time.monotonic() < grace and any(p.poll() is None for _, p in procs):
                time.sleep(0.1)
            # a role killed by a signal is the cause; the others exited because they lost it
            for name, p in procs:
                rc = p.poll()
                if rc is not None and rc != 0 and name not in [f for f, _ in failed]:
                    failed.append((name, rc))
            failed.sort(key=lambda f: f[1] >= 0)
            first, rc = failed[0]
            how = f"killed by signal {-rc}" if rc < 0 else f"exit status {rc}"
            _say(out, lock, f"error: launch: {first} failed first ({how})")
            return 1
        for th in pumps:
            th.join(5)
        _say(out, lock, f"launch: all {len(procs)} roles finished")
        return 0
    finally:
        _stop(procs)


def _say(out, lock, msg: str) -> None:
    with lock:
        out.write(msg + "\n")
        out.flush()


def _stop(procs) -> None:
    """Terminate the children we started that still run (their process groups), then kill."""
    alive = [(n, p) for n, p in procs if p.poll() is None]
    for _, p in alive:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGTERM)
    end = time.monotonic() + 5.0
    for _, p in alive:
        try:
            p.wait(max(0.1, end - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def main(argv=None) -> int:
    p = parser("python -m bagpipe.launch", __doc__, EXAMPLE)
    p.add_argument("--trainers", type=positive_int, default=2, help="trainer processes N")
    p.add_argument("--servers", type=positive_int, default=1, help="embedding servers M")
    p.add_argument("--model", default="dlrm", help="dlrm, wide-deep, dcn or deepfm")
    p.add_argument("--data", required=True, help="Criteo directory or JSON-lines parts")
    p.add_argument("--device", default="cpu", help="trainers' device: cpu or cuda")
    p.add_argument("--mode", choices=MODES, default="bagpipe",
                   help="bagpipe or a baseline (torchrec-dmp: TorchRec's own DMP, needs "
                        "torchrec and FBGEMM's training kernels)")  # fmt: skip
    p.add_argument("--out", default=None, help="directory for stats and final tables")
    p.add_argument(
        "--dump",
        action="store_true",
        help="save the final tables (servers) and dense weights (trainer 0) in --out",
    )
    p.add_argument("--trainer-args", default="", help="extra flags for the trainers only")
    p.add_argument("--timeout", type=float, default=3600.0, help="stop everything after this")
    p.add_argument("--startup-timeout", type=float, default=120.0)
    args, rest = p.parse_known_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run's finally stops the children
    if args.dump and not args.out:
        p.error("--dump needs --out DIR")
    if args.out:
        os.makedirs(args.out, exist_ok=True)
    return run(args, rest)


if __name__ == "__main__":
    sys.exit(main())
