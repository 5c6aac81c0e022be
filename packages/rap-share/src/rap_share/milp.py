"""The fusion MILP: put nodes on levels so that same-kind nodes share levels (fuse).

RAP's model (section 4 of the digest), per GPU and per subgraph (local / global batch):

* binary ``x[v, l]``: node v on level l, l in 0..L-1 (L = 8, or the longest chain if longer);
* each node on exactly one level; for an edge p -> s, ``level(s) >= level(p) + 1`` with
  ``level(v) = sum_l l * x[v, l]``;
* maximize ``sum over (kind k, level l) of count(k, l)**2`` where count(k, l) = nodes of k on l.
  Each (level, kind) group becomes one fused kernel, so this rewards maximal fusion.

The square is made linear exactly: binaries ``y[k, l, m]`` (m = 1..n) with
``sum_m y[k, l, m] = count(k, l)`` and ``y[k, l, m] <= y[k, l, m-1]``; then
``sum_m (2m - 1) y[k, l, m] = count**2``. Levels outside ``[depth(v), L-1-height(v)]`` are
never created. HiGHS solves it by default; gurobipy solves the identical matrix when
installed and licensed. A time limit keeps the best feasible plan and says so.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from rap_share.constants import FUSION_LEVELS, MIP_GAP
from rap_share.errors import PlanError

SOLVERS = ("highs", "gurobi", "greedy")


@dataclass
class FusionProblem:
    """Nodes (names and kinds) and edges of one subgraph."""

    nodes: list[str]
    kinds: list[str]
    edges: list[tuple[int, int]]  # (pred index, succ index)

    def __post_init__(self) -> None:
        if len(self.nodes) != len(self.kinds):
            raise PlanError(f"{len(self.nodes)} nodes but {len(self.kinds)} kinds")
        for p, s in self.edges:
            if not (0 <= p < len(self.nodes) and 0 <= s < len(self.nodes)) or p == s:
                raise PlanError(f"edge ({p}, {s}) does not join two different nodes")

    def depths(self) -> tuple[list[int], list[int]]:
        """Longest path from a root (depth) and to a sink (height); raises on a cycle."""
        n = len(self.nodes)
        succ = defaultdict(list)
        indeg = [0] * n
        for p, s in self.edges:
            succ[p].append(s)
            indeg[s] += 1
        order, queue = [], [i for i in range(n) if indeg[i] == 0]
        while queue:
            v = queue.pop()
            order.append(v)
            for s in succ[v]:
                indeg[s] -= 1
                if indeg[s] == 0:
                    queue.append(s)
        if len(order) != n:
            raise PlanError("the preprocessing graph has a cycle")
        depth, height = [0] * n, [0] * n
        for v in order:
            for s in succ[v]:
                depth[s] = max(depth[s], depth[v] + 1)
        for v in reversed(order):
            for s in succ[v]:
                height[v] = max(height[v], height[s] + 1)
        return depth, height


def objective_of(kinds: Sequence[str], levels: Sequence[int]) -> int:
    """sum over (kind, level) of count**2 for a given assignment."""
    c: dict = defaultdict(int)
    for k, lv in zip(kinds, levels):
        c[(k, lv)] += 1
    return sum(v * v for v in c.values())


def is_feasible(problem: FusionProblem, levels: Sequence[int], n_levels: int) -> bool:
    return all(0 <= lv < n_levels for lv in levels) and all(
        levels[s] >= levels[p] + 1 for p, s in problem.edges
    )


@dataclass
class FusionSolution:
    levels: list[int]
    objective: int
    solver: str
    status: str  # "optimal" | "time_limit" | "heuristic"
    n_levels: int
    num_vars: int = 0
    num_constraints: int = 0
    num_nonzeros: int = 0
    solve_seconds: float = 0.0
    gap: float | None = None
    message: str = ""
    extra: dict = field(default_factory=dict)


@dataclass
class _Model:
    """min/max c'x subject to lo <= A x <= hi, x binary: the matrix both solvers receive."""

    cost: np.ndarray
    rows: list[tuple[list[int], list[float], float, float]]
    x_index: dict  # (node, level) -> column
    n_levels: int
    constant: int  # objective of singleton kinds (count**2 == 1 each)

    def csr(self):
        starts, idx, vals = [0], [], []
        for i, v, _, _ in self.rows:
            idx.extend(i)
            vals.extend(v)
            starts.append(len(idx))
        lo = np.array([r[2] for r in self.rows], float)
        hi = np.array([r[3] for r in self.rows], float)
        return np.array(starts, np.int32), np.array(idx, np.int32), np.array(vals, float), lo, hi


def build_model(problem: FusionProblem, n_levels: int | None = None) -> _Model:
    depth, height = problem.depths()
    longest = max(d + h for d, h in zip(depth, height)) + 1 if problem.nodes else 1
    L = max(n_levels or FUSION_LEVELS, longest)
    cost: list[float] = []
    x_index = {}
    for v in range(len(problem.nodes)):
        for lv in range(depth[v], L - height[v]):
            x_index[(v, lv)] = len(cost)
            cost.append(0.0)
    rows = []
    inf = float("inf")
    for v in range(len(problem.nodes)):  # one level per node
        cols = [x_index[(v, lv)] for lv in range(depth[v], L - height[v])]
        rows.append((cols, [1.0] * len(cols), 1.0, 1.0))
    for p, s in problem.edges:  # level(s) - level(p) >= 1
        ic = [x_index[(s, lv)] for lv in range(depth[s], L - height[s])]
        vc = [float(lv) for lv in range(depth[s], L - height[s])]
        ic += [x_index[(p, lv)] for lv in range(depth[p], L - height[p])]
        vc += [-float(lv) for lv in range(depth[p], L - height[p])]
        rows.append((ic, vc, 1.0, inf))
    by_kind = defaultdict(list)
    for v, k in enumerate(problem.kinds):
        by_kind[k].append(v)
    constant = 0
    for _k, members in by_kind.items():
        if len(members) == 1:
            constant += 1
            continue
        for lv in range(L):
            on = [x_index[(v, lv)] for v in members if (v, lv) in x_index]
            if len(on) < 2:  # a lone candidate: count is 0 or 1, so count**2 == count == x
                if on:
                    cost[on[0]] += 1.0
                continue
            ys = []
            for m in range(1, len(on) + 1):
                ys.append(len(cost))
                cost.append(2.0 * m - 1.0)
            # sum x - sum y == 0
            rows.append((on + ys, [1.0] * len(on) + [-1.0] * len(ys), 0.0, 0.0))
            for a, b in zip(ys[1:], ys[:-1]):  # y_m <= y_{m-1}
                rows.append(([a, b], [1.0, -1.0], -inf, 0.0))
    return _Model(np.array(cost), rows, x_index, L, constant)


def _levels_from(model: _Model, problem: FusionProblem, x: np.ndarray) -> list[int]:
    levels = [-1] * len(problem.nodes)
    for (v, lv), c in model.x_index.items():
        if x[c] > 0.5:
            levels[v] = lv
    return levels


def asap_levels(problem: FusionProblem) -> list[int]:
    """Every node on its earliest level: always feasible, the fallback plan."""
    return problem.depths()[0]


def solve(
    problem: FusionProblem,
    solver: str = "highs",
    time_limit: float = 60.0,
    n_levels: int | None = None,
    mip_gap: float = MIP_GAP,
) -> FusionSolution:
    """Solve the fusion MILP (see module docstring) with ``solver`` in SOLVERS."""
    if solver not in SOLVERS:
        raise PlanError(f"solver: expected one of {SOLVERS}, got {solver!r}")
    if time_limit <= 0:
        raise PlanError(f"time_limit must be > 0 seconds, got {time_limit}")
    if not problem.nodes:
        return FusionSolution([], 0, solver, "optimal", n_levels or FUSION_LEVELS)
    model = build_model(problem, n_levels)
    nnz = sum(len(r[0]) for r in model.rows)
    size = dict(num_vars=len(model.cost), num_constraints=len(model.rows), num_nonzeros=nnz)
    t0 = time.perf_counter()
    if solver == "greedy":
        lv = asap_levels(problem)
        return FusionSolution(
            lv,
            objective_of(problem.kinds, lv),
            "greedy",
            "heuristic",
            model.n_levels,
            **size,
            solve_seconds=time.perf_counter() - t0,
            message="greedy: every node on its earliest level (no MILP)",
        )
    run = _solve_highs if solver == "highs" else _solve_gurobi
    x, status, gap = run(model, time_limit, mip_gap)
    secs = time.perf_counter() - t0
    if x is None:
        lv = asap_levels(problem)
        return FusionSolution(
            lv, objective_of(problem.kinds, lv), solver, "heuristic", model.n_levels, **size,
            solve_seconds=secs,
            message=f"{solver} found no feasible plan within {time_limit:g} s ({status}); "
            "using the earliest-level plan instead. Raise --time-limit for a fused plan.",
        )  # fmt: skip
    lv = _levels_from(model, problem, x)
    if not is_feasible(problem, lv, model.n_levels):
        raise PlanError(f"{solver} returned an assignment that breaks the level constraints")
    msg = ""
    if status == "time_limit":
        msg = (f"{solver} hit the time limit of {time_limit:g} s; using the best feasible plan "
               f"found (relative gap {gap:.3%}). Raise --time-limit to close the gap.")  # fmt: skip
    return FusionSolution(
        lv,
        objective_of(problem.kinds, lv),
        solver,
        status,
        model.n_levels,
        **size,
        solve_seconds=secs,
        gap=gap,
        message=msg,
    )


def _new_highs(highspy):
    """A Highs instance without the copyright banner HiGHS prints on its first construction."""
    import sys

    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # no real stdout (captured): nothing to hide
        return highspy.Highs()
    sys.stdout.flush()
    saved = os.dup(fd)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), fd)
            return highspy.Highs()
    finally:
        os.dup2(saved, fd)
        os.close(saved)


def _solve_highs(model: _Model, time_limit: float, mip_gap: float):
    try:
        import highspy
    except ImportError:
        raise PlanError("the HiGHS solver needs highspy: pip install highspy") from None
    h = _new_highs(highspy)
    h.setOptionValue("output_flag", False)
    h.setOptionValue("time_limit", float(time_limit))
    h.setOptionValue("mip_rel_gap", float(mip_gap))
    h.setOptionValue("threads", 1)
    h.setOptionValue("random_seed", 0)
    n = len(model.cost)
    h.addVars(n, np.zeros(n), np.ones(n))
    h.changeColsCost(n, np.arange(n, dtype=np.int32), model.cost.astype(float))
    h.changeColsIntegrality(
        n, np.arange(n, dtype=np.int32), np.full(n, highspy.HighsVarType.kInteger)
    )
    starts, idx, vals, lo, hi = model.csr()
    inf = highspy.kHighsInf
    h.addRows(len(lo), np.where(np.isinf(lo), -inf, lo), np.where(np.isinf(hi), inf, hi),
              len(idx), starts[:-1], idx, vals)  # fmt: skip
    h.changeObjectiveSense(highspy.ObjSense.kMaximize)
    h.run()
    st = h.getModelStatus()
    info = h.getInfo()
    has_sol = info.primal_solution_status == 2  # kSolutionStatusFeasible
    if st == highspy.HighsModelStatus.kOptimal:
        return np.array(h.getSolution().col_value), "optimal", float(info.mip_gap)
    if st == highspy.HighsModelStatus.kTimeLimit and has_sol:
        return np.array(h.getSolution().col_value), "time_limit", float(info.mip_gap)
    return None, h.modelStatusToString(st), None


def gurobi_available() -> tuple[bool, str]:
    """(usable, why not): gurobipy imports and its licence starts an environment. The pip
    wheel's size-limited licence counts as usable; a model over its limit fails in
    :func:`solve` with Gurobi's own message."""
    try:
        import gurobipy as gp
    except ImportError:
        return False, "gurobipy is not installed (pip install 'rap-share[gurobi]')"
    try:
        env = gp.Env(empty=True)
        env.setParam("OutputFlag", 0)
        env.start()
        env.dispose()
    except gp.GurobiError as err:
        return False, f"gurobipy has no usable licence: {err}"
    return True, ""


def _solve_gurobi(model: _Model, time_limit: float, mip_gap: float):
    ok, why = gurobi_available()
    if not ok:
        raise PlanError(f"solver 'gurobi': {why}; the default solver is 'highs'")
    import gurobipy as gp
    import scipy.sparse as sp  # gurobipy's matrix API takes scipy

    starts, idx, vals, lo, hi = model.csr()
    A = sp.csr_matrix((vals, idx, starts), shape=(len(lo), len(model.cost)))
    env = gp.Env(empty=True)
    env.setParam("OutputFlag", 0)
    env.start()
    m = gp.Model(env=env)
    m.Params.TimeLimit = time_limit
    m.Params.MIPGap = mip_gap
    m.Params.Threads = 1
    x = m.addMVar(len(model.cost), vtype=gp.GRB.BINARY)
    m.setObjective(model.cost @ x, gp.GRB.MAXIMIZE)
    fin_lo, fin_hi = ~np.isinf(lo), ~np.isinf(hi)
    eq = fin_lo & fin_hi & (lo == hi)
    if eq.any():
        m.addConstr(A[eq] @ x == lo[eq])
    ge = fin_lo & ~eq
    if ge.any():
        m.addConstr(A[ge] @ x >= lo[ge])
    le = fin_hi & ~eq
    if le.any():
        m.addConstr(A[le] @ x <= hi[le])
    try:
        m.optimize()
    except gp.GurobiError as err:
        raise PlanError(
            f"solver 'gurobi' failed on a model of {len(model.cost)} variables: {err}; "
            "use --solver highs"
        ) from None
    if m.SolCount == 0:
        return None, f"gurobi status {m.Status}", None
    status = "optimal" if m.Status == gp.GRB.OPTIMAL else "time_limit"
    return np.array(x.X), status, float(m.MIPGap)
