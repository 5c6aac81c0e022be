"""``python -m rap_share.profile``: measure what the cost model and the scheduler need.

1. **Kernels**: latency of one fused launch (:func:`rap_share.fused.run`) over ops x fuse
   degree x width x batch on the device present (CUDA events; perf_counter on CPU). With
   ``--graphs`` (the default where the runtime's CUDA-graph path is on) each launch is
   captured in a CUDA graph and its replay is timed, as the stage runner replays it; eager
   timing (``--no-graphs``; the H200 profile shipped until 2026-12-01) includes ~0.2 ms of
   Python per fused call: that profile predicts 1.8-4.7 ms of preprocessing per batch where
   the stage runner's replays take 0.16-0.36 ms of GPU time (2 x H200), so at batch 4096
   the planner spills kernels out of emb_bwd into the stages with collectives.
2. **Stages**: the five training stages of a DLRM iteration (:mod:`rap_share.stages`),
   alone, then co-running with k units of a probe preprocessing kernel launched on a second
   stream at the stage's start; a stage's capacity is the largest k whose co-run stretches it
   by < 5 %, and its budget (ms) the probe's standalone latency at that k (a fused launch,
   the unit the cost model predicts). The probe is ``sigrid_hash`` over 4k columns of width
   20 (the artifact used ngram, whose output sizing needs a host sync). On CUDA the probe's
   kernels are captured once in a CUDA graph and *replayed* on the side stream at the
   stage's start, so the trainer's thread pays one graph launch; the first H200 run launched
   the eager ~0.5 ms (host-bound) fused call from the trainer's own thread, which delayed the
   stage's own launches by that much, stretched every stage by > 5 % at the smallest probe
   and gave budgets of 0. When capture fails the probe runs eagerly from a helper thread.
   On CUDA each stage's ``busy_ms`` is measured too: the trainer stream's kernel time in the
   stage, from a ``torch.profiler`` trace of a few steps (:mod:`rap_share.stagetrace`);
   ``base_ms - busy_ms`` is the GPU time the stage leaves idle, which ``costmodel fit
   --budgets idle`` turns into budgets. On one GPU ``grad_comm`` holds the SGD update only;
   under ``torchrun`` on N GPUs it holds the NCCL all-reduce too.
3. **Fit**: the cost-model regressors (xgboost when installed, least squares otherwise) with
   their held-out accuracy (share within +-10 %).

Writes ``OUT/profile.json`` and ``OUT/<gpu>.model.json``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

import torch

from rap_share import costmodel, fused, stagetrace
from rap_share.columns import Column
from rap_share.constants import CAPACITY_STRETCH, KAGGLE_PLAN_TABLES, REF_BATCH, STAGES
from rap_share.ops import OP_NAMES

EPILOG = """example:
  python -m rap_share.profile --out prof                      # full grid on the GPU present
  python -m rap_share.profile --out prof --quick              # a reduced grid (< 3 min on a GPU)
  torchrun --nproc-per-node 4 -m rap_share.profile --out prof # stages with the all-reduce"""

PROBE_WIDTH = 20


def _params(op: str, width: int, i: int) -> dict:
    return {
        "fill_null": {"value": 0}, "sigrid_hash": {"salt": i, "max_value": 65536},
        "bucketize": {"borders": [float(b) for b in range(0, 64, 4)]}, "logit": {"eps": 1e-5},
        "boxcox": {"lmbda": 0.5}, "clamp": {"lo": 0, "hi": 16}, "mapid": {"map": list(range(64))[::-1]},
        "firstx": {"x": max(1, width // 2)}, "ngram": {"n": min(4, width)},
        "onehot": {"lower": 0.0, "upper": 16.0, "num_classes": width},
    }[op]  # fmt: skip


def make_columns(op: str, degree: int, width: int, rows: int, device, seed: int = 0):
    """Inputs of one profiled launch: ``degree`` columns of ``rows`` rows and ``width`` values."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    cols = []
    for _ in range(degree):
        if op == "onehot":
            v = torch.rand(rows, generator=g) * 18 - 1
            cols.append(Column(v.to(device)))
            continue
        if op == "fill_null":
            v = torch.randint(0, 100, (rows * width,), generator=g)
            cols.append(
                Column(v.to(device), None, (torch.rand(rows * width, generator=g) > 0.1).to(device))
            )
            continue
        n = rows * width
        if op in ("logit", "boxcox", "bucketize"):
            v = torch.rand(n, generator=g) * 64
        else:
            v = torch.randint(0, 1 << 30, (n,), generator=g)
            if op in ("mapid", "clamp"):
                v = v % 80
        off = None if width == 1 else torch.arange(0, n + 1, width)
        cols.append(Column(v.to(device), None if off is None else off.to(device)))
    return cols


def _time(fn, device, warmup: int, iters: int) -> float:
    from rec_common.timing import benchmark

    return benchmark(fn, warmup=warmup, iters=iters, device=device).median / 1e3  # ms


def tqdm(it, **kw):
    """tqdm's progress bar when it imports, else the plain iterable."""
    try:
        from tqdm import tqdm as bar
    except ImportError:
        return it
    return bar(it, **kw)


def profile_kernels(
    ops, degrees, widths, batches, device, warmup: int, iters: int, progress: bool = True,
    graphs: bool = False,
) -> list[dict]:  # fmt: skip
    """One row per grid point: ``ms`` of one fused launch. With ``graphs`` (CUDA only) the
    launch is captured in a CUDA graph (constants cached, as the runtime's CUDA-graph path
    runs it) and its replay is timed: the GPU time the stage runner pays, without the ~0.2 ms
    of Python per eager fused call that otherwise dominates small kernels. A launch that cannot
    be captured is timed eagerly; each row's ``graph`` says which."""
    grid = [(op, d, w, b) for op in ops for d in degrees for w in widths for b in batches
            if not (op == "onehot" and w < 2)]  # fmt: skip
    rows = []
    for op, d, w, b in tqdm(grid, desc="kernels", disable=not progress, mininterval=2):
        cols = make_columns(op, d, w, b, device)
        params = [_params(op, w, i) for i in range(d)]
        fn = lambda c=cols, p=params, o=op: fused.run(o, c, p, check=False)  # noqa: E731
        replay = None
        if graphs and device.type == "cuda":
            with fused.cached_constants(True):
                replay = graph_probe(fn, device, what=f"{op} degree {d} width {w} batch {b}")
        ms, graphed = _time(replay or fn, device, warmup, iters), replay is not None
        del replay  # frees the graph (and its pool) before the next capture
        rows.append({"op": op, "degree": d, "width": w, "batch": b, "ms": ms, "graph": graphed,
                     "params": _params(op, w, 0) if op != "mapid" else {"map_len": 64}})  # fmt: skip
    return rows


# ---------------------------------------------------------------------------- stages
def device_probe(k: int, batch: int, device):
    """The probe's GPU work at ``k`` units, inputs flattened once: a callable with no host
    sync and no host-to-device copy (so a CUDA graph can capture it)."""
    cols = make_columns("sigrid_hash", 4 * k, PROBE_WIDTH, batch, device, seed=k)
    v = torch.cat([c.values for c in cols]).to(torch.int64)
    cid = torch.arange(4 * k, device=device).repeat_interleave(batch * PROBE_WIDTH)
    salt = torch.arange(4 * k, device=device, dtype=torch.int64)[cid]
    mx = torch.full_like(v, 65536)

    def fn():
        return torch.remainder(fused.hash_128_to_64(salt, fused.twang_mix64(v)), mx)

    return fn


def graph_probe(fn, device, what: str = "probe"):
    """``fn`` captured in a CUDA graph: returns a replay callable, or None if capture fails
    (said on stderr, naming ``what``).

    The callable holds ``fn`` (and so the tensors its graph reads): ``torch.cuda.graph``
    empties the allocator's cache when the next capture starts, so inputs that died with a
    discarded ``fn`` were unmapped under a live graph (an illegal memory access on the H200)."""
    if device.type != "cuda":
        return None
    try:
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(2):
                fn()  # warm the allocator and kernels outside the capture
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            fn()
        torch.cuda.synchronize(device)
    except Exception as err:  # any capture failure: eager fallback, said
        print(f"note: {what} not capturable in a CUDA graph ({type(err).__name__}: "
              f"{str(err)[:160]}); timed eagerly", file=sys.stderr)  # fmt: skip
        return None

    def replay(_inputs=fn):  # the graph reads fn's tensors: keep them alive with it
        graph.replay()

    return replay


class _Recorder:
    """Stage hook: events (CUDA) or clocks (CPU) at each boundary, probe launches on demand.

    A CUDA-graph probe (``graph=True``) is replayed on the side stream from the hook (one
    launch); an eager probe runs in a helper thread so its host time is not the trainer's.
    With ``mark`` each boundary also opens an empty ``record_function`` named for
    :mod:`rap_share.stagetrace`, so a ``torch.profiler`` trace shows where the stages begin."""

    def __init__(self, device, probe=None, probe_stage: str | None = None, graph: bool = False,
                 mark: bool = False):  # fmt: skip
        self.device, self.probe, self.probe_stage, self.graph = device, probe, probe_stage, graph
        self.mark = mark
        self.cuda = device.type == "cuda"
        self.side = torch.cuda.Stream(device) if self.cuda else None
        self.marks: list[tuple[str, object]] = []
        self.thread: threading.Thread | None = None

    def __call__(self, stage: str) -> None:
        if self.mark:
            with torch.profiler.record_function(f"{stagetrace.MARK}{stage}:{self.probe_stage}"):
                pass
        self.marks.append((stage, self._mark()))
        if self.probe is not None and stage == self.probe_stage:
            if self.cuda:
                self.side.wait_stream(torch.cuda.current_stream(self.device))
            if self.cuda and self.graph:
                with torch.cuda.stream(self.side):
                    self.probe()
            else:
                self.thread = threading.Thread(target=self._launch)
                self.thread.start()

    def _launch(self) -> None:
        if self.cuda:
            with torch.cuda.device(self.device), torch.cuda.stream(self.side):
                self.probe()
        else:
            self.probe()

    def _mark(self):
        if self.cuda:
            e = torch.cuda.Event(enable_timing=True)
            e.record()
            return e
        return time.perf_counter()

    def finish(self) -> dict[str, float]:
        end = self._mark()
        if self.thread is not None:
            self.thread.join()
        if self.cuda:
            torch.cuda.current_stream(self.device).wait_stream(self.side)
            torch.cuda.synchronize(self.device)
        out = {}
        marks = [*self.marks, ("end", end)]
        for (s, a), (_, b) in itertools.pairwise(marks):
            out[s] = a.elapsed_time(b) if self.cuda else (b - a) * 1e3
        return out


def profile_stages(
    device,
    batch: int,
    units: list[int],
    iters: int,
    warmup: int,
    max_table_rows: int,
    dim: int,
    progress: bool = True,
    bottom_mlp: str = "512-256",
    top_mlp: str = "1024-1024-512-1",
    graphs: bool = False,
    busy: bool = True,
    mark: bool = False,
) -> dict:
    """Each stage's base time and its capacity (module doc, step 2); with ``busy``, on CUDA,
    also each stage's GPU busy time (``busy_ms``, from a short trace); with ``mark``, every
    step's stage boundaries marked for an outer trace (``benchmarks/trace_stages.py``). The budget is the
    probe's latency at the capacity: its eager fused call, the unit of eager-timed kernels,
    or with ``graphs`` (kernels timed as graph replays, :func:`profile_kernels`) the probe's
    graph replay, so that budgets and kernel costs are in the same unit."""
    from rap_share.graph import balance_tables
    from rap_share.stages import TrainStep, build_model
    from rec_common.jagged import JaggedBatch

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    sizes = [min(n, max_table_rows) for n in (4, *KAGGLE_PLAN_TABLES)]
    names = [f"t{i}" for i in range(len(sizes))]
    placement = balance_tables(sizes, world)
    model = build_model([f"d{i}" for i in range(13)], names, sizes, placement, dim, bottom_mlp,
                        top_mlp, rank, world, check_ids=False).to(device)  # fmt: skip
    owned = [i for i, p in enumerate(placement) if p == rank]
    g = torch.Generator(device="cpu").manual_seed(rank)
    dense = torch.rand(batch, 13, generator=g).to(device)
    labels = (torch.rand(batch, generator=g) < 0.3).float().to(device)
    ids = [torch.randint(0, sizes[i], (batch * world,), generator=g).to(device) for i in owned]
    off = torch.arange(batch * world + 1, device=device)
    sparse = JaggedBatch([names[i] for i in owned], ids, [off] * len(ids))

    def run(probe=None, stage=None, marked=mark) -> dict[str, float]:
        rec = _Recorder(device, probe, stage, graph=probe is not None and probe in graphs_ok,
                        mark=marked)  # fmt: skip
        step = TrainStep(model, lr=1e-4, world=world, on_stage=rec)
        step(dense, sparse, labels)
        return rec.finish()

    def median_times(probe=None, stage=None) -> dict[str, float]:
        for _ in range(warmup):
            run(probe, stage)
        samples = [run(probe, stage) for _ in range(iters)]
        return {s: statistics.median(x[s] for x in samples) for s in STAGES}

    base = median_times()
    out = {
        s: {"base_ms": base[s], "capacity_units": 0, "capacity_ms": 0.0, "corun": []}
        for s in STAGES
    }
    if busy and device.type == "cuda":  # the trainer stream's kernel time per stage
        try:
            kernel_ms = stagetrace.stage_busy_ms(lambda: run(marked=True), n=max(3, min(iters, 10)))
            for s in STAGES:
                if s in kernel_ms:
                    out[s]["busy_ms"] = kernel_ms[s]
        except Exception as e:  # a profiler failure must not lose the capacity profile
            print(f"[profile] stage busy time not measured: {type(e).__name__}: {e}",
                  file=sys.stderr)  # fmt: skip
    probes, graphs_ok = {}, set()
    for k in units:
        cols = make_columns("sigrid_hash", 4 * k, PROBE_WIDTH, batch, device, seed=k)
        params = [_params("sigrid_hash", PROBE_WIDTH, i) for i in range(4 * k)]
        eager = lambda c=cols, p=params: fused.run("sigrid_hash", c, p, check=False)  # noqa: E731
        probe_ms = _time(eager, device, 2, max(3, iters))  # the cost model's unit
        raw = device_probe(k, batch, device)
        fn = graph_probe(raw, device)
        if fn is None:
            fn = raw
        else:
            graphs_ok.add(fn)
        probes[k] = (fn, probe_ms, _time(fn, device, 2, max(3, iters)))
    todo = [(s, k) for s in STAGES for k in units]
    stopped: set[str] = set()
    for s, k in tqdm(todo, desc="stage capacity", disable=not progress, mininterval=2):
        if s in stopped:
            continue
        fn, probe_ms, gpu_ms = probes[k]
        t = median_times(fn, s)[s]
        stretch = t / base[s] - 1.0 if base[s] > 0 else float("inf")
        # every rank must stop a stage at the same probe (each step has collectives): the
        # largest stretch over the ranks decides (ranks that decided alone diverged, and one
        # finished while the other waited in an all_gather: torchrun on 2 ranks)
        stretch = _max_over_ranks(stretch, device, world)
        out[s]["corun"].append({"units": k, "stage_ms": t, "probe_ms": probe_ms,
                                "probe_launch_ms": gpu_ms, "graph": fn in graphs_ok,
                                "stretch": stretch})  # fmt: skip
        if stretch < CAPACITY_STRETCH:
            unit_ms = gpu_ms if graphs and fn in graphs_ok else probe_ms
            out[s]["capacity_units"], out[s]["capacity_ms"] = k, unit_ms
        else:
            stopped.add(s)
    return {"stages": out, "world": world, "batch": batch, "table_rows_cap": max_table_rows,
            "embedding_dim": dim}  # fmt: skip


def _max_over_ranks(x: float, device, world: int) -> float:
    """``x``'s maximum over the ranks of the default process group (``x`` on one rank)."""
    import torch.distributed as dist

    if world <= 1 or not dist.is_initialized():
        return x
    dev = device if dist.get_backend() == "nccl" else torch.device("cpu")
    t = torch.tensor([x], dtype=torch.float64, device=dev)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


def _ints(text: str) -> list[int]:
    try:
        vals = [int(x) for x in text.split(",") if x]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None
    if not vals or min(vals) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return vals


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m rap_share.profile", description=__doc__,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                                epilog=EPILOG)  # fmt: skip
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--ops", default=",".join(OP_NAMES), help="ops to profile")
    p.add_argument("--degrees", type=_ints, default=[1, 2, 4, 8, 16, 32])
    p.add_argument("--widths", type=_ints, default=[1, 2, 4, 8, 16, 32])
    p.add_argument("--batches", type=_ints, default=[1024, 4096, 16384])
    p.add_argument(
        "--units",
        type=_ints,
        default=[1, 2, 4, 8, 16, 32, 64],
        help="probe units tried per stage (4 columns of width 20 each)",
    )
    p.add_argument(
        "--stage-batch", type=int, default=REF_BATCH, help="DLRM batch of the stage profile"
    )
    p.add_argument("--max-table-rows", type=int, default=1_000_000, help="cap per embedding table")
    p.add_argument("--embedding-dim", type=int, default=128)
    p.add_argument(
        "--bottom-mlp", default="512-256", help="bottom MLP widths before the embedding dim"
    )
    p.add_argument("--top-mlp", default="1024-1024-512-1")
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--warmup-runs", type=int, default=5)
    p.add_argument("--quick", action="store_true", help="a reduced grid for a quick check")
    p.add_argument("--no-stages", action="store_true", help="skip the stage capacity profile")
    p.add_argument("--no-fit", action="store_true", help="do not fit the cost model")
    p.add_argument(
        "--graphs",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="time kernels (and the stage budgets' probe) as CUDA-graph replays, as the "
        "runtime's default path runs them; --no-graphs: eager fused calls (unset: "
        "RAP_SHARE_GRAPHS decides, default on)",
    )
    p.add_argument("--backend", choices=["auto", *costmodel.BACKENDS], default="auto",
                   help="auto = nnls")  # fmt: skip
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    ops = [o for o in args.ops.split(",") if o]
    bad = [o for o in ops if o not in OP_NAMES]
    if bad:
        parser().error(f"--ops: unknown {bad}; known: {', '.join(OP_NAMES)}")
    if args.quick:
        args.degrees, args.widths, args.batches = [1, 4, 16, 32], [1, 4, 16], [1024, 4096, 16384]
        args.units, args.iters, args.warmup_runs = [1, 4, 16, 32, 64], 12, 3
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but CUDA is not available", file=sys.stderr)
        return 1
    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(device)
    if world > 1:
        import torch.distributed as dist

        dist.init_process_group("nccl" if cuda else "gloo")
    name = torch.cuda.get_device_name(device) if cuda else "cpu"
    t0 = time.perf_counter()
    progress = rank == 0
    prof = {"device": name, "torch": torch.__version__, "cuda": torch.version.cuda,
            "ref_batch": REF_BATCH, "command": "python -m rap_share.profile " + " ".join(
                sys.argv[1:] if argv is None else argv)}  # fmt: skip
    from rap_share.graphs import enabled as graphs_enabled

    timed_graphs = graphs_enabled(args.graphs) and cuda
    prof["timing"] = "cuda graph replay" if timed_graphs else "eager fused calls"
    if rank == 0:
        prof["kernels"] = profile_kernels(ops, args.degrees, args.widths, args.batches, device,
                                          args.warmup_runs, args.iters, progress,
                                          graphs=timed_graphs)  # fmt: skip
    if not args.no_stages:
        st = profile_stages(device, args.stage_batch, args.units, args.iters, args.warmup_runs,
                            args.max_table_rows, args.embedding_dim, progress,
                            args.bottom_mlp, args.top_mlp, graphs=timed_graphs)  # fmt: skip
        prof.update(stages=st["stages"], stage_batch=st["batch"], stage_world=st["world"],
                    stage_table_rows_cap=st["table_rows_cap"])  # fmt: skip
    if world > 1:
        import torch.distributed as dist

        dist.destroy_process_group()
    if rank != 0:
        return 0
    prof["seconds"] = time.perf_counter() - t0
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        print(f"error: --out {out} exists and is not a folder", file=sys.stderr)
        return 1
    out.mkdir(parents=True, exist_ok=True)
    (out / "profile.json").write_text(json.dumps(prof, indent=1))
    msg = f"wrote {out / 'profile.json'} ({len(prof['kernels'])} kernels"
    msg += f", {len(prof.get('stages', {}))} stages)" if "stages" in prof else ")"
    if not args.no_fit:
        backend = None if args.backend == "auto" else args.backend
        try:
            cm = costmodel.fit(prof, backend)
        except ValueError as err:  # e.g. no positive stage budget: say so (profile kept)
            print(f"error: {err}", file=sys.stderr)
            return 1
        ev = costmodel.evaluate(cm, prof)
        cm.note = (f"fit on {name}; held-out within 10 %: "
                   + ", ".join(f"{g} {a:.0%}" for g, a in cm.accuracy.items()))  # fmt: skip
        slug = name.lower().replace(" ", "-")
        path = cm.save(out / f"{slug}.model.json")
        print(f"cost model ({cm.backend}): held-out within 10 %: "
              + ", ".join(f"{g} {a:.0%}" for g, a in cm.accuracy.items())
              + f"; held-out rows {cm.held_out.get('within_10pct', float('nan')):.0%}"
              + f"; all rows {ev['within_10pct']:.0%}; stage budgets (ms) "
              + ", ".join(f"{s} {v:.3f}" for s, v in cm.capacity_ms.items()))  # fmt: skip
        msg += f" and {path}"
    print(msg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
