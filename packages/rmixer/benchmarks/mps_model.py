"""A processor-sharing model of jobs co-running under MPS on one GPU, fed by a measured
makespan run; it is how ``constants.MPS_INTENSITY_FILL`` was chosen, and it predicts what the
next GPU run should show.

Model: each running job advances at ``min(1, CAP / sum of running intensities)`` of its speed
alone. Standalone durations are the monolithic run's spans (each job alone, same run);
intensities are the run's standalone profile rows. CAP is fitted by comparing the modelled
MPS rounds with the measured ones. Policies modelled: MPS rounds of 4 (submission order),
intensity-descending dispatch (rmixer's order before the fill rule) and the fill rule of
``rmixer@mps`` at several targets.

    python packages/rmixer/benchmarks/mps_model.py results/rmixer/makespan.jsonl \\
        --commit-prefix dc13fd39 --gpus 1

Run 5 (one H200, balance_24): MPS rounds measured 40.75 s, modelled 39.0 s at CAP 150;
rmixer@mps's GPU side measured 38.9 s, modelled 38.2 s; the fill rule at 150: 30.8 s.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rmixer.configs import config_key, load

GAP_S = 0.15  # dispatch gap between a job's end and the next start (measured: 0.12-0.2 s)


def jobs_of(rows: list[dict]) -> list[dict]:
    """One dict per job of the run: name, submission order, seconds alone, intensity."""
    inten = {r["workload"]: r["intensity"] for r in rows
             if r["metric"] == "iteration_time" and r["variant"] == "cuda"}  # fmt: skip
    mono = next(r for r in rows if r["metric"] == "makespan" and r["variant"] == "monolithic")
    jobs = []
    for s in sorted(mono["job_spans"], key=lambda s: s["name"]):
        cfg, _ = load(s["name"].split("-", 2)[2])  # balance24-01-din_long -> din_long
        key = config_key(cfg)
        match = [v for k, v in inten.items() if k.endswith(key[-10:])]
        if not match:
            raise SystemExit(f"no standalone profile row for {s['name']} ({key})")
        jobs.append({"name": s["name"], "seq": len(jobs), "t": s["end"] - s["start"],
                     "I": match[0]})  # fmt: skip
    return jobs


def advance(running: list[dict], cap: float) -> float:
    """Run until the next job ends; returns the elapsed time and removes that job."""
    rate = min(1.0, cap / sum(r["I"] for r in running))
    step = min(r["left"] for r in running) / rate
    for r in running:
        r["left"] -= step * rate
    running[:] = [r for r in running if r["left"] > 1e-9]
    return step


def dispatch(jobs: list[dict], pick, cap: float, slots: int = 4) -> float:
    """Continuous dispatch: whenever a slot is free, ``pick(pending, running)`` starts a job."""
    pending, running, t = list(jobs), [], 0.0
    while pending or running:
        while len(running) < slots and pending:
            j = pick(pending, running)
            pending.remove(j)
            running.append({**j, "left": j["t"]})
        t += advance(running, cap) + GAP_S
    return t


def mps_rounds(jobs: list[dict], cap: float, slots: int = 4) -> float:
    t = 0.0
    order = sorted(jobs, key=lambda j: j["seq"])
    for k in range(0, len(order), slots):
        rnd = [{**j, "left": j["t"]} for j in order[k : k + slots]]
        while rnd:
            t += advance(rnd, cap)
        t += GAP_S
    return t


def intensity_desc(pending, running):
    return max(pending, key=lambda j: (j["I"], -j["seq"]))


def fill(target: float):
    def pick(pending, running):
        room = target - sum(r["I"] for r in running)
        under = [j for j in pending if j["I"] <= room]
        if under:
            return max(under, key=lambda j: (j["I"], j["t"]))
        return min(pending, key=lambda j: j["I"])

    return pick


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", help="makespan.jsonl with a monolithic run and profile rows")
    ap.add_argument("--commit-prefix", default="", help="only rows whose commit starts so")
    ap.add_argument("--gpus", type=int, default=1, help="the run's GPU count (1: the model's)")
    ap.add_argument("--caps", default="120,150,180")
    ap.add_argument("--fills", default="100,120,150,180")
    args = ap.parse_args(argv)
    text = Path(args.results).read_text(encoding="utf-8")
    rows = [json.loads(x) for x in text.splitlines() if x.strip()]
    rows = [r for r in rows if str(r.get("commit", "")).startswith(args.commit_prefix)
            and (r["metric"] != "makespan"  # profile rows: per machine, not per run
                 or r.get("num_gpus", r.get("gpus", args.gpus)) == args.gpus)]  # fmt: skip
    jobs = jobs_of(rows)
    measured = {r["variant"]: r["value"] for r in rows if r["metric"] == "makespan"}
    print(
        f"{len(jobs)} jobs, {sum(j['t'] for j in jobs):.1f} s alone in all; measured: "
        + ", ".join(f"{k} {v:.2f} s" for k, v in measured.items())
    )
    for cap in (float(c) for c in args.caps.split(",")):
        line = [f"mps-rounds {mps_rounds(jobs, cap):.1f}",
                f"intensity-desc {dispatch(jobs, intensity_desc, cap):.1f}"]  # fmt: skip
        line += [f"fill{f} {dispatch(jobs, fill(float(f)), cap):.1f}"
                 for f in args.fills.split(",")]  # fmt: skip
        print(f"CAP {cap:.0f}: " + "  ".join(line))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
