"""The GPU cost source of the tuner: replicated-candidate probe kernels timed by ``clock64``.

Local stage (RecFlex's interference-aware probe): a cluster's candidates are cut into
chunks of at most ``chunk`` schedules (NVRTC time grows faster than linearly with the
number of distinct functions in one kernel: ~10 s for 54, ~100 s for ~150). For a chunk of
``C`` candidates and occupancy ``o`` the probe is a fused kernel of ``P = ceil(SMs*o/C)*C``
entries, entry ``e`` running candidate ``e % C`` on the representative feature's batch (a
table of its shape, all ones, shared by every entry), built with ``__launch_bounds__(256, o)``
and shared-memory padding so that exactly ``o`` blocks fit an SM. So every block slot holds
a candidate next to other schedules, as in the real fused kernel. A candidate's score is
the sum of the ``clock64`` durations of its first copy's blocks over the tuning batches, in
microseconds (the SM clock rate converts). All chunk kernels are compiled up front in
parallel processes (:func:`recflex.build.prebuild`, cached on disk).

Global stage: the whole plan's fused kernel (occupancy a lower bound, no padding) over the
tuning batches, the sum of its kernel durations (:func:`recflex.measure.summed_kernel_time`).
Naive ablation: each candidate alone in a one-feature kernel, no occupancy bound, its
kernel time over the local batches from CUDA events; all the one-feature kernels are built
up front in one parallel build.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import torch

from recflex import build, launch
from recflex.binding import StaticBinder
from recflex.codegen import generate
from recflex.constants import BLOCK_THREADS
from recflex.inputs import Packed
from recflex.measure import summed_kernel_time
from recflex.module import FusedEmbedding
from recflex.plan import Plan
from recflex.schedules import Schedule
from recflex.tuner import INF, CostSource, LocalJob

DEFAULT_CHUNK = 32


class ContextLost(RuntimeError):
    """The CUDA context is unusable (a kernel faulted): every later measurement would fail,
    so the tuner stops instead of recording failures (``fatal``)."""

    fatal = True


def _check_context(device, exc: BaseException) -> None:
    """Raise :class:`ContextLost` if ``exc`` left the CUDA context broken."""
    try:
        torch.cuda.synchronize(device)
        torch.zeros(1, device=device).add_(1).item()
    except Exception as err:  # any failure here means the context is gone
        raise ContextLost(f"CUDA context lost after: {exc} ({err})") from exc


def chunks(cands: Sequence[Schedule], size: int) -> list[list[Schedule]]:
    """``cands`` cut into nearly equal chunks of at most ``size`` (fewer, balanced builds).

    >>> [len(c) for c in chunks(list(range(70)), 32)]
    [24, 23, 23]
    """
    if size < 1:
        raise ValueError(f"chunk size must be >= 1, got {size}")
    n = max(1, math.ceil(len(cands) / size))
    base, extra = divmod(len(cands), n)
    out, i = [], 0
    for k in range(n):
        m = base + (k < extra)
        out.append(list(cands[i : i + m]))
        i += m
    return [c for c in out if c]


def probe_plan(
    chunk: Sequence[Schedule], dim: int, rows: int, occupancy: int, sm_count: int
) -> Plan:
    """The probe's plan: the chunk replicated to fill ``sm_count * occupancy`` block slots."""
    c = len(chunk)
    p = math.ceil(sm_count * occupancy / c) * c
    return Plan(
        tuple(chunk[e % c] for e in range(p)),
        (dim,) * p,
        (rows,) * p,
        occupancy,
        tuple(f"probe{e}" for e in range(p)),
        {"origin": "probe"},
    )


def replicate(batch: Packed, copies: int) -> Packed:
    """One feature's batch as ``copies`` features (consecutive id ranges, same bags)."""
    ids, offs = batch.feature(0)
    nnz = ids.numel()
    base = torch.arange(copies, device=offs.device, dtype=offs.dtype) * nnz
    body = (offs[:-1].unsqueeze(0) + base.unsqueeze(1)).reshape(-1)
    end = torch.tensor([copies * nnz], device=offs.device, dtype=offs.dtype)
    return Packed(ids.repeat(copies), torch.cat([body, end]), batch.batch_size, None)


class GpuCost(CostSource):
    """Measures on one GPU (see the module docstring). ``chunk``: most candidates per probe
    kernel; ``jobs``: parallel NVRTC builds; ``index_dtype``: the ids' type in the kernels;
    ``repeats``: global-stage passes (median)."""

    name = "gpu"

    def __init__(
        self,
        device=None,
        *,
        chunk: int = DEFAULT_CHUNK,
        jobs: int = 16,
        index_dtype: str = "int32",
        repeats: int = 1,
        method: str = "auto",
    ) -> None:
        super().__init__()
        if not torch.cuda.is_available():
            raise RuntimeError("GpuCost measures on a CUDA GPU and none is present")
        if index_dtype not in ("int32", "int64"):
            raise ValueError(f"index_dtype: expected int32 or int64, got {index_dtype!r}")
        self.index = launch.device_index(device)
        self.device = torch.device("cuda", self.index)
        self.arch = launch.arch_of(self.index)
        self.sm_count = launch.device_attribute("MULTIPROCESSOR_COUNT", self.index)
        self.max_threads = launch.device_attribute("MAX_THREADS_PER_MULTIPROCESSOR", self.index)
        self.clock_khz = launch.device_attribute("CLOCK_RATE", self.index)
        self.chunk = int(chunk)
        self.jobs = int(jobs)
        self.index_dtype = index_dtype
        self.torch_index = torch.int32 if index_dtype == "int32" else torch.int64
        self.repeats = int(repeats)
        self.method = method
        self.notes: list[str] = []  # probes whose occupancy could not be met, failed builds
        self._ones: dict[tuple[int, int], torch.Tensor] = {}
        self._tables: dict[tuple, list[torch.Tensor]] = {}

    def fingerprint(self) -> str:
        return (
            f"gpu-{torch.cuda.get_device_name(self.index)}-{self.arch}-sm{self.sm_count}-"
            f"nvrtc{build.nvrtc_version()}-{self.index_dtype}-chunk{self.chunk}"
        )

    def occupancies(self) -> list[int]:
        return list(range(1, self.max_threads // BLOCK_THREADS + 1))

    # ------------------------------------------------------------------ builds
    def _probe_kernels(self, job: LocalJob):
        c = job.cluster
        out = []
        for ch in chunks(c.candidates, self.chunk):
            plan = probe_plan(ch, c.dim, c.rows, job.occupancy, self.sm_count)
            k = generate(plan, index_dtype=self.index_dtype, timing=True, exact_occupancy=True)
            out.append((ch, plan, k))
        return out

    def _prebuild(self, kernels) -> None:
        if not kernels:
            return
        t0 = time.perf_counter()
        done = build.prebuild(kernels, self.arch, jobs=self.jobs)
        self.stats["compiles"] += sum(1 for d in done if not d[2])
        self.stats["compile_s"] += time.perf_counter() - t0

    def prepare_local(self, jobs: Sequence[LocalJob]) -> None:
        kernels = [k for j in jobs if j.occupancy for _, _, k in self._probe_kernels(j)]
        try:
            self._prebuild(kernels)
        except RuntimeError as exc:  # one bad source: build them one by one at run time
            self.notes.append(f"parallel prebuild failed, building on demand: {exc}"[:500])

    def prepare_global(self, plans: Sequence[Plan], dispatch: str = "if-else") -> None:
        ks = [generate(p, index_dtype=self.index_dtype, dispatch=dispatch) for p in plans]
        try:
            self._prebuild(ks)
        except RuntimeError as exc:
            self.notes.append(f"parallel prebuild failed, building on demand: {exc}"[:500])

    # ------------------------------------------------------------------ local stage
    def _ones_table(self, rows: int, dim: int) -> torch.Tensor:
        t = self._ones.get((rows, dim))
        if t is None:
            t = self._ones[(rows, dim)] = torch.ones(rows, dim, device=self.device)
        return t

    def local_costs(self, job: LocalJob) -> list[float]:
        if job.occupancy is None:
            return self.alone_costs(job)
        c = job.cluster
        scores: dict[Schedule, float] = {}
        gpu_batches = [b.to(self.device, self.torch_index) for b in job.batches]
        table = self._ones_table(c.rows, c.dim)
        for ch, plan, kernel in self._probe_kernels(job):
            try:
                got = self._run_probe(ch, plan, kernel, table, gpu_batches)
            except RuntimeError as exc:  # a build failure; launch errors poison the context
                _check_context(self.device, exc)
                self.notes.append(f"{c.describe()} o={job.occupancy}: {exc}"[:500])
                got = [INF] * len(ch)
            scores.update(zip(ch, got))
        self.stats["runs"] += 1
        return [scores[s] for s in c.candidates]

    def _run_probe(self, chunk, plan, kernel, table, batches) -> list[float]:
        t0 = time.perf_counter()
        cached = build.cubin_path(kernel, self.arch).is_file()
        lk = launch.load(kernel, self.device)
        if not cached:
            self.stats["compiles"] += 1
            self.stats["compile_s"] += time.perf_counter() - t0
        if lk.occupancy != plan.occupancy:
            self.notes.append(
                f"probe {chunk[0]!r}..: {lk.occupancy} blocks/SM instead of {plan.occupancy}"
            )
            if lk.occupancy < plan.occupancy:
                return [INF] * len(chunk)  # these schedules cannot run at this occupancy
        p = plan.num_features
        # feature order: copies of different candidates interleave across the GPU, so each
        # co-runs with the others (heavy-first would group a candidate's identical copies)
        emb = FusedEmbedding([table] * p, plan, validate=False, exact_occupancy=True,
                             index_dtype=self.torch_index, task_order="feature")  # fmt: skip
        emb.kernel_source = lambda index_dtype="int64", timing=False: kernel  # the built probe
        c = len(chunk)
        acc = torch.zeros(c, dtype=torch.float64, device=self.device)
        for b in batches:
            gpu, binding, extra = emb.prepare(replicate(b, p))
            if binding.total_blocks == 0:
                continue
            timing = torch.zeros(binding.total_blocks, 3, dtype=torch.int64, device=self.device)
            emb.run_prepared(gpu, binding, extra, timing)
            feat = binding.tasks[:, 0].to(self.device, torch.int64)
            first = feat < c  # the first copy of each candidate
            dur = (timing[:, 1] - timing[:, 0]).to(torch.float64)
            acc.index_add_(0, feat[first], dur[first])
        torch.cuda.synchronize(self.device)
        return (acc / (self.clock_khz / 1e3)).tolist()  # cycles -> us

    # ------------------------------------------------------------------ naive ablation
    @staticmethod
    def _alone_plans(job: LocalJob) -> list[Plan]:
        c = job.cluster
        return [
            Plan((s,), (c.dim,), (c.rows,), None, (c.names[0],), {"origin": "naive"})
            for s in c.candidates
        ]

    def prepare_alone(self, jobs: Sequence[LocalJob]) -> None:
        # model A: 8194 candidates, but only ~820 distinct one-feature kernels
        self.prepare_global([p for j in jobs for p in self._alone_plans(j)])

    def alone_costs(self, job: LocalJob) -> list[float]:
        """Each candidate alone in a one-feature kernel, no occupancy bound: its kernel time
        summed over the job's batches, from CUDA events (one warm-up pass). The profiler
        per candidate would cost ~0.3 s each, 40 min for model A's 8194 candidates."""
        c = job.cluster
        table = self._ones_table(c.rows, c.dim)
        gpu_batches = [b.to(self.device, self.torch_index) for b in job.batches]
        out = []
        for plan in self._alone_plans(job):
            try:
                emb = FusedEmbedding([table], plan, validate=False, index_dtype=self.torch_index)
                staged = [emb.prepare(b) for b in gpu_batches]
                (total,), _ = summed_kernel_time(
                    lambda s, emb=emb: emb.run_prepared(*s), staged, repeats=1, method="events"
                )
                out.append(total)
            except RuntimeError as exc:
                _check_context(self.device, exc)
                self.notes.append(f"{c.describe()} {plan.schedules[0]!r}: {exc}"[:500])
                out.append(INF)
        self.stats["runs"] += 1
        return out

    # ------------------------------------------------------------------ global stage
    def _model_tables(self, plan: Plan) -> list[torch.Tensor]:
        """One table per feature of the plan's shapes (distinct memory, as in the model)."""
        key = tuple(zip(plan.rows, plan.dims))
        t = self._tables.get(key)
        if t is None:
            self._tables.clear()
            torch.cuda.empty_cache()
            t = [torch.ones(r, d, device=self.device) for r, d in key]
            self._tables[key] = t
        return t

    def _time(self, plan, tables, batches, dispatch, binding) -> float:
        emb = FusedEmbedding(tables, plan, dispatch=dispatch, validate=False,
                             index_dtype=self.torch_index)  # fmt: skip
        if binding != "runtime":
            st = emb._gpu_state(self.index_dtype)
            st["binder"] = StaticBinder(
                plan, st["kernel"].max_concurrent,
                [(b.offsets, b.batch_size) for b in batches], binding, emb.task_order,
            )  # fmt: skip
        staged = [emb.prepare(b) for b in batches]
        totals, _ = summed_kernel_time(
            lambda s: emb.run_prepared(*s), staged, repeats=self.repeats, method=self.method
        )
        return float(sorted(totals)[len(totals) // 2])

    def global_cost(self, plan, batches, *, dispatch="if-else", binding="runtime") -> float:
        self.stats["runs"] += 1
        t0 = time.perf_counter()
        key = generate(plan, index_dtype=self.index_dtype, dispatch=dispatch)
        cached = build.cubin_path(key, self.arch).is_file()
        try:
            out = self._time(plan, self._model_tables(plan), batches, dispatch, binding)
        except RuntimeError as exc:
            _check_context(self.device, exc)
            raise
        if not cached:
            self.stats["compiles"] += 1
            self.stats["compile_s"] += time.perf_counter() - t0
        return out
