"""Devices the scheduler places jobs on, their bookkeeping, and live GPU memory readings.

A :class:`Device` counts slots in use, memory reserved (a baseline plus 1.2 x each running
job's estimate), summed intensity and jobs per class: the state every policy reads. Live
readings come from NVML (``pip install 'rmixer[nvml]'``), else ``nvidia-smi``, else
``torch.cuda.mem_get_info`` (which costs the server a CUDA context); nothing is read for the
CPU.

>>> d = Device("cpu", "cpu", slots=2, total_mb=1000)
>>> d.fits(400, margin=1.2), d.fits(900, margin=1.2)
(True, False)
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass, field

from rmixer import constants


@dataclass
class Device:
    """One placement target: ``cuda:i`` (kind ``gpu``) or ``cpu`` (kind ``cpu``).

    ``run_on`` is the torch device jobs use; it differs from ``name`` only for the CPU-backed
    stand-ins of GPUs that tests use (``cpu-as-gpu``)."""

    name: str
    kind: str  # "gpu" | "cpu"
    slots: int
    total_mb: float
    baseline_mb: float = 0.0  # memory in use by others when the server started
    run_on: str = ""
    running: dict[int, float] = field(default_factory=dict)  # job id -> reserved MB
    intensity: dict[int, float] = field(default_factory=dict)
    classes: dict[int, str] = field(default_factory=dict)
    live_used_mb: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("gpu", "cpu"):
            raise ValueError(f"device {self.name}: kind must be 'gpu' or 'cpu', got {self.kind!r}")
        if self.slots < 1:
            raise ValueError(f"device {self.name}: slots must be >= 1, got {self.slots}")
        if not self.run_on:
            self.run_on = self.name

    @property
    def knowledge_kind(self) -> str:
        """Which profile applies: ``cuda`` for real GPUs, ``cpu`` otherwise."""
        return "cuda" if self.run_on.startswith("cuda") else "cpu"

    @property
    def reserved_mb(self) -> float:
        return self.baseline_mb + sum(self.running.values())

    @property
    def free_slots(self) -> int:
        return self.slots - len(self.running)

    @property
    def intensity_sum(self) -> float:
        return sum(self.intensity.values())

    def class_counts(self) -> Counter:
        return Counter(self.classes.values())

    def majority_class(self) -> str:
        """Most common class of the running jobs; ties (and an idle device) resolve to
        ``compute``, as in the artifact, so an idle GPU first takes a non-compute job."""
        counts = self.class_counts()
        best = max(counts.values(), default=0)
        for c in constants.CLASSES:
            if counts.get(c, 0) == best:
                return c
        return "compute"

    def used_mb(self) -> float:
        """Memory taken now: the bookkept reservations, or the live reading when it is higher
        (memory of a finished job not released yet, an estimate too low, other processes such
        as the MPS server or pre-started CUDA workers)."""
        live = self.live_used_mb
        return self.reserved_mb if live is None else max(self.reserved_mb, live)

    def fits(self, mem_mb: float, margin: float = constants.MEMORY_MARGIN) -> bool:
        """The fit test: a free slot, and what is taken now (:meth:`used_mb`) + margin x
        estimate <= total. A live reading above the bookkeeping leaves less room; it does
        not stop placement while the job still fits."""
        return self.free_slots > 0 and self.used_mb() + margin * mem_mb <= self.total_mb

    def reserve(self, job_id: int, mem_mb: float, intensity: float, klass: str,
                margin: float = constants.MEMORY_MARGIN) -> float:  # fmt: skip
        if job_id in self.running:
            raise ValueError(f"device {self.name}: job {job_id} is already running here")
        if self.free_slots <= 0:
            raise ValueError(f"device {self.name}: no free slot for job {job_id}")
        self.running[job_id] = margin * mem_mb
        self.intensity[job_id] = intensity
        self.classes[job_id] = klass
        return self.running[job_id]

    def release(self, job_id: int) -> None:
        self.running.pop(job_id, None)
        self.intensity.pop(job_id, None)
        self.classes.pop(job_id, None)

    def snapshot(self) -> dict:
        return {"name": self.name, "kind": self.kind, "slots": self.slots,
                "in_use": len(self.running), "reserved_mb": round(self.reserved_mb, 1),
                "total_mb": round(self.total_mb, 1), "live_used_mb": self.live_used_mb,
                "jobs": sorted(self.running)}  # fmt: skip


# --- live readings ------------------------------------------------------------------------------


class GpuMemoryReader:
    """Used and total MB per GPU index: NVML, else nvidia-smi, else torch (in that order)."""

    def __init__(self) -> None:
        self.source = "none"
        self._nvml = None
        try:
            import pynvml

            pynvml.nvmlInit()
            self._nvml = pynvml
            self.source = "nvml"
            return
        except Exception:  # optional extra
            pass
        if shutil.which("nvidia-smi"):
            self.source = "nvidia-smi"
            return
        try:
            import torch

            if torch.cuda.is_available():
                self.source = "torch"
        except ImportError:
            pass

    def _physical(self, index: int) -> int:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        if visible and self.source in ("nvml", "nvidia-smi"):
            try:
                return int(visible.split(",")[index])
            except (ValueError, IndexError):
                return index
        return index

    def read(self, index: int) -> tuple[float, float] | None:
        """``(used_mb, total_mb)`` of GPU ``index`` (as torch numbers it), or None."""
        try:
            if self.source == "nvml":
                h = self._nvml.nvmlDeviceGetHandleByIndex(self._physical(index))
                info = self._nvml.nvmlDeviceGetMemoryInfo(h)
                return info.used / 2**20, info.total / 2**20
            if self.source == "nvidia-smi":
                out = subprocess.run(
                    ["nvidia-smi", f"--id={self._physical(index)}",
                     "--query-gpu=memory.used,memory.total", "--format=csv,noheader,nounits"],
                    capture_output=True, text=True, timeout=10, check=True,
                ).stdout.strip().splitlines()[0]  # fmt: skip
                used, total = (float(x) for x in out.split(","))
                return used, total
            if self.source == "torch":
                import torch

                free, total = torch.cuda.mem_get_info(index)
                return (total - free) / 2**20, total / 2**20
        except Exception:  # a failed reading means "unknown", never a crash
            return None
        return None


def cpu_total_mb() -> float:
    """Memory the CPU device may reserve: a share of MemAvailable (Linux), else of RAM."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1024.0 * constants.CPU_MEMORY_FRACTION
    except OSError:
        pass
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        return pages / 2**20 * constants.CPU_MEMORY_FRACTION
    except (ValueError, OSError, AttributeError):
        return 8192.0


def parse_gpus(text: str) -> list[int]:
    """``"0,1"`` -> ``[0, 1]``; ``""`` or ``"none"`` -> ``[]``.

    >>> parse_gpus("0,1"), parse_gpus("none")
    ([0, 1], [])
    """
    text = (text or "").strip()
    if text.lower() in ("", "none"):
        return []
    out = []
    for part in text.split(","):
        try:
            i = int(part)
        except ValueError:
            raise ValueError(f"--gpus: {part!r} is not a GPU index; expected e.g. '0,1'") from None
        if i < 0 or i in out:
            raise ValueError(f"--gpus: bad or repeated index {i} in {text!r}")
        out.append(i)
    return out


def build_devices(gpus: list[int], gpu_slots: int, cpu_slots: int, *, cpu_as_gpu: int = 0,
                  reader: GpuMemoryReader | None = None,
                  gpu_memory_mb: float | None = None) -> list[Device]:  # fmt: skip
    """GPUs first (``cuda:i``), then the CPU when ``cpu_slots`` > 0. ``cpu_as_gpu`` adds that
    many CPU-backed stand-ins of GPUs (``gpu-cpu:i``, for tests on machines without one);
    ``gpu_memory_mb`` caps each GPU's usable memory."""
    devices = []
    if gpus:
        import torch

        count = torch.cuda.device_count()
        for i in gpus:
            if i >= count:
                raise ValueError(f"--gpus: GPU {i} does not exist; this machine has {count} GPU(s)")
        reader = reader or GpuMemoryReader()
        for i in gpus:
            reading = reader.read(i)
            if reading is None:
                total = torch.cuda.get_device_properties(i).total_memory / 2**20
                used = 0.0
            else:
                used, total = reading
            if gpu_memory_mb is not None:
                total = min(total, gpu_memory_mb + used)
            devices.append(Device(f"cuda:{i}", "gpu", gpu_slots, total, baseline_mb=used))
    for i in range(cpu_as_gpu):
        total = (
            gpu_memory_mb if gpu_memory_mb is not None else cpu_total_mb() / max(1, cpu_as_gpu + 1)
        )
        devices.append(Device(f"gpu-cpu:{i}", "gpu", gpu_slots, total, run_on="cpu"))
    if cpu_slots > 0:
        share = cpu_total_mb() / (cpu_as_gpu + 1 if cpu_as_gpu else 1)
        devices.append(Device("cpu", "cpu", cpu_slots, share))
    if not devices:
        raise ValueError("no devices: give --gpus and/or --cpu-slots > 0")
    return devices
