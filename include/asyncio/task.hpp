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

namespace asyncio {

namespace detail {

/// Resumes a task where it stopped, with it as the current task. Runs from the ready queue.
inline void step_task(void* ctx) {
    auto* t = static_cast<PromiseBase*>(ctx);
    PromiseBase* const prev = t_current_task;
    t_current_task = t;
    t->resume_.resume();  // the task may be freed once this returns
    t_current_task = prev;
}

void cancel_unstarted(PromiseBase* t) noexcept;

/// A task's first step: one cancelled before it ever ran finishes as cancelled without running.
inline void start_task(void* ctx) {
    auto* t = static_cast<PromiseBase*>(ctx);
    if (t->has(kMustCancel)) {
        cancel_unstarted(t);
        return;
    }
    step_task(ctx);
}

/// Schedules a suspended task to resume (it no longer waits on anything cancellable).
inline void wake_task(PromiseBase* t) {
    t->waiting_ = nullptr;
    t_running_loop->schedule(&step_task, t);
}

/// Suspends the current task: records where to resume and what it waits on. Returns false
/// (do not suspend) when a cancellation is pending, so that the awaiter raises it at once.
inline bool suspend_task(PromiseBase* t, std::coroutine_handle<> h, CancelHook* hook) noexcept {
    if (t->has(kMustCancel)) return false;
    t->resume_ = h;
    t->waiting_ = hook;
    return true;
}

/// Raises the pending cancellation of t, if any (at the end of every task suspension).
inline void check_cancelled(PromiseBase* t) {
    if (t != nullptr && t->has(kMustCancel)) throw_cancelled(t);
}

void unregister_waiter(PromiseBase* target, DoneWaiter* w) noexcept;
/// Makes p a task of loop: the loop's reference, the Task handle's, its place in the loop's list
/// of pending tasks, and its first step in the ready queue. (Inline: it is most of create_task.)
inline void task_start(PromiseBase* p, EventLoop& loop) {
    p->flags_ |= kTaskMode;
    p->refs_ = 2;  // the loop's, and the Task handle's
    PromiseBase*& head = loop.task_list();
    p->next_ = head;
    if (head != nullptr) head->prev_ = p;
    head = p;
    loop.schedule(&start_task, p);
}
/// Takes the message of t's pending cancellation (empty if none), to pass it on.
std::string take_cancel_message(PromiseBase* t);

/// co_await of a task from another task.
template <class T, bool Move>
struct [[nodiscard]] TaskAwaiter : DoneWaiter, CancelHook {
    Promise<T>* target;
    PromiseBase* self = nullptr;

    explicit TaskAwaiter(Promise<T>* t) noexcept : target(t) {}

    bool await_ready() const {
        if (target == nullptr) throw InvalidStateError("cannot await an empty Task");
        return target->has(kDone);
    }
    bool await_suspend(std::coroutine_handle<> h) {
        self = current_task_or_throw("awaiting a Task");
        if (self == target) throw RuntimeError("Task cannot await on itself");
        if (!suspend_task(self, h, this)) return false;
        DoneWaiter::fn = &on_done;
        DoneWaiter::next = target->waiters_;
        target->waiters_ = this;
        CancelHook::fn = &on_cancel;
        return true;
    }
    decltype(auto) await_resume() {
        if (self != nullptr && self->has(kMustCancel)) {
            if (!target->has(kDone)) unregister_waiter(target, this);
            throw_cancelled(self);
        }
        return take_result(*target, Move && target->refs_ == 1);
    }

    static void on_done(DoneWaiter* w, PromiseBase*) {
        wake_task(static_cast<TaskAwaiter*>(w)->self);
    }
    static bool on_cancel(CancelHook* h) {
        auto* a = static_cast<TaskAwaiter*>(h);
        return task_cancel(a->target, take_cancel_message(a->self));  // as Python: msg goes along
    }
};

}  // namespace detail

template <class T = void>
class Task;

/// Common part of every Task<T>; Task<void> is this with result() returning void.
template <class T>
class Task {
public:
    using promise_type = detail::Promise<T>;
    using value_type = T;

    Task() noexcept = default;
    Task(const Task& o) noexcept : p_(o.p_) {
        if (p_) ++p_->refs_;
    }
    Task(Task&& o) noexcept : p_(std::exchange(o.p_, nullptr)) {}
    Task& operator=(Task o) noexcept {
        std::swap(p_, o.p_);
        return *this;
    }
    ~Task() {
        if (p_) detail::task_release(p_);
    }

    explicit operator bool() const noexcept { return p_ != nullptr; }

    /// True when the task has finished: returned, raised, or was cancelled.
    bool done() const noexcept { return p_->has(detail::kDone); }
    /// True when the task finished by CancelledError.
    bool cancelled() const noexcept { return p_->has(detail::kCancelled); }

    /// The task's value; rethrows its exception (CancelledError if it was cancelled);
    /// InvalidStateError while it is pending.
    decltype(auto) result() const {
        check_done();
        if constexpr (std::is_void_v<T>) {
            detail::task_rethrow(p_);
        } else {
            return promise().value_ref();
        }
    }
    /// The exception the task finished with (nullptr if it returned). Throws CancelledError if it
    /// was cancelled, InvalidStateError while it is pending.
    std::exception_ptr exception() const {
        check_done("Exception is not set.");
        if (cancelled()) detail::task_rethrow(p_);
        p_->flags_ |= detail::kRetrieved;
        return p_->exception();
    }

    /// Requests cancellation: CancelledError is raised inside the task where it is suspended.
    /// Returns false if the task is already done. Outside a running loop (as between runs) it
    /// works for tasks of the thread's first loop; a waiting task of another loop: RuntimeError.
    bool cancel(std::string msg = {}) { return detail::task_cancel(p_, std::move(msg)); }
    /// Number of pending cancellation requests (Python 3.11 cancelling()).
    int cancelling() const noexcept { return p_->cancelling_; }
    /// Decrements the count of cancellation requests; returns the new count.
    int uncancel() noexcept {
        if (p_->cancelling_ > 0 && --p_->cancelling_ == 0) p_->flags_ &= ~detail::kMustCancel;
        return p_->cancelling_;
    }

    std::string get_name() const { return detail::task_name(p_); }
    void set_name(std::string name) { detail::task_set_name(p_, std::move(name)); }

    /// Calls fn(task) through the loop's ready queue once the task is done (at once, scheduled,
    /// if it already is; that needs a running loop, else RuntimeError).
    template <class F>
    void add_done_callback(F&& fn);

    detail::TaskAwaiter<T, false> operator co_await() const& noexcept {
        return detail::TaskAwaiter<T, false>(&promise());
    }
    detail::TaskAwaiter<T, true> operator co_await() && noexcept {
        return detail::TaskAwaiter<T, true>(&promise());
    }

    friend bool operator==(const Task& a, const Task& b) noexcept { return a.p_ == b.p_; }

    // ---- internals ----
    explicit Task(detail::PromiseBase* p) noexcept : p_(p) {}  // adopts one reference
    detail::PromiseBase* base() const noexcept { return p_; }
    promise_type& promise() const noexcept { return *static_cast<promise_type*>(p_); }

    template <class U>
    Task(const Task<U>& o) noexcept  // NOLINT: any task converts to Task<>
        requires(std::is_void_v<T> && !std::is_void_v<U>)
        : p_(o.base()) {
        if (p_) ++p_->refs_;
    }

private:
    void check_done(const char* pending = "Result is not set.") const {  // CPython's texts
        if (p_ == nullptr) throw InvalidStateError("empty Task");
        if (!done()) throw InvalidStateError(pending);
    }
    detail::PromiseBase* p_ = nullptr;
};

namespace detail {
/// A callback of add_done_callback() in the task's list of waiters. The Callback owns the user's
/// callable and a Task handle; it moves to the loop's ready queue when the task is done, so that a
/// loop closed before it runs (or a task destroyed pending) frees both.
struct DoneCallbackNode : DoneWaiter {
    Callback cb;
};
/// DoneWaiter::fn of every DoneCallbackNode (release_loop_tasks() recognises them by it): hands the
/// callback to the running loop and frees the node.
void run_done_callback(DoneWaiter* w, PromiseBase* done_task);
}  // namespace detail

template <class T>
template <class F>
void Task<T>::add_done_callback(F&& fn) {
    // A task does not know its loop: a finished one can only schedule on the running loop.
    if (done() && detail::t_running_loop == nullptr)
        throw RuntimeError("add_done_callback() of a finished Task needs a running event loop");
    auto node = std::make_unique<detail::DoneCallbackNode>();
    node->cb = [f = std::decay_t<F>(std::forward<F>(fn)), task = *this]() mutable { f(task); };
    node->DoneWaiter::fn = &detail::run_done_callback;
    if (done()) {
        detail::run_done_callback(node.release(), p_);
        return;
    }
    node->next = p_->waiters_;
    p_->waiters_ = node.release();
}

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
