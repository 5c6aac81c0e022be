"""The backward of EmbeddingBag, so that a lookup through our kernels can train.

The kernels are forward-only; :class:`EmbeddingBagFunction` wraps whichever forward was chosen
(a CUDA kernel, or the CPU reference) and computes the weight gradient in device-agnostic
torch code: each id's bag gradient, times its per-sample weight (``sum``) or divided by its
bag's non-padding length (``mean``), is added to the row it read; padding ids and (with
``validate=False``) out-of-range ids get nothing. ``max`` sends a bag's gradient, per column,
to the first id holding the maximum (as torch's CPU and CUDA kernels do); the argmax is
recovered from the forward output, which the kernels do not otherwise expose. Only used
when a gradient is needed: inference calls never reach this module.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from emb_kernels.reference import bag_ids


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _kept(indices: Tensor, offsets: Tensor, rows: int, padding_idx: int | None):
    """(ids int64, bag of each id, keep mask) for the ids that reach a row."""
    ids = indices.to(torch.int64)
    bags = bag_ids(offsets, ids.numel())
    keep = (ids >= 0) & (ids < rows)
    if padding_idx is not None:
        keep &= ids != padding_idx
    return ids, bags, keep


def bag_backward(
    grad_out: Tensor,
    weight: Tensor,
    indices: Tensor,
    offsets: Tensor,
    mode: str,
    per_sample_weights: Tensor | None,
    padding_idx: int | None,
    out: Tensor | None = None,
    *,
    need_weight: bool = True,
    need_psw: bool = False,
) -> tuple[Tensor | None, Tensor | None]:
    """(grad of ``weight``, grad of ``per_sample_weights``) for one table.

    ``offsets`` has B+1 entries (the normalized form); ``out`` (the forward result) is needed
    for ``max``. Accumulates in float32 (float64 for float64 weights).
    """
    acc = _acc_dtype(weight.dtype)
    rows, dim = weight.shape
    ids, bags, keep = _kept(indices, offsets, rows, padding_idx)
    g = grad_out.to(acc)
    grad_w = grad_psw = None
    if mode == "max":
        if need_psw:
            raise ValueError("per_sample_weights: not supported with mode='max'")
        if out is None:
            raise ValueError("bag_backward: mode='max' needs the forward output")
        ids, bags = ids[keep], bags[keep]
        grad_w = torch.zeros(rows, dim, dtype=acc, device=weight.device)
        if ids.numel():
            vals = weight.index_select(0, ids)
            hit = vals == out.index_select(0, bags)  # [n, D]: this id holds its bag's max
            n = ids.numel()
            pos = torch.arange(n, device=weight.device).unsqueeze(1).expand(n, dim)
            first = torch.full((grad_out.shape[0], dim), n, dtype=torch.int64,
                               device=weight.device)  # fmt: skip
            first.scatter_reduce_(0, bags.unsqueeze(1).expand(n, dim),
                                  torch.where(hit, pos, n), reduce="amin")  # fmt: skip
            win = hit & (first.index_select(0, bags) == pos)
            grad_w.index_add_(0, ids, torch.where(win, g.index_select(0, bags), 0))
        return grad_w.to(weight.dtype), None
    rows_g = g.index_select(0, bags)  # [n, D]: each id's bag gradient
    if mode == "mean":
        counts = torch.bincount(bags[keep], minlength=grad_out.shape[0]).clamp(min=1)
        rows_g = rows_g / counts.to(acc).index_select(0, bags).unsqueeze(1)
    if need_psw and per_sample_weights is not None:
        safe = torch.where(keep, ids, 0)
        dots = (rows_g * weight.index_select(0, safe).to(acc)).sum(1)
        grad_psw = torch.where(keep, dots, 0).to(per_sample_weights.dtype)
    if need_weight:
        if per_sample_weights is not None:
            rows_g = rows_g * per_sample_weights.to(acc).unsqueeze(1)
        grad_w = torch.zeros(rows, dim, dtype=acc, device=weight.device)
        grad_w.index_add_(0, ids[keep], rows_g[keep])
        grad_w = grad_w.to(weight.dtype)
    return grad_w, grad_psw


class EmbeddingBagFunction(torch.autograd.Function):
    """``forward(weight, psw, inputs, run)``: ``run()`` is the chosen no-grad forward."""

    @staticmethod
    def forward(ctx, weight: Tensor, per_sample_weights, inputs, run: Callable[[], Tensor]):
        out = run()
        ctx.inputs = inputs
        ctx.save_for_backward(weight, per_sample_weights, out if inputs.mode == "max" else None)
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        weight, psw, out = ctx.saved_tensors
        b = ctx.inputs
        grad_w, grad_psw = bag_backward(
            grad_out, weight, b.indices, b.offsets, b.mode, psw, b.padding_idx, out,
            need_weight=ctx.needs_input_grad[0], need_psw=ctx.needs_input_grad[1],
        )  # fmt: skip
        return grad_w, grad_psw, None, None


class TableBatchedFunction(torch.autograd.Function):
    """``forward(flat_weights, module, batch, run)`` for :class:`TableBatchedEmbeddingBags`:
    the backward scatters each table's column block of the output gradient into its slice of
    the flat parameter."""

    @staticmethod
    def forward(ctx, weights: Tensor, module, batch, run: Callable[[], Tensor]):
        out = run()
        ctx.module, ctx.batch = module, batch
        ctx.save_for_backward(weights, out if module.mode == "max" else None)
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        weights, out = ctx.saved_tensors
        m, batch = ctx.module, ctx.batch
        grad = torch.zeros_like(weights)
        for t in range(len(m.table_sizes)):
            n, d, o, c = m.table_sizes[t], m.dims[t], m.weight_offsets[t], m.out_cols[t]
            v, offs, w = batch.feature(t)
            w = None if w is None else w.to(weights.dtype)
            table = weights[o : o + n * d].view(n, d)
            g, _ = bag_backward(
                grad_out[:, c : c + d], table, v, offs.to(v.dtype), m.mode, w, None,
                None if out is None else out[:, c : c + d],
            )  # fmt: skip
            grad[o : o + n * d] = g.reshape(-1)
        return grad, None, None, None
