"""Every tunable number of the scheduler in one place, with its unit and where it comes from.

The artifact (Gardenia-Tian/RMixer) hard-codes these in its policies; here they are defaults
that the server's flags override.
"""

from __future__ import annotations

# --- memory (MB = 2**20 bytes) ----------------------------------------------------------------
MEMORY_MARGIN = 1.2  # dispatch reserves estimate x 1.2 (the artifact's fit test)
BLOCK_MB = 2  # each tensor group of the analytic estimate is rounded up to 2 MiB blocks
CUDA_CONTEXT_MB = 735  # CUDA context + allocator of one process before measurement (V100, artifact)
CPU_RUNTIME_MB = 350  # resident torch runtime of one CPU job before measurement
CORUN_KEEP = 20  # co-run slowdown ratios kept per device kind (knowledge.record_corun)
CPU_MEMORY_FRACTION = 0.8  # share of MemAvailable at server start the CPU device may reserve
OOM_BUMP = 1.5  # a job that ran out of memory is retried with its estimate x 1.5
MAX_ATTEMPTS = 3  # attempts per job (first run + OOM retries) before it is reported failed
# A CPU job still running after CPU_RESCUE_FACTOR x its predicted time (standalone profile x the
# co-run slowdown learned so far), and after at least CPU_RESCUE_MIN_S, is stopped and re-queued
# for a GPU. One H200 run (docs/rmixer/makespan.md, run 11): two CPU jobs ran 70x their profile
# next to the GPU jobs and made the run 37 % longer. 0 turns it off (the artifact has none).
CPU_RESCUE_FACTOR = 4.0
CPU_RESCUE_MIN_S = 2.0

# --- compute-intensity classes ------------------------------------------------------------------
COMPUTE_HIGH_PCT = 50.0  # intensity (device busy %, measured) at or above: "compute"
MEMORY_HIGH_MB = 4000.0  # measured peak at or above (and not compute-high): "memory"
CLASSES = ("compute", "memory", "low")  # artifact: high-compute, high-memory, both-low

# --- dyMix ---------------------------------------------------------------------------------------
DEFAULT_BETA = 4.0  # the CPU takes jobs only while remaining > beta x GPU slots (artifact default)
# Expected aggregate speed-up of co-located jobs on one GPU, used to predict how long the GPUs
# stay busy when deciding whether a slow CPU job would become the straggler (artifact log: 2.7x).
GPU_COLOCATION_SPEEDUP = 2.5

# --- runtime -------------------------------------------------------------------------------------
DEFAULT_PORT = 8765
POLL_S = 0.02  # scheduler loop period when nothing wakes it
PROFILE_ITERATIONS = 30  # timed iterations of one standalone profile run
PROFILE_WARMUP = 5
NUM_CACHED_BATCHES = 4  # synthetic batches generated once per job and cycled
# Under MPS, rmixer fills each GPU up to this sum of running intensities (device busy % of each
# job alone): the most intense pending job that still fits under it, else the least intense.
# 150 is the capacity that a processor-sharing model of MPS needed to reproduce run 5 on one H200
# (balance_24: MPS rounds 40.75 s measured, 39.0 s modelled; rmixer@mps's GPU side 38.9 vs 38.2).
# In that model this rule gives 30.8 s; targets 120-180 all stay within 8% of it. Measured in
# run 7 (one H200, docs/rmixer/makespan.md): 34.44 s, 1.47x the MPS rounds of that run.
MPS_INTENSITY_FILL = 150.0
