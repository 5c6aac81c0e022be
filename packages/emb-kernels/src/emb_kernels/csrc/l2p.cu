// L2 pinning, method (a) of MICRO'24: before the lookup, touch every hot row with
// `prefetch.global.L2::evict_last`, so those lines are kept over streaming traffic.
// The artifact's kernel was grid 1024 x block (2, 128) with the 128 columns hard-coded and one
// prefetch per 4-byte element; ours takes any row width and issues one prefetch per `step`
// bytes (default 32: one L2 sector), grid-striding over (hot row, chunk) pairs.
// Also here: ek_spin, a kernel that waits on the GPU's global timer, used by the benchmark to
// keep the GPU busy while the host enqueues a timed launch (so host launch cost stays out of
// the CUDA-event timing).
#include "common.cuh"

extern "C" __global__ void ek_l2p_prefetch(const char* __restrict__ base,
                                           const i64* __restrict__ hot_rows, i64 num_hot,
                                           i64 row_pitch, i64 row_bytes, i64 step,
                                           i64 num_rows) {
  const i64 chunks = (row_bytes + step - 1) / step;
  const i64 total = num_hot * chunks;
  const i64 stride = (i64)gridDim.x * blockDim.x;
  for (i64 t = (i64)blockIdx.x * blockDim.x + threadIdx.x; t < total; t += stride) {
    const i64 row = hot_rows[t / chunks];
    if (row < 0 || row >= num_rows) continue;  // never touch memory outside the table
    const char* p = base + row * row_pitch + (t % chunks) * step;
    asm volatile("prefetch.global.L2::evict_last [%0];" ::"l"(p));
  }
}

extern "C" __global__ void ek_spin(u64 nanoseconds) {
  u64 start, now;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(start));
  do {
    asm volatile("nanosleep.u32 1000;");
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(now));
  } while (now - start < nanoseconds);
}
