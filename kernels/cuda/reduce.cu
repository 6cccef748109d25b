// ONNX ReduceMean, ReduceSum, ReduceMax, ReduceMin, ReduceProd, ReduceL2 and
// ReduceSumSquare over any set of axes, with the CPU kernels' semantics: Max
// and Min propagate NaN, an empty reduction gives the combining op's
// identity (Mean's 0/0 is NaN). Accumulates in f32.
//
// The host splits the input's axes into kept ones (the output, row-major)
// and reduced ones, each set collapsed. A group of `lanes` threads owns one
// output: one thread when the reductions are short or the kept axes are the
// contiguous ones (neighbouring threads then read neighbouring values), a
// warp or a whole block when they are long, the lanes striding over the
// reduced values and combining at the end.
#include "common.cuh"

#define REDUCE_MEAN 0
#define REDUCE_SUM 1
#define REDUCE_MAX 2
#define REDUCE_MIN 3
#define REDUCE_PROD 4
#define REDUCE_L2 5
#define REDUCE_SUM_SQUARE 6

#define REDUCE_THREADS 256

// Mirrored by `ReduceParams` in src/cuda/reduce.rs; the sizes are checked on
// both sides.
struct ReduceParams {
    const void* x;
    void* y;
    i64 outputs;
    i64 count;  // values reduced into each output
    int op, kept_rank, reduced_rank, lanes;  // lanes: 1, 32 or REDUCE_THREADS
    i64 kept_dims[MAX_DIMS];
    i64 kept_strides[MAX_DIMS];
    i64 reduced_dims[MAX_DIMS];
    i64 reduced_strides[MAX_DIMS];
};
static_assert(sizeof(ReduceParams) == 304, "ReduceParams layout");

__device__ __forceinline__ float reduce_identity(int op) {
    switch (op) {
        case REDUCE_MAX: return neg_infinity();
        case REDUCE_MIN: return -neg_infinity();
        case REDUCE_PROD: return 1.0f;
        default: return 0.0f;
    }
}

__device__ __forceinline__ float reduce_combine(int op, float acc, float v) {
    switch (op) {
        case REDUCE_MAX: return max_keep_nan(acc, v);
        case REDUCE_MIN: return min_keep_nan(acc, v);
        case REDUCE_PROD: return acc * v;
        default: return acc + v;
    }
}

__device__ __forceinline__ float reduce_map(int op, float v) {
    return (op == REDUCE_L2 || op == REDUCE_SUM_SQUARE) ? v * v : v;
}

__device__ __forceinline__ float reduce_finish(int op, float acc, i64 count) {
    switch (op) {
        case REDUCE_MEAN: return acc / (float)count;
        case REDUCE_L2: return sqrtf(acc);
        default: return acc;
    }
}

__device__ __forceinline__ float warp_combine(int op, float v) {
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) {
        v = reduce_combine(op, v, __shfl_xor_sync(0xffffffffu, v, offset));
    }
    return v;
}

// Each lane's share of one output's reduction.
template <typename T>
__device__ __forceinline__ float reduce_share(const ReduceParams& p, const T* x, int lane) {
    float acc = reduce_identity(p.op);
    for (i64 j = lane; j < p.count; j += p.lanes) {
        i64 at = strided_offset(j, p.reduced_rank, p.reduced_dims, p.reduced_strides);
        acc = reduce_combine(p.op, acc, reduce_map(p.op, to_f32(x[at])));
    }
    return acc;
}

// Combines the block's per-warp results; every thread of the block calls it.
__device__ __forceinline__ float block_combine(int op, float v) {
    __shared__ float warps[REDUCE_THREADS / 32];
    v = warp_combine(op, v);
    if (threadIdx.x % 32 == 0) warps[threadIdx.x / 32] = v;
    __syncthreads();
    if (threadIdx.x < 32) {
        v = threadIdx.x < REDUCE_THREADS / 32 ? warps[threadIdx.x] : reduce_identity(op);
        v = warp_combine(op, v);
    }
    // Before the next output's partial results overwrite the slots.
    __syncthreads();
    return v;
}

template <typename T>
__device__ __forceinline__ void reduce(const ReduceParams& p) {
    const T* x = (const T*)p.x;
    T* y = (T*)p.y;
    const int lanes = p.lanes;
    const int lane = (int)(threadIdx.x % lanes);
    const i64 groups_per_block = blockDim.x / lanes;
    const i64 groups = (i64)gridDim.x * groups_per_block;
    // Uniform across each group, so a group's lanes stay converged for its
    // warp and block exchanges.
    for (i64 out = (i64)blockIdx.x * groups_per_block + threadIdx.x / lanes; out < p.outputs; out += groups) {
        const T* base = x + strided_offset(out, p.kept_rank, p.kept_dims, p.kept_strides);
        float acc = reduce_share(p, base, lane);
        if (lanes == 32) acc = warp_combine(p.op, acc);
        if (lanes == REDUCE_THREADS) acc = block_combine(p.op, acc);
        if (lane == 0) y[out] = from_f32<T>(reduce_finish(p.op, acc, p.count));
    }
}

#define REDUCE_KERNEL(SUFFIX, T) \
    extern "C" __global__ void __launch_bounds__(REDUCE_THREADS) reduce_##SUFFIX(ReduceParams p) { reduce<T>(p); }

REDUCE_KERNEL(f32, float)
REDUCE_KERNEL(f16, f16_t)
REDUCE_KERNEL(bf16, bf16_t)
