// asyncio::TaskGroup: structured concurrency, as Python's `async with asyncio.TaskGroup() as tg`.
//
//   asyncio::TaskGroup tg;
//   co_await tg.run([&]() -> asyncio::Coroutine<> {     // the `async with` body
//       tg.create_task(fetch(a));
//       tg.create_task(fetch(b));
//       co_return;
//   }());
//   // or, with no body: tg.create_task(...); ...; co_await tg.wait();
//   tg.create_task([&, id]() -> asyncio::Coroutine<> { ... });   // a callable: kept in the frame
//
// Promises (asyncio 3.12): run()/wait() returns only when every task of the group is done, so no
// task outlives its group. The first task that fails makes the group abort: the other tasks are
// cancelled and so is the body (CancelledError at its next suspension point); once all are done,
// every failure comes out together as an ExceptionGroup (the body's own exception included), in the
// order they happened. Cancelled tasks are not failures. Cancelling the task that runs the group
// cancels every task of the group; the CancelledError propagates once they are all done. A group
// runs once; create_task on a finished group raises RuntimeError. A group destroyed before it was
// awaited cancels its tasks.
#pragma once

#include <coroutine>
#include <deque>
#include <exception>
#include <string>
#include <utility>
#include <vector>

#include "asyncio/awaitable.hpp"
#include "asyncio/coroutine.hpp"
#include "asyncio/detail/uncancel.hpp"
#include "asyncio/exceptions.hpp"
#include "asyncio/task.hpp"

namespace asyncio {

namespace detail {
struct GraphAccess;  // src/graph.cpp: who awaits a task, for call graphs
}

class TaskGroup {
public:
    TaskGroup() = default;
    TaskGroup(const TaskGroup&) = delete;
    TaskGroup& operator=(const TaskGroup&) = delete;
    ~TaskGroup() {
        if (abort_scheduled_) abort_handle_.cancel();
        // Not awaited (or abandoned): the tasks must not run on unsupervised.
        for (Child& c : children_) {
            if (c.task == nullptr) continue;
            unregister_waiter(c);
            detail::PromiseBase* t = std::exchange(c.task, nullptr);
            detail::task_cancel(t, std::string());
            detail::task_release(t);
        }
    }

    /// Starts a task of this group: tg.create_task(aw), tg.create_task(aw, name) or
    /// tg.create_task(f, args...), the forms of asyncio::create_task (task.hpp); f and args live in
    /// the task's frame, so a capturing lambda is safe.
    template <class A, class... Args>
    auto create_task(A&& a, Args&&... args) {
        if constexpr (!detail::valid_task_args<A, Args...>) {
            detail::report_task_args<A, Args...>();
            return detail::Refused{};
        } else {
            if (state_ == State::kDone) throw RuntimeError("TaskGroup is finished");
            if (aborting_) throw RuntimeError("TaskGroup is shutting down");
            auto task = asyncio::create_task(std::forward<A>(a), std::forward<Args>(args)...);
            // A task made before run()/wait() (the form with no body) is awaited, for call graphs,
            // by the task that made it: 3.14 links a child to the group's task from its creation.
            if (parent_ == nullptr && creator_.get() == nullptr) creator_.reset(detail::t_task.current_task);
            adopt(task.base());
            return task;
        }
    }

    /// Runs body (the `async with` block: any awaitable), then waits for every task of the group.
    template <class A>
    auto run(A&& body) {
        if constexpr (!detail::storable_awaitable<A>) {
            detail::require_storable_awaitable<A>();
            return detail::Refused{};
        } else {
            return run_body(detail::as_coroutine(std::forward<A>(body)));
        }
    }

    /// Waits for every task of the group (run() with an empty body).
    Coroutine<> wait() {
        enter();
        co_await Exit(*this, nullptr, false);
    }

    /// Tasks of the group not done yet.
    std::size_t pending() const noexcept { return pending_; }

private:
    friend struct detail::GraphAccess;
    enum class State { kNew, kEntered, kExiting, kDone };

    struct Child : detail::DoneWaiter {
        TaskGroup* group = nullptr;
        detail::PromiseBase* task = nullptr;  // null once done
    };

    /// Supervises the task p: the group learns when it is done and holds it until then.
    void adopt(detail::PromiseBase* p) {
        Child& c = children_.emplace_back();
        c.group = this;
        c.task = p;
        c.fn = &on_child_done;
        c.next = p->waiters_;
        p->waiters_ = &c;
        ++p->refs_;  // held until the task is done, so the group can always reach it
        ++pending_;
    }

    template <class T>
    Coroutine<T> run_body(Coroutine<T> body) {
        enter();
        std::exception_ptr error;
        bool cancelled = false;
        if constexpr (std::is_void_v<T>) {
            try {
                co_await body;
            } catch (const CancelledError&) {
                cancelled = true;
                error = std::current_exception();
            } catch (...) {
                error = std::current_exception();
            }
            co_await Exit(*this, error, cancelled);
        } else {
            std::optional<T> result;
            try {
                result.emplace(co_await body);
            } catch (const CancelledError&) {
                cancelled = true;
                error = std::current_exception();
            } catch (...) {
                error = std::current_exception();
            }
            co_await Exit(*this, error, cancelled);
            co_return std::move(*result);
        }
    }

    void enter() {
        if (state_ != State::kNew) throw RuntimeError("TaskGroup has already been entered");
        parent_ = detail::current_task_or_throw("TaskGroup");
        creator_.reset();
        state_ = State::kEntered;
    }

    void unregister_waiter(Child& c) noexcept { detail::unregister_waiter(c.task, &c); }

    void abort() {
        aborting_ = true;
        for (Child& c : children_)
            if (c.task != nullptr) detail::task_cancel(c.task, std::string());
    }

    void abort_for_failure() {
        abort_scheduled_ = false;
        if (aborting_ || parent_cancel_requested_) return;
        abort();
        parent_cancel_requested_ = true;
        detail::task_cancel(parent_, std::string());
    }

    /// The task whose group w (a done waiter on a child) belongs to; else null. As Python 3.14,
    /// a child is awaited by the group's task from its creation.
    static detail::PromiseBase* awaiting_task(const detail::DoneWaiter* w) noexcept {
        if (w->fn != &on_child_done) return nullptr;
        const TaskGroup& g = *static_cast<const Child*>(w)->group;
        return g.parent_ != nullptr ? g.parent_ : g.creator_.get();
    }
    static void on_child_done(detail::DoneWaiter* w, detail::PromiseBase* t) {
        auto* c = static_cast<Child*>(w);
        TaskGroup& g = *c->group;
        c->task = nullptr;
        --g.pending_;
        if (!t->has(detail::kCancelled) && t->has(detail::kHasException)) {
            t->flags_ |= detail::kRetrieved;
            g.errors_.push_back(t->exception());
            // As asyncio (a done callback is call_soon'ed), the group reacts one iteration later,
            // so tasks failing in the same iteration are all failures, not cancellations.
            if (!g.aborting_ && !g.parent_cancel_requested_ && !g.abort_scheduled_) {
                g.abort_scheduled_ = true;
                g.abort_handle_ = detail::t_running_loop->call_soon([&g] { g.abort_for_failure(); });
            }
        }
        if (g.pending_ == 0 && g.exit_waiter_ != nullptr) {
            detail::PromiseBase* parent = g.exit_waiter_;
            g.exit_waiter_ = nullptr;
            detail::wake_task(parent);
        }
        // Not the last reference: the loop holds its own until the task has finished.
        detail::task_release(t);
    }

    // Python's TaskGroup.__aexit__: waits for the tasks, then decides what to raise.
    class Exit : detail::CancelHook {
    public:
        Exit(TaskGroup& g, std::exception_ptr error, bool cancelled) noexcept
            : g_(g), error_(std::move(error)), cancelled_(cancelled) {}

        bool await_ready() {
            g_.state_ = State::kExiting;
            if (cancelled_) propagate_ = error_;
            if (error_ && !g_.aborting_) g_.abort();
            return g_.pending_ == 0;
        }
        template <class P>
        bool await_suspend(std::coroutine_handle<P> h, unsigned line = __builtin_LINE()) {
            detail::note_await(h, line);
            // A cancellation already pending reaches on_cancel once the step is over.
            detail::suspend_task(g_.parent_, h, this, "TaskGroup");
            CancelHook::fn = &on_cancel;
            g_.exit_waiter_ = g_.parent_;
            return true;
        }
        void await_resume() {
            g_.state_ = State::kDone;
            g_.exit_waiter_ = nullptr;
            if (g_.parent_cancel_requested_ && detail::uncancel(g_.parent_) == 0) propagate_ = nullptr;
            if (error_ && !cancelled_) g_.errors_.push_back(error_);
            if (propagate_ && g_.errors_.empty()) std::rethrow_exception(propagate_);
            if (!g_.errors_.empty())
                throw ExceptionGroup("unhandled errors in a TaskGroup", std::move(g_.errors_));
        }

    private:
        void note_cancel() {
            // The request's message goes with the CancelledError that propagates (asyncio raises
            // the one its wait received); taken either way, so it is not left to a later one.
            std::string msg = detail::take_cancel_message(g_.parent_);
            if (!g_.aborting_) {
                if (!propagate_)
                    propagate_ = msg.empty() ? std::make_exception_ptr(CancelledError())
                                             : std::make_exception_ptr(CancelledError(std::move(msg)));
                g_.abort();
            }
        }
        // The parent is cancelled while it waits: cancel the tasks and keep waiting for them.
        static bool on_cancel(detail::CancelHook* h) {
            auto* self = static_cast<Exit*>(h);
            self->note_cancel();
            return true;
        }

        TaskGroup& g_;
        std::exception_ptr error_;
        bool cancelled_;
        std::exception_ptr propagate_;
    };

    std::deque<Child> children_;  // stable addresses: each is linked into its task's waiters
    std::vector<std::exception_ptr> errors_;
    detail::PromiseBase* parent_ = nullptr;
    detail::WeakTask creator_;  // who made the tasks while parent_ is unknown (see create_task)
    detail::PromiseBase* exit_waiter_ = nullptr;
    std::size_t pending_ = 0;
    State state_ = State::kNew;
    bool aborting_ = false;
    bool parent_cancel_requested_ = false;
    bool abort_scheduled_ = false;
    Handle abort_handle_;
};

}  // namespace asyncio
