"""A picture of a plan: per GPU, fused kernels as boxes by stage (x) and level (y).

Written as PNG with matplotlib when it imports (``rap-share[plot]``), and always as Graphviz
DOT text (nodes = script lines, edges = column flow, clusters = fused kernels of GPU 0).
"""

from __future__ import annotations

from pathlib import Path

from rap_share.constants import STAGES


def to_dot(plan) -> str:
    lines = ["digraph rap_plan {", "  rankdir=LR; node [shape=box, fontsize=9];"]
    g0 = plan.gpus[0] if plan.gpus else None
    for gp in plan.gpus:
        for i, p in enumerate(gp.schedule.placed):
            k = p.kernel
            lines.append(f'  subgraph "cluster_g{gp.graph.gpu}_{i}" {{ label="GPU{gp.graph.gpu} '
                         f'{p.stage}: {k.name}"; fontsize=9;')  # fmt: skip
            for t in k.tasks:
                lines.append(f'    "{gp.graph.gpu}:{t.key}" [label="{t.node.op}\\n{t.node.out}"];')
            lines.append("  }")
        for key, preds in gp.graph.preds.items():
            for pk in preds:
                lines.append(f'  "{gp.graph.gpu}:{pk}" -> "{gp.graph.gpu}:{key}";')
        if gp is not g0 and len(plan.gpus) > 4:
            break
    lines.append("}")
    return "\n".join(lines) + "\n"


def write_png(plan, path: str | Path) -> Path | None:
    """The stage x GPU chart; None when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    n = len(plan.gpus)
    fig, axes = plt.subplots(n, 1, figsize=(11, 1.0 + 1.6 * n), squeeze=False)
    colors = plt.get_cmap("tab10")
    ops = sorted({p.kernel.op for gp in plan.gpus for p in gp.schedule.placed})
    for ax, gp in zip(axes[:, 0], plan.gpus):
        x0 = 0.0
        for s in STAGES:
            width = max(gp.schedule.budgets.get(s, 0.0), gp.schedule.load(s), 1e-3)
            ax.add_patch(plt.Rectangle((x0, 0), width, 1, fill=False, lw=1.2))
            ax.text(x0 + width / 2, 1.05, s, ha="center", va="bottom", fontsize=8)
            used = 0.0
            for p in gp.schedule.kernels(s):
                ax.add_patch(plt.Rectangle((x0 + used, 0.1), p.cost_ms, 0.8,
                                           color=colors(ops.index(p.kernel.op) % 10), alpha=0.8))  # fmt: skip
                used += p.cost_ms
            x0 += width
        ax.set_xlim(0, x0)
        ax.set_ylim(0, 1.4)
        ax.set_yticks([])
        ax.set_ylabel(f"GPU {gp.graph.gpu}")
        over = gp.schedule.overflow_ms
        if over > 0:
            ax.set_title(f"overflow {over:.3f} ms", fontsize=8, color="red", loc="right")
    axes[-1, 0].set_xlabel("ms (stage budget boxes; fused kernels filled by op)")
    handles = [plt.Rectangle((0, 0), 1, 1, color=colors(i % 10)) for i in range(len(ops))]
    fig.legend(handles, ops, loc="lower center", ncol=min(len(ops), 6), fontsize=8)
    fig.suptitle(f"RAP plan {Path(plan.source).name}: {plan.n_gpus} GPU(s), batch {plan.batch}")
    fig.tight_layout(rect=(0, 0.08, 1, 0.95))
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
