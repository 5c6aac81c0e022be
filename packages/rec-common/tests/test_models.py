"""Models: shapes, references for the embedding and the DLRM interaction, the pluggable
embedding contract, error messages, gradients, and that each model learns a planted signal."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from rec_common.jagged import JaggedBatch
from rec_common.metrics import auc
from rec_common.models import (
    DLRM,
    MLP,
    DCNv2,
    DeepFM,
    TorchEmbeddingBags,
    WideAndDeep,
    fm_second_order,
    interaction_width,
    parse_arch,
    validate_embedding,
)

TABLES = [13, 7, 1, 20]
DIM = 8
NUM_DENSE = 5


def random_batch(
    batch_size=6,
    table_sizes=TABLES,
    max_len=3,
    dtype=torch.int64,
    weighted=False,
    keys=None,
    gen=None,
):
    """Jagged batch with bag lengths drawn from 0..max_len (so empty bags occur)."""
    gen = gen or torch.Generator().manual_seed(1)
    keys = keys or [f"f{i}" for i in range(len(table_sizes))]
    values, lengths, weights = [], [], []
    for n in table_sizes:
        ln = torch.randint(0, max_len + 1, (batch_size,), generator=gen)
        lengths.append(ln.to(dtype))
        values.append(torch.randint(0, n, (int(ln.sum()),), generator=gen).to(dtype))
        weights.append(torch.rand(int(ln.sum()), generator=gen))
    return JaggedBatch.from_lengths(keys, values, lengths, weights if weighted else None)


def reference_pool(table: torch.Tensor, values, offsets, weights, mode):
    """One bag at a time, in float64."""
    out = torch.zeros(offsets.numel() - 1, table.shape[1], dtype=torch.float64)
    for b in range(offsets.numel() - 1):
        lo, hi = int(offsets[b]), int(offsets[b + 1])
        for j in range(lo, hi):
            w = 1.0 if weights is None else float(weights[j])
            out[b] += w * table[int(values[j])].double()
        if mode == "mean" and hi > lo:
            out[b] /= hi - lo
    return out


MODELS = {
    "dlrm": lambda **kw: DLRM(NUM_DENSE, TABLES, DIM, bottom_mlp="16-8", top_mlp="16-1", **kw),
    "dlrm_cat": lambda **kw: DLRM(
        NUM_DENSE, TABLES, DIM, bottom_mlp="16-4", top_mlp="16-1", interaction="cat", **kw
    ),
    "wide_deep": lambda **kw: WideAndDeep(NUM_DENSE, TABLES, DIM, deep_mlp="16-1", **kw),
    "deepfm": lambda **kw: DeepFM(NUM_DENSE, TABLES, DIM, deep_mlp="16-1", **kw),
    "dcn_stacked": lambda **kw: DCNv2(
        NUM_DENSE, TABLES, DIM, num_cross_layers=2, deep_mlp="16", **kw
    ),
    "dcn_parallel_lowrank": lambda **kw: DCNv2(
        NUM_DENSE, TABLES, DIM, low_rank=4, deep_mlp="16-8", structure="parallel", **kw
    ),
    "dcn_cross_only": lambda **kw: DCNv2(NUM_DENSE, TABLES, DIM, deep_mlp=None, **kw),
}


# ---------------------------------------------------------------------- TorchEmbeddingBags
@pytest.mark.parametrize("mode", ["sum", "mean"])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("dtype", [torch.int32, torch.int64])
def test_embedding_bags_match_reference(mode, weighted, dtype):
    emb = TorchEmbeddingBags(TABLES, dims=[4, 3, 2, 5], mode=mode)
    batch = random_batch(batch_size=9, dtype=dtype, weighted=weighted)
    out = emb(batch)
    assert out.shape == (9, 14) and out.dtype == torch.float32
    col = 0
    for i, d in enumerate(emb.dims):
        values, offsets, weights = batch.feature(i)
        ref = reference_pool(emb.bags[i].weight.detach(), values, offsets, weights, mode)
        torch.testing.assert_close(out[:, col : col + d].double(), ref, rtol=1e-6, atol=1e-6)
        empty = (offsets[1:] - offsets[:-1]) == 0
        assert bool((out[empty, col : col + d] == 0).all()), "empty bags must pool to zeros"
        col += d


def test_embedding_bags_init_and_int32_equals_int64():
    emb = TorchEmbeddingBags([4, 10_000], dims=6)
    for bag, n in zip(emb.bags, emb.table_sizes):
        bound = math.sqrt(1.0 / n)
        assert float(bag.weight.detach().abs().max()) <= bound
        assert (
            float(bag.weight.detach().abs().max()) > 0.5 * bound
        )  # spread over the range, not zeros
    b64 = random_batch(table_sizes=[4, 10_000])
    torch.testing.assert_close(emb(b64), emb(b64.with_index_dtype(torch.int32)), rtol=0, atol=0)


def test_embedding_bags_all_empty_and_batch_of_one():
    emb = TorchEmbeddingBags([5, 5], dims=3)
    empty = JaggedBatch.from_lengths(
        ["f0", "f1"],
        [torch.empty(0, dtype=torch.int64)] * 2,
        [torch.zeros(4, dtype=torch.int64)] * 2,
    )
    assert torch.equal(emb(empty), torch.zeros(4, 6))
    one = JaggedBatch.from_dense(torch.tensor([[2, 4]]))
    out = emb(one)
    torch.testing.assert_close(out, torch.cat([emb.bags[0].weight[2], emb.bags[1].weight[4]])[None])


def test_embedding_bags_sparse_gradients():
    emb = TorchEmbeddingBags(TABLES, dims=4, sparse=True)
    emb(random_batch()).sum().backward()
    assert all(bag.weight.grad is not None and bag.weight.grad.is_sparse for bag in emb.bags)


def test_embedding_bags_bad_ids_and_keys():
    emb = TorchEmbeddingBags([5, 5], dims=2, keys=["a", "b"])
    batch = JaggedBatch.from_dense(torch.tensor([[1, 2], [3, 5]]), keys=["a", "b"])
    with pytest.raises(ValueError, match=r"feature 'b': id 5 at position 1 .*table of 5 rows"):
        emb(batch)
    with pytest.raises(
        ValueError, match=r"keys \['x', 'y'\] differ from the tables' keys \['a', 'b'\]"
    ):
        emb(JaggedBatch.from_dense(torch.tensor([[1, 2]]), keys=["x", "y"]))
    positional = TorchEmbeddingBags([5, 5], dims=2)  # keys=None: any names, by position
    assert positional(JaggedBatch.from_dense(torch.tensor([[1, 2]]), keys=["x", "y"])).shape == (
        1,
        4,
    )
    with pytest.raises(ValueError, match="3 sparse features but there are 2 tables"):
        positional(JaggedBatch.from_dense(torch.tensor([[1, 2, 3]])))
    with pytest.raises(ValueError, match=r"table_sizes\[1\]: expected >= 1 rows, got 0"):
        TorchEmbeddingBags([5, 0], dims=2)
    with pytest.raises(ValueError, match="mode: expected one of"):
        TorchEmbeddingBags([5], dims=2, mode="max")


# ---------------------------------------------------------------------- shapes and grads
@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("batch_size", [1, 7])
@pytest.mark.parametrize("dtype", [torch.int32, torch.int64])
def test_model_shapes(name, batch_size, dtype):
    model = MODELS[name]()
    batch = random_batch(batch_size=batch_size, dtype=dtype)
    out = model(torch.randn(batch_size, NUM_DENSE), batch)
    assert out.shape == (batch_size,) and out.dtype == torch.float32
    assert bool(torch.isfinite(out).all())


@pytest.mark.parametrize("name", list(MODELS))
def test_model_all_bags_empty(name):
    model = MODELS[name]()
    batch = random_batch(batch_size=3, max_len=0)
    assert batch.num_ids() == 0
    assert model(torch.randn(3, NUM_DENSE), batch).shape == (3,)


@pytest.mark.parametrize("name", list(MODELS))
def test_backward_reaches_every_parameter(name):
    model = MODELS[name]()
    batch = random_batch(batch_size=16, max_len=4, table_sizes=[3, 2, 1, 2])  # every row is hit
    logits = model(torch.randn(16, NUM_DENSE), batch)
    nn.BCEWithLogitsLoss()(logits, torch.randint(0, 2, (16,)).float()).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"no gradient for {missing}"
    zero = [n for n, p in model.named_parameters() if float(p.grad.abs().sum()) == 0]
    assert len(zero) <= 1, f"all-zero gradients for {zero}"  # one dead ReLU layer is possible


def test_models_check_inputs():
    model = MODELS["dlrm"]()
    batch = random_batch(batch_size=4)
    with pytest.raises(ValueError, match=r"dense has shape \(4, 3\), expected \(batch, 5\)"):
        model(torch.randn(4, 3), batch)
    with pytest.raises(ValueError, match="dense has 5 rows but the sparse batch has 4 samples"):
        model(torch.randn(5, NUM_DENSE), batch)
    with pytest.raises(TypeError, match="dense must be floating point"):
        model(torch.zeros(4, NUM_DENSE, dtype=torch.int64), batch)
    with pytest.raises(ValueError, match="pass table_sizes"):
        DeepFM(NUM_DENSE, embedding_dim=4)


@pytest.mark.gpu
@pytest.mark.parametrize("name", list(MODELS))
def test_model_on_gpu_matches_cpu(name):
    model = MODELS[name]()
    batch = random_batch(batch_size=8, max_len=4, dtype=torch.int32)
    dense = torch.randn(8, NUM_DENSE)
    ref = model(dense, batch)
    gpu_model = copy.deepcopy(model).cuda()
    out = gpu_model(dense.cuda(), batch.to("cuda"))
    torch.testing.assert_close(out.cpu(), ref, rtol=1e-4, atol=1e-5)
    out.sum().backward()
    assert all(p.grad is not None and p.grad.is_cuda for p in gpu_model.parameters())
    bad = JaggedBatch(batch.keys, [v + 100 for v in batch.values], batch.offsets).to("cuda")
    with pytest.raises(ValueError, match="is outside its table"):
        gpu_model(dense.cuda(), bad)


# ---------------------------------------------------------------------- DLRM specifics
def test_dlrm_dot_interaction_matches_loop():
    model = DLRM(NUM_DENSE, TABLES, DIM, bottom_mlp="16-8", top_mlp="16-1").double()
    x = torch.randn(5, DIM, dtype=torch.float64)
    ly = torch.randn(5, len(TABLES) * DIM, dtype=torch.float64)
    got = model.interact(x, ly)
    feats = [x] + [ly[:, i * DIM : (i + 1) * DIM] for i in range(len(TABLES))]
    for b in range(5):
        pairs = [
            float(feats[i][b] @ feats[j][b]) for i in range(len(feats)) for j in range(i)
        ]  # Meta's order: row i, then j < i
        ref = torch.tensor(x[b].tolist() + pairs, dtype=torch.float64)
        torch.testing.assert_close(got[b], ref, rtol=1e-12, atol=1e-12)
    assert got.shape[1] == interaction_width(len(TABLES), DIM) == DIM + 5 * 4 // 2


def test_dlrm_forward_matches_manual_composition():
    model = MODELS["dlrm"]().double()
    dense = torch.randn(4, NUM_DENSE, dtype=torch.float64)
    batch = random_batch(batch_size=4)
    x = model.bottom_mlp(dense)
    ly = model.embedding(batch)
    expected = model.top_mlp(model.interact(x, ly)).squeeze(1)
    torch.testing.assert_close(model(dense, batch), expected)


def test_dlrm_arch_strings():
    tables = [10] * 26
    a = DLRM(
        num_dense=13,
        table_sizes=tables,
        embedding_dim=16,
        bottom_mlp="512-256-16",
        top_mlp="512-256-1",
    )
    b = DLRM.from_arch(
        "13-512-256-16", "512-256-1", table_sizes=tables, arch_sparse_feature_size=16
    )
    assert a.bottom_mlp.sizes == b.bottom_mlp.sizes == (13, 512, 256, 16)
    assert a.top_mlp.sizes == b.top_mlp.sizes == (367, 512, 256, 1)
    c = DLRM(
        num_dense=13, table_sizes=tables, bottom_mlp="13-64-16", top_mlp="8-1", interaction="cat"
    )
    assert c.top_mlp.sizes == (16 * 27, 8, 1)
    assert parse_arch(" 13-512 -64") == [13, 512, 64]


def test_dlrm_errors_state_sizes():
    tables = [10] * 26
    with pytest.raises(
        ValueError, match=r"takes 100 inputs but the interaction gives 367 \(= 16 \+ 27\*26/2"
    ):
        DLRM(13, tables, 16, bottom_mlp="64-16", top_mlp=MLP([100, 1]))
    DLRM(
        13, tables, 16, bottom_mlp="64-16", top_mlp=MLP([367, 8, 1])
    )  # the right width is accepted
    with pytest.raises(ValueError, match=r"ends in 32 but the embedding widths are \[16\]"):
        DLRM(13, tables, 16, bottom_mlp="64-32")
    with pytest.raises(ValueError, match="must end in 1"):
        DLRM(13, tables, 16, bottom_mlp="64-16", top_mlp="512-256")
    with pytest.raises(ValueError, match="does not match the last width"):
        DLRM.from_arch("13-64-16", "8-1", table_sizes=tables, arch_sparse_feature_size=32)
    with pytest.raises(ValueError, match="not a dash-separated list"):
        DLRM(13, tables, 16, bottom_mlp="64x16")
    with pytest.raises(ValueError, match="interaction must be one of"):
        DLRM(13, tables, 16, bottom_mlp="16", interaction="dott")


def test_deepfm_second_order_matches_pairs():
    fields = torch.randn(3, 6, 4, dtype=torch.float64)
    ref = torch.stack(
        [sum(fields[b, i] @ fields[b, j] for i in range(6) for j in range(i)) for b in range(3)]
    )
    torch.testing.assert_close(fm_second_order(fields), ref)


def test_dcn_cross_layer_formula():
    model = DCNv2(NUM_DENSE, TABLES, DIM, num_cross_layers=1, low_rank=3).double()
    x0 = torch.randn(4, model.cross.width, dtype=torch.float64)
    u, v = model.cross.layers[0][0], model.cross.layers[0][1]
    ref = x0 * (x0 @ u.weight.T @ v.weight.T + v.bias) + x0
    torch.testing.assert_close(model.cross(x0), ref)
    with pytest.raises(ValueError, match="structure must be one of"):
        DCNv2(NUM_DENSE, TABLES, DIM, structure="serial")


# ---------------------------------------------------------------------- pluggable embedding
class OneBigBag(nn.Module):
    """Every table in one EmbeddingBag, rows offset per table: a different layout, same contract."""

    def __init__(self, table_sizes, dim, keys):
        super().__init__()
        self.dims = (dim,) * len(table_sizes)
        self.keys = tuple(keys)
        self.row_offsets = [0, *np.cumsum(table_sizes).tolist()]
        self.bag = nn.EmbeddingBag(sum(table_sizes), dim, mode="sum", include_last_offset=True)

    def load_from(self, default: TorchEmbeddingBags):
        with torch.no_grad():
            for i, bag in enumerate(default.bags):
                self.bag.weight[self.row_offsets[i] : self.row_offsets[i + 1]] = bag.weight

    def forward(self, sparse: JaggedBatch):
        b = sparse.batch_size
        values = torch.cat([v.long() + self.row_offsets[i] for i, v in enumerate(sparse.values)])
        lengths = torch.cat([sparse.lengths(i).long() for i in range(sparse.num_features)])
        offsets = torch.zeros(lengths.numel() + 1, dtype=torch.int64)
        torch.cumsum(lengths, 0, out=offsets[1:])
        pooled = self.bag(values, offsets)  # [F*B, d], feature-major
        return pooled.view(sparse.num_features, b, -1).transpose(0, 1).reshape(b, -1)


@pytest.mark.parametrize("name", [n for n in MODELS if n != "dlrm_cat"])
def test_plugged_embedding_gives_same_output(name):
    reference = MODELS[name]()
    plugged_emb = OneBigBag(TABLES, DIM, reference.embedding.keys)
    plugged_emb.load_from(reference.embedding)
    plugged = MODELS[name](embedding=plugged_emb)
    state = {k: v for k, v in reference.state_dict().items() if not k.startswith("embedding.")}
    plugged.load_state_dict(state, strict=False)
    batch = random_batch(batch_size=8, max_len=4, dtype=torch.int32)
    validate_embedding(plugged_emb, batch)
    dense = torch.randn(8, NUM_DENSE)
    torch.testing.assert_close(plugged(dense, batch), reference(dense, batch), rtol=1e-5, atol=1e-6)


class WrongWidth(nn.Module):
    dims = (DIM,) * len(TABLES)
    keys = tuple(f"f{i}" for i in range(len(TABLES)))

    def forward(self, sparse):
        return torch.zeros(sparse.batch_size, DIM * len(TABLES) - 1)


def test_validate_embedding_catches_bad_modules():
    batch = random_batch(batch_size=4)
    with pytest.raises(ValueError, match=r"output shape \(4, 31\), expected \(4, 32\)"):
        validate_embedding(WrongWidth(), batch)
    with pytest.raises(ValueError, match=r"returned \(4, 31\), expected \(4, 32\)"):
        MODELS["dlrm"](embedding=WrongWidth())(torch.randn(4, NUM_DENSE), batch)

    class NoDims(nn.Module):
        keys = WrongWidth.keys

        def forward(self, sparse):
            return torch.zeros(sparse.batch_size, 32)

    with pytest.raises(TypeError, match=r"needs a \.dims attribute"):
        validate_embedding(NoDims(), batch)
    with pytest.raises(TypeError, match=r"has no \.dims"):
        MODELS["deepfm"](embedding=NoDims())

    class Double(WrongWidth):
        def forward(self, sparse):
            return torch.zeros(sparse.batch_size, 32, dtype=torch.float64)

    with pytest.raises(TypeError, match="output dtype torch.float64, expected torch.float32"):
        validate_embedding(Double(), batch)
    good = TorchEmbeddingBags(TABLES, DIM, keys=[f"g{i}" for i in range(4)])
    with pytest.raises(ValueError, match="differ from the tables' keys"):
        validate_embedding(good, batch)
    assert validate_embedding(TorchEmbeddingBags(TABLES, DIM), batch).shape == (4, 32)


# ---------------------------------------------------------------------- learnability
def planted_data(n, gen):
    """4 dense + 3 sparse features; the label depends on both, including a sparse x dense term."""
    tables = [50, 30, 20]
    dense = torch.randn(n, 4, generator=gen)
    ids = torch.stack([torch.randint(0, t, (n,), generator=gen) for t in tables], dim=1)
    effect0 = torch.randn(tables[0], generator=torch.Generator().manual_seed(7)) * 1.5
    effect1 = torch.randn(tables[1], generator=torch.Generator().manual_seed(8))
    logit = 1.2 * dense[:, 0] - 0.8 * dense[:, 1] + effect0[ids[:, 0]] + effect1[ids[:, 1]]
    logit = logit + 0.8 * dense[:, 2] * torch.sign(effect1[ids[:, 1]]) - 0.5
    labels = torch.bernoulli(torch.sigmoid(logit), generator=gen)
    return dense, ids, labels, logit, tables


LEARNERS = {
    "dlrm": lambda t: DLRM(4, t, 8, bottom_mlp="32-8", top_mlp="32-1"),
    "wide_deep": lambda t: WideAndDeep(4, t, 8, deep_mlp="32-1"),
    "deepfm": lambda t: DeepFM(4, t, 8, deep_mlp="32-1"),
    "dcn": lambda t: DCNv2(4, t, 8, num_cross_layers=2, low_rank=8, deep_mlp="32"),
}


@pytest.fixture
def one_thread():
    """Tiny matmuls gain nothing from threads, and threads spin when the machine is busy."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("name", list(LEARNERS))
def test_model_learns_planted_signal(name, one_thread):
    gen = torch.Generator().manual_seed(123)
    dense, ids, labels, true_logit, tables = planted_data(6000, gen)
    train, test = slice(0, 4000), slice(4000, 6000)
    model = LEARNERS[name](tables)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    loss_fn = nn.BCEWithLogitsLoss()
    for _step in range(300):
        idx = torch.randint(0, 4000, (128,), generator=gen)
        loss = loss_fn(
            model(dense[train][idx], JaggedBatch.from_dense(ids[train][idx])), labels[train][idx]
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        scores = model(dense[test], JaggedBatch.from_dense(ids[test]))
    model_auc = auc(labels[test], scores)
    oracle_auc = auc(labels[test], true_logit[test])
    # A constant predictor scores 0.5; the planted logit is the ceiling.
    assert model_auc > 0.5 + 0.75 * (oracle_auc - 0.5), (name, model_auc, oracle_auc)
