// UDP (and other datagram sockets) as coroutines: asyncio's create_datagram_endpoint without the
// protocol callbacks. Where Python calls datagram_received(data, addr), you co_await recvfrom();
// where it calls error_received(exc), the recvfrom()/sendto() that hit it raises std::system_error.
//
//   asyncio::DatagramEndpoint ep = co_await asyncio::create_datagram_endpoint(
//       asyncio::HostPort{"127.0.0.1", 9999});                         // local_addr
//   auto [data, addr] = co_await ep.recvfrom();
//   co_await ep.sendto(data, addr);
//
//   auto client = co_await asyncio::create_datagram_endpoint(std::nullopt,
//                                                            asyncio::HostPort{"127.0.0.1", 9999});
//   co_await client.send("ping");                                       // connected: send/recv
//
// One datagram per call: recvfrom(n) returns one datagram (truncated to n bytes) and its sender;
// sendto() sends one datagram (it waits only while the socket's send buffer is full). On a connected
// endpoint an ICMP "port unreachable" from an earlier datagram shows as ECONNREFUSED on a later
// call, as the kernel reports it.
//
// Cancel-safety: recvfrom/recv are cancel-safe (a cancelled receive took no datagram: it stays for
// the next call); sendto/send cancelled while waiting for buffer space sent nothing.
//
// DatagramEndpoint owns its socket (move-only; closes it when destroyed). It must outlive the
// calls awaited on it, and the bytes given to sendto/send must stay alive until the call completes
// (a temporary in the co_await's full-expression does). Loop thread only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>

#include "asyncio/coroutine.hpp"
#include "asyncio/sock_ops.hpp"
#include "asyncio/socket.hpp"

namespace asyncio {

/// A host and port to resolve (Python's (host, port) tuple). The host may be a name ("localhost").
/// (A constructor rather than an aggregate on purpose: GCC 12 bitwise-copies an aggregate temporary
/// holding a std::string when it is brace-initialized inside a co_await expression.)
struct HostPort {
    HostPort(std::string h, std::uint16_t p) : host(std::move(h)), port(p) {}
    std::string host;
    std::uint16_t port = 0;
};

struct DatagramEndpointOptions {
    /// AF_INET, AF_INET6 or AF_UNSPEC (from the addresses; AF_INET when neither is given).
    int family = AF_UNSPEC;
    /// SO_REUSEPORT on the socket before binding.
    bool reuse_port = false;
    /// SO_BROADCAST: may send to broadcast addresses.
    bool allow_broadcast = false;
};

class DatagramEndpoint {
public:
    /// No socket (every operation raises RuntimeError).
    DatagramEndpoint() noexcept = default;
    /// Wraps a datagram socket of your own (bound, or connected, or neither), e.g. AF_UNIX.
    explicit DatagramEndpoint(Socket sock);
    DatagramEndpoint(DatagramEndpoint&&) noexcept = default;
    DatagramEndpoint& operator=(DatagramEndpoint&&) noexcept = default;

    /// One datagram (at most max_size bytes of it) and its sender.
    Coroutine<std::pair<std::string, Address>> recvfrom(std::size_t max_size = 65536);
    /// One datagram, without the sender (for connected endpoints).
    Coroutine<std::string> recv(std::size_t max_size = 65536);
    /// Sends data as one datagram to address. EMSGSIZE if it is too large.
    Coroutine<> sendto(ConstBuffer data, Address address);
    /// Sends data as one datagram to the connected peer (remote_addr).
    Coroutine<> send(ConstBuffer data);

    /// Closes the socket (operations still waiting fail with EBADF). Idempotent.
    void close() noexcept { sock_.close(); }
    bool is_closing() const noexcept { return !sock_; }
    /// The bound address.
    Address sockname() const { return sock_.getsockname(); }
    /// The connected peer, nullopt if not connected.
    std::optional<Address> peername() const { return peer_; }
    /// The socket (for options: SO_RCVBUF, IP_MULTICAST_*, ...).
    Socket& socket() noexcept { return sock_; }

private:
    Socket sock_;
    std::optional<Address> peer_;
};

/// Python's loop.create_datagram_endpoint(local_addr=..., remote_addr=...): a UDP socket, bound to
/// local_addr if given, connected to remote_addr if given (both resolved with getaddrinfo; numeric
/// hosts at once). With neither, an unbound socket of options.family (AF_INET by default).
Coroutine<DatagramEndpoint> create_datagram_endpoint(std::optional<HostPort> local_addr,
                                                     std::optional<HostPort> remote_addr = std::nullopt,
                                                     DatagramEndpointOptions options = {});

}  // namespace asyncio
