"""The CPU path (plain-torch reference) against torch.nn.functional.embedding_bag.

Fresh random inputs each test (seeded by the root conftest); float64 is the ground truth.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import emb_kernels
from emb_kernels.reference import embedding_bag_reference, offset2bag_and_sizes

# dtype, relative tolerance of the output in that dtype against the float64 truth
DTYPES = [(torch.float32, 1e-5), (torch.float16, 2e-3), (torch.bfloat16, 1.6e-2)]
LENGTHS = [0, 1, 3, 149, 150, 151, 0, 1500, 2, 7]  # empty, odd, around 150, huge, odd last


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    out, ref = out.double(), ref.double()
    den = float(ref.norm())
    return float((out - ref).norm()) / den if den else float((out - ref).norm())


def assert_close(out, ref, tol, what=""):
    err = rel_err(out, ref)
    if not err <= tol:
        diff = (out.double() - ref.double()).abs()
        pos = divmod(int(diff.argmax()), out.shape[1]) if out.dim() == 2 else int(diff.argmax())
        raise AssertionError(
            f"{what}: relative error {err:.3e} > {tol:.1e}; first worst element {pos}: "
            f"{float(out[pos])} vs {float(ref[pos])}"
        )


def random_bags(rows, lengths, index_dtype, dim=13, dtype=torch.float32):
    weight = torch.randn(rows, dim, dtype=torch.float64).to(dtype)
    lengths_t = torch.tensor(lengths)
    n = int(lengths_t.sum())
    indices = torch.randint(0, rows, (n,), dtype=index_dtype)
    offsets = torch.zeros(len(lengths), dtype=index_dtype)
    offsets[1:] = torch.cumsum(lengths_t, 0)[:-1].to(index_dtype)
    return weight, indices, offsets


@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
@pytest.mark.parametrize("dtype,tol", DTYPES)
@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64])
@pytest.mark.parametrize("variant", ["baseline", "combined", "fast"])
def test_cpu_path_matches_torch_in_float64(mode, dtype, tol, index_dtype, variant):
    weight, indices, offsets = random_bags(997, LENGTHS, index_dtype, dtype=dtype)
    out = emb_kernels.embedding_bag(weight, indices, offsets, mode=mode, variant=variant)
    truth = F.embedding_bag(indices, weight.double(), offsets, mode=mode)
    assert out.dtype == dtype and out.shape == (len(LENGTHS), 13)
    assert_close(out, truth, tol, f"{mode} {dtype} {index_dtype}")
    empty = [i for i, n in enumerate(LENGTHS) if n == 0]
    assert bool((out[empty] == 0).all())


@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
def test_padding_idx_is_skipped_and_not_counted(mode):
    weight, indices, offsets = random_bags(50, [5, 4, 1, 6], torch.int64)
    indices[[0, 2, 5, 9]] = 7  # bag 2 holds only padding
    for pad in (7, 7 - 50):
        out = emb_kernels.embedding_bag(weight, indices, offsets, mode=mode, padding_idx=pad)
        truth = F.embedding_bag(indices, weight.double(), offsets, mode=mode, padding_idx=pad)
        assert_close(out, truth, 1e-6, f"padding {pad}")
    assert bool((out[2] == 0).all())


@pytest.mark.parametrize("dtype,tol", DTYPES)
def test_per_sample_weights_sum(dtype, tol):
    weight, indices, offsets = random_bags(300, LENGTHS, torch.int32, dtype=dtype)
    psw = torch.rand(indices.numel(), dtype=torch.float64).to(dtype)
    out = emb_kernels.embedding_bag(weight, indices, offsets, per_sample_weights=psw)
    truth = F.embedding_bag(
        indices, weight.double(), offsets, mode="sum", per_sample_weights=psw.double()
    )
    assert_close(out, truth, tol, "weighted")


def test_one_row_table_and_include_last_offset():
    weight = torch.randn(1, 5)
    indices = torch.zeros(7, dtype=torch.int64)
    offsets = torch.tensor([0, 3, 3, 7])
    out = emb_kernels.embedding_bag(weight, indices, offsets, include_last_offset=True)
    truth = F.embedding_bag(indices, weight.double(), offsets, mode="sum", include_last_offset=True)
    assert out.shape == (3, 5)
    assert_close(out, truth, 1e-6, "one row")


def test_two_dimensional_indices():
    weight = torch.randn(40, 6)
    idx = torch.randint(0, 40, (9, 4))
    psw = torch.rand(9, 4)
    out = emb_kernels.embedding_bag(weight, idx, per_sample_weights=psw)
    truth = F.embedding_bag(idx, weight.double(), mode="sum", per_sample_weights=psw.double())
    assert_close(out, truth, 1e-6, "2-D")


def test_mixed_index_dtypes_are_promoted():
    weight, indices, offsets = random_bags(64, [3, 0, 5], torch.int32)
    out = emb_kernels.embedding_bag(weight, indices, offsets.to(torch.int64), mode="mean")
    truth = F.embedding_bag(indices.long(), weight.double(), offsets.long(), mode="mean")
    assert_close(out, truth, 1e-6, "mixed")


def test_reference_exact_in_float64_and_aux_outputs():
    weight, indices, offsets = random_bags(128, LENGTHS, torch.int64, dtype=torch.float64)
    full = torch.cat([offsets, torch.tensor([indices.numel()])])
    for mode in ("sum", "mean", "max"):
        ref = embedding_bag_reference(weight, indices, full, mode, padding_idx=3)
        truth = F.embedding_bag(indices, weight, offsets, mode=mode, padding_idx=3)
        assert ref.dtype == torch.float64
        assert_close(ref, truth, 1e-12, mode)
    bags, sizes = offset2bag_and_sizes(indices, full, padding_idx=3)
    assert bags.tolist() == [b for b, n in enumerate(LENGTHS) for _ in range(n)]
    expect = [
        int((indices[int(full[b]) : int(full[b + 1])] != 3).sum()) for b in range(len(LENGTHS))
    ]
    assert sizes.tolist() == expect


def test_out_argument_receives_the_result():
    weight, indices, offsets = random_bags(20, [2, 3], torch.int64)
    out = torch.full((2, 13), float("nan"))
    res = emb_kernels.embedding_bag(weight, indices, offsets, out=out)
    assert res is out
    assert bool(torch.isfinite(out).all())
