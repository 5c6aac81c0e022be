"""Load a compiled fused kernel and launch it through the CUDA driver API (cuda-python).

The module goes into the device's primary context (PyTorch's) and launches on PyTorch's
current stream. For a kernel generated with ``exact_occupancy`` (the tuner's probes),
:class:`LoadedKernel` pads dynamic shared memory until exactly ``o`` blocks fit an SM (the
smallest padding that makes ``o + 1`` infeasible). It reports the kernel's registers, shared memory, occupancy and
the number of blocks that can be resident at once (``max_concurrent``).
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Sequence

import torch

from rec_common.cuda_python import driver_check, ensure_primary_context
from recflex import build
from recflex.codegen import Kernel
from recflex.constants import BLOCK_THREADS

_lock = threading.Lock()
_loaded: dict[tuple[str, int], LoadedKernel] = {}


def driver_module():
    try:
        from cuda.bindings import driver
    except ImportError as exc:
        raise ImportError(
            "recflex launches its kernel through cuda-python, which is not installed: "
            f"{build.CUDA_EXTRA_HINT}"
        ) from exc
    return driver


def check(result, what: str):
    """Unpack a cuda-python result tuple, raising ``RuntimeError`` on a non-success code."""
    return driver_check(driver_module(), result, what, describe=False)


def device_index(device=None) -> int:
    if device is None:
        return torch.cuda.current_device()
    if isinstance(device, int):
        return device
    device = torch.device(device)
    if device.type != "cuda":
        raise ValueError(f"expected a CUDA device, got {device}")
    return device.index if device.index is not None else torch.cuda.current_device()


def ensure_context(index: int) -> None:
    """Make the device's primary context (PyTorch's) current on this thread."""
    ensure_primary_context(driver_module, index)


def arch_of(index: int) -> str:
    major, minor = torch.cuda.get_device_capability(index)
    if major < 7:
        raise RuntimeError(f"recflex needs sm_70 or newer; this GPU is sm_{major}{minor}")
    return f"sm_{major}{minor}"


def device_attribute(name: str, index: int) -> int:
    drv = driver_module()
    ensure_context(index)
    attr = getattr(drv.CUdevice_attribute, f"CU_DEVICE_ATTRIBUTE_{name}")
    dev = check(drv.cuDeviceGet(index), "cuDeviceGet")
    return int(check(drv.cuDeviceGetAttribute(attr, dev), f"cuDeviceGetAttribute({name})"))


class LoadedKernel:
    """A generated kernel compiled, loaded and sized for one device."""

    def __init__(self, kernel: Kernel, device=None) -> None:
        self.kernel = kernel
        self.index = device_index(device)
        ensure_context(self.index)
        drv = driver_module()
        self.arch = arch_of(self.index)
        cubin, self.from_cache = build.build_cubin(kernel, self.arch)
        with torch.cuda.device(self.index):
            self.module = check(drv.cuModuleLoadData(cubin), "cuModuleLoadData(fused kernel)")
        self.fn = check(
            drv.cuModuleGetFunction(self.module, kernel.name.encode()), "cuModuleGetFunction"
        )
        a = drv.CUfunction_attribute
        get = lambda attr: int(check(drv.cuFuncGetAttribute(attr, self.fn), "cuFuncGetAttribute"))  # noqa: E731
        self.registers = get(a.CU_FUNC_ATTRIBUTE_NUM_REGS)
        self.static_smem = get(a.CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES)
        self.local_bytes = get(a.CU_FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES)
        self.sm_count = device_attribute("MULTIPROCESSOR_COUNT", self.index)
        self.dynamic_smem = 0
        natural = self.blocks_per_sm(0)
        target = kernel.occupancy
        if kernel.exact_occupancy and target is not None and natural > target:
            self.dynamic_smem = self._padding_for(target)
        self.occupancy = self.blocks_per_sm(self.dynamic_smem)
        self.max_concurrent = self.occupancy * self.sm_count

    def blocks_per_sm(self, dynamic_smem: int) -> int:
        drv = driver_module()
        return int(
            check(
                drv.cuOccupancyMaxActiveBlocksPerMultiprocessor(
                    self.fn, BLOCK_THREADS, dynamic_smem
                ),
                "cuOccupancyMaxActiveBlocksPerMultiprocessor",
            )
        )

    def _padding_for(self, target: int) -> int:
        """Smallest dynamic smem with at most ``target`` blocks per SM (binary search)."""
        drv = driver_module()
        a = drv.CUfunction_attribute
        optin = device_attribute("MAX_SHARED_MEMORY_PER_BLOCK_OPTIN", self.index)
        hi = max(0, optin - self.static_smem)
        check(
            drv.cuFuncSetAttribute(self.fn, a.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, hi),
            "cuFuncSetAttribute(max dynamic smem)",
        )
        check(
            drv.cuFuncSetAttribute(
                self.fn, a.CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT, 100
            ),
            "cuFuncSetAttribute(carveout)",
        )
        if self.blocks_per_sm(hi) > target:
            return hi  # even the most padding leaves more blocks: the best we can do
        lo = 0  # invariant: blocks_per_sm(hi) <= target
        while lo < hi:
            mid = (lo + hi) // 2
            if self.blocks_per_sm(mid) <= target:
                hi = mid
            else:
                lo = mid + 1
        return hi

    def stats(self) -> dict:
        return {
            "registers": self.registers,
            "static_smem_bytes": self.static_smem,
            "dynamic_smem_bytes": self.dynamic_smem,
            "local_bytes": self.local_bytes,
            "occupancy_blocks_per_sm": self.occupancy,
            "requested_occupancy": self.kernel.occupancy,
            "max_concurrent_blocks": self.max_concurrent,
            "sm_count": self.sm_count,
            "functions": self.kernel.num_functions,
            "arch": self.arch,
            "from_cache": self.from_cache,
        }

    def launch(
        self, grid: int, args: Sequence[ctypes._SimpleCData], stream: int | None = None
    ) -> None:
        if grid < 1:
            return
        drv = driver_module()
        ensure_context(self.index)
        if stream is None:
            stream = torch.cuda.current_stream(self.index).cuda_stream
        holders = list(args)
        params = (ctypes.c_void_p * len(holders))(*[ctypes.addressof(a) for a in holders])
        check(
            drv.cuLaunchKernel(
                self.fn,
                int(grid),
                1,
                1,
                BLOCK_THREADS,
                1,
                1,
                self.dynamic_smem,
                drv.CUstream(stream),
                ctypes.addressof(params),
                0,
            ),
            "cuLaunchKernel(fused kernel)",
        )


def load(kernel: Kernel, device=None) -> LoadedKernel:
    """The kernel loaded on ``device`` (cached per source and device)."""
    index = device_index(device)
    key = (kernel.key, index)
    with _lock:
        lk = _loaded.get(key)
        if lk is None:
            lk = _loaded[key] = LoadedKernel(kernel, index)
    return lk


def ptr(t: torch.Tensor | None) -> ctypes.c_void_p:
    return ctypes.c_void_p(0 if t is None else t.data_ptr())


def i32(x: int) -> ctypes.c_int32:
    return ctypes.c_int32(int(x))
