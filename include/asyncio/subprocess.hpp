// Subprocesses, as asyncio's create_subprocess_exec / create_subprocess_shell and Process.
//
//   using asyncio::subprocess::PIPE;
//   asyncio::Process p = co_await asyncio::create_subprocess_exec(
//       "ls", "-l", "/tmp", asyncio::SubprocessOptions{.stdout = PIPE});
//   while (auto line = co_await p.stdout->anext()) std::cout << *line;
//   int status = co_await p.wait();                 // 0, or -SIGNAL if a signal killed it
//
//   Process q = co_await asyncio::create_subprocess_shell("sort | uniq -c", {.stdin = PIPE, .stdout = PIPE});
//   auto [out, err] = co_await q.communicate(text);  // feed stdin, read both, wait: no deadlock
//
// Arguments, as Python's `create_subprocess_exec(program, *args, stdin=..., ...)`: after the
// program, any number of strings (anything convertible to std::string_view: one argument each)
// and ranges of strings (std::vector<std::string>: one argument per element), and at most one
// SubprocessOptions. Everything is copied when the call is made (the returned Coroutine owns
// it), so temporaries are fine even with create_task. (Not a braced list of arguments: GCC 12
// rejects a braced list of strings inside a co_await expression. SubprocessOptions is trivially
// copyable on purpose: GCC 12 bitwise-copies an aggregate temporary with a std::string or
// std::vector member brace-initialized inside a co_await expression; views are safe.)
//
// Spawning. posix_spawn (vfork-like: no copy of a large parent's memory), the program looked up
// in PATH when it has no '/'. The child gets an empty signal mask and the default disposition of
// SIGPIPE and SIGXFSZ (as Python's restore_signals); only fds 0, 1, 2 and `pass_fds` stay open
// in it (Python's close_fds=True). A program that cannot be run (missing, not executable, a bad
// cwd) raises std::system_error with the errno (ENOENT, EACCES, ...) from create_subprocess_*,
// like Python's FileNotFoundError/PermissionError, never as an exit status of 127.
//
// Standard streams: each of `stdin`, `stdout`, `stderr` is std::nullopt (inherit ours, Python's
// None), subprocess::PIPE (a pipe: Process::stdin is then a StreamWriter, stdout/stderr
// StreamReaders, with the usual limits and flow control, streams.hpp), subprocess::DEVNULL,
// subprocess::STDOUT (stderr only: to wherever stdout goes), or an fd of yours (dup'ed into the
// child; yours stays open).
//
// Watching. The child is watched through a pidfd on the loop that spawned it (no SIGCHLD handler
// is taken from the program; a loop on any thread works). Its exit is noticed while that loop
// runs: returncode() is set and wait() returns. Unlike CPython 3.12+, wait() does not also wait
// for the pipes to reach EOF (our pipe readers read on demand, not ahead); read them before or
// use communicate(). As in Python, wait() with stdout=PIPE deadlocks if the child writes more than
// a pipe holds (64 KiB) and nobody reads it: use communicate().
//
// Lifetime. A Process is a move-only handle. If it is destroyed while the child still runs, the
// child is killed (SIGKILL, as asyncio's transport close() does) and reaped: no zombie is left,
// whether the loop is still running (it reaps it) or already closed (the handle reaps it, which
// is quick after SIGKILL). Signals go through the pidfd, so a signal never reaches a process
// that reused the pid; after the child was reaped, send_signal/terminate/kill do nothing (as
// Popen.send_signal). Loop thread only.
#pragma once

#include <cstddef>
#include <iterator>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "asyncio/coroutine.hpp"
#include "asyncio/streams.hpp"

namespace asyncio {

namespace subprocess {
/// Python's subprocess.PIPE, STDOUT, DEVNULL (same values).
inline constexpr int PIPE = -1;
inline constexpr int STDOUT = -2;
inline constexpr int DEVNULL = -3;
}  // namespace subprocess

/// The keyword arguments of create_subprocess_exec/_shell (views: copied at the call).
struct SubprocessOptions {
    std::optional<int> stdin = std::nullopt;   // nullopt: inherit; PIPE, DEVNULL, or an fd
    std::optional<int> stdout = std::nullopt;  // nullopt: inherit; PIPE, DEVNULL, or an fd
    std::optional<int> stderr = std::nullopt;  // nullopt: inherit; PIPE, DEVNULL, STDOUT, or an fd
    std::size_t limit = kDefaultStreamLimit;   // of the stdout/stderr readers
    std::string_view cwd = {};                 // the child's working directory; empty: ours
    /// The child's whole environment as "NAME=value" entries (Python's env=); nullopt: ours.
    std::optional<std::span<const std::string>> env = std::nullopt;
    bool start_new_session = false;   // setsid() in the child
    std::span<const int> pass_fds = {};  // fds kept open in the child, at the same numbers
};
static_assert(std::is_trivially_copyable_v<SubprocessOptions>, "see the top of the file (GCC 12)");

class Process;

namespace detail {
class ProcessState;

/// What a spawn needs, owned.
struct SpawnRequest {
    std::vector<std::string> argv;
    bool search_path = false;
    SubprocessOptions options;  // its views point into the members below
    std::string cwd;
    std::vector<std::string> env;
    std::vector<int> pass_fds;

    SpawnRequest() = default;
    SpawnRequest(SpawnRequest&&) = delete;  // the views would dangle: held by pointer
    void add(std::string_view arg) { argv.emplace_back(arg); }
    template <class R>
        requires(!std::is_convertible_v<const R&, std::string_view> &&
                 std::is_convertible_v<decltype(*std::begin(std::declval<const R&>())), std::string_view>)
    void add(const R& args) {
        for (const auto& a : args) argv.emplace_back(std::string_view(a));
    }
    void add(const SubprocessOptions& o);
};

Coroutine<Process> spawn_process(std::unique_ptr<SpawnRequest> request);
}  // namespace detail

class Process {
public:
    /// A moved-from Process is empty: no child, no pipes (pid() -1).
    Process(Process&& o) noexcept;
    Process& operator=(Process&& o) noexcept;
    Process(const Process&) = delete;
    Process& operator=(const Process&) = delete;
    /// Kills (SIGKILL) and reaps a child that still runs.
    ~Process();

    int pid() const noexcept;
    /// The exit status once the loop has noticed the exit: the exit code, or -N if signal N
    /// killed it (Python's returncode); nullopt while it runs.
    std::optional<int> returncode() const noexcept;

    /// Waits until the child has exited; returns returncode(). Cancel-safe (cancelling the wait
    /// does not touch the child).
    Coroutine<int> wait();
    /// Writes input to stdin (if given) and closes it, reads stdout and stderr to EOF (those
    /// that are PIPE; "" for the others), then waits for the exit: Python's communicate(). A
    /// child that exits without reading its input is not an error (EPIPE is ignored, as Python).
    Coroutine<std::pair<std::string, std::string>> communicate(std::optional<std::string> input = std::nullopt);

    /// Sends signal sig to the child (nothing once it was reaped).
    void send_signal(int sig);
    void terminate();  // SIGTERM
    void kill();       // SIGKILL

    /// The pipes, when PIPE was asked for (else nullopt).
    std::optional<StreamWriter> stdin;
    std::optional<StreamReader> stdout;
    std::optional<StreamReader> stderr;

    /// (create_subprocess_exec makes them.)
    explicit Process(std::shared_ptr<detail::ProcessState> state) noexcept;

private:
    void release() noexcept;
    std::shared_ptr<detail::ProcessState> state_;
};

/// Runs program with the arguments that follow (argv[0] = program; looked up in PATH when it has
/// no '/'): strings, ranges of strings, and at most one SubprocessOptions (see the top).
template <class... Args>
Coroutine<Process> create_subprocess_exec(std::string_view program, const Args&... args) {
    static_assert((static_cast<int>(std::is_same_v<Args, SubprocessOptions>) + ... + 0) <= 1,
                  "at most one SubprocessOptions");
    auto r = std::make_unique<detail::SpawnRequest>();
    r->add(program);
    (r->add(args), ...);
    r->search_path = program.find('/') == std::string_view::npos;
    return detail::spawn_process(std::move(r));
}

/// Runs cmd with /bin/sh -c.
Coroutine<Process> create_subprocess_shell(std::string_view cmd, SubprocessOptions options = {});

}  // namespace asyncio
