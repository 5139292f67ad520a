// Call graphs (Python 3.14's asyncio.capture_call_graph / print_call_graph): what a task is
// suspended in, as its chain of coroutines, and who awaits it, up to the tasks nobody awaits.
//
//   asyncio::print_call_graph(task);            // another task, from the loop's thread
//   co_await asyncio::print_call_graph();       // the running task (C++ cannot see its own
//                                                // stack without suspending: hence the co_await)
//
// prints, as Python does:
//   * Task(name='worker', id=0x5581e2a4c0)
//     + Call stack:
//     |   File 'server.cpp', line 12, in async read_request()
//     |   File 'server.cpp', line 30, in async handle()
//     + Awaited by:
//        * Task(name='Task-1', id=0x5581e2a1b0)
//          + Call stack:
//          |   File 'server.cpp', line 41, in async main()
//
// Each entry is a coroutine of this library's kinds (Coroutine<T>, a Task's own coroutine), with
// the line of the co_await it is suspended at (the library's awaiters note it as they suspend:
// one store, and nothing at all for a co_await that does not suspend). "Awaited by" follows `co_await task`, gather, TaskGroup (a child is
// awaited by the group's task from its creation, as in 3.14), wait, as_completed, shield and
// wait_for. Wrapper coroutines of the library (those create_task(f, args...) and combinators put
// around an awaitable) are left out. Where the chain is not known the stack holds the task's own
// coroutine only, with line 0 (not known): while the task runs (use the co_await forms), while it
// is suspended in an awaiter of the user's, or once a coroutine type of another library ran
// inside it. An awaiter of the user's that calls the await_suspend of one of ours itself notes the
// line of that call, unless it takes `unsigned line = __builtin_LINE()` too and passes it on
// (a type-erased std::coroutine_handle<> passed on makes the task's chain unknown).
// All of these must be called on the loop's thread (RuntimeError otherwise).
#pragma once

#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include "asyncio/future.hpp"
#include "asyncio/task.hpp"

namespace asyncio {

/// (FrameCallGraphEntry, one coroutine of a call stack, is in task.hpp: Task::get_stack gives them.)
struct FutureCallGraph {
    Future<> future;  // the task or future (of any result type: look at it, do not take its result)
    bool is_task = false;
    std::vector<FrameCallGraphEntry> call_stack;  // innermost first
    std::vector<FutureCallGraph> awaited_by;
};

namespace detail {
// limit as Python's: nullopt all entries, n > 0 the n innermost, n < 0 the -n outermost, 0 none.
FutureCallGraph capture_graph(PromiseBase* future, std::optional<int> limit);
std::optional<FutureCallGraph> capture_current_graph(std::coroutine_handle<> innermost, bool ours,
                                                     std::optional<int> limit);
void print_text(const std::string& text, std::FILE* file);

/// co_await capture_call_graph(): the running task's graph, its chain read from the awaiting frame.
struct [[nodiscard]] CurrentCallGraph {
    std::optional<int> limit;
    std::optional<FutureCallGraph> graph;
    bool await_ready() const noexcept { return false; }
    template <class P>
    bool await_suspend(std::coroutine_handle<P> h, unsigned line = __builtin_LINE()) {
        note_await(h, line);  // the awaiting frame's line: where this co_await is
        graph = capture_current_graph(h, std::is_base_of_v<PromiseBase, P>, limit);
        return false;  // it never suspends
    }
    std::optional<FutureCallGraph> await_resume() { return std::move(graph); }
};
}  // namespace detail

/// The call graph of a task or future. For the running task itself, see the co_await form.
template <class T>
FutureCallGraph capture_call_graph(const Future<T>& future, std::optional<int> limit = std::nullopt) {
    return detail::capture_graph(future.base(), limit);
}
/// `co_await capture_call_graph()`: the running task's graph, from the coroutine that awaits this
/// (nullopt outside a task).
inline detail::CurrentCallGraph capture_call_graph(std::optional<int> limit = std::nullopt) {
    return detail::CurrentCallGraph{limit, std::nullopt};
}

/// The text print_call_graph writes (no final newline).
std::string format_call_graph(const FutureCallGraph& graph);
template <class T>
std::string format_call_graph(const Future<T>& future, std::optional<int> limit = std::nullopt) {
    return format_call_graph(capture_call_graph(future, limit));
}

/// Writes the call graph of a task or future, with a final newline, to file (stdout by default).
template <class T>
void print_call_graph(const Future<T>& future, std::FILE* file = nullptr,
                      std::optional<int> limit = std::nullopt) {
    detail::print_text(format_call_graph(future, limit) + "\n", file);
}

namespace detail {
struct [[nodiscard]] PrintCurrentCallGraph : CurrentCallGraph {
    std::FILE* file;
    void await_resume() {
        if (graph) print_text(format_call_graph(*graph) + "\n", file);
    }
};
}  // namespace detail

/// `co_await print_call_graph()`: the running task's graph (nothing outside a task).
inline detail::PrintCurrentCallGraph print_call_graph(std::FILE* file = nullptr,
                                                      std::optional<int> limit = std::nullopt) {
    return detail::PrintCurrentCallGraph{{limit, std::nullopt}, file};
}

}  // namespace asyncio
