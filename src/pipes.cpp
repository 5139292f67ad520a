// connect_read_pipe / connect_write_pipe (pipes.hpp): a PipeTransport under a stream.
#include "asyncio/pipes.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <memory>
#include <system_error>
#include <utility>

#include "asyncio/exceptions.hpp"
#include "stream_core.hpp"
#include "transport.hpp"

namespace asyncio {

namespace {

/// Checks fd as asyncio's pipe transports do and makes it non-blocking; returns whether it is a
/// pipe or FIFO. Throws (fd untouched) on a closed fd or a file that is not a pipe.
bool prepare_pipe(int fd, bool writer) {
    struct stat st {};
    if (fd < 0 || ::fstat(fd, &st) < 0)
        throw std::system_error(fd < 0 ? EBADF : errno, std::generic_category(),
                                writer ? "connect_write_pipe" : "connect_read_pipe");
    const bool fifo = S_ISFIFO(st.st_mode);
    if (!(fifo || S_ISSOCK(st.st_mode) || S_ISCHR(st.st_mode))) {
        if (writer) throw ValueError("Pipe transport is only for pipes, sockets and character devices");
        throw ValueError("Pipe transport is for pipes/sockets only.");
    }
    const int flags = ::fcntl(fd, F_GETFL);
    if (flags < 0 || ((flags & O_NONBLOCK) == 0 && ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0))
        throw std::system_error(errno, std::generic_category(), "fcntl(O_NONBLOCK)");
    return fifo;
}

}  // namespace

StreamReader connect_read_pipe(int fd, std::size_t limit) {
    if (limit == 0) throw ValueError("Limit cannot be <= 0");
    const bool fifo = prepare_pipe(fd, false);
    return detail::make_streams(std::make_unique<detail::PipeTransport>(fd, false, fifo), limit).first;
}

StreamReader stdin_reader(std::size_t limit) {
    if (limit == 0) throw ValueError("Limit cannot be <= 0");
    struct stat st {};
    if (::fstat(0, &st) < 0) throw std::system_error(errno, std::generic_category(), "stdin_reader");
    const bool fifo = S_ISFIFO(st.st_mode);
    int fd = -1;
    if (S_ISREG(st.st_mode) || S_ISBLK(st.st_mode)) {
        // Always readable (epoll refuses these): reads complete at once, at fd 0's offset.
        fd = ::fcntl(0, F_DUPFD_CLOEXEC, 3);
        if (fd < 0) throw std::system_error(errno, std::generic_category(), "stdin_reader: dup");
    } else if (fifo || S_ISCHR(st.st_mode) || S_ISSOCK(st.st_mode)) {
        // A description of our own: O_NONBLOCK on it does not reach whoever shares fd 0's.
        fd = ::open("/proc/self/fd/0", O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
        if (fd < 0) {  // a socket (ENXIO), or no /proc: share the description
            fd = ::fcntl(0, F_DUPFD_CLOEXEC, 3);
            if (fd < 0) throw std::system_error(errno, std::generic_category(), "stdin_reader: dup");
            const int flags = ::fcntl(fd, F_GETFL);
            if (flags < 0 || ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) {
                const int e = errno;
                ::close(fd);
                throw std::system_error(e, std::generic_category(), "fcntl(O_NONBLOCK)");
            }
        }
    } else {
        throw ValueError("stdin is neither a pipe, a tty, a socket nor a file");
    }
    return detail::make_streams(std::make_unique<detail::PipeTransport>(fd, false, fifo), limit).first;
}

StreamWriter connect_write_pipe(int fd) {
    const bool fifo = prepare_pipe(fd, true);
    return detail::make_streams(std::make_unique<detail::PipeTransport>(fd, true, fifo), kDefaultStreamLimit).second;
}

}  // namespace asyncio
