"""Every variant on the GPU against the float64 reference (skipped without a GPU).

Fresh random inputs per test; outputs poisoned with NaN before each launch so an unwritten
element fails; the paper variants' offset2bag / bag_size checked too.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import emb_kernels
from emb_kernels import errors, kernels, l2p, ops
from emb_kernels.reference import embedding_bag_reference, offset2bag_and_sizes

pytestmark = pytest.mark.gpu

VARIANTS = ["baseline", "optmt", "rpf", "l2p", "combined", "fast"]
DTYPES = [(torch.float32, 2e-6), (torch.float16, 2e-3), (torch.bfloat16, 1.6e-2)]
LENGTHS = [0, 1, 3, 149, 150, 151, 0, 2500, 2, 1, 33, 7]  # empty, odd, ~150, huge, odd last


def rel_err(out, ref):
    out, ref = out.double().cpu(), ref.double().cpu()
    den = float(ref.norm())
    return float((out - ref).norm()) / den if den else float((out - ref).norm())


def assert_close(out, ref, tol, what):
    assert bool(torch.isfinite(out).all()), f"{what}: NaN/inf in the output (unwritten element?)"
    err = rel_err(out, ref)
    if not err <= tol:
        diff = (out.double().cpu() - ref.double().cpu()).abs()
        pos = divmod(int(diff.argmax()), out.shape[1])
        raise AssertionError(
            f"{what}: relative error {err:.3e} > {tol:.1e}; worst element {pos}: "
            f"{float(out[pos])} vs {float(ref[pos])}"
        )


def make_case(rows, dim, lengths, dtype, index_dtype, device="cuda"):
    weight = torch.randn(rows, dim, dtype=torch.float64)
    lengths_t = torch.tensor(lengths)
    n = int(lengths_t.sum())
    ids = torch.randint(0, rows, (n,), dtype=index_dtype)
    offsets = torch.zeros(len(lengths), dtype=index_dtype)
    offsets[1:] = torch.cumsum(lengths_t, 0)[:-1].to(index_dtype)
    return weight.to(dtype).to(device), ids.to(device), offsets.to(device)


def truth(weight, ids, offsets, mode, psw=None, pad=None):
    full = torch.cat([offsets.cpu(), torch.tensor([ids.numel()], dtype=offsets.dtype)])
    return embedding_bag_reference(
        weight.cpu().double(), ids.cpu(), full, mode,
        None if psw is None else psw.cpu().double(), pad,
    )  # fmt: skip


def poisoned(b, d, dtype):
    return torch.full((b, d), float("nan"), dtype=dtype, device="cuda")


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
@pytest.mark.parametrize("dtype,tol", DTYPES)
@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64])
def test_variant_matches_float64_reference(variant, mode, dtype, tol, index_dtype):
    dim = 200 if dtype == torch.float32 else 72  # more than one 32-column slice; odd vectors
    weight, ids, offsets = make_case(5003, dim, LENGTHS, dtype, index_dtype)
    hot = torch.randint(0, 5003, (300,)) if variant in ("l2p", "combined") else None
    out = poisoned(len(LENGTHS), dim, dtype)
    res = emb_kernels.embedding_bag(weight, ids, offsets, mode=mode, variant=variant,
                                    hot_rows=hot, out=out)  # fmt: skip
    torch.cuda.synchronize()
    assert res is out and out.dtype == dtype
    assert_close(out, truth(weight, ids, offsets, mode), tol, f"{variant} {mode} {dtype}")


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("dtype,tol", DTYPES)
def test_padding_and_per_sample_weights(variant, dtype, tol):
    weight, ids, offsets = make_case(700, 40, LENGTHS, dtype, torch.int64)
    ids[::5] = 11
    psw = torch.rand(ids.numel(), device="cuda", dtype=torch.float64).to(dtype)
    for mode, w in (("sum", psw), ("mean", None), ("max", None)):
        out = poisoned(len(LENGTHS), 40, dtype)
        emb_kernels.embedding_bag(weight, ids, offsets, mode=mode, per_sample_weights=w,
                                  padding_idx=11, variant=variant, out=out)  # fmt: skip
        torch.cuda.synchronize()
        ref = truth(weight, ids, offsets, mode, w, 11)
        assert_close(out, ref, tol, f"{variant} {mode} pad+weights")


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("dim", [1, 2, 3, 4, 13, 16, 64, 128, 256, 1000])
def test_dims_and_one_row_table(variant, dim):
    for dtype, tol in DTYPES[:2]:
        weight, ids, offsets = make_case(1, dim, [3, 0, 5, 1], dtype, torch.int32)
        out = emb_kernels.embedding_bag(weight, ids, offsets, variant=variant, mode="mean")
        assert_close(out, truth(weight, ids, offsets, "mean"), tol, f"{variant} one row d={dim}")
        weight, ids, offsets = make_case(999, dim, LENGTHS, dtype, torch.int64)
        out = emb_kernels.embedding_bag(weight, ids, offsets, variant=variant)
        assert_close(out, truth(weight, ids, offsets, "sum"), tol, f"{variant} d={dim}")


def test_fast_block_mode_for_huge_pooling():
    for dtype, tol in DTYPES:
        weight, ids, offsets = make_case(4000, 96, [3000, 0, 700, 1, 2049], dtype, torch.int64)
        for mode in ("sum", "mean"):
            launcher = ops.make_launcher(weight, ids, offsets, mode, variant="fast")
            assert launcher.plan.block_mode, "mean pooling >= 256 should pick block mode"
            launcher.out.fill_(float("nan"))
            launcher()
            torch.cuda.synchronize()
            assert_close(launcher.out, truth(weight, ids, offsets, mode), tol, f"block {mode}")


@pytest.mark.parametrize("unroll,hint", [(2, False), (4, False), (8, False), (16, False),
                                         (4, True), (8, True)])  # fmt: skip
def test_fast_unroll_depths_and_hints(unroll, hint):
    weight, ids, offsets = make_case(3000, 128, LENGTHS, torch.float32, torch.int64)
    ids[::9] = 17
    launcher = ops.make_launcher(weight, ids, offsets, "mean", padding_idx=17, variant="fast",
                                 fast={"unroll": unroll, "block_warps": 0, "hint": hint})  # fmt: skip
    assert launcher.plan.name.endswith(f"_u{unroll}" + ("_h" if hint else ""))
    launcher.out.fill_(float("nan"))
    launcher()
    ref = truth(weight, ids, offsets, "mean", None, 17)
    assert_close(launcher.out, ref, 2e-6, f"unroll {unroll} hint {hint}")


@pytest.mark.parametrize("block_warps", [0, 2, 4, 8])
@pytest.mark.parametrize("dtype,tol", DTYPES)
def test_fast_warp_and_block_modes(block_warps, dtype, tol):
    weight, ids, offsets = make_case(3000, 72, LENGTHS, dtype, torch.int32)
    psw = torch.rand(ids.numel(), device="cuda", dtype=torch.float64).to(dtype)
    for mode, w in (("sum", psw), ("mean", None)):
        launcher = ops.make_launcher(weight, ids, offsets, mode, w, variant="fast",
                                     fast={"block_warps": block_warps})  # fmt: skip
        assert launcher.plan.block_warps == block_warps
        launcher.out.fill_(float("nan"))
        launcher()
        ref = truth(weight, ids, offsets, mode, w)
        assert_close(launcher.out, ref, tol, f"block_warps {block_warps} {mode}")


@pytest.mark.parametrize("segment_rows", [2, 16, 100])
@pytest.mark.parametrize("dtype,tol", DTYPES)
@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64])
def test_fast_segmented_short_bags(segment_rows, dtype, tol, index_dtype):
    lengths = [1, 0, 0, 3, 1, 2, 0, 5, 1, 1, 0, 4, 1, 7, 0, 0, 2, 1, 9, 1, 0]  # empty runs, odd
    for dim in (128, 13, 4):
        weight, ids, offsets = make_case(600, dim, lengths, dtype, index_dtype)
        ids[::6] = 3
        psw = torch.rand(ids.numel(), device="cuda", dtype=torch.float64).to(dtype)
        for mode, w in (("sum", psw), ("mean", None), ("max", None)):
            launcher = ops.make_launcher(weight, ids, offsets, mode, w, 3, variant="fast",
                                         fast={"segment_rows": segment_rows})  # fmt: skip
            assert launcher.plan.segmented and launcher.plan.name.startswith("ek_fast_seg_")
            launcher.out.fill_(float("nan"))
            launcher()
            ref = truth(weight, ids, offsets, mode, w, 3)
            assert_close(launcher.out, ref, tol, f"segmented K from {segment_rows} {mode} d={dim}")


def test_fast_one_hot_picks_segments_and_batched_mixes_them():
    weight, ids, offsets = make_case(100_000, 128, [1] * 16384, torch.float32, torch.int64)
    launcher = ops.make_launcher(weight, ids, offsets, "sum", variant="fast")
    assert launcher.plan.segmented
    launcher.out.fill_(float("nan"))
    launcher()
    assert_close(launcher.out, truth(weight, ids, offsets, "sum"), 2e-6, "one-hot")
    from rec_common.generators import BatchGenerator, FeatureSpec

    feats = [FeatureSpec("a", rows=500, dim=16, pooling="one-hot"),
             FeatureSpec("b", rows=900, dim=128, pooling="uniform:0,3"),
             FeatureSpec("c", rows=50, dim=64, pooling="fixed:40")]  # fmt: skip
    batch = BatchGenerator(feats, seed=2).batch(777).to("cuda")
    tbe = emb_kernels.TableBatchedEmbeddingBags([500, 900, 50], [16, 128, 64], device="cuda",
                                                fast_options={"segment_rows": 16})  # fmt: skip
    out = tbe(batch)
    ref = torch.cat([embedding_bag_reference(tbe.table(t).cpu().double(),
                                             *[x.cpu() for x in batch.feature(t)[:2]])
                     for t in range(3)], 1)  # fmt: skip
    assert_close(out, ref, 2e-6, "batched segmented")


@pytest.mark.parametrize("prefetch", [1, 2, 4, 8])
@pytest.mark.parametrize("cap", [None, 32, 42])
def test_rpf_distances_and_caps_with_aux_outputs(prefetch, cap):
    weight, ids, offsets = make_case(2000, 64, LENGTHS, torch.float32, torch.int64)
    ids[::7] = 5
    launcher = ops.make_launcher(weight, ids, offsets, "mean", padding_idx=5, variant="rpf",
                                 prefetch_distance=prefetch, max_registers=cap or 0, aux=True)  # fmt: skip
    launcher.out.fill_(float("nan"))
    launcher()
    torch.cuda.synchronize()
    assert_close(launcher.out, truth(weight, ids, offsets, "mean", None, 5), 2e-6, "rpf")
    full = torch.cat([offsets.cpu(), torch.tensor([ids.numel()])])
    bags, sizes = offset2bag_and_sizes(ids.cpu(), full, 5)
    assert torch.equal(launcher.aux.offset2bag.cpu(), bags)
    assert torch.equal(launcher.aux.bag_size.cpu(), sizes)


def test_torch_agrees_on_the_same_inputs():
    weight, ids, offsets = make_case(10_000, 128, [150] * 64, torch.float32, torch.int64)
    ref = F.embedding_bag(ids, weight, offsets, mode="sum")
    for variant in VARIANTS:
        out = emb_kernels.embedding_bag(weight, ids, offsets, variant=variant)
        assert_close(out, ref, 1e-5, variant)


def test_bad_ids_raise_before_launch_or_are_skipped_and_reported():
    weight, ids, offsets = make_case(100, 32, [4, 4, 4], torch.float32, torch.int64)
    ids[6] = 100
    with pytest.raises(ValueError, match=r"id 100 at position 6 \(bag 1\)"):
        emb_kernels.embedding_bag(weight, ids, offsets, variant="fast")
    for variant in VARIANTS:
        out = emb_kernels.embedding_bag(weight, ids, offsets, variant=variant, validate=False)
        keep = torch.ones(ids.numel(), dtype=torch.bool)
        keep[6] = False
        lengths = torch.tensor([4, 3, 4])
        off = torch.zeros(3, dtype=torch.int64)
        off[1:] = torch.cumsum(lengths, 0)[:-1]
        ref = truth(weight, ids[keep.cuda()], off, "sum")
        assert_close(out, ref, 2e-6, f"{variant} skips the bad id")
        with pytest.raises(ValueError, match=r"id 100 at position 6 .*validate=False"):
            emb_kernels.check_errors()
        errors.check_errors()  # the record was reset


def test_l2p_prefetch_kernel_and_persisting_window():
    weight, ids, offsets = make_case(50_000, 128, [150] * 256, torch.float32, torch.int64)
    ref = truth(weight, ids, offsets, "sum")
    hot = l2p.select_hot_rows(ids.cpu(), 4096)
    l2p.pin_prefetch(weight, torch.as_tensor(hot, device="cuda"))
    out = emb_kernels.embedding_bag(weight, ids, offsets, variant="combined", hot_rows=hot)
    assert_close(out, ref, 2e-6, "l2p (a)")
    if l2p.persisting_l2_max_bytes() <= 0:
        pytest.skip("this GPU has no persisting L2 set-aside")
    table = l2p.RemappedTable(weight, hot)
    window = l2p.PersistingWindow()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        remapped = table.remap(ids)
        host_us = window.activate(table.weight.data_ptr(), table.hot_bytes)
        out_b = emb_kernels.embedding_bag(table.weight, remapped, offsets, variant="optmt")
        window.deactivate()
    torch.cuda.synchronize()
    assert host_us >= 0 and 0 < window.hit_ratio <= 1
    assert_close(out_b, ref, 2e-6, "l2p (b)")
    with pytest.raises(ValueError, match="default stream"):
        window.activate(table.weight.data_ptr(), table.hot_bytes, stream=0)


@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
@pytest.mark.parametrize("dtype,tol", DTYPES)
@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64])
def test_table_batched_fast_matches_per_table_reference(mode, dtype, tol, index_dtype):
    from rec_common.generators import BatchGenerator, FeatureSpec

    sizes, dims = [1000, 7, 1, 30_000, 500], [4, 16, 13, 128, 256]
    feats = [FeatureSpec(f"f{i}", rows=n, dim=d, pooling="uniform:0,40")
             for i, (n, d) in enumerate(zip(sizes, dims))]  # fmt: skip
    weighted = mode == "sum"
    batch = BatchGenerator(feats, seed=1, index_dtype=index_dtype, weighted=weighted).batch(333)
    batch = batch.to("cuda")
    for variant in ("fast", "baseline"):
        tbe = emb_kernels.TableBatchedEmbeddingBags(sizes, dims, mode=mode, dtype=dtype,
                                                    variant=variant, device="cuda")  # fmt: skip
        out = tbe(batch)
        torch.cuda.synchronize()
        ref = []
        for t in range(len(sizes)):
            v, o, w = batch.feature(t)
            ref.append(embedding_bag_reference(
                tbe.table(t).cpu().double(), v.cpu(), o.cpu(), mode,
                None if w is None else w.cpu().to(dtype).double(),
            ))  # fmt: skip
        assert_close(out, torch.cat(ref, 1), tol, f"batched {variant} {mode} {dtype}")


def test_report_reads_kernel_resources():
    from emb_kernels import report

    rows = report.gpu_report(torch.float32, torch.int64)
    by = {r["label"]: r for r in rows}
    assert by["baseline"]["registers"] > 0
    assert by["optmt (cap 42)"]["registers"] <= 42
    assert 0 < by["fast warp"]["occupancy"] <= 1
    assert kernels.baseline_name(torch.float32, torch.int64, "sum", 2) == by["rpf2"]["kernel"]


@pytest.mark.parametrize("segment_bags", [None, 2, 5])
@pytest.mark.parametrize("dtype,tol", DTYPES)
def test_fast_wave_segmented_medium_bags(segment_bags, dtype, tol):
    # enough bags of ~32 ids that warp mode needs several waves: the auto plan goes segmented
    gen = torch.Generator().manual_seed(3)
    lengths = torch.randint(16, 48, (20000,), generator=gen)
    lengths[::97] = 0
    weight, ids, offsets = make_case(5000, 128, lengths.tolist(), dtype, torch.int64)
    ids[::11] = 7
    psw = torch.rand(ids.numel(), device="cuda", dtype=torch.float64).to(dtype)
    fast = {} if segment_bags is None else {"segment_bags": segment_bags}
    for mode, w in (("sum", psw), ("mean", None), ("max", None)):
        launcher = ops.make_launcher(weight, ids, offsets, mode, w, 7, variant="fast", fast=fast)
        assert launcher.plan.segmented or segment_bags is None, launcher.plan
        launcher.out.fill_(float("nan"))
        launcher()
        ref = truth(weight, ids, offsets, mode, w, 7)
        assert_close(launcher.out, ref, tol, f"wave-segmented K={segment_bags} {mode}")


@pytest.mark.parametrize("block_warps", [None, 0])
def test_batched_longest_first_order_keeps_tables_apart(block_warps):
    # pooling 20, 100, 40: units are numbered table 1, 2, 0 (longest chain first); offsets,
    # outputs and bad-id reports must still follow the table index
    from rec_common.generators import BatchGenerator, FeatureSpec

    feats = [FeatureSpec(f"f{i}", rows=n, dim=d, pooling=f"fixed:{p}")
             for i, (n, d, p) in enumerate([(300, 64, 20), (700, 128, 100), (90, 32, 40)])]  # fmt: skip
    batch = BatchGenerator(feats, seed=4).batch(333).to("cuda")
    opts = {} if block_warps is None else {"block_warps": block_warps}
    tbe = emb_kernels.TableBatchedEmbeddingBags([300, 700, 90], [64, 128, 32], device="cuda",
                                                validate=False, fast_options=opts)  # fmt: skip
    out = tbe(batch)
    plan = next(iter(tbe._plans.values()))
    assert plan.meta.view(3, -1)[:, 9].tolist() == [1, 2, 0], plan
    ref = torch.cat([embedding_bag_reference(tbe.table(t).cpu().double(),
                                             *[x.cpu() for x in batch.feature(t)[:2]])
                     for t in range(3)], 1)  # fmt: skip
    assert_close(out, ref, 2e-6, f"longest first, block_warps={block_warps}")
    bad = batch.values[2].clone()
    bad[5] = 90
    from rec_common.jagged import JaggedBatch

    broken = JaggedBatch(batch.keys, [batch.values[0], batch.values[1], bad], batch.offsets)
    tbe(broken)
    with pytest.raises(ValueError, match="#2"):
        emb_kernels.check_errors()


def test_device_cap_and_batched_pinning():
    from emb_kernels import occupancy

    props = torch.cuda.get_device_properties(0)
    cap = ops.on_device(ops.resolve_variant("optmt"), torch.device("cuda")).max_registers
    assert cap == occupancy.pick_register_cap(props.multi_processor_count)
    weight, ids, offsets = make_case(3000, 64, [150] * 64, torch.float32, torch.int64)
    launcher = ops.make_launcher(weight, ids, offsets, variant="combined", hot_rows=[1, 2, 3])
    assert launcher.config.max_registers == cap
    sizes = [3000, 500]
    tbe = emb_kernels.TableBatchedEmbeddingBags(
        sizes, 64, variant="combined", device="cuda", hot_rows=[[1, 2, 3], None]
    )
    from rec_common.generators import BatchGenerator, FeatureSpec

    feats = [FeatureSpec(f"f{i}", rows=n, dim=64, pooling="fixed:20") for i, n in enumerate(sizes)]
    batch = BatchGenerator(feats, seed=4).batch(100).to("cuda")
    ref = torch.cat([embedding_bag_reference(tbe.table(t).cpu().double(),
                                             *[x.cpu() for x in batch.feature(t)[:2]])
                     for t in range(2)], 1)  # fmt: skip
    assert_close(tbe(batch), ref, 2e-6, "batched combined with pins")


def test_fbgemm_baseline_matches_torch_when_present():
    from rec_common import fbgemm_tbe

    kind, why = fbgemm_tbe.status()
    if kind is None:
        pytest.skip(why)
    weight, ids, offsets = make_case(2000, 128, [3, 0, 40, 7] * 16, torch.float32, torch.int64)
    run = fbgemm_tbe.make_tbe([weight.float()])
    full = torch.cat([offsets, torch.tensor([ids.numel()], device="cuda")])
    out = run(ids.to(run.index_dtype), full.to(run.index_dtype))
    assert_close(out, truth(weight, ids, offsets, "sum"), 1e-5, f"fbgemm {kind}")


COOP_LENGTHS = [0, 1, 31, 32, 33, 149, 150, 151, 0, 0, 2, 64, 1, 0]  # chunk edges, empty runs


@pytest.mark.parametrize("dim", [128, 160, 256, 16])  # whole warp, partial slice, 2 slices, G<32
@pytest.mark.parametrize("dtype,tol", DTYPES)
@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64])
def test_fast_coop_ids_match_reference(dim, dtype, tol, index_dtype):
    for segment_bags in (None, 3):
        weight, ids, offsets = make_case(700, dim, COOP_LENGTHS, dtype, index_dtype)
        ids[::5] = 11
        psw = torch.rand(ids.numel(), device="cuda", dtype=torch.float64).to(dtype)
        fast = {"block_warps": 0, "coop": True}
        if segment_bags:
            fast["segment_bags"] = segment_bags
        for mode, w, pad in (("sum", psw, 11), ("sum", None, None), ("mean", None, 11),
                             ("max", None, 11), ("max", None, None)):  # fmt: skip
            launcher = ops.make_launcher(weight, ids, offsets, mode, w, pad, variant="fast",
                                         fast=fast)  # fmt: skip
            assert launcher.plan.coop and launcher.plan.name.endswith("_u8c")
            launcher.out.fill_(float("nan"))
            launcher()
            ref = truth(weight, ids, offsets, mode, w, pad)
            what = f"coop d={dim} K={segment_bags} {mode} psw={w is not None} pad={pad}"
            assert_close(launcher.out, ref, tol, what)


def test_fast_coop_skips_and_reports_bad_ids():
    weight, ids, offsets = make_case(100, 128, [40, 0, 37], torch.float32, torch.int64)
    ids[45] = 100
    ids[3] = -1
    launcher = ops.make_launcher(weight, ids, offsets, "sum", variant="fast",
                                 validate_input=False, fast={"coop": True, "block_warps": 0})  # fmt: skip
    assert launcher.plan.coop
    out = launcher()
    errors.watch(out.device, lambda table, pos: f"bad id at table {table} position {pos}")
    keep = torch.ones(ids.numel(), dtype=torch.bool)
    keep[[3, 45]] = False
    off = torch.tensor([0, 39, 39])
    assert_close(out, truth(weight, ids[keep.cuda()], off, "sum"), 2e-6, "coop skips bad ids")
    with pytest.raises(ValueError, match=r"table 0 position 3\b"):
        emb_kernels.check_errors()


def test_fast_coop_and_v1_agree_on_mlperf_like_tables():
    from rec_common.generators import BatchGenerator, FeatureSpec

    sizes = [3, 1, 100, 27, 1, 12]
    feats = [FeatureSpec(f"f{i}", rows=1000 + 100 * i, dim=128,
                         pooling="one-hot" if s == 1 else f"fixed:{s}")
             for i, s in enumerate(sizes)]  # fmt: skip
    batch = BatchGenerator(feats, seed=5).batch(1000).to("cuda")
    rows = [f.rows for f in feats]
    outs = {}
    for name, opts in (("default", {}), ("coop", {"coop": True, "block_warps": 0}),
                       ("v1", {"coop": False})):  # fmt: skip
        tbe = emb_kernels.TableBatchedEmbeddingBags(rows, [128] * len(rows), device="cuda",
                                                    fast_options=opts)  # fmt: skip
        outs[name] = tbe(batch)
        ref = torch.cat([embedding_bag_reference(tbe.table(t).cpu().double(),
                                                 *[x.cpu() for x in batch.feature(t)[:2]])
                         for t in range(len(rows))], 1)  # fmt: skip
        assert_close(outs[name], ref, 2e-6, f"mlperf-like {name}")


# the opt-in knobs of H200 run 3 (`split`, `seg_unroll`): every combination against the
# float64 reference on fresh inputs, bags of 0, 1, 31-33, 100, 149-151 ids
KNOB_LENGTHS = [0, 1, 31, 32, 33, 100, 149, 150, 151, 0, 0, 2, 64, 1, 0, 7]
KNOB_MODES = (("sum", True, 11), ("sum", False, None), ("mean", False, 11), ("max", False, 11),
              ("max", False, None))  # fmt: skip


def run_knob_cases(weight, ids, offsets, fast, tol, check):
    psw = torch.rand(ids.numel(), device="cuda", dtype=torch.float64).to(weight.dtype)
    for mode, with_w, pad in KNOB_MODES:
        w = psw if with_w else None
        launcher = ops.make_launcher(weight, ids, offsets, mode, w, pad, variant="fast",
                                     fast=fast)  # fmt: skip
        check(launcher.plan)
        launcher.out.fill_(float("nan"))
        launcher()
        ref = truth(weight, ids, offsets, mode, w, pad)
        assert_close(launcher.out, ref, tol, f"{fast} {mode} psw={with_w} pad={pad}")


@pytest.mark.parametrize("dim", [128, 160, 256, 16])  # whole warp, partial slice, 2 slices, G<32
@pytest.mark.parametrize("dtype,tol", DTYPES)
@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64])
def test_fast_split_bags_match_reference(dim, dtype, tol, index_dtype):
    weight, ids, offsets = make_case(700, dim, KNOB_LENGTHS, dtype, index_dtype)
    ids[::5] = 11
    for split in (2, 4, 8):
        for coop in (False, True):
            fast = {"split": split, "split_min_pooling": 1, "coop": coop}

            want = kernels.split_parts([sum(KNOB_LENGTHS) / len(KNOB_LENGTHS)], split, 1)

            def check(plan, want=want, coop=coop):
                assert list(plan.split) == want and want[0] > 1, plan
                assert plan.name.endswith("_u8cs" if coop else "_u4s"), plan.name

            run_knob_cases(weight, ids, offsets, fast, tol, check)


@pytest.mark.parametrize("dim", [128, 160, 64, 16])
@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64])
def test_fast_seg_unroll8_matches_reference(dim, index_dtype):
    weight, ids, offsets = make_case(700, dim, KNOB_LENGTHS, torch.float32, index_dtype)
    ids[::5] = 11
    for segment_bags in (None, 3):
        for coop in (False, True):
            fast = {"seg_unroll": 8, "coop": coop}
            if segment_bags:
                fast["segment_bags"] = segment_bags

            def check(plan, coop=coop):
                assert plan.seg_unroll == 8 and plan.name.endswith("_u8c8" if coop else "_u8")

            run_knob_cases(weight, ids, offsets, fast, 2e-6, check)
    with pytest.raises(ValueError, match="float32 only"):
        ops.make_launcher(weight.half(), ids, offsets, variant="fast", fast={"seg_unroll": 8})


@pytest.mark.parametrize("rows", [8, 16])
@pytest.mark.parametrize("dim", [128, 160, 256, 64])  # whole warp, partial slice, 2, fallback
@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64])
def test_fast_async_rows_match_reference(rows, dim, index_dtype):
    # the cp.async ring (H200 run 4 knob): bags shorter than the ring, chunk edges of the
    # cooperative ids (31-33, 64), long bags, empty runs, K = 3 bags per warp; against the
    # float64 reference (run_knob_cases) and torch's F.embedding_bag
    weight, ids, offsets = make_case(700, dim, KNOB_LENGTHS, torch.float32, index_dtype)
    ids[::5] = 11
    for segment_bags, only in ((None, None), (3, None), (None, False), (3, False)):
        fast = {"async_rows": rows, "async_only": only}
        if segment_bags:
            fast["segment_bags"] = segment_bags

        def check(plan, only=only):
            assert plan.async_rows == (rows if dim >= 128 else 0), plan
            assert plan.async_tables == (dim >= 128,), plan.paths
            # one table on the ring: the kernel without the fallback, unless told otherwise
            assert plan.name.endswith("o") == (dim >= 128 and only is None), plan.name

        run_knob_cases(weight, ids, offsets, fast, 2e-6, check)
    for mode, pad in (("sum", 11), ("mean", None), ("max", 11)):
        launcher = ops.make_launcher(weight, ids, offsets, mode, None, pad, variant="fast",
                                     fast={"async_rows": rows})  # fmt: skip
        launcher.out.fill_(float("nan"))
        ref = F.embedding_bag(ids, weight, offsets, mode=mode, padding_idx=pad)
        assert_close(launcher(), ref, 1e-5, f"async{rows} vs F.embedding_bag {mode} pad={pad}")
    half = ops.make_launcher(weight.half(), ids, offsets, variant="fast", fast={"async_rows": rows})
    assert half.plan.async_rows == 0  # float16 falls back to the segmented path


@pytest.mark.parametrize("fast", [{"split": 4, "split_min_pooling": 1},
                                  {"split": 2, "split_min_pooling": 1, "coop": True},
                                  {"seg_unroll": 8}, {"seg_unroll": 8, "coop": True},
                                  {"async_rows": 8}, {"async_rows": 16},
                                  {"async_rows": 16, "segment_bags": 2}])  # fmt: skip
def test_fast_new_knobs_skip_and_report_bad_ids(fast):
    weight, ids, offsets = make_case(100, 128, [40, 0, 37, 100], torch.float32, torch.int64)
    ids[45] = 100
    ids[3] = -1
    launcher = ops.make_launcher(weight, ids, offsets, "sum", variant="fast",
                                 validate_input=False, fast=fast)  # fmt: skip
    out = launcher()
    errors.watch(out.device, lambda table, pos: f"bad id at table {table} position {pos}")
    keep = torch.ones(ids.numel(), dtype=torch.bool)
    keep[[3, 45]] = False
    off = torch.tensor([0, 39, 39, 75])
    assert_close(out, truth(weight, ids[keep.cuda()], off, "sum"), 2e-6, f"{fast} bad ids")
    with pytest.raises(ValueError, match=r"table 0 position 3\b"):
        emb_kernels.check_errors()


@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64])
def test_fast_new_knobs_on_mlperf_like_tables(index_dtype):
    # tables of different splits in one launch (padding units between them), short tables
    # in segments, dims that put several bags in a warp, per-sample weights
    from rec_common.generators import BatchGenerator, FeatureSpec

    sizes = [3, 1, 100, 27, 1, 12, 40, 20]
    dims = [128, 128, 128, 128, 64, 16, 64, 128]
    feats = [FeatureSpec(f"f{i}", rows=1000 + 100 * i, dim=d,
                         pooling="one-hot" if s == 1 else f"fixed:{s}")
             for i, (s, d) in enumerate(zip(sizes, dims))]  # fmt: skip
    batch = BatchGenerator(feats, seed=6, index_dtype=index_dtype).batch(1001).to("cuda")
    rows = [f.rows for f in feats]
    for opts in ({"split": 2}, {"split": 4}, {"split": 8}, {"split": 8, "split_min_pooling": 16},
                 {"split": 4, "coop": True}, {"seg_unroll": 8},
                 {"seg_unroll": 8, "coop": True}, {"async_rows": 8},
                 {"async_rows": 16}):  # fmt: skip
        tbe = emb_kernels.TableBatchedEmbeddingBags(rows, dims, device="cuda",
                                                    fast_options=opts)  # fmt: skip
        out = tbe(batch)
        plan = next(iter(tbe._plans.values()))
        if "split" in opts:
            assert max(plan.split) > 1, plan
        if "async_rows" in opts:  # the 64- and 16-wide tables fall back inside the launch
            assert plan.async_tables == tuple(d >= 128 for d in dims), plan.paths
        ref = torch.cat([embedding_bag_reference(tbe.table(t).cpu().double(),
                                                 *[x.cpu() for x in batch.feature(t)[:2]])
                         for t in range(len(rows))], 1)  # fmt: skip
        assert_close(out, ref, 2e-6, f"mlperf-like {opts}")
