// Data movement (ONNX Transpose, Slice, Concat, Split, Expand, Gather). Values
// are moved as bits, so the kernels exist per element size rather than per
// storage type.
#include "common.cuh"

// Mirrored by `CopyParams` in src/cuda/layout.rs; the sizes are checked on
// both sides. Element i (row-major over dims) is read at x_base + Σ idx·sx
// and written at y_base + Σ idx·sy: transposes, slices and broadcasts read
// through strides, while a concat writes each input into its place and a
// split reads each part from its place.
struct CopyParams {
    const void* x;
    void* y;
    i64 n;
    i64 x_base, y_base;
    int rank, pad;
    i64 dims[MAX_DIMS];
    i64 sx[MAX_DIMS];
    i64 sy[MAX_DIMS];
};
static_assert(sizeof(CopyParams) == 240, "CopyParams layout");

template <typename T>
__device__ __forceinline__ void copy_strided(const CopyParams& p) {
    const T* x = (const T*)p.x;
    T* y = (T*)p.y;
    GRID_STRIDE_LOOP(i, p.n) {
        i64 ox, oy;
        strided_offsets(i, p.rank, p.dims, p.sx, p.sy, ox, oy);
        y[p.y_base + oy] = x[p.x_base + ox];
    }
}

// x is [outer, dim, inner], y [outer, picks, inner]: slice indices[j] of
// each outer block becomes slice j.
template <typename T>
__device__ __forceinline__ void gather(const T* x, T* y, const i64* indices, i64 outer, i64 dim, i64 picks,
                                       i64 inner) {
    GRID_STRIDE_LOOP(i, outer * picks * inner) {
        i64 in = i % inner;
        i64 rest = i / inner;
        i64 j = rest % picks;
        i64 o = rest / picks;
        y[i] = x[(o * dim + indices[j]) * inner + in];
    }
}

#define LAYOUT_KERNELS(BITS, T) \
    extern "C" __global__ void copy_strided_b##BITS(CopyParams p) { copy_strided<T>(p); } \
    extern "C" __global__ void gather_b##BITS(const T* x, T* y, const i64* indices, i64 outer, i64 dim, \
                                              i64 picks, i64 inner) { \
        gather<T>(x, y, indices, outer, dim, picks, inner); \
    }

LAYOUT_KERNELS(16, u16)
LAYOUT_KERNELS(32, u32)
