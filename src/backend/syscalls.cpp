// The operations as plain non-blocking system calls (syscalls.hpp), shared by the backends.
#include "backend/syscalls.hpp"

#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <ctime>
#include <exception>

#include "asyncio/event_loop.hpp"
#include "sigpipe.hpp"

namespace asyncio::detail {

/// Accept errors that belong to the connection being accepted, not to the listening socket: the
/// connection is gone, try the next one (accept(2), "Error handling").
bool accept_should_retry(int err) noexcept {
    switch (err) {
        case ECONNABORTED:
        case EPROTO:
        case ENETDOWN:
        case ENOPROTOOPT:
        case EHOSTDOWN:
        case ENONET:
        case EHOSTUNREACH:
        case EOPNOTSUPP:
        case ENETUNREACH:
            return true;
        default:
            return false;
    }
}

/// Readiness of fd right now, without blocking: 1 ready, 0 not ready, < 0 -errno.
int poll_now(int fd, short events) noexcept {
    pollfd p{fd, events, 0};
    for (;;) {
        const int r = ::poll(&p, 1, 0);
        if (r >= 0) return r > 0 ? 1 : 0;
        if (errno != EINTR) return -errno;
    }
}

/// write(2) to a pipe whose reader is gone raises SIGPIPE, which kills a program that did not
/// ignore it (send has MSG_NOSIGNAL; write has nothing alike). So SIGPIPE is blocked in this
/// thread around the call, and one raised by it (thread-directed, so pending while blocked) is
/// taken back before unblocking: the caller sees EPIPE only. Two cheap syscalls per pipe write.
ssize_t write_without_sigpipe(int fd, const void* buf, std::size_t len) noexcept {
    return call_without_sigpipe([&] { return ::write(fd, buf, len); });
}

/// Performs op's system call once (EINTR retried). Returns the result, -EAGAIN if it would block,
/// or -errno. `retry` is false for the first attempt (from submit) and true after readiness.
std::int64_t attempt(IoOp& op, bool retry) noexcept {
    for (;;) {
        ssize_t r;
        switch (op.kind) {
            case IoKind::readable:
            case IoKind::writable:
                // After an event, readiness is what was reported. The first attempt asks poll():
                // with edge-triggered epoll a fd that is already ready would give no new edge.
                if (retry) return 0;
                r = poll_now(op.fd, op.kind == IoKind::readable ? POLLIN : POLLOUT);
                if (r < 0) return r;
                return r > 0 ? 0 : -EAGAIN;
            case IoKind::recv:
                r = ::recv(op.fd, op.buf, op.len, op.flags);
                break;
            case IoKind::send:
                r = ::send(op.fd, op.buf, op.len, op.flags | MSG_NOSIGNAL);
                break;
            case IoKind::read:
                r = ::read(op.fd, op.buf, op.len);
                break;
            case IoKind::write:
                r = write_without_sigpipe(op.fd, op.buf, op.len);
                break;
            case IoKind::recvfrom: {
                socklen_t len = op.addrlen;
                r = ::recvfrom(op.fd, op.buf, op.len, op.flags, static_cast<sockaddr*>(op.addr),
                               op.addr != nullptr ? &len : nullptr);
                if (r >= 0) op.addrlen = len;
                break;
            }
            case IoKind::sendto:
                r = ::sendto(op.fd, op.buf, op.len, op.flags | MSG_NOSIGNAL,
                             static_cast<const sockaddr*>(op.addr), op.addrlen);
                break;
            case IoKind::accept: {
                socklen_t len = op.addrlen;
                r = ::accept4(op.fd, static_cast<sockaddr*>(op.addr), op.addr != nullptr ? &len : nullptr,
                              SOCK_NONBLOCK | SOCK_CLOEXEC);
                if (r >= 0) {
                    op.addrlen = len;
                    return r;
                }
                if (accept_should_retry(errno)) continue;
                break;
            }
            case IoKind::connect: {
                if (!retry) {
                    r = ::connect(op.fd, static_cast<const sockaddr*>(op.addr), op.addrlen);
                    if (r == 0) return 0;
                    // EINTR: the connection goes on in the background, as EINPROGRESS.
                    if (errno == EINPROGRESS || errno == EINTR) return -EAGAIN;
                    // EAGAIN from connect() is not "would block" (a Unix socket whose listener's
                    // backlog is full, or no local port left): no readiness event will announce
                    // that it went away, so it is an error for the caller, as libuv reports it.
                    return -errno;
                }
                int err = 0;
                socklen_t len = sizeof err;
                if (::getsockopt(op.fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) return -errno;
                if (err != 0) return -err;
                // SO_ERROR is 0 both when connected and while still connecting (a stale edge):
                // connect() again tells them apart.
                if (::connect(op.fd, static_cast<const sockaddr*>(op.addr), op.addrlen) == 0) return 0;
                if (errno == EISCONN) return 0;
                if (errno == EALREADY || errno == EINPROGRESS || errno == EINTR) return -EAGAIN;
                return -errno;
            }
            default:
                return -EINVAL;
        }
        if (r >= 0) return r;
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return -EAGAIN;
        return -errno;
    }
}

void signal_eventfd(int fd) noexcept {
    const std::uint64_t one = 1;
    [[maybe_unused]] ssize_t r = ::write(fd, &one, sizeof one);
}

void run_watcher_callback(EventLoop& loop, std::shared_ptr<Callback> cb) noexcept {
    if (!cb) return;
    try {
        (*cb)();
    } catch (...) {
        loop.call_exception_handler({"Exception in callback", std::current_exception(), {}});
    }
}

}  // namespace asyncio::detail
