"""Numbers the kernels and benchmarks share, with where they come from.

The paper's numbers are from MICRO'24 (Jain et al., "Pushing the Performance Envelope of
DNN-based Recommendation Systems Inference on GPUs") and its artifact
(``rishucoding/reproduce_MICRO24_GPU_DLRM_inference``); see docs/emb-kernels/NOTES.md.
"""

from __future__ import annotations

# --- the baseline family (PyTorch 2.1's EmbeddingBag_updateOutputKernel_sum_mean structure)
BASELINE_GRID = 1024  # blocks, fixed, as PyTorch 2.1 launches it
BASELINE_BLOCK = (32, 8)  # threads: x = column within a 32-column slice, y = warp in block
DEFAULT_MAX_REGISTERS = 42  # the paper's OptMT cap: 42/thread costs what 48 does (A100)
DEVICE_CAP = "device"  # the variants' default cap: chosen per GPU (emb_kernels.occupancy)
DEFAULT_PREFETCH_DISTANCE = 2  # RPF: lv0/lv1 in the artifact (the 'rpf' variant's default)
DEVICE_PREFETCH = "device"  # combined's default distance: chosen with the cap (occupancy.py)
# RPF depth rule (emb_kernels.occupancy.pick_prefetch_distance), sm_90 ptxas, fp32/int64:
RPF_MIN_REGISTERS = 40  # fewest registers the one-lookup kernel takes without spilling
# (H200 report: cap 40/42 -> 40 regs, 0 B local; cap 32 -> 32 regs + 32 B local)
RPF_UNCAPPED_REGISTERS = 44  # the one-lookup kernel (baseline/rpf1) without a cap
RPF_LOAD_LATENCY_S = 0.8e-6  # loaded HBM latency used for Little's law (Hopper, ~0.6-1 us)
RPF_WARP_ROW_BYTES = 128  # one lookup of one warp: 32 columns x 4 bytes
PREFETCH_DISTANCES = (1, 2, 4, 8)  # instantiated in csrc/bag_baseline.cu
SWEEP_REGISTER_CAPS = (32, 40, 42, 48, 56, 64, None)  # None: no cap

# --- fast (our design)
FAST_BLOCK_THREADS = 256  # warp mode: 8 warps per block
FAST_DEFAULT_UNROLL = 4  # rows in flight per lane (anchor, H100: u4 104 us < u8 107 < u16 112)
FAST_UNROLLS_F32_V16 = (2, 4, 8, 16)  # instantiated for fp32 with 16-byte vectors (the sweep)
FAST_HINT_UNROLLS = (4, 8)  # fp32 16-byte loads with L1::no_allocate + L2::256B hints
FAST_BLOCK_WARPS = (2, 4, 8)  # block mode: warps sharing one bag
FAST_BLOCK_MODE_MIN_POOLING = 256  # mean ids per bag from which 8 warps own a bag
FAST_SPLIT_MIN_POOLING = 32  # ... and from which 2-8 warps share a bag (each warp then walks
# >= 16 ids = 4 groups of 4 rows). H200: anchor L 32 block2 75.1 us vs warp 75.6 (uniform),
# 47.0 vs 54.9 (zipf 1.1); micro24 L 150: block4 45.5 vs warp 47.9 (H100: 64, no L 32 data)
FAST_TARGET_WARPS_PER_SM = 48  # split bags until warp units reach this many per SM
FAST_SEGMENT_ROWS = 16  # segmented warp mode: a lane group walks bags until ~this many ids
# Medium bags (FAST_SEGMENT_ROWS..FAST_SPLIT_MIN_POOLING ids, e.g. the anchor's 32) that need
# more than one wave of warps also go segmented, K bags per lane group so one wave holds them
# (reasoned, not yet measured: the anchor's warp mode idles ~2 load latencies per bag start).
# Measured on the H200: no gain (anchor seg4 76.1 vs warp 75.6 us; zipf 55.5 vs 54.9) and a
# tail on mlperf-multihot (its 27-id table got K = 13: 631 lane groups of 351 rows each,
# fast 256.4 vs fast-noseg 239.0 us), so off; plan_fast still takes segment_bags to force it.
FAST_WAVE_SEGMENTS = False
FAST_SEG_RESIDENT_WARPS_PER_SM = 32  # CPU planning only (fp32 16-byte segmented kernel: 64
# registers on sm_90 -> 4 blocks of 8 warps); on a GPU it is read from the loaded kernel
# Cooperative id loads (csrc/bag_fast.cuh ek_gather_coop): a warp whose lane group is
# the whole warp loads 32 ids in one coalesced load and shuffles them, 8 rows in flight.
# Off by default, decided on H200 run 2 (NOTES.md): 'fast-coop' (warp mode + coop) wins where
# ids repeat (micro24-high 27.0 vs fast 30.9 us, zipf anchor 38.7 vs 49.7) and is a tie on
# mlperf (190.5 vs 195.3), but loses on uniform ids with the same shapes (anchor 78.7 vs 76.1,
# micro24-random 47.7 vs 44.8) and on Kaggle one-hot (108.4 vs 93.9). Pooling and row width are
# the same in the won and lost cases, so no plan-time rule separates them; the id skew that
# does is not known at plan time. 'fast-coop' turns it on, 'fast-v1' pins it off.
FAST_COOP = False
FAST_COOP_UNROLL = 8  # rows in flight per lane in the coop kernels (the `_u8c` suffix)
FAST_META_STRIDE = 11  # int64 fields per table in the fast kernels' meta (csrc/bag_fast.cuh)
# Split bags (opt-in `split` knob, kernels `_u4s` / `_u8cs`; H200 run 3 measures it): in warp
# mode, tables whose mean pooling is >= FAST_SPLIT_TABLE_MIN_POOLING (`split_min_pooling`)
# share each bag among S warps of one block (S <= the knob, a power of two, each warp walking
# >= FAST_SPLIT_MIN_IDS_PER_WARP ids), reduced through shared memory; the other tables of the
# launch keep their paths. Aimed at mlperf-multihot's 100-id table (chains of 25 groups of 4
# rows, which set the tail), not at the anchors (32 ids < 40).
FAST_SPLIT_WARPS = (2, 4, 8)
FAST_SPLIT_TABLE_MIN_POOLING = 40.0
FAST_SPLIT_MIN_IDS_PER_WARP = 8
# Rows in flight per lane in the segmented path (opt-in `seg_unroll=8`, float32 only, kernels
# `_u8` / `_u8c8` bounded to 3 blocks per SM: 24 warps x 8 rows instead of 32 x 4; H200 run 3
# measures it). Aimed at mlperf-multihot's short tables (1-12 ids, K > 1 bags per lane group).
FAST_SEG_UNROLLS = (4, 8)
# Rows gathered through shared memory (`async_rows=D`, the default for some launches, see
# below; kernels `_a8` / `_a16` in csrc/bag_fast_async.cu, float32 16-byte rows; H200 run 4
# measured it): tables whose lane group is the whole warp (>= 32 16-byte vectors per row,
# e.g. 128 fp32) keep D rows in flight per warp in a cp.async ring of D x 512 bytes in shared
# memory instead of 4 in registers,
# with cooperative id loads; the other tables take the U = 4 segmented path in the same
# launch. Blocks of FAST_ASYNC_WARPS warps (ring: 4 x D x 512 B = 16 / 32 KB per block).
FAST_ASYNC_ROWS = (8, 16)
# The ring by default (async_rows=None): D = 8 for launches of >= FAST_AUTO_ASYNC_MIN_TABLES
# tables where every table takes it (float32, >= 128 floats wide) and no other knob is set.
# H200, inference pack, 3 runs (NOTES.md "H200, run 4"): MLPerf multi-hot 169.2-172.4 us
# against the segmented path's 195.8-196.2, Criteo Kaggle 91.8-94.3 against 94.1-95.6; the
# single-table anchors lost (uniform 74.9-82.2 against 74.8-75.4, zipf 52.6-57.1 against
# 49.1-50.1), so one-table launches keep the register path.
FAST_AUTO_ASYNC_ROWS = 8
FAST_AUTO_ASYNC_MIN_TABLES = 2
# ... and its short-bag tables walk ~32 ids per warp (segment_rows=32, taken as given: no
# halving to fill the GPU). H200 run 6, ring loop unrolled by D: MLPerf multi-hot 159.3-160.5 us
# against 163.2-164.2 with the automatic segments, the inference TBE 161.0-161.4.
FAST_AUTO_ASYNC_SEGMENT_ROWS = 32
FAST_ASYNC_WARPS = 4
FAST_ASYNC_SLOT_BYTES = 512  # one row slot of a warp: 32 lanes x 16 bytes
# Tables go into a launch longest work unit first (meta field 9 = the table's index): units
# are dispatched in order, so long chains (mlperf's 100-id bags) start first and the short
# ones fill the tail (longest-processing-time-first scheduling).
FAST_LONGEST_FIRST = True
FAST_MAX_ROWS = 2**31 - 1  # fast keeps validated ids in 32-bit registers

# --- L2 pinning
L2P_PREFETCH_STEP_BYTES = 32  # one prefetch per L2 sector (the artifact: per 4-byte element)
L2P_PREFETCH_GRID = 1024
PAPER_HOT_ROWS = 60_000  # the artifact's hot-list length (A100: 30 MiB persisting max / 512 B)

# --- modes, types
MODES = ("sum", "mean", "max")
MODE_CODES = {"sum": 0, "mean": 1, "max": 2}
VARIANTS = ("baseline", "optmt", "rpf", "l2p", "combined", "fast")

# --- hardware reference points (for notes and bandwidth floors)
H100_COPY_TBPS = 3.0  # device-to-device copy, bytes read + written, measured on the lent H100
H200_COPY_TBPS = 4.3  # the same on the lent H200 (results/emb-kernels/anchors.jsonl, copy row)
A100_PERSISTING_L2_MAX = 30 * 2**20  # bytes; the paper's GPU
