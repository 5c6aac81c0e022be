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
DEFAULT_PREFETCH_DISTANCE = 2  # RPF: lv0/lv1 in the artifact
PREFETCH_DISTANCES = (1, 2, 4, 8)  # instantiated in csrc/bag_baseline.cu
SWEEP_REGISTER_CAPS = (32, 40, 42, 48, 56, 64, None)  # None: no cap

# --- fast (our design)
FAST_BLOCK_THREADS = 256  # warp mode: 8 warps per block
FAST_DEFAULT_UNROLL = 4  # rows in flight per lane (anchor, H100: u4 104 us < u8 107 < u16 112)
FAST_UNROLLS_F32_V16 = (2, 4, 8, 16)  # instantiated for fp32 with 16-byte vectors (the sweep)
FAST_HINT_UNROLLS = (4, 8)  # fp32 16-byte loads with L1::no_allocate + L2::256B hints
FAST_BLOCK_WARPS = (2, 4, 8)  # block mode: warps sharing one bag
FAST_BLOCK_MODE_MIN_POOLING = 256  # mean ids per bag from which a block (not a warp) owns a bag
FAST_SPLIT_MIN_POOLING = 64  # ... and from which a bag may be split to fill the GPU
FAST_TARGET_WARPS_PER_SM = 48  # split bags until warp units reach this many per SM
FAST_SEGMENT_ROWS = 16  # segmented warp mode: a lane group walks bags until ~this many ids
# Medium bags (FAST_SEGMENT_ROWS..FAST_SPLIT_MIN_POOLING ids, e.g. the anchor's 32) that need
# more than one wave of warps also go segmented, K bags per lane group so one wave holds them
# (reasoned, not yet measured: the anchor's warp mode idles ~2 load latencies per bag start).
FAST_WAVE_SEGMENTS = True
FAST_SEG_RESIDENT_WARPS_PER_SM = 32  # CPU planning only (fp32 16-byte segmented kernel: 64
# registers on sm_90 -> 4 blocks of 8 warps); on a GPU it is read from the loaded kernel
FAST_META_STRIDE = 10  # int64 fields per table in the fast kernels' meta (csrc/bag_fast.cu)
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
A100_PERSISTING_L2_MAX = 30 * 2**20  # bytes; the paper's GPU
