// Scheduled callbacks of one loop. Callbacks live in slots (chunked, so a slot never moves); timers
// are ordered by {deadline, sequence} so that timers with equal deadlines run in the order they were
// scheduled. Most programs schedule deadlines in increasing order (every sleep(d) with the same d),
// so a timer whose deadline is not earlier than the last one in the `sorted_` FIFO is appended there
// (O(1), sequential memory); only an out-of-order deadline goes to the binary heap. The earliest
// timer is the smaller of the two fronts. Cancelling frees the slot (its generation changes) and
// drops the entry at once when it is at an end of the FIFO or the last leaf of the heap (a timer
// cancelled right after it was added, as wait_for() around a ready value does, or timers cancelled
// in the order they were made); any other stale entry is skipped when it reaches the top, and the
// heap is compacted when stale entries outnumber live ones, so cancel is O(1) and memory stays
// bounded. call_soon callbacks use slots too (not the heap),
// which is what makes their Handles cancellable without an allocation.
#pragma once

#include <cstdint>
#include <memory>
#include <new>
#include <vector>

#include "asyncio/detail/callback.hpp"
#include "asyncio/detail/large_block.hpp"

namespace asyncio::detail {

struct TimerId {
    std::uint32_t slot = 0;
    std::uint32_t gen = 0;  // 0 never names a live slot
};

inline void* pack_timer_id(TimerId id) noexcept {
    return reinterpret_cast<void*>((std::uintptr_t(id.slot) << 32) | id.gen);
}
inline TimerId unpack_timer_id(void* p) noexcept {
    const auto v = reinterpret_cast<std::uintptr_t>(p);
    return TimerId{std::uint32_t(v >> 32), std::uint32_t(v)};
}

class TimerQueue {
public:
    struct HeapEntry {
        std::int64_t when;
        std::uint64_t seq;
        TimerId id;
    };

    TimerQueue() = default;
    TimerQueue(const TimerQueue&) = delete;
    TimerQueue& operator=(const TimerQueue&) = delete;
    ~TimerQueue() { free_chunks(); }

    /// A slot holding cb, not yet in the heap (for call_soon).
    TimerId make_slot(Callback&& cb) {
        std::uint32_t idx;
        if (free_ != kNone) {
            idx = free_;
            free_ = slot(idx).next_free;
        } else {
            if ((count_ & kChunkMask) == 0) add_chunk();
            idx = count_++;
        }
        Slot& s = slot(idx);
        s.cb = std::move(cb);  // (queued is false: a new slot, or cleared when it was freed)
        ++live_;
        return TimerId{idx, s.gen};
    }

    /// Schedules cb at `when` (nanoseconds on the loop's clock).
    TimerId add(std::int64_t when, Callback&& cb) {
        const TimerId id = make_slot(std::move(cb));
        slot(id.slot).queued = true;
        const HeapEntry e{when, seq_++, id};
        if (sorted_.empty() || when >= sorted_.back().when)
            sorted_.push_back(e);
        else
            push_heap(e);
        return id;
    }

    bool alive(TimerId id) const noexcept {
        return id.slot < count_ && slot(id.slot).gen == id.gen && id.gen != 0;
    }

    /// Frees the slot; true if the callback had not run and was not cancelled yet.
    bool cancel(TimerId id) noexcept {
        if (!alive(id)) return false;
        const bool queued = slot(id.slot).queued;
        release(id.slot);
        if (queued) drop_entry(id);
        return true;
    }

    /// Runs the callback of a slot (if still alive) and frees the slot.
    void run(TimerId id) {
        if (!alive(id)) return;
        Slot& s = slot(id.slot);
        // Bump the generation first: a cancel() of this handle from inside the callback is a no-op.
        ++s.gen;
        if (s.gen == 0) s.gen = 1;
        --live_;
        struct Release {
            TimerQueue* q;
            std::uint32_t idx;
            ~Release() {
                Slot& s = q->slot(idx);
                s.cb.reset();
                s.next_free = q->free_;
                q->free_ = idx;
            }
        } release{this, id.slot};
        s.cb();
    }

    /// Number of timers in the heap that are still pending.
    bool has_timers() noexcept {
        prune();
        return !heap_.empty() || !sorted_.empty();
    }
    /// Earliest deadline; call has_timers() first.
    std::int64_t next_deadline() const noexcept { return earliest().when; }

    /// Removes the earliest timer if it is due (when <= now); false when nothing is due.
    bool pop_due(std::int64_t now, TimerId& out) noexcept {
        prune();
        if (heap_.empty() && sorted_.empty()) return false;
        const bool from_sorted = heap_.empty() || (!sorted_.empty() && less(sorted_.front(), heap_.front()));
        const HeapEntry& e = from_sorted ? sorted_.front() : heap_.front();
        if (e.when > now) return false;
        out = e.id;
        slot(out.slot).queued = false;
        if (from_sorted)
            sorted_.pop_front();
        else
            pop_heap();
        return true;
    }

    std::size_t live_slots() const noexcept { return live_; }

    /// Drops every callback (loop close).
    void clear() noexcept {
        heap_.clear();
        sorted_.clear();
        // Emptied before the callbacks are destroyed: a cancel() from one of their destructors
        // (a handle kept in a callback) finds its timer gone.
        count_ = 0;
        free_ = kNone;
        live_ = 0;
        stale_ = 0;
        free_chunks();
    }

private:
    static constexpr std::uint32_t kChunkBits = 10;
    static constexpr std::uint32_t kChunk = 1u << kChunkBits;
    static constexpr std::uint32_t kChunkMask = kChunk - 1;
    static constexpr std::uint32_t kNone = 0xffffffffu;

    struct Slot {
        Callback cb;
        std::uint32_t gen = 1;
        std::uint32_t next_free = kNone;
        bool queued = false;  // an entry in sorted_ or heap_ names it (a timer not yet due)
    };

    static constexpr std::size_t kChunkBytes = sizeof(Slot) * kChunk;
    // The first chunks are allocated one by one; past them (tens of thousands of timers) chunks
    // are carved from 2 MiB huge-page blocks, so a million timers do not fault on every 4 KiB.
    static constexpr std::size_t kSmallChunks = 32;

    void add_chunk() {
        chunks_.reserve(chunks_.size() + 1);  // first: nothing to undo if it throws
        void* mem = nullptr;
        if (chunks_.size() >= kSmallChunks) {
            if (arena_left_ < kChunkBytes) {
                large_.reserve(large_.size() + 1);
                if (void* block = allocate_large_block(kLargeBlock)) {
                    large_.push_back(block);
                    arena_ = static_cast<char*>(block);
                    arena_left_ = kLargeBlock;
                }
            }
            if (arena_left_ >= kChunkBytes) {
                mem = arena_;
                arena_ += kChunkBytes;
                arena_left_ -= kChunkBytes;
            }
        }
        const bool small = mem == nullptr;
        if (small) mem = ::operator new(kChunkBytes, std::align_val_t{alignof(Slot)});
        Slot* chunk = static_cast<Slot*>(mem);
        for (std::uint32_t i = 0; i < kChunk; ++i) ::new (static_cast<void*>(chunk + i)) Slot();
        chunks_.push_back(Chunk{chunk, small});
    }

    void free_chunks() noexcept {
        for (const Chunk& c : chunks_) {
            for (std::uint32_t i = 0; i < kChunk; ++i) c.slots[i].~Slot();
            if (c.small) ::operator delete(c.slots, std::align_val_t{alignof(Slot)});
        }
        chunks_.clear();
        for (void* block : large_) free_large_block(block, kLargeBlock);
        large_.clear();
        arena_ = nullptr;
        arena_left_ = 0;
    }

    Slot& slot(std::uint32_t i) noexcept { return chunks_[i >> kChunkBits].slots[i & kChunkMask]; }
    const Slot& slot(std::uint32_t i) const noexcept {
        return chunks_[i >> kChunkBits].slots[i & kChunkMask];
    }

    void release(std::uint32_t idx) noexcept {
        Slot& s = slot(idx);
        s.cb.reset();
        ++s.gen;
        if (s.gen == 0) s.gen = 1;
        s.queued = false;
        s.next_free = free_;
        free_ = idx;
        --live_;
    }

    static bool same(TimerId a, TimerId b) noexcept { return a.slot == b.slot && a.gen == b.gen; }

    /// The entry of a cancelled timer: removed at once from an end, else left stale.
    void drop_entry(TimerId id) noexcept {
        if (!sorted_.empty() && same(sorted_.back().id, id)) {
            sorted_.pop_back();
        } else if (!sorted_.empty() && same(sorted_.front().id, id)) {
            sorted_.pop_front();
        } else if (!heap_.empty() && same(heap_.back().id, id)) {
            heap_.pop_back();  // the last leaf: the heap property holds without it
        } else {
            ++stale_;
            if (stale_ > 64 && stale_ > (heap_.size() + sorted_.size()) / 2) compact();
        }
    }

    static bool less(const HeapEntry& a, const HeapEntry& b) noexcept {
        return a.when < b.when || (a.when == b.when && a.seq < b.seq);
    }

    void push_heap(const HeapEntry& e) {
        heap_.push_back(e);
        std::size_t i = heap_.size() - 1;
        while (i > 0) {
            const std::size_t parent = (i - 1) / 2;
            if (!less(e, heap_[parent])) break;
            heap_[i] = heap_[parent];
            i = parent;
        }
        heap_[i] = e;
    }

    void sift_down(std::size_t i) noexcept {
        const std::size_t n = heap_.size();
        const HeapEntry e = heap_[i];
        for (;;) {
            std::size_t child = 2 * i + 1;
            if (child >= n) break;
            if (child + 1 < n && less(heap_[child + 1], heap_[child])) ++child;
            if (!less(heap_[child], e)) break;
            heap_[i] = heap_[child];
            i = child;
        }
        heap_[i] = e;
    }

    void pop_heap() noexcept {
        heap_.front() = heap_.back();
        heap_.pop_back();
        if (!heap_.empty()) sift_down(0);
    }

    const HeapEntry& earliest() const noexcept {
        if (heap_.empty()) return sorted_.front();
        if (sorted_.empty()) return heap_.front();
        return less(sorted_.front(), heap_.front()) ? sorted_.front() : heap_.front();
    }

    // Entries whose slot was cancelled (generation moved on) are dropped from the fronts.
    void prune() noexcept {
        while (!heap_.empty() && !alive(heap_.front().id)) {
            pop_heap();
            if (stale_ > 0) --stale_;
        }
        while (!sorted_.empty() && !alive(sorted_.front().id)) {
            sorted_.pop_front();
            if (stale_ > 0) --stale_;
        }
    }

    void compact() noexcept {
        std::size_t out = 0;
        for (const HeapEntry& e : heap_)
            if (alive(e.id)) heap_[out++] = e;
        heap_.resize(out);
        for (std::size_t i = out / 2; i-- > 0;) sift_down(i);
        sorted_.remove_if([this](const HeapEntry& e) { return !alive(e.id); });
        stale_ = 0;
    }

    // A growable ring of entries in deadline order.
    class SortedFifo {
    public:
        bool empty() const noexcept { return head_ == tail_; }
        std::size_t size() const noexcept { return tail_ - head_; }
        const HeapEntry& front() const noexcept { return buf_[head_ & (cap_ - 1)]; }
        const HeapEntry& back() const noexcept { return buf_[(tail_ - 1) & (cap_ - 1)]; }
        void push_back(const HeapEntry& e) {
            if (tail_ - head_ == cap_) grow();
            buf_[tail_++ & (cap_ - 1)] = e;
        }
        void pop_front() noexcept { ++head_; }
        void pop_back() noexcept { --tail_; }
        SortedFifo() = default;
        SortedFifo(const SortedFifo&) = delete;
        SortedFifo& operator=(const SortedFifo&) = delete;
        ~SortedFifo() { release(buf_, cap_); }
        void clear() noexcept {
            release(buf_, cap_);
            buf_ = nullptr;
            cap_ = head_ = tail_ = 0;
        }
        template <class Pred>
        void remove_if(Pred dead) {
            std::size_t out = head_;
            for (std::size_t i = head_; i != tail_; ++i) {
                const HeapEntry e = buf_[i & (cap_ - 1)];
                if (!dead(e)) buf_[out++ & (cap_ - 1)] = e;
            }
            tail_ = out;
        }

    private:
        // A ring of 2 MiB or more is on huge pages (large_block.hpp).
        static void release(HeapEntry* buf, std::size_t cap) noexcept {
            free_table(buf, cap * sizeof(HeapEntry));
        }
        void grow() {
            const std::size_t ncap = cap_ == 0 ? 256 : cap_ * 2;
            auto* nbuf = static_cast<HeapEntry*>(allocate_table(ncap * sizeof(HeapEntry)));
            for (std::size_t i = head_; i != tail_; ++i) nbuf[i - head_] = buf_[i & (cap_ - 1)];
            release(buf_, cap_);
            tail_ -= head_;
            head_ = 0;
            buf_ = nbuf;
            cap_ = ncap;
        }
        HeapEntry* buf_ = nullptr;
        std::size_t cap_ = 0;
        std::size_t head_ = 0;
        std::size_t tail_ = 0;
    };

    std::vector<HeapEntry> heap_;
    SortedFifo sorted_;
    struct Chunk {
        Slot* slots;
        bool small;  // its own allocation (else part of a block of large_)
    };
    std::vector<Chunk> chunks_;
    std::vector<void*> large_;  // 2 MiB blocks that chunks are carved from
    char* arena_ = nullptr;     // the free rest of the newest block
    std::size_t arena_left_ = 0;
    std::uint32_t count_ = 0;  // slots ever made
    std::uint32_t free_ = kNone;
    std::size_t live_ = 0;
    std::size_t stale_ = 0;
    std::uint64_t seq_ = 0;
};

}  // namespace asyncio::detail
