"""The MICRO'24-style figure: kernel latency and speedup over our baseline, per variant and
hotness, from the rows ``python -m emb_kernels.bench --workload micro24`` writes.

    python -m emb_kernels.figure results/emb-kernels/micro24.jsonl --out micro24.png

Two panels side by side: latency (us, median with p20-p80 whiskers) and speedup (baseline
latency / variant latency; 1.0 dashed). Groups are the workloads (hotness levels) in file
order, bars the variants in file order. The title names the GPU, so a figure from another
GPU is never mistaken for this one.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from rec_common.results import read_rows

EXAMPLE = "example: python -m emb_kernels.figure results/emb-kernels/micro24.jsonl --out fig.png"


def latency_table(
    rows: Sequence[dict], metric: str = "kernel_latency", variants: Sequence[str] | None = None
) -> tuple[list[str], list[str], dict[tuple[str, str], dict]]:
    """(workloads, variants, {(workload, variant): row}) for one metric; the last row wins."""
    sel = [r for r in rows if r.get("metric") == metric]
    if not sel:
        found = sorted({str(r.get("metric")) for r in rows})
        raise ValueError(f"no {metric!r} rows to draw (metrics present: {found})")
    workloads = list(dict.fromkeys(r["workload"] for r in sel))
    names = list(dict.fromkeys(r["variant"] for r in sel))
    if variants is not None:
        missing = [v for v in variants if v not in names]
        if missing:
            raise ValueError(f"variants {missing} have no {metric!r} rows (present: {names})")
        names = list(variants)
    cells = {(r["workload"], r["variant"]): r for r in sel}
    return workloads, names, cells


def speedup(cells: dict, workload: str, variant: str, baseline: str = "baseline") -> float | None:
    """Baseline latency / variant latency on one workload (None when either is missing)."""
    b, v = cells.get((workload, baseline)), cells.get((workload, variant))
    if b is None or v is None or v["value"] <= 0:
        return None
    return b["value"] / v["value"]


def draw(
    rows: Sequence[dict],
    out: str | Path,
    *,
    metric: str = "kernel_latency",
    variants: Sequence[str] | None = None,
    baseline: str = "baseline",
) -> Path:
    """Write the two-panel figure to ``out`` (PNG, PDF or SVG by suffix); returns the path."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError("the figure needs matplotlib: pip install matplotlib") from exc
    workloads, names, cells = latency_table(rows, metric, variants)
    fig, (ax_l, ax_s) = plt.subplots(1, 2, figsize=(max(10.0, 1.4 * len(workloads) * 2 + 4), 4.6))
    width = 0.8 / max(1, len(names))
    for i, v in enumerate(names):
        xs = [j + (i - (len(names) - 1) / 2) * width for j in range(len(workloads))]
        vals, lo, hi, sp = [], [], [], []
        for wl in workloads:
            r = cells.get((wl, v))
            val = r["value"] if r else 0.0
            vals.append(val)
            lo.append(val - r["p20"] if r and r.get("p20") is not None else 0.0)
            hi.append(r["p80"] - val if r and r.get("p80") is not None else 0.0)
            s = speedup(cells, wl, v, baseline)
            sp.append(s or 0.0)
        ax_l.bar(xs, vals, width, yerr=[lo, hi], capsize=1.5, label=v)
        ax_s.bar(xs, sp, width, label=v)
    for ax in (ax_l, ax_s):
        ax.set_xticks(range(len(workloads)), workloads, rotation=15)
        ax.grid(axis="y", alpha=0.3)
    unit = cells[(workloads[0], names[0])]["unit"] if (workloads[0], names[0]) in cells else "us"
    ax_l.set_ylabel(f"{metric} ({unit})")
    ax_s.set_ylabel(f"speedup over {baseline} (x)")
    ax_s.axhline(1.0, color="grey", lw=0.8, ls="--")
    ax_s.legend(fontsize=7, ncol=2)
    first = next(iter(cells.values()))
    fig.suptitle(
        f"{first.get('package', '')} {first.get('benchmark', '')} on {first.get('gpu', '?')} "
        f"({first.get('sm_count', '?')} SMs)",
        fontsize=10,
    )
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m emb_kernels.figure",
        description=__doc__,
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("results", nargs="+", help="JSON-lines files from emb_kernels.bench")
    parser.add_argument("--out", required=True, help="image to write (.png, .pdf, .svg)")
    parser.add_argument(
        "--metric", default="kernel_latency", help="metric to draw (default: %(default)s)"
    )
    parser.add_argument(
        "--variants", default=None, help="comma-separated variants, in order (default: all)"
    )
    parser.add_argument(
        "--baseline",
        default="baseline",
        help="variant the speedups refer to (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    try:
        rows = []
        for p in args.results:
            if not Path(p).is_file():
                raise ValueError(f"results file {p} does not exist")
            rows += read_rows(p)
        names = [v.strip() for v in args.variants.split(",")] if args.variants else None
        out = draw(rows, args.out, metric=args.metric, variants=names, baseline=args.baseline)
    except (ValueError, ImportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
