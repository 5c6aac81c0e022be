"""L2 pinning (L2P): choosing hot rows, and the two ways of keeping them in L2.

Hot rows are the top-N ids of a profiling trace by frequency; N defaults to what the
device's persisting-L2 set-aside holds (``MAX_PERSISTING_L2_CACHE_SIZE // row bytes``;
the paper's A100: 30 MiB / 512 B ~ 60K rows).

* Method (a), as the artifact: before a lookup, a kernel issues
  ``prefetch.global.L2::evict_last`` over the hot rows (:func:`pin_prefetch`; also what the
  ``l2p``/``combined`` variants of :func:`emb_kernels.embedding_bag` do with ``hot_rows``).
* Method (b), the CUDA way: the hot rows are gathered at the front of a remapped copy of the
  table (:class:`RemappedTable`, ids remapped once, at setup), the persisting-L2 limit is set
  and a stream access-policy window with ``hitProp=PERSISTING`` covers that front region
  (:class:`PersistingWindow`). The window is a stream attribute, so it needs a non-default
  stream.

>>> t = RemappedTable(torch.arange(10.0).view(5, 2), hot_rows=[3, 1])
>>> t.perm.tolist(), t.remap(torch.tensor([1, 3, 4])).tolist()
([3, 1, 0, 2, 4], [1, 0, 4])
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from emb_kernels import kernels
from emb_kernels import launch as L
from rec_common.generators import top_hot_ids


# ---------------------------------------------------------------------------- hot rows
def persisting_l2_max_bytes(device: torch.device | int | None = None) -> int:
    """The largest persisting-L2 set-aside of the device (0 when it has none)."""
    return L.device_attribute("MAX_PERSISTING_L2_CACHE_SIZE", device)


def hot_row_count(row_bytes: int, capacity_bytes: int) -> int:
    """How many rows of ``row_bytes`` fit in ``capacity_bytes`` (at least 0)."""
    if row_bytes < 1:
        raise ValueError(f"row_bytes must be >= 1, got {row_bytes}")
    return max(0, int(capacity_bytes) // int(row_bytes))


def select_hot_rows(
    trace: np.ndarray | Sequence[int] | Tensor,
    n: int | None = None,
    *,
    rows: int | None = None,
    row_bytes: int | None = None,
    device: torch.device | int | None = None,
) -> np.ndarray:
    """The ``n`` most frequent ids of ``trace`` (hottest first), ids >= ``rows`` dropped.

    Without ``n``, N = persisting-L2 max of ``device`` // ``row_bytes`` (needs a GPU and
    cuda-python; pass ``n`` on a CPU).
    """
    if isinstance(trace, Tensor):
        trace = trace.detach().cpu().numpy()
    trace = np.asarray(trace, dtype=np.int64)
    if trace.ndim != 1:
        raise ValueError(f"trace: expected a 1-D sequence of ids, got shape {trace.shape}")
    if rows is not None:
        trace = trace[(trace >= 0) & (trace < int(rows))]
    if n is None:
        if row_bytes is None:
            raise ValueError("select_hot_rows: pass n, or row_bytes to size N from the device")
        n = hot_row_count(row_bytes, persisting_l2_max_bytes(device))
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    return top_hot_ids(trace, int(n))


# ---------------------------------------------------------------------------- method (a)
def pin_prefetch(weight: Tensor, hot_rows: Tensor, step_bytes: int | None = None) -> None:
    """Enqueue the evict_last prefetch of ``hot_rows`` (int64 CUDA tensor) of ``weight``."""
    if step_bytes is None:
        kernels.launch_pin(weight, hot_rows)
    else:
        kernels.launch_pin(weight, hot_rows, step_bytes)


# ---------------------------------------------------------------------------- method (b)
class RemappedTable:
    """A copy of ``weight`` with ``hot_rows`` first (hottest first) and the rest in order.

    ``perm[new] = old`` and ``inverse[old] = new`` are bijections of ``[0, rows)``;
    ``remap(ids)`` gives the ids of the same rows in the copy (do it once, at setup).
    """

    def __init__(self, weight: Tensor, hot_rows: Sequence[int] | np.ndarray | Tensor) -> None:
        if not isinstance(weight, Tensor) or weight.dim() != 2:
            raise ValueError("weight: expected a 2-D tensor")
        rows = weight.shape[0]
        hot = torch.as_tensor(
            np.asarray(
                hot_rows.cpu().numpy() if isinstance(hot_rows, Tensor) else hot_rows, dtype=np.int64
            )
        )
        if hot.dim() != 1:
            raise ValueError(f"hot_rows: expected a 1-D list of ids, got shape {tuple(hot.shape)}")
        if hot.numel() and (int(hot.min()) < 0 or int(hot.max()) >= rows):
            raise ValueError(f"hot_rows: ids must be in [0, {rows}), got {hot.min()}..{hot.max()}")
        if torch.unique(hot).numel() != hot.numel():
            raise ValueError("hot_rows: ids must be distinct")
        is_hot = torch.zeros(rows, dtype=torch.bool)
        is_hot[hot] = True
        cold = torch.nonzero(~is_hot).squeeze(1)
        perm = torch.cat([hot, cold])
        inverse = torch.empty_like(perm)
        inverse[perm] = torch.arange(rows)
        self.num_hot = hot.numel()
        self.perm = perm.to(weight.device)
        self.inverse = inverse.to(weight.device)
        self.weight = weight.index_select(0, self.perm).contiguous()

    @property
    def hot_bytes(self) -> int:
        return self.num_hot * self.weight.shape[1] * self.weight.element_size()

    def remap(self, ids: Tensor) -> Tensor:
        """Ids of the copy for ids of the original (same dtype; ids must be in range)."""
        return self.inverse[ids.to(torch.int64)].to(ids.dtype)


class PersistingWindow:
    """Sets the persisting-L2 limit and an access-policy window on a stream (driver API).

    ``activate`` resets lines left persisting by an earlier window, raises the context's
    ``CU_LIMIT_PERSISTING_L2_CACHE_SIZE`` to cover the window (up to the device maximum) and
    sets the window (``hitRatio`` = limit / window bytes, at most 1; hits persist, misses
    stream). ``deactivate`` removes it and resets the lines. Both return their host time in
    microseconds, the "pin cost" of method (b).
    """

    def __init__(self, device: torch.device | int | None = None) -> None:
        self.device = L.device_index(device)
        L.ensure_context(self.device)
        self.max_persisting = persisting_l2_max_bytes(self.device)
        self.max_window = L.device_attribute("MAX_ACCESS_POLICY_WINDOW_SIZE", self.device)
        if self.max_persisting <= 0 or self.max_window <= 0:
            raise RuntimeError(
                "this GPU offers no persisting L2 set-aside (MAX_PERSISTING_L2_CACHE_SIZE = "
                f"{self.max_persisting}, MAX_ACCESS_POLICY_WINDOW_SIZE = {self.max_window})"
            )
        self.hit_ratio = 0.0
        self.limit = 0

    def _stream(self, stream: int | None) -> int:
        s = torch.cuda.current_stream(self.device).cuda_stream if stream is None else stream
        if s == 0:
            raise ValueError(
                "an access-policy window is a stream attribute and cannot be set on the default "
                "stream; run under `with torch.cuda.stream(torch.cuda.Stream()):`"
            )
        return s

    def activate(self, base_ptr: int, num_bytes: int, stream: int | None = None) -> float:
        drv = L.driver_module()
        s = self._stream(stream)
        t0 = time.perf_counter()
        check = L.check
        check(drv.cuCtxResetPersistingL2Cache(), "cuCtxResetPersistingL2Cache")
        want = min(int(num_bytes), self.max_persisting)
        if want > self.limit:
            check(
                drv.cuCtxSetLimit(drv.CUlimit.CU_LIMIT_PERSISTING_L2_CACHE_SIZE, want),
                "cuCtxSetLimit(PERSISTING_L2_CACHE_SIZE)",
            )
            self.limit = int(
                check(
                    drv.cuCtxGetLimit(drv.CUlimit.CU_LIMIT_PERSISTING_L2_CACHE_SIZE),
                    "cuCtxGetLimit",
                )
            )
        window = min(int(num_bytes), self.max_window)
        self.hit_ratio = 0.0 if window == 0 else min(1.0, self.limit / window)
        self._set_window(s, base_ptr, window, self.hit_ratio)
        return (time.perf_counter() - t0) * 1e6

    def deactivate(self, stream: int | None = None) -> float:
        drv = L.driver_module()
        s = self._stream(stream)
        t0 = time.perf_counter()
        self._set_window(s, 0, 0, 0.0)
        L.check(drv.cuCtxResetPersistingL2Cache(), "cuCtxResetPersistingL2Cache")
        return (time.perf_counter() - t0) * 1e6

    def _set_window(self, stream: int, base_ptr: int, num_bytes: int, hit_ratio: float) -> None:
        drv = L.driver_module()
        value = drv.CUstreamAttrValue()
        w = value.accessPolicyWindow
        w.base_ptr = int(base_ptr)
        w.num_bytes = int(num_bytes)
        w.hitRatio = float(hit_ratio)
        w.hitProp = drv.CUaccessProperty.CU_ACCESS_PROPERTY_PERSISTING
        w.missProp = drv.CUaccessProperty.CU_ACCESS_PROPERTY_STREAMING
        value.accessPolicyWindow = w
        L.check(
            drv.cuStreamSetAttribute(
                drv.CUstream(stream),
                drv.CUstreamAttrID.CU_LAUNCH_ATTRIBUTE_ACCESS_POLICY_WINDOW,
                value,
            ),
            "cuStreamSetAttribute(ACCESS_POLICY_WINDOW)",
        )


def window_bytes(table: RemappedTable) -> int:
    """Bytes of the hot region at the front of a remapped table (its window)."""
    return table.hot_bytes


def hot_fraction(ids, hot_rows) -> float:
    """Share of ``ids`` that fall on ``hot_rows`` (how much traffic the pinned set covers).
    Both may be tensors, arrays or lists."""

    def as_array(x) -> np.ndarray:
        if isinstance(x, Tensor):
            x = x.detach().cpu().numpy()
        return np.asarray(x, dtype=np.int64)

    ids = as_array(ids)
    if ids.size == 0:
        return 0.0
    return float(np.isin(ids, as_array(hot_rows)).mean())


def default_hot_rows(trace: np.ndarray, rows: int, row_bytes: int, device=None) -> np.ndarray:
    """Top-N of ``trace`` with N from the device's persisting limit (the L2P default)."""
    n = hot_row_count(row_bytes, persisting_l2_max_bytes(device))
    return select_hot_rows(trace, min(n, rows), rows=rows)


__all__ = [
    "PersistingWindow",
    "RemappedTable",
    "default_hot_rows",
    "hot_fraction",
    "hot_row_count",
    "persisting_l2_max_bytes",
    "pin_prefetch",
    "select_hot_rows",
    "window_bytes",
]
