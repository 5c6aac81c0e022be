"""``python -m rap_share.plan``: script -> plan (JSON, summary, picture) + training program."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rap_share.codegen import ModelConfig, render_program
from rap_share.costmodel import CostModel, default_model
from rap_share.errors import OpError, PlanError, ScriptError
from rap_share.milp import SOLVERS
from rap_share.picture import to_dot, write_png
from rap_share.planner import make_plan

EPILOG = """example:
  python -m rap_share.plan --script plan0 --gpus 4 --batch 4096 --out rap-plan0
  python -m rap_share.plan --script PRE.py --gpus 2 --batch 256 --out out \\
      --embedding-dim 16 --bottom-mlp 64 --top-mlp 64-1 --max-table-rows 100000
then: python out/train.py --steps 100"""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m rap_share.plan", description=__doc__,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter, epilog=EPILOG,
    )  # fmt: skip
    p.add_argument("--script", required=True, help="preprocessing script, or plan0..plan3")
    p.add_argument("--gpus", type=int, required=True, help="GPUs (ranks) to plan for")
    p.add_argument("--batch", type=int, required=True, help="rows per GPU per iteration")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument(
        "--placement",
        default="",
        help="table->GPU list, e.g. 0,1,1,0 (default: "
        "the artifact's for plan0/1 on 4 GPUs, else size-balanced)",
    )
    p.add_argument(
        "--cost-model",
        default="",
        help="cost model JSON (default: the shipped model "
        "for this GPU, else the analytic fallback)",
    )
    p.add_argument("--solver", choices=SOLVERS, default="highs")
    p.add_argument("--time-limit", type=float, default=60.0, help="MILP seconds per subgraph")
    p.add_argument("--embedding-dim", type=int, default=128)
    p.add_argument(
        "--bottom-mlp", default="512-256", help="bottom MLP widths before the embedding dim"
    )
    p.add_argument("--top-mlp", default="1024-1024-512-1")
    p.add_argument("--steps", type=int, default=100, help="default --steps of the program")
    p.add_argument("--warmup", type=int, default=20, help="default --warmup of the program")
    p.add_argument("--rows", type=int, default=131072, help="default synthetic rows of the program")
    p.add_argument("--max-table-rows", type=int, default=0, help="default table cap of the program")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        placement = [int(x) for x in args.placement.split(",")] if args.placement else None
    except ValueError:
        parser().error(f"--placement {args.placement!r}: expected comma-separated GPU indices")
    try:
        cm = CostModel.load(args.cost_model) if args.cost_model else default_model()
        plan = make_plan(args.script, args.gpus, args.batch, placement, cm, args.solver,
                         args.time_limit)  # fmt: skip
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        cmd = "python -m rap_share.plan " + " ".join(sys.argv[1:] if argv is None else argv)
        (out / "plan.json").write_text(json.dumps(plan.to_json(), indent=1))
        (out / "summary.txt").write_text(plan.summary())
        (out / "plan.dot").write_text(to_dot(plan))
        png = write_png(plan, out / "plan.png")
        model = ModelConfig(args.embedding_dim, args.bottom_mlp, args.top_mlp, args.steps,
                            args.warmup, args.rows, args.max_table_rows)  # fmt: skip
        (out / "train.py").write_text(render_program(plan, model, cmd, "train.py"))
    except (PlanError, ScriptError, OpError, ImportError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    sys.stdout.write(plan.summary())
    for gp in plan.gpus:
        for s in gp.solutions.values():
            if s.message:
                print(f"note: GPU {gp.graph.gpu}: {s.message}", file=sys.stderr)
        if gp.schedule.overflow_ms > 0:
            print(f"warning: GPU {gp.graph.gpu}: {gp.schedule.overflow_ms:.3f} ms of preprocessing "
                  "overflows the stage budgets (runs in grad_comm)", file=sys.stderr)  # fmt: skip
    print(f"wrote {out}/plan.json, summary.txt, plan.dot{', plan.png' if png else ''}, train.py")
    return 0


if __name__ == "__main__":
    sys.exit(main())
