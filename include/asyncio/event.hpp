// asyncio::Event: a flag tasks can wait for. set() wakes every waiter (in the order they started
// waiting, through the ready queue); wait() returns at once while the flag is set; clear() resets it.
// Cancel-safe: a waiter cancelled while it waits is unlinked and raises CancelledError; nothing else
// changes. Loop-thread only (use call_soon_threadsafe to set it from another thread).
#pragma once

#include <coroutine>

#include "asyncio/detail/waiter.hpp"

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
        waiters_.wake_all("Event.set()");  // a refusal comes before anything changes
        value_ = true;
    }
    /// Resets the flag; later wait() calls suspend until the next set().
    void clear() noexcept { value_ = false; }

    class [[nodiscard]] Awaiter : public detail::ListWaiter {
    public:
        explicit Awaiter(Event& e) noexcept : event_(e) {}
        bool await_ready() const noexcept { return event_.value_; }
        template <class P>
        [[gnu::always_inline]] void await_suspend(std::coroutine_handle<P> h, unsigned line = __builtin_LINE()) {
            detail::note_await(h, line);
            wait_in(event_.waiters_, h, "Event::wait()");
        }
        void await_resume() const { end_wait(); }  // woken by set(), then cancelled: raises

    private:
        Event& event_;
    };

    /// Waits until the flag is set (returns at once if it is).
    Awaiter wait() noexcept { return Awaiter(*this); }

private:
    bool value_ = false;
    detail::WaitQueue waiters_;
};

}  // namespace asyncio
