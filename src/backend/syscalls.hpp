// What both backends share: the helpers of the operations' plain non-blocking system calls (each
// kind's call is its descriptor's perform, op_type.hpp: epoll makes it when the fd is ready;
// io_uring makes it first, before it submits anything, and for the kinds it serves through a
// poll request) and the table of per-fd state.
#pragma once

#include <sys/types.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "asyncio/detail/callback.hpp"
#include "asyncio/detail/io_op.hpp"
#include "backend/op_type.hpp"  // attempt(): each kind's system call

namespace asyncio {
class EventLoop;
}

namespace asyncio::detail {

/// Accept errors that belong to the connection being accepted, not to the listening socket: the
/// connection is gone, try the next one (accept(2), "Error handling").
bool accept_should_retry(int err) noexcept;

/// Readiness of fd right now, without blocking: 1 ready, 0 not ready, < 0 -errno.
int poll_now(int fd, short events) noexcept;

/// write(2) that reports EPIPE instead of raising SIGPIPE (see syscalls.cpp).
ssize_t write_without_sigpipe(int fd, const void* buf, std::size_t len) noexcept;

/// Completes op at once with result (submit/try_now's "done now"). Returns true.
inline bool finish_now(IoOp& op, std::int64_t result) noexcept {
    op.result = result;
    op.state = IoState::done;
    return true;
}

/// Binds op to its fd number's current epoch at its first submission; false when it was bound
/// before to another epoch (its fd was closed since, and the number may be another file's).
inline bool bind_epoch(IoOp& op, std::uint32_t epoch) noexcept {
    if (!op.bound) {
        op.bound = true;
        op.epoch = epoch;
        return true;
    }
    return op.epoch == epoch;
}

/// Adds 1 to an eventfd (a backend's wake-up): async-signal-safe, never blocks (EAGAIN means
/// the counter is saturated, so the loop is being woken anyway).
void signal_eventfd(int fd) noexcept;

/// Takes op out of the FIFO head..tail it is in.
inline void unlink(IoOp& op, IoOp*& head, IoOp*& tail) noexcept {
    if (op.prev != nullptr)
        op.prev->next = op.next;
    else
        head = op.next;
    if (op.next != nullptr)
        op.next->prev = op.prev;
    else
        tail = op.prev;
    op.prev = op.next = nullptr;
}

/// A watcher's (add_reader/add_writer) turn in the ready queue is {fd, direction, generation}:
/// the backend bumps the fd's generation when the callback is removed or replaced, so an event
/// queued before that (possibly for an old file with the same fd number) is dropped, as Python's
/// remove_reader cancels the queued handle.
struct WatcherTurn {
    int fd;
    bool writer;
    std::uint32_t gen;  // 31 bits

    void* pack() const noexcept {
        static_assert(sizeof(void*) == 8, "fd, direction and generation share a pointer");
        return reinterpret_cast<void*>((static_cast<std::uintptr_t>(gen & 0x7fffffffu) << 33) |
                                       (static_cast<std::uintptr_t>(static_cast<std::uint32_t>(fd)) << 1) |
                                       (writer ? 1u : 0u));
    }
    static WatcherTurn unpack(void* packed) noexcept {
        const auto bits = reinterpret_cast<std::uintptr_t>(packed);
        return {static_cast<int>((bits >> 1) & 0xffffffffu), (bits & 1u) != 0, static_cast<std::uint32_t>(bits >> 33)};
    }
    bool current(std::uint32_t watch_gen) const noexcept { return (watch_gen & 0x7fffffffu) == gen; }
};

/// Runs a watcher's callback (kept alive by the copy even if it removes itself); an exception
/// goes to the loop's exception handler.
void run_watcher_callback(EventLoop& loop, std::shared_ptr<Callback> cb) noexcept;

/// FdState by fd number, in pages of 64 made on first use: memory follows the fds in use,
/// not the largest fd number (a single fd dup2'ed to 1,000,000 costs one page and an 8-byte
/// slot per 64 numbers below it). Pages stay once made, so an fd number keeps its epoch.
template <class FdState>
class FdTable {
public:
    FdState* find(int fd) noexcept {
        const auto page = static_cast<std::size_t>(fd) >> kPageShift;
        if (page >= pages_.size() || !pages_[page]) return nullptr;
        return &pages_[page][static_cast<std::size_t>(fd) & (kPageSize - 1)];
    }
    /// Throws std::bad_alloc.
    FdState& get(int fd) {
        const auto page = static_cast<std::size_t>(fd) >> kPageShift;
        if (page >= pages_.size()) pages_.resize(std::max(page + 1, pages_.size() * 2));
        if (!pages_[page]) pages_[page] = std::make_unique<FdState[]>(kPageSize);
        return pages_[page][static_cast<std::size_t>(fd) & (kPageSize - 1)];
    }
    /// For forget_fd: the state of an fd even if no operation of it ever waited (one that
    /// completed at once may be continued, as the rest of a sendall, and must see the new epoch);
    /// nullptr when there is no memory for it.
    FdState* find_or_make(int fd) noexcept {
        if (FdState* s = find(fd)) return s;
        try {
            return &get(fd);
        } catch (...) {
            return nullptr;  // then a continuation acts on the reused number
        }
    }
    template <class F>
    void for_each_fd(F f) {
        for (std::size_t p = 0; p < pages_.size(); ++p)
            if (pages_[p])
                for (std::size_t i = 0; i < kPageSize; ++i) f(static_cast<int>((p << kPageShift) + i), pages_[p][i]);
    }
    template <class F>
    void for_each(F f) {
        for (auto& p : pages_)
            if (p)
                for (std::size_t i = 0; i < kPageSize; ++i) f(p[i]);
    }

private:
    static constexpr unsigned kPageShift = 6;
    static constexpr std::size_t kPageSize = std::size_t{1} << kPageShift;
    std::vector<std::unique_ptr<FdState[]>> pages_;
};

}  // namespace asyncio::detail
