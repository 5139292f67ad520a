// Completion-based backend: io_uring (liburing), plus an eventfd for cross-thread wake-ups.
//
// An operation (IoOp) is first tried as the plain non-blocking system call, as on epoll: most
// sends, and the receives of a busy connection, complete at once and cost one system call and no
// submission. Only when the call would block does the op become a request in the ring, with the
// IoOp's address as the CQE's user_data:
//   recv, send, accept, read      IORING_OP_RECV, SEND (MSG_NOSIGNAL), ACCEPT, READ (offset -1)
//   recvfrom, sendto              IORING_OP_RECVMSG, SENDMSG (the msghdr lives in the fd's state)
//   readable, writable            IORING_OP_POLL_ADD (one-shot)
//   connect                       POLL_ADD(POLLOUT), then SO_ERROR/connect() as epoll does: a
//                                 second IORING_OP_CONNECT on a connecting socket says EALREADY
//   write (pipes)                 POLL_ADD(POLLOUT), then write(2) with SIGPIPE blocked: the
//                                 kernel would raise SIGPIPE for an io_uring write to a pipe with
//                                 no reader, and there is no flag against it as for send
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
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <system_error>
#include <vector>

#include "asyncio/detail/ready_queue.hpp"
#include "asyncio/event_loop.hpp"
#include "asyncio/exceptions.hpp"
#include "backend/syscalls.hpp"

namespace asyncio::detail {
namespace {

// A CQE's user_data: an IoOp's address (8-byte aligned: tag 0), or a tag in the low 3 bits.
constexpr std::uint64_t kTagMask = 7;
constexpr std::uint64_t kTagWakeup = 1;   // the eventfd read (or poll)
constexpr std::uint64_t kTagWatcher = 2;  // | direction << 3 | fd << 4 | arming << 33
constexpr std::uint64_t kTagIgnore = 3;   // cancel requests: their own CQEs say nothing we need
constexpr std::uint64_t kTagFile = 4;     // | a FileOp's address

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

bool is_reader(const IoOp& op) noexcept { return is_read_kind(op.kind); }

/// Its address tells threads apart (which thread a SINGLE_ISSUER ring belongs to).
thread_local const char t_thread_token = 0;

class UringBackend final : public Backend {
public:
    explicit UringBackend(ReadyQueue& ready) : ready_(ready) {
        setup_ring();
        wakefd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (wakefd_ < 0) {
            const int err = errno;
            io_uring_queue_exit(&ring_);
            throw std::system_error(err, std::generic_category(), "eventfd");
        }
    }

    ~UringBackend() override {
        // Nothing may stay in the kernel that could write into memory freed after this (op
        // buffers, the wake-up counter): cancel everything and reap until it is all back.
        closing_ = true;
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
        io_uring_queue_exit(&ring_);
        ::close(wakefd_);
    }

    std::size_t poll(std::int64_t timeout_ns, ReadyQueue&) override {
        enable();
        if (!wake_armed_) arm_wakeup();
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

    bool submit(IoOp& op) override {
        if (op.fd < 0) return finish_now(op, -EBADF);
        FdState* known = fds_.find(op.fd);
        if (!check_epoch(op, known)) return finish_now(op, -EBADF);
        const int d = is_reader(op) ? 0 : 1;
        bool tried = false;
        if (known == nullptr || known->dir[d].head == nullptr) {
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
            const Dir& q = known->dir[is_reader(op) ? 0 : 1];
            if (q.head != nullptr || q.not_ready) return false;  // never overtake; known not ready
        }
        const std::int64_t r = attempt(op, false);
        if (r == -EAGAIN) {
            if (known != nullptr) known->dir[is_reader(op) ? 0 : 1].not_ready = true;
            return false;
        }
        if (known != nullptr) note_result(known->dir[is_reader(op) ? 0 : 1], op, r);
        return finish_now(op, r);
    }

    bool cancel(IoOp& op) noexcept override {
        if (op.state != IoState::pending) return false;
        FdState& s = *fds_.find(op.fd);  // a pending op's fd has its state
        Dir& q = s.dir[is_reader(op) ? 0 : 1];
        if (q.head != &op || !q.inflight) {
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
                         (op.kind == IoKind::accept && res < 0 && accept_should_retry(-res));
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
        for (int d = 0; d < 2; ++d) {
            Dir& q = s.dir[d];
            if (q.head != nullptr && q.inflight) {
                IoOp& op = *q.head;
                const bool polling = q.polling;
                const int res = withdraw(q, op);
                // A connection accepted in the race has nobody to take it: the op says EBADF.
                if (!polling && op.kind == IoKind::accept && res >= 0) ::close(res);
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
        s = FdState{};
        s.epoch = epoch;
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
        msghdr msg{};            // the head's recvmsg/sendmsg
        iovec iov{};
        std::shared_ptr<Callback> watcher;  // add_reader / add_writer
        bool armed = false;                 // the watcher's POLL_ADD is in the ring
        bool queued = false;                // its run is in the ready queue
        std::uint32_t watch_gen = 0;        // +1 when the watcher is replaced or removed
        std::uint32_t arm_gen = 0;          // +1 per POLL_ADD armed (stale CQEs are ignored)
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
        disabled_ = (p.flags & IORING_SETUP_R_DISABLED) != 0;
        single_issuer_ = (p.flags & IORING_SETUP_SINGLE_ISSUER) != 0;
        if ((p.features & IORING_FEAT_NODROP) == 0) {
            io_uring_queue_exit(&ring_);
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
            io_uring_queue_exit(&ring_);  // its teardown cancels the wake-up read and the polls
            inflight_ = 0;
            wake_armed_ = false;
            ++wake_slot_;  // the old read's buffer is left alone
            setup_ring();
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
        for (const Rearm& w : rearm_) {
            Dir& q = fds_.find(w.fd)->dir[w.writer ? 1 : 0];
            if (q.watcher && !q.armed && !q.queued) arm_watcher(w.fd, w.writer, q);
        }
        rearm_.clear();
    }

    static bool check_epoch(IoOp& op, const FdState* known) noexcept {
        return bind_epoch(op, known != nullptr ? known->epoch : 0);
    }

    static void note_result(Dir& q, const IoOp& op, std::int64_t r) noexcept {
        q.not_ready = r == -EAGAIN || (op.short_means_not_ready && r > 0 && static_cast<std::uint64_t>(r) < op.len);
    }

    static void unlink(IoOp& op, Dir& q) noexcept { detail::unlink(op, q.head, q.tail); }

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
        if (!poll) {
            switch (op.kind) {
                case IoKind::recv:
                    io_uring_prep_recv(sqe, op.fd, op.buf, len, op.flags);
                    break;
                case IoKind::send:
                    io_uring_prep_send(sqe, op.fd, op.buf, len, op.flags | MSG_NOSIGNAL);
                    break;
                case IoKind::accept:
                    io_uring_prep_accept(sqe, op.fd, static_cast<sockaddr*>(op.addr),
                                         op.addr != nullptr ? reinterpret_cast<socklen_t*>(&op.addrlen) : nullptr,
                                         SOCK_NONBLOCK | SOCK_CLOEXEC);
                    break;
                case IoKind::read:
                    io_uring_prep_read(sqe, op.fd, op.buf, len, ~std::uint64_t{0});
                    break;
                case IoKind::recvfrom:
                case IoKind::sendto:
                    q.iov.iov_base = op.buf;
                    q.iov.iov_len = len;
                    q.msg = msghdr{};
                    q.msg.msg_name = op.addr;
                    q.msg.msg_namelen = op.addr != nullptr ? op.addrlen : 0;
                    q.msg.msg_iov = &q.iov;
                    q.msg.msg_iovlen = 1;
                    if (op.kind == IoKind::recvfrom)
                        io_uring_prep_recvmsg(sqe, op.fd, &q.msg, static_cast<unsigned>(op.flags));
                    else
                        io_uring_prep_sendmsg(sqe, op.fd, &q.msg, static_cast<unsigned>(op.flags | MSG_NOSIGNAL));
                    break;
                default:
                    poll = true;  // readable, writable, connect, write
                    break;
            }
        }
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
            if (!q.not_ready) {
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
        if (withdrawn_res_ >= 0 && op.kind == IoKind::recvfrom) op.addrlen = q.msg.msg_namelen;
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
                io_uring_cqe_seen(&ring_, cqe);
                any = true;
                n += on_cqe(data, res);
            }
            // Completions the CQ had no room for wait in the kernel (IORING_FEAT_NODROP).
            if (!any || !io_uring_cq_has_overflow(&ring_)) break;
            io_uring_get_events(&ring_);
        }
        return n;
    }

    std::size_t on_cqe(std::uint64_t data, int res) {
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
                r = op.kind == IoKind::readable || op.kind == IoKind::writable ? 0
                                                                               : attempt(op, op.kind == IoKind::connect);
            }
        } else {
            if (op.kind == IoKind::recvfrom && r >= 0) op.addrlen = q.msg.msg_namelen;
            if (r == -EINTR || (op.kind == IoKind::accept && r < 0 && accept_should_retry(static_cast<int>(-r)))) {
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
    bool withdrawn_ = false;
    int withdrawn_res_ = 0;
    FdTable<FdState> fds_;
};

}  // namespace

std::unique_ptr<Backend> make_uring_backend(ReadyQueue& ready) { return std::make_unique<UringBackend>(ready); }

}  // namespace asyncio::detail
