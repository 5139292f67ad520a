// asyncio::run(main()) and asyncio::Runner: the entry points.
//
// run(main()) makes a new event loop, runs main as a task until it is done, then cancels every
// task still pending and runs the loop until they have finished (their failures other than
// cancellation go to the exception handler), shuts the default executor down, closes the loop, and
// returns main's value or rethrows its exception. RuntimeError if a loop is already running on this
// thread. Closing waits for functions still running on the default executor (to_thread) for at
// most kThreadJoinTimeout (300 s, Python's THREAD_JOIN_TIMEOUT); then a RuntimeWarning goes to the
// exception handler and run() returns, leaving those threads running detached.
//
//   asyncio::run(main(), {.debug = true});          // Python's asyncio.run(main(), debug=True)
//
// Runner (Python 3.11's asyncio.Runner) is the same in pieces: several run() calls on one loop,
// then close() (or the destructor) does the shutdown above.
//
//   asyncio::Runner runner;
//   runner.run(connect());
//   runner.run(serve());
#pragma once

#include <memory>
#include <optional>
#include <utility>

#include "asyncio/clock.hpp"
#include "asyncio/coroutine.hpp"
#include "asyncio/event_loop.hpp"
#include "asyncio/task.hpp"

namespace asyncio {

/// Options of run() and Runner.
struct RunOptions {
    /// Debug mode for the loop (EventLoop::set_debug); unset: the ASYNCIO_DEBUG environment variable.
    std::optional<bool> debug = std::nullopt;
    /// The loop's clock (a MockClock makes time virtual); null: the monotonic clock.
    std::unique_ptr<Clock> clock = nullptr;
};

namespace detail {
void check_no_running_loop(const char* what);
void shutdown_run_loop(EventLoop& loop) noexcept;  // cancels and finishes the tasks left, closes
}  // namespace detail

class Runner {
public:
    explicit Runner(RunOptions options = {}) : options_(std::move(options)) {}
    Runner(const Runner&) = delete;
    Runner& operator=(const Runner&) = delete;
    /// close().
    ~Runner() { close(); }

    /// Runs main as a task of the runner's loop until it is done; its value or exception.
    /// RuntimeError from inside a running loop, or once the runner is closed.
    template <class T>
    T run(Coroutine<T> main) {
        detail::check_no_running_loop("Runner.run()");
        return get_loop().run_until_complete(std::move(main));
    }
    /// Cancels the tasks left and finishes them, shuts the default executor down and closes the
    /// loop. Idempotent; the runner cannot run again.
    void close() noexcept;
    /// The runner's loop (made on first use). RuntimeError once closed.
    EventLoop& get_loop();

private:
    RunOptions options_;
    std::unique_ptr<EventLoop> loop_;
    bool closed_ = false;
};

/// Runs main on a new loop (see the top of this file).
template <class T>
T run(Coroutine<T> main, RunOptions options = {}) {
    detail::check_no_running_loop("asyncio::run()");
    Runner runner(std::move(options));
    return runner.run(std::move(main));
}

/// Runs main on a new loop with the given clock.
template <class T>
T run(Coroutine<T> main, std::unique_ptr<Clock> clock) {
    return run(std::move(main), RunOptions{std::nullopt, std::move(clock)});
}

}  // namespace asyncio
