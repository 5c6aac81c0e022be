"""Error handling for cuda-python's NVRTC and driver bindings, shared by the kernel packages.

cuda-python returns ``(err, *values)`` tuples instead of raising. These helpers turn a
non-success code into a ``RuntimeError`` that names the call (and carries NVRTC's compile log),
so emb-kernels and recflex report failures the same way. They take the binding module as an
argument: rec-common itself never imports cuda-python.
"""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def nvrtc_log(nvrtc, prog) -> str:
    """NVRTC's compile log of ``prog`` ("" when there is none)."""
    err, size = nvrtc.nvrtcGetProgramLogSize(prog)
    if err != nvrtc.nvrtcResult.NVRTC_SUCCESS or size <= 1:
        return ""
    buf = b" " * size
    nvrtc.nvrtcGetProgramLog(prog, buf)
    return buf.rstrip(b"\0").decode(errors="replace")


def nvrtc_check(nvrtc, err, what: str, prog=None) -> None:
    """Raise ``RuntimeError("<what> failed: <name>\\n<log>")`` unless ``err`` is success."""
    if err == nvrtc.nvrtcResult.NVRTC_SUCCESS:
        return
    log = nvrtc_log(nvrtc, prog) if prog is not None else ""
    name = _text(nvrtc.nvrtcGetErrorString(err)[1])
    raise RuntimeError(f"{what} failed: {name}" + (f"\n{log}" if log else ""))


def driver_check(driver, result, what: str, *, describe: bool = True):
    """Unpack a driver-API result tuple: its value(s), or ``RuntimeError`` naming the call.

    ``describe`` adds the driver's description of the error after its name.
    """
    if isinstance(result, tuple):
        err, rest = result[0], result[1:]
    else:
        err, rest = result, ()
    if err != driver.CUresult.CUDA_SUCCESS:
        name = _text(driver.cuGetErrorName(err)[1])
        if describe:
            raise RuntimeError(f"{what} failed: {name} ({_text(driver.cuGetErrorString(err)[1])})")
        raise RuntimeError(f"{what} failed: {name}")
    if not rest:
        return None
    return rest[0] if len(rest) == 1 else rest


def nvrtc_compile(nvrtc, source: str, name: str, options, headers=()) -> bytes:
    """The CUBIN of ``source`` compiled by NVRTC with ``options``.

    ``headers`` are ``(include name, text)`` pairs the source may #include; errors name ``name``
    and carry NVRTC's log.
    """
    headers = list(headers)
    err, prog = nvrtc.nvrtcCreateProgram(
        source.encode(),
        name.encode(),
        len(headers),
        [text.encode() for _, text in headers],
        [h.encode() for h, _ in headers],
    )
    nvrtc_check(nvrtc, err, f"nvrtcCreateProgram({name})")
    try:
        opts = [o.encode() for o in options]
        (err,) = nvrtc.nvrtcCompileProgram(prog, len(opts), opts)
        nvrtc_check(nvrtc, err, f"NVRTC compiling {name} with {' '.join(options)}", prog)
        err, size = nvrtc.nvrtcGetCUBINSize(prog)
        nvrtc_check(nvrtc, err, "nvrtcGetCUBINSize", prog)
        buf = b" " * size
        (err,) = nvrtc.nvrtcGetCUBIN(prog, buf)
        nvrtc_check(nvrtc, err, "nvrtcGetCUBIN", prog)
        return buf
    finally:
        nvrtc.nvrtcDestroyProgram(prog)


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the whole file or none (cache entries)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


_ready = threading.local()


def ensure_primary_context(get_driver, index: int) -> None:
    """Make device ``index``'s primary context (the one PyTorch uses) current on this thread.

    ``get_driver()`` returns ``cuda.bindings.driver``; it is called only the first time per
    thread and device, so the check on every launch stays a set lookup.
    """
    import torch

    done = getattr(_ready, "devices", None)
    if done is None:
        done = _ready.devices = set()
    if index in done:
        return
    driver = get_driver()
    torch.cuda.init()
    driver_check(driver, driver.cuInit(0), "cuInit")
    dev = driver_check(driver, driver.cuDeviceGet(index), "cuDeviceGet")
    ctx = driver_check(driver, driver.cuDevicePrimaryCtxRetain(dev), "cuDevicePrimaryCtxRetain")
    current = driver_check(driver, driver.cuCtxGetCurrent(), "cuCtxGetCurrent")
    if int(current) != int(ctx):
        driver_check(driver, driver.cuCtxSetCurrent(ctx), "cuCtxSetCurrent")
    done.add(index)
