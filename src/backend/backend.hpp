// The narrow interface between the loop and the OS. The loop only asks a backend to wait (up to a
// timeout) for completions and to be woken from another thread. I/O operations are added to this
// interface as operations ("receive into this buffer", "accept"), not as readiness, so that a
// completion-based backend (io_uring) implements them directly while a readiness-based one (epoll)
// emulates them. Private to src/: no backend header ever reaches a public header.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

namespace asyncio::detail {

class ReadyQueue;

class Backend {
public:
    virtual ~Backend() = default;
    /// Waits at most timeout_ns (-1: no limit, 0: do not block) for I/O or a wake-up and appends
    /// the callbacks of whatever completed to `ready`. Returns the number of completions.
    virtual std::size_t poll(std::int64_t timeout_ns, ReadyQueue& ready) = 0;
    /// Makes a blocked poll() return; safe from any thread and async-signal-safe.
    virtual void wakeup() noexcept = 0;
    /// Outstanding I/O registrations (the wake-up channel not counted). With none, the loop may
    /// skip polling when it would not block. Not virtual: the loop reads it every iteration.
    std::size_t registrations() const noexcept { return registrations_; }
    /// Short name for diagnostics ("epoll", "io_uring").
    virtual const char* name() const noexcept = 0;

protected:
    std::size_t registrations_ = 0;
};

/// The backend for this platform and configuration; select_backend.cpp is the only place that
/// decides.
std::unique_ptr<Backend> make_backend();

}  // namespace asyncio::detail
