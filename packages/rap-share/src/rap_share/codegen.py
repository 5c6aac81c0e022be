"""Writing the end-to-end training program of a plan (jinja2 template ``templates/train.py.j2``).

Each GPU gets one function per training stage holding that stage's fused kernel launches as
plain calls of :func:`rap_share.fused.run` with literal parameters; the rest of the program
(raw data, sharded DLRM from rec-common, the stage hooks, timing) is shared.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import jinja2

from rap_share.constants import STAGES
from rap_share.planner import Plan
from rap_share.runtime import input_key

TEMPLATES = Path(__file__).parent / "templates"


@dataclass
class ModelConfig:
    embedding_dim: int = 128
    bottom_mlp: str = "512-256"
    top_mlp: str = "1024-1024-512-1"
    steps: int = 100
    warmup: int = 20
    rows: int = 131072
    max_table_rows: int = 0


def _gpu_context(plan: Plan, gp) -> dict:
    stages = {}
    for s in STAGES:
        ks = []
        for p in gp.schedule.kernels(s):
            k = p.kernel
            ks.append({
                "op": k.op,
                "inputs": [input_key(t) for t in k.tasks],
                "outputs": [f'env["{t.key}"]' for t in k.tasks],
                "params": repr([t.node.params for t in k.tasks]),
                "names": repr([t.node.out for t in k.tasks]),
                "comment": f"{k.name}: {k.degree} column(s), {p.cost_ms:.4f} ms predicted"
                + (f", shard {p.shard[0]}:{p.shard[1]}" if p.shard else ""),
            })  # fmt: skip
        stages[s] = ks
    g = gp.graph
    feats = {f.name: f for f in plan.graph.features}
    return {
        "gpu": g.gpu,
        "raw_local": repr(g.raw_local),
        "raw_global": repr(g.raw_global),
        "dense_keys": repr([f"l{feats[f.name].node}" for f in g.dense_features]),
        "sparse_keys": repr([f"g{feats[f.name].node}" for f in g.sparse_features]),
        "sparse_names": [f.name for f in g.sparse_features],
        "stages": stages,
        "budgets": {s: round(gp.schedule.budgets.get(s, 0.0), 4) for s in STAGES},
        "loads": {s: round(gp.schedule.load(s), 4) for s in STAGES},
    }


def render_program(
    plan: Plan, model: ModelConfig | None = None, command: str = "", filename: str = "train.py"
) -> str:
    """The program's source text; it is checked to be valid Python before it is returned."""
    model = model or ModelConfig()
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES), undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True, autoescape=False,
    )  # fmt: skip
    g = plan.graph
    text = env.get_template("train.py.j2").render(
        source=plan.source, n_gpus=plan.n_gpus, batch=plan.batch, command=command or "(api)",
        filename=filename, stages=repr(list(STAGES)), stage_names=list(STAGES),
        dense_names=repr([f.name for f in g.dense_features]),
        sparse_names=repr([f.name for f in g.sparse_features]),
        table_sizes=repr(g.table_sizes), placement=repr(plan.placement),
        script='"""' + plan.script.replace('\\', '\\\\').replace('"""', '\\"""') + '"""',
        gpus=[_gpu_context(plan, gp) for gp in plan.gpus], **vars(model),
    )  # fmt: skip
    ast.parse(text, filename=filename)
    return text
