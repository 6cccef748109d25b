// A CUDA driver library (libcuda.so.1) whose one device is this CPU: the
// entry points cudarc calls, over host memory and the host builds of the
// kernels (block.cpp runs them).
//
// - Device memory is host memory. Each allocation is filled with 0xff
//   (NaN as f32, f16 and bf16) and fenced by guard bytes that are checked
//   after every launch, so a kernel reading what nobody wrote or writing
//   past an end fails the test it runs in.
// - Work is done when it is queued: streams and events only order what is
//   already complete, and a launch's fault is returned by cuLaunchKernel.
// - A module keeps the entry names of the image NVRTC made (cubin or PTX);
//   cuModuleGetFunction finds a name only if the image has that entry and
//   the host build has the kernel.
// - NVRTC opens libcuda.so.1 too and asks it for private export tables;
//   answering CUDA_ERROR_NOT_FOUND makes it compile without the driver.
#include <elf.h>
#include <unistd.h>

#include <chrono>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "emu.h"

namespace {

enum CUresult : int {
    CUDA_SUCCESS = 0,
    CUDA_ERROR_INVALID_VALUE = 1,
    CUDA_ERROR_OUT_OF_MEMORY = 2,
    CUDA_ERROR_NOT_INITIALIZED = 3,
    CUDA_ERROR_INVALID_DEVICE = 101,
    CUDA_ERROR_INVALID_IMAGE = 200,
    CUDA_ERROR_INVALID_CONTEXT = 201,
    CUDA_ERROR_NO_BINARY_FOR_GPU = 209,
    CUDA_ERROR_INVALID_HANDLE = 400,
    CUDA_ERROR_NOT_FOUND = 500,
    CUDA_ERROR_ILLEGAL_ADDRESS = 700,
    CUDA_ERROR_LAUNCH_FAILED = 719,
    CUDA_ERROR_NOT_SUPPORTED = 801,
};

using CUdevice = int;
using CUdeviceptr = unsigned long long;

struct Context {
    int device;
    int retained = 0;
};
struct Module {
    std::set<std::string> entries;
};
struct Function {
    std::string name;
    mpinfer_emu::Kernel kernel;
};
struct Stream {
    Context* ctx;
};
struct Event {
    std::chrono::steady_clock::time_point at;
    bool recorded = false;
};

using CUcontext = Context*;
using CUmodule = Module*;
using CUfunction = Function*;
using CUstream = Stream*;
using CUevent = Event*;

constexpr int SM = 90;
constexpr const char* NAME = "mpinfer CPU emulation of sm_90";
constexpr size_t ALIGN = 256;
#if defined(__SANITIZE_ADDRESS__)
// AddressSanitizer's own red zones, right at the end of each allocation,
// catch reads past it too.
constexpr size_t GUARD = 0;
#else
constexpr size_t GUARD = 256;
#endif
constexpr unsigned char GUARD_BYTE = 0xa5;

struct Allocation {
    size_t bytes;
    unsigned char* base;  // GUARD bytes, the allocation, its padding to ALIGN and GUARD bytes
};

size_t padded(size_t bytes) { return GUARD == 0 ? bytes : (bytes + ALIGN - 1) / ALIGN * ALIGN; }

// Everything the driver keeps, under one lock. Leaked on purpose: cudarc
// and NVRTC may call in while the process exits.
struct Driver {
    std::mutex mutex;
    bool initialized = false;
    Context primary{0};
    std::map<CUdeviceptr, Allocation> allocations;
    std::set<Module*> modules;
    std::set<Function*> functions;
    std::set<Stream*> streams;
    std::set<Event*> events;
};

Driver& driver() {
    static Driver* d = new Driver;
    return *d;
}

thread_local Context* current_ctx = nullptr;

void say(const char* format, ...) {
    va_list args;
    va_start(args, format);
    std::fprintf(stderr, "mpinfer-emu: ");
    std::vfprintf(stderr, format, args);
    std::fprintf(stderr, "\n");
    va_end(args);
}

// The registry of host-built kernels, filled before the driver is used.
std::map<std::string, mpinfer_emu::Kernel>& registry() {
    static auto* r = new std::map<std::string, mpinfer_emu::Kernel>;
    return *r;
}

CUresult need_context() {
    if (!driver().initialized) return CUDA_ERROR_NOT_INITIALIZED;
    return current_ctx ? CUDA_SUCCESS : CUDA_ERROR_INVALID_CONTEXT;
}

bool valid_stream(CUstream s) {
    // 0 is the null stream; 1 and 2 are CU_STREAM_LEGACY and
    // CU_STREAM_PER_THREAD.
    if ((uintptr_t)s <= 2) return true;
    std::lock_guard<std::mutex> lock(driver().mutex);
    return driver().streams.count(s) > 0;
}

// The allocation holding [ptr, ptr + bytes), under the lock.
const Allocation* find(CUdeviceptr ptr, size_t bytes) {
    auto& all = driver().allocations;
    auto it = all.upper_bound(ptr);
    if (it == all.begin()) return nullptr;
    --it;
    if (ptr - it->first > it->second.bytes || bytes > it->second.bytes - (ptr - it->first)) return nullptr;
    return &it->second;
}

CUresult check_range(CUdeviceptr ptr, size_t bytes, const char* what) {
    std::lock_guard<std::mutex> lock(driver().mutex);
    if (find(ptr, bytes)) return CUDA_SUCCESS;
    say("%s: [%#llx, +%zu) is not inside one device allocation", what, ptr, bytes);
    return CUDA_ERROR_INVALID_VALUE;
}

enum class Guards { intact, broken, overrun };

// An overwritten outermost guard byte means the write may have gone on
// into the allocator's own memory: the process cannot go on then.
Guards check_guards(const Allocation& a) {
    if (GUARD == 0) return Guards::intact;
    const unsigned char* tail = a.base + GUARD + a.bytes;
    size_t tail_bytes = padded(a.bytes) - a.bytes + GUARD;
    if (a.base[0] != GUARD_BYTE || tail[tail_bytes - 1] != GUARD_BYTE) return Guards::overrun;
    for (size_t i = 0; i < GUARD; ++i) {
        if (a.base[i] != GUARD_BYTE) return Guards::broken;
    }
    for (size_t i = 0; i < tail_bytes; ++i) {
        if (tail[i] != GUARD_BYTE) return Guards::broken;
    }
    return Guards::intact;
}

// Names the allocations whose guard bytes a kernel overwrote; aborts when
// it wrote past them.
std::string broken_guards(const char* kernel) {
    std::lock_guard<std::mutex> lock(driver().mutex);
    std::string broken;
    for (auto& [ptr, a] : driver().allocations) {
        Guards g = check_guards(a);
        if (g == Guards::intact) continue;
        char line[96];
        std::snprintf(line, sizeof line, "%s[%#llx, +%zu)", broken.empty() ? "" : ", ", ptr, a.bytes);
        broken += line;
        if (g == Guards::overrun) {
            say("%s wrote past the guard bytes of %s: aborting, the heap may be corrupt", kernel, line);
            std::abort();
        }
    }
    return broken;
}

CUresult allocate(CUdeviceptr* dptr, size_t bytes) {
    if (CUresult r = need_context()) return r;
    if (!dptr) return CUDA_ERROR_INVALID_VALUE;
    if (bytes == 0) {
        *dptr = 0;
        return CUDA_SUCCESS;
    }
    size_t total = GUARD + padded(bytes) + GUARD;
    void* memory = nullptr;
    if (posix_memalign(&memory, ALIGN, total) != 0) return CUDA_ERROR_OUT_OF_MEMORY;
    auto* base = static_cast<unsigned char*>(memory);
    std::memset(base, GUARD_BYTE, total);
    std::memset(base + GUARD, 0xff, bytes);
    *dptr = (CUdeviceptr)(base + GUARD);
    std::lock_guard<std::mutex> lock(driver().mutex);
    driver().allocations[*dptr] = {bytes, base};
    return CUDA_SUCCESS;
}

CUresult release(CUdeviceptr ptr) {
    if (CUresult r = need_context()) return r;
    if (ptr == 0) return CUDA_SUCCESS;
    std::lock_guard<std::mutex> lock(driver().mutex);
    auto it = driver().allocations.find(ptr);
    if (it == driver().allocations.end()) {
        say("cuMemFree of %#llx, which is not an allocation", ptr);
        return CUDA_ERROR_INVALID_VALUE;
    }
    Guards g = check_guards(it->second);
    if (g == Guards::overrun) {
        say("something wrote past the guard bytes of the allocation at %#llx: aborting, the heap may be corrupt", ptr);
        std::abort();
    }
    std::free(it->second.base);
    driver().allocations.erase(it);
    if (g == Guards::broken) {
        say("the guard bytes of the allocation at %#llx were overwritten", ptr);
        return CUDA_ERROR_ILLEGAL_ADDRESS;
    }
    return CUDA_SUCCESS;
}

CUresult copy(void* dst, const void* src, size_t bytes) {
    if (CUresult r = need_context()) return r;
    if (bytes) std::memmove(dst, src, bytes);
    return CUDA_SUCCESS;
}

// Entry names of a cubin (functions marked as CUDA entries) or of PTX
// (`.entry NAME(`); false when the image is neither or is for another
// device.
bool read_entries(const void* image, std::set<std::string>& entries) {
    const auto* bytes = static_cast<const unsigned char*>(image);
    if (std::memcmp(bytes, ELFMAG, SELFMAG) == 0) {
        const auto* eh = static_cast<const Elf64_Ehdr*>(image);
        if (eh->e_ident[EI_CLASS] != ELFCLASS64 || eh->e_shentsize != sizeof(Elf64_Shdr)) return false;
        // The architecture a cubin is for is the low byte of its flags; it
        // runs on devices of the same major version and a minor as high.
        int sm = (int)(eh->e_flags & 0xff);
        if (sm / 10 != SM / 10 || sm % 10 > SM % 10) {
            say("a cubin for sm_%d does not load on sm_%d", sm, SM);
            return false;
        }
        const auto* sections = reinterpret_cast<const Elf64_Shdr*>(bytes + eh->e_shoff);
        for (unsigned i = 0; i < eh->e_shnum; ++i) {
            if (sections[i].sh_type != SHT_SYMTAB || sections[i].sh_link >= eh->e_shnum) continue;
            const auto* syms = reinterpret_cast<const Elf64_Sym*>(bytes + sections[i].sh_offset);
            const char* names = reinterpret_cast<const char*>(bytes + sections[sections[i].sh_link].sh_offset);
            for (size_t s = 0; s < sections[i].sh_size / sizeof(Elf64_Sym); ++s) {
                // STO_CUDA_ENTRY marks kernels among the functions.
                if (ELF64_ST_TYPE(syms[s].st_info) == STT_FUNC && (syms[s].st_other & 0x10)) {
                    entries.insert(names + syms[s].st_name);
                }
            }
        }
        return true;
    }
    const char* text = static_cast<const char*>(image);
    const char* target = std::strstr(text, ".target sm_");
    if (!target) return false;
    int sm = std::atoi(target + std::strlen(".target sm_"));
    if (sm > SM) {
        say("PTX for sm_%d does not load on sm_%d", sm, SM);
        return false;
    }
    for (const char* p = text; (p = std::strstr(p, ".entry ")); ) {
        p += std::strlen(".entry ");
        const char* end = std::strchr(p, '(');
        if (!end) break;
        std::string name(p, end);
        while (!name.empty() && name.back() == ' ') name.pop_back();
        entries.insert(name);
    }
    return true;
}

int attribute(int attrib) {
    switch (attrib) {
        case 1: return 1024;                      // max threads per block
        case 2: case 3: return 1024;              // max block x, y
        case 4: return 64;                        // max block z
        case 5: return 2147483647;                // max grid x
        case 6: case 7: return 65535;             // max grid y, z
        case 8: return 48 * 1024;                 // shared memory per block
        case 9: return 64 * 1024;                 // constant memory
        case 10: return 32;                       // warp size
        case 12: case 82: return 65536;           // registers per block, per SM
        case 13: return 1000000;                  // clock, kHz
        case 14: return 512;                      // texture alignment
        case 15: case 31: return 1;               // overlap, concurrent kernels
        case 16: return (int)std::max(1u, std::thread::hardware_concurrency());
        case 19: return 1;                        // can map host memory
        case 39: return 2048;                     // threads per SM
        case 41: return 1;                        // unified addressing
        case 75: return SM / 10;
        case 76: return SM % 10;
        case 81: return 228 * 1024;               // shared memory per SM
        case 97: return 48 * 1024;                // shared memory per block, opt-in
        case 106: return 32;                      // blocks per SM
        case 115: return 1;                       // memory pools (cuMemAllocAsync)
        default: return 0;
    }
}

}  // namespace

namespace mpinfer_emu {

void register_kernels(const KernelEntry* entries, unsigned count) {
    for (unsigned i = 0; i < count; ++i) registry()[entries[i].name] = entries[i].kernel;
}

Kernel find_kernel(const char* name) {
    auto it = registry().find(name);
    return it == registry().end() ? nullptr : it->second;
}

}  // namespace mpinfer_emu

#define API extern "C" __attribute__((visibility("default")))

// ---------------------------------------------------------------- setup

API CUresult cuInit(unsigned flags) {
    if (flags != 0) return CUDA_ERROR_INVALID_VALUE;
    driver().initialized = true;
    return CUDA_SUCCESS;
}

API CUresult cuDriverGetVersion(int* version) {
    if (!version) return CUDA_ERROR_INVALID_VALUE;
    *version = 12060;
    return CUDA_SUCCESS;
}

API CUresult cuGetExportTable(const void** table, const void* id) {
    (void)id;
    if (table) *table = nullptr;
    return CUDA_ERROR_NOT_FOUND;
}

API CUresult cuGetErrorName(CUresult error, const char** out) {
    static const std::map<int, const char*> names = {
        {CUDA_SUCCESS, "CUDA_SUCCESS"},
        {CUDA_ERROR_INVALID_VALUE, "CUDA_ERROR_INVALID_VALUE"},
        {CUDA_ERROR_OUT_OF_MEMORY, "CUDA_ERROR_OUT_OF_MEMORY"},
        {CUDA_ERROR_NOT_INITIALIZED, "CUDA_ERROR_NOT_INITIALIZED"},
        {CUDA_ERROR_INVALID_DEVICE, "CUDA_ERROR_INVALID_DEVICE"},
        {CUDA_ERROR_INVALID_IMAGE, "CUDA_ERROR_INVALID_IMAGE"},
        {CUDA_ERROR_INVALID_CONTEXT, "CUDA_ERROR_INVALID_CONTEXT"},
        {CUDA_ERROR_NO_BINARY_FOR_GPU, "CUDA_ERROR_NO_BINARY_FOR_GPU"},
        {CUDA_ERROR_INVALID_HANDLE, "CUDA_ERROR_INVALID_HANDLE"},
        {CUDA_ERROR_NOT_FOUND, "CUDA_ERROR_NOT_FOUND"},
        {CUDA_ERROR_ILLEGAL_ADDRESS, "CUDA_ERROR_ILLEGAL_ADDRESS"},
        {CUDA_ERROR_LAUNCH_FAILED, "CUDA_ERROR_LAUNCH_FAILED"},
        {CUDA_ERROR_NOT_SUPPORTED, "CUDA_ERROR_NOT_SUPPORTED"},
    };
    auto it = names.find(error);
    if (!out) return CUDA_ERROR_INVALID_VALUE;
    *out = it == names.end() ? "CUDA_ERROR_UNKNOWN" : it->second;
    return it == names.end() ? CUDA_ERROR_INVALID_VALUE : CUDA_SUCCESS;
}

API CUresult cuGetErrorString(CUresult error, const char** out) {
    CUresult r = cuGetErrorName(error, out);
    if (r == CUDA_SUCCESS && error != CUDA_SUCCESS) {
        // Faults are described on stderr when they happen.
        *out = error == CUDA_ERROR_LAUNCH_FAILED ? "kernel fault in the CPU emulation (details on stderr)" : *out;
    }
    return r;
}

API CUresult cuDeviceGetCount(int* count) {
    if (!driver().initialized) return CUDA_ERROR_NOT_INITIALIZED;
    if (!count) return CUDA_ERROR_INVALID_VALUE;
    *count = 1;
    return CUDA_SUCCESS;
}

API CUresult cuDeviceGet(CUdevice* device, int ordinal) {
    if (!driver().initialized) return CUDA_ERROR_NOT_INITIALIZED;
    if (!device) return CUDA_ERROR_INVALID_VALUE;
    if (ordinal != 0) return CUDA_ERROR_INVALID_DEVICE;
    *device = 0;
    return CUDA_SUCCESS;
}

API CUresult cuDeviceGetName(char* name, int len, CUdevice device) {
    if (!driver().initialized) return CUDA_ERROR_NOT_INITIALIZED;
    if (device != 0) return CUDA_ERROR_INVALID_DEVICE;
    if (!name || len <= 0) return CUDA_ERROR_INVALID_VALUE;
    std::snprintf(name, (size_t)len, "%s", NAME);
    return CUDA_SUCCESS;
}

API CUresult cuDeviceGetAttribute(int* value, int attrib, CUdevice device) {
    if (!driver().initialized) return CUDA_ERROR_NOT_INITIALIZED;
    if (device != 0) return CUDA_ERROR_INVALID_DEVICE;
    if (!value || attrib <= 0 || attrib >= 120) return CUDA_ERROR_INVALID_VALUE;
    *value = attribute(attrib);
    return CUDA_SUCCESS;
}

API CUresult cuDeviceTotalMem_v2(size_t* bytes, CUdevice device) {
    if (!driver().initialized) return CUDA_ERROR_NOT_INITIALIZED;
    if (device != 0) return CUDA_ERROR_INVALID_DEVICE;
    if (!bytes) return CUDA_ERROR_INVALID_VALUE;
    *bytes = (size_t)sysconf(_SC_PHYS_PAGES) * (size_t)sysconf(_SC_PAGESIZE);
    return CUDA_SUCCESS;
}

API CUresult cuDeviceGetUuid(unsigned char* uuid, CUdevice device) {
    if (!driver().initialized) return CUDA_ERROR_NOT_INITIALIZED;
    if (device != 0) return CUDA_ERROR_INVALID_DEVICE;
    if (!uuid) return CUDA_ERROR_INVALID_VALUE;
    std::memcpy(uuid, "mpinfer-cpu-emu!", 16);
    return CUDA_SUCCESS;
}

API CUresult cuDeviceGetUuid_v2(unsigned char* uuid, CUdevice device) { return cuDeviceGetUuid(uuid, device); }

API CUresult cuMemGetInfo_v2(size_t* free, size_t* total) {
    if (CUresult r = need_context()) return r;
    size_t all = (size_t)sysconf(_SC_PHYS_PAGES) * (size_t)sysconf(_SC_PAGESIZE);
    if (total) *total = all;
    if (free) *free = (size_t)sysconf(_SC_AVPHYS_PAGES) * (size_t)sysconf(_SC_PAGESIZE);
    return CUDA_SUCCESS;
}

// ---------------------------------------------------------------- contexts

API CUresult cuDevicePrimaryCtxRetain(CUcontext* ctx, CUdevice device) {
    if (!driver().initialized) return CUDA_ERROR_NOT_INITIALIZED;
    if (device != 0) return CUDA_ERROR_INVALID_DEVICE;
    if (!ctx) return CUDA_ERROR_INVALID_VALUE;
    std::lock_guard<std::mutex> lock(driver().mutex);
    ++driver().primary.retained;
    *ctx = &driver().primary;
    return CUDA_SUCCESS;
}

API CUresult cuDevicePrimaryCtxRelease_v2(CUdevice device) {
    if (!driver().initialized) return CUDA_ERROR_NOT_INITIALIZED;
    if (device != 0) return CUDA_ERROR_INVALID_DEVICE;
    std::lock_guard<std::mutex> lock(driver().mutex);
    if (driver().primary.retained == 0) return CUDA_ERROR_INVALID_CONTEXT;
    --driver().primary.retained;
    return CUDA_SUCCESS;
}

API CUresult cuCtxSetCurrent(CUcontext ctx) {
    if (!driver().initialized) return CUDA_ERROR_NOT_INITIALIZED;
    if (ctx && ctx != &driver().primary) return CUDA_ERROR_INVALID_CONTEXT;
    current_ctx = ctx;
    return CUDA_SUCCESS;
}

API CUresult cuCtxGetCurrent(CUcontext* ctx) {
    if (!driver().initialized) return CUDA_ERROR_NOT_INITIALIZED;
    if (!ctx) return CUDA_ERROR_INVALID_VALUE;
    *ctx = current_ctx;
    return CUDA_SUCCESS;
}

API CUresult cuCtxGetDevice(CUdevice* device) {
    if (CUresult r = need_context()) return r;
    if (!device) return CUDA_ERROR_INVALID_VALUE;
    *device = current_ctx->device;
    return CUDA_SUCCESS;
}

API CUresult cuCtxSynchronize() { return need_context(); }

// ---------------------------------------------------------------- modules

API CUresult cuModuleLoadData(CUmodule* module, const void* image) {
    if (CUresult r = need_context()) return r;
    if (!module || !image) return CUDA_ERROR_INVALID_VALUE;
    auto m = std::make_unique<Module>();
    if (!read_entries(image, m->entries)) return CUDA_ERROR_INVALID_IMAGE;
    std::lock_guard<std::mutex> lock(driver().mutex);
    *module = m.release();
    driver().modules.insert(*module);
    return CUDA_SUCCESS;
}

API CUresult cuModuleUnload(CUmodule module) {
    if (CUresult r = need_context()) return r;
    std::lock_guard<std::mutex> lock(driver().mutex);
    if (!driver().modules.erase(module)) return CUDA_ERROR_INVALID_HANDLE;
    // Functions of the module stay allocated: a stale handle then still
    // fails cleanly in cuLaunchKernel's lookup instead of reading freed
    // memory.
    delete module;
    return CUDA_SUCCESS;
}

API CUresult cuModuleGetFunction(CUfunction* function, CUmodule module, const char* name) {
    if (CUresult r = need_context()) return r;
    if (!function || !name) return CUDA_ERROR_INVALID_VALUE;
    std::lock_guard<std::mutex> lock(driver().mutex);
    if (!driver().modules.count(module)) return CUDA_ERROR_INVALID_HANDLE;
    if (!module->entries.count(name)) return CUDA_ERROR_NOT_FOUND;
    mpinfer_emu::Kernel kernel = mpinfer_emu::find_kernel(name);
    if (!kernel) {
        say("the module has kernel %s but the emulator has no host build of it", name);
        return CUDA_ERROR_NOT_FOUND;
    }
    *function = new Function{name, kernel};
    driver().functions.insert(*function);
    return CUDA_SUCCESS;
}

// ---------------------------------------------------------------- launches

API CUresult cuLaunchKernel(CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                            unsigned bz, unsigned shared_bytes, CUstream stream, void** params, void** extra) {
    if (CUresult r = need_context()) return r;
    if (!valid_stream(stream)) return CUDA_ERROR_INVALID_HANDLE;
    {
        std::lock_guard<std::mutex> lock(driver().mutex);
        if (!driver().functions.count(f)) return CUDA_ERROR_INVALID_HANDLE;
    }
    if (!params) return CUDA_ERROR_INVALID_VALUE;
    if (extra || shared_bytes) {
        say("%s: launch parameters through `extra` and dynamic shared memory are not emulated", f->name.c_str());
        return CUDA_ERROR_NOT_SUPPORTED;
    }
    // The hardware's limits (compute capability 9.0).
    if (gx == 0 || gy == 0 || gz == 0 || gx > 2147483647u || gy > 65535 || gz > 65535 || bx == 0 || by == 0 ||
        bz == 0 || bx > 1024 || by > 1024 || bz > 64 || (unsigned long long)bx * by * bz > 1024) {
        say("%s: grid (%u,%u,%u) of blocks (%u,%u,%u) is out of the device's limits", f->name.c_str(), gx, gy, gz,
            bx, by, bz);
        return CUDA_ERROR_INVALID_VALUE;
    }
    mpinfer_emu::Launch launch{f->name.c_str(), f->kernel, params, {gx, gy, gz}, {bx, by, bz}};
    std::string fault = mpinfer_emu::run_grid(launch);
    if (!fault.empty()) {
        say("fault in %s", fault.c_str());
        return CUDA_ERROR_LAUNCH_FAILED;
    }
    std::string broken = broken_guards(f->name.c_str());
    if (!broken.empty()) {
        say("%s wrote outside its buffers: the guard bytes of %s were overwritten", f->name.c_str(), broken.c_str());
        return CUDA_ERROR_ILLEGAL_ADDRESS;
    }
    return CUDA_SUCCESS;
}

// ---------------------------------------------------------------- memory

API CUresult cuMemAlloc_v2(CUdeviceptr* dptr, size_t bytes) { return allocate(dptr, bytes); }

API CUresult cuMemAllocAsync(CUdeviceptr* dptr, size_t bytes, CUstream stream) {
    if (!valid_stream(stream)) return CUDA_ERROR_INVALID_HANDLE;
    return allocate(dptr, bytes);
}

API CUresult cuMemFree_v2(CUdeviceptr ptr) { return release(ptr); }

API CUresult cuMemFreeAsync(CUdeviceptr ptr, CUstream stream) {
    if (!valid_stream(stream)) return CUDA_ERROR_INVALID_HANDLE;
    return release(ptr);
}

API CUresult cuMemcpyHtoD_v2(CUdeviceptr dst, const void* src, size_t bytes) {
    if (CUresult r = check_range(dst, bytes, "cuMemcpyHtoD")) return r;
    return copy((void*)dst, src, bytes);
}

API CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr dst, const void* src, size_t bytes, CUstream stream) {
    if (!valid_stream(stream)) return CUDA_ERROR_INVALID_HANDLE;
    return cuMemcpyHtoD_v2(dst, src, bytes);
}

API CUresult cuMemcpyDtoH_v2(void* dst, CUdeviceptr src, size_t bytes) {
    if (CUresult r = check_range(src, bytes, "cuMemcpyDtoH")) return r;
    return copy(dst, (const void*)src, bytes);
}

API CUresult cuMemcpyDtoHAsync_v2(void* dst, CUdeviceptr src, size_t bytes, CUstream stream) {
    if (!valid_stream(stream)) return CUDA_ERROR_INVALID_HANDLE;
    return cuMemcpyDtoH_v2(dst, src, bytes);
}

API CUresult cuMemcpyDtoD_v2(CUdeviceptr dst, CUdeviceptr src, size_t bytes) {
    if (CUresult r = check_range(dst, bytes, "cuMemcpyDtoD")) return r;
    if (CUresult r = check_range(src, bytes, "cuMemcpyDtoD")) return r;
    return copy((void*)dst, (const void*)src, bytes);
}

API CUresult cuMemcpyDtoDAsync_v2(CUdeviceptr dst, CUdeviceptr src, size_t bytes, CUstream stream) {
    if (!valid_stream(stream)) return CUDA_ERROR_INVALID_HANDLE;
    return cuMemcpyDtoD_v2(dst, src, bytes);
}

API CUresult cuMemsetD8_v2(CUdeviceptr dst, unsigned char value, size_t n) {
    if (CUresult r = check_range(dst, n, "cuMemsetD8")) return r;
    if (CUresult r = need_context()) return r;
    std::memset((void*)dst, value, n);
    return CUDA_SUCCESS;
}

API CUresult cuMemsetD8Async(CUdeviceptr dst, unsigned char value, size_t n, CUstream stream) {
    if (!valid_stream(stream)) return CUDA_ERROR_INVALID_HANDLE;
    return cuMemsetD8_v2(dst, value, n);
}

API CUresult cuMemsetD32_v2(CUdeviceptr dst, unsigned value, size_t n) {
    if (dst % 4) return CUDA_ERROR_INVALID_VALUE;
    if (CUresult r = check_range(dst, n * 4, "cuMemsetD32")) return r;
    if (CUresult r = need_context()) return r;
    auto* p = reinterpret_cast<unsigned*>(dst);
    for (size_t i = 0; i < n; ++i) p[i] = value;
    return CUDA_SUCCESS;
}

API CUresult cuMemsetD32Async(CUdeviceptr dst, unsigned value, size_t n, CUstream stream) {
    if (!valid_stream(stream)) return CUDA_ERROR_INVALID_HANDLE;
    return cuMemsetD32_v2(dst, value, n);
}

API CUresult cuMemAllocHost_v2(void** p, size_t bytes) {
    if (CUresult r = need_context()) return r;
    if (!p) return CUDA_ERROR_INVALID_VALUE;
    return posix_memalign(p, ALIGN, bytes ? bytes : 1) == 0 ? CUDA_SUCCESS : CUDA_ERROR_OUT_OF_MEMORY;
}

API CUresult cuMemHostAlloc(void** p, size_t bytes, unsigned flags) {
    (void)flags;
    return cuMemAllocHost_v2(p, bytes);
}

API CUresult cuMemFreeHost(void* p) {
    if (CUresult r = need_context()) return r;
    std::free(p);
    return CUDA_SUCCESS;
}

// ---------------------------------------------------------------- streams

API CUresult cuStreamCreate(CUstream* stream, unsigned flags) {
    (void)flags;
    if (CUresult r = need_context()) return r;
    if (!stream) return CUDA_ERROR_INVALID_VALUE;
    std::lock_guard<std::mutex> lock(driver().mutex);
    *stream = new Stream{current_ctx};
    driver().streams.insert(*stream);
    return CUDA_SUCCESS;
}

API CUresult cuStreamCreateWithPriority(CUstream* stream, unsigned flags, int priority) {
    (void)priority;
    return cuStreamCreate(stream, flags);
}

API CUresult cuStreamDestroy_v2(CUstream stream) {
    if (CUresult r = need_context()) return r;
    std::lock_guard<std::mutex> lock(driver().mutex);
    if (!driver().streams.erase(stream)) return CUDA_ERROR_INVALID_HANDLE;
    delete stream;
    return CUDA_SUCCESS;
}

API CUresult cuStreamSynchronize(CUstream stream) {
    if (CUresult r = need_context()) return r;
    return valid_stream(stream) ? CUDA_SUCCESS : CUDA_ERROR_INVALID_HANDLE;
}

API CUresult cuStreamQuery(CUstream stream) { return cuStreamSynchronize(stream); }

static bool valid_event(CUevent e) {
    std::lock_guard<std::mutex> lock(driver().mutex);
    return driver().events.count(e) > 0;
}

API CUresult cuStreamWaitEvent(CUstream stream, CUevent event, unsigned flags) {
    (void)flags;
    if (CUresult r = need_context()) return r;
    return valid_stream(stream) && valid_event(event) ? CUDA_SUCCESS : CUDA_ERROR_INVALID_HANDLE;
}

API CUresult cuLaunchHostFunc(CUstream stream, void (*fn)(void*), void* data) {
    if (CUresult r = need_context()) return r;
    if (!valid_stream(stream)) return CUDA_ERROR_INVALID_HANDLE;
    fn(data);
    return CUDA_SUCCESS;
}

// ---------------------------------------------------------------- events

API CUresult cuEventCreate(CUevent* event, unsigned flags) {
    (void)flags;
    if (CUresult r = need_context()) return r;
    if (!event) return CUDA_ERROR_INVALID_VALUE;
    std::lock_guard<std::mutex> lock(driver().mutex);
    *event = new Event;
    driver().events.insert(*event);
    return CUDA_SUCCESS;
}

API CUresult cuEventDestroy_v2(CUevent event) {
    if (CUresult r = need_context()) return r;
    std::lock_guard<std::mutex> lock(driver().mutex);
    if (!driver().events.erase(event)) return CUDA_ERROR_INVALID_HANDLE;
    delete event;
    return CUDA_SUCCESS;
}

API CUresult cuEventRecord(CUevent event, CUstream stream) {
    if (CUresult r = need_context()) return r;
    if (!valid_stream(stream) || !valid_event(event)) return CUDA_ERROR_INVALID_HANDLE;
    event->at = std::chrono::steady_clock::now();
    event->recorded = true;
    return CUDA_SUCCESS;
}

API CUresult cuEventSynchronize(CUevent event) {
    if (CUresult r = need_context()) return r;
    return valid_event(event) ? CUDA_SUCCESS : CUDA_ERROR_INVALID_HANDLE;
}

API CUresult cuEventQuery(CUevent event) { return cuEventSynchronize(event); }

API CUresult cuEventElapsedTime(float* ms, CUevent start, CUevent end) {
    if (CUresult r = need_context()) return r;
    if (!ms) return CUDA_ERROR_INVALID_VALUE;
    if (!valid_event(start) || !valid_event(end)) return CUDA_ERROR_INVALID_HANDLE;
    if (!start->recorded || !end->recorded) return CUDA_ERROR_INVALID_HANDLE;
    *ms = std::chrono::duration<float, std::milli>(end->at - start->at).count();
    return CUDA_SUCCESS;
}

API CUresult cuEventElapsedTime_v2(float* ms, CUevent start, CUevent end) { return cuEventElapsedTime(ms, start, end); }

// ---------------------------------------------------------------- the rest

// Entry points cudarc binds but these kernels' host code never calls: they
// exist so that a call fails with an error instead of cudarc panicking on a
// missing symbol. Their arguments are ignored, which the C calling
// convention allows.
#define UNSUPPORTED(name) \
    API CUresult name() { return CUDA_ERROR_NOT_SUPPORTED; }

UNSUPPORTED(cuCtxCreate_v3)
UNSUPPORTED(cuCtxCreate_v4)
UNSUPPORTED(cuCtxDestroy_v2)
UNSUPPORTED(cuCtxGetCacheConfig)
UNSUPPORTED(cuCtxSetCacheConfig)
UNSUPPORTED(cuCtxGetLimit)
UNSUPPORTED(cuCtxSetLimit)
UNSUPPORTED(cuCtxGetStreamPriorityRange)
UNSUPPORTED(cuCtxSetFlags)
UNSUPPORTED(cuCtxPushCurrent_v2)
UNSUPPORTED(cuCtxPopCurrent_v2)
UNSUPPORTED(cuDevicePrimaryCtxGetState)
UNSUPPORTED(cuDeviceGetDefaultMemPool)
UNSUPPORTED(cuDeviceGetMemPool)
UNSUPPORTED(cuDeviceSetMemPool)
UNSUPPORTED(cuModuleLoad)
UNSUPPORTED(cuModuleGetGlobal_v2)
UNSUPPORTED(cuFuncGetAttribute)
UNSUPPORTED(cuFuncSetAttribute)
UNSUPPORTED(cuFuncSetCacheConfig)
UNSUPPORTED(cuLaunchCooperativeKernel)
UNSUPPORTED(cuOccupancyAvailableDynamicSMemPerBlock)
UNSUPPORTED(cuOccupancyMaxActiveBlocksPerMultiprocessor)
UNSUPPORTED(cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags)
UNSUPPORTED(cuOccupancyMaxActiveClusters)
UNSUPPORTED(cuOccupancyMaxPotentialBlockSize)
UNSUPPORTED(cuOccupancyMaxPotentialBlockSizeWithFlags)
UNSUPPORTED(cuOccupancyMaxPotentialClusterSize)
UNSUPPORTED(cuMemAllocManaged)
UNSUPPORTED(cuMemAllocFromPoolAsync)
UNSUPPORTED(cuMemAdvise_v2)
UNSUPPORTED(cuMemPrefetchAsync_v2)
UNSUPPORTED(cuMemcpyPeerAsync)
UNSUPPORTED(cuMemHostRegister_v2)
UNSUPPORTED(cuMemHostUnregister)
UNSUPPORTED(cuMemPoolCreate)
UNSUPPORTED(cuMemPoolDestroy)
UNSUPPORTED(cuMemPoolGetAttribute)
UNSUPPORTED(cuMemPoolSetAttribute)
UNSUPPORTED(cuMemPoolTrimTo)
UNSUPPORTED(cuPointerGetAttribute)
UNSUPPORTED(cuStreamAttachMemAsync)
UNSUPPORTED(cuStreamBeginCapture_v2)
UNSUPPORTED(cuStreamEndCapture)
UNSUPPORTED(cuStreamIsCapturing)
UNSUPPORTED(cuGraphDestroy)
UNSUPPORTED(cuGraphExecDestroy)
UNSUPPORTED(cuGraphInstantiateWithFlags)
UNSUPPORTED(cuGraphLaunch)
UNSUPPORTED(cuGraphUpload)
UNSUPPORTED(cuImportExternalMemory)
UNSUPPORTED(cuExternalMemoryGetMappedBuffer)
UNSUPPORTED(cuDestroyExternalMemory)
