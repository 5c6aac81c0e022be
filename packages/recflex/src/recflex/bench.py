"""Summed kernel time of RecFlex's fused kernel and its baselines over a model's test batches.

All variants run in one process on one GPU over the same batches: ``recflex`` (the plan's
fused kernel, heaviest blocks launched first: the module's default; ``recflex-feature-order``
the same with the blocks in feature order, the artifact's; ``recflex-forward`` the whole
``forward`` from a GPU-resident batch: binding, bounds check and launch;
``recflex-forward-sync-free`` that forward bound without a host sync, unvalidated;
``recflex-default``
the heuristic plan's kernel, beside a tuned ``--plan FILE``), ``torch`` (per-feature
``embedding_bag`` + ``cat``), ``fbgemm-tbe`` (FBGEMM's
inference TBE) and ``torchrec`` (``FusedEmbeddingBagCollection`` forward). Each variant's
host work (packing, runtime binding, copies) is done before timing; the metric is the sum
of its CUDA kernel durations over all batches (the paper's ``nsys`` kernel sum), median of
``--repeats``. Outputs are checked against per-feature ``embedding_bag`` first; a variant
that disagrees, or whose library does not import, is skipped with the reason logged.

``--e2e`` times the whole inference forward instead (:mod:`recflex.e2e`): each variant's
lookup (already concatenated to ``[B, sum of dims]``) followed by the MLP
``sum_dims-1024-256-128-1``, the same MLP weights for every variant; outputs are checked
against ``embedding_bag`` + MLP first, then each batch is one sample (CUDA events, one
warm-up pass), metric ``e2e_latency`` = the median over batches.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import torch

from rec_common.results import make_row, ratio, write_rows
from rec_common.timing import summarize
from recflex import baselines, e2e, models
from recflex.codegen import DISPATCH_MODES
from recflex.inputs import pack
from recflex.measure import summed_kernel_time
from recflex.module import FusedEmbedding
from recflex.reference import embedding_bag_reference

# Rows before 2026-11-30 (third session) named the feature order "recflex" and the
# heavy-first order "recflex-heavy-first"; heavy-first has been the default since.
# "recflex-forward" times the module's whole forward on a batch already on the GPU (runtime
# binding there, the ids' bounds check, the launch), as the baselines' runs include their
# own per-batch work; "recflex" times the launch alone, the paper's kernel-sum method.
# "recflex-default" is the heuristic plan's kernel, so that a tuned plan (--plan FILE) and
# the default one are timed in the same run.
# "recflex-forward-sync-free" is the same forward with FusedEmbedding(sync_free=True,
# validate=False): a bounded launch grid, no host read of the batch (unmeasured on a GPU yet).
VARIANTS = (
    "recflex", "recflex-feature-order", "recflex-forward", "recflex-forward-sync-free",
    "recflex-default", *baselines.BASELINES,
)  # fmt: skip
EXAMPLE = (
    "example: python -m recflex.bench --model A,B,C,D,E --plan default --batches 128 "
    "--out results/recflex/kernel.jsonl; end to end with the MLP: python -m recflex.bench "
    "--e2e --model A --batches 32"
)


def _csv(choices):
    def parse(text: str) -> list[str]:
        items = [t.strip() for t in text.split(",") if t.strip()]
        bad = [t for t in items if t not in choices]
        if bad or not items:
            raise argparse.ArgumentTypeError(
                f"expected a comma-separated subset of {', '.join(choices)}; got {text!r}"
            )
        return items

    return parse


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m recflex.bench",
        description=__doc__,
        epilog=EXAMPLE,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    ap.add_argument(
        "--model",
        type=_csv(models.MODELS),
        default=["A", "B", "C", "D", "E"],
        help="comma-separated RecFlex models",
    )
    ap.add_argument(
        "--plan",
        default="default",
        help="'default' (heuristic) or a plan JSON path; {model} is replaced "
        "(e.g. plans/{model}.json)",
    )
    ap.add_argument("--occupancy", type=int, default=None, help="override the plan's blocks/SM")
    ap.add_argument("--variants", type=_csv(VARIANTS), default=list(VARIANTS))
    ap.add_argument("--batches", type=int, default=128, help="test batches per model")
    ap.add_argument("--repeats", type=int, default=3, help="timed passes over the batches")
    ap.add_argument("--dispatch", choices=DISPATCH_MODES, default="if-else")
    ap.add_argument(
        "--method",
        choices=("auto", "profiler", "events"),
        default="auto",
        help="kernel sums from the profiler, or CUDA events per batch (not with --e2e: "
        "always events)",
    )
    ap.add_argument("--baseline", default="fbgemm-tbe", help="variant the ratios are against")
    ap.add_argument(
        "--e2e",
        action="store_true",
        help="time lookup + MLP " + "-".join(map(str, e2e.MLP_ARCH)) + " per batch instead",
    )
    ap.add_argument(
        "--out",
        default=None,
        help="JSON-lines file (appended); None: results/recflex/kernel.jsonl, or e2e.jsonl "
        "with --e2e",
    )
    return ap


def _check(name, out, ref, what: str = "embedding_bag") -> str | None:
    if out.shape != ref.shape:
        return f"output shape {tuple(out.shape)}, expected {tuple(ref.shape)}"
    err = float((out.float() - ref).abs().max()) if ref.numel() else 0.0
    scale = max(1.0, float(ref.abs().max())) if ref.numel() else 1.0
    return None if err <= 1e-3 * scale else f"max |diff| vs {what} is {err:.3e}"


def make_variant(name: str, tables, plan, dispatch: str = "if-else", default_plan=None):
    """``(prepare, run, emb)`` of variant ``name`` over ``tables``: ``prepare(packed)`` is
    the untimed host work, ``run(prepared)`` returns ``[B, sum of dims]``; ``emb`` is the
    :class:`FusedEmbedding` of a recflex variant, else None. ``recflex-default`` runs
    ``default_plan`` instead of ``plan``. On CPU tables recflex runs its emulation (no
    host/launch split there)."""
    if name.startswith("recflex"):
        if name == "recflex-default":
            if default_plan is None:
                raise ValueError("variant recflex-default needs default_plan")
            plan = default_plan
        order = "feature" if name == "recflex-feature-order" else "heavy-first"
        free = name == "recflex-forward-sync-free"
        emb = FusedEmbedding(tables, plan, dispatch=dispatch, task_order=order, sync_free=free,
                             validate=not free)  # fmt: skip
        if emb.device.type == "cuda":
            if name.startswith("recflex-forward"):  # like the baselines: only the copy is untimed
                dev = emb.device
                return (lambda p: p.to(dev, non_blocking=True)), emb, emb
            return emb.prepare, (lambda s: emb.run_prepared(*s)), emb
        return (lambda p: p), emb, emb
    reason = baselines.available(name)
    if reason:
        raise ImportError(reason)
    prepare, run = baselines.build(name, tables)
    return prepare, run, None


def _test_batches(model: str, args, log, dev):
    w = models.workload(model)
    plan = models.plan_for(w, args.plan.replace("{model}", model), args.occupancy)
    same = str(args.plan) == "default"  # the heuristic plan is `plan` itself then
    default = plan if same else models.plan_for(w, "default", args.occupancy)
    tables = w.make_tables(device=dev)
    t0 = time.perf_counter()
    threads = min(8, os.cpu_count() or 1)  # model A's 128 batches: minutes on one thread
    drawn = w.batches(args.batches, seed=models.seed_for(w, "test"), threads=threads)
    with ThreadPoolExecutor(max_workers=threads) as pool:
        host = list(pool.map(pack, drawn))
    log(
        f"[{model}] {w.num_features} features, sum of dims {w.sum_dims}, {len(host)} batches "
        f"(seed {models.seed_for(w, 'test')}, {sum(p.indices.numel() for p in host)} lookups) "
        f"generated in {time.perf_counter() - t0:.1f} s"
    )
    common = {
        "batches": len(host),
        "plan": args.plan,
        "dispatch": args.dispatch,
        "features": w.num_features,
        "sum_dims": w.sum_dims,
    }
    return w, (plan, default), tables, host, common


def _variants(args) -> list[str]:
    """``args.variants``, less ``recflex-default`` when the plan is the default one."""
    same = str(args.plan) == "default"
    return [v for v in args.variants if not (same and v == "recflex-default")]


def _add_ratios(rows: list[dict], baseline: str, model: str, log) -> None:
    """Every row against ``baseline``'s (torch when that one did not run)."""
    base = baseline if any(r["variant"] == baseline for r in rows) else "torch"
    base_row = next((r for r in rows if r["variant"] == base), None)
    for r in rows:  # same model, batches, metric
        if base_row is not None and r is not base_row:
            r["baseline"] = base
            r["ratio"] = ratio(r["value"], base_row["value"], r["unit"], r["metric"])
    for r in rows:
        if r["variant"] != base and r["ratio"]:
            log(f"[{model}] {r['variant']:12s} {r['ratio']:.2f}x vs {base}")


def bench_model(model: str, args, log) -> list[dict]:
    dev = torch.device("cuda")
    _w, (plan, default), tables, host, common = _test_batches(model, args, log, dev)
    refs = [embedding_bag_reference(tables, p.to(dev, torch.int64)) for p in host[:2]]
    rows = []
    for name in _variants(args):
        extra = {}
        try:
            prepare, run, emb = make_variant(name, tables, plan, args.dispatch, default)
            t1 = time.perf_counter()
            staged = [prepare(p) for p in host]
            torch.cuda.synchronize()
            if emb is not None and isinstance(staged[0], tuple):  # prepare() ran untimed
                extra["host_prepare_us_per_batch"] = round(
                    (time.perf_counter() - t1) / len(host) * 1e6, 1
                )
                keep = ("registers", "occupancy_blocks_per_sm", "static_smem_bytes", "functions",
                        "max_concurrent_blocks")  # fmt: skip
                stats = emb.kernel_stats(staged[0][2]["index_dtype"])
                extra.update({k: v for k, v in stats.items() if k in keep})
                extra["blocks"] = sum(s[1].total_blocks for s in staged)
            if getattr(run, "kind", None):  # which FBGEMM TBE ran (inference / training-forward)
                extra["fbgemm_kind"] = run.kind
            for i, ref in enumerate(refs):
                bad = _check(name, run(staged[i]), ref)
                if bad:
                    raise RuntimeError(f"batch {i}: {bad}")
            if emb is not None:
                emb.check_errors()
            totals, method = summed_kernel_time(
                run, staged, repeats=args.repeats, method=args.method
            )
        except Exception as exc:  # a baseline library failing must not stop the others
            log(f"[{model}] skip {name}: {type(exc).__name__}: {exc}")
            continue
        t = summarize(totals, torch.cuda.get_device_name(dev))
        log(
            f"[{model}] {name:12s} {t.median:12.1f} us over {len(host)} batches ({method})"
            + (f" {extra}" if extra else "")
        )
        rows.append(
            make_row(
                package="recflex",
                benchmark="kernel",
                workload=f"recflex-{model}",
                variant=name,
                metric="kernel_time",
                unit="us",
                timing=t,
                method=method,
                **common,
                **extra,
            )
        )
        del staged
        torch.cuda.empty_cache()
    _add_ratios(rows, args.baseline, model, log)
    return rows


def bench_e2e(model: str, args, log, device: torch.device | str = "cuda") -> list[dict]:
    """Rows of metric ``e2e_latency`` (us per batch): lookup + MLP, every variant of
    ``args.variants`` that runs here, after checking its output against ``embedding_bag``
    + the same MLP. Runs on CPU too (recflex emulated; times then are host times)."""
    dev = torch.device(device)
    w, (plan, default), tables, host, common = _test_batches(model, args, log, dev)
    mlp = e2e.make_mlp(w.sum_dims, device=dev)
    common["mlp"] = "-".join(map(str, mlp.sizes))
    with torch.no_grad():
        refs = [mlp(embedding_bag_reference(tables, p.to(dev, torch.int64))) for p in host[:2]]
    dev_name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    rows = []
    for name in _variants(args):
        try:
            prepare, lookup, emb = make_variant(name, tables, plan, args.dispatch, default)
            staged = [prepare(p) for p in host]
            forward = e2e.forward_fn(lookup, mlp)
            for i, ref in enumerate(refs):
                bad = _check(name, forward(staged[i]), ref, "embedding_bag + MLP")
                if bad:
                    raise RuntimeError(f"batch {i}: {bad}")
            if emb is not None and dev.type == "cuda":
                emb.check_errors()
            samples = e2e.per_batch_latency(forward, staged, repeats=args.repeats, device=dev)
        except Exception as exc:  # a baseline library failing must not stop the others
            log(f"[{model}] skip {name}: {type(exc).__name__}: {exc}")
            continue
        t = summarize(samples, dev_name)
        log(f"[{model}] {name:12s} e2e {t}")
        rows.append(
            make_row(
                package="recflex",
                benchmark="e2e",
                workload=f"recflex-{model}",
                variant=name,
                metric="e2e_latency",
                unit="us",
                timing=t,
                method="events" if dev.type == "cuda" else "perf_counter",
                **common,
            )
        )
        del staged
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    _add_ratios(rows, args.baseline, model, log)
    return rows


def _prebuild(args, log) -> None:
    """Compile every model's fused kernel up front, in parallel processes (disk cache)."""
    from recflex import build, launch
    from recflex.codegen import generate

    kernels = []
    for model in args.model:
        try:
            w = models.workload(model)
            plans = [models.plan_for(w, args.plan.replace("{model}", model), args.occupancy)]
        except (ValueError, FileNotFoundError):
            continue  # reported when the model runs
        if "recflex-default" in _variants(args):
            plans.append(models.plan_for(w, "default", args.occupancy))
        idt = "int32" if w.index_dtype == torch.int32 else "int64"
        kernels += [generate(p, index_dtype=idt, dispatch=args.dispatch) for p in plans]
    t0 = time.perf_counter()
    try:
        done = build.prebuild(kernels, launch.arch_of(torch.cuda.current_device()), jobs=8)
    except (RuntimeError, ImportError) as exc:
        log(f"prebuild failed ({exc}); kernels compile on first use")
        return
    built = [d for d in done if not d[2]]
    log(
        f"{len(kernels)} fused kernels ready in {time.perf_counter() - t0:.1f} s "
        f"({len(built)} compiled, slowest {max((d[1] for d in built), default=0):.1f} s)"
    )


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.batches < 1 or args.repeats < 1:
        print("error: --batches and --repeats must be >= 1", file=sys.stderr)
        return 2
    if not torch.cuda.is_available():
        print(
            "error: recflex.bench times GPU kernels and needs a CUDA GPU; none is present "
            "(python -m recflex.run checks a model on the CPU)",
            file=sys.stderr,
        )
        return 1

    def log(msg):
        print(msg, flush=True)

    _prebuild(args, log)
    out = args.out or f"results/recflex/{'e2e' if args.e2e else 'kernel'}.jsonl"
    all_rows = []
    for model in args.model:
        try:
            rows = bench_e2e(model, args, log) if args.e2e else bench_model(model, args, log)
        except (ValueError, FileNotFoundError) as exc:
            print(f"error: model {model}: {exc}", file=sys.stderr)
            return 1
        all_rows.extend(rows)
        if rows:
            write_rows(out, rows)
    print(f"wrote {len(all_rows)} rows to {out}")
    return 0 if all_rows else 1


if __name__ == "__main__":
    sys.exit(main())
