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
//
// Ctrl-C (as Python 3.11+). While run() runs, on the main thread, with SIGINT at its default
// disposition (nobody installed a handler), the loop handles SIGINT: the first Ctrl-C cancels the
// main task; if the main task then ends by that CancelledError (it did not swallow the
// cancellation, and nobody else cancelled it), run() raises asyncio::KeyboardInterrupt (a
// BaseException, exceptions.hpp) instead; if it came when the main task was already done, run()
// raises KeyboardInterrupt too. A second Ctrl-C while the program is still unwinding kills the
// process at once by SIGINT (Python raises KeyboardInterrupt at once, which ends the same way
// unless caught). SIGINT's default disposition is back when run() returns. A program that installs
// its own SIGINT handler (add_signal_handler) or waits for SIGINT (wait_signal) replaces this one
// for the rest of the run(), as signal.signal(SIGINT, ...) does in Python.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>

#include "asyncio/clock.hpp"
#include "asyncio/coroutine.hpp"
#include "asyncio/event_loop.hpp"
#include "asyncio/task.hpp"
#include "asyncio/testing.hpp"

namespace asyncio {

/// Options of run() and Runner.
struct RunOptions {
    /// Debug mode for the loop (EventLoop::set_debug); unset: the ASYNCIO_DEBUG environment variable.
    std::optional<bool> debug = std::nullopt;
    /// The loop's clock (a MockClock makes time virtual); null: the monotonic clock.
    std::unique_ptr<Clock> clock = nullptr;
    /// Where the loop writes its trace (EventLoop::set_trace_file, asyncio/trace.hpp); unset: the
    /// ASYNCIO_TRACE environment variable; "": no trace, whatever the environment says.
    std::optional<std::string> trace_file = std::nullopt;
    /// Seeded chaos for tests (testing.hpp); unset: ASYNCIO_SEED / ASYNCIO_FAULTS.
    std::optional<testing::Chaos> chaos = std::nullopt;
};

namespace detail {
void check_no_running_loop(const char* what);
void shutdown_run_loop(EventLoop& loop) noexcept;  // cancels and finishes the tasks left, closes

/// Runner::run()'s Ctrl-C handling (see the top of this file; Python's Runner._on_sigint), for the
/// duration of one run(). Defined in src/run.cpp.
class SigintGuard {
public:
    SigintGuard(EventLoop& loop, PromiseBase* main);
    ~SigintGuard();
    SigintGuard(const SigintGuard&) = delete;
    SigintGuard& operator=(const SigintGuard&) = delete;
    /// The main task ended by CancelledError: KeyboardInterrupt if a Ctrl-C caused it (Python:
    /// interrupt count > 0 and task.uncancel() == 0).
    void check_after_cancelled() const;
    /// It ended otherwise: KeyboardInterrupt if a Ctrl-C came that could not cancel it.
    void check_after_done() const;

private:
    struct Done : DoneWaiter {
        SigintGuard* self = nullptr;
    };
    EventLoop& loop_;
    PromiseBase* main_;
    Done done_;
    bool installed_ = false;
    bool finished_ = false;     // main_ is done (its frame may be gone: not touched any more)
    bool cancelled_ = false;    // a Ctrl-C cancelled main_
    int final_cancelling_ = 0;  // main_'s cancellation requests when it finished
};
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
    /// Ctrl-C: see the top of this file (KeyboardInterrupt).
    template <class T>
    T run(Coroutine<T> main) {
        detail::check_no_running_loop("Runner.run()");
        EventLoop& loop = get_loop();
        Task<T> task = loop.create_task(std::move(main));
        detail::SigintGuard sigint(loop, task.base());
        try {
            if constexpr (std::is_void_v<T>) {
                loop.run_until_complete(std::move(task));
                sigint.check_after_done();
            } else {
                T value = loop.run_until_complete(std::move(task));
                sigint.check_after_done();
                return value;
            }
        } catch (const CancelledError&) {
            sigint.check_after_cancelled();
            throw;
        }
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
