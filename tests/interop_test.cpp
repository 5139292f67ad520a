// Interoperability with peers nobody here wrote: Python's own asyncio (/usr/bin/python3) as a
// client of our echo server and as a server for our open_connection client, and netcat (`nc`)
// as a client of our echo server and of the chat_server example. Skipped when the program is not
// installed. The Python scripts are in tests/interop/.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <optional>
#include <string>
#include <system_error>
#include <vector>

#include "asyncio/coroutine.hpp"
#include "asyncio/gather.hpp"
#include "asyncio/run.hpp"
#include "asyncio/server.hpp"
#include "asyncio/sleep.hpp"
#include "asyncio/streams.hpp"
#include "asyncio/task.hpp"
#include "asyncio/timeout.hpp"
#include "stream_test_support.hpp"

extern char** environ;

namespace {

using asyncio::Coroutine;
using asyncio::Server;
using asyncio::Socket;
using asyncio::StreamReader;
using asyncio::StreamWriter;
using stream_test::pattern;
using namespace std::chrono_literals;

class Interop : public asyncio_test::LeakChecked {};

const char* const kPython = "/usr/bin/python3";

std::string source_dir() {
    std::string file = __FILE__;
    return file.substr(0, file.rfind('/'));
}

bool executable(const std::string& path) { return ::access(path.c_str(), X_OK) == 0; }

/// The first `nc` on PATH, or "".
std::string find_netcat() {
    const char* path = std::getenv("PATH");
    std::string dirs = path != nullptr ? path : "/usr/bin:/bin";
    std::size_t start = 0;
    while (start <= dirs.size()) {
        const std::size_t end = dirs.find(':', start);
        const std::string dir = dirs.substr(start, end == std::string::npos ? std::string::npos : end - start);
        if (!dir.empty() && executable(dir + "/nc")) return dir + "/nc";
        if (end == std::string::npos) break;
        start = end + 1;
    }
    return {};
}

/// A child process whose stdout (and stderr) we read, and whose stdin we may write.
struct Child {
    pid_t pid = -1;
    std::optional<std::pair<StreamReader, StreamWriter>> out;  // its stdout+stderr
    std::optional<std::pair<StreamReader, StreamWriter>> in;   // its stdin (if asked for)

    Child() = default;
    Child(Child&& o) noexcept : pid(std::exchange(o.pid, -1)), out(std::move(o.out)), in(std::move(o.in)) {}
    Child& operator=(Child&&) = delete;
    /// Kills it if it is still running, and reaps it.
    ~Child() {
        if (pid > 0) {
            ::kill(pid, SIGKILL);
            ::waitpid(pid, nullptr, 0);
        }
    }
    /// Waits for it to exit; its exit status (-1 if killed by a signal).
    int wait() {
        int status = 0;
        ::waitpid(std::exchange(pid, -1), &status, 0);
        return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    }
};

/// A blocking end for the child (the loop's end stays non-blocking).
void make_blocking(Socket& s) {
    const int fl = ::fcntl(s.fileno(), F_GETFL);
    ::fcntl(s.fileno(), F_SETFL, fl & ~O_NONBLOCK);
}

Child spawn(const std::vector<std::string>& args, bool with_stdin) {
    auto [out_mine, out_theirs] = asyncio::socketpair();
    make_blocking(out_theirs);
    std::optional<std::pair<Socket, Socket>> in;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, out_theirs.fileno(), 1);
    posix_spawn_file_actions_adddup2(&fa, out_theirs.fileno(), 2);
    if (with_stdin) {
        in.emplace(asyncio::socketpair());
        make_blocking(in->second);
        posix_spawn_file_actions_adddup2(&fa, in->second.fileno(), 0);
    } else {
        posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    }
    std::vector<char*> argv;
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    Child c;
    const int rc = ::posix_spawn(&c.pid, argv[0], &fa, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) throw std::system_error(rc, std::generic_category(), "posix_spawn " + args[0]);
    c.out.emplace(asyncio::open_connection(std::move(out_mine)));
    if (in) c.in.emplace(asyncio::open_connection(std::move(in->first)));
    return c;
}

/// Echoes every byte until EOF, then closes.
Coroutine<> echo(StreamReader r, StreamWriter w) {
    try {
        for (;;) {
            std::string data = co_await r.read(65536);
            if (data.empty()) break;
            w.write(data);
            co_await w.drain();
        }
    } catch (const std::system_error&) {
    }
    w.close();
}

std::uint16_t port_of(const Server& s) { return s.sockets().at(0).getsockname().port(); }

// ---- Python asyncio ----

TEST_F(Interop, PythonAsyncioClientTalksToOurServer) {
    if (!executable(kPython)) GTEST_SKIP() << kPython << " is not installed";
    std::string output;
    int status = -2;
    asyncio::run([](std::string& output, int& status) -> Coroutine<> {
        Server server = co_await asyncio::start_server(echo, "127.0.0.1", 0);
        Child py = spawn({kPython, "-B", source_dir() + "/interop/echo_client.py", "127.0.0.1",
                          std::to_string(port_of(server))},
                         false);
        output = co_await asyncio::wait_for(py.out->first.read(), 60s);
        status = py.wait();
        server.close();
        co_await server.wait_closed();
    }(output, status));
    EXPECT_EQ(status, 0) << output;
    const std::size_t expected_bytes = [] {
        std::size_t n = 0;
        for (int i = 0; i < 100; ++i) n += ("line " + std::to_string(i) + " from python asyncio\n").size();
        for (std::size_t size : {1, 2, 100, 1000, 4095, 4096, 4097, 65535, 65536, 65537, 300000}) n += size;
        return n + (4u << 20);
    }();
    EXPECT_EQ(output, "OK " + std::to_string(expected_bytes) + "\n");
}

TEST_F(Interop, OurClientTalksToAPythonAsyncioServer) {
    if (!executable(kPython)) GTEST_SKIP() << kPython << " is not installed";
    std::string done_line;
    std::string mismatch;
    int status = -2;
    asyncio::run([](std::string& done_line, std::string& mismatch, int& status) -> Coroutine<> {
        Child py = spawn({kPython, "-B", source_dir() + "/interop/echo_server.py"}, false);
        StreamReader pyout = py.out->first;
        const std::string port_line = co_await asyncio::wait_for(pyout.readline(), 30s);
        CO_ASSERT(port_line.rfind("PORT ", 0) == 0);
        const auto port = static_cast<std::uint16_t>(std::stoi(port_line.substr(5)));
        auto [r, w] = co_await asyncio::open_connection("127.0.0.1", port);
        std::size_t total = 0;
        for (int i = 0; i < 100; ++i) {
            const std::string line = "line " + std::to_string(i) + " from C++\n";
            w.write(line);
            co_await w.drain();
            if (co_await r.readline() != line) mismatch = "line " + std::to_string(i);
            total += line.size();
        }
        for (std::size_t size : {1u, 100u, 4096u, 65537u, 300000u}) {
            const std::string msg = pattern(size, static_cast<std::uint32_t>(size));
            w.write(msg);
            co_await w.drain();
            if (co_await r.readexactly(size) != msg) mismatch = "message of " + std::to_string(size);
            total += size;
        }
        // A big blob: write it all (the writer buffers), read it back concurrently.
        const std::string blob = pattern(4 << 20, 77);
        auto [sent, back] = co_await asyncio::gather(
            [](StreamWriter w, const std::string& blob) -> Coroutine<> {
                w.write(blob);
                co_await w.drain();
                w.write_eof();
            }(w, blob),
            r.read());
        (void)sent;
        if (back != blob) mismatch = "4 MiB blob (" + std::to_string(back.size()) + " bytes back)";
        total += blob.size();
        w.close();
        co_await w.wait_closed();
        done_line = co_await asyncio::wait_for(pyout.readline(), 30s);
        CO_ASSERT(done_line == "DONE " + std::to_string(total) + "\n");
        status = py.wait();
    }(done_line, mismatch, status));
    EXPECT_EQ(mismatch, "");
    EXPECT_EQ(status, 0);
}

// ---- netcat ----

/// The flags that make this nc half-close the connection at EOF on stdin, or nullopt.
std::optional<std::vector<std::string>> netcat_eof_flags(const std::string& nc) {
    // OpenBSD netcat (Debian's netcat-openbsd): -N; traditional netcat: -q 0; ncat: default.
    Child help = spawn({nc, "-h"}, false);
    std::string text;
    asyncio::run([](Child& help, std::string& text) -> Coroutine<> {
        try {
            text = co_await asyncio::wait_for(help.out->first.read(), 10s);
        } catch (const std::exception&) {
        }
    }(help, text));
    help.wait();
    if (text.find("Ncat") != std::string::npos) return std::vector<std::string>{};
    if (text.find("-N") != std::string::npos) return std::vector<std::string>{"-N"};
    if (text.find("-q") != std::string::npos) return std::vector<std::string>{"-q", "0"};
    return std::nullopt;
}

TEST_F(Interop, NetcatTalksToOurServer) {
    const std::string nc = find_netcat();
    if (nc.empty()) GTEST_SKIP() << "nc (netcat) is not installed";
    const auto flags = netcat_eof_flags(nc);
    if (!flags) GTEST_SKIP() << "this nc cannot half-close at EOF of its input";
    const std::string data = "hello from nc\n" + pattern(200'000, 3) + "\nbye\n";
    std::string got;
    int status = -2;
    asyncio::run([](const std::string& nc, const std::vector<std::string>& flags, const std::string& data,
                    std::string& got, int& status) -> Coroutine<> {
        Server server = co_await asyncio::start_server(echo, "127.0.0.1", 0);
        std::vector<std::string> args{nc};
        args.insert(args.end(), flags.begin(), flags.end());
        args.push_back("127.0.0.1");
        args.push_back(std::to_string(port_of(server)));
        Child c = spawn(args, true);
        auto [done, output] = co_await asyncio::gather(
            [](StreamWriter in, const std::string& data) -> Coroutine<> {
                in.write(data);
                co_await in.drain();
                in.close();  // EOF on nc's stdin: it half-closes, our server answers EOF
            }(c.in->second, data),
            asyncio::wait_for(c.out->first.read(), 30s));
        (void)done;
        got = std::move(output);
        status = c.wait();
        server.close();
        co_await server.wait_closed();
    }(nc, *flags, data, got, status));
    EXPECT_EQ(status, 0);
    EXPECT_EQ(got.size(), data.size());
    EXPECT_TRUE(got == data);
}

TEST_F(Interop, NetcatClientsChatThroughTheChatServerExample) {
    const std::string nc = find_netcat();
    if (nc.empty()) GTEST_SKIP() << "nc (netcat) is not installed";
    const auto flags = netcat_eof_flags(nc);
    if (!flags) GTEST_SKIP() << "this nc cannot half-close at EOF of its input";
    char self[4096] = {};
    const ssize_t n = ::readlink("/proc/self/exe", self, sizeof self - 1);
    ASSERT_GT(n, 0);
    std::string exe(self, static_cast<std::size_t>(n));
    const std::string chat = exe.substr(0, exe.rfind('/')) + "/../examples/chat_server";
    if (!executable(chat)) GTEST_SKIP() << chat << " is not built";
    std::string seen_by_b;
    asyncio::run([](const std::string& nc, const std::vector<std::string>& flags, const std::string& chat,
                    std::string& seen_by_b) -> Coroutine<> {
        Child server = spawn({chat, "127.0.0.1", "0"}, false);
        const std::string serving = co_await asyncio::wait_for(server.out->first.readline(), 10s);
        CO_ASSERT(serving.rfind("serving on 127.0.0.1:", 0) == 0);
        const std::string port = serving.substr(std::string("serving on 127.0.0.1:").size(),
                                                serving.size() - 1 - std::string("serving on 127.0.0.1:").size());
        std::vector<std::string> args{nc};
        args.insert(args.end(), flags.begin(), flags.end());
        args.push_back("127.0.0.1");
        args.push_back(port);
        Child a = spawn(args, true);
        Child b = spawn(args, true);
        StreamReader a_out = a.out->first;
        StreamReader b_out = b.out->first;
        // Each gets a welcome line once it is in the room.
        CO_ASSERT((co_await asyncio::wait_for(a_out.readline(), 10s)).rfind("* welcome", 0) == 0);
        CO_ASSERT((co_await asyncio::wait_for(b_out.readline(), 10s)).rfind("* welcome", 0) == 0);
        StreamWriter a_in = a.in->second;
        a_in.write("hello from a\n");
        co_await a_in.drain();
        // b sees a's line (after, possibly, the notice that a joined).
        for (;;) {
            const std::string line = co_await asyncio::wait_for(b_out.readline(), 10s);
            CO_ASSERT(!line.empty());
            seen_by_b += line;
            if (line.find("hello from a") != std::string::npos) break;
        }
        a_in.close();
        b.in->second.close();
        (void)co_await asyncio::wait_for(a_out.read(), 10s);
        (void)co_await asyncio::wait_for(b_out.read(), 10s);
        CO_ASSERT(a.wait() == 0);
        CO_ASSERT(b.wait() == 0);
        ::kill(server.pid, SIGTERM);
        server.wait();
    }(nc, *flags, chat, seen_by_b));
    EXPECT_NE(seen_by_b.find(": hello from a\n"), std::string::npos) << seen_by_b;
}

}  // namespace
