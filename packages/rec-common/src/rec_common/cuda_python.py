"""Error handling for cuda-python's NVRTC and driver bindings, shared by the kernel packages.

cuda-python returns ``(err, *values)`` tuples instead of raising. These helpers turn a
non-success code into a ``RuntimeError`` that names the call (and carries NVRTC's compile log),
so emb-kernels and recflex report failures the same way. They take the binding module as an
argument: rec-common itself never imports cuda-python.
"""

from __future__ import annotations


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
