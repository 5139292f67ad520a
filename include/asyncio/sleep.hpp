// asyncio::sleep(delay): suspends the current task for at least `delay` of loop time.
// sleep(0) (or any delay <= 0) yields once: the task goes to the back of the ready queue, so every
// other ready callback runs first. Cancelling the task while it sleeps removes the timer and raises
// CancelledError at the co_await.
#pragma once

#include <chrono>
#include <coroutine>

#include "asyncio/clock.hpp"
#include "asyncio/task.hpp"

namespace asyncio {

namespace detail {
struct [[nodiscard]] SleepAwaiter : CancelHook {
    Duration delay;
    PromiseBase* task = nullptr;
    TimerId timer{};
    bool cancelled = false;  // woken by cancel(): raise even if uncancel() came before we ran

    bool await_ready() const noexcept { return false; }
    bool await_suspend(std::coroutine_handle<> h) {
        task = current_task_or_throw("sleep()");
        if (delay <= Duration::zero()) {
            if (!suspend_task(task, h, nullptr)) return false;
            t_running_loop->schedule(&step_task, task);
            return true;
        }
        if (!suspend_task(task, h, this)) return false;
        EventLoop& loop = *t_running_loop;
        CancelHook::fn = &on_cancel;
        timer = loop.add_timer(deadline_after(loop.time(), delay), [this] {
            // Due timers already run from the ready queue: resume the task directly.
            task->waiting_ = nullptr;
            step_task(task);
        });
        return true;
    }
    void await_resume() const {
        if (cancelled) throw_cancelled(task);
        check_cancelled(task);
    }

    static bool on_cancel(CancelHook* hook) {
        auto* self = static_cast<SleepAwaiter*>(hook);
        t_running_loop->cancel_timer(self->timer);
        self->cancelled = true;
        wake_task(self->task);
        return false;
    }
};
}  // namespace detail

/// Suspends the current task for `delay` (see above).
template <class Rep, class Period>
detail::SleepAwaiter sleep(std::chrono::duration<Rep, Period> delay) {
    // Rounded up (sleep(1us) never becomes sleep(0)) and saturated: clock.hpp.
    return detail::SleepAwaiter{{}, saturating_duration(delay)};
}

}  // namespace asyncio
