"""The oracle's decisions, as a pure function of the run's batches: what each trainer fetches,
keeps, evicts, writes back and synchronizes, and how many cache slots that takes.

Rows are numbered globally: row ``r = table_offset[f] + id``. A run of K steps is cut into
cleanup rounds of C steps (C = max(1, int(cleanup_proportion * L))). At the start of round g
(before step g*C) every trainer, in this order, frees the rows of ``evict`` (sending those of
``write_back`` to the embedding servers), places the rows it fetched for this round, and issues
the fetch of ``fetch``. In the Bagpipe plan that fetch is for round g+1, so it overlaps the C
steps of round g; the servers answer it once every trainer has written back rounds <= g-1.

Bagpipe's rules (mode ``"bagpipe"``), for consecutive uses p < k of a row:

* the row stays cached from p to k when ``k - p <= L`` (the lookahead window), or when k falls
  in the two rounds after the round that could evict it (its fetch would be issued before the
  eviction); otherwise it is evicted at round e(p) and fetched again for round(k);
* e(p) = ceil((p + 2) / C): the first round boundary after p's delayed ("sync later") gradient
  has been applied (it lands at the end of step p + 1);
* a row fetched for step k, used there by one trainer only and not kept for a later use, is
  **private**: only that trainer fetches it, nobody all-reduces it, it leaves at
  ceil((k + 1) / C) and its owner writes it back;
* every other row is replicated on all trainers (the same value everywhere, kept so by the
  all-reduce); its write-back is split in N contiguous chunks of the sorted evicted rows;
* the replicated rows of step k are all-reduced **now** (blocking, before step k+1) when step
  k+1 uses them, **later** (asynchronously, applied with step k+1's update) otherwise.

Every decision about step k looks at most ``max(L, 2C) + 2C`` steps ahead, so a streaming
oracle with that window would decide the same; this module sees the whole run at once, which
is how the oracle knows the peak number of resident rows before training starts.

The baselines are plans too: ``"ps"`` (no cache: fetch a step's rows before it, write them back
after, all-reduce every row of the step) and ``"static"`` (FAE-style: hot rows cached for the
whole run on every trainer, the others handled as in ``"ps"``).

>>> import numpy as np
>>> steps = [[np.array([1, 2]), np.array([2, 3])], [np.array([2]), np.array([4])]]
>>> p = make_plan(steps, num_rows=8, lookahead=1, cleanup_interval=1)
>>> p.initial_fetch[0].tolist(), p.initial_fetch[1].tolist()   # row 1 and 3 are private
([1, 2], [2, 3])
>>> p.steps[0].sync_now.tolist(), p.steps[0].sync_later.tolist()
([2], [])
"""

from __future__ import annotations

import itertools
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from bagpipe.errors import CacheTooSmall

MODES = ("bagpipe", "ps", "static")
NEVER = np.int64(1) << np.int64(60)  # "no next use": larger than any step number
_EMPTY = np.zeros(0, dtype=np.int64)


@dataclass(frozen=True)
class StepPlan:
    """What every trainer all-reduces after step ``index`` (sorted global rows)."""

    index: int
    sync_now: np.ndarray
    sync_later: np.ndarray
    num_private: int = 0  # rows of this step nobody all-reduces (statistics)


@dataclass(frozen=True)
class TrainerRound:
    """One trainer's cache operations at one round boundary (sorted global rows)."""

    evict: np.ndarray
    write_back: np.ndarray
    fetch: np.ndarray


@dataclass(frozen=True)
class Round:
    """Round ``index``: steps ``first_step .. last_step - 1`` and each trainer's operations."""

    index: int
    first_step: int
    last_step: int
    trainers: tuple[TrainerRound, ...]
    fetch_ahead: bool  # True: ``fetch`` is for round index+1; False: for this round, now
    wait_round: int  # servers answer ``fetch`` after all write-backs of rounds <= wait_round


@dataclass
class Plan:
    """A whole run's decisions; see the module docstring for their meaning."""

    mode: str
    num_trainers: int
    num_rows: int
    lookahead: int
    cleanup_interval: int
    steps: list[StepPlan]
    rounds: list[Round]
    initial_fetch: tuple[np.ndarray, ...]
    final: tuple[TrainerRound, ...]
    peak_resident: tuple[int, ...]
    peak_round: tuple[int, ...]
    seconds: float = 0.0  # time spent deciding
    stats: dict = field(default_factory=dict)

    @property
    def num_steps(self) -> int:
        return len(self.steps)

    def round_of(self, step: int) -> int:
        return step // self.cleanup_interval

    def check_capacity(self, cache_size: int) -> None:
        """Raise :class:`CacheTooSmall` (with the size needed) if a trainer exceeds it."""
        t = int(np.argmax(self.peak_resident))
        need = self.peak_resident[t]
        if need > cache_size:
            raise CacheTooSmall(
                need, cache_size, t, self.peak_round[t],
                f"mode {self.mode}, lookahead {self.lookahead}, cleanup every "
                f"{self.cleanup_interval} steps",
            )  # fmt: skip


def cleanup_interval(lookahead: int, cleanup_proportion: float) -> int:
    """C = max(1, int(proportion * L)), as the reference computes it.

    >>> cleanup_interval(200, 0.25), cleanup_interval(5, 0.3), cleanup_interval(1, 1.0)
    (50, 1, 1)
    """
    return max(1, int(cleanup_proportion * lookahead))


def _union(per_trainer: Sequence[np.ndarray]):
    """Union of the trainers' sorted rows, how many trainers use each, and the lowest such
    trainer. A stable argsort of the concatenated sorted runs is a merge (timsort)."""
    if not per_trainer:
        return _EMPTY, _EMPTY, _EMPTY
    cat = np.concatenate(per_trainer).astype(np.int64, copy=False)
    if len(cat) == 0:
        return _EMPTY, _EMPTY, _EMPTY
    order = np.argsort(cat, kind="stable")
    s = cat[order]
    starts = np.flatnonzero(_run_starts(s))
    counts = np.diff(np.append(starts, len(s)))
    ends = np.cumsum([len(a) for a in per_trainer])
    owner = np.searchsorted(ends, order[starts], side="right")  # the first (lowest) trainer
    return s[starts], counts, owner


def _unions(steps) -> list:
    """``_union`` of every step, on a few threads (the sorts release the GIL)."""
    if len(steps) < 16:
        return [_union(s) for s in steps]
    return _map_threads(_union, steps, _worker_count())


def _run_starts(a: np.ndarray) -> np.ndarray:
    """Mask of the first element of each run of equal values in sorted, non-empty ``a``."""
    keep = np.empty(len(a), dtype=bool)
    keep[0] = True
    np.not_equal(a[1:], a[:-1], out=keep[1:])
    return keep


def sorted_unique(a: np.ndarray) -> np.ndarray:
    """Sorted distinct values of ``a`` (int64), by sort + neighbour compare.

    numpy >= 2.3's ``np.unique`` hashes integers, which is ~50x slower than sorting for the
    tens of millions of row ids a run's rounds hold; this keeps the oracle off the critical path.

    >>> sorted_unique(np.array([3, 1, 3, 2])).tolist()
    [1, 2, 3]
    """
    a = np.sort(np.asarray(a, dtype=np.int64))
    return a if len(a) < 2 else a[_run_starts(a)]


def _union2(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return sorted_unique(np.concatenate([a, b]))


def _split_chunks(rows: np.ndarray, n: int) -> list[np.ndarray]:
    return [np.ascontiguousarray(c) for c in np.array_split(rows, n)]


def _cat(parts: list[np.ndarray]) -> np.ndarray:
    return sorted_unique(np.concatenate(parts)) if parts else _EMPTY


def make_plan(
    steps: Sequence[Sequence[np.ndarray]],
    num_rows: int,
    lookahead: int,
    cleanup_interval: int,
    mode: str = "bagpipe",
    hot_rows: np.ndarray | None = None,
    check: bool = False,
    shards: int | None = None,
) -> Plan:
    """The plan for ``steps[k][t]`` = sorted unique global rows trainer t reads at step k.

    ``mode`` is ``"bagpipe"``, ``"ps"`` or ``"static"`` (then ``hot_rows`` are cached for the
    whole run). Raises ``ValueError`` for inconsistent inputs. ``check`` re-verifies every
    eviction and placement against the simulated residency (``RuntimeError`` on a planner
    bug); it costs a quarter of the planning time, so the tests use it and the oracle not.
    """
    if mode not in MODES:
        raise ValueError(f"mode: expected one of {MODES}, got {mode!r}")
    if lookahead < 1:
        raise ValueError(f"lookahead: expected >= 1, got {lookahead}")
    if not 1 <= cleanup_interval <= lookahead:
        raise ValueError(
            f"cleanup_interval: expected 1 <= C <= lookahead ({lookahead}), got {cleanup_interval}"
        )
    if not steps:
        raise ValueError("steps: the run has no steps")
    n = len(steps[0])
    if n < 1 or any(len(s) != n for s in steps):
        raise ValueError("steps: every step needs one row array per trainer (same count)")
    for k, s in enumerate(steps):
        for t, a in enumerate(s):
            if len(a) and (a[0] < 0 or a[-1] >= num_rows):
                raise ValueError(f"steps[{k}][{t}]: rows outside 0..{num_rows - 1}")
    t0 = time.perf_counter()
    if mode == "bagpipe":
        plan = _plan_bagpipe(steps, num_rows, n, lookahead, cleanup_interval, check, shards)
    else:
        if mode == "static" and hot_rows is None:
            raise ValueError("mode 'static' needs hot_rows (see choose_hot_rows)")
        hot = sorted_unique(hot_rows) if mode == "static" else _EMPTY
        plan = _plan_per_step(steps, num_rows, n, mode, hot)
    plan.seconds = time.perf_counter() - t0
    return plan


def _worker_count() -> int:
    """Planner threads: one per two cores, at most 8."""
    return max(1, min(8, (os.cpu_count() or 2) // 2))


def _shard_count(num_rows: int) -> int:
    """Row ranges planned in parallel: one per worker thread, one for small tables."""
    return 1 if num_rows < 1_000_000 else _worker_count()


def _map_threads(fn, items: list, workers: int | None = None) -> list:
    """``[fn(x) for x in items]`` on ``workers`` threads (default one per item)."""
    workers = workers or len(items)
    if len(items) <= 1 or workers <= 1:
        return [fn(x) for x in items]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(fn, items))


def _rows_rules(unions, lo: int, hi: int, L: int, C: int) -> list[tuple]:
    """Bagpipe's per-row rules (module docstring) for rows ``lo <= r < hi`` over every step:
    per step ``(fetch_rep, private, private_owner, rep_evict, sync_now, sync_later,
    [number private])``, each sorted by row."""
    K = len(unions)
    sl = []
    for u, counts, owner in unions:
        i, j = np.searchsorted(u, [lo, hi])
        sl.append((u[i:j], counts[i:j], owner[i:j]))
    # next use of each row of each step (backward pass); int32 state over this range only
    nxt = [None] * K
    unseen = np.iinfo(np.int32).max
    seen = np.full(hi - lo, unseen, dtype=np.int32)
    for k in range(K - 1, -1, -1):
        loc = sl[k][0] - lo
        nx = seen[loc].astype(np.int64)
        nx[nx == unseen] = NEVER
        nxt[k] = nx
        seen[loc] = k
    del seen
    last = np.full(hi - lo, -1, dtype=np.int32)  # 2 * last step + (1 if it was private)
    out = []
    for k in range(K):
        u, counts, owner = sl[k]
        loc = u - lo
        code = last[loc].astype(np.int64)  # 2 * previous use + (1 if it was private), or -1
        p = np.where(code < 0, -1, code >> 1)
        e_p = np.where((code & 1) == 1, -(-(p + 1) // C), -(-(p + 2) // C))
        fetch = (p < 0) | (((k - p) > L) & (k >= (e_p + 2) * C))
        nx = nxt[k]
        e_priv, e_rep = -(-(k + 1) // C), -(-(k + 2) // C)
        private = fetch & (counts == 1) & ((nx - k) > L) & (nx >= (e_priv + 2) * C)
        rep_evict = ~private & ((nx - k) > L) & (nx >= (e_rep + 2) * C)
        rep = ~private
        now = rep & (nx == k + 1)
        out.append((u[fetch & ~private], u[private], owner[private], u[rep_evict], u[now],
                    u[rep & ~now], np.array([private.sum()], dtype=np.int64)))  # fmt: skip
        last[loc] = 2 * k + private
    return out


def _plan_bagpipe(
    steps, num_rows: int, n: int, L: int, C: int, check: bool, shards: int | None = None
) -> Plan:
    K = len(steps)
    G = math.ceil(K / C)
    unions = _unions(steps)
    # the per-row rules touch each row's own history only, so row ranges are planned apart,
    # on threads (numpy releases the GIL in the gathers and masks), and joined per step
    count = shards or _shard_count(num_rows)
    bounds = np.linspace(0, num_rows, count + 1).astype(np.int64)
    parts = _map_threads(lambda lo_hi: _rows_rules(unions, lo_hi[0], lo_hi[1], L, C),
                         list(itertools.pairwise(bounds)))  # fmt: skip
    ev_rep: dict[int, list] = {}
    ev_priv: dict[int, list] = {}  # round -> list of (rows, owners)
    fe_rep: dict[int, list] = {}
    fe_priv: dict[int, list] = {}
    step_plans = []
    for k in range(K):
        fetch_rep, priv, priv_owner, rep_evict, now, later, n_priv = (
            _EMPTY if len(parts) == 0 else np.concatenate([p[k][i] for p in parts])
            for i in range(7)
        )
        e_priv, e_rep = -(-(k + 1) // C), -(-(k + 2) // C)
        g = k // C
        fe_rep.setdefault(g, []).append(fetch_rep)
        fe_priv.setdefault(g, []).append((priv, priv_owner))
        ev_rep.setdefault(e_rep, []).append(rep_evict)
        ev_priv.setdefault(e_priv, []).append((priv, priv_owner))
        step_plans.append(StepPlan(k, now, later, int(n_priv.sum())))

    def per_trainer(parts_rep, parts_priv):
        rep = _cat(parts_rep)
        out = []
        for t in range(n):
            mine = [r[o == t] for r, o in parts_priv]
            out.append(_union2(rep, _cat(mine)) if mine else rep)
        return rep, out

    # simulate residency round by round: evict, then place this round's fetch
    resident = np.zeros((n, num_rows), dtype=bool)
    count = np.zeros(n, dtype=np.int64)
    peak = np.zeros(n, dtype=np.int64)
    peak_round = np.zeros(n, dtype=np.int64)
    _, fetches = per_trainer(fe_rep.get(0, []), fe_priv.get(0, []))
    initial = tuple(fetches)
    rounds = []
    fetched_rows = np.zeros(n, dtype=np.int64)
    for g in range(G):
        rep_e, evicts = per_trainer(ev_rep.get(g, []), ev_priv.get(g, []))
        chunks = _split_chunks(rep_e, n)
        _, nxt_fetch = per_trainer(fe_rep.get(g + 1, []), fe_priv.get(g + 1, []))
        trainers = []
        for t in range(n):
            ev = evicts[t]
            if check and len(ev) and not resident[t, ev].all():
                raise RuntimeError(f"plan bug: round {g} evicts rows trainer {t} does not hold")
            resident[t, ev] = False
            place = fetches[t]
            if check and len(place) and resident[t, place].any():
                raise RuntimeError(f"plan bug: round {g} fetches rows trainer {t} holds")
            resident[t, place] = True
            count[t] += len(place) - len(ev)
            fetched_rows[t] += len(place)
            if count[t] > peak[t]:
                peak[t], peak_round[t] = count[t], g
            mine_priv = [r[o == t] for r, o in ev_priv.get(g, [])]
            wb = _union2(chunks[t], _cat(mine_priv)) if mine_priv else chunks[t]
            trainers.append(TrainerRound(ev, wb, nxt_fetch[t]))
        rounds.append(Round(g, g * C, min((g + 1) * C, K), tuple(trainers), True, g - 1))
        fetches = nxt_fetch
    final = _final_flush(resident, n)
    return Plan("bagpipe", n, num_rows, L, C, step_plans, rounds, initial, final,
                tuple(int(x) for x in peak), tuple(int(x) for x in peak_round),
                stats={"fetched_rows": fetched_rows.tolist()})  # fmt: skip


def _final_flush(resident: np.ndarray, n: int) -> tuple[TrainerRound, ...]:
    """Free everything at the end; a row is written back once, by the lowest trainer holding it."""
    held = [np.flatnonzero(resident[t]).astype(np.int64) for t in range(n)]
    rows, _, owner = _union(held)
    out = []
    for t in range(n):
        out.append(TrainerRound(held[t], rows[owner == t], _EMPTY))
    return tuple(out)


def _plan_per_step(steps, num_rows: int, n: int, mode: str, hot: np.ndarray) -> Plan:
    """``ps`` and ``static``: fetch a step's (cold) rows right before it, free them after."""
    K = len(steps)
    is_hot = np.zeros(num_rows, dtype=bool)
    is_hot[hot] = True
    step_plans, rounds = [], []
    prev = [_EMPTY] * n
    prev_writer = [_EMPTY] * n
    peak = np.zeros(n, dtype=np.int64)
    peak_round = np.zeros(n, dtype=np.int64)
    for k in range(K):
        u, _, _ = _union(steps[k])
        step_plans.append(StepPlan(k, u, _EMPTY, 0))
        cold = [a[~is_hot[a]] for a in steps[k]]
        cold_union, _, writer = _union(cold)
        trainers = []
        for t in range(n):
            trainers.append(TrainerRound(prev[t], prev_writer[t], cold[t]))
            resident = len(hot) + len(cold[t])
            if resident > peak[t]:
                peak[t], peak_round[t] = resident, k
        rounds.append(Round(k, k, k + 1, tuple(trainers), False, k))
        prev = cold
        prev_writer = [cold_union[writer == t] for t in range(n)]
    final = []
    for t in range(n):
        hot_wb = _split_chunks(hot, n)[t]
        final.append(TrainerRound(_union2(prev[t], hot), _union2(prev_writer[t], hot_wb),
                                  _EMPTY))  # fmt: skip
    initial = tuple(hot.copy() for _ in range(n))
    return Plan(mode, n, num_rows, 1, 1, step_plans, rounds, initial, tuple(final),
                tuple(int(x) for x in peak), tuple(int(x) for x in peak_round))  # fmt: skip


def choose_hot_rows(steps: Sequence[Sequence[np.ndarray]], num_rows: int, cache_size: int):
    """FAE-style hot set: the most accessed rows, as many as fit beside the largest cold step.

    Returns the hot rows (sorted). Raises :class:`CacheTooSmall` if even no hot rows leave a
    step whose rows do not fit.
    """
    counts = np.zeros(num_rows, dtype=np.int64)
    for s in steps:
        for a in s:
            np.add.at(counts, a, 1)
    order = np.argsort(-counts, kind="stable")
    order = order[counts[order] > 0]
    rank = np.full(num_rows, np.iinfo(np.int64).max, dtype=np.int64)
    rank[order] = np.arange(len(order))

    def cold_need(h: int) -> int:
        return max(int((rank[a] >= h).sum()) for s in steps for a in s)

    if cold_need(0) > cache_size:
        raise CacheTooSmall(cold_need(0), cache_size, 0, 0, "static cache: one step's rows")
    lo, hi = 0, min(len(order), cache_size)
    while lo < hi:  # largest h with h + cold_need(h) <= cache_size
        mid = (lo + hi + 1) // 2
        if mid + cold_need(mid) <= cache_size:
            lo = mid
        else:
            hi = mid - 1
    return np.sort(order[:lo]).astype(np.int64)
