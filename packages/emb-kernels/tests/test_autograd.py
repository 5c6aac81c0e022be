"""Gradients of emb_kernels' lookups against torch.nn.functional.embedding_bag's.

CPU runs in float64 (the reference path; the backward is the same torch code on every
device); the gpu-marked tests run the CUDA kernels' forward with that backward, in float32.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import emb_kernels
from emb_kernels import TableBatchedEmbeddingBags
from emb_kernels.constants import VARIANTS
from rec_common.jagged import JaggedBatch

LENGTHS = [0, 1, 3, 0, 7, 2, 0, 40, 5]  # empty bags first, between and (below) last


def make_case(index_dtype, dtype=torch.float64, device="cpu", rows=23, dim=5, lengths=LENGTHS,
              last_empty=True):  # fmt: skip
    lengths = list(lengths) + ([0] if last_empty else [])
    n = sum(lengths)
    weight = torch.randn(rows, dim, dtype=dtype, device=device)
    ids = torch.randint(0, rows, (n,), device=device).to(index_dtype)
    offsets = torch.tensor([0, *lengths[:-1]], device=device).cumsum(0).to(index_dtype)
    psw = torch.randn(n, dtype=dtype, device=device)
    return weight, ids, offsets, psw


def grads(fn, weight, psw=None):
    """(output, weight grad, psw grad) of ``fn(w, psw)`` against a fixed random cotangent."""
    w = weight.detach().clone().requires_grad_(True)
    p = None if psw is None else psw.detach().clone().requires_grad_(True)
    out = fn(w, p)
    cot = torch.randn_like(out, generator=torch.Generator(out.device.type).manual_seed(7))
    (out * cot).sum().backward()
    return out.detach(), w.grad, None if p is None else p.grad


@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64])
@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
@pytest.mark.parametrize("padding_idx", [None, 3, -1])
def test_weight_grad_matches_torch(index_dtype, mode, padding_idx):
    weight, ids, offsets, _ = make_case(index_dtype)
    ids[::4] = 3 if padding_idx == 3 else 22  # padding ids in several bags
    if mode == "max":  # ties: the first holder of the max gets the gradient, as torch
        weight[5] = weight[6]
        ids[1:3] = torch.tensor([5, 6], dtype=index_dtype)
    out, gw, _ = grads(lambda w, p: emb_kernels.embedding_bag(
        w, ids, offsets, mode, padding_idx=padding_idx, variant="fast"), weight)  # fmt: skip
    want, gw_t, _ = grads(lambda w, p: F.embedding_bag(
        ids, w, offsets, mode=mode, padding_idx=padding_idx), weight)  # fmt: skip
    torch.testing.assert_close(out, want)
    torch.testing.assert_close(gw, gw_t)
    assert gw.abs().sum() > 0


@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64])
@pytest.mark.parametrize("padding_idx", [None, 4])
def test_per_sample_weights_grads(index_dtype, padding_idx):
    weight, ids, offsets, psw = make_case(index_dtype)
    ids[::3] = 4
    out, gw, gp = grads(lambda w, p: emb_kernels.embedding_bag(
        w, ids, offsets, "sum", p, padding_idx, variant="baseline"), weight, psw)  # fmt: skip
    want, gw_t, gp_t = grads(lambda w, p: F.embedding_bag(
        ids, w, offsets, mode="sum", per_sample_weights=p, padding_idx=padding_idx),
        weight, psw)  # fmt: skip
    torch.testing.assert_close(out, want)
    torch.testing.assert_close(gw, gw_t)
    torch.testing.assert_close(gp, gp_t)


def test_2d_ids_include_last_offset_and_float32():
    weight = torch.randn(11, 4)
    ids = torch.randint(0, 11, (6, 3))
    _, gw, _ = grads(lambda w, p: emb_kernels.embedding_bag(w, ids, mode="mean"), weight)
    _, gw_t, _ = grads(lambda w, p: F.embedding_bag(ids, w, mode="mean"), weight)
    torch.testing.assert_close(gw, gw_t)
    flat = ids.reshape(-1)
    offsets = torch.tensor([0, 3, 3, 9, 18])
    _, gw, _ = grads(lambda w, p: emb_kernels.embedding_bag(
        w, flat, offsets, include_last_offset=True), weight)  # fmt: skip
    _, gw_t, _ = grads(lambda w, p: F.embedding_bag(flat, w, offsets, mode="sum", include_last_offset=True),
                       weight)  # fmt: skip
    torch.testing.assert_close(gw, gw_t)


def test_gradcheck_float64():
    weight, ids, offsets, psw = make_case(torch.int64, rows=7, dim=3, lengths=[2, 0, 4, 1])
    for mode in ("sum", "mean"):
        torch.autograd.gradcheck(
            lambda w, mode=mode: emb_kernels.embedding_bag(w, ids, offsets, mode),
            (weight.requires_grad_(True),),
        )
    torch.autograd.gradcheck(
        lambda w, p: emb_kernels.embedding_bag(w, ids, offsets, "sum", p),
        (weight, psw.requires_grad_(True)),
    )


def test_no_grad_path_unchanged_and_out_refused():
    weight, ids, offsets, _ = make_case(torch.int64)
    out = emb_kernels.embedding_bag(weight, ids, offsets)
    assert out.grad_fn is None and not out.requires_grad
    w = weight.clone().requires_grad_(True)
    with torch.no_grad():
        assert emb_kernels.embedding_bag(w, ids, offsets).grad_fn is None
    assert type(emb_kernels.embedding_bag(w, ids, offsets).grad_fn).__name__.startswith(
        "EmbeddingBagFunction"
    )
    with pytest.raises(ValueError, match="out: not supported when a gradient is needed"):
        emb_kernels.embedding_bag(w, ids, offsets, out=torch.empty_like(out))


def tbe_case(mode, device="cpu", dtype=torch.float64, weighted=False):
    sizes, dims = [13, 1, 29], [4, 2, 3]
    tbe = TableBatchedEmbeddingBags(sizes, dims, mode=mode, dtype=dtype, device=device)
    lengths = [[0, 2, 5, 1], [1, 0, 3, 0], [4, 4, 0, 9]]
    values, offsets, weights = [], [], []
    for n, ls in zip(sizes, lengths):
        values.append(torch.randint(0, n, (sum(ls),), device=device))
        offsets.append(torch.tensor([0, *ls], device=device).cumsum(0))
        weights.append(torch.randn(sum(ls), dtype=dtype, device=device))
    batch = JaggedBatch(["a", "b", "c"], values, offsets, weights if weighted else None)
    return tbe, batch


def tbe_torch_grads(tbe, batch, cot):
    """The same lookups with F.embedding_bag over copies of each table."""
    tables = [tbe.table(t).detach().clone().requires_grad_(True) for t in range(len(tbe.dims))]
    outs = []
    for t, tab in enumerate(tables):
        v, o, w = batch.feature(t)
        outs.append(F.embedding_bag(v, tab, o, mode=tbe.mode, per_sample_weights=w,
                                    include_last_offset=True))  # fmt: skip
    out = torch.cat(outs, dim=1)
    (out * cot).sum().backward()
    return out.detach(), [tab.grad for tab in tables]


@pytest.mark.parametrize("mode,weighted", [("sum", False), ("sum", True), ("mean", False),
                                           ("max", False)])  # fmt: skip
def test_table_batched_grad(mode, weighted):
    tbe, batch = tbe_case(mode, weighted=weighted)
    assert tbe(batch).grad_fn is None  # inference by default
    tbe.weights.requires_grad_(True)
    out = tbe(batch)
    cot = torch.randn_like(out)
    (out * cot).sum().backward()
    want, table_grads = tbe_torch_grads(tbe, batch, cot)
    torch.testing.assert_close(out.detach(), want)
    for t, g in enumerate(table_grads):
        n, d, o = tbe.table_sizes[t], tbe.dims[t], tbe.weight_offsets[t]
        torch.testing.assert_close(tbe.weights.grad[o : o + n * d].view(n, d), g)


def test_table_batched_trains():
    """A few SGD steps move the looked-up rows and only them."""
    tbe, batch = tbe_case("sum", dtype=torch.float32)
    tbe.weights.requires_grad_(True)
    before = tbe.weights.detach().clone()
    opt = torch.optim.SGD(tbe.parameters(), lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        tbe(batch).square().sum().backward()
        opt.step()
    moved = (tbe.weights.detach() != before).view(-1)
    read = torch.zeros_like(moved)
    for t in range(3):
        v = batch.values[t]
        o, d = tbe.weight_offsets[t], tbe.dims[t]
        for i in v.tolist():
            read[o + i * d : o + (i + 1) * d] = True
    assert torch.equal(moved, read)


# --------------------------------------------------------------------------------- GPU
@pytest.mark.gpu
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
def test_kernel_forward_grad_matches_torch_cuda(variant, mode):
    index_dtype = torch.int32 if mode == "mean" else torch.int64  # both, few launches
    weight, ids, offsets, psw = make_case(index_dtype, torch.float32, "cuda", rows=500, dim=64,
                                          lengths=LENGTHS * 20)  # fmt: skip
    psw = psw if mode == "sum" else None
    out, gw, gp = grads(lambda w, p: emb_kernels.embedding_bag(
        w, ids, offsets, mode, p, padding_idx=7, variant=variant), weight, psw)  # fmt: skip
    want, gw_t, gp_t = grads(lambda w, p: F.embedding_bag(
        ids, w, offsets, mode=mode, per_sample_weights=p, padding_idx=7), weight, psw)  # fmt: skip
    torch.testing.assert_close(out, want, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(gw, gw_t, rtol=1e-4, atol=1e-4)
    if gp is not None:
        torch.testing.assert_close(gp, gp_t, rtol=1e-4, atol=1e-4)


@pytest.mark.gpu
@pytest.mark.parametrize("variant", ["fast", "combined"])
@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
def test_table_batched_grad_cuda(variant, mode):
    tbe, batch = tbe_case(mode, "cuda", torch.float32, weighted=mode == "sum")
    tbe = tbe.sharing(variant)
    tbe.weights.requires_grad_(True)
    out = tbe(batch)
    cot = torch.randn_like(out)
    (out * cot).sum().backward()
    want, table_grads = tbe_torch_grads(tbe, batch, cot)
    torch.testing.assert_close(out.detach(), want, rtol=1e-4, atol=1e-4)
    for t, g in enumerate(table_grads):
        n, d, o = tbe.table_sizes[t], tbe.dims[t], tbe.weight_offsets[t]
        torch.testing.assert_close(tbe.weights.grad[o : o + n * d].view(n, d), g,
                                   rtol=1e-4, atol=1e-4)  # fmt: skip
