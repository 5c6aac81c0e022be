"""Fixed numbers of the kernel and of the GPUs it targets, with units.

Every schedule runs 256-thread blocks (as the RecFlex artifact does), so the occupancy a plan
asks for, in blocks per SM, is 1..8 on GPUs with 2048 threads per SM (A100, H100, H200).
"""

from __future__ import annotations

BLOCK_THREADS = 256  # threads per block, every template
WARP = 32  # threads per warp
MAX_THREADS_PER_SM = 2048  # sm_80 / sm_90
MAX_OCCUPANCY = MAX_THREADS_PER_SM // BLOCK_THREADS  # 8 blocks per SM
SMEM_PER_SM_BYTES = 228 * 1024  # sm_90 shared memory per SM (sm_80: 164 KB)
SMEM_RESERVED_PER_BLOCK_BYTES = 1024  # the runtime's per-block reservation (sm_80+)
MAX_SMEM_PER_BLOCK_BYTES = 227 * 1024  # sm_90 opt-in maximum per block
DEFAULT_SM_COUNT = 132  # H100/H200 SXM; only used off the GPU (CPU emulation, compile stats)

VECTOR_SIZES = (1, 2, 4)  # floats per aligned vector load
ITEMS_PER_THREAD = (1, 2, 4, 8)  # lookups unrolled per thread
WPS_X = (4, 8, 16, 32, 64, 128)  # WarpPerSample: threads per sample
OBMS_X = (1, 2, 4, 8, 16, 32, 64)  # OneBlockMultiSample: threads across columns
OBMS_Y = (4, 8, 16, 32, 64, 128)  # OneBlockMultiSample: threads across one sample's lookups
RBK_MAX_DIM = 32  # ReduceByKey only for dims up to 32 (the artifact's rule)

ONEHOT_TILE = 256  # OneHot(MultiBlock): samples per tile
ZERO_FILL_FLOATS_PER_BLOCK = (
    16384  # zero-fill blocks for a feature with no lookups: 64 floats/thread
)
