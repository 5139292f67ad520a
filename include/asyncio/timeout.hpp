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
// never dropped. reschedule() moves the deadline while the body runs (nullopt: no deadline).
// Cancel-safety is the body's: whatever it was awaiting is cancelled as by Task::cancel().
#pragma once

#include <chrono>
#include <optional>
#include <utility>

#include "asyncio/awaitable.hpp"
#include "asyncio/coroutine.hpp"
#include "asyncio/detail/uncancel.hpp"
#include "asyncio/event_loop.hpp"
#include "asyncio/exceptions.hpp"
#include "asyncio/task.hpp"

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
        bool await_suspend(std::coroutine_handle<> awaiter) noexcept {
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
        // A deadline already passed fires in the next iteration, like any due timer.
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

/// Awaits aw (any awaitable: a Coroutine, a Task, ev.wait(), q.get(), sock_recv(...), ...) with a
/// time limit: TimeoutError (and aw cancelled) if it takes longer than `limit`. A Task argument is
/// cancelled on timeout too; any other awaitable is awaited inside the awaiting task, so its own
/// cancellation does the cleaning (an Event wait leaves the waiters, a q.get() takes no item).
/// limit <= 0 means: no waiting at all.
template <class A, class Rep, class Period>
auto wait_for(A&& aw, std::chrono::duration<Rep, Period> limit) {
    if constexpr (!detail::storable_awaitable<A>) {
        detail::require_storable_awaitable<A>();
        return detail::Refused{};
    } else {
        return Timeout::run_impl(nullptr, deadline_after(get_running_loop().time(), limit),
                                 detail::as_coroutine(std::forward<A>(aw)));
    }
}

}  // namespace asyncio
