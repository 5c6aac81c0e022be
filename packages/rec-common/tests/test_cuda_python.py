"""rec_common.cuda_python against stand-ins of cuda-python's NVRTC and driver bindings."""

from __future__ import annotations

import ctypes

import pytest

from rec_common.cuda_python import driver_check, nvrtc_check, nvrtc_log


class FakeNvrtc:
    class nvrtcResult:
        NVRTC_SUCCESS = 0

    def __init__(self, log: bytes = b""):
        self.log = log

    def nvrtcGetErrorString(self, err):
        return (0, b"NVRTC_ERROR_COMPILATION")

    def nvrtcGetProgramLogSize(self, prog):
        return (0, len(self.log) + 1)

    def nvrtcGetProgramLog(self, prog, buf):
        # cuda-python writes into the caller's bytes object, as this does
        ctypes.memmove(buf, self.log, len(self.log))


class FakeDriver:
    class CUresult:
        CUDA_SUCCESS = 0

    def cuGetErrorName(self, err):
        return (0, b"CUDA_ERROR_LAUNCH_FAILED")

    def cuGetErrorString(self, err):
        return (0, "unspecified launch failure")


def test_nvrtc_check_passes_success_and_names_the_call_with_its_log():
    nvrtc_check(FakeNvrtc(), 0, "compile")
    with pytest.raises(RuntimeError, match=r"^compile k.cu failed: NVRTC_ERROR_COMPILATION$"):
        nvrtc_check(FakeNvrtc(), 6, "compile k.cu")
    with pytest.raises(RuntimeError, match=r"failed: NVRTC_ERROR_COMPILATION\nk.cu\(3\): error"):
        nvrtc_check(FakeNvrtc(b"k.cu(3): error"), 6, "compile k.cu", prog=object())
    assert nvrtc_log(FakeNvrtc(), object()) == ""


def test_driver_check_unpacks_values_and_raises_on_errors():
    drv = FakeDriver()
    assert driver_check(drv, 0, "cuInit") is None
    assert driver_check(drv, (0,), "cuInit") is None
    assert driver_check(drv, (0, 7), "cuDeviceGet") == 7
    assert driver_check(drv, (0, 1, 2), "cuX") == (1, 2)
    with pytest.raises(RuntimeError, match=r"^cuLaunchKernel failed: CUDA_ERROR_LAUNCH_FAILED \("):
        driver_check(drv, (719,), "cuLaunchKernel")
    with pytest.raises(RuntimeError, match=r"^cuLaunchKernel failed: CUDA_ERROR_LAUNCH_FAILED$"):
        driver_check(drv, (719,), "cuLaunchKernel", describe=False)
