// create_subprocess_exec / _shell and Process with real children: pipes, exit codes, signals,
// communicate with large data, errors at creation, fd hygiene, the child's lifetime against its
// handle and its loop, and no zombie or fd left after any test.
#include "asyncio/subprocess.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <string>
#include <system_error>
#include <thread>
#include <functional>
#include <utility>
#include <vector>

#include "asyncio/coroutine.hpp"
#include "asyncio/exceptions.hpp"
#include "asyncio/gather.hpp"
#include "asyncio/run.hpp"
#include "asyncio/sleep.hpp"
#include "asyncio/task.hpp"
#include "asyncio/timeout.hpp"
#include "stream_test_support.hpp"

namespace {

using asyncio::Coroutine;
using asyncio::Process;
using Options = asyncio::SubprocessOptions;
using asyncio::subprocess::DEVNULL;
using asyncio::subprocess::PIPE;
using asyncio::subprocess::STDOUT;
using stream_test::first_difference;
using stream_test::pattern;
using namespace std::chrono_literals;

/// Leak checks plus: no child of ours is left, reaped or not (a zombie is a leak too).
class ASubprocess : public asyncio_test::LeakChecked {
protected:
    void TearDown() override {
        LeakChecked::TearDown();
        errno = 0;
        const pid_t r = ::waitpid(-1, nullptr, WNOHANG);
        EXPECT_TRUE(r == -1 && errno == ECHILD) << "a child process was left behind (waitpid gave " << r << ")";
    }
};

/// FAIL() for the body of a Coroutine<void>.
#define CO_FAIL(msg)            \
    do {                        \
        ADD_FAILURE() << (msg); \
        co_return;              \
    } while (false)

TEST_F(ASubprocess, ReadsStdoutAndStderrAndTheExitCode) {
    asyncio::run([]() -> Coroutine<> {
        Process p = co_await asyncio::create_subprocess_exec(
            "sh", "-c", "echo hello; echo world; echo oops >&2; exit 3", Options{.stdout = PIPE, .stderr = PIPE});
        CO_ASSERT(p.pid() > 0);
        CO_ASSERT(!p.stdin.has_value());
        CO_ASSERT(co_await p.stdout->readline() == "hello\n");
        CO_ASSERT(co_await p.stdout->readline() == "world\n");
        CO_ASSERT(co_await p.stdout->readline() == "");
        CO_ASSERT(co_await p.stderr->read(-1) == "oops\n");
        CO_ASSERT(co_await p.wait() == 3);
        CO_ASSERT(p.returncode() == 3);
        CO_ASSERT(co_await p.wait() == 3);  // again: at once
    }());
}

TEST_F(ASubprocess, RegressionAMovedFromProcessIsEmptyWithNoPipes) {
    // Its optionals were moved, not reset: a moved-from Process still had stdin/stdout "set"
    // (holding empty streams whose every call raised).
    asyncio::run([]() -> Coroutine<> {
        Process p = co_await asyncio::create_subprocess_exec("cat", Options{.stdin = PIPE, .stdout = PIPE});
        Process q = std::move(p);
        EXPECT_EQ(p.pid(), -1);  // NOLINT(bugprone-use-after-move): the point of the test
        EXPECT_FALSE(p.stdin.has_value());
        EXPECT_FALSE(p.stdout.has_value());
        EXPECT_FALSE(p.stderr.has_value());
        Process r = co_await asyncio::create_subprocess_exec("true");
        r = std::move(q);  // r's own child is released (killed if running, reaped by the watcher)
        EXPECT_FALSE(q.stdin.has_value());  // NOLINT(bugprone-use-after-move)
        EXPECT_FALSE(q.stdout.has_value());
        CO_ASSERT(r.stdin.has_value() && r.stdout.has_value());
        auto [out, err] = co_await r.communicate(std::string("moved\n"));
        EXPECT_EQ(out, "moved\n");
        EXPECT_EQ(co_await r.wait(), 0);
    }());
}

TEST_F(ASubprocess, CommunicateMovesLargeDataThroughCatBothWaysWithoutDeadlock) {
    // Input and output far larger than a pipe, at once: communicate feeds and reads together.
    const std::size_t size = stream_test::kSanitized ? (16u << 20) : (100u << 20);
    const std::string input = pattern(size, 11);
    std::pair<std::string, std::string> got;
    int status = -1;
    asyncio::run([](const std::string& input, std::pair<std::string, std::string>& got, int& status) -> Coroutine<> {
        Process p = co_await asyncio::create_subprocess_exec("cat", Options{.stdin = PIPE, .stdout = PIPE, .stderr = PIPE});
        got = co_await p.communicate(input);
        status = *p.returncode();
    }(input, got, status));
    EXPECT_EQ(status, 0);
    EXPECT_EQ(got.first.size(), input.size());
    EXPECT_EQ(first_difference(got.first, input), -1);
    EXPECT_EQ(got.second, "");
}

TEST_F(ASubprocess, AProgramThatCannotRunRaisesAtCreationWithItsErrno) {
    asyncio_test::TempDir dir;
    const std::string plain = dir.file("not_executable");
    const int fd = ::open(plain.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    ASSERT_GE(fd, 0);
    ::close(fd);
    asyncio::run([](const std::string& plain) -> Coroutine<> {
        try {
            (void)co_await asyncio::create_subprocess_exec("no-such-program-here", Options{.stdout = PIPE});
            CO_FAIL("a missing program was started");
        } catch (const std::system_error& e) {
            CO_ASSERT(e.code().value() == ENOENT);
            CO_ASSERT(std::string(e.what()).find("no-such-program-here") != std::string::npos);
        }
        try {
            (void)co_await asyncio::create_subprocess_exec(plain, Options{.stdin = PIPE});
            CO_FAIL("a file without execute permission was started");
        } catch (const std::system_error& e) {
            CO_ASSERT(e.code().value() == EACCES);
        }
        try {
            (void)co_await asyncio::create_subprocess_exec("true", Options{.cwd = "/no/such/directory"});
            CO_FAIL("a missing cwd was accepted");
        } catch (const std::system_error& e) {
            CO_ASSERT(e.code().value() == ENOENT);
        }
        EXPECT_THROW((void)co_await asyncio::create_subprocess_exec("true", Options{.stdout = STDOUT}), asyncio::ValueError);
        EXPECT_THROW((void)co_await asyncio::create_subprocess_exec("true", Options{.stdin = -7}), asyncio::ValueError);
        const int bad_fd[] = {987};
        EXPECT_THROW((void)co_await asyncio::create_subprocess_exec("true", Options{.pass_fds = bad_fd}), std::system_error);
    }(plain));
}

TEST_F(ASubprocess, AChildKilledByASignalHasMinusTheSignalAsReturncode) {
    asyncio::run([]() -> Coroutine<> {
        Process a = co_await asyncio::create_subprocess_exec("sleep", "100");
        Process b = co_await asyncio::create_subprocess_exec("sleep", "100");
        CO_ASSERT(!a.returncode());
        a.kill();
        b.terminate();
        CO_ASSERT(co_await a.wait() == -SIGKILL);
        CO_ASSERT(co_await b.wait() == -SIGTERM);
        a.kill();  // reaped: nothing happens (the pid may be someone else's)
        b.send_signal(SIGTERM);
        CO_ASSERT(a.returncode() == -SIGKILL);
    }());
}

TEST_F(ASubprocess, AChildThatIgnoresSigtermIsStoppedBySigkill) {
    asyncio::run([]() -> Coroutine<> {
        Process p = co_await asyncio::create_subprocess_exec(
            "sh", "-c", "trap '' TERM; echo ready; while :; do sleep 1; done", Options{.stdout = PIPE});
        CO_ASSERT(co_await p.stdout->readline() == "ready\n");
        p.terminate();
        bool timed_out = false;
        try {
            (void)co_await asyncio::wait_for(p.wait(), 300ms);  // it ignores SIGTERM: no exit
        } catch (const asyncio::TimeoutError&) {
            timed_out = true;
        }
        CO_ASSERT(timed_out);
        CO_ASSERT(!p.returncode());  // the cancelled wait did not touch the child
        p.kill();
        CO_ASSERT(co_await p.wait() == -SIGKILL);
    }());
}

TEST_F(ASubprocess, AChildThatClosesStdinEarlyGivesEpipeNeverSigpipe) {
    asyncio::run([]() -> Coroutine<> {
        // head reads 10 bytes and exits: the rest of our 8 MiB meets a pipe without a reader.
        Process p = co_await asyncio::create_subprocess_exec("head", "-c", "10", Options{.stdin = PIPE, .stdout = PIPE});
        auto [out, err] = co_await p.communicate(pattern(8 << 20, 2));  // EPIPE ignored, as Python
        CO_ASSERT(out.size() == 10);
        CO_ASSERT(err.empty());
        CO_ASSERT(p.returncode() == 0);

        const std::vector<std::string> args{"-c", "10"};  // a range of arguments
        Process q = co_await asyncio::create_subprocess_exec("head", args, Options{.stdin = PIPE, .stdout = DEVNULL});
        bool epipe = false;
        try {
            for (int i = 0; i < 1000; ++i) {
                q.stdin->write(pattern(1 << 16, 3));
                co_await q.stdin->drain();
            }
        } catch (const std::system_error& e) {
            epipe = e.code().value() == EPIPE;
        }
        CO_ASSERT(epipe);
        CO_ASSERT(co_await q.wait() == 0);
    }());
}

TEST_F(ASubprocess, ShellWithEnvironmentCwdDevnullAndStderrToStdout) {
    asyncio::run([]() -> Coroutine<> {
        const std::vector<std::string> env{"GREETING=hi there"};
        Process p = co_await asyncio::create_subprocess_shell(
            "echo \"$GREETING\"; pwd; echo to-stderr >&2; cat",
            {.stdin = DEVNULL, .stdout = PIPE, .stderr = STDOUT, .cwd = "/", .env = env});
        auto [out, err] = co_await p.communicate();
        CO_ASSERT(out == "hi there\n/\nto-stderr\n");  // cat read /dev/null: nothing
        CO_ASSERT(err.empty());
        CO_ASSERT(p.returncode() == 0);
        Process q = co_await asyncio::create_subprocess_shell("exit 42");
        CO_ASSERT(co_await q.wait() == 42);
    }());
}

TEST_F(ASubprocess, RegressionStdioFdsAmongZeroToTwoAreNotOverwrittenByEachOther) {
    // stdout=2 with stderr=1 (a swap): the child's dup2(2, 1) ran before dup2(1, 2), so both its
    // stdout and stderr went to the parent's fd 2. Here the parent's fds 1 and 2 are two pipes
    // for the duration of the spawn.
    int a[2], b[2];
    ASSERT_EQ(::pipe2(a, O_CLOEXEC), 0);
    ASSERT_EQ(::pipe2(b, O_CLOEXEC), 0);
    std::fflush(stdout);
    std::fflush(stderr);
    const int saved1 = ::fcntl(1, F_DUPFD_CLOEXEC, 3);
    const int saved2 = ::fcntl(2, F_DUPFD_CLOEXEC, 3);
    ASSERT_GE(saved1, 0);
    ASSERT_GE(saved2, 0);
    ::dup2(a[1], 1);
    ::dup2(b[1], 2);
    int code = -1;
    asyncio::run([](int& code) -> Coroutine<> {
        Process p = co_await asyncio::create_subprocess_shell("echo out; echo err >&2",
                                                              {.stdout = 2, .stderr = 1});
        code = co_await p.wait();
    }(code));
    ::dup2(saved1, 1);
    ::dup2(saved2, 2);
    ::close(saved1);
    ::close(saved2);
    ::close(a[1]);
    ::close(b[1]);
    auto drain = [](int fd) {
        std::string s;
        char buf[256];
        for (ssize_t n; (n = ::read(fd, buf, sizeof buf)) > 0;) s.append(buf, static_cast<std::size_t>(n));
        ::close(fd);
        return s;
    };
    const std::string on1 = drain(a[0]);
    const std::string on2 = drain(b[0]);
    EXPECT_EQ(code, 0);
    EXPECT_EQ(on1, "err\n");  // the child's stderr is the parent's fd 1
    EXPECT_EQ(on2, "out\n");  // the child's stdout is the parent's fd 2
}

TEST_F(ASubprocess, OnlyPassFdsAndTheStandardStreamsReachTheChild) {
    int keep[2];
    ASSERT_EQ(::pipe2(keep, O_CLOEXEC), 0);
    int inheritable[2];
    ASSERT_EQ(::pipe(inheritable), 0);  // not close-on-exec: Python's close_fds closes it anyway
    std::string out;
    asyncio::run([](int pass, int other, std::string& out) -> Coroutine<> {
        const std::string cmd = "echo passed >&" + std::to_string(pass) + "; test -e /proc/self/fd/" +
                                std::to_string(other) + " && echo leaked || echo closed";
        const int pass_fds[] = {pass};
        Process p = co_await asyncio::create_subprocess_shell(cmd, {.stdout = PIPE, .pass_fds = pass_fds});
        out = (co_await p.communicate()).first;
        // And without pass_fds (closefrom in the child):
        const std::string cmd2 = "test -e /proc/self/fd/" + std::to_string(other) + " && echo leaked || echo closed";
        Process q = co_await asyncio::create_subprocess_shell(cmd2, {.stdout = PIPE});
        out += (co_await q.communicate()).first;
    }(keep[1], inheritable[0], out));
    EXPECT_EQ(out, "closed\nclosed\n");
    char buf[16] = {};
    EXPECT_EQ(::read(keep[0], buf, sizeof buf), 7);
    EXPECT_EQ(std::string(buf, 7), "passed\n");
    for (int fd : {keep[0], keep[1], inheritable[0], inheritable[1]}) ::close(fd);
}

TEST_F(ASubprocess, ADroppedProcessKillsAndReapsItsChild) {
    asyncio::run([]() -> Coroutine<> {
        pid_t pid;
        {
            Process p = co_await asyncio::create_subprocess_exec("sleep", "100", Options{.stdout = PIPE});
            pid = p.pid();
        }  // killed here (as asyncio's transport close); the loop reaps it
        for (int i = 0; i < 2000; ++i) {
            errno = 0;
            if (::waitpid(pid, nullptr, WNOHANG) == -1 && errno == ECHILD) co_return;  // reaped
            co_await asyncio::sleep(1ms);
        }
        CO_FAIL("the dropped child was not reaped");
    }());
}

TEST_F(ASubprocess, AChildStillRunningWhenTheLoopClosesIsKilledAndReapedByItsHandle) {
    std::optional<Process> kept;
    asyncio::run([](std::optional<Process>& kept) -> Coroutine<> {
        kept.emplace(co_await asyncio::create_subprocess_exec("sleep", "100"));
    }(kept));
    // The loop is gone; the child still runs and nobody has reaped it.
    const pid_t pid = kept->pid();
    EXPECT_FALSE(kept->returncode().has_value());
    siginfo_t si{};
    EXPECT_EQ(::waitid(P_PID, static_cast<id_t>(pid), &si, WEXITED | WNOHANG | WNOWAIT), 0);
    EXPECT_EQ(si.si_pid, 0);  // still running (not even a zombie)
    // Its loop is gone: nothing could notice the exit, so wait() says so instead of hanging.
    asyncio::run([](Process& p) -> Coroutine<> {
        try {
            (void)co_await p.wait();
            ADD_FAILURE() << "wait() on a Process whose loop is closed returned";
        } catch (const asyncio::RuntimeError& e) {
            EXPECT_EQ(std::string(e.what()), "Process::wait(): the Process belongs to an event loop that is closed");
        }
    }(*kept));
    kept.reset();  // kills and reaps (quick after SIGKILL)
    errno = 0;
    EXPECT_EQ(::waitpid(pid, nullptr, WNOHANG), -1);
    EXPECT_EQ(errno, ECHILD);
}

TEST_F(ASubprocess, ACancelledWaitLeavesTheChildAlone) {
    asyncio::run(
        []() -> Coroutine<> {
            Process p = co_await asyncio::create_subprocess_exec("sh", "-c", "read x; exit 7", Options{.stdin = PIPE});
            asyncio::Task<int> w = asyncio::create_task(p.wait());
            co_await asyncio::sleep(0s);
            w.cancel();
            co_await asyncio::sleep(0s);
            CO_ASSERT(w.cancelled());
            CO_ASSERT(!p.returncode());
            p.stdin->write("go\n");
            CO_ASSERT(co_await p.wait() == 7);
        }(),
        asyncio_test::virtual_time());
}

TEST_F(ASubprocess, LoopsOnOtherThreadsRunChildrenToo) {
    // pidfds, not SIGCHLD: any thread's loop notices its own children, two at once here.
    int results[2] = {-1, -1};
    auto body = [](int code, int& out) {
        out = asyncio::run([](int code) -> Coroutine<int> {
            Process p = co_await asyncio::create_subprocess_exec(
                "sh", "-c", "read line; exit $line", Options{.stdin = PIPE});
            auto got = co_await p.communicate(std::to_string(code) + "\n");
            (void)got;
            co_return *p.returncode();
        }(code));
    };
    std::thread a(body, 11, std::ref(results[0]));
    std::thread b(body, 22, std::ref(results[1]));
    a.join();
    b.join();
    EXPECT_EQ(results[0], 11);
    EXPECT_EQ(results[1], 22);
}

TEST_F(ASubprocess, ManyConcurrentChildren) {
    const int n = stream_test::kSanitized ? 200 : 1000;
    int sum = 0;
    asyncio::run([](int n, int& sum) -> Coroutine<> {
        std::vector<Coroutine<int>> runs;
        for (int i = 0; i < n; ++i) {
            runs.push_back([](int i) -> Coroutine<int> {
                Process p = co_await asyncio::create_subprocess_exec("sh", "-c", "exit " + std::to_string(i % 50));
                co_return co_await p.wait();
            }(i));
        }
        for (int r : co_await asyncio::gather(std::move(runs))) sum += r;
    }(n, sum));
    int want = 0;
    for (int i = 0; i < n; ++i) want += i % 50;
    EXPECT_EQ(sum, want);
}

TEST_F(ASubprocess, PastTheFdLimitCreationFailsClearlyAndLeaksNothing) {
    rlimit old{};
    ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &old), 0);
    rlimit low = old;
    low.rlim_cur = 64;
    ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &low), 0);
    int started = 0;
    int err = 0;
    asyncio::run([](int& started, int& err) -> Coroutine<> {
        std::vector<Process> procs;
        try {
            for (int i = 0; i < 100; ++i) {  // 4 fds each (3 pipes, a pidfd): past 64 soon
                procs.push_back(co_await asyncio::create_subprocess_exec(
                    "cat", Options{.stdin = PIPE, .stdout = PIPE, .stderr = PIPE}));
                ++started;
            }
        } catch (const std::system_error& e) {
            err = e.code().value();
        }
        for (Process& p : procs) p.stdin->close();  // cat sees EOF and exits
        for (Process& p : procs) CO_ASSERT(co_await p.wait() == 0);
    }(started, err));
    ::setrlimit(RLIMIT_NOFILE, &old);
    EXPECT_GT(started, 5);
    EXPECT_LT(started, 100);
    EXPECT_EQ(err, EMFILE);
}

}  // namespace
