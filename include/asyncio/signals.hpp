// Waiting for a Unix signal in a task: the awaitable form of EventLoop::add_signal_handler.
//
//   auto stop = asyncio::wait_signal(SIGINT, SIGTERM);   // caught from here on
//   std::printf("ready\n");                               // a signal sent after this is not lost
//   int sig = co_await stop;                               // the one that came
//
// The signals are caught by the running loop from the call of wait_signal() (not from the
// co_await), so a program can announce that it is ready and then wait without a window in which
// the signal would kill it; `co_await asyncio::wait_signal(SIGTERM)` in one expression works too.
// The first delivery of any of them ends the wait (every wait and handler for that signal, on any
// loop, is told of it), and the signals' previous dispositions come back, unless a handler or
// another wait keeps them. A delivery before the co_await is kept: the co_await then returns at
// once. It is a one-shot wait: awaiting it again returns the same signal. Destroying it unawaited
// withdraws it. Cancel-safe: cancelling the waiting task withdraws the wait (nothing stays
// registered, the dispositions are restored) and raises CancelledError; a signal delivered in the
// same iteration as the cancel() is then consumed by this wait.
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
    /// Starts catching sigs on the running loop (RuntimeError without one; ValueError,
    /// RuntimeError as add_signal_handler, with nothing left caught).
    explicit SignalWaiter(std::vector<int> sigs) : loop_(&get_running_loop()) {
        std::sort(sigs.begin(), sigs.end());
        sigs.erase(std::unique(sigs.begin(), sigs.end()), sigs.end());
        nodes_.resize(sigs.size());
        try {
            for (std::size_t i = 0; i < sigs.size(); ++i) {
                nodes_[i].owner = this;
                nodes_[i].sig = sigs[i];
                nodes_[i].fn = &fired;
                loop_->add_signal_listener(nodes_[i]);
            }
        } catch (...) {
            withdraw();
            throw;
        }
    }
    /// Into a frame (wait_for, create_task): the listeners stay where they are (the vector's
    /// buffer moves, not the nodes), only their owner changes.
    SignalWaiter(SignalWaiter&& o) noexcept
        : Waiter(), nodes_(std::move(o.nodes_)), loop_(o.loop_), got_(o.got_) {
        for (Node& n : nodes_) n.owner = this;
    }
    SignalWaiter& operator=(SignalWaiter&&) = delete;
    ~SignalWaiter() { withdraw(); }

    bool await_ready() const noexcept { return got_ != 0; }
    template <class P>
    void await_suspend(std::coroutine_handle<P> h, unsigned line = __builtin_LINE()) {
        detail::note_await(h, line);
        if (t_running_loop != loop_)
            throw RuntimeError("wait_signal(): awaited on another event loop than the one it was made on");
        begin_wait(h, "wait_signal()", &on_cancel);
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
        if (self->waiting()) self->wake("wait_signal()");
    }
    static bool on_cancel(CancelHook* h) {
        auto* self = static_cast<SignalWaiter*>(from_hook(h));
        self->withdraw();
        return self->cancel_wait();
    }

    std::vector<Node> nodes_;  // one listener per signal
    EventLoop* loop_;
    int got_ = 0;
};

}  // namespace detail

/// Catches the signals from now on; awaited, returns the first that came (see above; the lowest
/// number if several came at once). Raises at once: ValueError "invalid signal number N",
/// RuntimeError "sig N cannot be caught" (SIGKILL, SIGSTOP), as add_signal_handler, or "no
/// running event loop".
/// (Separate arguments rather than an initializer list: GCC 12 miscompiles a braced list in a
/// coroutine's co_await expression, "array used as initializer".)
template <std::convertible_to<int>... More>
detail::SignalWaiter wait_signal(int sig, More... more) {
    return detail::SignalWaiter(std::vector<int>{sig, static_cast<int>(more)...});
}

}  // namespace asyncio
