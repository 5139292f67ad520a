// asyncio-inspect: the library's server (src/inspect.cpp) answered by the tool's own client code
// (tools/inspect_client.cpp), in process; and the tool's formats against Python 3.14's
// `python -m asyncio ps/pstree` (Lib/test/test_asyncio/test_tools.py's cases, in our model where an
// awaiter's chain is the awaiting task's own stack). This binary runs with ASYNCIO_INSPECT=1
// (tests/CMakeLists.txt). The end-to-end test on a real process is check_inspect_tool.sh.
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>
#include <gtest/gtest.h>

#include <asyncio/asyncio.hpp>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <future>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "inspect_client.hpp"

namespace {

using namespace std::chrono_literals;
namespace it = asyncio::inspect_tool;

const it::Loop* loop_on(const it::Snapshot& s, long tid) {
    for (const it::Loop& l : s.loops)
        if (l.tid == tid) return &l;
    return nullptr;
}

bool has_task(const it::Loop& l, const std::string& name) {
    for (const it::Task& t : l.tasks)
        if (t.is_task && t.name == name) return true;
    return false;
}

asyncio::Coroutine<> wait_for_event(asyncio::Event& ev) { co_await ev.wait(); }
asyncio::Coroutine<> await_task(asyncio::Task<> t) { co_await t; }
asyncio::Coroutine<> poll_until(std::atomic<bool>& stop) {
    while (!stop.load()) co_await asyncio::sleep(5ms);
}

TEST(InspectTest, TheEnvironmentTurnsItOn) {
    const char* env = std::getenv("ASYNCIO_INSPECT");
    ASSERT_TRUE(env != nullptr && std::string(env) == "1") << "run this binary with ASYNCIO_INSPECT=1 (as CTest does)";
}

// Two loops, each on its thread, each with named tasks: both are listed with their threads' ids,
// by the client code and by the tool's main (ps and pstree).
TEST(InspectTest, ListsTheTasksOfEveryLoop) {
    std::atomic<long> other_tid{0};
    std::atomic<bool> stop{false};
    std::thread other([&] {
        asyncio::run([&]() -> asyncio::Coroutine<> {
            auto t = asyncio::create_task(poll_until(stop), "other-loop-task");
            other_tid = ::gettid();
            co_await t;
        }());
    });
    while (other_tid.load() == 0) std::this_thread::sleep_for(1ms);

    it::Snapshot snap;
    std::string table, tree, tool_out, tool_err;
    int tool_status = -1;
    asyncio::run([&]() -> asyncio::Coroutine<> {
        asyncio::Event go;
        auto child = asyncio::create_task(wait_for_event(go), "child");
        auto parent = asyncio::create_task(await_task(child), "parent");
        co_await asyncio::sleep(0s);  // both started and suspended
        snap = co_await asyncio::to_thread([] { return it::fetch(::getpid(), 5s); });
        table = it::format_table(snap);
        tree = it::format_tree(snap);
        tool_status = co_await asyncio::to_thread([&] {
            const std::string pid = std::to_string(::getpid());
            const char* argv[] = {"asyncio-inspect", "pstree", pid.c_str()};
            std::ostringstream out, err;
            const int rc = it::run(3, argv, out, err);
            tool_out = out.str();
            tool_err = err.str();
            return rc;
        });
        go.set();
        co_await parent;
    }());
    stop = true;
    other.join();

    EXPECT_EQ(snap.pid, ::getpid());
    const it::Loop* mine = loop_on(snap, ::gettid());
    ASSERT_NE(mine, nullptr) << table;
    EXPECT_TRUE(mine->answered);
    EXPECT_TRUE(has_task(*mine, "child")) << table;
    EXPECT_TRUE(has_task(*mine, "parent")) << table;
    EXPECT_FALSE(has_task(*mine, "other-loop-task")) << table;
    const it::Loop* theirs = loop_on(snap, other_tid.load());
    ASSERT_NE(theirs, nullptr) << table;
    EXPECT_TRUE(theirs->answered);
    EXPECT_TRUE(has_task(*theirs, "other-loop-task")) << table;

    EXPECT_EQ(table.rfind("tid        task id              task name            coroutine stack", 0), 0u) << table;
    for (const std::string name : {"child", "parent", "other-loop-task"}) {
        EXPECT_NE(table.find(' ' + name + ' '), std::string::npos) << table;
        EXPECT_NE(tree.find("(T) " + name + '\n'), std::string::npos) << tree;
    }
    EXPECT_NE(table.find("\n" + std::to_string(other_tid.load()) + ' '), std::string::npos) << table;
    EXPECT_EQ(tool_status, 0) << tool_err;
    EXPECT_NE(tool_out.find("(T) other-loop-task"), std::string::npos) << tool_out;
    EXPECT_EQ(it::format_silent_loops(snap), "");
}

// A loop blocked in a callback, and one that is not running, are reported as silent after the
// server's wait (500 ms), not waited for; answering late, or being destroyed with the request still
// queued, touches nothing freed (TSan/ASan builds).
TEST(InspectTest, ALoopThatDoesNotAnswerIsReportedAsSuch) {
    std::promise<void> release;
    std::shared_future<void> released = release.get_future().share();
    std::atomic<long> blocked_tid{0};
    std::thread blocked([&] {
        asyncio::run([&]() -> asyncio::Coroutine<> {
            blocked_tid = ::gettid();
            released.wait();  // blocks its loop's thread
            co_return;
        }());
    });
    while (blocked_tid.load() == 0) std::this_thread::sleep_for(1ms);
    auto idle = std::make_unique<asyncio::EventLoop>();  // made here, never run

    // One more loop, destroyed while a request to it may be pending.
    std::promise<void> made;
    std::thread doomed([&made] {
        auto loop = std::make_unique<asyncio::EventLoop>();
        made.set_value();
        std::this_thread::sleep_for(100ms);
        loop.reset();
    });
    made.get_future().wait();

    const auto begin = std::chrono::steady_clock::now();
    const it::Snapshot snap = it::fetch(::getpid(), 5s);
    const auto took = std::chrono::steady_clock::now() - begin;
    doomed.join();
    release.set_value();
    blocked.join();

    const it::Loop* b = loop_on(snap, blocked_tid.load());
    ASSERT_NE(b, nullptr);
    EXPECT_FALSE(b->answered);
    EXPECT_EQ(b->silent_ms, 500);
    const it::Loop* i = loop_on(snap, ::gettid());
    ASSERT_NE(i, nullptr);
    EXPECT_FALSE(i->answered);
    const std::string silent = it::format_silent_loops(snap);
    EXPECT_NE(silent.find("loop on thread " + std::to_string(blocked_tid.load()) + " did not answer within 500 ms"),
              std::string::npos)
        << silent;
    EXPECT_NE(silent.find("loop on thread " + std::to_string(::gettid()) + " did not answer within 500 ms"),
              std::string::npos)
        << silent;
    EXPECT_LT(took, 4s);  // the loops were waited for together, once

    // The idle loop now runs the request it got (abandoned: nothing is built), then is closed.
    idle->run_until_complete([]() -> asyncio::Coroutine<> { co_await asyncio::sleep(0s); }());
    idle.reset();
    const it::Snapshot after = it::fetch(::getpid(), 5s);
    EXPECT_EQ(after.loops.size(), 0u);
}

// ---- the library's server refusing ----

std::string ask_raw(const std::string& request, pid_t pid = ::getpid()) {
    const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return "socket failed";
    const std::string name = "asyncio-inspect-" + std::to_string(pid);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path + 1, name.data(), name.size());
    std::string reply;
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr),
                  static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size())) == 0 &&
        ::send(fd, request.data(), request.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(request.size())) {
        char buf[512];
        ssize_t n;
        while ((n = ::recv(fd, buf, sizeof buf, 0)) > 0) reply.append(buf, static_cast<std::size_t>(n));
    }
    ::close(fd);
    return reply;
}

TEST(InspectTest, TheServerRefusesAnotherProtocolVersion) {
    asyncio::EventLoop loop;  // the server is started by the process's first loop
    EXPECT_EQ(ask_raw("asyncio-inspect 99\n"), "asyncio-inspect 1 ERR the tool speaks protocol version 99\n");
    EXPECT_EQ(ask_raw("GET / HTTP/1.0\n"), "asyncio-inspect 1 ERR not an asyncio-inspect request\n");
}

// SO_PEERCRED: a client of another user is refused. Needs root (to become another user).
TEST(InspectTest, AnotherUserIsRefused) {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root to connect as another user";
    asyncio::EventLoop loop;
    const std::string request = "asyncio-inspect 1\n";
    const pid_t server = ::getpid();
    const pid_t child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
        // Only system calls from here (a fork of a threaded process); the raw call changes this
        // one thread's uid, the only thread there is.
        if (::syscall(SYS_setuid, 65534) != 0) ::_exit(3);
        const std::string reply = ask_raw(request, server);
        ::_exit(reply == "asyncio-inspect 1 ERR permission denied\n" ? 0 : 1);
    }
    int status = 0;
    ASSERT_EQ(::waitpid(child, &status, 0), child);
    ASSERT_TRUE(WIFEXITED(status));
    EXPECT_EQ(WEXITSTATUS(status), 0) << "the server did not refuse uid 65534 (3: setuid failed)";
}

// ---- the client's messages, against a fake server for another process's pid ----

/// A process that serves nothing (sleep 30), killed at the end.
class Sleeper {
public:
    Sleeper() {
        const char* argv[] = {"sleep", "30", nullptr};
        if (::posix_spawnp(&pid_, "sleep", nullptr, nullptr, const_cast<char* const*>(argv), environ) != 0) pid_ = -1;
    }
    ~Sleeper() { stop(); }
    void stop() {
        if (pid_ <= 0 || reaped_) return;
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, nullptr, 0);
        reaped_ = true;
    }
    pid_t pid() const { return pid_; }

private:
    pid_t pid_ = -1;
    bool reaped_ = false;
};

/// Serves one connection on pid's inspect name with a canned reply (or none, holding it open).
class FakeServer {
public:
    FakeServer(pid_t pid, std::string reply, bool answer = true) {
        fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        const std::string name = "asyncio-inspect-" + std::to_string(pid);
        sockaddr_un addr{};
        addr.sun_family = AF_UNIX;
        std::memcpy(addr.sun_path + 1, name.data(), name.size());
        ok_ = ::bind(fd_, reinterpret_cast<sockaddr*>(&addr),
                     static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size())) == 0 &&
              ::listen(fd_, 1) == 0;
        if (ok_)
            thread_ = std::thread([this, reply = std::move(reply), answer] {
                const int c = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
                if (c < 0) return;
                char buf[64];
                (void)::recv(c, buf, sizeof buf, 0);
                if (answer) (void)::send(c, reply.data(), reply.size(), MSG_NOSIGNAL);
                else done_.get_future().wait();
                ::close(c);
            });
    }
    ~FakeServer() {
        done_.set_value();
        ::shutdown(fd_, SHUT_RDWR);  // wakes an accept that nobody reached
        if (thread_.joinable()) thread_.join();
        ::close(fd_);
    }
    bool ok() const { return ok_; }

private:
    int fd_ = -1;
    bool ok_ = false;
    std::promise<void> done_;
    std::thread thread_;
};

std::string fetch_error(pid_t pid, std::chrono::milliseconds timeout = 5s) {
    try {
        it::fetch(pid, timeout);
    } catch (const it::InspectError& e) {
        return e.what();
    }
    return "(no error)";
}

TEST(InspectTest, TheClientSaysWhyItCannotInspect) {
    Sleeper sleeper;
    ASSERT_GT(sleeper.pid(), 0);
    const std::string pid = std::to_string(sleeper.pid());
    EXPECT_EQ(fetch_error(sleeper.pid()),
              "process " + pid +
                  " does not serve asyncio-inspect: not a program linked with asyncio for C++, or not started with "
                  "ASYNCIO_INSPECT=1");
    {
        FakeServer fake(sleeper.pid(), "asyncio-inspect 2 OK\npid\t1\nend\n");
        ASSERT_TRUE(fake.ok());
        const std::string e = fetch_error(sleeper.pid());
        EXPECT_NE(e.find("different library version"), std::string::npos) << e;
        EXPECT_NE(e.find("protocol version 2, this tool speaks version 1"), std::string::npos) << e;
    }
    {
        FakeServer fake(sleeper.pid(), "asyncio-inspect 1 ERR permission denied\n");
        ASSERT_TRUE(fake.ok());
        EXPECT_EQ(fetch_error(sleeper.pid()), "permission denied: process " + pid +
                                                  " serves only its own user (run asyncio-inspect as that user, or as root)");
    }
    {
        FakeServer fake(sleeper.pid(), "", /*answer=*/false);
        ASSERT_TRUE(fake.ok());
        EXPECT_EQ(fetch_error(sleeper.pid(), 300ms), "timeout: process " + pid + " did not answer within 300 ms");
    }
    {
        FakeServer fake(sleeper.pid(), "asyncio-inspect 1 OK\npid\t1\nloop\t7\tok\t10\n");  // no "end"
        ASSERT_TRUE(fake.ok());
        EXPECT_EQ(fetch_error(sleeper.pid()), "malformed answer: it ends before its 'end' line");
    }
    sleeper.stop();  // reaped: its pid is free
    EXPECT_EQ(fetch_error(sleeper.pid()), "no such process: " + pid);
}

TEST(InspectTest, TheToolsUsage) {
    const auto run = [](std::vector<const char*> args, std::string& err) {
        args.insert(args.begin(), "asyncio-inspect");
        std::ostringstream out, e;
        const int rc = it::run(static_cast<int>(args.size()), args.data(), out, e);
        err = e.str();
        return rc;
    };
    std::string err;
    EXPECT_EQ(run({}, err), 2);
    EXPECT_NE(err.find("usage: asyncio-inspect {ps,pstree} [--timing] PID"), std::string::npos) << err;
    EXPECT_EQ(run({"top", "1"}, err), 2);
    EXPECT_NE(err.find("unknown command 'top'"), std::string::npos) << err;
    EXPECT_EQ(run({"ps"}, err), 2);
    EXPECT_NE(err.find("PID must be a positive process id"), std::string::npos) << err;
    EXPECT_EQ(run({"ps", "12abc"}, err), 2);
    EXPECT_NE(err.find("not '12abc'"), std::string::npos) << err;
    EXPECT_EQ(run({"pstree", "1", "2"}, err), 2);
    EXPECT_NE(err.find("unexpected argument '2'"), std::string::npos) << err;
}

// ---- the formats, against Python's ----

it::Frame fn(const char* name, const char* file = "", unsigned line = 0) { return {name, file, line}; }

it::Task task(std::uint64_t id, const char* name, std::vector<it::Frame> stack, std::vector<std::uint64_t> awaited_by) {
    return {id, name, true, std::move(stack), std::move(awaited_by)};
}

// test_tools.py's first tree case: a timer awaited by four children of two TaskGroups.
it::Snapshot timer_case() {
    const std::vector<it::Frame> task_group{fn("_aexit"), fn("__aexit__"), fn("blocho_caller"), fn("bloch")};
    const std::vector<it::Frame> a{fn("awaiter3", "/path/to/app.py", 130), fn("awaiter2", "/path/to/app.py", 120),
                                   fn("awaiter", "/path/to/app.py", 110)};
    const std::vector<it::Frame> b{fn("awaiterB3", "/path/to/app.py", 190), fn("awaiterB2", "/path/to/app.py", 180),
                                   fn("awaiterB", "/path/to/app.py", 170)};
    it::Loop l;
    l.tid = 1;
    l.answered = true;
    l.tasks = {task(2, "Task-1", {fn("_aexit"), fn("__aexit__"), fn("main")}, {}),
               task(3, "timer", {}, {4, 5, 6, 7}),
               task(8, "root1", task_group, {2}),
               task(9, "root2", task_group, {2}),
               task(4, "child1_1", a, {8}),
               task(6, "child2_1", b, {8}),
               task(7, "child1_2", a, {9}),
               task(5, "child2_2", b, {9})};
    return {42, {l}};
}

TEST(InspectTest, TreeAsPythonDrawsIt) {
    EXPECT_EQ(it::format_tree(timer_case()),
              "└── (T) Task-1\n"
              "    └──  main\n"
              "        └──  __aexit__\n"
              "            └──  _aexit\n"
              "                ├── (T) root1\n"
              "                │   └──  bloch\n"
              "                │       └──  blocho_caller\n"
              "                │           └──  __aexit__\n"
              "                │               └──  _aexit\n"
              "                │                   ├── (T) child1_1\n"
              "                │                   │   └──  awaiter /path/to/app.py:110\n"
              "                │                   │       └──  awaiter2 /path/to/app.py:120\n"
              "                │                   │           └──  awaiter3 /path/to/app.py:130\n"
              "                │                   │               └── (T) timer\n"
              "                │                   └── (T) child2_1\n"
              "                │                       └──  awaiterB /path/to/app.py:170\n"
              "                │                           └──  awaiterB2 /path/to/app.py:180\n"
              "                │                               └──  awaiterB3 /path/to/app.py:190\n"
              "                │                                   └── (T) timer\n"
              "                └── (T) root2\n"
              "                    └──  bloch\n"
              "                        └──  blocho_caller\n"
              "                            └──  __aexit__\n"
              "                                └──  _aexit\n"
              "                                    ├── (T) child1_2\n"
              "                                    │   └──  awaiter /path/to/app.py:110\n"
              "                                    │       └──  awaiter2 /path/to/app.py:120\n"
              "                                    │           └──  awaiter3 /path/to/app.py:130\n"
              "                                    │               └── (T) timer\n"
              "                                    └── (T) child2_2\n"
              "                                        └──  awaiterB /path/to/app.py:170\n"
              "                                            └──  awaiterB2 /path/to/app.py:180\n"
              "                                                └──  awaiterB3 /path/to/app.py:190\n"
              "                                                    └── (T) timer\n");
}

TEST(InspectTest, TreeOfTwoLoopsAndALeafTasksStack) {
    it::Loop a{9, true, 0, 0, {task(5, "Task-5", {fn("main2")}, {}), task(6, "Task-6", {}, {5}), task(7, "Task-7", {}, {5})}};
    it::Loop b{10, true, 0, 0, {task(1, "Task-1", {}, {}), task(2, "Task-2", {fn("worker", "w.cpp", 3)}, {})}};
    // A future (what a task waits on) is a leaf of its awaiter.
    b.tasks.push_back({0xf0, "", false, {}, {2}});
    EXPECT_EQ(it::format_tree({1, {a, b}}),
              "└── (T) Task-5\n"
              "    └──  main2\n"
              "        ├── (T) Task-6\n"
              "        └── (T) Task-7\n"
              "└── (T) Task-1\n"
              "└── (T) Task-2\n"
              "    └──  worker w.cpp:3\n"
              "        └── (F) Future 0xf0\n");
}

TEST(InspectTest, TableAsPythonPrintsIt) {
    it::Loop a{9, true, 0, 0, {task(5, "Task-5", {fn("asyncio::Coroutine<void> main2(int)", "m.cpp", 4)}, {}),
                                task(6, "Task-6", {fn("leaf"), fn("mid")}, {5, 0x77})}};
    const std::string table = it::format_table({1, {a}});
    const auto line = [](std::vector<std::pair<std::string, std::size_t>> cells) {
        std::string s;
        for (const auto& [text, width] : cells) {
            if (!s.empty()) s += ' ';
            s += text + std::string(text.size() < width ? width - text.size() : 0, ' ');
        }
        return s + '\n';
    };
    const std::vector<std::size_t> w{10, 20, 20, 50, 50, 15, 15};
    const auto row = [&](std::vector<std::string> c) {
        std::vector<std::pair<std::string, std::size_t>> cells;
        for (std::size_t i = 0; i < c.size(); ++i) cells.emplace_back(c[i], w[i]);
        return line(cells);
    };
    EXPECT_EQ(table,
              row({"tid", "task id", "task name", "coroutine stack", "awaiter chain", "awaiter name", "awaiter id"}) +
                  std::string(180, '-') + "\n" + row({"9", "0x5", "Task-5", "main2", "", "", "0x0"}) +
                  row({"9", "0x6", "Task-6", "leaf -> mid", "main2", "Task-5", "0x5"}) +
                  row({"9", "0x6", "Task-6", "leaf -> mid", "", "Unknown", "0x77"}));
}

// The coroutine stack shows names as Python's qualnames: no return type, parameters, qualifiers,
// template arguments of GCC's "[with ...]" or anonymous scopes.
TEST(InspectTest, FunctionSignaturesAreShownByName) {
    it::Loop l{3, true, 0, 0,
               {task(1, "t",
                     {fn("std::string {anonymous}::f(int)"),
                      fn("std::string {anonymous}::K::m(T) const [with T = int; std::string = std::__cxx11::basic_string<char>]"),
                      fn("int ns::g(std::string)"), fn("main()::<lambda()>"),
                      fn("std::string (anonymous namespace)::f(int)"),
                      fn("asyncio::Coroutine<std::pair<int, int> > ns::C<char>::run(std::vector<int>) &&"),
                      fn("plain")},
                     {})}};
    const std::string table = it::format_table({1, {l}});
    EXPECT_NE(table.find(" f -> K::m -> ns::g -> main()::<lambda()> -> f -> ns::C<char>::run -> plain "),
              std::string::npos)
        << table;
}

TEST(InspectTest, CyclesAreReportedAsPythonDoes) {
    it::Loop two{1, true, 0, 0,
                 {task(2, "Task-1", {}, {}), task(3, "A", {}, {4}), task(4, "B", {}, {5, 3}), task(5, "C", {}, {6}),
                  task(6, "Task-2", {}, {4})}};
    try {
        it::format_tree({1, {two}});
        ADD_FAILURE() << "no CycleError";
    } catch (const it::CycleError& e) {
        EXPECT_STREQ(e.what(),
                     "ERROR: await-graph contains cycles - cannot print a tree!\n\n"
                     "cycle: B → A → B\n"
                     "cycle: B → Task-2 → C → B\n");
    }
}

TEST(InspectTest, TheWireFormatCarriesAnyName) {
    const it::Snapshot s = it::parse(
        "pid\t5\nloop\t6\tok\t1500\ntask\t0x10\ttask\ta\\tb\\\\c\\nd\nframe\tf(int, char)\tx.cpp\t12\n"
        "awaited_by\t0x20\nloop\t7\tsilent\t500\nend\n");
    ASSERT_EQ(s.loops.size(), 2u);
    EXPECT_EQ(s.pid, 5);
    ASSERT_EQ(s.loops[0].tasks.size(), 1u);
    const it::Task& t = s.loops[0].tasks[0];
    EXPECT_EQ(t.name, "a\tb\\c\nd");
    EXPECT_EQ(t.id, 0x10u);
    ASSERT_EQ(t.stack.size(), 1u);
    EXPECT_EQ(t.stack[0].function, "f(int, char)");
    EXPECT_EQ(t.stack[0].line, 12u);
    EXPECT_EQ(t.awaited_by, std::vector<std::uint64_t>{0x20});
    EXPECT_EQ(s.loops[0].stall_ns, 1500);
    EXPECT_FALSE(s.loops[1].answered);
    EXPECT_THROW(it::parse("pid\t5\nbogus\nend\n"), it::InspectError);
}

}  // namespace
