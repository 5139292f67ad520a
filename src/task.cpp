// Task bookkeeping that needs the loop: finishing, freeing, cancelling, names, the loop's list of
// pending tasks, and asyncio::run()'s shutdown.
#include "asyncio/task.hpp"

#include <algorithm>
#include <cstdio>
#include <cstddef>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <typeinfo>
#include <unordered_map>
#include <utility>
#include <vector>
#if ASYNCIO_ORIGIN_SOURCE_LOCATION
#endif

#include "asyncio/detail/type_name.hpp"
#include "asyncio/detail/waiter.hpp"
#include "graph_snapshot.hpp"
#include "loop_hooks.hpp"

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

#if ASYNCIO_ORIGIN_SOURCE_LOCATION
bool is_ident(char c) noexcept {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

// The name __builtin_FUNCTION() gives, from the signature GCC's source_location::function_name()
// gives: "int ns::C<T>::m(T, const char*) const [with T = int]" -> "m", "bool C::operator<(const
// C&) const" -> "operator<", "ns::C<T>::operator int() const" -> "operator int",
// "main()::<lambda(int)>" -> "operator()", "asyncio::Coroutine<> {anonymous}::ping(PingPong&,
// long)" -> "ping".
std::string name_from_signature(std::string_view sig) {
    if (const auto w = sig.find(" [with "); w != std::string_view::npos) sig = sig.substr(0, w);
    if (sig.ends_with(")>")) {
        // A lambda's call operator: "...::<lambda(ARGS)>".
        int depth = 0;
        for (std::size_t i = sig.size(); i-- > 0;) {
            if (sig[i] == '>') ++depth;
            if (sig[i] == '<' && --depth == 0) {
                if (sig.substr(i).starts_with("<lambda(")) return "operator()";
                break;
            }
        }
    }
    // The parameter list is the last parenthesized group; what follows it are qualifiers.
    const std::size_t close = sig.rfind(')');
    if (close == std::string_view::npos) return std::string(sig);
    std::size_t open = std::string_view::npos;
    int depth = 0;
    for (std::size_t i = close + 1; i-- > 0;) {
        if (sig[i] == ')') ++depth;
        if (sig[i] == '(' && --depth == 0) {
            open = i;
            break;
        }
    }
    if (open == std::string_view::npos) return std::string(sig);
    const std::string_view head = sig.substr(0, open);
    // An operator: its name runs from the keyword to the parameter list.
    for (std::size_t at = head.rfind("operator"); at != std::string_view::npos;
         at = at == 0 ? std::string_view::npos : head.rfind("operator", at - 1)) {
        const std::size_t end = at + 8;
        // (A conversion, "operator int", has a space after the keyword: not an identifier either.)
        if ((at == 0 || !is_ident(head[at - 1])) && (end == head.size() || !is_ident(head[end])))
            return std::string(head.substr(at));
    }
    // Else the identifier before it (after template arguments, if any).
    std::size_t e = head.size();
    if (e > 0 && head[e - 1] == '>') {
        int d = 0;
        while (e-- > 0) {
            if (head[e] == '>') ++d;
            if (head[e] == '<' && --d == 0) break;
        }
        if (e == std::string_view::npos) return std::string(head);
    }
    std::size_t b = e;
    while (b > 0 && is_ident(head[b - 1])) --b;
    return std::string(head.substr(b, e - b));
}

// The names, one per coroutine (its source_location record), for the life of the program.
struct OriginNames {
    std::mutex mutex;
    // A node's value never moves (rehashing relinks nodes): its c_str() is handed out.
    std::unordered_map<const char*, std::string> by_signature;
};
OriginNames& origin_names() {
    static OriginNames* names = new OriginNames;  // never destroyed: read by reports at exit
    return *names;
}
#endif

void report(EventLoop* loop, ExceptionContext ctx) noexcept {
    if (loop == nullptr) loop = t_running_loop != nullptr ? t_running_loop : t_thread_loop;
    if (loop != nullptr)
        loop->call_exception_handler(ctx);
    else
        EventLoop::default_exception_handler(ctx);
}

void unlink(PromiseBase*& head, PromiseBase* p) noexcept {
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
    if (p->has(kFuture)) [[unlikely]] {
        // A future dropped while pending is freed silently (asyncio says nothing either).
        if (p->has(kHasException) && !p->has(kRetrieved) && !p->has(kCancelled))
            report(loop != nullptr ? loop : p->loop_,
                   {"Future exception was never retrieved", p->exception_, {}});
    } else if (p->has(kHasException) && !p->has(kRetrieved) && !p->has(kCancelled)) {
        report(loop, {"Task exception was never retrieved" + creation_trace(p), p->exception_, task_name(p)});
    } else if (!p->has(kDone)) {
        report(loop, {"Task was destroyed but it is pending!" + creation_trace(p), nullptr, task_name(p)});
    }
    if (p->has(kHasExtra)) t_extras.erase(p);
    if (p->loop_ != nullptr) unlink(p->loop_->task_list(), p);
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

#if ASYNCIO_ORIGIN_SOURCE_LOCATION
ASYNCIO_TLS OriginNameCache t_origin_names[kOriginNameCacheSize] = {};

const char* origin_function_slow(const char* sig) noexcept {
    if (*sig == '\0') return nullptr;
    try {
        OriginNames& n = origin_names();
        std::lock_guard lock(n.mutex);
        auto it = n.by_signature.find(sig);
        if (it == n.by_signature.end()) it = n.by_signature.emplace(sig, name_from_signature(sig)).first;
        const char* name = it->second.c_str();  // (written once: other threads may be reading it)
        t_origin_names[origin_name_slot(sig)] = OriginNameCache{sig, name};
        return name;
    } catch (...) {
        return sig;  // no memory for the short name: the signature says it too
    }
}
#endif

namespace {
// Marks p done and runs its waiters (awaiting tasks are scheduled, callbacks queued), oldest first.
void complete(PromiseBase* p) noexcept {
    p->flags_ |= kDone;
    p->waiting_ = nullptr;

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
}
}  // namespace

void throw_bad_coroutine_await(bool empty) {
    if (empty) throw RuntimeError("cannot await an empty Coroutine (moved from?)");
    throw RuntimeError("cannot reuse already awaited coroutine");
}

void report_never_awaited(const PromiseBase* p) noexcept {
    try {
        std::string msg = "coroutine '";
        const char* function = p->origin_function();
        msg += function != nullptr ? function : "?";
        msg += "' was never awaited";
        if (const char* file = p->origin_file()) {
            msg += " (defined at ";
            msg += file;
            msg += ':';
            msg += std::to_string(p->line_);
            msg += ')';
        }
        msg += creation_trace(p);
        report(nullptr, {std::move(msg), nullptr, {}});
    } catch (...) {
        // No memory for the message: the frame is freed all the same.
    }
}

void task_finished(PromiseBase* p) noexcept {
    if (p->has(kHasException | kTraced)) [[unlikely]] {  // one test for both
        if (p->has(kHasException)) {
            try {
                std::rethrow_exception(p->exception_);
            } catch (const CancelledError&) {
                p->flags_ |= kCancelled;
            } catch (...) {
            }
        }
        if (p->has(kTraced) && p->loop_ != nullptr && p->loop_->tracer() != nullptr) trace_task_done(p);
    }
    complete(p);
    task_release(p);  // the loop's reference
}

void future_start(PromiseBase* p, EventLoop& loop) noexcept {
    p->flags_ |= kFuture;
    p->refs_ = 1;  // the handle's
    bind_to_loop(p, loop);
}

void future_complete(PromiseBase* p) noexcept { complete(p); }

void check_loop_thread_slow(const PromiseBase* p, const char* what) {
    // Not the running loop of this thread: fine only if p's loop runs nowhere (between runs).
    const EventLoop* loop = p->loop_;
    if (loop == nullptr || !loop->is_running()) return;
    throw RuntimeError(std::string(what) +
                       ": Non-thread-safe operation invoked on an event loop other than the "
                       "current one");
}

void throw_bound_to_other_loop(const char* what) {
    // "Lock::acquire()" -> "Lock is bound to a different event loop" (asyncio's text, which shows
    // the object's repr where we show its class).
    std::string_view w(what);
    throw RuntimeError(std::string(w.substr(0, w.find("::"))) + " is bound to a different event loop");
}

void check_settable(PromiseBase* p, const char* what) {
    if (p == nullptr) throw InvalidStateError(std::string(what) + "() of an empty Future");
    if (!p->has(kFuture)) throw RuntimeError(std::string("Task does not support ") + what + " operation");
    if (p->has(kDone)) throw InvalidStateError("invalid state");
    check_loop_thread(p, what);
}

void set_cancelled(PromiseBase* p) noexcept {
    try {
        throw_cancelled(p);
    } catch (...) {
        p->set_exception(std::current_exception());
    }
}

void cancel_unstarted(PromiseBase* p) noexcept {
    set_cancelled(p);
    task_finished(p);
}

void task_release(PromiseBase* p) noexcept {
    if (--p->refs_ == 0) destroy_task(p, nullptr);
}

namespace {
// Cancellations passed on from inside a cancel hook (a task awaiting a task, a gather cancelling
// its children, ...) are queued here and delivered by the outermost task_cancel, so that a chain
// of any depth costs constant stack. Each queued task is pinned (a reference) until delivered.
ASYNCIO_TLS std::vector<PromiseBase*>* t_cancel_queue = nullptr;

// Tells a waiting task's hook; CancelledError at its next resumption if the hook did not pass the
// cancellation on (or nothing is waited on any more).
void deliver_cancel(PromiseBase* p) {
    CancelHook* hook = p->waiting_;
    if (hook == nullptr) {
        p->flags_ |= kMustCancel;
    } else if (!hook->fn(hook)) {
        p->flags_ |= kMustCancel | kCancelDelivered;
    }
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

namespace {
// Which message the cancellation carries, as CPython's Task.cancel/__step decide it. A request
// that reaches what the task awaits goes there with its message (a hook that passes it on takes
// it; one that wakes the task keeps it for the CancelledError), and a message not yet taken stays
// (the first request's: asyncio cancels the awaited future once). Once a hook woke the task to
// raise, later requests before it runs are counted and their messages dropped (the future is
// already cancelled). A request that finds the task awaiting nothing (not started, running,
// scheduled) sets the message of the pending cancellation: the last one wins, none clears it.
void set_cancel_message(PromiseBase* p, bool to_hook, std::string msg) {
    if (to_hook) {
        if (msg.empty()) return;
        std::string& pending = extra(p).cancel_msg;
        if (pending.empty()) pending = std::move(msg);
    } else if (!p->has(kCancelDelivered)) {
        if (!msg.empty())
            extra(p).cancel_msg = std::move(msg);
        else if (p->has(kHasExtra))
            if (auto it = t_extras.find(p); it != t_extras.end()) it->second.cancel_msg.clear();
    }
}

// Tells p's hook (deliver_cancel), then the tasks its hooks pass the cancellation on to, depth
// first, in constant stack (t_cancel_queue).
void deliver_queued(PromiseBase* p) {
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
}

bool future_cancel(PromiseBase* p, std::string msg) {
    check_loop_thread(p, "cancel()");
    try {
        if (msg.empty()) throw CancelledError();
        throw CancelledError(std::move(msg));
    } catch (...) {
        p->set_exception(std::current_exception());
    }
    p->flags_ |= kCancelled;
    future_complete(p);
    return true;
}
}  // namespace

bool task_cancel(PromiseBase* p, std::string msg) {
    if (p == nullptr) throw InvalidStateError("cancel() of an empty Task");
    if (p->has(kDone) || p->has(kAbandoned)) return false;
    if (p->has(kFuture)) [[unlikely]]
        return future_cancel(p, std::move(msg));
    if (p->loop_ != t_running_loop && t_cancel_queue == nullptr) check_loop_thread_slow(p, "cancel()");
    CancelHook* hook = p->waiting_;
    // The hooks schedule on the running loop: outside one (asyncio lets cancel() be called between
    // runs), the task's loop stands in for the call.
    EventLoop* outside = hook != nullptr && t_running_loop == nullptr ? p->loop_ : nullptr;
    if (p->cancelling_ < 0xffff) ++p->cancelling_;
    set_cancel_message(p, hook != nullptr, std::move(msg));  // raising it consumes it
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
    deliver_queued(p);
    return true;
}


void suspend_task_slow(PromiseBase* t, CancelHook* hook, const char* what) noexcept {
    if (t->has(kTraced)) trace_suspend(t, what);
    if (t->has(kMustCancel) && hook != nullptr) cancel_after_step(t);
}

void cancel_after_step(PromiseBase* t) noexcept {
    // One task steps at a time, and it is recorded once however often it suspends in the step.
    if (t_task.cancel_after_step != nullptr) return;
    ++t->refs_;
    t_task.cancel_after_step = t;
}

// Python's Task.__step after a yield: `if self._must_cancel: if self._fut_waiter.cancel(msg):
// self._must_cancel = False`. Here: the hook of what the task awaits is told; one that passes the
// cancellation on clears the pending one, one that wakes the task leaves it to be raised.
void deliver_cancel_after_step() {
    struct Unpin {
        PromiseBase* p;
        ~Unpin() { task_release(p); }
    } pin{std::exchange(t_task.cancel_after_step, nullptr)};
    PromiseBase* p = pin.p;
    if (p->has(kDone) || p->has(kAbandoned) || !p->has(kMustCancel) || p->waiting_ == nullptr) return;
    p->flags_ &= static_cast<std::uint16_t>(~kMustCancel);  // the hook decides (it may set it again)
    deliver_queued(p);
}

EventLoop& loop_of_waiting_task(PromiseBase* t, const char* what) {
    // The task's own loop; from a thread whose running loop is another while it runs: refused.
    check_loop_thread_slow(t, what);
    if (t->loop_ == nullptr) throw RuntimeError("Event loop is closed");
    return *t->loop_;
}

std::string take_cancel_message(PromiseBase* p) {
    if (!p->has(kHasExtra)) return {};
    auto it = t_extras.find(p);
    if (it == t_extras.end()) return {};
    return std::exchange(it->second.cancel_msg, std::string());
}

void throw_cancelled(PromiseBase* p) {
    p->flags_ &= static_cast<std::uint16_t>(~(kMustCancel | kCancelDelivered));
    std::string msg = take_cancel_message(p);
    if (!msg.empty()) throw CancelledError(std::move(msg));
    throw CancelledError();
}

void run_done_callback(DoneWaiter* w, PromiseBase* done_task) {
    std::unique_ptr<DoneCallbackNode> node(static_cast<DoneCallbackNode*>(w));
    EventLoop* loop = done_task->loop_;
    if (loop == nullptr || loop->is_closed()) return;  // it could never run: dropped
    try {
        loop->call_soon(std::move(node->cb));
    } catch (...) {
        // Out of memory for the slot: the callback is dropped with its node.
    }
}

namespace {
ASYNCIO_TLS std::uint64_t t_callback_ids = 0;
}

std::uint64_t add_done_callback_node(PromiseBase* p, Callback cb) {
    if (p == nullptr) throw InvalidStateError("add_done_callback() of an empty Future");
    EventLoop* loop = p->loop_;
    if (loop == nullptr || loop->is_closed() || p->has(kAbandoned))
        throw RuntimeError("Event loop is closed");
    auto node = std::make_unique<DoneCallbackNode>();
    node->cb = std::move(cb);
    node->id = ++t_callback_ids;
    node->DoneWaiter::fn = &run_done_callback;
    const std::uint64_t id = node->id;
    if (p->has(kDone)) {
        loop->call_soon(std::move(node->cb));
        return id;
    }
    node->next = p->waiters_;
    p->waiters_ = node.release();
    return id;
}

std::size_t remove_done_callback_node(PromiseBase* p, std::uint64_t id) {
    if (p == nullptr) throw InvalidStateError("remove_done_callback() of an empty Future");
    for (DoneWaiter** link = &p->waiters_; *link != nullptr; link = &(*link)->next) {
        DoneWaiter* w = *link;
        if (w->fn == &run_done_callback && static_cast<DoneCallbackNode*>(w)->id == id) {
            *link = w->next;
            delete static_cast<DoneCallbackNode*>(w);
            return 1;
        }
    }
    return 0;
}

std::string task_name(const PromiseBase* p) {
    auto* mp = const_cast<PromiseBase*>(p);
    TaskExtra& e = extra(mp);
    if (e.name.empty()) e.name = "Task-" + std::to_string(++t_task_counter);
    return e.name;
}

std::string task_name_if_set(const PromiseBase* p) {
    if (!p->has(kHasExtra)) return {};
    const auto it = t_extras.find(p);
    return it != t_extras.end() ? it->second.name : std::string();
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
    // Tasks and futures stay in the loop's list until their state is freed (destroy_task unlinks
    // them), so that the loop's destructor can tell the survivors it is gone (EventLoop::orphan_tasks).
    std::vector<PromiseBase*> pending;  // tasks that will never finish now
    std::vector<PromiseBase*> futures;  // pending futures with waiters or callbacks
    for (PromiseBase* p = loop.task_list(); p != nullptr; p = p->next_) {
        if (p->has(kDone) || p->has(kAbandoned)) continue;
        if (!p->has(kFuture))
            pending.push_back(p);
        else if (p->waiters_ != nullptr)
            futures.push_back(p);
    }
    // Pin every one first: destroying one frame may drop handles to the others.
    for (PromiseBase* p : pending) {
        ++p->refs_;
        p->flags_ |= kAbandoned;
    }
    for (PromiseBase* p : futures) ++p->refs_;
    // Detach each from what it waits on, as a cancellation does (an Event's or a Lock's waiter
    // list, a Queue, a future, a pending operation, a timer): a frame that a Task handle keeps must
    // not be reachable from outside the closed loop (an Event set later, with no loop or another
    // loop running, would schedule it there). A hook that passes the cancellation on reaches only
    // tasks marked abandoned above, which refuse it; whatever the hooks schedule goes to this loop's
    // ready queue, which is dropped: none of these tasks runs again.
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
    // None of them will finish, and a pending future's callbacks can never run: drop their waiters
    // before any frame goes, so that no awaiter unlinking itself from a list walks through one
    // freed with an earlier frame, and so that done callbacks (which hold handles) are freed
    // rather than keeping their task or future alive. (A pending future stays pending, as in
    // asyncio; a task of another loop awaiting it stays linked.)
    auto drop_callbacks = [](PromiseBase* p, bool keep_others) {
        DoneWaiter* w = std::exchange(p->waiters_, nullptr);
        while (w != nullptr) {
            DoneWaiter* next = w->next;
            if (w->fn == &run_done_callback) {
                delete static_cast<DoneCallbackNode*>(w);
            } else if (w->fn == &WeakTask::on_gone) {
                w->fn(w, p);  // it reads null from now on: the frame may go
            } else if (keep_others) {
                w->next = p->waiters_;
                p->waiters_ = w;
            }
            w = next;
        }
    };
    for (PromiseBase* p : pending) drop_callbacks(p, false);
    for (PromiseBase* p : futures) drop_callbacks(p, true);
    for (PromiseBase* p : pending) --p->refs_;  // the loop's reference
    for (PromiseBase* p : pending)
        if (--p->refs_ == 0) destroy_task(p, &loop);
    for (PromiseBase* p : futures) task_release(p);
}

namespace {

// Where the step being timed resumed (debug mode: step_begin notes it, step_end reports it).
ASYNCIO_TLS FrameSite t_step_resumed_at;

// Debug mode's slow steps (EventLoop::run_ready_instrumented): a task step pins its task, so that it can
// be described after the step even if it finished and its last handle went meanwhile.
void* step_begin(void (*fn)(void*), void* ctx) noexcept {
    if (fn != &step_task && fn != &start_task) return nullptr;
    auto* p = static_cast<PromiseBase*>(ctx);
    ++p->refs_;
    t_step_resumed_at = innermost_site(p);
    return p;
}

}  // namespace

std::string task_repr(PromiseBase* p) {
    std::string out = "<Task ";
    out += !p->has(kDone) ? (p->cancelling_ > 0 ? "cancelling" : "pending")
                          : (p->has(kCancelled) ? "cancelled" : "finished");
    out += " name='" + task_name(p) + "'";
    if (!p->has(kDone)) {
        // Python's coro=<main() running at file:line>: the outermost frame of its stack.
        const std::vector<FrameCallGraphEntry> st = task_stack(p, std::nullopt);
        if (!st.empty()) {
            out += std::string(" coro=<") + st.front().function + "() running at " + st.front().file;
            if (st.front().line != 0) out.append(":").append(std::to_string(st.front().line));  // 0: not known
            out += ">";
        }
    }
    if (p->has(kDone) && !p->has(kCancelled) && p->has(kHasException)) {
        try {
            std::rethrow_exception(p->exception_);
        } catch (const std::exception& e) {
            out += " exception=" + type_name(typeid(e)) + "('" + e.what() + "')";
        } catch (...) {
            out += " exception=...";
        }
    }
    return out + ">";
}

namespace {

std::string site_text(const FrameSite& s) {
    std::string out = std::string(s.function) + "() at " + s.file;
    if (s.line != 0) out.append(":").append(std::to_string(s.line));  // 0: not known (graph.cpp)
    return out;
}

void step_end(EventLoop& loop, void* token, double seconds, bool slow) noexcept {
    auto* p = static_cast<PromiseBase*>(token);
    if (slow) {
        try {
            char took[48];
            std::snprintf(took, sizeof took, " took %.3f seconds", seconds);
            std::string msg = "Executing " + (p != nullptr ? task_repr(p) : std::string("<Handle>")) + took;
            if (p != nullptr) {
                // Where the slow step began and ended (Python's repr has the second only).
                if (*t_step_resumed_at.function != '\0')
                    msg += ": it resumed in " + site_text(t_step_resumed_at);
                const FrameSite now = innermost_site(p);
                if (p->has(kDone))
                    msg += " and finished";
                else if (*now.function != '\0')
                    msg += " and suspended in " + site_text(now);
            }
            report(&loop, {std::move(msg), nullptr, p != nullptr ? task_name(p) : std::string()});
        } catch (...) {
            // No memory for the report.
        }
    }
    if (p != nullptr) task_release(p);
}

// The loop calls these through hooks (it never calls up).
[[maybe_unused]] const bool g_hook_registered = (set_release_tasks_hook(&release_loop_tasks), true);
[[maybe_unused]] const bool g_step_hooks_registered = (set_step_hooks(&step_begin, &step_end), true);
}  // namespace

}  // namespace asyncio::detail

namespace asyncio {

Task<> current_task() {
    detail::PromiseBase* p = detail::t_task.current_task;
    if (p == nullptr) return Task<>();
    ++p->refs_;
    return Task<>(p);
}

std::vector<Task<>> all_tasks(EventLoop& loop) {
    std::vector<Task<>> out;
    for (detail::PromiseBase* p = loop.task_list(); p != nullptr; p = p->next_) {
        if (p->has(detail::kDone) || p->has(detail::kFuture) || p->has(detail::kAbandoned)) continue;
        ++p->refs_;
        out.emplace_back(p);
    }
    return out;
}

std::vector<Task<>> all_tasks() { return all_tasks(get_running_loop()); }

}  // namespace asyncio
