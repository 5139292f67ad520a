// The state of one stream connection, shared by its StreamReader and StreamWriter handles:
// asyncio's stream protocol and reader buffer, on a Transport (transport.hpp) that moves the
// bytes (a socket today). Nothing here names a socket. Private to src/.
//
// Lifetime: `refs_` counts every reference (handles, coroutines of the stream API in flight, the
// flusher while it runs); `handles_` counts the StreamReader/StreamWriter handles only. When handles_ drops
// to 0 the connection is closed as by close() (flush, then close the socket); when refs_ drops to 0
// the object is deleted (and its socket closed if it still is open).
//
// Reading: the read buffer is filled by a FillAwaiter, an IoOp (receive into the buffer's free
// tail) started on the transport and embedded in the reading coroutine's frame, so the loop owns
// it through that task. Writing: write() tries the transport once when nothing is buffered (not
// on a transport that defers sends, io_uring, for a write of up to 4 KiB: there the bytes are
// buffered and the flusher's send goes to the kernel with the loop's next poll, no system call
// of its own); the rest goes to a list of chunks that the flusher sends in order. The flusher is
// not a task (as asyncio's transports, which flush from callbacks): one send operation at a
// time, each started by the previous one's completion, holding a reference while it runs.
#pragma once

#include <sys/socket.h>
#include <sys/uio.h>

#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>

#include "asyncio/detail/io_op.hpp"
#include "asyncio/detail/waiter.hpp"
#include "asyncio/event_loop.hpp"
#include "asyncio/streams.hpp"
#include "asyncio/task.hpp"
#include "transport.hpp"
#include "uninitialized_string.hpp"

namespace asyncio::detail {

class ServerState;  // server.cpp

/// The read buffer: bytes [begin_, end_) of a std::string used as a raw block (its size is the
/// capacity; the bytes past end_ are scratch, never zero-filled), grown by doubling. Keeping the
/// block in a std::string lets take() hand the whole block to the caller when it takes everything
/// buffered and that fills at least half of it: a read(65536) of a 16 KiB message then returns
/// the very bytes recv() wrote, with no copy (the next receive gets a new block). On io_uring the
/// block may also come from the backend (adopt(): a provided buffer filled by the kernel), so
/// that bytes received into the loop's buffer ring reach read() without a copy either.
class ReadBuffer {
public:
    static constexpr std::size_t kInitial = 16 * 1024;
    static constexpr std::size_t kMinFree = 4 * 1024;
    static constexpr std::size_t kMaxAuto = 256 * 1024;
    /// Below this a copy is cheaper than a new block for the next receive.
    static constexpr std::size_t kHandOverMin = 4 * 1024;

    std::size_t size() const noexcept { return end_ - begin_; }
    bool empty() const noexcept { return begin_ == end_; }
    const char* data() const noexcept { return block_.data() + begin_; }
    std::string_view view() const noexcept { return {data(), size()}; }
    std::size_t capacity() const noexcept { return block_.size(); }

    /// Room for at least `want` more bytes (at least kMinFree); returns the free tail, which stays
    /// pinned (a receive is writing into it) until commit() or unpin().
    std::pair<char*, std::size_t> prepare(std::size_t want);
    /// n bytes were written into the tail returned by prepare().
    void commit(std::size_t n, std::size_t offered) noexcept {
        end_ += n;
        pinned_ = false;
        if (n == offered && next_cap_ < kMaxAuto) grow_ = true;  // it filled everything: larger next time
    }
    /// The receive into the tail was withdrawn (or never started).
    void unpin() noexcept { pinned_ = false; }
    /// A receive's own block (its first n bytes are the data, block.size() its capacity; the
    /// backend's provided buffer, IoOp::adopt) becomes the buffer, moved out of `block`, when
    /// that saves a copy: the buffer is empty and not pinned, and take() would hand the block over
    /// whole (n >= kHandOverMin, at least half of it). False: not taken, nothing changed.
    bool adopt(std::string& block, std::size_t n) noexcept;
    void append(std::string_view s);
    /// Removes and returns the first n bytes (n <= size()).
    std::string take(std::size_t n);
    void consume(std::size_t n) noexcept {
        begin_ += n;
        taken_ += n;
        // Rewind an empty buffer, unless a receive is writing at end_: it commits there.
        if (begin_ == end_ && !pinned_) begin_ = end_ = 0;
    }
    /// Bytes removed from the front so far (a reader that remembers a position in the buffer
    /// across a wait checks this: another task may have taken bytes meanwhile).
    std::uint64_t taken() const noexcept { return taken_; }

private:
    std::string block_;             // block_.size() is the capacity
    std::size_t next_cap_ = kInitial;  // the size of the next block (grows as receives fill it)
    std::size_t begin_ = 0;
    std::size_t end_ = 0;
    std::uint64_t taken_ = 0;
    bool grow_ = false;
    // A receive writes into the free tail: the block must not move, be handed over or rewound.
    // (A second task may take buffered bytes meanwhile, as asyncio allows; it must not corrupt
    // the first task's pending receive.)
    bool pinned_ = false;
};

class FillAwaiter;
class StreamCore;

/// The flusher's operation (StreamCore::start_flusher): a send, or a gathered send of several
/// chunks (msghdr and iovecs made on its first use), owned by the stream. While it runs it is
/// linked into its loop's close hooks: a loop closed with a send pending withdraws it, and the
/// stream drops what was not sent (as the flusher task cancelled by the loop's shutdown did).
struct Flusher : IoOp, CloseHook {
    static constexpr std::size_t kMaxGather = 16;
    struct Gather {
        msghdr msg{};
        iovec iov[kMaxGather];
    };
    StreamCore* core = nullptr;
    EventLoop* loop = nullptr;
    std::unique_ptr<Gather> gather;
};

/// Called when a connection of a server closes its socket (server.cpp).
void server_connection_closed(StreamCore& c) noexcept;

/// Returns once everything written so far has been sent (the write buffer is empty and the
/// flusher idle), or the stream failed or closed (the caller looks at werror_ / closed_).
/// Cancel-safe: the water marks are restored. (start_tls, sendfile.)
Coroutine<> wait_flushed(StreamRef<false> ref, const char* what);

/// A task waiting on a list (drain(), wait_closed(), serve_forever()): woken by wake_all(),
/// unlinked if cancelled. Raises CancelledError if cancelled (also after a wake-up).
class ListWait : public ListWaiter {
public:
    ListWait(WaitQueue& list, const char* what) noexcept : list_(list), what_(what) {}
    ListWait(const ListWait&) = delete;
    ListWait& operator=(const ListWait&) = delete;
    bool await_ready() const noexcept { return false; }
    template <class P>
    void await_suspend(std::coroutine_handle<P> h, unsigned line = __builtin_LINE()) {
        detail::note_await(h, line);
        wait_in(list_, h, what_);
    }
    void await_resume() const { end_wait(); }
    /// Wakes every waiter of list, in order.
    static void wake_all(WaitQueue& list) noexcept;

private:
    WaitQueue& list_;
    const char* what_;
};

class StreamCore {
public:
    /// A reader without a connection.
    explicit StreamCore(std::size_t limit);
    /// A connection on transport t.
    StreamCore(std::unique_ptr<Transport> t, std::size_t limit);
    StreamCore(const StreamCore&) = delete;
    StreamCore& operator=(const StreamCore&) = delete;
    ~StreamCore();

    // ---- references ----
    void retain(bool handle) noexcept {
        ++refs_;
        if (handle) ++handles_;
    }
    void release(bool handle) noexcept;

    // ---- reading ----
    std::size_t limit_;
    ReadBuffer rbuf_;
    bool eof_ = false;             // EOF received (or the connection closed on our side)
    std::exception_ptr rerror_;    // a failed receive or set_exception()
    FillAwaiter* read_waiter_ = nullptr;

    /// Raises the read error if any.
    void check_read_error() const {
        if (rerror_) std::rethrow_exception(rerror_);
    }
    /// Wakes a read waiting for data (feed_data, feed_eof, set_exception, close).
    void wake_reader() noexcept;
    /// Marks the start of a wait for data: RuntimeError if another read is waiting.
    void check_single_reader(const char* what) const;

    // ---- writing ----
    std::deque<std::string> chunks_;  // the write buffer, in order
    std::size_t front_sent_ = 0;      // bytes of chunks_.front() already sent
    std::string spare_;               // a small chunk's block, sent, kept for the next chunk
    std::size_t wsize_ = 0;           // bytes buffered (not sent)
    std::size_t high_ = 64 * 1024;
    std::size_t low_ = 16 * 1024;
    bool paused_ = false;             // above high-water; drain() waits until <= low
    bool flusher_active_ = false;
    std::size_t gathering_ = 0;       // chunks a gathered send covers now: write() appends to none
    bool flusher_cancelled_ = false;  // the flusher was withdrawn (its loop closed): do not restart it
    bool eof_requested_ = false;      // write_eof() called
    bool eof_sent_ = false;           // shutdown(SHUT_WR) done
    std::error_code werror_;          // a failed send
    std::exception_ptr wexc_;         // its exception when the transport gave one (TLS)

    /// Raises the write error: the transport's exception (an SSLError, TimeoutError "SSL
    /// shutdown timed out") if it gave one, else std::system_error(werror_, "send").
    [[noreturn]] void throw_write_error() const;
    WaitQueue drain_waiters_;
    bool sendfile_active_ = false;  // asyncio::sendfile() writes to the fd directly: write() refuses
    WaitQueue close_waiters_;

    void write(const void* data, std::size_t n);
    /// write() of a string it may keep (moved into the buffer instead of copied when large).
    void write(std::string&& data);
    void write_eof();
    void close() noexcept;
    void abort() noexcept;
    /// n bytes of the front chunk were sent.
    void consume_written(std::size_t n) noexcept;
    void set_write_error(std::error_code ec) noexcept;
    /// The buffer is empty (or failed): half-close or close as requested.
    void after_flush() noexcept;
    /// Wakes the drain() waiters (resume below low-water, error, close).
    void wake_drainers() noexcept;

    // ---- the connection ----
    std::unique_ptr<Transport> transport_;  // null: a reader fed by feed_data() (no connection)
    bool closing_ = false;   // close()/abort() called, or lost
    CreationSite site_;      // debug mode: where the connection was made ("unclosed <StreamWriter>")
    bool closed_ = false;    // the transport is closed
    bool connected() const noexcept { return transport_ != nullptr; }
    /// Closes the transport now (pending operations fail with EBADF, seen as EOF by the reader).
    void close_transport() noexcept;

    /// Starts the flusher (flusher_active_ false, something buffered): sends until the buffer is
    /// empty, the transport closed or a send failed, then after_flush(). RuntimeError without a
    /// running loop; std::bad_alloc (nothing changed but what was sent).
    void start_flusher();

    // ---- the server this connection belongs to (server.cpp) ----
    std::shared_ptr<ServerState> server_;
    StreamCore* srv_prev_ = nullptr;
    StreamCore* srv_next_ = nullptr;

    std::uint32_t refs_ = 0;
    std::uint32_t handles_ = 0;

private:
    /// RuntimeError / std::system_error when write() is not allowed now.
    void check_writable() const;
    /// Sends what the transport takes at once; returns the number of bytes sent. Throws
    /// std::system_error (and keeps the error for the next calls).
    std::size_t send_now(const char* p, std::size_t n);
    /// Whether write() skips send_now() (the transport submits sends instead: io_uring).
    bool defer_sends() const noexcept;

    // ---- the flusher (streams.cpp) ----
    Flusher flush_;
    /// Starts sends until one is pending (true) or there is nothing more to send (false).
    bool flush_more();
    /// Starts the next send (one chunk or gathered); true if it completed at once.
    bool start_flush_send();
    /// Takes a send's outcome; false: the flusher ends (error, closed, or the buffer is empty).
    bool flush_sent(std::int64_t r) noexcept;
    void end_flusher() noexcept;
    static void on_flush_complete(void* op) noexcept;
    static void on_loop_close(CloseHook* h, EventLoop& loop) noexcept;
};

/// A task awaiting one operation on a transport: started from await_suspend, withdrawn through
/// the transport when the task is cancelled (detail/waiter.hpp's protocol, as IoAwaiter's on the
/// backend: an operation that completed in the same iteration as the cancellation keeps its
/// result and the cancellation is raised at the next suspension point).
class TransportAwaiter : public Waiter, public IoOp {
public:
    explicit TransportAwaiter(Transport* t) noexcept : transport_(t) {}
    TransportAwaiter(const TransportAwaiter&) = delete;
    TransportAwaiter& operator=(const TransportAwaiter&) = delete;
    ~TransportAwaiter() {
        // A frame destroyed while suspended (its loop closed): leave nothing pointing into it.
        if (state == IoState::pending) transport_->cancel(*loop_, *this);
    }
    bool await_ready() const noexcept { return false; }

protected:
    /// Starts the op (kind, buf, len set); true if the task must stay suspended. A cancellation
    /// already pending is raised without starting (as IoAwaiter::start).
    bool start(std::coroutine_handle<> h, const char* what, Hook hook = &on_cancel);
    /// Withdraws the op through the transport; true if it was withdrawn (did nothing).
    bool withdraw() noexcept { return transport_->cancel(*loop_, *this); }
    static bool on_cancel(CancelHook* h);
    static void on_complete(void* op);

    Transport* transport_;
    EventLoop* loop_ = nullptr;
};

/// A wait for more data in a reader: a receive into the buffer (connection) or a wake-up by
/// feed_data/feed_eof/set_exception (fed reader). Errors and EOF are recorded in the core;
/// await_resume raises only CancelledError.
class FillAwaiter : public TransportAwaiter {
public:
    FillAwaiter(StreamCore& core, std::size_t want) noexcept
        : TransportAwaiter(core.transport_.get()), core_(core), want_(want) {}
    ~FillAwaiter();

    bool await_ready() const noexcept { return false; }
    template <class P>
    bool await_suspend(std::coroutine_handle<P> h, unsigned line = __builtin_LINE()) {
        detail::note_await(h, line);
        return start_fill(h);
    }
    void await_resume();

    /// Wakes the waiting task without data (the caller re-checks the buffer, EOF and errors).
    void wake() noexcept;

private:
    bool start_fill(std::coroutine_handle<> h);  // await_suspend, out of line
    static bool on_cancel_io(CancelHook* h);
    static bool on_cancel_fed(CancelHook* h);
    /// IoOp::provide: room for n bytes in the read buffer, pinned for this op.
    static char* provide_room(IoOp& op, std::size_t n) noexcept;
    /// IoOp::adopt: the backend's buffer holding n bytes becomes the read buffer (ReadBuffer::adopt).
    static bool adopt_block(IoOp& op, std::string& block, std::size_t n) noexcept;

    StreamCore& core_;
    std::size_t want_;
    std::size_t offered_ = 0;
    bool io_ = false;        // a recv was submitted
    bool prepared_ = false;  // the buffer's tail is pinned for it
};

/// Makes a connected stream pair on a transport.
std::pair<StreamReader, StreamWriter> make_streams(std::unique_ptr<Transport> t, std::size_t limit);
/// Makes a connected stream pair on a socket (a SocketTransport).
std::pair<StreamReader, StreamWriter> make_streams(Socket sock, std::size_t limit, Address peer);

}  // namespace asyncio::detail
