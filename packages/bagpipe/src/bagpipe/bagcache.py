"""BagCache: the trainer side of Bagpipe, independent of how it talks to the other roles.

``next_batch()`` returns the trainer's shard of the next global batch; before that it
synchronizes the previous step's embedding gradients (rows the next step reads are
all-reduced now; the others in the background, applied with the next step's update; private
rows are applied at once) and, at a round boundary, evicts and writes back rows, places the rows
prefetched during the last round and issues the next prefetch. ``get_emb``/``lookup`` read
only the cache: a miss is an error, never a silent fetch.

``links`` reach the oracle and the servers (:mod:`bagpipe.transport`); ``collective`` is the
trainers' all-reduce (gloo, NCCL, or threads in one process).
"""

from __future__ import annotations

import time
from collections import defaultdict

import numpy as np
import torch
from torch import Tensor

from bagpipe.cache import RowCache
from bagpipe.errors import BagpipeError
from bagpipe.lookup import CachedEmbedding, PoolFn, StepLookup, make_pool
from bagpipe.optim import row_optimizer
from bagpipe.server import table_offsets
from rec_common.jagged import JaggedBatch

TIMERS = ("prefetch_wait", "lookup", "sync_now", "sync_later_wait", "emb_optim", "cleanup")


class BagCache:
    """One trainer's cache and step protocol; see the module docstring."""

    def __init__(self, links, collective, *, trainer_id: int, num_trainers: int, emb_size: int,
                 extra_columns: int, cache_size: int, emb_optim, emb_optim_params: dict,
                 device="cpu", settings: dict | None = None, profile: bool = False,
                 pooling: str | PoolFn = "torch") -> None:  # fmt: skip
        self.links, self.collective = links, collective
        self.trainer_id, self.num_trainers = int(trainer_id), int(num_trainers)
        self.device = torch.device(device)
        self.profile = profile and self.device.type == "cuda"
        self.pool = make_pool(pooling)  # before links.start(): a bad name fails first
        info = links.start()
        self.settings = dict(info["settings"])
        if settings:
            from bagpipe.config import compare

            compare("the oracle", self.settings, f"trainer {trainer_id}", settings)
        self.mode = self.settings["mode"]
        self.table_sizes = list(self.settings["table_sizes"])
        self.num_features = len(self.table_sizes)
        self.dim = int(emb_size)
        self.width = self.dim + int(extra_columns)
        self.offsets = torch.from_numpy(table_offsets(self.table_sizes)).to(self.device)
        self.optimizer = row_optimizer(emb_optim, emb_optim_params)
        self.cache = RowCache(int(sum(self.table_sizes)), cache_size, self.width, self.optimizer,
                              self.device)  # fmt: skip
        self.num_steps = int(info["num_steps"])
        self.num_rounds = int(info["num_rounds"])
        self.interval = int(info["cleanup_interval"])
        self.peak_planned = int(info["peak_resident"])
        self.decide_seconds_per_batch = float(info["decide_seconds_per_batch"])
        self._pending_fetch = (info["initial_fetch"], links.fetch_async(info["initial_fetch"], -1))
        self._next_round = links.round_async(0) if self.num_rounds else None
        self._round: dict | None = None
        self._pending_later = None
        self._step = 0
        self._lookup: StepLookup | None = None
        self._sync = None
        self._finished = False
        self.stats: list[dict] = []
        self._cur = defaultdict(float)
        self.embedding = CachedEmbedding(self, self.num_features, 0, self.dim)
        self.extra = (
            CachedEmbedding(self, self.num_features, self.dim, self.width)
            if extra_columns
            else None
        )

    # ---------------------------------------------------------------- timing
    def _now(self) -> float:
        if self.profile:
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    # ---------------------------------------------------------------- steps
    def next_batch(self) -> dict | None:
        """The next shard ``{dense_x, sparse, sparse_vector, target, step}``; None at the end."""
        if self._finished:
            return None
        if self._step > 0:
            self._sync_step()
        if self._step == self.num_steps:
            self.finish()
            return None
        k = self._step
        if k % self.interval == 0:
            self._round_start(k // self.interval)
        r = self._round
        dense, values, offsets, labels = r["shards"][k - r["first_step"]]
        self._sync = r["syncs"][k - r["first_step"]]
        one_hot = all(bool((o[1:] - o[:-1] == 1).all()) for o in offsets)  # CPU: no sync
        sparse = JaggedBatch([f"f{i}" for i in range(len(values))],
                             [v.to(self.device) for v in values],
                             [o.to(self.device) for o in offsets])  # fmt: skip
        self._lookup = None
        self._batch_sparse = sparse
        self._step += 1
        vec = torch.stack(list(sparse.values)) if one_hot else list(sparse.values)
        return {"dense_x": dense.to(self.device), "sparse": sparse, "sparse_vector": vec,
                "target": labels.to(self.device), "step": k}  # fmt: skip

    def lookup(self, sparse: JaggedBatch) -> StepLookup:
        """This step's rows for ``sparse`` (the batch ``next_batch`` returned)."""
        if self._lookup is not None and self._lookup.sparse is sparse:
            return self._lookup
        if self._lookup is not None:
            raise BagpipeError("BagCache: one lookup per step; pass the batch next_batch returned")
        t0 = self._now()
        self._lookup = StepLookup(self.cache, sparse, self.offsets, self.pool)
        self._cur["lookup"] += self._now() - t0
        return self._lookup

    def get_emb(self, ls_i) -> list[Tensor]:
        """Pooled embeddings of this step, one ``[batch, emb_size]`` tensor per table."""
        sparse = ls_i if isinstance(ls_i, JaggedBatch) else self._batch_sparse
        pooled = self.lookup(sparse).pooled(0, self.dim)
        return list(pooled.split(self.dim, dim=1))

    # ---------------------------------------------------------------- protocol
    def _gather(self, rows: Tensor, local: Tensor, grads: Tensor):
        buf = torch.zeros(rows.numel(), self.width, device=self.device)
        hit = torch.zeros(local.numel(), dtype=torch.bool, device=self.device)
        if rows.numel() and local.numel():
            idx = torch.searchsorted(rows, local).clamp_(max=rows.numel() - 1)
            hit = rows[idx] == local
            buf[idx[hit]] = grads[hit]
        return buf, hit

    def _sync_step(self) -> None:
        now, later, npriv = (self._sync[0].to(self.device), self._sync[1].to(self.device),
                             self._sync[2])  # fmt: skip
        if self._lookup is not None:
            local, grads = self._lookup.rows, self._lookup.grad().detach()
        else:
            local = torch.zeros(0, dtype=torch.int64, device=self.device)
            grads = torch.zeros(0, self.width, device=self.device)
        now_buf, hit_now = self._gather(now, local, grads)
        later_buf, hit_later = self._gather(later, local, grads)
        private = ~(hit_now | hit_later)
        t0 = self._now()
        if now.numel():
            self.collective.all_reduce(now_buf)
        t1 = self._now()
        rows, bufs = [now, local[private]], [now_buf, grads[private]]
        if self._pending_later is not None:
            prow, pbuf, handle = self._pending_later
            handle.wait()
            rows.append(prow)
            bufs.append(pbuf)
            self._pending_later = None
        t2 = self._now()
        self.cache.apply(torch.cat(rows), torch.cat(bufs), only_resident=self.mode != "bagpipe")
        t3 = self._now()
        if later.numel():
            self._pending_later = (later, later_buf, self.collective.all_reduce_async(later_buf))
        c = self._cur
        c["sync_now"] += t1 - t0
        c["sync_later_wait"] += t2 - t1
        c["emb_optim"] += t3 - t2
        c["rows_now"] = int(now.numel())
        c["rows_later"] = int(later.numel())
        c["rows_private"] = int(npriv)
        self._lookup = None
        self.stats.append(dict(self._cur))
        self._cur = defaultdict(float)

    def _place_pending(self) -> None:
        if self._pending_fetch is None:
            return
        rows, handle = self._pending_fetch
        t0 = time.perf_counter()
        weights, states = handle.wait()
        self._cur["prefetch_wait"] += time.perf_counter() - t0
        self.cache.place(rows, weights, states)
        self._cur["fetched_rows"] += int(rows.numel())
        self._pending_fetch = None

    def _write_back(self, round_index: int, evict: Tensor, write_back: Tensor) -> None:
        weights, states = self.cache.read(write_back)  # copies: the slots may be reused now
        self.cache.free(evict)
        self.links.write_back(round_index, write_back, weights, states)  # links move to host
        self._cur["written_rows"] += int(write_back.numel())

    def _round_start(self, g: int) -> None:
        t0 = time.perf_counter()
        msg = self._next_round.wait()
        self._cur["prefetch_wait"] += time.perf_counter() - t0
        if msg["round"] != g:
            raise BagpipeError(f"trainer {self.trainer_id}: expected round {g}, got {msg['round']}")
        self._round = msg
        self._next_round = self.links.round_async(g + 1) if g + 1 < self.num_rounds else None
        t1 = self._now()
        self._write_back(g, msg["evict"], msg["write_back"])
        self._cur["cleanup"] += self._now() - t1
        self._place_pending()
        self._pending_fetch = (
            msg["fetch"],
            self.links.fetch_async(msg["fetch"], msg["wait_round"]),
        )
        if not msg["fetch_ahead"]:
            self._place_pending()

    def finish(self) -> None:
        """Apply the last delayed gradients and write every cached row back (idempotent)."""
        if self._finished:
            return
        if self._pending_later is not None:
            prow, pbuf, handle = self._pending_later
            handle.wait()
            self.cache.apply(prow, pbuf, only_resident=self.mode != "bagpipe")
            self._pending_later = None
        self._place_pending()
        fin = self.links.final()
        self._write_back(fin["round"], fin["evict"], fin["write_back"])
        self.links.flush()
        self._finished = True

    def summary(self) -> dict:
        """Cache statistics of the run so far."""
        return {
            "lookups": self.cache.lookups,
            "misses": self.cache.misses,
            "hit_rate": 1.0 - self.cache.misses / max(1, self.cache.lookups),
            "peak_resident": self.cache.peak,
            "peak_planned": self.peak_planned,
            "cache_size": self.cache.cache_size,
            "steps": len(self.stats),
            "row_bytes": 4 * (self.width + self.cache.state.shape[1]),
            "rows_now": float(np.sum([s.get("rows_now", 0) for s in self.stats])),
        }
