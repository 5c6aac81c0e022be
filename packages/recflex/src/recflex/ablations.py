"""RecFlex's ablations, on any tuner cost source (every number goes through the tuner's cache).

- ``naive``: direct separate-combine tuning: each candidate timed alone in a one-feature
  kernel (no co-running schedules, no occupancy control), the per-feature winners fused,
  built without an occupancy bound. Compared with the two-stage plan.
- ``binding``: the tuned plan with runtime thread binding vs static binding (block counts
  fixed from the mean or the max over the tuning batches; :class:`~recflex.binding.StaticBinder`).
- ``dispatch``: the tuned plan with the if-else chain vs a jump table of function pointers.
- ``mutation``: hold the tuned plan, swap one feature cluster through all its candidates,
  time the whole fused kernel each time (is the chosen schedule the best in context?).

Each function returns plain dicts; :func:`rows` turns them into result rows.
"""

from __future__ import annotations

from collections.abc import Sequence

from recflex.binding import BINDINGS
from recflex.codegen import DISPATCH_MODES
from recflex.inputs import Packed
from recflex.plan import Plan
from recflex.tuner import Cluster, Tuner, TuneResult, _argmin, digest

ABLATIONS = ("naive", "binding", "dispatch", "mutation")


def naive(tuner: Tuner, workload, batches: Sequence[Packed]) -> dict:
    """The separate-combine plan and its whole-kernel cost."""
    from recflex.tuner import clusters_of

    clusters = clusters_of(workload, templates=tuner.templates, merge=tuner.merge)
    jobs = tuner.local_jobs(clusters, batches, [None])
    scores = tuner.run_local(jobs, kind="naive")
    winners = {}
    for j, sc in zip(jobs, scores):
        i = _argmin(sc)
        if i is None:
            raise RuntimeError(f"naive tuning: no candidate of {j.cluster.describe()} could run")
        winners[j.cluster.index] = j.cluster.candidates[i]
    shape = (workload.dims, workload.table_sizes, workload.keys)
    plan = tuner.fuse(clusters, winners, shape, None)
    (cost,) = tuner.global_costs([plan], batches, digest(batches), desc="naive plan")
    return {"plan": plan, "cost": cost}


def binding(tuner: Tuner, plan: Plan, batches: Sequence[Packed]) -> dict[str, float]:
    """Whole-kernel cost of ``plan`` with runtime, static-mean and static-max binding."""
    key = digest(batches)
    return {
        b: tuner.global_costs([plan], batches, key, binding=b, desc=f"binding {b}")[0]
        for b in BINDINGS
    }


def dispatch(tuner: Tuner, plan: Plan, batches: Sequence[Packed]) -> dict[str, float]:
    """Whole-kernel cost of ``plan`` with each dispatch mode."""
    key = digest(batches)
    return {
        d: tuner.global_costs([plan], batches, key, dispatch=d, desc=f"dispatch {d}")[0]
        for d in DISPATCH_MODES
    }


def mutation(
    tuner: Tuner,
    result: TuneResult,
    batches: Sequence[Packed],
    clusters: Sequence[int],
    max_candidates: int = 0,
) -> list[dict]:
    """For each cluster index in ``clusters``: the whole-kernel cost with every candidate
    swapped in for that cluster's features (the rest held at the tuned plan).
    ``max_candidates`` > 0: at most that many, evenly spaced over the candidate list, the
    chosen one always among them (each candidate is a whole-model kernel build)."""
    plan = result.plan
    by_index: dict[int, Cluster] = {c.index: c for c in result.clusters}
    key = digest(batches)
    out = []
    for ci in clusters:
        if ci not in by_index:
            raise ValueError(f"mutation: cluster {ci} does not exist (0..{len(by_index) - 1})")
        c = by_index[ci]
        chosen_s = plan.schedules[c.rep]
        cands = _spaced(list(c.candidates), chosen_s, max_candidates)
        plans = []
        for s in cands:
            scheds = list(plan.schedules)
            for f in c.features:
                scheds[f] = s
            plans.append(Plan(tuple(scheds), plan.dims, plan.rows, plan.occupancy, plan.names))
        costs = tuner.global_costs(plans, batches, key, desc=f"mutation {c.names[0]}")
        chosen = cands.index(chosen_s)
        out.append(
            {
                "cluster": ci,
                "feature": c.names[0],
                "dim": c.dim,
                "of": len(c.candidates),
                "candidates": [repr(s) for s in cands],
                "costs": costs,
                "chosen": chosen,
                "rank_of_chosen": sorted(costs).index(costs[chosen]),
            }
        )
    return out


def _spaced(cands: list, keep, n: int) -> list:
    """At most ``n`` of ``cands`` (all when ``n`` <= 0), evenly spaced, ``keep`` included."""
    if n <= 0 or len(cands) <= n:
        return cands
    idx = {round(i * (len(cands) - 1) / max(n - 1, 1)) for i in range(n)}
    k = cands.index(keep)
    if k not in idx:
        idx.remove(min(idx, key=lambda i: abs(i - k)))
        idx.add(k)
    return [cands[i] for i in sorted(idx)]


def heaviest_clusters(result: TuneResult, n: int = 4) -> list[int]:
    """The ``n`` multi-hot clusters with the largest spread across candidates (the
    mutation plot's features: where the choice matters)."""
    info = result.report["cluster_info"]

    def spread(ci):
        s = [x for x in ci["scores_at_optimum"] if x is not None]
        return (max(s) / min(s)) if s and min(s) > 0 else 0.0

    ranked = sorted(info, key=lambda ci: (ci["multi_hot"], spread(ci)), reverse=True)
    return [ci["cluster"] for ci in ranked[:n]]


def rows(model: str, tuned_cost: float, results: dict, unit: str, device: str) -> list[dict]:
    """Result rows (rec-common format) of the ablation costs, each against the tuned plan."""
    from rec_common.results import make_row

    out = []

    def row(variant, value, **kw):
        out.append(
            make_row(
                package="recflex",
                benchmark="ablation",
                workload=f"recflex-{model}",
                variant=variant,
                metric="kernel_time",
                unit=unit,
                value=float(value),
                baseline="two-stage",
                baseline_value=float(tuned_cost),
                device=device,
                **kw,
            )
        )

    row("two-stage", tuned_cost)
    if "naive" in results:
        row("naive", results["naive"]["cost"])
    for b, v in results.get("binding", {}).items():
        if b != "runtime":
            row(f"binding-{b}", v)
    for d, v in results.get("dispatch", {}).items():
        if d != "if-else":
            row(f"dispatch-{d}", v)
    return out
