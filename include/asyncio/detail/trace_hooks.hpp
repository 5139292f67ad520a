// Where the loop, the tasks and the I/O operations tell a loop's tracer (asyncio/trace.hpp) what
// happens. Every hook sits behind one test of a pointer that is null unless the loop traces: the
// thread's t_task.tracer (set while a tracing loop runs on this thread) where no loop is at hand (a
// step from inside another callback), the loop's own tracer() elsewhere; or of a flag: a task's
// suspension (kTraced, tested with kMustCancel), a step from the ready queue (the loop's one
// test per iteration for debug mode and traces). The hooks themselves are cold and
// out of line (src/trace.cpp).
#pragma once

#include <cstdint>

#include "asyncio/clock.hpp"
#include "asyncio/detail/config.hpp"
#include "asyncio/detail/timer_queue.hpp"

namespace asyncio {
class EventLoop;
}

namespace asyncio::detail {

struct PromiseBase;
class Tracer;  // src/trace.hpp

// The tracer of the loop running on this thread: t_task.tracer (detail/promise.hpp).

/// A task's step (what step_task does), with its begin, end and suspension recorded.
[[gnu::cold]] void trace_step(PromiseBase* t);
/// A ready-queue entry run by a tracing loop: a task's step (step_task, start_task) recorded as
/// trace_step, anything else run as it is (EventLoop::run_ready_instrumented).
[[gnu::cold]] void trace_ready_entry(void (*fn)(void*), void* ctx);
/// p is becoming a task of loop (before its first step is queued; p's origin is still readable).
[[gnu::cold]] void trace_task_created(EventLoop& loop, PromiseBase* p) noexcept;
/// p finished (result, exception or cancelled); called before its waiters run.
[[gnu::cold]] void trace_task_done(PromiseBase* p) noexcept;
/// The running task t suspends on `site` (what it awaits: "sleep()", "sock_recv", "Task", ...).
/// The hook for await sites: a richer site (the awaiting coroutine, its source line) would be
/// passed here; the last call of a step wins (an awaiter that did not suspend after all is
/// overridden by the next one).
[[gnu::cold]] void trace_suspend(PromiseBase* t, const char* site) noexcept;
/// Timers of the loop's timer queue (call_later/call_at, sleep, timeouts).
[[gnu::cold]] void trace_timer_scheduled(EventLoop& loop, TimerId id, TimePoint when) noexcept;
[[gnu::cold]] void trace_timer_fired(EventLoop& loop, TimerId id) noexcept;
[[gnu::cold]] void trace_timer_cancelled(EventLoop& loop, TimerId id) noexcept;

}  // namespace asyncio::detail
