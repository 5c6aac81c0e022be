"""Oracle cacher role: reads the run's batches, decides every trainer's prefetch, residency,
eviction and synchronization, checks the cache size, and serves the trainers their rounds."""

from __future__ import annotations

import contextlib
import json
import sys
import time

from bagpipe import runtime as rt
from bagpipe.cli import add_shape, add_world, parser, run_main, settings_from
from bagpipe.data import open_data
from bagpipe.errors import BagpipeError
from bagpipe.oracle import OracleService

EXAMPLE = ("python -m bagpipe.oracle_cacher --data DIR --mini-batch-size 2048 --stop-iter 100 "
           "--cache-size 200000 --world-size-trainers 2 --num-servers 1")  # fmt: skip


def main(argv=None) -> int:
    p = parser("python -m bagpipe.oracle_cacher", __doc__, EXAMPLE)
    add_world(p)
    add_shape(p, oracle=True)
    p.add_argument("--data", "--processed-csv", required=True,
                   help="Criteo directory (meta.json) or JSON-lines parts (part_0.txt ...)")  # fmt: skip
    p.add_argument("--stats-out", default=None, help="write the oracle's statistics (JSON) here")
    args = p.parse_args(argv)
    s = settings_from(args)
    source = open_data(args.data, s["global_batch"], s["table_sizes"])
    names = rt.role_names(args.num_servers, args.world_size_trainers)
    rt.S.names = names
    rt.init_world("oracle", 0, len(names), args.master_ip, args.master_port, args.startup_timeout)
    try:
        oracle = OracleService(source, s)
    except BagpipeError as exc:
        rt.oracle_set_ready(None, str(exc))
        _fail_after_handshake(str(exc), args.startup_timeout)
    rt.S.oracle = oracle
    rt.oracle_set_ready(oracle.settings, None)
    try:
        rt.oracle_wait_handshake(args.startup_timeout)
    except BagpipeError as exc:
        _fail_after_handshake(str(exc), args.startup_timeout)
    try:
        plan = oracle.plan
        print(f"oracle: {plan.num_steps} steps, {len(plan.rounds)} rounds of "
              f"{plan.cleanup_interval}, peak resident rows {max(plan.peak_resident)} of "
              f"{s['cache_size']}, decision {1e3 * oracle.decide_seconds_per_batch:.2f} ms/batch",
              flush=True)  # fmt: skip
        rt.start_watchdog(names)
        rt.finish()
        if args.stats_out:
            with open(args.stats_out, "w") as fh:
                json.dump({"decide_seconds_per_batch": oracle.decide_seconds_per_batch,
                           "read_seconds": oracle.read_seconds, "plan_seconds": plan.seconds,
                           "peak_resident": list(plan.peak_resident),
                           "num_steps": plan.num_steps}, fh)  # fmt: skip
    except Exception as exc:
        rt.fail(exc)
    return 0


def _fail_after_handshake(message: str, timeout: float) -> None:
    """Let the waiting roles receive the error, then stop."""
    with contextlib.suppress(BagpipeError):
        rt.oracle_wait_handshake(min(timeout, 30.0))
    time.sleep(1.0)
    rt.die("oracle", message)


if __name__ == "__main__":
    sys.exit(run_main(main))
