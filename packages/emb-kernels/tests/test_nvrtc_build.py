"""Build options, cache keys and the atomic cache write (no GPU, no NVRTC needed)."""

from __future__ import annotations

import pytest

from emb_kernels import build, nvrtc_build


def test_options_and_caps():
    assert nvrtc_build.nvrtc_options("sm_80") == [
        "--gpu-architecture=sm_80",
        "-std=c++17",
        "-default-device",
    ]
    assert nvrtc_build.nvrtc_options("sm_90a", 0)[-1] == "-default-device"
    assert nvrtc_build.nvrtc_options("sm_90", 42)[-1] == "--maxrregcount=42"
    with pytest.raises(ValueError, match="expected a GPU architecture like 'sm_90'"):
        nvrtc_build.nvrtc_options("compute_90")
    with pytest.raises(ValueError, match="between 16 and 255"):
        nvrtc_build.check_cap(300)
    with pytest.raises(TypeError, match="expected an int or None"):
        nvrtc_build.check_cap("42")


def test_cache_key_depends_on_source_options_and_version():
    a = nvrtc_build.cache_key("bag_baseline.cu", nvrtc_build.nvrtc_options("sm_90", 42), "13.0")
    assert a == nvrtc_build.cache_key(
        "bag_baseline.cu", nvrtc_build.nvrtc_options("sm_90", 42), "13.0"
    )
    assert a != nvrtc_build.cache_key("bag_baseline.cu", nvrtc_build.nvrtc_options("sm_90"), "13.0")
    assert a != nvrtc_build.cache_key("bag_fast.cu", nvrtc_build.nvrtc_options("sm_90", 42), "13.0")
    assert a != nvrtc_build.cache_key(
        "bag_baseline.cu", nvrtc_build.nvrtc_options("sm_90", 42), "13.1"
    )
    with pytest.raises(ValueError, match="unknown CUDA source"):
        nvrtc_build.read_text("../../etc/passwd")


def test_cache_dir_and_atomic_write(tmp_path, monkeypatch):
    monkeypatch.setenv("EMB_KERNELS_CACHE", str(tmp_path / "c"))
    assert nvrtc_build.cache_dir() == tmp_path / "c"
    target = tmp_path / "c" / "x.cubin"
    nvrtc_build._atomic_write(target, b"abc")
    assert target.read_bytes() == b"abc"
    assert [p.name for p in target.parent.iterdir()] == ["x.cubin"]  # no temp file left


def test_nvcc_command_matches_nvrtc_options(tmp_path):
    cmd = nvrtc_build.nvcc_command("bag_fast.cu", "sm_90", 40, tmp_path / "o.cubin")
    assert "-arch=sm_90" in cmd and "-std=c++17" in cmd and "-maxrregcount=40" in cmd
    assert cmd[-1].endswith("bag_fast.cu")


def test_build_cli_parses_caps_and_plans_jobs():
    assert build.parse_caps("32, 42,none") == [32, 42, None]
    jobs = build.jobs_for([42])
    assert ("bag_baseline.cu", 42) in jobs and ("bag_baseline.cu", None) in jobs
    assert ("bag_fast.cu", None) in jobs and ("l2p.cu", None) in jobs
    with pytest.raises(SystemExit):
        build.main(["--caps", "7"])


def test_fast_plan_picks_modes():
    import torch

    from emb_kernels import kernels

    def plan(pooling, batch, **kw):
        return kernels.plan_fast(
            dtype=torch.float32, index_dtype=torch.int64, rows=[1000], dims=[128],
            weight_offsets=[0], out_cols=[0], out_stride=128, batch=batch, mode="sum",
            mean_pooling=pooling, device="cpu", sm_count=132, **kw,
        )  # fmt: skip

    # the anchor: bags of 32 -> 2 warps per bag (H200: block2 beat warp and segmented)
    assert plan(32, 16384).name == "ek_fast_block2_sum_f32_i64_v16"
    assert plan(20, 2048, coop=False).name == "ek_fast_warp_sum_f32_i64_v16_u4"  # short bags
    # cooperative id loads (opt-in, FAST_COOP): the segmented kernel's _u8c build
    assert plan(20, 2048, coop=True).name == "ek_fast_seg_sum_f32_i64_v16_u8c"
    assert not plan(20, 2048, segment_rows=0).coop  # no segmented kernel at all
    assert not plan(32, 16384).coop  # block mode has no coop path
    with pytest.raises(ValueError, match="coop"):
        plan(32, 16384, block_warps=2, coop=True)
    assert plan(150, 2048).block_warps == 4  # MICRO'24: 2048 bags would leave SMs idle
    assert plan(1000, 100_000).block_warps == 8  # long bags
    one_hot = plan(1, 26 * 16384)
    assert one_hot.segmented and one_hot.meta.tolist()[8] == 16
    assert plan(1, 16384).meta.tolist()[8] == 2  # K halved to keep 48 warps per SM
    assert plan(1, 100, segment_rows=16).meta.tolist()[8] == 16  # explicit: as given
    assert not plan(1, 26 * 16384, segment_rows=0).segmented
    with pytest.raises(ValueError, match="unroll 3"):
        plan(32, 64, unroll=3)
    with pytest.raises(ValueError, match="block mode"):
        kernels.plan_fast(
            dtype=torch.float32, index_dtype=torch.int64, rows=[10], dims=[8], weight_offsets=[0],
            out_cols=[0], out_stride=8, batch=4, mode="max", mean_pooling=1, device="cpu",
            block_warps=2,
        )  # fmt: skip
