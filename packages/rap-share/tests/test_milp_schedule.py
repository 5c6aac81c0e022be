"""Fusion MILP vs brute force, HiGHS vs gurobi, and the stage scheduler's capacity rule."""

from __future__ import annotations

import itertools
import random

import pytest

from rap_share import milp
from rap_share.errors import PlanError
from rap_share.fusion import FusedKernel
from rap_share.graph import Node, Task
from rap_share.schedule import schedule_gpu


def brute_force(problem: milp.FusionProblem, n_levels: int) -> int:
    best = -1
    for levels in itertools.product(range(n_levels), repeat=len(problem.nodes)):
        if milp.is_feasible(problem, levels, n_levels):
            best = max(best, milp.objective_of(problem.kinds, levels))
    return best


def random_problem(rng: random.Random, n: int, n_kinds: int) -> milp.FusionProblem:
    kinds = [f"k{rng.randrange(n_kinds)}" for _ in range(n)]
    edges = []
    for s in range(1, n):  # a forest of chains and joins, like preprocessing graphs
        if rng.random() < 0.6:
            edges.append((rng.randrange(s), s))
    return milp.FusionProblem([f"v{i}" for i in range(n)], kinds, edges)


@pytest.mark.parametrize("seed", range(8))
def test_milp_matches_brute_force(seed):
    rng = random.Random(seed)
    prob = random_problem(rng, rng.randint(3, 6), rng.randint(1, 3))
    n_levels = 3 if len(prob.nodes) > 5 else 4
    depth, height = prob.depths()
    n_levels = max(n_levels, max(d + h for d, h in zip(depth, height)) + 1)
    sol = milp.solve(prob, "highs", n_levels=n_levels)
    assert sol.status == "optimal"
    assert milp.is_feasible(prob, sol.levels, sol.n_levels)
    assert sol.objective == brute_force(prob, sol.n_levels)


def test_milp_prefers_fusion_over_asap():
    # a -> b chain of kind X,Y and a lone Y: ASAP puts the lone Y on level 0, apart from b;
    # the optimum moves it to level 1 with b (one fused Y kernel).
    prob = milp.FusionProblem(["a", "b", "c"], ["X", "Y", "Y"], [(0, 1)])
    sol = milp.solve(prob, "highs", n_levels=2)
    assert sol.objective == 1 + 4
    assert sol.levels[1] == sol.levels[2] == 1
    assert milp.solve(prob, "greedy", n_levels=2).objective == 3


def test_milp_size_report_and_errors():
    prob = milp.FusionProblem(["a", "b"], ["X", "X"], [])
    sol = milp.solve(prob)
    assert sol.num_vars > 0 and sol.num_constraints > 0 and sol.solve_seconds >= 0
    assert sol.objective == 4
    with pytest.raises(PlanError, match="cycle"):
        milp.solve(milp.FusionProblem(["a", "b"], ["X", "X"], [(0, 1), (1, 0)]))
    with pytest.raises(PlanError, match="solver: expected one of"):
        milp.solve(prob, solver="cplex")
    with pytest.raises(PlanError, match="time_limit must be > 0"):
        milp.solve(prob, time_limit=0)


def test_milp_time_limit_keeps_a_feasible_plan():
    rng = random.Random(3)
    prob = random_problem(rng, 120, 6)
    sol = milp.solve(prob, "highs", time_limit=0.05)
    assert milp.is_feasible(prob, sol.levels, sol.n_levels)
    if sol.status != "optimal":
        assert "time limit" in sol.message or "no feasible plan" in sol.message


def test_highs_and_gurobi_agree():
    ok, why = milp.gurobi_available()
    if not ok:
        pytest.skip(why)
    for seed in range(4):
        prob = random_problem(random.Random(seed), 10, 3)
        a = milp.solve(prob, "highs", n_levels=5, mip_gap=0.0)
        b = milp.solve(prob, "gurobi", n_levels=5, mip_gap=0.0)
        assert a.objective == b.objective


def _kernel(op: str, degree: int, gpu: int = 0, level: int = 0) -> FusedKernel:
    tasks = [
        Task(Node(i, op, {}, "raw", f"c{i}", i, 1, 1, False, None), "local") for i in range(degree)
    ]
    return FusedKernel(gpu, "local", level, op, tasks)


def _cost(k: FusedKernel) -> float:
    return 0.01 + 0.02 * k.degree


@pytest.mark.parametrize("seed", range(6))
def test_schedule_never_exceeds_capacity_unless_overflow(seed):
    rng = random.Random(seed)
    kernels = [
        _kernel(rng.choice(["logit", "firstx"]), rng.randint(1, 12), level=i) for i in range(8)
    ]
    budgets = {
        s: rng.uniform(0.0, 0.6) for s in ("emb_fwd", "mlp_fwd", "mlp_bwd", "emb_bwd", "grad_comm")
    }
    sched = schedule_gpu(0, kernels, _cost, budgets, {s: 1.0 for s in budgets})
    for s, b in budgets.items():
        if sched.overflow_ms == 0 or s != "grad_comm":
            assert sched.load(s) <= b + 1e-9, (s, sched.load(s), b)
    total_cols = sum(k.degree for k in kernels)
    assert sum(p.kernel.degree for p in sched.placed) == total_cols  # every column once
    if sched.overflow_ms > 0:
        assert sched.load("grad_comm") - budgets["grad_comm"] == pytest.approx(sched.overflow_ms)
        assert any("overflow" in line for line in sched.report())
    # kernel order is kept: stage index never decreases along the fused order
    order = ["emb_fwd", "mlp_fwd", "mlp_bwd", "emb_bwd", "grad_comm"]
    idx = [order.index(p.stage) for p in sched.placed]
    assert idx == sorted(idx)


def test_schedule_shards_a_kernel_that_does_not_fit():
    k = _kernel("logit", 10)  # cost 0.21
    budgets = {"emb_fwd": 0.0, "mlp_fwd": 0.12, "mlp_bwd": 0.0, "emb_bwd": 0.0, "grad_comm": 0.2}
    sched = schedule_gpu(0, [k], _cost, budgets, {s: 1.0 for s in budgets})
    parts = [(p.stage, p.shard, p.kernel.degree) for p in sched.placed]
    assert parts == [("mlp_fwd", (0, 5), 5), ("grad_comm", (5, 10), 5)]
    assert sched.overflow_ms == 0


def test_schedule_takes_another_stage_before_overflowing():
    # emb_bwd + grad_comm cover the kernel's cost (0.215 >= 0.21), but its two shards cost
    # 0.02 more than the whole: the next stage with room (mlp_fwd) is taken, nothing overflows
    k = _kernel("logit", 10)
    budgets = {"emb_fwd": 0.0, "mlp_fwd": 0.10, "mlp_bwd": 0.0, "emb_bwd": 0.11, "grad_comm": 0.105}
    sched = schedule_gpu(0, [k], _cost, budgets, {s: 1.0 for s in budgets})
    assert sched.chosen == ["mlp_fwd", "emb_bwd", "grad_comm"] and sched.overflow_ms == 0
    assert [(p.stage, p.shard) for p in sched.placed] == [
        ("mlp_fwd", (0, 4)), ("emb_bwd", (4, 9)), ("grad_comm", (9, 10))]  # fmt: skip
    assert all(sched.load(s) <= b + 1e-12 for s, b in budgets.items())


def test_schedule_fills_measured_stages_before_extrapolated_ones():
    # the 2 x H200 graph-replay profile at batch 4096: only emb_bwd has a measured capacity;
    # grad_comm's extrapolated budget has more room per base ms (0.85 vs 0.82) but stretches
    budgets = {"emb_fwd": 0.151, "mlp_fwd": 0.092, "mlp_bwd": 0.239, "emb_bwd": 1.705,
               "grad_comm": 0.463}  # fmt: skip
    times = {"emb_fwd": 1.27, "mlp_fwd": 0.75, "mlp_bwd": 1.92, "emb_bwd": 2.08, "grad_comm": 0.547}
    kernels = [_kernel("logit", 3, level=0), _kernel("firstx", 5, level=1)]
    assert {p.stage for p in schedule_gpu(0, kernels, _cost, budgets, times).placed} == {
        "grad_comm"}  # fmt: skip
    sched = schedule_gpu(0, kernels, _cost, budgets, times, measured=["emb_bwd"])
    assert sched.chosen == ["emb_bwd"] and {p.stage for p in sched.placed} == {"emb_bwd"}
    # more than the measured stage holds: the extrapolated stages take the rest, best first
    small = dict(budgets, emb_bwd=0.05)
    sched = schedule_gpu(0, kernels, _cost, small, times, measured=["emb_bwd"])
    assert sched.chosen == ["emb_bwd", "grad_comm"] and sched.overflow_ms == 0
    assert [(p.stage, p.shard) for p in sched.placed][:2] == [("emb_bwd", (0, 2)),
                                                              ("grad_comm", (2, 3))]  # fmt: skip
    with pytest.raises(ValueError, match="unknown stages.*emb_bwdd"):
        schedule_gpu(0, kernels, _cost, budgets, times, measured=["emb_bwdd"])


def test_schedule_reports_overflow():
    budgets = {s: 0.05 for s in ("emb_fwd", "mlp_fwd", "mlp_bwd", "emb_bwd", "grad_comm")}
    sched = schedule_gpu(0, [_kernel("logit", 40)], _cost, budgets, {s: 1.0 for s in budgets})
    assert sched.overflow_ms > 0.5
    assert "does not fit" in "\n".join(sched.report())
