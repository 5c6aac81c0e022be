"""Baseline: table-wise model-parallel embeddings with all-to-all (TorchRec-style), same models,
data and gradient convention; also a role (``python -m bagpipe.model_parallel``) the launcher
starts with ``--mode model-parallel`` (trainers only: no oracle, no servers).

Each trainer owns whole tables (largest first onto the least-loaded trainer) on its device.
Per step: all-to-all of the ids (lengths, then values) to the tables' owners, pooling there,
all-to-all of the pooled vectors back; in backward, all-to-all of their gradients to the
owners, who apply the row-wise optimizer (the owner sums every trainer's gradient: the same
"sum over trainers" as Bagpipe). Dense parameters are averaged as in Bagpipe.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bagpipe.data import BatchSource, shard
from bagpipe.models import build_model, dense_parameters
from bagpipe.optim import DenseOptimizer, row_optimizer
from bagpipe.server import init_tables


def assign_tables(table_sizes, n: int, dims=None) -> list[int]:
    """Owner of each table, balancing bytes (rows x dim) as TorchRec's table-wise planner.

    Largest table first onto the trainer with the least load (LPT). The number of tables per
    trainer follows from the sizes: Kaggle's 26 tables split 23 vs 3 (16.2M vs 17.6M rows).

    >>> assign_tables([10, 500, 20, 400], 2)
    [1, 0, 1, 1]
    """
    if n < 1:
        raise ValueError(f"n: expected >= 1 trainers, got {n}")
    dims = [1] * len(table_sizes) if dims is None else list(dims)
    if len(dims) != len(table_sizes):
        raise ValueError(f"dims: expected {len(table_sizes)} values (one per table), got "
                         f"{len(dims)}")  # fmt: skip
    cost = [int(r) * int(d) for r, d in zip(table_sizes, dims)]
    load = [0] * n
    owner = [0] * len(table_sizes)
    for f in sorted(range(len(table_sizes)), key=lambda f: (-cost[f], f)):
        o = min(range(n), key=lambda t: (load[t], t))
        owner[f] = o
        load[o] += cost[f]
    return owner


class _Received(nn.Module):
    """Embedding module returning columns of the pooled vectors received this step."""

    positional_keys = True

    def __init__(self, holder, num_features: int, start: int, stop: int) -> None:
        super().__init__()
        self._holder = [holder]
        self.start, self.stop = start, stop
        self.dims = (stop - start,) * num_features
        self.keys = tuple(f"f{i}" for i in range(num_features))

    def forward(self, sparse):
        cur = self._holder[0].current  # [b, F, W]
        return cur[:, :, self.start : self.stop].reshape(cur.shape[0], -1)


class ModelParallelTrainer:
    """One trainer of the model-parallel baseline (``collective``: threads or a process group)."""

    def __init__(self, source: BatchSource, settings: dict, collective, trainer: int, *,
                 model: str = "dlrm", size: str = "small", dense_optim: str = "sgd",
                 dense_lr: float = 0.05, model_seed: int = 0, device="cpu",
                 arch_mlp_bot=None, arch_mlp_top=None) -> None:  # fmt: skip
        s = settings
        self.source, self.s, self.coll, self.t = source, s, collective, trainer
        self.n = s["num_trainers"]
        self.device = torch.device(device)
        self.sizes = list(s["table_sizes"])
        self.nf = len(self.sizes)
        self.d, self.w = s["dim"], s["row_width"]
        self.owner = assign_tables(self.sizes, self.n, [self.w] * self.nf)
        self.mine = [f for f in range(self.nf) if self.owner[f] == trainer]
        self.of = [[f for f in range(self.nf) if self.owner[f] == o] for o in range(self.n)]
        tables = init_tables(s["seed"], self.sizes, self.w)
        self.local_off = {}
        base = 0
        for f in self.mine:
            self.local_off[f] = base
            base += self.sizes[f]
        self.weight = (torch.cat([tables[f] for f in self.mine]) if self.mine
                       else torch.zeros(0, self.w)).to(self.device)  # fmt: skip
        self.opt = row_optimizer(s["emb_optim"], s["emb_optim_params"])
        self.state = self.opt.init_state(self.weight.shape[0], self.w, self.device)
        self.current = None
        extra = _Received(self, self.nf, self.d, self.w) if self.w > self.d else None
        self.model = build_model(model, s["num_dense"] or source.num_dense, self.d,
                                 _Received(self, self.nf, 0, self.d), extra, size=size,
                                 arch_mlp_bot=arch_mlp_bot, arch_mlp_top=arch_mlp_top,
                                 seed=model_seed).to(self.device)  # fmt: skip
        self.dense_opt = DenseOptimizer(dense_parameters(self.model), dense_optim, dense_lr)

    def _now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def step(self, k: int) -> dict:
        from bagpipe.training import sync_dense

        t0 = self._now()
        dense, sparse, labels = shard(self.source.batch(k), self.t, self.n)
        dense, labels = dense.to(self.device), labels.to(self.device)
        b = dense.shape[0]
        lengths = [(sparse.offsets[f][1:] - sparse.offsets[f][:-1]).to(self.device)
                   for f in range(self.nf)]  # fmt: skip
        values = [sparse.values[f].to(self.device, torch.int64) for f in range(self.nf)]
        # 1) ids to owners: lengths (fixed size), then values
        len_in = [torch.stack([lengths[f] for f in self.of[o]]).reshape(-1) if self.of[o]
                  else torch.zeros(0, dtype=torch.int64, device=self.device)
                  for o in range(self.n)]  # fmt: skip
        len_out = [torch.empty(len(self.mine) * b, dtype=torch.int64, device=self.device)
                   for _ in range(self.n)]  # fmt: skip
        self.coll.all_to_all(len_out, len_in)
        val_in = [torch.cat([values[f] for f in self.of[o]]) if self.of[o]
                  else torch.zeros(0, dtype=torch.int64, device=self.device)
                  for o in range(self.n)]  # fmt: skip
        val_out = [torch.empty(int(len_out[o].sum()), dtype=torch.int64, device=self.device)
                   for o in range(self.n)]  # fmt: skip
        self.coll.all_to_all(val_out, val_in)
        t1 = self._now()
        # 2) pool my tables for every requester, from one leaf of the rows read
        nm = len(self.mine)
        if nm:
            ids, offs = [], [0]
            for o in range(self.n):
                lens = len_out[o].view(nm, b)
                pos = 0
                for i, f in enumerate(self.mine):
                    cnt = int(lens[i].sum())
                    ids.append(val_out[o][pos : pos + cnt] + self.local_off[f])
                    pos += cnt
                    offs.append(lens[i])
            rows = torch.cat(ids)
            offsets = torch.cat([torch.zeros(1, dtype=torch.int64, device=self.device),
                                 torch.cat(offs[1:]).cumsum(0)])  # fmt: skip
            uniq, inv = torch.unique(rows, return_inverse=True)
            leaf = self.weight.index_select(0, uniq).requires_grad_(True)
            pooled = F.embedding_bag(inv, leaf, offsets, mode="sum", include_last_offset=True)
            pooled = pooled.view(self.n, nm, b, self.w).transpose(1, 2)  # [n, b, nm, W]
            send = [pooled[o].reshape(b, nm * self.w) for o in range(self.n)]
        else:
            send = [torch.zeros(b, 0, device=self.device) for _ in range(self.n)]
        recv = [torch.empty(b, len(self.of[o]) * self.w, device=self.device) for o in range(self.n)]
        self.coll.all_to_all(recv, [x.detach() for x in send])
        cur = torch.empty(b, self.nf, self.w, device=self.device)
        for o in range(self.n):
            if self.of[o]:
                cur[:, self.of[o]] = recv[o].view(b, len(self.of[o]), self.w)
        self.current = cur.requires_grad_(True)
        t2 = self._now()
        # 3) model
        loss = F.binary_cross_entropy_with_logits(self.model(dense, sparse), labels)
        t3 = self._now()
        self.dense_opt.zero_grad()
        loss.backward()
        t4 = self._now()
        # 4) pooled gradients back to the owners; backward through the pooling; row update
        g = self.current.grad if self.current.grad is not None else torch.zeros_like(cur)
        g_in = [g[:, self.of[o]].reshape(b, -1).contiguous() for o in range(self.n)]
        g_out = [torch.empty(b, nm * self.w, device=self.device) for _ in range(self.n)]
        self.coll.all_to_all(g_out, g_in)
        if nm:
            torch.autograd.backward([s_ for s_ in send], [x for x in g_out])
            self.opt.apply(self.weight, self.state, uniq, leaf.grad)
        t5 = self._now()
        sync_dense(dense_parameters(self.model), self.coll, self.n)
        self.dense_opt.step()
        t6 = self._now()
        return {"step": k, "loss": float(loss.detach()), "ids_all_to_all": t1 - t0,
                "lookup": t2 - t1, "forward": t3 - t2, "backward": t4 - t3,
                "emb_backward": t5 - t4, "dense_sync_optim": t6 - t5}  # fmt: skip

    def run(self, steps: int) -> list[dict]:
        return [self.step(k) for k in range(steps)]

    def tables(self) -> dict[int, torch.Tensor]:
        return {f: self.weight[self.local_off[f] : self.local_off[f] + self.sizes[f]].cpu()
                for f in self.mine}  # fmt: skip


def run_local_model_parallel(source, settings, **kw):
    """All trainers as threads of this process; returns the trainers."""
    import threading

    from bagpipe.transport import ThreadGroup

    n = settings["num_trainers"]
    group = ThreadGroup(n)
    trainers = [ModelParallelTrainer(source, settings, group.member(t), t, **kw) for t in range(n)]
    errors = []

    def work(tr):
        try:
            tr.steps = tr.run(settings["stop_iter"])
        except BaseException as exc:
            errors.append(exc)
            group._barrier.abort()

    ths = [threading.Thread(target=work, args=(tr,)) for tr in trainers]
    for th in ths:
        th.start()
    for th in ths:
        th.join(300)
    if errors:
        raise errors[0]
    return trainers


def main(argv=None) -> int:
    """Role: one model-parallel trainer (reads its shards itself)."""
    from bagpipe import runtime as rt
    from bagpipe.cli import add_trainer_role, parser, run_main, settings_from  # noqa: F401
    from bagpipe.data import open_data
    from bagpipe.trainer import StagedCollective, pick_backend, trainer_device
    from bagpipe.transport import DistCollective

    p = parser(
        "python -m bagpipe.model_parallel",
        __doc__,
        "python -m bagpipe.model_parallel --data DIR --trainer-id 0 --world-size-trainers 2",
    )
    p.add_argument("--data", required=True, help="Criteo directory")
    add_trainer_role(p, "save this trainer's tables here")
    args = p.parse_args(argv)
    s = settings_from(args)
    src = open_data(args.data, s["global_batch"], s["table_sizes"])
    s["table_sizes"], s["num_dense"] = list(src.table_sizes), src.num_dense
    dev = trainer_device(args.device, args.trainer_id)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    backend = pick_backend(args.dist_backend, dev, s["num_trainers"])
    rt.init_trainer_group(backend, args.master_ip, args.master_port_ccom, args.trainer_id,
                          s["num_trainers"])  # fmt: skip
    coll = StagedCollective(dev) if backend == "gloo" and dev.type == "cuda" else DistCollective()
    if backend == "gloo" and dev.type == "cuda":
        coll.all_to_all = _staged_all_to_all(coll)
    tr = ModelParallelTrainer(src, s, coll, args.trainer_id, model=args.model,
                              size=args.model_size, dense_optim=args.dense_optim,
                              dense_lr=args.dense_lr, model_seed=args.model_seed, device=dev,
                              arch_mlp_bot=args.arch_mlp_bot, arch_mlp_top=args.arch_mlp_top)  # fmt: skip
    steps = tr.run(s["stop_iter"])
    if args.stats_out:
        Path(args.stats_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.stats_out).write_text(json.dumps({"trainer": args.trainer_id, "steps": steps,
                                                    "backend": backend, "device": str(dev)}))  # fmt: skip
    if args.dump_dir:
        Path(args.dump_dir).mkdir(parents=True, exist_ok=True)
        torch.save(tr.tables(), Path(args.dump_dir) / f"mp_tables_{args.trainer_id}.pt")
    import torch.distributed as dist

    dist.barrier()
    dist.destroy_process_group()
    med = float(np.median([sum(v for k, v in r.items() if k not in ("step", "loss"))
                           for r in steps]))  # fmt: skip
    print(f"trainer_{args.trainer_id}: {len(steps)} steps, median {1e3 * med:.2f} ms/step "
          "(model-parallel)", flush=True)  # fmt: skip
    return 0


def _staged_all_to_all(coll):
    base = type(coll).__mro__[1].all_to_all

    def a2a(outputs, inputs):
        h_out = [o.cpu() for o in outputs]
        base(coll, h_out, [i.cpu() for i in inputs])
        for o, h in zip(outputs, h_out):
            o.copy_(h)

    return a2a


if __name__ == "__main__":
    from bagpipe.cli import run_main

    sys.exit(run_main(main))
