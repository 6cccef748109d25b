// What kernels/cuda/*.cu use from CUDA, defined for the host, so that the
// same sources compile as C++ into the CPU emulation of the driver. Forced
// ahead of each source (-include) with MPINFER_EMU defined; the sources'
// inline PTX sits behind #ifdef MPINFER_EMU and calls the functions here.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "emu.h"

#define __host__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
#ifdef MPINFER_EMU_LIST_KERNELS
// Only preprocessed, to list the kernels (scripts/cuda-emu.sh).
#define __global__ mpinfer_emu_kernel
#else
#define __global__
#endif
// A block runs start to end on one OS thread, its CUDA threads being fibers
// of that thread, so thread-local storage is per block: what shared memory
// is. (It keeps its contents from the block that ran there before, as
// shared memory keeps whatever was last written: a kernel may not rely on
// either.)
#define __shared__ static thread_local

#define threadIdx (mpinfer_emu::current->thread_idx)
#define blockIdx (mpinfer_emu::current->block_idx)
#define blockDim (mpinfer_emu::current->block_dim)
#define gridDim (mpinfer_emu::current->grid_dim)

struct __attribute__((aligned(16))) float4 {
    float x, y, z, w;
};

inline float __uint_as_float(unsigned u) {
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
}
inline unsigned __float_as_uint(float f) {
    unsigned u;
    std::memcpy(&u, &f, sizeof u);
    return u;
}
inline float __int_as_float(int i) {
    float f;
    std::memcpy(&f, &i, sizeof f);
    return f;
}

[[noreturn]] inline void __trap() { mpinfer_emu::trap("__trap()"); }

inline void __syncthreads() { mpinfer_emu::sync_block(); }

template <typename T>
inline T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = 32) {
    static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value, "a register's worth");
    uint64_t bits = 0;
    std::memcpy(&bits, &var, sizeof var);
    bits = mpinfer_emu::shfl_xor(mask, bits, lane_mask, width);
    std::memcpy(&var, &bits, sizeof var);
    return var;
}

namespace mpinfer_emu {

// cvt.f32.f16: exact.
inline float f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    uint32_t bits;
    if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (man << 13);
    } else if (exp != 0) {
        bits = sign | ((exp + 112) << 23) | (man << 13);
    } else if (man == 0) {
        bits = sign;
    } else {
        // Subnormal: normalise the significand into an f32 exponent.
        uint32_t e = 113;
        while (!(man & 0x400u)) {
            man <<= 1;
            --e;
        }
        bits = sign | (e << 23) | ((man & 0x3ffu) << 13);
    }
    return __uint_as_float(bits);
}

// Shifts right by `shift` (1..31) rounding to nearest, ties to even.
inline uint32_t shift_round_even(uint32_t v, uint32_t shift) {
    uint32_t q = v >> shift;
    uint32_t rem = v & ((1u << shift) - 1);
    uint32_t half = 1u << (shift - 1);
    return q + (rem > half || (rem == half && (q & 1u)));
}

// cvt.rn.f16.f32: round to nearest even, overflow to infinity, NaN to the
// canonical quiet NaN.
inline uint16_t f32_to_f16_rn(float f) {
    uint32_t x = __float_as_uint(f);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    uint32_t ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) return 0x7fff;
    // 65520 is halfway between 65504 and 2^16 and rounds (to even) up.
    if (ax >= 0x477ff000u) return sign | 0x7c00u;
    if (ax >= 0x38800000u) {
        // Normal: rebias the exponent, round away 13 significand bits; a
        // carry out of the significand correctly bumps the exponent.
        uint32_t rebiased = ax - ((127u - 15u) << 23);
        return sign | (uint16_t)shift_round_even(rebiased, 13);
    }
    // 2^-25 and below round to zero (2^-25 itself is a tie, to even).
    if (ax <= 0x33000000u) return sign;
    // Subnormal: the significand with its implicit bit, in units of 2^-24.
    uint32_t exp = ax >> 23;
    uint32_t man = (ax & 0x7fffffu) | 0x800000u;
    return sign | (uint16_t)shift_round_even(man, 126 - exp);
}

}  // namespace mpinfer_emu
