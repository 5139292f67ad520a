// SocketTransport (transport.hpp): a connected socket under a stream, one backend operation per
// transport operation.
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <cerrno>
#include <system_error>
#include <utility>

#include "asyncio/event_loop.hpp"
#include "backend/backend.hpp"
#include "transport.hpp"

namespace asyncio::detail {

SocketTransport::SocketTransport(Socket sock, Address peer)
    : sock_(std::move(sock)), peer_(peer), stream_(sock_.type() == SOCK_STREAM) {
    if ((sock_.family() == AF_INET || sock_.family() == AF_INET6) && sock_.type() == SOCK_STREAM) {
        const int one = 1;
        ::setsockopt(sock_.fileno(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);  // as asyncio
    }
}

bool SocketTransport::start(EventLoop& loop, IoOp& op) {
    op.fd = sock_.fileno();  // -1 once closed: the backend completes it with -EBADF
    op.short_means_not_ready = stream_;
    // A stream's sends are submitted, not tried, where that saves the system call.
    op.defer = (op.kind == IoKind::send || op.kind == IoKind::sendmsg) && defers_sends(loop);
    return io_submit(loop, op);
}

bool SocketTransport::defers_sends(EventLoop& loop) const noexcept {
    return stream_ && loop.backend().defers_submissions();
}

bool SocketTransport::waits_in_kernel(EventLoop& loop) const noexcept { return loop.backend().defers_submissions(); }

bool SocketTransport::provides_buffers(EventLoop& loop) noexcept {
    // Stream sockets only: a datagram's boundaries would be lost in a stash.
    return stream_ && sock_ && loop.backend().provides_buffers();
}

bool SocketTransport::cancel(EventLoop& loop, IoOp& op) noexcept { return io_cancel(loop, op); }

std::int64_t SocketTransport::try_io(EventLoop& loop, IoKind kind, char* p, std::size_t n) {
    IoOp op;
    op.kind = kind;
    op.fd = sock_.fileno();
    op.short_means_not_ready = stream_;
    op.buf = p;
    op.len = n;
    if (!io_try(loop, op)) return -EAGAIN;
    return op.result;
}

std::int64_t SocketTransport::try_send(EventLoop& loop, const char* p, std::size_t n) {
    const std::int64_t r = try_io(loop, IoKind::send, const_cast<char*>(p), n);
    return r == -EAGAIN ? 0 : r;  // (the contract: 0 when it would have to wait)
}

std::int64_t SocketTransport::try_recv(EventLoop& loop, char* p, std::size_t n) {
    return try_io(loop, IoKind::recv, p, n);
}

void SocketTransport::write_eof() noexcept {
    if (sock_) ::shutdown(sock_.fileno(), SHUT_WR);  // an error (peer gone) shows on the next receive
}

void SocketTransport::close() noexcept { sock_.close(); }  // pending operations fail with EBADF

std::any SocketTransport::get_extra_info(std::string_view name, std::any default_value) {
    if (name == "peername") {
        if (peer_.family() == AF_UNSPEC) return default_value;
        return peer_;
    }
    if (name == "sockname") {
        if (!sockname_ && sock_) {
            try {
                sockname_ = sock_.getsockname();
            } catch (const std::system_error&) {
                return default_value;
            }
        }
        if (!sockname_) return default_value;
        return *sockname_;
    }
    if (name == "socket") return sock_.fileno();
    return default_value;
}

}  // namespace asyncio::detail
