"""Tune a RecFlex model: the two-stage tuner, then (optionally) the ablations.

Writes the tuned plan (JSON, for ``python -m recflex.run/bench --plan``) and a report next
to it (``PLAN.report.json``: clusters, per-occupancy winners, the global curve over o, the
chosen o, tuning wall time, number of compiles, cache hits, ablation results). ``--cost
gpu`` measures with probe kernels on the GPU; ``--cost analytic`` uses the CPU model of
the kernel (a proxy, no GPU needed). Scores are cached under ``$RECFLEX_CACHE/tune``:
re-tuning an unchanged model costs no builds and no runs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from recflex import ablations, models
from recflex.tuner import AnalyticCost, NoCache, TuneCache, Tuner, tuning_batches

EXAMPLE = (
    "example: python -m recflex.tune --model A --out plans/A.json --batches 128 "
    "--local-batches 16 --ablations naive,binding,dispatch,mutation"
)


def _occupancies(text: str) -> list[int]:
    try:
        if "-" in text:
            a, b = (int(x) for x in text.split("-"))
            return list(range(a, b + 1))
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a range like 1-8 or a list like 2,4,8; got {text!r}"
        ) from None


def _ablation_list(text: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    bad = [t for t in items if t not in ablations.ABLATIONS]
    if bad:
        raise argparse.ArgumentTypeError(
            f"unknown ablation(s) {bad}; expected a subset of {', '.join(ablations.ABLATIONS)}"
        )
    return items


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m recflex.tune",
        description=__doc__,
        epilog=EXAMPLE,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    ap.add_argument("--model", required=True, choices=models.MODELS, help="RecFlex model")
    ap.add_argument("--out", required=True, help="plan JSON to write")
    ap.add_argument("--report", default=None, help="report JSON (default: next to --out)")
    ap.add_argument("--cost", choices=("gpu", "analytic"), default="gpu", help="cost source")
    ap.add_argument("--batches", type=int, default=128, help="tuning batches (global stage)")
    ap.add_argument(
        "--local-batches", type=int, default=16, help="first N tuning batches for the probes"
    )
    ap.add_argument(
        "--occupancies", type=_occupancies, default=None, help="blocks/SM to try (default: all)"
    )
    ap.add_argument("--chunk", type=int, default=32, help="most candidates per probe kernel")
    ap.add_argument("--jobs", type=int, default=16, help="parallel NVRTC builds")
    ap.add_argument(
        "--templates", default=None, help="comma-separated templates (default: the artifact's)"
    )
    ap.add_argument("--no-merge", action="store_true", help="tune every feature on its own")
    ap.add_argument("--no-cache", action="store_true", help="ignore and do not fill the cache")
    ap.add_argument("--cache-dir", default=None, help="tuning cache (default $RECFLEX_CACHE/tune)")
    ap.add_argument("--ablations", type=_ablation_list, default=[], help="comma-separated")
    ap.add_argument("--mutation-features", type=int, default=4, help="clusters in the mutation")
    ap.add_argument("--rows", default=None, help="append ablation result rows to this JSONL")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.batches < 1 or args.local_batches < 1 or args.chunk < 1 or args.jobs < 1:
        print("error: --batches, --local-batches, --chunk and --jobs must be >= 1", file=sys.stderr)
        return 2
    try:
        if args.cost == "gpu":
            from recflex.probe import GpuCost

            cost = GpuCost(chunk=args.chunk, jobs=args.jobs)
        else:
            cost = AnalyticCost()
        cache = NoCache() if args.no_cache else TuneCache(args.cache_dir)
        templates = args.templates.split(",") if args.templates else None
        tuner = Tuner(
            cost,
            cache=cache,
            occupancies=args.occupancies,
            templates=templates,
            merge=not args.no_merge,
            progress=not args.quiet,
            local_batches=args.local_batches,
        )
        w = models.workload(args.model)
        t0 = time.perf_counter()
        batches = tuning_batches(w, args.batches)
        gen_s = time.perf_counter() - t0
        res = tuner.tune(w, batches, model=args.model)
        res.report["data_s"] = round(gen_s, 3)
        done: dict = {}
        for a in args.ablations:
            if a == "naive":
                n = ablations.naive(tuner, w, batches)
                done["naive"] = {"cost": n["cost"], "plan": n["plan"].to_dict()}
            elif a == "binding":
                done["binding"] = ablations.binding(tuner, res.plan, batches)
            elif a == "dispatch":
                done["dispatch"] = ablations.dispatch(tuner, res.plan, batches)
            else:
                pick = ablations.heaviest_clusters(res, args.mutation_features)
                done["mutation"] = ablations.mutation(tuner, res, batches, pick)
        if done:
            res.report["ablations"] = done
        res.report["total_s"] = round(time.perf_counter() - t0, 3)
        res.report["notes"] = list(getattr(cost, "notes", []))[:50]
        plan_path, report_path = res.save(args.out, args.report)
        if args.rows and done:
            from rec_common.results import write_rows

            unit = "us" if args.cost == "gpu" else "model-ns"
            device = cost.fingerprint()
            write_rows(
                args.rows, ablations.rows(args.model, res.report["cost"], done, unit, device)
            )
    except (ValueError, RuntimeError, ImportError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    r = res.report
    print(
        f"model {args.model}: {r['features']} features in {r['clusters']} clusters, "
        f"{r['candidates']} candidates; occupancy {r['occupancy']} "
        f"(curve {json.dumps(r['global_curve'])}); {r['compiles']} compiles, "
        f"{r['cache_hits']} cache hits, tuned in {r['wall_s']:.1f} s; "
        f"plan {plan_path}, report {report_path}"
    )
    for a, v in done.items():
        if a in ("binding", "dispatch"):
            print(f"  {a}: {json.dumps(v)}")
        elif a == "naive":
            print(f"  naive: {v['cost']:.1f} vs two-stage {r['cost']:.1f}")
        else:
            for m in v:
                print(
                    f"  mutation {m['feature']}: chosen ranks {m['rank_of_chosen']} of {len(m['costs'])}"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
