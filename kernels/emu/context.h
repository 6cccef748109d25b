// Switching between fibers. On x86-64 a few instructions that save the
// callee-saved registers and swap stacks; elsewhere (or with
// MPINFER_EMU_UCONTEXT) ucontext, whose every switch also makes a system
// call to save and restore the signal mask: fibers switch at every barrier
// and warp-wide operation, millions of times per test, so that call
// dominated the emulation.
#pragma once

#include <cstddef>

#if defined(__x86_64__) && !defined(MPINFER_EMU_UCONTEXT)
#define MPINFER_EMU_ASM_SWITCH 1
#else
#include <ucontext.h>
#endif

namespace mpinfer_emu {

struct Context {
#ifdef MPINFER_EMU_ASM_SWITCH
    void* sp = nullptr;
#else
    ucontext_t uc;
#endif
};

/// Makes `c` start `entry` on the given stack when first switched to;
/// `entry` must never return.
void prepare_context(Context& c, char* stack, size_t bytes, void (*entry)());

/// Saves the running context in `from` and resumes `to`.
void switch_context(Context& from, Context& to);

}  // namespace mpinfer_emu
