"""RAP (ASPLOS'24): input preprocessing co-located with multi-GPU DLRM training.

Script -> graph -> per-GPU mapping -> fusion MILP -> cost model -> stage schedule -> generated
training program. Start with :func:`rap_share.planner.make_plan` or ``python -m rap_share.plan``.
"""

from rap_share.__about__ import __version__
from rap_share.columns import Column
from rap_share.errors import OpError, PlanError, ScriptError
from rap_share.fused import run as run_fused

__all__ = [
    "Column",
    "OpError",
    "Plan",
    "PlanError",
    "ScriptError",
    "__version__",
    "make_plan",
    "run_fused",
]


def __getattr__(name: str):
    """``make_plan`` and ``Plan`` load the planner (and its solver and cost model) on first use."""
    if name in ("make_plan", "Plan"):
        from rap_share import planner

        return getattr(planner, name)
    raise AttributeError(f"module 'rap_share' has no attribute {name!r}")
