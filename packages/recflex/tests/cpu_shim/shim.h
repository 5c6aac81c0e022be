// A CPU stand-in for the few CUDA features the generated kernel uses, so the tests can run
// the *generated source itself* on a machine without a GPU: one std::thread per CUDA thread
// of a block (256), __syncthreads as a block barrier, __shfl_down_sync through a per-warp
// exchange buffer and warp barrier, atomics through std::atomic_ref. Blocks run one after
// another, so `__shared__` can be a static. Slow, small inputs only.
#pragma once
#include <atomic>
#include <barrier>
#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

#define RECFLEX_CPU_SHIM 1
#define __global__
#define __device__
#define __forceinline__ inline
#define __noinline__
#define __restrict__
#define __launch_bounds__(...)
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))

struct dim3_ { unsigned x = 0, y = 0, z = 0; };
inline thread_local dim3_ threadIdx, blockIdx;
struct float4 { float x, y, z, w; };
struct float2 { float x, y; };
struct int2 { int x, y; };
struct uint2 { unsigned int x, y; };
inline float4 make_float4(float a, float b, float c, float d) { return {a, b, c, d}; }
inline float2 make_float2(float a, float b) { return {a, b}; }
template <class T> inline T __ldg(const T* p) { return *p; }
template <class T> inline T min(T a, T b) { return b < a ? b : a; }
template <class T> inline T max(T a, T b) { return a < b ? b : a; }

inline std::barrier<>* rf_block_barrier = nullptr;
inline std::barrier<>* rf_warp_barrier[8] = {};
inline float rf_xchg[8][32];

inline void __syncthreads() { rf_block_barrier->arrive_and_wait(); }
inline void __syncwarp(unsigned = 0xffffffffu) { rf_warp_barrier[threadIdx.x / 32]->arrive_and_wait(); }
inline float __shfl_down_sync(unsigned, float v, int off) {
    const int w = threadIdx.x / 32, l = threadIdx.x % 32;
    rf_xchg[w][l] = v;
    rf_warp_barrier[w]->arrive_and_wait();
    const float r = (l + off < 32) ? rf_xchg[w][l + off] : v;
    rf_warp_barrier[w]->arrive_and_wait();
    return r;
}
inline int atomicOr(int* p, int v) { return std::atomic_ref<int>(*p).fetch_or(v); }
inline float atomicAdd(float* p, float v) { return std::atomic_ref<float>(*p).fetch_add(v); }
inline long long clock64() { return 0; }
inline float rf_h2f(unsigned short h) {  // IEEE half -> float, normals, subnormals, inf/nan
    const unsigned s = (h >> 15) & 1, e = (h >> 10) & 31, m = h & 1023;
    float f;
    if (e == 0) f = m * (1.0f / 16777216.0f);
    else if (e == 31) f = m ? __builtin_nanf("") : __builtin_inff();
    else {
        unsigned bits = ((e + 112) << 23) | (m << 13);
        std::memcpy(&f, &bits, 4);
    }
    return s ? -f : f;
}
