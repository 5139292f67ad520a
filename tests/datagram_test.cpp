// create_datagram_endpoint / DatagramEndpoint: UDP on 127.0.0.1 and ::1, connected endpoints,
// ICMP errors, truncation, cancel-safety of recvfrom, Unix datagram sockets.
#include "asyncio/datagram.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <set>
#include <string>
#include <system_error>
#include <vector>

#include "asyncio/coroutine.hpp"
#include "asyncio/debug.hpp"
#include "asyncio/event_loop.hpp"
#include "asyncio/gather.hpp"
#include "asyncio/run.hpp"
#include "asyncio/sleep.hpp"
#include "asyncio/task.hpp"
#include "asyncio/timeout.hpp"
#include "stream_test_support.hpp"

namespace {

using asyncio::Address;
using asyncio::Coroutine;
using asyncio::DatagramEndpoint;
using asyncio::HostPort;
using asyncio::Task;
using stream_test::yield_a_few;
using namespace std::chrono_literals;

class ADatagramEndpoint : public asyncio_test::LeakChecked {};

std::size_t registrations() { return asyncio::debug::io_registrations(asyncio::get_running_loop()); }

/// Answers each datagram with its upper-case copy, n times.
Coroutine<> upper_echo(DatagramEndpoint& ep, int n) {
    for (int i = 0; i < n; ++i) {
        auto [data, from] = co_await ep.recvfrom();
        for (char& c : data) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
        co_await ep.sendto(data, from);
    }
}

TEST_F(ADatagramEndpoint, ExchangesDatagramsWithTheirSenders) {
    asyncio::run([]() -> Coroutine<> {
        DatagramEndpoint server = co_await asyncio::create_datagram_endpoint(HostPort{"127.0.0.1", 0});
        const Address where = server.sockname();
        CO_ASSERT(where.port() != 0);
        CO_ASSERT(!server.peername());
        Task<> echo = asyncio::create_task(upper_echo(server, 3));
        DatagramEndpoint client = co_await asyncio::create_datagram_endpoint(HostPort{"127.0.0.1", 0});
        for (const char* word : {"one", "two", "three"}) {
            co_await client.sendto(word, where);
            auto [reply, from] = co_await client.recvfrom();
            CO_ASSERT(from == where);
            std::string expected(word);
            for (char& c : expected) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
            CO_ASSERT(reply == expected);
        }
        co_await echo;
        CO_ASSERT(registrations() == 0);
    }());
}

TEST_F(ADatagramEndpoint, ConnectedEndpointsUseSendAndRecv) {
    asyncio::run([]() -> Coroutine<> {
        DatagramEndpoint server = co_await asyncio::create_datagram_endpoint(HostPort{"127.0.0.1", 0});
        const std::uint16_t port = server.sockname().port();
        Task<> echo = asyncio::create_task(upper_echo(server, 1));
        DatagramEndpoint client =
            co_await asyncio::create_datagram_endpoint(std::nullopt, HostPort{"127.0.0.1", port});
        CO_ASSERT(client.peername().has_value());
        CO_ASSERT(client.peername()->port() == port);
        co_await client.send(std::string("bin\0ary", 7));
        const std::string reply = co_await client.recv();
        CO_ASSERT(reply == std::string("BIN\0ARY", 7));
        co_await echo;
        // send() on an unconnected endpoint
        try {
            co_await server.send("x");
            ADD_FAILURE() << "send without a peer";
        } catch (const std::system_error& e) {
            CO_ASSERT(e.code().value() == EDESTADDRREQ);
        }
    }());
}

TEST_F(ADatagramEndpoint, PortUnreachableShowsAsConnectionRefused) {
    asyncio::run([]() -> Coroutine<> {
        std::uint16_t port;
        {
            DatagramEndpoint gone = co_await asyncio::create_datagram_endpoint(HostPort{"127.0.0.1", 0});
            port = gone.sockname().port();
        }
        DatagramEndpoint client =
            co_await asyncio::create_datagram_endpoint(std::nullopt, HostPort{"127.0.0.1", port});
        co_await client.send("anyone?");
        try {
            (void)co_await asyncio::wait_for(client.recv(), 5s);
            ADD_FAILURE() << "received from nobody";
        } catch (const std::system_error& e) {
            CO_ASSERT(e.code() == std::errc::connection_refused);
        }
    }());
}

TEST_F(ADatagramEndpoint, TruncatesToTheGivenSizeAndKeepsDatagramBoundaries) {
    asyncio::run([]() -> Coroutine<> {
        DatagramEndpoint a = co_await asyncio::create_datagram_endpoint(HostPort{"127.0.0.1", 0});
        DatagramEndpoint b = co_await asyncio::create_datagram_endpoint(HostPort{"127.0.0.1", 0});
        co_await a.sendto("0123456789", b.sockname());
        co_await a.sendto("abc", b.sockname());
        auto [first, f1] = co_await b.recvfrom(4);
        CO_ASSERT(first == "0123");  // the rest of that datagram is gone
        auto [second, f2] = co_await b.recvfrom(100);
        CO_ASSERT(second == "abc");
        (void)f1;
        (void)f2;
        // A datagram larger than UDP allows: EMSGSIZE.
        try {
            co_await a.sendto(std::string(70'000, 'x'), b.sockname());
            ADD_FAILURE() << "sent a 70000-byte datagram";
        } catch (const std::system_error& e) {
            CO_ASSERT(e.code().value() == EMSGSIZE);
        }
    }());
}

TEST_F(ADatagramEndpoint, ACancelledRecvfromTakesNoDatagram) {
    asyncio::run([]() -> Coroutine<> {
        DatagramEndpoint a = co_await asyncio::create_datagram_endpoint(HostPort{"127.0.0.1", 0});
        DatagramEndpoint b = co_await asyncio::create_datagram_endpoint(HostPort{"127.0.0.1", 0});
        std::set<std::string> got;
        int timeouts = 0;
        Task<> sender = asyncio::create_task([](DatagramEndpoint& a, Address to) -> Coroutine<> {
            for (int i = 0; i < 20; ++i) {
                co_await asyncio::sleep(3ms);
                std::string d = std::to_string(i);  // (not "d" + ...: GCC 12 -Wrestrict false positive)
                d.insert(d.begin(), 'd');
                co_await a.sendto(d, to);
            }
        }(a, b.sockname()));
        while (got.size() < 20) {
            try {
                auto [data, from] = co_await asyncio::wait_for(b.recvfrom(), 1ms);
                (void)from;
                got.insert(data);
            } catch (const asyncio::TimeoutError&) {
                ++timeouts;
            }
        }
        co_await sender;
        CO_ASSERT(got.size() == 20);
        CO_ASSERT(timeouts > 0);
        CO_ASSERT(registrations() == 0);
    }());
}

TEST_F(ADatagramEndpoint, WorksOverIpv6) {
    if (!stream_test::ipv6_loopback_available()) GTEST_SKIP() << "::1 is not available";
    asyncio::run([]() -> Coroutine<> {
        DatagramEndpoint server = co_await asyncio::create_datagram_endpoint(HostPort{"::1", 0});
        CO_ASSERT(server.sockname().family() == AF_INET6);
        Task<> echo = asyncio::create_task(upper_echo(server, 1));
        DatagramEndpoint client =
            co_await asyncio::create_datagram_endpoint(std::nullopt, HostPort{"::1", server.sockname().port()});
        co_await client.send("v6");
        CO_ASSERT(co_await client.recv() == "V6");
        co_await echo;
    }());
}

TEST_F(ADatagramEndpoint, WrapsUnixDatagramSockets) {
    stream_test::TempDir dir;
    const std::string pa = dir.file("a.sock");
    const std::string pb = dir.file("b.sock");
    asyncio::run([](const std::string& pa, const std::string& pb) -> Coroutine<> {
        asyncio::Socket sa(AF_UNIX, SOCK_DGRAM);
        sa.bind(Address::unix_path(pa));
        asyncio::Socket sb(AF_UNIX, SOCK_DGRAM);
        sb.bind(Address::unix_path(pb));
        DatagramEndpoint a(std::move(sa));
        DatagramEndpoint b(std::move(sb));
        co_await a.sendto("over a unix datagram", Address::unix_path(pb));
        auto [data, from] = co_await b.recvfrom();
        CO_ASSERT(data == "over a unix datagram");
        CO_ASSERT(from.path() == pa);
        a.close();
        CO_ASSERT(a.is_closing());
        try {
            co_await a.sendto("x", Address::unix_path(pb));
            ADD_FAILURE() << "sent on a closed endpoint";
        } catch (const std::system_error& e) {
            CO_ASSERT(e.code().value() == EBADF);
        }
    }(pa, pb));
}

TEST_F(ADatagramEndpoint, ResolvesNamesAndWorksUnbound) {
    asyncio::run([]() -> Coroutine<> {
        DatagramEndpoint ep = co_await asyncio::create_datagram_endpoint(HostPort{"localhost", 0},
                                                                         std::nullopt, {.family = AF_INET});
        CO_ASSERT(ep.sockname().host() == "127.0.0.1");
        DatagramEndpoint unbound = co_await asyncio::create_datagram_endpoint(std::nullopt);
        co_await unbound.sendto("hi", ep.sockname());  // the kernel binds it on the first send
        auto [data, from] = co_await ep.recvfrom();
        CO_ASSERT(data == "hi");
        CO_ASSERT(from.port() == unbound.sockname().port());  // (bound to 0.0.0.0:that port)
    }());
}

}  // namespace
