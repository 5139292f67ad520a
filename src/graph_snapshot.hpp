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
    std::vector<FrameSite> stack;             // innermost first; empty for a future
    std::vector<std::uintptr_t> awaited_by;   // ids of the tasks that await it directly
};

struct PromiseBase;
/// Where t will resume (its innermost frame known), or {} ("" function) when that is not known.
FrameSite innermost_site(const PromiseBase* t) noexcept;
/// Python's repr of a task: <Task pending name='x' coro=<fn() running at file:line>> (task.cpp).
std::string task_repr(PromiseBase* p);

/// Every pending task of loop, and every pending future a task awaits. On the loop's thread.
std::vector<TaskSnapshot> snapshot_tasks(EventLoop& loop);

}  // namespace asyncio::detail
