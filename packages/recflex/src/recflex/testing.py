"""Test inputs shared by the tests and the GPU checks: random jagged batches with empty bags
and absent features, random tables, and a closeness check that prints where it fails."""

from __future__ import annotations

import torch

from rec_common.jagged import JaggedBatch


def random_batch(
    rows: list[int],
    batch_size: int,
    *,
    max_len: list[int] | int = 8,
    empty_frac: float = 0.2,
    absent: tuple[int, ...] = (),
    index_dtype: torch.dtype = torch.int64,
    seed: int = 0,
) -> JaggedBatch:
    """Bags of 0..max_len ids; ``empty_frac`` of bags forced empty; ``absent`` features empty."""
    g = torch.Generator().manual_seed(seed)
    nf = len(rows)
    maxes = [max_len] * nf if isinstance(max_len, int) else list(max_len)
    values, lengths = [], []
    for f in range(nf):
        n = torch.randint(0, maxes[f] + 1, (batch_size,), generator=g)
        n[torch.rand(batch_size, generator=g) < empty_frac] = 0
        if f in absent:
            n.zero_()
        values.append(torch.randint(0, rows[f], (int(n.sum()),), generator=g).to(index_dtype))
        lengths.append(n.to(index_dtype))
    return JaggedBatch.from_lengths([f"f{i}" for i in range(nf)], values, lengths)


def tables_for(rows: list[int], dims: list[int], dtype=torch.float32, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(r, d, generator=g).to(dtype) for r, d in zip(rows, dims)]


def assert_close(out: torch.Tensor, ref: torch.Tensor, atol: float = 1e-5, rtol: float = 1e-5):
    assert out.shape == ref.shape, f"shape {tuple(out.shape)} != {tuple(ref.shape)}"
    diff = (out.float().cpu() - ref.float().cpu()).abs()
    bad = diff > atol + rtol * ref.float().cpu().abs()
    if bool(bad.any()):
        pos = torch.nonzero(bad)[:5].tolist()
        raise AssertionError(
            f"{int(bad.sum())} of {bad.numel()} elements differ (max {float(diff.max()):.3e}); "
            f"first at {pos}: got {[float(out[tuple(p)]) for p in pos]}, "
            f"expected {[float(ref[tuple(p)]) for p in pos]}"
        )
