// asyncio::gather: runs awaitables concurrently and collects their results in argument order.
//
//   auto [a, b] = co_await asyncio::gather(f(), g());          // std::tuple
//   std::vector<int> v = co_await asyncio::gather(std::move(tasks));  // over a range
//   auto r = co_await asyncio::gather(asyncio::return_exceptions, f(), g());
//
// The arguments are any awaitables (awaitable.hpp): Coroutines, Tasks, sleep(), ev.wait(), q.get(),
// sock_recv(...), gather(...) itself, a type of yours. Each becomes a task at once, as
// ensure_future makes it (it starts running before the gather is awaited); Tasks are used as they
// are. A void result is std::monostate (Python's None).
// Promises, as asyncio's: without return_exceptions the first child to fail (or be cancelled)
// makes the await raise that exception at once, and the other children keep running (the loop owns
// them; their later exceptions are not reported: no child's exception ever is, whatever the await
// raises). A child failing while the cancellation is passed on to the children makes the await
// raise that failure, as asyncio does. With return_exceptions every outcome comes back
// as std::variant<value, std::exception_ptr> once all are done. Cancelling the awaiting task
// cancels every child that is not done, and the await then raises CancelledError, with or without
// return_exceptions.
#pragma once

#include <array>
#include <cassert>
#include <cstddef>
#include <exception>
#include <memory>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "asyncio/coroutine.hpp"
#include "asyncio/task.hpp"

namespace asyncio {

struct ReturnExceptions {
    explicit ReturnExceptions() = default;
};
/// Tag: gather(return_exceptions, ...) returns failures as values.
inline constexpr ReturnExceptions return_exceptions{};

namespace detail {

template <class T>
using gather_value_t = std::conditional_t<std::is_void_v<T>, std::monostate, T>;
template <class T>
using gather_outcome_t = std::variant<gather_value_t<T>, std::exception_ptr>;

/// Counts the children down and wakes the awaiting task. Children with no other waiter share this
/// node (its `next` stays null, so it can sit at the tail of many lists); others get their own.
class GatherCore : public DoneWaiter, public CancelHook {
public:
    /// The task awaiting the gather that w (a done waiter on a child) belongs to; else null.
    static PromiseBase* awaiting_task(const DoneWaiter* w) noexcept {
        if (w->fn == &on_done_shared) return static_cast<const GatherCore*>(w)->self_;
        if (w->fn == &on_done_own) return static_cast<const ChildNode*>(w)->core->self_;
        return nullptr;
    }

protected:
    GatherCore(bool return_exceptions) noexcept : return_exceptions_(return_exceptions) {
        DoneWaiter::fn = &on_done_shared;
        CancelHook::fn = &on_cancel;
    }
    /// Movable until it is awaited (so that wait_for(gather(...), d), shield(gather(...)) and the
    /// like can keep it): nothing points to it before then.
    GatherCore(GatherCore&& o) noexcept : GatherCore(o.return_exceptions_) {
        assert(!o.registered_ && o.self_ == nullptr);
    }
    GatherCore(const GatherCore&) = delete;
    GatherCore& operator=(const GatherCore&) = delete;
    ~GatherCore() = default;  // derived classes call unregister_all(): it needs their children

    void unregister_all() noexcept {
        if (!registered_) return;
        registered_ = false;
        // remaining_ counts the registered children not done yet: usually none is left, and the
        // children (a million, for a big gather) need not be walked again.
        if (remaining_ != 0) {
            const std::size_t n = count();
            for (std::size_t i = 0; i < n; ++i) {
                PromiseBase* c = child(i);
                if (!c->has(kDone)) unregister_waiter(c, this);
            }
            for (auto& node : own_)
                if (!node->child->has(kDone)) unregister_waiter(node->child, node.get());
        }
        own_.clear();
    }

    // The derived class supplies its children.
    virtual std::size_t count() const noexcept = 0;
    virtual PromiseBase* child(std::size_t i) const noexcept = 0;

    /// Every child is done (stops at the first that is not: cheap when the gather must wait).
    bool ready_now() const noexcept {
        const std::size_t n = count();
        for (std::size_t i = 0; i < n; ++i) {
            PromiseBase* c = child(i);
            if (!c->has(kDone)) return false;
        }
        return true;
    }

    /// Registers with every child not done yet, in one pass that also notes a child that already
    /// failed. Returns false (resume at once) when there is nothing to wait for.
    bool suspend(std::coroutine_handle<> h) {
        self_ = current_task_or_throw("gather()");
        suspend_task(self_, h, this, "gather()");
        suspended_ = true;
        const std::size_t n = count();
        for (std::size_t i = 0; i < n; ++i) {
            PromiseBase* c = child(i);
            if (c->has(kDone)) {
                if (!return_exceptions_ && failed_ == nullptr && c->has(kHasException)) failed_ = c;
                continue;
            }
            ++remaining_;
            if (c->waiters_ == nullptr) {
                c->waiters_ = this;
            } else {
                auto node = std::make_unique<ChildNode>();
                node->fn = &on_done_own;
                node->core = this;
                node->child = c;
                node->next = c->waiters_;
                c->waiters_ = node.get();
                own_.push_back(std::move(node));
            }
        }
        registered_ = true;
        if (remaining_ == 0 || failed_ != nullptr) {  // a child already failed: raise it now
            unregister_all();
            self_->waiting_ = nullptr;
            return false;
        }
        return true;
    }

    /// Raises what the await must raise (cancellation, first failure); after it the results can
    /// be collected.
    void finish() {
        unregister_all();
        if (self_ != nullptr && self_->waiting_ == static_cast<CancelHook*>(this)) self_->waiting_ = nullptr;
        if (self_ != nullptr && self_->has(kMustCancel)) {
            mark_retrieved();
            throw_cancelled(self_);
        }
        PromiseBase* bad = failed_;
        // A gather that waited saw every failure as it happened (suspend, child_done).
        if (!return_exceptions_ && bad == nullptr && !suspended_) {
            const std::size_t n = count();
            for (std::size_t i = 0; i < n && bad == nullptr; ++i)
                if (child(i)->has(kHasException)) bad = child(i);
        }
        // As asyncio: the first child to fail decides, even when the cancellation was passed on to
        // the children (a child that fails while it is being cancelled is not lost).
        if (bad != nullptr) {
            mark_retrieved();
            task_rethrow(bad);
        }
        if (cancel_requested_) {
            mark_retrieved();
            if (cancel_msg_.empty()) throw CancelledError();
            throw CancelledError(std::move(cancel_msg_));
        }
    }

    /// asyncio's gather looks at every child's exception as the child finishes (its done callback
    /// stays registered): whatever the await raises, none is reported as never retrieved, including
    /// those of children that are still running.
    void mark_retrieved() noexcept {
        const std::size_t n = count();
        for (std::size_t i = 0; i < n; ++i) child(i)->flags_ |= kRetrieved;
    }

private:
    struct ChildNode : DoneWaiter {
        GatherCore* core;
        PromiseBase* child;
    };

    void child_done(PromiseBase* c) {
        --remaining_;  // exact even after the wake-up: unregister_all() relies on it
        if (woken_) return;
        if (!return_exceptions_ && c->has(kHasException) && failed_ == nullptr) failed_ = c;
        if (remaining_ == 0) {
            woken_ = true;
            wake_task(self_);
        } else if (failed_ != nullptr) {
            woken_ = true;
            // asyncio settles the gather in the child's done callback, one hop later: a cancel()
            // in between still reaches the children left, and the failure is raised. So the hook
            // stays until the task resumes (finish() removes it).
            t_running_loop->schedule(&step_task, self_);
        }
    }
    static void on_done_shared(DoneWaiter* w, PromiseBase* c) {
        static_cast<GatherCore*>(w)->child_done(c);
    }
    static void on_done_own(DoneWaiter* w, PromiseBase* c) {
        static_cast<ChildNode*>(w)->core->child_done(c);
    }
    static bool on_cancel(CancelHook* h) {
        auto* core = static_cast<GatherCore*>(h);
        const std::size_t n = core->count();
        bool any_pending = false;
        for (std::size_t i = 0; i < n && !any_pending; ++i) any_pending = !core->child(i)->has(kDone);
        if (any_pending) {
            // As asyncio: the message goes to every child, and comes back with the CancelledError.
            core->cancel_msg_ = take_cancel_message(core->self_);
            for (std::size_t i = 0; i < n; ++i) task_cancel(core->child(i), core->cancel_msg_);
            core->cancel_requested_ = true;
            return true;
        }
        if (!core->woken_) {
            core->woken_ = true;
            wake_task(core->self_);
        }
        return false;
    }

    PromiseBase* self_ = nullptr;
    PromiseBase* failed_ = nullptr;
    std::size_t remaining_ = 0;
    std::vector<std::unique_ptr<ChildNode>> own_;
    std::string cancel_msg_;  // of the cancellation passed on to the children
    bool return_exceptions_;
    bool woken_ = false;
    bool cancel_requested_ = false;
    bool registered_ = false;
    bool suspended_ = false;
};

template <class T>
gather_value_t<T> gather_take(Future<T>& t) {
    if constexpr (std::is_void_v<T>) {
        t.result();
        return std::monostate{};
    } else {
        return take_result(t.promise(), t.base()->refs_ == 1);
    }
}

template <class T>
gather_outcome_t<T> gather_take_outcome(Future<T>& t) {
    if (t.base()->has(kHasException)) {
        t.base()->flags_ |= kRetrieved;
        return gather_outcome_t<T>(std::in_place_index<1>, t.base()->exception_);
    }
    return gather_outcome_t<T>(std::in_place_index<0>, gather_take(t));
}

template <bool ReturnExc, class... Ts>
class GatherTuple final : public GatherCore {
public:
    template <class... As>
    explicit GatherTuple(As&&... as)
        // Braces: the tasks are made left to right.
        : GatherCore(ReturnExc), tasks_{asyncio::ensure_future(std::forward<As>(as))...} {
        std::size_t i = 0;
        std::apply([&](auto&... t) { ((children_[i++] = t.base()), ...); }, tasks_);
    }
    GatherTuple(GatherTuple&& o) noexcept
        : GatherCore(std::move(o)), tasks_(std::move(o.tasks_)), children_(o.children_) {}
    ~GatherTuple() { unregister_all(); }

    bool await_ready() const noexcept { return ready_now(); }
    template <class P>
    bool await_suspend(std::coroutine_handle<P> h, unsigned line = __builtin_LINE()) {
        detail::note_await(h, line);
        return suspend(h);
    }
    auto await_resume() {
        finish();
        if constexpr (ReturnExc) {
            return std::apply(
                [](auto&... t) { return std::tuple<gather_outcome_t<Ts>...>(gather_take_outcome(t)...); },
                tasks_);
        } else {
            return std::apply(
                [](auto&... t) { return std::tuple<gather_value_t<Ts>...>(gather_take(t)...); },
                tasks_);
        }
    }

private:
    std::size_t count() const noexcept override { return sizeof...(Ts); }
    PromiseBase* child(std::size_t i) const noexcept override { return children_[i]; }

    std::tuple<Future<Ts>...> tasks_;  // tasks, or the futures given
    std::array<PromiseBase*, sizeof...(Ts)> children_{};
};

template <bool ReturnExc, class T, class H>
class GatherRange final : public GatherCore {
public:
    explicit GatherRange(std::vector<H> tasks)
        : GatherCore(ReturnExc), tasks_(std::move(tasks)) {}
    GatherRange(GatherRange&& o) noexcept : GatherCore(std::move(o)), tasks_(std::move(o.tasks_)) {}
    ~GatherRange() { unregister_all(); }

    bool await_ready() const noexcept { return ready_now(); }
    template <class P>
    bool await_suspend(std::coroutine_handle<P> h, unsigned line = __builtin_LINE()) {
        detail::note_await(h, line);
        return suspend(h);
    }
    auto await_resume() {
        finish();
        using V = std::conditional_t<ReturnExc, gather_outcome_t<T>, gather_value_t<T>>;
        std::vector<V> out;
        out.reserve(tasks_.size());
        for (auto& t : tasks_) {
            if constexpr (ReturnExc)
                out.push_back(gather_take_outcome(t));
            else
                out.push_back(gather_take(t));
            t = H();  // frees the frame while it is in cache, not in a second pass
        }
        return out;
    }

private:
    std::size_t count() const noexcept override { return tasks_.size(); }
    PromiseBase* child(std::size_t i) const noexcept override { return tasks_[i].base(); }

    std::vector<H> tasks_;  // Task<T>s, or the Future<T>s given
};

template <bool ReturnExc, class V>
auto gather_range(V&& v) {
    if constexpr (!awaitable_vector<V>) {
        require_awaitable_vector<V>();
        return Refused{};
    } else {
        using T = future_value_t<typename std::remove_cvref_t<V>::value_type>;
        static_assert(!std::is_reference_v<T>, "gather() does not collect reference results");
        return GatherRange<ReturnExc, T, future_handle_t<typename std::remove_cvref_t<V>::value_type>>(
            as_tasks(std::forward<V>(v)));
    }
}

template <bool ReturnExc, class... As>
auto gather_tuple(As&&... as) {
    if constexpr (!(storable_awaitable<As> && ...)) {
        (require_storable_awaitable<As>(), ...);
        return Refused{};
    } else {
        static_assert((!std::is_reference_v<future_value_t<As>> && ...),
                      "gather() does not collect reference results");
        return GatherTuple<ReturnExc, future_value_t<As>...>(std::forward<As>(as)...);
    }
}

/// gather's arguments: one std::vector of awaitables, or awaitables.
template <bool ReturnExc, class... As>
auto make_gather(As&&... as) {
    if constexpr (sizeof...(As) == 1 && (is_vector_v<std::remove_cvref_t<As>> && ...))
        return gather_range<ReturnExc>(std::forward<As>(as)...);
    else
        return gather_tuple<ReturnExc>(std::forward<As>(as)...);
}

}  // namespace detail

/// gather(a, b, ...) over any awaitables (Coroutines, Tasks, sleep(), ev.wait(), q.get(), ...) →
/// std::tuple of results; gather(std::vector<A>) → std::vector of results. Each becomes a task at
/// once (ensure_future: a Task is used as it is).
template <class... As>
    requires(sizeof...(As) > 0)
auto gather(As&&... as) {
    return detail::make_gather<false>(std::forward<As>(as)...);
}
template <class... As>
    requires(sizeof...(As) > 0)
auto gather(ReturnExceptions, As&&... as) {
    return detail::make_gather<true>(std::forward<As>(as)...);
}

}  // namespace asyncio
