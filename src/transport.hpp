// What a stream connection runs on: a transport moves bytes, the stream protocol (StreamCore,
// stream_core.hpp) decides when and how many. asyncio's split, without the callbacks: the
// protocol starts receive and send operations on the transport and awaits them; it never
// names a socket. A socket is the transport today; a TLS session (over another transport) and
// pipes plug in underneath by implementing this interface. Private to src/.
//
// Operations are IoOps (detail/io_op.hpp) owned by the caller: it sets kind (recv or send),
// buf, len and complete; the transport fills in the rest. The outcome comes back as from the
// backend: `result` = bytes (0 = EOF for a receive) or -errno, and `complete(op)` runs from the
// loop's ready queue when the operation did not complete at once. A transport that does more
// than one system call per operation (TLS: read ciphertext, decrypt) completes the caller's op
// itself, through the loop's ready queue, with the same states.
#pragma once

#include <any>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <optional>
#include <string_view>

#include "asyncio/detail/io_op.hpp"
#include "asyncio/socket.hpp"

namespace asyncio::detail {

class Transport {
public:
    Transport() = default;
    Transport(const Transport&) = delete;
    Transport& operator=(const Transport&) = delete;
    virtual ~Transport() = default;

    /// Starts op (op.kind is IoKind::recv or IoKind::send; IoKind::readable where has_try_recv()). True: it completed at once (op.result
    /// set, op.complete not called). False: pending; op.complete(&op) runs once it completes.
    /// A closed transport completes it at once with -EBADF. Throws only std::bad_alloc.
    virtual bool start(EventLoop& loop, IoOp& op) = 0;
    /// Withdraws a pending op. True: withdrawn; it did nothing (a withdrawn receive consumed no
    /// byte) and will not complete. False: it had completed (its completion may be queued, and
    /// its result stands).
    virtual bool cancel(EventLoop& loop, IoOp& op) noexcept = 0;
    /// One send that never waits, for a write() with nothing buffered ahead of it: the number of
    /// bytes taken (0: it would have to wait), or -errno.
    virtual std::int64_t try_send(EventLoop& loop, const char* p, std::size_t n) = 0;
    /// One receive that never waits, into a buffer the caller picks at the moment it needs bytes
    /// (TLS: OpenSSL's record buffer, so ciphertext is not copied from a buffer of our own):
    /// bytes received, 0 at EOF, -EAGAIN when it would have to wait (an IoKind::readable op
    /// started on this transport then says when to try again), or -errno. It may answer -EAGAIN
    /// without a system call when the backend knows the fd is drained. -EOPNOTSUPP (the
    /// default): no such call here; receive with start().
    virtual std::int64_t try_recv(EventLoop& loop, char* p, std::size_t n) {
        (void)loop;
        (void)p;
        (void)n;
        return -EOPNOTSUPP;
    }
    /// Whether try_recv() is supported (and start() takes an IoKind::readable op).
    virtual bool has_try_recv() const noexcept { return false; }
    /// Whether a receive started with start() waits inside the kernel and costs no system call
    /// of its own (the loop's backend is io_uring), where try_recv() after readiness costs one.
    virtual bool waits_in_kernel(EventLoop& loop) const noexcept {
        (void)loop;
        return false;
    }
    /// Whether a send is cheaper submitted than tried (the loop's backend defers submissions,
    /// Backend::defers_submissions()): write() then skips try_send() and buffers, and the
    /// flusher's sends go to the kernel with the loop's next poll, no system call of their own.
    virtual bool defers_sends(EventLoop& loop) const noexcept {
        (void)loop;
        return false;
    }
    /// Whether start() takes an IoKind::sendmsg op (buf: a msghdr with msg_iov/msg_iovlen only,
    /// len: their total) as one gathered send: the flusher then sends several queued chunks per
    /// operation. A socket passes it on (sendmsg); a pipe makes it a writev.
    virtual bool gathers_sends() const noexcept { return false; }
    /// Whether write_eof() half-closes (the peer reads EOF, we can still receive).
    virtual bool can_write_eof() const noexcept = 0;
    /// Half-close after what was sent so far. An error here (the peer is gone) shows on the next
    /// receive.
    virtual void write_eof() noexcept = 0;
    /// Closes now: pending operations complete with -EBADF. Idempotent.
    virtual void close() noexcept = 0;
    /// The stream's close() was called with data still to flush (close() follows once it is
    /// sent): a transport may bound how long that takes (TLS: Python's ssl_shutdown_timeout,
    /// after which it closes and the flush fails).
    virtual void begin_close() noexcept {}
    /// asyncio's transport.get_extra_info(name): the keys this transport knows ("peername",
    /// "sockname", "socket" for a socket), default_value for the others.
    virtual std::any get_extra_info(std::string_view name, std::any default_value) = 0;
    /// The exception a failed operation's result (< 0) stands for when the transport has a richer
    /// one than the errno (TLS: ssl::SSLError); null: std::system_error of the errno.
    virtual std::exception_ptr error_for(std::int64_t result) const noexcept {
        (void)result;
        return nullptr;
    }
    /// The fd that sendfile(2) may write to directly (the bytes then bypass the transport), or
    /// -1: the transport transforms what it sends (TLS) or cannot take it (datagrams, closed).
    virtual int sendfile_fd() const noexcept { return -1; }
    /// Bytes the transport itself holds that are not sent yet (TLS: ciphertext waiting for the
    /// socket). The stream's get_write_buffer_size() adds them, as asyncio's SSL transport counts
    /// its outgoing BIO.
    virtual std::size_t write_buffer_size() const noexcept { return 0; }
    /// Whether a receive may leave the buffer to the backend (IoOp::provide): the reader then
    /// pins no buffer while it waits (io_uring's provided-buffer ring).
    virtual bool provides_buffers(EventLoop& loop) noexcept {
        (void)loop;
        return false;
    }
};

/// A connected socket as a transport (TCP or Unix, stream or seqpacket). Sets TCP_NODELAY on TCP,
/// as asyncio does.
class SocketTransport final : public Transport {
public:
    SocketTransport(Socket sock, Address peer);

    bool start(EventLoop& loop, IoOp& op) override;
    bool cancel(EventLoop& loop, IoOp& op) noexcept override;
    std::int64_t try_send(EventLoop& loop, const char* p, std::size_t n) override;
    std::int64_t try_recv(EventLoop& loop, char* p, std::size_t n) override;
    bool has_try_recv() const noexcept override { return stream_; }
    bool waits_in_kernel(EventLoop& loop) const noexcept override;
    bool defers_sends(EventLoop& loop) const noexcept override;
    bool gathers_sends() const noexcept override { return stream_; }
    bool can_write_eof() const noexcept override { return true; }
    void write_eof() noexcept override;
    void close() noexcept override;
    std::any get_extra_info(std::string_view name, std::any default_value) override;
    int sendfile_fd() const noexcept override { return stream_ ? sock_.fileno() : -1; }
    bool provides_buffers(EventLoop& loop) noexcept override;

private:
    /// One attempt that never waits (try_send, try_recv): its result, -EAGAIN if it would wait.
    std::int64_t try_io(EventLoop& loop, IoKind kind, char* p, std::size_t n);

    Socket sock_;
    Address peer_;
    std::optional<Address> sockname_;  // read once, on first use
    // A stream socket: a short receive means it was drained, a short send that its buffer is
    // full (IoOp::short_means_not_ready); a datagram's size says nothing about the next one.
    bool stream_;
};

/// One end of a pipe, a FIFO, a tty or a socket used with read(2)/write(2): a reading or a
/// writing transport (connect_read_pipe, connect_write_pipe, a subprocess's pipes). Owns the fd
/// (non-blocking) and closes it. write_eof() closes the fd, as asyncio's write pipe transport:
/// the reader sees EOF once it has read everything.
class PipeTransport final : public Transport {
public:
    /// fd must already be non-blocking; `fifo`: a pipe or FIFO (a short read or write means it
    /// is drained or full; not so for a tty, whose read returns one line at a time).
    PipeTransport(int fd, bool writer, bool fifo) noexcept;
    ~PipeTransport() override { close(); }

    bool start(EventLoop& loop, IoOp& op) override;
    bool cancel(EventLoop& loop, IoOp& op) noexcept override;
    std::int64_t try_send(EventLoop& loop, const char* p, std::size_t n) override;
    bool can_write_eof() const noexcept override { return writer_; }
    bool gathers_sends() const noexcept override { return writer_; }
    void write_eof() noexcept override { close(); }
    void close() noexcept override;
    std::any get_extra_info(std::string_view name, std::any default_value) override;
    int sendfile_fd() const noexcept override { return writer_ ? fd_ : -1; }

private:
    int fd_;
    bool writer_;
    bool fifo_;
};

}  // namespace asyncio::detail
