// Included by the registration unit generated for each kernel source
// (scripts/cuda-emu.sh): turns a kernel into a function of cuLaunchKernel's
// parameter array, whatever its signature.
#pragma once

#include <cstddef>
#include <type_traits>
#include <utility>

#include "emu.h"

namespace mpinfer_emu {

template <typename... Args>
constexpr std::size_t arity(void (*)(Args...)) {
    return sizeof...(Args);
}

// params[i] points at argument i, as cuLaunchKernel's kernelParams do.
template <typename... Args, std::size_t... I>
void call(void (*kernel)(Args...), void** params, std::index_sequence<I...>) {
    kernel(*static_cast<std::remove_cv_t<std::remove_reference_t<Args>>*>(params[I])...);
}

template <auto K>
void thunk(void** params) {
    call(K, params, std::make_index_sequence<arity(K)>{});
}

struct Registration {
    Registration(const KernelEntry* entries, unsigned count) { register_kernels(entries, count); }
};

}  // namespace mpinfer_emu

#define MPINFER_EMU_KERNEL(name) \
    { #name, &mpinfer_emu::thunk<&name> }
