"""RecFlex (SC'24): every feature field gets its own schedule inside one fused embedding kernel.

``Schedule`` (six templates with their parameter spaces), ``Plan`` (a schedule per feature
plus the occupancy, saved as JSON with its table shapes), ``generate`` (the fused CUDA
kernel), ``Binder`` (per-batch block counts), ``FusedEmbedding`` (the torch module).
"""

from recflex.__about__ import __version__
from recflex.binding import Binder, Binding
from recflex.codegen import Kernel, generate
from recflex.inputs import Packed, pack
from recflex.module import FusedEmbedding, default_plan_for
from recflex.plan import Plan, default_plan, default_schedule
from recflex.schedules import TEMPLATES, Schedule, candidates, template_candidates

__all__ = [
    "TEMPLATES",
    "Binder",
    "Binding",
    "FusedEmbedding",
    "Kernel",
    "Packed",
    "Plan",
    "Schedule",
    "__version__",
    "candidates",
    "default_plan",
    "default_plan_for",
    "default_schedule",
    "generate",
    "pack",
    "template_candidates",
]
