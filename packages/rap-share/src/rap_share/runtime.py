"""Running a plan's fused kernels on raw batches, and turning their outputs into model inputs.

The environment ``env`` maps names to :class:`~rap_share.columns.Column`: raw inputs are
``raw_l:<col>`` (the GPU's local batch, B rows) and ``raw_g:<col>`` (the global batch, B * n
rows); a task's output is its key (``l12`` = node 12 on the local batch, ``g12`` on the
global one). The generated program calls :func:`rap_share.fused.run` with these names; this
module holds what it shares with the tests: raw data, slicing, outputs, and a plain executor.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from rap_share import fused
from rap_share import reference as _ref
from rap_share.columns import Column
from rap_share.graph import PrepGraph, Task

NUM_DENSE, NUM_SPARSE = 13, 26


def input_key(task: Task) -> str:
    src = task.node.source
    return f"{task.batch[0]}{src}" if isinstance(src, int) else f"raw_{task.batch[0]}:{src}"


class RawSource:
    """Raw Criteo-shaped columns with nulls: ``int_0..12`` and ``cat_0..25`` (int64, the
    categorical 32-bit hex values) and ``label``, as numpy arrays, from rec-common's synthetic
    generator (the real reader's format, with nulls and a learnable click signal).

    Global batch ``step`` is rows ``step*G .. step*G + G - 1`` (wrapping around) with
    ``G = batch * world``; rank r's local batch is the r-th block of B rows of it.
    """

    def __init__(self, columns: dict[str, Column], labels: np.ndarray) -> None:
        self.columns = columns
        self.labels = labels.astype(np.float32)
        self.num_rows = int(labels.shape[0])

    @classmethod
    def synthetic(
        cls, rows: int, seed: int = 0, table_sizes: str | Sequence[int] = "kaggle"
    ) -> RawSource:
        from rec_common.synth import synth_criteo

        s = synth_criteo(rows, seed, table_sizes=table_sizes)
        cols = {}
        for i in range(NUM_DENSE):
            cols[f"int_{i}"] = Column(s.dense[:, i].astype(np.int64), None, ~s.dense_null[:, i])
        for i in range(NUM_SPARSE):
            cols[f"cat_{i}"] = Column(s.cat_hex[:, i].astype(np.int64), None, ~s.cat_null[:, i])
        return cls(cols, s.labels)

    def save(self, path) -> None:
        """One .npz with every column (values + null mask) and the labels."""
        arrays = {"label": self.labels}
        for n, c in self.columns.items():
            arrays[f"{n}.values"] = c.values
            if c.valid is not None:
                arrays[f"{n}.valid"] = c.valid
        np.savez(path, **arrays)

    @classmethod
    def load(cls, path) -> RawSource:
        with np.load(path) as z:
            names = sorted({k.rsplit(".", 1)[0] for k in z.files if k != "label"})
            cols = {n: Column(z[f"{n}.values"], None, z[f"{n}.valid"] if f"{n}.valid" in z.files else None)
                    for n in names}  # fmt: skip
            return cls(cols, z["label"])

    def rows(self, step: int, batch: int, world: int, rank: int | None = None) -> np.ndarray:
        g = batch * world
        idx = (np.arange(g, dtype=np.int64) + step * g) % self.num_rows
        return idx if rank is None else idx[rank * batch : (rank + 1) * batch]

    def take(self, names: Sequence[str], idx: np.ndarray) -> dict[str, Column]:
        """The rows ``idx`` of columns ``names``. A run of consecutive rows (what :meth:`rows`
        gives unless it wraps) is taken as views, not copies: the batch is copied once, where
        it is packed or moved to the device."""
        sel = _as_slice(idx)
        out = {}
        for n in names:
            if n not in self.columns:
                raise KeyError(
                    f"raw column {n!r} is not in the data (have {sorted(self.columns)[:6]}...)"
                )
            c = self.columns[n]
            out[n] = Column(c.values[sel], None, None if c.valid is None else c.valid[sel])
        return out


def _as_slice(idx: np.ndarray):
    """``idx`` as a slice when it is a run of consecutive row numbers, else ``idx`` itself.

    >>> _as_slice(np.arange(3, 7)), _as_slice(np.array([0, 2]))
    (slice(3, 7, None), array([0, 2]))
    """
    idx = np.asarray(idx)
    n = idx.shape[0] if idx.ndim == 1 else 0
    if n and idx.dtype.kind in "iu" and int(idx[0]) >= 0:
        start = int(idx[0])
        if int(idx[-1]) == start + n - 1 and np.array_equal(idx, np.arange(start, start + n)):
            return slice(start, start + n)
    return idx


def pack_columns(cols: dict[str, Column]) -> tuple[list[torch.Tensor], list[tuple]]:
    """Scalar numpy columns packed by (dtype, rows) into 2-D host tensors, and the layout
    (``key, values tensor, row, valid tensor or None, row``) that :func:`unpack_columns` reads.
    The same keys and null masks give the same layout, so a batch can be copied into the
    buffers of an earlier one (the CUDA-graph runner's static inputs).

    >>> host, layout = pack_columns({"a": Column(np.arange(3)), "b": Column(np.ones(3, int))})
    >>> len(host), unpack_columns(host, layout)["b"].values.tolist()
    (1, [1, 1, 1])
    """
    host: list[torch.Tensor] = []
    layout: list[tuple] = []
    groups: dict[tuple, list[tuple[str, Column]]] = {}
    for key, c in cols.items():
        groups.setdefault((c.values.dtype.str, c.values.shape[0]), []).append((key, c))
    for members in groups.values():
        gi = len(host)
        host.append(torch.from_numpy(np.stack([c.values for _, c in members])))
        nulls = [j for j, (_, c) in enumerate(members) if c.valid is not None]
        vi = None
        if nulls:
            vi = len(host)
            host.append(torch.from_numpy(np.stack([members[j][1].valid for j in nulls])))
        where = {j: r for r, j in enumerate(nulls)}
        for j, (key, _) in enumerate(members):
            layout.append((key, gi, j, vi if j in where else None, where.get(j)))
    return host, layout


def unpack_columns(tensors: Sequence[torch.Tensor], layout: list[tuple]) -> dict[str, Column]:
    """The columns of :func:`pack_columns`' layout as row views of ``tensors``."""
    return {key: Column(tensors[gi][j], None, None if vi is None else tensors[vi][vr])
            for key, gi, j, vi, vr in layout}  # fmt: skip


def load_env(
    raw_local: dict[str, Column],
    raw_global: dict[str, Column],
    device,
    non_blocking: bool = False,
    packed: bool = False,
) -> dict[str, Column]:
    """The raw columns as ``raw_l:<col>`` / ``raw_g:<col>`` on ``device``: one pin + copy per
    column and mask (``packed=False``, the eager path), or with ``packed`` (the CUDA-graph path,
    ``Config.graphs``) scalar numpy columns of one dtype and length travel packed
    (:func:`pack_columns`): one host buffer (pinned for a GPU), one copy, the columns are row
    views of it."""
    env = {}
    packable: dict[str, Column] = {}
    for tag, cols in (("l", raw_local), ("g", raw_global)):
        for name, c in cols.items():
            key = f"raw_{tag}:{name}"
            if packed and c.offsets is None and not c.is_torch:
                packable[key] = c
            else:
                env[key] = _to_device(c.to_torch("cpu"), device, non_blocking)
    if not packable:
        return env
    host, layout = pack_columns(packable)
    if device is not None and str(device) != "cpu":
        host = [h.pin_memory().to(device, non_blocking=non_blocking) for h in host]
    env.update(unpack_columns(host, layout))
    return env


def _to_device(t: Column, device, non_blocking: bool) -> Column:
    if device is None or str(device) == "cpu":
        return t
    return Column(*(None if x is None else x.pin_memory().to(device, non_blocking=non_blocking)
                    for x in (t.values, t.offsets, t.valid)))  # fmt: skip


def run_tasks(op: str, tasks: Sequence[Task], env: dict[str, Column]) -> None:
    """One fused launch of ``op`` over ``tasks`` (inputs from env, outputs into env)."""
    cols = [env[input_key(t)] for t in tasks]
    outs = fused.run(op, cols, [t.node.params for t in tasks], [t.node.out for t in tasks])
    for t, c in zip(tasks, outs):
        env[t.key] = c


def dense_tensor(env: dict[str, Column], keys: Sequence[str]) -> torch.Tensor:
    """``[B, D]`` float32 from the dense feature columns (one value per row each)."""
    return torch.stack([env[k].values.to(torch.float32) for k in keys], 1)


def sparse_batch(
    env: dict[str, Column],
    keys: Sequence[str],
    names: Sequence[str],
    fold: Sequence[int] | None = None,
):
    """A rec-common ``JaggedBatch`` (int64) from the owned sparse feature columns.

    ``fold``: optional rows per table; ids are taken modulo it (for capped tables).
    """
    from rec_common.jagged import JaggedBatch

    vals, offs = [], []
    for i, k in enumerate(keys):
        c = env[k]
        v = c.values.to(torch.int64)
        if fold is not None:
            v = torch.remainder(v, int(fold[i]))
        o = c.offsets if c.offsets is not None else torch.arange(c.num_rows + 1, device=v.device)
        vals.append(v)
        offs.append(o.to(torch.int64))
    return JaggedBatch(names, vals, offs)


def reference_features(graph: PrepGraph, raw: dict[str, Column]) -> dict[str, Column]:
    """Every feature computed line by line with the numpy reference (the CPU path)."""
    node_out: dict[int, Column] = {}
    raw_np = {k: c.to_numpy() for k, c in raw.items()}
    for n in graph.nodes:
        src = raw_np[n.source] if isinstance(n.source, str) else node_out[n.source]
        node_out[n.id] = _ref.apply(n.op, src, n.params, n.out)
    return {f.name: node_out[f.node] for f in graph.features}


class StageWorker:
    """Runs preprocessing jobs from a thread, in posting order, on its own CUDA stream.

    The artifact runs preprocessing in a second process under MPS and the trainer posts a
    token at each stage boundary; here the trainer posts a job (non-blocking) and this thread
    launches it, so a host sync inside a list op never stalls the trainer's launches.
    :meth:`wait` returns once every posted job has been launched, makes the current stream
    wait for the worker's stream, and re-raises the first error a job raised.
    """

    def __init__(self, device: torch.device) -> None:
        import queue
        import threading

        self.device = device
        self.cuda = device.type == "cuda"
        self.stream = torch.cuda.Stream(device) if self.cuda else None
        self.queue: queue.Queue = queue.Queue()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._loop, name="rap-preprocess", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        if self.cuda:
            torch.cuda.set_device(self.device)
        while True:
            job = self.queue.get()
            try:
                if job is None:
                    return
                if self.error is None:
                    if self.stream is not None:
                        with torch.cuda.stream(self.stream):
                            job()
                    else:
                        job()
            except BaseException as err:  # re-raised in wait()
                self.error = err
            finally:
                self.queue.task_done()

    def post(self, job) -> None:
        self.queue.put(job)

    def wait(self) -> None:
        self.queue.join()
        if self.error is not None:
            err, self.error = self.error, None
            raise RuntimeError(f"preprocessing failed: {err}") from err
        if self.stream is not None:
            torch.cuda.current_stream(self.device).wait_stream(self.stream)

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join(timeout=60)


class InlineStageWorker:
    """:class:`StageWorker`'s interface, with each job run at once on the caller's thread, on
    a side stream at the default priority: for the CUDA-graph path, whose jobs (a few copies
    from pinned memory, one graph replay per stage) never wait for the device. No second
    thread means no GIL handoff between the trainer's launches and the jobs. :meth:`wait`
    makes the current stream wait for the side stream."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None

    def post(self, job) -> None:
        if self.stream is None:
            job()
            return
        with torch.cuda.stream(self.stream):
            job()

    def wait(self) -> None:
        if self.stream is not None:
            torch.cuda.current_stream(self.device).wait_stream(self.stream)

    def close(self) -> None:
        pass
