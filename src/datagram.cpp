#include "asyncio/datagram.hpp"

#include <netdb.h>

#include <system_error>
#include <vector>

#include "asyncio/dns.hpp"
#include "asyncio/exceptions.hpp"

namespace asyncio {

namespace {

Socket& need(Socket& s, const char* what) {
    if (!s) throw std::system_error(EBADF, std::generic_category(), what);
    return s;
}

}  // namespace

DatagramEndpoint::DatagramEndpoint(Socket sock) : sock_(std::move(sock)) {
    if (!sock_) throw ValueError("DatagramEndpoint of a closed socket");
    try {
        peer_ = sock_.getpeername();
    } catch (const std::system_error&) {
        // not connected
    }
}

Coroutine<std::pair<std::string, Address>> DatagramEndpoint::recvfrom(std::size_t max_size) {
    co_return co_await sock_recvfrom(need(sock_, "recvfrom"), max_size);
}

Coroutine<std::string> DatagramEndpoint::recv(std::size_t max_size) {
    auto [data, from] = co_await sock_recvfrom(need(sock_, "recv"), max_size);
    (void)from;
    co_return std::move(data);
}

Coroutine<> DatagramEndpoint::sendto(ConstBuffer data, Address address) {
    (void)co_await sock_sendto(need(sock_, "sendto"), data, address);
}

Coroutine<> DatagramEndpoint::send(ConstBuffer data) {
    if (!peer_) throw std::system_error(EDESTADDRREQ, std::generic_category(), "send on an unconnected endpoint");
    (void)co_await sock_send(need(sock_, "send"), data);
}

Coroutine<DatagramEndpoint> create_datagram_endpoint(std::optional<HostPort> local_addr,
                                                     std::optional<HostPort> remote_addr,
                                                     DatagramEndpointOptions options) {
    int family = options.family;
    std::optional<Address> local;
    std::optional<Address> remote;
    if (remote_addr) {
        const std::vector<AddrInfo> r = co_await getaddrinfo(remote_addr->host, remote_addr->port, family, SOCK_DGRAM);
        if (r.empty())
            throw std::system_error(std::make_error_code(std::errc::address_not_available),
                                    "getaddrinfo() returned empty list");
        remote = r.front().address;
        family = r.front().family;
    }
    if (local_addr) {
        const std::vector<AddrInfo> l =
            co_await getaddrinfo(local_addr->host, local_addr->port, family, SOCK_DGRAM, 0, AI_PASSIVE);
        if (l.empty())
            throw std::system_error(std::make_error_code(std::errc::address_not_available),
                                    "getaddrinfo() returned empty list");
        local = l.front().address;
        family = l.front().family;
    }
    if (family == AF_UNSPEC) family = AF_INET;
    Socket sock(family, SOCK_DGRAM);
    if (options.reuse_port) sock.setsockopt(SOL_SOCKET, SO_REUSEPORT, 1);
    if (options.allow_broadcast) sock.setsockopt(SOL_SOCKET, SO_BROADCAST, 1);
    if (local) sock.bind(*local);
    if (remote) co_await sock_connect(sock, *remote);  // (immediate for UDP)
    co_return DatagramEndpoint(std::move(sock));
}

}  // namespace asyncio
