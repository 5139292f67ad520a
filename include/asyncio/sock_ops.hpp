// The loop's low-level socket operations, Python's loop.sock_*: free functions on the running loop
// (Python's `await loop.sock_recv(sock, n)` is `co_await asyncio::sock_recv(sock, n)`), to be
// awaited inside a task.
//
//   auto [conn, peer] = co_await asyncio::sock_accept(listener);
//   std::string data = co_await asyncio::sock_recv(conn, 65536);   // "" at EOF
//   co_await asyncio::sock_sendall(conn, data);
//
// Bytes are std::string (binary-safe: any byte, NULs included), as the streams built on these use
// them; sock_recv_into/sock_recvfrom_into fill a buffer of your own (std::span<std::byte>,
// std::string&, std::vector<char>&, ...: see MutableBuffer) with no allocation.
//
// Each call is one operation on the loop's backend (detail/io_op.hpp): it is tried at once and only
// waits (for readiness on epoll; as a submitted operation on io_uring) when it would block. EINTR
// and EAGAIN never reach you (one exception: connect(2) to a Unix socket whose listener's backlog
// is full fails at once with EAGAIN, as libuv reports it: nothing would announce when to retry).
// Errors are std::system_error with the errno (generic_category): ECONNREFUSED, ECONNRESET,
// EPIPE, ... Sends use MSG_NOSIGNAL: no SIGPIPE.
//
// Cancellation: each of these is a suspension point. Cancelling the task while it waits withdraws
// the operation and raises CancelledError; an operation that raised CancelledError did nothing (a
// cancelled sock_recv consumed no bytes, a cancelled sock_accept accepted no connection: they stay
// there for the next call). If the operation had already completed when the cancellation came
// (both in the same loop iteration), its result is delivered and CancelledError is raised at the
// task's next suspension point instead, so that no received data or accepted connection is lost.
// sock_sendall may have sent a prefix of the data when it is cancelled (as in Python).
//
// Closing: a socket closed while an operation on it waits (or while sock_sendall is between two
// partial sends) makes that operation fail with std::system_error(EBADF); nothing is ever sent to
// or received from another file that reused the fd number.
//
// Fairness: operations that complete at once do not suspend, but after 128 of them in one step
// of the loop the next one yields once (its result kept), so a peer that is always ahead cannot
// starve timers and other tasks (Tokio's cooperative budget).
//
// One fd may have several operations pending (say, one task receiving while another sends); in
// each direction they are served in the order they were started.
//
// The socket, and any buffer passed in, must stay alive until the co_await returns (a temporary
// in the co_await's full-expression does). Loop thread only.
#pragma once

#include <cassert>
#include <cerrno>
#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <utility>

#include "asyncio/detail/io_op.hpp"
#include "asyncio/socket.hpp"
#include "asyncio/detail/waiter.hpp"
#include "asyncio/task.hpp"

namespace asyncio {

namespace detail {
template <class T>
inline constexpr bool kByteLike = std::is_same_v<T, char> || std::is_same_v<T, signed char> ||
                                  std::is_same_v<T, unsigned char> || std::is_same_v<T, std::byte> ||
                                  std::is_same_v<T, char8_t>;
template <class R>
using range_value_t = std::remove_reference_t<decltype(*std::data(std::declval<R&>()))>;
}  // namespace detail

/// Where received bytes go: a pointer and a size. Converts from (void*, size) and from any
/// contiguous container or view of bytes that is not const: std::span<std::byte>, std::string&,
/// std::vector<char>&, std::array<unsigned char, N>&, char[N], ... The memory is not owned.
struct MutableBuffer {
    void* data = nullptr;
    std::size_t size = 0;

    MutableBuffer(void* d, std::size_t n) noexcept : data(d), size(n) {}
    template <class R>
        requires(detail::kByteLike<detail::range_value_t<R>> &&
                 requires(R& r) { std::size(r); })
    MutableBuffer(R&& r) noexcept  // NOLINT: implicit on purpose
        : data(std::data(r)), size(std::size(r) * sizeof(detail::range_value_t<R>)) {}
};

/// Bytes to send: a pointer and a size. Converts from std::string_view, a C string, (const void*,
/// size), and any contiguous container or view of bytes (std::string, std::vector<std::byte>,
/// std::span<const char>, ...). A char array is taken as a C string (up to its NUL). Not owned.
struct ConstBuffer {
    const void* data = nullptr;
    std::size_t size = 0;

    ConstBuffer(const void* d, std::size_t n) noexcept : data(d), size(n) {}
    ConstBuffer(std::string_view s) noexcept : data(s.data()), size(s.size()) {}  // NOLINT
    ConstBuffer(const char* s) noexcept : ConstBuffer(std::string_view(s)) {}     // NOLINT
    template <class R>
        requires(detail::kByteLike<std::remove_const_t<detail::range_value_t<R>>> &&
                 !std::is_array_v<std::remove_cvref_t<R>> && requires(R& r) { std::size(r); })
    ConstBuffer(R&& r) noexcept  // NOLINT: implicit on purpose
        : data(std::data(r)), size(std::size(r) * sizeof(detail::range_value_t<R>)) {}
};

namespace detail {

/// Closes a fd nobody will own (an accepted connection whose awaiter went away).
void close_fd_quietly(int fd) noexcept;

/// The common part of the sock_* awaiters: one IoOp, submitted from await_suspend, completed
/// through the backend, cancelled through the task's cancel hook (detail/waiter.hpp).
class [[nodiscard]] IoAwaiter : public Waiter, public IoOp {
public:
    IoAwaiter(IoKind k, int fd_) noexcept {
        kind = k;
        fd = fd_;
    }
    /// Movable until it is awaited (create_task, gather, wait_for, ... keep it in a frame). The
    /// pointers into the awaiter itself (addresses, own buffers) are set in await_suspend.
    IoAwaiter(IoAwaiter&& o) noexcept : Waiter(), IoOp(static_cast<const IoOp&>(o)) {
        assert(o.state == IoState::idle && o.task() == nullptr);
    }
    IoAwaiter(const IoAwaiter&) = delete;
    IoAwaiter& operator=(const IoAwaiter&) = delete;
    ~IoAwaiter() {
        // A frame destroyed while suspended (its loop closed): leave nothing pointing into it.
        if (state == IoState::pending) io_cancel(*loop_, *this);
    }

    bool await_ready() const noexcept { return false; }

protected:
    /// Submits the op; true if the task must stay suspended.
    bool start(std::coroutine_handle<> h, const char* what, void (*on_complete)(void*) = &resume) {
        loop_ = t_running_loop;
        // A cancellation already pending: raise it without doing anything. (asyncio would do an
        // operation that can complete at once and raise at the next real suspension. Not here:
        // with the cooperative budget, a cancel() that reaches a completed operation while the
        // task yields for the budget is delivered with its result and left pending, and a task
        // reading a peer that is always ahead would never raise it.)
        if (!begin_wait_unless_cancelled(h, what, &on_cancel)) return false;
        complete = on_complete;
        try {
            if (!io_submit(*loop_, *this)) return true;
        } catch (...) {
            abandon_wait();
            throw;
        }
        ready_at_once();  // done at once: go on without suspending
        return false;
    }

    /// The result, or CancelledError, or the OS error as std::system_error.
    std::int64_t finish(const char* what) {
        if (state == IoState::idle || state == IoState::cancelled) throw_cancelled(task());
        if (result < 0) throw std::system_error(static_cast<int>(-result), std::generic_category(), what);
        return result;
    }

    /// Resumes the task (runs from the ready queue).
    static void resume(void* op) { static_cast<IoAwaiter*>(static_cast<IoOp*>(op))->wake_now(); }

    EventLoop* loop_ = nullptr;

private:
    static bool on_cancel(CancelHook* h) {
        auto* self = static_cast<IoAwaiter*>(from_hook(h));
        // Woken through its own loop: cancel() may come while no loop runs (asyncio::run's
        // shutdown cancels the tasks left before running the loop again).
        return self->cancel_io_wait(*self->loop_, io_cancel(*self->loop_, *self));
    }
};

class RecvAwaiter : public IoAwaiter {
public:
    RecvAwaiter(int fd, std::size_t n) : IoAwaiter(IoKind::recv, fd) { data_.resize(n); }
    template <class P>
    bool await_suspend(std::coroutine_handle<P> h, unsigned line = __builtin_LINE()) {
        detail::note_await(h, line);
        buf = data_.data();
        len = data_.size();
        return start(h, "sock_recv");
    }
    std::string await_resume() {
        data_.resize(static_cast<std::size_t>(finish("sock_recv")));
        return std::move(data_);
    }

private:
    std::string data_;
};

class RecvIntoAwaiter : public IoAwaiter {
public:
    RecvIntoAwaiter(int fd, MutableBuffer b) noexcept : IoAwaiter(IoKind::recv, fd) {
        buf = b.data;
        len = b.size;
    }
    template <class P>
    bool await_suspend(std::coroutine_handle<P> h, unsigned line = __builtin_LINE()) {
        detail::note_await(h, line);
        return start(h, "sock_recv_into");
    }
    std::size_t await_resume() { return static_cast<std::size_t>(finish("sock_recv_into")); }
};

class SendAwaiter : public IoAwaiter {
public:
    SendAwaiter(int fd, ConstBuffer b) noexcept : IoAwaiter(IoKind::send, fd) {
        buf = const_cast<void*>(b.data);
        len = b.size;
    }
    template <class P>
    bool await_suspend(std::coroutine_handle<P> h, unsigned line = __builtin_LINE()) {
        detail::note_await(h, line);
        return start(h, "sock_send");
    }
    std::size_t await_resume() { return static_cast<std::size_t>(finish("sock_send")); }
};

/// Sends everything: partial sends are continued from the completion itself, without resuming
/// the task in between.
class SendAllAwaiter : public IoAwaiter {
public:
    SendAllAwaiter(int fd, ConstBuffer b) noexcept : IoAwaiter(IoKind::send, fd) {
        buf = const_cast<void*>(b.data);
        len = b.size;
    }
    bool await_ready() const noexcept { return len == 0; }
    template <class P>
    bool await_suspend(std::coroutine_handle<P> h, unsigned line = __builtin_LINE()) {
        detail::note_await(h, line);
        if (!start(h, "sock_sendall", &on_sent)) return false_or_continue();
        return true;
    }
    void await_resume() {
        if (cancelled_) throw_cancelled(task());
        if (len == 0 && state == IoState::idle) return;  // nothing to send
        finish("sock_sendall");
    }

private:
    /// After a send completed: sends the rest. True (stay suspended) if that is pending.
    bool false_or_continue() {
        while (state == IoState::done && advance()) {
            // Cancelled while a partial send was being reported: stop here and raise it.
            if (task()->has(kMustCancel)) {
                cancelled_ = true;
                return false;
            }
            try {
                if (!io_submit(*loop_, *this)) {
                    wait_again();
                    return true;
                }
            } catch (...) {
                state = IoState::done;
                result = -ENOMEM;
                return false;
            }
        }
        return false;
    }
    /// Accounts for a completed send; true if there is more to send (the op is re-armed).
    bool advance() noexcept {
        if (result < 0) return false;
        const auto n = static_cast<std::size_t>(result);
        if (n >= len) return false;
        buf = static_cast<char*>(buf) + n;
        len -= n;
        state = IoState::idle;
        return true;
    }
    static void on_sent(void* op) {
        auto* self = static_cast<SendAllAwaiter*>(static_cast<IoAwaiter*>(static_cast<IoOp*>(op)));
        if (self->false_or_continue()) return;  // more pending: still suspended
        resume(op);
    }
    bool cancelled_ = false;
};

class AcceptAwaiter : public IoAwaiter {
public:
    AcceptAwaiter(const Socket& listener) noexcept
        : IoAwaiter(IoKind::accept, listener.fileno()),
          family_(listener.family()),
          type_(listener.type()) {}
    AcceptAwaiter(AcceptAwaiter&&) noexcept = default;
    ~AcceptAwaiter() {
        if (state == IoState::done && result >= 0 && !taken_) close_fd_quietly(static_cast<int>(result));
    }
    template <class P>
    bool await_suspend(std::coroutine_handle<P> h, unsigned line = __builtin_LINE()) {
        detail::note_await(h, line);
        addr = peer_.data();
        addrlen = Address::capacity();
        return start(h, "sock_accept");
    }
    std::pair<Socket, Address> await_resume() {
        const int fd = static_cast<int>(finish("sock_accept"));
        taken_ = true;
        peer_.resize(addrlen);
        return {Socket(AdoptFd{}, fd, family_, type_), peer_};
    }

private:
    Address peer_;
    int family_;
    int type_;
    bool taken_ = false;
};

class ConnectAwaiter : public IoAwaiter {
public:
    ConnectAwaiter(const Socket& sock, const Address& address) noexcept
        : IoAwaiter(IoKind::connect, sock.fileno()), address_(address) {}
    template <class P>
    bool await_suspend(std::coroutine_handle<P> h, unsigned line = __builtin_LINE()) {
        detail::note_await(h, line);
        addr = address_.data();
        addrlen = address_.size();
        return start(h, "sock_connect");
    }
    void await_resume() { finish("sock_connect"); }

private:
    Address address_;
};

class RecvFromAwaiter : public IoAwaiter {
public:
    RecvFromAwaiter(int fd, std::size_t n) : IoAwaiter(IoKind::recvfrom, fd) { data_.resize(n); }
    template <class P>
    bool await_suspend(std::coroutine_handle<P> h, unsigned line = __builtin_LINE()) {
        detail::note_await(h, line);
        buf = data_.data();
        len = data_.size();
        addr = peer_.data();
        addrlen = Address::capacity();
        return start(h, "sock_recvfrom");
    }
    std::pair<std::string, Address> await_resume() {
        data_.resize(static_cast<std::size_t>(finish("sock_recvfrom")));
        peer_.resize(addrlen);
        return {std::move(data_), peer_};
    }

private:
    std::string data_;
    Address peer_;
};

class RecvFromIntoAwaiter : public IoAwaiter {
public:
    RecvFromIntoAwaiter(int fd, MutableBuffer b) noexcept : IoAwaiter(IoKind::recvfrom, fd) {
        buf = b.data;
        len = b.size;
    }
    template <class P>
    bool await_suspend(std::coroutine_handle<P> h, unsigned line = __builtin_LINE()) {
        detail::note_await(h, line);
        addr = peer_.data();
        addrlen = Address::capacity();
        return start(h, "sock_recvfrom_into");
    }
    std::pair<std::size_t, Address> await_resume() {
        const auto n = static_cast<std::size_t>(finish("sock_recvfrom_into"));
        peer_.resize(addrlen);
        return {n, peer_};
    }

private:
    Address peer_;
};

class SendToAwaiter : public IoAwaiter {
public:
    SendToAwaiter(int fd, ConstBuffer b, const Address& address) noexcept
        : IoAwaiter(IoKind::sendto, fd), address_(address) {
        buf = const_cast<void*>(b.data);
        len = b.size;
    }
    template <class P>
    bool await_suspend(std::coroutine_handle<P> h, unsigned line = __builtin_LINE()) {
        detail::note_await(h, line);
        addr = address_.data();
        addrlen = address_.size();
        return start(h, "sock_sendto");
    }
    std::size_t await_resume() { return static_cast<std::size_t>(finish("sock_sendto")); }

private:
    Address address_;
};

class ReadinessAwaiter : public IoAwaiter {
public:
    ReadinessAwaiter(int fd, bool writable) noexcept
        : IoAwaiter(writable ? IoKind::writable : IoKind::readable, fd) {}
    template <class P>
    bool await_suspend(std::coroutine_handle<P> h, unsigned line = __builtin_LINE()) {
        detail::note_await(h, line);
        return start(h, kind == IoKind::writable ? "wait_writable" : "wait_readable");
    }
    void await_resume() { finish(kind == IoKind::writable ? "wait_writable" : "wait_readable"); }
};

}  // namespace detail

/// Python's loop.sock_accept(sock): waits for a connection on a listening socket; returns the new
/// socket (non-blocking, close-on-exec, same family and type) and the peer's address.
[[nodiscard]] inline detail::AcceptAwaiter sock_accept(Socket& sock) noexcept {
    return detail::AcceptAwaiter(sock);
}

/// Python's loop.sock_connect(sock, address): connects to a resolved address (no name lookup:
/// resolve with getaddrinfo first). std::system_error(ECONNREFUSED, ETIMEDOUT, ENETUNREACH, ...).
[[nodiscard]] inline detail::ConnectAwaiter sock_connect(Socket& sock, const Address& address) noexcept {
    return detail::ConnectAwaiter(sock, address);
}

/// Python's loop.sock_recv(sock, n): up to n bytes, at least one unless at EOF ("" at EOF).
[[nodiscard]] inline detail::RecvAwaiter sock_recv(Socket& sock, std::size_t n) {
    return detail::RecvAwaiter(sock.fileno(), n);
}

/// Python's loop.sock_recv_into(sock, buf): receives into buf; returns the number of bytes (0 at
/// EOF).
[[nodiscard]] inline detail::RecvIntoAwaiter sock_recv_into(Socket& sock, MutableBuffer buf) noexcept {
    return detail::RecvIntoAwaiter(sock.fileno(), buf);
}

/// Python's loop.sock_sendall(sock, data): sends all of data (waiting while the socket buffer is
/// full). std::system_error(EPIPE/ECONNRESET) if the peer is gone.
[[nodiscard]] inline detail::SendAllAwaiter sock_sendall(Socket& sock, ConstBuffer data) noexcept {
    return detail::SendAllAwaiter(sock.fileno(), data);
}

/// One send(2) (not in Python's loop API): waits until some of data can be sent, sends what fits,
/// returns how many bytes were sent (>= 1 unless data is empty).
[[nodiscard]] inline detail::SendAwaiter sock_send(Socket& sock, ConstBuffer data) noexcept {
    return detail::SendAwaiter(sock.fileno(), data);
}

/// Python's loop.sock_recvfrom(sock, n): one datagram (truncated to n bytes) and its sender.
[[nodiscard]] inline detail::RecvFromAwaiter sock_recvfrom(Socket& sock, std::size_t n) {
    return detail::RecvFromAwaiter(sock.fileno(), n);
}

/// Python's loop.sock_recvfrom_into(sock, buf): one datagram into buf; (size, sender).
[[nodiscard]] inline detail::RecvFromIntoAwaiter sock_recvfrom_into(Socket& sock, MutableBuffer buf) noexcept {
    return detail::RecvFromIntoAwaiter(sock.fileno(), buf);
}

/// Python's loop.sock_sendto(sock, data, address): sends one datagram; returns the bytes sent.
[[nodiscard]] inline detail::SendToAwaiter sock_sendto(Socket& sock, ConstBuffer data,
                                                      const Address& address) noexcept {
    return detail::SendToAwaiter(sock.fileno(), data, address);
}

/// Waits until fd is readable (not in Python's API; Trio's wait_readable). Consumes nothing.
[[nodiscard]] inline detail::ReadinessAwaiter wait_readable(int fd) noexcept { return detail::ReadinessAwaiter(fd, false); }
/// Waits until fd is writable.
[[nodiscard]] inline detail::ReadinessAwaiter wait_writable(int fd) noexcept { return detail::ReadinessAwaiter(fd, true); }
/// Trio's notify_closing(fd), on the running loop (EventLoop::notify_closing): call it right
/// before closing a raw fd that wait_readable/wait_writable (or add_reader/add_writer) used.
/// Waiters on fd fail with std::system_error(EBADF), and a new file that reuses the number is
/// watched afresh. RuntimeError "no running event loop" outside a running loop.
inline void notify_closing(int fd) { get_running_loop().notify_closing(fd); }

}  // namespace asyncio
