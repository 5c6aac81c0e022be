"""Named embedding workloads: the models and inputs the reproduced papers benchmark.

Each workload is one small JSON file in this package (config lines, not per-feature lists),
expanded here into :class:`~rec_common.generators.FeatureSpec` objects::

    >>> from rec_common import workloads
    >>> w = workloads.load("recflex-test")
    >>> w.num_features, w.dims
    (6, (16, 16, 16, 16, 16, 16))
    >>> batch = next(w.batches(1, batch_size=4))
    >>> batch.validate(w.table_sizes)

Names: ``criteo-kaggle``, ``criteo-terabyte``, ``mlperf-multihot``, ``micro24``,
``recflex-A`` .. ``recflex-F``, ``recflex-mlperf``, ``recflex-test`` (:func:`list_workloads`).

RecFlex workloads are written as the artifact's ``data_config.txt`` lines (type, count,
params) and expanded as its generator does: table rows by type (one-hot 1024, multi-hot and
static 4096, one-side 16384), dims drawn per line with Python's ``random.choices`` and the
per-type weights. The artifact's committed ``table_config.txt`` files are the ground truth
for the dims; ours are a seeded re-draw, with the seed picked (from 0..9999) as the one whose
dim histogram, dim sum and table bytes come closest to the committed files'.
"""

from __future__ import annotations

import functools
import json
import random
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from importlib import resources
from types import MappingProxyType

import numpy as np
import torch

from rec_common.criteo_tables import MLPERF_MULTI_HOT_SIZES, PRESETS
from rec_common.generators import (
    BatchGenerator,
    BatchSizes,
    FeatureSpec,
    Pooling,
    Skew,
    make_tables,
    with_rows,
)
from rec_common.jagged import JaggedBatch

__all__ = [
    "RECFLEX_ROWS",
    "FeatureSpec",
    "Workload",
    "list_workloads",
    "load",
    "parse_recflex_line",
]

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_INDEX_DTYPES = {"int32": torch.int32, "int64": torch.int64}

# RecFlex data_config types -> table rows (data_synthesis/table_config_generate.py)
RECFLEX_ROWS = {
    "one-hot": 1024,
    "multi-hot": 4096,
    "multi-hot-static": 4096,
    "multi-hot-one-side": 16384,
}
RECFLEX_PARAM_COUNT = {"one-hot": 1, "multi-hot": 4, "multi-hot-static": 2, "multi-hot-one-side": 3}


@dataclass(frozen=True)
class Workload:
    """A named set of sparse features plus how to batch them.

    ``seeds`` names the data seeds (RecFlex: ``tune`` and ``test``; ``tables`` seeds
    :meth:`make_tables`); ``default_seed`` is the name :meth:`batches` uses by default.
    """

    name: str
    description: str
    features: tuple[FeatureSpec, ...]
    batch_sizes: BatchSizes
    num_batches: int
    seeds: Mapping[str, int] = field(default_factory=dict)
    default_seed: str = "data"
    index_dtype: torch.dtype = torch.int64
    dtype: torch.dtype = torch.float32
    pooling_mode: str = "sum"
    source: str = ""
    notes: str = ""
    reference: Mapping[str, object] = field(default_factory=dict)  # the paper's numbers, if any

    # ------------------------------------------------------------------ shape
    @property
    def num_features(self) -> int:
        return len(self.features)

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features)

    @property
    def table_sizes(self) -> tuple[int, ...]:
        return tuple(f.rows for f in self.features)

    @property
    def dims(self) -> tuple[int, ...]:
        return tuple(f.dim for f in self.features)

    @property
    def sum_dims(self) -> int:
        return sum(self.dims)

    def dim_histogram(self) -> dict[int, int]:
        return dict(sorted(Counter(self.dims).items()))

    def expected_lookups_per_sample(self) -> float:
        return float(sum(f.expected_lookups() for f in self.features))

    def table_bytes(self, dtype: torch.dtype | None = None) -> int:
        item = torch.empty(0, dtype=dtype or self.dtype).element_size()
        return sum(f.rows * f.dim for f in self.features) * item

    def summary(self) -> dict:
        """Plain numbers for reports: counts, dims, table bytes, expected lookups."""
        return {
            "name": self.name,
            "features": self.num_features,
            "sum_dims": self.sum_dims,
            "dim_histogram": self.dim_histogram(),
            "table_bytes": self.table_bytes(),
            "expected_lookups_per_sample": round(self.expected_lookups_per_sample(), 1),
            "batch_sizes": str(self.batch_sizes),
            "num_batches": self.num_batches,
            "seeds": dict(self.seeds),
        }

    # ------------------------------------------------------------------ data
    def seed(self, seed: int | str | None = None) -> int:
        """Resolve a seed: ``None`` (the default), a name in ``seeds``, or an integer."""
        if seed is None:
            seed = self.default_seed
        if isinstance(seed, str):
            if seed not in self.seeds:
                raise ValueError(
                    f"workload {self.name!r}: unknown seed name {seed!r}; named seeds are "
                    f"{dict(self.seeds)} (or pass an integer)"
                )
            return int(self.seeds[seed])
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed: expected a non-negative integer or a seed name, got {seed!r}")
        return int(seed)

    def sample_batch_sizes(
        self, num: int | None = None, seed: int | str | None = None
    ) -> list[int]:
        """The sizes :meth:`batches` uses (from the workload's batch-size distribution)."""
        num = self.num_batches if num is None else int(num)
        return [int(b) for b in self.batch_sizes.sample(num, self.seed(seed))]

    def generator(
        self,
        seed: int | str | None = None,
        *,
        index_dtype: torch.dtype | None = None,
        weighted: bool = False,
    ) -> BatchGenerator:
        return BatchGenerator(
            self.features,
            self.seed(seed),
            index_dtype=index_dtype or self.index_dtype,
            weighted=weighted,
        )

    def batches(
        self,
        num: int | None = None,
        *,
        seed: int | str | None = None,
        batch_size: int | None = None,
        index_dtype: torch.dtype | None = None,
        weighted: bool = False,
        threads: int = 1,
    ) -> Iterator[JaggedBatch]:
        """``num`` batches (default: the workload's count), sizes from its distribution
        unless ``batch_size`` is given. Trace-skewed workloads share one cursor across them.
        ``threads``: draw on that many threads (same batches; see ``BatchGenerator.batches``)."""
        num = self.num_batches if num is None else int(num)
        if num < 0:
            raise ValueError(f"num: expected a non-negative number of batches, got {num}")
        sizes = (
            [int(batch_size)] * num
            if batch_size is not None
            else self.sample_batch_sizes(num, seed)
        )
        gen = self.generator(seed, index_dtype=index_dtype, weighted=weighted)
        return gen.batches(sizes, threads=threads)

    def make_tables(
        self,
        dtype: torch.dtype | None = None,
        seed: int | None = None,
        *,
        device: torch.device | str = "cpu",
    ) -> list[torch.Tensor]:
        """One table per feature (U(-sqrt(1/n), sqrt(1/n)), no zeros); seed ``seeds['tables']``."""
        seed = int(self.seeds.get("tables", 0)) if seed is None else seed
        return make_tables(self.table_sizes, self.dims, dtype or self.dtype, seed, device=device)

    # ------------------------------------------------------------------ variants
    def scaled(self, *, max_rows: int | None = None, batch_size: int | None = None) -> Workload:
        """A smaller copy for tests: tables capped at ``max_rows``, a fixed ``batch_size``."""
        w = self
        if max_rows is not None:
            w = replace(w, features=tuple(with_rows(w.features, max_rows)))
        if batch_size is not None:
            w = replace(w, batch_sizes=BatchSizes("fixed", size=int(batch_size)))
        return w

    def with_skew(self, skew: str | Skew) -> Workload:
        """The same workload with every feature's ids drawn under ``skew``."""
        skew = Skew.parse(skew)
        return replace(self, features=tuple(replace(f, skew=skew) for f in self.features))


# ---------------------------------------------------------------------------- loading
def list_workloads() -> list[str]:
    """Names of the packaged workloads."""
    files = resources.files(__name__).iterdir()
    return sorted(p.name[: -len(".json")] for p in files if p.name.endswith(".json"))


def load(name: str, *, skew: str | Skew | None = None) -> Workload:
    """The named workload (optionally with every feature's skew replaced, e.g.
    ``load("micro24", skew="trace:reuse_low")``)."""
    w = _load(str(name))
    return w if skew is None else w.with_skew(skew)


@functools.lru_cache(maxsize=32)
def _load(name: str) -> Workload:
    known = list_workloads()
    if name not in known:
        raise ValueError(f"unknown workload {name!r}; known workloads: {', '.join(known)}")
    text = resources.files(__name__).joinpath(f"{name}.json").read_text()
    try:
        return _from_dict(json.loads(text))
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"workload file {name}.json is malformed: {exc}") from exc


def _from_dict(d: dict) -> Workload:
    if "recflex" in d:
        features = _expand_recflex(d["recflex"])
    else:
        features = _expand_features(d["features"])
    seeds = {k: int(v) for k, v in d.get("seeds", {}).items()}
    return Workload(
        name=d["name"],
        description=d["description"],
        features=tuple(features),
        batch_sizes=BatchSizes.parse(d["batch_sizes"]),
        num_batches=int(d["num_batches"]),
        seeds=MappingProxyType(seeds),
        default_seed=d.get("default_seed", next(iter(seeds), "data")),
        index_dtype=_INDEX_DTYPES[d.get("index_dtype", "int64")],
        dtype=_DTYPES[d.get("dtype", "float32")],
        pooling_mode=d.get("pooling_mode", "sum"),
        source=d.get("source", ""),
        notes=d.get("notes", ""),
        reference=MappingProxyType(d.get("reference", {})),
    )


def _per_feature(value, count: int, what: str) -> list:
    if isinstance(value, list):
        if len(value) != count:
            raise ValueError(f"{what}: {len(value)} values for {count} features")
        return value
    if isinstance(value, str) and value in PRESETS and what == "rows":
        sizes = PRESETS[value]
        if len(sizes) != count:
            raise ValueError(f"rows preset {value!r} has {len(sizes)} sizes for {count} features")
        return list(sizes)
    return [value] * count


def _expand_features(groups: Sequence[dict]) -> list[FeatureSpec]:
    """Generic form: groups of ``count`` features sharing settings (or per-feature lists)."""
    out: list[FeatureSpec] = []
    for g in groups:
        n = int(g["count"])
        rows = _per_feature(g["rows"], n, "rows")
        dims = _per_feature(g["dim"], n, "dim")
        if g["pooling"] == "multi-hot-sizes:mlperf":
            pool = ["one-hot" if s == 1 else f"fixed:{s}" for s in MLPERF_MULTI_HOT_SIZES]
            pool = _per_feature(pool, n, "pooling")
        else:
            pool = _per_feature(g["pooling"], n, "pooling")
        for k in range(n):
            i = len(out)
            out.append(
                FeatureSpec(
                    name=g["name"].format(i=i, n=k + 1),
                    rows=int(rows[k]),
                    dim=int(dims[k]),
                    pooling=Pooling.parse(pool[k]),
                    coverage=float(g.get("coverage", 1.0)),
                    skew=Skew.parse(g.get("skew", "uniform")),
                )
            )
    return out


def _recflex_pooling(kind: str, params: list[float]) -> tuple[str, float]:
    if kind == "one-hot":
        return "one-hot", params[0]
    if kind == "multi-hot":
        mean, sd, mx, cov = params
        return f"normal:{mean:g},{sd:g},{mx:g}", cov
    if kind == "multi-hot-static":
        length, cov = params
        return f"fixed:{int(length)}", cov
    mean, sd, cov = params
    return f"normal:{mean:g},{sd:g}", cov


def parse_recflex_line(line: str) -> tuple[str, int, list[float]]:
    """``"multi-hot,50,10,10,50,0.8"`` -> ``("multi-hot", 50, [10, 10, 50, 0.8])``."""
    parts = [p.strip() for p in line.split(",")]
    kind = parts[0]
    if kind not in RECFLEX_PARAM_COUNT:
        raise ValueError(
            f"RecFlex line {line!r}: unknown type {kind!r}; expected {', '.join(RECFLEX_PARAM_COUNT)}"
        )
    if len(parts) != 2 + RECFLEX_PARAM_COUNT[kind]:
        raise ValueError(
            f"RecFlex line {line!r}: {kind} takes {RECFLEX_PARAM_COUNT[kind]} parameters"
        )
    return kind, int(parts[1]), [float(p) for p in parts[2:]]


def _expand_recflex(cfg: dict) -> list[FeatureSpec]:
    """RecFlex data_config lines -> features f0, f1, ... (one group per line)."""
    lines = [parse_recflex_line(s) for s in cfg["lines"]]
    dims_cfg = cfg["dims"]
    draw = None
    if "fixed" not in dims_cfg:
        draw = random.Random(int(dims_cfg["draw_seed"]))
        weights = {
            k: ([int(d) for d in w], list(w.values())) for k, w in dims_cfg["weights"].items()
        }
    skew = Skew.parse(cfg.get("skew", "power:3"))
    out: list[FeatureSpec] = []
    for group, (kind, count, params) in enumerate(lines):
        if draw is None:
            dims = [int(dims_cfg["fixed"])] * count
        else:  # random.choices per line, in line order, as table_config_generate.py does
            choices, w = weights["one-hot" if kind == "one-hot" else "multi-hot"]
            dims = draw.choices(choices, w, k=count)
        pooling, coverage = _recflex_pooling(kind, params)
        for d in dims:
            out.append(
                FeatureSpec(
                    name=f"f{len(out)}",
                    rows=RECFLEX_ROWS[kind],
                    dim=d,
                    pooling=Pooling.parse(pooling),
                    coverage=coverage,
                    skew=skew,
                    group=group,
                )
            )
    return out
