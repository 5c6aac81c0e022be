"""The systems RecFlex is compared with, each as ``build(tables) -> (prepare, run)``.

``prepare(packed)`` does a variant's host work and copies (not timed), ``run(prepared)``
launches its GPU work and returns ``[B, sum of dims]``. FBGEMM and TorchRec are optional:
:func:`available` says why one cannot run (an import error) instead of failing.

- ``torch``: one ``F.embedding_bag(mode="sum")`` per feature plus ``torch.cat``
  (a stand-in for the paper's TF gather/segment_sum per feature).
- ``fbgemm-tbe``: FBGEMM's TBE through :func:`rec_common.fbgemm_tbe.make_tbe`: the inference
  TBE (fp32 weights, one table per feature, bounds checks off), else the training TBE's forward
  under ``no_grad`` (the FBGEMM build that has TorchRec has only that one).
- ``torchrec``: TorchRec's ``FusedEmbeddingBagCollection`` forward on a KeyedJaggedTensor.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from recflex.inputs import Packed

BASELINES = ("torch", "fbgemm-tbe", "torchrec")


def available(name: str) -> str | None:
    """``None`` when baseline ``name`` can run here, else the reason it cannot."""
    if name not in BASELINES:
        raise ValueError(f"baseline {name!r}: expected one of {BASELINES}")
    if name == "torch":
        return None
    try:
        import fbgemm_gpu  # noqa: F401
    except Exception as exc:  # ImportError, or an OSError from a mismatched .so
        return f"import fbgemm_gpu failed: {type(exc).__name__}: {exc}"
    if name == "torchrec":
        try:
            from torchrec.modules.fused_embedding_modules import (  # noqa: F401
                FusedEmbeddingBagCollection,
            )
        except Exception as exc:
            return f"import torchrec failed: {type(exc).__name__}: {exc}"
    return None


Prepared = object
Variant = tuple[Callable[[Packed], Prepared], Callable[[Prepared], torch.Tensor]]


def build(name: str, tables: Sequence[torch.Tensor]) -> Variant:
    """``(prepare, run)`` of baseline ``name`` over ``tables`` (on their device)."""
    reason = available(name)
    if reason:
        raise ImportError(f"baseline {name} cannot run here: {reason}")
    if name == "torch":
        return _torch(tables)
    if name == "fbgemm-tbe":
        return _tbe(tables)
    return _torchrec(tables)


def _torch(tables):
    dev = tables[0].device

    def prepare(p: Packed):
        c = p.to("cpu", torch.int64)
        out = []
        for f, w in enumerate(tables):  # per-feature slices: host work, not timed
            ids, offs = c.feature(f)
            out.append((ids.to(dev, non_blocking=True), offs.to(dev, non_blocking=True), w))
        return out

    def run(prep):
        outs = [
            F.embedding_bag(ids, w, o, mode="sum", include_last_offset=True) for ids, o, w in prep
        ]
        return torch.cat(outs, dim=1)

    return prepare, run


def _tbe(tables):
    from rec_common.fbgemm_tbe import make_tbe

    dev = tables[0].device
    run_tbe = make_tbe([t.float() for t in tables])  # inference TBE, else training forward

    def prepare(p: Packed):
        g = p.to(dev, run_tbe.index_dtype)
        return g.indices, g.offsets

    def run(prep):
        return run_tbe(prep[0], prep[1])

    run.kind = run_tbe.kind  # type: ignore[attr-defined]
    return prepare, run


def _torchrec(tables):
    from torchrec.modules.embedding_configs import EmbeddingBagConfig, PoolingType
    from torchrec.modules.fused_embedding_modules import FusedEmbeddingBagCollection
    from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

    dev = tables[0].device
    names = [f"f{i}" for i in range(len(tables))]
    cfgs = [
        EmbeddingBagConfig(
            name=f"t{i}",
            embedding_dim=t.shape[1],
            num_embeddings=t.shape[0],
            feature_names=[names[i]],
            pooling=PoolingType.SUM,
        )
        for i, t in enumerate(tables)
    ]
    febc = FusedEmbeddingBagCollection(
        tables=cfgs, optimizer_type=torch.optim.SGD, optimizer_kwargs={"lr": 0.01}, device=dev
    )
    with torch.no_grad():
        state = febc.state_dict()
        for i, t in enumerate(tables):
            key = next(k for k in state if k.endswith(f".t{i}.weight") or k == f"t{i}.weight")
            state[key].copy_(t.float())

    def prepare(p: Packed):
        g = p.to(dev, torch.int32)
        return KeyedJaggedTensor(
            keys=names, values=g.indices, offsets=g.offsets, stride=g.batch_size
        )

    def run(kjt):
        with torch.no_grad():
            return febc(kjt).values()

    return prepare, run
