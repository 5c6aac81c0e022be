"""Many embedding tables looked up in one launch: the rec-common embedding contract.

:class:`TableBatchedEmbeddingBags` keeps every table in one flat parameter (table ``t`` at
element offset ``weight_offsets[t]``, ``rows[t] x dims[t]``, row-major) and pools a whole
:class:`~rec_common.jagged.JaggedBatch` (or TorchRec ``KeyedJaggedTensor``) into
``[B, sum(dims)]``, features concatenated in key order, as FBGEMM's TBE does. With
``variant="fast"`` on a GPU all tables go in one kernel launch; the paper variants launch once
per table. On CPU it runs the plain-torch reference per table.

>>> tbe = TableBatchedEmbeddingBags([10, 20], [4, 8])
>>> tbe(JaggedBatch.from_dense(torch.tensor([[1, 2], [3, 4]]))).shape
torch.Size([2, 12])
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from emb_kernels import errors, kernels, ops
from emb_kernels.autograd import TableBatchedFunction
from emb_kernels.constants import MODES
from emb_kernels.reference import embedding_bag_reference
from emb_kernels.validate import GPU_WEIGHT_DTYPES, describe_bad_id
from rec_common.jagged import JaggedBatch
from rec_common.models.embedding import check_batch_keys, default_keys


def concat_batch(batch: JaggedBatch, counts: Sequence[int]) -> tuple[Tensor, Tensor]:
    """``batch.concat_values()`` in 4 device ops whatever the feature count (the per-feature
    lengths, cat and cumsum there cost ~2 small kernels per feature): ids concatenated, and
    TBE offsets = each feature's offsets shifted by the ids before it (host ints from
    ``counts``). Assumes offsets start at 0, as validation checks; no synchronization."""
    vals = batch.values
    dtype = vals[0].dtype
    if any(v.dtype != dtype for v in vals):
        dtype = torch.int64
    values = torch.cat([v.to(dtype) for v in vals])
    t, b = len(vals), batch.batch_size
    offsets = torch.empty(t * b + 1, dtype=dtype, device=values.device)
    if b:
        shift = [0]
        for c in counts[:-1]:
            shift.append(shift[-1] + int(c))
        stacked = torch.stack([o[:-1].to(dtype) for o in batch.offsets])  # [T, B]
        base = torch.tensor(shift, dtype=dtype).to(values.device, non_blocking=True)
        torch.add(stacked, base[:, None], out=offsets[:-1].view(t, b))
    offsets[-1:].fill_(int(sum(counts)))
    return values, offsets


class TableBatchedEmbeddingBags(nn.Module):
    """Pooled lookups over ``len(table_sizes)`` tables; ``forward(batch) -> [B, sum(dims)]``.

    Args:
        table_sizes: rows of each table.
        dims: one embedding width for all tables, or one per table.
        mode: ``"sum"``, ``"mean"`` or ``"max"`` (weights: sum only, as torch).
        dtype: float32, float16 or bfloat16 (float64 on CPU); output has this dtype.
        variant: ``"fast"`` (one launch) or a paper variant (one launch per table).
        device: where the tables live (default: CPU).
        keys: feature names a batch must carry in order; None takes features by position.
        validate: check offsets and ids before the launch (one synchronization); with False
            a bad id is skipped by the kernel and reported by :func:`emb_kernels.check_errors`.
        fast_options: tuning knobs of the fast launch (``unroll``, ``block_warps``, ``hint``,
            ``coop``, ``split``, ``seg_unroll``, ...; see :func:`emb_kernels.kernels.plan_fast`).
        hot_rows: for the ``l2p``/``combined`` variants, one list of row ids per table (or
            None for a table) pinned in L2 before that table's lookup, on every forward (the
            pin is part of the forward's time, as in an inference server).

    The flat ``weights`` parameter starts with ``requires_grad=False`` (inference); set
    ``tbe.weights.requires_grad_(True)`` to train: the forward then runs the same lookup under
    :class:`emb_kernels.autograd.TableBatchedFunction`, whose backward fills ``weights.grad``.
    """

    def __init__(
        self,
        table_sizes: Sequence[int],
        dims: int | Sequence[int],
        mode: str = "sum",
        dtype: torch.dtype = torch.float32,
        variant: str = "fast",
        device: torch.device | str | None = None,
        *,
        keys: Sequence[str] | None = None,
        validate: bool = True,
        fast_options: dict | None = None,
        hot_rows: Sequence | None = None,
    ) -> None:
        super().__init__()
        sizes = tuple(int(n) for n in table_sizes)
        if not sizes:
            raise ValueError("table_sizes: expected at least one table, got none")
        for i, n in enumerate(sizes):
            if n < 1:
                raise ValueError(f"table_sizes[{i}]: expected >= 1 rows, got {n}")
        dims = (int(dims),) * len(sizes) if isinstance(dims, int) else tuple(int(d) for d in dims)
        if len(dims) != len(sizes):
            raise ValueError(f"dims: {len(dims)} widths for {len(sizes)} tables")
        for i, d in enumerate(dims):
            if d < 1:
                raise ValueError(f"dims[{i}]: expected a width >= 1, got {d}")
        if mode not in MODES:
            raise ValueError(f"mode: expected one of {MODES}, got {mode!r}")
        ops.resolve_variant(variant)
        self.positional_keys = keys is None
        self.keys = default_keys(len(sizes)) if keys is None else tuple(str(k) for k in keys)
        if len(self.keys) != len(sizes):
            raise ValueError(f"keys: {len(self.keys)} names for {len(sizes)} tables")
        self.table_sizes = sizes
        self.dims = dims
        self.mode = mode
        self.variant = variant
        self.validate = bool(validate)
        self.fast_options = dict(fast_options or {})
        offs = [0]
        for n, d in zip(sizes, dims):
            offs.append(offs[-1] + n * d)
        self.weight_offsets = tuple(offs[:-1])
        self.out_cols = tuple(sum(dims[:i]) for i in range(len(dims)))
        self.weights = nn.Parameter(
            torch.empty(offs[-1], dtype=dtype, device=device), requires_grad=False
        )
        self._plans: dict[tuple, kernels.FastPlan] = {}
        self.hot_rows = self._check_hot_rows(hot_rows, sizes, variant)
        self.reset_parameters()

    @staticmethod
    def _check_hot_rows(hot_rows, sizes, variant: str) -> list[Tensor | None] | None:
        if hot_rows is None:
            return None
        if variant not in ("l2p", "combined"):
            raise ValueError(
                f"hot_rows: only the 'l2p' and 'combined' variants pin, not {variant!r}"
            )
        if len(hot_rows) != len(sizes):
            raise ValueError(
                f"hot_rows: expected one entry per table ({len(sizes)}), got {len(hot_rows)}"
            )
        out: list[Tensor | None] = []
        for t, h in enumerate(hot_rows):
            if h is None:
                out.append(None)
                continue
            ids = torch.as_tensor(np.array(h.cpu() if isinstance(h, Tensor) else h, dtype=np.int64))
            if ids.dim() != 1:
                raise ValueError(
                    f"hot_rows[{t}]: expected a 1-D list of row ids, got shape {tuple(ids.shape)}"
                )
            if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= sizes[t]):
                raise ValueError(
                    f"hot_rows[{t}]: ids must be in [0, {sizes[t]}), got {int(ids.min())}..{int(ids.max())}"
                )
            out.append(ids)
        return out

    def reset_parameters(self) -> None:
        """U(-sqrt(1/n), sqrt(1/n)) per table of n rows (DLRM's init)."""
        with torch.no_grad():
            for t in range(len(self.table_sizes)):
                bound = math.sqrt(1.0 / self.table_sizes[t])
                self.table(t).uniform_(-bound, bound)

    def table(self, t: int) -> Tensor:
        """Table ``t`` as a ``[rows, dim]`` view of the flat parameter."""
        n, d, o = self.table_sizes[t], self.dims[t], self.weight_offsets[t]
        return self.weights.data[o : o + n * d].view(n, d)

    @property
    def sum_dims(self) -> int:
        return sum(self.dims)

    def extra_repr(self) -> str:
        return (
            f"tables={len(self.table_sizes)}, dims={self.dims}, mode={self.mode!r}, "
            f"variant={self.variant!r}, dtype={self.weights.dtype}"
        )

    # ------------------------------------------------------------------ forward
    def forward(self, batch) -> Tensor:
        if torch.is_grad_enabled() and self.weights.requires_grad:
            batch = self._as_jagged(batch)
            return TableBatchedFunction.apply(
                self.weights, self, batch, lambda: self._forward(batch)
            )
        return self._forward(batch)

    @staticmethod
    def _as_jagged(batch) -> JaggedBatch:
        if not isinstance(batch, JaggedBatch) and type(batch).__name__ == "KeyedJaggedTensor":
            return JaggedBatch.from_kjt(batch)
        return batch

    def _forward(self, batch) -> Tensor:
        if not isinstance(batch, JaggedBatch):
            if type(batch).__name__ == "KeyedJaggedTensor":
                batch = JaggedBatch.from_kjt(batch)
            else:
                raise TypeError(
                    "TableBatchedEmbeddingBags: expected a rec_common JaggedBatch or a TorchRec "
                    f"KeyedJaggedTensor, got {type(batch).__name__}"
                )
        check_batch_keys(
            batch, self.keys, positional=self.positional_keys, owner="TableBatchedEmbeddingBags"
        )
        device = self.weights.device
        if batch.device != device:
            raise ValueError(
                f"TableBatchedEmbeddingBags: the batch is on {batch.device} but the tables are "
                f"on {device}; move it with batch.to({str(device)!r})"
            )
        weights = batch.weights
        if weights is not None and self.mode != "sum":
            raise ValueError(
                f"per-sample weights are only supported with mode='sum' (got mode={self.mode!r}), "
                "as in torch.nn.functional.embedding_bag"
            )
        counts = [v.numel() for v in batch.values]
        fast = self.variant == "fast" and device.type == "cuda"
        values = offsets = None
        if self.validate or device.type != "cuda":
            # one synchronization (the flags are read on the host); validate=False skips it
            # and leaves bad ids to the kernels, which skip and report them
            values, offsets = batch.concat_values()
            self._validate(batch, values, counts)
        elif fast:
            values, offsets = concat_batch(batch, counts)
        b = batch.batch_size
        if device.type != "cuda":
            return self._forward_reference(batch)
        if self.weights.dtype not in GPU_WEIGHT_DTYPES:
            raise TypeError(
                f"the GPU kernels take float32, float16 or bfloat16, got {self.weights.dtype}"
            )
        errors.check_errors(sync=False)
        if fast:
            psw = None if weights is None else torch.cat(weights).to(self.weights.dtype)
            out = self.forward_concat(values, offsets, b, psw, counts=counts)
        else:
            out = torch.empty(b, self.sum_dims, dtype=self.weights.dtype, device=device)
            if b:
                self._launch_per_table(batch, out)
        if not self.validate:
            starts = [0]
            for c in counts:
                starts.append(starts[-1] + c)
            errors.watch(device, lambda t, pos: self._describe(batch, t, pos - starts[t]))
        return out

    def forward_concat(
        self,
        values: Tensor,
        offsets: Tensor,
        batch_size: int,
        per_sample_weights: Tensor | None = None,
        out: Tensor | None = None,
        counts: Sequence[int] | None = None,
    ) -> Tensor:
        """The fast launch on TBE's layout, no checks: ids of all tables concatenated
        feature-major, ``offsets`` of ``T * batch_size + 1`` entries (what
        ``JaggedBatch.concat_values`` gives). ``counts`` (ids per table, optional) lets the
        launch plan per table. ``forward`` checks, then calls this."""
        if out is None:
            out = torch.empty(batch_size, self.sum_dims, dtype=self.weights.dtype,
                              device=self.weights.device)  # fmt: skip
        if batch_size:
            mean = values.numel() / max(1, batch_size * len(self.table_sizes))
            self._launch_fast(values, offsets, per_sample_weights, out, batch_size, mean, counts)
        return out

    def _describe(self, batch: JaggedBatch, t: int, pos: int) -> str:
        v, o, _ = batch.feature(t)
        return (
            describe_bad_id(v, o, self.table_sizes[t], repr(batch.keys[t]) + f" (#{t})", pos=pos)
            + " (found by the kernel with validate=False; the id contributed nothing)"
        )

    def _validate(self, batch: JaggedBatch, values: Tensor, counts: list[int]) -> None:
        """Offsets (per feature) and ids (all tables in one pass): one sync when all is well."""
        flags = []
        for o in batch.offsets:
            flags.append(o[0] != 0)
            flags.append((o[1:] < o[:-1]).any() if o.numel() > 1 else o[0] != o[0])
        for v, o in zip(batch.values, batch.offsets):
            flags.append(o[-1] != v.numel())
        if values.numel():
            limits = torch.repeat_interleave(
                torch.tensor(self.table_sizes, dtype=values.dtype, device=values.device),
                torch.tensor(counts, device=values.device),
                output_size=values.numel(),
            )
            flags.append(((values < 0) | (values >= limits)).any())
        if not bool(torch.stack(flags).any()):
            return
        batch.validate(self.table_sizes)  # names feature, position and value
        raise AssertionError("validation flagged a problem JaggedBatch.validate did not find")

    def _forward_reference(self, batch: JaggedBatch) -> Tensor:
        outs = []
        for t in range(len(self.table_sizes)):
            v, o, w = batch.feature(t)
            w = None if w is None else w.to(self.weights.dtype)
            outs.append(embedding_bag_reference(self.table(t), v, o, self.mode, w))
        return torch.cat(outs, dim=1)

    def sharing(self, variant: str | None = None, fast_options: dict | None = None):
        """A module over the same tables (no copy) with another variant or fast options."""
        clone = copy.copy(self)
        if variant is not None:
            ops.resolve_variant(variant)
            clone.variant = variant
            if variant not in ("l2p", "combined"):
                clone.hot_rows = None
        if fast_options is not None:
            clone.fast_options = dict(fast_options)
        clone._plans = {}
        return clone

    def _launch_fast(
        self, values, offsets, psw, out, b: int, mean_pooling: float, counts=None
    ) -> None:
        align = kernels.pointer_alignment(self.weights, out)
        # the automatic choices change only at these pooling thresholds
        table_pooling = (
            [mean_pooling] * len(self.dims) if counts is None else [c / max(1, b) for c in counts]
        )
        thresholds = (
            mean_pooling >= kernels.FAST_SPLIT_MIN_POOLING,
            mean_pooling >= kernels.FAST_BLOCK_MODE_MIN_POOLING,
            tuple(kernels.segment_bag_counts(table_pooling)),
            tuple(
                kernels.FAST_SEGMENT_ROWS <= p < kernels.FAST_SPLIT_MIN_POOLING
                for p in table_pooling
            ),
        )
        opts = self.fast_options
        if opts.get("split") is not None or opts.get("split_min_pooling") is not None:
            parts = kernels.split_parts(table_pooling, opts.get("split"),
                                        opts.get("split_min_pooling"))  # fmt: skip
            thresholds = (*thresholds, tuple(parts))
        key = (b, values.dtype, align, thresholds, min(8, int(mean_pooling // 16)))
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = kernels.plan_fast(
                dtype=self.weights.dtype,
                index_dtype=values.dtype,
                rows=self.table_sizes,
                dims=self.dims,
                weight_offsets=self.weight_offsets,
                out_cols=self.out_cols,
                out_stride=self.sum_dims,
                batch=b,
                mode=self.mode,
                mean_pooling=mean_pooling,
                device=self.weights.device,
                pointer_align=align,
                table_pooling=table_pooling,
                **self.fast_options,
            )
        kernels.launch_fast(
            plan,
            values,
            offsets,
            self.weights,
            psw,
            out,
            num_tables=len(self.table_sizes),
            batch=b,
            out_stride=self.sum_dims,
            mode=self.mode,
            padding_idx=None,
            err=errors.error_word(out.device),
        )

    def _launch_per_table(self, batch: JaggedBatch, out: Tensor) -> None:
        for t in range(len(self.table_sizes)):
            v, o, w = batch.feature(t)
            w = None if w is None else w.to(self.weights.dtype)
            hot = None if self.hot_rows is None else self.hot_rows[t]
            if hot is not None and hot.device != self.weights.device:
                hot = self.hot_rows[t] = hot.to(self.weights.device)
            launcher = ops.make_launcher(
                self.table(t), v, o, self.mode, w, None, self.variant, hot_rows=hot,
                validate_input=False, include_last_offset=True, table=t,
            )  # fmt: skip
            launcher.pin()
            out[:, self.out_cols[t] : self.out_cols[t] + self.dims[t]] = launcher()
