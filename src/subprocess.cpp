// create_subprocess_exec / _shell and Process (subprocess.hpp): posix_spawn, pipes under streams
// (pipes.hpp), the child watched through a pidfd with the loop's reader watcher.
#include "asyncio/subprocess.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <system_error>
#include <utility>

#include "asyncio/event_loop.hpp"
#include "asyncio/exceptions.hpp"
#include "asyncio/gather.hpp"
#include "asyncio/pipes.hpp"
#include "stream_core.hpp"

#ifndef P_PIDFD
#define P_PIDFD 3
#endif

extern char** environ;

namespace asyncio {

namespace detail {

namespace {

int pidfd_open(pid_t pid) noexcept { return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)); }

int pidfd_send_signal(int pidfd, int sig) noexcept {
    return static_cast<int>(::syscall(SYS_pidfd_send_signal, pidfd, sig, nullptr, 0));
}

}  // namespace

/// One child: its pid and pidfd, its status once reaped, the tasks waiting for it. Shared by the
/// Process handle, its wait()/communicate() coroutines and the loop's watcher of the pidfd
/// (which keeps it alive until the child is reaped or the loop closes).
class ProcessState {
public:
    ProcessState(EventLoop& loop, pid_t pid, int pidfd) noexcept
        : loop_(&loop), link_(loop.link()), pid_(pid), pidfd_(pidfd) {}
    ProcessState(const ProcessState&) = delete;
    ProcessState& operator=(const ProcessState&) = delete;
    ~ProcessState() {
        // The watcher is gone (reaped, or its loop closed). A child still running is killed
        // and reaped now: quick after SIGKILL, and no zombie is left behind.
        if (!returncode_) {
            pidfd_send_signal(pidfd_, SIGKILL);
            reap(/*block=*/true);
        }
        io_forget_fd(pidfd_, /*closing=*/true);
        ::close(pidfd_);
    }

    /// Starts watching (after construction: the watcher holds a reference to this).
    static void watch(const std::shared_ptr<ProcessState>& self) {
        ProcessState* s = self.get();
        s->loop_->add_reader(s->pidfd_, [ref = self] { ref->on_readable(); });
    }

    /// Collects the exit status if the child has exited; true once it has been reaped.
    bool reap(bool block) noexcept {
        if (returncode_) return true;
        siginfo_t si{};
        for (;;) {
            if (::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(pidfd_), &si,
                         WEXITED | (block ? 0 : WNOHANG)) == 0)
                break;
            if (errno != EINTR) {
                // ECHILD: reaped by someone else (a SIGCHLD handler of the program's); the status
                // is lost. Python reports 255 in that case.
                returncode_ = 255;
                return true;
            }
        }
        if (si.si_pid == 0) return false;  // still running (WNOHANG)
        returncode_ = si.si_code == CLD_EXITED ? si.si_status : -si.si_status;
        return true;
    }

    void on_readable() {
        if (!reap(false)) return;
        loop_->remove_reader(pidfd_);  // drops the watcher's reference (after this call returns)
        ListWait::wake_all(exit_waiters_);
    }

    void send_signal(int sig) {
        if (returncode_) return;  // reaped: the pid may be someone else's now
        if (pidfd_send_signal(pidfd_, sig) < 0 && errno != ESRCH)
            throw std::system_error(errno, std::generic_category(), "send_signal");
    }

    /// RuntimeError unless the running loop is the one watching the child (only that loop can
    /// notice the exit: a wait() anywhere else, or after that loop closed, would never end).
    void check_loop(const char* what) const {
        EventLoop& running = get_running_loop();
        EventLoop* owner;
        {
            std::lock_guard lock(link_->mutex);
            owner = link_->loop;
        }
        if (owner != &running) {
            throw RuntimeError(std::string(what) + ": the Process belongs to " +
                               (owner == nullptr ? "an event loop that is closed" : "a different event loop"));
        }
    }

    EventLoop* loop_;
    std::shared_ptr<LoopLink> link_;  // its loop pointer is nulled when the loop closes
    pid_t pid_;
    int pidfd_;
    std::optional<int> returncode_;
    CreationSite site_;  // debug mode: where it was started ("unclosed <Process ...>")
    WaitQueue exit_waiters_;
};

namespace {

/// posix_spawn's attributes and file actions, freed on every path.
struct SpawnSetup {
    posix_spawnattr_t attr;
    posix_spawn_file_actions_t actions;
    SpawnSetup() {
        if (const int e = ::posix_spawnattr_init(&attr); e != 0) throw std::system_error(e, std::generic_category(), "posix_spawnattr_init");
        if (const int e = ::posix_spawn_file_actions_init(&actions); e != 0) {
            ::posix_spawnattr_destroy(&attr);
            throw std::system_error(e, std::generic_category(), "posix_spawn_file_actions_init");
        }
    }
    ~SpawnSetup() {
        ::posix_spawn_file_actions_destroy(&actions);
        ::posix_spawnattr_destroy(&attr);
    }
    SpawnSetup(const SpawnSetup&) = delete;
    SpawnSetup& operator=(const SpawnSetup&) = delete;
};

void check(int err, const char* what) {
    if (err != 0) throw std::system_error(err, std::generic_category(), what);
}

/// An fd closed at scope exit unless released.
struct OwnedFd {
    int fd = -1;
    OwnedFd() = default;
    explicit OwnedFd(int f) : fd(f) {}
    OwnedFd(const OwnedFd&) = delete;
    OwnedFd& operator=(const OwnedFd&) = delete;
    ~OwnedFd() {
        if (fd >= 0) ::close(fd);
    }
    int release() noexcept { return std::exchange(fd, -1); }
};

void make_pipe(OwnedFd& read_end, OwnedFd& write_end) {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) throw std::system_error(errno, std::generic_category(), "pipe2");
    read_end.fd = fds[0];
    write_end.fd = fds[1];
}

/// The open fds of this process above 2, from /proc/self/fd (for closing the ones the child
/// must not inherit when pass_fds rules out closefrom).
std::vector<int> open_fds_above_stdio() {
    std::vector<int> fds;
    DIR* d = ::opendir("/proc/self/fd");
    if (d == nullptr) return fds;
    const int own = ::dirfd(d);
    while (dirent* e = ::readdir(d)) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
        const int fd = std::atoi(e->d_name);
        if (fd > 2 && fd != own) fds.push_back(fd);
    }
    ::closedir(d);
    return fds;
}

Process spawn(const SpawnRequest& r) {
    const std::vector<std::string>& argv = r.argv;
    const SubprocessOptions& o = r.options;
    EventLoop& loop = get_running_loop();
    if (o.limit == 0) throw ValueError("Limit cannot be <= 0");
    if (o.stdin && *o.stdin == subprocess::STDOUT) throw ValueError("STDOUT can only be used for stderr");
    if (o.stdout && *o.stdout == subprocess::STDOUT) throw ValueError("STDOUT can only be used for stderr");

    SpawnSetup s;
    // The child's end of each pipe, closed in the parent once the child has it; ours, handed to
    // a stream.
    OwnedFd child_in, our_in, our_out, child_out, our_err, child_err;
    // The dup2s run in order 0, 1, 2 in the child: a source among 0..2 other than its own target
    // would be overwritten by an earlier one (stdout=2 with stderr=1 gave both the same pipe; a
    // pipe end that got a low number because the parent's stdin was closed, likewise). Such a
    // source is first copied above 2 (Python's _posixsubprocess does the same).
    OwnedFd high_copies[3];
    auto source = [&](int fd, int target) {
        if (fd > 2 || fd == target) return fd;
        OwnedFd& copy = high_copies[target];
        copy.fd = ::fcntl(fd, F_DUPFD_CLOEXEC, 3);
        if (copy.fd < 0) throw std::system_error(errno, std::generic_category(), "subprocess stdio fd");
        return copy.fd;
    };
    auto stdio = [&](std::optional<int> spec, int target, OwnedFd& child_end, OwnedFd& our_end) {
        if (!spec) return;  // inherit
        const int v = *spec;
        if (v == subprocess::PIPE) {
            if (target == 0)
                make_pipe(child_end, our_end);
            else
                make_pipe(our_end, child_end);
            check(::posix_spawn_file_actions_adddup2(&s.actions, source(child_end.fd, target), target),
                  "posix_spawn_file_actions_adddup2");
        } else if (v == subprocess::DEVNULL) {
            check(::posix_spawn_file_actions_addopen(&s.actions, target, "/dev/null", target == 0 ? O_RDONLY : O_WRONLY, 0),
                  "posix_spawn_file_actions_addopen");
        } else if (v == subprocess::STDOUT) {
            check(::posix_spawn_file_actions_adddup2(&s.actions, 1, target), "posix_spawn_file_actions_adddup2");
        } else if (v >= 0) {
            if (::fcntl(v, F_GETFD) < 0) throw std::system_error(errno, std::generic_category(), "subprocess stdio fd");
            check(::posix_spawn_file_actions_adddup2(&s.actions, source(v, target), target),
                  "posix_spawn_file_actions_adddup2");
        } else {
            throw ValueError("invalid stdio value " + std::to_string(v));
        }
    };
    stdio(o.stdin, 0, child_in, our_in);
    stdio(o.stdout, 1, child_out, our_out);
    stdio(o.stderr, 2, child_err, our_err);

    // Only 0, 1, 2 and pass_fds reach the program (Python's close_fds=True). The library's own
    // fds are all close-on-exec; these actions also close a program's fds that are not.
    for (int fd : r.pass_fds) {
        if (fd < 0 || ::fcntl(fd, F_GETFD) < 0) throw std::system_error(EBADF, std::generic_category(), "pass_fds");
        // dup2 onto itself clears FD_CLOEXEC in the child (glibc >= 2.29, POSIX 2024).
        if (fd > 2) check(::posix_spawn_file_actions_adddup2(&s.actions, fd, fd), "posix_spawn_file_actions_adddup2");
    }
    if (r.pass_fds.empty()) {
        check(::posix_spawn_file_actions_addclosefrom_np(&s.actions, 3), "posix_spawn_file_actions_addclosefrom_np");
    } else {
        for (int fd : open_fds_above_stdio()) {
            if (std::find(r.pass_fds.begin(), r.pass_fds.end(), fd) != r.pass_fds.end()) continue;
            const int flags = ::fcntl(fd, F_GETFD);
            if (flags >= 0 && (flags & FD_CLOEXEC) == 0)
                check(::posix_spawn_file_actions_addclose(&s.actions, fd), "posix_spawn_file_actions_addclose");
        }
    }
    if (!r.cwd.empty()) check(::posix_spawn_file_actions_addchdir_np(&s.actions, r.cwd.c_str()), "posix_spawn_file_actions_addchdir_np");

    // A clean signal state: the loops' threads may block signals they handle (signalfd), and
    // the child must not inherit that; SIGPIPE and SIGXFSZ back to default (Python's
    // restore_signals).
    sigset_t empty;
    sigemptyset(&empty);
    sigset_t defaults;
    sigemptyset(&defaults);
    sigaddset(&defaults, SIGPIPE);
    sigaddset(&defaults, SIGXFSZ);
    short flags = POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF;
    if (o.start_new_session) flags |= POSIX_SPAWN_SETSID;
    check(::posix_spawnattr_setsigmask(&s.attr, &empty), "posix_spawnattr_setsigmask");
    check(::posix_spawnattr_setsigdefault(&s.attr, &defaults), "posix_spawnattr_setsigdefault");
    check(::posix_spawnattr_setflags(&s.attr, flags), "posix_spawnattr_setflags");

    std::vector<char*> args;
    args.reserve(argv.size() + 1);
    for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    std::vector<char*> envp;
    if (o.env) {
        envp.reserve(r.env.size() + 1);
        for (const std::string& e : r.env) envp.push_back(const_cast<char*>(e.c_str()));
        envp.push_back(nullptr);
    }
    char* const* env = o.env ? envp.data() : environ;

    pid_t pid = -1;
    const int err = r.search_path ? ::posix_spawnp(&pid, args[0], &s.actions, &s.attr, args.data(), env)
                                : ::posix_spawn(&pid, args[0], &s.actions, &s.attr, args.data(), env);
    if (err != 0) throw std::system_error(err, std::generic_category(), argv[0]);
    const int pidfd = pidfd_open(pid);
    if (pidfd < 0) {
        const int e = errno;
        ::kill(pid, SIGKILL);
        int status;
        while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
        }
        throw std::system_error(e, std::generic_category(), "pidfd_open");
    }
    auto state = std::make_shared<ProcessState>(loop, pid, pidfd);  // owns the child from here on
    Process p(state);
    ProcessState::watch(state);
    // The parent's copies of the child's ends: closed (at scope exit), so EOF comes when the child
    // closes its own.
    if (our_in.fd >= 0) {
        p.stdin.emplace(connect_write_pipe(our_in.fd));
        our_in.release();
    }
    if (our_out.fd >= 0) {
        p.stdout.emplace(connect_read_pipe(our_out.fd, o.limit));
        our_out.release();
    }
    if (our_err.fd >= 0) {
        p.stderr.emplace(connect_read_pipe(our_err.fd, o.limit));
        our_err.release();
    }
    return p;
}

Coroutine<int> wait_impl(std::shared_ptr<ProcessState> s) {
    if (!s->returncode_) s->check_loop("Process::wait()");
    while (!s->returncode_) co_await ListWait(s->exit_waiters_, "Process::wait()");
    co_return *s->returncode_;
}

Coroutine<> feed_stdin(StreamWriter w, std::optional<std::string> input) {
    try {
        if (input) w.write(std::move(*input));  // moved, not copied: it may be large
        co_await w.drain();
    } catch (const std::system_error& e) {
        // Python's communicate() ignores BrokenPipeError and ConnectionResetError: the child
        // exited (or closed stdin) without reading everything.
        if (e.code().value() != EPIPE && e.code().value() != ECONNRESET) throw;
    }
    w.close();
}

Coroutine<std::string> read_to_eof(StreamReader r) { co_return co_await r.read(-1); }

Coroutine<std::string> nothing() { co_return std::string(); }

Coroutine<> nothing_void() { co_return; }

Coroutine<std::pair<std::string, std::string>> communicate_impl(std::shared_ptr<ProcessState> s,
                                                                std::optional<StreamWriter> in,
                                                                std::optional<StreamReader> out,
                                                                std::optional<StreamReader> err,
                                                                std::optional<std::string> input) {
    // (Named first: GCC 12 mishandles a conditional expression that makes a coroutine inside a
    // co_await expression.)
    Coroutine<> feed = in ? feed_stdin(*in, std::move(input)) : nothing_void();
    Coroutine<std::string> read_out = out ? read_to_eof(*out) : nothing();
    Coroutine<std::string> read_err = err ? read_to_eof(*err) : nothing();
    auto [fed, o, e] = co_await gather(std::move(feed), std::move(read_out), std::move(read_err));
    (void)fed;
    co_await wait_impl(s);
    co_return std::pair<std::string, std::string>(std::move(o), std::move(e));
}

}  // namespace

void SpawnRequest::add(const SubprocessOptions& o) {
    options = o;
    cwd.assign(o.cwd);
    if (o.env) env.assign(o.env->begin(), o.env->end());
    pass_fds.assign(o.pass_fds.begin(), o.pass_fds.end());
    // The views now point at what this request owns.
    options.cwd = cwd;
    if (o.env) options.env = std::span<const std::string>(env);
    options.pass_fds = pass_fds;
}

Coroutine<Process> spawn_process(std::unique_ptr<SpawnRequest> request) { co_return spawn(*request); }

}  // namespace detail

Process::Process(std::shared_ptr<detail::ProcessState> state) noexcept : state_(std::move(state)) {}

Process::Process(Process&& o) noexcept
    : stdin(std::exchange(o.stdin, std::nullopt)),
      stdout(std::exchange(o.stdout, std::nullopt)),
      stderr(std::exchange(o.stderr, std::nullopt)),
      state_(std::move(o.state_)) {}

Process& Process::operator=(Process&& o) noexcept {
    if (this != &o) {
        release();
        state_ = std::move(o.state_);
        // exchange, not move: a moved-from optional stays engaged (holding an empty stream).
        stdin = std::exchange(o.stdin, std::nullopt);
        stdout = std::exchange(o.stdout, std::nullopt);
        stderr = std::exchange(o.stderr, std::nullopt);
    }
    return *this;
}

Process::~Process() { release(); }

void Process::release() noexcept {
    // As asyncio's subprocess transport close(): a child still running is killed. Reaping is
    // the watcher's (or, once the loop is gone, the state's destructor's).
    if (state_ && !state_->returncode_) {
        if (state_->site_.recorded()) [[unlikely]]  // Python's "Close running child process: kill"
            state_->site_.report_unclosed("<Process pid=" + std::to_string(state_->pid_) +
                                          " running>: the child is killed");
        detail::pidfd_send_signal(state_->pidfd_, SIGKILL);
    }
    state_.reset();
}

int Process::pid() const noexcept { return state_ ? state_->pid_ : -1; }

std::optional<int> Process::returncode() const noexcept {
    return state_ ? state_->returncode_ : std::nullopt;
}

Coroutine<int> Process::wait() {
    if (!state_) throw RuntimeError("wait() on an empty Process");
    return detail::wait_impl(state_);
}

Coroutine<std::pair<std::string, std::string>> Process::communicate(std::optional<std::string> input) {
    if (!state_) throw RuntimeError("communicate() on an empty Process");
    // (asyncio ignores the input then: see "Differences from CPython")
    if (input && !stdin) throw ValueError("communicate() with input needs stdin=PIPE");
    return detail::communicate_impl(state_, stdin, stdout, stderr, std::move(input));
}

void Process::send_signal(int sig) {
    if (!state_) throw RuntimeError("send_signal() on an empty Process");
    state_->send_signal(sig);
}

void Process::terminate() { send_signal(SIGTERM); }
void Process::kill() { send_signal(SIGKILL); }

Coroutine<Process> create_subprocess_shell(std::string_view cmd, SubprocessOptions options) {
    auto r = std::make_unique<detail::SpawnRequest>();
    r->add("/bin/sh");
    r->add("-c");
    r->add(cmd);
    r->add(options);
    return detail::spawn_process(std::move(r));
}

}  // namespace asyncio
