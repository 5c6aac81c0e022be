"""Placement policies: which pending job goes to which device, one decision at a time.

Every policy sees a :class:`Context` (pending jobs with their knowledge, the devices' state,
how many jobs of the current epoch finished) and returns one :class:`Placement` or None; the
scheduler reserves it and asks again until None. All share the fit test of
:meth:`rmixer.devices.Device.fits` (free slot, and the larger of reserved and live memory +
1.2 x estimate <= total), so none can exceed a slot or memory limit.

- ``monolithic``: one job per GPU at a time, in submission order; the CPU is not used.
- ``mps``: synchronous rounds of k jobs per GPU (k = GPU slots), in submission order; the
  next round starts when the whole round has finished (run under the MPS daemon).
- ``rmixer``: dyMix. Jobs in decreasing compute intensity; the GPU with the least reserved
  memory takes the first job whose class differs from its running majority (else the first
  that fits). Under MPS (``rmixer@mps``, ``Context.mps``) the GPU instead takes the most
  intense job whose intensity still fits under ``MPS_INTENSITY_FILL`` minus the intensities
  running there, else the least intense one, so heavy and light jobs share each GPU all along
  instead of the heavy ones co-running first and the light ones last; when no GPU takes one, the CPU may take a job from the low-intensity tail
  (position >= threshold x N, threshold = GPU slots / (GPU + CPU slots)) while more than
  beta x GPU slots jobs remain and, when both profiles are known, only if the job's CPU time
  does not exceed the predicted time the GPUs stay busy. A job no GPU can hold (even
  empty) may always go to the CPU.
- ablations: ``sequential`` (class then memory order, first device with a slot, first fit),
  ``cognn`` (CoGNN-style pairing: alternately the most and least intense job, on the GPU with
  the most free memory), ``random``.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import ClassVar

from rmixer import constants
from rmixer.devices import Device
from rmixer.knowledge import JobInfo


@dataclass
class PendingJob:
    """A queued job as policies see it."""

    id: int
    seq: int  # submission order
    name: str
    iterations: int
    gpu: JobInfo  # knowledge on GPUs (kind "cuda", or "cpu" for CPU-backed stand-ins)
    cpu: JobInfo
    mem_bump: float = 1.0  # > 1 after an out-of-memory retry
    exclude: frozenset[str] = frozenset()  # devices where it ran out of memory

    @property
    def intensity(self) -> float:
        return self.gpu.intensity

    @property
    def klass(self) -> str:
        return self.gpu.klass

    def info_on(self, dev: Device) -> JobInfo:
        return self.gpu if dev.kind == "gpu" else self.cpu

    def mem_on(self, dev: Device) -> float:
        return self.info_on(dev).mem_mb * self.mem_bump


@dataclass
class Context:
    """What a policy may read. ``epoch`` is every job of the current batch (or, online, of
    the current busy period), as ``(intensity, seq, id)``; ``finished`` counts its finished."""

    pending: list[PendingJob]
    devices: list[Device]
    running: set[int] = field(default_factory=set)
    epoch: list[tuple[float, int, int]] = field(default_factory=list)
    finished: int = 0
    margin: float = constants.MEMORY_MARGIN
    beta: float = constants.DEFAULT_BETA
    cpu_slowdown: float = 1.0  # observed / predicted CPU job time so far (knowledge.corun_slowdown)
    mps: bool = False  # GPU jobs share the GPUs through the MPS daemon

    @property
    def gpus(self) -> list[Device]:
        return [d for d in self.devices if d.kind == "gpu"]

    @property
    def cpus(self) -> list[Device]:
        return [d for d in self.devices if d.kind == "cpu"]


@dataclass(frozen=True)
class Placement:
    job: PendingJob
    device: Device


class Policy:
    """Base: subclasses implement :meth:`pick`; :meth:`slots` caps slots per device."""

    name = "base"
    uses_cpu = True

    def __init__(self, seed: int = 0) -> None:
        self.rng = random.Random(seed)

    def slots(self, dev: Device) -> int:
        """Slots this policy may use on ``dev`` (the device's own count by default)."""
        if dev.kind == "cpu" and not self.uses_cpu:
            return 0
        return dev.slots

    def can_take(self, job: PendingJob, dev: Device, ctx: Context) -> bool:
        return (
            dev.name not in job.exclude
            and len(dev.running) < self.slots(dev)
            and dev.fits(job.mem_on(dev), ctx.margin)
        )

    def pick(self, ctx: Context) -> Placement | None:
        raise NotImplementedError

    def on_finish(self, job_id: int) -> None:
        """Called when a job leaves a device (finished, failed or re-queued)."""


def cpu_gate(job: PendingJob, ctx: Context) -> bool:
    """May the CPU take ``job`` now? Only while more than beta x GPU slots jobs of the epoch
    remain (the artifact's rule), and, when both standalone times are known, only if its CPU
    time (times the co-run slowdown CPU jobs showed so far) fits within the predicted time the
    GPUs stay busy (so it does not become the straggler). Without GPUs the CPU may always take
    jobs."""
    gpus = ctx.gpus
    if not gpus or fits_no_gpu(job, ctx):
        return True
    gpu_slots = sum(d.slots for d in gpus)
    remaining = len(ctx.epoch) - ctx.finished
    if remaining <= ctx.beta * gpu_slots:
        return False
    cpu_s = job.cpu.standalone_s(job.iterations)
    if cpu_s is None:  # GPU time known but CPU time not: do not risk a straggler
        return job.gpu.iter_s is None
    cpu_s *= ctx.cpu_slowdown  # profiled alone; beside running GPU jobs it was this much slower
    others = [p.gpu.standalone_s(p.iterations) for p in ctx.pending if p.id != job.id]
    if any(s is None for s in others):
        return True
    drain_s = sum(others) / (len(gpus) * constants.GPU_COLOCATION_SPEEDUP)
    return cpu_s <= drain_s


def fits_no_gpu(job: PendingJob, ctx: Context) -> bool:
    """True when no GPU could hold ``job`` even empty: then the CPU is its only place, whatever
    the tail and beta rules say."""
    return all(
        d.name in job.exclude or ctx.margin * job.mem_on(d) > d.total_mb - d.baseline_mb
        for d in ctx.gpus
    )


def by_intensity(jobs: list[PendingJob]) -> list[PendingJob]:
    """Highest intensity first, submission order among equals."""
    return sorted(jobs, key=lambda j: (-j.intensity, j.seq))


class Monolithic(Policy):
    name = "monolithic"
    uses_cpu = False

    def slots(self, dev: Device) -> int:
        return 1 if dev.kind == "gpu" else 0

    def pick(self, ctx: Context) -> Placement | None:
        for job in sorted(ctx.pending, key=lambda j: j.seq):
            for dev in ctx.gpus:
                if self.can_take(job, dev, ctx):
                    return Placement(job, dev)
            return None  # first in, first out: a waiting head blocks the rest
        return None


class MpsRounds(Policy):
    name = "mps"
    uses_cpu = False

    def __init__(self, seed: int = 0) -> None:
        super().__init__(seed)
        self.round: set[int] = set()
        self.plan: list[tuple[int, str]] = []

    def on_finish(self, job_id: int) -> None:
        self.round.discard(job_id)

    def pick(self, ctx: Context) -> Placement | None:
        pending = {j.id: j for j in ctx.pending}
        devs = {d.name: d for d in ctx.gpus}
        if not self.plan and not self.round:
            self.plan = self._plan(ctx)
        while self.plan:
            jid, dname = self.plan[0]
            job, dev = pending.get(jid), devs.get(dname)
            if job is None or dev is None:
                self.plan.pop(0)  # cancelled meanwhile
                continue
            if not self.can_take(job, dev, ctx):
                return None  # e.g. memory not released yet; try again shortly
            self.plan.pop(0)
            self.round.add(jid)
            return Placement(job, dev)
        return None

    def _plan(self, ctx: Context) -> list[tuple[int, str]]:
        """Next round: submission order, round-robin over GPUs, k per GPU, fit checked
        against the memory the round itself reserves."""
        plan: list[tuple[int, str]] = []
        load = {d.name: (d.reserved_mb, len(d.running)) for d in ctx.gpus}
        gpus = ctx.gpus
        if not gpus:
            return plan
        turn = 0
        for job in sorted(ctx.pending, key=lambda j: j.seq):
            for k in range(len(gpus)):
                dev = gpus[(turn + k) % len(gpus)]
                mem, n = load[dev.name]
                need = ctx.margin * job.mem_on(dev)
                if (dev.name not in job.exclude and n < self.slots(dev)
                        and mem + need <= dev.total_mb):  # fmt: skip
                    plan.append((job.id, dev.name))
                    load[dev.name] = (mem + need, n + 1)
                    turn = (turn + k + 1) % len(gpus)
                    break
            if all(load[d.name][1] >= self.slots(d) for d in gpus):
                break
        return plan


class DyMix(Policy):
    name = "rmixer"

    def threshold(self, ctx: Context) -> float:
        g = sum(d.slots for d in ctx.gpus)
        c = sum(d.slots for d in ctx.cpus)
        return g / (g + c) if g + c else 1.0

    def tail_ids(self, ctx: Context) -> set[int]:
        """Jobs at position >= threshold x N of the epoch in decreasing intensity."""
        order = sorted(ctx.epoch, key=lambda e: (-e[0], e[1]))
        start = math.ceil(self.threshold(ctx) * len(order)) if ctx.gpus else 0
        return {e[2] for e in order[start:]}

    def pick(self, ctx: Context) -> Placement | None:
        order = by_intensity(ctx.pending)
        for dev in sorted(ctx.gpus, key=lambda d: (d.reserved_mb, d.name)):
            if len(dev.running) >= self.slots(dev):
                continue
            if ctx.mps:
                job = self.fill(order, dev, ctx)
                if job is not None:
                    return Placement(job, dev)
                continue
            majority = dev.majority_class()
            for job in order:
                if job.klass != majority and self.can_take(job, dev, ctx):
                    return Placement(job, dev)
            for job in order:
                if self.can_take(job, dev, ctx):
                    return Placement(job, dev)
        return self.pick_cpu(order, ctx)

    def fill(self, order: list[PendingJob], dev: Device, ctx: Context) -> PendingJob | None:
        """Under MPS: the most intense job of ``order`` (longest alone first among equals)
        that ``dev`` can take whose intensity fits under MPS_INTENSITY_FILL minus what runs
        there; when none fits under it, the least intense job ``dev`` can take."""
        room = constants.MPS_INTENSITY_FILL - dev.intensity_sum
        takable = [j for j in order if self.can_take(j, dev, ctx)]
        if not takable:
            return None
        under = [j for j in takable if j.intensity <= room]
        if under:
            return max(under, key=lambda j: (j.intensity, j.gpu.standalone_s(j.iterations) or 0.0,
                                             -j.seq))  # fmt: skip
        return min(takable, key=lambda j: (j.intensity, j.seq))

    def pick_cpu(self, order: list[PendingJob], ctx: Context) -> Placement | None:
        """The CPU's pick: from the low-intensity tail, when :func:`cpu_gate` allows."""
        tail = self.tail_ids(ctx)
        for dev in sorted(ctx.cpus, key=lambda d: (d.reserved_mb, d.name)):
            for job in reversed(order):  # from the low-intensity end
                in_tail = job.id in tail or fits_no_gpu(job, ctx)
                if in_tail and cpu_gate(job, ctx) and self.can_take(job, dev, ctx):
                    return Placement(job, dev)
        return None


class Sequential(Policy):
    name = "sequential"
    _CLASS_ORDER: ClassVar[dict[str, int]] = {c: i for i, c in enumerate(constants.CLASSES)}

    def pick(self, ctx: Context) -> Placement | None:
        order = sorted(ctx.pending, key=lambda j: (self._CLASS_ORDER.get(j.klass, 9),
                                                   -j.gpu.mem_mb, j.seq))  # fmt: skip
        for dev in [*ctx.gpus, *ctx.cpus]:
            if len(dev.running) >= self.slots(dev):
                continue
            for job in order:
                if dev.kind == "cpu" and not cpu_gate(job, ctx):
                    continue
                if self.can_take(job, dev, ctx):
                    return Placement(job, dev)
        return None


class CoGNN(Policy):
    name = "cognn"
    uses_cpu = False

    def __init__(self, seed: int = 0) -> None:
        super().__init__(seed)
        self.front = True

    def pick(self, ctx: Context) -> Placement | None:
        order = by_intensity(ctx.pending)
        if not self.front:
            order.reverse()
        for dev in sorted(ctx.gpus, key=lambda d: (-(d.total_mb - d.reserved_mb), d.name)):
            for job in order:
                if self.can_take(job, dev, ctx):
                    self.front = not self.front
                    return Placement(job, dev)
        return None


class RandomPolicy(Policy):
    name = "random"

    def pick(self, ctx: Context) -> Placement | None:
        jobs = list(ctx.pending)
        self.rng.shuffle(jobs)
        for job in jobs:
            devs = [d for d in ctx.gpus if self.can_take(job, d, ctx)]
            devs += [d for d in ctx.cpus if cpu_gate(job, ctx) and self.can_take(job, d, ctx)]
            if devs:
                return Placement(job, self.rng.choice(devs))
        return None


POLICIES: dict[str, type[Policy]] = {
    p.name: p for p in (Monolithic, MpsRounds, DyMix, Sequential, CoGNN, RandomPolicy)
}


def make_policy(name: str, seed: int = 0) -> Policy:
    """A policy by name (``monolithic``, ``mps``, ``rmixer``, ``sequential``, ``cognn``,
    ``random``)."""
    try:
        return POLICIES[name](seed)
    except KeyError:
        raise ValueError(f"policy: expected one of {sorted(POLICIES)}, got {name!r}") from None
