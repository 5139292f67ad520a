// StreamReader, StreamWriter and open_connection on a StreamCore (stream_core.hpp).
#include "asyncio/streams.hpp"

#include <sys/socket.h>
#include <sys/uio.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <new>
#include <utility>
#include <vector>

#include "asyncio/dns.hpp"
#include "asyncio/event_loop.hpp"
#include "asyncio/exceptions.hpp"
#include "asyncio/task.hpp"
#include "asyncio/ssl.hpp"
#include "stream_core.hpp"
#include "tls_transport.hpp"

namespace asyncio {

namespace detail {

// ---- ReadBuffer ----

std::pair<char*, std::size_t> ReadBuffer::prepare(std::size_t want) {
    if (want < kMinFree) want = kMinFree;
    pinned_ = true;
    if (begin_ == end_) begin_ = end_ = 0;
    const std::size_t size = end_ - begin_;
    if (grow_) {
        next_cap_ = std::min(next_cap_ * 2, kMaxAuto);
        grow_ = false;
    }
    std::size_t cap = std::max(block_.size(), next_cap_);
    if (cap < size + want) cap = std::max(cap * 2, size + want);
    if (cap != block_.size()) {
        std::string block = make_uninitialized_string(cap);
        if (size > 0) std::memcpy(block.data(), block_.data() + begin_, size);
        block_ = std::move(block);
        begin_ = 0;
        end_ = size;
    } else if (block_.size() - end_ < want) {
        std::memmove(block_.data(), block_.data() + begin_, size);
        begin_ = 0;
        end_ = size;
    }
    return {block_.data() + end_, block_.size() - end_};
}

void ReadBuffer::append(std::string_view s) {
    if (s.empty()) return;
    auto [p, n] = prepare(s.size());
    (void)n;
    std::memcpy(p, s.data(), s.size());
    end_ += s.size();
}

bool ReadBuffer::adopt(std::string& block, std::size_t n) noexcept {
    if (begin_ != end_ || pinned_ || n < kHandOverMin || n > block.size() || 2 * n < block.size()) return false;
    block_ = std::move(block);  // (an empty block of ours is freed: the next receive is a large one too)
    begin_ = 0;
    end_ = n;
    return true;
}

std::string ReadBuffer::take(std::size_t n) {
    if (begin_ == 0 && n == end_ && n >= kHandOverMin && 2 * n >= block_.size() && !pinned_) {
        // Everything, filling at least half the block: hand the block over (capacity < 2 n).
        std::string out = std::move(block_);
        out.resize(n);  // shrinking: no reallocation, no copy
        block_ = std::string();
        begin_ = end_ = 0;
        taken_ += n;
        return out;
    }
    std::string out(data(), n);
    consume(n);
    return out;
}

// ---- waiting on a list (drain, wait_closed, serve_forever) ----

void ListWait::wake_all(WaitQueue& list) noexcept {
    while (ListWaiter* w = list.pop_front()) {
        try {
            w->wake();
        } catch (...) {
            // Out of memory growing the ready queue: the waiter stays suspended until cancelled.
        }
    }
}

// ---- TransportAwaiter ----

bool TransportAwaiter::start(std::coroutine_handle<> h, const char* what, Hook hook) {
    loop_ = t_running_loop;
    // A cancellation already pending is raised without starting (see IoAwaiter::start in
    // sock_ops.hpp for why I/O differs from asyncio here).
    if (!begin_wait_unless_cancelled(h, what, hook)) return false;
    complete = &on_complete;
    bool done;
    try {
        done = transport_->start(*loop_, *this);
    } catch (...) {
        abandon_wait();
        throw;
    }
    if (!done) return true;
    ready_at_once();  // completed at once: go on without suspending
    return false;
}

bool TransportAwaiter::on_cancel(CancelHook* h) {
    auto* self = static_cast<TransportAwaiter*>(from_hook(h));
    return self->cancel_io_wait(*self->loop_, self->withdraw());
}

void TransportAwaiter::on_complete(void* op) {
    static_cast<TransportAwaiter*>(static_cast<IoOp*>(op))->wake_now();
}

// ---- FillAwaiter ----

FillAwaiter::~FillAwaiter() {
    if (state == IoState::pending) withdraw();  // before the buffer's tail is unpinned
    if (core_.read_waiter_ == this) core_.read_waiter_ = nullptr;
    if (prepared_) core_.rbuf_.unpin();
}

bool FillAwaiter::start_fill(std::coroutine_handle<> h) {
    if (!core_.connected() || core_.closed_) {
        // A wait for fed data is a wait like any other.
        loop_ = t_running_loop;
        begin_wait(h, "StreamReader", &on_cancel_fed);
        core_.read_waiter_ = this;
        return true;
    }
    kind = IoKind::recv;
    if (transport_->provides_buffers(*t_running_loop)) {
        // The backend receives into its own buffers and copies what came into the read buffer
        // (provide_room) only then: a waiting reader pins no buffer.
        // At most what a receive into the buffer would take (Python's transports read 64 KiB
        // at a time; a readline past the limit must not get much more).
        buf = nullptr;
        len = std::max<std::size_t>(want_, 64 * 1024);
        provide = &provide_room;
        adopt = &adopt_block;  // (a large receive: the backend's buffer itself, no copy)
    } else {
        const std::pair<char*, std::size_t> room = core_.rbuf_.prepare(want_);  // may throw: nothing started
        prepared_ = true;
        buf = room.first;
        len = room.second;
        offered_ = room.second;
    }
    io_ = true;
    core_.read_waiter_ = this;
    bool suspended;
    try {
        suspended = start(h, "StreamReader", &on_cancel_io);
    } catch (...) {
        core_.read_waiter_ = nullptr;
        throw;
    }
    if (!suspended) core_.read_waiter_ = nullptr;  // received (or failed, or cancelled) at once
    return suspended;
}

void FillAwaiter::await_resume() {
    if (core_.read_waiter_ == this) core_.read_waiter_ = nullptr;
    if (prepared_) {
        prepared_ = false;
        if (state == IoState::done && result > 0)
            core_.rbuf_.commit(static_cast<std::size_t>(result), offered_);
        else
            core_.rbuf_.unpin();
    }
    if (!io_) {
        end_wait();  // woken by a feed (raises if cancelled since), or cancelled
        return;
    }
    if (state == IoState::done) {
        if (result > 0) return;  // committed above
        if (result == 0 || core_.closed_) {
            core_.eof_ = true;
        } else if (std::exception_ptr e = transport_->error_for(result)) {
            core_.rerror_ = std::move(e);  // (TLS: the SSLError)
        } else {
            core_.rerror_ = std::make_exception_ptr(
                std::system_error(static_cast<int>(-result), std::generic_category(), "recv"));
        }
        return;
    }
    if (state == IoState::cancelled && wait_state() != WaitState::kCancelled) return;  // withdrawn by wake()
    throw_cancelled(task());
}

void FillAwaiter::wake() noexcept {
    if (core_.read_waiter_ == this) core_.read_waiter_ = nullptr;
    if (io_) {
        // Withdraw the receive; if it already completed, its queued completion resumes the task.
        if (state == IoState::pending && withdraw()) {
            try {
                wake_via(*loop_, &step_task, task());
            } catch (...) {
            }
        }
        return;
    }
    if (!waiting()) return;
    try {
        wake_via(*loop_, &step_task, task());  // (feed_data may come while no loop runs)
    } catch (...) {
    }
}

char* FillAwaiter::provide_room(IoOp& op, std::size_t n) noexcept {
    auto& self = static_cast<FillAwaiter&>(static_cast<TransportAwaiter&>(op));
    if (self.prepared_) self.core_.rbuf_.unpin();  // (a second offer replaces the first)
    try {
        const std::pair<char*, std::size_t> room = self.core_.rbuf_.prepare(std::max(n, self.want_));
        self.prepared_ = true;
        self.offered_ = room.second;
        return room.first;
    } catch (...) {
        self.prepared_ = false;
        return nullptr;
    }
}

bool FillAwaiter::adopt_block(IoOp& op, std::string& block, std::size_t n) noexcept {
    auto& self = static_cast<FillAwaiter&>(static_cast<TransportAwaiter&>(op));
    if (self.prepared_) return false;  // (room was offered already: the bytes go there)
    return self.core_.rbuf_.adopt(block, n);
}

bool FillAwaiter::on_cancel_io(CancelHook* h) {
    auto* self = static_cast<FillAwaiter*>(from_hook(h));
    const bool withdrawn = self->withdraw();
    if (withdrawn && self->core_.read_waiter_ == self) self->core_.read_waiter_ = nullptr;
    return self->cancel_io_wait(*self->loop_, withdrawn);
}

bool FillAwaiter::on_cancel_fed(CancelHook* h) {
    auto* self = static_cast<FillAwaiter*>(from_hook(h));
    if (self->core_.read_waiter_ == self) self->core_.read_waiter_ = nullptr;
    return self->cancel_wait(*self->loop_);
}

// ---- StreamCore ----

StreamCore::StreamCore(std::size_t limit) : limit_(limit) {}

StreamCore::StreamCore(std::unique_ptr<Transport> t, std::size_t limit) : limit_(limit), transport_(std::move(t)) {}

StreamCore::~StreamCore() {
    if (connected() && !closed_) close_transport();
}

void StreamCore::release(bool handle) noexcept {
    if (handle && --handles_ == 0 && connected() && !closing_) {
        if (site_.recorded()) [[unlikely]]  // Python 3.11+'s StreamWriter.__del__ ResourceWarning
            site_.report_unclosed("<StreamWriter>");
        ++refs_;  // alive through close()
        close();
        --refs_;
    }
    if (--refs_ == 0) delete this;
}

void StreamCore::wake_reader() noexcept {
    if (FillAwaiter* w = read_waiter_) {
        read_waiter_ = nullptr;
        w->wake();
    }
}

void StreamCore::check_single_reader(const char* what) const {
    if (read_waiter_ != nullptr)
        throw RuntimeError(std::string(what) +
                           "() called while another coroutine is already waiting for incoming data");
}

std::size_t StreamCore::send_now(const char* p, std::size_t n) {
    EventLoop* loop = t_running_loop;
    if (loop == nullptr) throw RuntimeError("StreamWriter::write() needs a running event loop");
    // One attempt that never waits: what the transport does not take goes to the buffer.
    const std::int64_t r = transport_->try_send(*loop, p, n);
    if (r < 0) {
        const std::error_code ec(static_cast<int>(-r), std::generic_category());
        set_write_error(ec);
        wexc_ = transport_->error_for(r);  // (TLS: the SSLError)
        throw_write_error();
    }
    return static_cast<std::size_t>(r);
}

namespace {
constexpr std::size_t kCoalesce = 64 * 1024;  // small writes are appended to the last chunk up to this
// A write() of at most this many bytes (copied: the caller keeps its buffer) is submitted rather
// than tried on a transport that defers sends. Above it the copy into the buffer would cost more
// than the send(2) it saves: such a write is tried first, from the caller's bytes, as on epoll.
// (A moved string is kept without a copy: submitted at any size.)
constexpr std::size_t kDeferMax = 4 * 1024;
}  // namespace

bool StreamCore::defer_sends() const noexcept {
    EventLoop* loop = t_running_loop;  // none: send_now() raises the RuntimeError
    return loop != nullptr && transport_->defers_sends(*loop);
}

void StreamCore::check_writable() const {
    if (!connected()) throw RuntimeError("StreamWriter has no connection");
    if (eof_requested_) throw RuntimeError("Cannot call write() after write_eof()");
    if (closing_) throw RuntimeError("Cannot call write() after close()");
    if (werror_) throw_write_error();
    if (sendfile_active_) throw RuntimeError("Cannot call write() while sendfile() is in progress");
}

void StreamCore::write(const void* data, std::size_t n) {
    check_writable();
    if (n == 0) return;
    const char* p = static_cast<const char*>(data);
    if (wsize_ == 0 && (n > kDeferMax || !defer_sends())) {
        const std::size_t sent = send_now(p, n);
        p += sent;
        n -= sent;
        if (n == 0) return;
    }
    // Append: into the last chunk unless it is the one the flusher is sending.
    if (!chunks_.empty() && (chunks_.size() > 1 || !flusher_active_) && chunks_.size() > gathering_ &&
        chunks_.back().size() + n <= kCoalesce) {
        chunks_.back().append(p, n);
    } else if (spare_.capacity() >= n) {
        spare_.assign(p, n);  // the block of a chunk sent earlier: no allocation
        chunks_.push_back(std::move(spare_));
        spare_.clear();
    } else {
        chunks_.emplace_back(p, n);
    }
    wsize_ += n;
    if (wsize_ > high_) paused_ = true;
    if (!flusher_active_) start_flusher();
}

void StreamCore::write(std::string&& data) {
    // Small: coalesced into the last chunk as any write (a chunk per small string would cost more).
    if (data.size() < kCoalesce) {
        write(data.data(), data.size());
        return;
    }
    check_writable();
    const std::size_t n = data.size();
    std::size_t sent = 0;
    if (wsize_ == 0 && !defer_sends()) {  // nothing buffered: chunks_ is empty, so the string becomes the front chunk
        sent = send_now(data.data(), n);
        if (sent == n) return;
    }
    chunks_.push_back(std::move(data));
    if (sent > 0) front_sent_ = sent;
    wsize_ += n - sent;
    if (wsize_ > high_) paused_ = true;
    if (!flusher_active_) start_flusher();
}

// ---- the flusher ----

void StreamCore::start_flusher() {
    EventLoop& loop = get_running_loop();
    flusher_active_ = true;
    retain(false);
    flush_.core = this;
    flush_.loop = &loop;
    flush_.CloseHook::fn = &on_loop_close;
    loop.link_close_hook(flush_);
    bool pending;
    try {
        pending = flush_more();
    } catch (...) {  // std::bad_alloc: what is buffered stays, for the next write() to retry
        gathering_ = 0;
        flusher_active_ = false;
        loop.unlink_close_hook(flush_);
        release(false);  // (the caller holds a reference of its own)
        throw;
    }
    if (!pending) end_flusher();
}

bool StreamCore::flush_more() {
    while (wsize_ > 0 && !closed_) {
        if (!start_flush_send()) return true;
        if (!flush_sent(flush_.result)) return false;
    }
    return false;
}

bool StreamCore::start_flush_send() {
    Flusher& f = flush_;
    static_cast<IoOp&>(f) = IoOp{};
    f.complete = &on_flush_complete;
    const std::string& front = chunks_.front();
    const std::size_t rest = front.size() - front_sent_;
    // One chunk queued, or sends submitted rather than tried (io_uring sockets: measured, a
    // SENDMSG of several large chunks costs ~3x the CPU of SENDs, see design.md): one send.
    if (wsize_ == rest || !transport_->gathers_sends() || transport_->defers_sends(*f.loop)) {
        f.kind = IoKind::send;
        f.buf = const_cast<char*>(front.data() + front_sent_);
        f.len = rest;
    } else {
        // One gathered send (sendmsg on a socket, writev on a pipe) of up to kMaxGather chunks,
        // from the front chunk's unsent rest on: write() appends to none of them meanwhile.
        if (!f.gather) f.gather = std::make_unique<Flusher::Gather>();
        Flusher::Gather& g = *f.gather;
        std::size_t n = 0;
        std::size_t total = 0;
        for (const std::string& c : chunks_) {
            if (n == Flusher::kMaxGather) break;
            const std::size_t skip = n == 0 ? front_sent_ : 0;
            g.iov[n].iov_base = const_cast<char*>(c.data() + skip);
            g.iov[n].iov_len = c.size() - skip;
            total += c.size() - skip;
            ++n;
        }
        g.msg = msghdr{};
        g.msg.msg_iov = g.iov;
        g.msg.msg_iovlen = n;
        f.kind = IoKind::sendmsg;
        f.buf = &g.msg;
        f.len = total;
        gathering_ = n;
    }
    return transport_->start(*f.loop, f);
}

bool StreamCore::flush_sent(std::int64_t r) noexcept {
    gathering_ = 0;
    if (closed_) return false;
    if (r < 0) {
        std::exception_ptr e = transport_->error_for(r);
        if (!e) {
            set_write_error(std::error_code(static_cast<int>(-r), std::generic_category()));
            return false;
        }
        try {
            std::rethrow_exception(e);
        } catch (const std::system_error& se) {  // the transport's own (TLS: SSLError)
            set_write_error(se.code());
            wexc_ = e;
        } catch (...) {
            // Not an OS error (TLS: TimeoutError "SSL shutdown timed out"). As asyncio's
            // connection_lost(exc): wait_closed() and the reader raise it.
            set_write_error(std::make_error_code(std::errc::timed_out));
            wexc_ = e;
            if (!rerror_) rerror_ = e;
        }
        return false;
    }
    std::size_t n = static_cast<std::size_t>(r);
    while (n > 0) {  // (a gathered send may end in any chunk)
        const std::size_t in_front = std::min(n, chunks_.front().size() - front_sent_);
        consume_written(in_front);
        n -= in_front;
    }
    return wsize_ > 0;
}

void StreamCore::end_flusher() noexcept {
    flusher_active_ = false;
    flush_.loop->unlink_close_hook(flush_);
    after_flush();
    release(false);
}

void StreamCore::on_flush_complete(void* op) noexcept {
    StreamCore& s = *static_cast<Flusher*>(static_cast<IoOp*>(op))->core;
    bool pending = false;
    if (s.flush_sent(s.flush_.result)) {
        try {
            pending = s.flush_more();
        } catch (...) {  // std::bad_alloc starting the next send: nobody to raise it to
            s.gathering_ = 0;
            s.set_write_error(std::make_error_code(std::errc::not_enough_memory));
        }
    }
    if (!pending) s.end_flusher();
}

void StreamCore::on_loop_close(CloseHook* h, EventLoop& loop) noexcept {
    Flusher& f = *static_cast<Flusher*>(h);
    StreamCore& s = *f.core;
    // Its completion, if it won the race, is never run (close() drops the ready queue): the
    // result is dropped either way, with the rest of the buffer.
    if (f.state == IoState::pending) (void)s.transport_->cancel(loop, f);
    s.gathering_ = 0;
    s.flusher_active_ = false;
    s.flusher_cancelled_ = true;
    if (s.handles_ == 0 || s.closing_) s.close_transport();  // nobody will flush it any more
    s.release(false);
}

void StreamCore::consume_written(std::size_t n) noexcept {
    front_sent_ += n;
    wsize_ -= n;
    if (front_sent_ >= chunks_.front().size()) {
        // A small block is kept for the next chunk (a connection that writes a message per
        // iteration would otherwise allocate and free one each time); a large one is freed.
        if (chunks_.front().capacity() <= kDeferMax && chunks_.front().capacity() > spare_.capacity())
            spare_ = std::move(chunks_.front());
        chunks_.pop_front();
        front_sent_ = 0;
    }
    if (paused_ && wsize_ <= low_) {
        paused_ = false;
        wake_drainers();
    }
}

void StreamCore::throw_write_error() const {
    if (wexc_) std::rethrow_exception(wexc_);
    throw std::system_error(werror_, "send");
}

void StreamCore::set_write_error(std::error_code ec) noexcept {
    werror_ = ec;
    chunks_.clear();
    front_sent_ = 0;
    wsize_ = 0;
    paused_ = false;
    wake_drainers();
}

void StreamCore::after_flush() noexcept {
    if (closed_) return;
    if (werror_ || closing_ || handles_ == 0) {
        close_transport();
        return;
    }
    if (eof_requested_ && !eof_sent_) {
        eof_sent_ = true;
        transport_->write_eof();
    }
}

void StreamCore::wake_drainers() noexcept { ListWait::wake_all(drain_waiters_); }

void StreamCore::write_eof() {
    if (!connected()) throw RuntimeError("StreamWriter has no connection");
    if (eof_requested_ || closing_) return;
    eof_requested_ = true;
    if (wsize_ == 0 && !flusher_active_) {
        eof_sent_ = true;
        transport_->write_eof();
    }
}

void StreamCore::close() noexcept {
    if (closing_ || !connected()) return;
    closing_ = true;
    eof_ = true;  // nothing more is received
    wake_reader();
    if (wsize_ == 0 || werror_) {
        close_transport();
        return;
    }
    transport_->begin_close();
    if (!flusher_active_) {
        // The flusher was cancelled (loop shutdown), or cannot start: drop the rest.
        if (flusher_cancelled_ || t_running_loop == nullptr) {
            close_transport();
        } else {
            try {
                start_flusher();
            } catch (...) {
                close_transport();
            }
        }
    }
    // else: the flusher closes the transport once the buffer is sent.
}

void StreamCore::abort() noexcept {
    if (!connected()) return;
    closing_ = true;
    close_transport();
}

void StreamCore::close_transport() noexcept {
    if (closed_) return;
    closed_ = true;
    closing_ = true;
    eof_ = true;
    wake_reader();
    transport_->close();  // first: a send still pending on the buffer fails with EBADF
    chunks_.clear();
    front_sent_ = 0;
    wsize_ = 0;
    paused_ = false;
    wake_drainers();
    ListWait::wake_all(close_waiters_);
    if (server_) server_connection_closed(*this);
}

void stream_retain(StreamCore* c, bool handle) noexcept { c->retain(handle); }
void stream_release(StreamCore* c, bool handle) noexcept { c->release(handle); }

std::pair<StreamReader, StreamWriter> make_streams(std::unique_ptr<Transport> t, std::size_t limit) {
    auto* core = new StreamCore(std::move(t), limit);
    StreamReader r(core, FromCore{});
    StreamWriter w(core, FromCore{});
    return {std::move(r), std::move(w)};
}

std::pair<StreamReader, StreamWriter> make_streams(Socket sock, std::size_t limit, Address peer) {
    return make_streams(std::make_unique<SocketTransport>(std::move(sock), peer), limit);
}

namespace {

StreamCore& need(const StreamRef<true>& ref, const char* what) {
    if (!ref) throw RuntimeError(std::string(what) + " on an empty stream handle");
    return *ref;
}

// ---- the reading coroutines ----

Coroutine<std::string> read_impl(StreamRef<false> ref, std::ptrdiff_t n) {
    StreamCore& s = *ref;
    if (n == 0) co_return std::string();
    if (n < 0) {
        while (!s.eof_) {
            s.check_read_error();
            s.check_single_reader("read");
            co_await FillAwaiter(s, s.rbuf_.size());
        }
        co_return s.rbuf_.take(s.rbuf_.size());
    }
    while (s.rbuf_.empty() && !s.eof_) {
        s.check_read_error();
        s.check_single_reader("read");
        co_await FillAwaiter(s, 0);
    }
    co_return s.rbuf_.take(std::min(static_cast<std::size_t>(n), s.rbuf_.size()));
}

Coroutine<std::string> readexactly_impl(StreamRef<false> ref, std::size_t n) {
    StreamCore& s = *ref;
    while (s.rbuf_.size() < n) {
        if (s.eof_) throw IncompleteReadError(s.rbuf_.take(s.rbuf_.size()), n);
        s.check_read_error();
        s.check_single_reader("readexactly");
        co_await FillAwaiter(s, n - s.rbuf_.size());
    }
    co_return s.rbuf_.take(n);
}

/// readuntil (line = false) and readline (line = true: the rest at EOF instead of
/// IncompleteReadError).
Coroutine<std::string> readuntil_impl(StreamRef<false> ref, std::string sep, bool line) {
    StreamCore& s = *ref;
    const std::size_t seplen = sep.size();
    std::size_t offset = 0;  // where the separator may still start
    std::size_t isep = 0;
    for (;;) {
        const std::size_t buflen = s.rbuf_.size();
        if (buflen >= offset + seplen) {
            isep = s.rbuf_.view().find(sep, offset);
            if (isep != std::string_view::npos) break;
            offset = buflen + 1 - seplen;
            if (offset > s.limit_)
                throw LimitOverrunError("Separator is not found, and chunk exceed the limit", offset);
        }
        if (s.eof_) {
            std::string rest = s.rbuf_.take(buflen);
            if (line) co_return rest;
            throw IncompleteReadError(std::move(rest), std::nullopt);
        }
        s.check_read_error();
        s.check_single_reader(line ? "readline" : "readuntil");
        const std::uint64_t taken = s.rbuf_.taken();
        co_await FillAwaiter(s, 0);
        if (s.rbuf_.taken() != taken) offset = 0;  // another task took bytes meanwhile: search anew
    }
    if (isep > s.limit_) throw LimitOverrunError("Separator is found, but chunk is longer than limit", isep);
    co_return s.rbuf_.take(isep + seplen);
}

Coroutine<std::optional<std::string>> anext_impl(StreamRef<false> ref) {
    std::string line = co_await readuntil_impl(ref, "\n", true);
    if (line.empty()) co_return std::nullopt;
    co_return std::optional<std::string>(std::move(line));
}

// ---- the writing coroutines ----

Coroutine<> wait_closed_impl(StreamRef<false> ref) {
    StreamCore& s = *ref;
    while (!s.closed_) co_await ListWait(s.close_waiters_, "StreamWriter::wait_closed()");
    if (s.werror_) s.throw_write_error();
    s.check_read_error();
}

}  // namespace

}  // namespace detail

// ---- StreamReader ----

StreamReader::StreamReader() : StreamReader(kDefaultStreamLimit) {}

StreamReader::StreamReader(std::size_t limit) {
    if (limit == 0) throw ValueError("Limit cannot be <= 0");
    core_ = detail::StreamRef<true>(new detail::StreamCore(limit));
}

Coroutine<std::string> StreamReader::read(std::ptrdiff_t n) {
    return detail::read_impl(detail::StreamRef<false>(&detail::need(core_, "read()")), n);
}

Coroutine<std::string> StreamReader::readexactly(std::size_t n) {
    return detail::readexactly_impl(detail::StreamRef<false>(&detail::need(core_, "readexactly()")), n);
}

Coroutine<std::string> StreamReader::readline() {
    return detail::readuntil_impl(detail::StreamRef<false>(&detail::need(core_, "readline()")), "\n", true);
}

Coroutine<std::string> StreamReader::readuntil(std::string separator) {
    detail::StreamCore& c = detail::need(core_, "readuntil()");
    if (separator.empty()) throw ValueError("Separator should be at least one-byte string");
    return detail::readuntil_impl(detail::StreamRef<false>(&c), std::move(separator), false);
}

Coroutine<std::optional<std::string>> StreamReader::anext() {
    return detail::anext_impl(detail::StreamRef<false>(&detail::need(core_, "anext()")));
}

bool StreamReader::at_eof() const noexcept { return core_ && core_->eof_ && core_->rbuf_.empty(); }
std::size_t StreamReader::limit() const noexcept { return core_ ? core_->limit_ : 0; }
std::size_t StreamReader::buffered() const noexcept { return core_ ? core_->rbuf_.size() : 0; }
std::exception_ptr StreamReader::exception() const noexcept { return core_ ? core_->rerror_ : nullptr; }

void StreamReader::feed_data(std::string_view data) {
    detail::StreamCore& c = detail::need(core_, "feed_data()");
    if (c.connected()) throw RuntimeError("feed_data() on the reader of a connection");
    if (c.eof_) throw RuntimeError("feed_data after feed_eof");
    if (data.empty()) return;
    c.rbuf_.append(data);
    c.wake_reader();
}

void StreamReader::feed_eof() {
    detail::StreamCore& c = detail::need(core_, "feed_eof()");
    c.eof_ = true;
    c.wake_reader();
}

void StreamReader::set_exception(std::exception_ptr e) {
    detail::StreamCore& c = detail::need(core_, "set_exception()");
    c.rerror_ = std::move(e);
    c.wake_reader();
}

// ---- StreamWriter ----

void StreamWriter::write(ConstBuffer data) { detail::need(core_, "write()").write(data.data, data.size); }
void StreamWriter::write_owned(std::string&& data) { detail::need(core_, "write()").write(std::move(data)); }

StreamWriter::DrainAwaiter StreamWriter::drain() { return DrainAwaiter(&detail::need(core_, "drain()")); }

namespace detail {

bool drain_ready(StreamCore& s) {
    s.check_read_error();  // as asyncio: the reader's exception first
    if (s.werror_) s.throw_write_error();
    if (s.closed_) throw std::system_error(ECONNRESET, std::generic_category(), "Connection lost");
    return !s.paused_;
}

void drain_wait(StreamCore& s, ListWaiter& w, std::coroutine_handle<> h) {
    w.wait_in(s.drain_waiters_, h, "StreamWriter::drain()");
}

void drain_woken(StreamCore& s) {
    // Woken by resume_writing (the buffer went down to the low-water mark), a failed send, or
    // the connection closing; one wait, as asyncio's (not again if the buffer grew meanwhile).
    // Closed without an error: return (as asyncio's drain waiters on connection_lost(None)).
    if (s.werror_) s.throw_write_error();
}

}  // namespace detail

bool StreamWriter::can_write_eof() const noexcept { return core_ && core_->connected() && core_->transport_->can_write_eof(); }
void StreamWriter::write_eof() { detail::need(core_, "write_eof()").write_eof(); }
void StreamWriter::close() {
    if (core_) core_->close();
}
void StreamWriter::abort() {
    if (core_) core_->abort();
}
bool StreamWriter::is_closing() const noexcept { return !core_ || core_->closing_; }

Coroutine<> StreamWriter::wait_closed() {
    return detail::wait_closed_impl(detail::StreamRef<false>(&detail::need(core_, "wait_closed()")));
}

std::any StreamWriter::get_extra_info(std::string_view name, std::any default_value) const {
    if (!core_ || !core_->connected()) return default_value;
    return core_->transport_->get_extra_info(name, std::move(default_value));
}

ssl::SSLObject StreamWriter::ssl_object() const {
    std::any obj = get_extra_info("ssl_object");
    if (const auto* o = std::any_cast<ssl::SSLObject>(&obj)) return *o;
    return {};
}

std::optional<ssl::Certificate> StreamWriter::peercert() const { return ssl_object().getpeercert(); }

std::optional<ssl::Cipher> StreamWriter::cipher() const { return ssl_object().cipher(); }

std::size_t StreamWriter::get_write_buffer_size() const noexcept {
    if (!core_) return 0;
    return core_->wsize_ + (core_->connected() && !core_->closed_ ? core_->transport_->write_buffer_size() : 0);
}

std::pair<std::size_t, std::size_t> StreamWriter::get_write_buffer_limits() const noexcept {
    if (!core_) return {0, 0};
    return {core_->low_, core_->high_};
}

void StreamWriter::set_write_buffer_limits(std::optional<std::size_t> high, std::optional<std::size_t> low) {
    detail::StreamCore& c = detail::need(core_, "set_write_buffer_limits()");
    std::size_t h;
    if (high)
        h = *high;
    else
        h = low ? 4 * *low : 64 * 1024;
    const std::size_t l = low ? *low : h / 4;
    if (h < l) throw ValueError("high (" + std::to_string(h) + ") must be >= low (" + std::to_string(l) + ")");
    c.high_ = h;
    c.low_ = l;
    // As asyncio's _maybe_pause_protocol / _maybe_resume_protocol.
    if (c.wsize_ > c.high_) {
        c.paused_ = true;
    } else if (c.paused_ && c.wsize_ <= c.low_) {
        c.paused_ = false;
        c.wake_drainers();
    }
}

// ---- start_tls ----

namespace detail {

Coroutine<> wait_flushed(StreamRef<false> ref, const char* what) {
    StreamCore& s = *ref;
    // The drain waiters are woken at low-water: 0 for this wait.
    while ((s.wsize_ > 0 || s.flusher_active_) && !s.closed_ && !s.werror_) {
        const std::size_t low = s.low_;
        s.low_ = 0;
        s.paused_ = true;
        try {
            co_await ListWait(s.drain_waiters_, what);
        } catch (...) {
            s.low_ = low;
            s.paused_ = s.wsize_ > s.high_;
            throw;
        }
        s.low_ = low;
        s.paused_ = s.wsize_ > s.high_;
    }
}

namespace {

Coroutine<> start_tls_impl(StreamRef<false> ref, ssl::Context ctx, std::string server_hostname, bool server,
                           std::chrono::duration<double> timeout, std::chrono::duration<double> shutdown_timeout) {
    StreamCore& s = *ref;
    // Everything written before goes out in plaintext first.
    co_await wait_flushed(ref, "StreamWriter::start_tls()");
    if (s.werror_) s.throw_write_error();
    if (s.closing_) throw RuntimeError("start_tls() after close()");
    if (s.read_waiter_ != nullptr) throw RuntimeError("start_tls() while a read is waiting for data");
    auto tls = std::make_unique<TlsTransport>(std::move(s.transport_), ctx, server, server_hostname, shutdown_timeout);
    TlsTransport& t = *tls;
    s.transport_ = std::move(tls);
    try {
        co_await tls_handshake(t, timeout);
    } catch (...) {
        if (!s.closed_) s.close_transport();  // as asyncio: a failed upgrade closes the connection
        throw;
    }
}

}  // namespace
}  // namespace detail

Coroutine<> StreamWriter::start_tls(const ssl::Context& sslcontext, const char* server_hostname,
                                    std::chrono::duration<double> ssl_handshake_timeout,
                                    std::chrono::duration<double> ssl_shutdown_timeout) {
    detail::StreamCore& c = detail::need(core_, "start_tls()");
    detail::check_tls_timeouts(ssl_handshake_timeout, ssl_shutdown_timeout);
    if (!c.connected()) throw RuntimeError("StreamWriter has no connection");
    if (c.closing_) throw RuntimeError("start_tls() after close()");
    const bool server = c.server_ != nullptr;
    if (server != (sslcontext.protocol() == ssl::Protocol::TLS_SERVER))
        throw ValueError(server ? "Cannot create a server socket with a PROTOCOL_TLS_CLIENT context"
                                : "Cannot create a client socket with a PROTOCOL_TLS_SERVER context");
    std::string hostname = server_hostname != nullptr ? server_hostname : "";
    if (!server && sslcontext.check_hostname() && hostname.empty())
        throw ValueError("check_hostname requires server_hostname");
    return detail::start_tls_impl(detail::StreamRef<false>(&c), sslcontext, std::move(hostname), server,
                                  ssl_handshake_timeout, ssl_shutdown_timeout);
}

// ---- open_connection ----

namespace {

[[noreturn]] void raise_connect_errors(const std::vector<std::system_error>& errors) {
    if (errors.size() == 1) throw errors.front();
    bool same = true;
    for (const auto& e : errors) same = same && std::strcmp(e.what(), errors.front().what()) == 0;
    if (same) throw errors.front();
    std::string msg = "Multiple exceptions: ";
    for (std::size_t i = 0; i < errors.size(); ++i) {
        if (i > 0) msg += ", ";
        msg += errors[i].what();
    }
    throw std::system_error(errors.front().code(), msg);
}

}  // namespace

namespace {

/// Connects to host:port (each address in turn); the socket and the address it connected to.
Coroutine<std::pair<Socket, Address>> connect_to(std::string host, std::uint16_t port) {
    const std::vector<AddrInfo> infos = co_await getaddrinfo(host, port, AF_UNSPEC, SOCK_STREAM);
    if (infos.empty())
        throw std::system_error(std::make_error_code(std::errc::address_not_available),
                                "getaddrinfo() returned empty list");
    std::vector<std::system_error> errors;
    for (const AddrInfo& ai : infos) {
        try {
            Socket sock(ai.family, ai.type, ai.protocol);
            co_await sock_connect(sock, ai.address);
            co_return std::pair<Socket, Address>(std::move(sock), ai.address);
        } catch (const std::system_error& e) {
            errors.emplace_back(e.code(), "connect to " + ai.address.to_string());
        }
    }
    raise_connect_errors(errors);
}

/// The client side of TLS on a connected socket: the handshake, then the streams.
Coroutine<std::pair<StreamReader, StreamWriter>> tls_client(Socket sock, Address peer, std::size_t limit,
                                                            ssl::Context ctx, std::string server_hostname,
                                                            std::chrono::duration<double> timeout,
                                                            std::chrono::duration<double> shutdown_timeout) {
    auto tls = std::make_unique<detail::TlsTransport>(
        std::make_unique<detail::SocketTransport>(std::move(sock), peer), ctx, false, server_hostname,
        shutdown_timeout);
    co_await detail::tls_handshake(*tls, timeout);
    co_return detail::make_streams(std::move(tls), limit);
}

Coroutine<std::pair<StreamReader, StreamWriter>> open_tls_connection(std::string host, std::uint16_t port,
                                                                     std::size_t limit, ssl::Context ctx,
                                                                     std::string server_hostname,
                                                                     std::chrono::duration<double> timeout,
                                                                     std::chrono::duration<double> shutdown_timeout) {
    std::pair<Socket, Address> conn = co_await connect_to(std::move(host), port);
    co_return co_await tls_client(std::move(conn.first), conn.second, limit, std::move(ctx),
                                  std::move(server_hostname), timeout, shutdown_timeout);
}

Coroutine<std::pair<StreamReader, StreamWriter>> open_tls_unix_connection(std::string path, std::size_t limit,
                                                                          ssl::Context ctx,
                                                                          std::string server_hostname,
                                                                          std::chrono::duration<double> timeout,
                                                                          std::chrono::duration<double> shutdown_timeout) {
    const Address address = Address::unix_path(path);
    Socket sock(AF_UNIX, SOCK_STREAM);
    co_await sock_connect(sock, address);
    co_return co_await tls_client(std::move(sock), address, limit, std::move(ctx), std::move(server_hostname),
                                  timeout, shutdown_timeout);
}

}  // namespace

Coroutine<std::pair<StreamReader, StreamWriter>> open_connection(std::string host, std::uint16_t port,
                                                                 ConnectionOptions options) {
    if (options.ssl == nullptr) {
        if (options.server_hostname != nullptr) throw ValueError("server_hostname is only meaningful with ssl");
        return open_connection(std::move(host), port, options.limit);
    }
    if (options.limit == 0) throw ValueError("Limit cannot be <= 0");
    detail::check_tls_timeouts(options.ssl_handshake_timeout, options.ssl_shutdown_timeout);
    std::string server_hostname = options.server_hostname != nullptr ? std::string(options.server_hostname) : host;
    if (options.ssl->check_hostname() && server_hostname.empty())
        throw ValueError("check_hostname requires server_hostname");
    if (options.ssl->protocol() != ssl::Protocol::TLS_CLIENT)
        throw ValueError("Cannot create a client socket with a PROTOCOL_TLS_SERVER context");
    return open_tls_connection(std::move(host), port, options.limit, *options.ssl, std::move(server_hostname),
                               options.ssl_handshake_timeout, options.ssl_shutdown_timeout);
}

Coroutine<std::pair<StreamReader, StreamWriter>> open_connection(std::string host, std::uint16_t port,
                                                                 std::size_t limit) {
    if (limit == 0) throw ValueError("Limit cannot be <= 0");
    std::pair<Socket, Address> conn = co_await connect_to(std::move(host), port);
    co_return detail::make_streams(std::move(conn.first), limit, conn.second);
}

Coroutine<std::pair<StreamReader, StreamWriter>> open_unix_connection(std::string path, ConnectionOptions options) {
    if (options.ssl == nullptr) {
        if (options.server_hostname != nullptr) throw ValueError("server_hostname is only meaningful with ssl");
        return open_unix_connection(std::move(path), options.limit);
    }
    if (options.limit == 0) throw ValueError("Limit cannot be <= 0");
    detail::check_tls_timeouts(options.ssl_handshake_timeout, options.ssl_shutdown_timeout);
    if (options.server_hostname == nullptr) throw ValueError("you have to pass server_hostname when using ssl");
    std::string server_hostname = options.server_hostname;
    if (options.ssl->check_hostname() && server_hostname.empty())
        throw ValueError("check_hostname requires server_hostname");
    if (options.ssl->protocol() != ssl::Protocol::TLS_CLIENT)
        throw ValueError("Cannot create a client socket with a PROTOCOL_TLS_SERVER context");
    return open_tls_unix_connection(std::move(path), options.limit, *options.ssl, std::move(server_hostname),
                                    options.ssl_handshake_timeout, options.ssl_shutdown_timeout);
}

Coroutine<std::pair<StreamReader, StreamWriter>> open_unix_connection(std::string path, std::size_t limit) {
    if (limit == 0) throw ValueError("Limit cannot be <= 0");
    const Address address = Address::unix_path(path);
    Socket sock(AF_UNIX, SOCK_STREAM);
    co_await sock_connect(sock, address);
    co_return detail::make_streams(std::move(sock), limit, address);
}

std::pair<StreamReader, StreamWriter> open_connection(Socket sock, std::size_t limit) {
    if (!sock) throw ValueError("open_connection() of a closed socket");
    if (limit == 0) throw ValueError("Limit cannot be <= 0");
    Address peer;
    try {
        peer = sock.getpeername();
    } catch (const std::system_error&) {
        // not connected (yet): no peername
    }
    return detail::make_streams(std::move(sock), limit, peer);
}

}  // namespace asyncio
