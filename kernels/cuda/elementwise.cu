// ReLU, elementwise add, softmax and storage-type casts.
#include "common.cuh"

template <typename T>
__device__ __forceinline__ void relu(T* x, i64 n) {
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x) {
        x[i] = from_f32<T>(relu_keep_nan(to_f32(x[i])));
    }
}

// y += x for tensors of one shape: a residual joining its branch.
template <typename T>
__device__ __forceinline__ void add(T* y, const T* x, i64 n) {
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x) {
        y[i] = from_f32<T>(to_f32(y[i]) + to_f32(x[i]));
    }
}

template <typename S, typename D>
__device__ __forceinline__ void cast(const S* x, D* y, i64 n) {
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x) {
        y[i] = from_f32<D>(to_f32(x[i]));
    }
}

// Softmax over the last axis (rows of `dim` contiguous values): one warp per
// row, so a row's loads coalesce. Three passes over the row (max, sum, write)
// rather than caching it, so any row length works.
template <typename T>
__device__ __forceinline__ void softmax_rows(T* x, i64 rows, int dim) {
    const int lane = threadIdx.x % 32;
    i64 warps = (i64)gridDim.x * (blockDim.x / 32);
    for (i64 row = (i64)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32; row < rows; row += warps) {
        T* r = x + row * dim;
        float mx = neg_infinity();
        for (int i = lane; i < dim; i += 32) mx = fmaxf(mx, to_f32(r[i]));
        mx = warp_max(mx);
        float sum = 0.0f;
        for (int i = lane; i < dim; i += 32) sum += expf(to_f32(r[i]) - mx);
        sum = warp_sum(sum);
        for (int i = lane; i < dim; i += 32) r[i] = from_f32<T>(expf(to_f32(r[i]) - mx) / sum);
    }
}

// Softmax over an inner axis: x is [outer, dim, inner] and each thread owns
// one (outer, inner) column; neighbouring threads take neighbouring inner
// positions, so each step of the column loop is a coalesced row.
template <typename T>
__device__ __forceinline__ void softmax_columns(T* x, i64 outer, int dim, i64 inner) {
    i64 total = outer * inner;
    for (i64 idx = (i64)blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += (i64)gridDim.x * blockDim.x) {
        i64 o = idx / inner;
        i64 in = idx - o * inner;
        T* col = x + o * dim * inner + in;
        float mx = neg_infinity();
        for (int d = 0; d < dim; ++d) mx = fmaxf(mx, to_f32(col[d * inner]));
        float sum = 0.0f;
        for (int d = 0; d < dim; ++d) sum += expf(to_f32(col[d * inner]) - mx);
        for (int d = 0; d < dim; ++d) col[d * inner] = from_f32<T>(expf(to_f32(col[d * inner]) - mx) / sum);
    }
}

#define ELEMENTWISE_KERNELS(SUFFIX, T) \
    extern "C" __global__ void relu_##SUFFIX(T* x, i64 n) { relu<T>(x, n); } \
    extern "C" __global__ void add_##SUFFIX(T* y, const T* x, i64 n) { add<T>(y, x, n); } \
    extern "C" __global__ void softmax_rows_##SUFFIX(T* x, i64 rows, int dim) { softmax_rows<T>(x, rows, dim); } \
    extern "C" __global__ void softmax_columns_##SUFFIX(T* x, i64 outer, int dim, i64 inner) { \
        softmax_columns<T>(x, outer, dim, inner); \
    }

ELEMENTWISE_KERNELS(f32, float)
ELEMENTWISE_KERNELS(f16, f16_t)
ELEMENTWISE_KERNELS(bf16, bf16_t)

#define CAST_KERNEL(SN, S, DN, D) \
    extern "C" __global__ void cast_##SN##_##DN(const S* x, D* y, i64 n) { cast<S, D>(x, y, n); }

CAST_KERNEL(f32, float, f16, f16_t)
CAST_KERNEL(f32, float, bf16, bf16_t)
CAST_KERNEL(f16, f16_t, f32, float)
CAST_KERNEL(f16, f16_t, bf16, bf16_t)
CAST_KERNEL(bf16, bf16_t, f32, float)
CAST_KERNEL(bf16, bf16_t, f16, f16_t)
