"""A plan: the schedule of every feature plus the kernel's occupancy, for given table shapes.

Plans are saved as JSON with the shapes they were made for, so a plan tuned for one model
is never silently used on another::

    >>> p = default_plan(dims=[16, 64], rows=[1000, 5000], mean_pooling=[1, 40])
    >>> p.schedules[0], p.schedules[1]
    (WarpPerSample(v=4, items=1, x=4), WarpPerSample(v=4, items=4, x=16))
    >>> Plan.from_json(p.to_json()) == p
    True
    >>> p.check_shapes(rows=[1000, 5000], dims=[16, 32])
    Traceback (most recent call last):
    ...
    ValueError: plan does not fit these tables: feature 1 ('f1') has dim 32, the plan was made for dim 64
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from recflex.constants import MAX_OCCUPANCY
from recflex.schedules import Schedule

PLAN_FORMAT = 1
DEFAULT_OCCUPANCY = 4


@dataclass(frozen=True)
class Plan:
    """``schedules[i]`` runs feature ``i`` (a table of ``rows[i]`` x ``dims[i]``).

    ``occupancy`` is the blocks per SM the kernel is built for (``__launch_bounds__``
    minimum, 1..8); ``None`` leaves it to the compiler.
    """

    schedules: tuple[Schedule, ...]
    dims: tuple[int, ...]
    rows: tuple[int, ...]
    occupancy: int | None = None
    names: tuple[str, ...] = ()
    meta: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "schedules", tuple(self.schedules))
        object.__setattr__(self, "dims", tuple(int(d) for d in self.dims))
        object.__setattr__(self, "rows", tuple(int(r) for r in self.rows))
        names = tuple(self.names) or tuple(f"f{i}" for i in range(len(self.dims)))
        object.__setattr__(self, "names", names)
        n = len(self.schedules)
        if not n:
            raise ValueError("a plan needs at least one feature")
        for what, seq in (("dims", self.dims), ("rows", self.rows), ("names", self.names)):
            if len(seq) != n:
                raise ValueError(f"plan: {len(seq)} {what} for {n} schedules (one per feature)")
        for i, (d, r) in enumerate(zip(self.dims, self.rows)):
            if d < 1 or r < 1:
                raise ValueError(f"plan: feature {i} ({self.names[i]!r}) has {r} rows x dim {d}")
        if self.occupancy is not None and not (
            isinstance(self.occupancy, int) and 1 <= self.occupancy <= MAX_OCCUPANCY
        ):
            raise ValueError(
                f"plan: occupancy must be None or 1..{MAX_OCCUPANCY} blocks per SM, "
                f"got {self.occupancy!r}"
            )
        for i, (s, d) in enumerate(zip(self.schedules, self.dims)):
            if not isinstance(s, Schedule):
                raise TypeError(
                    f"plan: schedule of feature {i} is {type(s).__name__}, not Schedule"
                )
            s.validate(d, feature=self.names[i])

    @property
    def num_features(self) -> int:
        return len(self.schedules)

    # Cached (the plan is frozen): the launch path reads these on every batch, and on a
    # 1000-feature plan each walk over the features costs tens of microseconds.
    @cached_property
    def sum_dims(self) -> int:
        return sum(self.dims)

    @cached_property
    def col_offsets(self) -> tuple[int, ...]:
        """First output column of each feature in the concatenated ``[B, sum of dims]``."""
        out, acc = [], 0
        for d in self.dims:
            out.append(acc)
            acc += d
        return tuple(out)

    @cached_property
    def needs_zeroed_output(self) -> bool:
        return any(s.accumulates for s in self.schedules)

    def distinct(self) -> list[tuple[Schedule, int]]:
        """Distinct (schedule, dim) pairs, in first-use order: one device function each."""
        return list(dict.fromkeys(zip(self.schedules, self.dims)))

    def template_counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in self.schedules:
            out[s.template] = out.get(s.template, 0) + 1
        return out

    def with_occupancy(self, occupancy: int | None) -> Plan:
        return Plan(self.schedules, self.dims, self.rows, occupancy, self.names, dict(self.meta))

    # ------------------------------------------------------------------ shapes
    def check_shapes(self, rows: Sequence[int], dims: Sequence[int]) -> None:
        """Raise ``ValueError`` naming the first feature whose table differs from the plan's."""
        rows, dims = [int(r) for r in rows], [int(d) for d in dims]
        if len(rows) != len(dims):
            raise ValueError(f"{len(rows)} row counts for {len(dims)} dims")
        if len(dims) != self.num_features:
            raise ValueError(
                f"plan does not fit these tables: the plan has {self.num_features} features, "
                f"the tables {len(dims)}"
            )
        for i in range(len(dims)):
            if dims[i] != self.dims[i]:
                raise ValueError(
                    f"plan does not fit these tables: feature {i} ({self.names[i]!r}) has dim "
                    f"{dims[i]}, the plan was made for dim {self.dims[i]}"
                )
            if rows[i] != self.rows[i]:
                raise ValueError(
                    f"plan does not fit these tables: feature {i} ({self.names[i]!r}) has "
                    f"{rows[i]} rows, the plan was made for {self.rows[i]} rows"
                )

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict:
        return {
            "format": PLAN_FORMAT,
            "occupancy": self.occupancy,
            "features": [
                {"name": n, "rows": r, "dim": d, **s.to_dict()}
                for n, r, d, s in zip(self.names, self.rows, self.dims, self.schedules)
            ],
            "meta": self.meta,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_dict(cls, d: dict) -> Plan:
        if not isinstance(d, dict) or "features" not in d:
            raise ValueError("plan JSON: expected an object with a 'features' list")
        if d.get("format", PLAN_FORMAT) != PLAN_FORMAT:
            raise ValueError(
                f"plan JSON: format {d.get('format')!r}, this recflex reads {PLAN_FORMAT}"
            )
        feats = d["features"]
        try:
            return cls(
                schedules=tuple(Schedule.from_dict(f) for f in feats),
                dims=tuple(int(f["dim"]) for f in feats),
                rows=tuple(int(f["rows"]) for f in feats),
                occupancy=d.get("occupancy"),
                names=tuple(str(f.get("name", f"f{i}")) for i, f in enumerate(feats)),
                meta=dict(d.get("meta") or {}),
            )
        except KeyError as exc:
            raise ValueError(f"plan JSON: a feature lacks the field {exc}") from None

    @classmethod
    def from_json(cls, text: str) -> Plan:
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as exc:
            raise ValueError(f"plan JSON is not valid JSON: {exc}") from None

    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_json() + "\n")
        return path

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        rows: Sequence[int] | None = None,
        dims: Sequence[int] | None = None,
    ) -> Plan:
        """Read a plan; with ``rows`` and ``dims``, check it was made for those tables."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"plan file {path} does not exist")
        try:
            plan = cls.from_json(path.read_text())
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
        if rows is not None and dims is not None:
            try:
                plan.check_shapes(rows, dims)
            except ValueError as exc:
                raise ValueError(f"{path}: {exc}") from None
        return plan


# ---------------------------------------------------------------------------- default plan
def _vec(dim: int) -> int:
    return 4 if dim % 4 == 0 else (2 if dim % 2 == 0 else 1)


def default_schedule(dim: int, mean_pooling: float | None = None) -> Schedule:
    """A sensible schedule for one feature without tuning.

    One-hot (mean pooling <= 1): ``WarpPerSample`` with one lookup per thread group (every
    sample's row fetch in flight at once; the artifact's single-block ``OneHot`` walks the
    batch serially and stays a tuning candidate). Long bags on narrow rows (mean >= 24,
    dim <= 32): ``OneBlockMultiSample`` (threads split a sample's lookups, then a
    warp-shuffle tree). Everything else: ``WarpPerSample``, up to one float4 per thread
    across the row, 4 lookups unrolled.
    """
    v = _vec(dim)
    items = 4
    if mean_pooling is not None and mean_pooling <= 1.0:
        items = 1
    elif mean_pooling is not None and mean_pooling >= 24 and dim <= 32:
        x = max(1, dim // v)
        s = Schedule("OneBlockMultiSample", {"v": v, "items": 2, "x": x, "y": max(4, 32 // x)})
        if s.is_valid(dim):
            return s
    while v > 1 and not 4 * v < 2 * dim:
        v //= 2
    x = next((x for x in (4, 8, 16, 32) if x * v >= dim), 32)
    s = Schedule("WarpPerSample", {"v": v, "items": items, "x": x})
    if s.is_valid(dim):
        return s
    # tiny dims (1, 2) have no WarpPerSample: one thread per sample via OneBlockMultiSample
    for cand in (
        Schedule("OneBlockMultiSample", {"v": v, "items": 4, "x": 1, "y": 4}),
        Schedule("OneBlockMultiSample", {"v": 1, "items": 4, "x": 1, "y": 4}),
    ):
        if cand.is_valid(dim):
            return cand
    return Schedule("OneHot", {"unroll": 1})


def default_plan(
    dims: Sequence[int],
    rows: Sequence[int],
    mean_pooling: Sequence[float | None] | None = None,
    *,
    occupancy: int | None = DEFAULT_OCCUPANCY,
    names: Sequence[str] | None = None,
) -> Plan:
    """The heuristic plan: :func:`default_schedule` per feature (pooling unknown: multi-hot),
    built for at least ``occupancy`` blocks per SM (a middle value: the tuner's global stage
    picks it per model; without a bound ptxas sometimes spills to stay at 32 registers)."""
    dims = [int(d) for d in dims]
    if mean_pooling is None:
        mean_pooling = [None] * len(dims)
    if len(mean_pooling) != len(dims):
        raise ValueError(f"mean_pooling: {len(mean_pooling)} values for {len(dims)} features")
    scheds = tuple(default_schedule(d, m) for d, m in zip(dims, mean_pooling))
    return Plan(
        scheds, tuple(dims), tuple(rows), occupancy, tuple(names or ()), {"origin": "default"}
    )
