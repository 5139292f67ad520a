// The descriptors of the I/O operation kinds (op_type.hpp): the one place that says, per kind,
// which system call it is, which io_uring request, which queue it waits in. A new kind is a tag
// in IoKind and an entry in kOpTypes below.
#include "backend/op_type.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>

#include "backend/syscalls.hpp"
#include "sigpipe.hpp"

#ifdef ASYNCIO_HAVE_URING
#include <liburing.h>
#endif

namespace asyncio::detail {
namespace {

/// The result of a call that returned r (errno set when r < 0): r, -EAGAIN for "would block",
/// or -errno; EINTR sets `again` (the caller calls again).
inline std::int64_t outcome(ssize_t r, bool& again) noexcept {
    again = false;
    if (r >= 0) return r;
    if (errno == EINTR) {
        again = true;
        return 0;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK) return -EAGAIN;
    return -errno;
}

/// Calls f() until it is not interrupted; its outcome().
template <class F>
std::int64_t call(F f) noexcept {
    for (;;) {
        bool again;
        const std::int64_t r = outcome(f(), again);
        if (!again) return r;
    }
}

iovec* iov_of(IoOp& op) noexcept { return static_cast<iovec*>(op.buf); }
msghdr* msg_of(IoOp& op) noexcept { return static_cast<msghdr*>(op.buf); }

// ---- perform: the non-blocking system calls ----

std::int64_t wait_ready(IoOp& op, bool retry, short events) noexcept {
    // After an event, readiness is what was reported. The first attempt asks poll(): with
    // edge-triggered epoll a fd that is already ready would give no new edge.
    if (retry) return 0;
    const int r = poll_now(op.fd, events);
    if (r < 0) return r;
    return r > 0 ? 0 : -EAGAIN;
}
std::int64_t perform_readable(IoOp& op, bool retry) noexcept { return wait_ready(op, retry, POLLIN); }
std::int64_t perform_writable(IoOp& op, bool retry) noexcept { return wait_ready(op, retry, POLLOUT); }

std::int64_t perform_recv(IoOp& op, bool) noexcept {
    return call([&] { return ::recv(op.fd, op.buf, op.len, op.flags); });
}
std::int64_t perform_send(IoOp& op, bool) noexcept {
    return call([&] { return ::send(op.fd, op.buf, op.len, op.flags | MSG_NOSIGNAL); });
}
std::int64_t perform_read(IoOp& op, bool) noexcept {
    return call([&] { return ::read(op.fd, op.buf, op.len); });
}
std::int64_t perform_write(IoOp& op, bool) noexcept {
    return call([&] { return write_without_sigpipe(op.fd, op.buf, op.len); });
}

std::int64_t perform_recvfrom(IoOp& op, bool) noexcept {
    return call([&] {
        socklen_t len = op.addrlen;
        const ssize_t r = ::recvfrom(op.fd, op.buf, op.len, op.flags, static_cast<sockaddr*>(op.addr),
                                     op.addr != nullptr ? &len : nullptr);
        if (r >= 0) op.addrlen = len;
        return r;
    });
}
std::int64_t perform_sendto(IoOp& op, bool) noexcept {
    return call([&] {
        return ::sendto(op.fd, op.buf, op.len, op.flags | MSG_NOSIGNAL, static_cast<const sockaddr*>(op.addr),
                        op.addrlen);
    });
}

std::int64_t perform_accept(IoOp& op, bool) noexcept {
    for (;;) {
        socklen_t len = op.addrlen;
        const int r = ::accept4(op.fd, static_cast<sockaddr*>(op.addr), op.addr != nullptr ? &len : nullptr,
                                SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (r >= 0) {
            op.addrlen = len;
            return r;
        }
        if (errno == EINTR || accept_should_retry(errno)) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return -EAGAIN;
        return -errno;
    }
}

std::int64_t perform_connect(IoOp& op, bool retry) noexcept {
    const auto* addr = static_cast<const sockaddr*>(op.addr);
    if (!retry) {
        if (::connect(op.fd, addr, op.addrlen) == 0) return 0;
        // EINTR: the connection goes on in the background, as EINPROGRESS.
        if (errno == EINPROGRESS || errno == EINTR) return -EAGAIN;
        // EAGAIN from connect() is not "would block" (a Unix socket whose listener's backlog is
        // full, or no local port left): no readiness event will announce that it went away, so
        // it is an error for the caller, as libuv reports it.
        return -errno;
    }
    int err = 0;
    socklen_t len = sizeof err;
    if (::getsockopt(op.fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) return -errno;
    if (err != 0) return -err;
    // SO_ERROR is 0 both when connected and while still connecting (a stale edge): connect()
    // again tells them apart.
    if (::connect(op.fd, addr, op.addrlen) == 0) return 0;
    if (errno == EISCONN) return 0;
    if (errno == EALREADY || errno == EINPROGRESS || errno == EINTR) return -EAGAIN;
    return -errno;
}

std::int64_t perform_readv(IoOp& op, bool) noexcept {
    return call([&] { return ::readv(op.fd, iov_of(op), static_cast<int>(op.iovcnt)); });
}
std::int64_t perform_writev(IoOp& op, bool) noexcept {
    return call([&] {
        return call_without_sigpipe([&] { return ::writev(op.fd, iov_of(op), static_cast<int>(op.iovcnt)); });
    });
}
std::int64_t perform_recvmsg(IoOp& op, bool) noexcept {
    return call([&] { return ::recvmsg(op.fd, msg_of(op), op.flags); });
}
std::int64_t perform_sendmsg(IoOp& op, bool) noexcept {
    return call([&] { return ::sendmsg(op.fd, msg_of(op), op.flags | MSG_NOSIGNAL); });
}

// ---- cut/uncut: seeded chaos shortens a vectored op in its iovecs ----

void cut_iov(iovec* iov, std::size_t& count, std::size_t n, OpCut& cut) noexcept {
    cut.active = true;
    cut.count = count;
    std::size_t i = 0;
    while (i + 1 < count && n > iov[i].iov_len) n -= iov[i++].iov_len;
    cut.index = i;
    cut.last_len = iov[i].iov_len;
    if (n < iov[i].iov_len) iov[i].iov_len = n;
    count = i + 1;
}
void cut_vec(IoOp& op, std::size_t n, OpCut& cut) noexcept {
    std::size_t count = op.iovcnt;
    cut_iov(iov_of(op), count, n, cut);
    op.iovcnt = static_cast<std::uint32_t>(count);
}
void uncut_vec(IoOp& op, const OpCut& cut) noexcept {
    iov_of(op)[cut.index].iov_len = cut.last_len;
    op.iovcnt = static_cast<std::uint32_t>(cut.count);
}
void cut_msg(IoOp& op, std::size_t n, OpCut& cut) noexcept {
    msghdr& m = *msg_of(op);
    std::size_t count = m.msg_iovlen;
    cut_iov(m.msg_iov, count, n, cut);
    m.msg_iovlen = count;
}
void uncut_msg(IoOp& op, const OpCut& cut) noexcept {
    msghdr& m = *msg_of(op);
    m.msg_iov[cut.index].iov_len = cut.last_len;
    m.msg_iovlen = cut.count;
}

// ---- prepare: the io_uring requests ----
#ifdef ASYNCIO_HAVE_URING

void prepare_recv(IoOp& op, io_uring_sqe* sqe, UringScratch&, unsigned len) noexcept {
    io_uring_prep_recv(sqe, op.fd, op.buf, len, op.flags);
}
void prepare_send(IoOp& op, io_uring_sqe* sqe, UringScratch&, unsigned len) noexcept {
    io_uring_prep_send(sqe, op.fd, op.buf, len, op.flags | MSG_NOSIGNAL);
}
void prepare_accept(IoOp& op, io_uring_sqe* sqe, UringScratch&, unsigned) noexcept {
    io_uring_prep_accept(sqe, op.fd, static_cast<sockaddr*>(op.addr),
                         op.addr != nullptr ? reinterpret_cast<socklen_t*>(&op.addrlen) : nullptr,
                         SOCK_NONBLOCK | SOCK_CLOEXEC);
}
void prepare_read(IoOp& op, io_uring_sqe* sqe, UringScratch&, unsigned len) noexcept {
    io_uring_prep_read(sqe, op.fd, op.buf, len, ~std::uint64_t{0});  // offset -1: the file position
}
/// recvfrom/sendto as RECVMSG/SENDMSG over a msghdr in the scratch space.
void build_msg(IoOp& op, UringScratch& s, unsigned len) noexcept {
    s.iov.iov_base = op.buf;
    s.iov.iov_len = len;
    s.msg = msghdr{};
    s.msg.msg_name = op.addr;
    s.msg.msg_namelen = op.addr != nullptr ? op.addrlen : 0;
    s.msg.msg_iov = &s.iov;
    s.msg.msg_iovlen = 1;
}
void prepare_recvfrom(IoOp& op, io_uring_sqe* sqe, UringScratch& s, unsigned len) noexcept {
    build_msg(op, s, len);
    io_uring_prep_recvmsg(sqe, op.fd, &s.msg, static_cast<unsigned>(op.flags));
}
void prepare_sendto(IoOp& op, io_uring_sqe* sqe, UringScratch& s, unsigned len) noexcept {
    build_msg(op, s, len);
    io_uring_prep_sendmsg(sqe, op.fd, &s.msg, static_cast<unsigned>(op.flags | MSG_NOSIGNAL));
}
void prepare_readv(IoOp& op, io_uring_sqe* sqe, UringScratch&, unsigned) noexcept {
    io_uring_prep_readv(sqe, op.fd, iov_of(op), op.iovcnt, ~std::uint64_t{0});
}
void prepare_recvmsg(IoOp& op, io_uring_sqe* sqe, UringScratch&, unsigned) noexcept {
    io_uring_prep_recvmsg(sqe, op.fd, msg_of(op), static_cast<unsigned>(op.flags));
}
void prepare_sendmsg(IoOp& op, io_uring_sqe* sqe, UringScratch&, unsigned) noexcept {
    io_uring_prep_sendmsg(sqe, op.fd, msg_of(op), static_cast<unsigned>(op.flags | MSG_NOSIGNAL));
}
void complete_recvfrom(IoOp& op, const UringScratch& s) noexcept { op.addrlen = s.msg.msg_namelen; }

#define ASYNCIO_PREPARE(f) f
#else
#define ASYNCIO_PREPARE(f) nullptr
#endif

}  // namespace

// Indexed by IoKind, in the enum's order (checked below). A kind without `prepare` is served on
// io_uring as POLL_ADD then perform: connect, and write/writev, because an io_uring write to a
// pipe with no reader raises SIGPIPE with no flag against it (perform blocks it around the
// call). A socket's gathered send is sendmsg (MSG_NOSIGNAL), which has its request.
constexpr OpType kOpTypes[kIoKindCount] = {
    {.kind = IoKind::readable, .name = "readable", .reader = true, .result_name = "result",
     .perform = perform_readable},
    {.kind = IoKind::writable, .name = "writable", .result_name = "result",
     .perform = perform_writable},
    {.kind = IoKind::recv, .name = "recv", .reader = true, .chaos_split = ChaosSplit::stream_socket,
     .perform = perform_recv, .prepare = ASYNCIO_PREPARE(prepare_recv)},
    {.kind = IoKind::send, .name = "send", .chaos_split = ChaosSplit::stream_socket, .perform = perform_send,
     .prepare = ASYNCIO_PREPARE(prepare_send)},
    {.kind = IoKind::accept, .name = "accept", .reader = true, .result_is_fd = true,
     .result_name = "new_fd", .perform = perform_accept, .prepare = ASYNCIO_PREPARE(prepare_accept),
     .retry_error = accept_should_retry},
    {.kind = IoKind::connect, .name = "connect", .result_name = "result",
     .perform = perform_connect},  // POLL_ADD(POLLOUT), then SO_ERROR: a second CONNECT says EALREADY
    {.kind = IoKind::recvfrom, .name = "recvfrom", .reader = true, .perform = perform_recvfrom,
     .prepare = ASYNCIO_PREPARE(prepare_recvfrom), .complete = ASYNCIO_PREPARE(complete_recvfrom)},
    {.kind = IoKind::sendto, .name = "sendto", .perform = perform_sendto, .prepare = ASYNCIO_PREPARE(prepare_sendto)},
    {.kind = IoKind::read, .name = "read", .reader = true, .chaos_split = ChaosSplit::flagged,
     .perform = perform_read, .prepare = ASYNCIO_PREPARE(prepare_read)},
    {.kind = IoKind::write, .name = "write", .chaos_split = ChaosSplit::flagged, .perform = perform_write},
    {.kind = IoKind::readv, .name = "readv", .reader = true, .chaos_split = ChaosSplit::flagged, .cut = cut_vec,
     .uncut = uncut_vec, .perform = perform_readv, .prepare = ASYNCIO_PREPARE(prepare_readv)},
    {.kind = IoKind::writev, .name = "writev", .chaos_split = ChaosSplit::flagged, .cut = cut_vec,
     .uncut = uncut_vec, .perform = perform_writev},
    {.kind = IoKind::recvmsg, .name = "recvmsg", .reader = true, .chaos_split = ChaosSplit::stream_socket,
     .cut = cut_msg, .uncut = uncut_msg, .perform = perform_recvmsg, .prepare = ASYNCIO_PREPARE(prepare_recvmsg)},
    {.kind = IoKind::sendmsg, .name = "sendmsg", .chaos_split = ChaosSplit::stream_socket, .cut = cut_msg,
     .uncut = uncut_msg, .perform = perform_sendmsg, .prepare = ASYNCIO_PREPARE(prepare_sendmsg)},
};

// Each entry's position is its kind's: a descriptor out of place would serve another kind.
constexpr bool in_enum_order() {
    for (std::size_t i = 0; i < kIoKindCount; ++i)
        if (static_cast<std::size_t>(kOpTypes[i].kind) != i || kOpTypes[i].perform == nullptr) return false;
    return true;
}
static_assert(in_enum_order(), "kOpTypes: one descriptor per IoKind, in the enum's order");

}  // namespace asyncio::detail
