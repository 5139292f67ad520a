// Streams over pipes: asyncio's loop.connect_read_pipe / connect_write_pipe with a stream on top
// (what Python spells with StreamReaderProtocol), for pipes, FIFOs and ttys.
//
//   int fds[2];
//   ::pipe2(fds, O_CLOEXEC);
//   asyncio::StreamReader r = asyncio::connect_read_pipe(fds[0]);
//   asyncio::StreamWriter w = asyncio::connect_write_pipe(fds[1]);
//   w.write("hello\n");
//   co_await w.drain();
//   std::string line = co_await r.readline();
//
// The stream takes the fd: it makes it non-blocking and closes it when the stream is closed (or
// its last handle goes). The reader and the writer behave as a connection's (streams.hpp:
// buffering, limits, flow control, cancel-safety). Pipe specifics, as asyncio's pipe transports:
//   - write_eof() (after the buffer is flushed) closes the write end: the reader gets EOF;
//   - writing to a pipe whose read end is closed fails with std::system_error(EPIPE) at the next
//     write(), drain() or wait_closed(), never with SIGPIPE (it is blocked around each write);
//   - O_NONBLOCK is a property of the open file description, shared with every process that
//     holds it (a terminal, a pipe inherited from the shell): as in Python, the flag stays set.
//
// Errors: ValueError ("Pipe transport is for pipes/sockets only." / "Pipe transport is only for
// pipes, sockets and character devices", Python's texts) for a regular file or a directory;
// std::system_error(EBADF) for a closed fd. On an error the fd is not taken: it stays open and
// the caller's. Loop thread only.
#pragma once

#include <cstddef>

#include "asyncio/streams.hpp"

namespace asyncio {

/// A StreamReader over the read end of a pipe, a FIFO or a tty (fd is taken).
StreamReader connect_read_pipe(int fd, std::size_t limit = kDefaultStreamLimit);

/// A StreamWriter over the write end of a pipe, a FIFO or a tty (fd is taken).
StreamWriter connect_write_pipe(int fd);

/// The program's own standard input as a StreamReader, whatever it is, without blocking the loop
/// and without touching fd 0:
///
///   asyncio::StreamReader in = asyncio::stdin_reader();
///   while (auto line = co_await in.anext()) handle(*line);
///
/// A pipe, FIFO or tty is opened anew through /proc/self/fd/0, so the non-blocking mode is this
/// reader's alone (a terminal or pipe shared with the shell stays blocking for everyone else);
/// a socket, which cannot be reopened, gets a dup with O_NONBLOCK set (shared, as Python's
/// connect_read_pipe). A regular file (`prog < file`) is read through a dup, at its current
/// offset; its reads complete at once (a file is always "ready"; a slow disk would block the
/// loop for that read). std::system_error if fd 0 is closed; ValueError for a directory.
StreamReader stdin_reader(std::size_t limit = kDefaultStreamLimit);

}  // namespace asyncio
