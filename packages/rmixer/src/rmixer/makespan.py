"""Benchmark: makespan of shipped job mixes under monolithic, MPS and RMixer on this machine.

    python -m rmixer.makespan                       # balance_24 + memory_24, 1 and 2 GPUs
    python -m rmixer.makespan --mixes balance_24 --gpu-counts 1 --budget-s 120

Steps: profile every config of the mixes standalone (GPU, then the CPU for the
low-intensity half, the only CPU candidates; cached profiles are reused), keep the most
important runs that fit ``--budget-s`` at the floor of MIN_ITERATIONS per job (rmixer and
monolithic of the first mix always, saying so when even they do not fit), scale every job's
iterations by one factor to fill the rest (the mix's shape, i.e. relative lengths and
classes, is kept), then run each (mix, GPU count, policy) from an empty machine through the
same scheduler and job processes as the server, rewriting rows and Gantt after each run. Reported per run: makespan, jobs/hour, ratios vs
monolithic and MPS, per-job slowdown vs standalone, peak device memory, OOMs, jobs on the
CPU, the most slots ever in use; rows go to ``OUT/makespan.jsonl`` (rec_common.results) and
all Gantt charts to ``OUT/gantt.png``.

A policy name may carry ``@mps`` (e.g. ``rmixer@mps``) to run it under the MPS daemon;
``mps`` always asks for the daemon and records whether it was active.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from rmixer import constants
from rmixer.configs import config_key
from rmixer.devices import GpuMemoryReader, build_devices
from rmixer.events import EventLog
from rmixer.knowledge import Knowledge, device_kind
from rmixer.launcher import Launcher
from rmixer.policies import POLICIES, make_policy
from rmixer.profile import profile_all
from rmixer.scheduler import Scheduler
from rmixer.store import Store
from rmixer.tasks import TaskError, read_tasks
from rmixer.tools import job_spans, makespan, plot_gantt, start_waits

# Guessed speed-ups over one-at-a-time, only to size the iterations to the time budget.
EXPECTED_SPEEDUP = {"monolithic": 1.0, "mps": 1.8, "rmixer": 2.2, "rmixer@mps": 2.8}
MIN_ITERATIONS = 20
# Per-job cost beyond the profiled set-up (process hand-over, result collection, teardown).
# GPU run 2 (H200): balance_24 monolithic at the floor of 20 iterations took 38.29 s, 1.6 s
# a job, against about 0.7 s of profiled set-up + work.
JOB_OVERHEAD_S = 0.9
# Runs in this order, so a short budget keeps the comparison that matters (the target).
# rmixer@mps (rmixer's placement, co-located jobs under the MPS daemon) is in the defaults:
# on the H200 (run 4, balance_24) time-sliced co-location (the paper's) lost to plain MPS
# rounds, 63.3 s against 49.9 s, with a median slowdown of 2x per co-located job.
PRIORITY = ("rmixer", "monolithic", "mps", "rmixer@mps")
KEEP_RUNS = 2  # always run the first two (rmixer and monolithic), even over budget


def tasklist_path(name: str) -> Path:
    p = Path(name)
    if p.is_file():
        return p
    shipped = Path(__file__).resolve().parent / "tasklists" / f"{name}.txt"
    if shipped.is_file():
        return shipped
    names = sorted(q.stem for q in shipped.parent.glob("*.txt"))
    raise TaskError(f"mix {name!r}: not a file nor a shipped task list ({names})")


def order_runs(mixes: list[str], counts: list[int], policies: list[str], extra: list[str],
               second: set[str]) -> list[tuple[str, int, str]]:  # fmt: skip
    """Runs by importance: the first mix on the fewest GPUs (rmixer, monolithic, mps first),
    the other mixes there, more GPUs, then the extra policies."""
    rank = {p: i for i, p in enumerate(PRIORITY)}
    pols = sorted(policies, key=lambda p: rank.get(p, len(rank)))
    runs = [(m, counts[0], p) for m in mixes for p in pols]
    runs += [(m, g, p) for g in counts[1:] for m in mixes if m in second for p in pols]
    runs += [(mixes[0], counts[0], p) for p in extra if p not in policies]
    return runs


def iterations_at(j: dict, k: float) -> int:
    return max(MIN_ITERATIONS, round(j["iterations"] * k))


def predict_run(jobs: list[dict], n_gpus: int, policy: str, knowledge: Knowledge, kind: str,
                k: float) -> float:  # fmt: skip
    """Predicted makespan: (set-up + overhead + iterations x time per iteration), summed over
    the profiled jobs, over (GPUs x expected speed-up)."""
    t = 0.0
    for j in jobs:
        e = knowledge.get(kind, config_key(j["config"]))
        if e is not None:
            t += e["setup_s"] + JOB_OVERHEAD_S + iterations_at(j, k) * e["iter_s"]
    guess = EXPECTED_SPEEDUP.get(policy) or EXPECTED_SPEEDUP.get(policy.split("@")[0], 2.0)
    return t / (n_gpus * guess)


def plan_runs(
    mix_jobs: dict[str, list[dict]],
    ranked: list[tuple[str, int, str]],
    knowledge: Knowledge,
    kind: str,
    budget_s: float,
) -> tuple[list[tuple[str, int, str]], float, bool]:
    """Which runs fit ``budget_s`` at the floor of MIN_ITERATIONS per job (the first
    KEEP_RUNS always), and the largest factor k on every job's iterations (0: all at the
    floor) that keeps their predicted total within it. Returns (runs, k, over_budget)."""

    def total(runs, k):
        return sum(predict_run(mix_jobs[m], g, p, knowledge, kind, k) for m, g, p in runs)

    chosen = list(ranked[:KEEP_RUNS])
    used = total(chosen, 0.0)
    over = used > budget_s
    for run in ranked[KEEP_RUNS:]:
        t = total([run], 0.0)
        if used + t <= budget_s:
            chosen.append(run)
            used += t
    chosen = [r for r in ranked if r in chosen]  # keep the ranked order
    if over or total(chosen, 0.0) >= budget_s:
        return chosen, 0.0, over
    lo, hi = 0.0, 1.0
    while total(chosen, hi) <= budget_s and hi < 1e4:
        lo, hi = hi, hi * 2
    for _ in range(50):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if total(chosen, mid) <= budget_s else (lo, mid)
    return chosen, lo, over


def describe_scale(k: float, mix_jobs: dict[str, list[dict]]) -> str:
    """The iterations factor in words; never a bare 0.0000."""
    jobs = [j for js in mix_jobs.values() for j in js]
    floor = sum(round(j["iterations"] * k) <= MIN_ITERATIONS for j in jobs)
    if floor == len(jobs):
        return f"iterations: every job at the floor of {MIN_ITERATIONS} (factor {k:.3g})"
    return f"iterations x {k:.3g} ({floor} of {len(jobs)} jobs at the floor of {MIN_ITERATIONS})"


def run_one(jobs: list[dict], policy_name: str, n_gpus: int, knowledge: Knowledge, args,
            workdir: Path, launcher: Launcher) -> dict:  # fmt: skip
    """One (mix, GPU count, policy) run from an empty machine; returns its measurements."""
    base, _, flag = policy_name.partition("@")
    use_mps = base == "mps" or flag == "mps"
    mps_state, job_env = "off", {}
    daemon = None
    if use_mps and not args.no_mps and n_gpus > 0 and args.cpu_as_gpu == 0:
        from rmixer.mps import MpsDaemon, MpsError

        daemon = MpsDaemon(workdir / "mps")
        try:
            job_env = daemon.start()
            mps_state = "active"
        except MpsError as exc:
            mps_state = f"unavailable: {exc}"
            print(f"note: {policy_name}: MPS {mps_state}; running without it", flush=True)
            daemon = None
    reader = GpuMemoryReader() if n_gpus and args.cpu_as_gpu == 0 else None
    gpus = list(range(n_gpus)) if args.cpu_as_gpu == 0 else []
    devices = build_devices(gpus, args.gpu_slots, args.cpu_slots, reader=reader,
                            cpu_as_gpu=args.cpu_as_gpu and n_gpus,
                            gpu_memory_mb=args.gpu_memory_mb)  # fmt: skip
    events = EventLog(workdir / "events.jsonl", keep=True)
    store = Store(workdir / "jobs.db")
    sched = Scheduler(store, devices, make_policy(base, args.seed), knowledge, events, workdir,
                      launcher=launcher, margin=args.margin, beta=args.beta,
                      cpu_threads=args.cpu_threads, job_env=job_env, reader=reader,
                      cpu_rescue=args.cpu_rescue)  # fmt: skip
    timed_out = False
    corun_before = knowledge.corun_slowdown("cpu")  # what the CPU gate starts this run with
    try:
        sched.launcher.warm()
        if gpus:  # fresh CUDA workers with this run's environment (MPS), imports done
            sched.launcher.prestart_cuda(job_env, wait=True)
        t0 = time.time()
        sched.submit(jobs)
        try:
            sched.run_until_idle(timeout=args.run_timeout)
        except TimeoutError:  # report what finished; the rest are cancelled, not waited for
            timed_out = True
            for j in store.list():
                if j["state"] in ("queued", "running"):
                    sched.cancel(j["id"])
            deadline = time.monotonic() + 30
            while sched._handles and time.monotonic() < deadline:
                sched.step()
                time.sleep(0.05)
        wall = time.time() - t0
    finally:
        sched.stop(close_launcher=False)
        events.close()
        store.close()
        if daemon is not None:
            # Idle workers started for this run are MPS clients: end them first, or the
            # daemon's server keeps "active worker threads" and does not quit (H200 run 4).
            launcher.drop_spares()
            try:
                daemon.stop()
                if daemon.stop_note:
                    mps_state += f" (forced stop: {daemon.stop_note})"
            except MpsError as exc:  # record it and go on: the other runs still count
                mps_state += f" (not stopped: {exc})"
                print(f"warning: {policy_name}: {exc}", flush=True)
    spans = job_spans(events.kept)
    failed = [e for e in events.kept if e["event"] == "job_end" and e["state"] != "done"]
    ooms = sum(e["event"] == "job_oom" for e in events.kept) + sum(
        bool(e.get("oom")) for e in failed
    )
    slowdowns = []
    for s in spans:
        e = knowledge.get(device_kind(s["run_on"]), s["key"] or "")
        if e is not None:
            slowdowns.append(
                (s["end"] - s["start"]) / (e["setup_s"] + s["iterations"] * e["iter_s"])
            )
    starts = [e for e in events.kept if e["event"] == "job_start"]
    errors = []
    for e in failed[:5]:
        why = e.get("error") or ("cancelled by --run-timeout" if timed_out else "no message")
        errors.append(f"{e.get('name', '?')}: {e['state']}: {why}")
    return {
        "spans": spans, "wall_s": wall,
        "makespan_s": makespan(spans) if spans and not timed_out else wall,
        "done": len(spans), "failed": len(failed), "ooms": ooms,
        "errors": errors,
        "jobs_on_cpu": sum(s["device"] == "cpu" for s in spans),
        "cpu_rescued": sum(e["event"] == "job_rescued" for e in events.kept),
        "max_slots_in_use": max((e["slots_in_use"] for e in starts), default=0),
        "peak_live_mb": sched.peak_live_mb,
        "peak_job_mb": max((s["peak_mb"] or 0 for s in spans), default=0),
        "slowdowns": slowdowns, "mps": mps_state, "timed_out": timed_out,
        "cpu_corun_slowdown": [round(corun_before, 3), round(knowledge.corun_slowdown("cpu"), 3)],
        "start_wait_s": start_waits(spans),
    }  # fmt: skip


def build_rows(results: dict, mix_jobs: dict[str, list[dict]], configs: dict[str, dict],
               knowledge: Knowledge, args, k: float) -> list[dict]:  # fmt: skip
    """Result rows of the runs so far (ratios vs the baselines already run) and the standalone
    profiles they relied on."""
    from rec_common.results import make_row

    rows = []
    for (mix, g, pol), r in results.items():
        mono = results.get((mix, g, "monolithic"))
        mps = results.get((mix, g, "mps"))
        n = len(mix_jobs[mix])
        sd = r["slowdowns"] or [float("nan")]
        common = dict(
            package="rmixer", benchmark="makespan", workload=mix, variant=pol, num_gpus=g,
            gpu_slots=args.gpu_slots, cpu_slots=args.cpu_slots if POLICIES[pol.split("@")[0]].uses_cpu else 0,
            jobs=n, done=r["done"], failed=r["failed"], ooms=r["ooms"], jobs_on_cpu=r["jobs_on_cpu"],
            max_slots_in_use=r["max_slots_in_use"], mps=r["mps"], timed_out=r["timed_out"],
            iterations_scale=float(f"{k:.4g}"), min_iterations=MIN_ITERATIONS, peak_live_mb=r["peak_live_mb"],
            peak_job_mb=round(r["peak_job_mb"], 1),
            slowdown_median=statistics.median(sd), slowdown_max=max(sd),
            ratio_vs_mps=(mps["makespan_s"] / r["makespan_s"]) if mps and r["makespan_s"] else None,
            cpu_corun_slowdown=r.get("cpu_corun_slowdown"),  # [at the start, at the end]
            start_wait_s=r.get("start_wait_s"),  # dispatch to the worker's start: [median, max]
            cpu_rescued=r.get("cpu_rescued"),  # CPU jobs stopped and re-queued for a GPU
            spares=args.spares,
        )  # fmt: skip
        rows.append(make_row(
            metric="makespan", unit="s", value=r["makespan_s"], n=1,
            baseline="monolithic" if mono else None,
            baseline_value=mono["makespan_s"] if mono else None,
            job_spans=[{k2: s[k2] for k2 in ("name", "model", "device", "dispatch", "start", "end")}
                       for s in r["spans"]],
            **common,
        ))  # fmt: skip
        rows.append(make_row(
            metric="throughput", unit="jobs/h", value=n / r["makespan_s"] * 3600, n=1,
            baseline="monolithic" if mono else None,
            baseline_value=(n / mono["makespan_s"] * 3600) if mono else None, **common,
        ))  # fmt: skip
    for key, cfg in configs.items():  # the standalone measurements the runs relied on
        for kd in ("cuda", "cpu"):
            e = knowledge.get(kd, key)
            if e is None:
                continue
            rows.append(make_row(
                package="rmixer", benchmark="standalone", workload=key, variant=kd,
                metric="iteration_time", unit="ms", value=e["iter_s"] * 1e3, n=e["iterations"],
                model=cfg["model"], setup_s=e["setup_s"], peak_mb=e["peak_mb"],
                analytic_mb=e["analytic_mb"], intensity=e["intensity"],
                intensity_source=e["intensity_source"], klass=e["klass"],
                nvml_util=e.get("nvml_util"), batch_size=cfg["batch_size"],
            ))  # fmt: skip
    return rows


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m rmixer.makespan",
        description="Makespan of job mixes under monolithic, MPS and RMixer (GPU + CPU).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        epilog="example: python -m rmixer.makespan --mixes balance_24,memory_24 "
        "--gpu-counts 1,2 --out-dir results/rmixer",
    )
    p.add_argument("--mixes", default="balance_24,memory_24", help="shipped task lists or files")
    p.add_argument(
        "--policies",
        default="monolithic,mps,rmixer,rmixer@mps",
        help=f"from {sorted(POLICIES)}, optionally NAME@mps",
    )
    p.add_argument(
        "--extra-policies",
        default="",
        help="policies run only for the first mix on the smallest GPU count, "
        "e.g. 'rmixer@mps,sequential,cognn,random'",
    )
    p.add_argument("--gpu-counts", default="1,2", help="GPU counts to run (skipped if absent)")
    p.add_argument(
        "--second-gpu-mixes",
        default="balance_24",
        help="mixes also run on more than one GPU ('all' for every mix)",
    )
    p.add_argument("--gpu-slots", type=int, default=4)
    p.add_argument(
        "--spares",
        type=int,
        default=None,
        help="idle CUDA workers kept ready (default: 3 per GPU slot, at least 4)",
    )
    p.add_argument("--cpu-slots", type=int, default=2)
    p.add_argument("--cpu-threads", type=int, default=None, help="threads per CPU job")
    p.add_argument("--cpu-rescue", type=float, default=constants.CPU_RESCUE_FACTOR,
                   help="re-queue a CPU job for a GPU after this many times its predicted "
                   "time (0: never, as the artifact)")  # fmt: skip
    p.add_argument("--beta", type=float, default=constants.DEFAULT_BETA)
    p.add_argument("--margin", type=float, default=constants.MEMORY_MARGIN)
    p.add_argument(
        "--budget-s",
        type=float,
        default=170.0,
        help="wall-clock target for everything; iterations are scaled to fit it",
    )
    p.add_argument(
        "--iterations-scale",
        type=float,
        default=None,
        help="fixed factor on the task lists' iterations (overrides --budget-s)",
    )
    p.add_argument("--profile-iterations", type=int, default=20)
    p.add_argument(
        "--profiles", default=None, help="profile cache to use and fill (default OUT/profiles.json)"
    )
    p.add_argument("--out-dir", default="results/rmixer", help="makespan.jsonl and gantt.png")
    p.add_argument("--no-mps", action="store_true", help="never start the MPS daemon")
    p.add_argument(
        "--cpu-as-gpu",
        type=int,
        default=0,
        help="use CPU-backed stand-ins of GPUs (to try the benchmark without a GPU)",
    )
    p.add_argument("--gpu-memory-mb", type=float, default=None)
    p.add_argument("--run-timeout", type=float, default=900.0, help="seconds per run")
    p.add_argument("--seed", type=int, default=0)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    t_begin = time.time()
    try:
        counts = sorted({int(x) for x in args.gpu_counts.split(",") if x.strip()})
    except ValueError:
        print(f"error: --gpu-counts {args.gpu_counts!r}: expected integers like '1,2'",
              file=sys.stderr)  # fmt: skip
        return 2
    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    for pol in policies:
        if pol.split("@")[0] not in POLICIES or pol.partition("@")[2] not in ("", "mps"):
            print(f"error: --policies: unknown {pol!r}; expected names from {sorted(POLICIES)}"
                  " with an optional @mps", file=sys.stderr)  # fmt: skip
            return 2
    if args.cpu_as_gpu:
        available, kind, gpu_dev = max(counts), "cpu", "cpu"
    else:
        import torch

        available = torch.cuda.device_count()
        kind, gpu_dev = "cuda", "cuda:0"
        if available == 0:
            print("error: no CUDA GPU here; the benchmark needs one (--cpu-as-gpu N tries the "
                  "pipeline on the CPU)", file=sys.stderr)  # fmt: skip
            return 1
    counts = [c for c in counts if 0 < c <= available]
    if not counts:
        print(f"error: none of --gpu-counts {args.gpu_counts} is available ({available} GPU(s))",
              file=sys.stderr)  # fmt: skip
        return 1
    if args.cpu_threads is None:  # what the scheduler gives a CPU job next to one full GPU
        import os

        args.cpu_threads = max(
            1, ((os.cpu_count() or 2) - args.gpu_slots) // max(1, args.cpu_slots)
        )
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    try:
        mixes = {m.strip(): read_tasks(tasklist_path(m.strip()))
                 for m in args.mixes.split(",") if m.strip()}  # fmt: skip
    except TaskError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    second = set(mixes) if args.second_gpu_mixes == "all" else set(args.second_gpu_mixes.split(","))
    extra = [p.strip() for p in args.extra_policies.split(",") if p.strip()]
    for pol in extra:
        if pol.split("@")[0] not in POLICIES or pol.partition("@")[2] not in ("", "mps"):
            print(f"error: --extra-policies: unknown {pol!r}", file=sys.stderr)
            return 2
    runs = order_runs(list(mixes), counts, policies, extra, second)

    # 1. knowledge: GPU profiles of every config, then CPU profiles of the low-intensity half
    knowledge = Knowledge.load(args.profiles or out / "profiles.json")
    configs = {config_key(s.config): s.config for specs in mixes.values() for s in specs}
    cached = sum(knowledge.get(kind, k) is not None for k in configs)
    print(f"profiling {len(configs) - cached} configs on {gpu_dev} ({cached} cached in "
          f"{knowledge.path}) ...", flush=True)  # fmt: skip
    # CPU zygote + idle CUDA workers kept ready: a fresh worker needs ~6 s (torch import) and the
    # budget-scaled jobs last ~1 s, so 4 spares left 6-7 s gaps after every 4th job (H200 run 3's
    # Gantt chart); 3 per GPU slot keep dispatch ahead of the jobs
    if args.spares is None:
        args.spares = max(4, 3 * args.gpu_slots * max(counts))
    launcher = Launcher("zygote", spares=args.spares)
    try:
        return _main(args, t_begin, counts, policies, available, kind, gpu_dev, mixes, out, runs,
                     launcher, configs, knowledge)  # fmt: skip
    finally:
        launcher.close()


def _main(args, t_begin, counts, policies, available, kind, gpu_dev, mixes, out, runs, launcher,
          configs, knowledge) -> int:  # fmt: skip
    if kind == "cuda":
        from rmixer.mps import running_servers

        for srv in running_servers():
            print(f"warning: an MPS server is already running ({srv}); jobs on its GPU may fail "
                  "to create a CUDA context. Stop its daemon first.", flush=True)  # fmt: skip
    _, errors = profile_all(configs, [gpu_dev], knowledge, iterations=args.profile_iterations,
                            progress=False, launcher=launcher)  # fmt: skip
    if args.cpu_slots > 0 and kind == "cuda":
        ranked = sorted(configs, key=lambda k: (knowledge.get(kind, k) or {}).get("intensity", 0))
        low = {k: configs[k] for k in ranked[: max(1, len(ranked) // 2)]}
        print(f"profiling {len(low)} low-intensity configs on the CPU ...", flush=True)
        _, err2 = profile_all(low, ["cpu"], knowledge, iterations=max(3, args.profile_iterations // 4),
                              warmup=2, progress=False, cpu_threads=args.cpu_threads,
                              timeout=60, launcher=launcher)  # fmt: skip
        errors += err2
    for err in errors:
        print(f"warning: {err}", file=sys.stderr)
    for k in configs:
        e = knowledge.get(kind, k)
        if e:
            print(f"  {k:<22} {e['iter_s'] * 1e3:8.2f} ms/iter  setup {e['setup_s']:5.2f} s  "
                  f"peak {e['peak_mb']:7.0f} MB  intensity {e['intensity']:5.1f}%  {e['klass']}")  # fmt: skip

    print(f"profiles ready after {time.time() - t_begin:.0f} s", flush=True)

    # 2. which runs fit the budget, and the iterations scaled to it
    mix_jobs = {m: [s.as_request() for s in specs] for m, specs in mixes.items()}
    left = args.budget_s - (time.time() - t_begin)
    if args.iterations_scale:
        k, over, chosen = args.iterations_scale, False, runs
    else:
        chosen, k, over = plan_runs(mix_jobs, runs, knowledge, kind, left)
    floor_s = sum(predict_run(mix_jobs[m], g, p, knowledge, kind, 0.0) for m, g, p in chosen)
    if over:
        print(f"warning: the budget ({left:.0f} s left of --budget-s {args.budget_s:.0f}) cannot "
              f"fit even {MIN_ITERATIONS} iterations per job: the {len(chosen)} most important "
              f"runs need about {floor_s:.0f} s at that floor; running only those, over budget "
              "(raise --budget-s, or reuse a profile cache to save the profiling time)",
              flush=True)  # fmt: skip
    for m, g, p in runs:
        if (m, g, p) not in chosen:
            print(f"skipped (budget): {m} {g} GPU {p}", flush=True)
    scale_text = describe_scale(k, mix_jobs)
    for jobs in mix_jobs.values():
        for j in jobs:
            j["iterations"] = iterations_at(j, k)
    print(f"{scale_text}; "
          f"budget {left:.0f} s left for {len(chosen)} of {len(runs)} runs, predicted "
          f"{sum(predict_run(mix_jobs[m], g, p, knowledge, kind, 1.0) for m, g, p in chosen):.0f} s",
          flush=True)  # fmt: skip

    from rec_common.results import write_rows

    # 3. the runs; rows and Gantt rewritten after each, so a kill loses no finished run
    results: dict[tuple[str, int, str], dict] = {}
    jsonl = out / "makespan.jsonl"
    keep_bytes = jsonl.stat().st_size if jsonl.exists() else 0  # rows of earlier invocations
    calib = 1.0  # measured / predicted makespan of the last run
    rows: list[dict] = []
    for i, (mix, g, pol) in enumerate(chosen):
        pred = predict_run(mix_jobs[mix], g, pol, knowledge, kind, 1.0)
        elapsed = time.time() - t_begin
        if not args.iterations_scale and i >= KEEP_RUNS and elapsed + calib * pred > args.budget_s:
            print(f"skipped (budget): {mix} {g} GPU {pol} needs about {calib * pred:.0f} s, "
                  f"{args.budget_s - elapsed:.0f} s left", flush=True)  # fmt: skip
            continue
        with tempfile.TemporaryDirectory(prefix="rmixer-run-") as tmp:
            r = run_one(mix_jobs[mix], pol, g, knowledge, args, Path(tmp), launcher)
        results[(mix, g, pol)] = r
        if pred > 0 and not r["timed_out"]:
            calib = min(10.0, max(0.5, r["makespan_s"] / pred))
        print(f"{mix:<12} {g} GPU  {pol:<12} makespan {r['makespan_s']:8.2f} s (predicted "
              f"{pred:.1f})  done {r['done']}  failed {r['failed']}  OOMs {r['ooms']}  on CPU "
              f"{r['jobs_on_cpu']} (rescued {r['cpu_rescued']})  max slots "
              f"{r['max_slots_in_use']}  mps {r['mps']}  start wait {r['start_wait_s'][0]:.2f} s "
              f"median, {r['start_wait_s'][1]:.2f} s max",
              flush=True)  # fmt: skip
        for e in r["errors"]:
            print(f"    failed job: {e}", flush=True)
        rows = build_rows(results, mix_jobs, configs, knowledge, args, k)
        with open(jsonl, "r+" if jsonl.exists() else "w", encoding="utf-8") as f:
            f.truncate(keep_bytes)
        path = write_rows(jsonl, rows)
        fig = plot_gantt([(f"{m} / {g2} GPU / {p}", r2["spans"])
                          for (m, g2, p), r2 in results.items()], out / "gantt.png")  # fmt: skip
    if not results:
        print("error: no run fitted the budget", file=sys.stderr)
        return 1

    print(f"\n{'mix':<12} {'gpus':>4} {'policy':<12} {'makespan':>9} {'jobs/h':>8} {'vs mono':>8} "
          f"{'vs mps':>7} {'slowdown':>8} {'cpu':>4} {'oom':>4}")  # fmt: skip
    for r in rows:
        if r["metric"] != "makespan" or r["benchmark"] != "makespan":
            continue
        vm = f"{r['ratio']:.2f}x" if r["ratio"] else "-"
        vp = f"{r['ratio_vs_mps']:.2f}x" if r["ratio_vs_mps"] else "-"
        print(f"{r['workload']:<12} {r['num_gpus']:>4} {r['variant']:<12} {r['value']:8.2f}s "
              f"{r['jobs'] / r['value'] * 3600:8.0f} {vm:>8} {vp:>7} {r['slowdown_median']:7.2f}x "
              f"{r['jobs_on_cpu']:>4} {r['ooms']:>4}")  # fmt: skip
    for (mix, g, pol), r in results.items():
        if pol in ("rmixer", "rmixer@mps") and g == 1 and (mix, 1, "monolithic") in results:
            vm = results[(mix, 1, "monolithic")]["makespan_s"] / r["makespan_s"]
            vp = (
                results[(mix, 1, "mps")]["makespan_s"] / r["makespan_s"]
                if (mix, 1, "mps") in results
                else None
            )
            ok = vm >= 2.5 and (vp is None or vp >= 1.2)
            print(f"target on 1 GPU ({mix}): {pol} {vm:.2f}x monolithic (>= 2.5), "
                  f"{'-' if vp is None else f'{vp:.2f}x'} MPS (>= 1.2): {'met' if ok else 'NOT met'}")  # fmt: skip
    print(f"wrote {path} and {fig} in {time.time() - t_begin:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
