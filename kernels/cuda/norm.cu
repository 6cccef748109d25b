// Normalisations and per-channel affine maps: ONNX LayerNormalization,
// inference-time BatchNormalization (x·scale[c] + shift[c]) and a bias added
// along one axis.
#include "common.cuh"

// x is [.., C, inner] seen flat: element i is in channel (i / inner) % C.
// Without `scale` (null) it is a bias add. In place.
template <typename T>
__device__ __forceinline__ void channel_affine(T* x, const T* scale, const T* shift, i64 n, i64 inner,
                                               int channels) {
    GRID_STRIDE_LOOP(i, n) {
        int c = (int)((i / inner) % channels);
        float v = to_f32(x[i]);
        if (scale) v *= to_f32(scale[c]);
        x[i] = from_f32<T>(v + to_f32(shift[c]));
    }
}

// One warp per row of `block` values: a first mean, then the deviations from
// it, whose mean corrects it and whose squares give the variance (two
// passes, so a row with a large mean loses nothing to cancellation, and the
// f32 mean comes close to the CPU's f64 one), then the normalised row times
// scale plus bias (each null or one value per element of the row).
template <typename T>
__device__ __forceinline__ void layer_norm(const T* x, T* y, const T* scale, const T* bias, i64 rows, int block,
                                           float epsilon) {
    const int lane = threadIdx.x % 32;
    i64 warps = (i64)gridDim.x * (blockDim.x / 32);
    for (i64 row = (i64)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32; row < rows; row += warps) {
        const T* r = x + row * block;
        float sum = 0.0f;
        for (int i = lane; i < block; i += 32) sum += to_f32(r[i]);
        const float first = warp_sum(sum) / (float)block;
        float deviations = 0.0f, squares = 0.0f;
        for (int i = lane; i < block; i += 32) {
            float d = to_f32(r[i]) - first;
            deviations += d;
            squares += d * d;
        }
        const float shift = warp_sum(deviations) / (float)block;
        const float mean = first + shift;
        const float var = fmaxf(warp_sum(squares) / (float)block - shift * shift, 0.0f);
        const float inv_std = 1.0f / sqrtf(var + epsilon);
        T* out = y + row * block;
        for (int i = lane; i < block; i += 32) {
            float v = (to_f32(r[i]) - mean) * inv_std;
            if (scale) v *= to_f32(scale[i]);
            if (bias) v += to_f32(bias[i]);
            out[i] = from_f32<T>(v);
        }
    }
}

#define NORM_KERNELS(SUFFIX, T) \
    extern "C" __global__ void channel_affine_##SUFFIX(T* x, const T* scale, const T* shift, i64 n, i64 inner, \
                                                       int channels) { \
        channel_affine<T>(x, scale, shift, n, inner, channels); \
    } \
    extern "C" __global__ void layer_norm_##SUFFIX(const T* x, T* y, const T* scale, const T* bias, i64 rows, \
                                                   int block, float epsilon) { \
        layer_norm<T>(x, y, scale, bias, rows, block, epsilon); \
    }

NORM_KERNELS(f32, float)
NORM_KERNELS(f16, f16_t)
NORM_KERNELS(bf16, bf16_t)
