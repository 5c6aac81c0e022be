"""The four models of the paper's Figure 9, from rec-common, over cached or plain embeddings.

Sizes: ``"paper"`` follows the reference trainers at dim 48 (DLRM bottom 13-512-256-64-48,
top 1024-1024-1024-256-128-1; Wide&Deep deep 256-256-256-1; DCN-v2 2 low-rank (8) cross
layers and 1024-512-256; DeepFM 400-400-1), ``"small"`` is for tests and laptops.
Wide&Deep and DeepFM also learn one scalar per id (wide / first-order term): that table rides
in one extra column of the cached row (:func:`extra_columns`).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import torch
from torch import nn

from rec_common.models import DLRM, DCNv2, DeepFM, WideAndDeep

MODELS = ("dlrm", "wide-deep", "dcn", "deepfm")
SIZES = ("small", "paper")
_RNG_LOCK = threading.Lock()  # the global RNG is shared by threads (in-process trainers)


def extra_columns(model: str) -> int:
    """Columns a row carries beyond the embedding: 1 for Wide&Deep and DeepFM, else 0."""
    check_model(model)
    return 1 if model in ("wide-deep", "deepfm") else 0


def check_model(model: str) -> str:
    if model not in MODELS:
        raise ValueError(f"model: expected one of {MODELS}, got {model!r}")
    return model


def build_model(
    model: str,
    num_dense: int,
    dim: int,
    embedding: nn.Module,
    extra: nn.Module | None = None,
    size: str = "small",
    arch_mlp_bot: str | None = None,
    arch_mlp_top: str | None = None,
    seed: int = 0,
) -> nn.Module:
    """The model with the given embedding module(s); dense weights drawn from ``seed``."""
    check_model(model)
    if size not in SIZES:
        raise ValueError(f"size: expected one of {SIZES}, got {size!r}")
    paper = size == "paper"
    if extra_columns(model) and extra is None:
        raise ValueError(f"model {model!r} needs a second (1-wide) embedding module")
    with _RNG_LOCK, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if model == "dlrm":
            bot = arch_mlp_bot or (
                f"{num_dense}-512-256-64-{dim}" if paper else f"{num_dense}-32-{dim}"
            )
            top = arch_mlp_top or ("1024-1024-1024-256-128-1" if paper else "32-1")
            return DLRM.from_arch(bot, top, arch_sparse_feature_size=dim, embedding=embedding)
        if model == "wide-deep":
            deep = "256-256-256-1" if paper else "32-1"
            return WideAndDeep(num_dense, deep_mlp=deep, embedding=embedding, wide_embedding=extra)
        if model == "dcn":
            deep = "1024-512-256" if paper else "32"
            return DCNv2(num_dense, num_cross_layers=2, low_rank=8, deep_mlp=deep,
                         embedding=embedding)  # fmt: skip
        deep = "400-400-1" if paper else "32-1"
        return DeepFM(num_dense, deep_mlp=deep, embedding=embedding, first_order_embedding=extra)


def dense_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Parameters outside the embedding modules (the ones averaged across trainers)."""
    return [p for n, p in model.named_parameters() if not _is_embedding_param(n)]


def _is_embedding_param(name: str) -> bool:
    return name.split(".")[0] in ("embedding", "wide_embedding", "first_order_embedding")


def copy_dense(src: nn.Module, dst: nn.Module) -> None:
    """Copy ``src``'s dense parameters into ``dst`` (same architecture, other embeddings)."""
    state = {k: v for k, v in src.state_dict().items() if not _is_embedding_param(k)}
    missing, unexpected = dst.load_state_dict(state, strict=False)
    bad = [k for k in missing if not _is_embedding_param(k)] + list(unexpected)
    if bad:
        raise ValueError(f"copy_dense: the models differ in dense parameters {bad[:5]}")


def table_modules(model: nn.Module) -> Sequence[nn.Module]:
    """The embedding modules of a model, main one first."""
    out = [model.embedding]
    for name in ("wide_embedding", "first_order_embedding"):
        if hasattr(model, name):
            out.append(getattr(model, name))
    return out
