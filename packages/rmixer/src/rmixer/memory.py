"""Analytic peak-memory and FLOP estimate of one training job, from its config alone.

The model is built and run for one forward/backward on PyTorch's ``meta`` device (shapes
only, no memory), which gives exact parameter counts, the bytes autograd saves for backward
and the FLOPs of every linear layer. The artifact's formula is kept: input + parameters +
saved activations + gradients + optimizer state + runtime (CUDA context), each rounded up to
2 MiB blocks. :mod:`rmixer.knowledge` multiplies it by the measured/analytic ratio of
profiled jobs (the "corrected by measurement" part).

>>> from rmixer.configs import normalize
>>> est = estimate(normalize({"model": "dlrm", "batch_size": 256, "rows": 1000}, "demo"), "cuda")
>>> est.params_mb > 0 and est.total_mb > est.runtime_mb
True
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import lru_cache

import torch
from torch import nn

from rmixer import constants
from rmixer.configs import config_key
from rmixer.models import build_model, make_batches, optimizer_state_factor


def _blocks(nbytes: float) -> float:
    """Bytes -> MB rounded up to whole 2 MiB blocks."""
    block = constants.BLOCK_MB * 2**20
    return math.ceil(nbytes / block) * constants.BLOCK_MB


@dataclass(frozen=True)
class Estimate:
    """Analytic peak memory of one job (MB) and its FLOPs per iteration."""

    params_mb: float
    grads_mb: float
    optimizer_mb: float
    activations_mb: float
    inputs_mb: float
    runtime_mb: float
    flops_per_iter: float
    bytes_per_iter: float

    @property
    def total_mb(self) -> float:
        return (self.params_mb + self.grads_mb + self.optimizer_mb + self.activations_mb
                + self.inputs_mb + self.runtime_mb)  # fmt: skip

    def as_dict(self) -> dict:
        return {**asdict(self), "total_mb": self.total_mb}


def estimate(cfg: dict, device_kind: str = "cuda") -> Estimate:
    """Analytic estimate for a normalized config; ``device_kind`` is ``"cuda"`` or ``"cpu"``
    (it only changes the runtime term)."""
    params, saved, flops, inputs, emb_bytes = _meta_pass(config_key(cfg), _freeze(cfg))
    runtime = constants.CUDA_CONTEXT_MB if device_kind == "cuda" else constants.CPU_RUNTIME_MB
    return Estimate(
        params_mb=_blocks(params),
        grads_mb=_blocks(params),  # dense gradients, tables included
        optimizer_mb=_blocks(params * optimizer_state_factor(cfg)),
        activations_mb=_blocks(saved),
        inputs_mb=_blocks(inputs * constants.NUM_CACHED_BATCHES),
        runtime_mb=float(runtime),
        flops_per_iter=flops,
        # parameters read, gradients written, update read+write, plus the saved activations twice
        bytes_per_iter=params * (3 + 2 * optimizer_state_factor(cfg)) + 2 * saved + emb_bytes,
    )


def warm_up() -> None:
    """One estimate of a toy config: the first meta-device backward imports a lot (seconds),
    better at server start than on the first submission."""
    from rmixer.configs import normalize

    estimate(normalize({"model": "dlrm", "batch_size": 2, "rows": 4, "num_tables": 1,
                        "embedding_dim": 2, "bottom_mlp": "2", "top_mlp": "2-1"}, "warm-up"))  # fmt: skip


def _freeze(cfg: dict) -> tuple:
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in cfg.items()))


@lru_cache(maxsize=256)
def _meta_pass(key: str, frozen: tuple) -> tuple[float, float, float, float, float]:
    cfg = {k: list(v) if isinstance(v, tuple) else v for k, v in frozen}
    meta = torch.device("meta")
    with meta:
        model = build_model(cfg)
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    (inputs, labels), = make_batches({**cfg}, "cpu", n=1)  # fmt: skip
    input_bytes = labels.numel() * 4
    for x in inputs:
        if isinstance(x, torch.Tensor):
            input_bytes += x.numel() * x.element_size()
        else:  # JaggedBatch
            input_bytes += sum(v.numel() * v.element_size() for v in (*x.values, *x.offsets))
    meta_inputs = tuple(_to_meta(x) for x in inputs)
    flops = 0.0

    def count(mod: nn.Module, args, out) -> None:
        nonlocal flops
        x = args[0]
        rows = x.numel() // mod.in_features
        flops += 2.0 * rows * mod.in_features * mod.out_features

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, nn.Linear)]
    saved = 0

    def pack(t: torch.Tensor):
        nonlocal saved
        saved += t.numel() * t.element_size()
        return t

    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = model(*meta_inputs)
        out.sum().backward()
    finally:
        for h in hooks:
            h.remove()
    emb_rows = cfg["batch_size"] * cfg["pooling"] * cfg["num_tables"]
    emb_bytes = emb_rows * cfg["embedding_dim"] * 4 * 2
    return float(params), float(saved), 3.0 * flops, float(input_bytes), float(emb_bytes)


def _to_meta(x):
    if isinstance(x, torch.Tensor):
        return x.to("meta")
    return x.to("meta")  # JaggedBatch.to
