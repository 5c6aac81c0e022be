"""Trainer role: trains DLRM, Wide&Deep, DCN or DeepFM on its shard of every global batch,
with embeddings read only from its BagCache and dense gradients averaged over the trainers
(gloo on CPU, NCCL on distinct GPUs)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from bagpipe import runtime as rt
from bagpipe.bagcache import BagCache
from bagpipe.cli import add_shape, add_world, parser, run_main, settings_from
from bagpipe.errors import BagpipeError
from bagpipe.models import SIZES, build_model
from bagpipe.optim import row_optimizer
from bagpipe.training import make_dense_optimizer, train_loop
from bagpipe.transport import DistCollective

EXAMPLE = ("python -m bagpipe.trainer --trainer-id 0 --world-size-trainers 2 --model dlrm "
           "--lookahead-value 200 --cache-size 200000 --device cuda")  # fmt: skip


def pick_backend(backend: str, device: torch.device, num_trainers: int) -> str:
    """nccl when every trainer has its own GPU, else gloo (also for trainers sharing a GPU)."""
    if backend != "auto":
        return backend
    if device.type == "cuda" and num_trainers <= torch.cuda.device_count():
        return "nccl"
    return "gloo"


def trainer_device(spec: str, trainer: int) -> torch.device:
    if spec == "cuda":
        if not torch.cuda.is_available():
            raise BagpipeError("--device cuda: no CUDA GPU is visible")
        return torch.device("cuda", trainer % torch.cuda.device_count())
    return torch.device(spec)


class StagedCollective(DistCollective):
    """gloo with GPU tensors: reduce through host copies (trainers sharing one GPU)."""

    def __init__(self, device: torch.device) -> None:
        super().__init__()
        self.device = device

    def all_reduce(self, t):
        h = t.cpu()
        super().all_reduce(h)
        t.copy_(h)

    def all_reduce_async(self, t):
        self.all_reduce(t)
        from bagpipe.transport import Done

        return Done()


def pooling_name(text: str) -> str:
    """argparse type for ``--pooling``: checks the name (and the emb-kernels install) early."""
    from bagpipe.lookup import make_pool

    try:
        make_pool(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    return text


def main(argv=None) -> int:
    p = parser("python -m bagpipe.trainer", __doc__, EXAMPLE)
    p.add_argument("--trainer-id", "--dist-worker-id", type=int, default=0, help="0..N-1")
    p.add_argument("--device", default="cpu", help="cpu, cuda (GPU trainer-id mod #GPUs), cuda:K")
    p.add_argument("--dist-backend", choices=("auto", "gloo", "nccl"), default="auto")
    p.add_argument("--master-port-ccom", type=int, default=9988,
                   help="port of the trainers' collective group (on --master-ip)")  # fmt: skip
    p.add_argument("--model-size", choices=SIZES, default="paper",
                   help="MLP sizes: the paper's, or small ones for tests")  # fmt: skip
    p.add_argument("--arch-mlp-bot", default=None, help="DLRM bottom MLP, e.g. 13-512-256-64-48")
    p.add_argument("--arch-mlp-top", default=None, help="DLRM top MLP, e.g. 1024-1024-1-... -1")
    p.add_argument("--pooling", type=pooling_name, default="torch",
                   help="embedding lookup: torch (F.embedding_bag), emb-kernels or "
                        "emb-kernels:<variant> (emb-kernels' kernels, fast by default)")  # fmt: skip
    p.add_argument("--dense-optim", choices=("sgd", "adagrad"), default="sgd")
    p.add_argument("--dense-lr", type=float, default=0.01)
    p.add_argument("--model-seed", type=int, default=0, help="dense weights' seed")
    p.add_argument("--stats-out", default=None, help="per-step timings and cache stats (JSON)")
    p.add_argument("--dump-dir", default=None, help="trainer 0 saves its dense model here")
    add_world(p)
    add_shape(p)
    args = p.parse_args(argv)
    n = args.world_size_trainers
    t = args.trainer_id
    if not 0 <= t < n:
        raise BagpipeError(f"--trainer-id {t}: expected 0..{n - 1} (--world-size-trainers {n})")
    s = settings_from(args)
    device = trainer_device(args.device, t)
    names = rt.role_names(args.num_servers, n)
    me = f"trainer_{t}"
    rt.S.names = names
    torch.manual_seed(args.model_seed)
    rt.init_world(me, 1 + args.num_servers + t, len(names), args.master_ip, args.master_port,
                  args.startup_timeout)  # fmt: skip
    try:
        m = rt.handshake(s)
    except BagpipeError as exc:
        rt.die(me, str(exc))
    try:
        rt.start_watchdog(names)
        backend = pick_backend(args.dist_backend, device, n)
        if device.type == "cuda":
            torch.cuda.set_device(device)
        rt.init_trainer_group(backend, args.master_ip, args.master_port_ccom, t, n)
        coll = (
            StagedCollective(device)
            if backend == "gloo" and device.type == "cuda"
            else DistCollective()
        )
        opt = row_optimizer(m["emb_optim"], m["emb_optim_params"])
        links = rt.RpcLinks(
            t, m["num_servers"], m["row_width"], m["row_width"] * opt.state_width_factor
        )
        bag = BagCache(links, coll, trainer_id=t, num_trainers=n, emb_size=m["dim"],
                       extra_columns=m["row_width"] - m["dim"], cache_size=m["cache_size"],
                       emb_optim=m["emb_optim"], emb_optim_params=m["emb_optim_params"],
                       device=device, profile=True, pooling=args.pooling)  # fmt: skip
        model = build_model(args.model, m["num_dense"], m["dim"], bag.embedding, bag.extra,
                            size=args.model_size, arch_mlp_bot=args.arch_mlp_bot,
                            arch_mlp_top=args.arch_mlp_top, seed=args.model_seed).to(device)  # fmt: skip
        dense_opt = make_dense_optimizer(model, args.dense_optim, args.dense_lr)
        steps = train_loop(bag, model, dense_opt, coll, n)
        summary = bag.summary()
        if summary["misses"]:
            raise BagpipeError(f"{me}: {summary['misses']} cache misses")
        if args.stats_out:
            Path(args.stats_out).parent.mkdir(parents=True, exist_ok=True)
            with open(args.stats_out, "w") as fh:
                json.dump({"trainer": t, "steps": steps, "cache": bag.stats, "summary": summary,
                           "backend": backend, "device": str(device),
                           "decide_seconds_per_batch": bag.decide_seconds_per_batch}, fh)  # fmt: skip
        if args.dump_dir and t == 0:
            Path(args.dump_dir).mkdir(parents=True, exist_ok=True)
            torch.save({k: v.cpu() for k, v in model.state_dict().items()},
                       Path(args.dump_dir) / "dense.pt")  # fmt: skip
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
        rt.finish()
        times = [r["next_batch"] + r["forward"] + r["backward"] + r["dense_sync"] + r["dense_optim"]
                 for r in steps]  # fmt: skip
        med = sorted(times)[len(times) // 2] if times else 0.0
        print(f"{me}: {len(steps)} steps, median {1e3 * med:.2f} ms/step, hit rate "
              f"{summary['hit_rate']:.3f}, peak {summary['peak_resident']} rows", flush=True)  # fmt: skip
    except Exception as exc:
        rt.fail(exc)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
