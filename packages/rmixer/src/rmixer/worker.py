"""One training job in its own process: build the model on its device, train N iterations on
synthetic data, write a result file (atomically) that the scheduler reads.

The spec is a dict (see :func:`run`); results carry worker-side wall-clock timestamps with
millisecond resolution, the measured peak memory and, in profile mode, the per-iteration time
and device busy share. Exit codes: 0 done, 3 out of memory, 1 any other failure (its
message is in the result and the job log).

Run by the launcher (a zygote child for CPU jobs, a fresh ``--wait`` process for CUDA jobs),
or by hand: ``python -m rmixer.worker SPEC.json``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import resource
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

import torch

from rmixer import constants
from rmixer.models import Trainer, make_optimizer

EXIT_OOM = 3


def _now() -> float:
    return round(time.time(), 3)


def _stamp() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(t)) + f".{int(t * 1000) % 1000:03d}"


def write_json_atomic(path: str | os.PathLike, obj: dict) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(obj, f)
    os.replace(tmp, path)


def is_oom(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    oom_type = getattr(torch, "OutOfMemoryError", None) or getattr(
        torch.cuda, "OutOfMemoryError", ()
    )
    if oom_type and isinstance(exc, oom_type):
        return True
    msg = str(exc).lower()
    return isinstance(exc, RuntimeError) and (
        "out of memory" in msg or "can't allocate memory" in msg
    )


def process_main(spec: dict) -> None:
    """Entry point of a job process: log to the job's log file, run, exit with the status."""
    log = open(spec["log_path"], "a", buffering=1, encoding="utf-8")  # noqa: SIM115 - process lifetime
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    sys.stdout = sys.stderr = log
    code = run(spec)
    log.flush()
    os._exit(code)


def run(spec: dict) -> int:
    """Run one job. ``spec`` keys: ``job_id``, ``device`` (``cuda:i``/``cpu``), ``config``
    (normalized), ``iterations``, ``result_path``, optional ``seed``, ``threads``, ``env``,
    ``profile`` (``{"warmup": w, "iterations": k}`` to measure instead of train),
    ``baseline_used_mb`` (device memory in use before this process, for the context size)."""
    t_start = _now()
    os.environ.update({k: str(v) for k, v in (spec.get("env") or {}).items()})
    result: dict = {"job_id": spec.get("job_id"), "pid": os.getpid(), "device": spec["device"],
                    "t_start": t_start}  # fmt: skip
    device = spec["device"]
    try:
        threads = int(spec.get("threads") or 1)
        torch.set_num_threads(max(1, threads))
        cfg = spec["config"]
        print(f"{_stamp()} job {spec.get('job_id')} pid {os.getpid()} {cfg['model']} on {device}, "
              f"{spec['iterations']} iterations, {threads} threads", flush=True)  # fmt: skip
        ctx_mb = None
        if device.startswith("cuda"):
            torch.cuda.set_device(torch.device(device))
            free, total = torch.cuda.mem_get_info()
            base = spec.get("baseline_used_mb")
            if base is not None:
                ctx_mb = max(0.0, (total - free) / 2**20 - float(base))
        trainer = Trainer(cfg, device, seed=int(spec.get("seed", 0)),
                          num_batches=constants.NUM_CACHED_BATCHES)  # fmt: skip
        if spec.get("profile"):
            result.update(_profile(trainer, spec, cfg))
        else:
            result.update(_train(trainer, spec))
        result["peak_mb"] = _peak_mb(device, ctx_mb)
        result["ctx_mb"] = ctx_mb
        result["status"] = "done"
        code = 0
    except BaseException as exc:  # every failure is reported, none is lost
        oom = is_oom(exc)
        result["status"] = "oom" if oom else "error"
        result["error"] = f"{type(exc).__name__}: {exc}".strip()[:2000]
        traceback.print_exc()
        code = EXIT_OOM if oom else 1
    result["t_end"] = _now()
    print(f"{_stamp()} job {spec.get('job_id')} {result['status']} in "
          f"{result['t_end'] - t_start:.3f} s", flush=True)  # fmt: skip
    write_json_atomic(spec["result_path"], result)
    return code


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _train(trainer: Trainer, spec: dict) -> dict:
    n = int(spec["iterations"])
    device = spec["device"]
    trainer.step()  # first iteration: lazy CUDA module loading, cuBLAS handles
    _sync(device)
    t_ready = _now()
    every = max(1, n // 5)
    loss = None
    for i in range(1, n):
        loss = trainer.step()
        if (i + 1) % every == 0 or i == n - 1:
            value = float(loss)  # also the divergence check, a few times per job
            print(f"{_stamp()} iter {i + 1}/{n} loss {value:.4f}", flush=True)
            if not math.isfinite(value):
                raise FloatingPointError(
                    f"training diverged: loss {value} at iteration {i + 1} (lower 'lr')"
                )
    _sync(device)
    return {"t_ready": t_ready, "iterations": n,
            "final_loss": None if loss is None else float(loss)}  # fmt: skip


def _peak_mb(device: str, ctx_mb: float | None) -> float:
    if device.startswith("cuda"):
        ctx = constants.CUDA_CONTEXT_MB if ctx_mb is None else ctx_mb
        return torch.cuda.max_memory_reserved() / 2**20 + ctx
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def _profile(trainer: Trainer, spec: dict, cfg: dict) -> dict:
    """Standalone measurement: per-iteration time, set-up time, device busy share."""
    prof = spec["profile"]
    device = spec["device"]
    warmup, k = int(prof.get("warmup", constants.PROFILE_WARMUP)), int(prof.get("iterations", 30))
    trainer.step()
    _sync(device)
    t_ready = _now()
    for _ in range(max(0, warmup - 1)):
        trainer.step()
    _sync(device)
    sampler = _NvmlSampler(device) if device.startswith("cuda") else None
    t0 = time.perf_counter()
    for _ in range(k):
        trainer.step()
    _sync(device)
    iter_s = (time.perf_counter() - t0) / k
    out = {"t_ready": t_ready, "iter_s": iter_s, "iterations": k}
    if sampler is not None:
        out["nvml_util"] = sampler.stop()
        busy = _kernel_busy_s(trainer, min(k, 10))
        out["kernel_s_per_iter"] = busy
        if busy is not None:
            out["intensity"], out["intensity_source"] = (
                min(100.0, 100 * busy / iter_s),
                "cuda-kernels",
            )
        elif out["nvml_util"] is not None:
            out["intensity"], out["intensity_source"] = out["nvml_util"], "nvml"
        else:
            out["intensity"], out["intensity_source"] = 0.0, "none"
    else:
        from rmixer.memory import estimate

        peak = _cpu_peak_flops(int(spec.get("threads") or 1))
        achieved = estimate(cfg, "cpu").flops_per_iter / iter_s
        out["cpu_peak_flops"] = peak
        out["intensity"], out["intensity_source"] = min(100.0, 100 * achieved / peak), "cpu-flops"
    return out


def _kernel_busy_s(trainer: Trainer, k: int) -> float | None:
    """Seconds per iteration during which any kernel, copy or memset ran (interval union),
    from a torch.profiler trace; None when the profiler cannot see the device."""
    try:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(k):
                trainer.step()
            torch.cuda.synchronize()
        fd, path = tempfile.mkstemp(suffix=".json")
        os.close(fd)
        try:
            prof.export_chrome_trace(path)
            events = json.loads(Path(path).read_text()).get("traceEvents", [])
        finally:
            os.unlink(path)
    except Exception as exc:  # CUPTI may be missing; NVML is the fallback
        print(f"profiler unavailable ({type(exc).__name__}: {exc})", flush=True)
        return None
    spans = sorted(
        (float(e["ts"]), float(e["ts"]) + float(e.get("dur", 0)))
        for e in events
        if e.get("ph") == "X" and e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset")
    )
    if not spans:
        return None
    total, cur_s, cur_e = 0.0, spans[0][0], spans[0][1]
    for s, e in spans[1:]:
        if s > cur_e:
            total += cur_e - cur_s
            cur_s, cur_e = s, e
        else:
            cur_e = max(cur_e, e)
    total += cur_e - cur_s
    return total / 1e6 / k


def _cpu_peak_flops(threads: int) -> float:
    """FLOP/s of a 512x512 fp32 matmul with this job's threads: the CPU's attainable peak."""
    a, b = torch.randn(512, 512), torch.randn(512, 512)
    for _ in range(3):
        a @ b
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < 0.2:
        a @ b
        n += 1
    return 2 * 512**3 * n / (time.perf_counter() - t0)


class _NvmlSampler:
    """Mean NVML GPU utilization (%) while it runs, sampled every 20 ms; None without pynvml."""

    def __init__(self, device: str) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()
        try:
            import pynvml

            pynvml.nvmlInit()
            idx = torch.device(device).index or 0
            visible = os.environ.get("CUDA_VISIBLE_DEVICES")
            if visible:
                idx = int(visible.split(",")[idx])
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(idx)
            self._nvml = pynvml
        except Exception:  # optional
            self._nvml = None
            return
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(0.02):
            try:
                self.samples.append(
                    float(self._nvml.nvmlDeviceGetUtilizationRates(self._handle).gpu)
                )
            except Exception:
                return

    def stop(self) -> float | None:
        if self._nvml is None:
            return None
        self._stop.set()
        self._thread.join()
        return sum(self.samples) / len(self.samples) if self.samples else None


def warm_up() -> None:
    """Train every model kind for three steps with every optimizer on a toy CPU config, so
    the lazy imports this triggers (optimizers pull in torch._dynamo: seconds) happen once in
    the zygote, not in every job. Never touches CUDA."""
    from rmixer.configs import MODELS, OPTIMIZERS, normalize

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for i, model in enumerate(MODELS):
            raw = {"model": model, "batch_size": 4, "rows": 8, "num_tables": 2, "embedding_dim": 4,
                   "optimizer": OPTIMIZERS[i % len(OPTIMIZERS)]}  # fmt: skip
            if model == "dlrm":
                raw.update(bottom_mlp="4", top_mlp="4-1")
            if model == "din":
                raw.update(num_items=8, seq_len=3)
            trainer = Trainer(normalize(raw, "warm-up"), "cpu", num_batches=1)
            for _ in range(3):
                trainer.step()
        for opt in OPTIMIZERS:  # each optimizer's own first step
            p = torch.nn.Parameter(torch.zeros(2))
            o = make_optimizer({"optimizer": opt, "lr": 0.1}, [p])
            p.grad = torch.ones(2)
            o.step()
    finally:
        torch.set_num_threads(threads)


def wait_main() -> int:
    """A pre-started CUDA worker: import and warm up now, then run the one spec whose path
    arrives on stdin (EOF: not needed, exit). Never forked, so CUDA starts clean here."""
    warm_up()
    with contextlib.suppress(OSError):  # the launcher stopped listening; the spec may come
        print("ready", flush=True)
    line = sys.stdin.readline().strip()
    if not line:
        return 0
    try:
        spec = json.loads(Path(line).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        print(f"error: spec {line}: {exc}", file=sys.stderr)
        return 1
    process_main(spec)
    return 1  # not reached: process_main exits


def main(argv: list[str] | None = None) -> int:
    import argparse

    argv = sys.argv[1:] if argv is None else argv
    if argv == ["--wait"]:
        return wait_main()

    parser = argparse.ArgumentParser(
        description="Run one rmixer job from a JSON spec (normally started by the server).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        epilog="example: python -m rmixer.worker /tmp/job-1.spec.json",
    )
    parser.add_argument("spec", help="JSON file with the job spec (see rmixer.worker.run)")
    args = parser.parse_args(argv)
    try:
        spec = json.loads(Path(args.spec).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        print(f"error: spec {args.spec}: {exc}", file=sys.stderr)
        return 1
    return run(spec)


if __name__ == "__main__":
    sys.exit(main())
