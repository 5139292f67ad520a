// What the operations' system calls share (syscalls.hpp): the backends' helpers; each kind's call is in op_type.cpp.
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
