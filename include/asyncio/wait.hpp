// asyncio::wait and asyncio::as_completed (asyncio 3.13 semantics, over a std::vector of
// awaitables: Tasks, Coroutines, or anything awaitable, which become tasks as ensure_future makes
// them; a vector of Future<T> is watched as it is, and done/pending hold those futures).
//
//   auto [done, pending] = co_await asyncio::wait(tasks, asyncio::FIRST_COMPLETED, 1s);
//   for (auto next : asyncio::as_completed(tasks)) { int r = co_await next; ... }  // results
//   auto it = asyncio::as_completed(tasks);                                        // or tasks
//   while (it.has_next()) { asyncio::Task<int> t = co_await it.next(); ... t.result() ... }
//
// wait() returns when the condition holds or the timeout passes (no TimeoutError: whatever is not
// done is in `pending`); it never cancels the tasks, and cancelling the waiting task leaves them
// running. ValueError for an empty set. as_completed yields the tasks in the order they finish;
// once the timeout passes, next() raises TimeoutError. Unlike CPython 3.11+, wait() accepts
// coroutines (and any awaitable): `done` and `pending` hold the tasks made of them.
#pragma once

#include <cassert>
#include <chrono>
#include <coroutine>
#include <cstddef>
#include <deque>
#include <iterator>
#include <optional>
#include <utility>
#include <vector>

#include "asyncio/clock.hpp"
#include "asyncio/coroutine.hpp"
#include "asyncio/exceptions.hpp"
#include "asyncio/task.hpp"

namespace asyncio {

enum class ReturnWhen { FIRST_COMPLETED, FIRST_EXCEPTION, ALL_COMPLETED };
inline constexpr ReturnWhen FIRST_COMPLETED = ReturnWhen::FIRST_COMPLETED;
inline constexpr ReturnWhen FIRST_EXCEPTION = ReturnWhen::FIRST_EXCEPTION;
inline constexpr ReturnWhen ALL_COMPLETED = ReturnWhen::ALL_COMPLETED;

/// What wait() gives: Tasks (or, for a vector of Future<T>, the futures themselves).
template <class T, class H = Task<T>>
struct WaitResult {
    std::vector<H> done;
    std::vector<H> pending;
};

namespace detail {

// Watches a set of tasks: one node per task (allocated once, registered from construction until
// destruction), plus an optional timer; wakes the watching task when on_task_done says so.
/// What TaskWatcher's nodes need of it, without its template parameters (call graphs find the
/// waiting task of a node through awaiting_task).
class WatcherCore : public CancelHook {
public:
    /// The task waiting through w, if w is a node of a watcher; else null.
    static PromiseBase* awaiting_task(const DoneWaiter* w) noexcept {
        return w->fn == &on_node ? static_cast<const Node*>(w)->watcher->self_ : nullptr;
    }

protected:
    WatcherCore() noexcept = default;
    ~WatcherCore() = default;
    struct Node : DoneWaiter {
        WatcherCore* watcher = nullptr;
        std::size_t index = 0;
    };
    virtual void on_task_done(std::size_t index) = 0;
    static void on_node(DoneWaiter* w, PromiseBase*) {
        auto* n = static_cast<Node*>(w);
        n->fn = nullptr;  // consumed: no longer linked
        n->watcher->on_task_done(n->index);
    }

    PromiseBase* self_ = nullptr;
};

template <class T, class H>
class TaskWatcher : public WatcherCore {
    using WatcherCore::Node;
    using WatcherCore::on_node;

public:
    explicit TaskWatcher(std::vector<H> tasks) : tasks_(std::move(tasks)), nodes_(tasks_.size()) {
        for (std::size_t i = 0; i < tasks_.size(); ++i) {
            PromiseBase* p = tasks_[i].base();
            Node& n = nodes_[i];
            n.watcher = this;
            n.index = i;
            if (p->has(kDone)) continue;
            n.fn = &on_node;
            n.next = p->waiters_;
            p->waiters_ = &n;
        }
    }
    /// Movable until it is awaited (so that wait_for(wait(...), d) and the like can keep it): the
    /// nodes stay where they are (in the vector's block), only their back pointers change.
    TaskWatcher(TaskWatcher&& o) noexcept
        : WatcherCore(), tasks_(std::move(o.tasks_)), nodes_(std::move(o.nodes_)) {
        assert(!o.suspended_ && !o.armed_);
        for (Node& n : nodes_) n.watcher = this;
    }
    TaskWatcher(const TaskWatcher&) = delete;
    TaskWatcher& operator=(const TaskWatcher&) = delete;
    ~TaskWatcher() {
        disarm();
        for (std::size_t i = 0; i < tasks_.size(); ++i)
            if (nodes_[i].fn != nullptr) unregister_waiter(tasks_[i].base(), &nodes_[i]);
    }

protected:
    // Suspends the current task until wake() (or its cancellation).
    bool suspend(std::coroutine_handle<> h, std::optional<TimePoint> deadline) {
        self_ = current_task_or_throw("wait()");
        suspend_task(self_, h, this, "wait()");
        CancelHook::fn = &on_cancel;
        if (deadline && !armed_) {
            timer_ = t_running_loop->call_at(*deadline, [this] {
                armed_ = false;
                timed_out_ = true;
                wake();
            });
            armed_ = true;
        }
        suspended_ = true;
        return true;
    }

    void wake() {
        if (!suspended_) return;
        suspended_ = false;
        wake_task(self_);
    }

    void disarm() noexcept {
        if (armed_) {
            timer_.cancel();
            armed_ = false;
        }
    }

    std::vector<H> tasks_;
    std::vector<Node> nodes_;
    Handle timer_;
    bool armed_ = false;
    bool suspended_ = false;
    bool timed_out_ = false;
    bool cancelled_ = false;

    void check_cancel() {
        if (cancelled_) {
            cancelled_ = false;
            throw_cancelled(self_);
        }
        check_cancelled(self_);
    }

private:
    static bool on_cancel(CancelHook* h) {
        auto* self = static_cast<TaskWatcher*>(h);
        self->cancelled_ = true;  // raise even if uncancel() comes before we run
        self->wake();
        return false;
    }
};

template <class T, class H = Task<T>>
class [[nodiscard]] WaitAwaiter final : public TaskWatcher<T, H> {
public:
    WaitAwaiter(std::vector<H> tasks, ReturnWhen when, std::optional<TimePoint> deadline)
        : TaskWatcher<T, H>(std::move(tasks)), when_(when), deadline_(deadline) {
        for (const auto& t : this->tasks_)
            if (t.done()) count(t);
    }

    bool await_ready() const noexcept { return satisfied(); }
    template <class P>
    bool await_suspend(std::coroutine_handle<P> h, unsigned line = __builtin_LINE()) {
        detail::note_await(h, line);
        return this->suspend(h, deadline_);
    }
    WaitResult<T, H> await_resume() {
        this->disarm();
        this->check_cancel();
        WaitResult<T, H> r;
        for (auto& t : this->tasks_) (t.done() ? r.done : r.pending).push_back(t);
        return r;
    }

private:
    void count(const H& t) noexcept {
        ++done_;
        if (!t.cancelled() && t.base()->has(kHasException)) {
            failed_ = true;
            // As asyncio's _on_completion: with FIRST_EXCEPTION it looks at the exception of a
            // task that fails while others are still running, which marks it retrieved (the last
            // one to finish, and every task under the other modes, is not looked at).
            if (when_ == ReturnWhen::FIRST_EXCEPTION && done_ < this->tasks_.size())
                t.base()->flags_ |= kRetrieved;
        }
    }
    bool satisfied() const noexcept {
        if (done_ == this->tasks_.size()) return true;
        if (when_ == ReturnWhen::FIRST_COMPLETED) return done_ > 0;
        if (when_ == ReturnWhen::FIRST_EXCEPTION) return failed_;
        return false;
    }
    void on_task_done(std::size_t index) override {
        count(this->tasks_[index]);
        if (satisfied()) this->wake();
    }

    ReturnWhen when_;
    std::optional<TimePoint> deadline_;
    std::size_t done_ = 0;
    bool failed_ = false;
};

inline std::optional<TimePoint> wait_deadline(std::optional<Duration> timeout) {
    if (!timeout) return std::nullopt;
    return asyncio::deadline_after(get_running_loop().time(), *timeout);
}

}  // namespace detail

/// Waits until `when` holds for the awaitables, or until timeout; returns {done, pending} (Tasks).
/// aws is a std::vector of Tasks, Coroutines or any other awaitables (each becomes a task, as
/// ensure_future does; an lvalue vector is copied, so one of Coroutines must be moved).
template <class V>
    requires detail::is_vector_v<std::remove_cvref_t<V>>  // a name as common as wait: vectors only
auto wait(V&& aws, ReturnWhen when = ALL_COMPLETED,
          std::optional<Duration> timeout = std::nullopt) {
    if constexpr (!detail::awaitable_vector<V>) {
        detail::require_awaitable_vector<V>();
        return detail::Refused{};
    } else {
        using A = typename std::remove_cvref_t<V>::value_type;
        using T = detail::future_value_t<A>;
        using H = detail::future_handle_t<A>;
        if (aws.empty()) throw ValueError("Set of Tasks/Futures is empty.");
        const std::optional<TimePoint> deadline = detail::wait_deadline(timeout);
        return detail::WaitAwaiter<T, H>(detail::as_tasks(std::forward<V>(aws)), when, deadline);
    }
}
/// The same with a timeout in any unit (a huge one saturates instead of overflowing into Duration).
template <class V, class Rep, class Period>
    requires detail::is_vector_v<std::remove_cvref_t<V>>
auto wait(V&& aws, ReturnWhen when, std::chrono::duration<Rep, Period> timeout) {
    if constexpr (!detail::awaitable_vector<V>) {
        detail::require_awaitable_vector<V>();
        return detail::Refused{};
    } else {
        using A = typename std::remove_cvref_t<V>::value_type;
        using T = detail::future_value_t<A>;
        using H = detail::future_handle_t<A>;
        if (aws.empty()) throw ValueError("Set of Tasks/Futures is empty.");
        const TimePoint deadline = deadline_after(get_running_loop().time(), timeout);
        return detail::WaitAwaiter<T, H>(detail::as_tasks(std::forward<V>(aws)), when, deadline);
    }
}

/// Yields tasks as they finish (see above).
template <class T, class H = Task<T>>
class AsCompleted final : public detail::TaskWatcher<T, H> {
public:
    AsCompleted(std::vector<H> tasks, std::optional<TimePoint> deadline)
        : detail::TaskWatcher<T, H>(std::move(tasks)), deadline_(deadline) {
        for (std::size_t i = 0; i < this->tasks_.size(); ++i)
            if (this->tasks_[i].done()) finished_.push_back(i);
        remaining_ = this->tasks_.size();
    }
    AsCompleted(AsCompleted&&) = delete;

    /// True while some task has not been handed out by next().
    bool has_next() const noexcept { return remaining_ > 0; }

    struct [[nodiscard]] Next {
        AsCompleted& ac;
        bool await_ready() const { return ac.ready(); }
        template <class P>
        bool await_suspend(std::coroutine_handle<P> h, unsigned line = __builtin_LINE()) {
            detail::note_await(h, line);
            return ac.suspend(h, ac.deadline_);
        }
        H await_resume() { return ac.tasks_[ac.take_next()]; }
    };
    /// The next task to finish (TimeoutError once the timeout has passed).
    Next next() noexcept { return Next{*this}; }

    /// What iterating yields: awaiting it gives the result of the next task to finish (its
    /// exception is raised; TimeoutError once the timeout has passed).
    struct [[nodiscard]] NextResult {
        AsCompleted* ac;
        bool await_ready() const { return ac->ready(); }
        template <class P>
        bool await_suspend(std::coroutine_handle<P> h, unsigned line = __builtin_LINE()) {
            detail::note_await(h, line);
            return ac->suspend(h, ac->deadline_);
        }
        decltype(auto) await_resume() {
            H& t = ac->tasks_[ac->take_next()];
            return detail::take_result(t.promise(), t.base()->refs_ == 1);
        }
    };
    /// Python 3.13's plain iteration, one awaitable per task:
    ///   for (auto next : asyncio::as_completed(std::move(aws))) { T r = co_await next; ... }
    class iterator {
    public:
        using value_type = NextResult;
        using difference_type = std::ptrdiff_t;
        iterator() noexcept = default;
        explicit iterator(AsCompleted* ac) noexcept : ac_(ac) {}
        NextResult operator*() const noexcept { return NextResult{ac_}; }
        iterator& operator++() noexcept {
            ++i_;
            return *this;
        }
        void operator++(int) noexcept { ++i_; }
        bool operator==(std::default_sentinel_t) const noexcept { return i_ >= ac_->tasks_.size(); }

    private:
        AsCompleted* ac_ = nullptr;
        std::size_t i_ = 0;
    };
    iterator begin() noexcept { return iterator(this); }
    std::default_sentinel_t end() const noexcept { return {}; }

private:
    bool ready() const { return remaining_ == 0 || !finished_.empty() || timed_out(); }
    /// After a wait: the index of the next finished task (or CancelledError, InvalidStateError,
    /// TimeoutError).
    std::size_t take_next() {
        this->check_cancel();
        if (remaining_ == 0) throw InvalidStateError("as_completed(): no tasks left");
        if (finished_.empty()) throw TimeoutError();
        const std::size_t i = finished_.front();
        finished_.pop_front();
        if (--remaining_ == 0) this->disarm();
        return i;
    }
    bool timed_out() const {
        return this->timed_out_ || (deadline_ && *deadline_ <= get_running_loop().time());
    }
    void on_task_done(std::size_t index) override {
        finished_.push_back(index);
        this->wake();
    }

    std::optional<TimePoint> deadline_;
    std::deque<std::size_t> finished_;
    std::size_t remaining_ = 0;
};

/// as_completed over a std::vector of Tasks, Coroutines or any other awaitables (each becomes a
/// task, as ensure_future does), with an optional timeout (any unit).
template <class V>
    requires detail::is_vector_v<std::remove_cvref_t<V>>
auto as_completed(V&& aws, std::optional<Duration> timeout = std::nullopt) {
    if constexpr (!detail::awaitable_vector<V>) {
        detail::require_awaitable_vector<V>();
        return detail::Refused{};
    } else {
        using A = typename std::remove_cvref_t<V>::value_type;
        using T = detail::future_value_t<A>;
        using H = detail::future_handle_t<A>;
        const std::optional<TimePoint> deadline = detail::wait_deadline(timeout);
        return AsCompleted<T, H>(detail::as_tasks(std::forward<V>(aws)), deadline);
    }
}
template <class V, class Rep, class Period>
    requires detail::is_vector_v<std::remove_cvref_t<V>>
auto as_completed(V&& aws, std::chrono::duration<Rep, Period> timeout) {
    if constexpr (!detail::awaitable_vector<V>) {
        detail::require_awaitable_vector<V>();
        return detail::Refused{};
    } else {
        using A = typename std::remove_cvref_t<V>::value_type;
        using T = detail::future_value_t<A>;
        using H = detail::future_handle_t<A>;
        const TimePoint deadline = deadline_after(get_running_loop().time(), timeout);
        return AsCompleted<T, H>(detail::as_tasks(std::forward<V>(aws)), deadline);
    }
}

}  // namespace asyncio
