"""Every bad input gives a clear error before any kernel runs (checked on CPU)."""

from __future__ import annotations

import pytest
import torch

import emb_kernels
from emb_kernels import nvrtc_build, ops


def bags():
    weight = torch.randn(10, 4)
    indices = torch.tensor([1, 2, 3, 4, 5])
    offsets = torch.tensor([0, 2, 3])
    return weight, indices, offsets


def test_out_of_range_id_names_position_value_and_bag():
    w, i, o = bags()
    i[3] = 10
    with pytest.raises(
        ValueError, match=r"id 10 at position 3 \(bag 2\) is outside the table of 10 rows"
    ):
        emb_kernels.embedding_bag(w, i, o)
    i[3] = -1
    with pytest.raises(ValueError, match=r"id -1 at position 3"):
        emb_kernels.embedding_bag(w, i, o, validate=False)  # the CPU path always validates


def test_out_of_range_id_in_2d_input_names_row_and_column():
    w = torch.randn(5, 3)
    with pytest.raises(ValueError, match=r"position 4 \(indices\[1, 1\]\)"):
        emb_kernels.embedding_bag(w, torch.tensor([[0, 1, 2], [3, 9, 0]]))


@pytest.mark.parametrize(
    "offsets,kwargs,message",
    [
        ([0, 3, 2], {}, r"offsets not monotone at position 2: offsets\[2\]=2 < offsets\[1\]=3"),
        ([1, 2, 3], {}, r"offsets\[0\] is 1; the first bag must start at position 0"),
        ([0, 2, 7], {}, r"offsets\[2\]=7 is past the end of the 5 ids"),
        ([0, 2, 3], {"include_last_offset": True}, r"the last offset is 3 but there are 5 ids"),
        ([], {"include_last_offset": True}, r"expected B\+1 entries"),
    ],
)
def test_bad_offsets(offsets, kwargs, message):
    w, i, _ = bags()
    with pytest.raises(ValueError, match=message):
        emb_kernels.embedding_bag(w, i, torch.tensor(offsets, dtype=torch.int64), **kwargs)


def test_wrong_types_shapes_and_devices():
    w, i, o = bags()
    with pytest.raises(TypeError, match="indices: expected int32 or int64"):
        emb_kernels.embedding_bag(w, i.float(), o)
    with pytest.raises(TypeError, match="offsets: expected int32 or int64"):
        emb_kernels.embedding_bag(w, i, o.float())
    with pytest.raises(ValueError, match="weight: expected a 2-D"):
        emb_kernels.embedding_bag(w.view(-1), i, o)
    with pytest.raises(TypeError, match="weight: expected float32"):
        emb_kernels.embedding_bag(w.to(torch.int32), i, o)
    with pytest.raises(TypeError, match="weight: expected a torch.Tensor"):
        emb_kernels.embedding_bag(w.tolist(), i, o)
    with pytest.raises(ValueError, match="indices are on meta but weight is on cpu"):
        emb_kernels.embedding_bag(w, i.to("meta"), o)
    with pytest.raises(ValueError, match="offsets are on meta but indices are on cpu"):
        emb_kernels.embedding_bag(w, i, o.to("meta"))
    with pytest.raises(ValueError, match="offsets: required when indices is 1-D"):
        emb_kernels.embedding_bag(w, i)
    with pytest.raises(ValueError, match="offsets: must be None when indices is 2-D"):
        emb_kernels.embedding_bag(w, i.view(1, 5), o)
    with pytest.raises(ValueError, match="indices: expected a 1-D"):
        emb_kernels.embedding_bag(w, i.view(1, 1, 5), None)


def test_weights_modes_padding_and_variant_options():
    w, i, o = bags()
    psw = torch.rand(5)
    with pytest.raises(ValueError, match="only supported with mode='sum'"):
        emb_kernels.embedding_bag(w, i, o, mode="mean", per_sample_weights=psw)
    with pytest.raises(TypeError, match="differs from weight's"):
        emb_kernels.embedding_bag(w, i, o, per_sample_weights=psw.double())
    with pytest.raises(ValueError, match="one weight per id"):
        emb_kernels.embedding_bag(w, i, o, per_sample_weights=psw[:4])
    with pytest.raises(ValueError, match="mode: expected one of"):
        emb_kernels.embedding_bag(w, i, o, mode="median")
    with pytest.raises(ValueError, match="padding_idx must be within the number of embeddings"):
        emb_kernels.embedding_bag(w, i, o, padding_idx=10)
    with pytest.raises(ValueError, match="variant: expected one of"):
        emb_kernels.embedding_bag(w, i, o, variant="turbo")
    with pytest.raises(ValueError, match="'fast' takes no max_registers"):
        emb_kernels.embedding_bag(w, i, o, variant="fast", max_registers=32)
    with pytest.raises(ValueError, match="only the 'l2p' and 'combined' variants pin rows"):
        emb_kernels.embedding_bag(w, i, o, variant="rpf", hot_rows=[1, 2])
    with pytest.raises(ValueError, match="prefetch_distance must be 0 or one of"):
        emb_kernels.embedding_bag(w, i, o, variant="rpf", prefetch_distance=3)
    with pytest.raises(ValueError, match="max_registers must be between 16 and 255"):
        emb_kernels.embedding_bag(w, i, o, variant="optmt", max_registers=8)


def test_variant_resolution():
    assert ops.resolve_variant("combined") == ops.VariantConfig(
        "combined", "device", "device", True
    )
    assert ops.resolve_variant("combined", 42) == ops.VariantConfig("combined", 42, "device", True)
    assert ops.resolve_variant("optmt", max_registers=0).max_registers is None
    assert ops.resolve_variant("rpf", prefetch_distance=8).prefetch == 8
    assert ops.resolve_variant("baseline", max_registers=40) == ops.VariantConfig(
        "baseline", 40, 0, False
    )


def test_missing_cuda_python_names_the_extra(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name.startswith("cuda"):
            raise ImportError("No module named 'cuda'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(ImportError, match=r"pip install 'emb-kernels\[cuda\]'"):
        nvrtc_build.nvrtc_module()
    from emb_kernels import launch

    with pytest.raises(ImportError, match=r"pip install 'emb-kernels\[cuda\]'"):
        launch.driver_module()
