// asyncio::run(main()): the entry point. Makes a new event loop, runs main as a task until it is
// done, then cancels every task still pending and runs the loop until they have finished (their
// failures other than cancellation go to the exception handler), closes the loop, and returns
// main's value or rethrows its exception. RuntimeError if a loop is already running on this thread.
// Closing the loop waits for functions still running on the default executor (to_thread) for at
// most kThreadJoinTimeout (300 s, Python's THREAD_JOIN_TIMEOUT); then a RuntimeWarning goes to the
// exception handler and run() returns, leaving those threads running detached.
#pragma once

#include <memory>
#include <utility>

#include "asyncio/clock.hpp"
#include "asyncio/coroutine.hpp"
#include "asyncio/event_loop.hpp"
#include "asyncio/task.hpp"

namespace asyncio {

namespace detail {
void check_no_running_loop(const char* what);
void shutdown_run_loop(EventLoop& loop) noexcept;  // cancels and finishes the tasks left, closes
}  // namespace detail

/// Runs main on a new loop with the given clock (a MockClock makes time virtual).
template <class T>
T run(Coroutine<T> main, std::unique_ptr<Clock> clock) {
    detail::check_no_running_loop("asyncio::run()");
    EventLoop loop(std::move(clock));
    struct Shutdown {
        EventLoop& loop;
        ~Shutdown() { detail::shutdown_run_loop(loop); }
    } shutdown{loop};
    return loop.run_until_complete(std::move(main));
}

template <class T>
T run(Coroutine<T> main) {
    return run(std::move(main), std::make_unique<MonotonicClock>());
}

}  // namespace asyncio
