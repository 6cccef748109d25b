// ONNX Gemm: Y = alpha * A' * B' + beta * C, with C broadcast (per row, per
// column or scalar, through its strides) and an optional ReLU, fused into the
// store of Y.
#include "gemm_core.cuh"

// Mirrored by `GemmParams` in src/cuda/gemm.rs; the sizes are checked on both
// sides.
struct GemmParams {
    const void* a;
    const void* b;
    void* y;
    const void* c;    // null: no C term
    i64 lda, ldb, ldy;
    i64 c_rs, c_cs;   // 0 along a broadcast axis
    int m, n, k, relu;
    int trans_a, trans_b;
    float alpha, beta;
};
static_assert(sizeof(GemmParams) == 104, "GemmParams layout");

template <typename T>
struct GemmStore {
    T* y;
    const T* c;
    i64 ldy, c_rs, c_cs;
    int m_size, n_size, relu;
    float alpha, beta;
    __device__ __forceinline__ void store(int m, int n, float acc) {
        if (m >= m_size || n >= n_size) return;
        float v = alpha * acc;
        if (c) v += beta * to_f32(c[(i64)m * c_rs + (i64)n * c_cs]);
        if (relu) v = relu_keep_nan(v);
        y[(i64)m * ldy + n] = from_f32<T>(v);
    }
};

template <typename T>
__device__ __forceinline__ GemmStore<T> gemm_store(const GemmParams& p) {
    GemmStore<T> s;
    s.y = (T*)p.y;
    s.c = (const T*)p.c;
    s.ldy = p.ldy;
    s.c_rs = p.c_rs;
    s.c_cs = p.c_cs;
    s.m_size = p.m;
    s.n_size = p.n;
    s.relu = p.relu;
    s.alpha = p.alpha;
    s.beta = p.beta;
    return s;
}

// A is M x K (k-contiguous) unless transposed; B is K x N (n-contiguous)
// unless transposed.
template <typename T>
struct GemmOperands {
    DenseOperand<T> a;
    DenseOperand<T> b;
    __device__ __forceinline__ GemmOperands(const GemmParams& p) {
        a.p = (const T*)p.a;
        a.ld = p.lda;
        a.mn_size = p.m;
        a.k_size = p.k;
        a.contig = p.trans_a != 0;
        b.p = (const T*)p.b;
        b.ld = p.ldb;
        b.mn_size = p.n;
        b.k_size = p.k;
        b.contig = p.trans_b == 0;
    }
};

template <typename T>
__device__ __forceinline__ void gemm_simt(const GemmParams& p) {
    GemmOperands<T> ops(p);
    GemmStore<T> s = gemm_store<T>(p);
    gemm_simt_body(p.k, ops.a, ops.b, s);
}

template <typename T>
__device__ __forceinline__ void gemm_tc(const GemmParams& p) {
    GemmOperands<T> ops(p);
    GemmStore<T> s = gemm_store<T>(p);
    gemm_tc_body<T>(p.k, ops.a, ops.b, s);
}

extern "C" __global__ void __launch_bounds__(SIMT_THREADS) gemm_simt_f32(GemmParams p) { gemm_simt<float>(p); }
extern "C" __global__ void __launch_bounds__(SIMT_THREADS) gemm_simt_f16(GemmParams p) { gemm_simt<f16_t>(p); }
extern "C" __global__ void __launch_bounds__(SIMT_THREADS) gemm_simt_bf16(GemmParams p) { gemm_simt<bf16_t>(p); }
extern "C" __global__ void __launch_bounds__(TC_THREADS) gemm_tc_f16(GemmParams p) { gemm_tc<f16_t>(p); }
extern "C" __global__ void __launch_bounds__(TC_THREADS) gemm_tc_bf16(GemmParams p) { gemm_tc<bf16_t>(p); }
