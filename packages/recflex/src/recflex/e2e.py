"""The end-to-end inference model of RecFlex's evaluation: lookup, concat, MLP 1024-256-128-1.

Every variant's lookup already returns the features concatenated as ``[B, sum of dims]``;
the model adds nothing but the MLP ``Linear(sum_dims, 1024)-ReLU-Linear(1024, 256)-ReLU-
Linear(256, 128)-ReLU-Linear(128, 1)``. :func:`make_mlp` seeds its weights, so every variant
(and every run) multiplies by the same MLP. :func:`per_batch_latency` times one forward per
batch with rec-common's :func:`~rec_common.timing.benchmark` (CUDA events on a GPU).

>>> make_mlp(48)
MLP(48-1024-256-128-1, last_relu=False)
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import torch

from rec_common.models.mlp import MLP
from rec_common.timing import benchmark

MLP_ARCH = (1024, 256, 128, 1)
MLP_SEED = 0


def make_mlp(sum_dims: int, device: torch.device | str = "cpu", seed: int = MLP_SEED) -> MLP:
    """The MLP ``sum_dims-1024-256-128-1`` in eval mode, weights drawn from ``seed``."""
    if sum_dims < 1:
        raise ValueError(f"sum_dims: expected >= 1 (the lookup's output width), got {sum_dims}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mlp = MLP([sum_dims, *MLP_ARCH])
    return mlp.to(device).eval().requires_grad_(False)


def forward_fn(
    lookup: Callable[[object], torch.Tensor], mlp: MLP
) -> Callable[[object], torch.Tensor]:
    """``prepared -> [B, 1]``: the variant's lookup, then the MLP, without autograd."""

    def forward(prepared):
        with torch.no_grad():
            return mlp(lookup(prepared))

    return forward


def per_batch_latency(
    forward: Callable[[object], object],
    staged: Sequence[object],
    *,
    repeats: int = 1,
    device: torch.device | str = "cuda",
) -> list[float]:
    """One latency (us) per call of ``forward`` over ``staged`` in order, ``repeats`` passes,
    after one untimed warm-up pass."""
    if not staged:
        raise ValueError("staged: no batches to time")
    if repeats < 1:
        raise ValueError(f"repeats: expected >= 1, got {repeats}")
    batches = itertools.cycle(staged)
    t = benchmark(
        lambda: forward(next(batches)),
        warmup=len(staged),
        iters=len(staged) * repeats,
        device=device,
    )
    return list(t.samples)
