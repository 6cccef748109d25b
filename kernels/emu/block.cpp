// Running a grid: blocks spread over a few OS threads, each block's CUDA
// threads as fibers of one OS thread, switched at barriers and warp-wide
// operations only.
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

#include "context.h"
#include "emu.h"
#include "half.h"

#if defined(__SANITIZE_ADDRESS__)
#define MPINFER_EMU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define MPINFER_EMU_ASAN 1
#endif
#endif

#ifdef MPINFER_EMU_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

namespace mpinfer_emu {

thread_local const Coords* current = nullptr;

namespace {

constexpr unsigned WARP = 32;
constexpr unsigned MAX_THREADS = 1024;
#ifdef MPINFER_EMU_ASAN
constexpr size_t STACK_BYTES = 512 * 1024;
#else
constexpr size_t STACK_BYTES = 128 * 1024;
#endif

enum class State { ready, at_barrier, in_warp_op, done };

struct Fiber {
    Context context;
    char* stack = nullptr;  // STACK_BYTES above a guard page
    Coords coords;
    unsigned tid = 0;
    State state = State::done;
    void* fake_stack = nullptr;  // AddressSanitizer's, while switched away
};

// What one lane hands to a warp-wide operation, and gets back.
enum class WarpOp : uint32_t { none, shfl, mma_f16, mma_bf16 };

struct LaneSlot {
    WarpOp op;
    uint32_t mask;
    uint64_t value;     // shfl operand
    uint32_t a[4];      // mma fragments
    uint32_t b[2];
    float c[4];
    float d[4];         // mma result
};

struct Warp {
    unsigned lanes = 0;   // threads of the block in this warp
    unsigned live = 0;    // of which not yet exited
    unsigned arrived = 0;
    unsigned generation = 0;
    // Two sets, by generation parity: a lane may deposit its operands for
    // the next operation while slower lanes still read this one's results,
    // and cannot get two ahead because each operation waits for all lanes.
    LaneSlot slots[2][WARP];
};

// One OS thread's block: reused by every block that thread runs.
struct Block {
    std::vector<Fiber> fibers;
    std::vector<Warp> warps;
    Context scheduler;
    const void* scheduler_stack = nullptr;  // AddressSanitizer bookkeeping
    size_t scheduler_stack_size = 0;
    const Launch* launch = nullptr;
    unsigned threads = 0;
    unsigned live = 0;
    unsigned at_barrier = 0;
    Fiber* running = nullptr;
    std::string error;

    ~Block() {
        for (Fiber& f : fibers) {
            if (f.stack) munmap(f.stack - getpagesize(), STACK_BYTES + getpagesize());
        }
    }
};

thread_local Block this_block;

void start_switch(void** fake_stack, const void* bottom, size_t size) {
#ifdef MPINFER_EMU_ASAN
    __sanitizer_start_switch_fiber(fake_stack, bottom, size);
#else
    (void)fake_stack, (void)bottom, (void)size;
#endif
}

void finish_switch(void* fake_stack, const void** old_bottom, size_t* old_size) {
#ifdef MPINFER_EMU_ASAN
    __sanitizer_finish_switch_fiber(fake_stack, old_bottom, old_size);
#else
    (void)fake_stack, (void)old_bottom, (void)old_size;
#endif
}

// From the running fiber back to the scheduler. A finished fiber passes
// `dying` so that AddressSanitizer drops its fake stack.
void to_scheduler(bool dying) {
    Block& b = this_block;
    Fiber* f = b.running;
    start_switch(dying ? nullptr : &f->fake_stack, b.scheduler_stack, b.scheduler_stack_size);
    switch_context(f->context, b.scheduler);
    finish_switch(f->fake_stack, nullptr, nullptr);
    current = &f->coords;
}

[[noreturn]] void fail(std::string why) {
    Block& b = this_block;
    if (b.error.empty()) {
        const Coords& c = b.running->coords;
        char where[160];
        std::snprintf(where, sizeof where, "%s, block (%u,%u,%u) thread (%u,%u,%u): ", b.launch->name,
                      c.block_idx.x, c.block_idx.y, c.block_idx.z, c.thread_idx.x, c.thread_idx.y,
                      c.thread_idx.z);
        b.error = where + why;
    }
    b.running->state = State::done;
    to_scheduler(true);
    std::abort();  // a failed fiber is never resumed
}

void release_barrier(Block& b) {
    b.at_barrier = 0;
    for (unsigned i = 0; i < b.threads; ++i) {
        if (b.fibers[i].state == State::at_barrier) b.fibers[i].state = State::ready;
    }
}

// A thread that exits counts as having arrived at the block's barrier, as
// on the hardware; leaving a warp mid-operation is a fault.
void exit_thread() {
    Block& b = this_block;
    Fiber& f = *b.running;
    Warp& w = b.warps[f.tid / WARP];
    if (w.arrived > 0) fail("exited while other lanes of its warp wait for it in a warp-wide operation");
    --w.live;
    --b.live;
    f.state = State::done;
    if (b.at_barrier > 0 && b.at_barrier == b.live) release_barrier(b);
    to_scheduler(true);
    std::abort();
}

void fiber_main() {
    finish_switch(nullptr, &this_block.scheduler_stack, &this_block.scheduler_stack_size);
    Block& b = this_block;
    current = &b.running->coords;
    b.launch->kernel(b.launch->params);
    exit_thread();
}

char* new_stack() {
    size_t page = getpagesize();
    void* p = mmap(nullptr, STACK_BYTES + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return nullptr;
    // A guard page below: an overflowing thread faults instead of
    // overwriting its neighbour.
    mprotect(p, page, PROT_NONE);
    return static_cast<char*>(p) + page;
}

bool prepare(Block& b, const Launch& l, unsigned linear_block) {
    unsigned threads = l.block.x * l.block.y * l.block.z;
    if (b.fibers.size() < threads) b.fibers.resize(threads);
    b.warps.resize((threads + WARP - 1) / WARP);
    b.launch = &l;
    b.threads = b.live = threads;
    b.at_barrier = 0;
    b.error.clear();
    uint3 block_idx = {linear_block % l.grid.x, linear_block / l.grid.x % l.grid.y,
                       linear_block / (l.grid.x * l.grid.y)};
    for (unsigned w = 0; w < b.warps.size(); ++w) {
        Warp& warp = b.warps[w];
        warp.lanes = warp.live = std::min(WARP, threads - w * WARP);
        warp.arrived = 0;
        warp.generation = 0;
    }
    for (unsigned t = 0; t < threads; ++t) {
        Fiber& f = b.fibers[t];
        if (!f.stack && !(f.stack = new_stack())) {
            b.error = std::string(l.name) + ": out of memory for thread stacks";
            return false;
        }
#ifdef MPINFER_EMU_ASAN
        // A fiber abandoned by a fault leaves its frames' poison behind.
        ASAN_UNPOISON_MEMORY_REGION(f.stack, STACK_BYTES);
#endif
        f.tid = t;
        f.coords = {{t % l.block.x, t / l.block.x % l.block.y, t / (l.block.x * l.block.y)},
                    block_idx,
                    l.block,
                    l.grid};
        f.state = State::ready;
        f.fake_stack = nullptr;
        prepare_context(f.context, f.stack, STACK_BYTES, fiber_main);
    }
    return true;
}

void resume(Block& b, Fiber& f) {
    b.running = &f;
    void* fake_stack = nullptr;
    start_switch(&fake_stack, f.stack, STACK_BYTES);
    switch_context(b.scheduler, f.context);
    finish_switch(fake_stack, nullptr, nullptr);
}

// Runs warp w until none of its threads can go on; whether any ran.
bool run_warp(Block& b, unsigned w) {
    unsigned first = w * WARP, end = std::min(b.threads, first + WARP);
    bool ran = false;
    for (bool again = true; again && b.error.empty();) {
        again = false;
        for (unsigned t = first; t < end && b.error.empty(); ++t) {
            if (b.fibers[t].state != State::ready) continue;
            resume(b, b.fibers[t]);
            ran = again = true;
        }
    }
    return ran;
}

// Runs one block on this OS thread; "" or the fault. Each warp runs as far
// as it can before the next starts, up to a __syncthreads that the others
// have not reached: a missing barrier then lets one warp overwrite shared
// memory that another has yet to read. Odd blocks take their warps last to
// first, so that a race is caught whichever side of it runs ahead.
std::string run_block(const Launch& l, unsigned linear_block) {
    Block& b = this_block;
    if (!prepare(b, l, linear_block)) return b.error;
    const Coords* outer = current;
    unsigned warps = (unsigned)b.warps.size();
    while (b.live > 0 && b.error.empty()) {
        bool ran = false;
        for (unsigned i = 0; i < warps && b.error.empty(); ++i) {
            ran |= run_warp(b, linear_block % 2 ? warps - 1 - i : i);
        }
        if (!ran && b.error.empty()) {
            unsigned in_warp_ops = 0;
            for (unsigned t = 0; t < b.threads; ++t) in_warp_ops += b.fibers[t].state == State::in_warp_op;
            char why[200];
            std::snprintf(why, sizeof why,
                          "%s: deadlock in block %u: %u threads wait at __syncthreads, %u in warp-wide "
                          "operations, %u exited",
                          l.name, linear_block, b.at_barrier, in_warp_ops, b.threads - b.live);
            b.error = why;
        }
    }
    current = outer;
    b.running = nullptr;
    return b.error;
}

// The calling fiber's warp and lane, checked to be a whole warp taking part.
Warp& whole_warp(uint32_t mask, unsigned& lane) {
    Block& b = this_block;
    Fiber& f = *b.running;
    Warp& w = b.warps[f.tid / WARP];
    lane = f.tid % WARP;
    uint32_t all = w.lanes == WARP ? 0xffffffffu : (1u << w.lanes) - 1;
    if (mask != all || w.live != w.lanes) {
        char why[160];
        std::snprintf(why, sizeof why,
                      "warp-wide operation with mask %#x over a warp of %u threads, %u not exited: only "
                      "whole warps are emulated",
                      mask, w.lanes, w.live);
        fail(why);
    }
    return w;
}

void check_same_op(Warp& w, LaneSlot* slots) {
    for (unsigned i = 1; i < w.lanes; ++i) {
        if (slots[i].op != slots[0].op || slots[i].mask != slots[0].mask) {
            fail("lanes of one warp meet in different warp-wide operations");
        }
    }
}

float widen(uint16_t bits, WarpOp op) {
    if (op == WarpOp::mma_f16) return f16_to_f32(bits);
    uint32_t u = (uint32_t)bits << 16;
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
}

// D = A·B + C for the whole warp, from the PTX ISA's fragment layouts for
// m16n8k16 with 16-bit A and B (groupID = lane / 4, threadID_in_group =
// lane % 4; register r of a lane holds elements 2r (low half) and 2r + 1):
//   A (16x16, row): element i at row groupID (+8 for i in 2,3,6,7),
//                   column 2*threadID_in_group + i%2 (+8 for i >= 4)
//   B (16x8, col):  element i at row 2*threadID_in_group + i%2 (+8 for
//                   i >= 2), column groupID
//   C, D (16x8):    element i at row groupID (+8 for i >= 2), column
//                   2*threadID_in_group + i%2
// Products of 16-bit values are exact in double, and the sum is rounded to
// f32 once: at least as accurate as the tensor cores, whose internal
// rounding is not specified.
void mma(LaneSlot* slots, WarpOp op) {
    double a[16][16], b[16][8];
    for (unsigned lane = 0; lane < WARP; ++lane) {
        unsigned g = lane / 4, t = lane % 4;
        const LaneSlot& s = slots[lane];
        for (unsigned i = 0; i < 8; ++i) {
            uint16_t bits = (uint16_t)(s.a[i / 2] >> (16 * (i % 2)));
            unsigned row = g + ((i % 4) >= 2 ? 8 : 0);
            unsigned col = 2 * t + i % 2 + (i >= 4 ? 8 : 0);
            a[row][col] = widen(bits, op);
        }
        for (unsigned i = 0; i < 4; ++i) {
            uint16_t bits = (uint16_t)(s.b[i / 2] >> (16 * (i % 2)));
            b[2 * t + i % 2 + (i >= 2 ? 8 : 0)][g] = widen(bits, op);
        }
    }
    for (unsigned lane = 0; lane < WARP; ++lane) {
        unsigned g = lane / 4, t = lane % 4;
        LaneSlot& s = slots[lane];
        for (unsigned i = 0; i < 4; ++i) {
            unsigned row = g + (i >= 2 ? 8 : 0), col = 2 * t + i % 2;
            double acc = 0.0;
            for (unsigned k = 0; k < 16; ++k) acc += a[row][k] * b[k][col];
            s.d[i] = (float)(acc + s.c[i]);
        }
    }
}

// Deposits nothing itself: the caller filled its slot. Waits for the whole
// warp; the last lane to arrive carries out the operation for all.
LaneSlot& warp_op(Warp& w, unsigned lane) {
    Block& b = this_block;
    LaneSlot* slots = w.slots[w.generation % 2];
    if (++w.arrived == w.lanes) {
        check_same_op(w, slots);
        if (slots[0].op == WarpOp::mma_f16 || slots[0].op == WarpOp::mma_bf16) mma(slots, slots[0].op);
        w.arrived = 0;
        ++w.generation;
        unsigned first = (b.running->tid / WARP) * WARP;
        for (unsigned i = 0; i < w.lanes; ++i) {
            Fiber& f = b.fibers[first + i];
            if (f.state == State::in_warp_op) f.state = State::ready;
        }
    } else {
        b.running->state = State::in_warp_op;
        to_scheduler(false);
    }
    return slots[lane];
}

LaneSlot& my_slot(Warp& w, unsigned lane, WarpOp op, uint32_t mask) {
    LaneSlot& s = w.slots[w.generation % 2][lane];
    s.op = op;
    s.mask = mask;
    return s;
}

void mma_warp(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2], WarpOp op) {
    unsigned lane;
    Warp& w = whole_warp(0xffffffffu, lane);
    if (w.lanes != WARP) fail("mma.sync in a partial warp");
    LaneSlot& s = my_slot(w, lane, op, 0xffffffffu);
    std::memcpy(s.a, a, sizeof s.a);
    std::memcpy(s.b, b, sizeof s.b);
    std::memcpy(s.c, d, sizeof s.c);
    std::memcpy(d, warp_op(w, lane).d, sizeof d);
}

// ------------------------------------------------------------ the grid

struct Job {
    const Launch* launch;
    unsigned blocks;
    std::atomic<unsigned> next{0};
    unsigned workers = 0;  // pool threads inside work(), under the pool's mutex
    std::string error;     // the first fault, under the pool's mutex
};

class Pool {
public:
    static Pool& get() {
        // Never destroyed: its threads wait on it until the process exits.
        static Pool* pool = new Pool(helper_count());
        return *pool;
    }

    void run(Job& job) {
        if (job.blocks > 1 && !threads_.empty()) {
            std::lock_guard<std::mutex> lock(mutex_);
            jobs_.push_back(&job);
            wake_.notify_all();
        }
        work(job);
        std::unique_lock<std::mutex> lock(mutex_);
        for (auto it = jobs_.begin(); it != jobs_.end(); ++it) {
            if (*it == &job) {
                jobs_.erase(it);
                break;
            }
        }
        idle_.wait(lock, [&] { return job.workers == 0; });
    }

private:
    explicit Pool(unsigned helpers) {
        for (unsigned i = 0; i < helpers; ++i) threads_.emplace_back([this] { serve(); });
        for (std::thread& t : threads_) t.detach();
    }

    // Helpers beside the launching thread: MPINFER_EMU_THREADS in all, or
    // one per core.
    static unsigned helper_count() {
        unsigned n = std::thread::hardware_concurrency();
        if (const char* env = std::getenv("MPINFER_EMU_THREADS")) n = (unsigned)std::atoi(env);
        return n > 1 ? n - 1 : 0;
    }

    void work(Job& job) {
        for (unsigned i; (i = job.next.fetch_add(1)) < job.blocks;) {
            std::string error = run_block(*job.launch, i);
            if (!error.empty()) {
                std::lock_guard<std::mutex> lock(mutex_);
                if (job.error.empty()) job.error = error;
                job.next = job.blocks;
            }
        }
    }

    void serve() {
        std::unique_lock<std::mutex> lock(mutex_);
        for (;;) {
            Job* job = nullptr;
            wake_.wait(lock, [&] {
                for (Job* j : jobs_) {
                    if (j->next.load() < j->blocks) return (job = j) != nullptr;
                }
                return false;
            });
            ++job->workers;
            lock.unlock();
            work(*job);
            lock.lock();
            if (--job->workers == 0) idle_.notify_all();
        }
    }

    std::mutex mutex_;
    std::condition_variable wake_, idle_;
    std::deque<Job*> jobs_;
    std::vector<std::thread> threads_;
};

}  // namespace

void sync_block() {
    Block& b = this_block;
    if (++b.at_barrier == b.live) {
        release_barrier(b);
        return;
    }
    b.running->state = State::at_barrier;
    to_scheduler(false);
}

uint64_t shfl_xor(uint32_t mask, uint64_t bits, int lane_mask, int width) {
    unsigned lane;
    Warp& w = whole_warp(mask, lane);
    if (width <= 0 || width > (int)WARP || (width & (width - 1))) fail("__shfl_xor_sync width not a power of two up to 32");
    LaneSlot& s = my_slot(w, lane, WarpOp::shfl, mask);
    s.value = bits;
    LaneSlot* slots = &warp_op(w, lane) - lane;
    // A source lane past the end of the caller's group of `width` gives the
    // caller its own value.
    unsigned src = lane ^ (unsigned)lane_mask;
    unsigned group_end = (lane / width + 1) * width;
    if (src >= group_end || src >= w.lanes) src = lane;
    return slots[src].value;
}

void mma_m16n8k16_f16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
    mma_warp(d, a, b, WarpOp::mma_f16);
}

void mma_m16n8k16_bf16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
    mma_warp(d, a, b, WarpOp::mma_bf16);
}

void trap(const char* what) {
    if (!this_block.running) {
        std::fprintf(stderr, "mpinfer-emu: %s outside a kernel\n", what);
        std::abort();
    }
    fail(what);
}

std::string run_grid(const Launch& launch) {
    unsigned threads = launch.block.x * launch.block.y * launch.block.z;
    if (threads == 0 || threads > MAX_THREADS) {
        return std::string(launch.name) + ": " + std::to_string(threads) + " threads per block";
    }
    Job job;
    job.launch = &launch;
    job.blocks = launch.grid.x * launch.grid.y * launch.grid.z;
    Pool::get().run(job);
    return job.error;
}

}  // namespace mpinfer_emu
