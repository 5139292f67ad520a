// Completion-based backend: io_uring (liburing), plus an eventfd for cross-thread wake-ups.
//
// An operation (IoOp) is first tried as the plain non-blocking system call, as on epoll: most
// sends, and the receives of a busy connection, complete at once and cost one system call and no
// submission. Only when the call would block does the op become a request in the ring, with the
// IoOp's address as the CQE's user_data. Which request is the kind's descriptor's (op_type.hpp,
// op_type.cpp: `prepare`); this file never switches on the kind. Kinds without a request of their
// own wait with IORING_OP_POLL_ADD and then make the call (`perform`): readable/writable (the
// poll is the op), connect (a second IORING_OP_CONNECT on a connecting socket says EALREADY, so
// SO_ERROR/connect() as epoll does), write/writev (the kernel would raise SIGPIPE for an io_uring
// write to a pipe with no reader, and there is no flag against it as for send).
// A request whose CQE says -EAGAIN (a file that cannot wait inside the kernel) goes on as a
// POLL_ADD followed by the call, so every kind works on every fd epoll could wait for.
//
// Order: only the first op of each fd and direction (reading kinds, writing kinds) is ever in the
// ring; the ops behind it wait in the backend's own queue and are started (tried first) when it
// completes, so an op never overtakes one submitted before it in its direction (backend.hpp).
// Readiness hint: after a receive or send that came back short on a stream socket
// (IoOp::short_means_not_ready) or a request that had to wait, the next op in that direction
// skips the trial call and goes straight to the ring, where the kernel tries it once on
// submission anyway: a receive that has to wait costs no failed recv(2), only its share of the
// io_uring_enter that also waits for the loop's next events.
//
// Cancellation is real: cancel() of an op in the ring submits IORING_OP_ASYNC_CANCEL and reaps
// CQEs until the op's own CQE is in (until then the kernel may still write into the op's buffer,
// which may be freed as soon as cancel() returns). -ECANCELED (or a POLL_ADD, which did nothing
// but wait): the op is cancelled and did nothing. Anything else: the op won the race, its result
// is delivered and cancel() returns false (the awaiters raise the cancellation at the next
// suspension point; docs/design.md). forget_fd() withdraws the fd's ops the same way; an
// accepted connection that won that race is closed, since its op then reports EBADF.
//
// Multishot: a stream's receive with IoOp::provide (no buffer of its own) waits for the next CQE
// of one multishot RECV per connection with buffer select from the loop's provided-buffer ring;
// a server's accept with IoOp::multishot for one multishot ACCEPT per listener. What comes while
// no op waits is kept per fd (stash, accept queue) and handed to the next op first; see the
// "multishot" section below and docs/design.md ("Backends").
//
// add_reader/add_writer (watchers) keep Python's level-triggered meaning with one-shot POLL_ADDs
// re-armed after each run of the callback: arming polls the file at once, so a callback that left
// data unread runs again in the next iteration. (A multishot poll is edge-like: it posts a CQE
// only when the file's wait queue is woken, so a callback that does not drain the fd would not
// run again.)
//
// The CQ ring is four times the SQ ring and the kernel keeps CQEs that do not fit
// (IORING_FEAT_NODROP) until they are reaped; a full SQ is submitted and the SQE taken again.
// Rings are set up with IORING_SETUP_SINGLE_ISSUER | DEFER_TASKRUN where the kernel has them
// (completion work runs when the loop enters the kernel to wait, not as interrupts), else
// COOP_TASKRUN, else plainly. SINGLE_ISSUER binds the ring to one thread: the ring starts
// disabled and is enabled by the first thread that uses it, the loop's thread.
#include "backend/uring_backend.hpp"

#include <fcntl.h>
#include <liburing.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#if defined(__SANITIZE_THREAD__)
#define ASYNCIO_URING_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define ASYNCIO_URING_TSAN 1
#endif
#endif
#ifdef ASYNCIO_URING_TSAN
#include <sanitizer/tsan_interface.h>
#endif
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <system_error>
#include <vector>

#include "asyncio/detail/ready_queue.hpp"
#include "asyncio/event_loop.hpp"
#include "asyncio/exceptions.hpp"
#include "backend/syscalls.hpp"
#include "uninitialized_string.hpp"

namespace asyncio::detail {
namespace {

// A CQE's user_data: an IoOp's address (8-byte aligned: tag 0), or a tag in the low 3 bits.
constexpr std::uint64_t kTagMask = 7;
constexpr std::uint64_t kTagWakeup = 1;   // the eventfd read (or poll)
constexpr std::uint64_t kTagWatcher = 2;  // | direction << 3 | fd << 4 | arming << 33
constexpr std::uint64_t kTagIgnore = 3;   // cancel requests: their own CQEs say nothing we need
constexpr std::uint64_t kTagFile = 5;     // | a FileOp's address (8-byte aligned)
constexpr std::uint64_t kTagMulti = 4;    // a multishot recv/accept: | accept << 3 | fd << 4 | ms_gen << 33

// Provided buffers for multishot receives: one ring per loop, shared by all its connections.
// A buffer is held only from the kernel's receive until the CQE is reaped (its bytes are copied
// to the waiting reader, or to the connection's stash, and the buffer goes straight back; or,
// for a large receive that a reader with an empty buffer takes whole, the buffer itself is handed
// over, IoOp::adopt, and a new one takes its place in the ring: no copy in user space), so
// the ring only has to cover the receives of one loop iteration, not the connections: 256 x 16
// KiB = 4 MiB per loop whatever the number of connections (10,000 idle connections pin no
// receive buffer). When it runs dry the kernel ends the multishot with -ENOBUFS and that receive
// falls back to a plain recv into the reader's own buffer. ASYNCIO_URING_BUFFERS=count:size
// overrides (count a power of two; tests use a tiny ring to force ENOBUFS).
constexpr unsigned kBufCount = 256;
constexpr unsigned kBufSize = 16 * 1024;
constexpr unsigned short kBufGroup = 0;
// Bytes a connection keeps received while its reader is not reading (the stash) before its
// multishot is cancelled (flow control: the reader's limit is enforced above, in the stream;
// this is what the loop holds beyond it; re-armed by the next receive once the stash is taken),
// and connections a listener keeps accepted while nobody accepts. The kernel may post several
// CQEs for one connection in one io_uring_enter (up to what the socket holds) before the cancel
// takes effect: that burst is kept too.
constexpr std::size_t kStashMax = 16 * 1024;
constexpr std::size_t kAcceptQueueMax = 128;

constexpr unsigned kSqEntries = 256;
constexpr unsigned kMaxLen = 0x7ffff000;  // what Linux transfers at most in one call

/// Why io_uring cannot be set up here, for the error message.
std::string setup_failure(int err) {
    std::string what = "io_uring_setup";
    if (err == EPERM || err == EACCES) {
        if (FILE* f = std::fopen("/proc/sys/kernel/io_uring_disabled", "r")) {
            int v = 0;
            if (std::fscanf(f, "%d", &v) == 1 && v != 0)
                what += " (kernel.io_uring_disabled = " + std::to_string(v) + ")";
            else
                what += " (refused: seccomp or a container policy?)";
            std::fclose(f);
        }
    } else if (err == ENOSYS) {
        what += " (this kernel has no io_uring, or a seccomp filter hides it)";
    }
    return what;
}

// liburing maps the rings with raw mmap syscalls that ThreadSanitizer does not intercept, so
// it keeps the shadow of a ring unmapped by a loop on a finished thread; a new ring mapped at
// that address then "races" with the old writes. The kernel orders unmap before map; say so.
#ifdef ASYNCIO_URING_TSAN
char g_ring_mappings = 0;  // the synchronisation object TSan keys on
void ring_mapped() noexcept { __tsan_acquire(&g_ring_mappings); }
void exit_ring(io_uring* ring) noexcept {
    __tsan_release(&g_ring_mappings);
    io_uring_queue_exit(ring);
}
#else
void ring_mapped() noexcept {}
void exit_ring(io_uring* ring) noexcept { io_uring_queue_exit(ring); }
#endif

/// Its address tells threads apart (which thread a SINGLE_ISSUER ring belongs to).
thread_local const char t_thread_token = 0;

class UringBackend final : public Backend {
public:
    explicit UringBackend(ReadyQueue& ready) : ready_(ready) {
        setup_ring();
        wakefd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (wakefd_ < 0) {
            const int err = errno;
            exit_ring(&ring_);
            throw std::system_error(err, std::generic_category(), "eventfd");
        }
    }

    ~UringBackend() override {
        // Nothing may stay in the kernel that could write into memory freed after this (op
        // buffers, the wake-up counter): cancel everything and reap until it is all back.
        closing_ = true;
        // Connections accepted that nobody took.
        fds_.for_each([](FdState& s) {
            for (const int fd : s.dir[0].accepted) ::close(fd);
            s.dir[0].accepted.clear();
        });
        // (From another thread than the ring's, nothing can be submitted: the ring's teardown
        // cancels what is left.)
        if (!disabled_ && inflight_ > 0 && issuer_ == &t_thread_token) {
            io_uring_sqe* sqe = get_sqe();
            io_uring_prep_cancel64(sqe, 0, IORING_ASYNC_CANCEL_ANY);
            io_uring_sqe_set_data64(sqe, kTagIgnore);
            while (inflight_ > 0) {
                const int r = io_uring_submit_and_wait(&ring_, 1);
                if (r < 0 && r != -EINTR && r != -EAGAIN && r != -EBUSY && r != -ETIME) break;
                reap();
            }
        }
        // Operations still pending belong to frames that outlive the loop: mark them so that
        // their owners do not call back into a backend that is gone.
        fds_.for_each([](FdState& s) {
            for (Dir& d : s.dir) {
                for (IoOp* q = d.head; q != nullptr;) {
                    IoOp* next = q->next;
                    q->prev = q->next = nullptr;
                    q->state = IoState::detached;
                    q = next;
                }
            }
        });
        exit_ring(&ring_);
        if (buf_ring_ != nullptr) ::munmap(buf_ring_, buf_ring_len_);
        ::close(wakefd_);
    }

    std::size_t poll(std::int64_t timeout_ns, ReadyQueue&) override {
        enable();
        if (!wake_armed_) arm_wakeup();
        if (timeout_ns == 0 && !skipped_last_ && io_uring_sq_ready(&ring_) == 0 && io_uring_cq_ready(&ring_) == 0) {
            // A look without waiting, with nothing to submit and no CQE posted, right after a
            // poll that did enter the kernel: skip this one (the next poll enters in any case).
            // A completion that came meanwhile waits one iteration more; what this saves is the
            // io_uring_enter of the iteration that runs what the last wait delivered, whose
            // callbacks (a stream's flusher) queue SQEs that the next enter submits with its wait.
            skipped_last_ = true;
            return 0;
        }
        skipped_last_ = false;
        int r;
        if (timeout_ns == 0 || io_uring_cq_ready(&ring_) > 0) {
            r = io_uring_submit_and_get_events(&ring_);
        } else if (timeout_ns < 0) {
            r = io_uring_submit_and_wait(&ring_, 1);
        } else {
            __kernel_timespec ts{};
            ts.tv_sec = timeout_ns / 1'000'000'000;
            ts.tv_nsec = timeout_ns % 1'000'000'000;
            io_uring_cqe* cqe = nullptr;
            r = io_uring_submit_and_wait_timeout(&ring_, &cqe, 1, &ts, nullptr);
        }
        if (r < 0 && r != -EINTR && r != -ETIME && r != -EAGAIN && r != -EBUSY) {
            if (r == -EEXIST)
                throw std::system_error(EEXIST, std::generic_category(),
                                        "io_uring: this loop's ring belongs to the thread that first ran it "
                                        "(IORING_SETUP_SINGLE_ISSUER); use ASYNCIO_BACKEND=epoll to move loops "
                                        "between threads");
            throw std::system_error(-r, std::generic_category(), "io_uring_enter");
        }
        return reap();
    }

    void wakeup() noexcept override { signal_eventfd(wakefd_); }

    const char* name() const noexcept override { return "io_uring"; }

    void look_next_poll() noexcept override { skipped_last_ = true; }

    bool defers_submissions() const noexcept override { return true; }

    bool submit(IoOp& op) override {
        if (op.fd < 0) return finish_now(op, -EBADF);
        FdState* known = fds_.find(op.fd);
        if (!check_epoch(op, known)) return finish_now(op, -EBADF);
        if ((op.provide != nullptr && op.kind == IoKind::recv) || (op.multishot && op.kind == IoKind::accept && multishot_))
            return submit_multi(op, known);
        if (known != nullptr && known->dir[0].head == nullptr && (op.kind == IoKind::recv || op.kind == IoKind::readable)) {
            std::int64_t r = 0;
            if (hand_over_stash(known->dir[0], op, r)) return finish_now(op, r);
        }
        const int d = is_reader(op) ? 0 : 1;
        bool tried = false;
        const bool deferred = op.defer && has_native_request(op.kind);
        if (deferred) ++deferred_;
        if (!deferred && (known == nullptr || known->dir[d].head == nullptr)) {
            if (known == nullptr || !known->dir[d].not_ready) {
                const std::int64_t r = attempt(op, false);
                if (r != -EAGAIN) {
                    if (known != nullptr) note_result(known->dir[d], op, r);
                    return finish_now(op, r);
                }
                tried = true;
            }
        }
        FdState& s = known != nullptr ? *known : fds_.get(op.fd);
        Dir& q = s.dir[d];
        if (tried) q.not_ready = true;
        op.prev = q.tail;
        op.next = nullptr;
        if (q.tail != nullptr)
            q.tail->next = &op;
        else
            q.head = &op;
        q.tail = &op;
        op.state = IoState::pending;
        ++registrations_;
        if (q.head == &op) {
            try {
                start(q, op, Stage::native);
            } catch (const std::system_error& e) {
                // The ring refuses requests: a completion with that error, as backend.hpp says.
                unlink(op, q);
                --registrations_;
                return finish_now(op, -e.code().value());
            }
        }
        return false;
    }

    bool try_now(IoOp& op) override {
        if (op.fd < 0) return finish_now(op, -EBADF);
        FdState* known = fds_.find(op.fd);
        if (!check_epoch(op, known)) return finish_now(op, -EBADF);
        if (known != nullptr) {
            Dir& q = known->dir[is_reader(op) ? 0 : 1];
            if (q.head != nullptr) return false;  // never overtake
            std::int64_t r = 0;
            if (op.kind == IoKind::recv && hand_over_stash(q, op, r)) return finish_now(op, r);
            if (q.not_ready) return false;  // known not ready
        }
        const std::int64_t r = attempt(op, false);
        if (r == -EAGAIN) {
            if (known != nullptr) known->dir[is_reader(op) ? 0 : 1].not_ready = true;
            return false;
        }
        if (known != nullptr) note_result(known->dir[is_reader(op) ? 0 : 1], op, r);
        return finish_now(op, r);
    }

    bool provides_buffers() noexcept override {
        if (!multishot_) return false;
        if (buf_ring_ == nullptr && !bufs_failed_) setup_buffers();
        return !bufs_failed_;
    }

    BackendCounters counters() const noexcept override {
        BackendCounters c;
        c.buffers = bufs_failed_ ? 0 : buf_count_;
        c.buffer_size = buf_size_;
        c.multishot_recv = ms_recv_armed_;
        c.multishot_accept = ms_accept_armed_;
        c.enobufs = enobufs_;
        c.deferred = deferred_;
        c.handed_over = handed_over_;
        const_cast<FdTable<FdState>&>(fds_).for_each([&c](FdState& s) {
            c.stashed_bytes += s.dir[0].stash.size();
            c.queued_accepts += s.dir[0].accepted.size();
        });
        return c;
    }

    bool cancel(IoOp& op) noexcept override {
        if (op.state != IoState::pending) return false;
        FdState& s = *fds_.find(op.fd);  // a pending op's fd has its state
        Dir& q = s.dir[is_reader(op) ? 0 : 1];
        if (q.head != &op || !q.inflight) {
            // (An op waiting for a multishot's next completion is such an op too: whatever that
            // multishot receives from now on stays in the fd's stash or accept queue.)
            // Waiting behind another op (or not yet started): the kernel never saw it.
            unlink(op, q);
            op.state = IoState::cancelled;
            --registrations_;
            try {
                advance(q);
            } catch (...) {
                fail_queue(q, -ENOMEM);
            }
            return true;
        }
        const bool polling = q.polling;
        const int res = withdraw(q, op);
        bool cancelled = polling || res == -ECANCELED || res == -EAGAIN || res == -EINTR ||
                         (res < 0 && retries_on(op, -res));
        if (cancelled) {
            unlink(op, q);
            op.state = IoState::cancelled;
            --registrations_;
        } else {
            complete_head(q, op, res);  // it won the race: the result stands
        }
        try {
            advance(q);
        } catch (...) {
            fail_queue(q, -ENOMEM);
        }
        return cancelled;
    }

    void forget_fd(int fd, bool closing, ReadyQueue&) noexcept override {
        if (fd < 0) return;
        (void)closing;  // the kernel holds its own reference to the file: cancel either way
        FdState* sp = fds_.find_or_make(fd);
        if (sp == nullptr) return;
        FdState& s = *sp;
        // The multishot first: the kernel holds the file until it ends (a listener would go on
        // accepting, a peer would not see the close), and connections it queued have no taker.
        if (s.dir[0].ms_armed) stop_multi(fd, s.dir[0], true);
        for (const int a : s.dir[0].accepted) ::close(a);
        s.dir[0].accepted.clear();
        for (int d = 0; d < 2; ++d) {
            Dir& q = s.dir[d];
            if (q.head != nullptr && q.inflight) {
                IoOp& op = *q.head;
                const bool polling = q.polling;
                const int res = withdraw(q, op);
                // A connection accepted in the race has nobody to take it: the op says EBADF.
                if (!polling && op_type(op).result_is_fd && res >= 0) ::close(res);
            }
            while (IoOp* op = q.head) {
                unlink(*op, q);
                op->result = -EBADF;
                op->state = IoState::done;
                --registrations_;
                push(op->complete, op);
            }
            if (q.watcher) {
                --registrations_;
                q.watcher.reset();
            }
            if (q.armed) cancel_watcher_poll(fd, d == 1, q);
        }
        const std::uint32_t epoch = s.epoch + 1;
        std::uint32_t gens[2][2] = {{s.dir[0].watch_gen + 1, s.dir[0].arm_gen + 1},
                                    {s.dir[1].watch_gen + 1, s.dir[1].arm_gen + 1}};
        const std::uint32_t ms_gen = s.dir[0].ms_gen + 1;
        const bool ms_armed = s.dir[0].ms_armed;  // (only if stopping it failed: its CQEs are stale)
        const IoKind ms_kind = s.dir[0].ms_kind;
        s = FdState{};
        s.epoch = epoch;
        s.dir[0].ms_gen = ms_gen;
        if (ms_armed) --(ms_kind == IoKind::accept ? ms_accept_armed_ : ms_recv_armed_);
        for (int d = 0; d < 2; ++d) {
            s.dir[d].watch_gen = gens[d][0];
            s.dir[d].arm_gen = gens[d][1];
        }
    }

    bool set_watcher(int fd, bool writer, std::shared_ptr<Callback> cb) override {
        const char* what = writer ? "add_writer" : "add_reader";
        if (fd < 0) {
            if (!cb) return false;
            throw std::system_error(EBADF, std::generic_category(), what);
        }
        if (cb) {
            // What epoll_ctl would refuse: a closed fd, and files that are always ready.
            struct stat st{};
            if (::fstat(fd, &st) < 0) throw std::system_error(errno, std::generic_category(), what);
            if (S_ISREG(st.st_mode) || S_ISDIR(st.st_mode))
                throw std::system_error(EPERM, std::generic_category(), what);
        }
        FdState* sp = fds_.find(fd);
        if (sp == nullptr) {
            if (!cb) return false;
            sp = &fds_.get(fd);
        }
        Dir& q = sp->dir[writer ? 1 : 0];
        const bool had = static_cast<bool>(q.watcher);
        if (cb && !q.armed && !q.queued) arm_watcher(fd, writer, q);  // may throw: before any change
        q.watcher = std::move(cb);
        if (q.watcher && !had) ++registrations_;
        if (!q.watcher && had) --registrations_;
        if (had) ++q.watch_gen;  // an event queued for the old callback is not the new one's
        if (!q.watcher && q.armed) cancel_watcher_poll(fd, writer, q);
        return had;
    }

    // ---- file operations: one request each, no per-fd queue (AsyncFile orders its own calls) ----

    bool native_files() const noexcept override { return true; }

    void submit_file(FileOp& op) override {
        io_uring_sqe* sqe = get_sqe();
        prepare_file(sqe, op);
        io_uring_sqe_set_data64(sqe, file_data(op));
        op.state = IoState::pending;
        ++registrations_;
        ++inflight_;
    }

    bool cancel_file(FileOp& op) noexcept override {
        if (op.state != IoState::pending) return false;
        // The kernel may still write into op's buffers until op's own CQE: wait for it.
        const std::uint64_t data = file_data(op);
        file_withdrawing_ = &op;
        file_withdrawn_ = false;
        try {
            io_uring_sqe* sqe = get_sqe();
            io_uring_prep_cancel64(sqe, data, 0);
            io_uring_sqe_set_data64(sqe, kTagIgnore);
        } catch (...) {
            // No cancel can be submitted: the op runs to its end, waited for below.
        }
        reap();
        while (!file_withdrawn_) {
            const int r = io_uring_submit_and_wait(&ring_, 1);
            if (r < 0 && r != -EINTR && r != -EAGAIN && r != -EBUSY && r != -ETIME) break;
            reap();
        }
        file_withdrawing_ = nullptr;
        --registrations_;
        if (!file_withdrawn_ || file_withdrawn_res_ == -ECANCELED || file_withdrawn_res_ == -EINTR) {
            op.state = IoState::cancelled;
            return true;
        }
        // It completed first (or could not be stopped, as a read in progress): the result stands.
        op.result = file_withdrawn_res_;
        op.state = IoState::done;
        push(op.complete, &op);
        return false;
    }

private:
    enum class Stage : std::uint8_t { native, poll };

    static std::uint64_t file_data(const FileOp& op) noexcept {
        return static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(&op)) | kTagFile;
    }

    /// The one place that maps a FileOp to its io_uring request (file_op.hpp).
    static void prepare_file(io_uring_sqe* sqe, FileOp& op) noexcept {
        const unsigned len = op.len > kMaxLen ? kMaxLen : static_cast<unsigned>(op.len);
        switch (op.kind) {
            case FileOpKind::pread:
                io_uring_prep_read(sqe, op.fd, op.buf, len, op.offset);
                break;
            case FileOpKind::pwrite:
                io_uring_prep_write(sqe, op.fd, op.buf, len, op.offset);
                break;
            case FileOpKind::fsync:
                io_uring_prep_fsync(sqe, op.fd, 0);
                break;
            case FileOpKind::openat:
                io_uring_prep_openat(sqe, AT_FDCWD, op.path, op.flags, op.mode);
                break;
            case FileOpKind::statx:
                io_uring_prep_statx(sqe, op.fd < 0 ? AT_FDCWD : op.fd, op.path, op.flags, STATX_BASIC_STATS,
                                    static_cast<struct statx*>(op.buf));
                break;
            case FileOpKind::unlinkat:
                io_uring_prep_unlinkat(sqe, AT_FDCWD, op.path, op.flags);
                break;
            case FileOpKind::renameat:
                io_uring_prep_renameat(sqe, AT_FDCWD, op.path, AT_FDCWD, op.path2, 0);
                break;
            case FileOpKind::mkdirat:
                io_uring_prep_mkdirat(sqe, AT_FDCWD, op.path, op.mode);
                break;
        }
    }

    std::size_t on_file_cqe(FileOp& op, int res) {
        --inflight_;
        if (&op == file_withdrawing_) {
            file_withdrawn_ = true;
            file_withdrawn_res_ = res;
            return 0;
        }
        if (closing_) {
            op.state = IoState::detached;
            return 0;
        }
        op.result = res;
        op.state = IoState::done;
        --registrations_;
        push(op.complete, &op);
        return 1;
    }

    struct Dir {
        IoOp* head = nullptr;  // FIFO; only the head is ever in the ring
        IoOp* tail = nullptr;
        bool inflight = false;   // the head has a request in the ring
        bool polling = false;    // ... and it is a POLL_ADD: the call is made once it is ready
        bool not_ready = false;  // hint: the next op goes to the ring without a trial call
        UringScratch scratch{};  // what the head's request points into (recvfrom/sendto's msghdr)
        std::shared_ptr<Callback> watcher;  // add_reader / add_writer
        bool armed = false;                 // the watcher's POLL_ADD is in the ring
        bool queued = false;                // its run is in the ready queue
        std::uint32_t watch_gen = 0;        // +1 when the watcher is replaced or removed
        std::uint32_t arm_gen = 0;          // +1 per POLL_ADD armed (stale CQEs are ignored)
        // Multishot (reading direction only): a recv with buffer select (ops with provide) or an
        // accept (ops with multishot) that stays in the ring across ops.
        bool ms_armed = false;     // in the ring (until its CQE without IORING_CQE_F_MORE)
        bool ms_stopping = false;  // its cancel is submitted
        IoKind ms_kind = IoKind::recv;
        std::uint32_t ms_gen = 0;  // +1 per arming (stale CQEs are ignored)
        std::string stash;         // recv: bytes received while no op waited, in order
        std::vector<int> accepted; // accept: connections accepted while no op waited
        bool ended = false;        // recv: EOF or an error follows the stash; accept: an error
        std::int64_t end_result = 0;
        bool enobufs = false;      // recv: the ring ran dry; the next receive is a plain one
    };
    struct FdState {
        Dir dir[2];  // 0: reading kinds, 1: writing kinds
        std::uint32_t epoch = 0;  // +1 each time the library closes (or creates) this fd
    };

    /// Sets up ring_ with the best flags this kernel takes (each set is refused, -EINVAL, by
    /// kernels older than it).
    void setup_ring() {
        io_uring_params p{};
        int r = -EINVAL;
        const unsigned base = IORING_SETUP_CQSIZE | IORING_SETUP_CLAMP | IORING_SETUP_SUBMIT_ALL;
        for (const unsigned extra : {IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_R_DISABLED,
                                     IORING_SETUP_COOP_TASKRUN, 0u}) {
            p = io_uring_params{};
            p.flags = base | extra;
            p.cq_entries = kSqEntries * 4;
            r = io_uring_queue_init_params(kSqEntries, &ring_, &p);
            if (r != -EINVAL) break;
        }
        if (r < 0) throw std::system_error(-r, std::generic_category(), setup_failure(-r));
        ring_mapped();
        disabled_ = (p.flags & IORING_SETUP_R_DISABLED) != 0;
        single_issuer_ = (p.flags & IORING_SETUP_SINGLE_ISSUER) != 0;
        if ((p.features & IORING_FEAT_NODROP) == 0) {
            exit_ring(&ring_);
            throw std::system_error(ENOTSUP, std::generic_category(),
                                    "io_uring: the kernel may drop completions (no IORING_FEAT_NODROP, Linux < 5.5)");
        }
    }

    /// Before any use of the ring: a SINGLE_ISSUER ring is enabled by the first thread that uses
    /// it and then refuses every other thread (EEXIST). A loop that ran on one thread and now
    /// runs on another (Python allows it) gets a new ring, if nothing of it is in the kernel but
    /// the wake-up read and watcher polls, which are made again; with operations in flight the
    /// move is refused (they cannot be withdrawn from another thread).
    void enable() {
        if (!disabled_) {
            if (!single_issuer_ || issuer_ == &t_thread_token) [[likely]]
                return;
            if (inflight_ > (wake_armed_ ? 1u : 0u))
                throw RuntimeError("io_uring: a loop with I/O operations in flight cannot move to another thread "
                                   "(ASYNCIO_BACKEND=epoll can)");
            exit_ring(&ring_);  // its teardown cancels the wake-up read and the polls
            inflight_ = 0;
            wake_armed_ = false;
            ++wake_slot_;  // the old read's buffer is left alone
            setup_ring();
            bufs_reregister_ = buf_ring_ != nullptr && !bufs_failed_;
            fds_.for_each_fd([this](int fd, FdState& st) {
                for (int d = 0; d < 2; ++d) {
                    if (!st.dir[d].armed) continue;
                    st.dir[d].armed = false;
                    ++st.dir[d].arm_gen;
                    rearm_.push_back({fd, d == 1});
                }
            });
        }
        if (disabled_) {
            // The system call itself: liburing 2.3 declares io_uring_enable_rings but does not
            // export it.
            if (::syscall(__NR_io_uring_register, ring_.ring_fd, IORING_REGISTER_ENABLE_RINGS, nullptr, 0) < 0)
                throw std::system_error(errno, std::generic_category(), "io_uring_register(IORING_REGISTER_ENABLE_RINGS)");
            disabled_ = false;
        }
        issuer_ = &t_thread_token;
        if (bufs_reregister_) {
            // A new ring (the loop moved to another thread, with nothing in flight): every
            // buffer is free.
            bufs_reregister_ = false;
            if (!register_buffers()) bufs_failed_ = true;
        }
        for (const Rearm& w : rearm_) {
            Dir& q = fds_.find(w.fd)->dir[w.writer ? 1 : 0];
            if (q.watcher && !q.armed && !q.queued) arm_watcher(w.fd, w.writer, q);
        }
        rearm_.clear();
    }

    /// Kinds start() puts in the ring as the call itself (not a POLL_ADD first): only those
    /// honour IoOp::defer (a deferred poll would cost a round trip more than the trial call).
    static bool has_native_request(IoKind k) noexcept { return op_type(k).prepare != nullptr; }

    static bool check_epoch(IoOp& op, const FdState* known) noexcept {
        return bind_epoch(op, known != nullptr ? known->epoch : 0);
    }

    static void note_result(Dir& q, const IoOp& op, std::int64_t r) noexcept {
        q.not_ready = r == -EAGAIN || (op.short_means_not_ready && r > 0 && static_cast<std::uint64_t>(r) < op.len);
    }

    static void unlink(IoOp& op, Dir& q) noexcept { detail::unlink(op, q.head, q.tail); }

    /// After q's head's own request (not a POLL_ADD) said res >= 0: the kind's complete step.
    static void complete_request(IoOp& op, const Dir& q) noexcept {
        if (const auto complete = op_type(op).complete) complete(op, q.scratch);
    }

    void push(void (*fn)(void*), void* ctx) noexcept {
        if (closing_) return;
        try {
            ready_.push(fn, ctx);
        } catch (...) {
            // Out of memory growing the ready queue: the waiter stays suspended until its task
            // is cancelled or the loop closes; nothing dangles.
        }
    }

    /// A free SQE; a full SQ is submitted first. Throws std::system_error only if the kernel
    /// refuses to take submissions at all.
    io_uring_sqe* get_sqe() {
        enable();
        for (;;) {
            if (io_uring_sqe* sqe = io_uring_get_sqe(&ring_)) return sqe;
            const int r = io_uring_submit(&ring_);
            if (r >= 0 || r == -EINTR) continue;
            if (r == -EAGAIN || r == -EBUSY) {
                // The kernel is short of memory for requests, or of CQ room: make room.
                io_uring_get_events(&ring_);
                reap();
                continue;
            }
            throw std::system_error(-r, std::generic_category(), "io_uring_submit");
        }
    }

    /// Puts the head op of q into the ring.
    void start(Dir& q, IoOp& op, Stage stage) {
        io_uring_sqe* sqe = get_sqe();
        const unsigned len = op.len > kMaxLen ? kMaxLen : static_cast<unsigned>(op.len);
        bool poll = stage == Stage::poll;
        const OpType& type = op_type(op);
        if (type.prepare == nullptr) poll = true;  // readable, writable, connect, write: see op_type.cpp
        if (!poll) type.prepare(op, sqe, q.scratch, len);
        if (poll) {
            const unsigned events = is_reader(op) ? POLLIN | POLLRDHUP : POLLOUT;
            io_uring_prep_poll_add(sqe, op.fd, events);
        }
        io_uring_sqe_set_data(sqe, &op);
        q.inflight = true;
        q.polling = poll;
        ++inflight_;
    }

    /// The head op of q is done with result r: off the queue and into the ready queue.
    void complete_head(Dir& q, IoOp& op, std::int64_t r) noexcept {
        unlink(op, q);
        note_result(q, op, r);
        op.result = r;
        op.state = IoState::done;
        --registrations_;
        push(op.complete, &op);
    }

    /// After q's head completed or went: starts the ops behind it, in order, until one waits.
    void advance(Dir& q) {
        while (IoOp* op = q.head) {
            if (q.inflight) return;
            if (op->provide != nullptr || (op->multishot && op->kind == IoKind::accept && multishot_)) {
                serve_multi(op->fd, q);
                return;
            }
            std::int64_t stashed = 0;
            if ((op->kind == IoKind::recv || op->kind == IoKind::readable) && hand_over_stash(q, *op, stashed)) {
                complete_head(q, *op, stashed);
                continue;
            }
            if (!q.not_ready && !(op->defer && has_native_request(op->kind))) {
                const std::int64_t r = attempt(*op, false);
                if (r != -EAGAIN) {
                    complete_head(q, *op, r);
                    continue;
                }
                q.not_ready = true;
            }
            start(q, *op, Stage::native);
            return;
        }
    }

    /// The ops of q fail with err (no memory to start the next one).
    void fail_queue(Dir& q, std::int64_t err) noexcept {
        while (IoOp* op = q.head) {
            if (q.inflight) return;
            complete_head(q, *op, err);
        }
    }

    /// Withdraws q's head (in the ring) from the kernel: submits a cancel and reaps until the
    /// op's own CQE is in. Returns that CQE's result.
    int withdraw(Dir& q, IoOp& op) noexcept {
        const bool polling = q.polling;
        withdrawing_ = &op;
        withdrawn_ = false;
        try {
            io_uring_sqe* sqe = get_sqe();
            io_uring_prep_cancel(sqe, &op, 0);
            io_uring_sqe_set_data64(sqe, kTagIgnore);
            reap();  // get_sqe may have reaped it already
            while (!withdrawn_) {
                const int r = io_uring_submit_and_wait(&ring_, 1);
                if (r < 0 && r != -EINTR && r != -EAGAIN && r != -EBUSY && r != -ETIME) break;
                reap();
            }
        } catch (...) {
            // No ring to cancel through (the kernel refuses submissions): wait for the op's CQE
            // all the same, since the kernel owns its buffer until then.
            while (!withdrawn_) {
                const int r = io_uring_submit_and_wait(&ring_, 1);
                if (r < 0 && r != -EINTR && r != -EAGAIN && r != -EBUSY && r != -ETIME) break;
                reap();
            }
        }
        withdrawing_ = nullptr;
        q.inflight = false;
        q.polling = false;
        if (!withdrawn_) return -ECANCELED;  // the ring failed: nothing more can come
        if (withdrawn_res_ >= 0 && !polling) complete_request(op, q);
        return withdrawn_res_;
    }

    /// Processes every CQE there is. Returns the number of op completions.
    std::size_t reap() {
        std::size_t n = 0;
        for (;;) {
            io_uring_cqe* cqe = nullptr;
            bool any = false;
            while (io_uring_peek_cqe(&ring_, &cqe) == 0 && cqe != nullptr) {
                const std::uint64_t data = cqe->user_data;
                const int res = cqe->res;
                const unsigned flags = cqe->flags;
                io_uring_cqe_seen(&ring_, cqe);
                any = true;
                n += on_cqe(data, res, flags);
            }
            // Completions the CQ had no room for wait in the kernel (IORING_FEAT_NODROP).
            if (!any || !io_uring_cq_has_overflow(&ring_)) break;
            io_uring_get_events(&ring_);
        }
        return n;
    }

    std::size_t on_cqe(std::uint64_t data, int res, unsigned flags) {
        switch (data & kTagMask) {
            case 0:
                return on_op_cqe(*reinterpret_cast<IoOp*>(static_cast<std::uintptr_t>(data)), res);
            case kTagWakeup:
                on_wakeup_cqe(res);
                return 0;
            case kTagWatcher:
                return on_watcher_cqe(data, res);
            case kTagFile:
                return on_file_cqe(*reinterpret_cast<FileOp*>(static_cast<std::uintptr_t>(data & ~kTagMask)), res);
            case kTagMulti:
                return on_multi_cqe(data, res, flags);
            default:
                return 0;
        }
    }

    std::size_t on_op_cqe(IoOp& op, int res) {
        --inflight_;
        if (&op == withdrawing_) {
            withdrawn_ = true;
            withdrawn_res_ = res;
            return 0;
        }
        if (closing_) {
            op.state = IoState::detached;
            return 0;
        }
        Dir& q = fds_.find(op.fd)->dir[is_reader(op) ? 0 : 1];
        q.inflight = false;
        std::int64_t r = res;
        if (q.polling) {
            q.polling = false;
            if (res >= 0) {
                r = attempt(op, true);  // after readiness (readable/writable: 0, connect: SO_ERROR)
            }
        } else {
            if (r >= 0) complete_request(op, q);
            if (r == -EINTR || (r < 0 && retries_on(op, static_cast<int>(-r)))) {
                start(q, op, Stage::native);  // nothing happened: ask again
                return 0;
            }
        }
        if (r == -EAGAIN) {
            // A file that cannot wait inside the kernel, or a readiness that went away before
            // the call: wait for readiness, then make the call.
            start(q, op, Stage::poll);
            return 0;
        }
        complete_head(q, op, r);
        try {
            advance(q);
        } catch (...) {
            fail_queue(q, -ENOMEM);
        }
        return 1;
    }

    // ---- multishot receive (provided buffers) and accept ----
    //
    // Ops with IoOp::provide (receives) or IoOp::multishot (accepts) wait as the head of the
    // fd's reading queue for the next completion of one multishot request per fd, which stays in
    // the ring across ops: what it delivers while no op waits is kept (the stash, the accept
    // queue) and goes to the next op at once, in order. Results after the data: EOF or an error
    // of a receive (ended), an accept's error (EMFILE ends the multishot; the next accept tries
    // accept4 first, so a server that sleeps after the error does not spin and recovers).

    bool submit_multi(IoOp& op, FdState* known) {
        FdState& s = known != nullptr ? *known : fds_.get(op.fd);
        Dir& q = s.dir[0];
        if (q.head == nullptr) {
            if (op.kind == IoKind::recv) {
                if (!q.stash.empty() || q.ended) return finish_now(op, take_stash(q, op));
            } else if (!q.accepted.empty() || q.ended) {
                return finish_now(op, take_accepted(q, op));
            } else if (!q.ms_armed) {
                // As a plain accept: the call first (after EMFILE this is how the server sees
                // whether descriptors came back).
                const std::int64_t r = attempt(op, false);
                if (r != -EAGAIN) return finish_now(op, r);
            }
        }
        op.prev = q.tail;
        op.next = nullptr;
        if (q.tail != nullptr)
            q.tail->next = &op;
        else
            q.head = &op;
        q.tail = &op;
        op.state = IoState::pending;
        ++registrations_;
        if (q.head == &op) {
            try {
                serve_multi(op.fd, q);
            } catch (const std::system_error& e) {
                if (op.state == IoState::pending) {
                    unlink(op, q);
                    --registrations_;
                    return finish_now(op, -e.code().value());
                }
            }
        }
        return false;
    }

    /// The result for a receive with provide from q's stash (or its end).
    /// (At most op.len bytes, when op.len > 0: the reader bounds what one receive hands it.)
    static std::int64_t take_stash(Dir& q, IoOp& op) noexcept {
        if (q.stash.empty()) return q.end_result;  // (ended)
        const std::size_t n = op.len > 0 ? std::min(op.len, q.stash.size()) : q.stash.size();
        char* dst = nullptr;
        try {
            dst = op.provide(op, n);
        } catch (...) {
        }
        if (dst == nullptr) return -ENOMEM;
        std::memcpy(dst, q.stash.data(), n);
        if (n < q.stash.size())
            q.stash.erase(0, n);
        else if (q.stash.capacity() > kBufSize)
            std::string().swap(q.stash);  // a burst's memory is not kept by an idle connection
        else
            q.stash.clear();
        return static_cast<std::int64_t>(n);
    }

    /// A plain receive (a buffer of its own; tried, try_now(), or submitted) or a wait for
    /// readability on a socket a stream read with a multishot (start_tls: the TLS transport then
    /// reads the socket itself): the multishot stops, and what it kept goes to this receive
    /// first, so no byte is lost or overtaken; a readable op is ready while anything is kept (the
    /// receive it leads to takes it). True: op's result is r.
    bool hand_over_stash(Dir& q, IoOp& op, std::int64_t& r) noexcept {
        if (q.ms_kind != IoKind::recv || (!q.ms_armed && q.stash.empty() && !q.ended)) return false;
        if (q.ms_armed) stop_multi(op.fd, q, true);
        if (op.kind == IoKind::readable) {
            r = 0;
            return !q.stash.empty() || q.ended;
        }
        if (!q.stash.empty()) {
            const std::size_t n = std::min(op.len, q.stash.size());
            std::memcpy(op.buf, q.stash.data(), n);
            q.stash.erase(0, n);
            r = static_cast<std::int64_t>(n);
            return true;
        }
        if (q.ended) {
            r = q.end_result;
            return true;
        }
        return false;
    }

    /// The result for a multishot accept from q's queue (or its error).
    static std::int64_t take_accepted(Dir& q, IoOp& op) noexcept {
        if (q.accepted.empty()) {
            q.ended = false;  // an error is reported once; the next accept tries again
            return q.end_result;
        }
        const int fd = q.accepted.front();
        q.accepted.erase(q.accepted.begin());
        if (op.addr != nullptr) {
            // A multishot accept has one address buffer for all its connections: ask the socket.
            socklen_t len = op.addrlen;
            if (::getpeername(fd, static_cast<sockaddr*>(op.addr), &len) == 0)
                op.addrlen = len;
            else
                op.addrlen = 0;  // (the peer is gone already: an unnamed address, as accept4 gives)
        }
        return fd;
    }

    /// Serves q's head (a multishot-kind op) from what is kept, and arms the multishot when the
    /// head still waits. Returns the number of ops completed. Throws std::system_error when the
    /// ring refuses the request (the head is then still pending).
    std::size_t serve_multi(int fd, Dir& q) {
        std::size_t n = 0;
        while (IoOp* op = q.head) {
            if (q.inflight) return n;
            const bool recv = op->kind == IoKind::recv && op->provide != nullptr;
            if (!recv && !(op->kind == IoKind::accept && op->multishot && multishot_)) {
                advance(q);  // a plain op behind: served the usual way
                return n;
            }
            if (recv ? (!q.stash.empty() || q.ended) : (!q.accepted.empty() || q.ended)) {
                complete_head(q, *op, recv ? take_stash(q, *op) : take_accepted(q, *op));
                ++n;
                continue;
            }
            if (q.ms_armed) {
                if (q.ms_kind == (recv ? IoKind::recv : IoKind::accept)) return n;  // its next CQE
                stop_multi(fd, q, true);  // (a different kind on the same fd)
                if (q.ms_armed) return n;  // the ring refuses the cancel: wait for what comes
                continue;
            }
            if (recv && (q.enobufs || bufs_failed_)) {
                // The ring ran dry: one plain recv into the reader's own buffer.
                q.enobufs = false;
                char* dst = nullptr;
                try {
                    dst = op->provide(*op, buf_size_);
                } catch (...) {
                }
                if (dst == nullptr) {
                    complete_head(q, *op, -ENOMEM);
                    ++n;
                    continue;
                }
                op->buf = dst;
                op->len = op->len > 0 ? std::min<std::size_t>(op->len, buf_size_) : buf_size_;
                start(q, *op, Stage::native);
                return n;
            }
            arm_multi(fd, q, recv ? IoKind::recv : IoKind::accept);
            return n;
        }
        return n;
    }

    static std::uint64_t multi_data(int fd, std::uint32_t gen, IoKind kind) noexcept {
        return kTagMulti | (kind == IoKind::accept ? 8u : 0u) | (static_cast<std::uint64_t>(static_cast<std::uint32_t>(fd) & 0x1fffffffu) << 4) |
               (static_cast<std::uint64_t>(gen & 0x7fffffffu) << 33);
    }

    void arm_multi(int fd, Dir& q, IoKind kind) {
        if (kind == IoKind::recv && buf_ring_ == nullptr) setup_buffers();
        io_uring_sqe* sqe = get_sqe();
        if (kind == IoKind::recv) {
            io_uring_prep_recv_multishot(sqe, fd, nullptr, 0, 0);
            sqe->flags |= IOSQE_BUFFER_SELECT;
            sqe->buf_group = kBufGroup;
        } else {
            io_uring_prep_multishot_accept(sqe, fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        }
        ++q.ms_gen;
        io_uring_sqe_set_data64(sqe, multi_data(fd, q.ms_gen, kind));
        q.ms_armed = true;
        q.ms_stopping = false;
        q.ms_kind = kind;
        ++inflight_;
        ++(kind == IoKind::accept ? ms_accept_armed_ : ms_recv_armed_);
    }

    /// Cancels q's multishot; with wait, reaps until its last CQE is in (the kernel holds the
    /// file until then).
    void stop_multi(int fd, Dir& q, bool wait) noexcept {
        if (!q.ms_stopping) {
            try {
                io_uring_sqe* sqe = get_sqe();
                io_uring_prep_cancel64(sqe, multi_data(fd, q.ms_gen, q.ms_kind), 0);
                io_uring_sqe_set_data64(sqe, kTagIgnore);
                q.ms_stopping = true;
            } catch (...) {
                return;  // the ring refuses requests: nothing more comes from it either
            }
        }
        if (!wait) return;
        const std::uint32_t gen = q.ms_gen;
        // The caller serves q's ops once the multishot is over: its CQEs only fill the stash.
        const int outer = stopping_fd_;
        stopping_fd_ = fd;
        try {
            reap();
            while (q.ms_armed && q.ms_gen == gen) {
                const int r = io_uring_submit_and_wait(&ring_, 1);
                if (r < 0 && r != -EINTR && r != -EAGAIN && r != -EBUSY && r != -ETIME) break;
                reap();
            }
        } catch (...) {
        }
        stopping_fd_ = outer;
    }

    std::size_t on_multi_cqe(std::uint64_t data, int res, unsigned flags) {
        const bool more = (flags & IORING_CQE_F_MORE) != 0;
        if (!more) --inflight_;
        const int fd = static_cast<int>((data >> 4) & 0x1fffffffu);
        const char* bytes = nullptr;
        int bid = -1;
        if ((flags & IORING_CQE_F_BUFFER) != 0) {
            bid = static_cast<int>(flags >> IORING_CQE_BUFFER_SHIFT);
            bytes = buf_blocks_[static_cast<std::size_t>(bid)].data();
        }
        FdState* s = closing_ ? nullptr : fds_.find(fd);
        Dir* qp = s != nullptr ? &s->dir[0] : nullptr;
        if (qp == nullptr || !qp->ms_armed || (qp->ms_gen & 0x7fffffffu) != (data >> 33)) {
            // Stale (the fd was forgotten, or the loop is closing): give back what it holds.
            if (bid >= 0 && !closing_) recycle(bid);
            if ((data & 8u) != 0 && res >= 0) ::close(res);  // a connection nobody will take
            return 0;
        }
        Dir& q = *qp;
        if (!more) {
            q.ms_armed = false;
            q.ms_stopping = false;
            --(q.ms_kind == IoKind::accept ? ms_accept_armed_ : ms_recv_armed_);
        }
        std::size_t n = 0;
        if (q.ms_kind == IoKind::recv) {
            if (res > 0 && bytes != nullptr) {
                IoOp* h = q.head;
                bool given = false;
                if (h != nullptr && h->provide != nullptr && !q.inflight && q.stash.empty() && fd != stopping_fd_ &&
                    (h->len == 0 || static_cast<std::size_t>(res) <= h->len)) {
                    // (A buffer less than half full is not offered: copying its bytes costs less
                    // than the new buffer that would replace it.)
                    if (h->adopt != nullptr && bid >= 0 && 2 * static_cast<std::size_t>(res) >= buf_size_ &&
                        hand_over_buffer(*h, bid, static_cast<std::size_t>(res))) {
                        given = true;
                        bid = -1;  // (its slot has a new buffer, in the ring already)
                    } else {
                        char* dst = nullptr;
                        try {
                            dst = h->provide(*h, static_cast<std::size_t>(res));
                        } catch (...) {
                        }
                        if (dst != nullptr) {
                            std::memcpy(dst, bytes, static_cast<std::size_t>(res));
                            given = true;
                        }
                    }
                    if (given) {
                        complete_head(q, *h, res);
                        ++n;
                    }
                }
                if (!given) {
                    try {
                        q.stash.append(bytes, static_cast<std::size_t>(res));
                    } catch (...) {
                        q.ended = true;  // no memory to keep the bytes: the stream fails
                        q.end_result = -ENOMEM;
                    }
                }
                if (q.stash.size() >= kStashMax && q.ms_armed) stop_multi(fd, q, false);  // pause
            } else if (res == 0 || (res < 0 && res != -ECANCELED && res != -ENOBUFS && res != -EINTR &&
                                    res != -EAGAIN)) {
                if (!q.ended) {
                    q.ended = true;
                    q.end_result = res;
                }
            } else if (res == -ENOBUFS) {
                ++enobufs_;
                q.enobufs = true;
            }
            if (bid >= 0) recycle(bid);
        } else {
            if (res >= 0) {
                try {
                    q.accepted.push_back(res);
                } catch (...) {
                    ::close(res);
                }
                if (q.accepted.size() >= kAcceptQueueMax && q.ms_armed) stop_multi(fd, q, false);
            } else if (res != -ECANCELED && res != -EINTR && res != -EAGAIN && !accept_should_retry(-res)) {
                q.ended = true;  // EMFILE and the like: to the next accept, once
                q.end_result = res;
            }
        }
        if (fd == stopping_fd_) return n;
        try {
            n += serve_multi(fd, q);
        } catch (const std::system_error& e) {
            if (IoOp* h = q.head) {
                if (!q.inflight) {
                    complete_head(q, *h, -e.code().value());
                    ++n;
                }
            }
        }
        return n;
    }

    // ---- the provided-buffer ring ----

    void setup_buffers() noexcept {
        if (buf_ring_ != nullptr || bufs_failed_) return;
        unsigned count = kBufCount, size = kBufSize;
        if (const char* e = std::getenv("ASYNCIO_URING_BUFFERS")) {
            unsigned c = 0, z = 0;
            if (std::sscanf(e, "%u:%u", &c, &z) == 2 && c >= 1 && c <= 32768 && (c & (c - 1)) == 0 && z >= 16 &&
                z <= (1u << 20)) {
                count = c;
                size = z;
            }
        }
        buf_count_ = count;
        buf_size_ = size;
        const std::size_t ring_len = (count * sizeof(io_uring_buf) + 4095) & ~std::size_t{4095};
        void* ring = ::mmap(nullptr, ring_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (ring == MAP_FAILED) {
            bufs_failed_ = true;
            return;
        }
        // Each buffer is a block of its own (a std::string), so that one holding a large receive
        // can be handed to the reader as it is (hand_over_buffer).
        try {
            buf_blocks_.reserve(count);
            for (unsigned i = 0; i < count; ++i) buf_blocks_.push_back(make_uninitialized_string(size));
        } catch (...) {
            ::munmap(ring, ring_len);
            std::vector<std::string>().swap(buf_blocks_);
            bufs_failed_ = true;
            return;
        }
        buf_ring_ = static_cast<io_uring_buf_ring*>(ring);
        buf_ring_len_ = ring_len;
        bool ok = true;
        try {
            enable();
        } catch (...) {
            ok = false;
        }
        if (!ok || !register_buffers()) {
            ::munmap(ring, ring_len);
            std::vector<std::string>().swap(buf_blocks_);
            buf_ring_ = nullptr;
            bufs_failed_ = true;  // (Linux < 5.19): receives go the plain way
        }
    }

    /// Registers the ring (again, in a new io_uring) with every buffer in it.
    bool register_buffers() noexcept {
        io_uring_buf_reg reg{};
        reg.ring_addr = reinterpret_cast<std::uintptr_t>(buf_ring_);
        reg.ring_entries = buf_count_;
        reg.bgid = kBufGroup;
        if (io_uring_register_buf_ring(&ring_, &reg, 0) != 0) return false;
        io_uring_buf_ring_init(buf_ring_);
        const int mask = io_uring_buf_ring_mask(buf_count_);
        for (unsigned i = 0; i < buf_count_; ++i)
            io_uring_buf_ring_add(buf_ring_, buf_blocks_[i].data(), buf_size_, static_cast<unsigned short>(i), mask,
                                  static_cast<int>(i));
        io_uring_buf_ring_advance(buf_ring_, static_cast<int>(buf_count_));
        return true;
    }

    void recycle(int bid) noexcept {
        io_uring_buf_ring_add(buf_ring_, buf_blocks_[static_cast<std::size_t>(bid)].data(), buf_size_,
                              static_cast<unsigned short>(bid), io_uring_buf_ring_mask(buf_count_), 0);
        io_uring_buf_ring_advance(buf_ring_, 1);
    }

    /// Offers buffer bid, holding the n bytes of a receive, to op (IoOp::adopt) instead of
    /// copying them: if op takes it, a new block (the spare, made beforehand so that an offer
    /// never leaves a slot empty) goes into the ring in its place. True: op has the bytes.
    bool hand_over_buffer(IoOp& op, int bid, std::size_t n) noexcept {
        if (spare_block_.size() != buf_size_) {
            try {
                spare_block_ = make_uninitialized_string(buf_size_);
            } catch (...) {
                return false;  // no memory for a new buffer: the bytes are copied
            }
        }
        std::string& slot = buf_blocks_[static_cast<std::size_t>(bid)];
        if (!op.adopt(op, slot, n)) return false;
        slot = std::move(spare_block_);
        spare_block_ = std::string();
        recycle(bid);
        ++handed_over_;
        return true;
    }

    // ---- the wake-up channel: a read of the eventfd, always in the ring ----

    void arm_wakeup() {
        io_uring_sqe* sqe = get_sqe();
        if (wake_by_poll_)
            io_uring_prep_poll_add(sqe, wakefd_, POLLIN);
        else
            io_uring_prep_read(sqe, wakefd_, &wake_values_[wake_slot_ % 2], sizeof(std::uint64_t), 0);
        io_uring_sqe_set_data64(sqe, kTagWakeup);
        wake_armed_ = true;
        ++inflight_;
    }

    void on_wakeup_cqe(int res) {
        --inflight_;
        wake_armed_ = false;
        if (closing_) return;
        if (wake_by_poll_) {
            std::uint64_t value;
            while (::read(wakefd_, &value, sizeof value) > 0) {
            }
        } else if (res == -EAGAIN) {
            wake_by_poll_ = true;  // this kernel cannot wait in an eventfd read: poll it
        }
        arm_wakeup();
    }

    // ---- watchers ----

    static std::uint64_t watcher_data(int fd, bool writer, std::uint32_t arm_gen) noexcept {
        return kTagWatcher | (writer ? 8u : 0u) |
               (static_cast<std::uint64_t>(static_cast<std::uint32_t>(fd) & 0x1fffffffu) << 4) |
               (static_cast<std::uint64_t>(arm_gen & 0x7fffffffu) << 33);
    }

    void arm_watcher(int fd, bool writer, Dir& q) {
        io_uring_sqe* sqe = get_sqe();
        io_uring_prep_poll_add(sqe, fd, writer ? POLLOUT : POLLIN | POLLRDHUP);
        ++q.arm_gen;
        io_uring_sqe_set_data64(sqe, watcher_data(fd, writer, q.arm_gen));
        q.armed = true;
    }

    /// Withdraws a watcher's POLL_ADD; its CQE, whenever it comes, is stale (arm_gen moves on).
    void cancel_watcher_poll(int fd, bool writer, Dir& q) noexcept {
        q.armed = false;
        const std::uint64_t data = watcher_data(fd, writer, q.arm_gen);
        ++q.arm_gen;
        try {
            io_uring_sqe* sqe = get_sqe();
            io_uring_prep_cancel64(sqe, data, 0);
            io_uring_sqe_set_data64(sqe, kTagIgnore);
        } catch (...) {
            // The poll stays in the kernel until the fd is closed; its CQE is ignored.
        }
    }

    std::size_t on_watcher_cqe(std::uint64_t data, int res) {
        if (closing_) return 0;
        const int fd = static_cast<int>((data >> 4) & 0x1fffffffu);
        const bool writer = (data & 8u) != 0;
        FdState* s = fds_.find(fd);
        if (s == nullptr) return 0;
        Dir& q = s->dir[writer ? 1 : 0];
        if ((q.arm_gen & 0x7fffffffu) != (data >> 33) || !q.armed) return 0;  // stale
        q.armed = false;
        // An error (the fd was closed behind the loop's back): silent, as epoll drops a closed
        // file from its set, rather than a callback run in every iteration.
        if (!q.watcher || res < 0) return 0;
        q.queued = true;
        push(&run_watcher, WatcherTurn{fd, writer, q.watch_gen}.pack());
        return 1;
    }

    /// A watcher's turn (WatcherTurn): runs the callback, then arms the poll again
    /// (level-triggered: if the fd is still ready, the poll completes at once and the callback
    /// runs next iteration).
    static void run_watcher(void* packed) {
        EventLoop* loop = t_running_loop;
        auto& self = static_cast<UringBackend&>(loop->backend());
        const WatcherTurn turn = WatcherTurn::unpack(packed);
        FdState* s = self.fds_.find(turn.fd);
        if (s == nullptr) return;
        Dir& q = s->dir[turn.writer ? 1 : 0];
        q.queued = false;
        if (turn.current(q.watch_gen)) run_watcher_callback(*loop, q.watcher);
        // q again (pages never move), which the callback may have changed.
        if (q.watcher && !q.armed && !q.queued) {
            try {
                self.arm_watcher(turn.fd, turn.writer, q);
            } catch (...) {
                loop->call_exception_handler({"Exception in callback", std::current_exception(), {}});
            }
        }
    }

    io_uring ring_{};
    ReadyQueue& ready_;
    int wakefd_ = -1;
    std::uint64_t wake_values_[2] = {};  // the eventfd read's buffer (a ring moved to another
    unsigned wake_slot_ = 0;             // thread leaves its old read the other one)
    bool wake_armed_ = false;
    bool wake_by_poll_ = false;
    bool disabled_ = false;  // IORING_SETUP_R_DISABLED: enabled by the first thread that uses it
    bool single_issuer_ = false;
    const char* issuer_ = nullptr;  // &t_thread_token of the thread that enabled the ring
    struct Rearm {
        int fd;
        bool writer;
    };
    std::vector<Rearm> rearm_;  // watchers to arm again in a new ring
    bool closing_ = false;
    std::size_t inflight_ = 0;  // requests whose CQE has not come (ops and the wake-up read)
    IoOp* withdrawing_ = nullptr;
    FileOp* file_withdrawing_ = nullptr;
    bool file_withdrawn_ = false;
    int file_withdrawn_res_ = 0;
    // Multishot receives and accepts (off with ASYNCIO_URING_MULTISHOT=0, to compare).
    bool multishot_ = multishot_enabled();
    io_uring_buf_ring* buf_ring_ = nullptr;
    std::size_t buf_ring_len_ = 0;
    std::vector<std::string> buf_blocks_;  // the provided buffers, buf_size_ bytes each (bid = index)
    std::string spare_block_;  // the next buffer to replace one handed over (hand_over_buffer)
    unsigned buf_count_ = kBufCount;
    unsigned buf_size_ = kBufSize;
    bool bufs_failed_ = false;
    bool bufs_reregister_ = false;
    std::size_t ms_recv_armed_ = 0;
    std::size_t ms_accept_armed_ = 0;
    std::size_t enobufs_ = 0;
    std::size_t deferred_ = 0;  // ops submitted with IoOp::defer (counters())
    std::size_t handed_over_ = 0;  // buffers handed to a reader whole (counters())
    bool skipped_last_ = false;  // the last poll() did not enter the kernel (see poll())
    int stopping_fd_ = -1;  // stop_multi is waiting for this fd's last multishot CQE
    static bool multishot_enabled() noexcept {
        const char* e = std::getenv("ASYNCIO_URING_MULTISHOT");
        return e == nullptr || std::strcmp(e, "0") != 0;
    }
    bool withdrawn_ = false;
    int withdrawn_res_ = 0;
    FdTable<FdState> fds_;
};

}  // namespace

std::unique_ptr<Backend> make_uring_backend(ReadyQueue& ready) { return std::make_unique<UringBackend>(ready); }

}  // namespace asyncio::detail
