"""How a trainer reaches the oracle, the servers and the other trainers.

Two implementations of the same small interface: in one process (threads, direct calls: the
equivalence tests and ``bagpipe.local``), and across processes (torch RPC over TensorPipe for
the oracle and servers; ``torch.distributed`` gloo/NCCL for the trainers' all-reduce).

Links: ``start()``, ``round_async(g)``, ``final()``, ``fetch_async(rows, wait_round)``,
``write_back(round, rows, weights, states)``, ``flush()``. A collective: ``all_reduce(t)``
(in-place sum), ``all_reduce_async(t) -> handle``, ``all_to_all(...)``; handles have ``wait()``.
"""

from __future__ import annotations

import concurrent.futures as cf
import threading

import torch
from torch import Tensor

from bagpipe.errors import BagpipeError
from bagpipe.server import split_by_server

RPC_TIMEOUT_S = 120.0


class Done:
    """A handle whose value is already there."""

    def __init__(self, value=None) -> None:
        self.value = value

    def wait(self):
        return self.value


class _CfHandle:
    def __init__(self, fut: cf.Future, timeout: float) -> None:
        self.fut, self.timeout = fut, timeout

    def wait(self):
        try:
            return self.fut.result(self.timeout)
        except cf.TimeoutError:
            raise BagpipeError(f"no answer within {self.timeout:.0f} s") from None


def _merge(parts, n: int, width: int, state_width: int):
    w = torch.empty(n, width)
    s = torch.empty(n, state_width)
    for pos, (pw, ps) in parts:
        w[pos] = pw
        s[pos] = ps
    return w, s


class LocalLinks:
    """A trainer's links to an in-process :class:`~bagpipe.oracle.OracleService` and stores."""

    def __init__(self, oracle, stores, trainer: int, timeout: float = 60.0) -> None:
        self.oracle, self.stores, self.trainer, self.timeout = oracle, stores, trainer, timeout
        self._pool = cf.ThreadPoolExecutor(1, thread_name_prefix=f"oracle-link-{trainer}")

    def start(self) -> dict:
        return self.oracle.start_info(self.trainer)

    def round_async(self, g: int):
        return _CfHandle(
            self._pool.submit(self.oracle.round_message, self.trainer, g), self.timeout
        )

    def final(self) -> dict:
        return self.oracle.final_message(self.trainer)

    def fetch_async(self, rows: Tensor, wait_round: int):
        m = len(self.stores)
        split = split_by_server(rows, m)
        width, sw = self.stores[0].weight.shape[1], self.stores[0].state.shape[1]
        fut: cf.Future = cf.Future()
        parts, lock = [], threading.Lock()
        left = [sum(1 for _, r in split)]

        def reply_for(pos):
            def reply(value):
                with lock:
                    parts.append((pos, value))
                    left[0] -= 1
                    done = left[0] == 0
                if done:
                    fut.set_result(_merge(parts, rows.numel(), width, sw))

            return reply

        for j, (pos, r) in enumerate(split):
            self.stores[j].fetch(r, wait_round, reply_for(pos))
        return _CfHandle(fut, self.timeout)

    def write_back(self, round_index: int, rows, weights, states) -> None:
        weights, states = weights.cpu(), states.cpu()
        for j, (pos, r) in enumerate(split_by_server(rows, len(self.stores))):
            self.stores[j].write_back(self.trainer, round_index, r, weights[pos], states[pos])

    def flush(self) -> None:
        self._pool.shutdown(wait=True)


class ThreadGroup:
    """N trainers as threads of one process: a barrier-based all-reduce summing in rank order."""

    def __init__(self, n: int, timeout: float = 60.0) -> None:
        self.n = n
        self._barrier = threading.Barrier(n, timeout=timeout)
        self._slots: list = [None] * n
        self._result = None

    def member(self, rank: int) -> ThreadCollective:
        return ThreadCollective(self, rank)


class ThreadCollective:
    def __init__(self, group: ThreadGroup, rank: int) -> None:
        self.group, self.rank, self.world_size = group, rank, group.n

    def _exchange(self, value, combine):
        g = self.group
        g._slots[self.rank] = value
        g._barrier.wait()
        if self.rank == 0:
            g._result = combine(list(g._slots))
        g._barrier.wait()
        out = g._result
        g._barrier.wait()
        return out

    def all_reduce(self, t: Tensor) -> None:
        def total(xs):
            acc = xs[0].clone()
            for x in xs[1:]:
                acc += x
            return acc

        t.copy_(self._exchange(t, total))

    def all_reduce_async(self, t: Tensor):
        self.all_reduce(t)
        return Done()

    def all_gather_object(self, obj) -> list:
        return self._exchange(obj, lambda xs: list(xs))

    def all_to_all(self, outputs: list[Tensor], inputs: list[Tensor]) -> None:
        """``outputs[j]`` := what rank j put in its ``inputs[self.rank]``."""
        table = self._exchange(inputs, lambda xs: list(xs))
        for j in range(self.world_size):
            outputs[j].copy_(table[j][self.rank])

    def barrier(self) -> None:
        self.group._barrier.wait()


class DistCollective:
    """The trainers' process group (gloo on CPU, NCCL on GPU) behind the same interface."""

    def __init__(self, group=None) -> None:
        import torch.distributed as dist

        self.dist, self.group = dist, group
        self.rank = dist.get_rank(group)
        self.world_size = dist.get_world_size(group)

    def all_reduce(self, t: Tensor) -> None:
        self.dist.all_reduce(t, group=self.group)

    def all_reduce_async(self, t: Tensor):
        return self.dist.all_reduce(t, group=self.group, async_op=True)

    def all_gather_object(self, obj) -> list:
        out = [None] * self.world_size
        self.dist.all_gather_object(out, obj, group=self.group)
        return out

    def all_to_all(self, outputs: list[Tensor], inputs: list[Tensor]) -> None:
        """``outputs[j]`` := rank j's ``inputs[self.rank]``; shapes may differ per pair.

        Everything travels flattened, with splits counted in elements: the pieces a rank sends
        (or receives) may have different trailing shapes (uneven table-wise shards), so they
        cannot be stacked along dim 0.
        """
        if len(inputs) != self.world_size or len(outputs) != self.world_size:
            raise ValueError(f"all_to_all: expected {self.world_size} inputs and outputs, got "
                             f"{len(inputs)} and {len(outputs)}")  # fmt: skip
        in_sizes = [int(x.numel()) for x in inputs]
        out_sizes = [int(x.numel()) for x in outputs]
        ref = inputs[0]
        src = torch.cat([x.reshape(-1) for x in inputs])
        dst = torch.empty(sum(out_sizes), dtype=ref.dtype, device=ref.device)
        self.dist.all_to_all_single(dst, src, out_sizes, in_sizes, group=self.group)
        for o, piece in zip(outputs, dst.split(out_sizes)):
            o.copy_(piece.view(o.shape))

    def barrier(self) -> None:
        self.dist.barrier(group=self.group)
