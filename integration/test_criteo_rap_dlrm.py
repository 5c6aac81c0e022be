"""rec-common's Criteo TSV -> rap-share's fused preprocessing -> rec-common's DLRM trains.

Proves the three packages agree on data: the TSV rec_common.synth writes parses into the raw
columns rap-share's ops take, the fused (torch) ops equal rap-share's numpy reference on those
columns, and their outputs are valid DLRM inputs that a few optimizer steps learn from.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rap_share import fused, reference
from rap_share.columns import Column
from rap_share.runtime import dense_tensor, sparse_batch
from rec_common.models import DLRM
from rec_common.synth import write_criteo_tsv

NUM_DENSE, NUM_SPARSE = 13, 26
TABLE_ROWS = 97  # sigrid_hash max_value: every hashed id fits a 97-row table
ROWS = 256


def read_raw_tsv(path) -> tuple[dict[str, Column], np.ndarray]:
    """Criteo TSV (label, 13 ints, 26 hex ids; empty = null) as rap-share's raw columns."""
    labels, ints, cats = [], [], []
    for line in path.read_text().splitlines():
        f = line.split("\t")
        assert len(f) == 1 + NUM_DENSE + NUM_SPARSE, f"bad TSV line: {line!r}"
        labels.append(int(f[0]))
        ints.append([None if x == "" else int(x) for x in f[1 : 1 + NUM_DENSE]])
        cats.append([None if x == "" else int(x, 16) for x in f[1 + NUM_DENSE :]])
    cols = {}
    for i in range(NUM_DENSE):
        raw = [r[i] for r in ints]
        cols[f"int_{i}"] = Column(
            np.array([0 if v is None else v for v in raw], dtype=np.int64),
            None,
            np.array([v is not None for v in raw]),
        )
    for i in range(NUM_SPARSE):
        raw = [r[i] for r in cats]
        cols[f"cat_{i}"] = Column(
            np.array([0 if v is None else v for v in raw], dtype=np.int64),
            None,
            np.array([v is not None for v in raw]),
        )
    return cols, np.array(labels, dtype=np.float32)


def to_torch(c: Column, device) -> Column:
    valid = None if c.valid is None else torch.from_numpy(c.valid).to(device)
    return Column(torch.from_numpy(c.values).to(device), None, valid)


def fused_pipeline(raw: dict[str, Column], device) -> dict[str, Column]:
    """plan0's ops, each over all its columns in one fused call: the GPU path of rap-share."""
    d = [f"int_{i}" for i in range(NUM_DENSE)]
    s = [f"cat_{i}" for i in range(NUM_SPARSE)]
    dcols = fused.run(
        "fill_null", [to_torch(raw[k], device) for k in d], [{"value": 0}] * len(d), d
    )
    dcols = fused.run("logit", dcols, [{"eps": 1e-5}] * len(d), d)
    scols = fused.run(
        "fill_null", [to_torch(raw[k], device) for k in s], [{"value": 0}] * len(s), s
    )
    hash_params = [{"salt": i, "max_value": TABLE_ROWS} for i in range(NUM_SPARSE)]
    scols = fused.run("sigrid_hash", scols, hash_params, s)
    return dict(zip(d + s, dcols + scols))


def reference_pipeline(raw: dict[str, Column]) -> dict[str, Column]:
    """The same ops one column at a time through rap-share's independent numpy reference."""
    out = {}
    for i in range(NUM_DENSE):
        k = f"int_{i}"
        c = reference.apply("fill_null", raw[k], {"value": 0}, k)
        out[k] = reference.apply("logit", c, {"eps": 1e-5}, k)
    for i in range(NUM_SPARSE):
        k = f"cat_{i}"
        c = reference.apply("fill_null", raw[k], {"value": 0}, k)
        out[k] = reference.apply("sigrid_hash", c, {"salt": i, "max_value": TABLE_ROWS}, k)
    return out


def train_on_preprocessed(tmp_path, device: str) -> None:
    tsv = tmp_path / "day_0.tsv"
    write_criteo_tsv(tsv, ROWS, seed=3, progress=False)
    raw, labels = read_raw_tsv(tsv)
    assert any((~c.valid).any() for c in raw.values()), "the synthetic data should carry nulls"

    env = fused_pipeline(raw, device)
    ref = reference_pipeline(raw)
    dkeys = [f"int_{i}" for i in range(NUM_DENSE)]
    skeys = [f"cat_{i}" for i in range(NUM_SPARSE)]
    dense = dense_tensor(env, dkeys)
    sparse = sparse_batch(env, skeys, skeys)
    y = torch.from_numpy(labels).to(device)

    # The trained-on inputs are rap-share's numpy reference outputs.
    want_dense = np.stack([ref[k].values.astype(np.float32) for k in dkeys], 1)
    np.testing.assert_allclose(dense.cpu().numpy(), want_dense, rtol=1e-5, atol=1e-5)
    for f, k in enumerate(skeys):
        ids, offsets, _ = sparse.feature(f)
        assert np.array_equal(ids.cpu().numpy(), ref[k].values.astype(np.int64)), k
        assert np.array_equal(offsets.cpu().numpy(), np.arange(ROWS + 1)), k
    sparse.validate(table_sizes=[TABLE_ROWS] * NUM_SPARSE)

    model = DLRM(
        num_dense=NUM_DENSE,
        table_sizes=[TABLE_ROWS] * NUM_SPARSE,
        embedding_dim=8,
        bottom_mlp="13-16-8",
        top_mlp="32-1",
        keys=skeys,
    ).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(dense, sparse), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert all(np.isfinite(losses))
    assert losses[-1] < 0.8 * losses[0], (
        f"loss did not decrease: {losses[0]:.4f} -> {losses[-1]:.4f}"
    )


def test_criteo_tsv_rap_share_dlrm_cpu(tmp_path):
    train_on_preprocessed(tmp_path, "cpu")


@pytest.mark.gpu
def test_criteo_tsv_rap_share_dlrm_cuda(tmp_path):
    """The fused ops run as CUDA launches here; the reference stays numpy on the host."""
    train_on_preprocessed(tmp_path, "cuda")
