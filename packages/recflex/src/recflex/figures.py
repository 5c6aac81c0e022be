"""RecFlex's figures that this release can draw.

- ``workloads`` (CPU, the paper's workload-statistics figure): the embedding-dim histogram of
  models A-E, and per-sample pooling (lookups per sample) of the first 50 samples of a test
  batch.
- ``kernel`` (from ``python -m recflex.bench`` rows): normalized kernel performance per model,
  ``T_recflex / T_system`` as the paper plots it (RecFlex = 1; a bar below 1 means that
  system is slower than RecFlex).

- ``e2e`` (from ``python -m recflex.bench --e2e`` rows, ``metric=e2e_latency``): the same
  normalization for lookup + MLP 1024-256-128-1 per batch.
- ``tuning`` (from a ``python -m recflex.tune`` report): the opportunity plot (every
  candidate's probe score per feature cluster, normalized to the cluster's best), the global
  stage's curve over occupancy, the ablations (naive, static binding, jump table) against
  the two-stage plan, and the mutation curves with the chosen schedule circled.
- ``ablations`` (from one report per model, or ``benchmark=ablation`` rows): per model,
  ``T_two-stage / T_variant`` for naive separate-combine tuning, static-mean and static-max
  binding and the jump table (the two-stage plan with runtime binding and if-else = 1).
- ``opportunity`` (per report): each feature cluster's spread of candidate scores at the
  chosen occupancy (``cluster_info[].scores_at_optimum``; from ``local_scores`` when the
  run stopped before the global stage), ``best / candidate``, clusters by spread.
- ``mutation`` (per report): the whole kernel with one cluster's schedule swapped through
  its candidates, ``best / T``, the tuned choice circled.

Every ``draw_*`` function returns the matplotlib figure (tests read its data back); the
``plot_*`` functions save it as a PNG.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from recflex import models

FIGURES = ("workloads", "kernel", "e2e", "tuning", "ablations", "opportunity", "mutation")
TUNING_FIGURES = ("tuning", "ablations", "opportunity", "mutation")
EXAMPLE = (
    "example: python -m recflex.figures workloads kernel --results "
    "results/recflex/kernel.jsonl --out-dir results/recflex"
)


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError("figures need matplotlib: `pip install 'rec-common[plot]'`") from exc
    return plt


def workload_stats(model: str, samples: int = 50) -> dict:
    """Dim histogram and the per-sample lookups of the first ``samples`` samples of the
    model's first test batch (the batch is drawn with at least ``samples`` samples)."""
    w = models.workload(model)
    batch = next(w.batches(1, seed=models.seed_for(w, "test"), batch_size=samples))
    lengths = torch.stack([batch.lengths(i) for i in range(batch.num_features)])
    return {
        "dims": w.dim_histogram(),
        "per_sample": lengths.sum(dim=0).tolist(),
        "sum_dims": w.sum_dims,
    }


def plot_workloads(out: Path, model_list=("A", "B", "C", "D", "E")) -> Path:
    plt = _pyplot()
    stats = {m: workload_stats(m) for m in model_list}
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4))
    dims = sorted({d for s in stats.values() for d in s["dims"]})
    width = 0.8 / len(stats)
    for i, (m, s) in enumerate(stats.items()):
        xs = [j + i * width for j in range(len(dims))]
        ax1.bar(xs, [s["dims"].get(d, 0) for d in dims], width, label=f"model {m}")
        ax2.plot(range(len(s["per_sample"])), s["per_sample"], marker=".", label=f"model {m}")
    ax1.set_xticks([j + 0.4 - width / 2 for j in range(len(dims))], [str(d) for d in dims])
    ax1.set_xlabel("embedding dim")
    ax1.set_ylabel("features")
    ax1.set_title("embedding dims per model")
    ax1.legend(fontsize=8)
    ax2.set_xlabel("sample (first test batch)")
    ax2.set_ylabel("lookups over all features")
    ax2.set_title("per-sample pooling, first 50 samples")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def normalized(rows: list[dict], metric: str = "kernel_time") -> dict[str, dict[str, float]]:
    """``{workload: {variant: T_recflex / T_variant}}`` from ``metric`` rows of the benchmark
    (not the tuner's ablation rows; the last row of each (workload, variant) wins). Rows of
    a recflex variant run with a plan file become ``<variant>-tuned`` (``recflex-default``
    keeps its name: it is the heuristic plan); ``recflex`` is the default plan (the tuned one
    when only that ran)."""
    latest: dict[tuple[str, str], float] = {}
    for r in rows:
        if r.get("metric") == metric and r.get("benchmark") != "ablation":
            var = r["variant"]
            tuned = r.get("plan") not in (None, "default")
            if var.startswith("recflex") and var != "recflex-default" and tuned:
                var += "-tuned"  # a plan file (python -m recflex.tune): its own bar
            latest[(r["workload"], var)] = float(r["value"])
    out: dict[str, dict[str, float]] = {}
    for (wl, var), t in latest.items():
        rf = latest.get((wl, "recflex"), latest.get((wl, "recflex-tuned")))
        if rf is None or t <= 0:
            continue
        out.setdefault(wl, {})[var] = rf / t
    return out


def plot_kernel(
    results: Path, out: Path, metric: str = "kernel_time", title: str | None = None
) -> Path:
    from rec_common.results import read_rows

    plt = _pyplot()
    norm = normalized(read_rows(results), metric)
    if not norm:
        raise ValueError(f"{results}: no {metric} rows with a recflex variant to normalize by")
    variants = sorted({v for d in norm.values() for v in d}, key=lambda v: (v != "recflex", v))
    wls = sorted(norm)
    width = 0.8 / len(variants)
    fig, ax = plt.subplots(figsize=(max(7.5, 1.6 * len(wls) + 2), 4))
    for i, var in enumerate(variants):
        xs = [j + i * width for j in range(len(wls))]
        ax.bar(xs, [norm[w].get(var, 0.0) for w in wls], width, label=var)
    ax.axhline(1.0, color="black", lw=0.8)
    ax.set_xticks(
        [j + 0.4 - width / 2 for j in range(len(wls))], [w.replace("recflex-", "") for w in wls]
    )
    ax.set_ylabel("normalized performance (T_recflex / T)")
    ax.set_title(title or "embedding kernel time, summed over the test batches")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # never over a bar
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def plot_tuning(report: Path, out: Path) -> Path:
    """Four panels from a tuning report (see the module docstring)."""
    import json

    plt = _pyplot()
    r = json.loads(Path(report).read_text())
    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    ax = axes[0][0]
    info = sorted(
        r["cluster_info"],
        key=lambda c: -max((x for x in c["scores_at_optimum"] if x is not None), default=0),
    )
    for i, c in enumerate(info):
        s = [x for x in c["scores_at_optimum"] if x is not None and x > 0]
        if s:
            ax.scatter([i] * len(s), [min(s) / x for x in s], s=4, alpha=0.5)
    ax.set_xlabel("feature cluster (heaviest first)")
    ax.set_ylabel("normalized performance (best / candidate)")
    ax.set_title(f"opportunity at o={r['occupancy']}")
    ax = axes[0][1]
    curve = {o: v for o, v in r["global_curve"].items() if v is not None}
    ax.plot([int(o) for o in curve], list(curve.values()), marker="o")
    ax.set_xlabel("occupancy o (blocks/SM)")
    ax.set_ylabel("whole kernel, summed over the tuning batches")
    ax.set_title("global stage")
    ax = axes[1][0]
    ab = r.get("ablations", {})
    bars = {"two-stage": r["cost"]}
    if "naive" in ab:
        bars["naive"] = ab["naive"]["cost"]
    for k, v in ab.get("binding", {}).items():
        if k != "runtime":
            bars[k] = v
    if "jump-table" in ab.get("dispatch", {}):
        bars["jump-table"] = ab["dispatch"]["jump-table"]
    ax.bar(list(bars), [r["cost"] / v if v and v < float("inf") else 0 for v in bars.values()])
    ax.axhline(1.0, color="black", lw=0.8)
    ax.set_ylabel("normalized performance (T_two-stage / T)")
    ax.set_title("ablations")
    ax.tick_params(axis="x", labelrotation=20)
    ax = axes[1][1]
    for m in mutation_data(r):
        pts = [(x, y) for x, y in enumerate(m["normalized"]) if y is not None]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], lw=0.8,
                label=f"{m['feature']} (dim {m['dim']})")  # fmt: skip
        if m["normalized"][m["chosen"]] is not None:
            ax.scatter([m["chosen"]], [m["normalized"][m["chosen"]]], s=60,
                       facecolors="none", edgecolors="k")  # fmt: skip
    ax.set_xlabel("candidate schedule")
    ax.set_ylabel("normalized performance of the whole kernel")
    ax.set_title("mutation (chosen schedule circled)")
    if ab.get("mutation"):
        ax.legend(fontsize=7)
    fig.suptitle(f"{r['model']}: tuning ({r['cost_source']})", fontsize=9)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def plot_e2e(results: Path, out: Path) -> Path:
    """End to end (lookup + MLP) from ``metric=e2e_latency`` rows, normalized like ``kernel``."""
    return plot_kernel(
        results,
        out,
        metric="e2e_latency",
        title="end to end: lookup + MLP 1024-256-128-1, median latency per batch",
    )


# ---------------------------------------------------------------------------- tuning
ABLATION_VARIANTS = ("naive", "static-mean", "static-max", "jump-table")


def _load_report(report) -> dict:
    import json

    return report if isinstance(report, dict) else json.loads(Path(report).read_text())


def _model_of(report: dict) -> str:
    return str(report.get("model", "?")).replace("recflex-", "")


def ablation_data(reports=(), rows=()) -> dict[str, dict[str, float]]:
    """``{model: {variant: T_two-stage / T_variant}}``: ``two-stage`` is 1; ``naive``,
    ``static-mean``, ``static-max``, ``jump-table`` where measured (finite). From
    ``benchmark=ablation`` rows, then the reports (a report wins over a row)."""
    out: dict[str, dict[str, float]] = {}
    for r in rows:
        if r.get("benchmark") != "ablation" or not r.get("ratio"):
            continue  # ratio = T_two-stage / T_variant (rec_common.results.make_row)
        var = r["variant"].replace("binding-", "").replace("dispatch-", "")
        if var in ("two-stage", *ABLATION_VARIANTS):
            m = r["workload"].replace("recflex-", "")
            out.setdefault(m, {"two-stage": 1.0})[var] = float(r["ratio"])
    for rep in map(_load_report, reports):
        ab, base = rep.get("ablations") or {}, rep.get("cost")
        if not ab or not base:
            continue
        got = {}
        if "naive" in ab:
            got["naive"] = ab["naive"]["cost"]
        for k in ("static-mean", "static-max"):
            if k in ab.get("binding", {}):
                got[k] = ab["binding"][k]
        if "jump-table" in ab.get("dispatch", {}):
            got["jump-table"] = ab["dispatch"]["jump-table"]
        d = out.setdefault(_model_of(rep), {"two-stage": 1.0})
        for k, v in got.items():
            if v is not None and 0 < v < float("inf"):
                d[k] = base / v
    return {m: d for m, d in out.items() if len(d) > 1}


def draw_ablations(data: dict[str, dict[str, float]]):
    """Grouped bars per model (the paper's two-stage vs naive, runtime vs static binding
    and if-else vs jump-table panels in one)."""
    plt = _pyplot()
    if not data:
        raise ValueError("no ablation results (run python -m recflex.tune --ablations ...)")
    variants = [v for v in ("two-stage", *ABLATION_VARIANTS) if any(v in d for d in data.values())]
    ms = sorted(data)
    width = 0.8 / len(variants)
    fig, ax = plt.subplots(figsize=(max(6, 1.8 * len(ms)), 4))
    for i, var in enumerate(variants):
        xs = [j + i * width for j in range(len(ms))]
        ax.bar(xs, [data[m].get(var, 0.0) for m in ms], width, label=var)
    ax.axhline(1.0, color="black", lw=0.8)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(ms))], ms)
    ax.set_ylabel("normalized performance (T_two-stage / T)")
    ax.set_title("ablations: tuning, thread binding, dispatch (two-stage, runtime, if-else = 1)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def opportunity_data(report) -> list[dict]:
    """Per cluster: ``best / score`` of every candidate that ran, sorted descending, and the
    spread ``max / min``; clusters by spread, largest first. Uses ``scores_at_optimum``;
    a report cut before the global stage uses ``local_scores`` at its most measured
    occupancy instead (``occupancy`` says which)."""
    rep = _load_report(report)
    per: list[tuple[dict, list]] = []
    occ = rep.get("occupancy")
    if rep.get("cluster_info"):
        per = [(c, c["scores_at_optimum"]) for c in rep["cluster_info"]]
    elif rep.get("local_scores"):
        from collections import Counter

        occ = Counter(r["occupancy"] for r in rep["local_scores"]).most_common(1)[0][0]
        per = [
            ({"cluster": r["cluster"]}, r["scores"])
            for r in rep["local_scores"]
            if r["occupancy"] == occ
        ]
    out = []
    for c, scores in per:
        s = sorted(x for x in scores if x is not None and x > 0)
        if not s:
            continue
        name = c["features"][0] if c.get("features") else f"cluster {c['cluster']}"
        out.append(
            {
                "cluster": c["cluster"],
                "label": f"{name} (dim {c['dim']})" if "dim" in c else name,
                "occupancy": occ,
                "normalized": [s[0] / x for x in s],
                "spread": s[-1] / s[0],
                "failed": len(scores) - len(s),
            }
        )
    return sorted(out, key=lambda d: -d["spread"])


def draw_opportunity(data: list[dict], title: str = ""):
    plt = _pyplot()
    if not data:
        raise ValueError("no candidate scores in the report (cluster_info or local_scores)")
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4), width_ratios=[3, 1])
    for i, d in enumerate(data):
        ax1.scatter([i] * len(d["normalized"]), d["normalized"], s=4, alpha=0.5, color="C0")
    ax1.set_xlabel("feature cluster (largest spread first)")
    ax1.set_ylabel("normalized performance (best / candidate)")
    ax1.set_yscale("log")
    ax1.set_title(f"opportunity: every candidate's probe score at o={data[0]['occupancy']}")
    spreads = sorted(d["spread"] for d in data)
    ax2.plot(spreads, [(i + 1) / len(spreads) for i in range(len(spreads))], marker=".")
    ax2.set_xscale("log")
    ax2.set_xlabel("worst / best candidate of a cluster")
    ax2.set_ylabel("fraction of clusters")
    ax2.set_title("spread (CDF)")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def mutation_data(report) -> list[dict]:
    """Per mutated cluster: ``best / T`` of the whole kernel per candidate (``None`` where
    it could not run), the chosen candidate's index, and its rank."""
    rep = _load_report(report)
    out = []
    for m in (rep.get("ablations") or {}).get("mutation", []):
        fin = [c for c in m["costs"] if c is not None and 0 < c < float("inf")]
        if not fin:
            continue
        best = min(fin)
        ys = [best / c if c is not None and 0 < c < float("inf") else None for c in m["costs"]]
        out.append(
            {
                "feature": m["feature"],
                "dim": m["dim"],
                "normalized": ys,
                "chosen": m["chosen"],
                "rank_of_chosen": m["rank_of_chosen"],
                "of": m.get("of", len(m["costs"])),
            }
        )
    return out


def draw_mutation(data: list[dict], title: str = ""):
    plt = _pyplot()
    if not data:
        raise ValueError("no mutation results (python -m recflex.tune --ablations mutation)")
    fig, ax = plt.subplots(figsize=(8, 4))
    for i, d in enumerate(data):
        pts = [(x, y) for x, y in enumerate(d["normalized"]) if y is not None]
        ax.plot(
            [p[0] for p in pts],
            [p[1] for p in pts],
            lw=0.8,
            marker=".",
            color=f"C{i}",
            label=f"{d['feature']} (dim {d['dim']}, {len(d['normalized'])} of {d['of']})",
        )
        y = d["normalized"][d["chosen"]]
        if y is not None:
            ax.scatter([d["chosen"]], [y], s=90, facecolors="none", edgecolors="k", zorder=3)
    ax.set_xlabel("candidate schedule (index into the cluster's candidates)")
    ax.set_ylabel("normalized performance of the whole kernel (best / T)")
    ax.set_title(f"mutation: one cluster swapped, the rest held (tuned choice circled) {title}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _save(fig, out: Path) -> Path:
    plt = _pyplot()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def plot_ablations(reports, out: Path, rows=()) -> Path:
    return _save(draw_ablations(ablation_data(reports, rows)), out)


def plot_opportunity(report, out: Path) -> Path:
    rep = _load_report(report)
    title = f"{_model_of(rep)} ({rep.get('cost_source', '?')})"
    return _save(draw_opportunity(opportunity_data(rep), title), out)


def plot_mutation(report, out: Path) -> Path:
    rep = _load_report(report)
    return _save(draw_mutation(mutation_data(rep), f"({_model_of(rep)})"), out)


def _report_name(path: Path) -> str:
    return path.name.split(".")[0]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m recflex.figures",
        description=__doc__,
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument(
        "figures",
        nargs="*",
        metavar="FIGURE",
        help=f"any of {', '.join(FIGURES)} (default: workloads; kernel and e2e when the "
        "results file has such rows; the tuning figures when reports exist)",
    )
    ap.add_argument(
        "--results",
        default="results/recflex/kernel.jsonl",
        help="rows of python -m recflex.bench / tune --rows (default: %(default)s)",
    )
    ap.add_argument(
        "--report",
        action="append",
        default=None,
        help="a python -m recflex.tune report JSON; repeat for several models (default: "
        "every *.report.json next to --results)",
    )
    ap.add_argument("--out-dir", default="results/recflex", help="where the PNGs go")
    args = ap.parse_args(argv)
    bad = [f for f in args.figures if f not in FIGURES]
    if bad:
        ap.error(f"unknown figure(s) {bad}; expected any of {', '.join(FIGURES)}")
    res = Path(args.results)
    rows: list[dict] = []
    if res.is_file():
        from rec_common.results import read_rows

        rows = read_rows(res)
    metrics = {r.get("metric") for r in rows if r.get("benchmark") != "ablation"}
    if args.report:
        reports = [Path(p) for p in args.report]
    else:
        reports = sorted(res.parent.glob("*.report.json"))
    if args.figures:
        which = list(args.figures)
    else:
        which = ["workloads"]
        which += [f for f, m in (("kernel", "kernel_time"), ("e2e", "e2e_latency")) if m in metrics]
        if reports:
            which += list(TUNING_FIGURES)
        if not rows:
            print(f"skip kernel, e2e: {res} has no rows (run python -m recflex.bench on a GPU)")
    out_dir = Path(args.out_dir)
    written = []
    try:
        for fig in ("kernel", "e2e"):
            if fig not in which:
                continue
            if not res.is_file():
                print(
                    f"error: {res} does not exist; run python -m recflex.bench on a GPU first "
                    f"(or pass --results)",
                    file=sys.stderr,
                )
                return 1
            if fig == "kernel":
                written.append(plot_kernel(res, out_dir / "recflex-kernel.png"))
            else:
                written.append(plot_e2e(res, out_dir / "recflex-e2e.png"))
        if "workloads" in which:
            written.append(plot_workloads(out_dir / "recflex-workloads.png"))
        if any(f in which for f in TUNING_FIGURES):
            missing = [p for p in reports if not p.is_file()]
            if missing or (not reports and "ablations" not in which):
                print(
                    f"error: tuning report(s) {[str(p) for p in missing] or reports} not found; "
                    "run python -m recflex.tune first (its PLAN.report.json) and pass --report",
                    file=sys.stderr,
                )
                return 1
        for rp in reports:
            name = _report_name(rp)
            rep = _load_report(rp)
            if "tuning" in which:
                if "cluster_info" in rep:
                    written.append(plot_tuning(rp, out_dir / f"recflex-tuning-{name}.png"))
                else:
                    print(f"skip tuning for {rp}: stage {rep.get('stage')!r}, no global stage")
            if "opportunity" in which:
                written.append(plot_opportunity(rep, out_dir / f"recflex-opportunity-{name}.png"))
            if "mutation" in which:
                if mutation_data(rep):
                    written.append(plot_mutation(rep, out_dir / f"recflex-mutation-{name}.png"))
                else:
                    print(f"skip mutation for {rp}: no mutation results")
        if "ablations" in which:
            data = ablation_data(reports, rows)
            if data or "ablations" in args.figures:
                written.append(_save(draw_ablations(data), out_dir / "recflex-ablations.png"))
            else:
                print("skip ablations: no ablation results in the reports or rows")
    except (ValueError, ImportError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
