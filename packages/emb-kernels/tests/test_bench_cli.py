"""The benchmark's variant names and CLI defaults (CPU; the timing itself needs a GPU)."""

from __future__ import annotations

import argparse
import sys

import pytest
import torch

from emb_kernels import bench


def test_parse_variant_names():
    assert bench.parse_variant("rpf+optmt") == bench.Spec("rpf+optmt", "rpf", "device")
    assert bench.parse_variant("combined@cap42").max_registers == 42
    assert bench.parse_variant("fast-seg4").fast_options() == {"block_warps": 0, "segment_bags": 4}
    assert bench.parse_variant("combined").pin == "prefetch"
    assert bench.parse_variant("combined-win").pin == "window"
    assert bench.parse_variant("baseline@cap32").max_registers == 32
    assert bench.parse_variant("rpf4@capnone") == bench.Spec("rpf4@capnone", "rpf", 0, prefetch=4)
    assert bench.parse_variant("fast-u16").unroll == 16
    with pytest.raises(ValueError, match="unknown variant 'warp'"):
        bench.parse_variant("warp")
    with pytest.raises(ValueError, match="paper variants only"):
        bench.parse_variant("fast@cap32")


def args_for(argv):
    args = bench.build_parser().parse_args(argv)
    bench._defaults(args)
    return args


def test_defaults_and_variant_sets():
    a = args_for(["--workload", "micro24"])
    assert (a.num_tables, a.num_embeddings, a.batch_size, a.bag_size, a.batches) == (
        12,
        500_000,
        2048,
        150,
        12,
    )
    names = [s.name for s in bench.specs_for(a, fbgemm_ok=False)]
    assert names[0] == "baseline" and "combined" in names and "torch" in names
    assert "fbgemm" not in names and "combined-rpf2@cap42" in names
    assert [s.name for s in bench.specs_for(a, fbgemm_ok=True)][-1] == "fbgemm"  # auto
    off = args_for(["--workload", "micro24", "--fbgemm", "off"])
    assert "fbgemm" not in [s.name for s in bench.specs_for(off, fbgemm_ok=True)]
    assert a.pin_amortize == 12 and a.hotness == "high,medium,low,random"
    a = args_for(["--workload", "anchor-1table", "--variants", "fast,baseline", "--with-fbgemm"])
    assert (a.num_embeddings, a.batch_size, a.bag_size) == (4_000_000, 16384, 32)
    assert [s.name for s in bench.specs_for(a)] == ["baseline", "fast", "fbgemm"]
    sweep = [s.name for s in bench.specs_for(args_for(["--sweep", "registers"]), fbgemm_ok=True)]
    assert "fbgemm" not in sweep
    assert "baseline@cap32" in sweep and "rpf2@capnone" in sweep
    sweep = [s.name for s in bench.specs_for(args_for(["--sweep", "prefetch"]))]
    assert sweep[:3] == ["baseline", "baseline@cap32", "rpf1@capnone"] and "rpf8@cap32" in sweep
    a = args_for(["--workload", "mlperf-multihot"])
    assert (a.batch_size, a.max_rows, a.spin_us) == (8192, 10_000_000, 6000.0)
    assert bench._index_dtype(a) == torch.int64
    assert bench._index_dtype(args_for(["--index-dtype", "int32"])) == torch.int32
    with pytest.raises(SystemExit):
        args_for(["--index-dtype", "int16"])
    raw = bench.build_parser().parse_args(["--workload", "anchors", "--batches", "2"])
    bench._defaults(raw)
    one = bench.args_for(raw, "anchor-1table")
    kaggle = bench.args_for(raw, "criteo-kaggle")
    assert (one.batch_size, one.bag_size, one.batches) == (16384, 32, 2)
    assert (kaggle.batch_size, kaggle.spin_us, kaggle.batches) == (16384, 6000.0, 2)
    assert raw.batch_size is None  # the parsed flags are not changed
    assert "fast-seg4" in [s.name for s in bench.specs_for(one, fbgemm_ok=False)]
    dlrm = args_for(["--workload", "dlrm"])
    assert (dlrm.hotness, dlrm.num_tables, dlrm.batch_size) == ("random,high", 12, 2048)
    assert "fast" in [s.name for s in bench.specs_for(a)]
    assert bench.parse_variant("fast-block4").fast_options() == {"block_warps": 4}
    assert bench.parse_variant("fast-u4h").fast_options() == {
        "unroll": 4,
        "block_warps": 0,
        "hint": True,
    }


def test_main_without_gpu_exits_1(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    for wl in ("anchor-1table", "anchors", "dlrm", "micro24"):
        assert bench.main(["--workload", wl]) == 1
        assert "need a CUDA GPU" in capsys.readouterr().err
    for bad in (
        ["--variants", "nonsense"],
        ["--workload", "anchors", "--sweep", "registers"],
        ["--hotness", "lukewarm"],
        ["--workload", "anchors", "--variants", "fast-u3"],
        ["--workload", "dlrm", "--sweep", "fast"],
        ["--workload", "anchors", "--sweep", "prefetch"],
    ):
        with pytest.raises(SystemExit) as exc:
            bench.main(bad)
        assert exc.value.code == 2, bad
    assert isinstance(bench.build_parser(), argparse.ArgumentParser)


def test_fbgemm_status_says_why_and_make_tbe_refuses(monkeypatch):
    from rec_common import fbgemm_tbe

    kind, why = fbgemm_tbe.status()
    assert isinstance(why, str) and why
    assert kind in (None, *fbgemm_tbe.KINDS)
    if not torch.cuda.is_available():
        assert (kind, why) == (None, "no CUDA device to probe FBGEMM TBE on")
    monkeypatch.setitem(sys.modules, "fbgemm_gpu", None)  # import fails
    with pytest.raises(RuntimeError, match="FBGEMM TBE is not available: import fbgemm_gpu"):
        fbgemm_tbe.make_tbe([torch.randn(4, 4)])


def test_versions_are_filled_without_package_metadata():
    row = bench.fill_versions({"versions": {}})
    assert set(row["versions"]) == {"emb-kernels", "rec-common"}
    assert bench.fill_versions({"versions": {"x": "1"}})["versions"] == {"x": "1"}


def test_fast_sweep_variants_and_knobs():
    assert bench.parse_variant("fast-split4").fast_options() == {"split": 4}
    assert bench.parse_variant("fast-split2-min16").fast_options() == {
        "split": 2,
        "split_min_pooling": 16,
    }
    assert bench.parse_variant("fast-coop-split4").fast_options() == {"coop": True, "split": 4}
    assert bench.parse_variant("fast-su8").fast_options() == {"seg_unroll": 8}
    assert bench.parse_variant("fast-coop-su8").fast_options() == {"coop": True, "seg_unroll": 8}
    assert bench.parse_variant("fast-async8").fast_options() == {"async_rows": 8}
    assert bench.parse_variant("fast-async16").fast_options() == {"async_rows": 16}
    assert bench.parse_variant("fast-async8-tableorder").fast_options() == {
        "async_rows": 8, "longest_first": False}  # fmt: skip
    assert bench.parse_variant("fast-async8-segrows32").fast_options() == {
        "async_rows": 8, "segment_rows": 32}  # fmt: skip
    for sweep in (bench.FAST_SWEEP_SINGLE, bench.FAST_SWEEP_BATCHED):
        assert {"fast-async8", "fast-async16"} <= set(sweep)
    raw = bench.build_parser().parse_args(["--workload", "anchors", "--sweep", "fast"])
    bench._defaults(raw)
    one = [s.name for s in bench.specs_for(bench.args_for(raw, "anchor-1table"), fbgemm_ok=True)]
    assert one == [*bench.FAST_SWEEP_SINGLE, "fbgemm"]  # no paper baseline; TBE when it runs
    ml = bench.specs_for(bench.args_for(raw, "mlperf-multihot"), fbgemm_ok=False)
    assert [s.name for s in ml] == list(bench.FAST_SWEEP_BATCHED)
    for name in {*bench.FAST_SWEEP_SINGLE, *bench.FAST_SWEEP_BATCHED} - {"torch"}:
        assert bench.parse_variant(name).variant == "fast", name


def test_fast_sweep_plans_are_valid_for_every_anchor_shape():
    # every variant of the sweep plans on the anchor shapes (the GPU run must not fail on
    # a knob combination the planner refuses)
    from emb_kernels import kernels
    from rec_common.criteo_tables import MLPERF_MULTI_HOT_SIZES as sizes

    def plan(pool, dims, batch, **kw):
        n = len(pool)
        return kernels.plan_fast(
            dtype=torch.float32, index_dtype=torch.int64, rows=[1000] * n, dims=dims,
            weight_offsets=[0] * n, out_cols=[0] * n, out_stride=sum(dims), batch=batch,
            mode="sum", mean_pooling=sum(pool) / n, device="cpu", sm_count=132,
            table_pooling=[float(p) for p in pool], **kw,
        )  # fmt: skip

    for name in bench.FAST_SWEEP_SINGLE:
        if name != "torch":
            assert plan([32], [128], 16384, **bench.parse_variant(name).fast_options()).name
    for name in bench.FAST_SWEEP_BATCHED:
        if name != "torch":
            opts = bench.parse_variant(name).fast_options()
            assert plan(list(sizes), [128] * 26, 8192, **opts).name
            assert plan([1.0] * 26, [128] * 26, 16384, **opts).name  # criteo-kaggle one-hot
