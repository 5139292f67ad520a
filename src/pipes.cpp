// connect_read_pipe / connect_write_pipe (pipes.hpp): a PipeTransport under a stream.
#include "asyncio/pipes.hpp"

#include <fcntl.h>
#include <sys/stat.h>

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

StreamWriter connect_write_pipe(int fd) {
    const bool fifo = prepare_pipe(fd, true);
    return detail::make_streams(std::make_unique<detail::PipeTransport>(fd, true, fifo), kDefaultStreamLimit).second;
}

}  // namespace asyncio
