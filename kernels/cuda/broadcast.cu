// Element-wise binary ops with numpy broadcasting (ONNX Add, Sub, Mul, Div,
// Pow, Max, Min): the output is written in order while each operand is read
// through its own strides, 0 along the axes it is broadcast on. The op is a
// runtime argument (codes mirrored by `code` in src/cuda/broadcast.rs).
#include "common.cuh"

#define BINARY_ADD 0
#define BINARY_SUB 1
#define BINARY_MUL 2
#define BINARY_DIV 3
#define BINARY_POW 4
#define BINARY_MAX 5
#define BINARY_MIN 6

// Mirrored by `BinaryParams` in src/cuda/broadcast.rs; the sizes are checked
// on both sides. `y` may be `a` itself (an in-place op reads each element
// before writing it, in the same thread).
struct BinaryParams {
    const void* a;
    const void* b;
    void* y;
    i64 n;
    int op, rank;
    i64 dims[MAX_DIMS];
    i64 sa[MAX_DIMS];
    i64 sb[MAX_DIMS];
};
static_assert(sizeof(BinaryParams) == 232, "BinaryParams layout");

__device__ __forceinline__ float binary_op(int op, float x, float y) {
    switch (op) {
        case BINARY_ADD: return x + y;
        case BINARY_SUB: return x - y;
        case BINARY_MUL: return x * y;
        case BINARY_DIV: return x / y;
        case BINARY_POW: return powf(x, y);
        case BINARY_MAX: return max_keep_nan(x, y);
        case BINARY_MIN: return min_keep_nan(x, y);
        default: return __int_as_float(0x7fc00000);
    }
}

template <typename T>
__device__ __forceinline__ void binary(const BinaryParams& p) {
    const T* a = (const T*)p.a;
    const T* b = (const T*)p.b;
    T* y = (T*)p.y;
    GRID_STRIDE_LOOP(i, p.n) {
        i64 oa, ob;
        strided_offsets(i, p.rank, p.dims, p.sa, p.sb, oa, ob);
        y[i] = from_f32<T>(binary_op(p.op, to_f32(a[oa]), to_f32(b[ob])));
    }
}

#define BINARY_KERNEL(SUFFIX, T) \
    extern "C" __global__ void binary_##SUFFIX(BinaryParams p) { binary<T>(p); }

BINARY_KERNEL(f32, float)
BINARY_KERNEL(f16, f16_t)
BINARY_KERNEL(bf16, bf16_t)
