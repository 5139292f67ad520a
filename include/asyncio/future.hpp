// asyncio::Future<T>: a result that somebody sets later (Python's asyncio.Future), made by
// loop.create_future<T>(). Many tasks may co_await one future; each gets the value (a copy) or the
// exception. set_result()/set_exception()/cancel() complete it once; done callbacks then run
// through the loop's ready queue, oldest first, after the awaiting tasks were scheduled in the order
// they started waiting (asyncio's order). A Task<T> is a Future<T> (as in Python) that its coroutine
// completes: set_result() on a task raises RuntimeError.
//
// Ownership: Future<T> is a reference-counted handle to a state of its loop. A future dropped while
// pending is freed silently; one whose exception nobody looked at is reported through the loop's
// exception handler ("Future exception was never retrieved"), as in Python.
//
// Threads: a future belongs to its loop. Completing it, cancelling it or adding callbacks from a
// thread whose running loop is not its loop, while its loop runs, raises RuntimeError (Python's
// "Non-thread-safe operation invoked on an event loop other than the current one"); from another
// thread, post the call with loop.call_soon_threadsafe(). The handle's count is not atomic:
// copy and destroy handles on the loop's thread (or while it is not running); to hand one to a
// callback posted from another thread, move it in.
#pragma once

#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>

#include "asyncio/coroutine.hpp"
#include "asyncio/detail/callback.hpp"
#include "asyncio/detail/promise.hpp"
#include "asyncio/detail/task_core.hpp"
#include "asyncio/event_loop.hpp"
#include "asyncio/exceptions.hpp"

namespace asyncio {

template <class T = void>
class Future;

/// Names a callback given to add_done_callback(), for remove_done_callback(). (Python compares
/// the callables; C++ callables have no equality, so the call that adds one returns its name.)
enum class DoneCallbackId : std::uint64_t {};

namespace detail {

/// A callback of add_done_callback() in the future's list of waiters. It owns the user's callable
/// and a handle to the future; it moves to the loop's ready queue when the future is done, so that
/// a loop closed before it runs frees both.
struct DoneCallbackNode : DoneWaiter {
    Callback cb;
    std::uint64_t id = 0;
};
/// DoneWaiter::fn of every DoneCallbackNode (release_loop_tasks() recognises them by it): hands the
/// callback to the future's loop and frees the node (dropped if that loop is closed).
void run_done_callback(DoneWaiter* w, PromiseBase* done_task);
/// Links a done callback (or schedules it at once if p is done); returns its id.
std::uint64_t add_done_callback_node(PromiseBase* p, Callback cb);
/// Unlinks the pending done callback `id`; returns how many were removed (0 or 1).
std::size_t remove_done_callback_node(PromiseBase* p, std::uint64_t id);

/// add_done_callback() of Future and Task: fn is called with a copy of `handle`.
template <class Handle, class F>
std::uint64_t add_done_callback_with(const Handle& handle, F&& fn) {
    return add_done_callback_node(
        handle.base(), [f = std::decay_t<F>(std::forward<F>(fn)), h = handle]() mutable { f(h); });
}

inline void check_loop_thread(const PromiseBase* p, const char* what) {
    if (p->loop_ != t_running_loop) [[unlikely]]
        check_loop_thread_slow(p, what);
}
/// Checks that p is a pending future this thread may complete (InvalidStateError "invalid state",
/// RuntimeError for a task or the wrong thread).
void check_settable(PromiseBase* p, const char* what);
/// Completes future p (its value or exception is stored): wakes its awaiters, then its callbacks.
void future_complete(PromiseBase* p) noexcept;
/// Makes the state of a new future of loop (one reference: the handle's).
void future_start(PromiseBase* p, EventLoop& loop) noexcept;

/// The frame that holds a future's state: it is never resumed (the promise is the state).
template <class T>
Coroutine<T> future_frame() {
    co_await std::suspend_always{};
    std::abort();  // never resumed
}

}  // namespace detail

template <class T>
class Future {
public:
    using value_type = T;

    /// An empty handle (valid() is false); loop.create_future<T>() makes a future.
    Future() noexcept = default;
    Future(const Future& o) noexcept : p_(o.p_) {
        if (p_) ++p_->refs_;
    }
    Future(Future&& o) noexcept : p_(std::exchange(o.p_, nullptr)) {}
    Future& operator=(Future o) noexcept {
        std::swap(p_, o.p_);
        return *this;
    }
    ~Future() {
        if (p_) detail::task_release(p_);
    }

    explicit operator bool() const noexcept { return p_ != nullptr; }

    /// True once it has a result or an exception, or was cancelled.
    bool done() const noexcept { return p_->has(detail::kDone); }
    /// True once it was cancelled.
    bool cancelled() const noexcept { return p_->has(detail::kCancelled); }

    /// The value; rethrows the exception (CancelledError if cancelled); InvalidStateError
    /// "Result is not set." while pending.
    decltype(auto) result() const {
        check_done();
        if constexpr (std::is_void_v<T>) {
            detail::task_rethrow(p_);
        } else {
            return promise().value_ref();
        }
    }
    /// The exception it finished with (nullptr if it has a value). Throws CancelledError if it was
    /// cancelled, InvalidStateError "Exception is not set." while pending.
    std::exception_ptr exception() const {
        check_done("Exception is not set.");
        if (cancelled()) detail::task_rethrow(p_);
        p_->flags_ |= detail::kRetrieved;
        return p_->exception();
    }

    /// Sets the value and completes the future. InvalidStateError "invalid state" if it is done;
    /// RuntimeError on a Task ("Task does not support set_result operation").
    template <class U = T>
        requires(!std::is_void_v<T> && std::is_constructible_v<std::remove_cvref_t<T>, U &&>)
    void set_result(U&& value) {
        detail::check_settable(p_, "set_result");
        promise().return_value(std::forward<U>(value));
        detail::future_complete(p_);
    }
    void set_result()
        requires std::is_void_v<T>
    {
        detail::check_settable(p_, "set_result");
        promise().return_void();
        detail::future_complete(p_);
    }
    /// Sets the exception and completes the future (errors as set_result; TypeError for a null
    /// exception_ptr). A CancelledError set this way does not make the future cancelled(), as in
    /// Python: use cancel().
    void set_exception(std::exception_ptr e) {
        detail::check_settable(p_, "set_exception");
        if (!e) throw TypeError("set_exception() needs an exception, not a null exception_ptr");
        p_->set_exception(std::move(e));
        detail::future_complete(p_);
    }
    template <class E>
        requires(!std::is_same_v<std::decay_t<E>, std::exception_ptr> &&
                 std::is_class_v<std::decay_t<E>>)
    void set_exception(E&& e) {
        set_exception(std::make_exception_ptr(std::forward<E>(e)));
    }

    /// Cancels it: it completes at once with CancelledError(msg) (a task: CancelledError is raised
    /// where it is suspended). False if it is already done.
    bool cancel(std::string msg = {}) { return detail::task_cancel(p_, std::move(msg)); }

    /// Calls fn(future) through the loop's ready queue once it is done (scheduled at once if it
    /// already is). RuntimeError "Event loop is closed" if its loop is closed.
    template <class F>
        requires std::is_invocable_v<std::decay_t<F>&, Future<T>&>
    DoneCallbackId add_done_callback(F&& fn) {
        detail::check_loop_thread(p_, "add_done_callback()");
        return DoneCallbackId{detail::add_done_callback_with(*this, std::forward<F>(fn))};
    }
    /// Removes a callback that has not run yet; returns how many were removed (0 or 1).
    std::size_t remove_done_callback(DoneCallbackId id) {
        detail::check_loop_thread(p_, "remove_done_callback()");
        return detail::remove_done_callback_node(p_, static_cast<std::uint64_t>(id));
    }

    /// The loop it belongs to. RuntimeError once that loop is destroyed.
    EventLoop& get_loop() const {
        if (p_->loop_ == nullptr) throw RuntimeError("the event loop of this future is gone");
        return *p_->loop_;
    }

    detail::TaskAwaiter<T, false> operator co_await() const& noexcept {
        return detail::TaskAwaiter<T, false>(p_ ? &promise() : nullptr);
    }
    detail::TaskAwaiter<T, true> operator co_await() && noexcept {
        return detail::TaskAwaiter<T, true>(p_ ? &promise() : nullptr);
    }

    friend bool operator==(const Future& a, const Future& b) noexcept { return a.p_ == b.p_; }

    // ---- internals ----
    explicit Future(detail::PromiseBase* p) noexcept : p_(p) {}  // adopts one reference
    detail::PromiseBase* base() const noexcept { return p_; }
    detail::Promise<T>& promise() const noexcept { return *static_cast<detail::Promise<T>*>(p_); }

protected:
    void check_done(const char* pending = "Result is not set.") const {  // CPython's texts
        if (p_ == nullptr) throw InvalidStateError("empty Future");
        if (!done()) throw InvalidStateError(pending);
    }
    detail::PromiseBase* p_ = nullptr;
};

template <class T>
Future<T> EventLoop::create_future() {
    if (closed_) throw RuntimeError("Event loop is closed");
    auto h = detail::future_frame<T>().release();
    detail::future_start(&h.promise(), *this);
    return Future<T>(&h.promise());
}

}  // namespace asyncio
