// The loop's ready queue: a growable ring buffer of {function, context} pairs. An entry is two
// words, so scheduling a task or a callback never allocates once the ring has grown.
#pragma once

#include <cstddef>
#include <new>

#include "asyncio/detail/large_block.hpp"

namespace asyncio::detail {

struct ReadyEntry {
    void (*fn)(void*);
    void* ctx;
};

class ReadyQueue {
public:
    ReadyQueue() = default;
    ReadyQueue(const ReadyQueue&) = delete;
    ReadyQueue& operator=(const ReadyQueue&) = delete;
    ~ReadyQueue() { release(buf_, cap_); }

    bool empty() const noexcept { return head_ == tail_; }
    std::size_t size() const noexcept { return tail_ - head_; }

    void push(void (*fn)(void*), void* ctx) {
        if (tail_ - head_ == cap_) grow();
        buf_[tail_++ & (cap_ - 1)] = ReadyEntry{fn, ctx};
    }
    ReadyEntry pop() noexcept { return buf_[head_++ & (cap_ - 1)]; }
    /// Changes with every pop(): tells the callback now running from the one before (the loop's
    /// cooperative I/O budget is per callback; see EventLoop::consume_io_budget).
    std::size_t position() const noexcept { return head_; }
    void clear() noexcept { head_ = tail_ = 0; }
    /// The i-th entry from the back (0: the newest), i < size(): for seeded chaos (testing.hpp).
    ReadyEntry& from_back(std::size_t i) noexcept { return buf_[(tail_ - 1 - i) & (cap_ - 1)]; }

private:
    // A ring of 2 MiB or more (131,072 entries: that many ready tasks) is on huge pages.
    static void release(ReadyEntry* buf, std::size_t cap) noexcept {
        free_table(buf, cap * sizeof(ReadyEntry));
    }

    [[gnu::noinline, gnu::cold]] void grow() {
        const std::size_t ncap = cap_ == 0 ? 1024 : cap_ * 2;
        auto* nbuf = static_cast<ReadyEntry*>(allocate_table(ncap * sizeof(ReadyEntry)));
        const std::size_t n = tail_ - head_;
        for (std::size_t i = 0; i < n; ++i) nbuf[i] = buf_[(head_ + i) & (cap_ - 1)];
        release(buf_, cap_);
        buf_ = nbuf;
        cap_ = ncap;
        head_ = 0;
        tail_ = n;
    }

    ReadyEntry* buf_ = nullptr;
    std::size_t cap_ = 0;  // a power of two
    std::size_t head_ = 0;
    std::size_t tail_ = 0;
};

}  // namespace asyncio::detail
