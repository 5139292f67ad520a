// Blocking work on threads: asyncio::to_thread and loop.run_in_executor, on a ThreadPoolExecutor.
//
//   std::string text = co_await asyncio::to_thread(read_file, path);   // the loop keeps running
//
// to_thread(fn, args...) is a Coroutine<R> (lazy, as Python's): once awaited it calls
// fn(args...) on a thread of the running loop's default executor and returns its result or rethrows
// its exception in the task. R is fn's result type, decayed (a reference result is copied on the
// worker thread). fn and args are decay-copied (moved) to the thread, as std::thread does: pass
// std::ref(x) to share x, which must then outlive the call.
//
// loop.run_in_executor(fn, args...) submits at once and returns an ExecutorFuture<R> to co_await
// (once) in a task of that loop; loop.run_in_executor(executor, fn, args...) uses another
// ThreadPoolExecutor. (Python's run_in_executor(None, fn, *args) is run_in_executor(fn, args...).)
//
// The default executor is created on first use with min(32, cores + 4) threads at most (Python's
// default), started lazily (a thread is added only when a job finds none idle), and is shut down,
// its threads joined, when the loop closes: asyncio::run() and EventLoop::close() wait for the
// functions still running, for at most kThreadJoinTimeout (300 s, as Python's asyncio.run). After
// that a RuntimeWarning goes to the loop's exception handler and the threads still busy are left
// running, detached; they own (shared_ptr) everything they touch, and their results are dropped.
// The result reaches the loop through call_soon_threadsafe.
//
// Cancellation: cancelling the awaiting task raises CancelledError in it at once; the function
// cannot be interrupted and runs to its end on its thread, and its result (or exception) is then
// dropped: the awaiter's frame may be gone by then, nothing refers to it.
#pragma once

#include <chrono>
#include <coroutine>
#include <cstddef>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <tuple>
#include <type_traits>
#include <utility>

#include "asyncio/coroutine.hpp"
#include "asyncio/detail/callback.hpp"
#include "asyncio/detail/waiter.hpp"
#include "asyncio/event_loop.hpp"
#include "asyncio/task.hpp"
#include "asyncio/thread_pool.hpp"

namespace asyncio {

namespace detail {

/// What a job shares with its ExecutorFuture. The worker writes the outcome, then posts the
/// state to the loop (the post's mutex orders the write before the loop's reads); everything else
/// is loop-thread only.
struct ExecStateBase {
    std::exception_ptr error;        // worker, before posting
    Waiter* waiter = nullptr;        // loop: the suspended awaiter
    bool done = false;               // loop: the outcome arrived
    bool taken = false;              // loop: it was awaited

    /// On the loop thread, from the ready queue: the outcome is there; resume the waiter if any.
    void deliver() {
        done = true;
        if (Waiter* w = waiter) {
            waiter = nullptr;
            w->wake_now();
        }
    }
};
template <class T>
struct ExecState : ExecStateBase {
    std::optional<T> value;
};
template <>
struct ExecState<void> : ExecStateBase {};

/// Worker side: hands a finished state to its loop with call_soon_threadsafe; dropped (freed on
/// this thread) if the loop is closed or gone.
void post_to_loop(const std::shared_ptr<LoopLink>& link, std::shared_ptr<ExecStateBase> state) noexcept;

/// Runs f() on executor; its value or exception goes into state, which is then handed to the loop
/// behind link. The one job both run_in_executor and the file calls (files.cpp) submit.
template <class R, class F>
void submit_job(ThreadPoolExecutor& executor, std::shared_ptr<LoopLink> link, std::shared_ptr<ExecState<R>> state,
                F f) {
    executor.submit([state = std::move(state), lk = std::move(link), f = std::move(f)]() mutable {
        try {
            if constexpr (std::is_void_v<R>)
                f();
            else
                state->value.emplace(f());
        } catch (...) {
            state->error = std::current_exception();
        }
        post_to_loop(lk, std::move(state));
    });
}

template <class F, class... Args>
using executor_result_t = std::decay_t<std::invoke_result_t<std::decay_t<F>, std::decay_t<Args>...>>;

}  // namespace detail

/// The outcome of a function submitted with run_in_executor: co_await it once, in a task of the
/// loop that submitted it. Dropping it without awaiting is safe (the result is discarded).
template <class T>
class [[nodiscard]] ExecutorFuture {
public:
    ExecutorFuture() noexcept = default;
    explicit ExecutorFuture(std::shared_ptr<detail::ExecState<T>> state) noexcept
        : state_(std::move(state)) {}
    ExecutorFuture(ExecutorFuture&&) noexcept = default;
    ExecutorFuture& operator=(ExecutorFuture&&) noexcept = default;
    ExecutorFuture(const ExecutorFuture&) = delete;
    ExecutorFuture& operator=(const ExecutorFuture&) = delete;

    /// True once the function has finished and its outcome reached the loop.
    bool done() const noexcept { return state_ && state_->done; }

    class [[nodiscard]] Awaiter : public detail::Waiter {
    public:
        explicit Awaiter(std::shared_ptr<detail::ExecState<T>> st) noexcept : st_(std::move(st)) {}
        Awaiter(const Awaiter&) = delete;
        Awaiter& operator=(const Awaiter&) = delete;
        ~Awaiter() {
            if (st_ && st_->waiter == this) st_->waiter = nullptr;
        }
        bool await_ready() const {
            if (!st_) throw InvalidStateError("cannot await an empty ExecutorFuture");
            if (st_->taken) throw RuntimeError("ExecutorFuture can be awaited only once");
            return st_->done;
        }
        template <class P>
        bool await_suspend(std::coroutine_handle<P> h, unsigned line = __builtin_LINE()) {
            detail::note_await(h, line);
            begin_wait(h, "awaiting run_in_executor()", &on_cancel);
            st_->waiter = this;
            return true;
        }
        T await_resume() {
            end_wait();
            st_->taken = true;
            if (st_->error) std::rethrow_exception(st_->error);
            if constexpr (!std::is_void_v<T>) return std::move(*st_->value);
        }

    private:
        static bool on_cancel(detail::CancelHook* h) {
            auto* self = static_cast<Awaiter*>(from_hook(h));
            self->st_->waiter = nullptr;  // the function runs on; its outcome will be dropped
            return self->cancel_wait();
        }
        std::shared_ptr<detail::ExecState<T>> st_;
    };

    Awaiter operator co_await() const noexcept { return Awaiter(state_); }

private:
    std::shared_ptr<detail::ExecState<T>> state_;
};

template <class F, class... Args>
auto EventLoop::run_in_executor(ThreadPoolExecutor& executor, F&& fn, Args&&... args) {
    using R = detail::executor_result_t<F, Args...>;
    if (closed_) throw RuntimeError("Event loop is closed");
    auto state = std::make_shared<detail::ExecState<R>>();
    detail::submit_job<R>(executor, link(), state,
                          [f = std::decay_t<F>(std::forward<F>(fn)),
                           tup = std::make_tuple(std::decay_t<Args>(std::forward<Args>(args))...)]() mutable -> R {
                              return std::apply(std::move(f), std::move(tup));
                          });
    return ExecutorFuture<R>(std::move(state));
}

template <class F, class... Args>
    requires std::is_invocable_v<std::decay_t<F>, std::decay_t<Args>...>
auto EventLoop::run_in_executor(F&& fn, Args&&... args) {
    if (closed_) throw RuntimeError("Event loop is closed");
    return run_in_executor(default_executor(), std::forward<F>(fn), std::forward<Args>(args)...);
}

/// Python's asyncio.to_thread(fn, *args): see the top of this file.
template <class F, class... Args>
Coroutine<detail::executor_result_t<F, Args...>> to_thread(F fn, Args... args) {
    co_return co_await get_running_loop().run_in_executor(std::move(fn), std::move(args)...);
}

}  // namespace asyncio
