"""RecFlex's interference-aware two-stage tuner, over an injectable cost source.

**Local stage**: for every feature cluster (features of one config line with the same table
shape are tuned once and share the result) and every occupancy ``o``, the cost source
scores each candidate schedule (on the GPU: a probe kernel with the candidates replicated
to fill every block slot at exactly ``o`` blocks per SM, scored by the summed ``clock64``
durations of a candidate's blocks; see :mod:`recflex.probe`); ``best[cluster][o]`` is the
cheapest. **Global stage**: for each ``o`` the per-cluster winners are fused into one plan
and the cost source times the whole kernel over the tuning batches; the cheapest ``o``
wins. Scores are cached on disk (keyed by the cost source, the candidates, the occupancy
and a digest of the data), so re-tuning an unchanged model costs no builds and no runs::

    >>> from recflex import models
    >>> from recflex.tuner import AnalyticCost, NoCache, tune
    >>> w = models.workload("test")
    >>> res = tune(w, cost=AnalyticCost(), batches=2, occupancies=[2, 4], cache=NoCache(),
    ...            progress=False)
    >>> res.plan.num_features, res.plan.occupancy in (2, 4), res.report["clusters"]
    (6, True, 6)

Cost sources implement :class:`CostSource`: :class:`CallableCost` wraps two functions (tests,
other measurements), :class:`AnalyticCost` is a deterministic CPU model of the kernel (no
GPU: a proxy for exercising the tuner, not a measurement), :class:`recflex.probe.GpuCost`
measures on a GPU.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from recflex.constants import BLOCK_THREADS, DEFAULT_SM_COUNT, MAX_OCCUPANCY
from recflex.inputs import Packed, pack
from recflex.plan import Plan
from recflex.schedules import Schedule, candidates

TUNER_VERSION = 1
INF = float("inf")


# ---------------------------------------------------------------------------- clusters
@dataclass(frozen=True)
class Cluster:
    """Features tuned as one: same config line (``group``), same table shape, same kind.

    ``features[0]`` is the representative whose data the local stage runs."""

    index: int
    features: tuple[int, ...]
    names: tuple[str, ...]
    dim: int
    rows: int
    group: int | None
    multi_hot: bool
    candidates: tuple[Schedule, ...]

    @property
    def rep(self) -> int:
        return self.features[0]

    def describe(self) -> str:
        more = f" and {len(self.names) - 1} more" if len(self.names) > 1 else ""
        kind = "multi-hot" if self.multi_hot else "one-hot"
        return f"feature {self.names[0]!r}{more} ({kind}, {self.rows} rows x dim {self.dim})"


def cluster_features(
    dims: Sequence[int],
    rows: Sequence[int],
    multi_hot: Sequence[bool],
    groups: Sequence[int | None] | None = None,
    names: Sequence[str] | None = None,
    *,
    templates: Sequence[str] | None = None,
    merge: bool = True,
) -> list[Cluster]:
    """Group features by (config line, rows, dim, kind); ``merge=False``: one per feature.

    A feature without a group (``None``) is a cluster of its own. Raises ``ValueError``
    naming the first feature that has no valid candidate among ``templates``."""
    n = len(dims)
    groups = list(groups) if groups is not None else [None] * n
    names = list(names) if names is not None else [f"f{i}" for i in range(n)]
    for what, seq in (
        ("rows", rows),
        ("multi_hot", multi_hot),
        ("groups", groups),
        ("names", names),
    ):
        if len(seq) != n:
            raise ValueError(f"cluster_features: {len(seq)} {what} for {n} dims")
    keyed: dict[tuple, list[int]] = {}
    for f in range(n):
        g = groups[f]
        if not merge or g is None:
            key = ("own", f)
        else:
            key = (g, int(rows[f]), int(dims[f]), bool(multi_hot[f]))
        keyed.setdefault(key, []).append(f)
    out = []
    for i, feats in enumerate(keyed.values()):
        f = feats[0]
        cands = tuple(candidates(int(dims[f]), bool(multi_hot[f]), templates))
        if not cands:
            tmpl = ", ".join(templates) if templates else "the default templates"
            raise ValueError(
                f"feature {names[f]!r} (dim {dims[f]}, {'multi' if multi_hot[f] else 'one'}-hot) "
                f"has no valid candidate schedule among {tmpl}"
            )
        out.append(
            Cluster(
                index=i,
                features=tuple(feats),
                names=tuple(names[j] for j in feats),
                dim=int(dims[f]),
                rows=int(rows[f]),
                group=groups[f],
                multi_hot=bool(multi_hot[f]),
                candidates=cands,
            )
        )
    return out


def clusters_of(workload, *, templates=None, merge: bool = True) -> list[Cluster]:
    """:func:`cluster_features` of a rec-common workload."""
    feats = workload.features
    return cluster_features(
        [f.dim for f in feats],
        [f.rows for f in feats],
        [f.pooling.kind != "one-hot" for f in feats],
        [f.group for f in feats],
        [f.name for f in feats],
        templates=templates,
        merge=merge,
    )


# ---------------------------------------------------------------------------- data
def feature_batches(batches: Sequence[Packed], f: int) -> list[Packed]:
    """Feature ``f`` of every batch as a one-feature :class:`Packed` (offsets from 0)."""
    out = []
    for p in batches:
        ids, offs = p.feature(f)
        out.append(Packed(ids, offs - offs[0], p.batch_size, None))
    return out


def digest(batches: Sequence[Packed]) -> str:
    """Content hash of packed batches (the cache's notion of 'the same data')."""
    h = hashlib.blake2b(digest_size=16)
    for p in batches:
        h.update(str(p.batch_size).encode())
        for t in (p.offsets, p.indices):
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


@dataclass
class LocalJob:
    """One local-stage measurement: a cluster's candidates at occupancy ``o`` (``None``:
    the naive ablation, each candidate alone, no occupancy control)."""

    cluster: Cluster
    occupancy: int | None
    batches: list[Packed]
    data_key: str


# ---------------------------------------------------------------------------- cost sources
class CostSource:
    """Where the tuner's numbers come from (lower is better; ``inf``: could not run).

    Subclasses implement :meth:`local_costs` and :meth:`global_cost`; ``prepare_*`` let a
    source compile ahead, in parallel; ``stats`` counts its compiles and their time."""

    name = "cost"

    def __init__(self) -> None:
        self.stats = {"compiles": 0, "compile_s": 0.0, "runs": 0}

    def fingerprint(self) -> str:
        """Identifies the measurements (device, compiler, settings) in the cache key."""
        return self.name

    def occupancies(self) -> list[int]:
        return list(range(1, MAX_OCCUPANCY + 1))

    def prepare_local(self, jobs: Sequence[LocalJob]) -> None:
        """Build what ``jobs`` will need (default: nothing)."""

    def prepare_global(self, plans: Sequence[Plan], dispatch: str = "if-else") -> None:
        """Build the fused kernels of ``plans`` (default: nothing)."""

    def prepare_alone(self, jobs: Sequence[LocalJob]) -> None:
        """Build what :meth:`alone_costs` will need for ``jobs`` (default: nothing)."""

    def local_costs(self, job: LocalJob) -> list[float]:
        raise NotImplementedError

    def alone_costs(self, job: LocalJob) -> list[float]:
        """Naive ablation: each candidate alone (default: the local costs at no occupancy)."""
        return self.local_costs(job)

    def global_cost(
        self,
        plan: Plan,
        batches: Sequence[Packed],
        *,
        dispatch: str = "if-else",
        binding: str = "runtime",
    ) -> float:
        raise NotImplementedError


class CallableCost(CostSource):
    """A cost source from two functions: ``local(cluster, occupancy, batches) -> [cost per
    candidate]`` and ``global_(plan, batches, dispatch, binding) -> cost``."""

    def __init__(
        self,
        local: Callable[[Cluster, int | None, Sequence[Packed]], Sequence[float]],
        global_: Callable[..., float] | None = None,
        name: str = "callable",
        occupancies: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        self._local, self._global, self.name = local, global_, name
        self._occ = list(occupancies) if occupancies else None

    def occupancies(self) -> list[int]:
        return self._occ or super().occupancies()

    def local_costs(self, job: LocalJob) -> list[float]:
        self.stats["runs"] += 1
        return [float(c) for c in self._local(job.cluster, job.occupancy, job.batches)]

    def global_cost(self, plan, batches, *, dispatch="if-else", binding="runtime") -> float:
        self.stats["runs"] += 1
        if self._global is None:
            return 0.0
        return float(self._global(plan, batches, dispatch=dispatch, binding=binding))


class AnalyticCost(CostSource):
    """A deterministic model of the fused kernel for tuning without a GPU (a proxy:
    it ranks by memory traffic, lane use, serial latency and block count, not measured).

    A block's time is ``latency * serial steps + bytes / (bandwidth per SM / o)``; the local
    score sums it over a candidate's blocks (the probe's resource time); the global cost
    packs all blocks onto ``sm_count * o`` slots (waves), plus a dispatch term."""

    name = "analytic"

    def __init__(
        self,
        sm_count: int = DEFAULT_SM_COUNT,
        bytes_per_ns_per_sm: float = 25.0,
        latency_ns: float = 600.0,
        block_overhead_ns: float = 300.0,
    ) -> None:
        super().__init__()
        self.sm_count = sm_count
        self.bw = bytes_per_ns_per_sm
        self.lat = latency_ns
        self.ovh = block_overhead_ns

    def fingerprint(self) -> str:
        return f"analytic-{self.sm_count}-{self.bw}-{self.lat}-{self.ovh}"

    def _block_times(self, s: Schedule, dim: int, st: _Lens, o: int) -> np.ndarray:
        """Modelled duration (ns) of each block of schedule ``s`` on one batch."""
        p = s.params
        b, nnz = st.b, st.nnz
        maxc = self.sm_count * o
        if b == 0 or nnz == 0:
            return np.full(s.work(dim, [0] * b, maxc)["blocks"], self.ovh)
        per_ns = self.bw / o  # bytes/ns a block gets while o share an SM
        t = s.template
        v = p.get("v", p.get("unroll", p.get("scan_dim", 1)))
        vec_eff = {1: 0.45, 2: 0.75}.get(math.gcd(v, 4), 1.0)
        if t in ("WarpPerSample", "OneBlockMultiSample"):
            x, y = p["x"], p.get("y", 1)
            bmax, bsum = st.blocked(BLOCK_THREADS // (x * y))
            lanes = min(1.0, dim / (x * v))  # idle lanes when x*v > dim
            nch = -(-dim // (x * v))
            # the longest bag sets the block's serial chain; unrolled items overlap latency
            steps = np.ceil(bmax / (y * p["items"])) * nch
            bytes_ = bsum * dim * 4 / (vec_eff * lanes)
            reduce = 0.0 if t == "WarpPerSample" else math.log2(max(y, 1)) * 40.0
            return self.ovh + steps * self.lat / min(p["items"], 4) + bytes_ / per_ns + reduce
        if t in ("OneHot", "OneHotMultiBlock"):
            tiles = -(-b // 256)
            nb = 1 if t == "OneHot" else min(tiles, maxc)
            per_tile = nnz / tiles * dim * 4 / vec_eff
            steps_tile = math.ceil(256 * dim / p["unroll"] / BLOCK_THREADS)
            tile_t = steps_tile * self.lat / 2 + per_tile / per_ns
            return self.ovh + _spread(tiles, nb) * tile_t
        tl = s.lookups_per_tile(dim)
        tiles = int(np.ceil(st.lens / tl).sum()) if t == "MultiBlockPerSample" else -(-nnz // tl)
        nb = min(tiles, maxc)
        per_tile_bytes = min(tl, nnz) * dim * 4 / vec_eff
        serial = p["items"] + (math.log2(BLOCK_THREADS) if t == "ReduceByKey" else 2)
        tile_t = serial * self.lat / 2 + per_tile_bytes / per_ns
        return self.ovh + _spread(tiles, nb) * tile_t

    def local_costs(self, job: LocalJob) -> list[float]:
        self.stats["runs"] += 1
        o = job.occupancy or MAX_OCCUPANCY
        lens = [_Lens(p) for p in job.batches]
        d = job.cluster.dim
        return [
            float(sum(self._block_times(s, d, ln, o).sum() for ln in lens))
            for s in job.cluster.candidates
        ]

    def global_cost(self, plan, batches, *, dispatch="if-else", binding="runtime") -> float:
        self.stats["runs"] += 1
        o = plan.occupancy or MAX_OCCUPANCY
        slots = self.sm_count * o
        fn = len(plan.distinct())
        disp = (40.0 if dispatch == "jump-table" else 2.0 * math.log2(fn + 1)) * (o / 4)
        total = 0.0
        static = _static_batch(batches, binding) if binding != "runtime" else None
        for p in batches:
            times = []
            for f, (s, d) in enumerate(zip(plan.schedules, plan.dims)):
                bt = self._block_times(s, d, _Lens(p, f), o)
                if static is not None:  # static binding: blocks fixed by a typical batch
                    want = s.work(d, [1] * static, slots)["blocks"]
                    if want > bt.size:  # idle blocks still cost their launch
                        bt = np.concatenate([bt, np.full(want - bt.size, self.ovh)])
                times.append(bt + disp)
            allt = np.concatenate(times)
            waves = allt.size / slots
            total += max(float(allt.sum()) / slots, float(allt.max())) * (1 + 0.05 * (waves > 1))
        return total


def _spread(tiles: int, blocks: int) -> np.ndarray:
    """Tiles per block when ``blocks`` stride over ``tiles``."""
    counts = np.full(blocks, tiles // blocks, dtype=np.float64)
    counts[: tiles % blocks] += 1
    return counts


class _Lens:
    """One feature's bag lengths in one batch, with per-block max/sum caches."""

    def __init__(self, p: Packed, f: int = 0) -> None:
        _, offs = p.feature(f)
        o = offs.to(torch.int64).numpy()
        self.lens = (o[1:] - o[:-1]).astype(np.float64)
        self.b = self.lens.size
        self.nnz = int(self.lens.sum())
        self._blk: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def blocked(self, spb: int) -> tuple[np.ndarray, np.ndarray]:
        r = self._blk.get(spb)
        if r is None:
            pad = (-self.b) % spb
            lp = np.concatenate([self.lens, np.zeros(pad)]).reshape(-1, spb)
            r = self._blk[spb] = (lp.max(1), lp.sum(1))
        return r


def _static_batch(batches: Sequence[Packed], binding: str) -> int:
    sizes = [p.batch_size for p in batches]
    if binding == "static-max":
        return max(sizes)
    if binding == "static-mean":
        return round(sum(sizes) / len(sizes))
    raise ValueError(f"binding: expected runtime, static-mean or static-max, got {binding!r}")


# ---------------------------------------------------------------------------- cache
class TuneCache:
    """Scores on disk, one small JSON file per key (atomic writes; safe to share)."""

    def __init__(self, root: str | os.PathLike | None = None) -> None:
        if root is None:
            env = os.environ.get("RECFLEX_CACHE")
            base = Path(env).expanduser() if env else Path.home() / ".cache" / "recflex"
            root = base / "tune"
        self.root = Path(root)
        self.hits = 0
        self.misses = 0

    def _path(self, key: dict) -> Path:
        text = json.dumps({"v": TUNER_VERSION, **key}, sort_keys=True)
        return self.root / (hashlib.sha256(text.encode()).hexdigest() + ".json")

    def get(self, key: dict):
        path = self._path(key)
        try:
            value = json.loads(path.read_text())["value"]
        except (OSError, ValueError, KeyError):
            self.misses += 1
            return None
        self.hits += 1
        return value

    def put(self, key: dict, value) -> None:
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"key": key, "value": value}))
            os.replace(tmp, path)
        except OSError:
            pass  # a read-only cache only costs re-measuring


class NoCache(TuneCache):
    def __init__(self) -> None:
        super().__init__("/nonexistent")

    def get(self, key):
        self.misses += 1
        return None

    def put(self, key, value) -> None:
        return None


def _plan_key(plan: Plan) -> list:
    return [
        plan.occupancy,
        [[repr(s), d, r] for s, d, r in zip(plan.schedules, plan.dims, plan.rows)],
    ]


# ---------------------------------------------------------------------------- the tuner
@dataclass
class TuneResult:
    """The tuned plan and the tuning report (JSON-friendly)."""

    plan: Plan
    report: dict = field(default_factory=dict)
    best: dict = field(default_factory=dict)  # (cluster index, o) -> Schedule
    clusters: list = field(default_factory=list)

    def save(self, plan_path: str | os.PathLike, report_path: str | os.PathLike | None = None):
        p = self.plan.save(plan_path)
        r = Path(report_path) if report_path else p.with_suffix(".report.json")
        r.parent.mkdir(parents=True, exist_ok=True)
        r.write_text(json.dumps(self.report, indent=1) + "\n")
        return p, r


def _score_row(job: LocalJob, costs: Sequence[float]) -> dict:
    """A finished local job, JSON-friendly (``None``: the candidate could not run)."""
    return {
        "cluster": job.cluster.index,
        "occupancy": job.occupancy,
        "scores": [c if math.isfinite(c) else None for c in costs],
    }


def _argmin(costs: Sequence[float]) -> int | None:
    best, bi = INF, None
    for i, c in enumerate(costs):
        if c < best:
            best, bi = c, i
    return bi


def _as_packed(batches) -> list[Packed]:
    return [b if isinstance(b, Packed) else pack(b) for b in batches]


def tuning_batches(workload, num: int, seed: int | str | None = None) -> list[Packed]:
    """``num`` packed batches of the workload's tuning data (its ``tune`` seed)."""
    from recflex.models import seed_for

    seed = seed_for(workload, "tune") if seed is None else seed
    return [pack(b) for b in workload.batches(num, seed=seed)]


class Tuner:
    """The two-stage tuner (see the module docstring); one instance tunes many models."""

    def __init__(
        self,
        cost: CostSource,
        *,
        cache: TuneCache | None = None,
        occupancies: Sequence[int] | None = None,
        templates: Sequence[str] | None = None,
        merge: bool = True,
        progress: bool = True,
        local_batches: int | None = None,
        log: Callable[[str], None] | None = None,
        checkpoint: Callable[[dict], None] | None = None,
        checkpoint_every_s: float = 15.0,
        local_budget_s: float | None = None,
    ) -> None:
        if not isinstance(cost, CostSource):
            raise TypeError(f"cost: expected a recflex.tuner.CostSource, got {type(cost).__name__}")
        self.cost = cost
        self.cache = cache if cache is not None else TuneCache()
        occ = list(occupancies) if occupancies else cost.occupancies()
        bad = [o for o in occ if not (isinstance(o, int) and 1 <= o <= MAX_OCCUPANCY)]
        if bad or not occ:
            raise ValueError(
                f"occupancies: expected blocks per SM in 1..{MAX_OCCUPANCY}, got {occ}"
            )
        self.occupancies = sorted(set(occ))
        # the local stage measures occupancies in the order given (a budget cuts the tail)
        self.occupancy_order = list(dict.fromkeys(occ))
        self.templates = templates
        self.merge = merge
        self.progress = progress
        self.local_batches = local_batches
        self.log = log
        self.checkpoint = checkpoint
        self.checkpoint_every_s = checkpoint_every_s
        self.local_budget_s = local_budget_s
        self.notes: list[str] = []  # global-stage plans that failed, skipped occupancies
        self.partial: dict = {}  # what the current tune has finished (for checkpoints)
        self._last_checkpoint = 0.0

    def _log(self, msg: str) -> None:
        if self.log is not None:
            self.log(msg)

    def _save_partial(self, force: bool = False) -> None:
        """Hand the finished part of the current tune to ``checkpoint`` (throttled)."""
        if self.checkpoint is None:
            return
        now = time.perf_counter()
        if force or now - self._last_checkpoint >= self.checkpoint_every_s:
            self._last_checkpoint = now
            self.checkpoint(dict(self.partial))

    def cost_stats(self) -> dict:
        """The cost source's counters now (compiles, compile seconds, runs)."""
        return {k: self.cost.stats.get(k, 0) for k in ("compiles", "compile_s", "runs")}

    def stage_stats(self, before: dict, seconds: float, **extra) -> dict:
        """A stage's seconds and the counters it added since ``before`` (:meth:`cost_stats`)."""
        now = self.cost_stats()
        return {
            "s": round(seconds, 3),
            "compiles": int(now["compiles"] - before["compiles"]),
            "compile_s": round(float(now["compile_s"] - before["compile_s"]), 3),
            "runs": int(now["runs"] - before["runs"]),
            **extra,
        }

    # ------------------------------------------------------------------ pieces
    def _local_key(self, job: LocalJob, kind: str = "local") -> dict:
        c = job.cluster
        return {
            "kind": kind,
            "cost": self.cost.fingerprint(),
            "dim": c.dim,
            "rows": c.rows,
            "occupancy": job.occupancy,
            "candidates": [repr(s) for s in c.candidates],
            "data": job.data_key,
        }

    def _global_key(self, plan: Plan, data_key: str, dispatch: str, binding: str) -> dict:
        return {
            "kind": "global",
            "cost": self.cost.fingerprint(),
            "plan": _plan_key(plan),
            "dispatch": dispatch,
            "binding": binding,
            "data": data_key,
        }

    def local_jobs(
        self, clusters: Sequence[Cluster], batches: Sequence[Packed], occupancies
    ) -> list[LocalJob]:
        nb = self.local_batches or len(batches)
        jobs = []
        for c in clusters:
            fb = feature_batches(batches[:nb], c.rep)
            key = digest(fb)
            jobs.extend(LocalJob(c, o, fb, key) for o in occupancies)
        return jobs

    def run_local(self, jobs: Sequence[LocalJob], kind: str = "local") -> list[list[float]]:
        """Scores of every job (cached ones from disk; the rest built ahead, then run).

        Every finished job's scores go into ``self.partial["local_scores"]`` and to the
        checkpoint (throttled), so a run killed midway leaves them behind."""
        out: list[list[float] | None] = []
        todo = []
        for j in jobs:
            v = self.cache.get(self._local_key(j, kind))
            if v is not None and len(v) == len(j.cluster.candidates):
                out.append([float(x) for x in v])
            else:
                out.append(None)
                todo.append(j)
        done_rows = self.partial.setdefault(f"{kind}_scores", [])
        for o, j in zip(out, jobs):
            if o is not None:
                done_rows.append(_score_row(j, o))
        if todo:
            occ = sorted({j.occupancy or 0 for j in todo})
            st0, t0 = self.cost_stats(), time.perf_counter()
            self._log(f"{kind} stage o={occ}: preparing {len(todo)} probes")
            if kind == "local":
                self.cost.prepare_local(todo)
            else:  # every candidate's one-feature kernel, in one parallel build
                self.cost.prepare_alone(todo)
            prep = self.stage_stats(st0, time.perf_counter() - t0)
            self._log(
                f"{kind} stage o={occ}: built {prep['compiles']} kernels in {prep['s']:.1f} s "
                f"({len(jobs) - len(todo)} cached)"
            )
            it = tqdm(todo, desc=f"{kind} stage", unit="probe", disable=not self.progress)
            results = {}
            t1 = last = time.perf_counter()
            fn = self.cost.local_costs if kind == "local" else self.cost.alone_costs
            for n, j in enumerate(it, 1):
                costs = [float(c) for c in fn(j)]
                if len(costs) != len(j.cluster.candidates):
                    raise RuntimeError(
                        f"cost source {self.cost.name}: {len(costs)} costs for "
                        f"{len(j.cluster.candidates)} candidates of {j.cluster.describe()}"
                    )
                stored = [c if math.isfinite(c) else None for c in costs]
                self.cache.put(self._local_key(j, kind), stored)
                results[id(j)] = costs
                done_rows.append(_score_row(j, costs))
                now = time.perf_counter()
                if now - last >= 30.0 or n == len(todo):
                    last = now
                    self._log(f"{kind} stage o={occ}: {n}/{len(todo)} probes in {now - t1:.1f} s")
                self._save_partial()
            st = self.stage_stats(st0, time.perf_counter() - t0, probe_s=round(now - t1, 3))
            self.partial.setdefault("stages", {}).setdefault(kind, []).append(
                {"occupancies": occ, "jobs": len(todo), "cached": len(jobs) - len(todo), **st}
            )
            self._save_partial(force=True)
            out = [o if o is not None else results[id(j)] for o, j in zip(out, jobs)]
        return [[INF if c is None else c for c in o] for o in out]

    def global_costs(
        self,
        plans: Sequence[Plan],
        batches: Sequence[Packed],
        data_key: str,
        *,
        dispatch: str = "if-else",
        binding: str = "runtime",
        desc: str = "global stage",
    ) -> list[float]:
        vals: list[float | None] = [
            self.cache.get(self._global_key(p, data_key, dispatch, binding)) for p in plans
        ]
        miss = [p for p, v in zip(plans, vals) if v is None]
        st0, t0 = self.cost_stats(), time.perf_counter()
        if miss:
            self._log(f"{desc}: building {len(miss)} kernels")
            self.cost.prepare_global(miss, dispatch)
            self._log(f"{desc}: built in {time.perf_counter() - t0:.1f} s")
        out = []
        for p, v in tqdm(
            list(zip(plans, vals)), desc=desc, unit="plan", disable=not self.progress or not miss
        ):
            if v is None:
                try:
                    v = float(self.cost.global_cost(p, batches, dispatch=dispatch, binding=binding))
                except RuntimeError as exc:  # one plan failing to build or run: keep the others
                    if getattr(exc, "fatal", False):
                        raise
                    self.notes.append(f"{desc} o={p.occupancy}: {exc}"[:500])
                    self._log(f"{desc} o={p.occupancy}: failed: {exc}"[:300])
                    v = INF
                self.cache.put(
                    self._global_key(p, data_key, dispatch, binding),
                    v if math.isfinite(v) else None,
                )
            out.append(INF if v is None else float(v))
        if miss:
            st = self.stage_stats(st0, time.perf_counter() - t0)
            self._log(
                f"{desc}: {len(miss)} plans in {st['s']:.1f} s ({st['compiles']} compiles, "
                f"{st['compile_s']:.1f} s compiling)"
            )
            self.partial.setdefault("stages", {}).setdefault("global", []).append(
                {"what": desc, "plans": len(miss), **st}
            )
        return out

    @staticmethod
    def fuse(
        clusters: Sequence[Cluster], winners: dict[int, Schedule], workload_shape, occupancy
    ) -> Plan:
        dims, rows, names = workload_shape
        scheds: list[Schedule | None] = [None] * len(dims)
        for c in clusters:
            for f in c.features:
                scheds[f] = winners[c.index]
        return Plan(tuple(scheds), dims, rows, occupancy, names)

    # ------------------------------------------------------------------ whole tune
    def tune(self, workload, batches, *, model: str | None = None) -> TuneResult:
        """Tune ``workload`` on ``batches`` (packed or jagged, or a count of tuning batches)."""
        t0 = time.perf_counter()
        st0 = dict(self.cost.stats)
        h0, m0 = self.cache.hits, self.cache.misses
        if isinstance(batches, int):
            batches = tuning_batches(workload, batches)
        batches = _as_packed(batches)
        if not batches:
            raise ValueError("batches: the tuner needs at least one tuning batch")
        nf = workload.num_features
        if batches[0].num_features != nf:
            raise ValueError(f"batches have {batches[0].num_features} features, the model {nf}")
        clusters = clusters_of(workload, templates=self.templates, merge=self.merge)
        shape = (workload.dims, workload.table_sizes, workload.keys)
        self.partial = {
            "model": model or workload.name,
            "cost_source": self.cost.fingerprint(),
            "stage": "local",
            "features": nf,
            "clusters": len(clusters),
            "candidates": sum(len(c.candidates) for c in clusters),
            "tuning_batches": len(batches),
            "occupancies_requested": self.occupancy_order,
        }
        self._save_partial(force=True)
        t_local = time.perf_counter()
        jobs: list[LocalJob] = []
        scores: list[list[float]] = []
        measured: list[int] = []
        group_s: list[float] = []
        for o in self.occupancy_order:  # one occupancy at a time: a budget cuts the tail
            spent = time.perf_counter() - t_local
            if (
                measured
                and self.local_budget_s is not None
                and spent + max(group_s) > self.local_budget_s
            ):
                msg = (
                    f"local stage: skipped o={o} ({spent:.0f} s spent, the last occupancy took "
                    f"{group_s[-1]:.0f} s, budget {self.local_budget_s:.0f} s)"
                )
                self.notes.append(msg)
                self._log(msg)
                continue
            tg = time.perf_counter()
            js = self.local_jobs(clusters, batches, [o])
            scores.extend(self.run_local(js))
            jobs.extend(js)
            measured.append(o)
            group_s.append(time.perf_counter() - tg)
        t_local = time.perf_counter() - t_local
        occupancies = sorted(measured)
        self.partial["stage"] = "global"
        self._save_partial(force=True)
        best: dict[tuple[int, int], Schedule] = {}
        local_rows = []
        by_cluster: dict[int, dict[int, list[float]]] = {}
        for j, sc in zip(jobs, scores):
            c = j.cluster
            i = _argmin(sc)
            if i is None:
                raise RuntimeError(
                    f"{c.describe()}: no candidate schedule could run at occupancy "
                    f"{j.occupancy} (all {len(sc)} failed to build or launch)"
                )
            best[(c.index, j.occupancy)] = c.candidates[i]
            by_cluster.setdefault(c.index, {})[j.occupancy] = sc
            fin = [x for x in sc if math.isfinite(x)]
            local_rows.append(
                {
                    "cluster": c.index,
                    "occupancy": j.occupancy,
                    "best": repr(c.candidates[i]),
                    "best_cost": sc[i],
                    "worst_cost": max(fin),
                    "failed": len(sc) - len(fin),
                }
            )
        plans = [
            self.fuse(clusters, {c.index: best[(c.index, o)] for c in clusters}, shape, o)
            for o in occupancies
        ]
        data_key = digest(batches)
        t_glob = time.perf_counter()
        gcost = self.global_costs(plans, batches, data_key)
        t_glob = time.perf_counter() - t_glob
        k = _argmin(gcost)
        if k is None:
            raise RuntimeError(
                "global stage: no occupancy produced a plan that could run: "
                + "; ".join(self.notes[-3:])
            )
        o_star = occupancies[k]
        wall = time.perf_counter() - t0
        stats = {key: self.cost.stats[key] - st0.get(key, 0) for key in self.cost.stats}
        report = {
            "model": model or workload.name,
            "cost_source": self.cost.fingerprint(),
            "features": nf,
            "clusters": len(clusters),
            "candidates": sum(len(c.candidates) for c in clusters),
            "tuning_batches": len(batches),
            "local_batches": len(jobs[0].batches) if jobs else 0,
            "occupancies": occupancies,
            "global_curve": {
                str(o): (g if math.isfinite(g) else None) for o, g in zip(occupancies, gcost)
            },
            "occupancy": o_star,
            "cost": gcost[k],
            "wall_s": round(wall, 3),
            "local_s": round(t_local, 3),
            "global_s": round(t_glob, 3),
            "compiles": int(stats.get("compiles", 0)),
            "compile_s": round(float(stats.get("compile_s", 0.0)), 3),
            "runs": int(stats.get("runs", 0)),
            "cache_hits": self.cache.hits - h0,
            "cache_misses": self.cache.misses - m0,
            "stages": self.partial.get("stages", {}),
            "tuner_notes": list(self.notes),
            "local": local_rows,
            "cluster_info": [
                {
                    "cluster": c.index,
                    "features": list(c.names),
                    "dim": c.dim,
                    "rows": c.rows,
                    "group": c.group,
                    "multi_hot": c.multi_hot,
                    "candidates": [repr(s) for s in c.candidates],
                    # the opportunity plot: every candidate's score at the chosen occupancy
                    "scores_at_optimum": [
                        x if math.isfinite(x) else None for x in by_cluster[c.index][o_star]
                    ],
                }
                for c in clusters
            ],
        }
        plan = plans[k]
        plan = Plan(
            plan.schedules,
            plan.dims,
            plan.rows,
            plan.occupancy,
            plan.names,
            {"origin": "tuned", "cost_source": self.cost.fingerprint(), "model": report["model"]},
        )
        return TuneResult(plan, report, best, clusters)


def tune(
    workload,
    *,
    cost: CostSource,
    batches=128,
    occupancies: Sequence[int] | None = None,
    cache: TuneCache | None = None,
    progress: bool = True,
    **kwargs,
) -> TuneResult:
    """Tune ``workload`` with ``cost`` (see :class:`Tuner` for the other keywords);
    ``batches``: a count of tuning batches (the workload's ``tune`` seed) or the batches;
    ``cache``: default the disk cache under ``$RECFLEX_CACHE/tune``, :class:`NoCache` for none."""
    tuner = Tuner(
        cost,
        cache=cache,
        occupancies=occupancies,
        progress=progress,
        **kwargs,
    )
    return tuner.tune(workload, batches)
