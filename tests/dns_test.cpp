// asyncio::getaddrinfo: numeric hosts at once (no thread), names on the executor, IPv6, errors as
// asyncio::GaiError.
#include "asyncio/dns.hpp"

#include <gtest/gtest.h>

#include <dirent.h>
#include <netdb.h>

#include <string>
#include <system_error>
#include <vector>

#include "asyncio/coroutine.hpp"
#include "asyncio/run.hpp"
#include "asyncio/sock_ops.hpp"
#include "asyncio/task.hpp"
#include "test_support.hpp"

namespace {

using asyncio::AddrInfo;
using asyncio::Coroutine;

class Getaddrinfo : public asyncio_test::LeakChecked {};

using asyncio_test::thread_count;

std::vector<AddrInfo> resolve(std::string host, std::uint16_t port, int family = AF_UNSPEC,
                              int type = SOCK_STREAM) {
    return asyncio::run(asyncio::getaddrinfo(std::move(host), port, family, type));
}

TEST_F(Getaddrinfo, ResolvesANumericIpv4HostAtOnceWithoutAThread) {
    const int before = thread_count();
    int during = -1;
    std::vector<AddrInfo> r = asyncio::run([](int& during) -> Coroutine<std::vector<AddrInfo>> {
        auto out = co_await asyncio::getaddrinfo("127.0.0.1", 8080);
        during = thread_count();
        co_return out;
    }(during));
    EXPECT_EQ(during, before) << "a numeric host started a thread";
    ASSERT_EQ(r.size(), 1u);
    EXPECT_EQ(r[0].family, AF_INET);
    EXPECT_EQ(r[0].type, SOCK_STREAM);
    EXPECT_EQ(r[0].address.to_string(), "127.0.0.1:8080");
}

TEST_F(Getaddrinfo, ResolvesANumericIpv6Host) {
    std::vector<AddrInfo> r = resolve("::1", 443);
    ASSERT_EQ(r.size(), 1u);
    EXPECT_EQ(r[0].family, AF_INET6);
    EXPECT_EQ(r[0].address.host(), "::1");
    EXPECT_EQ(r[0].address.port(), 443);
    // UDP, and a service given as a string.
    std::vector<AddrInfo> u = asyncio::run(asyncio::getaddrinfo("::1", "53", AF_INET6, SOCK_DGRAM));
    ASSERT_EQ(u.size(), 1u);
    EXPECT_EQ(u[0].type, SOCK_DGRAM);
    EXPECT_EQ(u[0].address.port(), 53);
}

TEST_F(Getaddrinfo, ResolvesLocalhostOnTheExecutor) {
    std::vector<AddrInfo> r = resolve("localhost", 80);
    ASSERT_FALSE(r.empty());
    for (const AddrInfo& ai : r) {
        EXPECT_TRUE(ai.family == AF_INET || ai.family == AF_INET6);
        const std::string h = ai.address.host();
        EXPECT_TRUE(h == "::1" || h.rfind("127.", 0) == 0) << h;
        EXPECT_EQ(ai.address.port(), 80);
    }
    std::vector<AddrInfo> v4 = resolve("localhost", 80, AF_INET);
    ASSERT_FALSE(v4.empty());
    EXPECT_EQ(v4[0].family, AF_INET);
}

TEST_F(Getaddrinfo, EmptyHostIsLoopbackOrWildcard) {
    std::vector<AddrInfo> r = resolve("", 9000, AF_INET);
    ASSERT_EQ(r.size(), 1u);
    EXPECT_EQ(r[0].address.host(), "127.0.0.1");
    std::vector<AddrInfo> p = asyncio::run(asyncio::getaddrinfo("", 9000, AF_INET, SOCK_STREAM, 0, AI_PASSIVE));
    ASSERT_EQ(p.size(), 1u);
    EXPECT_EQ(p[0].address.host(), "0.0.0.0");
}

TEST_F(Getaddrinfo, AnInvalidNameRaisesGaiError) {
    try {
        resolve("nonexistent.invalid", 80);
        ADD_FAILURE() << "resolved a name under .invalid";
    } catch (const asyncio::GaiError& e) {
        EXPECT_EQ(&e.code().category(), &asyncio::gai_category());
        EXPECT_NE(e.eai_code(), 0);
        EXPECT_STREQ(e.code().category().name(), "getaddrinfo");
        EXPECT_FALSE(e.code().message().empty());
    }
    // It is a std::system_error (Python: gaierror is an OSError).
    EXPECT_THROW(resolve("nonexistent.invalid", 80), std::system_error);
    // A numeric host of the wrong family fails at once.
    EXPECT_THROW(resolve("127.0.0.1", 80, AF_INET6), asyncio::GaiError);
}

TEST_F(Getaddrinfo, ResultsConnect) {
    // The point of it all: resolve, then connect to the result.
    asyncio::run([]() -> Coroutine<> {
        asyncio::Socket listener(AF_INET, SOCK_STREAM);
        listener.bind(asyncio::Address::parse("127.0.0.1", 0));
        listener.listen();
        auto found = co_await asyncio::getaddrinfo("localhost", listener.getsockname().port(), AF_INET);
        CO_ASSERT(!found.empty());
        asyncio::Socket s(found[0].family, found[0].type, found[0].protocol);
        co_await asyncio::sock_connect(s, found[0].address);
        auto [conn, peer] = co_await asyncio::sock_accept(listener);
        CO_ASSERT(peer == s.getsockname());
    }());
}

}  // namespace
