// Element-wise unary ops in place, with the CPU kernels' ONNX semantics. The
// op is a runtime argument (codes mirrored by `code` in src/cuda/unary.rs) so
// that one kernel per storage type serves all of them: the branch is uniform
// across the grid.
#include "common.cuh"

#define UNARY_RELU 0
#define UNARY_SIGMOID 1
#define UNARY_TANH 2
#define UNARY_ERF 3
#define UNARY_SQRT 4
#define UNARY_EXP 5
#define UNARY_LOG 6
#define UNARY_NEG 7
#define UNARY_ABS 8
#define UNARY_RECIPROCAL 9
#define UNARY_LEAKY_RELU 10
#define UNARY_HARD_SIGMOID 11
#define UNARY_HARD_SWISH 12
#define UNARY_CLIP 13
#define UNARY_GELU_ERF 14
#define UNARY_GELU_TANH 15
#define UNARY_POW 16
#define UNARY_SQUARE 17

// Clamping to [0, 1] by comparisons keeps a NaN, as f32::clamp does.
__device__ __forceinline__ float clamp01(float v) { return v < 0.0f ? 0.0f : (v > 1.0f ? 1.0f : v); }

__device__ __forceinline__ float unary_op(int op, float v, float p, float q) {
    switch (op) {
        case UNARY_RELU: return relu_keep_nan(v);
        case UNARY_SIGMOID: return 1.0f / (1.0f + expf(-v));
        case UNARY_TANH: return tanhf(v);
        case UNARY_ERF: return erff(v);
        case UNARY_SQRT: return sqrtf(v);
        case UNARY_EXP: return expf(v);
        case UNARY_LOG: return logf(v);
        case UNARY_NEG: return -v;
        case UNARY_ABS: return fabsf(v);
        case UNARY_RECIPROCAL: return 1.0f / v;
        case UNARY_LEAKY_RELU: return v < 0.0f ? p * v : v;
        case UNARY_HARD_SIGMOID: return clamp01(p * v + q);
        case UNARY_HARD_SWISH: return v * clamp01(v * (1.0f / 6.0f) + 0.5f);
        case UNARY_CLIP: return v != v ? v : fminf(fmaxf(v, p), q);
        // x·Φ(x) as x/2 · erfc(-x/√2): for negative x, 1 + erf(x/√2) would
        // cancel to nothing in f32 while erfc keeps its digits (the CPU gets
        // them from f64).
        case UNARY_GELU_ERF: return 0.5f * v * erfcf(-v * 0.70710678118654752f);
        // x/2 · (1 + tanh(u)) is x · sigmoid(2u), which does not cancel.
        case UNARY_GELU_TANH: {
            float u = 0.7978845608028654f * (v + 0.044715f * v * v * v);
            return v / (1.0f + expf(-2.0f * u));
        }
        case UNARY_POW: return powf(v, p);
        case UNARY_SQUARE: return v * v;
        default: return __int_as_float(0x7fc00000);
    }
}

template <typename T>
__device__ __forceinline__ void unary(T* x, i64 n, int op, float p, float q) {
    GRID_STRIDE_LOOP(i, n) { x[i] = from_f32<T>(unary_op(op, to_f32(x[i]), p, q)); }
}

#define UNARY_KERNEL(SUFFIX, T) \
    extern "C" __global__ void unary_##SUFFIX(T* x, i64 n, int op, float p, float q) { unary<T>(x, n, op, p, q); }

UNARY_KERNEL(f32, float)
UNARY_KERNEL(f16, f16_t)
UNARY_KERNEL(bf16, bf16_t)
