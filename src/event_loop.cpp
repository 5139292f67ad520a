#include "asyncio/event_loop.hpp"

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>
#include <thread>
#include <typeinfo>

#include "asyncio/detail/promise.hpp"
#include "asyncio/detail/type_name.hpp"
#include "backend/backend.hpp"

namespace asyncio {

namespace detail {
ASYNCIO_TLS EventLoop* t_running_loop = nullptr;
ASYNCIO_TLS EventLoop* t_thread_loop = nullptr;
ASYNCIO_TLS PromiseBase* t_current_task = nullptr;
ASYNCIO_TLS bool t_loop_gone = false;
void release_loop_tasks(EventLoop& loop) noexcept;  // task.cpp
void orphan_loop_tasks(EventLoop& loop) noexcept;   // task.cpp
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
    if (!loop_->closed_) loop_->timers_.cancel(id_);
}

EventLoop::EventLoop() : EventLoop(std::make_unique<MonotonicClock>()) {}

EventLoop::EventLoop(std::unique_ptr<Clock> clock)
    : clock_(std::move(clock)), backend_(detail::make_backend()), link_(std::make_shared<detail::LoopLink>()) {
    if (!clock_) throw ValueError("EventLoop needs a clock");
    link_->loop = this;
    // Python's PYTHONASYNCIODEBUG: any non-empty value turns debug mode on.
    const char* env = std::getenv("ASYNCIO_DEBUG");
    debug_ = env != nullptr && *env != '\0';
    if (detail::t_thread_loop == nullptr) detail::t_thread_loop = this;
}

EventLoop::~EventLoop() {
    try {
        if (!closed_) close();
    } catch (...) {
        // close() only throws while running, and a running loop is not destroyed.
    }
    // Frames that Task handles keep alive must not reach this loop when they are destroyed.
    detail::orphan_loop_tasks(*this);
    if (detail::t_thread_loop == this) detail::t_thread_loop = nullptr;
}

Handle EventLoop::call_soon(detail::Callback cb) {
    if (closed_) throw RuntimeError("Event loop is closed");
    const detail::TimerId id = timers_.make_slot(std::move(cb));
    ready_.push(&run_slot, detail::pack_timer_id(id));
    return Handle(this, id);
}

void EventLoop::call_soon_threadsafe(detail::Callback cb) {
    // Counted while inside (the decrement is the last touch of the loop): close() waits for the
    // count to reach 0, so the loop may be destroyed as soon as close() returns.
    ts_callers_.fetch_add(1);
    struct Leave {
        std::atomic<int>& callers;
        ~Leave() { callers.fetch_sub(1); }
    } leave{ts_callers_};
    if (ts_closed_.load()) throw RuntimeError("Event loop is closed");
    {
        std::lock_guard lock(ts_mutex_);
        ts_queue_.push_back(std::move(cb));
    }
    ts_pending_.store(true);
    if (polling_.load()) backend_->wakeup();
}

TimerHandle EventLoop::call_at(TimePoint when, detail::Callback cb) {
    return schedule_timer(when, std::move(cb));
}

TimerHandle EventLoop::schedule_timer(TimePoint when, detail::Callback&& cb) {
    if (closed_) throw RuntimeError("Event loop is closed");
    const detail::TimerId id = timers_.add(when.time_since_epoch().count(), std::move(cb));
    return TimerHandle(this, id, when);
}

void EventLoop::run_slot(void* packed) {
    EventLoop* loop = t_running_loop;
    try {
        loop->timers_.run(detail::unpack_timer_id(packed));
    } catch (...) {
        loop->call_exception_handler({"Exception in callback", std::current_exception(), {}});
    }
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
    struct Reset {
        EventLoop* loop;
        ~Reset() {
            loop->running_ = false;
            loop->stopping_ = false;
            t_running_loop = nullptr;
        }
    } reset{this};
    for (;;) {
        run_once();
        if (stopping_) break;
    }
}

void EventLoop::drain_threadsafe() {
    std::vector<detail::Callback> batch;
    {
        std::lock_guard lock(ts_mutex_);
        batch.swap(ts_queue_);
    }
    for (auto& cb : batch) {
        const detail::TimerId id = timers_.make_slot(std::move(cb));
        ready_.push(&run_slot, detail::pack_timer_id(id));
    }
}

void EventLoop::poll_backend(std::int64_t timeout_ns) {
    ++stats_.backend_polls;
    if (timeout_ns != 0) {
        // Announce that we may block before the last look at the thread-safe queue: a producer
        // either sees polling_ and writes the wake-up fd, or we see ts_pending_ here.
        polling_.store(true);
        if (ts_pending_.load()) timeout_ns = 0;
        else ++stats_.backend_waits;
    }
    try {
        backend_->poll(timeout_ns, ready_);
    } catch (...) {
        polling_.store(false);
        throw;
    }
    polling_.store(false);
}

void EventLoop::run_once() {
    // 1. Poll I/O: without blocking when callbacks are ready, else until the next timer. With no
    // I/O registered, a poll that would not block is skipped (the thread-safe queue is looked at
    // through its flag), so a busy loop of tasks pays no system call per iteration.
    if (!ready_.empty() || stopping_ || ts_pending_.load(std::memory_order_relaxed)) {
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
            if (backend_->registrations() > 0) poll_backend(0);
            if (ready_.empty() && !ts_pending_.load()) {
                if (have_timers)
                    clock_->advance_to(TimePoint(Duration(timers_.next_deadline())));
                else
                    poll_backend(-1);  // only a real event (another thread, I/O) can wake us now
            }
        } else if (timeout_ns != 0 || backend_->registrations() > 0) {
            poll_backend(timeout_ns);
        }
    }
    if (ts_pending_.load(std::memory_order_relaxed) && ts_pending_.exchange(false)) drain_threadsafe();

    // 2. Due timers join the ready queue, in deadline order.
    if (timers_.has_timers()) {
        const std::int64_t now = time().time_since_epoch().count();
        detail::TimerId id;
        while (timers_.pop_due(now, id)) ready_.push(&run_slot, detail::pack_timer_id(id));
    }

    // 3. Run what is ready now; what these schedule waits for the next iteration.
    for (std::size_t n = ready_.size(); n > 0; --n) {
        const detail::ReadyEntry e = ready_.pop();
        e.fn(e.ctx);
    }
    ++stats_.iterations;
}

void EventLoop::close() {
    if (running_) throw RuntimeError("Cannot close a running event loop");
    if (closed_) return;
    // No thread may post into the loop once it is gone: join the default executor, then cut the
    // link through which other executors' threads reach it.
    shutdown_default_executor_for(kThreadJoinTimeout);
    {
        std::lock_guard lock(link_->mutex);
        link_->loop = nullptr;
    }
    closed_ = true;
    // From here call_soon_threadsafe refuses; wait for the callers already inside (a push and a
    // wake-up: short), so that none touches the loop after close() returns.
    ts_closed_.store(true);
    while (ts_callers_.load() != 0) std::this_thread::yield();
    std::size_t dropped;
    {
        std::lock_guard lock(ts_mutex_);
        dropped = ts_queue_.size();
        ts_queue_.clear();
    }
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
    ready_.clear();
    detail::release_loop_tasks(*this);
    timers_.clear();
}

void EventLoop::call_exception_handler(const ExceptionContext& context) noexcept {
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
