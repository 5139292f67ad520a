// Readiness-based backend: epoll plus an eventfd for cross-thread wake-ups. Operations (IoOp) are
// emulated: the system call is tried at once on the non-blocking fd, and only when it would block
// (EAGAIN) is the op queued on its fd, to be retried when epoll reports readiness.
//
// Edge-triggered, one registration per fd. An fd used by operations is added to the epoll set once
// (EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET), the first time one of its operations has to wait, and
// stays there until the library closes the fd (forget_fd). Why edge-triggered and persistent:
//   - a level-triggered fd that stays registered while nobody wants to read it (a stream whose
//     reader paused for flow control, a socket with unread data between two recv calls) would be
//     reported by every epoll_wait: a busy loop;
//   - level-triggered without that, i.e. registering on EAGAIN and unregistering on completion
//     (Python's sock_recv does add_reader/remove_reader), costs two epoll_ctl calls per blocking
//     receive, which is most of the cost of a small echo message;
//   - edge-triggered is correct here because an op only waits after its own system call returned
//     EAGAIN: any data arriving after that is a new edge, and an edge that arrives while no op
//     waits is simply dropped (the next op tries the call first and finds the data).
// So a receive that has to wait costs its failed call and its share of epoll_wait, nothing more.
// Even that failed call is saved when the backend knows the fd is not ready: after an attempt
// that failed with EAGAIN, or a short receive/send of an op marked short_means_not_ready (a stream
// socket), a direction of a registered fd is "not ready" until epoll reports an event for it, and
// an operation submitted meanwhile is queued without trying the call. Any data (or space) that
// comes after that attempt raises a new edge, so nothing is missed; an echo server then makes the
// same system calls per message as a hand-written level-triggered one (recv, send, epoll_wait).
// Once epoll has reported EPOLLRDHUP/EPOLLHUP/EPOLLERR for an fd, short results prove nothing
// (a receive can return the last bytes and consume the FIN in the same call, and no edge follows):
// from then on only EAGAIN marks it not ready.
// registrations() counts pending operations (and watchers), not fds in the set: an idle connection
// costs the loop nothing, and with nothing pending the loop skips epoll_wait when it would not block.
//
// add_reader/add_writer callbacks (watchers) keep Python's level-triggered meaning (called every
// iteration while the fd is readable), so an fd with a watcher is registered level-triggered with
// exactly the directions wanted (by watchers or by ops queued on it), and changes of that set cost an
// epoll_ctl. When its last watcher goes, an fd that operations had used goes back to edge-triggered,
// any other is removed from the set.
#include "backend/epoll_backend.hpp"
#include "backend/syscalls.hpp"

#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <ctime>
#include <new>
#include <system_error>
#include <vector>

#include "asyncio/detail/ready_queue.hpp"
#include "asyncio/event_loop.hpp"

namespace asyncio::detail {
namespace {

constexpr std::uint64_t kWakeupTag = ~std::uint64_t{0};
constexpr std::uint32_t kEdgeEvents = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
constexpr std::uint32_t kReadEvents = EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR;
constexpr std::uint32_t kWriteEvents = EPOLLOUT | EPOLLHUP | EPOLLERR;

class EpollBackend final : public Backend {
public:
    EpollBackend() {
        epfd_ = ::epoll_create1(EPOLL_CLOEXEC);
        if (epfd_ < 0) throw std::system_error(errno, std::generic_category(), "epoll_create1");
        wakefd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (wakefd_ < 0) {
            const int err = errno;
            ::close(epfd_);
            throw std::system_error(err, std::generic_category(), "eventfd");
        }
        epoll_event ev{};
        ev.events = EPOLLIN;
        ev.data.u64 = kWakeupTag;
        if (::epoll_ctl(epfd_, EPOLL_CTL_ADD, wakefd_, &ev) < 0) {
            const int err = errno;
            ::close(wakefd_);
            ::close(epfd_);
            throw std::system_error(err, std::generic_category(), "epoll_ctl");
        }
    }
    ~EpollBackend() override {
        // Operations still pending belong to frames that outlive the loop: mark them so that
        // their owners do not call back into a backend that is gone.
        fds_.for_each([](FdState& s) {
            for (IoOp* q : {s.rhead, s.whead}) {
                while (q != nullptr) {
                    IoOp* next = q->next;
                    q->prev = q->next = nullptr;
                    q->state = IoState::detached;
                    q = next;
                }
            }
        });
        ::close(wakefd_);
        ::close(epfd_);
    }

    std::size_t poll(std::int64_t timeout_ns, ReadyQueue& ready) override {
        int timeout_ms;
        if (timeout_ns < 0) {
            timeout_ms = -1;
        } else {
            // Round up: a timeout rounded down to 0 turns a short sleep into a busy loop. (Not as
            // (ns + 999'999) / 1e6: that overflows for a timer at TimePoint::max().) A wait longer
            // than INT_MAX ms (24.8 days) is cut short: the loop recomputes it and waits again.
            const std::int64_t ms = timeout_ns / 1'000'000 + (timeout_ns % 1'000'000 != 0 ? 1 : 0);
            timeout_ms = ms > 0x7fffffff ? 0x7fffffff : static_cast<int>(ms);
        }
        epoll_event events[kMaxEvents];
        int n = ::epoll_wait(epfd_, events, kMaxEvents, timeout_ms);
        if (n < 0) {
            if (errno == EINTR) return 0;  // the loop recomputes its timeout and comes back
            throw std::system_error(errno, std::generic_category(), "epoll_wait");
        }
        std::size_t completions = 0;
        for (int i = 0; i < n; ++i) {
            const std::uint64_t tag = events[i].data.u64;
            if (tag == kWakeupTag) {
                std::uint64_t value;
                while (::read(wakefd_, &value, sizeof value) > 0) {
                }
                continue;
            }
            const int fd = static_cast<int>(tag);
            FdState* sp = fds_.find(fd);
            if (sp == nullptr) continue;
            FdState& s = *sp;
            const std::uint32_t e = events[i].events;
            const bool level = s.watched();
            if ((e & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0) s.hup = true;
            if ((e & kReadEvents) != 0) {
                s.rnot_ready = false;
                completions += run_queue(s, s.rhead, s.rtail, ready);
                if (s.reader) {
                    ready.push(&run_watcher, WatcherTurn{fd, false, s.watch_gen}.pack());
                    ++completions;
                }
            }
            if ((e & kWriteEvents) != 0) {
                s.wnot_ready = false;
                completions += run_queue(s, s.whead, s.wtail, ready);
                if (s.writer) {
                    ready.push(&run_watcher, WatcherTurn{fd, true, s.watch_gen}.pack());
                    ++completions;
                }
            }
            // Level-triggered interest follows the queues; a failure here leaves a superset
            // registered, which only costs spurious wake-ups.
            if (level) update_interest(fd, s, std::nothrow);
        }
        return completions;
    }

    void wakeup() noexcept override { signal_eventfd(wakefd_); }

    const char* name() const noexcept override { return "epoll"; }

    bool submit(IoOp& op) override {
        if (op.fd < 0) return finish_now(op, -EBADF);
        FdState* known = fds_.find(op.fd);
        // Its fd was closed since: the number is someone else's.
        if (!bind_epoch(op, known != nullptr ? known->epoch : 0)) return finish_now(op, -EBADF);
        const bool reader = is_reader(op);
        if (known == nullptr || (reader ? known->rhead : known->whead) == nullptr) {
            // Nobody waits ahead of it in this direction: try the call now, unless the fd is
            // registered and known not to be ready (then only an event can change that).
            const bool not_ready = known != nullptr && known->registered != 0 &&
                                   (reader ? known->rnot_ready : known->wnot_ready);
            if (!not_ready) {
                const std::int64_t r = attempt(op, false);
                if (known != nullptr) note_attempt(*known, op, r);
                if (r != -EAGAIN) return finish_now(op, r);
            }
        }
        FdState& s = known != nullptr ? *known : fds_.get(op.fd);
        IoOp*& head = reader ? s.rhead : s.whead;
        IoOp*& tail = reader ? s.rtail : s.wtail;
        op.prev = tail;
        op.next = nullptr;
        if (tail != nullptr)
            tail->next = &op;
        else
            head = &op;
        tail = &op;
        op.state = IoState::pending;
        ++registrations_;
        if (const int err = update_interest(op.fd, s, std::nothrow); err != 0) {
            unlink(op, head, tail);
            --registrations_;
            return finish_now(op, -err);
        }
        return false;
    }

    bool try_now(IoOp& op) override {
        if (op.fd < 0) return finish_now(op, -EBADF);
        FdState* known = fds_.find(op.fd);
        if (!bind_epoch(op, known != nullptr ? known->epoch : 0)) return finish_now(op, -EBADF);
        if (known != nullptr) {
            const bool reader = is_reader(op);
            if ((reader ? known->rhead : known->whead) != nullptr) return false;  // never overtake
            if (known->registered != 0 && (reader ? known->rnot_ready : known->wnot_ready)) return false;
        }
        const std::int64_t r = attempt(op, false);
        if (known != nullptr) note_attempt(*known, op, r);
        if (r == -EAGAIN) return false;
        return finish_now(op, r);
    }

    bool cancel(IoOp& op) noexcept override {
        if (op.state != IoState::pending) return false;
        FdState& s = *fds_.find(op.fd);  // a pending op's fd has its state
        if (is_reader(op))
            unlink(op, s.rhead, s.rtail);
        else
            unlink(op, s.whead, s.wtail);
        op.state = IoState::cancelled;
        --registrations_;
        if (s.watched()) update_interest(op.fd, s, std::nothrow);
        return true;
    }

    void forget_fd(int fd, bool closing, ReadyQueue& ready) noexcept override {
        if (fd < 0) return;
        FdState* sp = fds_.find_or_make(fd);
        if (sp == nullptr) return;
        FdState& s = *sp;
        for (IoOp** head : {&s.rhead, &s.whead}) {
            while (IoOp* op = *head) {
                *head = op->next;
                op->prev = op->next = nullptr;
                op->result = -EBADF;
                op->state = IoState::done;
                --registrations_;
                try {
                    ready.push(op->complete, op);
                } catch (...) {
                    // Out of memory growing the ready queue: the waiter stays suspended until
                    // its task is cancelled or the loop closes; nothing dangles.
                }
            }
        }
        if (s.reader) --registrations_;
        if (s.writer) --registrations_;
        // After close() the kernel drops the fd from the set by itself, unless another descriptor
        // (dup, fork) still refers to the same file: remove it explicitly. A new fd was never in it.
        if (closing && s.registered != 0) {
            epoll_event ev{};
            ::epoll_ctl(epfd_, EPOLL_CTL_DEL, fd, &ev);
        }
        const std::uint32_t epoch = s.epoch + 1;
        const std::uint32_t watch_gen = s.watch_gen + 1;
        s = FdState{};
        s.epoch = epoch;
        s.watch_gen = watch_gen;
    }

    bool set_watcher(int fd, bool writer, std::shared_ptr<Callback> cb) override {
        if (fd < 0) {
            if (!cb) return false;
            throw std::system_error(EBADF, std::generic_category(), writer ? "add_writer" : "add_reader");
        }
        FdState* sp = fds_.find(fd);
        if (sp == nullptr) {
            if (!cb) return false;
            sp = &fds_.get(fd);
        }
        FdState& s = *sp;
        std::shared_ptr<Callback>& slot = writer ? s.writer : s.reader;
        const bool had = static_cast<bool>(slot);
        std::shared_ptr<Callback> old = std::move(slot);
        slot = std::move(cb);
        if (const int err = update_interest(fd, s, std::nothrow); err != 0) {
            slot = std::move(old);
            throw std::system_error(err, std::generic_category(),
                                    writer ? "add_writer" : "add_reader");
        }
        if (slot && !had) ++registrations_;
        if (!slot && had) --registrations_;
        if (had) ++s.watch_gen;  // an event queued for the old callback is not the new one's
        return had;
    }

private:
    struct FdState {
        IoOp* rhead = nullptr;  // reading kinds, FIFO
        IoOp* rtail = nullptr;
        IoOp* whead = nullptr;  // writing kinds, FIFO
        IoOp* wtail = nullptr;
        std::shared_ptr<Callback> reader;  // add_reader (level-triggered)
        std::shared_ptr<Callback> writer;  // add_writer
        std::uint32_t registered = 0;      // the events in the epoll set for this fd; 0: not in it
        bool edge = false;                 // operations used it: keep it, edge-triggered
        bool rnot_ready = false;           // reading would block, until the next read event
        bool wnot_ready = false;           // writing would block, until the next write event
        bool hup = false;                  // EPOLLRDHUP/HUP/ERR seen: short results say nothing
        std::uint32_t epoch = 0;           // +1 each time the library closes (or creates) this fd
        std::uint32_t watch_gen = 0;       // +1 each time a watcher is set or removed (run_watcher)

        bool watched() const noexcept { return reader || writer; }
    };

    using FdTable = detail::FdTable<FdState>;

    /// A watcher's turn in the ready queue (WatcherTurn). The fd is looked up again: the
    /// callback may have been removed (or replaced) since the event.
    static void run_watcher(void* packed) {
        EventLoop* loop = t_running_loop;
        auto& self = static_cast<EpollBackend&>(loop->backend());
        const WatcherTurn turn = WatcherTurn::unpack(packed);
        FdState* s = self.fds_.find(turn.fd);
        if (s == nullptr || !turn.current(s->watch_gen)) return;
        run_watcher_callback(*loop, turn.writer ? s->writer : s->reader);
    }

    /// Records what an attempt says about the fd's readiness in op's direction.
    static void note_attempt(FdState& s, const IoOp& op, std::int64_t r) noexcept {
        bool& not_ready = is_reader(op) ? s.rnot_ready : s.wnot_ready;
        if (r == -EAGAIN)
            not_ready = true;
        else if (op.short_means_not_ready && !s.hup && r > 0 && static_cast<std::uint64_t>(r) < op.len)
            not_ready = true;
        else
            not_ready = false;
    }

    /// Retries the queued ops of one direction in order until one would block.
    std::size_t run_queue(FdState& s, IoOp*& head, IoOp*& tail, ReadyQueue& ready) {
        std::size_t n = 0;
        while (IoOp* op = head) {
            const std::int64_t r = attempt(*op, true);
            note_attempt(s, *op, r);
            if (r == -EAGAIN) break;
            unlink(*op, head, tail);
            op->result = r;
            op->state = IoState::done;
            --registrations_;
            ready.push(op->complete, op);
            ++n;
        }
        return n;
    }

    /// Brings the epoll set in line with what fd needs. Returns 0 or the errno of epoll_ctl.
    int update_interest(int fd, FdState& s, std::nothrow_t) noexcept {
        std::uint32_t want = 0;
        if (s.watched()) {
            if (s.reader || s.rhead != nullptr) want |= EPOLLIN;
            if (s.writer || s.whead != nullptr) want |= EPOLLOUT;
        } else if (s.edge || s.rhead != nullptr || s.whead != nullptr) {
            s.edge = true;  // from now on, until the fd is closed
            want = kEdgeEvents;
        }
        if (want == s.registered) return 0;
        epoll_event ev{};
        ev.events = want;
        ev.data.u64 = static_cast<std::uint64_t>(fd);
        int op = s.registered == 0 ? EPOLL_CTL_ADD : (want == 0 ? EPOLL_CTL_DEL : EPOLL_CTL_MOD);
        if (::epoll_ctl(epfd_, op, fd, &ev) < 0) {
            // Our table and the kernel's set disagree (a fd closed behind the library's back and
            // its number reused, or still open through a dup): converge on what we want.
            if (op == EPOLL_CTL_ADD && errno == EEXIST) {
                op = EPOLL_CTL_MOD;
            } else if (op == EPOLL_CTL_MOD && errno == ENOENT) {
                op = EPOLL_CTL_ADD;
            } else if (op == EPOLL_CTL_DEL) {
                s.registered = 0;
                return 0;
            } else {
                return errno;
            }
            if (::epoll_ctl(epfd_, op, fd, &ev) < 0) return errno;
        }
        s.registered = want;
        return 0;
    }

    static constexpr int kMaxEvents = 256;
    int epfd_ = -1;
    int wakefd_ = -1;
    FdTable fds_;
};

}  // namespace

std::unique_ptr<Backend> make_epoll_backend() { return std::make_unique<EpollBackend>(); }

}  // namespace asyncio::detail
