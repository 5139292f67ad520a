// Timeouts, as asyncio's `async with asyncio.timeout(delay)` and `wait_for` (3.12 semantics).
//
//   asyncio::Timeout t = asyncio::timeout(100ms);        // or timeout_at(when), or timeout(nullopt)
//   try { v = co_await t.run(fetch()); } catch (const asyncio::TimeoutError&) { ... t.expired() }
//   v = co_await asyncio::wait_for(fetch(), 100ms);       // the same in one call
//   co_await asyncio::wait_for(ev.wait(), 1s);            // any awaitable (awaitable.hpp)
//
// run(body) runs body inside the current task. When the deadline passes, the task is cancelled
// (CancelledError is raised wherever the body is suspended); when that cancellation comes back out
// of the body, run() turns it into TimeoutError. A cancellation that came from elsewhere
// (Task::cancel) stays a CancelledError. If the body finishes in the same iteration in which the
// deadline fires, its result is returned and the timeout's cancellation is withdrawn: a result is
// never dropped. reschedule() moves the deadline while the body runs (nullopt: no deadline). A
// deadline already passed when the timeout is entered (or rescheduled) is call_soon()ed, as
// asyncio's: it comes ahead of whatever the body schedules.
// Cancel-safety is the body's: whatever it was awaiting is cancelled as by Task::cancel().
#pragma once

#include <chrono>
#include <optional>
#include <type_traits>
#include <utility>
#include <vector>

#include "asyncio/awaitable.hpp"
#include "asyncio/coroutine.hpp"
#include "asyncio/detail/uncancel.hpp"
#include "asyncio/event_loop.hpp"
#include "asyncio/exceptions.hpp"
#include "asyncio/sleep.hpp"
#include "asyncio/task.hpp"
#include "asyncio/wait.hpp"

namespace asyncio {

class Timeout {
public:
    /// A timeout that expires at loop time `when` (nullopt: never, until rescheduled).
    explicit Timeout(std::optional<TimePoint> when) noexcept : when_(when) {}
    Timeout(const Timeout&) = delete;
    Timeout& operator=(const Timeout&) = delete;
    ~Timeout() { cancel_timer(); }

    std::optional<TimePoint> when() const noexcept { return when_; }

    /// Moves the deadline (nullopt: none). RuntimeError once the timeout has expired or finished.
    void reschedule(std::optional<TimePoint> when) {
        if (state_ == State::kExpiring || state_ == State::kExpired)
            throw RuntimeError("Cannot change state of expiring Timeout");
        if (state_ == State::kExited) throw RuntimeError("Cannot change state of finished Timeout");
        when_ = when;
        if (state_ == State::kEntered) arm();
    }

    /// True once the deadline passed while the body ran (whether or not it raised TimeoutError).
    bool expired() const noexcept {
        return state_ == State::kExpiring || state_ == State::kExpired;
    }

    /// Runs body under this timeout (a Timeout runs one body). TimeoutError if the deadline passes.
    /// body is any awaitable (awaitable.hpp): co_await t.run(ev.wait()) works as t.run(f()).
    template <class A>
    auto run(A&& body) {
        if constexpr (!detail::storable_awaitable<A>) {
            detail::require_storable_awaitable<A>();
            return detail::Refused{};
        } else {
            return run_impl(this, std::nullopt, detail::as_coroutine(std::forward<A>(body)));
        }
    }

    /// wait_for's body: a Timeout of its own in the same frame (one coroutine, not two).
    template <class T>
    static Coroutine<T> run_impl(Timeout* external, std::optional<TimePoint> when,
                                 Coroutine<T> body) {
        std::optional<Timeout> own;
        Timeout& t = external != nullptr ? *external : own.emplace(when);
        t.enter();
        // A deadline already passed: as asyncio, the timeout is call_soon()ed now, ahead of
        // whatever the body schedules (a body that yields with sleep(0) times out there). (Not
        // looked at for wait_for, whose positive limit was added to the time just now: a clock
        // read saved on the path of every wait_for.)
        if (external != nullptr && t.when_ && *t.when_ <= t.loop_->time()) t.arm();
        std::exception_ptr error;
        bool cancelled = false;
        if constexpr (std::is_void_v<T>) {
            try {
                co_await TimedBody<T>{body.operator co_await(), t};
            } catch (const CancelledError&) {
                cancelled = true;
                error = std::current_exception();
            } catch (...) {
                error = std::current_exception();
            }
            t.leave(error, cancelled);
        } else {
            std::optional<T> result;
            try {
                result.emplace(co_await TimedBody<T>{body.operator co_await(), t});
            } catch (const CancelledError&) {
                cancelled = true;
                error = std::current_exception();
            } catch (...) {
                error = std::current_exception();
            }
            t.leave(error, cancelled);
            co_return std::move(*result);
        }
    }

private:
    enum class State { kCreated, kEntered, kExpiring, kExpired, kExited };

    // Awaits the body inline and arms the timer only if the body suspends: a body that completes
    // at once (wait_for around a ready value) never needs one. The deadline was fixed before, so
    // arming later changes nothing about when it fires; the task does not reach the loop before
    // the timer is armed.
    template <class T>
    struct TimedBody {
        typename Coroutine<T>::Awaiter inner;
        Timeout& t;
        bool await_ready() const { return inner.await_ready(); }
        template <class P>
        bool await_suspend(std::coroutine_handle<P> awaiter, unsigned line = __builtin_LINE()) noexcept {
            detail::note_await(awaiter, line);
            if (!inner.start_inline(awaiter)) return false;
            if (t.state_ == State::kEntered && !t.armed_) {
                try {
                    t.arm();
                } catch (...) {
                    // No memory for the timer: the deadline cannot be watched, so it is reached now.
                    t.on_timeout();
                }
            }
            return true;
        }
        decltype(auto) await_resume() { return inner.await_resume(); }
    };

    void enter() {
        if (state_ != State::kCreated) throw RuntimeError("Timeout has already been entered");
        task_ = detail::current_task_or_throw("Timeout");
        loop_ = &get_running_loop();
        state_ = State::kEntered;
        cancelling_ = task_->cancelling_;
        // The timer is armed when the body first suspends (TimedBody).
    }

    void arm() {
        cancel_timer();
        if (!when_) return;
        // A deadline already passed: as asyncio's reschedule(), call_soon rather than a due timer.
        if (*when_ <= loop_->time())
            timer_ = loop_->call_soon([this] { on_timeout(); });
        else
            timer_ = loop_->call_at(*when_, [this] { on_timeout(); });
        armed_ = true;
    }

    void cancel_timer() noexcept {
        if (armed_) {
            timer_.cancel();
            armed_ = false;
        }
    }

    void on_timeout() {
        armed_ = false;
        detail::task_cancel(task_, std::string());
        state_ = State::kExpiring;
    }

    // Python's Timeout.__aexit__.
    void leave(const std::exception_ptr& error, bool cancelled) {
        cancel_timer();
        if (state_ == State::kExpiring) {
            state_ = State::kExpired;
            if (detail::uncancel(task_) <= cancelling_ && cancelled) throw TimeoutError("timed out");
        } else if (state_ == State::kEntered) {
            state_ = State::kExited;
        }
        if (error) std::rethrow_exception(error);
    }

    std::optional<TimePoint> when_;
    State state_ = State::kCreated;
    detail::PromiseBase* task_ = nullptr;
    EventLoop* loop_ = nullptr;
    Handle timer_;
    bool armed_ = false;
    int cancelling_ = 0;
};

/// A timeout `delay` from now on the running loop's clock (any unit; a delay too far off to be
/// represented means "never", see deadline_after in clock.hpp).
template <class Rep, class Period>
Timeout timeout(std::chrono::duration<Rep, Period> delay) {
    return Timeout(deadline_after(get_running_loop().time(), delay));
}
/// Python's asyncio.timeout(None): no deadline until reschedule() sets one.
inline Timeout timeout(std::nullopt_t) noexcept { return Timeout(std::nullopt); }
/// A timeout at loop time `when` (TimePoint::max(): never).
inline Timeout timeout_at(TimePoint when) { return Timeout(when); }
/// Python's asyncio.timeout_at(None).
inline Timeout timeout_at(std::nullopt_t) noexcept { return Timeout(std::nullopt); }

namespace detail {

[[noreturn]] inline void throw_timed_out() { throw TimeoutError("timed out"); }

// wait_for with a limit <= 0, as asyncio's (`fut = ensure_future(aw)`, then `_cancel_and_wait`):
// nothing is waited for. A task that is done gives its outcome at once; a pending one is
// cancelled and waited for: its value if it catches the cancellation and returns, TimeoutError if
// it ends cancelled (a cancellation of the caller meanwhile raises CancelledError and leaves the
// task to finish).
template <class T>
Coroutine<T> wait_for_expired_task(Task<T> task) {
    if (!task.done()) {
        task.cancel();
        std::vector<Task<T>> one;  // (not a braced list: GCC 12 rejects one in a coroutine)
        one.push_back(task);
        (void)co_await WaitAwaiter<T>(std::move(one), ReturnWhen::ALL_COMPLETED, std::nullopt);
    }
    if (task.cancelled()) throw_timed_out();
    co_return take_result(task.promise(), task.base()->refs_ == 1);
}
// A pending future is cancelled (so done at once); the caller still yields once, as asyncio's
// wait for the future's done callback.
template <class T>
Coroutine<T> wait_for_expired_future(Future<T> fut) {
    if (!fut.done()) {
        fut.cancel();
        co_await asyncio::sleep(Duration::zero());
    }
    if (fut.cancelled()) throw_timed_out();
    co_return take_result(fut.promise(), fut.base()->refs_ == 1);
}
// Any other awaitable becomes a task (ensure_future) that is cancelled before its first step: a
// coroutine never runs, a q.get() takes no item. Made when the result is awaited, as asyncio's.
template <class A>
Coroutine<awaited_value_t<A>> wait_for_expired_awaitable(A aw) {
    co_return co_await wait_for_expired_task(asyncio::create_task(std::move(aw)));
}

template <class A>
[[gnu::noinline]] auto wait_for_expired(A&& aw) {  // (cold: kept out of every wait_for)
    using D = std::remove_cvref_t<A>;
    if constexpr (is_task_v<D>)
        return wait_for_expired_task(D(std::forward<A>(aw)));
    else if constexpr (is_future_v<D>)
        return wait_for_expired_future(D(std::forward<A>(aw)));
    else
        return wait_for_expired_awaitable<std::decay_t<A>>(std::forward<A>(aw));
}

}  // namespace detail

/// Awaits aw (any awaitable: a Coroutine, a Task, ev.wait(), q.get(), sock_recv(...), ...) with a
/// time limit: TimeoutError (and aw cancelled) if it takes longer than `limit`. A Task argument is
/// cancelled on timeout too; any other awaitable is awaited inside the awaiting task, so its own
/// cancellation does the cleaning (an Event wait leaves the waiters, a q.get() takes no item).
/// limit <= 0: nothing is waited for, as asyncio's (a coroutine or any other awaitable never runs:
/// TimeoutError; a done task or future gives its outcome; a pending one is cancelled, and a task
/// waited for; see detail::wait_for_expired).
template <class A, class Rep, class Period>
auto wait_for(A&& aw, std::chrono::duration<Rep, Period> limit) {
    if constexpr (!detail::storable_awaitable<A>) {
        detail::require_storable_awaitable<A>();
        return detail::Refused{};
    } else {
        if (saturating_duration(limit) <= Duration::zero()) [[unlikely]]
            return detail::wait_for_expired(std::forward<A>(aw));
        return Timeout::run_impl(nullptr, deadline_after(get_running_loop().time(), limit),
                                 detail::as_coroutine(std::forward<A>(aw)));
    }
}

}  // namespace asyncio
