"""Multi-layer perceptrons described by arch strings such as ``"13-512-256-64"``.

Meta's DLRM writes layer widths joined by dashes (``--arch-mlp-bot 13-512-256-64``); every
model here accepts that form, a list of ints, or (where noted) a built :class:`MLP`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

from torch import Tensor, nn


def parse_arch(arch: str | Sequence[int], name: str = "arch") -> list[int]:
    """``"512-256-1"`` or ``[512, 256, 1]`` -> ``[512, 256, 1]``, every width >= 1.

    >>> parse_arch("13-512-256-64")
    [13, 512, 256, 64]
    """
    if isinstance(arch, str):
        parts = [p.strip() for p in arch.strip().split("-")]
        try:
            sizes = [int(p) for p in parts]
        except ValueError:
            raise ValueError(
                f"{name}: {arch!r} is not a dash-separated list of widths, e.g. '512-256-1'"
            ) from None
    else:
        try:
            sizes = [int(s) for s in arch]
        except (TypeError, ValueError):
            raise ValueError(
                f"{name}: expected widths like '512-256-1' or [512, 256, 1], got {arch!r}"
            ) from None
    if not sizes:
        raise ValueError(f"{name}: no layer widths given")
    for s in sizes:
        if s < 1:
            raise ValueError(f"{name}: widths must be >= 1, got {s} in {arch!r}")
    return sizes


class MLP(nn.Module):
    """Linear layers of ``sizes = [in, h1, ..., out]`` with ReLU between them.

    ``last_relu`` also puts a ReLU after the last layer (DLRM's bottom MLP does; a layer
    producing logits must not). Weights start as in Meta's DLRM: W ~ N(0, sqrt(2/(in+out))),
    b ~ N(0, sqrt(1/out)).

    >>> MLP([13, 64, 16])
    MLP(13-64-16, last_relu=False)
    """

    def __init__(self, sizes: str | Sequence[int], last_relu: bool = False) -> None:
        super().__init__()
        sizes = parse_arch(sizes, "sizes")
        if len(sizes) < 2:
            raise ValueError(f"sizes: an MLP needs an input and at least one layer, got {sizes}")
        self.sizes = tuple(sizes)
        self.last_relu = last_relu
        layers: list[nn.Module] = []
        for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
            linear = nn.Linear(n_in, n_out)
            nn.init.normal_(linear.weight, 0.0, math.sqrt(2.0 / (n_in + n_out)))
            nn.init.normal_(linear.bias, 0.0, math.sqrt(1.0 / n_out))
            layers.append(linear)
            if i < len(sizes) - 2 or last_relu:
                layers.append(nn.ReLU())
        self.layers = nn.Sequential(*layers)

    @property
    def in_features(self) -> int:
        return self.sizes[0]

    @property
    def out_features(self) -> int:
        return self.sizes[-1]

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)

    def __repr__(self) -> str:
        return f"MLP({'-'.join(map(str, self.sizes))}, last_relu={self.last_relu})"
