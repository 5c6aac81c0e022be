"""FBGEMM's table-batched embedding (TBE) as a benchmark baseline, when it imports.

Two ops are tried, in this order (each flavor of the GPU machine's FBGEMM pack has one):

* ``IntNBitTableBatchedEmbeddingBagsCodegen`` (inference TBE) with FP32 weights and FP32
  output, ``bounds_check_mode=NONE`` (the bounds-check op is not in the inference pack; our
  inputs are validated once at setup instead); ids and offsets converted to int32 once;
* ``SplitTableBatchedEmbeddingBagsCodegen`` (training TBE), forward under ``no_grad``.

Weights are copied in from our tables, so FBGEMM reads the same values at the same ids.
:func:`status` says whether either op imports and, if not, why; nothing here raises on a
missing or broken FBGEMM until :func:`make_tbe` is called.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from functools import lru_cache

import torch
from torch import Tensor


@lru_cache(maxsize=1)
def status() -> tuple[str | None, str]:
    """(op kind or None, a one-line reason): 'inference', 'training' or None."""
    reasons = []
    try:
        import fbgemm_gpu  # noqa: F401
    except Exception as exc:  # a missing .so raises OSError/RuntimeError, not only ImportError
        return None, f"import fbgemm_gpu failed: {type(exc).__name__}: {exc}"
    version = getattr(__import__("fbgemm_gpu"), "__version__", "?")
    try:
        from fbgemm_gpu.split_table_batched_embeddings_ops_inference import (  # noqa: F401
            IntNBitTableBatchedEmbeddingBagsCodegen,
        )

        return "inference", f"fbgemm_gpu {version}: inference TBE"
    except Exception as exc:
        reasons.append(f"inference TBE: {type(exc).__name__}: {exc}")
    try:
        from fbgemm_gpu.split_table_batched_embeddings_ops_training import (  # noqa: F401
            SplitTableBatchedEmbeddingBagsCodegen,
        )

        return "training", f"fbgemm_gpu {version}: training TBE forward"
    except Exception as exc:
        reasons.append(f"training TBE: {type(exc).__name__}: {exc}")
    return None, f"fbgemm_gpu {version} imports but no TBE op does ({'; '.join(reasons)})"


def make_tbe(tables: Sequence[Tensor], mode: str = "sum") -> Callable[[Tensor, Tensor], Tensor]:
    """A callable ``(indices, offsets) -> [B, sum(dims)]`` over copies of ``tables`` (fp32,
    on one CUDA device), offsets in TBE layout (T*B+1). Raises RuntimeError when FBGEMM is
    unusable, naming why."""
    kind, why = status()
    if kind is None:
        raise RuntimeError(f"FBGEMM TBE is not available: {why}")
    if mode not in ("sum", "mean"):
        raise ValueError(f"FBGEMM TBE baseline: mode must be 'sum' or 'mean', got {mode!r}")
    for t in tables:
        if t.dtype != torch.float32 or t.dim() != 2 or t.device.type != "cuda":
            raise ValueError("FBGEMM TBE baseline: tables must be 2-D float32 CUDA tensors")
    logging.getLogger("fbgemm_gpu").setLevel(logging.ERROR)
    from fbgemm_gpu.split_embedding_configs import SparseType
    from fbgemm_gpu.split_table_batched_embeddings_ops_common import (
        BoundsCheckMode,
        EmbeddingLocation,
        PoolingMode,
    )

    pooling = PoolingMode.SUM if mode == "sum" else PoolingMode.MEAN
    device = tables[0].device
    if kind == "inference":
        from fbgemm_gpu.split_table_batched_embeddings_ops_inference import (
            IntNBitTableBatchedEmbeddingBagsCodegen as TBE,
        )

        tbe = TBE(
            [
                ("", t.shape[0], t.shape[1], SparseType.FP32, EmbeddingLocation.DEVICE)
                for t in tables
            ],
            device=device,
            pooling_mode=pooling,
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
        run.kind = kind  # type: ignore[attr-defined]
        return run
    from fbgemm_gpu.split_table_batched_embeddings_ops_training import (
        ComputeDevice,
    )
    from fbgemm_gpu.split_table_batched_embeddings_ops_training import (
        SplitTableBatchedEmbeddingBagsCodegen as TBE,
    )

    tbe = TBE(
        [(t.shape[0], t.shape[1], EmbeddingLocation.DEVICE, ComputeDevice.CUDA) for t in tables],
        pooling_mode=pooling,
        weights_precision=SparseType.FP32,
        output_dtype=SparseType.FP32,
        device=device,
    )
    with torch.no_grad():
        for w, t in zip(tbe.split_embedding_weights(), tables):
            w.copy_(t)
    tbe.eval()

    def run_training(indices: Tensor, offsets: Tensor) -> Tensor:
        with torch.no_grad():
            return tbe(indices, offsets)

    run_training.index_dtype = torch.int64  # type: ignore[attr-defined]
    run_training.kind = kind  # type: ignore[attr-defined]
    return run_training
