// What each kind of I/O operation (IoKind, asyncio/detail/io_op.hpp) is, in one place: a small
// descriptor per kind, gathered in one table (op_type.cpp). The backends, the tracer and seeded
// chaos ask the descriptor instead of switching on the kind, so a new kind is one descriptor
// (and its IoKind tag); epoll_backend.cpp, uring_backend.cpp, trace.cpp and chaos.cpp stay as
// they are.
//
// The three steps of an operation, as each backend uses them:
//   perform   the non-blocking system call (EINTR retried): epoll makes it when the op is
//             submitted and again after each readiness event; io_uring makes it for try_now, as
//             the trial call before it submits anything, and after a POLL_ADD for the kinds that
//             have no request of their own (prepare == nullptr) or whose request said -EAGAIN.
//   prepare   io_uring only: fills the SQE with the kind's own request (IORING_OP_RECV, ...).
//             nullptr: the kind is served as POLL_ADD (POLLIN or POLLOUT, by `reader`) then
//             perform(op, true) -- connect (SO_ERROR), pipe writes (SIGPIPE: see syscalls.cpp).
//   complete  io_uring only, may be nullptr: copies what the kernel wrote into the scratch
//             space (a msghdr's name length) back to the op, for a request's result >= 0.
// The rest are facts the backends consult: which queue the op waits in (reader), whether an
// error means "nothing happened, ask again" (retry_error: accept), whether a result >= 0 is a
// new fd the backend must close if nobody takes it (result_is_fd), and what chaos may do.
//
// What stays outside the descriptors, as flags on the op (io_op.hpp) that the backends consult:
// multishot accept (IoOp::multishot), a multishot recv into the provided-buffer ring
// (IoOp::provide), IoOp::defer, IoOp::short_means_not_ready, the fd epochs.
//
// Private to src/: no OS header reaches a public header. liburing.h is included only by
// op_type.cpp (io_uring_sqe is only named here).
#pragma once

#include <sys/socket.h>
#include <sys/uio.h>

#include <cstddef>
#include <cstdint>

#include "asyncio/detail/io_op.hpp"

struct io_uring_sqe;

namespace asyncio::detail {

/// Storage an io_uring request may point into while it is in the ring (one per fd and
/// direction, held by the backend): recvfrom/sendto build their msghdr here.
struct UringScratch {
    msghdr msg{};
    iovec iov{};
};

/// Where seeded chaos (testing::Faults::short_reads / partial_writes) may shorten an op.
enum class ChaosSplit : std::uint8_t {
    never,          // a datagram, a connection, a wait, a vectored op: never shortened
    stream_socket,  // recv/send: on a stream socket (short_means_not_ready, or SO_TYPE says so)
    flagged,        // read/write: when short_means_not_ready says the fd is a byte stream
};

/// What seeded chaos changed in a vectored op's buffers to shorten it (OpType::cut).
struct OpCut {
    bool active = false;
    std::size_t count = 0;     // the iovec count before
    std::size_t index = 0;     // the iovec that was shortened
    std::size_t last_len = 0;  // its length before
};

/// One kind of operation. (An aggregate: a descriptor names what differs from the defaults.)
struct OpType {
    IoKind kind = IoKind::count_;  // its index in kOpTypes
    const char* name = nullptr;    // for traces: "recv", "send", ...
    /// Waits in the fd's reading queue (POLLIN, EPOLLIN) rather than the writing one.
    bool reader = false;
    /// A result >= 0 is a new fd: a backend closes it when the op reports something else
    /// (forget_fd won the race against it).
    bool result_is_fd = false;
    const char* result_name = "bytes";  // the trace's name for a result >= 0 ("bytes": a count)
    ChaosSplit chaos_split = ChaosSplit::never;
    /// Chaos, for kinds whose length is in their buffers (vectored): makes op move at most
    /// n < op.len bytes by shortening its iovecs, recording how in `cut`; `uncut` puts them back
    /// before the op's owner sees it again. nullptr: op.len is the length (chaos sets it).
    void (*cut)(IoOp& op, std::size_t n, OpCut& cut) noexcept = nullptr;
    void (*uncut)(IoOp& op, const OpCut& cut) noexcept = nullptr;
    /// The non-blocking call once (EINTR retried): result, -EAGAIN if it would block, or -errno.
    /// `retry` is false for the first attempt and true after a readiness event (readable and
    /// writable then report 0 without a call; connect reads SO_ERROR).
    std::int64_t (*perform)(IoOp& op, bool retry) noexcept = nullptr;
    /// io_uring: the kind's own request, or nullptr (POLL_ADD, then perform). The backend sets
    /// the SQE's user_data. `len` is op.len clamped to what one request moves.
    void (*prepare)(IoOp& op, io_uring_sqe* sqe, UringScratch& scratch, unsigned len) noexcept = nullptr;
    /// io_uring, may be nullptr: after the request's result res >= 0.
    void (*complete)(IoOp& op, const UringScratch& scratch) noexcept = nullptr;
    /// An error of the request that means nothing happened and the op asks again (accept:
    /// the connection being accepted went away). nullptr: none.
    bool (*retry_error)(int err) noexcept = nullptr;
};

/// The descriptors, indexed by IoKind (op_type.cpp).
extern const OpType kOpTypes[kIoKindCount];

inline const OpType& op_type(IoKind k) noexcept { return kOpTypes[static_cast<std::size_t>(k)]; }
inline const OpType& op_type(const IoOp& op) noexcept { return op_type(op.kind); }

/// True when op waits in the fd's reading queue.
inline bool is_reader(const IoOp& op) noexcept { return op_type(op).reader; }

/// True when err, as op's result, means the op should simply be asked again.
inline bool retries_on(const IoOp& op, int err) noexcept {
    const OpType& t = op_type(op);
    return t.retry_error != nullptr && t.retry_error(err);
}

/// Performs op's system call once (EINTR retried). Returns the result, -EAGAIN if it would block,
/// or -errno. `retry` is false for the first attempt (from submit) and true after readiness.
inline std::int64_t attempt(IoOp& op, bool retry) noexcept { return op_type(op).perform(op, retry); }

}  // namespace asyncio::detail
