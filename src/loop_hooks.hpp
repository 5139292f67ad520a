// Hooks through which a higher layer takes part in what the loop does, so that the loop's code never
// calls up (layers: coroutine machinery -> loop -> primitives -> I/O). Private to src/.
#pragma once

namespace asyncio {
class EventLoop;
}

namespace asyncio::detail {

/// close()'s task part: detaches the loop's pending tasks from what they await and frees those no
/// handle keeps (task.cpp). Registered by task.cpp when the library starts; any program that makes
/// a task or a future links task.cpp, and without one the loop's task list stays empty.
using ReleaseTasksHook = void (*)(EventLoop& loop) noexcept;
void set_release_tasks_hook(ReleaseTasksHook hook) noexcept;

/// Debug mode's slow-step report (task.cpp): `begin` is called before a ready callback runs and
/// returns a token (a task it pinned so that it can still be described after its step, or null);
/// `end` reports "Executing <Task ...> took N seconds" if `slow`, and releases the token.
using StepBeginHook = void* (*)(void (*fn)(void*), void* ctx) noexcept;
using StepEndHook = void (*)(EventLoop& loop, void* token, double seconds, bool slow) noexcept;
void set_step_hooks(StepBeginHook begin, StepEndHook end) noexcept;

/// asyncio-inspect's registry of live loops (inspect.cpp). Called directly, not through a hook
/// that inspect.cpp would set: from a static library a program would then never link inspect.cpp,
/// and ASYNCIO_INSPECT=1 must work on a program that does not know of it. Without the variable
/// each is one test of a flag read once (at the process's first loop).
void inspect_loop_created(EventLoop& loop) noexcept;
void inspect_loop_destroyed(EventLoop& loop) noexcept;

/// Set while Runner makes a loop whose trace RunOptions::trace_file decides: the loop's
/// constructor then leaves ASYNCIO_TRACE alone (its file is not even opened).
extern thread_local bool t_ignore_trace_env;

}  // namespace asyncio::detail
