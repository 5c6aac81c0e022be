"""Flags shared by the roles (the reference's names, kebab-case) and their conversion to the
run's settings; every role validates them before joining the run."""

from __future__ import annotations

import argparse
import sys

from bagpipe import config as cfg
from bagpipe.errors import BagpipeError
from bagpipe.models import MODELS, SIZES, extra_columns
from bagpipe.plan import MODES


class Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    pass


def parser(prog: str, doc: str, example: str) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(prog=prog, description=doc, formatter_class=Formatter,
                                   epilog=f"example:\n  {example}")  # fmt: skip


def positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {v}")
    return v


def proportion(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fraction in (0, 1], got {text!r}") from None
    if not 0.0 < v <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction in (0, 1], got {v}")
    return v


def int_list(text: str) -> list[int]:
    try:
        out = [int(x) for x in text.replace(",", "-").split("-") if x]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected sizes like 1000-200-30, got {text!r}") from None
    if not out or min(out) < 1:
        raise argparse.ArgumentTypeError(f"expected positive sizes like 1000-200-30, got {text!r}")
    return out


def add_trainer_role(p: argparse.ArgumentParser, dump_help: str) -> None:
    """Options of a trainers-only baseline role (model-parallel, torchrec-dmp), shape and world
    included; ``--data`` is the caller's (required or not)."""
    p.add_argument("--trainer-id", type=int, default=0, help="0..N-1")
    p.add_argument("--device", default="cpu", help="cpu, cuda (GPU trainer-id mod #GPUs), cuda:K")
    p.add_argument("--dist-backend", choices=("auto", "gloo", "nccl"), default="auto",
                   help="auto: nccl on distinct GPUs, else gloo")  # fmt: skip
    p.add_argument("--master-port-ccom", type=int, default=9988,
                   help="port of the trainers' collective group")  # fmt: skip
    p.add_argument("--model-size", default="paper", help="MLP sizes")
    p.add_argument("--arch-mlp-bot", default=None, help="DLRM bottom MLP")
    p.add_argument("--arch-mlp-top", default=None, help="DLRM top MLP")
    p.add_argument("--dense-optim", default="sgd", help="sgd or adagrad")
    p.add_argument("--dense-lr", type=float, default=0.01, help="dense learning rate")
    p.add_argument("--model-seed", type=int, default=0, help="dense weights' seed")
    p.add_argument("--stats-out", default=None, help="per-step timings (JSON)")
    p.add_argument("--dump-dir", default=None, help=dump_help)
    add_world(p)
    add_shape(p, oracle=True)


def add_world(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("run layout")
    g.add_argument("--master-ip", default="127.0.0.1", help="the oracle's address (RPC rendezvous)")
    g.add_argument("--master-port", type=int, default=18000, help="RPC rendezvous port")
    g.add_argument("--world-size-trainers", type=positive_int, default=2, help="trainers N")
    g.add_argument("--num-servers", type=positive_int, default=1, help="embedding servers M")
    g.add_argument("--startup-timeout", type=float, default=120.0,
                   help="seconds to wait for the other roles at start-up")  # fmt: skip


def add_shape(p: argparse.ArgumentParser, oracle: bool = False) -> None:
    g = p.add_argument_group("run shape (must agree across roles)")
    g.add_argument("--mode", choices=MODES, default="bagpipe",
                   help="bagpipe, or a baseline: ps (no cache, lookahead 1), static (hot rows)")  # fmt: skip
    g.add_argument("--lookahead-value", type=positive_int, default=200, help="lookahead L")
    g.add_argument("--cleanup-batch-proportion", "--cleanup-proportion", type=proportion,
                   default=0.25, dest="cleanup_proportion",
                   help="evict/prefetch every max(1, int(P * L)) steps")  # fmt: skip
    g.add_argument("--mini-batch-size", type=positive_int, default=None if not oracle else 2048,
                   help="GLOBAL batch (split equally over the trainers)")  # fmt: skip
    g.add_argument("--stop-iter", type=positive_int, default=None if not oracle else 1000,
                   help="training steps")  # fmt: skip
    g.add_argument("--cache-size", type=positive_int, default=None if not oracle else 1_000_000,
                   help="cache rows per trainer")  # fmt: skip
    g.add_argument("--emb-size", type=positive_int, default=48, help="embedding dim")
    g.add_argument("--ln-emb", type=int_list, default=None,
                   help="table sizes, e.g. 1000-200-30 (default: from the data)")  # fmt: skip
    g.add_argument("--emb-info-file", default=None, help="table sizes, one per line")
    g.add_argument("--model", choices=MODELS, default="dlrm",
                   help="decides the row width (Wide&Deep and DeepFM carry 1 more column)")  # fmt: skip
    g.add_argument("--emb-optim", choices=("sgd", "adagrad"), default="sgd")
    g.add_argument("--emb-lr", type=float, default=0.01, help="embedding learning rate")
    g.add_argument("--seed", type=int, default=0, help="table initialisation seed")


def table_sizes(args) -> list[int] | None:
    if args.ln_emb is not None and args.emb_info_file is not None:
        raise BagpipeError("pass --ln-emb or --emb-info-file, not both")
    if args.emb_info_file is not None:
        from bagpipe.data import read_table_sizes

        return read_table_sizes(args.emb_info_file)
    return args.ln_emb


def settings_from(args) -> dict:
    return cfg.settings(
        mode=args.mode, table_sizes=table_sizes(args), num_dense=None, dim=args.emb_size,
        row_width=args.emb_size + extra_columns(args.model), lookahead=args.lookahead_value,
        cleanup_proportion=args.cleanup_proportion, global_batch=args.mini_batch_size,
        num_trainers=args.world_size_trainers, num_servers=args.num_servers,
        stop_iter=args.stop_iter, cache_size=args.cache_size, emb_optim=args.emb_optim,
        emb_optim_params={"lr": args.emb_lr}, seed=args.seed,
    )  # fmt: skip


def run_main(fn, argv=None) -> int:
    """Run a role's main; a BagpipeError becomes ``error: ...`` and exit 1."""
    try:
        return fn(argv)
    except BagpipeError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1


__all__ = ["SIZES", "add_shape", "add_world", "parser", "run_main", "settings_from"]
