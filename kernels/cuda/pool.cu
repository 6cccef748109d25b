// Max and average pooling (ONNX MaxPool, AveragePool) and GlobalAveragePool,
// with the CPU kernels' semantics: NaN wins a max, a window that only covers
// padding averages to 0 and maxes to -inf, and with ceil_mode a window may
// run past the end padding, where its positions are not counted at all.
#include "common.cuh"

// Mirrored by `PoolParams` in src/cuda/pool.rs; the sizes are checked on both
// sides.
struct PoolParams {
    const void* x;  // [planes, h, w]
    void* y;        // [planes, oh, ow]
    i64 planes;
    int h, w, oh, ow;
    int kh, kw, sh, sw, dh, dw;
    int pt, pl, pb, pr;
    int average, count_include_pad;
};
static_assert(sizeof(PoolParams) == 88, "PoolParams layout");

template <typename T>
__device__ __forceinline__ void pool2d(const PoolParams& p) {
    const T* x = (const T*)p.x;
    T* y = (T*)p.y;
    i64 total = p.planes * p.oh * p.ow;
    for (i64 idx = (i64)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += (i64)gridDim.x * blockDim.x) {
        int ox = (int)(idx % p.ow);
        i64 rest = idx / p.ow;
        int oy = (int)(rest % p.oh);
        i64 plane = rest / p.oh;
        const T* src = x + plane * p.h * p.w;
        float acc = p.average ? 0.0f : neg_infinity();
        int valid = 0, counted = 0;
        for (int i = 0; i < p.kh; ++i) {
            int iy = oy * p.sh + i * p.dh - p.pt;
            if (iy >= p.h + p.pb) continue;
            for (int j = 0; j < p.kw; ++j) {
                int ix = ox * p.sw + j * p.dw - p.pl;
                if (ix >= p.w + p.pr) continue;
                ++counted;
                if (iy < 0 || ix < 0 || iy >= p.h || ix >= p.w) continue;
                float v = to_f32(src[(i64)iy * p.w + ix]);
                ++valid;
                if (p.average) {
                    acc += v;
                } else if (v > acc || v != v) {
                    acc = v;
                }
            }
        }
        if (p.average) {
            int div = p.count_include_pad ? counted : valid;
            acc = div == 0 ? 0.0f : acc / (float)div;
        }
        y[idx] = from_f32<T>(acc);
    }
}

// One warp per plane; 0/0 gives NaN for empty planes, as on the CPU.
template <typename T>
__device__ __forceinline__ void global_average_pool(const T* x, T* y, i64 planes, int hw) {
    const int lane = threadIdx.x % 32;
    i64 warps = (i64)gridDim.x * (blockDim.x / 32);
    for (i64 plane = (i64)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32; plane < planes;
         plane += warps) {
        const T* src = x + plane * hw;
        float sum = 0.0f;
        for (int i = lane; i < hw; i += 32) sum += to_f32(src[i]);
        sum = warp_sum(sum);
        if (lane == 0) y[plane] = from_f32<T>(sum / (float)hw);
    }
}

#define POOL_KERNELS(SUFFIX, T) \
    extern "C" __global__ void pool2d_##SUFFIX(PoolParams p) { pool2d<T>(p); } \
    extern "C" __global__ void global_average_pool_##SUFFIX(const T* x, T* y, i64 planes, int hw) { \
        global_average_pool<T>(x, y, planes, hw); \
    }

POOL_KERNELS(f32, float)
POOL_KERNELS(f16, f16_t)
POOL_KERNELS(bf16, bf16_t)
