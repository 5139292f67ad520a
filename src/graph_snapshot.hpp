// What asyncio-inspect (src/inspect.cpp) asks of a loop: every task of it, with its call stack and
// who awaits it, as plain data that another thread can format. Built on the loop's own thread.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace asyncio {
class EventLoop;
}

namespace asyncio::detail {

/// One coroutine of a call stack. The strings are the compiler's static strings (never freed).
struct FrameSite {
    const char* function = "";
    const char* file = "";
    unsigned line = 0;
};

struct TaskSnapshot {
    std::uintptr_t id = 0;      // the task's (or future's) address: Python's id()
    std::string name;           // a task's get_name(); "" for a future
    bool is_task = true;
    // Its call stack (innermost first; none for a future) and the ids of the tasks that await it
    // directly: ranges of LoopSnapshot's shared arrays, so that a snapshot of 10,000 tasks makes a
    // few allocations, not three per task (the loop is held while it is built).
    std::uint32_t first_frame = 0, frame_count = 0;
    std::uint32_t first_awaiter = 0, awaiter_count = 0;
};

struct LoopSnapshot {
    std::vector<TaskSnapshot> tasks;
    std::vector<FrameSite> frames;
    std::vector<std::uintptr_t> awaiters;
};

struct PromiseBase;
/// Where t will resume (its innermost frame known), or {} ("" function) when that is not known.
FrameSite innermost_site(const PromiseBase* t) noexcept;
/// Python's repr of a task: <Task pending name='x' coro=<fn() running at file:line>> (task.cpp).
std::string task_repr(PromiseBase* p);

/// Every pending task of loop, and every pending future a task awaits. On the loop's thread.
LoopSnapshot snapshot_tasks(EventLoop& loop);

}  // namespace asyncio::detail
