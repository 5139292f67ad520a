// The one place that decides which I/O backend a loop uses: the environment variable
// ASYNCIO_BACKEND = epoll | io_uring | auto (unset or empty: auto), read when the loop is made.
//   epoll     always available on Linux.
//   io_uring  the io_uring backend, or std::system_error naming why it cannot run here (a build
//             without liburing, ENOSYS, EPERM with kernel.io_uring_disabled or a seccomp policy).
//   auto      io_uring when it can be set up here, else epoll (see docs/design.md, "Backends",
//             for why io_uring is the default).
#include <cerrno>
#include <cstdlib>
#include <string>
#include <string_view>
#include <system_error>

#include "asyncio/exceptions.hpp"
#include "backend/backend.hpp"
#include "backend/epoll_backend.hpp"
#if ASYNCIO_HAVE_URING
#include "backend/uring_backend.hpp"
#endif

namespace asyncio::detail {

std::unique_ptr<Backend> make_backend(ReadyQueue& ready) {
    const char* env = std::getenv("ASYNCIO_BACKEND");
    const std::string_view want = env != nullptr && *env != '\0' ? env : "auto";
    if (want == "epoll") return make_epoll_backend();
    if (want != "io_uring" && want != "auto")
        throw ValueError("ASYNCIO_BACKEND must be 'epoll', 'io_uring' or 'auto', not '" + std::string(want) + "'");
#if ASYNCIO_HAVE_URING
    if (want == "io_uring") return make_uring_backend(ready);
    try {
        return make_uring_backend(ready);
    } catch (const std::system_error&) {
        return make_epoll_backend();  // io_uring cannot run here: epoll can
    }
#else
    (void)ready;
    if (want == "io_uring")
        throw std::system_error(ENOSYS, std::generic_category(),
                                "io_uring: this build of asyncio has no io_uring backend (liburing was not found "
                                "when it was built)");
    return make_epoll_backend();
#endif
}

}  // namespace asyncio::detail
