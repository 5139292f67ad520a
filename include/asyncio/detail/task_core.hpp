// The machinery of task steps shared by Task and Future: resuming a task from the ready queue,
// suspending the current task on something cancellable, and awaiting a task or a future (whose
// state is the same promise, see detail/promise.hpp). Users never name these.
#pragma once

#include <coroutine>
#include <string>
#include <utility>

#include "asyncio/detail/config.hpp"
#include "asyncio/detail/promise.hpp"
#include "asyncio/event_loop.hpp"

namespace asyncio {

namespace detail {

/// Delivers the cancellation of t_task.cancel_after_step (see suspend_task; src/task.cpp).
void deliver_cancel_after_step();
void cancel_after_step(PromiseBase* t) noexcept;

/// Resumes a task where it stopped, with it as the current task: the ready queue's entry for a
/// task. It does not look for a trace: a tracing loop runs its ready queue's task entries through
/// trace_ready_entry instead (EventLoop::run_ready_instrumented), which calls step_task_now.
inline void step_task(void* ctx) {
    auto* t = static_cast<PromiseBase*>(ctx);
    PromiseBase* const prev = t_task.current_task;
    t_task.current_task = t;
    // resume_ is null while the step runs: a suspension through the library sets it again
    // (suspend_task, ReenterTask), one through an awaiter of the user's leaves it null, and a
    // call graph then knows the chain below the task is not known (src/graph.cpp).
    std::exchange(t->resume_, nullptr).resume();  // the task may be freed once this returns
    t_task.current_task = prev;
    if (t_task.cancel_after_step != nullptr) [[unlikely]]
        deliver_cancel_after_step();
}

/// step_task from inside another callback of the ready queue (a due timer, an I/O completion, a
/// queue's hand-off), which the loop does not see as a step: recorded here when the loop traces.
inline void step_task_now(PromiseBase* t) {
    if (t_task.tracer != nullptr) [[unlikely]] {
        trace_step(t);  // the same, recorded
        if (t_task.cancel_after_step != nullptr) [[unlikely]]
            deliver_cancel_after_step();
    } else {
        step_task(t);
    }
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
    t->loop_->schedule(&step_task, t);
}

/// Suspends the current task: records where to resume and what it waits on (hook: what
/// Task::cancel() tells; null for a plain yield). The awaiter suspends. A cancellation already
/// pending (kMustCancel: the task cancelled itself, or it resumed with one from something that
/// cannot be undone, as an I/O result or a user's awaiter) is delivered to the hook once the step
/// is over, as Python's Task.__step cancels the future the task just yielded: the task raises one
/// iteration later (after the callbacks already scheduled), and what it awaits is told (an
/// awaited task or gather is cancelled with the message, a Condition wait re-acquires its lock).
/// With no hook it stays pending and is raised where the task resumes. This is the one place
/// where a pending cancellation meets a suspension, and where a trace learns what the task awaits
/// (`what`, the await site: "sleep()", "sock_recv", "Task", ...; asyncio/trace.hpp).
/// Always inlined: with the trace hook GCC 12 stopped inlining it into the awaiters (+6% pingpong).
/// One flag test on the common path: kMustCancel and kTraced (a tracing loop's task) together.
[[gnu::cold]] void suspend_task_slow(PromiseBase* t, CancelHook* hook, const char* what) noexcept;
[[gnu::always_inline]] inline void suspend_task(PromiseBase* t, std::coroutine_handle<> h, CancelHook* hook,
                                                const char* what = nullptr) noexcept {
    t->resume_ = h;
    t->waiting_ = hook;
    if (t->has(kMustCancel | kTraced)) [[unlikely]]
        suspend_task_slow(t, hook, what);
}

/// Raises the pending cancellation of t, if any (at the end of every task suspension).
inline void check_cancelled(PromiseBase* t) {
    if (t != nullptr && t->has(kMustCancel)) throw_cancelled(t);
}

void unregister_waiter(PromiseBase* target, DoneWaiter* w) noexcept;
/// Binds p to loop and links it at the head of the loop's list of tasks and futures.
inline void bind_to_loop(PromiseBase* p, EventLoop& loop) noexcept {
    p->loop_ = &loop;
    PromiseBase*& head = loop.task_list();
    p->prev_ = nullptr;
    p->next_ = head;
    if (head != nullptr) head->prev_ = p;
    head = p;
}
/// Makes p a task of loop: the loop's reference, the Task handle's, its place in the loop's list
/// of pending tasks, and its first step in the ready queue. (Inline: it is most of create_task.)
inline void task_start(PromiseBase* p, EventLoop& loop) {
    p->flags_ |= kTaskMode;
    p->refs_ = 2;  // the loop's, and the Task handle's
    if (loop.tracer() != nullptr) [[unlikely]] {
        p->flags_ |= kTraced;
        trace_task_created(loop, p);  // before bind_to_loop: p's origin is still readable
    }
    bind_to_loop(p, loop);
    loop.schedule(&start_task, p);
}
/// Takes the message of t's pending cancellation (empty if none), to pass it on.
std::string take_cancel_message(PromiseBase* t);

/// A reference to a task that does not keep it alive: it reads null once the task is done, or
/// abandoned by its closing loop (release_loop_tasks), so it never points at a freed task. A done
/// waiter on the task, unlinked when reset or destroyed. Loop thread only.
class WeakTask : DoneWaiter {
public:
    WeakTask() = default;
    WeakTask(const WeakTask&) = delete;
    WeakTask& operator=(const WeakTask&) = delete;
    ~WeakTask() { reset(); }

    void reset(PromiseBase* t = nullptr) noexcept {
        if (task_ != nullptr) unregister_waiter(task_, this);
        task_ = nullptr;
        if (t == nullptr || t->has(kDone) || t->has(kAbandoned)) return;
        task_ = t;
        fn = &on_gone;
        next = t->waiters_;
        t->waiters_ = this;
    }
    PromiseBase* get() const noexcept { return task_; }

    static void on_gone(DoneWaiter* w, PromiseBase*) noexcept { static_cast<WeakTask*>(w)->task_ = nullptr; }

private:
    PromiseBase* task_ = nullptr;
};

/// The part of TaskAwaiter that does not depend on the result type: its done waiter is one
/// function, by which call graphs know a task awaiting another (awaiting_task).
struct TaskWait : DoneWaiter, CancelHook {
    PromiseBase* self = nullptr;

    static void on_done(DoneWaiter* w, PromiseBase*) { wake_task(static_cast<TaskWait*>(w)->self); }
    /// The task awaiting through w, if w is a TaskWait; else null.
    static PromiseBase* awaiting_task(const DoneWaiter* w) noexcept {
        return w->fn == &on_done ? static_cast<const TaskWait*>(w)->self : nullptr;
    }
};

/// co_await of a task or a future from a task.
template <class T, bool Move>
struct [[nodiscard]] TaskAwaiter : TaskWait {
    Promise<T>* target;

    explicit TaskAwaiter(Promise<T>* t) noexcept : target(t) {}

    bool await_ready() const {
        if (target == nullptr) throw InvalidStateError("cannot await an empty Task or Future");
        return target->has(kDone);
    }
    template <class P>
    bool await_suspend(std::coroutine_handle<P> h, unsigned line = __builtin_LINE()) {
        detail::note_await(h, line);
        self = current_task_or_throw("awaiting a Task");
        if (self == target) throw RuntimeError("Task cannot await on itself");
        if (target->loop_ != self->loop_) [[unlikely]]
            throw RuntimeError("Task got Future attached to a different loop");
        suspend_task(self, h, this, "Task");
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

    static bool on_cancel(CancelHook* h) {
        auto* a = static_cast<TaskAwaiter*>(h);
        if (a->self->has(kAbandoned)) {
            // Its loop closed: detach from a future (which stays pending, as in asyncio) rather
            // than cancel it; a task target is abandoned too and refuses the cancellation.
            unregister_waiter(a->target, a);
            return false;
        }
        return task_cancel(a->target, take_cancel_message(a->self));  // as Python: msg goes along
    }
};

}  // namespace detail

}  // namespace asyncio
