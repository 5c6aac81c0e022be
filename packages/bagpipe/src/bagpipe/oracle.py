"""The oracle's service, transport-free: read the run's batches, decide the plan, check the
cache size, and hand each trainer its rounds (data shards + cache operations + sync lists).

Round messages are made on request and at most ``window`` rounds ahead of the slowest trainer
(flow control), so the oracle holds and sends data only inside the lookahead window.
"""

from __future__ import annotations

import math
import threading
import time

import numpy as np
import torch

from bagpipe import config as cfg
from bagpipe.data import BatchSource, shard
from bagpipe.errors import BagpipeError
from bagpipe.plan import Plan, choose_hot_rows, make_plan, sorted_unique
from bagpipe.server import table_offsets


def step_rows(source: BatchSource, k: int, offsets: np.ndarray, num_trainers: int):
    """Sorted unique global rows each trainer's shard of global batch ``k`` reads."""
    if isinstance(source.sparse, np.ndarray):  # one id per feature: read the block directly
        b = source.global_batch
        lo = (k % source.num_batches) * b
        rows = np.asarray(source.sparse[lo : lo + b], dtype=np.int64) + offsets[None, :]
        per = b // num_trainers
        return [sorted_unique(rows[t * per : (t + 1) * per].ravel()) for t in range(num_trainers)]
    _, sparse, _ = source.batch(k)
    b = sparse.batch_size // num_trainers
    out = []
    for t in range(num_trainers):
        parts = []
        for f in range(sparse.num_features):
            v, o, _ = sparse.feature(f)
            parts.append(
                v[int(o[t * b]) : int(o[(t + 1) * b])].numpy().astype(np.int64) + offsets[f]
            )
        out.append(sorted_unique(np.concatenate(parts)))
    return out


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64))


class OracleService:
    """Decides a run (``settings`` as in :mod:`bagpipe.config`) over ``source``'s batches."""

    def __init__(self, source: BatchSource, settings: dict, progress: bool = False) -> None:
        s = dict(settings)
        if s["table_sizes"] is None:
            s["table_sizes"] = list(source.table_sizes)
        if s["num_dense"] is None:
            s["num_dense"] = source.num_dense
        if len(s["table_sizes"]) != source.num_features:
            raise BagpipeError(f"table sizes: {len(s['table_sizes'])} tables given but the data "
                               f"has {source.num_features} sparse features")  # fmt: skip
        cfg.validate(s)
        self.settings = s
        self.source = source
        n, K = s["num_trainers"], s["stop_iter"]
        self.offsets = table_offsets(s["table_sizes"])
        self.num_rows = int(sum(s["table_sizes"]))
        t0 = time.perf_counter()
        it = range(K)
        if progress:
            from tqdm import tqdm

            it = tqdm(it, desc="oracle: reading ids", unit="batch")
        steps = [step_rows(source, k, self.offsets, n) for k in it]
        self.read_seconds = time.perf_counter() - t0
        C = cfg.interval(s)
        hot = None
        if s["mode"] == "static":
            hot = choose_hot_rows(steps, self.num_rows, s["cache_size"])
        self.plan: Plan = make_plan(steps, self.num_rows, s["lookahead"], C, s["mode"], hot)
        self.plan.check_capacity(s["cache_size"])
        self.window = max(1, math.ceil(s["lookahead"] / C))
        self._progress = [0] * n
        self._cv = threading.Condition()

    @property
    def decide_seconds_per_batch(self) -> float:
        return self.plan.seconds / max(1, self.plan.num_steps)

    def start_info(self, trainer: int) -> dict:
        p = self.plan
        return {
            "settings": self.settings,
            "num_steps": p.num_steps,
            "num_rounds": len(p.rounds),
            "cleanup_interval": p.cleanup_interval,
            "initial_fetch": _t(p.initial_fetch[trainer]),
            "peak_resident": p.peak_resident[trainer],
            "decide_seconds_per_batch": self.decide_seconds_per_batch,
        }

    def round_message(self, trainer: int, g: int, timeout: float = 300.0) -> dict:
        """Round ``g`` for ``trainer``; waits while it is more than the window ahead."""
        p, n = self.plan, self.settings["num_trainers"]
        if not 0 <= g < len(p.rounds):
            raise BagpipeError(f"trainer {trainer} asked for round {g} of {len(p.rounds)}")
        with self._cv:
            self._progress[trainer] = max(self._progress[trainer], g)
            self._cv.notify_all()
            if not self._cv.wait_for(lambda: g - min(self._progress) <= self.window, timeout):
                raise BagpipeError(f"oracle: trainer {trainer} ran {self.window} rounds ahead "
                                   "of another for too long")  # fmt: skip
        r = p.rounds[g]
        mine = r.trainers[trainer]
        shards, syncs = [], []
        for k in range(r.first_step, r.last_step):
            dense, sparse, labels = shard(self.source.batch(k), trainer, n)
            shards.append((dense, sparse.values, sparse.offsets, labels))
            sp = p.steps[k]
            syncs.append((_t(sp.sync_now), _t(sp.sync_later), sp.num_private))
        return {
            "round": g,
            "first_step": r.first_step,
            "last_step": r.last_step,
            "evict": _t(mine.evict),
            "write_back": _t(mine.write_back),
            "fetch": _t(mine.fetch),
            "fetch_ahead": r.fetch_ahead,
            "wait_round": r.wait_round,
            "shards": shards,
            "syncs": syncs,
        }

    def final_message(self, trainer: int) -> dict:
        f = self.plan.final[trainer]
        return {"evict": _t(f.evict), "write_back": _t(f.write_back),
                "round": len(self.plan.rounds)}  # fmt: skip
