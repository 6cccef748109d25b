// Shared by every kernel file: storage types, conversions and warp helpers.
// NVRTC is given no CUDA headers here (the toolkit is not required), so the
// 16-bit types are bare bit patterns and their conversions are inline PTX or
// plain bit arithmetic. Built for the CPU emulation of the driver
// (kernels/emu, MPINFER_EMU defined), the inline PTX is replaced by the
// emulator's exact software versions of the same instructions.
#pragma once

typedef unsigned short u16;
typedef unsigned int u32;
typedef long long i64;

// Distinct types, not typedefs of u16, so that f16 and bf16 instantiations of
// a template cannot be confused with each other.
struct f16_t { u16 bits; };
struct bf16_t { u16 bits; };

__device__ __forceinline__ float to_f32(float v) { return v; }
__device__ __forceinline__ float to_f32(f16_t v) {
#ifdef MPINFER_EMU
    return mpinfer_emu::f16_to_f32(v.bits);
#else
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(v.bits));
    return f;
#endif
}
// bf16 is the top half of an f32, so widening is a shift.
__device__ __forceinline__ float to_f32(bf16_t v) {
    return __uint_as_float(((u32)v.bits) << 16);
}

template <typename T> __device__ __forceinline__ T from_f32(float v);
template <> __device__ __forceinline__ float from_f32<float>(float v) { return v; }
template <> __device__ __forceinline__ f16_t from_f32<f16_t>(float v) {
    f16_t h;
#ifdef MPINFER_EMU
    h.bits = mpinfer_emu::f32_to_f16_rn(v);
#else
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h.bits) : "f"(v));
#endif
    return h;
}
// Round to nearest even by bit arithmetic (the PTX cvt to bf16 needs sm_80,
// and the elementwise kernels must also load on older devices). NaN keeps a
// quiet NaN pattern instead of rounding into infinity.
template <> __device__ __forceinline__ bf16_t from_f32<bf16_t>(float v) {
    u32 u = __float_as_uint(v);
    bf16_t b;
    if ((u & 0x7fffffffu) > 0x7f800000u) {
        b.bits = (u16)((u >> 16) | 0x0040u);
    } else {
        b.bits = (u16)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
    }
    return b;
}

// ReLU that lets NaN through: max(v, 0) would turn a NaN into 0 and hide a
// bad input.
__device__ __forceinline__ float relu_keep_nan(float v) { return v < 0.0f ? 0.0f : v; }

__device__ __forceinline__ float neg_infinity() { return __int_as_float(0xff800000); }

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) {
        v += __shfl_xor_sync(0xffffffffu, v, offset);
    }
    return v;
}

// fmaxf drops NaN, as the CPU softmax's f32::max does, so both agree.
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) {
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
    }
    return v;
}

// One warp-wide tensor-core step D = A·B + D on a 16x8x16 tile: A is four
// registers of two 16-bit values (row-major), B two registers (column-major),
// D four f32 values per lane. Guarded so the file still compiles for devices
// without these instructions; the host never launches the tensor-core kernels
// there.
__device__ __forceinline__ void mma_16816(float (&d)[4], const u32 (&a)[4], const u32 (&b)[2], f16_t) {
#if defined(MPINFER_EMU)
    mpinfer_emu::mma_m16n8k16_f16(d, a, b);
#elif __CUDA_ARCH__ >= 800
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
        "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#else
    __trap();
#endif
}

__device__ __forceinline__ void mma_16816(float (&d)[4], const u32 (&a)[4], const u32 (&b)[2], bf16_t) {
#if defined(MPINFER_EMU)
    mpinfer_emu::mma_m16n8k16_bf16(d, a, b);
#elif __CUDA_ARCH__ >= 800
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
        "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#else
    __trap();
#endif
}

// ---------------------------------------------------------------- strided walks
// The layout, broadcast and reduce kernels walk tensors of up to MAX_DIMS axes
// (after the host has dropped axes of extent 1 and merged runs) through
// per-axis strides passed by value.
#define MAX_DIMS 8

// The offset of row-major index `i` over `dims` in a tensor read through
// `strides`. Axis 0 takes what is left, so it needs no division.
__device__ __forceinline__ i64 strided_offset(i64 i, int rank, const i64* dims, const i64* strides) {
    i64 offset = 0;
    for (int d = rank - 1; d > 0; --d) {
        i64 q = i / dims[d];
        offset += (i - q * dims[d]) * strides[d];
        i = q;
    }
    return rank > 0 ? offset + i * strides[0] : 0;
}

// Two strided operands over one index space, one decomposition.
__device__ __forceinline__ void strided_offsets(i64 i, int rank, const i64* dims, const i64* sa, const i64* sb,
                                                i64& oa, i64& ob) {
    oa = 0;
    ob = 0;
    for (int d = rank - 1; d > 0; --d) {
        i64 q = i / dims[d];
        i64 c = i - q * dims[d];
        oa += c * sa[d];
        ob += c * sb[d];
        i = q;
    }
    if (rank > 0) {
        oa += i * sa[0];
        ob += i * sb[0];
    }
}

// numpy's maximum and minimum: NaN on either side wins (fmaxf would drop it).
__device__ __forceinline__ float max_keep_nan(float a, float b) { return (a > b || a != a) ? a : b; }
__device__ __forceinline__ float min_keep_nan(float a, float b) { return (a < b || a != a) ? a : b; }

#define GRID_STRIDE_LOOP(i, n) \
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (i64)gridDim.x * blockDim.x)
