// A file-system operation performed by the kernel without a thread (io_uring): the AsyncFile and
// asyncio::os calls of files.hpp, on a backend whose native_files() is true. On the others
// (epoll) files.cpp runs the plain system calls on the loop's executor instead.
//
// Adding a kind edits this enum, files.cpp (its use) and uring_backend.cpp's prepare_file(), the
// one place that knows io_uring's opcodes; the epoll backend never sees a FileOp.
#pragma once

#include <cstddef>
#include <cstdint>

#include "asyncio/detail/io_op.hpp"

namespace asyncio::detail {

enum class FileOpKind : std::uint8_t {
    pread,     // pread(fd, buf, len, offset) -> bytes read, 0 at the end
    pwrite,    // pwrite(fd, buf, len, offset) -> bytes written (offset ~0: at the file position,
               // which is the end for an O_APPEND file)
    fsync,     // fsync(fd) -> 0
    openat,    // openat(AT_FDCWD, path, flags, mode) -> the new fd (O_CLOEXEC is in flags)
    statx,     // statx(fd or AT_FDCWD, path, flags, STATX_BASIC_STATS, buf) -> 0
    unlinkat,  // unlinkat(AT_FDCWD, path, flags) -> 0 (flags AT_REMOVEDIR: rmdir)
    renameat,  // renameat(AT_FDCWD, path, AT_FDCWD, path2) -> 0
    mkdirat,   // mkdirat(AT_FDCWD, path, mode) -> 0
};

struct FileOp {
    FileOpKind kind = FileOpKind::pread;
    IoState state = IoState::idle;
    int fd = -1;                   // pread, pwrite, fsync; statx: -1 means AT_FDCWD
    int flags = 0;                 // openat: O_*; statx: AT_*; unlinkat: AT_REMOVEDIR
    unsigned mode = 0;             // openat, mkdirat
    void* buf = nullptr;           // pread, pwrite; statx: a struct statx
    std::size_t len = 0;
    std::uint64_t offset = 0;
    const char* path = nullptr;    // openat, statx ("" with AT_EMPTY_PATH: fd itself), unlinkat, ...
    const char* path2 = nullptr;   // renameat: the new name
    std::int64_t result = 0;       // >= 0 as above, or -errno
    void (*complete)(void* op) = nullptr;  // from the ready queue, once done
};

}  // namespace asyncio::detail
