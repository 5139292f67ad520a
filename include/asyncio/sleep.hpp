// asyncio::sleep(delay): suspends the current task for at least `delay` of loop time.
// sleep(0) (or any delay <= 0) yields once: the task goes to the back of the ready queue, so every
// other ready callback runs first. When the timer fires, the task is scheduled (it runs in the next
// iteration, after the callbacks due with the timer, as in asyncio). Cancelling the task while it
// sleeps, or after its timer fired but before it ran, raises CancelledError at the co_await.
#pragma once

#include <chrono>
#include <coroutine>

#include "asyncio/clock.hpp"
#include "asyncio/detail/waiter.hpp"

namespace asyncio {

namespace detail {
struct [[nodiscard]] SleepAwaiter : Waiter {
    Duration delay;
    TimerId timer{};

    explicit SleepAwaiter(Duration d) noexcept : delay(d) {}
    bool await_ready() const noexcept { return false; }
    template <class P>
    bool await_suspend(std::coroutine_handle<P> h, unsigned line = __builtin_LINE()) {
        detail::note_await(h, line);
        if (delay <= Duration::zero()) {
            yield_once(h, "sleep()");  // exactly one iteration
            return true;
        }
        begin_wait(h, "sleep()", &on_cancel);
        try {
            // The task runs in the next iteration, as asyncio's (the timer completes a future
            // whose callback wakes the task): a cancel() or another callback due in this
            // iteration comes first, and the cancellation then wins at the co_await.
            EventLoop& l = *t_running_loop;
            timer = l.add_timer(deadline_after(l.time(), delay), [this] { wake(); });
        } catch (...) {
            abandon_wait();
            throw;
        }
        return true;
    }
    void await_resume() const { end_wait(); }

    static bool on_cancel(CancelHook* hook) {
        auto* self = static_cast<SleepAwaiter*>(from_hook(hook));
        t_running_loop->cancel_timer(self->timer);
        return self->cancel_wait();
    }
};
}  // namespace detail

/// Suspends the current task for `delay` (see above).
template <class Rep, class Period>
detail::SleepAwaiter sleep(std::chrono::duration<Rep, Period> delay) {
    // Rounded up (sleep(1us) never becomes sleep(0)) and saturated: clock.hpp.
    return detail::SleepAwaiter(saturating_duration(delay));
}

}  // namespace asyncio
