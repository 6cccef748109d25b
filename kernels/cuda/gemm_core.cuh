// The GEMM main loops, shared by gemm.cu (dense operands) and conv.cu
// (implicit im2col). A kernel is a main loop plus three small policies: how
// to read an element of A, how to read an element of B, and how to store an
// element of C (with the bias, scale and ReLU epilogue). The policies hide
// layout (transposes, convolution windows) so the loops are written once.
//
// Operand policy interface:
//   bool mn_contig()              true when neighbouring m (or n) are
//                                 neighbours in memory; the loops then spread
//                                 threads along m/n so loads coalesce. Uniform
//                                 across the grid, so branching on it costs
//                                 little, and one kernel serves both layouts
//                                 (a kernel per transpose pair made gemm.cu
//                                 take 8x longer to compile, which every
//                                 process pays at first use).
//   void begin(int mn)            called once per thread when mn_contig(): each
//                                 thread's m/n is then fixed for the whole loop
//   T get(int mn, int k)          the element, or zero outside the matrix
// Store policy: void store(int m, int n, float acc), ignoring out-of-range m/n.
#pragma once
#include "common.cuh"

// Dense matrix operand. For A the "mn" coordinate is m, for B it is n.
// contig: element (mn, k) at p[k*ld + mn], else at p[mn*ld + k].
template <typename T>
struct DenseOperand {
    const T* p;
    i64 ld;
    int mn_size;
    int k_size;
    bool contig;
    __device__ __forceinline__ bool mn_contig() const { return contig; }
    __device__ __forceinline__ void begin(int) {}
    __device__ __forceinline__ T get(int mn, int k) const {
        if (mn >= mn_size || k >= k_size) return T();
        return contig ? p[(i64)k * ld + mn] : p[(i64)mn * ld + k];
    }
};

// ---------------------------------------------------------------- SIMT
// 128x128 block tile, K in steps of 8, 256 threads each owning an 8x8 patch
// of C (two 4x4 quadrants 64 apart, so each shared-memory read is a float4
// that a half-warp shares). Tiles are staged in shared memory as f32 whatever
// the storage type, and the next tile is fetched into registers while the
// current one is multiplied.
#define SIMT_BM 128
#define SIMT_BN 128
#define SIMT_BK 8
#define SIMT_THREADS 256
#define SIMT_LOADS (SIMT_BM * SIMT_BK / SIMT_THREADS)
// Padding the rows by 4 floats spreads the k-major stores of a warp over all
// banks while keeping float4 alignment.
#define SIMT_LD (SIMT_BM + 4)

// Tile coordinates of load i of thread tid in a BMN x BK tile.
template <int BMN, int BK>
__device__ __forceinline__ void tile_coords(bool mn_contig, int tid, int i, int threads, int& mn, int& k) {
    int e = tid + i * threads;
    if (mn_contig) {
        mn = e % BMN;
        k = e / BMN;
    } else {
        k = e % BK;
        mn = e / BK;
    }
}

template <class A, class B, class S>
__device__ __forceinline__ void gemm_simt_body(int K, A& a, B& b, S& s) {
    __shared__ __align__(16) float as[SIMT_BK][SIMT_LD];
    __shared__ __align__(16) float bs[SIMT_BK][SIMT_LD];
    const int tid = threadIdx.x;
    const int m0 = blockIdx.y * SIMT_BM;
    const int n0 = blockIdx.x * SIMT_BN;

    // Each thread's tile coordinates are fixed functions of tid and the
    // load index; recomputing them is cheaper than holding them in registers.
#define SIMT_A(i, mn, k) int mn, k; tile_coords<SIMT_BM, SIMT_BK>(a.mn_contig(), tid, i, SIMT_THREADS, mn, k)
#define SIMT_B(i, mn, k) int mn, k; tile_coords<SIMT_BN, SIMT_BK>(b.mn_contig(), tid, i, SIMT_THREADS, mn, k)
    {
        SIMT_A(0, amn, ak);
        SIMT_B(0, bmn, bk);
        if (a.mn_contig()) a.begin(m0 + amn);
        if (b.mn_contig()) b.begin(n0 + bmn);
    }

    float ra[SIMT_LOADS], rb[SIMT_LOADS];
#pragma unroll
    for (int i = 0; i < SIMT_LOADS; ++i) {
        SIMT_A(i, amn, ak);
        SIMT_B(i, bmn, bk);
        ra[i] = to_f32(a.get(m0 + amn, ak));
        rb[i] = to_f32(b.get(n0 + bmn, bk));
    }

    float acc[8][8];
#pragma unroll
    for (int i = 0; i < 8; ++i)
#pragma unroll
        for (int j = 0; j < 8; ++j) acc[i][j] = 0.0f;

    const int tx = tid % 16;
    const int ty = tid / 16;
    for (int k0 = 0; k0 < K; k0 += SIMT_BK) {
#pragma unroll
        for (int i = 0; i < SIMT_LOADS; ++i) {
            SIMT_A(i, amn, ak);
            SIMT_B(i, bmn, bk);
            as[ak][amn] = ra[i];
            bs[bk][bmn] = rb[i];
        }
        __syncthreads();
        if (k0 + SIMT_BK < K) {
#pragma unroll
            for (int i = 0; i < SIMT_LOADS; ++i) {
                SIMT_A(i, amn, ak);
                SIMT_B(i, bmn, bk);
                ra[i] = to_f32(a.get(m0 + amn, k0 + SIMT_BK + ak));
                rb[i] = to_f32(b.get(n0 + bmn, k0 + SIMT_BK + bk));
            }
        }
#pragma unroll
        for (int kk = 0; kk < SIMT_BK; ++kk) {
            float4 a_lo = *reinterpret_cast<const float4*>(&as[kk][ty * 4]);
            float4 a_hi = *reinterpret_cast<const float4*>(&as[kk][64 + ty * 4]);
            float4 b_lo = *reinterpret_cast<const float4*>(&bs[kk][tx * 4]);
            float4 b_hi = *reinterpret_cast<const float4*>(&bs[kk][64 + tx * 4]);
            float av[8] = {a_lo.x, a_lo.y, a_lo.z, a_lo.w, a_hi.x, a_hi.y, a_hi.z, a_hi.w};
            float bv[8] = {b_lo.x, b_lo.y, b_lo.z, b_lo.w, b_hi.x, b_hi.y, b_hi.z, b_hi.w};
#pragma unroll
            for (int i = 0; i < 8; ++i)
#pragma unroll
                for (int j = 0; j < 8; ++j) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
        }
        __syncthreads();
    }

#pragma unroll
    for (int i = 0; i < 8; ++i) {
        int m = m0 + (i < 4 ? ty * 4 + i : 64 + ty * 4 + (i - 4));
#pragma unroll
        for (int j = 0; j < 8; ++j) {
            int n = n0 + (j < 4 ? tx * 4 + j : 64 + tx * 4 + (j - 4));
            s.store(m, n, acc[i][j]);
        }
    }
#undef SIMT_A
#undef SIMT_B
}

// --------------------------------------------------------- tensor cores
// f16/bf16 operands on compute capability 8.0 and later: mma.sync 16x8x16
// with f32 accumulators. 128x128 block tile, K in steps of 16, eight warps in
// a 2x4 grid, each warp owning 64x32 of C (4x4 mma tiles). Both tiles are kept
// k-contiguous in shared memory (A as [m][k], B as [n][k]) because that is
// the order the fragments want: each register is two k-neighbours.
#define TC_BM 128
#define TC_BN 128
#define TC_BK 16
#define TC_THREADS 256
#define TC_LOADS (TC_BM * TC_BK / TC_THREADS)
// 24 halves per row: fragment reads of a warp (8 rows x 4 words) then land
// in 32 different banks. (A K step of 32 was tried: with scalar 16-bit loads
// its prefetch registers pushed the kernel past 255 registers into spills.)
#define TC_LD (TC_BK + 8)

__device__ __forceinline__ u32 load_pair(const u16* p) { return *reinterpret_cast<const u32*>(p); }

template <typename T>
__device__ __forceinline__ u32 pack(T lo, T hi) { return (u32)lo.bits | ((u32)hi.bits << 16); }

template <typename T, class A, class B, class S>
__device__ __forceinline__ void gemm_tc_body(int K, A& a, B& b, S& s) {
    __shared__ __align__(16) u16 as[TC_BM][TC_LD];
    __shared__ __align__(16) u16 bs[TC_BN][TC_LD];
    const int tid = threadIdx.x;
    const int m0 = blockIdx.y * TC_BM;
    const int n0 = blockIdx.x * TC_BN;

#define TC_A(i, mn, k) int mn, k; tile_coords<TC_BM, TC_BK>(a.mn_contig(), tid, i, TC_THREADS, mn, k)
#define TC_B(i, mn, k) int mn, k; tile_coords<TC_BN, TC_BK>(b.mn_contig(), tid, i, TC_THREADS, mn, k)
    {
        TC_A(0, amn, ak);
        TC_B(0, bmn, bk);
        if (a.mn_contig()) a.begin(m0 + amn);
        if (b.mn_contig()) b.begin(n0 + bmn);
    }

    // The prefetched tile is kept two values to a register: the tensor-core
    // loop is register-bound, and unpacked 16-bit values would take one each.
    u32 ra[TC_LOADS / 2], rb[TC_LOADS / 2];
#pragma unroll
    for (int i = 0; i < TC_LOADS; i += 2) {
        TC_A(i, amn0, ak0);
        TC_A(i + 1, amn1, ak1);
        TC_B(i, bmn0, bk0);
        TC_B(i + 1, bmn1, bk1);
        ra[i / 2] = pack(a.get(m0 + amn0, ak0), a.get(m0 + amn1, ak1));
        rb[i / 2] = pack(b.get(n0 + bmn0, bk0), b.get(n0 + bmn1, bk1));
    }

    const int warp = tid / 32;
    const int lane = tid % 32;
    const int g = lane >> 2;
    const int t = lane & 3;
    const int wm = (warp >> 2) * 64;
    const int wn = (warp & 3) * 32;

    float acc[4][4][4];
#pragma unroll
    for (int mi = 0; mi < 4; ++mi)
#pragma unroll
        for (int ni = 0; ni < 4; ++ni)
#pragma unroll
            for (int c = 0; c < 4; ++c) acc[mi][ni][c] = 0.0f;

    for (int k0 = 0; k0 < K; k0 += TC_BK) {
#pragma unroll
        for (int i = 0; i < TC_LOADS; ++i) {
            TC_A(i, amn, ak);
            TC_B(i, bmn, bk);
            as[amn][ak] = (u16)(ra[i / 2] >> (16 * (i & 1)));
            bs[bmn][bk] = (u16)(rb[i / 2] >> (16 * (i & 1)));
        }
        __syncthreads();
        if (k0 + TC_BK < K) {
#pragma unroll
            for (int i = 0; i < TC_LOADS; i += 2) {
                TC_A(i, amn0, ak0);
                TC_A(i + 1, amn1, ak1);
                TC_B(i, bmn0, bk0);
                TC_B(i + 1, bmn1, bk1);
                const int k1 = k0 + TC_BK;
                ra[i / 2] = pack(a.get(m0 + amn0, k1 + ak0), a.get(m0 + amn1, k1 + ak1));
                rb[i / 2] = pack(b.get(n0 + bmn0, k1 + bk0), b.get(n0 + bmn1, k1 + bk1));
            }
        }
#pragma unroll
        for (int kk = 0; kk < TC_BK; kk += 16) {
            u32 bf[4][2];
#pragma unroll
            for (int ni = 0; ni < 4; ++ni) {
                int col = wn + ni * 8 + g;
                bf[ni][0] = load_pair(&bs[col][kk + t * 2]);
                bf[ni][1] = load_pair(&bs[col][kk + t * 2 + 8]);
            }
#pragma unroll
            for (int mi = 0; mi < 4; ++mi) {
                int r = wm + mi * 16 + g;
                u32 af[4];
                af[0] = load_pair(&as[r][kk + t * 2]);
                af[1] = load_pair(&as[r + 8][kk + t * 2]);
                af[2] = load_pair(&as[r][kk + t * 2 + 8]);
                af[3] = load_pair(&as[r + 8][kk + t * 2 + 8]);
#pragma unroll
                for (int ni = 0; ni < 4; ++ni) mma_16816(acc[mi][ni], af, bf[ni], T());
            }
        }
        __syncthreads();
    }

#pragma unroll
    for (int mi = 0; mi < 4; ++mi)
#pragma unroll
        for (int ni = 0; ni < 4; ++ni)
#pragma unroll
            for (int c = 0; c < 4; ++c) {
                int m = m0 + wm + mi * 16 + g + (c >= 2 ? 8 : 0);
                int n = n0 + wn + ni * 8 + t * 2 + (c & 1);
                s.store(m, n, acc[mi][ni][c]);
            }
#undef TC_A
#undef TC_B
}
