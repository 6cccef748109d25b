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
#include "half.h"

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
