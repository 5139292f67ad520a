// Files without blocking the loop: open_file() and the asyncio::os functions (stat, unlink,
// rename, mkdir, listdir).
//
//   asyncio::AsyncFile f = co_await asyncio::open_file("log.txt", "a");
//   co_await f.write("started\n");
//   co_await f.close();
//
//   asyncio::AsyncFile in = co_await asyncio::open_file("data.csv");
//   while (auto line = co_await in.anext()) handle(*line);
//
// A regular file is always "ready" for epoll, so its reads and writes would block the loop. On
// the io_uring backend the kernel performs the calls itself (read, write, fsync, openat, statx,
// unlinkat, renameat, mkdirat requests: no thread); on epoll, and for the calls io_uring has no
// request for here (seek with SEEK_END/SEEK_DATA/SEEK_HOLE, truncate, listdir, and opening a
// FIFO or device, whose open must wait as open(2) does), each system call runs on the loop's
// default executor (a thread). Either way the task waits without blocking the loop, with the same
// results and errors.
//
// Modes are Python's open() modes: "r", "w", "x", "a", each with an optional "+" (read and
// write) and "b" or "t" (no difference: data is bytes, as std::string). Like Python's buffered
// files, an AsyncFile buffers: reads fetch at least 64 KiB, and writes are kept until 64 KiB are
// buffered, flush(), a read, a seek, close(), or the destructor (which writes them out,
// blocking, as Python's file finalizer does). read(n) returns n bytes unless the file ends first.
// The file has one position (tell()), moved by read, readline, write and seek; pread/pwrite
// at an offset do not move it. "a" mode writes always go to the end.
//
// One operation at a time runs: operations of several tasks on one file take turns in the order
// they were called (an internal Lock), so a log file may be shared by tasks.
//
// Cancellation: a system call already running (on its thread, or in the kernel) is not stopped
// half-way. A cancelled
// operation that has not started yet does nothing and raises CancelledError; one that has
// started finishes, its effect stands (bytes read stay in the buffer, readable again; bytes
// written are written), and CancelledError is raised at the task's next suspension point, as for
// an I/O operation that completed before its cancellation (docs/design.md).
//
// Errors: OS failures are std::system_error with errno and the path in what()
// ("open '/x/y': No such file or directory"); a bad mode is ValueError with Python's text;
// reading a file opened for writing only (or the reverse) is UnsupportedOperation ("not
// readable" / "not writable"); any operation on a closed file is ValueError "I/O operation on
// closed file."; a negative seek position is std::system_error(EINVAL), as for Python's binary
// files. Loop thread only, in a task of the loop.
#pragma once

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "asyncio/coroutine.hpp"
#include "asyncio/exceptions.hpp"
#include "asyncio/sock_ops.hpp"
#include "asyncio/socket.hpp"
#include "asyncio/streams.hpp"

namespace asyncio {

namespace detail {
struct FileState;
struct FileAccess;
}

/// An open file (see the top of this header). Move-only; the destructor writes out what is still
/// buffered and closes the fd, blocking (close() it with co_await to avoid that).
class AsyncFile {
public:
    /// No file: every operation raises ValueError "I/O operation on closed file.".
    AsyncFile() noexcept;
    explicit AsyncFile(std::shared_ptr<detail::FileState> state) noexcept;
    AsyncFile(AsyncFile&&) noexcept;
    AsyncFile& operator=(AsyncFile&&) noexcept;
    AsyncFile(const AsyncFile&) = delete;
    AsyncFile& operator=(const AsyncFile&) = delete;
    ~AsyncFile();

    /// Up to n bytes (fewer only at the end of the file); n < 0: everything to the end.
    Coroutine<std::string> read(std::ptrdiff_t n = -1);
    /// The next line with its "\n" (the last line may lack it); "" at the end of the file.
    Coroutine<std::string> readline();
    /// Line iteration: the next line, or nullopt at the end of the file.
    Coroutine<std::optional<std::string>> anext();
    /// Writes all of data (buffered, see above); returns its size. data must stay alive until the
    /// write is awaited; a std::string given as an rvalue is kept by the operation itself, so
    /// `create_task(f.write(make_line()))` is safe.
    Coroutine<std::size_t> write(ConstBuffer data);
    template <class S>
        requires std::same_as<S, std::string>
    Coroutine<std::size_t> write(S&& data) {
        return write_owned(std::move(data));
    }
    /// Up to n bytes at offset, without moving the position (fewer only at the end of the file).
    Coroutine<std::string> pread(std::size_t n, std::uint64_t offset);
    /// Writes all of data at offset, without moving the position; returns its size. (In "a" mode
    /// Linux writes it at the end instead, as pwrite(2) does with O_APPEND.) data as for write().
    Coroutine<std::size_t> pwrite(ConstBuffer data, std::uint64_t offset);
    template <class S>
        requires std::same_as<S, std::string>
    Coroutine<std::size_t> pwrite(S&& data, std::uint64_t offset) {
        return pwrite_owned(std::move(data), offset);
    }
    /// Moves the position: whence is SEEK_SET, SEEK_CUR, SEEK_END (or SEEK_DATA, SEEK_HOLE: what
    /// lseek(2) takes, as Python's binary files). Returns the new position. A negative position
    /// or an unknown whence is std::system_error(EINVAL), as Python's binary files.
    Coroutine<std::uint64_t> seek(std::int64_t offset, int whence = 0);
    /// The position (what has been buffered counts).
    std::uint64_t tell() const;
    /// Writes out the write buffer.
    Coroutine<> flush();
    /// flush(), then fsync(2): the data is on the disk when it returns.
    Coroutine<> fsync();
    /// Resizes the file to size (default: the position); the position does not move.
    Coroutine<> truncate(std::optional<std::uint64_t> size = std::nullopt);
    /// flush(), then closes the fd (closed even if the flush failed; its error is raised).
    /// Idempotent.
    Coroutine<> close();

    bool closed() const noexcept;
    /// The path it was opened with.
    const std::string& name() const noexcept;
    /// The mode it was opened with.
    const std::string& mode() const noexcept;
    /// The fd (-1 once closed).
    int fileno() const noexcept;
    bool readable() const noexcept;
    bool writable() const noexcept;

private:
    friend struct detail::FileAccess;
    Coroutine<std::size_t> write_owned(std::string data);
    Coroutine<std::size_t> pwrite_owned(std::string data, std::uint64_t offset);

    std::shared_ptr<detail::FileState> state_;
};

/// Opens path with Python's open() mode (see the top of this header). Files are created with
/// permissions 0666 & ~umask, and O_CLOEXEC.
Coroutine<AsyncFile> open_file(std::string path, std::string mode = "r");

/// Python's loop.sock_sendfile(sock, file, offset, count): sends count bytes of file (default:
/// to its end) from offset over a connected SOCK_STREAM socket, with sendfile(2) (the bytes never
/// enter user space), waiting whenever the socket is full; returns the number of bytes sent. The
/// file's buffered writes are flushed first; afterwards its position is offset + bytes sent (as
/// Python). With fallback (the default), a file or socket sendfile(2) refuses is read in blocks
/// and sent with sock_sendall. ValueError "only SOCK_STREAM type sockets are supported", "count
/// must be a positive integer (got 0)" (Python's texts); std::system_error for the OS's errors.
/// Cancel-safe in the sense of I/O operations: what was sent was sent (the position says so).
Coroutine<std::size_t> sock_sendfile(Socket& sock, AsyncFile& file, std::uint64_t offset = 0,
                                     std::optional<std::size_t> count = std::nullopt, bool fallback = true);

/// Python's loop.sendfile(transport, file, offset, count): the same over a stream. What was
/// written before is sent first; a plain socket or pipe gets sendfile(2), a TLS stream the
/// fallback (blocks encrypted and written, with drain()). While it runs, write() on the stream
/// raises RuntimeError (the bytes would land in the middle of the file's). RuntimeError
/// "Transport is closing" after close().
Coroutine<std::size_t> sendfile(StreamWriter& writer, AsyncFile& file, std::uint64_t offset = 0,
                                std::optional<std::size_t> count = std::nullopt, bool fallback = true);

/// Python's os module functions on paths, each run on the default executor.
namespace os {

/// What stat(2) says (the fields of Python's os.stat_result); times in nanoseconds since the epoch.
struct StatResult {
    std::uint32_t st_mode = 0;
    std::uint64_t st_ino = 0;
    std::uint64_t st_dev = 0;
    std::uint64_t st_nlink = 0;
    std::uint32_t st_uid = 0;
    std::uint32_t st_gid = 0;
    std::uint64_t st_size = 0;
    std::int64_t st_atime_ns = 0;
    std::int64_t st_mtime_ns = 0;
    std::int64_t st_ctime_ns = 0;
    bool is_dir() const noexcept;
    bool is_file() const noexcept;
};

/// os.stat(path, follow_symlinks=...).
Coroutine<StatResult> stat(std::string path, bool follow_symlinks = true);
/// os.unlink(path) (not for directories: see rmdir).
Coroutine<> unlink(std::string path);
/// os.rename(src, dst).
Coroutine<> rename(std::string src, std::string dst);
/// os.mkdir(path, mode).
Coroutine<> mkdir(std::string path, unsigned mode = 0777);
/// os.rmdir(path).
Coroutine<> rmdir(std::string path);
/// os.listdir(path): the names in the directory, without "." and "..", in the order the
/// directory gives them.
Coroutine<std::vector<std::string>> listdir(std::string path = ".");

}  // namespace os

}  // namespace asyncio
