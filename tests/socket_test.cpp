// asyncio::Socket, Address and the loop's sock_* operations (sock_ops.hpp) on real sockets: TCP on
// 127.0.0.1 and ::1, Unix-domain sockets in a temporary directory, socketpairs and UDP. Echo with
// every byte verified, errors from real peers (refused, reset, broken pipe), cancellation that
// releases the backend's registrations and loses no data, add_reader/add_writer.
#include "asyncio/sock_ops.hpp"

#include <gtest/gtest.h>

#include <fcntl.h>
#include <sys/resource.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <system_error>
#include <vector>

#include "asyncio/coroutine.hpp"
#include "asyncio/debug.hpp"
#include "asyncio/event_loop.hpp"
#include "asyncio/gather.hpp"
#include "asyncio/run.hpp"
#include "asyncio/sleep.hpp"
#include "asyncio/socket.hpp"
#include "asyncio/task.hpp"
#include "asyncio/timeout.hpp"
#include "stream_test_support.hpp"
#include "test_support.hpp"

namespace {

using asyncio::Address;
using asyncio::Coroutine;
using asyncio::EventLoop;
using asyncio::Socket;
using asyncio::Task;
using asyncio_test::TempDir;
using stream_test::first_difference;
using stream_test::ipv6_loopback_available;
using stream_test::pattern;
using stream_test::until;
using stream_test::yield_a_few;
using namespace std::chrono_literals;

class ASocket : public asyncio_test::LeakChecked {};

std::size_t registrations(EventLoop& loop) { return asyncio::debug::io_registrations(loop); }

/// Echoes everything until EOF, then half-closes.
Coroutine<> echo(Socket& s) {
    for (;;) {
        std::string data = co_await asyncio::sock_recv(s, 65536);
        if (data.empty()) break;
        co_await asyncio::sock_sendall(s, data);
    }
    s.shutdown(SHUT_WR);
}

/// Sends data in 1 MiB pieces, then half-closes.
Coroutine<> send_then_eof(Socket& s, const std::string& data) {
    const std::string_view view(data);
    for (std::size_t off = 0; off < view.size(); off += 1 << 20)
        co_await asyncio::sock_sendall(s, view.substr(off, 1 << 20));
    s.shutdown(SHUT_WR);
}

/// Receives until EOF with sock_recv_into.
Coroutine<std::string> recv_to_eof(Socket& s) {
    std::string out;
    std::vector<char> buf(100'000);
    for (;;) {
        const std::size_t n = co_await asyncio::sock_recv_into(s, buf);
        if (n == 0) break;
        out.append(buf.data(), n);
    }
    co_return out;
}

/// Round trip of `data` through an echo peer: `a` sends and receives at once, `b` echoes.
Coroutine<std::string> round_trip(Socket& a, Socket& b, const std::string& data) {
    auto [sent, echoed, received] =
        co_await asyncio::gather(send_then_eof(a, data), echo(b), recv_to_eof(a));
    (void)sent;
    (void)echoed;
    co_return std::move(received);
}

struct Listener {
    Socket sock;
    Address address;
};

Listener listen_on(int family, const char* host) {
    Socket s(family, SOCK_STREAM);
    s.setsockopt(SOL_SOCKET, SO_REUSEADDR, 1);
    s.bind(Address::parse(host, 0));
    s.listen();
    Address a = s.getsockname();
    return {std::move(s), a};
}

Coroutine<Socket> connect_to(Address a) {
    Socket c(a.family(), SOCK_STREAM);
    co_await asyncio::sock_connect(c, a);
    co_return c;
}

Coroutine<Socket> accept_one(Socket& listener) {
    auto [conn, peer] = co_await asyncio::sock_accept(listener);
    (void)peer;
    co_return std::move(conn);
}

/// A connected pair through the listener: {client, accepted}.
Coroutine<std::pair<Socket, Socket>> connected_pair(Listener& l) {
    auto [client, server] = co_await asyncio::gather(connect_to(l.address), accept_one(l.sock));
    co_return std::pair<Socket, Socket>(std::move(client), std::move(server));
}


}  // namespace

namespace {

// ---- Address and Socket ----

TEST_F(ASocket, AddressesParseAndPrint) {
    const Address v4 = Address::parse("127.0.0.1", 8080);
    EXPECT_EQ(v4.family(), AF_INET);
    EXPECT_EQ(v4.host(), "127.0.0.1");
    EXPECT_EQ(v4.port(), 8080);
    EXPECT_EQ(v4.to_string(), "127.0.0.1:8080");
    const Address v6 = Address::parse("::1", 443);
    EXPECT_EQ(v6.family(), AF_INET6);
    EXPECT_EQ(v6.host(), "::1");
    EXPECT_EQ(v6.to_string(), "[::1]:443");
    EXPECT_EQ(Address::parse("[::1]", 443), v6);
    EXPECT_EQ(Address::unix_path("/tmp/x.sock").path(), "/tmp/x.sock");
    EXPECT_EQ(Address::unix_path(std::string_view("\0abstract", 9)).to_string(), "@abstract");
    EXPECT_THROW(Address::parse("localhost", 80), asyncio::ValueError);
    EXPECT_THROW(Address::ipv4("::1", 80), asyncio::ValueError);
    EXPECT_THROW(Address::unix_path(std::string(200, 'x')), asyncio::ValueError);
    EXPECT_EQ(Address().family(), AF_UNSPEC);
}

TEST_F(ASocket, IsNonBlockingCloseOnExecMoveOnlyAndClosesOnDestruction) {
    int fd;
    {
        Socket s(AF_INET, SOCK_STREAM);
        fd = s.fileno();
        ASSERT_GE(fd, 0);
        EXPECT_TRUE(::fcntl(fd, F_GETFL) & O_NONBLOCK);
        EXPECT_TRUE(::fcntl(fd, F_GETFD) & FD_CLOEXEC);
        EXPECT_EQ(s.family(), AF_INET);
        EXPECT_EQ(s.type(), SOCK_STREAM);
        Socket moved = std::move(s);
        EXPECT_EQ(s.fileno(), -1);
        EXPECT_EQ(moved.fileno(), fd);
        static_assert(!std::is_copy_constructible_v<Socket>);
    }
    EXPECT_EQ(::fcntl(fd, F_GETFD), -1);  // closed
    Socket s(AF_UNIX, SOCK_DGRAM);
    s.close();
    s.close();  // idempotent
    EXPECT_EQ(s.fileno(), -1);
    auto [a, b] = asyncio::socketpair();
    const int raw = a.detach();
    EXPECT_EQ(a.fileno(), -1);
    Socket adopted = Socket::from_fd(raw);
    EXPECT_EQ(adopted.family(), AF_UNIX);
    EXPECT_EQ(adopted.type(), SOCK_STREAM);
}

TEST_F(ASocket, OptionsNamesAndErrors) {
    Socket s(AF_INET, SOCK_STREAM);
    s.setsockopt(SOL_SOCKET, SO_REUSEADDR, 1);
    EXPECT_NE(s.getsockopt(SOL_SOCKET, SO_REUSEADDR), 0);
    s.bind(Address::parse("127.0.0.1", 0));
    EXPECT_EQ(s.getsockname().host(), "127.0.0.1");
    EXPECT_NE(s.getsockname().port(), 0);
    try {
        (void)s.getpeername();
        ADD_FAILURE() << "getpeername of an unconnected socket";
    } catch (const std::system_error& e) {
        EXPECT_EQ(e.code(), std::errc::not_connected);
    }
    s.listen();
    Socket other(AF_INET, SOCK_STREAM);
    try {
        other.bind(s.getsockname());
        ADD_FAILURE() << "bound to a port that is listened on";
    } catch (const std::system_error& e) {
        EXPECT_EQ(e.code(), std::errc::address_in_use);
    }
}

// ---- echo ----

TEST_F(ASocket, EchoesTenMegabytesOverASocketpair) {
    const std::string data = pattern(10 << 20);
    std::string got;
    asyncio::run([](const std::string& data, std::string& got) -> Coroutine<> {
        auto [a, b] = asyncio::socketpair();
        got = co_await round_trip(a, b, data);
        CO_ASSERT(registrations(asyncio::get_running_loop()) == 0);
    }(data, got));
    EXPECT_EQ(got.size(), data.size());
    EXPECT_EQ(first_difference(got, data), -1);
}

TEST_F(ASocket, EchoesTenMegabytesOverTcpLoopback) {
    const std::string data = pattern(10 << 20, 7);
    std::string got;
    Address peer_seen;
    asyncio::run([](const std::string& data, std::string& got, Address& peer_seen) -> Coroutine<> {
        Listener l = listen_on(AF_INET, "127.0.0.1");
        Socket client(AF_INET, SOCK_STREAM);
        Task<std::pair<Socket, Address>> acc = asyncio::create_task(
            [](Socket& l) -> Coroutine<std::pair<Socket, Address>> { co_return co_await asyncio::sock_accept(l); }(
                l.sock));
        co_await asyncio::sock_connect(client, l.address);
        auto [server, peer] = co_await acc;
        peer_seen = peer;
        CO_ASSERT(peer == client.getsockname());
        CO_ASSERT(server.getpeername() == client.getsockname());
        CO_ASSERT(client.getpeername() == l.address);
        got = co_await round_trip(client, server, data);
        CO_ASSERT(registrations(asyncio::get_running_loop()) == 0);
    }(data, got, peer_seen));
    EXPECT_EQ(peer_seen.host(), "127.0.0.1");
    EXPECT_EQ(got.size(), data.size());
    EXPECT_EQ(first_difference(got, data), -1);
}

TEST_F(ASocket, EchoesOverIpv6Loopback) {
    if (!ipv6_loopback_available()) GTEST_SKIP() << "::1 is not available";
    const std::string data = pattern(1 << 20, 3);
    std::string got;
    asyncio::run([](const std::string& data, std::string& got) -> Coroutine<> {
        Listener l = listen_on(AF_INET6, "::1");
        CO_ASSERT(l.address.family() == AF_INET6);
        auto [client, server] = co_await connected_pair(l);
        CO_ASSERT(server.getpeername().host() == "::1");
        got = co_await round_trip(client, server, data);
    }(data, got));
    EXPECT_EQ(first_difference(got, data), -1);
}

TEST_F(ASocket, EchoesOverUnixSockets) {
    TempDir dir;
    const std::string path = dir.file("echo.sock");
    const std::string data = pattern(3 << 20, 5);
    std::string got;
    asyncio::run([](const std::string& path, const std::string& data, std::string& got) -> Coroutine<> {
        Socket listener(AF_UNIX, SOCK_STREAM);
        listener.bind(Address::unix_path(path));
        listener.listen();
        CO_ASSERT(listener.getsockname().path() == path);
        Socket client(AF_UNIX, SOCK_STREAM);
        auto [conn, server] = co_await asyncio::gather(
            [](Socket& c, std::string p) -> Coroutine<> { co_await asyncio::sock_connect(c, Address::unix_path(p)); }(
                client, path),
            accept_one(listener));
        (void)conn;
        got = co_await round_trip(client, server, data);
    }(path, data, got));
    EXPECT_EQ(first_difference(got, data), -1);
}

TEST_F(ASocket, SendsAndReceivesUdpDatagrams) {
    asyncio::run([]() -> Coroutine<> {
        Socket a(AF_INET, SOCK_DGRAM);
        Socket b(AF_INET, SOCK_DGRAM);
        a.bind(Address::parse("127.0.0.1", 0));
        b.bind(Address::parse("127.0.0.1", 0));
        // b waits first: the datagram arrives while it is suspended.
        Task<std::pair<std::string, Address>> r = asyncio::create_task(
            [](Socket& b) -> Coroutine<std::pair<std::string, Address>> {
                co_return co_await asyncio::sock_recvfrom(b, 2048);
            }(b));
        co_await yield_a_few();
        CO_ASSERT(registrations(asyncio::get_running_loop()) == 1);
        const std::size_t n = co_await asyncio::sock_sendto(a, "ping", b.getsockname());
        CO_ASSERT(n == 4);
        auto [data, from] = co_await r;
        CO_ASSERT(data == "ping");
        CO_ASSERT(from == a.getsockname());
        // And back, into a buffer of ours; a binary datagram with NULs.
        const std::string payload("p\0n\0g", 5);
        co_await asyncio::sock_sendto(b, payload, from);
        std::array<std::byte, 64> buf{};
        auto [size, sender] = co_await asyncio::sock_recvfrom_into(a, std::span<std::byte>(buf));
        CO_ASSERT(size == 5);
        CO_ASSERT(std::string(reinterpret_cast<const char*>(buf.data()), size) == payload);
        CO_ASSERT(sender == b.getsockname());
        CO_ASSERT(registrations(asyncio::get_running_loop()) == 0);
    }());
}

// ---- errors from real peers ----

TEST_F(ASocket, ConnectRefusedRaisesEconnrefused) {
    asyncio::run([]() -> Coroutine<> {
        // A bound port nobody listens on.
        Socket reserved(AF_INET, SOCK_STREAM);
        reserved.bind(Address::parse("127.0.0.1", 0));
        Socket client(AF_INET, SOCK_STREAM);
        try {
            co_await asyncio::sock_connect(client, reserved.getsockname());
            ADD_FAILURE() << "connected to a port nobody listens on";
        } catch (const std::system_error& e) {
            CO_ASSERT(e.code() == std::errc::connection_refused);
            CO_ASSERT(e.code().value() == ECONNREFUSED);
        }
        CO_ASSERT(registrations(asyncio::get_running_loop()) == 0);
    }());
}

TEST_F(ASocket, PeerResetWhileReadingRaisesEconnreset) {
    asyncio::run([]() -> Coroutine<> {
        Listener l = listen_on(AF_INET, "127.0.0.1");
        auto [client, server] = co_await connected_pair(l);
        Task<std::string> reader = asyncio::create_task(
            [](Socket& s) -> Coroutine<std::string> { co_return co_await asyncio::sock_recv(s, 1024); }(server));
        co_await yield_a_few();
        CO_ASSERT(!reader.done());
        // SO_LINGER {on, 0}: close() sends RST instead of FIN.
        const linger lg{1, 0};
        client.setsockopt(SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        client.close();
        try {
            (void)co_await reader;
            ADD_FAILURE() << "recv after a reset returned";
        } catch (const std::system_error& e) {
            CO_ASSERT(e.code() == std::errc::connection_reset);
        }
        CO_ASSERT(registrations(asyncio::get_running_loop()) == 0);
    }());
}

TEST_F(ASocket, WritingToAClosedPeerRaisesInsteadOfSigpipe) {
    struct sigaction old {};
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    ::sigaction(SIGPIPE, &dfl, &old);  // SIGPIPE would kill us
    asyncio::run([]() -> Coroutine<> {
        // Unix stream: EPIPE as soon as the peer is closed.
        {
            auto [a, b] = asyncio::socketpair();
            b.close();
            try {
                co_await asyncio::sock_sendall(a, "hello");
                ADD_FAILURE() << "send to a closed peer succeeded";
            } catch (const std::system_error& e) {
                CO_ASSERT(e.code() == std::errc::broken_pipe);
            }
        }
        // TCP: the first send may be accepted (and answered by RST); the next ones fail.
        Listener l = listen_on(AF_INET, "127.0.0.1");
        auto [client, server] = co_await connected_pair(l);
        server.close();
        int error = 0;
        const std::string chunk(64 * 1024, 'x');
        for (int i = 0; i < 200 && error == 0; ++i) {
            try {
                co_await asyncio::sock_sendall(client, chunk);
                co_await asyncio::sleep(1ms);
            } catch (const std::system_error& e) {
                error = e.code().value();
            }
        }
        CO_ASSERT(error == EPIPE || error == ECONNRESET);
    }());
    ::sigaction(SIGPIPE, &old, nullptr);
}

TEST_F(ASocket, ClosingASocketFailsItsPendingOperationWithEbadf) {
    asyncio::run([]() -> Coroutine<> {
        auto [a, b] = asyncio::socketpair();
        Task<std::string> reader = asyncio::create_task(
            [](Socket& s) -> Coroutine<std::string> { co_return co_await asyncio::sock_recv(s, 10); }(a));
        co_await yield_a_few();
        CO_ASSERT(registrations(asyncio::get_running_loop()) == 1);
        a.close();
        CO_ASSERT(registrations(asyncio::get_running_loop()) == 0);
        try {
            (void)co_await reader;
            ADD_FAILURE() << "recv on a closed socket returned";
        } catch (const std::system_error& e) {
            CO_ASSERT(e.code() == std::errc::bad_file_descriptor);
        }
    }());
}

// ---- cancellation ----

TEST_F(ASocket, CancelledRecvReleasesItsRegistrationAndLosesNoData) {
    EventLoop loop;
    loop.run_until_complete([](EventLoop& loop) -> Coroutine<> {
        auto [a, b] = asyncio::socketpair();
        Task<std::string> reader = asyncio::create_task(
            [](Socket& s) -> Coroutine<std::string> { co_return co_await asyncio::sock_recv(s, 100); }(a));
        co_await yield_a_few();
        CO_ASSERT(registrations(loop) == 1);
        reader.cancel();
        co_await yield_a_few();
        CO_ASSERT(reader.done() && reader.cancelled());
        CO_ASSERT(registrations(loop) == 0);
        // What arrives now is there for the next receive.
        co_await asyncio::sock_sendall(b, "after the cancel");
        CO_ASSERT(co_await asyncio::sock_recv(a, 100) == "after the cancel");
    }(loop));
    EXPECT_EQ(asyncio::debug::io_registrations(loop), 0u);
}

TEST_F(ASocket, RecvThatCompletedBeforeTheCancelDeliversItsDataAndRaisesLater) {
    // The data arrives and the cancellation comes in the same iteration, the cancel first in the
    // ready queue: the bytes were already received, so they are returned, and CancelledError comes
    // at the task's next suspension point.
    asyncio::run([]() -> Coroutine<> {
        auto [a, b] = asyncio::socketpair();
        std::string got;
        bool cancelled_later = false;
        Task<> reader = asyncio::create_task(
            [](Socket& s, std::string& got, bool& cancelled_later) -> Coroutine<> {
                got = co_await asyncio::sock_recv(s, 100);
                try {
                    co_await asyncio::sleep(0s);
                } catch (const asyncio::CancelledError&) {
                    cancelled_later = true;
                    throw;
                }
            }(a, got, cancelled_later));
        co_await yield_a_few();
        EventLoop& loop = asyncio::get_running_loop();
        CO_ASSERT(registrations(loop) == 1);
        // Queued before the next poll, which completes the recv and queues its completion.
        loop.call_soon([&reader] { reader.cancel(); });
        const char msg[] = "raced";
        CO_ASSERT(::write(b.fileno(), msg, 5) == 5);
        co_await yield_a_few();
        CO_ASSERT(reader.done());
        CO_ASSERT(got == "raced");
        CO_ASSERT(cancelled_later);
        CO_ASSERT(reader.cancelled());
    }());
}

TEST_F(ASocket, CancelledAcceptReleasesItsRegistrationAndTheConnectionWaits) {
    asyncio::run([]() -> Coroutine<> {
        EventLoop& loop = asyncio::get_running_loop();
        Listener l = listen_on(AF_INET, "127.0.0.1");
        Task<Socket> acc = asyncio::create_task(accept_one(l.sock));
        co_await yield_a_few();
        CO_ASSERT(registrations(loop) == 1);
        acc.cancel();
        co_await yield_a_few();
        CO_ASSERT(acc.cancelled());
        CO_ASSERT(registrations(loop) == 0);
        Socket client(AF_INET, SOCK_STREAM);
        co_await asyncio::sock_connect(client, l.address);
        Socket server = co_await accept_one(l.sock);
        CO_ASSERT(server.getpeername() == client.getsockname());
    }());
}

TEST_F(ASocket, TenThousandCancelledAcceptsLeaveNoFdOrRegistration) {
    const int fds_before = asyncio_test::open_fd_count();
    int fds_during = -1;
    asyncio::run([](int& fds_during) -> Coroutine<> {
        EventLoop& loop = asyncio::get_running_loop();
        Listener l = listen_on(AF_INET, "127.0.0.1");
        const int baseline = asyncio_test::open_fd_count();
        for (int i = 0; i < 10'000; ++i) {
            Task<Socket> acc = asyncio::create_task(accept_one(l.sock));
            co_await asyncio::sleep(0s);  // it starts and waits
            if (i == 0) CO_ASSERT(registrations(loop) == 1);
            acc.cancel();
            co_await asyncio::sleep(0s);
            CO_ASSERT(acc.cancelled());
        }
        CO_ASSERT(registrations(loop) == 0);
        fds_during = asyncio_test::open_fd_count() - baseline;
    }(fds_during));
    EXPECT_EQ(fds_during, 0);
    EXPECT_EQ(asyncio_test::open_fd_count(), fds_before);
}

TEST_F(ASocket, CancelledConnectReleasesItsRegistration) {
    asyncio::run([]() -> Coroutine<> {
        EventLoop& loop = asyncio::get_running_loop();
        // A listener with a full backlog that never accepts: the next connect stays in progress.
        Socket listener(AF_INET, SOCK_STREAM);
        listener.bind(Address::parse("127.0.0.1", 0));
        listener.listen(0);
        const Address where = listener.getsockname();
        std::vector<Socket> queued;
        Task<> pending;
        for (int i = 0; i < 64 && !pending; ++i) {
            Socket c(AF_INET, SOCK_STREAM);
            Task<> t = asyncio::create_task([](Socket& c, Address a) -> Coroutine<> {
                co_await asyncio::sock_connect(c, a);
            }(c, where));
            co_await asyncio::sleep(20ms);
            if (!t.done()) {
                pending = t;
                queued.push_back(std::move(c));
            } else {
                CO_ASSERT(!t.cancelled());
                t.result();
                queued.push_back(std::move(c));
            }
        }
        if (!pending) {
            ADD_FAILURE() << "no connect stayed in progress (cannot test its cancellation here)";
            co_return;
        }
        CO_ASSERT(registrations(loop) == 1);
        pending.cancel();
        co_await yield_a_few();
        CO_ASSERT(pending.cancelled());
        CO_ASSERT(registrations(loop) == 0);
    }());
}

// ---- more than one operation on a fd; watchers ----

TEST_F(ASocket, ServesConcurrentReceivesInOrder) {
    asyncio::run([]() -> Coroutine<> {
        auto [a, b] = asyncio::socketpair(AF_UNIX, SOCK_DGRAM);
        auto recv1 = [](Socket& s) -> Coroutine<std::string> { co_return co_await asyncio::sock_recv(s, 64); };
        Task<std::string> first = asyncio::create_task(recv1(a));
        Task<std::string> second = asyncio::create_task(recv1(a));
        co_await yield_a_few();
        CO_ASSERT(registrations(asyncio::get_running_loop()) == 2);
        co_await asyncio::sock_sendall(b, "one");
        co_await asyncio::sock_sendall(b, "two");
        CO_ASSERT(co_await first == "one");
        CO_ASSERT(co_await second == "two");
    }());
}

TEST_F(ASocket, AddReaderAndAddWriterCallBackWhileReady) {
    EventLoop loop;
    loop.run_until_complete([](EventLoop& loop) -> Coroutine<> {
        auto pair = asyncio::socketpair();  // (clang 14: no structured bindings in lambdas)
        const int a = pair.first.fileno();
        const int b = pair.second.fileno();
        int reads = 0;
        std::string got;
        loop.add_reader(a, [&] {
            ++reads;
            char buf[16];
            const ssize_t n = ::read(a, buf, sizeof buf);
            if (n > 0) got.append(buf, static_cast<std::size_t>(n));
            if (got.size() >= 5) loop.remove_reader(a);  // removes itself while running
        });
        CO_ASSERT(registrations(loop) == 1);
        co_await yield_a_few();
        CO_ASSERT(reads == 0);  // nothing to read yet
        CO_ASSERT(::write(b, "hel", 3) == 3);
        CO_ASSERT(co_await until([&] { return reads > 0; }));
        CO_ASSERT(::write(b, "lo", 2) == 2);
        CO_ASSERT(co_await until([&] { return got.size() == 5; }));
        CO_ASSERT(got == "hello");
        CO_ASSERT(registrations(loop) == 0);
        CO_ASSERT(!loop.remove_reader(a));

        // Level-triggered: a writable socket keeps calling its writer until it is removed.
        int writes = 0;
        loop.add_writer(b, [&] {
            if (++writes == 3) loop.remove_writer(b);
        });
        CO_ASSERT(co_await until([&] { return writes == 3; }));
        co_await yield_a_few();
        CO_ASSERT(writes == 3);
        CO_ASSERT(registrations(loop) == 0);
    }(loop));
}

TEST_F(ASocket, AWatcherAndOperationsShareAFd) {
    asyncio::run([]() -> Coroutine<> {
        EventLoop& loop = asyncio::get_running_loop();
        auto [a, b] = asyncio::socketpair();
        int readable = 0;
        loop.add_reader(a.fileno(), [&] { ++readable; });
        // A send on the same fd while the reader watches it.
        co_await asyncio::sock_sendall(a, "x");
        CO_ASSERT(co_await asyncio::sock_recv(b, 10) == "x");
        co_await asyncio::sock_sendall(b, "y");
        CO_ASSERT(co_await until([&] { return readable > 0; }));
        CO_ASSERT(loop.remove_reader(a.fileno()));
        // Now the operation alone (the fd goes back to being served edge-triggered).
        CO_ASSERT(co_await asyncio::sock_recv(a, 10) == "y");
        Task<std::string> r = asyncio::create_task(
            [](Socket& s) -> Coroutine<std::string> { co_return co_await asyncio::sock_recv(s, 10); }(a));
        co_await yield_a_few();
        co_await asyncio::sock_sendall(b, "z");
        CO_ASSERT(co_await r == "z");
        CO_ASSERT(registrations(loop) == 0);
    }());
}

TEST_F(ASocket, WaitReadableAndWritable) {
    asyncio::run([]() -> Coroutine<> {
        auto [a, b] = asyncio::socketpair();
        co_await asyncio::wait_writable(a.fileno());
        Task<> w = asyncio::create_task([](int fd) -> Coroutine<> { co_await asyncio::wait_readable(fd); }(a.fileno()));
        co_await yield_a_few();
        CO_ASSERT(!w.done());
        co_await asyncio::sock_sendall(b, "!");
        co_await w;
        CO_ASSERT(co_await asyncio::sock_recv(a, 10) == "!");  // waiting consumed nothing
    }());
}

TEST_F(ASocket, IdleLoopMakesNoSystemCallOnceOperationsAreDone) {
    EventLoop loop;
    loop.run_until_complete([](EventLoop& loop) -> Coroutine<> {
        Listener l = listen_on(AF_INET, "127.0.0.1");
        auto [client, server] = co_await connected_pair(l);
        Task<std::string> r = asyncio::create_task(
            [](Socket& s) -> Coroutine<std::string> { co_return co_await asyncio::sock_recv(s, 10); }(server));
        co_await yield_a_few();
        co_await asyncio::sock_sendall(client, "hi");
        CO_ASSERT(co_await r == "hi");
        // Both fds stay in the epoll set (edge-triggered), but nothing is pending: a busy loop of
        // sleep(0) must not poll.
        CO_ASSERT(registrations(loop) == 0);
        const auto polls = loop.stats().backend_polls;
        co_await yield_a_few(1000);
        CO_ASSERT(loop.stats().backend_polls == polls);
    }(loop));
}

TEST_F(ASocket, RunCancelsATaskLeftWaitingOnASocket) {
    // asyncio::run's shutdown cancels leftover tasks while the loop is not running.
    auto [a, b] = asyncio::socketpair();
    asyncio::run([](Socket& a) -> Coroutine<> {
        (void)asyncio::create_task([](Socket& a) -> Coroutine<> { (void)co_await asyncio::sock_recv(a, 10); }(a));
        co_await yield_a_few();
    }(a));
}

asyncio_test::Eager recv_outside_a_task(std::exception_ptr&, Socket& a) {
    (void)co_await asyncio::sock_recv(a, 1);
}

TEST_F(ASocket, OperationsOutsideATaskRaise) {
    auto [a, b] = asyncio::socketpair();
    std::exception_ptr error;
    recv_outside_a_task(error, a);
    EXPECT_THROW(std::rethrow_exception(error), asyncio::RuntimeError);
}

Coroutine<std::string> recv10(Socket& s) { co_return co_await asyncio::sock_recv(s, 10); }

TEST_F(ASocket, LoopClosedWithAPendingOperationLeavesNothingBehind) {
    auto [a, b] = asyncio::socketpair();
    {
        EventLoop loop;
        loop.set_exception_handler([](EventLoop&, const asyncio::ExceptionContext&) {});
        (void)loop.create_task(recv10(a));  // fire and forget: the loop owns it
        loop.run_until_complete(yield_a_few());
        EXPECT_EQ(asyncio::debug::io_registrations(loop), 1u);
        loop.close();  // destroys the pending task, whose operation is withdrawn
        EXPECT_EQ(asyncio::debug::io_registrations(loop), 0u);
    }
    // A handle keeps the frame past the loop's end: destroying it later touches no dead loop.
    Task<std::string> survivor;
    {
        EventLoop loop;
        loop.set_exception_handler([](EventLoop&, const asyncio::ExceptionContext&) {});
        survivor = loop.create_task(recv10(a));
        loop.run_until_complete(yield_a_few());
        EXPECT_EQ(asyncio::debug::io_registrations(loop), 1u);
    }
    survivor = Task<std::string>();
}

}  // namespace

namespace {

// ---- a socket closed while an operation continues (fd numbers are reused) ----

namespace fd_reuse {

/// Reads from the peer until `n` bytes are gone (raw, non-blocking; the peer is never awaited).
void drain_raw(int fd, std::size_t n) {
    std::vector<char> buf(65536);
    while (n > 0) {
        const ssize_t r = ::recv(fd, buf.data(), std::min(n, buf.size()), MSG_DONTWAIT);
        if (r <= 0) break;
        n -= static_cast<std::size_t>(r);
    }
}

/// Bytes waiting to be read on fd (raw, non-blocking).
std::size_t readable_now(int fd) {
    std::size_t total = 0;
    std::vector<char> buf(65536);
    for (;;) {
        const ssize_t r = ::recv(fd, buf.data(), buf.size(), MSG_DONTWAIT);
        if (r <= 0) return total;
        total += static_cast<std::size_t>(r);
    }
}

}  // namespace fd_reuse

TEST_F(ASocket, RegressionSendallDoesNotContinueIntoANewSocketWithTheSameFdNumber) {
    // A sock_sendall is part-way through when one readiness event completes both a receive and a
    // partial send on the same socket. The receiver's continuation (run first) closes the socket
    // and opens a socketpair, which gets the same fd number. The rest of the payload must not go
    // into the new socket: the sendall fails with EBADF.
    for (int round = 0; round < 20; ++round) {
        asyncio::run([]() -> Coroutine<> {
            auto [a, b] = asyncio::socketpair();
            const int a_fd = a.fileno();
            const std::string payload = pattern(8 << 20);
            std::optional<std::pair<Socket, Socket>> fresh;
            bool reused = false;
            Task<> sender = asyncio::create_task(
                [](Socket& a, const std::string& payload) -> Coroutine<> {
                    co_await asyncio::sock_sendall(a, payload);
                }(a, payload));
            Task<> reader = asyncio::create_task(
                [](Socket& a, int a_fd, std::optional<std::pair<Socket, Socket>>& fresh,
                   bool& reused) -> Coroutine<> {
                    (void)co_await asyncio::sock_recv(a, 1);
                    a.close();
                    fresh.emplace(asyncio::socketpair());
                    reused = fresh->first.fileno() == a_fd || fresh->second.fileno() == a_fd;
                }(a, a_fd, fresh, reused));
            co_await yield_a_few();
            CO_ASSERT(!sender.done());  // the socket buffer is full: the sendall waits
            // One event for both directions: data to read, and room to write (not all of it).
            CO_ASSERT(::send(b.fileno(), "x", 1, MSG_NOSIGNAL) == 1);
            fd_reuse::drain_raw(b.fileno(), 256 * 1024);
            co_await yield_a_few(5);
            CO_ASSERT(reader.done());
            CO_ASSERT(reused);
            const int other = fresh->first.fileno() == a_fd ? fresh->second.fileno() : fresh->first.fileno();
            EXPECT_EQ(fd_reuse::readable_now(other), 0u) << "bytes of the old socket went into the new one";
            CO_ASSERT(sender.done());
            bool ebadf = false;
            try {
                sender.result();
            } catch (const std::system_error& e) {
                ebadf = e.code() == std::errc::bad_file_descriptor;
            }
            EXPECT_TRUE(ebadf) << "sendall on a closed socket did not fail with EBADF";
        }());
    }
}

// ---- operations that always complete at once still let the loop run (cooperative budget) ----

namespace coop {

/// Loop iterations that passed while `body` ran in this task.
template <class Body>
Coroutine<std::uint64_t> iterations_during(Body body) {
    EventLoop& loop = asyncio::get_running_loop();
    const std::uint64_t before = loop.stats().iterations;
    co_await body();
    co_return loop.stats().iterations - before;
}

constexpr std::uint64_t kBudget = EventLoop::kIoBudget;

}  // namespace coop

TEST_F(ASocket, RegressionSockRecvThatIsAlwaysReadyYieldsToTheLoop) {
    asyncio::run([]() -> Coroutine<> {
        auto pair = asyncio::socketpair();  // (clang 14: no structured bindings in lambdas)
        Socket& a = pair.first;
        Socket& b = pair.second;
        constexpr int kBytes = 20'000;
        const std::string data = pattern(kBytes);
        CO_ASSERT(::send(b.fileno(), data.data(), data.size(), MSG_NOSIGNAL) == kBytes);
        std::string got;
        const std::uint64_t iterations = co_await coop::iterations_during([&]() -> Coroutine<> {
            for (int i = 0; i < kBytes; ++i) got += co_await asyncio::sock_recv(a, 1);  // each ready at once
        });
        EXPECT_EQ(got, data);  // nothing lost or reordered by the yields
        EXPECT_GE(iterations, kBytes / (coop::kBudget + 1));
        EXPECT_LE(iterations, kBytes / coop::kBudget + 2);  // and no more yields than the budget asks
    }());
}

TEST_F(ASocket, RegressionSendallAndRecvIntoThatAreAlwaysReadyYieldToTheLoop) {
    // Ping-pong within one task: a one-byte sendall (there is room) then a one-byte
    // sock_recv_into (the byte is there): every operation completes at once.
    asyncio::run([]() -> Coroutine<> {
        auto pair = asyncio::socketpair();  // (clang 14: no structured bindings in lambdas)
        Socket& a = pair.first;
        Socket& b = pair.second;
        constexpr int kRounds = 10'000;
        std::string got;
        char c = 0;
        const std::uint64_t iterations = co_await coop::iterations_during([&]() -> Coroutine<> {
            for (int i = 0; i < kRounds; ++i) {
                co_await asyncio::sock_sendall(a, std::string_view("abcdefgh", 8).substr(i % 8, 1));
                CO_ASSERT(co_await asyncio::sock_recv_into(b, asyncio::MutableBuffer(&c, 1)) == 1);
                got += c;
            }
        });
        EXPECT_GE(iterations, 2 * kRounds / (coop::kBudget + 1));
        CO_ASSERT(got.size() == kRounds);
        for (int i = 0; i < kRounds; ++i) CO_ASSERT(got[static_cast<std::size_t>(i)] == "abcdefgh"[i % 8]);
    }());
}

TEST_F(ASocket, RegressionSockRecvfromThatIsAlwaysReadyYieldsToTheLoop) {
    asyncio::run([]() -> Coroutine<> {
        // UDP on loopback with a large receive buffer: queue datagrams until the kernel refuses more.
        Socket a(AF_INET, SOCK_DGRAM);
        Socket b(AF_INET, SOCK_DGRAM);
        a.setsockopt(SOL_SOCKET, SO_RCVBUF, 4 << 20);
        a.bind(Address::parse("127.0.0.1", 0));
        const Address to = a.getsockname();
        int datagrams = 0;
        while (datagrams < 2000) {
            const std::string d = std::to_string(datagrams);
            if (::sendto(b.fileno(), d.data(), d.size(), MSG_NOSIGNAL, to.data(), to.size()) < 0) break;
            ++datagrams;
        }
        CO_ASSERT(datagrams > 2 * static_cast<int>(coop::kBudget));
        int next = 0;
        const std::uint64_t iterations = co_await coop::iterations_during([&]() -> Coroutine<> {
            for (int i = 0; i < datagrams; ++i) {
                auto [d, from] = co_await asyncio::sock_recvfrom(a, 100);
                CO_ASSERT(d == std::to_string(next++));
            }
        });
        EXPECT_EQ(next, datagrams);
        EXPECT_GE(iterations, static_cast<std::uint64_t>(datagrams) / (coop::kBudget + 1));
    }());
}

TEST_F(ASocket, AnOperationCancelledWhileItYieldsForTheBudgetKeepsItsResult) {
    // The budget is spent, so a recv that completed at once yields once; a cancel() in that window
    // must not lose the received byte: it is returned, and CancelledError comes at the next
    // suspension point (as for any completion that raced a cancellation).
    asyncio::run([]() -> Coroutine<> {
        auto [a, b] = asyncio::socketpair();
        const std::string data = pattern(1000);
        CO_ASSERT(::send(b.fileno(), data.data(), data.size(), MSG_NOSIGNAL) == 1000);
        std::string got;
        Task<> reader = asyncio::create_task([](Socket& a, std::string& got) -> Coroutine<> {
            for (int i = 0; i < 1000; ++i) got += co_await asyncio::sock_recv(a, 1);
        }(a, got));
        co_await asyncio::sleep(0s);  // the reader's first step spends the budget and yields
        CO_ASSERT(!reader.done());
        CO_ASSERT(got.size() == coop::kBudget);
        reader.cancel();
        try {
            co_await reader;
        } catch (const asyncio::CancelledError&) {
        }
        CO_ASSERT(reader.cancelled());
        // The yielded receive delivered its byte; the next one raised and consumed nothing.
        EXPECT_EQ(got.size(), coop::kBudget + 1);
        EXPECT_EQ(got, data.substr(0, got.size()));
        std::string rest;
        while (rest.size() + got.size() < 1000) rest += co_await asyncio::sock_recv(a, 1000);
        EXPECT_EQ(got + rest, data);
    }());
}

TEST_F(ASocket, RegressionAHighFdNumberCostsMemoryForItsFdNotForEveryNumberBelowIt) {
    // The backend's per-fd table grows in pages: an operation waiting on a high fd number (up to
    // 2^20, as the fd limit allows) must not allocate (and touch) state for every number below it.
    rlimit old{};
    ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &old), 0);
    rlimit raised = old;
    raised.rlim_cur = raised.rlim_max = std::max<rlim_t>(old.rlim_max, 1 << 20);
    if (::setrlimit(RLIMIT_NOFILE, &raised) != 0) {
        raised.rlim_cur = raised.rlim_max = old.rlim_max;
        ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &raised), 0);
    }
    const int high = static_cast<int>(std::min<rlim_t>(raised.rlim_cur, 1 << 20)) - 1;
    if (high < 10'000) {
        ::setrlimit(RLIMIT_NOFILE, &old);
        GTEST_SKIP() << "the fd limit is too low for this test (" << high << ")";
    }
    auto resident_kib = [] {
        long pages = 0, resident = 0;
        FILE* f = std::fopen("/proc/self/statm", "r");
        if (f != nullptr) {
            if (std::fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0;
            std::fclose(f);
        }
        return resident * (::sysconf(_SC_PAGESIZE) / 1024);
    };
    auto one_recv = [](Socket& s, Socket& peer) -> Coroutine<std::string> {
        Task<std::string> r = asyncio::create_task(
            [](Socket& s) -> Coroutine<std::string> { co_return co_await asyncio::sock_recv(s, 10); }(s));
        co_await yield_a_few();
        EXPECT_EQ(registrations(asyncio::get_running_loop()), 1u);  // it waits on its fd
        co_await asyncio::sock_sendall(peer, "far away");
        co_return co_await r;
    };
    {
        EventLoop loop;
        auto [a, b] = asyncio::socketpair();
        // First on a low fd: whatever the loop allocates anyway (frames, queues) is in place.
        EXPECT_EQ(loop.run_until_complete(one_recv(a, b)), "far away");
        ASSERT_EQ(::dup2(a.fileno(), high), high);
        Socket far = Socket::from_fd(high);
        const long before = resident_kib();
        EXPECT_EQ(loop.run_until_complete(one_recv(far, b)), "far away");
        const long grown = resident_kib() - before;
        // (The old table, one ~100-byte entry per number, grew by ~1.8 MiB for fd 19,999.)
        EXPECT_LT(grown, 256) << "KiB of memory for one fd numbered " << high;
    }
    ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &old), 0);
}

TEST_F(ASocket, RegressionAReaderEventQueuedForAClosedFdDoesNotRunTheNewFdsReader) {
    // The old fd is readable, so the poll queues its reader; a callback that runs before it in
    // the same iteration removes the reader, closes the socket, and installs a reader on a new
    // socket that got the same fd number. The queued event belonged to the old reader: the new one
    // must not run for it (Python's remove_reader cancels the queued handle).
    EventLoop loop;
    loop.run_until_complete([](EventLoop& loop) -> Coroutine<> {
        auto pair = asyncio::socketpair();  // (clang 14: no structured bindings in lambdas)
        Socket a = std::move(pair.first);
        Socket b = std::move(pair.second);
        const int a_fd = a.fileno();
        int old_calls = 0;
        int new_calls = 0;
        std::optional<std::pair<Socket, Socket>> fresh;
        loop.add_reader(a_fd, [&] { ++old_calls; });
        CO_ASSERT(::send(b.fileno(), "x", 1, MSG_NOSIGNAL) == 1);
        // Queued before the next poll, which then queues the old reader's event after it.
        loop.call_soon([&] {
            loop.remove_reader(a_fd);
            a.close();
            fresh.emplace(asyncio::socketpair());
            const int reused = fresh->first.fileno() == a_fd ? fresh->first.fileno() : fresh->second.fileno();
            EXPECT_EQ(reused, a_fd);  // the kernel hands out the lowest free number
            loop.add_reader(reused, [&] { ++new_calls; });
        });
        co_await yield_a_few();
        EXPECT_EQ(old_calls, 0);
        EXPECT_EQ(new_calls, 0) << "the new fd's reader ran for the old fd's event";
        loop.remove_reader(a_fd);
    }(loop));
}

/// A pipe whose read end gets the fd number `number` (dup2), both ends non-blocking.
std::array<int, 2> pipe_at(int number) {
    int p[2];
    EXPECT_EQ(::pipe2(p, O_NONBLOCK | O_CLOEXEC), 0);
    if (number >= 0 && p[0] != number) {
        EXPECT_EQ(::dup3(p[0], number, O_CLOEXEC), number);
        ::close(p[0]);
        p[0] = number;
    }
    return {p[0], p[1]};
}

TEST_F(ASocket, RegressionWaitReadableOnARawFdNumberClosedAndReusedFiresAfterNotifyClosing) {
    // Issue #9 (b): wait_readable(fd) made the loop remember fd (epoll: in its set). The raw fd
    // was closed and its number reused by a new pipe: a wait on the new pipe never fired, as only
    // Socket::close/detach made the loop forget a number. notify_closing(fd) is how a raw-fd user
    // says it, on both backends.
    asyncio::run([]() -> Coroutine<> {
        std::array<int, 2> old = pipe_at(-1);
        const int number = old[0];
        Task<> w = asyncio::create_task([](int fd) -> Coroutine<> { co_await asyncio::wait_readable(fd); }(number));
        co_await yield_a_few();  // waiting: the loop now knows the fd
        CO_ASSERT(!w.done());
        CO_ASSERT(::write(old[1], "x", 1) == 1);
        co_await w;
        asyncio::notify_closing(number);
        ::close(old[0]);
        ::close(old[1]);
        std::array<int, 2> fresh = pipe_at(number);  // the same number, a new file
        Task<> w2 = asyncio::create_task([](int fd) -> Coroutine<> {
            co_await asyncio::wait_for(asyncio::wait_readable(fd), 10s);
        }(number));
        co_await yield_a_few();
        CO_ASSERT(!w2.done());
        CO_ASSERT(::write(fresh[1], "y", 1) == 1);
        co_await w2;  // TimeoutError here before the fix (epoll: after 10 s)
        char c = 0;
        CO_ASSERT(::read(fresh[0], &c, 1) == 1 && c == 'y');
        asyncio::notify_closing(number);
        ::close(fresh[0]);
        ::close(fresh[1]);
    }());
}

TEST_F(ASocket, NotifyClosingFailsWaitersWithEbadfAndRemovesTheFdsReaderAndWriter) {
    EventLoop loop;
    loop.run_until_complete([](EventLoop& loop) -> Coroutine<> {
        std::array<int, 2> p = pipe_at(-1);
        int reader_calls = 0;
        int writer_calls = 0;
        Task<> w = asyncio::create_task([](int fd) -> Coroutine<> { co_await asyncio::wait_readable(fd); }(p[0]));
        co_await yield_a_few();
        loop.add_reader(p[0], [&] { ++reader_calls; });
        loop.add_writer(p[1], [&] { ++writer_calls; });
        CO_ASSERT(co_await until([&] { return writer_calls > 0; }));  // the pipe has room
        CO_ASSERT(registrations(loop) == 3);
        // The writer's next call is queued by the poll after this callback: it must not run.
        loop.call_soon([&] {
            loop.notify_closing(p[0]);
            loop.notify_closing(p[1]);
            writer_calls = 0;
        });
        try {
            co_await w;
            ADD_FAILURE() << "wait_readable returned on a fd announced closed";
        } catch (const std::system_error& e) {
            EXPECT_EQ(e.code().value(), EBADF);
        }
        co_await yield_a_few();
        CO_ASSERT(writer_calls == 0);
        CO_ASSERT(reader_calls == 0);
        CO_ASSERT(!loop.remove_reader(p[0]));  // removed already, as remove_reader would
        CO_ASSERT(!loop.remove_writer(p[1]));
        CO_ASSERT(registrations(loop) == 0);
        ::close(p[0]);
        ::close(p[1]);
        loop.notify_closing(p[0]);  // an fd the loop no longer knows: nothing happens
    }(loop));
}

TEST_F(ASocket, NotifyClosingOutsideARunningLoopRaises) {
    EXPECT_THROW(asyncio::notify_closing(0), asyncio::RuntimeError);
}

}  // namespace

// Reliability issue #7 (3): a task parked here, its loop destroyed, its last handle dropped
// afterwards: the frame's destruction must not touch the dead loop (ASan: heap-use-after-free).
namespace {
using asyncio_test::destroy_loop_then_task;

TEST_F(ASocket, RegressionTaskHandleOutlivingItsLoopWhileParkedInSockRecv) {
    destroy_loop_then_task([](asyncio::EventLoop& loop) -> asyncio::Task<> {
        return loop.create_task([]() -> asyncio::Coroutine<> {
            auto pair = asyncio::socketpair();
            (void)co_await asyncio::sock_recv(pair.first, 100);  // nothing is ever sent
        }());
    });
}
}  // namespace
