"""Generate and compile the fused kernel of a model's plan; print the kernel's statistics.

On a GPU: NVRTC (cached on disk), then the driver's numbers (registers, shared memory,
the occupancy the plan forces, blocks resident at once). Without one: nvcc for ``--arch``
and ptxas' numbers, with the occupancy estimated from them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from recflex import build, models
from recflex.codegen import DISPATCH_MODES, generate

EXAMPLE = (
    "example: python -m recflex.compile --model A --plan plans/A.json --occupancy 4 "
    "--source-out /tmp/A.cu"
)


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m recflex.compile",
        description=__doc__,
        epilog=EXAMPLE,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    ap.add_argument("--model", required=True, choices=models.MODELS, help="RecFlex model config")
    ap.add_argument("--plan", default="default", help="plan JSON file, or 'default' (heuristic)")
    ap.add_argument(
        "--occupancy", type=int, default=None, help="override the plan's blocks/SM (1-8)"
    )
    ap.add_argument("--dispatch", choices=DISPATCH_MODES, default="if-else")
    ap.add_argument("--index-dtype", choices=("int32", "int64"), default="int32")
    ap.add_argument("--weights-precision", choices=("fp32", "fp16"), default="fp32")
    ap.add_argument("--timing", action="store_true", help="the per-block clock() build (tuner)")
    ap.add_argument("--arch", default=None, help="e.g. sm_90; default: this GPU's (nvcc: sm_90)")
    ap.add_argument(
        "--compiler",
        choices=("auto", "nvrtc", "nvcc"),
        default="auto",
        help="auto: NVRTC + driver numbers on a GPU, else nvcc",
    )
    ap.add_argument("--source-out", default=None, help="also write the generated .cu here")
    ap.add_argument("--json", action="store_true", help="print the statistics as one JSON object")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        w = models.workload(args.model)
        plan = models.plan_for(w, args.plan, args.occupancy)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    wdt = "float16" if args.weights_precision == "fp16" else "float32"
    t0 = time.perf_counter()
    k = generate(
        plan,
        index_dtype=args.index_dtype,
        weight_dtype=wdt,
        dispatch=args.dispatch,
        timing=args.timing,
    )
    gen_s = time.perf_counter() - t0
    if args.source_out:
        with open(args.source_out, "w") as f:
            f.write(k.source)
    stats = {
        "model": args.model,
        "features": plan.num_features,
        "functions": k.num_functions,
        "templates": plan.template_counts(),
        "source_bytes": len(k.source),
        "generate_s": round(gen_s, 3),
    }
    compiler = args.compiler
    if compiler == "auto":
        compiler = "nvrtc" if _have_gpu() else "nvcc"
    t0 = time.perf_counter()
    try:
        if compiler == "nvrtc":
            from recflex import launch

            if not _have_gpu():
                print(
                    "error: --compiler nvrtc reports driver numbers and needs a CUDA GPU; "
                    "use --compiler nvcc here",
                    file=sys.stderr,
                )
                return 1
            lk = launch.load(k)
            stats.update(lk.stats())
        else:
            arch = args.arch or "sm_90"
            usage = build.compile_nvcc(k.source, arch)
            stats.update(usage, arch=arch, static_smem_bytes=usage["smem_bytes"])
            stats["occupancy_blocks_per_sm"] = build.estimate_occupancy(
                usage["registers"], usage["smem_bytes"]
            )
            stats["requested_occupancy"] = plan.occupancy
    except (RuntimeError, ImportError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    stats["compile_s"] = round(time.perf_counter() - t0, 2)
    stats["compiler"] = compiler
    if args.json:
        print(json.dumps(stats))
    else:
        for key, val in stats.items():
            print(f"{key:24s} {val}")
    return 0


def _have_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


if __name__ == "__main__":
    sys.exit(main())
