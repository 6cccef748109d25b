// The CPU emulation of a CUDA device: what the host-compiled kernels call
// (through cuda_shim.h) and what the driver entry points (driver.cpp) call.
//
// A block runs on one OS thread with each of its CUDA threads as a fiber.
// Fibers switch only at __syncthreads and warp-wide operations, so a
// block's threads interleave exactly where the hardware would make them
// wait for each other, and a block's shared memory can be thread-local
// storage (see __shared__ in cuda_shim.h).
#pragma once

#include <cstdint>
#include <string>

struct uint3 {
    unsigned x, y, z;
};
typedef uint3 dim3;

namespace mpinfer_emu {

/// Where the running CUDA thread is; the shim's threadIdx, blockIdx,
/// blockDim and gridDim read these.
struct Coords {
    uint3 thread_idx;
    uint3 block_idx;
    uint3 block_dim;
    uint3 grid_dim;
};

/// The running fiber's coordinates; switched with the fiber.
extern thread_local const Coords* current;

/// __syncthreads(): waits for every thread of the block.
void sync_block();

/// __shfl_xor_sync on up to 8 bytes of bits.
uint64_t shfl_xor(uint32_t mask, uint64_t bits, int lane_mask, int width);

/// One warp-wide mma.sync.aligned.m16n8k16.row.col.f32.{f16,bf16}.f32:
/// D = A·B + D over the fragments of all 32 lanes, laid out as in the PTX
/// ISA's "Matrix Fragments for mma.m16n8k16 with floating point type".
void mma_m16n8k16_f16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]);
void mma_m16n8k16_bf16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]);

/// Ends the launch with an error naming the thread (a device-side fault).
[[noreturn]] void trap(const char* what);

/// A kernel's host build, called with cuLaunchKernel's parameter array.
using Kernel = void (*)(void** params);

struct KernelEntry {
    const char* name;
    Kernel kernel;
};

/// Called by each generated registration unit before main (or at dlopen).
void register_kernels(const KernelEntry* entries, unsigned count);

/// The host build of the kernel of that name, or null.
Kernel find_kernel(const char* name);

struct Launch {
    const char* name;
    Kernel kernel;
    void** params;
    uint3 grid;
    uint3 block;
};

/// Runs every block of a launch and returns when all are done: "" or the
/// first fault, in words.
std::string run_grid(const Launch& launch);

}  // namespace mpinfer_emu
