"""Kernel-latency benchmarks: MICRO'24, the anchors, the sweeps, and DLRM end to end.

Every variant and the baselines (torch's ``F.embedding_bag``; FBGEMM TBE when it imports,
``--fbgemm auto``) run in one process on the same inputs. Before timing, each variant's output
(poisoned with NaN first) is compared with torch's; a mismatch aborts (``--on-mismatch skip``
drops that variant instead and exits 1 at the end).

Timing, as the artifact: per-table kernel latency, one launch between two CUDA events, the
first (cold) call excluded, median over tables x batches (x ``--repeats``). A spin kernel is
queued before each timed launch so the host's launch cost stays out of the events; the L2
pin step (``l2p``/``combined``) runs before the spin and is timed on its own (pin_latency),
added per call (latency_with_pin) and amortized over ``--pin-amortize`` calls.

Variants: baseline, optmt, rpf, rpf+optmt, rpfP(+optmt), l2p, l2p+optmt, combined,
combined-rpfP (pin method (a): the evict_last prefetch kernel), l2p-win+optmt and combined-win
(method (b): persisting-L2 window over the remapped hot rows); the register cap of optmt and
combined is the device's (emb_kernels.occupancy: 32 on 132-SM GPUs, 42 on an A100);
NAME@capN sets one (NAME@capnone: none); fast (auto), fast-warp, fast-blockW (W warps per
bag), fast-uU (rows in flight), fast-uUh (load hints), fast-noseg (no segmented mode),
fast-tableorder (work units in table order, not longest first), fast-v1 (no cooperative id
loads: the code path before them), fast-coop (warp mode with cooperative id loads),
fast-segK (K bags per lane group), fast-splitS (S warps share each bag of tables of >= 40 ids
per bag, inside the warp-mode launch), fast-splitS-minN (... of >= N ids), fast-coop-splitS,
fast-su8 / fast-coop-su8 (8 rows in flight in the segmented path, float32), fast-async8 /
fast-async16 (8 / 16 rows per warp through a cp.async ring in shared memory, float32;
``-mixed``: the ring kernel with the fallback compiled in, even where every table rides the
ring; ``-tableorder``: work units in table order; ``-segrowsR``: short-bag tables walk
ceil(R / pooling) bags per warp, R = 8 or 32, default 16); torch;
fbgemm (FBGEMM TBE, inference or training op). ``--sweep fast`` times the fast knobs
(FAST_SWEEP_SINGLE, FAST_SWEEP_BATCHED) next to torch and FBGEMM, without the paper baseline.
Workloads: micro24, anchors (= anchor-1table + criteo-kaggle + mlperf-multihot), each of
those alone (table-batched ones time the whole forward: one launch for fast, one per table
for the others), and dlrm (end-to-end inference, see emb_kernels.e2e).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from emb_kernels import __version__, errors, kernels, l2p, ops
from emb_kernels import launch as L
from emb_kernels.batched import TableBatchedEmbeddingBags
from emb_kernels.constants import DEVICE_CAP, PREFETCH_DISTANCES
from rec_common import fbgemm_tbe, results
from rec_common.generators import BatchGenerator, FeatureSpec, make_trace, micro24_hot_rows
from rec_common.timing import summarize

EXAMPLE = """examples:
  python -m emb_kernels.bench --workload micro24 --hotness high,medium,low,random --plot
  python -m emb_kernels.bench --workload anchors
  python -m emb_kernels.bench --workload anchor-1table --iters 50 --variants fast,torch
  python -m emb_kernels.bench --workload micro24 --hotness random --sweep registers
  python -m emb_kernels.bench --workload anchors --sweep fast --repeats 5
  python -m emb_kernels.bench --workload dlrm --hotness random,high"""

PACKAGE = "emb-kernels"
MICRO24_VARIANTS = (
    "baseline", "optmt", "rpf+optmt", "l2p+optmt", "combined", "combined-rpf2", "optmt@cap42",
    "rpf+optmt@cap42", "combined-rpf2@cap42", "l2p-win+optmt", "fast", "fast-coop",
    "fast-block8", "torch",
)  # fmt: skip
ANCHOR_VARIANTS = (
    "baseline", "optmt", "rpf+optmt", "fast", "fast-warp", "fast-u8", "fast-coop", "fast-seg4",
    "fast-block4", "torch",
)  # fmt: skip
BATCHED_VARIANTS = (
    "baseline", "optmt", "fast", "fast-coop", "fast-noseg", "fast-tableorder", "torch",
)  # fmt: skip
# --sweep fast (H200 run 3: pick the fast default from measured numbers); every variant's
# output is checked against torch before it is timed, FBGEMM TBE added when it runs
FAST_SWEEP_SINGLE = (
    "fast", "fast-async8", "fast-async8-mixed", "fast-async16", "fast-warp", "fast-block2", "fast-coop",
    "fast-split2-min16", "fast-su8", "fast-coop-su8", "fast-u4h", "fast-u8h", "torch",
)  # fmt: skip
FAST_SWEEP_BATCHED = (
    "fast", "fast-async8", "fast-async8-mixed", "fast-async16", "fast-coop", "fast-split2",
    "fast-split4", "fast-split8", "fast-split4-min16", "fast-coop-split4", "fast-su8",
    "fast-coop-su8", "torch",
)  # fmt: skip
BATCHED_WORKLOADS = ("criteo-kaggle", "mlperf-multihot")
ANCHOR_WORKLOADS = ("anchor-1table", *BATCHED_WORKLOADS)
WORKLOADS = ("micro24", "anchors", *ANCHOR_WORKLOADS, "dlrm")
TRACES = {"high": "reuse_high", "medium": "reuse_medium", "low": "reuse_low", "random": "random"}
TIME_INCLUDES = (
    "kernel only: CUDA events around one launch, host launch cost hidden by a spin kernel "
    "queued first; L2 pin step excluded (reported as pin_latency)"
)


class MismatchError(RuntimeError):
    pass


# ---------------------------------------------------------------------------- variants
@dataclass(frozen=True)
class Spec:
    """A benchmark variant: which kernel configuration, and which pin method."""

    name: str
    variant: str  # an ops variant, or "torch" / "fbgemm"
    max_registers: int | None = None
    prefetch: int | None = None
    pin: str | None = None  # None, "prefetch" (method a) or "window" (method b)
    unroll: int | None = None  # fast: rows in flight per lane
    block_warps: int | None = None  # fast: None auto, 0 warp mode, 2/4/8 warps per bag
    hint: bool = False  # fast: L1::no_allocate + L2::256B load hints
    segment_rows: int | None = None  # fast: 0 turns the segmented (short-bag) mode off
    segment_bags: int | None = None  # fast: K bags per lane group (segmented mode forced)
    longest_first: bool | None = None  # fast: False numbers work units in table order
    coop: bool | None = None  # fast: cooperative id loads (False: the previous code path)
    split: int | None = None  # fast: warps sharing each bag of long-bag tables (2, 4, 8)
    split_min_pooling: float | None = None  # fast: ... of tables with at least this pooling
    seg_unroll: int | None = None  # fast: rows in flight in the segmented path (8: float32)
    async_rows: int | None = None  # fast: rows per warp in a cp.async ring (8, 16: float32)
    async_only: bool | None = None  # fast: False keeps the ring kernel with the fallback

    def fast_options(self) -> dict:
        opts = {
            "unroll": self.unroll,
            "block_warps": self.block_warps,
            "segment_rows": self.segment_rows,
            "segment_bags": self.segment_bags,
            "longest_first": self.longest_first,
            "coop": self.coop,
            "split": self.split,
            "split_min_pooling": self.split_min_pooling,
            "seg_unroll": self.seg_unroll,
            "async_rows": self.async_rows,
            "async_only": self.async_only,
        }
        opts = {k: v for k, v in opts.items() if v is not None}
        return {**opts, "hint": True} if self.hint else opts


def parse_variant(name: str, cap: int | str = DEVICE_CAP) -> Spec:
    """'rpf+optmt' -> Spec(variant='rpf', max_registers='device'), 'baseline@cap32', ..."""
    base, _, at = name.partition("@")
    extra_cap = None
    if at:
        if not at.startswith("cap"):
            raise ValueError(f"variant {name!r}: expected NAME@capN or NAME@capnone")
        extra_cap = 0 if at[3:] == "none" else int(at[3:])
    table = {
        "baseline": Spec(name, "baseline", 0),
        "optmt": Spec(name, "optmt", cap),
        "rpf": Spec(name, "rpf", 0),
        "rpf+optmt": Spec(name, "rpf", cap),
        "l2p": Spec(name, "l2p", 0, pin="prefetch"),
        "l2p+optmt": Spec(name, "l2p", cap, pin="prefetch"),
        "combined": Spec(name, "combined", cap, pin="prefetch"),
        "l2p-win+optmt": Spec(name, "l2p", cap, pin="window"),
        "combined-win": Spec(name, "combined", cap, pin="window"),
        "fast": Spec(name, "fast"),
        "fast-warp": Spec(name, "fast", block_warps=0),
        "fast-noseg": Spec(name, "fast", block_warps=0, segment_rows=0),
        "fast-tableorder": Spec(name, "fast", longest_first=False),
        "fast-v1": Spec(name, "fast", coop=False),  # the code path before cooperative ids
        "fast-coop": Spec(name, "fast", block_warps=0, coop=True),
        "fast-u4h": Spec(name, "fast", unroll=4, block_warps=0, hint=True),
        "fast-u8h": Spec(name, "fast", unroll=8, block_warps=0, hint=True),
        "torch": Spec(name, "torch"),
        "fbgemm": Spec(name, "fbgemm"),
    }
    for p in PREFETCH_DISTANCES:
        table[f"rpf{p}"] = Spec(name, "rpf", 0, prefetch=p)
        table[f"rpf{p}+optmt"] = Spec(name, "rpf", cap, prefetch=p)
        table[f"combined-rpf{p}"] = Spec(name, "combined", cap, prefetch=p, pin="prefetch")
    for u in (2, 4, 8, 16):
        table[f"fast-u{u}"] = Spec(name, "fast", unroll=u, block_warps=0)
    for wb in (2, 4, 8):
        table[f"fast-block{wb}"] = Spec(name, "fast", block_warps=wb)
    for k in (2, 4, 8, 16):
        table[f"fast-seg{k}"] = Spec(name, "fast", block_warps=0, segment_bags=k)
    for sp in (2, 4, 8):
        table[f"fast-split{sp}"] = Spec(name, "fast", split=sp)
        table[f"fast-coop-split{sp}"] = Spec(name, "fast", coop=True, split=sp)
        for lo in (16, 32):
            table[f"fast-split{sp}-min{lo}"] = Spec(name, "fast", split=sp, split_min_pooling=lo)
    table["fast-su8"] = Spec(name, "fast", seg_unroll=8)
    table["fast-coop-su8"] = Spec(name, "fast", coop=True, seg_unroll=8)
    for d in (8, 16):  # cooperative ids are part of the async path (no coop- twin)
        table[f"fast-async{d}"] = Spec(name, "fast", async_rows=d)
        table[f"fast-async{d}-mixed"] = Spec(name, "fast", async_rows=d, async_only=False)
        table[f"fast-async{d}-tableorder"] = Spec(name, "fast", async_rows=d, longest_first=False)
        for r in (8, 16, 32, 64):  # bags per warp of short-bag tables: ceil(r / pooling)
            table[f"fast-async{d}-segrows{r}"] = Spec(name, "fast", async_rows=d, segment_rows=r)
    if base not in table:
        raise ValueError(f"unknown variant {base!r}; known: {', '.join(table)}")
    spec = table[base]
    if extra_cap is not None:
        if spec.variant in ("fast", "torch", "fbgemm"):
            raise ValueError(f"variant {name!r}: a register cap applies to the paper variants only")
        spec = Spec(name, spec.variant, extra_cap, spec.prefetch, spec.pin)
    return spec


# ---------------------------------------------------------------------------- inputs
@dataclass
class Call:
    """One (table, batch) lookup: ids, B+1 offsets, and the table's index."""

    table: int
    indices: torch.Tensor
    offsets: torch.Tensor


@dataclass
class Workload:
    name: str
    tables: list[torch.Tensor]
    calls: list[Call]
    mode: str = "sum"
    hot_rows: torch.Tensor | None = None  # int64 on the device, the same for every table
    params: dict = field(default_factory=dict)
    batched: Batched | None = None  # many tables per call (criteo-kaggle, mlperf-multihot)

    @property
    def num_calls(self) -> int:
        return len(self.batched.batches) if self.batched else len(self.calls)

    @property
    def bytes_per_call(self) -> float:
        if self.batched:
            return self.batched.gather_bytes
        c = self.calls[0]
        w = self.tables[c.table]
        return c.indices.numel() * w.shape[1] * w.element_size()


@dataclass
class Batched:
    """Inputs of a table-batched workload: the module, its batches, TBE-layout copies."""

    tbe: TableBatchedEmbeddingBags
    batches: list
    concat: list[tuple[torch.Tensor, torch.Tensor]]
    gather_bytes: float
    counts: list[list[int]]


def gpu_tables(
    rows: int, dim: int, count: int, seed: int, dtype=torch.float32
) -> list[torch.Tensor]:
    """U(-sqrt(1/n), sqrt(1/n)) tables made on the GPU (no exact zeros), one seed each."""
    out = []
    bound = math.sqrt(1.0 / rows)
    for t in range(count):
        g = torch.Generator(device="cuda").manual_seed(seed + t)
        w = torch.empty(rows, dim, device="cuda", dtype=dtype).uniform_(-bound, bound, generator=g)
        w.masked_fill_(w == 0, bound / 2)
        out.append(w)
    return out


def micro24_workload(args, hotness: str, tables: list[torch.Tensor]) -> Workload:
    """The artifact's workload on one hotness trace: ``--batches`` x ``--num-tables`` calls."""
    trace = TRACES[hotness]
    feats = [
        FeatureSpec(
            f"table{i}",
            rows=args.num_embeddings,
            dim=args.embedding_dim,
            pooling=f"fixed:{args.bag_size}",
            skew=f"trace:{trace}",
        )
        for i in range(args.num_tables)
    ]
    gen = BatchGenerator(feats, seed=0, index_dtype=torch.int64)
    calls = []
    for b in range(args.batches):
        batch = gen.batch(args.batch_size, b).to("cuda")
        for t in range(args.num_tables):
            v, o, _ = batch.feature(t)
            calls.append(Call(t, v, o))
    row_bytes = args.embedding_dim * 4
    n = args.hot_rows or l2p.hot_row_count(row_bytes, l2p.persisting_l2_max_bytes())
    n = min(n, args.num_embeddings)
    hot = micro24_hot_rows(trace, n)
    hot = hot[hot < args.num_embeddings]
    hot_t = torch.as_tensor(hot, dtype=torch.int64, device="cuda")
    covered = l2p.hot_fraction(make_trace(trace), hot)
    return Workload(
        name=f"micro24-{hotness}",
        tables=tables,
        calls=calls,
        hot_rows=hot_t,
        params=dict(
            hotness=hotness,
            trace=trace,
            tables=args.num_tables,
            batch=args.batch_size,
            pooling=args.bag_size,
            rows=args.num_embeddings,
            dim=args.embedding_dim,
            dtype="float32",
            index_dtype="int64",
            batches=args.batches,
            hot_rows=int(hot_t.numel()),
            hot_trace_coverage=round(covered, 4),
        ),
    )


def anchor_workload(args, skew: str, table: torch.Tensor) -> Workload:
    feat = FeatureSpec(
        "t0",
        rows=args.num_embeddings,
        dim=args.embedding_dim,
        pooling=f"fixed:{args.bag_size}",
        skew=skew,
    )
    gen = BatchGenerator([feat], seed=0, index_dtype=_index_dtype(args))
    calls = []
    for b in range(args.batches):
        v, o, _ = gen.batch(args.batch_size, b).to("cuda").feature(0)
        calls.append(Call(0, v, o))
    return Workload(
        name=f"anchor-1table-{skew.replace(':', '')}",
        tables=[table],
        calls=calls,
        params=dict(
            skew=skew,
            tables=1,
            batch=args.batch_size,
            pooling=args.bag_size,
            rows=args.num_embeddings,
            dim=args.embedding_dim,
            dtype="float32",
            index_dtype=_index_dtype_name(args),
            batches=args.batches,
        ),
    )


def _index_dtype(args) -> torch.dtype:
    """The ids' dtype of the anchor and table-batched workloads (``--index-dtype``)."""
    return {"int64": torch.int64, "int32": torch.int32}[_index_dtype_name(args)]


def _index_dtype_name(args) -> str:
    return getattr(args, "index_dtype", "int64")


def batched_workload(args, name: str) -> Workload:
    """A rec-common workload (26 Criteo tables) at ``--embedding-dim``, tables capped at
    ``--max-rows``, one JaggedBatch per call, all tables looked up together."""
    from dataclasses import replace

    from rec_common import workloads
    from rec_common.generators import with_rows

    wl = workloads.load(name)
    feats = [replace(f, dim=args.embedding_dim) for f in wl.features]
    if args.max_rows:
        feats = with_rows(feats, args.max_rows)
    tbe = TableBatchedEmbeddingBags(
        [f.rows for f in feats], [f.dim for f in feats], device="cuda", validate=False
    )
    gen = BatchGenerator(feats, seed=0, index_dtype=_index_dtype(args))
    batches = [gen.batch(args.batch_size, b).to("cuda") for b in range(args.batches)]
    concat = [b.concat_values() for b in batches]
    gather = sum(v.numel() * f.dim * 4 for v, f in zip(batches[0].values, feats))
    return Workload(
        name=f"{name}-d{args.embedding_dim}",
        tables=[],
        calls=[],
        batched=Batched(
            tbe, batches, concat, float(gather), [[v.numel() for v in b.values] for b in batches]
        ),
        params=dict(
            tables=len(feats), batch=args.batch_size, dim=args.embedding_dim, dtype="float32",
            index_dtype=_index_dtype_name(args), batches=args.batches,
            max_rows=args.max_rows,
            total_rows=sum(f.rows for f in feats),
            ids_per_batch=int(sum(v.numel() for v in batches[0].values)),
            skew=str(feats[0].skew),
        ),
    )  # fmt: skip


# ---------------------------------------------------------------------------- runners
@dataclass
class Runner:
    """Callables for one variant on one workload: run(i) launches call i's lookup."""

    spec: Spec
    run: Callable[[int], torch.Tensor]
    pre: Callable[[int], None] | None = None  # pin step before call i (timed apart)
    pre_host: Callable[[int], float] | None = None  # host-side pin (method b), returns us
    stream: torch.cuda.Stream | None = None
    teardown: Callable[[], None] | None = None
    info: dict = field(default_factory=dict)


def _torch_runner(spec: Spec, w: Workload) -> Runner:
    import torch.nn.functional as F

    if w.batched:
        tbe = w.batched.tbe

        def run_batched(i: int) -> torch.Tensor:
            batch = w.batched.batches[i]
            outs = []
            for t in range(len(tbe.dims)):
                v, o, _ = batch.feature(t)
                outs.append(F.embedding_bag(v, tbe.table(t), o, mode=w.mode,
                                            include_last_offset=True))  # fmt: skip
            return torch.cat(outs, dim=1)

        return Runner(spec, run_batched)

    def run(i: int) -> torch.Tensor:
        c = w.calls[i]
        return F.embedding_bag(
            c.indices, w.tables[c.table], c.offsets, mode=w.mode, include_last_offset=True
        )

    return Runner(spec, run)


def _fbgemm_runner(spec: Spec, w: Workload) -> Runner:
    """FBGEMM TBE on the same ids (converted once to the op's index dtype): one TBE per
    table for the per-table workloads, one TBE over all tables for the batched ones."""
    if w.batched:
        tbe = w.batched.tbe
        run_all = fbgemm_tbe.make_tbe([tbe.table(t) for t in range(len(tbe.dims))], w.mode)
        conv = [(v.to(run_all.index_dtype), o.to(run_all.index_dtype)) for v, o in w.batched.concat]

        def run_batched(i: int) -> torch.Tensor:
            return run_all(*conv[i])

        return Runner(spec, run_batched, info={"fbgemm_kind": run_all.kind})
    first = fbgemm_tbe.make_tbe([w.tables[0]], w.mode)
    per_table = [first] + [fbgemm_tbe.make_tbe([t], w.mode, kinds=[first.kind])
                           for t in w.tables[1:]]  # fmt: skip
    dt = per_table[0].index_dtype
    conv1 = [(c.indices.to(dt), c.offsets.to(dt)) for c in w.calls]

    def run(i: int) -> torch.Tensor:
        return per_table[w.calls[i].table](*conv1[i])

    return Runner(spec, run, info={"fbgemm_kind": per_table[0].kind})


def make_runner(spec: Spec, w: Workload) -> Runner:
    if spec.variant == "torch":
        return _torch_runner(spec, w)
    if spec.variant == "fbgemm":
        return _fbgemm_runner(spec, w)
    hot = w.hot_rows if spec.pin == "prefetch" else None
    if spec.pin is not None and w.hot_rows is None:
        raise ValueError(f"variant {spec.name!r} pins rows but workload {w.name} has no hot rows")
    if spec.pin == "window":
        return _window_runner(spec, w)
    if w.batched:
        return _batched_runner(spec, w)
    launchers = [
        ops.make_launcher(
            w.tables[c.table],
            c.indices,
            c.offsets,
            w.mode,
            None,
            None,
            spec.variant,
            max_registers=spec.max_registers if spec.variant != "fast" else None,
            prefetch_distance=spec.prefetch,
            hot_rows=hot,
            validate_input=False,
            include_last_offset=True,
            aux=spec.variant != "fast",
            fast=spec.fast_options() if spec.variant == "fast" else None,
            table=c.table,
        )
        for c in w.calls
    ]
    pre = (lambda i: launchers[i].pin()) if hot is not None else None
    info = {}
    if spec.variant == "fast":
        info["fast_plan"] = f"{launchers[0].plan.name} grid {launchers[0].plan.grid}"
    return Runner(spec, lambda i: launchers[i](), pre=pre, info=info)


def _batched_runner(spec: Spec, w: Workload) -> Runner:
    bt = w.batched
    b = bt.batches[0].batch_size
    if spec.variant == "fast":
        tbe = bt.tbe.sharing("fast", spec.fast_options())

        info = {"time_includes_extra": "one launch, all tables"}

        def run_fast(i: int) -> torch.Tensor:
            values, offsets = bt.concat[i]
            out = tbe.forward_concat(values, offsets, b, counts=bt.counts[i])
            if "fast_plan" not in info and tbe._plans:  # the rows name the kernel that ran
                p = next(iter(tbe._plans.values()))
                info["fast_plan"] = f"{p.name} grid {p.grid}"
            return out

        return Runner(spec, run_fast, info=info)
    if ops.resolve_variant(spec.variant, spec.max_registers, spec.prefetch) != ops.resolve_variant(
        spec.variant
    ):
        raise ValueError(
            f"{spec.name}: the table-batched paper variants run with their default settings"
        )
    tbe = bt.tbe.sharing(spec.variant)
    return Runner(spec, lambda i: tbe(bt.batches[i]),
                  info={"time_includes_extra": "one launch per table + copy into the output"})  # fmt: skip


def _window_runner(spec: Spec, w: Workload) -> Runner:
    hot = w.hot_rows.cpu().numpy()
    remapped = [l2p.RemappedTable(t, hot) for t in w.tables]
    window = l2p.PersistingWindow()
    stream = torch.cuda.Stream()
    launchers = []
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for c in w.calls:
            r = remapped[c.table]
            launchers.append(
                ops.make_launcher(
                    r.weight,
                    r.remap(c.indices),
                    c.offsets,
                    w.mode,
                    None,
                    None,
                    "rpf" if spec.variant == "combined" else "baseline",
                    max_registers=spec.max_registers,
                    validate_input=False,
                    include_last_offset=True,
                    aux=True,
                    table=c.table,
                )
            )
    torch.cuda.current_stream().wait_stream(stream)

    def pre_host(i: int) -> float:
        r = remapped[w.calls[i].table]
        return window.activate(r.weight.data_ptr(), r.hot_bytes, stream.cuda_stream)

    def teardown() -> None:
        window.deactivate(stream.cuda_stream)

    info = {"persisting_max_bytes": window.max_persisting, "window_max_bytes": window.max_window}
    return Runner(
        spec,
        lambda i: launchers[i](),
        pre_host=pre_host,
        stream=stream,
        teardown=teardown,
        info=info,
    )


# ---------------------------------------------------------------------------- check + time
def relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    den = float(torch.linalg.vector_norm(ref.double()))
    num = float(torch.linalg.vector_norm(out.double() - ref.double()))
    return num / den if den else num


def check_runner(r: Runner, w: Workload, refs: dict[int, torch.Tensor], tol: float) -> float:
    """Poison, run the checked calls, compare with torch; raise MismatchError on a miss."""
    worst = 0.0
    for i, ref in refs.items():
        stream = r.stream or torch.cuda.current_stream()
        with torch.cuda.stream(stream):
            if r.pre_host:
                r.pre_host(i)
            if r.pre:
                r.pre(i)
            out = r.run(i)
        torch.cuda.synchronize()
        if r.spec.variant not in ("torch", "fbgemm"):
            # poisoned re-run: every element must be written
            with torch.cuda.stream(stream):
                out.fill_(float("nan"))
                out = r.run(i)
            torch.cuda.synchronize()
        if not bool(torch.isfinite(out).all()):
            raise MismatchError(
                f"{r.spec.name} on {w.name} call {i}: output has NaN/inf "
                "(an element was not written)"
            )
        err = relative_error(out, ref)
        worst = max(worst, err)
        if err > tol:
            diff = (out.double() - ref.double()).abs()
            pos = divmod(int(diff.argmax()), out.shape[1])
            raise MismatchError(
                f"{r.spec.name} on {w.name} call {i}: relative error {err:.3e} > {tol:.1e}; "
                f"worst element {pos}: {float(out[pos]):.6g} vs torch {float(ref[pos]):.6g}"
            )
    errors.check_errors(sync=True)
    return worst


def time_runner(
    r: Runner, n_calls: int, repeats: int, spin_us: float, warmup: int = 0
) -> tuple[list, list, list]:
    """Per-call kernel latencies (us), pin-kernel latencies, host pin times, in call order,
    after ``warmup`` untimed calls."""
    order = [i for _ in range(repeats) for i in range(n_calls)]
    starts = [torch.cuda.Event(enable_timing=True) for _ in order]
    ends = [torch.cuda.Event(enable_timing=True) for _ in order]
    pin_ev = (
        [
            (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
            for _ in order
        ]
        if r.pre
        else []
    )
    host_pin = []
    stream = r.stream or torch.cuda.current_stream()
    with torch.cuda.stream(stream):
        for i in range(min(warmup, n_calls)):
            if r.pre_host:
                r.pre_host(i)
            if r.pre:
                r.pre(i)
            r.run(i)
    torch.cuda.synchronize()
    with torch.cuda.stream(stream):
        for k, i in enumerate(order):
            if r.pre_host:
                host_pin.append(r.pre_host(i))
            if r.pre:
                pin_ev[k][0].record()
                r.pre(i)
                pin_ev[k][1].record()
            kernels.launch_spin(int(spin_us * 1000))
            starts[k].record()
            r.run(i)
            ends[k].record()
    torch.cuda.synchronize()
    lat = [s.elapsed_time(e) * 1e3 for s, e in zip(starts, ends)]
    pins = [a.elapsed_time(b) * 1e3 for a, b in pin_ev]
    return lat, pins, host_pin


# ---------------------------------------------------------------------------- rows
def _rows_for(
    w: Workload,
    spec: Spec,
    lat: list[float],
    pins: list[float],
    host_pin: list[float],
    batch_tables: int,
    base: dict,
    info: dict,
    bench: str,
    err: float,
    pin_amortize: int = 12,
) -> list[dict]:
    rows = []
    samples = lat[1:]  # the first call is cold (artifact: excluded)
    t = summarize(samples, torch.cuda.get_device_name())
    common = dict(
        w.params,
        time_includes=TIME_INCLUDES,
        check_rel_error=float(f"{err:.3e}"),
        emb_kernels=__version__,
        **info,
    )

    def row(metric, unit, timing=None, value=None, **extra):
        bkey = (w.name, metric)
        bval = base.get(bkey)
        r = results.make_row(
            package=PACKAGE,
            benchmark=bench,
            workload=w.name,
            variant=spec.name,
            metric=metric,
            unit=unit,
            timing=timing,
            value=value,
            baseline="baseline" if bval is not None and spec.name != "baseline" else None,
            baseline_value=bval if spec.name != "baseline" else None,
            **{**common, **extra},
        )
        if spec.name == "baseline":
            base[bkey] = r["value"]
        return fill_versions(r)

    rows.append(row("kernel_latency", "us", timing=t))
    gbps = w.bytes_per_call / (t.median * 1e-6) / 1e12
    extra = {}
    if w.params.get("copy_tbps"):
        extra["copy_fraction"] = round(gbps / w.params["copy_tbps"], 4)
    rows.append(
        row(
            "gather_bandwidth",
            "TB/s",
            value=gbps,
            n=t.n,
            bytes_per_call=int(w.bytes_per_call),
            **extra,
        )
    )
    if batch_tables > 1:
        sums = [sum(lat[k : k + batch_tables]) for k in range(batch_tables, len(lat), batch_tables)]
        if sums:
            rows.append(
                row(
                    "batch_latency",
                    "us",
                    timing=summarize(sums, t.device),
                    batch_tables=batch_tables,
                )
            )
    if pins:
        pt = summarize(pins[1:] or pins, t.device)
        rows.append(row("pin_latency", "us", timing=pt, pin_method="prefetch (a)"))
        amort = [a + b for a, b in zip(lat[1:], pins[1:])]
        rows.append(
            row(
                "latency_with_pin",
                "us",
                timing=summarize(amort or lat, t.device),
                pin_method="prefetch (a)",
                pin_amortized_over=1,
            )
        )
        k = max(1, int(pin_amortize))
        rows.append(
            row(
                "latency_pin_amortized",
                "us",
                value=t.median + pt.median / k,
                n=t.n,
                pin_method="prefetch (a)",
                pin_amortized_over=k,
                amortization=(
                    f"kernel median + pin median / {k}: the pin's effect assumed to last {k} "
                    "calls of the same table (true only if that table is called again before "
                    "other tables' traffic evicts its rows)"
                ),
            )
        )
    if host_pin:
        ht = summarize(host_pin[1:] or host_pin, "host")
        rows.append(row("pin_latency", "us", timing=ht, pin_method="window (b), host calls"))
    return rows


def fill_versions(row: dict) -> dict:
    """Package versions from ``__about__`` when the installed metadata gave none (the GPU
    machine runs from PYTHONPATH, without pip, so importlib.metadata finds nothing)."""
    if not row.get("versions"):
        import rec_common

        row["versions"] = {"emb-kernels": __version__, "rec-common": rec_common.__version__}
    return row


def _registers(spec: Spec, w: Workload) -> dict:
    if spec.variant in ("torch", "fbgemm", "fast") or w.batched:
        return {}
    c = w.calls[0]
    cfg = ops.resolve_variant(spec.variant, spec.max_registers, spec.prefetch)
    cfg = ops.on_device(cfg, w.tables[0].device)
    name = kernels.baseline_name(w.tables[0].dtype, c.indices.dtype, w.mode, cfg.prefetch)
    fn = L.get_function(kernels.BASELINE_SOURCE, name, cfg.max_registers)
    a = L.function_attributes(fn)
    blocks = L.max_active_blocks(fn, 256)
    occ = blocks * 256 / L.device_attribute("MAX_THREADS_PER_MULTIPROCESSOR")
    return {
        "registers": a["registers"],
        "local_bytes": a["local_bytes"],
        "theoretical_occupancy": round(occ, 3),
        "register_cap": cfg.max_registers,
        "prefetch_distance": cfg.prefetch,
    }


def run_workload(
    w: Workload, specs: Sequence[Spec], args, bench: str, base: dict, batch_tables: int
) -> tuple[list[dict], list[str]]:
    rows: list[dict] = []
    failed: list[str] = []
    torch_runner = _torch_runner(Spec("torch", "torch"), w)
    check_ids = sorted({0, w.num_calls - 1})
    refs = {i: torch_runner.run(i).clone() for i in check_ids}
    torch.cuda.synchronize()
    for spec in specs:
        t0 = time.perf_counter()
        torch.cuda.nvtx.range_push(f"{spec.name}|{w.name}")  # names kernels under ncu
        try:
            r = make_runner(spec, w)
            err = check_runner(r, w, refs, args.tolerance)
        except Exception as exc:
            torch.cuda.nvtx.range_pop()
            msg = f"{spec.name} on {w.name}: {type(exc).__name__}: {exc}"
            if spec.variant == "fbgemm" and not isinstance(exc, MismatchError):
                # FBGEMM is an optional baseline: a failure is reported, never fatal in auto
                print(f"note: FBGEMM baseline skipped: {msg}", file=sys.stderr, flush=True)
                if args.fbgemm == "on":
                    failed.append(msg)
                continue
            if not isinstance(exc, (MismatchError, RuntimeError, ValueError)):
                raise
            print(f"error: {msg}", file=sys.stderr, flush=True)
            if isinstance(exc, MismatchError) and args.on_mismatch == "abort":
                raise
            failed.append(msg)
            continue
        try:
            lat, pins, host_pin = time_runner(
                r, w.num_calls, args.repeats, args.spin_us, args.warmup_runs
            )
        finally:
            if r.teardown:
                r.teardown()
            torch.cuda.nvtx.range_pop()
        errors.check_errors(sync=True)
        info = {**r.info, **_registers(spec, w)}
        new = _rows_for(
            w, spec, lat, pins, host_pin, batch_tables, base, info, bench, err,
            pin_amortize=getattr(args, "pin_amortize", None) or w.params.get("batches", 1),
        )  # fmt: skip
        rows += new
        lat_row = new[0]
        ratio = f" ({lat_row['ratio']:.2f}x baseline)" if lat_row["ratio"] else ""
        print(
            f"{w.name:28s} {spec.name:18s} {lat_row['value']:9.1f} us  "
            f"{new[1]['value']:.3f} TB/s{ratio}  [{time.perf_counter() - t0:.1f} s]",
            flush=True,
        )
    return rows, failed


# ---------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m emb_kernels.bench",
        description=__doc__,
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--workload",
        choices=WORKLOADS,
        default="micro24",
        help="micro24: 12 x 500K x 128, B 2048, L 150; anchor-1table: 4M x 128, B 16384, "
        "L 32, uniform and zipf 1.1; criteo-kaggle: 26 one-hot tables, B 16384; mlperf-multihot: "
        "26 multi-hot tables (rows capped by --max-rows), B 8192; anchors: those three in one "
        "run; dlrm: DLRM inference end to end on the micro24 tables; all at --embedding-dim "
        "(default: micro24)",
    )
    p.add_argument(
        "--hotness",
        default=None,
        help="micro24/dlrm traces, comma-separated of high, medium, low, random "
        "(default: all four for micro24, random,high for dlrm)",
    )
    p.add_argument(
        "--skew", default="uniform,zipf:1.1", help="anchor id skews (default: %(default)s)"
    )
    p.add_argument("--variants", default=None, help="comma-separated (default: the workload's set)")
    p.add_argument(
        "--sweep",
        choices=("registers", "prefetch", "fast"),
        default=None,
        help="replace the variants by a register-cap or prefetch-distance sweep (micro24), or "
        "by the fast kernel's knobs next to torch and FBGEMM (fast: any workload, anchors too)",
    )
    p.add_argument("--num-tables", type=int, default=None)
    p.add_argument("--num-embeddings", type=int, default=None)
    p.add_argument("--embedding-dim", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--bag-size", type=int, default=None)
    p.add_argument("--batches", type=int, default=None, help="distinct batches (micro24: 12)")
    p.add_argument(
        "--iters",
        "--repeats",
        dest="repeats",
        type=int,
        default=None,
        help="passes over all (table, batch) calls (micro24 default 3, anchor 20)",
    )
    p.add_argument(
        "--warmup-runs",
        type=int,
        default=1,
        help="untimed calls before timing (default 1); the first timed one is dropped too",
    )
    p.add_argument(
        "--hot-rows",
        type=int,
        default=None,
        help="pinned rows (default: persisting-L2 max // row bytes)",
    )
    p.add_argument(
        "--pin-amortize",
        type=int,
        default=None,
        help="K for the latency_pin_amortized rows: kernel + pin / K (default: --batches, "
        "i.e. one pin per table per run)",
    )
    p.add_argument(
        "--spin-us",
        type=float,
        default=None,
        help="GPU spin before each timed call (default 100; 6000 for the table-batched "
        "workloads, whose per-table baselines enqueue 26 launches)",
    )
    p.add_argument(
        "--index-dtype",
        choices=["int64", "int32"],
        default="int64",
        help="ids and offsets of the anchor and table-batched workloads (FBGEMM's inference "
        "TBE always takes int32)",
    )
    p.add_argument(
        "--max-rows",
        type=int,
        default=None,
        help="cap table rows (mlperf-multihot default 10,000,000: 28 GB at dim 128)",
    )
    p.add_argument("--tolerance", type=float, default=1e-5, help="relative error vs torch")
    p.add_argument("--on-mismatch", choices=("abort", "skip"), default="abort")
    p.add_argument(
        "--fbgemm",
        choices=("auto", "on", "off"),
        default="auto",
        help="FBGEMM TBE baseline: auto adds it when fbgemm_gpu imports (else says why and "
        "skips), on requires it, off leaves it out (default: auto; not in sweeps)",
    )
    p.add_argument(
        "--with-fbgemm",
        dest="fbgemm",
        action="store_const",
        const="on",
        help="same as --fbgemm on",
    )
    p.add_argument(
        "--plot",
        action="store_true",
        help="also draw the figure (latency and speedup per variant x workload) next to --out",
    )
    p.add_argument(
        "--out", default=None, help="JSON-lines file (default results/emb-kernels/<workload>.jsonl)"
    )
    return p


_PER_WORKLOAD = {  # micro24, anchor-1table, criteo-kaggle, mlperf-multihot, dlrm
    "num_tables": (12, 1, None, None, 12),
    "num_embeddings": (500_000, 4_000_000, None, None, 500_000),
    "batch_size": (2048, 16384, 16384, 8192, 2048),
    "bag_size": (150, 32, None, None, 150),
    "batches": (12, 4, 4, 4, 4),
    "repeats": (3, 20, 10, 10, 5),
    "spin_us": (100.0, 100.0, 6000.0, 6000.0, 6000.0),
    "max_rows": (None, None, None, 10_000_000, None),
    "hotness": ("high,medium,low,random", None, None, None, "random,high"),
}


def _defaults(args) -> None:
    """Fill the flags left at None with the workload's defaults (anchors: per sub-workload,
    see :func:`args_for`)."""
    if args.workload == "anchors":
        return
    k = ("micro24", *ANCHOR_WORKLOADS, "dlrm").index(args.workload)
    for name, values in _PER_WORKLOAD.items():
        if getattr(args, name) is None:
            setattr(args, name, values[k])
    if args.pin_amortize is None:
        args.pin_amortize = args.batches


def args_for(raw, workload: str):
    """A copy of the parsed flags for one sub-workload of ``anchors``, defaults filled."""
    import copy

    sub = copy.copy(raw)
    sub.workload = workload
    _defaults(sub)
    return sub


def specs_for(args, fbgemm_ok: bool | None = None) -> list[Spec]:
    """The variants to run, baseline first. ``fbgemm_ok`` (default: whether FBGEMM imports)
    decides whether ``--fbgemm auto`` adds the FBGEMM baseline."""
    if args.sweep == "registers":
        names = [f"baseline@cap{c}" for c in ("32", "40", "42", "48", "56", "64", "none")]
        names += [f"rpf2@cap{c}" for c in ("32", "40", "42", "48", "56", "64", "none")]
        names = ["baseline", *names]
    elif args.sweep == "prefetch":
        names = ["baseline", "baseline@cap32"]
        names += [f"rpf{p}@cap{c}" for c in ("none", "42", "32") for p in PREFETCH_DISTANCES]
    elif args.sweep == "fast":
        names = list(FAST_SWEEP_BATCHED if args.workload in BATCHED_WORKLOADS
                     else FAST_SWEEP_SINGLE)  # fmt: skip
    elif args.variants:
        names = [v.strip() for v in args.variants.split(",") if v.strip()]
    else:
        names = list(
            MICRO24_VARIANTS
            if args.workload == "micro24"
            else ANCHOR_VARIANTS
            if args.workload == "anchor-1table"
            else BATCHED_VARIANTS
        )
    if args.sweep != "fast":  # the fast sweep leaves the paper baseline out (time)
        if "baseline" not in names:
            names.insert(0, "baseline")
        names.remove("baseline")
        names.insert(0, "baseline")  # measured first: the ratios refer to it
    if args.sweep in (None, "fast") and "fbgemm" not in names:
        if args.fbgemm == "on":
            names.append("fbgemm")
        elif args.fbgemm == "auto":
            if fbgemm_ok is None:
                fbgemm_ok = fbgemm_tbe.status()[0] is not None
            if fbgemm_ok:
                names.append("fbgemm")
    return [parse_variant(n) for n in names]


def copy_bandwidth(src: torch.Tensor, iters: int = 20) -> float:
    """Device-to-device copy rate of ``src`` in TB/s, bytes read + written (the roofline the
    gather bandwidth is compared with)."""
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    ev = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
          for _ in range(iters)]  # fmt: skip
    for a, b in ev:
        a.record()
        dst.copy_(src)
        b.record()
    torch.cuda.synchronize()
    t = summarize([a.elapsed_time(b) * 1e3 for a, b in ev], "copy")
    del dst
    return 2 * src.numel() * src.element_size() / (t.median * 1e-6) / 1e12


def _hotness_list(text: str) -> list[str]:
    out = [x.strip() for x in text.split(",") if x.strip()]
    for h in out:
        if h not in TRACES:
            raise ValueError(f"--hotness: {h!r} is not one of {', '.join(TRACES)}")
    return out


def run_micro24(args, specs, bench) -> tuple[list[dict], list[str]]:
    rows: list[dict] = []
    failed: list[str] = []
    tables = gpu_tables(args.num_embeddings, args.embedding_dim, args.num_tables, 512)
    for h in _hotness_list(args.hotness):
        w = micro24_workload(args, h, tables)
        r, bad = run_workload(w, specs, args, bench, {}, args.num_tables)
        rows += r
        failed += bad
        del w
    del tables
    torch.cuda.empty_cache()
    return rows, failed


def run_anchor_1table(args, specs, bench) -> tuple[list[dict], list[str]]:
    rows: list[dict] = []
    failed: list[str] = []
    table = gpu_tables(args.num_embeddings, args.embedding_dim, 1, 0)[0]
    copy_tbps = copy_bandwidth(table)
    print(f"device-to-device copy of the {table.nbytes / 1e9:.2f} GB table: {copy_tbps:.3f} TB/s")
    rows.append(
        fill_versions(
            results.make_row(
                package=PACKAGE, benchmark=bench, workload="anchor-1table", variant="copy",
                metric="copy_bandwidth", unit="TB/s", value=copy_tbps, n=20,
                bytes_copied=int(table.nbytes), note="torch copy_ of the table, read + write",
            )
        )
    )  # fmt: skip
    for skew in [x.strip() for x in args.skew.split(",") if x.strip()]:
        w = anchor_workload(args, skew, table)
        w.params["copy_tbps"] = round(copy_tbps, 4)
        r, bad = run_workload(w, specs, args, bench, {}, 1)
        rows += r
        failed += bad
    del table
    torch.cuda.empty_cache()
    return rows, failed


def run_batched(args, specs, bench) -> tuple[list[dict], list[str]]:
    w = batched_workload(args, args.workload)
    rows, failed = run_workload(w, specs, args, bench, {}, 1)
    del w
    torch.cuda.empty_cache()
    return rows, failed


def _sweep_summary(rows: list[dict]) -> None:
    """Print the best register cap per workload next to the device rule's pick."""
    from emb_kernels import occupancy

    rule = occupancy.device_register_cap(torch.cuda.current_device())
    lat = [r for r in rows if r["metric"] == "kernel_latency" and "register_cap" in r]
    for wl in dict.fromkeys(r["workload"] for r in lat):
        for fam in ("baseline", "rpf2"):
            cand = [r for r in lat if r["workload"] == wl and r["variant"].startswith(fam + "@")]
            if cand:
                best = min(cand, key=lambda r: r["value"])
                print(
                    f"{wl}: fastest {fam} cap {best['register_cap'] or 'none'} "
                    f"({best['value']:.1f} us); device rule picks {rule}"
                )


def _fast_sweep_summary(rows: list[dict]) -> None:
    """Per workload: each variant's latency, vs fast (the current default) and vs FBGEMM."""
    lat = [r for r in rows if r["metric"] == "kernel_latency"]
    for wl in dict.fromkeys(r["workload"] for r in lat):
        mine = {r["variant"]: r["value"] for r in lat if r["workload"] == wl}
        ref, tbe = mine.get("fast"), mine.get("fbgemm")
        print(f"--- sweep fast, {wl}: us, vs fast, vs FBGEMM TBE")
        for v, us in sorted(mine.items(), key=lambda kv: kv[1]):
            a = f"{ref / us:5.2f}x" if ref else "    -"
            b = f"{tbe / us:5.2f}x" if tbe else "    -"
            print(f"  {v:20s} {us:9.1f} {a} {b}")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    raw = parser.parse_args(argv)
    args = raw
    _defaults(args)
    if args.workload == "anchors" and args.sweep not in (None, "fast"):
        parser.error("--sweep registers/prefetch apply to micro24, not to anchors")
    if args.workload == "dlrm" and args.sweep:
        parser.error("--sweep does not apply to dlrm")
    try:
        if args.hotness is not None:
            _hotness_list(args.hotness)
        # the variant names are checked on every workload before anything runs
        for wl in ANCHOR_WORKLOADS if args.workload == "anchors" else (args.workload,):
            if wl != "dlrm":
                specs_for(args_for(raw, wl), fbgemm_ok=False)
        if args.workload == "dlrm" and args.variants:
            from emb_kernels.e2e import E2E_VARIANTS

            bad = [v for v in args.variants.split(",") if v.strip() not in E2E_VARIANTS]
            if bad:
                raise ValueError(f"--variants {bad}: dlrm runs {', '.join(E2E_VARIANTS)}")
    except ValueError as exc:
        parser.error(str(exc))
    if not torch.cuda.is_available():
        print("error: the benchmarks need a CUDA GPU; none is present", file=sys.stderr)
        return 1
    kind, why = fbgemm_tbe.status()
    if args.fbgemm != "off":
        print(f"FBGEMM TBE baseline: {why}" + ("" if kind else " -> skipped"), flush=True)
    if args.fbgemm == "on" and kind is None:
        print(f"error: --fbgemm on but FBGEMM is unusable: {why}", file=sys.stderr)
        return 1
    bench = args.workload + (f"-sweep-{args.sweep}" if args.sweep else "")
    out = args.out or str(results.default_path(PACKAGE, bench))
    all_rows: list[dict] = []
    failed: list[str] = []
    written = 0  # rows already written (the fast sweep writes per workload)
    t0 = time.perf_counter()
    try:
        if args.workload == "micro24":
            all_rows, failed = run_micro24(args, specs_for(args), bench)
            if args.sweep == "registers":
                _sweep_summary(all_rows)
            if args.sweep == "fast":
                _fast_sweep_summary(all_rows)
        elif args.workload == "dlrm":
            from emb_kernels import e2e

            all_rows, failed = e2e.run(args, bench)
        else:
            workloads = ANCHOR_WORKLOADS if args.workload == "anchors" else (args.workload,)
            if args.sweep == "fast":  # the gap that matters most first, should time run out
                workloads = sorted(workloads, key=lambda x: x != "mlperf-multihot")
            for wl in workloads:
                sub = args_for(raw, wl) if args.workload == "anchors" else args
                run = run_anchor_1table if wl == "anchor-1table" else run_batched
                rows, bad = run(sub, specs_for(sub), bench)
                all_rows += rows
                failed += bad
                if args.sweep == "fast":
                    results.write_rows(out, rows)  # per workload: a killed step keeps these
                    written += len(rows)
            if args.sweep == "fast":
                _fast_sweep_summary(all_rows)
    except MismatchError as exc:
        print(f"error: aborted on a mismatch: {exc}", file=sys.stderr)
        if all_rows[written:]:
            results.write_rows(out, all_rows[written:])
        return 1
    if all_rows[written:]:
        results.write_rows(out, all_rows[written:])
    print(
        f"{len(all_rows)} rows -> {out} ({time.perf_counter() - t0:.0f} s)"
        + (f"; {len(failed)} variant runs failed" if failed else "")
    )
    if args.plot and all_rows:
        from pathlib import Path

        from emb_kernels import figure

        try:
            fig = figure.draw(all_rows, Path(out).with_suffix(".png"))
            print(f"figure -> {fig}")
        except (ImportError, ValueError) as exc:
            print(f"error: the figure was not drawn: {exc}", file=sys.stderr)
            return 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
