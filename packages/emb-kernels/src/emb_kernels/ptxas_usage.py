"""Registers, stack and spills per kernel from ``nvcc -Xptxas -v`` output (no GPU needed).

>>> text = '''ptxas info    : Compiling entry function 'k' for 'sm_90'
... ptxas info    : Function properties for k
...     8 bytes stack frame, 4 bytes spill stores, 4 bytes spill loads
... ptxas info    : Used 42 registers, used 0 barriers'''
>>> parse(text)["k"]["registers"], parse(text)["k"]["spill_stores"]
(42, 4)
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from emb_kernels.nvrtc_build import nvcc_command

_ENTRY = re.compile(r"(?:Compiling entry function|Function properties for) '?([A-Za-z_][\w$]*)'?")
_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_USED = re.compile(r"Used (\d+) registers(?:.*?(\d+) bytes smem)?")


def parse(text: str) -> dict[str, dict[str, int]]:
    """``{kernel: {registers, stack_bytes, spill_stores, spill_loads, smem_bytes}}``."""
    out: dict[str, dict[str, int]] = {}
    current = None
    for line in text.splitlines():
        m = _ENTRY.search(line)
        if m:
            current = m.group(1)
            out.setdefault(current, {})
            continue
        if current is None:
            continue
        m = _FRAME.search(line)
        if m:
            out[current].update(
                stack_bytes=int(m.group(1)),
                spill_stores=int(m.group(2)),
                spill_loads=int(m.group(3)),
            )
            continue
        m = _USED.search(line)
        if m:
            out[current]["registers"] = int(m.group(1))
            out[current]["smem_bytes"] = int(m.group(2) or 0)
    return {k: v for k, v in out.items() if "registers" in v}


def find_nvcc() -> str | None:
    return shutil.which("nvcc")


def compile_with_nvcc(
    source: str, arch: str = "sm_90", max_registers: int | None = None, nvcc: str | None = None
) -> dict[str, dict[str, int]]:
    """Compile a shipped source with nvcc as NVRTC would; return ptxas' usage per kernel.

    Raises ``RuntimeError`` with nvcc's output when it fails.
    """
    nvcc = nvcc or find_nvcc()
    if nvcc is None:
        raise RuntimeError("nvcc not found on PATH")
    with tempfile.TemporaryDirectory() as tmp:
        cmd = nvcc_command(source, arch, max_registers, Path(tmp) / "out.cubin", nvcc=nvcc)
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    text = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{text}")
    return parse(text)
