"""One DLRM training iteration split into RAP's five stages, with table-wise sharded embeddings.

Each GPU (rank) owns some tables and receives, from its own preprocessing, the ids of those
tables for the **global** batch (B * world rows): no input all-to-all. Its pooled embeddings
``[world*B, owned*d]`` are exchanged so that every rank gets ``[B, all*d]`` for its local rows
(``all_to_all_single`` on NCCL; ``all_gather`` on gloo, which has no all-to-all), then the
rec-common DLRM's bottom MLP, interaction and top MLP run data-parallel.

:class:`TrainStep` calls ``on_stage(name)`` at every stage boundary, in order::

    emb_fwd -> mlp_fwd -> mlp_bwd -> emb_bwd (hook on the pooled embeddings' gradient) -> grad_comm

which is where the generated program launches the preprocessing kernels of each stage and
where the profiler records events and starts its probe kernels.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from rec_common.jagged import JaggedBatch
from rec_common.models import DLRM, TorchEmbeddingBags


@contextlib.contextmanager
def _rng_untouched():
    """Leave the global CPU and default-device generators as they were on entry."""
    dev = torch.get_default_device()
    devices = [dev] if dev.type != "cpu" else []
    with torch.random.fork_rng(devices=devices, device_type=dev.type if devices else "cuda"):
        yield


class _Exchange(torch.autograd.Function):
    """Owner rows [world*B, w_r] -> local rows [B, sum_q w_q] (rank-major column blocks)."""

    @staticmethod
    def forward(ctx, owned: Tensor, widths: tuple[int, ...], rank: int, world: int, group):
        ctx.widths, ctx.rank, ctx.world, ctx.group = widths, rank, world, group
        b = owned.shape[0] // world
        ctx.b = b
        if world == 1:
            return owned.clone()
        if dist.get_backend(group) == "nccl":
            send = owned.reshape(world, b, widths[rank]).contiguous().reshape(-1)
            recv = owned.new_empty(b * sum(widths))
            dist.all_to_all_single(recv, send, [b * w for w in widths], [b * widths[rank]] * world,
                                   group=group)  # fmt: skip
            blocks = recv.split([b * w for w in widths])
            return torch.cat([x.view(b, w) for x, w in zip(blocks, widths)], 1)
        wmax = max(widths)
        pad = F.pad(owned, (0, wmax - owned.shape[1])).contiguous()
        got = [torch.empty_like(pad) for _ in range(world)]
        dist.all_gather(got, pad, group=group)
        return torch.cat([g[rank * b : (rank + 1) * b, :w] for g, w in zip(got, widths)], 1)

    @staticmethod
    def backward(ctx, grad: Tensor):
        widths, rank, world, b = ctx.widths, ctx.rank, ctx.world, ctx.b
        if world == 1:
            return grad, None, None, None, None
        grad = grad.contiguous()
        start = sum(widths[:rank])
        if dist.get_backend(ctx.group) == "nccl":
            send = torch.cat([blk.reshape(-1) for blk in grad.split(list(widths), 1)])
            recv = grad.new_empty(world * b * widths[rank])
            dist.all_to_all_single(recv, send, [b * widths[rank]] * world, [b * w for w in widths],
                                   group=ctx.group)  # fmt: skip
            g = recv.view(world * b, widths[rank])
        else:
            got = [torch.empty_like(grad) for _ in range(world)]
            dist.all_gather(got, grad, group=ctx.group)
            g = torch.cat([x[:, start : start + widths[rank]] for x in got], 0)
        # every rank's loss is a mean over its own rows: average like the dense gradients
        return g / world, None, None, None, None


class ShardedEmbedding(nn.Module):
    """The embedding contract of rec-common (``.dims``, ``.keys``) over table-wise shards.

    ``forward(owned_global: JaggedBatch) -> [B_local, F * dim]`` in global feature order.
    """

    def __init__(
        self,
        keys: Sequence[str],
        table_sizes: Sequence[int],
        placement: Sequence[int],
        dim: int,
        rank: int = 0,
        world: int = 1,
        group=None,
        check_ids: bool = True,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        self.keys, self.dims = tuple(keys), (dim,) * len(keys)
        self.positional_keys = False
        self.rank, self.world, self.group, self.dim = rank, world, group, dim
        self.placement = list(placement)
        self.owned = [i for i, p in enumerate(placement) if p == rank]
        self.owned_keys = tuple(self.keys[i] for i in self.owned)
        # One draw of the CPU generator on every rank, whatever it owns: the layers built after
        # this module (the DLRM's MLPs) then start from the same random state on every rank and
        # are the same replicas; table i is drawn from its own generator seeded ``seed + i``.
        if seed is None:
            seed = int(torch.randint(0, 2**62, (1,), device="cpu"))
        self.seed = seed
        with _rng_untouched():
            self.tables = (
                TorchEmbeddingBags([table_sizes[i] for i in self.owned], dim,
                                   keys=self.owned_keys, sparse=True, check_ids=check_ids)
                if self.owned else None
            )  # fmt: skip
            self.reset_parameters()
        self.widths = tuple(dim * sum(1 for p in placement if p == q) for q in range(world))
        order = [i for q in range(world) for i, p in enumerate(placement) if p == q]
        inv = [0] * len(order)
        for pos, i in enumerate(order):
            inv[i] = pos
        self.register_buffer("_inv", torch.tensor(inv, dtype=torch.long), persistent=False)

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Table i (global feature order) ~ U(+-sqrt(1/n)) from a generator seeded ``seed + i``:
        the same weights whichever rank owns it and however many ranks there are."""
        if self.tables is None:
            return
        for i, bag, n in zip(self.owned, self.tables.bags, self.tables.table_sizes):
            gen = torch.Generator(device=bag.weight.device).manual_seed(self.seed + i)
            bound = math.sqrt(1.0 / n)
            bag.weight.uniform_(-bound, bound, generator=gen)

    def forward(self, owned_global: JaggedBatch, local_rows: int | None = None) -> Tensor:
        """``local_rows`` (this rank's batch) is needed only on a rank that owns no table
        (more ranks than sparse features): its input then has no features to count rows in."""
        if self.tables is not None:
            pooled = self.tables(owned_global)
        else:
            if local_rows is None:
                raise ValueError(f"rank {self.rank} owns no table ({len(self.keys)} features "
                                 f"over {self.world} ranks): pass local_rows")  # fmt: skip
            rows = self.world * int(local_rows)
            pooled = torch.zeros(rows, 0, device=self._inv.device, requires_grad=True)
        out = _Exchange.apply(pooled, self.widths, self.rank, self.world, self.group)
        b = out.shape[0]
        return out.view(b, len(self.keys), self.dim)[:, self._inv].reshape(b, -1)


def build_model(
    dense_names: Sequence[str],
    sparse_names: Sequence[str],
    table_sizes: Sequence[int],
    placement: Sequence[int],
    dim: int,
    bottom_mlp: str,
    top_mlp: str,
    rank: int = 0,
    world: int = 1,
    group=None,
    check_ids: bool = True,
) -> DLRM:
    """rec-common's DLRM over a :class:`ShardedEmbedding` (bottom MLP ends in ``dim``).

    Tables take sparse gradients (plain SGD updates only the rows a batch touched, as
    TorchRec's fused optimizer does); ``check_ids`` validates ids before each lookup (a host
    sync per table on a GPU).
    """
    emb = ShardedEmbedding(sparse_names, table_sizes, placement, dim, rank, world, group, check_ids)
    return DLRM(num_dense=len(dense_names), embedding=emb, bottom_mlp=f"{bottom_mlp}-{dim}"
                if not bottom_mlp.endswith(f"-{dim}") else bottom_mlp, top_mlp=top_mlp)  # fmt: skip


def dense_params(model: DLRM) -> list[nn.Parameter]:
    emb = {id(p) for p in model.embedding.parameters()}
    return [p for p in model.parameters() if id(p) not in emb]


class TrainStep:
    """One iteration: forward, backward, dense-gradient all-reduce, SGD step, with stage hooks."""

    def __init__(
        self,
        model: DLRM,
        lr: float = 0.1,
        world: int = 1,
        group=None,
        on_stage: Callable[[str], None] | None = None,
    ) -> None:
        self.model, self.world, self.group = model, world, group
        self.lr = lr
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.dense = dense_params(model)
        self.on_stage = on_stage or (lambda s: None)

    def __call__(self, dense: Tensor, owned: JaggedBatch, labels: Tensor) -> Tensor:
        m, hook = self.model, self.on_stage
        hook("emb_fwd")
        ly = m.embedding(owned, local_rows=dense.shape[0])
        hook("mlp_fwd")
        x = m.bottom_mlp(dense)
        logits = m.top_mlp(m.interact(x, ly)).squeeze(1)
        loss = F.binary_cross_entropy_with_logits(logits, labels)
        if ly.requires_grad:
            ly.register_hook(lambda g: (hook("emb_bwd"), g)[1])
        hook("mlp_bwd")
        loss.backward()
        if not ly.requires_grad:
            hook("emb_bwd")
        hook("grad_comm")
        if self.world > 1:
            flat = torch.cat([p.grad.reshape(-1) for p in self.dense])
            dist.all_reduce(flat, group=self.group)
            flat /= self.world
            off = 0
            for p in self.dense:
                n = p.numel()
                p.grad.copy_(flat[off : off + n].view_as(p))
                off += n
        with torch.no_grad():  # plain SGD (torch.optim pulls in torch._dynamo: seconds of import)
            for p in self.params:
                if p.grad is not None:
                    p.add_(p.grad, alpha=-self.lr)
                    p.grad = None
        return loss.detach()
