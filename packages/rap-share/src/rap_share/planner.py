"""From a script to a full plan: graph, mapping, fusion MILP, cost, stage schedule.

>>> from rap_share.planner import make_plan
>>> plan = make_plan("plan0", n_gpus=2, batch=4096)
>>> len(plan.gpus), plan.gpus[0].schedule.overflow_ms >= 0
(2, True)
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from rap_share import script as _script
from rap_share.constants import STAGES
from rap_share.costmodel import CostModel, default_model
from rap_share.errors import PlanError
from rap_share.fusion import FusedKernel, fuse_gpu
from rap_share.graph import GpuGraph, PrepGraph
from rap_share.milp import FusionSolution
from rap_share.plans import PLANS, plan_placement, plan_script
from rap_share.schedule import StageSchedule, schedule_gpu


@dataclass
class GpuPlan:
    graph: GpuGraph
    kernels: list[FusedKernel]
    solutions: dict[str, FusionSolution]
    schedule: StageSchedule


@dataclass
class Plan:
    source: str
    script: str
    graph: PrepGraph
    n_gpus: int
    batch: int
    placement: list[int]
    cost_model: CostModel
    gpus: list[GpuPlan]
    plan_seconds: float
    solver: str

    def kernel_cost(self, k: FusedKernel) -> float:
        rows = self.batch if k.batch == "local" else self.batch * self.n_gpus
        params = k.tasks[0].node.params if k.tasks else {}
        return self.cost_model.kernel_ms(k.op, k.degree, k.mean_width, rows, params)

    def to_json(self) -> dict:
        g = self.graph
        return {
            "source": self.source,
            "n_gpus": self.n_gpus,
            "batch": self.batch,
            "solver": self.solver,
            "plan_seconds": round(self.plan_seconds, 4),
            "cost_model": {"backend": self.cost_model.backend, "device": self.cost_model.device,
                           "accuracy_within_10pct": self.cost_model.accuracy,
                           "note": self.cost_model.note,
                           "unprofiled_ops": sorted(self.cost_model.unprofiled)},
            "dense_features": [f.name for f in g.dense_features],
            "sparse_features": [{"name": f.name, "table_size": f.table_size, "gpu": p,
                                 "width": f.width} for f, p in zip(g.sparse_features, self.placement)],
            "nodes": [{"id": n.id, "op": n.op, "params": n.params, "input": n.source, "out": n.out,
                       "line": n.line, "width": n.width} for n in g.nodes],
            "gpus": [
                {
                    "gpu": gp.graph.gpu,
                    "raw_local": gp.graph.raw_local,
                    "raw_global": gp.graph.raw_global,
                    "milp": {b: {"objective": s.objective, "status": s.status, "solver": s.solver,
                                 "num_vars": s.num_vars, "num_constraints": s.num_constraints,
                                 "num_nonzeros": s.num_nonzeros, "n_levels": s.n_levels,
                                 "solve_seconds": round(s.solve_seconds, 4), "gap": s.gap,
                                 "message": s.message} for b, s in gp.solutions.items()},
                    "budgets_ms": gp.schedule.budgets,
                    "stage_ms": gp.schedule.stage_ms,
                    "chosen_stages": gp.schedule.chosen,
                    "overflow_ms": gp.schedule.overflow_ms,
                    "kernels": [
                        {"stage": p.stage, "op": p.kernel.op, "batch": p.kernel.batch,
                         "level": p.kernel.level, "degree": p.kernel.degree,
                         "mean_width": p.kernel.mean_width, "cost_ms": round(p.cost_ms, 5),
                         "shard": p.shard, "columns": [t.key for t in p.kernel.tasks],
                         "nodes": [t.node.id for t in p.kernel.tasks]}
                        for p in gp.schedule.placed
                    ],
                }
                for gp in self.gpus
            ],
        }  # fmt: skip

    def summary(self) -> str:
        g = self.graph
        lines = [
            f"RAP plan for {self.source}: {self.n_gpus} GPU(s), batch {self.batch} per GPU",
            f"  graph: {len(g.nodes)} nodes, {len(g.dense_features)} dense features, "
            f"{len(g.sparse_features)} sparse features (tables)",
            f"  cost model: {self.cost_model.backend} ({self.cost_model.device})"
            + (f"; {self.cost_model.note}" if self.cost_model.note else ""),
            f"  planning took {self.plan_seconds:.2f} s (solver {self.solver})",
        ]
        if self.cost_model.unprofiled:
            lines.append(
                "  note: no profile data for "
                + ", ".join(sorted(self.cost_model.unprofiled))
                + "; their kernels are costed with the analytic estimate"
            )
        for gp in self.gpus:
            owned = [f.name for f in gp.graph.sparse_features]
            lines.append(f"GPU {gp.graph.gpu}: {len(gp.graph.tasks)} tasks -> {len(gp.kernels)} fused "
                         f"kernels; tables {', '.join(owned) if owned else '(none)'}")  # fmt: skip
            for b, s in gp.solutions.items():
                lines.append(f"  MILP[{b}]: {s.num_vars} vars, {s.num_constraints} constraints, "
                             f"objective {s.objective}, {s.status}, {s.solve_seconds:.3f} s"
                             + (f" -- {s.message}" if s.message else ""))  # fmt: skip
            lines += gp.schedule.report()
            for st in STAGES:
                for p in gp.schedule.kernels(st):
                    sh = f" shard {p.shard[0]}:{p.shard[1]}" if p.shard else ""
                    lines.append(f"    {st:9s} {p.kernel.name:28s} {p.cost_ms:8.4f} ms{sh}")
        return "\n".join(lines) + "\n"


def load_script(source: str) -> tuple[str, str]:
    """(text, name) of a named plan (plan0..plan3) or a script file."""
    if source in PLANS:
        return plan_script(source), source
    p = Path(source)
    if not p.is_file():
        raise PlanError(f"script {source!r}: no such file (or use one of {', '.join(PLANS)})")
    return p.read_text(encoding="utf-8"), str(p)


def make_plan(
    source: str,
    n_gpus: int,
    batch: int,
    placement: list[int] | None = None,
    cost_model: CostModel | None = None,
    solver: str = "highs",
    time_limit: float = 60.0,
    n_levels: int | None = None,
) -> Plan:
    """Build the whole plan (see module docstring)."""
    if batch < 1:
        raise PlanError(f"batch must be >= 1, got {batch}")
    if n_gpus < 1:
        raise PlanError(f"n_gpus must be >= 1, got {n_gpus}")
    t0 = time.perf_counter()
    text, name = load_script(source)
    graph = PrepGraph(_script.parse(text, source=name))
    if placement is None and source in PLANS:
        placement = plan_placement(source, n_gpus)
    gpu_graphs = graph.map_to_gpus(n_gpus, placement)
    placement = (
        list(placement)
        if placement is not None
        else [g.gpu for f in graph.sparse_features for g in gpu_graphs if f in g.sparse_features]
    )
    cm = cost_model or default_model()
    plan = Plan(name, text, graph, n_gpus, batch, placement, cm, [], 0.0, solver)
    budgets = cm.stage_budgets(batch)
    times = cm.stage_times(batch)
    for gg in gpu_graphs:
        kernels, sols = fuse_gpu(gg, solver, time_limit, n_levels)
        sched = schedule_gpu(
            gg.gpu, kernels, plan.kernel_cost, budgets, times, measured=cm.measured_stages
        )
        plan.gpus.append(GpuPlan(gg, kernels, sols, sched))
    plan.plan_seconds = time.perf_counter() - t0
    return plan
