// asyncio::Condition: a condition variable for tasks (Python's asyncio.Condition, 3.12+).
//
//   asyncio::Condition cond;                     // owns its Lock; Condition(lock) shares one
//   auto guard = co_await cond.lock();           // `async with cond:`
//   co_await cond.wait_for([&] { return ready; });
//   ...                                          // elsewhere, holding the lock:
//   ready = true; cond.notify_all();
//
// Promises:
// - acquire()/release()/locked()/lock() are the underlying Lock's (FIFO, no barging).
// - wait(): RuntimeError("cannot wait on un-acquired lock") unless the lock is locked. Releases
//   the lock, waits for notify(), re-acquires the lock, returns. It always returns or raises
//   holding the lock: a wait cancelled at any point re-acquires the lock first and then raises
//   CancelledError (as asyncio; further cancels while it re-acquires are folded into that one).
//   A cancellation already pending when wait() is called is delivered there like any other: the
//   lock is released, then re-acquired before CancelledError is raised (as asyncio).
// - notify(n = 1) / notify_all(): RuntimeError("cannot notify on un-acquired lock") unless the
//   lock is locked. Wakes the n longest-waiting tasks, in FIFO order; each asks for the lock when
//   its turn comes in the next iteration (as asyncio's wait(), which calls acquire() when the task
//   runs again: a task that asks for the lock before then goes first), queues behind the tasks
//   waiting for it, and returns from wait() once it gets it. A waiter cancelled while it waits for
//   a notification asks for the lock in the same way before it raises.
// - No lost wake-up: a task that was notified but ends its wait() with CancelledError passes the
//   notification on to the next waiter (asyncio does this too; unlike asyncio, a task cancelled
//   before it was notified does not wake anybody, so this causes no spurious wake-up).
// - wait_for(pred): evaluates pred() and wait()s until it is true; returns its last value.
//
// Loop-thread only. A condition (or its lock) destroyed while tasks wait on it (a bug) leaves them
// suspended until they are cancelled; they then raise CancelledError without the lock.
#pragma once

#include <coroutine>
#include <cstddef>
#include <limits>
#include <type_traits>
#include <utility>

#include "asyncio/coroutine.hpp"
#include "asyncio/detail/waiter.hpp"
#include "asyncio/exceptions.hpp"
#include "asyncio/lock.hpp"

namespace asyncio {

class Condition {
public:
    /// A condition with a Lock of its own.
    Condition() noexcept : lock_(&own_) {}
    /// A condition on an existing lock (which must outlive it).
    explicit Condition(Lock& lock) noexcept : lock_(&lock) {}
    Condition(const Condition&) = delete;
    Condition& operator=(const Condition&) = delete;

    bool locked() const noexcept { return lock_->locked(); }
    Lock::Awaiter acquire() noexcept { return lock_->acquire(); }
    void release() { lock_->release(); }
    /// co_await cond.lock() → LockGuard on the underlying lock (`async with cond:`).
    Lock::GuardAwaiter lock() noexcept { return lock_->lock(); }

    /// co_await cond.wait() (see above). While it re-acquires the lock it waits in the lock's
    /// queue, as a Lock::acquire() does; it is woken once it holds the lock again.
    class [[nodiscard]] WaitAwaiter : public detail::ListWaiter {
    public:
        explicit WaitAwaiter(Condition& c) noexcept : cond_(c) {}
        bool await_ready() const {
            if (!cond_.lock_->locked()) throw RuntimeError("cannot wait on un-acquired lock");
            return false;
        }
        template <class P>
        void await_suspend(std::coroutine_handle<P> h, unsigned line = __builtin_LINE()) {
            detail::note_await(h, line);
            wait_in(cond_.waiters_, h, "Condition::wait()", &on_cancel_waiting);
            cond_.lock_->hand_off();  // release
        }
        void await_resume() {
            // The condition or its lock is gone, or the loop is closing (no lock taken).
            if (wait_state() == detail::WaitState::kCancelled) detail::throw_cancelled(task());
            // Woken: the lock is ours again. Cancelled on the way, or after the wake-up: raise,
            // and do not swallow the notification.
            auto pass_on = [this] {
                if (notified_) cond_.notify_waiters(1);
            };
            if (cancelled_) {
                pass_on();
                detail::throw_cancelled(task());
            }
            end_wait(pass_on);
        }

    private:
        friend class Condition;

        /// Notified, or cancelled while waiting: at the task's turn in the ready queue (where
        /// asyncio's task would run and call acquire()), take the lock if it is free and run the
        /// task, else queue for the lock. The task stays suspended until it holds the lock (a
        /// cancel() before its turn is raised once it holds it: end_wait).
        void reacquire() { wake_via(&reacquire_at_turn, this); }
        static void reacquire_at_turn(void* ctx) {
            auto* self = static_cast<WaitAwaiter*>(ctx);
            Lock& l = *self->cond_.lock_;
            if (!l.locked_) {
                l.locked_ = true;
                detail::step_task_now(self->task());  // it is the task's turn: run it (self may go)
            } else {
                self->CancelHook::fn = &on_cancel_reacquiring;
                self->wait_again();
                l.waiters_.push_back(self);  // Lock::hand_off wakes the task
            }
        }
        // Cancelled while waiting for a notification: stop waiting, re-acquire the lock, then
        // raise. Returns true: the condition wakes the task itself (with CancelledError).
        static bool on_cancel_waiting(detail::CancelHook* h) {
            auto* self = static_cast<WaitAwaiter*>(from_hook(h));
            // The condition is gone, or the loop is closing (the task never runs again: it
            // must not take the lock).
            if (!self->linked() || self->task()->has(detail::kAbandoned)) {
                detail::unlink(self);
                return self->cancel_wait();
            }
            detail::unlink(self);
            self->cancelled_ = true;
            self->reacquire();
            return true;
        }
        // Cancelled while re-acquiring: keep waiting for the lock, raise once it is ours.
        static bool on_cancel_reacquiring(detail::CancelHook* h) {
            auto* self = static_cast<WaitAwaiter*>(from_hook(h));
            if (!self->linked() || self->task()->has(detail::kAbandoned)) {  // as above
                detail::unlink(self);
                return self->cancel_wait();
            }
            self->cancelled_ = true;
            return true;
        }

        Condition& cond_;
        bool notified_ = false;
        bool cancelled_ = false;
    };

    /// Waits until notified (see above). Python's `await cond.wait()`.
    WaitAwaiter wait() noexcept { return WaitAwaiter(*this); }

    /// Waits until pred() is true (calling it with the lock held); returns its last value.
    /// Python's `await cond.wait_for(predicate)`.
    template <class Predicate>
    Coroutine<std::decay_t<std::invoke_result_t<Predicate&>>> wait_for(Predicate pred) {
        auto result = pred();
        while (!static_cast<bool>(result)) {
            co_await wait();
            result = pred();
        }
        co_return result;
    }

    /// Wakes up to n waiters (FIFO). RuntimeError if the lock is not locked.
    void notify(std::size_t n = 1) {
        if (!locked()) throw RuntimeError("cannot notify on un-acquired lock");
        notify_waiters(n);
    }
    /// Wakes every waiter. RuntimeError if the lock is not locked.
    void notify_all() { notify(std::numeric_limits<std::size_t>::max()); }

private:
    void notify_waiters(std::size_t n) {
        for (; n > 0; --n) {
            detail::ListWaiter* w = waiters_.pop_front();
            if (w == nullptr) break;
            auto* waiter = static_cast<WaitAwaiter*>(w);
            waiter->notified_ = true;
            waiter->reacquire();
        }
    }

    Lock own_;
    Lock* lock_;
    detail::WaitQueue waiters_;  // WaitAwaiters waiting for a notification
};

}  // namespace asyncio
