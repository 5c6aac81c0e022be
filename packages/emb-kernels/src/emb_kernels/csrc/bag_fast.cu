// `fast`: the default kernels (design and meta layout in bag_fast.cuh).
#include "bag_fast.cuh"

// ek_fast_warp_<sum|max>_<dtype>_<index>_v<VB>_u<U>[_h], ek_fast_block<WB>_sum_<dtype>_<index>_v<VB>
#define EK_INST_WARP(KIND, IS_MAX, TN, T, IN, I, VB, U, H, SUFFIX)                    \
  extern "C" __global__ void __launch_bounds__(256)                                  \
      ek_fast_warp_##KIND##_##TN##_##IN##_v##VB##_u##U##SUFFIX(EK_FAST_PARAMS(T, I)) { \
    ek_fast_warp<T, I, VB, U, IS_MAX, H>(EK_FAST_ARGS);                               \
  }
#define EK_INST_SEG(KIND, IS_MAX, TN, T, IN, I, VB)                                   \
  extern "C" __global__ void __launch_bounds__(256)                                  \
      ek_fast_seg_##KIND##_##TN##_##IN##_v##VB##_u4(EK_FAST_PARAMS(T, I)) {            \
    ek_fast_seg<T, I, VB, 4, IS_MAX>(EK_FAST_ARGS);                                   \
  }
// ..._u8c: the segmented kernel where warps owning one bag of a table whose row slice is a
// whole warp take cooperative ids with 8 rows in flight (other tables of the launch, and lane
// groups of several bags, take the U = 4 segmented path in the same kernel)
#define EK_INST_COOP(KIND, IS_MAX, TN, T, IN, I, VB)                                  \
  extern "C" __global__ void __launch_bounds__(256, EK_COOP_MIN_BLOCKS)              \
      ek_fast_seg_##KIND##_##TN##_##IN##_v##VB##_u8c(EK_FAST_PARAMS(T, I)) {           \
    ek_fast_seg<T, I, VB, 4, IS_MAX, true>(EK_FAST_ARGS);                             \
  }
#define EK_INST_BLOCK(WB, TN, T, IN, I, VB)                                            \
  extern "C" __global__ void __launch_bounds__(WB * 32)                              \
      ek_fast_block##WB##_sum_##TN##_##IN##_v##VB(EK_FAST_PARAMS(T, I)) {             \
    ek_fast_block<T, I, VB, 4, WB>(EK_FAST_ARGS);                                     \
  }

#define EK_INST_VEC(TN, T, IN, I, VB)                      \
  EK_INST_WARP(sum, false, TN, T, IN, I, VB, 4, false, )   \
  EK_INST_WARP(max, true, TN, T, IN, I, VB, 4, false, )    \
  EK_INST_SEG(sum, false, TN, T, IN, I, VB)                \
  EK_INST_SEG(max, true, TN, T, IN, I, VB)                 \
  EK_INST_COOP(sum, false, TN, T, IN, I, VB)                \
  EK_INST_COOP(max, true, TN, T, IN, I, VB)                 \
  EK_INST_BLOCK(2, TN, T, IN, I, VB)                       \
  EK_INST_BLOCK(4, TN, T, IN, I, VB)                       \
  EK_INST_BLOCK(8, TN, T, IN, I, VB)

#define EK_INST_F32(IN, I)                                    \
  EK_INST_VEC(f32, float, IN, I, 16)                          \
  EK_INST_VEC(f32, float, IN, I, 8)                           \
  EK_INST_VEC(f32, float, IN, I, 4)                           \
  EK_INST_WARP(sum, false, f32, float, IN, I, 16, 2, false, ) \
  EK_INST_WARP(sum, false, f32, float, IN, I, 16, 8, false, ) \
  EK_INST_WARP(sum, false, f32, float, IN, I, 16, 16, false, ) \
  EK_INST_WARP(sum, false, f32, float, IN, I, 16, 4, true, _h) \
  EK_INST_WARP(sum, false, f32, float, IN, I, 16, 8, true, _h)
#define EK_INST_16(TN, T, IN, I) \
  EK_INST_VEC(TN, T, IN, I, 16)  \
  EK_INST_VEC(TN, T, IN, I, 8)   \
  EK_INST_VEC(TN, T, IN, I, 4)   \
  EK_INST_VEC(TN, T, IN, I, 2)

EK_INST_F32(i32, int)
EK_INST_F32(i64, i64)
EK_INST_16(f16, f16, i32, int)
EK_INST_16(f16, f16, i64, i64)
EK_INST_16(bf16, bf16, i32, int)
EK_INST_16(bf16, bf16, i64, i64)
