"""rec_common.dataset: the memory-mapped directory, splits and the batch iterator."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from rec_common.criteo import preprocess
from rec_common.criteo_tables import SPARSE_NAMES
from rec_common.dataset import CriteoDataset
from rec_common.jagged import JaggedBatch
from rec_common.synth import write_criteo_tsv

N = 1003  # not a multiple of any batch size used here


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("criteo")
    write_criteo_tsv(root / "train.txt", N, seed=3, progress=False)
    preprocess(root / "train.txt", root / "out", chunk_rows=300, workers=1, progress=False)
    return root / "out"


@pytest.fixture
def ds(data_dir):
    return CriteoDataset(data_dir)


def arrays(data_dir):
    return [np.load(data_dir / f"{n}.npy") for n in ("dense", "sparse", "labels")]


def test_basic_access(ds, data_dir):
    dense, sparse, labels = arrays(data_dir)
    assert len(ds) == ds.num_rows == N
    assert ds.table_sizes == tuple(json.loads((data_dir / "meta.json").read_text())["table_sizes"])
    d, s, lab = ds[5]
    assert np.array_equal(d, dense[5]) and np.array_equal(s, sparse[5]) and lab == labels[5]
    d, s, lab = ds[-1]
    assert np.array_equal(s, sparse[-1])
    d, s, lab = ds[10:20:3]
    assert np.array_equal(d, dense[10:20:3]) and np.array_equal(lab, labels[10:20:3])
    assert d.flags.writeable and not isinstance(d, np.memmap)
    d, s, lab = ds[np.array([3, 0, -2])]
    assert np.array_equal(s, sparse[[3, 0, N - 2]])
    with pytest.raises(IndexError):
        ds[N]
    with pytest.raises(TypeError):
        ds[np.array([True, False])]


def test_missing_meta_means_unfinished(tmp_path, data_dir):
    with pytest.raises(ValueError, match="no meta.json, so preprocessing did not finish"):
        CriteoDataset(tmp_path)
    with pytest.raises(ValueError, match="no such directory"):
        CriteoDataset(tmp_path / "absent")
    # arrays that disagree with meta.json
    for name in ("dense", "sparse", "labels", "meta"):
        src = data_dir / (f"{name}.npy" if name != "meta" else "meta.json")
        (tmp_path / src.name).write_bytes(src.read_bytes())
    np.save(tmp_path / "labels.npy", np.zeros(N - 1, np.float32))
    with pytest.raises(ValueError, match="inconsistent"):
        CriteoDataset(tmp_path)


def test_split_fractions_and_rows(ds, data_dir):
    dense, sparse, labels = arrays(data_dir)
    train, val, test = ds.split([0.8, 0.1, 0.1])
    assert (len(train), len(val), len(test)) == (802, 101, 100)  # boundaries round(cumsum * N)
    assert np.array_equal(val[0][1], sparse[802]) and np.array_equal(test[:][2], labels[903:])
    a, b = ds.split([1000, 3])
    assert len(a) == 1000 and np.array_equal(b[:][0], dense[1000:])
    _, d = b.split([1, 2])  # a split of a split
    assert np.array_equal(d.sparse, sparse[1001:])
    for bad, err in [([0.5, 0.4], ValueError), ([500, 400], ValueError), ([0.5, 500], TypeError),
                     ([], ValueError), ([-1, N + 1], ValueError)]:  # fmt: skip
        with pytest.raises(err):
            ds.split(bad)


def _row_ids(ds, **kw):
    """Each batch as its row numbers (the dataset's labels are not unique, so go by position)."""
    key = np.arange(len(ds))
    lookup = {ds[i][0].tobytes() + ds[i][1].tobytes(): i for i in range(len(ds))}
    out = []
    for dense, sparse, _ in ds.batches(as_torch=False, **kw):
        out.append([lookup[dense[j].tobytes() + sparse[j].tobytes()] for j in range(len(dense))])
    assert len(lookup) == len(key), "synthetic rows should be distinct"
    return out


def test_unshuffled_batches_are_in_order(ds):
    batches = _row_ids(ds, batch_size=100)
    assert [len(b) for b in batches] == [100] * 10 + [3]
    assert [r for b in batches for r in b] == list(range(N))
    assert len(ds.batches(100)) == 11 and len(ds.batches(100, drop_last=True)) == 10


def test_torch_batches(ds, data_dir):
    dense, sparse, labels = arrays(data_dir)
    it = ds.batches(64)
    d, s, lab = next(iter(it))
    assert isinstance(d, torch.Tensor) and d.dtype == torch.float32 and d.shape == (64, 13)
    assert isinstance(s, JaggedBatch) and s.keys == SPARSE_NAMES and s.batch_size == 64
    assert lab.dtype == torch.float32 and lab.shape == (64,)
    assert torch.equal(s.values[4], torch.from_numpy(sparse[:64, 4]))
    assert torch.equal(s.offsets[0], torch.arange(65, dtype=s.values[0].dtype))
    s.validate(ds.table_sizes)
    assert torch.equal(d, torch.from_numpy(dense[:64]))
    assert torch.equal(lab, torch.from_numpy(labels[:64]))


@pytest.mark.parametrize("window", [None, 0, 1, 250])
def test_shuffle_is_deterministic_and_a_permutation(ds, window):
    a = _row_ids(ds, batch_size=64, shuffle=True, seed=7, window=window)
    b = _row_ids(ds, batch_size=64, shuffle=True, seed=7, window=window)
    c = _row_ids(ds, batch_size=64, shuffle=True, seed=8, window=window)
    assert a == b and a != c
    assert sorted(r for x in a for r in x) == list(range(N))
    assert [len(x) for x in a] == [64] * 15 + [43]  # the short batch comes last
    if window == 0:  # contiguous batches in a shuffled order
        assert all(x == list(range(x[0], x[0] + len(x))) for x in a)
        assert [x[0] for x in a] != sorted(x[0] for x in a)


def test_shuffle_window_keeps_rows_local(ds):
    b = 64
    window = 250  # rounded up to 256 rows = 4 batches
    batches = _row_ids(ds, batch_size=b, shuffle=True, seed=1, window=window)
    for rows in batches:
        assert len({r // 256 for r in rows}) == 1, "a batch mixes windows"
    windows = [rows[0] // 256 for rows in batches]
    # windows are visited one after another, in a shuffled order
    runs = [w for i, w in enumerate(windows) if i == 0 or windows[i - 1] != w]
    assert sorted(runs) == [0, 1, 2, 3] and len(runs) == 4
    assert any(rows != sorted(rows) or rows[-1] - rows[0] >= len(rows) for rows in batches)


@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
@pytest.mark.parametrize("drop_last", [False, True])
def test_ranks_get_disjoint_batches_covering_the_data(ds, world_size, drop_last):
    kw = dict(batch_size=50, shuffle=True, seed=3, window=200, drop_last=drop_last)
    per_rank = [_row_ids(ds, rank=r, world_size=world_size, **kw) for r in range(world_size)]
    rows = [r for batches in per_rank for batch in batches for r in batch]
    assert len(rows) == len(set(rows)), "ranks overlap"
    counts = [len(b) for b in per_rank]
    if drop_last:
        assert counts == [(N // 50) // world_size] * world_size
        assert all(len(batch) == 50 for batches in per_rank for batch in batches)
    else:
        assert sorted(rows) == list(range(N))
        assert max(counts) - min(counts) <= 1
    # every rank sees the batches of the single-process order, dealt round-robin
    everything = _row_ids(ds, **kw)
    if drop_last:
        everything = everything[: len(everything) - len(everything) % world_size]
    for r in range(world_size):
        assert per_rank[r] == everything[r::world_size]
    lengths = [len(ds.batches(rank=r, world_size=world_size, **kw)) for r in range(world_size)]
    assert lengths == counts


def test_batches_of_a_split(ds, data_dir):
    _, val = ds.split([1000, 3])
    d, _, lab = next(iter(val.batches(8, as_torch=False)))
    assert np.array_equal(lab, arrays(data_dir)[2][1000:]) and d.shape == (3, 13)


def test_bad_batch_arguments(ds):
    for kw in [dict(batch_size=0), dict(batch_size=4, rank=2, world_size=2),
               dict(batch_size=4, world_size=0), dict(batch_size=4, window=-1),
               dict(batch_size=4, seed=-1)]:  # fmt: skip
        with pytest.raises(ValueError):
            ds.batches(**kw)
