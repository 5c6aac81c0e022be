// `fast`: the opt-in kernels of the `split` and `seg_unroll=8` knobs (kernels.FAST_X_SOURCE;
// design in bag_fast.cuh), a module apart from the default kernels of bag_fast.cu.
#include "bag_fast.cuh"

// ..._u4s / ..._u8cs: the segmented / coop kernels where tables with meta S > 1 share each bag
// among S warps of a block (the `split` knob; ek_split_bag)
#define EK_INST_SPLIT(KIND, IS_MAX, TN, T, IN, I, VB)                                 \
  extern "C" __global__ void __launch_bounds__(256)                                  \
      ek_fast_seg_##KIND##_##TN##_##IN##_v##VB##_u4s(EK_FAST_PARAMS(T, I)) {           \
    ek_fast_seg<T, I, VB, 4, IS_MAX, false, true>(EK_FAST_ARGS);                      \
  }                                                                                   \
  extern "C" __global__ void __launch_bounds__(256, EK_COOP_MIN_BLOCKS)              \
      ek_fast_seg_##KIND##_##TN##_##IN##_v##VB##_u8cs(EK_FAST_PARAMS(T, I)) {          \
    ek_fast_seg<T, I, VB, 4, IS_MAX, true, true>(EK_FAST_ARGS);                       \
  }
#ifndef EK_SEG8_MIN_BLOCKS
// the `seg_unroll=8` kernels: 3 blocks of 256 per SM (<= 80 registers), 24 warps x 8 rows in
// flight per SM against the U = 4 segmented kernel's 32 x 4. sm_90 ptxas, fp32 16-byte sum:
// 88 registers without a bound (2 blocks: 16 x 8, no gain possible), 80 with 80 B of spill
// stores at 3 blocks (the coop one: 96 -> 80 with 104 B); a guess to measure
#define EK_SEG8_MIN_BLOCKS 3
#endif
// ..._u8 / ..._u8c8 (float32 only): the segmented / coop kernels with 8 rows in flight in the
// segmented path (lane groups of K >= 1 bags) instead of 4 (the `seg_unroll` knob)
#define EK_INST_SEG8(KIND, IS_MAX, TN, T, IN, I, VB)                                  \
  extern "C" __global__ void __launch_bounds__(256, EK_SEG8_MIN_BLOCKS)              \
      ek_fast_seg_##KIND##_##TN##_##IN##_v##VB##_u8(EK_FAST_PARAMS(T, I)) {            \
    ek_fast_seg<T, I, VB, 8, IS_MAX>(EK_FAST_ARGS);                                   \
  }                                                                                   \
  extern "C" __global__ void __launch_bounds__(256, EK_SEG8_MIN_BLOCKS)              \
      ek_fast_seg_##KIND##_##TN##_##IN##_v##VB##_u8c8(EK_FAST_PARAMS(T, I)) {          \
    ek_fast_seg<T, I, VB, 8, IS_MAX, true>(EK_FAST_ARGS);                             \
  }

#define EK_INST_X(TN, T, IN, I, VB)          \
  EK_INST_SPLIT(sum, false, TN, T, IN, I, VB) \
  EK_INST_SPLIT(max, true, TN, T, IN, I, VB)
#define EK_INST_X32(IN, I)                        \
  EK_INST_X(f32, float, IN, I, 16)                \
  EK_INST_X(f32, float, IN, I, 8)                 \
  EK_INST_X(f32, float, IN, I, 4)                 \
  EK_INST_SEG8(sum, false, f32, float, IN, I, 16) \
  EK_INST_SEG8(max, true, f32, float, IN, I, 16)  \
  EK_INST_SEG8(sum, false, f32, float, IN, I, 8)  \
  EK_INST_SEG8(max, true, f32, float, IN, I, 8)   \
  EK_INST_SEG8(sum, false, f32, float, IN, I, 4)  \
  EK_INST_SEG8(max, true, f32, float, IN, I, 4)
#define EK_INST_X16(TN, T, IN, I) \
  EK_INST_X(TN, T, IN, I, 16)     \
  EK_INST_X(TN, T, IN, I, 8)      \
  EK_INST_X(TN, T, IN, I, 4)      \
  EK_INST_X(TN, T, IN, I, 2)

EK_INST_X32(i32, int)
EK_INST_X32(i64, i64)
EK_INST_X16(f16, f16, i32, int)
EK_INST_X16(f16, f16, i64, i64)
EK_INST_X16(bf16, bf16, i32, int)
EK_INST_X16(bf16, bf16, i64, i64)
