"""The generated CUDA source: structure on every machine, and nvcc (sm_90) compile checks."""

from __future__ import annotations

import random

import pytest

from recflex import build
from recflex.codegen import generate, instantiation
from recflex.plan import Plan
from recflex.schedules import TEMPLATES, Schedule, template_candidates

needs_nvcc = pytest.mark.skipif(build.find_nvcc() is None, reason="nvcc is not on PATH")


def every_template_plan(seed=0, occupancy=None, per_template=2, dims=(4, 8, 16, 32, 64, 128, 6, 3)):
    rng = random.Random(seed)
    scheds, dims_out = [], []
    for d in dims:
        for t in TEMPLATES:
            cands = template_candidates(t, d)
            for s in rng.sample(cands, min(per_template, len(cands))):
                scheds.append(s)
                dims_out.append(d)
    return Plan(scheds, dims_out, [100] * len(dims_out), occupancy)


def test_one_function_per_distinct_schedule():
    s = Schedule("WarpPerSample", {"v": 4, "items": 2, "x": 8})
    o = Schedule("OneHot", {"unroll": 4})
    plan = Plan([s, o, s, s, o], [32, 16, 32, 32, 16], [10] * 5, occupancy=4)
    k = generate(plan)
    assert k.num_functions == 2 and k.fn_ids == (0, 1, 0, 0, 1)
    assert "__launch_bounds__(256, 4)" in k.source
    assert k.source.count("else if (fn ==") == 1
    assert "#define RECFLEX_S 128LL" in k.source


def test_output_alignment_splits_functions():
    s = Schedule("WarpPerSample", {"v": 2, "items": 1, "x": 4})
    # feature 1 starts at column 6 (not a multiple of 4): its copy stores float2
    plan = Plan([Schedule("OneHot", {"unroll": 2}), s, s], [6, 8, 8], [10] * 3)
    k = generate(plan)
    assert "t_wps<8, 2, 1, 4, 2>" in k.functions
    assert instantiation(s, 8, 4) == "t_wps<8, 2, 1, 4, 4>"


def test_options_change_the_source():
    plan = every_template_plan()
    a = generate(plan)
    assert a.key != generate(plan, dispatch="jump-table").key
    assert a.key != generate(plan, timing=True).key
    assert a.key != generate(plan, index_dtype="int32").key
    assert a.key == generate(plan).key
    assert "rf_table[fn](ft, smem)" in generate(plan, dispatch="jump-table").source
    assert a.smem_bytes == max(s.smem_bytes(d) for s, d in zip(plan.schedules, plan.dims))
    with pytest.raises(ValueError, match="dispatch: expected one of"):
        generate(plan, dispatch="switch")
    with pytest.raises(ValueError, match="index_dtype"):
        generate(plan, index_dtype="int8")


@needs_nvcc
def test_every_template_compiles_if_else():
    plan = every_template_plan(0, occupancy=2, per_template=1, dims=(4, 16, 32, 128, 6))
    u = build.compile_nvcc(generate(plan).source, "sm_90")
    assert u["registers"] <= 128  # __launch_bounds__(256, 2)
    assert u["smem_bytes"] >= 1


@needs_nvcc
def test_jump_table_timing_int32_fp16_compile():
    plan = every_template_plan(1, occupancy=4, per_template=1, dims=(8, 64, 3))
    k = generate(
        plan, dispatch="jump-table", timing=True, index_dtype="int32", weight_dtype="float16"
    )
    u = build.compile_nvcc(k.source, "sm_90")
    assert u["registers"] <= 64


@needs_nvcc
def test_compile_error_is_reported():
    with pytest.raises(RuntimeError, match="failed"):
        build.compile_nvcc("this is not CUDA", "sm_90")


def _nvrtc_reason() -> str | None:
    try:
        build.nvrtc_version()
    except (ImportError, RuntimeError) as exc:
        return str(exc).splitlines()[0]
    return None


def test_nvrtc_builds_and_caches(tmp_path, monkeypatch):
    reason = _nvrtc_reason()
    if reason:
        pytest.skip(f"NVRTC unavailable: {reason}")
    monkeypatch.setenv("RECFLEX_CACHE", str(tmp_path))
    k = generate(
        every_template_plan(2, occupancy=4, per_template=1, dims=(16, 3)), index_dtype="int32"
    )
    cubin, cached = build.build_cubin(k, "sm_90")
    assert not cached and cubin[:4] == b"\x7fELF"
    assert build.build_cubin(k, "sm_90") == (cubin, True)
    assert build.cubin_path(k, "sm_90").parent == tmp_path
