"""FBGEMM's table-batched embedding (TBE) as a benchmark baseline, when it works.

Two TBE kinds are tried, in this order (each flavor of the GPU machine's FBGEMM pack has one):

* ``inference``: ``IntNBitTableBatchedEmbeddingBagsCodegen`` with FP32 weights and FP32
  output, ``bounds_check_mode=NONE`` (the bounds-check op is not in the inference pack; our
  inputs are validated once at setup instead); ids and offsets converted to int32 once;
* ``training-forward``: ``SplitTableBatchedEmbeddingBagsCodegen``, forward under ``no_grad``.

A kind counts only once it has been *constructed and run once* (a Python class can import
while its C++ ops are missing: H200 run 2's training-forward pack imported the inference class,
which then failed with "Tried to instantiate class 'fbgemm.AtomicCounter'"). Any exception
falls through to the next kind and is kept as the reason. Weights are copied in from our
tables, so FBGEMM reads the same values at the same ids. Nothing here raises on a missing or
broken FBGEMM until :func:`make_tbe` is called.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor

KINDS = ("inference", "training-forward")  # the order they are tried in
SMOKE_ROWS, SMOKE_DIM = 8, 32  # the probe's table


def _common():
    from fbgemm_gpu.split_embedding_configs import SparseType
    from fbgemm_gpu.split_table_batched_embeddings_ops_common import (
        BoundsCheckMode,
        EmbeddingLocation,
        PoolingMode,
    )

    return SparseType, BoundsCheckMode, EmbeddingLocation, PoolingMode


def _build_inference(tables: Sequence[Tensor], mode: str) -> Callable[[Tensor, Tensor], Tensor]:
    from fbgemm_gpu.split_table_batched_embeddings_ops_inference import (
        IntNBitTableBatchedEmbeddingBagsCodegen as TBE,
    )

    SparseType, BoundsCheckMode, EmbeddingLocation, PoolingMode = _common()
    device = tables[0].device
    where = EmbeddingLocation.DEVICE if device.type == "cuda" else EmbeddingLocation.HOST
    tbe = TBE(
        [("", t.shape[0], t.shape[1], SparseType.FP32, where) for t in tables],
        device=device,
        pooling_mode=PoolingMode.SUM if mode == "sum" else PoolingMode.MEAN,
        output_dtype=SparseType.FP32,
        bounds_check_mode=BoundsCheckMode.NONE,
    )
    tbe.fill_random_weights()
    with torch.no_grad():
        for (wt, _), t in zip(tbe.split_embedding_weights(), tables):
            row_bytes = t.shape[1] * 4
            wt[:, :row_bytes].copy_(t.contiguous().view(torch.uint8))

    def run(indices: Tensor, offsets: Tensor) -> Tensor:
        return tbe(indices, offsets)

    run.index_dtype = torch.int32  # type: ignore[attr-defined]
    return run


def _build_training_forward(
    tables: Sequence[Tensor], mode: str
) -> Callable[[Tensor, Tensor], Tensor]:
    from fbgemm_gpu.split_table_batched_embeddings_ops_training import (
        ComputeDevice,
    )
    from fbgemm_gpu.split_table_batched_embeddings_ops_training import (
        SplitTableBatchedEmbeddingBagsCodegen as TBE,
    )

    SparseType, _, EmbeddingLocation, PoolingMode = _common()
    device = tables[0].device
    cuda = device.type == "cuda"
    where = EmbeddingLocation.DEVICE if cuda else EmbeddingLocation.HOST
    compute = ComputeDevice.CUDA if cuda else ComputeDevice.CPU
    tbe = TBE(
        [(t.shape[0], t.shape[1], where, compute) for t in tables],
        pooling_mode=PoolingMode.SUM if mode == "sum" else PoolingMode.MEAN,
        weights_precision=SparseType.FP32,
        output_dtype=SparseType.FP32,
        device=device,
    )
    with torch.no_grad():
        for w, t in zip(tbe.split_embedding_weights(), tables):
            w.copy_(t)
    tbe.eval()

    def run(indices: Tensor, offsets: Tensor) -> Tensor:
        with torch.no_grad():
            return tbe(indices, offsets)

    run.index_dtype = torch.int64  # type: ignore[attr-defined]
    return run


_BUILDERS = {"inference": _build_inference, "training-forward": _build_training_forward}


def _run_once(run: Callable, tables: Sequence[Tensor], mode: str) -> None:
    """One bag per table (ids 0 and last row), checked against ``F.embedding_bag``: a kind
    whose ops are missing or wrong fails here, not inside a timed loop."""
    ids, offs, refs = [], [0], []
    for t in tables:
        rows = torch.tensor([0, t.shape[0] - 1], device=t.device)
        ids.append(rows)
        offs.append(offs[-1] + 2)
        refs.append(F.embedding_bag(rows, t, torch.tensor([0], device=t.device), mode=mode))
    dt = run.index_dtype  # type: ignore[attr-defined]
    device = tables[0].device
    out = run(torch.cat(ids).to(dt), torch.tensor(offs, dtype=dt, device=device))
    ref = torch.cat(refs, 1)
    if tuple(out.shape) != tuple(ref.shape):
        raise RuntimeError(f"output shape {tuple(out.shape)}, expected {tuple(ref.shape)}")
    if not torch.allclose(out.float(), ref, rtol=1e-4, atol=1e-5):
        err = (out.float() - ref).abs().max().item()
        raise RuntimeError(f"first run differs from F.embedding_bag (max abs error {err:.3g})")


def make_tbe(
    tables: Sequence[Tensor], mode: str = "sum", kinds: Sequence[str] = KINDS
) -> Callable[[Tensor, Tensor], Tensor]:
    """A callable ``(indices, offsets) -> [B, sum(dims)]`` over copies of ``tables`` (2-D fp32
    on one device), offsets in TBE layout (T*B+1), from the first of ``kinds`` that builds and
    runs once correctly. The callable has ``kind``, ``index_dtype`` and ``skipped`` (why the
    kinds before it failed). Raises RuntimeError naming every kind's failure."""
    if mode not in ("sum", "mean"):
        raise ValueError(f"FBGEMM TBE baseline: mode must be 'sum' or 'mean', got {mode!r}")
    if not tables:
        raise ValueError("FBGEMM TBE baseline: tables is empty, expected at least one table")
    device = tables[0].device
    for t in tables:
        if t.dtype != torch.float32 or t.dim() != 2 or t.device != device:
            raise ValueError(
                "FBGEMM TBE baseline: tables must be 2-D float32 tensors on one device, got "
                f"{t.dtype} of shape {tuple(t.shape)} on {t.device} (first table on {device})"
            )
    bad = [k for k in kinds if k not in _BUILDERS]
    if bad or not kinds:
        raise ValueError(f"FBGEMM TBE baseline: kinds {list(kinds)}: expected some of {KINDS}")
    try:
        import fbgemm_gpu
    except Exception as exc:  # a missing .so raises OSError/RuntimeError, not only ImportError
        raise RuntimeError(
            f"FBGEMM TBE is not available: import fbgemm_gpu failed: {type(exc).__name__}: {exc}"
        ) from exc
    version = getattr(fbgemm_gpu, "__version__", "?")
    logging.getLogger("fbgemm_gpu").setLevel(logging.ERROR)
    skipped = []
    for kind in kinds:
        try:
            run = _BUILDERS[kind](tables, mode)
            _run_once(run, tables, mode)
        except Exception as exc:
            skipped.append(f"{kind}: {type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}")
            continue
        run.kind = kind  # type: ignore[attr-defined]
        run.skipped = skipped  # type: ignore[attr-defined]
        run.version = version  # type: ignore[attr-defined]
        return run
    raise RuntimeError(
        f"FBGEMM TBE is not available: fbgemm_gpu {version} imports but no TBE kind builds "
        f"and runs ({'; '.join(skipped)})"
    )


def probe(device: str | torch.device = "cuda") -> tuple[str | None, str]:
    """(kind or None, one-line reason) from building and running each kind on a tiny table
    on ``device``: what the benchmark will get, not merely what imports."""
    g = torch.Generator().manual_seed(0)
    table = torch.randn(SMOKE_ROWS, SMOKE_DIM, generator=g).to(device)
    try:
        run = make_tbe([table])
    except Exception as exc:
        return None, str(exc).removeprefix("FBGEMM TBE is not available: ")
    why = f"fbgemm_gpu {run.version}: {run.kind} TBE"  # type: ignore[attr-defined]
    if run.skipped:  # type: ignore[attr-defined]
        why += f" (skipped {'; '.join(run.skipped)})"  # type: ignore[attr-defined]
    return run.kind, why  # type: ignore[attr-defined]


@lru_cache(maxsize=1)
def status() -> tuple[str | None, str]:
    """:func:`probe` on the CUDA device, once per process: ('inference' |
    'training-forward' | None, reason)."""
    if not torch.cuda.is_available():
        return None, "no CUDA device to probe FBGEMM TBE on"
    return probe("cuda")
