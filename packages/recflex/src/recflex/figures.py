"""RecFlex's figures that this release can draw.

- ``workloads`` (CPU, the paper's workload-statistics figure): the embedding-dim histogram of
  models A-E, and per-sample pooling (lookups per sample) of the first 50 samples of a test
  batch.
- ``kernel`` (from ``python -m recflex.bench`` rows): normalized kernel performance per model,
  ``T_recflex / T_system`` as the paper plots it (RecFlex = 1; a bar below 1 means that
  system is slower than RecFlex).

- ``tuning`` (from a ``python -m recflex.tune`` report): the opportunity plot (every
  candidate's probe score per feature cluster, normalized to the cluster's best), the global
  stage's curve over occupancy, the ablations (naive, static binding, jump table) against
  the two-stage plan, and the mutation curves with the chosen schedule circled.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from recflex import models

FIGURES = ("workloads", "kernel", "tuning")
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


def normalized(rows: list[dict]) -> dict[str, dict[str, float]]:
    """``{workload: {variant: T_recflex / T_variant}}`` from kernel_time rows (the last row
    of each (workload, variant) wins)."""
    latest: dict[tuple[str, str], float] = {}
    for r in rows:
        if r.get("metric") == "kernel_time":
            latest[(r["workload"], r["variant"])] = float(r["value"])
    out: dict[str, dict[str, float]] = {}
    for (wl, var), t in latest.items():
        rf = latest.get((wl, "recflex"))
        if rf is None or t <= 0:
            continue
        out.setdefault(wl, {})[var] = rf / t
    return out


def plot_kernel(results: Path, out: Path) -> Path:
    from rec_common.results import read_rows

    plt = _pyplot()
    norm = normalized(read_rows(results))
    if not norm:
        raise ValueError(f"{results}: no kernel_time rows with a recflex variant to normalize by")
    variants = sorted({v for d in norm.values() for v in d}, key=lambda v: (v != "recflex", v))
    wls = sorted(norm)
    width = 0.8 / len(variants)
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(wls)), 4))
    for i, var in enumerate(variants):
        xs = [j + i * width for j in range(len(wls))]
        ax.bar(xs, [norm[w].get(var, 0.0) for w in wls], width, label=var)
    ax.axhline(1.0, color="black", lw=0.8)
    ax.set_xticks(
        [j + 0.4 - width / 2 for j in range(len(wls))], [w.replace("recflex-", "") for w in wls]
    )
    ax.set_ylabel("normalized performance (T_recflex / T)")
    ax.set_title("embedding kernel time, summed over the test batches")
    ax.legend(fontsize=8)
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
        key=lambda c: -max(x for x in c["scores_at_optimum"] if x is not None),
    )
    for i, c in enumerate(info):
        s = [x for x in c["scores_at_optimum"] if x is not None and x > 0]
        if s:
            ax.scatter([i] * len(s), [min(s) / x for x in s], s=4, alpha=0.5)
    ax.set_xlabel("feature cluster (heaviest first)")
    ax.set_ylabel("normalized performance (best / candidate)")
    ax.set_title(f"opportunity at o={r['occupancy']}")
    ax = axes[0][1]
    curve = r["global_curve"]
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
    ax.bar(list(bars), [r["cost"] / v if v else 0 for v in bars.values()])
    ax.axhline(1.0, color="black", lw=0.8)
    ax.set_ylabel("normalized performance (T_two-stage / T)")
    ax.set_title("ablations")
    ax.tick_params(axis="x", labelrotation=20)
    ax = axes[1][1]
    for m in ab.get("mutation", []):
        best = min(m["costs"])
        ys = [best / c if c else 0 for c in m["costs"]]
        ax.plot(range(len(ys)), ys, lw=0.8, label=f"{m['feature']} (dim {m['dim']})")
        ax.scatter([m["chosen"]], [ys[m["chosen"]]], s=60, facecolors="none", edgecolors="k")
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m recflex.figures",
        description=__doc__,
        epilog=EXAMPLE,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    ap.add_argument(
        "figures",
        nargs="*",
        metavar="FIGURE",
        help=f"any of {', '.join(FIGURES)} (default: workloads, and kernel when "
        "the results file exists)",
    )
    ap.add_argument(
        "--results",
        default="results/recflex/kernel.jsonl",
        help="rows of python -m recflex.bench (kernel figure)",
    )
    ap.add_argument(
        "--report",
        default=None,
        help="a python -m recflex.tune report JSON (tuning figure)",
    )
    ap.add_argument("--out-dir", default="results/recflex", help="where the PNGs go")
    args = ap.parse_args(argv)
    bad = [f for f in args.figures if f not in FIGURES]
    if bad:
        ap.error(f"unknown figure(s) {bad}; expected any of {', '.join(FIGURES)}")
    res = Path(args.results)
    which = args.figures or ["workloads", *(["kernel"] if res.is_file() else [])]
    if not args.figures and not res.is_file():
        print(f"skip kernel: {res} does not exist (run python -m recflex.bench on a GPU)")
    out_dir = Path(args.out_dir)
    written = []
    try:
        if "workloads" in which:
            written.append(plot_workloads(out_dir / "recflex-workloads.png"))
        if "kernel" in which:
            if not res.is_file():
                print(
                    f"error: {res} does not exist; run python -m recflex.bench on a GPU first "
                    f"(or pass --results)",
                    file=sys.stderr,
                )
                return 1
            written.append(plot_kernel(res, out_dir / "recflex-kernel.png"))
        if "tuning" in which:
            if not args.report or not Path(args.report).is_file():
                print(
                    f"error: --report {args.report!r} is not a file; run python -m recflex.tune "
                    "first (its PLAN.report.json)",
                    file=sys.stderr,
                )
                return 1
            name = f"recflex-tuning-{Path(args.report).name.split('.')[0]}.png"
            written.append(plot_tuning(Path(args.report), out_dir / name))
    except (ValueError, ImportError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
