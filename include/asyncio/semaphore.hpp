// asyncio::Semaphore and asyncio::BoundedSemaphore (Python's, 3.12 semantics).
//
//   asyncio::Semaphore sem(3);
//   co_await sem.acquire();  ...  sem.release();        // Python's acquire()/release()
//   { auto guard = co_await sem.lock();  ... }          // Python's `async with sem:` (RAII)
//
// Promises:
// - Semaphore(value = 1): ValueError if value < 0. acquire() takes a permit at once when one is
//   free, else waits; locked() is true when acquire() would wait.
// - FIFO and no barging: release() hands the permit straight to the task that has waited longest
//   (a waiter that was cancelled has already left the queue). As in Python, a newcomer does not
//   take a free permit while an earlier waiter that was handed one has not run yet (locked() is
//   true then): it queues, so acquire() calls complete in the order they were made. An
//   uncontended acquire()+release() neither allocates nor touches the loop.
// - Cancellation: a waiter cancelled in the queue leaves it and raises CancelledError; a waiter
//   that was handed a permit but is cancelled before it runs passes the permit on to the next
//   waiter (or frees it) and raises CancelledError. No permit is ever lost or duplicated.
// - BoundedSemaphore(value): release() beyond the initial value raises
//   ValueError("BoundedSemaphore released too many times").
// - SemaphoreGuard, returned by lock(), releases its permit on destruction.
//
// Loop-thread only. A semaphore destroyed while tasks wait on it (a bug) leaves them suspended
// until they are cancelled; their cancellation does not touch it.
#pragma once

#include <coroutine>
#include <cstddef>
#include <limits>
#include <mutex>  // std::adopt_lock_t
#include <utility>

#include "asyncio/detail/waiter.hpp"
#include "asyncio/exceptions.hpp"

namespace asyncio {

class Semaphore;

/// Holds one permit of a Semaphore and releases it when destroyed. Move-only.
class [[nodiscard]] SemaphoreGuard {
public:
    SemaphoreGuard() noexcept = default;
    /// Adopts a permit the caller has acquired.
    SemaphoreGuard(Semaphore& sem, std::adopt_lock_t) noexcept : sem_(&sem) {}
    SemaphoreGuard(SemaphoreGuard&& o) noexcept : sem_(std::exchange(o.sem_, nullptr)) {}
    SemaphoreGuard& operator=(SemaphoreGuard&& o) noexcept {
        if (this != &o) {
            unlock();
            sem_ = std::exchange(o.sem_, nullptr);
        }
        return *this;
    }
    SemaphoreGuard(const SemaphoreGuard&) = delete;
    SemaphoreGuard& operator=(const SemaphoreGuard&) = delete;
    ~SemaphoreGuard() { unlock(); }

    /// True while the guard holds its permit.
    bool owns_lock() const noexcept { return sem_ != nullptr; }
    explicit operator bool() const noexcept { return owns_lock(); }
    /// Releases the permit now (what the destructor would do); no-op if the guard holds none.
    /// Never throws: a release that a BoundedSemaphore would refuse is skipped.
    inline void unlock() noexcept;

private:
    Semaphore* sem_ = nullptr;
};

class Semaphore {
public:
    /// ValueError("Semaphore initial value must be >= 0") if value < 0.
    explicit Semaphore(std::ptrdiff_t value = 1) : Semaphore(value, kUnbounded) {}
    Semaphore(const Semaphore&) = delete;
    Semaphore& operator=(const Semaphore&) = delete;

    /// True when acquire() would wait: no free permit, or tasks before this one still to be
    /// served (Python's FIFO rule).
    bool locked() const noexcept { return value_ == 0 || pending_ != 0 || !waiters_.empty(); }

    /// co_await sem.acquire(): takes a permit, waiting in FIFO order while none is free.
    class [[nodiscard]] Awaiter : public detail::ListWaiter {
    public:
        explicit Awaiter(Semaphore& sem) noexcept : sem_(sem) {}
        bool await_ready() noexcept {
            if (sem_.locked()) return false;
            --sem_.value_;
            return true;
        }
        template <class P>
        [[gnu::always_inline]] void await_suspend(std::coroutine_handle<P> h, unsigned line = __builtin_LINE()) {
            detail::note_await(h, line);
            wait_in(sem_.waiters_, h, "Semaphore::acquire()");
        }
        void await_resume() {
            if (wait_state() == detail::WaitState::kIdle) return;  // taken at once
            end_wait([this] {  // handed a permit, then cancelled: pass it on
                --sem_.pending_;
                sem_.release_permit();
            });
            --sem_.pending_;
            sem_.wake_waiters();  // newcomers that queued behind us while we were pending
        }

    protected:
        Semaphore& sem_;
    };

    /// co_await sem.lock(): as acquire(), returning a SemaphoreGuard that releases the permit.
    class [[nodiscard]] GuardAwaiter : public Awaiter {
    public:
        using Awaiter::Awaiter;
        SemaphoreGuard await_resume() {
            Awaiter::await_resume();
            return SemaphoreGuard(sem_, std::adopt_lock);
        }
    };

    /// Takes a permit (see Awaiter). Python's `await sem.acquire()`.
    Awaiter acquire() noexcept { return Awaiter(*this); }
    /// Takes a permit and returns a guard that releases it. Python's `async with sem:`.
    GuardAwaiter lock() noexcept { return GuardAwaiter(*this); }

    /// Returns a permit: hands it to the first waiter, or frees it. For a BoundedSemaphore,
    /// ValueError if that would raise the value above the initial one.
    void release() {
        if (value_ >= bound_) [[unlikely]] {
            throw ValueError(bound_ == kUnbounded ? "Semaphore value overflow"
                                                  : "BoundedSemaphore released too many times");
        }
        // Before the count moves: a waiter of a loop running on another thread cannot be handed
        // the permit from here.
        waiters_.check_thread("Semaphore.release()");
        release_permit();
    }

protected:
    static constexpr std::ptrdiff_t kUnbounded = std::numeric_limits<std::ptrdiff_t>::max();
    Semaphore(std::ptrdiff_t value, std::ptrdiff_t bound) : value_(value), bound_(bound) {
        if (value < 0) throw ValueError("Semaphore initial value must be >= 0");
    }

private:
    friend class SemaphoreGuard;

    void release_permit() {
        ++value_;
        wake_waiters();
    }
    /// Hands free permits to the first waiters (FIFO).
    void wake_waiters() {
        while (value_ > 0) {
            detail::ListWaiter* w = waiters_.pop_front();
            if (w == nullptr) break;
            --value_;
            ++pending_;
            w->wake();
        }
    }

    std::ptrdiff_t value_;         // free permits (not counting those handed to waiters)
    std::ptrdiff_t bound_;
    std::ptrdiff_t pending_ = 0;   // waiters handed a permit that have not run yet
    detail::WaitQueue waiters_;
};

/// A Semaphore that refuses to be released above its initial value.
class BoundedSemaphore : public Semaphore {
public:
    /// ValueError if value < 0.
    explicit BoundedSemaphore(std::ptrdiff_t value = 1) : Semaphore(value, value) {}
};

inline void SemaphoreGuard::unlock() noexcept {
    if (Semaphore* s = std::exchange(sem_, nullptr); s != nullptr && s->value_ < s->bound_)
        s->release_permit();
}

}  // namespace asyncio
