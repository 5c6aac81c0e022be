"""The models jobs train (rec-common's DLRM, DCN-v2, DeepFM, Wide&Deep, plus DIN here) and
their synthetic data.

Each model is called as ``model(*inputs)`` and returns logits ``[B]``; :func:`make_batches`
builds ``(inputs, labels)`` pairs directly on the job's device, so data loading never competes
with the co-located jobs for the host.

>>> from rmixer.configs import normalize
>>> cfg = normalize({"model": "din", "batch_size": 8, "rows": 50, "num_tables": 2,
...                  "num_items": 100, "seq_len": 5}, "demo")
>>> model = build_model(cfg)
>>> (inputs, labels), = make_batches(cfg, "cpu", n=1)
>>> model(*inputs).shape
torch.Size([8])
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rec_common.jagged import JaggedBatch
from rec_common.models import DLRM, MLP, DCNv2, DeepFM, TorchEmbeddingBags, WideAndDeep, parse_arch
from rmixer.configs import table_sizes


class DIN(nn.Module):
    """Deep Interest Network (Zhou et al., KDD'18): attention of the target item over the
    user's behaviour sequence, then an MLP over [dense, context embeddings, interest, target].

    ``history [B, L]`` holds item ids with 0 as padding; ``target [B]`` the candidate item.
    The attention unit scores ``[q, k, q-k, q*k]`` per position without softmax (the paper's
    choice), masked at padding.
    """

    def __init__(
        self,
        num_dense: int,
        num_items: int,
        item_dim: int,
        table_sizes: list[int],
        embedding_dim: int,
        attention_mlp: str = "80-40",
        deep_mlp: str = "200-80-1",
    ) -> None:
        super().__init__()
        self.num_dense = num_dense
        self.items = nn.Embedding(num_items + 1, item_dim, padding_idx=0)
        nn.init.normal_(self.items.weight, 0.0, 0.01)
        self.context = TorchEmbeddingBags(table_sizes, embedding_dim, check_ids=False)
        self.attention = MLP([4 * item_dim, *parse_arch(attention_mlp, "attention_mlp"), 1])
        deep = parse_arch(deep_mlp, "deep_mlp")
        if deep[-1] != 1:
            raise ValueError(f"DIN: deep_mlp {deep_mlp!r} must end in 1 (one logit)")
        width = num_dense + sum(self.context.dims) + 2 * item_dim
        self.deep = MLP([width, *deep])

    def forward(self, dense: Tensor, sparse: JaggedBatch, history: Tensor, target: Tensor):
        h = self.items(history)  # [B, L, d]
        q = self.items(target)  # [B, d]
        qe = q.unsqueeze(1).expand_as(h)
        scores = self.attention(torch.cat([qe, h, qe - h, qe * h], dim=-1)).squeeze(-1)
        scores = scores.masked_fill(history == 0, 0.0)
        interest = (scores.unsqueeze(-1) * h).sum(dim=1)
        x = torch.cat([dense, self.context(sparse), interest, q], dim=1)
        return self.deep(x).squeeze(1)


def build_model(cfg: dict) -> nn.Module:
    """The model of a normalized config (on the current default device)."""
    sizes = table_sizes(cfg)
    kind = cfg["model"]
    emb = TorchEmbeddingBags(sizes, cfg["embedding_dim"], check_ids=False)
    if kind == "dlrm":
        return DLRM(cfg["num_dense"], embedding=emb, bottom_mlp=cfg["bottom_mlp"],
                    top_mlp=cfg["top_mlp"])  # fmt: skip
    if kind == "dcn":
        return DCNv2(cfg["num_dense"], embedding=emb, num_cross_layers=cfg["num_cross_layers"],
                     low_rank=cfg["low_rank"], deep_mlp=cfg["deep_mlp"])  # fmt: skip
    if kind == "deepfm":
        first = TorchEmbeddingBags(sizes, 1, check_ids=False)
        return DeepFM(cfg["num_dense"], embedding=emb, first_order_embedding=first,
                      deep_mlp=cfg["deep_mlp"])  # fmt: skip
    if kind == "widedeep":
        wide = TorchEmbeddingBags(sizes, 1, check_ids=False)
        return WideAndDeep(cfg["num_dense"], embedding=emb, wide_embedding=wide,
                           deep_mlp=cfg["deep_mlp"])  # fmt: skip
    if kind == "din":
        return DIN(cfg["num_dense"], cfg["num_items"], cfg["item_dim"], sizes,
                   cfg["embedding_dim"], cfg["attention_mlp"], cfg["deep_mlp"])  # fmt: skip
    raise ValueError(f"model: unknown kind {kind!r}")


def make_batches(cfg: dict, device: str | torch.device, n: int, seed: int = 0):
    """``n`` synthetic ``(inputs, labels)`` batches on ``device``: uniform ids, ``pooling``
    ids per bag, N(0,1) dense features, random 0/1 labels."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    sizes = table_sizes(cfg)
    b, pool = cfg["batch_size"], cfg["pooling"]
    out = []
    for _ in range(n):
        dense = torch.randn(b, cfg["num_dense"], generator=gen)
        values = [torch.randint(0, r, (b * pool,), generator=gen) for r in sizes]
        offsets = [torch.arange(0, b * pool + 1, pool) for _ in sizes]
        sparse = JaggedBatch([f"f{i}" for i in range(len(sizes))], values, offsets)
        labels = torch.randint(0, 2, (b,), generator=gen).float()
        inputs: tuple = (dense, sparse)
        if cfg["model"] == "din":
            L = cfg["seq_len"]
            history = torch.randint(1, cfg["num_items"] + 1, (b, L), generator=gen)
            keep = torch.randint(1, L + 1, (b, 1), generator=gen)
            history = history.masked_fill(torch.arange(L).unsqueeze(0) >= keep, 0)
            target = torch.randint(1, cfg["num_items"] + 1, (b,), generator=gen)
            inputs = (dense, sparse, history, target)
        out.append((tuple(_to(x, device) for x in inputs), labels.to(device)))
    return out


def _to(x, device):
    return x.to(device) if isinstance(x, (Tensor, JaggedBatch)) else x


def make_optimizer(cfg: dict, params) -> torch.optim.Optimizer:
    name, lr = cfg["optimizer"], cfg["lr"]
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    if name == "adagrad":
        return torch.optim.Adagrad(params, lr=lr)
    return torch.optim.SGD(params, lr=lr)


def optimizer_state_factor(cfg: dict) -> int:
    """Optimizer state per parameter, in parameter copies (Adam: 2 moments)."""
    return {"sgd": 0, "adam": 2, "adagrad": 1}[cfg["optimizer"]]


class Trainer:
    """One job's model, optimizer and cached batches; :meth:`step` runs one iteration."""

    def __init__(self, cfg: dict, device: str | torch.device, seed: int = 0, num_batches: int = 4):
        self.device = torch.device(device)
        torch.manual_seed(seed)
        with self.device:
            self.model = build_model(cfg)
        self.opt = make_optimizer(cfg, self.model.parameters())
        self.batches = make_batches(cfg, self.device, num_batches, seed)
        self.loss_fn = nn.BCEWithLogitsLoss()
        self.i = 0

    def step(self) -> Tensor:
        inputs, labels = self.batches[self.i % len(self.batches)]
        self.i += 1
        loss = self.loss_fn(self.model(*inputs), labels)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return loss.detach()
