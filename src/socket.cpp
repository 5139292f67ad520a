#include "asyncio/socket.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <net/if.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <system_error>

#include "asyncio/detail/io_op.hpp"
#include "asyncio/exceptions.hpp"

namespace asyncio {

namespace {

[[noreturn]] void throw_errno(const char* what) {
    throw std::system_error(errno, std::generic_category(), what);
}

}  // namespace

// ---- Address ----

Address::Address() noexcept : storage_{} { storage_.ss_family = AF_UNSPEC; }

Address::Address(const sockaddr* sa, socklen_t len) noexcept : storage_{} {
    size_ = std::min<socklen_t>(len, capacity());
    if (sa != nullptr && size_ > 0) std::memcpy(&storage_, sa, size_);
    if (sa == nullptr) size_ = 0;
}

Address Address::ipv4(std::string_view host, std::uint16_t port) {
    sockaddr_in sin{};
    sin.sin_family = AF_INET;
    sin.sin_port = htons(port);
    const std::string h(host);
    if (::inet_pton(AF_INET, h.c_str(), &sin.sin_addr) != 1)
        throw ValueError("not a numeric IPv4 address: '" + h + "'");
    return Address(reinterpret_cast<const sockaddr*>(&sin), sizeof sin);
}

Address Address::ipv6(std::string_view host, std::uint16_t port, std::uint32_t flowinfo,
                      std::uint32_t scope_id) {
    sockaddr_in6 sin6{};
    sin6.sin6_family = AF_INET6;
    sin6.sin6_port = htons(port);
    sin6.sin6_flowinfo = htonl(flowinfo);
    sin6.sin6_scope_id = scope_id;
    if (host.size() >= 2 && host.front() == '[' && host.back() == ']')
        host = host.substr(1, host.size() - 2);
    std::string h(host);
    if (const auto pct = h.find('%'); pct != std::string::npos) {
        const std::string scope = h.substr(pct + 1);
        h.resize(pct);
        unsigned idx = ::if_nametoindex(scope.c_str());
        if (idx == 0) {
            char* end = nullptr;
            const unsigned long v = std::strtoul(scope.c_str(), &end, 10);
            if (scope.empty() || end == nullptr || *end != '\0')
                throw ValueError("unknown IPv6 scope: '" + scope + "'");
            idx = static_cast<unsigned>(v);
        }
        sin6.sin6_scope_id = idx;
    }
    if (::inet_pton(AF_INET6, h.c_str(), &sin6.sin6_addr) != 1)
        throw ValueError("not a numeric IPv6 address: '" + std::string(host) + "'");
    return Address(reinterpret_cast<const sockaddr*>(&sin6), sizeof sin6);
}

Address Address::parse(std::string_view host, std::uint16_t port) {
    if (host.find(':') != std::string_view::npos || (!host.empty() && host.front() == '['))
        return ipv6(host, port);
    return ipv4(host, port);
}

Address Address::unix_path(std::string_view path) {
    sockaddr_un sun{};
    sun.sun_family = AF_UNIX;
    if (path.size() > sizeof sun.sun_path - (path.empty() || path[0] != '\0' ? 1 : 0))
        throw ValueError("Unix socket path too long: '" + std::string(path) + "'");
    std::memcpy(sun.sun_path, path.data(), path.size());
    // Abstract names are exactly as long as given; paths are NUL-terminated.
    const auto len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size() +
                                            (path.empty() || path[0] != '\0' ? 1 : 0));
    return Address(reinterpret_cast<const sockaddr*>(&sun), len);
}

int Address::family() const noexcept { return size_ == 0 ? AF_UNSPEC : storage_.ss_family; }

std::string Address::host() const {
    char buf[INET6_ADDRSTRLEN + IF_NAMESIZE + 2] = {};
    if (family() == AF_INET) {
        const auto* sin = reinterpret_cast<const sockaddr_in*>(&storage_);
        ::inet_ntop(AF_INET, &sin->sin_addr, buf, sizeof buf);
        return buf;
    }
    if (family() == AF_INET6) {
        const auto* sin6 = reinterpret_cast<const sockaddr_in6*>(&storage_);
        ::inet_ntop(AF_INET6, &sin6->sin6_addr, buf, sizeof buf);
        std::string h = buf;
        if (sin6->sin6_scope_id != 0) {
            char name[IF_NAMESIZE] = {};
            h += '%';
            if (::if_indextoname(sin6->sin6_scope_id, name) != nullptr)
                h += name;
            else
                h += std::to_string(sin6->sin6_scope_id);
        }
        return h;
    }
    return {};
}

std::uint16_t Address::port() const noexcept {
    if (family() == AF_INET) return ntohs(reinterpret_cast<const sockaddr_in*>(&storage_)->sin_port);
    if (family() == AF_INET6) return ntohs(reinterpret_cast<const sockaddr_in6*>(&storage_)->sin6_port);
    return 0;
}

std::string Address::path() const {
    if (family() != AF_UNIX) return {};
    const auto* sun = reinterpret_cast<const sockaddr_un*>(&storage_);
    const std::size_t off = offsetof(sockaddr_un, sun_path);
    if (size_ <= off) return {};
    std::size_t n = size_ - off;
    if (sun->sun_path[0] != '\0') n = ::strnlen(sun->sun_path, n);  // a path: up to its NUL
    return std::string(sun->sun_path, n);
}

std::string Address::to_string() const {
    switch (family()) {
        case AF_INET:
            return host() + ":" + std::to_string(port());
        case AF_INET6:
        {
            std::string out(1, '[');
            out += host();
            out += "]:";
            out += std::to_string(port());
            return out;
        }
        case AF_UNIX: {
            std::string p = path();
            if (!p.empty() && p[0] == '\0') p[0] = '@';
            return p;
        }
        default:
            return {};
    }
}

bool operator==(const Address& a, const Address& b) noexcept {
    return a.size_ == b.size_ && std::memcmp(&a.storage_, &b.storage_, a.size_) == 0;
}

// ---- Socket ----

Socket::Socket(int family, int type, int protocol) {
    fd_ = ::socket(family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, protocol);
    if (fd_ < 0) throw_errno("socket");
    family_ = family;
    type_ = type & ~(SOCK_NONBLOCK | SOCK_CLOEXEC);
    detail::io_forget_fd(fd_, false);
}

Socket::Socket(detail::AdoptFd, int fd, int family, int type) noexcept
    : fd_(fd), family_(family), type_(type & ~(SOCK_NONBLOCK | SOCK_CLOEXEC)) {
    detail::io_forget_fd(fd_, false);
}

Socket Socket::from_fd(int fd) {
    int domain = 0;
    int type = 0;
    socklen_t len = sizeof domain;
    if (::getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) < 0) throw_errno("socket(fileno)");
    len = sizeof type;
    if (::getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0) throw_errno("socket(fileno)");
    const int fl = ::fcntl(fd, F_GETFL);
    if (fl < 0 || ::fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) throw_errno("fcntl");
    const int fdfl = ::fcntl(fd, F_GETFD);
    if (fdfl < 0 || ::fcntl(fd, F_SETFD, fdfl | FD_CLOEXEC) < 0) throw_errno("fcntl");
    return Socket(detail::AdoptFd{}, fd, domain, type);
}

Socket::Socket(Socket&& o) noexcept
    : fd_(std::exchange(o.fd_, -1)), family_(o.family_), type_(o.type_), site_(std::move(o.site_)) {}

Socket& Socket::operator=(Socket&& o) noexcept {
    if (this != &o) {
        close();
        fd_ = std::exchange(o.fd_, -1);
        family_ = o.family_;
        type_ = o.type_;
        site_ = std::move(o.site_);
    }
    return *this;
}

Socket::~Socket() {
    if (fd_ >= 0 && site_.recorded()) [[unlikely]]  // Python's ResourceWarning
        site_.report_unclosed("<Socket fd=" + std::to_string(fd_) + ", family=" + std::to_string(family_) +
                              ", type=" + std::to_string(type_) + ">");
    close();
}

void Socket::close() noexcept {
    if (fd_ < 0) return;
    const int fd = std::exchange(fd_, -1);
    detail::io_forget_fd(fd, true);
    ::close(fd);  // on Linux the fd is released even when close() reports EINTR: never retry
}

int Socket::detach() noexcept {
    if (fd_ < 0) return -1;
    const int fd = std::exchange(fd_, -1);
    // The caller may close it behind our back: the loop must not keep assuming it is registered.
    detail::io_forget_fd(fd, true);
    return fd;
}

void Socket::bind(const Address& address) {
    if (::bind(fd_, address.data(), address.size()) < 0) throw_errno("bind");
}

void Socket::listen(int backlog) {
    if (backlog > SOMAXCONN) backlog = SOMAXCONN;
    if (backlog < 0) backlog = 0;
    if (::listen(fd_, backlog) < 0) throw_errno("listen");
}

Address Socket::getsockname() const {
    Address a;
    socklen_t len = Address::capacity();
    if (::getsockname(fd_, a.data(), &len) < 0) throw_errno("getsockname");
    a.resize(len);
    return a;
}

Address Socket::getpeername() const {
    Address a;
    socklen_t len = Address::capacity();
    if (::getpeername(fd_, a.data(), &len) < 0) throw_errno("getpeername");
    a.resize(len);
    return a;
}

void Socket::setsockopt(int level, int option, int value) {
    setsockopt(level, option, &value, sizeof value);
}

void Socket::setsockopt(int level, int option, const void* value, socklen_t size) {
    if (::setsockopt(fd_, level, option, value, size) < 0) throw_errno("setsockopt");
}

int Socket::getsockopt(int level, int option) const {
    int value = 0;
    socklen_t len = sizeof value;
    if (::getsockopt(fd_, level, option, &value, &len) < 0) throw_errno("getsockopt");
    return value;
}

void Socket::shutdown(int how) {
    if (::shutdown(fd_, how) < 0) throw_errno("shutdown");
}

std::pair<Socket, Socket> socketpair(int family, int type, int protocol) {
    int fds[2];
    if (::socketpair(family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, protocol, fds) < 0)
        throw_errno("socketpair");
    return {Socket(detail::AdoptFd{}, fds[0], family, type), Socket(detail::AdoptFd{}, fds[1], family, type)};
}

namespace detail {
void close_fd_quietly(int fd) noexcept {
    if (fd < 0) return;
    io_forget_fd(fd, true);
    ::close(fd);
}
}  // namespace detail

}  // namespace asyncio
