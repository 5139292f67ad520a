// What the rest of src/ needs of src/signals.cpp: the loop's teardown, the mask of the library's
// threads, and the hooks of asyncio::run()'s Ctrl-C handling (run.cpp).
#pragma once

#include <signal.h>

#include "asyncio/detail/callback.hpp"

namespace asyncio {
class EventLoop;
}

namespace asyncio::detail {

/// close(): removes every handler and listener of the loop (restoring the signals' previous
/// dispositions) and forgets its signal state. Listeners still linked are unlinked, not called.
void close_loop_signals(EventLoop& loop) noexcept;

/// Blocks the asynchronous signals (all but the synchronous SIGSEGV, SIGBUS, SIGFPE, SIGILL,
/// SIGTRAP, SIGSYS, SIGABRT, and SIGPROF for profilers) in the calling thread while it lives: a
/// thread started meanwhile inherits the mask, so it is never interrupted by a signal (its jobs
/// see no EINTR) and never takes one that a program reading a signalfd has blocked elsewhere.
class AsyncSignalsBlocked {
public:
    AsyncSignalsBlocked() noexcept;
    ~AsyncSignalsBlocked();
    AsyncSignalsBlocked(const AsyncSignalsBlocked&) = delete;
    AsyncSignalsBlocked& operator=(const AsyncSignalsBlocked&) = delete;

private:
    sigset_t old_;
};

// ---- asyncio::run()'s Ctrl-C (Python 3.11's Runner) ----

/// On the main thread with SIGINT at its default disposition: installs cb as loop's SIGINT handler
/// (the runner's) and arms the signal-level rule that a second SIGINT kills the process at once
/// (default disposition, re-raised). Returns false (and does nothing) otherwise.
bool runner_sigint_begin(EventLoop& loop, Callback cb);
/// Removes the runner's handler if it is still the loop's SIGINT handler (a program that installed
/// its own, or waits for SIGINT, has replaced it) and disarms the rule.
void runner_sigint_end(EventLoop& loop) noexcept;
/// SIGINTs delivered since runner_sigint_begin (counted in signal context).
unsigned runner_sigint_hits() noexcept;

}  // namespace asyncio::detail
