"""Reading an event log: Gantt chart, busy time per device, job times vs standalone.

    python -m rmixer.tools gantt rmixer-state/events.jsonl --out gantt.png
    python -m rmixer.tools workload rmixer-state/events.jsonl
    python -m rmixer.tools times rmixer-state/events.jsonl --profiles ~/.cache/rmixer/profiles.json

Jobs come from ``job_end`` events (worker-side ``t_start``/``t_end``, milliseconds), so a
job's bar runs from its process start to its end, as the artifact's draw_log did.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

from rmixer.events import read_events
from rmixer.knowledge import Knowledge, device_kind


def job_spans(events: list[dict], states: tuple[str, ...] = ("done",)) -> list[dict]:
    """One record per finished job: name, model, key, device, start, end (Unix s), state."""
    out = []
    for e in events:
        if e.get("event") != "job_end" or e.get("state") not in states:
            continue
        if e.get("t_start") is None or e.get("t_end") is None:
            continue
        out.append({"job": e["job"], "name": e["name"], "model": e["model"], "key": e.get("key"),
                    "device": e["device"], "run_on": e.get("run_on") or e["device"],
                    "start": e["t_start"], "end": e["t_end"], "dispatch": e.get("t_dispatch"),
                    "iterations": e.get("iterations"), "state": e["state"],
                    "peak_mb": e.get("peak_mb")})  # fmt: skip
    return sorted(out, key=lambda s: (s["start"], s["job"]))


def makespan(spans: list[dict]) -> float:
    if not spans:
        return 0.0
    first = min(s["dispatch"] or s["start"] for s in spans)
    return max(s["end"] for s in spans) - first


def start_waits(spans: list[dict]) -> list[float]:
    """``[median, max]`` seconds from a job's dispatch to its worker's start (a pre-started
    worker still importing, or a fresh one, shows here); ``[0.0, 0.0]`` without dispatch times.

    >>> start_waits([{"dispatch": 1.0, "start": 1.5}, {"dispatch": 2.0, "start": 2.1},
    ...              {"dispatch": None, "start": 3.0}])
    [0.3, 0.5]
    """
    waits = sorted(s["start"] - s["dispatch"] for s in spans if s.get("dispatch") is not None)
    if not waits:
        return [0.0, 0.0]
    return [round(statistics.median(waits), 3), round(waits[-1], 3)]


def workload(spans: list[dict]) -> dict[str, dict]:
    """Per device: jobs, busy seconds (sum of job durations), mean concurrency."""
    span = makespan(spans) or 1.0
    out: dict[str, dict] = defaultdict(lambda: {"jobs": 0, "busy_s": 0.0})
    for s in spans:
        d = out[s["device"]]
        d["jobs"] += 1
        d["busy_s"] += s["end"] - s["start"]
    for d in out.values():
        d["mean_concurrency"] = d["busy_s"] / span
    return dict(sorted(out.items()))


def times(spans: list[dict], knowledge: Knowledge | None = None) -> dict[str, dict]:
    """Per model: mean job duration, and the standalone duration from the profile cache
    (set-up + iterations x seconds per iteration, on the kind of device the job ran on)."""
    rows: dict[str, dict] = {}
    by_model: dict[str, list[dict]] = defaultdict(list)
    for s in spans:
        by_model[s["model"]].append(s)
    for model, items in sorted(by_model.items()):
        durs = [s["end"] - s["start"] for s in items]
        alone = []
        if knowledge is not None:
            for s in items:
                e = knowledge.get(device_kind(s["run_on"]), s["key"] or "")
                if e is not None and s["iterations"]:
                    alone.append(e["setup_s"] + s["iterations"] * e["iter_s"])
        mean_alone = statistics.fmean(alone) if alone else None
        rows[model] = {"jobs": len(items), "mean_s": statistics.fmean(durs),
                       "standalone_s": mean_alone,
                       "slowdown": statistics.fmean(durs) / mean_alone if mean_alone else None}  # fmt: skip
    return rows


def plot_gantt(runs: list[tuple[str, list[dict]]], out: str | Path) -> Path:
    """One panel per run, one bar per job (process start to end), coloured by device; a grey
    bar before it is the wait from dispatch to the worker's start."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    devices = sorted({s["device"] for _, spans in runs for s in spans})
    cmap = plt.get_cmap("tab10")
    colour = {d: cmap(i % 10) for i, d in enumerate(devices)}
    heights = [max(2.0, 0.18 * len(spans) + 1.2) for _, spans in runs]
    fig, axes = plt.subplots(len(runs), 1, figsize=(10, sum(heights)), squeeze=False,
                             gridspec_kw={"height_ratios": heights})  # fmt: skip
    for ax, (title, spans) in zip(axes[:, 0], runs):
        if not spans:
            ax.set_title(f"{title}: no finished jobs")
            continue
        t0 = min(s["dispatch"] or s["start"] for s in spans)
        for i, s in enumerate(spans):
            if s.get("dispatch") is not None and s["start"] > s["dispatch"]:
                ax.barh(i, s["start"] - s["dispatch"], left=s["dispatch"] - t0, color="0.8",
                        linewidth=0)  # fmt: skip
            ax.barh(i, s["end"] - s["start"], left=s["start"] - t0, color=colour[s["device"]],
                    edgecolor="black", linewidth=0.3)  # fmt: skip
            ax.text(s["end"] - t0, i, f" {s['model']}", va="center", fontsize=6)
        span = makespan(spans)
        ax.axvline(span, color="red", linestyle="--", linewidth=1)
        ax.set_title(f"{title}: makespan {span:.2f} s, {len(spans)} jobs", fontsize=9)
        ax.set_yticks([])
        ax.set_xlabel("seconds since the first dispatch")
        ax.invert_yaxis()
    handles = [plt.Rectangle((0, 0), 1, 1, color=colour[d]) for d in devices]
    handles.append(plt.Rectangle((0, 0), 1, 1, color="0.8"))
    fig.legend(handles, [*devices, "dispatched, worker not started"], loc="upper right",
               fontsize=8)  # fmt: skip
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m rmixer.tools",
        description="Gantt chart, per-device busy time and per-model times from an event log.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        epilog="example: python -m rmixer.tools gantt rmixer-state/events.jsonl --out gantt.png",
    )
    sub = parser.add_subparsers(dest="tool", required=True)
    g = sub.add_parser("gantt", help="one bar per job, coloured by device",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)  # fmt: skip
    g.add_argument("log")
    g.add_argument("--out", required=True, help="PNG to write")
    g.add_argument("--title", default=None)
    w = sub.add_parser("workload", help="busy seconds per device")
    w.add_argument("log")
    w.add_argument("--json", action="store_true")
    t = sub.add_parser("times", help="per-model duration vs standalone")
    t.add_argument("log")
    t.add_argument("--profiles", default=None, help="profile cache for standalone times")
    t.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    try:
        spans = job_spans(read_events(args.log))
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if not spans:
        print(f"error: {args.log} has no finished jobs (no job_end events with state done)",
              file=sys.stderr)  # fmt: skip
        return 1
    if args.tool == "gantt":
        path = plot_gantt([(args.title or Path(args.log).name, spans)], args.out)
        print(f"wrote {path} ({len(spans)} jobs, makespan {makespan(spans):.3f} s)")
    elif args.tool == "workload":
        rows = workload(spans)
        if args.json:
            print(json.dumps(rows, indent=1))
        else:
            for dev, r in rows.items():
                print(f"{dev:<10} {r['jobs']:>4} jobs  busy {r['busy_s']:9.3f} s  "
                      f"mean concurrency {r['mean_concurrency']:.2f}")  # fmt: skip
            print(f"makespan {makespan(spans):.3f} s")
    else:
        try:
            knowledge = Knowledge.load(args.profiles)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        rows = times(spans, knowledge)
        if args.json:
            print(json.dumps(rows, indent=1))
        else:
            for model, r in rows.items():
                alone = f"{r['standalone_s']:.3f}" if r["standalone_s"] else "-"
                slow = f"{r['slowdown']:.2f}x" if r["slowdown"] else "-"
                print(f"{model:<10} {r['jobs']:>4} jobs  mean {r['mean_s']:8.3f} s  standalone "
                      f"{alone:>8} s  slowdown {slow}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
