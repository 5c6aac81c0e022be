"""The generated CUDA source itself, run on the CPU through a small CUDA shim (g++ -std=c++20).

tests/cpu_shim/ maps threads, __syncthreads, warp shuffles and atomics onto std::threads and
barriers and runs every block of the launch the runtime binding describes. Unwritten output
stays poisoned, so this checks the kernel's index math, its barriers (a missing one can
deadlock or race, a wrong one corrupts sums) and the exact-zero rules, without a GPU.
"""

from __future__ import annotations

import random
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from recflex.binding import Binder
from recflex.codegen import generate
from recflex.inputs import pack
from recflex.plan import Plan
from recflex.reference import embedding_bag_reference
from recflex.schedules import TEMPLATES, Schedule, template_candidates
from recflex.testing import assert_close, random_batch, tables_for

SHIM = Path(__file__).resolve().parent / "cpu_shim"
CXX = shutil.which("g++")


def _cxx20_reason() -> str | None:
    """Why the shim cannot build here (no g++, or no C++20 <barrier>), or None."""
    if CXX is None:
        return "g++ is not on PATH"
    probe = "#include <barrier>\nint main() { std::barrier<> b(1); b.arrive_and_wait(); }\n"
    proc = subprocess.run([CXX, "-std=c++20", "-pthread", "-x", "c++", "-", "-o", "/dev/null"],
                          input=probe, capture_output=True, text=True, timeout=120)  # fmt: skip
    return None if proc.returncode == 0 else "g++ has no C++20 <barrier>"


REASON = _cxx20_reason()
pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")


def run_on_cpu(tmp: Path, plan: Plan, tables, batch, *, dispatch="if-else", index="int64",
               maxc=16, order="feature", sync_free=False) -> tuple[torch.Tensor, int]:  # fmt: skip
    wdt = "float16" if tables[0].dtype == torch.float16 else "float32"
    k = generate(plan, index_dtype=index, weight_dtype=wdt, dispatch=dispatch)
    src = tmp / f"kernel-{k.key[:16]}.cu"
    exe = tmp / f"driver-{k.key[:16]}"
    if not exe.is_file():  # one g++ build per generated source
        src.write_text(k.source)
        cmd = [CXX, "-std=c++20", "-O1", "-pthread", "-w", f"-I{SHIM}",
               f'-DKERNEL_SOURCE="{src}"', str(SHIM / "driver.cpp"), "-o", str(exe)]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
    p = pack(batch)
    idt = np.int32 if index == "int32" else np.int64
    num_ids = p.indices.numel() if sync_free else None  # a bounded grid, padded tasks
    bnd = Binder(plan, maxc, order).bind(p.offsets, p.batch_size, num_ids)
    nf, b = plan.num_features, p.batch_size
    parts = [np.array([nf, b, plan.sum_dims, bnd.total_blocks, bnd.work.shape[0],
                       np.dtype(idt).itemsize, 2 if wdt == "float16" else 4,
                       int(plan.needs_zeroed_output)], np.int32),
             np.array(plan.rows, np.int64), np.array(plan.col_offsets, np.int32),
             np.array(k.fn_ids, np.int32), np.array(plan.dims, np.int32)]  # fmt: skip
    for t in tables:
        parts.append(
            t.contiguous().view(torch.int16 if wdt == "float16" else torch.float32).numpy()
        )
    parts += [np.array([p.indices.numel()], np.int64), p.indices.numpy().astype(idt),
              p.offsets.numpy().astype(idt), bnd.tasks.numpy().astype(np.int32),
              bnd.blocks.numpy().astype(np.int32), bnd.work_start.numpy().astype(np.int32),
              bnd.work.numpy().astype(np.int32)]  # fmt: skip
    inp, outp = tmp / "in.bin", tmp / "out.bin"
    inp.write_bytes(b"".join(np.ascontiguousarray(a).tobytes() for a in parts))
    proc = subprocess.run(
        [str(exe), str(inp), str(outp)], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    raw = np.fromfile(outp, dtype=np.uint8)
    out = torch.from_numpy(raw[:-4].view(np.float32).copy()).view(b, plan.sum_dims)
    err = int(raw[-4:].view(np.int32)[0])
    return out, err


def mixed_plan(seed: int, n: int = 16, templates=TEMPLATES) -> Plan:
    rng = random.Random(seed)
    dims, scheds = [], []
    while len(scheds) < n:
        d = rng.choice([3, 4, 8, 16, 32, 64, 128])
        t = rng.choice(templates)
        cands = template_candidates(t, d)
        if cands:
            dims.append(d)
            scheds.append(rng.choice(cands))
    rows = [rng.choice([1, 9, 300]) for _ in dims]
    return Plan(scheds, dims, rows, occupancy=4)


@pytest.mark.parametrize("seed", range(3))
def test_generated_kernel_matches_embedding_bag(tmp_path, seed):
    plan = mixed_plan(seed)
    tables = tables_for(list(plan.rows), list(plan.dims), seed=seed)
    maxes = [random.Random(seed).choice([1, 6, 100]) for _ in plan.dims]
    for b in (1, 7, 24):
        batch = random_batch(list(plan.rows), b, max_len=maxes, absent=(1,), empty_frac=0.3,
                             seed=seed + b)  # fmt: skip
        order = "heavy-first" if b == 7 else "feature"
        out, err = run_on_cpu(tmp_path, plan, tables, batch, maxc=3, order=order)
        assert err == 0
        assert_close(out, embedding_bag_reference(tables, pack(batch)), atol=1e-4, rtol=1e-4)
        assert bool((out[:, plan.col_offsets[1] : plan.col_offsets[1] + plan.dims[1]] == 0).all())


@pytest.mark.parametrize("seed", range(2))
def test_sync_free_grid_matches_embedding_bag(tmp_path, seed):
    """A bounded (sync-free) binding: the blocks past the batch's own exit at once and the
    output is the exact binding's, for every template, absent and empty bags included."""
    plan = mixed_plan(10 + seed, n=18)
    tables = tables_for(list(plan.rows), list(plan.dims), seed=seed)
    padding = 0
    for b, order in ((1, "feature"), (9, "heavy-first"), (40, "feature")):
        batch = random_batch(list(plan.rows), b, max_len=[1, 7, 60] * 6, absent=(2,),
                             empty_frac=0.3, seed=seed + b)  # fmt: skip
        p = pack(batch)
        exact = Binder(plan, 3, order).bind(p.offsets, b)
        bounded = Binder(plan, 3, order).bind(p.offsets, b, p.indices.numel())
        assert bounded.total_blocks >= exact.total_blocks
        padding += bounded.total_blocks - exact.total_blocks
        out, err = run_on_cpu(tmp_path, plan, tables, batch, maxc=3, order=order,
                              sync_free=True)  # fmt: skip
        assert err == 0
        assert_close(out, embedding_bag_reference(tables, p), atol=1e-4, rtol=1e-4)
    assert padding > 0  # some launch had blocks past the batch's own to skip


def test_every_template_long_bags_jump_table_int32(tmp_path):
    scheds, dims = [], []
    for d in (8, 32):
        for t in TEMPLATES:
            for s in template_candidates(t, d)[::37][:2]:
                scheds.append(s)
                dims.append(d)
    plan = Plan(scheds, dims, [50] * len(dims), occupancy=2)
    tables = tables_for(list(plan.rows), dims, seed=1)
    batch = random_batch(list(plan.rows), 5, max_len=300, empty_frac=0.2, index_dtype=torch.int32)
    out, err = run_on_cpu(
        tmp_path, plan, tables, batch, dispatch="jump-table", index="int32", maxc=2
    )
    assert err == 0
    assert_close(out, embedding_bag_reference(tables, pack(batch)), atol=1e-4, rtol=1e-4)


def test_fp16_and_bad_ids_are_flagged(tmp_path):
    plan = Plan([Schedule("WarpPerSample", {"v": 4, "items": 2, "x": 4}),
                 Schedule("OneBlockMultiSample", {"v": 2, "items": 1, "x": 4, "y": 16})],
                [16, 8], [20, 20])  # fmt: skip
    tables = tables_for([20, 20], [16, 8], dtype=torch.float16)
    batch = random_batch([20, 20], 6, max_len=40)
    out, err = run_on_cpu(tmp_path, plan, tables, batch)
    assert err == 0
    assert_close(out, embedding_bag_reference(tables, pack(batch)), atol=1e-3, rtol=1e-3)
    bad = batch.values[0].clone()
    bad[0] = 10**6
    from rec_common.jagged import JaggedBatch

    jb = JaggedBatch(batch.keys, (bad, batch.values[1]), batch.offsets)
    _, err = run_on_cpu(tmp_path, plan, tables, jb)
    assert err == 1
