// Bridges between threads and loops (Python's concurrent.futures.Future, run_coroutine_threadsafe
// and wrap_future).
//
//   // on any thread:
//   asyncio::ConcurrentFuture<int> f = asyncio::run_coroutine_threadsafe(fetch(), loop);
//   int v = f.result(5s);              // blocks this thread; TimeoutError after 5 s
//   // in a task of any loop: co_await f (the loop keeps running)
//
// ConcurrentFuture<T> is thread-safe: any thread may complete it, cancel it, wait on it or add
// callbacks (they run on the thread that completes it, or at once if it is done). co_await of one
// in a task suspends the task until the future is done, without blocking its loop; cancelling
// that task cancels the future (as asyncio.wrap_future chains them).
//
// run_coroutine_threadsafe(coro, loop) schedules coro as a task of loop from any thread. Its
// future's cancel() cancels the task on its loop; the task's value, exception or cancellation is
// copied into the future when it finishes. If the loop closes before the task could start or
// finish, the future is cancelled (a thread waiting in result() wakes with CancelledError rather
// than waiting forever). result() called on the loop's own thread while it is pending raises
// RuntimeError: it would wait for the loop it blocks.
#pragma once

#include <chrono>
#include <condition_variable>
#include <coroutine>
#include <exception>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <type_traits>
#include <utility>
#include <vector>

#include "asyncio/clock.hpp"
#include "asyncio/coroutine.hpp"
#include "asyncio/event_loop.hpp"
#include "asyncio/exceptions.hpp"
#include "asyncio/executor.hpp"
#include "asyncio/task.hpp"

namespace asyncio {

template <class T = void>
class ConcurrentFuture;

namespace detail {

/// The state ConcurrentFuture handles share; every member under mutex.
struct ConcurrentStateBase {
    enum class State : unsigned char { kPending, kCancelled, kFinished };
    std::mutex mutex;
    std::condition_variable cv;
    State state = State::kPending;
    std::exception_ptr error;
    std::vector<std::function<void()>> callbacks;  // run once, outside the lock, when done
    std::function<void()> on_cancel;               // run_coroutine_threadsafe: reaches the task
    EventLoop* loop = nullptr;  // run_coroutine_threadsafe: the loop whose task completes it
    PromiseBase* task = nullptr;  // run_coroutine_threadsafe: its task while pending (loop thread only)

    bool done_locked() const noexcept { return state != State::kPending; }
    /// Runs the callbacks taken from the state (after it became done), on this thread.
    static void run_callbacks(std::vector<std::function<void()>>& cbs) noexcept;
    /// Blocks until done or until deadline (steady clock); false on timeout. RuntimeError if the
    /// calling thread runs the loop that must complete it.
    bool wait_until(std::unique_lock<std::mutex>& lock, std::optional<TimePoint> deadline);
    /// Cancels if pending; true if it is (now) cancelled.
    bool cancel();
};

template <class T>
struct ConcurrentState : ConcurrentStateBase {
    std::optional<std::conditional_t<std::is_void_v<T>, bool, T>> value;
};

}  // namespace detail

/// A thread-safe future (Python's concurrent.futures.Future): see the top of this file.
template <class T>
class ConcurrentFuture {
    using State = detail::ConcurrentStateBase::State;

public:
    using value_type = T;

    /// A new pending future.
    ConcurrentFuture() : s_(std::make_shared<detail::ConcurrentState<T>>()) {}

    bool done() const {
        std::lock_guard lock(s_->mutex);
        return s_->done_locked();
    }
    bool cancelled() const {
        std::lock_guard lock(s_->mutex);
        return s_->state == State::kCancelled;
    }

    /// Waits until it is done and returns the value (a copy; moved out for a move-only T), or
    /// rethrows its exception (CancelledError if it was cancelled).
    T result() { return result_until(std::nullopt); }
    /// The same, waiting at most `timeout` (any unit): TimeoutError after that.
    template <class Rep, class Period>
    T result(std::chrono::duration<Rep, Period> timeout) {
        return result_until(deadline_after(std::chrono::steady_clock::now(), timeout));
    }
    /// Waits until it is done; its exception, or nullptr if it has a value. CancelledError if it
    /// was cancelled.
    std::exception_ptr exception() { return exception_until(std::nullopt); }
    template <class Rep, class Period>
    std::exception_ptr exception(std::chrono::duration<Rep, Period> timeout) {
        return exception_until(deadline_after(std::chrono::steady_clock::now(), timeout));
    }

    /// Cancels it if it is pending (and the task of run_coroutine_threadsafe, on its loop).
    /// True if it is cancelled now, false if it had finished.
    bool cancel() { return s_->cancel(); }

    /// Completes it (InvalidStateError "invalid state" if it is done); its callbacks run on this
    /// thread.
    template <class U = T>
        requires(!std::is_void_v<T> && std::is_constructible_v<T, U &&>)
    void set_result(U&& v) {
        if (!try_finish([&] { s_->value.emplace(std::forward<U>(v)); }))
            throw InvalidStateError("invalid state");
    }
    void set_result()
        requires std::is_void_v<T>
    {
        if (!try_finish([&] { s_->value.emplace(true); })) throw InvalidStateError("invalid state");
    }
    void set_exception(std::exception_ptr e) {
        if (!e) throw TypeError("set_exception() needs an exception, not a null exception_ptr");
        if (!try_finish([&] { s_->error = std::move(e); })) throw InvalidStateError("invalid state");
    }

    /// Calls fn(future) once it is done: on the thread that completes it, or here at once.
    template <class F>
        requires std::is_invocable_v<std::decay_t<F>&, ConcurrentFuture<T>&>
    void add_done_callback(F&& fn) {
        std::function<void()> cb = [f = std::decay_t<F>(std::forward<F>(fn)), self = *this]() mutable { f(self); };
        {
            std::lock_guard lock(s_->mutex);
            if (!s_->done_locked()) {
                s_->callbacks.push_back(std::move(cb));
                return;
            }
        }
        cb();
    }

    /// co_await in a task: see the top of this file.
    class [[nodiscard]] Awaiter : public detail::Waiter {
    public:
        explicit Awaiter(std::shared_ptr<detail::ConcurrentState<T>> s) noexcept : s_(std::move(s)) {}
        Awaiter(const Awaiter&) = delete;
        Awaiter& operator=(const Awaiter&) = delete;
        ~Awaiter() {
            if (d_ && d_->waiter == this) d_->waiter = nullptr;  // frame freed while waiting
        }
        bool await_ready() const {
            std::lock_guard lock(s_->mutex);
            return s_->done_locked();
        }
        template <class P>
        bool await_suspend(std::coroutine_handle<P> h, unsigned line = __builtin_LINE()) {
            detail::note_await(h, line);
            // The delivery is the executor's: the completing thread posts it to the task's loop.
            d_ = std::make_shared<detail::ExecStateBase>();
            begin_wait(h, "awaiting a ConcurrentFuture", &on_cancel);
            d_->waiter = this;
            auto post = [d = d_, link = detail::t_running_loop->link()] { detail::post_to_loop(link, d); };
            {
                std::lock_guard lock(s_->mutex);
                if (!s_->done_locked()) {
                    s_->callbacks.push_back(std::move(post));
                    return true;
                }
            }
            post();  // done since await_ready: delivered through the loop all the same
            return true;
        }
        T await_resume() {
            end_wait();
            return ConcurrentFuture::take(*s_);
        }

    private:
        static bool on_cancel(detail::CancelHook* h) {
            auto* self = static_cast<Awaiter*>(from_hook(h));
            self->d_->waiter = nullptr;
            self->s_->cancel();  // as asyncio.wrap_future: cancelling the awaiter cancels the source
            return self->cancel_wait();
        }
        std::shared_ptr<detail::ConcurrentState<T>> s_;
        std::shared_ptr<detail::ExecStateBase> d_;
    };
    Awaiter operator co_await() const noexcept { return Awaiter(s_); }

    friend bool operator==(const ConcurrentFuture& a, const ConcurrentFuture& b) noexcept { return a.s_ == b.s_; }

    // ---- internals (run_coroutine_threadsafe) ----
    const std::shared_ptr<detail::ConcurrentState<T>>& state() const noexcept { return s_; }
    /// Completes it with set() (under the lock) unless it is done; false if it was.
    template <class Set>
    bool try_finish(Set&& set) {
        std::vector<std::function<void()>> cbs;
        {
            std::lock_guard lock(s_->mutex);
            if (s_->done_locked()) return false;
            set();
            s_->state = State::kFinished;
            cbs.swap(s_->callbacks);
            s_->on_cancel = nullptr;
        }
        s_->cv.notify_all();
        detail::ConcurrentStateBase::run_callbacks(cbs);
        return true;
    }

private:
    static T take(detail::ConcurrentState<T>& s) {
        std::lock_guard lock(s.mutex);
        if (s.state == State::kCancelled) throw CancelledError();
        if (s.error) std::rethrow_exception(s.error);
        if constexpr (std::is_void_v<T>) {
            return;
        } else if constexpr (std::is_copy_constructible_v<T>) {
            return *s.value;
        } else {
            return std::move(*s.value);
        }
    }
    T result_until(std::optional<TimePoint> deadline) {
        {
            std::unique_lock lock(s_->mutex);
            if (!s_->wait_until(lock, deadline)) throw TimeoutError("result() timed out");
        }
        return take(*s_);
    }
    std::exception_ptr exception_until(std::optional<TimePoint> deadline) {
        std::unique_lock lock(s_->mutex);
        if (!s_->wait_until(lock, deadline)) throw TimeoutError("exception() timed out");
        if (s_->state == State::kCancelled) throw CancelledError();
        return s_->error;
    }

    std::shared_ptr<detail::ConcurrentState<T>> s_;
};

namespace detail {

/// Copies a finished task's outcome into its ConcurrentFuture (a done callback of the task, on the
/// loop thread). Destroyed without having run (its loop closed with the task pending), it cancels
/// the future so that no thread waits for it forever.
template <class T>
struct CopyOutcome {
    ConcurrentFuture<T> cf;
    bool armed = true;

    explicit CopyOutcome(ConcurrentFuture<T> f) : cf(std::move(f)) {}
    CopyOutcome(CopyOutcome&& o) noexcept : cf(o.cf), armed(std::exchange(o.armed, false)) {}
    CopyOutcome& operator=(CopyOutcome&&) = delete;
    ~CopyOutcome() {
        if (!armed) return;
        cf.state()->task = nullptr;
        cf.cancel();
    }
    void operator()(Task<T>& t) {
        armed = false;
        cf.state()->task = nullptr;
        if (t.cancelled()) {
            cf.cancel();
        } else if (std::exception_ptr e = t.exception()) {
            cf.try_finish([&] { cf.state()->error = std::move(e); });
        } else if constexpr (std::is_void_v<T>) {
            cf.try_finish([&] { cf.state()->value.emplace(true); });
        } else {
            cf.try_finish([&] { cf.state()->value.emplace(take_result(t.promise(), true)); });
        }
    }
};

/// The first step of run_coroutine_threadsafe, on the loop thread: makes the task. Destroyed
/// without having run (the loop closed first), it cancels the future.
template <class T>
struct StartThreadsafe {
    Coroutine<T> coro;
    ConcurrentFuture<T> cf;
    EventLoop* loop;
    bool armed = true;

    StartThreadsafe(Coroutine<T> c, ConcurrentFuture<T> f, EventLoop* l)
        : coro(std::move(c)), cf(std::move(f)), loop(l) {}
    StartThreadsafe(StartThreadsafe&& o) noexcept
        : coro(std::move(o.coro)), cf(o.cf), loop(o.loop), armed(std::exchange(o.armed, false)) {}
    StartThreadsafe& operator=(StartThreadsafe&&) = delete;
    ~StartThreadsafe() {
        if (armed) cf.cancel();
    }
    void operator()() {
        armed = false;
        if (cf.cancelled()) {
            // Cancelled before it could start: it never runs, and it was not forgotten (as
            // asyncio, which throws the cancellation into it), so no "never awaited" report.
            coro.release().destroy();
            return;
        }
        try {
            Task<T> t = loop->create_task(std::move(coro));
            cf.state()->task = t.base();
            t.add_done_callback(CopyOutcome<T>(cf));
        } catch (...) {
            cf.state()->task = nullptr;
            cf.try_finish([&] { cf.state()->error = std::current_exception(); });
        }
    }
};

/// cf.cancel() from any thread: cancels the task on its loop (if it is still pending then).
void cancel_task_threadsafe(const std::shared_ptr<LoopLink>& link,
                            const std::shared_ptr<ConcurrentStateBase>& state) noexcept;

}  // namespace detail

/// Schedules coro as a task of loop, from any thread (Python's run_coroutine_threadsafe); see the
/// top of this file. RuntimeError "Event loop is closed" if loop is closed.
template <class T>
ConcurrentFuture<T> run_coroutine_threadsafe(Coroutine<T> coro, EventLoop& loop) {
    if (!coro.valid()) throw InvalidStateError("run_coroutine_threadsafe() of an empty Coroutine");
    ConcurrentFuture<T> cf;
    {
        std::lock_guard lock(cf.state()->mutex);
        cf.state()->loop = &loop;
        cf.state()->on_cancel = [link = loop.link(),
                                 weak = std::weak_ptr<detail::ConcurrentStateBase>(cf.state())] {
            if (auto s = weak.lock()) detail::cancel_task_threadsafe(link, s);
        };
    }
    loop.call_soon_threadsafe(detail::StartThreadsafe<T>(std::move(coro), cf, &loop));
    return cf;
}

/// An asyncio future (a Task of the running loop) that completes with cf (Python's wrap_future).
/// Cancelling it cancels cf: at once while it awaits cf; if it is cancelled before its first step
/// (its coroutine then never runs), from its done callback, as asyncio's chain does.
template <class T>
Task<T> wrap_future(ConcurrentFuture<T> cf) {
    Task<T> t = create_task([](ConcurrentFuture<T> f) -> Coroutine<T> { co_return co_await f; }(cf));
    t.add_done_callback([cf](Task<T>& done) mutable {
        if (done.cancelled()) cf.cancel();
    });
    return t;
}

/// The same for a std::future: one thread of the loop's default executor waits for it (a
/// std::future has no callback), so an abandoned std::future keeps that thread, and close()
/// waits for it (kThreadJoinTimeout).
template <class T>
Task<T> wrap_future(std::future<T> f) {
    return create_task(to_thread([](std::future<T> fut) { return fut.get(); }, std::move(f)));
}

}  // namespace asyncio
