// asyncio::Task<T>: a coroutine scheduled on the loop, running concurrently with the others.
//
// Ownership: the loop owns a pending task (dropping every Task handle does not stop it, as in
// asyncio's fire-and-forget create_task); Task<T> handles are reference-counted views of it. The
// frame is freed when the task is done and no handle is left. A task whose exception nobody looked
// at (result(), exception(), co_await) is reported through the loop's exception handler when it is
// freed ("Task exception was never retrieved").
//
// Ordering: create_task schedules the first step with call_soon semantics; a task awaiting another
// is woken through the ready queue when that one finishes (one iteration later, as in asyncio).
// Cancellation: cancel() raises CancelledError where the task is suspended (or at its next
// suspension point if it is running or already scheduled); awaiting another task forwards the
// cancellation to it. Task<> (Task<void>) can refer to a task of any result type.
//
// Handles are confined to the loop's thread.
#pragma once

#include <cassert>
#include <coroutine>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "asyncio/coroutine.hpp"
#include "asyncio/detail/promise.hpp"
#include "asyncio/event_loop.hpp"
#include "asyncio/future.hpp"

namespace asyncio {

template <class T = void>
class Task;

/// A Task<T> is a Future<T> that its coroutine completes; Task<> (Task<void>) can refer to a task of
/// any result type.
template <class T>
class Task : public Future<T> {
    using Future<T>::p_;

public:
    using promise_type = detail::Promise<T>;

    Task() noexcept = default;

    /// Number of pending cancellation requests (Python 3.11 cancelling()).
    int cancelling() const noexcept { return p_->cancelling_; }
    /// Decrements the count of cancellation requests; returns the new count.
    int uncancel() noexcept {
        if (p_->cancelling_ > 0 && --p_->cancelling_ == 0) p_->flags_ &= ~detail::kMustCancel;
        return p_->cancelling_;
    }

    std::string get_name() const { return detail::task_name(p_); }
    void set_name(std::string name) { detail::task_set_name(p_, std::move(name)); }

    /// Calls fn(task) through the loop's ready queue once the task is done (scheduled at once if
    /// it already is). RuntimeError "Event loop is closed" once its loop is closed.
    template <class F>
        requires std::is_invocable_v<std::decay_t<F>&, Task<T>&>
    DoneCallbackId add_done_callback(F&& fn) {
        detail::check_loop_thread(p_, "add_done_callback()");
        return DoneCallbackId{detail::add_done_callback_with(*this, std::forward<F>(fn))};
    }

    friend bool operator==(const Task& a, const Task& b) noexcept { return a.p_ == b.p_; }

    // ---- internals ----
    explicit Task(detail::PromiseBase* p) noexcept : Future<T>(p) {}  // adopts one reference

    template <class U>
    Task(const Task<U>& o) noexcept  // NOLINT: any task converts to Task<>
        requires(std::is_void_v<T> && !std::is_void_v<U>)
        : Future<T>(o.base()) {
        if (p_) ++p_->refs_;
    }
};


/// Schedules coro as a new task on the running loop (RuntimeError if none).
template <class T>
Task<T> create_task(Coroutine<T> coro) {
    EventLoop* loop = detail::t_running_loop;
    if (loop == nullptr) throw RuntimeError("no running event loop");
    return loop->create_task(std::move(coro));
}
template <class T>
Task<T> create_task(Coroutine<T> coro, std::string name) {
    EventLoop* loop = detail::t_running_loop;
    if (loop == nullptr) throw RuntimeError("no running event loop");
    return loop->create_task(std::move(coro), std::move(name));
}

/// The task running now (empty outside a task).
Task<> current_task();
/// Every task of the running loop that is not done yet.
std::vector<Task<>> all_tasks();
std::vector<Task<>> all_tasks(EventLoop& loop);

template <class T>
Task<T> EventLoop::create_task(Coroutine<T> coro) {
    if (closed_) throw RuntimeError("Event loop is closed");
    if (!coro.valid()) throw InvalidStateError("create_task() of an empty Coroutine");
    if (coro.started())
        throw RuntimeError("create_task() of a coroutine that was already awaited");
    auto h = coro.release();
    detail::PromiseBase* p = &h.promise();
    p->resume_ = h;
    assert(detail::frame_of(p).address() == h.address());
    detail::task_start(p, *this);
    return Task<T>(p);
}

template <class T>
Task<T> EventLoop::create_task(Coroutine<T> coro, std::string name) {
    Task<T> t = create_task(std::move(coro));
    t.set_name(std::move(name));
    return t;
}

template <class T>
T EventLoop::run_until_complete(Task<T> task) {
    check_runnable();
    struct Stopper : detail::DoneWaiter {
        EventLoop* loop;
    } stopper;
    stopper.loop = this;
    stopper.fn = [](detail::DoneWaiter* w, detail::PromiseBase*) {
        static_cast<Stopper*>(w)->loop->stop();
    };
    detail::PromiseBase* p = task.base();
    if (!p->has(detail::kDone)) {
        stopper.next = p->waiters_;
        p->waiters_ = &stopper;
        try {
            run_forever();
        } catch (...) {
            if (!p->has(detail::kDone)) detail::unregister_waiter(p, &stopper);
            throw;
        }
        if (!p->has(detail::kDone)) {
            detail::unregister_waiter(p, &stopper);
            throw RuntimeError("Event loop stopped before Future completed.");
        }
    }
    if constexpr (std::is_void_v<T>) {
        task.result();
    } else {
        return detail::take_result(task.promise(), task.base()->refs_ == 1);
    }
}

template <class T>
T EventLoop::run_until_complete(Coroutine<T> coro) {
    check_runnable();
    return run_until_complete(create_task(std::move(coro)));
}

}  // namespace asyncio
