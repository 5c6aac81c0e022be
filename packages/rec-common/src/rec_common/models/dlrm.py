"""DLRM (Naumov et al., 2019): bottom MLP, embedding bags, pairwise interaction, top MLP.

Follows Meta's ``dlrm_s_pytorch.py``: the bottom MLP maps the dense features to a vector of
the embedding width; the ``"dot"`` interaction takes the dot products of every pair among
[bottom output, embedding 1, ..., embedding F] (the strict lower triangle,
``arch_interaction_itself=False``) and concatenates them with the bottom output; the top
MLP maps that to one logit. With F sparse features of width d the top MLP's input is
``d + (F+1)*F/2`` for ``"dot"`` and ``d*(F+1)`` for ``"cat"``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from rec_common.jagged import JaggedBatch
from rec_common.models.base import check_inputs, check_num_dense, lookup, resolve_embedding
from rec_common.models.mlp import MLP, parse_arch

INTERACTIONS = ("dot", "cat")


def interaction_width(num_sparse: int, dim: int, interaction: str = "dot") -> int:
    """Width of the interaction output (the top MLP's input).

    >>> interaction_width(26, 16)   # Criteo: 16 + 27*26/2
    367
    """
    if interaction == "dot":
        return dim + (num_sparse + 1) * num_sparse // 2
    if interaction == "cat":
        return dim * (num_sparse + 1)
    raise ValueError(f"interaction: expected one of {INTERACTIONS}, got {interaction!r}")


class DLRM(nn.Module):
    """Meta's DLRM, returning raw logits ``[B]`` (train with ``nn.BCEWithLogitsLoss``).

    Args:
        num_dense: dense features per sample (13 for Criteo).
        table_sizes: rows per sparse feature; builds the default embedding
            ``TorchEmbeddingBags(table_sizes, embedding_dim, mode="sum")``.
        embedding_dim: width of every embedding; defaults to the bottom MLP's last width.
        bottom_mlp: bottom MLP widths, e.g. ``"512-256-16"``. A leading width equal to
            ``num_dense`` is read as the input, so Meta's ``"13-512-256-16"`` means the same
            (write ``"13-13-64"`` for a first hidden layer of width 13). The last width must
            equal the embedding width.
        top_mlp: top MLP widths after its input, ending in 1, e.g. ``"512-256-1"`` (Meta's
            ``--arch-mlp-top``); the input width is computed from the interaction
            (:func:`interaction_width`). A built :class:`MLP` is also accepted and its input
            width checked.
        interaction: ``"dot"`` (pairwise dot products) or ``"cat"`` (concatenation; then
            embedding widths may differ from each other and from the bottom output).
        embedding: a module obeying the embedding contract (see
            :mod:`rec_common.models.embedding`) to use instead of the default.
        keys: feature names for the default embedding (``None``: match by position).
        sparse_grad: sparse gradients for the default embedding's tables.

    >>> m = DLRM(num_dense=13, table_sizes=[10] * 26, embedding_dim=16,
    ...          bottom_mlp="512-256-16", top_mlp="512-256-1")
    >>> m.top_mlp.in_features
    367
    """

    def __init__(
        self,
        num_dense: int,
        table_sizes: Sequence[int] | None = None,
        embedding_dim: int | None = None,
        bottom_mlp: str | Sequence[int] = "512-256-64",
        top_mlp: str | Sequence[int] | MLP = "512-256-1",
        interaction: str = "dot",
        embedding: nn.Module | None = None,
        keys: Sequence[str] | None = None,
        sparse_grad: bool = False,
    ) -> None:
        super().__init__()
        self.num_dense = check_num_dense(num_dense, "DLRM")
        if interaction not in INTERACTIONS:
            raise ValueError(
                f"DLRM: interaction must be one of {INTERACTIONS}, got {interaction!r}"
            )
        self.interaction = interaction

        bottom = parse_arch(bottom_mlp, "bottom_mlp")
        if not (len(bottom) >= 2 and bottom[0] == self.num_dense):
            bottom = [self.num_dense, *bottom]
        bottom_out = bottom[-1]
        if embedding_dim is None and embedding is None:
            embedding_dim = bottom_out
        self.embedding = resolve_embedding(
            embedding, table_sizes, embedding_dim, keys, "DLRM", sparse_grad
        )
        dims = tuple(int(d) for d in self.embedding.dims)
        num_sparse = len(dims)
        if interaction == "dot" and any(d != bottom_out for d in dims):
            raise ValueError(
                f"DLRM: the dot interaction needs every embedding as wide as the bottom MLP's "
                f"output: bottom_mlp {'-'.join(map(str, bottom))} ends in {bottom_out} but the "
                f"embedding widths are {sorted(set(dims))}; make the bottom MLP end in "
                f"{dims[0]} or use interaction='cat'"
            )
        self.bottom_mlp = MLP(bottom, last_relu=True)

        width = (
            interaction_width(num_sparse, bottom_out, "dot")
            if interaction == "dot"
            else bottom_out + sum(dims)
        )
        rule = (
            f"{bottom_out} + {num_sparse + 1}*{num_sparse}/2 for the dot interaction of "
            f"{num_sparse} embeddings and the bottom output"
            if interaction == "dot"
            else f"{bottom_out} + sum of embedding widths {sum(dims)} for the cat interaction"
        )
        if isinstance(top_mlp, nn.Module):
            in_f = getattr(top_mlp, "in_features", None)
            out_f = getattr(top_mlp, "out_features", None)
            if in_f is not None and in_f != width:
                raise ValueError(
                    f"DLRM: the top MLP takes {in_f} inputs but the interaction gives {width} "
                    f"(= {rule}); build it with input width {width}"
                )
            if out_f is not None and out_f != 1:
                raise ValueError(f"DLRM: the top MLP must output 1 logit, it outputs {out_f}")
            self.top_mlp = top_mlp
        else:
            top = parse_arch(top_mlp, "top_mlp")
            if top[-1] != 1:
                raise ValueError(
                    f"DLRM: top_mlp {top_mlp!r} ends in {top[-1]}; it must end in 1 (one logit). "
                    f"Its input width ({width} = {rule}) is added for you, so write e.g. "
                    f"'{'-'.join(map(str, top))}-1'"
                )
            self.top_mlp = MLP([width, *top], last_relu=False)
        self.interaction_width = width
        n = num_sparse + 1
        li, lj = torch.tril_indices(n, n, offset=-1)
        self.register_buffer("_li", li, persistent=False)
        self.register_buffer("_lj", lj, persistent=False)

    @classmethod
    def from_arch(
        cls,
        arch_mlp_bot: str,
        arch_mlp_top: str,
        table_sizes: Sequence[int] | None = None,
        arch_sparse_feature_size: int | None = None,
        arch_interaction_op: str = "dot",
        **kwargs,
    ) -> DLRM:
        """Meta's command-line names: ``arch_mlp_bot`` includes the dense input width.

        >>> DLRM.from_arch("13-512-256-64", "512-256-1", table_sizes=[10] * 26).num_dense
        13
        """
        bot = parse_arch(arch_mlp_bot, "arch_mlp_bot")
        if len(bot) < 2:
            raise ValueError(
                f"arch_mlp_bot: {arch_mlp_bot!r} needs the dense input width and at least one "
                "layer, e.g. '13-512-256-64'"
            )
        if arch_sparse_feature_size is not None and arch_sparse_feature_size != bot[-1]:
            raise ValueError(
                f"arch_sparse_feature_size {arch_sparse_feature_size} does not match the last "
                f"width of arch_mlp_bot {arch_mlp_bot!r} ({bot[-1]})"
            )
        return cls(
            num_dense=bot[0],
            table_sizes=table_sizes,
            embedding_dim=arch_sparse_feature_size,
            bottom_mlp=bot,
            top_mlp=arch_mlp_top,
            interaction=arch_interaction_op,
            **kwargs,
        )

    def interact(self, x: Tensor, ly: Tensor) -> Tensor:
        """Interaction of the bottom output ``x [B, d]`` and pooled embeddings ``ly [B, F*d]``."""
        if self.interaction == "cat":
            return torch.cat([x, ly], dim=1)
        b, d = x.shape
        t = torch.cat([x, ly], dim=1).view(b, -1, d)  # [B, F+1, d]
        z = torch.bmm(t, t.transpose(1, 2))  # [B, F+1, F+1]
        return torch.cat([x, z[:, self._li, self._lj]], dim=1)

    def forward(self, dense: Tensor, sparse: JaggedBatch) -> Tensor:
        """Raw logits ``[B]`` (apply ``torch.sigmoid`` for click probabilities)."""
        check_inputs(dense, sparse, self.num_dense, "DLRM")
        x = self.bottom_mlp(dense)
        ly = lookup(self.embedding, sparse, "DLRM")
        return self.top_mlp(self.interact(x, ly)).squeeze(1)
