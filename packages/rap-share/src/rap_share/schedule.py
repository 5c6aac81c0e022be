"""Packing fused kernels into the training stages of one GPU (RAP section 6, greedy).

1. Sum the predicted cost of all fused kernels of the GPU.
2. Rank stages by budget / base time (most spare first), stages with a measured capacity
   before those whose budget is extrapolated (``measured``), and take stages in that order
   until their budgets cover the total. An extrapolated budget comes from a probe that
   already stretched its stage: on 2 x H200 it ranked grad_comm (an all-reduce) above
   emb_bwd, and the kernels packed there stretched grad_comm by up to 1.39x. If packing
   (step 3) then leaves kernels over, because sharding added cost, take the next stage in
   that order and pack again, until nothing is left or every stage with a budget is taken.
3. Walk the chosen stages in execution order and pack kernels, kept in fused (level) order,
   while they fit. A kernel that does not fit is **sharded**: its first k columns (the largest
   k that fits) go into this stage, the rest continue into the next chosen stage.
4. What is left after the last stage is **overflow**: it is put in ``grad_comm`` and reported
   (stage name, ms over budget); it is never hidden.

Kernel order is never changed, so a column's producer always runs in the same or an earlier
stage than its consumer.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from rap_share.constants import STAGES
from rap_share.fusion import FusedKernel


@dataclass
class Placed:
    kernel: FusedKernel
    stage: str
    cost_ms: float
    shard: tuple[int, int] | None = None  # column range of the original kernel when sharded


@dataclass
class StageSchedule:
    gpu: int
    budgets: dict[str, float]
    stage_ms: dict[str, float]
    placed: list[Placed] = field(default_factory=list)
    chosen: list[str] = field(default_factory=list)
    overflow_ms: float = 0.0

    def load(self, stage: str) -> float:
        return sum(p.cost_ms for p in self.placed if p.stage == stage)

    def kernels(self, stage: str) -> list[Placed]:
        return [p for p in self.placed if p.stage == stage]

    @property
    def total_ms(self) -> float:
        return sum(p.cost_ms for p in self.placed)

    def report(self) -> list[str]:
        out = []
        for s in STAGES:
            ks = self.kernels(s)
            mark = " OVERFLOW" if s == "grad_comm" and self.overflow_ms > 0 else ""
            out.append(
                f"  {s:9s} budget {self.budgets.get(s, 0):7.3f} ms  used {self.load(s):7.3f} ms  "
                f"{len(ks):2d} kernels{mark}"
            )
        if self.overflow_ms > 0:
            out.append(
                f"  overflow: {self.overflow_ms:.3f} ms of preprocessing does not fit the spare "
                "capacity of any stage; it runs in grad_comm and will stretch the iteration"
            )
        return out


Cost = Callable[[FusedKernel], float]


def schedule_gpu(
    gpu: int,
    kernels: list[FusedKernel],
    cost: Cost,
    budgets: dict[str, float],
    stage_ms: dict[str, float] | None = None,
    measured: Collection[str] | None = None,
) -> StageSchedule:
    """Greedy stage assignment with column sharding (see module docstring)."""
    stage_ms = stage_ms or {}
    sched = StageSchedule(gpu, dict(budgets), dict(stage_ms))
    costs = [cost(k) for k in kernels]
    total = sum(costs)
    unknown = sorted(set(measured or ()) - set(STAGES))
    if unknown:
        raise ValueError(
            f"schedule_gpu: measured names unknown stages {unknown}; stages are {STAGES}"
        )
    first = set(measured or STAGES)
    rank = sorted(STAGES, key=lambda s: (s not in first,
                                         -budgets.get(s, 0.0) / max(stage_ms.get(s, 1.0), 1e-9),
                                         STAGES.index(s)))  # fmt: skip
    usable = [s for s in rank if budgets.get(s, 0.0) > 0]
    chosen, cover = [], 0.0
    for s in usable:
        if cover >= total and chosen:
            break
        chosen.append(s)
        cover += budgets[s]
    while True:
        placed, queue = _pack(kernels, costs, cost, budgets, [s for s in STAGES if s in chosen])
        if not queue or len(chosen) == len(usable):
            break
        # sharding added cost (each shard pays its own fixed part), so the chosen budgets no
        # longer hold everything: take the next stage with room rather than overflow
        chosen.append(usable[len(chosen)])
    sched.chosen = [s for s in STAGES if s in chosen]
    sched.placed = placed
    for k, c, shard in queue:  # overflow
        sched.placed.append(Placed(k, "grad_comm", c, shard))
    over = sched.load("grad_comm") - budgets.get("grad_comm", 0.0)
    sched.overflow_ms = max(0.0, over) if queue else 0.0
    return sched


def _pack(kernels: list[FusedKernel], costs: list[float], cost: Cost, budgets: dict[str, float],
          stages: list[str]) -> tuple[list[Placed], list[tuple]]:  # fmt: skip
    """Step 3 of the module docstring over ``stages`` (execution order): the placed kernels
    and shards, and what did not fit (``(kernel, cost, shard)``, in order)."""
    placed: list[Placed] = []
    queue = [(k, c, None) for k, c in zip(kernels, costs)]
    for s in stages:
        left = budgets[s]
        while queue:
            k, c, shard = queue[0]
            if c <= left + 1e-12:
                placed.append(Placed(k, s, c, shard))
                left -= c
                queue.pop(0)
                continue
            # shard: largest prefix of columns that fits
            fit_k, fit_c = 0, 0.0
            lo, hi = 1, k.degree - 1
            while lo <= hi:
                mid = (lo + hi) // 2
                cm = cost(k.shard(0, mid))
                if cm <= left + 1e-12:
                    fit_k, fit_c, lo = mid, cm, mid + 1
                else:
                    hi = mid - 1
            if fit_k:
                base = shard[0] if shard else 0
                head, tail = k.shard(0, fit_k), k.shard(fit_k, k.degree)
                placed.append(Placed(head, s, fit_c, (base, base + fit_k)))
                queue[0] = (tail, cost(tail), (base + fit_k, base + k.degree))
            break
    return placed, queue
