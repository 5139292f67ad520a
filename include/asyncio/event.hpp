// asyncio::Event: a flag tasks can wait for. set() wakes every waiter (in the order they started
// waiting, through the ready queue); wait() returns at once while the flag is set; clear() resets it.
// Cancel-safe: a waiter cancelled while it waits is unlinked and raises CancelledError; nothing else
// changes. Loop-thread only (use call_soon_threadsafe to set it from another thread).
#pragma once

#include <coroutine>

#include "asyncio/detail/waiter_list.hpp"
#include "asyncio/task.hpp"

namespace asyncio {

class Event {
public:
    Event() = default;
    Event(const Event&) = delete;
    Event& operator=(const Event&) = delete;

    bool is_set() const noexcept { return value_; }

    /// Sets the flag and wakes all waiters.
    void set() {
        if (value_) return;
        value_ = true;
        while (detail::WaiterNode* n = waiters_.pop_front()) detail::wake_task(static_cast<Awaiter*>(n)->task);
    }
    /// Resets the flag; later wait() calls suspend until the next set().
    void clear() noexcept { value_ = false; }

    class [[nodiscard]] Awaiter : public detail::WaiterNode, public detail::CancelHook {
    public:
        explicit Awaiter(Event& e) noexcept : event_(e) {}
        bool await_ready() const noexcept { return event_.value_; }
        bool await_suspend(std::coroutine_handle<> h) {
            task = detail::current_task_or_throw("Event::wait()");
            if (!detail::suspend_task(task, h, this)) return false;
            CancelHook::fn = &on_cancel;
            event_.waiters_.push_back(this);
            return true;
        }
        void await_resume() const {
            if (cancelled_) detail::throw_cancelled(task);  // even if uncancel()ed meanwhile
            detail::check_cancelled(task);
        }

    private:
        friend class Event;
        static bool on_cancel(detail::CancelHook* h) {
            auto* self = static_cast<Awaiter*>(h);
            detail::unlink(self);
            self->cancelled_ = true;
            detail::wake_task(self->task);
            return false;
        }
        Event& event_;
        detail::PromiseBase* task = nullptr;
        bool cancelled_ = false;  // woken by cancel(), not by set()
    };

    /// Waits until the flag is set (returns at once if it is).
    Awaiter wait() noexcept { return Awaiter(*this); }

private:
    bool value_ = false;
    detail::WaiterList waiters_;
};

}  // namespace asyncio
