"""The training step every trainer runs, an in-process run of the whole system (threads), and
the single-process reference it must match.

Loss: binary cross-entropy with logits, mean over the trainer's shard. Dense gradients are
averaged over trainers (= the global-batch mean); embedding rows receive the sum over
trainers (= N x the global-batch mean), the reference artifact's convention, which the
reference trainer reproduces by scaling its embedding gradients by N.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from bagpipe import config as cfg
from bagpipe.bagcache import BagCache
from bagpipe.data import BatchSource
from bagpipe.errors import BagpipeError
from bagpipe.models import build_model, copy_dense, dense_parameters, extra_columns
from bagpipe.optim import DenseOptimizer, optimizer_name
from bagpipe.oracle import OracleService
from bagpipe.server import EmbeddingStore, init_tables
from bagpipe.transport import LocalLinks, ThreadGroup

DENSE_OPTIMS = {"sgd": torch.optim.SGD, "adagrad": torch.optim.Adagrad}


def make_dense_optimizer(model: nn.Module, name: str, lr: float) -> DenseOptimizer:
    return DenseOptimizer(dense_parameters(model), name, lr)


def sync_dense(params, collective, n: int) -> None:
    """Average dense gradients over trainers in one flat all-reduce."""
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    collective.all_reduce(flat)
    flat /= n
    i = 0
    for p in params:
        m = p.numel()
        p.grad = flat[i : i + m].view_as(p).clone()
        i += m


def train_loop(bag, model: nn.Module, dense_opt, collective, n: int, on_step=None) -> list[dict]:
    """Run every step of ``bag``; returns per-step timings (seconds) and losses."""
    params = dense_parameters(model)
    prof = getattr(bag, "_now", time.perf_counter)
    steps = []
    t_prev = prof()
    while True:
        batch = bag.next_batch()
        t0 = prof()
        if batch is None:
            break
        logits = model(batch["dense_x"], batch["sparse"])
        loss = F.binary_cross_entropy_with_logits(logits, batch["target"])
        t1 = prof()
        dense_opt.zero_grad(set_to_none=True)
        loss.backward()
        t2 = prof()
        sync_dense(params, collective, n)
        t3 = prof()
        dense_opt.step()
        t4 = prof()
        rec = {"step": batch["step"], "loss": float(loss.detach()), "next_batch": t0 - t_prev,
               "forward": t1 - t0, "backward": t2 - t1, "dense_sync": t3 - t2,
               "dense_optim": t4 - t3}  # fmt: skip
        steps.append(rec)
        if on_step is not None:
            on_step(rec)
        t_prev = t4
    return steps


def run_settings(source: BatchSource, *, mode="bagpipe", lookahead=200, cleanup_proportion=0.25,
                 num_trainers=2, num_servers=1, stop_iter=50, cache_size=None, dim=8,
                 model="dlrm", emb_optim="sgd", emb_lr=0.05, seed=0) -> dict:  # fmt: skip
    """Shared settings for a run over ``source`` (cache_size None: the whole table)."""
    params = {"lr": emb_lr}
    return cfg.settings(
        mode=mode, table_sizes=list(source.table_sizes), num_dense=source.num_dense, dim=dim,
        row_width=dim + extra_columns(model), lookahead=lookahead,
        cleanup_proportion=cleanup_proportion, global_batch=source.global_batch,
        num_trainers=num_trainers, num_servers=num_servers, stop_iter=stop_iter,
        cache_size=cache_size or int(sum(source.table_sizes)), emb_optim=optimizer_name(emb_optim),
        emb_optim_params=params, seed=seed,
    )  # fmt: skip


def make_stores(s: dict) -> list[EmbeddingStore]:
    from bagpipe.optim import row_optimizer

    opt = row_optimizer(s["emb_optim"], s["emb_optim_params"])
    sw = s["row_width"] * opt.state_width_factor
    init = getattr(opt, "init", 0.0)
    return [EmbeddingStore(s["table_sizes"], s["row_width"], sw, init, s["num_trainers"], j,
                           s["num_servers"], s["seed"]) for j in range(s["num_servers"])]  # fmt: skip


@dataclass
class LocalRun:
    """What an in-process run leaves: models, caches, the servers' final tables, timings."""

    models: list
    caches: list
    stores: list
    oracle: OracleService
    steps: list = field(default_factory=list)

    def tables(self) -> torch.Tensor:
        """All rows ``[total_rows, width]`` as the servers hold them after the final flush."""
        total = int(sum(self.oracle.settings["table_sizes"]))
        out = torch.empty(total, self.stores[0].weight.shape[1])
        m = len(self.stores)
        for j, st in enumerate(self.stores):
            out[j::m] = st.weight[: len(range(j, total, m))]
        return out


def run_local(source: BatchSource, settings: dict, *, model: str = "dlrm", size: str = "small",
              dense_optim: str = "sgd", dense_lr: float = 0.05, model_seed: int = 0,
              timeout: float = 120.0, device="cpu", pooling="torch") -> LocalRun:  # fmt: skip
    """Oracle, servers and N trainers in this process (trainers as threads).

    ``pooling`` is the trainers' lookup (:func:`bagpipe.lookup.make_pool`): ``"torch"``,
    ``"emb-kernels[:variant]"`` or a callable.
    """
    from bagpipe.lookup import make_pool

    make_pool(pooling)  # a bad name fails here, not in a trainer thread
    s = settings
    oracle = OracleService(source, s)
    stores = make_stores(oracle.settings)
    n = s["num_trainers"]
    group = ThreadGroup(n, timeout=timeout)
    models, caches, steps, errors = [None] * n, [None] * n, [None] * n, []

    def work(t: int) -> None:
        try:
            links = LocalLinks(oracle, stores, t, timeout=timeout)
            bag = BagCache(links, group.member(t), trainer_id=t, num_trainers=n,
                           emb_size=s["dim"], extra_columns=s["row_width"] - s["dim"],
                           cache_size=s["cache_size"], emb_optim=s["emb_optim"],
                           emb_optim_params=s["emb_optim_params"], device=device,
                           pooling=pooling)  # fmt: skip
            m = build_model(model, oracle.settings["num_dense"], s["dim"], bag.embedding,
                            bag.extra, size=size, seed=model_seed).to(device)  # fmt: skip
            opt = make_dense_optimizer(m, dense_optim, dense_lr)
            steps[t] = train_loop(bag, m, opt, group.member(t), n)
            models[t], caches[t] = m, bag
        except BaseException as exc:
            errors.append((t, exc))
            group._barrier.abort()

    threads = [threading.Thread(target=work, args=(t,), name=f"trainer-{t}") for t in range(n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout)
    if any(th.is_alive() for th in threads):
        raise BagpipeError(f"run_local: trainers did not finish within {timeout} s")
    if errors:
        errors.sort(key=lambda e: isinstance(e[1], threading.BrokenBarrierError))
        _, exc = errors[0]
        raise exc
    return LocalRun(models, caches, stores, oracle, steps)


@dataclass
class ReferenceRun:
    model: nn.Module
    tables: torch.Tensor  # [total_rows, width]
    losses: list


def run_reference(source: BatchSource, settings: dict, *, model: str = "dlrm",
                  size: str = "small", dense_optim: str = "sgd", dense_lr: float = 0.05,
                  model_seed: int = 0, embedding=None) -> ReferenceRun:  # fmt: skip
    """One process, no cache, dense tables, the same global batches and gradient scale.

    ``embedding(table_sizes, dim) -> nn.Module`` builds the reference's embedding modules
    (default: rec-common's ``TorchEmbeddingBags``); a module must follow rec-common's
    embedding contract (sum pooling) and expose its tables either as ``bags[f].weight``
    (``TorchEmbeddingBags``) or as ``table(f)`` views of its parameters (emb-kernels'
    ``TableBatchedEmbeddingBags``). Its parameters are trained (``requires_grad`` is set).
    """
    s = settings
    sizes, d, w, n = s["table_sizes"], s["dim"], s["row_width"], s["num_trainers"]
    tables = torch.cat(init_tables(s["seed"], sizes, w))
    if embedding is None:
        from rec_common.models import TorchEmbeddingBags

        deep = TorchEmbeddingBags(sizes, d, check_ids=True)
        extra = TorchEmbeddingBags(sizes, 1) if w > d else None
    else:
        deep = embedding(list(sizes), d)
        extra = embedding(list(sizes), 1) if w > d else None
    mods = [deep] + ([extra] if extra is not None else [])
    col = [(0, d), (d, w)]
    with torch.no_grad():
        for (lo_c, hi_c), mod in zip(col, mods):
            for f, tab in enumerate(_tables_of(mod, len(sizes))):
                lo = sum(sizes[:f])
                if tuple(tab.shape) != (sizes[f], hi_c - lo_c):
                    raise ValueError(
                        f"embedding: table {f} has shape {tuple(tab.shape)}, expected "
                        f"{(sizes[f], hi_c - lo_c)}"
                    )
                tab.copy_(tables[lo : lo + sizes[f], lo_c:hi_c])
    num_dense = s["num_dense"] or source.num_dense
    m = build_model(model, num_dense, d, deep, extra, size=size, seed=model_seed)
    # dense weights exactly as a trainer draws them (its embedding modules hold no weights)
    from bagpipe.lookup import CachedEmbedding

    probe = build_model(model, num_dense, d, CachedEmbedding(None, len(sizes), 0, d),
                        CachedEmbedding(None, len(sizes), d, w) if w > d else None,
                        size=size, seed=model_seed)  # fmt: skip
    copy_dense(probe, m)
    dense_opt = DENSE_OPTIMS[optimizer_name(dense_optim)](dense_parameters(m), lr=dense_lr)
    emb_params = [p for mod in mods for p in mod.parameters()]
    for p in emb_params:
        p.requires_grad_(True)
    emb_cls = DENSE_OPTIMS[s["emb_optim"]]
    emb_opt = emb_cls(emb_params, **s["emb_optim_params"])
    losses = []
    for k in range(s["stop_iter"]):
        dense, sparse, labels = source.batch(k)
        loss = F.binary_cross_entropy_with_logits(m(dense, sparse), labels)
        dense_opt.zero_grad(set_to_none=True)
        emb_opt.zero_grad(set_to_none=True)
        loss.backward()
        for p in emb_params:
            if p.grad is not None:
                p.grad.mul_(n)
        dense_opt.step()
        emb_opt.step()
        losses.append(float(loss.detach()))
    with torch.no_grad():
        cols = [torch.cat(list(_tables_of(mod, len(sizes)))) for mod in mods]
        out = torch.cat(cols, dim=1).detach().clone()
    return ReferenceRun(m, out, losses)


def _tables_of(module: nn.Module, num_tables: int) -> list[torch.Tensor]:
    """The module's ``[rows, dim]`` tables (views of its parameters)."""
    if hasattr(module, "bags"):
        return [b.weight for b in module.bags]
    if callable(getattr(module, "table", None)):
        return [module.table(f) for f in range(num_tables)]
    raise TypeError(
        f"embedding: {type(module).__name__} exposes neither bags[f].weight nor table(f); "
        "run_reference cannot load the initial tables into it"
    )
