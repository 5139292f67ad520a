// asyncio::getaddrinfo: name resolution without blocking the loop (Python's loop.getaddrinfo).
//
//   for (const asyncio::AddrInfo& ai : co_await asyncio::getaddrinfo("localhost", 8080)) {
//       asyncio::Socket s(ai.family, ai.type, ai.protocol);
//       co_await asyncio::sock_connect(s, ai.address);   // (open_connection tries each in turn)
//   }
//
// getaddrinfo(3) blocks, so a host name is resolved on the loop's default executor (executor.hpp).
// A numeric host ("127.0.0.1", "::1", "fe80::1%lo") with a numeric port is resolved at once on the
// loop's thread (AI_NUMERICHOST first), without a thread. IPv4 and IPv6: family AF_UNSPEC returns
// both, in the resolver's order.
//
// Errors: asyncio::GaiError, a std::system_error whose code() is the EAI_* value (EAI_NONAME,
// EAI_AGAIN, ...) in gai_category() (message from gai_strerror), as Python's socket.gaierror.
// EAI_SYSTEM is reported as std::system_error with the errno instead. Cancelling the awaiting task
// raises CancelledError at once; a lookup already running on its thread finishes there and its
// result is dropped.
#pragma once

#include <cstdint>
#include <string>
#include <system_error>
#include <vector>

#include "asyncio/coroutine.hpp"
#include "asyncio/socket.hpp"

namespace asyncio {

/// The error category of getaddrinfo's EAI_* codes.
const std::error_category& gai_category() noexcept;

/// A failed name resolution (Python's socket.gaierror): code() is {EAI_*, gai_category()}.
class GaiError : public std::system_error {
public:
    GaiError(int eai_code, const std::string& what)
        : std::system_error(eai_code, gai_category(), what) {}
    /// The EAI_* value.
    int eai_code() const noexcept { return code().value(); }
};

/// One result of getaddrinfo: Python's (family, type, proto, canonname, sockaddr) tuple.
struct AddrInfo {
    int family = 0;
    int type = 0;
    int protocol = 0;
    std::string canonname;  // only on the first result, and only with AI_CANONNAME
    Address address;
};

/// Resolves host and port. host "" is getaddrinfo's NULL node: the loopback address, or the
/// wildcard with AI_PASSIVE; port is a number or a service name ("http"), "" for none. family,
/// type, protocol and flags are as for getaddrinfo(3) (AF_*, SOCK_*, IPPROTO_*, AI_*).
Coroutine<std::vector<AddrInfo>> getaddrinfo(std::string host, std::string port, int family = AF_UNSPEC,
                                             int type = SOCK_STREAM, int protocol = 0, int flags = 0);
/// The same with a numeric port.
Coroutine<std::vector<AddrInfo>> getaddrinfo(std::string host, std::uint16_t port, int family = AF_UNSPEC,
                                             int type = SOCK_STREAM, int protocol = 0, int flags = 0);

}  // namespace asyncio
