// The event loop: one per thread, as in asyncio. Each iteration (Python's _run_once) polls I/O
// (without blocking when work is ready), moves due timers to the ready queue, then runs exactly the
// callbacks that were ready at that point; anything they schedule runs in the next iteration, so a
// task that keeps yielding cannot starve I/O or timers. Callbacks run FIFO; timers with equal
// deadlines run in the order they were scheduled (except under seeded chaos, testing.hpp, which
// permutes them: Python's heap does not promise that order).
//
// Thread-safety: everything here is for the loop's own thread, except call_soon_threadsafe().
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include "asyncio/clock.hpp"
#include "asyncio/detail/callback.hpp"
#include "asyncio/detail/config.hpp"
#include "asyncio/detail/creation_site.hpp"
#include "asyncio/detail/frame_allocator.hpp"
#include "asyncio/detail/loop_executor.hpp"
#include "asyncio/detail/mpsc_queue.hpp"
#include "asyncio/detail/promise.hpp"
#include "asyncio/detail/ready_queue.hpp"
#include "asyncio/detail/timer_queue.hpp"
#include "asyncio/detail/trace_hooks.hpp"
#include "asyncio/exceptions.hpp"

namespace asyncio {

/// How long close() and asyncio::run() wait for the default executor's threads (Python's
/// constants.THREAD_JOIN_TIMEOUT).
inline constexpr std::chrono::seconds kThreadJoinTimeout{300};

class EventLoop;
template <class T>
class Coroutine;
template <class T>
class Task;
template <class T>
class Future;
class ThreadPoolExecutor;  // thread_pool.hpp

namespace detail {
class Backend;
struct PromiseBase;
struct Chaos;        // src/chaos.hpp (asyncio/testing.hpp)
struct LoopSignals;  // src/signals.cpp
/// Something outside any task that keeps an operation pending on a loop and a reference that
/// only its completion gives back (a stream's flusher, src/streams.cpp): linked while it does.
/// close() unlinks each and calls `fn`, which withdraws the operation and drops what it holds.
/// An intrusive node, in its owner.
struct CloseHook {
    void (*fn)(CloseHook* self, EventLoop& loop) noexcept = nullptr;
    CloseHook* prev = nullptr;
    CloseHook* next = nullptr;
};
/// One wait for a signal on a loop (EventLoop::add_signal_listener; signals.hpp's wait_signal):
/// an intrusive node, in the waiter's frame. Called once, on the loop, when `sig` is delivered,
/// after it was unlinked.
struct SignalListener {
    void (*fn)(SignalListener* self, int sig) = nullptr;
    int sig = 0;
    bool linked = false;
    SignalListener* prev = nullptr;
    SignalListener* next = nullptr;
};
template <class R>
inline constexpr bool returns_coroutine_v = false;
template <class T>
inline constexpr bool returns_coroutine_v<Coroutine<T>> = true;
/// How threads reach a loop that may be gone: `loop` is nulled under `mutex` when the loop closes
/// (executor.hpp posts results through it).
struct LoopLink {
    std::mutex mutex;
    EventLoop* loop = nullptr;
};
extern ASYNCIO_TLS EventLoop* t_running_loop;  // the loop running on this thread, if any
extern ASYNCIO_TLS EventLoop* t_thread_loop;  // the loop that lives on this thread, if any
/// True while the frame of a task whose loop was destroyed is being destroyed (kOrphaned): what
/// its locals' destructors would tell the loop (cancel a timer, ...) must not reach the dead loop.
extern ASYNCIO_TLS bool t_loop_gone;
}  // namespace detail

/// What the loop's exception handler receives (Python's context dict).
struct ExceptionContext {
    std::string message;
    std::exception_ptr exception;
    std::string task_name;  // empty when no task is involved
};

/// A callback scheduled with call_soon(): cancel() before it runs and it never runs. A Handle is a
/// small value; it must not be used after its loop is destroyed (except by the destruction of a
/// task frame that outlived its loop: cancel() is then a no-op, see detail::t_loop_gone).
class Handle {
public:
    Handle() = default;
    /// Prevents the callback from running; no-op if it already ran or was cancelled.
    void cancel() noexcept;
    /// True once cancel() was called on this handle.
    bool cancelled() const noexcept { return cancelled_; }

protected:
    friend class EventLoop;
    Handle(EventLoop* loop, detail::TimerId id) : loop_(loop), id_(id) {}
    EventLoop* loop_ = nullptr;
    detail::TimerId id_{};
    bool cancelled_ = false;
};

/// A callback scheduled with call_later()/call_at().
class TimerHandle : public Handle {
public:
    TimerHandle() = default;
    /// The loop time at which the callback is scheduled to run.
    TimePoint when() const noexcept { return when_; }

private:
    friend class EventLoop;
    TimerHandle(EventLoop* loop, detail::TimerId id, TimePoint when)
        : Handle(loop, id), when_(when) {}
    TimePoint when_{};
};

class EventLoop {
public:
    using ExceptionHandler = std::function<void(EventLoop&, const ExceptionContext&)>;

    /// A loop on the monotonic clock.
    EventLoop();
    /// A loop on the given clock (tests pass a MockClock).
    explicit EventLoop(std::unique_ptr<Clock> clock);
    EventLoop(const EventLoop&) = delete;
    EventLoop& operator=(const EventLoop&) = delete;
    /// Closes the loop if it was not closed.
    ~EventLoop();

    // ---- time and scheduling ----
    /// The loop's clock (monotonic).
    TimePoint time() const noexcept { return clock_->now(); }
    Clock& clock() noexcept { return *clock_; }

    /// Runs cb in a later iteration, after the callbacks already scheduled (FIFO).
    Handle call_soon(detail::Callback cb);
    /// As call_soon, from any thread, without a lock (any number of threads at once; the
    /// callbacks of one thread run in the order it posted them); wakes the loop if it is waiting,
    /// once for a burst of posts. Throws RuntimeError once
    /// the loop is closed. A call that began before close() has returned when close() returns, so
    /// the loop may be destroyed then (a call begun after that is a use of a dead object). A
    /// callback accepted after the loop's last iteration never runs: close() drops it (with
    /// set_debug(true), close() reports how many through the exception handler).
    void call_soon_threadsafe(detail::Callback cb);
    /// Runs cb once `delay` has passed (delay <= 0: in the next iteration, after earlier timers).
    /// Any unit; the deadline saturates (clock.hpp), so call_later(Duration::max()) is "never"
    /// and leaves every other timer working.
    template <class Rep, class Period>
    TimerHandle call_later(std::chrono::duration<Rep, Period> delay, detail::Callback cb) {
        // By reference: a move of cb inlined here makes GCC warn about its unused buffer bytes.
        return schedule_timer(deadline_after(time(), delay), std::move(cb));
    }
    /// Runs cb at loop time `when` (TimePoint::max(): never, unless a virtual clock jumps there).
    TimerHandle call_at(TimePoint when, detail::Callback cb);

    // ---- tasks (defined in task.hpp) ----
    /// A new task of this loop: create_task(aw), create_task(aw, name), create_task(f, args...),
    /// as asyncio::create_task (task.hpp) describes.
    template <class A, class... Args>
    auto create_task(A&& a, Args&&... args);

    // ---- futures (defined in future.hpp) ----
    /// A new pending Future<T> of this loop (Python's loop.create_future()).
    template <class T = void>
    Future<T> create_future();

    // ---- running and stopping ----
    /// Runs coro as a task until it is done; returns its value or rethrows its exception.
    template <class T>
    T run_until_complete(Coroutine<T> coro);
    template <class T>
    T run_until_complete(Task<T> task);
    /// Runs until stop() is called.
    void run_forever();
    /// Makes run_forever() return after the current iteration.
    void stop() noexcept {
        stopping_ = true;
        attention_ = true;
    }
    /// True while run_forever() runs (on whichever thread; readable from any thread).
    bool is_running() const noexcept { return running_.load(std::memory_order_relaxed); }
    bool is_closed() const noexcept { return closed_; }
    /// Drops every pending callback and timer (including those call_soon_threadsafe accepted
    /// after the last iteration) and destroys tasks that are still pending. Throws RuntimeError if
    /// the loop is running. Idempotent. First shuts down the default executor, waiting for the
    /// functions still running on its threads for at most kThreadJoinTimeout (300 s); past that,
    /// a RuntimeWarning goes to the exception handler and those threads are left running,
    /// detached (their results are dropped). Once it returns, no call_soon_threadsafe caller is
    /// inside the loop any more.
    void close();

    // ---- debug mode (Python's loop.set_debug) ----
    /// Off unless the environment variable ASYNCIO_DEBUG is set to a non-empty value when the
    /// loop is made (as PYTHONASYNCIODEBUG). In debug mode close() reports, through the exception
    /// handler, how many call_soon_threadsafe callbacks it dropped, and a coroutine made on its
    /// thread while it runs records the stack that made it, shown when it is reported as never
    /// awaited or as a task destroyed while pending ("Coroutine created at ..."). A step slower
    /// than slow_callback_duration() is reported, and so is a Socket, StreamWriter, Server,
    /// Process or loop made in debug mode and destroyed without close() ("unclosed <...>", an
    /// asyncio::ResourceWarning, with "Object created at ..."); see docs/design.md's differences.
    void set_debug(bool enabled) noexcept;
    bool get_debug() const noexcept { return debug_; }
    /// Debug mode: a callback or task step that runs this long or longer (on the loop's clock) is
    /// reported through the exception handler, "Executing <Task pending name='...' ...> took
    /// 0.150 seconds" (Python's loop.slow_callback_duration, 100 ms by default).
    Duration slow_callback_duration() const noexcept { return slow_callback_duration_; }
    void set_slow_callback_duration(Duration d) noexcept { slow_callback_duration_ = d; }

    // ---- traces (asyncio/trace.hpp) ----
    /// Starts writing this loop's trace (Chrome trace-event JSON) to `path`, or to `path.N` when
    /// the process already traced N-1 loops to that path; the file is complete when the loop
    /// closes. A trace already under way is completed first (its file closed); an empty path
    /// just stops it. Done from the environment variable ASYNCIO_TRACE (when set and not empty)
    /// when the loop is made. std::system_error if the file cannot be opened; RuntimeError if the
    /// loop is running or closed.
    void set_trace_file(const std::string& path);
    /// The file this loop traces to (with its .N suffix), or "" when it does not trace.
    std::string trace_file() const;
    /// Writes the events buffered so far (the file is valid JSON after every write).
    void flush_trace() noexcept;
    /// The tracer, or null (almost always): the hooks' test.
    detail::Tracer* tracer() const noexcept { return tracer_; }

    // ---- the I/O backend ----
    /// The I/O backend this loop runs on: "io_uring" or "epoll". Chosen when the loop is made, from
    /// the environment variable ASYNCIO_BACKEND = epoll | io_uring | auto (unset: auto, which
    /// takes io_uring when the kernel lets it be set up, else epoll). Asking for io_uring where it
    /// cannot run makes the loop's constructor throw std::system_error naming the cause (ENOSYS,
    /// EPERM with kernel.io_uring_disabled, a build without liburing); another value throws
    /// ValueError. Both backends behave the same; see docs/design.md, "Backends".
    const char* backend_name() const noexcept;

    // ---- watching file descriptors (the backend's watchers; sockets themselves: sock_ops.hpp) ----
    /// Runs cb (from the ready queue) in every iteration in which fd is readable, until
    /// remove_reader(fd); replaces a reader already installed for fd. Level-triggered, as Python's;
    /// cb must tolerate a spurious call (read non-blocking and handle EAGAIN). Remove the reader
    /// before closing a raw fd. Throws std::system_error (EBADF, EPERM for a regular file).
    void add_reader(int fd, detail::Callback cb);
    /// Stops watching fd for reading; returns false if no reader was installed.
    bool remove_reader(int fd);
    /// As add_reader, when fd is writable.
    void add_writer(int fd, detail::Callback cb);
    bool remove_writer(int fd);
    /// Trio's notify_closing(fd): tells the loop that the raw fd (one you watch with add_reader /
    /// add_writer or wait for with wait_readable / wait_writable) is about to be closed. Call it
    /// right before close(fd). Operations waiting on fd fail with std::system_error(EBADF); its
    /// reader and writer are removed, as by remove_reader/remove_writer (a call already queued
    /// for them is dropped); and the loop forgets the fd number, so that a new file which gets
    /// the same number is watched afresh. Without it, a number closed and reused behind the
    /// loop's back may never be reported ready (epoll dropped the old file from its set by
    /// itself). Sockets and streams of the library do this on close(): only raw fds need it. Does
    /// nothing for an fd the loop does not know, or on a closed loop. Loop thread only.
    void notify_closing(int fd) noexcept;

    // ---- Unix signals (src/signals.cpp; the awaitable form, wait_signal: signals.hpp) ----
    /// Python's loop.add_signal_handler(sig, callback): from now on, each delivery of sig makes
    /// the loop call callback, from its ready queue (never in signal context); replaces a handler
    /// already installed for sig. Deliveries that come before the handler runs are merged into
    /// one call (as in Python), but none is lost: a delivery while the handler runs, or after its
    /// last run, makes it run again. An exception escaping callback goes to the exception handler.
    /// The signal's previous disposition comes back when the last handler (or wait_signal) for it
    /// on every loop is removed, and when the loop closes. Works on a loop of any thread and
    /// whatever other threads exist (the handler is process-wide, see docs/design.md, "Signals");
    /// several loops may handle one signal: each is told of every delivery.
    /// ValueError "invalid signal number N" (0, NSIG and up, glibc's reserved 32 and 33);
    /// RuntimeError "sig N cannot be caught" (SIGKILL, SIGSTOP), "Event loop is closed", or from a
    /// thread other than the loop's while it runs. A callable returning a Coroutine does not build
    /// (Python: TypeError "coroutines cannot be used with add_signal_handler()").
    template <class F>
        requires std::is_invocable_v<std::decay_t<F>&>
    void add_signal_handler(int sig, F&& callback) {
        static_assert(!detail::returns_coroutine_v<std::invoke_result_t<std::decay_t<F>&>>,
                      "asyncio: coroutines cannot be used with add_signal_handler()");
        add_signal_handler_cb(sig, detail::Callback(std::forward<F>(callback)));
    }
    /// Removes the handler for sig: true if there was one. ValueError for an invalid number.
    bool remove_signal_handler(int sig);
    /// Internals of wait_signal (signals.hpp): l.fn is called once, on the loop, at the next
    /// delivery of l.sig (l is unlinked first); the signal is caught while a listener waits. Errors
    /// as add_signal_handler.
    void add_signal_listener(detail::SignalListener& l);
    /// Unlinks l if it is still linked (no-op otherwise, also once the loop is closed).
    void remove_signal_listener(detail::SignalListener& l) noexcept;

    // ---- running blocking functions on threads (defined in executor.hpp) ----
    /// Python's loop.run_in_executor(None, fn, *args): calls fn(args...) on the default executor
    /// (a ThreadPoolExecutor created on first use, shut down and joined by close()). The returned
    /// ExecutorFuture<R> is awaited in a task of this loop.
    template <class F, class... Args>
        requires std::is_invocable_v<std::decay_t<F>, std::decay_t<Args>...>
    auto run_in_executor(F&& fn, Args&&... args);
    /// The same on the given executor.
    template <class F, class... Args>
    auto run_in_executor(ThreadPoolExecutor& executor, F&& fn, Args&&... args);
    /// The executor run_in_executor uses by default (created on first use).
    ThreadPoolExecutor& default_executor();
    /// Replaces the default executor (Python's set_default_executor).
    void set_default_executor(std::shared_ptr<ThreadPoolExecutor> executor);
    /// Shuts the default executor down and joins its threads: waits for the functions running on
    /// it (their results are dropped if nobody awaits them). No time limit, as Python's default
    /// (timeout=None); close() calls it with kThreadJoinTimeout.
    void shutdown_default_executor() noexcept;
    /// The same, waiting at most `timeout` (wall-clock time, any unit): then it reports "The
    /// executor did not finishing joining its threads within N seconds." (a RuntimeWarning, to the
    /// exception handler, Python's text) and returns, leaving the busy threads running detached.
    template <class Rep, class Period>
    void shutdown_default_executor(std::chrono::duration<Rep, Period> timeout) noexcept {
        shutdown_default_executor_for(saturating_duration(timeout));
    }

    // ---- errors ----
    /// Replaces the handler for errors nobody else can see (a task's exception that was never
    /// retrieved, a callback that threw). An empty handler restores the default, which prints the
    /// message and the exception to stderr.
    void set_exception_handler(ExceptionHandler handler) { handler_ = std::move(handler); }
    const ExceptionHandler& get_exception_handler() const noexcept { return handler_; }
    void call_exception_handler(const ExceptionContext& context) noexcept;
    static void default_exception_handler(const ExceptionContext& context) noexcept;

    /// Counters for tests and debugging.
    struct Stats {
        std::uint64_t iterations = 0;     // completed _run_once iterations
        std::uint64_t backend_waits = 0;  // calls into the I/O backend that could block
        std::uint64_t backend_polls = 0;  // all calls into the I/O backend
    };
    const Stats& stats() const noexcept { return stats_; }
    /// How many times call_soon_threadsafe wrote the loop's wake-up channel: at most once each
    /// time the loop announced that it may block, however many threads posted meanwhile.
    std::uint64_t threadsafe_wakeups() const noexcept {
        return ts_wakeups_.load(std::memory_order_relaxed);
    }

    // ---- internals used by the library's awaitables ----
    /// Appends {fn, ctx} to the ready queue (no allocation).
    void schedule(void (*fn)(void*), void* ctx) { ready_.push(fn, ctx); }
    /// Schedules cb on the loop's timer queue at `when`; the id cancels it.
    detail::TimerId add_timer(TimePoint when, detail::Callback&& cb) {
        const detail::TimerId id = timers_.add(when.time_since_epoch().count(), std::move(cb));
        if (tracer_ != nullptr) [[unlikely]]
            detail::trace_timer_scheduled(*this, id, when);
        return id;
    }
    bool cancel_timer(detail::TimerId id) noexcept {
        if (tracer_ != nullptr) [[unlikely]]
            return cancel_timer_traced(id);
        return timers_.cancel(id);
    }
    /// Operations that may complete at once in one step of the loop before the task must yield
    /// (the cooperative budget of detail::io_submit).
    static constexpr std::uint32_t kIoBudget = 128;
    /// Takes one unit of the current step's budget; false once it is spent. The budget is
    /// refilled when a new ready callback runs, noticed here (by the ready queue's position) rather
    /// than paid for on every callback.
    bool consume_io_budget() noexcept {
        if (budget_position_ != ready_.position()) {
            budget_position_ = ready_.position();
            io_budget_ = kIoBudget;
        }
        if (io_budget_ == 0) return false;
        --io_budget_;
        return true;
    }
    /// Links h (unlinked) until unlink_close_hook(h) or close(), which unlinks it and calls h.fn.
    void link_close_hook(detail::CloseHook& h) noexcept {
        h.prev = nullptr;
        h.next = close_hooks_;
        if (close_hooks_ != nullptr) close_hooks_->prev = &h;
        close_hooks_ = &h;
    }
    void unlink_close_hook(detail::CloseHook& h) noexcept {
        (h.prev != nullptr ? h.prev->next : close_hooks_) = h.next;
        if (h.next != nullptr) h.next->prev = h.prev;
        h.prev = h.next = nullptr;
    }
    /// Intrusive list of this loop's tasks and futures, from creation until their state is freed
    /// (pending or not): the loop's destructor tells the survivors it is gone (task.cpp).
    detail::PromiseBase*& task_list() noexcept { return tasks_; }
    detail::Backend& backend() noexcept { return *backend_; }
    detail::ReadyQueue& ready_queue() noexcept { return ready_; }
    /// Seeded chaos (asyncio/testing.hpp); null when off.
    detail::Chaos* chaos() const noexcept { return chaos_.get(); }
    /// Replaces it (testing::enable_chaos). Not while running.
    void set_chaos(std::unique_ptr<detail::Chaos> chaos);
    /// Prints the chaos seed (once per loop): a run ended by an exception.
    void chaos_failed() noexcept;
    /// The loop's link for threads (made with the loop, so any thread may read it).
    const std::shared_ptr<detail::LoopLink>& link() const noexcept;

private:
    friend class Handle;
    friend struct detail::LoopSignals;
    void add_signal_handler_cb(int sig, detail::Callback cb);
    template <bool Instrumented>
    void run_once();
    void poll_backend(std::int64_t timeout_ns);
    void drain_threadsafe();
    void check_runnable() const;
    static void run_slot(void* packed);
    void orphan_tasks() noexcept;
    void run_ready_instrumented();  // run_once's ready callbacks in debug mode or with a trace
    void set_instrumented() noexcept {
        instrumented_ = debug_ || tracer_ != nullptr;
        attention_ = true;  // a running loop changes its way of running callbacks
    }
    void shutdown_default_executor_for(std::optional<Duration> timeout) noexcept;
    TimerHandle schedule_timer(TimePoint when, detail::Callback&& cb);
    [[gnu::cold]] bool cancel_timer_traced(detail::TimerId id) noexcept;
    [[gnu::cold]] static void run_slot_traced(EventLoop* loop, void* packed);

    std::unique_ptr<Clock> clock_;
    std::unique_ptr<detail::Backend> backend_;
    detail::ReadyQueue ready_;
    detail::TimerQueue timers_;
    detail::PromiseBase* tasks_ = nullptr;  // intrusive list of live tasks and futures
    detail::CloseHook* close_hooks_ = nullptr;  // see link_close_hook
    ExceptionHandler handler_;
    Stats stats_;
    std::size_t budget_position_ = ~std::size_t{0};  // the ready callback io_budget_ belongs to
    std::uint32_t io_budget_ = kIoBudget;
    std::atomic<bool> running_{false};  // atomic: futures check it from other threads
    bool stopping_ = false;
    bool closed_ = false;
    bool debug_ = false;
    bool instrumented_ = false;  // debug_ or a trace: run_forever picks run_once<true>
    bool attention_ = false;     // stop() or instrumented_ changed: run_forever looks at both again
    Duration slow_callback_duration_ = std::chrono::milliseconds(100);
    detail::CreationSite site_{false};  // debug mode: where it was made ("unclosed event loop")
    detail::Tracer* tracer_ = nullptr;  // owned; made by set_trace_file, deleted by close()
    std::unique_ptr<detail::Chaos> chaos_;  // null unless testing chaos is on

    // call_soon_threadsafe (see docs/design.md, "The loop"). Producers push onto a lock-free
    // queue (detail/mpsc_queue.hpp) and write the wake-up fd only when the loop may be blocked in
    // the backend: the loop sets polling_ and then looks at the queue, a producer pushes and then
    // looks at polling_ (all seq_cst, Dekker style), and the one producer that swaps polling_ back
    // to false writes the fd, so a burst of posts costs one wake-up. Each caller counts itself in
    // ts_gate_ while inside; close() sets the gate's closed bit and waits for the count to drop
    // to 0 (one atomic word: a caller either sees the bit or is seen by close()).
    // The producers' words are kept a cache line away from the loop's own state.
    [[maybe_unused]] unsigned char ts_pad_before_[64]{};
    std::atomic<std::uint64_t> ts_gate_{0};  // bit 0: closed; +2 per caller inside
    std::atomic<bool> polling_{false};
    std::atomic<std::uint64_t> ts_wakeups_{0};  // wake-up writes, for threadsafe_wakeups()
    [[maybe_unused]] unsigned char ts_pad_after_[64]{};
    detail::MpscQueue<detail::Callback> ts_queue_;

    detail::LoopExecutor default_executor_;  // the executor part (made on first use)
    detail::LoopSignals* signals_ = nullptr;   // the signals part (made on first use, src/signals.cpp)
    std::shared_ptr<detail::LoopLink> link_;               // nulled by close()
};

/// The loop running on this thread; throws RuntimeError("no running event loop") if none.
EventLoop& get_running_loop();

}  // namespace asyncio
