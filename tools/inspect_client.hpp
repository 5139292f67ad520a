// The asyncio-inspect tool's client: fetches a process's snapshot over its inspect socket
// (src/inspect.cpp, src/inspect_protocol.hpp) and prints it as `python -m asyncio ps/pstree` do.
// A library of its own so that tests/inspect_test.cpp can run the tool's code in process.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <iosfwd>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace asyncio::inspect_tool {

struct Frame {
    std::string function;
    std::string file;
    unsigned line = 0;
};

struct Task {
    std::uint64_t id = 0;
    std::string name;
    bool is_task = true;
    std::vector<Frame> stack;              // innermost first
    std::vector<std::uint64_t> awaited_by;  // the tasks that await it directly
};

struct Loop {
    long tid = 0;
    bool answered = false;     // false: it did not answer within silent_ms
    long silent_ms = 0;
    std::int64_t stall_ns = 0;  // how long building the snapshot held the loop
    std::vector<Task> tasks;
};

struct Snapshot {
    long pid = 0;
    std::vector<Loop> loops;
};

/// Why a process could not be inspected; what() is the message the tool prints.
class InspectError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

/// The await graph has a cycle: no tree. what() holds Python's report (several lines).
class CycleError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

/// Asks process pid for its snapshot; throws InspectError (no such process, no inspect socket,
/// permission denied, a different library version, no answer within timeout).
Snapshot fetch(pid_t pid, std::chrono::milliseconds timeout);
/// The body of a reply (after its first line); throws InspectError if it is malformed.
Snapshot parse(std::string_view body);

/// `ps`: Python's table (tid, task id, task name, coroutine stack, awaiter chain, awaiter name,
/// awaiter id), one row per task and awaiter.
std::string format_table(const Snapshot& s);
/// `pstree`: Python's tree of "(T) name" task nodes with coroutine frames between them; throws
/// CycleError.
std::string format_tree(const Snapshot& s);
/// One line per loop that did not answer ("loop on thread TID did not answer within N ms").
std::string format_silent_loops(const Snapshot& s);

/// The tool's main: `asyncio-inspect ps|pstree [--timing] PID`. Returns the exit status.
int run(int argc, const char* const* argv, std::ostream& out, std::ostream& err);

}  // namespace asyncio::inspect_tool
