"""rec_common.cuda_python against stand-ins of cuda-python's NVRTC and driver bindings."""

from __future__ import annotations

import ctypes

import pytest

from rec_common.cuda_python import atomic_write, driver_check, nvrtc_check, nvrtc_compile, nvrtc_log


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


class FakeCompiler(FakeNvrtc):
    """Records the program it is given; fails compiling when the source says so."""

    def nvrtcCreateProgram(self, src, name, n, headers, include_names):
        self.program = (src, name, n, headers, include_names)
        return (0, "prog")

    def nvrtcCompileProgram(self, prog, n, opts):
        self.options = opts
        return (6 if b"#error" in self.program[0] else 0,)

    def nvrtcGetCUBINSize(self, prog):
        return (0, 4)

    def nvrtcGetCUBIN(self, prog, buf):
        ctypes.memmove(buf, b"CUBN", 4)
        return (0,)

    def nvrtcDestroyProgram(self, prog):
        self.destroyed = True


def test_nvrtc_compile_passes_headers_and_options_and_always_destroys():
    fake = FakeCompiler()
    cubin = nvrtc_compile(fake, "k()", "k.cu", ["-arch=sm_90"], [("common.cuh", "int x;")])
    assert cubin == b"CUBN" and fake.destroyed
    assert fake.program == (b"k()", b"k.cu", 1, [b"int x;"], [b"common.cuh"])
    assert fake.options == [b"-arch=sm_90"]
    bad = FakeCompiler(b"k.cu(1): #error")
    with pytest.raises(RuntimeError, match=r"NVRTC compiling k.cu with -arch=sm_90 failed"):
        nvrtc_compile(bad, "#error", "k.cu", ["-arch=sm_90"])
    assert bad.destroyed


def test_atomic_write_leaves_whole_files_only(tmp_path):
    target = tmp_path / "cache" / "a.cubin"
    atomic_write(target, b"abc")
    assert target.read_bytes() == b"abc"
    with pytest.raises(TypeError):
        atomic_write(target, "not bytes")
    assert target.read_bytes() == b"abc" and sorted(p.name for p in target.parent.iterdir()) == [
        "a.cubin"
    ]
