// RecFlex schedule templates: one device-function template per schedule.
//
// The code generator prepends the typedefs `idx_t` (int or long long), `w_t` (float, or
// unsigned short holding fp16 bits), the row stride `RECFLEX_S` (sum of dims, in floats)
// and then instantiates these templates, one instantiation per distinct schedule of a plan.
// Every template runs in 256-thread blocks, writes pooled sums (fp32) into columns
// [col, col + DIM) of the concatenated output and computes row addresses in 64-bit.
// Ids outside [0, rows) are skipped and flagged in *err (never read out of bounds).
// No template waits on another block: there is no inter-block barrier anywhere.

struct Feat {
    const w_t* __restrict__ table;    // this feature's table, rows x DIM
    long long rows;                   // rows of the table (id bound)
    const idx_t* __restrict__ offs;   // this feature's B+1 offsets into idx (global positions)
    const idx_t* __restrict__ idx;    // every feature's ids, concatenated
    float* __restrict__ out;          // output row 0, at this feature's first column
    const int2* __restrict__ work;    // MultiBlockPerSample: (sample, tile) pairs of this feature
    int* err;                         // bit 0: an id was out of range
    int B, bid, nblocks, work_n, dim;
};

#ifndef RECFLEX_CPU_SHIM  // the tests' CPU shim brings its own conversion
__device__ __forceinline__ float rf_h2f(unsigned short h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}
#endif

// V consecutive weights starting at p (aligned to V elements) as floats.
template <int V>
__device__ __forceinline__ void rf_ld(const float* p, float* r) {
    if constexpr (V == 4) {
        const float4 t = __ldg(reinterpret_cast<const float4*>(p));
        r[0] = t.x; r[1] = t.y; r[2] = t.z; r[3] = t.w;
    } else if constexpr (V == 2) {
        const float2 t = __ldg(reinterpret_cast<const float2*>(p));
        r[0] = t.x; r[1] = t.y;
    } else {
        r[0] = __ldg(p);
    }
}

template <int V>
__device__ __forceinline__ void rf_ld(const unsigned short* p, float* r) {
    if constexpr (V == 4) {
        const uint2 t = __ldg(reinterpret_cast<const uint2*>(p));
        r[0] = rf_h2f(t.x & 0xffffu); r[1] = rf_h2f(t.x >> 16);
        r[2] = rf_h2f(t.y & 0xffffu); r[3] = rf_h2f(t.y >> 16);
    } else if constexpr (V == 2) {
        const unsigned int t = __ldg(reinterpret_cast<const unsigned int*>(p));
        r[0] = rf_h2f(t & 0xffffu); r[1] = rf_h2f(t >> 16);
    } else {
        r[0] = rf_h2f(__ldg(p));
    }
}

// Store V floats at p; OA is the output alignment (floats) every user of the function has.
template <int V, int OA>
__device__ __forceinline__ void rf_st(float* p, const float* r) {
    constexpr int W = V < OA ? V : OA;
    if constexpr (W == 4) {
        *reinterpret_cast<float4*>(p) = make_float4(r[0], r[1], r[2], r[3]);
    } else if constexpr (W == 2) {
#pragma unroll
        for (int k = 0; k < V; k += 2) *reinterpret_cast<float2*>(p + k) = make_float2(r[k], r[k + 1]);
    } else {
#pragma unroll
        for (int k = 0; k < V; ++k) p[k] = r[k];
    }
}

__device__ __forceinline__ bool rf_id_ok(long long id, long long rows, int* err) {
    if ((unsigned long long)id < (unsigned long long)rows) return true;
    atomicOr(err, 1);
    return false;
}

// First i in [0, n) with a[i] >= x (n if none).
__device__ __forceinline__ int rf_lower_bound(const idx_t* a, int n, long long x) {
    int lo = 0, hi = n;
    while (lo < hi) {
        const int mid = (lo + hi) >> 1;
        if ((long long)a[mid] < x) lo = mid + 1; else hi = mid;
    }
    return lo;
}

// First i in [0, n) with a[i] > x (n if none).
__device__ __forceinline__ int rf_upper_bound(const idx_t* a, int n, long long x) {
    int lo = 0, hi = n;
    while (lo < hi) {
        const int mid = (lo + hi) >> 1;
        if ((long long)a[mid] <= x) lo = mid + 1; else hi = mid;
    }
    return lo;
}

// ---------------------------------------------------------------------------------- zero fill
// A feature with no lookups in this batch gets no schedule blocks; a few of these blocks
// write its exact zeros instead.
__device__ __forceinline__ void rf_zero(const Feat& F) {
    const long long total = (long long)F.B * F.dim;
    for (long long e = (long long)F.bid * 256 + threadIdx.x; e < total; e += (long long)F.nblocks * 256) {
        const long long s = e / F.dim;
        F.out[s * RECFLEX_S + (e - s * F.dim)] = 0.0f;
    }
}

// ---------------------------------------------------------------------------------- OneHot
// One block (MULTI: min(tiles, max concurrent) blocks) walks tiles of 256 samples. A work
// item is U consecutive columns of one sample's row; thread t takes items t, t+256, ...
// Bags of any length are summed (one-hot data has one id per present sample).
template <int DIM, int U, bool MULTI, int OA>
__device__ __forceinline__ void t_onehot(const Feat& F, unsigned char*) {
    constexpr int V = (U % 4 == 0) ? 4 : ((U % 2 == 0) ? 2 : 1);
    constexpr int NC = DIM / U;
    const int tiles = (F.B + 255) / 256;
    const int t0 = MULTI ? F.bid : 0, ts = MULTI ? F.nblocks : 1;
    for (int t = t0; t < tiles; t += ts) {
        const int s0 = t * 256;
        const int items = min(256, F.B - s0) * NC;
        for (int e = threadIdx.x; e < items; e += 256) {
            const int s = s0 + e / NC, c = (e % NC) * U;
            float acc[U];
#pragma unroll
            for (int k = 0; k < U; ++k) acc[k] = 0.0f;
            const idx_t pe = F.offs[s + 1];
            for (idx_t p = F.offs[s]; p < pe; ++p) {
                const long long id = (long long)F.idx[p];
                if (rf_id_ok(id, F.rows, F.err)) {
                    const w_t* row = F.table + id * DIM + c;
#pragma unroll
                    for (int k = 0; k < U; k += V) {
                        float r[V];
                        rf_ld<V>(row + k, r);
#pragma unroll
                        for (int j = 0; j < V; ++j) acc[k + j] += r[j];
                    }
                }
            }
            float* o = F.out + (long long)s * RECFLEX_S + c;
#pragma unroll
            for (int k = 0; k < U; k += V) rf_st<V, OA>(o + k, acc + k);
        }
    }
}

// Accumulate ITEMS lookups starting at position q (all < pe guaranteed by the caller when
// FULL, else checked) into acc[NCH][V] for columns (lane + k*X)*V.
template <int DIM, int V, int X, int NCH, int ITEMS, bool FULL>
__device__ __forceinline__ void rf_gather(const Feat& F, long long q, long long pe, int lane,
                                          float (&acc)[NCH][V]) {
    long long ids[ITEMS];
#pragma unroll
    for (int i = 0; i < ITEMS; ++i) ids[i] = (FULL || q + i < pe) ? (long long)F.idx[q + i] : -1;
#pragma unroll
    for (int i = 0; i < ITEMS; ++i) {
        if ((FULL || q + i < pe) && rf_id_ok(ids[i], F.rows, F.err)) {
            const w_t* row = F.table + ids[i] * DIM;
#pragma unroll
            for (int k = 0; k < NCH; ++k) {
                const int c = (lane + k * X) * V;
                if (NCH * X * V == DIM || c < DIM) {
                    float r[V];
                    rf_ld<V>(row + c, r);
#pragma unroll
                    for (int j = 0; j < V; ++j) acc[k][j] += r[j];
                }
            }
        }
    }
}

template <int DIM, int V, int X, int NCH, int OA>
__device__ __forceinline__ void rf_store_row(const Feat& F, int s, int lane, float (&acc)[NCH][V]) {
    float* o = F.out + (long long)s * RECFLEX_S;
#pragma unroll
    for (int k = 0; k < NCH; ++k) {
        const int c = (lane + k * X) * V;
        if (NCH * X * V == DIM || c < DIM) rf_st<V, OA>(o + c, acc[k]);
    }
}

// ---------------------------------------------------------------------------------- WarpPerSample
// Y = 256/X samples per block; X threads own one sample, stride over its vector columns and
// walk its lookups in order (ITEMS unrolled). No cross-thread reduction, no barrier.
template <int DIM, int V, int ITEMS, int X, int OA>
__device__ __forceinline__ void t_wps(const Feat& F, unsigned char*) {
    constexpr int Y = 256 / X;
    constexpr int NCH = (DIM + X * V - 1) / (X * V);
    const int g = threadIdx.x / X, lane = threadIdx.x % X;
    const int s = F.bid * Y + g;
    if (s >= F.B) return;
    float acc[NCH][V];
#pragma unroll
    for (int k = 0; k < NCH; ++k)
#pragma unroll
        for (int j = 0; j < V; ++j) acc[k][j] = 0.0f;
    const long long pe = (long long)F.offs[s + 1];
    long long q = (long long)F.offs[s];
    for (; q + ITEMS <= pe; q += ITEMS) rf_gather<DIM, V, X, NCH, ITEMS, true>(F, q, pe, lane, acc);
    if (q < pe) rf_gather<DIM, V, X, NCH, ITEMS, false>(F, q, pe, lane, acc);
    rf_store_row<DIM, V, X, NCH, OA>(F, s, lane, acc);
}

// ---------------------------------------------------------------------------------- OneBlockMultiSample
// Z = 256/(X*Y) samples per block. For one sample, Y rows of threads split the lookups
// (row r takes ITEMS consecutive lookups every Y*ITEMS) and X threads cover the columns;
// then a tree over the Y rows (warp shuffles when X*Y <= 32, shared memory otherwise).
template <int DIM, int V, int ITEMS, int X, int Y, int OA>
__device__ __forceinline__ void t_obms(const Feat& F, unsigned char* smem) {
    constexpr int Z = 256 / (X * Y);
    constexpr int NCH = (DIM + X * V - 1) / (X * V);
    const int z = threadIdx.x / (X * Y), r = (threadIdx.x / X) % Y, lane = threadIdx.x % X;
    const int s = F.bid * Z + z;
    float acc[NCH][V];
#pragma unroll
    for (int k = 0; k < NCH; ++k)
#pragma unroll
        for (int j = 0; j < V; ++j) acc[k][j] = 0.0f;
    if (s < F.B) {
        const long long pe = (long long)F.offs[s + 1];
        for (long long q = (long long)F.offs[s] + r * ITEMS; q < pe; q += Y * ITEMS) {
            if (q + ITEMS <= pe) rf_gather<DIM, V, X, NCH, ITEMS, true>(F, q, pe, lane, acc);
            else rf_gather<DIM, V, X, NCH, ITEMS, false>(F, q, pe, lane, acc);
        }
    }
    if constexpr (X * Y <= 32) {
#pragma unroll
        for (int off = X * Y / 2; off >= X; off >>= 1)
#pragma unroll
            for (int k = 0; k < NCH; ++k)
#pragma unroll
                for (int j = 0; j < V; ++j) acc[k][j] += __shfl_down_sync(0xffffffffu, acc[k][j], off);
    } else {
        float* buf = reinterpret_cast<float*>(smem);  // [NCH*V][256]
#pragma unroll
        for (int k = 0; k < NCH; ++k)
#pragma unroll
            for (int j = 0; j < V; ++j) buf[(k * V + j) * 256 + threadIdx.x] = acc[k][j];
        __syncthreads();
#pragma unroll
        for (int h = Y / 2; h >= 1; h >>= 1) {
            if (r < h) {
#pragma unroll
                for (int k = 0; k < NCH; ++k)
#pragma unroll
                    for (int j = 0; j < V; ++j) {
                        acc[k][j] += buf[(k * V + j) * 256 + threadIdx.x + h * X];
                        buf[(k * V + j) * 256 + threadIdx.x] = acc[k][j];
                    }
            }
            __syncthreads();
        }
    }
    if (r == 0 && s < F.B) rf_store_row<DIM, V, X, NCH, OA>(F, s, lane, acc);
}

// ---------------------------------------------------------------------------------- MultiBlockPerSample
// A sample is cut into tiles of ITEMS*Y lookups (Y = 256/X); a host-built list of
// (sample, tile) pairs is shared out to min(tiles, max concurrent) blocks. Each tile is
// reduced in shared memory and added atomically into the (pre-zeroed) output.
template <int DIM, int V, int ITEMS, int X>
__device__ __forceinline__ void t_mbps(const Feat& F, unsigned char* smem) {
    constexpr int Y = 256 / X;
    constexpr int NCH = (DIM + X * V - 1) / (X * V);
    constexpr int TL = ITEMS * Y;
    const int r = threadIdx.x / X, lane = threadIdx.x % X;
    float* buf = reinterpret_cast<float*>(smem);  // [NCH*V][256]
    for (int w = F.bid; w < F.work_n; w += F.nblocks) {
        const int2 st = F.work[w];
        const long long pb = (long long)F.offs[st.x] + (long long)st.y * TL;
        const long long pe = min((long long)F.offs[st.x + 1], pb + TL);
        float acc[NCH][V];
#pragma unroll
        for (int k = 0; k < NCH; ++k)
#pragma unroll
            for (int j = 0; j < V; ++j) acc[k][j] = 0.0f;
        const long long q = pb + r * ITEMS;
        if (q + ITEMS <= pe) rf_gather<DIM, V, X, NCH, ITEMS, true>(F, q, pe, lane, acc);
        else if (q < pe) rf_gather<DIM, V, X, NCH, ITEMS, false>(F, q, pe, lane, acc);
#pragma unroll
        for (int k = 0; k < NCH; ++k)
#pragma unroll
            for (int j = 0; j < V; ++j) buf[(k * V + j) * 256 + threadIdx.x] = acc[k][j];
        __syncthreads();
#pragma unroll
        for (int h = Y / 2; h >= 1; h >>= 1) {
            if (r < h) {
#pragma unroll
                for (int k = 0; k < NCH; ++k)
#pragma unroll
                    for (int j = 0; j < V; ++j) {
                        acc[k][j] += buf[(k * V + j) * 256 + threadIdx.x + h * X];
                        buf[(k * V + j) * 256 + threadIdx.x] = acc[k][j];
                    }
            }
            __syncthreads();
        }
        if (r == 0) {
            float* o = F.out + (long long)st.x * RECFLEX_S;
#pragma unroll
            for (int k = 0; k < NCH; ++k) {
                const int c = (lane + k * X) * V;
                if (NCH * X * V == DIM || c < DIM)
#pragma unroll
                    for (int j = 0; j < V; ++j) atomicAdd(o + c + j, acc[k][j]);
            }
        }
        __syncthreads();  // buf is reused by the next pair
    }
}

// ---------------------------------------------------------------------------------- ReduceByKey
// The feature's lookups, flattened in sample order, are cut into tiles of T = R*ITEMS
// (R = 256*SD/DIM rows of C = DIM/SD threads, each thread SD columns). A tile's block owns
// the samples whose first lookup lies in the tile (the last tile also owns the trailing
// empty samples) and reduces their lookups, R at a time, with a segmented Hillis-Steele
// scan keyed by sample, carrying an unfinished sample from one step to the next. Owning
// whole samples means no block ever waits on another one (no look-back, no spin barrier).
template <int DIM, int SD, int ITEMS, int OA>
__device__ __forceinline__ void t_rbk(const Feat& F, unsigned char* smem) {
    constexpr int C = DIM / SD, R = 256 / C, T = R * ITEMS;
    constexpr int V = (SD % 4 == 0) ? 4 : ((SD % 2 == 0) ? 2 : 1);
    const int r = threadIdx.x / C, c = threadIdx.x % C;
    float* buf = reinterpret_cast<float*>(smem);   // [SD][256]
    int* segs = reinterpret_cast<int*>(buf + SD * 256);  // [R]
    float* carry = reinterpret_cast<float*>(segs + R);   // [SD][C]
    int* carry_seg = reinterpret_cast<int*>(carry + SD * C);
    const long long base = (long long)F.offs[0];
    const long long nnz = (long long)F.offs[F.B] - base;
    const int tiles = (int)((nnz + T - 1) / T);
    for (int t = F.bid; t < tiles; t += F.nblocks) {
        const int sb = rf_lower_bound(F.offs, F.B, base + (long long)t * T);
        const int se = (t == tiles - 1) ? F.B : rf_lower_bound(F.offs, F.B, base + (long long)(t + 1) * T);
        // exact zeros for the empty samples this tile owns
        for (int i = threadIdx.x; i < (se - sb) * C; i += 256) {
            const int s = sb + i / C;
            if (F.offs[s] == F.offs[s + 1]) {
                float z[SD];
#pragma unroll
                for (int j = 0; j < SD; ++j) z[j] = 0.0f;
                float* o = F.out + (long long)s * RECFLEX_S + (i % C) * SD;
#pragma unroll
                for (int j = 0; j < SD; j += V) rf_st<V, OA>(o + j, z + j);
            }
        }
        const long long p0 = (long long)F.offs[sb], p1 = (long long)F.offs[se];
        if (threadIdx.x == 0) *carry_seg = -1;
        __syncthreads();
        for (long long q0 = p0; q0 < p1; q0 += R) {
            const long long p = q0 + r;
            const bool valid = p < p1;
            const int seg = valid ? sb + rf_upper_bound(F.offs + sb, se - sb, p) - 1 : -1;
            float v[SD];
#pragma unroll
            for (int j = 0; j < SD; ++j) v[j] = 0.0f;
            if (valid) {
                const long long id = (long long)F.idx[p];
                if (rf_id_ok(id, F.rows, F.err)) {
                    const w_t* row = F.table + id * DIM + c * SD;
#pragma unroll
                    for (int j = 0; j < SD; j += V) rf_ld<V>(row + j, v + j);
                }
            }
            if (c == 0) segs[r] = seg;
#pragma unroll
            for (int j = 0; j < SD; ++j) buf[j * 256 + threadIdx.x] = v[j];
            __syncthreads();
            for (int d = 1; d < R; d <<= 1) {
                const bool take = r >= d && segs[r - d] == seg;
                float add[SD];
#pragma unroll
                for (int j = 0; j < SD; ++j) add[j] = take ? buf[j * 256 + threadIdx.x - d * C] : 0.0f;
                __syncthreads();
#pragma unroll
                for (int j = 0; j < SD; ++j) {
                    v[j] += add[j];
                    buf[j * 256 + threadIdx.x] = v[j];
                }
                __syncthreads();
            }
            if (valid && seg == *carry_seg) {
#pragma unroll
                for (int j = 0; j < SD; ++j) v[j] += carry[j * C + c];
            }
            const bool last = valid && (r == R - 1 || p + 1 >= p1 || segs[r + 1] != seg);
            __syncthreads();  // the carry is read by all before it is replaced
            if (last) {
                if (p + 1 == (long long)F.offs[seg + 1]) {
                    float* o = F.out + (long long)seg * RECFLEX_S + c * SD;
#pragma unroll
                    for (int j = 0; j < SD; j += V) rf_st<V, OA>(o + j, v + j);
                } else {
#pragma unroll
                    for (int j = 0; j < SD; ++j) carry[j * C + c] = v[j];
                    if (c == 0) *carry_seg = seg;
                }
            }
            __syncthreads();
        }
    }
}
