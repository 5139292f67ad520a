// asyncio::Socket and asyncio::Address: the socket objects that the loop's sock_* coroutines
// (sock_ops.hpp) work on, as Python's socket.socket and its address tuples.
//
//   asyncio::Socket listener(AF_INET6, SOCK_STREAM);
//   listener.setsockopt(SOL_SOCKET, SO_REUSEADDR, 1);
//   listener.bind(asyncio::Address::parse("::1", 0));   // port 0: the kernel picks one
//   listener.listen();
//   std::uint16_t port = listener.getsockname().port();
//
// Socket owns one file descriptor: it is always non-blocking and close-on-exec, move-only, and
// closes the fd when destroyed (or on close()). IPv4, IPv6 and Unix-domain sockets (any family the
// kernel has, really). Errors are std::system_error carrying errno (generic_category), as Python's
// OSError subclasses carry it: e.code() == std::errc::connection_refused is ConnectionRefusedError.
//
// Sockets belong to the thread of the loop that uses them: close one there (or after that loop is
// gone), so that the loop forgets the fd before its number is reused. Closing a socket while a task
// awaits an operation on it makes that operation fail with std::system_error(EBADF).
//
// SIGPIPE: every send of this library uses MSG_NOSIGNAL, so writing to a socket whose peer is gone
// raises std::system_error(EPIPE or ECONNRESET) instead of killing the process.
//
// This header includes <sys/socket.h>, <netinet/in.h> and <sys/un.h> for the AF_*, SOCK_*, SOL_*,
// SO_* and SHUT_* constants that its API takes, as Python's socket module exports them.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

#include "asyncio/detail/creation_site.hpp"

namespace asyncio {

/// A socket address: sockaddr_storage and its length. What Python writes as ("127.0.0.1", 8080),
/// ("::1", 8080, flowinfo, scope_id) or "/tmp/sock".
class Address {
public:
    /// An empty address (family AF_UNSPEC, size 0).
    Address() noexcept;
    /// Copies len bytes of sa (at most sizeof(sockaddr_storage)).
    Address(const sockaddr* sa, socklen_t len) noexcept;

    /// A numeric IPv4 or IPv6 host ("127.0.0.1", "::1", "[::1]", "fe80::1%lo") and a port. Host
    /// names are not resolved here (use getaddrinfo, dns.hpp): ValueError if host is not numeric.
    static Address parse(std::string_view host, std::uint16_t port);
    /// An IPv4 address; ValueError unless host is a dotted quad.
    static Address ipv4(std::string_view host, std::uint16_t port);
    /// An IPv6 address; ValueError unless host is numeric IPv6.
    static Address ipv6(std::string_view host, std::uint16_t port, std::uint32_t flowinfo = 0,
                        std::uint32_t scope_id = 0);
    /// A Unix-domain address. A path starting with '\0' is in the abstract namespace (Linux).
    /// ValueError if it does not fit in sun_path.
    static Address unix_path(std::string_view path);

    /// AF_INET, AF_INET6, AF_UNIX, or AF_UNSPEC when empty.
    int family() const noexcept;
    /// The numeric host ("127.0.0.1", "::1", with "%scope" if any); "" for other families.
    std::string host() const;
    /// The port (0 for non-IP families).
    std::uint16_t port() const noexcept;
    /// The path of an AF_UNIX address ("" if unnamed; starts with '\0' if abstract).
    std::string path() const;
    /// "127.0.0.1:8080", "[::1]:8080", "/tmp/sock", "@abstract", "" when empty.
    std::string to_string() const;

    const sockaddr* data() const noexcept { return reinterpret_cast<const sockaddr*>(&storage_); }
    sockaddr* data() noexcept { return reinterpret_cast<sockaddr*>(&storage_); }
    socklen_t size() const noexcept { return size_; }
    static constexpr socklen_t capacity() noexcept { return sizeof(sockaddr_storage); }
    /// Sets the length after the kernel filled data() (accept, recvfrom, getsockname).
    void resize(socklen_t len) noexcept { size_ = len <= capacity() ? len : capacity(); }

    friend bool operator==(const Address& a, const Address& b) noexcept;

private:
    sockaddr_storage storage_;
    socklen_t size_ = 0;
};

namespace detail {
struct AdoptFd {};  // Socket's constructor for a fd that is already non-blocking and close-on-exec
}  // namespace detail

/// A non-blocking socket owning its file descriptor (see above).
class Socket {
public:
    /// No socket: fileno() == -1.
    Socket() noexcept = default;
    /// socket(family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, protocol), as Python's
    /// socket.socket(family, type, proto). Throws std::system_error.
    explicit Socket(int family, int type = SOCK_STREAM, int protocol = 0);
    /// Takes ownership of an open socket fd (Python's socket.socket(fileno=fd)): makes it
    /// non-blocking and close-on-exec and reads its family and type. Throws std::system_error (the fd
    /// is then still the caller's).
    static Socket from_fd(int fd);
    /// Internal: owns fd, already non-blocking and close-on-exec, of this family and type.
    Socket(detail::AdoptFd, int fd, int family, int type) noexcept;

    Socket(Socket&& o) noexcept;
    Socket& operator=(Socket&& o) noexcept;
    Socket(const Socket&) = delete;
    Socket& operator=(const Socket&) = delete;
    /// Closes the socket.
    ~Socket();

    /// The fd, or -1 once closed or detached.
    int fileno() const noexcept { return fd_; }
    explicit operator bool() const noexcept { return fd_ >= 0; }
    int family() const noexcept { return family_; }
    /// SOCK_STREAM, SOCK_DGRAM, ... (without the NONBLOCK/CLOEXEC flags).
    int type() const noexcept { return type_; }

    /// Closes the fd (the loop of this thread first fails operations pending on it with EBADF).
    /// Idempotent; never throws (errors of close(2) are ignored, as the fd is gone either way).
    void close() noexcept;
    /// Gives up ownership: returns the fd (still non-blocking) and leaves the socket closed.
    int detach() noexcept;

    /// bind(2). For AF_INET/AF_INET6 servers, set SO_REUSEADDR first if wanted.
    void bind(const Address& address);
    /// listen(2); the default backlog is the one Python's socket.listen() picks (128 or SOMAXCONN if
    /// smaller).
    void listen(int backlog = 128);
    /// The local address (after bind, or the one the kernel picked on connect).
    Address getsockname() const;
    /// The peer's address; std::system_error(ENOTCONN) if not connected.
    Address getpeername() const;
    /// setsockopt(2) with an int value (SO_REUSEADDR, SO_REUSEPORT, TCP_NODELAY, IPV6_V6ONLY, ...).
    void setsockopt(int level, int option, int value);
    /// setsockopt(2) with any value (struct linger, ...).
    void setsockopt(int level, int option, const void* value, socklen_t size);
    /// getsockopt(2) of an int option.
    int getsockopt(int level, int option) const;
    /// shutdown(2): SHUT_WR sends EOF to the peer and keeps reading possible (Python's
    /// sock.shutdown(socket.SHUT_WR)); SHUT_RD, SHUT_RDWR.
    void shutdown(int how);

private:
    int fd_ = -1;
    int family_ = AF_UNSPEC;
    int type_ = 0;
    detail::CreationSite site_;  // debug mode: where it was made ("unclosed <Socket ...>")
};

/// Python's socket.socketpair(): two connected sockets (AF_UNIX by default).
std::pair<Socket, Socket> socketpair(int family = AF_UNIX, int type = SOCK_STREAM, int protocol = 0);

}  // namespace asyncio
