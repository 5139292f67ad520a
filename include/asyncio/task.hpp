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
// Cancellation: cancel() raises CancelledError where the task is suspended (or where it resumes
// if it is already scheduled; if it is running, at the await it suspends in next, which is
// cancelled once the step is over, as asyncio's Task.__step does); awaiting another task forwards
// the cancellation to it. A task that returns while a cancellation is pending finishes cancelled.
// Task<> (Task<void>) can refer to a task of any result type.
//
// Handles are confined to the loop's thread.
#pragma once

#include <cassert>
#include <coroutine>
#include <cstdio>
#include <functional>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "asyncio/awaitable.hpp"
#include "asyncio/coroutine.hpp"
#include "asyncio/detail/promise.hpp"
#include "asyncio/event_loop.hpp"
#include "asyncio/future.hpp"

namespace asyncio {

template <class T = void>
class Task;

/// One coroutine of a call stack (Task::get_stack, asyncio/graph.hpp). The strings are static.
struct FrameCallGraphEntry {
    const char* function = "";  // its name, as __builtin_FUNCTION gives it (no class, no arguments)
    const char* file = "";
    unsigned line = 0;  // of the co_await it is suspended at (of its definition before its first;
                        // 0 where that is not known: see asyncio/graph.hpp)
};

namespace detail {
// Defined in src/graph.cpp.
std::vector<FrameCallGraphEntry> task_stack(PromiseBase* p, std::optional<int> limit);
void print_task_stack(PromiseBase* p, std::optional<int> limit, std::FILE* file);
}  // namespace detail

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

    /// The coroutines it is suspended in, oldest first (its own first), as Python's get_stack()
    /// but with the whole chain (asyncio/graph.hpp says what is known when). Empty once done.
    /// limit: at most that many, the innermost ones. On the loop's thread (RuntimeError).
    std::vector<FrameCallGraphEntry> get_stack(std::optional<int> limit = std::nullopt) const {
        return detail::task_stack(p_, limit);
    }
    /// Writes get_stack() as Python's print_stack() does ("Stack for <Task ...> (most recent call
    /// last):", then each frame with its source line when the file is readable; "No stack for";
    /// for a task that failed, "Traceback for" and the exception). file: stdout by default.
    void print_stack(std::optional<int> limit = std::nullopt, std::FILE* file = nullptr) const {
        detail::print_task_stack(p_, limit, file);
    }
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


namespace detail {

template <class A>
inline constexpr bool is_task_v = false;
template <class T>
inline constexpr bool is_task_v<Task<T>> = true;
template <class A>
inline constexpr bool is_future_v = false;
template <class T>
inline constexpr bool is_future_v<Future<T>> = true;

/// The result type of the task that ensure_future(a) gives for an A.
template <class A, class D = std::remove_cvref_t<A>>
struct future_value {
    using type = awaited_value_t<D>;
};
template <class A, class T>
struct future_value<A, Task<T>> {
    using type = T;
};
template <class A>
using future_value_t = typename future_value<A>::type;

/// What ensure_future(a) gives for an A: the same Future<T> for a future, else a Task<T>.
template <class A, class D = std::remove_cvref_t<A>>
struct future_handle {
    using type = Task<future_value_t<A>>;
};
template <class A, class T>
struct future_handle<A, Future<T>> {
    using type = Future<T>;
};
template <class A>
using future_handle_t = typename future_handle<A>::type;

// How create_task(a, args...) reads its arguments (see create_task below).
enum class TaskArgs { kAwaitable, kNamedAwaitable, kCallable, kInvalid };

template <class F, class... Args>
inline constexpr bool callable_returns_awaitable =
    Awaitable<std::invoke_result_t<std::decay_t<F>, std::decay_t<Args>...>>;
template <class F, class... Args>
inline constexpr bool callable_can_be_kept =
    std::is_constructible_v<std::decay_t<F>, F&&> &&
    (std::is_constructible_v<std::decay_t<Args>, Args&&> && ...);
template <class... Args>
inline constexpr bool is_task_name =
    sizeof...(Args) == 1 && (std::is_constructible_v<std::string, Args&&> && ...);

template <class A, class... Args>
constexpr TaskArgs task_args() {
    if constexpr (Awaitable<A>) {
        if constexpr (!storable_awaitable<A>)
            return TaskArgs::kInvalid;
        else if constexpr (sizeof...(Args) == 0)
            return TaskArgs::kAwaitable;
        else if constexpr (is_task_name<Args...>)
            return TaskArgs::kNamedAwaitable;
        else
            return TaskArgs::kInvalid;
    } else if constexpr (std::is_invocable_v<std::decay_t<A>, std::decay_t<Args>...>) {
        if constexpr (callable_returns_awaitable<A, Args...> && callable_can_be_kept<A, Args...>)
            return TaskArgs::kCallable;
        else
            return TaskArgs::kInvalid;
    } else {
        return TaskArgs::kInvalid;
    }
}
template <class A, class... Args>
inline constexpr bool valid_task_args = task_args<A, Args...>() != TaskArgs::kInvalid;

/// The one readable error for create_task arguments that are none of its forms.
template <class A, class... Args>
constexpr auto report_task_args() {  // auto: checked where it is named, first
    if constexpr (Awaitable<A>) {
        require_storable_awaitable<A>();
        if constexpr (storable_awaitable<A>)
            static_assert(sizeof...(Args) == 0 || is_task_name<Args...>,
                          "asyncio: create_task(awaitable, name): only the task's name (a "
                          "std::string) may follow an awaitable; to pass arguments, pass the "
                          "callable: create_task(f, args...)");
    } else if constexpr (std::is_invocable_v<std::decay_t<A>, std::decay_t<Args>...>) {
        static_assert(callable_returns_awaitable<A, Args...>,
                      "asyncio: create_task(f, args...): f(args...) must return an awaitable (a "
                      "Coroutine, a Task, ...)");
        static_assert(callable_can_be_kept<A, Args...>,
                      "asyncio: create_task(f, args...): f and args are copied or moved into the "
                      "task's frame, and these cannot be");
    } else {
        static_assert(argument_is_awaitable<A>,
                      "asyncio: argument is not awaitable (needs operator co_await or "
                      "await_ready/await_suspend/await_resume), nor a callable returning an "
                      "awaitable for the arguments given");
    }
}

/// Puts the rest of an await back into its task. A foreign awaiter (a type of the user's) may
/// resume the frame from anywhere on the loop's thread: from a loop callback, or from inside
/// another task's step (it called h.resume() there). The frame then suspends here and its task is
/// scheduled: it goes on one hop later, from the ready queue, as the current task (as a task that
/// one of the library's awaiters wakes). The library's own awaiters resume their task through
/// step_task, so for them this is one comparison.
struct ReenterTask {
    PromiseBase* task;
    bool await_ready() const noexcept { return t_task.current_task == task; }
    template <class P>
    void await_suspend(std::coroutine_handle<P> h, unsigned line = __builtin_LINE()) {
        detail::note_await(h, line);
        if (t_running_loop == nullptr)
            throw RuntimeError("an awaiter resumed its task outside its event loop");
        task->resume_ = h;
        task->waiting_ = nullptr;
        t_running_loop->schedule(&step_task, task);
    }
    void await_resume() const noexcept {}
};

/// A coroutine that owns aw (moved or copied into its frame) and yields what `co_await aw` does.
/// A is a decayed type.
template <class A>
Coroutine<awaited_value_t<A>> await_in_frame(A aw) {
    PromiseBase* const task = t_task.current_task;
    if constexpr (std::is_void_v<awaited_value_t<A>>) {
        co_await std::move(aw);
        co_await ReenterTask{task};
    } else {
        awaited_value_t<A> r = co_await std::move(aw);
        co_await ReenterTask{task};
        co_return static_cast<awaited_value_t<A>&&>(r);
    }
}

/// Any awaitable as a lazy Coroutine: a Coroutine is itself, anything else is awaited by a
/// coroutine that owns it (await_in_frame).
template <class A>
    requires storable_awaitable<A>
auto as_coroutine(A&& aw) {
    if constexpr (is_coroutine_v<std::remove_cvref_t<A>>)
        return std::remove_cvref_t<A>(std::move(aw));
    else
        return await_in_frame<std::decay_t<A>>(std::forward<A>(aw));
}

template <class F, class... Args>
using invoke_value_t = awaited_value_t<std::invoke_result_t<F, Args...>>;

/// The coroutine behind create_task(f, args...): f and the arguments live in its frame for as long
/// as the awaitable f returns is awaited, so a capturing lambda, or a reference parameter of f,
/// refers to them safely. They are passed as rvalues, as std::thread does (use std::ref to pass a
/// reference to something of yours). F and Args are decayed types. f is called in the full
/// expression that awaits its result, so a temporary made to convert an argument (a std::string
/// for a const std::string& parameter given a const char*) lives until the await is over.
template <class F, class... Args>
Coroutine<invoke_value_t<F, Args...>> invoke_in_frame(F f, Args... args) {
    PromiseBase* const task = t_task.current_task;
    if constexpr (std::is_void_v<invoke_value_t<F, Args...>>) {
        co_await std::move(f)(std::move(args)...);
        co_await ReenterTask{task};
    } else {
        invoke_value_t<F, Args...> r = co_await std::move(f)(std::move(args)...);
        co_await ReenterTask{task};
        co_return static_cast<invoke_value_t<F, Args...>&&>(r);
    }
}

/// invoke_in_frame of f(args...), a pointer to member called through std::mem_fn.
template <class F, class... Args>
auto make_invoke_coroutine(F&& f, Args&&... args) {
    if constexpr (std::is_member_pointer_v<std::decay_t<F>>) {
        using M = decltype(std::mem_fn(f));
        return invoke_in_frame<M, std::decay_t<Args>...>(std::mem_fn(f),
                                                         std::forward<Args>(args)...);
    } else {
        return invoke_in_frame<std::decay_t<F>, std::decay_t<Args>...>(std::forward<F>(f),
                                                                       std::forward<Args>(args)...);
    }
}

/// Makes a Coroutine a task of loop (what every create_task comes down to).
template <class T>
Task<T> adopt_coroutine(EventLoop& loop, Coroutine<T> coro) {
    if (loop.is_closed()) throw RuntimeError("Event loop is closed");
    if (!coro.valid()) throw InvalidStateError("create_task() of an empty Coroutine");
    if (coro.started()) throw RuntimeError("create_task() of a coroutine that was already awaited");
    auto h = coro.release();
    PromiseBase* p = &h.promise();
    p->resume_ = h;
    assert(frame_of(p).address() == h.address());
    task_start(p, loop);
    return Task<T>(p);
}

}  // namespace detail

/// Schedules a new task on the running loop (RuntimeError if none). The forms:
///   create_task(aw)            a task that awaits aw: any awaitable. A Coroutine becomes the task
///                              itself (one frame); anything else is moved into the frame of a
///                              small coroutine that awaits it (a Task: a new task awaiting it,
///                              whose cancellation cancels it; ensure_future() returns a Task as
///                              it is).
///   create_task(aw, name)      the same, named (the second argument converts to std::string).
///   create_task(f, args...)    a task that awaits f(args...): f and args are moved (or copied)
///                              into the task's frame and live as long as it, so a capturing
///                              lambda or a const& parameter bound to a temporary is safe (the
///                              arguments are passed as rvalues: std::ref for a reference).
/// Anything else fails to compile with one static_assert naming the argument's type.
template <class A, class... Args>
auto create_task(A&& a, Args&&... args) {
    if constexpr (!detail::valid_task_args<A, Args...>) {
        detail::report_task_args<A, Args...>();
        return detail::Refused{};
    } else {
        EventLoop* loop = detail::t_running_loop;
        if (loop == nullptr) throw RuntimeError("no running event loop");
        return loop->create_task(std::forward<A>(a), std::forward<Args>(args)...);
    }
}

/// Python's asyncio.ensure_future(aw): a Task or a Future as it is (the same one), anything else
/// awaitable as a new task of the running loop (create_task).
template <class A>
auto ensure_future(A&& aw) {
    using D = std::remove_cvref_t<A>;
    if constexpr (detail::is_task_v<D> || detail::is_future_v<D>) {
        return D(std::forward<A>(aw));
    } else if constexpr (!detail::storable_awaitable<A>) {
        detail::require_storable_awaitable<A>();
        return detail::Refused{};
    } else {
        return asyncio::create_task(std::forward<A>(aw));
    }
}

namespace detail {

template <class V>
inline constexpr bool is_vector_v = false;
template <class T>
inline constexpr bool is_vector_v<std::vector<T>> = true;

/// A vector of awaitables that gather/wait/as_completed can take: its elements are moved out of
/// an rvalue vector, copied out of an lvalue one.
template <class V, class Vec = std::remove_cvref_t<V>>
inline constexpr bool awaitable_vector = false;
template <class V, class A>
inline constexpr bool awaitable_vector<V, std::vector<A>> =
    storable_awaitable<A> &&
    ((!std::is_lvalue_reference_v<V> && !std::is_const_v<std::remove_reference_t<V>>) ||
     std::is_copy_constructible_v<A>);

template <class V>
constexpr auto require_awaitable_vector() {  // auto: checked where it is named, first
    using Vec = std::remove_cvref_t<V>;
    static_assert(is_vector_v<Vec>, "asyncio: expected a std::vector of awaitables");
    if constexpr (is_vector_v<Vec>) {
        require_storable_awaitable<typename Vec::value_type>();
        static_assert(!storable_awaitable<typename Vec::value_type> || awaitable_vector<V>,
                      "asyncio: the awaitables of this vector cannot be copied (a Coroutine runs "
                      "once): pass std::move(v)");
    }
}

/// Every awaitable of the vector as ensure_future makes it (a task, or the future itself), in order.
template <class V>
auto as_tasks(V&& v) {
    using A = typename std::remove_cvref_t<V>::value_type;
    using H = future_handle_t<A>;
    if constexpr (std::is_same_v<A, H>) {
        return std::vector<H>(std::forward<V>(v));
    } else {
        std::vector<H> tasks;
        tasks.reserve(v.size());
        for (auto& a : v) {
            if constexpr (std::is_lvalue_reference_v<V>)
                tasks.push_back(asyncio::ensure_future(a));
            else
                tasks.push_back(asyncio::ensure_future(std::move(a)));
        }
        return tasks;
    }
}

}  // namespace detail

/// The task running now (empty outside a task).
Task<> current_task();
/// Every task of the running loop that is not done yet.
std::vector<Task<>> all_tasks();
std::vector<Task<>> all_tasks(EventLoop& loop);

template <class A, class... Args>
auto EventLoop::create_task(A&& a, Args&&... args) {
    constexpr detail::TaskArgs form = detail::task_args<A, Args...>();
    if constexpr (form == detail::TaskArgs::kInvalid) {
        detail::report_task_args<A, Args...>();
        return detail::Refused{};
    } else if constexpr (form == detail::TaskArgs::kCallable) {
        if (closed_) throw RuntimeError("Event loop is closed");
        return detail::adopt_coroutine(
            *this, detail::make_invoke_coroutine(std::forward<A>(a), std::forward<Args>(args)...));
    } else {
        if (closed_) throw RuntimeError("Event loop is closed");
        auto task = detail::adopt_coroutine(*this, detail::as_coroutine(std::forward<A>(a)));
        if constexpr (form == detail::TaskArgs::kNamedAwaitable)
            task.set_name(std::string(std::forward<Args>(args)...));
        return task;
    }
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
    // Under seeded chaos, a run that ends by an exception prints its seed (testing.hpp).
    if (chaos_ != nullptr && p->has(detail::kHasException)) [[unlikely]]
        chaos_failed();
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
