"""Embedding server: a shard of every table on CPU (row ``r`` lives on server ``r % M``), with
each row's optimizer state, serving fetches and taking write-backs.

A fetch issued at round g names the last round whose write-backs it depends on
(``wait_round``); the server answers it only once every trainer's write-backs of all rounds up
to that one have arrived, so a row evicted by one trainer is never read stale by another.

Tables start as U(-sqrt(1/n), sqrt(1/n)) for a table of n rows (DLRM's init), drawn per block
of rows from a generator seeded by (seed, table, block): the same values whatever the number
of servers, so a single-process reference can start from identical tables (:func:`init_rows`).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from bagpipe.errors import BagpipeError

BLOCK_ROWS = 1 << 18


def table_offsets(table_sizes: Sequence[int]) -> np.ndarray:
    """Global row number of each table's row 0."""
    return np.concatenate([[0], np.cumsum(table_sizes)[:-1]]).astype(np.int64)


def _block(seed: int, f: int, c: int, rows: int, width: int, bound: float) -> Tensor:
    g = torch.Generator().manual_seed((seed * 1_000_003 + f) * 1_000_003 + c)
    return torch.rand(rows, width, generator=g).mul_(2 * bound).sub_(bound)


def init_rows(seed: int, table_sizes: Sequence[int], width: int, server: int = 0,
              num_servers: int = 1) -> Tensor:  # fmt: skip
    """Initial rows ``r`` with ``r % num_servers == server``, in order of r."""
    total = int(sum(table_sizes))
    out = torch.empty(math.ceil((total - server) / num_servers), width)
    offs = table_offsets(table_sizes)
    for f, n in enumerate(table_sizes):
        bound = math.sqrt(1.0 / n)
        for c, lo in enumerate(range(0, n, BLOCK_ROWS)):
            rows = min(BLOCK_ROWS, n - lo)
            g0 = int(offs[f]) + lo
            i0 = (server - g0) % num_servers
            if i0 >= rows:
                continue
            vals = _block(seed, f, c, rows, width, bound)[i0::num_servers]
            start = (g0 + i0) // num_servers
            out[start : start + vals.shape[0]] = vals
    return out


def init_tables(seed: int, table_sizes: Sequence[int], width: int) -> list[Tensor]:
    """The full initial tables ``[n_f, width]`` (what one server alone would hold)."""
    rows = init_rows(seed, table_sizes, width)
    return list(torch.split(rows, list(table_sizes)))


class EmbeddingStore:
    """Server ``server_id`` of ``num_servers``: rows, optimizer state, round bookkeeping."""

    def __init__(self, table_sizes: Sequence[int], width: int, state_width: int, init_state: float,
                 num_trainers: int, server_id: int = 0, num_servers: int = 1,
                 seed: int = 0) -> None:  # fmt: skip
        if not 0 <= server_id < num_servers:
            raise BagpipeError(f"--server-id {server_id}: expected 0..{num_servers - 1}")
        self.server_id, self.num_servers = server_id, num_servers
        self.num_trainers = num_trainers
        self.weight = init_rows(seed, table_sizes, width, server_id, num_servers)
        self.state = torch.full((self.weight.shape[0], state_width), float(init_state))
        self._lock = threading.Lock()
        self._received = [set() for _ in range(num_trainers)]
        self._done = [-1] * num_trainers
        self._waiting: list[tuple[int, Callable[[], None]]] = []
        self.fetched_rows = 0
        self.written_rows = 0

    def _local(self, rows: Tensor) -> Tensor:
        rows = torch.as_tensor(rows, dtype=torch.int64)
        if rows.numel() and bool((rows % self.num_servers != self.server_id).any()):
            raise BagpipeError(f"server {self.server_id}: asked for rows it does not hold")
        return torch.div(rows, self.num_servers, rounding_mode="floor")

    def ready(self, wait_round: int) -> bool:
        return min(self._done) >= wait_round

    def fetch(self, rows: Tensor, wait_round: int, reply: Callable[[tuple], None]) -> None:
        """Call ``reply((weights, states))`` once write-backs up to ``wait_round`` are in."""
        local = self._local(rows)

        def answer() -> None:
            self.fetched_rows += int(local.numel())
            reply((self.weight.index_select(0, local), self.state.index_select(0, local)))

        with self._lock:
            if not self.ready(wait_round):
                self._waiting.append((wait_round, answer))
                return
        answer()

    def write_back(self, trainer: int, round_index: int, rows: Tensor, weights: Tensor,
                   states: Tensor) -> None:  # fmt: skip
        """Store rows written back by ``trainer`` at ``round_index`` and release fetches."""
        if not 0 <= trainer < self.num_trainers:
            raise BagpipeError(
                f"server {self.server_id}: write-back from unknown trainer {trainer}"
            )
        local = self._local(rows)
        if local.numel():
            self.weight.index_copy_(0, local, weights.to(self.weight.dtype))
            if self.state.shape[1]:
                self.state.index_copy_(0, local, states.to(self.state.dtype))
        self.written_rows += int(local.numel())
        with self._lock:
            rec = self._received[trainer]
            rec.add(int(round_index))
            while self._done[trainer] + 1 in rec:
                self._done[trainer] += 1
                rec.discard(self._done[trainer])
            go = [a for w, a in self._waiting if self.ready(w)]
            self._waiting = [(w, a) for w, a in self._waiting if not self.ready(w)]
        for a in go:
            a()

    def rows(self, rows: Tensor) -> tuple[Tensor, Tensor]:
        local = self._local(rows)
        return self.weight.index_select(0, local), self.state.index_select(0, local)


def split_by_server(rows: Tensor, num_servers: int) -> list[tuple[Tensor, Tensor]]:
    """``(positions, rows)`` per server for sorted global ``rows``."""
    owner = rows % num_servers
    out = []
    for j in range(num_servers):
        pos = torch.nonzero(owner == j).flatten()
        out.append((pos, rows[pos]))
    return out
