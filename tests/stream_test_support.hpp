// Helpers shared by the streams, server, datagram, network-failure and interop tests.
#pragma once

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <string>
#include <system_error>
#include <vector>

#include "asyncio/coroutine.hpp"
#include "asyncio/sleep.hpp"
#include "asyncio/socket.hpp"
#include "test_support.hpp"

namespace stream_test {

/// len bytes of a pattern that does not repeat with any small period.
inline std::string pattern(std::size_t len, std::uint32_t seed = 1) {
    std::string s(len, '\0');
    std::uint32_t x = seed * 2654435761u + 12345u;
    for (std::size_t i = 0; i < len; ++i) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        s[i] = static_cast<char>(x & 0xff);
    }
    return s;
}

/// Index of the first differing byte, or -1 when equal.
inline long first_difference(const std::string& a, const std::string& b) {
    const std::size_t n = std::min(a.size(), b.size());
    for (std::size_t i = 0; i < n; ++i)
        if (a[i] != b[i]) return static_cast<long>(i);
    return a.size() == b.size() ? -1 : static_cast<long>(n);
}

/// Runs the loop until pred() holds (at most `limit` iterations of sleep(0)).
template <class Pred>
asyncio::Coroutine<bool> until(Pred pred, int limit = 100'000) {
    for (int i = 0; i < limit; ++i) {
        if (pred()) co_return true;
        co_await asyncio::sleep(std::chrono::seconds(0));
    }
    co_return pred();
}

/// Lets the other tasks run a few iterations.
inline asyncio::Coroutine<> yield_a_few(int n = 3) {
    for (int i = 0; i < n; ++i) co_await asyncio::sleep(std::chrono::seconds(0));
}

inline bool ipv6_loopback_available() {
    try {
        asyncio::Socket s(AF_INET6, SOCK_STREAM);
        s.bind(asyncio::Address::parse("::1", 0));
        return true;
    } catch (const std::system_error&) {
        return false;
    }
}

using asyncio_test::TempDir;

/// CPU time (user + system) of this process, in seconds.
inline double cpu_seconds() {
    rusage ru{};
    ::getrusage(RUSAGE_SELF, &ru);
    return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

/// True when built with AddressSanitizer or ThreadSanitizer (slower: tests scale down).
constexpr bool kSanitized =
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
    true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
    true;
#else
    false;
#endif
#else
    false;
#endif

}  // namespace stream_test
