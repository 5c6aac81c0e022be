"""Fused kernels from the MILP's levels: one kernel per (GPU, batch, level, op).

A :class:`FusedKernel` lists its columns (tasks) in script order; shards made by the stage
scheduler are contiguous column ranges of one kernel.
"""

from __future__ import annotations

from dataclasses import dataclass

from rap_share import milp
from rap_share.graph import GpuGraph, Task


@dataclass
class FusedKernel:
    gpu: int
    batch: str  # "local" | "global"
    level: int
    op: str
    tasks: list[Task]

    @property
    def degree(self) -> int:
        return len(self.tasks)

    @property
    def mean_width(self) -> float:
        return sum(t.node.in_width for t in self.tasks) / max(1, len(self.tasks))

    @property
    def name(self) -> str:
        return f"{self.op}x{self.degree}@{self.batch}/L{self.level}"

    def shard(self, start: int, stop: int) -> FusedKernel:
        return FusedKernel(self.gpu, self.batch, self.level, self.op, self.tasks[start:stop])


def fusion_problem(tasks: list[Task], preds: dict[str, list[str]]) -> milp.FusionProblem:
    pos = {t.key: i for i, t in enumerate(tasks)}
    edges = [(pos[p], pos[t.key]) for t in tasks for p in preds[t.key] if p in pos]
    return milp.FusionProblem([t.key for t in tasks], [t.kind for t in tasks], edges)


def fuse_gpu(
    graph: GpuGraph, solver: str = "highs", time_limit: float = 60.0, n_levels: int | None = None
) -> tuple[list[FusedKernel], dict[str, milp.FusionSolution]]:
    """Solve the MILP for the local and the global subgraph of one GPU; kernels in run order
    (local before global at each level, levels ascending)."""
    kernels: list[FusedKernel] = []
    solutions = {}
    for batch in ("local", "global"):
        tasks = graph.subgraph(batch)
        if not tasks:
            continue
        sol = milp.solve(fusion_problem(tasks, graph.preds), solver, time_limit, n_levels)
        solutions[batch] = sol
        groups: dict[tuple[int, str], list[Task]] = {}
        for t, lv in zip(tasks, sol.levels):
            groups.setdefault((lv, t.node.op), []).append(t)
        for (lv, op), ts in groups.items():
            kernels.append(FusedKernel(graph.gpu, batch, lv, op, ts))
    kernels.sort(key=lambda k: (k.level, k.batch != "local", k.tasks[0].node.id))
    return kernels, solutions
