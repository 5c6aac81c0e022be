"""FBGEMM TBE kind selection on CPU, with fake ``fbgemm_gpu`` modules in ``sys.modules``:
a kind counts only once it is built and run, and a failing kind falls through with its reason.
The fake training TBE pools for real (F.embedding_bag over its weights, TBE offset layout)."""

from __future__ import annotations

import enum
import sys
import types

import pytest
import torch
import torch.nn.functional as F

from rec_common import fbgemm_tbe

ATOMIC = (
    "Tried to instantiate class 'fbgemm.AtomicCounter', but it does not exist! "
    "Ensure that it is registered via torch::class_"
)


class _Pooling(enum.Enum):
    SUM = 0
    MEAN = 1


class _FakeTraining:
    """SplitTableBatchedEmbeddingBagsCodegen's forward contract, on CPU tensors."""

    def __init__(self, specs, pooling_mode, weights_precision, output_dtype, device):
        self.weights = [torch.zeros(rows, dim, device=device) for rows, dim, _, _ in specs]
        self.mode = "sum" if pooling_mode is _Pooling.SUM else "mean"

    def split_embedding_weights(self):
        return self.weights

    def eval(self):
        return self

    def __call__(self, indices, offsets):
        T = len(self.weights)
        B = (offsets.numel() - 1) // T
        outs = []
        for t, w in enumerate(self.weights):
            o = offsets[t * B : (t + 1) * B + 1]
            ids = indices[o[0] : o[-1]]
            outs.append(F.embedding_bag(ids, w, (o[:-1] - o[0]).long(), mode=self.mode))
        return torch.cat(outs, 1)


class _RaisesAtConstruction:
    def __init__(self, *args, **kwargs):
        raise RuntimeError(ATOMIC)


class _RaisesAtRun:
    """Builds, then its first forward fails (an op missing from the pack)."""

    def __init__(self, specs, device, **kwargs):
        self.w = [torch.zeros(rows, dim * 4, dtype=torch.uint8) for _, rows, dim, _, _ in specs]

    def fill_random_weights(self):
        pass

    def split_embedding_weights(self):
        return [(w, None) for w in self.w]

    def __call__(self, indices, offsets):
        raise NotImplementedError("Could not run 'fbgemm::int_nbit_split_embedding_codegen'")


def _install(monkeypatch, inference_cls, training_cls=_FakeTraining):
    ns = types.SimpleNamespace
    mods = {
        "fbgemm_gpu": ns(__version__="0.0-fake"),
        "fbgemm_gpu.split_embedding_configs": ns(SparseType=ns(FP32="fp32")),
        "fbgemm_gpu.split_table_batched_embeddings_ops_common": ns(
            BoundsCheckMode=ns(NONE="none"),
            EmbeddingLocation=ns(DEVICE="device", HOST="host"),
            PoolingMode=_Pooling,
        ),
        "fbgemm_gpu.split_table_batched_embeddings_ops_inference": ns(
            IntNBitTableBatchedEmbeddingBagsCodegen=inference_cls
        ),
        "fbgemm_gpu.split_table_batched_embeddings_ops_training": ns(
            ComputeDevice=ns(CUDA="cuda", CPU="cpu"),
            SplitTableBatchedEmbeddingBagsCodegen=training_cls,
        ),
    }
    for name, mod in mods.items():
        monkeypatch.setitem(sys.modules, name, mod)


@pytest.mark.parametrize("mode", ["sum", "mean"])
def test_inference_failing_at_construction_falls_through_to_training_forward(monkeypatch, mode):
    _install(monkeypatch, _RaisesAtConstruction)
    tables = [torch.randn(50, 16), torch.randn(30, 8)]
    run = fbgemm_tbe.make_tbe(tables, mode)
    assert run.kind == "training-forward" and run.index_dtype == torch.int64
    assert len(run.skipped) == 1 and run.skipped[0].startswith("inference: RuntimeError:")
    assert "fbgemm.AtomicCounter" in run.skipped[0]
    ids = [torch.tensor([3, 49, 7, 0]), torch.tensor([29, 1, 2])]
    offsets = torch.tensor([0, 2, 4, 5, 7])  # T=2 tables x B=2 bags
    out = run(torch.cat(ids), offsets)
    ref = torch.cat(
        [
            F.embedding_bag(ids[0], tables[0], torch.tensor([0, 2]), mode=mode),
            F.embedding_bag(ids[1], tables[1], torch.tensor([0, 1]), mode=mode),
        ],
        1,
    )
    torch.testing.assert_close(out, ref)
    kind, why = fbgemm_tbe.probe("cpu")
    assert kind == "training-forward"
    assert why.startswith("fbgemm_gpu 0.0-fake: training-forward TBE (skipped inference:")
    assert "AtomicCounter" in why


def test_inference_failing_at_first_run_falls_through(monkeypatch):
    _install(monkeypatch, _RaisesAtRun)
    run = fbgemm_tbe.make_tbe([torch.randn(10, 4)])
    assert run.kind == "training-forward"
    assert run.skipped == [
        "inference: NotImplementedError: Could not run 'fbgemm::int_nbit_split_embedding_codegen'"
    ]


def test_no_kind_working_raises_with_every_reason(monkeypatch):
    _install(monkeypatch, _RaisesAtConstruction, training_cls=_RaisesAtConstruction)
    with pytest.raises(RuntimeError, match="no TBE kind builds and runs") as exc:
        fbgemm_tbe.make_tbe([torch.randn(10, 4)])
    assert str(exc.value).count("AtomicCounter") == 2
    assert "inference: RuntimeError" in str(exc.value)
    assert "training-forward: RuntimeError" in str(exc.value)
    kind, why = fbgemm_tbe.probe("cpu")
    assert kind is None and why.startswith("fbgemm_gpu 0.0-fake imports but no TBE kind")
    # a kinds list naming only the broken one does not fall through to the other
    _install(monkeypatch, _RaisesAtConstruction)
    with pytest.raises(RuntimeError, match=r"\(inference: RuntimeError"):
        fbgemm_tbe.make_tbe([torch.randn(10, 4)], kinds=["inference"])


def test_wrong_output_is_not_accepted(monkeypatch):
    class _Wrong(_FakeTraining):
        def __call__(self, indices, offsets):
            return super().__call__(indices, offsets) + 1.0

    _install(monkeypatch, _RaisesAtConstruction, training_cls=_Wrong)
    with pytest.raises(RuntimeError, match="training-forward: RuntimeError: first run differs"):
        fbgemm_tbe.make_tbe([torch.randn(10, 4)])


def test_make_tbe_rejects_bad_arguments_naming_them():
    with pytest.raises(ValueError, match="mode must be 'sum' or 'mean', got 'max'"):
        fbgemm_tbe.make_tbe([torch.randn(4, 4)], "max")
    with pytest.raises(ValueError, match="tables is empty"):
        fbgemm_tbe.make_tbe([])
    with pytest.raises(ValueError, match="2-D float32"):
        fbgemm_tbe.make_tbe([torch.randn(4, 4, dtype=torch.float64)])
    with pytest.raises(ValueError, match="kinds"):
        fbgemm_tbe.make_tbe([torch.randn(4, 4)], kinds=["training"])
