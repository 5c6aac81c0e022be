"""Measure each job config alone on each device kind and cache what the scheduler needs.

    python -m rmixer.profile packages/rmixer/src/rmixer/tasklists/balance_24.txt --devices cuda:0,cpu

For every distinct config (task files or config names/paths) and device, one standalone run
in its own process (the same launcher as real jobs) measures: seconds per iteration, set-up
seconds (dispatch to first finished iteration), peak memory (CUDA: allocator peak + the
measured context; CPU: peak resident set) beside the analytic estimate (their ratio is the
correction :mod:`rmixer.knowledge` applies), and the intensity: on a GPU the share of wall
time some kernel, copy or memset runs (torch.profiler trace; NVML utilization when the
profiler cannot see the device), on the CPU the achieved FLOP rate over the rate of a dense
matmul with the same threads. Results go to the profile cache (``--cache``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from tqdm import tqdm

from rmixer import constants
from rmixer.configs import ConfigError, config_key, load
from rmixer.devices import GpuMemoryReader
from rmixer.knowledge import Knowledge, classify, default_cache, device_kind
from rmixer.launcher import Launcher
from rmixer.memory import estimate
from rmixer.tasks import TaskError, read_tasks


def collect_configs(inputs: list[str]) -> dict[str, dict]:
    """Distinct normalized configs (by key) from task files and config names/paths."""
    out: dict[str, dict] = {}
    for ref in inputs:
        p = Path(ref)
        if p.suffix in (".txt", ".tasks") or (p.suffix in (".yaml", ".yml") and _is_task_yaml(p)):
            for spec in read_tasks(p):
                out.setdefault(config_key(spec.config), spec.config)
        else:
            cfg, _ = load(ref)
            out.setdefault(config_key(cfg), cfg)
    return out


def _is_task_yaml(p: Path) -> bool:
    try:
        text = p.read_text(encoding="utf-8")
    except OSError:
        return False
    return text.lstrip().startswith(("jobs:", "-"))


def profile_one(cfg: dict, device: str, launcher: Launcher, workdir: Path, *,
                iterations: int = constants.PROFILE_ITERATIONS,
                warmup: int = constants.PROFILE_WARMUP, threads: int = 1,
                reader: GpuMemoryReader | None = None, timeout: float = 600.0,
                compute_high: float = constants.COMPUTE_HIGH_PCT,
                memory_high: float = constants.MEMORY_HIGH_MB) -> dict:  # fmt: skip
    """One standalone measurement; returns the cache entry (raises RuntimeError on failure)."""
    key = config_key(cfg)
    kind = device_kind(device)
    base = None
    if kind == "cuda" and reader is not None and reader.source in ("nvml", "nvidia-smi"):
        reading = reader.read(int(device.split(":")[1]))
        base = None if reading is None else reading[0]
    tag = f"{key}-{device.replace(':', '')}"
    spec = {"job_id": f"profile-{tag}", "device": device, "config": cfg, "iterations": iterations,
            "threads": threads, "result_path": str(workdir / f"{tag}.result.json"),
            "log_path": str(workdir / f"{tag}.log"), "baseline_used_mb": base,
            "profile": {"warmup": warmup, "iterations": iterations}}  # fmt: skip
    t0 = time.time()
    handle = launcher.start(spec, workdir / f"{tag}.spec.json")
    deadline = time.monotonic() + timeout
    while (res := handle.poll()) is None:
        if time.monotonic() > deadline:
            handle.terminate()
            raise RuntimeError(f"profiling {key} on {device} took over {timeout} s")
        time.sleep(0.02)
    if res.get("status") != "done":
        raise RuntimeError(f"profiling {key} on {device} failed: {res.get('error')} "
                           f"(log {spec['log_path']})")  # fmt: skip
    analytic = estimate(cfg, kind).total_mb
    peak = float(res["peak_mb"])
    import torch

    return {
        "key": key, "model": cfg["model"], "kind": kind, "device": device,
        "iter_s": res["iter_s"], "setup_s": max(0.0, res["t_ready"] - t0),
        "peak_mb": peak, "analytic_mb": analytic, "correction": peak / analytic,
        "intensity": float(res["intensity"]), "intensity_source": res["intensity_source"],
        "nvml_util": res.get("nvml_util"), "kernel_s_per_iter": res.get("kernel_s_per_iter"),
        "klass": classify(float(res["intensity"]), peak, compute_high, memory_high),
        "threads": threads, "iterations": iterations, "measured_at": time.time(),
        "torch": torch.__version__, "config": cfg,
    }  # fmt: skip


def profile_all(configs: dict[str, dict], devices: list[str], knowledge: Knowledge, *,
                force: bool = False, progress: bool = True, cpu_threads: int | None = None,
                launcher: Launcher | None = None, **kw) -> tuple[list[dict], list[str]]:  # fmt: skip
    """Profile every (config, device) not cached yet; saves after each. Returns
    (new entries, error messages)."""
    import os

    todo = [(k, c, d) for k, c in configs.items() for d in devices
            if force or knowledge.get(device_kind(d), k) is None]  # fmt: skip
    entries, errors = [], []
    if not todo:
        return entries, errors
    reader = GpuMemoryReader() if any(d.startswith("cuda") for d in devices) else None
    own = launcher is None
    launcher = launcher or Launcher("zygote")
    launcher.warm()
    if any(d.startswith("cuda") for d in devices):
        launcher.prestart_cuda(None, wait=True)
    threads = cpu_threads or max(1, (os.cpu_count() or 2) // 2)
    try:
        with tempfile.TemporaryDirectory(prefix="rmixer-profile-") as tmp:
            for _key, cfg, dev in tqdm(todo, desc="profiling", disable=not progress):
                try:
                    e = profile_one(cfg, dev, launcher, Path(tmp), reader=reader,
                                    threads=threads if dev == "cpu" else 1, **kw)  # fmt: skip
                except RuntimeError as exc:
                    errors.append(str(exc))
                    continue
                knowledge.put(e["kind"], e)
                knowledge.save()
                entries.append(e)
    finally:
        if own:
            launcher.close()
    return entries, errors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m rmixer.profile",
        description="Measure job configs standalone (time, memory, intensity) into the cache.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        epilog="example: python -m rmixer.profile packages/rmixer/src/rmixer/tasklists/"
        "balance_24.txt --devices cuda:0,cpu",
    )
    parser.add_argument("inputs", nargs="+", help="task files, or config names / paths")
    parser.add_argument("--devices", default="cpu", help="comma-separated: cuda:0, cpu")
    parser.add_argument("--iterations", type=int, default=constants.PROFILE_ITERATIONS,
                        help="timed iterations per run")  # fmt: skip
    parser.add_argument("--warmup", type=int, default=constants.PROFILE_WARMUP)
    parser.add_argument(
        "--cpu-threads",
        type=int,
        default=None,
        help="threads of CPU runs (default: half the cores)",
    )
    parser.add_argument("--cache", default=None, help=f"profile cache (default {default_cache()})")
    parser.add_argument("--force", action="store_true", help="measure again even if cached")
    parser.add_argument(
        "--compute-high-pct",
        type=float,
        default=constants.COMPUTE_HIGH_PCT,
        help="intensity at or above which a job is 'compute'",
    )
    parser.add_argument(
        "--memory-high-mb",
        type=float,
        default=constants.MEMORY_HIGH_MB,
        help="peak MB at or above which a non-compute job is 'memory'",
    )
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per run")
    args = parser.parse_args(argv)
    devices = [d.strip() for d in args.devices.split(",") if d.strip()]
    for d in devices:
        if d != "cpu" and not (d.startswith("cuda:") and d[5:].isdigit()):
            parser.error(f"--devices: {d!r} is neither 'cpu' nor 'cuda:N'")
    if any(d.startswith("cuda") for d in devices):
        import torch

        if not torch.cuda.is_available():
            print("error: --devices names a GPU but CUDA is not available here", file=sys.stderr)
            return 1
    try:
        configs = collect_configs(args.inputs)
        knowledge = Knowledge.load(args.cache)
    except (TaskError, ConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    entries, errors = profile_all(
        configs, devices, knowledge, force=args.force, cpu_threads=args.cpu_threads,
        iterations=args.iterations, warmup=args.warmup, timeout=args.timeout,
        compute_high=args.compute_high_pct, memory_high=args.memory_high_mb,
    )  # fmt: skip
    for e in entries:
        print(f"{e['kind']:<5} {e['key']:<22} {e['iter_s'] * 1e3:8.2f} ms/iter  setup "
              f"{e['setup_s']:5.2f} s  peak {e['peak_mb']:8.0f} MB (analytic {e['analytic_mb']:6.0f})"
              f"  intensity {e['intensity']:5.1f}% ({e['intensity_source']})  {e['klass']}")  # fmt: skip
    for err in errors:
        print(f"error: {err}", file=sys.stderr)
    path = knowledge.path or default_cache()
    print(f"{len(entries)} new profile(s), {len(configs) * len(devices) - len(entries) - len(errors)}"
          f" cached, {len(errors)} failed; cache {path}")  # fmt: skip
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
