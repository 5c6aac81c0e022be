"""Schedules: a template name plus its parameters, as plain data.

A schedule says how one feature's lookups are mapped onto 256-thread blocks. The six
templates are RecFlex's (SC'24), with their parameter spaces and validity rules::

    >>> s = Schedule("WarpPerSample", {"v": 4, "items": 2, "x": 8})
    >>> s.validate(dim=32)            # raises ValueError naming the bad parameter
    >>> s.samples_per_block, s.smem_bytes(32)
    (32, 0)
    >>> s.work(dim=32, lengths=[3, 0, 5], max_concurrent=1056)
    {'tiles': 1, 'blocks': 1}
    >>> len(candidates(dim=16, multi_hot=True)) > 50
    True

``work`` is the host-side description of one batch (how many tiles and blocks the feature
gets); :mod:`recflex.binding` computes the same numbers for every feature at once.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import product

from recflex.constants import (
    BLOCK_THREADS,
    ITEMS_PER_THREAD,
    OBMS_X,
    OBMS_Y,
    ONEHOT_TILE,
    RBK_MAX_DIM,
    VECTOR_SIZES,
    WARP,
    WPS_X,
    ZERO_FILL_FLOATS_PER_BLOCK,
)

TEMPLATES = (
    "OneHot",
    "OneHotMultiBlock",
    "WarpPerSample",
    "OneBlockMultiSample",
    "MultiBlockPerSample",
    "ReduceByKey",
)
PARAMS: dict[str, tuple[str, ...]] = {
    "OneHot": ("unroll",),
    "OneHotMultiBlock": ("unroll",),
    "WarpPerSample": ("v", "items", "x"),
    "OneBlockMultiSample": ("v", "items", "x", "y"),
    "MultiBlockPerSample": ("v", "items", "x"),
    "ReduceByKey": ("scan_dim", "items"),
}
# Templates the artifact's schedule_config.txt allows per kind of feature.
ONE_HOT_TEMPLATES = ("OneHot",)
MULTI_HOT_TEMPLATES = ("ReduceByKey", "OneBlockMultiSample", "WarpPerSample")


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


@dataclass(frozen=True, init=False)
class Schedule:
    """``Schedule(template, params)``: hashable, comparable, JSON-friendly (:meth:`to_dict`)."""

    template: str
    items_: tuple[tuple[str, int], ...]

    def __init__(self, template: str, params: Mapping[str, int] | None = None) -> None:
        if template not in PARAMS:
            raise ValueError(
                f"schedule template {template!r}: expected one of {', '.join(TEMPLATES)}"
            )
        params = dict(params or {})
        want = PARAMS[template]
        missing = [k for k in want if k not in params]
        extra = [k for k in params if k not in want]
        if missing or extra:
            raise ValueError(
                f"{template}: parameters {sorted(params)} do not match the template's "
                f"{list(want)} (missing {missing}, unknown {extra})"
            )
        vals = []
        for k in want:
            v = params[k]
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{template}: parameter {k}={v!r} must be a positive integer")
            vals.append((k, int(v)))
        object.__setattr__(self, "template", template)
        object.__setattr__(self, "items_", tuple(vals))

    # ------------------------------------------------------------------ data
    @property
    def params(self) -> dict[str, int]:
        return dict(self.items_)

    def __getitem__(self, key: str) -> int:
        return self.params[key]

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v}" for k, v in self.items_)
        return f"{self.template}({inner})"

    def to_dict(self) -> dict:
        return {"template": self.template, "params": self.params}

    @classmethod
    def from_dict(cls, d: Mapping) -> Schedule:
        if not isinstance(d, Mapping) or "template" not in d:
            raise ValueError(
                f"schedule: expected {{'template': ..., 'params': {{...}}}}, got {d!r}"
            )
        return cls(d["template"], d.get("params", {}))

    # ------------------------------------------------------------------ validity
    def problems(self, dim: int) -> list[str]:
        """Why this schedule cannot run a feature of width ``dim`` (empty when it can)."""
        p = self.params
        t = self.template
        out: list[str] = []
        if t in ("OneHot", "OneHotMultiBlock"):
            if dim % p["unroll"]:
                out.append(f"unroll={p['unroll']} must divide dim {dim} (allowed {divisors(dim)})")
            return out
        if t == "ReduceByKey":
            if dim > RBK_MAX_DIM:
                out.append(f"ReduceByKey only runs dims <= {RBK_MAX_DIM}, got dim {dim}")
            sd = p["scan_dim"]
            if dim % sd:
                out.append(f"scan_dim={sd} must divide dim {dim} (allowed {divisors(dim)})")
            elif BLOCK_THREADS % (dim // sd):
                out.append(f"dim/scan_dim = {dim // sd} must divide {BLOCK_THREADS}")
            if p["items"] not in ITEMS_PER_THREAD:
                out.append(f"items={p['items']}: expected one of {ITEMS_PER_THREAD}")
            return out
        v, x = p["v"], p["x"]
        if v not in VECTOR_SIZES:
            out.append(f"v={v}: expected one of {VECTOR_SIZES}")
        elif dim % v:
            out.append(f"v={v} must divide dim {dim}")
        if p["items"] not in ITEMS_PER_THREAD:
            out.append(f"items={p['items']}: expected one of {ITEMS_PER_THREAD}")
        if t == "WarpPerSample":
            if x not in WPS_X:
                out.append(f"x={x}: expected one of {WPS_X}")
            if not x * v < 2 * dim:
                out.append(f"x*v = {x * v} must be < 2*dim = {2 * dim}")
        elif t == "OneBlockMultiSample":
            y = p["y"]
            if x not in OBMS_X:
                out.append(f"x={x}: expected one of {OBMS_X}")
            if y not in OBMS_Y:
                out.append(f"y={y}: expected one of {OBMS_Y}")
            if x * y > BLOCK_THREADS:
                out.append(f"x*y = {x * y} must be <= {BLOCK_THREADS} (z = 256/(x*y) >= 1)")
            if not dim / 2 <= x * v < 2 * dim:
                out.append(f"x*v = {x * v} must be in [dim/2, 2*dim) = [{dim / 2:g}, {2 * dim})")
        else:  # MultiBlockPerSample
            if x not in WPS_X:
                out.append(f"x={x}: expected one of {WPS_X}")
            if not dim / 2 <= x * v < 2 * dim:
                out.append(f"x*v = {x * v} must be in [dim/2, 2*dim) = [{dim / 2:g}, {2 * dim})")
        return out

    def is_valid(self, dim: int) -> bool:
        return not self.problems(dim)

    def validate(self, dim: int, feature: str | int | None = None) -> None:
        """Raise ``ValueError`` listing every rule this schedule breaks for ``dim``."""
        probs = self.problems(int(dim))
        if probs:
            who = f"feature {feature!r} (dim {dim})" if feature is not None else f"dim {dim}"
            raise ValueError(f"schedule {self!r} is not valid for {who}: " + "; ".join(probs))

    # ------------------------------------------------------------------ shape of the work
    @property
    def accumulates(self) -> bool:
        """True when blocks add into the output atomically (it must start zeroed)."""
        return self.template == "MultiBlockPerSample"

    @property
    def samples_per_block(self) -> int | None:
        """Samples one block covers, for templates whose blocks follow the batch size."""
        p = self.params
        if self.template == "WarpPerSample":
            return BLOCK_THREADS // p["x"]
        if self.template == "OneBlockMultiSample":
            return BLOCK_THREADS // (p["x"] * p["y"])
        if self.template in ("OneHot", "OneHotMultiBlock"):
            return ONEHOT_TILE
        return None

    def lookups_per_tile(self, dim: int) -> int | None:
        """Lookups per tile for the templates that tile the lookups (MBPS, ReduceByKey)."""
        p = self.params
        if self.template == "MultiBlockPerSample":
            return p["items"] * (BLOCK_THREADS // p["x"])
        if self.template == "ReduceByKey":
            return (BLOCK_THREADS // (dim // p["scan_dim"])) * p["items"]
        return None

    def smem_bytes(self, dim: int) -> int:
        """Static shared memory of this schedule's body (the fused kernel takes the max)."""
        p = self.params
        if self.template == "OneBlockMultiSample":
            if p["x"] * p["y"] <= WARP:
                return 0
            return 4 * BLOCK_THREADS * _nch(dim, p["x"], p["v"]) * p["v"]
        if self.template == "MultiBlockPerSample":
            return 4 * BLOCK_THREADS * _nch(dim, p["x"], p["v"]) * p["v"]
        if self.template == "ReduceByKey":
            sd = p["scan_dim"]
            c = dim // sd
            r = BLOCK_THREADS // c
            return 4 * (sd * BLOCK_THREADS + r + sd * c + 1)
        return 0

    def work(
        self,
        dim: int,
        lengths: Sequence[int],
        max_concurrent: int,
    ) -> dict[str, int]:
        """Tiles and blocks of one batch (``lengths``: bag length per sample).

        A feature with no lookups gets no schedule blocks; its zeros come from
        :func:`zero_fill_blocks` blocks instead (``blocks`` here is then that count).
        """
        lengths = [int(n) for n in lengths]
        b = len(lengths)
        nnz = sum(lengths)
        if nnz == 0:
            return {"tiles": 0, "blocks": zero_fill_blocks(b, dim)}
        t = self.template
        if t in ("OneHot", "OneHotMultiBlock"):
            tiles = math.ceil(b / ONEHOT_TILE)
            blocks = 1 if t == "OneHot" else min(tiles, max_concurrent)
        elif t in ("WarpPerSample", "OneBlockMultiSample"):
            tiles = blocks = math.ceil(b / self.samples_per_block)
        elif t == "MultiBlockPerSample":
            tl = self.lookups_per_tile(dim)
            tiles = sum(math.ceil(n / tl) for n in lengths)
            blocks = min(tiles, max_concurrent)
        else:  # ReduceByKey
            tiles = math.ceil(nnz / self.lookups_per_tile(dim))
            blocks = min(tiles, max_concurrent)
        return {"tiles": tiles, "blocks": blocks}


def _nch(dim: int, x: int, v: int) -> int:
    return -(-dim // (x * v))


def zero_fill_blocks(batch_size: int, dim: int) -> int:
    """Blocks that write the zeros of a feature with no lookups in the batch."""
    return -(-batch_size * dim // ZERO_FILL_FLOATS_PER_BLOCK) if batch_size else 0


# ---------------------------------------------------------------------------- candidates
def template_candidates(template: str, dim: int) -> list[Schedule]:
    """Every valid schedule of one template for a feature of width ``dim``."""
    if template not in PARAMS:
        raise ValueError(f"template {template!r}: expected one of {', '.join(TEMPLATES)}")
    if template in ("OneHot", "OneHotMultiBlock"):
        grid: Iterable[dict] = ({"unroll": u} for u in divisors(dim))
    elif template == "WarpPerSample":
        grid = (
            {"v": v, "items": i, "x": x}
            for v, i, x in product(VECTOR_SIZES, ITEMS_PER_THREAD, WPS_X)
        )
    elif template == "OneBlockMultiSample":
        grid = (
            {"v": v, "items": i, "x": x, "y": y}
            for v, i, x, y in product(VECTOR_SIZES, ITEMS_PER_THREAD, OBMS_X, OBMS_Y)
        )
    elif template == "MultiBlockPerSample":
        grid = (
            {"v": v, "items": i, "x": x}
            for v, i, x in product(VECTOR_SIZES, ITEMS_PER_THREAD, WPS_X)
        )
    else:
        grid = ({"scan_dim": sd, "items": i} for sd, i in product(divisors(dim), ITEMS_PER_THREAD))
    out = [Schedule(template, g) for g in grid]
    return [s for s in out if s.is_valid(dim)]


def candidates(dim: int, multi_hot: bool, templates: Sequence[str] | None = None) -> list[Schedule]:
    """A feature's candidate schedules: the artifact's allowed templates for one-hot
    (OneHot) or multi-hot (ReduceByKey, OneBlockMultiSample, WarpPerSample) features, or
    the ``templates`` given."""
    if dim < 1:
        raise ValueError(f"dim must be >= 1, got {dim}")
    if templates is None:
        templates = MULTI_HOT_TEMPLATES if multi_hot else ONE_HOT_TEMPLATES
    out: list[Schedule] = []
    for t in templates:
        out.extend(template_candidates(t, dim))
    return out
