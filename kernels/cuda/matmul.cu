// ONNX MatMul: batches of row-major products y = a·b, the batch axes
// broadcast. Each batch entry is one of gemm_core.cuh's GEMM loops on that
// entry's matrices (SIMT, or tensor cores for 16-bit operands where the host
// allows them); grid z walks the batch.
#include "gemm_core.cuh"

// Mirrored by `MatMulParams` in src/cuda/matmul.rs; the sizes are checked on
// both sides. Batch entry z (row-major over dims) reads a at Σ idx·sa and b
// at Σ idx·sb (0 along an operand's broadcast axes), in elements.
struct MatMulParams {
    const void* a;  // [.., m, k]
    const void* b;  // [.., k, n]
    void* y;        // [batches, m, n]
    i64 batches;
    int m, n, k, rank;
    i64 dims[MAX_DIMS];
    i64 sa[MAX_DIMS];
    i64 sb[MAX_DIMS];
};
static_assert(sizeof(MatMulParams) == 240, "MatMulParams layout");

template <typename T>
struct MatMulStore {
    T* y;
    int m_size, n_size;
    __device__ __forceinline__ void store(int m, int n, float acc) {
        if (m < m_size && n < n_size) y[(i64)m * n_size + n] = from_f32<T>(acc);
    }
};

template <typename T, bool TENSOR_CORES>
__device__ __forceinline__ void matmul(const MatMulParams& p) {
    // Uniform across the block, so the loop's barriers are met by all.
    for (i64 z = blockIdx.z; z < p.batches; z += gridDim.z) {
        i64 oa, ob;
        strided_offsets(z, p.rank, p.dims, p.sa, p.sb, oa, ob);
        DenseOperand<T> a;
        a.p = (const T*)p.a + oa;
        a.ld = p.k;
        a.mn_size = p.m;
        a.k_size = p.k;
        a.contig = false;
        DenseOperand<T> b;
        b.p = (const T*)p.b + ob;
        b.ld = p.n;
        b.mn_size = p.n;
        b.k_size = p.k;
        b.contig = true;
        MatMulStore<T> s;
        s.y = (T*)p.y + z * p.m * p.n;
        s.m_size = p.m;
        s.n_size = p.n;
        if constexpr (TENSOR_CORES) {
            gemm_tc_body<T>(p.k, a, b, s);
        } else {
            gemm_simt_body(p.k, a, b, s);
        }
    }
}

#define MATMUL_KERNEL(SUFFIX, T) \
    extern "C" __global__ void __launch_bounds__(SIMT_THREADS) matmul_simt_##SUFFIX(MatMulParams p) { \
        matmul<T, false>(p); \
    }
#define MATMUL_TC_KERNEL(SUFFIX, T) \
    extern "C" __global__ void __launch_bounds__(TC_THREADS) matmul_tc_##SUFFIX(MatMulParams p) { matmul<T, true>(p); }

MATMUL_KERNEL(f32, float)
MATMUL_KERNEL(f16, f16_t)
MATMUL_KERNEL(bf16, bf16_t)
MATMUL_TC_KERNEL(f16, f16_t)
MATMUL_TC_KERNEL(bf16, bf16_t)
