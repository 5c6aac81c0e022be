"""Compile the package's CUDA sources with NVRTC and cache the CUBINs on disk.

A module is one source file compiled for one GPU architecture with one register cap; its
CUBIN is cached under ``$EMB_KERNELS_CACHE`` (default ``~/.cache/emb_kernels``) as
``<sha256 of sources + options + NVRTC version>.cubin``, written atomically, so concurrent
processes and interrupted builds never leave a torn file. Nothing here needs a GPU: pass the
architecture (``sm_90``) and it compiles on any machine with cuda-python and NVRTC.

>>> nvrtc_options("sm_90", 42)
['--gpu-architecture=sm_90', '-std=c++17', '-default-device', '--maxrregcount=42']
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from functools import lru_cache
from pathlib import Path

from rec_common.cuda_python import atomic_write as _atomic_write
from rec_common.cuda_python import nvrtc_check, nvrtc_compile

SOURCES = ("bag_baseline.cu", "bag_fast.cu", "bag_fast_x.cu", "bag_fast_async.cu", "l2p.cu")
HEADERS = ("common.cuh", "bag_fast.cuh")
CUDA_EXTRA_HINT = "pip install 'emb-kernels[cuda]'"

_ARCH = re.compile(r"sm_\d{2,3}a?")


def csrc_dir() -> Path:
    """Folder of the shipped CUDA sources (package data)."""
    return Path(__file__).resolve().parent / "csrc"


def read_text(name: str) -> str:
    if name not in SOURCES + HEADERS:
        raise ValueError(f"unknown CUDA source {name!r}; the package ships {SOURCES + HEADERS}")
    return (csrc_dir() / name).read_text()


def check_arch(arch: str) -> str:
    if not isinstance(arch, str) or not _ARCH.fullmatch(arch):
        raise ValueError(f"arch: expected a GPU architecture like 'sm_90', got {arch!r}")
    return arch


def check_cap(max_registers: int | None) -> int | None:
    """A register cap: None or 0 (no cap), or an integer from 16 to 255."""
    if max_registers is None or max_registers == 0:
        return None
    if isinstance(max_registers, bool) or not isinstance(max_registers, int):
        raise TypeError(f"max_registers: expected an int or None, got {max_registers!r}")
    if not 16 <= max_registers <= 255:
        raise ValueError(f"max_registers must be between 16 and 255 (or None), got {max_registers}")
    return max_registers


def nvrtc_options(arch: str, max_registers: int | None = None) -> list[str]:
    """The NVRTC command-line options of one module."""
    opts = [f"--gpu-architecture={check_arch(arch)}", "-std=c++17", "-default-device"]
    cap = check_cap(max_registers)
    if cap is not None:
        opts.append(f"--maxrregcount={cap}")
    return opts


def nvcc_command(
    source: str, arch: str, max_registers: int | None, out: str | os.PathLike, nvcc: str = "nvcc"
) -> list[str]:
    """The nvcc command that compiles ``source`` as NVRTC does (same standard, same cap), to a
    CUBIN, printing ptxas' resource usage: the static compile check of the tests."""
    cmd = [
        nvcc,
        f"-arch={check_arch(arch)}",
        "-cubin",
        "-std=c++17",
        "-Xptxas",
        "-v",
        "-I",
        str(csrc_dir()),
        "-o",
        str(out),
    ]
    cap = check_cap(max_registers)
    if cap is not None:
        cmd.append(f"-maxrregcount={cap}")
    cmd.append(str(csrc_dir() / source))
    return cmd


def cache_dir() -> Path:
    env = os.environ.get("EMB_KERNELS_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "emb_kernels"


def cache_key(source: str, options: list[str], nvrtc_version: str) -> str:
    h = hashlib.sha256()
    for name in (source, *HEADERS):
        h.update(name.encode() + b"\0" + read_text(name).encode() + b"\0")
    h.update("\0".join(options).encode() + b"\0" + nvrtc_version.encode())
    return h.hexdigest()


def nvrtc_module():
    """``cuda.bindings.nvrtc``, or an ImportError that names the extra to install."""
    try:
        from cuda.bindings import nvrtc
    except ImportError as exc:
        raise ImportError(
            "emb_kernels' GPU kernels are compiled with NVRTC through cuda-python, which is not "
            f"installed: {CUDA_EXTRA_HINT}"
        ) from exc
    return nvrtc


@lru_cache(maxsize=1)
def nvrtc_version() -> str:
    nvrtc = nvrtc_module()
    err, major, minor = nvrtc.nvrtcVersion()
    nvrtc_check(nvrtc, err, "nvrtcVersion")
    return f"{major}.{minor}"


def compile_cubin(source: str, arch: str, max_registers: int | None = None) -> bytes:
    """Compile one module with NVRTC (no cache); raise with NVRTC's log on failure."""
    nvrtc = nvrtc_module()
    options = nvrtc_options(arch, max_registers)
    headers = [(h, read_text(h)) for h in HEADERS]
    return nvrtc_compile(nvrtc, read_text(source), source, options, headers)


def cubin_path(source: str, arch: str, max_registers: int | None = None) -> Path:
    key = cache_key(source, nvrtc_options(arch, max_registers), nvrtc_version())
    return cache_dir() / f"{key}.cubin"


def build_cubin(
    source: str, arch: str, max_registers: int | None = None, *, use_cache: bool = True
) -> bytes:
    """The CUBIN of one module: from the disk cache, or compiled and then cached."""
    path = cubin_path(source, arch, max_registers)
    if use_cache and path.is_file():
        return path.read_bytes()
    data = compile_cubin(source, arch, max_registers)
    if use_cache:
        # a read-only or full cache folder: use the module uncached
        with contextlib.suppress(OSError):
            _atomic_write(path, data)
    return data
