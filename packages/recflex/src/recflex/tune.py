"""Tune a RecFlex model: the two-stage tuner, then (optionally) the ablations.

Writes the tuned plan (JSON, for ``python -m recflex.run/bench --plan``) and a report next
to it (``PLAN.report.json``: clusters, per-occupancy winners, the global curve over o, the
chosen o, tuning wall time, number of compiles, cache hits, ablation results). The report
is rewritten atomically as the work goes (``stage``: local, global, ablations, done, or
failed/killed with ``error``), and the plan as soon as the global stage ends, so a run cut
by a timeout or a failure leaves what it finished: the local stage's scores
(``local_scores``), the stage timings (``stages``), the ablations done so far. Timings per
stage go to stdout as they happen. ``--cost
gpu`` measures with probe kernels on the GPU; ``--cost analytic`` uses the CPU model of
the kernel (a proxy, no GPU needed). Scores are cached under ``$RECFLEX_CACHE/tune``:
re-tuning an unchanged model costs no builds and no runs.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

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
    ap.add_argument(
        "--mutation-candidates",
        type=int,
        default=0,
        help="most candidates per mutated cluster, evenly spaced, the chosen one kept (0: all; "
        "each is a whole-model kernel build)",
    )
    ap.add_argument(
        "--local-budget-s",
        type=float,
        default=None,
        help="local stage: start another occupancy only if it fits this budget, judged by "
        "the slowest occupancy so far (the first always runs; order as in --occupancies)",
    )
    ap.add_argument(
        "--deadline-s",
        type=float,
        default=None,
        help="start no ablation after this many seconds since the start",
    )
    ap.add_argument("--rows", default=None, help="append ablation result rows to this JSONL")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    return ap


class ReportWriter:
    """Writes the report atomically (temporary file + rename) each time it changes."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.current: dict = {}
        self._n = 0

    def write(self, report: dict) -> None:
        self.current = report
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._n += 1
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{self._n}.tmp")
        tmp.write_text(json.dumps(report, indent=1) + "\n")
        os.replace(tmp, self.path)


def _log(msg: str, t0: float = time.perf_counter()) -> None:
    print(f"[tune {time.perf_counter() - t0:7.1f} s] {msg}", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.batches < 1 or args.local_batches < 1 or args.chunk < 1 or args.jobs < 1:
        print("error: --batches, --local-batches, --chunk and --jobs must be >= 1", file=sys.stderr)
        return 2
    plan_path = Path(args.out)
    writer = ReportWriter(
        Path(args.report) if args.report else plan_path.with_suffix(".report.json")
    )
    t0 = time.perf_counter()

    def killed(signum, frame):  # a timeout: leave the report, marked, and stop now
        rep = dict(writer.current)
        rep["error"] = f"killed by signal {signum} after {time.perf_counter() - t0:.1f} s"
        rep["stage_at_kill"] = rep.get("stage")
        rep["stage"] = "killed"
        try:
            writer.write(rep)
        finally:
            print(f"recflex.tune: {rep['error']}; report {writer.path}", flush=True)
            os._exit(128 + signum)

    old = signal.signal(signal.SIGTERM, killed)
    cost = None
    done: dict = {}
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
            log=_log,
            checkpoint=lambda partial: writer.write(
                {**partial, "notes": list(getattr(cost, "notes", []))[:50]}
            ),
            local_budget_s=args.local_budget_s,
        )
        w = models.workload(args.model)
        _log(f"model {args.model}: drawing {args.batches} tuning batches")
        batches = tuning_batches(w, args.batches)
        gen_s = time.perf_counter() - t0
        _log(f"data ready in {gen_s:.1f} s")
        res = tuner.tune(w, batches, model=args.model)
        res.report["data_s"] = round(gen_s, 3)
        res.report["stage"] = "ablations" if args.ablations else "done"
        res.report["notes"] = list(getattr(cost, "notes", []))[:50]
        res.report["total_s"] = round(time.perf_counter() - t0, 3)
        plan_path = res.plan.save(plan_path)  # the plan first: the bench can use it now
        writer.write(res.report)
        r = res.report
        _log(
            f"tuned: occupancy {r['occupancy']} (curve {json.dumps(r['global_curve'])}), "
            f"local {r['local_s']:.1f} s, global {r['global_s']:.1f} s, {r['compiles']} "
            f"compiles ({r['compile_s']:.1f} s); plan {plan_path}"
        )
        unit = "us" if args.cost == "gpu" else "model-ns"
        if args.rows and args.ablations:
            from rec_common.results import write_rows

            write_rows(
                args.rows, ablations.rows(args.model, r["cost"], {}, unit, cost.fingerprint())
            )
        failed: dict[str, str] = {}
        for a in args.ablations:
            if args.deadline_s is not None and time.perf_counter() - t0 > args.deadline_s:
                failed[a] = f"skipped: past --deadline-s {args.deadline_s:.0f}"
                _log(f"ablation {a}: {failed[a]}")
                continue
            ta = time.perf_counter()
            c0 = tuner.cost_stats()
            _log(f"ablation {a}: start")
            try:
                if a == "naive":
                    n = ablations.naive(tuner, w, batches)
                    done["naive"] = {"cost": n["cost"], "plan": n["plan"].to_dict()}
                elif a == "binding":
                    done["binding"] = ablations.binding(tuner, res.plan, batches)
                elif a == "dispatch":
                    done["dispatch"] = ablations.dispatch(tuner, res.plan, batches)
                else:
                    pick = ablations.heaviest_clusters(res, args.mutation_features)
                    done["mutation"] = ablations.mutation(
                        tuner, res, batches, pick, max_candidates=args.mutation_candidates
                    )
            except (ValueError, RuntimeError) as exc:
                failed[a] = str(exc)[:500]
                _log(f"ablation {a}: failed: {exc}"[:300])
                if getattr(exc, "fatal", False):
                    break
                continue
            finally:
                r.setdefault("stages", {}).setdefault("ablations", []).append(
                    {"what": a, **tuner.stage_stats(c0, time.perf_counter() - ta)}
                )
                r["ablations"] = done
                if failed:
                    r["ablations_failed"] = failed
                r["notes"] = list(getattr(cost, "notes", []))[:50]
                r["total_s"] = round(time.perf_counter() - t0, 3)
                writer.write(r)
            _log(f"ablation {a}: done in {time.perf_counter() - ta:.1f} s")
            if args.rows and a != "mutation":
                from rec_common.results import write_rows

                rows = ablations.rows(args.model, r["cost"], {a: done[a]}, unit,
                                      cost.fingerprint())[1:]  # fmt: skip
                write_rows(args.rows, rows)
        if failed:
            r["ablations_failed"] = failed
        r["stage"] = "done"
        r["total_s"] = round(time.perf_counter() - t0, 3)
        writer.write(r)
    except (ValueError, RuntimeError, ImportError, FileNotFoundError) as exc:
        rep = dict(writer.current)
        if rep:
            rep.update(stage="failed", error=str(exc)[:2000])
            if cost is not None:
                rep["notes"] = list(getattr(cost, "notes", []))[:50]
            rep["total_s"] = round(time.perf_counter() - t0, 3)
            writer.write(rep)
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, old)
    print(
        f"model {args.model}: {r['features']} features in {r['clusters']} clusters, "
        f"{r['candidates']} candidates; occupancy {r['occupancy']} "
        f"(curve {json.dumps(r['global_curve'])}); {r['compiles']} compiles, "
        f"{r['cache_hits']} cache hits, tuned in {r['wall_s']:.1f} s; "
        f"plan {plan_path}, report {writer.path}"
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
    for a, why in r.get("ablations_failed", {}).items():
        print(f"  {a}: not done: {why}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
