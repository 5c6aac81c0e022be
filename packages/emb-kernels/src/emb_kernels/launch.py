"""Load CUBINs and launch kernels through the CUDA driver API (cuda-python).

Modules are loaded into the device's primary context, the one PyTorch uses, with
``cuModuleLoadData``; one module per (source, register cap, device). Launches go to
``torch.cuda.current_stream()`` with the tensors' ``data_ptr()`` values as arguments. Every
driver call's return code is checked; a failure raises ``RuntimeError`` naming the call.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Sequence

import torch

from emb_kernels import nvrtc_build
from rec_common.cuda_python import driver_check, ensure_primary_context

_lock = threading.Lock()
_modules: dict[tuple, object] = {}
_functions: dict[tuple, object] = {}


def driver_module():
    """``cuda.bindings.driver``, or an ImportError that names the extra to install."""
    try:
        from cuda.bindings import driver
    except ImportError as exc:
        raise ImportError(
            "emb_kernels' GPU variants launch through cuda-python, which is not installed: "
            f"{nvrtc_build.CUDA_EXTRA_HINT}"
        ) from exc
    return driver


def check(result, what: str):
    """Unpack a cuda-python result tuple, raising ``RuntimeError`` on a non-success code."""
    return driver_check(driver_module(), result, what)


def device_index(device: torch.device | int | None = None) -> int:
    if device is None:
        return torch.cuda.current_device()
    if isinstance(device, int):
        return device
    device = torch.device(device)
    if device.type != "cuda":
        raise ValueError(f"expected a CUDA device, got {device}")
    return device.index if device.index is not None else torch.cuda.current_device()


def arch_of(device: torch.device | int | None = None) -> str:
    major, minor = torch.cuda.get_device_capability(device_index(device))
    if major < 8:
        raise RuntimeError(
            f"emb_kernels needs a GPU of compute capability 8.0 or newer (sm_80+: the L2 "
            f"evict_last hint and bf16 conversions); this one is sm_{major}{minor}"
        )
    return f"sm_{major}{minor}"


def ensure_context(index: int) -> None:
    """Make the device's primary context (PyTorch's) current on this thread."""
    ensure_primary_context(driver_module, index)


def get_module(source: str, max_registers: int | None, device: torch.device | int | None = None):
    index = device_index(device)
    cap = nvrtc_build.check_cap(max_registers)
    key = (source, cap, index)
    mod = _modules.get(key)
    if mod is not None:
        return mod
    with _lock:
        mod = _modules.get(key)
        if mod is None:
            ensure_context(index)
            cubin = nvrtc_build.build_cubin(source, arch_of(index), cap)
            drv = driver_module()
            with torch.cuda.device(index):
                mod = check(drv.cuModuleLoadData(cubin), f"cuModuleLoadData({source}, cap={cap})")
            _modules[key] = mod
    return mod


def get_function(
    source: str,
    name: str,
    max_registers: int | None = None,
    device: torch.device | int | None = None,
):
    """The ``CUfunction`` ``name`` of module (source, cap) on ``device`` (built on first use)."""
    index = device_index(device)
    cap = nvrtc_build.check_cap(max_registers)
    key = (source, cap, index, name)
    fn = _functions.get(key)
    if fn is None:
        mod = get_module(source, cap, index)
        fn = check(
            driver_module().cuModuleGetFunction(mod, name.encode()), f"cuModuleGetFunction({name})"
        )
        _functions[key] = fn
    return fn


# ---------------------------------------------------------------------------- arguments
def ptr(t: torch.Tensor | None) -> ctypes.c_void_p:
    return ctypes.c_void_p(0 if t is None else t.data_ptr())


def i64(x: int) -> ctypes.c_int64:
    return ctypes.c_int64(int(x))


def i32(x: int) -> ctypes.c_int32:
    return ctypes.c_int32(int(x))


def u64(x: int) -> ctypes.c_uint64:
    return ctypes.c_uint64(int(x))


def launch(
    fn,
    grid: Sequence[int],
    block: Sequence[int],
    args: Sequence[ctypes._SimpleCData],
    *,
    shared_bytes: int = 0,
    stream: int | None = None,
    device: torch.device | int | None = None,
) -> None:
    """``cuLaunchKernel`` on ``stream`` (default: PyTorch's current stream of ``device``)."""
    drv = driver_module()
    index = device_index(device)
    ensure_context(index)
    if stream is None:
        stream = torch.cuda.current_stream(index).cuda_stream
    g = ((*tuple(grid), 1, 1, 1))[:3]
    b = ((*tuple(block), 1, 1, 1))[:3]
    if min(g) < 1 or min(b) < 1:
        raise ValueError(f"launch: empty grid {g} or block {b}")
    holders = list(args)
    params = (ctypes.c_void_p * max(len(holders), 1))(*[ctypes.addressof(a) for a in holders])
    check(
        drv.cuLaunchKernel(
            fn,
            g[0],
            g[1],
            g[2],
            b[0],
            b[1],
            b[2],
            shared_bytes,
            drv.CUstream(stream),
            ctypes.addressof(params),
            0,
        ),
        "cuLaunchKernel",
    )


# ---------------------------------------------------------------------------- attributes
def function_attributes(fn) -> dict:
    """Registers, local (spill/stack) bytes, static shared memory and max threads of a kernel."""
    drv = driver_module()
    a = drv.CUfunction_attribute
    return {
        "registers": check(
            drv.cuFuncGetAttribute(a.CU_FUNC_ATTRIBUTE_NUM_REGS, fn), "cuFuncGetAttribute"
        ),
        "local_bytes": check(
            drv.cuFuncGetAttribute(a.CU_FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES, fn), "cuFuncGetAttribute"
        ),
        "static_smem_bytes": check(
            drv.cuFuncGetAttribute(a.CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES, fn), "cuFuncGetAttribute"
        ),
        "max_threads_per_block": check(
            drv.cuFuncGetAttribute(a.CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK, fn),
            "cuFuncGetAttribute",
        ),
    }


_carveout_set: set = set()


def _set_carveout(fn, percent: int) -> None:
    """The preferred shared-memory carveout of ``fn``, in percent of the maximum (a hint to
    the driver), set once per function."""
    key = id(fn)  # get_function caches the objects, so the id is stable
    if key in _carveout_set:
        return
    drv = driver_module()
    a = drv.CUfunction_attribute.CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT
    check(
        drv.cuFuncSetAttribute(fn, a, percent),
        "cuFuncSetAttribute(PREFERRED_SHARED_MEMORY_CARVEOUT)",
    )
    _carveout_set.add(key)


def prefer_max_shared(fn) -> None:
    """Ask for the largest shared-memory carveout for ``fn``: for kernels whose occupancy is
    bounded by their static shared memory."""
    _set_carveout(fn, 100)


def max_active_blocks(fn, block_threads: int, dynamic_smem: int = 0) -> int:
    drv = driver_module()
    return int(
        check(
            drv.cuOccupancyMaxActiveBlocksPerMultiprocessor(fn, block_threads, dynamic_smem),
            "cuOccupancyMaxActiveBlocksPerMultiprocessor",
        )
    )


def device_attribute(name: str, device: torch.device | int | None = None) -> int:
    """A ``CU_DEVICE_ATTRIBUTE_<name>`` of the device (e.g. ``MAX_PERSISTING_L2_CACHE_SIZE``)."""
    drv = driver_module()
    index = device_index(device)
    ensure_context(index)
    attr = getattr(drv.CUdevice_attribute, f"CU_DEVICE_ATTRIBUTE_{name}")
    dev = check(drv.cuDeviceGet(index), "cuDeviceGet")
    return int(check(drv.cuDeviceGetAttribute(attr, dev), f"cuDeviceGetAttribute({name})"))
