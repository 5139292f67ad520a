// The loop's ready queue: a growable ring buffer of {function, context} pairs. An entry is two
// words, so scheduling a task or a callback never allocates once the ring has grown.
#pragma once

#include <cstddef>
#include <cstdlib>
#include <new>

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
    ~ReadyQueue() { std::free(buf_); }

    bool empty() const noexcept { return head_ == tail_; }
    std::size_t size() const noexcept { return tail_ - head_; }

    void push(void (*fn)(void*), void* ctx) {
        if (tail_ - head_ == cap_) grow();
        buf_[tail_++ & (cap_ - 1)] = ReadyEntry{fn, ctx};
    }
    ReadyEntry pop() noexcept { return buf_[head_++ & (cap_ - 1)]; }
    void clear() noexcept { head_ = tail_ = 0; }

private:
    [[gnu::noinline, gnu::cold]] void grow() {
        const std::size_t ncap = cap_ == 0 ? 1024 : cap_ * 2;
        auto* nbuf = static_cast<ReadyEntry*>(std::malloc(ncap * sizeof(ReadyEntry)));
        if (nbuf == nullptr) throw std::bad_alloc();
        const std::size_t n = tail_ - head_;
        for (std::size_t i = 0; i < n; ++i) nbuf[i] = buf_[(head_ + i) & (cap_ - 1)];
        std::free(buf_);
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
