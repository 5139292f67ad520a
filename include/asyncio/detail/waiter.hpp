// The waiting protocol, in one place: a task suspends on something (a list of a primitive, a
// timer, an I/O operation, a result from a thread), something wakes it, or Task::cancel() does.
// Every awaiter of the library that suspends a task until something happens is built on Waiter:
// sleep, Event, Lock, Condition, Semaphore, Barrier, Queue, run_in_executor, the socket
// operations, the streams' waits. (Awaiting a task, gather, wait, shield, TaskGroup pass a
// cancellation on to what they await instead: see docs/design.md, "One waiting protocol".)
//
// The protocol, as a Waiter sees it:
//
//   await_suspend:  begin_wait(h, what, hook) records the task (RuntimeError outside a task) and
//                   arms the cancel hook; then register wherever the wake-up will come from, and
//                   suspend. A cancellation already pending (the task cancelled itself, say)
//                   reaches the hook once the task's step is over, as any other cancel() would
//                   (suspend_task in task_core.hpp; Python's Task.__step): the task raises one
//                   iteration later and nothing is left registered.
//                   (begin_wait_unless_cancelled: the socket operations, which raise a pending
//                   cancellation at once without starting. yield_once(h, what): no wake-up to
//                   wait for, just the back of the ready queue.)
//   the wake-up:    wake() (resume from the ready queue: asyncio's ordering), wake_via(fn, ctx)
//                   (run fn from the ready queue instead, which resumes the task or calls
//                   wait_again()), wake_now() (already running from the ready queue: a due timer,
//                   an I/O completion).
//   the cancel hook (Task::cancel of the waiting task): unregister, then `return cancel_wait();`.
//   await_resume:   end_wait(pass_on) returns when the wait was woken; raises CancelledError when
//                   it was cancelled, or woken but cancelled before the task ran: then pass_on()
//                   first hands on what the wake-up gave it (a lock, a permit, a queue's wake-up),
//                   so that no hand-off is lost.
//
// ListWaiter is a Waiter queued in a WaitQueue (FIFO, intrusive: waiting never allocates); a new
// primitive's awaiter is then a few lines:
//
//   struct Awaiter : detail::ListWaiter {
//       Thing& thing;
//       bool await_ready() const noexcept { return thing.ready; }
//       template <class P>  // the line: for call graphs (note_await, detail/promise.hpp)
//       void await_suspend(std::coroutine_handle<P> h, unsigned line = __builtin_LINE()) {
//           note_await(h, line);
//           wait_in(thing.waiters, h, "Thing::wait()");
//       }
//       void await_resume() { end_wait(); }
//   };
//   ... thing.ready = true; thing.waiters.wake_all();     // or: if (auto* w = waiters.pop_front()) w->wake();
//
// A waiter is woken through the running loop, which is its own (loop-thread only); a wake-up
// between two runs of the loop (no loop running: Event::set() from main between two
// run_until_complete) goes to the thread's loop when the task is one of its tasks.
#pragma once

#include <coroutine>
#include <cstdint>
#include <utility>

#include "asyncio/detail/promise.hpp"
#include "asyncio/detail/waiter_list.hpp"
#include "asyncio/event_loop.hpp"
#include "asyncio/task.hpp"

namespace asyncio::detail {

/// Where a Waiter is in its protocol. Being woken changes no state (the hot path stays as cheap
/// as a bespoke awaiter): a waiter that resumes while kSuspended was woken by what it waited for.
enum class WaitState : std::uint8_t {
    kIdle,       // did not suspend (the awaited thing was ready at once)
    kSuspended,  // suspended: waiting (the cancel hook armed) or woken, not by a cancellation
    kCancelled,  // woken by its cancel hook (or refused by begin_wait_unless_cancelled)
};

/// The loop of a waiting task woken while its loop is not the running one (between two runs of
/// it, or from another thread): its own loop; RuntimeError while that loop runs elsewhere (a
/// non-thread-safe use) or once it is closed. Cold; defined in src/task.cpp.
[[gnu::cold]] EventLoop& loop_of_waiting_task(PromiseBase* t, const char* what = "waking a task");

class Waiter : public CancelHook {
public:
    using Hook = bool (*)(CancelHook*);

    Waiter() noexcept = default;
    Waiter(const Waiter&) noexcept : CancelHook() {}  // a copy is a fresh waiter
    Waiter& operator=(const Waiter&) noexcept { return *this; }

    /// The waiting task (null while kIdle).
    PromiseBase* task() const noexcept { return reinterpret_cast<PromiseBase*>(bits_ & ~kCancelledBit); }
    WaitState wait_state() const noexcept {
        if (bits_ == 0) return WaitState::kIdle;
        return (bits_ & kCancelledBit) != 0 ? WaitState::kCancelled : WaitState::kSuspended;
    }

    // ---- await_suspend ----

    /// Starts waiting: records the current task and arms `hook` as its cancel hook; the awaiter
    /// then registers the waiter and suspends. RuntimeError naming `what` outside a task. A
    /// cancellation already pending is delivered to `hook` once the task's step is over (see
    /// suspend_task), so the task raises one iteration later, as in asyncio.
    [[gnu::always_inline]] void begin_wait(std::coroutine_handle<> h, const char* what, Hook hook) {
        start_wait(current_task_or_throw(what), h, hook, what);
    }
    /// As begin_wait, for an operation that must not even start while a cancellation is pending
    /// (the socket operations: docs/design.md, Differences from CPython). False then: do not
    /// suspend; end_wait raises it.
    bool begin_wait_unless_cancelled(std::coroutine_handle<> h, const char* what, Hook hook) {
        PromiseBase* const t = current_task_or_throw(what);
        if (t->has(kMustCancel)) [[unlikely]] {
            bits_ = reinterpret_cast<std::uintptr_t>(t) | kCancelledBit;
            return false;
        }
        start_wait(t, h, hook, what);
        return true;
    }
    /// Suspends until the loop's next iteration (asyncio's bare `yield`, sleep(0)): the task goes
    /// to the back of the ready queue, with no cancel hook (a cancel() meanwhile, or one already
    /// pending, is raised at end_wait).
    void yield_once(std::coroutine_handle<> h, const char* what) {
        PromiseBase* const t = current_task_or_throw(what);
        t->loop_->schedule(&step_task, t);  // first: if it throws, the task did not suspend
        suspend_task(t, h, nullptr, what);
        bits_ = reinterpret_cast<std::uintptr_t>(t);
    }
    /// The registration that followed begin_wait failed (it threw): the task does not suspend.
    void abandon_wait() noexcept {
        suspended_task()->waiting_ = nullptr;
        bits_ = 0;
    }
    /// What it waits for happened during await_suspend itself (an I/O operation that completed
    /// at once): do not suspend after all; end_wait returns normally.
    void ready_at_once() noexcept { suspended_task()->waiting_ = nullptr; }

    // ---- the wake-up ----

    /// Resumes the task from the ready queue of its loop (the running one). From then on a
    /// cancellation is raised at end_wait, after the hand-off is passed on.
    /// `what` names the call in the RuntimeError of a wake-up from the wrong thread (raised
    /// before anything changes).
    void wake(const char* what = "waking a task") { wake_via(&step_task, suspended_task(), what); }
    /// As wake(), but runs fn(ctx) from the ready queue: fn resumes the task (step_task) or makes
    /// it wait again (wait_again). If scheduling throws, nothing changed.
    void wake_via(void (*fn)(void*), void* ctx, const char* what = "waking a task") {
        // The task's loop is the running one, except between runs or from another thread (cold:
        // checked there, RuntimeError while that loop runs on another thread).
        EventLoop* loop = suspended_task()->loop_;
        if (loop != t_running_loop) [[unlikely]]
            loop = &loop_of_waiting_task(suspended_task(), what);
        wake_via(*loop, fn, ctx);
    }
    /// The same, on a given loop (an awaiter that knows its loop).
    void wake_via(EventLoop& loop, void (*fn)(void*), void* ctx) {
        PromiseBase* const t = suspended_task();
        loop.schedule(fn, ctx);
        t->waiting_ = nullptr;
    }
    /// Resumes the task at once; only from a callback that itself runs from the ready queue (a
    /// due timer, an I/O completion, a result delivered from a thread). The waiter's frame may be
    /// gone when this returns.
    void wake_now() {
        PromiseBase* const t = suspended_task();
        t->waiting_ = nullptr;
        step_task_now(t);
    }
    /// After wake_via: the task waits again (its hook armed again), without having run.
    void wait_again() noexcept { suspended_task()->waiting_ = this; }
    /// True while it waits: suspended, and neither woken nor cancelled yet.
    bool waiting() const noexcept { return wait_state() == WaitState::kSuspended && task()->waiting_ == this; }

    // ---- the cancel hook ----

    /// The wait was withdrawn by its cancel hook (which unregistered it): the task resumes from
    /// the ready queue and raises CancelledError (even if uncancel() comes before it runs, as
    /// asyncio's cancelled future). Returns false, which is the hook's answer. (A hook runs with
    /// the task's loop as the running loop: Task::cancel and EventLoop::close see to it.)
    bool cancel_wait() { return cancel_wait(*suspended_task()->loop_); }
    /// The same, on a given loop (an awaiter that knows its loop).
    bool cancel_wait(EventLoop& loop) {
        PromiseBase* const t = suspended_task();
        loop.schedule(&step_task, t);
        t->waiting_ = nullptr;
        bits_ |= kCancelledBit;
        return false;
    }

    /// The end of an I/O wait's cancel hook, once it tried to withdraw its operation: withdrawn
    /// (it did nothing) is cancel_wait(loop); not withdrawn means it completed in this iteration
    /// and its completion is queued: the result is delivered, and the cancellation is raised at
    /// the task's next suspension point instead (an I/O operation cannot be undone: no received
    /// byte or accepted connection is lost).
    bool cancel_io_wait(EventLoop& loop, bool withdrawn) {
        if (withdrawn) return cancel_wait(loop);
        suspended_task()->flags_ |= kMustCancel;
        return true;
    }

    // ---- await_resume ----

    /// Returns when the wait ended normally (or never suspended). Raises CancelledError when it
    /// was cancelled, or when it was woken and then cancelled before the task ran: then pass_on()
    /// runs first and hands on whatever the wake-up gave this waiter.
    template <class PassOn>
    void end_wait(PassOn&& pass_on) const {
        const std::uintptr_t b = bits_;
        if (b == 0) return;  // kIdle: did not suspend (the fast paths)
        if ((b & kCancelledBit) == 0) [[likely]] {  // woken
            auto* const t = reinterpret_cast<PromiseBase*>(b);
            if (!t->has(kMustCancel)) [[likely]]
                return;
            std::forward<PassOn>(pass_on)();
            throw_cancelled(t);
        }
        throw_cancelled(reinterpret_cast<PromiseBase*>(b & ~kCancelledBit));
    }
    void end_wait() const {
        end_wait([] {});
    }

    /// The Waiter whose cancel hook h is.
    static Waiter* from_hook(CancelHook* h) noexcept { return static_cast<Waiter*>(h); }

private:
    [[gnu::always_inline]] void start_wait(PromiseBase* t, std::coroutine_handle<> h, Hook hook, const char* what) noexcept {
        CancelHook::fn = hook;
        bits_ = reinterpret_cast<std::uintptr_t>(t);
        suspend_task(t, h, this, what);
    }

    // The state is the task pointer itself: null (kIdle), the task (kSuspended), or the task with
    // its low bit set (kCancelled; a promise is at least 8-aligned). So a Waiter is two words (the
    // hook and the task), and waking it stores nothing into it.
    static constexpr std::uintptr_t kCancelledBit = 1;
    /// task(), for a waiter known to be suspended and not cancelled (no mask to apply).
    PromiseBase* suspended_task() const noexcept { return reinterpret_cast<PromiseBase*>(bits_); }

    std::uintptr_t bits_ = 0;
};

static_assert(alignof(PromiseBase) >= 2, "Waiter keeps its state in the low bit of a PromiseBase*");

class WaitQueue;

/// A Waiter queued in a WaitQueue (a primitive's FIFO of waiting tasks). The node lives in the
/// awaiter, in the waiting coroutine's frame; a queue destroyed while tasks wait in it detaches
/// them (they stay suspended until cancelled, and their cancellation touches nothing of it).
class ListWaiter : public WaiterNode, public Waiter {
public:
    /// await_suspend: begin_wait, then queue at the back of q. `hook` defaults to withdraw().
    inline void wait_in(WaitQueue& q, std::coroutine_handle<> h, const char* what, Hook hook = &withdraw);

    /// The default cancel hook: leave the queue (if it still exists) and raise CancelledError.
    static bool withdraw(CancelHook* h) {
        auto* self = from_hook(h);
        unlink(self);
        return self->cancel_wait();
    }
    static ListWaiter* from_hook(CancelHook* h) noexcept { return static_cast<ListWaiter*>(Waiter::from_hook(h)); }
};

/// RuntimeError (nothing changed) if w, a waiter about to be woken, waits on a loop that runs on
/// another thread: waking it from here would race with that loop. One compare when all is well.
inline void check_waker_thread(const Waiter* w, const char* what) {
    if (w != nullptr && w->task()->loop_ != t_running_loop) [[unlikely]]
        check_loop_thread_slow(w->task(), what);
}
/// A primitive is bound to the loop of the tasks waiting on it (as asyncio's _LoopBoundMixin,
/// which binds at the first wait; see docs/design.md, Differences): a task of another loop that
/// would wait on it gets RuntimeError "<Lock> is bound to a different event loop" and does not
/// wait. `front` is any waiter already there; `what` is "Lock::acquire()" and the like.
[[gnu::cold, noreturn]] void throw_bound_to_other_loop(const char* what);
inline void check_wait_loop(const Waiter* front, const char* what) {
    if (front != nullptr && front->task()->loop_ != t_running_loop) [[unlikely]]
        throw_bound_to_other_loop(what);
}

/// A FIFO of ListWaiters.
class WaitQueue {
public:
    bool empty() const noexcept { return list_.empty(); }
    ListWaiter* front() const noexcept { return static_cast<ListWaiter*>(list_.front()); }
    void push_back(ListWaiter* w) noexcept { list_.push_back(w); }
    /// The first waiter, unlinked. RuntimeError (and nothing changed) from a thread whose running
    /// loop is not the waiter's while that loop runs: waking it there would race with its loop.
    ListWaiter* pop_front() {
        check_thread("waking a waiting task");
        return static_cast<ListWaiter*>(list_.pop_front());
    }
    /// The thread check of pop_front(), for a primitive that changes its own state first.
    void check_thread(const char* what) const { check_waker_thread(front(), what); }
    void remove(ListWaiter* w) noexcept { list_.remove(w); }
    /// Wakes the first waiter and unlinks it; null if there is none. The wake-up checks the thread
    /// (RuntimeError naming `what`, nothing changed) before the waiter is unlinked, so a hand-off
    /// costs one check.
    ListWaiter* wake_front(const char* what) {
        ListWaiter* const w = front();
        if (w == nullptr) return nullptr;
        w->wake(what);
        list_.pop_front();
        return w;
    }
    /// Wakes every waiter, first come first woken (they all belong to one loop: see
    /// check_wait_loop, so a refusal can only come at the first).
    void wake_all(const char* what = "waking a task") {
        while (wake_front(what) != nullptr) {
        }
    }

private:
    WaiterList list_;
};

[[gnu::always_inline]] inline void ListWaiter::wait_in(WaitQueue& q, std::coroutine_handle<> h, const char* what, Hook hook) {
    check_wait_loop(q.front(), what);
    begin_wait(h, what, hook);
    q.push_back(this);
}

}  // namespace asyncio::detail
