"""Synthetic Criteo-shaped data with per-table power-law skew, in memory or as a rec-common
Criteo directory (``dense.npy``, ``sparse.npy``, ``labels.npy``, ``meta.json``).

Ids of table f follow ``P(id = i) ~ (i + 1) ** -alpha`` (alpha 1.05 by default: a few percent
of the rows take most accesses, as in Criteo), shuffled per table so hot rows are spread out.
Labels follow a planted logistic model, so a trained model beats a constant.

>>> src = synthetic_source(256, [50] * 26, global_batch=64, seed=1)
>>> src.num_batches, src.table_sizes[:2]
(4, (50, 50))
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from bagpipe.data import BatchSource


def _power_ids(rng, n: int, size: int, alpha: float) -> np.ndarray:
    if size == 1:
        return np.zeros(n, dtype=np.int64)
    p = (np.arange(1, size + 1, dtype=np.float64)) ** -alpha
    cdf = np.cumsum(p)
    cdf /= cdf[-1]
    ranks = np.searchsorted(cdf, rng.random(n), side="right").clip(max=size - 1)
    perm = rng.permutation(size)
    return perm[ranks].astype(np.int64)


def synthetic_arrays(rows: int, table_sizes, num_dense: int = 13, seed: int = 0,
                     alpha: float = 1.05):  # fmt: skip
    """``(dense [rows, num_dense] float32, sparse [rows, F] int64, labels [rows] float32)``."""
    rng = np.random.default_rng(seed)
    sparse = np.stack([_power_ids(rng, rows, int(n), alpha) for n in table_sizes], axis=1)
    dense = np.log1p(rng.exponential(3.0, size=(rows, num_dense))).astype(np.float32)
    w = rng.normal(size=num_dense)
    logit = dense @ w * 0.3 + ((sparse[:, 0] % 7) - 3) * 0.3 - 1.0
    labels = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(np.float32)
    return dense, sparse, labels


def synthetic_source(rows: int, table_sizes, global_batch: int, num_dense: int = 13,
                     seed: int = 0, alpha: float = 1.05) -> BatchSource:  # fmt: skip
    dense, sparse, labels = synthetic_arrays(rows, table_sizes, num_dense, seed, alpha)
    return BatchSource(dense, sparse, labels, table_sizes, "<synthetic>", global_batch)


def write_criteo_dir(path, rows: int, table_sizes, seed: int = 0, alpha: float = 1.05) -> Path:
    """A directory rec-common's ``CriteoDataset`` (and ``--data``) reads; 26 tables, 13 dense."""
    from rec_common.criteo_tables import NUM_DENSE, NUM_SPARSE

    if len(table_sizes) != NUM_SPARSE:
        raise ValueError(f"table_sizes: a Criteo directory has {NUM_SPARSE} tables, "
                         f"got {len(table_sizes)}")  # fmt: skip
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    dense, sparse, labels = synthetic_arrays(rows, table_sizes, NUM_DENSE, seed, alpha)
    idt = np.int32 if max(table_sizes) < 2**31 else np.int64
    np.save(out / "dense.npy", dense)
    np.save(out / "sparse.npy", sparse.astype(idt))
    np.save(out / "labels.npy", labels)
    meta = {"num_rows": int(rows), "table_sizes": [int(x) for x in table_sizes],
            "source": f"bagpipe.synthetic seed={seed} alpha={alpha}"}  # fmt: skip
    (out / "meta.json").write_text(json.dumps(meta))
    return out
