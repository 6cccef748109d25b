// 2-D convolution (ONNX Conv: pads, strides, dilations, groups) with bias and
// ReLU fused into the store.
//
// Two strategies:
// - implicit GEMM, per group: Y_g[m][(img, oy, ox)] = W_g[m][(c, i, j)] x
//   X_col[(c, i, j)][(img, oy, ox)], where X_col is never materialised: the B
//   policy reads the input window directly. Images are folded into the GEMM's
//   N so that late layers with small images still fill the tiles.
// - direct, one thread per output, for layers with few output channels per
//   group (depthwise), where a 128-row GEMM tile would be almost all padding.
#include "gemm_core.cuh"

// Mirrored by `ConvParams` in src/cuda/conv.rs; the sizes are checked on both
// sides.
struct ConvParams {
    const void* x;     // [n, c, h, w]
    const void* weight; // [m, cg, kh, kw]
    const void* bias;  // [m] or null
    void* y;           // [n, m, oh, ow]
    int n, c, h, w;
    int m, cg, mg;     // output channels; input and output channels per group
    int kh, kw, sh, sw, dh, dw, pt, pl;
    int oh, ow, relu;
    int group0;        // first group of this launch (grid z is capped)
    int unused;
};
static_assert(sizeof(ConvParams) == 112, "ConvParams layout");

// B operand of the implicit GEMM: element (k = (c, i, j), n = (img, oy, ox))
// of the unfolded input of one group. Each thread's n is fixed (mn_contig()),
// so its image and window origin are worked out once in begin().
template <typename T>
struct ConvWindow {
    const T* x;        // this group's first input channel of image 0
    i64 image_stride;  // c*h*w
    int h, w, kh, kw, sh, sw, dh, dw, pt, pl, oh, ow;
    int n_size, k_size;
    const T* base;     // this thread's image
    int iy0, ix0;
    bool valid;
    __device__ __forceinline__ bool mn_contig() const { return true; }
    __device__ __forceinline__ void begin(int n) {
        valid = n < n_size;
        int ohw = oh * ow;
        int img = valid ? n / ohw : 0;
        int p = valid ? n - img * ohw : 0;
        int oy = p / ow;
        int ox = p - oy * ow;
        base = x + (i64)img * image_stride;
        iy0 = oy * sh - pt;
        ix0 = ox * sw - pl;
    }
    __device__ __forceinline__ T get(int, int k) const {
        if (!valid || k >= k_size) return T();
        int khw = kh * kw;
        int c = k / khw;
        int r = k - c * khw;
        int i = r / kw;
        int j = r - i * kw;
        int iy = iy0 + i * dh;
        int ix = ix0 + j * dw;
        if (iy < 0 || iy >= h || ix < 0 || ix >= w) return T();
        return base[((i64)c * h + iy) * w + ix];
    }
};

template <typename T>
struct ConvStore {
    T* y;          // image 0, this group's first output channel
    const T* bias; // this group's first bias, or null
    i64 image_stride; // m*oh*ow
    int mg, ohw, n_size, relu;
    __device__ __forceinline__ void store(int m, int n, float acc) {
        if (m >= mg || n >= n_size) return;
        int img = n / ohw;
        int p = n - img * ohw;
        float v = acc;
        if (bias) v += to_f32(bias[m]);
        if (relu) v = relu_keep_nan(v);
        y[(i64)img * image_stride + (i64)m * ohw + p] = from_f32<T>(v);
    }
};

template <typename T>
struct ConvProblem {
    DenseOperand<T> a;
    ConvWindow<T> b;
    ConvStore<T> s;
    int k;
    __device__ __forceinline__ ConvProblem(const ConvParams& p) {
        int g = p.group0 + blockIdx.z;
        k = p.cg * p.kh * p.kw;
        int ohw = p.oh * p.ow;
        a.p = (const T*)p.weight + (i64)g * p.mg * k;
        a.ld = k;
        a.mn_size = p.mg;
        a.k_size = k;
        a.contig = false;
        b.x = (const T*)p.x + (i64)g * p.cg * p.h * p.w;
        b.image_stride = (i64)p.c * p.h * p.w;
        b.h = p.h;
        b.w = p.w;
        b.kh = p.kh;
        b.kw = p.kw;
        b.sh = p.sh;
        b.sw = p.sw;
        b.dh = p.dh;
        b.dw = p.dw;
        b.pt = p.pt;
        b.pl = p.pl;
        b.oh = p.oh;
        b.ow = p.ow;
        b.n_size = p.n * ohw;
        b.k_size = k;
        s.y = (T*)p.y + (i64)g * p.mg * ohw;
        s.bias = p.bias ? (const T*)p.bias + (i64)g * p.mg : (const T*)0;
        s.image_stride = (i64)p.m * ohw;
        s.mg = p.mg;
        s.ohw = ohw;
        s.n_size = p.n * ohw;
        s.relu = p.relu;
    }
};

template <typename T>
__device__ __forceinline__ void conv_gemm_simt(const ConvParams& p) {
    ConvProblem<T> q(p);
    gemm_simt_body(q.k, q.a, q.b, q.s);
}

template <typename T>
__device__ __forceinline__ void conv_gemm_tc(const ConvParams& p) {
    ConvProblem<T> q(p);
    gemm_tc_body<T>(q.k, q.a, q.b, q.s);
}

template <typename T>
__device__ __forceinline__ void conv_direct(const ConvParams& p) {
    i64 total = (i64)p.n * p.m * p.oh * p.ow;
    const T* x = (const T*)p.x;
    const T* w = (const T*)p.weight;
    const T* bias = (const T*)p.bias;
    T* y = (T*)p.y;
    for (i64 idx = (i64)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += (i64)gridDim.x * blockDim.x) {
        int ox = (int)(idx % p.ow);
        i64 rest = idx / p.ow;
        int oy = (int)(rest % p.oh);
        rest /= p.oh;
        int m = (int)(rest % p.m);
        i64 img = rest / p.m;
        int g = m / p.mg;
        const T* xg = x + (img * p.c + (i64)g * p.cg) * p.h * p.w;
        const T* wm = w + (i64)m * p.cg * p.kh * p.kw;
        float acc = 0.0f;
        for (int c = 0; c < p.cg; ++c) {
            for (int i = 0; i < p.kh; ++i) {
                int iy = oy * p.sh + i * p.dh - p.pt;
                if (iy < 0 || iy >= p.h) continue;
                const T* row = xg + ((i64)c * p.h + iy) * p.w;
                const T* wr = wm + (c * p.kh + i) * p.kw;
                for (int j = 0; j < p.kw; ++j) {
                    int ix = ox * p.sw + j * p.dw - p.pl;
                    if (ix < 0 || ix >= p.w) continue;
                    acc = fmaf(to_f32(row[ix]), to_f32(wr[j]), acc);
                }
            }
        }
        if (bias) acc += to_f32(bias[m]);
        if (p.relu) acc = relu_keep_nan(acc);
        y[idx] = from_f32<T>(acc);
    }
}

#define CONV_KERNELS(SUFFIX, T) \
    extern "C" __global__ void __launch_bounds__(SIMT_THREADS) conv_gemm_simt_##SUFFIX(ConvParams p) { conv_gemm_simt<T>(p); } \
    extern "C" __global__ void conv_direct_##SUFFIX(ConvParams p) { conv_direct<T>(p); }

CONV_KERNELS(f32, float)
CONV_KERNELS(f16, f16_t)
CONV_KERNELS(bf16, bf16_t)

extern "C" __global__ void __launch_bounds__(TC_THREADS) conv_gemm_tc_f16(ConvParams p) { conv_gemm_tc<f16_t>(p); }
extern "C" __global__ void __launch_bounds__(TC_THREADS) conv_gemm_tc_bf16(ConvParams p) { conv_gemm_tc<bf16_t>(p); }
