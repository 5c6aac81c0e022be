"""Compile a generated kernel to a CUBIN (NVRTC through cuda-python, or nvcc), cached on disk.

The cache key is the sha256 of the generated source, the options and the compiler version;
CUBINs live under ``$RECFLEX_CACHE`` (default ``~/.cache/recflex``), written atomically, so
the tuner's hundreds of builds (in parallel processes) never see a torn file and an
unchanged plan is never compiled twice. Nothing here needs a GPU: pass ``arch="sm_90"``.

>>> nvrtc_options("sm_90")
['--gpu-architecture=sm_90', '-std=c++17', '-default-device']
>>> parse_ptxas('ptxas info    : Used 40 registers, used 1 barriers, 4096 bytes smem')
{'registers': 40, 'smem_bytes': 4096, 'spill_stores': 0, 'spill_loads': 0, 'stack_bytes': 0}
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from functools import lru_cache
from multiprocessing import get_context
from pathlib import Path

from rec_common.cuda_python import atomic_write as _atomic_write
from rec_common.cuda_python import nvrtc_check, nvrtc_compile
from recflex.codegen import Kernel

CUDA_EXTRA_HINT = "pip install 'recflex[cuda]'"
_ARCH = re.compile(r"sm_\d{2,3}a?")


def check_arch(arch: str) -> str:
    if not isinstance(arch, str) or not _ARCH.fullmatch(arch):
        raise ValueError(f"arch: expected a GPU architecture like 'sm_90', got {arch!r}")
    return arch


def nvrtc_options(arch: str) -> list[str]:
    return [f"--gpu-architecture={check_arch(arch)}", "-std=c++17", "-default-device"]


def cache_dir() -> Path:
    env = os.environ.get("RECFLEX_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "recflex"


# ---------------------------------------------------------------------------- NVRTC
def nvrtc_module():
    """``cuda.bindings.nvrtc``, or an ImportError naming the extra to install."""
    try:
        from cuda.bindings import nvrtc
    except ImportError as exc:
        raise ImportError(
            f"recflex compiles its fused kernel with NVRTC through cuda-python, which is not "
            f"installed: {CUDA_EXTRA_HINT}"
        ) from exc
    return nvrtc


@lru_cache(maxsize=1)
def nvrtc_version() -> str:
    nvrtc = nvrtc_module()
    try:
        err, major, minor = nvrtc.nvrtcVersion()
    except Exception as exc:  # cuda-python is there but libnvrtc.so is not
        raise RuntimeError(
            f"NVRTC could not be loaded ({type(exc).__name__}: {exc}); install the CUDA "
            "toolkit or `pip install nvidia-cuda-nvrtc`"
        ) from exc
    nvrtc_check(nvrtc, err, "nvrtcVersion")
    return f"{major}.{minor}"


def compile_nvrtc(source: str, arch: str) -> bytes:
    """CUBIN of ``source`` for ``arch`` (no cache); NVRTC's log in the error on failure."""
    nvrtc = nvrtc_module()
    nvrtc_version()  # a clear error when libnvrtc is missing
    options = nvrtc_options(arch)
    return nvrtc_compile(nvrtc, source, "recflex_fused.cu", options)


def cubin_path(kernel: Kernel, arch: str) -> Path:
    h = hashlib.sha256()
    h.update(kernel.source.encode() + b"\0")
    h.update("\0".join(nvrtc_options(arch)).encode() + b"\0" + nvrtc_version().encode())
    return cache_dir() / f"{h.hexdigest()}.cubin"


def build_cubin(kernel: Kernel, arch: str, *, use_cache: bool = True) -> tuple[bytes, bool]:
    """``(cubin, from_cache)``: from the disk cache, or compiled with NVRTC and then cached."""
    path = cubin_path(kernel, arch)
    if use_cache and path.is_file():
        return path.read_bytes(), True
    data = compile_nvrtc(kernel.source, arch)
    if use_cache:
        with contextlib.suppress(OSError):  # a read-only or full cache: use it uncached
            _atomic_write(path, data)
    return data, False


def _build_one(kernel: Kernel, arch: str) -> tuple[str, float, bool]:
    t0 = time.perf_counter()
    _, cached = build_cubin(kernel, arch)
    return kernel.key, time.perf_counter() - t0, cached


def prebuild(kernels: Sequence[Kernel], arch: str, jobs: int = 8) -> list[tuple[str, float, bool]]:
    """Compile ``kernels`` into the disk cache in ``jobs`` parallel processes (NVRTC is
    single-threaded per program; a tuner or a test run builds many). Returns
    ``(key, seconds, was_cached)`` per kernel."""
    check_arch(arch)
    unique = list({k.key: k for k in kernels}.values())
    done = [(k.key, 0.0, True) for k in unique if cubin_path(k, arch).is_file()]
    todo = [k for k in unique if not cubin_path(k, arch).is_file()]
    if jobs <= 1 or len(todo) <= 1:
        return done + [_build_one(k, arch) for k in todo]
    ctx = get_context("spawn")  # no forked CUDA state in the workers
    with ProcessPoolExecutor(max_workers=min(jobs, len(todo)), mp_context=ctx) as ex:
        return done + list(ex.map(_build_one, todo, [arch] * len(todo)))


# ---------------------------------------------------------------------------- nvcc
_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_USED = re.compile(r"Used (\d+) registers(?:.*?(\d+) bytes smem)?")


def parse_ptxas(text: str) -> dict[str, int]:
    """Registers, static smem, spills and stack of the (one) kernel in ``ptxas -v`` output."""
    out = {"registers": 0, "smem_bytes": 0, "spill_stores": 0, "spill_loads": 0, "stack_bytes": 0}
    for line in text.splitlines():
        m = _FRAME.search(line)
        if m:
            out["stack_bytes"] = max(out["stack_bytes"], int(m.group(1)))
            out["spill_stores"] += int(m.group(2))
            out["spill_loads"] += int(m.group(3))
        m = _USED.search(line)
        if m:
            out["registers"] = max(out["registers"], int(m.group(1)))
            out["smem_bytes"] = max(out["smem_bytes"], int(m.group(2) or 0))
    return out


def find_nvcc() -> str | None:
    return shutil.which("nvcc")


def compile_nvcc(source: str, arch: str = "sm_90", nvcc: str | None = None) -> dict[str, int]:
    """Compile ``source`` with nvcc as NVRTC would (C++17, to a CUBIN) and return ptxas'
    resource usage; ``RuntimeError`` with nvcc's output when it fails."""
    nvcc = nvcc or find_nvcc()
    if nvcc is None:
        raise RuntimeError("nvcc not found on PATH")
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "recflex_fused.cu"
        src.write_text(source)
        cmd = [
            nvcc,
            f"-arch={check_arch(arch)}",
            "-cubin",
            "-std=c++17",
            "-Xptxas",
            "-v",
            "-o",
            str(Path(tmp) / "k.cubin"),
            str(src),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    text = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{text[-4000:]}")
    return parse_ptxas(text)


def estimate_occupancy(registers: int, smem_bytes: int, dynamic_smem: int = 0) -> int:
    """Blocks of 256 threads per SM on sm_80/sm_90 from registers and shared memory
    (the occupancy calculator's rules: 256-register warp allocation granularity, 64K
    registers, 1 KB reserved per block), for reports off the GPU.

    >>> estimate_occupancy(32, 0), estimate_occupancy(128, 0), estimate_occupancy(40, 60000)
    (8, 2, 3)
    """
    from recflex.constants import (
        BLOCK_THREADS,
        MAX_OCCUPANCY,
        SMEM_PER_SM_BYTES,
        SMEM_RESERVED_PER_BLOCK_BYTES,
        WARP,
    )

    warps = BLOCK_THREADS // WARP
    regs_per_warp = -(-max(registers, 1) * WARP // 256) * 256
    by_regs = (65536 // regs_per_warp) // warps
    smem = smem_bytes + dynamic_smem
    by_smem = SMEM_PER_SM_BYTES // (smem + SMEM_RESERVED_PER_BLOCK_BYTES) if smem else MAX_OCCUPANCY
    return max(0, min(MAX_OCCUPANCY, by_regs, by_smem))
