// asyncio::shield(aw): protects aw from cancellation of the task that awaits it.
//
//   T v = co_await asyncio::shield(save());
//
// aw is any awaitable (awaitable.hpp). If the awaiting task is cancelled, that await raises
// CancelledError at once while the inner work (a task: anything but a Task is made one, as
// ensure_future does) goes on running to its end, owned by the loop; its outcome is then dropped,
// and an exception it ends with is reported as never retrieved unless a Task handle kept elsewhere
// looks at it (as asyncio 3.11+). Cancelling the inner task itself (Task::cancel on it) still
// cancels it, and the await raises.
#pragma once

#include <cassert>
#include <coroutine>
#include <utility>

#include "asyncio/coroutine.hpp"
#include "asyncio/task.hpp"

namespace asyncio {

namespace detail {

/// ShieldAwaiter's state that does not depend on T: its done waiter is one function, by which
/// call graphs know the task awaiting the shielded one (awaiting_task).
struct ShieldWait : DoneWaiter, CancelHook {
    PromiseBase* self_ = nullptr;
    bool registered_ = false;
    bool cancelled_ = false;

    static void on_done(DoneWaiter* w, PromiseBase*) {
        auto* self = static_cast<ShieldWait*>(w);
        self->registered_ = false;
        wake_task(self->self_);
    }
    /// The task awaiting through w, if w is a ShieldWait; else null.
    static PromiseBase* awaiting_task(const DoneWaiter* w) noexcept {
        return w->fn == &on_done ? static_cast<const ShieldWait*>(w)->self_ : nullptr;
    }
};

template <class T>
class [[nodiscard]] ShieldAwaiter : ShieldWait {
public:
    explicit ShieldAwaiter(Future<T> inner) noexcept : inner_(std::move(inner)) {}
    /// Movable until it is awaited (so that wait_for(shield(t), d) and the like can keep it).
    ShieldAwaiter(ShieldAwaiter&& o) noexcept
        : ShieldWait(), inner_(std::move(o.inner_)) {
        assert(!o.registered_ && o.self_ == nullptr);
    }
    ShieldAwaiter& operator=(ShieldAwaiter&&) = delete;
    ~ShieldAwaiter() {
        if (registered_) unregister_waiter(inner_.base(), this);
    }

    bool await_ready() const noexcept { return inner_.done(); }
    template <class P>
    bool await_suspend(std::coroutine_handle<P> h, unsigned line = __builtin_LINE()) {
        detail::note_await(h, line);
        self_ = current_task_or_throw("shield()");
        suspend_task(self_, h, this, "shield()");
        DoneWaiter::fn = &on_done;
        DoneWaiter::next = inner_.base()->waiters_;
        inner_.base()->waiters_ = this;
        CancelHook::fn = &on_cancel;
        registered_ = true;
        return true;
    }
    decltype(auto) await_resume() {
        if (self_ != nullptr && (cancelled_ || self_->has(kMustCancel))) {
            if (registered_) {
                unregister_waiter(inner_.base(), this);
                registered_ = false;
            }
            // The inner task goes on. As asyncio (whose inner done callback goes with the outer
            // future), an exception it ends with later is reported as never retrieved unless
            // someone looks at it; one it already ended with when we were cancelled counts as seen.
            if (!cancelled_) inner_.base()->flags_ |= kRetrieved;
            throw_cancelled(self_);
        }
        return take_result(inner_.promise(), inner_.base()->refs_ == 1);
    }

private:
    static bool on_cancel(CancelHook* h) {
        auto* self = static_cast<ShieldAwaiter*>(h);
        unregister_waiter(self->inner_.base(), self);
        self->registered_ = false;
        self->cancelled_ = true;  // raise even if uncancel() comes before we run
        wake_task(self->self_);
        return false;  // the awaiter raises CancelledError; the inner task is left alone
    }

    Future<T> inner_;  // a task, or the future given
};

}  // namespace detail

/// shield(aw) for any awaitable: aw becomes a task (ensure_future: a Task is used as it is).
template <class A>
auto shield(A&& aw) {
    if constexpr (!detail::storable_awaitable<A>) {
        detail::require_storable_awaitable<A>();
        return detail::Refused{};
    } else {
        return detail::ShieldAwaiter<detail::future_value_t<A>>(
            asyncio::ensure_future(std::forward<A>(aw)));
    }
}

}  // namespace asyncio
