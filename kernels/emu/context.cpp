#include "context.h"

#include <cstdint>

namespace mpinfer_emu {

#ifdef MPINFER_EMU_ASM_SWITCH

extern "C" void mpinfer_emu_switch(void** save_sp, void* new_sp);

// Pushes what the System V ABI has a callee keep (rbp, rbx, r12-r15, and
// the SSE and x87 control words), saves rsp, loads the other stack, pops.
asm(R"(
    .text
    .p2align 4
    .type mpinfer_emu_switch, @function
mpinfer_emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size mpinfer_emu_switch, .-mpinfer_emu_switch
)");

void prepare_context(Context& c, char* stack, size_t bytes, void (*entry)()) {
    // A frame as mpinfer_emu_switch leaves it: control words, six zeroed
    // registers, then `entry` for its ret, above it a null return address
    // so that `entry` starts with the stack aligned as after a call.
    auto top = reinterpret_cast<uintptr_t>(stack + bytes) & ~uintptr_t{15};
    auto* sp = reinterpret_cast<uint64_t*>(top) - 9;
    uint32_t control[2];
    asm volatile("stmxcsr %0\n\tfnstcw %1" : "=m"(control[0]), "=m"(control[1]));
    sp[0] = (uint64_t)control[0] | ((uint64_t)(control[1] & 0xffff) << 32);
    for (int i = 1; i <= 6; ++i) sp[i] = 0;
    sp[7] = reinterpret_cast<uint64_t>(entry);
    sp[8] = 0;
    c.sp = sp;
}

void switch_context(Context& from, Context& to) { mpinfer_emu_switch(&from.sp, to.sp); }

#else

void prepare_context(Context& c, char* stack, size_t bytes, void (*entry)()) {
    getcontext(&c.uc);
    c.uc.uc_stack.ss_sp = stack;
    c.uc.uc_stack.ss_size = bytes;
    c.uc.uc_link = nullptr;
    makecontext(&c.uc, entry, 0);
}

void switch_context(Context& from, Context& to) { swapcontext(&from.uc, &to.uc); }

#endif

}  // namespace mpinfer_emu
