// PipeTransport (transport.hpp): one end of a pipe (FIFO, tty) under a stream, read(2)/write(2)
// operations on the backend.
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

#include "transport.hpp"

namespace asyncio::detail {

PipeTransport::PipeTransport(int fd, bool writer, bool fifo) noexcept : fd_(fd), writer_(writer), fifo_(fifo) {
    io_forget_fd(fd_, /*closing=*/false);  // a number the library did not know: start afresh
}

bool PipeTransport::start(EventLoop& loop, IoOp& op) {
    // A read pipe cannot send and a write pipe cannot receive: EBADF, as read(2)/write(2) on
    // the wrong end would say.
    const bool wants_write = op.kind == IoKind::send || op.kind == IoKind::sendmsg;
    if (op.kind == IoKind::sendmsg) {
        // A gathered send (gathers_sends()): the same buffers as one writev.
        const auto* msg = static_cast<const msghdr*>(op.buf);
        op.kind = IoKind::writev;
        op.buf = msg->msg_iov;
        op.iovcnt = static_cast<std::uint32_t>(msg->msg_iovlen);
    } else {
        op.kind = wants_write ? IoKind::write : IoKind::read;
    }
    op.fd = wants_write == writer_ ? fd_ : -1;  // -1 once closed: the backend says EBADF
    op.short_means_not_ready = fifo_;
    return io_submit(loop, op);
}

bool PipeTransport::cancel(EventLoop& loop, IoOp& op) noexcept { return io_cancel(loop, op); }

std::int64_t PipeTransport::try_send(EventLoop& loop, const char* p, std::size_t n) {
    if (!writer_ || fd_ < 0) return -EBADF;
    IoOp op;
    op.kind = IoKind::write;
    op.fd = fd_;
    op.short_means_not_ready = fifo_;
    op.buf = const_cast<char*>(p);
    op.len = n;
    if (!io_try(loop, op)) return 0;
    return op.result;
}

void PipeTransport::close() noexcept {
    if (fd_ < 0) return;
    io_forget_fd(fd_, /*closing=*/true);  // first: pending operations fail with EBADF
    ::close(fd_);
    fd_ = -1;
}

std::any PipeTransport::get_extra_info(std::string_view name, std::any default_value) {
    if (name == "pipe" && fd_ >= 0) return fd_;
    return default_value;
}

}  // namespace asyncio::detail
