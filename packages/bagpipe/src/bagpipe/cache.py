"""A trainer's embedding cache: slots holding rows (weights and optimizer state), a row -> slot
map, and the lookup that turns a jagged batch into pooled embeddings through the slots.

Rows are global (``table_offset[f] + id``); a slot holds one row of ``width`` floats (the
embedding, plus one column for a model's 1-wide "wide"/"first-order" table when it has one, so
both travel together). Placement and eviction only ever happen between steps, on the thread
that trains, so the tensors never change under a running forward pass.

>>> import torch
>>> from bagpipe.optim import RowSGD
>>> c = RowCache(num_rows=10, cache_size=4, width=2, optimizer=RowSGD(0.1))
>>> c.place(torch.tensor([7, 3]), torch.ones(2, 2), torch.zeros(2, 0))
>>> c.slots_of(torch.tensor([3, 7, 3])).tolist(), c.resident
([1, 0, 1], 2)
"""

from __future__ import annotations

import torch
from torch import Tensor

from bagpipe.errors import BagpipeError


class CacheMiss(BagpipeError):
    """A lookup asked for a row the cache does not hold (the plan promised it would)."""


class RowCache:
    """``cache_size`` slots of ``width`` floats on ``device``; see the module docstring."""

    def __init__(self, num_rows: int, cache_size: int, width: int, optimizer, device="cpu"):
        if cache_size < 1:
            raise BagpipeError(f"cache_size: expected >= 1 rows, got {cache_size}")
        self.device = torch.device(device)
        self.num_rows, self.cache_size, self.width = int(num_rows), int(cache_size), int(width)
        self.optimizer = optimizer
        self.weight = torch.zeros(cache_size, width, device=self.device)
        self.state = optimizer.init_state(cache_size, width, device=self.device)
        self.slot = torch.full((num_rows,), -1, dtype=torch.int64, device=self.device)
        self._free = torch.arange(cache_size - 1, -1, -1, dtype=torch.int64, device=self.device)
        self._num_free = cache_size
        self.lookups = 0
        self.misses = 0
        self.peak = 0

    @property
    def resident(self) -> int:
        return self.cache_size - self._num_free

    def place(self, rows: Tensor, values: Tensor, states: Tensor) -> None:
        """Put fetched rows into free slots (lowest slot numbers first)."""
        n = int(rows.numel())
        if n == 0:
            return
        if n > self._num_free:
            raise BagpipeError(
                f"cache overflow: {n} rows to place but {self._num_free} of {self.cache_size} "
                "slots are free (the oracle's capacity check should have caught this)"
            )
        rows = rows.to(self.device)
        if bool((self.slot[rows] >= 0).any()):
            raise BagpipeError("cache: asked to place a row that is already resident")
        start = self._num_free - n
        slots = self._free[start : self._num_free].flip(0)
        self._num_free = start
        self.slot[rows] = slots
        self.weight[slots] = values.to(self.device, non_blocking=True)
        if self.state.shape[1]:
            self.state[slots] = states.to(self.device, non_blocking=True)
        self.peak = max(self.peak, self.resident)

    def read(self, rows: Tensor) -> tuple[Tensor, Tensor]:
        """Weights and optimizer state of resident rows (copies, on the cache's device)."""
        slots = self.slots_of(rows, count=False)
        return self.weight[slots], self.state[slots]

    def free(self, rows: Tensor) -> None:
        """Evict rows: their slots become free (write them back first if they must survive)."""
        if rows.numel() == 0:
            return
        slots = self.slots_of(rows, count=False)
        self.slot[rows.to(self.device)] = -1
        n = slots.numel()
        self._free[self._num_free : self._num_free + n] = slots.flip(0)
        self._num_free += n

    def slots_of(self, rows: Tensor, count: bool = True) -> Tensor:
        """The slots of ``rows``; raises :class:`CacheMiss` naming a missing row."""
        rows = rows.to(self.device)
        slots = self.slot[rows]
        if count:
            self.lookups += int(rows.numel())
        missing = slots < 0
        if bool(missing.any()):
            nmiss = int(missing.sum())
            if count:
                self.misses += nmiss
            raise CacheMiss(
                f"cache miss: row {int(rows[missing][0])} is not resident ({nmiss} of "
                f"{rows.numel()} rows missing); the prefetch plan and the cache disagree"
            )
        return slots

    def apply(self, rows: Tensor, grads: Tensor, only_resident: bool = False) -> None:
        """Optimizer step on ``rows`` (unique) with their summed gradients."""
        if rows.numel() == 0:
            return
        rows = rows.to(self.device)
        if only_resident:
            slots = self.slot[rows]
            keep = slots >= 0
            slots, grads = slots[keep], grads[keep]
        else:
            slots = self.slots_of(rows, count=False)
        self.optimizer.apply(self.weight, self.state, slots, grads.to(self.device))
