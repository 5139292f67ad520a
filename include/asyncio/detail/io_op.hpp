// One I/O operation as the loop's backend sees it: "receive into this buffer", "accept",
// "connect to this address", ... The awaiters of sock_ops.hpp embed an IoOp in their (coroutine
// frame) storage and hand it to the backend; a readiness backend (epoll) emulates the operation by
// trying the system call and waiting for readiness when it would block, a completion backend
// (io_uring) turns it into a submission queue entry. Either way the outcome comes back the same way:
// `result` is set and `complete(op)` runs from the loop's ready queue.
//
// No OS header here: addresses are opaque bytes (a sockaddr and its length), flags are the MSG_*
// and SOCK_* values of <sys/socket.h>, passed through unchanged.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace asyncio {
class EventLoop;
}

namespace asyncio::detail {

/// The kinds of operation. Each is described once, by its descriptor in the backends' table
/// (src/backend/op_type.hpp, op_type.cpp: its system call, its io_uring request, its queue):
/// a new kind is a tag here (before `count_`) and a descriptor there, nothing else.
enum class IoKind : std::uint8_t {
    readable,  // wait until fd is readable (no data is consumed); result 0
    writable,  // wait until fd is writable; result 0
    recv,      // recv(fd, buf, len, flags) -> bytes received, 0 at EOF
    send,      // send(fd, buf, len, flags | MSG_NOSIGNAL) -> bytes sent (may be fewer than len)
    accept,    // accept4(fd, addr, &addrlen, SOCK_NONBLOCK | SOCK_CLOEXEC) -> the new fd
    connect,   // connect(fd, addr, addrlen) -> 0 once connected
    recvfrom,  // recvfrom(fd, buf, len, flags, addr, &addrlen) -> bytes received
    sendto,    // sendto(fd, buf, len, flags | MSG_NOSIGNAL, addr, addrlen) -> bytes sent
    read,      // read(fd, buf, len) -> bytes read, 0 at EOF (pipes, FIFOs, ttys)
    write,     // write(fd, buf, len) -> bytes written; EPIPE is an error, never a SIGPIPE
    // Vectored kinds: `len` is the total of the buffers (what short_means_not_ready compares
    // the result with); the buffers are the caller's and stay put until the op is done.
    readv,     // readv(fd, (iovec*)buf, iovcnt) -> bytes read, 0 at EOF
    writev,    // writev(fd, (const iovec*)buf, iovcnt) -> bytes written; EPIPE, never SIGPIPE
    recvmsg,   // recvmsg(fd, (msghdr*)buf, flags) -> bytes; the msghdr's name and control
               // lengths and msg_flags are updated as recvmsg(2) does
    sendmsg,   // sendmsg(fd, (const msghdr*)buf, flags | MSG_NOSIGNAL) -> bytes sent
    count_     // (not a kind: the number of kinds)
};

inline constexpr std::size_t kIoKindCount = static_cast<std::size_t>(IoKind::count_);

enum class IoState : std::uint8_t {
    idle,       // not submitted (or not yet)
    pending,    // submitted, not complete: the backend holds it
    done,       // complete: `result` is final (the completion may still be queued)
    cancelled,  // withdrawn by cancel() before it completed: it did nothing
    detached,   // its loop was destroyed while it was pending: touch nothing
};

struct IoOp {
    // ---- what to do (set by the submitter) ----
    IoKind kind = IoKind::readable;
    IoState state = IoState::idle;
    /// recv/send on a stream socket only: a result shorter than len means the socket was drained
    /// (recv) or its send buffer is full (send), so the backend may wait for readiness before the
    /// next attempt in that direction instead of making a call that would fail with EAGAIN.
    /// (A short datagram says nothing about the next one: never set it for datagram sockets.)
    bool short_means_not_ready = false;
    /// Set by the backend at the op's first submission, with `epoch` = the fd number's epoch
    /// then. Submitting the same op again (a continuation: the rest of a sendall) checks that the
    /// fd number was not closed by the library in between (and maybe reused for a new socket):
    /// if it was, the op completes with -EBADF instead of acting on an unrelated file.
    bool bound = false;
    /// accept only: the backend may keep a multishot accept armed on the listener for this and
    /// the later accepts (io_uring). Connections accepted while no op waits are queued for the
    /// next one; forget_fd() closes those nobody took. Only for an owner that keeps accepting
    /// until it closes the listener (a Server's accept loop).
    bool multishot = false;
    /// submit() only: "submit, do not try now". A completion backend queues the request without
    /// making the call first; it goes to the kernel with the loop's next poll (io_uring: the SQE
    /// is submitted by the io_uring_enter that also waits), so any number of such ops in one loop
    /// iteration cost no system call of their own (Backend::defers_submissions()). A readiness
    /// backend (epoll) has nothing to queue a request in: it ignores the flag and tries at once.
    bool defer = false;
    int fd = -1;
    int flags = 0;             // MSG_* flags for recv/send/recvfrom/sendto/recvmsg/sendmsg
    std::uint32_t epoch = 0;   // see `bound`
    std::uint32_t iovcnt = 0;  // readv/writev: the number of iovecs at buf
    void* buf = nullptr;       // recv/send/recvfrom/sendto; readv/writev: iovec[]; *msg: msghdr
    std::size_t len = 0;
    /// recv on a stream socket, with buf == nullptr, on a backend whose provides_buffers() is
    /// true: the backend receives into buffers of its own (io_uring: a provided-buffer ring shared
    /// by the loop and a multishot recv per connection) and, once it has n bytes for this op,
    /// calls provide(op, n) for where to copy them (nullptr: no memory; the op fails with
    /// -ENOMEM and the bytes stay for the next op). result = n <= len (len > 0: the most this
    /// receive takes). A waiting receive then pins no buffer of its own.
    char* (*provide)(IoOp& op, std::size_t n) = nullptr;
    /// Optional, with provide: the backend may offer one of its buffers whole instead of copying
    /// the n bytes it received into it: adopt(op, block, n), the bytes being block's first n
    /// (block.size() is the buffer's capacity, the rest is scratch). True: the op took the block
    /// (moved it out; the backend puts a new buffer in its place); false: the bytes are copied
    /// through provide as usual. result = n either way. A large receive then reaches the reader
    /// with no copy in user space.
    bool (*adopt)(IoOp& op, std::string& block, std::size_t n) = nullptr;
    void* addr = nullptr;      // connect/sendto: the destination; accept/recvfrom: the peer (out)
    std::uint32_t addrlen = 0;  // in: size of *addr; out (accept/recvfrom): the peer's length
    // ---- how it ended ----
    std::int64_t result = 0;  // >= 0: as documented per kind; < 0: -errno (never -EAGAIN/-EINTR)
    /// Runs from the loop's ready queue when an operation that did not complete at once completes.
    void (*complete)(void* op) = nullptr;
    // ---- the backend's bookkeeping ----
    IoOp* prev = nullptr;
    IoOp* next = nullptr;
};

// The loop's side of an operation (src/io_op.cpp). Loop thread only.

/// Starts op on loop's backend. Returns true when it completed at once (op.result is set and
/// op.complete will not run); false when it is pending (op.complete(&op) runs once it completes).
///
/// Cooperative budget: a task whose operations keep completing at once (the peer is always
/// ahead) would never return to the loop, starving timers, I/O and every other task. So after
/// kIoBudget operations completed at once within one step of the loop (one ready callback), an
/// operation that completed at once is reported as pending instead and its completion goes
/// through the ready queue: the task yields once, with the result kept (Tokio's coop budget). A
/// caller that cannot yield (a synchronous try) passes coop = false.
bool io_submit(EventLoop& loop, IoOp& op, bool coop = true);
/// One attempt that never waits (Backend::try_now): true when op completed now (op.result set);
/// false when it would have to wait: it did nothing and stays idle. Not counted in the budget.
bool io_try(EventLoop& loop, IoOp& op);
/// Withdraws a pending op. True: it was withdrawn, did nothing, and will never complete. False: it
/// had already completed (its completion may be queued: the result stands).
bool io_cancel(EventLoop& loop, IoOp& op) noexcept;
/// Tells the loop living on this thread (if any) that fd is being closed (closing = true) or was
/// just created by the library (closing = false): operations still pending on that fd fail with
/// EBADF and the loop forgets what it knew about the fd number.
void io_forget_fd(int fd, bool closing) noexcept;
/// What a backend's multishot machinery holds (all 0 on epoll). For tests and debugging.
struct BackendCounters {
    std::size_t buffers = 0;        // provided buffers in the ring (count)
    std::size_t buffer_size = 0;    // bytes each
    std::size_t multishot_recv = 0;    // multishot receives armed (one per reading connection)
    std::size_t multishot_accept = 0;  // multishot accepts armed (one per serving listener)
    std::size_t stashed_bytes = 0;  // bytes received for connections with no receive waiting
    std::size_t enobufs = 0;        // times the ring ran dry (the receive fell back to its own buffer)
    std::size_t queued_accepts = 0; // connections accepted that no accept has taken yet
    std::size_t deferred = 0;       // ops submitted with IoOp::defer (queued with no call of their own)
    std::size_t handed_over = 0;    // provided buffers given to a reader whole (IoOp::adopt), not copied
};
BackendCounters io_counters(EventLoop& loop) noexcept;

/// Outstanding registrations of loop's backend (pending operations plus add_reader/add_writer
/// callbacks): what the loop's no-syscall fast path looks at. For tests and debugging.
std::size_t io_registrations(EventLoop& loop) noexcept;

}  // namespace asyncio::detail
