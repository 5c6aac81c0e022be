"""Run a model's fused embedding over its test batches; print the summed kernel time.

On a GPU the fused kernel runs and each batch's host work (packing, runtime binding,
copies) is done before the timed launches. Without a GPU the CPU emulation of the same
work decomposition runs (correctness only, no timing). ``--check`` compares every batch
with per-feature ``embedding_bag``.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
from tqdm import tqdm

from recflex import models
from recflex.codegen import DISPATCH_MODES
from recflex.inputs import pack
from recflex.module import FusedEmbedding
from recflex.reference import embedding_bag_reference

EXAMPLE = "example: python -m recflex.run --model A --plan plans/A.json --batches 128 --check"


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m recflex.run",
        description=__doc__,
        epilog=EXAMPLE,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    ap.add_argument("--model", required=True, choices=models.MODELS)
    ap.add_argument("--plan", default="default", help="plan JSON file, or 'default' (heuristic)")
    ap.add_argument("--occupancy", type=int, default=None, help="override the plan's blocks/SM")
    ap.add_argument("--batches", type=int, default=128, help="number of batches")
    ap.add_argument("--data", choices=("test", "tune"), default="test", help="data seed")
    ap.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="fixed batch size (default: the model's distribution)",
    )
    ap.add_argument("--max-rows", type=int, default=None, help="cap table rows (small runs)")
    ap.add_argument("--dispatch", choices=DISPATCH_MODES, default="if-else")
    ap.add_argument("--weights-precision", choices=("fp32", "fp16"), default="fp32")
    ap.add_argument("--device", default=None, help="cuda or cpu (default: cuda when present)")
    ap.add_argument("--check", action="store_true", help="compare each batch with embedding_bag")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.batches < 1:
        print("error: --batches must be >= 1", file=sys.stderr)
        return 2
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda was asked for, but CUDA is not available", file=sys.stderr)
        return 1
    try:
        w = models.workload(args.model)
        if args.max_rows:
            w = w.scaled(max_rows=args.max_rows)
        plan = models.plan_for(w, args.plan, args.occupancy)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    dtype = torch.float16 if args.weights_precision == "fp16" else torch.float32
    tables = w.make_tables(dtype, device=device)
    emb = FusedEmbedding(tables, plan, dispatch=args.dispatch)
    seed = models.seed_for(w, args.data)
    batches = w.batches(args.batches, seed=seed, batch_size=args.batch_size)
    total_us, blocks, samples, worst = 0.0, 0, 0, 0.0
    t0 = time.perf_counter()
    for batch in tqdm(batches, total=args.batches, desc=f"model {args.model}", unit="batch"):
        if device.type == "cuda":
            gpu, binding, extra = emb.prepare(batch)
            torch.cuda.synchronize()
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            out = emb.run_prepared(gpu, binding, extra)
            b.record()
            b.synchronize()
            total_us += a.elapsed_time(b) * 1e3
        else:
            out = emb(batch)
            binding = emb.last_binding
        blocks += binding.total_blocks
        samples += batch.batch_size
        if args.check:
            ref = embedding_bag_reference([t.float() for t in tables], pack(batch).to(device))
            err = float((out - ref).abs().max()) if out.numel() else 0.0
            worst = max(worst, err)
    if device.type == "cuda":
        emb.check_errors()
    wall = time.perf_counter() - t0
    line = (
        f"model {args.model}: {args.batches} batches, {samples} samples, {blocks} blocks, "
        f"{plan.num_features} features"
    )
    if device.type == "cuda":
        line += (
            f", fused kernel {total_us:.1f} us in total ({total_us / args.batches:.1f} us/batch)"
        )
    else:
        line += f", CPU emulation in {wall:.1f} s"
    if args.check:
        line += f", max |diff| vs embedding_bag {worst:.2e}"
        tol = 1e-2 if dtype == torch.float16 else 1e-4
        if worst > tol:
            print(line)
            print(
                f"error: the fused output differs from embedding_bag by {worst:.2e} (> {tol})",
                file=sys.stderr,
            )
            return 1
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
