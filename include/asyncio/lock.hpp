// asyncio::Lock: mutual exclusion between tasks (Python's asyncio.Lock, 3.12 semantics).
//
//   co_await lock.acquire();  ...  lock.release();      // Python's acquire()/release()
//   { auto guard = co_await lock.lock();  ... }         // Python's `async with lock:` (RAII)
//
// Promises:
// - FIFO and no barging: release() hands the lock straight to the task that has waited longest
//   (locked() stays true); a task that releases and at once acquires again queues behind the
//   waiters. An uncontended acquire()+release() neither allocates nor touches the loop.
// - A waiter is woken through the ready queue (asyncio's ordering).
// - Cancellation: a task cancelled while it waits leaves the queue and raises CancelledError; a
//   task that was already handed the lock but is cancelled before it runs passes the lock on to
//   the next waiter (or unlocks it) and raises CancelledError. A cancelled acquire() never keeps
//   the lock. A cancellation pending when acquire() finds the lock free is not raised there (the
//   fast path does not suspend, as in Python).
// - release() of an unlocked lock raises RuntimeError("Lock is not acquired."). The lock has no
//   owner (as in Python, any task may release it).
// - LockGuard, returned by lock(), releases on destruction (also when an exception unwinds it).
//
// Loop-thread only. A lock destroyed while tasks wait on it (a bug) leaves them suspended until
// they are cancelled; their cancellation does not touch it.
#pragma once

#include <coroutine>
#include <mutex>  // std::adopt_lock_t
#include <utility>

#include "asyncio/detail/waiter.hpp"
#include "asyncio/exceptions.hpp"

namespace asyncio {

class Condition;
class Lock;

/// Holds a Lock and releases it when destroyed (Python's `async with lock:`). Move-only.
class [[nodiscard]] LockGuard {
public:
    LockGuard() noexcept = default;
    /// Adopts a lock the caller has acquired.
    LockGuard(Lock& lock, std::adopt_lock_t) noexcept : lock_(&lock) {}
    LockGuard(LockGuard&& o) noexcept : lock_(std::exchange(o.lock_, nullptr)) {}
    LockGuard& operator=(LockGuard&& o) noexcept {
        if (this != &o) {
            unlock();
            lock_ = std::exchange(o.lock_, nullptr);
        }
        return *this;
    }
    LockGuard(const LockGuard&) = delete;
    LockGuard& operator=(const LockGuard&) = delete;
    ~LockGuard() { unlock(); }

    /// True while the guard holds its lock.
    bool owns_lock() const noexcept { return lock_ != nullptr; }
    explicit operator bool() const noexcept { return owns_lock(); }
    Lock* mutex() const noexcept { return lock_; }
    /// Releases the lock now (what the destructor would do); no-op if the guard holds nothing.
    /// Never throws: if the lock was already released behind the guard's back it does nothing.
    inline void unlock() noexcept;

private:
    Lock* lock_ = nullptr;
};

class Lock {
public:
    Lock() noexcept = default;
    Lock(const Lock&) = delete;
    Lock& operator=(const Lock&) = delete;

    /// True while some task holds the lock (or it has been handed to a waiter that has not run).
    bool locked() const noexcept { return locked_; }

    /// co_await lock.acquire(): takes the lock, waiting in FIFO order while it is held. (Its
    /// queue also holds Condition's waiters while they re-acquire the lock.)
    class [[nodiscard]] Awaiter : public detail::ListWaiter {
    public:
        explicit Awaiter(Lock& lock) noexcept : lock_(lock) {}
        bool await_ready() noexcept {
            if (lock_.locked_) return false;
            lock_.locked_ = true;
            return true;
        }
        template <class P>
        [[gnu::always_inline]] void await_suspend(std::coroutine_handle<P> h, unsigned line = __builtin_LINE()) {
            detail::note_await(h, line);
            wait_in(lock_.waiters_, h, "Lock::acquire()");
        }
        void await_resume() {
            end_wait([this] { lock_.hand_off(); });  // handed the lock, then cancelled: pass it on
        }

    protected:
        Lock& lock_;
    };

    /// co_await lock.lock(): as acquire(), returning a LockGuard that releases it.
    class [[nodiscard]] GuardAwaiter : public Awaiter {
    public:
        using Awaiter::Awaiter;
        LockGuard await_resume() {
            Awaiter::await_resume();
            return LockGuard(lock_, std::adopt_lock);
        }
    };

    /// Acquires the lock (see Awaiter). Python's `await lock.acquire()`.
    Awaiter acquire() noexcept { return Awaiter(*this); }
    /// Acquires the lock and returns a guard that releases it. Python's `async with lock:`.
    GuardAwaiter lock() noexcept { return GuardAwaiter(*this); }

    /// Releases the lock, handing it to the first waiter if there is one. RuntimeError if the
    /// lock is not locked.
    void release() {
        if (!locked_) throw RuntimeError("Lock is not acquired.");
        hand_off();
    }

private:
    friend class Condition;
    friend class LockGuard;

    /// The lock is held: give it to the first waiter (it stays locked), or unlock it.
    void hand_off() {
        if (waiters_.wake_front("Lock.release()") == nullptr) locked_ = false;
    }

    bool locked_ = false;
    detail::WaitQueue waiters_;  // none while unlocked
};

inline void LockGuard::unlock() noexcept {
    if (Lock* l = std::exchange(lock_, nullptr); l != nullptr && l->locked_) l->hand_off();
}

}  // namespace asyncio
