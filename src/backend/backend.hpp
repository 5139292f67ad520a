// The narrow interface between the loop and the OS. The loop only asks a backend to wait (up to a
// timeout) for completions and to be woken from another thread. I/O operations are added to this
// interface as operations ("receive into this buffer", "accept"), not as readiness, so that a
// completion-based backend (io_uring) implements them directly while a readiness-based one (epoll)
// emulates them. Private to src/: no backend header ever reaches a public header.
//
// How each backend serves an operation (IoOp, asyncio/detail/io_op.hpp):
//   epoll     tries the system call at once (non-blocking fds); only on EAGAIN queues the op on its
//             fd and waits for readiness (edge-triggered, see epoll_backend.cpp), then retries.
// What differs per kind of operation (its system call, its io_uring request, its queue) is the
// kind's descriptor (op_type.hpp), never a switch in a backend.
//   io_uring  (uring_backend.cpp) try_now() = the plain non-blocking system call (no SQE: nothing to
//             cancel when it would block); submit() = one SQE per op (IORING_OP_RECV, SEND, ACCEPT, CONNECT, RECVMSG,
//             SENDMSG, POLL_ADD for readable/writable; it may also try the call first, as epoll
//             does, and skip the SQE when that succeeds; never for an op with IoOp::defer, whose
//             SQE waits for the next poll()); poll() = io_uring_enter + reap CQEs,
//             each CQE's user_data is the IoOp; cancel() = a synchronous cancel of that op
//             (IORING_REGISTER_SYNC_CANCEL, or ASYNC_CANCEL and reap until the op's own CQE is
//             in, since the kernel may still write into the op's buffer until then) and returns
//             true when that CQE says -ECANCELED; when the op won the race its CQE is delivered and cancel()
//             returns false, which the awaiters already handle (the result is delivered, the
//             cancellation is raised at the task's next suspension point). forget_fd(closing)
//             cancels everything on the fd (IORING_ASYNC_CANCEL_FD) and reports -EBADF; watchers
//             are multishot POLL_ADDs. Stream receives (IoOp::provide) and server accepts
//             (IoOp::multishot) use multishot requests and a provided-buffer ring.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cerrno>
#include <memory>
#include <system_error>

#include "asyncio/detail/callback.hpp"
#include "asyncio/detail/io_op.hpp"
#include "backend/file_op.hpp"

namespace asyncio::detail {

class ReadyQueue;

class Backend {
public:
    virtual ~Backend() = default;
    /// Waits at most timeout_ns (-1: no limit, 0: do not block) for I/O or a wake-up and appends
    /// the callbacks of whatever completed to `ready`. Returns the number of completions.
    virtual std::size_t poll(std::int64_t timeout_ns, ReadyQueue& ready) = 0;
    /// The next poll(0) must really look (a backend may skip a non-blocking look it judges
    /// useless): the loop is about to conclude from it that nothing is coming (virtual time
    /// then jumps to the next timer).
    virtual void look_next_poll() noexcept {}
    /// Makes a blocked poll() return; safe from any thread and async-signal-safe.
    virtual void wakeup() noexcept = 0;
    /// Outstanding I/O registrations (the wake-up channel not counted). With none, the loop may
    /// skip polling when it would not block. Not virtual: the loop reads it every iteration.
    std::size_t registrations() const noexcept { return registrations_; }
    /// Short name for diagnostics ("epoll", "io_uring").
    virtual const char* name() const noexcept = 0;

    // ---- operations (see asyncio/detail/io_op.hpp) ----
    //
    // An operation is owned by its submitter and must stay at its address until it is done or
    // cancelled. One fd may have several operations pending; each direction (reading kinds,
    // writing kinds) is served in submission order, and a new operation never overtakes one queued
    // before it in the same direction. A pending operation counts as one registration.

    /// Starts op. Returns true when it completed at once (op.state == done, op.result set; op.complete
    /// is not called). Otherwise op is pending: a later poll() sets op.result, op.state = done, and
    /// appends {op.complete, &op} to the ready queue. Failing to register interest is a completion
    /// with that error, not an exception; only allocation failure throws.
    virtual bool submit(IoOp& op) = 0;
    /// One attempt, never a wait: performs op now if it can complete without waiting and nothing
    /// is queued ahead of it in its direction. True: done (op.state == done, op.result set, as a
    /// submit() that completed at once). False: it would have to wait; it did nothing, registered
    /// nothing, and op.state is still idle. (A stream's write() with an empty buffer: what the fd
    /// does not take now goes to the stream's buffer instead.)
    virtual bool try_now(IoOp& op) = 0;
    /// Whether submit() of an op with IoOp::defer costs no system call: the request waits for the
    /// next poll(), which submits it with the wait. A caller that would otherwise try a call at
    /// once (a stream's write() with nothing buffered) submits a deferred op instead when so:
    /// N writes in one iteration then cost no send(2) each, only their share of the one
    /// io_uring_enter. False on a readiness backend, where trying first is the cheap way.
    virtual bool defers_submissions() const noexcept { return false; }
    /// Withdraws a pending op: true if it was pending (it is now `cancelled` and did nothing: a
    /// cancelled receive consumed no bytes), false if it is not pending (already done, cancelled, or
    /// never submitted).
    virtual bool cancel(IoOp& op) noexcept = 0;
    /// fd is about to be closed (closing) or was just created by the library (!closing): operations
    /// pending on it complete with -EBADF (appended to `ready`), its callbacks are dropped (and
    /// their queued events too), and the backend forgets the fd number, so that a reused number
    /// starts afresh. The number's epoch moves on: an op bound to the old epoch (IoOp::bound),
    /// submitted again afterwards, completes at once with -EBADF.
    virtual void forget_fd(int fd, bool closing, ReadyQueue& ready) noexcept = 0;

    /// Whether receives with IoOp::provide (no buffer of the caller's) are served. The
    /// caller asks before each such receive; the answer may change from true to false (the
    /// kernel refused the buffer ring), never back.
    virtual bool provides_buffers() noexcept { return false; }
    virtual BackendCounters counters() const noexcept { return {}; }

    // ---- file operations (file_op.hpp) ----

    /// True when the kernel performs FileOps without a thread (io_uring); files.cpp then submits
    /// them here instead of running system calls on the executor.
    virtual bool native_files() const noexcept { return false; }
    /// Starts op (native_files() only). It never completes at once: op.complete(&op) runs from
    /// the ready queue once op.result is set. Throws std::system_error if the kernel refuses it.
    virtual void submit_file(FileOp&) {
        throw std::system_error(ENOTSUP, std::generic_category(), "native file operations");
    }
    /// Withdraws a pending op: true when the kernel had not started it (it is `cancelled` and did
    /// nothing); false when it had completed or runs to its end (then its completion is queued
    /// and its result stands). Returns only once the kernel is done with op's buffers.
    virtual bool cancel_file(FileOp&) noexcept { return false; }

    // ---- raw readiness callbacks (Python's add_reader/add_writer) ----

    /// Installs (cb != null, replacing any) or removes (cb == null) the callback run from the ready
    /// queue each iteration in which fd is readable (writer = false) or writable (writer = true),
    /// level-triggered. Returns true if a callback was installed before. Throws std::system_error if
    /// the fd cannot be watched (EBADF, EPERM for regular files).
    virtual bool set_watcher(int fd, bool writer, std::shared_ptr<Callback> cb) = 0;

protected:
    std::size_t registrations_ = 0;
};

/// The backend for this platform and configuration; select_backend.cpp is the only place that
/// decides. `ready` is the loop's ready queue: a completion backend reaps completions outside
/// poll() too (while cancel() waits for its op's CQE) and queues them there.
std::unique_ptr<Backend> make_backend(ReadyQueue& ready);

}  // namespace asyncio::detail
