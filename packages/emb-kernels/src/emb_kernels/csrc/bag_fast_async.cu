// `fast`: the kernels of the `async_rows` knob, the default for multi-table float32 launches
// (kernels.FAST_ASYNC_SOURCE; design in bag_fast.cuh, ek_gather_async), a module apart from
// the kernels of bag_fast.cu.
// cp.async needs sm_80+ (the package's minimum).
#include "bag_fast.cuh"

// ek_fast_seg_<sum|max>_f32_<index>_v16_a<D>: the segmented kernel in blocks of
// EK_ASYNC_WARPS warps, where tables whose lane group is the whole warp gather through a ring
// of D rows per warp in shared memory (EK_ASYNC_WARPS x D x 512 bytes per block); the other
// tables of the launch take the U = 4 segmented path in the same kernel
#define EK_INST_ASYNC(KIND, IS_MAX, IN, I, D)                                         \
  extern "C" __global__ void __launch_bounds__(EK_ASYNC_WARPS * 32)                   \
      ek_fast_seg_##KIND##_f32_##IN##_v16_a##D(EK_FAST_PARAMS(float, I)) {             \
    ek_fast_seg<float, I, 16, 4, IS_MAX, false, false, D>(EK_FAST_ARGS);              \
  }
// ..._a<D>o: the same ring for launches where every table takes it (no fallback compiled in),
// bounded to MINB resident blocks per SM. sm_90 ptxas, sum f32 i64, D = 8: 54 registers
// unbounded (9 blocks, 36 warps), 48 with 12 B of spill at MINB 10 (40 warps), 40 with 44 B
// at 12; D = 16 is held to 7 blocks by its 32 KB ring whatever the registers
#define EK_INST_ASYNC_ONLY(KIND, IS_MAX, IN, I, D, MINB)                              \
  extern "C" __global__ void __launch_bounds__(EK_ASYNC_WARPS * 32, MINB)             \
      ek_fast_seg_##KIND##_f32_##IN##_v16_a##D##o(EK_FAST_PARAMS(float, I)) {          \
    ek_fast_seg<float, I, 16, 4, IS_MAX, false, false, D, true>(EK_FAST_ARGS);        \
  }
#ifndef EK_ASYNC8_ONLY_MIN_BLOCKS
#define EK_ASYNC8_ONLY_MIN_BLOCKS 10
#endif
#define EK_INST_ASYNC_D(IN, I, D, MINB)          \
  EK_INST_ASYNC(sum, false, IN, I, D)            \
  EK_INST_ASYNC(max, true, IN, I, D)             \
  EK_INST_ASYNC_ONLY(sum, false, IN, I, D, MINB) \
  EK_INST_ASYNC_ONLY(max, true, IN, I, D, MINB)

EK_INST_ASYNC_D(i32, int, 8, EK_ASYNC8_ONLY_MIN_BLOCKS)
EK_INST_ASYNC_D(i64, i64, 8, EK_ASYNC8_ONLY_MIN_BLOCKS)
EK_INST_ASYNC_D(i32, int, 16, 7)
EK_INST_ASYNC_D(i64, i64, 16, 7)
