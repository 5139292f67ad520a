// start_server / start_unix_server / Server: port 0, IPv4/IPv6/Unix, many clients, serve_forever,
// close semantics (stop accepting, connections live on, wait_closed), callback errors,
// reuse_port, close_clients/abort_clients.
#include "asyncio/server.hpp"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cerrno>
#include <chrono>
#include <string>
#include <system_error>
#include <vector>

#include "asyncio/coroutine.hpp"
#include "asyncio/event.hpp"
#include "asyncio/event_loop.hpp"
#include "asyncio/exceptions.hpp"
#include "asyncio/gather.hpp"
#include "asyncio/run.hpp"
#include "asyncio/sleep.hpp"
#include "asyncio/streams.hpp"
#include "asyncio/task.hpp"
#include "asyncio/timeout.hpp"
#include "stream_test_support.hpp"

namespace {

using asyncio::Address;
using asyncio::Coroutine;
using asyncio::Server;
using asyncio::StreamReader;
using asyncio::StreamWriter;
using asyncio::Task;
using stream_test::pattern;
using stream_test::until;
using stream_test::yield_a_few;
using namespace std::chrono_literals;

class AServer : public asyncio_test::LeakChecked {};

/// Echoes every line until EOF, then closes.
Coroutine<> echo_lines(StreamReader r, StreamWriter w) {
    while (auto line = co_await r.anext()) {
        w.write(*line);
        co_await w.drain();
    }
    w.close();
    co_await w.wait_closed();
}

/// Echoes bytes until EOF.
Coroutine<> echo_bytes(StreamReader r, StreamWriter w) {
    for (;;) {
        std::string data = co_await r.read(65536);
        if (data.empty()) break;
        w.write(data);
        co_await w.drain();
    }
    w.close();
}

std::uint16_t port_of(const Server& s) { return s.sockets().at(0).getsockname().port(); }

Coroutine<std::string> ask(std::string host, std::uint16_t port, std::string line) {
    auto [r, w] = co_await asyncio::open_connection(host, port);
    w.write(line);
    std::string reply = co_await r.readline();
    w.close();
    co_await w.wait_closed();
    co_return reply;
}

TEST_F(AServer, ListensOnPortZeroAndEchoes) {
    asyncio::run([]() -> Coroutine<> {
        Server server = co_await asyncio::start_server(echo_lines, "127.0.0.1", 0);
        CO_ASSERT(server.is_serving());
        CO_ASSERT(server.sockets().size() == 1);
        const Address bound = server.sockets()[0].getsockname();
        CO_ASSERT(bound.host() == "127.0.0.1");
        CO_ASSERT(bound.port() != 0);
        CO_ASSERT(co_await ask("127.0.0.1", bound.port(), "hello\n") == "hello\n");
        server.close();
        CO_ASSERT(!server.is_serving());
        CO_ASSERT(server.sockets().empty());
        co_await server.wait_closed();
    }());
}

TEST_F(AServer, ServesManyClientsAtOnce) {
    asyncio::run([]() -> Coroutine<> {
        // (200 connects at once: a backlog of 100 would drop SYNs, retried by the kernel after 1 s)
        Server server = co_await asyncio::start_server(echo_bytes, "127.0.0.1", 0, {.backlog = 1024});
        const std::uint16_t port = port_of(server);
        std::vector<Coroutine<bool>> clients;
        for (int i = 0; i < 200; ++i) {
            clients.push_back([](std::uint16_t port, int i) -> Coroutine<bool> {
                auto [r, w] = co_await asyncio::open_connection("127.0.0.1", port);
                const std::string data = pattern(10'000 + static_cast<std::size_t>(i) * 37, static_cast<std::uint32_t>(i));
                w.write(data);
                w.write_eof();
                const std::string back = co_await r.read();
                co_return back == data;
            }(port, i));
        }
        const std::vector<bool> ok = co_await asyncio::gather(std::move(clients));
        for (bool b : ok) CO_ASSERT(b);
        server.close();
        co_await server.wait_closed();
        CO_ASSERT(server.active_connections() == 0);
    }());
}

TEST_F(AServer, ListensOnIpv6AndOnEveryInterface) {
    asyncio::run([]() -> Coroutine<> {
        if (stream_test::ipv6_loopback_available()) {
            Server six = co_await asyncio::start_server(echo_lines, "::1", 0);
            CO_ASSERT(six.sockets()[0].getsockname().family() == AF_INET6);
            CO_ASSERT(co_await ask("::1", port_of(six), "six\n") == "six\n");
        }
        // "" is every interface (Python's host=None): one socket per family.
        Server all = co_await asyncio::start_server(echo_lines, "", 0, {.family = AF_INET});
        CO_ASSERT(all.sockets().size() == 1);
        CO_ASSERT(all.sockets()[0].getsockname().host() == "0.0.0.0");
        CO_ASSERT(co_await ask("127.0.0.1", port_of(all), "any\n") == "any\n");
    }());
}

TEST_F(AServer, ServesUnixSockets) {
    stream_test::TempDir dir;
    const std::string path = dir.file("server.sock");
    asyncio::run([](const std::string& path) -> Coroutine<> {
        {
            // A stale socket file from an earlier run is replaced.
            asyncio::Socket stale(AF_UNIX, SOCK_STREAM);
            stale.bind(Address::unix_path(path));
        }
        struct stat st {};
        CO_ASSERT(::stat(path.c_str(), &st) == 0);
        Server server = co_await asyncio::start_unix_server(echo_lines, path);
        CO_ASSERT(server.sockets()[0].getsockname().path() == path);
        auto [r, w] = co_await asyncio::open_unix_connection(path);
        w.write("over unix\n");
        CO_ASSERT(co_await r.readline() == "over unix\n");
        w.close();
        server.close();
        CO_ASSERT(::stat(path.c_str(), &st) != 0);  // the socket file is gone (Python 3.13)
        co_await server.wait_closed();
    }(path));
}

TEST_F(AServer, BindErrorsAreSystemErrors) {
    asyncio::run([]() -> Coroutine<> {
        Server first = co_await asyncio::start_server(echo_lines, "127.0.0.1", 0);
        try {
            Server second = co_await asyncio::start_server(echo_lines, "127.0.0.1", port_of(first));
            ADD_FAILURE() << "bound a port that is in use";
        } catch (const std::system_error& e) {
            CO_ASSERT(e.code() == std::errc::address_in_use);
        }
    }());
}

TEST_F(AServer, ReusePortLetsTwoServersShareAPort) {
    asyncio::run([]() -> Coroutine<> {
        Server a = co_await asyncio::start_server(echo_lines, "127.0.0.1", 0, {.reuse_port = true});
        Server b = co_await asyncio::start_server(echo_lines, "127.0.0.1", port_of(a), {.reuse_port = true});
        CO_ASSERT(port_of(a) == port_of(b));
        for (int i = 0; i < 10; ++i) CO_ASSERT(co_await ask("127.0.0.1", port_of(a), "shared\n") == "shared\n");
    }());
}

TEST_F(AServer, CloseStopsAcceptingButConnectionsRunOn) {
    asyncio::run([]() -> Coroutine<> {
        Server server = co_await asyncio::start_server(echo_lines, "127.0.0.1", 0);
        const std::uint16_t port = port_of(server);
        auto [r, w] = co_await asyncio::open_connection("127.0.0.1", port);
        w.write("before\n");
        CO_ASSERT(co_await r.readline() == "before\n");
        CO_ASSERT(server.active_connections() == 1);
        server.close();
        server.close();  // idempotent
        // New connections are refused...
        try {
            (void)co_await asyncio::open_connection("127.0.0.1", port);
            ADD_FAILURE() << "connected to a closed server";
        } catch (const std::system_error& e) {
            CO_ASSERT(e.code() == std::errc::connection_refused);
        }
        // ...the open one is still served, and wait_closed waits for it.
        Task<> waiting = asyncio::create_task(server.wait_closed());
        w.write("after\n");
        CO_ASSERT(co_await r.readline() == "after\n");
        co_await yield_a_few();
        CO_ASSERT(!waiting.done());
        w.write_eof();  // the handler sees EOF and closes
        co_await waiting;
        CO_ASSERT(server.active_connections() == 0);
        CO_ASSERT(co_await r.read() == "");
    }());
}

TEST_F(AServer, ServeForeverReturnsOnCloseAndClosesWhenCancelled) {
    asyncio::run([]() -> Coroutine<> {
        Server server = co_await asyncio::start_server(echo_lines, "127.0.0.1", 0, {.start_serving = false});
        CO_ASSERT(!server.is_serving());
        Task<> forever = asyncio::create_task(server.serve_forever());
        co_await yield_a_few();
        CO_ASSERT(server.is_serving());
        EXPECT_THROW(co_await server.serve_forever(), asyncio::RuntimeError);  // already awaited
        CO_ASSERT(co_await ask("127.0.0.1", port_of(server), "x\n") == "x\n");
        server.close();
        co_await forever;  // returns (Python raises CancelledError here)
        EXPECT_THROW(co_await server.serve_forever(), asyncio::RuntimeError);  // closed

        Server second = co_await asyncio::start_server(echo_lines, "127.0.0.1", 0);
        Task<> forever2 = asyncio::create_task(second.serve_forever());
        co_await yield_a_few();
        forever2.cancel();
        try {
            co_await forever2;
            ADD_FAILURE() << "a cancelled serve_forever returned";
        } catch (const asyncio::CancelledError&) {
        }
        CO_ASSERT(!second.is_serving());
        CO_ASSERT(second.sockets().empty());
    }());
}

TEST_F(AServer, ACallbackThatRaisesIsReportedAndItsConnectionClosed) {
    asyncio_test::Reports reports;
    asyncio::run([](asyncio_test::Reports& reports) -> Coroutine<> {
        reports.install(asyncio::get_running_loop());
        Server server = co_await asyncio::start_server(
            [](StreamReader r, StreamWriter w) -> Coroutine<> {
                std::string line = co_await r.readline();
                if (line == "boom\n") throw std::runtime_error("handler failed");
                w.write(line);
            },
            "127.0.0.1", 0);
        auto [r, w] = co_await asyncio::open_connection("127.0.0.1", port_of(server));
        w.write("boom\n");
        CO_ASSERT(co_await r.read() == "");  // closed by the server
        CO_ASSERT(co_await ask("127.0.0.1", port_of(server), "fine\n") == "fine\n");  // still serving
    }(reports));
    ASSERT_EQ(reports.count("Unhandled exception in client_connected_cb"), 1u);
    EXPECT_EQ(reports.what(0), "handler failed");
}

TEST_F(AServer, ConnectionsOutliveTheirCallbackWhileHandlesAreKept) {
    asyncio::run([]() -> Coroutine<> {
        std::vector<StreamWriter> kept;
        Server server = co_await asyncio::start_server(
            [&kept](StreamReader r, StreamWriter w) -> Coroutine<> {
                (void)r;
                kept.push_back(w);  // returns at once; the connection stays open
                co_return;
            },
            "127.0.0.1", 0);
        auto [r, w] = co_await asyncio::open_connection("127.0.0.1", port_of(server));
        CO_ASSERT(co_await until([&] { return kept.size() == 1; }));
        co_await yield_a_few();
        kept[0].write("later\n");
        CO_ASSERT(co_await r.readline() == "later\n");
        kept.clear();  // the last handle: closed
        CO_ASSERT(co_await r.read() == "");
        server.close();
        co_await server.wait_closed();
    }());
}

TEST_F(AServer, CloseClientsAndAbortClients) {
    asyncio::run([]() -> Coroutine<> {
        Server server = co_await asyncio::start_server(echo_lines, "127.0.0.1", 0);
        auto [r1, w1] = co_await asyncio::open_connection("127.0.0.1", port_of(server));
        auto [r2, w2] = co_await asyncio::open_connection("127.0.0.1", port_of(server));
        w1.write("1\n");
        w2.write("2\n");
        CO_ASSERT(co_await r1.readline() == "1\n");
        CO_ASSERT(co_await r2.readline() == "2\n");
        CO_ASSERT(server.active_connections() == 2);
        server.close();
        server.close_clients();
        CO_ASSERT(co_await r1.read() == "");
        CO_ASSERT(co_await r2.read() == "");
        co_await asyncio::wait_for(server.wait_closed(), 5s);

        Server other = co_await asyncio::start_server(echo_lines, "127.0.0.1", 0);
        auto [r3, w3] = co_await asyncio::open_connection("127.0.0.1", port_of(other));
        w3.write("3\n");
        CO_ASSERT(co_await r3.readline() == "3\n");
        other.abort_clients();
        try {
            CO_ASSERT(co_await r3.read() == "");
        } catch (const std::system_error& e) {
            CO_ASSERT(e.code() == std::errc::connection_reset);
        }
        other.close();
        co_await other.wait_closed();
    }());
}

TEST_F(AServer, StartServerOnASocketOfYourOwn) {
    asyncio::run([]() -> Coroutine<> {
        asyncio::Socket s(AF_INET, SOCK_STREAM);
        s.bind(Address::parse("127.0.0.1", 0));
        const std::uint16_t port = s.getsockname().port();
        Server server = co_await asyncio::start_server(echo_lines, std::move(s));
        CO_ASSERT(port_of(server) == port);
        CO_ASSERT(co_await ask("127.0.0.1", port, "own\n") == "own\n");
    }());
}

TEST_F(AServer, DestroyingTheServerClosesIt) {
    asyncio::run([]() -> Coroutine<> {
        std::uint16_t port;
        {
            Server server = co_await asyncio::start_server(echo_lines, "127.0.0.1", 0);
            port = port_of(server);
        }
        co_await yield_a_few();
        try {
            (void)co_await asyncio::open_connection("127.0.0.1", port);
            ADD_FAILURE() << "connected to a destroyed server";
        } catch (const std::system_error& e) {
            CO_ASSERT(e.code() == std::errc::connection_refused);
        }
        Server empty;
        EXPECT_THROW((void)empty.wait_closed(), asyncio::RuntimeError);
        CO_ASSERT(empty.sockets().empty());
    }());
}

TEST_F(AServer, RunShutdownCancelsConnectionsAndTheServer) {
    // Leaving main with a server and connections still open: asyncio::run cancels everything and
    // nothing leaks (fds and frames are checked by the fixture).
    asyncio::run([]() -> Coroutine<> {
        Server server = co_await asyncio::start_server(echo_lines, "127.0.0.1", 0);
        auto [r, w] = co_await asyncio::open_connection("127.0.0.1", port_of(server));
        w.write("x\n");
        CO_ASSERT(co_await r.readline() == "x\n");
        (void)asyncio::create_task(server.serve_forever());
        co_await yield_a_few();
    }());
}

}  // namespace
