// AsyncFile and asyncio::os (files.hpp): each system call runs on the loop's default executor,
// awaited with BlockingCall, whose cancellation lets the call finish and keeps its effect.
#include "asyncio/files.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <system_error>
#include <type_traits>
#include <utility>

#include "asyncio/detail/waiter.hpp"
#include "asyncio/event_loop.hpp"
#include "asyncio/executor.hpp"
#include "asyncio/lock.hpp"
#include "backend/backend.hpp"
#include "sigpipe.hpp"
#include "stream_core.hpp"

namespace asyncio {

namespace detail {

namespace {

constexpr std::size_t kBlock = 64 * 1024;  // the least a read fetches; writes buffered up to this

/// Awaits f() run on the running loop's default executor. A cancellation before the call started
/// raises at once and nothing runs; once it runs it cannot be stopped: the task stays suspended
/// until it returns, gets its result, and the cancellation is raised at its next suspension point
/// (the rule for I/O operations that completed first, Waiter::cancel_io_wait). The result type
/// owns whatever the call made (an fd), so a result dropped because the loop closed leaks nothing.
/// Always named before it is awaited (`auto call = blocking(...); co_await call;`): GCC 12
/// bitwise-copies a temporary in a co_await expression whose lambda captures a std::string or a
/// shared_ptr (a double free; docs/design.md).
template <class F>
class [[nodiscard]] BlockingCall : public Waiter {
public:
    using T = std::invoke_result_t<F&>;
    BlockingCall(F f, const char* what) : f_(std::move(f)), what_(what) {}
    BlockingCall(const BlockingCall&) = delete;
    BlockingCall& operator=(const BlockingCall&) = delete;
    ~BlockingCall() {
        if (st_ && st_->waiter == this) st_->waiter = nullptr;  // the frame is destroyed while it waits
    }
    bool await_ready() const noexcept { return false; }
    template <class P>
    bool await_suspend(std::coroutine_handle<P> h, unsigned line = __builtin_LINE()) {
        detail::note_await(h, line);
        EventLoop& loop = get_running_loop();
        if (!begin_wait_unless_cancelled(h, what_, &on_cancel)) return false;
        try {
            st_ = std::make_shared<ExecState<T>>();
            submit_job<T>(loop.default_executor(), loop.link(), st_, std::move(f_));
        } catch (...) {
            st_.reset();
            abandon_wait();
            throw;
        }
        st_->waiter = this;
        return true;
    }
    T await_resume() {
        if (wait_state() == WaitState::kCancelled) throw_cancelled(task());  // never started
        if (st_->error) std::rethrow_exception(st_->error);
        return std::move(*st_->value);
    }

private:
    static bool on_cancel(CancelHook* h) {
        auto* self = static_cast<BlockingCall*>(from_hook(h));
        return self->cancel_io_wait(*self->task()->loop_, false);  // it runs on: keep waiting
    }

    F f_;
    const char* what_;
    std::shared_ptr<ExecState<T>> st_;
};

template <class F>
BlockingCall<F> blocking(F f, const char* what) {
    return BlockingCall<F>(std::move(f), what);
}

/// True when the running loop's backend performs file operations in the kernel (io_uring): then
/// each system call below is a FileCall instead of a BlockingCall.
bool native_files() { return get_running_loop().backend().native_files(); }

/// Awaits one FileOp performed by the kernel (backend/file_op.hpp). The same promise as
/// BlockingCall: a cancellation before the kernel started it raises at once and it did nothing;
/// once it runs, it finishes, its result is delivered and the cancellation comes at the task's
/// next suspension point. Its buffers (in the awaiting frame) stay valid until the kernel is
/// done: a frame destroyed while it waits withdraws it first (cancel_file waits for the CQE).
class [[nodiscard]] FileCall : public Waiter, public FileOp {
public:
    FileCall(FileOpKind k, const char* what) noexcept : what_(what) { kind = k; }
    FileCall(const FileCall&) = delete;
    FileCall& operator=(const FileCall&) = delete;
    ~FileCall() {
        if (state == IoState::pending) loop_->backend().cancel_file(*this);
    }
    bool await_ready() const noexcept { return false; }
    template <class P>
    bool await_suspend(std::coroutine_handle<P> h, unsigned line = __builtin_LINE()) {
        detail::note_await(h, line);
        loop_ = &get_running_loop();
        if (!begin_wait_unless_cancelled(h, what_, &on_cancel)) return false;
        complete = &resume;
        try {
            loop_->backend().submit_file(*this);
        } catch (...) {
            abandon_wait();
            throw;
        }
        return true;
    }
    /// The result: >= 0, or -errno.
    std::int64_t await_resume() {
        if (state != IoState::done) throw_cancelled(task());
        return result;
    }

private:
    static void resume(void* op) { static_cast<FileCall*>(static_cast<FileOp*>(op))->wake_now(); }
    static bool on_cancel(CancelHook* h) {
        auto* self = static_cast<FileCall*>(from_hook(h));
        return self->cancel_io_wait(*self->loop_, self->loop_->backend().cancel_file(*self));
    }

    const char* what_;
    EventLoop* loop_ = nullptr;
};

[[noreturn]] void throw_os_error(int err, const std::string& what) {
    throw std::system_error(err, std::generic_category(), what);
}

std::string quoted(const std::string& path) { return "'" + path + "'"; }

/// An fd a result carries from a thread: closed unless taken.
struct OwnedFd {
    int fd = -1;
    int err = 0;
    std::uint64_t end = 0;  // the file's size (the position for "a" mode)
    OwnedFd() = default;
    OwnedFd(OwnedFd&& o) noexcept : fd(std::exchange(o.fd, -1)), err(o.err), end(o.end) {}
    OwnedFd& operator=(OwnedFd&&) = delete;
    ~OwnedFd() {
        if (fd >= 0) ::close(fd);
    }
};

// The results that cross co_await are not aggregates: GCC 12 copies an aggregate with a
// std::string member bitwise there (a freed buffer is then read; see docs/design.md).
struct ReadResult {
    ReadResult() = default;
    std::string data;
    int err = 0;
    /// Native calls only: what stopped the reads after `data` arrived (a cancellation): the
    /// caller keeps the bytes, then raises it.
    std::exception_ptr interrupted;
};

/// Reads into buf[0, len) at offset until at least `least` bytes are in, the file ends, or an
/// error (err): returns the number of bytes read.
std::size_t pread_full(int fd, char* buf, std::size_t len, std::uint64_t offset, int& err, std::size_t least) {
    std::size_t got = 0;
    while (got < least) {
        const ssize_t k = ::pread(fd, buf + got, len - got, static_cast<off_t>(offset + got));
        if (k < 0) {
            if (errno == EINTR) continue;
            err = errno;
            break;
        }
        if (k == 0) break;
        got += static_cast<std::size_t>(k);
    }
    return got;
}

/// Up to n bytes at offset, at least `least` of them unless the file ends or an error (err, with
/// what was read before it) comes first.
ReadResult pread_some(int fd, std::size_t n, std::uint64_t offset, std::size_t least) {
    ReadResult r;
    r.data = make_uninitialized_string(n);  // (a read-ahead block: no zero-filling it first)
    r.data.resize(pread_full(fd, r.data.data(), n, offset, r.err, least));
    return r;
}

/// Everything from offset to the end of the file (sized by fstat, grown if the file grows).
ReadResult pread_all(int fd, std::uint64_t offset) {
    struct ::stat st {};
    std::size_t guess = kBlock;
    if (::fstat(fd, &st) == 0 && static_cast<std::uint64_t>(st.st_size) > offset)
        guess = static_cast<std::size_t>(st.st_size - offset) + 1;  // +1: see the end in one pass
    ReadResult r;
    std::size_t got = 0;
    for (;;) {
        r.data.resize(r.data.empty() ? guess : r.data.size() * 2);
        const std::size_t want = r.data.size() - got;
        const std::size_t k = pread_full(fd, r.data.data() + got, want, offset + got, r.err, want);
        got += k;
        if (k < want || r.err != 0) break;  // the end of the file, or an error
    }
    r.data.resize(got);
    return r;
}

struct WriteResult {
    std::size_t written = 0;
    int err = 0;
    std::uint64_t end = 0;  // append mode: the offset after the write
    /// Native calls only: what stopped the writes after `written` bytes (a cancellation): the
    /// caller accounts for them, then raises it.
    std::exception_ptr interrupted;
};

/// Writes all of data at offset (append: at the end, with write(2)); stops at the first error.
WriteResult write_all(int fd, const std::string& data, std::uint64_t offset, bool append) {
    WriteResult r;
    while (r.written < data.size()) {
        const ssize_t k = append ? ::write(fd, data.data() + r.written, data.size() - r.written)
                                 : ::pwrite(fd, data.data() + r.written, data.size() - r.written,
                                            static_cast<off_t>(offset + r.written));
        if (k < 0) {
            if (errno == EINTR) continue;
            r.err = errno;
            break;
        }
        r.written += static_cast<std::size_t>(k);
    }
    if (append) {
        const off_t end = ::lseek(fd, 0, SEEK_CUR);
        r.end = end < 0 ? 0 : static_cast<std::uint64_t>(end);
    }
    return r;
}

/// Up to n bytes at offset (all: everything from offset to the end of the file), at least
/// `least` of them unless the file ends or an error (err, with what was read before it) comes
/// first: a read that asks for a read-ahead block but needs only a few bytes makes one request,
/// not a second one to find the end of a small file. In the kernel (io_uring) or on the executor.
Coroutine<ReadResult> read_at(int fd, std::size_t n, std::uint64_t offset, bool all, const char* what,
                              std::size_t least) {
    if (!native_files()) {
        if (all) {
            auto call = blocking([fd, offset] { return pread_all(fd, offset); }, what);
            co_return co_await call;
        }
        auto call = blocking([fd, n, offset, least] { return pread_some(fd, n, offset, least); }, what);
        co_return co_await call;
    }
    if (all) {
        struct ::statx stx {};
        FileCall size(FileOpKind::statx, what);
        size.fd = fd;
        size.path = "";
        size.flags = AT_EMPTY_PATH;
        size.buf = &stx;
        n = kBlock;
        if (co_await size == 0 && stx.stx_size > offset)
            n = static_cast<std::size_t>(stx.stx_size - offset) + 1;  // +1: see the end in one pass
    }
    ReadResult r;
    r.data = make_uninitialized_string(n);
    std::size_t got = 0;
    try {
        for (bool more = true; more;) {
            while (got < (all ? r.data.size() : least)) {
                FileCall op(FileOpKind::pread, what);
                op.fd = fd;
                op.buf = r.data.data() + got;
                op.len = r.data.size() - got;
                op.offset = offset + got;
                const std::int64_t k = co_await op;
                if (k == -EINTR || k == -EAGAIN) continue;
                if (k <= 0) {
                    r.err = static_cast<int>(-k);
                    more = false;
                    break;
                }
                got += static_cast<std::size_t>(k);
            }
            if (!all) break;
            if (more) r.data.resize(r.data.size() * 2);
        }
    } catch (...) {
        r.interrupted = std::current_exception();
    }
    r.data.resize(got);
    co_return r;
}

/// Writes all of *data at offset (append: at the end); stops at the first error. In the kernel
/// (io_uring) or on the executor.
Coroutine<WriteResult> write_at(int fd, std::shared_ptr<std::string> data, std::uint64_t offset, bool append,
                                const char* what) {
    if (!native_files()) {
        auto call = blocking([fd, data, offset, append] { return write_all(fd, *data, offset, append); }, what);
        co_return co_await call;
    }
    WriteResult r;
    try {
        while (r.written < data->size()) {
            FileCall op(FileOpKind::pwrite, what);
            op.fd = fd;
            op.buf = data->data() + r.written;
            op.len = data->size() - r.written;
            op.offset = append ? ~std::uint64_t{0} : offset + r.written;  // ~0: the file position
            const std::int64_t k = co_await op;
            if (k == -EINTR || k == -EAGAIN) continue;
            if (k < 0) {
                r.err = static_cast<int>(-k);
                break;
            }
            r.written += static_cast<std::size_t>(k);
        }
    } catch (...) {
        r.interrupted = std::current_exception();
    }
    if (append) {
        const off_t end = ::lseek(fd, 0, SEEK_CUR);  // no I/O: the file position
        r.end = end < 0 ? 0 : static_cast<std::uint64_t>(end);
    }
    co_return r;
}

}  // namespace

/// An open file's state, shared by the AsyncFile and the operations running on it.
struct FileState {
    int fd = -1;
    std::string path;
    std::string mode;
    bool readable = false;
    bool writable = false;
    bool append = false;
    // Reading: the file offset just past rbuf; the position is off - unread(). Writing: the
    // offset where wbuf starts; the position is off + wbuf.size(). At most one is non-empty.
    std::uint64_t off = 0;
    std::uint64_t size_at_open = 0;  // sizes read-ahead: a 4 KiB file needs no 64 KiB buffer
    std::string rbuf;
    std::size_t rstart = 0;
    std::string wbuf;
    Lock lock;  // one operation at a time, in call order

    FileState() = default;
    FileState(const FileState&) = delete;
    FileState& operator=(const FileState&) = delete;
    ~FileState() {
        if (fd < 0) return;
        // Never closed: write out what is buffered (blocking, as Python's file finalizer) so that
        // no written byte is lost, then close.
        if (!wbuf.empty()) (void)write_all(fd, wbuf, off, append);
        ::close(fd);
    }

    std::size_t unread() const noexcept { return rbuf.size() - rstart; }
    std::uint64_t position() const noexcept { return wbuf.empty() ? off - unread() : off + wbuf.size(); }
    void check_open() const {
        if (fd < 0) throw ValueError("I/O operation on closed file.");
    }
    void check_readable() const {
        check_open();
        if (!readable) throw UnsupportedOperation("not readable");
    }
    void check_writable() const {
        check_open();
        if (!writable) throw UnsupportedOperation("not writable");
    }
    /// The read buffer is dropped: the file offset goes back to the position.
    void drop_read_buffer() noexcept {
        off -= unread();
        rbuf.clear();
        rstart = 0;
    }
    /// Appends bytes read at off.
    void add_read(std::string&& data) {
        off += data.size();
        if (unread() == 0) {
            rbuf = std::move(data);
            rstart = 0;
        } else {
            rbuf.append(data);
        }
    }
    std::string take(std::size_t n) {
        n = std::min(n, unread());
        std::string out;
        if (rstart == 0 && n == rbuf.size()) {
            out = std::move(rbuf);
            rbuf.clear();
        } else {
            out.assign(rbuf, rstart, n);
            rstart += n;
            if (rstart == rbuf.size()) {
                rbuf.clear();
                rstart = 0;
            }
        }
        return out;
    }
};

namespace {

using StateRef = std::shared_ptr<FileState>;

FileState& need(const StateRef& s) {
    if (!s) throw ValueError("I/O operation on closed file.");
    return *s;
}

/// Writes out the write buffer (the lock held). On an error the bytes not written stay buffered.
Coroutine<> flush_locked(FileState& s) {
    if (s.wbuf.empty()) co_return;
    const int fd = s.fd;
    const std::uint64_t off = s.off;
    const bool append = s.append;
    std::string data = std::move(s.wbuf);
    s.wbuf.clear();
    auto shared = std::make_shared<std::string>(std::move(data));
    WriteResult r;
    try {
        r = co_await write_at(fd, shared, off, append, "AsyncFile::flush()");
    } catch (...) {
        s.wbuf.insert(0, *shared);  // it did not run (a cancellation before it started): keep it all
        throw;
    }
    s.off = append ? r.end : off + r.written;
    if (r.err != 0 || r.interrupted) {
        s.wbuf = shared->substr(r.written) + s.wbuf;  // what was not written stays buffered
        if (r.interrupted) std::rethrow_exception(r.interrupted);
        throw_os_error(r.err, "write " + quoted(s.path));
    }
}

/// How much a read that needs `need` more bytes fetches: a block, or (when the file looked
/// smaller at open) what is left of it plus one byte to see its end in the same request.
std::size_t read_ahead(const FileState& s, std::size_t need) {
    std::size_t fetch = kBlock;
    if (s.size_at_open > s.off)
        fetch = static_cast<std::size_t>(std::min<std::uint64_t>(kBlock, s.size_at_open - s.off + 1));
    return std::max(need, fetch);
}

/// Reads more into the read buffer (the lock held): up to `fetch` bytes, at least `need` unless
/// the file ends (fetch 0: to the end). Returns the number of bytes added (0: the end of the file).
Coroutine<std::size_t> fill_locked(FileState& s, std::size_t fetch, std::size_t need) {
    const int fd = s.fd;
    const std::uint64_t off = s.off;
    ReadResult r = co_await read_at(fd, fetch, off, fetch == 0, "AsyncFile::read()", need);
    const std::size_t n = r.data.size();
    s.add_read(std::move(r.data));  // kept even if an error or a cancellation follows
    if (r.interrupted) std::rethrow_exception(r.interrupted);
    if (r.err != 0) throw_os_error(r.err, "read " + quoted(s.path));
    co_return n;
}

/// The file's turn: checks first (raising before any wait), waits for the operations called
/// before it, and checks again (the file may have been closed meanwhile). The guard ends the turn.
Coroutine<LockGuard> turn(FileState& s, void (FileState::*check)() const) {
    (s.*check)();
    LockGuard g = co_await s.lock.lock();
    (s.*check)();
    co_return g;
}

Coroutine<std::string> read_impl(StateRef ref, std::ptrdiff_t n) {
    FileState& s = need(ref);
    LockGuard g = co_await turn(s, &FileState::check_readable);
    co_await flush_locked(s);  // pending writes first
    if (n < 0) {
        co_await fill_locked(s, 0, 0);
        co_return s.take(s.unread());
    }
    const auto want = static_cast<std::size_t>(n);
    while (s.unread() < want) {
        const std::size_t need = want - s.unread();
        if (co_await fill_locked(s, read_ahead(s, need), need) == 0) break;
    }
    co_return s.take(want);
}

Coroutine<std::string> readline_impl(StateRef ref) {
    FileState& s = need(ref);
    LockGuard g = co_await turn(s, &FileState::check_readable);
    co_await flush_locked(s);  // pending writes first
    std::size_t searched = s.rstart;
    for (;;) {
        const std::size_t nl = s.rbuf.find('\n', searched);
        if (nl != std::string::npos) co_return s.take(nl + 1 - s.rstart);
        searched = s.rbuf.size();
        const std::size_t before = s.rstart;
        if (co_await fill_locked(s, read_ahead(s, 1), 1) == 0) co_return s.take(s.unread());
        searched = searched - before + s.rstart;  // add_read may have moved the unread bytes
    }
}

Coroutine<std::optional<std::string>> anext_impl(StateRef ref) {
    std::string line = co_await readline_impl(ref);
    if (line.empty()) co_return std::nullopt;
    co_return std::optional<std::string>(std::move(line));
}

/// `owned`, when not empty, is the data (kept in this frame: the caller's string was an rvalue).
Coroutine<std::size_t> write_impl(StateRef ref, ConstBuffer data, std::string owned) {
    if (!owned.empty()) data = ConstBuffer(owned);
    FileState& s = need(ref);
    LockGuard g = co_await turn(s, &FileState::check_writable);
    if (s.unread() > 0) s.drop_read_buffer();
    s.rbuf.clear();
    s.rstart = 0;
    s.wbuf.append(static_cast<const char*>(data.data), data.size);
    if (s.wbuf.size() >= kBlock) co_await flush_locked(s);
    co_return data.size;
}

Coroutine<std::string> pread_impl(StateRef ref, std::size_t n, std::uint64_t offset) {
    FileState& s = need(ref);
    LockGuard g = co_await turn(s, &FileState::check_readable);
    co_await flush_locked(s);  // it must see what was written before it
    const int fd = s.fd;
    ReadResult r = co_await read_at(fd, n, offset, false, "AsyncFile::pread()", n);
    if (r.interrupted) std::rethrow_exception(r.interrupted);
    if (r.err != 0) throw_os_error(r.err, "pread " + quoted(s.path));
    co_return std::move(r.data);
}

Coroutine<std::size_t> pwrite_impl(StateRef ref, ConstBuffer data, std::uint64_t offset, std::string owned) {
    if (!owned.empty()) data = ConstBuffer(owned);
    FileState& s = need(ref);
    LockGuard g = co_await turn(s, &FileState::check_writable);
    co_await flush_locked(s);  // in call order
    if (s.unread() > 0) s.drop_read_buffer();  // the bytes buffered may be overwritten
    s.rbuf.clear();
    s.rstart = 0;
    const int fd = s.fd;
    auto bytes = std::make_shared<std::string>(static_cast<const char*>(data.data), data.size);
    // O_APPEND: Linux's pwrite appends; write_all's append path says where the file now ends.
    const bool append = s.append;
    WriteResult r = co_await write_at(fd, bytes, offset, append, "AsyncFile::pwrite()");
    if (append) s.off = r.end;
    if (r.interrupted) std::rethrow_exception(r.interrupted);
    if (r.err != 0) throw_os_error(r.err, "pwrite " + quoted(s.path));
    co_return r.written;
}

Coroutine<std::uint64_t> seek_impl(StateRef ref, std::int64_t offset, int whence) {
    FileState& s = need(ref);
    LockGuard g = co_await turn(s, &FileState::check_open);
    co_await flush_locked(s);
    std::int64_t target = 0;
    if (whence == SEEK_SET || whence == SEEK_CUR) {
        target = (whence == SEEK_CUR ? static_cast<std::int64_t>(s.position()) : 0) + offset;
        if (target < 0) throw_os_error(EINVAL, "seek " + quoted(s.path));  // as lseek(2)
    } else {
        // SEEK_END, and whatever else lseek(2) takes (SEEK_DATA, SEEK_HOLE), as Python's binary
        // files pass whence through: the kernel decides, an unknown whence is EINVAL.
        const int fd = s.fd;
        struct SeekResult {
            std::int64_t pos = 0;
            int err = 0;
        };
        auto call = blocking(
            [fd, offset, whence] {
                SeekResult out;
                const off_t p = ::lseek(fd, static_cast<off_t>(offset), whence);
                if (p < 0)
                    out.err = errno;
                else
                    out.pos = p;
                return out;
            },
            "AsyncFile::seek()");
        SeekResult r = co_await call;
        if (r.err != 0) throw_os_error(r.err, "seek " + quoted(s.path));
        target = r.pos;
    }
    s.rbuf.clear();
    s.rstart = 0;
    s.off = static_cast<std::uint64_t>(target);
    co_return s.off;
}

Coroutine<> flush_impl(StateRef ref) {
    FileState& s = need(ref);
    LockGuard g = co_await turn(s, &FileState::check_open);
    co_await flush_locked(s);
}

/// fsync or ftruncate (the lock held, after a flush): errno or 0.
Coroutine<> sync_call_locked(FileState& s, bool truncate, std::uint64_t size) {
    const int fd = s.fd;
    if (!truncate && native_files()) {  // (no ftruncate request in liburing 2.3: that one runs on a thread)
        FileCall call(FileOpKind::fsync, "AsyncFile::fsync()");
        call.fd = fd;
        const std::int64_t r = co_await call;
        if (r < 0) throw_os_error(static_cast<int>(-r), "fsync " + quoted(s.path));
        co_return;
    }
    auto call = blocking(
        [fd, truncate, size] {
            const int rc = truncate ? ::ftruncate(fd, static_cast<off_t>(size)) : ::fsync(fd);
            return rc == 0 ? 0 : errno;
        },
        truncate ? "AsyncFile::truncate()" : "AsyncFile::fsync()");
    const int err = co_await call;
    if (err != 0) throw_os_error(err, (truncate ? "truncate " : "fsync ") + quoted(s.path));
}

Coroutine<> fsync_impl(StateRef ref) {
    FileState& s = need(ref);
    LockGuard g = co_await turn(s, &FileState::check_open);
    co_await flush_locked(s);
    co_await sync_call_locked(s, false, 0);
}

Coroutine<> truncate_impl(StateRef ref, std::optional<std::uint64_t> size) {
    FileState& s = need(ref);
    s.check_open();
    if (!s.writable) throw UnsupportedOperation("File not open for writing");
    LockGuard g = co_await turn(s, &FileState::check_open);
    co_await flush_locked(s);
    const std::uint64_t target = size ? *size : s.position();
    co_await sync_call_locked(s, true, target);
}

Coroutine<> close_impl(StateRef ref) {
    if (!ref || ref->fd < 0) co_return;
    FileState& s = *ref;
    LockGuard g = co_await s.lock.lock();
    if (s.fd < 0) co_return;  // closed while it waited
    std::exception_ptr error;
    try {
        co_await flush_locked(s);
    } catch (const CancelledError&) {
        throw;  // still open: close() again
    } catch (...) {
        error = std::current_exception();
    }
    // Closed even when the flush failed (as Python's close()); the bytes not written are lost
    // then, and the error says so. close(2) of a regular file does not block.
    ::close(std::exchange(s.fd, -1));
    s.wbuf.clear();
    s.rbuf.clear();
    s.rstart = 0;
    if (error) std::rethrow_exception(error);
}

struct OpenFlags {
    int flags = 0;
    bool readable = false;
    bool writable = false;
    bool append = false;
};

/// Python's open() mode rules and texts.
OpenFlags parse_mode(const std::string& mode) {
    int creating = 0, reading = 0, writing = 0, appending = 0, updating = 0, text = 0, binary = 0;
    for (const char c : mode) {
        int* seen = nullptr;
        switch (c) {
            case 'x': seen = &creating; break;
            case 'r': seen = &reading; break;
            case 'w': seen = &writing; break;
            case 'a': seen = &appending; break;
            case '+': seen = &updating; break;
            case 't': seen = &text; break;
            case 'b': seen = &binary; break;
            default: break;
        }
        if (seen == nullptr || *seen != 0) throw ValueError("invalid mode: '" + mode + "'");
        *seen = 1;
    }
    if (text != 0 && binary != 0) throw ValueError("can't have text and binary mode at once");
    const int kinds = creating + reading + writing + appending;
    if (kinds == 0)
        throw ValueError("Must have exactly one of create/read/write/append mode and at most one plus");
    if (kinds > 1) throw ValueError("must have exactly one of create/read/write/append mode");
    OpenFlags o;
    o.readable = reading != 0 || updating != 0;
    o.writable = reading == 0 || updating != 0;
    o.append = appending != 0;
    o.flags = O_CLOEXEC | (o.readable && o.writable ? O_RDWR : o.readable ? O_RDONLY : O_WRONLY);
    if (creating != 0) o.flags |= O_CREAT | O_EXCL;
    if (writing != 0) o.flags |= O_CREAT | O_TRUNC;
    if (appending != 0) o.flags |= O_CREAT | O_APPEND;
    return o;
}

/// The AsyncFile for a file just opened, or the open error.
AsyncFile make_file(OwnedFd&& fd, std::string&& path, std::string&& mode, const OpenFlags& o) {
    if (fd.err != 0) throw_os_error(fd.err, "open " + quoted(path));
    auto s = std::make_shared<FileState>();
    s->fd = std::exchange(fd.fd, -1);
    s->path = std::move(path);
    s->mode = std::move(mode);
    s->readable = o.readable;
    s->writable = o.writable;
    s->append = o.append;
    s->size_at_open = fd.end;
    if (o.append) s->off = fd.end;  // Python: tell() of a file opened in "a" mode is its size
    return AsyncFile(std::move(s));
}

/// What the kernel's caches say about path, found without blocking: a path resolved with
/// RESOLVE_CACHED (EAGAIN if any step would read the disk) opened O_PATH (which opens nothing:
/// no FIFO waits, no device driver runs), and its statx with AT_STATX_DONT_SYNC (no NFS or FUSE
/// round trip). Most opens of a busy program hit the caches; they then cost no io-wq thread,
/// which two statx requests (each always punted to a kernel worker) did for every open.
enum class PathKind { regular, special, unknown };

PathKind cached_path_kind(const std::string& path) noexcept {
    open_how how{};
    how.flags = O_PATH | O_CLOEXEC;
    how.resolve = RESOLVE_CACHED;
    const int fd = static_cast<int>(::syscall(SYS_openat2, AT_FDCWD, path.c_str(), &how, sizeof how));
    if (fd < 0) {
        // ENOENT was decided from the caches: O_CREAT makes a regular file (or the open reports
        // it). EAGAIN (not cached), ENOSYS/EPERM (old kernel, seccomp): ask the slow way.
        return errno == ENOENT ? PathKind::regular : PathKind::unknown;
    }
    struct ::statx stx {};
    const int r = ::statx(fd, "", AT_EMPTY_PATH | AT_STATX_DONT_SYNC, STATX_TYPE, &stx);
    ::close(fd);
    if (r != 0 || (stx.stx_mask & STATX_TYPE) == 0) return PathKind::unknown;
    return S_ISREG(stx.stx_mode) || S_ISDIR(stx.stx_mode) ? PathKind::regular : PathKind::special;
}

/// True when path names something that is not a regular file or a directory (a FIFO, a device,
/// a socket). io_uring's openat first tries the open without blocking, and a FIFO opened so does
/// not wait for its other end as open(2) does: those opens run open(2) on the executor.
Coroutine<bool> special_file(const std::string& path) {
    struct ::statx stx {};
    FileCall st(FileOpKind::statx, "open_file()");
    st.path = path.c_str();
    st.buf = &stx;
    if (co_await st < 0) co_return false;  // (a missing file: O_CREAT makes a regular one)
    co_return !S_ISREG(stx.stx_mode) && !S_ISDIR(stx.stx_mode);
}

/// open_impl's system calls in the kernel: openat, then a statx of the new fd (from the
/// attributes the open just brought in: AT_STATX_DONT_SYNC, on this thread, does not block).
Coroutine<OwnedFd> open_native(const std::string& path, int flags) {
    OwnedFd r;
    FileCall open(FileOpKind::openat, "open_file()");
    open.path = path.c_str();
    open.flags = flags;
    open.mode = 0666;
    const std::int64_t fd = co_await open;  // a cancellation that lost the race comes at the next
    if (fd < 0) {                           // suspension, with the fd owned by r: closed
        r.err = static_cast<int>(-fd);
        co_return r;
    }
    r.fd = static_cast<int>(fd);
    struct ::statx stx {};
    if (::statx(r.fd, "", AT_EMPTY_PATH | AT_STATX_DONT_SYNC, STATX_TYPE | STATX_SIZE, &stx) == 0) {
        if (S_ISDIR(stx.stx_mode)) {  // open(2) allows it for reading; Python refuses
            ::close(std::exchange(r.fd, -1));
            r.err = EISDIR;
            co_return r;
        }
        r.end = stx.stx_size;
    }
    co_return r;
}

Coroutine<AsyncFile> open_impl(std::string path, std::string mode) {
    const OpenFlags o = parse_mode(mode);
    bool native = native_files();
    if (native) {
        const PathKind kind = cached_path_kind(path);
        if (kind == PathKind::special) {
            native = false;
        } else if (kind == PathKind::unknown) {
            const bool special = co_await special_file(path);  // (GCC 12: no co_await inside &&)
            native = !special;
        }
    }
    if (native) {
        OwnedFd fd = co_await open_native(path, o.flags);
        co_return make_file(std::move(fd), std::move(path), std::move(mode), o);
    }
    auto call = blocking(
        [path, o] {
            OwnedFd r;
            r.fd = ::open(path.c_str(), o.flags, 0666);
            if (r.fd < 0) {
                r.err = errno;
                return r;
            }
            struct ::stat st {};
            if (::fstat(r.fd, &st) == 0) {
                if (S_ISDIR(st.st_mode)) {  // open(2) allows it for reading; Python refuses
                    ::close(std::exchange(r.fd, -1));
                    r.err = EISDIR;
                    return r;
                }
                r.end = static_cast<std::uint64_t>(st.st_size);
            }
            return r;
        },
        "open_file()");
    OwnedFd fd = co_await call;
    co_return make_file(std::move(fd), std::move(path), std::move(mode), o);
}


// ---- sendfile ----

constexpr std::size_t kSendfileMax = 0x7ffff000;  // the most one sendfile(2) sends on Linux

/// The file's bytes [offset, offset + count) to out_fd with sendfile(2), waiting while out_fd is
/// full; `total` counts what was sent (also if it throws). `unavailable`: sendfile(2) refused
/// these fds before sending anything.
Coroutine<> sendfile_native(int out_fd, int in_fd, std::uint64_t offset, std::optional<std::size_t> count,
                            std::size_t& total, bool& unavailable) {
    for (;;) {
        std::size_t want = kSendfileMax;
        if (count) {
            if (total >= *count) break;
            want = std::min(want, *count - total);
        }
        auto off = static_cast<off_t>(offset + total);
        // No MSG_NOSIGNAL for sendfile(2): a peer that is gone must give EPIPE, not SIGPIPE.
        const ssize_t n = call_without_sigpipe([&] { return ::sendfile(out_fd, in_fd, &off, want); });
        if (n > 0) {
            total += static_cast<std::size_t>(n);
            continue;
        }
        if (n == 0) break;  // the end of the file
        const int e = errno;
        if (e == EINTR) continue;
        if (e == EAGAIN) {
            co_await wait_writable(out_fd);
            continue;
        }
        if (total == 0 && (e == EINVAL || e == ENOSYS || e == EOPNOTSUPP)) {
            unavailable = true;
            co_return;
        }
        throw_os_error(e, "sendfile");
    }
}

/// The same by reading blocks (on the executor) and giving each to send(std::string).
template <class Send>
Coroutine<> sendfile_fallback(FileState& f, std::uint64_t offset, std::optional<std::size_t> count,
                              std::size_t& total, Send& send) {
    for (;;) {
        std::size_t want = kBlock;
        if (count) {
            if (total >= *count) break;
            want = std::min(want, *count - total);
        }
        const int fd = f.fd;
        const std::uint64_t at = offset + total;
        ReadResult r = co_await read_at(fd, want, at, false, "sendfile()", 1);
        if (r.interrupted) std::rethrow_exception(r.interrupted);
        if (r.err != 0) throw_os_error(r.err, "read " + quoted(f.path));
        if (r.data.empty()) break;
        const std::size_t n = r.data.size();
        co_await send(std::move(r.data));
        total += n;
    }
}

/// The common part (the file's turn held, its writes flushed): out_fd < 0 means fallback only.
/// Afterwards, and on an error, the file's position is offset + the bytes sent (Python's).
template <class Send>
Coroutine<std::size_t> send_file_locked(FileState& f, int out_fd, std::uint64_t offset,
                                        std::optional<std::size_t> count, bool fallback, Send& send) {
    std::size_t total = 0;
    auto settle = [&] {
        if (total == 0) return;
        f.rbuf.clear();
        f.rstart = 0;
        f.off = offset + total;
    };
    try {
        bool unavailable = out_fd < 0;
        if (!unavailable) co_await sendfile_native(out_fd, f.fd, offset, count, total, unavailable);
        if (unavailable) {
            if (!fallback)
                throw SendfileNotAvailableError("fallback is disabled and native sendfile is not supported here");
            co_await sendfile_fallback(f, offset, count, total, send);
        }
    } catch (...) {
        settle();
        throw;
    }
    settle();
    co_return total;
}

void check_count(const std::optional<std::size_t>& count) {
    if (count && *count == 0) throw ValueError("count must be a positive integer (got 0)");
}

struct SocketSend {
    Socket& sock;
    Coroutine<> operator()(std::string data) { co_await sock_sendall(sock, data); }
};

Coroutine<std::size_t> sock_sendfile_impl(Socket& sock, StateRef ref, std::uint64_t offset,
                                          std::optional<std::size_t> count, bool fallback) {
    check_count(count);
    int type = 0;
    socklen_t len = sizeof type;
    if (::getsockopt(sock.fileno(), SOL_SOCKET, SO_TYPE, &type, &len) != 0) throw_os_error(errno, "sock_sendfile");
    if (type != SOCK_STREAM) throw ValueError("only SOCK_STREAM type sockets are supported");
    FileState& f = need(ref);
    LockGuard g = co_await turn(f, &FileState::check_readable);
    co_await flush_locked(f);  // the kernel reads the file: what is buffered must be in it
    SocketSend send{sock};
    co_return co_await send_file_locked(f, sock.fileno(), offset, count, fallback, send);
}

struct StreamSend {
    StreamWriter& w;
    Coroutine<> operator()(std::string data) {
        StreamCore& c = *w.core();
        c.sendfile_active_ = false;  // this write is sendfile's own
        try {
            c.write(std::move(data));
        } catch (...) {
            c.sendfile_active_ = true;
            throw;
        }
        c.sendfile_active_ = true;
        co_await w.drain();
    }
};

Coroutine<std::size_t> stream_sendfile_impl(StreamWriter w, StateRef ref, std::uint64_t offset,
                                            std::optional<std::size_t> count, bool fallback) {
    check_count(count);
    StreamCore* c = w.core();
    if (c == nullptr || !c->connected()) throw RuntimeError("StreamWriter has no connection");
    if (c->closing_) throw RuntimeError("Transport is closing");
    if (c->sendfile_active_) throw RuntimeError("sendfile() is already in progress on this stream");
    FileState& f = need(ref);
    LockGuard g = co_await turn(f, &FileState::check_readable);
    co_await flush_locked(f);
    // From here write() refuses (its bytes would land inside the file's); what was written before
    // is sent first.
    c->sendfile_active_ = true;
    struct Reset {
        StreamCore* c;
        ~Reset() { c->sendfile_active_ = false; }
    } reset{c};
    co_await wait_flushed(StreamRef<false>(c), "sendfile()");
    if (c->werror_) c->throw_write_error();
    if (c->closed_) throw std::system_error(ECONNRESET, std::generic_category(), "Connection lost");
    StreamSend send{w};
    co_return co_await send_file_locked(f, c->transport_->sendfile_fd(), offset, count, fallback, send);
}

}  // namespace

struct FileAccess {
    static const StateRef& state(const AsyncFile& f) noexcept { return f.state_; }
};

}  // namespace detail

Coroutine<std::size_t> sock_sendfile(Socket& sock, AsyncFile& file, std::uint64_t offset,
                                     std::optional<std::size_t> count, bool fallback) {
    return detail::sock_sendfile_impl(sock, detail::FileAccess::state(file), offset, count, fallback);
}

Coroutine<std::size_t> sendfile(StreamWriter& writer, AsyncFile& file, std::uint64_t offset,
                                std::optional<std::size_t> count, bool fallback) {
    return detail::stream_sendfile_impl(writer, detail::FileAccess::state(file), offset, count, fallback);
}

// ---- AsyncFile ----

AsyncFile::AsyncFile() noexcept = default;
AsyncFile::AsyncFile(std::shared_ptr<detail::FileState> state) noexcept : state_(std::move(state)) {}
AsyncFile::AsyncFile(AsyncFile&&) noexcept = default;
AsyncFile& AsyncFile::operator=(AsyncFile&&) noexcept = default;
AsyncFile::~AsyncFile() = default;

Coroutine<std::string> AsyncFile::read(std::ptrdiff_t n) { return detail::read_impl(state_, n); }
Coroutine<std::string> AsyncFile::readline() { return detail::readline_impl(state_); }
Coroutine<std::optional<std::string>> AsyncFile::anext() { return detail::anext_impl(state_); }
Coroutine<std::size_t> AsyncFile::write(ConstBuffer data) { return detail::write_impl(state_, data, {}); }
Coroutine<std::size_t> AsyncFile::write_owned(std::string data) {
    return detail::write_impl(state_, ConstBuffer(nullptr, 0), std::move(data));
}
Coroutine<std::string> AsyncFile::pread(std::size_t n, std::uint64_t offset) {
    return detail::pread_impl(state_, n, offset);
}
Coroutine<std::size_t> AsyncFile::pwrite(ConstBuffer data, std::uint64_t offset) {
    return detail::pwrite_impl(state_, data, offset, {});
}
Coroutine<std::size_t> AsyncFile::pwrite_owned(std::string data, std::uint64_t offset) {
    return detail::pwrite_impl(state_, ConstBuffer(nullptr, 0), offset, std::move(data));
}
Coroutine<std::uint64_t> AsyncFile::seek(std::int64_t offset, int whence) {
    return detail::seek_impl(state_, offset, whence);
}
std::uint64_t AsyncFile::tell() const {
    const detail::FileState& s = detail::need(state_);
    s.check_open();
    return s.position();
}
Coroutine<> AsyncFile::flush() { return detail::flush_impl(state_); }
Coroutine<> AsyncFile::fsync() { return detail::fsync_impl(state_); }
Coroutine<> AsyncFile::truncate(std::optional<std::uint64_t> size) { return detail::truncate_impl(state_, size); }
Coroutine<> AsyncFile::close() { return detail::close_impl(state_); }

bool AsyncFile::closed() const noexcept { return !state_ || state_->fd < 0; }
const std::string& AsyncFile::name() const noexcept {
    static const std::string none;
    return state_ ? state_->path : none;
}
const std::string& AsyncFile::mode() const noexcept {
    static const std::string none;
    return state_ ? state_->mode : none;
}
int AsyncFile::fileno() const noexcept { return state_ ? state_->fd : -1; }
bool AsyncFile::readable() const noexcept { return state_ && state_->fd >= 0 && state_->readable; }
bool AsyncFile::writable() const noexcept { return state_ && state_->fd >= 0 && state_->writable; }

Coroutine<AsyncFile> open_file(std::string path, std::string mode) {
    return detail::open_impl(std::move(path), std::move(mode));
}

// ---- asyncio::os ----

namespace os {

bool StatResult::is_dir() const noexcept { return S_ISDIR(st_mode); }
bool StatResult::is_file() const noexcept { return S_ISREG(st_mode); }

namespace {

/// Runs a call returning 0 or an errno on the executor; std::system_error(errno, what) if it failed.
template <class F>
Coroutine<> os_call(F f, std::string what) {
    auto call = detail::blocking(std::move(f), "asyncio::os");
    const int err = co_await call;
    if (err != 0) detail::throw_os_error(err, what);
}

std::int64_t to_ns(const struct timespec& t) {
    return static_cast<std::int64_t>(t.tv_sec) * 1'000'000'000 + t.tv_nsec;
}
std::int64_t to_ns(const struct ::statx_timestamp& t) {
    return static_cast<std::int64_t>(t.tv_sec) * 1'000'000'000 + t.tv_nsec;
}

/// A path call in the kernel (io_uring): unlinkat, renameat, mkdirat.
Coroutine<> native_path_call(detail::FileOpKind kind, const std::string& path, const std::string* path2, int flags,
                             unsigned mode, std::string what) {
    detail::FileCall call(kind, "asyncio::os");
    call.path = path.c_str();
    call.path2 = path2 != nullptr ? path2->c_str() : nullptr;
    call.flags = flags;
    call.mode = mode;
    const std::int64_t r = co_await call;
    if (r < 0) detail::throw_os_error(static_cast<int>(-r), what);
}

}  // namespace

Coroutine<StatResult> stat(std::string path, bool follow_symlinks) {
    if (detail::native_files()) {
        struct ::statx stx {};
        detail::FileCall call(detail::FileOpKind::statx, "asyncio::os::stat()");
        call.path = path.c_str();
        call.flags = follow_symlinks ? 0 : AT_SYMLINK_NOFOLLOW;
        call.buf = &stx;
        const std::int64_t r = co_await call;
        if (r < 0) detail::throw_os_error(static_cast<int>(-r), "stat " + detail::quoted(path));
        StatResult st;
        st.st_mode = stx.stx_mode;
        st.st_ino = stx.stx_ino;
        st.st_dev = makedev(stx.stx_dev_major, stx.stx_dev_minor);
        st.st_nlink = stx.stx_nlink;
        st.st_uid = stx.stx_uid;
        st.st_gid = stx.stx_gid;
        st.st_size = stx.stx_size;
        st.st_atime_ns = to_ns(stx.stx_atime);
        st.st_mtime_ns = to_ns(stx.stx_mtime);
        st.st_ctime_ns = to_ns(stx.stx_ctime);
        co_return st;
    }
    struct Result {
        StatResult st;
        int err = 0;
    };
    auto call = detail::blocking(
        [path, follow_symlinks] {
            Result out;
            struct ::stat st {};
            if ((follow_symlinks ? ::stat(path.c_str(), &st) : ::lstat(path.c_str(), &st)) != 0) {
                out.err = errno;
                return out;
            }
            out.st.st_mode = st.st_mode;
            out.st.st_ino = st.st_ino;
            out.st.st_dev = st.st_dev;
            out.st.st_nlink = st.st_nlink;
            out.st.st_uid = st.st_uid;
            out.st.st_gid = st.st_gid;
            out.st.st_size = static_cast<std::uint64_t>(st.st_size);
            out.st.st_atime_ns = to_ns(st.st_atim);
            out.st.st_mtime_ns = to_ns(st.st_mtim);
            out.st.st_ctime_ns = to_ns(st.st_ctim);
            return out;
        },
        "asyncio::os::stat()");
    Result r = co_await call;
    if (r.err != 0) detail::throw_os_error(r.err, "stat " + detail::quoted(path));
    co_return r.st;
}

Coroutine<> unlink(std::string path) {
    std::string what = "unlink " + detail::quoted(path);
    if (detail::native_files()) {
        co_await native_path_call(detail::FileOpKind::unlinkat, path, nullptr, 0, 0, std::move(what));
        co_return;
    }
    Coroutine<> call = os_call([path = std::move(path)] { return ::unlink(path.c_str()) == 0 ? 0 : errno; }, std::move(what));
    co_await call;
}

Coroutine<> rename(std::string src, std::string dst) {
    std::string what = "rename " + detail::quoted(src) + " -> " + detail::quoted(dst);
    if (detail::native_files()) {
        co_await native_path_call(detail::FileOpKind::renameat, src, &dst, 0, 0, std::move(what));
        co_return;
    }
    Coroutine<> call = os_call([src = std::move(src), dst = std::move(dst)] {
        return ::rename(src.c_str(), dst.c_str()) == 0 ? 0 : errno;
    }, std::move(what));
    co_await call;
}

Coroutine<> mkdir(std::string path, unsigned mode) {
    std::string what = "mkdir " + detail::quoted(path);
    if (detail::native_files()) {
        co_await native_path_call(detail::FileOpKind::mkdirat, path, nullptr, 0, mode, std::move(what));
        co_return;
    }
    Coroutine<> call = os_call([path = std::move(path), mode] { return ::mkdir(path.c_str(), mode) == 0 ? 0 : errno; },
                   std::move(what));
    co_await call;
}

Coroutine<> rmdir(std::string path) {
    std::string what = "rmdir " + detail::quoted(path);
    if (detail::native_files()) {
        co_await native_path_call(detail::FileOpKind::unlinkat, path, nullptr, AT_REMOVEDIR, 0, std::move(what));
        co_return;
    }
    Coroutine<> call = os_call([path = std::move(path)] { return ::rmdir(path.c_str()) == 0 ? 0 : errno; }, std::move(what));
    co_await call;
}

Coroutine<std::vector<std::string>> listdir(std::string path) {
    struct Result {
        Result() = default;  // not an aggregate: see ReadResult
        std::vector<std::string> names;
        int err = 0;
    };
    auto call = detail::blocking(
        [path] {
            Result out;
            DIR* d = ::opendir(path.c_str());
            if (d == nullptr) {
                out.err = errno;
                return out;
            }
            for (;;) {
                errno = 0;
                const dirent* e = ::readdir(d);
                if (e == nullptr) {
                    out.err = errno;
                    break;
                }
                const std::string_view name(e->d_name);
                if (name != "." && name != "..") out.names.emplace_back(name);
            }
            ::closedir(d);
            return out;
        },
        "asyncio::os::listdir()");
    Result r = co_await call;
    if (r.err != 0) detail::throw_os_error(r.err, "listdir " + detail::quoted(path));
    co_return std::move(r.names);
}

}  // namespace os

}  // namespace asyncio
