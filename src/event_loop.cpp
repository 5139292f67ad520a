#include "asyncio/event_loop.hpp"

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <list>
#include <string>
#include <thread>
#include <typeinfo>
#include <vector>

#include "asyncio/detail/promise.hpp"
#include "asyncio/detail/type_name.hpp"
#include "asyncio/thread_pool.hpp"
#include "backend/backend.hpp"
#include "chaos.hpp"
#include "loop_hooks.hpp"
#include "signals_internal.hpp"
#include "trace.hpp"

namespace asyncio {

namespace detail {
ASYNCIO_TLS EventLoop* t_running_loop = nullptr;
ASYNCIO_TLS EventLoop* t_thread_loop = nullptr;
ASYNCIO_TLS ThreadTaskState t_task;
ASYNCIO_TLS bool t_loop_gone = false;
thread_local bool t_ignore_trace_env = false;

namespace {
ReleaseTasksHook g_release_tasks = nullptr;  // set before main(); read-only afterwards
StepBeginHook g_step_begin = nullptr;        // likewise
StepEndHook g_step_end = nullptr;
}  // namespace

void set_release_tasks_hook(ReleaseTasksHook hook) noexcept { g_release_tasks = hook; }
void set_step_hooks(StepBeginHook begin, StepEndHook end) noexcept {
    g_step_begin = begin;
    g_step_end = end;
}

}  // namespace detail

using detail::t_running_loop;

EventLoop& get_running_loop() {
    if (t_running_loop == nullptr) throw RuntimeError("no running event loop");
    return *t_running_loop;
}

void Handle::cancel() noexcept {
    if (cancelled_ || loop_ == nullptr) return;
    cancelled_ = true;
    // From the destruction of a frame that outlived its loop (a Timeout's timer, ...): the loop
    // is gone, and so is the timer.
    if (detail::t_loop_gone) [[unlikely]]
        return;
    // A closed loop's timers are gone once close() cleared them (cancel() then finds none); until
    // then (close() releasing what its close hooks and pending tasks hold) the timer is dropped
    // here, so that its callback does not outlive what it points to.
    loop_->timers_.cancel(id_);
}

EventLoop::EventLoop() : EventLoop(std::make_unique<MonotonicClock>()) {}

EventLoop::EventLoop(std::unique_ptr<Clock> clock)
    : clock_(std::move(clock)), backend_(detail::make_backend(ready_)), link_(std::make_shared<detail::LoopLink>()) {
    if (!clock_) throw ValueError("EventLoop needs a clock");
    link_->loop = this;
    // Read once, here: a loop traces from its birth or when asked (set_trace_file). First: the
    // only step that can throw (the file cannot be opened), before anything must be undone.
    const char* trace = std::getenv("ASYNCIO_TRACE");
    if (trace != nullptr && *trace != '\0' && !detail::t_ignore_trace_env) tracer_ = new detail::Tracer(*this, trace);
    set_instrumented();
    // Python's PYTHONASYNCIODEBUG: any non-empty value turns debug mode on.
    const char* env = std::getenv("ASYNCIO_DEBUG");
    if (env != nullptr && *env != '\0') set_debug(true);
    // ASYNCIO_SEED / ASYNCIO_FAULTS (testing.hpp), read here so a whole test binary reruns seeded.
    if (std::getenv("ASYNCIO_SEED") != nullptr || std::getenv("ASYNCIO_FAULTS") != nullptr) [[unlikely]]
        testing::enable_chaos(*this, testing::chaos_from_environment());
    if (detail::t_thread_loop == nullptr) detail::t_thread_loop = this;
    detail::inspect_loop_created(*this);  // last: nothing after it throws
}

void EventLoop::set_trace_file(const std::string& path) {
    if (closed_) throw RuntimeError("Event loop is closed");
    if (running_) throw RuntimeError("Cannot change the trace of a running event loop");
    delete tracer_;  // completes its file
    tracer_ = nullptr;
    set_instrumented();
    if (!path.empty()) {
        tracer_ = new detail::Tracer(*this, path);
        set_instrumented();
        // Its pending tasks are traced from here on (their suspensions too: kTraced).
        for (detail::PromiseBase* p = tasks_; p != nullptr; p = p->next_)
            if (p->has(detail::kTaskMode)) p->flags_ |= detail::kTraced;
    }
}

std::string EventLoop::trace_file() const { return tracer_ != nullptr ? tracer_->path() : std::string(); }

void EventLoop::flush_trace() noexcept {
    if (tracer_ != nullptr) tracer_->flush();
}

bool EventLoop::cancel_timer_traced(detail::TimerId id) noexcept {
    if (!timers_.cancel(id)) return false;
    detail::trace_timer_cancelled(*this, id);
    return true;
}

void EventLoop::set_debug(bool enabled) noexcept {
    if (enabled != debug_) detail::g_debug_loops.fetch_add(enabled ? 1 : -1, std::memory_order_relaxed);
    debug_ = enabled;
    set_instrumented();
    if (enabled && !site_.recorded() && !closed_) site_ = detail::CreationSite(true);
}

EventLoop::~EventLoop() {
    detail::inspect_loop_destroyed(*this);
    if (!closed_ && site_.recorded()) [[unlikely]]  // Python's "unclosed event loop" ResourceWarning
        site_.report_unclosed(std::string("event loop <EventLoop running=False closed=False debug=") +
                              (debug_ ? "True" : "False") + ">");
    try {
        if (!closed_) close();
    } catch (...) {
        // close() only throws while running, and a running loop is not destroyed.
    }
    // Frames that Task handles keep alive must not reach this loop when they are destroyed.
    orphan_tasks();
    if (detail::t_thread_loop == this) detail::t_thread_loop = nullptr;
    set_debug(false);  // its count of debug loops
}

void EventLoop::orphan_tasks() noexcept {
    // Tasks and futures stay listed until their state is freed (release_loop_tasks in task.cpp
    // leaves the ones a handle keeps): tell each that its loop is gone.
    for (detail::PromiseBase* p = tasks_; p != nullptr;) {
        detail::PromiseBase* next = p->next_;
        p->flags_ |= detail::kOrphaned;
        p->loop_ = nullptr;
        p->prev_ = p->next_ = nullptr;
        p = next;
    }
    tasks_ = nullptr;
}

Handle EventLoop::call_soon(detail::Callback cb) {
    if (closed_) throw RuntimeError("Event loop is closed");
    const detail::TimerId id = timers_.make_slot(std::move(cb));
    ready_.push(&run_slot, detail::pack_timer_id(id));
    return Handle(this, id);
}

void EventLoop::call_soon_threadsafe(detail::Callback cb) {
    // Counted while inside (the decrement is the last touch of the loop): close() waits for the
    // count to reach 0, so the loop may be destroyed as soon as close() returns. The count and the
    // closed bit share one word, so one read-modify-write both enters and checks.
    if ((ts_gate_.fetch_add(2) & 1) != 0) {
        ts_gate_.fetch_sub(2);
        throw RuntimeError("Event loop is closed");
    }
    struct Leave {
        std::atomic<std::uint64_t>& gate;
        ~Leave() { gate.fetch_sub(2); }
    } leave{ts_gate_};
    if (chaos_ != nullptr) [[unlikely]] {
        chaos_->post(std::move(cb));
        ts_queue_.push(detail::Callback(&detail::chaos_token));
    } else {
        ts_queue_.push(std::move(cb));
    }
    // After the push (seq_cst): if the loop announced it may block before looking at the queue,
    // we see it here. Only the producer that takes the announcement back writes the fd.
    if (polling_.load() && polling_.exchange(false)) {
        ts_wakeups_.fetch_add(1, std::memory_order_relaxed);
        backend_->wakeup();
    }
}

TimerHandle EventLoop::call_at(TimePoint when, detail::Callback cb) {
    return schedule_timer(when, std::move(cb));
}

TimerHandle EventLoop::schedule_timer(TimePoint when, detail::Callback&& cb) {
    if (closed_) throw RuntimeError("Event loop is closed");
    const detail::TimerId id = timers_.add(when.time_since_epoch().count(), std::move(cb));
    if (tracer_ != nullptr) [[unlikely]]
        detail::trace_timer_scheduled(*this, id, when);
    return TimerHandle(this, id, when);
}

void EventLoop::run_slot(void* packed) {
    EventLoop* loop = t_running_loop;
    if (loop->tracer_ != nullptr) [[unlikely]]
        return run_slot_traced(loop, packed);
    try {
        loop->timers_.run(detail::unpack_timer_id(packed));
    } catch (...) {
        loop->call_exception_handler({"Exception in callback", std::current_exception(), {}});
    }
}

void EventLoop::run_slot_traced(EventLoop* loop, void* packed) {
    const std::int64_t begin = loop->tracer_->callback_begin();
    try {
        loop->timers_.run(detail::unpack_timer_id(packed));
    } catch (...) {
        loop->call_exception_handler({"Exception in callback", std::current_exception(), {}});
    }
    loop->tracer_->callback_end(begin);
}

void EventLoop::check_runnable() const {
    if (closed_) throw RuntimeError("Event loop is closed");
    if (running_) throw RuntimeError("This event loop is already running");
    if (t_running_loop != nullptr)
        throw RuntimeError("Cannot run the event loop while another loop is running");
}

void EventLoop::run_forever() {
    check_runnable();
    running_ = true;
    t_running_loop = this;
    detail::t_task.tracer = tracer_;
    struct Reset {
        EventLoop* loop;
        ~Reset() {
            loop->running_ = false;
            loop->stopping_ = false;
            t_running_loop = nullptr;
            detail::t_task.tracer = nullptr;
        }
    } reset{this};
    // One test per iteration (attention_) for both stop() and a change of debug mode or trace:
    // the iteration itself does not test for the instrumented way of running callbacks.
    for (;;) {
        attention_ = stopping_;  // stop() before run_forever(): one iteration, as Python's
        if (!instrumented_) [[likely]] {
            do run_once<false>();
            while (!attention_);
        } else {
            do run_once<true>();
            while (!attention_);
        }
        if (stopping_) break;
    }
}

void EventLoop::drain_threadsafe() {
    // Only what was posted before this point: a callback posted meanwhile waits for the next
    // iteration, as one posted while this iteration's callbacks run.
    bool complete;
    if (chaos_ != nullptr) [[unlikely]] {
        std::size_t tokens = 0;
        complete = ts_queue_.drain([&tokens](detail::Callback&) { ++tokens; });
        std::vector<detail::Callback> taken;
        chaos_->take_posted(tokens, taken);
        for (detail::Callback& cb : taken) {
            const detail::TimerId id = timers_.make_slot(std::move(cb));
            ready_.push(&run_slot, detail::pack_timer_id(id));
        }
    } else {
        complete = ts_queue_.drain([this](detail::Callback& cb) {
            const detail::TimerId id = timers_.make_slot(std::move(cb));
            ready_.push(&run_slot, detail::pack_timer_id(id));
        });
    }
    // A producer preempted between its two steps holds back the callbacks behind it, and the
    // loop does not block while the queue is not empty: with nothing else to do, let it run
    // (it may share this core) rather than spin.
    if (!complete && ready_.empty()) std::this_thread::yield();
}

void EventLoop::poll_backend(std::int64_t timeout_ns) {
    ++stats_.backend_polls;
    if (timeout_ns != 0) {
        // Announce that we may block before the last look at the thread-safe queue: a producer
        // either sees polling_ (after its push) and writes the wake-up fd, or we see its push
        // here. A push still linking counts as seen (we do not block; the drain retries).
        polling_.store(true);
        if (ts_queue_.maybe_nonempty()) {
            timeout_ns = 0;
            polling_.store(false);
        } else {
            ++stats_.backend_waits;
        }
    }
    const std::size_t before = ready_.size();
    try {
        backend_->poll(timeout_ns, ready_);
    } catch (...) {
        polling_.store(false);
        throw;
    }
    polling_.store(false);
    // Seeded chaos: the completions one poll reported come in no promised order.
    if (chaos_ != nullptr) [[unlikely]]
        chaos_->shuffle_ready_tail(ready_, ready_.size() - before);
}

template <bool Instrumented>
void EventLoop::run_once() {
    // 1. Poll I/O: without blocking when callbacks are ready, else until the next timer. With no
    // I/O registered, a poll that would not block is skipped (the thread-safe queue is looked at
    // through its tail), so a busy loop of tasks pays no system call per iteration.
    if (!ready_.empty() || stopping_ || ts_queue_.maybe_nonempty(std::memory_order_relaxed)) {
        if (backend_->registrations() > 0) poll_backend(0);
    } else {
        const bool have_timers = timers_.has_timers();
        std::int64_t timeout_ns = -1;
        if (have_timers) {
            // Saturating: a timer at TimePoint::max() (a "never" deadline) must not overflow.
            timeout_ns = nanoseconds_until(TimePoint(Duration(timers_.next_deadline())), time());
        }
        if (timeout_ns != 0 && clock_->autojump()) {
            // Virtual time: look at I/O without blocking; if nothing came and a timer is pending,
            // jump the clock to it instead of sleeping.
            if (backend_->registrations() > 0) {
                backend_->look_next_poll();
                poll_backend(0);
            }
            if (ready_.empty() && !ts_queue_.maybe_nonempty()) {
                if (have_timers)
                    clock_->advance_to(TimePoint(Duration(timers_.next_deadline())));
                else
                    poll_backend(-1);  // only a real event (another thread, I/O) can wake us now
            }
        } else if (timeout_ns != 0 || backend_->registrations() > 0) {
            poll_backend(timeout_ns);
        }
    }
    if (ts_queue_.maybe_nonempty(std::memory_order_acquire)) drain_threadsafe();

    // 2. Due timers join the ready queue, in deadline order.
    if (timers_.has_timers()) {
        const std::int64_t now = time().time_since_epoch().count();
        detail::TimerId id;
        if (chaos_ != nullptr) [[unlikely]] {
            detail::chaos_pop_due_timers(*chaos_, timers_, ready_, now, &run_slot);
        } else if (!Instrumented || tracer_ == nullptr) [[likely]] {  // (no trace is set while running)
            while (timers_.pop_due(now, id)) ready_.push(&run_slot, detail::pack_timer_id(id));
        } else {
            while (timers_.pop_due(now, id)) {
                ready_.push(&run_slot, detail::pack_timer_id(id));
                detail::trace_timer_fired(*this, id);
            }
        }
    }

    // 3. Run what is ready now; what these schedule waits for the next iteration.
    if constexpr (!Instrumented) {
        for (std::size_t n = ready_.size(); n > 0; --n) {
            const detail::ReadyEntry e = ready_.pop();
            e.fn(e.ctx);
        }
    } else {
        run_ready_instrumented();
    }
    ++stats_.iterations;
}

void EventLoop::run_ready_instrumented() {
    // A trace: the tasks' steps are recorded here (step_task itself does not look for a trace).
    // Debug mode: Python's slow_callback_duration check, on the loop's clock (a virtual clock
    // that a callback moves on counts as time spent).
    const bool traced = tracer_ != nullptr;
    const bool timed = debug_;
    const double slow = std::chrono::duration<double>(slow_callback_duration_).count();
    for (std::size_t n = ready_.size(); n > 0; --n) {
        const detail::ReadyEntry e = ready_.pop();
        if (!timed) {
            detail::trace_ready_entry(e.fn, e.ctx);
            continue;
        }
        void* token = detail::g_step_begin != nullptr ? detail::g_step_begin(e.fn, e.ctx) : nullptr;
        const TimePoint t0 = time();
        struct End {  // also when the callback throws (an exception out of run_forever)
            EventLoop& loop;
            void* token;
            TimePoint t0;
            double slow;
            ~End() {
                const double dt = std::chrono::duration<double>(loop.time() - t0).count();
                if (detail::g_step_end != nullptr) detail::g_step_end(loop, token, dt, dt >= slow);
            }
        } end{*this, token, t0, slow};
        if (traced)
            detail::trace_ready_entry(e.fn, e.ctx);
        else
            e.fn(e.ctx);
    }
}

void EventLoop::close() {
    if (running_) throw RuntimeError("Cannot close a running event loop");
    if (closed_) return;
    // The signals it caught go back to their previous dispositions first (Python removes its
    // handlers in close() too), so that a Ctrl-C during a long join below acts as usual. After
    // this no signal handler reaches the loop's queue.
    detail::close_loop_signals(*this);
    // No thread may post into the loop once it is gone: join the default executor, then cut the
    // link through which other executors' threads reach it.
    shutdown_default_executor_for(kThreadJoinTimeout);
    {
        std::lock_guard lock(link_->mutex);
        link_->loop = nullptr;
    }
    closed_ = true;
    // From here call_soon_threadsafe refuses; wait for the callers already inside (a push and a
    // wake-up: short), so that none touches the loop after close() returns. Then no push is
    // half-linked, and every callback still queued is dropped here, on this thread.
    ts_gate_.fetch_or(1);
    while (ts_gate_.load() != 1) std::this_thread::yield();
    const std::size_t dropped = ts_queue_.clear();
    // Accepted after the last iteration, so never run (as Python's close()): silent unless in
    // debug mode.
    if (debug_ && dropped > 0) {
        try {
            call_exception_handler({"close() dropped " + std::to_string(dropped) +
                                        " callback(s) scheduled with call_soon_threadsafe() after "
                                        "the loop's last iteration",
                                    {}, {}});
        } catch (...) {
            // No memory for the message: nothing is lost but the report.
        }
    }
    // Operations kept pending outside any task (stream flushers): withdrawn, their references
    // dropped. Before ready_.clear(): a completion of theirs still queued, and whatever their
    // release schedules, is dropped with the rest, never run.
    while (detail::CloseHook* h = close_hooks_) {
        unlink_close_hook(*h);
        h->fn(h, *this);
    }
    ready_.clear();
    if (chaos_ != nullptr) [[unlikely]] {
        // Callbacks posted and not drained are dropped with their tokens. (Its record of the
        // operations it changed stays: an owner that withdraws one later gets its fields back.)
        std::list<std::pair<std::uintptr_t, detail::Callback>> dropped_posts;
        {
            std::lock_guard lock(chaos_->posted_mutex);
            dropped_posts.swap(chaos_->posted);  // destroyed below, without the lock held
        }
    }
    if (tasks_ != nullptr && detail::g_release_tasks != nullptr) detail::g_release_tasks(*this);
    timers_.clear();
    // The trace is complete: the last events are written and the file closed.
    delete tracer_;
    tracer_ = nullptr;
    set_instrumented();
}

// ---- the executor part (detail::LoopExecutor, src/thread_pool.cpp) ----

const std::shared_ptr<detail::LoopLink>& EventLoop::link() const noexcept { return link_; }

ThreadPoolExecutor& EventLoop::default_executor() {
    if (closed_) throw RuntimeError("Event loop is closed");
    return default_executor_.get();
}

void EventLoop::set_default_executor(std::shared_ptr<ThreadPoolExecutor> executor) {
    default_executor_.set(std::move(executor));
}

void detail::report_unclosed(const std::string& what, const SiteRecord* site) noexcept {
    try {
        const std::string text = "unclosed " + what;
        ExceptionContext ctx{text + site_trace(site), std::make_exception_ptr(ResourceWarning(text)), {}};
        EventLoop* loop = t_running_loop != nullptr ? t_running_loop : t_thread_loop;
        if (loop != nullptr && !loop->is_closed())
            loop->call_exception_handler(ctx);
        else
            EventLoop::default_exception_handler(ctx);
    } catch (...) {
        // No memory for the report: the resource is released all the same.
    }
}

void EventLoop::shutdown_default_executor() noexcept { shutdown_default_executor_for(std::nullopt); }

void EventLoop::shutdown_default_executor_for(std::optional<Duration> timeout) noexcept {
    if (default_executor_.shutdown(timeout)) return;
    // CPython 3.12+'s RuntimeWarning, word for word; the threads go on running detached.
    try {
        char text[160];
        std::snprintf(text, sizeof text,
                      "The executor did not finishing joining its threads within %g seconds.",
                      std::chrono::duration<double>(*timeout).count());
        call_exception_handler({text, std::make_exception_ptr(RuntimeWarning(text)), {}});
    } catch (...) {
        // No memory for the report: the threads are detached all the same.
    }
}

// ---- the I/O part (the backend; operations: src/io_op.cpp) ----

const char* EventLoop::backend_name() const noexcept { return backend_->name(); }

void EventLoop::add_reader(int fd, detail::Callback cb) {
    if (closed_) throw RuntimeError("Event loop is closed");
    backend_->set_watcher(fd, false, std::make_shared<detail::Callback>(std::move(cb)));
}

bool EventLoop::remove_reader(int fd) {
    if (closed_) return false;
    return backend_->set_watcher(fd, false, nullptr);
}

void EventLoop::add_writer(int fd, detail::Callback cb) {
    if (closed_) throw RuntimeError("Event loop is closed");
    backend_->set_watcher(fd, true, std::make_shared<detail::Callback>(std::move(cb)));
}

bool EventLoop::remove_writer(int fd) {
    if (closed_) return false;
    return backend_->set_watcher(fd, true, nullptr);
}

void EventLoop::notify_closing(int fd) noexcept {
    if (closed_) return;
    backend_->forget_fd(fd, /*closing=*/true, ready_);
}

void EventLoop::set_chaos(std::unique_ptr<detail::Chaos> chaos) {
    if (running_) throw RuntimeError("Cannot change the chaos settings of a running event loop");
    chaos_ = std::move(chaos);
}

void EventLoop::chaos_failed() noexcept {
    if (chaos_ != nullptr) detail::chaos_report(*chaos_);
}

void EventLoop::call_exception_handler(const ExceptionContext& context) noexcept {
    if (chaos_ != nullptr) [[unlikely]]
        detail::chaos_report(*chaos_);
    if (!handler_) {
        default_exception_handler(context);
        return;
    }
    try {
        handler_(*this, context);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "Unhandled error in exception handler: %s\n", e.what());
        default_exception_handler(context);
    } catch (...) {
        std::fprintf(stderr, "Unhandled error in exception handler\n");
        default_exception_handler(context);
    }
}

void EventLoop::default_exception_handler(const ExceptionContext& context) noexcept {
    std::string line = context.message;
    if (!context.task_name.empty()) line += "\ntask: " + context.task_name;
    if (context.exception) {
        try {
            std::rethrow_exception(context.exception);
        } catch (const std::exception& e) {
            line += "\nexception: " + detail::type_name(typeid(e)) + ": " + e.what();
        } catch (const BaseException& e) {
            line += "\nexception: " + detail::type_name(typeid(e)) + ": " + e.what();
        } catch (...) {
            line += "\nexception: (not a std::exception nor an asyncio::BaseException)";
        }
    }
    std::fprintf(stderr, "%s\n", line.c_str());
}

}  // namespace asyncio
