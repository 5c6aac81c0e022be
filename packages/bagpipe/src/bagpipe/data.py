"""Where the oracle reads batches: rec-common's memory-mapped Criteo directories, or the
reference's JSON-lines parts (``part_0.txt`` ...: ``{"label": 0.0, "dense": [13 floats],
"sparse": [26 ints or lists]}`` per line).

Global batch ``k`` of a run is always the same rows: batch ``k mod (rows // B)`` of the data in
file order (parts concatenated in numeric order), so every run and every baseline sees the
same sequence. An empty ``dense`` list reads as zeros (the reference drew random normals).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import torch

from bagpipe.errors import BagpipeError
from rec_common.jagged import JaggedBatch


class BatchSource:
    """Global batches ``(dense [B, D] float32, sparse JaggedBatch, labels [B])`` by index."""

    def __init__(self, dense: np.ndarray, sparse, labels: np.ndarray, table_sizes, path: str,
                 global_batch: int) -> None:  # fmt: skip
        self.dense, self.sparse, self.labels = dense, sparse, labels
        self.table_sizes = tuple(int(x) for x in table_sizes)
        self.num_dense = int(dense.shape[1])
        self.path = path
        self.global_batch = int(global_batch)
        self.num_batches = len(labels) // self.global_batch
        if self.num_batches < 1:
            raise BagpipeError(
                f"data {path}: {len(labels)} rows, fewer than one global batch of "
                f"{global_batch}; use more data or a smaller --mini-batch-size"
            )

    @property
    def num_features(self) -> int:
        return len(self.table_sizes)

    def batch(self, k: int) -> tuple[torch.Tensor, JaggedBatch, torch.Tensor]:
        b = self.global_batch
        lo = (k % self.num_batches) * b
        dense = torch.from_numpy(np.array(self.dense[lo : lo + b], dtype=np.float32))
        labels = torch.from_numpy(np.array(self.labels[lo : lo + b], dtype=np.float32))
        if isinstance(self.sparse, np.ndarray):
            ids = torch.from_numpy(np.array(self.sparse[lo : lo + b], dtype=np.int64))
            sparse = JaggedBatch.from_dense(ids)
        else:  # ragged: per feature (values, offsets) over all rows
            vals, lens = [], []
            for v, o in self.sparse:
                vals.append(torch.from_numpy(np.array(v[o[lo] : o[lo + b]], dtype=np.int64)))
                lens.append(torch.from_numpy(np.diff(o[lo : lo + b + 1]).astype(np.int64)))
            sparse = JaggedBatch.from_lengths([f"f{i}" for i in range(len(vals))], vals, lens)
        return dense, sparse, labels

    def ids(self, k: int) -> JaggedBatch:
        return self.batch(k)[1]


def shard(batch, trainer: int, num_trainers: int):
    """Trainer ``trainer``'s contiguous slice of a global batch ``(dense, sparse, labels)``."""
    dense, sparse, labels = batch
    b = dense.shape[0] // num_trainers
    lo, hi = trainer * b, (trainer + 1) * b
    vals, offs = [], []
    for f in range(sparse.num_features):
        v, o, _ = sparse.feature(f)
        vals.append(v[o[lo] : o[hi]].clone())
        offs.append((o[lo : hi + 1] - o[lo]).clone())
    return dense[lo:hi].clone(), JaggedBatch(sparse.keys, vals, offs), labels[lo:hi].clone()


def read_table_sizes(path: str | Path) -> list[int]:
    """``--emb-info-file``: one table size per line."""
    p = Path(path)
    if not p.is_file():
        raise BagpipeError(f"--emb-info-file {str(p)!r}: no such file")
    sizes = []
    for i, line in enumerate(p.read_text().splitlines(), 1):
        if line.strip():
            try:
                sizes.append(int(line.strip()))
            except ValueError:
                raise BagpipeError(f"{p}:{i}: expected one integer table size per line, "
                                   f"got {line.strip()!r}") from None  # fmt: skip
    if not sizes:
        raise BagpipeError(f"--emb-info-file {str(p)!r}: no table sizes in it")
    return sizes


def open_data(path: str | Path, global_batch: int, table_sizes=None) -> BatchSource:
    """A :class:`BatchSource` over a Criteo directory (``meta.json``) or JSON-lines parts."""
    p = Path(path)
    if not p.exists():
        raise BagpipeError(f"--data {str(p)!r}: no such directory")
    if not p.is_dir():
        raise BagpipeError(f"--data {str(p)!r}: expected a directory (Criteo .npy or part_*.txt)")
    if (p / "meta.json").exists():
        from rec_common.dataset import CriteoDataset

        try:
            ds = CriteoDataset(p)
        except ValueError as exc:
            raise BagpipeError(f"--data {str(p)!r}: {exc}") from None
        sizes = ds.table_sizes if table_sizes is None else table_sizes
        src = BatchSource(ds.dense, ds.sparse, ds.labels, sizes, str(p), global_batch)
        _check_ids_fit(src, ds.table_sizes, sizes)
        return src
    parts = sorted(p.glob("part_*.txt"), key=lambda f: int(re.sub(r"\D", "", f.stem) or 0))
    if not parts:
        raise BagpipeError(
            f"--data {str(p)!r}: neither a Criteo directory (meta.json, from python -m "
            "rec_common.criteo preprocess) nor JSON-lines parts (part_0.txt ...)"
        )
    return _read_json_lines(parts, global_batch, table_sizes, str(p))


def _check_ids_fit(src: BatchSource, data_sizes, sizes) -> None:
    if len(sizes) != len(data_sizes):
        raise BagpipeError(f"table sizes: {len(sizes)} given but the data has "
                           f"{len(data_sizes)} sparse features")  # fmt: skip
    for i, (have, need) in enumerate(zip(sizes, data_sizes)):
        if have < need:
            raise BagpipeError(f"table sizes: table {i} has {have} rows but the data's ids go "
                               f"up to {need - 1} (meta.json)")  # fmt: skip


def _read_json_lines(parts, global_batch: int, table_sizes, where: str) -> BatchSource:
    dense, labels, sparse = [], [], []
    ragged = False
    nf = nd = None
    for part in parts:
        with open(part) as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                    label, d, s = float(rec["label"]), rec["dense"], rec["sparse"]
                    if not isinstance(d, list) or not isinstance(s, list):
                        raise TypeError("dense and sparse must be lists")
                except (ValueError, KeyError, TypeError) as exc:
                    raise BagpipeError(
                        f"corrupt data file {part}:{lineno}: expected a JSON object with "
                        f"label, dense (list) and sparse (list) ({type(exc).__name__}: {exc})"
                    ) from None
                if nf is None:
                    nf, nd = len(s), len(d) or 13
                if len(s) != nf or (d and len(d) != nd):
                    raise BagpipeError(
                        f"corrupt data file {part}:{lineno}: {len(s)} sparse / {len(d)} dense "
                        f"features, the first line had {nf} / {nd}"
                    )
                ragged = ragged or any(isinstance(x, list) for x in s)
                dense.append([float(x) for x in d] if d else [0.0] * nd)
                labels.append(label)
                sparse.append(s)
    if not labels:
        raise BagpipeError(f"--data {where}: the part files hold no samples")
    dense_a = np.asarray(dense, dtype=np.float32)
    labels_a = np.asarray(labels, dtype=np.float32)
    if ragged:
        cols = []
        for f in range(nf):
            lists = [x if isinstance(x, list) else [x] for x in (row[f] for row in sparse)]
            offs = np.zeros(len(lists) + 1, dtype=np.int64)
            offs[1:] = np.cumsum([len(x) for x in lists])
            vals = np.asarray([v for x in lists for v in x], dtype=np.int64)
            cols.append((vals, offs))
        maxima = [int(v.max()) + 1 if len(v) else 1 for v, _ in cols]
        neg = any(len(v) and v.min() < 0 for v, _ in cols)
        sp = cols
    else:
        sp = np.asarray(sparse, dtype=np.int64)
        maxima = (sp.max(axis=0) + 1).tolist()
        neg = bool((sp < 0).any())
    if neg:
        raise BagpipeError(f"corrupt data in {where}: negative sparse ids")
    sizes = maxima if table_sizes is None else list(table_sizes)
    src = BatchSource(dense_a, sp, labels_a, sizes, where, global_batch)
    _check_ids_fit(src, maxima, sizes)
    return src


def write_json_lines(src: BatchSource, out_dir: str | Path, parts: int = 2) -> list[Path]:
    """Write a source's rows as the reference's JSON-lines parts (for tests and interop)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n = len(src.labels)
    bounds = np.linspace(0, n, parts + 1).astype(int)
    files = []
    for i in range(parts):
        path = out / f"part_{i}.txt"
        with open(path, "w") as fh:
            for r in range(bounds[i], bounds[i + 1]):
                ids = src.sparse[r].tolist() if isinstance(src.sparse, np.ndarray) else [
                    v[o[r] : o[r + 1]].tolist() for v, o in src.sparse]  # fmt: skip
                fh.write(json.dumps({"label": float(src.labels[r]),
                                     "dense": [float(x) for x in src.dense[r]],
                                     "sparse": ids}) + "\n")  # fmt: skip
        files.append(path)
    return files
