// Waiting for a Unix signal in a task: the awaitable form of EventLoop::add_signal_handler.
//
//   int sig = co_await asyncio::wait_signal(SIGINT, SIGTERM);   // the one that came
//   server.close();
//
// While the task waits, the signals are caught by its loop (their previous dispositions come back
// when the wait ends, unless a handler or another wait keeps them); the first delivery of any of
// them after the wait began ends it, and every task waiting for that signal on any loop is woken.
// The wait is cancel-safe: cancelling the task withdraws it (nothing stays registered, the
// dispositions are restored) and raises CancelledError; a signal delivered in the same iteration
// as the cancel() is then consumed by this wait.
//
// Between two waits the signals are not caught: a loop `for (;;) { co_await wait_signal(SIGHUP);
// reload(); }` lets a SIGHUP that arrives during reload() take its previous disposition (for
// SIGHUP: kill the process). To handle a signal repeatedly, keep a handler installed instead
// (loop.add_signal_handler(SIGHUP, [&] { reload_requested.set(); })).
//
// Waiting for SIGINT replaces asyncio::run()'s own Ctrl-C handling (run.hpp), as installing a
// SIGINT handler does in Python.
#pragma once

#include <algorithm>
#include <concepts>
#include <coroutine>
#include <utility>
#include <vector>

#include "asyncio/detail/waiter.hpp"
#include "asyncio/event_loop.hpp"

namespace asyncio {

namespace detail {

class [[nodiscard]] SignalWaiter : public Waiter {
public:
    explicit SignalWaiter(std::vector<int> sigs) : sigs_(std::move(sigs)) {
        std::sort(sigs_.begin(), sigs_.end());
        sigs_.erase(std::unique(sigs_.begin(), sigs_.end()), sigs_.end());
    }
    SignalWaiter(SignalWaiter&& o) noexcept : Waiter(), sigs_(std::move(o.sigs_)) {}
    SignalWaiter& operator=(SignalWaiter&&) = delete;
    ~SignalWaiter() { withdraw(); }

    bool await_ready() const noexcept { return false; }
    void await_suspend(std::coroutine_handle<> h) {
        begin_wait(h, "wait_signal()", &on_cancel);
        try {
            loop_ = t_running_loop;
            nodes_.resize(sigs_.size());
            for (std::size_t i = 0; i < sigs_.size(); ++i) {
                nodes_[i].owner = this;
                nodes_[i].sig = sigs_[i];
                nodes_[i].fn = &fired;
                loop_->add_signal_listener(nodes_[i]);  // ValueError, RuntimeError
            }
        } catch (...) {
            withdraw();
            abandon_wait();
            throw;
        }
    }
    /// The signal that ended the wait.
    int await_resume() const {
        end_wait();
        return got_;
    }

private:
    struct Node : SignalListener {
        SignalWaiter* owner = nullptr;
    };

    void withdraw() noexcept {
        for (Node& n : nodes_) {
            if (n.linked) loop_->remove_signal_listener(n);
        }
    }
    static void fired(SignalListener* l, int sig) {
        SignalWaiter* self = static_cast<Node*>(l)->owner;
        self->got_ = sig;
        self->withdraw();  // its other signals
        self->wake("wait_signal()");
    }
    static bool on_cancel(CancelHook* h) {
        auto* self = static_cast<SignalWaiter*>(from_hook(h));
        self->withdraw();
        return self->cancel_wait();
    }

    std::vector<int> sigs_;
    std::vector<Node> nodes_;  // one listener per signal, made when the wait begins
    EventLoop* loop_ = nullptr;
    int got_ = 0;
};

}  // namespace detail

/// Waits until one of the signals is delivered (see above); returns the one that came (the lowest
/// number if several came at once). ValueError "invalid signal number N", RuntimeError "sig N
/// cannot be caught" (SIGKILL, SIGSTOP), as add_signal_handler, raised at the co_await.
/// (Separate arguments rather than an initializer list: GCC 12 miscompiles a braced list in a
/// coroutine's co_await expression, "array used as initializer".)
template <std::convertible_to<int>... More>
detail::SignalWaiter wait_signal(int sig, More... more) {
    return detail::SignalWaiter(std::vector<int>{sig, static_cast<int>(more)...});
}

}  // namespace asyncio
