// Coroutine frames (generators, coroutines, tasks) are allocated here: per-thread free lists by size
// class, carved from 64 KiB slabs, so that a frame costs no malloc header and allocating one is a
// pointer pop. Blocks may be freed on another thread than the one that allocated them (they move to
// that thread's list). Slabs are kept for the life of the process. Under AddressSanitizer every frame
// goes to operator new/delete instead, so that use-after-free of a frame is still caught.
#pragma once

#include <cstddef>
#include <cstdint>
#include <new>

#include "asyncio/detail/config.hpp"

namespace asyncio::detail {

inline constexpr std::size_t kFrameGranule = 16;
inline constexpr std::size_t kFrameClasses = 64;  // pooled sizes: up to 1 KiB
inline constexpr std::size_t kFramePoolMax = kFrameGranule * kFrameClasses;

struct FreeFrame {
    FreeFrame* next;
};

struct FramePool {
    FreeFrame* heads[kFrameClasses + 1];
    std::int64_t live;  // frames allocated minus frames freed on this thread
};

// Trivially destructible on purpose: a thread_local with a destructor costs a guard on every access.
extern ASYNCIO_TLS FramePool t_frame_pool;

void* allocate_frame_slow(std::size_t size_class);

inline void* allocate_frame(std::size_t n) {
    ++t_frame_pool.live;
#if ASYNCIO_FRAME_POOL
    if (n <= kFramePoolMax) {
        const std::size_t c = (n + kFrameGranule - 1) / kFrameGranule;
        FreeFrame* head = t_frame_pool.heads[c];
        if (head != nullptr) {
            t_frame_pool.heads[c] = head->next;
            return head;
        }
        return allocate_frame_slow(c);
    }
#endif
    return ::operator new(n);
}

inline void deallocate_frame(void* p, [[maybe_unused]] std::size_t n) noexcept {
    --t_frame_pool.live;
#if ASYNCIO_FRAME_POOL
    if (n <= kFramePoolMax) {
        const std::size_t c = (n + kFrameGranule - 1) / kFrameGranule;
        auto* f = static_cast<FreeFrame*>(p);
        f->next = t_frame_pool.heads[c];
        t_frame_pool.heads[c] = f;
        return;
    }
#endif
    ::operator delete(p);  // unsized: clang 14 has no sized deallocation by default
}

/// Frames allocated and not yet freed by this thread (tests use it to check nothing leaked).
inline std::int64_t live_frames() noexcept { return t_frame_pool.live; }

/// Mixed into every promise type of the library.
struct FrameAllocated {
    static void* operator new(std::size_t n) { return allocate_frame(n); }
    static void operator delete(void* p, std::size_t n) noexcept { deallocate_frame(p, n); }
};

}  // namespace asyncio::detail
