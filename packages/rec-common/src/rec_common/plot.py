"""Bar and line charts from result rows.

    python -m rec_common.plot results/emb-kernels/micro24.jsonl --out micro24.png

Bars (the default) group rows by ``workload`` and colour them by ``variant``; ``--kind line``
puts a numeric field (``--x batch``) on the x axis with one line per variant. ``--y ratio``
plots speedups instead of values. Only rows of one metric are drawn (``--metric``, or the only
one in the file).
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

from rec_common.results import read_rows


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError("plotting needs matplotlib: `pip install 'rec-common[plot]'`") from exc
    return plt


def select_rows(rows: list[dict], metric: str | None, where: list[str]) -> list[dict]:
    for cond in where:
        if "=" not in cond:
            raise ValueError(f"--where {cond!r}: expected FIELD=VALUE")
        k, v = cond.split("=", 1)
        rows = [r for r in rows if str(r.get(k)) == v]
    metrics = sorted({r["metric"] for r in rows})
    if metric is None:
        if len(metrics) > 1:
            raise ValueError(f"the rows hold several metrics {metrics}; pick one with --metric")
        metric = metrics[0] if metrics else None
    rows = [r for r in rows if r["metric"] == metric]
    if not rows:
        raise ValueError(f"no rows left to plot (metric {metric!r}; metrics present: {metrics})")
    return rows


def plot_rows(
    rows: list[dict],
    out: str | Path,
    *,
    kind: str = "bar",
    x: str = "workload",
    y: str = "value",
    title: str | None = None,
    log_y: bool = False,
) -> Path:
    """Draw ``rows`` (one metric) to ``out`` (PNG, PDF or SVG by suffix)."""
    plt = _pyplot()
    unit = rows[0]["unit"] if y == "value" else "x vs " + str(rows[0].get("baseline"))
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    series: dict[str, dict] = defaultdict(dict)
    for r in rows:
        if r.get(y) is None:
            continue
        series[r["variant"]][r.get(x)] = float(r[y])
    ncat = len({r.get(x) for r in rows})
    fig, ax = plt.subplots(figsize=(max(7.5, 0.9 * ncat + 4), 4.0))  # legend on the right
    if kind == "bar":
        cats = list(dict.fromkeys(r.get(x) for r in rows))
        width = 0.8 / max(1, len(variants))
        for i, v in enumerate(variants):
            xs = [j + (i - (len(variants) - 1) / 2) * width for j in range(len(cats))]
            ax.bar(xs, [series[v].get(c, 0.0) for c in cats], width, label=v)
        tilt = len(cats) > 4 or max(len(str(c)) for c in cats) > 12
        ax.set_xticks(
            range(len(cats)),
            [str(c) for c in cats],
            rotation=30 if tilt else 0,
            ha="right" if tilt else "center",
        )
    elif kind == "line":
        for v in variants:
            pts = sorted((float(k), val) for k, val in series[v].items())
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=v)
    else:
        raise ValueError(f"kind must be 'bar' or 'line', got {kind!r}")
    if y == "ratio":
        ax.axhline(1.0, color="grey", lw=0.8, ls="--")
    if log_y:
        ax.set_yscale("log")
    ax.set_xlabel(x)
    ax.set_ylabel(f"{rows[0]['metric']} ({unit})" if y == "value" else f"{y} ({unit})")
    ax.set_title(
        title or f"{rows[0]['package']}: {rows[0]['benchmark']} on {rows[0].get('gpu', '?')}"
    )
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # never over a bar
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m rec_common.plot",
        description="Draw a bar or line chart from benchmark result rows (JSON lines).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        epilog="example: python -m rec_common.plot results/rec-common/preprocess.jsonl --out pre.png",
    )
    parser.add_argument("results", nargs="+", help="one or more .jsonl result files")
    parser.add_argument("--out", required=True, help="image to write (.png, .pdf, .svg)")
    parser.add_argument("--kind", choices=["bar", "line"], default="bar")
    parser.add_argument("--x", default="workload", help="field on the x axis")
    parser.add_argument("--y", default="value", choices=["value", "ratio"], help="what to draw")
    parser.add_argument("--metric", default=None, help="metric to draw when the file has several")
    parser.add_argument("--where", action="append", default=[], metavar="FIELD=VALUE",
                        help="keep only rows whose FIELD equals VALUE (repeatable)")  # fmt: skip
    parser.add_argument("--title", default=None)
    parser.add_argument("--log-y", action="store_true", help="logarithmic y axis")
    args = parser.parse_args(argv)
    try:
        rows = []
        for p in args.results:
            if not Path(p).is_file():
                raise ValueError(f"results file {p} does not exist")
            rows.extend(read_rows(p))
        rows = select_rows(rows, args.metric, args.where)
        out = plot_rows(
            rows, args.out, kind=args.kind, x=args.x, y=args.y, title=args.title, log_y=args.log_y
        )
    except (ValueError, ImportError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {out} ({len(rows)} rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
