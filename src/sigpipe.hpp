// A system call that may raise SIGPIPE (write(2) to a pipe whose reader is gone, sendfile(2) to
// such a socket: neither has MSG_NOSIGNAL) made so that the caller sees EPIPE only. Private to
// src/.
#pragma once

#include <cerrno>
#include <csignal>
#include <ctime>

#include <pthread.h>

namespace asyncio::detail {

/// Calls f() with SIGPIPE blocked in this thread; a SIGPIPE it raised (thread-directed, so pending
/// while blocked) is taken back before unblocking, so that it never kills the program. f's result
/// and errno are kept. Two cheap system calls around the call.
template <class F>
auto call_without_sigpipe(F&& f) noexcept -> decltype(f()) {
    sigset_t pipe_only;
    sigemptyset(&pipe_only);
    sigaddset(&pipe_only, SIGPIPE);
    sigset_t old;
    const bool block = ::pthread_sigmask(SIG_BLOCK, &pipe_only, &old) == 0 && !sigismember(&old, SIGPIPE);
    const auto r = f();
    const int err = errno;
    if (block) {
        if (r < 0 && err == EPIPE) {
            const timespec zero{};
            while (::sigtimedwait(&pipe_only, nullptr, &zero) < 0 && errno == EINTR) {
            }
        }
        ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
    }
    errno = err;
    return r;
}

}  // namespace asyncio::detail
