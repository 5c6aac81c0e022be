"""RecFlex's model configs (A-F, ``test``, ``mlperf``) as rec-common workloads, and plans for them.

The configs and the data generator's semantics live in rec-common (``recflex-A`` ..
``recflex-F``, ``recflex-test``, ``recflex-mlperf``); tuning data uses each model's ``tune``
seed (A 1000, B 2000, C 3000, D and E 4000), reported runs its ``test`` seed (5000..8000).

>>> workload("D").num_features, seed_for(workload("D"), "test"), seed_for(workload("D"), "tune")
(1000, 8000, 4000)
"""

from __future__ import annotations

import os

from rec_common import workloads
from rec_common.workloads import Workload
from recflex.plan import Plan

MODELS = ("A", "B", "C", "D", "E", "F", "test", "mlperf")


def workload(model: str) -> Workload:
    """The rec-common workload of RecFlex model ``model``."""
    if model not in MODELS:
        raise ValueError(f"model {model!r}: expected one of {', '.join(MODELS)}")
    return workloads.load(f"recflex-{model}")


def seed_for(w: Workload, role: str = "test") -> int:
    """The data seed of ``role`` (``tune`` or ``test``); models with one data set use it for both."""
    if role not in ("tune", "test"):
        raise ValueError(f"role: expected 'tune' or 'test', got {role!r}")
    if role in w.seeds:
        return int(w.seeds[role])
    return w.seed(None)


def plan_for(w: Workload, plan: str | os.PathLike | None, occupancy: int | None = None) -> Plan:
    """``plan``: a JSON file (checked against the workload's tables) or None/``default``
    (the heuristic plan); ``occupancy`` overrides the plan's."""
    from recflex.module import default_plan_for

    if plan is None or str(plan) == "default":
        p = default_plan_for(w)
    else:
        p = Plan.load(plan, rows=w.table_sizes, dims=w.dims)
    return p if occupancy is None else p.with_occupancy(occupancy)
