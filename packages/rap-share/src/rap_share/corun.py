"""The co-run runtime: RAP and its baselines training the same DLRM on the same raw data.

One rank process per GPU trains rec-common's DLRM over table-wise sharded embeddings
(:mod:`rap_share.stages`); the variants differ only in how each next batch is preprocessed:

=================  ===========================================================================
``ideal``          no preprocessing in the loop: a few batches made before it, reused
``rap``            fused + mapped kernels of the plan, each stage's kernels launched on their
                   own CUDA stream when the trainer reaches that stage: replayed as CUDA graphs
                   from the trainer's thread (:class:`rap_share.runtime.InlineStageWorker`),
                   or on the eager path launched from a thread
                   (:class:`rap_share.runtime.StageWorker`); no input all-to-all
``rap_process``    the same staged program in a separate preprocessing process per GPU (under
                   MPS when the daemon runs): the trainer writes each stage it reaches into a
                   shared counter and the process launches that stage's kernels for batch
                   ``it + queue_depth`` (see :func:`serve_staged`)
``rap_no_fusion``  mapped, one launch per column, in a separate preprocessing process
``rap_no_mapping`` fused, every GPU preprocesses all features of its local rows, separate
                   process, the trainer redistributes the ids (input all-to-all)
``mps``            unfused and unmapped, separate preprocessing process (under MPS when the
                   figures driver could start it)
``sequential``     the ``mps`` program, run with MPS off (the two processes time-slice)
``cuda_stream``    unfused and unmapped, launched after each step on a low-priority stream
``cpu_workers``    N CPU processes per GPU run the numpy reference pipeline
=================  ===========================================================================

A preprocessing process receives a program (kernel launches) and produces batches ahead of
the trainer into a bounded queue (CUDA tensors cross by CUDA IPC). Every variant can check
each batch the trainer trains on against the numpy reference (``check=True``).

``Config.graphs`` (default on; ``RAP_SHARE_GRAPHS``, see :mod:`rap_share.graphs`) selects the
CUDA-graph path, the default since the H200 measurement of 2026-11-30: cached device constants
and packed raw copies for every variant, and ``rap``'s stages replayed as CUDA graphs.
``Config(graphs=False)`` (``RAP_SHARE_GRAPHS=0``, ``--no-graphs``) is the eager path: none of it
runs.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import queue as _queue
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.distributed as dist

from rap_share import fused
from rap_share import graphs as _graphs
from rap_share.columns import Column
from rap_share.constants import STAGES
from rap_share.runtime import (
    InlineStageWorker,
    RawSource,
    StageWorker,
    load_env,
    reference_features,
)

VARIANTS = ("ideal", "sequential", "mps", "cuda_stream", "cpu_workers", "rap_no_mapping",
            "rap_no_fusion", "rap", "rap_process")  # fmt: skip
TWO_PROCESS = ("sequential", "mps", "rap_no_mapping", "rap_no_fusion", "rap_process")
PLAN_TOP_MLP = {"plan0": "1024-1024-512-1", "plan1": "1024-1024-512-256-1"}
ALL = "all"  # the single stage of an unscheduled program
TRAINER_PRIORITIES = ("normal", "high")


@dataclass
class Config:
    """What one run trains: plan, batch per GPU, model, timing; the same for every variant."""

    plan: str = "plan0"
    batch: int = 4096
    world: int = 1
    steps: int = 30
    warmup: int = 5
    embedding_dim: int = 128
    bottom_mlp: str = "512-256"
    top_mlp: str = ""  # "" = the plan's (digest section 8)
    max_table_rows: int = 1_000_000
    lr: float = 0.1
    cpu_workers: int = 4
    queue_depth: int = 2
    premade: int = 4
    check: bool = False
    seed: int = 0
    solver: str = "highs"
    cost_model: str = ""
    # the CUDA-graph path (default; where not given, RAP_SHARE_GRAPHS=0 turns it off): cached
    # device constants and packed raw copies for every variant, CUDA-graph replay of rap's
    # stages; False: the eager path
    graphs: bool = field(default_factory=_graphs.enabled)
    # "high": the trainer's kernels (and NCCL's) on high-priority CUDA streams, so the block
    # scheduler serves them before the preprocessing kernels of the same process, which stay
    # at the default priority; "normal": one priority for both (every variant, Ideal too).
    # "high" is the default: on one H200 it raised RAP / Ideal from 0.72-0.82 to 0.78-0.91 in
    # all four figure-10 configurations (docs/rap-share/figures.md, section "late")
    trainer_priority: str = "high"
    # CPU threads of torch's intra-op pool in each rank (0: rank_threads' default, at most 4).
    # Without a cap every rank takes all cores, so 2 ranks oversubscribe the CPU twice over and
    # their spinning pools delay each other's host work (the trainer's launches, the RAP
    # worker's loads)
    cpu_threads: int = 0

    def __post_init__(self) -> None:
        if self.trainer_priority not in TRAINER_PRIORITIES:
            raise ValueError(
                f"Config.trainer_priority must be one of {', '.join(TRAINER_PRIORITIES)}, "
                f"got {self.trainer_priority!r}"
            )
        for name in ("batch", "world", "steps", "embedding_dim", "cpu_workers", "queue_depth",
                     "premade"):  # fmt: skip
            if int(getattr(self, name)) < 1:
                raise ValueError(f"Config.{name} must be >= 1, got {getattr(self, name)}")
        if self.warmup < 0:
            raise ValueError(f"Config.warmup must be >= 0, got {self.warmup}")
        if self.cpu_threads < 0:
            raise ValueError(f"Config.cpu_threads must be >= 0 (0: automatic), got "
                             f"{self.cpu_threads}")  # fmt: skip
        if not self.top_mlp:
            self.top_mlp = PLAN_TOP_MLP.get(self.plan, "1024-1024-512-1")


@dataclass
class Program:
    """Kernel launches of one GPU: ``stages[stage] = [(op, in_keys, params, out_keys, names)]``."""

    mapped: bool  # sparse features: owned ones for the global batch (True) or all, local rows
    stages: dict[str, list[tuple]]
    raw_local: list[str]
    raw_global: list[str]
    dense_keys: list[str]
    sparse_keys: list[str]
    sparse_names: list[str]
    script: str = ""
    launches: int = field(default=0)

    def __post_init__(self) -> None:
        self.launches = sum(len(v) for v in self.stages.values())

    def all_launches(self) -> list[tuple]:
        return [k for s in self.stages.values() for k in s]


def _launch(tasks) -> tuple:
    from rap_share.runtime import input_key

    return (tasks[0].node.op, [input_key(t) for t in tasks], [t.node.params for t in tasks],
            [t.key for t in tasks], [t.node.out for t in tasks])  # fmt: skip


def _program(plan, gp, mapped: bool, fusion: bool, staged: bool) -> Program:
    feats = {f.name: f for f in plan.graph.features}
    g = gp.graph
    if staged:
        stages = {s: [_launch(p.kernel.tasks) for p in gp.schedule.kernels(s)] for s in STAGES}
    elif fusion:
        stages = {ALL: [_launch(k.tasks) for k in gp.kernels]}
    else:
        stages = {ALL: [_launch([t]) for t in g.tasks]}
    return Program(mapped, stages, list(g.raw_local), list(g.raw_global),
                   [f"l{feats[f.name].node}" for f in g.dense_features],
                   [f"g{feats[f.name].node}" for f in g.sparse_features],
                   [f.name for f in g.sparse_features], plan.script)  # fmt: skip


def build_programs(cfg: Config, rank: int):
    """(mapped plan, {variant: Program}) for ``rank``: the RAP plan for ``cfg.world`` GPUs and
    a one-GPU plan of the same script for the unmapped variants (all features, local rows)."""
    from rap_share.costmodel import CostModel
    from rap_share.planner import make_plan

    cm = CostModel.load(cfg.cost_model) if cfg.cost_model else None
    mapped = make_plan(cfg.plan, cfg.world, cfg.batch, cost_model=cm, solver=cfg.solver)
    local = make_plan(cfg.plan, 1, cfg.batch, cost_model=cm, solver=cfg.solver)
    gm, gl = mapped.gpus[rank], local.gpus[0]
    unfused_local = _program(local, gl, False, False, False)
    progs = {
        "rap": _program(mapped, gm, True, True, True),
        "rap_no_fusion": _program(mapped, gm, True, False, False),
        "rap_no_mapping": _program(local, gl, False, True, False),
        "mps": unfused_local,
        "sequential": unfused_local,
        "cuda_stream": unfused_local,
        "cpu_workers": unfused_local,
    }
    progs["ideal"] = progs["rap_process"] = progs["rap"]
    return mapped, progs


# ------------------------------------------------------------------ preprocessing on a device
def env_columns(raw: RawSource, prog: Program, it: int, cfg: Config, rank: int) -> dict:
    """Batch ``it``'s raw host columns keyed as in the env (``raw_l:``, ``raw_g:``, ``labels``)."""
    idx_l = raw.rows(it, cfg.batch, cfg.world, rank)
    idx_g = raw.rows(it, cfg.batch, cfg.world) if prog.mapped else idx_l
    cols = {f"raw_l:{n}": c for n, c in raw.take(prog.raw_local, idx_l).items()}
    cols.update({f"raw_g:{n}": c for n, c in raw.take(prog.raw_global, idx_g).items()})
    cols["labels"] = Column(raw.labels[idx_l])
    return cols


def make_env(raw: RawSource, prog: Program, it: int, cfg: Config, rank: int, device,
             non_blocking: bool = False, packed: bool | None = None) -> dict:  # fmt: skip
    """Batch ``it``'s raw columns (and ``labels``) on ``device``. ``packed`` (default
    ``cfg.graphs``, the CUDA-graph path): a few packed copies instead of one per column
    (:func:`~rap_share.runtime.load_env`)."""
    idx_l = raw.rows(it, cfg.batch, cfg.world, rank)
    idx_g = raw.rows(it, cfg.batch, cfg.world) if prog.mapped else idx_l
    env = load_env(raw.take(prog.raw_local, idx_l), raw.take(prog.raw_global, idx_g), device,
                   non_blocking=non_blocking,
                   packed=cfg.graphs if packed is None else packed)  # fmt: skip
    lab = torch.from_numpy(raw.labels[idx_l])
    if device is not None and str(device) != "cpu":
        lab = lab.pin_memory().to(device, non_blocking=non_blocking)
    env["labels"] = lab
    return env


def run_launches(launches, env: dict) -> None:
    for op, ins, params, outs, names in launches:
        res = fused.run(op, [env[k] for k in ins], params, names, check=False)
        for k, c in zip(outs, res):
            env[k] = c


def outputs(env: dict, prog: Program) -> dict:
    """What goes to the trainer: dense [B, D] float32, sparse (values, offsets) int64, labels."""
    dense = torch.stack([env[k].values.to(torch.float32) for k in prog.dense_keys], 1)
    sparse = []
    for k in prog.sparse_keys:
        c = env[k]
        v = c.values.to(torch.int64)
        o = c.offsets if c.offsets is not None else torch.arange(c.num_rows + 1, device=v.device)
        sparse.append((v, o.to(torch.int64)))
    return {"dense": dense, "sparse": sparse, "labels": env["labels"]}


def preprocess(raw, prog, it, cfg, rank, device) -> dict:
    env = make_env(raw, prog, it, cfg, rank, device)
    run_launches(prog.all_launches(), env)
    return outputs(env, prog)


def reference_outputs(raw: RawSource, prog: Program, it: int, cfg: Config, rank: int) -> dict:
    """The same outputs from the numpy reference (CPU workers; checks)."""
    from rap_share.graph import PrepGraph
    from rap_share.script import parse

    graph = PrepGraph(parse(prog.script))
    idx_l = raw.rows(it, cfg.batch, cfg.world, rank)
    idx_g = raw.rows(it, cfg.batch, cfg.world) if prog.mapped else idx_l
    loc = reference_features(graph, raw.take(graph.raw_columns, idx_l))
    glo = reference_features(graph, raw.take(graph.raw_columns, idx_g)) if prog.mapped else loc
    dense = np.stack([loc[f.name].values.astype(np.float32) for f in graph.dense_features], 1)
    sparse = []
    for name in prog.sparse_names:
        c = glo[name]
        off = c.offsets if c.offsets is not None else np.arange(c.values.shape[0] + 1)
        sparse.append((c.values.astype(np.int64), off.astype(np.int64)))
    return {"dense": dense, "sparse": sparse, "labels": raw.labels[idx_l]}


# ------------------------------------------------------------------ input all-to-all
def input_all_to_all(sparse, placement, rank: int, world: int, group=None):
    """All features of the local rows -> the features this rank owns for all ``world * B`` rows
    (rank-major, as the mapped programs produce them). An all_gather of lengths and values
    (works on gloo and NCCL; moves ``world`` times an all-to-all's data)."""
    owned = [i for i, p in enumerate(placement) if p == rank]
    if world == 1:
        return [sparse[i] for i in owned]
    dev = sparse[0][0].device
    b = sparse[0][1].numel() - 1
    lens = torch.stack([o[1:] - o[:-1] for _, o in sparse])  # [F, B]
    vals = torch.cat([v for v, _ in sparse])
    all_lens = [torch.empty_like(lens) for _ in range(world)]
    dist.all_gather(all_lens, lens.contiguous(), group=group)
    counts = torch.stack([x.sum() for x in all_lens]).cpu()
    cap = int(counts.max())
    pad = torch.zeros(cap, dtype=vals.dtype, device=dev)
    pad[: vals.numel()] = vals
    got = [torch.empty_like(pad) for _ in range(world)]
    dist.all_gather(got, pad, group=group)
    out = []
    per_feat = [x.sum(1).cpu().tolist() for x in all_lens]  # ids per (rank, feature)
    for i in owned:
        vs, ls = [], []
        for q in range(world):
            start = int(sum(per_feat[q][:i]))
            vs.append(got[q][start : start + int(per_feat[q][i])])
            ls.append(all_lens[q][i])
        lengths = torch.cat(ls)
        offsets = torch.zeros(world * b + 1, dtype=torch.int64, device=dev)
        offsets[1:] = torch.cumsum(lengths, 0)
        out.append((torch.cat(vs), offsets))
    return out


# ------------------------------------------------------------------ helper processes
class Aborted(Exception):
    """The trainer gave up on a staged run (it set the stage counter negative)."""


def _await_stage(signal, want: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        v = signal.value
        if v < 0:
            raise Aborted
        if v >= want:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"no stage signal >= {want} from the trainer within {timeout} s")
        time.sleep(20e-6)


def _put(out_q, item, signal) -> None:
    while True:  # a bounded queue: wait for the trainer, but stop if it gave up
        try:
            out_q.put(item, timeout=0.1)
            return
        except _queue.Full:
            if signal.value < 0:
                raise Aborted from None


def serve_staged(raw, prog: Program, cfg: Config, rank: int, dev, total: int, depth: int,
                 signal, out_q, timeout: float = 600.0) -> None:  # fmt: skip
    """RAP's preprocessing process for one run of ``total`` iterations.

    Batches ``0 .. depth-1`` are made at once; then, while the trainer runs iteration ``it``,
    batch ``it + depth`` is made stage by stage: the kernels of stage ``STAGES[s]`` are
    launched once ``signal.value >= it * len(STAGES) + s + 1`` (the trainer only writes the
    counter, it never waits for this process). A finished batch goes to ``out_q`` as
    ``(batch, outputs)`` (CUDA IPC for device tensors). A negative counter stops the run
    (:class:`Aborted`); no signal within ``timeout`` s raises ``RuntimeError``.
    """
    ns = len(STAGES)

    def finish(j: int, env: dict) -> None:
        out = outputs(env, prog)
        if dev.type == "cuda":
            torch.cuda.current_stream(dev).synchronize()
        _put(out_q, (j, out), signal)

    for j in range(min(depth, total)):
        env = make_env(raw, prog, j, cfg, rank, dev)
        run_launches(prog.all_launches(), env)
        finish(j, env)
    for it in range(max(total - depth, 0)):
        env = make_env(raw, prog, it + depth, cfg, rank, dev, non_blocking=True)
        for s, stage in enumerate(STAGES):
            _await_stage(signal, it * ns + s + 1, timeout)
            run_launches(prog.stages.get(stage, []), env)
        finish(it + depth, env)


def _prep_process(kind: str, device: str, cmd_q, out_q, raw_path: str, rank: int,
                  signal=None) -> None:  # fmt: skip
    """A preprocessing process: serves ``("run", cfg, prog, its)`` and (device only, with the
    shared stage counter ``signal``) ``("staged", cfg, prog, total, depth)`` commands until
    ``None``.

    ``kind`` "device": the program's kernels on ``device``; "cpu": the numpy reference.
    Each batch is put on ``out_q`` as ``(it, outputs)``; ``("error", text)`` on failure.
    """
    import traceback

    torch.set_num_threads(1)
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    raw = RawSource.load(raw_path)
    while True:
        msg = cmd_q.get()
        if msg is None:
            return
        if msg[0] == "data":
            raw = RawSource.load(msg[1])
            continue
        if msg[0] == "staged":
            try:
                with fused.cached_constants(msg[1].graphs):
                    serve_staged(raw, msg[2], msg[1], rank, dev, msg[3], msg[4], signal, out_q)
            except Aborted:
                pass
            except BaseException:
                out_q.put(("error", traceback.format_exc()))
            continue
        _, cfg, prog, its = msg
        try:
            for it in its:
                if kind == "cpu":
                    out = reference_outputs(raw, prog, it, cfg, rank)
                else:
                    with fused.cached_constants(cfg.graphs):
                        out = preprocess(raw, prog, it, cfg, rank, dev)
                    if dev.type == "cuda":
                        torch.cuda.current_stream(dev).synchronize()
                out_q.put((it, out))
        except BaseException:  # reported to the trainer, which raises it
            out_q.put(("error", traceback.format_exc()))


class Helpers:
    """The preprocessing process and the CPU workers of one rank, kept for many runs."""

    def __init__(self, device: torch.device, raw_path: str, rank: int, cpu_workers: int,
                 depth: int = 2) -> None:  # fmt: skip
        ctx = torch.multiprocessing.get_context("spawn")
        self.procs = []
        self.gpu_cmd = ctx.Queue()
        self.gpu_out = ctx.Queue(maxsize=depth)
        self.signal = ctx.RawValue("q", 0)  # rap_process: it * len(STAGES) + stage + 1
        p = ctx.Process(
            target=_prep_process,
            args=("device", str(device), self.gpu_cmd, self.gpu_out, raw_path, rank, self.signal),
            daemon=True,
        )
        p.start()
        self.procs.append(p)
        self.cpu_cmd, self.cpu_out = [], []
        for _ in range(cpu_workers):
            c, o = ctx.Queue(), ctx.Queue(maxsize=depth)
            w = ctx.Process(target=_prep_process, args=("cpu", "cpu", c, o, raw_path, rank),
                            daemon=True)  # fmt: skip
            w.start()
            self.procs.append(w)
            self.cpu_cmd.append(c)
            self.cpu_out.append(o)

    def set_data(self, raw_path: str) -> None:
        for q in [self.gpu_cmd, *self.cpu_cmd]:
            q.put(("data", raw_path))

    @staticmethod
    def get(q, it: int, timeout: float = 600.0):
        try:
            got = q.get(timeout=timeout)
        except _queue.Empty:
            raise RuntimeError(f"no preprocessed batch {it} within {timeout} s") from None
        if got[0] == "error":
            raise RuntimeError(f"preprocessing process failed:\n{got[1]}")
        if got[0] != it:
            raise RuntimeError(f"preprocessing process sent batch {got[0]}, expected {it}")
        return got[1]

    def close(self) -> None:
        for q in [self.gpu_cmd, *self.cpu_cmd]:
            q.put(None)
        for p in self.procs:
            p.join(timeout=20)
            if p.is_alive():
                p.kill()
                p.join(timeout=5)


# ------------------------------------------------------------------ the trainer
class StageTimer:
    """Per-stage time of the trainer: CUDA events on the main stream (host clock on CPU)."""

    def __init__(self, device) -> None:
        self.cuda = device.type == "cuda"
        self.marks: list[list] = []
        self.on = False

    def __call__(self, stage: str) -> None:
        if not self.on:
            return
        if self.cuda:
            e = torch.cuda.Event(enable_timing=True)
            e.record()
        else:
            e = time.perf_counter()
        self.marks[-1].append((stage, e))

    def begin(self) -> None:
        if self.on:
            self.marks.append([])

    def end(self) -> None:
        self("end")

    def result(self) -> dict[str, float]:
        """Median ms per stage (grad_comm includes the SGD update)."""
        per: dict[str, list[float]] = {}
        for m in self.marks:
            for (s, a), (_, b) in itertools.pairwise(m):
                ms = a.elapsed_time(b) if self.cuda else (b - a) * 1e3
                per.setdefault(s, []).append(ms)
        return {s: float(np.median(v)) for s, v in per.items()}


class JobClock:
    """Host wall ms of the ``rap`` preprocessing jobs (``load``: a batch's raw rows to the
    device; ``stage``: a stage's kernels or graph replays) and of the trainer's wait for them
    at the end of each step (``wait``), summed over the measured iterations: where RAP's time
    outside the trainer's own stages goes (graph replays run on the trainer's thread; eager
    launches on a worker thread that shares the trainer's GIL)."""

    def __init__(self) -> None:
        self.on = False
        self.ms: dict[str, float] = {"load": 0.0, "stage": 0.0, "wait": 0.0}

    def add(self, kind: str, t0: float) -> None:
        if self.on:
            self.ms[kind] += (time.perf_counter() - t0) * 1e3

    def job(self, kind: str, fn):
        """``fn`` as a worker job that adds its wall time to ``kind``."""

        def timed():
            t0 = time.perf_counter()
            try:
                return fn()
            finally:
                self.add(kind, t0)

        return timed

    def per_iteration(self, steps: int) -> dict[str, float]:
        return {k: v / max(1, steps) for k, v in self.ms.items()}


class Trainer:
    """Model, data, programs and helpers of one rank; :meth:`run` measures one variant."""

    def __init__(self, cfg: Config, rank: int, device: torch.device, raw_path: str,
                 helpers: Helpers | None = None, group=None) -> None:  # fmt: skip
        from rap_share.stages import TrainStep, build_model

        self.cfg, self.rank, self.device, self.group = cfg, rank, device, group
        self.cuda = device.type == "cuda"
        self.raw_path = raw_path
        self.raw = RawSource.load(raw_path)
        self.plan, self.progs = build_programs(cfg, rank)
        g = self.plan.graph
        self.placement = self.plan.placement
        cap = cfg.max_table_rows
        self.sizes = [min(n, cap) if cap > 0 else n for n in g.table_sizes]
        self.owned_names = [f.name for f, p in zip(g.sparse_features, self.placement) if p == rank]
        self.owned_sizes = [s for s, p in zip(self.sizes, self.placement) if p == rank]
        torch.manual_seed(cfg.seed)
        with torch.device(device):
            self.model = build_model(
                [f.name for f in g.dense_features],
                [f.name for f in g.sparse_features],
                self.sizes,
                self.placement,
                cfg.embedding_dim,
                cfg.bottom_mlp,
                cfg.top_mlp,
                rank,
                cfg.world,
                group,
                check_ids=cfg.check,
            )
        self.timer = StageTimer(device)
        self.step = TrainStep(self.model, lr=cfg.lr, world=cfg.world, group=group,
                              on_stage=self._on_stage)  # fmt: skip
        self._stage_hook = None
        self.helpers = helpers

    def _on_stage(self, stage: str) -> None:
        self.timer(stage)
        if self._stage_hook is not None:
            self._stage_hook(stage)

    # -- batches -> model inputs
    def model_inputs(self, out: dict, it: int, mapped: bool):
        from rec_common.jagged import JaggedBatch

        dev = self.device
        folded = out.get("folded") if mapped else None
        if folded is not None:  # the stage runner's graphs took the ids modulo already
            dense, labels, sparse = out["dense"], out["labels"], out["sparse"]
            vals = list(folded)
        else:
            dense = torch.as_tensor(out["dense"]).to(dev, non_blocking=True)
            labels = torch.as_tensor(out["labels"]).to(dev, non_blocking=True)
            sparse = [tuple(torch.as_tensor(x).to(dev, non_blocking=True) for x in s)
                      for s in out["sparse"]]  # fmt: skip
            if not mapped:
                sparse = input_all_to_all(sparse, self.placement, self.rank, self.cfg.world,
                                          self.group)  # fmt: skip
            vals = [torch.remainder(v, n) for (v, _), n in zip(sparse, self.owned_sizes)]
        owned = JaggedBatch(self.owned_names, vals, [o for _, o in sparse])
        if self.cfg.check:
            self.check(dense, owned, labels, it)
        return dense, owned, labels

    def check(self, dense, owned, labels, it: int) -> None:
        """The batch about to be trained on equals the numpy reference of the same raw rows."""
        ref = reference_outputs(self.raw, self.progs["rap"], it, self.cfg, self.rank)
        if not np.allclose(dense.cpu().numpy(), ref["dense"], rtol=1e-5, atol=1e-5):
            raise RuntimeError(
                f"rank {self.rank} batch {it}: dense inputs differ from the reference"
            )
        if not np.array_equal(labels.cpu().numpy(), ref["labels"]):
            raise RuntimeError(f"rank {self.rank} batch {it}: labels differ from the reference")
        for i, (v, o) in enumerate(ref["sparse"]):
            want = np.mod(v, self.owned_sizes[i])
            if not (
                np.array_equal(owned.values[i].cpu().numpy(), want)
                and np.array_equal(owned.offsets[i].cpu().numpy(), o)
            ):
                raise RuntimeError(
                    f"rank {self.rank} batch {it}: ids of "
                    f"{self.owned_names[i]!r} differ from the reference"
                )

    # -- one variant
    def run(self, variant: str) -> dict:
        """Train ``warmup + steps`` iterations with ``variant``; rank-0 timing and losses."""
        if variant not in VARIANTS:
            raise ValueError(f"variant {variant!r}: expected one of {', '.join(VARIANTS)}")
        cfg = self.cfg
        total = cfg.warmup + cfg.steps
        prog = self.progs[variant]
        fn = getattr(self, f"_loop_{variant}", None) or self._loop_two_process
        self.timer = StageTimer(self.device)
        self.clock = JobClock()
        losses: list = []
        state = {"t0": None}

        def tick(it: int) -> None:  # called before iteration it
            if it == cfg.warmup:
                self._sync()
                state["t0"] = time.perf_counter()
                self.timer.on = self.clock.on = True
            self.timer.begin()

        with fused.cached_constants(cfg.graphs), self._trainer_stream():
            fn(variant, prog, total, tick, losses)  # graphs=False: eager, fresh constants
        self._sync()
        secs = time.perf_counter() - (state["t0"] or time.perf_counter())
        vals = [float(x) for x in losses]
        if not all(np.isfinite(vals)):
            raise RuntimeError(f"{variant}: non-finite loss {vals}")
        it_s = cfg.steps / secs if secs > 0 else float("nan")
        return {"variant": variant, "seconds": secs, "iterations_per_s": it_s,
                "total_iterations_per_s": it_s * cfg.world,
                "samples_per_s": it_s * cfg.batch * cfg.world, "losses": vals,
                "stage_ms": self.timer.result(), "launches": prog.launches,
                "worker_ms": (self.clock.per_iteration(cfg.steps) if variant == "rap"
                              else None)}  # fmt: skip

    @contextlib.contextmanager
    def _trainer_stream(self):
        """The stream the variant's loop trains on: the current one, or with
        ``trainer_priority="high"`` a high-priority stream (ordered after the current one on
        entry, and the current one after it on exit)."""
        if not self.cuda or self.cfg.trainer_priority != "high":
            yield
            return
        outer = torch.cuda.current_stream(self.device)
        hp = torch.cuda.Stream(self.device, priority=-1)  # lower number: higher priority
        hp.wait_stream(outer)
        try:
            with torch.cuda.stream(hp):
                yield
        finally:
            outer.wait_stream(hp)

    def _sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)
        if self.cfg.world > 1:
            dist.barrier(group=self.group)

    def _train(self, inputs, it, tick, losses) -> None:
        tick(it)
        loss = self.step(*inputs)
        self.timer.end()
        losses.append(loss)

    def _loop_ideal(self, variant, prog, total, tick, losses) -> None:
        made = [self.model_inputs(preprocess(self.raw, prog, i, self.cfg, self.rank, self.device),
                                  i, True) for i in range(min(self.cfg.premade, total))]  # fmt: skip
        for it in range(total):
            self._train(made[it % len(made)], it, tick, losses)

    def _loop_rap(self, variant, prog, total, tick, losses) -> None:
        """``rap``: stage ``s`` of batch ``it + 1`` is launched on a side stream when the
        trainer reaches stage ``s`` of step ``it``. The CUDA-graph path (default) replays it
        through the :class:`~rap_share.graphs.StagedRunner` from the trainer's thread; the
        eager path launches the stage's fused kernels on a fresh env per batch from a worker
        thread."""
        if self.cfg.graphs:
            runner = self.rap_runner()
            return self._loop_staged(runner.load, runner.stage, runner.outputs,
                                     runner.graphed, total, tick, losses)  # fmt: skip
        state: dict = {}

        def load(it, free=None):
            # batch it - 1's env was read on the trainer's stream (outputs()); dropping it
            # hands its blocks to this stream, so this stream first waits for those reads
            if free is not None:
                torch.cuda.current_stream(self.device).wait_event(free)
            state["env"] = make_env(self.raw, prog, it, self.cfg, self.rank, self.device, True)

        def stage(s, it):  # the worker runs jobs in posting order: state["env"] is batch it's
            run_launches(prog.stages.get(s, []), state["env"])

        self._loop_staged(load, stage, lambda it: outputs(state["env"], prog), False, total,
                          tick, losses)  # fmt: skip

    def _loop_staged(self, load, stage, outputs_of, graphed, total, tick, losses) -> None:
        """The trainer's side of ``rap``: ``load(it, free)`` (``free``: an event after the
        trainer's reads of the batch it replaces), ``stage(s, it)`` and ``outputs_of(it)``
        come from one of the two paths. Eager (``graphed`` False): a worker thread runs the
        jobs (:class:`StageWorker`) and the outputs, made on its stream, are
        ``record_stream``-ed on the trainer's. ``graphed`` (captured graphs): the jobs run on
        the trainer's thread as it reaches each stage (:class:`InlineStageWorker`), and the
        outputs are the runner's static buffers, one set per slot, so their model inputs are
        built once per slot and reused, as Ideal reuses its premade batches (not with
        ``Config.check``, which compares every batch)."""
        worker = InlineStageWorker(self.device) if graphed else StageWorker(self.device)
        main = torch.cuda.current_stream(self.device) if self.cuda else None
        clock = self.clock
        cur = {"it": -1}
        reuse: dict[int, tuple] = {}  # id(static outputs) -> model inputs

        def post(s):  # the trainer reached stage s of step it: that slice of batch it + 1
            if s in STAGES:
                worker.post(clock.job("stage", lambda it=cur["it"] + 1: stage(s, it)))

        try:
            worker.post(lambda: load(0))
            for s in STAGES:
                post(s)
            worker.wait()
            for it in range(total):
                out = outputs_of(it)
                if self.cuda and not graphed:
                    for t in [out["dense"], out["labels"], *[x for s in out["sparse"] for x in s]]:
                        t.record_stream(main)
                if not graphed or self.cfg.check:
                    inputs = self.model_inputs(out, it, True)
                else:
                    inputs = reuse.get(id(out))
                    if inputs is None:
                        inputs = reuse[id(out)] = self.model_inputs(out, it, True)
                free = None
                if self.cuda:  # the next load may reuse memory the trainer still reads
                    free = torch.cuda.Event()
                    free.record(main)
                worker.post(clock.job("load", lambda it=it, free=free: load(it + 1, free)))
                cur["it"] = it
                self._stage_hook = post
                try:
                    self._train(inputs, it, tick, losses)
                finally:
                    self._stage_hook = None
                t0 = time.perf_counter()
                worker.wait()
                clock.add("wait", t0)
        finally:
            worker.close()

    def rap_runner(self):
        """The ``rap`` program's :class:`~rap_share.graphs.StagedRunner` (captured once; the
        CUDA-graph path only)."""
        if getattr(self, "_runner", None) is None:
            prog = self.progs["rap"]
            fold = self.owned_sizes if len(self.owned_sizes) == len(prog.sparse_keys) else None
            self._runner = _graphs.StagedRunner(self.raw, prog, self.cfg, self.rank,
                                                self.device, graphs=True, fold=fold)  # fmt: skip
        return self._runner

    def prep_diagnostics(self, n: int = 5) -> dict:
        """Preprocessing alone, per batch (median of ``n`` after 2 warm-up batches): host wall
        ms (synchronised) and the stream span between CUDA events, for the unfused program
        (MPS / Sequential / CUDA stream) and the fused RAP program launched eagerly, each as
        ``Config.graphs`` selects (cached constants and packed copies, or the eager path's
        fresh ones); on the CUDA-graph path also the same through
        :class:`~rap_share.graphs.StagedRunner` (CUDA graphs when it could capture)."""
        dev, cfg = self.device, self.cfg

        def timeit(fn) -> dict:
            walls, spans = [], []
            for i in range(n + 2):
                self._sync()
                e0 = e1 = None
                if self.cuda:
                    e0, e1 = (
                        torch.cuda.Event(enable_timing=True),
                        torch.cuda.Event(enable_timing=True),
                    )
                    e0.record()
                t = time.perf_counter()
                fn(i)
                if self.cuda:
                    e1.record()
                    torch.cuda.synchronize(dev)
                if i >= 2:
                    walls.append((time.perf_counter() - t) * 1e3)
                    if e0 is not None:
                        spans.append(e0.elapsed_time(e1))
            return {"wall_ms": float(np.median(walls)),
                    "gpu_span_ms": float(np.median(spans)) if spans else None}  # fmt: skip

        with fused.cached_constants(cfg.graphs):
            res = {
                "unfused": timeit(
                    lambda i: preprocess(self.raw, self.progs["mps"], i, cfg, self.rank, dev)
                ),
                "fused": timeit(
                    lambda i: preprocess(self.raw, self.progs["rap"], i, cfg, self.rank, dev)
                ),
                "unfused_launches": self.progs["mps"].launches,
                "fused_launches": self.progs["rap"].launches,
                "graphs": bool(cfg.graphs),
            }
            if cfg.graphs:
                runner = self.rap_runner()
                res["fused_runner"] = timeit(runner.run_all)
                res["runner"] = runner.note
        return res

    def _loop_cuda_stream(self, variant, prog, total, tick, losses) -> None:
        side = torch.cuda.Stream(self.device, priority=0) if self.cuda else None
        out = preprocess(self.raw, prog, 0, self.cfg, self.rank, self.device)
        for it in range(total):
            inputs = self.model_inputs(out, it, False)
            self._train(inputs, it, tick, losses)
            if it + 1 < total:
                if side is not None:
                    side.wait_stream(torch.cuda.current_stream(self.device))
                    with torch.cuda.stream(side):
                        out = preprocess(self.raw, prog, it + 1, self.cfg, self.rank, self.device)
                    torch.cuda.current_stream(self.device).wait_stream(side)
                else:
                    out = preprocess(self.raw, prog, it + 1, self.cfg, self.rank, self.device)

    def _loop_two_process(self, variant, prog, total, tick, losses) -> None:
        if self.helpers is None:
            raise RuntimeError(f"{variant} needs the preprocessing process (Helpers)")
        self.helpers.gpu_cmd.put(("run", self.cfg, prog, list(range(total))))
        for it in range(total):
            out = self.helpers.get(self.helpers.gpu_out, it)
            self._train(self.model_inputs(out, it, prog.mapped), it, tick, losses)
            del out

    def _loop_rap_process(self, variant, prog, total, tick, losses) -> None:
        """Batch ``it`` from the preprocessing process; each stage the trainer reaches is
        written to the shared counter (no waiting), which paces batch ``it + queue_depth``.
        A failed run stops the process's run; close the helpers after it."""
        if self.helpers is None:
            raise RuntimeError(f"{variant} needs the preprocessing process (Helpers)")
        h = self.helpers
        ns, index = len(STAGES), {s: i for i, s in enumerate(STAGES)}
        cur = {"it": 0}

        def signal(stage: str) -> None:
            i = index.get(stage)
            if i is not None:
                h.signal.value = cur["it"] * ns + i + 1

        h.signal.value = 0
        h.gpu_cmd.put(("staged", self.cfg, prog, total, self.cfg.queue_depth))
        done = False
        try:
            for it in range(total):
                out = h.get(h.gpu_out, it)
                inputs = self.model_inputs(out, it, prog.mapped)
                cur["it"] = it
                self._stage_hook = signal
                try:
                    self._train(inputs, it, tick, losses)
                finally:
                    self._stage_hook = None
                del out
            done = True
        finally:
            if not done:
                h.signal.value = -1

    def _loop_cpu_workers(self, variant, prog, total, tick, losses) -> None:
        if self.helpers is None or not self.helpers.cpu_cmd:
            raise RuntimeError("cpu_workers needs CPU worker processes (Helpers)")
        n = len(self.helpers.cpu_cmd)
        for w in range(n):
            self.helpers.cpu_cmd[w].put(("run", self.cfg, prog, list(range(w, total, n))))
        for it in range(total):
            out = self.helpers.get(self.helpers.cpu_out[it % n], it)
            if self.cuda:
                out = {"dense": torch.from_numpy(out["dense"]).pin_memory(),
                       "labels": torch.from_numpy(out["labels"]).pin_memory(),
                       "sparse": [tuple(torch.from_numpy(x).pin_memory() for x in s)
                                  for s in out["sparse"]]}  # fmt: skip
            self._train(self.model_inputs(out, it, False), it, tick, losses)


def _nccl_high_priority():
    """NCCL process-group options with high-priority streams (``trainer_priority="high"``:
    the gradient all-reduce and the embedding all-to-all then outrank preprocessing too)."""
    opts = dist.ProcessGroupNCCL.Options()
    opts.is_high_priority_stream = True
    return opts


def config_dict(cfg: Config) -> dict:
    return asdict(cfg)


def rank_threads(cfg: Config, cores: int | None = None) -> int:
    """Intra-op CPU threads for one of ``cfg.world`` ranks on one host: ``cfg.cpu_threads``,
    or by default half the host's cores split among the ranks, from 1 to 4 (the ranks' CPU
    work is launches, small copies and numpy; the CPU workers are processes of their own).

    >>> rank_threads(Config(world=2), cores=32), rank_threads(Config(world=2), cores=2)
    (4, 1)
    >>> rank_threads(Config(world=2, cpu_threads=7), cores=32)
    7
    """
    if cfg.cpu_threads:
        return cfg.cpu_threads
    cores = cores if cores is not None else (os.cpu_count() or 1)
    return max(1, min(4, cores // (2 * cfg.world)))


def rank_main(rank: int, world: int, cfgs: list[Config], variants: list[str], raw_paths: dict,
              out_path: str, device_kind: str = "auto", cpu_workers: int = 4,
              port: int = 0, diagnostics: bool = True, rounds: int = 1) -> None:  # fmt: skip
    """One rank of a figures run: every (config, variant) in order; rank 0 appends JSON lines
    (one per run) to ``out_path``. ``diagnostics``: time preprocessing alone once per config
    before its variants (:meth:`Trainer.prep_diagnostics`, the ``prep`` field of each run).
    ``rounds``: run the config's variants that many times, interleaved (round 0 of every
    variant, then round 1, ...), so a drift of the machine hits all variants alike; each run
    records its ``round``."""
    import datetime
    import json

    cuda = device_kind == "cuda" or (device_kind == "auto" and torch.cuda.is_available())
    device = torch.device(f"cuda:{rank}") if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if cfgs:
        torch.set_num_threads(rank_threads(cfgs[0]))
    if world > 1:
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ["MASTER_PORT"] = str(port)
        kw = {}
        if cuda and cfgs and cfgs[0].trainer_priority == "high":
            kw["pg_options"] = _nccl_high_priority()
        dist.init_process_group("nccl" if cuda else "gloo", rank=rank, world_size=world,
                                timeout=datetime.timedelta(seconds=600), **kw)  # fmt: skip
    first = raw_paths[cfgs[0].plan]
    need = set(variants) & (set(TWO_PROCESS) | {"cpu_workers"})
    helpers = Helpers(device, first, rank, cpu_workers if "cpu_workers" in need else 0) \
        if need else None  # fmt: skip
    try:
        for cfg in cfgs:
            if helpers is not None:
                helpers.set_data(raw_paths[cfg.plan])
            t0 = time.perf_counter()
            tr = Trainer(cfg, rank, device, raw_paths[cfg.plan], helpers)
            setup = time.perf_counter() - t0
            diag = None
            if diagnostics:
                try:
                    diag = tr.prep_diagnostics()
                except Exception as e:
                    diag = {"error": f"{type(e).__name__}: {e}"}
            for rnd, v in ((r, v) for r in range(rounds) for v in variants):
                res = tr.run(v)
                res.update(
                    round=rnd,
                    config=config_dict(cfg),
                    setup_seconds=setup,
                    device=str(device),
                    mps=bool(os.environ.get("CUDA_MPS_PIPE_DIRECTORY")),
                    prep=diag,
                )
                if rank == 0:
                    with open(out_path, "a", encoding="utf-8") as f:
                        f.write(json.dumps(res) + "\n")
                    print(f"[figures] {cfg.plan}-b{cfg.batch} round {rnd + 1}/{rounds} {v}: "
                          f"{res['total_iterations_per_s']:.1f} it/s", flush=True)  # fmt: skip
            del tr
            if cuda:
                torch.cuda.empty_cache()
    finally:
        if helpers is not None:
            helpers.close()
        if world > 1:
            dist.destroy_process_group()
