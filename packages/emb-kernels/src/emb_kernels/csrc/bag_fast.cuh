// `fast`: our own EmbeddingBag design beyond the paper, for any number of tables in one launch.
//
//  * 16-byte loads (float4 / 8 halves) where the row width and alignment allow (VB template:
//    16, 8, 4 or 2 bytes per lane per row);
//  * U rows in flight per lane (unrolled, loads issued before any is used), and the ids of the
//    next U lookups loaded while the current rows are in flight;
//  * warp mode: a warp unit is (table, up to 32/G bags, 32-vector column slice); G lanes cover
//    a row (G = the row's vectors rounded up to a power of two, at most 32), so small dims put
//    several bags in one warp;
//  * block mode (long bags, or too few bags to fill the GPU): a block of WB warps (2, 4 or 8)
//    shares one (table, bag, slice); each warp takes every WB-th group of U lookups, then the
//    warps reduce through shared memory;
//  * optionally (HINT) the 16-byte row loads carry L1::no_allocate and L2::256B hints.
//
// Layout (TBE's): ids of all tables concatenated, offsets[t * B + b] .. offsets[t * B + b + 1]
// are bag b of table t (T * B + 1 entries). Output is [B, sum of dims] with row stride
// `out_stride` elements and table t's columns starting at meta out_col. Per-table meta
// (EK_META_STRIDE i64 each): weight element offset, rows, dim, out_col, first work unit,
// lanes per row G, column slices, vectors per row, bags per lane group K, table index
// (entries are in launch order, longest work unit first; first work units ascend), warps
// per bag S (split kernels only; 1 otherwise).
// Segmented warp mode (short bags, e.g. one-hot, or medium bags when a wave of warps would
// otherwise hold one bag each): a lane group walks K consecutive bags as one stream of ids, U
// rows in flight across bag boundaries, writing each bag when it ends; the next boundary is
// loaded one bag ahead, so the stream does not stop at a bag's start for its offsets.
// A bad id is recorded and skipped.
//
// This header holds the device code; the extern "C" kernels are in bag_fast.cu (the
// defaults), bag_fast_x.cu (the opt-in `split` / `seg_unroll=8` kernels: a separate
// module, so the default one does not grow) and bag_fast_async.cu (the `async_rows`
// kernels: rows gathered through a cp.async ring in shared memory, ek_gather_async).
#pragma once
#include "common.cuh"

#define EK_META_STRIDE 11
#define EK_M_WOFF 0
#define EK_M_ROWS 1
#define EK_M_DIM 2
#define EK_M_OUTCOL 3
#define EK_M_UNIT0 4
#define EK_M_LANES 5
#define EK_M_SLICES 6
#define EK_M_NVEC 7
#define EK_M_BAGS 8  // bags per lane group (segmented warp mode; 1 otherwise)
#define EK_COOP_U 8  // rows in flight in the coop path (kernels.FAST_COOP_UNROLL)
#define EK_M_TABLE 9  // the table's index (its offsets, bad-id reports); meta goes longest
                      // work unit first, so meta position and table index may differ
#define EK_M_SPLIT 10  // warps sharing one bag in the split kernels (`_u4s`, `_u8cs`); 1 = none
#define EK_SPLIT_U 4   // rows in flight per warp in the split path

// Table of work unit u: the last t with meta[t].unit0 <= u (binary search; T is small).
__device__ __forceinline__ int ek_find_table(const i64* meta, int num_tables, i64 u) {
  int lo = 0, hi = num_tables - 1;
  while (lo < hi) {
    int mid = (lo + hi + 1) >> 1;
    if (meta[mid * EK_META_STRIDE + EK_M_UNIT0] <= u) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  return lo;
}

// Id codes kept between groups (32-bit, to save registers; the host requires < 2^31 rows):
// >= 0 a row to read, -1 nothing to do (past the bag's end, or padding), -2 a bad id.
template <typename I>
__device__ __forceinline__ int ek_id_code(const I* __restrict__ indices, i64 e, i64 end,
                                          i64 rows, i64 padding_idx) {
  if (e >= end) return -1;
  const i64 id = (i64)indices[e];
  if (id < 0 || id >= rows) return -2;
  return id == padding_idx ? -1 : (int)id;
}

// Byte offset of row `code` (>= 0, < 2^31) of `row_bytes` (< 2^32): a 32 x 32 -> 64-bit
// multiply (one IMAD.WIDE.U32) instead of a 64 x 64 one in the segmented hot loop (in
// ek_gather it changed nothing measurable by ptxas but made 16-bit max kernels spill).
__device__ __forceinline__ u64 ek_row_offset(int code, i64 row_bytes) {
  return (u64)(u32)code * (u64)(u32)row_bytes;
}

// Accumulator start: 0 for sum/mean, -inf for max.
template <bool IS_MAX> __device__ __forceinline__ float ek_acc_init() {
  return IS_MAX ? ek_bits_to_float(0xFF800000u) : 0.f;
}

// Accumulate lookups e = first, first + 1, ... (< end) in groups of U, the next group being
// `step` positions further on: step = U for a warp that owns the bag, WB * U in block mode.
template <typename T, typename I, int VB, int U, bool IS_MAX, bool HINT>
__device__ __forceinline__ void ek_gather(
    const I* __restrict__ indices, const T* __restrict__ psw, const char* __restrict__ rows_base,
    i64 row_bytes, i64 rows, i64 padding_idx, i64 first, i64 end, i64 step, float* acc,
    i64& count, u64* err, int table) {
  constexpr int NE = EkElems<T, VB>::NE;
  int code[U];
#pragma unroll
  for (int u = 0; u < U; ++u) code[u] = ek_id_code(indices, first + u, end, rows, padding_idx);
  for (i64 e = first; e < end; e += step) {
    EkVec<VB> vals[U];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      if (code[u] >= 0) {
        vals[u] = ek_load_row<VB, HINT>(rows_base + (i64)code[u] * row_bytes);
      } else {
#pragma unroll
        for (int w = 0; w < (VB >= 4 ? VB / 4 : 1); ++w) vals[u].w[w] = 0;
      }
    }
    u32 live = 0;
#pragma unroll
    for (int u = 0; u < U; ++u) {
      if (code[u] >= 0) live |= 1u << u;
      if (code[u] == -2) ek_record_bad_id(err, table, e + u);
    }
    // ids of the next group, while this group's rows are in flight
    const i64 en = e + step;
#pragma unroll
    for (int u = 0; u < U; ++u) code[u] = ek_id_code(indices, en + u, end, rows, padding_idx);
#pragma unroll
    for (int u = 0; u < U; ++u) {
      if (live & (1u << u)) {
        const float scale = (psw != 0) ? to_f32(psw[e + u]) : 1.f;
#pragma unroll
        for (int j = 0; j < NE; ++j) {
          const float x = ek_elem<T, VB>(vals[u], j);
          if (IS_MAX) {
            acc[j] = fmaxf(acc[j], x);  // starts at -inf; count == 0 writes 0
          } else {
            acc[j] += scale * x;
          }
        }
        count += 1;
      }
    }
  }
}

template <typename T, int VB>
__device__ __forceinline__ void ek_write_out(T* out, i64 elem_offset, const float* acc,
                                             i64 count, int mode) {
  constexpr int NE = EkElems<T, VB>::NE;
  EkVec<VB> o;
#pragma unroll
  for (int w = 0; w < (VB >= 4 ? VB / 4 : 1); ++w) o.w[w] = 0;
#pragma unroll
  for (int j = 0; j < NE; ++j) {
    float v = acc[j];
    if (mode == EK_MODE_MEAN && count > 0) v = v / (float)count;
    if (mode == EK_MODE_MAX && count == 0) v = 0.f;
    ek_put<T, VB>(o, j, v);
  }
  ek_store<VB>((void*)(out + elem_offset), o);
}

// Bag `cur` of a lane group's id stream is complete (possibly empty): write it (where
// `write`) and restart the sums for the next one (the segmented and async gathers)
template <typename T, int VB, bool IS_MAX>
__device__ __forceinline__ void ek_flush_bag(bool write, T* __restrict__ out, i64 elem_offset,
                                             float* acc, int& count, int mode) {
  if (write) ek_write_out<T, VB>(out, elem_offset, acc, count, mode);
#pragma unroll
  for (int j = 0; j < EkElems<T, VB>::NE; ++j) acc[j] = ek_acc_init<IS_MAX>();
  count = 0;
}

template <typename T, typename I, int VB, int U, bool IS_MAX, bool HINT>
__device__ __forceinline__ void ek_fast_warp(
    const I* __restrict__ indices, const I* __restrict__ offsets, const T* __restrict__ weights,
    const T* __restrict__ psw, const i64* __restrict__ meta, int num_tables, i64 batch,
    i64 total_units, T* __restrict__ out, i64 out_stride, int mode, i64 padding_idx,
    u64* err) {
  constexpr int NE = EkElems<T, VB>::NE;
  const int lane = threadIdx.x & 31;
  const i64 unit = (i64)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (unit >= total_units) return;
  const int t = ek_find_table(meta, num_tables, unit);
  const i64* m = meta + t * EK_META_STRIDE;
  const int tab = (int)m[EK_M_TABLE];  // meta is ordered by work, not by table
  const int lanes = (int)m[EK_M_LANES];
  const i64 slices = m[EK_M_SLICES];
  const i64 nvec = m[EK_M_NVEC];
  const i64 local = unit - m[EK_M_UNIT0];
  const i64 slice = local % slices;
  const i64 bag = (local / slices) * (32 / lanes) + lane / lanes;
  const i64 vec = slice * 32 + (lane & (lanes - 1));
  if (bag >= batch || vec >= nvec) return;
  const i64 dim = m[EK_M_DIM];
  const i64 row_bytes = dim * (i64)sizeof(T);
  const char* rows_base = (const char*)(weights + m[EK_M_WOFF]);
  const i64 begin = (i64)offsets[tab * batch + bag];
  const i64 end = (i64)offsets[tab * batch + bag + 1];
  float acc[NE];
#pragma unroll
  for (int j = 0; j < NE; ++j) acc[j] = ek_acc_init<IS_MAX>();
  i64 count = 0;
  ek_gather<T, I, VB, U, IS_MAX, HINT>(indices, psw, rows_base + vec * VB, row_bytes,
                                       m[EK_M_ROWS], padding_idx, begin, end, U, acc, count,
                                       err, tab);
  ek_write_out<T, VB>(out, bag * out_stride + m[EK_M_OUTCOL] + vec * NE, acc, count, mode);
}

// Segmented warp mode: the lane group owns bags [bag0, bag1) of one table, whose ids are
// contiguous; rows are loaded U at a time regardless of bag boundaries and each bag's result
// is written when the stream passes its end (empty bags write zeros).
template <typename T, typename I, int VB, int U, bool IS_MAX>
__device__ __forceinline__ void ek_gather_segments(
    const I* __restrict__ indices, const I* __restrict__ offs, const T* __restrict__ psw,
    const char* __restrict__ rows_base, i64 row_bytes, i64 rows, i64 padding_idx, i64 bag0,
    i64 bag1, T* __restrict__ out, i64 out_stride, i64 out_col, int mode, u64* err,
    int table) {
  constexpr int NE = EkElems<T, VB>::NE;
  // Positions and bag numbers are 32-bit, relative to the group's first id and first bag
  // (the host launches this mode only for fewer than 2^31 ids and bags): fewer registers.
  const i64 first = (i64)offs[bag0];
  const int n = (int)((i64)offs[bag1] - first);
  const int nb = (int)(bag1 - bag0);
  const I* __restrict__ ids = indices + first;
  const T* __restrict__ w8 = psw != 0 ? psw + first : psw;
  int cur = 0;
  int cur_end = (int)((i64)offs[bag0 + 1] - first);
  // the end of the bag after `cur`, loaded one bag ahead so crossing a boundary does not
  // wait for an offsets load (`n` when `cur` is the group's last bag)
  int nxt_end = nb > 1 ? (int)((i64)offs[bag0 + 2] - first) : n;
  float acc[NE];
#pragma unroll
  for (int j = 0; j < NE; ++j) acc[j] = ek_acc_init<IS_MAX>();
  int count = 0;
  int code[U];
#pragma unroll
  for (int u = 0; u < U; ++u) code[u] = ek_id_code(ids, u, n, rows, padding_idx);
  for (int r = 0; r < n; r += U) {
    EkVec<VB> vals[U];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      if (code[u] >= 0) {
        vals[u] = ek_load<VB>(rows_base + ek_row_offset(code[u], row_bytes));
      } else {
#pragma unroll
        for (int w = 0; w < (VB >= 4 ? VB / 4 : 1); ++w) vals[u].w[w] = 0;
      }
    }
    u32 live = 0;
#pragma unroll
    for (int u = 0; u < U; ++u) {
      if (code[u] >= 0) live |= 1u << u;
      if (code[u] == -2) ek_record_bad_id(err, table, first + r + u);
    }
#pragma unroll
    for (int u = 0; u < U; ++u) code[u] = ek_id_code(ids, r + U + u, n, rows, padding_idx);
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int p = r + u;
      if (p < n) {
        while (p >= cur_end) {  // bag `cur` is complete (possibly empty): write it
          ek_flush_bag<T, VB, IS_MAX>(true, out, (bag0 + cur) * out_stride + out_col, acc, count,
                                      mode);
          cur += 1;
          cur_end = nxt_end;
          nxt_end = cur + 1 < nb ? (int)((i64)offs[bag0 + cur + 2] - first) : n;
        }
        if (live & (1u << u)) {
          const float scale = (w8 != 0) ? to_f32(w8[p]) : 1.f;
#pragma unroll
          for (int j = 0; j < NE; ++j) {
            const float x = ek_elem<T, VB>(vals[u], j);
            if (IS_MAX) {
              acc[j] = fmaxf(acc[j], x);  // starts at -inf; count == 0 writes 0
            } else {
              acc[j] += scale * x;
            }
          }
          count += 1;
        }
      }
    }
  }
  while (cur < nb) {  // the last bag with ids, then any empty bags after it
    ek_flush_bag<T, VB, IS_MAX>(true, out, (bag0 + cur) * out_stride + out_col, acc, count, mode);
    cur += 1;
  }
}

// Cooperative ids (the `coop` kernels, `_u8c`), for a warp that owns one bag of a table whose
// row slice is the whole warp: lane l loads position chunk + l (one coalesced load validates
// 32 ids), the next chunk is loaded while this one is consumed, and the row loop takes each id
// (and its per-sample weight) from its lane with __shfl_sync, U rows in flight. All 32 lanes
// run the loop (its control flow depends only on the bag, so it is warp-uniform); only
// `active` lanes (vec < nvec) load rows. No bag boundaries inside (fewer live registers than
// the segmented loop). Positions are 32-bit, relative to the bag's start.
template <typename T, typename I, int VB, int U, bool IS_MAX>
__device__ __forceinline__ int ek_gather_coop(
    const I* __restrict__ ids, const T* __restrict__ w8, const char* __restrict__ rows_base,
    i64 row_bytes, i64 rows, i64 padding_idx, int n, bool active, float* acc, u64* err,
    int table, i64 first) {
  static_assert(32 % U == 0, "U must divide 32");
  constexpr int NE = EkElems<T, VB>::NE;
  constexpr unsigned FULL = 0xffffffffu;
  const int lane = threadIdx.x & 31;
  int count = 0;
  int nxt_code = ek_id_code(ids, lane, n, rows, padding_idx);
  float nxt_w = (w8 != 0 && lane < n) ? to_f32(w8[lane]) : 1.f;
  for (int c0 = 0; c0 < n; c0 += 32) {
    const int mine = nxt_code;
    const float my_w = nxt_w;
    if (mine == -2) ek_record_bad_id(err, table, first + c0 + lane);
    const int q = c0 + 32 + lane;  // the next chunk, while this one is consumed
    nxt_code = ek_id_code(ids, q, n, rows, padding_idx);
    nxt_w = (w8 != 0 && q < n) ? to_f32(w8[q]) : 1.f;
    const int cn = n - c0 < 32 ? n - c0 : 32;
    for (int k = 0; k < cn; k += U) {  // ids past the bag's end are -1 (ek_id_code)
      int code[U];
      EkVec<VB> vals[U];
#pragma unroll
      for (int u = 0; u < U; ++u) code[u] = __shfl_sync(FULL, mine, k + u);
#pragma unroll
      for (int u = 0; u < U; ++u) {
        if (active && code[u] >= 0) {
          vals[u] = ek_load<VB>(rows_base + ek_row_offset(code[u], row_bytes));
        } else {
#pragma unroll
          for (int w = 0; w < (VB >= 4 ? VB / 4 : 1); ++w) vals[u].w[w] = 0;
        }
      }
      u32 live = 0;
#pragma unroll
      for (int u = 0; u < U; ++u) live |= code[u] >= 0 ? 1u << u : 0u;
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const float scale = (!IS_MAX && w8 != 0) ? __shfl_sync(FULL, my_w, k + u) : 1.f;
        if (live & (1u << u)) {
#pragma unroll
          for (int j = 0; j < NE; ++j) {
            const float x = ek_elem<T, VB>(vals[u], j);
            if (IS_MAX) {
              acc[j] = fmaxf(acc[j], x);  // starts at -inf; count == 0 writes 0
            } else {
              acc[j] += scale * x;
            }
          }
          count += 1;
        }
      }
    }
  }
  return count;
}

// Async path (the `async_rows` knob: kernels `_a8`, `_a16` in bag_fast_async.cu, sm_80+):
// a warp whose lane group is the whole warp (row slice of 32 16-byte vectors, e.g. 128
// fp32) walks its K >= 1 consecutive bags as one stream of ids, like the segmented path,
// but keeps D rows in flight through a ring of D slots per warp in shared memory instead of
// registers: row p is copied by `cp.async.cg` (16 bytes per lane, L2 only) into slot p % D,
// one commit group per row; the loop waits for the oldest group (wait_group D - 1: row r),
// accumulates it from shared memory (fp32), and issues row r + D into the freed slot. Each
// lane reads back only the 16 bytes it copied itself, so no warp barrier is needed (a
// thread's own cp.async writes are visible to it after its wait_group). Ids are loaded
// cooperatively (lane l holds the code of position 32c + l of the current chunk c and of
// chunk c + 1; the codes are taken with __shfl_sync), per-sample weights likewise; the chunk
// after next is loaded when the consumer enters a chunk (32 - D rows before it is needed).
// Every row group is committed, empty for padding, bad ids and positions past the stream,
// so the group count is uniform. All 32 lanes run the loop (control flow depends only on the
// stream); only `active` lanes (vec < nvec) copy, read and write. Positions are 32-bit.
#define EK_ASYNC_WARPS 4  // warps per block of the async kernels (kernels.FAST_ASYNC_WARPS)
#define EK_ASYNC_SLOT_BYTES 512  // one row slot of a warp: 32 lanes x 16 bytes

__device__ __forceinline__ u32 ek_smem_addr(const void* p) {
  u32 a;
  asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(a) : "l"(p));
  return a;
}
__device__ __forceinline__ void ek_cp_async16(u32 dst, const void* src) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(dst), "l"(src) : "memory");
}

__device__ __forceinline__ void ek_cp_async_commit() {
  asm volatile("cp.async.commit_group;" ::: "memory");
}
template <int N> __device__ __forceinline__ void ek_cp_async_wait() {
  asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
}
__device__ __forceinline__ EkVec<16> ek_ld_shared16(u32 a) {
  EkVec<16> v;
  asm volatile("ld.shared.v4.u32 {%0, %1, %2, %3}, [%4];"
               : "=r"(v.w[0]), "=r"(v.w[1]), "=r"(v.w[2]), "=r"(v.w[3])
               : "r"(a)
               : "memory");
  return v;
}

template <typename T, typename I, int D, bool IS_MAX>
__device__ __forceinline__ void ek_gather_async(
    const I* __restrict__ indices, const I* __restrict__ offs, const T* __restrict__ psw,
    const char* __restrict__ rows_base, i64 row_bytes, i64 rows, i64 padding_idx, i64 bag0,
    i64 bag1, bool active, T* __restrict__ out, i64 out_stride, i64 out_col, int mode,
    u64* err, int table) {
  static_assert(D >= 2 && D <= 16 && (D & (D - 1)) == 0, "D: a power of two, 2..16");
  constexpr int NE = EkElems<T, 16>::NE;
  constexpr unsigned FULL = 0xffffffffu;
  __shared__ __align__(16) u32 ring[EK_ASYNC_WARPS * D * EK_ASYNC_SLOT_BYTES / 4];
  const int lane = threadIdx.x & 31;
  const int warp = (threadIdx.x >> 5) & (EK_ASYNC_WARPS - 1);
  const u32 slot0 = ek_smem_addr(ring) + (u32)(warp * D * EK_ASYNC_SLOT_BYTES + lane * 16);
  const i64 first = (i64)offs[bag0];
  const int n = (int)((i64)offs[bag1] - first);
  const int nb = (int)(bag1 - bag0);
  const I* __restrict__ ids = indices + first;
  const T* __restrict__ w8 = psw != 0 ? psw + first : psw;
  int cur = 0;
  int cur_end = (int)((i64)offs[bag0 + 1] - first);
  int nxt_end = nb > 1 ? (int)((i64)offs[bag0 + 2] - first) : n;
  float acc[NE];
#pragma unroll
  for (int j = 0; j < NE; ++j) acc[j] = ek_acc_init<IS_MAX>();
  int count = 0;
  // codes (ek_id_code: -1 past the stream or padding, -2 bad) of chunks c and c + 1
  int id_a = ek_id_code(ids, lane, n, rows, padding_idx);
  int id_b = ek_id_code(ids, 32 + lane, n, rows, padding_idx);
  float w_a = (!IS_MAX && w8 != 0 && lane < n) ? to_f32(w8[lane]) : 1.f;
  float w_b = (!IS_MAX && w8 != 0 && 32 + lane < n) ? to_f32(w8[32 + lane]) : 1.f;
  if (id_a == -2) ek_record_bad_id(err, table, first + lane);
  if (id_b == -2) ek_record_bad_id(err, table, first + 32 + lane);
  u32 live = 0;  // slot s holds a row to add (the same in every lane)
#pragma unroll
  for (int q = 0; q < D; ++q) {  // prologue: rows 0 .. D - 1 (D <= 32: all in chunk 0)
    const int code = __shfl_sync(FULL, id_a, q);
    if (code >= 0) {  // warp-uniform: `code` comes from a shuffle
      live |= 1u << q;
      if (active) {
        ek_cp_async16(slot0 + q * EK_ASYNC_SLOT_BYTES,
                      rows_base + ek_row_offset(code, row_bytes));
      }
    }
    ek_cp_async_commit();
  }
  // rows r0 .. r0 + D - 1 per trip, unrolled: slot s is a constant, so slot addresses are
  // immediates and the live bit a constant mask; D divides 32, so chunks start at an r0
  for (int r0 = 0; r0 < n; r0 += D) {
    if (r0 > 0 && (r0 & 31) == 0) {  // the consumer enters chunk r0 / 32: load the one after
      id_a = id_b;
      w_a = w_b;
      const int p = r0 + 32 + lane;
      id_b = ek_id_code(ids, p, n, rows, padding_idx);
      w_b = (!IS_MAX && w8 != 0 && p < n) ? to_f32(w8[p]) : 1.f;
      if (id_b == -2) ek_record_bad_id(err, table, first + p);
    }
#pragma unroll
    for (int s = 0; s < D; ++s) {
      const int r = r0 + s;
      if (r >= n) break;  // warp-uniform
      while (r >= cur_end) {  // bag `cur` is complete (possibly empty): write it
        ek_flush_bag<T, 16, IS_MAX>(active, out, (bag0 + cur) * out_stride + out_col, acc, count,
                                    mode);
        cur += 1;
        cur_end = nxt_end;
        nxt_end = cur + 1 < nb ? (int)((i64)offs[bag0 + cur + 2] - first) : n;
      }
      const float scale = (!IS_MAX && w8 != 0) ? __shfl_sync(FULL, w_a, r & 31) : 1.f;
      ek_cp_async_wait<D - 1>();  // row r (the oldest of D groups) has landed
      if (live & (1u << s)) {
        if (active) {
          const EkVec<16> v = ek_ld_shared16(slot0 + s * EK_ASYNC_SLOT_BYTES);
#pragma unroll
          for (int j = 0; j < NE; ++j) {
            const float x = ek_elem<T, 16>(v, j);
            if (IS_MAX) {
              acc[j] = fmaxf(acc[j], x);  // starts at -inf; count == 0 writes 0
            } else {
              acc[j] += scale * x;
            }
          }
        }
        count += 1;
      }
      // row r + D into the freed slot (its id is in chunk r / 32 or the next). The lane's own
      // ld.shared of slot s above must be done before its cp.async overwrites the slot: the
      // hardware orders them in practice, __syncwarp() makes it a guarantee (memory ordering
      // among the warp's lanes; all lanes get here, n is the same for the whole warp).
      __syncwarp();
      const int q = r + D;
      const int code = __shfl_sync(FULL, (q >> 5) == (r >> 5) ? id_a : id_b, q & 31);
      live &= ~(1u << s);
      if (code >= 0) {
        live |= 1u << s;
        if (active) {
          ek_cp_async16(slot0 + s * EK_ASYNC_SLOT_BYTES,
                        rows_base + ek_row_offset(code, row_bytes));
        }
      }
      ek_cp_async_commit();
    }
  }
  while (cur < nb) {  // the last bag with ids, then any empty bags after it
    ek_flush_bag<T, 16, IS_MAX>(active, out, (bag0 + cur) * out_stride + out_col, acc, count, mode);
    cur += 1;
  }
}

// Split path (the `split` knob: kernels `_u4s`, `_u8cs`): the bags of a table with meta
// S > 1 are shared by S consecutive warps of one block (the host starts such a table's units
// at a multiple of S, S divides 8, so a group never straddles blocks). Warp `part` takes groups
// of EK_SPLIT_U ids part, part + S, ... of the bag (ek_gather's stride), then the S warps
// reduce through shared memory behind a named barrier (id 1 + the group's first warp, so
// groups of different tables in one block never share one) and the group's first warp writes.
// Every lane of the S warps reaches the barrier: only a whole padding group (first bag past
// the batch, the same for all S warps) returns early.
template <typename T, typename I, int VB, bool IS_MAX>
__device__ __forceinline__ void ek_split_bag(
    const I* __restrict__ indices, const I* __restrict__ offsets, const T* __restrict__ psw,
    const char* __restrict__ rows_base, const i64* __restrict__ m, int tab, int lanes, int S,
    i64 local, i64 batch, T* __restrict__ out, i64 out_stride, int mode, i64 padding_idx,
    u64* err) {
  constexpr int NE = EkElems<T, VB>::NE;
  __shared__ float red[8][32][NE];
  __shared__ int cnt[8][32];
  const int lane = threadIdx.x & 31;
  const int warp = (threadIdx.x >> 5) & 7;
  const int part = (int)(local % S);
  const i64 rest = local / S;
  const i64 slices = m[EK_M_SLICES];
  const i64 slice = rest % slices;
  const i64 bagw = (rest / slices) * (32 / lanes);
  if (bagw >= batch) return;  // a padding group: all S warps leave together
  const i64 bag = bagw + lane / lanes;
  const i64 vec = slice * 32 + (lane & (lanes - 1));
  const bool active = bag < batch && vec < m[EK_M_NVEC];
  float acc[NE];
#pragma unroll
  for (int j = 0; j < NE; ++j) acc[j] = ek_acc_init<IS_MAX>();
  i64 count = 0;
  if (active) {
    const i64 begin = (i64)offsets[tab * batch + bag];
    const i64 end = (i64)offsets[tab * batch + bag + 1];
    ek_gather<T, I, VB, EK_SPLIT_U, IS_MAX, false>(
        indices, psw, rows_base + vec * VB, m[EK_M_DIM] * (i64)sizeof(T), m[EK_M_ROWS],
        padding_idx, begin + (i64)part * EK_SPLIT_U, end, (i64)S * EK_SPLIT_U, acc, count, err,
        tab);
  }
#pragma unroll
  for (int j = 0; j < NE; ++j) red[warp][lane][j] = acc[j];
  cnt[warp][lane] = (int)count;
  const int w0 = warp - part;
  // non-.aligned form: lanes may arrive from diverged paths (sm_70+)
  asm volatile("barrier.sync %0, %1;" ::"r"(1 + w0), "r"(S * 32) : "memory");
  if (part == 0 && active) {
    int total = 0;
    for (int w = 0; w < S; ++w) total += cnt[w0 + w][lane];
#pragma unroll
    for (int j = 0; j < NE; ++j) {
      float v = ek_acc_init<IS_MAX>();
      for (int w = 0; w < S; ++w) {
        const float x = red[w0 + w][lane][j];
        v = IS_MAX ? fmaxf(v, x) : v + x;
      }
      acc[j] = v;
    }
    ek_write_out<T, VB>(out, bag * out_stride + m[EK_M_OUTCOL] + vec * NE, acc, total, mode);
  }
}

template <typename T, typename I, int VB, int U, bool IS_MAX, bool COOP = false,
          bool SPLIT = false, int ASYNC = 0, bool ASYNC_ONLY = false>
__device__ __forceinline__ void ek_fast_seg(
    const I* __restrict__ indices, const I* __restrict__ offsets, const T* __restrict__ weights,
    const T* __restrict__ psw, const i64* __restrict__ meta, int num_tables, i64 batch,
    i64 total_units, T* __restrict__ out, i64 out_stride, int mode, i64 padding_idx,
    u64* err) {
  constexpr int NE = EkElems<T, VB>::NE;
  const int lane = threadIdx.x & 31;
  const i64 unit = (i64)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (unit >= total_units) return;
  const int t = ek_find_table(meta, num_tables, unit);
  const i64* m = meta + t * EK_META_STRIDE;
  const int tab = (int)m[EK_M_TABLE];  // meta is ordered by work, not by table
  const int lanes = (int)m[EK_M_LANES];
  const i64 slices = m[EK_M_SLICES];
  const i64 nvec = m[EK_M_NVEC];
  const i64 kb = m[EK_M_BAGS];
  const i64 local = unit - m[EK_M_UNIT0];
  const i64 slice = local % slices;
  const i64 bag0 = ((local / slices) * (32 / lanes) + lane / lanes) * kb;
  const i64 vec = slice * 32 + (lane & (lanes - 1));
  if (SPLIT && m[EK_M_SPLIT] > 1) {  // warp-uniform (per table): S warps share each bag
    ek_split_bag<T, I, VB, IS_MAX>(indices, offsets, psw,
                                   (const char*)(weights + m[EK_M_WOFF]), m, tab, lanes,
                                   (int)m[EK_M_SPLIT], local, batch, out, out_stride, mode,
                                   padding_idx, err);
    return;
  }
  if constexpr (ASYNC > 0) {  // `async_rows` kernels (VB 16): D = ASYNC rows per warp in
    // shared memory for tables whose lane group is the whole warp (K >= 1 bags each)
    static_assert(VB == 16, "the async path copies 16 bytes per lane");
    if (lanes == 32) {  // warp-uniform (per table)
      if (bag0 >= batch) return;  // the same bag0 for all 32 lanes
      const i64 bag1 = bag0 + kb < batch ? bag0 + kb : batch;
      const bool active = vec < nvec;
      ek_gather_async<T, I, ASYNC, IS_MAX>(
          indices, offsets + tab * batch, psw,
          (const char*)(weights + m[EK_M_WOFF]) + (active ? vec * VB : 0),
          m[EK_M_DIM] * (i64)sizeof(T), m[EK_M_ROWS], padding_idx, bag0, bag1, active, out,
          out_stride, m[EK_M_OUTCOL] + vec * NE, mode, err, tab);
      return;
    }
    // `_a<D>o` kernels: the host launches them only when every table takes the ring, so the
    // U = 4 fallback below is not compiled in (its registers cost the ring kernel occupancy)
    if constexpr (ASYNC_ONLY) return;
  }
  if (COOP && lanes == 32 && kb == 1) {  // warp-uniform: the warp owns one bag (a table of
    // long bags, e.g. mlperf's 100 and 27 ids); lane groups of several bags stay below
    if (bag0 >= batch) return;  // the same bag0 for all 32 lanes
    const bool active = vec < nvec;
    const i64 first = (i64)offsets[tab * batch + bag0];
    const int n = (int)((i64)offsets[tab * batch + bag0 + 1] - first);
    float acc[NE];
#pragma unroll
    for (int j = 0; j < NE; ++j) acc[j] = ek_acc_init<IS_MAX>();
    const char* rows_base = (const char*)(weights + m[EK_M_WOFF]);
    const int count = ek_gather_coop<T, I, VB, EK_COOP_U, IS_MAX>(
        indices + first, psw != 0 ? psw + first : psw, rows_base + (active ? vec * VB : 0),
        m[EK_M_DIM] * (i64)sizeof(T), m[EK_M_ROWS], padding_idx, n, active, acc, err, tab,
        first);
    if (active) {
      ek_write_out<T, VB>(out, bag0 * out_stride + m[EK_M_OUTCOL] + vec * NE, acc, count, mode);
    }
    return;
  }
  if (bag0 >= batch || vec >= nvec) return;
  const i64 bag1 = bag0 + kb < batch ? bag0 + kb : batch;
  const char* rows_base = (const char*)(weights + m[EK_M_WOFF]);
  ek_gather_segments<T, I, VB, U, IS_MAX>(
      indices, offsets + tab * batch, psw, rows_base + vec * VB, m[EK_M_DIM] * (i64)sizeof(T),
      m[EK_M_ROWS], padding_idx, bag0, bag1, out, out_stride, m[EK_M_OUTCOL] + vec * NE, mode,
      err, tab);
}

// Block mode: one (table, bag, slice) per block of WB warps, lane = vector within the slice.
template <typename T, typename I, int VB, int U, int WB>
__device__ __forceinline__ void ek_fast_block(
    const I* __restrict__ indices, const I* __restrict__ offsets, const T* __restrict__ weights,
    const T* __restrict__ psw, const i64* __restrict__ meta, int num_tables, i64 batch,
    i64 total_units, T* __restrict__ out, i64 out_stride, int mode, i64 padding_idx,
    u64* err) {
  constexpr int NE = EkElems<T, VB>::NE;
  __shared__ float red[WB][32][NE];
  __shared__ long long cnt[WB];
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const i64 unit = (i64)blockIdx.x;
  if (unit >= total_units) return;  // uniform over the block
  const int t = ek_find_table(meta, num_tables, unit);
  const i64* m = meta + t * EK_META_STRIDE;
  const int tab = (int)m[EK_M_TABLE];  // meta is ordered by work, not by table
  const i64 slices = m[EK_M_SLICES];
  const i64 nvec = m[EK_M_NVEC];
  const i64 local = unit - m[EK_M_UNIT0];
  const i64 slice = local % slices;
  const i64 bag = local / slices;
  const i64 vec = slice * 32 + lane;
  const bool active = vec < nvec;
  const i64 dim = m[EK_M_DIM];
  const char* rows_base = (const char*)(weights + m[EK_M_WOFF]);
  const i64 begin = (i64)offsets[tab * batch + bag];
  const i64 end = (i64)offsets[tab * batch + bag + 1];
  float acc[NE];
#pragma unroll
  for (int j = 0; j < NE; ++j) acc[j] = 0.f;
  i64 count = 0;
  if (active) {
    ek_gather<T, I, VB, U, false, false>(indices, psw, rows_base + vec * VB, dim * (i64)sizeof(T),
                                  m[EK_M_ROWS], padding_idx, begin + (i64)warp * U, end,
                                  (i64)WB * U, acc, count, err, tab);
  }
#pragma unroll
  for (int j = 0; j < NE; ++j) red[warp][lane][j] = acc[j];
  // Every active lane of a warp counts the same lookups, and lane 0 is always active
  // (a slice holds at least one vector of the row).
  if (lane == 0) cnt[warp] = count;
  __syncthreads();
  if (warp == 0 && active) {
    i64 total = 0;
    for (int w = 0; w < WB; ++w) total += cnt[w];
#pragma unroll
    for (int j = 0; j < NE; ++j) {
      float s = 0.f;
      for (int w = 0; w < WB; ++w) s += red[w][lane][j];
      acc[j] = s;
    }
    ek_write_out<T, VB>(out, bag * out_stride + m[EK_M_OUTCOL] + vec * NE, acc, total, mode);
  }
}

#define EK_FAST_PARAMS(T, I)                                                                  \
  const I *__restrict__ indices, const I *__restrict__ offsets,                               \
      const T *__restrict__ weights, const T *__restrict__ psw, const i64 *__restrict__ meta, \
      int num_tables, i64 batch, i64 total_units, T *__restrict__ out, i64 out_stride,        \
      int mode, i64 padding_idx, u64 *err
#define EK_FAST_ARGS                                                                          \
  indices, offsets, weights, psw, meta, num_tables, batch, total_units, out, out_stride, mode, \
      padding_idx, err

#ifndef EK_COOP_MIN_BLOCKS
// 3 blocks of 256 per SM (<= 80 registers): 24 warps x 8 rows in flight per SM, against the
// U = 4 segmented kernel's 32 x 4. sm_90 ptxas: the fp32 16-byte sum kernel needs 96 without
// a bound (2 blocks: 16 x 8, no more rows in flight than before), 80 with 40 B of spill
// stores, 64 with 132 B; the bound is a guess to measure, not a measured best
#define EK_COOP_MIN_BLOCKS 3
#endif
