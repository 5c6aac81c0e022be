"""Baseline: TorchRec's own DistributedModelParallel, same models, data and gradient
convention; a role (``python -m bagpipe.torchrec_dmp``) the launcher starts with
``--mode torchrec-dmp`` (trainers only: no oracle, no servers).

One ``EmbeddingBagCollection`` holds every table (row width = dim, + 1 column for Wide&Deep
and DeepFM, as a Bagpipe row, zero-padded to a multiple of 4 columns as FBGEMM requires; the
padding is never read, gets zero gradients and stays zero), sharded TABLE_WISE over the trainers by TorchRec's planner
(``ParameterConstraints``) with the fused compute kernel: FBGEMM's training TBE applies the
embedding optimizer (exact SGD or exact Adagrad, torch's formulas) inside the backward pass.
TorchRec's all-to-alls carry the ids and the pooled vectors; the rest of the model is wrapped
in DDP by DMP and stepped by the same dense optimizer as every other mode.

Gradient scale: TorchRec divides the pooled gradients by the world size by default (rows get
the global-batch mean); this role turns that off (``set_gradient_division(False)``) so rows
receive the sum over trainers, as in Bagpipe and its reference. Dense gradients: DDP's mean.

It needs ``torchrec`` and ``fbgemm-gpu`` whose training TBE (forward *and* backward) runs on
the trainers' device. :func:`missing` probes exactly that; when it fails the role stops
before joining the run with one error naming what is missing.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bagpipe.data import BatchSource, shard
from bagpipe.errors import BagpipeError
from bagpipe.model_parallel import _Received
from bagpipe.models import build_model, dense_parameters
from bagpipe.optim import DenseOptimizer, optimizer_name
from bagpipe.server import init_tables

MODE = "torchrec-dmp"
PREFIX = f"{MODE}: TorchRec's DistributedModelParallel cannot train here: "


def _emb_optim_type(name: str):
    from fbgemm_gpu.split_embedding_configs import EmbOptimType

    return {"sgd": EmbOptimType.EXACT_SGD, "adagrad": EmbOptimType.EXACT_ADAGRAD}[name]


def fused_params(emb_optim: str, params: dict) -> dict:
    """TorchRec's fused optimizer settings equal to Bagpipe's row optimizer ``emb_optim``."""
    name = optimizer_name(emb_optim)
    out = {"optimizer": _emb_optim_type(name), "learning_rate": float(params["lr"])}
    if name == "adagrad":  # torch.optim.Adagrad's eps, accumulator starting at 0
        out["eps"] = float(params.get("eps", 1e-10))
    return out


def missing(device="cpu", emb_optim: str = "sgd") -> str | None:
    """Why TorchRec's DMP cannot train on ``device`` here (None: it can).

    Imports torchrec and fbgemm_gpu, then runs FBGEMM's training TBE (the fused kernel DMP
    uses) forward and backward on two ids with ``emb_optim``.
    """
    dev = torch.device(device)
    try:
        import fbgemm_gpu  # noqa: F401
    except Exception as exc:  # ImportError, or a broken native library (OSError, RuntimeError)
        return (f"fbgemm_gpu does not import ({type(exc).__name__}: {exc}); install "
                "fbgemm-gpu (fbgemm-gpu-cpu on CPU) matching torch")  # fmt: skip
    try:
        import torchrec  # noqa: F401
        from torchrec.distributed.model_parallel import DistributedModelParallel  # noqa: F401
    except Exception as exc:
        return (f"torchrec does not import ({type(exc).__name__}: {exc}); "
                "pip install 'bagpipe[torchrec]'")  # fmt: skip
    try:
        from fbgemm_gpu.split_table_batched_embeddings_ops_common import (
            EmbeddingLocation,
            PoolingMode,
        )
        from fbgemm_gpu.split_table_batched_embeddings_ops_training import (
            ComputeDevice,
            SplitTableBatchedEmbeddingBagsCodegen,
        )

        cpu = dev.type == "cpu"
        loc = EmbeddingLocation.HOST if cpu else EmbeddingLocation.DEVICE
        tbe = SplitTableBatchedEmbeddingBagsCodegen(
            [(4, 4, loc, ComputeDevice.CPU if cpu else ComputeDevice.CUDA)],
            optimizer=_emb_optim_type(optimizer_name(emb_optim)), learning_rate=0.1,
            pooling_mode=PoolingMode.SUM, device=dev,
        )  # fmt: skip
        ids = torch.tensor([1, 2], dtype=torch.int64, device=dev)
        offsets = torch.tensor([0, 1, 2], dtype=torch.int64, device=dev)
        tbe(ids, offsets).sum().backward()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return (f"FBGEMM's training TBE (TorchRec's fused kernel) does not run on {dev} "
                f"with {optimizer_name(emb_optim)}: {type(exc).__name__}: {first}")  # fmt: skip
    return None


def missing_in_subprocess(device: str = "cpu", emb_optim: str = "sgd",
                          timeout: float = 300.0) -> str | None:  # fmt: skip
    """:func:`missing` in a fresh process (no CUDA or autograd work in the caller)."""
    cmd = [sys.executable, "-m", "bagpipe.torchrec_dmp", "--check", "--device", device,
           "--emb-optim", emb_optim]  # fmt: skip
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"the TorchRec probe did not finish within {timeout:.0f} s"
    if p.returncode == 0:
        return None
    lines = [ln for ln in (p.stdout + p.stderr).splitlines() if ln.startswith("error: ")]
    if not lines:
        return (p.stdout + p.stderr).strip()[-500:] or f"the probe exited {p.returncode}"
    return lines[-1][len("error: ") :].removeprefix(PREFIX)


def _quiet() -> None:
    """Drop TorchRec's planner warnings about dry runs and topology (noise in every log)."""
    import logging
    import warnings

    logging.getLogger("torchrec.distributed.planner").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning, module="torchrec")
    warnings.filterwarnings("ignore", category=UserWarning, module="torchrec")


def require(device="cpu", emb_optim: str = "sgd") -> None:
    why = missing(device, emb_optim)
    if why is not None:
        raise BagpipeError(PREFIX + why)


class _Net(nn.Module):
    """The EBC (sharded by DMP) feeding the model's embedding modules, which read its output."""

    def __init__(self, ebc, model: nn.Module, num_features: int, width: int) -> None:
        super().__init__()
        self.ebc = ebc
        self.model = model
        self.nf, self.w = num_features, width
        self.keys = [f"f{i}" for i in range(num_features)]
        self.current = None

    def forward(self, dense, kjt, sparse):
        kt = self.ebc(kjt)
        if list(kt.keys()) == self.keys:
            cur = kt.values()
        else:
            d = kt.to_dict()
            cur = torch.cat([d[k] for k in self.keys], dim=1)
        self.current = cur.view(cur.shape[0], self.nf, self.w)
        return self.model(dense, sparse)


class DMPTrainer:
    """One trainer of the TorchRec DMP baseline (torch.distributed must be initialised)."""

    def __init__(self, source: BatchSource, settings: dict, trainer: int, *,
                 model: str = "dlrm", size: str = "small", dense_optim: str = "sgd",
                 dense_lr: float = 0.05, model_seed: int = 0, device="cpu",
                 arch_mlp_bot=None, arch_mlp_top=None) -> None:  # fmt: skip
        import torch.distributed as dist
        from torchrec import EmbeddingBagCollection, EmbeddingBagConfig
        from torchrec.distributed import comm_ops
        from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
        from torchrec.distributed.model_parallel import DistributedModelParallel
        from torchrec.distributed.planner import (
            EmbeddingShardingPlanner,
            ParameterConstraints,
            Topology,
        )
        from torchrec.distributed.types import ShardingType

        _quiet()
        s = settings
        self.source, self.s, self.t = source, s, trainer
        self.n = s["num_trainers"]
        self.device = torch.device(device)
        self.sizes = list(s["table_sizes"])
        self.nf = len(self.sizes)
        self.d, self.w = s["dim"], s["row_width"]
        self.wp = -(-self.w // 4) * 4  # FBGEMM needs a multiple of 4 columns: pad, never read
        self.keys = [f"f{i}" for i in range(self.nf)]
        comm_ops.set_gradient_division(False)  # rows get the sum over trainers (Bagpipe's scale)
        cfgs = [EmbeddingBagConfig(name=f"t{f}", embedding_dim=self.wp, num_embeddings=n,
                                   feature_names=[self.keys[f]]) for f, n in enumerate(self.sizes)]  # fmt: skip
        ebc = EmbeddingBagCollection(tables=cfgs, device=torch.device("meta"))
        holder = self  # the embedding modules read self.net.current through this trainer
        extra = _Received(_Current(holder), self.nf, self.d, self.w) if self.w > self.d else None
        net = build_model(model, s["num_dense"] or source.num_dense, self.d,
                          _Received(_Current(holder), self.nf, 0, self.d), extra, size=size,
                          arch_mlp_bot=arch_mlp_bot, arch_mlp_top=arch_mlp_top,
                          seed=model_seed)  # fmt: skip
        self.net = _Net(ebc, net, self.nf, self.wp)
        sharder = EmbeddingBagCollectionSharder(
            fused_params=fused_params(s["emb_optim"], s["emb_optim_params"])
        )
        constraints = {f"t{f}": ParameterConstraints(sharding_types=[ShardingType.TABLE_WISE.value],
                                                     compute_kernels=["fused"])
                       for f in range(self.nf)}  # fmt: skip
        topo = Topology(world_size=self.n, compute_device=self.device.type)
        planner = EmbeddingShardingPlanner(topology=topo, constraints=constraints)
        self.plan = planner.collective_plan(self.net, [sharder], dist.GroupMember.WORLD)
        self.dmp = DistributedModelParallel(self.net, device=self.device, plan=self.plan,
                                            sharders=[sharder])  # fmt: skip
        self.owner = self._owners()
        self.mine = [f for f in range(self.nf) if self.owner[f] == trainer]
        tables = init_tables(s["seed"], self.sizes, self.w)
        with torch.no_grad():
            for f, shard_ in self._local_tables().items():
                shard_.zero_()
                shard_[:, : self.w].copy_(tables[f].to(self.device))
        self.dense = dense_parameters(net)
        self.dense_net = net
        self.dense_opt = DenseOptimizer(self.dense, dense_optim, dense_lr)

    def _owners(self) -> list[int]:
        ps = self.plan.plan["ebc"]  # the EBC is module "ebc" of the net
        owner = []
        for f in range(self.nf):
            p = ps[f"t{f}"]
            if p.sharding_type != "table_wise" or len(p.ranks) != 1:
                raise BagpipeError(f"{MODE}: the planner did not shard table {f} table-wise "
                                   f"({p.sharding_type} on ranks {p.ranks})")  # fmt: skip
            owner.append(p.ranks[0])
        return owner

    def _local_tables(self) -> dict[int, torch.Tensor]:
        """This trainer's whole tables (views of the fused TBE's weights)."""
        out = {}
        for name, t in self.dmp.state_dict().items():
            if not name.endswith(".weight") or ".embedding_bags.t" not in name:
                continue
            f = int(name.split(".embedding_bags.t")[1].split(".")[0])
            shards = t.local_shards()
            if shards:
                out[f] = shards[0].tensor
        return out

    def _now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def _kjt(self, sparse):
        from torchrec import KeyedJaggedTensor

        vals, lens = [], []
        for f in range(self.nf):
            v, o, _ = sparse.feature(f)
            vals.append(v.to(torch.int64))
            lens.append(o[1:] - o[:-1])
        return KeyedJaggedTensor.from_lengths_sync(
            keys=self.keys, values=torch.cat(vals).to(self.device),
            lengths=torch.cat(lens).to(self.device, torch.int32),
        )  # fmt: skip

    def step(self, k: int) -> dict:
        t0 = self._now()
        dense, sparse, labels = shard(self.source.batch(k), self.t, self.n)
        kjt = self._kjt(sparse)
        dense, labels = dense.to(self.device), labels.to(self.device)
        t1 = self._now()
        loss = F.binary_cross_entropy_with_logits(self.dmp(dense, kjt, sparse), labels)
        t2 = self._now()
        self.dense_opt.zero_grad()
        loss.backward()  # all-to-all of pooled grads, fused row update, DDP all-reduce
        t3 = self._now()
        self.dense_opt.step()
        t4 = self._now()
        return {"step": k, "loss": float(loss.detach()), "input": t1 - t0, "forward": t2 - t1,
                "backward": t3 - t2, "dense_optim": t4 - t3}  # fmt: skip

    def run(self, steps: int) -> list[dict]:
        return [self.step(k) for k in range(steps)]

    def tables(self) -> dict[int, torch.Tensor]:
        """This trainer's tables ``{f: [rows, row_width]}`` (padding columns dropped)."""
        return {f: t[:, : self.w].detach().cpu().clone() for f, t in self._local_tables().items()}


class _Current:
    """``holder.current`` of the embedding modules: the trainer's net's pooled vectors."""

    def __init__(self, trainer) -> None:
        self._t = trainer

    @property
    def current(self):
        return self._t.net.current


def main(argv=None) -> int:
    """Role: one TorchRec DMP trainer (reads its shards itself)."""
    from bagpipe import runtime as rt
    from bagpipe.cli import add_trainer_role, parser, settings_from
    from bagpipe.data import open_data
    from bagpipe.trainer import pick_backend, trainer_device

    p = parser(
        "python -m bagpipe.torchrec_dmp",
        __doc__,
        "python -m bagpipe.torchrec_dmp --data DIR --trainer-id 0 --world-size-trainers 2",
    )
    p.add_argument("--check", action="store_true",
                   help="only probe whether TorchRec's DMP can train on --device; exit 0 if so")  # fmt: skip
    p.add_argument("--data", default=None, help="Criteo directory (required unless --check)")
    add_trainer_role(p, "save this trainer's tables (and dense) here")
    args = p.parse_args(argv)
    if args.check:
        dev = trainer_device(args.device, args.trainer_id)
        require(dev, args.emb_optim)
        print(f"{MODE}: TorchRec's DMP trains on {dev} with {args.emb_optim}", flush=True)
        return 0
    if args.data is None:
        p.error("--data is required (unless --check)")
    s = settings_from(args)
    dev = trainer_device(args.device, args.trainer_id)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    require(dev, s["emb_optim"])  # before joining: every trainer stops with the reason
    src = open_data(args.data, s["global_batch"], s["table_sizes"])
    s["table_sizes"], s["num_dense"] = list(src.table_sizes), src.num_dense
    backend = pick_backend(args.dist_backend, dev, s["num_trainers"])
    if backend == "gloo" and dev.type == "cuda":
        raise BagpipeError(f"{MODE}: TorchRec's all-to-all of GPU tensors needs nccl (one GPU "
                           "per trainer); got gloo")  # fmt: skip
    rt.init_trainer_group(backend, args.master_ip, args.master_port_ccom, args.trainer_id,
                          s["num_trainers"])  # fmt: skip
    tr = DMPTrainer(src, s, args.trainer_id, model=args.model, size=args.model_size,
                    dense_optim=args.dense_optim, dense_lr=args.dense_lr,
                    model_seed=args.model_seed, device=dev, arch_mlp_bot=args.arch_mlp_bot,
                    arch_mlp_top=args.arch_mlp_top)  # fmt: skip
    print(f"trainer_{args.trainer_id}: {MODE} owns tables {tr.mine}", flush=True)
    steps = tr.run(s["stop_iter"])
    if args.stats_out:
        Path(args.stats_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.stats_out).write_text(json.dumps({"trainer": args.trainer_id, "steps": steps,
                                                    "backend": backend, "device": str(dev),
                                                    "owned_tables": tr.mine}))  # fmt: skip
    if args.dump_dir:
        Path(args.dump_dir).mkdir(parents=True, exist_ok=True)
        torch.save(tr.tables(), Path(args.dump_dir) / f"dmp_tables_{args.trainer_id}.pt")
        if args.trainer_id == 0:
            torch.save([p_.detach().cpu() for p_ in tr.dense], Path(args.dump_dir) / "dmp_dense.pt")
    import torch.distributed as dist

    dist.barrier()
    dist.destroy_process_group()
    med = float(np.median([sum(v for k, v in r.items() if k not in ("step", "loss"))
                           for r in steps]))  # fmt: skip
    print(f"trainer_{args.trainer_id}: {len(steps)} steps, median {1e3 * med:.2f} ms/step "
          f"({MODE})", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    from bagpipe.cli import run_main

    sys.exit(run_main(main))
