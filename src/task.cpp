// Task bookkeeping that needs the loop: finishing, freeing, cancelling, names, the loop's list of
// pending tasks, and asyncio::run()'s shutdown.
#include "asyncio/task.hpp"

#include <algorithm>
#include <cstddef>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "asyncio/detail/waiter.hpp"
#include "asyncio/gather.hpp"
#include "asyncio/run.hpp"

namespace asyncio::detail {

namespace {

// Names and cancel messages are rare: they live beside the frame, not in it.
struct TaskExtra {
    std::string name;
    std::string cancel_msg;
};
thread_local std::unordered_map<const PromiseBase*, TaskExtra> t_extras;
thread_local std::uint64_t t_task_counter = 0;

TaskExtra& extra(PromiseBase* p) {
    p->flags_ |= kHasExtra;
    return t_extras[p];
}

void report(EventLoop* loop, ExceptionContext ctx) noexcept {
    if (loop == nullptr) loop = t_running_loop != nullptr ? t_running_loop : t_thread_loop;
    if (loop != nullptr)
        loop->call_exception_handler(ctx);
    else
        EventLoop::default_exception_handler(ctx);
}

void unlink(EventLoop& loop, PromiseBase* p) noexcept {
    PromiseBase*& head = loop.task_list();
    if (p->prev_ != nullptr)
        p->prev_->next_ = p->next_;
    else if (head == p)
        head = p->next_;
    if (p->next_ != nullptr) p->next_->prev_ = p->prev_;
    p->prev_ = p->next_ = nullptr;
}

// Frame destructions requested while another frame is being destroyed (its locals dropping the
// last handle of a task, whose frame holds the last handle of another, ...): queued through
// next_ and destroyed by the outermost destroy_task, so a chain of any length costs constant
// stack. The order is unchanged between siblings; a nested frame goes after its destroyer.
ASYNCIO_TLS bool t_destroying = false;
ASYNCIO_TLS PromiseBase* t_destroy_head = nullptr;
ASYNCIO_TLS PromiseBase* t_destroy_tail = nullptr;

void destroy_frame(PromiseBase* p) noexcept {
    if (p->has(kOrphaned)) [[unlikely]] {
        // Its loop is gone: the destructors of its locals must not touch it (Handle::cancel).
        // Never nested: every destroy_task during this one is queued.
        t_loop_gone = true;
        frame_of(p).destroy();
        t_loop_gone = false;
        return;
    }
    frame_of(p).destroy();
}

void destroy_task(PromiseBase* p, EventLoop* loop) noexcept {
    if (p->has(kHasException) && !p->has(kRetrieved) && !p->has(kCancelled))
        report(loop, {"Task exception was never retrieved", p->exception_, task_name(p)});
    else if (!p->has(kDone))
        report(loop, {"Task was destroyed but it is pending!", nullptr, task_name(p)});
    if (p->has(kHasExtra)) t_extras.erase(p);
    if (p->has(kAbandoned) && p->next_ != nullptr) {  // still in its closed loop's ring
        p->prev_->next_ = p->next_;
        p->next_->prev_ = p->prev_;
        p->prev_ = p->next_ = nullptr;
    }
    if (t_destroying) {
        if (t_destroy_tail != nullptr)
            t_destroy_tail->next_ = p;
        else
            t_destroy_head = p;
        t_destroy_tail = p;
        return;
    }
    t_destroying = true;
    destroy_frame(p);
    while (PromiseBase* q = t_destroy_head) {
        t_destroy_head = q->next_;
        if (t_destroy_head == nullptr) t_destroy_tail = nullptr;
        q->next_ = nullptr;
        destroy_frame(q);
    }
    t_destroying = false;
}

}  // namespace

void task_finished(PromiseBase* p) noexcept {
    p->flags_ |= kDone;
    p->waiting_ = nullptr;
    if (p->has(kHasException)) {
        try {
            std::rethrow_exception(p->exception_);
        } catch (const CancelledError&) {
            p->flags_ |= kCancelled;
        } catch (...) {
        }
    }
    if (t_running_loop != nullptr && !p->has(kAbandoned)) unlink(*t_running_loop, p);

    // Waiters were pushed at the head: run them oldest first.
    DoneWaiter* w = p->waiters_;
    p->waiters_ = nullptr;
    if (w != nullptr) {
        if (w->next == nullptr) {
            w->fn(w, p);
        } else {
            std::vector<DoneWaiter*> order;
            for (; w != nullptr; w = w->next) order.push_back(w);
            for (auto it = order.rbegin(); it != order.rend(); ++it) (*it)->fn(*it, p);
        }
    }
    task_release(p);  // the loop's reference
}

void cancel_unstarted(PromiseBase* p) noexcept {
    try {
        throw_cancelled(p);
    } catch (...) {
        p->set_exception(std::current_exception());
    }
    task_finished(p);
}

void task_release(PromiseBase* p) noexcept {
    if (--p->refs_ == 0) destroy_task(p, nullptr);
}

namespace {
// The loop whose list holds pending task p, if it is this thread's loop (nullptr otherwise).
EventLoop* thread_loop_of(PromiseBase* p) noexcept {
    PromiseBase* head = p;
    while (head->prev_ != nullptr) head = head->prev_;
    EventLoop* loop = t_thread_loop;
    return loop != nullptr && loop->task_list() == head ? loop : nullptr;
}
}  // namespace

namespace {
// Cancellations passed on from inside a cancel hook (a task awaiting a task, a gather cancelling
// its children, ...) are queued here and delivered by the outermost task_cancel, so that a chain
// of any depth costs constant stack. Each queued task is pinned (a reference) until delivered.
ASYNCIO_TLS std::vector<PromiseBase*>* t_cancel_queue = nullptr;

// Tells a waiting task's hook; CancelledError at its next resumption if the hook did not pass the
// cancellation on (or nothing is waited on any more).
void deliver_cancel(PromiseBase* p) {
    CancelHook* hook = p->waiting_;
    if (hook == nullptr || !hook->fn(hook)) p->flags_ |= kMustCancel;
}

struct CancelQueueScope {
    std::vector<PromiseBase*> queue;
    CancelQueueScope() noexcept { t_cancel_queue = &queue; }
    ~CancelQueueScope() {
        t_cancel_queue = nullptr;
        for (PromiseBase* q : queue) task_release(q);  // left by a hook that threw
    }
};
}  // namespace

bool task_cancel(PromiseBase* p, std::string msg) {
    if (p == nullptr) throw InvalidStateError("cancel() of an empty Task");
    if (p->has(kDone) || p->has(kAbandoned)) return false;
    CancelHook* hook = p->waiting_;
    // Waking a waiting task needs its loop. Outside a running loop (asyncio lets cancel() be called
    // between runs) that is the thread's loop, once we know the task is one of its own.
    EventLoop* outside = nullptr;
    if (hook != nullptr && t_running_loop == nullptr) {
        outside = thread_loop_of(p);
        if (outside == nullptr)
            throw RuntimeError("cannot cancel a waiting Task while its event loop is not running");
    }
    if (p->cancelling_ < 0xffff) ++p->cancelling_;
    // As Python: the message goes with the request that is delivered first; a later request
    // without one does not erase it, and raising it consumes it (see throw_cancelled).
    if (!msg.empty()) {
        std::string& pending = extra(p).cancel_msg;
        if (pending.empty()) pending = std::move(msg);
    }
    if (hook == nullptr) {
        p->flags_ |= kMustCancel;
        return true;
    }
    // The result is known without calling the hook: a hook that runs inside another's (it cancels
    // what it awaits) is queued, and the outermost call delivers the queue depth first, in the
    // order the hooks would have been called by recursion.
    if (t_cancel_queue != nullptr) {
        t_cancel_queue->push_back(p);
        ++p->refs_;
        return true;
    }
    struct Pretend {  // the hooks schedule on t_running_loop
        EventLoop* loop;
        explicit Pretend(EventLoop* l) : loop(l) {
            if (loop != nullptr) t_running_loop = loop;
        }
        ~Pretend() {
            if (loop != nullptr) t_running_loop = nullptr;
        }
    } pretend(outside);
    CancelQueueScope scope;
    std::vector<PromiseBase*>& queue = scope.queue;
    deliver_cancel(p);
    std::reverse(queue.begin(), queue.end());  // the first one queued is delivered first
    while (!queue.empty()) {
        PromiseBase* q = queue.back();
        queue.pop_back();
        const std::size_t base = queue.size();
        if (!q->has(kDone) && !q->has(kAbandoned)) deliver_cancel(q);
        std::reverse(queue.begin() + static_cast<std::ptrdiff_t>(base), queue.end());
        task_release(q);
    }
    return true;
}

EventLoop& loop_of_waiting_task(PromiseBase* t) {
    EventLoop* loop = thread_loop_of(t);
    if (loop == nullptr) throw RuntimeError("cannot wake a waiting Task while its event loop is not running");
    return *loop;
}

std::string take_cancel_message(PromiseBase* p) {
    if (!p->has(kHasExtra)) return {};
    auto it = t_extras.find(p);
    if (it == t_extras.end()) return {};
    return std::exchange(it->second.cancel_msg, std::string());
}

void throw_cancelled(PromiseBase* p) {
    p->flags_ &= static_cast<std::uint16_t>(~kMustCancel);
    std::string msg = take_cancel_message(p);
    if (!msg.empty()) throw CancelledError(std::move(msg));
    throw CancelledError();
}

void run_done_callback(DoneWaiter* w, PromiseBase*) {
    std::unique_ptr<DoneCallbackNode> node(static_cast<DoneCallbackNode*>(w));
    t_running_loop->call_soon(std::move(node->cb));
}

std::string task_name(const PromiseBase* p) {
    auto* mp = const_cast<PromiseBase*>(p);
    TaskExtra& e = extra(mp);
    if (e.name.empty()) e.name = "Task-" + std::to_string(++t_task_counter);
    return e.name;
}

void task_set_name(PromiseBase* p, std::string name) { extra(p).name = std::move(name); }

void throw_no_current_task(const char* what) {
    throw RuntimeError(std::string(what) + " must be awaited inside a task (no current task)");
}

void unregister_waiter(PromiseBase* target, DoneWaiter* w) noexcept {
    DoneWaiter** link = &target->waiters_;
    while (*link != nullptr) {
        if (*link == w) {
            *link = w->next;
            return;
        }
        link = &(*link)->next;
    }
}

void release_loop_tasks(EventLoop& loop) noexcept {
    std::vector<PromiseBase*> pending;
    for (PromiseBase* p = loop.task_list(); p != nullptr; p = p->next_) pending.push_back(p);
    loop.task_list() = nullptr;
    // Every abandoned task joins the loop's ring until its frame is freed (destroy_task unlinks
    // it), so that the loop's destructor can tell the survivors it is gone (orphan_loop_tasks).
    PromiseBase& ring = loop.abandoned_tasks();
    if (ring.next_ == nullptr) ring.prev_ = ring.next_ = &ring;
    // Pin every task first: destroying one frame may drop handles to the others.
    for (PromiseBase* p : pending) {
        ++p->refs_;
        p->flags_ |= kAbandoned;
        p->next_ = &ring;
        p->prev_ = ring.prev_;
        ring.prev_->next_ = p;
        ring.prev_ = p;
    }
    // Detach each from what it waits on, as a cancellation does (an Event's or a Lock's waiter
    // list, a Queue, a pending operation, a timer): a frame that a Task handle keeps must not be
    // reachable from outside the closed loop (an Event set later, with no loop or another loop
    // running, would schedule it there). A hook that passes the cancellation on reaches only tasks
    // marked abandoned above, which refuse it; whatever the hooks schedule goes to this loop's ready
    // queue, which is dropped: none of these tasks runs again.
    {
        EventLoop* const running = t_running_loop;
        t_running_loop = &loop;  // the hooks schedule on the running loop
        for (PromiseBase* p : pending) {
            if (CancelHook* hook = p->waiting_) {
                try {
                    (void)hook->fn(hook);
                } catch (...) {
                    // Out of memory scheduling the wake-up: the waiter is detached all the same.
                }
            }
            p->waiting_ = nullptr;
        }
        t_running_loop = running;
        loop.ready_queue().clear();
    }
    // None of them will finish: drop their waiters before any frame goes, so that no awaiter
    // unlinking itself from a list walks through one freed with an earlier frame, and so that
    // done callbacks (which hold Task handles) are freed rather than keeping their task alive.
    for (PromiseBase* p : pending) {
        DoneWaiter* w = std::exchange(p->waiters_, nullptr);
        while (w != nullptr) {
            DoneWaiter* next = w->next;
            if (w->fn == &run_done_callback) delete static_cast<DoneCallbackNode*>(w);
            w = next;
        }
    }
    for (PromiseBase* p : pending) --p->refs_;  // the loop's reference
    for (PromiseBase* p : pending)
        if (--p->refs_ == 0) destroy_task(p, &loop);
}

void orphan_loop_tasks(EventLoop& loop) noexcept {
    PromiseBase& ring = loop.abandoned_tasks();
    if (ring.next_ == nullptr) return;
    for (PromiseBase* p = ring.next_; p != &ring;) {
        PromiseBase* next = p->next_;
        p->flags_ |= kOrphaned;
        p->prev_ = p->next_ = nullptr;
        p = next;
    }
    ring.prev_ = ring.next_ = nullptr;
}

void check_no_running_loop(const char* what) {
    if (t_running_loop != nullptr)
        throw RuntimeError(std::string(what) + " cannot be called from a running event loop");
}

namespace {
// Cancels from inside the loop: waking a waiting task needs its loop running.
Coroutine<> cancel_and_wait(std::vector<Task<>> tasks) {
    for (auto& t : tasks) t.cancel();
    co_await gather(return_exceptions, std::move(tasks));
}
}  // namespace

void shutdown_run_loop(EventLoop& loop) noexcept {
    try {
        std::vector<Task<>> tasks = all_tasks(loop);
        if (!tasks.empty()) {
            loop.run_until_complete(cancel_and_wait(tasks));
            for (auto& t : tasks) {
                if (t.done() && !t.cancelled() && t.base()->has(kHasException)) {
                    t.base()->flags_ |= kRetrieved;
                    loop.call_exception_handler({"unhandled exception during asyncio.run() shutdown",
                                                 t.base()->exception_, t.get_name()});
                }
            }
        }
    } catch (...) {
        loop.call_exception_handler(
            {"error while shutting down asyncio.run()", std::current_exception(), {}});
    }
    try {
        loop.close();
    } catch (...) {
    }
}

}  // namespace asyncio::detail

namespace asyncio {

Task<> current_task() {
    detail::PromiseBase* p = detail::t_current_task;
    if (p == nullptr) return Task<>();
    ++p->refs_;
    return Task<>(p);
}

std::vector<Task<>> all_tasks(EventLoop& loop) {
    std::vector<Task<>> out;
    for (detail::PromiseBase* p = loop.task_list(); p != nullptr; p = p->next_) {
        ++p->refs_;
        out.emplace_back(p);
    }
    return out;
}

std::vector<Task<>> all_tasks() { return all_tasks(get_running_loop()); }

}  // namespace asyncio
