"""Policy invariants under a discrete-event simulation (no processes): slots and memory never
exceeded, reservations released, every job placed once, the CPU only takes the dyMix tail."""

from __future__ import annotations

import math
import random

import pytest

from rmixer.devices import Device
from rmixer.knowledge import JobInfo
from rmixer.policies import POLICIES, Context, DyMix, PendingJob, cpu_gate, make_policy


def info(mem, intensity, klass, iter_s=None, setup_s=None, kind="gpu"):
    return JobInfo(f"k-{kind}", "m", mem, mem, intensity, klass, iter_s, setup_s,
                   "profile" if iter_s else "analytic")  # fmt: skip


def make_jobs(n, seed=0, cpu_iter_s=None):
    rng = random.Random(seed)
    jobs = []
    for i in range(n):
        klass = rng.choice(["compute", "memory", "low"])
        inten = {"compute": rng.uniform(50, 90), "memory": rng.uniform(5, 40),
                 "low": rng.uniform(1, 20)}[klass]  # fmt: skip
        mem = rng.uniform(500, 9000) if klass == "memory" else rng.uniform(300, 3000)
        cpu_it = None if cpu_iter_s is None else cpu_iter_s
        jobs.append(PendingJob(i, i, f"j{i}", 100, info(mem, inten, klass, 0.01, 0.5),
                               info(mem, 0.0, "low", cpu_it, 0.5 if cpu_it else None, "cpu")))  # fmt: skip
    return jobs


def devices(n_gpus=1, gpu_slots=4, cpu_slots=2, gpu_mb=16000):
    devs = [Device(f"cuda:{i}", "gpu", gpu_slots, gpu_mb, baseline_mb=500) for i in range(n_gpus)]
    if cpu_slots:
        devs.append(Device("cpu", "cpu", cpu_slots, 32000))
    return devs


def simulate(policy_name, jobs, devs, seed=0, beta=4.0, mps=False):
    """Run to completion; returns the placement log and checks invariants at every step."""
    rng = random.Random(seed)
    policy = make_policy(policy_name, seed)
    pending = list(jobs)
    running: dict[int, tuple[PendingJob, Device]] = {}
    finished: set[int] = set()
    epoch = [(j.intensity, j.seq, j.id) for j in jobs]
    log = []
    steps = 0
    while pending or running:
        steps += 1
        assert steps < 10_000, "simulation does not progress"
        ctx = Context(pending, devs, set(running), epoch, len(finished), 1.2, beta, mps=mps)
        while (choice := policy.pick(ctx)) is not None:
            job, dev = choice.job, choice.device
            assert job in pending, "a policy picked a job that is not pending"
            assert dev.name not in job.exclude
            dev.reserve(job.id, job.mem_on(dev), job.intensity, job.klass, 1.2)
            assert len(dev.running) <= dev.slots, f"{dev.name} over its slots"
            assert len(dev.running) <= policy.slots(dev), f"{policy_name} exceeded its cap"
            assert dev.reserved_mb <= dev.total_mb + 1e-6, f"{dev.name} over its memory"
            running[job.id] = (job, dev)
            pending = [p for p in pending if p.id != job.id]
            log.append({"job": job.id, "device": dev.name, "finished": len(finished),
                        "running_round": set(running) - {job.id}})  # fmt: skip
            ctx = Context(pending, devs, set(running), epoch, len(finished), 1.2, beta, mps=mps)
        if not running:
            assert not pending, f"{policy_name} left {len(pending)} jobs unplaced with idle devices"
            break
        done = rng.choice(sorted(running))
        job, dev = running.pop(done)
        dev.release(done)
        policy.on_finish(done)
        finished.add(done)
    for d in devs:
        assert d.reserved_mb == pytest.approx(d.baseline_mb), f"{d.name} kept a reservation"
        assert not d.running
    assert finished == {j.id for j in jobs}
    return log


@pytest.mark.parametrize("policy", sorted(POLICIES))
@pytest.mark.parametrize("n_gpus", [1, 2, 4])  # 4: the paper's headline machine (issue 14)
def test_invariants_every_policy(policy, n_gpus):
    jobs = make_jobs(40, seed=n_gpus)
    log = simulate(policy, jobs, devices(n_gpus), seed=3)
    assert len(log) == len(jobs)
    if not POLICIES[policy].uses_cpu:
        assert all(e["device"] != "cpu" for e in log)


@pytest.mark.parametrize("n_gpus", [1, 2, 4])
def test_invariants_dymix_under_mps(n_gpus):
    jobs = make_jobs(40, seed=n_gpus + 10)
    log = simulate("rmixer", jobs, devices(n_gpus), seed=5, mps=True)
    assert len(log) == len(jobs)


def test_dymix_under_mps_fills_each_gpu_up_to_the_intensity_target():
    """Most intense job under MPS_INTENSITY_FILL (150) minus what runs, else the least
    intense: heavy and light jobs share the GPU instead of the heavy ones going first."""
    intensities = [90.0, 90.0, 69.0, 37.0, 21.0, 9.0, 9.0]
    jobs = [PendingJob(i, i, f"j{i}", 100, info(500, x, "compute" if x > 50 else "low", 0.01, 0.1),
                       info(500, 0, "low", kind="cpu")) for i, x in enumerate(intensities)]  # fmt: skip
    devs = devices(1, gpu_slots=4, cpu_slots=0)
    policy = DyMix()
    ctx = Context(list(jobs), devs, mps=True)
    picked = []
    while (choice := policy.pick(ctx)) is not None:
        picked.append(choice.job.intensity)
        devs[0].reserve(choice.job.id, 500, choice.job.intensity, choice.job.klass)
        ctx.pending = [j for j in ctx.pending if j.id != choice.job.id]
    # 90 (room 60) -> 37 (room 23) -> 21 (room 2) -> none fits: the least intense, 9
    assert picked == [90.0, 37.0, 21.0, 9.0]
    some = [j for j in jobs if j.intensity in (90.0, 69.0, 37.0)]
    assert policy.pick(Context(some, devices(1, cpu_slots=0), mps=True)).job.intensity == 90.0
    # not under MPS: the paper's rule as before (an idle GPU first takes a non-compute job)
    assert policy.pick(Context(some, devices(1, cpu_slots=0))).job.intensity == 37.0


def test_monolithic_one_job_per_gpu_in_submission_order():
    jobs = make_jobs(12)
    log = simulate("monolithic", jobs, devices(1))
    assert [e["job"] for e in log] == list(range(12))
    assert all(not e["running_round"] for e in log)


def test_mps_rounds_wait_for_the_whole_round():
    jobs = make_jobs(13, seed=5)
    devs = devices(2, gpu_slots=3, cpu_slots=0, gpu_mb=200000)
    log = simulate("mps", jobs, devs, seed=1)
    # first round: 3 per GPU, at once, in submission order; later rounds start on an idle machine
    assert [e["job"] for e in log[:6]] == list(range(6))
    round_starts = [i for i, e in enumerate(log) if not e["running_round"]]
    assert round_starts == [0, 6, 12]


def test_dymix_cpu_only_takes_the_low_intensity_tail():
    jobs = make_jobs(48, seed=11, cpu_iter_s=0.001)
    devs = devices(1, gpu_slots=4, cpu_slots=2, gpu_mb=12000)  # tight, but every job fits alone
    log = simulate("rmixer", jobs, devs, seed=2, beta=1.0)
    order = sorted(jobs, key=lambda j: (-j.intensity, j.seq))
    tail = {j.id for j in order[math.ceil(4 / 6 * len(order)) :]}
    on_cpu = [e for e in log if e["device"] == "cpu"]
    assert on_cpu, "the scenario should send some jobs to the CPU"
    assert {e["job"] for e in on_cpu} <= tail
    assert all(len(jobs) - e["finished"] > 1.0 * 4 for e in on_cpu)  # the beta rule


def test_dymix_sends_a_job_no_gpu_can_hold_to_the_cpu():
    big = PendingJob(0, 0, "big", 10, info(20000, 90, "compute"), info(20000, 0, "low"))
    small = [PendingJob(i, i, "s", 10, info(500, 1, "low"), info(500, 0, "low")) for i in (1, 2)]
    log = simulate("rmixer", [big, *small], devices(1, cpu_slots=1, gpu_mb=16000))
    assert {e["job"]: e["device"] for e in log}[0] == "cpu"


def test_dymix_idle_gpu_takes_most_intense_non_compute_first():
    jobs = [
        PendingJob(0, 0, "a", 10, info(1000, 80, "compute"), info(1000, 0, "low")),
        PendingJob(1, 1, "b", 10, info(1000, 30, "memory"), info(1000, 0, "low")),
        PendingJob(2, 2, "c", 10, info(1000, 10, "low"), info(1000, 0, "low")),
    ]
    devs = devices(1, cpu_slots=0)
    policy = DyMix()
    ctx = Context(list(jobs), devs, set(), [(j.intensity, j.seq, j.id) for j in jobs], 0)
    first = policy.pick(ctx)
    assert (first.job.id, first.device.name) == (1, "cuda:0")  # ties resolve to "compute"
    devs[0].reserve(1, 1000, 30, "memory")
    ctx.pending = [jobs[0], jobs[2]]
    assert policy.pick(ctx).job.id == 0  # majority now "memory": the compute job complements it


def test_cpu_gate_beta_and_straggler_guard():
    gpu = devices(1, cpu_slots=0)
    slow = PendingJob(0, 0, "s", 100, info(500, 1, "low", 0.01, 0.1),
                      info(500, 0, "low", 5.0, 0.1, "cpu"))  # 500 s on the CPU  # fmt: skip
    fast = PendingJob(1, 1, "f", 100, info(500, 1, "low", 0.01, 0.1),
                      info(500, 0, "low", 0.001, 0.1, "cpu"))  # fmt: skip
    others = [PendingJob(i, i, "o", 100, info(500, 50, "compute", 0.01, 0.1),
                         info(500, 0, "low", 0.1, 0.1, "cpu")) for i in range(2, 40)]  # fmt: skip
    epoch = [(j.intensity, j.seq, j.id) for j in [slow, fast, *others]]
    ctx = Context([slow, fast, *others], gpu, set(), epoch, finished=0, beta=4.0)
    assert not cpu_gate(slow, ctx)  # would outlive the GPUs' remaining work
    assert cpu_gate(fast, ctx)
    ctx.cpu_slowdown = 100.0  # CPU jobs ran 100x slower than their profiles beside the GPUs
    assert not cpu_gate(fast, ctx)  # 0.2 s x 100 > the GPUs' ~17 s of remaining work
    ctx.cpu_slowdown = 1.0
    ctx.finished = len(epoch) - 16  # 16 left = beta x 4 GPU slots: no more CPU jobs
    assert not cpu_gate(fast, ctx)
    unknown_cpu = PendingJob(50, 50, "u", 100, info(500, 1, "low", 0.01, 0.1),
                             info(500, 0, "low", kind="cpu"))  # fmt: skip
    ctx.finished = 0
    assert not cpu_gate(unknown_cpu, ctx)  # GPU time known, CPU time not: no risk taken


def test_oom_exclusion_and_bump_are_respected():
    job = PendingJob(0, 0, "x", 10, info(4000, 10, "low"), info(4000, 0, "low"),
                     mem_bump=1.5, exclude=frozenset({"cuda:0"}))  # fmt: skip
    devs = devices(2, gpu_mb=8000, cpu_slots=0)
    ctx = Context([job], devs, set(), [(10, 0, 0)], 0)
    choice = make_policy("rmixer").pick(ctx)
    assert choice.device.name == "cuda:1"
    assert choice.job.mem_on(choice.device) == 6000
    assert not devs[1].fits(6000 * 1.0 + 2000)  # 500 baseline + 7200 > 8000


def test_unknown_policy_is_an_error():
    with pytest.raises(ValueError, match="expected one of"):
        make_policy("fastest")
