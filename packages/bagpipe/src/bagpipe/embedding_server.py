"""Embedding server role: holds rows ``r % M == server-id`` of every table on CPU with their
optimizer state; answers the trainers' fetches and takes their write-backs."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from bagpipe import runtime as rt
from bagpipe.cli import add_shape, add_world, parser, run_main, settings_from
from bagpipe.errors import BagpipeError
from bagpipe.optim import row_optimizer
from bagpipe.server import EmbeddingStore

EXAMPLE = "python -m bagpipe.embedding_server --server-id 0 --num-servers 1 --emb-size 48"


def main(argv=None) -> int:
    p = parser("python -m bagpipe.embedding_server", __doc__, EXAMPLE)
    p.add_argument("--server-id", "--emb-worker-id", type=int, default=0, help="0..M-1")
    p.add_argument("--dump-dir", default=None,
                   help="write this server's final rows to DIR/server_<id>.pt at the end")  # fmt: skip
    add_world(p)
    add_shape(p)
    args = p.parse_args(argv)
    if not 0 <= args.server_id < args.num_servers:
        raise BagpipeError(f"--server-id {args.server_id}: expected 0..{args.num_servers - 1} "
                           f"(--num-servers {args.num_servers})")  # fmt: skip
    s = settings_from(args)
    names = rt.role_names(args.num_servers, args.world_size_trainers)
    me = f"server_{args.server_id}"
    rt.S.names = names
    rt.init_world(me, 1 + args.server_id, len(names), args.master_ip, args.master_port,
                  args.startup_timeout)  # fmt: skip
    try:
        m = rt.handshake(s)
    except BagpipeError as exc:
        rt.die(me, str(exc))
    try:
        opt = row_optimizer(m["emb_optim"], m["emb_optim_params"])
        rt.S.store = EmbeddingStore(m["table_sizes"], m["row_width"],
                                    m["row_width"] * opt.state_width_factor, getattr(opt, "init", 0.0),
                                    m["num_trainers"], args.server_id, m["num_servers"], m["seed"])  # fmt: skip
        rt.S.store_ready.set()
        rt.start_watchdog(names)
        rt.finish()
        store = rt.S.store
        if args.dump_dir:
            Path(args.dump_dir).mkdir(parents=True, exist_ok=True)
            torch.save({"weight": store.weight, "state": store.state},
                       Path(args.dump_dir) / f"server_{args.server_id}.pt")  # fmt: skip
        print(f"{me}: served {store.fetched_rows} rows, took {store.written_rows} back", flush=True)
    except Exception as exc:
        rt.fail(exc)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
