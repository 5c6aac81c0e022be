"""JaggedBatch: construction checks, validation messages, and TorchRec round trips."""

from __future__ import annotations

import pytest
import torch

from rec_common.jagged import JaggedBatch


def random_batch(
    batch_size=5, num_features=3, dtype=torch.int64, weighted=False, max_len=4, rows=10
):
    keys, values, lengths, weights = [], [], [], []
    for f in range(num_features):
        n = torch.randint(0, max_len + 1, (batch_size,), dtype=dtype)
        keys.append(f"f{f}")
        lengths.append(n)
        values.append(torch.randint(0, rows, (int(n.sum()),), dtype=dtype))
        weights.append(torch.rand(int(n.sum())))
    return JaggedBatch.from_lengths(keys, values, lengths, weights if weighted else None)


def test_docstring_layout():
    b = JaggedBatch(
        ["C1", "C2"],
        [torch.tensor([7, 3, 9]), torch.tensor([4])],
        [torch.tensor([0, 2, 2, 3]), torch.tensor([0, 0, 1, 1])],
    )
    assert b.batch_size == 3 and b.num_features == 2 and b.num_ids() == 4
    assert b.lengths("C1").tolist() == [2, 0, 1]
    assert b.lengths(1).tolist() == [0, 1, 0]
    values, offsets, weights = b.feature("C2")
    assert values.tolist() == [4] and offsets.tolist() == [0, 0, 1, 1] and weights is None
    b.validate([10, 5])


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64])
def test_from_lengths_and_dense(dtype):
    b = random_batch(dtype=dtype)
    for i in range(b.num_features):
        assert b.offsets[i].dtype == dtype
        assert b.offsets[i][-1] == b.values[i].numel()
    ids = torch.randint(0, 7, (4, 3), dtype=dtype)
    d = JaggedBatch.from_dense(ids, keys=["a", "b", "c"])
    assert d.batch_size == 4
    for i in range(3):
        assert torch.equal(d.values[i], ids[:, i])
        assert d.lengths(i).tolist() == [1, 1, 1, 1]
    d.validate([7, 7, 7])


def test_constructor_errors_name_the_feature():
    v, o = torch.tensor([1, 2]), torch.tensor([0, 1, 2])
    with pytest.raises(ValueError, match="one tensor per key"):
        JaggedBatch(["a", "b"], [v], [o])
    with pytest.raises(TypeError, match="feature 'a'.*int32 or int64"):
        JaggedBatch(["a"], [v.float()], [o])
    with pytest.raises(TypeError, match="offsets of feature 'a'"):
        JaggedBatch(["a"], [v], [o.int()])
    with pytest.raises(ValueError, match="feature 'b'.*3 bags"):
        JaggedBatch(["a", "b"], [v, v], [o, torch.tensor([0, 1, 1, 2])])
    with pytest.raises(ValueError, match="duplicate"):
        JaggedBatch(["a", "a"], [v, v], [o, o])
    with pytest.raises(ValueError, match="weights of feature 'a': 1 weights for 2 ids"):
        JaggedBatch(["a"], [v], [o], [torch.tensor([1.0])])
    with pytest.raises(ValueError, match="negative length -1 at sample 1"):
        JaggedBatch.from_lengths(["a"], [v], [torch.tensor([3, -1])])
    with pytest.raises(ValueError, match="1-D"):
        JaggedBatch(["a"], [v.view(1, 2)], [o])


def test_validate_messages():
    ok_o = torch.tensor([0, 1, 3])
    with pytest.raises(ValueError, match=r"feature 'x': offsets not monotone at position 2"):
        JaggedBatch(["x"], [torch.tensor([1, 2, 3])], [torch.tensor([0, 3, 1])]).validate()
    with pytest.raises(ValueError, match=r"last offset is 3 but there are 4 values"):
        JaggedBatch(["x"], [torch.tensor([1, 2, 3, 4])], [ok_o]).validate()
    with pytest.raises(ValueError, match=r"offsets\[0\] is 1"):
        JaggedBatch(["x"], [torch.tensor([1, 2])], [torch.tensor([1, 1, 2])]).validate()
    b = JaggedBatch(["x", "y"], [torch.tensor([1, 2, 3]), torch.tensor([0, 9, 2])], [ok_o, ok_o])
    b.validate([4, 10])
    with pytest.raises(ValueError, match=r"feature 'y': id 9 at position 1 \(sample 1\).*5 rows"):
        b.validate([4, 5])
    neg = JaggedBatch(["x"], [torch.tensor([0, -1, 2])], [ok_o])
    with pytest.raises(ValueError, match=r"id -1 at position 1 \(sample 1\)"):
        neg.validate([4])
    with pytest.raises(ValueError, match="2 sizes for 1 features"):
        neg.validate([4, 4])


def test_empty_batch_and_empty_bags():
    b = JaggedBatch(["a"], [torch.empty(0, dtype=torch.int64)], [torch.zeros(4, dtype=torch.int64)])
    b.validate([1])
    assert b.lengths(0).tolist() == [0, 0, 0]
    z = JaggedBatch(["a"], [torch.empty(0, dtype=torch.int32)], [torch.zeros(1, dtype=torch.int32)])
    assert z.batch_size == 0


def test_concat_values_is_feature_major():
    b = random_batch(batch_size=4, num_features=3)
    values, offsets = b.concat_values()
    assert offsets.numel() == 4 * 3 + 1
    for f in range(3):
        for s in range(4):
            lo, hi = offsets[f * 4 + s], offsets[f * 4 + s + 1]
            o = b.offsets[f]
            assert torch.equal(values[lo:hi], b.values[f][o[s] : o[s + 1]])


def test_with_index_dtype_and_to():
    b = random_batch(weighted=True).with_index_dtype(torch.int32)
    assert all(v.dtype == torch.int32 for v in b.values)
    c = b.to("cpu")
    assert c.keys == b.keys and torch.equal(c.weights[0], b.weights[0])
    with pytest.raises(KeyError, match="no feature named 'zz'"):
        b.feature("zz")


@pytest.mark.parametrize("weighted", [False, True])
def test_kjt_round_trip(weighted):
    pytest.importorskip("torchrec", reason="TorchRec is not installed")
    b = random_batch(batch_size=6, num_features=4, weighted=weighted)
    kjt = b.to_kjt()
    assert kjt.keys() == list(b.keys)
    assert kjt.stride() == 6
    for i, k in enumerate(b.keys):
        jt = kjt[k]
        assert torch.equal(jt.values(), b.values[i])
        assert torch.equal(jt.lengths(), b.lengths(i))
        if weighted:
            assert torch.equal(jt.weights(), b.weights[i])
    back = JaggedBatch.from_kjt(kjt)
    assert back.keys == b.keys
    for i in range(b.num_features):
        assert torch.equal(back.values[i], b.values[i])
        assert torch.equal(back.offsets[i], b.offsets[i])
        if weighted:
            assert torch.equal(back.weights[i], b.weights[i])
    assert (back.weights is None) == (not weighted)
