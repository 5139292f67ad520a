#include "asyncio/detail/frame_allocator.hpp"

#include <mutex>

#include "asyncio/detail/large_block.hpp"

namespace asyncio::detail {

ASYNCIO_TLS FramePool t_frame_pool{};

namespace {

constexpr std::size_t kSlabBytes = 64 * 1024;
// After this many 64 KiB slabs a thread's slabs are large blocks (2 MiB, huge pages): a program
// with a few thousand frames stays small, one with a million does not fault on every 4 KiB.
constexpr int kSmallSlabs = 32;
ASYNCIO_TLS int t_small_slabs = 0;

// Slabs are linked through their first block and never freed: frames may still be alive in static
// objects while the process exits. The list keeps them reachable for LeakSanitizer.
struct Slab {
    Slab* next;
};
Slab* g_slabs = nullptr;

// Free blocks handed back by threads that exited, per size class.
FreeFrame* g_orphans[kFrameClasses + 1] = {};
std::mutex g_mutex;

struct PoolReturner {
    bool armed = false;
    ~PoolReturner() {
        std::lock_guard lock(g_mutex);
        for (std::size_t c = 1; c <= kFrameClasses; ++c) {
            FreeFrame* head = t_frame_pool.heads[c];
            while (head != nullptr) {
                FreeFrame* next = head->next;
                head->next = g_orphans[c];
                g_orphans[c] = head;
                head = next;
            }
            t_frame_pool.heads[c] = nullptr;
        }
    }
};
thread_local PoolReturner t_returner;

}  // namespace

void* allocate_frame_slow(std::size_t c) {
    t_returner.armed = true;  // touching it registers the thread-exit hand-back
    const std::size_t block = c * kFrameGranule;
    {
        std::lock_guard lock(g_mutex);
        if (g_orphans[c] != nullptr) {
            t_frame_pool.heads[c] = g_orphans[c];
            g_orphans[c] = nullptr;
        } else {
            std::size_t bytes = kSlabBytes;
            char* raw = nullptr;
            if (t_small_slabs >= kSmallSlabs) {
                raw = static_cast<char*>(allocate_large_block(kLargeBlock));
                if (raw != nullptr) bytes = kLargeBlock;
            }
            if (raw == nullptr) {
                raw = static_cast<char*>(::operator new(kSlabBytes));
                ++t_small_slabs;
            }
            auto* slab = reinterpret_cast<Slab*>(raw);
            slab->next = g_slabs;
            g_slabs = slab;
            // The slab's first block holds the link; the rest are frames.
            char* first = raw + block;
            FreeFrame* head = nullptr;
            for (char* p = raw + (bytes / block) * block - block; p >= first; p -= block) {
                auto* f = reinterpret_cast<FreeFrame*>(p);
                f->next = head;
                head = f;
            }
            t_frame_pool.heads[c] = head;
        }
    }
    FreeFrame* head = t_frame_pool.heads[c];
    t_frame_pool.heads[c] = head->next;
    return head;
}

}  // namespace asyncio::detail
